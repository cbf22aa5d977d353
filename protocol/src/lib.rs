//! Scanbridge wire protocol: the canonical event model shared by agent and relay, and the
//! versioned envelope that carries it.
//!
//! This crate is the only wire boundary of the product. Everything that crosses the network
//! between agent and relay is a type defined here, serialised with postcard and wrapped in the
//! [`envelope`] (magic, format version, message kind, length, CRC-32C).
//!
//! Compatibility rule: postcard is not self-describing, so any change to a wire type (a new field,
//! a new enum variant) changes the bytes. Such a change bumps [`envelope::FORMAT_VERSION`] and
//! the golden fixtures in `tests/fixtures/` are regenerated deliberately
//! (`UPDATE_GOLDEN=1 cargo test -p scanbridge-protocol`). An accidental change fails the golden test.

pub mod envelope;
pub mod model;

pub use envelope::{decode, encode, DecodeError, Kind, Message, MAX_MESSAGE_BYTES};
pub use model::*;

/// HTTP header in which the agent names its event store on every `POST /v1/batches` (a random
/// id written when the store was created): the relay refuses a batch whose seqs the site already
/// sent from another store (a replaced gateway box restarting at seq 1) instead of taking its
/// events for duplicates.
pub const STORE_ID_HEADER: &str = "scanbridge-store-id";
