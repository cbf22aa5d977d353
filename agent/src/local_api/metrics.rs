//! The agent's Prometheus metrics, read from the live state at every scrape (a prometheus-client
//! [`Collector`]): nothing to keep in sync, nothing stale. Names are the team contract's and
//! must not change (deploy rules and the Grafana dashboard use them):
//!
//! `scanbridge_agent_backlog_events`, `scanbridge_agent_backlog_bytes`,
//! `scanbridge_agent_oldest_pending_age_seconds`, `scanbridge_agent_events_committed_total`,
//! `scanbridge_agent_quarantined_total`, `scanbridge_agent_ingest_paused`,
//! `scanbridge_agent_source_up{source,kind}`, `scanbridge_agent_disk_used_bytes`,
//! `scanbridge_agent_disk_cap_bytes`, `scanbridge_agent_cert_expiry_timestamp_seconds`,
//! `scanbridge_agent_last_relay_ack_timestamp_seconds` (0 until the first ack),
//! `scanbridge_agent_duplicate_scans_total` (scan copies recognised by their `(device, id)`,
//! acknowledged and not stored again, since the agent started).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::TypedMetric;

use crate::status::StatusSource;

/// Reads the agent's state on each scrape.
#[derive(Debug)]
pub struct AgentCollector {
    status: StatusSource,
}

impl AgentCollector {
    pub fn new(status: StatusSource) -> AgentCollector {
        AgentCollector { status }
    }
}

fn gauge<N>(enc: &mut DescriptorEncoder, name: &str, help: &str, v: N) -> std::fmt::Result
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(v);
    let m = enc.encode_descriptor(name, help, None, ConstGauge::<N>::TYPE)?;
    g.encode(m)
}

/// `name` without `_total`: the encoder appends it to counter samples.
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    let m = enc.encode_descriptor(name, help, None, ConstCounter::<u64>::TYPE)?;
    c.encode(m)
}

fn seconds(us: i64) -> f64 {
    us as f64 / 1e6
}

impl Collector for AgentCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.status.build();
        let stats = self.status.store.stats();
        let link = self.status.relay_link();
        gauge(
            &mut enc,
            "scanbridge_agent_backlog_events",
            "Events stored and not yet acknowledged by the relay.",
            s.backlog_events,
        )?;
        gauge(
            &mut enc,
            "scanbridge_agent_backlog_bytes",
            "Bytes the unacknowledged events take in the store.",
            s.backlog_bytes,
        )?;
        gauge(
            &mut enc,
            "scanbridge_agent_oldest_pending_age_seconds",
            "Age of the oldest unacknowledged event (0 when the backlog is empty).",
            s.oldest_pending_age_ms.map_or(0.0, |ms| ms as f64 / 1e3),
        )?;
        counter(
            &mut enc,
            "scanbridge_agent_events_committed",
            "Events committed to the store since it was created.",
            stats.next_seq.saturating_sub(1),
        )?;
        counter(
            &mut enc,
            "scanbridge_agent_quarantined",
            "Payloads quarantined since the store was created.",
            s.quarantine_count,
        )?;
        counter(
            &mut enc,
            "scanbridge_agent_duplicate_scans",
            "Scans whose (device, id) was already committed: acknowledged, not stored again (since the agent started).",
            self.status.store.duplicates_suppressed(),
        )?;
        gauge(
            &mut enc,
            "scanbridge_agent_ingest_paused",
            "1 while ingest is paused (buffer cap reached or disk failing).",
            i64::from(s.ingest_paused),
        )?;
        {
            let mut m = enc.encode_descriptor(
                "scanbridge_agent_source_up",
                "1 while the source is connected (broker) or open (serial port).",
                None,
                ConstGauge::<i64>::TYPE,
            )?;
            for src in &s.sources {
                let kind = match src.kind {
                    scanbridge_protocol::SourceKind::Mqtt => "mqtt",
                    scanbridge_protocol::SourceKind::Serial => "serial",
                };
                let labels = [("source", src.name.as_str()), ("kind", kind)];
                ConstGauge::new(i64::from(src.up)).encode(m.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut enc,
            "scanbridge_agent_disk_used_bytes",
            "Size of the store file on disk.",
            s.disk_used_bytes,
        )?;
        gauge(
            &mut enc,
            "scanbridge_agent_disk_cap_bytes",
            "Configured buffer cap (store.max_bytes).",
            s.disk_cap_bytes,
        )?;
        if let Some(exp) = s.cert_not_after {
            gauge(
                &mut enc,
                "scanbridge_agent_cert_expiry_timestamp_seconds",
                "notAfter of the client certificate in use, as a Unix timestamp.",
                seconds(exp),
            )?;
        }
        gauge(
            &mut enc,
            "scanbridge_agent_last_relay_ack_timestamp_seconds",
            "When the relay last acknowledged a batch or heartbeat (Unix timestamp; 0: never).",
            link.last_ack_at.map_or(0.0, seconds),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The agent metric names of the team contract (CONTRACTS2.md), as sample names.
    const CONTRACT: [&str; 12] = [
        "scanbridge_agent_backlog_events",
        "scanbridge_agent_backlog_bytes",
        "scanbridge_agent_oldest_pending_age_seconds",
        "scanbridge_agent_events_committed_total",
        "scanbridge_agent_quarantined_total",
        "scanbridge_agent_duplicate_scans_total",
        "scanbridge_agent_ingest_paused",
        "scanbridge_agent_source_up",
        "scanbridge_agent_disk_used_bytes",
        "scanbridge_agent_disk_cap_bytes",
        "scanbridge_agent_cert_expiry_timestamp_seconds",
        "scanbridge_agent_last_relay_ack_timestamp_seconds",
    ];

    #[test]
    fn the_exposition_has_exactly_the_contract_metric_names_with_source_labels() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = crate::store::Store::open(&dir.path().join("agent.redb"), 1 << 20)
            .unwrap_or_else(|e| panic!("{e}"));
        let health = crate::sources::Health::default();
        let slot = health.register("dock", scanbridge_protocol::SourceKind::Serial);
        health.set(slot, true, "open");
        let status = StatusSource::new(store, health, Some(1_800_000_000_000_000));
        status.relay_acked(1_790_000_000_000_000);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(AgentCollector::new(status)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .unwrap_or_else(|e| panic!("{e}"));
        let names: BTreeSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        assert_eq!(names, CONTRACT.into_iter().collect(), "{text}");
        assert!(
            text.contains("scanbridge_agent_source_up{source=\"dock\",kind=\"serial\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("scanbridge_agent_cert_expiry_timestamp_seconds 1800000000.0"),
            "{text}"
        );
        assert!(
            text.contains("scanbridge_agent_disk_cap_bytes 1048576"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
