//! Wire-format tests: golden bytes, round trips of arbitrary values, and hostile input.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use proptest::prelude::*;
use scanbridge_protocol::envelope::{FORMAT_VERSION, HEADER_LEN};
use scanbridge_protocol::*;

fn sample_batch() -> Batch {
    Batch {
        site: "WH01".into(),
        agent: "gw-wh01".into(),
        first_seq: 41,
        events: vec![
            Event {
                seq: 41,
                captured_at: 1_790_000_000_000_000,
                received_at: 1_790_000_000_001_250,
                source: Source::Mqtt {
                    broker: "site".into(),
                    topic: "scanners/SC-01/scan".into(),
                },
                device: "SC-01".into(),
                body: EventBody::Scan(Scan {
                    code: "4006381333931".into(),
                    symbology: Symbology::Ean13,
                    gs1: None,
                    op: Some(Operation::Count),
                    qty: Some(12.0),
                    location: Some("WH-STOCK-A01".into()),
                    reference: None,
                }),
            },
            Event {
                seq: 42,
                captured_at: 1_790_000_000_500_000,
                received_at: 1_790_000_000_500_900,
                source: Source::Serial {
                    port: "/dev/ttyUSB0".into(),
                },
                device: "DOCK-3".into(),
                body: EventBody::Scan(Scan {
                    code: "\u{1d}0109506000134352172601311021A12".into(),
                    symbology: Symbology::Gs1DataMatrix,
                    gs1: Some(Gs1 {
                        gtin: Some("09506000134352".into()),
                        lot: Some("21A12".into()),
                        expiry: Some("260131".into()),
                        serial: None,
                        sscc: None,
                        qty: None,
                    }),
                    op: Some(Operation::Receive),
                    qty: None,
                    location: None,
                    reference: Some("WH/IN/00012".into()),
                }),
            },
            Event {
                seq: 43,
                captured_at: 1_790_000_001_000_000,
                received_at: 1_790_000_001_000_000,
                source: Source::Mqtt {
                    broker: "plant".into(),
                    topic: "kepware/scale1".into(),
                },
                device: "SCALE-1".into(),
                body: EventBody::Reading(Reading {
                    tag: "scale1.weight".into(),
                    value: 12.345,
                    unit: Some("kg".into()),
                }),
            },
            Event {
                seq: 44,
                captured_at: 1_790_000_002_000_000,
                received_at: 1_790_000_002_000_000,
                source: Source::Mqtt {
                    broker: "site".into(),
                    topic: "scanners/SC-02/scan".into(),
                },
                device: "SC-02".into(),
                body: EventBody::Quarantined(Quarantined {
                    raw: vec![0xff, 0xfe, b'{'],
                    reason: "payload is not valid UTF-8".into(),
                }),
            },
        ],
        status: Some(sample_status()),
    }
}

fn sample_status() -> AgentStatus {
    AgentStatus {
        version: "0.1.0".into(),
        backlog_events: 4,
        backlog_bytes: 512,
        oldest_pending_age_ms: Some(2_000),
        disk_used_bytes: 1 << 20,
        disk_cap_bytes: 1 << 30,
        quarantine_count: 1,
        ingest_paused: false,
        sources: vec![SourceHealth {
            name: "site".into(),
            kind: SourceKind::Mqtt,
            up: true,
            detail: "connected".into(),
        }],
        cert_not_after: Some(1_800_000_000_000_000),
        clock: 1_790_000_002_000_000,
    }
}

/// Compares `bytes` with the committed fixture, or rewrites it when `UPDATE_GOLDEN=1`.
fn golden(name: &str, bytes: &[u8]) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, bytes).expect("write golden fixture");
        return;
    }
    let expected = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "missing golden fixture {}: {e}; run UPDATE_GOLDEN=1 cargo test -p scanbridge-protocol",
            path.display()
        )
    });
    assert_eq!(
        bytes,
        &expected[..],
        "wire bytes of {name} changed: if intended, bump FORMAT_VERSION and regenerate fixtures"
    );
}

#[test]
fn batch_bytes_match_the_committed_golden_fixture() {
    let bytes = encode(&sample_batch()).unwrap();
    golden("batch_v1.bin", &bytes);
    assert_eq!(decode::<Batch>(&bytes).unwrap(), sample_batch());
}

#[test]
fn ack_bytes_match_the_committed_golden_fixture() {
    let ack = Ack {
        upto: 44,
        duplicates: 2,
    };
    let bytes = encode(&ack).unwrap();
    golden("ack_v1.bin", &bytes);
    assert_eq!(decode::<Ack>(&bytes).unwrap(), ack);
}

#[test]
fn status_bytes_match_the_committed_golden_fixture() {
    let bytes = encode(&sample_status()).unwrap();
    golden("status_v1.bin", &bytes);
    assert_eq!(decode::<AgentStatus>(&bytes).unwrap(), sample_status());
}

#[test]
fn header_carries_magic_version_kind_length_and_checksum() {
    let bytes = encode(&Ack {
        upto: 1,
        duplicates: 0,
    })
    .unwrap();
    assert_eq!(&bytes[0..4], b"SBRG");
    assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), FORMAT_VERSION);
    assert_eq!(bytes[6], Kind::Ack as u8);
    let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    assert_eq!(len, bytes.len() - HEADER_LEN);
}

#[test]
fn a_flipped_payload_bit_is_reported_as_a_checksum_error() {
    let mut bytes = encode(&sample_batch()).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    assert!(matches!(
        decode::<Batch>(&bytes),
        Err(DecodeError::Checksum { .. })
    ));
}

#[test]
fn a_newer_format_version_is_refused_with_both_versions_named() {
    let mut bytes = encode(&sample_batch()).unwrap();
    bytes[4..6].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let err = decode::<Batch>(&bytes).unwrap_err();
    assert_eq!(
        err,
        DecodeError::UnsupportedVersion {
            found: FORMAT_VERSION + 1,
            supported: FORMAT_VERSION
        }
    );
    assert!(err.to_string().contains("upgrade"));
}

#[test]
fn an_ack_is_not_accepted_where_a_batch_is_expected() {
    let bytes = encode(&Ack {
        upto: 1,
        duplicates: 0,
    })
    .unwrap();
    assert!(matches!(
        decode::<Batch>(&bytes),
        Err(DecodeError::WrongKind { .. })
    ));
}

#[test]
fn truncated_and_padded_messages_are_rejected() {
    let bytes = encode(&sample_batch()).unwrap();
    for cut in [0, 3, HEADER_LEN - 1, HEADER_LEN, bytes.len() - 1] {
        assert!(decode::<Batch>(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut padded = bytes.clone();
    padded.push(0);
    assert!(matches!(
        decode::<Batch>(&padded),
        Err(DecodeError::LengthMismatch { .. })
    ));
}

#[test]
fn a_valid_checksum_over_trailing_garbage_is_still_rejected() {
    // Re-wrap a payload with one extra byte so length and CRC are consistent.
    let bytes = encode(&Ack {
        upto: 7,
        duplicates: 0,
    })
    .unwrap();
    let mut payload = bytes[HEADER_LEN..].to_vec();
    payload.push(0);
    let mut forged = bytes[..8].to_vec();
    forged.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    forged.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    forged.extend_from_slice(&payload);
    assert!(matches!(
        decode::<Ack>(&forged),
        Err(DecodeError::Trailing(1, Kind::Ack))
    ));
}

fn arb_string() -> impl Strategy<Value = String> {
    ".{0,24}"
}

fn arb_opt_string() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(arb_string())
}

fn arb_f64() -> impl Strategy<Value = f64> {
    // NaN never equals itself; every other value must round-trip bit-exactly.
    any::<f64>().prop_filter("not NaN", |v| !v.is_nan())
}

fn arb_symbology() -> impl Strategy<Value = Symbology> {
    prop_oneof![
        Just(Symbology::Unknown),
        Just(Symbology::Ean13),
        Just(Symbology::Ean8),
        Just(Symbology::UpcA),
        Just(Symbology::UpcE),
        Just(Symbology::Code128),
        Just(Symbology::Gs1_128),
        Just(Symbology::Code39),
        Just(Symbology::Itf),
        Just(Symbology::DataMatrix),
        Just(Symbology::Gs1DataMatrix),
        Just(Symbology::Qr),
        Just(Symbology::Gs1Qr),
        arb_string().prop_map(Symbology::Aim),
    ]
}

fn arb_op() -> impl Strategy<Value = Operation> {
    prop_oneof![
        Just(Operation::Receive),
        Just(Operation::Pick),
        Just(Operation::Pack),
        Just(Operation::Ship),
        Just(Operation::Count),
        Just(Operation::Move),
    ]
}

fn arb_gs1() -> impl Strategy<Value = Gs1> {
    (
        arb_opt_string(),
        arb_opt_string(),
        arb_opt_string(),
        arb_opt_string(),
        arb_opt_string(),
        proptest::option::of(arb_f64()),
    )
        .prop_map(|(gtin, lot, expiry, serial, sscc, qty)| Gs1 {
            gtin,
            lot,
            expiry,
            serial,
            sscc,
            qty,
        })
}

fn arb_body() -> impl Strategy<Value = EventBody> {
    prop_oneof![
        (
            arb_string(),
            arb_symbology(),
            proptest::option::of(arb_gs1()),
            proptest::option::of(arb_op()),
            proptest::option::of(arb_f64()),
            arb_opt_string(),
            arb_opt_string()
        )
            .prop_map(|(code, symbology, gs1, op, qty, location, reference)| {
                EventBody::Scan(Scan {
                    code,
                    symbology,
                    gs1,
                    op,
                    qty,
                    location,
                    reference,
                })
            }),
        (arb_string(), arb_f64(), arb_opt_string())
            .prop_map(|(tag, value, unit)| EventBody::Reading(Reading { tag, value, unit })),
        (proptest::collection::vec(any::<u8>(), 0..64), arb_string())
            .prop_map(|(raw, reason)| EventBody::Quarantined(Quarantined { raw, reason })),
    ]
}

fn arb_source() -> impl Strategy<Value = Source> {
    prop_oneof![
        (arb_string(), arb_string()).prop_map(|(broker, topic)| Source::Mqtt { broker, topic }),
        arb_string().prop_map(|port| Source::Serial { port }),
    ]
}

fn arb_event() -> impl Strategy<Value = Event> {
    (
        any::<u64>(),
        any::<i64>(),
        any::<i64>(),
        arb_source(),
        arb_string(),
        arb_body(),
    )
        .prop_map(
            |(seq, captured_at, received_at, source, device, body)| Event {
                seq,
                captured_at,
                received_at,
                source,
                device,
                body,
            },
        )
}

fn arb_status() -> impl Strategy<Value = AgentStatus> {
    (
        arb_string(),
        any::<u64>(),
        any::<u64>(),
        proptest::option::of(any::<u64>()),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        proptest::collection::vec(
            (arb_string(), any::<bool>(), any::<bool>(), arb_string()),
            0..4,
        ),
        proptest::option::of(any::<i64>()),
        any::<i64>(),
    )
        .prop_map(
            |(version, be, bb, age, du, dc, qc, paused, sources, cert, clock)| AgentStatus {
                version,
                backlog_events: be,
                backlog_bytes: bb,
                oldest_pending_age_ms: age,
                disk_used_bytes: du,
                disk_cap_bytes: dc,
                quarantine_count: qc,
                ingest_paused: paused,
                sources: sources
                    .into_iter()
                    .map(|(name, serial, up, detail)| SourceHealth {
                        name,
                        kind: if serial {
                            SourceKind::Serial
                        } else {
                            SourceKind::Mqtt
                        },
                        up,
                        detail,
                    })
                    .collect(),
                cert_not_after: cert,
                clock,
            },
        )
}

proptest! {
    #[test]
    fn every_batch_round_trips(
        site in arb_string(),
        agent in arb_string(),
        first_seq in any::<u64>(),
        events in proptest::collection::vec(arb_event(), 0..8),
        status in proptest::option::of(arb_status()),
    ) {
        let batch = Batch { site, agent, first_seq, events, status };
        let bytes = encode(&batch).unwrap();
        prop_assert_eq!(decode::<Batch>(&bytes).unwrap(), batch);
    }

    #[test]
    fn every_ack_round_trips(upto in any::<u64>(), duplicates in any::<u32>()) {
        let ack = Ack { upto, duplicates };
        prop_assert_eq!(decode::<Ack>(&encode(&ack).unwrap()).unwrap(), ack);
    }

    #[test]
    fn arbitrary_bytes_decode_to_an_error_or_a_value_never_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..512)
    ) {
        let _ = decode::<Batch>(&bytes);
        let _ = decode::<Ack>(&bytes);
        let _ = decode::<AgentStatus>(&bytes);
    }

    #[test]
    fn arbitrary_payloads_in_a_valid_envelope_never_panic(
        payload in proptest::collection::vec(any::<u8>(), 0..512)
    ) {
        // A correct header (magic, version, length, checksum) around random bytes exercises the
        // postcard decoder itself, not just the header checks.
        let mut bytes = b"SBRG".to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.push(Kind::Batch as u8);
        bytes.push(0);
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        let _ = decode::<Batch>(&bytes);
    }

    #[test]
    fn any_single_bit_flip_in_a_batch_is_detected(bit in 0usize..(8 * 400)) {
        let mut bytes = encode(&sample_batch()).unwrap();
        let bit = bit % (bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(decode::<Batch>(&bytes).is_err());
    }
}
