//! The one conformance suite every [`LogStore`] backend runs (in memory, the relay's
//! SQLite, later PostgreSQL), in the manner of matrix-rust-sdk's store
//! `integration_tests`. Each check takes a fresh, empty store from the factory and
//! panics with a message naming the broken promise.
//!
//! Hashes are fake 32-byte values and change bytes are arbitrary: a store must not
//! interpret either.

use super::{
    AudienceUpdate, IngestBatch, LogStore, LogStoreError, QuarantinedChange, SavedDoc, StoredChange,
};
use crate::protocol::LogEntry;

/// A named check, run against one fresh store.
type Check<S> = (&'static str, fn(&mut S));

/// Run every check, each against a fresh store.
pub(super) fn run<S: LogStore>(fresh: &mut impl FnMut() -> S) {
    let checks: &[Check<S>] = &[
        ("empty store", empty_store),
        ("relay id", relay_id_is_stable),
        (
            "sequence numbers",
            commit_assigns_consecutive_sequence_numbers,
        ),
        (
            "idempotent commit",
            recommitting_a_hash_returns_its_sequence,
        ),
        ("empty batch", an_empty_batch_changes_nothing),
        ("read_log pagination", read_log_paginates),
        ("read_log byte budget", read_log_respects_the_byte_budget),
        ("opaque bytes", change_bytes_round_trip_untouched),
        ("waiting changes", waiting_changes_are_stored_but_not_logged),
        (
            "waiting to logged",
            a_waiting_change_moves_to_the_log_in_one_commit,
        ),
        (
            "waiting already logged",
            a_logged_change_is_not_stored_as_waiting,
        ),
        ("waiting deduplicated", a_waiting_change_is_stored_once),
        ("quarantine", quarantine_keeps_entries_in_order),
        ("revocation", revocation),
        ("doc_ids", doc_ids_are_sorted_and_deduplicated),
        ("mixed batch", a_mixed_batch_is_visible_after_commit),
        ("audiences and views", audiences_and_views),
        ("doc_log", doc_log_lists_a_documents_entries),
        ("snapshots", snapshots_are_served_only_while_fresh),
        ("document versions", commits_advance_document_versions),
        (
            "stale expectation",
            a_stale_expectation_fails_and_writes_nothing,
        ),
    ];
    for (name, check) in checks {
        let mut store = fresh();
        let guard = NameOnPanic(name);
        check(&mut store);
        std::mem::forget(guard);
    }
}

/// Names the failing check when an assertion inside it panics.
struct NameOnPanic<'a>(&'a str);

impl Drop for NameOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("log store conformance check failed: {}", self.0);
        }
    }
}

// ---- helpers ----------------------------------------------------------------------

/// Unwrap a storage result or fail the suite, naming the operation.
fn ok<T>(result: Result<T, LogStoreError>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("log store conformance: {what} failed: {e}"),
    }
}

/// A fake 32-byte change hash, distinct for each `n`.
fn hash(n: u32) -> Vec<u8> {
    let mut h = vec![0xA5; 32];
    h[..4].copy_from_slice(&n.to_be_bytes());
    h[31] = (n % 251) as u8;
    h
}

/// A change of `doc` with hash `n` and `len` arbitrary bytes.
fn change(doc: &str, n: u32, len: usize) -> StoredChange {
    StoredChange {
        doc_id: doc.to_owned(),
        hash: hash(n),
        bytes: (0..len)
            .map(|i| (i as u32).wrapping_mul(31).wrapping_add(n) as u8)
            .collect(),
        device_id: format!("dev-{}", n % 3),
    }
}

fn log_batch(changes: &[StoredChange]) -> IngestBatch {
    IngestBatch {
        log: changes.to_vec(),
        ..IngestBatch::default()
    }
}

fn waiting_batch(changes: &[StoredChange]) -> IngestBatch {
    IngestBatch {
        waiting: changes.to_vec(),
        ..IngestBatch::default()
    }
}

fn commit<S: LogStore>(store: &mut S, batch: &IngestBatch) -> Vec<u64> {
    let seqs = ok(store.commit(batch), "commit");
    assert_eq!(
        seqs.len(),
        batch.log.len(),
        "log store conformance: commit must return one sequence number per logged change"
    );
    seqs
}

fn read_all<S: LogStore>(store: &S) -> Vec<LogEntry> {
    ok(store.read_log(0, usize::MAX, usize::MAX), "read_log")
}

fn seqs_of(entries: &[LogEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}

fn entry(seq: u64, c: &StoredChange) -> LogEntry {
    LogEntry {
        seq,
        doc_id: c.doc_id.clone(),
        bytes: c.bytes.clone(),
    }
}

/// Assert `doc_changes(doc)` is `logged` in order followed by `waiting` in any order.
fn assert_doc_changes<S: LogStore>(
    store: &S,
    doc: &str,
    logged: &[&StoredChange],
    waiting: &[&StoredChange],
) {
    let got = ok(store.doc_changes(doc), "doc_changes");
    assert_eq!(
        got.len(),
        logged.len() + waiting.len(),
        "log store conformance: doc_changes({doc:?}) has the wrong number of changes"
    );
    let expected_logged: Vec<&Vec<u8>> = logged.iter().map(|c| &c.bytes).collect();
    let got_logged: Vec<&Vec<u8>> = got[..logged.len()].iter().collect();
    assert_eq!(
        got_logged, expected_logged,
        "log store conformance: doc_changes({doc:?}) must list logged changes first, in log order"
    );
    let mut expected_waiting: Vec<&Vec<u8>> = waiting.iter().map(|c| &c.bytes).collect();
    let mut got_waiting: Vec<&Vec<u8>> = got[logged.len()..].iter().collect();
    expected_waiting.sort();
    got_waiting.sort();
    assert_eq!(
        got_waiting, expected_waiting,
        "log store conformance: doc_changes({doc:?}) must list waiting changes after logged ones"
    );
}

// ---- checks -----------------------------------------------------------------------

fn empty_store<S: LogStore>(store: &mut S) {
    assert_eq!(ok(store.head(), "head"), 0, "an empty log has head 0");
    assert_eq!(
        ok(store.oldest_resumable(), "oldest_resumable"),
        0,
        "an empty log is resumable from 0"
    );
    assert!(read_all(store).is_empty(), "an empty log reads nothing");
    assert!(
        ok(store.doc_ids(), "doc_ids").is_empty(),
        "an empty store has no documents"
    );
    assert!(
        ok(store.doc_changes("ord_nothing"), "doc_changes").is_empty(),
        "an unknown document has no changes"
    );
    assert!(
        !ok(store.contains(&hash(1)), "contains"),
        "an empty store contains nothing"
    );
    assert!(
        ok(store.quarantined(), "quarantined").is_empty(),
        "an empty store has an empty quarantine"
    );
    assert!(
        !ok(store.is_revoked("dev-0"), "is_revoked"),
        "no device is revoked in an empty store"
    );
}

fn relay_id_is_stable<S: LogStore>(store: &mut S) {
    let id = store.relay_id();
    assert!(!id.is_empty(), "relay_id must not be empty");
    commit(store, &log_batch(&[change("ord_a", 1, 8)]));
    ok(store.revoke("dev-9"), "revoke");
    assert_eq!(
        store.relay_id(),
        id,
        "relay_id must not change while the store is used"
    );
}

fn commit_assigns_consecutive_sequence_numbers<S: LogStore>(store: &mut S) {
    let first = [
        change("ord_a", 1, 10),
        change("ord_b", 2, 11),
        change("ord_a", 3, 12),
    ];
    assert_eq!(
        commit(store, &log_batch(&first)),
        vec![1, 2, 3],
        "the first changes get sequence numbers 1, 2, 3 in batch order"
    );
    assert_eq!(ok(store.head(), "head"), 3);
    let second = [change("dlv_c", 4, 5), change("ord_a", 5, 6)];
    assert_eq!(
        commit(store, &log_batch(&second)),
        vec![4, 5],
        "a later batch continues the sequence"
    );
    assert_eq!(ok(store.head(), "head"), 5);
    let expected: Vec<LogEntry> = first
        .iter()
        .chain(&second)
        .zip(1..)
        .map(|(c, seq)| entry(seq, c))
        .collect();
    assert_eq!(
        read_all(store),
        expected,
        "read_log returns every logged change with its sequence, document and bytes"
    );
    for c in first.iter().chain(&second) {
        assert!(
            ok(store.contains(&c.hash), "contains"),
            "a logged change is contained"
        );
    }
    assert_eq!(
        ok(store.oldest_resumable(), "oldest_resumable"),
        0,
        "an uncompacted log is resumable from 0"
    );
}

fn recommitting_a_hash_returns_its_sequence<S: LogStore>(store: &mut S) {
    let a = change("ord_a", 1, 10);
    let b = change("ord_a", 2, 10);
    let c = change("ord_b", 3, 10);
    assert_eq!(commit(store, &log_batch(std::slice::from_ref(&a))), vec![1]);
    assert_eq!(
        commit(store, &log_batch(std::slice::from_ref(&a))),
        vec![1],
        "re-committing a logged hash returns its existing sequence"
    );
    assert_eq!(
        ok(store.head(), "head"),
        1,
        "a duplicate does not grow the log"
    );
    assert_eq!(
        commit(store, &log_batch(&[b.clone(), a.clone(), c.clone()])),
        vec![2, 1, 3],
        "new changes around a duplicate get the next numbers, the duplicate its old one"
    );
    let d = change("ord_b", 4, 3);
    assert_eq!(
        commit(store, &log_batch(&[d.clone(), d.clone()])),
        vec![4, 4],
        "a hash twice in one batch is logged once"
    );
    assert_eq!(ok(store.head(), "head"), 4);
    assert_eq!(
        read_all(store),
        vec![entry(1, &a), entry(2, &b), entry(3, &c), entry(4, &d)],
        "duplicates never appear in the log"
    );
    assert_doc_changes(store, "ord_a", &[&a, &b], &[]);
}

fn an_empty_batch_changes_nothing<S: LogStore>(store: &mut S) {
    commit(store, &log_batch(&[change("ord_a", 1, 4)]));
    assert!(IngestBatch::default().is_empty());
    assert_eq!(
        commit(store, &IngestBatch::default()),
        Vec::<u64>::new(),
        "an empty batch logs nothing"
    );
    assert_eq!(ok(store.head(), "head"), 1);
    assert_eq!(read_all(store).len(), 1);
}

fn read_log_paginates<S: LogStore>(store: &mut S) {
    let changes: Vec<StoredChange> = (1..=5).map(|n| change("ord_a", n, 10)).collect();
    commit(store, &log_batch(&changes));
    let big = usize::MAX;
    let read = |after, max_entries, max_bytes| {
        seqs_of(&ok(
            store.read_log(after, max_entries, max_bytes),
            "read_log",
        ))
    };
    assert_eq!(read(0, big, big), vec![1, 2, 3, 4, 5]);
    assert_eq!(
        read(2, big, big),
        vec![3, 4, 5],
        "read_log starts after `after`"
    );
    assert_eq!(read(4, big, big), vec![5]);
    assert_eq!(
        read(5, big, big),
        Vec::<u64>::new(),
        "after = head reads nothing"
    );
    assert_eq!(
        read(6, big, big),
        Vec::<u64>::new(),
        "after beyond head reads nothing"
    );
    assert_eq!(read(0, 2, big), vec![1, 2], "at most max_entries");
    assert_eq!(
        read(2, 2, big),
        vec![3, 4],
        "the next page continues the log"
    );
    assert_eq!(read(4, 2, big), vec![5], "the last page is short");
    assert_eq!(read(0, 1, big), vec![1]);
    assert_eq!(
        read(0, 0, big),
        vec![1],
        "read_log always returns at least one entry when any exist"
    );
    assert_eq!(read(3, 5, big), vec![4, 5]);
}

fn read_log_respects_the_byte_budget<S: LogStore>(store: &mut S) {
    // Sizes 10, 10, 10, 50, 5, 5.
    let sizes = [10, 10, 10, 50, 5, 5];
    let changes: Vec<StoredChange> = sizes
        .iter()
        .zip(1..)
        .map(|(len, n)| change("ord_a", n, *len))
        .collect();
    commit(store, &log_batch(&changes));
    let big = usize::MAX;
    let read = |after, max_entries, max_bytes| {
        seqs_of(&ok(
            store.read_log(after, max_entries, max_bytes),
            "read_log",
        ))
    };
    assert_eq!(
        read(0, big, 0),
        vec![1],
        "a zero byte budget still returns one entry"
    );
    assert_eq!(
        read(0, big, 1),
        vec![1],
        "an entry larger than the budget is returned alone"
    );
    assert_eq!(
        read(0, big, 20),
        vec![1, 2],
        "reaching the budget exactly stops the page"
    );
    assert_eq!(
        read(0, big, 25),
        vec![1, 2, 3],
        "the page stops after the entry that crosses the budget"
    );
    assert_eq!(
        read(2, big, 15),
        vec![3, 4],
        "a large entry crossing the budget is included, then the page stops"
    );
    assert_eq!(read(3, big, 1), vec![4], "an oversize entry alone");
    assert_eq!(read(4, big, 10), vec![5, 6]);
    assert_eq!(
        read(0, 2, 1_000),
        vec![1, 2],
        "max_entries applies within the byte budget"
    );
    assert_eq!(
        read(0, 5, 25),
        vec![1, 2, 3],
        "the byte budget applies within max_entries"
    );
}

fn change_bytes_round_trip_untouched<S: LogStore>(store: &mut S) {
    let mut odd = change("ord_bytes", 1, 0);
    odd.bytes = vec![
        0x00, 0xFF, 0x85, 0x6F, 0x4A, 0x83, 0x00, 0x00, b'\n', b'\'', 0x7F,
    ];
    let mut large = change("ord_bytes", 2, 0);
    large.bytes = (0..(256 * 1024u32))
        .map(|i| (i.wrapping_mul(7919) >> 3) as u8)
        .collect();
    let mut empty = change("ord_bytes", 3, 0);
    empty.bytes = Vec::new();
    let mut not_32 = change("ord_bytes", 4, 3);
    not_32.hash = vec![0x00, 0x01];
    let mut waiting = change("ord_bytes", 5, 0);
    waiting.bytes = vec![0x00; 17];
    let all = [odd.clone(), large.clone(), empty.clone(), not_32.clone()];
    let batch = IngestBatch {
        log: all.to_vec(),
        waiting: vec![waiting.clone()],
        ..IngestBatch::default()
    };
    assert_eq!(commit(store, &batch), vec![1, 2, 3, 4]);
    assert_eq!(
        read_all(store),
        vec![
            entry(1, &odd),
            entry(2, &large),
            entry(3, &empty),
            entry(4, &not_32)
        ],
        "change bytes come back exactly as stored"
    );
    assert_doc_changes(
        store,
        "ord_bytes",
        &[&odd, &large, &empty, &not_32],
        &[&waiting],
    );
    assert!(ok(store.contains(&[0x00, 0x01]), "contains"));
    assert!(
        !ok(store.contains(&[0x00]), "contains"),
        "hashes match exactly, not by prefix"
    );
}

fn waiting_changes_are_stored_but_not_logged<S: LogStore>(store: &mut S) {
    let a = change("ord_a", 1, 10);
    let b = change("ord_a", 2, 10);
    let w1 = change("ord_a", 3, 10);
    let w2 = change("ord_a", 4, 10);
    let other = change("ord_z", 5, 10);
    let batch = IngestBatch {
        log: vec![a.clone()],
        waiting: vec![w1.clone(), other.clone()],
        ..IngestBatch::default()
    };
    assert_eq!(commit(store, &batch), vec![1]);
    commit(store, &waiting_batch(std::slice::from_ref(&w2)));
    assert_eq!(commit(store, &log_batch(std::slice::from_ref(&b))), vec![2]);
    assert_eq!(
        ok(store.head(), "head"),
        2,
        "waiting changes get no sequence number"
    );
    assert_eq!(
        read_all(store),
        vec![entry(1, &a), entry(2, &b)],
        "waiting changes are not in the log"
    );
    for w in [&w1, &w2, &other] {
        assert!(
            ok(store.contains(&w.hash), "contains"),
            "a waiting change is contained"
        );
    }
    assert_doc_changes(store, "ord_a", &[&a, &b], &[&w1, &w2]);
    assert_doc_changes(store, "ord_z", &[], &[&other]);
}

fn a_waiting_change_moves_to_the_log_in_one_commit<S: LogStore>(store: &mut S) {
    let a = change("ord_a", 1, 10);
    let w = change("ord_a", 2, 10);
    let w_other = change("ord_a", 3, 10);
    assert_eq!(commit(store, &log_batch(std::slice::from_ref(&a))), vec![1]);
    commit(store, &waiting_batch(&[w.clone(), w_other.clone()]));
    let promote = IngestBatch {
        log: vec![w.clone()],
        no_longer_waiting: vec![w.hash.clone()],
        ..IngestBatch::default()
    };
    assert_eq!(
        commit(store, &promote),
        vec![2],
        "a waiting change gets the next sequence when it is logged"
    );
    assert!(ok(store.contains(&w.hash), "contains"));
    assert_eq!(read_all(store), vec![entry(1, &a), entry(2, &w)]);
    assert_doc_changes(store, "ord_a", &[&a, &w], &[&w_other]);

    // Removing a hash that is not waiting is harmless.
    let stray = IngestBatch {
        no_longer_waiting: vec![hash(999)],
        ..IngestBatch::default()
    };
    assert_eq!(commit(store, &stray), Vec::<u64>::new());
    assert_doc_changes(store, "ord_a", &[&a, &w], &[&w_other]);
    assert!(
        !ok(store.contains(&hash(999)), "contains"),
        "removing an unknown waiting hash stores nothing"
    );
}

fn a_logged_change_is_not_stored_as_waiting<S: LogStore>(store: &mut S) {
    let a = change("ord_a", 1, 10);
    let b = change("ord_b", 2, 10);
    commit(store, &log_batch(std::slice::from_ref(&a)));
    commit(store, &waiting_batch(std::slice::from_ref(&a)));
    assert_doc_changes(store, "ord_a", &[&a], &[]);
    // Logged and waiting in the same batch: logged wins.
    let both = IngestBatch {
        log: vec![b.clone()],
        waiting: vec![b.clone()],
        ..IngestBatch::default()
    };
    assert_eq!(commit(store, &both), vec![2]);
    assert_doc_changes(store, "ord_b", &[&b], &[]);
    assert_eq!(ok(store.head(), "head"), 2);
}

fn a_waiting_change_is_stored_once<S: LogStore>(store: &mut S) {
    let w = change("ord_a", 1, 10);
    commit(store, &waiting_batch(std::slice::from_ref(&w)));
    commit(store, &waiting_batch(std::slice::from_ref(&w)));
    commit(store, &waiting_batch(&[w.clone(), w.clone()]));
    assert_doc_changes(store, "ord_a", &[], &[&w]);
    assert_eq!(ok(store.head(), "head"), 0);
}

fn quarantine_keeps_entries_in_order<S: LogStore>(store: &mut S) {
    let mut undecodable = change("ord_q", 2, 7);
    undecodable.hash = Vec::new();
    let first = [
        QuarantinedChange {
            change: change("ord_q", 1, 12),
            code: "Forbidden".to_owned(),
            reason: "courier dev-1 may not change order ord_q's lines".to_owned(),
            at_ms: 1_700_000_000_000,
        },
        QuarantinedChange {
            change: undecodable,
            code: "BadChange".to_owned(),
            reason: "change bytes did not decode: bad checksum".to_owned(),
            at_ms: 1_700_000_000_001,
        },
    ];
    let second = QuarantinedChange {
        change: change("dlv_q", 3, 3),
        code: "Forbidden".to_owned(),
        reason: "ünïcödé reason, with 'quotes'".to_owned(),
        at_ms: -5,
    };
    commit(
        store,
        &IngestBatch {
            quarantine: first.to_vec(),
            ..IngestBatch::default()
        },
    );
    commit(
        store,
        &IngestBatch {
            quarantine: vec![second.clone()],
            ..IngestBatch::default()
        },
    );
    let mut expected = first.to_vec();
    expected.push(second);
    assert_eq!(
        ok(store.quarantined(), "quarantined"),
        expected,
        "the quarantine keeps every field, oldest first"
    );
    assert_eq!(
        ok(store.head(), "head"),
        0,
        "quarantined changes are not logged"
    );
    assert!(
        !ok(store.contains(&hash(1)), "contains"),
        "a quarantined change is not contained"
    );
    assert!(
        ok(store.doc_ids(), "doc_ids").is_empty(),
        "quarantined changes name no documents"
    );
    assert!(ok(store.doc_changes("ord_q"), "doc_changes").is_empty());
}

fn revocation<S: LogStore>(store: &mut S) {
    assert!(!ok(store.is_revoked("dev-a"), "is_revoked"));
    ok(store.revoke("dev-a"), "revoke");
    assert!(
        ok(store.is_revoked("dev-a"), "is_revoked"),
        "a revoked device is revoked"
    );
    assert!(
        !ok(store.is_revoked("dev-b"), "is_revoked"),
        "revoking one device leaves others alone"
    );
    assert!(
        !ok(store.is_revoked("dev-"), "is_revoked"),
        "device ids match exactly"
    );
    ok(store.revoke("dev-a"), "revoke again");
    assert!(
        ok(store.is_revoked("dev-a"), "is_revoked"),
        "revoking twice is harmless"
    );
}

fn doc_ids_are_sorted_and_deduplicated<S: LogStore>(store: &mut S) {
    let batch = IngestBatch {
        log: vec![
            change("ord_b", 1, 4),
            change("ord_a", 2, 4),
            change("ord_b", 3, 4),
        ],
        waiting: vec![change("ord_c", 4, 4), change("ord_a", 5, 4)],
        ..IngestBatch::default()
    };
    commit(store, &batch);
    commit(store, &waiting_batch(&[change("dlv_z", 6, 4)]));
    assert_eq!(
        ok(store.doc_ids(), "doc_ids"),
        vec!["dlv_z", "ord_a", "ord_b", "ord_c"],
        "doc_ids lists documents of logged and waiting changes, sorted, once each"
    );
}

fn a_mixed_batch_is_visible_after_commit<S: LogStore>(store: &mut S) {
    let base = change("ord_a", 1, 10);
    let pending = change("ord_a", 2, 10);
    assert_eq!(
        commit(
            store,
            &IngestBatch {
                log: vec![base.clone()],
                waiting: vec![pending.clone()],
                ..IngestBatch::default()
            }
        ),
        vec![1]
    );

    let fresh = change("dlv_b", 3, 10);
    let new_waiting = change("dlv_b", 4, 10);
    let refused = QuarantinedChange {
        change: change("ord_c", 5, 10),
        code: "Forbidden".to_owned(),
        reason: "not granted".to_owned(),
        at_ms: 42,
    };
    let mixed = IngestBatch {
        log: vec![pending.clone(), fresh.clone(), base.clone()],
        waiting: vec![new_waiting.clone()],
        no_longer_waiting: vec![pending.hash.clone()],
        quarantine: vec![refused.clone()],
        audience: Vec::new(),
        expect: Default::default(),
    };
    assert_eq!(
        commit(store, &mixed),
        vec![2, 3, 1],
        "a mixed batch logs its changes in order"
    );
    ok(store.revoke("dev-x"), "revoke");

    assert_eq!(ok(store.head(), "head"), 3);
    assert_eq!(
        read_all(store),
        vec![entry(1, &base), entry(2, &pending), entry(3, &fresh)]
    );
    assert_doc_changes(store, "ord_a", &[&base, &pending], &[]);
    assert_doc_changes(store, "dlv_b", &[&fresh], &[&new_waiting]);
    for c in [&base, &pending, &fresh, &new_waiting] {
        assert!(ok(store.contains(&c.hash), "contains"));
    }
    assert!(!ok(store.contains(&refused.change.hash), "contains"));
    assert!(ok(
        store.is_quarantined(&refused.change.hash),
        "is_quarantined"
    ));
    assert!(!ok(store.is_quarantined(&base.hash), "is_quarantined"));
    assert_eq!(ok(store.quarantined(), "quarantined"), vec![refused]);
    assert_eq!(ok(store.doc_ids(), "doc_ids"), vec!["dlv_b", "ord_a"]);
    assert!(ok(store.is_revoked("dev-x"), "is_revoked"));
}

fn audience(principals: &[&str]) -> std::collections::BTreeSet<String> {
    principals.iter().map(|p| (*p).to_owned()).collect()
}

fn audiences_and_views<S: LogStore>(store: &mut S) {
    use super::ViewChange;
    assert!(ok(store.audience_of("dlv_a"), "audience_of").is_empty());
    assert!(ok(store.view("courier:c1"), "view").is_empty());

    // Created for store S1 and courier c1 (one batch, one log entry: seq 1).
    let created = IngestBatch {
        audience: vec![AudienceUpdate {
            doc_id: "dlv_a".into(),
            audience: audience(&["store:S1", "courier:c1"]),
        }],
        ..log_batch(&[change("dlv_a", 1, 10)])
    };
    commit(store, &created);
    assert_eq!(
        ok(store.audience_of("dlv_a"), "audience_of"),
        audience(&["store:S1", "courier:c1"])
    );
    assert_eq!(ok(store.view("courier:c1"), "view"), vec!["dlv_a"]);
    assert_eq!(ok(store.view("store:S1"), "view"), vec!["dlv_a"]);

    // Reassigned to c2 at seq 3 (batch of two entries).
    let moved = IngestBatch {
        audience: vec![AudienceUpdate {
            doc_id: "dlv_a".into(),
            audience: audience(&["store:S1", "courier:c2"]),
        }],
        ..log_batch(&[change("dlv_a", 2, 10), change("ord_b", 3, 10)])
    };
    commit(store, &moved);
    assert!(ok(store.view("courier:c1"), "view").is_empty());
    assert_eq!(ok(store.view("courier:c2"), "view"), vec!["dlv_a"]);
    // Several at once: a document without an audience is left out.
    let several = ok(
        store.audiences_of(&["ord_b", "dlv_a", "dlv_none"]),
        "audiences_of",
    );
    assert_eq!(several.len(), 1, "{several:?}");
    assert_eq!(several["dlv_a"], audience(&["store:S1", "courier:c2"]));
    assert!(ok(store.audiences_of(&[]), "audiences_of").is_empty());
    let change_of = |principal: &str, seq, joined| ViewChange {
        principal: principal.into(),
        doc_id: "dlv_a".into(),
        seq,
        joined,
    };
    assert_eq!(
        ok(store.view_changes("courier:c1", 0), "view_changes"),
        vec![
            change_of("courier:c1", 1, true),
            change_of("courier:c1", 3, false)
        ],
        "a view change is stamped with its batch's last log position"
    );
    assert_eq!(
        ok(store.view_changes("courier:c1", 1), "view_changes"),
        vec![change_of("courier:c1", 3, false)],
        "view_changes lists only changes after the cursor"
    );
    assert_eq!(
        ok(store.view_changes("courier:c2", 0), "view_changes"),
        vec![change_of("courier:c2", 3, true)]
    );
    assert_eq!(
        ok(store.view_changes("store:S1", 0), "view_changes"),
        vec![change_of("store:S1", 1, true)],
        "an unchanged principal gets no new view change"
    );
    // Writing the same audience again changes nothing.
    let same = IngestBatch {
        audience: vec![AudienceUpdate {
            doc_id: "dlv_a".into(),
            audience: audience(&["store:S1", "courier:c2"]),
        }],
        ..log_batch(&[change("dlv_a", 4, 10)])
    };
    commit(store, &same);
    assert_eq!(
        ok(store.view_changes("courier:c2", 0), "view_changes").len(),
        1
    );

    // The log as a catching-up device may be sent it: dlv_a at 1, 2 and 4, ord_b
    // (no audience) at 3.
    let read_for = |principal: &str, after, head, max_entries| {
        let (entries, through) = ok(
            store.read_log_for(principal, after, head, max_entries, usize::MAX),
            "read_log_for",
        );
        (
            entries.into_iter().map(|e| e.seq).collect::<Vec<_>>(),
            through,
        )
    };
    assert_eq!(
        read_for("courier:c2", 0, 4, 100),
        (vec![1, 2, 4], 4),
        "seen now"
    );
    assert_eq!(
        read_for("courier:c1", 1, 4, 100),
        (vec![2, 4], 4),
        "left the view after the cursor: sent, for the relay to decide"
    );
    assert_eq!(
        read_for("courier:c1", 3, 4, 100),
        (vec![], 4),
        "gone before the cursor"
    );
    assert_eq!(read_for("courier:c9", 0, 4, 100), (vec![], 4), "never seen");
    assert_eq!(
        read_for("courier:c2", 0, 2, 100),
        (vec![1, 2], 2),
        "up to the head given"
    );
    assert_eq!(
        read_for("courier:c2", 0, 4, 2),
        (vec![1, 2], 2),
        "a full page stops there"
    );
    assert_eq!(
        read_for("courier:c2", 4, 4, 100),
        (vec![], 4),
        "nothing after the head"
    );
}

fn doc_log_lists_a_documents_entries<S: LogStore>(store: &mut S) {
    let a1 = change("ord_a", 1, 10);
    let b = change("dlv_b", 2, 10);
    let a2 = change("ord_a", 3, 10);
    commit(store, &log_batch(&[a1.clone(), b.clone(), a2.clone()]));
    commit(store, &waiting_batch(&[change("ord_a", 4, 10)]));
    assert_eq!(
        ok(store.doc_log("ord_a"), "doc_log"),
        vec![entry(1, &a1), entry(3, &a2)],
        "doc_log lists logged entries only, in order"
    );
    assert!(ok(store.doc_log("ord_z"), "doc_log").is_empty());
    let c = change("ord_c", 5, 10);
    commit(store, &log_batch(std::slice::from_ref(&c)));
    assert_eq!(
        ok(
            store.docs_log(&["ord_c".into(), "ord_a".into(), "ord_z".into()]),
            "docs_log"
        ),
        vec![entry(1, &a1), entry(3, &a2), entry(4, &c)],
        "docs_log lists several documents' logged entries, in log order"
    );
    assert!(ok(store.docs_log(&[]), "docs_log").is_empty());
}

fn snapshots_are_served_only_while_fresh<S: LogStore>(store: &mut S) {
    let saved = |version: u64, bytes: &[u8]| SavedDoc {
        doc_id: "ord_a".into(),
        version,
        bytes: bytes.to_vec(),
    };
    let ids = ["ord_a".to_owned(), "ord_z".to_owned()];
    assert!(ok(store.fresh_snapshots(&ids), "fresh_snapshots").is_empty());
    commit(store, &log_batch(&[change("ord_a", 1, 10)]));
    let version = ok(store.doc_version("ord_a"), "doc_version");
    ok(
        store.put_snapshots(&[saved(version, b"one")]),
        "put_snapshots",
    );
    assert_eq!(
        ok(store.fresh_snapshots(&ids), "fresh_snapshots"),
        vec![("ord_a".to_owned(), b"one".to_vec())]
    );
    commit(store, &log_batch(&[change("ord_a", 2, 10)]));
    assert!(
        ok(store.fresh_snapshots(&ids), "fresh_snapshots").is_empty(),
        "a snapshot older than the document is never served"
    );
    ok(
        store.put_snapshots(&[saved(version + 1, b"two")]),
        "put_snapshots",
    );
    ok(
        store.put_snapshots(&[saved(version, b"old")]),
        "put_snapshots",
    );
    assert_eq!(
        ok(store.fresh_snapshots(&ids), "fresh_snapshots"),
        vec![("ord_a".to_owned(), b"two".to_vec())],
        "an older snapshot never replaces a newer one"
    );
    assert!(ok(store.fresh_snapshots(&[]), "fresh_snapshots").is_empty());
}

fn commits_advance_document_versions<S: LogStore>(store: &mut S) {
    let version = |store: &S, doc: &str| ok(store.doc_version(doc), "doc_version");
    assert_eq!(
        version(store, "ord_a"),
        0,
        "a document never stored is at 0"
    );
    // Two changes of one document in one commit: one version step.
    commit(
        store,
        &log_batch(&[change("ord_a", 1, 10), change("ord_a", 2, 10)]),
    );
    assert_eq!(version(store, "ord_a"), 1);
    commit(store, &waiting_batch(&[change("ord_a", 3, 10)]));
    assert_eq!(version(store, "ord_a"), 2, "a waiting change is a step too");
    let audience_only = IngestBatch {
        audience: vec![AudienceUpdate {
            doc_id: "ord_b".into(),
            audience: audience(&["store:S1"]),
        }],
        ..IngestBatch::default()
    };
    commit(store, &audience_only);
    assert_eq!(version(store, "ord_b"), 1, "an audience change is a step");
    let quarantine_only = IngestBatch {
        quarantine: vec![QuarantinedChange {
            change: change("ord_a", 4, 3),
            code: "Forbidden".into(),
            reason: "test".into(),
            at_ms: 1,
        }],
        ..IngestBatch::default()
    };
    commit(store, &quarantine_only);
    assert_eq!(version(store, "ord_a"), 2, "a refused change is not a step");
    let mut current = log_batch(&[change("ord_a", 5, 10)]);
    current.expect = [("ord_a".to_owned(), 2), ("ord_b".to_owned(), 1)].into();
    commit(store, &current);
    assert_eq!(version(store, "ord_a"), 3, "a current expectation commits");
    assert_eq!(
        version(store, "ord_b"),
        1,
        "a document only read keeps its version"
    );
}

fn a_stale_expectation_fails_and_writes_nothing<S: LogStore>(store: &mut S) {
    commit(store, &log_batch(&[change("ord_a", 1, 10)]));
    let mut stale = IngestBatch {
        log: vec![change("ord_a", 2, 10), change("ord_b", 3, 10)],
        waiting: vec![change("ord_b", 4, 10)],
        audience: vec![AudienceUpdate {
            doc_id: "ord_b".into(),
            audience: audience(&["store:S1"]),
        }],
        ..IngestBatch::default()
    };
    // Built on ord_a before its first change, and on ord_c as never stored.
    stale.expect = [("ord_a".to_owned(), 0), ("ord_c".to_owned(), 0)].into();
    match store.commit(&stale) {
        Err(LogStoreError::Conflict(docs)) => assert_eq!(docs, vec!["ord_a".to_owned()]),
        other => panic!("a stale expectation must fail with Conflict, got {other:?}"),
    }
    assert_eq!(ok(store.head(), "head"), 1, "nothing was logged");
    assert!(!ok(store.contains(&hash(4)), "contains"), "nothing waits");
    assert!(ok(store.audience_of("ord_b"), "audience_of").is_empty());
    assert_eq!(ok(store.doc_version("ord_a"), "doc_version"), 1);
    assert_eq!(ok(store.doc_version("ord_b"), "doc_version"), 0);
    stale.expect.insert("ord_a".into(), 1);
    assert_eq!(
        commit(store, &stale),
        vec![2, 3],
        "current again: it commits"
    );
}

/// What survives closing and reopening a store: `open(relay_id)` opens the same
/// storage each time (a file, a database schema).
pub(super) fn reopen<S: LogStore>(open: &mut impl FnMut(&str) -> S) {
    let (a, b, w) = (
        change("ord_a", 1, 10),
        change("ord_b", 2, 20),
        change("ord_a", 3, 5),
    );
    let refused = QuarantinedChange {
        change: change("ord_c", 4, 3),
        code: "Forbidden".to_owned(),
        reason: "no grant".to_owned(),
        at_ms: 7,
    };
    {
        let mut store = open("relay-eu");
        let batch = IngestBatch {
            log: vec![a.clone(), b.clone()],
            waiting: vec![w.clone()],
            quarantine: vec![refused.clone()],
            ..IngestBatch::default()
        };
        assert_eq!(commit(&mut store, &batch), vec![1, 2]);
        ok(store.revoke("dev-lost"), "revoke");
    }
    let mut store = open("relay-other");
    assert_eq!(store.relay_id(), "relay-eu", "the stored relay id wins");
    assert_eq!(ok(store.head(), "head"), 2);
    assert_eq!(read_all(&store), vec![entry(1, &a), entry(2, &b)]);
    assert_eq!(
        ok(store.doc_changes("ord_a"), "doc_changes"),
        vec![a.bytes.clone(), w.bytes.clone()]
    );
    assert_eq!(ok(store.quarantined(), "quarantined"), vec![refused]);
    assert!(ok(store.is_revoked("dev-lost"), "is_revoked"));
    assert_eq!(
        commit(&mut store, &log_batch(&[change("ord_d", 5, 1)])),
        vec![3],
        "the sequence continues after a reopen"
    );
    drop(store);
    assert_eq!(
        open("").relay_id(),
        "relay-eu",
        "an empty id opens an existing store"
    );
}
