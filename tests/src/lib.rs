//! Shared support for the cross-crate tests: credentials from a test authority,
//! sample orders, and a loop that delivers messages between sans-IO sessions.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod loopback;
pub mod scale_out;

use waybill_core::credential::{CredentialBody, CredentialIssuer};
use waybill_core::model::NewOrder;
use waybill_core::protocol::{self, Message};
use waybill_core::replica::{Replica, ReplicaOptions};
use waybill_core::sync::{ClientConfig, ClientSession, ConnId, LogStore, Relay, SyncEvent};
use waybill_core::{DeviceIdentity, Role};

/// Far in the future: credentials that do not expire during a test.
pub const YEAR_3000_MS: i64 = 32_503_680_000_000;

/// A signed credential for `identity`, as `waybill enroll` would issue it.
pub fn credential(
    issuer: &CredentialIssuer,
    identity: &DeviceIdentity,
    expires_ms: i64,
) -> Vec<u8> {
    issuer
        .issue(CredentialBody {
            format: 1,
            device_id: identity.device_id.clone(),
            role: identity.role,
            store_id: identity.store_id.clone(),
            courier_id: identity.courier_id.clone(),
            relay_id: "test-relay".into(),
            relay_addr: "127.0.0.1:4433".into(),
            relay_cert: String::new(),
            issued_ms: 0,
            expires_ms,
        })
        .to_bytes()
}

/// A sample order for store `store`, numbered `n`.
pub fn order(store: &str, n: usize) -> NewOrder {
    serde_json::from_value(serde_json::json!({
        "number": format!("{store}-{n:06}"), "channel": "web", "store": store,
        "customer": {"id": format!("c-{n}"), "name": format!("Customer {n}"),
                     "phone": "+98 912 000 0000", "address": "12 Vali-Asr St, Tehran"},
        "currency": "IRR", "fulfilment": "delivery",
        "lines": [{"sku": "TEA-500", "name": "Black tea 500 g", "qty": 2, "unit_price": 1_850_000},
                  {"sku": "SUG-1K", "name": "Sugar 1 kg", "qty": 1, "unit_price": 900_000},
                  {"sku": "RCE-5K", "name": "Rice 5 kg", "qty": 1, "unit_price": 4_200_000}]
    }))
    .unwrap()
}

/// A device in an in-process test: its replica and, while connected, its session.
pub struct Device {
    pub replica: Replica,
    pub credential: Vec<u8>,
    pub session: Option<(ConnId, ClientSession)>,
    pub events: Vec<SyncEvent>,
    /// How its sessions are configured (the protocol version it offers, batches).
    pub client: ClientConfig,
}

impl Device {
    /// A device with an in-memory store and a credential from `issuer`.
    pub fn new(issuer: &CredentialIssuer, identity: DeviceIdentity) -> Self {
        let credential = credential(issuer, &identity, YEAR_3000_MS);
        let replica = Replica::open_in_memory(identity, ReplicaOptions::default()).unwrap();
        Self {
            replica,
            credential,
            session: None,
            events: Vec::new(),
            client: ClientConfig::default(),
        }
    }

    /// A store tablet, a courier phone or a dispatcher console.
    pub fn with_role(issuer: &CredentialIssuer, device: &str, role: Role, id: &str) -> Self {
        let identity = match role {
            Role::Store => DeviceIdentity::store(device, id),
            Role::Courier => DeviceIdentity::courier(device, id),
            Role::Dispatcher => DeviceIdentity::dispatcher(device),
        };
        Self::new(issuer, identity)
    }

    /// Open a session with the relay on connection `conn`.
    pub fn connect<S: LogStore>(&mut self, relay: &mut Relay<S>, conn: ConnId) {
        relay.connect(conn);
        let mut session = ClientSession::new(self.credential.clone(), self.client.clone());
        session.start(&self.replica).unwrap();
        self.session = Some((conn, session));
    }

    /// Drop the connection (both sides forget it).
    pub fn disconnect<S: LogStore>(&mut self, relay: &mut Relay<S>) {
        if let Some((conn, _)) = self.session.take() {
            relay.disconnect(conn);
        }
    }

    /// Every document it holds with its heads: two devices that converged hold
    /// equal lists.
    pub fn heads(&self) -> Vec<(String, Vec<String>)> {
        self.replica
            .doc_ids()
            .unwrap()
            .into_iter()
            .map(|id| (id.to_string(), self.replica.heads(&id).unwrap()))
            .collect()
    }

    /// New changes its sessions reported receiving (`SyncEvent::Received`).
    pub fn received_changes(&self) -> usize {
        self.events
            .iter()
            .map(|e| match e {
                SyncEvent::Received { changes, .. } => *changes,
                _ => 0,
            })
            .sum()
    }

    /// Tell the session about local writes.
    pub fn wrote(&mut self) {
        if let Some((_, session)) = self.session.as_mut() {
            session.local_changes(&self.replica).unwrap();
        }
    }
}

/// Encode and decode every message on the way, as a real transport would.
fn over_the_wire(message: &Message) -> Message {
    let frame = protocol::encode(message, protocol::DEFAULT_MAX_FRAME).unwrap();
    protocol::decode(&frame[4..]).unwrap()
}

/// Deliver messages both ways, reliably and in order, until nothing moves.
/// Returns the number of messages delivered.
pub fn pump<S: LogStore>(relay: &mut Relay<S>, devices: &mut [&mut Device], now_ms: i64) -> usize {
    let mut delivered = 0;
    loop {
        let mut moved = false;
        for device in devices.iter_mut() {
            let Device {
                replica,
                session,
                events,
                ..
            } = &mut **device;
            let Some((conn, client)) = session.as_mut() else {
                continue;
            };
            while let Some(message) = client.poll_transmit() {
                relay.handle(*conn, over_the_wire(&message), now_ms);
                delivered += 1;
                moved = true;
            }
            while let Some(message) = relay.poll_transmit(*conn) {
                if let Ok(new) = client.handle(replica, over_the_wire(&message)) {
                    events.extend(new);
                }
                delivered += 1;
                moved = true;
            }
            if relay.wants_close(*conn) || client.is_closed() {
                relay.disconnect(*conn);
                *session = None;
            }
        }
        if !moved {
            return delivered;
        }
    }
}

/// What a device received in one session.
#[derive(Debug, Default)]
pub struct Received {
    /// Messages from the relay.
    pub messages: usize,
    /// Log entries in `Changes` messages.
    pub entries: usize,
    /// Documents sent whole in `Snapshots` messages.
    pub snapshots: usize,
    /// Documents that entries or snapshots carried.
    pub documents: std::collections::BTreeSet<String>,
    /// Encoded bytes from the relay.
    pub bytes: usize,
}

/// Run one device's session to quiescence, counting what the relay sent it.
pub fn session_counting<S: LogStore>(
    relay: &mut Relay<S>,
    device: &mut Device,
    conn: ConnId,
    now_ms: i64,
) -> Received {
    device.connect(relay, conn);
    let mut got = Received::default();
    let (_, mut session) = device.session.take().unwrap();
    loop {
        let mut moved = false;
        while let Some(m) = session.poll_transmit() {
            relay.handle(conn, m, now_ms);
            moved = true;
        }
        while let Some(m) = relay.poll_transmit(conn) {
            got.messages += 1;
            got.bytes += protocol::encode(&m, u32::MAX).unwrap().len();
            match &m {
                Message::Changes(c) => {
                    got.entries += c.entries.len();
                    got.documents
                        .extend(c.entries.iter().map(|e| e.doc_id.clone()));
                }
                Message::Snapshots(s) => {
                    got.snapshots += s.docs.len();
                    got.documents
                        .extend(s.docs.iter().map(|d| d.doc_id.clone()));
                }
                _ => {}
            }
            device
                .events
                .extend(session.handle(&device.replica, m).unwrap());
            moved = true;
        }
        if !moved {
            break;
        }
    }
    assert!(session.is_idle(), "caught up and nothing in flight");
    relay.disconnect(conn);
    got
}
