//! Payloads the agent cannot accept (not JSON, not UTF-8, no code, a wrong EAN-13 check digit, a
//! control character in the code) are quarantined, not dropped, and block nothing: every good scan
//! around them reaches Odoo exactly once and the agent keeps running.

use std::time::Duration;

use rand::SeedableRng;
use scanbridge_e2e::checks::verify_exactly_once;
use scanbridge_e2e::ean;
use scanbridge_e2e::process::StateDir;
use scanbridge_e2e::publisher::Publisher;
use scanbridge_e2e::scans::{topic_for, ScanPayload};
use scanbridge_e2e::stack::{plan_counts, Catalog, Stack, StackOptions};

/// The bad payloads, cycled through: each one a way real scanners and integrations go wrong.
fn bad_payload(i: usize, product_code: &str, location: &str) -> Vec<u8> {
    match i % 5 {
        0 => b"4006381333931 not json {".to_vec(),
        1 => vec![0xff, 0xfe, b'{', 0x80, b'}'],
        2 => br#"{"device":"SC-01","op":"count","qty":3}"#.to_vec(),
        3 => {
            let wrong = ean::with_wrong_check_digit(product_code).unwrap_or_default();
            ScanPayload::count("SC-01", &wrong, location, 5.0).to_bytes()
        }
        _ => ScanPayload::count("SC-01", "40063\u{7}81333931", location, 1.0).to_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_are_quarantined_not_dropped() {
    let dir = StateDir::temp("quarantine").expect("state dir");
    let mut stack = Stack::start(dir, &StackOptions::default())
        .await
        .expect("chain up");
    let catalog = Catalog::seed(&stack.sim, 3, 20, 2, "WH-QUAR")
        .await
        .expect("seed");
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let (plan, expected) = plan_counts(&catalog, 400, &mut rng);

    let mut publisher = Publisher::connect(stack.mosquitto.port(), "scanner-quarantine")
        .await
        .expect("publisher");
    let topic = topic_for("SC-01");
    let mut bad = 0;
    for (i, c) in plan.iter().enumerate() {
        if i % 8 == 3 {
            let payload = bad_payload(bad, &c.product_code, &c.location_code);
            publisher
                .publish(&topic, payload)
                .await
                .expect("publish bad");
            bad += 1;
        }
        let scan = ScanPayload::count("SC-01", &c.product_code, &c.location_code, c.qty as f64);
        publisher
            .publish(&topic, scan.to_bytes())
            .await
            .expect("publish");
    }
    let state = stack
        .fence_and_wait(
            &mut publisher,
            "SC-01",
            &catalog,
            &expected,
            Duration::from_secs(90),
        )
        .await
        .expect("good scans after the bad ones applied");

    if let Err(problems) = verify_exactly_once(&state, &expected, &stack.site) {
        panic!(
            "{bad} bad payloads disturbed the good scans:\n{}",
            problems
                .iter()
                .take(30)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    stack
        .agent
        .ensure_running()
        .expect("the agent survives bad payloads");
    stack.ensure_all_running().expect("no process died");
    assert_eq!(bad, 50);
}
