//! The Odoo major version the simulator impersonates (17, 18 or 19) and every behaviour that
//! differs between them: the `common.version()` answer, the JSON-RPC error `code`, the wording of
//! method errors, and the product "storable" field (`detailed_type` in 17, `is_storable` in 18+).

use std::fmt;
use std::str::FromStr;

/// Which Odoo release the simulator answers as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OdooVersion {
    /// Odoo 17.0: `detailed_type`, JSON-RPC error code 200, old method-error wording.
    V17,
    /// Odoo 18.0: `is_storable`, JSON-RPC error code 200, `model.method` wording.
    V18,
    /// Odoo 19.0: `is_storable`, JSON-RPC error code 0, `model.method` wording.
    V19,
}

/// A `--odoo-version` value that is not 17, 18 or 19.
#[derive(Debug, thiserror::Error)]
#[error("unsupported Odoo version {0:?}: use 17, 18 or 19")]
pub struct UnsupportedVersion(pub String);

impl FromStr for OdooVersion {
    type Err = UnsupportedVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "17" | "17.0" => Ok(Self::V17),
            "18" | "18.0" => Ok(Self::V18),
            "19" | "19.0" => Ok(Self::V19),
            other => Err(UnsupportedVersion(other.to_owned())),
        }
    }
}

impl fmt::Display for OdooVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.major())
    }
}

impl OdooVersion {
    /// The major version number.
    pub fn major(self) -> u32 {
        match self {
            Self::V17 => 17,
            Self::V18 => 18,
            Self::V19 => 19,
        }
    }

    /// `error.code` of a JSON-RPC error envelope (`odoo/http.py` JsonRPCDispatcher.handle_error).
    pub fn jsonrpc_error_code(self) -> i64 {
        match self {
            Self::V17 | Self::V18 => 200,
            Self::V19 => 0,
        }
    }

    /// True from 18 on, where products carry `is_storable` instead of `detailed_type`.
    pub fn has_is_storable(self) -> bool {
        self >= Self::V18
    }

    /// The answer of `common.version()` (`odoo/service/common.py` exp_version).
    pub fn version_info(self) -> serde_json::Value {
        let serie = format!("{}.0", self.major());
        serde_json::json!({
            "server_version": serie,
            "server_version_info": [self.major(), 0, 0, "final", 0, ""],
            "server_serie": serie,
            "protocol_version": 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_with_or_without_minor() {
        assert_eq!("17".parse::<OdooVersion>().ok(), Some(OdooVersion::V17));
        assert_eq!("18.0".parse::<OdooVersion>().ok(), Some(OdooVersion::V18));
        assert!("16".parse::<OdooVersion>().is_err());
    }

    #[test]
    fn error_code_is_zero_only_in_19() {
        assert_eq!(OdooVersion::V17.jsonrpc_error_code(), 200);
        assert_eq!(OdooVersion::V18.jsonrpc_error_code(), 200);
        assert_eq!(OdooVersion::V19.jsonrpc_error_code(), 0);
    }
}
