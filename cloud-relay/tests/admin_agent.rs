//! A real agent (the `scanbridge-agent` library, in-process) heartbeating to a relay: its status
//! — version, source health (broker down), certificate expiry — shows up in the relay's
//! `/v1/sites/{id}` and metrics, and the site goes stale once the agent stops.

#![allow(clippy::unwrap_used)]

mod admin_support;

use std::time::Duration;

use admin_support::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_agents_heartbeat_reaches_the_site_status_and_its_absence_makes_the_site_stale() {
    let setup = Setup::new(
        "http://127.0.0.1:9",
        "127.0.0.1:0",
        "[status]\nstale_after_secs = 3\noffline_after_secs = 3600\n",
    );
    let relay = InProcess::start(&setup).await;
    let agent = start_agent(&setup, "WH07", relay.site_addr.port(), free_port()).await;
    let admin = admin_client(&setup.ca_pem());

    let site: Value = eventually(WAIT, "the agent's status at the relay", || async {
        let (code, v) = get_json(&admin, &relay.admin_url("/v1/sites/WH07")).await;
        (code == 200 && v["sources"].as_array().is_some_and(|s| !s.is_empty())).then_some(v)
    })
    .await;
    assert_eq!(site["state"], "online", "{site}");
    assert_eq!(site["agent"], "gw-test-WH07");
    assert!(
        site["agent_version"].as_str().unwrap().starts_with("0."),
        "{site}"
    );
    assert_eq!(site["sources"][0]["name"], "site");
    assert_eq!(site["sources"][0]["kind"], "mqtt");
    assert_eq!(
        site["sources"][0]["up"], false,
        "the broker is down: {site}"
    );
    // The bundle was issued for 30 days.
    let days = site["cert_expires_in_days"].as_f64().unwrap();
    assert!((29.0..31.0).contains(&days), "{site}");
    assert_eq!(site["agent_ingest_paused"], false);
    assert!(site["agent_disk_cap_bytes"].as_u64().unwrap() > 0);

    let r = admin
        .get(relay.admin_url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(
        text.contains("scanbridge_site_up{site=\"WH07\"} 1"),
        "{text}"
    );
    assert!(text.contains("scanbridge_site_cert_expiry_timestamp_seconds{site=\"WH07\"}"));

    agent.cancel();
    eventually(WAIT, "the site stale after its agent stopped", || async {
        let (_, v) = get_json(&admin, &relay.admin_url("/v1/sites/WH07")).await;
        (v["state"] == "stale").then_some(())
    })
    .await;
}
