//! Callbacks into the app: document changes and sync status, and the handle that
//! keeps a subscription alive (`close()`/`destroy()` it, or `cancel()` it, to stop).

use crate::sync::SyncStatusRecord;
use std::sync::{Arc, Mutex};
use waybill_core::replica::{self, DocChange};

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ChangeOrigin {
    /// Made on this device.
    Local,
    /// Merged from another device.
    Remote,
    /// Removed from this device: the relay no longer shares it with this device.
    Removed,
}

impl From<replica::ChangeOrigin> for ChangeOrigin {
    fn from(o: replica::ChangeOrigin) -> Self {
        match o {
            replica::ChangeOrigin::Local => Self::Local,
            replica::ChangeOrigin::Remote => Self::Remote,
            replica::ChangeOrigin::Removed => Self::Removed,
        }
    }
}

/// One document that changed.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DocumentChange {
    /// The document (`ord_…`, `dlv_…`).
    pub doc_id: String,
    /// Local, remote or removed.
    pub origin: ChangeOrigin,
}

impl From<&DocChange> for DocumentChange {
    fn from(c: &DocChange) -> Self {
        Self {
            doc_id: c.doc_id.to_string(),
            origin: c.origin.into(),
        }
    }
}

/// Implemented by the app to hear which documents changed. Called after the change
/// is durable, on the thread that made it (the caller's for local writes, an SDK
/// thread for merged ones): keep it quick and post to the UI thread.
#[uniffi::export(with_foreign)]
pub trait DocumentObserver: Send + Sync {
    /// These documents changed.
    fn documents_changed(&self, changes: Vec<DocumentChange>);
}

/// Implemented by the app to hear every change of the background sync's status.
/// Called on an SDK thread: keep it quick and post to the UI thread.
#[uniffi::export(with_foreign)]
pub trait SyncStatusObserver: Send + Sync {
    /// The status is now `status`.
    fn status_changed(&self, status: SyncStatusRecord);
}

/// Adapts an app's observer to the core's.
pub(crate) struct ForeignDocumentObserver(pub(crate) Arc<dyn DocumentObserver>);

impl replica::DocumentObserver for ForeignDocumentObserver {
    fn documents_changed(&self, changes: &[DocChange]) {
        self.0
            .documents_changed(changes.iter().map(Into::into).collect());
    }
}

/// What a [`Subscription`] keeps alive.
pub(crate) enum Handle {
    /// A document observer registered with the replica.
    Documents(#[allow(dead_code)] replica::Subscription),
    /// A status observer registered with the SDK's sync slot; dropping it removes it.
    Status(#[allow(dead_code)] crate::sync::StatusHandle),
}

/// Keeps an observer subscribed. `cancel()` (or `close()` in Kotlin, dropping it
/// in Swift and Python) unsubscribes; cancelling twice is harmless.
#[derive(uniffi::Object)]
pub struct Subscription {
    handle: Mutex<Option<Handle>>,
}

impl Subscription {
    pub(crate) fn new(handle: Handle) -> Arc<Self> {
        Arc::new(Self {
            handle: Mutex::new(Some(handle)),
        })
    }
}

#[uniffi::export]
impl Subscription {
    /// Stop hearing about changes.
    pub fn cancel(&self) {
        let handle = self
            .handle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(handle);
    }

    /// Whether the observer is still subscribed.
    pub fn is_active(&self) -> bool {
        self.handle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }
}
