//! `scanbridge-relay sites | dead-letters list|show|replay|skip | trace` against a running relay
//! process (the real binary, its admin listener found through `--config`), with the Odoo
//! simulator: an unknown product is dead-lettered, the product is seeded through `/__sim/seed`,
//! and `dead-letters replay` then gets the event applied.

#![allow(clippy::unwrap_used)]

mod admin_support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use admin_support::*;

const WAIT: Duration = Duration::from_secs(90);
const KNOWN: &str = "4006381333931";
const UNKNOWN: &str = "5901234123457";

/// The relay as a child process; killed when dropped.
struct RelayProcess {
    child: Child,
    site_port: u16,
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_relay(config: &Path) -> RelayProcess {
    let child = Command::new(env!("CARGO_BIN_EXE_scanbridge-relay"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The guard exists before anything can fail, so a failed start still kills the process.
    let mut relay = RelayProcess {
        child,
        site_port: 0,
    };
    let stderr = relay.child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Nobody listens any more: keep draining so the relay never blocks on stderr.
                continue;
            }
        }
    });
    let deadline = std::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    let (mut site_port, mut admin_up) = (None, false);
    while site_port.is_none() || !admin_up {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("relay did not start; log:\n{}", seen.join("\n")));
        if line.contains("admin listener on") {
            admin_up = true;
        } else if let Some(rest) = line.split("listening on ").nth(1) {
            let addr: std::net::SocketAddr =
                rest.split_whitespace().next().unwrap().parse().unwrap();
            site_port = Some(addr.port());
        }
        seen.push(line);
    }
    relay.site_port = site_port.unwrap();
    relay
}

/// Runs the CLI; returns exit code, stdout, stderr.
async fn cli(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_scanbridge-relay"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn args(config: &Path, words: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = words.iter().map(|s| s.to_string()).collect();
    out.push("--config".into());
    out.push(config.to_str().unwrap().into());
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_and_replayed_with_success_after_the_product_is_seeded() {
    let sim = OdooSim::start().await;
    sim.seed(&[(KNOWN, "Widget")], &[(LOCATION, "A01")]).await;
    let setup = Setup::new(&sim.url, &format!("127.0.0.1:{}", free_port()), "");
    let config: PathBuf = setup.config.clone();
    let relay = start_relay(&config);

    let site = site_client(&setup.bundle("WH01"));
    let url = format!("https://127.0.0.1:{}/v1/batches", relay.site_port);
    let b = batch(
        "WH01",
        1,
        vec![count(KNOWN, 4.0), count(UNKNOWN, 2.0)],
        Some(agent_status(0, None, 60)),
    );
    send(&site, &url, &b).await;

    let listed = eventually(WAIT, "the dead letter in `dead-letters list`", || {
        let a = args(&config, &["dead-letters", "list"]);
        async move {
            let (code, out, err) = cli(a).await;
            assert_eq!(code, 0, "{err}");
            out.lines()
                .any(|l| l.starts_with("WH01") && l.contains(" 2 "))
                .then_some(out)
        }
    })
    .await;
    assert!(listed.starts_with("SITE"), "{listed}");
    assert!(
        listed.contains("open") && listed.contains(UNKNOWN),
        "{listed}"
    );

    let (code, shown, err) = cli(args(&config, &["dead-letters", "show", "WH01", "2"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(shown.contains("state:    open"), "{shown}");
    assert!(shown.contains("reason:"), "{shown}");

    let (code, sites, err) = cli(args(&config, &["sites"])).await;
    assert_eq!(code, 0, "{err}");
    let row = sites.lines().find(|l| l.starts_with("WH01")).unwrap();
    assert!(row.contains("online"), "{sites}");

    let (code, traced, err) = cli(args(&config, &["trace", "WH01", "2"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(traced.contains("dead_lettered"), "{traced}");

    sim.seed(&[(UNKNOWN, "Gadget")], &[]).await;
    let (code, out, err) = cli(args(&config, &["dead-letters", "replay", "WH01", "2"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed"), "{out}");

    let traced = eventually(WAIT, "the replayed event applied in Odoo", || {
        let a = args(&config, &["trace", "WH01", "2"]);
        async move {
            let (_, out, _) = cli(a).await;
            out.contains("applied_in_odoo").then_some(out)
        }
    })
    .await;
    assert!(traced.contains("scanbridge.WH01_2"), "{traced}");
    assert!(traced.contains("stock.quant id "), "{traced}");
    assert!(
        traced.contains("received_at_agent") && traced.contains("stored_at_relay"),
        "{traced}"
    );

    let (code, by_code, err) = cli(args(&config, &["trace", "--barcode", KNOWN])).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        by_code.contains("WH01/1") && by_code.contains("applied_in_odoo"),
        "{by_code}"
    );

    let (code, listed, _) = cli(args(&config, &["dead-letters", "list", "--site", "WH01"])).await;
    assert_eq!(code, 0);
    assert!(!listed.contains("open"), "{listed}");

    let (code, _, err) = cli(args(
        &config,
        &["dead-letters", "skip", "WH01", "99", "--note", "x"],
    ))
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no dead letter"), "{err}");

    let mut unreachable = args(&config, &["sites"]);
    unreachable.extend([
        "--url".to_string(),
        format!("https://127.0.0.1:{}", free_port()),
    ]);
    let (code, _, err) = cli(unreachable).await;
    assert_eq!(code, 69, "{err}");
    drop(relay);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_section_the_cli_says_what_to_add_and_exits_64() {
    let setup = Setup::new("http://127.0.0.1:9", "127.0.0.1:0", "");
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let cut = text.find("[admin]").unwrap();
    std::fs::write(&setup.config, &text[..cut]).unwrap();
    let (code, _, err) = cli(args(&setup.config, &["dead-letters", "list"])).await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("no [admin] section"), "{err}");
}
