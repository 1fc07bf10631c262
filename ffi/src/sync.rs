//! Sync with the relay on the SDK's runtime: the background [`SyncClient`] an app
//! runs while open (`start_sync`/`stop_sync`, status and its observers) and the
//! one-shot exchange (`sync_once`, an async export).

use crate::error::WaybillError;
use crate::observer::{Handle, Subscription, SyncStatusObserver};
use crate::replica::WaybillReplica;
use crate::runtime;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use waybill_core::net::{
    self, ConnectionState, InitialSyncProgress, StatusSubscription, SyncClient, SyncOptions,
    SyncReport, SyncStatus,
};

/// The connection, as an app shows it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ConnectionStateRecord {
    /// Not connected; a retry is scheduled.
    Offline,
    /// Connecting and handshaking.
    Connecting,
    /// Connected, catching up with the relay's log.
    Syncing,
    /// Connected and caught up: changes flow both ways as they happen.
    Live,
    /// The background sync has ended (or was never started) and will not retry.
    Stopped {
        /// Why (stopped by the app, not started, credential refused…).
        reason: String,
    },
}

impl From<ConnectionState> for ConnectionStateRecord {
    fn from(s: ConnectionState) -> Self {
        match s {
            ConnectionState::Offline => Self::Offline,
            ConnectionState::Connecting => Self::Connecting,
            ConnectionState::Syncing => Self::Syncing,
            ConnectionState::Live => Self::Live,
            ConnectionState::Stopped { reason } => Self::Stopped { reason },
        }
    }
}

/// How far a catch-up has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct InitialSyncProgressRecord {
    /// Changes received so far in this session.
    pub received: u64,
    /// The relay log position applied so far.
    pub cursor: u64,
    /// The relay's log head when the session opened.
    pub head: u64,
}

impl From<InitialSyncProgress> for InitialSyncProgressRecord {
    fn from(p: InitialSyncProgress) -> Self {
        Self {
            received: p.received,
            cursor: p.cursor,
            head: p.head,
        }
    }
}

/// A snapshot of the background sync.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncStatusRecord {
    /// The connection.
    pub state: ConnectionStateRecord,
    /// Local changes the relay has not acknowledged yet.
    pub pending_uploads: u64,
    /// When the device was last fully in sync (Unix ms).
    pub last_synced_ms: Option<i64>,
    /// While catching up: how far.
    pub initial_sync: Option<InitialSyncProgressRecord>,
    /// The last failure, kept after recovering so support can see it.
    pub last_error: Option<String>,
}

impl From<SyncStatus> for SyncStatusRecord {
    fn from(s: SyncStatus) -> Self {
        Self {
            state: s.state.into(),
            pending_uploads: s.pending_uploads,
            last_synced_ms: s.last_synced_ms,
            initial_sync: s.initial_sync.map(Into::into),
            last_error: s.last_error,
        }
    }
}

/// What a one-shot sync did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncReportRecord {
    /// Local changes the relay acknowledged.
    pub uploaded: u64,
    /// Changes received that were new to this device.
    pub received: u64,
    /// Bytes written to the relay.
    pub bytes_sent: u64,
    /// Bytes read from the relay.
    pub bytes_received: u64,
    /// Messages written.
    pub messages_sent: u64,
    /// Messages read.
    pub messages_received: u64,
    /// The relay log position this device has now applied.
    pub cursor: u64,
    /// Whether the relay ran a per-document sync instead of resuming the cursor.
    pub full_sync: bool,
}

impl From<SyncReport> for SyncReportRecord {
    fn from(r: SyncReport) -> Self {
        Self {
            uploaded: r.uploaded,
            received: r.received,
            bytes_sent: r.bytes_sent,
            bytes_received: r.bytes_received,
            messages_sent: r.messages_sent,
            messages_received: r.messages_received,
            cursor: r.cursor,
            full_sync: r.full_sync,
        }
    }
}

type Registry = Mutex<Vec<(u64, Arc<dyn SyncStatusObserver>)>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The replica's background sync, if running, and the app's status observers.
/// Observers subscribe here rather than on the client so they outlive a
/// `stop_sync`/`start_sync` cycle (and may subscribe before the first start).
#[derive(Default)]
pub(crate) struct SyncSlot {
    running: Mutex<Option<(SyncClient, StatusSubscription)>>,
    /// The last status heard, answered once the client is stopped.
    last: Arc<Mutex<Option<SyncStatus>>>,
    observers: Arc<Registry>,
    next_id: AtomicU64,
}

/// Forwards the client's status to the app's observers, and remembers it.
struct Fanout {
    registry: Weak<Registry>,
    last: Weak<Mutex<Option<SyncStatus>>>,
}

impl net::SyncStatusObserver for Fanout {
    fn status_changed(&self, status: &SyncStatus) {
        if let Some(last) = self.last.upgrade() {
            *lock(&last) = Some(status.clone());
        }
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        let observers: Vec<_> = lock(&registry).iter().map(|(_, o)| o.clone()).collect();
        for o in observers {
            o.status_changed(status.clone().into());
        }
    }
}

/// Removes an app's status observer when dropped.
pub(crate) struct StatusHandle {
    id: u64,
    registry: Weak<Registry>,
}

impl Drop for StatusHandle {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            lock(&registry).retain(|(id, _)| *id != self.id);
        }
    }
}

fn not_started() -> SyncStatus {
    SyncStatus {
        state: ConnectionState::Stopped {
            reason: "sync is not started".into(),
        },
        ..SyncStatus::default()
    }
}

impl SyncSlot {
    fn stop(&self) {
        let running = lock(&self.running).take();
        if let Some(running) = running {
            self.retire(running);
        }
    }

    /// Say goodbye to the relay on the SDK's runtime, without waiting.
    fn retire(&self, (client, forward): (SyncClient, StatusSubscription)) {
        *lock(&self.last) = Some(client.status());
        runtime().spawn(async move {
            client.stop().await;
            drop(forward);
        });
    }
}

impl Drop for SyncSlot {
    fn drop(&mut self) {
        self.stop();
    }
}

#[uniffi::export]
impl WaybillReplica {
    /// Start syncing with the relay in the background and return at once: connect
    /// (to `relay_addr` if given, else the credential's address), catch up, upload
    /// every local write as it happens, receive other devices' changes, reconnect
    /// with backoff after any failure. Starting again restarts it.
    pub fn start_sync(&self, relay_addr: Option<String>) {
        let options = SyncOptions {
            relay_addr,
            ..SyncOptions::default()
        };
        let slot = &self.sync;
        // Held throughout, so concurrent starts leave exactly one client running.
        let mut running = lock(&slot.running);
        if let Some(previous) = running.take() {
            slot.retire(previous);
        }
        let client = {
            let _entered = runtime().enter();
            SyncClient::start(self.replica.clone(), self.credential.clone(), options)
        };
        let forward = client.subscribe_status(Arc::new(Fanout {
            registry: Arc::downgrade(&slot.observers),
            last: Arc::downgrade(&slot.last),
        }));
        *running = Some((client, forward));
    }

    /// Stop the background sync and return at once; it says goodbye to the relay
    /// on the SDK's runtime. Status observers hear `Stopped`.
    pub fn stop_sync(&self) {
        self.sync.stop();
    }

    /// The background sync's status now (`Stopped` if it is not running).
    pub fn sync_status(&self) -> SyncStatusRecord {
        let status = match &*lock(&self.sync.running) {
            Some((client, _)) => client.status(),
            None => {
                let mut status = lock(&self.sync.last).clone().unwrap_or_else(not_started);
                // Until the stopping task's own final `Stopped` arrives.
                if !matches!(status.state, ConnectionState::Stopped { .. }) {
                    status.state = ConnectionState::Stopped {
                        reason: "sync was stopped".into(),
                    };
                }
                status
            }
        };
        status.into()
    }

    /// Hear about every change of the background sync's status, across restarts.
    /// Keep the returned subscription; cancel or close it to stop.
    pub fn subscribe_sync_status(
        &self,
        observer: Arc<dyn SyncStatusObserver>,
    ) -> Arc<Subscription> {
        let id = self.sync.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.sync.observers).push((id, observer));
        Subscription::new(Handle::Status(StatusHandle {
            id,
            registry: Arc::downgrade(&self.sync.observers),
        }))
    }

    /// Connect to the relay once (at the credential's address), exchange changes
    /// until this device has caught up and every local change is acknowledged,
    /// then disconnect. Runs on the SDK's runtime; await it from a coroutine, Swift
    /// task or asyncio. Fails with `Timeout` after `timeout_ms`.
    pub async fn sync_once(&self, timeout_ms: u64) -> Result<SyncReportRecord, WaybillError> {
        let replica = self.replica.clone();
        let credential = self.credential.clone();
        let task = runtime().spawn(async move {
            net::sync_once(
                replica,
                &credential,
                &SyncOptions::default(),
                Duration::from_millis(timeout_ms),
            )
            .await
        });
        match task.await {
            Ok(result) => Ok(result?.into()),
            Err(e) => Err(WaybillError::Internal {
                reason: format!("the sync task failed: {e}"),
            }),
        }
    }
}
