//! The forwarder's pure state machine: which state it is in, and what to do after each outcome.
//! No I/O, no clock: the I/O loop in [`super`] feeds it outcomes and a jitter fraction and does
//! what the returned [`Step`] says.
//!
//! ```text
//!            work available / heartbeat due
//!   Idle ───────────────────────────────────▶ Sending
//!    ▲  ◀── acked, nothing left ──────────────┘ │ ▲
//!    │                                          │ │ acked, backlog left (drain in order)
//!    │                        refused / throttled / failed
//!    │                                          ▼ │
//!    └─────────────────────────────────────── Backoff ── delay elapsed ──▶ Sending
//! ```
//!
//! Nothing is ever deleted except on `Acked`; a refused batch (400/403/413) is retried with
//! backoff, forever, because dropping it would lose acknowledged events.

use std::time::Duration;

/// Where the forwarder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Nothing to send; waiting for a commit or the heartbeat timer.
    Idle,
    /// A batch (or heartbeat) is being built and posted.
    Sending,
    /// The last attempt failed; wait before the next one.
    Backoff { attempt: u32, delay: Duration },
}

/// The result of one POST, as the I/O loop classified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 200 with a valid `Ack`; `backlog_left` says whether events remain after deleting.
    Acked { backlog_left: bool },
    /// 400 / 403 / 413 / other 4xx: the relay refuses the batch; an operator must act.
    Refused { status: u16 },
    /// 429 / 503: the relay sheds load; `retry_after` when it said how long.
    Throttled { retry_after: Option<Duration> },
    /// Connection error, timeout, 5xx, undecodable answer.
    Failed,
}

/// What the I/O loop should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Build and post the next batch now.
    Send,
    /// Wait for work (commit notification or heartbeat timer).
    Wait,
    /// Sleep this long, then call [`Machine::backoff_elapsed`].
    Sleep(Duration),
}

/// Retry timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// Upper bound for a relay's Retry-After.
    pub max_retry_after: Duration,
}

/// The forwarder state machine.
#[derive(Debug, Clone)]
pub struct Machine {
    state: State,
    /// Consecutive failed attempts; reset by an ack.
    failures: u32,
    policy: RetryPolicy,
}

impl Machine {
    pub fn new(policy: RetryPolicy) -> Machine {
        Machine {
            state: State::Idle,
            failures: 0,
            policy,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Events were committed or the heartbeat is due.
    pub fn work_available(&mut self) -> Step {
        match self.state {
            State::Idle => {
                self.state = State::Sending;
                Step::Send
            }
            State::Sending => Step::Send,
            // A commit does not cut a backoff short: the relay needs its rest.
            State::Backoff { delay, .. } => Step::Sleep(delay),
        }
    }

    /// The batch builder found nothing to send and no heartbeat is due.
    pub fn nothing_to_send(&mut self) -> Step {
        self.state = State::Idle;
        Step::Wait
    }

    /// The backoff delay has elapsed: try again.
    pub fn backoff_elapsed(&mut self) -> Step {
        if let State::Backoff { .. } = self.state {
            self.state = State::Sending;
        }
        Step::Send
    }

    /// Classifies a POST's outcome. `jitter` in `[0, 1)` spreads retries of a fleet of agents.
    pub fn on_outcome(&mut self, outcome: &Outcome, jitter: f64) -> Step {
        let attempt = self.failures;
        match outcome {
            Outcome::Acked { .. } => self.failures = 0,
            _ => self.failures = self.failures.saturating_add(1),
        }
        match outcome {
            Outcome::Acked { backlog_left: true } => {
                self.state = State::Sending;
                Step::Send
            }
            Outcome::Acked {
                backlog_left: false,
            } => {
                self.state = State::Idle;
                Step::Wait
            }
            Outcome::Throttled {
                retry_after: Some(d),
            } => {
                let delay = (*d).min(self.policy.max_retry_after);
                self.state = State::Backoff {
                    attempt: attempt + 1,
                    delay,
                };
                Step::Sleep(delay)
            }
            Outcome::Refused { .. }
            | Outcome::Throttled { retry_after: None }
            | Outcome::Failed => {
                let delay = backoff_delay(&self.policy, attempt, jitter);
                self.state = State::Backoff {
                    attempt: attempt + 1,
                    delay,
                };
                Step::Sleep(delay)
            }
        }
    }
}

/// Capped exponential backoff with jitter: `initial * 2^attempt`, capped at `max`, then scaled
/// into `[50 %, 100 %]` of that by `jitter`.
pub fn backoff_delay(policy: &RetryPolicy, attempt: u32, jitter: f64) -> Duration {
    let factor = 2u32.saturating_pow(attempt.min(31));
    let base = policy.initial.saturating_mul(factor).min(policy.max);
    base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(600),
        }
    }

    #[test]
    fn idle_goes_to_sending_when_work_arrives() {
        let mut m = Machine::new(policy());
        assert_eq!(m.work_available(), Step::Send);
        assert_eq!(m.state(), State::Sending);
    }

    #[test]
    fn an_ack_with_backlog_left_keeps_sending_to_drain_in_order() {
        let mut m = Machine::new(policy());
        m.work_available();
        assert_eq!(
            m.on_outcome(&Outcome::Acked { backlog_left: true }, 0.0),
            Step::Send
        );
        assert_eq!(m.state(), State::Sending);
    }

    #[test]
    fn an_ack_that_empties_the_backlog_returns_to_idle() {
        let mut m = Machine::new(policy());
        m.work_available();
        assert_eq!(
            m.on_outcome(
                &Outcome::Acked {
                    backlog_left: false
                },
                0.0
            ),
            Step::Wait
        );
        assert_eq!(m.state(), State::Idle);
    }

    #[test]
    fn connection_failures_back_off_exponentially_up_to_the_cap() {
        let mut m = Machine::new(policy());
        m.work_available();
        let mut delays = Vec::new();
        for _ in 0..12 {
            match m.on_outcome(&Outcome::Failed, 1.0) {
                Step::Sleep(d) => delays.push(d),
                other => panic!("expected a sleep, got {other:?}"),
            }
            assert_eq!(m.backoff_elapsed(), Step::Send);
            assert_eq!(m.state(), State::Sending);
        }
        assert_eq!(delays[0], Duration::from_millis(200));
        assert_eq!(delays[1], Duration::from_millis(400));
        assert_eq!(delays[2], Duration::from_millis(800));
        assert_eq!(
            *delays.last().unwrap_or(&Duration::ZERO),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn jitter_scales_the_delay_between_half_and_all_of_it() {
        assert_eq!(backoff_delay(&policy(), 0, 0.0), Duration::from_millis(100));
        assert_eq!(backoff_delay(&policy(), 0, 1.0), Duration::from_millis(200));
    }

    #[test]
    fn a_refused_batch_is_retried_with_backoff_never_dropped() {
        let mut m = Machine::new(policy());
        m.work_available();
        let step = m.on_outcome(&Outcome::Refused { status: 403 }, 1.0);
        assert_eq!(step, Step::Sleep(Duration::from_millis(200)));
        assert!(matches!(m.state(), State::Backoff { attempt: 1, .. }));
        assert_eq!(m.backoff_elapsed(), Step::Send);
    }

    #[test]
    fn throttling_honours_retry_after_capped() {
        let mut m = Machine::new(policy());
        m.work_available();
        let step = m.on_outcome(
            &Outcome::Throttled {
                retry_after: Some(Duration::from_secs(7)),
            },
            0.0,
        );
        assert_eq!(step, Step::Sleep(Duration::from_secs(7)));
        let step = m.on_outcome(
            &Outcome::Throttled {
                retry_after: Some(Duration::from_secs(86_400)),
            },
            0.0,
        );
        assert_eq!(step, Step::Sleep(Duration::from_secs(600)));
    }

    #[test]
    fn throttling_without_retry_after_uses_the_backoff() {
        let mut m = Machine::new(policy());
        m.work_available();
        let step = m.on_outcome(&Outcome::Throttled { retry_after: None }, 1.0);
        assert_eq!(step, Step::Sleep(Duration::from_millis(200)));
    }

    #[test]
    fn new_work_during_backoff_does_not_cut_the_backoff_short() {
        let mut m = Machine::new(policy());
        m.work_available();
        m.on_outcome(&Outcome::Failed, 1.0);
        assert_eq!(m.work_available(), Step::Sleep(Duration::from_millis(200)));
    }

    #[test]
    fn success_after_failures_resets_the_backoff() {
        let mut m = Machine::new(policy());
        m.work_available();
        m.on_outcome(&Outcome::Failed, 1.0);
        m.backoff_elapsed();
        m.on_outcome(&Outcome::Acked { backlog_left: true }, 1.0);
        assert_eq!(
            m.on_outcome(&Outcome::Failed, 1.0),
            Step::Sleep(Duration::from_millis(200))
        );
    }

    #[test]
    fn nothing_to_send_returns_to_idle() {
        let mut m = Machine::new(policy());
        m.work_available();
        assert_eq!(m.nothing_to_send(), Step::Wait);
        assert_eq!(m.state(), State::Idle);
    }
}
