//! The background sync loop an app runs while it is open: connect, stay live,
//! upload local writes as they happen, reconnect after any failure.

use super::SyncOptions;
use super::drive::{self, Failure, Received};
use super::error::NetError;
use super::link::Link;
use super::once::sync_failure;
use super::status::{
    ConnectionState, InitialSyncProgress, StatusBoard, StatusSubscription, SyncStatus,
    SyncStatusObserver,
};
use crate::credential::Credential;
use crate::replica::{ChangeOrigin, DocChange, DocumentObserver, Replica};
use crate::sync::{ClientSession, SyncEvent};
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

/// Keeps a device in sync with the relay in the background, on the tokio runtime
/// it was started on.
pub struct SyncClient {
    board: Arc<StatusBoard>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for SyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncClient")
            .field("status", &self.board.get())
            .finish_non_exhaustive()
    }
}

impl SyncClient {
    /// Start syncing `replica` with the relay named in `credential`.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the loop is spawned on the current one).
    pub fn start(replica: Arc<Replica>, credential: Credential, options: SyncOptions) -> Self {
        let board = Arc::new(StatusBoard::default());
        let (stop, stop_rx) = watch::channel(false);
        let addr = options.relay_addr(&credential).to_owned();
        let span = tracing::info_span!("sync", device = %credential.body.device_id, relay = %addr);
        let worker = Worker {
            replica,
            credential,
            options,
            addr,
            board: Arc::clone(&board),
            stop: stop_rx,
            local: Arc::new(Notify::new()),
        };
        let task = tokio::spawn(worker.run().instrument(span));
        Self { board, stop, task }
    }

    /// The current status.
    pub fn status(&self) -> SyncStatus {
        self.board.get()
    }

    /// Hear about every status change; drop the handle to stop.
    pub fn subscribe_status(&self, observer: Arc<dyn SyncStatusObserver>) -> StatusSubscription {
        self.board.subscribe(observer)
    }

    /// Say goodbye to the relay, close the connection and wait for the loop to end.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the sync task failed");
        }
    }
}

/// Wakes the loop when the app writes.
struct LocalWrites(Arc<Notify>);

impl DocumentObserver for LocalWrites {
    fn documents_changed(&self, changes: &[DocChange]) {
        if changes.iter().any(|c| c.origin == ChangeOrigin::Local) {
            // A stored permit covers writes made while the loop is busy.
            self.0.notify_one();
        }
    }
}

/// Exponential backoff with jitter, so devices that lost the relay together do
/// not come back together.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

struct Worker {
    replica: Arc<Replica>,
    credential: Credential,
    options: SyncOptions,
    addr: String,
    board: Arc<StatusBoard>,
    stop: watch::Receiver<bool>,
    local: Arc<Notify>,
}

impl Worker {
    async fn run(mut self) {
        let _subscription = self
            .replica
            .subscribe(Arc::new(LocalWrites(Arc::clone(&self.local))));
        let mut backoff = Backoff::new(self.options.backoff_min, self.options.backoff_max);
        loop {
            self.set_state(ConnectionState::Connecting);
            let error = match self.connection(&mut backoff).await {
                Ok(()) => return self.stopped("sync was stopped".into(), None),
                Err(error) => error,
            };
            if error.is_fatal() {
                tracing::error!(%error, "sync stopped; it will not retry");
                return self.stopped(error.to_string(), Some(error.to_string()));
            }
            let delay = backoff.next_delay();
            tracing::warn!(%error, retry_in = ?delay, "sync interrupted");
            self.board.update(|s| {
                s.state = ConnectionState::Offline;
                s.initial_sync = None;
                s.last_error = Some(error.to_string());
            });
            if !self.wait_offline(delay).await {
                return self.stopped("sync was stopped".into(), None);
            }
        }
    }

    /// One connection, until the app stops the loop (Ok) or something fails.
    async fn connection(&mut self, backoff: &mut Backoff) -> Result<(), NetError> {
        let connect = tokio::time::timeout(
            self.options.connect_timeout,
            Link::connect(&self.credential, &self.addr),
        );
        let mut link = tokio::select! {
            biased;
            _ = wait_stop(&mut self.stop) => return Ok(()),
            link = connect => link.map_err(|_| NetError::Timeout {
                addr: self.addr.clone(),
                what: "connecting",
                after: self.options.connect_timeout,
            })??,
        };
        let mut session =
            ClientSession::new(self.credential.to_bytes(), self.options.client.clone());
        if let Err(e) = session.start(&self.replica) {
            let failure = sync_failure(&link, e);
            return Err(drive::fail(link, &mut session, failure).await);
        }
        loop {
            if let Err(e) = link.flush(&mut session).await {
                return Err(drive::fail(link, &mut session, Failure::Net(e)).await);
            }
            self.publish(&session);
            let inbound = tokio::select! {
                biased;
                _ = wait_stop(&mut self.stop) => {
                    drive::goodbye(link, &mut session).await;
                    return Ok(());
                }
                _ = self.local.notified() => {
                    if let Err(e) = session.local_changes(&self.replica) {
                        let failure = sync_failure(&link, e);
                        return Err(drive::fail(link, &mut session, failure).await);
                    }
                    continue;
                }
                inbound = link.recv() => inbound,
            };
            match drive::handle(&link, &mut session, &self.replica, inbound) {
                Ok(Received::Events(events)) => {
                    if events
                        .iter()
                        .any(|e| matches!(e, SyncEvent::Connected { .. }))
                    {
                        backoff.reset();
                    }
                }
                Ok(Received::RelayClosed) => {
                    let addr = link.addr.clone();
                    drive::goodbye(link, &mut session).await;
                    return Err(NetError::Connection {
                        addr,
                        reason: "the relay closed the session".into(),
                    });
                }
                Err(failure) => return Err(drive::fail(link, &mut session, failure).await),
            }
        }
    }

    /// Wait out a backoff delay, keeping the pending count fresh. False if stopped.
    async fn wait_offline(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                biased;
                _ = wait_stop(&mut self.stop) => return false,
                _ = tokio::time::sleep_until(until) => return true,
                _ = self.local.notified() => self.publish_pending(),
            }
        }
    }

    fn publish(&self, session: &ClientSession) {
        let progress = session.progress();
        let pending = self.replica.pending_uploads().ok();
        let idle = session.is_idle();
        self.board.update(|s| {
            s.state = if !progress.connected {
                ConnectionState::Connecting
            } else if progress.caught_up {
                ConnectionState::Live
            } else {
                ConnectionState::Syncing
            };
            s.initial_sync =
                (progress.connected && !progress.caught_up).then_some(InitialSyncProgress {
                    received: progress.received,
                    cursor: progress.cursor,
                    head: progress.head_at_start,
                });
            if let Some(pending) = pending {
                s.pending_uploads = pending;
            }
            if idle {
                s.last_synced_ms = Some(now_ms());
            }
        });
    }

    fn publish_pending(&self) {
        if let Ok(pending) = self.replica.pending_uploads() {
            self.board.update(|s| s.pending_uploads = pending);
        }
    }

    fn set_state(&self, state: ConnectionState) {
        self.publish_pending();
        self.board.update(|s| s.state = state);
    }

    fn stopped(&self, reason: String, error: Option<String>) {
        self.board.update(|s| {
            s.state = ConnectionState::Stopped { reason };
            s.initial_sync = None;
            if error.is_some() {
                s.last_error = error;
            }
        });
    }
}

/// Resolves once the app asked to stop (or dropped the client).
async fn wait_stop(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
        assert!(delays[7] >= Duration::from_millis(500));
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
