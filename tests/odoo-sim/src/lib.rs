//! scanbridge-odoo-sim: an Odoo 17/18/19 simulator for Scanbridge's tests, faithful at the wire
//! (JSON-RPC envelope, JSON-2, error shapes, HTTP statuses) and model level (real model and field
//! names, inventory-mode quants, `load` by external id, `action_apply_inventory`, transfers with
//! lots and backorders), with test-control
//! endpoints and fault injection.
//!
//! Code map:
//! - `version` — what differs between 17, 18 and 19.
//! - `db` — schema and in-memory tables; `domain` — search domains.
//! - `models` — `call_kw` dispatch and the models (`orm`, `product`, `location`, `quant`,
//!   `move_`, `move_line`, `picking`, `backorder`, `lot`, `ir_model_data`, `load`, `users`):
//!   plain functions over `db::Db`.
//! - `rpc` — JSON-RPC envelope, Odoo exceptions, the `common`/`object`/`db` services, and
//!   Odoo 19's JSON-2 API (`rpc::json2`).
//! - `sim` — the shared instance: one transaction per call, login cooldown, statistics.
//! - `faults`, `control`, `demo` — test-only controls and demo data.
//! - `server` — HTTP serving with connection dropping.

pub mod control;
pub mod db;
pub mod demo;
pub mod domain;
pub mod faults;
pub mod models;
pub mod rpc;
pub mod server;
pub mod sim;
pub mod version;

pub use sim::{Sim, SimConfig};
pub use version::OdooVersion;
