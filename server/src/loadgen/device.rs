//! A light simulated device: one QUIC connection speaking the protocol at the
//! frame level, with no replica behind it. It says `Hello`, reads the relay's log
//! until it is caught up, then records when pushed changes arrive. Thousands of
//! them fit in one process; what they cost the relay is what a real device costs
//! it, since the relay cannot tell them apart.

use super::LoadError;
use super::metrics::Traffic;
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use waybill_core::net::{endpoint, tls};
use waybill_core::protocol::{
    self, Cursor, DEFAULT_MAX_FRAME, FrameDecoder, Hello, MAGIC, Message, PROTOCOL_VERSION, Upload,
    UploadChange,
};

/// A pushed `Changes` message that reached a device.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// Which device (its index in the fleet).
    pub device: usize,
    /// When the frame was decoded.
    pub at: Instant,
    /// Log entries it carried.
    pub entries: usize,
}

/// Client endpoints for a fleet of light devices, each pinned to the relay's
/// certificate. Devices are spread over several endpoints (UDP sockets) so that
/// one endpoint driver task does not serialise the whole fleet.
pub struct Fleet {
    endpoints: Vec<Endpoint>,
    /// Where the relay listens.
    pub addr: SocketAddr,
}

impl Fleet {
    /// Endpoints for about `devices` devices.
    pub fn new(addr: SocketAddr, cert_der: &[u8], devices: usize) -> Result<Self, LoadError> {
        let config = tls::client_config(cert_der).map_err(|e| LoadError::Setup(e.to_string()))?;
        let count = devices.div_ceil(100).clamp(1, 64);
        let mut endpoints = Vec::with_capacity(count);
        for _ in 0..count {
            let bind: SocketAddr = (std::net::Ipv4Addr::LOCALHOST, 0).into();
            let mut endpoint =
                endpoint::bind(bind, None).map_err(|e| LoadError::Setup(e.to_string()))?;
            endpoint.set_default_client_config(config.clone());
            endpoints.push(endpoint);
        }
        Ok(Self { endpoints, addr })
    }

    /// Connect device `index` with `credential` from `cursor` and wait until it is
    /// caught up. Pushed changes are reported on `arrivals` afterwards.
    pub async fn connect(
        &self,
        index: usize,
        credential: Vec<u8>,
        cursor: Option<Cursor>,
        arrivals: Option<mpsc::UnboundedSender<Arrival>>,
    ) -> Result<LightDevice, LoadError> {
        let endpoint = &self.endpoints[index % self.endpoints.len()];
        let lost = |e: String| LoadError::Device { index, reason: e };
        let connection = endpoint
            .connect(self.addr, "waybill-relay")
            .map_err(|e| lost(e.to_string()))?
            .await
            .map_err(|e| lost(e.to_string()))?;
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| lost(e.to_string()))?;
        let traffic = Arc::new(Mutex::new((Traffic::default(), Traffic::default())));
        let hello = Message::Hello(Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            credential,
            cursor,
            client: "waybill-bench/light".into(),
        });
        write(&mut send, &hello, &traffic).await.map_err(&lost)?;
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        // Read until the log is caught up.
        let mut caught_up = false;
        let mut head = 0;
        while !caught_up {
            let chunk = recv
                .read_chunk(usize::MAX, true)
                .await
                .map_err(|e| lost(e.to_string()))?
                .ok_or_else(|| lost("the relay closed the stream during catch-up".into()))?;
            decoder.push(&chunk.bytes);
            while let Some(payload) = decoder.next_frame().map_err(|e| lost(e.to_string()))? {
                count_in(&traffic, payload.len());
                match protocol::decode(&payload).map_err(|e| lost(e.to_string()))? {
                    Message::Welcome(welcome) => head = welcome.head,
                    Message::Changes(changes) if changes.caught_up => caught_up = true,
                    Message::Changes(_) | Message::Snapshots(_) => {}
                    Message::Error(error) => {
                        return Err(lost(format!("{:?}: {}", error.code, error.message)));
                    }
                    other => return Err(lost(format!("unexpected {}", other.name()))),
                }
            }
        }
        let (acks_tx, acks) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_pushes(
            index,
            recv,
            decoder,
            Arc::clone(&traffic),
            arrivals,
            acks_tx,
        ));
        Ok(LightDevice {
            connection,
            send,
            reader,
            traffic,
            acks,
            head,
            next_batch: 1,
        })
    }
}

/// A connected, caught-up light device.
pub struct LightDevice {
    connection: Connection,
    send: SendStream,
    reader: JoinHandle<()>,
    traffic: Arc<Mutex<(Traffic, Traffic)>>,
    acks: mpsc::UnboundedReceiver<usize>,
    /// The relay's head in its `Welcome`.
    pub head: u64,
    next_batch: u64,
}

impl LightDevice {
    /// Upload changes (doc id, Automerge bytes) as one batch.
    pub async fn upload(&mut self, changes: Vec<(String, Vec<u8>)>) -> Result<(), LoadError> {
        let batch = self.next_batch;
        self.next_batch += 1;
        let upload = Message::Upload(Upload {
            batch,
            changes: changes
                .into_iter()
                .map(|(doc_id, bytes)| UploadChange { doc_id, bytes })
                .collect(),
        });
        write(&mut self.send, &upload, &self.traffic)
            .await
            .map_err(|reason| LoadError::Device { index: 0, reason })
    }

    /// Wait for the next `UploadAck`; returns how many changes it accepted.
    pub async fn ack(&mut self) -> Option<usize> {
        self.acks.recv().await
    }

    /// Frames sent and received so far.
    pub fn traffic(&self) -> (Traffic, Traffic) {
        self.traffic.lock().map(|t| *t).unwrap_or_default()
    }

    /// Say goodbye and close.
    pub async fn close(mut self) {
        let _ = write(&mut self.send, &Message::Bye, &self.traffic).await;
        let _ = self.send.finish();
        self.connection.close(VarInt::from_u32(0), b"bye");
        self.reader.abort();
    }
}

async fn write(
    send: &mut SendStream,
    message: &Message,
    traffic: &Mutex<(Traffic, Traffic)>,
) -> Result<(), String> {
    let frame = protocol::encode(message, DEFAULT_MAX_FRAME).map_err(|e| e.to_string())?;
    send.write_all(&frame).await.map_err(|e| e.to_string())?;
    if let Ok(mut t) = traffic.lock() {
        t.0.frame(frame.len());
    }
    Ok(())
}

fn count_in(traffic: &Mutex<(Traffic, Traffic)>, payload: usize) {
    if let Ok(mut t) = traffic.lock() {
        t.1.frame(payload + 4);
    }
}

/// After catch-up: report every pushed `Changes` with entries, and every ack.
async fn read_pushes(
    device: usize,
    mut recv: RecvStream,
    mut decoder: FrameDecoder,
    traffic: Arc<Mutex<(Traffic, Traffic)>>,
    arrivals: Option<mpsc::UnboundedSender<Arrival>>,
    acks: mpsc::UnboundedSender<usize>,
) {
    loop {
        // Chunks rather than a buffer per device: thousands of idle devices wait here.
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => decoder.push(&chunk.bytes),
            _ => return,
        }
        while let Ok(Some(payload)) = decoder.next_frame() {
            count_in(&traffic, payload.len());
            match protocol::decode(&payload) {
                Ok(Message::Changes(changes)) if !changes.entries.is_empty() => {
                    if let Some(arrivals) = &arrivals {
                        let _ = arrivals.send(Arrival {
                            device,
                            at: Instant::now(),
                            entries: changes.entries.len(),
                        });
                    }
                }
                Ok(Message::UploadAck(ack)) => {
                    let _ = acks.send(ack.accepted.len());
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }
}
