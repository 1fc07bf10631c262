//! The relay's own dispatcher device: the HTTP layer reads and writes through it.
//!
//! It is a waybill-core `Replica` in `DATA/http/dispatcher.db` holding a
//! dispatcher credential the relay issues to itself at every start (device id
//! [`DEVICE_ID`]), kept in sync with the relay over QUIC on loopback by a
//! `SyncClient`, exactly like any other device. So every write the API makes is
//! checked by the same local rules and then by the relay's effect rules, and
//! every read sees what a dispatcher sees.
//!
//! A write waits, for at most [`SETTLE`], for the relay to acknowledge or refuse
//! the changes it made, so that the API can answer with the relay's verdict
//! instead of a silent success that the relay refuses a moment later.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use waybill_core::credential::Credential;
use waybill_core::identity::Role;
use waybill_core::net::{SyncClient, SyncOptions, SyncStatus};
use waybill_core::replica::{Replica, ReplicaOptions};
use waybill_core::{DocId, ReplicaError};

use super::error::HttpError;
use crate::enroll::{EnrollRequest, enroll};
use crate::keys::RelayKeys;

/// The dispatcher device's id (its events name it as their actor).
pub const DEVICE_ID: &str = "relay-dispatcher";
/// How long a write waits for the relay's verdict before answering `202`.
pub const SETTLE: Duration = Duration::from_secs(5);
/// The credential's validity; it is re-issued at every start of the relay.
const VALIDITY_MS: i64 = 365 * 24 * 3600 * 1000;

/// Most outbox entries read at once while finding or waiting for a write's
/// changes (the outbox only grows while the relay is unreachable).
const OUTBOX_SCAN: usize = 100_000;

/// The changes a write made, to wait for.
#[derive(Debug, Clone, Default)]
pub struct Written {
    hashes: Vec<Vec<u8>>,
}

/// What the relay said about a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every change is durable on the relay.
    Acknowledged,
    /// The relay refused a change (it is in the relay's quarantine).
    Refused {
        /// The relay's code.
        code: String,
        /// The relay's reason.
        reason: String,
    },
    /// No answer within [`SETTLE`] (the write is stored and will be uploaded).
    Pending,
}

impl Verdict {
    /// `acknowledged` or `pending`, for response bodies.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Acknowledged => "acknowledged",
            Verdict::Refused { .. } => "refused",
            Verdict::Pending => "pending",
        }
    }
}

/// The dispatcher device and its background sync.
pub struct Dispatcher {
    /// The device's store.
    pub replica: Arc<Replica>,
    client: std::sync::Mutex<Option<SyncClient>>,
    /// One write at a time, so each write knows which changes are its own.
    writes: Arc<std::sync::Mutex<()>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// Open the dispatcher's store in `dir`, issue its credential and start
    /// syncing with the relay at `relay_addr` (`host:port`).
    pub fn start(
        dir: &Path,
        keys: &RelayKeys,
        relay_addr: String,
    ) -> Result<Self, DispatcherError> {
        let credential = enroll(
            keys,
            &EnrollRequest {
                role: Role::Dispatcher,
                courier: None,
                store: None,
                device_id: Some(DEVICE_ID.to_owned()),
                relay_addr,
                valid_for_ms: VALIDITY_MS,
                now_ms: now_ms(),
            },
        )
        .map_err(|e| DispatcherError::Credential(e.to_string()))?;
        let replica = Arc::new(Replica::open(
            dir.join("dispatcher.db"),
            credential.body.identity(),
            ReplicaOptions::default(),
        )?);
        let client = start_sync(&replica, credential);
        Ok(Self {
            replica,
            client: std::sync::Mutex::new(Some(client)),
            writes: Arc::new(std::sync::Mutex::new(())),
        })
    }

    /// The background sync's status.
    pub fn status(&self) -> Option<SyncStatus> {
        self.client
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(SyncClient::status))
    }

    /// Make a write with `f` on a blocking thread and wait for the relay's
    /// verdict on the changes it made to the documents it returns.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Replica) -> Result<(T, Vec<DocId>), HttpError> + Send + 'static,
    ) -> Result<(T, Verdict), HttpError> {
        let (value, written) = self.apply(f).await?;
        Ok((value, self.settle(written).await?))
    }

    /// Make a write with `f` on a blocking thread; returns what `f` returned and
    /// the changes it made, for [`Dispatcher::settle`].
    pub async fn apply<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Replica) -> Result<(T, Vec<DocId>), HttpError> + Send + 'static,
    ) -> Result<(T, Written), HttpError> {
        let replica = Arc::clone(&self.replica);
        let one_at_a_time = Arc::clone(&self.writes);
        tokio::task::spawn_blocking(move || {
            // Held only while writing (never while waiting for the relay), so the
            // outbox entries after `before` on these documents are this write's.
            let _guard = one_at_a_time.lock().map_err(|_| {
                HttpError::Internal("the dispatcher's write lock is poisoned".into())
            })?;
            let before = replica.outbox(OUTBOX_SCAN)?.last().map_or(0, |e| e.seq);
            let (value, docs) = f(&replica)?;
            let docs: Vec<String> = docs.iter().map(ToString::to_string).collect();
            let hashes = replica
                .outbox_after(before, OUTBOX_SCAN)?
                .into_iter()
                .filter(|e| docs.contains(&e.doc_id))
                .map(|e| e.hash)
                .collect();
            Ok((value, Written { hashes }))
        })
        .await?
    }

    /// Wait until none of `hashes` is waiting in the outbox any more, then say
    /// whether the relay refused any of them.
    pub async fn settle(&self, written: Written) -> Result<Verdict, HttpError> {
        let hashes = written.hashes;
        if hashes.is_empty() {
            return Ok(Verdict::Acknowledged);
        }
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let replica = Arc::clone(&self.replica);
            let hashes = hashes.clone();
            let verdict = tokio::task::spawn_blocking(move || {
                let waiting = replica
                    .outbox(OUTBOX_SCAN)?
                    .iter()
                    .any(|e| hashes.contains(&e.hash));
                if waiting {
                    return Ok::<_, HttpError>(None);
                }
                let refused = replica
                    .refused_changes()?
                    .into_iter()
                    .find(|r| hashes.contains(&r.hash));
                Ok(Some(match refused {
                    Some(r) => Verdict::Refused {
                        code: r.code,
                        reason: r.reason,
                    },
                    None => Verdict::Acknowledged,
                }))
            })
            .await??;
            if let Some(verdict) = verdict {
                return Ok(verdict);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Verdict::Pending);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Say goodbye to the relay and stop syncing.
    pub async fn stop(&self) {
        let client = self.client.lock().ok().and_then(|mut c| c.take());
        if let Some(client) = client {
            client.stop().await;
        }
    }
}

fn start_sync(replica: &Arc<Replica>, credential: Credential) -> SyncClient {
    let options = SyncOptions {
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_secs(2),
        ..SyncOptions::default()
    };
    SyncClient::start(Arc::clone(replica), credential, options)
}

/// The dispatcher device could not start.
#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    /// Its credential could not be issued.
    #[error("cannot issue the dispatcher's credential: {0}")]
    Credential(String),
    /// Its store could not be opened.
    #[error("cannot open the dispatcher's store: {0}")]
    Replica(#[from] ReplicaError),
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
