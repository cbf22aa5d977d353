//! Replays the committed fuzz corpus of the `gs1` target (`fuzz/corpus/gs1`) and any regression
//! inputs (`fuzz/regressions/gs1`) on the stable toolchain: the AIM split and the GS1 parser never
//! panic, and an element string that parses re-transmits to one that parses to the same elements.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use scanbridge_barcode::{aim, gs1};

fn inputs(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

#[test]
fn every_gs1_fuzz_corpus_input_parses_stably_or_is_refused_without_panicking() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let corpus = inputs(&root.join("corpus/gs1"));
    assert!(corpus.len() >= 3, "the committed gs1 corpus is missing");
    let mut parsed = 0;
    for bytes in corpus.iter().chain(&inputs(&root.join("regressions/gs1"))) {
        let Ok(text) = std::str::from_utf8(bytes) else {
            continue;
        };
        let (_, rest) = aim::split(text);
        for candidate in [text, rest] {
            if let Ok(es) = gs1::parse(candidate) {
                parsed += 1;
                let again = gs1::parse(&es.to_transmitted()).unwrap();
                let pairs = |e: &gs1::ElementString| {
                    e.elements
                        .iter()
                        .map(|x| (x.ai.clone(), x.value.clone()))
                        .collect::<Vec<_>>()
                };
                assert_eq!(pairs(&again), pairs(&es), "input {text:?}");
            }
        }
    }
    assert!(
        parsed > 0,
        "no corpus input parsed: the corpus lost its seeds"
    );
}
