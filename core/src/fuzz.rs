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
    let _ = replica.apply_remote(&id, &[rest.to_vec()]);
    // Whatever happened, the replica must still read, write and verify.
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
