//! "Where is my scan?": an event's path by `(site, seq)` or by barcode — received at the agent,
//! forwarded and stored at the relay, then applied in Odoo (with the Odoo model and record when
//! the outcome names them), dead-lettered with the reason, quarantined, or still waiting — and
//! the JSON view of stored events shared by the API, the page and the CLI.
//!
//! [`trace_seq`] and [`trace_barcode`] are blocking (redb): call them from `spawn_blocking`.

use serde::{Deserialize, Serialize};

use crate::admin::status::rfc3339;
use crate::inbox::fleet::StoredEventAt;
use crate::inbox::retention::Pruned;
use crate::inbox::{Inbox, InboxError, OdooRef, Outcome};
use scanbridge_protocol::{Event, EventBody, Source};

/// Most matches a barcode trace returns.
pub const BARCODE_MAX_HITS: usize = 20;
/// Most stored events a barcode trace reads (newest first) before it stops.
pub const BARCODE_MAX_SCANNED: usize = 500_000;

/// One step of an event's path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// received_at_agent, stored_at_relay, applied_in_odoo, dead_lettered, quarantined, waiting,
    /// or pruned (the only step of an event retention removed).
    pub step: String,
    /// RFC 3339, when known.
    pub at: Option<String>,
    pub detail: String,
    /// For applied_in_odoo: the Odoo model and record id the event wrote, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_id: Option<i64>,
}

/// The path of one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub site: String,
    pub seq: u64,
    pub event: Option<EventView>,
    pub steps: Vec<Step>,
}

/// Result of a barcode trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BarcodeTrace {
    pub barcode: String,
    pub traces: Vec<Trace>,
    /// True when the search stopped at its limits (see [`BARCODE_MAX_SCANNED`]).
    pub truncated: bool,
}

/// A stored event as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    pub seq: u64,
    /// scan, reading, quarantined, or undecodable.
    pub kind: String,
    pub device: String,
    pub source: String,
    pub captured_at: Option<String>,
    pub received_at: Option<String>,
    pub stored_at: Option<String>,
    /// One line for humans.
    pub summary: String,
    /// applied, dead_lettered, quarantined, or pending.
    pub outcome: String,
    pub outcome_detail: String,
}

/// One line describing an event, for tables and the page.
pub fn event_summary(event: &Event) -> String {
    match &event.body {
        EventBody::Scan(s) => {
            let mut out = s.code.clone();
            if let Some(op) = s.op {
                out = format!("{} {out}", op.as_str());
            }
            if let Some(q) = s.qty {
                out.push_str(&format!(" qty {q}"));
            }
            if let Some(l) = &s.location {
                out.push_str(&format!(" @ {l}"));
            }
            if let Some(r) = &s.reference {
                out.push_str(&format!(" ref {r}"));
            }
            out
        }
        EventBody::Reading(r) => format!(
            "reading {} = {}{}",
            r.tag,
            r.value,
            r.unit
                .as_deref()
                .map(|u| format!(" {u}"))
                .unwrap_or_default()
        ),
        EventBody::Quarantined(q) => format!(
            "quarantined: {} (raw {:?})",
            q.reason,
            String::from_utf8_lossy(&q.raw)
        ),
    }
}

fn source_text(source: &Source) -> String {
    match source {
        Source::Mqtt { broker, topic } => format!("mqtt {broker} {topic}"),
        Source::Serial { port } => format!("serial {port}"),
    }
}

/// `(outcome, detail)` words for an event's recorded outcome.
pub fn outcome_words(outcome: Option<&Outcome>) -> (String, String) {
    match outcome {
        None => ("pending".into(), String::new()),
        Some(Outcome::Applied { tag, odoo }) => {
            ("applied".into(), applied_words(tag, odoo.as_ref()))
        }
        Some(Outcome::DeadLettered { reason }) => ("dead_lettered".into(), reason.clone()),
        Some(Outcome::Quarantined { reason }) => ("quarantined".into(), reason.clone()),
        Some(Outcome::Held { behind, document }) => (
            "held".into(),
            format!("behind dead letter {behind} of {document}"),
        ),
    }
}

/// The view of a stored event with its outcome.
pub fn event_view(stored: &StoredEventAt, outcome: Option<&Outcome>) -> EventView {
    let (outcome, outcome_detail) = outcome_words(outcome);
    let stored_at = stored.stored_at.map(rfc3339);
    match &stored.event {
        Ok(e) => EventView {
            seq: stored.seq,
            kind: match e.body {
                EventBody::Scan(_) => "scan",
                EventBody::Reading(_) => "reading",
                EventBody::Quarantined(_) => "quarantined",
            }
            .into(),
            device: e.device.clone(),
            source: source_text(&e.source),
            captured_at: Some(rfc3339(e.captured_at)),
            received_at: Some(rfc3339(e.received_at)),
            stored_at,
            summary: event_summary(e),
            outcome,
            outcome_detail,
        },
        Err(reason) => EventView {
            seq: stored.seq,
            kind: "undecodable".into(),
            device: String::new(),
            source: String::new(),
            captured_at: None,
            received_at: None,
            stored_at,
            summary: reason.clone(),
            outcome,
            outcome_detail,
        },
    }
}

/// The `limit` newest events of a site with their outcomes (blocking).
pub fn recent(inbox: &Inbox, site: &str, limit: usize) -> Result<Vec<EventView>, InboxError> {
    let mut out = Vec::new();
    for stored in inbox.recent_events(site, limit)? {
        let outcome = inbox.outcome(site, stored.seq)?;
        out.push(event_view(&stored, outcome.as_ref()));
    }
    Ok(out)
}

/// The path of `(site, seq)`; `None` when the relay never stored it (blocking). An event
/// retention removed answers with one step, `pruned`.
pub fn trace_seq(inbox: &Inbox, site: &str, seq: u64) -> Result<Option<Trace>, InboxError> {
    let Some(stored) = inbox.event(site, seq)? else {
        return Ok(inbox
            .pruned(site, seq)?
            .map(|p| pruned_trace(site, seq, &p)));
    };
    let outcome = inbox.outcome(site, seq)?;
    let view = event_view(&stored, outcome.as_ref());
    let mut steps = Vec::new();
    if let Ok(e) = &stored.event {
        steps.push(Step {
            model: None,
            record_id: None,
            step: "received_at_agent".into(),
            at: Some(rfc3339(e.received_at)),
            detail: format!("from {} via {}", e.device, source_text(&e.source)),
        });
    }
    steps.push(Step {
        model: None,
        record_id: None,
        step: "stored_at_relay".into(),
        at: stored.stored_at.map(rfc3339),
        detail: "forwarded by the agent, stored durably and acknowledged".into(),
    });
    match &outcome {
        Some(Outcome::Applied { tag, odoo }) => steps.push(Step {
            model: odoo.as_ref().map(|r| r.model.clone()),
            record_id: odoo.as_ref().map(|r| r.id),
            step: "applied_in_odoo".into(),
            at: None,
            detail: format!(
                "{} (external id scanbridge.{site}_{seq})",
                applied_words(tag, odoo.as_ref())
            ),
        }),
        Some(Outcome::Held { behind, document }) => steps.push(Step {
            model: None,
            record_id: None,
            step: "held".into(),
            at: None,
            detail: format!(
                "held back behind dead letter {site}/{behind} of {document}; replay or skip that one"
            ),
        }),
        Some(Outcome::DeadLettered { reason }) => {
            let at = inbox
                .dead_letters(site)?
                .into_iter()
                .find(|d| d.seq == seq)
                .map(|d| rfc3339(d.at));
            steps.push(Step {
                model: None,
                record_id: None,
                step: "dead_lettered".into(),
                at,
                detail: reason.clone(),
            });
        }
        Some(Outcome::Quarantined { reason }) => steps.push(Step {
            model: None,
            record_id: None,
            step: "quarantined".into(),
            at: None,
            detail: reason.clone(),
        }),
        None => {
            let push = inbox.push_state(site)?;
            steps.push(Step {
                model: None,
                record_id: None,
                step: "waiting".into(),
                at: None,
                detail: format!(
                    "not pushed to Odoo yet (push cursor at seq {}, {} events ahead)",
                    push.cursor,
                    seq.saturating_sub(push.cursor)
                ),
            });
        }
    }
    Ok(Some(Trace {
        site: site.to_string(),
        seq,
        event: Some(view),
        steps,
    }))
}

/// The trace of an event retention removed: it was finished (applied, quarantined, or a dead
/// letter skipped or resolved) and is no longer stored.
fn pruned_trace(site: &str, seq: u64, pruned: &Pruned) -> Trace {
    Trace {
        site: site.to_string(),
        seq,
        event: None,
        steps: vec![Step {
            model: None,
            record_id: None,
            step: "pruned".into(),
            at: Some(rfc3339(pruned.pruned_at)),
            detail: format!(
                "pruned after {} day{} (finished: applied, quarantined or a closed dead letter); the relay keeps no copy, Odoo has the record",
                pruned.keep_days,
                if pruned.keep_days == 1 { "" } else { "s" }
            ),
        }],
    }
}

/// The words of an applied outcome: the Odoo record the event wrote, and by which call.
pub fn applied_words(tag: &str, odoo: Option<&OdooRef>) -> String {
    match odoo {
        Some(r) => format!("{} {} by {tag}", r.model, r.id),
        None => format!("by {tag}"),
    }
}

/// Every stored event carrying `barcode`, newest first, at most [`BARCODE_MAX_HITS`] (blocking).
pub fn trace_barcode(inbox: &Inbox, barcode: &str) -> Result<BarcodeTrace, InboxError> {
    let found = inbox.find_by_barcode(barcode, BARCODE_MAX_HITS, BARCODE_MAX_SCANNED)?;
    let mut traces = Vec::new();
    for (site, seq) in found.hits {
        if let Some(t) = trace_seq(inbox, &site, seq)? {
            traces.push(t);
        }
    }
    Ok(BarcodeTrace {
        barcode: barcode.to_string(),
        traces,
        truncated: found.truncated,
    })
}
