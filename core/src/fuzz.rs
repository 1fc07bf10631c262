//! Entry points shared by the fuzz targets (`fuzz/`) and the test that replays
//! their committed crash inputs (`tests/tests/fuzz_corpus.rs`). Each feeds
//! untrusted bytes to one decoder; any outcome but a panic is a pass.

use crate::identity::DeviceIdentity;
use crate::ids::{DocId, DocKind};
use crate::model::{NewOrder, document};
use crate::replica::{Replica, ReplicaOptions};

/// Remote change bytes into a replica (the first byte picks the document kind).
pub fn apply_remote(data: &[u8]) {
    let Ok(replica) = Replica::open_in_memory(
        DeviceIdentity::dispatcher("fuzz"),
        ReplicaOptions::default(),
    ) else {
        return;
    };
    let (kind, rest) = match data.split_first() {
        Some((b, rest)) if b % 2 == 0 => (DocKind::Order, rest),
        Some((_, rest)) => (DocKind::Delivery, rest),
        None => (DocKind::Order, data),
    };
    let id = DocId::new(kind);
    let _ = replica.apply_remote(&id, &[rest.to_vec()]);
    // Whatever happened, the replica must still read and verify.
    let _ = replica.doc_ids();
    let _ = replica.verify();
}

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
