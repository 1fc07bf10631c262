//! One QUIC connection to the relay carrying one framed bidirectional stream.
//!
//! Reads run in their own task that reassembles frames and hands decoded messages
//! over a small bounded channel: receiving is then cancel-safe (the sync loop waits
//! on it together with local writes and a stop signal), and QUIC flow control slows
//! the relay down when the device falls behind applying pages.

use super::error::NetError;
use super::tls::{self, TlsError};
use crate::credential::Credential;
use crate::protocol::{self, DEFAULT_MAX_FRAME, FrameDecoder, Message, ProtocolError, WireError};
use crate::sync::ClientSession;
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Server name sent when the address has no usable host part; the pinning
/// verifier ignores names anyway.
const FALLBACK_SERVER_NAME: &str = "waybill-relay";
/// Decoded messages buffered between the reader task and the sync loop.
const INBOX: usize = 4;
/// How long a goodbye may take to be acknowledged before the connection closes.
const GOODBYE_WAIT: Duration = Duration::from_secs(1);

/// Application close codes, so either side's logs tell an orderly close from a
/// failure.
pub(crate) mod close_code {
    /// Orderly close after `Bye`.
    pub const BYE: u32 = 0;
    /// Closed after a protocol error.
    pub const PROTOCOL_ERROR: u32 = 1;
}

/// What the reader task hands over.
pub(crate) enum Inbound {
    /// A message and the size of its frame.
    Message(Message, usize),
    /// Bytes that are not a message; nothing more is read.
    Invalid(ProtocolError),
    /// The relay finished its stream.
    Finished,
    /// The connection broke.
    Lost(String),
}

/// Bytes and messages moved on a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    /// Automerge change bytes carried in `Upload`s written.
    pub change_bytes_sent: u64,
    /// Automerge change bytes carried in `Changes` read.
    pub change_bytes_received: u64,
}

/// An open connection to the relay.
pub(crate) struct Link {
    pub(crate) addr: String,
    endpoint: Endpoint,
    connection: Connection,
    send: SendStream,
    inbox: mpsc::Receiver<Inbound>,
    reader: JoinHandle<()>,
    pub(crate) counters: Counters,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Link {
    /// Connect to `addr`, pinning the certificate in the credential, and open the
    /// session's stream.
    pub(crate) async fn connect(credential: &Credential, addr: &str) -> Result<Self, NetError> {
        let pinned = credential.body.relay_cert_der()?;
        let config = tls::client_config(&pinned).map_err(|source| NetError::Tls {
            addr: addr.to_owned(),
            source,
        })?;
        let target = resolve(addr).await?;
        let bind: SocketAddr = if target.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let connect_error = |reason: String| NetError::Connect {
            addr: addr.to_owned(),
            reason,
        };
        let mut endpoint = super::endpoint::bind(bind, None)
            .map_err(|e| connect_error(format!("no UDP socket: {e}")))?;
        endpoint.set_default_client_config(config);
        let connecting = endpoint
            .connect(target, server_name(addr))
            .map_err(|e| connect_error(e.to_string()))?;
        let connection = connecting
            .await
            .map_err(|e| handshake_error(addr, e.to_string()))?;
        let (send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let (tx, inbox) = mpsc::channel(INBOX);
        let reader = tokio::spawn(read_frames(recv, tx));
        Ok(Self {
            addr: addr.to_owned(),
            endpoint,
            connection,
            send,
            inbox,
            reader,
            counters: Counters::default(),
        })
    }

    /// Write one message.
    pub(crate) async fn send(&mut self, message: &Message) -> Result<(), NetError> {
        let frame =
            protocol::encode(message, DEFAULT_MAX_FRAME).map_err(|source| NetError::Protocol {
                addr: self.addr.clone(),
                source,
            })?;
        self.send
            .write_all(&frame)
            .await
            .map_err(|e| self.lost(e.to_string()))?;
        self.counters.bytes_sent += frame.len() as u64;
        self.counters.messages_sent += 1;
        if let Message::Upload(upload) = message {
            self.counters.change_bytes_sent += upload
                .changes
                .iter()
                .map(|c| c.bytes.len() as u64)
                .sum::<u64>();
        }
        Ok(())
    }

    /// Write everything the session has queued; returns how many messages.
    pub(crate) async fn flush(&mut self, session: &mut ClientSession) -> Result<u64, NetError> {
        let mut written = 0;
        while let Some(message) = session.poll_transmit() {
            self.send(&message).await?;
            written += 1;
        }
        Ok(written)
    }

    /// The next thing the relay sent. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> Inbound {
        match self.inbox.recv().await {
            Some(Inbound::Message(message, size)) => {
                self.counters.bytes_received += size as u64;
                self.counters.messages_received += 1;
                self.counters.change_bytes_received += match &message {
                    Message::Changes(changes) => {
                        changes.entries.iter().map(|e| e.bytes.len() as u64).sum()
                    }
                    Message::Snapshots(snapshots) => {
                        snapshots.docs.iter().map(|d| d.bytes.len() as u64).sum()
                    }
                    _ => 0,
                };
                Inbound::Message(message, size)
            }
            Some(other) => other,
            None => Inbound::Lost("the reader stopped".into()),
        }
    }

    /// The relay sent bytes that are not a message: tell it why, then close.
    pub(crate) async fn refuse(mut self, error: ProtocolError) -> NetError {
        tracing::warn!(%error, "the relay sent an undecodable frame");
        let message = Message::Error(WireError {
            code: error.code(),
            message: error.to_string(),
            fatal: true,
        });
        // Best effort: the connection is closed either way.
        let _ = self.send(&message).await;
        let addr = self.addr.clone();
        self.close(close_code::PROTOCOL_ERROR, b"protocol error")
            .await;
        NetError::Protocol {
            addr,
            source: error,
        }
    }

    /// Finish the stream, give the relay a moment to acknowledge what was written
    /// (the goodbye), then close the connection and let it drain.
    pub(crate) async fn close(mut self, code: u32, reason: &[u8]) {
        if self.send.finish().is_ok() {
            let _ = tokio::time::timeout(GOODBYE_WAIT, self.send.stopped()).await;
        }
        self.connection.close(VarInt::from_u32(code), reason);
        let _ = tokio::time::timeout(GOODBYE_WAIT, self.endpoint.wait_idle()).await;
    }

    fn lost(&self, reason: String) -> NetError {
        NetError::Connection {
            addr: self.addr.clone(),
            reason,
        }
    }
}

/// Reassemble frames and decode them until the stream ends or breaks.
async fn read_frames(mut recv: RecvStream, tx: mpsc::Sender<Inbound>) {
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let last = match recv.read(&mut buf).await {
            Ok(Some(n)) => {
                decoder.push(&buf[..n]);
                None
            }
            Ok(None) => Some(Inbound::Finished),
            Err(e) => Some(Inbound::Lost(e.to_string())),
        };
        if let Err(error) = forward_frames(&mut decoder, &tx).await {
            let _ = tx.send(Inbound::Invalid(error)).await;
            return;
        }
        if let Some(last) = last {
            let _ = tx.send(last).await;
            return;
        }
    }
}

/// Send every whole frame the decoder holds; stops at the first undecodable one.
async fn forward_frames(
    decoder: &mut FrameDecoder,
    tx: &mpsc::Sender<Inbound>,
) -> Result<(), ProtocolError> {
    while let Some(payload) = decoder.next_frame()? {
        let message = protocol::decode(&payload)?;
        if tx
            .send(Inbound::Message(message, payload.len() + 4))
            .await
            .is_err()
        {
            break;
        }
    }
    Ok(())
}

/// The first address `addr` resolves to.
async fn resolve(addr: &str) -> Result<SocketAddr, NetError> {
    let error = |reason: String| NetError::Connect {
        addr: addr.to_owned(),
        reason,
    };
    let mut found = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| error(format!("cannot resolve the address: {e}")))?;
    found
        .next()
        .ok_or_else(|| error("the address resolves to nothing".into()))
}

/// The host part of `host:port` (brackets removed), for TLS's server name.
fn server_name(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        FALLBACK_SERVER_NAME
    } else {
        host
    }
}

/// A failed handshake: a pin mismatch is reported as such, anything else as
/// unreachable.
fn handshake_error(addr: &str, reason: String) -> NetError {
    if reason.contains(&TlsError::PinMismatch.to_string()) {
        NetError::Tls {
            addr: addr.to_owned(),
            source: TlsError::PinMismatch,
        }
    } else {
        NetError::Connect {
            addr: addr.to_owned(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host_part() {
        assert_eq!(server_name("relay.example:4433"), "relay.example");
        assert_eq!(server_name("127.0.0.1:4433"), "127.0.0.1");
        assert_eq!(server_name("[::1]:4433"), "::1");
        assert_eq!(server_name(":4433"), FALLBACK_SERVER_NAME);
    }
}
