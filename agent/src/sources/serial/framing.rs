//! Pure line framing for serial scanners: the bytes read off a port, in whatever pieces the
//! kernel hands them over, become complete lines or quarantine records. No I/O and no clock here:
//! the caller reports an idle gap ([`Framer::gap`]) and a closed port ([`Framer::finish`]).
//!
//! # Terminators (`framing`)
//! - `cr`: a CR ends a line. An LF right after that CR is taken as part of it, so a scanner that
//!   sends CRLF also works under `cr`. Any other LF is data.
//! - `lf`: an LF ends a line. A CR right before it is taken as part of it (CRLF works too). Any
//!   other CR is data.
//! - `crlf`: only CR followed by LF ends a line; a lone CR or a lone LF is data (a QR code with
//!   embedded line breaks survives intact).
//! - `idle`: for scanners that send no suffix: the line ends when the port has been quiet for the
//!   configured gap. A CR or LF also ends the line, so a scanner that does send a suffix still works.
//!
//! In every mode the result does not depend on how the bytes were split across reads (property
//! test below), except that in `idle` mode a gap is itself a line end.
//!
//! # Noise, deliberately
//! - NUL bytes while no line is in progress (a BREAK, a scanner powering up, a USB adapter being
//!   plugged in) and empty lines (stray terminators) are noise: skipped and counted in
//!   [`FramerStats::noise_bytes`].
//! - A NUL *inside* a line means a byte arrived corrupted (framing or parity error): the line is
//!   quarantined, never passed on as a barcode with a character missing.
//! - Other control characters are kept in the line; the normaliser quarantines a code holding
//!   them (the ASCII group separator, GS1's FNC1, is allowed there).
//! - Bytes that are not UTF-8 quarantine the line with the offset of the first bad byte.
//!
//! # Overlong lines
//! When a line reaches `max_line` bytes and another data byte comes, the bytes seen so far are
//! emitted as one quarantine record, and everything up to the next line end is skipped (counted in
//! [`FramerStats::skipped_bytes`]; the quarantine reason says the rest was skipped). Framing then
//! resumes with the next line.

use std::fmt;

/// How lines end on a port (`[[serial]] framing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Cr,
    Lf,
    CrLf,
    Idle,
}

impl Framing {
    /// Parses the config spelling (`cr`, `lf`, `crlf`, `idle`).
    pub fn parse(s: &str) -> Option<Framing> {
        match s {
            "cr" => Some(Framing::Cr),
            "lf" => Some(Framing::Lf),
            "crlf" => Some(Framing::CrLf),
            "idle" => Some(Framing::Idle),
            _ => None,
        }
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Framing::Cr => "cr",
            Framing::Lf => "lf",
            Framing::CrLf => "crlf",
            Framing::Idle => "idle",
        }
    }

    /// What ends a line, in words for quarantine reasons.
    fn terminator(self) -> &'static str {
        match self {
            Framing::Cr => "CR",
            Framing::Lf => "LF",
            Framing::CrLf => "CRLF",
            Framing::Idle => "idle gap",
        }
    }
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a framed line was quarantined. The messages end up in the relay's quarantine table, read by
/// whoever fixes the scanner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("line longer than {max} bytes without a {terminator} terminator; the rest up to the next line end was skipped (check the scanner's suffix setting against `framing`, or raise `max_line`)")]
    TooLong {
        max: usize,
        terminator: &'static str,
    },
    #[error("line is not UTF-8 text (byte 0x{byte:02X} at offset {offset}); check `baud`, `parity` and `data_bits` against the scanner's settings")]
    NotUtf8 { offset: usize, byte: u8 },
    #[error("line holds a NUL byte at offset {offset}: a character arrived corrupted (line noise, or `baud`/`parity` not matching the scanner)")]
    Nul { offset: usize },
    #[error("line cut off: the port closed before its {terminator} terminator arrived")]
    CutOff { terminator: &'static str },
}

/// One framing result, in the order the bytes arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line: UTF-8, without its terminator, not empty, at most `max_line` bytes.
    Line(String),
    /// Bytes that cannot be a line, kept as they came.
    Quarantine { raw: Vec<u8>, reason: FrameError },
}

/// Counters of what the framer skipped on purpose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FramerStats {
    /// NUL bytes between lines and terminators of empty lines.
    pub noise_bytes: u64,
    /// Bytes of overlong lines past `max_line` (announced in their quarantine reason).
    pub skipped_bytes: u64,
}

/// A byte, as the terminator rules of the framing see it.
enum Token {
    Data(u8),
    End,
}

/// Line framer for one port. Feed it with [`Framer::push`]; it never panics, whatever the bytes.
#[derive(Debug, Clone)]
pub struct Framer {
    framing: Framing,
    max_line: usize,
    /// The line in progress.
    buf: Vec<u8>,
    /// `lf`/`crlf`: a CR was read and is held until the next byte says whether it ends the line.
    held_cr: bool,
    /// `cr`: the previous byte was a CR terminator (an LF now belongs to it).
    after_cr: bool,
    /// An overlong line was quarantined; skipping to the next line end.
    skipping: bool,
    stats: FramerStats,
}

impl Framer {
    /// A framer for `framing` with lines of at most `max_line` bytes (at least 1).
    pub fn new(framing: Framing, max_line: usize) -> Framer {
        Framer {
            framing,
            max_line: max_line.max(1),
            buf: Vec::new(),
            held_cr: false,
            after_cr: false,
            skipping: false,
            stats: FramerStats::default(),
        }
    }

    /// The framing this framer applies.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// What was skipped as noise so far.
    pub fn stats(&self) -> FramerStats {
        self.stats
    }

    /// Whether bytes of an unfinished line are held (the caller arms the idle timer on this).
    pub fn in_progress(&self) -> bool {
        !self.buf.is_empty() || self.held_cr || self.skipping
    }

    /// Frames `bytes`, appending what they complete to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Frame>) {
        for &b in bytes {
            self.byte(b, out);
        }
    }

    /// The port has been quiet for the idle gap: in `idle` framing the line in progress ends
    /// here. Other framings wait for their terminator.
    pub fn gap(&mut self, out: &mut Vec<Frame>) {
        if self.framing == Framing::Idle && self.in_progress() {
            self.token(Token::End, out);
        }
    }

    /// The port closed (unplugged, read error, shutdown). A line in progress is complete in
    /// `idle` framing; otherwise it is quarantined as cut off. The framer is then reset.
    pub fn finish(&mut self, out: &mut Vec<Frame>) {
        if self.held_cr {
            self.held_cr = false;
            self.token(Token::Data(b'\r'), out);
        }
        if (self.framing == Framing::Idle && !self.buf.is_empty()) || self.skipping {
            self.token(Token::End, out);
        } else if !self.buf.is_empty() {
            out.push(Frame::Quarantine {
                raw: std::mem::take(&mut self.buf),
                reason: FrameError::CutOff {
                    terminator: self.framing.terminator(),
                },
            });
        }
        self.after_cr = false;
    }

    /// Applies the terminator rules of the framing to one byte.
    fn byte(&mut self, b: u8, out: &mut Vec<Frame>) {
        match self.framing {
            Framing::Cr => {
                let after_cr = std::mem::replace(&mut self.after_cr, false);
                match b {
                    b'\r' => {
                        self.after_cr = true;
                        self.token(Token::End, out);
                    }
                    b'\n' if after_cr => {}
                    _ => self.token(Token::Data(b), out),
                }
            }
            Framing::Lf | Framing::CrLf => {
                if std::mem::replace(&mut self.held_cr, false) {
                    if b == b'\n' {
                        self.token(Token::End, out);
                        return;
                    }
                    self.token(Token::Data(b'\r'), out);
                }
                match b {
                    b'\r' => self.held_cr = true,
                    b'\n' if self.framing == Framing::Lf => self.token(Token::End, out),
                    _ => self.token(Token::Data(b), out),
                }
            }
            Framing::Idle => match b {
                b'\r' | b'\n' => self.token(Token::End, out),
                _ => self.token(Token::Data(b), out),
            },
        }
    }

    fn token(&mut self, t: Token, out: &mut Vec<Frame>) {
        match t {
            Token::Data(_) if self.skipping => self.stats.skipped_bytes += 1,
            Token::Data(0) if self.buf.is_empty() => self.stats.noise_bytes += 1,
            Token::Data(_) if self.buf.len() >= self.max_line => {
                out.push(Frame::Quarantine {
                    raw: std::mem::take(&mut self.buf),
                    reason: FrameError::TooLong {
                        max: self.max_line,
                        terminator: self.framing.terminator(),
                    },
                });
                self.skipping = true;
                self.stats.skipped_bytes += 1;
            }
            Token::Data(b) => self.buf.push(b),
            Token::End if self.skipping => self.skipping = false,
            Token::End if self.buf.is_empty() => self.stats.noise_bytes += 1,
            Token::End => out.push(complete_line(std::mem::take(&mut self.buf))),
        }
    }
}

/// A finished line's bytes → a line, or a quarantine record saying why not.
fn complete_line(bytes: Vec<u8>) -> Frame {
    if let Some(offset) = bytes.iter().position(|&b| b == 0) {
        return Frame::Quarantine {
            raw: bytes,
            reason: FrameError::Nul { offset },
        };
    }
    match String::from_utf8(bytes) {
        Ok(line) => Frame::Line(line),
        Err(e) => {
            let offset = e.utf8_error().valid_up_to();
            let raw = e.into_bytes();
            let byte = raw.get(offset).copied().unwrap_or(0);
            Frame::Quarantine {
                raw,
                reason: FrameError::NotUtf8 { offset, byte },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(framing: Framing, max: usize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut f = Framer::new(framing, max);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, &mut out);
        }
        out
    }

    fn line(s: &str) -> Frame {
        Frame::Line(s.to_string())
    }

    fn reason(f: &Frame) -> &FrameError {
        match f {
            Frame::Quarantine { reason, .. } => reason,
            Frame::Line(l) => panic!("expected a quarantine record, got line {l:?}"),
        }
    }

    #[test]
    fn cr_framing_ends_lines_at_cr() {
        assert_eq!(
            frame(Framing::Cr, 64, &[b"4006381333931\r]C1010\r"]),
            vec![line("4006381333931"), line("]C1010")]
        );
    }

    #[test]
    fn cr_framing_takes_an_lf_right_after_the_cr_as_part_of_the_terminator() {
        assert_eq!(
            frame(Framing::Cr, 64, &[b"A1\r", b"\nB2\r\n"]),
            vec![line("A1"), line("B2")]
        );
    }

    #[test]
    fn cr_framing_keeps_an_lf_inside_a_line_as_data() {
        assert_eq!(frame(Framing::Cr, 64, &[b"A\nB\r"]), vec![line("A\nB")]);
    }

    #[test]
    fn lf_framing_ends_lines_at_lf_and_drops_a_cr_right_before_it() {
        assert_eq!(
            frame(Framing::Lf, 64, &[b"A1\nB2\r", b"\nC3\n"]),
            vec![line("A1"), line("B2"), line("C3")]
        );
    }

    #[test]
    fn lf_framing_keeps_a_cr_inside_a_line_as_data() {
        assert_eq!(frame(Framing::Lf, 64, &[b"A\rB\n"]), vec![line("A\rB")]);
        assert_eq!(frame(Framing::Lf, 64, &[b"A\r\rB\n"]), vec![line("A\r\rB")]);
    }

    #[test]
    fn crlf_framing_ends_lines_only_at_cr_followed_by_lf() {
        assert_eq!(
            frame(Framing::CrLf, 64, &[b"QR\nline2\rx\r\nNEXT\r", b"\n"]),
            vec![line("QR\nline2\rx"), line("NEXT")]
        );
    }

    #[test]
    fn crlf_framing_keeps_a_cr_before_another_cr_and_ends_at_the_second() {
        assert_eq!(frame(Framing::CrLf, 64, &[b"A\r\r\n"]), vec![line("A\r")]);
    }

    #[test]
    fn idle_framing_ends_a_line_at_the_gap() {
        let mut f = Framer::new(Framing::Idle, 64);
        let mut out = Vec::new();
        f.push(b"4006381", &mut out);
        f.push(b"333931", &mut out);
        assert!(out.is_empty(), "no line before the gap");
        assert!(f.in_progress());
        f.gap(&mut out);
        f.push(b"SECOND", &mut out);
        f.gap(&mut out);
        assert_eq!(out, vec![line("4006381333931"), line("SECOND")]);
        assert!(!f.in_progress());
    }

    #[test]
    fn idle_framing_also_ends_lines_at_cr_or_lf_without_empty_lines() {
        let mut f = Framer::new(Framing::Idle, 64);
        let mut out = Vec::new();
        f.push(b"A\r\nB\n", &mut out);
        f.gap(&mut out);
        assert_eq!(out, vec![line("A"), line("B")]);
        assert_eq!(
            f.stats().noise_bytes,
            1,
            "the LF of the CRLF ends an empty line"
        );
    }

    #[test]
    fn a_gap_does_not_end_a_line_in_terminated_framings() {
        for framing in [Framing::Cr, Framing::Lf, Framing::CrLf] {
            let mut f = Framer::new(framing, 64);
            let mut out = Vec::new();
            f.push(b"ABC", &mut out);
            f.gap(&mut out);
            assert!(out.is_empty(), "{framing}: waits for the terminator");
            f.push(b"D\r\n", &mut out);
            assert_eq!(out, vec![line("ABCD")], "{framing}");
        }
    }

    #[test]
    fn a_line_split_byte_by_byte_is_reassembled() {
        let bytes = b"]C1010400638133393110ABC\r\n";
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        for framing in [Framing::Cr, Framing::Lf, Framing::CrLf] {
            assert_eq!(
                frame(framing, 64, &chunks),
                vec![line("]C1010400638133393110ABC")],
                "{framing}"
            );
        }
    }

    #[test]
    fn nul_bytes_between_lines_are_noise_and_counted() {
        let mut f = Framer::new(Framing::Cr, 64);
        let mut out = Vec::new();
        f.push(b"\0\0\0A\r\0B\r", &mut out);
        assert_eq!(out, vec![line("A"), line("B")]);
        assert_eq!(f.stats().noise_bytes, 4);
    }

    #[test]
    fn empty_lines_are_noise_not_events() {
        let mut f = Framer::new(Framing::Lf, 64);
        let mut out = Vec::new();
        f.push(b"\n\r\n\nA\n", &mut out);
        assert_eq!(out, vec![line("A")]);
        assert_eq!(f.stats().noise_bytes, 3);
    }

    #[test]
    fn a_nul_inside_a_line_quarantines_the_line_with_its_bytes() {
        let out = frame(Framing::Cr, 64, &[b"4006\x00381333931\rOK\r"]);
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0],
            Frame::Quarantine {
                raw: b"4006\x00381333931".to_vec(),
                reason: FrameError::Nul { offset: 4 }
            }
        );
        assert_eq!(out[1], line("OK"));
    }

    #[test]
    fn invalid_utf8_quarantines_the_line_naming_the_first_bad_byte() {
        let out = frame(Framing::Lf, 64, &[b"caf\xe9 au lait\nnext\n"]);
        assert_eq!(
            out[0],
            Frame::Quarantine {
                raw: b"caf\xe9 au lait".to_vec(),
                reason: FrameError::NotUtf8 {
                    offset: 3,
                    byte: 0xE9
                }
            }
        );
        assert_eq!(out[1], line("next"));
        assert!(reason(&out[0]).to_string().contains("0xE9 at offset 3"));
    }

    #[test]
    fn utf8_split_across_reads_is_reassembled() {
        let bytes = "Größe-42\r".as_bytes();
        let (a, b) = bytes.split_at(3); // inside the 'ö'
        assert_eq!(frame(Framing::Cr, 64, &[a, b]), vec![line("Größe-42")]);
    }

    #[test]
    fn control_characters_other_than_nul_stay_in_the_line_for_the_normaliser() {
        assert_eq!(
            frame(Framing::Cr, 64, &[b"\x1b\r01\x1d10AB\r"]),
            vec![line("\x1b"), line("01\x1d10AB")]
        );
    }

    #[test]
    fn a_line_of_exactly_max_line_bytes_is_accepted() {
        assert_eq!(frame(Framing::Lf, 4, &[b"ABCD\r\n"]), vec![line("ABCD")]);
        assert_eq!(frame(Framing::Cr, 4, &[b"ABCD\r"]), vec![line("ABCD")]);
    }

    #[test]
    fn an_overlong_line_is_one_quarantine_record_then_framing_resyncs_at_the_next_terminator() {
        let mut f = Framer::new(Framing::Cr, 4);
        let mut out = Vec::new();
        f.push(b"ABCDEFGH", &mut out);
        f.push(b"IJ\rOK\r", &mut out);
        assert_eq!(
            out,
            vec![
                Frame::Quarantine {
                    raw: b"ABCD".to_vec(),
                    reason: FrameError::TooLong {
                        max: 4,
                        terminator: "CR"
                    }
                },
                line("OK"),
            ]
        );
        assert_eq!(f.stats().skipped_bytes, 6);
        assert!(reason(&out[0])
            .to_string()
            .contains("rest up to the next line end was skipped"));
    }

    #[test]
    fn an_overlong_line_in_idle_framing_resyncs_at_the_gap() {
        let mut f = Framer::new(Framing::Idle, 3);
        let mut out = Vec::new();
        f.push(b"ABCDE", &mut out);
        f.gap(&mut out);
        f.push(b"XY", &mut out);
        f.gap(&mut out);
        assert_eq!(out.len(), 2);
        assert!(matches!(
            reason(&out[0]),
            FrameError::TooLong { max: 3, .. }
        ));
        assert_eq!(out[1], line("XY"));
    }

    #[test]
    fn a_line_cut_off_by_the_port_closing_is_quarantined() {
        let mut f = Framer::new(Framing::CrLf, 64);
        let mut out = Vec::new();
        f.push(b"DONE\r\nHALF\r", &mut out);
        f.finish(&mut out);
        assert_eq!(
            out,
            vec![
                line("DONE"),
                Frame::Quarantine {
                    raw: b"HALF\r".to_vec(),
                    reason: FrameError::CutOff { terminator: "CRLF" }
                }
            ]
        );
        assert!(!f.in_progress(), "reset after finish");
        f.push(b"NEW\r\n", &mut out);
        assert_eq!(out.last(), Some(&line("NEW")));
    }

    #[test]
    fn in_idle_framing_a_closing_port_completes_the_line() {
        let mut f = Framer::new(Framing::Idle, 64);
        let mut out = Vec::new();
        f.push(b"LAST", &mut out);
        f.finish(&mut out);
        assert_eq!(out, vec![line("LAST")]);
    }

    #[test]
    fn framing_names_round_trip_and_unknown_names_are_refused() {
        for f in [Framing::Cr, Framing::Lf, Framing::CrLf, Framing::Idle] {
            assert_eq!(Framing::parse(f.as_str()), Some(f));
        }
        assert_eq!(Framing::parse("CR"), None);
        assert_eq!(Framing::parse("newline"), None);
    }

    fn all_frames(framing: Framing, max: usize, bytes: &[u8], cuts: &[usize]) -> Vec<Frame> {
        let mut f = Framer::new(framing, max);
        let mut out = Vec::new();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut start = 0;
        for c in cuts {
            f.push(&bytes[start..c], &mut out);
            start = c;
        }
        f.push(&bytes[start..], &mut out);
        f.finish(&mut out);
        out
    }

    fn framing_strategy() -> impl Strategy<Value = Framing> {
        prop_oneof![
            Just(Framing::Cr),
            Just(Framing::Lf),
            Just(Framing::CrLf),
            Just(Framing::Idle)
        ]
    }

    /// Bytes with plenty of terminators, NULs and high bytes, so every rule is exercised.
    fn noisy_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                4 => b'0'..=b'9',
                2 => Just(b'\r'),
                2 => Just(b'\n'),
                1 => Just(0u8),
                1 => any::<u8>(),
            ],
            0..300,
        )
    }

    proptest! {
        #[test]
        fn any_read_split_gives_the_same_frames_as_one_read(
            framing in framing_strategy(),
            max in 1usize..40,
            bytes in noisy_bytes(),
            cuts in proptest::collection::vec(any::<usize>(), 0..20),
        ) {
            let whole = all_frames(framing, max, &bytes, &[]);
            let split = all_frames(framing, max, &bytes, &cuts);
            prop_assert_eq!(whole, split);
        }

        #[test]
        fn frames_respect_max_line_and_never_hold_their_terminator(
            framing in framing_strategy(),
            max in 1usize..40,
            bytes in noisy_bytes(),
        ) {
            for f in all_frames(framing, max, &bytes, &[]) {
                match f {
                    Frame::Line(l) => {
                        prop_assert!(!l.is_empty());
                        prop_assert!(l.len() <= max);
                        prop_assert!(!l.contains('\0'));
                        match framing {
                            Framing::Cr => prop_assert!(!l.contains('\r')),
                            Framing::Lf => prop_assert!(!l.contains('\n')),
                            Framing::CrLf => prop_assert!(!l.contains("\r\n")),
                            Framing::Idle => prop_assert!(!l.contains(['\r', '\n'])),
                        }
                    }
                    Frame::Quarantine { raw, .. } => {
                        prop_assert!(!raw.is_empty());
                        prop_assert!(raw.len() <= max);
                    }
                }
            }
        }

        #[test]
        fn terminated_lines_come_out_exactly_as_they_went_in(
            framing in prop_oneof![Just(Framing::Cr), Just(Framing::Lf), Just(Framing::CrLf)],
            lines in proptest::collection::vec("[ -~]{1,30}", 0..20),
            cuts in proptest::collection::vec(any::<usize>(), 0..20),
        ) {
            let term: &[u8] = match framing {
                Framing::Cr => b"\r",
                Framing::Lf => b"\n",
                _ => b"\r\n",
            };
            let mut bytes = Vec::new();
            for l in &lines {
                bytes.extend_from_slice(l.as_bytes());
                bytes.extend_from_slice(term);
            }
            let got = all_frames(framing, 30, &bytes, &cuts);
            let want: Vec<Frame> = lines.iter().map(|l| Frame::Line(l.clone())).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn the_framer_never_panics_on_any_bytes_gaps_or_closes(
            framing in framing_strategy(),
            max in 0usize..8,
            ops in proptest::collection::vec(
                prop_oneof![
                    8 => proptest::collection::vec(any::<u8>(), 0..50).prop_map(Some),
                    1 => Just(None),
                ],
                0..30,
            ),
        ) {
            let mut f = Framer::new(framing, max);
            let mut out = Vec::new();
            for op in ops {
                match op {
                    Some(bytes) => f.push(&bytes, &mut out),
                    None => f.gap(&mut out),
                }
            }
            f.finish(&mut out);
            prop_assert!(!f.in_progress());
        }
    }
}
