//! QUIC transport: the device-side driver around [`crate::sync::ClientSession`].
//!
//! A device talks to the relay over one QUIC connection pinned to the certificate
//! in its credential ([`tls`]), carrying one bidirectional stream of length-prefixed
//! frames (PROTOCOL.md). [`sync_once`] connects, catches up, uploads and closes;
//! [`SyncClient`] stays connected in the background, uploads local writes as they
//! happen, receives pushed changes, and reconnects with backoff. Replica calls are
//! made directly on the sync task: they are short SQLite transactions.

mod client;
mod drive;
pub mod endpoint;
mod error;
mod link;
mod once;
mod status;
pub mod tls;

pub use client::SyncClient;
pub use error::NetError;
pub use once::{SyncReport, sync_once};
pub use status::{
    ConnectionState, InitialSyncProgress, StatusSubscription, SyncStatus, SyncStatusObserver,
};

use crate::credential::Credential;
use crate::sync::ClientConfig;
use std::time::Duration;

/// How a device reaches the relay.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The relay's `host:port`, overriding the address in the credential.
    pub relay_addr: Option<String>,
    /// First delay before reconnecting after a failure.
    pub backoff_min: Duration,
    /// Longest delay between reconnection attempts.
    pub backoff_max: Duration,
    /// How long connecting (QUIC and TLS handshake) may take.
    pub connect_timeout: Duration,
    /// Tuning of the sync session.
    pub client: ClientConfig,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            relay_addr: None,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            client: ClientConfig::default(),
        }
    }
}

impl SyncOptions {
    /// The address to connect to: the override, else the credential's.
    pub fn relay_addr<'a>(&'a self, credential: &'a Credential) -> &'a str {
        self.relay_addr
            .as_deref()
            .unwrap_or(&credential.body.relay_addr)
    }
}
