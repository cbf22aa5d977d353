//! The relay's HTTPS intake over real mutual TLS: identity from the certificate, the status
//! codes of `POST /v1/batches`, dedupe, and what the store keeps.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use rustls::AlertDescription;
use scanbridge_protocol::{decode, encode, Ack, Operation};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_acked_after_commit_and_the_same_batch_again_counts_duplicates() {
    let relay = start_relay("http://127.0.0.1:9", "", 200).await;
    let client = client(&relay.bundle("WH01"));
    let body = encode(&batch(
        "WH01",
        1,
        vec![
            scan(Operation::Count, "4006381333931", "WH-STOCK-A01", 12.0),
            scan(Operation::Count, "4006381333948", "WH-STOCK-A01", 3.0),
        ],
    ))
    .expect("encode");

    let (status, ack) = post(&client, &relay.url(), body.clone()).await;
    assert_eq!(status, 200);
    let ack: Ack = decode(&ack).expect("ack");
    assert_eq!(
        ack,
        Ack {
            upto: 2,
            duplicates: 0
        }
    );
    let stats = relay.inbox.stats("WH01").expect("stats");
    assert_eq!((stats.received, stats.highest_seq), (2, Some(2)));

    let (status, ack) = post(&client, &relay.url(), body).await;
    assert_eq!(status, 200);
    assert_eq!(
        decode::<Ack>(&ack).expect("ack"),
        Ack {
            upto: 2,
            duplicates: 2
        }
    );
    assert_eq!(relay.inbox.stats("WH01").expect("stats").duplicates, 2);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlapping_batch_stores_only_the_new_events() {
    let relay = start_relay("http://127.0.0.1:9", "", 200).await;
    let client = client(&relay.bundle("WH01"));
    let count = |q| scan(Operation::Count, "4006381333931", "WH-STOCK-A01", q);
    let first = encode(&batch("WH01", 1, vec![count(1.0), count(2.0)])).expect("encode");
    let second = encode(&batch("WH01", 2, vec![count(2.0), count(3.0)])).expect("encode");
    assert_eq!(post(&client, &relay.url(), first).await.0, 200);
    let (status, ack) = post(&client, &relay.url(), second).await;
    assert_eq!(status, 200);
    assert_eq!(
        decode::<Ack>(&ack).expect("ack"),
        Ack {
            upto: 3,
            duplicates: 1
        }
    );
    assert_eq!(relay.inbox.stats("WH01").expect("stats").received, 3);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_for_another_site_than_the_certificate_is_forbidden() {
    let relay = start_relay("http://127.0.0.1:9", "", 200).await;
    let client = client(&relay.bundle("WH01"));
    let body = encode(&batch(
        "WH02",
        1,
        vec![scan(Operation::Count, "1", "L", 1.0)],
    ))
    .expect("encode");
    let (status, text) = post(&client, &relay.url(), body).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&text));
    assert_eq!(relay.inbox.stats("WH02").expect("stats").received, 0);
    assert_eq!(relay.inbox.stats("WH01").expect("stats").received, 0);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_body_is_a_bad_request_naming_the_decode_error() {
    let relay = start_relay("http://127.0.0.1:9", "", 200).await;
    let client = client(&relay.bundle("WH01"));
    let (status, text) = post(
        &client,
        &relay.url(),
        b"hello, this is not a batch".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&text).contains("bad magic"),
        "{}",
        String::from_utf8_lossy(&text)
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_are_not_consecutive_are_a_bad_request() {
    let relay = start_relay("http://127.0.0.1:9", "", 200).await;
    let client = client(&relay.bundle("WH01"));
    let mut b = batch("WH01", 1, vec![scan(Operation::Count, "1", "L", 1.0); 2]);
    b.events[1].seq = 5;
    let (status, _) = post(&client, &relay.url(), encode(&b).expect("encode")).await;
    assert_eq!(status, 400);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_and_too_many_events_are_too_large() {
    let relay = start_relay(
        "http://127.0.0.1:9",
        "max_body_bytes = 4096\nmax_batch_events = 3",
        200,
    )
    .await;
    let client = client(&relay.bundle("WH01"));
    let (status, _) = post(&client, &relay.url(), vec![0u8; 64 * 1024]).await;
    assert_eq!(status, 413);
    let b = batch("WH01", 1, vec![scan(Operation::Count, "1", "L", 1.0); 4]);
    let (status, _) = post(&client, &relay.url(), encode(&b).expect("encode")).await;
    assert_eq!(status, 413);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_fails_the_handshake_with_certificate_required() {
    let relay = start_relay("http://127.0.0.1:9", "", 200).await;
    let config = raw_client_config(&relay.ca_dir().join("ca.pem"), None);
    let error = tls_failure(relay.addr, config).await;
    assert_eq!(
        error,
        Some(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired
        ))
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_a_foreign_ca_is_rejected_as_unknown_ca() {
    let relay = start_relay("http://127.0.0.1:9", "", 200).await;
    let foreign = relay.dir.path().join("foreign-ca");
    scanbridge_relay::ca::init(&foreign, &["localhost".into()], &[]).expect("foreign ca");
    let bundle = relay.dir.path().join("foreign-wh01");
    scanbridge_relay::ca::issue(&foreign, "WH01", &bundle, 30).expect("issue");
    let config = raw_client_config(
        &relay.ca_dir().join("ca.pem"),
        Some((&bundle.join("site.pem"), &bundle.join("site.key"))),
    );
    let error = tls_failure(relay.addr, config).await;
    assert_eq!(
        error,
        Some(rustls::Error::AlertReceived(AlertDescription::UnknownCA))
    );
    // The relay keeps serving after a failed handshake.
    let good = client(&relay.bundle("WH01"));
    let body = encode(&batch("WH01", 1, vec![])).expect("encode");
    assert_eq!(post(&good, &relay.url(), body).await.0, 200);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_the_site_ca_without_a_site_uri_is_refused_with_access_denied() {
    let relay = start_relay("http://127.0.0.1:9", "", 200).await;
    let ca_dir = relay.ca_dir();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join("ca.key")).expect("ca key"))
            .expect("key");
    let ca_cert = rcgen::CertificateParams::from_ca_cert_pem(
        &std::fs::read_to_string(ca_dir.join("ca.pem")).expect("ca pem"),
    )
    .expect("params")
    .self_signed(&ca_key)
    .expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["gateway.example".to_string()]).expect("p");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca_cert, &ca_key).expect("sign");
    let dir = relay.dir.path();
    std::fs::write(dir.join("nosite.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("nosite.key"), key.serialize_pem()).expect("write");
    let config = raw_client_config(
        &ca_dir.join("ca.pem"),
        Some((&dir.join("nosite.pem"), &dir.join("nosite.key"))),
    );
    let error = tls_failure(relay.addr, config).await;
    assert_eq!(
        error,
        Some(rustls::Error::AlertReceived(AlertDescription::AccessDenied))
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_keys_written_by_the_ca_are_readable_only_by_their_owner() {
    let relay = start_relay("http://127.0.0.1:9", "", 200).await;
    let bundle = relay.bundle("WH01");
    for key in [
        relay.ca_dir().join("ca.key"),
        relay.ca_dir().join("server.key"),
        bundle.join("site.key"),
    ] {
        let mode = std::fs::metadata(&key).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantined_payloads_and_unmapped_operations_are_kept_and_counted_without_odoo() {
    let relay = start_relay("http://127.0.0.1:9", "", 200).await;
    let client = client(&relay.bundle("WH01"));
    let body = encode(&batch(
        "WH01",
        1,
        vec![
            quarantined(b"\xff\xfe not json", "payload is not UTF-8"),
            scanbridge_protocol::EventBody::Reading(scanbridge_protocol::Reading {
                tag: "door3.open".into(),
                value: 1.0,
                unit: None,
            }),
        ],
    ))
    .expect("encode");
    assert_eq!(post(&client, &relay.url(), body).await.0, 200);
    let quarantine = relay.inbox.quarantine("WH01").expect("quarantine");
    assert_eq!(quarantine.len(), 1);
    assert_eq!(quarantine[0].raw, b"\xff\xfe not json");
    let inbox = relay.inbox.clone();
    eventually(Duration::from_secs(10), "both events settled", || {
        inbox.stats("WH01").map(|s| s.cursor == 3).unwrap_or(false)
    })
    .await;
    let stats = relay.inbox.stats("WH01").expect("stats");
    assert_eq!((stats.quarantined, stats.dead_lettered), (1, 1));
    let dead = relay.inbox.dead_letters("WH01").expect("dead letters");
    assert_eq!(dead[0].seq, 2);
    assert!(
        dead[0]
            .reason
            .starts_with("no mapping configured for PLC tag door3.open"),
        "{}",
        dead[0].reason
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_events_survive_a_restart_and_are_still_deduplicated() {
    let relay = start_relay("http://127.0.0.1:9", "", 200).await;
    let bundle = relay.bundle("WH01");
    let body = encode(&batch(
        "WH01",
        1,
        vec![scan(Operation::Count, "4006381333931", "WH-STOCK-A01", 1.0); 3],
    ))
    .expect("encode");
    assert_eq!(
        post(&client(&bundle), &relay.url(), body.clone()).await.0,
        200
    );
    let relay = relay.restart().await;
    let (status, ack) = post(&client(&bundle), &relay.url(), body).await;
    assert_eq!(status, 200);
    assert_eq!(
        decode::<Ack>(&ack).expect("ack"),
        Ack {
            upto: 3,
            duplicates: 3
        }
    );
    assert_eq!(relay.inbox.stats("WH01").expect("stats").received, 3);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_without_events_stores_the_agent_status() {
    let relay = start_relay("http://127.0.0.1:9", "", 200).await;
    let mut heartbeat = batch("WH01", 0, vec![]);
    heartbeat.status = Some(scanbridge_protocol::AgentStatus {
        version: "0.1.0".into(),
        backlog_events: 0,
        backlog_bytes: 0,
        oldest_pending_age_ms: None,
        disk_used_bytes: 4096,
        disk_cap_bytes: 1 << 30,
        quarantine_count: 2,
        ingest_paused: false,
        sources: vec![],
        cert_not_after: None,
        clock: 1_700_000_000_000_000,
    });
    let (status, ack) = post(
        &client(&relay.bundle("WH01")),
        &relay.url(),
        encode(&heartbeat).expect("encode"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        decode::<Ack>(&ack).expect("ack"),
        Ack {
            upto: 0,
            duplicates: 0
        }
    );
    let (_, agent, stored) = relay
        .inbox
        .agent_status("WH01")
        .expect("status")
        .expect("present");
    assert_eq!(agent, "gw-wh01");
    assert_eq!(stored, heartbeat.status);
    relay.stop().await;
}
