//! The canonical event model: what a scan, a PLC reading or a quarantined payload looks like
//! once the agent has normalised it, and the batch / ack / status messages exchanged with the relay.
//!
//! Identity: an event is identified by `(site, seq)`. The site travels once per [`Batch`] (and the
//! relay takes it from the client certificate, never from the body); `seq` is assigned by the
//! agent's store at commit time, strictly increasing and never reused.

use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch, UTC.
pub type UnixMicros = i64;

/// A site identifier such as `WH01`: 1 to 32 characters of `A-Z a-z 0-9 - _`.
pub fn is_valid_site_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One normalised event as stored by the agent and forwarded to the relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Per-site sequence number, assigned by the agent store at commit; strictly increasing.
    pub seq: u64,
    /// When the device says the event happened (payload timestamp), else when the agent got it.
    pub captured_at: UnixMicros,
    /// When the agent received the bytes.
    pub received_at: UnixMicros,
    /// Where the bytes came from.
    pub source: Source,
    /// The device that produced the event (scanner name, PLC name).
    pub device: String,
    /// What happened.
    pub body: EventBody,
}

/// Where an event entered the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// An MQTT message: broker name from the agent config, and the topic it was published on.
    Mqtt { broker: String, topic: String },
    /// A line read from a serial port.
    Serial { port: String },
}

/// The payload of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventBody {
    /// A barcode scan.
    Scan(Scan),
    /// A PLC tag reading (scale weight, conveyor counter, dock door state...).
    Reading(Reading),
    /// Input the agent could not decode or validate, kept with its raw bytes.
    Quarantined(Quarantined),
}

/// A barcode scan with its operation context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scan {
    /// The decoded barcode content, without the AIM symbology prefix.
    pub code: String,
    /// Symbology as reported by the scanner (AIM identifier or payload field).
    pub symbology: Symbology,
    /// Parsed GS1 element string, when the code is one.
    pub gs1: Option<Gs1>,
    /// The warehouse operation this scan is part of (payload, else the device's station).
    pub op: Option<Operation>,
    /// Quantity, when the payload gives one (a count, a number of units picked).
    pub qty: Option<f64>,
    /// Location barcode (payload, else the device's station location).
    pub location: Option<String>,
    /// Document reference (a picking name such as `WH/IN/00012`), when known.
    pub reference: Option<String>,
}

/// Barcode symbology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Symbology {
    Unknown,
    Ean13,
    Ean8,
    UpcA,
    UpcE,
    Code128,
    Gs1_128,
    Code39,
    Itf,
    DataMatrix,
    Gs1DataMatrix,
    Qr,
    Gs1Qr,
    /// An AIM identifier (`]C1`, `]d2`, ...) the agent has no name for.
    Aim(String),
}

/// Parsed GS1 application identifiers that matter to warehouse flows.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Gs1 {
    /// AI 01 (or 02): GTIN-14.
    pub gtin: Option<String>,
    /// AI 10: batch / lot number.
    pub lot: Option<String>,
    /// AI 17: expiry date as `YYMMDD`.
    pub expiry: Option<String>,
    /// AI 21: serial number.
    pub serial: Option<String>,
    /// AI 00: SSCC-18.
    pub sscc: Option<String>,
    /// AI 30 / 37 / 310n..369n: quantity or measure.
    pub qty: Option<f64>,
}

/// Warehouse operation context of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operation {
    Receive,
    Pick,
    Pack,
    Ship,
    Count,
    Move,
}

impl Operation {
    /// The lower-case name used in payloads and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Receive => "receive",
            Operation::Pick => "pick",
            Operation::Pack => "pack",
            Operation::Ship => "ship",
            Operation::Count => "count",
            Operation::Move => "move",
        }
    }

    /// Parses the lower-case name used in payloads and configuration.
    pub fn parse(s: &str) -> Option<Operation> {
        Some(match s {
            "receive" => Operation::Receive,
            "pick" => Operation::Pick,
            "pack" => Operation::Pack,
            "ship" => Operation::Ship,
            "count" => Operation::Count,
            "move" => Operation::Move,
            _ => return None,
        })
    }
}

/// A PLC tag reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub tag: String,
    pub value: f64,
    pub unit: Option<String>,
}

/// Input the agent could not decode or validate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// The bytes exactly as received.
    pub raw: Vec<u8>,
    /// Why the agent could not accept them, in words a technician can act on.
    pub reason: String,
}

/// A batch of consecutive events from one site's agent, `POST /v1/batches`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The site the agent believes it is; the relay checks it against the client certificate.
    pub site: String,
    /// The agent instance (host name or configured id), for diagnostics.
    pub agent: String,
    /// `seq` of the first event; events are consecutive from here.
    pub first_seq: u64,
    pub events: Vec<Event>,
    /// The agent's status at the time the batch was built (heartbeat).
    pub status: Option<AgentStatus>,
}

/// The relay's answer to a batch: every event with `seq <= upto` is durably stored at the relay
/// (or was, was finished and has since been pruned by the relay's retention: either way the agent
/// may delete it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub upto: u64,
    /// How many events of the batch the relay already had.
    pub duplicates: u32,
}

/// The agent's health and backlog, carried with every batch and on an idle timer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Agent software version.
    pub version: String,
    /// Events stored and not yet acknowledged by the relay.
    pub backlog_events: u64,
    /// Bytes those events take in the store.
    pub backlog_bytes: u64,
    /// Age of the oldest unacknowledged event, in milliseconds.
    pub oldest_pending_age_ms: Option<u64>,
    /// Bytes used by the store on disk.
    pub disk_used_bytes: u64,
    /// Configured buffer cap in bytes.
    pub disk_cap_bytes: u64,
    /// Payloads quarantined since the store was created.
    pub quarantine_count: u64,
    /// Whether ingest is paused (buffer cap reached or disk full).
    pub ingest_paused: bool,
    /// Health of each configured source.
    pub sources: Vec<SourceHealth>,
    /// Expiry of the agent's client certificate.
    pub cert_not_after: Option<UnixMicros>,
    /// The agent's wall clock when the status was taken.
    pub clock: UnixMicros,
}

/// Health of one source (an MQTT broker connection, a serial port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceHealth {
    pub name: String,
    pub kind: SourceKind,
    pub up: bool,
    /// Last error or state change, for the technician.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceKind {
    Mqtt,
    Serial,
}
