//! Odoo's external JSON-RPC API: envelope (`envelope`), exceptions (`errors`) and the
//! `common` / `object` services (`service`), and Odoo 19's JSON-2 API (`json2`).

pub mod envelope;
pub mod errors;
pub mod json2;
pub mod service;
