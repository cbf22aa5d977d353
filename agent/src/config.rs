//! The agent's configuration: one typed [`Config`], parsed from TOML and validated completely
//! before any socket opens or any file is written.
//!
//! Every mistake is reported as a [`ConfigError`] that names the key (dotted path such as
//! `relay.client_cert` or `mqtt[0].topics`) and the line in the file, so a site technician can go
//! straight to it. Relative paths are resolved against the directory holding the config file.
//! `scanbridge-agent check-config` prints these messages; `run` refuses to start with them (exit 64).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use scanbridge_protocol::{is_valid_site_id, Operation};
use serde::Deserialize;
use toml::Spanned;

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: line {line}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        line: usize,
        message: String,
    },
}

impl ConfigError {
    /// The dotted key the error is about (empty for read errors).
    pub fn key(&self) -> &str {
        match self {
            ConfigError::Read { .. } => "",
            ConfigError::Invalid { key, .. } => key,
        }
    }

    /// The 1-based line the error points at (0 for read errors).
    pub fn line(&self) -> usize {
        match self {
            ConfigError::Read { .. } => 0,
            ConfigError::Invalid { line, .. } => *line,
        }
    }
}

/// The validated agent configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Site id, as in the client certificate.
    pub site: String,
    /// Name of this agent instance (default: host name).
    pub agent_id: String,
    /// Directory holding `agent.redb`.
    pub state_dir: PathBuf,
    pub store: StoreConfig,
    pub relay: RelayConfig,
    pub mqtt: Vec<MqttConfig>,
    /// `[[serial]]`: serial / USB-CDC scanner ports.
    pub serial: Vec<SerialConfig>,
    pub stations: Vec<Station>,
    /// `[[tags]]`: PLC tag ids (as a gateway publishes them) mapped to reading tags.
    pub tags: Vec<TagMapping>,
    /// `[status]`: the local status API.
    pub status: StatusConfig,
}

impl Config {
    /// Path of the redb store file.
    pub fn store_path(&self) -> PathBuf {
        self.state_dir.join("agent.redb")
    }
}

/// `[store]`: buffer cap and group-commit tuning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Stop accepting new events when the backlog reaches this many bytes.
    pub max_bytes: u64,
    /// How long the first item of a transaction may wait for company.
    pub commit_linger: Duration,
    /// Most events committed in one transaction.
    pub commit_max_events: usize,
    /// How long the ids of committed scans are kept for dedupe (`dedupe_window_secs`).
    pub dedupe_window: Duration,
    /// Most scan ids kept for dedupe, whatever their age (`dedupe_max_ids`).
    pub dedupe_max_ids: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_bytes: 1 << 30,
            commit_linger: Duration::from_millis(2),
            commit_max_events: 4096,
            dedupe_window: crate::store::dedupe::DEFAULT_WINDOW,
            dedupe_max_ids: crate::store::dedupe::DEFAULT_MAX_IDS,
        }
    }
}

/// `[status]`: the local status API (`/healthz`, `/metrics`, `/status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusConfig {
    /// Where it listens; `None` when disabled (`listen = ""`).
    pub listen: Option<std::net::SocketAddr>,
}

/// Default `[status] listen`.
pub const DEFAULT_STATUS_LISTEN: &str = "127.0.0.1:9187";

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            listen: DEFAULT_STATUS_LISTEN.parse().ok(),
        }
    }
}

/// `[relay]`: where and how to forward.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Base URL, always `https`.
    pub url: reqwest::Url,
    pub ca_cert: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub batch_max_events: usize,
    pub heartbeat: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

/// One `[[mqtt]]` broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqttConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub topics: Vec<String>,
    /// `[mqtt.tls]`: connect with TLS (default port 8883); `None` for plain MQTT (1883).
    pub tls: Option<MqttTls>,
    /// `username`, sent with the CONNECT.
    pub username: Option<String>,
    /// The first line of `password_file` (read at validation; never logged).
    pub password: Option<Password>,
    /// `[[mqtt.formats]]`: payload format per topic filter, first match wins; default JSON.
    pub formats: Vec<FormatRule>,
}

/// `[mqtt.tls]`: the CA that signed the broker's certificate and an optional client identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttTls {
    pub ca_cert: PathBuf,
    /// Client certificate and key, when the broker requires one (`require_certificate true`).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// A broker password. Its `Debug` output is redacted so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

/// One `[[mqtt.formats]]` rule: payloads on topics matching `filter` are decoded as `format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatRule {
    pub filter: String,
    pub format: PayloadFormat,
    /// The topic level (0-based) naming the device when the payload does not
    /// (`scanners/SC-01/raw` with `device_level = 1` → `SC-01`). Default 1.
    pub device_level: usize,
}

/// How an MQTT payload is decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PayloadFormat {
    /// The canonical JSON scan (`{"code": ...}`), see docs/payloads.md.
    #[default]
    Json,
    /// The whole payload is one barcode (CR/LF trimmed, optional AIM prefix).
    Text,
    /// PLC tag JSON as Kepware's IoT Gateway publishes it (`{"timestamp":..,"values":[{id,v,q,t}]}`).
    Kepware,
}

impl PayloadFormat {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadFormat::Json => "json",
            PayloadFormat::Text => "text",
            PayloadFormat::Kepware => "kepware",
        }
    }
}

/// Default `device_level` of a format rule (and of topics no rule matches).
pub const DEFAULT_DEVICE_LEVEL: usize = 1;

/// One `[[tags]]` entry: a PLC tag id as the gateway publishes it, and what it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagMapping {
    /// The id in the payload, e.g. `Channel1.Scale1.Weight`.
    pub id: String,
    /// The reading's tag name, e.g. `scale1.weight` (the relay maps it to Odoo).
    pub tag: String,
    pub unit: Option<String>,
    /// The device the reading is attributed to; default: the topic's device level.
    pub device: Option<String>,
}

/// One `[[stations]]` entry: defaults for a device's scans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Station {
    pub device: String,
    pub op: Operation,
    pub location: Option<String>,
}

/// Parity of a serial port (`[[serial]] parity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerialParity {
    None,
    Even,
    Odd,
}

/// One `[[serial]]` port: a scanner sending one barcode per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialConfig {
    /// Short name in logs, status and event sources (`Source::Serial { port }`).
    pub name: String,
    /// Device path; prefer a stable `/dev/serial/by-id/...` link.
    pub path: PathBuf,
    pub baud: u32,
    pub parity: SerialParity,
    /// 5 to 8.
    pub data_bits: u8,
    /// 1 or 2.
    pub stop_bits: u8,
    pub framing: crate::sources::serial::framing::Framing,
    /// `framing = "idle"`: quiet time that ends a line.
    pub idle_gap: Duration,
    /// Longest line in bytes; longer ones are quarantined.
    pub max_line: usize,
    /// Device name of the scanner (station lookup, `Event::device`).
    pub device: String,
    /// Whether lines start with an AIM symbology identifier (`]C1`, `]E0`, ...).
    pub aim: bool,
}

// ---- raw TOML shape -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    site: Spanned<String>,
    agent_id: Option<Spanned<String>>,
    state_dir: Spanned<String>,
    store: Option<RawStore>,
    relay: RawRelay,
    #[serde(default)]
    mqtt: Vec<RawMqtt>,
    #[serde(default)]
    serial: Vec<RawSerial>,
    #[serde(default)]
    stations: Vec<RawStation>,
    #[serde(default)]
    tags: Vec<RawTag>,
    status: Option<RawStatus>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    listen: Option<Spanned<String>>,
    allow_remote: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    max_bytes: Option<Spanned<u64>>,
    commit_linger_ms: Option<Spanned<u64>>,
    commit_max_events: Option<Spanned<u64>>,
    dedupe_window_secs: Option<Spanned<u64>>,
    dedupe_max_ids: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelay {
    url: Spanned<String>,
    ca_cert: Spanned<String>,
    client_cert: Spanned<String>,
    client_key: Spanned<String>,
    batch_max_events: Option<Spanned<u64>>,
    heartbeat_secs: Option<Spanned<u64>>,
    retry_initial_ms: Option<Spanned<u64>>,
    retry_max_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    name: Spanned<String>,
    host: Spanned<String>,
    port: Option<Spanned<u16>>,
    client_id: Spanned<String>,
    topics: Spanned<Vec<Spanned<String>>>,
    tls: Option<Spanned<RawMqttTls>>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    #[serde(default)]
    formats: Vec<RawFormat>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqttTls {
    ca_cert: Spanned<String>,
    client_cert: Option<Spanned<String>>,
    client_key: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFormat {
    filter: Spanned<String>,
    format: Spanned<String>,
    device_level: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTag {
    id: Spanned<String>,
    tag: Spanned<String>,
    unit: Option<Spanned<String>>,
    device: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSerial {
    name: Spanned<String>,
    path: Spanned<String>,
    baud: Option<Spanned<u64>>,
    parity: Option<Spanned<String>>,
    data_bits: Option<Spanned<u64>>,
    stop_bits: Option<Spanned<u64>>,
    framing: Option<Spanned<String>>,
    idle_gap_ms: Option<Spanned<u64>>,
    max_line: Option<Spanned<u64>>,
    device: Spanned<String>,
    aim: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStation {
    device: Spanned<String>,
    op: Spanned<String>,
    location: Option<Spanned<String>>,
}

/// Reads, parses and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse(&text, path, &base)
}

/// Parses and validates configuration `text`; `path` names the file in messages, relative paths
/// resolve against `base`.
pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
    let v = Validator { text, path, base };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        let line = line_of(text, offset);
        let key = key_from_message(e.message()).unwrap_or_else(|| key_at_line(text, line));
        ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            line,
            message: e.message().trim().to_string(),
        }
    })?;
    v.validate(raw)
}

struct Validator<'a> {
    text: &'a str,
    path: &'a Path,
    base: &'a Path,
}

impl Validator<'_> {
    fn err<T>(
        &self,
        key: impl Into<String>,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.into(),
            line: line_of(self.text, span.start),
            message: message.into(),
        })
    }

    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        if !is_valid_site_id(raw.site.get_ref()) {
            return self.err(
                "site",
                raw.site.span(),
                format!(
                    "{:?} is not a valid site id (1 to 32 characters of A-Z a-z 0-9 - _)",
                    raw.site.get_ref()
                ),
            );
        }
        let agent_id = match &raw.agent_id {
            Some(a) => {
                let s = a.get_ref();
                if s.is_empty() || s.len() > 64 || s.chars().any(char::is_control) {
                    return self.err("agent_id", a.span(), "must be 1 to 64 printable characters");
                }
                s.clone()
            }
            None => default_agent_id(),
        };
        let state_dir = self.path_value(&raw.state_dir);
        self.check_state_dir(&state_dir, raw.state_dir.span())?;

        let store = self.validate_store(raw.store)?;
        let relay = self.validate_relay(raw.relay)?;

        if raw.mqtt.is_empty() && raw.serial.is_empty() {
            return self.err(
                "mqtt",
                0..0,
                "no source configured: add at least one [[mqtt]] or [[serial]] table",
            );
        }
        let mut names = HashSet::new();
        let mut mqtt = Vec::with_capacity(raw.mqtt.len());
        for (i, m) in raw.mqtt.into_iter().enumerate() {
            let k = |f: &str| format!("mqtt[{i}].{f}");
            let name = m.name.get_ref();
            if name.is_empty()
                || name.len() > 64
                || name.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return self.err(
                    k("name"),
                    m.name.span(),
                    "must be 1 to 64 characters without spaces",
                );
            }
            if !names.insert(name.clone()) {
                return self.err(
                    k("name"),
                    m.name.span(),
                    format!("broker name {name:?} is used twice; names must be unique"),
                );
            }
            if m.host.get_ref().trim().is_empty() {
                return self.err(k("host"), m.host.span(), "must not be empty");
            }
            let port = match &m.port {
                Some(p) if *p.get_ref() == 0 => {
                    return self.err(k("port"), p.span(), "must be 1 to 65535")
                }
                Some(p) => *p.get_ref(),
                None if m.tls.is_some() => 8883,
                None => 1883,
            };
            let cid = m.client_id.get_ref();
            if cid.is_empty() || cid.len() > 256 || cid.chars().any(char::is_control) {
                return self.err(
                    k("client_id"),
                    m.client_id.span(),
                    "must be 1 to 256 printable characters, and stable across restarts",
                );
            }
            if m.topics.get_ref().is_empty() {
                return self.err(
                    k("topics"),
                    m.topics.span(),
                    "list at least one topic filter, e.g. [\"scanbridge/+/scan\"]",
                );
            }
            let mut topics = Vec::new();
            for t in m.topics.get_ref() {
                if let Err(why) = check_topic_filter(t.get_ref()) {
                    return self.err(
                        k("topics"),
                        t.span(),
                        format!("{:?} is not a valid MQTT topic filter: {why}", t.get_ref()),
                    );
                }
                topics.push(t.get_ref().clone());
            }
            let (tls, username, password) = self.validate_mqtt_security(i, &m)?;
            let formats = self.validate_formats(i, &m.formats, &topics)?;
            mqtt.push(MqttConfig {
                name: name.clone(),
                host: m.host.get_ref().trim().to_string(),
                port,
                client_id: cid.clone(),
                topics,
                tls,
                username,
                password,
                formats,
            });
        }

        let mut devices = HashSet::new();
        let mut stations = Vec::with_capacity(raw.stations.len());
        for (i, s) in raw.stations.into_iter().enumerate() {
            let k = |f: &str| format!("stations[{i}].{f}");
            let device = s.device.get_ref();
            if device.is_empty() || device.chars().any(char::is_control) {
                return self.err(k("device"), s.device.span(), "must not be empty");
            }
            if !devices.insert(device.clone()) {
                return self.err(
                    k("device"),
                    s.device.span(),
                    format!("device {device:?} has two stations"),
                );
            }
            let Some(op) = Operation::parse(s.op.get_ref()) else {
                return self.err(
                    k("op"),
                    s.op.span(),
                    format!("{:?} is not an operation; use one of receive, pick, pack, ship, count, move", s.op.get_ref()),
                );
            };
            let location = match &s.location {
                Some(l) if l.get_ref().is_empty() => {
                    return self.err(
                        k("location"),
                        l.span(),
                        "must not be empty (leave the key out instead)",
                    )
                }
                Some(l) => Some(l.get_ref().clone()),
                None => None,
            };
            stations.push(Station {
                device: device.clone(),
                op,
                location,
            });
        }

        let serial = self.validate_serial(raw.serial, &mqtt)?;
        let status = self.validate_status(raw.status)?;

        let tags = self.validate_tags(raw.tags)?;

        Ok(Config {
            site: raw.site.into_inner(),
            agent_id,
            state_dir,
            store,
            relay,
            mqtt,
            serial,
            stations,
            tags,
            status,
        })
    }

    /// `[[serial]]` ports: names unique (also against `[[mqtt]]` names: both appear in status as
    /// sources), paths unique, line settings in range.
    fn validate_serial(
        &self,
        raw: Vec<RawSerial>,
        mqtt: &[MqttConfig],
    ) -> Result<Vec<SerialConfig>, ConfigError> {
        use crate::sources::serial::framing::Framing;
        let mut names: HashSet<String> = mqtt.iter().map(|m| m.name.clone()).collect();
        let mut paths = HashSet::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, r) in raw.into_iter().enumerate() {
            let k = |f: &str| format!("serial[{i}].{f}");
            let name = r.name.get_ref();
            if name.is_empty()
                || name.len() > 64
                || name.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return self.err(
                    k("name"),
                    r.name.span(),
                    "must be 1 to 64 characters without spaces",
                );
            }
            if !names.insert(name.clone()) {
                return self.err(
                    k("name"),
                    r.name.span(),
                    format!("source name {name:?} is used twice; names of [[mqtt]] and [[serial]] sources must be unique"),
                );
            }
            if r.path.get_ref().trim().is_empty() {
                return self.err(
                    k("path"),
                    r.path.span(),
                    "must name the device, e.g. /dev/serial/by-id/usb-...-if00 or /dev/ttyUSB0",
                );
            }
            let path = self.path_value(&r.path);
            if !paths.insert(path.clone()) {
                return self.err(
                    k("path"),
                    r.path.span(),
                    format!("{} is configured twice", path.display()),
                );
            }
            let num = |v: &Option<Spanned<u64>>,
                       key: &str,
                       default: u64,
                       min: u64,
                       max: u64|
             -> Result<u64, ConfigError> {
                match v {
                    None => Ok(default),
                    Some(s) if (min..=max).contains(s.get_ref()) => Ok(*s.get_ref()),
                    Some(s) => self.err(k(key), s.span(), format!("must be {min} to {max}")),
                }
            };
            let baud = num(&r.baud, "baud", 9600, 50, 4_000_000)?;
            let data_bits = num(&r.data_bits, "data_bits", 8, 5, 8)?;
            let stop_bits = num(&r.stop_bits, "stop_bits", 1, 1, 2)?;
            let idle_gap_ms = num(&r.idle_gap_ms, "idle_gap_ms", 50, 1, 10_000)?;
            let max_line = num(&r.max_line, "max_line", 256, 1, 65_536)?;
            let parity = match r.parity.as_ref().map(|p| (p.get_ref().as_str(), p.span())) {
                None | Some(("none", _)) => SerialParity::None,
                Some(("even", _)) => SerialParity::Even,
                Some(("odd", _)) => SerialParity::Odd,
                Some((other, span)) => {
                    return self.err(
                        k("parity"),
                        span,
                        format!("{other:?} is not a parity; use \"none\", \"even\" or \"odd\""),
                    )
                }
            };
            let framing = match &r.framing {
                None => Framing::Cr,
                Some(f) => match Framing::parse(f.get_ref()) {
                    Some(framing) => framing,
                    None => {
                        return self.err(
                            k("framing"),
                            f.span(),
                            format!(
                                "{:?} is not a framing; use \"cr\", \"lf\", \"crlf\" or \"idle\" (no terminator: a quiet gap of idle_gap_ms ends the line)",
                                f.get_ref()
                            ),
                        )
                    }
                },
            };
            let device = r.device.get_ref();
            if device.is_empty() || device.len() > 256 || device.chars().any(char::is_control) {
                return self.err(
                    k("device"),
                    r.device.span(),
                    "must be 1 to 256 printable characters (the scanner's device name, as in [[stations]])",
                );
            }
            out.push(SerialConfig {
                name: name.clone(),
                path,
                baud: baud as u32,
                parity,
                data_bits: data_bits as u8,
                stop_bits: stop_bits as u8,
                framing,
                idle_gap: Duration::from_millis(idle_gap_ms),
                max_line: max_line as usize,
                device: device.clone(),
                aim: r.aim.unwrap_or(true),
            });
        }
        Ok(out)
    }

    /// `[mqtt.tls]`, `username` and `password_file` of broker `i`.
    #[allow(clippy::type_complexity)]
    fn validate_mqtt_security(
        &self,
        i: usize,
        m: &RawMqtt,
    ) -> Result<(Option<MqttTls>, Option<String>, Option<Password>), ConfigError> {
        let k = |f: &str| format!("mqtt[{i}].{f}");
        let tls = match &m.tls {
            None => None,
            Some(t) => {
                let t = t.get_ref();
                let ca_cert = self.pem_file(&t.ca_cert, &k("tls.ca_cert"), PemKind::Certificate)?;
                let (client_cert, client_key) = match (&t.client_cert, &t.client_key) {
                    (None, None) => (None, None),
                    (Some(c), Some(key)) => (
                        Some(self.pem_file(c, &k("tls.client_cert"), PemKind::Certificate)?),
                        Some(self.pem_file(key, &k("tls.client_key"), PemKind::PrivateKey)?),
                    ),
                    (Some(c), None) => {
                        return self.err(
                            k("tls.client_cert"),
                            c.span(),
                            "set client_key too (the private key of this certificate)",
                        )
                    }
                    (None, Some(key)) => {
                        return self.err(
                            k("tls.client_key"),
                            key.span(),
                            "set client_cert too (the certificate of this key)",
                        )
                    }
                };
                Some(MqttTls {
                    ca_cert,
                    client_cert,
                    client_key,
                })
            }
        };
        let username = match &m.username {
            None => None,
            Some(u) => {
                let s = u.get_ref();
                if s.is_empty() || s.len() > 256 || s.chars().any(char::is_control) {
                    return self.err(
                        k("username"),
                        u.span(),
                        "must be 1 to 256 printable characters",
                    );
                }
                Some(s.clone())
            }
        };
        let password = match &m.password_file {
            None => None,
            Some(f) => {
                if username.is_none() {
                    return self.err(
                        k("password_file"),
                        f.span(),
                        "set username too (MQTT sends a password only with a username)",
                    );
                }
                let path = self.path_value(f);
                let text = match std::fs::read_to_string(&path) {
                    Ok(t) => t,
                    Err(e) => {
                        return self.err(
                            k("password_file"),
                            f.span(),
                            format!("cannot read {}: {e}", path.display()),
                        )
                    }
                };
                let first = text.lines().next().unwrap_or("").trim_end_matches('\r');
                if first.is_empty() {
                    return self.err(
                        k("password_file"),
                        f.span(),
                        format!(
                            "{} is empty; put the broker password on its first line",
                            path.display()
                        ),
                    );
                }
                Some(Password(first.to_string()))
            }
        };
        Ok((tls, username, password))
    }

    /// `[[mqtt.formats]]` of broker `i`: each filter valid and subscribed through `topics`.
    fn validate_formats(
        &self,
        i: usize,
        raw: &[RawFormat],
        topics: &[String],
    ) -> Result<Vec<FormatRule>, ConfigError> {
        let mut out = Vec::with_capacity(raw.len());
        for (j, f) in raw.iter().enumerate() {
            let k = |name: &str| format!("mqtt[{i}].formats[{j}].{name}");
            let filter = f.filter.get_ref();
            if let Err(why) = check_topic_filter(filter) {
                return self.err(
                    k("filter"),
                    f.filter.span(),
                    format!("{filter:?} is not a valid MQTT topic filter: {why}"),
                );
            }
            if !topics.iter().any(|t| filter_covers(t, filter)) {
                return self.err(
                    k("filter"),
                    f.filter.span(),
                    format!(
                        "{filter:?} is not covered by any of mqtt[{i}].topics {topics:?}; \
                         add it to topics so the agent subscribes to it"
                    ),
                );
            }
            let format = match f.format.get_ref().as_str() {
                "json" => PayloadFormat::Json,
                "text" => PayloadFormat::Text,
                "kepware" => PayloadFormat::Kepware,
                other => {
                    return self.err(
                        k("format"),
                        f.format.span(),
                        format!("{other:?} is not a payload format; use json, text or kepware"),
                    )
                }
            };
            let device_level = match &f.device_level {
                None => DEFAULT_DEVICE_LEVEL,
                Some(l) if *l.get_ref() <= 31 => *l.get_ref() as usize,
                Some(l) => {
                    return self.err(
                        k("device_level"),
                        l.span(),
                        "must be 0 to 31 (the topic level naming the device, counted from 0)",
                    )
                }
            };
            out.push(FormatRule {
                filter: filter.clone(),
                format,
                device_level,
            });
        }
        Ok(out)
    }

    /// `[[tags]]`: unique ids, non-empty names.
    fn validate_tags(&self, raw: Vec<RawTag>) -> Result<Vec<TagMapping>, ConfigError> {
        let mut ids = HashSet::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, t) in raw.into_iter().enumerate() {
            let k = |f: &str| format!("tags[{i}].{f}");
            let text = |v: &Spanned<String>, f: &str| -> Result<String, ConfigError> {
                let s = v.get_ref();
                if s.is_empty() || s.chars().count() > 256 || s.chars().any(char::is_control) {
                    self.err(k(f), v.span(), "must be 1 to 256 printable characters")
                } else {
                    Ok(s.clone())
                }
            };
            let id = text(&t.id, "id")?;
            if !ids.insert(id.clone()) {
                return self.err(
                    k("id"),
                    t.id.span(),
                    format!("tag id {id:?} is listed twice"),
                );
            }
            let tag = text(&t.tag, "tag")?;
            let unit = t.unit.as_ref().map(|u| text(u, "unit")).transpose()?;
            let device = t.device.as_ref().map(|d| text(d, "device")).transpose()?;
            out.push(TagMapping {
                id,
                tag,
                unit,
                device,
            });
        }
        Ok(out)
    }

    fn validate_status(&self, raw: Option<RawStatus>) -> Result<StatusConfig, ConfigError> {
        let Some(raw) = raw else {
            return Ok(StatusConfig::default());
        };
        let Some(listen) = raw.listen else {
            return Ok(StatusConfig::default());
        };
        match parse_status_listen(listen.get_ref(), raw.allow_remote.unwrap_or(false)) {
            Ok(listen) => Ok(StatusConfig { listen }),
            Err(message) => self.err("status.listen", listen.span(), message),
        }
    }

    fn validate_store(&self, raw: Option<RawStore>) -> Result<StoreConfig, ConfigError> {
        let mut out = StoreConfig::default();
        let Some(raw) = raw else { return Ok(out) };
        if let Some(v) = raw.max_bytes {
            if *v.get_ref() < 1 << 20 {
                return self.err(
                    "store.max_bytes",
                    v.span(),
                    "must be at least 1048576 (1 MiB)",
                );
            }
            out.max_bytes = *v.get_ref();
        }
        if let Some(v) = raw.commit_linger_ms {
            if *v.get_ref() > 1000 {
                return self.err(
                    "store.commit_linger_ms",
                    v.span(),
                    "must be 0 to 1000 milliseconds",
                );
            }
            out.commit_linger = Duration::from_millis(*v.get_ref());
        }
        if let Some(v) = raw.commit_max_events {
            if !(1..=100_000).contains(v.get_ref()) {
                return self.err("store.commit_max_events", v.span(), "must be 1 to 100000");
            }
            out.commit_max_events = *v.get_ref() as usize;
        }
        if let Some(v) = raw.dedupe_window_secs {
            if !(60..=365 * 24 * 3600).contains(v.get_ref()) {
                return self.err(
                    "store.dedupe_window_secs",
                    v.span(),
                    "must be 60 to 31536000 seconds (1 minute to 1 year)",
                );
            }
            out.dedupe_window = Duration::from_secs(*v.get_ref());
        }
        if let Some(v) = raw.dedupe_max_ids {
            if !(1_000..=100_000_000).contains(v.get_ref()) {
                return self.err(
                    "store.dedupe_max_ids",
                    v.span(),
                    "must be 1000 to 100000000",
                );
            }
            out.dedupe_max_ids = *v.get_ref();
        }
        Ok(out)
    }

    fn validate_relay(&self, raw: RawRelay) -> Result<RelayConfig, ConfigError> {
        let url = match reqwest::Url::parse(raw.url.get_ref()) {
            Ok(u) if u.scheme() == "https" && u.host().is_some() => u,
            Ok(_) => {
                return self.err(
                    "relay.url",
                    raw.url.span(),
                    "must be an https:// URL with a host (the relay has no plaintext listener)",
                )
            }
            Err(e) => return self.err("relay.url", raw.url.span(), format!("not a URL: {e}")),
        };
        let ca_cert = self.pem_file(&raw.ca_cert, "relay.ca_cert", PemKind::Certificate)?;
        let client_cert =
            self.pem_file(&raw.client_cert, "relay.client_cert", PemKind::Certificate)?;
        let client_key = self.pem_file(&raw.client_key, "relay.client_key", PemKind::PrivateKey)?;
        if let Err(e) = crate::tls::client_config(&ca_cert, &client_cert, &client_key) {
            return self.err(
                "relay.client_key",
                raw.client_key.span(),
                format!("the site certificate and key are not usable together: {e}"),
            );
        }
        let num = |v: &Option<Spanned<u64>>,
                   key: &str,
                   default: u64,
                   min: u64,
                   max: u64|
         -> Result<u64, ConfigError> {
            match v {
                None => Ok(default),
                Some(s) if (min..=max).contains(s.get_ref()) => Ok(*s.get_ref()),
                Some(s) => self.err(key, s.span(), format!("must be {min} to {max}")),
            }
        };
        let batch_max_events = num(
            &raw.batch_max_events,
            "relay.batch_max_events",
            1000,
            1,
            10_000,
        )?;
        let heartbeat = num(&raw.heartbeat_secs, "relay.heartbeat_secs", 30, 1, 86_400)?;
        let retry_initial = num(
            &raw.retry_initial_ms,
            "relay.retry_initial_ms",
            200,
            1,
            3_600_000,
        )?;
        let retry_max = num(
            &raw.retry_max_ms,
            "relay.retry_max_ms",
            30_000,
            1,
            3_600_000,
        )?;
        if retry_max < retry_initial {
            let span = raw.retry_max_ms.as_ref().map(Spanned::span).unwrap_or(0..0);
            return self.err(
                "relay.retry_max_ms",
                span,
                format!("must not be smaller than relay.retry_initial_ms ({retry_initial})"),
            );
        }
        Ok(RelayConfig {
            url,
            ca_cert,
            client_cert,
            client_key,
            batch_max_events: batch_max_events as usize,
            heartbeat: Duration::from_secs(heartbeat),
            retry_initial: Duration::from_millis(retry_initial),
            retry_max: Duration::from_millis(retry_max),
        })
    }

    fn path_value(&self, v: &Spanned<String>) -> PathBuf {
        let p = Path::new(v.get_ref());
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn check_state_dir(&self, dir: &Path, span: std::ops::Range<usize>) -> Result<(), ConfigError> {
        if dir.as_os_str().is_empty() {
            return self.err("state_dir", span, "must not be empty");
        }
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => self.err(
                "state_dir",
                span,
                format!("{} exists but is not a directory", dir.display()),
            ),
            Err(_) => match dir.parent() {
                Some(parent) if parent.as_os_str().is_empty() || parent.is_dir() => Ok(()),
                _ => self.err(
                    "state_dir",
                    span,
                    format!(
                        "{} does not exist and neither does its parent directory",
                        dir.display()
                    ),
                ),
            },
        }
    }

    fn pem_file(
        &self,
        v: &Spanned<String>,
        key: &str,
        kind: PemKind,
    ) -> Result<PathBuf, ConfigError> {
        let path = self.path_value(v);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                return self.err(
                    key,
                    v.span(),
                    format!("cannot read {}: {e}", path.display()),
                )
            }
        };
        let ok = match kind {
            PemKind::Certificate => crate::tls::parse_certs(&bytes).map(|c| !c.is_empty()),
            PemKind::PrivateKey => crate::tls::parse_key(&bytes).map(|_| true),
        };
        match ok {
            Ok(true) => Ok(path),
            Ok(false) => self.err(
                key,
                v.span(),
                format!("{} holds no PEM certificate", path.display()),
            ),
            Err(e) => self.err(key, v.span(), format!("{}: {e}", path.display())),
        }
    }
}

enum PemKind {
    Certificate,
    PrivateKey,
}

/// Parses `[status] listen`: `""` disables; otherwise `IP:port`, loopback unless `allow_remote`.
pub fn parse_status_listen(
    value: &str,
    allow_remote: bool,
) -> Result<Option<std::net::SocketAddr>, String> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let addr: std::net::SocketAddr = v.parse().map_err(|_| {
        format!("{v:?} is not an IP:port address such as \"{DEFAULT_STATUS_LISTEN}\" (use \"\" to disable)")
    })?;
    if !allow_remote && !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address; the status API has no authentication, so it listens on 127.0.0.1 unless you also set allow_remote = true"
        ));
    }
    Ok(Some(addr))
}

/// Only the `[status] listen` address of the config file at `path`, for `scanbridge-agent
/// status`: it does not validate (or read) anything else, so it works for a user who may not
/// read the site key.
pub fn status_listen_from_file(path: &Path) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |line: usize, message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        key: "status.listen".into(),
        line,
        message,
    };
    let value: toml::Table = toml::from_str(&text).map_err(|e| {
        invalid(
            line_of(&text, e.span().map(|s| s.start).unwrap_or(0)),
            e.message().trim().to_string(),
        )
    })?;
    let Some(status) = value.get("status").and_then(toml::Value::as_table) else {
        return Ok(StatusConfig::default().listen);
    };
    let allow_remote = status
        .get("allow_remote")
        .and_then(toml::Value::as_bool)
        .unwrap_or(false);
    match status.get("listen") {
        None => Ok(StatusConfig::default().listen),
        Some(toml::Value::String(s)) => {
            parse_status_listen(s, allow_remote).map_err(|m| invalid(0, m))
        }
        Some(_) => Err(invalid(
            0,
            "must be a string such as \"127.0.0.1:9187\"".into(),
        )),
    }
}

/// 1-based line number of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Extracts the key name from a toml/serde message such as "unknown field `foo`, expected ...".
fn key_from_message(message: &str) -> Option<String> {
    for prefix in [
        "unknown field `",
        "missing field `",
        "duplicate key `",
        "duplicate field `",
    ] {
        if let Some(rest) = message.find(prefix).map(|i| &message[i + prefix.len()..]) {
            return rest.split('`').next().map(str::to_string);
        }
    }
    None
}

/// The dotted key written on `line` (1-based), prefixed with the table header above it.
pub fn key_at_line(text: &str, line: usize) -> String {
    let mut table = String::new();
    let mut key = String::new();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('[') {
            table = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            key.clear();
        } else if let Some((k, _)) = t.split_once('=') {
            key = k.trim().trim_matches('"').to_string();
        }
        if i + 1 == line {
            if !t.starts_with('[') && !t.contains('=') {
                key.clear();
            }
            break;
        }
    }
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

/// Whether subscription filter `sub` receives every topic that filter `f` matches.
pub fn filter_covers(sub: &str, f: &str) -> bool {
    let mut s = sub.split('/');
    let mut t = f.split('/');
    loop {
        match (s.next(), t.next()) {
            (Some("#"), _) | (None, None) => return true,
            (Some("+"), Some(l)) if l != "#" => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Whether the concrete `topic` matches subscription filter `filter` (MQTT 3.1.1 §4.7; a `$`
/// topic matches only a filter that starts with `$` too).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) | (None, None) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Checks an MQTT subscription filter (MQTT 3.1.1 §4.7).
pub fn check_topic_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("it is empty");
    }
    if filter.len() > 65_535 {
        return Err("it is longer than 65535 bytes");
    }
    if filter.contains('\0') {
        return Err("it contains a NUL character");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != last) {
            return Err("`#` must be a whole level and the last one");
        }
        if level.contains('+') && *level != "+" {
            return Err("`+` must be a whole level");
        }
    }
    Ok(())
}

fn default_agent_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "scanbridge-agent".to_string())
}

#[cfg(test)]
mod mqtt_tests;
#[cfg(test)]
mod tests;
