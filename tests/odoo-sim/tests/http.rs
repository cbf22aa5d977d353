//! Integration tests: start the real `scanbridge-odoo-sim` binary on port 0 and speak HTTP
//! JSON-RPC to it, including raw TCP for the dropped-connection faults.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "test-api-key";
const DB: &str = "scanbridge";

/// A running simulator process, killed on drop.
struct SimProcess {
    child: Child,
    base: String,
    addr: String,
    stderr: Option<std::process::ChildStderr>,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(version: &str, extra: &[&str]) -> SimProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_scanbridge-odoo-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--odoo-version",
            version,
            "--db",
            DB,
            "--login",
            "scanbridge",
            "--api-key",
            KEY,
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the simulator: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut line = String::new();
    // read_line blocks until the line arrives or the process exits (EOF).
    BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("reading stdout: {e}"));
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let stderr = child.stderr.take();
    SimProcess {
        child,
        base: format!("http://{addr}"),
        addr,
        stderr,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"))
}

async fn rpc(sim: &SimProcess, service: &str, method: &str, args: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "method": "call", "id": 7, "params": {"service": service, "method": method, "args": args}});
    let resp = client()
        .post(format!("{}/jsonrpc", sim.base))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("rpc {service}.{method}: {e}"));
    assert_eq!(resp.status(), 200, "JSON-RPC answers are always HTTP 200");
    resp.json().await.unwrap_or_else(|e| panic!("json: {e}"))
}

async fn execute_kw(
    sim: &SimProcess,
    model: &str,
    method: &str,
    args: Value,
    kwargs: Value,
) -> Value {
    rpc(
        sim,
        "object",
        "execute_kw",
        json!([DB, 2, KEY, model, method, args, kwargs]),
    )
    .await
}

fn result(v: &Value) -> &Value {
    assert!(v.get("error").is_none(), "unexpected error {v}");
    &v["result"]
}

async fn state(sim: &SimProcess) -> Value {
    client()
        .get(format!("{}/__sim/state", sim.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("state: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("state json: {e}"))
}

async fn post_control(sim: &SimProcess, path: &str, body: Value) -> Value {
    let resp = client()
        .post(format!("{}/__sim/{path}", sim.base))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(resp.status(), 200);
    resp.json()
        .await
        .unwrap_or_else(|e| panic!("{path} json: {e}"))
}

async fn seed(sim: &SimProcess) -> (i64, i64) {
    let ids = post_control(
        sim,
        "seed",
        json!({"products": [{"barcode": "4006381333931", "name": "Widget"}], "locations": [{"barcode": "WH-STOCK-A01", "name": "A01"}]}),
    )
    .await;
    let p = ids["products"]["4006381333931"]
        .as_i64()
        .unwrap_or_else(|| panic!("seed answer {ids}"));
    let l = ids["locations"]["WH-STOCK-A01"]
        .as_i64()
        .unwrap_or_else(|| panic!("seed answer {ids}"));
    (p, l)
}

fn load_body(xid: &str, product: i64, location: i64, qty: f64) -> Value {
    json!({"jsonrpc": "2.0", "method": "call", "id": 1, "params": {"service": "object", "method": "execute_kw", "args": [
        DB, 2, KEY, "stock.quant", "load",
        [["id", "product_id/.id", "location_id/.id", "inventory_quantity"], [[xid, product, location, qty]]],
        {"context": {"inventory_mode": true}}]}})
}

/// Send one HTTP request on a raw socket and return everything the server wrote before closing.
async fn raw_post(addr: &str, body: &Value) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let body = body.to_string();
    let req = format!(
        "POST /jsonrpc HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(req.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got)).await;
    match read {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(Err(e)) => panic!("read: {e}"),
        Err(_) => panic!("the server neither answered nor closed the connection within 10 s"),
    }
    got
}

#[tokio::test]
async fn version_and_authenticate_answer_like_the_impersonated_release() {
    let sim = start("19", &[]);
    let v = rpc(&sim, "common", "version", json!([])).await;
    assert_eq!(result(&v)["server_version"], "19.0");
    assert_eq!(
        result(&v)["server_version_info"],
        json!([19, 0, 0, "final", 0, ""])
    );
    assert_eq!(v["id"], 7);
    let uid = rpc(
        &sim,
        "common",
        "authenticate",
        json!([DB, "scanbridge", KEY, {}]),
    )
    .await;
    assert_eq!(result(&uid), &json!(2));
    let bad = rpc(
        &sim,
        "common",
        "authenticate",
        json!([DB, "scanbridge", "wrong", {}]),
    )
    .await;
    assert_eq!(
        result(&bad),
        &json!(false),
        "bad credentials are false, not an error"
    );
}

#[tokio::test]
async fn a_bad_key_on_execute_kw_is_access_denied_in_an_http_200_envelope() {
    for (version, code) in [("17", 200), ("19", 0)] {
        let sim = start(version, &[]);
        let v = rpc(
            &sim,
            "object",
            "execute_kw",
            json!([DB, 2, "wrong", "product.product", "search", [[]], {}]),
        )
        .await;
        assert_eq!(v["error"]["code"], code, "version {version}");
        assert_eq!(v["error"]["message"], "Odoo Server Error");
        assert_eq!(v["error"]["data"]["name"], "odoo.exceptions.AccessDenied");
        assert_eq!(v["error"]["data"]["message"], "Access Denied");
        assert_eq!(v["error"]["data"]["arguments"], json!(["Access Denied"]));
        assert!(v["error"]["data"]["debug"]
            .as_str()
            .is_some_and(|d| d.contains("AccessDenied")));
        assert_eq!(v["error"]["data"]["context"], json!({}));
        assert!(v.get("result").is_none());
    }
}

#[tokio::test]
async fn five_failed_logins_from_one_ip_start_the_cooldown() {
    let sim = start("17", &[]);
    for _ in 0..5 {
        let v = rpc(
            &sim,
            "common",
            "authenticate",
            json!([DB, "scanbridge", "wrong", {}]),
        )
        .await;
        assert_eq!(result(&v), &json!(false));
    }
    let good = rpc(
        &sim,
        "common",
        "authenticate",
        json!([DB, "scanbridge", KEY, {}]),
    )
    .await;
    assert_eq!(
        result(&good),
        &json!(false),
        "even the right key is refused during the cooldown"
    );
    let v = execute_kw(&sim, "product.product", "search", json!([[]]), json!({})).await;
    assert_eq!(v["error"]["data"]["name"], "odoo.exceptions.AccessDenied");
    assert_eq!(
        v["error"]["data"]["message"],
        "Too many login failures, please wait a bit before trying again."
    );
}

#[tokio::test]
async fn error_envelopes_carry_odoo_names_and_messages() {
    let sim = start("18", &[]);
    seed(&sim).await;
    let cases = [
        (
            "foo.bar",
            "search",
            json!([[]]),
            "odoo.exceptions.UserError",
            "Object foo.bar doesn't exist",
        ),
        (
            "stock.quant",
            "frobnicate",
            json!([[]]),
            "builtins.AttributeError",
            "The method 'stock.quant.frobnicate' does not exist",
        ),
        (
            "stock.quant",
            "_apply_inventory",
            json!([[1]]),
            "odoo.exceptions.AccessError",
            "Private methods (such as 'stock.quant._apply_inventory') cannot be called remotely.",
        ),
        (
            "stock.quant",
            "action_apply_inventory",
            json!([[4242]]),
            "odoo.exceptions.MissingError",
            "Record does not exist or has been deleted.\n(Record: stock.quant(4242,), User: 2)",
        ),
    ];
    for (model, method, args, name, message) in cases {
        let v = execute_kw(&sim, model, method, args, json!({})).await;
        assert_eq!(v["error"]["code"], 200);
        assert_eq!(v["error"]["data"]["name"], name, "{model}.{method}");
        assert_eq!(v["error"]["data"]["message"], message, "{model}.{method}");
    }
    let dup = execute_kw(
        &sim,
        "product.product",
        "create",
        json!([{"name": "Clone", "barcode": "4006381333931"}]),
        json!({}),
    )
    .await;
    assert_eq!(
        dup["error"]["data"]["name"],
        "odoo.exceptions.ValidationError"
    );
    let products = state(&sim).await["products"].as_array().map(Vec::len);
    assert_eq!(products, Some(1), "the refused create was rolled back");
}

#[tokio::test]
async fn the_count_flow_applies_once_and_apply_has_no_result_key() {
    let sim = start("17", &[]);
    let (pid, lid) = seed(&sim).await;
    let found = execute_kw(
        &sim,
        "product.product",
        "search_read",
        json!([[["barcode", "in", ["4006381333931", "0000000000000"]]]]),
        json!({"fields": ["id", "barcode"]}),
    )
    .await;
    assert_eq!(
        result(&found),
        &json!([{"id": pid, "barcode": "4006381333931"}])
    );
    let tag = "scanbridge:WH01:1-1";
    let loaded = execute_kw(
        &sim,
        "stock.quant",
        "load",
        json!([
            [
                "id",
                "product_id/.id",
                "location_id/.id",
                "inventory_quantity"
            ],
            [["scanbridge.WH01_1", pid, lid, 12]]
        ]),
        json!({"context": {"inventory_mode": true}}),
    )
    .await;
    let ids = result(&loaded)["ids"].clone();
    assert_eq!(result(&loaded)["messages"], json!([]));
    let applied = execute_kw(
        &sim,
        "stock.quant",
        "action_apply_inventory",
        json!([ids]),
        json!({"context": {"inventory_mode": true, "inventory_name": tag}}),
    )
    .await;
    assert!(applied.get("error").is_none(), "{applied}");
    assert!(
        applied.get("result").is_none(),
        "None must leave the result key out: {applied}"
    );
    assert_eq!(applied["jsonrpc"], "2.0");
    let st = state(&sim).await;
    let quant = st["quants"]
        .as_array()
        .and_then(|q| q.iter().find(|q| q["location_id"] == lid).cloned());
    let quant = quant.unwrap_or_else(|| panic!("no quant at A01 in {st}"));
    assert_eq!(quant["quantity"], 12.0);
    assert_eq!(quant["inventory_quantity_set"], false);
    assert_eq!(st["moves"][0]["name"], format!("{tag} (Administrator)"));
    assert_eq!(st["moves"][0]["state"], "done");
    assert_eq!(st["calls"]["stock.quant.load"], 1);
    assert_eq!(st["calls"]["stock.quant.action_apply_inventory"], 1);
    assert_eq!(st["rpc_total"], 3);
    let xids: Vec<&Value> = st["xmlids"]
        .as_array()
        .map(|x| x.iter().filter(|x| x["module"] == "scanbridge").collect())
        .unwrap_or_default();
    assert_eq!(
        xids,
        vec![
            &json!({"module": "scanbridge", "name": "WH01_1", "model": "stock.quant", "res_id": quant["id"]})
        ]
    );
}

#[tokio::test]
async fn malformed_bodies_and_unknown_paths_get_http_errors_like_odoo() {
    let sim = start("17", &[]);
    let c = client();
    for (body, expected) in [
        ("{not json", "Invalid JSON data"),
        ("[1, 2]", "Invalid JSON-RPC data"),
    ] {
        let resp = c
            .post(format!("{}/jsonrpc", sim.base))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 400);
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(ct.starts_with("text/plain"), "{ct}");
        assert_eq!(resp.text().await.unwrap_or_default(), expected);
    }
    let resp = c
        .get(format!("{}/web/nothing", sim.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn http_500_and_serialization_faults_commit_nothing() {
    let sim = start("18", &[]);
    let (pid, lid) = seed(&sim).await;
    post_control(
        &sim,
        "faults",
        json!({"http_500_next": 1, "serialization_failure_next": 1}),
    )
    .await;
    let resp = client()
        .post(format!("{}/jsonrpc", sim.base))
        .json(&load_body("scanbridge.WH01_1", pid, lid, 3.0))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 500);
    let v: Value = client()
        .post(format!("{}/jsonrpc", sim.base))
        .json(&load_body("scanbridge.WH01_1", pid, lid, 3.0))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        v["error"]["data"]["name"],
        "psycopg2.errors.SerializationFailure"
    );
    assert_eq!(
        v["error"]["data"]["message"],
        "could not serialize access due to concurrent update"
    );
    let st = state(&sim).await;
    assert_eq!(st["quants"], json!([]));
    assert_eq!(
        st["calls"]["stock.quant.load"], 2,
        "faulted calls are counted"
    );
}

#[tokio::test]
async fn drop_after_commit_commits_then_closes_the_socket_without_a_byte() {
    let sim = start("17", &[]);
    let (pid, lid) = seed(&sim).await;
    post_control(&sim, "faults", json!({"drop_after_commit_next": 1})).await;
    let got = raw_post(&sim.addr, &load_body("scanbridge.WH01_7", pid, lid, 5.0)).await;
    assert!(
        got.is_empty(),
        "expected no response bytes, got {:?}",
        String::from_utf8_lossy(&got)
    );
    let st = state(&sim).await;
    assert_eq!(
        st["quants"].as_array().map(Vec::len),
        Some(1),
        "the load was committed: {st}"
    );
    assert_eq!(st["quants"][0]["inventory_quantity"], 5.0);
    assert!(st["xmlids"]
        .as_array()
        .is_some_and(|x| x.iter().any(|x| x["name"] == "WH01_7")));
    assert_eq!(st["faults"]["drop_after_commit_next"], 0);
}

#[tokio::test]
async fn drop_before_commit_closes_the_socket_and_commits_nothing() {
    let sim = start("19", &[]);
    let (pid, lid) = seed(&sim).await;
    post_control(&sim, "faults", json!({"drop_before_commit_next": 1})).await;
    let got = raw_post(&sim.addr, &load_body("scanbridge.WH01_8", pid, lid, 5.0)).await;
    assert!(
        got.is_empty(),
        "expected no response bytes, got {:?}",
        String::from_utf8_lossy(&got)
    );
    let st = state(&sim).await;
    assert_eq!(st["quants"], json!([]));
    // The next call is served normally.
    let got = raw_post(&sim.addr, &load_body("scanbridge.WH01_8", pid, lid, 5.0)).await;
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test]
async fn demo_data_seeds_a_warehouse_and_prints_its_barcodes() {
    let mut sim = start("18", &["--demo-data"]);
    let st = state(&sim).await;
    let products = st["products"].as_array().cloned().unwrap_or_default();
    assert!(products.len() >= 30, "{} products", products.len());
    let locations = st["locations"].as_array().cloned().unwrap_or_default();
    assert!(locations
        .iter()
        .any(|l| l["barcode"] == "WH-STOCK-A12" && l["complete_name"] == "WH/Stock/A12"));
    let _ = sim.child.kill();
    let _ = sim.child.wait();
    let mut err = String::new();
    if let Some(mut s) = sim.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut s, &mut err);
    }
    assert!(err.contains("4006381333931"), "stderr: {err}");
    assert!(err.contains("WH-STOCK-A01"), "stderr: {err}");
}

#[test]
fn sigterm_stops_the_simulator_cleanly() {
    let mut sim = start("17", &[]);
    let status = Command::new("kill")
        .args(["-TERM", &sim.child.id().to_string()])
        .status()
        .unwrap_or_else(|e| panic!("kill: {e}"));
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(code) = sim.child.try_wait().unwrap_or_else(|e| panic!("wait: {e}")) {
            assert!(code.success(), "exit status {code}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_bad_command_line_exits_with_64() {
    let out = Command::new(env!("CARGO_BIN_EXE_scanbridge-odoo-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--odoo-version",
            "16",
            "--api-key",
            "k",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--odoo-version"));
}

#[tokio::test]
async fn login_execute_and_a_non_json_content_type_behave_like_odoo() {
    let sim = start("17", &[]);
    let uid = rpc(&sim, "common", "login", json!([DB, "scanbridge", KEY])).await;
    assert_eq!(result(&uid), &json!(2));
    let other_db = rpc(
        &sim,
        "common",
        "authenticate",
        json!(["nope", "scanbridge", KEY, {}]),
    )
    .await;
    assert_eq!(
        other_db["error"]["data"]["name"],
        "psycopg2.OperationalError"
    );
    let ids = rpc(
        &sim,
        "object",
        "execute",
        json!([
            DB,
            2,
            KEY,
            "stock.location",
            "search",
            [["usage", "=", "inventory"]]
        ]),
    )
    .await;
    assert_eq!(result(&ids).as_array().map(Vec::len), Some(1));
    let unknown = rpc(&sim, "object", "frobnicate", json!([DB, 2, KEY])).await;
    assert_eq!(unknown["error"]["data"]["name"], "builtins.NameError");
    let resp = client()
        .post(format!("{}/jsonrpc", sim.base))
        .header("Content-Type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 400);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(ct.starts_with("text/html"), "{ct}");
}
