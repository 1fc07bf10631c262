//! A write session: documents taken out of the cache, changed, and committed together.

use super::observer::{ChangeOrigin, DocChange};
use super::{ApplyOutcome, HLC_KEY, ReplicaError, Writer};
use crate::hlc::Hlc;
use crate::identity::DeviceIdentity;
use crate::ids::{DocId, DocKind};
use crate::model::{Delivery, Document, ModelError, Order, document};
use crate::store::{DocWrite, IndexRows};
use automerge::transaction::{CommitOptions, Transaction};
use automerge::{Automerge, Change, ReadDoc};

struct Staged {
    id: DocId,
    doc: Automerge,
    changes: Vec<Change>,
    origin: ChangeOrigin,
    heads_before: Vec<automerge::ChangeHash>,
    /// Received whole from the relay: its saved bytes, stored as they are.
    snapshot: Option<Vec<u8>>,
    /// Its typed value, when already read and checked (a snapshot).
    typed: Option<Document>,
}

impl Staged {
    /// Stage the changes the document gained since `before` (a merge or a sync
    /// message brought them); returns how many.
    fn stage_changes_since(&mut self, before: &[automerge::ChangeHash]) -> usize {
        if self.doc.get_heads() == before {
            return 0;
        }
        let new = self.doc.get_changes(before);
        let count = new.len();
        self.changes.extend(new);
        count
    }
}

/// Documents staged for one commit. Dropping a session without committing leaves
/// nothing in the store, and the touched documents out of the cache.
pub(crate) struct Session<'w> {
    writer: &'w mut Writer,
    pub(crate) identity: &'w DeviceIdentity,
    staged: Vec<Staged>,
    /// Metadata written in the same transaction (the sync cursor).
    meta: Vec<(&'static str, String)>,
}

impl<'w> Session<'w> {
    pub(crate) fn new(writer: &'w mut Writer, identity: &'w DeviceIdentity) -> Self {
        Self {
            writer,
            identity,
            staged: Vec::new(),
            meta: Vec::new(),
        }
    }

    /// A new timestamp from the device's hybrid logical clock.
    pub(crate) fn tick(&mut self) -> Hlc {
        let now = self.writer.wall.now_ms();
        self.writer.hlc.tick(now)
    }

    fn stage(
        &mut self,
        id: &DocId,
        origin: ChangeOrigin,
        create: bool,
    ) -> Result<&mut Staged, ReplicaError> {
        if let Some(pos) = self.staged.iter().position(|s| &s.id == id) {
            return Ok(&mut self.staged[pos]);
        }
        let doc = match self.writer.take(id)? {
            Some(doc) => doc,
            None if create => Automerge::new().with_actor(self.writer.actor.clone()),
            None => {
                return Err(ReplicaError::NotFound {
                    doc_id: id.to_string(),
                });
            }
        };
        let heads_before = doc.get_heads();
        let pos = self.staged.len();
        self.staged.push(Staged {
            id: id.clone(),
            doc,
            changes: Vec::new(),
            origin,
            heads_before,
            snapshot: None,
            typed: None,
        });
        Ok(&mut self.staged[pos])
    }

    /// Read an order (staged state included).
    pub(crate) fn order(&mut self, id: &DocId) -> Result<Order, ReplicaError> {
        if id.kind() != DocKind::Order {
            return Err(ReplicaError::WrongKind {
                doc_id: id.to_string(),
                expected: "order",
            });
        }
        let staged = self.stage(id, ChangeOrigin::Local, false)?;
        Ok(document::read_order(id, readable(id, &staged.doc)?)?)
    }

    /// Read a delivery (staged state included).
    pub(crate) fn delivery(&mut self, id: &DocId) -> Result<Delivery, ReplicaError> {
        if id.kind() != DocKind::Delivery {
            return Err(ReplicaError::WrongKind {
                doc_id: id.to_string(),
                expected: "delivery",
            });
        }
        let staged = self.stage(id, ChangeOrigin::Local, false)?;
        Ok(document::read_delivery(id, readable(id, &staged.doc)?)?)
    }

    /// Whether a document is on this device and readable (not only changes that
    /// wait for the one that created it).
    pub(crate) fn exists(&mut self, id: &DocId) -> Result<bool, ReplicaError> {
        match self.stage(id, ChangeOrigin::Local, false) {
            Ok(staged) => Ok(!staged.doc.get_heads().is_empty()),
            Err(ReplicaError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Make one Automerge change to a document (creating it if `create`).
    pub(crate) fn change(
        &mut self,
        id: &DocId,
        create: bool,
        message: &str,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<(), ModelError>,
    ) -> Result<(), ReplicaError> {
        let time_s = self.writer.wall.now_ms() / 1000;
        let staged = self.stage(id, ChangeOrigin::Local, create)?;
        staged
            .doc
            .transact_with(
                |_| {
                    CommitOptions::default()
                        .with_message(message.to_owned())
                        .with_time(time_s)
                },
                f,
            )
            .map_err(|failure| ReplicaError::Model(failure.error))?;
        if let Some(change) = staged.doc.get_last_local_change() {
            staged.changes.push(change);
        }
        Ok(())
    }

    /// Merge remote changes into a document.
    pub(crate) fn apply_remote(
        &mut self,
        id: &DocId,
        changes: Vec<Change>,
    ) -> Result<ApplyOutcome, ReplicaError> {
        let staged = self.stage(id, ChangeOrigin::Remote, true)?;
        staged.origin = ChangeOrigin::Remote;
        let new: Vec<Change> = changes
            .into_iter()
            .filter(|c| staged.doc.get_change_meta_by_hash(&c.hash()).is_none())
            .collect();
        let count = new.len();
        crate::changes::apply(&mut staged.doc, new.clone()).map_err(|e| {
            ReplicaError::CorruptChange {
                doc_id: id.to_string(),
                index: 0,
                reason: e.to_string(),
            }
        })?;
        staged.changes.extend(new);
        let waiting = !staged.doc.get_missing_deps(&[]).is_empty();
        Ok(ApplyOutcome {
            new_changes: count,
            waiting_for_dependencies: waiting,
        })
    }

    /// Take in a whole document received from the relay, already loaded and read
    /// ([`load_snapshot`]). A document new to this device keeps the saved bytes as
    /// its stored snapshot; one it already holds merges it. Returns how many
    /// changes were new to it.
    pub(crate) fn take_snapshot(
        &mut self,
        id: &DocId,
        loaded: Automerge,
        typed: Document,
        bytes: &[u8],
    ) -> Result<usize, ReplicaError> {
        let staged = self.stage(id, ChangeOrigin::Remote, true)?;
        staged.origin = ChangeOrigin::Remote;
        let fresh = staged.doc.get_heads().is_empty()
            && staged.doc.get_missing_deps(&[]).is_empty()
            && staged.changes.is_empty();
        if fresh {
            let count = loaded.get_changes_meta(&[]).len();
            let actor = staged.doc.get_actor().clone();
            staged.doc = loaded.with_actor(actor);
            staged.snapshot = Some(bytes.to_vec());
            staged.typed = Some(typed);
            return Ok(count);
        }
        let before = staged.doc.get_heads();
        let mut loaded = loaded;
        let doc = &mut staged.doc;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| doc.merge(&mut loaded)))
            .map_err(|_| snapshot_error(id, "automerge could not merge it".into()))?
            .map_err(|e| snapshot_error(id, e.to_string()))?;
        Ok(staged.stage_changes_since(&before))
    }

    /// Write a metadata value in the same transaction as the staged documents.
    pub(crate) fn set_meta(&mut self, key: &'static str, value: String) {
        self.meta.retain(|(k, _)| *k != key);
        self.meta.push((key, value));
    }

    /// Drop a staged document whose update failed half-way; the store and cache
    /// keep the state before it.
    pub(crate) fn discard(&mut self, id: &DocId) {
        self.staged.retain(|s| &s.id != id);
    }

    /// Run Automerge's sync protocol for one document: apply the peer's message and
    /// stage the changes it brought.
    pub(crate) fn receive_sync(
        &mut self,
        id: &DocId,
        state: &mut automerge::sync::State,
        message: automerge::sync::Message,
    ) -> Result<usize, ReplicaError> {
        use automerge::sync::SyncDoc;
        let staged = self.stage(id, ChangeOrigin::Remote, true)?;
        staged.origin = ChangeOrigin::Remote;
        let before = staged.doc.get_heads();
        let doc = &mut staged.doc;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            doc.receive_sync_message(state, message)
        }));
        let reason = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("automerge could not apply the sync message".to_owned()),
        };
        if let Some(reason) = reason {
            self.discard(id);
            return Err(ReplicaError::CorruptChange {
                doc_id: id.to_string(),
                index: 0,
                reason,
            });
        }
        Ok(staged.stage_changes_since(&before))
    }

    /// Commit every staged document in one store transaction.
    pub(crate) fn commit(mut self) -> Result<Vec<DocChange>, ReplicaError> {
        let mut staged = std::mem::take(&mut self.staged);
        let mut indexes = Vec::with_capacity(staged.len());
        let mut observed = self.writer.hlc;
        for s in &mut staged {
            if s.changes.is_empty() && s.snapshot.is_none() {
                // Only read during this mutation: nothing to store.
                indexes.push(None);
                continue;
            }
            let read = match s.typed.take() {
                Some(typed) => Ok(typed),
                None => document::read(&s.id, &s.doc),
            };
            let index = match read {
                Ok(doc) => {
                    observe_events(&mut observed, &doc);
                    Some(IndexRows::of(&doc))
                }
                // A remote document can be incomplete until its missing changes arrive.
                Err(ModelError::Malformed { .. })
                    if s.origin == ChangeOrigin::Remote
                        && !s.doc.get_missing_deps(&[]).is_empty() =>
                {
                    None
                }
                Err(ModelError::Malformed { .. })
                    if s.origin == ChangeOrigin::Remote && s.doc.get_heads().is_empty() =>
                {
                    None
                }
                Err(e) => return Err(e.into()),
            };
            indexes.push(index);
        }
        self.writer.hlc = observed;
        let writes: Vec<DocWrite<'_>> = staged
            .iter()
            .zip(indexes)
            .filter(|(s, _)| !s.changes.is_empty() || s.snapshot.is_some())
            .map(|(s, index)| DocWrite {
                id: &s.id,
                doc: &s.doc,
                changes: &s.changes,
                index,
                local: s.origin == ChangeOrigin::Local,
                snapshot: s.snapshot.as_deref(),
            })
            .collect();
        let hlc = self.writer.hlc.last();
        let mut meta = std::mem::take(&mut self.meta);
        meta.push((HLC_KEY, format!("{}.{}", hlc.wall_ms, hlc.counter)));
        self.writer.store.commit(&writes, &meta)?;
        drop(writes);
        tracing::debug!(
            docs = staged.len(),
            changes = staged.iter().map(|s| s.changes.len()).sum::<usize>(),
            "committed"
        );
        let mut changed = Vec::new();
        for s in staged {
            if s.doc.get_heads() != s.heads_before {
                changed.push(DocChange {
                    doc_id: s.id.clone(),
                    origin: s.origin,
                });
            }
            // A document that got no change and has none (an empty remote batch for
            // an unknown id) does not exist: keep no phantom of it.
            if !s.doc.get_heads().is_empty() {
                self.writer.cache.put(s.id, s.doc);
            }
        }
        Ok(changed)
    }
}

/// Load a whole document received from the relay as saved Automerge bytes and read
/// it: bytes that do not load, or a document that does not read as its kind, are
/// refused. Pure (no store), so a page of them can be loaded in parallel.
pub(crate) fn load_snapshot(
    id: &DocId,
    bytes: &[u8],
) -> Result<(Automerge, Document), ReplicaError> {
    let loaded = std::panic::catch_unwind(|| Automerge::load(bytes))
        .map_err(|_| snapshot_error(id, "automerge could not load it".into()))?
        .map_err(|e| snapshot_error(id, e.to_string()))?;
    let typed = document::read(id, readable(id, &loaded)?)?;
    Ok((loaded, typed))
}

fn snapshot_error(id: &DocId, reason: String) -> ReplicaError {
    ReplicaError::CorruptChange {
        doc_id: id.to_string(),
        index: 0,
        reason: format!("snapshot: {reason}"),
    }
}

/// A document whose creating change has not arrived holds only waiting changes: it
/// cannot be read yet, which is not the same as malformed.
pub(crate) fn readable<'d>(id: &DocId, doc: &'d Automerge) -> Result<&'d Automerge, ReplicaError> {
    if doc.get_heads().is_empty() {
        return Err(ReplicaError::Incomplete {
            doc_id: id.to_string(),
        });
    }
    Ok(doc)
}

/// Move the clock past every event in a document, so local events recorded after
/// merging sort after what was merged.
fn observe_events(clock: &mut crate::hlc::HlcState, doc: &Document) {
    let latest = match doc {
        Document::Order(o) => o.events.iter().map(|e| e.at).max(),
        Document::Delivery(d) => d.events.iter().map(|e| e.at).max(),
    };
    if let Some(at) = latest {
        clock.observe(at);
    }
}
