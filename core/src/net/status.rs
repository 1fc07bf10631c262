//! What the background sync is doing, for status bars and support screens, and
//! observers that hear about every change of it.

use crate::observers::Registry;
use std::sync::{Arc, Mutex};

/// The connection, as an app shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not connected; a retry is scheduled.
    Offline,
    /// Connecting and handshaking.
    Connecting,
    /// Connected, catching up with the relay's log.
    Syncing,
    /// Connected and caught up: changes flow both ways as they happen.
    Live,
    /// The background sync has ended and will not retry.
    Stopped {
        /// Why (the app was closed, or the credential was refused).
        reason: String,
    },
}

/// How far a catch-up has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitialSyncProgress {
    /// Changes received so far in this session.
    pub received: u64,
    /// The relay log position applied so far.
    pub cursor: u64,
    /// The relay's log head when the session opened.
    pub head: u64,
}

/// A snapshot of the background sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatus {
    /// The connection.
    pub state: ConnectionState,
    /// Local changes the relay has not acknowledged yet.
    pub pending_uploads: u64,
    /// When the device was last fully in sync (Unix ms).
    pub last_synced_ms: Option<i64>,
    /// While catching up: how far.
    pub initial_sync: Option<InitialSyncProgress>,
    /// The last failure, kept after recovering so support can see it.
    pub last_error: Option<String>,
}

impl Default for SyncStatus {
    fn default() -> Self {
        Self {
            state: ConnectionState::Offline,
            pending_uploads: 0,
            last_synced_ms: None,
            initial_sync: None,
            last_error: None,
        }
    }
}

/// Hears about status changes. Called on the sync task; keep it quick (post to
/// your UI thread).
pub trait SyncStatusObserver: Send + Sync {
    /// The status is now `status`.
    fn status_changed(&self, status: &SyncStatus);
}

impl<F: Fn(&SyncStatus) + Send + Sync> SyncStatusObserver for F {
    fn status_changed(&self, status: &SyncStatus) {
        self(status)
    }
}

/// Keeps a status subscription alive; dropping it unsubscribes.
pub type StatusSubscription = crate::observers::Subscription;

/// The current status and its observers, shared by the sync task and handles.
#[derive(Default)]
pub(crate) struct StatusBoard {
    status: Mutex<SyncStatus>,
    observers: Registry<dyn SyncStatusObserver>,
}

impl StatusBoard {
    pub(crate) fn get(&self) -> SyncStatus {
        lock(&self.status).clone()
    }

    /// Change the status; observers hear about it only if it really changed.
    pub(crate) fn update(&self, f: impl FnOnce(&mut SyncStatus)) {
        let changed = {
            let mut status = lock(&self.status);
            let before = status.clone();
            f(&mut status);
            (*status != before).then(|| status.clone())
        };
        let Some(status) = changed else {
            return;
        };
        // Called outside the lock so an observer may read the status or unsubscribe.
        for o in self.observers.observers() {
            o.status_changed(&status);
        }
    }

    pub(crate) fn subscribe(&self, observer: Arc<dyn SyncStatusObserver>) -> StatusSubscription {
        self.observers.subscribe(observer)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
