//! Odoo's external JSON-RPC API: envelope (`envelope`), exceptions (`errors`) and the
//! `common` / `object` services (`service`).

pub mod envelope;
pub mod errors;
pub mod service;
