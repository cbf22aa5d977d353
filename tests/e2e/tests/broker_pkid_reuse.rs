//! The broker behaviour the agent's redelivery record is built for
//! (`agent/src/store/redelivery.rs`): mosquitto allocates packet ids sequentially, so with more
//! than 65,535 messages queued for a reconnecting persistent session it sends a message under a
//! packet id whose previous message the client has not acknowledged. With the shipped fragment
//! (`max_inflight_messages 0`: no window, see its comment) the whole queue goes in flight at
//! once; with a window it happens too, only a little later (measured on 2.0.11 with a window of
//! 1,000: no PUBACK, 1,000 in flight; each PUBACK it processes lets about 1,000 more out, 10
//! PUBACKs gave 11,000 in flight).
//!
//! Measured here with a plain rumqttc subscriber: 200,000 messages queued, the session
//! reconnects, acknowledges its first few messages and then nothing, and reads until a packet
//! id comes round again. The test fails if mosquitto stops doing this: the agent would still be
//! right, but `broker_queue.rs`'s deep-queue SIGKILL test would then no longer exercise reused
//! packet ids and needs another way to.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions};
use scanbridge_e2e::mosquitto::Mosquitto;
use scanbridge_e2e::process::StateDir;
use scanbridge_e2e::publisher::{preregister_session, Publisher};

/// Messages the subscriber acknowledges before it stops acknowledging.
const ACKED: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_sends_messages_under_packet_ids_still_in_flight_after_a_deep_queue_reconnect() {
    let n: usize = 200_000;
    let dir = StateDir::temp("pkid-reuse").unwrap();
    let broker = Mosquitto::start(dir.path()).await.unwrap();
    let port = broker.port();
    preregister_session(port, "probe-sub", &["probe/#".to_string()])
        .await
        .unwrap();
    let mut publisher = Publisher::connect(port, "probe-pub").await.unwrap();
    for i in 0..n {
        publisher
            .publish("probe/a", format!("{i:09}").into_bytes())
            .await
            .unwrap();
    }
    publisher
        .wait_all_acked(Duration::from_secs(300))
        .await
        .unwrap();
    eprintln!("{n} messages queued for the session");

    let mut o = MqttOptions::new("probe-sub", "127.0.0.1", port);
    o.set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(10));
    let (client, mut el) = AsyncClient::new(o, 1024);
    // The subscriber acknowledges its first ACKED messages only: a broker holding an in-flight
    // window would stop sending after that many more; mosquitto sends on until a packet id
    // comes round again.
    let mut seen = vec![false; 1 << 16];
    let mut received = 0usize;
    let mut reused = None;
    let started = Instant::now();
    while reused.is_none() {
        let ev = match tokio::time::timeout(Duration::from_secs(5), el.poll()).await {
            Ok(ev) => ev.unwrap(),
            Err(_) => break, // the broker stopped sending: it held its window
        };
        if let Event::Incoming(Incoming::Publish(p)) = ev {
            received += 1;
            if received <= ACKED {
                client.try_ack(&p).unwrap();
                continue;
            }
            let slot = &mut seen[usize::from(p.pkid)];
            if *slot {
                reused = Some(p.pkid);
            }
            *slot = true;
        }
    }
    eprintln!(
        "{received} messages received in {:.1} s, the first {ACKED} acknowledged; first packet id \
         sent again while unacknowledged: {reused:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        reused.is_some(),
        "mosquitto ({}) stopped after {received} unacknowledged messages without reusing a \
         packet id: see this file's doc",
        broker.log_path().display()
    );
}
