//! The device's side of the protocol, as a state machine with no I/O.
//!
//! A driver (QUIC in [`crate::net`], or the simulated network in the tests) feeds it
//! the relay's messages and writes out what [`ClientSession::poll_transmit`] hands
//! back. The session resumes from the replica's cursor, applies the relay's log in
//! pages (each page and its cursor in one transaction), uploads the outbox in
//! windowed batches and clears an entry only when the relay acknowledges it, and
//! answers per-document sync when the relay asks for a full sync.

use super::SyncError;
use crate::ids::DocId;
use crate::protocol::{
    Changes, Cursor, DocSync, DocSyncOffered, ErrorCode, Hello, MAGIC, Message, PROTOCOL_VERSION,
    Refusal, Snapshots, Upload, UploadAck, UploadChange, Version, Welcome, WireError,
};
use crate::replica::{LogApplied, Replica};
use automerge::sync as am_sync;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Tuning of a device session.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Most changes in one upload batch.
    pub batch_changes: usize,
    /// About how many change bytes in one upload batch.
    pub batch_bytes: usize,
    /// Upload batches sent before the first is acknowledged.
    pub batches_in_flight: usize,
    /// Describes the client in the relay's logs.
    pub client: String,
    /// The protocol version offered in `Hello` (an older minor to talk as an older
    /// client would, in tests and for compatibility checks).
    pub version: Version,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            batch_changes: 512,
            batch_bytes: 512 * 1024,
            batches_in_flight: 4,
            client: format!("waybill-core/{}", env!("CARGO_PKG_VERSION")),
            version: PROTOCOL_VERSION,
        }
    }
}

/// Something the driver or the app may want to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    /// The relay accepted the handshake.
    Connected {
        /// The relay's log head at the time.
        head: u64,
        /// Whether a full (per-document) sync runs instead of resuming the log.
        full_sync: bool,
    },
    /// Local changes are durable on the relay.
    Uploaded {
        /// How many.
        changes: usize,
    },
    /// Changes from the relay were stored.
    Received {
        /// New changes.
        changes: usize,
        /// Documents they touched.
        documents: usize,
    },
    /// The device has everything the relay had when it connected (and, after this,
    /// receives new changes as they are accepted).
    CaughtUp {
        /// The cursor now stored.
        cursor: u64,
    },
    /// The relay refused local changes; they moved to the refused list.
    Refused(Vec<Refusal>),
    /// Documents the relay no longer shares with this device were removed.
    Removed(Vec<String>),
    /// The relay reported an error.
    RelayError(WireError),
}

/// Progress of the session, for status displays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionProgress {
    /// Handshake done.
    pub connected: bool,
    /// Caught up with the relay's log at least once in this session.
    pub caught_up: bool,
    /// The relay's head when the session opened.
    pub head_at_start: u64,
    /// Log position applied so far.
    pub cursor: u64,
    /// Where the session started from.
    pub start_cursor: u64,
    /// Changes uploaded and acknowledged in this session.
    pub uploaded: u64,
    /// New changes received in this session.
    pub received: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// `start` not called yet.
    Idle,
    /// Hello sent; waiting for Welcome.
    Handshake,
    /// Open.
    Open,
    /// Closed (by either side); the driver should drop the connection.
    Closed,
}

/// One connection's worth of sync, device side.
pub struct ClientSession {
    config: ClientConfig,
    credential: Vec<u8>,
    phase: Phase,
    out: VecDeque<Message>,
    relay_id: String,
    /// Upload batches awaiting acknowledgement: batch id → number of changes.
    in_flight: BTreeMap<u64, usize>,
    next_batch: u64,
    /// The last outbox seq put in a batch this session.
    queued_through: i64,
    /// Per-document sync states, during a full sync.
    doc_states: HashMap<String, am_sync::State>,
    full_sync: bool,
    progress: SessionProgress,
}

impl ClientSession {
    /// A session presenting this credential (the file bytes from `waybill enroll`).
    pub fn new(credential: Vec<u8>, config: ClientConfig) -> Self {
        Self {
            config,
            credential,
            phase: Phase::Idle,
            out: VecDeque::new(),
            relay_id: String::new(),
            in_flight: BTreeMap::new(),
            next_batch: 1,
            queued_through: 0,
            doc_states: HashMap::new(),
            full_sync: false,
            progress: SessionProgress::default(),
        }
    }

    /// Open the session: queue the `Hello` with the replica's cursor.
    pub fn start(&mut self, replica: &Replica) -> Result<(), SyncError> {
        let cursor = replica.sync_cursor()?;
        self.progress.start_cursor = cursor.as_ref().map_or(0, |c| c.seq);
        self.progress.cursor = self.progress.start_cursor;
        self.out.push_back(Message::Hello(Hello {
            magic: MAGIC,
            version: self.config.version,
            credential: self.credential.clone(),
            cursor,
            client: self.config.client.clone(),
        }));
        self.phase = Phase::Handshake;
        Ok(())
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.out.pop_front()
    }

    /// Whether the session is over (the driver closes the connection once the
    /// output is written).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Progress so far.
    pub fn progress(&self) -> &SessionProgress {
        &self.progress
    }

    /// Whether every local change known to the session is acknowledged and the log
    /// is caught up: a one-shot sync can stop here.
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Open
            && self.progress.caught_up
            && self.in_flight.is_empty()
            && self.out.is_empty()
    }

    /// Upload batches awaiting acknowledgement.
    pub fn uploads_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Say goodbye (the driver closes once it is sent).
    pub fn close(&mut self) {
        if self.phase != Phase::Closed {
            self.out.push_back(Message::Bye);
            self.phase = Phase::Closed;
        }
    }

    /// The app wrote something: upload it if the window allows.
    pub fn local_changes(&mut self, replica: &Replica) -> Result<(), SyncError> {
        if self.phase == Phase::Open {
            self.fill_uploads(replica)?;
        }
        Ok(())
    }

    /// Handle one message from the relay.
    pub fn handle(
        &mut self,
        replica: &Replica,
        message: Message,
    ) -> Result<Vec<SyncEvent>, SyncError> {
        let mut events = Vec::new();
        match (&self.phase, message) {
            (Phase::Closed, _) => {}
            (_, Message::Error(error)) => {
                if error.fatal {
                    self.phase = Phase::Closed;
                }
                tracing::warn!(code = ?error.code, message = %error.message, fatal = error.fatal, "relay reported an error");
                let fatal = error.fatal;
                let code = error.code;
                events.push(SyncEvent::RelayError(error.clone()));
                if fatal {
                    return Err(SyncError::Relay {
                        code,
                        message: error.message,
                    });
                }
            }
            (_, Message::Bye) => self.phase = Phase::Closed,
            (Phase::Handshake, Message::Welcome(welcome)) => {
                self.on_welcome(replica, welcome, &mut events)?
            }
            (Phase::Open, Message::Changes(changes)) => {
                self.on_changes(replica, changes, &mut events)?
            }
            (Phase::Open, Message::Snapshots(snapshots)) => {
                self.on_snapshots(replica, snapshots, &mut events)?
            }
            (Phase::Open, Message::UploadAck(ack)) => self.on_ack(replica, ack, &mut events)?,
            (Phase::Open, Message::DocSync(sync)) => {
                self.on_doc_sync(replica, sync, &mut events)?
            }
            (Phase::Open, Message::Unshare(unshare)) => {
                self.remove(replica, &unshare.doc_ids, false, &mut events)?;
            }
            (Phase::Open, Message::DocSyncComplete(done)) => {
                let cursor = Cursor {
                    relay_id: self.relay_id.clone(),
                    seq: done.cursor.max(self.progress.cursor),
                };
                replica.set_sync_cursor(&cursor)?;
                self.full_sync = false;
                self.doc_states.clear();
                self.progress.cursor = cursor.seq;
                self.progress.caught_up = true;
                tracing::info!(cursor = cursor.seq, "full sync complete");
                events.push(SyncEvent::CaughtUp { cursor: cursor.seq });
            }
            (_, other) => {
                let name = other.name();
                self.out.push_back(Message::Error(WireError {
                    code: ErrorCode::MalformedMessage,
                    message: format!("unexpected {name}"),
                    fatal: true,
                }));
                self.phase = Phase::Closed;
                return Err(SyncError::Unexpected(name));
            }
        }
        Ok(events)
    }

    fn on_welcome(
        &mut self,
        replica: &Replica,
        welcome: Welcome,
        events: &mut Vec<SyncEvent>,
    ) -> Result<(), SyncError> {
        self.phase = Phase::Open;
        self.relay_id = welcome.relay_id;
        self.full_sync = welcome.full_sync;
        self.progress.connected = true;
        self.progress.head_at_start = welcome.head;
        tracing::info!(
            head = welcome.head,
            full_sync = welcome.full_sync,
            "connected to the relay"
        );
        events.push(SyncEvent::Connected {
            head: welcome.head,
            full_sync: welcome.full_sync,
        });
        if welcome.full_sync {
            // Offer every local document; the relay offers its own and ends with
            // `DocSyncComplete` once all are in sync.
            let ids = replica.doc_ids()?;
            for id in &ids {
                let mut state = am_sync::State::new();
                if let Some(message) = replica.doc_sync_message(id, &mut state)? {
                    self.out.push_back(Message::DocSync(DocSync {
                        doc_id: id.to_string(),
                        message,
                    }));
                }
                self.doc_states.insert(id.to_string(), state);
            }
            self.out.push_back(Message::DocSyncOffered(DocSyncOffered {
                documents: ids.len() as u64,
            }));
        }
        // Removals decided before a restart, now due.
        let removal = replica.remove_pending()?;
        self.after_removal(replica, removal, events)?;
        self.fill_uploads(replica)
    }

    fn on_changes(
        &mut self,
        replica: &Replica,
        changes: Changes,
        events: &mut Vec<SyncEvent>,
    ) -> Result<(), SyncError> {
        // During a full sync the cursor is stored only at the end: the log from
        // before it was never applied here.
        // Never move the cursor back (a repeated page must not undo a later one).
        let cursor = (!self.full_sync).then(|| Cursor {
            relay_id: self.relay_id.clone(),
            seq: changes.cursor.max(self.progress.cursor),
        });
        // Documents that left this device's view go before the cursor moves past
        // the point where they left (or are marked to go, durably).
        let applied = if changes.unshared.is_empty() {
            replica.apply_log(&changes.entries, cursor.as_ref())?
        } else {
            let applied = replica.apply_log(&changes.entries, None)?;
            self.remove(replica, &changes.unshared, false, events)?;
            if let Some(cursor) = &cursor {
                replica.set_sync_cursor(cursor)?;
            }
            applied
        };
        self.progress.cursor = self.progress.cursor.max(changes.cursor);
        self.report_applied(&applied, events);
        if changes.caught_up && !self.full_sync && !self.progress.caught_up {
            self.progress.caught_up = true;
            tracing::info!(cursor = changes.cursor, "caught up with the relay");
            events.push(SyncEvent::CaughtUp {
                cursor: changes.cursor,
            });
        }
        Ok(())
    }

    /// Whole documents for a device that has never synced; the last page carries the
    /// cursor the log continues from, stored with it.
    fn on_snapshots(
        &mut self,
        replica: &Replica,
        snapshots: Snapshots,
        events: &mut Vec<SyncEvent>,
    ) -> Result<(), SyncError> {
        let cursor = (snapshots.done && !self.full_sync).then(|| Cursor {
            relay_id: self.relay_id.clone(),
            seq: snapshots.through.max(self.progress.cursor),
        });
        let applied = replica.import_snapshots(&snapshots.docs, cursor.as_ref())?;
        if let Some(cursor) = &cursor {
            self.progress.cursor = cursor.seq;
        }
        self.report_applied(&applied, events);
        Ok(())
    }

    /// Count what a page brought, and tell the relay about what could not be taken.
    fn report_applied(&mut self, applied: &LogApplied, events: &mut Vec<SyncEvent>) {
        self.progress.received += applied.new_changes as u64;
        if applied.new_changes > 0 {
            events.push(SyncEvent::Received {
                changes: applied.new_changes,
                documents: applied.documents,
            });
        }
        if !applied.skipped.is_empty() {
            self.out.push_back(Message::Error(WireError {
                code: ErrorCode::CorruptChange,
                message: format!(
                    "{} change(s) from the relay could not be applied (first: {})",
                    applied.skipped.len(),
                    applied.skipped[0].0
                ),
                fatal: false,
            }));
        }
    }

    fn on_ack(
        &mut self,
        replica: &Replica,
        ack: UploadAck,
        events: &mut Vec<SyncEvent>,
    ) -> Result<(), SyncError> {
        self.in_flight.remove(&ack.batch);
        let cleared = replica.ack(&ack.accepted)?;
        self.progress.uploaded += cleared as u64;
        if cleared > 0 {
            events.push(SyncEvent::Uploaded { changes: cleared });
        }
        if !ack.refused.is_empty() {
            let refusals: Vec<(Vec<u8>, String, String)> = ack
                .refused
                .iter()
                .map(|r| (r.hash.clone(), format!("{:?}", r.code), r.reason.clone()))
                .collect();
            replica.refuse(&refusals)?;
            tracing::warn!(
                refused = ack.refused.len(),
                "the relay refused local changes"
            );
            // The local copies still hold the refused changes: replace them with the
            // relay's once nothing of theirs is in flight.
            let docs: Vec<String> = ack.refused.iter().map(|r| r.doc_id.clone()).collect();
            events.push(SyncEvent::Refused(ack.refused));
            self.remove(replica, &docs, true, events)?;
        } else {
            let removal = replica.remove_pending()?;
            self.after_removal(replica, removal, events)?;
        }
        self.fill_uploads(replica)
    }

    fn on_doc_sync(
        &mut self,
        replica: &Replica,
        sync: DocSync,
        events: &mut Vec<SyncEvent>,
    ) -> Result<(), SyncError> {
        let id = DocId::parse(&sync.doc_id).map_err(|e| SyncError::Relay {
            code: ErrorCode::InvalidDocument,
            message: e.to_string(),
        })?;
        let state = self.doc_states.entry(sync.doc_id.clone()).or_default();
        let new = replica.receive_doc_sync(&id, state, &sync.message)?;
        if new > 0 {
            self.progress.received += new as u64;
            events.push(SyncEvent::Received {
                changes: new,
                documents: 1,
            });
        }
        let message = match replica.doc_sync_message(&id, state)? {
            Some(message) => Some(message),
            // Automerge stays silent when the peer's heads already equal ours, taking
            // that as proof the peer knows ours. During a full sync that is not so:
            // a pushed change may have brought us level without the relay hearing
            // from us. Tell it our heads, so it can count the document as in sync.
            None if self.full_sync && !state.in_flight => Some(heads_only(replica.heads_of(&id)?)),
            None => None,
        };
        if let Some(message) = message {
            self.out.push_back(Message::DocSync(DocSync {
                doc_id: sync.doc_id,
                message,
            }));
        }
        Ok(())
    }

    /// Remove documents (unshared, or holding a refused change when `refresh`), now
    /// or once their own changes in flight are answered.
    fn remove(
        &mut self,
        replica: &Replica,
        doc_ids: &[String],
        refresh: bool,
        events: &mut Vec<SyncEvent>,
    ) -> Result<(), SyncError> {
        let ids: Vec<DocId> = doc_ids
            .iter()
            .filter_map(|id| DocId::parse(id).ok())
            .collect();
        let removal = replica.remove_documents(&ids, refresh)?;
        self.after_removal(replica, removal, events)
    }

    /// Report removed documents, and ask the relay for fresh copies of those whose
    /// local copy held a refused change (a first Automerge sync message from an
    /// empty document asks for everything; the relay answers `Unshare` instead if
    /// the device may no longer see it).
    fn after_removal(
        &mut self,
        replica: &Replica,
        removal: crate::replica::Removal,
        events: &mut Vec<SyncEvent>,
    ) -> Result<(), SyncError> {
        for id in &removal.removed {
            self.doc_states.remove(id.as_str());
        }
        for id in &removal.refetch {
            let mut state = am_sync::State::new();
            if let Some(message) = replica.doc_sync_message(id, &mut state)? {
                self.out.push_back(Message::DocSync(DocSync {
                    doc_id: id.to_string(),
                    message,
                }));
            }
            self.doc_states.insert(id.to_string(), state);
        }
        let gone: Vec<String> = removal
            .removed
            .iter()
            .filter(|id| !removal.refetch.contains(id))
            .map(ToString::to_string)
            .collect();
        if !gone.is_empty() {
            tracing::info!(
                documents = gone.len(),
                "removed documents no longer shared with this device"
            );
            events.push(SyncEvent::Removed(gone));
        }
        Ok(())
    }

    /// Queue upload batches from the outbox until the window is full.
    fn fill_uploads(&mut self, replica: &Replica) -> Result<(), SyncError> {
        while self.in_flight.len() < self.config.batches_in_flight {
            let entries = replica.outbox_after(self.queued_through, self.config.batch_changes)?;
            if entries.is_empty() {
                break;
            }
            let mut bytes = 0;
            let mut changes = Vec::new();
            for entry in entries.iter() {
                if !changes.is_empty() && bytes + entry.bytes.len() > self.config.batch_bytes {
                    break;
                }
                bytes += entry.bytes.len();
                self.queued_through = entry.seq;
                changes.push(UploadChange {
                    doc_id: entry.doc_id.clone(),
                    bytes: entry.bytes.clone(),
                });
            }
            let batch = self.next_batch;
            self.next_batch += 1;
            self.in_flight.insert(batch, changes.len());
            self.out
                .push_back(Message::Upload(Upload { batch, changes }));
        }
        Ok(())
    }
}

/// An Automerge sync message that only states our heads (no changes, no requests).
fn heads_only(heads: Vec<automerge::ChangeHash>) -> Vec<u8> {
    am_sync::Message {
        heads,
        need: Vec::new(),
        have: Vec::new(),
        changes: am_sync::ChunkList::empty(),
        flags: None,
        version: am_sync::MessageVersion::V1,
    }
    .encode()
}
