//! Telling apps which documents changed, so UIs refresh exactly what they show.

use crate::ids::DocId;
use std::sync::{Arc, Mutex, Weak};

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

type Registry = Mutex<Vec<(u64, Arc<dyn DocumentObserver>)>>;

/// The subscribers of one replica.
#[derive(Default)]
pub(crate) struct Observers {
    registry: Arc<Registry>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Observers {
    pub(crate) fn subscribe(&self, observer: Arc<dyn DocumentObserver>) -> Subscription {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.registry).push((id, observer));
        Subscription {
            id,
            registry: Arc::downgrade(&self.registry),
        }
    }

    pub(crate) fn notify(&self, changes: &[DocChange]) {
        if changes.is_empty() {
            return;
        }
        // Call outside the lock so an observer may subscribe or unsubscribe.
        let observers: Vec<_> = lock(&self.registry)
            .iter()
            .map(|(_, o)| Arc::clone(o))
            .collect();
        for o in observers {
            o.documents_changed(changes);
        }
    }
}

fn lock(registry: &Registry) -> std::sync::MutexGuard<'_, Vec<(u64, Arc<dyn DocumentObserver>)>> {
    registry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Keeps a subscription alive; dropping it unsubscribes.
#[must_use = "dropping the subscription unsubscribes at once"]
pub struct Subscription {
    id: u64,
    registry: Weak<Registry>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            lock(&registry).retain(|(id, _)| *id != self.id);
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .finish()
    }
}
