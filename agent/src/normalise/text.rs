//! The plain-text payload format: the whole payload is one barcode, trimmed of CR/LF, with an
//! optional AIM symbology prefix. The device comes from the caller (a topic level for MQTT);
//! `op` and `location` from the device's station. Also usable for any line-oriented source.

use scanbridge_protocol::{Event, EventBody, Source, UnixMicros};

use super::scan::{build_scan, ScanFields};
use super::{quarantined, Stations, MAX_PAYLOAD_BYTES};

/// Normalises one plain-text barcode into an event (seq 0). Never fails: bad input is quarantined.
pub fn normalise(
    stations: &Stations,
    payload: &[u8],
    device: &str,
    source: Source,
    received_at: UnixMicros,
) -> Event {
    match parse(stations, payload, device) {
        Ok(scan) => Event {
            seq: 0,
            captured_at: received_at,
            received_at,
            source,
            device: device.to_string(),
            body: EventBody::Scan(scan),
        },
        Err(reason) => quarantined(source, device, received_at, payload, reason),
    }
}

fn parse(
    stations: &Stations,
    payload: &[u8],
    device: &str,
) -> Result<scanbridge_protocol::Scan, String> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(format!(
            "text payload of {} bytes is larger than the {MAX_PAYLOAD_BYTES}-byte limit for a scan",
            payload.len()
        ));
    }
    let text = std::str::from_utf8(payload)
        .map_err(|e| format!("text payload is not UTF-8 ({e}); check the scanner's code page"))?;
    let code = text.trim_matches(|c| c == '\r' || c == '\n');
    if code.is_empty() {
        return Err("text payload is empty: no barcode in it".into());
    }
    build_scan(
        stations.get(device),
        ScanFields {
            code,
            ..ScanFields::default()
        },
    )
    .map_err(|e| format!("text payload: {e}"))
}
