//! The admin HTTPS listener, separate from the site listener: its own TCP port, TLS 1.3 with the
//! relay's server certificate, an optional client certificate (verified against the relay's CA
//! when presented), and the classified certificate ([`PeerCert`]) attached to every request.
//!
//! Owns its accept loop (the site listener refuses connections without a site certificate, this
//! one must not), a connection limit, handshake and header timeouts, and graceful shutdown on
//! its [`CancellationToken`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::admin::auth::{classify_cert, PeerCert};
use crate::config::TlsPaths;
use crate::tls::{load_certs, load_key, provider, TlsError};

/// Longest a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent admin connections (operators, Prometheus, browsers).
const MAX_CONNECTIONS: usize = 64;

/// Why the admin listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("admin TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("admin TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("admin TLS client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("cannot listen on [admin] listen = {addr}: {source} (address in use, or a privileged port?)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read the admin listener's local address: {0}")]
    LocalAddr(std::io::Error),
}

/// TLS 1.3 with the relay's server certificate; a client certificate is optional and, when
/// presented, must chain to the relay's CA.
pub fn tls_config(paths: &TlsPaths) -> Result<Arc<ServerConfig>, ListenerError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    for cert in load_certs("tls.client_ca", &paths.client_ca)? {
        roots.add(cert)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let certs = load_certs("tls.server_cert", &paths.server_cert)?;
    let key = load_key("tls.server_key", &paths.server_key)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The bound admin listener.
pub struct AdminListener {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    cancel: CancellationToken,
}

impl AdminListener {
    pub async fn bind(
        addr: SocketAddr,
        tls: Arc<ServerConfig>,
        router: Router,
        cancel: CancellationToken,
    ) -> Result<AdminListener, ListenerError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ListenerError::Bind { addr, source })?;
        Ok(AdminListener {
            listener,
            acceptor: TlsAcceptor::from(tls),
            router,
            cancel,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ListenerError> {
        self.listener.local_addr().map_err(ListenerError::LocalAddr)
    }

    /// Accepts connections until cancelled, then lets open ones finish their request.
    pub async fn run(self) {
        let tracker = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let permit = tokio::select! {
                _ = self.cancel.cancelled() => break,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let (tcp, peer) = tokio::select! {
                _ = self.cancel.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let acceptor = self.acceptor.clone();
            let router = self.router.clone();
            let cancel = self.cancel.clone();
            tracker.spawn(async move {
                let _permit = permit;
                serve(acceptor, router, cancel, tcp, peer).await;
            });
        }
        tracker.close();
        tracker.wait().await;
    }
}

async fn serve(
    acceptor: TlsAcceptor,
    router: Router,
    cancel: CancellationToken,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "admin TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "admin TLS handshake timed out");
            return;
        }
    };
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map_or(PeerCert::None, |der| classify_cert(der));
    if let PeerCert::Site(site) = &cert {
        tracing::warn!(%peer, site = %site, "a site certificate connected to the admin listener; its requests are refused");
    }
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(cert.clone());
        let mut router = router.clone();
        async move { router.call(request).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "admin connection ended with an error");
    }
}
