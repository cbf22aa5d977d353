//! PLC tag JSON in the shape Kepware's IoT Gateway (MQTT agent, standard template) publishes:
//!
//! ```json
//! {"timestamp":1700000000000,
//!  "values":[{"id":"Channel1.Scale1.Weight","v":42.5,"q":true,"t":1700000000000}]}
//! ```
//!
//! `timestamp` and `t` are milliseconds since the epoch; `q` is the OPC quality (true = good).
//! Each value becomes one [`Reading`] through the `[[tags]]` table (id → tag, unit, device);
//! `captured_at` is the value's `t`, else the message `timestamp`, else the receive time.
//! `v` may be a number, a boolean (1 / 0) or a string holding a number.
//!
//! A value that cannot be accepted (id not in `[[tags]]`, `q` false, `v` not numeric, bad `t`)
//! becomes its own quarantined event holding that value's JSON exactly as received, in its place
//! among the message's events; the other values of the message are unaffected. A message that
//! cannot be read at all (not JSON, no `values` array, too large) is quarantined whole.

use scanbridge_protocol::{Event, EventBody, Reading, UnixMicros};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{quarantined, Incoming, Tags, UNKNOWN_DEVICE};

/// Largest tag message accepted; bigger ones are quarantined whole.
pub const MAX_TAG_PAYLOAD_BYTES: usize = 256 * 1024;
/// Most values taken from one message; a message with more is quarantined whole.
pub const MAX_VALUES: usize = 1000;

#[derive(Deserialize)]
struct Message<'a> {
    timestamp: Option<serde_json::Value>,
    #[serde(borrow)]
    values: Vec<&'a RawValue>,
}

/// Normalises one tag message into one event per value (seq 0), in payload order.
pub fn normalise(tags: &Tags, msg: Incoming<'_>, topic_device: Option<&str>) -> Vec<Event> {
    let device = topic_device.unwrap_or(UNKNOWN_DEVICE);
    let whole = |reason: String| {
        vec![quarantined(
            msg.source(),
            device,
            msg.received_at,
            msg.payload,
            format!("PLC tag message: {reason}"),
        )]
    };
    if msg.payload.len() > MAX_TAG_PAYLOAD_BYTES {
        return whole(format!(
            "{} bytes is larger than the {MAX_TAG_PAYLOAD_BYTES}-byte limit; publish fewer values per message",
            msg.payload.len()
        ));
    }
    let text = match std::str::from_utf8(msg.payload) {
        Ok(t) => t,
        Err(e) => return whole(format!("not UTF-8 text ({e})")),
    };
    let parsed: Message<'_> = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            return whole(format!(
                "not the Kepware IoT Gateway shape {{\"timestamp\":..,\"values\":[{{\"id\",\"v\",\"q\",\"t\"}}]}} ({e})"
            ))
        }
    };
    let message_time = match parsed.timestamp.as_ref().map(millis_to_micros) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(t))) => Some(t),
        Some(Err(why)) => return whole(format!("`timestamp` {why}")),
    };
    if parsed.values.is_empty() {
        return whole("the `values` array is empty: nothing to record".into());
    }
    if parsed.values.len() > MAX_VALUES {
        return whole(format!(
            "{} values is more than the {MAX_VALUES} the agent takes from one message; publish fewer values per message",
            parsed.values.len()
        ));
    }
    parsed
        .values
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let fallback = message_time.unwrap_or(msg.received_at);
            match value_event(tags, raw.get(), fallback) {
                Ok(v) => Event {
                    seq: 0,
                    captured_at: v.captured_at,
                    received_at: msg.received_at,
                    source: msg.source(),
                    device: v.device.unwrap_or(device).to_string(),
                    body: EventBody::Reading(v.reading),
                },
                Err((reason, dev)) => quarantined(
                    msg.source(),
                    dev.unwrap_or(device),
                    msg.received_at,
                    raw.get().as_bytes(),
                    format!("PLC tag value {i}: {reason}"),
                ),
            }
        })
        .collect()
}

struct Value<'t> {
    reading: Reading,
    captured_at: UnixMicros,
    device: Option<&'t str>,
}

/// One `{id, v, q, t}` item. `Err` carries the reason and the device, when the tag is known.
fn value_event<'t>(
    tags: &'t Tags,
    raw: &str,
    fallback_time: UnixMicros,
) -> Result<Value<'t>, (String, Option<&'t str>)> {
    let item: serde_json::Value = serde_json::from_str(raw).map_err(|e| (e.to_string(), None))?;
    let Some(obj) = item.as_object() else {
        return Err(("not an object like {\"id\":..,\"v\":..}".into(), None));
    };
    let id = match obj.get("id") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.as_str(),
        Some(_) => return Err(("`id` must be a non-empty string".into(), None)),
        None => return Err(("has no `id`".into(), None)),
    };
    let Some(mapping) = tags.get(id) else {
        return Err((
            format!(
                "tag id {id:?} is not in the agent's [[tags]] table; add it (id, tag, unit, device) or stop publishing it"
            ),
            None,
        ));
    };
    let dev = mapping.device.as_deref();
    match obj.get("q") {
        None | Some(serde_json::Value::Bool(true)) => {}
        Some(serde_json::Value::Bool(false)) => {
            return Err((
                format!("tag {id:?} has bad quality (q = false): the gateway could not read it from the PLC"),
                dev,
            ))
        }
        Some(other) => {
            return Err((
                format!("tag {id:?}: `q` must be true or false, got {other}"),
                dev,
            ))
        }
    }
    let value = match obj.get("v") {
        Some(serde_json::Value::Number(n)) => n.as_f64().filter(|f| f.is_finite()),
        Some(serde_json::Value::Bool(b)) => Some(if *b { 1.0 } else { 0.0 }),
        Some(serde_json::Value::String(s)) => {
            s.trim().parse::<f64>().ok().filter(|f| f.is_finite())
        }
        _ => None,
    };
    let Some(value) = value else {
        let got = obj
            .get("v")
            .map(|v| v.to_string())
            .unwrap_or_else(|| "nothing".into());
        return Err((
            format!("tag {id:?}: value `v` is not numeric (got {got})"),
            dev,
        ));
    };
    let captured_at = match obj.get("t").map(millis_to_micros) {
        None | Some(Ok(None)) => fallback_time,
        Some(Ok(Some(t))) => t,
        Some(Err(why)) => return Err((format!("tag {id:?}: `t` {why}"), dev)),
    };
    Ok(Value {
        reading: Reading {
            tag: mapping.tag.clone(),
            value,
            unit: mapping.unit.clone(),
        },
        captured_at,
        device: dev,
    })
}

/// Milliseconds since the epoch (a JSON number; null = absent) → microseconds.
fn millis_to_micros(v: &serde_json::Value) -> Result<Option<UnixMicros>, String> {
    let ms = match v {
        serde_json::Value::Null => return Ok(None),
        serde_json::Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 9e15)
                .map(|f| f as i64)
        }),
        _ => None,
    };
    match ms.filter(|m| *m >= 0).and_then(|m| m.checked_mul(1000)) {
        Some(us) => Ok(Some(us)),
        None => Err(format!(
            "is not a time in milliseconds since 1970 (got {v})"
        )),
    }
}
