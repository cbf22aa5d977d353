//! EAN-13 barcodes with correct GS1 check digits, shared by the tests, the demo and the bench, and
//! deliberately wrong ones for the quarantine paths.
//!
//! Generated codes use GS1 prefix `20`–`29` (restricted circulation numbers, for in-store use), so
//! they never collide with a real product's GTIN.

/// Why a string is not a body or code the generator can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EanError {
    /// Not exactly 12 (body) or 13 (full code) ASCII digits.
    #[error("`{0}` is not {1} ASCII digits")]
    Shape(String, usize),
}

/// The GS1 check digit for the 12-digit body of an EAN-13 (weights 1,3,1,3,... from the left).
pub fn check_digit(body: &str) -> Result<u8, EanError> {
    let digits = digits_of(body, 12)?;
    Ok(check_digit_of(&digits))
}

fn digits_of(s: &str, len: usize) -> Result<Vec<u8>, EanError> {
    if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EanError::Shape(s.to_string(), len));
    }
    Ok(s.bytes().map(|b| b - b'0').collect())
}

fn check_digit_of(body: &[u8]) -> u8 {
    let sum: u32 = body
        .iter()
        .enumerate()
        .map(|(i, &d)| u32::from(d) * if i % 2 == 0 { 1 } else { 3 })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// The full EAN-13 for a 12-digit body.
pub fn complete(body: &str) -> Result<String, EanError> {
    let cd = check_digit(body)?;
    Ok(format!("{body}{cd}"))
}

/// Whether `code` is 13 digits with a correct check digit.
pub fn is_valid(code: &str) -> bool {
    match digits_of(code, 13) {
        Ok(d) => check_digit_of(&d[..12]) == d[12],
        Err(_) => false,
    }
}

/// `code` with its check digit replaced by a wrong one (the next digit, modulo 10).
pub fn with_wrong_check_digit(code: &str) -> Result<String, EanError> {
    let d = digits_of(code, 13)?;
    let wrong = (check_digit_of(&d[..12]) + 1) % 10;
    Ok(format!("{}{}", &code[..12], wrong))
}

/// `count` distinct valid EAN-13 codes: GS1 prefix `2<family>` (family 0..=9), then a 10-digit
/// running number starting at `start`.
pub fn generate(family: u8, start: u64, count: usize) -> Vec<String> {
    let family = family % 10;
    (0..count as u64)
        .map(|i| {
            let body = format!("2{family}{:010}", (start + i) % 10_000_000_000);
            // The body is 12 ASCII digits by construction.
            let cd = check_digit_of(&body.bytes().map(|b| b - b'0').collect::<Vec<u8>>());
            format!("{body}{cd}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_retail_codes_have_the_published_check_digit() {
        assert_eq!(check_digit("400638133393"), Ok(1));
        assert_eq!(check_digit("590123412345"), Ok(7));
        assert_eq!(check_digit("978030640615"), Ok(7));
        assert_eq!(complete("000000000000").as_deref(), Ok("0000000000000"));
    }

    #[test]
    fn a_valid_code_is_recognised_and_a_wrong_check_digit_is_not() {
        assert!(is_valid("4006381333931"));
        assert!(!is_valid("4006381333932"));
        let wrong = with_wrong_check_digit("4006381333931").expect("13 digits");
        assert_eq!(wrong, "4006381333932");
        assert!(!is_valid(&wrong));
    }

    #[test]
    fn malformed_inputs_are_rejected_with_their_shape() {
        assert!(!is_valid("400638133393"));
        assert!(!is_valid("400638133393X"));
        assert_eq!(
            check_digit("12345"),
            Err(EanError::Shape("12345".into(), 12))
        );
        assert!(with_wrong_check_digit("abc").is_err());
    }

    #[test]
    fn generated_codes_are_valid_distinct_and_in_restricted_circulation() {
        let codes = generate(3, 42, 500);
        assert_eq!(codes.len(), 500);
        let unique: std::collections::BTreeSet<&String> = codes.iter().collect();
        assert_eq!(unique.len(), 500);
        for c in &codes {
            assert!(is_valid(c), "{c}");
            assert!(c.starts_with("23"), "{c}");
        }
    }

    #[test]
    fn every_single_digit_error_changes_the_check_digit() {
        // The property that makes EAN-13 useful: any one wrong digit is detected.
        for code in generate(0, 1000, 50) {
            for pos in 0..12 {
                for d in b'0'..=b'9' {
                    let mut bytes = code.clone().into_bytes();
                    if bytes[pos] == d {
                        continue;
                    }
                    bytes[pos] = d;
                    let changed = String::from_utf8(bytes).expect("ascii");
                    assert!(!is_valid(&changed), "{changed} from {code}");
                }
            }
        }
    }
}
