//! One device connection, one task: a reader that decodes frames for the relay
//! thread and a writer that encodes and writes what the relay thread hands it,
//! polled side by side.

use super::actor::{Outbound, ToActor};
use super::close_code;
use super::telemetry::Telemetry;
use futures_util::future::{self, Either};
use quinn::{Connection, Incoming, RecvStream, SendStream, VarInt};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;
use tracing::Instrument;
use waybill_core::protocol::{self, DEFAULT_MAX_FRAME, FrameDecoder, Message, ProtocolError};
use waybill_core::sync::ConnId;

/// How long the QUIC/TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a device may take to open its stream after connecting.
const STREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a device may take to send its first message.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued for one device's writer. A catch-up page is up to about
/// `RelayConfig::page_bytes`, so this bounds the memory a slow device costs.
const OUTBOUND: usize = 4;
/// How long the last frames may take to be acknowledged before closing.
const GOODBYE_WAIT: Duration = Duration::from_secs(2);

/// Serve one incoming connection until it ends.
///
/// The task is allocated once, at the size of its largest state, and lives as
/// long as the device stays connected: what only the handshake or the goodbye
/// needs is boxed (`incoming`, the waits in [`refuse`] and [`Writer::close`]) so
/// that an idle connection does not carry it.
pub(crate) async fn run(
    incoming: Box<Incoming>,
    conn: ConnId,
    inbox: mpsc::Sender<ToActor>,
    telemetry: Arc<Telemetry>,
) {
    let span = tracing::info_span!(
        "conn",
        conn,
        remote = %incoming.remote_address(),
        device = tracing::field::Empty
    );
    serve(incoming, conn, inbox, span.clone(), telemetry)
        .instrument(span)
        .await;
}

async fn serve(
    incoming: Box<Incoming>,
    conn: ConnId,
    inbox: mpsc::Sender<ToActor>,
    span: tracing::Span,
    telemetry: Arc<Telemetry>,
) {
    let handshaking = {
        // Moved out in a scope of its own, so that the box is freed now, not when
        // the connection ends.
        let incoming = incoming;
        Box::pin(handshake(*incoming))
    };
    let Some(connection) = handshaking.await else {
        return;
    };
    let Some((send, recv)) = Box::pin(open_stream(&connection)).await else {
        return;
    };
    let (writer, outbound) = mpsc::channel(OUTBOUND);
    let blocked = Arc::new(AtomicBool::new(false));
    let connected = ToActor::Connected {
        conn,
        writer,
        blocked: Arc::clone(&blocked),
        span,
    };
    if !hand_over(&inbox, connected).await {
        connection.close(
            VarInt::from_u32(close_code::SHUTTING_DOWN),
            b"relay stopping",
        );
        return;
    }
    tracing::debug!("device connected");
    let writer = Writer {
        conn,
        connection: connection.clone(),
        send,
        blocked,
        inbox: inbox.clone(),
        telemetry: Arc::clone(&telemetry),
    };
    // Reader and writer share this one task (one task cell per connection, not
    // two): each idle connection costs less. The writer still ends on its own,
    // once the relay thread lets go of the connection after `Disconnected`.
    let read = async {
        read_frames(conn, &connection, recv, &inbox, &telemetry).await;
        let _ = hand_over(&inbox, ToActor::Disconnected { conn }).await;
        tracing::debug!("device disconnected");
    };
    tokio::join!(read, writer.run(outbound));
}

async fn handshake(incoming: Incoming) -> Option<Connection> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(connection)) => Some(connection),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("handshake timed out");
            None
        }
    }
}

async fn open_stream(connection: &Connection) -> Option<(SendStream, RecvStream)> {
    match tokio::time::timeout(STREAM_TIMEOUT, connection.accept_bi()).await {
        Ok(Ok(streams)) => Some(streams),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "connection ended before opening a stream");
            None
        }
        Err(_) => {
            tracing::debug!("no stream opened in time");
            connection.close(VarInt::from_u32(close_code::REFUSED), b"no stream opened");
            None
        }
    }
}

/// Read frames until the stream ends, the connection breaks, or the device sends
/// something that is not a message (the relay thread then answers with a typed
/// error and closes; this waits for that). A device that opens its stream but
/// says nothing is refused, so idle sockets cannot pile up.
/// Most bytes taken from the stream at once.
const READ_CHUNK: usize = 64 * 1024;

async fn read_frames(
    conn: ConnId,
    connection: &Connection,
    mut recv: RecvStream,
    inbox: &mpsc::Sender<ToActor>,
    telemetry: &Telemetry,
) {
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let hello_by = Instant::now() + HELLO_TIMEOUT;
    let mut greeted = false;
    loop {
        // Chunks are quinn's own buffers: an idle connection holds no read buffer.
        let read = if greeted {
            recv.read_chunk(READ_CHUNK, true).await
        } else {
            match tokio::time::timeout_at(hello_by, recv.read_chunk(READ_CHUNK, true)).await {
                Ok(read) => read,
                Err(_) => {
                    let error = ProtocolError::Unexpected {
                        expected: "hello",
                        got: "nothing in time",
                    };
                    return refuse(conn, connection, inbox, error).await;
                }
            }
        };
        match read {
            Ok(Some(chunk)) => {
                telemetry.received(chunk.bytes.len());
                decoder.push(&chunk.bytes);
            }
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "connection lost");
                return;
            }
        }
        loop {
            match next_message(&mut decoder) {
                Ok(Some(message)) => {
                    greeted = true;
                    if !hand_over(inbox, ToActor::Message { conn, message }).await {
                        return;
                    }
                }
                Ok(None) => break,
                Err(error) => return Box::pin(refuse(conn, connection, inbox, error)).await,
            }
        }
        if decoder.buffered() == 0 {
            // Nothing partial is left: let go of the buffer (an idle connection
            // would otherwise keep the one its hello was decoded in).
            decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        }
    }
}

/// Hand the relay thread an event; false once it has stopped. Without waiting
/// when its inbox has room; otherwise the wait is boxed, because a pending send
/// holds the event inline and would make every connection's task that much larger.
fn hand_over(inbox: &mpsc::Sender<ToActor>, event: ToActor) -> HandOver<'_> {
    match inbox.try_send(event) {
        Ok(()) => Either::Left(future::ready(true)),
        Err(TrySendError::Closed(_)) => Either::Left(future::ready(false)),
        Err(TrySendError::Full(event)) => {
            Either::Right(Box::pin(async move { inbox.send(event).await.is_ok() }))
        }
    }
}

type HandOver<'a> = Either<future::Ready<bool>, Pin<Box<dyn Future<Output = bool> + Send + 'a>>>;

/// Hand the relay thread what was wrong with the input, then wait for the writer
/// to send the error and close (or for the idle timeout).
async fn refuse(
    conn: ConnId,
    connection: &Connection,
    inbox: &mpsc::Sender<ToActor>,
    error: ProtocolError,
) {
    if hand_over(inbox, ToActor::Invalid { conn, error }).await {
        connection.closed().await;
    }
}

fn next_message(decoder: &mut FrameDecoder) -> Result<Option<Message>, ProtocolError> {
    decoder
        .next_frame()?
        .map(|payload| protocol::decode(&payload))
        .transpose()
}

/// Writes what the relay thread hands over, in order, then closes.
struct Writer {
    conn: ConnId,
    connection: Connection,
    send: SendStream,
    blocked: Arc<AtomicBool>,
    inbox: mpsc::Sender<ToActor>,
    telemetry: Arc<Telemetry>,
}

impl Writer {
    async fn run(mut self, mut outbound: mpsc::Receiver<Outbound>) {
        while let Some(out) = outbound.recv().await {
            match out {
                Outbound::Message(message) => {
                    if !self.write(&message).await {
                        return;
                    }
                }
                Outbound::Close(code) => return Box::pin(self.close(code)).await,
            }
        }
        // The relay thread forgot the connection (it is gone or said goodbye).
        Box::pin(self.close(close_code::BYE)).await;
    }

    /// Write one message; false if the connection cannot be written to any more.
    async fn write(&mut self, message: &Message) -> bool {
        let frame = match protocol::encode(message, DEFAULT_MAX_FRAME) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::error!(error = %e, message = message.name(), "cannot encode a message");
                self.connection
                    .close(VarInt::from_u32(close_code::INTERNAL), b"internal error");
                return false;
            }
        };
        if let Err(e) = self.send.write_all(&frame).await {
            tracing::debug!(error = %e, "cannot write to the device");
            return false;
        }
        self.telemetry.sent(frame.len());
        if self.blocked.swap(false, Ordering::SeqCst)
            && !hand_over(&self.inbox, ToActor::Drained { conn: self.conn }).await
        {
            return false;
        }
        true
    }

    /// Finish the stream, give the device a moment to receive the last frames
    /// (a typed error, say), then close.
    async fn close(mut self, code: u32) {
        if self.send.finish().is_ok() {
            let _ = tokio::time::timeout(GOODBYE_WAIT, self.send.stopped()).await;
        }
        let reason: &[u8] = match code {
            close_code::BYE => b"bye",
            close_code::SHUTTING_DOWN => b"relay shutting down",
            _ => b"refused",
        };
        self.connection.close(VarInt::from_u32(code), reason);
    }
}
