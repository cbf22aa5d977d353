//! `scanbridge-serial-bench`: serial ingest throughput of the real agent binary across several
//! pseudo-terminal "scanners" at 115200 baud, with every line checked.
//!
//! Each round, on a fresh state directory:
//! 1. a site CA and bundle (`scanbridge-relay ca init/issue`), and a recording relay in this
//!    process (mTLS like the real relay; it decodes every batch, keeps each event and acks at once);
//! 2. `--ports` pseudo-terminals, each reachable through a symlink as `/dev/serial/by-id/...` would
//!    be, and the agent started with one `[[serial]]` table per link (`baud = 115200`, CR framing,
//!    AIM prefixes on) and no MQTT broker;
//! 3. once every port is open (`scanbridge_agent_source_up`), one writer thread per pty master
//!    pushes `--lines` scans (`]E0` + a distinct valid EAN-13 + CR) as fast as the agent reads
//!    them (a pty has no line rate: a write blocks while the agent has not read the previous bytes);
//! 4. timed from the first write until the agent's `scanbridge_agent_events_committed_total`
//!    reaches ports × lines: the committed events/s figure;
//! 5. then every event forwarded to the recording relay is checked: consecutive seqs, each
//!    port's lines exactly once and in write order, nothing quarantined.
//!
//! Prints the figure per round and min / median / max. The wire ceiling of the same lines at a
//! real 115200 baud 8N1 (10 bits per byte) is printed for comparison; it is arithmetic, not a
//! measurement. Run a release build:
//! `cargo build --release -p scanbridge-agent -p scanbridge-relay -p scanbridge-e2e --bins`
//! then `target/release/scanbridge-serial-bench [--rounds 3] [--ports 8] [--lines 100000]`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::body::Body;
use clap::Parser;
use hyper::{Request, Response, StatusCode};
use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, PtyMaster};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use scanbridge_e2e::bins;
use scanbridge_e2e::process::{free_port, ChildProcess, LogPaths, StateDir};
use scanbridge_e2e::relay::{ca_init, ca_issue, toml_string, CaDir, SiteBundle};
use scanbridge_protocol::{decode, encode, Ack, Batch, EventBody, Source};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Measure committed serial lines per second across pseudo-terminal ports, with no line lost.
#[derive(Debug, Parser)]
#[command(name = "scanbridge-serial-bench", version)]
struct Cli {
    /// Rounds; the summary shows min / median / max over them.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Serial ports (pseudo-terminals), one writer each.
    #[arg(long, default_value_t = 8)]
    ports: usize,
    /// Lines written to each port per round (the default keeps a round at several seconds).
    #[arg(long, default_value_t = 100_000)]
    lines: usize,
    /// Keep each round's state directory (config and logs) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

const SITE: &str = "WH01";
const BAUD: u32 = 115_200;
const TIMEOUT: Duration = Duration::from_secs(600);

/// One round's measurement.
#[derive(Debug, Clone, Copy)]
struct Round {
    events: u64,
    /// First write → all committed.
    commit_secs: f64,
    /// First write → the last writer's last byte accepted by its pty.
    write_secs: f64,
}

impl Round {
    fn committed_eps(&self) -> f64 {
        self.events as f64 / self.commit_secs
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.rounds == 0 || cli.ports == 0 || cli.lines == 0 {
        bail!("--rounds, --ports and --lines must be at least 1");
    }
    if cli.lines > 10_000_000 {
        bail!("--lines is at most 10000000 (distinct EAN-13 codes per port)");
    }
    let mut rounds = Vec::new();
    for r in 1..=cli.rounds {
        let mut dir = StateDir::temp("serial-bench").context("state directory")?;
        eprintln!(
            "round {r}/{}: {} ports x {} lines, state in {}",
            cli.rounds,
            cli.ports,
            cli.lines,
            dir.path().display()
        );
        let round = run_round(dir.path(), cli.ports, cli.lines).await;
        if cli.keep || round.is_err() {
            dir.keep_for_diagnosis();
        }
        let round = round.with_context(|| format!("round {r}"))?;
        eprintln!(
            "  {} events committed in {:.2} s ({:.0} events/s); writers done after {:.2} s; verified: every line once, in order per port",
            round.events,
            round.commit_secs,
            round.committed_eps(),
            round.write_secs
        );
        rounds.push(round);
    }
    print_summary(&cli, &rounds);
    Ok(())
}

fn print_summary(cli: &Cli, rounds: &[Round]) {
    let mut eps: Vec<f64> = rounds.iter().map(Round::committed_eps).collect();
    eps.sort_by(f64::total_cmp);
    let (min, max) = (eps[0], eps[eps.len() - 1]);
    let median = if eps.len() % 2 == 1 {
        eps[eps.len() / 2]
    } else {
        (eps[eps.len() / 2 - 1] + eps[eps.len() / 2]) / 2.0
    };
    // "]E0" + 13 digits + CR; 8N1 puts 10 bits on the wire per byte.
    let line_bytes = 3 + 13 + 1;
    let ceiling = cli.ports as f64 * f64::from(BAUD) / 10.0 / line_bytes as f64;
    println!();
    println!(
        "scanbridge-serial-bench: {} ports at {BAUD} baud (pseudo-terminals), {} lines per port, {} rounds",
        cli.ports, cli.lines, rounds.len()
    );
    println!(
        "committed events/s across all ports: min {min:.0} / median {median:.0} / max {max:.0}"
    );
    println!(
        "rounds: {}",
        rounds
            .iter()
            .map(|r| format!("{:.0}", r.committed_eps()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "lost lines: 0, duplicated lines: 0, out of order: 0, quarantined: 0 (verified each round)"
    );
    println!(
        "for scale: {} real ports at {BAUD} baud 8N1 carry at most {ceiling:.0} such lines/s ({line_bytes}-byte lines; arithmetic, not measured)",
        cli.ports
    );
}

/// A pseudo-terminal standing in for a scanner, reachable at a symlink.
struct Scanner {
    master: PtyMaster,
    link: PathBuf,
}

impl Scanner {
    fn plug(link: &Path) -> anyhow::Result<Scanner> {
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).context("posix_openpt")?;
        grantpt(&master).context("grantpt")?;
        unlockpt(&master).context("unlockpt")?;
        let slave = ptsname_r(&master).context("ptsname")?;
        std::os::unix::fs::symlink(&slave, link)
            .with_context(|| format!("symlink {} -> {slave}", link.display()))?;
        Ok(Scanner {
            master,
            link: link.to_path_buf(),
        })
    }
}

/// The code port `port` sends as its `i`-th line: distinct per port and line, valid EAN-13.
fn codes(port: usize, lines: usize) -> Vec<String> {
    // Family digit per port (ports beyond 10 share families with distinct ranges).
    scanbridge_e2e::ean::generate((port % 10) as u8, (port / 10) as u64 * 10_000_000, lines)
}

fn agent_config(
    state_dir: &Path,
    bundle: &SiteBundle,
    relay_url: &str,
    status_port: u16,
    links: &[PathBuf],
) -> String {
    let p = |p: &Path| toml_string(&p.to_string_lossy());
    let mut conf = format!(
        "site = {site}\nagent_id = \"gw-serial-bench\"\nstate_dir = {state}\n\n[relay]\nurl = {url}\n\
         ca_cert = {ca}\nclient_cert = {cert}\nclient_key = {key}\n\n[status]\nlisten = \"127.0.0.1:{status_port}\"\n",
        site = toml_string(SITE),
        state = p(state_dir),
        url = toml_string(relay_url),
        ca = p(&bundle.ca_cert()),
        cert = p(&bundle.cert()),
        key = p(&bundle.key()),
    );
    for (i, link) in links.iter().enumerate() {
        conf.push_str(&format!(
            "\n[[serial]]\nname = \"port{i}\"\npath = {}\nbaud = {BAUD}\nframing = \"cr\"\nmax_line = 64\ndevice = \"SC-{i:02}\"\naim = true\n",
            p(link)
        ));
    }
    conf
}

async fn run_round(dir: &Path, ports: usize, lines: usize) -> anyhow::Result<Round> {
    let ca = ca_init(&dir.join("ca")).await.context("site CA")?;
    let bundle = ca_issue(&ca, SITE, &dir.join("site"))
        .await
        .context("site bundle")?;
    let relay = RecordingRelay::start(&ca).await?;

    let links: Vec<PathBuf> = (0..ports)
        .map(|i| dir.join(format!("usb-Bench_Scanner_{i}-if00")))
        .collect();
    let scanners = links
        .iter()
        .map(|l| Scanner::plug(l))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let state_dir = dir.join("agent-state");
    std::fs::create_dir_all(&state_dir).context("agent state dir")?;
    let status_port = free_port().context("free port")?;
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        agent_config(&state_dir, &bundle, &relay.url(), status_port, &links),
    )
    .context("write agent.toml")?;
    scanbridge_e2e::agent::check_config(&config).await?;
    let mut cmd = Command::new(bins::binary(bins::AGENT)?);
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info");
    let mut agent = ChildProcess::spawn("the agent", cmd, LogPaths::in_dir(dir, "agent"))?;

    let metrics_url = format!("http://127.0.0.1:{status_port}/metrics");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        agent.ensure_running()?;
        if let Ok(m) = scrape(&http, &metrics_url).await {
            let up = m
                .iter()
                .filter(|(k, v)| {
                    k.starts_with("scanbridge_agent_source_up{")
                        && k.contains("serial")
                        && **v == 1.0
                })
                .count();
            if up == ports {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the agent did not open all {ports} ports within 60 s; see its log in {}",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let total = (ports * lines) as u64;
    let start = Instant::now();
    let writers: Vec<std::thread::JoinHandle<anyhow::Result<(Instant, Scanner)>>> = scanners
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            let mut bytes = Vec::with_capacity(lines * 17);
            for c in codes(i, lines) {
                bytes.extend_from_slice(b"]E0");
                bytes.extend_from_slice(c.as_bytes());
                bytes.push(b'\r');
            }
            std::thread::spawn(move || {
                for chunk in bytes.chunks(4096) {
                    s.master.write_all(chunk).context("write to pty master")?;
                }
                // The master (the "cable") goes back to the caller: closing it now would hang up
                // the line and discard what the agent has not read yet.
                Ok((Instant::now(), s))
            })
        })
        .collect();
    let committed_at = loop {
        agent.ensure_running()?;
        let m = scrape(&http, &metrics_url).await.unwrap_or_default();
        let committed = m
            .get("scanbridge_agent_events_committed_total")
            .copied()
            .unwrap_or(0.0) as u64;
        if committed >= total {
            break Instant::now();
        }
        if start.elapsed() > TIMEOUT {
            bail!("only {committed} of {total} lines committed after {TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut writes_done = start;
    let mut plugged = Vec::new();
    for w in writers {
        let (done, scanner) = w
            .join()
            .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
        writes_done = writes_done.max(done);
        plugged.push(scanner);
    }
    relay.wait_contiguous(total, TIMEOUT).await?;
    let _ = agent.terminate(Duration::from_secs(20));
    for s in plugged {
        let _ = std::fs::remove_file(&s.link);
    }
    verify(&relay.events(), ports, lines)?;
    Ok(Round {
        events: total,
        commit_secs: committed_at.duration_since(start).as_secs_f64(),
        write_secs: writes_done.duration_since(start).as_secs_f64(),
    })
}

/// Every seq from 1 once; each port's codes exactly its written lines in order; no quarantine.
fn verify(events: &BTreeMap<u64, Recorded>, ports: usize, lines: usize) -> anyhow::Result<()> {
    let total = (ports * lines) as u64;
    if events.len() as u64 != total || events.keys().next_back() != Some(&total) {
        bail!(
            "the relay holds {} events (highest seq {:?}); expected exactly {total}",
            events.len(),
            events.keys().next_back()
        );
    }
    let mut per_port: Vec<Vec<&str>> = vec![Vec::with_capacity(lines); ports];
    for (seq, r) in events {
        match r {
            Recorded::Scan { port, code } => {
                let Some(i) = port
                    .strip_prefix("port")
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    bail!("seq {seq}: unknown port {port:?}");
                };
                let Some(list) = per_port.get_mut(i) else {
                    bail!("seq {seq}: unknown port {port:?}");
                };
                list.push(code);
            }
            Recorded::Other(what) => bail!("seq {seq} is not a serial scan: {what}"),
        }
    }
    for (i, got) in per_port.iter().enumerate() {
        let want = codes(i, lines);
        if got.len() != want.len() {
            bail!(
                "port{i}: {} lines committed, {} written",
                got.len(),
                want.len()
            );
        }
        if let Some(k) = got.iter().zip(&want).position(|(g, w)| *g != w.as_str()) {
            bail!(
                "port{i}: line {k} is {:?}, expected {:?} (lost, duplicated or reordered)",
                got[k],
                want[k]
            );
        }
    }
    Ok(())
}

/// `GET /metrics`: every sample by its full name (labels included).
async fn scrape(http: &reqwest::Client, url: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let text = http.get(url).send().await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect())
}

/// What the recording relay kept of one event.
#[derive(Debug, Clone)]
enum Recorded {
    Scan { port: String, code: String },
    Other(String),
}

/// An mTLS endpoint like the relay's that keeps every event it is sent, by seq, and acks at once.
struct RecordingRelay {
    addr: std::net::SocketAddr,
    events: Arc<Mutex<BTreeMap<u64, Recorded>>>,
    contiguous: watch::Receiver<u64>,
    stop: CancellationToken,
}

impl Drop for RecordingRelay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl RecordingRelay {
    async fn start(ca: &CaDir) -> anyhow::Result<RecordingRelay> {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls(ca)?));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let events = Arc::new(Mutex::new(BTreeMap::new()));
        let (tx, contiguous) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let stop = CancellationToken::new();
        let (ev, token) = (events.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = token.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((tcp, _)) = accepted else { continue };
                let (acceptor, ev, tx, token) =
                    (acceptor.clone(), ev.clone(), tx.clone(), token.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service =
                        hyper::service::service_fn(move |req| record(req, ev.clone(), tx.clone()));
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = conn => {}
                    }
                });
            }
        });
        Ok(RecordingRelay {
            addr,
            events,
            contiguous,
            stop,
        })
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    fn events(&self) -> BTreeMap<u64, Recorded> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    async fn wait_contiguous(&self, n: u64, timeout: Duration) -> anyhow::Result<()> {
        let mut rx = self.contiguous.clone();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|got| *got >= n))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
        if !reached {
            bail!(
                "the recording relay holds seqs 1..={} after {timeout:?}, expected 1..={n}",
                *self.contiguous.borrow()
            );
        }
        Ok(())
    }
}

async fn record(
    req: Request<hyper::body::Incoming>,
    events: Arc<Mutex<BTreeMap<u64, Recorded>>>,
    contiguous: Arc<watch::Sender<u64>>,
) -> Result<Response<Body>, Infallible> {
    let answer = |status: StatusCode, body: Vec<u8>| {
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = status;
        r
    };
    let bytes = match axum::body::to_bytes(Body::new(req.into_body()), 64 << 20).await {
        Ok(b) => b,
        Err(_) => return Ok(answer(StatusCode::BAD_REQUEST, b"unreadable body".to_vec())),
    };
    let batch: Batch = match decode(&bytes) {
        Ok(b) => b,
        Err(e) => return Ok(answer(StatusCode::BAD_REQUEST, e.to_string().into_bytes())),
    };
    let ack = {
        let Ok(mut map) = events.lock() else {
            return Ok(answer(StatusCode::SERVICE_UNAVAILABLE, Vec::new()));
        };
        let mut duplicates = 0u32;
        for e in batch.events {
            let r = match (&e.source, &e.body) {
                (Source::Serial { port }, EventBody::Scan(s)) => Recorded::Scan {
                    port: port.clone(),
                    code: s.code.clone(),
                },
                (source, body) => Recorded::Other(format!("{source:?} {body:?}")),
            };
            if map.insert(e.seq, r).is_some() {
                duplicates += 1;
            }
        }
        let mut upto = *contiguous.borrow();
        while map.contains_key(&(upto + 1)) {
            upto += 1;
        }
        contiguous.send_replace(upto);
        Ack { upto, duplicates }
    };
    Ok(match encode(&ack) {
        Ok(body) => answer(StatusCode::OK, body),
        Err(e) => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string().into_bytes(),
        ),
    })
}

fn server_tls(ca: &CaDir) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut std::fs::read(ca.ca_cert())?.as_slice()) {
        roots.add(cert?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut std::fs::read(ca.server_cert())?.as_slice())
            .collect::<Result<_, _>>()?;
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut std::fs::read(ca.server_key())?.as_slice())?
            .context("no private key in the server key file")?;
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?)
}
