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

// ---- formats, stations, GS1 glue ------------------------------------------------------------

use crate::config::{FormatRule, PayloadFormat, TagMapping};
use scanbridge_protocol::Reading;

fn tags() -> Tags {
    Tags::new(&[
        TagMapping {
            id: "Channel1.Scale1.Weight".into(),
            tag: "scale1.weight".into(),
            unit: Some("kg".into()),
            device: Some("SCALE-1".into()),
        },
        TagMapping {
            id: "Channel1.Dock.Door1".into(),
            tag: "dock.door1".into(),
            unit: None,
            device: None,
        },
    ])
}

fn decode(format: PayloadFormat, device_level: usize) -> Decode {
    Decode {
        format,
        device_level,
    }
}

fn run_as(format: PayloadFormat, level: usize, topic: &str, payload: &[u8]) -> Vec<Event> {
    normalise_message(
        &stations(),
        &tags(),
        decode(format, level),
        Incoming {
            broker: "site",
            topic,
            payload,
            received_at: 1_000_000,
        },
    )
}

fn reading(ev: &Event) -> &Reading {
    match &ev.body {
        EventBody::Reading(r) => r,
        other => panic!("expected a reading, got {other:?}"),
    }
}

fn raw(ev: &Event) -> &[u8] {
    match &ev.body {
        EventBody::Quarantined(q) => &q.raw,
        other => panic!("expected quarantine, got {other:?}"),
    }
}

#[test]
fn the_first_matching_format_rule_decides_and_json_is_the_default() {
    let rules = vec![
        FormatRule {
            filter: "plc/+/tags".into(),
            format: PayloadFormat::Kepware,
            device_level: 1,
        },
        FormatRule {
            filter: "scanners/#".into(),
            format: PayloadFormat::Text,
            device_level: 2,
        },
        FormatRule {
            filter: "scanners/raw/+".into(),
            format: PayloadFormat::Json,
            device_level: 1,
        },
    ];
    assert_eq!(
        decode_for(&rules, "plc/line1/tags"),
        decode(PayloadFormat::Kepware, 1)
    );
    assert_eq!(
        decode_for(&rules, "scanners/raw/SC-07"),
        decode(PayloadFormat::Text, 2)
    );
    assert_eq!(
        decode_for(&rules, "scanbridge/SC-01/scan"),
        Decode::default()
    );
    assert_eq!(decode_for(&rules, "plc/line1/tags/x"), Decode::default());
    assert_eq!(Decode::default(), decode(PayloadFormat::Json, 1));
}

#[test]
fn a_text_payload_is_one_barcode_trimmed_of_cr_lf_with_the_device_from_the_topic() {
    let evs = run_as(
        PayloadFormat::Text,
        2,
        "scanners/raw/SC-01",
        b"4006381333931\r\n",
    );
    assert_eq!(evs.len(), 1);
    let s = scan(&evs[0]);
    assert_eq!(s.code, "4006381333931");
    assert_eq!(s.symbology, Symbology::Unknown);
    assert_eq!(evs[0].device, "SC-01");
    assert_eq!(s.op, Some(Operation::Count), "the station of SC-01");
    assert_eq!(s.location.as_deref(), Some("WH-STOCK-A01"));
    assert_eq!(evs[0].captured_at, 1_000_000);
}

#[test]
fn a_text_payload_keeps_inner_spaces_and_an_aim_prefix_sets_the_symbology() {
    let evs = run_as(PayloadFormat::Text, 1, "s/SC-02", b"]E04006381333931\n");
    let s = scan(&evs[0]);
    assert_eq!(
        (s.code.as_str(), &s.symbology),
        ("4006381333931", &Symbology::Ean13)
    );
    let evs = run_as(PayloadFormat::Text, 1, "s/SC-02", b"]A0PART 42");
    let s = scan(&evs[0]);
    assert_eq!(
        (s.code.as_str(), &s.symbology),
        ("PART 42", &Symbology::Code39)
    );
    assert_eq!(s.op, None, "SC-02 has no station");
}

#[test]
fn a_text_gs1_datamatrix_is_parsed_into_gs1() {
    let evs = run_as(
        PayloadFormat::Text,
        1,
        "s/SC-01",
        b"]d201095011015300031714070410AB-123\r",
    );
    let s = scan(&evs[0]);
    assert_eq!(s.symbology, Symbology::Gs1DataMatrix);
    assert_eq!(s.code, "01095011015300031714070410AB-123");
    let g = s.gs1.as_ref().expect("parsed");
    assert_eq!(g.gtin.as_deref(), Some("09501101530003"));
    assert_eq!(g.expiry.as_deref(), Some("140704"));
    assert_eq!(g.lot.as_deref(), Some("AB-123"));
}

#[test]
fn a_leading_gs_marks_a_gs1_code_without_an_aim_identifier() {
    let evs = run_as(
        PayloadFormat::Text,
        1,
        "s/SC-01",
        b"\x1d0109501101530003\x1d3103000500",
    );
    let s = scan(&evs[0]);
    assert_eq!(s.code, "0109501101530003\u{1d}3103000500");
    assert_eq!(s.gs1.as_ref().and_then(|g| g.qty), Some(0.5));
}

#[test]
fn an_invalid_gs1_code_is_quarantined_with_the_parsers_message() {
    let evs = run_as(
        PayloadFormat::Text,
        1,
        "s/SC-01",
        b"]C10109501101530003171307",
    );
    let reason = quarantine_reason(&evs[0]);
    assert!(
        reason.contains("AI (17) expiry date expects 6 digits YYMMDD, got \"1307\""),
        "{reason}"
    );
    assert_eq!(raw(&evs[0]), b"]C10109501101530003171307");
    let evs = run_as(PayloadFormat::Text, 1, "s/SC-01", b"]C10109501101530004");
    assert!(quarantine_reason(&evs[0]).contains("wrong check digit"));
}

#[test]
fn empty_non_utf8_and_control_character_text_payloads_are_quarantined() {
    for (payload, needle) in [
        (&b"\r\n"[..], "empty"),
        (&b""[..], "empty"),
        (&[0xff, 0x41][..], "not UTF-8"),
        (&b"AB\x07C"[..], "control characters"),
        (&b"4006381333932"[..], "check digit"),
    ] {
        let evs = run_as(PayloadFormat::Text, 1, "s/SC-01", payload);
        assert_eq!(evs.len(), 1);
        assert!(quarantine_reason(&evs[0]).contains(needle), "{payload:?}");
        assert_eq!(raw(&evs[0]), payload);
        assert_eq!(evs[0].device, "SC-01");
    }
}

#[test]
fn a_text_topic_without_the_device_level_gives_the_unknown_device() {
    let evs = run_as(PayloadFormat::Text, 3, "s/SC-01", b"ABC");
    assert_eq!(evs[0].device, UNKNOWN_DEVICE);
}

#[test]
fn a_json_device_level_other_than_one_is_honoured() {
    let evs = run_as(
        PayloadFormat::Json,
        2,
        "site/raw/SC-01",
        br#"{"code":"ABC"}"#,
    );
    assert_eq!(evs[0].device, "SC-01");
    assert_eq!(scan(&evs[0]).op, Some(Operation::Count));
}

#[test]
fn the_station_supplies_op_and_location_when_the_payload_has_none() {
    let evs = run_as(PayloadFormat::Json, 1, "t/SC-01", br#"{"code":"ABC"}"#);
    let s = scan(&evs[0]);
    assert_eq!(
        (s.op, s.location.as_deref()),
        (Some(Operation::Count), Some("WH-STOCK-A01"))
    );
}

#[test]
fn the_payload_overrides_the_stations_op_and_location() {
    let evs = run_as(
        PayloadFormat::Json,
        1,
        "t/SC-01",
        br#"{"code":"ABC","op":"pick","location":"WH-PICK-07"}"#,
    );
    let s = scan(&evs[0]);
    assert_eq!(
        (s.op, s.location.as_deref()),
        (Some(Operation::Pick), Some("WH-PICK-07"))
    );
    // Overriding one keeps the station's other default.
    let evs = run_as(
        PayloadFormat::Json,
        1,
        "t/SC-01",
        br#"{"code":"ABC","op":"move"}"#,
    );
    let s = scan(&evs[0]);
    assert_eq!(
        (s.op, s.location.as_deref()),
        (Some(Operation::Move), Some("WH-STOCK-A01"))
    );
}

#[test]
fn the_payloads_device_selects_its_station_over_the_topics() {
    let evs = run_as(
        PayloadFormat::Json,
        1,
        "t/OTHER",
        br#"{"code":"ABC","device":"SC-01"}"#,
    );
    assert_eq!(evs[0].device, "SC-01");
    assert_eq!(scan(&evs[0]).op, Some(Operation::Count));
}

#[test]
fn a_json_symbology_name_wins_over_the_aim_prefix_but_gs1_is_still_parsed() {
    let evs = run_as(
        PayloadFormat::Json,
        1,
        "t/SC-01",
        br#"{"code":"]C10109501101530003","symbology":"code128"}"#,
    );
    let s = scan(&evs[0]);
    assert_eq!(s.symbology, Symbology::Code128);
    assert_eq!(
        s.gs1.as_ref().and_then(|g| g.gtin.as_deref()),
        Some("09501101530003")
    );
}

#[test]
fn a_kepware_message_becomes_one_reading_per_value_in_order() {
    let payload = br#"{"timestamp":1700000000000,"values":[
        {"id":"Channel1.Scale1.Weight","v":42.5,"q":true,"t":1700000000123},
        {"id":"Channel1.Dock.Door1","v":true,"q":true,"t":1700000000456},
        {"id":"Channel1.Scale1.Weight","v":"43.0","q":true}]}"#;
    let evs = run_as(PayloadFormat::Kepware, 1, "plc/line1/tags", payload);
    assert_eq!(evs.len(), 3);
    let r = reading(&evs[0]);
    assert_eq!(
        (r.tag.as_str(), r.value, r.unit.as_deref()),
        ("scale1.weight", 42.5, Some("kg"))
    );
    assert_eq!(evs[0].device, "SCALE-1", "the tag's device");
    assert_eq!(evs[0].captured_at, 1_700_000_000_123_000);
    assert_eq!(evs[0].received_at, 1_000_000);
    let r = reading(&evs[1]);
    assert_eq!(
        (r.tag.as_str(), r.value, r.unit.as_deref()),
        ("dock.door1", 1.0, None)
    );
    assert_eq!(
        evs[1].device, "line1",
        "no device on the tag: the topic's device level"
    );
    assert_eq!(
        evs[2].captured_at, 1_700_000_000_000_000,
        "the message timestamp"
    );
    assert_eq!(reading(&evs[2]).value, 43.0);
    assert!(evs.iter().all(|e| e.source
        == Source::Mqtt {
            broker: "site".into(),
            topic: "plc/line1/tags".into()
        }));
}

#[test]
fn bad_kepware_values_are_quarantined_in_place_with_their_own_json() {
    let payload = br#"{"timestamp":1700000000000,"values":[
        {"id":"Channel1.Unknown","v":1,"q":true,"t":1700000000000},
        {"id":"Channel1.Scale1.Weight","v":42.5,"q":false,"t":1700000000000},
        {"id":"Channel1.Scale1.Weight","v":"heavy","q":true,"t":1700000000000},
        {"id":"Channel1.Scale1.Weight","v":[1,2],"q":true},
        {"id":"Channel1.Scale1.Weight","v":41.0,"q":true,"t":"noon"},
        {"v":1},
        {"id":"Channel1.Scale1.Weight","v":40.0,"q":true}]}"#;
    let evs = run_as(PayloadFormat::Kepware, 1, "plc/line1/tags", payload);
    assert_eq!(evs.len(), 7);
    let reasons: Vec<&str> = evs[..6].iter().map(quarantine_reason).collect();
    assert!(
        reasons[0].contains("\"Channel1.Unknown\" is not in the agent's [[tags]] table"),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[1].contains("bad quality (q = false)"),
        "{}",
        reasons[1]
    );
    assert!(
        reasons[2].contains("not numeric (got \"heavy\")"),
        "{}",
        reasons[2]
    );
    assert!(reasons[3].contains("not numeric"), "{}", reasons[3]);
    assert!(
        reasons[4].contains("`t` is not a time in milliseconds"),
        "{}",
        reasons[4]
    );
    assert!(reasons[5].contains("no `id`"), "{}", reasons[5]);
    assert!(reasons[0].starts_with("PLC tag value 0: "));
    assert_eq!(
        raw(&evs[0]),
        br#"{"id":"Channel1.Unknown","v":1,"q":true,"t":1700000000000}"#,
        "the value's JSON exactly as received"
    );
    assert_eq!(evs[0].device, "line1");
    assert_eq!(
        evs[1].device, "SCALE-1",
        "a known tag keeps its device when quarantined"
    );
    assert_eq!(
        reading(&evs[6]).value,
        40.0,
        "good values after bad ones are kept"
    );
}

#[test]
fn an_unreadable_kepware_message_is_quarantined_whole() {
    for (payload, needle) in [
        (&b"not json"[..], "not the Kepware IoT Gateway shape"),
        (&br#"{"timestamp":1}"#[..], "missing field `values`"),
        (&br#"{"values":[]}"#[..], "empty"),
        (
            &br#"{"timestamp":"x","values":[{"id":"a","v":1}]}"#[..],
            "`timestamp` is not a time",
        ),
        (&[0xc3, 0x28][..], "not UTF-8"),
    ] {
        let evs = run_as(PayloadFormat::Kepware, 1, "plc/line1/tags", payload);
        assert_eq!(evs.len(), 1, "{payload:?}");
        assert!(
            quarantine_reason(&evs[0]).contains(needle),
            "{:?}",
            quarantine_reason(&evs[0])
        );
        assert_eq!(raw(&evs[0]), payload);
    }
    let many = format!(
        r#"{{"values":[{}]}}"#,
        vec![r#"{"id":"Channel1.Dock.Door1","v":1}"#; kepware::MAX_VALUES + 1].join(",")
    );
    let evs = run_as(PayloadFormat::Kepware, 1, "plc/l/tags", many.as_bytes());
    assert_eq!(evs.len(), 1);
    assert!(quarantine_reason(&evs[0]).contains("publish fewer values"));
}

proptest! {
    #[test]
    fn arbitrary_bytes_in_any_format_never_panic_and_always_yield_events(
        payload in proptest::collection::vec(any::<u8>(), 0..1024),
        topic in ".{0,40}",
        format in prop_oneof![Just(PayloadFormat::Json), Just(PayloadFormat::Text), Just(PayloadFormat::Kepware)],
        level in 0usize..4,
    ) {
        let evs = run_as(format, level, &topic, &payload);
        prop_assert!(!evs.is_empty());
        for ev in &evs {
            prop_assert_eq!(ev.seq, 0);
        }
        if evs.len() == 1 {
            if let EventBody::Quarantined(q) = &evs[0].body {
                if format != PayloadFormat::Kepware || !q.reason.starts_with("PLC tag value") {
                    prop_assert_eq!(&q.raw, &payload);
                }
            }
        }
    }

    #[test]
    fn arbitrary_kepware_values_never_panic_and_give_one_event_each(
        items in proptest::collection::vec(
            (prop_oneof![Just("Channel1.Scale1.Weight".to_string()), ".{0,12}"],
             prop_oneof![any::<f64>().prop_map(serde_json::Value::from), ".{0,6}".prop_map(serde_json::Value::from), any::<bool>().prop_map(serde_json::Value::from)],
             proptest::option::of(any::<bool>()),
             proptest::option::of(any::<i64>())),
            1..20),
    ) {
        let values: Vec<serde_json::Value> = items.iter().map(|(id, v, q, t)| {
            serde_json::json!({"id": id, "v": v, "q": q, "t": t})
        }).collect();
        let payload = serde_json::json!({"timestamp": 1_700_000_000_000_i64, "values": values}).to_string();
        let evs = run_as(PayloadFormat::Kepware, 1, "plc/l/tags", payload.as_bytes());
        prop_assert_eq!(evs.len(), items.len());
    }

    #[test]
    fn arbitrary_text_with_aim_prefixes_never_panics(
        prefix in prop_oneof![Just(""), Just("]C1"), Just("]d2"), Just("]Q3"), Just("]E0"), Just("\u{1d}")],
        body in "[0-9A-Z\u{1d}\\-]{0,60}",
    ) {
        let payload = format!("{prefix}{body}");
        let evs = run_as(PayloadFormat::Text, 1, "s/SC-01", payload.as_bytes());
        prop_assert_eq!(evs.len(), 1);
    }
}

fn with_id(format: PayloadFormat, topic: &str, payload: &[u8]) -> (Vec<Event>, Option<String>) {
    normalise_message_with_id(
        &stations(),
        &tags(),
        decode(format, 1),
        Incoming {
            broker: "site",
            topic,
            payload,
            received_at: 1_000_000,
        },
    )
}

#[test]
fn a_scan_id_is_returned_beside_the_scan_and_not_in_it() {
    let (events, id) = with_id(
        PayloadFormat::Json,
        "scanbridge/SC-01/scan",
        br#"{"code":"4006381333931","id":"3f2b8c1e-0d4a-4c1b-9a51-7d2f0e6c9b10"}"#,
    );
    assert_eq!(id.as_deref(), Some("3f2b8c1e-0d4a-4c1b-9a51-7d2f0e6c9b10"));
    assert_eq!(events.len(), 1);
    assert_eq!(scan(&events[0]).code, "4006381333931");
    // The same payload without the id is the same event: the id stays agent-side.
    let (plain, none) = with_id(
        PayloadFormat::Json,
        "scanbridge/SC-01/scan",
        br#"{"code":"4006381333931"}"#,
    );
    assert_eq!(none, None);
    assert_eq!(plain, events);
}

#[test]
fn an_absent_null_or_empty_id_is_no_id() {
    for payload in [
        &br#"{"code":"4006381333931"}"#[..],
        br#"{"code":"4006381333931","id":null}"#,
        br#"{"code":"4006381333931","id":""}"#,
    ] {
        let (events, id) = with_id(PayloadFormat::Json, "scanbridge/SC-01/scan", payload);
        assert_eq!(id, None);
        scan(&events[0]);
    }
}

#[test]
fn an_id_of_128_characters_is_accepted_and_one_of_129_is_quarantined() {
    let ok = format!(r#"{{"code":"4006381333931","id":"{}"}}"#, "é".repeat(128));
    let (_, id) = with_id(PayloadFormat::Json, "scanbridge/SC-01/scan", ok.as_bytes());
    assert_eq!(id.map(|s| s.chars().count()), Some(128));
    let long = format!(r#"{{"code":"4006381333931","id":"{}"}}"#, "x".repeat(129));
    let (events, id) = with_id(
        PayloadFormat::Json,
        "scanbridge/SC-01/scan",
        long.as_bytes(),
    );
    assert_eq!(id, None);
    assert!(quarantine_reason(&events[0]).contains("field `id` is longer than 128 characters"));
}

#[test]
fn a_bad_id_quarantines_the_scan_with_a_reason_that_says_what_to_send() {
    let cases: [(&[u8], &str); 4] = [
        (
            br#"{"code":"4006381333931","id":"a\tb"}"#,
            "field `id` contains control characters",
        ),
        (
            br#"{"code":"4006381333931","id":42}"#,
            r#"field `id` must be a string; send the number as text, "id":"42""#,
        ),
        (
            br#"{"code":"4006381333931","id":["a"]}"#,
            "field `id` must be a string",
        ),
        (
            br#"{"code":"4006381333931","id":true}"#,
            "field `id` must be a string",
        ),
    ];
    for (payload, reason) in cases {
        let (events, id) = with_id(PayloadFormat::Json, "scanbridge/SC-01/scan", payload);
        assert_eq!(id, None);
        assert!(
            quarantine_reason(&events[0]).contains(reason),
            "{:?}",
            events[0]
        );
        assert_eq!(raw(&events[0]), payload);
    }
}

#[test]
fn text_and_kepware_messages_carry_no_scan_id() {
    let (_, id) = with_id(PayloadFormat::Text, "scanners/SC-07/raw", br#"{"id":"x"}"#);
    assert_eq!(id, None);
    let (_, id) = with_id(
        PayloadFormat::Kepware,
        "plc/line1/tags",
        br#"{"values":[{"id":"Channel1.Scale1.Weight","v":1}]}"#,
    );
    assert_eq!(id, None);
}

proptest! {
    #[test]
    fn any_id_value_never_panics_and_a_valid_one_comes_back_unchanged(id in "\\PC{0,140}") {
        let payload = serde_json::json!({"code": "4006381333931", "id": id}).to_string();
        let (events, got) = with_id(PayloadFormat::Json, "scanbridge/SC-01/scan", payload.as_bytes());
        let n = id.chars().count();
        if (1..=128).contains(&n) {
            prop_assert_eq!(got.as_deref(), Some(id.as_str()));
            prop_assert!(matches!(events[0].body, EventBody::Scan(_)));
        } else {
            prop_assert_eq!(got, None);
        }
    }
}
