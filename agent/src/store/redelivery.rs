//! The MQTT redelivery record of one packet id: the hashes of the messages committed under it
//! whose PUBACK the broker has not yet been seen to process, oldest first. Pure logic; the
//! writer ([`super::writer`]) keeps one such list per `(broker, packet id)` in the
//! `mqtt_unconfirmed` table and decides with [`redelivery_decision`].
//!
//! Why a list and not one hash per packet id: mosquitto 2.0.11 puts a reconnecting session's
//! whole queue in flight at once and allocates packet ids sequentially, so a queue deeper than
//! 65,535 messages has several messages in flight under one id (measured:
//! `tests/e2e/tests/broker_pkid_reuse.rs`). A crash or reconnect then brings every one of them
//! back with DUP set; one hash per id recognised only the newest of them and stored the others
//! again (86,527 duplicates of 200,000 in `broker_queue.rs`'s deep-queue SIGKILL test).
//!
//! The broker keeps the in-flight messages of one id in order and a PUBACK for that id removes
//! the *oldest* of them (mosquitto `db__message_delete_outgoing`). The agent acknowledges in the
//! order it received, and each message exactly once per connection (see
//! [`crate::sources::mqtt`]), so the list mirrors the broker's: the entries whose PUBACK the
//! broker has processed are always a prefix. When the broker is seen to have processed `n`
//! PUBACKs for an id, [`PkidHashes::retire_oldest`] drops the `n` oldest entries: never one the
//! broker may still redeliver.

/// Bytes of one message hash ([`super::writer::message_hash`]).
pub const HASH_LEN: usize = 8;

/// Most entries kept per packet id; a longer list drops its oldest entry. Entries pile up only
/// where the broker processed PUBACKs the agent never saw confirmed (a connection lost between a
/// PUBACK and the next PINGRESP), and a message is still redeliverable only while it is among the
/// broker's in-flight messages: 32 generations of one id are 2,097,120 messages, more than the
/// shipped broker fragment can queue (`max_queued_bytes`, ~1.8 million scans).
pub const MAX_PER_PKID: usize = 32;

/// What to do with an MQTT message given the record of its packet id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedeliveryDecision {
    /// New message (or one never committed): store it and record its hash.
    Store,
    /// A redelivery of a message committed before: acknowledge, do not store again.
    AlreadyCommitted,
}

/// The pure rule: a DUP message whose hash is among the unconfirmed ones of its packet id is a
/// copy of a committed message. A message without DUP was never sent before, so it is new
/// whatever the record holds.
pub fn redelivery_decision(dup: bool, record: &PkidHashes, hash: [u8; 8]) -> RedeliveryDecision {
    if dup && record.contains(&hash) {
        RedeliveryDecision::AlreadyCommitted
    } else {
        RedeliveryDecision::Store
    }
}

/// Unconfirmed message hashes of one packet id, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PkidHashes(Vec<[u8; HASH_LEN]>);

impl PkidHashes {
    /// From the stored value (concatenated hashes). A trailing partial hash cannot be written by
    /// [`PkidHashes::encode`]; it is ignored.
    pub fn decode(bytes: &[u8]) -> PkidHashes {
        PkidHashes(
            bytes
                .chunks_exact(HASH_LEN)
                .map(|c| {
                    let mut h = [0; HASH_LEN];
                    h.copy_from_slice(c);
                    h
                })
                .collect(),
        )
    }

    /// The stored value.
    pub fn encode(&self) -> Vec<u8> {
        self.0.concat()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn contains(&self, hash: &[u8; HASH_LEN]) -> bool {
        self.0.contains(hash)
    }

    /// Records a committed message; returns whether the oldest entry was dropped to stay within
    /// [`MAX_PER_PKID`].
    pub fn push(&mut self, hash: [u8; HASH_LEN]) -> bool {
        let evicted = self.0.len() >= MAX_PER_PKID;
        if evicted {
            self.0.remove(0);
        }
        self.0.push(hash);
        evicted
    }

    /// The broker processed `n` more PUBACKs for this packet id: drops the `n` oldest entries.
    pub fn retire_oldest(&mut self, n: usize) {
        self.0.drain(..n.min(self.0.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H1: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
    const H2: [u8; 8] = [8, 7, 6, 5, 4, 3, 2, 1];

    fn record(hashes: &[[u8; 8]]) -> PkidHashes {
        let mut r = PkidHashes::default();
        for h in hashes {
            r.push(*h);
        }
        r
    }

    #[test]
    fn a_redelivered_message_with_a_recorded_hash_is_already_committed() {
        assert_eq!(
            redelivery_decision(true, &record(&[H1]), H1),
            RedeliveryDecision::AlreadyCommitted
        );
    }

    #[test]
    fn an_older_generation_of_a_reused_packet_id_is_still_recognised() {
        // Two messages in flight under one id, both committed: both copies are recognised.
        let r = record(&[H1, H2]);
        assert_eq!(
            redelivery_decision(true, &r, H1),
            RedeliveryDecision::AlreadyCommitted
        );
        assert_eq!(
            redelivery_decision(true, &r, H2),
            RedeliveryDecision::AlreadyCommitted
        );
    }

    #[test]
    fn a_first_delivery_is_stored_even_when_the_record_has_its_hash() {
        assert_eq!(
            redelivery_decision(false, &record(&[H1]), H1),
            RedeliveryDecision::Store
        );
    }

    #[test]
    fn a_redelivery_that_was_never_committed_is_stored() {
        assert_eq!(
            redelivery_decision(true, &PkidHashes::default(), H1),
            RedeliveryDecision::Store
        );
        assert_eq!(
            redelivery_decision(true, &record(&[H2]), H1),
            RedeliveryDecision::Store
        );
    }

    #[test]
    fn retiring_drops_the_oldest_entries_first_and_never_more_than_there_are() {
        let mut r = record(&[H1, H2, H1]);
        r.retire_oldest(1);
        assert_eq!(r, record(&[H2, H1]));
        r.retire_oldest(5);
        assert!(r.is_empty());
    }

    #[test]
    fn a_full_record_drops_its_oldest_entry() {
        let mut r = PkidHashes::default();
        for i in 0..MAX_PER_PKID {
            assert!(!r.push([i as u8; 8]));
        }
        assert!(r.push([0xff; 8]));
        assert_eq!(r.len(), MAX_PER_PKID);
        assert!(!r.contains(&[0; 8]) && r.contains(&[1; 8]) && r.contains(&[0xff; 8]));
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_the_identity(hashes in proptest::collection::vec(any::<[u8; 8]>(), 0..MAX_PER_PKID)) {
            let r = record(&hashes);
            prop_assert_eq!(PkidHashes::decode(&r.encode()), r);
        }

        /// The broker model: a FIFO of in-flight messages under one id, a PUBACK removes the
        /// oldest. Whatever number of the agent's PUBACKs the broker processed, retiring that
        /// many keeps every message the broker can still redeliver.
        #[test]
        fn retiring_processed_pubacks_keeps_every_message_still_in_flight(
            committed in 1usize..MAX_PER_PKID,
            processed_frac in 0.0f64..=1.0,
            confirmed_frac in 0.0f64..=1.0,
        ) {
            let hashes: Vec<[u8; 8]> = (0..committed).map(|i| (i as u64).to_le_bytes()).collect();
            let mut r = record(&hashes);
            let processed = (committed as f64 * processed_frac) as usize;
            let confirmed = (processed as f64 * confirmed_frac) as usize;
            r.retire_oldest(confirmed);
            for h in &hashes[processed..] {
                prop_assert_eq!(redelivery_decision(true, &r, *h), RedeliveryDecision::AlreadyCommitted);
            }
        }
    }
}
