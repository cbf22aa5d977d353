//! Scanbridge site agent: ingests barcode scans from MQTT brokers, commits them durably to a local
//! redb store (group commit, fsync) *before* acknowledging them upstream, and forwards them in
//! sequence order to the relay over mutual TLS.
//!
//! Architecture invariant 1: an event acknowledged upstream (MQTT PUBACK) is never lost, even on
//! `kill -9` or power loss — the PUBACK is sent only after the transaction holding the event has
//! committed with immediate durability, and an event leaves the store only after the relay has
//! acknowledged it (`Ack { upto }`).
//!
//! Code map:
//! - [`config`]: the typed, fully validated configuration (`check-config`).
//! - [`normalise`]: pure functions from raw MQTT payloads to canonical [`scanbridge_protocol::Event`]s.
//! - [`store`]: the redb buffer and its group-commit writer thread.
//! - [`sources`]: ingest sources (MQTT), which acknowledge only after commit.
//! - [`forwarder`]: the state machine and I/O loop that drains the store to the relay.
//! - [`tls`]: the one place the relay client's rustls configuration is built.
//! - [`status`]: builds the [`scanbridge_protocol::AgentStatus`] heartbeat and the local report.
//! - [`local_api`]: `/healthz`, `/metrics` and `/status` on a loopback port.
//! - [`supervisor`]: runs the sources, restarts them on a configuration reload (SIGHUP).
//! - [`app`]: wires the components together and owns shutdown.

pub mod app;
pub mod config;
pub mod forwarder;
pub mod local_api;
pub mod normalise;
pub mod sources;
pub mod status;
pub mod store;
pub mod supervisor;
pub mod tls;

/// Current wall clock as microseconds since the Unix epoch.
pub fn now_micros() -> scanbridge_protocol::UnixMicros {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}
