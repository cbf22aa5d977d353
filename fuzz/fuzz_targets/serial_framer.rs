//! Fuzzes the serial line framer: arbitrary bytes from a port, cut into reads at arbitrary points.
//!
//! The first input byte picks the framing and the maximum line length, the second the read size;
//! the rest is the byte stream. Properties: never panics; every line is non-empty, UTF-8 and within
//! `max_line`; and the frames do not depend on how the stream was split across reads (no idle gap
//! is reported here, so this holds for `idle` framing too).
#![no_main]

use libfuzzer_sys::fuzz_target;
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

fuzz_target!(|data: &[u8]| {
    let [mode, chunk, stream @ ..] = data else {
        return;
    };
    let framing = [Framing::Cr, Framing::Lf, Framing::CrLf, Framing::Idle][usize::from(mode & 3)];
    let max = usize::from(mode >> 2) + 1;
    let whole = frames(framing, max, stream, stream.len());
    for f in &whole {
        if let Frame::Line(line) = f {
            assert!(!line.is_empty() && line.len() <= max, "bad line {line:?}");
        }
    }
    let split = frames(framing, max, stream, usize::from(*chunk));
    assert_eq!(whole, split, "frames depend on the read size");
});
