//! The flow-related keys of the relay's `[odoo]` section, validated: which API to speak
//! (`api`), which Odoo version to expect (`version`), how hard to push (`max_concurrency`,
//! `max_rps`), the backorder choice per station (`[[odoo.stations]]`) and the PLC tags mapped
//! to a field write (`[[odoo.readings]]`).
//!
//! ```toml
//! [odoo]
//! api = "jsonrpc"            # or "json2" (Odoo 19+: POST /json/2/<model>/<method>, bearer key)
//! version = "auto"           # or "17" | "18" | "19"; auto = ask common.version once
//! max_concurrency = 4        # sites pushed in parallel (one site is always strictly in order)
//! max_rps = 50               # Odoo calls per second, all sites together
//! [[odoo.stations]]
//! site = "WH01"
//! device = "SC-07"
//! backorder = false          # validate without a backorder (default true: create one)
//! [[odoo.readings]]
//! tag = "scale1.weight"
//! model = "stock.picking"
//! field = "shipping_weight"
//! device = "SC-07"           # optional: the scanner whose open picking gets the value
//! ```
//!
//! `config.rs` deserialises the raw keys and calls [`build`]; errors name the key.

use serde::Deserialize;

/// Transport towards Odoo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST /jsonrpc`, `object.execute_kw` (17, 18, 19).
    JsonRpc,
    /// `POST /json/2/<model>/<method>` with a bearer API key (19+).
    Json2,
}

/// The Odoo major version, or detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionChoice {
    Auto,
    Fixed(u8),
}

/// Backorder choice of one station (site + device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StationRule {
    pub site: String,
    pub device: String,
    /// true: validating a short picking creates a backorder; false: the rest is cancelled.
    pub backorder: bool,
}

/// A PLC tag mapped to a field write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadingRule {
    pub tag: String,
    /// The model written; `stock.picking` (the open picking) is the one supported target.
    pub model: String,
    pub field: String,
    /// The device whose open picking is written; default: the reading's own device.
    pub device: Option<String>,
}

/// The validated flow settings of `[odoo]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowSettings {
    pub api: Api,
    pub version: VersionChoice,
    pub max_concurrency: usize,
    pub max_rps: f64,
    pub stations: Vec<StationRule>,
    pub readings: Vec<ReadingRule>,
}

impl Default for FlowSettings {
    fn default() -> Self {
        FlowSettings {
            api: Api::JsonRpc,
            version: VersionChoice::Auto,
            max_concurrency: 4,
            max_rps: 50.0,
            stations: Vec::new(),
            readings: Vec::new(),
        }
    }
}

impl FlowSettings {
    /// Whether validating on this station creates a backorder (default: yes, as Odoo's
    /// "Create Backorder" button).
    pub fn backorder(&self, site: &str, device: &str) -> bool {
        self.stations
            .iter()
            .find(|s| s.site == site && s.device == device)
            .is_none_or(|s| s.backorder)
    }

    /// The rule for a PLC tag, if mapped.
    pub fn reading(&self, tag: &str) -> Option<&ReadingRule> {
        self.readings.iter().find(|r| r.tag == tag)
    }
}

/// `[[odoo.stations]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStation {
    site: String,
    device: String,
    backorder: Option<bool>,
}

/// `[[odoo.readings]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReading {
    tag: String,
    model: String,
    field: String,
    device: Option<String>,
}

/// The raw flow keys of `[odoo]`.
#[derive(Debug, Default)]
pub struct RawFlowKeys {
    pub api: Option<String>,
    pub version: Option<String>,
    pub max_concurrency: Option<u64>,
    pub max_rps: Option<f64>,
    pub stations: Vec<RawStation>,
    pub readings: Vec<RawReading>,
}

/// A flow setting that is wrong: the dotted key and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SettingError {
    pub key: String,
    pub message: String,
}

fn err(key: &str, message: impl Into<String>) -> SettingError {
    SettingError {
        key: key.to_string(),
        message: message.into(),
    }
}

/// Validates the raw keys.
pub fn build(raw: RawFlowKeys) -> Result<FlowSettings, SettingError> {
    let api = match raw.api.as_deref() {
        None | Some("jsonrpc") => Api::JsonRpc,
        Some("json2") => Api::Json2,
        Some(other) => {
            return Err(err(
                "odoo.api",
                format!("{other:?} is not \"jsonrpc\" or \"json2\""),
            ))
        }
    };
    let version = match raw.version.as_deref() {
        None | Some("auto") => VersionChoice::Auto,
        Some("17") => VersionChoice::Fixed(17),
        Some("18") => VersionChoice::Fixed(18),
        Some("19") => VersionChoice::Fixed(19),
        Some(other) => {
            return Err(err(
                "odoo.version",
                format!("{other:?} is not \"auto\", \"17\", \"18\" or \"19\""),
            ))
        }
    };
    if api == Api::Json2 && matches!(version, VersionChoice::Fixed(v) if v < 19) {
        return Err(err(
            "odoo.api",
            "\"json2\" needs Odoo 19 or later; use api = \"jsonrpc\" for 17 and 18",
        ));
    }
    let max_concurrency = match raw.max_concurrency {
        None => 4,
        Some(0) => return Err(err("odoo.max_concurrency", "must be at least 1")),
        Some(n) => usize::try_from(n.min(1024)).unwrap_or(1024),
    };
    let max_rps = match raw.max_rps {
        None => 50.0,
        Some(r) if r.is_finite() && r > 0.0 => r,
        Some(r) => {
            return Err(err(
                "odoo.max_rps",
                format!("{r} must be a number of calls per second above 0"),
            ))
        }
    };
    let mut stations = Vec::new();
    for s in raw.stations {
        if s.site.is_empty() || s.device.is_empty() {
            return Err(err(
                "odoo.stations",
                "every [[odoo.stations]] needs a site and a device",
            ));
        }
        stations.push(StationRule {
            site: s.site,
            device: s.device,
            backorder: s.backorder.unwrap_or(true),
        });
    }
    let mut readings = Vec::new();
    for r in raw.readings {
        if r.model != "stock.picking" {
            return Err(err(
                "odoo.readings",
                format!(
                    "tag {}: model {:?} is not supported; readings are written onto the open picking (model = \"stock.picking\")",
                    r.tag, r.model
                ),
            ));
        }
        if r.field.is_empty() || r.tag.is_empty() {
            return Err(err(
                "odoo.readings",
                "every [[odoo.readings]] needs a tag and a field",
            ));
        }
        if readings.iter().any(|x: &ReadingRule| x.tag == r.tag) {
            return Err(err(
                "odoo.readings",
                format!("tag {} is mapped twice", r.tag),
            ));
        }
        readings.push(ReadingRule {
            tag: r.tag,
            model: r.model,
            field: r.field,
            device: r.device.filter(|d| !d.is_empty()),
        });
    }
    Ok(FlowSettings {
        api,
        version,
        max_concurrency,
        max_rps,
        stations,
        readings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_keys_give_jsonrpc_auto_four_sites_and_fifty_calls_per_second() {
        let s = build(RawFlowKeys::default()).expect("valid");
        assert_eq!(s, FlowSettings::default());
        assert!(s.backorder("WH01", "SC-01"));
    }

    #[test]
    fn a_station_can_refuse_backorders_and_readings_map_tags() {
        let raw = RawFlowKeys {
            stations: vec![RawStation {
                site: "WH01".into(),
                device: "SC-07".into(),
                backorder: Some(false),
            }],
            readings: vec![RawReading {
                tag: "scale1.weight".into(),
                model: "stock.picking".into(),
                field: "shipping_weight".into(),
                device: Some("SC-07".into()),
            }],
            ..RawFlowKeys::default()
        };
        let s = build(raw).expect("valid");
        assert!(!s.backorder("WH01", "SC-07"));
        assert!(s.backorder("WH02", "SC-07"));
        assert_eq!(
            s.reading("scale1.weight").map(|r| r.field.as_str()),
            Some("shipping_weight")
        );
    }

    fn parse(odoo_extra: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("key"), "k").expect("key");
        let text = format!(
            "listen = \"127.0.0.1:8443\"\nstate_dir = \"s\"\n[tls]\nserver_cert = \"a\"\nserver_key = \"b\"\nclient_ca = \"c\"\n[odoo]\nurl = \"http://127.0.0.1:8069\"\ndatabase = \"d\"\nlogin = \"l\"\napi_key_file = \"key\"\n{odoo_extra}"
        );
        crate::config::Config::parse(&text, &dir.path().join("relay.toml"), dir.path())
    }

    #[test]
    fn the_relay_config_carries_stations_readings_and_limits_from_the_odoo_section() {
        let config = parse(
            "api = \"json2\"\nversion = \"19\"\nmax_concurrency = 8\nmax_rps = 20\n[[odoo.stations]]\nsite = \"WH01\"\ndevice = \"SC-07\"\nbackorder = false\n[[odoo.readings]]\ntag = \"scale1.weight\"\nmodel = \"stock.picking\"\nfield = \"shipping_weight\"\n",
        )
        .expect("valid");
        let flows = &config.odoo.flows;
        assert_eq!(
            (flows.api, flows.version),
            (Api::Json2, VersionChoice::Fixed(19))
        );
        assert_eq!((flows.max_concurrency, flows.max_rps), (8, 20.0));
        assert!(!flows.backorder("WH01", "SC-07"));
        assert_eq!(flows.readings.len(), 1);
        let err = parse("api = \"xmlrpc\"\n").expect_err("bad api");
        assert!(err.to_string().contains("odoo.api"), "{err}");
        assert!(err.to_string().contains("line 12"), "{err}");
        let err = parse("[[odoo.stations]]\nsite = \"WH01\"\ndevise = \"x\"\n").expect_err("typo");
        assert!(err.to_string().contains("devise"), "{err}");
    }

    #[test]
    fn json2_with_an_older_version_and_bad_values_are_refused_naming_the_key() {
        let raw = RawFlowKeys {
            api: Some("json2".into()),
            version: Some("17".into()),
            ..RawFlowKeys::default()
        };
        assert_eq!(build(raw).expect_err("json2 on 17").key, "odoo.api");
        let raw = RawFlowKeys {
            max_rps: Some(0.0),
            ..RawFlowKeys::default()
        };
        assert_eq!(build(raw).expect_err("zero").key, "odoo.max_rps");
        let raw = RawFlowKeys {
            version: Some("16".into()),
            ..RawFlowKeys::default()
        };
        assert_eq!(build(raw).expect_err("16").key, "odoo.version");
    }
}
