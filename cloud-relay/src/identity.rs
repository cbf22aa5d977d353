//! Site identity: the site id lives in the client certificate, as exactly one SAN URI
//! `urn:scanbridge:site:<ID>`. Owns parsing that URI out of a DER certificate; the relay never
//! takes a site from anything else (a batch's `site` field is only checked against it).

use std::fmt;

use x509_parser::extensions::GeneralName;

/// Prefix of the SAN URI that carries the site id.
pub const SITE_URI_PREFIX: &str = "urn:scanbridge:site:";

/// The SAN URI for `site`.
pub fn site_uri(site: &str) -> String {
    format!("{SITE_URI_PREFIX}{site}")
}

/// A verified site id, taken from the peer's certificate. Injected into every request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SiteId(String);

impl SiteId {
    /// For unit tests of code that receives an already verified identity.
    #[cfg(test)]
    pub(crate) fn verified_for_test(site: &str) -> SiteId {
        SiteId(site.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a certificate does not name a site.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("certificate does not parse as X.509: {0}")]
    Parse(String),
    #[error("certificate has no subject alternative name URI {SITE_URI_PREFIX}<ID>; issue it with `scanbridge-relay ca issue`")]
    NoSiteUri,
    #[error("certificate has {0} {SITE_URI_PREFIX} URIs; exactly one is allowed")]
    SeveralSiteUris(usize),
    #[error("certificate names site {0:?}, which is not a valid site id")]
    InvalidSite(String),
}

/// Extracts the site id from a DER certificate.
pub fn site_from_cert_der(der: &[u8]) -> Result<SiteId, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| IdentityError::Parse(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Parse(e.to_string()))?;
    let sites: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => uri.strip_prefix(SITE_URI_PREFIX),
            _ => None,
        })
        .collect();
    match sites.as_slice() {
        [] => Err(IdentityError::NoSiteUri),
        [one] if scanbridge_protocol::is_valid_site_id(one) => Ok(SiteId((*one).to_string())),
        [one] => Err(IdentityError::InvalidSite((*one).to_string())),
        many => Err(IdentityError::SeveralSiteUris(many.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, Ia5String, KeyPair, SanType};

    fn cert_with_sans(sans: Vec<SanType>) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(Ia5String::try_from(s).expect("ia5"))
    }

    #[test]
    fn a_certificate_with_one_site_uri_names_that_site() {
        let der = cert_with_sans(vec![
            uri("https://example.com"),
            uri("urn:scanbridge:site:WH01"),
        ]);
        assert_eq!(
            site_from_cert_der(&der).map(|s| s.0),
            Ok("WH01".to_string())
        );
    }

    #[test]
    fn a_certificate_without_a_site_uri_is_refused() {
        let der = cert_with_sans(vec![SanType::DnsName(
            Ia5String::try_from("x").expect("ia5"),
        )]);
        assert_eq!(site_from_cert_der(&der), Err(IdentityError::NoSiteUri));
    }

    #[test]
    fn a_certificate_with_two_site_uris_is_refused() {
        let der = cert_with_sans(vec![
            uri("urn:scanbridge:site:A"),
            uri("urn:scanbridge:site:B"),
        ]);
        assert_eq!(
            site_from_cert_der(&der),
            Err(IdentityError::SeveralSiteUris(2))
        );
    }

    #[test]
    fn a_certificate_with_an_invalid_site_id_is_refused() {
        let der = cert_with_sans(vec![uri("urn:scanbridge:site:WH/01")]);
        assert!(matches!(
            site_from_cert_der(&der),
            Err(IdentityError::InvalidSite(_))
        ));
    }
}
