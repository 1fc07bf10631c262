//! The relay's side of the protocol, as a state machine with no I/O.
//!
//! A driver (QUIC in `waybill-server`, or the simulated network in the tests) tells
//! the [`Relay`] about connections and the messages they carry, and writes out what
//! [`Relay::poll_transmit`] hands back. The relay checks credentials, validates and
//! logs uploaded changes (acknowledging them only once the [`LogStore`] has made them
//! durable), streams the log from each device's cursor, pushes new changes to every
//! connected device, and runs Automerge's per-document sync protocol for a device
//! whose cursor cannot be resumed.

use super::log_store::{IngestBatch, LogStore, LogStoreError, QuarantinedChange, StoredChange};
use super::relay_docs::{self, Refused, RelayDocs};
use crate::credential::{CredentialError, CredentialVerifier};
use crate::identity::DeviceIdentity;
use crate::ids::DocId;
use crate::protocol::{
    self, Changes, DocSync, DocSyncComplete, ErrorCode, Hello, LogEntry, Message, ProtocolError,
    Refusal, Upload, UploadAck, UploadChange, Welcome, WireError,
};
use automerge::sync::{self as am_sync, SyncDoc};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

/// A connection, as numbered by the driver.
pub type ConnId = u64;

/// Tuning of a relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Most log entries in one `Changes` message while a device catches up.
    pub page_entries: usize,
    /// About how many change bytes go in one `Changes` message.
    pub page_bytes: usize,
    /// Documents kept decoded in memory.
    pub cached_docs: usize,
    /// Per-document sync rounds in which the device's heads do not move before the
    /// relay stops answering for that document (a peer that keeps offering refused
    /// changes would otherwise loop forever).
    pub max_sync_rounds: u32,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            page_entries: 2048,
            page_bytes: 1024 * 1024,
            cached_docs: 1024,
            max_sync_rounds: 16,
        }
    }
}

/// Per-document sync with one device (the fallback when its cursor is unusable).
#[derive(Default)]
struct DocSyncs {
    states: HashMap<String, am_sync::State>,
    /// Rounds without progress, and the device's heads in the last one.
    rounds: HashMap<String, (u32, Vec<automerge::ChangeHash>)>,
    /// Documents not yet known to be in sync.
    unsettled: BTreeSet<String>,
    /// Whether the device said it has offered all of its documents.
    device_offered: bool,
    /// Whether a full sync is running (false once `DocSyncComplete` went out).
    running: bool,
}

struct Peer {
    identity: DeviceIdentity,
    /// The log has been sent up to here (the device's cursor once it applies it).
    sent_through: u64,
    /// Still paging through the log from an old cursor; pushes wait until caught up.
    catching_up: bool,
    docs: DocSyncs,
}

#[derive(Default)]
struct Connection {
    peer: Option<Peer>,
    out: VecDeque<Message>,
    /// Close once `out` is drained (after a fatal error or a bye).
    closing: bool,
}

/// The relay state machine. `S` is its durable storage.
pub struct Relay<S: LogStore> {
    store: S,
    verifier: CredentialVerifier,
    config: RelayConfig,
    docs: RelayDocs,
    conns: BTreeMap<ConnId, Connection>,
}

impl<S: LogStore> Relay<S> {
    /// A relay over a store, accepting credentials signed by `verifier`'s key.
    pub fn new(store: S, verifier: CredentialVerifier, config: RelayConfig) -> Self {
        let docs = RelayDocs::new(config.cached_docs);
        Self {
            store,
            verifier,
            config,
            docs,
            conns: BTreeMap::new(),
        }
    }

    /// The durable store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The durable store, for administration (revocations).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Stop, keeping only what is durable (a simulated crash does exactly this).
    pub fn into_store(self) -> S {
        self.store
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Documents held decoded in memory.
    pub fn cached_documents(&self) -> usize {
        self.docs.cached()
    }

    /// A device connected; it must send `Hello` first.
    pub fn connect(&mut self, conn: ConnId) {
        self.conns.insert(conn, Connection::default());
    }

    /// The connection is gone; forget it.
    pub fn disconnect(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn)
            && let Some(peer) = c.peer
        {
            tracing::debug!(conn, device = %peer.identity.device_id, "device disconnected");
        }
    }

    /// Whether the driver should close the connection once its output is written.
    pub fn wants_close(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_none_or(|c| c.closing && c.out.is_empty())
    }

    /// The device's credential, once the handshake succeeded.
    pub fn peer(&self, conn: ConnId) -> Option<&DeviceIdentity> {
        self.conns.get(&conn)?.peer.as_ref().map(|p| &p.identity)
    }

    /// During a full sync, the documents not yet known to be in sync with the device
    /// (for diagnostics; None when no full sync runs on the connection).
    pub fn full_sync_pending(&self, conn: ConnId) -> Option<Vec<String>> {
        let docs = &self.conns.get(&conn)?.peer.as_ref()?.docs;
        docs.running
            .then(|| docs.unsettled.iter().cloned().collect())
    }

    /// Bytes from the device did not make a message: tell it why and close.
    pub fn refuse_input(&mut self, conn: ConnId, error: &ProtocolError) {
        tracing::warn!(conn, %error, "refusing a peer's input");
        self.fail(conn, error.code(), error.to_string());
    }

    /// The relay is stopping: tell every device to come back later.
    pub fn shutdown(&mut self) -> Vec<ConnId> {
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in &conns {
            self.fail(
                *conn,
                ErrorCode::ShuttingDown,
                "the relay is shutting down".into(),
            );
        }
        conns
    }

    /// The next message to send on a connection. While a device catches up, the log
    /// is read one page at a time, only when the previous page has been taken, so a
    /// slow device costs one page of memory.
    pub fn poll_transmit(&mut self, conn: ConnId) -> Option<Message> {
        let needs_page = {
            let c = self.conns.get(&conn)?;
            c.out.is_empty() && !c.closing && c.peer.as_ref().is_some_and(|p| p.catching_up)
        };
        if needs_page && let Err(e) = self.queue_page(conn) {
            tracing::error!(conn, error = %e, "cannot read the log");
            self.fail(
                conn,
                ErrorCode::Internal,
                "the relay cannot read its log".into(),
            );
        }
        self.conns.get_mut(&conn)?.out.pop_front()
    }

    /// Handle one message from a device. Returns every connection that now has
    /// something to send (the sender, and devices a new change was pushed to).
    pub fn handle(&mut self, conn: ConnId, message: Message, now_ms: i64) -> Vec<ConnId> {
        let Some(c) = self.conns.get(&conn) else {
            return Vec::new();
        };
        if c.closing {
            return Vec::new();
        }
        let mut woken = vec![conn];
        let result = if c.peer.is_none() {
            self.on_hello(conn, message, now_ms)
        } else {
            match message {
                Message::Upload(upload) => self.on_upload(conn, upload, now_ms, &mut woken),
                Message::DocSync(sync) => self.on_doc_sync(conn, sync, now_ms, &mut woken),
                Message::DocSyncOffered(_) => {
                    if let Some(peer) = self.peer_mut(conn) {
                        peer.docs.device_offered = true;
                    }
                    self.finish_full_sync_if_done(conn);
                    Ok(())
                }
                Message::Error(error) => {
                    tracing::warn!(conn, code = ?error.code, message = %error.message, "device reported an error");
                    if error.fatal {
                        self.close(conn);
                    }
                    Ok(())
                }
                Message::Bye => {
                    self.close(conn);
                    Ok(())
                }
                other => Err(ProtocolError::Unexpected {
                    expected: "upload, doc_sync or bye",
                    got: other.name(),
                }
                .into()),
            }
        };
        if let Err(failure) = result {
            self.fail(conn, failure.code, failure.message);
        }
        woken.dedup();
        woken
    }

    fn on_hello(&mut self, conn: ConnId, message: Message, now_ms: i64) -> Result<(), Failure> {
        let (hello, version) = protocol::accept_hello(message)?;
        let identity = self.authenticate(&hello, now_ms)?;
        let span = tracing::info_span!("session", conn, device = %identity.device_id, role = %identity.role);
        let _entered = span.enter();
        let relay_id = self.store.relay_id();
        let head = self.store.head()?;
        let oldest = self.store.oldest_resumable()?;
        let resume_from = match &hello.cursor {
            None if oldest == 0 => Some(0),
            Some(c) if c.relay_id == relay_id && c.seq <= head && c.seq >= oldest => Some(c.seq),
            _ => None,
        };
        tracing::info!(cursor = ?hello.cursor.as_ref().map(|c| c.seq), head, full_sync = resume_from.is_none(), client = %hello.client, "device connected");
        let mut peer = Peer {
            identity,
            sent_through: resume_from.unwrap_or(head),
            catching_up: resume_from.is_some(),
            docs: DocSyncs::default(),
        };
        let mut first = Vec::new();
        if resume_from.is_none() {
            peer.docs.running = true;
            for doc_id in self.store.doc_ids()? {
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
                peer.docs.states.insert(doc_id.clone(), state);
                peer.docs.unsettled.insert(doc_id);
            }
        }
        let c = self.conns.entry(conn).or_default();
        c.out.push_back(Message::Welcome(Welcome {
            version,
            relay_id,
            head,
            oldest_resumable: oldest,
            full_sync: resume_from.is_none(),
        }));
        c.out.extend(first);
        c.peer = Some(peer);
        Ok(())
    }

    fn authenticate(&self, hello: &Hello, now_ms: i64) -> Result<DeviceIdentity, Failure> {
        let body = self
            .verifier
            .verify(&hello.credential, now_ms)
            .map_err(|e| {
                let code = match e {
                    CredentialError::Expired { .. } => ErrorCode::ExpiredCredential,
                    _ => ErrorCode::BadCredential,
                };
                tracing::warn!(error = %e, "credential refused");
                Failure::new(code, e.to_string())
            })?;
        if self.store.is_revoked(&body.device_id)? {
            tracing::warn!(device = %body.device_id, "revoked device refused");
            return Err(Failure::new(
                ErrorCode::RevokedCredential,
                format!("device {} has been revoked", body.device_id),
            ));
        }
        Ok(body.identity())
    }

    fn on_upload(
        &mut self,
        conn: ConnId,
        upload: Upload,
        now_ms: i64,
        woken: &mut Vec<ConnId>,
    ) -> Result<(), Failure> {
        let device = self.device_id(conn);
        let _span = tracing::debug_span!("upload", conn, device = %device, batch = upload.batch, changes = upload.changes.len()).entered();
        let mut outcome = Ingest::default();
        for (doc_id, group) in group_by_doc(upload.changes) {
            self.stage_group(&doc_id, group, &device, now_ms, &mut outcome)?;
        }
        let own = self.commit(outcome.batch, outcome.docs, &outcome.own)?;
        self.push(conn, &own, woken);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.out.push_back(Message::UploadAck(UploadAck {
                batch: upload.batch,
                accepted: outcome.accepted,
                refused: outcome.refused,
            }));
        }
        Ok(())
    }

    /// Check one document's uploaded changes, staging what to store.
    fn stage_group(
        &mut self,
        doc_id: &str,
        group: Vec<Vec<u8>>,
        device: &str,
        now_ms: i64,
        out: &mut Ingest,
    ) -> Result<(), Failure> {
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
        let hashes: Vec<Vec<u8>> = fresh.iter().map(|c| c.hash().0.to_vec()).collect();
        match relay_docs::apply_checked(&mut doc, &id, fresh.clone()) {
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
                out.docs.push((doc_id.to_owned(), doc));
            }
            Err(refused) => {
                // The working copy holds the refused changes: rebuild it from the store.
                self.docs.evict(doc_id);
                let (code, reason) = match refused {
                    Refused::Corrupt(r) => (ErrorCode::CorruptChange, r),
                    Refused::Invalid(r) => (ErrorCode::InvalidDocument, r),
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

    /// Make a batch durable, then cache the documents it changed. Returns the new log
    /// entries, each marked with whether the uploading device made it.
    fn commit(
        &mut self,
        batch: IngestBatch,
        docs: Vec<(String, automerge::Automerge)>,
        own: &HashMap<Vec<u8>, bool>,
    ) -> Result<Vec<(LogEntry, bool)>, Failure> {
        if batch.is_empty() {
            for (id, doc) in docs {
                self.docs.put(id, doc);
            }
            return Ok(Vec::new());
        }
        let seqs = match self.store.commit(&batch) {
            Ok(seqs) => seqs,
            Err(e) => {
                // Nothing was stored: the working copies are ahead of the store.
                for (id, _) in docs {
                    self.docs.evict(&id);
                }
                return Err(e.into());
            }
        };
        for (id, doc) in docs {
            self.docs.put(id, doc);
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

    /// Send newly logged entries to every device that is following the log live.
    /// The uploader gets its cursor moved past its own changes without their bytes.
    fn push(&mut self, from: ConnId, entries: &[(LogEntry, bool)], woken: &mut Vec<ConnId>) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        let (first, last) = (first.0.seq, last.0.seq);
        let mut nudge = Vec::new();
        for (conn, c) in self.conns.iter_mut() {
            let Some(peer) = c.peer.as_mut() else {
                continue;
            };
            if peer.catching_up || c.closing {
                continue;
            }
            if peer.sent_through + 1 != first {
                // It missed something (or is ahead): read from the log instead.
                peer.catching_up = true;
                woken.push(*conn);
                continue;
            }
            let entries: Vec<LogEntry> = entries
                .iter()
                .filter(|(_, mine)| *conn != from || !mine)
                .map(|(e, _)| e.clone())
                .collect();
            peer.sent_through = last;
            if peer.docs.running {
                for entry in &entries {
                    if peer.docs.unsettled.contains(&entry.doc_id) {
                        nudge.push((*conn, entry.doc_id.clone()));
                    }
                }
            }
            c.out.push_back(Message::Changes(Changes {
                entries,
                cursor: last,
                caught_up: true,
            }));
            woken.push(*conn);
        }
        nudge.dedup();
        for (conn, doc_id) in nudge {
            self.nudge_doc_sync(conn, &doc_id);
        }
    }

    /// A document still being synced with a device changed under the exchange (a
    /// push). The device may have gone quiet believing it was in sync; send it our
    /// new heads so it answers with its own and the document can settle.
    fn nudge_doc_sync(&mut self, conn: ConnId, doc_id: &str) {
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

    fn queue_page(&mut self, conn: ConnId) -> Result<(), LogStoreError> {
        let Some(after) = self.peer_mut(conn).map(|p| p.sent_through) else {
            return Ok(());
        };
        if after < self.store.oldest_resumable()? {
            // Compacted while the device was reading: skipping ahead would lose
            // entries it never saw. It reconnects and gets a full sync instead.
            tracing::info!(conn, after, "log compacted under a catching-up device");
            self.fail(
                conn,
                ErrorCode::CursorExpired,
                "the relay's log was compacted past this device's position; reconnect".into(),
            );
            return Ok(());
        }
        let entries =
            self.store
                .read_log(after, self.config.page_entries, self.config.page_bytes)?;
        let head = self.store.head()?;
        let cursor = entries.last().map_or(head.max(after), |e| e.seq);
        let caught_up = cursor >= head;
        let Some(c) = self.conns.get_mut(&conn) else {
            return Ok(());
        };
        if let Some(peer) = c.peer.as_mut() {
            peer.sent_through = cursor;
            peer.catching_up = !caught_up;
        }
        c.out.push_back(Message::Changes(Changes {
            entries,
            cursor,
            caught_up,
        }));
        Ok(())
    }

    fn on_doc_sync(
        &mut self,
        conn: ConnId,
        sync: DocSync,
        now_ms: i64,
        woken: &mut Vec<ConnId>,
    ) -> Result<(), Failure> {
        let device = self.device_id(conn);
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
        let received = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            doc.receive_sync_message(&mut state, message)
        }));
        let mut outcome = Ingest::default();
        let failed = match received {
            Ok(Ok(())) => {
                let new = relay_docs::new_since(&doc, &heads_before);
                match relay_docs::check_readable(&doc, &id) {
                    Ok(()) => {
                        for change in new {
                            let hash = change.hash().0.to_vec();
                            if self.store.contains(&hash)? {
                                // It waited for the changes that just arrived.
                                outcome.batch.no_longer_waiting.push(hash.clone());
                            }
                            outcome.own.insert(hash, true);
                            outcome
                                .batch
                                .log
                                .push(stored(&sync.doc_id, &change, &device));
                        }
                        None
                    }
                    Err(Refused::Invalid(r) | Refused::Corrupt(r)) => {
                        for change in new {
                            outcome.refuse(
                                &sync.doc_id,
                                change.hash().0.to_vec(),
                                change.raw_bytes().to_vec(),
                                &device,
                                now_ms,
                                ErrorCode::InvalidDocument,
                                r.clone(),
                            );
                        }
                        Some((ErrorCode::InvalidDocument, r))
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
            let entries = self.commit(outcome.batch, vec![(sync.doc_id.clone(), doc)], &own)?;
            self.push(conn, &entries, woken);
            // The device has told us heads equal to ours: it holds everything we
            // do (any reply only confirms our heads to it).
            if state.their_heads.as_deref() == Some(&heads[..])
                && let Some(peer) = self.peer_mut(conn)
            {
                peer.docs.unsettled.remove(&sync.doc_id);
            }
            reply
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

    fn finish_full_sync_if_done(&mut self, conn: ConnId) {
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

    fn peer_mut(&mut self, conn: ConnId) -> Option<&mut Peer> {
        self.conns.get_mut(&conn)?.peer.as_mut()
    }

    fn device_id(&self, conn: ConnId) -> String {
        self.peer(conn)
            .map(|p| p.device_id.clone())
            .unwrap_or_default()
    }

    fn close(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.closing = true;
        }
    }

    /// Queue a typed error; fatal ones close the connection after it is sent.
    fn fail(&mut self, conn: ConnId, code: ErrorCode, message: String) {
        let fatal = is_fatal(code);
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.closing {
                return;
            }
            c.out.push_back(Message::Error(WireError {
                code,
                message,
                fatal,
            }));
            c.closing = fatal;
        }
    }
}

/// Whether the relay closes the connection after sending this code.
fn is_fatal(code: ErrorCode) -> bool {
    !matches!(
        code,
        ErrorCode::CorruptChange
            | ErrorCode::Forbidden
            | ErrorCode::InvalidDocument
            | ErrorCode::Internal
    )
}

/// An error to report to the device.
struct Failure {
    code: ErrorCode,
    message: String,
}

impl Failure {
    fn new(code: ErrorCode, message: String) -> Self {
        Self { code, message }
    }
}

impl From<ProtocolError> for Failure {
    fn from(e: ProtocolError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl From<LogStoreError> for Failure {
    fn from(e: LogStoreError) -> Self {
        tracing::error!(error = %e, "relay storage failed");
        Self::new(
            ErrorCode::Internal,
            "the relay could not store the changes; retry later".into(),
        )
    }
}

/// What one upload stages.
#[derive(Default)]
struct Ingest {
    batch: IngestBatch,
    docs: Vec<(String, automerge::Automerge)>,
    /// Log entries to be, by hash: whether the uploading device made them.
    own: HashMap<Vec<u8>, bool>,
    accepted: Vec<Vec<u8>>,
    refused: Vec<Refusal>,
}

impl Ingest {
    #[allow(clippy::too_many_arguments)]
    fn refuse(
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

fn stored(doc_id: &str, change: &automerge::Change, device: &str) -> StoredChange {
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
