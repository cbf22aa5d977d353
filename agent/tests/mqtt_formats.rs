//! Payload formats and quarantine against a real mosquitto broker: JSON, plain text and Kepware
//! tag messages on their topics, with bad messages of every kind interleaved between good ones.
//! Every good message is committed in publish order, every bad one is quarantined in its place
//! with its raw bytes and reason, counted in status, and nothing blocks what comes after it.
//! Also: the events of one tag message commit in one transaction, and its redelivery stores
//! none of them again.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event as MqttEvent, Incoming, MqttOptions, QoS};
use scanbridge_agent::config::{FormatRule, MqttConfig, PayloadFormat, Station, TagMapping};
use scanbridge_agent::normalise::{Stations, Tags};
use scanbridge_agent::status::StatusSource;
use scanbridge_agent::store::writer::{commit_batch, message_hash};
use scanbridge_agent::store::{IngestItem, MqttMark, Store};
use scanbridge_protocol::{Event, EventBody, Operation, Source, Symbology};

use common::in_process::{InProcessAgent as Agent, Setup};

fn start_agent(port: u16, dir: &std::path::Path) -> Agent {
    let stations = Stations::new(&[Station {
        device: "SC-01".into(),
        op: Operation::Count,
        location: Some("WH-STOCK-A01".into()),
    }]);
    let tags = Tags::new(&[TagMapping {
        id: "Channel1.Scale1.Weight".into(),
        tag: "scale1.weight".into(),
        unit: Some("kg".into()),
        device: Some("SCALE-1".into()),
    }]);
    let mut setup = Setup::new(port, "scanbridge-agent-formats", &[]);
    setup.mqtt = MqttConfig {
        name: "site".into(),
        host: "127.0.0.1".into(),
        port,
        client_id: "scanbridge-agent-formats".into(),
        topics: vec![
            "scanbridge/+/scan".into(),
            "scanners/+/raw".into(),
            "plc/+/tags".into(),
        ],
        formats: vec![
            FormatRule {
                filter: "plc/+/tags".into(),
                format: PayloadFormat::Kepware,
                device_level: 1,
            },
            FormatRule {
                filter: "scanners/+/raw".into(),
                format: PayloadFormat::Text,
                device_level: 1,
            },
        ],
        ..MqttConfig::default()
    };
    setup.stations = stations;
    setup.tags = Some(tags);
    Agent::start(dir, setup)
}

/// Publishes `(topic, payload)` pairs with QoS 1 in order from one client; returns once the
/// broker acknowledged all of them.
async fn publish_in_order(port: u16, messages: Vec<(String, Vec<u8>)>) {
    let mut opts = MqttOptions::new("formats-publisher", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let n = messages.len();
    let sender = tokio::spawn(async move {
        for (topic, payload) in messages {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .unwrap();
        }
        client
    });
    let mut acked = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    while acked < n {
        assert!(Instant::now() < deadline, "only {acked}/{n} PUBACKs");
        match tokio::time::timeout(Duration::from_secs(20), eventloop.poll()).await {
            Ok(Ok(MqttEvent::Incoming(Incoming::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("publisher connection failed: {e}"),
            Err(_) => panic!("publisher stalled at {acked}/{n} PUBACKs"),
        }
    }
    let client = sender.await.unwrap();
    let _ = client.disconnect().await;
}

/// What one committed event must look like.
#[derive(Debug)]
enum Expect {
    Scan {
        code: &'static str,
        device: &'static str,
        symbology: Symbology,
        op: Option<Operation>,
        gtin: Option<&'static str>,
    },
    Reading {
        tag: &'static str,
        value: f64,
        device: &'static str,
    },
    Quarantined {
        raw: Vec<u8>,
        reason: &'static str,
    },
}

/// One block of messages, good and bad interleaved, and the events each must become.
fn block(i: usize) -> (Vec<(String, Vec<u8>)>, Vec<Expect>) {
    let t = |s: &str| s.to_string();
    let kepware = format!(
        r#"{{"timestamp":1700000000000,"values":[
            {{"id":"Channel1.Scale1.Weight","v":{i}.5,"q":true,"t":1700000000000}},
            {{"id":"Channel1.Nope","v":1,"q":true,"t":1700000000000}},
            {{"id":"Channel1.Scale1.Weight","v":{i},"q":true,"t":1700000000001}}]}}"#
    );
    let messages = vec![
        (
            t("scanbridge/SC-01/scan"),
            br#"{"code":"4006381333931"}"#.to_vec(),
        ),
        (t("scanbridge/SC-01/scan"), b"{code: broken".to_vec()),
        (t("scanners/SC-02/raw"), b"]E04006381333931\r\n".to_vec()),
        (t("scanners/SC-02/raw"), vec![0xff, 0xfe, 0x41]),
        (t("plc/line1/tags"), kepware.into_bytes()),
        (
            t("scanbridge/SC-01/scan"),
            br#"{"code":"]C10109501101530004"}"#.to_vec(),
        ),
        (
            t("scanbridge/SC-01/scan"),
            br#"{"code":"]d201095011015300031714070410AB-123","op":"pick"}"#.to_vec(),
        ),
        (t("plc/line1/tags"), b"{}".to_vec()),
        (t("scanners/SC-01/raw"), b"ABC-1\n".to_vec()),
    ];
    let expect = vec![
        Expect::Scan {
            code: "4006381333931",
            device: "SC-01",
            symbology: Symbology::Unknown,
            op: Some(Operation::Count),
            gtin: None,
        },
        Expect::Quarantined {
            raw: b"{code: broken".to_vec(),
            reason: "not JSON",
        },
        Expect::Scan {
            code: "4006381333931",
            device: "SC-02",
            symbology: Symbology::Ean13,
            op: None,
            gtin: None,
        },
        Expect::Quarantined {
            raw: vec![0xff, 0xfe, 0x41],
            reason: "not UTF-8",
        },
        Expect::Reading {
            tag: "scale1.weight",
            value: i as f64 + 0.5,
            device: "SCALE-1",
        },
        Expect::Quarantined {
            raw: br#"{"id":"Channel1.Nope","v":1,"q":true,"t":1700000000000}"#.to_vec(),
            reason: "not in the agent's [[tags]] table",
        },
        Expect::Reading {
            tag: "scale1.weight",
            value: i as f64,
            device: "SCALE-1",
        },
        Expect::Quarantined {
            raw: br#"{"code":"]C10109501101530004"}"#.to_vec(),
            reason: "AI (01) GTIN 09501101530004 has a wrong check digit",
        },
        Expect::Scan {
            code: "01095011015300031714070410AB-123",
            device: "SC-01",
            symbology: Symbology::Gs1DataMatrix,
            op: Some(Operation::Pick),
            gtin: Some("09501101530003"),
        },
        Expect::Quarantined {
            raw: b"{}".to_vec(),
            reason: "missing field `values`",
        },
        Expect::Scan {
            code: "ABC-1",
            device: "SC-01",
            symbology: Symbology::Unknown,
            op: Some(Operation::Count),
            gtin: None,
        },
    ];
    (messages, expect)
}

fn check(ev: &Event, want: &Expect, at: usize) {
    match (want, &ev.body) {
        (
            Expect::Scan {
                code,
                device,
                symbology,
                op,
                gtin,
            },
            EventBody::Scan(s),
        ) => {
            assert_eq!(s.code, *code, "event {at}");
            assert_eq!(ev.device, *device, "event {at}");
            assert_eq!(&s.symbology, symbology, "event {at}");
            assert_eq!(s.op, *op, "event {at}");
            assert_eq!(
                s.gs1.as_ref().and_then(|g| g.gtin.as_deref()),
                *gtin,
                "event {at}"
            );
        }
        (Expect::Reading { tag, value, device }, EventBody::Reading(r)) => {
            assert_eq!((r.tag.as_str(), r.value), (*tag, *value), "event {at}");
            assert_eq!(r.unit.as_deref(), Some("kg"), "event {at}");
            assert_eq!(ev.device, *device, "event {at}");
        }
        (Expect::Quarantined { raw, reason }, EventBody::Quarantined(q)) => {
            assert_eq!(&q.raw, raw, "event {at}: raw bytes kept");
            assert!(q.reason.contains(reason), "event {at}: {:?}", q.reason);
        }
        (want, got) => panic!("event {at}: expected {want:?}, got {got:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_interleaved_with_good_ones_are_quarantined_in_place_and_block_nothing() {
    let broker = common::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(broker.port, dir.path());
    agent.subscribed().await;

    const BLOCKS: usize = 40;
    let mut messages = Vec::new();
    let mut expected = Vec::new();
    for i in 0..BLOCKS {
        let (m, e) = block(i);
        messages.extend(m);
        expected.extend(e);
    }
    let bad = expected
        .iter()
        .filter(|e| matches!(e, Expect::Quarantined { .. }))
        .count() as u64;
    publish_in_order(broker.port, messages).await;
    let store = agent.store.clone();
    common::eventually(Duration::from_secs(60), "every event committed", || {
        (store.stats().backlog_events >= expected.len() as u64).then_some(())
    })
    .await;
    let status = StatusSource::new(agent.store.clone(), agent.health.clone(), None).build();
    assert_eq!(
        status.quarantine_count, bad,
        "each bad one counted in status"
    );
    let store = agent.stop().await;

    let events = store.read_oldest_blocking(usize::MAX).unwrap();
    assert_eq!(events.len(), expected.len(), "nothing lost, nothing extra");
    for (i, (ev, want)) in events.iter().zip(&expected).enumerate() {
        assert_eq!(ev.seq, events[0].seq + i as u64, "consecutive seqs");
        check(ev, want, i);
        let Source::Mqtt { broker, topic } = &ev.source else {
            panic!("event {i} is not from MQTT");
        };
        assert_eq!(broker, "site");
        assert!(!topic.is_empty());
        assert!(ev.received_at > 0);
    }
}

fn reading_event(value: f64) -> Event {
    Event {
        seq: 0,
        captured_at: 1,
        received_at: 1,
        source: Source::Mqtt {
            broker: "site".into(),
            topic: "plc/line1/tags".into(),
        },
        device: "SCALE-1".into(),
        body: EventBody::Reading(scanbridge_protocol::Reading {
            tag: "scale1.weight".into(),
            value,
            unit: Some("kg".into()),
        }),
    }
}

fn tag_message(pkid: u16, dup: bool) -> IngestItem {
    IngestItem {
        source: 0,
        token: u64::from(pkid),
        event: reading_event(1.0),
        mqtt: Some(MqttMark {
            broker: "site".into(),
            pkid,
            hash: message_hash("plc/line1/tags", b"three values"),
            dup,
            retire: Vec::new(),
            more_events: vec![reading_event(2.0), reading_event(3.0)],
        }),
        scan_id: None,
    }
}

#[test]
fn the_events_of_one_message_commit_in_one_transaction_and_its_redelivery_stores_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("agent.redb"), 1 << 30).unwrap();
    let mut batch = vec![tag_message(7, false)];
    let report = commit_batch(&store, &mut batch).unwrap();
    assert_eq!(report.stored, 3);
    assert_eq!((report.first_seq, report.last_seq), (Some(1), Some(3)));
    let events = store.read_oldest_blocking(usize::MAX).unwrap();
    let values: Vec<(u64, f64)> = events
        .iter()
        .map(|e| match &e.body {
            EventBody::Reading(r) => (e.seq, r.value),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(values, vec![(1, 1.0), (2, 2.0), (3, 3.0)]);

    // The agent died before the PUBACK: the broker redelivers with DUP and the same packet id.
    let mut again = vec![tag_message(7, true)];
    let report = commit_batch(&store, &mut again).unwrap();
    assert_eq!((report.stored, report.already_committed), (0, 1));
    assert_eq!(store.stats().backlog_events, 3, "no value stored twice");
}
