//! Uploads: untrusted changes checked against the relay's copy of each document,
//! made durable through the `LogStore`, then acknowledged and pushed.

use super::rules::typed_of;
use super::visibility::ViewDelta;
use super::{CommitNotice, ConnId, Failure, Relay};
use crate::identity::DeviceIdentity;
use crate::ids::DocId;
use crate::protocol::{ErrorCode, LogEntry, Message, Refusal, Upload, UploadAck, UploadChange};
use crate::sync::log_store::{
    IngestBatch, LogStore, LogStoreError, QuarantinedChange, StoredChange,
};
use crate::sync::relay_docs::{self, Refused, Staged};
use std::collections::{HashMap, HashSet};

impl<S: LogStore> Relay<S> {
    pub(super) fn on_upload(
        &mut self,
        conn: ConnId,
        upload: Upload,
        now_ms: i64,
        woken: &mut Vec<ConnId>,
    ) -> Result<(), Failure> {
        let Some((identity, principal)) = self.author(conn) else {
            return Ok(());
        };
        let device = identity.device_id.clone();
        let _span = tracing::debug_span!("upload", conn, device = %device, batch = upload.batch, changes = upload.changes.len()).entered();
        let groups = group_by_doc(upload.changes);
        let author = Author {
            identity: &identity,
            principal: &principal,
            now_ms,
        };
        let mut attempt = 1;
        let (outcome, own, view) = loop {
            match self.ingest_groups(&groups, &author)? {
                Ok(done) => break done,
                Err(stale) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(
                        attempt,
                        ?stale,
                        "documents changed on another node; checking the upload again"
                    );
                    attempt += 1;
                }
                Err(stale) => {
                    tracing::warn!(
                        attempt,
                        ?stale,
                        "documents keep changing on other nodes; the device retries the upload"
                    );
                    return Err(Failure::new(
                        ErrorCode::Internal,
                        "the documents changed while the relay checked them; retry".into(),
                    ));
                }
            }
        };
        self.push(conn, &own, &view, woken);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.out.push_back(Message::UploadAck(UploadAck {
                batch: upload.batch,
                accepted: outcome.accepted,
                refused: outcome.refused,
            }));
        }
        Ok(())
    }

    /// Check every group, then commit what they stage in one batch. `Ok(Err(stale))`
    /// when another node changed documents the check read: nothing was stored, and
    /// the working copies it read are forgotten so the next attempt reads them anew.
    #[allow(clippy::type_complexity)]
    fn ingest_groups(
        &mut self,
        groups: &[(String, Vec<Vec<u8>>)],
        author: &Author<'_>,
    ) -> Result<Result<(Ingest, Vec<(LogEntry, bool)>, ViewDelta), Vec<String>>, Failure> {
        self.docs.begin_batch();
        let mut outcome = Ingest::default();
        for (doc_id, group) in groups {
            self.stage_group(doc_id, group.clone(), author, &mut outcome)?;
        }
        let (audience, view) = match self.audiences_after(&outcome.docs) {
            Ok(found) => found,
            Err(e) => {
                for staged in &outcome.docs {
                    self.docs.evict(&staged.id);
                }
                return Err(e);
            }
        };
        outcome.batch.audience = audience;
        let batch = std::mem::take(&mut outcome.batch);
        let docs = std::mem::take(&mut outcome.docs);
        match self.commit(batch, docs, &outcome.own) {
            Ok(own) => Ok(Ok((outcome, own, view))),
            Err(LogStoreError::Conflict(stale)) => Ok(Err(stale)),
            Err(e) => Err(e.into()),
        }
    }

    /// Check one document's uploaded changes, staging what to store.
    pub(super) fn stage_group(
        &mut self,
        doc_id: &str,
        group: Vec<Vec<u8>>,
        author: &Author<'_>,
        out: &mut Ingest,
    ) -> Result<(), Failure> {
        let device = author.identity.device_id.as_str();
        let now_ms = author.now_ms;
        let Ok(id) = DocId::parse(doc_id) else {
            for bytes in group {
                out.refuse(
                    doc_id,
                    Vec::new(),
                    bytes,
                    device,
                    now_ms,
                    ErrorCode::InvalidDocument,
                    format!("{doc_id:?} is not a Waybill document id"),
                );
            }
            return Ok(());
        };
        let mut fresh = Vec::new();
        let mut seen = HashSet::new();
        for bytes in group {
            match crate::changes::decode(&bytes) {
                Err(e) => out.refuse(
                    doc_id,
                    Vec::new(),
                    bytes,
                    device,
                    now_ms,
                    ErrorCode::CorruptChange,
                    e.to_string(),
                ),
                Ok(change) => {
                    let hash = change.hash().0.to_vec();
                    if self.store.contains(&hash)? {
                        out.accepted.push(hash);
                    } else if let Some(dep) = self.refused_dependency(&change, out)? {
                        // Built on a refused change: it could never be applied.
                        out.refuse(
                            doc_id,
                            hash,
                            bytes,
                            device,
                            now_ms,
                            ErrorCode::Forbidden,
                            format!("it builds on refused change {dep}"),
                        );
                    } else if seen.insert(hash) {
                        fresh.push(change);
                    }
                }
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        let mut doc = self.docs.take(&self.store, doc_id)?;
        let exists = !doc.get_heads().is_empty();
        let before = typed_of(doc_id, &doc);
        let hashes: Vec<Vec<u8>> = fresh.iter().map(|c| c.hash().0.to_vec()).collect();
        let checked = if self.may_touch(author.principal, doc_id, exists)? {
            relay_docs::apply_checked(&mut doc, &id, fresh.clone()).and_then(|applied| {
                match &applied.after {
                    Some(after) => self
                        .check_effect(author.identity, before.as_ref(), after, &out.docs)
                        .map(|()| applied)
                        .map_err(Refused::Forbidden),
                    // Still waiting for changes: judged once they arrive.
                    None => Ok(applied),
                }
            })
        } else {
            Err(Refused::Forbidden(format!(
                "{doc_id} is not shared with this device"
            )))
        };
        match checked {
            Ok(applied) => {
                for change in applied.applied {
                    let hash = change.hash().0.to_vec();
                    let own = hashes.contains(&hash);
                    if !own {
                        // It waited for the changes that just arrived.
                        out.batch.no_longer_waiting.push(hash.clone());
                    }
                    out.own.insert(hash.clone(), own);
                    out.batch
                        .log
                        .push(stored(doc_id, &change, if own { device } else { "" }));
                }
                for change in applied.waiting {
                    out.batch.waiting.push(stored(doc_id, &change, device));
                }
                out.accepted.extend(hashes);
                out.docs.push(Staged {
                    id: doc_id.to_owned(),
                    doc,
                    typed: applied.after,
                });
            }
            Err(refused) => {
                // The working copy holds the refused changes: rebuild it from the store.
                self.docs.evict(doc_id);
                let (code, reason) = match refused {
                    Refused::Corrupt(r) => (ErrorCode::CorruptChange, r),
                    Refused::Invalid(r) => (ErrorCode::InvalidDocument, r),
                    Refused::Forbidden(r) => (ErrorCode::Forbidden, r),
                };
                tracing::warn!(doc = doc_id, ?code, %reason, "changes refused and quarantined");
                for change in fresh {
                    out.refuse(
                        doc_id,
                        change.hash().0.to_vec(),
                        change.raw_bytes().to_vec(),
                        device,
                        now_ms,
                        code,
                        reason.clone(),
                    );
                }
            }
        }
        Ok(())
    }

    /// A dependency of `change` that was refused (earlier, or in this upload).
    fn refused_dependency(
        &self,
        change: &automerge::Change,
        out: &Ingest,
    ) -> Result<Option<automerge::ChangeHash>, Failure> {
        for dep in change.deps() {
            let refused_now = out.refused.iter().any(|r| r.hash == dep.0);
            if refused_now || self.store.is_quarantined(&dep.0)? {
                return Ok(Some(*dep));
            }
        }
        Ok(None)
    }

    /// Make a batch durable, then cache the documents it changed. Returns the new log
    /// entries, each marked with whether the uploading device made it. The batch is
    /// checked against the versions of every document read since
    /// [`RelayDocs::begin_batch`](crate::sync::relay_docs::RelayDocs::begin_batch); on
    /// a conflict nothing is stored and those copies are forgotten.
    pub(super) fn commit(
        &mut self,
        mut batch: IngestBatch,
        docs: Vec<Staged>,
        own: &HashMap<Vec<u8>, bool>,
    ) -> Result<Vec<(LogEntry, bool)>, LogStoreError> {
        if batch.is_empty() {
            for staged in docs {
                self.docs.put(staged.id, staged.doc);
            }
            return Ok(Vec::new());
        }
        batch.expect = self.docs.read_versions();
        let seqs = match self.store.commit(&batch) {
            Ok(seqs) => seqs,
            Err(e) => {
                // Nothing was stored: the working copies are ahead of the store (or,
                // on a conflict, behind another node's commits).
                for staged in docs {
                    self.docs.evict(&staged.id);
                }
                if matches!(e, LogStoreError::Conflict(_)) {
                    self.docs.evict_reads();
                }
                return Err(e);
            }
        };
        let touched = batch.touched_docs();
        self.docs.committed(&touched);
        for staged in docs {
            self.docs.put(staged.id, staged.doc);
        }
        if let Some(through) = seqs
            .iter()
            .copied()
            .max()
            .or_else(|| (!touched.is_empty()).then_some(0))
        {
            if self.committed.len() >= super::MAX_NOTICES {
                // Nobody is reading them: notices are hints, the oldest can go.
                self.committed.pop_front();
            }
            self.committed.push_back(CommitNotice {
                through,
                doc_ids: touched.into_iter().collect(),
            });
        }
        Ok(batch
            .log
            .into_iter()
            .zip(seqs)
            .map(|(c, seq)| {
                let mine = own.get(&c.hash).copied().unwrap_or(false);
                (
                    LogEntry {
                        seq,
                        doc_id: c.doc_id,
                        bytes: c.bytes,
                    },
                    mine,
                )
            })
            .collect())
    }
}

/// How often an upload is checked again when other relay nodes keep changing the
/// documents it touches, before the device is asked to retry.
const MAX_ATTEMPTS: u32 = 5;

/// Who is uploading, and when.
pub(super) struct Author<'a> {
    pub(super) identity: &'a DeviceIdentity,
    pub(super) principal: &'a str,
    pub(super) now_ms: i64,
}

/// What one upload stages.
#[derive(Default)]
pub(super) struct Ingest {
    pub(super) batch: IngestBatch,
    pub(super) docs: Vec<Staged>,
    /// Log entries to be, by hash: whether the uploading device made them.
    pub(super) own: HashMap<Vec<u8>, bool>,
    pub(super) accepted: Vec<Vec<u8>>,
    pub(super) refused: Vec<Refusal>,
}

impl Ingest {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn refuse(
        &mut self,
        doc_id: &str,
        hash: Vec<u8>,
        bytes: Vec<u8>,
        device: &str,
        now_ms: i64,
        code: ErrorCode,
        reason: String,
    ) {
        self.refused.push(Refusal {
            hash: hash.clone(),
            doc_id: doc_id.to_owned(),
            code,
            reason: reason.clone(),
        });
        self.batch.quarantine.push(QuarantinedChange {
            change: StoredChange {
                doc_id: doc_id.to_owned(),
                hash,
                bytes,
                device_id: device.to_owned(),
            },
            code: format!("{code:?}"),
            reason,
            at_ms: now_ms,
        });
    }
}

pub(super) fn stored(doc_id: &str, change: &automerge::Change, device: &str) -> StoredChange {
    StoredChange {
        doc_id: doc_id.to_owned(),
        hash: change.hash().0.to_vec(),
        bytes: change.raw_bytes().to_vec(),
        device_id: device.to_owned(),
    }
}

/// Group changes by document, keeping the order of first appearance and, within a
/// document, the order sent.
fn group_by_doc(changes: Vec<UploadChange>) -> Vec<(String, Vec<Vec<u8>>)> {
    let mut groups: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for change in changes {
        match index.get(&change.doc_id) {
            Some(&i) => groups[i].1.push(change.bytes),
            None => {
                index.insert(change.doc_id.clone(), groups.len());
                groups.push((change.doc_id, vec![change.bytes]));
            }
        }
    }
    groups
}
