//! Builds the [`AgentStatus`] heartbeat that travels with every batch and on the idle timer:
//! backlog, oldest pending age, disk use against the cap, quarantine count, ingest pause alarm,
//! source health, certificate expiry, version and clock.

use scanbridge_protocol::{AgentStatus, SourceHealth, UnixMicros};

use crate::sources::Health;
use crate::store::{StatsSnapshot, Store};

/// Everything the status is read from.
#[derive(Debug, Clone)]
pub struct StatusSource {
    pub store: Store,
    pub health: Health,
    /// `notAfter` of the client certificate, read once at start.
    pub cert_not_after: Option<UnixMicros>,
}

impl StatusSource {
    /// The status now. Cheap: in-memory counters plus one `stat` of the store file.
    pub fn build(&self) -> AgentStatus {
        agent_status(
            &self.store.stats(),
            self.store.disk_used_bytes(),
            self.store.max_bytes(),
            self.health.snapshot(),
            self.cert_not_after,
            crate::now_micros(),
        )
    }
}

/// Pure assembly of the status from its parts.
pub fn agent_status(
    stats: &StatsSnapshot,
    disk_used_bytes: u64,
    disk_cap_bytes: u64,
    sources: Vec<SourceHealth>,
    cert_not_after: Option<UnixMicros>,
    now: UnixMicros,
) -> AgentStatus {
    AgentStatus {
        version: env!("CARGO_PKG_VERSION").to_string(),
        backlog_events: stats.backlog_events,
        backlog_bytes: stats.backlog_bytes,
        oldest_pending_age_ms: stats
            .oldest_received_at
            .map(|t| u64::try_from(now.saturating_sub(t) / 1000).unwrap_or(0)),
        disk_used_bytes,
        disk_cap_bytes,
        quarantine_count: stats.quarantine_count,
        ingest_paused: stats.ingest_paused,
        sources,
        cert_not_after,
        clock: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_pending_age_is_measured_from_the_oldest_receive_time_and_never_negative() {
        let stats = StatsSnapshot {
            backlog_events: 3,
            backlog_bytes: 180,
            next_seq: 10,
            quarantine_count: 1,
            oldest_received_at: Some(1_000_000),
            ingest_paused: true,
        };
        let s = agent_status(&stats, 4096, 1 << 30, vec![], None, 3_500_000);
        assert_eq!(s.oldest_pending_age_ms, Some(2500));
        assert!(s.ingest_paused);
        assert_eq!(s.backlog_events, 3);
        let s = agent_status(&stats, 4096, 1 << 30, vec![], None, 0);
        assert_eq!(s.oldest_pending_age_ms, Some(0), "clock jumped back");
    }
}
