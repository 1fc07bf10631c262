//! What the sync layer needs from a replica: the cursor, applying a page of the
//! relay's log in one transaction, per-document sync, uploads and refusals.

use super::{ChangeOrigin, DocChange, Replica, ReplicaError};
use crate::ids::DocId;
use crate::protocol::{Cursor, DocSnapshot, LogEntry};
use crate::store::{OutboxEntry, RefusedChange};
use automerge::sync::{self as am_sync, SyncDoc};

const CURSOR_KEY: &str = "sync_cursor";

/// What [`Replica::remove_documents`] / [`Replica::remove_pending`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removal {
    /// Documents removed from this device.
    pub removed: Vec<DocId>,
    /// Of those, the ones to fetch again from the relay.
    pub refetch: Vec<DocId>,
}

/// What applying a page of the relay's log did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogApplied {
    /// Changes new to this device.
    pub new_changes: usize,
    /// Documents that got at least one new change.
    pub documents: usize,
    /// Entries that could not be applied (document id, reason); the rest were.
    pub skipped: Vec<(String, String)>,
}

impl Replica {
    /// Where this device left off in the relay's log.
    pub fn sync_cursor(&self) -> Result<Option<Cursor>, ReplicaError> {
        let value = self.lock_writer().store.meta(CURSOR_KEY)?;
        Ok(value.and_then(|v| {
            let (relay_id, seq) = v.rsplit_once(' ')?;
            Some(Cursor {
                relay_id: relay_id.to_owned(),
                seq: seq.parse().ok()?,
            })
        }))
    }

    /// A device setting kept in the store (the credential, a relay address override):
    /// apps and the command line keep what a device needs to sync beside its data.
    pub fn setting(&self, key: &str) -> Result<Option<String>, ReplicaError> {
        Ok(self.lock_writer().store.meta(&format!("setting.{key}"))?)
    }

    /// Store a device setting (see [`Replica::setting`]).
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), ReplicaError> {
        self.lock_writer()
            .store
            .set_meta(&format!("setting.{key}"), value)?;
        Ok(())
    }

    /// Record the cursor on its own (after a full sync brought every document in).
    pub fn set_sync_cursor(&self, cursor: &Cursor) -> Result<(), ReplicaError> {
        self.lock_writer()
            .store
            .set_meta(CURSOR_KEY, &encode_cursor(cursor))?;
        Ok(())
    }

    /// Apply a page of the relay's log and, in the same transaction, move the cursor
    /// (when given): after a crash the device resumes exactly after what it stored.
    /// An entry that cannot be applied is skipped and reported, never fatal to the
    /// rest of the page.
    pub fn apply_log(
        &self,
        entries: &[LogEntry],
        cursor: Option<&Cursor>,
    ) -> Result<LogApplied, ReplicaError> {
        let mut groups: Vec<(DocId, Vec<automerge::Change>)> = Vec::new();
        let mut index: std::collections::HashMap<DocId, usize> = std::collections::HashMap::new();
        let mut outcome = LogApplied::default();
        for entry in entries {
            let id = match DocId::parse(&entry.doc_id) {
                Ok(id) => id,
                Err(e) => {
                    outcome.skipped.push((entry.doc_id.clone(), e.to_string()));
                    continue;
                }
            };
            let change = match crate::changes::decode(&entry.bytes) {
                Ok(change) => change,
                Err(e) => {
                    outcome.skipped.push((entry.doc_id.clone(), e.to_string()));
                    continue;
                }
            };
            match index.get(&id) {
                Some(&i) => groups[i].1.push(change),
                None => {
                    index.insert(id.clone(), groups.len());
                    groups.push((id, vec![change]));
                }
            }
        }
        self.write(|s| {
            for (id, changes) in groups {
                match s.apply_remote(&id, changes) {
                    Ok(applied) => {
                        outcome.new_changes += applied.new_changes;
                        outcome.documents += usize::from(applied.new_changes > 0);
                    }
                    Err(e @ ReplicaError::CorruptChange { .. }) => {
                        s.discard(&id);
                        outcome.skipped.push((id.to_string(), e.to_string()));
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(cursor) = cursor {
                s.set_meta(CURSOR_KEY, encode_cursor(cursor));
            }
            Ok(())
        })?;
        let arrived: Vec<DocId> = entries
            .iter()
            .filter_map(|e| DocId::parse(&e.doc_id).ok())
            .collect();
        self.page_taken(&arrived, outcome)
    }

    /// Take in a page of whole documents from the relay (a device that has never
    /// synced is sent snapshots before the log) and, in the same transaction, store
    /// the cursor (when given, with the last page). A document that does not load
    /// or read is skipped and reported, never fatal to the rest of the page.
    pub fn import_snapshots(
        &self,
        docs: &[DocSnapshot],
        cursor: Option<&Cursor>,
    ) -> Result<LogApplied, ReplicaError> {
        let mut outcome = LogApplied::default();
        let mut arrived = Vec::with_capacity(docs.len());
        // Loading and reading are the costly part and need no store: done first,
        // on several threads for a large page.
        let loaded = load_all(docs);
        self.write(|s| {
            for (snapshot, loaded) in docs.iter().zip(loaded) {
                let taken = loaded.and_then(|(id, doc, typed)| {
                    let new = s.take_snapshot(&id, doc, typed, &snapshot.bytes);
                    if new.is_err() {
                        s.discard(&id);
                    }
                    new.map(|new| (id, new))
                });
                match taken {
                    Ok((id, new)) => {
                        outcome.new_changes += new;
                        outcome.documents += usize::from(new > 0);
                        arrived.push(id);
                    }
                    Err(
                        e @ (ReplicaError::CorruptChange { .. }
                        | ReplicaError::Model(_)
                        | ReplicaError::Incomplete { .. }
                        | ReplicaError::InvalidDocId(_)),
                    ) => outcome
                        .skipped
                        .push((snapshot.doc_id.clone(), e.to_string())),
                    Err(e) => return Err(e),
                }
            }
            if let Some(cursor) = cursor {
                s.set_meta(CURSOR_KEY, encode_cursor(cursor));
            }
            Ok(())
        })?;
        self.page_taken(&arrived, outcome)
    }

    /// After a page from the relay is stored: documents it brought are shared again
    /// (or still), so a removal decided earlier no longer applies; what was skipped
    /// is logged.
    fn page_taken(
        &self,
        arrived: &[DocId],
        outcome: LogApplied,
    ) -> Result<LogApplied, ReplicaError> {
        if !arrived.is_empty() {
            self.lock_writer().store.cancel_removal(arrived)?;
        }
        for (doc_id, reason) in &outcome.skipped {
            tracing::warn!(doc = %doc_id, %reason, "skipped a document from the relay");
        }
        Ok(outcome)
    }

    /// The next Automerge sync message for a document (None: nothing to say).
    /// A document not on this device answers as an empty one, which asks for all.
    pub fn doc_sync_message(
        &self,
        doc_id: &DocId,
        state: &mut am_sync::State,
    ) -> Result<Option<Vec<u8>>, ReplicaError> {
        let mut writer = self.lock_writer();
        let doc = writer.take(doc_id)?.unwrap_or_default();
        let message = doc
            .generate_sync_message(state)
            .map(am_sync::Message::encode);
        if !doc.get_heads().is_empty() {
            writer.cache.put(doc_id.clone(), doc);
        }
        Ok(message)
    }

    /// A document's heads (empty when it is not on this device).
    pub fn heads_of(&self, doc_id: &DocId) -> Result<Vec<automerge::ChangeHash>, ReplicaError> {
        let mut writer = self.lock_writer();
        let Some(doc) = writer.take(doc_id)? else {
            return Ok(Vec::new());
        };
        let heads = doc.get_heads();
        writer.cache.put(doc_id.clone(), doc);
        Ok(heads)
    }

    /// Apply a peer's Automerge sync message for a document; the changes it brings
    /// are stored (and indexed) before this returns. Returns how many were new.
    pub fn receive_doc_sync(
        &self,
        doc_id: &DocId,
        state: &mut am_sync::State,
        message: &[u8],
    ) -> Result<usize, ReplicaError> {
        let message =
            am_sync::Message::decode(message).map_err(|e| ReplicaError::CorruptChange {
                doc_id: doc_id.to_string(),
                index: 0,
                reason: e.to_string(),
            })?;
        self.write(|s| s.receive_sync(doc_id, state, message))
    }

    /// The relay no longer shares these documents with this device (a delivery was
    /// reassigned, say), or refused a local change to one it still shares
    /// (`refresh`): remove them — at once where none of their own changes await the
    /// relay's answer, otherwise once they are answered ([`Replica::remove_pending`]).
    /// The intent is stored, so a restart in between forgets nothing. Returns the
    /// documents removed now, and those to fetch again.
    pub fn remove_documents(&self, ids: &[DocId], refresh: bool) -> Result<Removal, ReplicaError> {
        self.lock_writer().store.mark_for_removal(ids, refresh)?;
        self.remove_pending()
    }

    /// Carry out pending removals whose documents have no changes awaiting the
    /// relay any more, and tell observers (origin [`ChangeOrigin::Removed`]).
    pub fn remove_pending(&self) -> Result<Removal, ReplicaError> {
        let removal = {
            let mut writer = self.lock_writer();
            let mut removal = Removal::default();
            for (id, refresh) in writer.store.pending_removals()? {
                if writer.store.has_pending(&id)? {
                    continue;
                }
                if refresh {
                    removal.refetch.push(id.clone());
                }
                removal.removed.push(id);
            }
            writer.store.purge(&removal.removed)?;
            for id in &removal.removed {
                writer.cache.pop(id);
            }
            removal
        };
        let changes: Vec<DocChange> = removal
            .removed
            .iter()
            .map(|doc_id| DocChange {
                doc_id: doc_id.clone(),
                origin: ChangeOrigin::Removed,
            })
            .collect();
        self.observers.notify(&changes);
        Ok(removal)
    }

    /// Outbox entries after `after` (the last one already sent), oldest first.
    pub fn outbox_after(&self, after: i64, limit: usize) -> Result<Vec<OutboxEntry>, ReplicaError> {
        Ok(self.lock_writer().store.outbox_after(after, limit)?)
    }

    /// The relay refused these local changes (hash, code, reason): move them out of
    /// the outbox into the refused list, where they stay for the app to show.
    pub fn refuse(&self, refusals: &[(Vec<u8>, String, String)]) -> Result<usize, ReplicaError> {
        Ok(self.lock_writer().store.refuse(refusals)?)
    }

    /// Local changes the relay refused, newest first.
    pub fn refused_changes(&self) -> Result<Vec<RefusedChange>, ReplicaError> {
        Ok(self.lock_writer().store.refused()?)
    }
}

fn encode_cursor(cursor: &Cursor) -> String {
    format!("{} {}", cursor.relay_id, cursor.seq)
}

/// A loaded and read snapshot, or why it cannot be taken.
type Loaded = Result<(DocId, automerge::Automerge, crate::model::Document), ReplicaError>;

/// Pages smaller than this are loaded on the calling thread.
const PARALLEL_FROM: usize = 64;

/// Load and read every snapshot of a page, in order; a large page is split over
/// the available cores.
fn load_all(docs: &[DocSnapshot]) -> Vec<Loaded> {
    // `load_snapshot` catches Automerge's panics; anything else is a bug worth
    // surfacing where it happened (`map` raises it again here).
    crate::parallel::map(
        docs,
        crate::parallel::threads_for(docs.len(), PARALLEL_FROM),
        |snapshot| -> Loaded {
            let id = DocId::parse(&snapshot.doc_id)?;
            let (doc, typed) = super::session::load_snapshot(&id, &snapshot.bytes)?;
            Ok((id, doc, typed))
        },
    )
}
