//! Property tests for the merge rules (DESIGN.md principles 3 and 4).
//!
//! Dispatcher replicas share one order and its delivery, change them concurrently and
//! exchange changes over a bad network: random subsets, random order, duplicates.
//! Once every change has reached every replica:
//! 1. all replicas hold the same documents, status, balance, conflicts and index rows;
//! 2. every payment some replica acknowledged is there exactly once, and the balance is
//!    what the acknowledged amounts say;
//! 3. replaying a converged document's changes in any order (children before their
//!    parents included) gives the same status, conflicts and timeline.
//!
//! Replicas are file-backed and sometimes restarted mid-scenario, so what is checked is
//! what reached their stores, not only their caches. Deterministic tests at the end
//! pin one conflict scenario and one core bug. Cases default to 48; set
//! `PROPTEST_CASES` for more.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use automerge::{Automerge, Change, ChangeHash, ReadDoc};
use proptest::prelude::*;
use serde_json::{Value, from_value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use waybill_core::hlc::WallClock;
use waybill_core::model::delivery::DeliveryLifecycle;
use waybill_core::model::document::{read_delivery, read_order};
use waybill_core::model::lifecycle::{Lifecycle, fold};
use waybill_core::model::order::OrderLifecycle;
use waybill_core::model::{
    Delivery, EntryKind, EventDetails, ModelError, NewDelivery, NewLedgerEntry, NewOrder,
    NewReturn, Order, PaymentMethod, StatusEvent,
};
use waybill_core::replica::ReplicaOptions;
use waybill_core::store::query::{DeliveryQuery, OrderQuery};
use waybill_core::store::{Durability, StoreOptions};
use waybill_core::{DeviceIdentity, DocId, DocKind, Replica, ReplicaError};

#[rustfmt::skip]
const ORDER_KINDS: [&str; 11] = [
    "placed", "confirmed", "picking", "packed", "ready_for_pickup", "handed_over",
    "completed", "cancelled", "return_requested", "returned", "conflict_resolved",
];
// `assigned` goes through `assign_courier`: that is the `Assign` op.
#[rustfmt::skip]
const DELIVERY_KINDS: [&str; 7] = [
    "picked_up", "in_transit", "arrived", "delivered", "failed_attempt",
    "returned_to_store", "conflict_resolved",
];
#[rustfmt::skip]
const METHODS: [PaymentMethod; 5] = [
    PaymentMethod::Cash, PaymentMethod::Card, PaymentMethod::Online,
    PaymentMethod::InApp, PaymentMethod::Account,
];
#[rustfmt::skip]
const ENTRY_KINDS: [EntryKind; 3] = [EntryKind::Payment, EntryKind::Refund, EntryKind::StoreCredit];
const TEA_PRICE: i64 = 1_850_000;

// ------------------------------------------------------------------------ helpers

/// splitmix64: every shuffle and subset comes from a seed proptest chose, so a failing
/// case replays (and shrinks) exactly.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// Simulated time shared by all replicas, each reading it with its own skew: clocks
/// disagree, as phones' do, yet every timestamp (hence every tie-break) replays.
#[derive(Clone)]
struct SkewedClock(Arc<AtomicI64>, i64);

impl WallClock for SkewedClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst) + self.1
    }
}

/// The order, as an integrator would hand it in.
fn sample_order() -> NewOrder {
    from_value(json!({
        "number": "S1-000042", "channel": "app", "store": "S1", "currency": "IRR",
        "customer": { "id": "cust-7", "name": "Leila Karimi", "address": "12 Vali-Asr St" },
        "fulfilment": "delivery",
        "lines": [
            { "sku": "TEA-500", "name": "Black tea 500 g", "qty": 2, "unit_price": TEA_PRICE },
            { "sku": "CUP-1", "name": "Tea cup", "qty": 3, "unit_price": 250_000 },
        ],
    }))
    .unwrap()
}

fn options_for(clock: SkewedClock, compact_after: i64) -> ReplicaOptions {
    let durability = Durability::Normal; // no fsync per commit: these stores are throwaway
    let store = StoreOptions {
        compact_after,
        durability,
    };
    ReplicaOptions {
        store,
        clock: Arc::new(clock),
    }
}

fn dispatcher(device: &str, clock: SkewedClock, compact_after: i64) -> Replica {
    let options = options_for(clock, compact_after);
    Replica::open_in_memory(DeviceIdentity::dispatcher(device), options).unwrap()
}

/// The changes a replica has applied to a document, decoded from its saved bytes
/// (what any Automerge implementation would load).
fn changes_of(r: &Replica, id: &DocId) -> Vec<Change> {
    Automerge::load(&r.export(id).unwrap())
        .unwrap()
        .get_changes(&[])
}

/// The same, as the raw bytes a peer or the relay would forward.
fn raw_changes(r: &Replica, id: &DocId) -> Vec<Vec<u8>> {
    let changes = changes_of(r, id).into_iter();
    changes.map(|c| c.raw_bytes().to_vec()).collect()
}

/// Whether a replica still holds changes of a document waiting for their parents.
fn has_orphans(r: &Replica, id: &DocId) -> bool {
    let doc = Automerge::load(&r.export(id).unwrap()).unwrap();
    !doc.get_missing_deps(&[]).is_empty()
}

/// Send `from`'s changes to `to` as a bad network would: when `lossy`, about a third
/// are dropped; the rest are shuffled, some duplicated, and split over several
/// `apply_remote` calls, so children often arrive in an earlier call than parents.
fn send(from: &Replica, to: &Replica, rng: &mut Rng, lossy: bool) {
    for id in from.doc_ids().unwrap() {
        let mut batch = raw_changes(from, &id);
        batch.retain(|_| !lossy || rng.below(3) != 0);
        for i in 0..batch.len() {
            if rng.below(4) == 0 {
                batch.push(batch[i].clone());
            }
        }
        rng.shuffle(&mut batch);
        let mut rest = batch.as_slice();
        while !rest.is_empty() {
            let (now, later) = rest.split_at(1 + rng.below(rest.len()));
            to.apply_remote(&id, now).unwrap();
            rest = later;
        }
    }
}

/// Random operations are mostly invalid for the current status: a refusal is expected
/// and skipped. Anything else (store errors, unreadable documents) fails the test.
fn unless_refused<T>(result: Result<T, ReplicaError>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        // A delivery whose first change has not arrived yet cannot be acted on (its
        // order can: see `an_incomplete_delivery_does_not_block_its_order`).
        Err(ReplicaError::NotFound { .. })
        | Err(ReplicaError::Incomplete { .. })
        | Err(ReplicaError::Model(ModelError::InvalidTransition { .. })) => None,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// A document's hydrated view with everything derived (status, conflicts, balance,
/// timeline…), as JSON so that orders and deliveries compare alike.
fn view(r: &Replica, id: &DocId) -> Value {
    match id.kind() {
        DocKind::Order => serde_json::to_value(r.order(id).unwrap()),
        DocKind::Delivery => serde_json::to_value(r.delivery(id).unwrap()),
    }
    .unwrap()
}

/// Compare two views, naming the derived fields first so a failure says what diverged.
fn assert_same_view(got: &Value, want: &Value, what: &str) {
    for key in ["status", "conflicts", "balance", "timeline", "payments"] {
        assert_eq!(got.get(key), want.get(key), "{key} of {what}");
    }
    assert_eq!(got, want, "{what}");
}

// ------------------------------------------------------------------------ scenario

/// One step of a scenario, on replica `at` (modulo the number of replicas).
#[derive(Debug, Clone)]
struct Op {
    at: usize,
    what: What,
}

#[derive(Debug, Clone)]
enum What {
    /// Record an order event: indices into `ORDER_KINDS` of the kind and, for
    /// `conflict_resolved`, the resolution.
    OrderEvent(usize, usize),
    /// The same for the order's newest delivery, with `DELIVERY_KINDS`.
    DeliveryEvent(usize, usize),
    /// A payment, refund or credit; `true`: collected at the delivery's door.
    Money(NewLedgerEntry, bool),
    /// Return this many of the tea.
    Return(i64),
    /// A note on the delivery (`true`) or the order.
    Note(bool),
    /// Assign (or reassign) courier c1 or c2.
    Assign(usize),
    /// A lossy sync from replica `at` to the one given; the seed picks what gets
    /// through, in which order.
    SyncTo(usize, u64),
    /// The app is killed and reopened: only what reached the store survives.
    Restart,
}

#[derive(Debug, Clone)]
struct Scenario {
    replicas: usize,
    /// How far replica 0 goes before sharing: the order's confirmed, picking, packed,
    /// then the delivery's picked_up.
    prefix: usize,
    /// Per replica: clock skew (ms) and compaction threshold.
    devices: Vec<(i64, i64)>,
    ops: Vec<Op>,
    seed: u64,
}

fn op() -> impl Strategy<Value = Op> {
    let entry = (0..3usize, 0..5usize, 1..5_000_000i64).prop_map(|(k, m, amount)| NewLedgerEntry {
        kind: ENTRY_KINDS[k],
        method: METHODS[m],
        amount,
        currency: "IRR".into(),
        delivery_id: None,
        reference: None,
    });
    let what = prop_oneof![
        4 => (0..11usize, 0..11usize).prop_map(|(k, r)| What::OrderEvent(k, r)),
        8 => (0..7usize, 0..7usize).prop_map(|(k, r)| What::DeliveryEvent(k, r)),
        3 => (entry, any::<bool>()).prop_map(|(e, door)| What::Money(e, door)),
        1 => (1..=2i64).prop_map(What::Return),
        1 => any::<bool>().prop_map(What::Note),
        1 => (0..2usize).prop_map(What::Assign),
        5 => (0..5usize, any::<u64>()).prop_map(|(to, seed)| What::SyncTo(to, seed)),
        1 => Just(What::Restart),
    ];
    (0..5usize, what).prop_map(|(at, what)| Op { at, what })
}

fn scenario(max_ops: usize) -> impl Strategy<Value = Scenario> {
    let devices = prop::collection::vec((-5_000..5_000i64, 1..40i64), 5);
    let ops = prop::collection::vec(op(), 0..max_ops);
    (2..=5usize, 0..=4usize, devices, ops, any::<u64>()).prop_map(
        |(replicas, prefix, devices, ops, seed)| Scenario {
            replicas,
            prefix,
            devices,
            ops,
            seed,
        },
    )
}

/// The replicas after a scenario, and what their mutations acknowledged.
struct World {
    /// Each replica's store file lives here, so a replica can be restarted.
    dir: tempfile::TempDir,
    options: Vec<ReplicaOptions>,
    replicas: Vec<Replica>,
    order: DocId,
    /// Ledger entries some replica's `record_payment` returned: (id, kind, amount).
    ledger: Vec<(String, EntryKind, i64)>,
    /// Returns some replica's `start_return` returned: (id, value in minor units).
    returns: Vec<(String, i64)>,
}

impl World {
    /// Open (or reopen) replica `i` from its file.
    fn open(&self, i: usize) -> Replica {
        let path = self.dir.path().join(format!("dev-{i}.db"));
        let device = DeviceIdentity::dispatcher(format!("dev-{i}"));
        Replica::open(path, device, self.options[i].clone()).unwrap()
    }
}

fn run(s: &Scenario) -> World {
    let now = Arc::new(AtomicI64::new(1_700_000_000_000));
    let options = s.devices[..s.replicas].iter();
    let options = options.map(|&(skew, compact_after)| {
        options_for(SkewedClock(Arc::clone(&now), skew), compact_after)
    });
    let mut w = World {
        dir: tempfile::tempdir().unwrap(),
        options: options.collect(),
        replicas: Vec::new(),
        order: DocId::new(DocKind::Order),
        ledger: Vec::new(),
        returns: Vec::new(),
    };
    w.replicas = (0..s.replicas).map(|i| w.open(i)).collect();
    let first = &w.replicas[0];
    let none = EventDetails::default();
    w.order = first.create_order(&sample_order()).unwrap();
    for kind in ["confirmed", "picking", "packed"].iter().take(s.prefix) {
        first.record_event(&w.order, kind, &none).unwrap();
    }
    let dlv = first.assign_courier(&w.order, "c1", &NewDelivery::default());
    if s.prefix == 4 {
        first
            .record_event(&dlv.unwrap(), "picked_up", &none)
            .unwrap();
    }
    let mut rng = Rng(s.seed);
    for r in &w.replicas[1..] {
        send(first, r, &mut rng, false);
    }
    for op in &s.ops {
        now.fetch_add(1 + rng.below(300) as i64, Ordering::SeqCst);
        apply(&mut w, op);
    }
    // Final full exchange, pairs in random order. Each replica hears directly from every
    // other, and every change is held by its author, so one round reaches everyone.
    let n = w.replicas.len();
    let mut pairs: Vec<(usize, usize)> = (0..n * n)
        .map(|k| (k / n, k % n))
        .filter(|(i, j)| i != j)
        .collect();
    rng.shuffle(&mut pairs);
    for (i, j) in pairs {
        send(&w.replicas[i], &w.replicas[j], &mut rng, false);
    }
    w
}

fn apply(w: &mut World, op: &Op) {
    let n = w.replicas.len();
    if let What::Restart = op.what {
        w.replicas[op.at % n] = w.open(op.at % n);
        return;
    }
    let r = &w.replicas[op.at % n];
    // The order's newest delivery as this replica sees it (it may not hold it yet).
    let delivery = || {
        let ids = r.order(&w.order).unwrap().deliveries;
        DocId::parse(ids.last().expect("the order has a delivery")).unwrap()
    };
    let details = |kind: &str, res: &str| EventDetails {
        resolution: (kind == "conflict_resolved").then(|| res.to_owned()),
        ..EventDetails::default()
    };
    match op.what {
        What::OrderEvent(kind, res) => {
            let (kind, res) = (ORDER_KINDS[kind], ORDER_KINDS[res]);
            unless_refused(r.record_event(&w.order, kind, &details(kind, res)));
        }
        What::DeliveryEvent(kind, res) => {
            let (kind, res) = (DELIVERY_KINDS[kind], DELIVERY_KINDS[res]);
            unless_refused(r.record_event(&delivery(), kind, &details(kind, res)));
        }
        What::Money(ref entry, door) => {
            let mut entry = entry.clone();
            entry.delivery_id = door.then(|| delivery().to_string());
            if let Some(id) = unless_refused(r.record_payment(&w.order, &entry)) {
                w.ledger.push((id, entry.kind, entry.amount));
            }
        }
        What::Return(qty) => {
            let lines = json!([{ "sku": "TEA-500", "qty": qty }]);
            let new: NewReturn = from_value(json!({ "lines": lines, "reason": "torn" })).unwrap();
            let result = match r.start_return(&w.order, &new) {
                // More than is left to return (as this replica sees it): refused too.
                Err(ReplicaError::Model(ModelError::InvalidInput { .. })) => return,
                other => other,
            };
            if let Some(id) = unless_refused(result) {
                w.returns.push((id, qty * TEA_PRICE));
            }
        }
        What::Note(on_delivery) => {
            let doc = on_delivery
                .then(delivery)
                .unwrap_or_else(|| w.order.clone());
            unless_refused(r.add_note(&doc, &format!("note from dev-{}", op.at % n)));
        }
        What::Assign(courier) => {
            let courier = ["c1", "c2"][courier];
            unless_refused(r.assign_courier(&w.order, courier, &NewDelivery::default()));
        }
        What::SyncTo(to, seed) if to % n != op.at % n => {
            send(r, &w.replicas[to % n], &mut Rng(seed), true);
        }
        What::SyncTo(..) | What::Restart => {}
    }
}

// ------------------------------------------------------------------------ checks

/// Property 1: identical documents, derived values and index rows everywhere.
fn assert_converged(w: &World) {
    let reference = &w.replicas[0];
    let ids = reference.doc_ids().unwrap();
    let (orders, deliveries) = (OrderQuery::default(), DeliveryQuery::default());
    for (i, r) in w.replicas.iter().enumerate() {
        assert_eq!(r.doc_ids().unwrap(), ids, "documents on replica {i}");
        for id in &ids {
            let heads = r.heads(id).unwrap();
            assert_eq!(heads, reference.heads(id).unwrap(), "{id} on {i}");
            assert!(!has_orphans(r, id), "changes of {id} still waiting on {i}");
            assert_same_view(&view(r, id), &view(reference, id), &format!("{id} on {i}"));
        }
        // The index rows that lists are built from agree too, and with the documents.
        let rows = r.orders(&orders).unwrap();
        assert_eq!(
            rows,
            reference.orders(&orders).unwrap(),
            "order rows on {i}"
        );
        let rows = r.deliveries(&deliveries).unwrap();
        assert_eq!(rows, reference.deliveries(&deliveries).unwrap(), "on {i}");
        let report = r.verify().unwrap();
        assert_eq!(report.documents, ids.len());
        assert_eq!(report.mismatches, Vec::<String>::new(), "replica {i}");
    }
}

/// The typed read answers autosurgeon's field-by-field questions from one pass per
/// object (`model::one_pass`); on every replica's copy of every document, concurrent
/// values and all, it must read exactly what plain autosurgeon reads.
fn assert_typed_reads_match_field_by_field(w: &World) {
    for (i, r) in w.replicas.iter().enumerate() {
        for id in r.doc_ids().unwrap() {
            let doc = Automerge::load(&r.export(&id).unwrap()).unwrap();
            match id.kind() {
                DocKind::Order => {
                    let plain: Order = autosurgeon::hydrate(&doc).unwrap();
                    assert_eq!(read_order(&id, &doc).unwrap(), plain, "{id} on {i}");
                }
                DocKind::Delivery => {
                    let plain: Delivery = autosurgeon::hydrate(&doc).unwrap();
                    assert_eq!(read_delivery(&id, &doc).unwrap(), plain, "{id} on {i}");
                }
            }
        }
    }
}

/// Also part of property 1: nothing was acknowledged by a relay, so every change of
/// every document waits in exactly one outbox, its author's (remote changes never
/// enter one): no local change was lost on the way, none would be uploaded twice.
fn assert_outboxes_hold_every_change_once(w: &World) {
    let reference = &w.replicas[0];
    let mut expected: Vec<(String, Vec<u8>)> = Vec::new();
    for id in reference.doc_ids().unwrap() {
        let changes = changes_of(reference, &id).into_iter();
        expected.extend(changes.map(|c| (id.to_string(), c.hash().0.to_vec())));
    }
    let mut queued: Vec<(String, Vec<u8>)> = Vec::new();
    for r in &w.replicas {
        let outbox = r.outbox(1_000_000).unwrap().into_iter();
        queued.extend(outbox.map(|e| (e.doc_id, e.hash)));
    }
    expected.sort();
    queued.sort();
    assert_eq!(queued, expected);
}

/// Property 2: every acknowledged entry exactly once, and the balance they imply.
fn assert_ledger(w: &World) {
    let by_id = |mut v: Vec<(String, EntryKind, i64)>| {
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let want = by_id(w.ledger.clone());
    let sum = |k| want.iter().filter(|e| e.1 == k).map(|e| e.2).sum::<i64>();
    let paid = sum(EntryKind::Payment);
    let (refunded, credited) = (sum(EntryKind::Refund), sum(EntryKind::StoreCredit));
    let mut want_returns: Vec<&str> = w.returns.iter().map(|r| r.0.as_str()).collect();
    want_returns.sort_unstable();
    let returned: i64 = w.returns.iter().map(|r| r.1).sum();
    let order = sample_order();
    let total: i64 = order.lines.iter().map(|l| l.qty * l.unit_price).sum();
    for (i, r) in w.replicas.iter().enumerate() {
        let view = r.order(&w.order).unwrap();
        // Same ids (each once, none unacknowledged), with the amounts acknowledged.
        let entries = view.payments.iter();
        let got = by_id(entries.map(|p| (p.id.clone(), p.kind, p.amount)).collect());
        assert_eq!(got, want, "ledger on replica {i}");
        let mut returns: Vec<&str> = view.returns.iter().map(|r| r.id.as_str()).collect();
        returns.sort_unstable();
        assert_eq!(returns, want_returns, "returns on replica {i}");
        let b = view.balance;
        let due = total - returned - paid + refunded + credited;
        let expected = (total, returned, paid, refunded, credited, due);
        let got = (b.total, b.returned, b.paid, b.refunded, b.credited, b.due);
        assert_eq!(got, expected, "balance on replica {i}");
    }
}

/// Property 3, one replay: apply `items` to `target` one change per call, restarting
/// it (reopening its file) before step `restart_at`. After each call
/// `waiting_for_dependencies` must say exactly whether some change that arrived still
/// lacks a parent: changes are held, not dropped and not applied early.
fn replay(
    target: &mut Replica,
    items: &[(DocId, Change)],
    restart_at: usize,
    open: &dyn Fn() -> Replica,
) {
    let deps: HashMap<ChangeHash, &[ChangeHash]> =
        items.iter().map(|(_, c)| (c.hash(), c.deps())).collect();
    let mut arrived: HashMap<&DocId, HashSet<ChangeHash>> = HashMap::new();
    for (step, (id, change)) in items.iter().enumerate() {
        if step == restart_at {
            // Waiting changes must have been stored, not merely kept in memory.
            *target = open();
        }
        let outcome = target
            .apply_remote(id, &[change.raw_bytes().to_vec()])
            .unwrap();
        assert_eq!(outcome.new_changes, 1, "step {step}");
        let got = arrived.entry(id).or_default();
        got.insert(change.hash());
        let waiting = got.iter().any(|h| deps[h].iter().any(|d| !got.contains(d)));
        assert_eq!(outcome.waiting_for_dependencies, waiting, "step {step}");
    }
}

fn proptest_config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok();
    let cases = cases.and_then(|c| c.parse().ok()).unwrap_or(48);
    // No regression files: the failing case is printed, and this directory is shared.
    let failure_persistence = None;
    ProptestConfig {
        cases,
        failure_persistence,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn replicas_converge_after_a_full_exchange(s in scenario(80)) {
        let w = run(&s);
        assert_converged(&w);
        assert_outboxes_hold_every_change_once(&w);
        assert_typed_reads_match_field_by_field(&w);
    }

    #[test]
    fn payments_are_never_lost_or_doubled(s in scenario(80)) {
        assert_ledger(&run(&s));
    }

    #[test]
    fn the_fold_does_not_depend_on_arrival_order(
        s in scenario(50),
        seeds in prop::collection::vec(any::<u64>(), 2),
    ) {
        let w = run(&s);
        assert_replays_agree(&w.replicas[0], &seeds);
        assert_fold_ignores_list_order(&w.replicas[0], &seeds);
    }
}

/// Property 3 through the replica: the converged changes, newest first (every child
/// before its parents), then in random permutations, each into a fresh file-backed
/// store that compacts often and restarts on the way, give the same documents.
fn assert_replays_agree(source: &Replica, seeds: &[u64]) {
    let ids = source.doc_ids().unwrap();
    let mut items: Vec<(DocId, Change)> = ids
        .iter()
        .flat_map(|id| changes_of(source, id).into_iter().map(|c| (id.clone(), c)))
        .collect();
    items.reverse();
    let dir = tempfile::tempdir().unwrap();
    let clock = SkewedClock(Arc::new(AtomicI64::new(1_800_000_000_000)), 0);
    for round in 0..=seeds.len() {
        let restart_at = match round {
            0 => items.len() / 2,
            _ => {
                let mut rng = Rng(seeds[round - 1]);
                rng.shuffle(&mut items);
                rng.below(items.len().max(1))
            }
        };
        let path = dir.path().join(format!("replay-{round}.db"));
        let options = options_for(clock.clone(), 1 + 3 * round as i64);
        let device = DeviceIdentity::dispatcher("fresh");
        let open = || Replica::open(&path, device.clone(), options.clone()).unwrap();
        let mut target = open();
        replay(&mut target, &items, restart_at, &open);
        for id in &ids {
            let what = format!("{id}, round {round}");
            assert_eq!(
                target.heads(id).unwrap(),
                source.heads(id).unwrap(),
                "{what}"
            );
            assert_same_view(&view(&target, id), &view(source, id), &what);
        }
        assert!(target.verify().unwrap().mismatches.is_empty());
    }
}

/// Property 3 at the fold itself: the same events in any list order fold to the same
/// status, conflicts, timeline (as event ids) and frontier.
fn assert_fold_ignores_list_order(source: &Replica, seeds: &[u64]) {
    fn check<L: Lifecycle>(events: &[StatusEvent<L::Kind>], seed: u64) {
        let ids = |events: &[StatusEvent<L::Kind>], positions: &[usize]| {
            positions
                .iter()
                .map(|&i| events[i].id.clone())
                .collect::<Vec<_>>()
        };
        let want = fold::<L>(events);
        let mut shuffled = events.to_vec();
        Rng(seed).shuffle(&mut shuffled);
        let got = fold::<L>(&shuffled);
        assert_eq!(got.state, want.state, "seed {seed}");
        assert_eq!(got.conflicts, want.conflicts, "seed {seed}");
        let timeline = ids(&shuffled, &got.timeline);
        assert_eq!(timeline, ids(events, &want.timeline), "seed {seed}");
        assert_eq!(got.frontier, want.frontier, "seed {seed}");
    }
    for id in source.doc_ids().unwrap() {
        let doc = Automerge::load(&source.export(&id).unwrap()).unwrap();
        for &seed in seeds {
            match id.kind() {
                DocKind::Order => {
                    check::<OrderLifecycle>(&read_order(&id, &doc).unwrap().events, seed)
                }
                DocKind::Delivery => {
                    check::<DeliveryLifecycle>(&read_delivery(&id, &doc).unwrap().events, seed)
                }
            }
        }
    }
}

// ------------------------------------------------------------------------ deterministic

/// `delivered` and `failed_attempt` recorded concurrently on the same attempt by two
/// replicas are a conflict on both after the merge, until a dispatcher's
/// `conflict_resolved` ends it.
#[test]
fn delivered_and_failed_attempt_on_the_same_attempt_conflict_until_resolved() {
    let now = Arc::new(AtomicI64::new(1_700_000_000_000));
    let a = dispatcher("ops-a", SkewedClock(Arc::clone(&now), 0), 24);
    let b = dispatcher("ops-b", SkewedClock(Arc::clone(&now), -2_000), 24);
    let none = EventDetails::default();
    let order = a.create_order(&sample_order()).unwrap();
    for kind in ["confirmed", "picking", "packed"] {
        a.record_event(&order, kind, &none).unwrap();
    }
    let dlv = a.assign_courier(&order, "c1", &NewDelivery::default());
    let dlv = dlv.unwrap();
    a.record_event(&dlv, "picked_up", &none).unwrap();
    let mut rng = Rng(7);
    send(&a, &b, &mut rng, false);

    // Out of touch with each other: one records delivered, the other a failed attempt.
    a.record_event(&dlv, "delivered", &none).unwrap();
    b.record_event(&dlv, "failed_attempt", &none).unwrap();
    send(&a, &b, &mut rng, false);
    send(&b, &a, &mut rng, false);
    for r in [&a, &b] {
        let view = r.delivery(&dlv).unwrap();
        assert_eq!(view.status, "conflict");
        assert_eq!(view.conflicts.len(), 1, "{:?}", view.conflicts);
        let c = &view.conflicts[0];
        let mut kinds = [c.first.kind.as_str(), c.second.kind.as_str()];
        kinds.sort_unstable();
        assert_eq!(kinds, ["delivered", "failed_attempt"]);
        // Delivering completed the order; the failed attempt did not touch it.
        assert_eq!(r.order(&order).unwrap().status, "completed");
    }
    assert_eq!(view(&a, &dlv), view(&b, &dlv));

    // While the conflict is open only a resolution may be recorded.
    let result = b.record_event(&dlv, "in_transit", &none);
    let Err(ReplicaError::Model(ModelError::InvalidTransition { .. })) = result else {
        panic!("in_transit during a conflict: {result:?}");
    };
    let resolve = EventDetails {
        resolution: Some("delivered".into()),
        ..none
    };
    b.record_event(&dlv, "conflict_resolved", &resolve).unwrap();
    send(&b, &a, &mut rng, false);
    for r in [&a, &b] {
        let view = r.delivery(&dlv).unwrap();
        assert_eq!(view.status, "delivered");
        assert!(view.conflicts.is_empty());
        assert_eq!(
            view.failed_attempts, 1,
            "the failed attempt stays in the history"
        );
        assert!(r.verify().unwrap().mismatches.is_empty());
    }
    assert_eq!(a.heads(&dlv).unwrap(), b.heads(&dlv).unwrap());
}

/// Replica B holds the order and a second delivery D2 of it, but of D2 only a change
/// whose parent (D2's creation) has not arrived. D2 is stored yet unreadable: work on
/// the order must go on, and reading D2 says it is incomplete, not malformed.
#[test]
fn an_incomplete_delivery_does_not_block_its_order() {
    let now = Arc::new(AtomicI64::new(1_700_000_000_000));
    let a = dispatcher("ops-a", SkewedClock(Arc::clone(&now), 0), 24);
    let b = dispatcher("ops-b", SkewedClock(Arc::clone(&now), 0), 24);
    let none = EventDetails::default();
    let order = a.create_order(&sample_order()).unwrap();
    for kind in ["confirmed", "picking", "packed"] {
        a.record_event(&order, kind, &none).unwrap();
    }
    let d1 = a.assign_courier(&order, "c1", &NewDelivery::default());
    let d1 = d1.unwrap();
    a.record_event(&d1, "picked_up", &none).unwrap();
    send(&a, &b, &mut Rng(1), false);
    // B records the delivery; A hears of it but not (yet) of the order's completion,
    // so A assigns a second delivery D2, which is picked up.
    b.record_event(&d1, "delivered", &none).unwrap();
    a.apply_remote(&d1, &raw_changes(&b, &d1)).unwrap();
    let d2 = a.assign_courier(&order, "c2", &NewDelivery::default());
    let d2 = d2.unwrap();
    a.record_event(&d2, "picked_up", &none).unwrap();
    // B receives the order (which now links D2) and only D2's newest change.
    b.apply_remote(&order, &raw_changes(&a, &order)).unwrap();
    let newest = changes_of(&a, &d2).pop().unwrap();
    let outcome = b.apply_remote(&d2, &[newest.raw_bytes().to_vec()]).unwrap();
    assert!(outcome.waiting_for_dependencies);

    let note = b.add_note(&order, "customer called");
    assert!(note.is_ok(), "a note on the order: {note:?}");
    let malformed =
        |e: &ReplicaError| matches!(e, ReplicaError::Model(ModelError::Malformed { .. }));
    let reassign = b.assign_courier(&order, "c3", &NewDelivery::default());
    assert!(!reassign.as_ref().is_err_and(malformed), "{reassign:?}");
    // Reading D2 may fail (it is incomplete), but not as a malformed document.
    let read = b.delivery(&d2).map(|_| ());
    assert!(!read.as_ref().is_err_and(malformed), "{read:?}");
}
