//! A replaced gateway box end to end: a fresh agent store (seqs from 1 again) against a relay
//! that already holds the site's seqs up to N from the old box's store. The relay refuses (409,
//! as `cloud-relay/src/inbox/mod.rs` "Store identity" does, mimicked here over real mutual TLS);
//! the agent deletes nothing and shows the reason; `scanbridge-agent store renumber` (the real
//! binary) refuses while the store is in use, then moves the events past N; the agent forwards
//! them and every event reaches the relay exactly once.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use hyper::{Request, Response, StatusCode};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use scanbridge_agent::forwarder::{Forwarder, ForwarderConfig};
use scanbridge_agent::sources::Health;
use scanbridge_agent::status::StatusSource;
use scanbridge_agent::store::writer::commit_batch;
use scanbridge_agent::store::{IngestItem, Store};
use scanbridge_agent::tls;
use scanbridge_protocol::{decode, encode, Ack, Batch, Event, EventBody, Scan, Source, Symbology};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_scanbridge-agent");
/// The seqs the relay already holds for the site, from the old box.
const HELD: u64 = 50;

fn scan(code: &str) -> EventBody {
    EventBody::Scan(Scan {
        code: code.into(),
        symbology: Symbology::Unknown,
        gs1: None,
        op: None,
        qty: None,
        location: None,
        reference: None,
    })
}

fn item(i: u64) -> IngestItem {
    IngestItem {
        source: 0,
        token: i,
        event: Event {
            seq: 0,
            captured_at: 1,
            received_at: 2,
            source: Source::Mqtt {
                broker: "site".into(),
                topic: "scanbridge/SC-02/scan".into(),
            },
            device: "SC-02".into(),
            body: scan(&format!("NEW-BOX-{i}")),
        },
        mqtt: None,
        scan_id: None,
    }
}

/// What the mimic relay holds: events by seq, the current store, the answers it gave.
#[derive(Default)]
struct RelayState {
    events: BTreeMap<u64, Event>,
    current_store: Option<String>,
    conflicts: u32,
    duplicates: u32,
}

/// The relay's store identity rule (`accept_batch_from`) over the fake relay's plumbing.
async fn handle(
    req: Request<hyper::body::Incoming>,
    state: Arc<Mutex<RelayState>>,
) -> Result<Response<Body>, Infallible> {
    let store_id = req
        .headers()
        .get("scanbridge-store-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = axum::body::to_bytes(Body::new(req.into_body()), 64 << 20)
        .await
        .expect("body");
    let batch: Batch = decode(&bytes).expect("batch");
    let mut st = state.lock().expect("lock");
    let highest = st.events.keys().next_back().copied().unwrap_or(0);
    if let (Some(id), Some(first)) = (&store_id, batch.events.first()) {
        match &st.current_store {
            Some(current) if current != id && first.seq <= highest => {
                st.conflicts += 1;
                let mut r = Response::new(Body::from(format!(
                    "site WH01: this gateway's event store restarted its numbering; the relay already holds seqs up to {highest}; nothing was stored. Run `scanbridge-agent store renumber --config /etc/scanbridge/agent.toml --after {highest}`"
                )));
                *r.status_mut() = StatusCode::CONFLICT;
                return Ok(r);
            }
            _ => st.current_store = Some(id.clone()),
        }
    }
    let upto = batch
        .events
        .last()
        .map_or(batch.first_seq.saturating_sub(1), |e| e.seq);
    let mut duplicates = 0;
    for e in batch.events {
        match st.events.entry(e.seq) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(e);
            }
            std::collections::btree_map::Entry::Occupied(_) => duplicates += 1,
        }
    }
    st.duplicates += duplicates;
    Ok(Response::new(Body::from(
        encode(&Ack { upto, duplicates }).expect("ack"),
    )))
}

async fn start_relay(
    pki: &common::Pki,
    state: Arc<Mutex<RelayState>>,
) -> (String, CancellationToken) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pki.ca_pem.as_bytes()) {
        roots.add(c.expect("ca pem")).expect("root");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut pki.server_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("server cert");
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut pki.server_key_pem.as_bytes())
            .expect("key pem")
            .expect("a key");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            };
            let (acceptor, state) = (acceptor.clone(), state.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| handle(req, state.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (url, cancel)
}

fn write_config(dir: &Path, pki: &common::Pki, relay_url: &str) -> PathBuf {
    let text = format!(
        r#"site = "WH01"
agent_id = "new-gw"
state_dir = "state"

[relay]
url = "{relay_url}"
ca_cert = "{ca}"
client_cert = "{cert}"
client_key = "{key}"

[[mqtt]]
name = "site"
host = "127.0.0.1"
port = 1883
client_id = "scanbridge-agent-WH01"
topics = ["scanbridge/+/scan"]
"#,
        ca = pki.path("ca.pem").display(),
        cert = pki.path("site.pem").display(),
        key = pki.path("site.key").display(),
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

struct Running {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), scanbridge_agent::forwarder::ForwarderError>>,
}

fn start_forwarder(
    pki: &common::Pki,
    relay_url: &str,
    store: &Store,
    status: StatusSource,
) -> Running {
    let cfg = tls::client_config(
        &pki.path("ca.pem"),
        &pki.path("site.pem"),
        &pki.path("site.key"),
    )
    .expect("tls");
    let client = tls::relay_client(cfg, Duration::from_secs(10)).expect("client");
    let cancel = CancellationToken::new();
    let forwarder = Forwarder::new(
        ForwarderConfig {
            relay_url: relay_url.parse().expect("url"),
            site: "WH01".into(),
            agent: "new-gw".into(),
            batch_max_events: 4,
            heartbeat: Duration::from_secs(3600),
            retry_initial: Duration::from_millis(10),
            retry_max: Duration::from_millis(50),
        },
        store.clone(),
        client,
        status,
        Arc::new(tokio::sync::Notify::new()),
        cancel.clone(),
    )
    .expect("forwarder");
    Running {
        cancel,
        task: tokio::spawn(forwarder.run()),
    }
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        let r = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stops")
            .expect("task");
        assert!(r.is_ok());
    }
}

fn renumber(config: &Path, after: u64) -> std::process::Output {
    Command::new(BIN)
        .args(["store", "renumber", "--config"])
        .arg(config)
        .arg("--after")
        .arg(after.to_string())
        .output()
        .expect("run scanbridge-agent store renumber")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_box_is_refused_keeps_its_events_and_forwards_them_once_after_renumbering() {
    let pki = common::Pki::new();
    let state = Arc::new(Mutex::new(RelayState::default()));
    {
        // The old box's store sent seqs 1..=HELD.
        let mut st = state.lock().expect("lock");
        st.current_store = Some("0123456789abcdef0123456789abcdef".into());
        for seq in 1..=HELD {
            let mut e = item(seq).event;
            e.seq = seq;
            e.body = scan(&format!("OLD-BOX-{seq}"));
            st.events.insert(seq, e);
        }
    }
    let (url, stop_relay) = start_relay(&pki, state.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &pki, &url);
    let store_path = scanbridge_agent::config::load(&config)
        .expect("config")
        .store_path();

    // The new box: a fresh store, ten scans numbered 1..=10 again.
    let store = Store::open(&store_path, 1 << 30).expect("store");
    store.bind_site("WH01").expect("bind");
    let mut batch: Vec<_> = (0..10).map(item).collect();
    commit_batch(&store, &mut batch).expect("commit");
    let originals = store.read_oldest_blocking(usize::MAX).expect("read");
    assert_eq!(originals.first().map(|e| e.seq), Some(1));

    let status = StatusSource::new(store.clone(), Health::default(), None);
    let running = start_forwarder(&pki, &url, &store, status.clone());
    let st = state.clone();
    common::eventually(
        Duration::from_secs(20),
        "the relay to refuse three times",
        || (st.lock().expect("lock").conflicts >= 3).then_some(()),
    )
    .await;
    // Refused: nothing deleted, nothing taken for a duplicate, the reason shown.
    assert_eq!(store.stats().backlog_events, 10);
    assert_eq!(state.lock().expect("lock").duplicates, 0);
    assert_eq!(state.lock().expect("lock").events.len() as u64, HELD);
    let (_, error) = status.relay_link().last_error.expect("an error is shown");
    assert!(error.contains("409"), "{error}");
    assert!(error.contains(&format!("--after {HELD}")), "{error}");

    // While the agent has the store open, renumbering refuses and changes nothing.
    let out = renumber(&config, HELD);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stop it first"), "{stderr}");
    running.stop().await;
    drop(status);
    drop(store);

    // Stopped: renumber, then start again.
    let out = renumber(&config, HELD);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("renumbered 10 stored events: seqs 1..=10 are now 51..=60"),
        "{stdout}"
    );
    let store = Store::open(&store_path, 1 << 30).expect("reopen");
    assert_eq!(store.stats().next_seq, HELD + 11);
    let status = StatusSource::new(store.clone(), Health::default(), None);
    let running = start_forwarder(&pki, &url, &store, status);
    let s = store.clone();
    common::eventually(
        Duration::from_secs(20),
        "the renumbered backlog to drain",
        || (s.stats().backlog_events == 0).then_some(()),
    )
    .await;
    running.stop().await;

    let st = state.lock().expect("lock");
    assert_eq!(st.duplicates, 0, "each event reached the relay once");
    assert_eq!(
        st.events.keys().copied().collect::<Vec<_>>(),
        (1..=HELD + 10).collect::<Vec<_>>()
    );
    for (i, original) in originals.iter().enumerate() {
        let forwarded = &st.events[&(HELD + 1 + i as u64)];
        assert_eq!(forwarded.seq, HELD + 1 + i as u64);
        assert_eq!(forwarded.body, original.body, "content and order kept");
    }
    assert_eq!(
        st.events[&1].body,
        scan("OLD-BOX-1"),
        "the old box's events untouched"
    );
    stop_relay.cancel();
}
