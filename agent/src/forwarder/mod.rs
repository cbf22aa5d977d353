//! The forwarder: drains the store to the relay, oldest first, over HTTPS with mutual TLS.
//!
//! [`state`] holds the pure state machine; this module is its I/O loop. Each round posts
//! `Batch { site, agent, first_seq, events, status }` (enveloped postcard, up to
//! `batch_max_events` events in seq order) to `<relay>/v1/batches`, and on `200 Ack { upto }`
//! deletes the events with `seq <= min(upto, last seq sent)` — never anything it did not send.
//! Answers:
//! - 400 / 403 / 409 / 413 (and other 4xx): logged at ERROR with the relay's reason (also shown
//!   by `scanbridge-agent status`), retried with backoff, never deleted; 413 (or a batch too
//!   large to encode) also halves the batch size. 409: the relay holds these seqs from another
//!   store of this site (a replaced box or a deleted store file); its reason names the
//!   `scanbridge-agent store renumber` command that resolves it.
//!
//! Every POST carries the store's identity ([`Store::store_id`]) in the
//! [`STORE_ID_HEADER`] header, so the relay can tell a store that restarted its numbering.
//! - 429 / 503: wait for `Retry-After` (seconds) when given, else back off.
//! - connection errors, timeouts, other 5xx: capped exponential backoff with jitter.
//!
//! # Pipeline (one batch in flight)
//!
//! Exactly one batch is in flight at a time: the relay stores batches of a site as they come, and
//! its pusher walks the inbox in seq order, so a later batch must never overtake an earlier one.
//! The work around the POST overlaps with it instead (on the blocking pool):
//! - while batch N is in flight, batch N+1 (the events after N's last seq) is read and encoded
//!   (as the bytes the store holds, [`StoredBatch`]), after the delete of what batch N-1's `Ack`
//!   covered, in one job: deletes run one at a time and in order; a due delete also runs before
//!   going idle, before a batch is read from the oldest event, and at shutdown.
//!
//! After a full `Ack` the next batch starts after the last seq sent (the cursor). After anything
//! else (a failure, a partial `Ack`, a failed delete) the cursor is dropped and the next batch is
//! read from the oldest stored event again, once the pending delete finished: events whose delete
//! was lost are simply sent again, and the relay acknowledges them as duplicates. A failed delete
//! also makes the next round back off, as a failed POST does.
//!
//! Deletes are committed without fsync ([`DeleteDurability::Deferred`]) except one at least every
//! [`DURABLE_DELETE_EVERY`] and every delete while ingest is paused (full buffer or disk): why a
//! lost delete is harmless is in the store's module doc ("Durability of deletes").
//!
//! It wakes on every commit (a `Notify` from the writer) and, when idle, sends a heartbeat (a batch
//! without events, carrying the status) every `heartbeat_secs`.

pub mod state;

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use scanbridge_protocol::envelope::EncodeError;
use scanbridge_protocol::{decode, encode, Ack, AgentStatus};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::status::StatusSource;
use crate::store::{DeleteDurability, Deleted, Store, StoreError};
use state::{Machine, Outcome, RetryPolicy, Step};

/// Longest time between two durable (fsynced) deletes while the forwarder drains; the deletes in
/// between are not fsynced. After a power loss at most this much drain is sent again (and
/// deduplicated by the relay). It also bounds the agent's memory growth over a drain: redb holds
/// what the non-durable deletes change until the next durable commit. Measured
/// (`scanbridge-bench --figures 2,3 --rounds 2`, 1,000,000-event drain at ~220,000 events/s,
/// alternated, 2026-11-23): VmHWM growth over the drain 15.8 % at 250 ms, 9.6-10.0 % at 100 ms,
/// 8.5 % (6.0-11.0) at 50 ms, the drain rate unchanged (ratio 0.54-0.57); 20 fsyncs a second
/// while draining cost nothing measurable.
pub const DURABLE_DELETE_EVERY: Duration = Duration::from_millis(50);

pub use scanbridge_protocol::STORE_ID_HEADER;

/// Why the forwarder stopped (it retries everything else forever).
#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    #[error("relay URL {0} cannot be extended with /v1/batches")]
    Url(String),
}

/// Why the next batch could not be built (the round counts as failed and is retried).
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("cannot read the backlog from the store: {0}")]
    Store(#[from] StoreError),
    #[error("a batch of {events} events encodes to {bytes} bytes, more than a message may hold; halving the batch size")]
    TooLarge { events: usize, bytes: usize },
    #[error("cannot encode a batch at seq {first_seq}: {source}")]
    Encode { first_seq: u64, source: EncodeError },
}

/// A batch read from the store and encoded, ready to post.
#[derive(Debug)]
pub struct Prepared {
    pub first_seq: u64,
    /// Seq of the last event; `None` for a heartbeat (no events).
    pub last_seq: Option<u64>,
    pub count: usize,
    pub body: Vec<u8>,
}

/// One stored event, sent as the postcard bytes the store holds, without decoding and encoding
/// it again. postcard writes a `u8` as one raw byte and a tuple without any length, so
/// serialising the bytes as a tuple of `u8` reproduces them exactly: a [`StoredBatch`] encodes to
/// the same bytes as the [`scanbridge_protocol::Batch`] of the decoded events (tested below). Deserialising decodes an
/// [`scanbridge_protocol::Event`] and encodes it again, the exact inverse.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent(pub Vec<u8>);

impl serde::Serialize for StoredEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(self.0.len())?;
        for b in &self.0 {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

impl<'de> serde::Deserialize<'de> for StoredEvent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StoredEvent, D::Error> {
        let event = scanbridge_protocol::Event::deserialize(d)?;
        postcard::to_allocvec(&event)
            .map(StoredEvent)
            .map_err(serde::de::Error::custom)
    }
}

/// [`scanbridge_protocol::Batch`] with its events as stored bytes; same fields in the same order, so the same wire
/// bytes (kind `Batch`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredBatch {
    pub site: String,
    pub agent: String,
    pub first_seq: u64,
    pub events: Vec<StoredEvent>,
    pub status: Option<AgentStatus>,
}

impl scanbridge_protocol::envelope::Message for StoredBatch {
    const KIND: scanbridge_protocol::envelope::Kind = scanbridge_protocol::envelope::Kind::Batch;
}

/// Reads up to `limit` events from seq `from` on (0: from the oldest) and encodes them as one
/// batch carrying `status`. The events travel as the bytes the store holds (a damaged row is
/// refused by the relay's decoder with 400 and kept). Blocking (redb read, postcard encoding).
pub fn prepare_batch(
    store: &Store,
    from: u64,
    limit: usize,
    site: String,
    agent: String,
    status: AgentStatus,
) -> Result<Prepared, PrepareError> {
    let rows = store.read_raw_from_blocking(from, limit)?;
    let first_seq = rows
        .first()
        .map(|r| r.0)
        .unwrap_or_else(|| store.stats().next_seq);
    let last_seq = rows.last().map(|r| r.0);
    let count = rows.len();
    let batch = StoredBatch {
        site,
        agent,
        first_seq,
        events: rows
            .into_iter()
            .map(|(_, bytes)| StoredEvent(bytes))
            .collect(),
        status: Some(status),
    };
    let body = encode(&batch).map_err(|e| match e {
        EncodeError::TooLarge(bytes) => PrepareError::TooLarge {
            events: count,
            bytes,
        },
        source => PrepareError::Encode { first_seq, source },
    })?;
    Ok(Prepared {
        first_seq,
        last_seq,
        count,
        body,
    })
}

/// Work of one round on the blocking pool, overlapping the POST: the delete of what the relay
/// acknowledged last, then the next batch. One job at a time, so deletes stay in order and one
/// thread's memory serves both.
struct Background {
    /// Seq the prepared batch starts at, if one is prepared.
    prefetch_from: Option<u64>,
    /// `(upto, durability)` of the delete, if one runs.
    delete: Option<(u64, DeleteDurability)>,
    handle: JoinHandle<BackgroundDone>,
}

struct BackgroundDone {
    deleted: Option<Result<Deleted, StoreError>>,
    prepared: Option<Result<Prepared, PrepareError>>,
}

/// Settings of the forwarder, from `[relay]`.
#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    pub relay_url: reqwest::Url,
    pub site: String,
    pub agent: String,
    pub batch_max_events: usize,
    pub heartbeat: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

/// Drains the store to the relay.
pub struct Forwarder {
    cfg: ForwarderConfig,
    endpoint: reqwest::Url,
    store: Store,
    client: reqwest::Client,
    status: StatusSource,
    /// Woken by the writer after each commit.
    committed: Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
    machine: Machine,
    /// Current batch size limit; halves on 413, grows back after successes.
    batch_limit: usize,
    /// Consecutive failures, for log throttling.
    failures: u32,
    /// Renewed clients (certificate rotation); switched to between batches.
    client_updates: Option<tokio::sync::watch::Receiver<reqwest::Client>>,
    /// Seq the next batch starts at, after a fully acknowledged batch; `None`: the oldest event.
    cursor: Option<u64>,
    /// Acknowledged events `<= this` are still to be deleted (a later Ack supersedes it).
    delete_due: Option<u64>,
    /// The job running beside the POST, if any.
    background: Option<Background>,
    /// When the last durable delete was started; `None`: the next delete is durable.
    last_durable_delete: Option<Instant>,
    /// A delete failed since the last round: the next round backs off first.
    delete_failed: bool,
}

impl Forwarder {
    pub fn new(
        cfg: ForwarderConfig,
        store: Store,
        client: reqwest::Client,
        status: StatusSource,
        committed: Arc<tokio::sync::Notify>,
        cancel: CancellationToken,
    ) -> Result<Forwarder, ForwarderError> {
        let endpoint = batches_endpoint(&cfg.relay_url)?;
        let machine = Machine::new(RetryPolicy {
            initial: cfg.retry_initial,
            max: cfg.retry_max,
            max_retry_after: Duration::from_secs(600),
        });
        Ok(Forwarder {
            batch_limit: cfg.batch_max_events.max(1),
            cfg,
            endpoint,
            store,
            client,
            status,
            committed,
            cancel,
            machine,
            failures: 0,
            client_updates: None,
            cursor: None,
            delete_due: None,
            background: None,
            last_durable_delete: None,
            delete_failed: false,
        })
    }

    /// Takes renewed relay clients (certificate rotation) from `updates`, switching between
    /// batches: a request in flight finishes on the client it started with.
    pub fn with_client_updates(
        mut self,
        updates: tokio::sync::watch::Receiver<reqwest::Client>,
    ) -> Forwarder {
        self.client_updates = Some(updates);
        self
    }

    /// Switches to a renewed client if one was published since the last batch.
    fn take_renewed_client(&mut self) {
        if let Some(rx) = &mut self.client_updates {
            if rx.has_changed().unwrap_or(false) {
                self.client = rx.borrow_and_update().clone();
                tracing::info!(site = %self.cfg.site, "forwarding with the renewed client certificate");
            }
        }
    }

    /// Runs until cancelled.
    pub async fn run(mut self) -> Result<(), ForwarderError> {
        // Announce ourselves at start: the first round sends a heartbeat even with no backlog.
        let mut heartbeat_due = Instant::now();
        let mut step = self.machine.work_available();
        let cancel = self.cancel.clone();
        loop {
            match step {
                Step::Wait => {
                    // Counters are exact only once the acknowledged events are deleted.
                    self.settle_deletes().await;
                    if self.store.stats().backlog_events > 0 {
                        if !self.unsent_events() {
                            // Rows below the cursor (a delete lost with a reopened store):
                            // send them again from the oldest; the relay has them already.
                            self.cursor = None;
                        }
                        step = self.machine.work_available();
                        continue;
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = self.committed.notified() => {}
                        _ = tokio::time::sleep_until(heartbeat_due) => {}
                    }
                    step = self.machine.work_available();
                }
                Step::Sleep(d) => {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(d) => {}
                    }
                    step = self.machine.backoff_elapsed();
                }
                Step::Send => {
                    self.take_renewed_client();
                    let prepared = tokio::select! {
                        _ = cancel.cancelled() => break,
                        p = self.next_batch() => p,
                    };
                    if std::mem::take(&mut self.delete_failed) {
                        // The store could not delete (disk full or failing): back off instead
                        // of resending at full speed what the relay already holds.
                        step = self.machine.on_outcome(&Outcome::Failed, rand::random());
                        continue;
                    }
                    let prepared = match prepared {
                        Ok(p) => p,
                        Err(e) => {
                            self.prepare_failed(e);
                            step = self.machine.on_outcome(&Outcome::Failed, rand::random());
                            continue;
                        }
                    };
                    if prepared.count == 0 && Instant::now() < heartbeat_due {
                        step = self.machine.nothing_to_send();
                        continue;
                    }
                    self.spawn_background(&prepared);
                    let outcome = tokio::select! {
                        _ = cancel.cancelled() => break,
                        o = self.send(prepared) => o,
                    };
                    if !matches!(outcome, Outcome::Acked { .. }) {
                        // Start again from the oldest stored event (module doc, "Pipeline").
                        self.cursor = None;
                    }
                    heartbeat_due = Instant::now() + self.cfg.heartbeat;
                    step = self.machine.on_outcome(&outcome, rand::random());
                }
            }
        }
        // Delete what was acknowledged before the store closes (fewer events sent twice).
        self.settle_deletes().await;
        tracing::debug!("forwarder stopped");
        Ok(())
    }

    /// Whether events after the cursor (or any event, without a cursor) wait to be sent.
    fn unsent_events(&self) -> bool {
        let stats = self.store.stats();
        match self.cursor {
            Some(from) => stats.next_seq > from,
            None => stats.backlog_events > 0,
        }
    }

    /// The batch to post now: the prefetched one if it starts at the cursor, else read and
    /// encoded now (from the oldest event once every acknowledged event is deleted, without a
    /// cursor).
    async fn next_batch(&mut self) -> Result<Prepared, PrepareError> {
        if let Some((from, prepared)) = self.reap_background().await {
            if Some(from) == self.cursor {
                return prepared;
            }
        }
        let from = match self.cursor {
            Some(from) => from,
            None => {
                self.settle_deletes().await;
                0
            }
        };
        let (store, job) = (self.store.clone(), self.prepare_job());
        tokio::task::spawn_blocking(move || job(&store, from))
            .await
            .map_err(|e| PrepareError::Store(StoreError::Join(e.to_string())))?
    }

    /// `prepare_batch` with this round's batch size, identity and status.
    fn prepare_job(&self) -> impl FnOnce(&Store, u64) -> Result<Prepared, PrepareError> {
        let (limit, site, agent) = (
            self.batch_limit,
            self.cfg.site.clone(),
            self.cfg.agent.clone(),
        );
        let status = self.status.build();
        move |store, from| prepare_batch(store, from, limit, site, agent, status)
    }

    /// The durability of the next delete: durable at least every [`DURABLE_DELETE_EVERY`], and
    /// always while ingest is paused (the writer waits for freed space).
    fn next_delete_durability(&mut self) -> DeleteDurability {
        let due = self
            .last_durable_delete
            .is_none_or(|t| t.elapsed() >= DURABLE_DELETE_EVERY)
            || self.store.stats().ingest_paused;
        if due {
            self.last_durable_delete = Some(Instant::now());
            DeleteDurability::Immediate
        } else {
            DeleteDurability::Deferred
        }
    }

    /// Starts the job beside the POST of `current`: the due delete, then the batch after
    /// `current` if events after it are already committed.
    fn spawn_background(&mut self, current: &Prepared) {
        let prefetch_from = current
            .last_seq
            .and_then(|l| l.checked_add(1))
            .filter(|from| self.store.stats().next_seq > *from);
        let delete = self
            .delete_due
            .take()
            .map(|upto| (upto, self.next_delete_durability()));
        if prefetch_from.is_none() && delete.is_none() {
            return;
        }
        let (store, job) = (self.store.clone(), self.prepare_job());
        let handle = tokio::task::spawn_blocking(move || {
            let deleted = delete.map(|(upto, d)| store.delete_upto_with(upto, d));
            let prepared = prefetch_from.map(|from| job(&store, from));
            BackgroundDone { deleted, prepared }
        });
        self.background = Some(Background {
            prefetch_from,
            delete,
            handle,
        });
    }

    /// Awaits the background job, handles its delete, and returns its prepared batch (with the
    /// seq it starts at), unless the delete failed.
    async fn reap_background(&mut self) -> Option<(u64, Result<Prepared, PrepareError>)> {
        let bg = self.background.take()?;
        let done = match bg.handle.await {
            Ok(done) => done,
            Err(e) => BackgroundDone {
                deleted: bg.delete.map(|_| Err(StoreError::Join(e.to_string()))),
                prepared: None,
            },
        };
        if let (Some((upto, durability)), Some(result)) = (bg.delete, done.deleted) {
            if !self.delete_finished(upto, durability, result) {
                return None;
            }
        }
        bg.prefetch_from.zip(done.prepared)
    }

    /// Awaits the background job and runs the due delete now (before going idle, before reading
    /// from the oldest event, at shutdown).
    async fn settle_deletes(&mut self) {
        let _ = self.reap_background().await;
        let Some(upto) = self.delete_due.take() else {
            return;
        };
        let durability = self.next_delete_durability();
        let store = self.store.clone();
        let result = tokio::task::spawn_blocking(move || store.delete_upto_with(upto, durability))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))
            .and_then(|r| r);
        self.delete_finished(upto, durability, result);
    }

    /// Logs a finished delete. On failure the cursor is dropped, so the events are read again
    /// from the oldest and resent (the relay deduplicates), and the next delete is durable.
    fn delete_finished(
        &mut self,
        upto: u64,
        durability: DeleteDurability,
        result: Result<Deleted, StoreError>,
    ) -> bool {
        match result {
            Ok(d) => {
                tracing::debug!(event_seq = upto, deleted = d.events, durability = ?durability, "acknowledged events deleted");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, event_seq = upto, "cannot delete acknowledged events; they will be resent (the relay deduplicates)");
                self.cursor = None;
                self.last_durable_delete = None;
                self.delete_failed = true;
                false
            }
        }
    }

    fn prepare_failed(&mut self, e: PrepareError) {
        match &e {
            PrepareError::TooLarge { events, .. } => {
                self.shrink_batch(*events);
                tracing::warn!(error = %e, "batch too large to encode");
            }
            PrepareError::Store(_) => {
                self.cursor = None;
                tracing::error!(error = %e, "cannot read the backlog from the store");
            }
            PrepareError::Encode { first_seq, .. } => {
                tracing::error!(error = %e, event_seq = first_seq, "cannot encode a batch");
            }
        }
    }

    /// Posts one batch and applies the relay's answer. Never deletes on anything but a valid Ack.
    async fn send(&mut self, batch: Prepared) -> Outcome {
        let Prepared {
            first_seq,
            last_seq,
            count,
            body,
        } = batch;
        let started = std::time::Instant::now();
        let response = self
            .client
            .post(self.endpoint.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(STORE_ID_HEADER, self.store.store_id())
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                let chain = error_chain(&e);
                self.status
                    .relay_failed(crate::now_micros(), format!("unreachable: {chain}"));
                self.note_failure(|n| tracing::warn!(error = %chain, failures = n, "relay unreachable; backing off"));
                return Outcome::Failed;
            }
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        match status {
            StatusCode::OK => {
                let bytes = match response.bytes().await {
                    Ok(b) => b,
                    Err(e) => {
                        self.status
                            .relay_failed(crate::now_micros(), format!("answer cut off: {e}"));
                        self.note_failure(|n| tracing::warn!(error = %e, failures = n, "relay answer cut off; retrying"));
                        return Outcome::Failed;
                    }
                };
                let ack: Ack = match decode(&bytes) {
                    Ok(a) => a,
                    Err(e) => {
                        self.status
                            .relay_failed(crate::now_micros(), format!("undecodable Ack: {e}"));
                        tracing::error!(error = %e, event_seq = first_seq, "relay answered 200 with an undecodable Ack; retrying (relay and agent versions differ?)");
                        return Outcome::Failed;
                    }
                };
                let post_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.acked(ack, first_seq, last_seq, count, post_us).await
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                self.status.relay_failed(
                    crate::now_micros(),
                    format!("relay busy ({})", status.as_u16()),
                );
                tracing::info!(
                    status = status.as_u16(),
                    retry_after_s = retry_after.map(|d| d.as_secs()),
                    "relay is shedding load; waiting"
                );
                Outcome::Throttled { retry_after }
            }
            s if s.is_client_error() => {
                let reason = reason_text(response).await;
                if s == StatusCode::PAYLOAD_TOO_LARGE {
                    self.shrink_batch(count);
                }
                self.status.relay_failed(
                    crate::now_micros(),
                    format!("relay refused the batch ({}): {reason}", s.as_u16()),
                );
                if s == StatusCode::CONFLICT {
                    tracing::error!(status = s.as_u16(), reason = %reason, site = %self.cfg.site, event_seq = first_seq, events = count,
                        "relay refused the batch: its seqs collide with another store of this site; events are kept and retried — stop the agent and run the command the reason names");
                } else {
                    tracing::error!(status = s.as_u16(), reason = %reason, site = %self.cfg.site, event_seq = first_seq, events = count,
                        "relay refused the batch; events are kept and retried — fix the cause (403: site/certificate mismatch)");
                }
                Outcome::Refused { status: s.as_u16() }
            }
            s => {
                let reason = reason_text(response).await;
                self.status.relay_failed(
                    crate::now_micros(),
                    format!("relay error ({}): {reason}", s.as_u16()),
                );
                self.note_failure(|n| tracing::warn!(status = s.as_u16(), reason = %reason, failures = n, "relay error; backing off"));
                Outcome::Failed
            }
        }
    }

    async fn acked(
        &mut self,
        ack: Ack,
        first_seq: u64,
        last_seq: Option<u64>,
        count: usize,
        post_us: u64,
    ) -> Outcome {
        self.status.relay_acked(crate::now_micros());
        if self.failures > 0 {
            tracing::info!(failures = self.failures, "relay reachable again");
        }
        self.failures = 0;
        self.batch_limit =
            (self.batch_limit.saturating_mul(2)).min(self.cfg.batch_max_events.max(1));
        if let Some(last) = last_seq {
            if ack.upto > last {
                tracing::warn!(
                    upto = ack.upto,
                    last_sent = last,
                    "relay acknowledged beyond the batch; deleting only what was sent"
                );
            }
            let upto = ack.upto.min(last);
            if upto < first_seq {
                tracing::warn!(
                    upto = ack.upto,
                    first_seq,
                    "relay acknowledged none of the batch; retrying"
                );
                return Outcome::Failed;
            }
            // Deleted beside the next POST (or before going idle): module doc, "Pipeline".
            self.delete_due = Some(upto);
            // A partial Ack: the rest is read again from the oldest stored event.
            self.cursor = (upto == last).then(|| last.saturating_add(1));
            tracing::debug!(
                event_seq = upto,
                duplicates = ack.duplicates,
                events = count,
                post_us,
                "batch acknowledged"
            );
        }
        Outcome::Acked {
            backlog_left: self.unsent_events(),
        }
    }

    fn shrink_batch(&mut self, count: usize) {
        self.batch_limit = (count / 2).max(1);
    }

    fn note_failure(&mut self, log: impl FnOnce(u32)) {
        self.failures = self.failures.saturating_add(1);
        if self.failures == 1 || self.failures % 10 == 0 {
            log(self.failures);
        } else {
            tracing::debug!(failures = self.failures, "relay attempt failed");
        }
    }
}

/// `<relay>/v1/batches`, keeping any path prefix of the configured URL.
pub fn batches_endpoint(base: &reqwest::Url) -> Result<reqwest::Url, ForwarderError> {
    let mut s = base.as_str().to_string();
    if !s.ends_with('/') {
        s.push('/');
    }
    reqwest::Url::parse(&s)
        .and_then(|u| u.join("v1/batches"))
        .map_err(|_| ForwarderError::Url(base.to_string()))
}

/// `Retry-After` in delay-seconds form.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Most characters of a relay's refusal kept for the log and the status: room for the longest
/// the relay writes (a store conflict's, with the command to run, is about 700), bounded against
/// a proxy's HTML error page.
const MAX_REASON_CHARS: usize = 2000;

async fn reason_text(response: reqwest::Response) -> String {
    match response.text().await {
        Ok(t) if !t.trim().is_empty() => t.trim().chars().take(MAX_REASON_CHARS).collect(),
        _ => "(no reason given)".into(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batches_endpoint_keeps_a_path_prefix() {
        let u =
            |s: &str| batches_endpoint(&reqwest::Url::parse(s).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(
            u("https://r:8443").map(|u| u.to_string()).ok(),
            Some("https://r:8443/v1/batches".into())
        );
        assert_eq!(
            u("https://r/relay").map(|u| u.to_string()).ok(),
            Some("https://r/relay/v1/batches".into())
        );
    }

    #[test]
    fn a_stored_batch_encodes_to_the_bytes_of_the_decoded_batch_and_decodes_back() {
        use scanbridge_protocol::{Batch, Event, EventBody, Reading, Scan, Source, Symbology};
        let events: Vec<Event> = (7..10)
            .map(|seq| Event {
                seq,
                captured_at: 1_700_000_000_000_000 + seq as i64,
                received_at: -5,
                source: Source::Mqtt {
                    broker: "site".into(),
                    topic: "scanbridge/SC-01/scan".into(),
                },
                device: format!("SC-{seq}"),
                body: if seq % 2 == 0 {
                    EventBody::Reading(Reading {
                        tag: "t".into(),
                        value: 1.5,
                        unit: Some("kg".into()),
                    })
                } else {
                    EventBody::Scan(Scan {
                        code: "0123456789012".into(),
                        symbology: Symbology::Unknown,
                        gs1: None,
                        op: None,
                        qty: Some(300.0),
                        location: None,
                        reference: Some("r".into()),
                    })
                },
            })
            .collect();
        let status = AgentStatus {
            version: "1.2.3".into(),
            backlog_events: 3,
            backlog_bytes: 180,
            oldest_pending_age_ms: Some(12),
            disk_used_bytes: 1 << 20,
            disk_cap_bytes: 1 << 30,
            quarantine_count: 0,
            ingest_paused: false,
            sources: Vec::new(),
            cert_not_after: None,
            clock: 1_700_000_000_000_000,
        };
        let batch = Batch {
            site: "WH01".into(),
            agent: "gw".into(),
            first_seq: 7,
            events: events.clone(),
            status: Some(status.clone()),
        };
        let stored = StoredBatch {
            site: "WH01".into(),
            agent: "gw".into(),
            first_seq: 7,
            events: events
                .iter()
                .map(|e| StoredEvent(postcard::to_allocvec(e).unwrap_or_default()))
                .collect(),
            status: Some(status),
        };
        let bytes = encode(&stored).unwrap_or_default();
        assert!(!bytes.is_empty());
        assert_eq!(bytes, encode(&batch).unwrap_or_default());
        assert_eq!(decode::<Batch>(&bytes).ok(), Some(batch));
        assert_eq!(decode::<StoredBatch>(&bytes).ok(), Some(stored));
    }

    #[test]
    fn retry_after_in_seconds_is_understood_and_dates_are_ignored() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::RETRY_AFTER,
            reqwest::header::HeaderValue::from_static("7"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            reqwest::header::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
