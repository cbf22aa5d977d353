//! `POST /v1/batches`: checks a batch against the caller's certificate and the limits, stores it
//! durably in the inbox, then answers `200` with an enveloped postcard `Ack`.
//!
//! Owns the mapping of every intake failure to an HTTP status ([`IntakeError`], one place):
//!
//! | failure                                        | status |
//! |------------------------------------------------|--------|
//! | body larger than `limits.max_body_bytes`       | 413    |
//! | envelope / postcard does not decode            | 400 with the `DecodeError` text |
//! | `batch.site` is not the certificate's site     | 403    |
//! | more than `limits.max_batch_events` events     | 413    |
//! | events not consecutive from `first_seq`        | 400    |
//! | `scanbridge-store-id` header not 1-64 of `[0-9A-Za-z-]` | 400 |
//! | seqs collide with another agent store's (a replaced box or a deleted store file restarted at 1) | 409 with the `scanbridge-agent store renumber` command to run |
//! | store busy or failing                          | 503 + `Retry-After` |
//!
//! The batch is stored as the bytes it arrived in (one inbox row per batch, see
//! `crate::inbox`); it is decoded here only to check it and to find its quarantined payloads.
//! The answer is sent only after the inbox transaction committed with immediate durability.
//! An empty batch is a heartbeat: its status is stored, `Ack.upto` is `first_seq - 1`.
//!
//! The agent names its event store in the [`STORE_ID_HEADER`] header; the inbox refuses a batch
//! whose seqs the site already sent from another store (`crate::inbox`, "Store identity"),
//! because dedupe by `(site, seq)` would take its new events for duplicates and the agent would
//! delete them. The 409's text tells the technician what happened and what to run.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use scanbridge_protocol::{decode, encode, Ack, Batch, DecodeError};
use tokio::sync::{Notify, Semaphore};

use crate::config::Limits;
use crate::identity::SiteId;
use crate::inbox::{Inbox, InboxError, StoreConflict};

pub use scanbridge_protocol::STORE_ID_HEADER;

/// Seconds a client is asked to wait when the store sheds load.
const RETRY_AFTER_SECS: u64 = 5;
/// Longest wait for a store slot before answering 503.
const STORE_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of an oversized body read and discarded before answering 413, so the client (still
/// sending) sees the answer instead of a broken pipe.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
/// Most bytes reserved for a request body up front (from its Content-Length).
const PREALLOC_LIMIT: usize = 1024 * 1024;
/// Longest time spent reading one request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Concurrent batch transactions queued on the store.
pub const STORE_SLOTS: usize = 32;

/// Shared state of the intake handler.
#[derive(Clone)]
pub struct IntakeState {
    pub inbox: Inbox,
    pub limits: Limits,
    /// Woken after every commit that inserted events, so the pusher starts at once.
    pub wake: Arc<Notify>,
    /// Bounds the number of batches waiting for the store (redb has one writer at a time).
    pub store_slots: Arc<Semaphore>,
}

/// Why a batch was refused.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(
        "request body larger than {limit} bytes (limits.max_body_bytes); send smaller batches"
    )]
    BodyTooLarge { limit: usize },
    #[error("cannot read the request body: {0}")]
    Body(String),
    #[error("malformed batch: {0}")]
    Malformed(#[from] DecodeError),
    #[error("batch names site {claimed:?} but the client certificate is for site {certified:?}")]
    SiteMismatch { claimed: String, certified: String },
    #[error("batch has {count} events, more than the limit of {limit} (limits.max_batch_events)")]
    TooManyEvents { count: usize, limit: usize },
    #[error(
        "events are not consecutive from first_seq {first_seq}: position {index} has seq {seq}"
    )]
    NotConsecutive {
        first_seq: u64,
        index: usize,
        seq: u64,
    },
    #[error(
        "malformed {STORE_ID_HEADER} header: expected 1 to 64 characters of 0-9, A-Z, a-z or '-'"
    )]
    BadStoreId,
    #[error(
        "site {site}: this gateway's event store restarted its numbering (store {}, batch starts at seq {}), \
         but the relay already holds seqs up to {3} for this site from another store ({}). \
         Storing these events would discard them as duplicates, so nothing was stored; the agent keeps \
         the events and retries. To forward them: stop the agent (systemctl stop scanbridge-agent), run \
         `scanbridge-agent store renumber --config /etc/scanbridge/agent.toml --after {3}`, \
         and start it again.",
        conflict.store_id, conflict.first_seq, conflict.current_store, conflict.relay_highest
    )]
    StoreConflict {
        site: String,
        conflict: StoreConflict,
    },
    #[error("relay store unavailable, retry later: {0}")]
    StoreUnavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntakeError {
    fn status(&self) -> StatusCode {
        match self {
            IntakeError::BodyTooLarge { .. } | IntakeError::TooManyEvents { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            IntakeError::Body(_)
            | IntakeError::Malformed(_)
            | IntakeError::NotConsecutive { .. }
            | IntakeError::BadStoreId => StatusCode::BAD_REQUEST,
            IntakeError::StoreConflict { .. } => StatusCode::CONFLICT,
            IntakeError::SiteMismatch { .. } => StatusCode::FORBIDDEN,
            IntakeError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            IntakeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<InboxError> for IntakeError {
    fn from(e: InboxError) -> Self {
        IntakeError::StoreUnavailable(e.to_string())
    }
}

impl IntoResponse for IntakeError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, self.to_string()).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

/// The `POST /v1/batches` handler.
pub async fn post_batch(
    State(state): State<IntakeState>,
    Extension(site): Extension<SiteId>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, IntakeError> {
    let store_id = store_id(&headers).inspect_err(|e| {
        tracing::warn!(site = %site, error = %e, "refusing a batch");
    })?;
    let limit = state.limits.max_body_bytes;
    let body = tokio::time::timeout(BODY_TIMEOUT, read_body(body, limit))
        .await
        .map_err(|_| IntakeError::Body("timed out reading the request body".into()))??;
    let batch: Batch = decode(&body).inspect_err(|e| {
        tracing::warn!(site = %site, error = %e, "refusing a malformed batch");
    })?;
    check_batch(&site, &batch, &state.limits).inspect_err(|e| match e {
        IntakeError::SiteMismatch { .. } => tracing::warn!(
            site = %site, claimed_site = %batch.site, agent = %batch.agent,
            "refusing a batch for another site than the client certificate's"
        ),
        other => tracing::warn!(site = %site, error = %other, "refusing a batch"),
    })?;

    let permit = tokio::time::timeout(
        STORE_QUEUE_TIMEOUT,
        state.store_slots.clone().acquire_owned(),
    )
    .await
    .map_err(|_| IntakeError::StoreUnavailable("too many batches waiting for the store".into()))?
    .map_err(|_| IntakeError::StoreUnavailable("relay is shutting down".into()))?;
    let upto = batch
        .events
        .last()
        .map_or(batch.first_seq.saturating_sub(1), |e| e.seq);
    let inbox = state.inbox.clone();
    let site_name = site.as_str().to_string();
    let queued = std::time::Instant::now();
    let accepted = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        // The body as received is what the inbox stores (no per-event re-encoding).
        inbox.accept_batch_from(
            &site_name,
            store_id.as_deref(),
            &batch,
            &body,
            crate::now_micros(),
        )
    })
    .await
    .map_err(|e| IntakeError::StoreUnavailable(e.to_string()))?
    .inspect_err(
        |e| tracing::error!(site = %site, error = %e, "cannot store a batch; answering 503"),
    )?;
    let accepted = match accepted {
        Ok(accepted) => accepted,
        Err(conflict) => {
            tracing::error!(
                site = %site, store_id = %conflict.store_id, current_store = %conflict.current_store,
                first_seq = conflict.first_seq, relay_highest = conflict.relay_highest,
                conflicts = conflict.conflicts,
                "refusing a batch from another agent store whose seqs collide with the stored ones (409): the box must be renumbered"
            );
            return Err(IntakeError::StoreConflict {
                site: site.to_string(),
                conflict,
            });
        }
    };

    if accepted.inserted > 0 {
        state.wake.notify_one();
    }
    tracing::debug!(
        site = %site, upto, inserted = accepted.inserted, duplicates = accepted.duplicates,
        store_us = u64::try_from(queued.elapsed().as_micros()).unwrap_or(u64::MAX),
        "batch stored"
    );
    let ack = encode(&Ack {
        upto,
        duplicates: accepted.duplicates,
    })
    .map_err(|e| IntakeError::Internal(e.to_string()))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        ack,
    )
        .into_response())
}

/// Reads the body up to `limit` bytes. A longer body is read on (and discarded) up to
/// [`DRAIN_LIMIT`] before [`IntakeError::BodyTooLarge`] is returned.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, IntakeError> {
    use hyper::body::Body as _;
    // A body with a Content-Length is read into one allocation of that size; a claimed length
    // past [`PREALLOC_LIMIT`] is not reserved before its bytes arrive.
    let expected = usize::try_from(body.size_hint().lower()).unwrap_or(usize::MAX);
    let mut body = std::pin::pin!(body);
    let mut buf = Vec::with_capacity(expected.min(limit).min(PREALLOC_LIMIT));
    let mut total = 0usize;
    loop {
        let frame = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| IntakeError::Body(e.to_string()))?;
        if let Some(data) = frame.data_ref() {
            total = total.saturating_add(data.len());
            if total <= limit {
                buf.extend_from_slice(data);
            } else if total > DRAIN_LIMIT {
                break;
            }
        }
    }
    if total > limit {
        return Err(IntakeError::BodyTooLarge { limit });
    }
    Ok(Bytes::from(buf))
}

/// The [`STORE_ID_HEADER`] of a request: `None` when absent (an older agent).
pub fn store_id(headers: &axum::http::HeaderMap) -> Result<Option<String>, IntakeError> {
    let Some(value) = headers.get(STORE_ID_HEADER) else {
        return Ok(None);
    };
    let id = value.to_str().map_err(|_| IntakeError::BadStoreId)?;
    let valid =
        (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !valid {
        return Err(IntakeError::BadStoreId);
    }
    Ok(Some(id.to_string()))
}

/// The checks that need no I/O: site, event count, consecutive seqs.
pub fn check_batch(site: &SiteId, batch: &Batch, limits: &Limits) -> Result<(), IntakeError> {
    if batch.site != site.as_str() {
        return Err(IntakeError::SiteMismatch {
            claimed: batch.site.clone(),
            certified: site.to_string(),
        });
    }
    if batch.events.len() > limits.max_batch_events {
        return Err(IntakeError::TooManyEvents {
            count: batch.events.len(),
            limit: limits.max_batch_events,
        });
    }
    for (index, event) in batch.events.iter().enumerate() {
        let expected = (index as u64).checked_add(batch.first_seq);
        if expected != Some(event.seq) {
            return Err(IntakeError::NotConsecutive {
                first_seq: batch.first_seq,
                index,
                seq: event.seq,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use scanbridge_protocol::{Event, EventBody, Reading, Source};

    fn batch(site: &str, first_seq: u64, seqs: &[u64]) -> Batch {
        Batch {
            site: site.into(),
            agent: "gw".into(),
            first_seq,
            events: seqs
                .iter()
                .map(|&seq| Event {
                    seq,
                    captured_at: 0,
                    received_at: 0,
                    source: Source::Serial {
                        port: "/dev/ttyACM0".into(),
                    },
                    device: "PLC".into(),
                    body: EventBody::Reading(Reading {
                        tag: "t".into(),
                        value: 1.0,
                        unit: None,
                    }),
                })
                .collect(),
            status: None,
        }
    }

    fn limits(max_batch_events: usize) -> Limits {
        Limits {
            max_batch_events,
            ..Limits::default()
        }
    }

    #[test]
    fn a_consecutive_batch_for_the_certificate_site_passes() {
        let site = SiteId::verified_for_test("WH01");
        assert!(check_batch(&site, &batch("WH01", 7, &[7, 8, 9]), &limits(3)).is_ok());
    }

    #[test]
    fn the_site_is_checked_before_anything_else() {
        let site = SiteId::verified_for_test("WH01");
        let err = check_batch(&site, &batch("WH02", 7, &[9]), &limits(0)).expect_err("mismatch");
        assert_eq!(err.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn too_many_events_is_too_large_and_a_gap_is_a_bad_request() {
        let site = SiteId::verified_for_test("WH01");
        let err =
            check_batch(&site, &batch("WH01", 1, &[1, 2, 3]), &limits(2)).expect_err("too many");
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let err = check_batch(&site, &batch("WH01", 1, &[1, 3]), &limits(5)).expect_err("gap");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        let err = check_batch(&site, &batch("WH01", u64::MAX, &[u64::MAX, 0]), &limits(5))
            .expect_err("overflow");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_store_conflict_is_409_and_names_the_renumber_command() {
        let err = IntakeError::StoreConflict {
            site: "WH01".into(),
            conflict: StoreConflict {
                store_id: "b".into(),
                current_store: "a".into(),
                first_seq: 1,
                relay_highest: 42,
                conflicts: 1,
            },
        };
        assert_eq!(err.status(), StatusCode::CONFLICT);
        assert!(err.to_string().contains(
            "scanbridge-agent store renumber --config /etc/scanbridge/agent.toml --after 42"
        ));
    }

    #[test]
    fn the_store_id_header_is_optional_and_checked() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(store_id(&headers).ok(), Some(None));
        headers.insert(STORE_ID_HEADER, HeaderValue::from_static("0a1b"));
        assert_eq!(store_id(&headers).ok(), Some(Some("0a1b".into())));
        headers.insert(STORE_ID_HEADER, HeaderValue::from_static("a b"));
        assert!(matches!(store_id(&headers), Err(IntakeError::BadStoreId)));
    }

    #[test]
    fn an_unavailable_store_answers_503_with_retry_after() {
        let response = IntakeError::StoreUnavailable("disk full".into()).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from(RETRY_AFTER_SECS))
        );
    }
}
