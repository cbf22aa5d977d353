//! Wires the relay's components together, in one place: the store, the HTTPS server, the
//! Odoo pusher and the retention loop ([`retention_loop`]), sharing one [`CancellationToken`] for
//! shutdown and one [`Notify`] so intake wakes the pusher. [`Relay::start`] validates and binds everything before returning (so a caller
//! knows the bound address); [`Relay::run`] runs until cancelled, then drains with a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, RetentionConfig};
use crate::inbox::{run_blocking, Inbox, InboxError};
use crate::intake::{IntakeState, STORE_SLOTS};
use crate::odoo::client::OdooClient;
use crate::odoo::errors::OdooError;
use crate::pusher::{PushError, Pusher};
use crate::server::{router, Server, ServerError};
use crate::tls::TlsError;

/// How long open connections and a running Odoo chunk may take to finish after shutdown begins.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Why the relay could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot create state_dir {path}: {source}")]
    StateDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] InboxError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("Odoo client: {0}")]
    Odoo(#[from] OdooError),
    #[error(transparent)]
    Push(#[from] PushError),
    #[error("a relay task panicked: {0}")]
    Panic(String),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminStartError),
}

/// A started relay: bound, store open, tasks running.
pub struct Relay {
    local_addr: SocketAddr,
    inbox: Inbox,
    cancel: CancellationToken,
    server: JoinHandle<Result<(), ServerError>>,
    pusher: JoinHandle<Result<(), PushError>>,
    /// Notified on SIGHUP: re-read what can be reloaded (the revocation file).
    reload: Arc<Notify>,
    /// The admin listener (`[admin]`), when configured.
    admin: Option<crate::admin::AdminHandle>,
    /// The retention loop (`[retention]`), unless `keep_days = 0`.
    retention: Option<JoinHandle<()>>,
}

impl Relay {
    /// Opens the store, builds TLS, binds the listener and spawns the server and the pusher.
    pub async fn start(config: Config, cancel: CancellationToken) -> Result<Relay, RelayError> {
        // Revoked client certificates (`[tls] revoked_serials_file`), reloaded on change/SIGHUP.
        let revoked = crate::tls::Revoked::load(config.tls.revoked_serials_file.as_deref())?;
        let reload = Arc::new(Notify::new());
        let tls = crate::tls::server_config_with_revocations(
            &config.tls.server_cert,
            &config.tls.server_key,
            &config.tls.client_ca,
            revoked.clone(),
        )?;
        std::fs::create_dir_all(&config.state_dir).map_err(|source| RelayError::StateDir {
            path: config.state_dir.clone(),
            source,
        })?;
        let db_path = config.db_path();
        let inbox = run_blocking(move || Inbox::open(&db_path)).await?;
        let wake = Arc::new(Notify::new());
        let state = IntakeState {
            inbox: inbox.clone(),
            limits: config.limits,
            wake: wake.clone(),
            store_slots: Arc::new(Semaphore::new(STORE_SLOTS)),
        };
        let server = Server::bind(
            config.listen,
            tls,
            router(state),
            config.limits.max_connections,
            cancel.child_token(),
        )
        .await?;
        let local_addr = server.local_addr()?;
        let server = server.with_revocations(revoked.clone());
        if let Some(path) = config.tls.revoked_serials_file.clone() {
            tracing::info!(file = %path.display(), revoked = revoked.len(), "revocation list loaded");
            tokio::spawn(crate::tls::watch_revocations(
                path,
                revoked,
                reload.clone(),
                cancel.child_token(),
            ));
        }
        let client = OdooClient::new(&config.odoo)?;
        let admin = match &config.admin {
            Some(admin_config) => {
                let state = crate::admin::AdminState::new(
                    inbox.clone(),
                    wake.clone(),
                    config.status,
                    admin_config,
                );
                Some(
                    crate::admin::start(admin_config, &config.tls, state, cancel.child_token())
                        .await?,
                )
            }
            None => None,
        };
        let pusher = Pusher::new(
            inbox.clone(),
            client,
            config.odoo.max_chunk,
            wake,
            cancel.child_token(),
        );
        let retention = (config.retention.keep_days > 0).then(|| {
            tokio::spawn(retention_loop(
                inbox.clone(),
                config.retention,
                cancel.child_token(),
                crate::now_micros,
            ))
        });
        tracing::info!(addr = %local_addr, "listening on {local_addr}");
        Ok(Relay {
            local_addr,
            inbox,
            cancel: cancel.clone(),
            server: tokio::spawn(server.run()),
            pusher: tokio::spawn(pusher.run()),
            reload,
            admin,
            retention,
        })
    }

    /// The bound HTTPS address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound admin address, when `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.local_addr)
    }

    /// The store (for status tools and tests).
    pub fn inbox(&self) -> &Inbox {
        &self.inbox
    }

    /// Notify it to reload the revocation file now (SIGHUP).
    pub fn reload_trigger(&self) -> Arc<Notify> {
        self.reload.clone()
    }

    /// A token that stops the relay when cancelled.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Runs until the token is cancelled (or a task fails), then drains within [`DRAIN_DEADLINE`].
    pub async fn run(mut self) -> Result<(), RelayError> {
        let admin = self.admin.take();
        let retention = self.retention.take();
        let result = self.run_site_and_pusher().await;
        // The admin listener and the retention loop stop with the same token; wait for them so
        // the store is released (the loop finishes its current step, one short transaction).
        if let Some(admin) = admin {
            drain(admin.task).await;
        }
        if let Some(retention) = retention {
            drain(retention).await;
        }
        result
    }

    async fn run_site_and_pusher(self) -> Result<(), RelayError> {
        let Relay {
            cancel,
            mut server,
            mut pusher,
            ..
        } = self;
        let early = tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            r = &mut server => Some(("server", r.map(|r| r.map_err(RelayError::from)))),
            r = &mut pusher => Some(("pusher", r.map(|r| r.map_err(RelayError::from)))),
        };
        cancel.cancel();
        if let Some((name, result)) = early {
            // A task returns Ok only once cancelled; anything else is a failure.
            let result = flatten(result);
            if let Err(e) = &result {
                tracing::error!(task = name, error = %e, "a relay task failed; shutting down");
            }
            if name == "server" {
                drain(pusher).await;
            } else {
                drain(server).await;
            }
            return result;
        }
        tracing::info!("shutting down: draining connections and the current Odoo call");
        let deadline = tokio::time::sleep(DRAIN_DEADLINE);
        tokio::pin!(deadline);
        let both = async {
            let s = (&mut server).await;
            let p = (&mut pusher).await;
            (s, p)
        };
        tokio::select! {
            (s, p) = both => {
                flatten(s.map(|r| r.map_err(RelayError::from)))?;
                flatten(p.map(|r| r.map_err(RelayError::from)))?;
            }
            _ = &mut deadline => {
                tracing::warn!("drain deadline reached; aborting open connections and the Odoo call in flight (it is checked again at the next start)");
                server.abort();
                pusher.abort();
            }
        }
        Ok(())
    }
}

/// The first retention pass runs this long after start (or after `check_interval`, if shorter):
/// late enough not to compete with agents reconnecting and draining at start-up, soon enough that
/// a relay restarted more often than `check_interval` (hourly by default) still prunes.
const RETENTION_FIRST_PASS: Duration = Duration::from_secs(60);

/// Prunes finished events older than `keep_days` (see `crate::inbox::retention`): one pass
/// over every site every `check_interval`, the first [`RETENTION_FIRST_PASS`] after start, each
/// site in bounded durable steps on the blocking pool, stopping between steps when `cancel`
/// fires. A store error is logged and the pass is tried again at the next interval; it never
/// stops the relay. `now` is the clock (µs; tests pass their own).
pub async fn retention_loop(
    inbox: Inbox,
    config: RetentionConfig,
    cancel: CancellationToken,
    now: fn() -> i64,
) {
    let mut wait = config.check_interval.min(RETENTION_FIRST_PASS);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = config.check_interval;
        if let Err(e) = retention_pass(&inbox, config.keep_days, &cancel, now).await {
            tracing::warn!(error = %e, "retention pass failed; trying again at the next interval");
        }
    }
}

/// One retention pass over every site.
async fn retention_pass(
    inbox: &Inbox,
    keep_days: u32,
    cancel: &CancellationToken,
    now: fn() -> i64,
) -> Result<(), InboxError> {
    let sites = {
        let inbox = inbox.clone();
        run_blocking(move || inbox.site_ids()).await?
    };
    for site in sites {
        if cancel.is_cancelled() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let (store, name, stop) = (inbox.clone(), site.clone(), cancel.clone());
        let pass = run_blocking(move || {
            store.prune_site(&name, keep_days, now(), &|| stop.is_cancelled())
        })
        .await?;
        if pass.rows > 0 {
            tracing::info!(
                site = %site,
                watermark = pass.through,
                rows = pass.rows,
                events = pass.events,
                steps = pass.steps,
                keep_days,
                duration_ms = started.elapsed().as_millis() as u64,
                "retention pruned finished events"
            );
        }
    }
    Ok(())
}

async fn drain<T>(handle: JoinHandle<T>) {
    if tokio::time::timeout(DRAIN_DEADLINE, handle).await.is_err() {
        tracing::warn!("drain deadline reached");
    }
}

fn flatten(r: Result<Result<(), RelayError>, tokio::task::JoinError>) -> Result<(), RelayError> {
    match r {
        Ok(r) => r,
        Err(e) if e.is_cancelled() => Ok(()),
        Err(e) => Err(RelayError::Panic(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scanbridge_protocol::{Batch, Event, EventBody, Quarantined, Source};

    /// A clock three days after the test batches were stored (at 1 µs).
    fn three_days_later() -> i64 {
        3 * 86_400 * 1_000_000
    }

    #[tokio::test]
    async fn the_retention_loop_prunes_on_its_interval_and_stops_when_cancelled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inbox = Inbox::open(&dir.path().join("relay.redb")).expect("open");
        let events = (1..=3)
            .map(|seq| Event {
                seq,
                captured_at: 0,
                received_at: 0,
                source: Source::Serial {
                    port: "/dev/ttyUSB0".into(),
                },
                device: "SC-01".into(),
                body: EventBody::Quarantined(Quarantined {
                    raw: vec![0xff],
                    reason: "not UTF-8".into(),
                }),
            })
            .collect();
        let batch = Batch {
            site: "WH01".into(),
            agent: "gw".into(),
            first_seq: 1,
            events,
            status: None,
        };
        let body = scanbridge_protocol::encode(&batch).expect("encode");
        inbox
            .accept_batch("WH01", &batch, &body, 1)
            .expect("accept");
        let cancel = CancellationToken::new();
        let config = RetentionConfig {
            keep_days: 1,
            check_interval: Duration::from_millis(20),
        };
        let task = tokio::spawn(retention_loop(
            inbox.clone(),
            config,
            cancel.clone(),
            three_days_later,
        ));
        // Not pushed yet: the loop keeps looking and prunes nothing.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(inbox.pruned_through("WH01").expect("read"), None);
        let quarantined = crate::inbox::Outcome::Quarantined {
            reason: "not UTF-8".into(),
        };
        let outcomes: Vec<_> = (1..=3).map(|s| (s, quarantined.clone())).collect();
        inbox
            .commit_outcomes("WH01", 4, &outcomes, 1)
            .expect("commit");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while inbox.stats("WH01").expect("stats").pruned_through != Some(3) {
            assert!(tokio::time::Instant::now() < deadline, "never pruned");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(inbox.quarantine("WH01").expect("quarantine").is_empty());
        assert_eq!(
            inbox.stats("WH01").expect("stats").quarantined,
            3,
            "counters stay"
        );
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the loop stops promptly")
            .expect("no panic");
    }
}
