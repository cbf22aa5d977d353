//! The relay's configuration file (TOML): parsing, defaults, path resolution and validation.
//!
//! Owns the one typed [`Config`] every component is built from. Every mistake is reported with
//! the key and the line it is on ([`ConfigError`]), and `main` exits 64 for it. Relative paths
//! are resolved against the directory of the configuration file. The Odoo API key is read from
//! `odoo.api_key_file` here (trimmed), so a missing key file is a config error, found before any
//! socket opens.
//!
//! ```toml
//! listen = "127.0.0.1:8443"
//! state_dir = "/var/lib/scanbridge-relay"
//! [tls]
//! server_cert = "/etc/scanbridge-relay/ca/server.pem"
//! server_key  = "/etc/scanbridge-relay/ca/server.key"
//! client_ca   = "/etc/scanbridge-relay/ca/ca.pem"
//! revoked_serials_file = "/etc/scanbridge-relay/revoked.txt"  # optional; reloaded on change
//! [limits]                  # optional
//! max_body_bytes = 8388608
//! max_batch_events = 10000
//! max_connections = 1024    # optional extension: concurrent TLS connections
//! [odoo]
//! url = "http://127.0.0.1:8069"
//! database = "scanbridge"
//! login = "scanbridge"
//! api_key_file = "/etc/scanbridge-relay/odoo-api-key"
//! timeout_secs = 30         # optional
//! max_chunk = 500           # optional
//! [retention]               # optional
//! keep_days = 30            # 0 = keep forever
//! check_interval_secs = 3600
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration mistake, located by key and line where possible.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: line {line}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        line: usize,
        message: String,
    },
}

/// The Odoo API key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// The validated relay configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the HTTPS listener (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Directory holding `relay.redb`.
    pub state_dir: PathBuf,
    pub tls: TlsPaths,
    pub limits: Limits,
    pub odoo: OdooConfig,
    /// `[admin]`: the admin listener (fleet status API, metrics, web page); `None` = no listener.
    pub admin: Option<AdminConfig>,
    /// `[status]`: when a silent site counts as stale or offline.
    pub status: StatusConfig,
    /// `[retention]`: how long finished events stay in the store.
    pub retention: RetentionConfig,
}

impl Config {
    /// Path of the redb database.
    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("relay.redb")
    }
}

/// Files of the server's TLS identity and of the site CA.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_ca: PathBuf,
    /// `revoked_serials_file`: revoked client certificate serials (rotation helper).
    pub revoked_serials_file: Option<PathBuf>,
}

/// Intake limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted request body; larger → 413.
    pub max_body_bytes: usize,
    /// Most events in one batch; more → 413.
    pub max_batch_events: usize,
    /// Concurrent TLS connections; further ones wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 8 * 1024 * 1024,
            max_batch_events: 10_000,
            max_connections: 1024,
        }
    }
}

/// How to reach Odoo.
#[derive(Debug, Clone)]
pub struct OdooConfig {
    /// Base URL; `/jsonrpc` is appended.
    pub url: String,
    pub database: String,
    pub login: String,
    pub api_key: ApiKey,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Most events in one Odoo call.
    pub max_chunk: usize,
    /// `api`, `version`, `max_concurrency`, `max_rps`, `[[odoo.stations]]`,
    /// `[[odoo.readings]]` (flows helper; see `crate::odoo::settings`).
    pub flows: crate::odoo::settings::FlowSettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    state_dir: PathBuf,
    tls: RawTls,
    #[serde(default)]
    limits: RawLimits,
    odoo: RawOdoo,
    admin: Option<RawAdmin>,
    #[serde(default)]
    status: RawStatus,
    #[serde(default)]
    retention: RawRetention,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    server_cert: PathBuf,
    server_key: PathBuf,
    client_ca: PathBuf,
    revoked_serials_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: Option<u64>,
    max_batch_events: Option<u64>,
    max_connections: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOdoo {
    url: String,
    database: String,
    login: String,
    api_key_file: PathBuf,
    timeout_secs: Option<u64>,
    max_chunk: Option<u64>,
    // flows helper: see crate::odoo::settings
    api: Option<String>,
    version: Option<String>,
    max_concurrency: Option<u64>,
    max_rps: Option<f64>,
    #[serde(default)]
    stations: Vec<crate::odoo::settings::RawStation>,
    #[serde(default)]
    readings: Vec<crate::odoo::settings::RawReading>,
}

impl Config {
    /// Reads, parses and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, path, base)
    }

    /// Parses and validates configuration `text`; `path` names it in errors, relative paths
    /// are resolved against `base`.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            line: e.span().map_or(1, |span| line_of_offset(text, span.start)),
            message: e.message().trim().to_string(),
        })?;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            line: line_of_key(text, key),
            message,
        };
        let resolve = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };

        let listen: SocketAddr = raw.listen.parse().map_err(|e| {
            invalid(
                "listen",
                format!(
                    "{:?} is not an address:port such as 0.0.0.0:8443 ({e})",
                    raw.listen
                ),
            )
        })?;

        let defaults = Limits::default();
        let positive = |key: &str, v: Option<u64>, default: usize| -> Result<usize, ConfigError> {
            match v {
                None => Ok(default),
                Some(0) => Err(invalid(key, "must be at least 1".into())),
                Some(n) => usize::try_from(n).map_err(|_| invalid(key, "too large".into())),
            }
        };
        let max_body_bytes = positive(
            "limits.max_body_bytes",
            raw.limits.max_body_bytes,
            defaults.max_body_bytes,
        )?;
        if max_body_bytes > scanbridge_protocol::MAX_MESSAGE_BYTES {
            return Err(invalid(
                "limits.max_body_bytes",
                format!(
                    "at most {} (the wire format's message limit)",
                    scanbridge_protocol::MAX_MESSAGE_BYTES
                ),
            ));
        }
        let limits = Limits {
            max_body_bytes,
            max_batch_events: positive(
                "limits.max_batch_events",
                raw.limits.max_batch_events,
                defaults.max_batch_events,
            )?,
            max_connections: positive(
                "limits.max_connections",
                raw.limits.max_connections,
                defaults.max_connections,
            )?,
        };

        let url = raw.odoo.url.trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
            return Err(invalid(
                "odoo.url",
                format!("{:?} must be an http:// or https:// URL", raw.odoo.url),
            ));
        }
        if raw.odoo.database.is_empty() {
            return Err(invalid("odoo.database", "must not be empty".into()));
        }
        if raw.odoo.login.is_empty() {
            return Err(invalid("odoo.login", "must not be empty".into()));
        }
        let key_file = resolve(raw.odoo.api_key_file);
        let key = std::fs::read_to_string(&key_file).map_err(|e| {
            invalid(
                "odoo.api_key_file",
                format!("cannot read {}: {e}", key_file.display()),
            )
        })?;
        let key = key.trim();
        if key.is_empty() {
            return Err(invalid(
                "odoo.api_key_file",
                format!(
                    "{} is empty; put the Odoo API key in it",
                    key_file.display()
                ),
            ));
        }
        let timeout_secs = raw.odoo.timeout_secs.unwrap_or(30);
        if timeout_secs == 0 {
            return Err(invalid("odoo.timeout_secs", "must be at least 1".into()));
        }
        let max_chunk = positive("odoo.max_chunk", raw.odoo.max_chunk, DEFAULT_MAX_CHUNK)?;
        let flows = crate::odoo::settings::build(crate::odoo::settings::RawFlowKeys {
            api: raw.odoo.api,
            version: raw.odoo.version,
            max_concurrency: raw.odoo.max_concurrency,
            max_rps: raw.odoo.max_rps,
            stations: raw.odoo.stations,
            readings: raw.odoo.readings,
        })
        .map_err(|e| invalid(&e.key, e.message))?;

        let admin = match raw.admin {
            None => None,
            Some(a) => Some(admin_config(a, &resolve, &invalid)?),
        };
        let status = status_config(&raw.status, &invalid)?;
        let retention = retention_config(&raw.retention, &invalid)?;

        Ok(Config {
            admin,
            status,
            retention,
            listen,
            state_dir: resolve(raw.state_dir),
            tls: TlsPaths {
                server_cert: resolve(raw.tls.server_cert),
                server_key: resolve(raw.tls.server_key),
                client_ca: resolve(raw.tls.client_ca),
                revoked_serials_file: raw.tls.revoked_serials_file.map(&resolve),
            },
            limits,
            odoo: OdooConfig {
                url,
                database: raw.odoo.database,
                login: raw.odoo.login,
                api_key: ApiKey(key.to_string()),
                timeout: Duration::from_secs(timeout_secs),
                max_chunk,
                flows,
            },
        })
    }
}

// ---- [admin] and [status] (fleet status helper) ----

/// The admin bearer token (from `admin.token_file`). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    pub fn new(token: impl Into<String>) -> AdminToken {
        AdminToken(token.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Shortest admin token accepted (characters), so a guessable word is refused at start.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// Default `[odoo] max_chunk`: events per Odoo write. Counts cost two calls per chunk (`load`,
/// then `action_apply_inventory`), so 500 keeps them near 4 calls per 1,000 counts; Odoo's own
/// "Apply All" applies every counted quant in one call, so a 500-quant apply is ordinary load.
pub const DEFAULT_MAX_CHUNK: usize = 500;

/// `[admin]`: the admin listener, separate from the site listener.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Address of the admin HTTPS listener (TLS with the relay's server certificate).
    pub listen: SocketAddr,
    /// File the token was read from (the CLI reads it again).
    pub token_file: PathBuf,
    pub token: AdminToken,
}

/// `[status]`: thresholds of a site's state by the time since it was last heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusConfig {
    /// Silent longer than this: stale.
    pub stale_after: Duration,
    /// Silent longer than this: offline.
    pub offline_after: Duration,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            stale_after: Duration::from_secs(120),
            offline_after: Duration::from_secs(600),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: String,
    token_file: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    stale_after_secs: Option<u64>,
    offline_after_secs: Option<u64>,
}

fn admin_config(
    raw: RawAdmin,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<AdminConfig, ConfigError> {
    let listen: SocketAddr = raw.listen.parse().map_err(|e| {
        invalid(
            "admin.listen",
            format!(
                "{:?} is not an address:port such as 127.0.0.1:9443 ({e})",
                raw.listen
            ),
        )
    })?;
    let token_file = resolve(raw.token_file);
    let token = std::fs::read_to_string(&token_file).map_err(|e| {
        invalid(
            "admin.token_file",
            format!("cannot read {}: {e}", token_file.display()),
        )
    })?;
    let token = token.trim();
    if token.chars().count() < MIN_ADMIN_TOKEN_LEN || token.chars().any(char::is_whitespace) {
        return Err(invalid(
            "admin.token_file",
            format!(
                "{} must hold one token of at least {MIN_ADMIN_TOKEN_LEN} characters without spaces (e.g. `openssl rand -hex 32`)",
                token_file.display()
            ),
        ));
    }
    Ok(AdminConfig {
        listen,
        token_file,
        token: AdminToken(token.to_string()),
    })
}

fn status_config(
    raw: &RawStatus,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<StatusConfig, ConfigError> {
    let defaults = StatusConfig::default();
    let stale = raw
        .stale_after_secs
        .map_or(defaults.stale_after, Duration::from_secs);
    let offline = raw
        .offline_after_secs
        .map_or(defaults.offline_after, Duration::from_secs);
    if stale.is_zero() {
        return Err(invalid(
            "status.stale_after_secs",
            "must be at least 1".into(),
        ));
    }
    if offline <= stale {
        return Err(invalid(
            "status.offline_after_secs",
            format!(
                "must be larger than status.stale_after_secs ({})",
                stale.as_secs()
            ),
        ));
    }
    Ok(StatusConfig {
        stale_after: stale,
        offline_after: offline,
    })
}

// ---- [retention] ----

/// Default `[retention] keep_days`.
pub const DEFAULT_KEEP_DAYS: u32 = 30;
/// Largest `[retention] keep_days` accepted (100 years; more is "forever": use 0).
pub const MAX_KEEP_DAYS: u64 = 36_500;

/// `[retention]`: finished events (applied, quarantined, closed dead letters) older than
/// `keep_days` are removed from the store; see `crate::inbox::retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Days a finished event is kept after the relay stored it; 0 = keep forever (no pruning).
    pub keep_days: u32,
    /// How often the relay looks for prunable events.
    pub check_interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep_days: DEFAULT_KEEP_DAYS,
            check_interval: Duration::from_secs(3600),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    keep_days: Option<u64>,
    check_interval_secs: Option<u64>,
}

fn retention_config(
    raw: &RawRetention,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<RetentionConfig, ConfigError> {
    let defaults = RetentionConfig::default();
    let keep_days = match raw.keep_days {
        None => defaults.keep_days,
        Some(d) if d > MAX_KEEP_DAYS => {
            return Err(invalid(
                "retention.keep_days",
                format!(
                    "{d} is more than {MAX_KEEP_DAYS} (100 years); use 0 to keep events forever"
                ),
            ))
        }
        Some(d) => u32::try_from(d).unwrap_or(u32::MAX),
    };
    let check_interval =
        match raw.check_interval_secs {
            None => defaults.check_interval,
            Some(0) => return Err(invalid(
                "retention.check_interval_secs",
                "must be at least 1 (seconds between two looks for prunable events; default 3600)"
                    .into(),
            )),
            Some(s) => Duration::from_secs(s),
        };
    Ok(RetentionConfig {
        keep_days,
        check_interval,
    })
}

#[cfg(test)]
mod admin_status_tests {
    use super::*;

    fn config(dir: &Path, tail: &str) -> Result<Config, ConfigError> {
        std::fs::write(dir.join("key"), "k").expect("key");
        let text = format!(
            "listen = \"127.0.0.1:8443\"\nstate_dir = \"s\"\n[tls]\nserver_cert = \"a\"\nserver_key = \"b\"\nclient_ca = \"c\"\n[odoo]\nurl = \"http://127.0.0.1:8069\"\ndatabase = \"d\"\nlogin = \"l\"\napi_key_file = \"key\"\n{tail}"
        );
        Config::parse(&text, &dir.join("relay.toml"), dir)
    }

    #[test]
    fn without_admin_and_status_sections_there_is_no_admin_listener_and_default_thresholds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(dir.path(), "").expect("valid");
        assert!(c.admin.is_none());
        assert_eq!(c.status, StatusConfig::default());
    }

    #[test]
    fn the_admin_token_is_read_from_its_file_and_a_short_one_is_refused_with_key_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("tok"), "0123456789abcdef0123\n").expect("token");
        let tail = "[admin]\nlisten = \"127.0.0.1:9443\"\ntoken_file = \"tok\"\n[status]\nstale_after_secs = 60\noffline_after_secs = 300\n";
        let c = config(dir.path(), tail).expect("valid");
        let admin = c.admin.expect("admin");
        assert_eq!(admin.token.expose(), "0123456789abcdef0123");
        assert_eq!(admin.listen.port(), 9443);
        assert_eq!(c.status.stale_after, Duration::from_secs(60));
        assert!(
            !format!("{admin:?}").contains("0123456789"),
            "token printed"
        );

        std::fs::write(dir.path().join("tok"), "short\n").expect("token");
        let err = config(dir.path(), tail).expect_err("short token");
        let msg = err.to_string();
        assert!(
            msg.contains("admin.token_file") && msg.contains("line 14"),
            "{msg}"
        );
    }

    #[test]
    fn retention_defaults_to_30_days_hourly_and_zero_keeps_forever() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(dir.path(), "").expect("valid");
        assert_eq!(c.retention, RetentionConfig::default());
        assert_eq!(
            (c.retention.keep_days, c.retention.check_interval),
            (30, Duration::from_secs(3600))
        );
        let c = config(
            dir.path(),
            "[retention]\nkeep_days = 0\ncheck_interval_secs = 5\n",
        )
        .expect("valid");
        assert_eq!(
            (c.retention.keep_days, c.retention.check_interval),
            (0, Duration::from_secs(5))
        );
    }

    #[test]
    fn a_bad_retention_value_is_reported_with_key_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = config(dir.path(), "[retention]\ncheck_interval_secs = 0\n")
            .expect_err("zero interval");
        let msg = err.to_string();
        assert!(
            msg.contains("retention.check_interval_secs") && msg.contains("line 13"),
            "{msg}"
        );
        let err = config(dir.path(), "[retention]\nkeep_days = 100000\n").expect_err("too long");
        assert!(err.to_string().contains("retention.keep_days"), "{err}");
        let err = config(dir.path(), "[retention]\nkeep_day = 3\n").expect_err("typo");
        assert!(err.to_string().contains("keep_day"), "{err}");
    }

    #[test]
    fn offline_must_come_after_stale() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = config(
            dir.path(),
            "[status]\nstale_after_secs = 600\noffline_after_secs = 600\n",
        )
        .expect_err("offline <= stale");
        assert!(
            err.to_string().contains("status.offline_after_secs"),
            "{err}"
        );
    }
}

/// 1-based line number of byte `offset` in `text`.
fn line_of_offset(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// 1-based line of `dotted` (`section.key` or a top-level `key`) in `text`, or 1 when absent.
/// A plain scan is enough for the flat files this relay reads.
pub fn line_of_key(text: &str, dotted: &str) -> usize {
    let (section, key) = match dotted.rsplit_once('.') {
        Some((s, k)) => (Some(s), k),
        None => (None, dotted),
    };
    let mut current: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[') {
            current = Some(name.trim_end_matches(']').trim().to_string());
            continue;
        }
        let in_section = match (section, &current) {
            (None, None) => true,
            (Some(s), Some(c)) => s == c,
            _ => false,
        };
        if in_section {
            if let Some(rest) = t.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    return i + 1;
                }
            }
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(extra_top: &str, extra_odoo: &str) -> String {
        format!(
            "listen = \"127.0.0.1:8443\"\n{extra_top}state_dir = \"state\"\n[tls]\nserver_cert = \"ca/server.pem\"\nserver_key = \"ca/server.key\"\nclient_ca = \"/abs/ca.pem\"\n[odoo]\nurl = \"http://127.0.0.1:8069/\"\ndatabase = \"scanbridge\"\nlogin = \"scanbridge\"\napi_key_file = \"key\"\n{extra_odoo}"
        )
    }

    fn parse_in(dir: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, &dir.join("relay.toml"), dir)
    }

    #[test]
    fn a_complete_config_resolves_relative_paths_against_the_config_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("key"), "  secret\n").expect("write key");
        let config = parse_in(dir.path(), &sample("", "")).expect("valid");
        assert_eq!(config.state_dir, dir.path().join("state"));
        assert_eq!(config.tls.server_cert, dir.path().join("ca/server.pem"));
        assert_eq!(config.tls.client_ca, PathBuf::from("/abs/ca.pem"));
        assert_eq!(config.odoo.api_key.expose(), "secret");
        assert_eq!(config.odoo.url, "http://127.0.0.1:8069");
        assert_eq!(config.odoo.max_chunk, DEFAULT_MAX_CHUNK);
        assert_eq!(config.limits, Limits::default());
    }

    #[test]
    fn an_unknown_key_is_reported_with_its_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("key"), "k").expect("write key");
        let err = parse_in(dir.path(), &sample("lisen = 1\n", "")).expect_err("unknown key");
        match err {
            ConfigError::Syntax { line, message, .. } => {
                assert_eq!(line, 2);
                assert!(message.contains("lisen"), "{message}");
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn an_invalid_value_is_reported_with_key_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("key"), "k").expect("write key");
        let err = parse_in(dir.path(), &sample("", "max_chunk = 0\n")).expect_err("zero");
        match err {
            ConfigError::Invalid { key, line, .. } => {
                assert_eq!(key, "odoo.max_chunk");
                assert_eq!(line, 12);
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn a_missing_api_key_file_is_a_config_error_naming_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = parse_in(dir.path(), &sample("", "")).expect_err("no key file");
        assert!(err.to_string().contains("odoo.api_key_file"), "{err}");
        assert!(err.to_string().contains("line 11"), "{err}");
    }
}
