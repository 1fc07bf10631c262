//! The relay's side of the protocol, as a state machine with no I/O.
//!
//! A driver (QUIC in `waybill-server`, or the simulated network in the tests) tells
//! the [`Relay`] about connections and the messages they carry, and writes out what
//! [`Relay::poll_transmit`] hands back. The relay checks credentials, validates and
//! logs uploaded changes (acknowledging them only once the [`LogStore`] has made them
//! durable), streams the log from each device's cursor, pushes new changes to every
//! connected device, and runs Automerge's per-document sync protocol for a device
//! whose cursor cannot be resumed.

mod ahead;
mod full_sync;
mod ingest;
mod rules;
mod snapshots;
mod visibility;

use super::audience;
use super::log_store::{LogStore, LogStoreError};
use super::relay_docs::RelayDocs;
use crate::credential::{CredentialError, CredentialVerifier};
use crate::identity::DeviceIdentity;
use crate::protocol::{
    self, Changes, ErrorCode, Hello, LogEntry, Message, ProtocolError, Welcome, WireError,
};
use full_sync::DocSyncs;
use snapshots::SnapshotQueue;
use std::collections::{BTreeMap, HashSet, VecDeque};
use visibility::ViewDelta;

/// How many commit notices wait for [`Relay::poll_committed`] at most.
pub const MAX_NOTICES: usize = 4096;

/// Snapshots of documents the cache let go, held before they are written.
const EVICTED_SNAPSHOTS_HELD: usize = 256;

/// A connection, as numbered by the driver.
pub type ConnId = u64;

/// Tuning of a relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Most log entries in one `Changes` message while a device catches up.
    pub page_entries: usize,
    /// About how many change bytes go in one `Changes` or `Snapshots` message.
    pub page_bytes: usize,
    /// Most documents in one `Snapshots` message.
    pub snapshot_docs: usize,
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
            snapshot_docs: 512,
            cached_docs: 1024,
            max_sync_rounds: 16,
        }
    }
}

struct Peer {
    identity: DeviceIdentity,
    /// Whose documents it sees (see [`super::audience`]).
    principal: String,
    /// When its credential expires (ms since the epoch).
    expires_ms: i64,
    /// When the relay last heard from it (ms since the epoch).
    last_heard_ms: i64,
    /// The log has been sent up to here (the device's cursor once it applies it).
    sent_through: u64,
    /// Still paging through the log from an old cursor (or through snapshots);
    /// pushes wait until caught up.
    catching_up: bool,
    /// A never-synced device's documents still to send as snapshots, before the log.
    snapshots: Option<SnapshotQueue>,
    docs: DocSyncs,
}

#[derive(Default)]
struct Connection {
    peer: Option<Peer>,
    out: VecDeque<Message>,
    /// Close once `out` is drained (after a fatal error or a bye).
    closing: bool,
}

/// What a commit changed, for the other relay nodes sharing the store (see
/// [`Relay::poll_committed`] and [`Relay::on_remote_commit`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommitNotice {
    /// The log now holds entries through this sequence number (0 when the commit
    /// logged nothing, only stored waiting changes or audiences).
    pub through: u64,
    /// The documents whose stored state changed.
    pub doc_ids: Vec<String>,
}

/// The relay state machine. `S` is its durable storage.
///
/// Several relays may share one store (relay nodes behind a load balancer, on
/// PostgreSQL). Each then tells the others what it committed
/// ([`Relay::poll_committed`], carried by a bus) and hears what they committed
/// ([`Relay::on_remote_commit`]); correctness does not depend on the bus: commits are
/// checked against the versions of the documents they read, and a device following
/// the log live never skips an entry (a gap sends it back to the log).
pub struct Relay<S: LogStore> {
    store: S,
    verifier: CredentialVerifier,
    config: RelayConfig,
    docs: RelayDocs,
    conns: BTreeMap<ConnId, Connection>,
    committed: VecDeque<CommitNotice>,
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
            committed: VecDeque::new(),
        }
    }

    /// The next commit to announce to other relay nodes sharing the store, oldest
    /// first. A single relay may ignore these: past [`MAX_NOTICES`] unread ones the
    /// oldest are dropped (other nodes would catch up at their tick anyway).
    pub fn poll_committed(&mut self) -> Option<CommitNotice> {
        self.committed.pop_front()
    }

    /// Another relay node sharing the store committed: forget the working copies it
    /// changed and send devices following the log live what they have not seen yet
    /// (read from the shared log, so the order is the log's). Returns the
    /// connections with something to send.
    pub fn on_remote_commit(&mut self, notice: &CommitNotice) -> Vec<ConnId> {
        self.docs.begin_batch();
        for doc_id in &notice.doc_ids {
            self.docs.evict(doc_id);
        }
        let mut woken = self.follow_log(notice.through);
        let syncing: Vec<(ConnId, Vec<String>)> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.closing)
            .filter_map(|(conn, c)| {
                let docs = &c.peer.as_ref()?.docs;
                let hit: Vec<String> = notice
                    .doc_ids
                    .iter()
                    .filter(|d| docs.running && docs.unsettled.contains(*d))
                    .cloned()
                    .collect();
                (!hit.is_empty()).then_some((*conn, hit))
            })
            .collect();
        for (conn, docs) in syncing {
            for doc_id in docs {
                self.nudge_doc_sync(conn, &doc_id);
            }
            woken.push(conn);
        }
        woken.sort_unstable();
        woken.dedup();
        woken
    }

    /// Devices following the log live that have not been sent entries through
    /// `head` go back to reading the log from their position.
    fn follow_log(&mut self, head: u64) -> Vec<ConnId> {
        let mut woken = Vec::new();
        for (conn, c) in &mut self.conns {
            if c.closing {
                continue;
            }
            if let Some(peer) = c.peer.as_mut()
                && !peer.catching_up
                && peer.sent_through < head
            {
                peer.catching_up = true;
                woken.push(*conn);
            }
        }
        woken
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

    /// Time passes: end sessions whose credential expired or was revoked since
    /// they connected (`waybill revoke` writes to the store from another process),
    /// and revive full syncs whose device has gone quiet. Drivers call this every
    /// few seconds. Returns the connections with something to send.
    pub fn tick(&mut self, now_ms: i64) -> Vec<ConnId> {
        self.docs.begin_batch();
        let open: Vec<(ConnId, String, i64)> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.closing)
            .filter_map(|(conn, c)| {
                let p = c.peer.as_ref()?;
                Some((*conn, p.identity.device_id.clone(), p.expires_ms))
            })
            .collect();
        // Snapshots of what changed since the last tick, for devices yet to come.
        self.flush_snapshots(true);
        let mut ended = self.revive_stalled_full_syncs(now_ms);
        // Other nodes sharing the store announce their commits; should an
        // announcement be lost, live devices still get them within a tick.
        match self.store.head() {
            Ok(head) => ended.extend(self.follow_log(head)),
            Err(e) => tracing::error!(error = %e, "cannot read the log head"),
        }
        for (conn, device, expires_ms) in open {
            let revoked = match self.store.is_revoked(&device) {
                Ok(revoked) => revoked,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read revocations");
                    false
                }
            };
            if revoked {
                tracing::warn!(conn, device = %device, "revoked device disconnected");
                self.fail(
                    conn,
                    ErrorCode::RevokedCredential,
                    format!("device {device} has been revoked"),
                );
                ended.push(conn);
            } else if now_ms >= expires_ms {
                tracing::info!(conn, device = %device, "credential expired during the session");
                self.fail(
                    conn,
                    ErrorCode::ExpiredCredential,
                    "the device credential expired; ask for a new one with `waybill enroll`".into(),
                );
                ended.push(conn);
            }
        }
        ended
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
                "the relay cannot read its log; reconnect later".into(),
            );
            // Not retried on this connection: the device reconnects and resumes.
            self.close(conn);
        }
        self.conns.get_mut(&conn)?.out.pop_front()
    }

    /// Handle messages from several connections, in order, as one step: runs of
    /// uploads are checked together and committed in one `LogStore::commit` (group
    /// commit), each acknowledged only once that commit is durable; any other
    /// message first commits the uploads before it, so each device's messages keep
    /// their order. Returns every connection that now has something to send.
    pub fn handle_all(&mut self, messages: Vec<(ConnId, Message)>, now_ms: i64) -> Vec<ConnId> {
        let mut woken = Vec::new();
        let mut uploads = Vec::new();
        for (conn, message) in messages {
            let open = self
                .conns
                .get(&conn)
                .is_some_and(|c| !c.closing && c.peer.is_some());
            match message {
                Message::Upload(upload) if open => {
                    if let Some(peer) = self.peer_mut(conn) {
                        peer.last_heard_ms = now_ms;
                    }
                    uploads.push((conn, upload));
                }
                other => {
                    if !uploads.is_empty() {
                        self.ingest_uploads(std::mem::take(&mut uploads), now_ms, &mut woken);
                    }
                    woken.extend(self.handle(conn, other, now_ms));
                }
            }
        }
        if !uploads.is_empty() {
            self.ingest_uploads(uploads, now_ms, &mut woken);
        }
        self.bound_evicted_snapshots();
        woken.sort_unstable();
        woken.dedup();
        woken
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
        self.docs.begin_batch();
        if let Some(peer) = self.peer_mut(conn) {
            peer.last_heard_ms = now_ms;
        }
        let result = if self.conns.get(&conn).is_some_and(|c| c.peer.is_none()) {
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
        self.bound_evicted_snapshots();
        woken.dedup();
        woken
    }

    /// Write the snapshots the document cache let go once enough have gathered.
    fn bound_evicted_snapshots(&mut self) {
        if self.docs.evicted_snapshots() >= EVICTED_SNAPSHOTS_HELD {
            self.flush_snapshots(false);
        }
    }

    fn on_hello(&mut self, conn: ConnId, message: Message, now_ms: i64) -> Result<(), Failure> {
        let (hello, version) = protocol::accept_hello(message)?;
        let (identity, expires_ms) = self.authenticate(&hello, now_ms)?;
        let span = tracing::info_span!("session", conn, device = %identity.device_id, role = %identity.role);
        let _entered = span.enter();
        let relay_id = self.store.relay_id();
        let head = self.store.head()?;
        let oldest = self.store.oldest_resumable()?;
        // A device that has never synced gets its documents as snapshots, then the
        // log from where they end (protocol 1.1); an older one reads the whole log.
        let snapshots = if hello.cursor.is_none() && version >= protocol::SNAPSHOTS_SINCE {
            let principal = audience::principal(&identity);
            Some(self.open_snapshots(&principal)?)
        } else {
            None
        };
        let resume_from = match &hello.cursor {
            None if snapshots.is_some() => Some(0),
            None if oldest == 0 => Some(0),
            Some(c) if c.relay_id == relay_id && c.seq <= head && c.seq >= oldest => Some(c.seq),
            _ => None,
        };
        tracing::info!(cursor = ?hello.cursor.as_ref().map(|c| c.seq), head, full_sync = resume_from.is_none(), snapshots = snapshots.is_some(), %version, client = %hello.client, "device connected");
        let principal = audience::principal(&identity);
        let mut peer = Peer {
            identity,
            principal,
            expires_ms,
            last_heard_ms: now_ms,
            sent_through: resume_from.unwrap_or(head),
            catching_up: resume_from.is_some(),
            snapshots,
            docs: DocSyncs::default(),
        };
        // Resuming: the log pages carry what it gained or lost while away.
        let first = match resume_from {
            None => self.open_full_sync(&peer.principal, &mut peer.docs)?,
            Some(_) => Vec::new(),
        };
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

    fn authenticate(&self, hello: &Hello, now_ms: i64) -> Result<(DeviceIdentity, i64), Failure> {
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
        Ok((body.identity(), body.expires_ms))
    }

    /// Send newly logged entries to every device that is following the log live and
    /// may see them; a device that gained a document in this batch gets its whole
    /// history, one that lost a document is told to remove it. The uploader gets
    /// its cursor moved past its own changes without their bytes.
    fn push(
        &mut self,
        entries: &[(LogEntry, Option<ConnId>)],
        view: &ViewDelta,
        woken: &mut Vec<ConnId>,
    ) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        let (first, last) = (first.0.seq, last.0.seq);
        let live: Vec<(ConnId, String, u64)> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.closing)
            .filter_map(|(conn, c)| {
                let p = c.peer.as_ref()?;
                (!p.catching_up).then(|| (*conn, p.principal.clone(), p.sent_through))
            })
            .collect();
        let mut batch_docs: Vec<&str> = Vec::new();
        let mut distinct: HashSet<&str> = HashSet::new();
        for (e, _) in entries {
            if distinct.insert(e.doc_id.as_str()) {
                batch_docs.push(e.doc_id.as_str());
            }
        }
        let mut nudge = Vec::new();
        for (conn, principal, sent_through) in live {
            woken.push(conn);
            if sent_through + 1 != first {
                // It missed something (or is ahead): read from the log instead.
                if let Some(peer) = self.peer_mut(conn) {
                    peer.catching_up = true;
                }
                continue;
            }
            let gained = view.gained.get(&principal).cloned().unwrap_or_default();
            let lost = view.lost.get(&principal).cloned().unwrap_or_default();
            // Who sees what is decided per document: ask once per document of the
            // batch (entries without their bytes), then copy only the entries the
            // device is sent.
            let stubs: Vec<LogEntry> = batch_docs
                .iter()
                .filter(|doc_id| !gained.iter().any(|g| g == *doc_id))
                .map(|doc_id| LogEntry {
                    seq: 0,
                    doc_id: (*doc_id).to_owned(),
                    bytes: Vec::new(),
                })
                .collect();
            let read = self.visible_entries(&principal, stubs).and_then(|seen| {
                let seen: HashSet<String> = seen.into_iter().map(|e| e.doc_id).collect();
                let visible: Vec<LogEntry> = entries
                    .iter()
                    .filter(|(e, from)| {
                        let own = *from == Some(conn);
                        // A gained document's whole history follows below.
                        !own && !gained.contains(&e.doc_id) && seen.contains(&e.doc_id)
                    })
                    .map(|(e, _)| e.clone())
                    .collect();
                Ok((visible, self.history_of(&gained)?))
            });
            let mut out = match read {
                Ok((mut visible, history)) => {
                    visible.extend(history);
                    visible.sort_by_key(|e| e.seq);
                    visible
                }
                Err(e) => {
                    tracing::error!(conn, error = %e, "cannot read the log to push");
                    self.fail(
                        conn,
                        ErrorCode::Internal,
                        "the relay cannot read its log".into(),
                    );
                    continue;
                }
            };
            out.dedup_by_key(|e| e.seq);
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            let Some(peer) = c.peer.as_mut() else {
                continue;
            };
            peer.sent_through = last;
            if peer.docs.running {
                for entry in &out {
                    if peer.docs.unsettled.contains(&entry.doc_id) {
                        nudge.push((conn, entry.doc_id.clone()));
                    }
                }
            }
            c.out.push_back(Message::Changes(Changes {
                entries: out,
                cursor: last,
                caught_up: true,
                unshared: lost,
            }));
        }
        nudge.dedup();
        for (conn, doc_id) in nudge {
            self.nudge_doc_sync(conn, &doc_id);
        }
    }

    fn queue_page(&mut self, conn: ConnId) -> Result<(), LogStoreError> {
        if self.peer_mut(conn).is_some_and(|p| p.snapshots.is_some()) {
            return self.queue_snapshot_page(conn);
        }
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
        // The head first: every entry up to it is visible to the read that follows
        // (the sequence is gap-safe). Read after the page, a head moved on by another
        // relay node in between would let an empty page carry the cursor past entries
        // the device never received.
        let head = self.store.head()?;
        let principal = self
            .peer_mut(conn)
            .map(|p| p.principal.clone())
            .unwrap_or_default();
        let (max_entries, max_bytes) = (self.config.page_entries, self.config.page_bytes);
        // The cursor covers every entry read, including those the device may not see
        // (which the store may leave out of the page already).
        let (entries, cursor) = if principal == audience::DISPATCH {
            let entries = self.store.read_log(after, max_entries, max_bytes)?;
            let cursor = entries.last().map_or(after, |e| e.seq);
            (entries, cursor)
        } else {
            self.store
                .read_log_for(&principal, after, head, max_entries, max_bytes)?
        };
        let caught_up = cursor >= head;
        let (entries, unshared) = self.page_view(&principal, after, cursor, entries)?;
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
            unshared,
        }));
        Ok(())
    }

    /// Who is on a connection: identity and principal (None before the handshake).
    fn author(&self, conn: ConnId) -> Option<(DeviceIdentity, String)> {
        let peer = self.conns.get(&conn)?.peer.as_ref()?;
        Some((peer.identity.clone(), peer.principal.clone()))
    }

    fn peer_mut(&mut self, conn: ConnId) -> Option<&mut Peer> {
        self.conns.get_mut(&conn)?.peer.as_mut()
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
