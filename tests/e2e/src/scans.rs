//! The canonical JSON scan payload scanners publish over MQTT (CONTRACTS.md), built the way a
//! scanner integrator would, and the topic it goes to.

use serde::Serialize;

/// One scan as a scanner publishes it. Only `code` is required; absent fields are left out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScanPayload {
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "qty_as_scanners_send_it"
    )]
    pub qty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbology: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub captured_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

impl ScanPayload {
    /// A count: `qty` units of EAN-13 `code` at `location`, scanned by `device` now.
    pub fn count(device: &str, code: &str, location: &str, qty: f64) -> ScanPayload {
        ScanPayload {
            code: code.to_string(),
            device: Some(device.to_string()),
            op: Some("count".to_string()),
            qty: Some(qty),
            location: Some(location.to_string()),
            symbology: Some("ean13".to_string()),
            captured_at: Some(now_rfc3339()),
            reference: None,
        }
    }

    /// The JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a struct of strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Whole quantities as JSON integers (`"qty":12`, as scanners send them), others as decimals.
fn qty_as_scanners_send_it<S: serde::Serializer>(
    qty: &Option<f64>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match qty {
        Some(q) if q.fract() == 0.0 && q.abs() < 9.0e15 => s.serialize_i64(*q as i64),
        Some(q) => s.serialize_f64(*q),
        None => s.serialize_none(),
    }
}

/// The topic device `device` publishes on: `scanbridge/<device>/scan`.
pub fn topic_for(device: &str) -> String {
    format!("scanbridge/{device}/scan")
}

/// The current UTC time as RFC 3339 with milliseconds, as scanners stamp `captured_at`.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    now.format(&fmt).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_serialises_to_the_canonical_payload_shape() {
        let mut p = ScanPayload::count("SC-01", "4006381333931", "WH-STOCK-A01", 12.0);
        p.captured_at = Some("2026-11-23T09:00:00.123Z".into());
        let v: serde_json::Value = serde_json::from_slice(&p.to_bytes()).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"code":"4006381333931","device":"SC-01","op":"count","qty":12,
                "location":"WH-STOCK-A01","symbology":"ean13","captured_at":"2026-11-23T09:00:00.123Z"})
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let ts = now_rfc3339();
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(ts.ends_with('Z'));
        assert!(
            time::OffsetDateTime::parse(&ts, &time::format_description::well_known::Rfc3339)
                .is_ok()
        );
    }

    #[test]
    fn devices_publish_under_their_own_topic_level() {
        assert_eq!(topic_for("SC-07"), "scanbridge/SC-07/scan");
    }
}
