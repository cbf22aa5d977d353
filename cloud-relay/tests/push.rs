//! The pusher against a small in-process fake of Odoo's `/jsonrpc` (just the calls of the count
//! flow, answering in Odoo's shapes): call sequence, chunking, dead letters, isolation, and the
//! lost-answer case. The full simulator is exercised by the end-to-end tests in `tests/e2e`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post as route_post;
use axum::{Json, Router};
use common::*;
use scanbridge_protocol::{encode, Operation};
use scanbridge_relay::inbox::{DeadLetterState, OdooRef, Outcome, ReplayResult};
use serde_json::{json, Value};

const KEY: &str = "test-key";

#[derive(Default)]
struct FakeOdoo {
    products: HashMap<String, i64>,
    locations: HashMap<String, i64>,
    /// Product ids whose rows `load` refuses (rolled back, `ids: false`).
    refused_products: Vec<i64>,
    /// xid → quant id.
    xids: BTreeMap<String, i64>,
    /// (product, location) → quant id.
    quants: HashMap<(i64, i64), i64>,
    /// Names of the stock.moves made by action_apply_inventory (Odoo may add ` (<user>)`).
    moves: Vec<String>,
    /// `model.method` of every execute_kw, and `common.x` of the others, in order.
    calls: Vec<String>,
    loads: Vec<Value>,
    /// Commit the next action_apply_inventory, then answer HTTP 502 (the answer is lost).
    lose_next_apply_answer: bool,
    /// Quants written with `inventory_quantity_set: true`.
    marked: Vec<i64>,
    /// Commit the next full load, then answer HTTP 502.
    lose_next_load_answer: bool,
    /// Answer the next execute_kw with AccessDenied.
    deny_next: bool,
}

type Shared = Arc<Mutex<FakeOdoo>>;

fn ok(id: &Value, result: Value) -> Response {
    Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

fn none(id: &Value) -> Response {
    Json(json!({"jsonrpc": "2.0", "id": id})).into_response()
}

fn fault(id: &Value, name: &str, message: &str) -> Response {
    Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": 200, "message": "Odoo Server Error",
        "data": {"name": name, "debug": "Traceback ...", "message": message, "arguments": [message], "context": {}}}}))
    .into_response()
}

async fn jsonrpc(State(odoo): State<Shared>, Json(request): Json<Value>) -> Response {
    let id = request["id"].clone();
    let params = &request["params"];
    let args = params["args"].as_array().cloned().unwrap_or_default();
    let mut odoo = odoo.lock().expect("lock");
    match (params["service"].as_str(), params["method"].as_str()) {
        (Some("common"), Some("version")) => {
            odoo.calls.push("common.version".into());
            ok(
                &id,
                json!({"server_version": "17.0", "server_version_info": [17, 0, 0, "final", 0, ""], "server_serie": "17.0", "protocol_version": 1}),
            )
        }
        (Some("common"), Some("authenticate")) => {
            odoo.calls.push("common.authenticate".into());
            if args.get(2) == Some(&json!(KEY)) && args.len() == 4 {
                ok(&id, json!(2))
            } else {
                ok(&id, json!(false))
            }
        }
        (Some("object"), Some("execute_kw")) => {
            let model = args[3].as_str().unwrap_or_default().to_string();
            let method = args[4].as_str().unwrap_or_default().to_string();
            odoo.calls.push(format!("{model}.{method}"));
            if odoo.deny_next || args[2] != json!(KEY) {
                odoo.deny_next = false;
                return fault(&id, "odoo.exceptions.AccessDenied", "Access Denied");
            }
            let kwargs = args.get(6).cloned().unwrap_or(json!({}));
            execute(&mut odoo, &id, &model, &method, &args[5], &kwargs)
        }
        _ => fault(&id, "werkzeug.exceptions.NotFound", "not found"),
    }
}

fn execute(
    odoo: &mut FakeOdoo,
    id: &Value,
    model: &str,
    method: &str,
    args: &Value,
    kwargs: &Value,
) -> Response {
    match (model, method) {
        ("product.product" | "stock.location", "search_read") => {
            assert_eq!(kwargs, &json!({"fields": ["id", "barcode"]}));
            let domain = &args[0][0];
            assert_eq!(
                (domain[0].as_str(), domain[1].as_str()),
                (Some("barcode"), Some("in"))
            );
            let table = if model == "product.product" {
                &odoo.products
            } else {
                &odoo.locations
            };
            let records: Vec<Value> = domain[2]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| b.as_str())
                .filter_map(|b| table.get(b).map(|id| json!({"id": id, "barcode": b})))
                .collect();
            ok(id, Value::Array(records))
        }
        ("stock.move", "search_count") => {
            // ["|", ["name","=",TAG], ["name","=like","TAG (%"]]
            assert_eq!(args[0][0], json!("|"));
            let tag = args[0][1][2].as_str().unwrap_or_default().to_string();
            assert_eq!(args[0][2], json!(["name", "=like", format!("{tag} (%")]));
            let n = odoo
                .moves
                .iter()
                .filter(|m| **m == tag || m.starts_with(&format!("{tag} (")))
                .count();
            ok(id, json!(n))
        }
        ("ir.model.data", "search_read") => {
            assert_eq!(args[0][0], json!(["module", "=", "scanbridge"]));
            let records: Vec<Value> = args[0][1][2]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str())
                .filter_map(|n| {
                    odoo.xids
                        .get(&format!("scanbridge.{n}"))
                        .map(|q| json!({"id": 1, "name": n, "res_id": q}))
                })
                .collect();
            ok(id, Value::Array(records))
        }
        ("stock.quant", "load") if args[0] == json!(["id", "inventory_quantity"]) => {
            let mut ids = Vec::new();
            for row in args[1].as_array().into_iter().flatten() {
                match odoo.xids.get(row[0].as_str().unwrap_or_default()) {
                    Some(q) => ids.push(*q),
                    None => {
                        return ok(
                            id,
                            json!({"ids": false, "messages": [{"type": "error", "message": "Missing required value for the field 'Product' (product_id)"}]}),
                        )
                    }
                }
            }
            odoo.loads.push(args[1].clone());
            ok(id, json!({"ids": ids, "messages": []}))
        }
        ("stock.quant", "load") => {
            assert_eq!(kwargs, &json!({"context": {"inventory_mode": true}}));
            assert_eq!(
                args[0],
                json!([
                    "id",
                    "product_id/.id",
                    "location_id/.id",
                    "inventory_quantity"
                ])
            );
            let rows = args[1].as_array().cloned().unwrap_or_default();
            for (i, row) in rows.iter().enumerate() {
                if odoo.xids.contains_key(row[0].as_str().unwrap_or_default()) {
                    return ok(
                        id,
                        json!({"ids": false, "messages": [{"type": "error", "message": "Quant's editing is restricted, you can't do this operation.", "record": i}]}),
                    );
                }
                if odoo
                    .refused_products
                    .contains(&row[1].as_i64().unwrap_or(0))
                {
                    return ok(
                        id,
                        json!({"ids": false, "messages": [{"type": "error", "message": "Invalid database id for the field 'Product'", "rows": {"from": i, "to": i}, "record": i, "field": "product_id"}]}),
                    );
                }
            }
            odoo.loads.push(args[1].clone());
            let mut ids = Vec::new();
            for row in rows {
                let key = (row[1].as_i64().unwrap_or(0), row[2].as_i64().unwrap_or(0));
                let next = odoo.quants.len() as i64 + 100;
                let quant = *odoo.quants.entry(key).or_insert(next);
                odoo.xids
                    .insert(row[0].as_str().unwrap_or_default().to_string(), quant);
                ids.push(quant);
            }
            if odoo.lose_next_load_answer {
                odoo.lose_next_load_answer = false;
                return (StatusCode::BAD_GATEWAY, "upstream went away").into_response();
            }
            ok(id, json!({"ids": ids, "messages": []}))
        }
        ("stock.quant", "write") => {
            assert_eq!(kwargs, &json!({"context": {"inventory_mode": true}}));
            odoo.marked.extend(
                args[0]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_i64),
            );
            assert_eq!(args[1], json!({"inventory_quantity_set": true}));
            ok(id, json!(true))
        }
        ("stock.quant", "action_apply_inventory") => {
            let tag = kwargs["context"]["inventory_name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert_eq!(kwargs["context"]["inventory_mode"], json!(true));
            for _ in args[0].as_array().into_iter().flatten() {
                odoo.moves.push(tag.clone());
            }
            if odoo.lose_next_apply_answer {
                odoo.lose_next_apply_answer = false;
                return (StatusCode::BAD_GATEWAY, "upstream went away").into_response();
            }
            none(id)
        }
        _ => fault(
            id,
            "builtins.AttributeError",
            &format!("The method '{model}.{method}' does not exist"),
        ),
    }
}

async fn start_fake(odoo: FakeOdoo) -> (String, Shared) {
    let shared = Arc::new(Mutex::new(odoo));
    let app = Router::new()
        .route("/jsonrpc", route_post(jsonrpc))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), shared)
}

fn seeded() -> FakeOdoo {
    FakeOdoo {
        products: HashMap::from([
            ("A".into(), 1),
            ("B".into(), 2),
            ("C".into(), 3),
            ("BAD".into(), 666),
        ]),
        locations: HashMap::from([("L1".into(), 10), ("L2".into(), 11)]),
        refused_products: vec![666],
        ..FakeOdoo::default()
    }
}

fn count(product: &str, location: &str, qty: f64) -> scanbridge_protocol::EventBody {
    scan(Operation::Count, product, location, qty)
}

async fn send(relay: &Harness, bodies: Vec<scanbridge_protocol::EventBody>) {
    let client = client(&relay.bundle("WH01"));
    let body = encode(&batch("WH01", 1, bodies)).expect("encode");
    assert_eq!(post(&client, &relay.url(), body).await.0, 200);
}

async fn settled(relay: &Harness, upto: u64) {
    let inbox = relay.inbox.clone();
    eventually(Duration::from_secs(20), "all events settled", || {
        inbox
            .stats("WH01")
            .map(|s| s.cursor > upto)
            .unwrap_or(false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_scans_reach_odoo_through_the_contract_call_sequence() {
    let (url, odoo) = start_fake(seeded()).await;
    let relay = start_relay(&url, "", 200).await;
    send(
        &relay,
        vec![
            count("A", "L1", 12.0),
            count("B", "L1", 3.0),
            count("A", "L2", 7.0),
        ],
    )
    .await;
    settled(&relay, 3).await;
    {
        let odoo = odoo.lock().expect("lock");
        assert_eq!(
            odoo.calls,
            [
                "common.version",
                "common.authenticate",
                "product.product.search_read",
                "stock.location.search_read",
                "stock.move.search_count",
                "ir.model.data.search_read",
                "stock.quant.load",
                "stock.quant.action_apply_inventory",
            ]
        );
        assert_eq!(
            odoo.loads[0],
            json!([
                ["scanbridge.WH01_1", 1, 10, 12.0],
                ["scanbridge.WH01_2", 2, 10, 3.0],
                ["scanbridge.WH01_3", 1, 11, 7.0]
            ])
        );
        assert_eq!(odoo.moves, vec!["scanbridge:WH01:1-3"; 3]);
        for (seq, key) in [(1, (1, 10)), (2, (2, 10)), (3, (1, 11))] {
            assert_eq!(
                relay.inbox.outcome("WH01", seq).expect("outcome"),
                Some(Outcome::Applied {
                    tag: "scanbridge:WH01:1-3".into(),
                    odoo: Some(OdooRef {
                        model: "stock.quant".into(),
                        id: odoo.quants[&key],
                    }),
                }),
                "the trace names the quant each count landed on"
            );
        }
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_product_and_location_starts_a_new_chunk_and_only_the_first_is_checked() {
    let (url, odoo) = start_fake(seeded()).await;
    let relay = start_relay(&url, "", 200).await;
    send(
        &relay,
        vec![
            count("A", "L1", 1.0),
            count("B", "L1", 2.0),
            count("A", "L1", 5.0),
        ],
    )
    .await;
    settled(&relay, 3).await;
    {
        let odoo = odoo.lock().expect("lock");
        assert_eq!(
            odoo.moves,
            [
                "scanbridge:WH01:1-2",
                "scanbridge:WH01:1-2",
                "scanbridge:WH01:3-3"
            ]
        );
        assert_eq!(
            odoo.calls
                .iter()
                .filter(|c| *c == "stock.move.search_count")
                .count(),
            1
        );
        assert_eq!(
            odoo.calls
                .iter()
                .filter(|c| *c == "product.product.search_read")
                .count(),
            1,
            "cache hits"
        );
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_lost_after_odoo_applied_the_count_does_not_apply_it_twice() {
    let mut fake = seeded();
    fake.lose_next_apply_answer = true;
    let (url, odoo) = start_fake(fake).await;
    let relay = start_relay(&url, "", 200).await;
    send(&relay, vec![count("A", "L1", 1.0), count("B", "L1", 2.0)]).await;
    settled(&relay, 2).await;
    {
        let odoo = odoo.lock().expect("lock");
        assert_eq!(
            odoo.moves,
            vec!["scanbridge:WH01:1-2"; 2],
            "one set of moves"
        );
        assert_eq!(odoo.loads.len(), 1, "no second load");
        assert_eq!(
            odoo.calls
                .iter()
                .filter(|c| *c == "stock.move.search_count")
                .count(),
            2
        );
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_barcodes_are_dead_lettered_and_left_out_of_the_chunk() {
    let (url, odoo) = start_fake(seeded()).await;
    let relay = start_relay(&url, "", 200).await;
    send(
        &relay,
        vec![
            count("A", "L1", 1.0),
            count("NOPE", "L1", 2.0),
            count("B", "NOWHERE", 2.0),
        ],
    )
    .await;
    settled(&relay, 3).await;
    let dead = relay.inbox.dead_letters("WH01").expect("dead letters");
    assert_eq!(dead.iter().map(|d| d.seq).collect::<Vec<_>>(), [2, 3]);
    assert!(
        dead[0].reason.contains("product barcode NOPE not found"),
        "{}",
        dead[0].reason
    );
    assert!(
        dead[1]
            .reason
            .contains("location barcode NOWHERE not found"),
        "{}",
        dead[1].reason
    );
    {
        let odoo = odoo.lock().expect("lock");
        assert_eq!(odoo.loads, [json!([["scanbridge.WH01_1", 1, 10, 1.0]])]);
        assert_eq!(odoo.moves, ["scanbridge:WH01:1-3"]);
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_chunk_is_isolated_and_only_the_offending_event_is_dead_lettered() {
    let (url, odoo) = start_fake(seeded()).await;
    let relay = start_relay(&url, "", 200).await;
    send(
        &relay,
        vec![
            count("A", "L1", 1.0),
            count("BAD", "L1", 2.0),
            count("C", "L1", 3.0),
        ],
    )
    .await;
    settled(&relay, 3).await;
    let dead = relay.inbox.dead_letters("WH01").expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].seq, 2);
    assert!(
        dead[0].reason.contains("Invalid database id"),
        "{}",
        dead[0].reason
    );
    {
        let odoo = odoo.lock().expect("lock");
        assert_eq!(odoo.moves, ["scanbridge:WH01:1-1", "scanbridge:WH01:3-3"]);
    }
    assert!(matches!(
        relay.inbox.outcome("WH01", 3).expect("outcome"),
        Some(Outcome::Applied { tag, odoo: Some(_) }) if tag == "scanbridge:WH01:3-3"
    ));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_logs_in_again_once_and_the_call_is_repeated() {
    let mut fake = seeded();
    fake.deny_next = true;
    let (url, odoo) = start_fake(fake).await;
    let relay = start_relay(&url, "", 200).await;
    send(&relay, vec![count("A", "L1", 1.0)]).await;
    settled(&relay, 1).await;
    {
        let odoo = odoo.lock().expect("lock");
        assert_eq!(
            &odoo.calls[..4],
            [
                "common.version",
                "common.authenticate",
                "product.product.search_read",
                "common.authenticate"
            ]
        );
        assert_eq!(odoo.moves, ["scanbridge:WH01:1-1"]);
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_whose_answer_was_lost_is_not_loaded_again_with_product_and_location() {
    let mut fake = seeded();
    fake.lose_next_load_answer = true;
    let (url, odoo) = start_fake(fake).await;
    let relay = start_relay(&url, "", 200).await;
    send(&relay, vec![count("A", "L1", 4.0), count("B", "L1", 5.0)]).await;
    settled(&relay, 2).await;
    assert_eq!(relay.inbox.dead_letters("WH01").expect("dead letters"), []);
    {
        let odoo = odoo.lock().expect("lock");
        assert_eq!(
            odoo.loads,
            [
                json!([
                    ["scanbridge.WH01_1", 1, 10, 4.0],
                    ["scanbridge.WH01_2", 2, 10, 5.0]
                ]),
                json!([["scanbridge.WH01_1", 4.0], ["scanbridge.WH01_2", 5.0]]),
            ]
        );
        assert_eq!(odoo.moves, vec!["scanbridge:WH01:1-2"; 2]);
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_chunk_odoo_already_applied_is_not_written_again() {
    let mut fake = seeded();
    // As if the relay applied 1-2 and was killed before committing its cursor.
    fake.moves = vec!["scanbridge:WH01:1-2 (Administrator)".to_string(); 2];
    fake.xids = BTreeMap::from([
        ("scanbridge.WH01_1".to_string(), 100),
        ("scanbridge.WH01_2".to_string(), 101),
    ]);
    let (url, odoo) = start_fake(fake).await;
    let relay = start_relay(&url, "", 200).await;
    send(&relay, vec![count("A", "L1", 1.0), count("B", "L1", 2.0)]).await;
    settled(&relay, 2).await;
    {
        let odoo = odoo.lock().expect("lock");
        assert!(odoo.loads.is_empty(), "no load: {:?}", odoo.loads);
        assert!(!odoo
            .calls
            .iter()
            .any(|c| c == "stock.quant.action_apply_inventory"));
    }
    assert_eq!(
        relay.inbox.outcome("WH01", 2).expect("outcome"),
        Some(Outcome::Applied {
            tag: "scanbridge:WH01:1-2".into(),
            odoo: None,
        })
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_relay_does_not_push_settled_events_again() {
    let (url, odoo) = start_fake(seeded()).await;
    let relay = start_relay(&url, "", 200).await;
    send(&relay, vec![count("A", "L1", 1.0)]).await;
    settled(&relay, 1).await;
    let relay = relay.restart().await;
    let more = encode(&batch("WH01", 2, vec![count("B", "L1", 2.0)])).expect("encode");
    assert_eq!(
        post(&client(&relay.bundle("WH01")), &relay.url(), more)
            .await
            .0,
        200
    );
    settled(&relay, 2).await;
    {
        let odoo = odoo.lock().expect("lock");
        assert_eq!(odoo.moves, ["scanbridge:WH01:1-1", "scanbridge:WH01:2-2"]);
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_count_marks_its_quant_as_counted_before_applying() {
    let (url, odoo) = start_fake(seeded()).await;
    let relay = start_relay(&url, "", 200).await;
    send(&relay, vec![count("A", "L1", 3.0), count("B", "L1", 0.0)]).await;
    settled(&relay, 2).await;
    {
        let odoo = odoo.lock().expect("lock");
        let quant_b = odoo.quants[&(2, 10)];
        assert_eq!(odoo.marked, [quant_b]);
        let write = odoo.calls.iter().position(|c| c == "stock.quant.write");
        let apply = odoo
            .calls
            .iter()
            .position(|c| c == "stock.quant.action_apply_inventory");
        assert!(write < apply, "{:?}", odoo.calls);
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_missing_from_an_already_applied_chunk_is_dead_lettered_not_marked_applied() {
    let mut fake = seeded();
    // Applied before a crash when barcode B was still unknown: only row 1 was in the load.
    fake.moves = vec!["scanbridge:WH01:1-2".to_string()];
    fake.xids = BTreeMap::from([("scanbridge.WH01_1".to_string(), 100)]);
    let (url, _odoo) = start_fake(fake).await;
    let relay = start_relay(&url, "", 200).await;
    send(&relay, vec![count("A", "L1", 1.0), count("B", "L1", 2.0)]).await;
    settled(&relay, 2).await;
    assert_eq!(
        relay.inbox.outcome("WH01", 1).expect("outcome"),
        Some(Outcome::Applied {
            tag: "scanbridge:WH01:1-2".into(),
            odoo: None,
        })
    );
    let dead = relay.inbox.dead_letters("WH01").expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].seq, 2);
    assert!(
        dead[0].reason.contains("without this count"),
        "{}",
        dead[0].reason
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_replayed_after_fixing_master_data_in_odoo_is_applied_and_resolved() {
    let (url, odoo) = start_fake(seeded()).await;
    let relay = start_relay(&url, "", 200).await;
    send(&relay, vec![count("NEW", "L1", 4.0), count("A", "L1", 1.0)]).await;
    settled(&relay, 2).await;
    let detail = relay
        .inbox
        .dead_letter("WH01", 1)
        .expect("read")
        .expect("dead letter");
    assert_eq!(detail.state, DeadLetterState::Open);
    assert!(detail.reason.contains("NEW"), "{}", detail.reason);
    odoo.lock().expect("lock").products.insert("NEW".into(), 4);
    assert_eq!(
        relay.inbox.replay_dead_letter("WH01", 1).expect("replay"),
        ReplayResult::Done {
            state: DeadLetterState::ReplayRequested,
            released: vec![]
        }
    );
    // The relay's periodic tick picks the requeue up (the fleet API also wakes the pusher).
    let inbox = relay.inbox.clone();
    eventually(Duration::from_secs(30), "the replay is resolved", || {
        inbox
            .dead_letter("WH01", 1)
            .ok()
            .flatten()
            .is_some_and(|d| d.state == DeadLetterState::Resolved)
    })
    .await;
    assert!(matches!(
        relay.inbox.outcome("WH01", 1).expect("outcome"),
        Some(Outcome::Applied { .. })
    ));
    {
        let odoo = odoo.lock().expect("lock");
        assert_eq!(
            odoo.moves.last().map(String::as_str),
            Some("scanbridge:WH01:1-1")
        );
        assert!(odoo.xids.contains_key("scanbridge.WH01_1"));
    }
    relay.stop().await;
}
