//! Corrupt input gets a typed error, never a panic, and leaves the replica working:
//! corrupt remote change bytes, a store file that is not SQLite, a store or a document
//! from a newer Waybill, a remote document that is not a Waybill document, and a
//! corrupt snapshot or change in the store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use proptest::prelude::*;
use std::path::Path;
use std::sync::OnceLock;
use waybill_core::model::{
    Channel, Customer, EventDetails, Fulfilment, ModelError, NewLine, NewOrder, SCHEMA_VERSION,
};
use waybill_core::replica::ReplicaOptions;
use waybill_core::store::query::OrderQuery;
use waybill_core::store::{LATEST_VERSION, Store, StoreError, StoreOptions};
use waybill_core::{DeviceIdentity, DocId, DocKind, Replica, ReplicaError};

fn sample_order(number: &str) -> NewOrder {
    NewOrder {
        number: number.to_owned(),
        channel: Channel::Web,
        store: "S1".into(),
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

fn in_memory(device: &str) -> Replica {
    Replica::open_in_memory(
        DeviceIdentity::dispatcher(device),
        ReplicaOptions::default(),
    )
    .unwrap()
}

fn on_disk(path: &Path) -> Replica {
    Replica::open(
        path,
        DeviceIdentity::dispatcher("target"),
        ReplicaOptions::default(),
    )
    .unwrap()
}

fn ev(r: &Replica, id: &DocId, kind: &str) -> String {
    r.record_event(id, kind, &EventDetails::default()).unwrap()
}

/// An order made on another device: its id, the replica, and its changes in order
/// (created, confirmed, picking).
struct Source {
    replica: Replica,
    order: DocId,
    changes: Vec<Vec<u8>>,
}

fn source() -> Source {
    let replica = in_memory("source");
    let order = replica.create_order(&sample_order("S1-100")).unwrap();
    ev(&replica, &order, "confirmed");
    ev(&replica, &order, "picking");
    let changes: Vec<Vec<u8>> = replica
        .outbox(100)
        .unwrap()
        .into_iter()
        .map(|e| e.bytes)
        .collect();
    assert_eq!(changes.len(), 3);
    Source {
        replica,
        order,
        changes,
    }
}

/// Source changes, built once for the property tests.
fn shared_source() -> &'static (DocId, Vec<Vec<u8>>) {
    static SOURCE: OnceLock<(DocId, Vec<Vec<u8>>)> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let s = source();
        (s.order, s.changes)
    })
}

/// All changes of an Automerge document, as bytes.
fn all_changes(doc: &Automerge) -> Vec<Vec<u8>> {
    doc.get_changes(&[])
        .iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect()
}

/// Deterministic noise (SplitMix64).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

fn assert_clean(r: &Replica) {
    let report = r.verify().unwrap();
    assert!(report.mismatches.is_empty(), "{:#?}", report.mismatches);
}

fn assert_absent(r: &Replica, id: &DocId) {
    assert!(!r.doc_ids().unwrap().contains(id), "{id} was stored");
    assert!(
        matches!(r.heads(id), Err(ReplicaError::NotFound { .. })),
        "{id} is visible: {:?}",
        r.heads(id)
    );
}

/// Apply a batch that must be refused as corrupt change bytes at position `index`.
#[track_caller]
fn refuse_corrupt(r: &Replica, id: &DocId, batch: &[Vec<u8>], index: usize) {
    match r.apply_remote(id, batch) {
        Err(ReplicaError::CorruptChange {
            doc_id, index: at, ..
        }) => {
            assert_eq!(doc_id, id.as_str());
            assert_eq!(at, index);
        }
        other => panic!(
            "expected CorruptChange at {index} for {} bytes, got {other:?}",
            batch.iter().map(Vec::len).sum::<usize>()
        ),
    }
}

// (a) Corrupt change bytes.

#[test]
fn corrupt_change_bytes_are_refused_and_change_nothing() {
    let src = source();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let target = on_disk(&path);
    let order = &src.order;
    target.apply_remote(order, &src.changes[..1]).unwrap();
    let heads = target.heads(order).unwrap();

    // The next change truncated at every length, alone; the one after it truncated at
    // every length behind the (valid) next one, which must not be applied either.
    let next = &src.changes[1];
    for cut in 0..next.len() {
        refuse_corrupt(&target, order, &[next[..cut].to_vec()], 0);
        assert_eq!(target.heads(order).unwrap(), heads, "cut at {cut}");
    }
    for cut in 0..src.changes[2].len() {
        let batch = [next.clone(), src.changes[2][..cut].to_vec()];
        refuse_corrupt(&target, order, &batch, 1);
        assert_eq!(target.heads(order).unwrap(), heads, "cut at {cut}");
    }
    // Empty bytes, noise, noise behind a valid Automerge header, a whole saved document.
    refuse_corrupt(&target, order, &[Vec::new()], 0);
    for seed in 0..200 {
        let len = 1 + (seed as usize * 37) % 600;
        refuse_corrupt(&target, order, &[noise(seed, len)], 0);
        let mut headed = next[..8.min(next.len())].to_vec();
        headed.extend(noise(seed, len));
        refuse_corrupt(&target, order, &[headed], 0);
    }
    refuse_corrupt(&target, order, &[src.replica.export(order).unwrap()], 0);
    assert_eq!(target.heads(order).unwrap(), heads);

    assert_eq!(target.pending_uploads().unwrap(), 0);
    assert_clean(&target);

    // The replica still works: the valid changes apply, then a local write.
    target.apply_remote(order, &src.changes[1..]).unwrap();
    assert_eq!(
        target.heads(order).unwrap(),
        src.replica.heads(order).unwrap()
    );
    ev(&target, order, "packed");
    assert_eq!(target.order(order).unwrap().status, "packed");
    assert_clean(&target);
    let heads = target.heads(order).unwrap();
    drop(target);
    let reopened = on_disk(&path);
    assert_eq!(reopened.heads(order).unwrap(), heads);
    assert_clean(&reopened);
}

#[test]
fn corrupt_changes_for_an_unknown_document_store_nothing() {
    let src = source();
    let target = in_memory("target");
    refuse_corrupt(&target, &src.order, &[Vec::new()], 0);
    refuse_corrupt(&target, &src.order, &[noise(7, 300)], 0);
    // A valid creation followed by garbage: the batch is refused whole.
    refuse_corrupt(
        &target,
        &src.order,
        &[src.changes[0].clone(), noise(8, 40)],
        1,
    );
    refuse_corrupt(
        &target,
        &src.order,
        &[src.changes[0][..src.changes[0].len() / 2].to_vec()],
        0,
    );
    assert_absent(&target, &src.order);
    assert!(target.doc_ids().unwrap().is_empty());
    assert_clean(&target);
    // The same document arrives intact later.
    target.apply_remote(&src.order, &src.changes).unwrap();
    assert_eq!(target.order(&src.order).unwrap().status, "picking");
    assert_clean(&target);
}

/// An empty batch for a document this device does not have must not make it appear.
#[test]
fn an_empty_batch_for_an_unknown_document_creates_nothing() {
    let target = in_memory("target");
    let order = DocId::new(DocKind::Order);
    let outcome = target.apply_remote(&order, &[]).unwrap();
    assert_eq!(outcome.new_changes, 0);
    assert_absent(&target, &order);
    assert!(matches!(
        target.order(&order),
        Err(ReplicaError::NotFound { .. })
    ));
}

/// The same, where it hurts: an order whose delivery has not arrived yet, then an empty
/// batch for that delivery; reassigning the order must still work.
#[test]
fn an_empty_batch_for_a_missing_delivery_does_not_block_assigning() {
    let ops = in_memory("ops");
    let order = ops.create_order(&sample_order("S1-9")).unwrap();
    let dlv = ops
        .assign_courier(&order, "c1", &waybill_core::model::NewDelivery::default())
        .unwrap();
    let order_changes = all_changes(&Automerge::load(&ops.export(&order).unwrap()).unwrap());
    let target = in_memory("target");
    target.apply_remote(&order, &order_changes).unwrap();
    // Without the empty batch the missing delivery is skipped and a new one is made.
    target.apply_remote(&dlv, &[]).unwrap();
    let assigned =
        target.assign_courier(&order, "c2", &waybill_core::model::NewDelivery::default());
    assert!(assigned.is_ok(), "{assigned:?}");
}

/// What became of one corrupted change.
struct Flip {
    /// Position of the flipped byte.
    at: usize,
    /// `apply_remote`'s result, or the panic message.
    outcome: Result<Result<(), ReplicaError>, String>,
    /// Whether the genuine change still applied afterwards.
    genuine: Result<(), ReplicaError>,
}

/// Flip one byte of a valid change at each position in turn, applying it to a replica
/// that holds the change's dependency (panics caught), then the genuine change.
fn flip_every_byte() -> Vec<Flip> {
    let (order, changes) = shared_source();
    let next = &changes[1];
    (0..next.len())
        .map(|at| {
            let target = in_memory("target");
            target.apply_remote(order, &changes[..1]).unwrap();
            let heads = target.heads(order).unwrap();
            let mut flipped = next.clone();
            flipped[at] ^= 0x55;
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                target.apply_remote(order, &[flipped]).map(|_| ())
            }))
            .map_err(|panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default()
            });
            // Whatever happened, the replica is consistent; refused means untouched.
            assert_clean(&target);
            if !matches!(outcome, Ok(Ok(()))) {
                assert_eq!(target.heads(order).unwrap(), heads, "byte {at}");
            }
            let genuine = target.apply_remote(order, &changes[1..]).map(|_| ());
            Flip {
                at,
                outcome,
                genuine,
            }
        })
        .collect()
}

#[test]
fn single_byte_corruptions_of_a_change_never_panic() {
    let panics: Vec<String> = flip_every_byte()
        .into_iter()
        .filter_map(|f| f.outcome.err().map(|msg| format!("byte {}: {msg}", f.at)))
        .collect();
    assert!(
        panics.is_empty(),
        "{} corruptions panicked:\n{}",
        panics.len(),
        panics.join("\n")
    );
}

#[test]
fn single_byte_corruptions_of_a_change_are_refused() {
    let flips = flip_every_byte();
    // Panics are single_byte_corruptions_of_a_change_never_panic's business.
    let accepted: Vec<usize> = flips
        .iter()
        .filter(|f| matches!(f.outcome, Ok(Ok(()))))
        .map(|f| f.at)
        .collect();
    let blocked: Vec<String> = flips
        .iter()
        .filter_map(|f| {
            f.genuine
                .as_ref()
                .err()
                .map(|e| format!("byte {}: {e}", f.at))
        })
        .collect();
    assert!(
        accepted.is_empty() && blocked.is_empty(),
        "{} of {} corruptions accepted: bytes {accepted:?}\n\
         {} then blocked the genuine change:\n{}",
        accepted.len(),
        flips.len(),
        blocked.len(),
        blocked.join("\n")
    );
}

// (b) A store file that is not SQLite.

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("noise", noise(1, 8192)),
        ("short noise", noise(2, 100)),
        (
            "text",
            "These are my notes, not a database.\n"
                .repeat(200)
                .into_bytes(),
        ),
        ("zeros", vec![0; 4096]),
        ("json", br#"{"orders": []}"#.to_vec()),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(format!("{}.db", name.replace(' ', "-")));
        std::fs::write(&path, &bytes).unwrap();
        match Replica::open(
            &path,
            DeviceIdentity::dispatcher("d"),
            ReplicaOptions::default(),
        ) {
            Err(ReplicaError::Store(StoreError::NotADatabase { path: p })) => {
                assert_eq!(p, path, "{name}");
            }
            Err(other) => panic!("{name}: expected NotADatabase, got {other:?}"),
            Ok(_) => panic!("{name}: opened as a store"),
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "{name}: the file was changed"
        );
    }
}

// (c) A store from a newer Waybill.

#[test]
fn a_store_from_a_newer_waybill_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    {
        let r = on_disk(&path);
        r.create_order(&sample_order("S1-1")).unwrap();
    }
    {
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        store
            .conn()
            .pragma_update(None, "user_version", LATEST_VERSION + 41)
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    for _ in 0..2 {
        match Replica::open(
            &path,
            DeviceIdentity::dispatcher("d"),
            ReplicaOptions::default(),
        ) {
            Err(ReplicaError::Store(StoreError::FutureSchema { found, supported })) => {
                assert_eq!(found, LATEST_VERSION + 41);
                assert_eq!(supported, LATEST_VERSION);
            }
            Err(other) => panic!("expected FutureSchema, got {other:?}"),
            Ok(_) => panic!("a store from the future was opened"),
        }
        assert!(matches!(
            Store::open(&path, StoreOptions::default()),
            Err(StoreError::FutureSchema { .. })
        ));
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the store was changed"
    );
}

// (d) A document from a newer Waybill.

fn future_order(id: &DocId, version: i64) -> Automerge {
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put(ROOT, "schema_version", version).unwrap();
    tx.put(ROOT, "type", "order").unwrap();
    tx.put(ROOT, "id", id.as_str()).unwrap();
    tx.put(ROOT, "hologram", "a field from the future").unwrap();
    tx.commit();
    doc
}

#[test]
fn a_document_from_a_newer_waybill_is_refused_and_not_stored() {
    let target = in_memory("target");
    let id = DocId::new(DocKind::Order);
    let doc = future_order(&id, 99);
    match target.apply_remote(&id, &all_changes(&doc)) {
        Err(ReplicaError::Model(ModelError::FutureSchema { found, supported })) => {
            assert_eq!(found, 99);
            assert_eq!(supported, SCHEMA_VERSION);
        }
        other => panic!("expected FutureSchema, got {other:?}"),
    }
    assert_absent(&target, &id);
    assert!(target.orders(&OrderQuery::default()).unwrap().is_empty());
    assert_clean(&target);
}

#[test]
fn an_upgrade_from_a_newer_waybill_leaves_the_known_version_in_place() {
    let src = source();
    let target = in_memory("target");
    target.apply_remote(&src.order, &src.changes).unwrap();
    let heads = target.heads(&src.order).unwrap();
    // A newer app rewrote the version on top of the document.
    let mut newer = Automerge::load(&src.replica.export(&src.order).unwrap()).unwrap();
    let mut tx = newer.transaction();
    tx.put(ROOT, "schema_version", SCHEMA_VERSION + 1).unwrap();
    tx.commit();
    let upgrade = newer.get_last_local_change().unwrap().raw_bytes().to_vec();
    assert!(matches!(
        target.apply_remote(&src.order, &[upgrade]),
        Err(ReplicaError::Model(ModelError::FutureSchema { .. }))
    ));
    assert_eq!(target.heads(&src.order).unwrap(), heads);
    assert_eq!(target.order(&src.order).unwrap().status, "picking");
    ev(&target, &src.order, "packed");
    assert_clean(&target);
}

// (e) Remote documents that are not Waybill documents.

#[test]
fn a_remote_document_that_is_not_a_waybill_document_is_malformed() {
    let src = source();
    let order = DocId::new(DocKind::Order);
    let build = |f: &dyn Fn(&mut automerge::transaction::Transaction<'_>)| {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        f(&mut tx);
        tx.commit();
        all_changes(&doc)
    };
    let random_keys = build(&|tx| {
        for (i, byte) in noise(3, 20).into_iter().enumerate() {
            tx.put(ROOT, format!("k{byte:02x}{i}"), i64::from(byte))
                .unwrap();
        }
    });
    let version_as_text = build(&|tx| {
        tx.put(ROOT, "schema_version", "1").unwrap();
        tx.put(ROOT, "type", "order").unwrap();
        tx.put(ROOT, "id", order.as_str()).unwrap();
    });
    let header_only = build(&|tx| {
        tx.put(ROOT, "schema_version", SCHEMA_VERSION).unwrap();
        tx.put(ROOT, "type", "order").unwrap();
        tx.put(ROOT, "id", order.as_str()).unwrap();
    });
    let wrong_type = build(&|tx| {
        tx.put(ROOT, "schema_version", SCHEMA_VERSION).unwrap();
        tx.put(ROOT, "type", "invoice").unwrap();
        tx.put(ROOT, "id", order.as_str()).unwrap();
    });
    let cases: Vec<(&str, DocId, Vec<Vec<u8>>)> = vec![
        ("random keys", order.clone(), random_keys),
        ("schema_version as text", order.clone(), version_as_text),
        ("header only", order.clone(), header_only),
        ("type invoice", order.clone(), wrong_type),
        // A real order under another order's id, and under a delivery id.
        (
            "someone else's order",
            DocId::new(DocKind::Order),
            src.changes.clone(),
        ),
        (
            "an order as a delivery",
            DocId::new(DocKind::Delivery),
            src.changes.clone(),
        ),
    ];
    let target = in_memory("target");
    for (name, id, changes) in cases {
        match target.apply_remote(&id, &changes) {
            Err(ReplicaError::Model(ModelError::Malformed { doc_id, .. })) => {
                assert_eq!(doc_id, id.as_str(), "{name}");
            }
            other => panic!("{name}: expected Malformed, got {other:?}"),
        }
        assert_absent(&target, &id);
    }
    assert!(target.doc_ids().unwrap().is_empty());
    assert_clean(&target);
    // The real order still arrives under its own id.
    target.apply_remote(&src.order, &src.changes).unwrap();
    assert_clean(&target);
}

/// Another order's changes sent under the id of an order this device already has: the
/// merge would give the document two `id`s (one hidden as a conflict) and carry the
/// other order's history. Which `id` wins depends on the random actor ids, so try a few.
#[test]
fn another_orders_changes_under_an_existing_id_are_refused() {
    for attempt in 0..8 {
        let a = source();
        let b = source();
        let target = in_memory("target");
        target.apply_remote(&a.order, &a.changes).unwrap();
        let heads = target.heads(&a.order).unwrap();
        let result = target.apply_remote(&a.order, &b.changes);
        assert!(
            matches!(
                result,
                Err(ReplicaError::Model(ModelError::Malformed { .. }))
            ),
            "attempt {attempt}: {result:?}"
        );
        assert_eq!(target.heads(&a.order).unwrap(), heads);
    }
}

// (f) Corrupt bytes in the store.

/// Two orders A and B in a store at `path`, with `options`; returns their ids.
fn two_orders(path: &Path, options: StoreOptions) -> (DocId, DocId) {
    let r = Replica::open(
        path,
        DeviceIdentity::dispatcher("d"),
        ReplicaOptions {
            store: options,
            ..ReplicaOptions::default()
        },
    )
    .unwrap();
    let a = r.create_order(&sample_order("S1-A")).unwrap();
    let b = r.create_order(&sample_order("S1-B")).unwrap();
    for id in [&a, &b] {
        ev(&r, id, "confirmed");
        ev(&r, id, "picking");
    }
    (a, b)
}

/// Reopen the store with one document's bytes overwritten; check that document is
/// reported as `CorruptDocument` wherever it is touched and the other stays usable.
fn check_corrupt(path: &Path, bad: &DocId, good: &DocId, sql: &str, bytes: &[u8]) {
    {
        let store = Store::open(path, StoreOptions::default()).unwrap();
        let n = store.conn().execute(sql, (bytes, bad.as_str())).unwrap();
        assert!(n > 0, "{sql} changed nothing");
    }
    let r = on_disk(path);
    let corrupt = |e: &ReplicaError| match e {
        ReplicaError::Store(StoreError::CorruptDocument { doc_id, .. }) => doc_id == bad.as_str(),
        _ => false,
    };
    let err = r.order(bad).unwrap_err();
    assert!(corrupt(&err), "reading: {err:?}");
    let err = r
        .record_event(bad, "packed", &EventDetails::default())
        .unwrap_err();
    assert!(corrupt(&err), "writing: {err:?}");
    let err = r.export(bad).unwrap_err();
    assert!(corrupt(&err), "exporting: {err:?}");
    // The other document, and the lists, still work.
    assert_eq!(r.order(good).unwrap().status, "picking");
    assert_eq!(r.orders(&OrderQuery::default()).unwrap().len(), 2);
    let heads = r.heads(good).unwrap();
    r.add_note(good, "still fine").unwrap();
    assert_ne!(r.heads(good).unwrap(), heads);
    assert!(r.order(good).unwrap().notes.ends_with("still fine"));
    // Verification names the corrupt document rather than passing it.
    match r.verify() {
        Err(e) => assert!(corrupt(&e), "verify: {e:?}"),
        Ok(report) => assert!(
            report.mismatches.iter().any(|m| m.contains(bad.as_str())),
            "verify passed a corrupt document: {report:?}"
        ),
    }
}

#[test]
fn a_garbage_snapshot_is_reported_and_other_documents_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let (a, b) = two_orders(&path, StoreOptions::default());
    check_corrupt(
        &path,
        &a,
        &b,
        "UPDATE documents SET snapshot = ?1 WHERE doc_id = ?2",
        &noise(11, 700),
    );
}

#[test]
fn a_truncated_snapshot_is_reported_and_other_documents_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    // Compact after every change, so both documents live in their snapshots.
    let options = StoreOptions {
        compact_after: 1,
        ..StoreOptions::default()
    };
    let (a, b) = two_orders(&path, options);
    let snapshot: Vec<u8> = Store::open(&path, options)
        .unwrap()
        .conn()
        .query_row(
            "SELECT snapshot FROM documents WHERE doc_id = ?1",
            [a.as_str()],
            |r| r.get(0),
        )
        .unwrap();
    for cut in [1, 8, snapshot.len() / 2, snapshot.len() - 1] {
        check_corrupt(
            &path,
            &a,
            &b,
            "UPDATE documents SET snapshot = ?1 WHERE doc_id = ?2",
            &snapshot[..cut],
        );
    }
}

#[test]
fn a_corrupt_stored_change_is_reported_and_other_documents_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let (a, b) = two_orders(&path, StoreOptions::default());
    check_corrupt(
        &path,
        &a,
        &b,
        "UPDATE changes SET bytes = ?1 WHERE rowid = (SELECT max(rowid) FROM changes WHERE doc_id = ?2)",
        &noise(12, 90),
    );
}

// Properties: whatever the bytes, a typed outcome and a consistent replica.

proptest! {
    // No regression files: a failure prints its minimal input, to be added as a case.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_into_apply_remote_never_panic(
        batch in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..512), 0..4),
        delivery in any::<bool>(),
    ) {
        let target = in_memory("target");
        let id = DocId::new(if delivery { DocKind::Delivery } else { DocKind::Order });
        let result = target.apply_remote(&id, &batch);
        if !batch.is_empty() {
            prop_assert!(result.is_err(), "noise accepted: {result:?}");
            prop_assert!(!target.doc_ids().unwrap().contains(&id));
        }
        assert_clean(&target);
    }

    #[test]
    fn edited_changes_into_apply_remote_never_panic(
        which in 1usize..3,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let (order, changes) = shared_source();
        let target = in_memory("target");
        target.apply_remote(order, &changes[..1]).unwrap();
        let heads = target.heads(order).unwrap();
        let mut bytes = changes[which].clone();
        for (at, value) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        match target.apply_remote(order, &[bytes]) {
            // Automerge does not check the checksum, so an edit can make another valid
            // change (single_byte_corruptions_of_a_change_are_refused).
            Ok(_) => {}
            Err(
                ReplicaError::CorruptChange { .. }
                | ReplicaError::Model(_)
                | ReplicaError::Store(_),
            ) => prop_assert_eq!(target.heads(order).unwrap(), heads),
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
        assert_clean(&target);
        // Still writable, whatever was accepted.
        target.add_note(order, "still writable").unwrap();
        assert_clean(&target);
    }
}
