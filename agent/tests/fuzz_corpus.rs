//! Replays the committed fuzz corpora of the agent's targets (`fuzz/corpus/serial_framer`,
//! `fuzz/corpus/payload`) and any regression inputs (`fuzz/regressions/<target>`) on the stable
//! toolchain, with the fuzz targets' own properties, so `cargo test` checks every input the fuzzer
//! ever kept.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use scanbridge_agent::config::{PayloadFormat, Station, TagMapping};
use scanbridge_agent::normalise::{normalise_message, Decode, Incoming, Stations, Tags};
use scanbridge_agent::sources::serial::framing::{Frame, Framer, Framing};
use scanbridge_protocol::{EventBody, Operation};

fn frames(framing: Framing, max: usize, stream: &[u8], chunk: usize) -> Vec<Frame> {
    let mut framer = Framer::new(framing, max);
    let mut out = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        framer.push(piece, &mut out);
    }
    framer.finish(&mut out);
    out
}

fn inputs(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

#[test]
fn every_serial_framer_fuzz_input_frames_the_same_whatever_the_read_size() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let corpus = inputs(&root.join("corpus/serial_framer"));
    assert!(
        corpus.len() >= 3,
        "the committed serial_framer corpus is missing"
    );
    for data in corpus
        .iter()
        .chain(&inputs(&root.join("regressions/serial_framer")))
    {
        let [mode, chunk, stream @ ..] = data.as_slice() else {
            continue;
        };
        let framing =
            [Framing::Cr, Framing::Lf, Framing::CrLf, Framing::Idle][usize::from(mode & 3)];
        let max = usize::from(mode >> 2) + 1;
        let whole = frames(framing, max, stream, stream.len());
        for f in &whole {
            if let Frame::Line(line) = f {
                assert!(!line.is_empty() && line.len() <= max, "bad line {line:?}");
            }
        }
        assert_eq!(whole, frames(framing, max, stream, usize::from(*chunk)));
    }
}

#[test]
fn every_payload_fuzz_input_becomes_events_or_quarantine_and_never_vanishes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let corpus = inputs(&root.join("corpus/payload"));
    assert!(corpus.len() >= 3, "the committed payload corpus is missing");
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
    let mut scans = 0;
    for data in corpus
        .iter()
        .chain(&inputs(&root.join("regressions/payload")))
    {
        let [selector, payload @ ..] = data.as_slice() else {
            continue;
        };
        let format = [
            PayloadFormat::Json,
            PayloadFormat::Text,
            PayloadFormat::Kepware,
        ][usize::from(selector % 3)];
        let msg = Incoming {
            broker: "site",
            topic: "scanbridge/SC-01/scan",
            payload,
            received_at: 1_700_000_000_000_000,
        };
        let decode = Decode {
            format,
            device_level: 1,
        };
        let events = normalise_message(&stations, &tags, decode, msg);
        assert!(!events.is_empty(), "a message vanished: {data:?}");
        for e in &events {
            match &e.body {
                EventBody::Quarantined(q) if format == PayloadFormat::Kepware => assert!(
                    q.raw == payload || payload.windows(q.raw.len().max(1)).any(|w| w == q.raw)
                ),
                EventBody::Quarantined(q) => assert_eq!(q.raw, payload),
                EventBody::Scan(s) => {
                    assert!(!s.code.is_empty());
                    scans += 1;
                }
                EventBody::Reading(_) => {}
            }
        }
    }
    assert!(
        scans > 0,
        "no corpus input made a scan: the corpus lost its seeds"
    );
}
