//! Certificate rotation at the relay, over real TLS: `ca renew` issues a new key and serial for
//! the same site; the old and the renewed certificate are both accepted during the overlap; a
//! serial added to `[tls] revoked_serials_file` is refused at the handshake
//! (`certificate_revoked`) and, on a connection opened before, at the next request (403 with the
//! reason); removing it from the file accepts the certificate again; `check-config` refuses a
//! revocation file that does not parse, naming the key and the line.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{
    batch, client, post, raw_client_config, start_with_config, tls_failure, write_config,
};
use rustls::AlertDescription;
use scanbridge_protocol::encode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn serial_of(cert: &Path) -> String {
    let pem = std::fs::read(cert).unwrap();
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap();
    scanbridge_relay::tls::cert_serial_hex(&der).unwrap()
}

/// A relay whose config names `revoked.txt` (empty) as its revocation file.
async fn relay_with_revocations() -> (common::Harness, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    scanbridge_relay::ca::init(
        &dir.path().join("ca"),
        &["localhost".into()],
        &["127.0.0.1".parse().unwrap()],
    )
    .unwrap();
    let path = write_config(dir.path(), "http://127.0.0.1:9", "", 200);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "client_ca = \"ca/ca.pem\"\n",
        "client_ca = \"ca/ca.pem\"\nrevoked_serials_file = \"revoked.txt\"\n",
    );
    std::fs::write(&path, text).unwrap();
    let revoked = dir.path().join("revoked.txt");
    std::fs::write(&revoked, "# revoked site certificates, one serial a line\n").unwrap();
    (start_with_config(Arc::new(dir), &path).await, revoked)
}

/// One HTTP/1.1 request on an open TLS connection; returns the status line and the body text.
async fn request<S: AsyncReadExt + AsyncWriteExt + Unpin>(tls: &mut S, body: &[u8]) -> String {
    let head = format!(
        "POST /v1/batches HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(body).await.unwrap();
    tls.flush().await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read until the headers and the announced body are in.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_and_renewed_certificates_overlap_until_the_old_serial_is_revoked() {
    let (relay, revoked_file) = relay_with_revocations().await;
    let old = relay.bundle("WH01");
    let renewed_dir = relay.dir.path().join("renewed-WH01");
    let renewal = scanbridge_relay::ca::renew(&relay.ca_dir(), "WH01", &renewed_dir, 30).unwrap();
    let old_serial = serial_of(&old.join("site.pem"));
    assert_eq!(renewal.earlier.len(), 1);
    assert_eq!(renewal.earlier[0].serial, old_serial);
    assert_ne!(renewal.issued.serial, old_serial);
    assert_eq!(
        serial_of(&renewed_dir.join("site.pem")),
        renewal.issued.serial
    );

    // Overlap: both certificates of WH01 are accepted.
    let (old_client, new_client) = (client(&old), client(&renewed_dir));
    let b1 = encode(&batch("WH01", 1, vec![common::quarantined(b"x", "t")])).unwrap();
    assert_eq!(post(&old_client, &relay.url(), b1).await.0, 200);
    let b2 = encode(&batch("WH01", 2, vec![common::quarantined(b"y", "t")])).unwrap();
    assert_eq!(post(&new_client, &relay.url(), b2).await.0, 200);

    // A connection opened with the old certificate before the revocation.
    let old_config = raw_client_config(
        &relay.ca_dir().join("ca.pem"),
        Some((&old.join("site.pem"), &old.join("site.key"))),
    );
    let connector = tokio_rustls::TlsConnector::from(Arc::new(old_config.clone()));
    let tcp = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut open = connector.connect(name, tcp).await.unwrap();
    let b3 = encode(&batch("WH01", 3, vec![common::quarantined(b"z", "t")])).unwrap();
    let answer = request(&mut open, &b3).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    std::fs::write(
        &revoked_file,
        format!("# WH01 before its renewal\n{old_serial}\n"),
    )
    .unwrap();
    // New handshakes with the old certificate fail with certificate_revoked once reloaded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // An accepted connection stays open after its answer: bound each probe.
        let probe = tokio::time::timeout(
            Duration::from_secs(3),
            tls_failure(relay.addr, old_config.clone()),
        );
        match probe.await.unwrap_or(None) {
            Some(rustls::Error::AlertReceived(AlertDescription::CertificateRevoked)) => break,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "old certificate still accepted: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // The connection opened before the revocation is refused at its next request.
    let b4 = encode(&batch("WH01", 4, vec![common::quarantined(b"w", "t")])).unwrap();
    let answer = request(&mut open, &b4).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer.contains(&format!(
            "client certificate serial {old_serial} of site WH01 is revoked"
        )),
        "{answer}"
    );
    // The renewed certificate keeps working.
    assert_eq!(post(&new_client, &relay.url(), b4.clone()).await.0, 200);

    // Un-revoking (file edited again) accepts the old certificate again.
    std::fs::write(&revoked_file, "# none\n").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let probe = tokio::time::timeout(
            Duration::from_secs(3),
            tls_failure(relay.addr, old_config.clone()),
        );
        // Accepted: no TLS error (an answer, or the connection kept open past the probe).
        if probe.await.map_or(true, |e| e.is_none()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "old certificate never accepted again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.stop().await;
}

fn relay_cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_scanbridge-relay"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ca_renew_prints_the_new_serial_and_the_earlier_ones_to_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let p = |x: &Path| x.to_str().unwrap().to_string();
    assert_eq!(relay_cli(&["ca", "init", "--dir", &p(&ca)]).0, 0);
    let first = dir.path().join("wh01");
    assert_eq!(
        relay_cli(&[
            "ca",
            "issue",
            "--dir",
            &p(&ca),
            "--site",
            "WH01",
            "--out",
            &p(&first)
        ])
        .0,
        0
    );
    let renewed = dir.path().join("wh01-renewed");
    let (code, out, err) = relay_cli(&[
        "ca",
        "renew",
        "--dir",
        &p(&ca),
        "--site",
        "WH01",
        "--out",
        &p(&renewed),
    ]);
    assert_eq!(code, 0, "{err}");
    let new_serial = serial_of(&renewed.join("site.pem"));
    assert!(
        out.contains(&format!("(serial {new_serial}, valid until ")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "  {}  valid until",
            serial_of(&first.join("site.pem"))
        )),
        "{out}"
    );
    assert!(out.contains("revoked_serials_file"), "{out}");
    // A renewal never overwrites a bundle.
    let (code, _, err) = relay_cli(&[
        "ca",
        "renew",
        "--dir",
        &p(&ca),
        "--site",
        "WH01",
        "--out",
        &p(&renewed),
    ]);
    assert_eq!(code, 73, "{err}");
}

#[test]
fn check_config_refuses_a_revocation_file_that_does_not_parse_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    scanbridge_relay::ca::init(&dir.path().join("ca"), &["localhost".into()], &[]).unwrap();
    let path = write_config(dir.path(), "http://127.0.0.1:9", "", 200);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "client_ca = \"ca/ca.pem\"\n",
        "client_ca = \"ca/ca.pem\"\nrevoked_serials_file = \"revoked.txt\"\n",
    );
    std::fs::write(&path, text).unwrap();
    std::fs::write(dir.path().join("revoked.txt"), "abcd\nnot hex\n").unwrap();
    let (code, _, err) = relay_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("tls.revoked_serials_file"), "{err}");
    assert!(err.contains("line 7"), "config line of the key: {err}");
    assert!(err.contains("line 2: \"not hex\""), "file line: {err}");
}

/// Polls the file at `log` until it contains `needle`.
fn wait_for_log(log: &Path, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{needle:?} never logged:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, sig: &str) {
    // The shell's builtin `kill`: no procps needed on a minimal machine.
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{sig} {pid}"))
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

#[test]
fn the_relay_process_reloads_its_revocation_file_on_sighup_and_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    scanbridge_relay::ca::init(&dir.path().join("ca"), &["localhost".into()], &[]).unwrap();
    let path = write_config(dir.path(), "http://127.0.0.1:9", "", 200);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "client_ca = \"ca/ca.pem\"\n",
        "client_ca = \"ca/ca.pem\"\nrevoked_serials_file = \"revoked.txt\"\n",
    );
    std::fs::write(&path, text).unwrap();
    std::fs::write(dir.path().join("revoked.txt"), "").unwrap();
    let log = dir.path().join("relay.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_scanbridge-relay"))
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for_log(&log, "listening on");
    std::fs::write(dir.path().join("revoked.txt"), "# gone\n0a0b0c\n").unwrap();
    signal(child.id(), "HUP");
    wait_for_log(&log, "SIGHUP: reloading the revocation file");
    wait_for_log(&log, "revocation list reloaded");
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the relay"
    );
    signal(child.id(), "TERM");
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "{status:?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
