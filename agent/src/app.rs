//! Wiring: builds every component from the validated [`Config`], runs them, and owns shutdown.
//!
//! Order at start: TLS material and the store are loaded first (a bad certificate or a locked
//! store stops the agent before any socket opens), then the writer thread, the sources (run by
//! [`crate::supervisor`], which also reloads the configuration on SIGHUP) and the forwarder
//! start. Shutdown (the `cancel` token, from SIGTERM/SIGINT): sources stop reading and
//! drop their ingest senders, the writer commits everything already handed to it and exits, the
//! sources acknowledge what was committed, the forwarder stops. Nothing acknowledged is lost
//! because nothing is acknowledged before its commit.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::forwarder::{Forwarder, ForwarderConfig, ForwarderError};
use crate::sources::mqtt::MqttError;
use crate::sources::serial::SerialError;
use crate::sources::Health;
use crate::status::StatusSource;
use crate::store::{Store, StoreError, Writer};
use crate::tls::{self, TlsError};

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("TLS setup failed: {0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Mqtt(#[from] MqttError),
    #[error("{0}")]
    Serial(#[from] SerialError),
    #[error("{0}")]
    Forwarder(#[from] ForwarderError),
    #[error("internal task failed: {0}")]
    Task(String),
}

/// Timeout of one POST to the relay (a full batch over a slow link).
const RELAY_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Items (one per MQTT message or serial line) queued between the sources and the store writer.
/// The writer drains the queue at each commit, so this is about one group commit's worth of
/// input waiting while the previous one is on disk. Every queued item is a whole normalised
/// event (~0.5 KiB with its strings) whose message is not yet acknowledged: the depth is
/// agent memory. It used to be `2 × commit_max_events` (8192): with the writer's own batch that
/// was ~12,000 events in flight during a burst, several MiB of the peak RSS, for no ingest gain.
const INGEST_QUEUE: usize = 1024;

/// Runs the agent until `cancel` fires (or a component fails), then shuts down in order.
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), AppError> {
    run_with_reload(config, None, cancel, Arc::new(tokio::sync::Notify::new())).await
}

/// [`run`], plus: each notification of `reload` (SIGHUP) re-reads `config_path` and applies it
/// (see [`crate::supervisor`]) and re-checks the client certificate and key at once (they are
/// also polled; see [`tls::CertReloader`]).
pub async fn run_with_reload(
    config: Config,
    config_path: Option<std::path::PathBuf>,
    cancel: CancellationToken,
    reload: Arc<tokio::sync::Notify>,
) -> Result<(), AppError> {
    let tls_config = tls::client_config(
        &config.relay.ca_cert,
        &config.relay.client_cert,
        &config.relay.client_key,
    )?;
    let client = tls::relay_client(tls_config, RELAY_REQUEST_TIMEOUT)?;
    let cert_not_after = tls::cert_not_after(&config.relay.client_cert);

    let path = config.store_path();
    let max_bytes = config.store.max_bytes;
    let site = config.site.clone();
    // Opening upgrades an older store layout; binding refuses another site's store.
    let store = tokio::task::spawn_blocking(move || {
        Store::open(&path, max_bytes).and_then(|s| s.bind_site(&site).map(|()| s))
    })
    .await
    .map_err(|e| AppError::Task(e.to_string()))??;
    let stats = store.stats();
    tracing::info!(
        site = %config.site,
        agent = %config.agent_id,
        backlog_events = stats.backlog_events,
        next_seq = stats.next_seq,
        store = %config.store_path().display(),
        "agent starting"
    );

    let committed = Arc::new(tokio::sync::Notify::new());
    let (writer, ingest) = Writer::new(
        store.clone(),
        &config.store,
        INGEST_QUEUE,
        committed.clone(),
    );
    let health = Health::default();
    let registry = writer.registry();

    let status = StatusSource::new(store.clone(), health.clone(), cert_not_after);
    // The local status API (`[status] listen`); a busy port is logged, never fatal.
    if let Some(addr) = config.status.listen {
        match crate::local_api::serve(
            addr,
            status.clone(),
            &config.site,
            &config.agent_id,
            cancel.clone(),
        )
        .await
        {
            Ok((bound, _task)) => tracing::info!(addr = %bound, "status API listening"),
            Err(e) => tracing::error!(error = %e, "status API not available; ingest continues"),
        }
    }
    let (cert_reloader, client_updates) = tls::CertReloader::new(
        tls::BundlePaths {
            ca: config.relay.ca_cert.clone(),
            cert: config.relay.client_cert.clone(),
            key: config.relay.client_key.clone(),
        },
        RELAY_REQUEST_TIMEOUT,
        client.clone(),
        status.clone(),
    );
    let supervisor = crate::supervisor::Supervisor::new(
        config.clone(),
        config_path,
        registry,
        ingest,
        health.clone(),
        cert_reloader,
        cancel.clone(),
    );
    let forwarder = Forwarder::new(
        ForwarderConfig {
            relay_url: config.relay.url.clone(),
            site: config.site.clone(),
            agent: config.agent_id.clone(),
            batch_max_events: config.relay.batch_max_events,
            heartbeat: config.relay.heartbeat,
            retry_initial: config.relay.retry_initial,
            retry_max: config.relay.retry_max,
        },
        store.clone(),
        client,
        status.clone(),
        committed,
        cancel.clone(),
    )?
    .with_client_updates(client_updates);

    let writer_thread = writer.spawn(tokio::runtime::Handle::current(), cancel.clone())?;
    let writer_done = tokio::task::spawn_blocking(move || writer_thread.join());

    let mut tasks: JoinSet<Result<(), AppError>> = JoinSet::new();
    // The supervisor holds the last ingest sender: the writer ends once it has stopped the sources.
    tasks.spawn(supervisor.run(reload));
    tasks.spawn(async move { forwarder.run().await.map_err(AppError::from) });

    let mut first_error: Option<AppError> = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined
            .map_err(|e| AppError::Task(e.to_string()))
            .and_then(|r| r);
        if let Err(e) = result {
            tracing::error!(error = %e, "agent component failed; shutting down");
            cancel.cancel();
            first_error.get_or_insert(e);
        }
    }
    match writer_done.await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => {
            first_error.get_or_insert(AppError::Store(e));
        }
        Ok(Err(_)) | Err(_) => {
            first_error.get_or_insert(AppError::Task("store writer thread panicked".into()));
        }
    }
    let stats = store.stats();
    tracing::info!(
        backlog_events = stats.backlog_events,
        next_seq = stats.next_seq,
        "agent stopped"
    );
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
