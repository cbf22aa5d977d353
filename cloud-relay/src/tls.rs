//! Every TLS configuration of the relay is built here, and only here.
//!
//! Server side: rustls 0.23 with the ring provider, TLS 1.3 only, a client certificate is
//! REQUIRED and verified against `client_ca` ([`WebPkiClientVerifier`]), and it must name exactly
//! one site ([`SiteClientVerifier`], so a certificate without a site URI fails the handshake with
//! an `access_denied` alert instead of being accepted and dropped). ALPN offers HTTP/1.1 only.
//!
//! [`client_config`] builds the matching client side (used by tests and tools that talk to the
//! relay like an agent does).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
}

impl TlsError {
    /// The configuration key the error is about, when it is about one file.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            TlsError::Read { key, .. }
            | TlsError::NoCertificate { key, .. }
            | TlsError::NoKey { key, .. }
            | TlsError::BadAnchor { key, .. } => Some(key),
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
    let provider = provider();
    let roots = root_store("tls.client_ca", client_ca)?;
    let webpki =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let verifier = Arc::new(SiteClientVerifier { inner: webpki });
    let certs = load_certs("tls.server_cert", server_cert)?;
    let key = load_key("tls.server_key", server_key)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
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

/// WebPKI chain verification, then: the leaf must name exactly one valid site.
#[derive(Debug)]
struct SiteClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
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
            Ok(_) => Ok(verified),
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
