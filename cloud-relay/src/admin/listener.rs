//! The admin HTTPS listener, separate from the site listener: its own TCP port, TLS 1.3 with the
//! relay's server certificate, an optional client certificate (verified against the relay's CA
//! when presented), and the classified certificate ([`PeerCert`]) attached to every request.
//!
//! Runs the accept loop of [`crate::server`] (connection limit, handshake and header timeouts,
//! graceful shutdown on its [`CancellationToken`]) with its own peer rule: the site listener
//! refuses connections without a site certificate, this one must not.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use tokio_util::sync::CancellationToken;

use crate::admin::auth::{classify_cert, PeerCert};
use crate::config::TlsPaths;
use crate::server::{Peers, TlsListener};
use crate::tls::{load_certs, load_key, provider, TlsError};

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

/// The admin listener's peers: a certificate is optional and classified ([`PeerCert`]); the
/// router's credential check decides (a site certificate is refused there).
struct AdminPeers;

impl Peers for AdminPeers {
    type Identity = PeerCert;
    const NAME: &'static str = "admin";
    const WARN_ON_FAILED_HANDSHAKE: bool = false;

    fn identify(&self, session: &ServerConnection, peer: SocketAddr) -> Option<PeerCert> {
        let cert = session
            .peer_certificates()
            .and_then(|c| c.first())
            .map_or(PeerCert::None, |der| classify_cert(der));
        if let PeerCert::Site(site) = &cert {
            tracing::warn!(%peer, site = %site, "a site certificate connected to the admin listener; its requests are refused");
        }
        Some(cert)
    }

    fn span(&self, _: &PeerCert, peer: SocketAddr) -> tracing::Span {
        tracing::debug_span!("admin connection", %peer)
    }

    fn admit(&self, cert: &PeerCert, request: &mut hyper::Request<Incoming>) -> Option<Response> {
        request.extensions_mut().insert(cert.clone());
        None
    }
}

/// The bound admin listener.
pub struct AdminListener {
    inner: TlsListener<AdminPeers>,
}

impl AdminListener {
    pub async fn bind(
        addr: SocketAddr,
        tls: Arc<ServerConfig>,
        router: Router,
        cancel: CancellationToken,
    ) -> Result<AdminListener, ListenerError> {
        let inner = TlsListener::bind(addr, tls, router, MAX_CONNECTIONS, cancel, AdminPeers)
            .await
            .map_err(|source| ListenerError::Bind { addr, source })?;
        Ok(AdminListener { inner })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ListenerError> {
        self.inner.local_addr().map_err(ListenerError::LocalAddr)
    }

    /// Accepts connections until cancelled, then lets open ones finish their request.
    pub async fn run(self) {
        self.inner.run().await;
    }
}
