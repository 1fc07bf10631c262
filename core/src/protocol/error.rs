//! Protocol errors: what went wrong locally, and the codes sent to the peer.

use super::Version;
use serde::{Deserialize, Serialize};

/// Why a frame or message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A frame longer than the agreed maximum.
    #[error("frame of {size} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Announced or actual size.
        size: u64,
        /// The limit.
        max: u32,
    },
    /// Bytes that do not decode as a message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The peer speaks a major version we do not.
    #[error("protocol version {theirs} is not supported (this side speaks {ours})")]
    UnsupportedVersion {
        /// Ours.
        ours: Version,
        /// The peer's.
        theirs: Version,
    },
    /// A valid message at the wrong moment (anything but `hello` first).
    #[error("expected {expected}, got {got}")]
    Unexpected {
        /// What the state machine waited for.
        expected: &'static str,
        /// What arrived.
        got: &'static str,
    },
    /// A message could not be encoded (a bug, reported rather than panicking).
    #[error("cannot encode message: {0}")]
    Encode(String),
}

impl ProtocolError {
    /// The code to send the peer before closing.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            ProtocolError::Malformed(_) | ProtocolError::Unexpected { .. } => {
                ErrorCode::MalformedMessage
            }
            ProtocolError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            ProtocolError::Encode(_) => ErrorCode::Internal,
        }
    }
}

/// Error codes on the wire. New codes are only ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The peer's major protocol version is not supported.
    UnsupportedVersion,
    /// A frame exceeded the maximum size.
    FrameTooLarge,
    /// A frame did not decode, or a message came out of turn.
    MalformedMessage,
    /// No credential, or one not signed by this relay.
    BadCredential,
    /// The credential has expired.
    ExpiredCredential,
    /// The device was revoked.
    RevokedCredential,
    /// Change bytes that are not a valid Automerge change.
    CorruptChange,
    /// The device's role does not allow the change; it is quarantined.
    Forbidden,
    /// The document does not match the schema.
    InvalidDocument,
    /// The relay failed; retry later.
    Internal,
    /// The relay is shutting down; reconnect later.
    ShuttingDown,
    /// The log was compacted past where the device is reading: reconnect, and the
    /// relay brings it up to date with a full (per-document) sync.
    CursorExpired,
}
