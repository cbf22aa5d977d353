//! MQTT clients of the harness (rumqttc, QoS 1): the scanner-side [`Publisher`] that publishes
//! in order and waits for every PUBACK, the persistent-session pre-registration that makes the
//! broker queue for the agent before it first connects, and the no-op auto-ack subscriber the
//! bench uses as its baseline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::{HarnessError, Result};

/// Pause before polling again after a connection error (rumqttc reconnects on the next poll).
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// Largest MQTT packet the harness sends or accepts.
const MAX_PACKET: usize = 256 * 1024;

fn options(client_id: &str, port: u16, clean_session: bool, inflight: u16) -> MqttOptions {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_clean_session(clean_session);
    opts.set_inflight(inflight);
    opts.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    opts
}

fn mqtt_err(client_id: &str, detail: impl ToString) -> HarnessError {
    HarnessError::Mqtt {
        client_id: client_id.to_string(),
        detail: detail.to_string(),
    }
}

/// A QoS 1 publisher: messages go out in the order `publish` is called; PUBACKs are counted.
pub struct Publisher {
    client_id: String,
    client: AsyncClient,
    published: u64,
    acked: watch::Receiver<u64>,
    errors: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Publisher {
    /// Connects `client_id` (clean session) to the broker on 127.0.0.1:`port`.
    pub async fn connect(port: u16, client_id: &str) -> Result<Publisher> {
        let (client, eventloop) = AsyncClient::new(options(client_id, port, true, 1000), 1024);
        let (acked_tx, acked) = watch::channel(0u64);
        let (connected_tx, mut connected) = watch::channel(false);
        let errors = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        tokio::spawn(drive_publisher(
            eventloop,
            acked_tx,
            connected_tx,
            errors.clone(),
            stop.clone(),
        ));
        tokio::time::timeout(Duration::from_secs(10), connected.wait_for(|c| *c))
            .await
            .map_err(|_| mqtt_err(client_id, "no CONNACK within 10 s: is the broker running?"))?
            .map_err(|_| mqtt_err(client_id, "event loop ended before CONNACK"))?;
        Ok(Publisher {
            client_id: client_id.to_string(),
            client,
            published: 0,
            acked,
            errors,
            stop,
        })
    }

    /// Queues one QoS 1 publish (waits only for room in the client's request queue).
    pub async fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| mqtt_err(&self.client_id, e))?;
        self.published += 1;
        Ok(())
    }

    /// How many messages were handed to the client.
    pub fn published(&self) -> u64 {
        self.published
    }

    /// How many PUBACKs came back.
    pub fn acked(&self) -> u64 {
        *self.acked.borrow()
    }

    /// Connection errors seen so far (each followed by a reconnect).
    pub fn connection_errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Waits until every published message has its PUBACK.
    pub async fn wait_all_acked(&mut self, timeout: Duration) -> Result<()> {
        let want = self.published;
        let mut rx = self.acked.clone();
        let outcome = tokio::time::timeout(timeout, rx.wait_for(|n| *n >= want))
            .await
            .map(|r| r.map(|_| ()));
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(mqtt_err(&self.client_id, "event loop ended")),
            Err(_) => Err(mqtt_err(
                &self.client_id,
                format!(
                    "only {} of {want} PUBACKs after {:.0} s",
                    self.acked(),
                    timeout.as_secs_f64()
                ),
            )),
        }
    }

    /// Disconnects cleanly.
    pub async fn disconnect(self) {
        // The broker may already be gone; the driver is stopped either way (on drop).
        let _ = self.client.disconnect().await;
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn drive_publisher(
    mut eventloop: EventLoop,
    acked: watch::Sender<u64>,
    connected: watch::Sender<bool>,
    errors: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            ev = eventloop.poll() => ev,
        };
        match event {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked.send_modify(|n| *n += 1),
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ = connected.send(true);
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {}
            Ok(_) => {}
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RECONNECT_PAUSE) => {}
                }
            }
        }
    }
}

/// Creates the persistent session `client_id` on the broker with QoS 1 subscriptions to `topics`,
/// then disconnects. From then on the broker queues matching messages for that client id even
/// before the real client (the agent) first connects, exactly as it does while the agent is down.
pub async fn preregister_session(port: u16, client_id: &str, topics: &[String]) -> Result<()> {
    let (client, mut eventloop) = AsyncClient::new(options(client_id, port, false, 100), 64);
    for t in topics {
        client
            .subscribe(t.as_str(), QoS::AtLeastOnce)
            .await
            .map_err(|e| mqtt_err(client_id, e))?;
    }
    let mut subacks = 0;
    let work = async {
        while subacks < topics.len() {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => subacks += 1,
                Ok(_) => {}
                Err(e) => return Err(mqtt_err(client_id, e)),
            }
        }
        client
            .disconnect()
            .await
            .map_err(|e| mqtt_err(client_id, e))?;
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(mqtt_err(client_id, e)),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| mqtt_err(client_id, "session pre-registration took over 10 s"))?
}

/// A subscriber that does nothing but receive (rumqttc auto-ack): the bench's baseline for the
/// agent's durable ingest, on the same broker with the same publisher.
pub struct NoopSubscriber {
    received: watch::Receiver<u64>,
    stop: CancellationToken,
    driver: tokio::task::JoinHandle<()>,
}

impl NoopSubscriber {
    /// Connects (clean session, so nothing is queued for it once it is gone), subscribes to
    /// `topic` at QoS 1 and waits for the SUBACK.
    pub async fn start(port: u16, client_id: &str, topic: &str) -> Result<NoopSubscriber> {
        let (client, mut eventloop) = AsyncClient::new(options(client_id, port, true, 1000), 1024);
        client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .map_err(|e| mqtt_err(client_id, e))?;
        let subscribed = async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(mqtt_err(client_id, e)),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), subscribed)
            .await
            .map_err(|_| mqtt_err(client_id, "no SUBACK within 10 s"))??;
        let (tx, received) = watch::channel(0u64);
        let stop = CancellationToken::new();
        let token = stop.clone();
        let driver = tokio::spawn(async move {
            let _client = client;
            loop {
                let ev = tokio::select! {
                    _ = token.cancelled() => return,
                    ev = eventloop.poll() => ev,
                };
                match ev {
                    Ok(Event::Incoming(Packet::Publish(_))) => tx.send_modify(|n| *n += 1),
                    Ok(_) => {}
                    Err(_) => tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(RECONNECT_PAUSE) => {}
                    },
                }
            }
        });
        Ok(NoopSubscriber {
            received,
            stop,
            driver,
        })
    }

    /// Messages received so far.
    pub fn received(&self) -> u64 {
        *self.received.borrow()
    }

    /// Waits until `n` messages have been received.
    pub async fn wait_received(&self, n: u64, timeout: Duration) -> Result<()> {
        let mut rx = self.received.clone();
        let outcome = tokio::time::timeout(timeout, rx.wait_for(|got| *got >= n))
            .await
            .map(|r| r.map(|_| ()));
        match outcome {
            Ok(Ok(())) => Ok(()),
            _ => Err(mqtt_err(
                "noop-subscriber",
                format!("received {} of {n}", self.received()),
            )),
        }
    }

    /// Stops the subscriber.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.driver.await;
    }
}

/// Connects as `client_id` with its persistent session (clean_session = false, no new
/// subscription), acknowledges and collects messages until `n` have arrived or `timeout` passes.
/// Used to prove what the broker kept queued for a session.
pub async fn drain_session(
    port: u16,
    client_id: &str,
    n: usize,
    timeout: Duration,
) -> Result<Vec<Vec<u8>>> {
    let (client, mut eventloop) = AsyncClient::new(options(client_id, port, false, 1000), 1024);
    let mut got = Vec::with_capacity(n);
    let work = async {
        while got.len() < n {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => got.push(p.payload.to_vec()),
                Ok(_) => {}
                Err(e) => return Err(mqtt_err(client_id, e)),
            }
        }
        Ok(())
    };
    let outcome = tokio::time::timeout(timeout, work).await;
    // Flush the last PUBACKs before leaving.
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    match outcome {
        Ok(Ok(())) => Ok(got),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(mqtt_err(
            client_id,
            format!("received {} of {n} queued messages", got.len()),
        )),
    }
}
