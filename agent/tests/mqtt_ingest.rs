//! The MQTT source and the store against a real mosquitto broker: every QoS 1 message published
//! ends up committed, with consecutive seqs, in publish order.

mod common;

use std::time::Duration;

use scanbridge_protocol::EventBody;

use common::in_process::{InProcessAgent as Agent, Setup};

fn start_agent(port: u16, dir: &std::path::Path) -> Agent {
    start_agent_with(port, dir, Duration::from_secs(10))
}

fn start_agent_with(port: u16, dir: &std::path::Path, keep_alive: Duration) -> Agent {
    let mut setup = Setup::new(port, "scanbridge-agent-test", &["scanbridge/+/scan"]);
    setup.keep_alive = Some(keep_alive);
    setup.wait = Duration::from_secs(20);
    Agent::start(dir, setup)
}

fn payload(i: usize) -> Vec<u8> {
    format!(r#"{{"code":"4006381333931","qty":{i}}}"#).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_qos1_message_published_is_committed_once_with_consecutive_seqs_in_order() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_agent(broker.port, dir.path());
    agent.subscribed().await;

    const N: usize = 5000;
    common::publish_all(
        broker.port,
        "publisher",
        "scanbridge/SC-01/scan",
        (0..N).map(payload).collect(),
    )
    .await;
    let store = agent.store.clone();
    common::eventually(Duration::from_secs(60), "all messages committed", || {
        (store.stats().backlog_events >= N as u64).then_some(())
    })
    .await;
    let store = agent.stop().await;

    let events = store.read_oldest_blocking(usize::MAX).expect("read");
    assert_eq!(events.len(), N, "no message lost, none stored twice");
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev.seq, i as u64 + 1, "seqs are consecutive from 1");
        match &ev.body {
            EventBody::Scan(s) => {
                assert_eq!(s.code, "4006381333931");
                assert_eq!(s.qty, Some(i as f64), "publish order kept");
            }
            other => panic!("event {i} is not a scan: {other:?}"),
        }
        assert_eq!(ev.device, "SC-01", "device from the topic");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_starts_while_the_broker_is_down_and_ingests_once_it_comes_up() {
    let port = common::free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_agent(port, dir.path());
    let h = agent.health.clone();
    common::eventually(
        Duration::from_secs(10),
        "the source to report the broker down",
        || {
            h.snapshot()
                .first()
                .filter(|s| !s.up && s.detail != "starting")
                .map(|_| ())
        },
    )
    .await;
    let broker = common::Broker::start_on(port);
    agent.subscribed().await;
    common::publish_all(
        broker.port,
        "publisher",
        "scanbridge/DOCK-1/scan",
        vec![b"not json".to_vec(), payload(1)],
    )
    .await;
    let store = agent.store.clone();
    common::eventually(Duration::from_secs(30), "both messages committed", || {
        (store.stats().backlog_events == 2).then_some(())
    })
    .await;
    let store = agent.stop().await;
    assert_eq!(
        store.stats().quarantine_count,
        1,
        "the bad payload is quarantined, not dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_acknowledged_before_a_restart_are_not_redelivered() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_agent(broker.port, dir.path());
    agent.subscribed().await;
    common::publish_all(
        broker.port,
        "publisher",
        "scanbridge/SC-01/scan",
        (0..100).map(payload).collect(),
    )
    .await;
    let store = agent.store.clone();
    common::eventually(Duration::from_secs(30), "100 committed", || {
        (store.stats().backlog_events == 100).then_some(())
    })
    .await;
    drop(store);
    agent.stop().await;

    // Same client id, persistent session: only the marker published while it was down arrives.
    common::publish_all(
        broker.port,
        "publisher",
        "scanbridge/SC-01/scan",
        vec![payload(100)],
    )
    .await;
    let agent = start_agent(broker.port, dir.path());
    let store = agent.store.clone();
    common::eventually(Duration::from_secs(30), "the queued marker", || {
        (store.stats().backlog_events == 101).then_some(())
    })
    .await;
    // A second marker after the first proves nothing older is still in flight.
    common::publish_all(
        broker.port,
        "publisher",
        "scanbridge/SC-01/scan",
        vec![payload(101)],
    )
    .await;
    common::eventually(Duration::from_secs(30), "the second marker", || {
        (store.stats().backlog_events >= 102).then_some(())
    })
    .await;
    let store = agent.stop().await;
    let events = store.read_oldest_blocking(usize::MAX).expect("read");
    assert_eq!(
        events.len(),
        102,
        "nothing acknowledged before the restart came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reconnects_and_resubscribes_after_the_broker_restarts() {
    let broker = common::Broker::start();
    let port = broker.port;
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_agent(port, dir.path());
    agent.subscribed().await;
    common::publish_all(port, "publisher", "scanbridge/SC-01/scan", vec![payload(0)]).await;
    let store = agent.store.clone();
    common::eventually(Duration::from_secs(30), "the first message", || {
        (store.stats().backlog_events == 1).then_some(())
    })
    .await;

    drop(broker); // killed: without persistence it forgets the session and the subscription
    let h = agent.health.clone();
    common::eventually(
        Duration::from_secs(30),
        "the source to notice the broker is gone",
        || h.snapshot().first().filter(|s| !s.up).map(|_| ()),
    )
    .await;
    let _broker = common::Broker::start_on(port);
    agent.subscribed().await;
    common::publish_all(port, "publisher", "scanbridge/SC-01/scan", vec![payload(1)]).await;
    common::eventually(
        Duration::from_secs(30),
        "the message published after the restart",
        || (store.stats().backlog_events == 2).then_some(()),
    )
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_rows_are_retired_once_a_ping_round_trip_confirms_the_pubacks() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_agent_with(broker.port, dir.path(), Duration::from_secs(1));
    agent.subscribed().await;
    common::publish_all(
        broker.port,
        "publisher",
        "scanbridge/SC-01/scan",
        (0..50).map(payload).collect(),
    )
    .await;
    let store = agent.store.clone();
    common::eventually(Duration::from_secs(30), "50 committed", || {
        (store.stats().backlog_events == 50).then_some(())
    })
    .await;
    assert_eq!(
        store.mqtt_inflight_len().expect("rows"),
        50,
        "one dedupe row per unconfirmed message"
    );
    // Rows are retired by the first commit after a PINGRESP confirmed their PUBACKs (1 s
    // keep-alive here): keep publishing one message at a time until that happens.
    let mut next = 50;
    let retired = common::eventually_async(Duration::from_secs(30), "dedupe rows retired", || {
        next += 1;
        let (port, store) = (broker.port, store.clone());
        let i = next;
        async move {
            common::publish_all(port, "publisher", "scanbridge/SC-01/scan", vec![payload(i)]).await;
            let rows = store.mqtt_inflight_len().expect("rows");
            // All 50 original rows gone: only rows of the markers published since can remain.
            (rows <= (i - 50) as u64).then_some(rows)
        }
    })
    .await;
    assert!(retired <= (next - 50) as u64);
    agent.stop().await;
}
