//! The one place the agent's TLS is built: a rustls 0.23 `ClientConfig` (ring provider, TLS 1.3
//! only) trusting exactly the site bundle's `ca.pem` and presenting `site.pem` / `site.key` as the
//! client certificate, and the reqwest client that uses it.
//!
//! Rotation: [`CertReloader`] watches the bundle files (polling their contents every
//! [`RELOAD_POLL`], and at once when asked, e.g. on SIGHUP). A changed set that forms a usable
//! identity becomes a new reqwest client, published on a `watch` channel; the forwarder switches
//! to it between batches, so nothing in flight is lost or resent. A set that does not (a key that
//! does not match, a half-copied file) is refused with an ERROR naming the cause and the old
//! client stays in use; it is tried again when the files change again. The reloader also logs
//! the certificate's coming expiry ([`crate::status::cert_expiry_warning`], 30 days ahead, once
//! a day) and keeps the expiry shown in status current.
//!
//! No other module may construct an HTTP client: everything that talks to the relay goes through
//! [`relay_client`], so there is no path that skips certificate checks. The one plain-HTTP
//! client, [`loopback_client`], is only for `scanbridge-agent status` talking to the agent's own
//! status API (loopback by default; it carries no credentials and no scan data).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::status::{cert_expiry_warning, StatusSource};

/// How often the certificate files are checked for a renewal.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);
/// How often an expiry warning is repeated.
const EXPIRY_WARN_EVERY: Duration = Duration::from_secs(24 * 3600);

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use scanbridge_protocol::UnixMicros;

/// Why the TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Pem(String),
    #[error("{path} holds no certificate")]
    NoCertificate { path: String },
    #[error("certificate in {path} is not usable as a trust anchor: {detail}")]
    TrustAnchor { path: String, detail: String },
    #[error("client certificate and key do not form a usable TLS identity: {0}")]
    Identity(rustls::Error),
    #[error("cannot build the HTTPS client: {0}")]
    Client(reqwest::Error),
}

/// Parses every certificate in a PEM file's bytes.
pub fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(format!("not valid PEM: {e}")))
}

/// Parses the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file's bytes.
pub fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    match rustls_pemfile::private_key(&mut &pem[..]) {
        Ok(Some(k)) => Ok(k),
        Ok(None) => Err(TlsError::Pem("holds no PEM private key".into())),
        Err(e) => Err(TlsError::Pem(format!("not valid PEM: {e}"))),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn certs_from(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = parse_certs(&read(path)?)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// Builds the rustls client configuration: `ca` is the only root, TLS 1.3 only, client auth with
/// `cert` + `key`.
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs_from(ca)? {
        roots.add(c).map_err(|e| TlsError::TrustAnchor {
            path: ca.display().to_string(),
            detail: e.to_string(),
        })?;
    }
    let chain = certs_from(cert)?;
    let key = parse_key(&read(key)?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Identity)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(TlsError::Identity)
}

/// The HTTPS client used for every request to the relay.
pub fn relay_client(
    config: rustls::ClientConfig,
    timeout: Duration,
) -> Result<reqwest::Client, TlsError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .https_only(true)
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(TlsError::Client)
}

/// A plain HTTP client for the agent's own loopback status API (`scanbridge-agent status`).
pub fn loopback_client(timeout: Duration) -> Result<reqwest::Client, TlsError> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
        .map_err(TlsError::Client)
}

/// Expiry (`notAfter`) of the first certificate in `path`, for the status heartbeat.
pub fn cert_not_after(path: &Path) -> Option<UnixMicros> {
    cert_facts(&std::fs::read(path).ok()?).map(|f| f.not_after)
}

/// What the logs say about a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    pub not_after: UnixMicros,
    /// Serial number, lower-case hex (what goes into the relay's revocation file).
    pub serial: String,
}

/// Expiry and serial of the first certificate of a PEM file's bytes.
pub fn cert_facts(pem: &[u8]) -> Option<CertFacts> {
    let certs = parse_certs(pem).ok()?;
    let first = certs.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(first.as_ref()).ok()?;
    Some(CertFacts {
        not_after: parsed
            .validity()
            .not_after
            .timestamp()
            .checked_mul(1_000_000)?,
        serial: parsed
            .raw_serial()
            .iter()
            .skip_while(|b| **b == 0)
            .map(|b| format!("{b:02x}"))
            .collect(),
    })
}

/// The files of the site bundle in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundlePaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What one check of the bundle files found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files are as last loaded (or as last refused).
    Unchanged,
    /// A new identity is in use from the next batch on.
    Reloaded(Option<CertFacts>),
    /// The changed files were refused; the previous identity stays in use.
    Refused(String),
}

/// Watches the bundle files and publishes a new relay client when they change (module doc).
pub struct CertReloader {
    paths: BundlePaths,
    timeout: Duration,
    /// Contents last loaded or refused, so a refused set is not retried until it changes.
    seen: Option<[Vec<u8>; 3]>,
    /// A changed set that did not work at its first check: refused (and logged) only if it is
    /// still the same at the next check, so the moment between copying the key and the
    /// certificate does not raise an alarm.
    unsettled: Option<[Vec<u8>; 3]>,
    tx: watch::Sender<reqwest::Client>,
    status: StatusSource,
    last_warning: Option<tokio::time::Instant>,
}

impl CertReloader {
    /// A reloader for the bundle `paths`, whose current client is `client` (built from them).
    pub fn new(
        paths: BundlePaths,
        timeout: Duration,
        client: reqwest::Client,
        status: StatusSource,
    ) -> (CertReloader, watch::Receiver<reqwest::Client>) {
        let (tx, rx) = watch::channel(client);
        let seen = read_bundle(&paths).ok();
        if let Some(facts) = seen.as_ref().and_then(|c| cert_facts(&c[1])) {
            tracing::info!(
                cert = %paths.cert.display(),
                serial = %facts.serial,
                not_after = %crate::status::rfc3339(facts.not_after),
                "client certificate in use"
            );
        }
        (
            CertReloader {
                paths,
                timeout,
                seen,
                unsettled: None,
                tx,
                status,
                last_warning: None,
            },
            rx,
        )
    }

    /// Points the reloader at other files (after a configuration reload); checked at once.
    pub fn set_paths(&mut self, paths: BundlePaths) {
        if paths != self.paths {
            self.paths = paths;
            self.seen = None;
        }
    }

    /// Checks the files once; on a usable change publishes the new client.
    pub fn check(&mut self) -> ReloadOutcome {
        let contents = match read_bundle(&self.paths) {
            Ok(c) => c,
            Err(e) => {
                // A file being replaced may be missing for a moment; an error that persists is
                // logged once per change like any refusal.
                let msg = e.to_string();
                return self.refuse(None, msg);
            }
        };
        if self.seen.as_ref() == Some(&contents) {
            return ReloadOutcome::Unchanged;
        }
        let built = client_config(&self.paths.ca, &self.paths.cert, &self.paths.key)
            .and_then(|c| relay_client(c, self.timeout));
        match built {
            Ok(client) => {
                let facts = cert_facts(&contents[1]);
                self.seen = Some(contents);
                self.unsettled = None;
                self.tx.send_replace(client);
                self.status
                    .set_cert_not_after(facts.as_ref().map(|f| f.not_after));
                tracing::info!(
                    cert = %self.paths.cert.display(),
                    serial = facts.as_ref().map(|f| f.serial.as_str()).unwrap_or("?"),
                    not_after = %facts.as_ref().map(|f| crate::status::rfc3339(f.not_after)).unwrap_or_default(),
                    "client certificate (re)loaded; used from the next batch on"
                );
                self.last_warning = None;
                ReloadOutcome::Reloaded(facts)
            }
            Err(e) => self.refuse(Some(contents), e.to_string()),
        }
    }

    fn refuse(&mut self, contents: Option<[Vec<u8>; 3]>, msg: String) -> ReloadOutcome {
        let key = contents.unwrap_or_default();
        if self.seen.as_ref() == Some(&key) {
            return ReloadOutcome::Unchanged;
        }
        if self.unsettled.as_ref() != Some(&key) {
            tracing::debug!(error = %msg, "changed certificate files not usable yet; checking again");
            self.unsettled = Some(key);
            return ReloadOutcome::Unchanged;
        }
        self.unsettled = None;
        self.seen = Some(key);
        tracing::error!(
            cert = %self.paths.cert.display(),
            key = %self.paths.key.display(),
            error = %msg,
            "refusing the changed client certificate/key; the previous one stays in use"
        );
        ReloadOutcome::Refused(msg)
    }

    /// Logs the expiry warning when due (at most once a day).
    pub fn warn_expiry(&mut self) {
        let Some(not_after) = self.status.cert_not_after() else {
            return;
        };
        let due = self
            .last_warning
            .is_none_or(|t| t.elapsed() >= EXPIRY_WARN_EVERY);
        if !due {
            return;
        }
        if let Some(w) = cert_expiry_warning(not_after, crate::now_micros()) {
            tracing::warn!(cert = %self.paths.cert.display(), "{w}");
            self.last_warning = Some(tokio::time::Instant::now());
        }
    }

    /// Checks every [`RELOAD_POLL`] and whenever `trigger` is notified, until cancelled.
    pub async fn run(mut self, trigger: Arc<Notify>, cancel: CancellationToken) {
        self.warn_expiry();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = trigger.notified() => {}
                _ = tokio::time::sleep(RELOAD_POLL) => {}
            }
            self.check();
            self.warn_expiry();
        }
    }
}

fn read_bundle(p: &BundlePaths) -> Result<[Vec<u8>; 3], TlsError> {
    Ok([read(&p.ca)?, read(&p.cert)?, read(&p.key)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn ca() -> Ca {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        Ca { cert, key }
    }

    /// A client certificate valid for `days`, and its key.
    fn leaf(ca: &Ca, days: i64) -> (String, String) {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days);
        let cert = p
            .signed_by(&key, &ca.cert, &ca.key)
            .unwrap_or_else(|e| panic!("{e}"));
        (cert.pem(), key.serialize_pem())
    }

    #[tokio::test]
    async fn a_renewed_pair_is_published_and_a_mismatched_pair_is_refused_after_it_settles() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let ca = ca();
        let paths = BundlePaths {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("site.pem"),
            key: dir.path().join("site.key"),
        };
        let write = |(c, k): &(String, String)| {
            std::fs::write(&paths.cert, c).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(&paths.key, k).unwrap_or_else(|e| panic!("{e}"));
        };
        std::fs::write(&paths.ca, ca.cert.pem()).unwrap_or_else(|e| panic!("{e}"));
        write(&leaf(&ca, 10));
        let store = crate::store::Store::open(&dir.path().join("agent.redb"), 1 << 30)
            .unwrap_or_else(|e| panic!("{e}"));
        let status = StatusSource::new(
            store,
            crate::sources::Health::default(),
            cert_not_after(&paths.cert),
        );
        let client = client_config(&paths.ca, &paths.cert, &paths.key)
            .and_then(|c| relay_client(c, Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("{e}"));
        let (mut r, mut rx) = CertReloader::new(
            paths.clone(),
            Duration::from_secs(5),
            client,
            status.clone(),
        );
        assert_eq!(r.check(), ReloadOutcome::Unchanged);
        let first_expiry = status.cert_not_after();

        write(&leaf(&ca, 400));
        let ReloadOutcome::Reloaded(Some(facts)) = r.check() else {
            panic!("renewal not loaded")
        };
        assert!(rx.has_changed().unwrap_or(false));
        rx.borrow_and_update();
        assert_eq!(status.cert_not_after(), Some(facts.not_after));
        assert!(status.cert_not_after() > first_expiry);
        assert_eq!(facts.serial.len() % 2, 0);

        let (other_cert, _) = leaf(&ca, 50);
        let (_, other_key) = leaf(&ca, 50);
        write(&(other_cert, other_key));
        assert_eq!(
            r.check(),
            ReloadOutcome::Unchanged,
            "first sight: may be mid-copy"
        );
        assert!(matches!(r.check(), ReloadOutcome::Refused(_)));
        assert_eq!(
            r.check(),
            ReloadOutcome::Unchanged,
            "refused once, not again"
        );
        assert!(!rx.has_changed().unwrap_or(true), "old client stays");
        assert_eq!(status.cert_not_after(), Some(facts.not_after));
    }
}
