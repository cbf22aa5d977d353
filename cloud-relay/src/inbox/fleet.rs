//! Read-only queries of the store for fleet status, the admin API and the trace (owned by the
//! fleet status code in [`crate::admin`]): the list of known sites, the oldest event not yet
//! pushed to Odoo, when the relay stored an event (`intake_log`), a site's recent events, one
//! event, and a bounded search by barcode.
//!
//! Everything here is a blocking read transaction: call it from `spawn_blocking`.

use redb::ReadableTable;
use scanbridge_protocol::{Event, EventBody};

use super::rows::{self, INBOX_BATCHES};
use super::{
    Inbox, InboxError, QuarantineEntry, AGENT_STATUS, INTAKE_LOG, PUSH_CURSOR, QUARANTINE,
    SITE_HIGHEST,
};

/// The first event of a site at or past its push cursor (the oldest one not yet in Odoo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldestUnpushed {
    pub seq: u64,
    /// When the agent received it (agent clock), microseconds.
    pub received_at: i64,
    /// When the relay stored it (relay clock), if recorded.
    pub stored_at: Option<i64>,
}

/// The relay's side of one site's sync state, read in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushState {
    pub cursor: u64,
    pub highest_seq: Option<u64>,
    pub oldest_unpushed: Option<OldestUnpushed>,
}

impl PushState {
    /// Events stored at the relay and not yet handled by the pusher.
    pub fn inbox_lag(&self) -> u64 {
        match (&self.oldest_unpushed, self.highest_seq) {
            (Some(oldest), Some(high)) if high >= oldest.seq => high - oldest.seq + 1,
            _ => 0,
        }
    }
}

/// One stored event as read back; `event` is `Err` when its bytes do not decode.
#[derive(Debug, Clone)]
pub struct StoredEventAt {
    pub seq: u64,
    pub stored_at: Option<i64>,
    pub event: Result<Event, String>,
}

/// Where a barcode search stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BarcodeMatches {
    pub hits: Vec<(String, u64)>,
    /// True when the scan limit was reached before the whole inbox was searched.
    pub truncated: bool,
}

/// When the relay stored `(site, seq)`, from the `intake_log` row covering it.
pub(super) fn stored_at_in(
    log: &impl ReadableTable<(&'static str, u64), (i64, u64)>,
    site: &str,
    seq: u64,
) -> Result<Option<i64>, InboxError> {
    let mut range = log.range((site, 0)..=(site, seq))?;
    if let Some(row) = range.next_back() {
        let (_, value) = row?;
        let (at, last) = value.value();
        if last >= seq {
            return Ok(Some(at));
        }
    }
    Ok(None)
}

impl Inbox {
    /// Every site the relay has heard from (events or a heartbeat), sorted by id.
    pub fn site_ids(&self) -> Result<Vec<String>, InboxError> {
        let txn = self.db.begin_read()?;
        let mut out = std::collections::BTreeSet::new();
        for row in txn.open_table(SITE_HIGHEST)?.iter()? {
            out.insert(row?.0.value().to_string());
        }
        for row in txn.open_table(AGENT_STATUS)?.iter()? {
            out.insert(row?.0.value().to_string());
        }
        Ok(out.into_iter().collect())
    }

    /// Cursor, highest seq and the oldest event not yet handled by the pusher.
    pub fn push_state(&self, site: &str) -> Result<PushState, InboxError> {
        let txn = self.db.begin_read()?;
        let cursor = txn
            .open_table(PUSH_CURSOR)?
            .get(site)?
            .map_or(0, |v| v.value());
        let highest_seq = txn.open_table(SITE_HIGHEST)?.get(site)?.map(|v| v.value());
        let inbox = txn.open_table(INBOX_BATCHES)?;
        let log = txn.open_table(INTAKE_LOG)?;
        let mut oldest_unpushed = None;
        if let Some(stored) = rows::events_from(&inbox, site, cursor, 1)?
            .into_iter()
            .next()
        {
            // An undecodable event still counts as unpushed; its age is then unknown (0).
            let received_at = stored.event.map_or(0, |e| e.received_at);
            oldest_unpushed = Some(OldestUnpushed {
                seq: stored.seq,
                received_at,
                stored_at: stored_at_in(&log, site, stored.seq)?,
            });
        }
        Ok(PushState {
            cursor,
            highest_seq,
            oldest_unpushed,
        })
    }

    /// When the relay stored event `(site, seq)`, if it is recorded.
    pub fn stored_at(&self, site: &str, seq: u64) -> Result<Option<i64>, InboxError> {
        let txn = self.db.begin_read()?;
        let log = txn.open_table(INTAKE_LOG)?;
        stored_at_in(&log, site, seq)
    }

    /// One stored event, or `None` when the relay does not have it.
    pub fn event(&self, site: &str, seq: u64) -> Result<Option<StoredEventAt>, InboxError> {
        let txn = self.db.begin_read()?;
        let inbox = txn.open_table(INBOX_BATCHES)?;
        let Some(event) = rows::event_at(&inbox, site, seq)? else {
            return Ok(None);
        };
        let log = txn.open_table(INTAKE_LOG)?;
        Ok(Some(StoredEventAt {
            seq,
            stored_at: stored_at_in(&log, site, seq)?,
            event,
        }))
    }

    /// The `limit` newest events of a site, newest first.
    pub fn recent_events(
        &self,
        site: &str,
        limit: usize,
    ) -> Result<Vec<StoredEventAt>, InboxError> {
        let txn = self.db.begin_read()?;
        let inbox = txn.open_table(INBOX_BATCHES)?;
        let log = txn.open_table(INTAKE_LOG)?;
        let mut out = Vec::new();
        for stored in rows::events_newest_first(&inbox, site, limit)? {
            out.push(StoredEventAt {
                seq: stored.seq,
                stored_at: stored_at_in(&log, site, stored.seq)?,
                event: stored.event,
            });
        }
        Ok(out)
    }

    /// The `limit` newest quarantined payloads of a site, newest first.
    pub fn recent_quarantine(
        &self,
        site: &str,
        limit: usize,
    ) -> Result<Vec<QuarantineEntry>, InboxError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(QUARANTINE)?;
        let mut out = Vec::new();
        for row in table.range((site, 0)..=(site, u64::MAX))?.rev().take(limit) {
            let (key, value) = row?;
            let (received_at, raw, reason) = value.value();
            out.push(QuarantineEntry {
                seq: key.value().1,
                received_at,
                raw: raw.to_vec(),
                reason: reason.to_string(),
            });
        }
        Ok(out)
    }

    /// Events whose scan code (or GS1 GTIN/SSCC, or quarantined raw text) equals `code`,
    /// newest first per site, at most `max_hits`; at most `max_scanned` events are read.
    pub fn find_by_barcode(
        &self,
        code: &str,
        max_hits: usize,
        max_scanned: usize,
    ) -> Result<BarcodeMatches, InboxError> {
        let txn = self.db.begin_read()?;
        let inbox = txn.open_table(INBOX_BATCHES)?;
        let mut hits = Vec::new();
        let mut truncated = false;
        let mut scanned = 0usize;
        'rows: for row in inbox.iter()?.rev() {
            let (key, value) = row?;
            let (site, first) = key.value();
            let (last, format, bytes) = value.value();
            for stored in rows::decode_row(first, last, format, bytes)
                .into_iter()
                .rev()
            {
                if scanned >= max_scanned {
                    truncated = true;
                    break 'rows;
                }
                scanned += 1;
                let Ok(event) = stored.event else {
                    continue;
                };
                if event_matches(&event, code) {
                    hits.push((site.to_string(), stored.seq));
                    if hits.len() >= max_hits {
                        truncated = true;
                        break 'rows;
                    }
                }
            }
        }
        Ok(BarcodeMatches { hits, truncated })
    }
}

/// Whether an event carries `code`: the scan's code, its GS1 GTIN or SSCC, or the raw bytes of
/// a quarantined payload.
pub fn event_matches(event: &Event, code: &str) -> bool {
    match &event.body {
        EventBody::Scan(scan) => {
            scan.code == code
                || scan.gs1.as_ref().is_some_and(|g| {
                    g.gtin.as_deref() == Some(code) || g.sscc.as_deref() == Some(code)
                })
        }
        EventBody::Reading(r) => r.tag == code,
        EventBody::Quarantined(q) => q.raw == code.as_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scanbridge_protocol::{Batch, Quarantined, Scan, Source, Symbology};

    fn event(seq: u64, body: EventBody) -> Event {
        Event {
            seq,
            captured_at: 1,
            received_at: 100 + seq as i64,
            source: Source::Serial {
                port: "/dev/ttyACM0".into(),
            },
            device: "SC-01".into(),
            body,
        }
    }

    fn scan(code: &str) -> EventBody {
        EventBody::Scan(Scan {
            code: code.into(),
            symbology: Symbology::Code128,
            gs1: None,
            op: None,
            qty: None,
            location: None,
            reference: None,
        })
    }

    fn store(inbox: &Inbox, site: &str, first: u64, bodies: Vec<EventBody>, now: i64) {
        let events: Vec<Event> = bodies
            .into_iter()
            .enumerate()
            .map(|(i, b)| event(first + i as u64, b))
            .collect();
        let batch = Batch {
            site: site.into(),
            agent: "gw".into(),
            first_seq: first,
            events,
            status: None,
        };
        let body = scanbridge_protocol::encode(&batch).expect("encode");
        inbox
            .accept_batch(site, &batch, &body, now)
            .expect("accept");
    }

    #[test]
    fn the_relay_remembers_when_it_stored_each_batch_and_what_waits_for_odoo() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inbox = Inbox::open(&dir.path().join("relay.redb")).expect("open");
        store(&inbox, "A", 1, vec![scan("x"), scan("y")], 1_000);
        store(&inbox, "A", 2, vec![scan("y"), scan("z")], 2_000);
        assert_eq!(inbox.stored_at("A", 1).expect("read"), Some(1_000));
        assert_eq!(inbox.stored_at("A", 2).expect("read"), Some(1_000));
        assert_eq!(inbox.stored_at("A", 3).expect("read"), Some(2_000));
        assert_eq!(inbox.stored_at("A", 4).expect("read"), None);
        let push = inbox.push_state("A").expect("push");
        assert_eq!(push.inbox_lag(), 3);
        assert_eq!(
            push.oldest_unpushed,
            Some(OldestUnpushed {
                seq: 1,
                received_at: 101,
                stored_at: Some(1_000)
            })
        );
        assert_eq!(inbox.site_ids().expect("sites"), ["A"]);
    }

    #[test]
    fn recent_reads_are_newest_first_and_bounded_and_barcodes_are_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inbox = Inbox::open(&dir.path().join("relay.redb")).expect("open");
        let q = |raw: &[u8]| {
            EventBody::Quarantined(Quarantined {
                raw: raw.to_vec(),
                reason: "bad".into(),
            })
        };
        store(
            &inbox,
            "A",
            1,
            vec![scan("x"), q(b"1"), scan("x"), q(b"2")],
            5,
        );
        store(&inbox, "B", 1, vec![scan("x")], 5);
        let seqs: Vec<u64> = inbox
            .recent_events("A", 3)
            .expect("recent")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, [4, 3, 2]);
        let quarantine = inbox.recent_quarantine("A", 1).expect("quarantine");
        assert_eq!((quarantine.len(), quarantine[0].seq), (1, 4));
        let found = inbox.find_by_barcode("x", 10, 100).expect("find");
        assert_eq!(
            found.hits,
            [
                ("B".to_string(), 1),
                ("A".to_string(), 3),
                ("A".to_string(), 1)
            ]
        );
        assert!(!found.truncated);
        assert!(inbox.find_by_barcode("x", 10, 2).expect("find").truncated);
    }
}
