//! Property tests: no input makes the AIM splitter or the GS1 parser panic, and a parsed element
//! string survives a round trip through its transmitted form.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use scanbridge_barcode::{aim, gs1};

fn gs1ish() -> impl Strategy<Value = String> {
    // Digits, GS, a few letters and punctuation: mostly near-valid element strings.
    proptest::collection::vec(
        prop_oneof![
            8 => proptest::char::range('0', '9'),
            2 => Just('\u{1d}'),
            1 => proptest::char::range('A', 'Z'),
            1 => Just('-'),
            1 => Just(']'),
        ],
        0..80,
    )
    .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic_the_parser(s in any::<String>()) {
        let _ = gs1::parse(&s);
        let (_, rest) = aim::split(&s);
        prop_assert!(s.ends_with(rest));
        let _ = gs1::gtin_check_digit_ok(&s);
    }

    #[test]
    fn near_gs1_strings_never_panic_and_parse_results_round_trip(s in gs1ish()) {
        if let Ok(es) = gs1::parse(&s) {
            prop_assert!(!es.elements.is_empty());
            let again = gs1::parse(&es.to_transmitted()).unwrap();
            prop_assert_eq!(&again, &es);
            let _ = gs1::to_protocol(&es);
        }
    }
}
