//! Integration tests of Odoo 19's JSON-2 API over real HTTP: authentication, status codes and
//! error bodies, named arguments with `ids` and `context`, the backorder flow, fault injection,
//! and its absence in 17/18.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const WIDGET: &str = "4006381333931";

async fn receipt(sim: &SimProcess) -> (Value, Value) {
    let ids = seed(
        sim,
        json!({
            "products": [{"barcode": WIDGET, "name": "Widget"}],
            "pickings": [{"name": "WH/IN/00001", "type": "incoming", "state": "assigned",
                          "moves": [{"product": WIDGET, "qty": 10}]}]
        }),
    )
    .await;
    (
        ids["pickings"]["WH/IN/00001"].clone(),
        ids["products"][WIDGET].clone(),
    )
}

#[tokio::test]
async fn json2_answers_bare_values_with_named_arguments() {
    let sim = start("19");
    let (pid, widget) = receipt(&sim).await;
    let (status, body) = json2(
        &sim,
        "stock.picking",
        "search_read",
        json!({"domain": [["name", "=", "WH/IN/00001"]], "fields": ["state"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!([{"id": pid, "state": "assigned"}]));
    let (status, body) = json2(&sim, "stock.picking", "search", json!({"domain": []})).await;
    assert_eq!((status, body), (200, json!([pid])));
    // create with one dict answers the recordset's ids
    let (status, body) = json2(
        &sim,
        "stock.lot",
        "create",
        json!({"vals_list": {"name": "L1", "product_id": widget}}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.as_array().is_some_and(|a| a.len() == 1), "{body}");
    // a method returning None answers null
    let (status, body) = json2(&sim, "stock.picking", "do_unreserve", json!({"ids": [pid]})).await;
    assert_eq!((status, body), (200, Value::Null));
    let st = state(&sim).await;
    assert_eq!(st["json2_total"], 4);
    assert_eq!(st["calls"]["stock.picking.search_read"], 1);
}

#[tokio::test]
async fn json2_validates_with_ids_and_context_and_finishes_the_backorder_wizard() {
    let sim = start("19");
    let (pid, _) = receipt(&sim).await;
    let st = state(&sim).await;
    let line = by_id(&st["pickings"], &pid)["move_line_ids"][0].clone();
    let (s, _) = json2(
        &sim,
        "stock.move.line",
        "write",
        json!({"ids": [line], "vals": {"quantity": 4, "picked": true}}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, action) = json2(
        &sim,
        "stock.picking",
        "button_validate",
        json!({"ids": [pid]}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(action["res_model"], "stock.backorder.confirmation");
    let ctx = action["context"].clone();
    let (s, wiz) = json2(
        &sim,
        "stock.backorder.confirmation",
        "create",
        json!({"vals_list": [{}], "context": ctx}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, res) = json2(
        &sim,
        "stock.backorder.confirmation",
        "process_cancel_backorder",
        json!({"ids": wiz, "context": ctx}),
    )
    .await;
    assert_eq!((s, res), (200, json!(true)));
    let st = state(&sim).await;
    assert_eq!(by_id(&st["pickings"], &pid)["state"], "done");
}

async fn raw_post(
    sim: &SimProcess,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut req = client()
        .post(format!("{}{path}", sim.base))
        .header("Content-Type", "application/json")
        .body(body.to_owned());
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn json2_errors_carry_odoo_status_codes_and_bodies() {
    let sim = start("19");
    let (pid, widget) = receipt(&sim).await;
    // 401 without or with a wrong key
    for auth in [None, Some("bearer nope")] {
        let r = raw_post(&sim, "/json/2/stock.picking/search", auth, "{}").await;
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "bearer");
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["name"], "werkzeug.exceptions.Unauthorized");
    }
    // 400 for a body that is not JSON
    let key = format!("Bearer {KEY}");
    let r = raw_post(&sim, "/json/2/stock.picking/search", Some(&key), "{nope").await;
    assert_eq!(r.status(), 400);
    // 404: unknown model, unknown method, missing record, other paths and verbs
    let (s, b) = json2(&sim, "foo.bar", "search", json!({})).await;
    assert_eq!(
        (s, b["message"].clone()),
        (404, json!("the model 'foo.bar' does not exist"))
    );
    let (s, b) = json2(&sim, "stock.picking", "frobnicate", json!({})).await;
    assert_eq!(
        (s, b["message"].clone()),
        (
            404,
            json!("The method 'stock.picking.frobnicate' does not exist")
        )
    );
    let (s, b) = json2(
        &sim,
        "stock.picking",
        "write",
        json!({"ids": [999], "vals": {"origin": "x"}}),
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(b["name"], "odoo.exceptions.MissingError");
    let r = raw_post(&sim, "/json/2/stock.picking", Some(&key), "{}").await;
    assert_eq!(r.status(), 404);
    let r = client()
        .get(format!("{}/json/2/stock.picking/search", sim.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // 403: private method
    let (s, b) = json2(&sim, "stock.picking", "_action_done", json!({"ids": [pid]})).await;
    assert_eq!(
        (s, b["name"].clone()),
        (403, json!("odoo.exceptions.AccessError"))
    );
    // 422: UserError, ValidationError, ids on an @api.model method, unexpected keyword
    let (s, b) = json2(
        &sim,
        "stock.picking",
        "action_assign",
        json!({"ids": [pid], "context": {}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    seed(
        &sim,
        json!({"pickings": [{"name": "WH/INT/00001", "type": "internal"}]}),
    )
    .await;
    let (_, found) = json2(
        &sim,
        "stock.picking",
        "search",
        json!({"domain": [["name", "=", "WH/INT/00001"]]}),
    )
    .await;
    let (s, b) = json2(
        &sim,
        "stock.picking",
        "button_validate",
        json!({"ids": found}),
    )
    .await;
    assert_eq!(
        (s, b["name"].clone()),
        (422, json!("odoo.exceptions.UserError"))
    );
    for k in ["name", "message", "arguments", "context", "debug"] {
        assert!(b.get(k).is_some(), "error body has {k}: {b}");
    }
    json2(
        &sim,
        "stock.lot",
        "create",
        json!({"vals_list": [{"name": "D", "product_id": widget}]}),
    )
    .await;
    let (s, b) = json2(
        &sim,
        "stock.lot",
        "create",
        json!({"vals_list": [{"name": "D", "product_id": widget}]}),
    )
    .await;
    assert_eq!(
        (s, b["name"].clone()),
        (422, json!("odoo.exceptions.ValidationError"))
    );
    let (s, b) = json2(
        &sim,
        "stock.lot",
        "create",
        json!({"ids": [1], "vals_list": []}),
    )
    .await;
    assert_eq!(
        (s, b["message"].clone()),
        (422, json!("cannot call stock.lot.create with ids"))
    );
    let (s, b) = json2(
        &sim,
        "stock.picking",
        "search",
        json!({"domain": [], "bogus": 1}),
    )
    .await;
    assert_eq!(
        (s, b["message"].clone()),
        (422, json!("got an unexpected keyword argument 'bogus'"))
    );
    // another database name
    let r = client()
        .post(format!("{}/json/2/stock.picking/search", sim.base))
        .header("Authorization", &key)
        .header("X-Odoo-Database", "other")
        .json(&json!({"domain": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn json2_does_not_exist_before_19() {
    for v in ["17", "18"] {
        let sim = start(v);
        let (s, _) = json2(&sim, "stock.picking", "search", json!({"domain": []})).await;
        assert_eq!(s, 404, "{v}");
    }
}

#[tokio::test]
async fn json2_faults_answer_500_or_drop_the_connection_after_commit() {
    let sim = start("19");
    let (_, widget) = receipt(&sim).await;
    faults(&sim, json!({"serialization_failure_next": 1})).await;
    let (s, b) = json2(
        &sim,
        "stock.lot",
        "create",
        json!({"vals_list": [{"name": "S", "product_id": widget}]}),
    )
    .await;
    assert_eq!(
        (s, b["name"].clone()),
        (500, json!("psycopg2.errors.SerializationFailure"))
    );
    faults(&sim, json!({"http_500_next": 1})).await;
    let (s, _) = json2(&sim, "stock.lot", "search", json!({"domain": []})).await;
    assert_eq!(s, 500);
    faults(&sim, json!({"drop_after_commit_next": 1, "latency_ms": 50})).await;
    let started = Instant::now();
    let r = client()
        .post(format!("{}/json/2/stock.lot/create", sim.base))
        .header("Authorization", format!("bearer {KEY}"))
        .json(&json!({"vals_list": [{"name": "LOST", "product_id": widget}]}))
        .send()
        .await;
    assert!(r.is_err(), "the connection is dropped without a response");
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "latency applies"
    );
    faults(&sim, json!({"latency_ms": 0})).await;
    let st = state(&sim).await;
    assert!(
        st["lots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "LOST"),
        "committed before the drop"
    );
    assert!(
        st["lots"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["name"] != "S"),
        "the serialization failure committed nothing"
    );
}
