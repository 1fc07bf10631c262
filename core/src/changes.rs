//! Untrusted Automerge change bytes: decoding with the checks Automerge skips, and
//! applying them so that a malformed change is an error, never a crash.

use automerge::{Automerge, Change};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Why change bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// Not an Automerge change chunk.
    #[error("not an Automerge change: {0}")]
    Decode(String),
    /// The header checksum does not match the content: the bytes were altered.
    #[error("checksum mismatch: the change bytes were altered in transit or storage")]
    Checksum,
    /// Automerge could not apply the change to the document.
    #[error("cannot be applied: {0}")]
    Apply(String),
}

/// Decode one change, checking its header checksum (the first four bytes of its
/// hash, stored after the magic bytes), which `Change::from_bytes` does not verify.
pub fn decode(bytes: &[u8]) -> Result<Change, ChangeError> {
    let change =
        Change::from_bytes(bytes.to_vec()).map_err(|e| ChangeError::Decode(e.to_string()))?;
    if bytes.get(4..8) != Some(&change.hash().0[..4]) {
        return Err(ChangeError::Checksum);
    }
    Ok(change)
}

/// Apply changes to a document. Automerge 0.12 can panic on a crafted change whose
/// checksum is right but whose operations are inconsistent; such a panic is caught
/// and reported as an error. The document may then be half-updated, so callers must
/// drop it (the replica's session does: on error nothing is stored or cached).
pub fn apply(doc: &mut Automerge, changes: Vec<Change>) -> Result<(), ChangeError> {
    match catch_unwind(AssertUnwindSafe(|| doc.apply_changes(changes))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ChangeError::Apply(e.to_string())),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "automerge panicked".to_owned());
            tracing::warn!(reason = %what, "refused a change that made automerge panic");
            Err(ChangeError::Apply(what))
        }
    }
}
