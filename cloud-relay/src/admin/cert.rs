//! `scanbridge-relay ca issue-admin`: an admin client certificate from the relay's CA, with the
//! SAN URI `urn:scanbridge:admin:<name>` and no site URI, so the site listener refuses it and the
//! admin listener accepts it ([`crate::admin::auth`]).
//!
//! Files (`--out D`): `D/ca.pem` (trust anchor for the relay's server certificate),
//! `D/admin.pem`, `D/admin.key` (0600, created exclusively). Browsers that import PKCS#12 get it
//! from `openssl pkcs12 -export -in admin.pem -inkey admin.key -out admin.p12`.

use std::path::{Path, PathBuf};

use rcgen::Ia5String;

use crate::admin::auth::ADMIN_URI_PREFIX;
use crate::ca::{issue_client, CaError, ClientCert};

/// Why an admin certificate could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum AdminCertError {
    #[error("invalid admin name {0:?}: use 1 to 32 characters of A-Z a-z 0-9 - _")]
    InvalidName(String),
    #[error("--days must be between 1 and 825, got {0}")]
    InvalidDays(u32),
    #[error(
        "{0} already exists: refusing to overwrite an issued admin certificate (use another --out)"
    )]
    Exists(PathBuf),
    /// Reading the CA, generating or writing the certificate (the same errors as `ca issue`).
    #[error(transparent)]
    Issue(#[from] CaError),
}

impl AdminCertError {
    /// Whether the mistake is in the command line (exit 64).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            AdminCertError::InvalidName(_) | AdminCertError::InvalidDays(_)
        )
    }
}

/// Files written by [`issue_admin`].
#[derive(Debug, Clone)]
pub struct AdminBundle {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Issues an admin certificate for `name` from the CA in `ca_dir` into `out`.
pub fn issue_admin(
    ca_dir: &Path,
    name: &str,
    out: &Path,
    days: u32,
) -> Result<AdminBundle, AdminCertError> {
    // Same alphabet as site ids.
    if !scanbridge_protocol::is_valid_site_id(name) {
        return Err(AdminCertError::InvalidName(name.to_string()));
    }
    if days == 0 || days > 825 {
        return Err(AdminCertError::InvalidDays(days));
    }
    let bundle = AdminBundle {
        ca_cert: out.join("ca.pem"),
        cert: out.join("admin.pem"),
        key: out.join("admin.key"),
    };
    for existing in [&bundle.cert, &bundle.key] {
        if existing.exists() {
            return Err(AdminCertError::Exists(existing.clone()));
        }
    }
    let uri = Ia5String::try_from(format!("{ADMIN_URI_PREFIX}{name}"))
        .map_err(|_| AdminCertError::InvalidName(name.to_string()))?;
    issue_client(
        ca_dir,
        &ClientCert {
            common_name: format!("scanbridge admin {name}"),
            uri,
            days,
            out,
            ca_cert: &bundle.ca_cert,
            cert: &bundle.cert,
            key: &bundle.key,
        },
    )?;
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::auth::{classify_cert, PeerCert};

    #[test]
    fn an_admin_certificate_names_the_admin_and_no_site() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::ca::init(&dir.path().join("ca"), &["localhost".into()], &[]).expect("init");
        let out = dir.path().join("alice");
        let b = issue_admin(&dir.path().join("ca"), "alice", &out, 30).expect("issue");
        let pem = std::fs::read(&b.cert).expect("read");
        let der = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .expect("one cert")
            .expect("pem");
        assert_eq!(classify_cert(&der), PeerCert::Admin("alice".into()));
        assert!(crate::identity::site_from_cert_der(&der).is_err());
        let again = issue_admin(&dir.path().join("ca"), "alice", &out, 30);
        assert!(matches!(again, Err(AdminCertError::Exists(_))));
    }
}
