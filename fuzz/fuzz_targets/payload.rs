//! Fuzzes the MQTT payload normaliser in each payload format (canonical JSON, plain text, Kepware
//! tag JSON): the first input byte picks the format, the rest is the payload as a broker would
//! deliver it.
//!
//! Properties: never panics; never returns an empty list (bad input is quarantined, not dropped);
//! a quarantined event keeps the payload bytes exactly (Kepware: the whole payload, or the bytes of
//! the one value element it refused, as they appear in the payload); a scan's code is non-empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanbridge_agent::config::{PayloadFormat, Station, TagMapping};
use scanbridge_agent::normalise::{normalise_message, Decode, Incoming, Stations, Tags};
use scanbridge_protocol::{EventBody, Operation};

fuzz_target!(|data: &[u8]| {
    let [selector, payload @ ..] = data else {
        return;
    };
    let format = [
        PayloadFormat::Json,
        PayloadFormat::Text,
        PayloadFormat::Kepware,
    ][usize::from(selector % 3)];
    let stations = Stations::new(&[Station {
        device: "SC-01".into(),
        op: Operation::Count,
        location: Some("WH-STOCK-A01".into()),
    }]);
    let tags = Tags::new(&[TagMapping {
        id: "Channel1.Scale1.Weight".into(),
        tag: "scale1.weight".into(),
        unit: Some("kg".into()),
        device: None,
    }]);
    let msg = Incoming {
        broker: "site",
        topic: "scanbridge/SC-01/scan",
        payload,
        received_at: 1_700_000_000_000_000,
    };
    let events = normalise_message(
        &stations,
        &tags,
        Decode {
            format,
            device_level: 1,
        },
        msg,
    );
    assert!(!events.is_empty(), "a message vanished");
    for e in &events {
        match &e.body {
            EventBody::Quarantined(q) if format == PayloadFormat::Kepware => assert!(
                q.raw == payload || payload.windows(q.raw.len().max(1)).any(|w| w == q.raw),
                "quarantine lost bytes"
            ),
            EventBody::Quarantined(q) => assert_eq!(q.raw, payload, "quarantine lost bytes"),
            EventBody::Scan(s) => assert!(!s.code.is_empty()),
            EventBody::Reading(_) => {}
        }
    }
});
