//! The MQTT source: one rumqttc 0.24 client per broker connection, QoS 1 subscriptions, a
//! persistent session (`clean_session = false`, stable client id) and **manual acknowledgements**:
//! a PUBACK is sent only after the store writer reports the message committed.
//!
//! Two loops run concurrently inside [`MqttSource::run`] (joined, not spawned):
//! - the *connection* loop owns the rumqttc `EventLoop` (a new one per connection); it is never
//!   cancelled mid-poll (rumqttc's flush is not cancel-safe) except at final shutdown. It
//!   reconnects with capped backoff when the broker is down, unreachable at start or restarting,
//!   (re)subscribes on every CONNACK, passes each PUBLISH to the pipeline loop over a bounded
//!   channel, and writes the pipeline's PUBACK batches into the connection between polls.
//! - the *pipeline* loop normalises each PUBLISH, sends it to the writer (bounded; the depth of
//!   that channel plus what the broker has in flight is the pipeline depth), receives commit
//!   notices and acknowledges: batches to the connection loop, one `AsyncClient::try_ack` per
//!   batch to wake it — it never awaits either, so commit notices always drain and the writer
//!   never waits on a source.
//!
//! Payloads are decoded per topic (`[[mqtt.formats]]`, see [`crate::normalise`]); a message may
//! yield several events (PLC tag values), which travel as one [`IngestItem`] (the rest in
//! [`MqttMark::more_events`]) so they commit in one transaction before the message's one PUBACK.
//!
//! Broker access: plain TCP or TLS (`[mqtt.tls]`: the broker's CA, optional client certificate;
//! rumqttc's rustls transport), and `username` + `password_file`. A refused login or a failed
//! handshake shows in the source's health and in the log in words that say what to check, and
//! the connection is retried with backoff like any outage.
//!
//! Backpressure: when the writer pauses (buffer cap, disk full) the pipeline stops taking
//! publishes, the connection loop stops reading the socket, and the broker holds the messages.
//!
//! Redelivery after a crash between commit and PUBACK is recognised by the writer (see
//! [`crate::store::writer`] and [`crate::store::redelivery`]); this loop supplies the packet id,
//! DUP flag and message hash, and reports how many PUBACKs per packet id the broker has
//! *confirmed* processing (a PINGREQ/PINGRESP round trip after the PUBACK was written), so the
//! oldest entries of those ids can be retired. Retiring on "PUBACK handed to the client" is
//! wrong: the kill-9 test showed thousands of such PUBACKs never reaching the broker, whose
//! messages then came back with DUP set.
//!
//! **One PUBACK per broker message per connection.** Each connection gets a fresh rumqttc
//! `AsyncClient`/`EventLoop` pair (an *epoch*), announced to the pipeline in order
//! ([`FromBroker::Connected`]), and a message is acknowledged only through the client of the
//! connection it arrived on; acks still queued when that connection dies are dropped with it.
//! The broker redelivers every message it has not processed a PUBACK for on the next
//! connection, and that copy is acknowledged there. Acknowledging the old copy as well (a
//! PUBACK queued in a long-lived client outliving the reconnect) would send two PUBACKs for one
//! message, and when the broker has several messages in flight under one packet id (mosquitto
//! does, at a deep queue: [`crate::store::redelivery`]) the second would remove *another*
//! message, still unreceived, from the broker: a loss on the next crash. It also keeps the
//! writer's per-id record exact: one retired entry per processed PUBACK.
//!
//! A confirmation travels to the pipeline in the same ordered channel as the publishes
//! ([`FromBroker`]), behind every publish received before its PINGRESP. It must: after a
//! reconnect the broker redelivers (DUP) a message whose original copy is still on its way to the
//! writer; were the confirmation handled before the copy, the entry could be gone when the copy
//! reached the writer and the copy would be stored as a new event. A confirmation the pipeline
//! has no room for waits in the connection loop and goes behind a later publish (retiring later
//! is always safe).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event as MqttEvent, Incoming, MqttOptions, Outgoing, Publish, QoS, SubscribeFilter,
};
use scanbridge_protocol::EventBody;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{FormatRule, MqttConfig};
use crate::normalise::{self, Stations, Tags};
use crate::sources::{newer_tables, Health, TablesRx};
use crate::store::writer::message_hash;
use crate::store::{Committed, IngestItem, MqttMark, SourceId};

/// Largest MQTT packet accepted from the broker. Configure the broker's `message_size_limit`
/// at or below this; a larger packet makes rumqttc drop the connection.
pub const MAX_PACKET_BYTES: usize = 1024 * 1024;
/// Publishes buffered between the connection loop and the pipeline loop.
const PUBLISH_QUEUE: usize = 1024;
/// rumqttc request channel depth (subscriptions, and the one PUBACK per ack batch that goes
/// through it; the others are written directly, see [`AckBatch`]).
const REQUEST_QUEUE: usize = 1024;
/// Ack batches buffered between the pipeline and the connection loop.
const ACK_BATCH_QUEUE: usize = 64;
/// Most PUBACKs in one [`AckBatch`].
const MAX_ACK_BATCH: usize = 4096;
/// MQTT keep-alive; each PINGREQ/PINGRESP round trip also confirms the PUBACKs written before it.
/// rumqttc drops the connection when a PINGRESP has not arrived by the next PINGREQ, and the
/// broker sends it behind everything it has queued for this client: mosquitto 2.0.11 puts a
/// reconnecting session's whole queue in flight, so draining a deep queue put the PINGRESP
/// hundreds of thousands of messages back (10 s was too short for 500,000 scans on a loaded
/// two-core box: "Last pingreq isn't acked", reconnect). The broker is normally on the same box,
/// so a dead connection is still noticed by TCP at once; 30 s is only the silent-hang bound.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Health detail once every topic filter is subscribed.
pub const SUBSCRIBED: &str = "connected, subscribed";
/// How long shutdown waits for outstanding commit notices to acknowledge.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the MQTT source stopped.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("MQTT broker {broker}: the store writer has stopped, cannot ingest")]
    WriterGone { broker: String },
}

/// One configured broker connection feeding the store writer.
pub struct MqttSource {
    cfg: MqttConfig,
    stations: Arc<Stations>,
    /// The `[[tags]]` table for PLC tag payloads.
    tags: Arc<Tags>,
    /// Newer stations/tags from a configuration reload.
    tables: Option<TablesRx>,
    /// This source's slot at the writer (commit notices come back for it).
    source_id: SourceId,
    /// Into the store writer; dropped when the source stops so the writer can drain and finish.
    ingest: mpsc::Sender<IngestItem>,
    /// Commit notices from the writer.
    committed: mpsc::Receiver<Committed>,
    health: Health,
    health_slot: usize,
    cancel: CancellationToken,
    /// Reconnect backoff bounds.
    retry_initial: Duration,
    retry_max: Duration,
    /// MQTT keep-alive, also the cadence at which PUBACKs are confirmed (tests shorten it).
    keep_alive: Duration,
}

impl MqttSource {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: MqttConfig,
        stations: Arc<Stations>,
        source_id: SourceId,
        ingest: mpsc::Sender<IngestItem>,
        committed: mpsc::Receiver<Committed>,
        health: Health,
        cancel: CancellationToken,
    ) -> MqttSource {
        let health_slot = health.register(&cfg.name, scanbridge_protocol::SourceKind::Mqtt);
        MqttSource {
            cfg,
            stations,
            tags: Arc::new(Tags::default()),
            tables: None,
            source_id,
            ingest,
            committed,
            health,
            health_slot,
            cancel,
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
            keep_alive: KEEP_ALIVE,
        }
    }

    /// Sets the `[[tags]]` table used by PLC tag payload formats (default: empty).
    pub fn with_tags(mut self, tags: Arc<Tags>) -> MqttSource {
        self.tags = tags;
        self
    }

    /// Takes newer stations/tags from `tables` (configuration reload) from the next message on;
    /// the current value of `tables` replaces the tables given so far.
    pub fn with_table_updates(mut self, mut tables: TablesRx) -> MqttSource {
        let t = tables.borrow_and_update().clone();
        self.stations = t.stations;
        self.tags = t.tags;
        self.tables = Some(tables);
        self
    }

    /// This source's slot on the [`Health`] board.
    pub fn health_slot(&self) -> usize {
        self.health_slot
    }

    /// Overrides the keep-alive (whole seconds, at least 1).
    pub fn with_keep_alive(mut self, keep_alive: Duration) -> MqttSource {
        self.keep_alive = keep_alive.max(Duration::from_secs(1));
        self
    }

    /// Broker client options: persistent session, manual acks, stable client id, TLS and
    /// credentials as configured. The TLS files are read here (they were checked by config
    /// validation); an unreadable file is an error for the caller to report.
    pub fn options(cfg: &MqttConfig, keep_alive: Duration) -> Result<MqttOptions, std::io::Error> {
        let mut o = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
        o.set_clean_session(false)
            .set_manual_acks(true)
            .set_keep_alive(keep_alive)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
            .set_request_channel_capacity(REQUEST_QUEUE);
        if let Some(tls) = &cfg.tls {
            let ca = std::fs::read(&tls.ca_cert)?;
            let client_auth = match (&tls.client_cert, &tls.client_key) {
                (Some(c), Some(k)) => Some((std::fs::read(c)?, std::fs::read(k)?)),
                _ => None,
            };
            o.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Simple {
                    ca,
                    alpn: None,
                    client_auth,
                },
            ));
        }
        if let Some(user) = &cfg.username {
            let password = cfg
                .password
                .as_ref()
                .map(|p| p.0.clone())
                .unwrap_or_default();
            o.set_credentials(user.clone(), password);
        }
        Ok(o)
    }

    /// Runs until cancelled. Broker outages are retried forever; only a vanished writer ends it early.
    pub async fn run(self) -> Result<(), MqttError> {
        let MqttSource {
            cfg,
            stations,
            tags,
            tables,
            source_id,
            ingest,
            committed,
            health,
            health_slot,
            cancel,
            retry_initial,
            retry_max,
            keep_alive,
        } = self;
        let options = loop {
            match Self::options(&cfg, keep_alive) {
                Ok(o) => break o,
                Err(e) => {
                    let detail = format!("cannot read the TLS files of this broker: {e}");
                    tracing::error!(broker = %cfg.name, error = %e, "cannot read the MQTT TLS files; retrying");
                    health.set(health_slot, false, detail);
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(retry_max) => {}
                    }
                }
            }
        };
        let (pub_tx, pub_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (ack_tx, ack_rx) = mpsc::channel(ACK_BATCH_QUEUE);
        // The connection loop stops only after the pipeline has acknowledged what it could.
        let conn_stop = CancellationToken::new();
        let connection = Connection {
            broker: cfg.name.clone(),
            endpoint: format!("{}:{}", cfg.host, cfg.port),
            topics: cfg.topics.clone(),
            options,
            publishes: pub_tx,
            ack_batches: ack_rx,
            health,
            health_slot,
            stop: conn_stop.clone(),
            retry_initial,
            retry_max,
        };
        let pipeline = Pipeline {
            broker: cfg.name.clone(),
            stations,
            tags,
            tables,
            formats: cfg.formats.clone(),
            source_id,
            ingest: Some(ingest),
            committed,
            publishes: pub_rx,
            session: None,
            ack_batches: ack_tx,
            pending: HashMap::new(),
            next_token: 0,
            unsent_acks: VecDeque::new(),
            retire: Vec::new(),
            waiting: VecDeque::new(),
            cancel,
        };
        let (_, result) = tokio::join!(connection.run(), async {
            let r = pipeline.run().await;
            conn_stop.cancel();
            r
        });
        result
    }
}

/// Owns the broker connection: one rumqttc client and event loop per connection (epoch).
struct Connection {
    broker: String,
    /// `host:port`, for messages.
    endpoint: String,
    topics: Vec<String>,
    options: MqttOptions,
    /// Publishes, connection changes and PUBACK confirmations, in the order the broker sent them.
    publishes: mpsc::Sender<FromBroker>,
    /// PUBACKs from the pipeline, written straight into the connection's write buffer.
    ack_batches: mpsc::Receiver<AckBatch>,
    health: Health,
    health_slot: usize,
    stop: CancellationToken,
    retry_initial: Duration,
    retry_max: Duration,
}

/// How one connection (epoch) ended.
enum ConnectionEnd {
    /// Shutdown: the client and event loop are kept to flush the final acks.
    Stop(AsyncClient, Box<rumqttc::EventLoop>),
    /// The pipeline is gone.
    PipelineGone,
    Failed(rumqttc::ConnectionError),
}

impl Connection {
    /// Connects, reconnects with capped backoff, and hands the pipeline what the broker sends.
    /// Besides publishes it tracks PUBACK delivery: a PUBACK handed to rumqttc may still be lost
    /// (a killed process's socket is reset with unsent or unread data), so "sent" proves
    /// nothing. The broker handles a client's packets in order, so once the PINGRESP to a
    /// PINGREQ written after a PUBACK arrives, that PUBACK was processed.
    async fn run(mut self) {
        let mut backoff = self.retry_initial;
        // The last failure logged at WARN: a different one is logged again (a wrong password
        // after a network outage must not hide behind "already logged").
        let mut down_logged: Option<String> = None;
        let mut epoch: u32 = 0;
        // Confirmed PUBACKs the pipeline had no room for yet (they survive a reconnect: they
        // were processed).
        let mut confirmed = PkidCounts::default();
        loop {
            let end = self
                .connection(&mut epoch, &mut confirmed, &mut backoff, &mut down_logged)
                .await;
            let e = match end {
                ConnectionEnd::Stop(client, eventloop) => {
                    Self::flush_and_leave(client, eventloop).await;
                    break;
                }
                ConnectionEnd::PipelineGone => break,
                ConnectionEnd::Failed(e) => e,
            };
            // The failed connection's client and event loop are gone: acks still queued in them
            // are dropped (the broker redelivers those messages; module doc).
            let detail = describe_connection_error(&e, &self.endpoint);
            self.health.set(self.health_slot, false, detail.clone());
            let kind = failure_kind(&e);
            if down_logged.as_deref() != Some(kind) {
                if kind == "network" || kind == "other" {
                    tracing::warn!(broker = %self.broker, error = %e, "{detail}; retrying with backoff");
                } else {
                    // Refused login, TLS failure: configuration, someone has to act.
                    tracing::error!(broker = %self.broker, error = %e, "{detail}; retrying with backoff");
                }
                down_logged = Some(kind.to_string());
            } else {
                tracing::debug!(broker = %self.broker, error = %e, "MQTT reconnect failed");
            }
            let jittered = backoff.mul_f64(0.5 + rand::random::<f64>() * 0.5);
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep(jittered) => {}
            }
            backoff = (backoff * 2).min(self.retry_max);
        }
        self.health.set(self.health_slot, false, "stopped");
    }

    /// One connection attempt and, once connected, its whole life.
    async fn connection(
        &mut self,
        epoch: &mut u32,
        confirmed: &mut PkidCounts,
        backoff: &mut Duration,
        down_logged: &mut Option<String>,
    ) -> ConnectionEnd {
        let (client, mut eventloop) = AsyncClient::new(self.options.clone(), REQUEST_QUEUE);
        // PUBACKs written since the last PINGREQ, and those written before the outstanding one.
        let mut written = PkidCounts::default();
        let mut before_ping = PkidCounts::default();
        // This connection's epoch, once the broker accepted it (no PUBACK is written before).
        let mut connected: Option<u32> = None;
        loop {
            if let Some(epoch) = connected {
                if let Err(e) = self.write_acks(&mut eventloop, &client, epoch) {
                    return ConnectionEnd::Failed(rumqttc::ConnectionError::MqttState(e));
                }
            }
            let polled = tokio::select! {
                _ = self.stop.cancelled() => return ConnectionEnd::Stop(client, Box::new(eventloop)),
                ev = eventloop.poll() => ev,
            };
            let to_pipeline = match polled {
                Ok(MqttEvent::Incoming(Incoming::Publish(p))) => FromBroker::Publish(p),
                Ok(MqttEvent::Incoming(Incoming::ConnAck(ack))) => {
                    *backoff = self.retry_initial;
                    *down_logged = None;
                    *epoch = epoch.wrapping_add(1);
                    connected = Some(*epoch);
                    let filters = self
                        .topics
                        .iter()
                        .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
                    if let Err(e) = client.try_subscribe_many(filters) {
                        tracing::error!(broker = %self.broker, error = %e, "cannot queue MQTT subscription");
                    }
                    tracing::info!(broker = %self.broker, session_present = ack.session_present, "connected to MQTT broker");
                    self.health.set(self.health_slot, true, "connected");
                    FromBroker::Connected {
                        epoch: *epoch,
                        client: client.clone(),
                    }
                }
                Ok(MqttEvent::Incoming(Incoming::SubAck(s))) => {
                    if s.return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    {
                        tracing::error!(broker = %self.broker, "broker refused a subscription; check its ACL for the configured topics");
                        self.health.set(
                            self.health_slot,
                            true,
                            "connected, a subscription was refused",
                        );
                    } else {
                        self.health.set(self.health_slot, true, SUBSCRIBED);
                    }
                    continue;
                }
                Ok(MqttEvent::Outgoing(Outgoing::PubAck(pkid))) => {
                    written.add(pkid, 1);
                    continue;
                }
                Ok(MqttEvent::Outgoing(Outgoing::PingReq)) => {
                    before_ping.absorb(&mut written);
                    continue;
                }
                Ok(MqttEvent::Incoming(Incoming::PingResp)) => {
                    // Behind every publish read before this PINGRESP (module doc).
                    confirmed.absorb(&mut before_ping);
                    self.offer_confirmations(confirmed);
                    continue;
                }
                Ok(_) => continue,
                Err(e) => return ConnectionEnd::Failed(e),
            };
            self.offer_confirmations(confirmed);
            // Blocks while the pipeline is full: backpressure to the broker.
            tokio::select! {
                _ = self.stop.cancelled() => return ConnectionEnd::Stop(client, Box::new(eventloop)),
                sent = self.publishes.send(to_pipeline) => if sent.is_err() {
                    return ConnectionEnd::PipelineGone;
                },
            }
        }
    }

    /// Writes the PUBACKs the pipeline batched for this connection into rumqttc's write buffer, in
    /// order, each with its `Outgoing::PubAck` event (counted for confirmation like any other).
    /// rumqttc sends one queued request per poll while it reads up to ten packets per poll, so
    /// PUBACKs queued as requests fell tens of thousands behind under a burst (and each cost a
    /// socket write); written here they leave with the next flush. The last PUBACK of what was
    /// taken goes through the request channel instead: that request is what makes the event
    /// loop flush, after the others are in the buffer.
    fn write_acks(
        &mut self,
        eventloop: &mut rumqttc::EventLoop,
        client: &AsyncClient,
        epoch: u32,
    ) -> Result<(), rumqttc::StateError> {
        let write = |eventloop: &mut rumqttc::EventLoop, pkid: u16| {
            eventloop
                .state
                .handle_outgoing_packet(rumqttc::Request::PubAck(rumqttc::PubAck::new(pkid)))
        };
        let mut last = None;
        while let Ok(batch) = self.ack_batches.try_recv() {
            // Acks of an earlier connection are dropped with it (module doc).
            if batch.epoch != epoch {
                continue;
            }
            for pkid in batch.pkids {
                if let Some(prev) = last.replace(pkid) {
                    write(eventloop, prev)?;
                }
            }
        }
        if let Some(pkid) = last {
            let ack = AckRef {
                pkid,
                qos: QoS::AtLeastOnce,
                epoch,
            };
            if client.try_ack(&ack.ack_publish()).is_err() {
                // The request channel is full: those requests make the event loop flush.
                write(eventloop, pkid)?;
            }
        }
        Ok(())
    }

    /// Hands confirmed PUBACK counts to the pipeline if it has room; otherwise they wait (behind
    /// later publishes, which is still after every publish read before their PINGRESP).
    fn offer_confirmations(&self, confirmed: &mut PkidCounts) {
        if confirmed.is_empty() {
            return;
        }
        if let Ok(permit) = self.publishes.try_reserve() {
            permit.send(FromBroker::Confirmed(confirmed.take()));
        }
    }

    /// Flushes what the pipeline queued (final acks), then leaves the session in place.
    async fn flush_and_leave(client: AsyncClient, mut eventloop: Box<rumqttc::EventLoop>) {
        let _ = client.try_disconnect();
        let deadline = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                ev = eventloop.poll() => match ev {
                    Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                },
            }
        }
    }
}

/// What the connection loop hands the pipeline, in the order it read it from the broker.
#[derive(Debug)]
enum FromBroker {
    /// A new connection: messages after this arrived on it and are acknowledged through
    /// `client` only (module doc).
    Connected {
        epoch: u32,
        client: AsyncClient,
    },
    Publish(Publish),
    /// `(packet id, count)`: PUBACKs the broker has certainly processed (see [`Connection::run`]).
    Confirmed(Vec<(u16, u16)>),
}

/// PUBACKs (QoS 1) for the connection `epoch`, in commit order, from the pipeline to the
/// connection loop ([`Connection::write_acks`]).
#[derive(Debug)]
struct AckBatch {
    epoch: u32,
    pkids: Vec<u16>,
}

/// What acknowledging a message needs, kept instead of the [`Publish`] itself.
///
/// A received `Publish` is a slice of rumqttc's socket read buffer: its payload `Bytes` keeps the
/// whole read chunk (kilobytes, holding many messages) alive. Holding publishes until their
/// commit therefore pinned one chunk per few messages, and mosquitto 2.0.11 puts a reconnecting
/// session's whole queue in flight, so hundreds of thousands of messages could be between
/// receipt and PUBACK during a burst: that was most of the agent's peak RSS (heaptrack,
/// 2026-11-23: ~46 MB of pinned read chunks and an 18 MB ack queue at a 300,000-scan fill). A
/// publish is dropped as soon as it is normalised; only these 8 bytes wait.
#[derive(Debug, Clone, Copy)]
struct AckRef {
    pkid: u16,
    qos: QoS,
    /// The connection it arrived on.
    epoch: u32,
}

impl AckRef {
    /// A payload-less publish carrying what rumqttc's `try_ack` reads (packet id and QoS).
    fn ack_publish(&self) -> Publish {
        let mut p = Publish::new(String::new(), self.qos, Vec::new());
        p.pkid = self.pkid;
        p
    }
}

/// A count per MQTT packet id (128 KiB, whatever the message rate: at tens of thousands of
/// messages per second a list of ids grew to ~1M entries per keep-alive). Counts saturate;
/// an undercount only retires fewer entries (safe).
#[derive(Debug, Clone)]
struct PkidCounts {
    counts: Vec<u16>,
    /// Ids with a non-zero count.
    ids: usize,
}

impl Default for PkidCounts {
    fn default() -> Self {
        PkidCounts {
            counts: vec![0; 1 << 16],
            ids: 0,
        }
    }
}

impl PkidCounts {
    fn add(&mut self, pkid: u16, n: u16) {
        if let Some(c) = self.counts.get_mut(usize::from(pkid)) {
            if *c == 0 && n > 0 {
                self.ids += 1;
            }
            *c = c.saturating_add(n);
        }
    }

    fn is_empty(&self) -> bool {
        self.ids == 0
    }

    fn clear(&mut self) {
        if self.ids > 0 {
            self.counts.iter_mut().for_each(|c| *c = 0);
            self.ids = 0;
        }
    }

    /// Adds every count of `other` to this one; `other` is empty afterwards.
    fn absorb(&mut self, other: &mut PkidCounts) {
        if other.is_empty() {
            return;
        }
        for (c, o) in self.counts.iter_mut().zip(other.counts.iter()) {
            *c = c.saturating_add(*o);
        }
        self.ids = self.counts.iter().filter(|c| **c > 0).count();
        other.clear();
    }

    /// The non-zero `(id, count)` pairs in ascending id order; empty afterwards.
    fn take(&mut self) -> Vec<(u16, u16)> {
        let mut out = Vec::with_capacity(self.ids);
        for (pkid, c) in self.counts.iter().enumerate() {
            if *c > 0 {
                out.extend(u16::try_from(pkid).ok().map(|p| (p, *c)));
            }
        }
        self.clear();
        out
    }
}

/// Normalises publishes, feeds the writer, acknowledges committed messages.
struct Pipeline {
    broker: String,
    stations: Arc<Stations>,
    tags: Arc<Tags>,
    tables: Option<TablesRx>,
    /// `[[mqtt.formats]]` of this broker.
    formats: Vec<FormatRule>,
    source_id: SourceId,
    /// `None` once shutdown started (dropping it lets the writer finish).
    ingest: Option<mpsc::Sender<IngestItem>>,
    committed: mpsc::Receiver<Committed>,
    /// Connections, publishes, and PUBACKs the broker has processed, in broker order.
    publishes: mpsc::Receiver<FromBroker>,
    /// The current connection's epoch and client (acks go only to it).
    session: Option<(u32, AsyncClient)>,
    /// Bulk PUBACKs to the connection loop (see [`AckBatch`]).
    ack_batches: mpsc::Sender<AckBatch>,
    /// Messages sent to the writer and not yet committed, by token (see [`AckRef`]).
    pending: HashMap<u64, AckRef>,
    next_token: u64,
    /// Acks the rumqttc request channel had no room for yet.
    unsent_acks: VecDeque<AckRef>,
    /// Confirmed `(pkid, count)` PUBACKs to retire with the next item.
    retire: Vec<(u16, u16)>,
    /// Items the writer had no room for yet (in order).
    waiting: VecDeque<IngestItem>,
    cancel: CancellationToken,
}

impl Pipeline {
    async fn run(mut self) -> Result<(), MqttError> {
        let mut ack_retry = tokio::time::interval(Duration::from_millis(10));
        ack_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while let Some(ingest) = self.ingest.clone() {
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                notice = self.committed.recv() => match notice {
                    Some(c) => self.acknowledge(c),
                    None => return Err(MqttError::WriterGone { broker: self.broker.clone() }),
                },
                permit = ingest.reserve(), if !self.waiting.is_empty() => match (permit, self.waiting.pop_front()) {
                    (Ok(permit), Some(item)) => permit.send(item),
                    _ => return Err(MqttError::WriterGone { broker: self.broker.clone() }),
                },
                p = self.publishes.recv(), if self.waiting.is_empty() => match p {
                    Some(FromBroker::Confirmed(counts)) => self.retire.extend(counts),
                    Some(FromBroker::Connected { epoch, client }) => {
                        self.session = Some((epoch, client));
                        self.flush_acks();
                    }
                    Some(FromBroker::Publish(p)) => {
                        self.waiting = self.items_for(p);
                        while !self.waiting.is_empty() {
                            match ingest.try_reserve() {
                                Ok(permit) => {
                                    if let Some(item) = self.waiting.pop_front() {
                                        permit.send(item);
                                    }
                                }
                                Err(mpsc::error::TrySendError::Full(())) => break,
                                Err(mpsc::error::TrySendError::Closed(())) => {
                                    return Err(MqttError::WriterGone { broker: self.broker.clone() })
                                }
                            }
                        }
                    }
                    None => break,
                },
                _ = ack_retry.tick(), if !self.unsent_acks.is_empty() => self.flush_acks(),
            }
        }
        self.shutdown().await;
        Ok(())
    }

    /// Stops feeding the writer, then acknowledges whatever it still commits (bounded wait).
    async fn shutdown(&mut self) {
        self.ingest = None;
        self.waiting.clear();
        let deadline = tokio::time::sleep(SHUTDOWN_GRACE);
        tokio::pin!(deadline);
        while !self.pending.is_empty() {
            tokio::select! {
                _ = &mut deadline => {
                    tracing::warn!(broker = %self.broker, unacknowledged = self.pending.len(), "shutdown before every message was committed; the broker will redeliver them");
                    break;
                }
                notice = self.committed.recv() => match notice {
                    Some(c) => self.acknowledge(c),
                    None => break,
                },
            }
        }
        self.flush_acks();
    }

    /// The writer items for one PUBLISH. QoS 1/2: one item carrying every event of the message
    /// (one transaction, one PUBACK, one dedupe row). QoS 0 (no ack, no redelivery): one item
    /// per event.
    fn items_for(&mut self, p: Publish) -> VecDeque<IngestItem> {
        if let Some(t) = newer_tables(&mut self.tables) {
            self.stations = t.stations;
            self.tags = t.tags;
        }
        let decode = normalise::decode_for(&self.formats, &p.topic);
        let (events, scan_id) = normalise::normalise_message_with_id(
            &self.stations,
            &self.tags,
            decode,
            normalise::Incoming {
                broker: &self.broker,
                topic: &p.topic,
                payload: &p.payload,
                received_at: crate::now_micros(),
            },
        );
        let mut events = events.into_iter();
        let mut items = VecDeque::new();
        for ev in events.as_slice() {
            if let EventBody::Quarantined(q) = &ev.body {
                tracing::debug!(broker = %self.broker, topic = %p.topic, reason = %q.reason, "payload quarantined");
            }
        }
        let Some(first) = events.next() else {
            return items; // normalise_message never returns an empty list
        };
        let hash = message_hash(&p.topic, &p.payload);
        let token = self.next_token;
        self.next_token += 1;
        if p.qos == QoS::AtMostOnce {
            items.push_back(IngestItem {
                source: self.source_id,
                token,
                event: first,
                mqtt: None,
                scan_id,
            });
            for event in events {
                let token = self.next_token;
                self.next_token += 1;
                items.push_back(IngestItem {
                    source: self.source_id,
                    token,
                    event,
                    mqtt: None,
                    scan_id: None,
                });
            }
        } else {
            items.push_back(IngestItem {
                source: self.source_id,
                token,
                event: first,
                mqtt: Some(MqttMark {
                    broker: self.broker.clone(),
                    pkid: p.pkid,
                    hash,
                    dup: p.dup,
                    retire: std::mem::take(&mut self.retire),
                    more_events: events.collect(),
                }),
                scan_id,
            });
        }
        self.pending.insert(
            token,
            AckRef {
                pkid: p.pkid,
                qos: p.qos,
                epoch: self.session.as_ref().map_or(0, |(e, _)| *e),
            },
        );
        // `p` (and with it the read chunk its payload points into) is released here.
        items
    }

    fn acknowledge(&mut self, c: Committed) {
        for token in c.tokens {
            if let Some(entry) = self.pending.remove(&token) {
                self.unsent_acks.push_back(entry);
            }
        }
        self.flush_acks();
    }

    /// Hands queued acks to the current connection, in order. An ack of a message from an
    /// earlier connection is dropped: the broker redelivered that message on the current one and
    /// its copy is acknowledged instead (module doc). QoS 1 acks go in batches to the connection
    /// loop, which writes them straight into the connection ([`Connection::write_acks`]); the
    /// last of each batch goes through the client's request channel, which wakes the event
    /// loop so the connection loop takes the batch.
    fn flush_acks(&mut self) {
        loop {
            let Some((epoch, client)) = self.session.as_ref() else {
                return;
            };
            let epoch = *epoch;
            while self.unsent_acks.front().is_some_and(|a| a.epoch != epoch) {
                self.unsent_acks.pop_front();
            }
            let run = self
                .unsent_acks
                .iter()
                .take(MAX_ACK_BATCH)
                .take_while(|a| a.qos == QoS::AtLeastOnce && a.epoch == epoch)
                .count();
            if run >= 2 {
                let pkids = self
                    .unsent_acks
                    .iter()
                    .take(run - 1)
                    .map(|a| a.pkid)
                    .collect();
                match self.ack_batches.try_send(AckBatch { epoch, pkids }) {
                    Ok(()) => {
                        self.unsent_acks.drain(..run - 1);
                    }
                    // Full (retried on the next tick) or the connection loop is gone (shutdown).
                    Err(_) => return,
                }
            }
            let Some(a) = self.unsent_acks.front().copied() else {
                return;
            };
            match client.try_ack(&a.ack_publish()) {
                Ok(()) => {
                    self.unsent_acks.pop_front();
                }
                // Full, or the connection's event loop is gone (a new epoch is on its way).
                Err(rumqttc::ClientError::TryRequest(_)) => return,
                Err(e) => {
                    tracing::debug!(broker = %self.broker, error = %e, "cannot queue PUBACK");
                    return;
                }
            }
        }
    }
}

/// A connection failure in words that say what to check.
pub fn describe_connection_error(e: &rumqttc::ConnectionError, endpoint: &str) -> String {
    use rumqttc::{ConnectReturnCode as C, ConnectionError as E};
    match e {
        E::ConnectionRefused(C::BadUserNamePassword) => format!(
            "broker {endpoint} refused the login: wrong username or password (check username and password_file)"
        ),
        E::ConnectionRefused(C::NotAuthorized) => format!(
            "broker {endpoint} refused the connection: not authorised (check username and password_file, and the broker's password file and ACL)"
        ),
        E::ConnectionRefused(C::BadClientId) => format!(
            "broker {endpoint} refused the client id (check client_id)"
        ),
        E::ConnectionRefused(code) => {
            format!("broker {endpoint} refused the connection ({code:?})")
        }
        E::Tls(t) => format!(
            "TLS with broker {endpoint} failed: {t} (check tls.ca_cert is the CA of the broker's certificate, that host matches a name in it, and tls.client_cert/client_key if the broker requires a client certificate)"
        ),
        E::Io(io) if looks_like_tls(&io.to_string()) => format!(
            "TLS with broker {endpoint} failed: {io} (the broker refused this agent's certificate: check tls.client_cert/client_key are signed by a CA the broker trusts; an alert about the CA can also mean tls.ca_cert is wrong)"
        ),
        E::Io(io) => format!("cannot reach broker {endpoint}: {io}"),
        E::NetworkTimeout => format!("broker {endpoint} did not answer in time"),
        other => format!("connection to broker {endpoint} lost: {other}"),
    }
}

/// A short name of the failure, to log each change once at WARN.
fn failure_kind(e: &rumqttc::ConnectionError) -> &'static str {
    use rumqttc::ConnectionError as E;
    match e {
        E::ConnectionRefused(_) => "refused",
        E::Tls(_) => "tls",
        E::Io(io) if looks_like_tls(&io.to_string()) => "tls",
        E::Io(_) | E::NetworkTimeout => "network",
        _ => "other",
    }
}

/// Whether an I/O error text is a TLS alert or handshake failure (rustls reports the peer's
/// alerts as I/O errors once the handshake has started).
fn looks_like_tls(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    ["alert", "certificate", "handshake", "tls"]
        .iter()
        .any(|w| t.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{ConnectReturnCode, ConnectionError};

    #[test]
    fn pkid_counts_add_up_per_id_and_hand_them_over_in_id_order() {
        let mut written = PkidCounts::default();
        for pkid in [7, 65535, 1, 7, 64, 63] {
            written.add(pkid, 1);
        }
        let mut before_ping = PkidCounts::default();
        before_ping.add(2, 1);
        before_ping.add(64, 1);
        before_ping.absorb(&mut written);
        assert!(written.is_empty());
        assert_eq!(
            before_ping.take(),
            vec![(1, 1), (2, 1), (7, 2), (63, 1), (64, 2), (65535, 1)]
        );
        assert!(before_ping.is_empty());
        assert_eq!(before_ping.take(), Vec::<(u16, u16)>::new());
        written.add(0, u16::MAX);
        written.add(0, 1);
        assert_eq!(written.take(), vec![(0, u16::MAX)], "counts saturate");
        written.add(3, 1);
        written.clear();
        assert!(written.is_empty());
    }

    #[test]
    fn an_ack_publish_carries_the_packet_id_and_qos_and_no_payload() {
        let a = AckRef {
            pkid: 4242,
            qos: QoS::AtLeastOnce,
            epoch: 3,
        };
        let p = a.ack_publish();
        assert_eq!((p.pkid, p.qos), (4242, QoS::AtLeastOnce));
        assert!(p.payload.is_empty() && p.topic.is_empty());
    }

    #[test]
    fn a_refused_login_names_the_keys_to_check() {
        for code in [
            ConnectReturnCode::BadUserNamePassword,
            ConnectReturnCode::NotAuthorized,
        ] {
            let d = describe_connection_error(
                &ConnectionError::ConnectionRefused(code),
                "broker.local:8883",
            );
            assert!(d.contains("broker.local:8883"), "{d}");
            assert!(d.contains("username") && d.contains("password_file"), "{d}");
        }
    }

    #[test]
    fn a_tls_alert_reported_as_io_is_described_as_tls_and_a_refused_socket_as_unreachable() {
        let alert = ConnectionError::Io(std::io::Error::other("received fatal alert: UnknownCA"));
        assert!(describe_connection_error(&alert, "b:1").starts_with("TLS with broker b:1"));
        assert_eq!(failure_kind(&alert), "tls");
        let refused =
            ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(describe_connection_error(&refused, "b:1").starts_with("cannot reach broker b:1"));
        assert_eq!(failure_kind(&refused), "network");
    }
}
