//! What can go wrong talking to the relay, phrased for the person who reads it in
//! an app's log or a support ticket: which relay, what failed, what to do.

use crate::credential::CredentialError;
use crate::protocol::{ErrorCode, ProtocolError};
use crate::sync::SyncError;
use std::time::Duration;

use super::tls::TlsError;

/// Why a sync with the relay failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The device's credential cannot be used to connect (for example, its pinned
    /// certificate is not readable).
    #[error("the device credential cannot be used to connect: {0}")]
    Credential(#[from] CredentialError),
    /// TLS could not be set up, or the relay presented a certificate other than the
    /// pinned one.
    #[error("cannot connect securely to the relay at {addr}: {source}")]
    Tls {
        /// The relay's address.
        addr: String,
        /// What went wrong.
        source: TlsError,
    },
    /// The relay could not be reached (address, network, handshake).
    #[error("cannot reach the relay at {addr}: {reason}")]
    Connect {
        /// The relay's address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The connection broke after it was established.
    #[error("the connection to the relay at {addr} was lost: {reason}")]
    Connection {
        /// The relay's address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The relay sent bytes that are not a Waybill message.
    #[error("the relay at {addr} sent bytes that are not a Waybill message: {source}")]
    Protocol {
        /// The relay's address.
        addr: String,
        /// What the decoder refused.
        source: ProtocolError,
    },
    /// The sync session failed: the relay refused (with a typed code) or the local
    /// store failed.
    #[error("{}", describe_sync(addr, source))]
    Sync {
        /// The relay's address.
        addr: String,
        /// What the session reported.
        source: SyncError,
    },
    /// The step did not finish in time.
    #[error("{what} with the relay at {addr} did not finish within {after:?}")]
    Timeout {
        /// The relay's address.
        addr: String,
        /// What was under way ("connecting", "syncing").
        what: &'static str,
        /// The time allowed.
        after: Duration,
    },
}

impl NetError {
    /// The relay's error code, when the relay refused.
    pub fn relay_code(&self) -> Option<ErrorCode> {
        match self {
            NetError::Sync {
                source: SyncError::Relay { code, .. },
                ..
            } => Some(*code),
            _ => None,
        }
    }

    /// Whether retrying cannot help until someone acts (a new credential, an app
    /// update): the background sync stops instead of retrying.
    pub fn is_fatal(&self) -> bool {
        matches!(self, NetError::Credential(_))
            || matches!(
                self.relay_code(),
                Some(
                    ErrorCode::BadCredential
                        | ErrorCode::ExpiredCredential
                        | ErrorCode::RevokedCredential
                        | ErrorCode::UnsupportedVersion
                )
            )
    }
}

fn describe_sync(addr: &str, error: &SyncError) -> String {
    let SyncError::Relay { code, message } = error else {
        return format!("sync with the relay at {addr} failed: {error}");
    };
    let what = match code {
        ErrorCode::BadCredential => "refused the credential",
        ErrorCode::ExpiredCredential => "refused the expired credential",
        ErrorCode::RevokedCredential => "refused the credential of a revoked device",
        ErrorCode::UnsupportedVersion => "does not speak this app's protocol version",
        ErrorCode::ShuttingDown => "is shutting down",
        _ => "reported an error",
    };
    format!("the relay at {addr} {what}: {message} ({code:?})")
}
