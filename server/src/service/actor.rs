//! The relay thread: owns the [`Relay`] state machine, feeds it what connections
//! read, and moves what it produces to each connection's writer while there is
//! room.

use super::close_code;
use super::telemetry::Telemetry;
use crate::bus::Bus;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::oneshot;
use waybill_core::protocol::{ErrorCode, Message, ProtocolError};
use waybill_core::sync::{CommitNotice, ConnId, LogStore, Relay};

/// What connection tasks tell the relay thread.
pub(crate) enum ToActor {
    /// A device opened its stream.
    Connected {
        conn: ConnId,
        /// Where its outgoing messages go (bounded).
        writer: mpsc::Sender<Outbound>,
        /// Set by the relay thread when `writer` was full; the writer clears it and
        /// sends [`ToActor::Drained`] once it has made room.
        blocked: Arc<AtomicBool>,
        /// The connection's span, to record the device in once it is known.
        span: tracing::Span,
    },
    /// A message from a device.
    Message { conn: ConnId, message: Message },
    /// Bytes from a device that are not a message.
    Invalid { conn: ConnId, error: ProtocolError },
    /// The writer has room again.
    Drained { conn: ConnId },
    /// The connection is gone.
    Disconnected { conn: ConnId },
    /// Tell every device the relay is stopping; answer once all have gone.
    Shutdown { done: oneshot::Sender<()> },
    /// Time passes: end sessions whose credential expired or was revoked.
    Tick,
    /// Another relay node sharing the store committed.
    Remote(CommitNotice),
}

/// Most inbox events handled as one step: bounds the latency a group commit adds to
/// the first upload in it.
const MAX_DRAIN: usize = 256;

/// What the relay thread hands a connection's writer.
pub(crate) enum Outbound {
    /// Encode and write. Boxed: tokio's bounded channel allocates a block of 32
    /// slots per connection up front, so a slot costs the relay that much per
    /// idle device (a `Message` inline made it about 6 KiB).
    Message(Box<Message>),
    /// Finish the stream and close the connection with this application code.
    Close(u32),
}

struct Peer {
    writer: mpsc::Sender<Outbound>,
    blocked: Arc<AtomicBool>,
    span: tracing::Span,
    device_known: bool,
    close_code: u32,
    close_sent: bool,
}

pub(crate) struct Actor<S: LogStore> {
    relay: Relay<S>,
    peers: HashMap<ConnId, Peer>,
    shutdown: Option<oneshot::Sender<()>>,
    bus: Arc<dyn Bus>,
    telemetry: Arc<Telemetry>,
}

impl<S: LogStore + 'static> Actor<S> {
    /// Run the relay on a thread of its own; `open` builds it there (a blocking
    /// store is opened off the async runtime). Resolves once it is built, with the
    /// receiver that resolves when it ends (once every sender of `inbox` is gone).
    pub(crate) async fn spawn(
        open: impl FnOnce() -> anyhow::Result<Relay<S>> + Send + 'static,
        mut inbox: mpsc::Receiver<ToActor>,
        bus: Arc<dyn Bus>,
        telemetry: Arc<Telemetry>,
    ) -> anyhow::Result<oneshot::Receiver<()>> {
        let (done, ended) = oneshot::channel();
        let (ready, opened) = oneshot::channel::<anyhow::Result<()>>();
        std::thread::Builder::new()
            .name("waybill-relay".into())
            .spawn(move || {
                let relay = match open() {
                    Ok(relay) => relay,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                let mut actor = Actor {
                    relay,
                    peers: HashMap::new(),
                    shutdown: None,
                    bus,
                    telemetry,
                };
                while let Some(first) = inbox.blocking_recv() {
                    // Whatever else is already waiting is handled with it: runs of
                    // messages go to the relay as one step, so their uploads share
                    // one commit (group commit).
                    let mut events = vec![first];
                    while events.len() < MAX_DRAIN {
                        match inbox.try_recv() {
                            Ok(event) => events.push(event),
                            Err(_) => break,
                        }
                    }
                    actor.on_all(events);
                    actor.announce();
                }
                drop(actor);
                let _ = done.send(());
            })?;
        opened
            .await
            .map_err(|_| anyhow::anyhow!("the relay thread stopped while starting"))??;
        Ok(ended)
    }

    /// Handle events in order; consecutive device messages form one step.
    fn on_all(&mut self, events: Vec<ToActor>) {
        let mut messages = Vec::new();
        for event in events {
            match event {
                ToActor::Message { conn, message } => messages.push((conn, message)),
                other => {
                    self.on_messages(std::mem::take(&mut messages));
                    self.on(other);
                }
            }
        }
        self.on_messages(messages);
    }

    /// Tell the other nodes what this one committed.
    fn announce(&mut self) {
        while let Some(notice) = self.relay.poll_committed() {
            self.bus.publish(notice);
        }
    }

    fn on(&mut self, event: ToActor) {
        match event {
            ToActor::Connected {
                conn,
                writer,
                blocked,
                span,
            } => {
                self.relay.connect(conn);
                self.telemetry.connected(conn);
                self.peers.insert(
                    conn,
                    Peer {
                        writer,
                        blocked,
                        span,
                        device_known: false,
                        close_code: close_code::BYE,
                        close_sent: false,
                    },
                );
                if self.shutdown.is_some() {
                    self.relay.shutdown();
                    self.pump(conn);
                }
            }
            ToActor::Message { conn, message } => self.on_message(conn, message),
            ToActor::Invalid { conn, error } => {
                self.in_span(conn, |relay| relay.refuse_input(conn, &error));
                self.pump(conn);
            }
            ToActor::Drained { conn } => self.pump(conn),
            ToActor::Disconnected { conn } => {
                self.relay.disconnect(conn);
                self.telemetry.disconnected(conn);
                self.peers.remove(&conn);
                self.finish_shutdown_if_done();
            }
            ToActor::Tick => {
                self.telemetry
                    .set_head(self.relay.store().head().unwrap_or(0));
                for conn in self.relay.tick(now_ms()) {
                    self.pump(conn);
                }
            }
            ToActor::Remote(notice) => {
                for conn in self.relay.on_remote_commit(&notice) {
                    self.pump(conn);
                }
            }
            ToActor::Shutdown { done } => {
                self.shutdown = Some(done);
                for conn in self.relay.shutdown() {
                    self.pump(conn);
                }
                self.finish_shutdown_if_done();
            }
        }
    }

    /// Several devices' messages as one step of the relay (their uploads are
    /// committed together); one message alone runs in its connection's span.
    fn on_messages(&mut self, mut messages: Vec<(ConnId, Message)>) {
        if messages.len() <= 1 {
            if let Some((conn, message)) = messages.pop() {
                self.on_message(conn, message);
            }
            return;
        }
        let now = now_ms();
        let mut conns = Vec::with_capacity(messages.len());
        for (conn, message) in &messages {
            self.telemetry.inbound(*conn, message);
            conns.push(*conn);
        }
        let woken = {
            let _span = tracing::debug_span!("relay_step", messages = messages.len()).entered();
            self.relay.handle_all(messages, now)
        };
        conns.sort_unstable();
        conns.dedup();
        for conn in conns {
            self.record_device(conn);
        }
        for woken in woken {
            self.pump(woken);
        }
    }

    fn on_message(&mut self, conn: ConnId, message: Message) {
        let now = now_ms();
        self.telemetry.inbound(conn, &message);
        let woken = self.in_span(conn, |relay| relay.handle(conn, message, now));
        self.record_device(conn);
        for woken in woken {
            self.pump(woken);
        }
    }

    /// Run `f` inside the connection's span, so the state machine's logs say which
    /// connection and device they are about.
    fn in_span<T>(&mut self, conn: ConnId, f: impl FnOnce(&mut Relay<S>) -> T) -> T {
        let span = self.peers.get(&conn).map(|p| p.span.clone());
        let _entered = span.as_ref().map(tracing::Span::enter);
        f(&mut self.relay)
    }

    fn record_device(&mut self, conn: ConnId) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if peer.device_known {
            return;
        }
        if let Some(identity) = self.relay.peer(conn) {
            peer.span.record("device", identity.device_id.as_str());
            self.telemetry.identified(conn, identity);
            peer.device_known = true;
        }
    }

    /// Move messages to the connection's writer while it has room; close the
    /// connection once the state machine wants it closed and everything is out.
    fn pump(&mut self, conn: ConnId) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if peer.close_sent {
            return;
        }
        loop {
            let Some(permit) = reserve(&peer.writer, &peer.blocked) else {
                return;
            };
            match self.relay.poll_transmit(conn) {
                Some(message) => {
                    if let Message::Error(error) = &message
                        && error.fatal
                    {
                        peer.close_code = match error.code {
                            ErrorCode::ShuttingDown => close_code::SHUTTING_DOWN,
                            _ => close_code::REFUSED,
                        };
                    }
                    self.telemetry.outbound(conn, &message);
                    permit.send(Outbound::Message(Box::new(message)));
                }
                None => {
                    if self.relay.wants_close(conn) {
                        permit.send(Outbound::Close(peer.close_code));
                        peer.close_sent = true;
                    }
                    return;
                }
            }
        }
    }

    fn finish_shutdown_if_done(&mut self) {
        if self.peers.is_empty()
            && let Some(done) = self.shutdown.take()
        {
            let _ = done.send(());
        }
    }
}

/// Room for one more message, if the writer has it. When it has not, the writer is
/// asked to say when it has drained; the second try closes the race with a
/// writer that made room just before the flag was set.
fn reserve<'a>(
    writer: &'a mpsc::Sender<Outbound>,
    blocked: &AtomicBool,
) -> Option<mpsc::Permit<'a, Outbound>> {
    match writer.try_reserve() {
        Ok(permit) => Some(permit),
        Err(TrySendError::Closed(())) => None,
        Err(TrySendError::Full(())) => {
            blocked.store(true, Ordering::SeqCst);
            writer.try_reserve().ok()
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
