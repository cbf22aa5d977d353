//! The fleet web page, server-rendered: the login form, the fleet table (one row per site, worst
//! first, colour for state, the oldest-unsynced age as the headline number) and a site's page
//! (status, recent events, dead letters with replay/skip buttons, quarantine).
//!
//! Pure functions from data to HTML strings. No external assets: inline CSS and one tiny inline
//! script (rows are links). Pages refresh themselves with a meta refresh. Everything that comes
//! from agents or Odoo goes through [`esc`].

use std::fmt::Write as _;

use crate::admin::dead::DeadLetterView;
use crate::admin::status::{SiteState, SiteStatus};
use crate::admin::trace::EventView;

/// Seconds between automatic page refreshes.
pub const REFRESH_SECS: u32 = 10;

/// A quarantined payload as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuarantineView {
    pub seq: u64,
    pub received_at: String,
    pub reason: String,
    /// The raw bytes, lossy UTF-8.
    pub raw: String,
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => {
                let _ = write!(out, "&#x{:x};", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// A duration in words a person reads at a glance: `12 s`, `4 min`, `2.5 h`, `3.1 d`.
pub fn age(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.5 {
        "0 s".into()
    } else if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 7200.0 {
        format!("{:.0} min", secs / 60.0)
    } else if secs < 172_800.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.1} d", secs / 86_400.0)
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}\
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .4em}\
table{border-collapse:collapse;width:100%;background:#fff}th,td{padding:.35em .6em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}\
th{background:#eee;font-weight:600}tr.site{cursor:pointer}tr.site:hover{background:#f0f4ff}\
.num{text-align:right;font-variant-numeric:tabular-nums}.headline{font-size:1.3em;font-weight:700}\
.state{display:inline-block;padding:.1em .5em;border-radius:.3em;color:#fff;font-weight:600}\
.state.offline{background:#c62828}.state.stale{background:#ef8f00}.state.online{background:#2e7d32}\
tr.site.offline{background:#fdecea}tr.site.stale{background:#fff4e0}tr.site.dead{background:#fff8f8}\
tr.offline td:first-child{border-left:6px solid #c62828}tr.stale td:first-child{border-left:6px solid #ef8f00}tr.online td:first-child{border-left:6px solid #2e7d32}\
.bad{color:#c62828;font-weight:700}.muted{color:#777}a.rowlink{color:inherit;text-decoration:none;font-weight:600}\
form.inline{display:inline;margin:0}button{cursor:pointer}.flash{background:#fff3cd;border:1px solid #e0c36a;padding:.5em;margin:.5em 0}\
code,pre{font-family:ui-monospace,monospace;font-size:.9em}pre{white-space:pre-wrap;word-break:break-all;margin:0}";

const ROW_SCRIPT: &str = "<script>document.querySelectorAll('tr[data-href]').forEach(function(r){r.addEventListener('click',function(){location.href=r.getAttribute('data-href');});});</script>";

fn head(title: &str, refresh: bool) -> String {
    let refresh = if refresh {
        format!("<meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">")
    } else {
        String::new()
    };
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title><style>{STYLE}</style></head><body>",
        esc(title)
    )
}

/// The login form (`POST /login` with the admin token).
pub fn login_page(error: Option<&str>) -> String {
    let mut h = head("Scanbridge fleet: log in", false);
    h.push_str("<h1>Scanbridge fleet</h1>");
    if let Some(e) = error {
        let _ = write!(h, "<p class=\"flash\">{}</p>", esc(e));
    }
    h.push_str("<form method=\"post\" action=\"/login\"><p><label>Admin token (from <code>[admin] token_file</code>)<br><input type=\"password\" name=\"token\" id=\"token\" size=\"48\" autofocus autocomplete=\"current-password\"></label></p><p><button type=\"submit\" id=\"login\">Log in</button></p></form></body></html>");
    h
}

fn state_badge(state: SiteState) -> String {
    format!("<span class=\"state {0}\">{0}</span>", state.as_str())
}

/// The fleet table, worst first (the caller sorts).
pub fn fleet_page(sites: &[SiteStatus], generated_at: &str) -> String {
    let mut h = head("Scanbridge fleet", true);
    let offline = sites
        .iter()
        .filter(|s| s.state == SiteState::Offline)
        .count();
    let stale = sites.iter().filter(|s| s.state == SiteState::Stale).count();
    let dead: u64 = sites.iter().map(|s| s.dead_letters_open).sum();
    let _ = write!(
        h,
        "<h1>Scanbridge fleet</h1><p class=\"muted\">{} sites · {offline} offline · {stale} stale · {dead} open dead letters · as of {} · refreshes every {REFRESH_SECS} s</p>",
        sites.len(),
        esc(generated_at)
    );
    h.push_str("<form class=\"inline\" method=\"post\" action=\"/logout\"><button type=\"submit\">Log out</button></form>");
    h.push_str("<table id=\"fleet\"><thead><tr><th>Site</th><th>State</th><th class=\"num\">Oldest unsynced</th><th class=\"num\">Agent backlog</th><th class=\"num\">Relay inbox lag</th><th class=\"num\">Open dead letters</th><th class=\"num\">Quarantined</th><th>Last seen</th><th>Certificate</th><th>Agent</th></tr></thead><tbody>");
    if sites.is_empty() {
        h.push_str("<tr><td colspan=\"10\" class=\"muted\">No site has connected yet.</td></tr>");
    }
    for s in sites {
        let href = format!("/sites/{}", esc(&s.site));
        let dead_class = if s.dead_letters_open > 0 { " bad" } else { "" };
        let cert = match s.cert_expires_in_days {
            Some(d) if d < 14.0 => format!(
                "<span class=\"bad\">expires in {}</span>",
                age(d * 86_400.0)
            ),
            Some(d) => format!("{} left", age(d * 86_400.0)),
            None => "<span class=\"muted\">unknown</span>".into(),
        };
        let paused = if s.agent_ingest_paused {
            " <span class=\"bad\">ingest paused</span>"
        } else {
            ""
        };
        let conflict = if s.store_conflict.is_some() {
            " <span class=\"bad store-conflict\">store conflict: renumber</span>"
        } else {
            ""
        };
        let _ = write!(
            h,
            "<tr class=\"site {state}\" data-site=\"{site}\" data-href=\"{href}\"><td><a class=\"rowlink\" href=\"{href}\">{site}</a></td><td>{badge}{conflict}</td><td class=\"num headline\">{oldest}</td><td class=\"num\">{backlog}{paused}</td><td class=\"num\">{lag}</td><td class=\"num{dead_class}\">{dead}</td><td class=\"num\">{quarantined}</td><td>{seen}</td><td>{cert}</td><td>{agent}</td></tr>",
            state = s.state.as_str(),
            site = esc(&s.site),
            badge = state_badge(s.state),
            oldest = age(s.oldest_unsynced_age_secs),
            backlog = s.agent_backlog_events,
            lag = s.inbox_lag_events,
            dead = s.dead_letters_open,
            quarantined = s.quarantined,
            seen = s
                .last_seen_age_secs
                .map_or_else(|| "never".to_string(), |a| format!("{} ago", age(a))),
            agent = esc(&format!(
                "{} {}",
                s.agent.as_deref().unwrap_or("?"),
                s.agent_version.as_deref().unwrap_or("")
            )),
        );
    }
    h.push_str("</tbody></table>");
    h.push_str(ROW_SCRIPT);
    h.push_str("</body></html>");
    h
}

/// One site's page. `csrf` goes into every form that changes something.
pub fn site_page(
    s: &SiteStatus,
    events: &[EventView],
    dead: &[DeadLetterView],
    quarantine: &[QuarantineView],
    csrf: &str,
    flash: Option<&str>,
) -> String {
    let site = esc(&s.site);
    let mut h = head(&format!("Scanbridge site {}", s.site), true);
    let _ = write!(
        h,
        "<p><a href=\"/\">← fleet</a></p><h1 id=\"site-title\">Site {site} {}</h1>",
        state_badge(s.state)
    );
    if let Some(f) = flash {
        let _ = write!(h, "<p class=\"flash\" id=\"flash\">{}</p>", esc(f));
    }
    if let Some(c) = &s.store_conflict {
        let _ = write!(
            h,
            "<p class=\"bad\" id=\"store-conflict\">Batches refused since {}: {}</p>",
            esc(&c.since),
            esc(&c.fix)
        );
    }
    let _ = write!(
        h,
        "<table><tbody><tr><th>Oldest unsynced</th><td class=\"headline\">{}</td><th>Last seen</th><td>{}</td></tr><tr><th>Agent backlog</th><td>{} events, {} bytes{}</td><th>Relay inbox lag</th><td>{} events (push lag {})</td></tr><tr><th>Received / applied</th><td>{} / {}</td><th>Dead letters (open / total)</th><td>{} / {}</td></tr><tr><th>Quarantined</th><td>{}</td><th>Certificate expires</th><td>{}</td></tr><tr><th>Agent</th><td>{}</td><th>Disk</th><td>{} of {} bytes</td></tr></tbody></table>",
        age(s.oldest_unsynced_age_secs),
        s.last_seen.as_deref().map_or_else(|| "never".to_string(), esc),
        s.agent_backlog_events,
        s.agent_backlog_bytes,
        if s.agent_ingest_paused { " <span class=\"bad\">ingest paused</span>" } else { "" },
        s.inbox_lag_events,
        age(s.push_lag_secs),
        s.events_received,
        s.events_applied,
        s.dead_letters_open,
        s.dead_letters_total,
        s.quarantined,
        s.cert_not_after.as_deref().map_or_else(|| "unknown".to_string(), esc),
        esc(&format!("{} {}", s.agent.as_deref().unwrap_or("?"), s.agent_version.as_deref().unwrap_or(""))),
        s.agent_disk_used_bytes,
        s.agent_disk_cap_bytes,
    );
    if !s.sources.is_empty() {
        h.push_str("<h2>Sources</h2><table><thead><tr><th>Name</th><th>Kind</th><th>Up</th><th>Detail</th></tr></thead><tbody>");
        for src in &s.sources {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                esc(&src.name),
                src.kind,
                if src.up { "" } else { "bad" },
                if src.up { "up" } else { "down" },
                esc(&src.detail)
            );
        }
        h.push_str("</tbody></table>");
    }

    let _ = write!(h, "<h2>Dead letters ({})</h2>", dead.len());
    h.push_str("<table id=\"dead-letters\"><thead><tr><th class=\"num\">Seq</th><th>When</th><th>Event</th><th>Reason</th><th>State</th><th></th></tr></thead><tbody>");
    if dead.is_empty() {
        h.push_str("<tr><td colspan=\"6\" class=\"muted\">None.</td></tr>");
    }
    for d in dead {
        let action = |verb: &str, label: &str| {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"/sites/{site}/dead-letters/{seq}/{verb}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\" id=\"{verb}-{seq}\">{label}</button></form>",
                seq = d.seq,
                csrf = esc(csrf),
            )
        };
        let buttons = if d.state == "open" {
            format!("{} {}", action("replay", "Replay"), action("skip", "Skip"))
        } else {
            String::new()
        };
        let _ = write!(
            h,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td><td>{}</td><td>{buttons}</td></tr>",
            d.seq,
            esc(&d.at),
            esc(&d.event),
            esc(&d.reason),
            esc(&d.state)
        );
    }
    h.push_str("</tbody></table>");

    let _ = write!(h, "<h2>Recent events ({})</h2>", events.len());
    h.push_str("<table id=\"events\"><thead><tr><th class=\"num\">Seq</th><th>Received at agent</th><th>Device</th><th>Event</th><th>Outcome</th></tr></thead><tbody>");
    for e in events {
        let class = match e.outcome.as_str() {
            "dead_lettered" => " class=\"bad\"",
            "pending" => " class=\"muted\"",
            _ => "",
        };
        let _ = write!(
            h,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td{class}>{} <span class=\"muted\">{}</span></td></tr>",
            e.seq,
            esc(e.received_at.as_deref().unwrap_or("")),
            esc(&e.device),
            esc(&e.summary),
            esc(&e.outcome),
            esc(&e.outcome_detail)
        );
    }
    h.push_str("</tbody></table>");

    let _ = write!(h, "<h2>Quarantine ({})</h2>", quarantine.len());
    h.push_str("<table id=\"quarantine\"><thead><tr><th class=\"num\">Seq</th><th>Received at agent</th><th>Reason</th><th>Raw</th></tr></thead><tbody>");
    for q in quarantine {
        let _ = write!(
            h,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
            q.seq,
            esc(&q.received_at),
            esc(&q.reason),
            esc(&q.raw)
        );
    }
    h.push_str("</tbody></table></body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::status::{derive, Inputs};
    use crate::config::StatusConfig;

    #[test]
    fn text_from_agents_is_escaped_so_markup_cannot_be_injected() {
        assert_eq!(
            esc("<script>alert('x')</script>&\"\u{1b}"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;&#x1b;"
        );
    }

    #[test]
    fn ages_read_in_the_unit_a_person_expects() {
        assert_eq!(age(0.2), "0 s");
        assert_eq!(age(42.0), "42 s");
        assert_eq!(age(600.0), "10 min");
        assert_eq!(age(3.0 * 3600.0), "3.0 h");
        assert_eq!(age(3.0 * 86_400.0), "3.0 d");
    }

    #[test]
    fn the_fleet_page_has_one_linked_row_per_site_and_escapes_agent_names() {
        let mk = |site: &str| {
            derive(
                Inputs {
                    site: site.into(),
                    last: Some((1, "<b>gw</b>".into(), None)),
                    ..Inputs::default()
                },
                2,
                &StatusConfig::default(),
            )
        };
        let html = fleet_page(&[mk("WH01"), mk("WH02")], "now");
        assert_eq!(html.matches("<tr class=\"site").count(), 2);
        assert!(html.contains("href=\"/sites/WH02\""));
        assert!(html.contains("&lt;b&gt;gw&lt;/b&gt;") && !html.contains("<b>gw"));
        assert!(html.contains("http-equiv=\"refresh\""));
    }
}
