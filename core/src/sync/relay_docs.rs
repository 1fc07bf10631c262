//! The relay's working copies of documents: rebuilt from the log on demand, kept in
//! an LRU cache, and the place where untrusted changes are applied and checked.

use super::log_store::{LogStore, LogStoreError};
use crate::ids::DocId;
use crate::model::{Document, document};
use automerge::{Automerge, Change, ChangeHash, ReadDoc};
use lru::LruCache;
use std::num::NonZeroUsize;

/// The outcome of applying untrusted changes to one document.
pub(crate) struct Applied {
    /// Changes now part of the document (in causal order), including earlier waiting
    /// ones that the new changes completed.
    pub(crate) applied: Vec<Change>,
    /// New changes still waiting for dependencies.
    pub(crate) waiting: Vec<Change>,
    /// The document's typed value afterwards (None while it waits for changes).
    pub(crate) after: Option<Document>,
}

/// A working copy changed by the batch being checked, with its typed value read once
/// (the rules, the facts they ask for and the audiences all use it).
pub(crate) struct Staged {
    pub(crate) id: String,
    pub(crate) doc: Automerge,
    pub(crate) typed: Option<Document>,
}

/// Why a batch of changes to a document was refused.
pub(crate) enum Refused {
    /// Automerge could not apply a change.
    Corrupt(String),
    /// The document would no longer read as an order or delivery.
    Invalid(String),
    /// The device's role does not allow the change, or the document is not shared
    /// with it.
    Forbidden(String),
}

pub(crate) struct RelayDocs {
    cache: LruCache<String, Automerge>,
}

impl RelayDocs {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            cache: LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    /// Take a document out of the cache, or rebuild it from the store.
    pub(crate) fn take(
        &mut self,
        store: &dyn LogStore,
        doc_id: &str,
    ) -> Result<Automerge, LogStoreError> {
        if let Some(doc) = self.cache.pop(doc_id) {
            return Ok(doc);
        }
        let mut changes = Vec::new();
        for bytes in store.doc_changes(doc_id)? {
            changes.push(
                Change::from_bytes(bytes).map_err(|e| {
                    LogStoreError::Corrupt(format!("stored change of {doc_id}: {e}"))
                })?,
            );
        }
        let mut doc = Automerge::new();
        crate::changes::apply(&mut doc, changes)
            .map_err(|e| LogStoreError::Corrupt(format!("stored changes of {doc_id}: {e}")))?;
        Ok(doc)
    }

    /// Put a document back once what was applied to it is durable.
    pub(crate) fn put(&mut self, doc_id: String, doc: Automerge) {
        self.cache.put(doc_id, doc);
    }

    /// Forget a cached copy (its in-memory state is ahead of the store).
    pub(crate) fn evict(&mut self, doc_id: &str) {
        self.cache.pop(doc_id);
    }
}

/// Apply untrusted changes to a working copy and check the result still reads as a
/// Waybill document. On `Err`, `doc` may be half-updated and must be dropped.
pub(crate) fn apply_checked(
    doc: &mut Automerge,
    doc_id: &DocId,
    changes: Vec<Change>,
) -> Result<Applied, Refused> {
    let heads_before = doc.get_heads();
    let hashes: Vec<ChangeHash> = changes.iter().map(Change::hash).collect();
    crate::changes::apply(doc, changes.clone()).map_err(|e| Refused::Corrupt(e.to_string()))?;
    let applied = new_since(doc, &heads_before);
    let after = readable(doc, doc_id)?;
    let waiting = changes
        .into_iter()
        .zip(hashes)
        .filter(|(_, h)| doc.get_change_by_hash(h).is_none())
        .map(|(c, _)| c)
        .collect();
    Ok(Applied {
        applied,
        waiting,
        after,
    })
}

/// Changes of `doc` that are not ancestors of `heads_before`, in causal order.
pub(crate) fn new_since(doc: &Automerge, heads_before: &[ChangeHash]) -> Vec<Change> {
    if doc.get_heads() == heads_before {
        return Vec::new();
    }
    doc.get_changes(heads_before)
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
