//! Test support for the admin listener's tests: a temporary CA, an in-process Odoo simulator, a
//! relay with an `[admin]` section (in-process, or as a real process), clients for the site and
//! the admin listener, and batches with an agent status.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use scanbridge_protocol::{
    AgentStatus, Batch, Event, EventBody, Operation, Quarantined, Scan, Source, SourceHealth,
    SourceKind, Symbology,
};
use scanbridge_relay::config::Config;
use scanbridge_relay::inbox::Inbox;
use scanbridge_relay::relay::Relay;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "test-admin-token-0123456789abcdef";
pub const ODOO_KEY: &str = "sim-api-key";
pub const LOCATION: &str = "WH-STOCK-A01";

/// An in-process Odoo simulator (Odoo 17).
pub struct OdooSim {
    pub url: String,
    cancel: CancellationToken,
}

impl Drop for OdooSim {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl OdooSim {
    pub async fn start() -> OdooSim {
        let sim = scanbridge_odoo_sim::Sim::new(scanbridge_odoo_sim::SimConfig {
            version: "17".parse().unwrap(),
            db_name: "scanbridge".into(),
            login: "scanbridge".into(),
            api_key: ODOO_KEY.into(),
            user_name: "Administrator".into(),
        })
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cancel = CancellationToken::new();
        tokio::spawn(scanbridge_odoo_sim::server::serve(
            listener,
            Arc::new(sim),
            cancel.clone(),
        ));
        OdooSim { url, cancel }
    }

    /// `POST /__sim/seed` with products `(barcode, name)` and locations `(barcode, name)`.
    pub async fn seed(&self, products: &[(&str, &str)], locations: &[(&str, &str)]) {
        let body = json!({
            "products": products.iter().map(|(b, n)| json!({"barcode": b, "name": n})).collect::<Vec<_>>(),
            "locations": locations.iter().map(|(b, n)| json!({"barcode": b, "name": n})).collect::<Vec<_>>(),
        });
        let r = reqwest::Client::new()
            .post(format!("{}/__sim/seed", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "seed: {}", r.status());
    }
}

impl OdooSim {
    /// `POST /__sim/faults` (e.g. `{"http_500_next": 1}`).
    pub async fn faults(&self, body: Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/__sim/faults", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "faults: {}", r.status());
    }
}

/// A directory with a CA, a token file and a relay config with `[admin]`.
pub struct Setup {
    pub dir: Arc<tempfile::TempDir>,
    pub config: PathBuf,
}

impl Setup {
    /// `admin_listen`: e.g. `127.0.0.1:0`. `extra`: more TOML appended at the end.
    pub fn new(odoo_url: &str, admin_listen: &str, extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        scanbridge_relay::ca::init(
            &dir.path().join("ca"),
            &["localhost".into()],
            &["127.0.0.1".parse().unwrap()],
        )
        .unwrap();
        std::fs::write(dir.path().join("odoo-api-key"), format!("{ODOO_KEY}\n")).unwrap();
        std::fs::write(dir.path().join("admin-token"), format!("{TOKEN}\n")).unwrap();
        let text = format!(
            "listen = \"127.0.0.1:0\"\nstate_dir = \"state\"\n[tls]\nserver_cert = \"ca/server.pem\"\nserver_key = \"ca/server.key\"\nclient_ca = \"ca/ca.pem\"\n[odoo]\nurl = \"{odoo_url}\"\ndatabase = \"scanbridge\"\nlogin = \"scanbridge\"\napi_key_file = \"odoo-api-key\"\ntimeout_secs = 5\nmax_chunk = 50\n[admin]\nlisten = \"{admin_listen}\"\ntoken_file = \"admin-token\"\n{extra}"
        );
        let config = dir.path().join("relay.toml");
        std::fs::write(&config, text).unwrap();
        Setup {
            dir: Arc::new(dir),
            config,
        }
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca/ca.pem")
    }

    /// A site bundle (issued once).
    pub fn bundle(&self, site: &str) -> PathBuf {
        let out = self.dir.path().join(format!("bundle-{site}"));
        if !out.join("site.pem").exists() {
            scanbridge_relay::ca::issue(&self.dir.path().join("ca"), site, &out, 30).unwrap();
        }
        out
    }
}

/// A relay running in this process.
pub struct InProcess {
    pub site_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub inbox: Inbox,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl InProcess {
    pub async fn start(setup: &Setup) -> InProcess {
        let config = Config::load(&setup.config).unwrap();
        let cancel = CancellationToken::new();
        let relay = Relay::start(config, cancel.clone()).await.unwrap();
        let site_addr = relay.local_addr();
        let admin_addr = relay.admin_addr().expect("admin listener configured");
        let inbox = relay.inbox().clone();
        let task = tokio::spawn(async move { relay.run().await.unwrap() });
        InProcess {
            site_addr,
            admin_addr,
            inbox,
            cancel,
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
        // The admin listener's task ends with the token; give its port and the store back.
        drop(self);
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.admin_addr.port())
    }

    pub fn batches_url(&self) -> String {
        format!("https://127.0.0.1:{}/v1/batches", self.site_addr.port())
    }
}

/// A client of the admin listener trusting the relay's CA, without a client certificate.
pub fn admin_client(ca_pem: &Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca_pem).unwrap()).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A client presenting a certificate bundle (`cert`, `key`), trusting the relay's CA.
pub fn client_with_cert(ca_pem: &Path, cert: &Path, key: &Path) -> reqwest::Client {
    let config = scanbridge_relay::tls::client_config(ca_pem, cert, key).unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls((*config).clone())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A site's client (its bundle).
pub fn site_client(bundle: &Path) -> reqwest::Client {
    client_with_cert(
        &bundle.join("ca.pem"),
        &bundle.join("site.pem"),
        &bundle.join("site.key"),
    )
}

/// `GET` with the admin token; status and JSON (Null when the body is not JSON).
pub async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = client.get(url).bearer_auth(TOKEN).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub fn agent_status(backlog: u64, oldest_ms: Option<u64>, cert_days: i64) -> AgentStatus {
    let now = scanbridge_relay::now_micros();
    AgentStatus {
        version: "0.1.0-test".into(),
        backlog_events: backlog,
        backlog_bytes: backlog * 120,
        oldest_pending_age_ms: oldest_ms,
        disk_used_bytes: 4096,
        disk_cap_bytes: 1 << 30,
        quarantine_count: 0,
        ingest_paused: false,
        sources: vec![SourceHealth {
            name: "site".into(),
            kind: SourceKind::Mqtt,
            up: true,
            detail: "connected".into(),
        }],
        cert_not_after: Some(now + cert_days * 86_400 * 1_000_000),
        clock: now,
    }
}

pub fn count(code: &str, qty: f64) -> EventBody {
    EventBody::Scan(Scan {
        code: code.into(),
        symbology: Symbology::Ean13,
        gs1: None,
        op: Some(Operation::Count),
        qty: Some(qty),
        location: Some(LOCATION.into()),
        reference: None,
    })
}

pub fn quarantined(raw: &[u8], reason: &str) -> EventBody {
    EventBody::Quarantined(Quarantined {
        raw: raw.to_vec(),
        reason: reason.into(),
    })
}

pub fn batch(
    site: &str,
    first_seq: u64,
    bodies: Vec<EventBody>,
    status: Option<AgentStatus>,
) -> Batch {
    let now = scanbridge_relay::now_micros();
    Batch {
        site: site.into(),
        agent: format!("gw-{}", site.to_lowercase()),
        first_seq,
        events: bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Event {
                seq: first_seq + i as u64,
                captured_at: now - 5_000_000,
                received_at: now - 5_000_000,
                source: Source::Mqtt {
                    broker: "site".into(),
                    topic: "scanbridge/SC-01/scan".into(),
                },
                device: "SC-01".into(),
                body,
            })
            .collect(),
        status,
    }
}

/// Posts a batch as the site's agent would; asserts 200.
pub async fn send(client: &reqwest::Client, url: &str, batch: &Batch) {
    let body = scanbridge_protocol::encode(batch).unwrap();
    let r = client
        .post(url)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "batch refused");
}

/// Polls `check` (async) every 50 ms until it returns `Some`, failing after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free TCP port on 127.0.0.1 (for a listener that must be named in a config file).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real agent (the `scanbridge-agent` library) running in this process for `site`, sending
/// to the relay at `site_port`, with an MQTT source whose broker is down and its local status
/// API on `status_port`. Stops when the returned token is cancelled (or dropped with the test).
pub async fn start_agent(
    setup: &Setup,
    site: &str,
    site_port: u16,
    status_port: u16,
) -> CancellationToken {
    let bundle = setup.bundle(site);
    let dir = setup.dir.path().join(format!("agent-{site}"));
    std::fs::create_dir_all(&dir).unwrap();
    let q = |p: PathBuf| format!("{:?}", p.to_str().unwrap());
    let text = format!(
        "site = \"{site}\"\nagent_id = \"gw-test-{site}\"\nstate_dir = {state}\n[relay]\nurl = \"https://127.0.0.1:{site_port}\"\nca_cert = {ca}\nclient_cert = {cert}\nclient_key = {key}\nheartbeat_secs = 1\nretry_initial_ms = 100\nretry_max_ms = 1000\n[[mqtt]]\nname = \"site\"\nhost = \"127.0.0.1\"\nport = {broker}\nclient_id = \"scanbridge-agent-{site}\"\ntopics = [\"scanbridge/+/scan\"]\n[status]\nlisten = \"127.0.0.1:{status_port}\"\n",
        state = q(dir.join("state")),
        ca = q(bundle.join("ca.pem")),
        cert = q(bundle.join("site.pem")),
        key = q(bundle.join("site.key")),
        broker = free_port(),
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    let config = scanbridge_agent::config::load(&path).unwrap();
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    tokio::spawn(async move {
        if let Err(e) = scanbridge_agent::app::run(config, token).await {
            panic!("agent stopped: {e}");
        }
    });
    cancel
}
