//! Replays the committed fuzz corpus of the `serial_framer` target (`fuzz/corpus/serial_framer`)
//! and any regression inputs on the stable toolchain, with the fuzz target's own properties: the
//! framer never panics, lines are non-empty and within `max_line`, and the frames do not depend on
//! how the bytes were split across reads.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use scanbridge_agent::sources::serial::framing::{Frame, Framer, Framing};

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
