//! The HTTPS accept loop both listeners run (the site listener here, the admin listener in
//! [`crate::admin::listener`]): TCP accept, TLS handshake, the peer's identity from its
//! certificate, and HTTP/1.1 over an axum [`Router`] with the identity injected as a request
//! extension. What differs per listener (how the identity is read, whether a connection without
//! one is refused, what a request may be refused for before the router) is a `Peers`
//! implementation; this module's own is the site listener's ([`SiteId`], mTLS, see
//! [`crate::tls`]).
//!
//! Owns the connection limit (a semaphore: at most `max_connections` connections at once,
//! further ones wait in the kernel backlog) and the per-connection tasks. A failed handshake is
//! logged with the peer address and never stops the loop. On shutdown the loop stops accepting,
//! open connections finish their current request (graceful shutdown) and [`Server::run`] returns
//! once they are gone; the caller bounds that with a drain deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use axum::routing::post;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConnection;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::identity::{site_from_cert_der, SiteId};
use crate::intake::{post_batch, IntakeState};

/// Longest a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the listener stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source} (address in use, or a privileged port?)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read the listener's local address: {0}")]
    LocalAddr(std::io::Error),
}

/// The router of the relay's HTTP API.
pub fn router(state: IntakeState) -> Router {
    // The body limit is enforced by the handler itself (see `intake::read_body`).
    Router::new()
        .route("/v1/batches", post(post_batch))
        .with_state(state)
}

/// What one listener decides about its peers; [`TlsListener`] does the rest.
pub(crate) trait Peers: Send + Sync + 'static {
    /// The identity read from a connection's certificate.
    type Identity: Send + Sync + 'static;
    /// The listener's name in logs (`listener` field).
    const NAME: &'static str;
    /// Whether a refused handshake (unknown CA, no or a bad certificate) is worth a warning.
    const WARN_ON_FAILED_HANDSHAKE: bool;
    /// The identity of a connection whose handshake completed, or `None` to close it (the
    /// implementation logs why).
    fn identify(&self, session: &ServerConnection, peer: SocketAddr) -> Option<Self::Identity>;
    /// The span a connection's end is logged in.
    fn span(&self, identity: &Self::Identity, peer: SocketAddr) -> tracing::Span;
    /// Prepares one request before the router: attaches the identity as a request extension, or
    /// answers the request itself.
    fn admit(
        &self,
        identity: &Self::Identity,
        request: &mut hyper::Request<Incoming>,
    ) -> Option<Response>;
}

/// A bound TLS listener: the accept loop shared by the site and admin listeners.
pub(crate) struct TlsListener<P: Peers> {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    /// One permit per open connection.
    connections: Arc<Semaphore>,
    cancel: CancellationToken,
    peers: P,
}

impl<P: Peers> TlsListener<P> {
    /// Binds the listener (port 0 picks a free port).
    pub(crate) async fn bind(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        router: Router,
        max_connections: usize,
        cancel: CancellationToken,
        peers: P,
    ) -> std::io::Result<TlsListener<P>> {
        Ok(TlsListener {
            listener: TcpListener::bind(addr).await?,
            acceptor: TlsAcceptor::from(tls),
            router,
            connections: Arc::new(Semaphore::new(max_connections)),
            cancel,
            peers,
        })
    }

    /// The address actually bound.
    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until cancelled, then waits for open connections to finish.
    pub(crate) async fn run(self) {
        let tracker = TaskTracker::new();
        let peers = Arc::new(self.peers);
        loop {
            let permit = tokio::select! {
                _ = self.cancel.cancelled() => break,
                permit = self.connections.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (tcp, peer) = tokio::select! {
                _ = self.cancel.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off a little instead of spinning.
                        tracing::warn!(listener = P::NAME, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let connection = Connection {
                acceptor: self.acceptor.clone(),
                router: self.router.clone(),
                cancel: self.cancel.clone(),
                peer,
                peers: peers.clone(),
                _permit: permit,
            };
            tracker.spawn(connection.serve(tcp));
        }
        tracker.close();
        tracker.wait().await;
    }
}

/// The site listener's peers: a site certificate is required, and a revoked serial is refused
/// on every request.
struct SitePeers {
    /// Revoked client certificate serials, checked again on every request (a connection opened
    /// before a revocation must not keep working).
    revoked: crate::tls::Revoked,
}

impl Peers for SitePeers {
    /// The site and the certificate's serial.
    type Identity = (SiteId, Option<Vec<u8>>);
    const NAME: &'static str = "site";
    const WARN_ON_FAILED_HANDSHAKE: bool = true;

    fn identify(&self, session: &ServerConnection, peer: SocketAddr) -> Option<Self::Identity> {
        match peer_site(session) {
            Ok(site) => Some((site, peer_serial(session))),
            Err(reason) => {
                tracing::warn!(%peer, %reason, "refusing a connection without a site identity");
                None
            }
        }
    }

    fn span(&self, (site, _): &Self::Identity, peer: SocketAddr) -> tracing::Span {
        tracing::debug_span!("connection", %peer, site = %site)
    }

    fn admit(
        &self,
        (site, serial): &Self::Identity,
        request: &mut hyper::Request<Incoming>,
    ) -> Option<Response> {
        let refused = serial
            .as_deref()
            .filter(|s| self.revoked.contains(s))
            .map(|s| revoked_response(site, s));
        request.extensions_mut().insert(site.clone());
        refused
    }
}

/// The bound site listener.
pub struct Server {
    inner: TlsListener<SitePeers>,
}

impl Server {
    /// Binds the listener (port 0 picks a free port).
    pub async fn bind(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        router: Router,
        max_connections: usize,
        cancel: CancellationToken,
    ) -> Result<Server, ServerError> {
        let peers = SitePeers {
            revoked: crate::tls::Revoked::default(),
        };
        let inner = TlsListener::bind(addr, tls, router, max_connections, cancel, peers)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Server { inner })
    }

    /// Refuses requests (403) on connections whose client certificate serial is in `revoked`.
    pub fn with_revocations(mut self, revoked: crate::tls::Revoked) -> Server {
        self.inner.peers.revoked = revoked;
        self
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.inner.local_addr().map_err(ServerError::LocalAddr)
    }

    /// Accepts connections until cancelled, then waits for open connections to finish.
    pub async fn run(self) -> Result<(), ServerError> {
        self.inner.run().await;
        Ok(())
    }
}

/// One client connection.
struct Connection<P: Peers> {
    acceptor: TlsAcceptor,
    router: Router,
    cancel: CancellationToken,
    peer: SocketAddr,
    peers: Arc<P>,
    /// Released when the connection ends.
    _permit: OwnedSemaphorePermit,
}

impl<P: Peers> Connection<P> {
    async fn serve(self, tcp: TcpStream) {
        let peer = self.peer;
        let _ = tcp.set_nodelay(true);
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                // A peer that hangs up (health checks, port scanners) is not worth a warning; a
                // refused or broken handshake (unknown CA, no certificate, bad site) may be.
                let hung_up = matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                );
                if hung_up {
                    tracing::debug!(listener = P::NAME, %peer, error = %e, "peer closed the connection during the TLS handshake");
                } else if P::WARN_ON_FAILED_HANDSHAKE {
                    tracing::warn!(listener = P::NAME, %peer, error = %e, "TLS handshake failed");
                } else {
                    tracing::debug!(listener = P::NAME, %peer, error = %e, "TLS handshake failed");
                }
                return;
            }
            Err(_) => {
                tracing::debug!(listener = P::NAME, %peer, "TLS handshake timed out");
                return;
            }
        };
        let Some(identity) = self.peers.identify(tls.get_ref().1, peer) else {
            return;
        };
        let span = self.peers.span(&identity, peer);
        let router = self.router;
        let peers = self.peers;
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let refused = peers.admit(&identity, &mut request);
            let mut router = router.clone();
            async move {
                match refused {
                    Some(response) => Ok(response),
                    None => router.call(request).await,
                }
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let conn = builder.serve_connection(TokioIo::new(tls), service);
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = self.cancel.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            let _enter = span.enter();
            tracing::debug!(listener = P::NAME, error = %e, "connection ended with an error");
        }
    }
}

/// The serial of the verified peer certificate.
fn peer_serial(session: &ServerConnection) -> Option<Vec<u8>> {
    crate::tls::cert_serial(session.peer_certificates()?.first()?)
}

/// 403 for a request on a connection whose certificate was revoked after it was opened.
fn revoked_response(site: &SiteId, serial: &[u8]) -> axum::response::Response {
    use axum::response::IntoResponse;
    let serial = crate::ca::serial_hex(serial);
    tracing::warn!(site = %site, serial = %serial, "refusing a request: the client certificate was revoked");
    (
        axum::http::StatusCode::FORBIDDEN,
        format!("client certificate serial {serial} of site {site} is revoked; install the renewed certificate (scanbridge-relay ca renew)"),
    )
        .into_response()
}

/// The site named by the verified peer certificate.
fn peer_site(session: &ServerConnection) -> Result<SiteId, String> {
    let leaf = session
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or_else(|| "no client certificate".to_string())?;
    site_from_cert_der(leaf).map_err(|e| e.to_string())
}
