//! Ingest sources: where events enter the agent. Each source normalises what it receives, hands
//! it to the store writer, and acknowledges upstream only when the writer reports it committed.
//!
//! This module also owns [`Health`], the shared board each source reports its connection state
//! to; the status heartbeat reads it, and [`Tables`], the normalisation tables (`[[stations]]`,
//! `[[tags]]`) a configuration reload hands to running sources over a watch channel.

pub mod mqtt;
pub mod serial;

use std::sync::{Arc, Mutex, PoisonError};

use scanbridge_protocol::{SourceHealth, SourceKind};
use tokio::sync::watch;

use crate::normalise::{Stations, Tags};

/// The normalisation tables a source applies to what it receives.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    pub stations: Arc<Stations>,
    pub tags: Arc<Tags>,
}

/// Where a running source learns of new [`Tables`] (configuration reload): it checks before
/// normalising each message or line, so the new tables apply from the next one on.
pub type TablesRx = watch::Receiver<Tables>;

/// The newest tables from `rx` if they changed since last seen.
pub(crate) fn newer_tables(rx: &mut Option<TablesRx>) -> Option<Tables> {
    let rx = rx.as_mut()?;
    rx.has_changed()
        .unwrap_or(false)
        .then(|| rx.borrow_and_update().clone())
}

/// Connection state of every source, for the status heartbeat. Slots are stable: a removed
/// source leaves an empty slot, so the slots of the others stay valid.
#[derive(Debug, Clone, Default)]
pub struct Health {
    inner: Arc<Mutex<Vec<Option<SourceHealth>>>>,
}

impl Health {
    /// Adds a source (initially down) and returns its slot.
    pub fn register(&self, name: &str, kind: SourceKind) -> usize {
        let mut v = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        v.push(Some(SourceHealth {
            name: name.to_string(),
            kind,
            up: false,
            detail: "starting".into(),
        }));
        v.len() - 1
    }

    /// Records a state change of source `slot`.
    pub fn set(&self, slot: usize, up: bool, detail: impl Into<String>) {
        let mut v = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(Some(h)) = v.get_mut(slot) {
            h.up = up;
            h.detail = detail.into();
        }
    }

    /// Forgets source `slot` (it was stopped for good by a configuration reload); later
    /// [`Health::set`] calls for it are ignored.
    pub fn remove(&self, slot: usize) {
        let mut v = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = v.get_mut(slot) {
            *h = None;
        }
    }

    /// A copy of every source's health.
    pub fn snapshot(&self) -> Vec<SourceHealth> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flatten()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_source_leaves_the_board_and_the_others_keep_their_slots() {
        let h = Health::default();
        let a = h.register("a", SourceKind::Mqtt);
        let b = h.register("b", SourceKind::Serial);
        h.remove(a);
        h.set(a, true, "late");
        h.set(b, true, "open");
        let s = h.snapshot();
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].name.as_str(), s[0].up, s[0].detail.as_str()),
            ("b", true, "open")
        );
    }
}
