//! Replays the committed fuzz corpus (`fuzz/corpus/envelope`) and any regression inputs
//! (`fuzz/regressions/envelope`) through the decoder on the stable toolchain, so every input the
//! fuzzer ever kept is checked by `cargo test`: decoding never panics, and whatever decodes
//! re-encodes to bytes that decode and re-encode identically.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use scanbridge_protocol::{decode, encode, Ack, AgentStatus, Batch, Message};

fn stable<M: Message>(bytes: &[u8]) -> bool {
    match decode::<M>(bytes) {
        Ok(msg) => {
            let again = encode(&msg).unwrap();
            let back: M = decode(&again).unwrap();
            assert_eq!(encode(&back).unwrap(), again);
            true
        }
        Err(_) => false,
    }
}

fn inputs(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Vec<u8>> = entries
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    out
}

#[test]
fn every_fuzz_corpus_input_decodes_or_is_refused_without_panicking() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let corpus = inputs(&root.join("corpus/envelope"));
    assert!(
        corpus.len() >= 3,
        "the committed envelope corpus is missing ({} files)",
        corpus.len()
    );
    let mut decoded = 0;
    for bytes in corpus
        .iter()
        .chain(inputs(&root.join("regressions/envelope")).iter())
    {
        if stable::<Batch>(bytes) | stable::<Ack>(bytes) | stable::<AgentStatus>(bytes) {
            decoded += 1;
        }
    }
    // The golden fixtures are in the corpus, so at least those decode.
    assert!(decoded >= 3, "only {decoded} corpus inputs decoded");
}
