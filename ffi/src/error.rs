//! The one error apps catch (`WaybillException` in Kotlin, `WaybillError` in Swift
//! and Python), keeping the core's distinctions: each core variant maps to one
//! variant here, in one place ([`From`] impls below).
//!
//! Field names avoid `message`, which Kotlin's `Throwable` already owns.

use waybill_core::ReplicaError;
use waybill_core::credential::CredentialError;
use waybill_core::ids::InvalidDocId;
use waybill_core::model::ModelError;
use waybill_core::net::NetError;
use waybill_core::store::StoreError;
use waybill_core::sync::SyncError;

/// Why an SDK call failed. Refusals (input, transition, role) leave the store
/// untouched.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum WaybillError {
    /// An input field is missing, malformed or out of range (`lines[0].qty`), or
    /// the order JSON does not parse.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The event kind does not exist for this kind of document.
    #[error("`{kind}` is not a {doc_kind} event")]
    UnknownEventKind {
        /// `order` or `delivery`.
        doc_kind: String,
        /// The unknown name.
        kind: String,
    },
    /// The event is not a valid next step from the document's current status
    /// (no `delivered` before `picked_up`).
    #[error("cannot record `{kind}` on {doc_id}: it is `{status}`")]
    InvalidTransition {
        /// The document.
        doc_id: String,
        /// Its current status.
        status: String,
        /// The refused event kind.
        kind: String,
    },
    /// An amount in a different currency from the order's.
    #[error("currency {got} does not match the order's {expected}")]
    CurrencyMismatch {
        /// The order's currency.
        expected: String,
        /// The currency given.
        got: String,
    },
    /// The device's role does not allow this change.
    #[error("a {role} device may not {action}")]
    Forbidden {
        /// The device's role.
        role: String,
        /// What it tried.
        action: String,
    },
    /// No such document on this device.
    #[error("document {doc_id} is not on this device")]
    NotFound {
        /// The id asked for.
        doc_id: String,
    },
    /// The document's first change has not arrived yet; sync will bring it.
    #[error("document {doc_id} is not complete on this device yet")]
    Incomplete {
        /// The document.
        doc_id: String,
    },
    /// The string is not a document id (`ord_…`, `dlv_…`).
    #[error("`{id}` is not a document id")]
    InvalidDocId {
        /// What was given.
        id: String,
    },
    /// An order id where a delivery was expected, or the other way round.
    #[error("{doc_id} is not a {expected}")]
    WrongKind {
        /// The id given.
        doc_id: String,
        /// `order` or `delivery`.
        expected: String,
    },
    /// A document or the store was written by a newer Waybill: upgrade the app.
    #[error("{reason}")]
    FutureSchema {
        /// Which and how new.
        reason: String,
    },
    /// A document does not match the schema, or change bytes are corrupt.
    #[error("{reason}")]
    CorruptDocument {
        /// The document.
        doc_id: String,
        /// What did not match.
        reason: String,
    },
    /// The local store failed (not a database, SQLite error); nothing was changed.
    #[error("{reason}")]
    Storage {
        /// What failed.
        reason: String,
    },
    /// The device credential is missing, malformed, forged or expired.
    #[error("{reason}")]
    Credential {
        /// What is wrong; enrol the device again.
        reason: String,
    },
    /// The relay could not be reached, the connection broke, TLS or certificate
    /// pinning failed, or the relay sent something unexpected. Retrying may help.
    #[error("{reason}")]
    Network {
        /// Which relay and what failed.
        reason: String,
    },
    /// A step with the relay did not finish in time.
    #[error("{reason}")]
    Timeout {
        /// What was under way, with which relay.
        reason: String,
    },
    /// The relay refused with a typed code (`BadCredential`, `RevokedCredential`,
    /// `UnsupportedVersion`, `ShuttingDown`…).
    #[error("{reason}")]
    RelayRefused {
        /// The relay's error code.
        code: String,
        /// The relay's explanation.
        reason: String,
    },
    /// A failure inside the SDK itself (a sync task that panicked).
    #[error("{reason}")]
    Internal {
        /// What failed.
        reason: String,
    },
}

impl From<ModelError> for WaybillError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::InvalidInput { field, reason } => Self::InvalidInput { field, reason },
            ModelError::UnknownEventKind { doc_kind, kind } => Self::UnknownEventKind {
                doc_kind: doc_kind.to_owned(),
                kind,
            },
            ModelError::InvalidTransition {
                doc_id,
                status,
                kind,
            } => Self::InvalidTransition {
                doc_id,
                status,
                kind,
            },
            ModelError::CurrencyMismatch { expected, got } => {
                Self::CurrencyMismatch { expected, got }
            }
            ModelError::Forbidden { role, action } => Self::Forbidden { role, action },
            e @ ModelError::FutureSchema { .. } => Self::FutureSchema {
                reason: e.to_string(),
            },
            ModelError::Malformed { doc_id, reason } => Self::CorruptDocument { doc_id, reason },
        }
    }
}

impl From<StoreError> for WaybillError {
    fn from(e: StoreError) -> Self {
        match e {
            e @ StoreError::FutureSchema { .. } => Self::FutureSchema {
                reason: e.to_string(),
            },
            StoreError::CorruptDocument { doc_id, reason } => {
                Self::CorruptDocument { doc_id, reason }
            }
            e @ (StoreError::NotADatabase { .. } | StoreError::Sqlite(_)) => Self::Storage {
                reason: e.to_string(),
            },
        }
    }
}

impl From<InvalidDocId> for WaybillError {
    fn from(e: InvalidDocId) -> Self {
        Self::InvalidDocId { id: e.0 }
    }
}

impl From<ReplicaError> for WaybillError {
    fn from(e: ReplicaError) -> Self {
        match e {
            ReplicaError::Model(e) => e.into(),
            ReplicaError::Store(e) => e.into(),
            ReplicaError::NotFound { doc_id } => Self::NotFound { doc_id },
            ReplicaError::Incomplete { doc_id } => Self::Incomplete { doc_id },
            ReplicaError::InvalidDocId(e) => e.into(),
            ReplicaError::WrongKind { doc_id, expected } => Self::WrongKind {
                doc_id,
                expected: expected.to_owned(),
            },
            ReplicaError::CorruptChange {
                doc_id,
                index,
                reason,
            } => Self::CorruptDocument {
                doc_id,
                reason: format!("change {index} is corrupt: {reason}"),
            },
        }
    }
}

impl From<CredentialError> for WaybillError {
    fn from(e: CredentialError) -> Self {
        Self::Credential {
            reason: e.to_string(),
        }
    }
}

impl From<NetError> for WaybillError {
    fn from(e: NetError) -> Self {
        match e {
            NetError::Credential(e) => e.into(),
            NetError::Sync {
                source: SyncError::Replica(e),
                ..
            } => e.into(),
            e @ NetError::Sync {
                source: SyncError::Relay { .. },
                ..
            } => Self::RelayRefused {
                code: e.relay_code().map(|c| format!("{c:?}")).unwrap_or_default(),
                reason: e.to_string(),
            },
            e @ NetError::Timeout { .. } => Self::Timeout {
                reason: e.to_string(),
            },
            e @ (NetError::Tls { .. }
            | NetError::Connect { .. }
            | NetError::Connection { .. }
            | NetError::Protocol { .. }
            | NetError::Sync { .. }) => Self::Network {
                reason: e.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waybill_core::protocol::ErrorCode;

    #[test]
    fn model_refusals_keep_their_fields() {
        let e: WaybillError = ReplicaError::Model(ModelError::Forbidden {
            role: "courier".into(),
            action: "confirm an order".into(),
        })
        .into();
        assert!(
            matches!(&e, WaybillError::Forbidden { role, action } if role == "courier" && action == "confirm an order")
        );
        let e: WaybillError = ReplicaError::Model(ModelError::InvalidTransition {
            doc_id: "ord_1".into(),
            status: "placed".into(),
            kind: "delivered".into(),
        })
        .into();
        assert!(matches!(e, WaybillError::InvalidTransition { .. }));
        assert_eq!(
            e.to_string(),
            "cannot record `delivered` on ord_1: it is `placed`"
        );
    }

    #[test]
    fn replica_and_id_errors_map_one_to_one() {
        let e: WaybillError = ReplicaError::NotFound {
            doc_id: "dlv_1".into(),
        }
        .into();
        assert!(matches!(e, WaybillError::NotFound { doc_id } if doc_id == "dlv_1"));
        let e: WaybillError = ReplicaError::WrongKind {
            doc_id: "dlv_1".into(),
            expected: "order",
        }
        .into();
        assert!(matches!(e, WaybillError::WrongKind { expected, .. } if expected == "order"));
        let e: WaybillError = InvalidDocId("nope".into()).into();
        assert!(matches!(e, WaybillError::InvalidDocId { id } if id == "nope"));
    }

    #[test]
    fn relay_refusals_keep_the_code() {
        let e: WaybillError = NetError::Sync {
            addr: "127.0.0.1:4433".into(),
            source: SyncError::Relay {
                code: ErrorCode::RevokedCredential,
                message: "device revoked".into(),
            },
        }
        .into();
        match e {
            WaybillError::RelayRefused { code, reason } => {
                assert_eq!(code, "RevokedCredential");
                assert!(reason.contains("127.0.0.1:4433"), "{reason}");
            }
            other => panic!("expected RelayRefused, got {other:?}"),
        }
        let e: WaybillError = NetError::Credential(CredentialError::Missing).into();
        assert!(matches!(e, WaybillError::Credential { .. }));
        let e: WaybillError = NetError::Sync {
            addr: "a".into(),
            source: SyncError::Replica(ReplicaError::Incomplete {
                doc_id: "ord_1".into(),
            }),
        }
        .into();
        assert!(matches!(e, WaybillError::Incomplete { .. }));
    }
}
