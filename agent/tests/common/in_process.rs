//! An agent assembled in process — store, group-commit writer, one MQTT source — for tests that
//! feed it from a real broker and look inside its store. Shared by the MQTT test files.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use scanbridge_agent::config::{MqttConfig, StoreConfig};
use scanbridge_agent::normalise::{Stations, Tags};
use scanbridge_agent::sources::mqtt::{MqttError, MqttSource, SUBSCRIBED};
use scanbridge_agent::sources::Health;
use scanbridge_agent::store::{Store, StoreError, Writer};
use tokio_util::sync::CancellationToken;

/// What differs between the test files' agents.
pub struct Setup {
    pub mqtt: MqttConfig,
    pub stations: Stations,
    pub tags: Option<Tags>,
    pub keep_alive: Option<Duration>,
    /// Capacity of the channel into the writer.
    pub ingest_queue: usize,
    /// How long `subscribed` and `stop` wait.
    pub wait: Duration,
}

impl Setup {
    /// One broker on 127.0.0.1:`port`, no stations or tags, the source's own keep-alive.
    pub fn new(port: u16, client_id: &str, topics: &[&str]) -> Setup {
        Setup {
            mqtt: MqttConfig {
                name: "site".into(),
                host: "127.0.0.1".into(),
                port,
                client_id: client_id.into(),
                topics: topics.iter().map(|t| t.to_string()).collect(),
                ..MqttConfig::default()
            },
            stations: Stations::default(),
            tags: None,
            keep_alive: None,
            ingest_queue: 8192,
            wait: Duration::from_secs(30),
        }
    }
}

pub struct InProcessAgent {
    pub store: Store,
    pub health: Health,
    pub cancel: CancellationToken,
    source: tokio::task::JoinHandle<Result<(), MqttError>>,
    writer: std::thread::JoinHandle<Result<(), StoreError>>,
    wait: Duration,
}

impl InProcessAgent {
    /// Opens `dir/agent.redb` (1 GiB cap) and starts the writer and the source.
    pub fn start(dir: &Path, setup: Setup) -> InProcessAgent {
        let store = Store::open(&dir.join("agent.redb"), 1 << 30).expect("open store");
        let notify = Arc::new(tokio::sync::Notify::new());
        let (mut writer, ingest) = Writer::new(
            store.clone(),
            &StoreConfig::default(),
            setup.ingest_queue,
            notify,
        );
        let (id, notices) = writer.add_source(256);
        let health = Health::default();
        let cancel = CancellationToken::new();
        let mut source = MqttSource::new(
            setup.mqtt,
            Arc::new(setup.stations),
            id,
            ingest,
            notices,
            health.clone(),
            cancel.clone(),
        );
        if let Some(tags) = setup.tags {
            source = source.with_tags(Arc::new(tags));
        }
        if let Some(k) = setup.keep_alive {
            source = source.with_keep_alive(k);
        }
        let writer = writer
            .spawn(tokio::runtime::Handle::current(), cancel.clone())
            .expect("writer");
        InProcessAgent {
            store,
            health,
            cancel,
            source: tokio::spawn(source.run()),
            writer,
            wait: setup.wait,
        }
    }

    /// Waits until the source has subscribed.
    pub async fn subscribed(&self) {
        let h = self.health.clone();
        super::eventually(self.wait, "the agent to subscribe", || {
            h.snapshot()
                .first()
                .filter(|s| s.detail == SUBSCRIBED)
                .map(|_| ())
        })
        .await;
    }

    /// Stops source and writer, asserting both end cleanly; returns the store.
    pub async fn stop(self) -> Store {
        self.cancel.cancel();
        tokio::time::timeout(self.wait, self.source)
            .await
            .expect("source stops")
            .expect("source task")
            .expect("source ok");
        let w = self.writer;
        let joined = tokio::task::spawn_blocking(move || w.join())
            .await
            .expect("join");
        assert!(matches!(joined, Ok(Ok(()))), "writer ended cleanly");
        self.store
    }
}
