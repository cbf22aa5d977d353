//! Which Odoo the relay talks to, and the model and field differences between 17, 18 and 19 the
//! flows depend on (pure). Detected from `common.version()` when `[odoo] version = "auto"`.
//!
//! | what                     | 17                      | 18                      | 19                               |
//! |--------------------------|-------------------------|-------------------------|----------------------------------|
//! | packaging barcodes       | `product.packaging(barcode, qty, product_id)` | same | `product.uom(barcode, product_id, uom_id)`; the pack size is the UoM's `relative_factor` |
//! | packages                 | `stock.quant.package`   | same                    | `stock.package`                  |
//! | JSON-2 (`/json/2/...`)   | no                      | no                      | yes                              |
//! | move line done quantity  | `quantity` + `picked`   | same                    | same                             |
//!
//! Odoo 16 and older record done quantities in `qty_done` and are refused.

use serde_json::Value;

/// An Odoo major version the relay supports (17 or later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct OdooVersion(u8);

/// Where packaging barcodes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packaging {
    /// `product.packaging` with `qty` (17, 18).
    ProductPackaging,
    /// `product.uom` with `uom_id` (19+).
    ProductUom,
}

/// The version cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("Odoo {0} is not supported: the relay needs Odoo 17, 18 or 19 (move lines with quantity and picked)")]
    TooOld(String),
    #[error("cannot read the Odoo version from common.version(): {0}; set [odoo] version = \"17\", \"18\" or \"19\"")]
    Unreadable(String),
}

impl OdooVersion {
    /// A major version; refuses what is older than 17.
    pub fn new(major: u8) -> Result<OdooVersion, VersionError> {
        if major < 17 {
            return Err(VersionError::TooOld(major.to_string()));
        }
        Ok(OdooVersion(major))
    }

    /// Reads `common.version()`: `server_version_info[0]`, else the leading number of
    /// `server_serie` (also `saas~18.2`).
    pub fn from_version_info(info: &Value) -> Result<OdooVersion, VersionError> {
        let major = info
            .get("server_version_info")
            .and_then(|v| v.get(0))
            .and_then(Value::as_u64)
            .or_else(|| {
                let serie = info.get("server_serie").and_then(Value::as_str)?;
                let serie = serie.trim_start_matches("saas~");
                serie.split('.').next()?.parse().ok()
            })
            .ok_or_else(|| VersionError::Unreadable(info.to_string()))?;
        OdooVersion::new(u8::try_from(major).unwrap_or(u8::MAX))
    }

    pub fn major(self) -> u8 {
        self.0
    }

    pub fn packaging(self) -> Packaging {
        if self.0 >= 19 {
            Packaging::ProductUom
        } else {
            Packaging::ProductPackaging
        }
    }

    /// The package model (`result_package_id` of move lines).
    pub fn package_model(self) -> &'static str {
        if self.0 >= 19 {
            "stock.package"
        } else {
            "stock.quant.package"
        }
    }

    pub fn has_json2(self) -> bool {
        self.0 >= 19
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_major_version_comes_from_version_info_or_the_serie() {
        let v17 = json!({"server_version":"17.0","server_version_info":[17,0,0,"final",0,""],"server_serie":"17.0","protocol_version":1});
        assert_eq!(
            OdooVersion::from_version_info(&v17).map(OdooVersion::major),
            Ok(17)
        );
        let saas = json!({"server_serie":"saas~18.2"});
        assert_eq!(
            OdooVersion::from_version_info(&saas).map(OdooVersion::major),
            Ok(18)
        );
        assert!(OdooVersion::from_version_info(&json!({})).is_err());
    }

    #[test]
    fn odoo_16_is_refused_and_19_moves_packaging_to_product_uom() {
        assert!(matches!(
            OdooVersion::from_version_info(&json!({"server_version_info":[16,0]})),
            Err(VersionError::TooOld(_))
        ));
        let v19 = OdooVersion::new(19).expect("19");
        assert_eq!(v19.packaging(), Packaging::ProductUom);
        assert_eq!(v19.package_model(), "stock.package");
        assert!(v19.has_json2());
        let v18 = OdooVersion::new(18).expect("18");
        assert_eq!(v18.packaging(), Packaging::ProductPackaging);
        assert!(!v18.has_json2());
    }
}
