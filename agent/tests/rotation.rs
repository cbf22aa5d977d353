//! Client certificate rotation in the running agent (real binary, real mosquitto, mutual TLS):
//! a renewed certificate and key are picked up without a restart — when the files change and on
//! SIGHUP — events buffered while the relay was unavailable go out once each, with the new
//! certificate; a mismatched pair is refused with an error and the old one stays; status shows
//! the new expiry; an expiry within 30 days is warned about in the log.
#![allow(clippy::unwrap_used)]

mod common;
mod support;

use std::path::Path;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
use support::recording_relay::RecordingRelay;
use support::{Agent, AgentSetup};

struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        TestCa {
            cert: p.self_signed(&key).unwrap(),
            key,
        }
    }

    fn server(&self) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        (
            p.signed_by(&key, &self.cert, &self.key).unwrap().pem(),
            key.serialize_pem(),
        )
    }

    /// A WH01 client certificate valid for `days`: (cert pem, key pem, serial hex, notAfter µs).
    fn site(&self, days: i64) -> (String, String, String, i64) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names
            .push(SanType::URI("urn:scanbridge:site:WH01".try_into().unwrap()));
        let not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days);
        p.not_after = not_after;
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let facts = scanbridge_agent::tls::cert_facts(cert.pem().as_bytes()).unwrap();
        (
            cert.pem(),
            key.serialize_pem(),
            facts.serial,
            facts.not_after,
        )
    }
}

/// Replaces a file the way `install` does: write aside, rename over.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn status_expiry(addr: &str) -> Option<i64> {
    support::report(addr).await["status"]["cert_not_after"].as_i64()
}

async fn wait_expiry(addr: &str, want: i64) {
    let a = addr.to_string();
    common::eventually_async(Duration::from_secs(60), "new expiry in status", || {
        let a = a.clone();
        async move { (status_expiry(&a).await == Some(want)).then_some(()) }
    })
    .await;
}

fn payloads(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    range
        .map(|i| format!(r#"{{"code":"4006381333931","qty":{i}}}"#).into_bytes())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_used_without_restart_and_buffered_events_go_out_once() {
    let broker = common::Broker::start();
    let ca = TestCa::new();
    let (server_cert, server_key) = ca.server();
    let relay = RecordingRelay::start(&ca.cert.pem(), &server_cert, &server_key).await;
    let bundle = tempfile::tempdir().unwrap();
    let (cert, key) = (
        bundle.path().join("site.pem"),
        bundle.path().join("site.key"),
    );
    std::fs::write(bundle.path().join("ca.pem"), ca.cert.pem()).unwrap();
    let (a_cert, a_key, a_serial, _) = ca.site(10);
    std::fs::write(&cert, &a_cert).unwrap();
    std::fs::write(&key, &a_key).unwrap();

    let pki = common::Pki::new(); // only for AgentSetup's defaults; paths overridden below
    let mut setup = AgentSetup::new(&pki, &relay.url(), broker.port);
    setup.ca = bundle.path().join("ca.pem");
    setup.cert = cert.clone();
    setup.key = key.clone();
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup.write(dir.path());
    let addr = setup.status_addr();
    let agent = Agent::spawn(&cfg, &dir.path().join("agent.log"));

    // 10 days left: warned at start.
    agent
        .wait_log(
            "the client certificate expires in 9d",
            1,
            Duration::from_secs(60),
        )
        .await;
    common::publish_all(broker.port, "pub", "scanbridge/SC-01/scan", payloads(0..50)).await;
    let seen = relay.seen.clone();
    common::eventually(Duration::from_secs(60), "50 events acked", || {
        (seen.lock().unwrap().acked.len() == 50).then_some(())
    })
    .await;

    // Relay unavailable: events buffer; meanwhile the certificate is renewed.
    relay.pause(true);
    common::publish_all(
        broker.port,
        "pub",
        "scanbridge/SC-01/scan",
        payloads(50..100),
    )
    .await;
    common::eventually_async(Duration::from_secs(60), "50 events buffered", || {
        let addr = addr.clone();
        async move {
            let r = support::report(&addr).await;
            (r["status"]["backlog_events"] == 50).then_some(())
        }
    })
    .await;
    let (b_cert, b_key, b_serial, b_expiry) = ca.site(400);
    replace(&key, &b_key);
    replace(&cert, &b_cert);
    wait_expiry(&addr, b_expiry).await;
    agent
        .wait_log("client certificate (re)loaded", 1, Duration::from_secs(30))
        .await;
    relay.pause(false);
    common::eventually(Duration::from_secs(60), "100 events acked", || {
        (seen.lock().unwrap().acked.len() == 100).then_some(())
    })
    .await;
    {
        let s = seen.lock().unwrap();
        assert_eq!(
            s.acked.keys().copied().collect::<Vec<_>>(),
            (1..=100).collect::<Vec<u64>>(),
            "seqs in order, none missing"
        );
        assert!(
            s.acked.values().all(|(_, n)| *n == 1),
            "nothing acknowledged twice"
        );
        let accepted_with = |seq: u64| {
            s.batches
                .iter()
                .rev()
                .find(|(_, b)| b.events.iter().any(|e| e.seq == seq))
                .map(|(serial, _)| serial.clone())
                .unwrap()
        };
        assert_eq!(accepted_with(1), a_serial);
        assert_eq!(
            accepted_with(100),
            b_serial,
            "buffered events went out with the renewed certificate"
        );
        let last = s.batches.last().unwrap();
        assert_eq!(
            last.1.status.as_ref().unwrap().cert_not_after,
            Some(b_expiry)
        );
    }

    // A certificate with someone else's key: refused, the renewed pair stays in use.
    let (c_cert, _, _, _) = ca.site(200);
    let (_, d_key, _, _) = ca.site(200);
    replace(&key, &d_key);
    replace(&cert, &c_cert);
    agent
        .wait_log(
            "refusing the changed client certificate/key; the previous one stays in use",
            1,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(status_expiry(&addr).await, Some(b_expiry));
    common::publish_all(
        broker.port,
        "pub",
        "scanbridge/SC-01/scan",
        payloads(100..110),
    )
    .await;
    common::eventually(Duration::from_secs(60), "110 events acked", || {
        (seen.lock().unwrap().acked.len() == 110).then_some(())
    })
    .await;
    assert_eq!(seen.lock().unwrap().batches.last().unwrap().0, b_serial);

    // SIGHUP checks at once (and does not stop the agent).
    let (e_cert, e_key, e_serial, e_expiry) = ca.site(300);
    replace(&key, &e_key);
    replace(&cert, &e_cert);
    agent.sighup();
    wait_expiry(&addr, e_expiry).await;
    common::publish_all(
        broker.port,
        "pub",
        "scanbridge/SC-01/scan",
        payloads(110..111),
    )
    .await;
    common::eventually(Duration::from_secs(60), "111 events acked", || {
        (seen.lock().unwrap().acked.len() == 111).then_some(())
    })
    .await;
    assert_eq!(seen.lock().unwrap().batches.last().unwrap().0, e_serial);
    let log = agent.stop();
    assert!(log.contains("SIGHUP"), "{log}");
}
