//! The façade an app holds: open a device's store, mutate, query, observe, and
//! exchange changes with the sync layer (`apply_remote`, `outbox`, `ack`).
//!
//! Every mutation is validated against the model's rules, applied to the Automerge
//! document as one change, and committed to SQLite (document, index rows, outbox) in
//! one transaction before the call returns. Observers hear about it after the commit.

mod error;
mod mutations;
mod observer;
mod session;
mod sync_api;
mod views;

pub use error::ReplicaError;
pub use observer::{ChangeOrigin, DocChange, DocumentObserver, Subscription};
pub use sync_api::{LogApplied, Removal};
pub use views::{DeliveryView, IntegrityReport, OrderView, RefusedView, TimelineEntry};

use crate::hlc::{Hlc, HlcState, SystemClock, WallClock};
use crate::identity::DeviceIdentity;
use crate::ids::DocId;
use crate::model::document;
use crate::store::{IndexRows, OutboxEntry, Store, StoreOptions};
use automerge::{ActorId, Automerge};
use lru::LruCache;
use observer::Observers;
use rusqlite::Connection;
use session::Session;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// Documents kept decoded in memory; the store holds the rest.
const CACHE_DOCS: usize = 512;

/// Options for opening a replica.
#[derive(Clone)]
pub struct ReplicaOptions {
    /// Store options (durability, compaction).
    pub store: StoreOptions,
    /// Wall clock (the system clock unless a test or simulation sets one).
    pub clock: Arc<dyn WallClock>,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        Self {
            store: StoreOptions::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for ReplicaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaOptions")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// The writer's state: the store, the decoded documents and the clock.
pub(crate) struct Writer {
    pub(crate) store: Store,
    pub(crate) cache: LruCache<DocId, Automerge>,
    pub(crate) hlc: HlcState,
    pub(crate) wall: Arc<dyn WallClock>,
    pub(crate) actor: ActorId,
}

impl Writer {
    /// Take a document out of the cache or the store (None if absent).
    pub(crate) fn take(&mut self, id: &DocId) -> Result<Option<Automerge>, ReplicaError> {
        if let Some(doc) = self.cache.pop(id) {
            return Ok(Some(doc));
        }
        Ok(self
            .store
            .load(id)?
            .map(|doc| doc.with_actor(self.actor.clone())))
    }
}

/// One device's replica of the documents it can see.
pub struct Replica {
    identity: DeviceIdentity,
    writer: Mutex<Writer>,
    reader: Option<Mutex<Connection>>,
    observers: Observers,
}

const HLC_KEY: &str = "hlc";

fn parse_hlc(s: &str) -> Option<Hlc> {
    let (wall, counter) = s.split_once('.')?;
    Some(Hlc {
        wall_ms: wall.parse().ok()?,
        counter: counter.parse().ok()?,
    })
}

impl Replica {
    /// Open (or create) the store at `path` for this device.
    pub fn open(
        path: impl AsRef<Path>,
        identity: DeviceIdentity,
        options: ReplicaOptions,
    ) -> Result<Self, ReplicaError> {
        let store = Store::open(path, options.store)?;
        Self::from_store(store, identity, options)
    }

    /// A replica whose store lives in memory (tests and simulations).
    pub fn open_in_memory(
        identity: DeviceIdentity,
        options: ReplicaOptions,
    ) -> Result<Self, ReplicaError> {
        let store = Store::open_in_memory(options.store)?;
        Self::from_store(store, identity, options)
    }

    fn from_store(
        store: Store,
        identity: DeviceIdentity,
        options: ReplicaOptions,
    ) -> Result<Self, ReplicaError> {
        let reader = store.open_reader()?.map(Mutex::new);
        let last = store
            .meta(HLC_KEY)?
            .as_deref()
            .and_then(parse_hlc)
            .unwrap_or_default();
        let cache = LruCache::new(NonZeroUsize::new(CACHE_DOCS).unwrap_or(NonZeroUsize::MIN));
        let writer = Writer {
            store,
            cache,
            hlc: HlcState::resume(last),
            wall: options.clock,
            actor: ActorId::random(),
        };
        tracing::debug!(device = %identity.device_id, role = %identity.role, "replica opened");
        Ok(Self {
            identity,
            writer: Mutex::new(writer),
            reader,
            observers: Observers::default(),
        })
    }

    /// Who this replica writes as.
    pub fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Run a query on a reader connection (or the writer's, for in-memory stores).
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, crate::store::StoreError>,
    ) -> Result<T, ReplicaError> {
        match &self.reader {
            Some(reader) => Ok(f(&reader
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner))?),
            None => Ok(f(self.lock_writer().store.conn())?),
        }
    }

    /// Run a mutation: stage changes in a session, commit them in one transaction,
    /// then tell observers. On any error nothing is stored and the touched documents
    /// are dropped from the cache (they are reloaded from disk next time).
    fn write<T>(
        &self,
        f: impl FnOnce(&mut Session<'_>) -> Result<T, ReplicaError>,
    ) -> Result<T, ReplicaError> {
        let (result, changed) = {
            let mut writer = self.lock_writer();
            let mut session = Session::new(&mut writer, &self.identity);
            let result = f(&mut session)?;
            let changed = session.commit()?;
            (result, changed)
        };
        self.observers.notify(&changed);
        Ok(result)
    }

    /// Subscribe to document changes; drop the handle to unsubscribe.
    pub fn subscribe(&self, observer: Arc<dyn DocumentObserver>) -> Subscription {
        self.observers.subscribe(observer)
    }

    /// Merge changes received from another device or the relay. Changes whose
    /// dependencies have not arrived yet are stored and wait; they are applied as
    /// soon as the missing ones come. Applying the same change twice is harmless.
    pub fn apply_remote(
        &self,
        doc_id: &DocId,
        changes: &[Vec<u8>],
    ) -> Result<ApplyOutcome, ReplicaError> {
        let decoded = changes
            .iter()
            .enumerate()
            .map(|(index, bytes)| {
                crate::changes::decode(bytes).map_err(|e| ReplicaError::CorruptChange {
                    doc_id: doc_id.to_string(),
                    index,
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.write(|s| s.apply_remote(doc_id, decoded))
    }

    /// The oldest `limit` local changes not yet acknowledged by the relay.
    pub fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, ReplicaError> {
        Ok(self.lock_writer().store.outbox(limit)?)
    }

    /// How many local changes await acknowledgement.
    pub fn pending_uploads(&self) -> Result<u64, ReplicaError> {
        Ok(self.lock_writer().store.outbox_len()?)
    }

    /// Clear acknowledged changes (by Automerge change hash) from the outbox.
    pub fn ack(&self, hashes: &[Vec<u8>]) -> Result<usize, ReplicaError> {
        Ok(self.lock_writer().store.ack(hashes)?)
    }

    /// A document's full Automerge bytes (loadable by any Automerge implementation).
    pub fn export(&self, doc_id: &DocId) -> Result<Vec<u8>, ReplicaError> {
        self.with_doc(doc_id, |doc| Ok(doc.save()))
    }

    /// The document's current heads (hex change hashes).
    pub fn heads(&self, doc_id: &DocId) -> Result<Vec<String>, ReplicaError> {
        self.with_doc(doc_id, |doc| {
            Ok(doc.get_heads().iter().map(ToString::to_string).collect())
        })
    }

    /// Ids of every document on this device.
    pub fn doc_ids(&self) -> Result<Vec<DocId>, ReplicaError> {
        Ok(self.lock_writer().store.doc_ids()?)
    }

    /// Read a document through the cache.
    fn with_doc<T>(
        &self,
        doc_id: &DocId,
        f: impl FnOnce(&Automerge) -> Result<T, ReplicaError>,
    ) -> Result<T, ReplicaError> {
        let mut writer = self.lock_writer();
        let Some(doc) = writer.take(doc_id)? else {
            return Err(ReplicaError::NotFound {
                doc_id: doc_id.to_string(),
            });
        };
        let result = f(&doc);
        writer.cache.put(doc_id.clone(), doc);
        result
    }

    /// Recompute every document's index rows and compare them with the stored ones.
    pub fn verify(&self) -> Result<IntegrityReport, ReplicaError> {
        let ids = self.doc_ids()?;
        let mut report = IntegrityReport {
            documents: ids.len(),
            mismatches: Vec::new(),
        };
        for id in ids {
            let (expected, stored) = {
                let writer = self.lock_writer();
                let doc = match writer.store.load(&id) {
                    Ok(doc) => doc.unwrap_or_default(),
                    Err(e) => {
                        report.mismatches.push(format!("{id}: {e}"));
                        continue;
                    }
                };
                let expected = document::read(&id, &doc).ok().map(|d| IndexRows::of(&d));
                (expected, writer.store.stored_index(&id)?)
            };
            if expected != stored {
                report.mismatches.push(format!(
                    "{id}: stored {stored:?}, document says {expected:?}"
                ));
            }
        }
        Ok(report)
    }
}

/// What `apply_remote` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplyOutcome {
    /// Changes that were new to this device.
    pub new_changes: usize,
    /// Whether some changes still wait for dependencies that have not arrived.
    pub waiting_for_dependencies: bool,
}

#[cfg(test)]
mod tests;
