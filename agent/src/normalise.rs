//! Pure functions turning the raw bytes of an MQTT message into a canonical
//! [`scanbridge_protocol::Event`] (with `seq = 0`; the store assigns the real one at commit).
//!
//! Input is the canonical JSON scan payload of CONTRACTS.md:
//! `{"code":"4006381333931","device":"SC-01","op":"count","qty":12,"location":"WH-STOCK-A01",
//!   "symbology":"ean13","captured_at":"2026-11-23T09:00:00.123Z","reference":"WH/IN/00012"}`;
//! only `code` is required. Defaults: `device` from the topic level after the first
//! (`scanbridge/SC-01/scan` → `SC-01`), `op`/`location` from the device's configured station.
//!
//! Anything that cannot be accepted — not UTF-8, not a JSON object, no `code`, a wrongly typed
//! field, control characters in the code, a wrong GS1 check digit on an 8/12/13/14-digit numeric
//! code, an unknown `op`, an unparsable `captured_at`, an oversized payload or code — becomes an
//! [`EventBody::Quarantined`] with the raw bytes and a reason. Nothing is dropped and nothing here
//! panics, whatever the input (property-tested).
//!
//! One deliberate exception to "no control characters": the ASCII group separator (0x1D), which
//! GS1-128 / GS1 DataMatrix scanners transmit as FNC1 between variable-length element strings.

use std::collections::HashMap;

use scanbridge_protocol::{
    Event, EventBody, Gs1, Operation, Quarantined, Scan, Source, Symbology, UnixMicros,
};

use crate::config::Station;

/// Largest payload accepted as a scan; bigger ones are quarantined.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// Longest barcode content accepted (characters).
pub const MAX_CODE_CHARS: usize = 512;
/// Longest free-text field (device, location, reference, symbology) accepted.
pub const MAX_FIELD_CHARS: usize = 256;
/// Device name used when neither payload nor topic names one.
pub const UNKNOWN_DEVICE: &str = "unknown";

const GS: char = '\u{1d}';

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

    fn get(&self, device: &str) -> Option<&Station> {
        self.by_device.get(device)
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

/// Normalises one MQTT message into an event (seq 0). Never fails: bad input is quarantined.
pub fn normalise_mqtt(stations: &Stations, msg: Incoming<'_>) -> Event {
    let topic_device = device_from_topic(msg.topic);
    let source = Source::Mqtt {
        broker: msg.broker.to_string(),
        topic: msg.topic.to_string(),
    };
    match parse_scan(stations, msg.payload, topic_device, msg.received_at) {
        Ok(p) => Event {
            seq: 0,
            captured_at: p.captured_at,
            received_at: msg.received_at,
            source,
            device: p.device,
            body: EventBody::Scan(p.scan),
        },
        Err(reason) => Event {
            seq: 0,
            captured_at: msg.received_at,
            received_at: msg.received_at,
            source,
            device: topic_device.unwrap_or(UNKNOWN_DEVICE).to_string(),
            body: EventBody::Quarantined(Quarantined {
                raw: msg.payload.to_vec(),
                reason,
            }),
        },
    }
}

/// The topic level after the first (`scanbridge/SC-01/scan` → `SC-01`), when present and non-empty.
pub fn device_from_topic(topic: &str) -> Option<&str> {
    topic
        .split('/')
        .nth(1)
        .filter(|d| !d.is_empty() && d.len() <= MAX_FIELD_CHARS)
}

struct Parsed {
    device: String,
    captured_at: UnixMicros,
    scan: Scan,
}

/// Decodes and validates the canonical JSON payload. `Err` carries the quarantine reason.
fn parse_scan(
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

    let code_raw = match obj.get("code") {
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(_) => return Err("field `code` must be a string".into()),
        None => return Err("payload has no `code` field".into()),
    };
    let device = match opt_str(obj, "device")? {
        Some(d) => d.to_string(),
        None => topic_device.unwrap_or(UNKNOWN_DEVICE).to_string(),
    };
    let station = stations.get(&device);

    let op = match opt_str(obj, "op")? {
        Some(s) => Some(Operation::parse(s).ok_or_else(|| {
            format!("field `op` is {s:?}; use one of receive, pick, pack, ship, count, move")
        })?),
        None => station.map(|s| s.op),
    };
    let location = match opt_str(obj, "location")? {
        Some(l) => Some(l.to_string()),
        None => station.and_then(|s| s.location.clone()),
    };
    let reference = opt_str(obj, "reference")?.map(str::to_string);
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

    let (aim, code) = split_aim_prefix(code_raw);
    let symbology = match opt_str(obj, "symbology")? {
        Some(s) => symbology_from_name(s),
        None => aim.map(symbology_from_aim).unwrap_or(Symbology::Unknown),
    };
    validate_code(code)?;
    let gs1 = parse_gs1(code, &symbology)?;

    Ok(Parsed {
        device,
        captured_at,
        scan: Scan {
            code: code.to_string(),
            symbology,
            gs1,
            op,
            qty,
            location,
            reference,
        },
    })
}

/// An optional string field: absent or null → None; non-string, control characters or too long → Err.
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

/// Splits a leading AIM symbology identifier (`]C1`, `]E0`, `]d2`, ...) off the code.
fn split_aim_prefix(code: &str) -> (Option<&str>, &str) {
    let b = code.as_bytes();
    if b.len() >= 3 && b[0] == b']' && b[1].is_ascii_alphabetic() && b[2].is_ascii_alphanumeric() {
        (Some(&code[..3]), &code[3..])
    } else {
        (None, code)
    }
}

/// Checks the barcode content itself.
pub fn validate_code(code: &str) -> Result<(), String> {
    if code.is_empty() {
        return Err("field `code` is empty".into());
    }
    if code.chars().count() > MAX_CODE_CHARS {
        return Err(format!("code is longer than {MAX_CODE_CHARS} characters"));
    }
    if code.chars().any(|c| c.is_control() && c != GS) {
        return Err("code contains control characters".into());
    }
    if is_gs1_numeric_length(code) && !gs1_check_digit_ok(code) {
        return Err(format!(
            "code {code} has a wrong GS1 check digit (expected {})",
            expected_check_digit(code)
                .map(|d| d.to_string())
                .unwrap_or_default()
        ));
    }
    Ok(())
}

fn is_gs1_numeric_length(code: &str) -> bool {
    matches!(code.len(), 8 | 12 | 13 | 14) && code.bytes().all(|b| b.is_ascii_digit())
}

/// The GS1 mod-10 check digit the last digit of `digits` should have.
pub fn expected_check_digit(digits: &str) -> Option<u8> {
    let b = digits.as_bytes();
    if b.len() < 2 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let body = &b[..b.len() - 1];
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| u32::from(d - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    Some(((10 - sum % 10) % 10) as u8)
}

/// Whether the last digit of an all-digit GS1 key (GTIN-8/12/13/14, SSCC) is its check digit.
pub fn gs1_check_digit_ok(digits: &str) -> bool {
    match (expected_check_digit(digits), digits.as_bytes().last()) {
        (Some(expected), Some(last)) => expected == last - b'0',
        _ => false,
    }
}

fn symbology_from_name(s: &str) -> Symbology {
    let n: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    match n.as_str() {
        "ean13" => Symbology::Ean13,
        "ean8" => Symbology::Ean8,
        "upca" => Symbology::UpcA,
        "upce" => Symbology::UpcE,
        "code128" => Symbology::Code128,
        "gs1128" | "ean128" => Symbology::Gs1_128,
        "code39" => Symbology::Code39,
        "itf" | "itf14" | "interleaved2of5" => Symbology::Itf,
        "datamatrix" => Symbology::DataMatrix,
        "gs1datamatrix" => Symbology::Gs1DataMatrix,
        "qr" | "qrcode" => Symbology::Qr,
        "gs1qr" | "gs1qrcode" => Symbology::Gs1Qr,
        _ if s.starts_with(']') => symbology_from_aim(s),
        _ => Symbology::Unknown,
    }
}

fn symbology_from_aim(aim: &str) -> Symbology {
    match aim {
        "]E0" => Symbology::Ean13,
        "]E4" => Symbology::Ean8,
        "]C0" => Symbology::Code128,
        "]C1" => Symbology::Gs1_128,
        "]A0" => Symbology::Code39,
        "]I0" | "]I1" => Symbology::Itf,
        "]d1" => Symbology::DataMatrix,
        "]d2" => Symbology::Gs1DataMatrix,
        "]Q1" => Symbology::Qr,
        "]Q3" => Symbology::Gs1Qr,
        other => Symbology::Aim(other.to_string()),
    }
}

/// Parses a GS1 element string (FNC1 = ASCII 0x1D between variable-length fields) for the GS1
/// symbologies. Unknown AIs end parsing (the code is still kept verbatim); a wrong check digit in
/// AI 00/01/02 is an error.
pub fn parse_gs1(code: &str, symbology: &Symbology) -> Result<Option<Gs1>, String> {
    if !matches!(
        symbology,
        Symbology::Gs1_128 | Symbology::Gs1DataMatrix | Symbology::Gs1Qr
    ) || !code.is_ascii()
    {
        return Ok(None);
    }
    let mut gs1 = Gs1::default();
    let mut rest = code.trim_start_matches(GS);
    while rest.len() >= 2 {
        let ai2 = &rest[..2];
        let (ai_len, fixed): (usize, Option<usize>) = match ai2 {
            "00" => (2, Some(18)),
            "01" | "02" => (2, Some(14)),
            "17" => (2, Some(6)),
            "10" | "21" | "30" | "37" => (2, None),
            "31" | "32" | "33" | "34" | "35" | "36" if rest.len() >= 4 => (4, Some(6)),
            _ => break,
        };
        let ai = &rest[..ai_len];
        let after = &rest[ai_len..];
        let (value, next) = match fixed {
            Some(n) if after.len() >= n => (&after[..n], after[n..].trim_start_matches(GS)),
            Some(_) => return Err(format!("GS1 AI ({ai}) is truncated")),
            None => match after.find(GS) {
                Some(i) => (&after[..i], &after[i + 1..]),
                None => (after, ""),
            },
        };
        match ai {
            "00" | "01" | "02" => {
                if !value.bytes().all(|b| b.is_ascii_digit()) || !gs1_check_digit_ok(value) {
                    return Err(format!("GS1 AI ({ai}) {value} has a wrong check digit"));
                }
                if ai == "00" {
                    gs1.sscc = Some(value.to_string());
                } else {
                    gs1.gtin = Some(value.to_string());
                }
            }
            "10" => gs1.lot = Some(value.to_string()),
            "17" => gs1.expiry = Some(value.to_string()),
            "21" => gs1.serial = Some(value.to_string()),
            "30" | "37" => gs1.qty = value.parse::<f64>().ok(),
            _ => {
                // 31nn..36nn: measure with n decimals in the 4th AI digit.
                let decimals = ai.as_bytes()[3].wrapping_sub(b'0');
                if let (Ok(v), true) = (value.parse::<u64>(), decimals <= 9) {
                    gs1.qty = Some(v as f64 / 10f64.powi(i32::from(decimals)));
                }
            }
        }
        rest = next;
    }
    Ok(Some(gs1))
}

/// RFC 3339 timestamp → microseconds since the epoch.
pub fn parse_rfc3339_micros(s: &str) -> Option<UnixMicros> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

#[cfg(test)]
mod tests;
