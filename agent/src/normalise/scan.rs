//! Building a [`Scan`] from barcode content, whatever the payload format: AIM prefix →
//! symbology, GS1 element string → `Scan.gs1`, content checks, and station defaults overridden by
//! what the payload says. Pure; `Err` carries the quarantine reason.

use scanbridge_barcode::{aim, gs1};
use scanbridge_protocol::{Operation, Scan, Symbology};

use super::MAX_CODE_CHARS;
use crate::config::Station;

/// FNC1 as scanners transmit it.
const GS: char = gs1::GS;

/// What a payload says about a scan; `None` fields fall back to the station or stay empty.
#[derive(Debug, Clone, Default)]
pub struct ScanFields<'a> {
    /// The barcode content as received, possibly with an AIM prefix.
    pub code: &'a str,
    /// Symbology named by the payload (wins over the AIM prefix).
    pub symbology: Option<Symbology>,
    pub op: Option<Operation>,
    pub qty: Option<f64>,
    pub location: Option<String>,
    pub reference: Option<String>,
}

/// Builds the scan; the station of the device supplies `op` and `location` the payload lacks.
pub fn build_scan(station: Option<&Station>, f: ScanFields<'_>) -> Result<Scan, String> {
    let (aim, code) = aim::split(f.code);
    let symbology = f
        .symbology
        .or_else(|| aim.map(|a| a.symbology()))
        .unwrap_or(Symbology::Unknown);
    let is_gs1 = aim.is_some_and(|a| a.is_gs1())
        || code.starts_with(GS)
        || matches!(
            symbology,
            Symbology::Gs1_128 | Symbology::Gs1DataMatrix | Symbology::Gs1Qr
        );
    check_content(code)?;
    let (code, gs1) = if is_gs1 {
        let es = gs1::parse(code).map_err(|e| format!("GS1 barcode {code:?} refused: {e}"))?;
        (code.trim_start_matches(GS), Some(gs1::to_protocol(&es)))
    } else {
        if is_gs1_key_length(code) && !gs1::gtin_check_digit_ok(code) {
            return Err(format!(
                "code {code} has a wrong GS1 check digit (expected {}); rescan it",
                gs1::check_digit(code)
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            ));
        }
        (code, None)
    };
    Ok(Scan {
        code: code.to_string(),
        symbology,
        gs1,
        op: f.op.or_else(|| station.map(|s| s.op)),
        qty: f.qty,
        location: f
            .location
            .or_else(|| station.and_then(|s| s.location.clone())),
        reference: f.reference,
    })
}

/// Checks barcode content (after the AIM prefix): not empty, not too long, no control characters
/// other than GS (FNC1), and a right check digit on an all-digit 8/12/13/14-character code.
pub fn validate_code(code: &str) -> Result<(), String> {
    check_content(code)?;
    if is_gs1_key_length(code) && !gs1::gtin_check_digit_ok(code) {
        return Err(format!("code {code} has a wrong GS1 check digit"));
    }
    Ok(())
}

fn check_content(code: &str) -> Result<(), String> {
    if code.is_empty() {
        return Err("the barcode is empty".into());
    }
    if code.chars().count() > MAX_CODE_CHARS {
        return Err(format!(
            "the barcode is longer than {MAX_CODE_CHARS} characters"
        ));
    }
    if code.chars().any(|c| c.is_control() && c != GS) {
        return Err(
            "the barcode contains control characters (check the scanner's suffix settings)".into(),
        );
    }
    Ok(())
}

/// An all-digit code of a GTIN length (8, 12, 13, 14): its last digit must be a GS1 check digit.
fn is_gs1_key_length(code: &str) -> bool {
    matches!(code.len(), 8 | 12 | 13 | 14) && code.bytes().all(|b| b.is_ascii_digit())
}

/// A symbology named in a payload (`ean13`, `gs1-128`, `]d2`, ...); unknown names → `Unknown`.
pub fn symbology_from_name(s: &str) -> Symbology {
    if s.starts_with(']') {
        return aim::AimId::parse(s)
            .map(|a| a.symbology())
            .unwrap_or(Symbology::Unknown);
    }
    let n: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    match n.as_str() {
        "ean13" => Symbology::Ean13,
        "ean8" => Symbology::Ean8,
        "upca" => Symbology::UpcA,
        "upce" => Symbology::UpcE,
        "code128" => Symbology::Code128,
        "gs1128" | "ean128" => Symbology::Gs1_128,
        "code39" => Symbology::Code39,
        "itf" | "itf14" | "interleaved2of5" => Symbology::Itf,
        "datamatrix" => Symbology::DataMatrix,
        "gs1datamatrix" => Symbology::Gs1DataMatrix,
        "qr" | "qrcode" => Symbology::Qr,
        "gs1qr" | "gs1qrcode" => Symbology::Gs1Qr,
        _ => Symbology::Unknown,
    }
}
