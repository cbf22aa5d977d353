//! Serial scanners (`[[serial]]`): one task per port reads bytes, frames them into lines
//! ([`framing`]), turns each line into an event and hands it to the store writer. A line counts as
//! accepted only once the writer reports it committed.

pub mod framing;
