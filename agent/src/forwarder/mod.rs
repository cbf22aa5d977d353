//! The forwarder: drains the store to the relay, oldest first, over HTTPS with mutual TLS.
//!
//! [`state`] holds the pure state machine; this module is its I/O loop. Each round reads up to
//! `batch_max_events` events in seq order, posts `Batch { site, agent, first_seq, events, status }`
//! (enveloped postcard) to `<relay>/v1/batches`, and on `200 Ack { upto }` deletes the events
//! with `seq <= min(upto, last seq sent)` — never anything it did not send. Answers:
//! - 400 / 403 / 413 (and other 4xx): logged at ERROR with the relay's reason, retried with
//!   backoff, never deleted; 413 (or a batch too large to encode) also halves the batch size.
//! - 429 / 503: wait for `Retry-After` (seconds) when given, else back off.
//! - connection errors, timeouts, other 5xx: capped exponential backoff with jitter.
//!
//! It wakes on every commit (a `Notify` from the writer) and, when idle, sends a heartbeat (a batch
//! without events, carrying the status) every `heartbeat_secs`.

pub mod state;

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use scanbridge_protocol::envelope::EncodeError;
use scanbridge_protocol::{decode, encode, Ack, Batch, Event};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::status::StatusSource;
use crate::store::Store;
use state::{Machine, Outcome, RetryPolicy, Step};

/// Why the forwarder stopped (it retries everything else forever).
#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    #[error("relay URL {0} cannot be extended with /v1/batches")]
    Url(String),
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
                    if self.store.stats().backlog_events > 0 {
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
                    let limit = self.batch_limit;
                    let events = tokio::select! {
                        _ = cancel.cancelled() => break,
                        r = self.store.read_oldest(limit) => r,
                    };
                    let events = match events {
                        Ok(e) => e,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot read the backlog from the store");
                            step = self.machine.on_outcome(&Outcome::Failed, rand::random());
                            continue;
                        }
                    };
                    if events.is_empty() && Instant::now() < heartbeat_due {
                        step = self.machine.nothing_to_send();
                        continue;
                    }
                    let outcome = tokio::select! {
                        _ = cancel.cancelled() => break,
                        o = self.send(events) => o,
                    };
                    heartbeat_due = Instant::now() + self.cfg.heartbeat;
                    step = self.machine.on_outcome(&outcome, rand::random());
                }
            }
        }
        tracing::debug!("forwarder stopped");
        Ok(())
    }

    /// Posts one batch and applies the relay's answer. Never deletes on anything but a valid Ack.
    async fn send(&mut self, events: Vec<Event>) -> Outcome {
        let first_seq = events
            .first()
            .map(|e| e.seq)
            .unwrap_or_else(|| self.store.stats().next_seq);
        let last_seq = events.last().map(|e| e.seq);
        let count = events.len();
        let batch = Batch {
            site: self.cfg.site.clone(),
            agent: self.cfg.agent.clone(),
            first_seq,
            events,
            status: Some(self.status.build()),
        };
        let body = match encode(&batch) {
            Ok(b) => b,
            Err(EncodeError::TooLarge(n)) => {
                self.shrink_batch(count);
                tracing::warn!(
                    bytes = n,
                    events = count,
                    "batch too large to encode; halving the batch size"
                );
                return Outcome::Failed;
            }
            Err(e) => {
                tracing::error!(error = %e, event_seq = first_seq, "cannot encode a batch");
                return Outcome::Failed;
            }
        };
        let response = self
            .client
            .post(self.endpoint.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
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
                self.acked(ack, first_seq, last_seq, count).await
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
                tracing::error!(status = s.as_u16(), reason = %reason, site = %self.cfg.site, event_seq = first_seq, events = count,
                    "relay refused the batch; events are kept and retried — fix the cause (403: site/certificate mismatch)");
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
            if upto >= first_seq {
                match self.store.delete_upto(upto).await {
                    Ok(d) => tracing::debug!(
                        event_seq = upto,
                        deleted = d.events,
                        duplicates = ack.duplicates,
                        events = count,
                        "batch acknowledged"
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, event_seq = upto, "cannot delete acknowledged events; they will be resent (the relay deduplicates)");
                        return Outcome::Failed;
                    }
                }
            } else {
                tracing::warn!(
                    upto = ack.upto,
                    first_seq,
                    "relay acknowledged none of the batch; retrying"
                );
                return Outcome::Failed;
            }
        }
        Outcome::Acked {
            backlog_left: self.store.stats().backlog_events > 0,
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

async fn reason_text(response: reqwest::Response) -> String {
    match response.text().await {
        Ok(t) if !t.trim().is_empty() => t.trim().chars().take(500).collect(),
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
