//! Sync as state machines with no I/O: the device's [`ClientSession`] and the
//! [`Relay`]. They take messages (and, for the relay, the time) in and hand messages
//! out; QUIC (`crate::net`, `waybill-server`) and the simulated network in the tests
//! are interchangeable drivers around them. The exchange rules are in PROTOCOL.md.

pub mod audience;
mod client;
mod log_store;
mod relay;
mod relay_docs;

pub use client::{ClientConfig, ClientSession, SessionProgress, SyncEvent};
pub use log_store::{
    AudienceUpdate, IngestBatch, LogStore, LogStoreError, MemoryLogStore, QuarantinedChange,
    SavedDoc, SharedLogStore, StoredChange, ViewChange, audiences_by_doc, log_store_conformance,
    log_store_reopen_conformance, settle_relay_id,
};
pub use relay::{CommitNotice, ConnId, Relay, RelayConfig};

use crate::protocol::ErrorCode;
use crate::replica::ReplicaError;

/// Why a device's sync session stopped or a step failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The local replica failed (storage, corrupt document).
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// The relay refused the session or a request, with a typed reason.
    #[error("the relay refused: {message} ({code:?})")]
    Relay {
        /// The relay's code.
        code: ErrorCode,
        /// The relay's explanation.
        message: String,
    },
    /// The relay sent a message that makes no sense at this point.
    #[error("the relay sent an unexpected {0}")]
    Unexpected(&'static str),
}
