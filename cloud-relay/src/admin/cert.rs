//! `scanbridge-relay ca issue-admin`: an admin client certificate from the relay's CA, with the
//! SAN URI `urn:scanbridge:admin:<name>` and no site URI, so the site listener refuses it and the
//! admin listener accepts it ([`crate::admin::auth`]).
//!
//! Files (`--out D`): `D/ca.pem` (trust anchor for the relay's server certificate),
//! `D/admin.pem`, `D/admin.key` (0600, created exclusively). Browsers that import PKCS#12 get it
//! from `openssl pkcs12 -export -in admin.pem -inkey admin.key -out admin.p12`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Ia5String, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};

use crate::admin::auth::ADMIN_URI_PREFIX;
use crate::ca::CaFiles;

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
    #[error(
        "cannot read {path}: {source} (is this a directory made by `scanbridge-relay ca init`?)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
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
    let ca = CaFiles::in_dir(ca_dir);
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| AdminCertError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let ca_pem = read(&ca.ca_cert)?;
    let ca_key = KeyPair::from_pem(&read(&ca.ca_key)?)?;
    let ca_cert = CertificateParams::from_ca_cert_pem(&ca_pem)?.self_signed(&ca_key)?;

    let now = OffsetDateTime::now_utc();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Scanbridge");
    dn.push(DnType::CommonName, format!("scanbridge admin {name}"));
    params.distinguished_name = dn;
    let uri = Ia5String::try_from(format!("{ADMIN_URI_PREFIX}{name}"))
        .map_err(|_| AdminCertError::InvalidName(name.to_string()))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let mut serial = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut serial);
    serial[0] = (serial[0] & 0x7f) | 0x01;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(days));
    let cert = params.signed_by(&key, &ca_cert, &ca_key)?;

    std::fs::create_dir_all(out).map_err(|source| AdminCertError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    write(&bundle.key, key.serialize_pem().as_bytes(), 0o600, true)?;
    write(&bundle.cert, cert.pem().as_bytes(), 0o644, true)?;
    write(&bundle.ca_cert, ca_pem.as_bytes(), 0o644, false)?;
    Ok(bundle)
}

fn write(path: &Path, bytes: &[u8], mode: u32, exclusive: bool) -> Result<(), AdminCertError> {
    let mut opts = OpenOptions::new();
    opts.write(true).mode(mode);
    if exclusive {
        opts.create_new(true);
    } else {
        opts.create(true).truncate(true);
    }
    let werr = |source| AdminCertError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = opts.open(path).map_err(werr)?;
    file.write_all(bytes).map_err(werr)?;
    file.sync_all().map_err(werr)?;
    Ok(())
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
