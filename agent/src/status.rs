//! The agent's view of itself: the [`AgentStatus`] heartbeat that travels with every batch and
//! on the idle timer (backlog, oldest pending age, disk use against the cap, quarantine count,
//! ingest pause alarm, source health, certificate expiry, version and clock), plus what only the
//! local status API and `scanbridge-agent status` show: the last relay contact and last error,
//! the verdict (healthy or degraded, with reasons) and its terminal rendering.
//!
//! Shared state that changes while the agent runs — the certificate expiry (it changes on
//! rotation) and the relay link (the forwarder records each answer) — lives in [`StatusSource`],
//! cheap to clone. Verdict and rendering are pure functions with unit tests.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use scanbridge_protocol::{AgentStatus, SourceHealth, SourceKind, UnixMicros};
use serde::{Deserialize, Serialize};

use crate::sources::Health;
use crate::store::{StatsSnapshot, Store};

/// Certificates closer than this to their expiry make the agent degraded and log warnings.
pub const CERT_WARN_DAYS: i64 = 30;
const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;

/// Why a status report could not be fetched or decoded (used by `scanbridge-agent status`).
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("the agent's status API answered {status}: {body}")]
    Http { status: u16, body: String },
    #[error("the agent's status API answered something that is not a status report: {0}")]
    Decode(String),
}

/// The relay link as the forwarder saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayLink {
    /// When the relay last acknowledged a batch or a heartbeat.
    pub last_ack_at: Option<UnixMicros>,
    /// When the forwarder last tried to reach the relay.
    pub last_attempt_at: Option<UnixMicros>,
    /// The last failure (time and message); kept after a later success, for the technician.
    pub last_error: Option<(UnixMicros, String)>,
}

/// Everything the status is read from. Clones share the same state.
#[derive(Debug, Clone)]
pub struct StatusSource {
    pub store: Store,
    pub health: Health,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// `notAfter` of the client certificate in use; `i64::MIN` when unknown.
    cert_not_after: AtomicI64,
    link: Mutex<RelayLink>,
}

impl StatusSource {
    /// A status source; `cert_not_after` is the expiry of the client certificate in use.
    pub fn new(store: Store, health: Health, cert_not_after: Option<UnixMicros>) -> StatusSource {
        StatusSource {
            store,
            health,
            shared: Arc::new(Shared {
                cert_not_after: AtomicI64::new(cert_not_after.unwrap_or(i64::MIN)),
                link: Mutex::new(RelayLink::default()),
            }),
        }
    }

    /// The status now. Cheap: in-memory counters plus one `stat` of the store file.
    pub fn build(&self) -> AgentStatus {
        agent_status(
            &self.store.stats(),
            self.store.disk_used_bytes(),
            self.store.max_bytes(),
            self.health.snapshot(),
            self.cert_not_after(),
            crate::now_micros(),
        )
    }

    /// Expiry of the client certificate in use.
    pub fn cert_not_after(&self) -> Option<UnixMicros> {
        let v = self.shared.cert_not_after.load(Ordering::Acquire);
        (v != i64::MIN).then_some(v)
    }

    /// Records the expiry of a newly loaded client certificate (rotation).
    pub fn set_cert_not_after(&self, not_after: Option<UnixMicros>) {
        self.shared
            .cert_not_after
            .store(not_after.unwrap_or(i64::MIN), Ordering::Release);
    }

    /// The relay acknowledged a batch or heartbeat at `at`.
    pub fn relay_acked(&self, at: UnixMicros) {
        let mut l = self.link();
        l.last_ack_at = Some(at);
        l.last_attempt_at = Some(at);
    }

    /// An attempt to reach the relay failed at `at` with `error`.
    pub fn relay_failed(&self, at: UnixMicros, error: impl Into<String>) {
        let mut l = self.link();
        l.last_attempt_at = Some(at);
        l.last_error = Some((at, error.into()));
    }

    /// The relay link as last recorded.
    pub fn relay_link(&self) -> RelayLink {
        self.link().clone()
    }

    fn link(&self) -> std::sync::MutexGuard<'_, RelayLink> {
        self.shared
            .link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The full local report (served as JSON by the status API).
    pub fn report(&self, site: &str, agent: &str) -> LocalReport {
        let status = self.build();
        let relay = self.relay_link();
        let problems = assess(&status, &relay, status.clock);
        LocalReport {
            site: site.to_string(),
            agent: agent.to_string(),
            status,
            relay,
            problems,
        }
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

/// What `GET /status` returns and `scanbridge-agent status` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalReport {
    pub site: String,
    pub agent: String,
    pub status: AgentStatus,
    pub relay: RelayLink,
    /// Empty when healthy.
    pub problems: Vec<String>,
}

/// Why `/healthz` fails: the store cannot take events. `None` when it can.
pub fn ingest_problem(status: &AgentStatus) -> Option<String> {
    status.ingest_paused.then(|| {
        if status.backlog_bytes >= status.disk_cap_bytes {
            format!(
                "ingest paused: buffer cap reached ({} of {}); events stay at the broker until the relay drains the backlog",
                human_bytes(status.backlog_bytes),
                human_bytes(status.disk_cap_bytes)
            )
        } else {
            "ingest paused: the store cannot commit (disk full or failing); events stay at the broker".to_string()
        }
    })
}

/// Every reason the agent is degraded (empty: healthy). Pure.
pub fn assess(status: &AgentStatus, relay: &RelayLink, now: UnixMicros) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(p) = ingest_problem(status) {
        out.push(p);
    }
    for s in status.sources.iter().filter(|s| !s.up) {
        out.push(format!(
            "source {} ({}) is down: {}",
            s.name,
            kind_name(s.kind),
            s.detail
        ));
    }
    match (relay.last_ack_at, &relay.last_error) {
        // `e` says why: unreachable, throttled, or a refusal with the relay's reason.
        (None, Some((_, e))) => out.push(format!("no batch accepted by the relay yet: {e}")),
        (Some(ok), Some((at, e))) if *at > ok => out.push(format!(
            "no batch accepted by the relay for {}: {e}",
            human_duration_micros(now.saturating_sub(ok))
        )),
        _ => {}
    }
    if let Some(exp) = status.cert_not_after {
        let left = exp.saturating_sub(now);
        if left <= 0 {
            out.push("client certificate has EXPIRED: the relay refuses this agent; install a renewed certificate".into());
        } else if left < CERT_WARN_DAYS * MICROS_PER_DAY {
            out.push(format!(
                "client certificate expires in {}: renew it (scanbridge-relay ca renew)",
                human_duration_micros(left)
            ));
        }
    }
    out
}

/// The warning to log about a certificate expiring at `not_after`, if any. Pure.
pub fn cert_expiry_warning(not_after: UnixMicros, now: UnixMicros) -> Option<String> {
    let left = not_after.saturating_sub(now);
    if left <= 0 {
        Some(format!(
            "the client certificate expired {} ago; the relay refuses it — install a renewed certificate and key (scanbridge-relay ca renew)",
            human_duration_micros(now.saturating_sub(not_after))
        ))
    } else if left < CERT_WARN_DAYS * MICROS_PER_DAY {
        Some(format!(
            "the client certificate expires in {} ({}); renew it with `scanbridge-relay ca renew` and replace site.pem/site.key (picked up without restart)",
            human_duration_micros(left),
            rfc3339(not_after)
        ))
    } else {
        None
    }
}

fn kind_name(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Mqtt => "mqtt",
        SourceKind::Serial => "serial",
    }
}

/// `1.5 MiB`, `12 B`: binary units, one decimal.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`: the two largest units.
pub fn human_duration_micros(us: i64) -> String {
    let s = us.max(0) / 1_000_000;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    }
}

/// RFC 3339 UTC, seconds precision.
pub fn rfc3339(us: UnixMicros) -> String {
    time::OffsetDateTime::from_unix_timestamp(us.div_euclid(1_000_000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| us.to_string())
}

fn ago(at: Option<UnixMicros>, now: UnixMicros) -> String {
    match at {
        Some(t) => format!(
            "{} ago ({})",
            human_duration_micros(now.saturating_sub(t)),
            rfc3339(t)
        ),
        None => "never".into(),
    }
}

/// The terminal layout of `scanbridge-agent status`: one aligned `label  value` line each, then
/// the sources as a small table, then the verdict. Pure (takes `now`).
pub fn render(r: &LocalReport, now: UnixMicros) -> String {
    let s = &r.status;
    let mut rows: Vec<(&str, String)> = vec![
        (
            "site",
            format!("{} (agent {}, version {})", r.site, r.agent, s.version),
        ),
        (
            "backlog",
            format!(
                "{} events, {}",
                s.backlog_events,
                human_bytes(s.backlog_bytes)
            ),
        ),
        (
            "oldest pending",
            match s.oldest_pending_age_ms {
                Some(ms) => {
                    human_duration_micros(i64::try_from(ms).unwrap_or(i64::MAX / 1000) * 1000)
                }
                None => "-".into(),
            },
        ),
        ("disk", {
            let pct = if s.disk_cap_bytes > 0 {
                s.disk_used_bytes as f64 * 100.0 / s.disk_cap_bytes as f64
            } else {
                0.0
            };
            format!(
                "{} of {} cap ({pct:.1}%)",
                human_bytes(s.disk_used_bytes),
                human_bytes(s.disk_cap_bytes)
            )
        }),
        (
            "ingest",
            if s.ingest_paused {
                "PAUSED (alarm)".into()
            } else {
                "running".into()
            },
        ),
        ("quarantined", s.quarantine_count.to_string()),
        ("relay contact", ago(r.relay.last_ack_at, now)),
        (
            "relay last error",
            match &r.relay.last_error {
                Some((at, e)) => format!(
                    "{} ago: {e}",
                    human_duration_micros(now.saturating_sub(*at))
                ),
                None => "none".into(),
            },
        ),
        (
            "certificate",
            match s.cert_not_after {
                Some(t) if t <= now => format!(
                    "EXPIRED {} ago ({})",
                    human_duration_micros(now - t),
                    rfc3339(t)
                ),
                Some(t) => format!(
                    "expires in {} ({})",
                    human_duration_micros(t - now),
                    rfc3339(t)
                ),
                None => "unknown".into(),
            },
        ),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows.drain(..) {
        out.push_str(&format!("{k:<width$}  {v}\n"));
    }
    out.push_str("\nsources\n");
    if s.sources.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let nw = s
            .sources
            .iter()
            .map(|x| x.name.len())
            .max()
            .unwrap_or(0)
            .max(4);
        out.push_str(&format!(
            "  {:<nw$}  {:<6}  {:<4}  detail\n",
            "name", "kind", "up"
        ));
        for src in &s.sources {
            out.push_str(&format!(
                "  {:<nw$}  {:<6}  {:<4}  {}\n",
                src.name,
                kind_name(src.kind),
                if src.up { "yes" } else { "NO" },
                src.detail
            ));
        }
    }
    out.push('\n');
    if r.problems.is_empty() {
        out.push_str("status: healthy\n");
    } else {
        out.push_str("status: DEGRADED\n");
        for p in &r.problems {
            out.push_str(&format!("  - {p}\n"));
        }
    }
    out
}

/// Decodes the JSON of `GET /status`.
pub fn parse_report(status: u16, body: &str) -> Result<LocalReport, StatusError> {
    if status != 200 {
        return Err(StatusError::Http {
            status,
            body: body.chars().take(300).collect(),
        });
    }
    serde_json::from_str(body).map_err(|e| StatusError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> StatsSnapshot {
        StatsSnapshot {
            backlog_events: 3,
            backlog_bytes: 180,
            next_seq: 10,
            quarantine_count: 1,
            oldest_received_at: Some(1_000_000),
            ingest_paused: false,
        }
    }

    const DAY: i64 = MICROS_PER_DAY;

    #[test]
    fn oldest_pending_age_is_measured_from_the_oldest_receive_time_and_never_negative() {
        let mut st = stats();
        st.ingest_paused = true;
        let s = agent_status(&st, 4096, 1 << 30, vec![], None, 3_500_000);
        assert_eq!(s.oldest_pending_age_ms, Some(2500));
        assert!(s.ingest_paused);
        assert_eq!(s.backlog_events, 3);
        let s = agent_status(&st, 4096, 1 << 30, vec![], None, 0);
        assert_eq!(s.oldest_pending_age_ms, Some(0), "clock jumped back");
    }

    fn healthy(now: i64) -> (AgentStatus, RelayLink) {
        let s = agent_status(
            &stats(),
            4096,
            1 << 30,
            vec![SourceHealth {
                name: "site".into(),
                kind: SourceKind::Mqtt,
                up: true,
                detail: "connected".into(),
            }],
            Some(now + 200 * DAY),
            now,
        );
        let link = RelayLink {
            last_ack_at: Some(now - 1_000_000),
            last_attempt_at: Some(now - 1_000_000),
            last_error: None,
        };
        (s, link)
    }

    #[test]
    fn a_running_agent_with_sources_up_and_a_recent_ack_is_healthy() {
        let now = 1_800_000_000_000_000;
        let (s, l) = healthy(now);
        assert!(assess(&s, &l, now).is_empty());
        assert_eq!(ingest_problem(&s), None);
    }

    #[test]
    fn a_paused_ingest_a_down_source_a_failing_relay_and_a_near_expiry_are_each_reported() {
        let now = 1_800_000_000_000_000;
        let (mut s, mut l) = healthy(now);
        s.ingest_paused = true;
        s.sources[0].up = false;
        s.sources[0].detail = "connection refused".into();
        s.cert_not_after = Some(now + 3 * DAY);
        l.last_error = Some((now, "connection refused".into()));
        let p = assess(&s, &l, now);
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].contains("ingest paused"), "{p:?}");
        assert!(p[1].contains("source site (mqtt) is down"), "{p:?}");
        assert!(
            p[2].contains("no batch accepted by the relay for 1s"),
            "{p:?}"
        );
        assert!(p[3].contains("expires in 3d"), "{p:?}");
        assert!(ingest_problem(&s).is_some());
    }

    #[test]
    fn an_old_error_followed_by_a_success_is_not_a_problem() {
        let now = 1_800_000_000_000_000;
        let (s, mut l) = healthy(now);
        l.last_error = Some((now - 5_000_000, "timeout".into()));
        assert!(assess(&s, &l, now).is_empty());
    }

    #[test]
    fn certificate_warnings_start_thirty_days_ahead_and_say_expired_afterwards() {
        let now = 1_800_000_000_000_000;
        assert_eq!(cert_expiry_warning(now + 31 * DAY, now), None);
        let w = cert_expiry_warning(now + 29 * DAY, now).unwrap_or_default();
        assert!(w.contains("expires in 29d"), "{w}");
        let w = cert_expiry_warning(now - DAY, now).unwrap_or_default();
        assert!(w.contains("expired 1d 0h ago"), "{w}");
    }

    #[test]
    fn human_units_are_short_and_binary() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_duration_micros(59_000_000), "59s");
        assert_eq!(human_duration_micros(3_725_000_000), "1h 2m");
        assert_eq!(human_duration_micros(-5), "0s");
    }

    #[test]
    fn the_rendering_aligns_values_and_ends_with_the_verdict() {
        let now = 1_800_000_000_000_000;
        let (s, l) = healthy(now);
        let report = LocalReport {
            site: "WH01".into(),
            agent: "gw".into(),
            problems: assess(&s, &l, now),
            status: s,
            relay: l,
        };
        let text = render(&report, now);
        let value_columns: Vec<usize> = text
            .lines()
            .take_while(|l| !l.is_empty())
            .map(|l| {
                l.find("  ")
                    .map(|i| i + l[i..].len() - l[i..].trim_start().len())
                    .unwrap_or(0)
            })
            .collect();
        assert!(value_columns.windows(2).all(|w| w[0] == w[1]), "{text}");
        assert!(text.contains("backlog           3 events, 180 B"), "{text}");
        assert!(text.contains("relay contact     1s ago"), "{text}");
        assert!(text.contains("  site  mqtt    yes   connected"), "{text}");
        assert!(text.trim_end().ends_with("status: healthy"), "{text}");
    }

    #[test]
    fn a_report_survives_the_json_round_trip_and_an_error_status_is_refused() {
        let now = 1_800_000_000_000_000;
        let (s, l) = healthy(now);
        let report = LocalReport {
            site: "WH01".into(),
            agent: "gw".into(),
            problems: vec![],
            status: s,
            relay: l,
        };
        let json = serde_json::to_string(&report).unwrap_or_default();
        assert_eq!(parse_report(200, &json).ok(), Some(report));
        assert!(matches!(
            parse_report(500, "boom"),
            Err(StatusError::Http { status: 500, .. })
        ));
    }
}
