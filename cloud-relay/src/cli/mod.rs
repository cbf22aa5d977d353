//! The operator subcommands that talk to a running relay through its admin API:
//! `scanbridge-relay sites`, `dead-letters list|show|replay|skip`, and `trace`.
//!
//! Owns the admin API client (HTTPS to `[admin] listen`, trusting the relay's CA from
//! `tls.client_ca`, `Authorization: Bearer` with the token of `[admin] token_file`, both found
//! through `--config`) and the terminal tables ([`table`], pure). Exit codes: 0 done, 1 the relay
//! refused or does not know the thing asked for, 64 bad command line or configuration,
//! 69 relay unreachable, 77 credential refused.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::config::Config;

/// EX_USAGE.
pub const EXIT_USAGE: u8 = 64;
/// EX_UNAVAILABLE: the admin listener cannot be reached.
pub const EXIT_UNAVAILABLE: u8 = 69;
/// EX_NOPERM: the admin credential was refused.
pub const EXIT_NOPERM: u8 = 77;
/// Timeout of one admin API request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Options every admin subcommand takes.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// The relay's configuration file: gives `[admin] listen`, `[admin] token_file` and the CA.
    #[arg(long)]
    pub config: PathBuf,
    /// Admin API base URL, when the listen address is not how this host reaches it
    /// (e.g. https://relay.example.com:9443).
    #[arg(long)]
    pub url: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `dead-letters` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DeadLetterCommand {
    /// List dead letters (all sites, or one with --site).
    List {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        site: Option<String>,
    },
    /// Show one dead letter: reason, event, state, what it holds back.
    Show {
        #[command(flatten)]
        admin: AdminArgs,
        site: String,
        seq: u64,
    },
    /// Queue a dead letter again (after fixing master data in Odoo).
    Replay {
        #[command(flatten)]
        admin: AdminArgs,
        site: String,
        seq: u64,
    },
    /// Give a dead letter up; it never reaches Odoo.
    Skip {
        #[command(flatten)]
        admin: AdminArgs,
        site: String,
        seq: u64,
        /// Why (kept with the dead letter).
        #[arg(long, default_value = "")]
        note: String,
    },
}

/// `trace` arguments: `SITE SEQ` or `--barcode CODE`.
#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Site id (with SEQ).
    #[arg(required_unless_present = "barcode", requires = "seq")]
    pub site: Option<String>,
    /// Event sequence number at that site.
    pub seq: Option<u64>,
    /// Find events by barcode instead.
    #[arg(long, conflicts_with_all = ["site", "seq"])]
    pub barcode: Option<String>,
}

/// Why a subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(String),
    #[error("cannot reach the admin API at {url}: {reason} (is the relay running with an [admin] section? use --url if this host reaches it by another address)")]
    Unreachable { url: String, reason: String },
    #[error("the relay refused the admin credential ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("unexpected answer from the admin API: {0}")]
    Answer(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) => EXIT_USAGE,
            CliError::Unreachable { .. } => EXIT_UNAVAILABLE,
            CliError::Refused { .. } => EXIT_NOPERM,
            CliError::Api { .. } | CliError::Answer(_) => 1,
        }
    }
}

/// A client of one relay's admin API.
pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// The base URL for a listen address: a wildcard address is reached over loopback.
pub fn base_url(listen: std::net::SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    };
    format!("https://{ip}:{}", listen.port())
}

impl AdminClient {
    /// Builds a client from the relay's configuration file.
    pub fn from_args(args: &AdminArgs) -> Result<AdminClient, CliError> {
        let config = Config::load(&args.config).map_err(|e| CliError::Config(e.to_string()))?;
        let admin = config.admin.as_ref().ok_or_else(|| {
            CliError::Config(format!(
                "{}: no [admin] section: add `[admin] listen = \"127.0.0.1:9443\"` and `token_file`, and restart the relay",
                args.config.display()
            ))
        })?;
        let base = args
            .url
            .clone()
            .unwrap_or_else(|| base_url(admin.listen))
            .trim_end_matches('/')
            .to_string();
        let ca = std::fs::read(&config.tls.client_ca).map_err(|e| {
            CliError::Config(format!(
                "tls.client_ca = {}: cannot read: {e}",
                config.tls.client_ca.display()
            ))
        })?;
        let ca = reqwest::Certificate::from_pem(&ca)
            .map_err(|e| CliError::Config(format!("tls.client_ca: not a PEM certificate: {e}")))?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| CliError::Config(format!("cannot build the HTTPS client: {e}")))?;
        Ok(AdminClient {
            base,
            token: admin.token.expose().to_string(),
            http,
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder, url: &str) -> Result<Value, CliError> {
        let response =
            request
                .bearer_auth(&self.token)
                .send()
                .await
                .map_err(|e| CliError::Unreachable {
                    url: url.to_string(),
                    reason: error_chain(&e),
                })?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| CliError::Unreachable {
            url: url.to_string(),
            reason: error_chain(&e),
        })?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| CliError::Answer(format!("{status}: {e}: {text:.200}")))?;
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let message = value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or(&text)
            .to_string();
        Err(if status == 401 || status == 403 {
            CliError::Refused { status, message }
        } else {
            CliError::Api { status, message }
        })
    }

    /// `GET path` (path includes the query).
    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.get(&url), &url).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.post(&url).json(&body), &url).await
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Renders rows as a left-aligned text table with a header and a rule.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&" ".repeat(w.saturating_sub(cell.chars().count()) + 2));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    out.push_str(&line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => one_line(s, 80),
        Some(other) => other.to_string(),
    }
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        flat
    }
}

fn age(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_f64)
        .map_or_else(|| "-".into(), crate::admin::page::age)
}

/// The site's state, flagged when its gateway store is refused (a store conflict: nothing of
/// the site reaches Odoo until the store is renumbered; `sites` JSON has the fix).
fn state_cell(site: &Value) -> String {
    let state = s(site, "state");
    match site.get("store_conflict") {
        Some(c) if c.is_object() => format!("{state}, STORE CONFLICT"),
        _ => state,
    }
}

/// The `sites` table.
pub fn sites_table(sites: &Value) -> String {
    let rows: Vec<Vec<String>> = sites
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    vec![
                        s(x, "site"),
                        state_cell(x),
                        age(x, "oldest_unsynced_age_secs"),
                        s(x, "agent_backlog_events"),
                        s(x, "inbox_lag_events"),
                        s(x, "dead_letters_open"),
                        s(x, "quarantined"),
                        x.get("last_seen_age_secs")
                            .and_then(Value::as_f64)
                            .map_or_else(
                                || "never".into(),
                                |a| format!("{} ago", crate::admin::page::age(a)),
                            ),
                        x.get("cert_expires_in_days")
                            .and_then(Value::as_f64)
                            .map_or_else(|| "-".into(), |d| format!("{d:.0} d")),
                        s(x, "agent_version"),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        &[
            "SITE",
            "STATE",
            "UNSYNCED",
            "BACKLOG",
            "INBOX",
            "DEAD",
            "QUAR",
            "LAST SEEN",
            "CERT",
            "VERSION",
        ],
        &rows,
    )
}

/// The `dead-letters list` table.
pub fn dead_letters_table(list: &Value) -> String {
    let rows: Vec<Vec<String>> = list
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    vec![
                        s(d, "site"),
                        s(d, "seq"),
                        s(d, "state"),
                        s(d, "at"),
                        one_line(&s(d, "event"), 40),
                        one_line(&s(d, "reason"), 70),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["SITE", "SEQ", "STATE", "AT", "EVENT", "REASON"], &rows)
}

/// `dead-letters show`: one field a line.
pub fn dead_letter_text(d: &Value) -> String {
    let mut out = String::new();
    for key in ["site", "seq", "state", "at", "document", "event", "note"] {
        out.push_str(&format!("{:<9} {}\n", format!("{key}:"), s(d, key)));
    }
    let held = d
        .get("held")
        .and_then(Value::as_array)
        .map(|h| {
            h.iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    out.push_str(&format!(
        "held:     {}\n",
        if held.is_empty() { "-" } else { &held }
    ));
    out.push_str(&format!(
        "reason:\n  {}\n",
        d.get("reason")
            .and_then(Value::as_str)
            .unwrap_or("-")
            .replace('\n', "\n  ")
    ));
    out
}

/// One trace as text: the event, then one line per step.
pub fn trace_text(t: &Value) -> String {
    let mut out = format!("{}/{}", s(t, "site"), s(t, "seq"));
    if let Some(e) = t.get("event") {
        out.push_str(&format!(
            "  {}  (device {})",
            s(e, "summary"),
            s(e, "device")
        ));
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = t
        .get("steps")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|st| {
                    let mut detail = s(st, "detail");
                    if let (Some(m), Some(id)) =
                        (st.get("model").and_then(Value::as_str), st.get("record_id"))
                    {
                        detail = format!("{m} id {id}: {detail}");
                    }
                    vec![s(st, "step"), s(st, "at"), one_line(&detail, 100)]
                })
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&table(&["STEP", "AT", "DETAIL"], &rows));
    out
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Config(format!("cannot start the async runtime: {e}")))
}

fn finish(result: Result<String, CliError>) -> u8 {
    match result {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).map_or_else(|_| v.to_string(), |s| s + "\n")
}

fn check_site(site: &str) -> Result<(), CliError> {
    if scanbridge_protocol::is_valid_site_id(site) {
        Ok(())
    } else {
        Err(CliError::Config(format!(
            "{site:?} is not a site id (1 to 32 characters of A-Z a-z 0-9 - _)"
        )))
    }
}

/// `scanbridge-relay sites`; returns the exit code.
pub fn sites(args: AdminArgs) -> u8 {
    finish((|| {
        let client = AdminClient::from_args(&args)?;
        let v = runtime()?.block_on(client.get("/v1/sites"))?;
        Ok(if args.json {
            pretty(&v)
        } else if v.as_array().is_some_and(Vec::is_empty) {
            "no site has connected to this relay yet\n".into()
        } else {
            sites_table(&v)
        })
    })())
}

/// `scanbridge-relay dead-letters ...`; returns the exit code.
pub fn dead_letters(command: DeadLetterCommand) -> u8 {
    finish((|| match command {
        DeadLetterCommand::List { admin, site } => {
            let client = AdminClient::from_args(&admin)?;
            let path = match &site {
                Some(s) => {
                    check_site(s)?;
                    format!("/v1/dead-letters?site={s}")
                }
                None => "/v1/dead-letters".into(),
            };
            let v = runtime()?.block_on(client.get(&path))?;
            Ok(if admin.json {
                pretty(&v)
            } else {
                dead_letters_table(&v)
            })
        }
        DeadLetterCommand::Show { admin, site, seq } => {
            check_site(&site)?;
            let client = AdminClient::from_args(&admin)?;
            let v = runtime()?.block_on(client.get(&format!("/v1/dead-letters/{site}/{seq}")))?;
            Ok(if admin.json {
                pretty(&v)
            } else {
                dead_letter_text(&v)
            })
        }
        DeadLetterCommand::Replay { admin, site, seq } => {
            check_site(&site)?;
            let client = AdminClient::from_args(&admin)?;
            let v = runtime()?.block_on(client.post(
                &format!("/v1/dead-letters/{site}/{seq}/replay"),
                serde_json::json!({}),
            ))?;
            Ok(if admin.json {
                pretty(&v)
            } else {
                format!("{site}/{seq}: {} ({})\n", s(&v, "action"), s(&v, "detail"))
            })
        }
        DeadLetterCommand::Skip {
            admin,
            site,
            seq,
            note,
        } => {
            check_site(&site)?;
            let client = AdminClient::from_args(&admin)?;
            let v = runtime()?.block_on(client.post(
                &format!("/v1/dead-letters/{site}/{seq}/skip"),
                serde_json::json!({ "note": note }),
            ))?;
            Ok(if admin.json {
                pretty(&v)
            } else {
                format!("{site}/{seq}: {} ({})\n", s(&v, "action"), s(&v, "detail"))
            })
        }
    })())
}

/// Percent-encodes a query value.
fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `scanbridge-relay trace ...`; returns the exit code.
pub fn trace(args: TraceArgs) -> u8 {
    finish((|| {
        let client = AdminClient::from_args(&args.admin)?;
        let rt = runtime()?;
        match (&args.site, args.seq, &args.barcode) {
            (Some(site), Some(seq), None) => {
                check_site(site)?;
                let v = rt.block_on(client.get(&format!("/v1/trace?site={site}&seq={seq}")))?;
                Ok(if args.admin.json {
                    pretty(&v)
                } else {
                    trace_text(&v)
                })
            }
            (None, None, Some(code)) => {
                let v =
                    rt.block_on(client.get(&format!("/v1/trace?barcode={}", query_value(code))))?;
                if args.admin.json {
                    return Ok(pretty(&v));
                }
                let traces = v
                    .get("traces")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if traces.is_empty() {
                    return Err(CliError::Api {
                        status: 404,
                        message: format!("no stored event carries barcode {code:?}"),
                    });
                }
                let mut out = String::new();
                for t in &traces {
                    out.push_str(&trace_text(t));
                    out.push('\n');
                }
                if v.get("truncated").and_then(Value::as_bool) == Some(true) {
                    out.push_str("(more matches may exist: the search stopped at its limit)\n");
                }
                Ok(out)
            }
            _ => Err(CliError::Config("give SITE SEQ or --barcode CODE".into())),
        }
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_aligns_columns_to_the_widest_cell() {
        let t = table(
            &["SITE", "STATE"],
            &[
                vec!["WH01".into(), "online".into()],
                vec!["A".into(), "offline".into()],
            ],
        );
        assert_eq!(
            t,
            "SITE  STATE\n----  -------\nWH01  online\nA     offline\n"
        );
    }

    #[test]
    fn a_wildcard_listen_address_is_reached_over_loopback() {
        assert_eq!(
            base_url("0.0.0.0:9443".parse().expect("addr")),
            "https://127.0.0.1:9443"
        );
        assert_eq!(
            base_url("[::]:9443".parse().expect("addr")),
            "https://[::1]:9443"
        );
        assert_eq!(
            base_url("10.1.2.3:9443".parse().expect("addr")),
            "https://10.1.2.3:9443"
        );
    }

    #[test]
    fn a_site_with_an_open_store_conflict_is_flagged_in_the_sites_table() {
        let sites = serde_json::json!([
            {"site": "WH01", "state": "online", "store_conflict": {"relay_highest_seq": 5}},
            {"site": "WH02", "state": "online", "store_conflict": null}
        ]);
        let text = sites_table(&sites);
        let line = |site: &str| {
            text.lines()
                .find(|l| l.starts_with(site))
                .unwrap_or_default()
                .to_string()
        };
        assert!(line("WH01").contains("online, STORE CONFLICT"), "{text}");
        assert!(!line("WH02").contains("CONFLICT"), "{text}");
    }

    #[test]
    fn control_characters_from_agents_do_not_reach_the_terminal() {
        assert_eq!(one_line("a\u{1b}[31mb\nc", 80), "a [31mb c");
        assert_eq!(one_line("abcdef", 4), "abc…");
    }
}
