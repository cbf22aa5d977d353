//! The source supervisor and configuration reload (SIGHUP).
//!
//! Owns the running ingest sources (MQTT brokers, serial ports) and the certificate reloader.
//! Each source runs as its own task under its own stop token (a child of the agent's token),
//! keyed by kind and name (`[[mqtt]] name`, `[[serial]] name`; names are unique across both).
//!
//! A reload compares each source's *effective configuration* — its whole `[[mqtt]]` entry
//! (host, port, client id, topics, formats, TLS files, login) or `[[serial]]` entry (path, line
//! settings, framing, device, AIM) — with the one it was started from ([`source_changes`], pure):
//! - unchanged: keeps running untouched (a serial port stays open, so a line in progress is
//!   not cut off and no byte is lost; a broker connection and its in-flight messages stay);
//! - removed: stopped — it stops reading, acknowledges what the writer has committed, and ends;
//! - added: started;
//! - changed: stopped as removed, then started from the new entry.
//!
//! `[[stations]]` and `[[tags]]` are not part of any source's entry: they are normalisation
//! tables, and every source applies them. Restarting every source on a station edit would bring
//! back the very disruption above, so they travel instead over one watch channel
//! ([`crate::sources::Tables`]): a reload that changes them publishes new tables and each
//! running source takes them before normalising its next message or line (a message already
//! normalised keeps the tables it was normalised with). Sources started later start from the
//! newest tables.
//!
//! The writer and the forwarder keep running throughout, so nothing committed is touched and
//! nothing acknowledged is lost: a message the broker delivered to a stopped source but the
//! writer had not committed yet is not acknowledged and comes back to its successor (same client
//! id, persistent session). A source that ended by itself (it should not) stays on the health
//! board as down and is started again at the next reload even if its entry is unchanged.
//!
//! MQTT subscriptions live in the broker's persistent session, so a topic filter removed from
//! the configuration would keep delivering. After stopping changed and removed brokers, the
//! supervisor connects once with the old client id and unsubscribes the removed filters (all of
//! them for a broker that was removed or whose client id changed), then starts the new ones.
//! TLS files are compared by path: a broker certificate replaced at the same path takes effect
//! when the broker's entry changes or the agent restarts.
//!
//! Reload rules ([`plan`], pure): a file that does not load (syntax, validation, unusable
//! certificate) is refused with its error and the running configuration stays in force;
//! `site` and `state_dir` cannot change without a restart and are refused saying so; `agent_id`,
//! `[store]`, `[status]` and `[relay]` settings other than the bundle files are logged as taking
//! effect at the next restart; new bundle file paths are handed to the certificate reloader.
//! Every SIGHUP also re-checks the certificate files (see [`crate::tls::CertReloader`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::{AbortHandle, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::app::AppError;
use crate::config::{self, Config, MqttConfig, SerialConfig};
use crate::normalise::{Stations, Tags};
use crate::sources::mqtt::MqttSource;
use crate::sources::serial::SerialSource;
use crate::sources::{Health, Tables};
use crate::store::writer::SourceRegistry;
use crate::store::{IngestItem, SourceId};
use crate::tls::{BundlePaths, CertReloader, RELOAD_POLL};

/// Commit notices buffered per source.
const NOTICE_QUEUE: usize = 256;
/// How long stopping sources may take before their tasks are aborted (their unacknowledged
/// messages are redelivered by the broker).
const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// How long the unsubscribe connection for removed topic filters may take.
const UNSUBSCRIBE_DEADLINE: Duration = Duration::from_secs(10);

/// What a reload changes, decided by [`plan`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReloadPlan {
    /// Some `[[mqtt]]` or `[[serial]]` entry was added, removed or changed ([`source_changes`]
    /// says which).
    pub sources_changed: bool,
    /// `[[stations]]` or `[[tags]]` changed: publish them to the running sources.
    pub tables_changed: bool,
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

/// Which source: kind and configured name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKey {
    Mqtt(String),
    Serial(String),
}

/// The configuration entry one source is built from (its effective configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Mqtt(MqttConfig),
    Serial(SerialConfig),
}

/// Every source of `c`, by key. Pure.
pub fn specs(c: &Config) -> BTreeMap<SourceKey, SourceSpec> {
    let mqtt = c
        .mqtt
        .iter()
        .map(|m| (SourceKey::Mqtt(m.name.clone()), SourceSpec::Mqtt(m.clone())));
    let serial = c.serial.iter().map(|p| {
        (
            SourceKey::Serial(p.name.clone()),
            SourceSpec::Serial(p.clone()),
        )
    });
    mqtt.chain(serial).collect()
}

/// What a reload does to the sources, decided by [`source_changes`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceChanges {
    /// Running and unchanged: left alone.
    pub keep: Vec<SourceKey>,
    /// Removed or changed: stopped.
    pub stop: Vec<SourceKey>,
    /// Added or changed: started (after the stops).
    pub start: Vec<SourceKey>,
}

/// Compares the sources running now (with the entries they were started from) with the new
/// configuration's. A changed source appears in both `stop` and `start`. Pure.
pub fn source_changes(
    running: &BTreeMap<SourceKey, SourceSpec>,
    new: &BTreeMap<SourceKey, SourceSpec>,
) -> SourceChanges {
    let mut out = SourceChanges::default();
    for (key, spec) in running {
        match new.get(key) {
            Some(n) if n == spec => out.keep.push(key.clone()),
            Some(_) => {
                out.stop.push(key.clone());
                out.start.push(key.clone());
            }
            None => out.stop.push(key.clone()),
        }
    }
    out.start
        .extend(new.keys().filter(|k| !running.contains_key(k)).cloned());
    out
}

/// The normalisation tables of `c`.
fn tables_of(c: &Config) -> Tables {
    Tables {
        stations: Arc::new(Stations::new(&c.stations)),
        tags: Arc::new(Tags::new(&c.tags)),
    }
}

/// `[[stations]]` and `[[tags]]` as compared by [`plan`].
fn tables_fingerprint(c: &Config) -> String {
    format!("{:?}|{:?}", c.stations, c.tags)
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
        sources_changed: specs(old) != specs(new),
        tables_changed: tables_fingerprint(old) != tables_fingerprint(new),
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

/// One running (or ended) source.
struct Running {
    /// The entry it was started from.
    spec: SourceSpec,
    stop: CancellationToken,
    task: AbortHandle,
    /// Its slot at the writer.
    id: SourceId,
    health_slot: usize,
    /// It ended by itself; started again at the next reload.
    ended: bool,
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
    /// Every source task; each returns when its source has stopped.
    tasks: JoinSet<Result<(), AppError>>,
    running: BTreeMap<SourceKey, Running>,
    /// The stations and tags in force, watched by every source.
    tables: watch::Sender<Tables>,
    /// A source failed while the supervisor was waiting for others to stop.
    failure: Option<AppError>,
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
        let (tables, _) = watch::channel(tables_of(&config));
        Supervisor {
            config,
            config_path,
            registry,
            ingest,
            health,
            certs,
            cancel,
            tasks: JoinSet::new(),
            running: BTreeMap::new(),
            tables,
            failure: None,
            keep_alive: None,
        }
    }

    /// Starts the sources of `keys` from the configuration in force.
    fn start_sources(&mut self, keys: &[SourceKey]) {
        let mut all = specs(&self.config);
        for key in keys {
            if let Some(spec) = all.remove(key) {
                self.start_source(key.clone(), spec);
            }
        }
    }

    fn start_source(&mut self, key: SourceKey, spec: SourceSpec) {
        let stop = self.cancel.child_token();
        let (id, notices) = self.registry.add_source(NOTICE_QUEUE);
        let stations = self.tables.borrow().stations.clone();
        let (task, health_slot) = match &spec {
            SourceSpec::Mqtt(m) => {
                let mut source = MqttSource::new(
                    m.clone(),
                    stations,
                    id,
                    self.ingest.clone(),
                    notices,
                    self.health.clone(),
                    stop.clone(),
                )
                .with_table_updates(self.tables.subscribe());
                if let Some(k) = self.keep_alive {
                    source = source.with_keep_alive(k);
                }
                let slot = source.health_slot();
                let task = self
                    .tasks
                    .spawn(async move { source.run().await.map_err(AppError::from) });
                (task, slot)
            }
            SourceSpec::Serial(p) => {
                let source = SerialSource::new(
                    p.clone(),
                    stations,
                    id,
                    self.ingest.clone(),
                    notices,
                    self.health.clone(),
                    stop.clone(),
                )
                .with_table_updates(self.tables.subscribe());
                let slot = source.health_slot();
                let task = self
                    .tasks
                    .spawn(async move { source.run().await.map_err(AppError::from) });
                (task, slot)
            }
        };
        self.running.insert(
            key,
            Running {
                spec,
                stop,
                task,
                id,
                health_slot,
                ended: false,
            },
        );
    }

    fn key_of(&self, task: tokio::task::Id) -> Option<SourceKey> {
        self.running
            .iter()
            .find(|(_, r)| r.task.id() == task)
            .map(|(k, _)| k.clone())
    }

    /// A source task ended without being asked to: it failed (returned), or it ended by itself
    /// (kept as ended, down on the health board, started again at the next reload).
    fn on_ended(
        &mut self,
        joined: Result<(tokio::task::Id, Result<(), AppError>), JoinError>,
    ) -> Option<AppError> {
        let (task, result) = match joined {
            Ok((task, r)) => (task, r),
            Err(e) => (e.id(), Err(AppError::Task(e.to_string()))),
        };
        let Some(key) = self.key_of(task) else {
            // A source already given up on (aborted after the stop deadline) ending late.
            tracing::debug!("a stopped source's task ended late");
            return None;
        };
        let r = self.running.get_mut(&key)?;
        r.ended = true;
        self.registry.retire(r.id);
        match result {
            Err(e) => Some(e),
            Ok(()) => {
                if !self.cancel.is_cancelled() {
                    self.health.set(
                        r.health_slot,
                        false,
                        "stopped by itself; starts again at the next reload (SIGHUP) or restart",
                    );
                    tracing::warn!(
                        source = ?key,
                        "a source ended by itself; it restarts at the next reload (SIGHUP) or restart"
                    );
                }
                None
            }
        }
    }

    /// Removes `key` from the running sources: retired at the writer, off the health board.
    fn forget(&mut self, key: &SourceKey) {
        if let Some(r) = self.running.remove(key) {
            self.registry.retire(r.id);
            self.health.remove(r.health_slot);
        }
    }

    /// Stops the sources of `keys`: each acknowledges what was committed and ends; one that does
    /// not end within [`STOP_DEADLINE`] is aborted. The others keep running; one of them that
    /// fails meanwhile is kept in `self.failure`. Returns the first error of a stopped source.
    async fn stop_sources(&mut self, keys: &[SourceKey]) -> Option<AppError> {
        let mut waiting: HashSet<tokio::task::Id> = HashSet::new();
        for key in keys {
            if let Some(r) = self.running.get(key) {
                r.stop.cancel();
                if !r.ended {
                    waiting.insert(r.task.id());
                }
            }
        }
        let mut first_error = None;
        let mut deadline = tokio::time::Instant::now() + STOP_DEADLINE;
        let mut aborted = false;
        while !waiting.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(joined)) => {
                    let task = match &joined {
                        Ok((task, _)) => *task,
                        Err(e) => e.id(),
                    };
                    if waiting.remove(&task) {
                        let result = joined
                            .map_err(|e| AppError::Task(e.to_string()))
                            .and_then(|(_, r)| r);
                        if let Err(e) = result {
                            if !aborted {
                                first_error.get_or_insert(e);
                            }
                        }
                    } else if let Some(e) = self.on_ended(joined) {
                        self.failure.get_or_insert(e);
                    }
                }
                Ok(None) => break,
                Err(_) if !aborted => {
                    tracing::warn!(
                        left = waiting.len(),
                        "sources did not stop in time; aborting them (their unacknowledged messages are redelivered)"
                    );
                    for r in self.running.values() {
                        if waiting.contains(&r.task.id()) {
                            r.task.abort();
                        }
                    }
                    aborted = true;
                    deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                }
                Err(_) => break,
            }
        }
        for key in keys {
            self.forget(key);
        }
        first_error
    }

    /// Runs until the agent is cancelled or a source fails; `reload` is SIGHUP.
    pub async fn run(mut self, reload: Arc<Notify>) -> Result<(), AppError> {
        let all: Vec<SourceKey> = specs(&self.config).into_keys().collect();
        self.start_sources(&all);
        self.certs.warn_expiry();
        let mut failure = None;
        loop {
            if let Some(e) = self.failure.take() {
                failure = Some(e);
                break;
            }
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
                Some(joined) = self.tasks.join_next_with_id() => {
                    if let Some(e) = self.on_ended(joined) {
                        failure = Some(e);
                        break;
                    }
                }
            }
        }
        let all: Vec<SourceKey> = self.running.keys().cloned().collect();
        let stopped = self.stop_sources(&all).await;
        // Dropping the last ingest sender lets the writer commit what it holds and finish.
        drop(self.ingest);
        match failure.or(stopped).or(self.failure.take()) {
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
        if plan.tables_changed {
            // Running sources take them before their next message or line.
            self.tables.send_replace(tables_of(&self.config));
        }
        // A source that ended by itself is started again, changed or not.
        let ended: Vec<SourceKey> = self
            .running
            .iter()
            .filter(|(_, r)| r.ended)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &ended {
            self.forget(key);
        }
        let running: BTreeMap<SourceKey, SourceSpec> = self
            .running
            .iter()
            .map(|(k, r)| (k.clone(), r.spec.clone()))
            .collect();
        let changes = source_changes(&running, &specs(&self.config));
        if !changes.stop.is_empty() {
            if let Some(e) = self.stop_sources(&changes.stop).await {
                tracing::warn!(error = %e, "a source ended with an error while stopping for reload");
            }
        }
        // Brokers left running keep their subscriptions: only the others' old entries count.
        let kept: BTreeSet<&SourceKey> = changes.keep.iter().collect();
        let stopped_mqtt: Vec<MqttConfig> = old
            .mqtt
            .iter()
            .filter(|m| !kept.contains(&SourceKey::Mqtt(m.name.clone())))
            .cloned()
            .collect();
        for (broker, filters) in removed_subscriptions(&stopped_mqtt, &self.config.mqtt) {
            match unsubscribe(&broker, &filters).await {
                Ok(()) => {
                    tracing::info!(broker = %broker.name, filters = ?filters, "unsubscribed topic filters removed from the configuration")
                }
                Err(e) => {
                    tracing::warn!(broker = %broker.name, filters = ?filters, error = %e, "cannot unsubscribe removed topic filters; the broker keeps delivering them until it is reachable at a later reload")
                }
            }
        }
        self.start_sources(&changes.start);
        let names = |keys: &[SourceKey]| -> Vec<String> {
            keys.iter()
                .map(|k| match k {
                    SourceKey::Mqtt(n) | SourceKey::Serial(n) => n.clone(),
                })
                .collect()
        };
        tracing::info!(
            site = %self.config.site,
            sources_restarted = !changes.stop.is_empty() || !changes.start.is_empty(),
            kept = ?names(&changes.keep),
            stopped = ?names(&changes.stop),
            started = ?names(&changes.start),
            tables_changed = plan.tables_changed,
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
    fn topics_change_the_sources_stations_change_the_tables_and_other_keys_wait_for_a_restart() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let c = config(&dir, |t| t);
        let topics = config(&dir, |t| t.replace("a/+/scan", "b/+/scan"));
        let p = plan(&c, &topics).unwrap_or_default();
        assert!(p.sources_changed && !p.tables_changed);
        let station = config(&dir, |t| {
            format!("{t}[[stations]]\ndevice = \"SC-01\"\nop = \"count\"\n")
        });
        let p = plan(&c, &station).unwrap_or_default();
        assert!(!p.sources_changed && p.tables_changed);
        let later = config(&dir, |t| {
            t.replace("agent_id = \"gw\"", "agent_id = \"gw2\"")
                .replace("https://r:8443", "https://r2:8443")
        });
        let p = plan(&c, &later).unwrap_or_default();
        assert!(!p.sources_changed && !p.tables_changed);
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

    fn serial(name: &str, device: &str) -> SerialConfig {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let c = config(&dir, |t| {
            format!("{t}[[serial]]\nname = \"{name}\"\npath = \"/dev/ttyUSB0\"\ndevice = \"{device}\"\n")
        });
        c.serial[0].clone()
    }

    fn running(specs: &[SourceSpec]) -> BTreeMap<SourceKey, SourceSpec> {
        specs
            .iter()
            .map(|s| match s {
                SourceSpec::Mqtt(m) => (SourceKey::Mqtt(m.name.clone()), s.clone()),
                SourceSpec::Serial(p) => (SourceKey::Serial(p.name.clone()), s.clone()),
            })
            .collect()
    }

    #[test]
    fn unchanged_sources_are_kept_changed_ones_restart_removed_ones_stop_and_added_ones_start() {
        let old = running(&[
            SourceSpec::Mqtt(mqtt("site", "cid", &["a/#"])),
            SourceSpec::Mqtt(mqtt("plc", "p", &["plc/#"])),
            SourceSpec::Serial(serial("dock", "SC-07")),
            SourceSpec::Serial(serial("gate", "SC-09")),
        ]);
        let new = running(&[
            SourceSpec::Mqtt(mqtt("site", "cid", &["a/#"])),
            SourceSpec::Mqtt(mqtt("plc", "p", &["plc/#", "plc2/#"])),
            SourceSpec::Serial(serial("dock", "SC-07")),
            SourceSpec::Serial(serial("yard", "SC-10")),
        ]);
        let c = source_changes(&old, &new);
        let m = |n: &str| SourceKey::Mqtt(n.into());
        let s = |n: &str| SourceKey::Serial(n.into());
        assert_eq!(c.keep, vec![m("site"), s("dock")]);
        assert_eq!(c.stop, vec![m("plc"), s("gate")]);
        assert_eq!(c.start, vec![m("plc"), s("yard")]);
        assert_eq!(
            source_changes(&old, &old),
            SourceChanges {
                keep: old.keys().cloned().collect(),
                ..SourceChanges::default()
            }
        );
    }

    #[test]
    fn a_new_password_or_port_setting_is_a_changed_source() {
        let mut with_password = mqtt("site", "cid", &["a/#"]);
        with_password.password = Some(config::Password("one".into()));
        let mut other_password = with_password.clone();
        other_password.password = Some(config::Password("two".into()));
        let c = source_changes(
            &running(&[SourceSpec::Mqtt(with_password)]),
            &running(&[SourceSpec::Mqtt(other_password)]),
        );
        assert_eq!(c.stop, vec![SourceKey::Mqtt("site".into())]);
        let mut faster = serial("dock", "SC-07");
        faster.baud = 115_200;
        let c = source_changes(
            &running(&[SourceSpec::Serial(serial("dock", "SC-07"))]),
            &running(&[SourceSpec::Serial(faster)]),
        );
        assert_eq!(c.start, vec![SourceKey::Serial("dock".into())]);
        assert!(c.keep.is_empty());
    }
}
