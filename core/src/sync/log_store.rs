//! What the relay needs from durable storage: a sequenced change log, changes that
//! wait for their dependencies, a quarantine, and revocations. Implemented in memory
//! here (simulations, tests) and on SQLite by the relay (`waybill-server`).

use crate::protocol::LogEntry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Why the relay's storage failed.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    /// The backend failed (disk, database, connection); the operation did not happen.
    #[error("relay storage failed: {0}")]
    Backend(String),
    /// Stored bytes could not be read back.
    #[error("relay storage is corrupt: {0}")]
    Corrupt(String),
    /// Documents the batch was built on changed since they were read (another relay
    /// node sharing the storage committed to them): nothing was written; read them
    /// again and rebuild the batch.
    #[error("documents changed since they were read: {}", .0.join(", "))]
    Conflict(Vec<String>),
}

/// A change to store: in the log (it gets a sequence number) or waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChange {
    /// The document.
    pub doc_id: String,
    /// Automerge change hash (32 bytes).
    pub hash: Vec<u8>,
    /// Raw change bytes.
    pub bytes: Vec<u8>,
    /// The device that uploaded it.
    pub device_id: String,
}

/// A refused change, kept with its reason and never applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedChange {
    /// The change (its hash may be empty when the bytes did not decode).
    pub change: StoredChange,
    /// Machine-readable reason ([`crate::protocol::ErrorCode`] name).
    pub code: String,
    /// Human-readable reason.
    pub reason: String,
    /// When it was refused (ms since the epoch).
    pub at_ms: i64,
}

/// Everything one ingest step writes, in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestBatch {
    /// Accepted changes to append to the log, in order; each gets the next sequence.
    pub log: Vec<StoredChange>,
    /// Accepted changes whose dependencies have not arrived: durable, not yet logged.
    pub waiting: Vec<StoredChange>,
    /// Hashes of waiting changes now in `log` (remove them from the waiting set).
    pub no_longer_waiting: Vec<Vec<u8>>,
    /// Refused changes.
    pub quarantine: Vec<QuarantinedChange>,
    /// Documents whose audience (who may see them) the batch changes.
    pub audience: Vec<AudienceUpdate>,
    /// The version of every document the batch was built on, as read
    /// ([`LogStore::doc_version`]): the commit fails with
    /// [`LogStoreError::Conflict`] unless each is still current. This is how relay
    /// nodes sharing one store keep each other's working copies honest.
    pub expect: BTreeMap<String, u64>,
}

/// A document's state saved as one Automerge document (`Automerge::save`), at the
/// document version ([`LogStore::doc_version`]) it was saved at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedDoc {
    /// The document.
    pub doc_id: String,
    /// Its version when saved: the snapshot is fresh while this is current.
    pub version: u64,
    /// The saved bytes.
    pub bytes: Vec<u8>,
}

/// A document's audience after a batch: the principals it is shared with
/// (see [`super::audience`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AudienceUpdate {
    /// The document.
    pub doc_id: String,
    /// Its whole new audience.
    pub audience: BTreeSet<String>,
}

/// A document joined or left a principal's view at a log position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewChange {
    /// The principal (`courier:c7`, `store:S1`).
    pub principal: String,
    /// The document.
    pub doc_id: String,
    /// The log position of the batch that changed it (the batch's last entry).
    pub seq: u64,
    /// Joined (true) or left (false).
    pub joined: bool,
}

impl IngestBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
            && self.waiting.is_empty()
            && self.no_longer_waiting.is_empty()
            && self.quarantine.is_empty()
            && self.audience.is_empty()
    }

    /// The documents whose version a commit of this batch advances (by exactly
    /// one each): those it logs or stores changes of, or changes the audience of.
    pub fn touched_docs(&self) -> BTreeSet<String> {
        self.log
            .iter()
            .chain(&self.waiting)
            .map(|c| c.doc_id.clone())
            .chain(self.audience.iter().map(|a| a.doc_id.clone()))
            .collect()
    }

    /// The documents whose expected version is not `current(doc)`, in id order.
    pub fn stale_docs(
        &self,
        mut current: impl FnMut(&str) -> Result<u64, LogStoreError>,
    ) -> Result<Vec<String>, LogStoreError> {
        let mut stale = Vec::new();
        for (doc_id, expected) in &self.expect {
            if current(doc_id)? != *expected {
                stale.push(doc_id.clone());
            }
        }
        Ok(stale)
    }
}

/// `(doc_id, principal)` rows gathered into each document's audience (for backends
/// answering [`LogStore::audiences_of`] with one query).
pub fn audiences_by_doc(
    rows: impl IntoIterator<Item = (String, String)>,
) -> HashMap<String, BTreeSet<String>> {
    let mut out: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (doc_id, principal) in rows {
        out.entry(doc_id).or_default().insert(principal);
    }
    out
}

/// The relay id a durable backend keeps, settled when it is opened: the stored id
/// wins (a different requested one is logged and ignored); a new store records the
/// requested id, which must not be empty. Returns the id and whether to record it.
pub fn settle_relay_id(
    stored: Option<String>,
    requested: &str,
) -> Result<(String, bool), LogStoreError> {
    match stored {
        Some(stored) => {
            if stored != requested {
                tracing::warn!(
                    stored = %stored,
                    requested = %requested,
                    "the relay log belongs to another relay id; keeping the stored one"
                );
            }
            Ok((stored, false))
        }
        None if requested.trim().is_empty() => Err(LogStoreError::Backend(
            "a new relay database needs a non-empty relay id".to_owned(),
        )),
        None => Ok((requested.to_owned(), true)),
    }
}

/// Durable storage behind a relay. Every method is one transaction; `commit` returns
/// only once everything in the batch is durable (the relay acknowledges after it).
pub trait LogStore: Send {
    /// This deployment's id (stable for the life of the log; devices keep cursors per id).
    fn relay_id(&self) -> String;

    /// The newest sequence number (0 for an empty log).
    fn head(&self) -> Result<u64, LogStoreError>;

    /// The oldest cursor from which the log can still be replayed: every entry with a
    /// larger sequence number is present. 0 unless the log was compacted.
    fn oldest_resumable(&self) -> Result<u64, LogStoreError>;

    /// Write a batch; returns the sequence numbers given to `batch.log`, in order.
    /// A change already in the log (same hash) is not appended again: its existing
    /// number is returned. Fails with [`LogStoreError::Conflict`], writing nothing,
    /// when a version in `batch.expect` is no longer current; otherwise advances the
    /// version of each of [`IngestBatch::touched_docs`] by one.
    fn commit(&mut self, batch: &IngestBatch) -> Result<Vec<u64>, LogStoreError>;

    /// Log entries with `seq > after`, in order, at most `max_entries` and about
    /// `max_bytes` of change bytes (always at least one entry if any exist).
    fn read_log(
        &self,
        after: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogEntry>, LogStoreError>;

    /// What a catching-up device of `principal` (not the dispatcher's, who sees
    /// everything: [`read_log`](Self::read_log)) may be sent from the log after
    /// `after`, up to `head` (read before, so every entry up to it is visible to this
    /// read): the entries of documents it sees now or whose view changed for it after
    /// `after`, a superset of what it is sent (the relay decides entry by entry), at
    /// most `max_entries` and about `max_bytes` as for `read_log`. Returns them and the
    /// position read up to, the entries left out included: `head` unless a limit cut
    /// the page. Backends answer it with one query; this default pages through
    /// `read_log` and filters.
    fn read_log_for(
        &self,
        principal: &str,
        after: u64,
        head: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<(Vec<LogEntry>, u64), LogStoreError> {
        let changed: HashSet<String> = self
            .view_changes(principal, after)?
            .into_iter()
            .map(|c| c.doc_id)
            .collect();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut at = after;
        while at < head {
            let page = self.read_log(at, max_entries.max(1), max_bytes)?;
            let Some(last) = page.last().map(|e| e.seq) else {
                break;
            };
            let ids: Vec<&str> = page.iter().map(|e| e.doc_id.as_str()).collect();
            let audiences = self.audiences_of(&ids)?;
            let sees = |doc_id: &str| {
                changed.contains(doc_id)
                    || audiences.get(doc_id).is_some_and(|a| a.contains(principal))
            };
            for entry in page.into_iter().filter(|e| e.seq <= head) {
                at = entry.seq;
                if sees(&entry.doc_id) {
                    bytes = bytes.saturating_add(entry.bytes.len());
                    out.push(entry);
                    if out.len() >= max_entries || bytes >= max_bytes {
                        return Ok((out, at));
                    }
                }
            }
            if last >= head {
                break;
            }
            at = last;
        }
        Ok((out, head.max(after)))
    }

    /// Whether a change is in the log or waiting.
    fn contains(&self, hash: &[u8]) -> Result<bool, LogStoreError>;

    /// Which of `hashes` are in the log or waiting: [`LogStore::contains`] for a
    /// whole upload at once. Backends answer it with one query.
    fn stored_among(
        &self,
        hashes: &[Vec<u8>],
    ) -> Result<std::collections::HashSet<Vec<u8>>, LogStoreError> {
        let mut found = std::collections::HashSet::new();
        for hash in hashes {
            if self.contains(hash)? {
                found.insert(hash.clone());
            }
        }
        Ok(found)
    }

    /// Which of `hashes` were refused: [`LogStore::is_quarantined`] for a whole
    /// upload's dependencies at once. Backends answer it with one query.
    fn quarantined_among(
        &self,
        hashes: &[Vec<u8>],
    ) -> Result<std::collections::HashSet<Vec<u8>>, LogStoreError> {
        let mut found = std::collections::HashSet::new();
        for hash in hashes {
            if self.is_quarantined(hash)? {
                found.insert(hash.clone());
            }
        }
        Ok(found)
    }

    /// Every stored change of a document (logged, in order, then waiting), to rebuild it.
    fn doc_changes(&self, doc_id: &str) -> Result<Vec<Vec<u8>>, LogStoreError>;

    /// How many commits have changed a document (its changes or its audience); 0
    /// for a document never stored. Read it before the document's changes: a
    /// version older than the changes read only makes the next commit fail safe.
    fn doc_version(&self, doc_id: &str) -> Result<u64, LogStoreError>;

    /// Every document id with at least one stored change, in id order.
    fn doc_ids(&self) -> Result<Vec<String>, LogStoreError>;

    /// Whether a change was refused (a change built on it is refused as well).
    fn is_quarantined(&self, hash: &[u8]) -> Result<bool, LogStoreError>;

    /// The quarantine, oldest first.
    fn quarantined(&self) -> Result<Vec<QuarantinedChange>, LogStoreError>;

    /// A document's current audience (empty if unknown).
    fn audience_of(&self, doc_id: &str) -> Result<BTreeSet<String>, LogStoreError>;

    /// Several documents' current audiences, by id (a document with no audience
    /// is left out). One query where the store allows it: a catching-up device's
    /// page asks for every document in it.
    fn audiences_of(
        &self,
        doc_ids: &[&str],
    ) -> Result<HashMap<String, BTreeSet<String>>, LogStoreError> {
        let mut out = HashMap::new();
        for doc_id in doc_ids {
            let audience = self.audience_of(doc_id)?;
            if !audience.is_empty() {
                out.insert((*doc_id).to_owned(), audience);
            }
        }
        Ok(out)
    }

    /// Documents whose audience currently includes `principal`, in id order.
    fn view(&self, principal: &str) -> Result<Vec<String>, LogStoreError>;

    /// Documents that joined or left `principal`'s view after log position `after`,
    /// in order.
    fn view_changes(&self, principal: &str, after: u64) -> Result<Vec<ViewChange>, LogStoreError>;

    /// A document's log entries, in order (to send its whole history to a device
    /// that has just been given it).
    fn doc_log(&self, doc_id: &str) -> Result<Vec<LogEntry>, LogStoreError>;

    /// The log entries of several documents, in log order (the snapshots a device
    /// that has never synced is sent are built a page of documents at a time).
    /// Stores override this with one query.
    fn docs_log(&self, doc_ids: &[String]) -> Result<Vec<LogEntry>, LogStoreError> {
        let mut entries = Vec::new();
        for doc_id in doc_ids {
            entries.extend(self.doc_log(doc_id)?);
        }
        entries.sort_by_key(|e| e.seq);
        Ok(entries)
    }

    /// The fresh snapshots among `doc_ids`: those saved at the document's current
    /// version (so holding every change logged so far), as `(doc_id, bytes)`.
    /// Documents without one are left out. A store that keeps none returns none.
    fn fresh_snapshots(&self, doc_ids: &[String]) -> Result<Vec<(String, Vec<u8>)>, LogStoreError> {
        let _ = doc_ids;
        Ok(Vec::new())
    }

    /// Keep snapshots, each replacing an older one of its document (a snapshot
    /// never replaces one saved at a later version). Not part of any commit: a
    /// snapshot only saves work, the log stays the truth.
    fn put_snapshots(&mut self, saved: &[SavedDoc]) -> Result<(), LogStoreError> {
        let _ = saved;
        Ok(())
    }

    /// Whether a device's credential was revoked.
    fn is_revoked(&self, device_id: &str) -> Result<bool, LogStoreError>;

    /// Revoke a device (it is refused at its next handshake).
    fn revoke(&mut self, device_id: &str) -> Result<(), LogStoreError>;
}

/// A log kept in memory: for the simulation and tests. "Durable" means it survives
/// the relay state machine being dropped and rebuilt, which is how a simulated relay
/// crash keeps what it acknowledged and loses everything else.
#[derive(Debug, Clone, Default)]
pub struct MemoryLogStore {
    relay_id: String,
    log: Vec<LogEntry>,
    by_hash: std::collections::HashMap<Vec<u8>, u64>,
    waiting: Vec<StoredChange>,
    quarantine: Vec<QuarantinedChange>,
    revoked: std::collections::BTreeSet<String>,
    pruned_through: u64,
    audiences: std::collections::HashMap<String, BTreeSet<String>>,
    view_changes: Vec<ViewChange>,
    versions: std::collections::HashMap<String, u64>,
    snapshots: std::collections::HashMap<String, (u64, Vec<u8>)>,
}

impl MemoryLogStore {
    /// An empty log for a deployment.
    pub fn new(relay_id: impl Into<String>) -> Self {
        Self {
            relay_id: relay_id.into(),
            ..Self::default()
        }
    }

    /// Forget log entries up to `seq` (as a compaction would), so older cursors
    /// can no longer resume. Documents stay complete: their changes are kept aside.
    pub fn prune_through(&mut self, seq: u64) {
        self.pruned_through = self.pruned_through.max(seq.min(self.log.len() as u64));
    }
}

impl LogStore for MemoryLogStore {
    fn relay_id(&self) -> String {
        self.relay_id.clone()
    }

    fn head(&self) -> Result<u64, LogStoreError> {
        Ok(self.log.len() as u64)
    }

    fn oldest_resumable(&self) -> Result<u64, LogStoreError> {
        Ok(self.pruned_through)
    }

    fn commit(&mut self, batch: &IngestBatch) -> Result<Vec<u64>, LogStoreError> {
        let stale = batch.stale_docs(|doc| self.doc_version(doc))?;
        if !stale.is_empty() {
            return Err(LogStoreError::Conflict(stale));
        }
        for doc in batch.touched_docs() {
            *self.versions.entry(doc).or_default() += 1;
        }
        let mut seqs = Vec::with_capacity(batch.log.len());
        for change in &batch.log {
            if let Some(seq) = self.by_hash.get(&change.hash) {
                seqs.push(*seq);
                continue;
            }
            let seq = self.log.len() as u64 + 1;
            self.log.push(LogEntry {
                seq,
                doc_id: change.doc_id.clone(),
                bytes: change.bytes.clone(),
            });
            self.by_hash.insert(change.hash.clone(), seq);
            seqs.push(seq);
        }
        self.waiting
            .retain(|w| !batch.no_longer_waiting.contains(&w.hash));
        for change in &batch.waiting {
            if !self.by_hash.contains_key(&change.hash)
                && !self.waiting.iter().any(|w| w.hash == change.hash)
            {
                self.waiting.push(change.clone());
            }
        }
        self.quarantine.extend(batch.quarantine.iter().cloned());
        let at = seqs.iter().copied().max().unwrap_or(self.log.len() as u64);
        for update in &batch.audience {
            let old = self
                .audiences
                .insert(update.doc_id.clone(), update.audience.clone())
                .unwrap_or_default();
            for (principals, joined) in [
                (update.audience.difference(&old), true),
                (old.difference(&update.audience), false),
            ] {
                for principal in principals {
                    self.view_changes.push(ViewChange {
                        principal: principal.clone(),
                        doc_id: update.doc_id.clone(),
                        seq: at,
                        joined,
                    });
                }
            }
        }
        Ok(seqs)
    }

    fn read_log(
        &self,
        after: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogEntry>, LogStoreError> {
        let start = after.max(self.pruned_through) as usize;
        let mut out = Vec::new();
        let mut bytes = 0;
        for entry in self.log.iter().skip(start) {
            if !out.is_empty() && (out.len() >= max_entries || bytes >= max_bytes) {
                break;
            }
            bytes += entry.bytes.len();
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn contains(&self, hash: &[u8]) -> Result<bool, LogStoreError> {
        Ok(self.by_hash.contains_key(hash) || self.waiting.iter().any(|w| w.hash == hash))
    }

    fn doc_changes(&self, doc_id: &str) -> Result<Vec<Vec<u8>>, LogStoreError> {
        Ok(self
            .log
            .iter()
            .filter(|e| e.doc_id == doc_id)
            .map(|e| e.bytes.clone())
            .chain(
                self.waiting
                    .iter()
                    .filter(|w| w.doc_id == doc_id)
                    .map(|w| w.bytes.clone()),
            )
            .collect())
    }

    fn doc_version(&self, doc_id: &str) -> Result<u64, LogStoreError> {
        Ok(self.versions.get(doc_id).copied().unwrap_or(0))
    }

    fn doc_ids(&self) -> Result<Vec<String>, LogStoreError> {
        let ids: std::collections::BTreeSet<String> = self
            .log
            .iter()
            .map(|e| e.doc_id.clone())
            .chain(self.waiting.iter().map(|w| w.doc_id.clone()))
            .collect();
        Ok(ids.into_iter().collect())
    }

    fn is_quarantined(&self, hash: &[u8]) -> Result<bool, LogStoreError> {
        Ok(!hash.is_empty() && self.quarantine.iter().any(|q| q.change.hash == hash))
    }

    fn quarantined(&self) -> Result<Vec<QuarantinedChange>, LogStoreError> {
        Ok(self.quarantine.clone())
    }

    fn audience_of(&self, doc_id: &str) -> Result<BTreeSet<String>, LogStoreError> {
        Ok(self.audiences.get(doc_id).cloned().unwrap_or_default())
    }

    fn view(&self, principal: &str) -> Result<Vec<String>, LogStoreError> {
        let docs: BTreeSet<String> = self
            .audiences
            .iter()
            .filter(|(_, audience)| audience.contains(principal))
            .map(|(doc, _)| doc.clone())
            .collect();
        Ok(docs.into_iter().collect())
    }

    fn view_changes(&self, principal: &str, after: u64) -> Result<Vec<ViewChange>, LogStoreError> {
        Ok(self
            .view_changes
            .iter()
            .filter(|c| c.principal == principal && c.seq > after)
            .cloned()
            .collect())
    }

    fn doc_log(&self, doc_id: &str) -> Result<Vec<LogEntry>, LogStoreError> {
        Ok(self
            .log
            .iter()
            .filter(|e| e.doc_id == doc_id)
            .cloned()
            .collect())
    }

    fn fresh_snapshots(&self, doc_ids: &[String]) -> Result<Vec<(String, Vec<u8>)>, LogStoreError> {
        Ok(doc_ids
            .iter()
            .filter_map(|id| {
                let (version, bytes) = self.snapshots.get(id)?;
                (*version == self.versions.get(id).copied().unwrap_or(0))
                    .then(|| (id.clone(), bytes.clone()))
            })
            .collect())
    }

    fn put_snapshots(&mut self, saved: &[SavedDoc]) -> Result<(), LogStoreError> {
        for doc in saved {
            let newer = self
                .snapshots
                .get(&doc.doc_id)
                .is_none_or(|(version, _)| *version < doc.version);
            if newer {
                self.snapshots
                    .insert(doc.doc_id.clone(), (doc.version, doc.bytes.clone()));
            }
        }
        Ok(())
    }

    fn is_revoked(&self, device_id: &str) -> Result<bool, LogStoreError> {
        Ok(self.revoked.contains(device_id))
    }

    fn revoke(&mut self, device_id: &str) -> Result<(), LogStoreError> {
        self.revoked.insert(device_id.to_owned());
        Ok(())
    }
}

/// One [`MemoryLogStore`] shared by several relays in one process, as relay nodes
/// share one database: for simulations and tests of a multi-node deployment. Clones
/// are handles on the same store.
#[derive(Debug, Clone)]
pub struct SharedLogStore(std::sync::Arc<std::sync::Mutex<MemoryLogStore>>);

impl SharedLogStore {
    /// A shared, empty log for a deployment.
    pub fn new(relay_id: impl Into<String>) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(
            MemoryLogStore::new(relay_id),
        )))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryLogStore> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl LogStore for SharedLogStore {
    fn relay_id(&self) -> String {
        self.lock().relay_id()
    }
    fn head(&self) -> Result<u64, LogStoreError> {
        self.lock().head()
    }
    fn oldest_resumable(&self) -> Result<u64, LogStoreError> {
        self.lock().oldest_resumable()
    }
    fn commit(&mut self, batch: &IngestBatch) -> Result<Vec<u64>, LogStoreError> {
        self.lock().commit(batch)
    }
    fn read_log(
        &self,
        after: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogEntry>, LogStoreError> {
        self.lock().read_log(after, max_entries, max_bytes)
    }
    fn read_log_for(
        &self,
        principal: &str,
        after: u64,
        head: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<(Vec<LogEntry>, u64), LogStoreError> {
        self.lock()
            .read_log_for(principal, after, head, max_entries, max_bytes)
    }
    fn contains(&self, hash: &[u8]) -> Result<bool, LogStoreError> {
        self.lock().contains(hash)
    }
    fn doc_changes(&self, doc_id: &str) -> Result<Vec<Vec<u8>>, LogStoreError> {
        self.lock().doc_changes(doc_id)
    }
    fn doc_version(&self, doc_id: &str) -> Result<u64, LogStoreError> {
        self.lock().doc_version(doc_id)
    }
    fn doc_ids(&self) -> Result<Vec<String>, LogStoreError> {
        self.lock().doc_ids()
    }
    fn is_quarantined(&self, hash: &[u8]) -> Result<bool, LogStoreError> {
        self.lock().is_quarantined(hash)
    }
    fn quarantined(&self) -> Result<Vec<QuarantinedChange>, LogStoreError> {
        self.lock().quarantined()
    }
    fn audience_of(&self, doc_id: &str) -> Result<BTreeSet<String>, LogStoreError> {
        self.lock().audience_of(doc_id)
    }
    fn audiences_of(
        &self,
        doc_ids: &[&str],
    ) -> Result<HashMap<String, BTreeSet<String>>, LogStoreError> {
        self.lock().audiences_of(doc_ids)
    }
    fn view(&self, principal: &str) -> Result<Vec<String>, LogStoreError> {
        self.lock().view(principal)
    }
    fn view_changes(&self, principal: &str, after: u64) -> Result<Vec<ViewChange>, LogStoreError> {
        self.lock().view_changes(principal, after)
    }
    fn doc_log(&self, doc_id: &str) -> Result<Vec<LogEntry>, LogStoreError> {
        self.lock().doc_log(doc_id)
    }
    fn fresh_snapshots(&self, doc_ids: &[String]) -> Result<Vec<(String, Vec<u8>)>, LogStoreError> {
        self.lock().fresh_snapshots(doc_ids)
    }
    fn put_snapshots(&mut self, saved: &[SavedDoc]) -> Result<(), LogStoreError> {
        self.lock().put_snapshots(saved)
    }
    fn is_revoked(&self, device_id: &str) -> Result<bool, LogStoreError> {
        self.lock().is_revoked(device_id)
    }
    fn revoke(&mut self, device_id: &str) -> Result<(), LogStoreError> {
        self.lock().revoke(device_id)
    }
}

/// The conformance suite every [`LogStore`] backend must pass. A backend's tests call
/// it with a factory for empty stores: `log_store_conformance(|| MyStore::new(..))`.
pub fn log_store_conformance<S: LogStore>(mut fresh: impl FnMut() -> S) {
    conformance::run(&mut fresh);
}

/// The reopen check every durable [`LogStore`] backend must pass: `open(relay_id)`
/// opens the same storage each time it is called.
pub fn log_store_reopen_conformance<S: LogStore>(mut open: impl FnMut(&str) -> S) {
    conformance::reopen(&mut open);
}

#[path = "conformance.rs"]
mod conformance;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_log_store_passes_the_conformance_suite() {
        log_store_conformance(|| MemoryLogStore::new("mem"));
    }

    #[test]
    fn shared_log_store_passes_the_conformance_suite() {
        log_store_conformance(|| SharedLogStore::new("mem"));
    }
}
