//! Pure: one framed serial line → one canonical [`Event`] (seq 0; the store assigns it).
//!
//! A serial line is a plain barcode, so it goes through the normaliser's plain-text format
//! ([`crate::normalise::text`]): the AIM symbology identifier (`]C1`, `]E0`, `]d2`, `]Q3`, ...) is
//! split off with `scanbridge_barcode::aim::split` and sets the symbology, a GS1 element string is
//! parsed, check digits are verified, and the station configured for the port's device supplies
//! `op` and `location`. With `aim = false` the line is taken verbatim as the code (a Code 128
//! barcode may legitimately start with `]`): only the content checks apply.
//!
//! Quarantine records from the framer (overlong, not UTF-8, NUL, cut off) keep their raw bytes
//! and the framer's reason.

use scanbridge_protocol::{Event, EventBody, Scan, Source, Symbology, UnixMicros};

use super::framing::Frame;
use crate::normalise::{self, Stations};

/// What every event of one port carries.
#[derive(Debug, Clone)]
pub struct PortLabels {
    /// The `[[serial]] name` (the event's `Source::Serial { port }`).
    pub port: String,
    /// The scanner's device name (station lookup, `Event::device`).
    pub device: String,
    /// Whether lines carry an AIM symbology identifier.
    pub aim: bool,
}

/// The event for one frame. Never fails: anything unacceptable is quarantined with its bytes.
pub fn event_for(
    labels: &PortLabels,
    stations: &Stations,
    frame: Frame,
    received_at: UnixMicros,
) -> Event {
    let source = Source::Serial {
        port: labels.port.clone(),
    };
    match frame {
        Frame::Quarantine { raw, reason } => normalise::quarantined(
            source,
            &labels.device,
            received_at,
            &raw,
            reason.to_string(),
        ),
        Frame::Line(line) if labels.aim => normalise::text::normalise(
            stations,
            line.as_bytes(),
            &labels.device,
            source,
            received_at,
        ),
        Frame::Line(line) => verbatim(labels, stations, source, line, received_at),
    }
}

/// `aim = false`: the whole line is the code.
fn verbatim(
    labels: &PortLabels,
    stations: &Stations,
    source: Source,
    line: String,
    received_at: UnixMicros,
) -> Event {
    if let Err(reason) = normalise::validate_code(&line) {
        return normalise::quarantined(
            source,
            &labels.device,
            received_at,
            line.as_bytes(),
            reason,
        );
    }
    let station = stations.get(&labels.device);
    Event {
        seq: 0,
        captured_at: received_at,
        received_at,
        source,
        device: labels.device.clone(),
        body: EventBody::Scan(Scan {
            code: line,
            symbology: Symbology::Unknown,
            gs1: None,
            op: station.map(|s| s.op),
            qty: None,
            location: station.and_then(|s| s.location.clone()),
            reference: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Station;
    use crate::sources::serial::framing::FrameError;
    use scanbridge_protocol::Operation;

    fn labels(aim: bool) -> PortLabels {
        PortLabels {
            port: "dock".into(),
            device: "SC-07".into(),
            aim,
        }
    }

    fn stations() -> Stations {
        Stations::new(&[Station {
            device: "SC-07".into(),
            op: Operation::Receive,
            location: Some("WH-IN-01".into()),
        }])
    }

    fn ev(aim: bool, line: &str) -> Event {
        event_for(&labels(aim), &stations(), Frame::Line(line.into()), 1_000)
    }

    fn scan(e: &Event) -> &Scan {
        match &e.body {
            EventBody::Scan(s) => s,
            other => panic!("expected a scan, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_line_becomes_a_scan_of_the_ports_device_with_its_station_defaults() {
        let e = ev(true, "4006381333931");
        let s = scan(&e);
        assert_eq!(s.code, "4006381333931");
        assert_eq!(s.op, Some(Operation::Receive));
        assert_eq!(s.location.as_deref(), Some("WH-IN-01"));
        assert_eq!(e.device, "SC-07");
        assert_eq!(
            e.source,
            Source::Serial {
                port: "dock".into()
            }
        );
        assert_eq!((e.received_at, e.captured_at, e.seq), (1_000, 1_000, 0));
    }

    #[test]
    fn an_aim_prefix_sets_the_symbology_and_is_split_off() {
        let e = ev(true, "]E04006381333931");
        assert_eq!(scan(&e).code, "4006381333931");
        assert_eq!(scan(&e).symbology, Symbology::Ean13);
    }

    #[test]
    fn a_gs1_128_line_is_parsed_into_its_element_strings() {
        let e = ev(true, "]C10109501101530003\u{1d}10LOT42");
        let s = scan(&e);
        assert_eq!(s.symbology, Symbology::Gs1_128);
        let gs1 = s.gs1.as_ref().expect("gs1 parsed");
        assert_eq!(gs1.gtin.as_deref(), Some("09501101530003"));
        assert_eq!(gs1.lot.as_deref(), Some("LOT42"));
    }

    #[test]
    fn with_aim_off_the_whole_line_is_the_code() {
        let e = ev(false, "]C1ABC");
        assert_eq!(scan(&e).code, "]C1ABC");
        assert_eq!(scan(&e).symbology, Symbology::Unknown);
    }

    #[test]
    fn a_wrong_check_digit_is_quarantined_with_the_line_as_raw_bytes() {
        for aim in [true, false] {
            let e = ev(aim, "4006381333932");
            match &e.body {
                EventBody::Quarantined(q) => {
                    assert_eq!(q.raw, b"4006381333932");
                    assert!(q.reason.contains("check digit"), "{}", q.reason);
                }
                other => panic!("aim={aim}: expected quarantine, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_line_with_control_characters_is_quarantined() {
        for aim in [true, false] {
            assert!(
                matches!(ev(aim, "\x1b[A").body, EventBody::Quarantined(_)),
                "aim={aim}"
            );
        }
    }

    #[test]
    fn a_framer_quarantine_keeps_its_bytes_and_reason() {
        let e = event_for(
            &labels(true),
            &stations(),
            Frame::Quarantine {
                raw: vec![0xff, b'A'],
                reason: FrameError::NotUtf8 {
                    offset: 0,
                    byte: 0xff,
                },
            },
            5,
        );
        match e.body {
            EventBody::Quarantined(q) => {
                assert_eq!(q.raw, vec![0xff, b'A']);
                assert!(q.reason.contains("not UTF-8"), "{}", q.reason);
            }
            other => panic!("expected quarantine, got {other:?}"),
        }
        assert_eq!(e.device, "SC-07");
    }
}
