//! Group commit: uploads from several devices handled as one relay step
//! (`Relay::handle_all`) share one `LogStore::commit`, and every device is told
//! exactly what it would have been told had its upload been handled alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::credential::{CredentialBody, CredentialIssuer};
use crate::ids::DocId;
use crate::model::{NewDelivery, NewOrder};
use crate::protocol::{ErrorCode, Message, Upload, UploadAck, UploadChange};
use crate::replica::{Replica, ReplicaOptions};
use crate::sync::{ClientSession, LogStore, MemoryLogStore, Relay, RelayConfig};
use crate::{DeviceIdentity, Role};

/// A device: its replica and its session with the relay.
struct Device {
    replica: Replica,
    conn: u64,
    session: ClientSession,
}

impl Device {
    fn with_role(issuer: &CredentialIssuer, device: &str, role: Role, id: &str) -> Self {
        let identity = match role {
            Role::Store => DeviceIdentity::store(device, id),
            Role::Courier => DeviceIdentity::courier(device, id),
            Role::Dispatcher => DeviceIdentity::dispatcher(device),
        };
        let credential = issuer
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
                expires_ms: 32_503_680_000_000,
            })
            .to_bytes();
        let replica = Replica::open_in_memory(identity, ReplicaOptions::default()).unwrap();
        let session = ClientSession::new(credential, Default::default());
        Self {
            replica,
            conn: 0,
            session,
        }
    }

    fn connect(&mut self, relay: &mut Relay<MemoryLogStore>, conn: u64) {
        relay.connect(conn);
        self.conn = conn;
        self.session.start(&self.replica).unwrap();
    }
}

/// Deliver messages both ways until nothing moves.
fn pump(relay: &mut Relay<MemoryLogStore>, devices: &mut [&mut Device], now_ms: i64) {
    loop {
        let mut moved = false;
        for device in devices.iter_mut() {
            while let Some(message) = device.session.poll_transmit() {
                relay.handle(device.conn, message, now_ms);
                moved = true;
            }
            while let Some(message) = relay.poll_transmit(device.conn) {
                let _ = device.session.handle(&device.replica, message);
                moved = true;
            }
        }
        if !moved {
            return;
        }
    }
}

fn order(store: &str, n: usize) -> NewOrder {
    serde_json::from_value(serde_json::json!({
        "number": format!("{store}-{n:06}"), "channel": "web", "store": store,
        "customer": {"id": format!("c-{n}"), "name": format!("Customer {n}"),
                     "phone": "+98 912 000 0000", "address": "12 Vali-Asr St, Tehran"},
        "currency": "IRR", "fulfilment": "delivery",
        "lines": [{"sku": "TEA-500", "name": "Black tea 500 g", "qty": 2, "unit_price": 1_850_000}]
    }))
    .unwrap()
}

const NOW: i64 = 1_790_000_000_000;

/// The next local change of `device` (its outbox after `skip` entries).
fn outbox_change(device: &Device, skip: usize) -> UploadChange {
    let entry = device.replica.outbox(skip + 1).unwrap().pop().unwrap();
    UploadChange {
        doc_id: entry.doc_id,
        bytes: entry.bytes,
    }
}

/// A change to the order made with Automerge directly (a tampered build), on top
/// of `base` (the document's saved bytes), rewriting the first line's price.
fn forged(base: &[u8], price: i64) -> (Vec<u8>, Vec<u8>) {
    let mut doc = automerge::Automerge::load(base).unwrap();
    let mut order: crate::model::Order = autosurgeon::hydrate(&doc).unwrap();
    order.lines[0].unit_price = price;
    let mut tx = doc.transaction();
    autosurgeon::reconcile(&mut tx, &order).unwrap();
    tx.commit();
    let bytes = doc.get_last_local_change().unwrap().raw_bytes().to_vec();
    (bytes, doc.save())
}

fn upload(batch: u64, changes: Vec<UploadChange>) -> Message {
    Message::Upload(Upload { batch, changes })
}

fn acks(relay: &mut Relay<MemoryLogStore>, conn: u64) -> Vec<UploadAck> {
    std::iter::from_fn(|| relay.poll_transmit(conn))
        .filter_map(|m| match m {
            Message::UploadAck(a) => Some(a),
            _ => None,
        })
        .collect()
}

/// A relay holding one order of store S1 with a delivery for courier c1, a tablet
/// on connection 1 and the courier on connection 2, both caught up.
fn setup(issuer: &CredentialIssuer) -> (Relay<MemoryLogStore>, Device, Device, DocId) {
    let mut relay = Relay::new(
        MemoryLogStore::new("relay-1"),
        issuer.verifier(),
        RelayConfig::default(),
    );
    let mut tablet = Device::with_role(issuer, "tablet-1", Role::Store, "S1");
    let mut courier = Device::with_role(issuer, "phone-1", Role::Courier, "c1");
    let order_id = tablet.replica.create_order(&order("S1", 1)).unwrap();
    tablet
        .replica
        .assign_courier(&order_id, "c1", &NewDelivery::default())
        .unwrap();
    tablet.connect(&mut relay, 1);
    courier.connect(&mut relay, 2);
    pump(&mut relay, &mut [&mut tablet, &mut courier], NOW);
    (relay, tablet, courier, order_id)
}

#[test]
fn a_group_of_uploads_is_judged_as_if_each_came_alone() {
    let issuer = CredentialIssuer::generate();
    let (mut grouped, tablet, courier, order_id) = setup(&issuer);
    let (mut alone, _tablet, _courier, _) = setup(&issuer);
    // Same devices, same stored state: the second relay starts from the first's log.
    let mut alone_store = grouped.store().clone();
    std::mem::swap(alone.store_mut(), &mut alone_store);
    let head = grouped.store().head().unwrap();

    // The tablet writes two notes (the second builds on the first); the courier's
    // tampered build rewrites a price, then builds a second forged change on it.
    tablet.replica.add_note(&order_id, "first").unwrap();
    tablet.replica.add_note(&order_id, "second").unwrap();
    let first = outbox_change(&tablet, 0);
    let second = outbox_change(&tablet, 1);
    let (forged_1, forged_doc) = forged(&courier.replica.export(&order_id).unwrap(), 1);
    let (forged_2, _) = forged(&forged_doc, 2);
    let on_order = |bytes: Vec<u8>| UploadChange {
        doc_id: order_id.to_string(),
        bytes,
    };
    let step = vec![
        (1, upload(10, vec![first])),
        (2, upload(20, vec![on_order(forged_1.clone())])),
        (1, upload(11, vec![second])),
        (2, upload(21, vec![on_order(forged_2.clone())])),
    ];

    let woken = grouped.handle_all(step.clone(), NOW);
    assert!(woken.contains(&1) && woken.contains(&2));
    for (conn, message) in step {
        alone.handle(conn, message, NOW);
    }

    for relay in [&mut grouped, &mut alone] {
        let tablet_acks = acks(relay, 1);
        let courier_acks = acks(relay, 2);
        assert_eq!(
            tablet_acks.iter().map(|a| a.batch).collect::<Vec<_>>(),
            [10, 11],
            "one ack per upload, in order"
        );
        assert!(tablet_acks.iter().all(|a| a.accepted.len() == 1));
        assert!(tablet_acks.iter().all(|a| a.refused.is_empty()));
        assert_eq!(
            courier_acks.iter().map(|a| a.batch).collect::<Vec<_>>(),
            [20, 21]
        );
        for ack in &courier_acks {
            assert!(ack.accepted.is_empty());
            assert_eq!(ack.refused.len(), 1);
            assert_eq!(ack.refused[0].code, ErrorCode::Forbidden);
        }
        assert!(
            courier_acks[1].refused[0]
                .reason
                .contains("builds on refused"),
            "{}",
            courier_acks[1].refused[0].reason
        );
        assert_eq!(relay.store().head().unwrap(), head + 2, "the two notes");
        assert_eq!(relay.store().quarantined().unwrap().len(), 2);
    }
    assert_eq!(
        grouped.store().read_log(0, usize::MAX, usize::MAX).unwrap(),
        alone.store().read_log(0, usize::MAX, usize::MAX).unwrap(),
        "the same log, entry for entry"
    );
    let hashes = |relay: &Relay<MemoryLogStore>| -> Vec<Vec<u8>> {
        let q = relay.store().quarantined().unwrap();
        q.into_iter().map(|q| q.change.hash).collect()
    };
    assert_eq!(hashes(&grouped), hashes(&alone));
}

#[test]
fn a_group_spanning_several_documents_and_devices_is_logged_once_and_pushed() {
    let issuer = CredentialIssuer::generate();
    let (mut relay, tablet, mut courier, order_id) = setup(&issuer);
    let mut other = Device::with_role(&issuer, "tablet-2", Role::Store, "S2");
    other.connect(&mut relay, 3);
    pump(&mut relay, &mut [&mut other], NOW);
    let other_order = other.replica.create_order(&order("S2", 2)).unwrap();
    let head = relay.store().head().unwrap();

    tablet
        .replica
        .add_note(&order_id, "from the tablet")
        .unwrap();
    other.replica.add_note(&other_order, "from S2").unwrap();
    let other_changes: Vec<UploadChange> = other
        .replica
        .outbox(10)
        .unwrap()
        .into_iter()
        .map(|e| UploadChange {
            doc_id: e.doc_id,
            bytes: e.bytes,
        })
        .collect();
    // The same upload sent twice in one step is logged once.
    let again = other_changes.clone();
    let step = vec![
        (1, upload(1, vec![outbox_change(&tablet, 0)])),
        (3, upload(1, other_changes.clone())),
        (3, upload(2, again)),
    ];
    relay.handle_all(step, NOW);
    let other_acks = acks(&mut relay, 3);
    assert_eq!(other_acks.len(), 2);
    assert!(
        other_acks[1].refused.is_empty(),
        "{:?}",
        other_acks[1].refused
    );
    assert_eq!(other_acks[0].accepted, other_acks[1].accepted);
    assert_eq!(
        relay.store().head().unwrap(),
        head + 1 + other_changes.len() as u64,
        "every change logged exactly once"
    );
    // The courier follows the log live: it is pushed the tablet's note, and nothing
    // of store S2.
    pump(&mut relay, &mut [&mut courier], NOW);
    let notes = courier.replica.order(&order_id).unwrap().notes;
    assert!(notes.contains("from the tablet"), "{notes:?}");
    assert!(!courier.replica.doc_ids().unwrap().contains(&other_order));
}
