//! The shipped mosquitto fragment (`deploy/mosquitto/scanbridge.conf`) does what the gateway
//! needs: a persistent client's queue outlives the default 1000-message limit and a broker crash.

use std::time::{Duration, SystemTime};

use scanbridge_e2e::mosquitto::Mosquitto;
use scanbridge_e2e::process::StateDir;
use scanbridge_e2e::publisher::{drain_session, preregister_session, Publisher};

const AGENT_ID: &str = "scanbridge-agent-TEST";

async fn publish_numbered(port: u16, n: usize) -> Publisher {
    let mut publisher = Publisher::connect(port, "scanner-test")
        .await
        .expect("connect");
    for i in 0..n {
        publisher
            .publish("scanbridge/SC-01/scan", i.to_string().into_bytes())
            .await
            .expect("publish");
    }
    publisher
        .wait_all_acked(Duration::from_secs(30))
        .await
        .expect("all PUBACKs");
    publisher
}

fn assert_in_order(got: &[Vec<u8>], n: usize) {
    assert_eq!(got.len(), n);
    for (i, payload) in got.iter().enumerate() {
        assert_eq!(
            payload,
            i.to_string().as_bytes(),
            "message {i} out of order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_keeps_far_more_than_1000_messages_while_its_client_is_away() {
    let dir = StateDir::temp("broker-queue").expect("dir");
    let broker = Mosquitto::start(dir.path()).await.expect("mosquitto");
    let topics = vec!["scanbridge/+/scan".to_string()];
    preregister_session(broker.port(), AGENT_ID, &topics)
        .await
        .expect("session");

    let n = 5_000;
    let publisher = publish_numbered(broker.port(), n).await;
    publisher.disconnect().await;

    let got = drain_session(broker.port(), AGENT_ID, n, Duration::from_secs(30))
        .await
        .expect("every queued message");
    assert_in_order(&got, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_survive_a_broker_crash_once_the_short_autosave_has_run() {
    let dir = StateDir::temp("broker-crash").expect("dir");
    let mut broker = Mosquitto::start(dir.path()).await.expect("mosquitto");
    let topics = vec!["scanbridge/+/scan".to_string()];
    preregister_session(broker.port(), AGENT_ID, &topics)
        .await
        .expect("session");

    let n = 2_000;
    let publisher = publish_numbered(broker.port(), n).await;
    let acked_at = SystemTime::now();
    publisher.disconnect().await;

    // The autosave must write the store within a few seconds of the last PUBACK (the default of
    // 1800 s would not): poll the store file's mtime with a deadline, then crash the broker.
    let db = dir.path().join("mosquitto").join("mosquitto.db");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let saved = std::fs::metadata(&db)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t > acked_at + Duration::from_millis(100));
        if saved {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mosquitto did not autosave {} within 10 s of the last PUBACK",
            db.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker.process().kill_hard().expect("SIGKILL mosquitto");
    let port = broker.port();
    drop(broker);
    let broker = Mosquitto::start_on(dir.path(), port)
        .await
        .expect("restart");

    let got = drain_session(broker.port(), AGENT_ID, n, Duration::from_secs(30))
        .await
        .expect("every message queued before the crash");
    assert_in_order(&got, n);
}
