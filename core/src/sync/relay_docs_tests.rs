//! `apply_checked`'s cheap paths: the applied changes known without asking
//! Automerge to rebuild them, and a notes-only change read without hydrating the
//! whole document. Both must give exactly what the full paths give.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::DeviceIdentity;
use crate::model::NewOrder;
use crate::model::document::append_text;
use crate::model::effect::{self, Facts};
use crate::replica::{Replica, ReplicaOptions};
use automerge::transaction::Transactable;
use automerge::{ObjType, ROOT, Value};
use proptest::prelude::*;

fn new_order() -> NewOrder {
    serde_json::from_value(serde_json::json!({
        "number": "S1-000001", "channel": "web", "store": "S1",
        "customer": {"id": "c-1", "name": "Customer 1",
                     "phone": "+98 912 000 0000", "address": "12 Vali-Asr St, Tehran"},
        "currency": "IRR", "fulfilment": "delivery",
        "lines": [{"sku": "TEA-500", "name": "Black tea 500 g", "qty": 2, "unit_price": 1_850_000}]
    }))
    .unwrap()
}

/// An order created by a store device: its id, the device's copy, and the relay's
/// copy built from the same changes.
fn order() -> (DocId, Automerge, Automerge) {
    let replica = Replica::open_in_memory(
        DeviceIdentity::store("dev-s1", "S1"),
        ReplicaOptions::default(),
    )
    .unwrap();
    let id = replica.create_order(&new_order()).unwrap();
    let changes: Vec<Change> = replica
        .outbox(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| Change::from_bytes(e.bytes).unwrap())
        .collect();
    let mut relay = Automerge::new();
    crate::changes::apply(&mut relay, changes).unwrap();
    let device = relay.fork();
    (id, device, relay)
}

/// What a device does to the order in one change.
#[derive(Debug, Clone)]
enum Edit {
    /// Add a note (what `Replica::add_note` does).
    Note(String),
    /// Delete the first characters of the notes (forbidden to a store).
    TrimNotes(usize),
    /// Rewrite a plain field.
    Number(String),
    /// Add a note and rewrite a plain field in one change.
    NoteAndNumber(String, String),
}

fn notes_obj(doc: &Automerge) -> automerge::ObjId {
    match doc.get(ROOT, "notes").unwrap() {
        Some((Value::Object(ObjType::Text), obj)) => obj,
        other => panic!("notes is {other:?}"),
    }
}

/// Make `edit` on the device's copy; returns the change.
fn edit(device: &mut Automerge, edit: &Edit) -> Change {
    let notes = notes_obj(device);
    let len = device.length(&notes);
    let mut tx = device.transaction();
    match edit {
        Edit::Note(text) => append_text(&mut tx, "notes", text).unwrap(),
        // Empty notes: nothing to delete, so write one instead (an empty
        // transaction makes no change).
        Edit::TrimNotes(_) if len == 0 => append_text(&mut tx, "notes", "x").unwrap(),
        Edit::TrimNotes(n) => {
            tx.splice_text(&notes, 0, (*n).min(len) as isize, "")
                .unwrap();
        }
        Edit::Number(number) => tx.put(ROOT, "number", number.as_str()).unwrap(),
        Edit::NoteAndNumber(text, number) => {
            append_text(&mut tx, "notes", text).unwrap();
            tx.put(ROOT, "number", number.as_str()).unwrap();
        }
    }
    tx.commit();
    device.get_last_local_change().unwrap()
}

fn hashes(changes: &[Change]) -> Vec<ChangeHash> {
    changes.iter().map(Change::hash).collect()
}

/// Apply `changes` to the relay's copy both ways (the checked path, and plain
/// Automerge with `new_since` and a full read) and require the same outcome.
fn apply_both(relay: &mut Automerge, id: &DocId, changes: Vec<Change>) -> Applied {
    let mut reference = relay.fork();
    let heads = reference.get_heads();
    let before = readable(relay, id).ok().flatten();
    crate::changes::apply(&mut reference, changes.clone()).unwrap();
    let expected = new_since(&reference, &heads);
    let applied = match apply_checked(relay, id, before.as_ref(), changes) {
        Ok(applied) => applied,
        Err(_) => panic!("refused"),
    };
    let mut got = hashes(&applied.applied);
    let mut want = hashes(&expected);
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "the changes applied");
    assert_causal(&applied.applied);
    let full = readable(&reference, id).ok().flatten();
    assert_eq!(applied.after, full, "the typed value after");
    applied
}

/// Each change comes after those of its dependencies among the list.
fn assert_causal(changes: &[Change]) {
    for (i, c) in changes.iter().enumerate() {
        for dep in c.deps() {
            if let Some(j) = changes.iter().position(|d| d.hash() == *dep) {
                assert!(j < i, "change {i} comes before its dependency {j}");
            }
        }
    }
}

#[test]
fn a_note_is_read_without_hydrating_the_document() {
    let (id, mut device, mut relay) = order();
    let before = readable(&relay, &id).unwrap().unwrap();
    let change = edit(&mut device, &Edit::Note("Call on arrival.".into()));
    let applied = apply_both(&mut relay, &id, vec![change]);
    assert!(
        notes_only(&relay, &before, &applied.applied).is_some(),
        "a note alone takes the notes-only path"
    );
    match applied.after {
        Some(Document::Order(order)) => assert_eq!(order.notes.as_str(), "Call on arrival."),
        other => panic!("after is {other:?}"),
    }
}

#[test]
fn a_change_touching_more_than_notes_is_read_in_full() {
    let (id, mut device, mut relay) = order();
    let before = readable(&relay, &id).unwrap().unwrap();
    let change = edit(
        &mut device,
        &Edit::NoteAndNumber("Ring twice.".into(), "S1-999999".into()),
    );
    let applied = apply_both(&mut relay, &id, vec![change]);
    assert!(notes_only(&relay, &before, &applied.applied).is_none());
    match applied.after {
        Some(Document::Order(order)) => assert_eq!(order.number, "S1-999999"),
        other => panic!("after is {other:?}"),
    }
}

struct NoFacts;

impl Facts for NoFacts {
    fn courier_of(&self, _: &str) -> Option<String> {
        None
    }
    fn store_of_order(&self, _: &str) -> Option<String> {
        None
    }
}

#[test]
fn deleting_notes_takes_the_cheap_path_and_is_still_refused() {
    let (id, mut device, mut relay) = order();
    let note = edit(&mut device, &Edit::Note("Leave at the door.".into()));
    apply_both(&mut relay, &id, vec![note]);
    let before = readable(&relay, &id).unwrap().unwrap();
    let trim = edit(&mut device, &Edit::TrimNotes(6));
    let applied = apply_both(&mut relay, &id, vec![trim]);
    assert!(notes_only(&relay, &before, &applied.applied).is_some());
    let after = applied.after.expect("complete");
    let store = DeviceIdentity::store("dev-s1", "S1");
    let refused = effect::check_effect(&store, Some(&before), &after, &NoFacts).unwrap_err();
    assert!(refused.to_string().contains("notes only grow"), "{refused}");
    // A dispatcher may rewrite notes.
    let dispatcher = DeviceIdentity::dispatcher("dev-d");
    effect::check_effect(&dispatcher, Some(&before), &after, &NoFacts).unwrap();
}

#[test]
fn changes_out_of_order_are_logged_in_causal_order() {
    let (id, mut device, mut relay) = order();
    let first = edit(&mut device, &Edit::Note("one".into()));
    let second = edit(&mut device, &Edit::Note("two".into()));
    let applied = apply_both(&mut relay, &id, vec![second.clone(), first.clone()]);
    assert_eq!(hashes(&applied.applied), vec![first.hash(), second.hash()]);
    assert!(applied.waiting.is_empty());
}

#[test]
fn a_change_waiting_for_its_dependency_is_completed_later() {
    let (id, mut device, mut relay) = order();
    let first = edit(&mut device, &Edit::Note("one".into()));
    let second = edit(&mut device, &Edit::Note("two".into()));
    let third = edit(&mut device, &Edit::Note("three".into()));
    // The second arrives first: it waits, nothing is applied, nothing judged.
    let applied = apply_both(&mut relay, &id, vec![second.clone()]);
    assert!(applied.applied.is_empty());
    assert_eq!(applied.waiting, vec![second.hash()]);
    assert!(applied.after.is_none());
    // The first completes it (the full path: something was queued).
    let applied = apply_both(&mut relay, &id, vec![first.clone()]);
    assert_eq!(hashes(&applied.applied), vec![first.hash(), second.hash()]);
    assert!(applied.waiting.is_empty());
    // Back on the cheap path.
    let before = readable(&relay, &id).unwrap().unwrap();
    let applied = apply_both(&mut relay, &id, vec![third.clone()]);
    assert_eq!(hashes(&applied.applied), vec![third.hash()]);
    assert!(notes_only(&relay, &before, &applied.applied).is_some());
}

#[test]
fn a_change_sent_twice_in_one_upload_is_applied_once() {
    let (id, mut device, mut relay) = order();
    let note = edit(&mut device, &Edit::Note("one".into()));
    let applied = apply_both(&mut relay, &id, vec![note.clone(), note.clone()]);
    assert_eq!(hashes(&applied.applied), vec![note.hash()]);
}

#[test]
fn a_change_already_held_is_not_applied_again() {
    let (id, mut device, mut relay) = order();
    let note = edit(&mut device, &Edit::Note("one".into()));
    apply_both(&mut relay, &id, vec![note.clone()]);
    let applied = apply_both(&mut relay, &id, vec![note]);
    assert!(applied.applied.is_empty());
    assert!(applied.waiting.is_empty());
}

fn any_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => "[a-z ]{1,12}".prop_map(Edit::Note),
        1 => (1usize..8).prop_map(Edit::TrimNotes),
        1 => "[A-Z0-9]{1,6}".prop_map(Edit::Number),
        1 => ("[a-z]{1,6}", "[A-Z0-9]{1,6}").prop_map(|(n, m)| Edit::NoteAndNumber(n, m)),
    ]
}

proptest! {
    /// Any sequence of edits, uploaded in any chunking, each chunk possibly
    /// reversed: the checked path applies and reads exactly what Automerge and a
    /// full read say.
    #[test]
    fn the_cheap_paths_agree_with_the_full_ones(
        edits in prop::collection::vec(any_edit(), 1..12),
        chunks in prop::collection::vec((1usize..4, any::<bool>()), 1..12),
    ) {
        let (id, mut device, mut relay) = order();
        let mut changes: Vec<Change> = edits.iter().map(|e| edit(&mut device, e)).collect();
        for (size, reversed) in chunks.into_iter().cycle() {
            if changes.is_empty() {
                break;
            }
            let mut chunk: Vec<Change> = changes.drain(..size.min(changes.len())).collect();
            if reversed {
                chunk.reverse();
            }
            apply_both(&mut relay, &id, chunk);
        }
        prop_assert_eq!(relay.get_heads(), device.get_heads());
    }
}
