//! The relay's status of each site, derived on demand from the store (so it survives a restart:
//! nothing here is kept in memory). [`derive`] is the pure rule; [`load_all`] / [`load_one`]
//! read the inputs from redb (blocking: call them from `spawn_blocking`).
//!
//! State by the time since the site was last heard from (last batch or heartbeat, relay clock):
//! `online` up to `[status] stale_after_secs`, `stale` up to `offline_after_secs`, then `offline`.
//! The headline number, `oldest_unsynced_age_secs`, is the larger of the agent's oldest pending
//! age (as reported, plus the time since the report) and the age of the oldest event the relay
//! holds and has not pushed to Odoo yet (from when the agent received it, corrected by the agent's
//! clock offset seen at its last heartbeat).

use serde::Serialize;

use crate::config::StatusConfig;
use crate::inbox::fleet::PushState;
use crate::inbox::{Inbox, InboxError, SiteStats};
use scanbridge_protocol::{AgentStatus, SourceKind};

/// Online, stale or offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SiteState {
    Offline,
    Stale,
    Online,
}

impl SiteState {
    pub fn as_str(self) -> &'static str {
        match self {
            SiteState::Offline => "offline",
            SiteState::Stale => "stale",
            SiteState::Online => "online",
        }
    }
}

/// One source's health as last reported by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceView {
    pub name: String,
    pub kind: &'static str,
    pub up: bool,
    pub detail: String,
}

/// Everything central IT sees about one site (`GET /v1/sites/{id}`, one row of the page).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteStatus {
    pub site: String,
    pub state: SiteState,
    /// Agent instance name from the last batch.
    pub agent: Option<String>,
    pub agent_version: Option<String>,
    /// Last batch or heartbeat, RFC 3339 (relay clock).
    pub last_seen: Option<String>,
    pub last_seen_unix: Option<f64>,
    pub last_seen_age_secs: Option<f64>,
    /// The headline: how long the oldest event not yet in Odoo has been waiting.
    pub oldest_unsynced_age_secs: f64,
    pub agent_backlog_events: u64,
    pub agent_backlog_bytes: u64,
    /// The agent's oldest pending age, extrapolated to now.
    pub agent_oldest_pending_age_secs: Option<f64>,
    pub agent_ingest_paused: bool,
    pub agent_disk_used_bytes: u64,
    pub agent_disk_cap_bytes: u64,
    pub agent_quarantine_count: u64,
    /// Agent clock minus relay clock at the last heartbeat, seconds.
    pub agent_clock_offset_secs: Option<f64>,
    pub sources: Vec<SourceView>,
    /// Events stored at the relay and not pushed to Odoo yet.
    pub inbox_lag_events: u64,
    /// Age of the oldest unpushed event since the relay stored it (relay clock).
    pub push_lag_secs: f64,
    pub relay_highest_seq: Option<u64>,
    pub relay_push_cursor: u64,
    pub events_received: u64,
    pub events_duplicate: u64,
    pub events_applied: u64,
    pub dead_letters_total: u64,
    pub dead_letters_open: u64,
    pub quarantined: u64,
    /// Finished events removed by retention (`[retention] keep_days`).
    pub events_pruned: u64,
    /// Retention's watermark: every seq up to it is finished and pruned.
    pub pruned_through_seq: Option<u64>,
    /// Batches refused (409) because their seqs collide with another agent store of the site
    /// (a replaced box or a deleted store file: `scanbridge-agent store renumber`).
    pub store_conflicts: u64,
    /// The site's open store conflict: its gateway's store restarted its numbering and its
    /// batches are refused until someone renumbers it; nothing of the site reaches Odoo meanwhile.
    pub store_conflict: Option<StoreConflictView>,
    pub cert_not_after: Option<String>,
    pub cert_not_after_unix: Option<f64>,
    pub cert_expires_in_days: Option<f64>,
}

/// The stored inputs of one site's status.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub site: String,
    /// `(relay receive time µs, agent name, decoded status)` of the last batch.
    pub last: Option<(i64, String, Option<AgentStatus>)>,
    pub stats: SiteStats,
    pub push: PushState,
    pub dead_letters_open: u64,
}

fn secs(micros: i64) -> f64 {
    micros as f64 / 1e6
}

/// An open store conflict as the API and the page show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreConflictView {
    /// When the last batch was refused, RFC 3339 (relay clock).
    pub since: String,
    pub since_unix: f64,
    /// The refused agent store.
    pub store_id: String,
    /// Where its refused batch started.
    pub first_seq: u64,
    /// What the relay holds for the site: renumber after it.
    pub relay_highest_seq: u64,
    /// What to do, in words.
    pub fix: String,
}

impl StoreConflictView {
    fn of(c: &crate::inbox::OpenStoreConflict) -> StoreConflictView {
        StoreConflictView {
            since: rfc3339(c.at),
            since_unix: secs(c.at),
            store_id: c.store_id.clone(),
            first_seq: c.first_seq,
            relay_highest_seq: c.relay_highest,
            fix: format!(
                "the gateway's event store restarted its numbering (a replaced box or a lost \
                 agent.redb): its events stay at the gateway and none reaches Odoo. On the \
                 gateway: systemctl stop scanbridge-agent; scanbridge-agent store renumber \
                 --config /etc/scanbridge/agent.toml --after {}; systemctl start scanbridge-agent",
                c.relay_highest
            ),
        }
    }
}

/// RFC 3339 (UTC) of a microsecond timestamp.
pub fn rfc3339(micros: i64) -> String {
    let nanos = i128::from(micros) * 1000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{micros}us"))
}

/// The pure rule: a site's status at `now` (µs, relay clock).
pub fn derive(inputs: Inputs, now: i64, thresholds: &StatusConfig) -> SiteStatus {
    let Inputs {
        site,
        last,
        stats,
        push,
        dead_letters_open,
    } = inputs;
    let age_since = |at: i64| (secs(now - at)).max(0.0);
    let last_seen_age = last.as_ref().map(|(at, _, _)| age_since(*at));
    let state = match last_seen_age {
        None => SiteState::Offline,
        Some(age) if age > thresholds.offline_after.as_secs_f64() => SiteState::Offline,
        Some(age) if age > thresholds.stale_after.as_secs_f64() => SiteState::Stale,
        Some(_) => SiteState::Online,
    };
    let status = last.as_ref().and_then(|(_, _, s)| s.as_ref());
    let agent_oldest = match (last.as_ref(), status) {
        (Some((at, _, _)), Some(s)) if s.backlog_events > 0 => s
            .oldest_pending_age_ms
            .map(|ms| ms as f64 / 1000.0 + age_since(*at)),
        _ => None,
    };
    // The agent stamps `received_at` with its own clock: shift it by the clock offset seen at
    // the last heartbeat, so a gateway with a wrong clock does not distort the headline.
    let offset = match (last.as_ref(), status) {
        (Some((at, _, _)), Some(s)) => s.clock - at,
        _ => 0,
    };
    let relay_oldest = push.oldest_unpushed.as_ref().map_or(0.0, |o| {
        if o.received_at > 0 {
            age_since(o.received_at - offset)
        } else {
            0.0
        }
    });
    let push_lag = push
        .oldest_unpushed
        .as_ref()
        .and_then(|o| o.stored_at)
        .map_or(0.0, age_since);
    let cert = status.and_then(|s| s.cert_not_after);
    SiteStatus {
        state,
        agent: last.as_ref().map(|(_, a, _)| a.clone()),
        agent_version: status.map(|s| s.version.clone()),
        last_seen: last.as_ref().map(|(at, _, _)| rfc3339(*at)),
        last_seen_unix: last.as_ref().map(|(at, _, _)| secs(*at)),
        last_seen_age_secs: last_seen_age,
        oldest_unsynced_age_secs: agent_oldest.unwrap_or(0.0).max(relay_oldest),
        agent_backlog_events: status.map_or(0, |s| s.backlog_events),
        agent_backlog_bytes: status.map_or(0, |s| s.backlog_bytes),
        agent_oldest_pending_age_secs: agent_oldest,
        agent_ingest_paused: status.is_some_and(|s| s.ingest_paused),
        agent_disk_used_bytes: status.map_or(0, |s| s.disk_used_bytes),
        agent_disk_cap_bytes: status.map_or(0, |s| s.disk_cap_bytes),
        agent_quarantine_count: status.map_or(0, |s| s.quarantine_count),
        agent_clock_offset_secs: match (last.as_ref(), status) {
            (Some((at, _, _)), Some(s)) => Some(secs(s.clock - at)),
            _ => None,
        },
        sources: status.map_or_else(Vec::new, |s| {
            s.sources
                .iter()
                .map(|h| SourceView {
                    name: h.name.clone(),
                    kind: match h.kind {
                        SourceKind::Mqtt => "mqtt",
                        SourceKind::Serial => "serial",
                    },
                    up: h.up,
                    detail: h.detail.clone(),
                })
                .collect()
        }),
        inbox_lag_events: push.inbox_lag(),
        push_lag_secs: push_lag,
        relay_highest_seq: push.highest_seq,
        relay_push_cursor: push.cursor,
        events_received: stats.received,
        events_duplicate: stats.duplicates,
        events_applied: stats.applied,
        dead_letters_total: stats.dead_lettered,
        dead_letters_open,
        quarantined: stats.quarantined,
        events_pruned: stats.pruned,
        pruned_through_seq: stats.pruned_through,
        store_conflicts: stats.store_conflicts,
        store_conflict: stats
            .open_store_conflict
            .as_ref()
            .map(StoreConflictView::of),
        cert_not_after: cert.map(rfc3339),
        cert_not_after_unix: cert.map(secs),
        cert_expires_in_days: cert.map(|c| secs(c - now) / 86_400.0),
        site,
    }
}

/// Worst first: offline, stale, then more open dead letters, then older unsynced events.
pub fn sort_worst_first(sites: &mut [SiteStatus]) {
    sites.sort_by(|a, b| {
        a.state
            .cmp(&b.state)
            .then(b.dead_letters_open.cmp(&a.dead_letters_open))
            .then(
                b.oldest_unsynced_age_secs
                    .total_cmp(&a.oldest_unsynced_age_secs),
            )
            .then(a.site.cmp(&b.site))
    });
}

/// Reads the inputs of one site (blocking).
pub fn inputs(inbox: &Inbox, site: &str) -> Result<Inputs, InboxError> {
    Ok(Inputs {
        site: site.to_string(),
        last: inbox.agent_status(site)?,
        stats: inbox.stats(site)?,
        push: inbox.push_state(site)?,
        dead_letters_open: crate::admin::dead::open_count(inbox, site)?,
    })
}

/// Every known site's status, worst first (blocking).
pub fn load_all(
    inbox: &Inbox,
    now: i64,
    thresholds: &StatusConfig,
) -> Result<Vec<SiteStatus>, InboxError> {
    let mut out = Vec::new();
    for site in inbox.site_ids()? {
        out.push(derive(inputs(inbox, &site)?, now, thresholds));
    }
    sort_worst_first(&mut out);
    Ok(out)
}

/// One site's status, `None` when the relay never heard from it (blocking).
pub fn load_one(
    inbox: &Inbox,
    site: &str,
    now: i64,
    thresholds: &StatusConfig,
) -> Result<Option<SiteStatus>, InboxError> {
    let inputs = inputs(inbox, site)?;
    if inputs.last.is_none() && inputs.push.highest_seq.is_none() {
        return Ok(None);
    }
    Ok(Some(derive(inputs, now, thresholds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::fleet::OldestUnpushed;
    use std::time::Duration;

    const S: i64 = 1_000_000;

    fn thresholds() -> StatusConfig {
        StatusConfig {
            stale_after: Duration::from_secs(120),
            offline_after: Duration::from_secs(600),
        }
    }

    fn status(backlog: u64, oldest_ms: Option<u64>) -> AgentStatus {
        AgentStatus {
            version: "0.1.0".into(),
            backlog_events: backlog,
            backlog_bytes: backlog * 100,
            oldest_pending_age_ms: oldest_ms,
            disk_used_bytes: 1,
            disk_cap_bytes: 2,
            quarantine_count: 0,
            ingest_paused: false,
            sources: vec![],
            cert_not_after: Some(1_000 * S + 20 * 86_400 * S),
            clock: 995 * S,
        }
    }

    fn seen(site: &str, at: i64, s: Option<AgentStatus>) -> Inputs {
        Inputs {
            site: site.into(),
            last: Some((at, "gw".into(), s)),
            ..Inputs::default()
        }
    }

    #[test]
    fn a_site_heard_from_recently_is_online_then_stale_then_offline() {
        let t = thresholds();
        let at = 1_000 * S;
        let state = |now| derive(seen("A", at, None), now, &t).state;
        assert_eq!(state(at + 10 * S), SiteState::Online);
        assert_eq!(state(at + 121 * S), SiteState::Stale);
        assert_eq!(state(at + 601 * S), SiteState::Offline);
        assert_eq!(derive(Inputs::default(), at, &t).state, SiteState::Offline);
    }

    #[test]
    fn the_oldest_unsynced_age_is_the_larger_of_agent_backlog_and_relay_push_lag() {
        let t = thresholds();
        let at = 1_000 * S;
        let now = at + 10 * S;
        let s = derive(seen("A", at, Some(status(5, Some(30_000)))), now, &t);
        assert!((s.oldest_unsynced_age_secs - 40.0).abs() < 1e-6, "{s:?}");
        assert_eq!(s.agent_backlog_events, 5);
        let mut inputs = seen("A", at, Some(status(0, None)));
        inputs.push = PushState {
            cursor: 3,
            highest_seq: Some(9),
            oldest_unpushed: Some(OldestUnpushed {
                seq: 3,
                received_at: now - 300 * S,
                stored_at: Some(now - 200 * S),
            }),
        };
        let s = derive(inputs, now, &t);
        // 300 s by the agent's clock, which runs 5 s behind the relay's.
        assert!((s.oldest_unsynced_age_secs - 295.0).abs() < 1e-6, "{s:?}");
        assert!((s.push_lag_secs - 200.0).abs() < 1e-6);
        assert_eq!(s.inbox_lag_events, 7);
        assert!((s.cert_expires_in_days.unwrap_or(0.0) - 20.0).abs() < 0.001);
        assert!((s.agent_clock_offset_secs.unwrap_or(0.0) + 5.0).abs() < 1e-6);
    }

    #[test]
    fn sites_sort_offline_then_stale_then_dead_letters_then_backlog_age() {
        let t = thresholds();
        let now = 10_000 * S;
        let mk = |site: &str, ago: i64, dead: u64, backlog_ms: u64| {
            let mut i = seen(site, now - ago * S, Some(status(1, Some(backlog_ms))));
            i.dead_letters_open = dead;
            derive(i, now, &t)
        };
        let mut sites = vec![
            mk("ok-young", 1, 0, 1_000),
            mk("ok-old", 1, 0, 90_000),
            mk("dead", 1, 2, 0),
            mk("stale", 200, 0, 0),
            mk("off", 900, 0, 0),
        ];
        sort_worst_first(&mut sites);
        let order: Vec<&str> = sites.iter().map(|s| s.site.as_str()).collect();
        assert_eq!(order, ["off", "stale", "dead", "ok-old", "ok-young"]);
    }
}
