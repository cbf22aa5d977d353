//! Ingest sources: where events enter the agent. Each source normalises what it receives, hands
//! it to the store writer, and acknowledges upstream only when the writer reports it committed.
//!
//! This module also owns [`Health`], the shared board each source reports its connection state
//! to; the status heartbeat reads it.

pub mod mqtt;
pub mod serial;

use std::sync::{Arc, Mutex, PoisonError};

use scanbridge_protocol::{SourceHealth, SourceKind};

/// Connection state of every source, for the status heartbeat.
#[derive(Debug, Clone, Default)]
pub struct Health {
    inner: Arc<Mutex<Vec<SourceHealth>>>,
}

impl Health {
    /// Adds a source (initially down) and returns its slot.
    pub fn register(&self, name: &str, kind: SourceKind) -> usize {
        let mut v = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        v.push(SourceHealth {
            name: name.to_string(),
            kind,
            up: false,
            detail: "starting".into(),
        });
        v.len() - 1
    }

    /// Records a state change of source `slot`.
    pub fn set(&self, slot: usize, up: bool, detail: impl Into<String>) {
        let mut v = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = v.get_mut(slot) {
            h.up = up;
            h.detail = detail.into();
        }
    }

    /// Forgets every source (configuration reload: call only after the old sources stopped,
    /// then register the new ones).
    pub fn clear(&self) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// A copy of every source's health.
    pub fn snapshot(&self) -> Vec<SourceHealth> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
