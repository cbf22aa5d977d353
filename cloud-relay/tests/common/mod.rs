//! Test harness shared by the relay's integration tests: a temporary CA made with the relay's
//! own `ca` code, a relay started in-process on port 0, agent-like HTTPS clients, and helpers to
//! build batches and to observe TLS alerts.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use scanbridge_protocol::{
    Batch, Event, EventBody, Operation, Quarantined, Scan, Source, Symbology,
};
use scanbridge_relay::config::Config;
use scanbridge_relay::inbox::Inbox;
use scanbridge_relay::relay::Relay;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A running relay with its CA directory; stopped when dropped.
pub struct Harness {
    pub dir: Arc<tempfile::TempDir>,
    pub addr: SocketAddr,
    pub inbox: Inbox,
    pub cancel: CancellationToken,
    pub task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Harness {
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    /// Issues a bundle for `site` from the relay's CA (once; later calls return the same one).
    pub fn bundle(&self, site: &str) -> PathBuf {
        let out = self.dir.path().join(format!("bundle-{site}"));
        if !out.join("site.pem").exists() {
            scanbridge_relay::ca::issue(&self.ca_dir(), site, &out, 30).expect("issue bundle");
        }
        out
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/v1/batches", self.addr.port())
    }

    /// Stops the relay and starts it again on the same state and configuration.
    pub async fn restart(self) -> Harness {
        let dir = self.dir.clone();
        self.stop().await;
        let path = dir.path().join("relay.toml");
        start_with_config(dir, &path).await
    }

    /// Stops the relay and waits for it.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("relay task");
        }
    }
}

/// Writes a config into `dir` with `extra_limits` lines under `[limits]`.
pub fn write_config(dir: &Path, odoo_url: &str, extra_limits: &str, max_chunk: usize) -> PathBuf {
    std::fs::write(dir.join("odoo-api-key"), "test-key\n").expect("write key");
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstate_dir = \"state\"\n[tls]\nserver_cert = \"ca/server.pem\"\nserver_key = \"ca/server.key\"\nclient_ca = \"ca/ca.pem\"\n[limits]\n{extra_limits}\n[odoo]\nurl = \"{odoo_url}\"\ndatabase = \"scanbridge\"\nlogin = \"scanbridge\"\napi_key_file = \"odoo-api-key\"\ntimeout_secs = 5\nmax_chunk = {max_chunk}\n"
    );
    let path = dir.join("relay.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Starts a relay with a fresh CA. Odoo is unreachable unless `odoo_url` says otherwise.
pub async fn start_relay(odoo_url: &str, extra_limits: &str, max_chunk: usize) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    scanbridge_relay::ca::init(
        &dir.path().join("ca"),
        &["localhost".into()],
        &["127.0.0.1".parse().expect("ip")],
    )
    .expect("ca init");
    let path = write_config(dir.path(), odoo_url, extra_limits, max_chunk);
    start_with_config(Arc::new(dir), &path).await
}

/// Starts (or restarts) a relay from the config file in `dir`.
pub async fn start_with_config(dir: Arc<tempfile::TempDir>, path: &Path) -> Harness {
    let config = Config::load(path).expect("config");
    let cancel = CancellationToken::new();
    let relay = Relay::start(config, cancel.clone())
        .await
        .expect("relay start");
    let addr = relay.local_addr();
    let inbox = relay.inbox().clone();
    let task = tokio::spawn(async move {
        relay.run().await.expect("relay run");
    });
    Harness {
        dir,
        addr,
        inbox,
        cancel,
        task: Some(task),
    }
}

/// An HTTPS client presenting the bundle in `bundle` (trusting the bundle's CA).
pub fn client(bundle: &Path) -> reqwest::Client {
    let config = scanbridge_relay::tls::client_config(
        &bundle.join("ca.pem"),
        &bundle.join("site.pem"),
        &bundle.join("site.key"),
    )
    .expect("client tls");
    reqwest::Client::builder()
        .use_preconfigured_tls((*config).clone())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

pub fn event(seq: u64, body: EventBody) -> Event {
    device_event(seq, "SC-01", body)
}

/// An event from `device`, published on its MQTT topic.
pub fn device_event(seq: u64, device: &str, body: EventBody) -> Event {
    Event {
        seq,
        captured_at: 1_700_000_000_000_000,
        received_at: 1_700_000_000_000_100,
        source: Source::Mqtt {
            broker: "site".into(),
            topic: format!("scanbridge/{device}/scan"),
        },
        device: device.into(),
        body,
    }
}

pub fn scan(op: Operation, code: &str, location: &str, qty: f64) -> EventBody {
    EventBody::Scan(Scan {
        code: code.into(),
        symbology: Symbology::Ean13,
        gs1: None,
        op: Some(op),
        qty: Some(qty),
        location: Some(location.into()),
        reference: None,
    })
}

pub fn quarantined(raw: &[u8], reason: &str) -> EventBody {
    EventBody::Quarantined(Quarantined {
        raw: raw.to_vec(),
        reason: reason.into(),
    })
}

pub fn batch(site: &str, first_seq: u64, bodies: Vec<EventBody>) -> Batch {
    Batch {
        site: site.into(),
        agent: format!("gw-{}", site.to_lowercase()),
        first_seq,
        events: bodies
            .into_iter()
            .enumerate()
            .map(|(i, b)| event(first_seq + i as u64, b))
            .collect(),
        status: None,
    }
}

/// Posts an enveloped batch; returns status and body.
pub async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let response = client
        .post(url)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("body").to_vec();
    (status, body)
}

/// Connects with `config`, sends a request, and returns the TLS error that ended the exchange.
pub async fn tls_failure(addr: SocketAddr, config: rustls::ClientConfig) -> Option<rustls::Error> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("tcp connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = match connector.connect(name, tcp).await {
        Ok(tls) => tls,
        Err(e) => return rustls_error(&e),
    };
    // In TLS 1.3 the client finishes its handshake before the server judges its certificate;
    // the server's alert arrives on the first read.
    if let Err(e) = tls
        .write_all(b"POST /v1/batches HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n\r\n")
        .await
    {
        return rustls_error(&e);
    }
    let mut buf = Vec::new();
    match tls.read_to_end(&mut buf).await {
        Ok(_) => None,
        Err(e) => rustls_error(&e),
    }
}

fn rustls_error(e: &std::io::Error) -> Option<rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned()
}

/// A client config trusting the relay's CA, with the given client identity (or none).
pub fn raw_client_config(ca_pem: &Path, identity: Option<(&Path, &Path)>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in scanbridge_relay::tls::load_certs("ca", ca_pem).expect("ca") {
        roots.add(cert).expect("add root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(scanbridge_relay::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots);
    match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                scanbridge_relay::tls::load_certs("cert", cert).expect("cert"),
                scanbridge_relay::tls::load_key("key", key).expect("key"),
            )
            .expect("client auth"),
    }
}

/// Polls `check` every 20 ms until it returns true, failing after `timeout`.
pub async fn eventually<F: FnMut() -> bool>(timeout: Duration, what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
