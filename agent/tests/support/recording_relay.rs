//! A fake relay that records, per batch, the serial of the client certificate it came with:
//! mutual TLS (rustls, any client certificate of the test CA), `POST /v1/batches` answered with
//! `Ack { upto }`, or `503` while paused.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use hyper::{Request, Response};
use scanbridge_protocol::{decode, encode, Ack, Batch, Event};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct Seen {
    /// (client certificate serial hex, batch) in arrival order, refused ones included.
    pub batches: Vec<(String, Batch)>,
    /// Acknowledged events by seq, with how often each was acknowledged.
    pub acked: BTreeMap<u64, (Event, u32)>,
}

pub struct RecordingRelay {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    pub paused: Arc<AtomicBool>,
    cancel: CancellationToken,
}

fn serial_hex(der: &[u8]) -> String {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    c.raw_serial()
        .iter()
        .skip_while(|b| **b == 0)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl RecordingRelay {
    pub async fn start(ca_pem: &str, cert_pem: &str, key_pem: &str) -> RecordingRelay {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .unwrap()
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let paused = Arc::new(AtomicBool::new(false));
        let cancel = CancellationToken::new();
        let (seen2, paused2, stop) = (seen.clone(), paused.clone(), cancel.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let acceptor = acceptor.clone();
                let (seen, paused, stop) = (seen2.clone(), paused2.clone(), stop.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let serial = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| serial_hex(c))
                        .unwrap_or_default();
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, serial.clone(), seen.clone(), paused.clone())
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
        });
        RecordingRelay {
            addr,
            seen,
            paused,
            cancel,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn pause(&self, on: bool) {
        self.paused.store(on, Ordering::SeqCst);
    }
}

impl Drop for RecordingRelay {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    serial: String,
    seen: Arc<Mutex<Seen>>,
    paused: Arc<AtomicBool>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let bytes = axum::body::to_bytes(Body::new(req.into_body()), 64 << 20)
        .await
        .unwrap();
    let batch: Batch = decode(&bytes).unwrap();
    let mut s = seen.lock().unwrap();
    s.batches.push((serial, batch.clone()));
    if paused.load(Ordering::SeqCst) {
        let mut r = Response::new(Body::from("paused by the test"));
        *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
        return Ok(r);
    }
    let upto = batch
        .events
        .last()
        .map(|e| e.seq)
        .unwrap_or(batch.first_seq.saturating_sub(1));
    for e in batch.events {
        s.acked.entry(e.seq).or_insert((e, 0)).1 += 1;
    }
    Ok(Response::new(Body::from(
        encode(&Ack {
            upto,
            duplicates: 0,
        })
        .unwrap(),
    )))
}
