//! Entry points shared by the fuzz targets (`fuzz/`) and the test that replays
//! their committed crash inputs (`tests/tests/fuzz_corpus.rs`). Each feeds
//! untrusted bytes to one decoder; any outcome but a panic is a pass.

use crate::identity::DeviceIdentity;
use crate::ids::{DocId, DocKind};
use crate::model::{NewOrder, document};
use crate::replica::{Replica, ReplicaOptions};

/// Remote change bytes into a replica. The first byte picks the target: an unknown
/// document, or an order the replica already holds (so the change meets real state).
pub fn apply_remote(data: &[u8]) {
    with_target(data, |replica, id, rest| {
        let _ = replica.apply_remote(id, &[rest.to_vec()]);
    });
}

/// A fresh replica and the document the first byte picks (a new order or delivery
/// id, or an order the replica holds); `feed` gets the rest of the bytes. Whatever
/// it did, the replica must still read, write and verify afterwards.
fn with_target(data: &[u8], feed: impl FnOnce(&Replica, &DocId, &[u8])) {
    let Ok(replica) = Replica::open_in_memory(
        DeviceIdentity::dispatcher("fuzz"),
        ReplicaOptions::default(),
    ) else {
        return;
    };
    let (selector, rest) = data.split_first().map_or((0, data), |(b, rest)| (*b, rest));
    let id = match selector % 3 {
        0 => DocId::new(DocKind::Order),
        1 => DocId::new(DocKind::Delivery),
        _ => match serde_json::from_str::<NewOrder>(SEED_ORDER).map(|o| replica.create_order(&o)) {
            Ok(Ok(id)) => id,
            _ => return,
        },
    };
    feed(&replica, &id, rest);
    let _ = replica.doc_ids();
    let _ = replica.verify();
    let _ = replica.record_event(&id, "confirmed", &Default::default());
}

const SEED_ORDER: &str = r#"{"number": "F-1", "channel": "web", "store": "S1",
  "customer": {"id": "c", "name": "N", "phone": "", "address": "A"},
  "currency": "EUR", "fulfilment": "delivery",
  "lines": [{"sku": "X", "name": "X", "qty": 1, "unit_price": 100}]}"#;

/// Saved document bytes through Automerge and the typed reader.
pub fn load_document(data: &[u8]) {
    if let Ok(doc) = automerge::Automerge::load(data) {
        for kind in [DocKind::Order, DocKind::Delivery] {
            let _ = document::read(&DocId::new(kind), &doc);
        }
    }
}

/// A relay's snapshot (saved document bytes) into a replica, as a never-synced
/// device takes it in. The first byte picks the target: a new order or delivery id,
/// or an order the replica already holds (so the bytes are merged into real state).
pub fn import_snapshot(data: &[u8]) {
    with_target(data, |replica, id, rest| {
        let snapshot = crate::protocol::DocSnapshot {
            doc_id: id.to_string(),
            bytes: rest.to_vec(),
        };
        let _ = replica.import_snapshots(&[snapshot], None);
    });
}

/// An order as an integrator hands it in, as JSON.
pub fn new_order_json(data: &[u8]) {
    if let Ok(order) = serde_json::from_slice::<NewOrder>(data) {
        let _ = order.validate();
    }
}

/// A byte stream from a peer through the frame decoder and message decoder.
pub fn protocol_stream(data: &[u8]) {
    let mut decoder = crate::protocol::FrameDecoder::new(64 * 1024);
    // Feed in uneven pieces, as a network would.
    for piece in data.chunks(7) {
        decoder.push(piece);
        while let Ok(Some(frame)) = decoder.next_frame() {
            if let Ok(message) = crate::protocol::decode(&frame) {
                let _ = crate::protocol::accept_hello(message);
            }
        }
    }
}

/// A device's byte stream into a relay session that has already accepted a valid
/// hello: uploads, per-document sync messages and garbage must all end in a typed
/// error or a normal answer, never a panic, and the relay must keep serving.
pub fn relay_session(data: &[u8]) {
    use crate::protocol::{self, Message};
    use crate::sync::{MemoryLogStore, Relay, RelayConfig};
    let Ok(issuer) = crate::credential::CredentialIssuer::from_secret_bytes(&[7; 32]) else {
        return;
    };
    let credential = issuer.issue(crate::credential::CredentialBody {
        format: 1,
        device_id: "fuzz-device".into(),
        role: crate::Role::Dispatcher,
        store_id: None,
        courier_id: None,
        relay_id: "fuzz".into(),
        relay_addr: "127.0.0.1:4433".into(),
        relay_cert: String::new(),
        issued_ms: 0,
        expires_ms: i64::MAX,
    });
    let mut relay = Relay::new(
        MemoryLogStore::new("fuzz"),
        issuer.verifier(),
        RelayConfig::default(),
    );
    relay.connect(1);
    relay.handle(
        1,
        Message::Hello(protocol::Hello {
            magic: protocol::MAGIC,
            version: protocol::PROTOCOL_VERSION,
            credential: credential.to_bytes(),
            cursor: None,
            client: "fuzz".into(),
        }),
        0,
    );
    let mut decoder = protocol::FrameDecoder::new(64 * 1024);
    decoder.push(data);
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => match protocol::decode(&frame) {
                Ok(message) => {
                    relay.handle(1, message, 0);
                }
                Err(e) => relay.refuse_input(1, &e),
            },
            Ok(None) => break,
            Err(e) => {
                relay.refuse_input(1, &e);
                break;
            }
        }
        while relay.poll_transmit(1).is_some() {}
    }
}

/// A relay's byte stream into a device session: whatever arrives, the device's store
/// stays consistent and nothing panics.
pub fn client_session(data: &[u8]) {
    use crate::protocol;
    use crate::sync::ClientSession;
    let Ok(replica) = crate::Replica::open_in_memory(
        crate::DeviceIdentity::dispatcher("fuzz"),
        crate::replica::ReplicaOptions::default(),
    ) else {
        return;
    };
    let mut session = ClientSession::new(Vec::new(), Default::default());
    if session.start(&replica).is_err() {
        return;
    }
    let mut decoder = protocol::FrameDecoder::new(64 * 1024);
    decoder.push(data);
    while let Ok(Some(frame)) = decoder.next_frame() {
        if let Ok(message) = protocol::decode(&frame)
            && session.handle(&replica, message).is_err()
        {
            break;
        }
        while session.poll_transmit().is_some() {}
    }
}
