//! The bench's probe relay speaks the relay's wire contract well enough for the real agent: every
//! scan the agent ingests is forwarded over mTLS and acknowledged, so the bench's ingest figure
//! measures the agent, not a broken probe. Certificates come from rcgen here (not the relay's CLI)
//! so the probe is tested on its own.

use std::path::Path;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use scanbridge_e2e::agent::{Agent, AgentOptions};
use scanbridge_e2e::mosquitto::Mosquitto;
use scanbridge_e2e::probe_relay::ProbeRelay;
use scanbridge_e2e::process::StateDir;
use scanbridge_e2e::publisher::{preregister_session, Publisher};
use scanbridge_e2e::relay::{CaDir, SiteBundle};
use scanbridge_e2e::scans::{topic_for, ScanPayload};

/// A CA with a localhost server certificate and a WH01 site bundle, in the relay's file layout.
fn write_pki(ca_dir: &Path, bundle_dir: &Path) -> (CaDir, SiteBundle) {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "probe test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");

    let server_key = KeyPair::generate().expect("server key");
    let server_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server params");
    let server = server_params
        .signed_by(&server_key, &ca_cert, &ca_key)
        .expect("server cert");

    let site_key = KeyPair::generate().expect("site key");
    let mut site_params = CertificateParams::new(Vec::<String>::new()).expect("site params");
    site_params.subject_alt_names = vec![SanType::URI(
        "urn:scanbridge:site:WH01".try_into().expect("uri"),
    )];
    site_params
        .distinguished_name
        .push(DnType::CommonName, "WH01");
    let site = site_params
        .signed_by(&site_key, &ca_cert, &ca_key)
        .expect("site cert");

    let write = |p: std::path::PathBuf, s: String| std::fs::write(p, s).expect("write pem");
    write(ca_dir.join("ca.pem"), ca_cert.pem());
    write(ca_dir.join("ca.key"), ca_key.serialize_pem());
    write(ca_dir.join("server.pem"), server.pem());
    write(ca_dir.join("server.key"), server_key.serialize_pem());
    write(bundle_dir.join("ca.pem"), ca_cert.pem());
    write(bundle_dir.join("site.pem"), site.pem());
    write(bundle_dir.join("site.key"), site_key.serialize_pem());
    (
        CaDir {
            dir: ca_dir.to_path_buf(),
        },
        SiteBundle {
            site: "WH01".into(),
            dir: bundle_dir.to_path_buf(),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_relay_acknowledges_every_scan_the_real_agent_forwards() {
    let dir = StateDir::temp("probe").expect("dir");
    let (ca, bundle) = write_pki(
        &dir.subdir("ca").expect("ca dir"),
        &dir.subdir("site").expect("site dir"),
    );
    let broker = Mosquitto::start(dir.path()).await.expect("mosquitto");
    let probe = ProbeRelay::start(&ca).await.expect("probe");
    let opts = AgentOptions::new(bundle, probe.url(), broker.port());
    preregister_session(broker.port(), &opts.client_id, &opts.topics)
        .await
        .expect("session");
    let mut agent = Agent::start(dir.path(), &opts).await.expect("agent");

    let mut publisher = Publisher::connect(broker.port(), "probe-scanner")
        .await
        .expect("publisher");
    let codes = scanbridge_e2e::ean::generate(7, 1, 10);
    for i in 0..500 {
        let scan = ScanPayload::count("SC-01", &codes[i % 10], "WH-STOCK-A01", i as f64);
        publisher
            .publish(&topic_for("SC-01"), scan.to_bytes())
            .await
            .expect("publish");
    }
    publisher
        .wait_all_acked(Duration::from_secs(30))
        .await
        .expect("pubacks");
    probe
        .wait_events(500, Duration::from_secs(60))
        .await
        .expect("all 500 events at the probe");
    agent.ensure_running().expect("agent alive");
    let state = probe.state();
    assert_eq!(state.events, 500);
    assert_eq!(
        state.highest_seq - state.events + 1,
        1,
        "seqs start at 1 and have no gaps"
    );
    assert!(agent.sample_peak_rss_kib().is_some_and(|kib| kib > 0));
}
