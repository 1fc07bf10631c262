//! The replica's public error: what an app (and, later, the FFI) sees.

use crate::ids::InvalidDocId;
use crate::model::ModelError;
use crate::store::StoreError;

/// Why a replica call failed. Refusals (`Model`) leave the store untouched.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The model refused the change or could not read a document.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The store failed; the change was not made.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such document on this device.
    #[error("document {doc_id} is not on this device")]
    NotFound {
        /// The id asked for.
        doc_id: String,
    },
    /// Only changes waiting for the document's first change are here: it cannot be
    /// read until that change arrives (sync will bring it).
    #[error(
        "document {doc_id} is not complete on this device yet: its first change has not arrived"
    )]
    Incomplete {
        /// The document.
        doc_id: String,
    },
    /// The id is not a document id.
    #[error(transparent)]
    InvalidDocId(#[from] InvalidDocId),
    /// The document is of the other kind (an order id where a delivery was expected).
    #[error("{doc_id} is not a{} {expected}", if *.expected == "order" { "n" } else { "" })]
    WrongKind {
        /// The id given.
        doc_id: String,
        /// `order` or `delivery`.
        expected: &'static str,
    },
    /// Remote change bytes that are not a valid Automerge change.
    #[error("change {index} for {doc_id} is corrupt: {reason}")]
    CorruptChange {
        /// The document.
        doc_id: String,
        /// Position in the batch.
        index: usize,
        /// What Automerge said.
        reason: String,
    },
}
