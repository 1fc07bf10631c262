//! Replica behaviour on one device: mutations, rules, queries, observers.

use super::*;
use crate::model::*;
use crate::store::query::{DeliveryQuery, OrderQuery};
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) fn sample_order(number: &str, store: &str) -> NewOrder {
    NewOrder {
        number: number.to_owned(),
        channel: Channel::Web,
        store: store.to_owned(),
        customer: Customer {
            id: "c-88".into(),
            name: "Leila Karimi".into(),
            phone: "+98 912 000 0000".into(),
            address: "12 Vali-Asr St, Tehran".into(),
        },
        currency: "IRR".into(),
        fulfilment: Fulfilment::Delivery,
        lines: vec![NewLine {
            sku: "TEA-500".into(),
            name: "Black tea 500 g".into(),
            qty: 2,
            unit_price: 1_850_000,
        }],
        note: None,
    }
}

fn dispatcher() -> Replica {
    Replica::open_in_memory(
        DeviceIdentity::dispatcher("ops-1"),
        ReplicaOptions::default(),
    )
    .unwrap()
}

fn ev(r: &Replica, id: &DocId, kind: &str) -> Result<String, ReplicaError> {
    r.record_event(id, kind, &EventDetails::default())
}

#[test]
fn an_order_goes_from_placed_to_delivered_and_completed() {
    let r = dispatcher();
    let order = r.create_order(&sample_order("S1-000123", "S1")).unwrap();
    for k in ["confirmed", "picking", "packed"] {
        ev(&r, &order, k).unwrap();
    }
    let dlv = r
        .assign_courier(&order, "c1", &NewDelivery::default())
        .unwrap();
    assert_eq!(r.delivery(&dlv).unwrap().courier.as_deref(), Some("c1"));
    for k in ["picked_up", "in_transit", "arrived", "delivered"] {
        ev(&r, &dlv, k).unwrap();
    }
    let view = r.order(&order).unwrap();
    assert_eq!(view.status, "completed");
    assert_eq!(view.deliveries, vec![dlv.to_string()]);
    assert_eq!(r.delivery(&dlv).unwrap().status, "delivered");
    let rows = r
        .deliveries(&DeliveryQuery {
            courier: Some("c1".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "delivered");
    assert!(r.verify().unwrap().mismatches.is_empty());
}

#[test]
fn invalid_transitions_are_refused_and_change_nothing() {
    let r = dispatcher();
    let order = r.create_order(&sample_order("S1-1", "S1")).unwrap();
    let dlv = r
        .assign_courier(&order, "c1", &NewDelivery::default())
        .unwrap();
    let heads = r.heads(&dlv).unwrap();
    let err = ev(&r, &dlv, "delivered").unwrap_err();
    assert!(
        matches!(
            err,
            ReplicaError::Model(ModelError::InvalidTransition { .. })
        ),
        "{err}"
    );
    assert_eq!(r.heads(&dlv).unwrap(), heads);
    assert!(matches!(
        ev(&r, &dlv, "teleported"),
        Err(ReplicaError::Model(ModelError::UnknownEventKind { .. }))
    ));
    assert!(matches!(
        ev(&r, &order, "picked_up"),
        Err(ReplicaError::Model(ModelError::UnknownEventKind { .. }))
    ));
}

#[test]
fn payments_derive_the_balance_and_refuse_other_currencies() {
    let r = dispatcher();
    let order = r.create_order(&sample_order("S1-2", "S1")).unwrap();
    r.record_payment(
        &order,
        &NewLedgerEntry::payment(PaymentMethod::Online, 1_000_000, "IRR"),
    )
    .unwrap();
    let err = r
        .record_payment(
            &order,
            &NewLedgerEntry::payment(PaymentMethod::Cash, 10, "EUR"),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        ReplicaError::Model(ModelError::CurrencyMismatch { .. })
    ));
    let err = r
        .record_payment(
            &order,
            &NewLedgerEntry::payment(PaymentMethod::Cash, 0, "IRR"),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        ReplicaError::Model(ModelError::InvalidInput { .. })
    ));
    let view = r.order(&order).unwrap();
    assert_eq!(view.balance.total, 3_700_000);
    assert_eq!(view.balance.due, 2_700_000);
    let rows = r.orders(&OrderQuery::default()).unwrap();
    assert_eq!(rows[0].balance_due, 2_700_000);
}

#[test]
fn roles_are_enforced_locally() {
    let tablet = Replica::open_in_memory(
        DeviceIdentity::store("tab-1", "S1"),
        ReplicaOptions::default(),
    )
    .unwrap();
    assert!(tablet.create_order(&sample_order("S1-3", "S1")).is_ok());
    let err = tablet
        .create_order(&sample_order("S2-3", "S2"))
        .unwrap_err();
    assert!(
        matches!(err, ReplicaError::Model(ModelError::Forbidden { .. })),
        "{err}"
    );
}

#[test]
fn search_finds_orders_by_number_and_customer_name() {
    let r = dispatcher();
    r.create_order(&sample_order("S1-000123", "S1")).unwrap();
    let mut other = sample_order("S2-000999", "S2");
    other.customer.name = "Sam Doe".into();
    r.create_order(&other).unwrap();
    assert_eq!(r.search_orders("karimi", 10).unwrap().len(), 1);
    assert_eq!(
        r.search_orders("000999", 10).unwrap()[0].number,
        "S2-000999"
    );
    assert_eq!(r.search_orders("S1", 10).unwrap().len(), 1);
    assert_eq!(r.search_orders("nobody", 10).unwrap().len(), 0);
}

#[test]
fn observers_hear_local_and_remote_changes_until_dropped() {
    let a = dispatcher();
    let b = dispatcher();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    let sub = b.subscribe(Arc::new(move |changes: &[DocChange]| {
        counter.fetch_add(changes.len(), Ordering::SeqCst);
    }));
    let order = a.create_order(&sample_order("S1-4", "S1")).unwrap();
    let changes: Vec<Vec<u8>> = a
        .outbox(100)
        .unwrap()
        .into_iter()
        .map(|e| e.bytes)
        .collect();
    let outcome = b.apply_remote(&order, &changes).unwrap();
    assert_eq!(outcome.new_changes, 1);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    // Applying again is a no-op and tells nobody.
    assert_eq!(b.apply_remote(&order, &changes).unwrap().new_changes, 0);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    drop(sub);
    b.record_event(&order, "confirmed", &EventDetails::default())
        .unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(b.order(&order).unwrap().status, "confirmed");
}

#[test]
fn concurrent_delivered_and_cancelled_is_a_conflict_until_resolved() {
    let ops = dispatcher();
    let order = ops.create_order(&sample_order("S1-5", "S1")).unwrap();
    for k in ["confirmed", "picking", "packed"] {
        ev(&ops, &order, k).unwrap();
    }
    let dlv = ops
        .assign_courier(&order, "c1", &NewDelivery::default())
        .unwrap();
    let courier = Replica::open_in_memory(
        DeviceIdentity::courier("phone-1", "c1"),
        ReplicaOptions::default(),
    )
    .unwrap();
    let sync = |from: &Replica, to: &Replica| {
        for id in from.doc_ids().unwrap() {
            let bytes = from.export(&id).unwrap();
            let doc = automerge::Automerge::load(&bytes).unwrap();
            let changes: Vec<Vec<u8>> = doc
                .get_changes(&[])
                .into_iter()
                .map(|c| c.raw_bytes().to_vec())
                .collect();
            to.apply_remote(&id, &changes).unwrap();
        }
    };
    sync(&ops, &courier);
    for k in ["picked_up", "delivered"] {
        ev(&courier, &dlv, k).unwrap();
    }
    ev(&ops, &order, "cancelled").unwrap();
    sync(&courier, &ops);
    sync(&ops, &courier);
    let view = ops.order(&order).unwrap();
    assert_eq!(view.status, "conflict");
    assert_eq!(courier.order(&order).unwrap().status, "conflict");
    let kinds = [
        view.conflicts[0].first.kind.as_str(),
        view.conflicts[0].second.kind.as_str(),
    ];
    assert!(
        kinds.contains(&"completed") && kinds.contains(&"cancelled"),
        "{kinds:?}"
    );
    // Only a resolution may follow.
    assert!(ev(&ops, &order, "return_requested").is_err());
    let details = EventDetails {
        resolution: Some("completed".into()),
        ..Default::default()
    };
    ops.record_event(&order, "conflict_resolved", &details)
        .unwrap();
    assert_eq!(ops.order(&order).unwrap().status, "completed");
}

#[test]
fn changes_missing_their_dependencies_wait_across_compaction_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let options = ReplicaOptions {
        store: crate::store::StoreOptions {
            compact_after: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let source = dispatcher();
    let order = source.create_order(&sample_order("S1-6", "S1")).unwrap();
    for k in ["confirmed", "picking", "packed"] {
        ev(&source, &order, k).unwrap();
    }
    let changes: Vec<Vec<u8>> = source
        .outbox(100)
        .unwrap()
        .into_iter()
        .map(|e| e.bytes)
        .collect();
    assert_eq!(changes.len(), 4);
    {
        let device =
            Replica::open(&path, DeviceIdentity::dispatcher("d2"), options.clone()).unwrap();
        device.apply_remote(&order, &changes[0..1]).unwrap();
        // The last two arrive before the second: they must wait, not vanish, even
        // though the store compacts this document on the way.
        let outcome = device.apply_remote(&order, &changes[2..4]).unwrap();
        assert!(outcome.waiting_for_dependencies);
        assert_eq!(device.order(&order).unwrap().status, "placed");
    }
    let device = Replica::open(&path, DeviceIdentity::dispatcher("d2"), options).unwrap();
    assert_eq!(device.order(&order).unwrap().status, "placed");
    let outcome = device.apply_remote(&order, &changes[1..2]).unwrap();
    assert!(!outcome.waiting_for_dependencies);
    assert_eq!(device.order(&order).unwrap().status, "packed");
    assert_eq!(device.heads(&order).unwrap(), source.heads(&order).unwrap());
    assert!(device.verify().unwrap().mismatches.is_empty());
    assert_eq!(
        device.pending_uploads().unwrap(),
        0,
        "remote changes never enter the outbox"
    );
}

#[test]
fn the_clock_survives_a_restart_and_never_goes_backwards() {
    struct Frozen;
    impl crate::hlc::WallClock for Frozen {
        fn now_ms(&self) -> i64 {
            1_000
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let options = ReplicaOptions {
        clock: Arc::new(Frozen),
        ..Default::default()
    };
    let order = {
        let r = Replica::open(&path, DeviceIdentity::dispatcher("d"), options.clone()).unwrap();
        let order = r.create_order(&sample_order("S1-7", "S1")).unwrap();
        ev(&r, &order, "confirmed").unwrap();
        order
    };
    let r = Replica::open(&path, DeviceIdentity::dispatcher("d"), options).unwrap();
    ev(&r, &order, "picking").unwrap();
    let times: Vec<_> = r
        .order(&order)
        .unwrap()
        .timeline
        .iter()
        .map(|e| e.at)
        .collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
}

#[test]
fn returns_never_exceed_what_was_sold() {
    let r = dispatcher();
    let order = r.create_order(&sample_order("S1-8", "S1")).unwrap();
    for k in [
        "confirmed",
        "picking",
        "packed",
        "ready_for_pickup",
        "handed_over",
        "completed",
    ] {
        ev(&r, &order, k).unwrap();
    }
    let one = NewReturn {
        lines: vec![ReturnLine {
            sku: "TEA-500".into(),
            qty: 1,
        }],
        reason: "damaged".into(),
        delivery_id: None,
    };
    r.start_return(&order, &one).unwrap();
    ev(&r, &order, "returned").unwrap();
    r.start_return(&order, &one).unwrap();
    ev(&r, &order, "returned").unwrap();
    let err = r.start_return(&order, &one).unwrap_err();
    assert!(
        matches!(err, ReplicaError::Model(ModelError::InvalidInput { .. })),
        "{err}"
    );
    let view = r.order(&order).unwrap();
    assert_eq!(view.status, "returned");
    assert_eq!(view.balance.returned, 3_700_000);
    assert_eq!(view.balance.due, 0);
}
