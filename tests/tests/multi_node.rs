//! Several relay state machines on one shared store, as relay nodes share one
//! PostgreSQL database: driven in process, deterministic. The QUIC, PostgreSQL and
//! NATS version of these scenarios is `scale_out.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use waybill_core::credential::CredentialIssuer;
use waybill_core::model::NewDelivery;
use waybill_core::sync::{LogStore, Relay, RelayConfig, SharedLogStore};
use waybill_core::{DocId, Role};
use waybill_tests::{Device, order, pump};

const NOW: i64 = 1_790_000_000_000;

fn node(store: &SharedLogStore, issuer: &CredentialIssuer) -> Relay<SharedLogStore> {
    Relay::new(store.clone(), issuer.verifier(), RelayConfig::default())
}

fn heads(d: &Device, id: &DocId) -> Vec<String> {
    d.replica.heads(id).unwrap()
}

/// A device moves to another node and builds on a change that node has not seen in
/// its working copy. Without the version check the new change would wait forever
/// for a dependency the node's stale copy lacks (acknowledged, never logged).
#[test]
fn a_stale_working_copy_conflicts_and_is_read_again() {
    let issuer = CredentialIssuer::generate();
    let store = SharedLogStore::new("relay-shared");
    let mut node1 = node(&store, &issuer);
    let mut node2 = node(&store, &issuer);
    let mut tablet = Device::with_role(&issuer, "tablet-1", Role::Store, "S1");
    let mut tablet2 = Device::with_role(&issuer, "tablet-2", Role::Store, "S1");

    let order_id = tablet.replica.create_order(&order("S1", 1)).unwrap();
    tablet.connect(&mut node1, 1);
    pump(&mut node1, &mut [&mut tablet], NOW); // node 1 now holds a working copy

    tablet2.connect(&mut node2, 1);
    pump(&mut node2, &mut [&mut tablet2], NOW);
    tablet2.replica.add_note(&order_id, "first note").unwrap();
    tablet2.wrote();
    pump(&mut node2, &mut [&mut tablet2], NOW);
    assert_eq!(store.head().unwrap(), 2, "node 2 logged the first note");

    // Node 1 is not told (a lost notice): its copy of the order is stale.
    tablet2.disconnect(&mut node2);
    tablet2.connect(&mut node1, 2);
    pump(&mut node1, &mut [&mut tablet, &mut tablet2], NOW);
    tablet2.replica.add_note(&order_id, "second note").unwrap();
    tablet2.wrote();
    pump(&mut node1, &mut [&mut tablet, &mut tablet2], NOW);

    assert_eq!(
        store.head().unwrap(),
        3,
        "the second note is logged, not left waiting for a change node 1 had not read"
    );
    assert_eq!(tablet2.replica.pending_uploads().unwrap(), 0);
    assert_eq!(heads(&tablet, &order_id), heads(&tablet2, &order_id));
    let notes = tablet.replica.order(&order_id).unwrap().notes;
    assert!(
        notes.contains("first note") && notes.contains("second note"),
        "the tablet on node 1 got both notes: {notes:?}"
    );
}

/// A change accepted on node 1 reaches a device following the log live on node 2
/// when node 2 hears node 1's notice, and at node 2's next tick if it never does.
#[test]
fn commits_on_one_node_reach_live_devices_on_another() {
    let issuer = CredentialIssuer::generate();
    let store = SharedLogStore::new("relay-shared");
    let mut node1 = node(&store, &issuer);
    let mut node2 = node(&store, &issuer);
    let mut tablet = Device::with_role(&issuer, "tablet-1", Role::Store, "S1");
    let mut phone = Device::with_role(&issuer, "phone-7", Role::Courier, "courier-7");
    tablet.connect(&mut node1, 1);
    phone.connect(&mut node2, 1);
    pump(&mut node1, &mut [&mut tablet], NOW);
    pump(&mut node2, &mut [&mut phone], NOW);
    while node1.poll_committed().is_some() {}

    let order_id = tablet.replica.create_order(&order("S1", 1)).unwrap();
    let delivery_id = tablet
        .replica
        .assign_courier(&order_id, "courier-7", &NewDelivery::default())
        .unwrap();
    tablet.wrote();
    pump(&mut node1, &mut [&mut tablet], NOW);
    pump(&mut node2, &mut [&mut phone], NOW);
    assert!(
        phone.replica.doc_ids().unwrap().is_empty(),
        "nothing moves on node 2 before it hears of the commit"
    );

    let mut woken = Vec::new();
    while let Some(notice) = node1.poll_committed() {
        assert!(notice.doc_ids.contains(&delivery_id.to_string()));
        woken.extend(node2.on_remote_commit(&notice));
    }
    assert_eq!(woken, vec![1], "the live phone is woken");
    pump(&mut node2, &mut [&mut phone], NOW);
    assert_eq!(heads(&phone, &delivery_id), heads(&tablet, &delivery_id));
    assert_eq!(heads(&phone, &order_id), heads(&tablet, &order_id));

    // A notice lost on the way: the tick finds the log moved on.
    tablet.replica.add_note(&order_id, "side door").unwrap();
    tablet.wrote();
    pump(&mut node1, &mut [&mut tablet], NOW);
    while node1.poll_committed().is_some() {}
    assert_ne!(heads(&phone, &order_id), heads(&tablet, &order_id));
    assert_eq!(node2.tick(NOW), vec![1]);
    pump(&mut node2, &mut [&mut phone], NOW);
    assert_eq!(heads(&phone, &order_id), heads(&tablet, &order_id));
}
