//! Unit tests for the GS1 parser: worked examples from the GS1 General Specifications and
//! BWIPP's GS1-128 page, and one test per refusal.
#![allow(clippy::unwrap_used)]

use super::*;

const G: &str = "\u{1d}";

fn hri(s: &str) -> String {
    parse(s).unwrap().to_hri()
}

#[test]
fn the_general_specifications_datamatrix_example_parses_into_gtin_expiry_and_lot() {
    // (01)09501101530003(17)140704(10)AB-123: 01 and 17 are predefined-length, 10 is last.
    let es = parse("01095011015300031714070410AB-123").unwrap();
    assert_eq!(es.to_hri(), "(01)09501101530003(17)140704(10)AB-123");
    assert_eq!(es.elements[0].title, "GTIN");
    assert_eq!(es.elements[1].title, "expiry date");
    let p = to_protocol(&es);
    assert_eq!(p.gtin.as_deref(), Some("09501101530003"));
    assert_eq!(p.expiry.as_deref(), Some("140704"));
    assert_eq!(p.lot.as_deref(), Some("AB-123"));
    assert_eq!(p.qty, None);
}

#[test]
fn a_variable_length_field_ends_at_gs_and_the_next_ai_follows() {
    // Lot first, so it needs FNC1 before the expiry date.
    let s = format!("0109501101530003{G}10AB-123{G}17140704");
    assert_eq!(hri(&s), "(01)09501101530003(10)AB-123(17)140704");
    let s = format!("10ABC{G}21XYZ{G}0109501101530003");
    assert_eq!(hri(&s), "(10)ABC(21)XYZ(01)09501101530003");
}

#[test]
fn a_leading_fnc1_and_a_gs1_aim_identifier_are_skipped() {
    let want = "(01)09501101530003(17)140704(10)AB-123";
    assert_eq!(hri(&format!("{G}01095011015300031714070410AB-123")), want);
    for aim in ["]C1", "]d2", "]Q3", "]e0", "]J1"] {
        assert_eq!(hri(&format!("{aim}01095011015300031714070410AB-123")), want);
    }
}

#[test]
fn a_gs_after_a_fixed_length_field_and_a_trailing_gs_are_tolerated() {
    let s = format!("0109501101530003{G}17140704{G}10AB-123{G}");
    assert_eq!(hri(&s), "(01)09501101530003(17)140704(10)AB-123");
}

#[test]
fn net_weight_3103_has_three_decimals_in_kilograms() {
    // BWIPP GS1-128 example: GTIN 9521234543213; weight 0.123 kg.
    let es = parse("01095212345432133103000123").unwrap();
    let m = es.elements[1].measure.unwrap();
    assert_eq!(es.elements[1].ai, "3103");
    assert_eq!(
        (m.quantity, m.unit, m.logistic, m.decimals),
        ("net weight", "kg", false, 3)
    );
    assert!((m.value - 0.123).abs() < 1e-12);
    assert_eq!(to_protocol(&es).qty, Some(0.123));
}

#[test]
fn measure_families_keep_their_unit_and_meaning() {
    let m = |s: &str| parse(s).unwrap().elements[0].measure.unwrap();
    let gross = m("3302001250");
    assert_eq!(
        (gross.quantity, gross.unit, gross.logistic),
        ("gross weight", "kg", true)
    );
    assert!((gross.value - 12.5).abs() < 1e-12);
    let lb = m("3200000042");
    assert_eq!((lb.unit, lb.value), ("lb", 42.0));
    let vol = m("3611000015");
    assert_eq!((vol.quantity, vol.unit), ("net volume", "gal (US)"));
    assert!((vol.value - 1.5).abs() < 1e-12);
    let area = m("3142000150");
    assert_eq!(area.unit, "m2");
    let yd3 = m("3695000001");
    assert_eq!((yd3.unit, yd3.logistic, yd3.decimals), ("yd3", true, 5));
}

#[test]
fn a_measure_with_more_than_five_decimals_is_not_an_ai() {
    let e = parse("3106000123").unwrap_err();
    assert!(matches!(e, Gs1Error::UnknownAi { at: 0, .. }), "{e}");
}

#[test]
fn the_sscc_pallet_label_example_parses_sscc_content_and_count() {
    // (00)106141411234567897 on its own, then an SSCC with contained GTIN and count.
    let es = parse("00106141411234567897").unwrap();
    assert_eq!(to_protocol(&es).sscc.as_deref(), Some("106141411234567897"));

    let es = parse("003951234512345678950209512345678901" /* 00 + 02 */).unwrap();
    assert_eq!(es.to_hri(), "(00)395123451234567895(02)09512345678901");
    let es = parse(
        "00395123451234567895020951234567890137 20"
            .replace(' ', "")
            .as_str(),
    )
    .unwrap();
    let p = to_protocol(&es);
    assert_eq!(p.gtin.as_deref(), Some("09512345678901"));
    assert_eq!(p.qty, Some(20.0));
}

#[test]
fn count_30_wins_over_37_and_measures_for_the_quantity() {
    let es = parse(&format!("0109501101530003{G}30150{G}3103000123")).unwrap();
    assert_eq!(to_protocol(&es).qty, Some(150.0));
}

#[test]
fn serial_production_date_and_best_before_are_parsed() {
    let es = parse(&format!("01095011015300031120010115201231{G}21SN-0001")).unwrap();
    assert_eq!(
        es.to_hri(),
        "(01)09501101530003(11)200101(15)201231(21)SN-0001"
    );
    assert_eq!(to_protocol(&es).serial.as_deref(), Some("SN-0001"));
    assert_eq!(es.get("13"), None);
    let es = parse("13200229").unwrap();
    assert_eq!(es.get("13"), Some("200229"));
}

#[test]
fn day_00_means_end_of_month_and_is_accepted() {
    assert_eq!(hri("17251200"), "(17)251200");
}

#[test]
fn impossible_dates_are_refused_with_what_is_wrong() {
    let e = parse("17251301").unwrap_err();
    assert_eq!(
        e.to_string(),
        "AI (17) expiry date expects 6 digits YYMMDD, got \"251301\": month 13 does not exist"
    );
    let e = parse("17250230").unwrap_err();
    assert!(
        e.to_string().contains("day 30 does not exist in month 02"),
        "{e}"
    );
    let e = parse("17230229").unwrap_err();
    assert!(matches!(e, Gs1Error::BadDate { .. }), "{e}");
    let e = parse("1725AB01").unwrap_err();
    assert_eq!(
        e.to_string(),
        "AI (17) expiry date expects 6 digits YYMMDD, got \"25AB01\""
    );
}

#[test]
fn a_truncated_fixed_length_field_names_the_ai_and_the_expected_length() {
    let e = parse("0109501101530003171407").unwrap_err();
    assert_eq!(
        e.to_string(),
        "AI (17) expiry date expects 6 digits YYMMDD, got \"1407\": the field is cut short"
    );
    let e = parse("01095011015300").unwrap_err();
    assert!(
        matches!(e, Gs1Error::Truncated { ref ai, .. } if ai == "01"),
        "{e}"
    );
}

#[test]
fn a_wrong_gtin_or_sscc_check_digit_is_refused_with_the_right_digit() {
    let e = parse("0109501101530004").unwrap_err();
    assert_eq!(
        e.to_string(),
        "AI (01) GTIN 09501101530004 has a wrong check digit (the last digit should be 3); \
         the label is misprinted or was misread, rescan it"
    );
    let e = parse("00106141411234567890").unwrap_err();
    assert!(matches!(e, Gs1Error::CheckDigit { expected: 7, .. }), "{e}");
    let e = parse("0209501101530001").unwrap_err();
    assert!(matches!(e, Gs1Error::CheckDigit { .. }), "{e}");
}

#[test]
fn a_variable_field_past_its_maximum_suggests_a_missing_separator() {
    let e = parse("10ABCDEFGHIJKLMNOPQRSTU").unwrap_err();
    assert!(
        matches!(
            e,
            Gs1Error::TooLong {
                max: 20,
                len: 21,
                ..
            }
        ),
        "{e}"
    );
    assert!(e
        .to_string()
        .contains("separator after it is probably missing"));
}

#[test]
fn unknown_ais_non_gs1_characters_and_empty_input_are_refused() {
    assert!(matches!(parse("").unwrap_err(), Gs1Error::Empty));
    assert!(matches!(parse(G).unwrap_err(), Gs1Error::Empty));
    assert!(matches!(parse("]C1").unwrap_err(), Gs1Error::Empty));
    let e = parse("0109501101530003ZZ12").unwrap_err();
    assert_eq!(
        e,
        Gs1Error::UnknownAi {
            at: 16,
            found: "ZZ12".into()
        }
    );
    let e = parse("10AB\u{e9}").unwrap_err();
    assert!(
        matches!(
            e,
            Gs1Error::NotGs1Character {
                at: 4,
                ch: '\u{e9}'
            }
        ),
        "{e}"
    );
    let e = parse("10AB CD").unwrap_err();
    assert!(
        matches!(e, Gs1Error::NotGs1Character { at: 4, ch: ' ' }),
        "{e}"
    );
    let e = parse(&format!("10{G}17140704")).unwrap_err();
    assert!(matches!(e, Gs1Error::EmptyValue { .. }), "{e}");
    let e = parse("3012A").unwrap_err();
    assert!(matches!(e, Gs1Error::NotDigits { .. }), "{e}");
}

#[test]
fn the_same_ai_twice_is_accepted_when_equal_and_refused_when_different() {
    assert_eq!(
        hri("0109501101530003010950110153000317140704"),
        "(01)09501101530003(17)140704"
    );
    let e = parse("01095011015300030109521234543213").unwrap_err();
    assert!(matches!(e, Gs1Error::Conflicting { .. }), "{e}");
}

#[test]
fn other_logistics_ais_parse_with_their_lengths() {
    let s = format!("4101234567890128400PO-4711{G}4210761234{G}8004GIAI-1{G}9112345{G}3921199");
    assert_eq!(
        hri(&s),
        "(410)1234567890128(400)PO-4711(421)0761234(8004)GIAI-1(91)12345(3921)199"
    );
}

#[test]
fn the_transmitted_form_puts_gs_only_after_fields_not_of_predefined_length() {
    let es = parse(&format!("10AB{G}0109501101530003{G}3103000123{G}21S1")).unwrap();
    assert_eq!(
        es.to_transmitted(),
        format!("10AB{G}0109501101530003310300012321S1")
    );
    assert_eq!(parse(&es.to_transmitted()).unwrap(), es);
}

#[test]
fn every_fixed_length_ai_in_the_predefined_table_has_that_length() {
    for (ai, spec) in TABLE {
        if let Some(total) = predefined_length(ai) {
            assert!(
                matches!(spec.tail, Tail::None),
                "({ai}) is predefined but variable"
            );
            assert_eq!(ai.len() + spec.lead, total, "({ai})");
        }
    }
    for (family, ..) in MEASURES {
        assert_eq!(predefined_length(family), Some(10), "({family}n)");
    }
    assert_eq!(predefined_length("10"), None);
    assert_eq!(predefined_length("1"), None);
}

#[test]
fn check_digits_are_verified_for_all_gtin_lengths_and_sscc() {
    for ok in [
        "96385074",
        "614141000036",
        "4006381333931",
        "09501101530003",
        "106141411234567897",
    ] {
        assert!(gtin_check_digit_ok(ok), "{ok}");
    }
    for bad in [
        "96385075",
        "4006381333932",
        "0950110153000",
        "400638133393a",
        "",
    ] {
        assert!(!gtin_check_digit_ok(bad), "{bad}");
    }
}
