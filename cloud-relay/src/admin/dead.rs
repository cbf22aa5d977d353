//! The admin side of dead letters: listing, showing, replaying and skipping them through the
//! inbox's dead-letter lifecycle (owned by the flows code in `inbox/`), and the JSON shape the
//! API, the CLI and the page use. This file is the one adapter between the admin code and the
//! inbox's dead-letter types.
//!
//! Every function is blocking (redb): call it from `spawn_blocking`.

use serde::{Deserialize, Serialize};

use crate::inbox::{Inbox, InboxError, ReplayResult};

/// A dead letter as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterView {
    pub site: String,
    pub seq: u64,
    /// When it was dead-lettered, RFC 3339.
    pub at: String,
    /// Odoo's (or the relay's) reason.
    pub reason: String,
    /// open, replay_requested, skipped or resolved.
    pub state: String,
    /// A one-line summary of the event.
    pub event: String,
    /// The Odoo document (picking) it belongs to; it holds back later events of it while open.
    pub document: Option<String>,
    /// The operator's note (when skipped).
    pub note: Option<String>,
    /// Events held back behind it (shown by `show` only).
    #[serde(default)]
    pub held: Vec<u64>,
}

/// What a replay or skip did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    pub site: String,
    pub seq: u64,
    pub action: String,
    pub detail: String,
}

/// Why a dead-letter action could not be done.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("site {site} has no dead letter with seq {seq}")]
    NotFound { site: String, seq: u64 },
    #[error("dead letter {site}/{seq} cannot be {action}: {reason}")]
    Refused {
        site: String,
        seq: u64,
        action: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] InboxError),
}

fn summary(inbox: &Inbox, site: &str, seq: u64) -> Result<String, InboxError> {
    Ok(match inbox.event(site, seq)? {
        Some(stored) => match stored.event {
            Ok(event) => crate::admin::trace::event_summary(&event),
            Err(e) => e,
        },
        None => "(event not in the inbox)".into(),
    })
}

/// Open dead letters of one site (open or waiting for their replay; the others are skipped or
/// resolved).
pub fn open_count(inbox: &Inbox, site: &str) -> Result<u64, InboxError> {
    inbox.open_dead_letters(site)
}

/// Dead letters of one site, or of every site, in (site, seq) order.
pub fn list(inbox: &Inbox, site: Option<&str>) -> Result<Vec<DeadLetterView>, InboxError> {
    let sites = match site {
        Some(s) => vec![s.to_string()],
        None => inbox.site_ids()?,
    };
    let mut out = Vec::new();
    for site in sites {
        for d in inbox.dead_letter_list(&site)? {
            out.push(DeadLetterView {
                event: summary(inbox, &site, d.seq)?,
                site: site.clone(),
                seq: d.seq,
                at: crate::admin::status::rfc3339(d.at),
                reason: d.reason,
                state: d.state.as_str().into(),
                document: d.document,
                note: None,
                held: Vec::new(),
            });
        }
    }
    Ok(out)
}

/// One dead letter with its note and the events it holds back, or `None`.
/// [`show`], or why there is none: retention prunes only closed dead letters, so one that was
/// pruned is said to be, rather than "no dead letter" as if there never was one.
pub fn show_explained(
    inbox: &Inbox,
    site: &str,
    seq: u64,
) -> Result<Result<DeadLetterView, String>, InboxError> {
    if let Some(found) = show(inbox, site, seq)? {
        return Ok(Ok(found));
    }
    Ok(Err(match inbox.pruned(site, seq)? {
        Some(p) => format!(
            "site {site} seq {seq} was finished and pruned by retention on {} (keep_days {}): a \
             dead letter it had was closed (skipped or replayed) before",
            crate::admin::status::rfc3339(p.pruned_at),
            p.keep_days
        ),
        None => format!("site {site} has no dead letter with seq {seq}"),
    }))
}

pub fn show(inbox: &Inbox, site: &str, seq: u64) -> Result<Option<DeadLetterView>, InboxError> {
    Ok(inbox.dead_letter(site, seq)?.map(|d| DeadLetterView {
        site: site.to_string(),
        seq: d.seq,
        at: crate::admin::status::rfc3339(d.at),
        reason: d.reason,
        state: d.state.as_str().into(),
        event: match &d.event {
            Ok(e) => crate::admin::trace::event_summary(e),
            Err(e) => e.clone(),
        },
        document: d.document,
        note: d.note,
        held: d.held,
    }))
}

fn action_result(
    site: &str,
    seq: u64,
    action: &'static str,
    result: ReplayResult,
) -> Result<ActionResult, DeadLetterError> {
    match result {
        ReplayResult::Done { state, released } => Ok(ActionResult {
            site: site.to_string(),
            seq,
            action: action.to_string(),
            detail: if released.is_empty() {
                format!("now {}", state.as_str())
            } else {
                format!(
                    "now {}; released {} held event(s): {:?}",
                    state.as_str(),
                    released.len(),
                    released
                )
            },
        }),
        ReplayResult::NotFound => Err(DeadLetterError::NotFound {
            site: site.into(),
            seq,
        }),
        ReplayResult::Closed(state) => Err(DeadLetterError::Refused {
            site: site.into(),
            seq,
            action,
            reason: format!("it is already {}", state.as_str()),
        }),
    }
}

/// Queues a dead letter for another attempt. The caller wakes the pusher afterwards.
pub fn replay(inbox: &Inbox, site: &str, seq: u64) -> Result<ActionResult, DeadLetterError> {
    let result = inbox.replay_dead_letter(site, seq)?;
    action_result(site, seq, "replayed", result)
}

/// Gives a dead letter up (it releases what it held back). The caller wakes the pusher.
pub fn skip(
    inbox: &Inbox,
    site: &str,
    seq: u64,
    note: &str,
) -> Result<ActionResult, DeadLetterError> {
    let result = inbox.skip_dead_letter(site, seq, note)?;
    action_result(site, seq, "skipped", result)
}
