//! Pure functions turning the raw bytes of an MQTT message into canonical
//! [`scanbridge_protocol::Event`]s (with `seq = 0`; the store assigns the real one at commit).
//!
//! The payload format is chosen per topic filter (`[[mqtt.formats]]`, first match wins, default
//! JSON; see [`decode_for`]):
//! - [`json`]: the canonical JSON scan `{"code":"4006381333931","device":"SC-01","op":"count",...}`.
//! - [`text`]: the whole payload is one barcode (CR/LF trimmed), device from a topic level.
//! - [`kepware`]: PLC tag JSON as Kepware's IoT Gateway publishes it, one [`Reading`] per value,
//!   mapped through the `[[tags]]` table.
//!
//! Every scan goes through [`scan::build_scan`]: an AIM prefix (`]C1`, `]E0`, ...) is split off
//! and sets the symbology; a GS1 element string (signalled by a GS1 AIM identifier, a leading
//! FNC1/GS or a GS1 symbology name) is parsed into `Scan.gs1` by `scanbridge-barcode`; the device's
//! station supplies `op` and `location` unless the payload gives them.
//!
//! One message yields one event, or several (a tag message with several values); the MQTT source
//! commits all events of a message in one transaction and acknowledges it once. Anything that
//! cannot be accepted becomes an [`EventBody::Quarantined`] with the raw bytes and a reason a
//! technician can act on. Nothing is dropped and nothing here panics, whatever the input
//! (property-tested).
//!
//! [`Reading`]: scanbridge_protocol::Reading

pub mod json;
pub mod kepware;
pub mod scan;
pub mod text;

use std::collections::HashMap;

use scanbridge_protocol::{Event, EventBody, Quarantined, Source, UnixMicros};

use crate::config::{
    topic_matches, FormatRule, PayloadFormat, Station, TagMapping, DEFAULT_DEVICE_LEVEL,
};

pub use scan::validate_code;

/// Largest payload accepted as a scan; bigger ones are quarantined.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// Longest barcode content accepted (characters).
pub const MAX_CODE_CHARS: usize = 512;
/// Longest free-text field (device, location, reference, symbology) accepted.
pub const MAX_FIELD_CHARS: usize = 256;
/// Device name used when neither payload nor topic names one.
pub const UNKNOWN_DEVICE: &str = "unknown";

/// Station defaults by device name.
#[derive(Debug, Clone, Default)]
pub struct Stations {
    by_device: HashMap<String, Station>,
}

impl Stations {
    pub fn new(stations: &[Station]) -> Stations {
        Stations {
            by_device: stations
                .iter()
                .map(|s| (s.device.clone(), s.clone()))
                .collect(),
        }
    }

    /// The station of `device`, if one is configured.
    pub fn get(&self, device: &str) -> Option<&Station> {
        self.by_device.get(device)
    }
}

/// The `[[tags]]` table by tag id.
#[derive(Debug, Clone, Default)]
pub struct Tags {
    by_id: HashMap<String, TagMapping>,
}

impl Tags {
    pub fn new(tags: &[TagMapping]) -> Tags {
        Tags {
            by_id: tags.iter().map(|t| (t.id.clone(), t.clone())).collect(),
        }
    }

    /// The mapping of tag id `id`, if configured.
    pub fn get(&self, id: &str) -> Option<&TagMapping> {
        self.by_id.get(id)
    }
}

/// One message as received from a broker.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// Configured broker name.
    pub broker: &'a str,
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub received_at: UnixMicros,
}

impl Incoming<'_> {
    fn source(&self) -> Source {
        Source::Mqtt {
            broker: self.broker.to_string(),
            topic: self.topic.to_string(),
        }
    }
}

/// How to decode the payloads of one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decode {
    pub format: PayloadFormat,
    /// The topic level (0-based) naming the device when the payload does not.
    pub device_level: usize,
}

impl Default for Decode {
    fn default() -> Self {
        Decode {
            format: PayloadFormat::Json,
            device_level: DEFAULT_DEVICE_LEVEL,
        }
    }
}

/// The decoder for `topic`: the first `[[mqtt.formats]]` rule whose filter matches, else JSON.
pub fn decode_for(rules: &[FormatRule], topic: &str) -> Decode {
    rules
        .iter()
        .find(|r| topic_matches(&r.filter, topic))
        .map(|r| Decode {
            format: r.format,
            device_level: r.device_level,
        })
        .unwrap_or_default()
}

/// Normalises one MQTT message into one or more events (seq 0), in payload order. Never fails
/// and never returns an empty list: bad input is quarantined.
pub fn normalise_message(
    stations: &Stations,
    tags: &Tags,
    decode: Decode,
    msg: Incoming<'_>,
) -> Vec<Event> {
    normalise_message_with_id(stations, tags, decode, msg).0
}

/// [`normalise_message`], plus the scan id the payload carries (canonical JSON `id`), which
/// belongs to the first event and its device. The store drops a scan whose `(device, id)` it
/// has already committed (`store::dedupe`).
pub fn normalise_message_with_id(
    stations: &Stations,
    tags: &Tags,
    decode: Decode,
    msg: Incoming<'_>,
) -> (Vec<Event>, Option<String>) {
    let topic_device = device_at_level(msg.topic, decode.device_level);
    match decode.format {
        PayloadFormat::Json => {
            let (event, id) = json::normalise_with_id(stations, msg, topic_device);
            (vec![event], id)
        }
        PayloadFormat::Text => (
            vec![text::normalise(
                stations,
                msg.payload,
                topic_device.unwrap_or(UNKNOWN_DEVICE),
                msg.source(),
                msg.received_at,
            )],
            None,
        ),
        PayloadFormat::Kepware => (kepware::normalise(tags, msg, topic_device), None),
    }
}

/// Normalises one canonical-JSON MQTT message into an event (seq 0), the device defaulting to
/// the topic level after the first. Never fails: bad input is quarantined.
pub fn normalise_mqtt(stations: &Stations, msg: Incoming<'_>) -> Event {
    json::normalise(stations, msg, device_from_topic(msg.topic))
}

/// The topic level after the first (`scanbridge/SC-01/scan` → `SC-01`), when present and non-empty.
pub fn device_from_topic(topic: &str) -> Option<&str> {
    device_at_level(topic, DEFAULT_DEVICE_LEVEL)
}

/// Topic level `level` (0-based), when present, non-empty, short and free of control characters.
pub fn device_at_level(topic: &str, level: usize) -> Option<&str> {
    topic.split('/').nth(level).filter(|d| {
        !d.is_empty() && d.chars().count() <= MAX_FIELD_CHARS && !d.chars().any(char::is_control)
    })
}

/// An event holding `raw` and the reason it could not be accepted.
pub fn quarantined(
    source: Source,
    device: &str,
    received_at: UnixMicros,
    raw: &[u8],
    reason: String,
) -> Event {
    Event {
        seq: 0,
        captured_at: received_at,
        received_at,
        source,
        device: device.to_string(),
        body: EventBody::Quarantined(Quarantined {
            raw: raw.to_vec(),
            reason,
        }),
    }
}

/// RFC 3339 timestamp → microseconds since the epoch.
pub fn parse_rfc3339_micros(s: &str) -> Option<UnixMicros> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

#[cfg(test)]
mod tests;
