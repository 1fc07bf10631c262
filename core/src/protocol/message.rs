//! The messages. Encoded with postcard (serde); enum variants are numbered by
//! position, so variants and fields are only ever appended, in a new minor version.

use super::ErrorCode;
use serde::{Deserialize, Serialize};

/// A protocol version. Peers must share the major; the lower minor is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Incompatible changes.
    pub major: u16,
    /// Compatible additions.
    pub minor: u16,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Everything that crosses the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Device → relay, first: who I am and where I left off.
    Hello(Hello),
    /// Relay → device, answering `Hello`: the session is open.
    Welcome(Welcome),
    /// Device → relay: local changes to accept.
    Upload(Upload),
    /// Relay → device: which uploaded changes are durable, and which were refused.
    UploadAck(UploadAck),
    /// Relay → device: accepted changes from the relay's log, in sequence order.
    Changes(Changes),
    /// Either way: one Automerge sync-protocol message for one document (the
    /// fallback when a cursor is unknown or compacted away).
    DocSync(DocSync),
    /// Either way: a typed error; the sender closes after a fatal one.
    Error(WireError),
    /// Either way: orderly close.
    Bye,
    /// Device → relay, during a full sync: every local document has been offered
    /// with a first `DocSync`.
    DocSyncOffered(DocSyncOffered),
    /// Relay → device, ending a full sync: every document is in sync; the device
    /// may now store `cursor` and resume from it next time.
    DocSyncComplete(DocSyncComplete),
    /// Relay → device: these documents are no longer shared with the device (a
    /// delivery was reassigned); it removes them.
    Unshare(Unshare),
    /// Relay → device (protocol 1.1), to a device that has never synced: a page of
    /// whole documents, each as one saved Automerge document, before the log.
    Snapshots(Snapshots),
}

impl Message {
    /// The message's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Welcome(_) => "welcome",
            Message::Upload(_) => "upload",
            Message::UploadAck(_) => "upload_ack",
            Message::Changes(_) => "changes",
            Message::DocSync(_) => "doc_sync",
            Message::Error(_) => "error",
            Message::Bye => "bye",
            Message::DocSyncOffered(_) => "doc_sync_offered",
            Message::DocSyncComplete(_) => "doc_sync_complete",
            Message::Unshare(_) => "unshare",
            Message::Snapshots(_) => "snapshots",
        }
    }
}

/// The device's opening message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`super::MAGIC`].
    pub magic: [u8; 4],
    /// The device's protocol version.
    pub version: Version,
    /// The signed device credential, as issued by `waybill enroll`.
    pub credential: Vec<u8>,
    /// Where this device left off in a relay's log (None: never synced).
    pub cursor: Option<Cursor>,
    /// Free-form client description for logs (`waybill-android/0.1.0`).
    pub client: String,
}

/// A position in one relay deployment's change log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cursor {
    /// The relay deployment whose log `seq` counts in.
    pub relay_id: String,
    /// The last sequence number applied (every entry up to it has been seen).
    pub seq: u64,
}

/// The relay's answer to a valid `Hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The negotiated version.
    pub version: Version,
    /// Identifies the relay deployment (a device refuses to mix cursors of two).
    pub relay_id: String,
    /// The newest sequence number in the relay's log when the session opened.
    pub head: u64,
    /// The oldest cursor the relay can still resume from; older ones fall back to
    /// per-document sync.
    pub oldest_resumable: u64,
    /// True when the device's cursor cannot be resumed (unknown relay, compacted
    /// away, or ahead of the log): both sides then run Automerge's per-document sync
    /// protocol (`DocSync`) for every document, and the relay closes it with a
    /// `Changes` carrying the new cursor once every document is in sync.
    pub full_sync: bool,
}

/// One local change offered to the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadChange {
    /// The document it changes.
    pub doc_id: String,
    /// Raw Automerge change bytes.
    pub bytes: Vec<u8>,
}

/// A batch of local changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    /// Chosen by the device to match the acknowledgement.
    pub batch: u64,
    /// The changes, oldest first.
    pub changes: Vec<UploadChange>,
}

/// A change the relay would not accept, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Automerge change hash (32 bytes).
    pub hash: Vec<u8>,
    /// The document.
    pub doc_id: String,
    /// Why.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub reason: String,
}

/// The relay's answer to an `Upload`, sent only once the accepted changes are durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadAck {
    /// The batch answered.
    pub batch: u64,
    /// Hashes of changes now durable on the relay (including ones it already had).
    pub accepted: Vec<Vec<u8>>,
    /// Changes refused (kept in quarantine on the relay, never applied).
    pub refused: Vec<Refusal>,
}

/// One entry of the relay's change log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Position in the relay's log.
    pub seq: u64,
    /// The document.
    pub doc_id: String,
    /// Raw Automerge change bytes.
    pub bytes: Vec<u8>,
}

/// Changes from the relay's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// The entries, in increasing `seq`.
    pub entries: Vec<LogEntry>,
    /// The device's cursor after applying these (covers entries it may not see).
    pub cursor: u64,
    /// Whether the device has now caught up with the log as of `Welcome.head`.
    pub caught_up: bool,
    /// Documents that left the device's view in this stretch of the log: it removes
    /// them before it stores `cursor`, so a resumed device never keeps one.
    pub unshared: Vec<String>,
}

/// One Automerge sync message for one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocSync {
    /// The document.
    pub doc_id: String,
    /// Encoded `automerge::sync::Message`.
    pub message: Vec<u8>,
}

/// A typed error for the peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable detail (never personal data).
    pub message: String,
    /// Whether the sender closes the connection after this.
    pub fatal: bool,
}

/// The device has offered every local document in a full sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocSyncOffered {
    /// How many documents it offered.
    pub documents: u64,
}

/// The relay has brought every document in sync in a full sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocSyncComplete {
    /// The cursor the device has now caught up to.
    pub cursor: u64,
}

/// Documents the device may no longer see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unshare {
    /// Their ids.
    pub doc_ids: Vec<String>,
}

/// One document as a saved Automerge document (`Automerge::save`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocSnapshot {
    /// The document.
    pub doc_id: String,
    /// Its saved bytes, loadable by any Automerge implementation.
    pub bytes: Vec<u8>,
}

/// A page of the documents a device that has never synced may see, sent instead of
/// the log up to `through` (protocol 1.1). Each document holds at least every change
/// logged up to `through`; the log continues after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshots {
    /// The documents.
    pub docs: Vec<DocSnapshot>,
    /// The log position the snapshots cover.
    pub through: u64,
    /// The last page: the device stores `through` as its cursor with it, and the
    /// relay continues with `Changes` from there.
    pub done: bool,
}
