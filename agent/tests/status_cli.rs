//! The local status API and `scanbridge-agent status`, on the real binary with a real mosquitto
//! and a fake mutual-TLS relay: `/healthz`, `/metrics` (the contract's metric names), `/status`,
//! the CLI's layout and exit codes (0 healthy, 1 degraded, 2 unreachable), the idle heartbeat
//! reaching the relay, and the 503 of a full buffer.
#![allow(clippy::unwrap_used)]

mod common;
mod support;

use std::time::Duration;

use common::relay::FakeRelay;
use support::{Agent, AgentSetup};

const METRICS: [&str; 11] = [
    "scanbridge_agent_backlog_events",
    "scanbridge_agent_backlog_bytes",
    "scanbridge_agent_oldest_pending_age_seconds",
    "scanbridge_agent_events_committed_total",
    "scanbridge_agent_quarantined_total",
    "scanbridge_agent_ingest_paused",
    "scanbridge_agent_source_up",
    "scanbridge_agent_disk_used_bytes",
    "scanbridge_agent_disk_cap_bytes",
    "scanbridge_agent_cert_expiry_timestamp_seconds",
    "scanbridge_agent_last_relay_ack_timestamp_seconds",
];

/// The value of the sample line starting with `series ` in Prometheus text.
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
async fn an_idle_agent_reports_health_metrics_and_status_locally_and_heartbeats_to_the_relay() {
    let broker = common::Broker::start();
    let pki = common::Pki::new();
    let relay = FakeRelay::start(
        &pki.ca_pem,
        &pki.server_cert_pem,
        &pki.server_key_pem,
        vec![],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut setup = AgentSetup::new(&pki, &relay.url(), broker.port);
    setup.heartbeat_secs = 1;
    let cfg = setup.write(dir.path());
    let addr = setup.status_addr();
    let agent = Agent::spawn(&cfg, &dir.path().join("agent.log"));

    let health = common::eventually_async(Duration::from_secs(60), "/healthz 200", || {
        let addr = addr.clone();
        async move {
            support::get(&addr, "/healthz")
                .await
                .filter(|(c, _)| *c == 200)
        }
    })
    .await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&health.1).unwrap()["status"],
        "ok"
    );

    // The idle heartbeat: status-only batches keep arriving without any scan.
    let rec = relay.recorded.clone();
    let hb = common::eventually(Duration::from_secs(60), "three idle heartbeats", || {
        let r = rec.lock().unwrap();
        let beats: Vec<_> = r
            .batches
            .iter()
            .filter(|b| b.events.is_empty() && b.status.is_some())
            .collect();
        let last = beats.last()?.status.clone()?;
        (beats.len() >= 3 && last.sources.iter().any(|s| s.up)).then_some(last)
    })
    .await;
    assert_eq!(hb.sources[0].name, "site");
    assert!(
        hb.cert_not_after.is_some(),
        "certificate expiry in the heartbeat"
    );

    let payloads = (0..5)
        .map(|i| format!(r#"{{"code":"4006381333931","qty":{i}}}"#).into_bytes())
        .collect();
    common::publish_all(broker.port, "pub", "scanbridge/SC-01/scan", payloads).await;
    common::eventually(Duration::from_secs(60), "5 events at the relay", || {
        (relay.acked_seqs().len() == 5).then_some(())
    })
    .await;

    let metrics =
        common::eventually_async(Duration::from_secs(30), "metrics after the ack", || {
            let addr = addr.clone();
            async move {
                let (code, text) = support::get(&addr, "/metrics").await?;
                assert_eq!(code, 200);
                (sample(&text, "scanbridge_agent_backlog_events") == Some(0.0)).then_some(text)
            }
        })
        .await;
    for name in METRICS {
        assert!(
            metrics.lines().any(|l| l.starts_with(name)),
            "{name} missing from:\n{metrics}"
        );
    }
    assert_eq!(
        sample(&metrics, "scanbridge_agent_events_committed_total"),
        Some(5.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "scanbridge_agent_ingest_paused"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &metrics,
            r#"scanbridge_agent_source_up{source="site",kind="mqtt"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "scanbridge_agent_last_relay_ack_timestamp_seconds"
        )
        .unwrap()
            > 1.7e9
    );
    assert!(sample(&metrics, "scanbridge_agent_cert_expiry_timestamp_seconds").unwrap() > 1.7e9);
    assert_eq!(
        sample(&metrics, "scanbridge_agent_disk_cap_bytes"),
        Some((1u64 << 30) as f64)
    );

    let out = support::status_cli(&cfg).await;
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("scanbridge-agent status:\n{text}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "site              WH01 (agent test-gw",
        "backlog           0 events, 0 B",
        "oldest pending    -",
        "ingest            running",
        "relay contact     ",
        "relay last error  none",
        "certificate       expires in ",
        "  site  mqtt    yes   connected",
        "status: healthy",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }

    // A broker outage makes the agent degraded, naming the source.
    drop(broker);
    let out = common::eventually_async(Duration::from_secs(60), "status exit 1", || {
        let cfg = cfg.clone();
        async move {
            let out = support::status_cli(&cfg).await;
            (out.status.code() == Some(1)).then_some(out)
        }
    })
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status: DEGRADED"), "{text}");
    assert!(text.contains("source site (mqtt) is down"), "{text}");
    assert!(text.contains("  site  mqtt    NO "), "{text}");

    agent.stop();
    let out = support::status_cli(&cfg).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("agent not reachable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_makes_healthz_answer_503_with_the_reason_and_status_exit_1() {
    let broker = common::Broker::start();
    let pki = common::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    // Nobody listens on the relay port: nothing drains.
    let relay_url = format!("https://127.0.0.1:{}", common::free_port());
    let mut setup = AgentSetup::new(&pki, &relay_url, broker.port);
    setup.max_bytes = 1 << 20;
    let cfg = setup.write(dir.path());
    let addr = setup.status_addr();
    let agent = Agent::spawn(&cfg, &dir.path().join("agent.log"));
    common::eventually_async(Duration::from_secs(60), "agent subscribed", || {
        let addr = addr.clone();
        async move {
            let r = support::get(&addr, "/status").await?;
            r.1.contains("connected, subscribed").then_some(())
        }
    })
    .await;

    let filler = "X".repeat(400);
    let payloads = (0..4000)
        .map(|i| format!(r#"{{"code":"C{i}","reference":"{filler}"}}"#).into_bytes())
        .collect();
    common::publish_all(broker.port, "pub", "scanbridge/SC-01/scan", payloads).await;

    let (_, body) = common::eventually_async(Duration::from_secs(120), "/healthz 503", || {
        let addr = addr.clone();
        async move {
            support::get(&addr, "/healthz")
                .await
                .filter(|(c, _)| *c == 503)
        }
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "unhealthy");
    assert!(
        v["reason"].as_str().unwrap().contains("buffer cap reached"),
        "{body}"
    );
    let (_, metrics) = support::get(&addr, "/metrics").await.unwrap();
    assert_eq!(
        sample(&metrics, "scanbridge_agent_ingest_paused"),
        Some(1.0)
    );

    let out = support::status_cli(&cfg).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("ingest            PAUSED (alarm)"), "{text}");
    assert!(
        text.contains("no batch accepted by the relay yet"),
        "{text}"
    );
    agent.stop();
}

#[test]
fn status_without_a_running_agent_exits_2_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, format!("[status]\nlisten = \"127.0.0.1:{port}\"\n")).unwrap();
    let out = std::process::Command::new(support::BIN)
        .args(["status", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "agent not reachable at http://127.0.0.1:{port}/status"
        )),
        "{err}"
    );
}
