//! Unit and property tests of payload normalisation: defaults, GS1 checks, quarantine reasons,
//! and "never panics on any bytes".

use proptest::prelude::*;
use scanbridge_protocol::{EventBody, Operation, Source, Symbology};

use super::*;
use crate::config::Station;

fn stations() -> Stations {
    Stations::new(&[Station {
        device: "SC-01".into(),
        op: Operation::Count,
        location: Some("WH-STOCK-A01".into()),
    }])
}

fn run(topic: &str, payload: &[u8]) -> scanbridge_protocol::Event {
    normalise_mqtt(
        &stations(),
        Incoming {
            broker: "site",
            topic,
            payload,
            received_at: 1_000_000,
        },
    )
}

fn scan(ev: &scanbridge_protocol::Event) -> &scanbridge_protocol::Scan {
    match &ev.body {
        EventBody::Scan(s) => s,
        other => panic!("expected a scan, got {other:?}"),
    }
}

fn quarantine_reason(ev: &scanbridge_protocol::Event) -> &str {
    match &ev.body {
        EventBody::Quarantined(q) => &q.reason,
        other => panic!("expected quarantine, got {other:?}"),
    }
}

#[test]
fn a_full_canonical_payload_becomes_a_scan_with_every_field() {
    let ev = run(
        "scanbridge/SC-09/scan",
        br#"{"code":"4006381333931","device":"SC-01","op":"receive","qty":12,
            "location":"WH-STOCK-B02","symbology":"ean13","captured_at":"2026-11-23T09:00:00.123Z",
            "reference":"WH/IN/00012"}"#,
    );
    let s = scan(&ev);
    assert_eq!(s.code, "4006381333931");
    assert_eq!(s.op, Some(Operation::Receive));
    assert_eq!(s.qty, Some(12.0));
    assert_eq!(s.location.as_deref(), Some("WH-STOCK-B02"));
    assert_eq!(s.symbology, Symbology::Ean13);
    assert_eq!(s.reference.as_deref(), Some("WH/IN/00012"));
    assert_eq!(ev.device, "SC-01");
    assert_eq!(ev.captured_at, 1_795_424_400_123_000);
    assert_eq!(ev.received_at, 1_000_000);
    assert_eq!(
        ev.source,
        Source::Mqtt {
            broker: "site".into(),
            topic: "scanbridge/SC-09/scan".into()
        }
    );
}

#[test]
fn op_and_location_default_to_the_devices_station() {
    let ev = run("scanbridge/SC-01/scan", br#"{"code":"4006381333931"}"#);
    let s = scan(&ev);
    assert_eq!(s.op, Some(Operation::Count));
    assert_eq!(s.location.as_deref(), Some("WH-STOCK-A01"));
}

#[test]
fn device_comes_from_the_second_topic_level_when_the_payload_has_none() {
    let ev = run("scanbridge/SC-01/scan", br#"{"code":"ABC"}"#);
    assert_eq!(ev.device, "SC-01");
    let other = run("scanbridge/DOCK-7/scan", br#"{"code":"ABC"}"#);
    assert_eq!(other.device, "DOCK-7");
    assert_eq!(
        scan(&other).op,
        None,
        "no station for DOCK-7, no default op"
    );
}

#[test]
fn captured_at_defaults_to_the_receive_time() {
    let ev = run("scanbridge/SC-01/scan", br#"{"code":"ABC"}"#);
    assert_eq!(ev.captured_at, 1_000_000);
}

#[test]
fn payload_that_is_not_json_is_quarantined_with_its_raw_bytes() {
    let ev = run("scanbridge/SC-01/scan", b"4006381333931");
    // A bare number is JSON but not an object.
    assert!(quarantine_reason(&ev).contains("not an object"));
    let ev = run("scanbridge/SC-01/scan", b"{code: 12");
    assert!(quarantine_reason(&ev).contains("not JSON"));
    match &ev.body {
        EventBody::Quarantined(q) => assert_eq!(q.raw, b"{code: 12"),
        _ => unreachable!(),
    }
    assert_eq!(ev.device, "SC-01");
}

#[test]
fn payload_that_is_not_utf8_is_quarantined() {
    let ev = run("scanbridge/SC-01/scan", &[0xff, 0xfe, b'{']);
    assert!(quarantine_reason(&ev).contains("not UTF-8"));
}

#[test]
fn payload_without_code_is_quarantined() {
    let ev = run("scanbridge/SC-01/scan", br#"{"qty":1}"#);
    assert!(quarantine_reason(&ev).contains("no `code`"));
}

#[test]
fn code_with_control_characters_is_quarantined() {
    let ev = run("scanbridge/SC-01/scan", br#"{"code":"AB\u0007C"}"#);
    assert!(quarantine_reason(&ev).contains("control characters"));
}

#[test]
fn numeric_codes_with_a_wrong_gs1_check_digit_are_quarantined() {
    for bad in [
        "4006381333932",
        "96385075",
        "036000291453",
        "10614141000414",
    ] {
        let payload = format!(r#"{{"code":"{bad}"}}"#);
        let ev = run("scanbridge/SC-01/scan", payload.as_bytes());
        assert!(
            quarantine_reason(&ev).contains("check digit"),
            "{bad} should be refused"
        );
    }
}

#[test]
fn numeric_codes_with_a_correct_gs1_check_digit_are_accepted() {
    for good in [
        "4006381333931",
        "96385074",
        "036000291452",
        "10614141000415",
    ] {
        let payload = format!(r#"{{"code":"{good}"}}"#);
        assert_eq!(scan(&run("t/SC-01", payload.as_bytes())).code, good);
    }
}

#[test]
fn numeric_codes_of_other_lengths_are_not_check_digit_validated() {
    let ev = run("scanbridge/SC-01/scan", br#"{"code":"12345"}"#);
    assert_eq!(scan(&ev).code, "12345");
}

#[test]
fn unknown_op_and_bad_timestamp_and_wrong_types_are_quarantined() {
    for (payload, needle) in [
        (r#"{"code":"A","op":"steal"}"#, "`op`"),
        (r#"{"code":"A","captured_at":"yesterday"}"#, "captured_at"),
        (r#"{"code":"A","qty":"12"}"#, "`qty`"),
        (r#"{"code":12}"#, "`code` must be a string"),
    ] {
        let ev = run("scanbridge/SC-01/scan", payload.as_bytes());
        assert!(quarantine_reason(&ev).contains(needle), "{payload}");
    }
}

#[test]
fn oversized_payloads_and_codes_are_quarantined() {
    let long = format!(r#"{{"code":"{}"}}"#, "A".repeat(MAX_CODE_CHARS + 1));
    assert!(quarantine_reason(&run("t/d", long.as_bytes())).contains("longer"));
    let huge = vec![b' '; MAX_PAYLOAD_BYTES + 1];
    assert!(quarantine_reason(&run("t/d", &huge)).contains("larger"));
}

#[test]
fn aim_prefix_is_stripped_and_gs1_element_strings_are_parsed() {
    let ev = run(
        "scanbridge/SC-01/scan",
        br#"{"code":"]C10104006381333931\u001d10LOT42\u001d17261231"}"#,
    );
    let s = scan(&ev);
    assert_eq!(s.symbology, Symbology::Gs1_128);
    assert!(s.code.starts_with("0104006381333931"));
    let gs1 = s.gs1.as_ref().expect("GS1 parsed");
    assert_eq!(gs1.gtin.as_deref(), Some("04006381333931"));
    assert_eq!(gs1.lot.as_deref(), Some("LOT42"));
    // 17 is fixed-length, so parsing continues without a separator.
    assert_eq!(gs1.expiry.as_deref(), Some("261231"));
}

#[test]
fn gs1_element_string_with_a_bad_gtin_check_digit_is_quarantined() {
    let ev = run(
        "scanbridge/SC-01/scan",
        br#"{"code":"0104006381333932","symbology":"gs1-128"}"#,
    );
    assert!(quarantine_reason(&ev).contains("check digit"));
}

#[test]
fn topic_without_a_device_level_gives_the_unknown_device() {
    let ev = run("scans", br#"{"code":"A"}"#);
    assert_eq!(ev.device, UNKNOWN_DEVICE);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_always_yield_an_event(
        payload in proptest::collection::vec(any::<u8>(), 0..2048),
        topic in ".{0,40}",
    ) {
        let ev = run(&topic, &payload);
        prop_assert_eq!(ev.seq, 0);
        if let EventBody::Quarantined(q) = &ev.body {
            prop_assert_eq!(&q.raw, &payload);
        }
    }

    #[test]
    fn arbitrary_json_objects_with_a_string_code_never_panic(
        code in "\\PC{0,40}",
        sym in prop_oneof![Just("gs1-128"), Just("ean13"), Just("]d2"), Just("qr")],
        qty in proptest::option::of(any::<f64>().prop_filter("finite", |f| f.is_finite())),
    ) {
        let payload = serde_json::json!({"code": code, "symbology": sym, "qty": qty}).to_string();
        let _ = run("scanbridge/SC-01/scan", payload.as_bytes());
    }
}
