//! Test-driven fault injection for `object` calls and JSON-2 calls (`POST /__sim/faults`).
//!
//! Each counter makes the next N `execute_kw` / `execute` / JSON-2 calls fail one way; `latency_ms`
//! delays every such call until it is set back to 0. When several counters are set, one call
//! consumes one fault, in this order: HTTP 500, SerializationFailure, drop before commit, drop
//! after commit.

use serde::{Deserialize, Serialize};

/// The fault configuration, as posted and as reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Delay before every object call, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Next N calls answer HTTP 500 (nothing executed).
    #[serde(default)]
    pub http_500_next: u32,
    /// Next N calls answer a `SerializationFailure` error envelope (nothing committed).
    #[serde(default)]
    pub serialization_failure_next: u32,
    /// Next N calls commit, then the connection is closed without any response.
    #[serde(default)]
    pub drop_after_commit_next: u32,
    /// Next N calls close the connection without any response; nothing committed.
    #[serde(default)]
    pub drop_before_commit_next: u32,
}

/// A `/__sim/faults` body: every field optional, absent fields keep their value.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsUpdate {
    /// See [`Faults::latency_ms`].
    pub latency_ms: Option<u64>,
    /// See [`Faults::http_500_next`].
    pub http_500_next: Option<u32>,
    /// See [`Faults::serialization_failure_next`].
    pub serialization_failure_next: Option<u32>,
    /// See [`Faults::drop_after_commit_next`].
    pub drop_after_commit_next: Option<u32>,
    /// See [`Faults::drop_before_commit_next`].
    pub drop_before_commit_next: Option<u32>,
}

/// What to do with one object call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Serve normally.
    None,
    /// Answer HTTP 500, execute nothing.
    Http500,
    /// Answer a SerializationFailure envelope, commit nothing.
    SerializationFailure,
    /// Close the connection without a response, commit nothing.
    DropBeforeCommit,
    /// Execute and commit, then close the connection without a response.
    DropAfterCommit,
}

impl Faults {
    /// Apply a partial update.
    pub fn update(&mut self, u: FaultsUpdate) {
        if let Some(v) = u.latency_ms {
            self.latency_ms = v;
        }
        if let Some(v) = u.http_500_next {
            self.http_500_next = v;
        }
        if let Some(v) = u.serialization_failure_next {
            self.serialization_failure_next = v;
        }
        if let Some(v) = u.drop_after_commit_next {
            self.drop_after_commit_next = v;
        }
        if let Some(v) = u.drop_before_commit_next {
            self.drop_before_commit_next = v;
        }
    }

    /// Consume the fault for the next call.
    pub fn take(&mut self) -> FaultAction {
        fn dec(c: &mut u32) -> bool {
            if *c > 0 {
                *c -= 1;
                true
            } else {
                false
            }
        }
        if dec(&mut self.http_500_next) {
            FaultAction::Http500
        } else if dec(&mut self.serialization_failure_next) {
            FaultAction::SerializationFailure
        } else if dec(&mut self.drop_before_commit_next) {
            FaultAction::DropBeforeCommit
        } else if dec(&mut self.drop_after_commit_next) {
            FaultAction::DropAfterCommit
        } else {
            FaultAction::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_counter_is_consumed_one_call_at_a_time_in_priority_order() {
        let mut f = Faults::default();
        f.update(FaultsUpdate {
            http_500_next: Some(1),
            drop_after_commit_next: Some(2),
            ..Default::default()
        });
        assert_eq!(f.take(), FaultAction::Http500);
        assert_eq!(f.take(), FaultAction::DropAfterCommit);
        assert_eq!(f.take(), FaultAction::DropAfterCommit);
        assert_eq!(f.take(), FaultAction::None);
    }

    #[test]
    fn a_partial_update_keeps_the_other_settings() {
        let mut f = Faults {
            latency_ms: 50,
            ..Default::default()
        };
        f.update(FaultsUpdate {
            serialization_failure_next: Some(3),
            ..Default::default()
        });
        assert_eq!(f.latency_ms, 50);
        assert_eq!(f.serialization_failure_next, 3);
    }
}
