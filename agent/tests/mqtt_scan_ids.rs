//! Scan ids against a real mosquitto broker: a scan published twice with the same `id` (what a
//! QoS 1 scanner does when the broker dies before its PUBACK) is stored once, both copies are
//! acknowledged to the broker (none comes back on the agent's persistent session), the copy is
//! counted in `/metrics`, and the id is still known after the agent restarts.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event as MqttEvent, Incoming, MqttOptions};
use scanbridge_agent::local_api::metrics::AgentCollector;
use scanbridge_agent::status::StatusSource;
use scanbridge_protocol::EventBody;

const CLIENT_ID: &str = "scanbridge-agent-scan-ids";
const TOPIC: &str = "scanbridge/SC-01/scan";

use common::in_process::{InProcessAgent as Agent, Setup};

fn start_agent(port: u16, dir: &std::path::Path) -> Agent {
    let mut setup = Setup::new(port, CLIENT_ID, &["scanbridge/+/scan"]);
    setup.ingest_queue = 1024;
    Agent::start(dir, setup)
}

impl Agent {
    async fn committed(&self, events: u64, duplicates: u64) {
        let s = self.store.clone();
        common::eventually(
            Duration::from_secs(30),
            &format!("{events} events stored and {duplicates} copies recognised"),
            || {
                (s.stats().backlog_events == events && s.duplicates_suppressed() == duplicates)
                    .then_some(())
            },
        )
        .await;
    }

    fn metrics(&self) -> String {
        let status = StatusSource::new(self.store.clone(), self.health.clone(), None);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(AgentCollector::new(status)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }
}

/// Connects with the agent's client id and persistent session while the agent is stopped and
/// returns the payloads the broker hands over, up to and including `marker` (published while
/// the agent was down, so queued after anything the broker still holds unacknowledged).
async fn session_payloads_until(port: u16, marker: &[u8]) -> Vec<Vec<u8>> {
    let mut opts = MqttOptions::new(CLIENT_ID, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false);
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "the marker never arrived: {seen:?}"
        );
        match tokio::time::timeout(Duration::from_secs(20), eventloop.poll()).await {
            Ok(Ok(MqttEvent::Incoming(Incoming::Publish(p)))) => {
                let last = p.payload.as_ref() == marker;
                seen.push(p.payload.to_vec());
                if last {
                    break;
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("session check connection failed: {e}"),
            Err(_) => panic!("session check stalled: {seen:?}"),
        }
    }
    // Let the auto-PUBACK of the marker leave before disconnecting.
    let _ = client.disconnect().await;
    for _ in 0..4 {
        match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    seen
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_published_twice_with_one_id_is_stored_once_and_both_copies_are_acknowledged() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(broker.port, dir.path());
    agent.subscribed().await;
    let copy = br#"{"code":"4006381333931","qty":3,"id":"SC-01-000001"}"#.to_vec();
    common::publish_all(
        broker.port,
        "scanner",
        TOPIC,
        vec![
            copy.clone(),
            copy.clone(),
            // The same label scanned again: another id, stored.
            br#"{"code":"4006381333931","qty":3,"id":"SC-01-000002"}"#.to_vec(),
            // No id: two scans, both stored (at least once, as before).
            br#"{"code":"4006381333931"}"#.to_vec(),
            br#"{"code":"4006381333931"}"#.to_vec(),
            // The same id from another device: its own scan.
            br#"{"code":"4006381333931","device":"SC-02","id":"SC-01-000001"}"#.to_vec(),
            // An id with a control character: quarantined with the reason.
            b"{\"code\":\"4006381333931\",\"id\":\"a\\u0007b\"}".to_vec(),
        ],
    )
    .await;
    agent.committed(6, 1).await;
    let metrics = agent.metrics();
    assert_eq!(
        sample(&metrics, "scanbridge_agent_duplicate_scans_total"),
        Some(1.0),
        "{metrics}"
    );
    let store = agent.stop().await;
    let events = store.read_oldest_blocking(100).unwrap();
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match &e.body {
            EventBody::Scan(s) => format!("{} {} {:?}", e.device, s.code, s.qty),
            EventBody::Quarantined(q) => format!("quarantined: {}", q.reason),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds.len(), 6, "{kinds:#?}");
    assert_eq!(kinds[0], "SC-01 4006381333931 Some(3.0)");
    assert_eq!(kinds[1], "SC-01 4006381333931 Some(3.0)");
    assert_eq!(kinds[4], "SC-02 4006381333931 None");
    assert!(
        kinds[5].contains("field `id` contains control characters"),
        "{kinds:#?}"
    );
    drop(store);

    // Every message, the copy included, was PUBACKed by the agent: on its persistent session
    // only the marker published while it is down is waiting.
    let marker = br#"{"code":"MARKER"}"#.to_vec();
    common::publish_all(broker.port, "scanner", TOPIC, vec![marker.clone()]).await;
    let waiting = session_payloads_until(broker.port, &marker).await;
    assert_eq!(waiting, vec![marker], "unacknowledged messages came back");

    // After a restart the id is still known: a third copy is acknowledged, not stored.
    let agent = start_agent(broker.port, dir.path());
    agent.subscribed().await;
    common::publish_all(
        broker.port,
        "scanner",
        TOPIC,
        vec![
            copy,
            br#"{"code":"4006381333931","id":"SC-01-000003"}"#.to_vec(),
        ],
    )
    .await;
    agent.committed(7, 1).await;
    agent.stop().await;
}
