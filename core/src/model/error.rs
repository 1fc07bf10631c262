//! Errors of the document model: refused mutations and unreadable documents.

/// Why the model refused a mutation or could not read a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// An input field is missing or out of range.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The offending field (`lines[0].qty`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The event kind does not exist for this kind of document.
    #[error("`{kind}` is not a {doc_kind} event")]
    UnknownEventKind {
        /// `order` or `delivery`.
        doc_kind: &'static str,
        /// The unknown name.
        kind: String,
    },
    /// The event is not a valid next step from the document's current status.
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
    /// The document was written by a newer Waybill whose schema this build does not know.
    #[error("document schema version {found} is newer than the supported {supported}")]
    FutureSchema {
        /// Version in the document.
        found: i64,
        /// Newest version this build reads.
        supported: i64,
    },
    /// The document does not match the schema (missing or mistyped fields).
    #[error("document {doc_id} does not match the Waybill schema: {reason}")]
    Malformed {
        /// The document.
        doc_id: String,
        /// What did not match.
        reason: String,
    },
}

impl ModelError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ModelError::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
