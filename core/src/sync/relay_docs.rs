//! The relay's working copies of documents: rebuilt from the log on demand, kept in
//! an LRU cache, and the place where untrusted changes are applied and checked.

use super::log_store::{LogStore, LogStoreError, SavedDoc};
use crate::ids::DocId;
use crate::model::{Document, document};
use automerge::legacy::{ObjectId, OpId};
use automerge::{Automerge, Change, ChangeHash, ObjId, ReadDoc};
use lru::LruCache;
use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;

/// The outcome of applying untrusted changes to one document.
pub(crate) struct Applied {
    /// Changes now part of the document (in causal order), including earlier waiting
    /// ones that the new changes completed.
    pub(crate) applied: Vec<Change>,
    /// New changes still waiting for dependencies (by hash).
    pub(crate) waiting: Vec<ChangeHash>,
    /// The document's typed value afterwards (None while it waits for changes).
    pub(crate) after: Option<Document>,
}

/// A working copy changed by the batch being checked, with its typed value read once
/// (the rules, the facts they ask for and the audiences all use it) and its audience
/// as stored when it was read (None: not read yet).
pub(crate) struct Staged {
    pub(crate) id: String,
    pub(crate) doc: Automerge,
    pub(crate) typed: Option<Document>,
    pub(crate) audience: Option<BTreeSet<String>>,
}

/// A cached working copy: the document, the store version it was read at, its typed
/// value (None: not read yet; `Some(None)`: incomplete or not readable) and its
/// stored audience (None: not read yet). The typed value and the audience are kept
/// so that a batch neither re-hydrates the document it is about to change nor
/// queries the store for who sees it.
struct Cached {
    doc: Automerge,
    version: u64,
    typed: Option<Option<Document>>,
    audience: Option<BTreeSet<String>>,
}

/// Why a batch of changes to a document was refused.
#[derive(Debug)]
pub(crate) enum Refused {
    /// Automerge could not apply a change.
    Corrupt(String),
    /// The document would no longer read as an order or delivery.
    Invalid(String),
    /// The device's role does not allow the change, or the document is not shared
    /// with it.
    Forbidden(String),
}

/// The working copies, each with the store version it was read at
/// ([`LogStore::doc_version`]), and the versions read by the batch being built: the
/// commit expects them still current, so relay nodes sharing one store never commit
/// a batch checked against a copy another node has moved on from.
///
/// It also keeps the store's snapshots ([`LogStore::put_snapshots`]) in step without
/// rebuilding anything: a committed document is marked unsaved, and is saved from its
/// cached copy when the cache lets it go or when [`RelayDocs::take_snapshots`] is
/// called (the relay's tick, and before it serves snapshots).
pub(crate) struct RelayDocs {
    cache: LruCache<String, Cached>,
    reads: BTreeMap<String, u64>,
    /// Documents committed since their snapshot was last saved.
    unsaved: BTreeSet<String>,
    /// Snapshots of unsaved documents the cache let go, to write.
    evicted: Vec<SavedDoc>,
}

impl RelayDocs {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            cache: LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)),
            reads: BTreeMap::new(),
            unsaved: BTreeSet::new(),
            evicted: Vec::new(),
        }
    }

    /// Snapshots to write: those of unsaved documents the cache let go, and (with
    /// `cached`) one of every unsaved document still cached, each saved at the
    /// version its cached copy is at. Documents not in the cache any more, or
    /// incomplete, get none; their snapshots are rebuilt from the log when needed.
    pub(crate) fn take_snapshots(&mut self, cached: bool) -> Vec<SavedDoc> {
        let mut out = std::mem::take(&mut self.evicted);
        if !cached {
            return out;
        }
        let unsaved = std::mem::take(&mut self.unsaved);
        let copies: Vec<(&String, &Cached)> = unsaved
            .iter()
            .filter_map(|doc_id| Some((doc_id, self.cache.peek(doc_id)?)))
            .collect();
        let threads = crate::parallel::threads_for(copies.len(), SAVE_PARALLEL_FROM);
        let saved = crate::parallel::map(&copies, threads, |(doc_id, cached)| {
            saved_copy(doc_id, cached)
        });
        out.extend(saved.into_iter().flatten());
        out
    }

    /// How many snapshots of documents the cache let go wait to be written.
    pub(crate) fn evicted_snapshots(&self) -> usize {
        self.evicted.len()
    }

    /// Take a document out of the cache, or rebuild it from the store; its version
    /// joins the read set of the batch being built.
    pub(crate) fn take(
        &mut self,
        store: &dyn LogStore,
        doc_id: &str,
    ) -> Result<Automerge, LogStoreError> {
        Ok(self.take_cached(store, doc_id)?.doc)
    }

    fn take_cached(&mut self, store: &dyn LogStore, doc_id: &str) -> Result<Cached, LogStoreError> {
        let cached = match self.cache.pop(doc_id) {
            Some(cached) => cached,
            None => Self::load(store, doc_id)?,
        };
        self.reads
            .entry(doc_id.to_owned())
            .or_insert(cached.version);
        Ok(cached)
    }

    /// Take a document to change it, with its typed value (read now only if the
    /// cache did not know it) and its stored audience (read now if unknown).
    pub(crate) fn take_staged(
        &mut self,
        store: &dyn LogStore,
        doc_id: &str,
    ) -> Result<Staged, LogStoreError> {
        let cached = self.take_cached(store, doc_id)?;
        let typed = match cached.typed {
            Some(typed) => typed,
            None => typed_of(doc_id, &cached.doc),
        };
        let audience = match cached.audience {
            Some(audience) => audience,
            None => store.audience_of(doc_id)?,
        };
        Ok(Staged {
            id: doc_id.to_owned(),
            doc: cached.doc,
            typed,
            audience: Some(audience),
        })
    }

    /// A document's typed value (None when absent, incomplete or unreadable),
    /// hydrated at most once while the document stays cached.
    pub(crate) fn typed(
        &mut self,
        store: &dyn LogStore,
        doc_id: &str,
    ) -> Result<Option<Document>, LogStoreError> {
        let mut cached = self.take_cached(store, doc_id)?;
        let typed = match &cached.typed {
            Some(typed) => typed.clone(),
            None => {
                let typed = typed_of(doc_id, &cached.doc);
                cached.typed = Some(typed.clone());
                typed
            }
        };
        self.cache.put(doc_id.to_owned(), cached);
        Ok(typed)
    }

    /// A cached copy's heads and typed value (None: not read yet), if cached.
    #[cfg(test)]
    pub(crate) fn peek(&self, doc_id: &str) -> Option<(Vec<ChangeHash>, Option<Option<Document>>)> {
        self.cache
            .peek(doc_id)
            .map(|c| (c.doc.get_heads(), c.typed.clone()))
    }

    /// A document's stored audience: from the cache when known, else from the
    /// store (and remembered if the document is cached).
    pub(crate) fn audience(
        &mut self,
        store: &dyn LogStore,
        doc_id: &str,
    ) -> Result<BTreeSet<String>, LogStoreError> {
        if let Some(Some(audience)) = self.cache.peek(doc_id).map(|c| c.audience.as_ref()) {
            return Ok(audience.clone());
        }
        let audience = store.audience_of(doc_id)?;
        if let Some(cached) = self.cache.peek_mut(doc_id) {
            cached.audience = Some(audience.clone());
        }
        Ok(audience)
    }

    /// A committed batch changed a document's audience.
    pub(crate) fn set_audience(&mut self, doc_id: &str, audience: &BTreeSet<String>) {
        if let Some(cached) = self.cache.peek_mut(doc_id) {
            cached.audience = Some(audience.clone());
        }
    }

    fn load(store: &dyn LogStore, doc_id: &str) -> Result<Cached, LogStoreError> {
        // The version first: changes committed in between make it look older than
        // the copy, which fails the next commit safely instead of hiding a change.
        let version = store.doc_version(doc_id)?;
        let doc = rebuild(doc_id, store.doc_changes(doc_id)?)?;
        Ok(Cached {
            doc,
            version,
            typed: None,
            audience: None,
        })
    }

    /// Put back a document taken while building the current batch, unchanged or
    /// changed only in ways not yet committed. Its typed value and audience are
    /// read again when next asked for.
    pub(crate) fn put(&mut self, doc_id: String, doc: Automerge) {
        self.put_known(doc_id, doc, None, None);
    }

    /// Put back a staged document with what is known of it: its typed value (which
    /// must be the document's; None, as for a document still waiting for changes, is
    /// read again when asked for) and its stored audience.
    pub(crate) fn put_staged(&mut self, staged: Staged) {
        let typed = staged.typed.map(Some);
        self.put_known(staged.id, staged.doc, typed, staged.audience);
    }

    fn put_known(
        &mut self,
        doc_id: String,
        doc: Automerge,
        typed: Option<Option<Document>>,
        audience: Option<BTreeSet<String>>,
    ) {
        match self.reads.get(&doc_id) {
            Some(version) => {
                let version = *version;
                let pushed = self.cache.push(
                    doc_id.clone(),
                    Cached {
                        doc,
                        version,
                        typed,
                        audience,
                    },
                );
                if let Some((gone, cached)) = pushed
                    && gone != doc_id
                    && self.unsaved.remove(&gone)
                    && let Some(saved) = saved_copy(&gone, &cached)
                {
                    self.evicted.push(saved);
                }
            }
            // Not read through `take`: its version is unknown, so it is not kept.
            None => {
                self.cache.pop(&doc_id);
            }
        }
    }

    /// Start building a batch: forget the previous read set.
    pub(crate) fn begin_batch(&mut self) {
        self.reads.clear();
    }

    /// The versions the batch being built was checked against.
    pub(crate) fn read_versions(&self) -> BTreeMap<String, u64> {
        self.reads.clone()
    }

    /// The batch committed: the documents it touched moved one version on (the
    /// staged ones are put back by the caller after this).
    pub(crate) fn committed(&mut self, touched: &BTreeSet<String>) {
        for doc_id in touched {
            self.unsaved.insert(doc_id.clone());
            if let Some(version) = self.reads.get_mut(doc_id) {
                *version += 1;
            }
            let read = self.reads.get(doc_id).copied();
            if let Some(cached) = self.cache.get_mut(doc_id) {
                match read {
                    Some(read) => cached.version = read,
                    None => {
                        self.cache.pop(doc_id);
                    }
                }
            }
        }
    }

    /// Forget a cached copy (its in-memory state is ahead of the store, or another
    /// node changed it).
    pub(crate) fn evict(&mut self, doc_id: &str) {
        self.cache.pop(doc_id);
    }

    /// Forget every copy the batch being built read (after a conflict).
    pub(crate) fn evict_reads(&mut self) {
        for doc_id in std::mem::take(&mut self.reads).into_keys() {
            self.cache.pop(&doc_id);
        }
    }
}

/// A document rebuilt from its stored changes (raw bytes, in order). A stored change
/// that no longer decodes or applies is `Corrupt`: never skipped, since whatever is
/// built from the copy (a commit, a snapshot) would then silently lack it.
pub(crate) fn rebuild(doc_id: &str, raw: Vec<Vec<u8>>) -> Result<Automerge, LogStoreError> {
    let corrupt = |e: &dyn std::fmt::Display| {
        LogStoreError::Corrupt(format!("stored changes of {doc_id}: {e}"))
    };
    let changes = raw
        .into_iter()
        .map(|bytes| Change::from_bytes(bytes).map_err(|e| corrupt(&e)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut doc = Automerge::new();
    crate::changes::apply(&mut doc, changes).map_err(|e| corrupt(&e))?;
    Ok(doc)
}

/// Fewer unsaved documents than this are saved on the calling thread.
const SAVE_PARALLEL_FROM: usize = 32;

/// A cached copy saved at its version (None while it holds no change yet, or holds
/// changes waiting for others: those are not in the log, so not in a snapshot).
fn saved_copy(doc_id: &str, cached: &Cached) -> Option<SavedDoc> {
    let complete =
        !cached.doc.get_heads().is_empty() && cached.doc.get_missing_deps(&[]).is_empty();
    complete.then(|| SavedDoc {
        doc_id: doc_id.to_owned(),
        version: cached.version,
        bytes: cached.doc.save(),
    })
}

/// Apply untrusted changes to a working copy and check the result still reads as a
/// Waybill document. `before` is the copy's typed value before the changes (None:
/// unknown, unreadable or not created). On `Err`, `doc` may be half-updated and must
/// be dropped.
pub(crate) fn apply_checked(
    doc: &mut Automerge,
    doc_id: &DocId,
    before: Option<&Document>,
    changes: Vec<Change>,
) -> Result<Applied, Refused> {
    let heads_before = doc.get_heads();
    let hashes: Vec<ChangeHash> = changes.iter().map(Change::hash).collect();
    // With nothing queued in the copy, the changes this applies are exactly the given
    // ones absent before and present after: no need for Automerge to rebuild them
    // from its history (`get_changes` re-encodes every change it returns).
    let complete_before = doc.get_missing_deps(&[]).is_empty();
    let absent: Vec<Change> = if complete_before {
        let mut seen = std::collections::HashSet::new();
        changes
            .iter()
            .filter(|c| seen.insert(c.hash()) && !has_change(doc, &c.hash()))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    crate::changes::apply(doc, changes).map_err(|e| Refused::Corrupt(e.to_string()))?;
    let waiting: Vec<ChangeHash> = hashes.into_iter().filter(|h| !has_change(doc, h)).collect();
    if !complete_before {
        let applied = new_since(doc, &heads_before);
        let after = readable(doc, doc_id)?;
        return Ok(Applied {
            applied,
            waiting,
            after,
        });
    }
    let applied = causal_order(
        absent
            .into_iter()
            .filter(|c| !waiting.contains(&c.hash()))
            .collect(),
    );
    let after = match before {
        Some(before) if waiting.is_empty() && !applied.is_empty() => {
            match notes_only(doc, before, &applied) {
                Some(after) => Some(after),
                None => readable(doc, doc_id)?,
            }
        }
        _ => readable(doc, doc_id)?,
    };
    Ok(Applied {
        applied,
        waiting,
        after,
    })
}

/// Whether the document holds a change (applied, not merely queued). Reads the
/// change graph only.
fn has_change(doc: &Automerge, hash: &ChangeHash) -> bool {
    doc.get_change_meta_by_hash(hash).is_some()
}

/// Changes sorted so that each comes after those of its dependencies among them
/// (they arrive in causal order from an honest device; any order is accepted).
fn causal_order(mut pending: Vec<Change>) -> Vec<Change> {
    let mut ordered = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let ready = pending.iter().position(|c| {
            !c.deps()
                .iter()
                .any(|d| pending.iter().any(|p| p.hash() == *d))
        });
        match ready {
            Some(i) => ordered.push(pending.remove(i)),
            // Impossible (hashes cannot form a cycle); keep them rather than lose any.
            None => ordered.append(&mut pending),
        }
    }
    ordered
}

/// The typed value after `applied` when every operation in them edits the text at
/// the root's `notes` (what adding a note does): `before` with its notes read again,
/// instead of hydrating the whole document. Nothing else the schema reads can have
/// changed, so this equals a full read. None when any operation touches anything
/// else (the caller then reads the whole document).
pub(crate) fn notes_only(
    doc: &Automerge,
    before: &Document,
    applied: &[Change],
) -> Option<Document> {
    let notes = match doc.get(automerge::ROOT, "notes") {
        Ok(Some((
            automerge::Value::Object(automerge::ObjType::Text),
            ObjId::Id(ctr, actor, _),
        ))) => (ctr, actor),
        _ => return None,
    };
    let edits_notes_only = |change: &Change| {
        // `decode` expands stored operations Automerge has just applied; a panic
        // there is treated as "not only notes", never as a crash.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            change.decode().operations.iter().all(|op| match &op.obj {
                ObjectId::Id(OpId(ctr, actor)) => *ctr == notes.0 && *actor == notes.1,
                ObjectId::Root => false,
            })
        }))
        .unwrap_or(false)
    };
    if !applied.iter().all(edits_notes_only) {
        return None;
    }
    let text: autosurgeon::Text = autosurgeon::hydrate_prop(doc, automerge::ROOT, "notes").ok()?;
    let mut after = before.clone();
    match &mut after {
        Document::Order(order) => order.notes = text,
        Document::Delivery(delivery) => delivery.notes = text,
    }
    Some(after)
}

/// Changes of `doc` that are not ancestors of `heads_before`, in causal order.
pub(crate) fn new_since(doc: &Automerge, heads_before: &[ChangeHash]) -> Vec<Change> {
    if doc.get_heads() == heads_before {
        return Vec::new();
    }
    doc.get_changes(heads_before)
}

/// Read a working copy as its typed value, if it is complete.
pub(crate) fn typed_of(doc_id: &str, doc: &Automerge) -> Option<Document> {
    let id = DocId::parse(doc_id).ok()?;
    if doc.get_heads().is_empty() {
        return None;
    }
    document::read(&id, doc).ok()
}

/// A document with every dependency present must read as its kind (its typed value
/// is returned); one still waiting for changes (or not created yet) cannot be
/// judged and is let through as `None`.
pub(crate) fn readable(doc: &Automerge, doc_id: &DocId) -> Result<Option<Document>, Refused> {
    if doc.get_heads().is_empty() || !doc.get_missing_deps(&[]).is_empty() {
        return Ok(None);
    }
    document::read(doc_id, doc)
        .map(Some)
        .map_err(|e| Refused::Invalid(e.to_string()))
}

#[cfg(test)]
#[path = "relay_docs_tests.rs"]
mod tests;
