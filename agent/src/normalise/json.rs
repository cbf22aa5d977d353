//! The canonical JSON scan payload (docs/payloads.md):
//! `{"code":"4006381333931","device":"SC-01","op":"count","qty":12,"location":"WH-STOCK-A01",
//!   "symbology":"ean13","captured_at":"2026-11-23T09:00:00.123Z","reference":"WH/IN/00012",
//!   "id":"SC-01-000123"}`;
//! only `code` is required. `id` is the scan's own id, assigned by the device or its gateway: the
//! store keeps the ids of recently committed scans per device and does not store a scan whose
//! `(device, id)` it already holds (`store::dedupe`); it is not part of the event on the wire. Defaults: `device` from the topic's device level, `op`/`location`
//! from the device's station, `captured_at` = when the agent received it.
//!
//! Refused (quarantined with a reason): not UTF-8, not a JSON object, no `code`, a wrongly typed
//! field, control characters, an unknown `op`, an unparsable `captured_at`, an oversized payload
//! or field, a wrong check digit, an invalid GS1 element string.

use scanbridge_protocol::{Event, EventBody, Operation, Scan, UnixMicros};

use super::scan::{build_scan, symbology_from_name, ScanFields};
use super::{
    parse_rfc3339_micros, quarantined, Incoming, Stations, MAX_FIELD_CHARS, MAX_PAYLOAD_BYTES,
    UNKNOWN_DEVICE,
};

/// Longest scan id accepted (characters).
pub const MAX_ID_CHARS: usize = 128;

/// Normalises one canonical JSON message (seq 0). Never fails: bad input is quarantined.
pub fn normalise(stations: &Stations, msg: Incoming<'_>, topic_device: Option<&str>) -> Event {
    normalise_with_id(stations, msg, topic_device).0
}

/// [`normalise`], plus the payload's scan `id` when it has a valid one (never for a quarantined
/// payload: an invalid `id` quarantines the message).
pub fn normalise_with_id(
    stations: &Stations,
    msg: Incoming<'_>,
    topic_device: Option<&str>,
) -> (Event, Option<String>) {
    match parse(stations, msg.payload, topic_device, msg.received_at) {
        Ok(p) => (
            Event {
                seq: 0,
                captured_at: p.captured_at,
                received_at: msg.received_at,
                source: msg.source(),
                device: p.device,
                body: EventBody::Scan(p.scan),
            },
            p.id,
        ),
        Err(reason) => (
            quarantined(
                msg.source(),
                topic_device.unwrap_or(UNKNOWN_DEVICE),
                msg.received_at,
                msg.payload,
                reason,
            ),
            None,
        ),
    }
}

struct Parsed {
    device: String,
    captured_at: UnixMicros,
    scan: Scan,
    id: Option<String>,
}

/// Decodes and validates the payload. `Err` carries the quarantine reason.
fn parse(
    stations: &Stations,
    payload: &[u8],
    topic_device: Option<&str>,
    received_at: UnixMicros,
) -> Result<Parsed, String> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(format!(
            "payload of {} bytes is larger than the {MAX_PAYLOAD_BYTES}-byte limit for a scan",
            payload.len()
        ));
    }
    let text =
        std::str::from_utf8(payload).map_err(|e| format!("payload is not UTF-8 text ({e})"))?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("payload is not JSON ({e})"))?;
    let obj = value
        .as_object()
        .ok_or_else(|| "payload is JSON but not an object like {\"code\":\"...\"}".to_string())?;

    let code = match obj.get("code") {
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(_) => return Err("field `code` must be a string".into()),
        None => return Err("payload has no `code` field".into()),
    };
    let id = scan_id(obj.get("id"))?;
    let device = match opt_str(obj, "device")? {
        Some(d) => d.to_string(),
        None => topic_device.unwrap_or(UNKNOWN_DEVICE).to_string(),
    };
    let op = match opt_str(obj, "op")? {
        Some(s) => Some(Operation::parse(s).ok_or_else(|| {
            format!("field `op` is {s:?}; use one of receive, pick, pack, ship, count, move")
        })?),
        None => None,
    };
    let qty = match obj.get("qty") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => match n.as_f64() {
            Some(q) if q.is_finite() => Some(q),
            _ => return Err("field `qty` is not a finite number".into()),
        },
        Some(_) => return Err("field `qty` must be a number".into()),
    };
    let captured_at = match opt_str(obj, "captured_at")? {
        Some(s) => parse_rfc3339_micros(s)
            .ok_or_else(|| format!("field `captured_at` is {s:?}, not an RFC 3339 timestamp"))?,
        None => received_at,
    };
    let scan = build_scan(
        stations.get(&device),
        ScanFields {
            code,
            symbology: opt_str(obj, "symbology")?.map(symbology_from_name),
            op,
            qty,
            location: opt_str(obj, "location")?.map(str::to_string),
            reference: opt_str(obj, "reference")?.map(str::to_string),
        },
    )?;
    Ok(Parsed {
        device,
        captured_at,
        scan,
        id,
    })
}

/// The optional `id` field: absent, null or empty → None; a string of 1 to [`MAX_ID_CHARS`]
/// characters without control characters → its text; anything else → Err (quarantine reason).
pub fn scan_id(value: Option<&serde_json::Value>) -> Result<Option<String>, String> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) => {
            if s.chars().count() > MAX_ID_CHARS {
                Err(format!(
                    "field `id` is longer than {MAX_ID_CHARS} characters; use a shorter unique id per scan (a counter or a UUID)"
                ))
            } else if s.chars().any(char::is_control) {
                Err("field `id` contains control characters; use printable characters only".into())
            } else {
                Ok(Some(s.clone()))
            }
        }
        Some(serde_json::Value::Number(n)) => Err(format!(
            "field `id` must be a string; send the number as text, \"id\":\"{n}\""
        )),
        Some(_) => Err(
            "field `id` must be a string (a unique id per scan, such as a counter or a UUID)"
                .into(),
        ),
    }
}

/// An optional string field: absent, null or empty → None; non-string, control characters or
/// too long → Err.
fn opt_str<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Option<&'a str>, String> {
    match obj.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => {
            if s.is_empty() {
                Ok(None)
            } else if s.chars().count() > MAX_FIELD_CHARS {
                Err(format!(
                    "field `{key}` is longer than {MAX_FIELD_CHARS} characters"
                ))
            } else if s.chars().any(char::is_control) {
                Err(format!("field `{key}` contains control characters"))
            } else {
                Ok(Some(s.as_str()))
            }
        }
        Some(_) => Err(format!("field `{key}` must be a string")),
    }
}
