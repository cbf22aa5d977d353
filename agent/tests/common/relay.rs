//! A fake relay for tests: HTTPS with a required client certificate (rustls + hyper), answering
//! `POST /v1/batches` from a script of canned answers, then with `Ack { upto: last seq }`.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use hyper::{Request, Response, StatusCode};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use scanbridge_protocol::{decode, encode, Ack, Batch, Event};
use tokio_util::sync::CancellationToken;

/// A canned answer used before the relay starts acknowledging.
#[derive(Debug, Clone)]
pub enum Answer {
    Status {
        code: u16,
        retry_after: Option<&'static str>,
        reason: &'static str,
    },
}

#[derive(Default)]
pub struct Recorded {
    /// Every batch received, in arrival order (including refused ones).
    pub batches: Vec<Batch>,
    /// Acknowledged events by seq.
    pub events: BTreeMap<u64, Event>,
}

pub struct FakeRelay {
    pub addr: SocketAddr,
    pub recorded: Arc<Mutex<Recorded>>,
    /// TLS handshakes that failed (e.g. the client refused our certificate).
    pub handshake_failures: Arc<std::sync::atomic::AtomicUsize>,
    script: Arc<Mutex<VecDeque<Answer>>>,
    cancel: CancellationToken,
}

impl FakeRelay {
    pub async fn start(
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
        script: Vec<Answer>,
    ) -> FakeRelay {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            roots.add(c.expect("ca pem")).expect("root");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("server cert");
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
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
        let addr = listener.local_addr().expect("addr");
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let cancel = CancellationToken::new();
        let handshake_failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (rec, scr, stop, hf) = (
            recorded.clone(),
            script.clone(),
            cancel.clone(),
            handshake_failures.clone(),
        );
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let acceptor = acceptor.clone();
                let (rec, scr, hf) = (rec.clone(), scr.clone(), hf.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        hf.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, rec.clone(), scr.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        FakeRelay {
            addr,
            recorded,
            handshake_failures,
            script,
            cancel,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn acked_seqs(&self) -> Vec<u64> {
        self.recorded
            .lock()
            .expect("lock")
            .events
            .keys()
            .copied()
            .collect()
    }
}

impl Drop for FakeRelay {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    recorded: Arc<Mutex<Recorded>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
) -> Result<Response<Body>, Infallible> {
    let bytes = match axum::body::to_bytes(Body::new(req.into_body()), 64 << 20).await {
        Ok(b) => b,
        Err(_) => return Ok(status(400, None, "unreadable body")),
    };
    let batch: Batch = match decode(&bytes) {
        Ok(b) => b,
        Err(e) => return Ok(status(400, None, &e.to_string())),
    };
    let mut rec = recorded.lock().expect("lock");
    rec.batches.push(batch.clone());
    if let Some(Answer::Status {
        code,
        retry_after,
        reason,
    }) = script.lock().expect("lock").pop_front()
    {
        return Ok(status(code, retry_after, reason));
    }
    let upto = batch
        .events
        .last()
        .map(|e| e.seq)
        .unwrap_or(batch.first_seq.saturating_sub(1));
    let mut duplicates = 0;
    for e in batch.events {
        if rec.events.insert(e.seq, e).is_some() {
            duplicates += 1;
        }
    }
    let body = encode(&Ack { upto, duplicates }).expect("encode ack");
    Ok(Response::new(Body::from(body)))
}

fn status(code: u16, retry_after: Option<&str>, reason: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(reason.to_string()));
    *r.status_mut() = StatusCode::from_u16(code).expect("status");
    if let Some(ra) = retry_after {
        r.headers_mut()
            .insert("retry-after", ra.parse().expect("header"));
    }
    r
}
