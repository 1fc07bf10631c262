//! The sans-IO sessions, driven in process with reliable delivery: the basic
//! exchange rules of PROTOCOL.md, one by one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use waybill_core::credential::CredentialIssuer;
use waybill_core::model::{EventDetails, NewDelivery, NewLedgerEntry, PaymentMethod};
use waybill_core::protocol::{ErrorCode, Message};
use waybill_core::sync::{LogStore, MemoryLogStore, Relay, RelayConfig, SyncEvent};
use waybill_core::{DeviceIdentity, Role};
use waybill_tests::{Device, YEAR_3000_MS, credential, order, pump, session_counting};

const NOW: i64 = 1_790_000_000_000;

fn relay(issuer: &CredentialIssuer) -> Relay<MemoryLogStore> {
    Relay::new(
        MemoryLogStore::new("relay-1"),
        issuer.verifier(),
        RelayConfig::default(),
    )
}

#[test]
fn a_store_and_a_courier_converge_through_the_relay() {
    let issuer = CredentialIssuer::generate();
    let mut relay = relay(&issuer);
    let mut tablet = Device::with_role(&issuer, "tablet-1", Role::Store, "S1");
    let mut phone = Device::with_role(&issuer, "phone-7", Role::Courier, "courier-7");

    let order_id = tablet.replica.create_order(&order("S1", 1)).unwrap();
    let delivery_id = tablet
        .replica
        .assign_courier(&order_id, "courier-7", &NewDelivery::default())
        .unwrap();
    tablet.connect(&mut relay, 1);
    phone.connect(&mut relay, 2);
    pump(&mut relay, &mut [&mut tablet, &mut phone], NOW);
    assert_eq!(tablet.replica.pending_uploads().unwrap(), 0, "acked");
    assert_eq!(tablet.heads(), phone.heads());

    // Live push: the courier's events reach the connected tablet without polling.
    phone
        .replica
        .record_event(&delivery_id, "picked_up", &EventDetails::default())
        .unwrap();
    phone
        .replica
        .record_event(&delivery_id, "delivered", &EventDetails::default())
        .unwrap();
    phone
        .replica
        .record_payment(
            &order_id,
            &NewLedgerEntry {
                delivery_id: Some(delivery_id.to_string()),
                ..NewLedgerEntry::payment(PaymentMethod::Cash, 7_800_000, "IRR")
            },
        )
        .unwrap();
    phone.wrote();
    pump(&mut relay, &mut [&mut tablet, &mut phone], NOW);
    assert_eq!(tablet.heads(), phone.heads());
    let view = tablet.replica.order(&order_id).unwrap();
    assert_eq!(view.payments.len(), 1);
    assert_eq!(
        tablet
            .replica
            .delivery(&delivery_id)
            .unwrap()
            .status
            .to_string(),
        "delivered"
    );
    assert!(
        tablet
            .events
            .iter()
            .any(|e| matches!(e, SyncEvent::Received { .. }))
    );
    // create, assign (order + delivery), picked up, delivered (+ order completed), paid.
    assert_eq!(relay.store().head().unwrap(), 7);
}

#[test]
fn reconnecting_costs_only_what_changed() {
    let issuer = CredentialIssuer::generate();
    let mut relay = relay(&issuer);
    let mut tablet = Device::with_role(&issuer, "tablet-1", Role::Store, "S1");
    let mut phone = Device::with_role(&issuer, "disp-1", Role::Dispatcher, "");
    let ids: Vec<_> = (0..50)
        .map(|n| tablet.replica.create_order(&order("S1", n)).unwrap())
        .collect();
    tablet.connect(&mut relay, 1);
    phone.connect(&mut relay, 2);
    pump(&mut relay, &mut [&mut tablet, &mut phone], NOW);
    phone.disconnect(&mut relay);
    assert_eq!(phone.replica.doc_ids().unwrap().len(), 50);

    for id in &ids[..5] {
        tablet
            .replica
            .record_event(id, "confirmed", &EventDetails::default())
            .unwrap();
    }
    tablet.wrote();
    pump(&mut relay, &mut [&mut tablet], NOW);

    phone.connect(&mut relay, 3);
    phone.events.clear();
    pump(&mut relay, &mut [&mut phone], NOW);
    let received = phone.received_changes();
    assert_eq!(received, 5, "only the five new changes: {:?}", phone.events);
    assert_eq!(tablet.heads(), phone.heads());
}

#[test]
fn an_unusable_cursor_falls_back_to_per_document_sync() {
    let issuer = CredentialIssuer::generate();
    let mut first = relay(&issuer);
    let mut tablet = Device::with_role(&issuer, "tablet-1", Role::Store, "S1");
    let mut console = Device::with_role(&issuer, "disp-1", Role::Dispatcher, "");
    for n in 0..10 {
        tablet.replica.create_order(&order("S1", n)).unwrap();
    }
    tablet.connect(&mut first, 1);
    console.connect(&mut first, 2);
    pump(&mut first, &mut [&mut tablet, &mut console], NOW);

    // The relay lost its data (a restore from an old backup, a new deployment):
    // cursors point into a log that no longer exists. The console also wrote offline.
    let orphan = console.replica.create_order(&order("S1", 99)).unwrap();
    let mut second = Relay::new(
        MemoryLogStore::new("relay-2"),
        issuer.verifier(),
        RelayConfig::default(),
    );
    tablet.connect(&mut second, 1);
    console.connect(&mut second, 2);
    pump(&mut second, &mut [&mut tablet, &mut console], NOW);

    assert!(tablet.events.iter().any(|e| matches!(
        e,
        SyncEvent::Connected {
            full_sync: true,
            ..
        }
    )));
    assert_eq!(tablet.heads(), console.heads());
    assert_eq!(tablet.replica.doc_ids().unwrap().len(), 11);
    assert!(tablet.replica.order(&orphan).is_ok());
    // Everything is in the new relay's log, and both cursors point at its head.
    let head = second.store().head().unwrap();
    assert_eq!(second.store().doc_ids().unwrap().len(), 11);
    for d in [&tablet, &console] {
        let cursor = d.replica.sync_cursor().unwrap().unwrap();
        assert_eq!((cursor.relay_id.as_str(), cursor.seq), ("relay-2", head));
    }
}

#[test]
fn bad_credentials_are_refused_with_distinct_codes() {
    let issuer = CredentialIssuer::generate();
    let mut relay = relay(&issuer);
    let identity = DeviceIdentity::courier("phone-9", "courier-9");
    let forger = CredentialIssuer::generate();
    let cases = [
        (
            credential(&forger, &identity, YEAR_3000_MS),
            ErrorCode::BadCredential,
        ),
        (
            credential(&issuer, &identity, NOW - 1),
            ErrorCode::ExpiredCredential,
        ),
        (Vec::new(), ErrorCode::BadCredential),
    ];
    for (conn, (bytes, code)) in cases.into_iter().enumerate() {
        let mut device = Device::new(&issuer, identity.clone());
        device.credential = bytes;
        device.connect(&mut relay, conn as u64);
        assert_eq!(first_reply(&mut relay, &mut device), Some((code, true)));
        assert!(relay.wants_close(conn as u64));
    }
    relay.store_mut().revoke("phone-9").unwrap();
    let mut revoked = Device::new(&issuer, identity);
    revoked.connect(&mut relay, 9);
    assert_eq!(
        first_reply(&mut relay, &mut revoked),
        Some((ErrorCode::RevokedCredential, true))
    );
}

/// Send the device's hello; return the code of the relay's error answer, if any.
fn first_reply(
    relay: &mut Relay<MemoryLogStore>,
    device: &mut Device,
) -> Option<(ErrorCode, bool)> {
    let (conn, mut session) = device.session.take().unwrap();
    relay.handle(conn, session.poll_transmit().unwrap(), NOW);
    match relay.poll_transmit(conn) {
        Some(Message::Error(e)) => Some((e.code, e.fatal)),
        _ => None,
    }
}

#[test]
fn a_device_holding_1000_documents_receives_only_the_10_it_missed() {
    let issuer = CredentialIssuer::generate();
    let mut relay = relay(&issuer);
    let mut tablet = Device::with_role(&issuer, "tablet-1", Role::Store, "S1");
    let mut console = Device::with_role(&issuer, "disp-1", Role::Dispatcher, "");
    let ids: Vec<_> = (0..1_000)
        .map(|n| tablet.replica.create_order(&order("S1", n)).unwrap())
        .collect();
    session_counting(&mut relay, &mut tablet, 1, NOW);
    let initial = session_counting(&mut relay, &mut console, 2, NOW);
    assert_eq!(initial.snapshots, 1_000, "whole documents, not the log");
    assert_eq!(initial.entries, 0);
    assert_eq!(console.replica.doc_ids().unwrap().len(), 1_000);

    // 10 orders move on while the console is offline.
    for id in ids.iter().step_by(100) {
        tablet
            .replica
            .record_event(id, "confirmed", &EventDetails::default())
            .unwrap();
    }
    session_counting(&mut relay, &mut tablet, 3, NOW);
    let again = session_counting(&mut relay, &mut console, 4, NOW);
    assert_eq!(again.entries, 10, "only the missed changes");
    assert_eq!(again.documents.len(), 10, "only the documents they touch");
    // Welcome, then one page of changes.
    assert_eq!(again.messages, 2, "{again:?}");
    assert_eq!(tablet.heads(), console.heads());
}

#[test]
fn a_reassigned_delivery_moves_between_couriers_with_its_history() {
    let issuer = CredentialIssuer::generate();
    let mut relay = relay(&issuer);
    let mut tablet = Device::with_role(&issuer, "tablet-1", Role::Store, "S1");
    let mut c1 = Device::with_role(&issuer, "phone-1", Role::Courier, "c1");
    let mut c2 = Device::with_role(&issuer, "phone-2", Role::Courier, "c2");
    let order_id = tablet.replica.create_order(&order("S1", 1)).unwrap();
    let other = tablet.replica.create_order(&order("S1", 2)).unwrap();
    let delivery = tablet
        .replica
        .assign_courier(&order_id, "c1", &NewDelivery::default())
        .unwrap();
    tablet.connect(&mut relay, 1);
    c1.connect(&mut relay, 2);
    c2.connect(&mut relay, 3);
    pump(&mut relay, &mut [&mut tablet, &mut c1, &mut c2], NOW);
    let held = |d: &Device| {
        let mut ids: Vec<String> = d
            .replica
            .doc_ids()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        ids.sort();
        ids
    };
    let mut mine = vec![order_id.to_string(), delivery.to_string()];
    mine.sort();
    assert_eq!(
        held(&c1),
        mine,
        "its delivery and its order, not order {other}"
    );
    assert!(held(&c2).is_empty());

    c1.replica.add_note(&delivery, "gate code 4411").unwrap();
    c1.wrote();
    pump(&mut relay, &mut [&mut tablet, &mut c1, &mut c2], NOW);

    // The store hands the parcel to c2: c2 receives both documents with their
    // whole history, c1 is told to remove them. Everyone is connected (live).
    tablet
        .replica
        .assign_courier(&order_id, "c2", &NewDelivery::default())
        .unwrap();
    tablet.wrote();
    pump(&mut relay, &mut [&mut tablet, &mut c1, &mut c2], NOW);
    assert_eq!(held(&c2), mine);
    assert_eq!(held(&c1), Vec::<String>::new());
    assert!(c1.events.iter().any(|e| matches!(e, SyncEvent::Removed(_))));
    let seen_by_c2 = c2.replica.delivery(&delivery).unwrap();
    assert_eq!(seen_by_c2.courier.as_deref(), Some("c2"));
    assert_eq!(seen_by_c2.notes, "gate code 4411", "history came along");
    assert_eq!(
        c2.replica.heads(&delivery).unwrap(),
        tablet.replica.heads(&delivery).unwrap()
    );

    // A courier that was offline during the move learns about it when it resumes.
    c2.disconnect(&mut relay);
    tablet
        .replica
        .assign_courier(&order_id, "c1", &NewDelivery::default())
        .unwrap();
    tablet.wrote();
    pump(&mut relay, &mut [&mut tablet, &mut c1], NOW);
    assert_eq!(held(&c1), mine, "given back, with everything");
    c2.connect(&mut relay, 4);
    pump(&mut relay, &mut [&mut c2], NOW);
    assert!(held(&c2).is_empty(), "removed on resuming");
}

#[test]
fn a_forged_change_is_quarantined_and_reaches_no_one() {
    let issuer = CredentialIssuer::generate();
    let mut relay = relay(&issuer);
    let mut tablet = Device::with_role(&issuer, "tablet-1", Role::Store, "S1");
    let mut courier = Device::with_role(&issuer, "phone-1", Role::Courier, "c1");
    let order_id = tablet.replica.create_order(&order("S1", 1)).unwrap();
    tablet
        .replica
        .assign_courier(&order_id, "c1", &NewDelivery::default())
        .unwrap();
    tablet.connect(&mut relay, 1);
    courier.connect(&mut relay, 2);
    pump(&mut relay, &mut [&mut tablet, &mut courier], NOW);

    // A tampered build edits a price with Automerge directly, bypassing the API.
    let mut doc = automerge::Automerge::load(&courier.replica.export(&order_id).unwrap()).unwrap();
    let mut order: waybill_core::model::Order = autosurgeon::hydrate(&doc).unwrap();
    order.lines[0].unit_price = 1;
    let mut tx = doc.transaction();
    autosurgeon::reconcile(&mut tx, &order).unwrap();
    tx.commit();
    let forged = doc.get_last_local_change().unwrap().raw_bytes().to_vec();
    let (conn, _) = courier.session.as_ref().map(|(c, _)| (*c, ())).unwrap();
    relay.handle(
        conn,
        Message::Upload(waybill_core::protocol::Upload {
            batch: 99,
            changes: vec![waybill_core::protocol::UploadChange {
                doc_id: order_id.to_string(),
                bytes: forged.clone(),
            }],
        }),
        NOW,
    );
    let ack = std::iter::from_fn(|| relay.poll_transmit(conn))
        .find_map(|m| match m {
            Message::UploadAck(a) => Some(a),
            _ => None,
        })
        .unwrap();
    assert!(ack.accepted.is_empty());
    assert_eq!(ack.refused.len(), 1);
    assert_eq!(ack.refused[0].code, ErrorCode::Forbidden);
    assert!(
        ack.refused[0].reason.contains("lines"),
        "{}",
        ack.refused[0].reason
    );
    let quarantined = relay.store().quarantined().unwrap();
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].change.device_id, "phone-1");
    pump(&mut relay, &mut [&mut tablet, &mut courier], NOW);
    assert_eq!(
        tablet.replica.order(&order_id).unwrap().lines[0].unit_price,
        1_850_000
    );
    assert_eq!(relay.store().head().unwrap(), 3, "nothing logged");
}
