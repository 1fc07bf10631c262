//! How relay nodes sharing one store tell each other what they committed.
//!
//! A node that accepts changes announces a [`CommitNotice`] (how far the shared log
//! now reaches, which documents changed); every other node forgets its working copies
//! of those documents and sends its live devices what they have not seen, read from
//! the shared log. The bus carries no change bytes and is never a source of truth:
//! a lost or late notice costs latency (each node also checks the log head every
//! tick), never a change, and notices may arrive in any order.
//!
//! Two backends: [`InProcessBus`] (the default; one relay, or several relay nodes in
//! one process as the tests run them) and [`NatsBus`] (NATS JetStream, `waybill serve
//! --nats URL`, for nodes on several machines).

mod nats;

pub use nats::NatsBus;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use waybill_core::sync::CommitNotice;

/// Notices waiting for the relay thread before the oldest are dropped (a lagging
/// node then catches up from the log head at its next tick).
const BACKLOG: usize = 4096;

/// Why a bus could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The NATS server could not be reached or refused the connection.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URL given.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// JetStream refused to create or open the stream or its consumer.
    #[error("NATS JetStream: {0}")]
    JetStream(String),
}

/// Carries commit notices between relay nodes sharing a store.
pub trait Bus: std::fmt::Debug + Send + Sync + 'static {
    /// Announce a commit of this node. Never blocks; delivery is best effort.
    fn publish(&self, notice: CommitNotice);

    /// Notices from the other nodes (never this node's own), as they arrive.
    /// Called once, from within the relay's tokio runtime.
    fn subscribe(&self) -> mpsc::Receiver<CommitNotice>;
}

/// A notice on the wire, with the node that sent it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Envelope {
    node: String,
    #[serde(flatten)]
    notice: CommitNotice,
}

/// A random id for a node, for the life of its process.
fn node_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Hand notices from other nodes to the relay; the oldest are dropped if the relay
/// thread falls far behind.
fn forward(tx: &mpsc::Sender<CommitNotice>, notice: CommitNotice) -> bool {
    match tx.try_send(notice) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!(
                "relay is behind on notices from other nodes; it catches up from the log"
            );
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// Nodes in one process: each [`InProcessBus::join`] is another node on the same bus.
#[derive(Debug, Clone)]
pub struct InProcessBus {
    node: String,
    sender: broadcast::Sender<Envelope>,
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessBus {
    /// A bus with one node on it.
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(BACKLOG);
        Self {
            node: node_id(),
            sender,
        }
    }

    /// Another node on the same bus.
    pub fn join(&self) -> Self {
        Self {
            node: node_id(),
            sender: self.sender.clone(),
        }
    }
}

impl Bus for InProcessBus {
    fn publish(&self, notice: CommitNotice) {
        // No receivers (a single relay) is not an error.
        let _ = self.sender.send(Envelope {
            node: self.node.clone(),
            notice,
        });
    }

    fn subscribe(&self) -> mpsc::Receiver<CommitNotice> {
        let (tx, rx) = mpsc::channel(BACKLOG);
        let mut incoming = self.sender.subscribe();
        let me = self.node.clone();
        tokio::spawn(async move {
            loop {
                match incoming.recv().await {
                    Ok(envelope) if envelope.node == me => {}
                    Ok(envelope) => {
                        if !forward(&tx, envelope.notice) {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "missed notices from other nodes; the log head covers them"
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        rx
    }
}
