//! Fuzzes the GS1 element-string parser and the AIM identifier split that run on every scan.
//!
//! Properties: never panics; a string that parses is re-transmitted (`to_transmitted`) into a
//! string that parses to the same elements; the protocol mapping never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanbridge_barcode::{aim, gs1};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (id, rest) = aim::split(text);
    if let Some(id) = id {
        let _ = id.symbology();
        let _ = id.is_gs1();
    }
    for candidate in [text, rest] {
        if let Ok(es) = gs1::parse(candidate) {
            let _ = gs1::to_protocol(&es);
            let _ = es.to_hri();
            let again =
                gs1::parse(&es.to_transmitted()).expect("a transmitted element string parses");
            assert_eq!(again.elements.len(), es.elements.len());
            for (a, b) in again.elements.iter().zip(&es.elements) {
                assert_eq!((&a.ai, &a.value), (&b.ai, &b.value));
            }
        }
    }
});
