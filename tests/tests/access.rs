//! Least privilege over real QUIC on loopback (DESIGN.md principle 7): every device
//! receives only the documents its grants cover, on every path (catch-up pages, live
//! pushes); a reassignment moves a delivery and its order from one courier to the
//! other with their whole history; a change the device's role may not make is
//! refused, quarantined and never reaches anyone, even when a modified device crafts
//! the Automerge change itself; a revoked device is cut off while connected.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use automerge::transaction::{Transactable, Transaction};
use automerge::{Automerge, ChangeHash, ROOT, ReadDoc};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use waybill_core::credential::Credential;
use waybill_core::model::{EventDetails, NewDelivery, NewLedgerEntry, PaymentMethod};
use waybill_core::net::{ConnectionState, SyncClient, SyncOptions, SyncReport, tls};
use waybill_core::protocol::{
    self, DEFAULT_MAX_FRAME, ErrorCode, FrameDecoder, Hello, MAGIC, Message, PROTOCOL_VERSION,
    Refusal, Upload, UploadChange,
};
use waybill_core::replica::{ChangeOrigin, DocChange, Replica, Subscription};
use waybill_core::store::query::{DeliveryQuery, OrderQuery};
use waybill_core::sync::{ClientConfig, ClientSession, LogStore};
use waybill_core::{DocId, Role};
use waybill_server::log_store::SqliteLogStore;
use waybill_server::service::{RunningRelay, ServeOptions, start};
use waybill_tests::loopback::{
    HOUR_MS, credential, credential_from, eventually, now_ms, relay, replica, sync,
};
use waybill_tests::order;

/// How long a bounded wait polls before it gives up.
const WAIT: Duration = Duration::from_secs(20);

fn ids(docs: &[&DocId]) -> BTreeSet<String> {
    docs.iter().map(|d| d.to_string()).collect()
}

fn held(replica: &Replica) -> BTreeSet<String> {
    replica
        .doc_ids()
        .unwrap()
        .into_iter()
        .map(|id| id.to_string())
        .collect()
}

fn heads_of(replica: &Replica, doc: &str) -> Vec<String> {
    replica.heads(&DocId::parse(doc).unwrap()).unwrap()
}

/// Whether a replica's copy of `doc` contains the change `hash` at all (not only in
/// its heads).
fn contains_change(replica: &Replica, doc: &DocId, hash: &ChangeHash) -> bool {
    match replica.export(doc) {
        Ok(bytes) => {
            let loaded = Automerge::load(&bytes).unwrap();
            loaded.get_change_by_hash(hash).is_some()
                || replica.heads(doc).unwrap().contains(&hash.to_string())
        }
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------------
// Devices whose every received document is recorded
// ---------------------------------------------------------------------------------

/// One observer notification, stamped with a clock shared by the whole test so
/// notifications can be placed before or after the test's own milestones.
#[derive(Debug, Clone)]
struct Seen {
    at: u64,
    doc: String,
    origin: ChangeOrigin,
}

/// A device: its replica, what its observer heard, and (when live) its background
/// sync client; otherwise it syncs with `sync_once`.
struct Device {
    name: &'static str,
    cred: Credential,
    replica: Arc<Replica>,
    seen: Arc<Mutex<Vec<Seen>>>,
    _subscription: Subscription,
    client: Option<SyncClient>,
}

impl Device {
    /// Subscribes to the replica's document observer before it ever syncs.
    fn new(
        relay: &RunningRelay,
        clock: &Arc<AtomicU64>,
        name: &'static str,
        role: Role,
        id: &str,
    ) -> Self {
        let cred = credential(relay, name, role, id);
        let replica = replica(&cred);
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (log, clock) = (Arc::clone(&seen), Arc::clone(clock));
        let subscription = replica.subscribe(Arc::new(move |changes: &[DocChange]| {
            let mut log = log.lock().unwrap();
            for change in changes {
                log.push(Seen {
                    at: clock.fetch_add(1, Ordering::SeqCst),
                    doc: change.doc_id.to_string(),
                    origin: change.origin,
                });
            }
        }));
        Self {
            name,
            cred,
            replica,
            seen,
            _subscription: subscription,
            client: None,
        }
    }

    fn go_live(&mut self) {
        let options = SyncOptions {
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
            ..SyncOptions::default()
        };
        self.client = Some(SyncClient::start(
            Arc::clone(&self.replica),
            self.cred.clone(),
            options,
        ));
    }

    async fn sync(&self) -> SyncReport {
        sync(&self.replica, &self.cred).await
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Documents received from other devices (origin Remote), ever.
    fn received(&self) -> BTreeSet<String> {
        self.seen()
            .into_iter()
            .filter(|s| s.origin == ChangeOrigin::Remote)
            .map(|s| s.doc)
            .collect()
    }
}

/// Sync the devices that are not live until every device holds exactly the
/// documents `expected` names for it, nothing waits for upload, and every copy of a
/// document has the same heads. Panics with what differs after [`WAIT`].
async fn settle(devices: &[&Device], expected: &BTreeMap<&str, BTreeSet<String>>, stage: &str) {
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        for device in devices.iter().filter(|d| d.client.is_none()) {
            sync(&device.replica, &device.cred).await;
        }
        let problems = differences(devices, expected);
        if problems.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= until {
            let status: Vec<String> = devices
                .iter()
                .filter_map(|d| Some(format!("{}: {:?}", d.name, d.client.as_ref()?.status())))
                .collect();
            panic!("{stage}: devices did not settle: {problems:#?}\nlive clients: {status:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn differences(devices: &[&Device], expected: &BTreeMap<&str, BTreeSet<String>>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut heads: BTreeMap<String, BTreeMap<&str, Vec<String>>> = BTreeMap::new();
    for device in devices {
        let pending = device.replica.pending_uploads().unwrap();
        if pending > 0 {
            problems.push(format!("{}: {pending} pending uploads", device.name));
        }
        let holds = held(&device.replica);
        let want = &expected[device.name];
        if &holds != want {
            problems.push(format!(
                "{}: holds {:?} extra, {:?} missing",
                device.name,
                holds.difference(want).collect::<Vec<_>>(),
                want.difference(&holds).collect::<Vec<_>>()
            ));
        }
        for doc in holds {
            let h = heads_of(&device.replica, &doc);
            heads.entry(doc).or_default().insert(device.name, h);
        }
    }
    for (doc, copies) in heads {
        let distinct: BTreeSet<&Vec<String>> = copies.values().collect();
        if distinct.len() > 1 {
            problems.push(format!("{doc}: copies differ: {copies:?}"));
        }
    }
    problems
}

// ---------------------------------------------------------------------------------
// 1. A day's work
// ---------------------------------------------------------------------------------

/// Two stores, four couriers and a dispatcher work a day: orders, assignments,
/// pickups, deliveries, cash, a failed attempt, notes, and one delivery reassigned
/// from c1 to c2 mid-day. Half the devices stay live (pushes), half sync in one-shot
/// rounds (catch-up pages). Every document any device's observer ever heard of is
/// checked against that device's grants at the time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_days_work_leaks_nothing_to_anyone() {
    let (_dir, relay) = relay().await;
    let clock = Arc::new(AtomicU64::new(0));
    let mut tab1 = Device::new(&relay, &clock, "tablet-s1", Role::Store, "S1");
    let mut tab2 = Device::new(&relay, &clock, "tablet-s2", Role::Store, "S2");
    let mut c1 = Device::new(&relay, &clock, "phone-c1", Role::Courier, "c1");
    let mut c2 = Device::new(&relay, &clock, "phone-c2", Role::Courier, "c2");
    let mut c3 = Device::new(&relay, &clock, "phone-c3", Role::Courier, "c3");
    let c4 = Device::new(&relay, &clock, "phone-c4", Role::Courier, "c4");
    let mut console = Device::new(&relay, &clock, "console", Role::Dispatcher, "");
    // Live (pushes): the console, tablet S2, couriers c1..c3. One-shot rounds
    // (catch-up pages and resumes): tablet S1 and courier c4.
    for device in [&mut console, &mut tab2, &mut c1, &mut c2, &mut c3] {
        device.go_live();
    }
    let _ = &mut tab1;
    let details = EventDetails::default();
    let none = NewDelivery::default();

    // Morning: the stores take orders, pick and pack them, and assign couriers.
    let s1: Vec<DocId> = (1..=4)
        .map(|n| tab1.replica.create_order(&order("S1", n)).unwrap())
        .collect();
    for o in &s1 {
        for kind in ["confirmed", "picking", "packed"] {
            tab1.replica.record_event(o, kind, &details).unwrap();
        }
    }
    let d1 = tab1.replica.assign_courier(&s1[0], "c1", &none).unwrap();
    let d2 = tab1.replica.assign_courier(&s1[1], "c1", &none).unwrap();
    let d3 = tab1.replica.assign_courier(&s1[2], "c2", &none).unwrap();
    // s1[3] waits in the store for a courier: no courier may see it.
    let s2: Vec<DocId> = (5..=7)
        .map(|n| tab2.replica.create_order(&order("S2", n)).unwrap())
        .collect();
    for o in &s2 {
        tab2.replica.record_event(o, "confirmed", &details).unwrap();
    }
    let d5 = tab2.replica.assign_courier(&s2[0], "c3", &none).unwrap();
    let d6 = tab2.replica.assign_courier(&s2[1], "c4", &none).unwrap();
    let d7 = tab2.replica.assign_courier(&s2[2], "c3", &none).unwrap();
    let (o1, o2, o3, o4) = (&s1[0], &s1[1], &s1[2], &s1[3]);
    let (o5, o6, o7) = (&s2[0], &s2[1], &s2[2]);

    let s1_docs = ids(&[o1, o2, o3, o4, &d1, &d2, &d3]);
    let s2_docs = ids(&[o5, o6, o7, &d5, &d6, &d7]);
    let all: BTreeSet<String> = s1_docs.union(&s2_docs).cloned().collect();
    let mut expected: BTreeMap<&str, BTreeSet<String>> = BTreeMap::from([
        ("tablet-s1", s1_docs.clone()),
        ("tablet-s2", s2_docs.clone()),
        ("phone-c1", ids(&[o1, &d1, o2, &d2])),
        ("phone-c2", ids(&[o3, &d3])),
        ("phone-c3", ids(&[o5, &d5, o7, &d7])),
        ("phone-c4", ids(&[o6, &d6])),
        ("console", all.clone()),
    ]);
    let devices = [&tab1, &tab2, &c1, &c2, &c3, &c4, &console];
    settle(&devices, &expected, "morning").await;

    // Midday: the couriers work their stops.
    c1.replica.record_event(&d1, "picked_up", &details).unwrap();
    c1.replica.record_event(&d1, "delivered", &details).unwrap();
    let door = |d: &DocId, amount| NewLedgerEntry {
        delivery_id: Some(d.to_string()),
        ..NewLedgerEntry::payment(PaymentMethod::Cash, amount, "IRR")
    };
    c1.replica
        .record_payment(o1, &door(&d1, 8_800_000))
        .unwrap();
    c1.replica.record_event(&d2, "picked_up", &details).unwrap();
    c1.replica
        .record_event(&d2, "failed_attempt", &details)
        .unwrap();
    c1.replica
        .add_note(&d2, "nobody home, left a card")
        .unwrap();
    c2.replica.record_event(&d3, "picked_up", &details).unwrap();
    c2.replica.record_event(&d3, "delivered", &details).unwrap();
    c3.replica.record_event(&d5, "picked_up", &details).unwrap();
    c3.replica.record_event(&d5, "delivered", &details).unwrap();
    c3.replica
        .record_payment(o5, &door(&d5, 8_800_000))
        .unwrap();
    c3.replica.add_note(&d7, "gate code 4411").unwrap();
    c4.replica.record_event(&d6, "picked_up", &details).unwrap();
    c4.replica
        .record_event(&d6, "failed_attempt", &details)
        .unwrap();
    console
        .replica
        .add_note(o6, "customer called: deliver after 6 pm")
        .unwrap();
    tab2.replica.add_note(o7, "fragile: glass jars").unwrap();
    settle(&devices, &expected, "midday").await;
    assert_eq!(tab1.replica.delivery(&d2).unwrap().status, "failed_attempt");

    // The store reassigns the failed delivery from c1 to c2.
    let reassign_written = clock.fetch_add(1, Ordering::SeqCst);
    let moved = tab1.replica.assign_courier(o2, "c2", &none).unwrap();
    assert_eq!(moved, d2, "the open delivery is reassigned, not a new one");
    expected.insert("phone-c1", ids(&[o1, &d1]));
    expected.insert("phone-c2", ids(&[o3, &d3, o2, &d2]));
    settle(&devices, &expected, "reassignment").await;

    // Afternoon: c2 delivers the moved stop and collects the cash.
    c2.replica.record_event(&d2, "picked_up", &details).unwrap();
    c2.replica.record_event(&d2, "delivered", &details).unwrap();
    c2.replica
        .record_payment(o2, &door(&d2, 8_800_000))
        .unwrap();
    c1.replica.add_note(o1, "customer tipped").unwrap();
    settle(&devices, &expected, "afternoon").await;

    for device in &mut [
        &mut tab1,
        &mut tab2,
        &mut c1,
        &mut c2,
        &mut c3,
        &mut console,
    ] {
        if let Some(client) = device.client.take() {
            client.stop().await;
        }
    }
    let c4 = c4;

    // Nothing was refused: every change above was one its role may make.
    for device in [&tab1, &tab2, &c1, &c2, &c3, &c4, &console] {
        assert_eq!(
            device.replica.refused_changes().unwrap(),
            Vec::new(),
            "{}",
            device.name
        );
    }

    // Every document any device ever received was in its grants at the time.
    let static_grants: BTreeMap<&str, BTreeSet<String>> = BTreeMap::from([
        ("tablet-s1", s1_docs.clone()),
        ("tablet-s2", s2_docs.clone()),
        ("phone-c1", ids(&[o1, &d1, o2, &d2])),
        ("phone-c2", ids(&[o3, &d3, o2, &d2])),
        ("phone-c3", ids(&[o5, &d5, o7, &d7])),
        ("phone-c4", ids(&[o6, &d6])),
        ("console", all.clone()),
    ]);
    let moved_docs = ids(&[o2, &d2]);
    for device in [&tab1, &tab2, &c1, &c2, &c3, &c4, &console] {
        let grants = &static_grants[device.name];
        for seen in device.seen() {
            assert!(
                grants.contains(&seen.doc),
                "{} heard of {} ({:?}) outside its grants",
                device.name,
                seen.doc,
                seen.origin
            );
        }
        // It received everything it ever had a right to (the console: everything;
        // a tablet: what the other devices wrote on its store's documents).
        let received = device.received();
        if device.name == "console" {
            assert_eq!(received, all, "the console receives everything");
        }
    }
    // c1: the moved documents only before the reassignment; then removed, and
    // nothing about them after.
    let c1_seen = c1.seen();
    for doc in &moved_docs {
        let remote: Vec<u64> = c1_seen
            .iter()
            .filter(|s| &s.doc == doc && s.origin == ChangeOrigin::Remote)
            .map(|s| s.at)
            .collect();
        assert!(!remote.is_empty(), "c1 had {doc} before the move");
        assert!(
            remote.iter().all(|at| *at < reassign_written),
            "c1 received {doc} after it was reassigned away: {c1_seen:?}"
        );
        let removed: Vec<u64> = c1_seen
            .iter()
            .filter(|s| &s.doc == doc && s.origin == ChangeOrigin::Removed)
            .map(|s| s.at)
            .collect();
        assert_eq!(removed.len(), 1, "c1 removed {doc} once: {c1_seen:?}");
        assert!(removed[0] > reassign_written);
    }
    // c2: the moved documents only after the reassignment.
    for seen in c2.seen() {
        if moved_docs.contains(&seen.doc) {
            assert!(
                seen.at > reassign_written,
                "c2 heard of {} before it was assigned: {seen:?}",
                seen.doc
            );
        }
    }
    assert!(moved_docs.is_subset(&c2.received()));
    // Nobody else ever removed anything.
    for device in [&tab1, &tab2, &c2, &c3, &c4, &console] {
        assert!(
            device
                .seen()
                .iter()
                .all(|s| s.origin != ChangeOrigin::Removed),
            "{}",
            device.name
        );
    }

    // Final state: each holds exactly its documents, identical to the console's.
    for device in [&tab1, &tab2, &c1, &c2, &c3, &c4] {
        let holds = held(&device.replica);
        assert_eq!(holds, expected[device.name], "{}", device.name);
        for doc in &holds {
            assert_eq!(
                heads_of(&device.replica, doc),
                heads_of(&console.replica, doc),
                "{} {doc}",
                device.name
            );
        }
    }
    let q = |courier: &str| DeliveryQuery {
        courier: Some(courier.into()),
        ..Default::default()
    };
    let listed = |r: &Replica, c: &str| -> BTreeSet<String> {
        r.deliveries(&q(c))
            .unwrap()
            .into_iter()
            .map(|row| row.doc_id)
            .collect()
    };
    assert_eq!(listed(&c1.replica, "c1"), ids(&[&d1]));
    assert_eq!(listed(&c2.replica, "c2"), ids(&[&d3, &d2]));
    assert_eq!(listed(&console.replica, "c1"), ids(&[&d1]));
    assert_eq!(listed(&console.replica, "c2"), ids(&[&d3, &d2]));
    let view = console.replica.delivery(&d2).unwrap();
    assert_eq!(view.status, "delivered");
    assert_eq!(view.courier.as_deref(), Some("c2"));
    assert_eq!(console.replica.order(o2).unwrap().payments.len(), 1);
    assert_eq!(console.replica.delivery(&d6).unwrap().failed_attempts, 1);
    relay.shutdown().await;
}

// ---------------------------------------------------------------------------------
// 2. Reassignment
// ---------------------------------------------------------------------------------

/// c1 holds delivery D (and order O) and works it; the store reassigns D to c2. c2
/// gets D and O with their whole history; c1 loses them (but keeps its other
/// stop). An event c1 recorded offline on D after the move is refused, quarantined
/// and kept in c1's refused list, never reaches c2, and c1 then purges D.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reassigned_delivery_moves_with_its_history_and_late_changes_are_quarantined() {
    let (_dir, relay) = relay().await;
    let clock = Arc::new(AtomicU64::new(0));
    let tablet = Device::new(&relay, &clock, "tablet-1", Role::Store, "S1");
    let c1 = Device::new(&relay, &clock, "phone-1", Role::Courier, "c1");
    let c2 = Device::new(&relay, &clock, "phone-2", Role::Courier, "c2");
    let console = Device::new(&relay, &clock, "console", Role::Dispatcher, "");
    let details = EventDetails::default();
    let none = NewDelivery::default();

    let o = tablet.replica.create_order(&order("S1", 1)).unwrap();
    let d = tablet.replica.assign_courier(&o, "c1", &none).unwrap();
    let keep_o = tablet.replica.create_order(&order("S1", 2)).unwrap();
    let keep_d = tablet.replica.assign_courier(&keep_o, "c1", &none).unwrap();
    tablet.sync().await;
    c1.sync().await;
    c2.sync().await;
    assert_eq!(held(&c1.replica), ids(&[&o, &d, &keep_o, &keep_d]));
    assert!(held(&c2.replica).is_empty());

    // c1 works D: picked up, nobody at the door, a note.
    c1.replica.record_event(&d, "picked_up", &details).unwrap();
    c1.replica
        .record_event(&d, "failed_attempt", &details)
        .unwrap();
    c1.replica
        .add_note(&d, "dog in the yard, no answer")
        .unwrap();
    c1.sync().await;
    tablet.sync().await;
    assert_eq!(
        tablet.replica.delivery(&d).unwrap().status,
        "failed_attempt"
    );

    // The store moves D to c2.
    let moved_at = clock.fetch_add(1, Ordering::SeqCst);
    assert_eq!(tablet.replica.assign_courier(&o, "c2", &none).unwrap(), d);
    tablet.sync().await;

    // c1, offline and unaware, records an arrival on D and a note on its other stop.
    c1.replica.record_event(&d, "arrived", &details).unwrap();
    let late = c1
        .replica
        .outbox(10)
        .unwrap()
        .into_iter()
        .find(|e| e.doc_id == d.to_string())
        .expect("the late event waits in c1's outbox");
    let late_hash = ChangeHash(late.hash.clone().try_into().unwrap());
    c1.replica.add_note(&keep_d, "ring twice").unwrap();

    // c2 gets D and O with everything c1 recorded before the move.
    c2.sync().await;
    assert_eq!(held(&c2.replica), ids(&[&o, &d]));
    let view = c2.replica.delivery(&d).unwrap();
    assert_eq!(view.courier.as_deref(), Some("c2"));
    assert_eq!(view.status, "assigned");
    let by_c1: Vec<&str> = view
        .timeline
        .iter()
        .filter(|e| e.actor == "phone-1")
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(
        by_c1,
        ["picked_up", "failed_attempt"],
        "{:?}",
        view.timeline
    );
    assert!(view.notes.contains("dog in the yard"), "{}", view.notes);
    assert_eq!(
        c2.replica.order(&o).unwrap().deliveries,
        vec![d.to_string()]
    );
    assert!(
        c2.replica
            .deliveries(&DeliveryQuery {
                courier: Some("c2".into()),
                ..Default::default()
            })
            .unwrap()
            .iter()
            .any(|row| row.doc_id == d.to_string())
    );

    // c1 comes back: the late event is refused (not lost), D and O are purged, its
    // other stop and note go through.
    c1.sync().await;
    let refused = c1.replica.refused_changes().unwrap();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].hash, late.hash);
    assert_eq!(refused[0].doc_id, d.to_string());
    assert_eq!(refused[0].code, "Forbidden");
    assert!(
        refused[0].reason.contains(&d.to_string()),
        "{}",
        refused[0].reason
    );
    assert_eq!(c1.replica.pending_uploads().unwrap(), 0);
    assert_eq!(held(&c1.replica), ids(&[&keep_o, &keep_d]));
    let c1_list: Vec<String> = c1
        .replica
        .deliveries(&DeliveryQuery {
            courier: Some("c1".into()),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|row| row.doc_id)
        .collect();
    assert_eq!(c1_list, vec![keep_d.to_string()]);
    assert!(
        c1.replica
            .deliveries(&DeliveryQuery {
                order_id: Some(o.to_string()),
                ..Default::default()
            })
            .unwrap()
            .is_empty()
    );
    assert!(
        c1.replica
            .orders(&OrderQuery::default())
            .unwrap()
            .iter()
            .all(|row| row.doc_id != o.to_string())
    );
    assert!(c1.replica.delivery(&d).is_err() && c1.replica.order(&o).is_err());
    for doc in [&o, &d] {
        let removed: Vec<Seen> = c1
            .seen()
            .into_iter()
            .filter(|s| s.doc == doc.to_string() && s.origin == ChangeOrigin::Removed)
            .collect();
        assert_eq!(removed.len(), 1, "c1 was told it lost {doc}");
        assert!(removed[0].at > moved_at);
    }
    for seen in c2.seen() {
        assert!(
            seen.at > moved_at,
            "c2 heard of {} before the move",
            seen.doc
        );
    }

    // The relay kept it in quarantine with its reason, and never logged it.
    let store =
        SqliteLogStore::open(relay.database.as_ref().unwrap(), &relay.keys.relay_id).unwrap();
    let quarantined: Vec<_> = store
        .quarantine_list()
        .unwrap()
        .into_iter()
        .map(|(_, q)| q)
        .filter(|q| q.change.hash == late.hash)
        .collect();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    let q = &quarantined[0];
    assert_eq!(q.change.device_id, "phone-1");
    assert_eq!(q.change.doc_id, d.to_string());
    assert_eq!(q.change.bytes, late.bytes);
    assert_eq!(q.code, "Forbidden");
    assert_eq!(q.reason, refused[0].reason);
    assert!(!store.contains(&late.hash).unwrap());

    // Nobody else ever sees it; the note on c1's other stop reached everyone.
    c2.sync().await;
    tablet.sync().await;
    console.sync().await;
    for device in [&c2, &tablet, &console] {
        assert!(
            !contains_change(&device.replica, &d, &late_hash),
            "{} received the refused change",
            device.name
        );
        assert_eq!(
            heads_of(&device.replica, &d.to_string()),
            heads_of(&tablet.replica, &d.to_string())
        );
        assert_ne!(device.replica.delivery(&d).unwrap().status, "arrived");
    }
    assert!(
        tablet
            .replica
            .delivery(&keep_d)
            .unwrap()
            .notes
            .contains("ring twice")
    );
    assert_eq!(
        heads_of(&c1.replica, &keep_d.to_string()),
        heads_of(&console.replica, &keep_d.to_string())
    );

    // c2 carries on with the stop as usual.
    c2.replica.record_event(&d, "picked_up", &details).unwrap();
    c2.replica.record_event(&d, "delivered", &details).unwrap();
    c2.sync().await;
    tablet.sync().await;
    assert_eq!(tablet.replica.delivery(&d).unwrap().status, "delivered");
    assert!(c2.replica.refused_changes().unwrap().is_empty());
    // c1 does not get it back.
    c1.sync().await;
    assert_eq!(held(&c1.replica), ids(&[&keep_o, &keep_d]));
    relay.shutdown().await;
}

// ---------------------------------------------------------------------------------
// 3. A device modified to bypass the local checks
// ---------------------------------------------------------------------------------

/// A device speaking the protocol directly over QUIC, with no replica and no local
/// rules: it sends whatever it likes and records every document the relay tells it
/// anything about.
struct RawDevice {
    _endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
    /// Every document named in anything the relay sent.
    told_about: BTreeSet<String>,
}

impl RawDevice {
    /// A QUIC connection and its stream, nothing sent yet.
    async fn open(relay: &RunningRelay) -> Self {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(tls::client_config(&relay.keys.cert_der).unwrap());
        let connection = endpoint
            .connect(relay.local_addr, "localhost")
            .unwrap()
            .await
            .unwrap();
        let (send, recv) = connection.open_bi().await.unwrap();
        Self {
            _endpoint: endpoint,
            connection,
            send,
            recv,
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME),
            told_about: BTreeSet::new(),
        }
    }

    /// Say hello with no cursor and read until caught up.
    async fn connect(relay: &RunningRelay, credential: &Credential) -> Self {
        let mut device = Self::open(relay).await;
        device
            .send(&Message::Hello(Hello {
                magic: MAGIC,
                version: PROTOCOL_VERSION,
                credential: credential.to_bytes(),
                cursor: None,
                client: "modified-app/6.6.6".into(),
            }))
            .await;
        match device.next().await {
            Message::Welcome(_) => {}
            other => panic!("expected welcome, got {other:?}"),
        }
        loop {
            if let Message::Changes(c) = device.next().await
                && c.caught_up
            {
                break;
            }
        }
        device
    }

    async fn send(&mut self, message: &Message) {
        let frame = protocol::encode(message, DEFAULT_MAX_FRAME).unwrap();
        self.send.write_all(&frame).await.unwrap();
    }

    /// The next message from the relay (within [`WAIT`]).
    async fn next(&mut self) -> Message {
        self.next_within(WAIT)
            .await
            .expect("the relay answers in time")
    }

    /// The next message from the relay, if one comes within `limit`.
    async fn next_within(&mut self, limit: Duration) -> Option<Message> {
        let until = tokio::time::Instant::now() + limit;
        loop {
            if let Some(frame) = self.decoder.next_frame().unwrap() {
                let message = protocol::decode(&frame).unwrap();
                match &message {
                    Message::Changes(c) => {
                        self.told_about
                            .extend(c.entries.iter().map(|e| e.doc_id.clone()));
                    }
                    Message::DocSync(s) => {
                        self.told_about.insert(s.doc_id.clone());
                    }
                    Message::Unshare(u) => self.told_about.extend(u.doc_ids.iter().cloned()),
                    _ => {}
                }
                return Some(message);
            }
            let mut buf = vec![0u8; 64 * 1024];
            let read = match tokio::time::timeout_at(until, self.recv.read(&mut buf)).await {
                Ok(read) => read.expect("the stream stays readable"),
                Err(_) => return None,
            };
            match read {
                Some(n) => self.decoder.push(&buf[..n]),
                None => panic!("the relay closed the stream"),
            }
        }
    }

    /// Upload one crafted change and return the relay's verdict on it.
    async fn upload(&mut self, batch: u64, doc: &DocId, bytes: Vec<u8>) -> Vec<Refusal> {
        self.send(&Message::Upload(Upload {
            batch,
            changes: vec![UploadChange {
                doc_id: doc.to_string(),
                bytes,
            }],
        }))
        .await;
        loop {
            match self.next().await {
                Message::UploadAck(ack) if ack.batch == batch => {
                    assert!(ack.accepted.is_empty(), "accepted: {ack:?}");
                    return ack.refused;
                }
                Message::Error(e) => assert!(!e.fatal, "the session ended: {e:?}"),
                _ => {}
            }
        }
    }

    async fn close(mut self) {
        self.send(&Message::Bye).await;
        let _ = self.send.finish();
        self.connection.close(0u32.into(), b"bye");
    }
}

/// Load a document as another device exported it, change it with `edit`, and
/// return the raw change (hash and bytes), as a modified app would upload it.
fn craft(exported: &[u8], edit: impl FnOnce(&mut Transaction<'_>)) -> (ChangeHash, Vec<u8>) {
    let mut doc = Automerge::load(exported).unwrap();
    let mut tx = doc.transaction();
    edit(&mut tx);
    tx.commit();
    let change = doc.get_last_local_change().expect("a change was made");
    (change.hash(), change.raw_bytes().to_vec())
}

/// The object at `key` of `parent`, then at `index` of that list.
fn nth(tx: &Transaction<'_>, key: &str, index: usize) -> automerge::ObjId {
    let list = tx.get(ROOT, key).unwrap().expect("the key exists").1;
    tx.get(&list, index).unwrap().expect("the entry exists").1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_crafted_by_a_modified_device_are_refused_quarantined_and_never_shared() {
    let (_dir, relay) = relay().await;
    let clock = Arc::new(AtomicU64::new(0));
    let tablet = Device::new(&relay, &clock, "tablet-1", Role::Store, "S1");
    let phone8 = Device::new(&relay, &clock, "phone-8", Role::Courier, "c8");
    let phone9 = Device::new(&relay, &clock, "phone-9", Role::Courier, "c9");
    let console = Device::new(&relay, &clock, "console", Role::Dispatcher, "");
    let honest = [&tablet, &phone8, &phone9, &console];
    let details = EventDetails::default();
    let none = NewDelivery::default();
    let sync_all = || async {
        for device in honest {
            sync(&device.replica, &device.cred).await;
        }
    };

    // c9's stop (order `mine`) and c8's (order `theirs`); c9 collects cash at the door.
    let mine = tablet.replica.create_order(&order("S1", 1)).unwrap();
    let my_stop = tablet.replica.assign_courier(&mine, "c9", &none).unwrap();
    let theirs = tablet.replica.create_order(&order("S1", 2)).unwrap();
    let their_stop = tablet.replica.assign_courier(&theirs, "c8", &none).unwrap();
    sync_all().await;
    phone9
        .replica
        .record_event(&my_stop, "picked_up", &details)
        .unwrap();
    phone9
        .replica
        .record_event(&my_stop, "delivered", &details)
        .unwrap();
    let cash = NewLedgerEntry {
        delivery_id: Some(my_stop.to_string()),
        ..NewLedgerEntry::payment(PaymentMethod::Cash, 8_800_000, "IRR")
    };
    let payment = phone9.replica.record_payment(&mine, &cash).unwrap();
    sync_all().await;
    sync_all().await;
    let export = |id: &DocId| console.replica.export(id).unwrap();

    // The modified app, holding a second credential for courier c9.
    let rogue_cred = credential(&relay, "rogue-9", Role::Courier, "c9");
    let mut rogue = RawDevice::connect(&relay, &rogue_cred).await;

    // (a) Cut the price of its own order's first line to 1 rial.
    let price = craft(&export(&mine), |tx| {
        let line = nth(tx, "lines", 0);
        tx.put(&line, "unit_price", 1i64).unwrap();
    });
    // (b) Move another courier's stop.
    let other_stop = craft(&export(&their_stop), |tx| {
        let stop = tx.get(ROOT, "stop").unwrap().unwrap().1;
        tx.put(&stop, "address", "1 Elsewhere St").unwrap();
    });
    // (b') Move its own stop (couriers may not change where they go).
    let own_stop = craft(&export(&my_stop), |tx| {
        let stop = tx.get(ROOT, "stop").unwrap().unwrap().1;
        tx.put(&stop, "address", "1 Elsewhere St").unwrap();
    });
    // (c) Delete the cash payment it collected.
    let deleted = craft(&export(&mine), |tx| {
        let payments = tx.get(ROOT, "payments").unwrap().unwrap().1;
        assert_eq!(tx.length(&payments), 1);
        tx.delete(&payments, 0).unwrap();
    });
    let attacks = [
        ("price edit", &mine, price, "lines".to_owned()),
        (
            "another courier's stop",
            &their_stop,
            other_stop,
            their_stop.to_string(),
        ),
        ("own stop", &my_stop, own_stop, "stop".to_owned()),
        ("deleted payment", &mine, deleted, payment.clone()),
    ];
    let mut crafted = Vec::new();
    for (batch, (what, doc, (hash, bytes), names)) in (1..).zip(attacks) {
        let refused = rogue.upload(batch, doc, bytes.clone()).await;
        assert_eq!(refused.len(), 1, "{what}: {refused:?}");
        let r = &refused[0];
        assert_eq!(r.code, ErrorCode::Forbidden, "{what}: {r:?}");
        assert_eq!(r.hash, hash.0.to_vec(), "{what}");
        assert_eq!(r.doc_id, doc.to_string(), "{what}");
        assert!(r.reason.contains(&names), "{what}: {}", r.reason);
        crafted.push((what, doc, hash, bytes, r.reason.clone()));
    }
    // On the wire, the modified device heard only of its own documents.
    assert!(
        rogue.told_about.is_subset(&ids(&[&mine, &my_stop])),
        "{:?}",
        rogue.told_about
    );
    rogue.close().await;

    // Each is in quarantine with its reason, and none is in the log.
    let store =
        SqliteLogStore::open(relay.database.as_ref().unwrap(), &relay.keys.relay_id).unwrap();
    let quarantine = store.quarantine_list().unwrap();
    for (what, doc, hash, bytes, reason) in &crafted {
        let entry = quarantine
            .iter()
            .map(|(_, q)| q)
            .find(|q| q.change.hash == hash.0.to_vec())
            .unwrap_or_else(|| panic!("{what} is not in quarantine: {quarantine:?}"));
        assert_eq!(entry.change.device_id, "rogue-9", "{what}");
        assert_eq!(entry.change.doc_id, doc.to_string(), "{what}");
        assert_eq!(&entry.change.bytes, bytes, "{what}");
        assert_eq!(entry.code, "Forbidden", "{what}");
        assert_eq!(&entry.reason, reason, "{what}");
        assert!(!store.contains(&hash.0).unwrap(), "{what} was logged");
    }

    // Honest devices carry on: one more change each way goes through.
    phone9
        .replica
        .add_note(&mine, "paid in exact change")
        .unwrap();
    phone8
        .replica
        .record_event(&their_stop, "picked_up", &details)
        .unwrap();
    sync_all().await;
    sync_all().await;
    for device in honest {
        assert_eq!(
            device.replica.pending_uploads().unwrap(),
            0,
            "{}",
            device.name
        );
        assert!(
            device.replica.refused_changes().unwrap().is_empty(),
            "{}",
            device.name
        );
    }
    assert!(
        console
            .replica
            .order(&mine)
            .unwrap()
            .notes
            .contains("exact change")
    );
    assert_eq!(
        console.replica.delivery(&their_stop).unwrap().status,
        "picked_up"
    );

    // No honest device ever received any crafted change.
    for (what, doc, hash, ..) in &crafted {
        for device in honest {
            assert!(
                !contains_change(&device.replica, doc, hash),
                "{} received the crafted {what}",
                device.name
            );
        }
    }
    let view = console.replica.order(&mine).unwrap();
    assert_eq!(view.lines[0].unit_price, 1_850_000);
    assert_eq!(view.payments.len(), 1);
    assert_eq!(view.payments[0].id, payment);
    assert_eq!(
        console.replica.delivery(&their_stop).unwrap().stop.address,
        "12 Vali-Asr St, Tehran"
    );
    // And each holds only its own documents.
    assert_eq!(held(&phone8.replica), ids(&[&theirs, &their_stop]));
    assert_eq!(held(&phone9.replica), ids(&[&mine, &my_stop]));
    for seen in phone8.seen().iter().chain(phone9.seen().iter()) {
        assert_ne!(seen.origin, ChangeOrigin::Removed, "{seen:?}");
    }
    relay.shutdown().await;
}

// ---------------------------------------------------------------------------------
// 4. Revocation and expiry during a session
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_revoked_or_expiring_while_connected_is_cut_off() {
    let (_dir, relay) = relay().await;
    let options = SyncOptions {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..SyncOptions::default()
    };
    let live = |c: &SyncClient| c.status().state == ConnectionState::Live;
    let stopped = |c: &SyncClient| matches!(c.status().state, ConnectionState::Stopped { .. });

    // A courier phone and the dispatcher console, both live.
    let phone_cred = credential(&relay, "phone-r", Role::Courier, "c-r");
    let phone = SyncClient::start(replica(&phone_cred), phone_cred, options.clone());
    let console_cred = credential(&relay, "console", Role::Dispatcher, "");
    let console = SyncClient::start(replica(&console_cred), console_cred, options.clone());
    assert!(
        eventually(WAIT, || live(&phone) && live(&console)).await,
        "{:?} {:?}",
        phone.status(),
        console.status()
    );

    // The operator revokes the phone through another handle on the relay database.
    SqliteLogStore::open(relay.database.as_ref().unwrap(), &relay.keys.relay_id)
        .unwrap()
        .revoke("phone-r")
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || stopped(&phone)).await,
        "the revoked phone is still connected: {:?}",
        phone.status()
    );
    let status = phone.status();
    let ConnectionState::Stopped { reason } = &status.state else {
        unreachable!()
    };
    assert!(reason.contains("revoked"), "{reason}");
    assert!(status.last_error.unwrap_or_default().contains("revoked"));
    // It stays stopped (no retry loop), and the console is untouched.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(stopped(&phone) && live(&console), "{:?}", console.status());

    // A credential that expires a few seconds into its session ends it likewise.
    let expiring_cred = credential_from(
        &relay.keys,
        &relay,
        "phone-e",
        Role::Courier,
        "c-e",
        now_ms() - HOUR_MS + 8_000,
    );
    let expiring = SyncClient::start(replica(&expiring_cred), expiring_cred, options);
    assert!(
        eventually(Duration::from_secs(7), || live(&expiring)).await,
        "{:?}",
        expiring.status()
    );
    assert!(
        eventually(Duration::from_secs(15), || stopped(&expiring)).await,
        "the expired phone is still connected: {:?}",
        expiring.status()
    );
    let status = expiring.status();
    let ConnectionState::Stopped { reason } = &status.state else {
        unreachable!()
    };
    assert!(reason.contains("expired"), "{reason}");
    assert!(live(&console), "{:?}", console.status());

    phone.stop().await;
    expiring.stop().await;
    console.stop().await;
    relay.shutdown().await;
}

// ---------------------------------------------------------------------------------
// 5. A reassignment while the couriers are still catching up
// ---------------------------------------------------------------------------------

/// A real client session over a raw connection whose reading the test controls:
/// an app suspended in the middle of its catch-up (the relay stops writing pages
/// once QUIC flow control and its small outbound queue are full).
struct PausedDevice {
    raw: RawDevice,
    session: ClientSession,
    /// The cursor of the first page marked `caught_up`.
    caught_up_at: Option<u64>,
}

impl PausedDevice {
    /// Connect, say hello, read the welcome, then stop reading.
    async fn connect(relay: &RunningRelay, device: &Device) -> Self {
        let mut this = Self {
            raw: RawDevice::open(relay).await,
            session: ClientSession::new(device.cred.to_bytes(), ClientConfig::default()),
            caught_up_at: None,
        };
        this.session.start(&device.replica).unwrap();
        this.flush().await;
        let welcome = this.raw.next().await;
        assert!(matches!(welcome, Message::Welcome(_)), "{welcome:?}");
        this.session.handle(&device.replica, welcome).unwrap();
        this.flush().await;
        this
    }

    async fn flush(&mut self) {
        while let Some(message) = self.session.poll_transmit() {
            self.raw.send(&message).await;
        }
    }

    /// Resume reading: handle everything until the session is idle and the relay
    /// has been quiet for a second.
    async fn resume(&mut self, device: &Device) {
        let until = tokio::time::Instant::now() + WAIT * 2;
        loop {
            match self.raw.next_within(Duration::from_secs(1)).await {
                Some(message) => {
                    if let Message::Changes(c) = &message
                        && c.caught_up
                        && self.caught_up_at.is_none()
                    {
                        self.caught_up_at = Some(c.cursor);
                    }
                    self.session.handle(&device.replica, message).unwrap();
                    self.flush().await;
                }
                None if self.session.is_idle() => return,
                None => assert!(
                    tokio::time::Instant::now() < until,
                    "{} did not finish its catch-up: {:?}",
                    device.name,
                    self.session.progress()
                ),
            }
        }
    }
}

/// An order of about 32 KB of incompressible line names.
fn bulky_order(n: usize) -> waybill_core::model::NewOrder {
    use rand::Rng;
    let mut new = order("S1", n);
    let line = new.lines[0].clone();
    new.lines = (0..8)
        .map(|i| {
            let name: String = rand::thread_rng()
                .sample_iter(rand::distributions::Alphanumeric)
                .take(4000)
                .map(char::from)
                .collect();
            waybill_core::model::NewLine {
                sku: format!("SKU-{i}"),
                name,
                ..line.clone()
            }
        })
        .collect();
    new
}

/// The couriers' phones are in the middle of a long catch-up (reading the log page
/// by page from an old cursor) when the store moves delivery D from c1 to c2. A
/// device that is catching up is not sent live pushes, so the relay must account
/// for the move in the pages it has still to send: c2 must end up with D and its
/// order with their whole history, and c1 must be told to remove them.
///
/// Found by this test: the relay used to leave catching-up devices out of a batch's
/// view changes and filter pages by the audience at read time only, so c2 got D
/// without its history and c1 kept D and O. Now each page carries the view changes
/// in its stretch of the log (`Relay::view_between`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reassignment_during_a_catch_up_still_moves_the_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = ServeOptions::new(dir.path(), "127.0.0.1:0".parse().unwrap());
    // Small pages, so a few megabytes of log take many pages and the relay stops
    // writing once the paused devices' QUIC windows are full.
    options.config.page_bytes = 32 * 1024;
    let relay = start(options).await.unwrap();
    let clock = Arc::new(AtomicU64::new(0));
    let tablet = Device::new(&relay, &clock, "tablet-1", Role::Store, "S1");
    let c1 = Device::new(&relay, &clock, "phone-1", Role::Courier, "c1");
    let c2 = Device::new(&relay, &clock, "phone-2", Role::Courier, "c2");
    let none = NewDelivery::default();

    // D, assigned to c1; then a long day's worth of each courier's own stops, so
    // each courier has megabytes of log to catch up with.
    let o = tablet.replica.create_order(&order("S1", 1)).unwrap();
    let d = tablet.replica.assign_courier(&o, "c1", &none).unwrap();
    for (n, courier) in (2..).zip(["c1", "c2"].repeat(120)) {
        let bulk = tablet.replica.create_order(&bulky_order(n)).unwrap();
        tablet
            .replica
            .assign_courier(&bulk, courier, &none)
            .unwrap();
    }
    tablet.sync().await;

    // Both phones connect from scratch and are suspended after the welcome.
    let mut p1 = PausedDevice::connect(&relay, &c1).await;
    let mut p2 = PausedDevice::connect(&relay, &c2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The store moves D to c2 meanwhile.
    let moved_at = clock.fetch_add(1, Ordering::SeqCst);
    assert_eq!(tablet.replica.assign_courier(&o, "c2", &none).unwrap(), d);
    let moved = tablet.sync().await;

    p1.resume(&c1).await;
    p2.resume(&c2).await;
    // The scenario really happened: both were still catching up at the move.
    for (name, paused) in [("c1", &p1), ("c2", &p2)] {
        assert!(
            paused.caught_up_at.unwrap() >= moved.cursor,
            "{name} had caught up before the move ({:?} < {}): the test needs more log",
            paused.caught_up_at,
            moved.cursor
        );
    }

    // c2 holds D and O, identical to the store's copies; c1 was told to remove
    // them (checked again after an ordinary reconnect, which must repair anything
    // the first session got wrong). Every shortfall is collected, so a failure
    // describes all of them.
    let mut problems =
        moved_delivery_problems(&tablet, &c1, &c2, &o, &d, moved_at, "after the catch-up");
    c1.sync().await;
    c2.sync().await;
    problems.extend(moved_delivery_problems(
        &tablet,
        &c1,
        &c2,
        &o,
        &d,
        moved_at,
        "after a reconnect",
    ));
    assert!(problems.is_empty(), "{problems:#?}");
    relay.shutdown().await;
}

/// What is wrong with c1's and c2's copies after D (of order O) moved from c1 to c2.
fn moved_delivery_problems(
    tablet: &Device,
    c1: &Device,
    c2: &Device,
    o: &DocId,
    d: &DocId,
    moved_at: u64,
    when: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    let held2 = held(&c2.replica);
    for doc in [&o, &d] {
        let name = doc.to_string();
        if !held2.contains(&name) {
            problems.push(format!("c2 does not hold {name}"));
        } else if heads_of(&c2.replica, &name) != heads_of(&tablet.replica, &name) {
            problems.push(format!(
                "c2's copy of {name} differs from the store's: {:?} vs {:?}",
                heads_of(&c2.replica, &name),
                heads_of(&tablet.replica, &name)
            ));
        }
    }
    if let Ok(view) = c2.replica.delivery(d)
        && view.courier.as_deref() != Some("c2")
    {
        problems.push(format!("c2's copy of D names courier {:?}", view.courier));
    }
    let held1 = held(&c1.replica);
    for doc in [&o, &d] {
        let name = doc.to_string();
        if held1.contains(&name) {
            problems.push(format!("c1 still holds {name}"));
        }
        let removed = c1
            .seen()
            .iter()
            .any(|s| s.doc == name && s.origin == ChangeOrigin::Removed && s.at > moved_at);
        if !removed {
            problems.push(format!("c1 was never told to remove {name}"));
        }
    }
    problems
        .into_iter()
        .map(|p| format!("{when}: {p}"))
        .collect()
}
