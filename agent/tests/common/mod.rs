//! Test helpers: a real mosquitto broker on a free port, polling with a deadline, a QoS 1
//! publisher (rumqttc), and a site certificate bundle.
#![allow(dead_code)]

pub mod in_process;
pub mod relay;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`eventually`] for an async probe.
pub async fn eventually_async<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn mosquitto_binary() -> PathBuf {
    for p in [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "mosquitto is not installed: run tests/run.sh (it installs mosquitto) before cargo test"
    );
}

/// The broker settings we ship to gateway boxes (`deploy/mosquitto/scanbridge.conf`), with
/// persistence off: the tests' brokers hold their queues in memory. Test brokers must run the
/// shipped limits, not their own: with an in-flight window (the 1,000 these tests once used)
/// mosquitto 2.0.11 lets new messages overtake queued ones (the fragment's comment says how),
/// and the publish-order test then fails for the broker's reason, not the agent's.
pub fn shipped_broker_settings() -> String {
    let mut text: String = include_str!("../../../deploy/mosquitto/scanbridge.conf")
        .lines()
        .filter(|line| {
            let key = line.split_whitespace().next().unwrap_or("");
            !matches!(
                key,
                "persistence" | "autosave_interval" | "autosave_on_changes"
            )
        })
        .map(|line| format!("{line}\n"))
        .collect();
    text.push_str("persistence false\n");
    text
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A mosquitto process with the tested configuration; killed on drop.
pub struct Broker {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, free_port())
    }

    pub fn start_on(port: u16) -> Broker {
        Self::start_in(tempfile::tempdir().expect("tempdir"), port)
    }

    fn start_in(dir: tempfile::TempDir, port: u16) -> Broker {
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\n{}",
                shipped_broker_settings()
            ),
        )
        .expect("write mosquitto.conf");
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start listening on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker { port, child, dir }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes `payloads` with QoS 1 on `topic` and returns once the broker acknowledged all.
pub async fn publish_all(port: u16, client_id: &str, topic: &str, payloads: Vec<Vec<u8>>) {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_inflight(200);
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let n = payloads.len();
    let topic = topic.to_string();
    let sender = tokio::spawn(async move {
        for p in payloads {
            client
                .publish(topic.clone(), QoS::AtLeastOnce, false, p)
                .await
                .expect("queue publish");
        }
        client
    });
    let mut acked = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked < n {
        assert!(
            Instant::now() < deadline,
            "publisher got only {acked}/{n} PUBACKs"
        );
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("publisher connection failed: {e}"),
            Err(_) => panic!("publisher stalled at {acked}/{n} PUBACKs"),
        }
    }
    let client = sender.await.expect("sender task");
    let _ = client.disconnect().await;
}

/// A site bundle: CA, server cert for 127.0.0.1/localhost, client cert for the site.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

impl Pki {
    pub fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("ca");

        let server_key = KeyPair::generate().expect("server key");
        let mut sp = CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
        sp.subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        let server = sp
            .signed_by(&server_key, &ca, &ca_key)
            .expect("server cert");

        let site_key = KeyPair::generate().expect("site key");
        let mut cp = CertificateParams::new(Vec::<String>::new()).expect("site params");
        cp.subject_alt_names.push(SanType::URI(
            "urn:scanbridge:site:WH01".try_into().expect("uri"),
        ));
        let site = cp.signed_by(&site_key, &ca, &ca_key).expect("site cert");

        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");
        std::fs::write(dir.path().join("site.pem"), site.pem()).expect("write");
        std::fs::write(dir.path().join("site.key"), site_key.serialize_pem()).expect("write");
        Pki {
            dir,
            ca_pem: ca.pem(),
            server_cert_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
