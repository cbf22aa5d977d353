//! A fault-injecting TCP proxy (tokio) that tests place between two parts of the chain: agent →
//! relay (TLS passes through untouched, the relay's certificate names 127.0.0.1) and relay → Odoo
//! simulator. It owns nothing but sockets; a test switches its faults at runtime through the
//! in-process [`FaultProxy`] handle:
//!
//! - **delay**: every chunk is held for `delay` before it is written on (each direction, so a round
//!   trip gains twice the delay); order is kept.
//! - **bandwidth**: each direction of each connection is paced to `bandwidth` bytes per second.
//! - **reset**: [`FaultProxy::reset_all`] aborts every open connection with a TCP RST (SO_LINGER 0,
//!   then close) on both sides; `reset_after_bytes` resets each new connection after a random
//!   number of forwarded bytes in a range (a lossy link); [`Mode::Refuse`] resets each new
//!   connection as soon as it is accepted (a service that is down).
//! - **blackhole** ([`Mode::Blackhole`]): connections are accepted but nothing is forwarded in
//!   either direction; new ones are never connected upstream. Peers see silence, not an error,
//!   until their own timeouts fire.
//! - **half-open** ([`Mode::HalfClose`]): one direction is shut (FIN) while the other keeps flowing.
//!
//! Lifting a blackhole does not revive the connections it swallowed (they never got an upstream):
//! call [`FaultProxy::heal`] (clear every fault and reset what is open) so the peers reconnect at
//! once instead of waiting for their timeouts. Dropping the proxy resets everything it holds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listening socket could not be bound.
    #[error("fault proxy: cannot listen on 127.0.0.1:0: {0} (is the loopback interface up?)")]
    Bind(#[source] std::io::Error),
}

/// Which way data flows through a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the connecting peer (the client) to the upstream service.
    ToUpstream,
    /// From the upstream service back to the client.
    ToClient,
}

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Forward both ways (subject to delay, bandwidth and resets).
    #[default]
    Pass,
    /// Accept, never forward: open connections go silent, new ones are held without an upstream.
    Blackhole,
    /// Reset new connections as soon as they are accepted; open ones are left alone.
    Refuse,
    /// Shut one direction (the peer reading it sees end of stream); the other keeps flowing.
    HalfClose(Direction),
}

/// The faults in force; read by every connection on every chunk.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Faults {
    pub mode: Mode,
    /// Added to each chunk in each direction.
    pub delay: Duration,
    /// Bytes per second per direction per connection; `None` is unlimited.
    pub bandwidth: Option<u64>,
    /// Each new connection is reset after forwarding a random number of bytes in this range
    /// (both directions counted together); `None` never.
    pub reset_after_bytes: Option<(u64, u64)>,
}

/// Counters since the proxy started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProxyStats {
    pub accepted: u64,
    /// Connections aborted with RST (refused, reset, reset after bytes, upstream unreachable).
    pub resets: u64,
    /// Connections held by a blackhole when they arrived.
    pub blackholed: u64,
    pub bytes_to_upstream: u64,
    pub bytes_to_client: u64,
    /// Open connections (forwarding, blackholed or being refused).
    pub open: u64,
    /// Open connections that forward (connected upstream); 0 once a reset has taken effect.
    pub forwarding: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    resets: AtomicU64,
    blackholed: AtomicU64,
    to_upstream: AtomicU64,
    to_client: AtomicU64,
    forwarding: AtomicU64,
}

struct Shared {
    upstream: SocketAddr,
    faults: watch::Sender<Faults>,
    conns: Mutex<HashMap<u64, CancellationToken>>,
    next_id: AtomicU64,
    counters: Counters,
    stop: CancellationToken,
}

/// A running proxy on 127.0.0.1; stops (and resets what it holds) when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

/// Largest chunk read at once.
const CHUNK: usize = 16 * 1024;
/// Chunks queued per direction between the reader and the (delaying) writer.
const QUEUE: usize = 64;

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<FaultProxy, ProxyError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(ProxyError::Bind)?;
        let addr = listener.local_addr().map_err(ProxyError::Bind)?;
        let (faults, _) = watch::channel(Faults::default());
        let shared = Arc::new(Shared {
            upstream,
            faults,
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            counters: Counters::default(),
            stop: CancellationToken::new(),
        });
        tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(FaultProxy { addr, shared })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT` of the proxy, for URLs.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where it forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.shared.faults.borrow().clone()
    }

    /// Replaces every fault at once.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.faults.send_replace(faults);
    }

    /// Changes only the mode.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.faults.send_modify(|f| f.mode = mode);
    }

    /// Changes only the one-way delay.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.faults.send_modify(|f| f.delay = delay);
    }

    /// Changes only the bandwidth limit.
    pub fn set_bandwidth(&self, bytes_per_second: Option<u64>) {
        self.shared
            .faults
            .send_modify(|f| f.bandwidth = bytes_per_second);
    }

    /// Changes only the reset-after-bytes range (applies to connections accepted from now on).
    pub fn set_reset_after_bytes(&self, range: Option<(u64, u64)>) {
        self.shared
            .faults
            .send_modify(|f| f.reset_after_bytes = range);
    }

    /// Aborts every open connection with RST on both sides; returns how many there were.
    pub fn reset_all(&self) -> usize {
        let conns = match self.shared.conns.lock() {
            Ok(c) => c.values().cloned().collect::<Vec<_>>(),
            Err(_) => return 0,
        };
        for c in &conns {
            c.cancel();
        }
        conns.len()
    }

    /// Clears every fault and resets the open connections, so both peers reconnect at once.
    pub fn heal(&self) -> usize {
        self.set_faults(Faults::default());
        self.reset_all()
    }

    /// Counters so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        ProxyStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            resets: c.resets.load(Ordering::Relaxed),
            blackholed: c.blackholed.load(Ordering::Relaxed),
            bytes_to_upstream: c.to_upstream.load(Ordering::Relaxed),
            bytes_to_client: c.to_client.load(Ordering::Relaxed),
            open: self
                .shared
                .conns
                .lock()
                .map(|c| c.len() as u64)
                .unwrap_or(0),
            forwarding: c.forwarding.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            _ = shared.stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((client, _)) = accepted else {
            // EMFILE and friends: pause instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = client.set_nodelay(true);
        let faults = shared.faults.borrow().clone();
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let reset = shared.stop.child_token();
        if let Ok(mut conns) = shared.conns.lock() {
            conns.insert(id, reset.clone());
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            match faults.mode {
                Mode::Refuse => abort(&client, &shared),
                Mode::Blackhole => {
                    shared.counters.blackholed.fetch_add(1, Ordering::Relaxed);
                    hold(client, &reset, &shared).await;
                }
                Mode::Pass | Mode::HalfClose(_) => {
                    let budget = faults
                        .reset_after_bytes
                        .map(|(lo, hi)| rand::thread_rng().gen_range(lo..=hi.max(lo)));
                    serve(client, budget, reset, shared.clone()).await;
                }
            }
            if let Ok(mut conns) = shared.conns.lock() {
                conns.remove(&id);
            }
        });
    }
}

/// RST `stream` now (SO_LINGER 0, then close).
fn abort(stream: &TcpStream, shared: &Shared) {
    let _ = stream.set_zero_linger();
    shared.counters.resets.fetch_add(1, Ordering::Relaxed);
}

/// A blackholed connection: read and discard until the client leaves or a reset comes.
async fn hold(mut client: TcpStream, reset: &CancellationToken, shared: &Shared) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        tokio::select! {
            _ = reset.cancelled() => {
                abort(&client, shared);
                return;
            }
            r = client.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

async fn serve(
    client: TcpStream,
    budget: Option<u64>,
    reset: CancellationToken,
    shared: Arc<Shared>,
) {
    let upstream = tokio::select! {
        _ = reset.cancelled() => None,
        u = TcpStream::connect(shared.upstream) => u.ok(),
    };
    let Some(upstream) = upstream else {
        // Upstream down (or reset while connecting): the client sees a reset, as from a dead host.
        abort(&client, &shared);
        return;
    };
    let _ = upstream.set_nodelay(true);
    shared.counters.forwarding.fetch_add(1, Ordering::Relaxed);
    let (client_r, client_w) = client.into_split();
    let (up_r, up_w) = upstream.into_split();
    let forwarded = Arc::new(AtomicU64::new(0));
    let link = Link {
        reset: reset.clone(),
        budget,
        forwarded,
        shared: shared.clone(),
    };
    let (tx_up, rx_up) = mpsc::channel(QUEUE);
    let (tx_cl, rx_cl) = mpsc::channel(QUEUE);
    let tasks = [
        tokio::spawn(read_side(client_r, tx_up, reset.clone())),
        tokio::spawn(read_side(up_r, tx_cl, reset.clone())),
        tokio::spawn(write_side(up_w, rx_up, Direction::ToUpstream, link.clone())),
        tokio::spawn(write_side(client_w, rx_cl, Direction::ToClient, link)),
    ];
    for t in tasks {
        let _ = t.await;
    }
    shared.counters.forwarding.fetch_sub(1, Ordering::Relaxed);
    if reset.is_cancelled() && !shared.stop.is_cancelled() {
        shared.counters.resets.fetch_add(1, Ordering::Relaxed);
    }
}

/// What both directions of one connection share.
#[derive(Clone)]
struct Link {
    reset: CancellationToken,
    budget: Option<u64>,
    forwarded: Arc<AtomicU64>,
    shared: Arc<Shared>,
}

/// Reads chunks and queues them with their arrival time; ends on EOF, error or reset.
async fn read_side(
    mut r: OwnedReadHalf,
    tx: mpsc::Sender<(Instant, Vec<u8>)>,
    reset: CancellationToken,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = tokio::select! {
            _ = reset.cancelled() => return,
            r = r.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
        };
        let sent = tokio::select! {
            _ = reset.cancelled() => return,
            s = tx.send((Instant::now(), buf[..n].to_vec())) => s,
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Writes queued chunks on after the delay, paced to the bandwidth, honouring blackhole and
/// half-close; on reset sets SO_LINGER 0 on its socket so closing it sends RST.
async fn write_side(
    mut w: OwnedWriteHalf,
    mut rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    dir: Direction,
    link: Link,
) {
    let mut faults = link.shared.faults.subscribe();
    let mut shut = false;
    let outcome = loop {
        let half_closed = |f: &Faults| f.mode == Mode::HalfClose(dir);
        if !shut && half_closed(&faults.borrow()) {
            let _ = w.shutdown().await;
            shut = true;
        }
        let next = tokio::select! {
            biased;
            _ = link.reset.cancelled() => break Err(()),
            _ = faults.changed() => continue,
            c = rx.recv() => c,
        };
        let Some((at, chunk)) = next else {
            break Ok(());
        };
        let f = faults.borrow().clone();
        if shut || f.mode == Mode::Blackhole || half_closed(&f) {
            continue;
        }
        tokio::select! {
            _ = link.reset.cancelled() => break Err(()),
            _ = tokio::time::sleep_until(at + f.delay) => {}
        }
        let slice = f
            .bandwidth
            .map_or(chunk.len(), |bw| (bw as usize / 20).max(512));
        let mut failed = false;
        for piece in chunk.chunks(slice.max(1)) {
            let paced = async {
                w.write_all(piece).await?;
                if let Some(bw) = f.bandwidth {
                    let secs = piece.len() as f64 / bw.max(1) as f64;
                    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                }
                Ok::<(), std::io::Error>(())
            };
            let r = tokio::select! {
                _ = link.reset.cancelled() => Err(std::io::Error::other("reset")),
                r = paced => r,
            };
            if r.is_err() {
                failed = true;
                break;
            }
            link.shared.count(dir, piece.len() as u64);
            let total = link
                .forwarded
                .fetch_add(piece.len() as u64, Ordering::Relaxed)
                + piece.len() as u64;
            if link.budget.is_some_and(|b| total >= b) {
                link.reset.cancel();
            }
        }
        if failed {
            // The peer went away: take the other direction down too.
            link.reset.cancel();
            break Err(());
        }
    };
    // The other side's reader ends on a reset too; a reset must never turn into a clean FIN.
    let outcome = if link.reset.is_cancelled() {
        Err(())
    } else {
        outcome
    };
    match outcome {
        Ok(()) => {
            // End of stream from the other side: pass the FIN on.
            if !shut {
                let _ = w.shutdown().await;
            }
        }
        Err(()) => {
            let _ = w.as_ref().set_zero_linger();
            w.forget();
        }
    }
}

impl Shared {
    /// Counts bytes forwarded in `dir`.
    fn count(&self, dir: Direction, n: u64) {
        match dir {
            Direction::ToUpstream => self.counters.to_upstream.fetch_add(n, Ordering::Relaxed),
            Direction::ToClient => self.counters.to_client.fetch_add(n, Ordering::Relaxed),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    /// An echo server that counts the bytes it received and the connections it accepted.
    struct Echo {
        addr: SocketAddr,
        received: Arc<AtomicU64>,
        connections: Arc<AtomicU64>,
    }

    async fn echo() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (rx, cx) = (received.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                cx.fetch_add(1, Ordering::Relaxed);
                let rx = rx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                rx.fetch_add(n as u64, Ordering::Relaxed);
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Echo {
            addr,
            received,
            connections,
        }
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await?;
        Ok(got)
    }

    /// Polls `cond` every 10 ms until it holds or 5 s pass.
    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn is_reset(e: &std::io::Error) -> bool {
        matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
        )
    }

    #[tokio::test]
    async fn without_faults_bytes_pass_both_ways_unchanged() {
        let e = echo().await;
        let proxy = FaultProxy::start(e.addr).await.expect("proxy");
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        let msg: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let got = round_trip(&mut s, &msg).await.expect("round trip");
        assert_eq!(got, msg);
        let st = proxy.stats();
        assert_eq!(st.accepted, 1);
        assert_eq!(st.bytes_to_upstream, 100_000);
        assert_eq!(st.bytes_to_client, 100_000);
    }

    #[tokio::test]
    async fn a_delay_is_added_in_each_direction() {
        let e = echo().await;
        let proxy = FaultProxy::start(e.addr).await.expect("proxy");
        proxy.set_delay(Duration::from_millis(150));
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        let t = Instant::now();
        round_trip(&mut s, b"ping").await.expect("round trip");
        let rtt = t.elapsed();
        assert!(rtt >= Duration::from_millis(300), "round trip {rtt:?}");
        proxy.set_delay(Duration::ZERO);
        let t = Instant::now();
        round_trip(&mut s, b"ping").await.expect("round trip");
        assert!(t.elapsed() < Duration::from_millis(300), "delay lifted");
    }

    #[tokio::test]
    async fn bandwidth_is_capped_per_direction() {
        let e = echo().await;
        let proxy = FaultProxy::start(e.addr).await.expect("proxy");
        proxy.set_bandwidth(Some(100_000));
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        let msg = vec![7u8; 50_000];
        let t = Instant::now();
        let got = round_trip(&mut s, &msg).await.expect("round trip");
        assert_eq!(got, msg);
        // 50 kB at 100 kB/s each way, pipelined: at least half a second.
        assert!(
            t.elapsed() >= Duration::from_millis(450),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn reset_all_aborts_open_connections_with_rst() {
        let e = echo().await;
        let proxy = FaultProxy::start(e.addr).await.expect("proxy");
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        round_trip(&mut s, b"hello").await.expect("round trip");
        assert_eq!(proxy.reset_all(), 1);
        let mut buf = [0u8; 16];
        let err = s
            .read(&mut buf)
            .await
            .expect_err("a reset, not end of stream");
        assert!(is_reset(&err), "{err:?}");
        eventually("the reset to be counted", || proxy.stats().resets == 1).await;
        eventually("the connection to be forgotten", || proxy.stats().open == 0).await;
        assert_eq!(proxy.stats().forwarding, 0);
    }

    #[tokio::test]
    async fn refuse_mode_resets_new_connections_and_never_reaches_upstream() {
        let e = echo().await;
        let proxy = FaultProxy::start(e.addr).await.expect("proxy");
        proxy.set_mode(Mode::Refuse);
        let mut s = TcpStream::connect(proxy.addr()).await.expect("tcp connect");
        let mut buf = [0u8; 16];
        let r = s.read(&mut buf).await;
        assert!(r.as_ref().is_err_and(is_reset), "{r:?}");
        assert_eq!(e.connections.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_blackhole_accepts_but_forwards_nothing_until_healed() {
        let e = echo().await;
        let proxy = FaultProxy::start(e.addr).await.expect("proxy");
        let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
        round_trip(&mut open, b"before").await.expect("round trip");
        proxy.set_mode(Mode::Blackhole);
        let mut fresh = TcpStream::connect(proxy.addr()).await.expect("accepted");
        for s in [&mut open, &mut fresh] {
            s.write_all(b"into the void")
                .await
                .expect("write is accepted");
            let mut buf = [0u8; 16];
            let r = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
            assert!(r.is_err(), "nothing may come back: {r:?}");
        }
        assert_eq!(
            e.received.load(Ordering::Relaxed),
            6,
            "only `before` got through"
        );
        assert_eq!(e.connections.load(Ordering::Relaxed), 1);
        assert_eq!(proxy.stats().blackholed, 1);

        assert_eq!(proxy.heal(), 2);
        let mut buf = [0u8; 16];
        let r = fresh.read(&mut buf).await;
        assert!(r.as_ref().is_err_and(is_reset), "{r:?}");
        let mut again = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(
            round_trip(&mut again, b"after").await.expect("rt"),
            b"after"
        );
    }

    #[tokio::test]
    async fn half_close_to_the_client_ends_its_stream_while_its_writes_still_flow() {
        let e = echo().await;
        let proxy = FaultProxy::start(e.addr).await.expect("proxy");
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        round_trip(&mut s, b"x").await.expect("round trip");
        proxy.set_mode(Mode::HalfClose(Direction::ToClient));
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).await.expect("end of stream, not an error");
        assert_eq!(n, 0);
        s.write_all(b"still going").await.expect("write");
        eventually("the upstream to receive the write", || {
            e.received.load(Ordering::Relaxed) == 1 + 11
        })
        .await;
    }

    #[tokio::test]
    async fn a_connection_is_reset_after_its_byte_budget() {
        let e = echo().await;
        let proxy = FaultProxy::start(e.addr).await.expect("proxy");
        proxy.set_reset_after_bytes(Some((1_000, 2_000)));
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        let mut failed = None;
        for _ in 0..100 {
            if let Err(e) = round_trip(&mut s, &[1u8; 100]).await {
                failed = Some(e);
                break;
            }
        }
        let err = failed.expect("reset within 100 round trips of 200 bytes");
        assert!(
            is_reset(&err) || err.kind() == ErrorKind::UnexpectedEof,
            "{err:?}"
        );
        let through = proxy.stats();
        assert!(
            (1_000..=2_400).contains(&(through.bytes_to_upstream + through.bytes_to_client)),
            "{through:?}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_upstream_shows_as_a_reset() {
        let gone = {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            l.local_addr().expect("addr")
        };
        let proxy = FaultProxy::start(gone).await.expect("proxy");
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        let mut buf = [0u8; 4];
        let r = s.read(&mut buf).await;
        assert!(r.as_ref().is_err_and(is_reset), "{r:?}");
    }
}
