//! The store identity check at intake (`inbox/mod.rs`, "Store identity"): a gateway whose event
//! store restarted its numbering (a replaced box, a deleted store file) is refused with 409
//! instead of having its new events acknowledged as duplicates and deleted by the agent.

mod common;

use common::*;
use scanbridge_protocol::{decode, encode, Ack, Operation};

const STORE_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const STORE_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn counts(first_seq: u64, n: usize) -> Vec<u8> {
    let bodies = (0..n)
        .map(|i| scan(Operation::Count, "4006381333931", "WH-STOCK-A01", i as f64))
        .collect();
    encode(&batch("WH01", first_seq, bodies)).expect("encode")
}

/// Posts `body` as the agent store `store` (no header when `None`).
async fn post_from(
    client: &reqwest::Client,
    url: &str,
    store: Option<&str>,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let mut request = client
        .post(url)
        .header("content-type", "application/octet-stream");
    if let Some(id) = store {
        request = request.header("scanbridge-store-id", id);
    }
    let response = request.body(body).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("body").to_vec())
}

fn ack(body: &[u8]) -> Ack {
    decode(body).expect("ack")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_store_whose_seqs_collide_is_refused_with_409_and_a_renumbered_one_is_accepted() {
    let relay = start_relay("http://127.0.0.1:9", "", 200).await;
    let client = client(&relay.bundle("WH01"));
    let url = relay.url();

    // Store A sends seqs 1..=5.
    let a_batch = counts(1, 5);
    let (status, body) = post_from(&client, &url, Some(STORE_A), a_batch.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        ack(&body),
        Ack {
            upto: 5,
            duplicates: 0
        }
    );
    let stats = relay.inbox.stats("WH01").expect("stats");
    assert_eq!(stats.current_store, Some((STORE_A.to_string(), 1)));

    // A resend of A's batch while A is current: duplicates, as always.
    let (status, body) = post_from(&client, &url, Some(STORE_A), a_batch).await;
    assert_eq!(status, 200);
    assert_eq!(
        ack(&body),
        Ack {
            upto: 5,
            duplicates: 5
        }
    );

    // A replaced box (store B) starts again at 1: refused, nothing stored, counted.
    let (status, body) = post_from(&client, &url, Some(STORE_B), counts(1, 3)).await;
    assert_eq!(status, 409);
    let text = String::from_utf8(body).expect("utf-8");
    assert!(
        text.contains(
            "scanbridge-agent store renumber --config /etc/scanbridge/agent.toml --after 5"
        ),
        "{text}"
    );
    assert!(text.contains("nothing was stored"), "{text}");
    assert!(text.contains("holds seqs up to 5"), "{text}");
    let stats = relay.inbox.stats("WH01").expect("stats");
    assert_eq!(
        (
            stats.received,
            stats.duplicates,
            stats.store_conflicts,
            stats.highest_seq
        ),
        (5, 5, 1, Some(5))
    );
    assert_eq!(stats.current_store, Some((STORE_A.to_string(), 1)));
    assert_eq!(
        relay
            .inbox
            .pending("WH01", 100)
            .expect("pending")
            .events
            .len(),
        5,
        "the refused batch stored nothing"
    );
    // Rendered from the store's durable counters, as `/metrics` does (so it survives a restart).
    let sites = scanbridge_relay::admin::status::load_all(
        &relay.inbox,
        scanbridge_relay::now_micros(),
        &scanbridge_relay::config::StatusConfig::default(),
    )
    .expect("site statuses");
    let metrics = scanbridge_relay::admin::metrics::render(&sites).expect("metrics");
    assert!(
        metrics.contains("scanbridge_store_conflicts_total{site=\"WH01\"} 1"),
        "{metrics}"
    );
    // The site's status (JSON API, fleet page) shows the open conflict and the fix.
    let conflict = sites[0]
        .store_conflict
        .as_ref()
        .expect("an open store conflict");
    assert_eq!(
        (
            conflict.store_id.as_str(),
            conflict.first_seq,
            conflict.relay_highest_seq
        ),
        (STORE_B, 1, 5)
    );
    assert!(conflict.fix.contains("--after 5"), "{}", conflict.fix);
    let page = scanbridge_relay::admin::page::fleet_page(&sites, "now");
    assert!(page.contains("store conflict: renumber"), "{page}");

    // The same box after `store renumber --after 5`: its seqs continue after the relay's.
    let (status, body) = post_from(&client, &url, Some(STORE_B), counts(6, 3)).await;
    assert_eq!(status, 200);
    assert_eq!(
        ack(&body),
        Ack {
            upto: 8,
            duplicates: 0
        }
    );
    let stats = relay.inbox.stats("WH01").expect("stats");
    assert_eq!((stats.received, stats.highest_seq), (8, Some(8)));
    assert_eq!(stats.current_store, Some((STORE_B.to_string(), 6)));
    assert_eq!(
        stats.open_store_conflict, None,
        "new events stored: the conflict is over"
    );

    // Now the old store is the stranger: its resend is refused, not silently dropped.
    let (status, _) = post_from(&client, &url, Some(STORE_A), counts(1, 5)).await;
    assert_eq!(status, 409);
    assert_eq!(relay.inbox.stats("WH01").expect("stats").store_conflicts, 2);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_store_id_the_relay_dedupes_as_before_and_heartbeats_are_not_checked() {
    let relay = start_relay("http://127.0.0.1:9", "", 200).await;
    let client = client(&relay.bundle("WH01"));
    let url = relay.url();
    assert_eq!(
        post_from(&client, &url, Some(STORE_A), counts(1, 4))
            .await
            .0,
        200
    );

    // An older agent (no header) that restarted at 1: today's behaviour, duplicates.
    let (status, body) = post_from(&client, &url, None, counts(1, 2)).await;
    assert_eq!(status, 200);
    assert_eq!(
        ack(&body),
        Ack {
            upto: 2,
            duplicates: 2
        }
    );

    // A heartbeat (no events) from another store is stored, not refused.
    let heartbeat = encode(&batch("WH01", 1, Vec::new())).expect("encode");
    assert_eq!(
        post_from(&client, &url, Some(STORE_B), heartbeat).await.0,
        200
    );

    // A malformed store id is a bad request.
    let (status, _) = post_from(&client, &url, Some("not an id"), counts(5, 1)).await;
    assert_eq!(status, 400);

    let stats = relay.inbox.stats("WH01").expect("stats");
    assert_eq!(
        (stats.received, stats.duplicates, stats.store_conflicts),
        (4, 2, 0)
    );
    assert_eq!(stats.current_store, Some((STORE_A.to_string(), 1)));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_store_a_site_sends_from_is_recorded_from_its_first_seq() {
    let relay = start_relay("http://127.0.0.1:9", "", 200).await;
    let client = client(&relay.bundle("WH01"));
    let url = relay.url();
    // Seqs 1..=3 from an older agent, then the upgraded agent's store continues at 4.
    assert_eq!(post_from(&client, &url, None, counts(1, 3)).await.0, 200);
    assert_eq!(
        relay.inbox.stats("WH01").expect("stats").current_store,
        None
    );
    assert_eq!(
        post_from(&client, &url, Some(STORE_A), counts(4, 2))
            .await
            .0,
        200
    );
    let stats = relay.inbox.stats("WH01").expect("stats");
    assert_eq!(stats.current_store, Some((STORE_A.to_string(), 4)));
    assert_eq!(stats.received, 5);
    relay.stop().await;
}
