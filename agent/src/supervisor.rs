//! The source supervisor and configuration reload (SIGHUP).
//!
//! Owns the running ingest sources (MQTT brokers, serial ports) and the certificate reloader.
//! Sources run under a *generation* token (a child of the agent's token); a reload whose new
//! configuration changes the sources (brokers, topics, ports, stations, tags) stops the current
//! generation — each source stops reading, acknowledges what the writer has committed, and
//! ends — then starts a new one from the new configuration. The writer and the forwarder keep
//! running throughout, so nothing committed is touched and nothing acknowledged is lost: a
//! message the broker delivered but the writer had not committed yet is not acknowledged and
//! comes back to the new generation (same client id, persistent session).
//!
//! MQTT subscriptions live in the broker's persistent session, so a topic filter removed from
//! the configuration would keep delivering. Between the generations the supervisor connects once
//! with the old client id and unsubscribes the removed filters (all of them for a broker that
//! was removed or whose client id changed).
//!
//! Reload rules ([`plan`], pure): a file that does not load (syntax, validation, unusable
//! certificate) is refused with its error and the running configuration stays in force;
//! `site` and `state_dir` cannot change without a restart and are refused saying so; `agent_id`,
//! `[store]`, `[status]` and `[relay]` settings other than the bundle files are logged as taking
//! effect at the next restart; new bundle file paths are handed to the certificate reloader.
//! Every SIGHUP also re-checks the certificate files (see [`crate::tls::CertReloader`]).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::AppError;
use crate::config::{self, Config, MqttConfig};
use crate::normalise::{Stations, Tags};
use crate::sources::mqtt::MqttSource;
use crate::sources::serial::SerialSource;
use crate::sources::Health;
use crate::store::writer::SourceRegistry;
use crate::store::{IngestItem, SourceId};
use crate::tls::{BundlePaths, CertReloader, RELOAD_POLL};

/// Commit notices buffered per source.
const NOTICE_QUEUE: usize = 256;
/// How long stopping one generation of sources may take before its tasks are aborted (their
/// unacknowledged messages are redelivered by the broker).
const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// How long the unsubscribe connection for removed topic filters may take.
const UNSUBSCRIBE_DEADLINE: Duration = Duration::from_secs(10);

/// What a reload changes, decided by [`plan`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReloadPlan {
    /// Sources (brokers, topics, ports, stations, tags) differ: restart them.
    pub restart_sources: bool,
    /// The `[relay]` bundle files moved: point the certificate reloader at them.
    pub bundle: Option<BundlePaths>,
    /// Keys that changed but only take effect at the next restart.
    pub later: Vec<&'static str>,
}

/// Why a reload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadRefused {
    #[error("{0}")]
    Invalid(String),
    #[error("`{key}` changed ({old} → {new}): that needs a restart of the agent (systemctl restart scanbridge-agent); the running configuration stays in force")]
    NeedsRestart {
        key: &'static str,
        old: String,
        new: String,
    },
}

/// A fingerprint of everything sources are built from.
fn sources_fingerprint(c: &Config) -> String {
    // Debug covers every field the helpers add to these sections; the MQTT passwords are
    // redacted there, so they are compared explicitly.
    let passwords: Vec<Option<&str>> = c
        .mqtt
        .iter()
        .map(|m| m.password.as_ref().map(|p| p.0.as_str()))
        .collect();
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}",
        c.mqtt, c.serial, c.stations, c.tags, passwords
    )
}

fn bundle_of(c: &Config) -> BundlePaths {
    BundlePaths {
        ca: c.relay.ca_cert.clone(),
        cert: c.relay.client_cert.clone(),
        key: c.relay.client_key.clone(),
    }
}

/// Decides what a reload from `old` to `new` does. Pure.
pub fn plan(old: &Config, new: &Config) -> Result<ReloadPlan, ReloadRefused> {
    if old.site != new.site {
        return Err(ReloadRefused::NeedsRestart {
            key: "site",
            old: old.site.clone(),
            new: new.site.clone(),
        });
    }
    if old.state_dir != new.state_dir {
        return Err(ReloadRefused::NeedsRestart {
            key: "state_dir",
            old: old.state_dir.display().to_string(),
            new: new.state_dir.display().to_string(),
        });
    }
    let mut later = Vec::new();
    if old.agent_id != new.agent_id {
        later.push("agent_id");
    }
    if old.store != new.store {
        later.push("store");
    }
    if old.status != new.status {
        later.push("status");
    }
    let (o, n) = (&old.relay, &new.relay);
    if o.url != n.url {
        later.push("relay.url");
    }
    if (
        o.batch_max_events,
        o.heartbeat,
        o.retry_initial,
        o.retry_max,
    ) != (
        n.batch_max_events,
        n.heartbeat,
        n.retry_initial,
        n.retry_max,
    ) {
        later.push("relay (batch_max_events, heartbeat_secs, retry_*)");
    }
    let bundle = (bundle_of(old) != bundle_of(new)).then(|| bundle_of(new));
    Ok(ReloadPlan {
        restart_sources: sources_fingerprint(old) != sources_fingerprint(new),
        bundle,
        later,
    })
}

/// Topic filters to unsubscribe per broker when going from `old` to `new`: the broker config
/// to connect with (old client id) and the filters. Pure.
pub fn removed_subscriptions(
    old: &[MqttConfig],
    new: &[MqttConfig],
) -> Vec<(MqttConfig, Vec<String>)> {
    let mut out = Vec::new();
    for o in old {
        let same_session = new
            .iter()
            .find(|n| n.host == o.host && n.port == o.port && n.client_id == o.client_id);
        let removed: Vec<String> = match same_session {
            Some(n) => {
                let keep: BTreeSet<&String> = n.topics.iter().collect();
                o.topics
                    .iter()
                    .filter(|t| !keep.contains(t))
                    .cloned()
                    .collect()
            }
            None => o.topics.clone(),
        };
        if !removed.is_empty() {
            out.push((o.clone(), removed));
        }
    }
    out
}

/// Connects once with `cfg`'s client id and persistent session and unsubscribes `filters`.
/// Messages the broker delivers meanwhile are not acknowledged (they come back to the source).
async fn unsubscribe(cfg: &MqttConfig, filters: &[String]) -> Result<(), String> {
    use rumqttc::{AsyncClient, Event, Incoming, Outgoing};
    let opts = MqttSource::options(cfg, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let work = async {
        let mut pending = filters.len();
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    for f in filters {
                        client
                            .try_unsubscribe(f.clone())
                            .map_err(|e| e.to_string())?;
                    }
                }
                Ok(Event::Incoming(Incoming::UnsubAck(_))) => {
                    pending -= 1;
                    if pending == 0 {
                        let _ = client.try_disconnect();
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    match tokio::time::timeout(UNSUBSCRIBE_DEADLINE, work).await {
        Ok(r) => r,
        Err(_) => Err("the broker did not answer in time".into()),
    }
}

/// The running sources of one generation.
struct Generation {
    stop: CancellationToken,
    tasks: JoinSet<Result<(), AppError>>,
    ids: Vec<SourceId>,
}

/// Runs the sources and reloads the configuration (module doc).
pub struct Supervisor {
    config: Config,
    config_path: Option<PathBuf>,
    registry: SourceRegistry,
    /// Held to build new sources; dropped at shutdown so the writer can finish.
    ingest: mpsc::Sender<IngestItem>,
    health: Health,
    certs: CertReloader,
    cancel: CancellationToken,
    generation: Option<Generation>,
    /// Test hook: MQTT keep-alive for the sources it starts.
    keep_alive: Option<Duration>,
}

impl Supervisor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
        registry: SourceRegistry,
        ingest: mpsc::Sender<IngestItem>,
        health: Health,
        certs: CertReloader,
        cancel: CancellationToken,
    ) -> Supervisor {
        Supervisor {
            config,
            config_path,
            registry,
            ingest,
            health,
            certs,
            cancel,
            generation: None,
            keep_alive: None,
        }
    }

    /// Starts the sources of the configuration in force as a new generation.
    fn start_sources(&mut self) {
        let stop = self.cancel.child_token();
        let mut tasks = JoinSet::new();
        let mut ids = Vec::new();
        let stations = Arc::new(Stations::new(&self.config.stations));
        let tags = Arc::new(Tags::new(&self.config.tags));
        for m in &self.config.mqtt {
            let (id, notices) = self.registry.add_source(NOTICE_QUEUE);
            ids.push(id);
            let mut source = MqttSource::new(
                m.clone(),
                stations.clone(),
                id,
                self.ingest.clone(),
                notices,
                self.health.clone(),
                stop.clone(),
            )
            .with_tags(tags.clone());
            if let Some(k) = self.keep_alive {
                source = source.with_keep_alive(k);
            }
            tasks.spawn(async move { source.run().await.map_err(AppError::from) });
        }
        for p in &self.config.serial {
            let (id, notices) = self.registry.add_source(NOTICE_QUEUE);
            ids.push(id);
            let source = SerialSource::new(
                p.clone(),
                stations.clone(),
                id,
                self.ingest.clone(),
                notices,
                self.health.clone(),
                stop.clone(),
            );
            tasks.spawn(async move { source.run().await.map_err(AppError::from) });
        }
        self.generation = Some(Generation { stop, tasks, ids });
    }

    /// Stops the current generation: each source acknowledges what was committed and ends.
    /// Returns the first source error.
    async fn stop_sources(&mut self) -> Option<AppError> {
        let mut g = self.generation.take()?;
        g.stop.cancel();
        let mut first_error = None;
        let drained = tokio::time::timeout(STOP_DEADLINE, async {
            while let Some(joined) = g.tasks.join_next().await {
                if let Err(e) = joined
                    .map_err(|e| AppError::Task(e.to_string()))
                    .and_then(|r| r)
                {
                    first_error.get_or_insert(e);
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = g.tasks.len(),
                "sources did not stop in time; aborting them (their unacknowledged messages are redelivered)"
            );
            g.tasks.shutdown().await;
        }
        for id in g.ids {
            self.registry.retire(id);
        }
        self.health.clear();
        first_error
    }

    /// Runs until the agent is cancelled or a source fails; `reload` is SIGHUP.
    pub async fn run(mut self, reload: Arc<Notify>) -> Result<(), AppError> {
        self.start_sources();
        self.certs.warn_expiry();
        let mut failure = None;
        loop {
            let next = async {
                match self.generation.as_mut() {
                    Some(g) => g.tasks.join_next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = reload.notified() => {
                    self.reload().await;
                    self.certs.check();
                    self.certs.warn_expiry();
                }
                _ = tokio::time::sleep(RELOAD_POLL) => {
                    self.certs.check();
                    self.certs.warn_expiry();
                }
                Some(joined) = next => {
                    let result = joined.map_err(|e| AppError::Task(e.to_string())).and_then(|r| r);
                    match result {
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                        Ok(()) if !self.cancel.is_cancelled() => tracing::warn!(
                            "a source ended by itself; it restarts at the next reload (SIGHUP) or restart"
                        ),
                        Ok(()) => {}
                    }
                }
            }
        }
        let stopped = self.stop_sources().await;
        // Dropping the last ingest sender lets the writer commit what it holds and finish.
        drop(self.ingest);
        match failure.or(stopped) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// SIGHUP: loads the configuration file again and applies it (module doc).
    async fn reload(&mut self) {
        let Some(path) = self.config_path.clone() else {
            return;
        };
        let loaded = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let new = match loaded {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "refusing the new configuration; the running configuration stays in force");
                return;
            }
        };
        let plan = match plan(&self.config, &new) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "refusing the new configuration");
                return;
            }
        };
        for key in &plan.later {
            tracing::warn!(
                key,
                "changed in the configuration; takes effect at the next restart"
            );
        }
        let old = std::mem::replace(&mut self.config, new);
        if let Some(bundle) = plan.bundle {
            self.certs.set_paths(bundle);
        }
        if plan.restart_sources {
            if let Some(e) = self.stop_sources().await {
                tracing::warn!(error = %e, "a source ended with an error while stopping for reload");
            }
            for (broker, filters) in removed_subscriptions(&old.mqtt, &self.config.mqtt) {
                match unsubscribe(&broker, &filters).await {
                    Ok(()) => {
                        tracing::info!(broker = %broker.name, filters = ?filters, "unsubscribed topic filters removed from the configuration")
                    }
                    Err(e) => {
                        tracing::warn!(broker = %broker.name, filters = ?filters, error = %e, "cannot unsubscribe removed topic filters; the broker keeps delivering them until it is reachable at a later reload")
                    }
                }
            }
            self.start_sources();
        }
        tracing::info!(
            site = %self.config.site,
            sources_restarted = plan.restart_sources,
            mqtt = self.config.mqtt.len(),
            serial = self.config.serial.len(),
            stations = self.config.stations.len(),
            "configuration reloaded"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mqtt(name: &str, client_id: &str, topics: &[&str]) -> MqttConfig {
        MqttConfig {
            name: name.into(),
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: client_id.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            tls: None,
            username: None,
            password: None,
            formats: Vec::new(),
        }
    }

    /// A parsed configuration; `edit` changes the text first.
    fn config(dir: &tempfile::TempDir, edit: impl Fn(String) -> String) -> Config {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()])
            .unwrap_or_else(|e| panic!("{e}"));
        for name in ["ca.pem", "site.pem", "other.pem"] {
            std::fs::write(dir.path().join(name), ck.cert.pem()).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(dir.path().join("site.key"), ck.key_pair.serialize_pem())
            .unwrap_or_else(|e| panic!("{e}"));
        let text = edit(
            "site = \"WH01\"\nagent_id = \"gw\"\nstate_dir = \"state\"\n[relay]\nurl = \"https://r:8443\"\nca_cert = \"ca.pem\"\nclient_cert = \"site.pem\"\nclient_key = \"site.key\"\n[[mqtt]]\nname = \"site\"\nhost = \"127.0.0.1\"\nclient_id = \"cid\"\ntopics = [\"a/+/scan\"]\n"
                .to_string(),
        );
        config::parse(&text, &dir.path().join("agent.toml"), dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn an_unchanged_configuration_changes_nothing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let c = config(&dir, |t| t);
        assert_eq!(plan(&c, &c.clone()), Ok(ReloadPlan::default()));
    }

    #[test]
    fn a_site_or_state_dir_change_is_refused_as_needing_a_restart() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let c = config(&dir, |t| t);
        let site = config(&dir, |t| t.replace("WH01", "WH02"));
        let e = plan(&c, &site)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("`site` changed (WH01 → WH02): that needs a restart"),
            "{e}"
        );
        let state = config(&dir, |t| t.replace("\"state\"", "\"state2\""));
        assert!(matches!(
            plan(&c, &state),
            Err(ReloadRefused::NeedsRestart {
                key: "state_dir",
                ..
            })
        ));
    }

    #[test]
    fn sources_restart_on_topics_or_stations_and_other_keys_wait_for_a_restart() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let c = config(&dir, |t| t);
        let topics = config(&dir, |t| t.replace("a/+/scan", "b/+/scan"));
        assert!(plan(&c, &topics)
            .map(|p| p.restart_sources)
            .unwrap_or(false));
        let station = config(&dir, |t| {
            format!("{t}[[stations]]\ndevice = \"SC-01\"\nop = \"count\"\n")
        });
        assert!(plan(&c, &station)
            .map(|p| p.restart_sources)
            .unwrap_or(false));
        let later = config(&dir, |t| {
            t.replace("agent_id = \"gw\"", "agent_id = \"gw2\"")
                .replace("https://r:8443", "https://r2:8443")
        });
        let p = plan(&c, &later).unwrap_or_default();
        assert!(!p.restart_sources);
        assert_eq!(p.later, vec!["agent_id", "relay.url"]);
        let moved = config(&dir, |t| {
            t.replace("client_cert = \"site.pem\"", "client_cert = \"other.pem\"")
        });
        let p = plan(&c, &moved).unwrap_or_default();
        assert_eq!(p.bundle.map(|b| b.cert), Some(dir.path().join("other.pem")));
    }

    #[test]
    fn removed_topic_filters_are_unsubscribed_and_kept_ones_are_not() {
        let old = vec![mqtt("site", "cid", &["a/+/scan", "b/#"])];
        let new = vec![mqtt("site", "cid", &["a/+/scan", "c/#"])];
        assert_eq!(
            removed_subscriptions(&old, &new),
            vec![(old[0].clone(), vec!["b/#".to_string()])]
        );
        assert!(removed_subscriptions(&new, &new).is_empty());
    }

    #[test]
    fn a_removed_broker_or_a_new_client_id_drops_every_old_subscription() {
        let old = vec![mqtt("site", "cid", &["a/#"]), mqtt("plc", "p", &["plc/#"])];
        let new = vec![mqtt("site", "cid2", &["a/#"])];
        let r = removed_subscriptions(&old, &new);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].1, vec!["a/#".to_string()]);
        assert_eq!(r[1].0.client_id, "p");
    }
}
