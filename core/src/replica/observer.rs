//! Telling apps which documents changed, so UIs refresh exactly what they show.

use crate::ids::DocId;
use crate::observers::Registry;
pub use crate::observers::Subscription;
use std::sync::Arc;

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOrigin {
    /// Made on this device.
    Local,
    /// Merged from another device.
    Remote,
    /// Removed from this device: the relay no longer shares it with this device.
    Removed,
}

/// One document that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocChange {
    /// The document.
    pub doc_id: DocId,
    /// Local or merged.
    pub origin: ChangeOrigin,
}

/// Receives change notifications. Called after the change is durable, on the thread
/// that made it; keep it quick (post to your UI thread).
pub trait DocumentObserver: Send + Sync {
    /// These documents changed.
    fn documents_changed(&self, changes: &[DocChange]);
}

impl<F: Fn(&[DocChange]) + Send + Sync> DocumentObserver for F {
    fn documents_changed(&self, changes: &[DocChange]) {
        self(changes)
    }
}

/// The subscribers of one replica.
#[derive(Default)]
pub(crate) struct Observers {
    registry: Registry<dyn DocumentObserver>,
}

impl Observers {
    pub(crate) fn subscribe(&self, observer: Arc<dyn DocumentObserver>) -> Subscription {
        self.registry.subscribe(observer)
    }

    pub(crate) fn notify(&self, changes: &[DocChange]) {
        if changes.is_empty() {
            return;
        }
        for o in self.registry.observers() {
            o.documents_changed(changes);
        }
    }
}
