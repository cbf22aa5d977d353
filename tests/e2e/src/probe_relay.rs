//! A probe relay for the bench: an HTTPS endpoint with the relay's server certificate that
//! requires a client certificate from the site CA (TLS 1.3, like the real relay), decodes each
//! `POST /v1/batches` with the protocol crate and acknowledges it at once, without storing or
//! pushing anything. It counts the distinct events received, so the bench can time "published →
//! committed at the agent (and handed on)" without the relay's own work in the figure.
//!
//! Two more modes ([`ProbeMode`]): `ReadOnly` reads each body and answers `200` with nothing
//! (the drain figure's baseline: "a handler that only reads the body"), and `Tap`, which forwards
//! each batch unchanged to the real relay over the site's own mTLS client, returns the relay's
//! answer, and records when the relay acknowledged each event whose scan `reference` is
//! `lat-<n>` (the latency figure's scan → relay ack time).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use hyper::{Request, Response, StatusCode};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use scanbridge_protocol::{decode, encode, Ack, AgentStatus, Batch};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::{HarnessError, Result};
use crate::relay::CaDir;

/// Largest batch body the probe reads.
const MAX_BODY: usize = 16 << 20;

/// What the probe has seen.
#[derive(Debug, Default, Clone)]
pub struct ProbeState {
    /// Highest seq acknowledged.
    pub highest_seq: u64,
    /// Distinct events received (new seqs above the previous highest).
    pub events: u64,
    /// Batches received, duplicates included.
    pub batches: u64,
    /// The latest agent status that came with a batch.
    pub last_status: Option<AgentStatus>,
}

/// What the probe does with a batch.
#[derive(Clone)]
pub enum ProbeMode {
    /// Decode it and acknowledge it at once.
    Ack,
    /// Read the body and answer `200` with an empty body; no decoding.
    ReadOnly,
    /// Forward it to `url` (`https://relay/v1/batches`) with `client` and pass the answer back.
    Tap {
        url: String,
        client: reqwest::Client,
    },
}

/// `(n, when the relay acknowledged it)` for every event tagged `lat-<n>`, in `Tap` mode.
pub type AckTimes = Arc<Mutex<Vec<(u64, std::time::Instant)>>>;

/// A running probe relay; stops when dropped.
pub struct ProbeRelay {
    addr: SocketAddr,
    state: Arc<Mutex<ProbeState>>,
    acks: AckTimes,
    events: watch::Receiver<u64>,
    stop: CancellationToken,
}

fn read_pem(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| HarnessError::io("read", path, e))
}

fn tls_config(ca: &CaDir) -> Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut read_pem(&ca.ca_cert())?.as_slice()) {
        let cert = cert.map_err(|e| HarnessError::Tls(format!("CA certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| HarnessError::Tls(format!("CA certificate: {e}")))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| HarnessError::Tls(format!("client verifier: {e}")))?;
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut read_pem(&ca.server_cert())?.as_slice())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| HarnessError::Tls(format!("server certificate: {e}")))?;
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut read_pem(&ca.server_key())?.as_slice())
            .map_err(|e| HarnessError::Tls(format!("server key: {e}")))?
            .ok_or_else(|| HarnessError::Tls("no private key in server.key".into()))?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| HarnessError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| HarnessError::Tls(format!("server certificate and key: {e}")))
}

impl ProbeRelay {
    /// Listens on 127.0.0.1 (a free port) with the CA's server certificate; acks every batch.
    pub async fn start(ca: &CaDir) -> Result<ProbeRelay> {
        ProbeRelay::start_with(ca, ProbeMode::Ack).await
    }

    /// Like [`ProbeRelay::start`], in `mode`.
    pub async fn start_with(ca: &CaDir, mode: ProbeMode) -> Result<ProbeRelay> {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(ca)?));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| HarnessError::io("bind the probe relay on", "127.0.0.1:0", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| HarnessError::io("address of", "the probe relay", e))?;
        let state = Arc::new(Mutex::new(ProbeState::default()));
        let (events_tx, events) = watch::channel(0u64);
        let events_tx = Arc::new(events_tx);
        let stop = CancellationToken::new();
        let acks: AckTimes = Arc::new(Mutex::new(Vec::new()));
        let (st, token, acks_in) = (state.clone(), stop.clone(), acks.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = token.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((tcp, _)) = accepted else { continue };
                let (acceptor, st, tx, token) = (
                    acceptor.clone(),
                    st.clone(),
                    events_tx.clone(),
                    token.clone(),
                );
                let (mode, acks) = (mode.clone(), acks_in.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let (st, tx, mode, acks) =
                            (st.clone(), tx.clone(), mode.clone(), acks.clone());
                        async move {
                            match mode {
                                ProbeMode::Ack => handle(req, st, tx).await,
                                ProbeMode::ReadOnly => read_only(req, st).await,
                                ProbeMode::Tap { url, client } => {
                                    tap(req, &url, &client, acks).await
                                }
                            }
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = conn => {}
                    }
                });
            }
        });
        Ok(ProbeRelay {
            addr,
            state,
            acks,
            events,
            stop,
        })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// A copy of what it has seen.
    pub fn state(&self) -> ProbeState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// In `Tap` mode: when the relay acknowledged each `lat-<n>` event so far.
    pub fn ack_times(&self) -> Vec<(u64, std::time::Instant)> {
        self.acks.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Distinct events received so far.
    pub fn events(&self) -> u64 {
        *self.events.borrow()
    }

    /// Waits until `n` distinct events have been received.
    pub async fn wait_events(&self, n: u64, timeout: std::time::Duration) -> Result<()> {
        let mut rx = self.events.clone();
        let outcome = tokio::time::timeout(timeout, rx.wait_for(|got| *got >= n))
            .await
            .map(|r| r.map(|_| ()));
        match outcome {
            Ok(Ok(())) => Ok(()),
            _ => Err(HarnessError::Timeout {
                what: format!(
                    "the probe relay to receive {n} events (got {})",
                    self.events()
                ),
                waited: timeout,
                look_at: "the agent's log".into(),
            }),
        }
    }
}

impl Drop for ProbeRelay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    state: Arc<Mutex<ProbeState>>,
    events: Arc<watch::Sender<u64>>,
) -> std::result::Result<Response<Body>, Infallible> {
    if req.uri().path() != "/v1/batches" {
        return Ok(answer(StatusCode::NOT_FOUND, b"only /v1/batches".to_vec()));
    }
    let bytes = match axum::body::to_bytes(Body::new(req.into_body()), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return Ok(answer(StatusCode::BAD_REQUEST, b"unreadable body".to_vec())),
    };
    let batch: Batch = match decode(&bytes) {
        Ok(b) => b,
        Err(e) => return Ok(answer(StatusCode::BAD_REQUEST, e.to_string().into_bytes())),
    };
    let ack = {
        let Ok(mut st) = state.lock() else {
            return Ok(answer(StatusCode::SERVICE_UNAVAILABLE, Vec::new()));
        };
        st.batches += 1;
        let mut duplicates = 0u32;
        for e in &batch.events {
            if e.seq > st.highest_seq {
                st.highest_seq = e.seq;
                st.events += 1;
            } else {
                duplicates += 1;
            }
        }
        if batch.status.is_some() {
            st.last_status = batch.status.clone();
        }
        events.send_replace(st.events);
        Ack {
            upto: st.highest_seq,
            duplicates,
        }
    };
    match encode(&ack) {
        Ok(body) => Ok(answer(StatusCode::OK, body)),
        Err(e) => Ok(answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string().into_bytes(),
        )),
    }
}

/// `ReadOnly` mode: read the body, count it as a batch, answer 200 with nothing.
async fn read_only(
    req: Request<hyper::body::Incoming>,
    state: Arc<Mutex<ProbeState>>,
) -> std::result::Result<Response<Body>, Infallible> {
    match axum::body::to_bytes(Body::new(req.into_body()), MAX_BODY).await {
        Ok(_) => {
            if let Ok(mut st) = state.lock() {
                st.batches += 1;
            }
            Ok(answer(StatusCode::OK, Vec::new()))
        }
        Err(_) => Ok(answer(StatusCode::BAD_REQUEST, b"unreadable body".to_vec())),
    }
}

/// `Tap` mode: forward to the relay, record the ack time of `lat-<n>` events, pass the answer on.
async fn tap(
    req: Request<hyper::body::Incoming>,
    url: &str,
    client: &reqwest::Client,
    acks: AckTimes,
) -> std::result::Result<Response<Body>, Infallible> {
    let bytes = match axum::body::to_bytes(Body::new(req.into_body()), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return Ok(answer(StatusCode::BAD_REQUEST, b"unreadable body".to_vec())),
    };
    let tagged: Vec<u64> = match decode::<Batch>(&bytes) {
        Ok(batch) => batch
            .events
            .iter()
            .filter_map(|e| match &e.body {
                scanbridge_protocol::EventBody::Scan(s) => s
                    .reference
                    .as_deref()
                    .and_then(|r| r.strip_prefix("lat-"))
                    .and_then(|n| n.parse().ok()),
                _ => None,
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let resp = match client.post(url).body(bytes).send().await {
        Ok(r) => r,
        Err(e) => return Ok(answer(StatusCode::BAD_GATEWAY, e.to_string().into_bytes())),
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    if status == StatusCode::OK {
        let at = std::time::Instant::now();
        if let Ok(mut a) = acks.lock() {
            a.extend(tagged.into_iter().map(|n| (n, at)));
        }
    }
    Ok(answer(status, body))
}

fn answer(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r
}
