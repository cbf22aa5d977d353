//! The relay's own small certificate authority: `scanbridge-relay ca init`, `ca issue` and
//! `ca renew`.
//!
//! Owns every file the CA writes. One CA key (ECDSA P-256) signs two kinds of leaf:
//! - the relay's **server certificate** (SAN DNS names and IP addresses, EKU serverAuth);
//! - one **site certificate** per site (SAN URI `urn:scanbridge:site:<ID>`, EKU clientAuth), which
//!   is the only place the relay takes a site's identity from (see [`crate::identity`]).
//!
//! Files (private keys are created with mode 0600 from the start, never chmod-ed afterwards):
//! - `ca init --dir D`: `D/ca.pem`, `D/ca.key`, `D/server.pem`, `D/server.key`. Refuses to touch
//!   a directory that already holds a CA.
//! - `ca issue --dir D --site S --out B`: `B/ca.pem` (trust anchor for the relay's server
//!   certificate), `B/site.pem`, `B/site.key`. Refuses to overwrite an existing bundle.
//! - `ca renew --dir D --site S --out B`: the same for a site that already has a certificate: a
//!   fresh key and a new serial. The old certificate stays valid (the relay accepts both during
//!   the overlap) until it expires or its serial is added to `[tls] revoked_serials_file`.
//! - `D/issued.txt`: one line per issued site certificate, `<serial hex> <site> <notAfter>`,
//!   appended by `issue` and `renew`; `renew` lists the site's earlier serials from it, so the
//!   operator knows what to revoke once the agent uses the new certificate.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    Ia5String, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};

use crate::identity::site_uri;

/// Validity of the CA certificate.
const CA_VALIDITY_DAYS: i64 = 3650;
/// Validity of the relay's server certificate.
const SERVER_VALIDITY_DAYS: i64 = 825;
/// Default validity of a site certificate (`--days`).
pub const DEFAULT_SITE_DAYS: u32 = 397;

/// What can go wrong while creating or using the CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{0} already exists: refusing to overwrite an existing CA (use another --dir, or move the old CA away deliberately)")]
    CaExists(PathBuf),
    #[error("{0} already exists: refusing to overwrite an issued bundle (use another --out)")]
    BundleExists(PathBuf),
    #[error("invalid site id {0:?}: use 1 to 32 characters of A-Z a-z 0-9 - _")]
    InvalidSite(String),
    #[error("invalid server name {0:?}: {1}")]
    InvalidName(String, String),
    #[error("--days must be between 1 and 3650, got {0}")]
    InvalidDays(u32),
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

impl CaError {
    /// Whether the mistake is in the command line (exit code 64) rather than in the environment.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            CaError::InvalidSite(_) | CaError::InvalidName(..) | CaError::InvalidDays(_)
        )
    }
}

/// Paths of the files `ca init` writes into a CA directory.
#[derive(Debug, Clone)]
pub struct CaFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl CaFiles {
    pub fn in_dir(dir: &Path) -> CaFiles {
        CaFiles {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }
}

/// Paths of the files `ca issue` writes into a site bundle directory.
#[derive(Debug, Clone)]
pub struct BundleFiles {
    pub ca_cert: PathBuf,
    pub site_cert: PathBuf,
    pub site_key: PathBuf,
}

impl BundleFiles {
    pub fn in_dir(dir: &Path) -> BundleFiles {
        BundleFiles {
            ca_cert: dir.join("ca.pem"),
            site_cert: dir.join("site.pem"),
            site_key: dir.join("site.key"),
        }
    }
}

/// Creates a new CA and the relay's server certificate in `dir` (created if missing).
pub fn init(
    dir: &Path,
    server_names: &[String],
    server_ips: &[IpAddr],
) -> Result<CaFiles, CaError> {
    let files = CaFiles::in_dir(dir);
    for existing in [&files.ca_cert, &files.ca_key] {
        if existing.exists() {
            return Err(CaError::CaExists(existing.clone()));
        }
    }
    let mut sans = Vec::new();
    for name in server_names {
        let ia5 = Ia5String::try_from(name.as_str())
            .map_err(|e| CaError::InvalidName(name.clone(), e.to_string()))?;
        if name.is_empty() {
            return Err(CaError::InvalidName(name.clone(), "empty".into()));
        }
        sans.push(SanType::DnsName(ia5));
    }
    sans.extend(server_ips.iter().copied().map(SanType::IpAddress));

    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = CertificateParams::default();
    // A distinct name per CA, so a certificate of another relay's CA is "unknown CA" rather
    // than a bad signature from a same-named issuer.
    let mut id = [0u8; 4];
    rand::thread_rng().fill_bytes(&mut id);
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    ca_params.distinguished_name = dn(&format!("Scanbridge site CA {id}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.serial_number = Some(random_serial());
    ca_params.not_before = now - Duration::hours(1);
    ca_params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(server_names.first().map_or("scanbridge-relay", |s| s));
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.serial_number = Some(random_serial());
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(SERVER_VALIDITY_DAYS);
    let server_cert = params.signed_by(&server_key, &ca_cert, &ca_key)?;

    std::fs::create_dir_all(dir).map_err(|source| CaError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    // The key first: if it cannot be created exclusively, nothing else is written.
    write_new(
        &files.ca_key,
        ca_key.serialize_pem().as_bytes(),
        0o600,
        true,
    )?;
    write_new(&files.ca_cert, ca_cert.pem().as_bytes(), 0o644, true)?;
    write_new(
        &files.server_key,
        server_key.serialize_pem().as_bytes(),
        0o600,
        true,
    )?;
    write_new(
        &files.server_cert,
        server_cert.pem().as_bytes(),
        0o644,
        true,
    )?;
    Ok(files)
}

/// One issued site certificate, as recorded in `issued.txt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// Serial number, lower-case hex without leading zero bytes (the revocation handle).
    pub serial: String,
    pub site: String,
    /// `notAfter`, RFC 3339.
    pub not_after: String,
}

/// What `ca renew` did.
#[derive(Debug, Clone)]
pub struct Renewal {
    pub bundle: BundleFiles,
    pub issued: IssuedCert,
    /// The site's earlier certificates (from `issued.txt`), oldest first.
    pub earlier: Vec<IssuedCert>,
}

/// Issues a site certificate bundle for `site` from the CA in `ca_dir`, into `out`.
pub fn issue(ca_dir: &Path, site: &str, out: &Path, days: u32) -> Result<BundleFiles, CaError> {
    issue_recorded(ca_dir, site, out, days).map(|(bundle, _)| bundle)
}

/// Issues a renewal for `site`: a fresh key and certificate with a new serial, into `out`
/// (which must not hold a bundle yet). Returns the site's earlier serials for revocation.
pub fn renew(ca_dir: &Path, site: &str, out: &Path, days: u32) -> Result<Renewal, CaError> {
    let earlier: Vec<IssuedCert> = read_issued(ca_dir)?
        .into_iter()
        .filter(|c| c.site == site)
        .collect();
    let (bundle, issued) = issue_recorded(ca_dir, site, out, days)?;
    Ok(Renewal {
        bundle,
        issued,
        earlier,
    })
}

/// The records of `issued.txt` (empty when the file does not exist yet).
pub fn read_issued(ca_dir: &Path) -> Result<Vec<IssuedCert>, CaError> {
    let path = ca_dir.join(ISSUED_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(CaError::Read { path, source }),
    };
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some(IssuedCert {
                serial: f.next()?.to_string(),
                site: f.next()?.to_string(),
                not_after: f.next()?.to_string(),
            })
        })
        .collect())
}

/// Name of the issue log in the CA directory.
pub const ISSUED_FILE: &str = "issued.txt";

/// Lower-case hex of a DER serial's bytes without leading zero bytes (how serials are written
/// in `issued.txt`, in revocation files and in logs).
pub fn serial_hex(raw: &[u8]) -> String {
    raw.iter()
        .skip_while(|b| **b == 0)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn issue_recorded(
    ca_dir: &Path,
    site: &str,
    out: &Path,
    days: u32,
) -> Result<(BundleFiles, IssuedCert), CaError> {
    if !scanbridge_protocol::is_valid_site_id(site) {
        return Err(CaError::InvalidSite(site.to_string()));
    }
    if days == 0 || days > 3650 {
        return Err(CaError::InvalidDays(days));
    }
    let bundle = BundleFiles::in_dir(out);
    for existing in [&bundle.site_cert, &bundle.site_key] {
        if existing.exists() {
            return Err(CaError::BundleExists(existing.clone()));
        }
    }
    let uri = Ia5String::try_from(site_uri(site))
        .map_err(|e| CaError::InvalidSite(format!("{site} ({e})")))?;
    let leaf = issue_client(
        ca_dir,
        &ClientCert {
            common_name: format!("scanbridge site {site}"),
            uri,
            days,
            out,
            ca_cert: &bundle.ca_cert,
            cert: &bundle.site_cert,
            key: &bundle.site_key,
        },
    )?;
    let issued = IssuedCert {
        serial: leaf.serial,
        site: site.to_string(),
        not_after: leaf
            .not_after
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    };
    append_issued(ca_dir, &issued)?;
    Ok((bundle, issued))
}

/// A client certificate (EKU clientAuth) to issue: what differs between a site's certificate and
/// an admin's ([`crate::admin::cert`]).
pub(crate) struct ClientCert<'a> {
    /// Subject common name.
    pub common_name: String,
    /// The one SAN URI: `urn:scanbridge:site:<ID>` or `urn:scanbridge:admin:<name>`.
    pub uri: Ia5String,
    /// Validity from now (already checked by the caller).
    pub days: u32,
    /// The bundle directory (created if missing) and the three files written into it.
    pub out: &'a Path,
    pub ca_cert: &'a Path,
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// What [`issue_client`] issued.
pub(crate) struct IssuedLeaf {
    /// Serial number as [`serial_hex`] writes it.
    pub serial: String,
    pub not_after: OffsetDateTime,
}

/// Issues a client certificate signed by the CA in `ca_dir`: a fresh P-256 key (written 0600,
/// exclusively, before anything else), the certificate (exclusively) and the CA's certificate as
/// trust anchor (public and identical, so an existing one is replaced: several bundles in one
/// directory are odd but harmless).
pub(crate) fn issue_client(ca_dir: &Path, leaf: &ClientCert) -> Result<IssuedLeaf, CaError> {
    let ca = CaFiles::in_dir(ca_dir);
    let ca_pem = read(&ca.ca_cert)?;
    let ca_key = KeyPair::from_pem(&read(&ca.ca_key)?)?;
    // Rebuild the issuer from the stored CA certificate (same subject and key identifier).
    let ca_cert = CertificateParams::from_ca_cert_pem(&ca_pem)?.self_signed(&ca_key)?;

    let now = OffsetDateTime::now_utc();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(&leaf.common_name);
    params.subject_alt_names = vec![SanType::URI(leaf.uri.clone())];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let serial = random_serial();
    let issued = IssuedLeaf {
        serial: serial_hex(serial.as_ref()),
        not_after: now + Duration::days(i64::from(leaf.days)),
    };
    params.serial_number = Some(serial);
    params.not_before = now - Duration::hours(1);
    params.not_after = issued.not_after;
    let cert = params.signed_by(&key, &ca_cert, &ca_key)?;

    std::fs::create_dir_all(leaf.out).map_err(|source| CaError::Write {
        path: leaf.out.to_path_buf(),
        source,
    })?;
    write_new(leaf.key, key.serialize_pem().as_bytes(), 0o600, true)?;
    write_new(leaf.cert, cert.pem().as_bytes(), 0o644, true)?;
    write_new(leaf.ca_cert, ca_pem.as_bytes(), 0o644, false)?;
    Ok(issued)
}

fn append_issued(ca_dir: &Path, c: &IssuedCert) -> Result<(), CaError> {
    let path = ca_dir.join(ISSUED_FILE);
    let werr = |source| CaError::Write {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(&path)
        .map_err(werr)?;
    writeln!(file, "{} {} {}", c.serial, c.site, c.not_after).map_err(werr)?;
    file.sync_all().map_err(werr)
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Scanbridge");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// A random positive 128-bit serial number (the revocation handle).
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `path` with `mode` set at creation; `exclusive` refuses an existing file.
fn write_new(path: &Path, bytes: &[u8], mode: u32, exclusive: bool) -> Result<(), CaError> {
    let mut opts = OpenOptions::new();
    opts.write(true).mode(mode);
    if exclusive {
        opts.create_new(true);
    } else {
        opts.create(true).truncate(true);
    }
    let werr = |source| CaError::Write {
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
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    }

    #[test]
    fn init_writes_ca_and_server_files_with_private_keys_readable_only_by_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = init(
            dir.path(),
            &["localhost".into()],
            &["127.0.0.1".parse().expect("ip")],
        )
        .expect("init");
        assert_eq!(mode(&files.ca_key), 0o600);
        assert_eq!(mode(&files.server_key), 0o600);
        assert!(files.ca_cert.exists() && files.server_cert.exists());
    }

    #[test]
    fn init_refuses_to_overwrite_an_existing_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        init(dir.path(), &["localhost".into()], &[]).expect("first init");
        let before = std::fs::read(dir.path().join("ca.key")).expect("read key");
        let err = init(dir.path(), &["localhost".into()], &[]).expect_err("second init");
        assert!(matches!(err, CaError::CaExists(_)), "{err}");
        assert_eq!(
            std::fs::read(dir.path().join("ca.key")).expect("read key"),
            before
        );
    }

    #[test]
    fn issue_writes_a_site_bundle_whose_certificate_names_the_site() {
        let dir = tempfile::tempdir().expect("tempdir");
        init(dir.path(), &["localhost".into()], &[]).expect("init");
        let out = dir.path().join("wh01");
        let bundle = issue(dir.path(), "WH01", &out, DEFAULT_SITE_DAYS).expect("issue");
        assert_eq!(mode(&bundle.site_key), 0o600);
        let pem = std::fs::read(&bundle.site_cert).expect("read cert");
        let der = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .expect("one cert")
            .expect("pem");
        let site = crate::identity::site_from_cert_der(&der).expect("site");
        assert_eq!(site.as_str(), "WH01");
    }

    #[test]
    fn renew_issues_a_new_key_and_serial_for_the_same_site_and_lists_the_earlier_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        init(dir.path(), &["localhost".into()], &[]).expect("init");
        let first = issue(dir.path(), "WH01", &dir.path().join("a"), 30).expect("issue");
        issue(dir.path(), "WH02", &dir.path().join("b"), 30).expect("other site");
        let r = renew(dir.path(), "WH01", &dir.path().join("c"), 30).expect("renew");
        let der = |p: &Path| {
            let pem = std::fs::read(p).expect("read");
            let der = rustls_pemfile::certs(&mut pem.as_slice())
                .next()
                .expect("cert")
                .expect("pem");
            der.to_vec()
        };
        let (old, new) = (der(&first.site_cert), der(&r.bundle.site_cert));
        let (_, old_x) = x509_parser::parse_x509_certificate(&old).expect("x509");
        let (_, new_x) = x509_parser::parse_x509_certificate(&new).expect("x509");
        assert_ne!(old_x.raw_serial(), new_x.raw_serial());
        assert_ne!(
            old_x.public_key().raw,
            new_x.public_key().raw,
            "a fresh key"
        );
        assert_eq!(serial_hex(new_x.raw_serial()), r.issued.serial);
        assert_eq!(
            crate::identity::site_from_cert_der(&new)
                .expect("site")
                .as_str(),
            "WH01"
        );
        assert_eq!(r.earlier.len(), 1, "only WH01's earlier certificate");
        assert_eq!(r.earlier[0].serial, serial_hex(old_x.raw_serial()));
        assert_eq!(read_issued(dir.path()).expect("issued").len(), 3);
        let again = renew(dir.path(), "WH01", &dir.path().join("c"), 30);
        assert!(matches!(again, Err(CaError::BundleExists(_))));
    }

    #[test]
    fn issue_rejects_an_invalid_site_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        init(dir.path(), &["localhost".into()], &[]).expect("init");
        let err = issue(dir.path(), "WH 01", &dir.path().join("x"), 30).expect_err("bad id");
        assert!(err.is_usage());
    }
}
