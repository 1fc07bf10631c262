//! Full sync: Automerge's per-document sync protocol with a device whose cursor the
//! relay cannot resume (another deployment, a compacted log, a restored relay).

use super::ingest::{Ingest, stored};
use super::rules::typed_of;
use super::{ConnId, Failure, Relay};
use crate::ids::DocId;
use crate::protocol::{DocSync, DocSyncComplete, ErrorCode, Message, Unshare, WireError};
use crate::sync::audience;
use crate::sync::log_store::{LogStore, LogStoreError};
use crate::sync::relay_docs::{self, Refused, Staged};
use automerge::sync::{self as am_sync, SyncDoc};
use std::collections::{BTreeSet, HashMap};

/// How long a full sync may go without a word from the device before the relay
/// offers its unsettled documents again.
const STALL_MS: i64 = 2_000;

/// Per-document sync with one device (the fallback when its cursor is unusable).
#[derive(Default)]
pub(super) struct DocSyncs {
    pub(super) states: HashMap<String, am_sync::State>,
    /// Rounds without progress, and the device's heads in the last one.
    pub(super) rounds: HashMap<String, (u32, Vec<automerge::ChangeHash>)>,
    /// Documents not yet known to be in sync.
    pub(super) unsettled: BTreeSet<String>,
    /// Whether the device said it has offered all of its documents.
    pub(super) device_offered: bool,
    /// Whether a full sync is running (false once `DocSyncComplete` went out).
    pub(super) running: bool,
}

impl<S: LogStore> Relay<S> {
    /// Start a full sync: offer every document with a first Automerge sync message.
    pub(super) fn open_full_sync(
        &mut self,
        principal: &str,
        docs: &mut DocSyncs,
    ) -> Result<Vec<Message>, Failure> {
        docs.running = true;
        let mut first = Vec::new();
        let shared = if principal == audience::DISPATCH {
            self.store.doc_ids()?
        } else {
            self.store.view(principal)?
        };
        for doc_id in shared {
            let doc = self.docs.take(&self.store, &doc_id)?;
            let mut state = am_sync::State::new();
            let message = doc.generate_sync_message(&mut state);
            self.docs.put(doc_id.clone(), doc);
            if let Some(message) = message {
                first.push(Message::DocSync(DocSync {
                    doc_id: doc_id.clone(),
                    message: message.encode(),
                }));
            }
            docs.states.insert(doc_id.clone(), state);
            docs.unsettled.insert(doc_id);
        }
        Ok(first)
    }

    /// A document still being synced with a device changed under the exchange (a
    /// push). The device may have gone quiet believing it was in sync; send it our
    /// new heads so it answers with its own and the document can settle.
    pub(super) fn nudge_doc_sync(&mut self, conn: ConnId, doc_id: &str) {
        let Some(mut state) = self
            .peer_mut(conn)
            .and_then(|p| p.docs.states.remove(doc_id))
        else {
            return;
        };
        let message = match self.docs.take(&self.store, doc_id) {
            Ok(doc) => {
                let message = doc.generate_sync_message(&mut state);
                self.docs.put(doc_id.to_owned(), doc);
                message
            }
            Err(e) => {
                tracing::error!(doc = doc_id, error = %e, "cannot load a document to sync");
                None
            }
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            if let Some(message) = message {
                c.out.push_back(Message::DocSync(DocSync {
                    doc_id: doc_id.to_owned(),
                    message: message.encode(),
                }));
            }
            if let Some(peer) = c.peer.as_mut() {
                peer.docs.states.insert(doc_id.to_owned(), state);
            }
        }
    }

    pub(super) fn on_doc_sync(
        &mut self,
        conn: ConnId,
        sync: DocSync,
        now_ms: i64,
        woken: &mut Vec<ConnId>,
    ) -> Result<(), Failure> {
        let Some((identity, principal)) = self.author(conn) else {
            return Ok(());
        };
        let device = identity.device_id.clone();
        let id = DocId::parse(&sync.doc_id)
            .map_err(|e| Failure::new(ErrorCode::InvalidDocument, e.to_string()))?;
        let message = am_sync::Message::decode(&sync.message).map_err(|e| {
            Failure::new(
                ErrorCode::MalformedMessage,
                format!("doc_sync for {}: {e}", sync.doc_id),
            )
        })?;
        let max_rounds = self.config.max_sync_rounds;
        let Some(peer) = self.peer_mut(conn) else {
            return Ok(());
        };
        // Count rounds in which the device's heads did not move. A peer that keeps
        // offering changes we refuse would otherwise loop forever; an honest one
        // makes progress every round or two. Giving up leaves the document
        // unsettled, so the full sync does not complete (and no cursor is stored)
        // in this session: nothing is skipped.
        let (rounds, last_heads) = peer.docs.rounds.entry(sync.doc_id.clone()).or_default();
        if *last_heads == message.heads {
            *rounds += 1;
        } else {
            *rounds = 0;
            last_heads.clone_from(&message.heads);
        }
        if *rounds > max_rounds {
            tracing::warn!(doc = %sync.doc_id, "per-document sync is not converging; no longer answering for it in this session");
            return Ok(());
        }
        let mut state = peer.docs.states.remove(&sync.doc_id).unwrap_or_default();
        peer.docs.unsettled.insert(sync.doc_id.clone());

        let mut doc = self.docs.take(&self.store, &sync.doc_id)?;
        let heads_before = doc.get_heads();
        if !self.may_touch(&principal, &sync.doc_id, !heads_before.is_empty())? {
            // It holds a document no longer shared with it: tell it to remove it.
            self.docs.put(sync.doc_id.clone(), doc);
            if let Some(peer) = self.peer_mut(conn) {
                peer.docs.unsettled.remove(&sync.doc_id);
            }
            if let Some(c) = self.conns.get_mut(&conn) {
                c.out.push_back(Message::Unshare(Unshare {
                    doc_ids: vec![sync.doc_id],
                }));
            }
            self.finish_full_sync_if_done(conn);
            return Ok(());
        }
        let before = typed_of(&sync.doc_id, &doc);
        let received = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            doc.receive_sync_message(&mut state, message)
        }));
        let mut outcome = Ingest::default();
        let mut typed_after = None;
        let failed = match received {
            Ok(Ok(())) => {
                let new = relay_docs::new_since(&doc, &heads_before);
                let checked = relay_docs::readable(&doc, &id).and_then(|after| {
                    match &after {
                        Some(after) if !new.is_empty() => self
                            .check_effect(&identity, before.as_ref(), after, &[])
                            .map_err(Refused::Forbidden),
                        _ => Ok(()),
                    }
                    .map(|()| after)
                });
                match checked {
                    Ok(after) => {
                        typed_after = after;
                        for change in new {
                            let hash = change.hash().0.to_vec();
                            if self.store.contains(&hash)? {
                                // It waited for the changes that just arrived.
                                outcome.batch.no_longer_waiting.push(hash.clone());
                            }
                            outcome.own.insert(hash, conn);
                            outcome
                                .batch
                                .log
                                .push(stored(&sync.doc_id, &change, &device));
                        }
                        None
                    }
                    Err(refused) => {
                        let (code, r) = match refused {
                            Refused::Forbidden(r) => (ErrorCode::Forbidden, r),
                            Refused::Invalid(r) | Refused::Corrupt(r) => {
                                (ErrorCode::InvalidDocument, r)
                            }
                        };
                        for change in new {
                            outcome.refuse(
                                &sync.doc_id,
                                change.hash().0.to_vec(),
                                change.raw_bytes().to_vec(),
                                &device,
                                now_ms,
                                code,
                                r.clone(),
                            );
                        }
                        Some((code, r))
                    }
                }
            }
            Ok(Err(e)) => Some((ErrorCode::CorruptChange, e.to_string())),
            Err(_) => Some((
                ErrorCode::CorruptChange,
                "automerge could not apply the sync message".into(),
            )),
        };
        let reply = if let Some((code, reason)) = failed {
            self.docs.evict(&sync.doc_id);
            self.commit(outcome.batch, Vec::new(), &HashMap::new())?;
            tracing::warn!(doc = %sync.doc_id, ?code, %reason, "doc_sync refused");
            if let Some(c) = self.conns.get_mut(&conn) {
                c.out.push_back(Message::Error(WireError {
                    code,
                    message: format!("{}: {reason}", sync.doc_id),
                    fatal: false,
                }));
            }
            // Answer from the durable state so the exchange can still settle.
            let clean = self.docs.take(&self.store, &sync.doc_id)?;
            let reply = clean.generate_sync_message(&mut state);
            self.docs.put(sync.doc_id.clone(), clean);
            reply
        } else {
            let reply = doc.generate_sync_message(&mut state);
            let heads = doc.get_heads();
            let own = std::mem::take(&mut outcome.own);
            let staged = vec![Staged {
                id: sync.doc_id.clone(),
                doc,
                typed: typed_after,
                audience: None,
            }];
            let (audience, view) = if outcome.batch.log.is_empty() {
                Default::default()
            } else {
                self.audiences_after(&staged)?
            };
            outcome.batch.audience = audience;
            match self.commit(outcome.batch, staged, &own) {
                Ok(entries) => {
                    self.push(&entries, &view, woken);
                    // The device has told us heads equal to ours: it holds everything
                    // we do (any reply only confirms our heads to it).
                    if state.their_heads.as_deref() == Some(&heads[..])
                        && let Some(peer) = self.peer_mut(conn)
                    {
                        peer.docs.unsettled.remove(&sync.doc_id);
                    }
                    reply
                }
                Err(LogStoreError::Conflict(stale)) => {
                    // Another node changed what this was checked against: start the
                    // exchange for this document again from the stored state; the
                    // device sends its changes again.
                    tracing::debug!(doc = %sync.doc_id, ?stale, "document changed on another node during its sync; restarting it");
                    state = am_sync::State::new();
                    self.docs.begin_batch();
                    let fresh = self.docs.take(&self.store, &sync.doc_id)?;
                    let reply = fresh.generate_sync_message(&mut state);
                    self.docs.put(sync.doc_id.clone(), fresh);
                    reply
                }
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            if let Some(reply) = reply {
                c.out.push_back(Message::DocSync(DocSync {
                    doc_id: sync.doc_id.clone(),
                    message: reply.encode(),
                }));
            }
            if let Some(peer) = c.peer.as_mut() {
                peer.docs.states.insert(sync.doc_id, state);
            }
        }
        self.finish_full_sync_if_done(conn);
        Ok(())
    }

    /// A liveness backstop: a full sync whose device has been silent for a while
    /// with documents still unsettled gets those documents offered again (with our
    /// heads, even if Automerge thinks it already said so), so a lost turn in an
    /// exchange cannot leave the device without `DocSyncComplete` for good.
    pub(super) fn revive_stalled_full_syncs(&mut self, now_ms: i64) -> Vec<ConnId> {
        let stalled: Vec<(ConnId, Vec<String>)> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.closing)
            .filter_map(|(conn, c)| {
                let p = c.peer.as_ref()?;
                let quiet = now_ms - p.last_heard_ms >= STALL_MS;
                (p.docs.running && quiet && !p.docs.unsettled.is_empty())
                    .then(|| (*conn, p.docs.unsettled.iter().cloned().collect()))
            })
            .collect();
        let mut woken = Vec::new();
        for (conn, docs) in stalled {
            tracing::info!(
                conn,
                documents = docs.len(),
                "full sync stalled; offering its documents again"
            );
            for doc_id in docs {
                if let Some(state) = self
                    .peer_mut(conn)
                    .and_then(|p| p.docs.states.get_mut(&doc_id))
                {
                    state.in_flight = false;
                    state.last_sent_heads.clear();
                }
                self.nudge_doc_sync(conn, &doc_id);
            }
            if let Some(peer) = self.peer_mut(conn) {
                peer.last_heard_ms = now_ms;
            }
            woken.push(conn);
        }
        woken
    }

    pub(super) fn finish_full_sync_if_done(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(peer) = c.peer.as_mut() else {
            return;
        };
        let docs = &mut peer.docs;
        if docs.running && docs.device_offered && docs.unsettled.is_empty() {
            docs.running = false;
            tracing::info!(
                cursor = peer.sent_through,
                documents = docs.states.len(),
                "full sync complete"
            );
            c.out.push_back(Message::DocSyncComplete(DocSyncComplete {
                cursor: peer.sent_through,
            }));
        }
    }
}
