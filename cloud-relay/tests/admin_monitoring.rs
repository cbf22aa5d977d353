//! `deploy/monitoring/`: the Prometheus alert rules pass `promtool check rules` and their own
//! `promtool test rules`, the required alerts exist, and every metric the rules and the Grafana
//! dashboard name exists in a real `/metrics` scrape: relay metrics from a relay that pushed to
//! the Odoo simulator, agent metrics from a real agent (in-process) sending to it.
//!
//! Needs promtool (tests/ensure-deps.sh extracts it into target/tools/).

#![allow(clippy::unwrap_used)]

mod admin_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use admin_support::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn monitoring() -> PathBuf {
    repo().join("deploy/monitoring")
}

/// Every `scanbridge_...` identifier in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("scanbridge_") {
        let start = i + pos;
        let boundary = start == 0 || {
            let b = bytes[start - 1];
            !(b.is_ascii_alphanumeric() || b == b'_')
        };
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            out.insert(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

fn alert_rules() -> serde_yaml::Value {
    let text = std::fs::read_to_string(monitoring().join("scanbridge-alerts.yml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn rule_exprs(rules: &serde_yaml::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            out.push((
                rule["alert"].as_str().unwrap().to_string(),
                rule["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

fn dashboard_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// Metric family names in an OpenMetrics scrape (`_total` kept on counter samples).
fn scraped_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

fn promtool() -> PathBuf {
    let local = repo().join("target/tools/promtool");
    if local.exists() {
        return local;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("promtool"))
                .find(|p| p.exists())
        })
        .expect("promtool not found: run tests/ensure-deps.sh (it extracts it into target/tools/)")
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_own_rule_tests() {
    for args in [
        ["check", "rules", "scanbridge-alerts.yml"],
        ["test", "rules", "scanbridge-alerts.test.yml"],
    ] {
        let out = std::process::Command::new(promtool())
            .args(args)
            .current_dir(monitoring())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_required_alerts_exist() {
    let names: BTreeSet<String> = rule_exprs(&alert_rules())
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    for required in [
        "ScanbridgeSiteOffline",
        "ScanbridgeOldestUnsyncedTooOld",
        "ScanbridgeDeadLettersRising",
        "ScanbridgeSiteCertificateExpiring",
        "ScanbridgeAgentIngestPaused",
        "ScanbridgeStoreConflict",
    ] {
        assert!(names.contains(required), "{required} missing: {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_rules_and_the_dashboard_exists_in_a_real_scrape() {
    let mut named = BTreeSet::new();
    for (_, expr) in rule_exprs(&alert_rules()) {
        named.extend(metric_names(&expr));
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring().join("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "dashboard has {} queries", exprs.len());
    for e in &exprs {
        named.extend(metric_names(e));
    }

    // A relay that pushed one event to Odoo, dead-lettered one, and quarantined one.
    let sim = OdooSim::start().await;
    sim.seed(&[("4006381333931", "Widget")], &[(LOCATION, "A01")])
        .await;
    // The first write call fails with HTTP 500 (a transient error, retried).
    sim.faults(serde_json::json!({"http_500_next": 1})).await;
    let setup = Setup::new(&sim.url, "127.0.0.1:0", "");
    let relay = InProcess::start(&setup).await;
    let site = site_client(&setup.bundle("WH01"));
    let b = batch(
        "WH01",
        1,
        vec![
            count("4006381333931", 1.0),
            count("5901234123457", 1.0),
            quarantined(b"x", "not JSON"),
        ],
        Some(agent_status(1, Some(500), 20)),
    );
    send(&site, &relay.batches_url(), &b).await;
    let admin = admin_client(&setup.ca_pem());
    let text = eventually(WAIT, "the events handled", || async {
        let r = admin
            .get(relay.admin_url("/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?;
        let text = r.text().await.ok()?;
        (text.contains("scanbridge_events_applied_total{site=\"WH01\"} 1")
            && text.contains("scanbridge_dead_letters_total{site=\"WH01\"} 1")
            && !text.contains("scanbridge_odoo_rpc_errors_total{class=\"transient\"} 0"))
        .then_some(text)
    })
    .await;
    let scraped = scraped_names(&text);

    // A real agent (in-process) for the agent metrics: its local /metrics.
    let status_port = free_port();
    let _agent = start_agent(&setup, "WH09", relay.site_addr.port(), status_port).await;
    let agent_text = eventually(WAIT, "the agent's /metrics", || async {
        let r = reqwest::get(format!("http://127.0.0.1:{status_port}/metrics"))
            .await
            .ok()?;
        r.status().is_success().then_some(())?;
        r.text().await.ok()
    })
    .await;
    let agent_scraped = scraped_names(&agent_text);

    for name in &named {
        if name.starts_with("scanbridge_agent_") {
            assert!(
                agent_scraped.contains(name),
                "{name} is not in the agent's /metrics:\n{agent_text}"
            );
        } else {
            assert!(
                scraped.contains(name),
                "{name} is not in the relay's /metrics:\n{text}"
            );
        }
    }
    assert!(named.contains("scanbridge_odoo_rpc_total"));
    assert!(named.contains("scanbridge_agent_ingest_paused"));
}

#[test]
fn metric_names_are_found_in_expressions_without_their_neighbours() {
    let names = metric_names(
        "max(scanbridge_a{site=~\"$site\"}) - x_scanbridge_b + scanbridge_c_total[5m]",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["scanbridge_a", "scanbridge_c_total"]
    );
}
