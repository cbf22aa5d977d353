//! Scanbridge end-to-end harness: the real binaries (mosquitto, the Odoo simulator, the relay and
//! the agent) as separate processes, driven the way a site and central IT would drive them.
//!
//! Code map:
//! - [`process`]: child processes (killed on drop, logs to files), state directories, waiting.
//! - [`bins`]: where the workspace binaries are (`cargo build --workspace --bins` puts them).
//! - [`mosquitto`], [`odoo_sim`], [`relay`], [`agent`]: one module per process we drive.
//! - [`publisher`]: the scanner side (QoS 1 publisher), the agent's broker session, a no-op
//!   subscriber baseline.
//! - [`stack`]: the whole chain brought up in order; seeded catalogs; count-stream plans.
//! - [`checks`]: the exactly-once, in-order verdict on the simulator's state (and the weaker one
//!   after a broker crash: [`checks::verify_after_broker_loss`]).
//! - [`resend`]: a QoS 1 scanner that re-publishes what the broker did not PUBACK after a crash.
//! - [`ean`], [`scans`]: valid (and deliberately invalid) EAN-13 codes; canonical scan payloads.
//! - [`probe_relay`]: an mTLS endpoint that acks batches, for the bench's ingest figure.
//! - [`synthetic`]: agent-shaped batches, a site-certificate HTTPS client, CPU time from /proc
//!   (the bench's drain baseline and relay-fleet figure).
//! - [`fault_proxy`]: a TCP proxy that delays, throttles, resets, blackholes or half-closes, set
//!   at runtime by the test; [`stack`] can put one between agent and relay and one between relay
//!   and the Odoo simulator.
//!
//! Used by the tests in `tests/`, the `scanbridge-demo` and the `scanbridge-bench` programs.
//!
//! Running:
//! - tests: `cargo build --workspace --bins && cargo test -p scanbridge-e2e` (tests/run.sh does
//!   both for the whole workspace). Needs `/usr/sbin/mosquitto` (tests/ensure-deps.sh installs
//!   it). A failing test keeps its state directory and prints its log files;
//!   `SCANBRIDGE_KEEP_STATE=1` keeps them for passing tests too.
//! - demo: `./tests/demo.sh` (release build), or `target/debug/scanbridge-demo --state-dir DIR`.
//! - bench: `cargo build --release --workspace --bins && target/release/scanbridge-bench`
//!   (all six figures of benchmarks.md; `--quick`, `--smoke`, `--figures 2,3`; BENCHMARKS.md).
//! - fault scenarios: `tests/scenarios.rs`; `SCANBRIDGE_LONG=1` selects the long variants.
//! - `SCANBRIDGE_BIN_DIR` points the harness at another directory of workspace binaries.

pub mod agent;
pub mod bins;
pub mod checks;
pub mod ean;
pub mod error;
pub mod fault_proxy;
pub mod flows;
pub mod mosquitto;
pub mod odoo_sim;
pub mod probe_relay;
pub mod process;
pub mod publisher;
pub mod relay;
pub mod resend;
pub mod scans;
pub mod stack;
pub mod synthetic;

pub use error::{HarnessError, Result};

/// Whether the long variants of the fault scenarios and SIGKILL loops run
/// (`SCANBRIDGE_LONG=1`; CI runs the short ones).
pub fn long_variant() -> bool {
    std::env::var("SCANBRIDGE_LONG").is_ok_and(|v| v == "1")
}
