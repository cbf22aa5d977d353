//! Every TLS configuration of the relay is built here, and only here.
//!
//! Server side: rustls 0.23 with the ring provider, TLS 1.3 only, a client certificate is
//! REQUIRED and verified against `client_ca` ([`WebPkiClientVerifier`]), and it must name exactly
//! one site (`SiteClientVerifier`, so a certificate without a site URI fails the handshake with
//! an `access_denied` alert instead of being accepted and dropped). ALPN offers HTTP/1.1 only.
//!
//! Revocation: [`Revoked`] holds the serials of `[tls] revoked_serials_file` (one hex serial a
//! line, `#` comments, `:` separators allowed). A revoked client certificate fails the handshake
//! (`certificate_revoked` alert, logged with site and serial), and a connection opened before the
//! revocation gets `403` on its next request (`crate::server`). [`watch_revocations`] reloads the
//! file when its contents change (polled every [`REVOCATION_POLL`]) or when asked (SIGHUP); a
//! file that does not parse is refused with the line and the previous list stays in force.
//! Several valid certificates per site (old and renewed, during the overlap) are all accepted.
//!
//! [`client_config`] builds the matching client side (used by tests and tools that talk to the
//! relay like an agent does).

use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};

use crate::identity::site_from_cert_der;

/// Why a TLS configuration could not be built. Names the file and the config key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key} = {path}: cannot read: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{key} = {path}: no PEM certificate found in the file")]
    NoCertificate { key: &'static str, path: PathBuf },
    #[error("{key} = {path}: no PEM private key (PKCS#8, SEC1 or PKCS#1) found in the file")]
    NoKey { key: &'static str, path: PathBuf },
    #[error("{key} = {path}: certificate not usable as a trust anchor: {source}")]
    BadAnchor {
        key: &'static str,
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("server certificate and key do not fit together or are unsupported: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{key} = {path}: {source}")]
    Revocations {
        key: &'static str,
        path: PathBuf,
        source: RevocationError,
    },
}

/// Why a revocation file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    #[error("cannot read: {0}")]
    Read(String),
    #[error("line {line}: {text:?} is not a hexadecimal serial number (write one serial per line, e.g. 4f1c0a..., `#` starts a comment)")]
    NotHex { line: usize, text: String },
}

/// How often the revocation file is checked for changes.
pub const REVOCATION_POLL: Duration = Duration::from_secs(2);

/// The revoked client certificate serials in force; clones share the list.
#[derive(Debug, Clone, Default)]
pub struct Revoked {
    serials: Arc<RwLock<Arc<HashSet<Vec<u8>>>>>,
    /// Changed files the watcher has handled (put in force or refused): lets tests and tools
    /// see that a change was looked at.
    handled: Arc<std::sync::atomic::AtomicU64>,
}

impl Revoked {
    /// Whether the certificate with DER serial `raw` (leading zeros ignored) is revoked.
    pub fn contains(&self, raw: &[u8]) -> bool {
        let key = strip_zeros(raw);
        self.serials
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(key)
    }

    /// Number of revoked serials in force.
    pub fn len(&self) -> usize {
        self.serials
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no serial is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many changed files the watcher has handled so far.
    pub fn handled(&self) -> u64 {
        self.handled.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Puts a new list in force.
    pub fn replace(&self, serials: HashSet<Vec<u8>>) {
        *self.serials.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(serials);
    }

    /// Loads `path` (`None`: nothing is revoked). A missing file is an error: the key names it.
    pub fn load(path: Option<&Path>) -> Result<Revoked, TlsError> {
        let list = Revoked::default();
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|e| TlsError::Revocations {
                key: "tls.revoked_serials_file",
                path: path.to_path_buf(),
                source: RevocationError::Read(e.to_string()),
            })?;
            let set = parse_revoked(&text).map_err(|source| TlsError::Revocations {
                key: "tls.revoked_serials_file",
                path: path.to_path_buf(),
                source,
            })?;
            list.replace(set);
        }
        Ok(list)
    }
}

fn strip_zeros(raw: &[u8]) -> &[u8] {
    let n = raw.iter().take_while(|b| **b == 0).count();
    &raw[n..]
}

/// Parses a revocation file: one hex serial per line, `#` comments, blank lines, optional `:`
/// or space separators and `0x` prefix. Pure.
pub fn parse_revoked(text: &str) -> Result<HashSet<Vec<u8>>, RevocationError> {
    let mut out = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let body = line.split('#').next().unwrap_or("").trim();
        if body.is_empty() {
            continue;
        }
        let digits: String = body
            .trim_start_matches("0x")
            .chars()
            .filter(|c| *c != ':' && !c.is_whitespace())
            .collect();
        let bad = || RevocationError::NotHex {
            line: i + 1,
            text: body.to_string(),
        };
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let padded = if digits.len() % 2 == 1 {
            format!("0{digits}")
        } else {
            digits
        };
        let bytes = (0..padded.len())
            .step_by(2)
            .map(|j| u8::from_str_radix(&padded[j..j + 2], 16).map_err(|_| bad()))
            .collect::<Result<Vec<u8>, _>>()?;
        out.insert(strip_zeros(&bytes).to_vec());
    }
    Ok(out)
}

/// Lower-case hex of a certificate's serial (leading zero bytes dropped), for logs and messages.
pub fn cert_serial_hex(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(crate::ca::serial_hex(cert.raw_serial()))
}

/// The DER serial bytes of a certificate.
pub fn cert_serial(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(strip_zeros(cert.raw_serial()).to_vec())
}

/// Keeps `revoked` in step with the file at `path`: reloads when its contents change (polled)
/// or when `trigger` is notified (SIGHUP), until `cancel`. A bad file is logged and ignored.
pub async fn watch_revocations(
    path: PathBuf,
    revoked: Revoked,
    trigger: Arc<tokio::sync::Notify>,
    cancel: tokio_util::sync::CancellationToken,
) {
    // Starts unknown: a change between the initial load and this task is not missed.
    let mut seen: Option<Vec<u8>> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = trigger.notified() => {}
            _ = tokio::time::sleep(REVOCATION_POLL) => {}
        }
        let now = match std::fs::read(&path) {
            Ok(b) => Some(b),
            Err(e) => {
                if seen.is_some() {
                    tracing::error!(file = %path.display(), error = %e, "cannot read the revocation file; the previous list stays in force");
                }
                seen = None;
                continue;
            }
        };
        if now == seen {
            continue;
        }
        seen = now;
        let text = String::from_utf8_lossy(seen.as_deref().unwrap_or_default());
        match parse_revoked(&text) {
            Ok(set) => {
                let n = set.len();
                let same = **revoked
                    .serials
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    == set;
                revoked.replace(set);
                if same {
                    tracing::debug!(file = %path.display(), revoked = n, "revocation list unchanged");
                } else {
                    tracing::info!(file = %path.display(), revoked = n, "revocation list reloaded");
                }
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "refusing the changed revocation file; the previous list stays in force")
            }
        }
        revoked
            .handled
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl TlsError {
    /// The configuration key the error is about, when it is about one file.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            TlsError::Read { key, .. }
            | TlsError::NoCertificate { key, .. }
            | TlsError::NoKey { key, .. }
            | TlsError::BadAnchor { key, .. } => Some(key),
            TlsError::Revocations { key, .. } => Some(key),
            TlsError::Verifier(_) => Some("tls.client_ca"),
            TlsError::Rustls(_) => Some("tls.server_key"),
        }
    }
}

/// The one crypto provider the relay uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file.
pub fn load_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let rerr = |source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(rerr)?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(rerr)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            key,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file.
pub fn load_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let rerr = |source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(rerr)?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(rerr)?
        .ok_or_else(|| TlsError::NoKey {
            key,
            path: path.to_path_buf(),
        })
}

fn root_store(key: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(key, path)? {
        roots.add(cert).map_err(|source| TlsError::BadAnchor {
            key,
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

/// The relay's server configuration: TLS 1.3 only, client certificate required, site URI required.
pub fn server_config(
    server_cert: &Path,
    server_key: &Path,
    client_ca: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with_revocations(server_cert, server_key, client_ca, Revoked::default())
}

/// [`server_config`] that also refuses the client certificates whose serial is in `revoked`.
pub fn server_config_with_revocations(
    server_cert: &Path,
    server_key: &Path,
    client_ca: &Path,
    revoked: Revoked,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let roots = root_store("tls.client_ca", client_ca)?;
    let webpki =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let verifier = Arc::new(SiteClientVerifier {
        inner: webpki,
        revoked,
    });
    let certs = load_certs("tls.server_cert", server_cert)?;
    let key = load_key("tls.server_key", server_key)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No session resumption: a resumed TLS 1.3 session skips the client certificate check, so a
    // revoked certificate could keep resuming. Agents keep their connections open; a full
    // handshake per new connection costs nothing that matters.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A client configuration as an agent uses it: trust `ca_cert`, present `client_cert`/`client_key`.
pub fn client_config(
    ca_cert: &Path,
    client_cert: &Path,
    client_key: &Path,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = root_store("relay.ca_cert", ca_cert)?;
    let certs = load_certs("relay.client_cert", client_cert)?;
    let key = load_key("relay.client_key", client_key)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// WebPKI chain verification, then: the leaf must name exactly one valid site and must not be
/// revoked.
#[derive(Debug)]
struct SiteClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Revoked,
}

impl ClientCertVerifier for SiteClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        match site_from_cert_der(end_entity) {
            Ok(site) => {
                if let Some(serial) = cert_serial(end_entity).filter(|s| self.revoked.contains(s)) {
                    tracing::warn!(site = %site, serial = %crate::ca::serial_hex(&serial), "refusing a revoked client certificate at the handshake");
                    return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
                }
                Ok(verified)
            }
            Err(e) => {
                tracing::warn!(error = %e, "refusing a client certificate signed by the site CA");
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_file_takes_comments_blank_lines_colons_and_leading_zeros() {
        let set =
            parse_revoked("# revoked after renewal\n\n7f:01:aa  # old WH01\n0x00ABCD\n  1  \n")
                .expect("parses");
        assert_eq!(set.len(), 3);
        assert!(set.contains(&vec![0x7f, 0x01, 0xaa]));
        assert!(
            set.contains(&vec![0xab, 0xcd]),
            "leading zero bytes dropped"
        );
        assert!(set.contains(&vec![0x01]), "odd number of digits");
        let list = Revoked::default();
        list.replace(set);
        assert!(list.contains(&[0x00, 0xab, 0xcd]));
        assert!(!list.contains(&[0xab]));
    }

    #[tokio::test]
    async fn the_watcher_puts_a_changed_file_in_force_and_keeps_the_old_list_on_a_bad_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("revoked.txt");
        std::fs::write(&path, "# nothing yet\n").expect("write");
        let list = Revoked::load(Some(&path)).expect("load");
        let trigger = Arc::new(tokio::sync::Notify::new());
        let cancel = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(watch_revocations(
            path.clone(),
            list.clone(),
            trigger.clone(),
            cancel.clone(),
        ));
        let wait_for = |what: &'static str, done: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let trigger = trigger.clone();
            let finished = done();
            async move {
                if finished {
                    return true;
                }
                assert!(std::time::Instant::now() < deadline, "{what}");
                trigger.notify_one();
                tokio::time::sleep(Duration::from_millis(20)).await;
                false
            }
        };
        std::fs::write(&path, "0a0b\n").expect("write");
        while !wait_for("serial revoked", &|| list.contains(&[0x0a, 0x0b])).await {}
        let handled = list.handled();
        std::fs::write(&path, "0a0b\nnonsense\n").expect("write");
        while !wait_for("bad file handled", &|| list.handled() > handled).await {}
        assert!(list.contains(&[0x0a, 0x0b]), "old list stays in force");
        assert_eq!(list.len(), 1);
        cancel.cancel();
        task.await.expect("watcher");
    }

    #[test]
    fn a_line_that_is_not_hex_is_refused_with_its_number() {
        assert_eq!(
            parse_revoked("abcd\nnot-a-serial\n"),
            Err(RevocationError::NotHex {
                line: 2,
                text: "not-a-serial".into()
            })
        );
    }
}
