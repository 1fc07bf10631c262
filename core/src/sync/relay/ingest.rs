//! Uploads: untrusted changes checked against the relay's copy of each document,
//! made durable through the `LogStore`, then acknowledged and pushed.

use super::ahead::Aheads;
use super::visibility::ViewDelta;
use super::{CommitNotice, ConnId, Failure, Relay};
use crate::identity::DeviceIdentity;
use crate::ids::DocId;
use crate::model::Document;
use crate::parallel;
use crate::protocol::{ErrorCode, LogEntry, Message, Refusal, Upload, UploadAck, UploadChange};
use crate::sync::audience;
use crate::sync::log_store::{
    IngestBatch, LogStore, LogStoreError, QuarantinedChange, StoredChange,
};
use crate::sync::relay_docs::{self, Refused, Staged, typed_of};
use automerge::Change;
use std::collections::{HashMap, HashSet};

/// Log entries a commit made, each with the connection whose upload it came from
/// (None: it had waited, or came from elsewhere).
pub(super) type Committed = Vec<(LogEntry, Option<ConnId>)>;

/// An upload from an authenticated device, grouped by document, ready to be
/// checked (again, after a conflict with another node).
pub(super) struct PendingUpload {
    conn: ConnId,
    batch: u64,
    identity: DeviceIdentity,
    principal: String,
    pub(super) groups: Vec<DocGroup>,
}

/// One document's changes in an upload, as sent and decoded (decoded once, however
/// often the upload is checked).
pub(super) struct DocGroup {
    pub(super) doc_id: String,
    pub(super) bytes: Vec<Vec<u8>>,
    pub(super) decoded: Vec<Result<Change, crate::changes::ChangeError>>,
}

impl DocGroup {
    /// A document's changes, not decoded yet.
    fn new(doc_id: String, bytes: Vec<Vec<u8>>) -> Self {
        Self {
            doc_id,
            bytes,
            decoded: Vec::new(),
        }
    }

    fn decode(&mut self) {
        self.decoded = self
            .bytes
            .iter()
            .map(|b| crate::changes::decode(b))
            .collect();
    }
}

/// Uploads with fewer changes than this are decoded on the relay's thread.
const DECODE_PARALLEL_FROM: usize = 64;

/// Decode every upload's changes, spread over the cores when there are many.
fn decode_all(pending: &mut [PendingUpload]) {
    let mut groups: Vec<&mut DocGroup> = pending.iter_mut().flat_map(|u| &mut u.groups).collect();
    let changes = groups.iter().map(|g| g.bytes.len()).sum();
    let threads = parallel::threads_for(changes, DECODE_PARALLEL_FROM);
    parallel::map_mut(&mut groups, threads, |group| group.decode());
}

/// What the store held before the group: which of its changes are logged, and
/// which of their dependencies were refused. Asked once per group (the store does
/// not change while a group is checked).
#[derive(Default)]
pub(super) struct Known {
    stored: HashSet<Vec<u8>>,
    quarantined: HashSet<Vec<u8>>,
}

impl Known {
    pub(super) fn is_stored(&self, hash: &[u8]) -> bool {
        self.stored.contains(hash)
    }
}

/// An upload's changes to one document, sorted against what the store holds and
/// what the group refused so far.
pub(super) struct Sorted<'g> {
    /// Logged already: accepted again, with nothing to do.
    pub(super) stored: Vec<Vec<u8>>,
    /// Refused before any apply: the change's place in the group, its hash (empty
    /// when it did not decode), the code and the reason.
    pub(super) refused: Vec<(usize, Vec<u8>, ErrorCode, String)>,
    /// The changes to check, each once, with their hashes and places in the group.
    pub(super) fresh: Vec<&'g Change>,
    pub(super) hashes: Vec<Vec<u8>>,
    pub(super) at: Vec<usize>,
}

/// Sort an upload's changes to one document: those that do not decode and those
/// built on a refused change are refused, logged ones accepted as they are, the
/// rest are to be checked.
pub(super) fn sort_out<'g>(
    group: &'g DocGroup,
    known: &Known,
    refused_now: &HashSet<Vec<u8>>,
) -> Sorted<'g> {
    let mut sorted = Sorted {
        stored: Vec::new(),
        refused: Vec::new(),
        fresh: Vec::new(),
        hashes: Vec::new(),
        at: Vec::new(),
    };
    let mut decoded = Vec::with_capacity(group.decoded.len());
    for (index, change) in group.decoded.iter().enumerate() {
        match change {
            Err(e) => {
                sorted
                    .refused
                    .push((index, Vec::new(), ErrorCode::CorruptChange, e.to_string()))
            }
            Ok(change) => decoded.push((index, change)),
        }
    }
    let mut own: HashSet<automerge::ChangeHash> = HashSet::new();
    // Refused here (a change built on one of these is refused in turn).
    let mut refused_here: HashSet<automerge::ChangeHash> = HashSet::new();
    for (index, change) in decoded {
        let hash = change.hash();
        if known.stored.contains(&hash.0[..]) {
            sorted.stored.push(hash.0.to_vec());
            continue;
        }
        let refused_dep = change.deps().iter().find(|d| {
            refused_here.contains(d)
                || refused_now.contains(&d.0[..])
                || known.quarantined.contains(&d.0[..])
        });
        if let Some(dep) = refused_dep {
            // Built on a refused change: it could never be applied.
            refused_here.insert(hash);
            sorted.refused.push((
                index,
                hash.0.to_vec(),
                ErrorCode::Forbidden,
                format!("it builds on refused change {dep}"),
            ));
        } else if own.insert(hash) {
            sorted.fresh.push(change);
            sorted.hashes.push(hash.0.to_vec());
            sorted.at.push(index);
        }
    }
    sorted
}

/// What each upload of a group is told.
#[derive(Default)]
struct Verdict {
    accepted: Vec<Vec<u8>>,
    refused: Vec<Refusal>,
}

impl<S: LogStore> Relay<S> {
    pub(super) fn on_upload(
        &mut self,
        conn: ConnId,
        upload: Upload,
        now_ms: i64,
        woken: &mut Vec<ConnId>,
    ) -> Result<(), Failure> {
        self.ingest_uploads(vec![(conn, upload)], now_ms, woken);
        Ok(())
    }

    /// Check uploads from one or several connections (in the order given; one
    /// device's uploads keep their order) and commit everything they stage in ONE
    /// `LogStore::commit` (group commit: one transaction, one fsync), then
    /// acknowledge each upload: acknowledgements still follow durability. A storage
    /// failure fails every upload of the group (nothing was stored; the devices
    /// retry).
    pub(super) fn ingest_uploads(
        &mut self,
        uploads: Vec<(ConnId, Upload)>,
        now_ms: i64,
        woken: &mut Vec<ConnId>,
    ) {
        let mut pending: Vec<PendingUpload> = uploads
            .into_iter()
            .filter_map(|(conn, upload)| {
                let (identity, principal) = self.author(conn)?;
                Some(PendingUpload {
                    conn,
                    batch: upload.batch,
                    identity,
                    principal,
                    groups: group_by_doc(upload.changes),
                })
            })
            .collect();
        if pending.is_empty() {
            return;
        }
        let _span = tracing::debug_span!("uploads", count = pending.len()).entered();
        decode_all(&mut pending);
        let mut attempt = 1;
        let failure = loop {
            match self.ingest_group(&pending, now_ms) {
                Ok(Ok((verdicts, committed, view))) => {
                    self.push(&committed, &view, woken);
                    for (upload, verdict) in pending.iter().zip(verdicts) {
                        if let Some(c) = self.conns.get_mut(&upload.conn) {
                            c.out.push_back(Message::UploadAck(UploadAck {
                                batch: upload.batch,
                                accepted: verdict.accepted,
                                refused: verdict.refused,
                            }));
                        }
                        woken.push(upload.conn);
                    }
                    return;
                }
                Ok(Err(stale)) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(
                        attempt,
                        ?stale,
                        "documents changed on another node; checking the uploads again"
                    );
                    attempt += 1;
                }
                Ok(Err(stale)) => {
                    tracing::warn!(
                        attempt,
                        ?stale,
                        "documents keep changing on other nodes; the devices retry the uploads"
                    );
                    break Failure::new(
                        ErrorCode::Internal,
                        "the documents changed while the relay checked them; retry".into(),
                    );
                }
                Err(failure) => break failure,
            }
        };
        for upload in &pending {
            self.fail(upload.conn, failure.code, failure.message.clone());
            woken.push(upload.conn);
        }
    }

    /// Check every upload of a group, then commit what they stage in one batch.
    /// `Ok(Err(stale))` when another node changed documents the check read: nothing
    /// was stored, and the working copies it read are forgotten so the next attempt
    /// reads them anew.
    #[allow(clippy::type_complexity)]
    fn ingest_group(
        &mut self,
        pending: &[PendingUpload],
        now_ms: i64,
    ) -> Result<Result<(Vec<Verdict>, Committed, ViewDelta), Vec<String>>, Failure> {
        self.docs.begin_batch();
        let known = self.known(pending.iter().flat_map(|u| &u.groups))?;
        let mut aheads = self.apply_ahead(pending, &known)?;
        let mut outcome = Ingest::default();
        let mut verdicts = Vec::with_capacity(pending.len());
        for (index, upload) in pending.iter().enumerate() {
            let _span = tracing::debug_span!("upload", conn = upload.conn, device = %upload.identity.device_id, batch = upload.batch).entered();
            let author = Author {
                identity: &upload.identity,
                principal: &upload.principal,
                now_ms,
                conn: upload.conn,
            };
            outcome.earlier = (!outcome.docs.is_empty()).then(|| earlier_staged(&outcome.docs));
            for group in &upload.groups {
                self.stage_group(index, group, &known, &author, &mut outcome, &mut aheads)?;
            }
            verdicts.push(Verdict {
                accepted: std::mem::take(&mut outcome.accepted),
                refused: std::mem::take(&mut outcome.refused),
            });
        }
        for (doc_id, ahead) in aheads {
            self.settle(&doc_id, ahead, &mut outcome)?;
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
            Ok(committed) => Ok(Ok((verdicts, committed, view))),
            Err(LogStoreError::Conflict(stale)) => Ok(Err(stale)),
            Err(e) => Err(e.into()),
        }
    }

    /// Check one upload's changes to one document (the `upload`-th of the group),
    /// staging what to store. A document already staged by an earlier upload of the
    /// group is checked on top of it; its changes are taken as applied ahead when
    /// they are exactly what this check would apply (see [`super::ahead`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stage_group(
        &mut self,
        upload: usize,
        doc_group: &DocGroup,
        known: &Known,
        author: &Author<'_>,
        out: &mut Ingest,
        aheads: &mut Aheads,
    ) -> Result<(), Failure> {
        let doc_id = doc_group.doc_id.as_str();
        let group = &doc_group.bytes;
        let device = author.identity.device_id.as_str();
        let now_ms = author.now_ms;
        let Ok(id) = DocId::parse(doc_id) else {
            for bytes in group {
                out.refuse(
                    doc_id,
                    Vec::new(),
                    bytes.clone(),
                    device,
                    now_ms,
                    ErrorCode::InvalidDocument,
                    format!("{doc_id:?} is not a Waybill document id"),
                );
            }
            return Ok(());
        };
        let sorted = sort_out(doc_group, known, &out.refused_now);
        out.accepted.extend(sorted.stored);
        for (at, hash, code, reason) in sorted.refused {
            out.refuse(
                doc_id,
                hash,
                group[at].clone(),
                device,
                now_ms,
                code,
                reason,
            );
        }
        if sorted.fresh.is_empty() {
            return Ok(());
        }
        let (fresh, hashes, fresh_at) = (sorted.fresh, sorted.hashes, sorted.at);
        let in_group = out.docs.iter().any(|s| s.id == doc_id);
        let step = match aheads.remove(doc_id) {
            Some(mut ahead) if ahead.next_is(upload, &hashes, in_group) => {
                let step = ahead.take();
                aheads.insert(doc_id.to_owned(), ahead);
                step
            }
            Some(ahead) => {
                self.settle(doc_id, ahead, out)?;
                None
            }
            None => None,
        };
        let earlier = out.docs.iter().position(|s| s.id == doc_id);
        let (mut staged, exists, before, applied) = match step {
            Some((step, first)) => {
                let mut staged = match (first, earlier) {
                    (Some(staged), _) => staged,
                    (None, Some(i)) => out.docs.swap_remove(i),
                    (None, None) => unreachable!("a step after the first has the group's copy"),
                };
                staged.typed = None;
                (staged, step.exists, step.before, Some(step.applied))
            }
            None => {
                let mut staged = match earlier {
                    Some(i) => out.docs.swap_remove(i),
                    None => self.docs.take_staged(&self.store, doc_id)?,
                };
                let exists = !staged.doc.get_heads().is_empty();
                let before = match staged.typed.take() {
                    Some(typed) => Some(typed),
                    None => typed_of(doc_id, &staged.doc),
                };
                (staged, exists, before, None)
            }
        };
        let shared = !exists
            || author.principal == audience::DISPATCH
            || match (&out.earlier, &before) {
                // Earlier uploads of the group may have changed who sees it.
                (Some((ids, couriers)), Some(typed))
                    if ids.contains(doc_id) || matches!(typed, Document::Order(_)) =>
                {
                    audience::sees(author.principal, &self.audience_of_doc(typed, couriers)?)
                }
                _ => match &staged.audience {
                    Some(known) => audience::sees(author.principal, known),
                    None => {
                        audience::sees(author.principal, &self.docs.audience(&self.store, doc_id)?)
                    }
                },
            };
        let checked = if shared {
            applied
                .unwrap_or_else(|| {
                    let fresh = fresh.into_iter().cloned().collect();
                    relay_docs::apply_checked(&mut staged.doc, &id, before.as_ref(), fresh)
                })
                .and_then(|applied| match &applied.after {
                    Some(after) => self
                        .check_effect(author.identity, before.as_ref(), after, &out.docs)
                        .map(|()| applied)
                        .map_err(Refused::Forbidden),
                    // Still waiting for changes: judged once they arrive.
                    None => Ok(applied),
                })
        } else {
            Err(Refused::Forbidden(format!(
                "{doc_id} is not shared with this device"
            )))
        };
        match checked {
            Ok(applied) => {
                let own: HashSet<&[u8]> = hashes.iter().map(Vec::as_slice).collect();
                for change in applied.applied {
                    let hash = change.hash().0.to_vec();
                    let mine = own.contains(&hash[..]);
                    if mine {
                        out.own.insert(hash.clone(), author.conn);
                    } else {
                        // It waited for the changes that just arrived.
                        out.batch.no_longer_waiting.push(hash.clone());
                    }
                    out.batch.log.push(StoredChange {
                        doc_id: doc_id.to_owned(),
                        hash,
                        bytes: change.raw_bytes().to_vec(),
                        device_id: if mine { device } else { "" }.to_owned(),
                    });
                }
                for waiting in applied.waiting {
                    if let Some(at) = hashes.iter().position(|h| h[..] == waiting.0[..]) {
                        out.batch.waiting.push(StoredChange {
                            doc_id: doc_id.to_owned(),
                            hash: hashes[at].clone(),
                            bytes: group[fresh_at[at]].clone(),
                            device_id: device.to_owned(),
                        });
                    }
                }
                out.accepted.extend(hashes);
                staged.typed = applied.after;
                out.docs.push(staged);
            }
            Err(refused) => {
                // The working copy holds the refused changes (and any applied ahead
                // after them): rebuild it from the store and what earlier uploads of
                // the group staged on it.
                aheads.remove(doc_id);
                self.docs.evict(doc_id);
                if earlier.is_some() {
                    self.restage(doc_id, out)?;
                }
                let (code, reason) = match refused {
                    Refused::Corrupt(r) => (ErrorCode::CorruptChange, r),
                    Refused::Invalid(r) => (ErrorCode::InvalidDocument, r),
                    Refused::Forbidden(r) => (ErrorCode::Forbidden, r),
                };
                tracing::warn!(doc = doc_id, ?code, %reason, "changes refused and quarantined");
                for (hash, at) in hashes.into_iter().zip(fresh_at) {
                    out.refuse(
                        doc_id,
                        hash,
                        group[at].clone(),
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

    /// Ask the store once which of a group's changes it logged and which of their
    /// dependencies it refused.
    fn known<'g>(&self, groups: impl Iterator<Item = &'g DocGroup>) -> Result<Known, Failure> {
        let mut hashes = Vec::new();
        let mut changes = Vec::new();
        for group in groups {
            for change in group.decoded.iter().flatten() {
                hashes.push(change.hash().0.to_vec());
                changes.push(change);
            }
        }
        if hashes.is_empty() {
            return Ok(Known::default());
        }
        let stored = self.store.stored_among(&hashes)?;
        let mut deps: Vec<Vec<u8>> = changes
            .iter()
            .zip(&hashes)
            .filter(|(_, h)| !stored.contains(*h))
            .flat_map(|(c, _)| c.deps().iter().map(|d| d.0.to_vec()))
            .collect();
        deps.sort_unstable();
        deps.dedup();
        let quarantined = self.store.quarantined_among(&deps)?;
        Ok(Known {
            stored,
            quarantined,
        })
    }

    /// Rebuild a working copy that earlier uploads of the group had staged changes
    /// on, after a later upload's changes to it were refused: the stored document
    /// plus the changes the group staged for it.
    pub(super) fn restage(&mut self, doc_id: &str, out: &mut Ingest) -> Result<(), Failure> {
        let mut staged = self.docs.take_staged(&self.store, doc_id)?;
        let mut changes = Vec::new();
        for c in out.batch.log.iter().chain(&out.batch.waiting) {
            if c.doc_id == doc_id {
                changes.push(Change::from_bytes(c.bytes.clone()).map_err(|e| {
                    LogStoreError::Corrupt(format!("staged change of {doc_id}: {e}"))
                })?);
            }
        }
        crate::changes::apply(&mut staged.doc, changes)
            .map_err(|e| LogStoreError::Corrupt(format!("staged changes of {doc_id}: {e}")))?;
        staged.typed = match DocId::parse(doc_id) {
            Ok(id) => relay_docs::readable(&staged.doc, &id).ok().flatten(),
            Err(_) => None,
        };
        out.docs.push(staged);
        Ok(())
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
        own: &HashMap<Vec<u8>, ConnId>,
    ) -> Result<Committed, LogStoreError> {
        if batch.is_empty() {
            for staged in docs {
                self.docs.put_staged(staged);
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
        for mut staged in docs {
            if let Some(update) = batch.audience.iter().find(|a| a.doc_id == staged.id) {
                staged.audience = Some(update.audience.clone());
            }
            self.docs.put_staged(staged);
        }
        for update in &batch.audience {
            self.docs.set_audience(&update.doc_id, &update.audience);
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
                let mine = own.get(&c.hash).copied();
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
    pub(super) conn: ConnId,
}

/// What one upload stages.
#[derive(Default)]
pub(super) struct Ingest {
    pub(super) batch: IngestBatch,
    pub(super) docs: Vec<Staged>,
    /// Log entries to be, by hash: the connection whose upload made them.
    pub(super) own: HashMap<Vec<u8>, ConnId>,
    /// What the upload being staged is told.
    pub(super) accepted: Vec<Vec<u8>>,
    pub(super) refused: Vec<Refusal>,
    /// Every change refused so far in the group (a change built on one is refused).
    pub(super) refused_now: HashSet<Vec<u8>>,
    /// Once an earlier upload of the group staged documents: the documents it
    /// staged and the couriers of the deliveries among them, so later uploads are
    /// judged on who sees what after those (not yet stored) changes, as if the
    /// earlier uploads had been committed alone.
    pub(super) earlier: Option<EarlierStaged>,
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
        if !hash.is_empty() {
            self.refused_now.insert(hash.clone());
        }
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

/// The documents earlier uploads of a group staged, and the couriers of the
/// deliveries among them.
pub(super) type EarlierStaged = (HashSet<String>, HashMap<String, Option<String>>);

/// Gather [`EarlierStaged`] from what a group staged so far.
fn earlier_staged(docs: &[Staged]) -> EarlierStaged {
    let ids = docs.iter().map(|s| s.id.clone()).collect();
    let couriers = docs
        .iter()
        .filter_map(|s| match &s.typed {
            Some(Document::Delivery(d)) => Some((s.id.clone(), d.courier())),
            _ => None,
        })
        .collect();
    (ids, couriers)
}

/// Group changes by document, keeping the order of first appearance and, within a
/// document, the order sent.
fn group_by_doc(changes: Vec<UploadChange>) -> Vec<DocGroup> {
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
        .into_iter()
        .map(|(doc_id, bytes)| DocGroup::new(doc_id, bytes))
        .collect()
}

#[cfg(test)]
#[path = "group_tests.rs"]
mod group_tests;
