//! Scanbridge cloud relay: accepts batches of site events over HTTPS with mutual TLS, stores
//! them durably (redb), and pushes them into Odoo through its external API, exactly once.
//!
//! Code map:
//! - [`config`]: the TOML configuration, validated before anything starts.
//! - [`ca`]: the relay's own site CA (`ca init`, `ca issue`).
//! - [`tls`]: every rustls configuration; [`identity`]: site id from a client certificate.
//! - [`server`]: accept loop, handshake, HTTP; [`intake`]: `POST /v1/batches`.
//! - [`inbox`]: the redb store (tables documented there).
//! - [`odoo`]: JSON-RPC client, error classes, count mapping; [`pusher`]: inbox → Odoo.
//! - [`relay`]: wires the components together and shuts them down.
//! - [`admin`]: the admin listener: fleet status API, metrics, dead letters, trace, web page.

pub mod admin;
pub mod ca;
pub mod cli;
pub mod config;
pub mod identity;
pub mod inbox;
pub mod intake;
pub mod odoo;
pub mod pusher;
pub mod relay;
pub mod server;
pub mod tls;

/// Microseconds since the Unix epoch, UTC (0 if the clock is before 1970).
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
