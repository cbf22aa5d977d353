//! The one place the agent's TLS is built: a rustls 0.23 `ClientConfig` (ring provider, TLS 1.3
//! only) trusting exactly the site bundle's `ca.pem` and presenting `site.pem` / `site.key` as the
//! client certificate, and the reqwest client that uses it.
//!
//! No other module may construct an HTTP client: everything that talks to the relay goes through
//! [`relay_client`], so there is no path that skips certificate checks. The one plain-HTTP
//! client, [`loopback_client`], is only for `scanbridge-agent status` talking to the agent's own
//! status API (loopback by default; it carries no credentials and no scan data).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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
    let certs = certs_from(path).ok()?;
    let first = certs.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(first.as_ref()).ok()?;
    parsed
        .validity()
        .not_after
        .timestamp()
        .checked_mul(1_000_000)
}
