//! `GET /metrics`: the relay's Prometheus metrics (OpenMetrics text, which Prometheus scrapes
//! natively), with exactly the names of CONTRACTS2.md.
//!
//! Site metrics are rendered per scrape from the status store ([`SiteStatus`]), so they are as
//! durable as redb (the `_total` counters continue across relay restarts). The Odoo RPC counters
//! are process-wide and counted by [`record_rpc`], which the Odoo client calls once per call.

use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::admin::status::{SiteState, SiteStatus};

/// Content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteLabel {
    site: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabel {
    model: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: String,
}

type GaugeF = Gauge<f64, AtomicU64>;

/// Process-wide Odoo call counters.
struct OdooRpc {
    calls: Family<RpcLabel, Counter>,
    errors: Family<ClassLabel, Counter>,
}

static ODOO_RPC: LazyLock<OdooRpc> = LazyLock::new(|| OdooRpc {
    calls: Family::default(),
    errors: Family::default(),
});

/// Counts one Odoo RPC call (`model`, `method`) and, when it failed, its error class
/// (`transient` or `permanent`).
pub fn record_rpc(model: &str, method: &str, error_class: Option<&str>) {
    ODOO_RPC
        .calls
        .get_or_create(&RpcLabel {
            model: model.to_string(),
            method: method.to_string(),
        })
        .inc();
    if let Some(class) = error_class {
        ODOO_RPC
            .errors
            .get_or_create(&ClassLabel {
                class: class.to_string(),
            })
            .inc();
    }
}

/// Renders the metrics of `sites` and the Odoo counters as OpenMetrics text.
pub fn render(sites: &[SiteStatus]) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    let gauge = |registry: &mut Registry, name: &str, help: &str| {
        let family = Family::<SiteLabel, GaugeF>::default();
        registry.register(name, help, family.clone());
        family
    };
    let counter = |registry: &mut Registry, name: &str, help: &str| {
        let family = Family::<SiteLabel, Counter>::default();
        registry.register(name, help, family.clone());
        family
    };
    let up = gauge(
        &mut registry,
        "scanbridge_site_up",
        "1 when the site was heard from within [status] stale_after_secs, else 0",
    );
    let last_seen = gauge(
        &mut registry,
        "scanbridge_site_last_seen_timestamp_seconds",
        "Unix time of the site's last batch or heartbeat",
    );
    let oldest = gauge(
        &mut registry,
        "scanbridge_site_oldest_unsynced_age_seconds",
        "Age of the oldest event not yet in Odoo (agent backlog or relay inbox, whichever is older)",
    );
    let backlog = gauge(
        &mut registry,
        "scanbridge_site_agent_backlog_events",
        "Events buffered at the agent, as last reported",
    );
    let inbox_lag = gauge(
        &mut registry,
        "scanbridge_site_inbox_lag_events",
        "Events stored at the relay and not yet pushed to Odoo",
    );
    let received = counter(
        &mut registry,
        "scanbridge_events_received",
        "Events stored at the relay (duplicates not counted)",
    );
    let applied = counter(
        &mut registry,
        "scanbridge_events_applied",
        "Events applied in Odoo",
    );
    let dead = counter(
        &mut registry,
        "scanbridge_dead_letters",
        "Events dead-lettered (Odoo refused them or they map to nothing)",
    );
    let dead_open = gauge(
        &mut registry,
        "scanbridge_dead_letters_open",
        "Dead letters not yet replayed, skipped or resolved",
    );
    let quarantined = counter(
        &mut registry,
        "scanbridge_quarantined",
        "Payloads the agent could not decode, received as quarantine records",
    );
    let pruned = counter(
        &mut registry,
        "scanbridge_events_pruned",
        "Finished events removed from the relay's store by retention ([retention] keep_days)",
    );
    let pruned_through = gauge(
        &mut registry,
        "scanbridge_site_pruned_through_seq",
        "Retention watermark: every seq up to this one is finished and pruned",
    );
    let conflicts = counter(
        &mut registry,
        "scanbridge_store_conflicts",
        "Batches refused (409) because their seqs collide with another agent store of the site (a replaced box or a deleted store file; run scanbridge-agent store renumber)",
    );
    let cert = gauge(
        &mut registry,
        "scanbridge_site_cert_expiry_timestamp_seconds",
        "Unix time the site's client certificate expires, as reported by the agent",
    );
    registry.register(
        "scanbridge_odoo_rpc",
        "Odoo RPC calls by model and method",
        ODOO_RPC.calls.clone(),
    );
    // Both classes exist from the start, so `rate()` and `increase()` see a 0, not nothing.
    for class in ["transient", "permanent"] {
        let _ = ODOO_RPC.errors.get_or_create(&ClassLabel {
            class: class.to_string(),
        });
    }
    registry.register(
        "scanbridge_odoo_rpc_errors",
        "Failed Odoo RPC calls by class (transient: retried; permanent: refused)",
        ODOO_RPC.errors.clone(),
    );

    for s in sites {
        let l = SiteLabel {
            site: s.site.clone(),
        };
        up.get_or_create(&l).set(if s.state == SiteState::Online {
            1.0
        } else {
            0.0
        });
        if let Some(t) = s.last_seen_unix {
            last_seen.get_or_create(&l).set(t);
        }
        oldest.get_or_create(&l).set(s.oldest_unsynced_age_secs);
        backlog.get_or_create(&l).set(s.agent_backlog_events as f64);
        inbox_lag.get_or_create(&l).set(s.inbox_lag_events as f64);
        received.get_or_create(&l).inc_by(s.events_received);
        applied.get_or_create(&l).inc_by(s.events_applied);
        dead.get_or_create(&l).inc_by(s.dead_letters_total);
        dead_open.get_or_create(&l).set(s.dead_letters_open as f64);
        quarantined.get_or_create(&l).inc_by(s.quarantined);
        pruned.get_or_create(&l).inc_by(s.events_pruned);
        conflicts.get_or_create(&l).inc_by(s.store_conflicts);
        if let Some(seq) = s.pruned_through_seq {
            pruned_through.get_or_create(&l).set(seq as f64);
        }
        if let Some(t) = s.cert_not_after_unix {
            cert.get_or_create(&l).set(t);
        }
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::status::{derive, Inputs};
    use crate::config::StatusConfig;

    #[test]
    fn every_contract_metric_name_appears_with_the_site_label() {
        let mut inputs = Inputs {
            site: "WH01".into(),
            last: Some((1_000_000, "gw".into(), None)),
            ..Inputs::default()
        };
        inputs.stats.received = 7;
        inputs.stats.pruned = 5;
        inputs.stats.pruned_through = Some(9);
        inputs.stats.store_conflicts = 2;
        let s = derive(inputs, 2_000_000, &StatusConfig::default());
        record_rpc("stock.quant", "load", Some("transient"));
        let text = render(&[s]).expect("render");
        for name in [
            "scanbridge_site_up{site=\"WH01\"} 1",
            "scanbridge_site_last_seen_timestamp_seconds{site=\"WH01\"}",
            "scanbridge_site_oldest_unsynced_age_seconds{site=\"WH01\"}",
            "scanbridge_site_agent_backlog_events{site=\"WH01\"}",
            "scanbridge_site_inbox_lag_events{site=\"WH01\"}",
            "scanbridge_events_received_total{site=\"WH01\"} 7",
            "scanbridge_events_applied_total{site=\"WH01\"}",
            "scanbridge_dead_letters_total{site=\"WH01\"}",
            "scanbridge_dead_letters_open{site=\"WH01\"}",
            "scanbridge_quarantined_total{site=\"WH01\"}",
            "scanbridge_events_pruned_total{site=\"WH01\"} 5",
            "scanbridge_site_pruned_through_seq{site=\"WH01\"} 9",
            "scanbridge_store_conflicts_total{site=\"WH01\"} 2",
            "scanbridge_odoo_rpc_total{model=\"stock.quant\",method=\"load\"}",
            "scanbridge_odoo_rpc_errors_total{class=\"transient\"}",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
