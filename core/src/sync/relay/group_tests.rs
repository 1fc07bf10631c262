//! Group commit: uploads from several devices handled as one relay step
//! (`Relay::handle_all`) share one `LogStore::commit`, and every device is told
//! exactly what it would have been told had its upload been handled alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::credential::{CredentialBody, CredentialIssuer};
use crate::ids::DocId;
use crate::model::{NewDelivery, NewOrder};
use crate::protocol::{ErrorCode, Message, Upload, UploadAck, UploadChange};
use crate::replica::{Replica, ReplicaOptions};
use crate::sync::relay_docs::typed_of;
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

/// A small deterministic generator for the randomised groups below.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

/// Two relays on the same stored state, each with the same three devices caught
/// up: tablets of store S1 on connections 1 and 3, courier c1 on 2. Three orders
/// of S1, the first assigned to c1.
fn twin_relays(
    issuer: &CredentialIssuer,
) -> (
    Relay<MemoryLogStore>,
    Relay<MemoryLogStore>,
    [Device; 3],
    Vec<DocId>,
) {
    let build = || {
        let (mut relay, mut tablet, mut courier, first) = setup(issuer);
        let mut second = Device::with_role(issuer, "tablet-2", Role::Store, "S1");
        let mut orders = vec![first];
        for n in 2..=3 {
            orders.push(tablet.replica.create_order(&order("S1", n)).unwrap());
        }
        tablet.session.local_changes(&tablet.replica).unwrap();
        second.connect(&mut relay, 3);
        pump(
            &mut relay,
            &mut [&mut tablet, &mut courier, &mut second],
            NOW,
        );
        assert_eq!(
            second.replica.doc_ids().unwrap().len(),
            4,
            "three orders, one delivery"
        );
        (relay, [tablet, courier, second], orders)
    };
    let (grouped, devices, orders) = build();
    let (mut alone, _, _) = build();
    let mut store = grouped.store().clone();
    std::mem::swap(alone.store_mut(), &mut store);
    (grouped, alone, devices, orders)
}

/// Random uploads from the three devices: the tablets' notes on random orders
/// (concurrent, so several uploads of a group touch the same order), the courier's
/// tampered price changes (refused, each built on the last), undecodable bytes and
/// repeats of earlier uploads; each device's changes in its own order, cut into
/// uploads of one to three changes.
fn random_uploads(rng: &mut Rng, devices: &[Device; 3], orders: &[DocId]) -> Vec<(u64, Message)> {
    let mut queues: Vec<Vec<UploadChange>> = vec![Vec::new(); 3];
    for d in [0, 2] {
        for k in 0..rng.below(7) {
            let order = &orders[rng.below(orders.len())];
            devices[d]
                .replica
                .add_note(order, &format!("note {k}"))
                .unwrap();
        }
        queues[d] = devices[d]
            .replica
            .outbox(usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| UploadChange {
                doc_id: e.doc_id,
                bytes: e.bytes,
            })
            .collect();
    }
    let mut base = devices[1].replica.export(&orders[0]).unwrap();
    for price in 0..rng.below(4) {
        let (change, doc) = forged(&base, price as i64 + 1);
        queues[1].push(UploadChange {
            doc_id: orders[0].to_string(),
            bytes: change,
        });
        base = doc;
    }
    let conns = [1, 2, 3];
    let mut uploads: Vec<(u64, Message)> = Vec::new();
    let mut batch = 100;
    loop {
        let left: Vec<usize> = (0..3).filter(|&d| !queues[d].is_empty()).collect();
        if left.is_empty() {
            return uploads;
        }
        let d = left[rng.below(left.len())];
        batch += 1;
        match rng.below(10) {
            0 => uploads.push((
                conns[d],
                upload(
                    batch,
                    vec![UploadChange {
                        doc_id: orders[rng.below(orders.len())].to_string(),
                        bytes: vec![0x85, 0x6f, 0x4a, 0x83, rng.below(256) as u8, 1, 2, 3],
                    }],
                ),
            )),
            1 if !uploads.is_empty() => {
                let (conn, Message::Upload(again)) = uploads[rng.below(uploads.len())].clone()
                else {
                    unreachable!("only uploads are listed")
                };
                uploads.push((conn, upload(batch, again.changes)));
            }
            _ => {
                let take = (1 + rng.below(3)).min(queues[d].len());
                let changes: Vec<UploadChange> = queues[d].drain(..take).collect();
                uploads.push((conns[d], upload(batch, changes)));
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Whatever the uploads and however they are grouped, every device is told
    /// what it would have been told had each upload come alone, and the log and
    /// the quarantine are the same, entry for entry (the applies done ahead of the
    /// checks, on several threads, change nothing).
    #[test]
    fn random_groups_are_judged_as_if_each_upload_came_alone(seed in 1u64..u64::MAX) {
        let issuer = CredentialIssuer::generate();
        let (mut grouped, mut alone, devices, orders) = twin_relays(&issuer);
        let mut rng = Rng(seed);
        let uploads = random_uploads(&mut rng, &devices, &orders);
        let mut rest = uploads.as_slice();
        while !rest.is_empty() {
            let (group, after) = rest.split_at(1 + rng.below(rest.len()));
            grouped.handle_all(group.to_vec(), NOW);
            rest = after;
        }
        for (conn, message) in uploads {
            alone.handle(conn, message, NOW);
        }
        for conn in [1, 2, 3] {
            let told = acks(&mut grouped, conn);
            if conn == 2 {
                // Everything the courier sends is forged or built on forged changes.
                proptest::prop_assert!(told.iter().all(|a| a.accepted.is_empty()), "{told:?}");
            }
            proptest::prop_assert_eq!(told, acks(&mut alone, conn));
        }
        let log = |relay: &Relay<MemoryLogStore>| -> Vec<(u64, String, String)> {
            let entries = relay.store().read_log(0, usize::MAX, usize::MAX).unwrap();
            entries
                .into_iter()
                .map(|e| {
                    let hash = automerge::Change::from_bytes(e.bytes).unwrap().hash();
                    (e.seq, e.doc_id, hash.to_string())
                })
                .collect()
        };
        proptest::prop_assert_eq!(log(&grouped), log(&alone));
        // Every cached copy is what the log holds, and so is its typed value.
        for relay in [&grouped, &alone] {
            for id in &orders {
                let Some((heads, typed)) = relay.docs.peek(id.as_str()) else {
                    continue;
                };
                let changes = relay.store().doc_changes(id.as_str()).unwrap();
                let logged = crate::sync::relay_docs::rebuild(id.as_str(), changes).unwrap();
                proptest::prop_assert_eq!(heads, logged.get_heads());
                if let Some(typed) = typed {
                    proptest::prop_assert_eq!(typed, typed_of(id.as_str(), &logged));
                }
            }
        }
        let quarantined = |relay: &Relay<MemoryLogStore>| -> Vec<(Vec<u8>, String)> {
            let q = relay.store().quarantined().unwrap();
            q.into_iter().map(|q| (q.change.hash, q.reason)).collect()
        };
        proptest::prop_assert_eq!(quarantined(&grouped), quarantined(&alone));
    }
}
