//! A scanner that keeps the QoS 1 publisher's side of the bargain across a broker crash: every
//! message the broker has not PUBACKed when the connection drops is published again, in order,
//! on a fresh connection, until each one has its PUBACK. [`crate::publisher::Publisher`] cannot do
//! that (with a clean session rumqttc forgets its unacknowledged publishes on reconnect).
//!
//! The outcome records, per message, whether and when its PUBACK came, and whether it was
//! published more than once: what the broker-crash scenario needs to tell a message the broker
//! promised to keep (PUBACKed) from one it never promised.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::watch;

use crate::error::{HarnessError, Result};

/// Pause before connecting again after a connection error.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// What happened to each message of a [`publish_resending`] run, by index.
#[derive(Debug, Clone)]
pub struct ResendOutcome {
    /// When the (last) PUBACK of message `i` arrived.
    pub acked_at: Vec<Option<Instant>>,
    /// How many times message `i` was handed to a connection.
    pub sends: Vec<u32>,
    /// Connections opened (1 when the broker never went away).
    pub connections: u64,
}

impl ResendOutcome {
    /// Messages published more than once (their first PUBACK never came).
    pub fn resent(&self) -> usize {
        self.sends.iter().filter(|&&s| s > 1).count()
    }
}

/// Publishes `messages` (topic, payload) at QoS 1 in order to the broker on 127.0.0.1:`port`,
/// keeping at most `window` unacknowledged, at about `per_second` when given. When the connection
/// drops, the client is thrown away (with whatever it still had queued) and a fresh one publishes
/// again, in order, every message without a PUBACK. Progress (PUBACKs so far) goes to `acked`.
/// Returns once every message has its PUBACK, or fails after `timeout`.
pub async fn publish_resending(
    port: u16,
    client_id: &str,
    messages: &[(String, Vec<u8>)],
    window: usize,
    per_second: Option<u32>,
    acked: watch::Sender<usize>,
    timeout: Duration,
) -> Result<ResendOutcome> {
    let n = messages.len();
    let window = window.clamp(1, u16::MAX as usize);
    let mut out = ResendOutcome {
        acked_at: vec![None; n],
        sends: vec![0; n],
        connections: 0,
    };
    let mut acked_count = 0usize;
    let started = Instant::now();
    let deadline = started + timeout;
    // Pacing counts first sends only: a resend goes out as soon as the window allows.
    let mut first_sends = 0u64;
    let err = |detail: String| HarnessError::Mqtt {
        client_id: client_id.to_string(),
        detail,
    };
    'connection: while acked_count < n {
        if Instant::now() >= deadline {
            return Err(err(format!(
                "only {acked_count} of {n} PUBACKs after {:.0} s",
                timeout.as_secs_f64()
            )));
        }
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_clean_session(true);
        opts.set_inflight(window as u16);
        let (client, mut eventloop) = AsyncClient::new(opts, window * 2);
        out.connections += 1;
        // Handed to this client, in order, not yet seen going out / seen going out, by packet id.
        let mut requested: VecDeque<usize> = VecDeque::new();
        let mut inflight: HashMap<u16, usize> = HashMap::new();
        let mut cursor = 0usize;
        loop {
            while requested.len() + inflight.len() < window && cursor < n {
                if out.acked_at[cursor].is_some() {
                    cursor += 1;
                    continue;
                }
                let first = out.sends[cursor] == 0;
                if let (true, Some(rate)) = (first, per_second) {
                    let due = started + Duration::from_secs_f64(first_sends as f64 / rate as f64);
                    if Instant::now() < due {
                        if requested.is_empty() && inflight.is_empty() {
                            tokio::time::sleep_until(due.into()).await;
                        } else {
                            break;
                        }
                    }
                }
                let (topic, payload) = &messages[cursor];
                if client
                    .try_publish(topic.as_str(), QoS::AtLeastOnce, false, payload.clone())
                    .is_err()
                {
                    break;
                }
                if first {
                    first_sends += 1;
                }
                out.sends[cursor] += 1;
                requested.push_back(cursor);
                cursor += 1;
            }
            if acked_count == n {
                let _ = client.try_disconnect();
                return Ok(out);
            }
            if Instant::now() >= deadline {
                continue 'connection;
            }
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if let Some(i) = requested.pop_front() {
                        inflight.insert(pkid, i);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(i) = inflight.remove(&ack.pkid) {
                        if out.acked_at[i].is_none() {
                            acked_count += 1;
                            let _ = acked.send(acked_count);
                        }
                        out.acked_at[i] = Some(Instant::now());
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue 'connection;
                }
            }
        }
    }
    Ok(out)
}
