//! The agent's local status API, on `[status] listen` (default `127.0.0.1:9187`, loopback only
//! unless `allow_remote = true`): plain HTTP/1.1 for the box itself, a local Prometheus and
//! `scanbridge-agent status`.
//!
//! - `GET /healthz`: `200 {"status":"ok"}` when the store takes events (ingest not paused), else
//!   `503 {"status":"unhealthy","reason":"..."}`.
//! - `GET /metrics`: Prometheus/OpenMetrics text with exactly the agent metric names of the team
//!   contract (see [`metrics`]), read from the live state at scrape time.
//! - `GET /status`: the full [`LocalReport`] as JSON (what `scanbridge-agent status` prints).
//!
//! Owns the listener task; it stops on the agent's cancellation token. A port that cannot be
//! bound is reported to the caller, which logs it and keeps ingesting: status is never a reason
//! to stop buffering scans.

pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

use crate::status::{ingest_problem, LocalReport, StatusSource};

/// Why the status API could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalApiError {
    #[error("cannot listen on {addr} for the status API: {source} (another agent or program on that port? set [status] listen to a free port, or \"\" to disable)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the handlers read.
#[derive(Clone)]
struct ApiState {
    status: StatusSource,
    site: Arc<str>,
    agent: Arc<str>,
    registry: Arc<prometheus_client::registry::Registry>,
}

/// The router of the local API (exposed for tests).
pub fn router(status: StatusSource, site: &str, agent: &str) -> Router {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(metrics::AgentCollector::new(status.clone())));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/status", get(report))
        .with_state(ApiState {
            status,
            site: Arc::from(site),
            agent: Arc::from(agent),
            registry: Arc::new(registry),
        })
}

/// Binds `addr` and serves until `cancel` fires. Returns the bound address and the task.
pub async fn serve(
    addr: SocketAddr,
    status: StatusSource,
    site: &str,
    agent: &str,
    cancel: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), LocalApiError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| LocalApiError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| LocalApiError::Bind { addr, source })?;
    let app = router(status, site, agent);
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled_owned().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "status API stopped with an error");
        }
    });
    Ok((bound, task))
}

async fn healthz(State(s): State<ApiState>) -> Response {
    let status = s.status.build();
    match ingest_problem(&status) {
        None => (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unhealthy", "reason": reason})),
        )
            .into_response(),
    }
}

async fn metrics_text(State(s): State<ApiState>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &s.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        )
            .into_response(),
    }
}

async fn report(State(s): State<ApiState>) -> Json<LocalReport> {
    Json(s.status.report(&s.site, &s.agent))
}
