//! A device that has never synced gets its documents as snapshots (protocol 1.1):
//! one saved Automerge document each, then the log from where they end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use waybill_core::Role;
use waybill_core::credential::CredentialIssuer;
use waybill_core::model::{EventDetails, NewDelivery};
use waybill_core::protocol::{DocSnapshot, ErrorCode, Message, Snapshots, Version};
use waybill_core::sync::{LogStore, MemoryLogStore, Relay, RelayConfig, SyncEvent};
use waybill_tests::{Device, order, pump, session_counting};

const NOW: i64 = 1_790_000_000_000;

fn relay(issuer: &CredentialIssuer, snapshot_docs: usize) -> Relay<MemoryLogStore> {
    Relay::new(
        MemoryLogStore::new("relay-1"),
        issuer.verifier(),
        RelayConfig {
            snapshot_docs,
            ..RelayConfig::default()
        },
    )
}

/// A store tablet with `n` orders, each confirmed once, all on the relay.
fn seeded(issuer: &CredentialIssuer, relay: &mut Relay<MemoryLogStore>, n: usize) -> Device {
    let mut tablet = Device::with_role(issuer, "tablet-1", Role::Store, "S1");
    for i in 0..n {
        let id = tablet.replica.create_order(&order("S1", i)).unwrap();
        tablet
            .replica
            .record_event(&id, "confirmed", &EventDetails::default())
            .unwrap();
    }
    session_counting(relay, &mut tablet, 1, NOW);
    tablet
}

#[test]
fn a_fresh_device_gets_whole_documents_then_resumes_from_the_log() {
    let issuer = CredentialIssuer::generate();
    let mut relay = relay(&issuer, 16);
    let mut tablet = seeded(&issuer, &mut relay, 40);
    assert_eq!(relay.store().head().unwrap(), 80);

    let mut console = Device::with_role(&issuer, "disp-1", Role::Dispatcher, "");
    let first = session_counting(&mut relay, &mut console, 2, NOW);
    assert_eq!(first.snapshots, 40, "every order once, whole");
    assert_eq!(first.entries, 0, "no log entries: the snapshots cover them");
    // Welcome, three pages of at most 16 documents, one empty log page.
    assert_eq!(first.messages, 5, "{first:?}");
    assert_eq!(console.heads(), tablet.heads());
    let received = console.received_changes();
    assert_eq!(received, 80, "two changes per order, counted");
    assert!(console.events.contains(&SyncEvent::CaughtUp { cursor: 80 }));
    assert_eq!(console.replica.sync_cursor().unwrap().unwrap().seq, 80);
    // The documents are fully usable: read, searched, changed.
    let id = console.replica.doc_ids().unwrap()[7].clone();
    assert_eq!(
        console.replica.order(&id).unwrap().status.to_string(),
        "confirmed"
    );

    // The next session resumes from the cursor with only what changed.
    let ids = tablet.replica.doc_ids().unwrap();
    for id in ids.iter().take(3) {
        tablet
            .replica
            .record_event(id, "picking", &EventDetails::default())
            .unwrap();
    }
    session_counting(&mut relay, &mut tablet, 3, NOW);
    let again = session_counting(&mut relay, &mut console, 4, NOW);
    assert_eq!((again.snapshots, again.entries), (0, 3), "{again:?}");
    assert_eq!(console.heads(), tablet.heads());
}

#[test]
fn the_relay_keeps_snapshots_fresh_and_never_serves_a_stale_one() {
    let issuer = CredentialIssuer::generate();
    // A cache smaller than the documents: most snapshots are saved as documents
    // leave it, the rest at the tick.
    let mut relay = Relay::new(
        MemoryLogStore::new("relay-1"),
        issuer.verifier(),
        RelayConfig {
            snapshot_docs: 16,
            cached_docs: 8,
            ..RelayConfig::default()
        },
    );
    let mut tablet = seeded(&issuer, &mut relay, 40);
    let ids: Vec<String> = tablet
        .replica
        .doc_ids()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    relay.tick(NOW);
    assert_eq!(relay.store().fresh_snapshots(&ids).unwrap().len(), 40);

    // Three orders move on: their snapshots are stale until saved again.
    for id in tablet.replica.doc_ids().unwrap().iter().take(3) {
        tablet
            .replica
            .record_event(id, "picking", &EventDetails::default())
            .unwrap();
    }
    session_counting(&mut relay, &mut tablet, 2, NOW);
    let fresh = relay.store().fresh_snapshots(&ids).unwrap().len();
    assert!(
        fresh < 40,
        "a committed change makes a snapshot stale ({fresh} fresh)"
    );

    // A new device gets every document as it is now.
    let mut console = Device::with_role(&issuer, "disp-2", Role::Dispatcher, "");
    let got = session_counting(&mut relay, &mut console, 3, NOW);
    assert_eq!(got.snapshots, 40);
    assert_eq!(got.entries, 0);
    assert_eq!(console.heads(), tablet.heads());
    assert_eq!(relay.store().fresh_snapshots(&ids).unwrap().len(), 40);
}

#[test]
fn a_device_speaking_1_0_still_reads_the_whole_log() {
    let issuer = CredentialIssuer::generate();
    let mut relay = relay(&issuer, 16);
    let tablet = seeded(&issuer, &mut relay, 10);
    let mut old = Device::with_role(&issuer, "disp-old", Role::Dispatcher, "");
    old.client.version = Version { major: 1, minor: 0 };
    let got = session_counting(&mut relay, &mut old, 2, NOW);
    assert_eq!((got.snapshots, got.entries), (0, 20), "{got:?}");
    assert_eq!(old.heads(), tablet.heads());
}

#[test]
fn a_fresh_courier_is_sent_only_its_own_documents() {
    let issuer = CredentialIssuer::generate();
    let mut relay = relay(&issuer, 2);
    let mut tablet = seeded(&issuer, &mut relay, 6);
    let ids = tablet.replica.doc_ids().unwrap();
    let delivery = tablet
        .replica
        .assign_courier(&ids[2], "c1", &NewDelivery::default())
        .unwrap();
    session_counting(&mut relay, &mut tablet, 3, NOW);

    let mut phone = Device::with_role(&issuer, "phone-1", Role::Courier, "c1");
    let got = session_counting(&mut relay, &mut phone, 4, NOW);
    let mut mine = vec![ids[2].to_string(), delivery.to_string()];
    mine.sort();
    assert_eq!(got.documents.into_iter().collect::<Vec<_>>(), mine);
    assert_eq!(got.snapshots, 2);
    assert_eq!(phone.replica.doc_ids().unwrap().len(), 2);
}

#[test]
fn changes_made_while_snapshots_are_sent_still_arrive() {
    let issuer = CredentialIssuer::generate();
    let mut relay = relay(&issuer, 1);
    let mut tablet = seeded(&issuer, &mut relay, 5);
    tablet.connect(&mut relay, 10);
    pump(&mut relay, &mut [&mut tablet], NOW);
    let ids = tablet.replica.doc_ids().unwrap();

    let mut console = Device::with_role(&issuer, "disp-1", Role::Dispatcher, "");
    console.connect(&mut relay, 11);
    let (conn, mut session) = console.session.take().unwrap();
    relay.handle(conn, session.poll_transmit().unwrap(), NOW);
    // Welcome and the first one-document page, then the store works on.
    for _ in 0..2 {
        let m = relay.poll_transmit(conn).unwrap();
        session.handle(&console.replica, m).unwrap();
    }
    for id in &ids {
        tablet
            .replica
            .record_event(id, "picking", &EventDetails::default())
            .unwrap();
    }
    tablet.replica.create_order(&order("S1", 99)).unwrap();
    tablet.wrote();
    pump(&mut relay, &mut [&mut tablet], NOW);
    console.session = Some((conn, session));
    pump(&mut relay, &mut [&mut tablet, &mut console], NOW);
    assert_eq!(console.heads(), tablet.heads());
    assert_eq!(console.replica.doc_ids().unwrap().len(), 6);
}

#[test]
fn a_snapshot_that_does_not_load_is_skipped_and_reported() {
    let issuer = CredentialIssuer::generate();
    let mut relay = relay(&issuer, 16);
    let tablet = seeded(&issuer, &mut relay, 2);
    let ids = tablet.replica.doc_ids().unwrap();
    let mut console = Device::with_role(&issuer, "disp-1", Role::Dispatcher, "");
    console.connect(&mut relay, 2);
    let (conn, mut session) = console.session.take().unwrap();
    relay.handle(conn, session.poll_transmit().unwrap(), NOW);
    let welcome = relay.poll_transmit(conn).unwrap();
    session.handle(&console.replica, welcome).unwrap();
    let Some(Message::Snapshots(page)) = relay.poll_transmit(conn) else {
        panic!("expected snapshots");
    };
    let good = page.docs[0].clone();
    let mut torn = page.docs[1].bytes.clone();
    torn.truncate(torn.len() / 2);
    let tampered = Snapshots {
        docs: vec![
            DocSnapshot {
                doc_id: page.docs[1].doc_id.clone(),
                bytes: torn,
            },
            DocSnapshot {
                doc_id: "not-a-document-id".into(),
                bytes: good.bytes.clone(),
            },
            good.clone(),
        ],
        ..page
    };
    session
        .handle(&console.replica, Message::Snapshots(tampered))
        .unwrap();
    let held: Vec<String> = console
        .replica
        .doc_ids()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(held, vec![good.doc_id.clone()], "the good one is kept");
    assert!(ids.iter().any(|id| id.to_string() == good.doc_id));
    let Some(Message::Error(error)) = session.poll_transmit() else {
        panic!("the relay is told");
    };
    assert_eq!(error.code, ErrorCode::CorruptChange);
    assert!(!error.fatal);
    assert!(error.message.contains("2 change(s)"), "{}", error.message);
}

#[test]
fn a_document_that_leaves_the_view_during_snapshots_is_not_sent() {
    let issuer = CredentialIssuer::generate();
    let mut relay = relay(&issuer, 1);
    let mut tablet = Device::with_role(&issuer, "tablet-1", Role::Store, "S1");
    let order_id = tablet.replica.create_order(&order("S1", 1)).unwrap();
    tablet
        .replica
        .assign_courier(&order_id, "c1", &NewDelivery::default())
        .unwrap();
    tablet.connect(&mut relay, 1);
    pump(&mut relay, &mut [&mut tablet], NOW);

    // The courier's first session: the relay lists its two documents and sends the
    // first page (one document).
    let mut phone = Device::with_role(&issuer, "phone-1", Role::Courier, "c1");
    phone.connect(&mut relay, 2);
    let (conn, mut session) = phone.session.take().unwrap();
    relay.handle(conn, session.poll_transmit().unwrap(), NOW);
    for _ in 0..2 {
        let m = relay.poll_transmit(conn).unwrap();
        session.handle(&phone.replica, m).unwrap();
    }
    // The parcel goes to another courier, who is the only one to see what follows.
    tablet
        .replica
        .assign_courier(&order_id, "c2", &NewDelivery::default())
        .unwrap();
    tablet.wrote();
    pump(&mut relay, &mut [&mut tablet], NOW);

    let mut sent_after = Vec::new();
    loop {
        let mut moved = false;
        while let Some(m) = session.poll_transmit() {
            relay.handle(conn, m, NOW);
            moved = true;
        }
        while let Some(m) = relay.poll_transmit(conn) {
            if let Message::Snapshots(s) = &m {
                sent_after.extend(s.docs.iter().map(|d| d.doc_id.clone()));
            }
            session.handle(&phone.replica, m).unwrap();
            moved = true;
        }
        if !moved {
            break;
        }
    }
    assert!(sent_after.is_empty(), "sent after it left: {sent_after:?}");
    assert!(
        phone.replica.doc_ids().unwrap().is_empty(),
        "what it was sent before is removed"
    );
}
