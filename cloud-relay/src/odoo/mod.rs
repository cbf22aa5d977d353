//! Everything that speaks to Odoo: the JSON-RPC client, failure classification, and the pure
//! inventory-count mapping.

pub mod client;
pub mod count;
pub mod errors;
