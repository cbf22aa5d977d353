//! The HTTPS listener: TCP accept loop, TLS handshake (mTLS, see [`crate::tls`]), site identity
//! from the peer certificate, and HTTP/1.1 over the axum [`Router`] with the [`SiteId`] injected
//! as a request extension.
//!
//! Owns the connection limit (a semaphore: at most `limits.max_connections` connections at once,
//! further ones wait in the kernel backlog) and the per-connection tasks. A failed handshake is
//! logged with the peer address and never stops the loop. On shutdown the loop stops accepting,
//! open connections finish their current request (graceful shutdown) and [`Server::run`] returns
//! once they are gone; the caller bounds that with a drain deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
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

/// The bound listener and everything a connection needs.
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    /// One permit per open connection.
    connections: Arc<Semaphore>,
    cancel: CancellationToken,
    /// Revoked client certificate serials, checked again on every request (a connection opened
    /// before a revocation must not keep working).
    revoked: crate::tls::Revoked,
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
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Server {
            listener,
            acceptor: TlsAcceptor::from(tls),
            router,
            connections: Arc::new(Semaphore::new(max_connections)),
            cancel,
            revoked: crate::tls::Revoked::default(),
        })
    }

    /// Refuses requests (403) on connections whose client certificate serial is in `revoked`.
    pub fn with_revocations(mut self, revoked: crate::tls::Revoked) -> Server {
        self.revoked = revoked;
        self
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener.local_addr().map_err(ServerError::LocalAddr)
    }

    /// Accepts connections until cancelled, then waits for open connections to finish.
    pub async fn run(self) -> Result<(), ServerError> {
        let tracker = TaskTracker::new();
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
                        tracing::warn!(error = %e, "accept failed");
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
                revoked: self.revoked.clone(),
                _permit: permit,
            };
            tracker.spawn(connection.serve(tcp));
        }
        tracker.close();
        tracker.wait().await;
        Ok(())
    }
}

/// One client connection.
struct Connection {
    acceptor: TlsAcceptor,
    router: Router,
    cancel: CancellationToken,
    peer: SocketAddr,
    revoked: crate::tls::Revoked,
    /// Released when the connection ends.
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve(self, tcp: TcpStream) {
        let peer = self.peer;
        let _ = tcp.set_nodelay(true);
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                // A peer that hangs up (health checks, port scanners) is not worth a warning; a
                // refused or broken handshake (unknown CA, no certificate, bad site) is.
                let hung_up = matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                );
                if hung_up {
                    tracing::debug!(%peer, error = %e, "peer closed the connection during the TLS handshake");
                } else {
                    tracing::warn!(%peer, error = %e, "TLS handshake failed");
                }
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        let site = match peer_site(&tls) {
            Ok(site) => site,
            Err(reason) => {
                tracing::warn!(%peer, %reason, "refusing a connection without a site identity");
                return;
            }
        };
        let span = tracing::debug_span!("connection", %peer, site = %site);
        let router = self.router;
        let serial = peer_serial(&tls);
        let revoked = self.revoked;
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let refused = serial
                .as_deref()
                .filter(|s| revoked.contains(s))
                .map(|s| revoked_response(&site, s));
            request.extensions_mut().insert(site.clone());
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
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// The serial of the verified peer certificate.
fn peer_serial(tls: &tokio_rustls::server::TlsStream<TcpStream>) -> Option<Vec<u8>> {
    let (_, session) = tls.get_ref();
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
fn peer_site(tls: &tokio_rustls::server::TlsStream<TcpStream>) -> Result<SiteId, String> {
    let (_, session) = tls.get_ref();
    let leaf = session
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or_else(|| "no client certificate".to_string())?;
    site_from_cert_der(leaf).map_err(|e| e.to_string())
}
