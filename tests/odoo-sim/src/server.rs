//! HTTP serving: the axum router (`/jsonrpc`, `/__sim/*`, 404 elsewhere) on a hand-rolled hyper
//! accept loop, so that an injected fault can close a TCP connection without writing a byte.
//!
//! Each connection gets a `CancellationToken` (in the request extensions as [`ConnControl`]);
//! a handler that must "drop" the connection cancels it and never completes; the connection
//! task then drops the hyper connection, which closes the socket with no response. Shutdown:
//! the accept loop stops, open connections finish their current request (graceful, 5 s cap).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Router};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::control;
use crate::rpc::service::{self, Outcome};
use crate::rpc::{envelope, json2};
use crate::sim::Sim;

/// Per-connection handle given to handlers.
#[derive(Debug, Clone)]
pub struct ConnControl {
    /// Cancel to close the connection without a response.
    pub kill: CancellationToken,
    /// The client's address (login cooldown is per IP).
    pub peer: SocketAddr,
}

/// How long open connections may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html>\n<html lang=en>\n<title>{} {title}</title>\n<h1>{title}</h1>\n<p>{body}</p>\n",
        status.as_u16()
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}

fn json_response(v: &serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

async fn jsonrpc(
    State(sim): State<Arc<Sim>>,
    Extension(conn): Extension<ConnControl>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if mime != "application/json" && mime != "application/json-rpc" {
        return html(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "Request inferred type is compatible with ['http'] but 'json' was expected.",
        );
    }
    let req = match envelope::parse(&body) {
        Ok(r) => r,
        Err(envelope::EnvelopeError::InvalidJson) => {
            return text(StatusCode::BAD_REQUEST, "Invalid JSON data")
        }
        Err(envelope::EnvelopeError::InvalidJsonRpc) => {
            return text(StatusCode::BAD_REQUEST, "Invalid JSON-RPC data")
        }
    };
    match service::handle(&sim, conn.peer.ip(), req).await {
        Outcome::Reply(v) => json_response(&v),
        Outcome::Http500 => html(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            "The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application.",
        ),
        Outcome::Drop => {
            conn.kill.cancel();
            std::future::pending::<Response>().await
        }
    }
}

fn control_reply(r: Result<serde_json::Value, control::ControlError>) -> Response {
    match r {
        Ok(v) => json_response(&v),
        Err(e) => {
            let body = serde_json::json!({"error": e.to_string()});
            (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
    }
}

async fn sim_seed(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    control_reply(control::seed(&sim, &body))
}

async fn sim_state(State(sim): State<Arc<Sim>>) -> Response {
    match control::state_json(&sim) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot serialise the simulator state: {e}"),
        )
            .into_response(),
    }
}

async fn sim_faults(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    control_reply(control::faults(&sim, &body))
}

async fn json2_rpc(
    State(sim): State<Arc<Sim>>,
    Extension(conn): Extension<ConnControl>,
    axum::extract::Path((model, method)): axum::extract::Path<(String, String)>,
    req_method: axum::http::Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if sim.config.version < crate::version::OdooVersion::V19 {
        return not_found().await;
    }
    let outcome = if req_method == axum::http::Method::POST {
        json2::handle(&sim, &headers, &model, &method, &body).await
    } else {
        json2::not_found()
    };
    json2_response(outcome, &conn).await
}

async fn json2_other(
    State(sim): State<Arc<Sim>>,
    Extension(conn): Extension<ConnControl>,
) -> Response {
    if sim.config.version < crate::version::OdooVersion::V19 {
        return not_found().await;
    }
    json2_response(json2::not_found(), &conn).await
}

async fn json2_response(outcome: json2::Json2Outcome, conn: &ConnControl) -> Response {
    match outcome {
        json2::Json2Outcome::Reply(status, v) => {
            let mut r = (
                status,
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                v.to_string(),
            )
                .into_response();
            if status == StatusCode::UNAUTHORIZED {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("bearer"),
                );
            }
            r
        }
        json2::Json2Outcome::Http500 => html(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            "The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application.",
        ),
        json2::Json2Outcome::Drop => {
            conn.kill.cancel();
            std::future::pending::<Response>().await
        }
    }
}

/// Unknown paths: Odoo 19 answers JSON-2's own 404 under `/json/2/`, else werkzeug's page.
async fn fallback(
    State(sim): State<Arc<Sim>>,
    Extension(conn): Extension<ConnControl>,
    uri: axum::http::Uri,
) -> Response {
    if sim.config.version >= crate::version::OdooVersion::V19 && uri.path().starts_with("/json/2/")
    {
        return json2_response(json2::not_found(), &conn).await;
    }
    not_found().await
}

async fn not_found() -> Response {
    html(
        StatusCode::NOT_FOUND,
        "Not Found",
        "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.",
    )
}

/// The router (needs [`ConnControl`] in the request extensions, see [`serve`]).
pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/jsonrpc", any(jsonrpc))
        .route("/json/2/{model}/{method}", any(json2_rpc))
        .route("/json/2", any(json2_other))
        .route("/__sim/seed", post(sim_seed))
        .route("/__sim/state", get(sim_state))
        .route("/__sim/faults", post(sim_faults))
        .fallback(fallback)
        .with_state(sim)
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    shutdown: CancellationToken,
) {
    let kill = CancellationToken::new();
    let ctl = ConnControl {
        kill: kill.clone(),
        peer,
    };
    let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ctl.clone());
        let app = app.clone();
        async move {
            Ok::<_, Infallible>(
                app.oneshot(req.map(Body::new))
                    .await
                    .unwrap_or_else(|e| match e {}),
            )
        }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        () = kill.cancelled() => {
            tracing::debug!(%peer, "closing the connection without a response (injected fault)");
            // Dropping `conn` drops the socket: nothing written, connection closed.
        }
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            if tokio::time::timeout(DRAIN, conn).await.is_err() {
                tracing::warn!(%peer, "connection still busy at shutdown, closing it");
            }
        }
    }
}

/// Accept connections until `shutdown` is cancelled.
/// Returns once every connection has finished (at most [`DRAIN`] after the cancel).
pub async fn serve(listener: TcpListener, sim: Arc<Sim>, shutdown: CancellationToken) {
    let app = router(sim);
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tracker.spawn(serve_connection(stream, peer, app.clone(), shutdown.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    tracker.close();
    if tokio::time::timeout(DRAIN + Duration::from_secs(1), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish before the shutdown deadline");
    }
}
