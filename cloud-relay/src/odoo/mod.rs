//! Everything that speaks to Odoo: the client (JSON-RPC and JSON-2 transports, session, pacing,
//! version detection), failure classification, the pure inventory-count mapping, the pure
//! warehouse-flow mapping (pickings, move lines, lots, validate, readings) and the `[odoo]` flow
//! settings.

pub mod client;
pub mod count;
pub mod errors;
pub mod flows;
pub mod json2;
pub mod settings;
pub mod version;
