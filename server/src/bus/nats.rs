//! The NATS JetStream bus: notices go to one subject per deployment, kept a short
//! while in a memory stream; each node reads the stream from the moment it starts
//! with an ordered consumer (JetStream redelivers what a briefly disconnected node
//! missed, in order).

use super::{BACKLOG, Bus, BusError, Envelope, forward, node_id};
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;
use waybill_core::sync::CommitNotice;

/// How long JetStream keeps a notice (a node away longer catches up from the log).
const KEEP: Duration = Duration::from_secs(15 * 60);

/// Relay nodes on several machines, linked by NATS JetStream.
pub struct NatsBus {
    node: String,
    subject: String,
    outgoing: mpsc::UnboundedSender<Envelope>,
    stream: stream::Stream,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("node", &self.node)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl NatsBus {
    /// Connect to NATS at `url` and open (or create) the deployment's stream. Every
    /// node of a deployment (one relay id) shares it.
    pub async fn connect(url: &str, relay_id: &str) -> Result<Self, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name("waybill-relay")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| BusError::Connect {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        // `retry_on_initial_connect` returns at once: wait briefly for a first
        // connection so a wrong URL is reported at start, not silently retried.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while client.connection_state() != async_nats::connection::State::Connected {
            if tokio::time::Instant::now() >= deadline {
                return Err(BusError::Connect {
                    url: url.to_owned(),
                    reason: "no connection within 5 s".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let js = jetstream::new(client);
        let name = names(relay_id);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: name.stream.clone(),
                subjects: vec![name.subject.clone()],
                storage: stream::StorageType::Memory,
                max_age: KEEP,
                max_messages: 1_000_000,
                discard: stream::DiscardPolicy::Old,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::JetStream(format!("stream {}: {e}", name.stream)))?;
        let (outgoing, mut queue) = mpsc::unbounded_channel::<Envelope>();
        let subject = name.subject.clone();
        tokio::spawn(async move {
            while let Some(envelope) = queue.recv().await {
                let Ok(payload) = serde_json::to_vec(&envelope) else {
                    continue;
                };
                match js.publish(subject.clone(), payload.into()).await {
                    Ok(ack) => {
                        if let Err(e) = ack.await {
                            tracing::warn!(error = %e, "JetStream did not store a commit notice; other nodes catch up at their next tick");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot publish a commit notice; other nodes catch up at their next tick");
                    }
                }
            }
        });
        Ok(Self {
            node: node_id(),
            subject: name.subject,
            outgoing,
            stream,
        })
    }
}

struct Names {
    stream: String,
    subject: String,
}

/// Stream and subject names for a relay id (only letters, digits, `-` and `_`).
fn names(relay_id: &str) -> Names {
    let clean: String = relay_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Names {
        stream: format!("WAYBILL_{clean}"),
        subject: format!("waybill.{clean}.commits"),
    }
}

impl Bus for NatsBus {
    fn publish(&self, notice: CommitNotice) {
        let _ = self.outgoing.send(Envelope {
            node: self.node.clone(),
            notice,
        });
    }

    fn subscribe(&self) -> mpsc::Receiver<CommitNotice> {
        let (tx, rx) = mpsc::channel(BACKLOG);
        let stream = self.stream.clone();
        let me = self.node.clone();
        tokio::spawn(async move {
            loop {
                match follow(&stream, &me, &tx).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the JetStream consumer; reopening it");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        rx
    }
}

/// Read notices from now on and hand those of other nodes to the relay. Returns
/// `Ok` once the relay has stopped listening.
async fn follow(
    stream: &stream::Stream,
    me: &str,
    tx: &mpsc::Sender<CommitNotice>,
) -> Result<(), String> {
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| e.to_string())?;
        match serde_json::from_slice::<Envelope>(&message.payload) {
            Ok(envelope) if envelope.node == me => {}
            Ok(envelope) => {
                if !forward(tx, envelope.notice) {
                    return Ok(());
                }
            }
            Err(e) => tracing::warn!(error = %e, "ignoring a malformed commit notice"),
        }
    }
    Err("the consumer's message stream ended".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_for_jetstream() {
        let n = names("relay.eu 1*>");
        assert_eq!(n.stream, "WAYBILL_relay_eu_1__");
        assert_eq!(n.subject, "waybill.relay_eu_1__.commits");
    }
}
