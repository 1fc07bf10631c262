//! Waybill documents are plain Automerge (SCHEMA.md): the JavaScript implementation
//! (`@automerge/automerge`, pinned in tests/interop/package.json) loads what the Rust
//! core saved, checks every field's Automerge type against the schema, and writes a
//! status event and a note back, which the core then merges and reads.
//!
//! Needs `node` and `npm ci --prefix tests/interop`. Without the fixture the tests
//! print why they skipped, unless `WAYBILL_REQUIRE_INTEROP` is set (CI sets it to 1),
//! in which case they fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use waybill_core::model::{
    Channel, Customer, EntryKind, EventDetails, Fulfilment, GeoPoint, ModelError, NewDelivery,
    NewLedgerEntry, NewLine, NewOrder, NewProof, PaymentMethod, ProofKind, TimeWindow,
};
use waybill_core::replica::ReplicaOptions;
use waybill_core::{DeviceIdentity, DocId, Replica, ReplicaError};

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// The fixture directory, or None (after saying so) when it is not installed and
/// not required.
fn fixture() -> Option<PathBuf> {
    let dir = interop_dir();
    if dir
        .join("node_modules")
        .join("@automerge")
        .join("automerge")
        .is_dir()
    {
        return Some(dir);
    }
    let required =
        std::env::var("WAYBILL_REQUIRE_INTEROP").is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "WAYBILL_REQUIRE_INTEROP is set but {} has no node_modules: run npm ci --prefix tests/interop",
        dir.display()
    );
    eprintln!(
        "skipped: run npm ci --prefix tests/interop (the JavaScript interop fixture is not installed)"
    );
    None
}

/// Run the JS reader; returns its exit code and its JSON summary.
fn read_waybill(dir: &Path, args: &[&str]) -> (i32, Value) {
    let output = Command::new("node")
        .arg(dir.join("read_waybill.mjs"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("could not run `node` (is Node.js installed?)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let code = output.status.code().unwrap_or(-1);
    let summary: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("read_waybill.mjs {args:?} exited {code} without a JSON summary ({e})\nstdout:\n{stdout}\nstderr:\n{stderr}")
    });
    println!("read_waybill.mjs {args:?} -> exit {code}\n{stdout}");
    (code, summary)
}

/// Every change of a saved document, as `apply_remote` takes them.
fn changes_of(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let doc = automerge::Automerge::load(&bytes).unwrap();
    doc.get_changes(&[])
        .into_iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// A realistic order and its delivery on a dispatcher's device, saved to files.
struct Scenario {
    ops: Replica,
    order: DocId,
    delivery: DocId,
    dir: tempfile::TempDir,
}

impl Scenario {
    fn new() -> Self {
        let ops = Replica::open_in_memory(
            DeviceIdentity::dispatcher("ops-1"),
            ReplicaOptions::default(),
        )
        .unwrap();
        let order = ops
            .create_order(&NewOrder {
                number: "S1-000123".into(),
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
                lines: vec![
                    NewLine {
                        sku: "TEA-500".into(),
                        name: "Black tea 500 g".into(),
                        qty: 2,
                        unit_price: 1_850_000,
                    },
                    NewLine {
                        sku: "SUGAR-1K".into(),
                        name: "Sugar cubes 1 kg".into(),
                        qty: 1,
                        unit_price: 420_000,
                    },
                ],
                note: Some("Leave with the doorman if nobody answers".into()),
            })
            .unwrap();
        let delivery = ops
            .assign_courier(
                &order,
                "c1",
                &NewDelivery {
                    stop: None,
                    window: Some(TimeWindow {
                        start_ms: 1_767_000_000_000,
                        end_ms: 1_767_007_200_000,
                    }),
                },
            )
            .unwrap();
        ops.record_payment(
            &order,
            &NewLedgerEntry {
                reference: Some("psp-77".into()),
                ..NewLedgerEntry::payment(PaymentMethod::Online, 2_000_000, "IRR")
            },
        )
        .unwrap();
        ops.record_event(
            &delivery,
            "picked_up",
            &EventDetails {
                note: Some("bag 3 of 3".into()),
                location: Some(GeoPoint {
                    lat: 35.6997,
                    lon: 51.338,
                    accuracy_m: Some(8.5),
                }),
                resolution: None,
            },
        )
        .unwrap();
        ops.record_payment(
            &order,
            &NewLedgerEntry {
                delivery_id: Some(delivery.to_string()),
                ..NewLedgerEntry::payment(PaymentMethod::Cash, 1_000_000, "IRR")
            },
        )
        .unwrap();
        ops.record_payment(
            &order,
            &NewLedgerEntry {
                kind: EntryKind::StoreCredit,
                ..NewLedgerEntry::payment(PaymentMethod::Account, 50_000, "IRR")
            },
        )
        .unwrap();
        ops.attach_proof(
            &delivery,
            &NewProof {
                kind: ProofKind::Signature,
                blob: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
                    .into(),
                media_type: "image/png".into(),
            },
        )
        .unwrap();
        ops.add_note(&delivery, "Gate code 4711").unwrap();

        let dir = tempfile::tempdir().unwrap();
        let scenario = Self {
            ops,
            order,
            delivery,
            dir,
        };
        for id in [&scenario.order, &scenario.delivery] {
            let bytes = scenario.ops.export(id).unwrap();
            std::fs::write(scenario.saved(id), bytes).unwrap();
        }
        scenario
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn saved(&self, id: &DocId) -> PathBuf {
        self.path(&format!("{}.automerge", id.kind()))
    }
}

#[test]
fn javascript_reads_an_order_and_confirms_it_and_the_core_reads_that_back() {
    let Some(fixture) = fixture() else { return };
    let s = Scenario::new();
    let before = s.ops.order(&s.order).unwrap();
    assert_eq!(before.status, "placed");
    let input = s.saved(&s.order);
    let output = s.path("order.from-js.automerge");
    let note = "Confirmed by the web shop back office (JS)";
    let (code, summary) = read_waybill(
        &fixture,
        &[
            input.to_str().unwrap(),
            output.to_str().unwrap(),
            "--note",
            note,
            "--actor",
            "web-backoffice",
        ],
    );

    // What JS read matches what Rust wrote.
    assert_eq!(code, 0);
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["type"], "order");
    assert_eq!(summary["id"], s.order.as_str());
    assert_eq!(summary["schema_version"], 1);
    assert_eq!(summary["number"], "S1-000123");
    assert_eq!(summary["currency"], "IRR");
    assert_eq!(strings(&summary["event_kinds"]), ["placed"]);
    assert_eq!(strings(&summary["deliveries"]), [s.delivery.to_string()]);
    assert_eq!(summary["notes"], before.notes.as_str());
    assert_eq!(summary["unknown_fields"], serde_json::json!([]));
    assert_eq!(summary["payment_total"], 3_000_000);
    let b = &summary["balance"];
    for (field, rust) in [
        ("total", before.balance.total),
        ("returned", before.balance.returned),
        ("paid", before.balance.paid),
        ("refunded", before.balance.refunded),
        ("credited", before.balance.credited),
        ("due", before.balance.due),
    ] {
        assert_eq!(b[field].as_i64(), Some(rust), "balance.{field}: {b}");
    }
    assert_eq!(before.balance.due, 4_120_000 - 3_000_000 + 50_000);

    // What JS wrote is valid by the JS checker...
    let written = &summary["written"];
    assert_eq!(written["valid"], true, "{written}");
    let event = &written["event"];
    assert_eq!(event["kind"], "confirmed");
    assert_eq!(strings(&event["after"]), strings(&summary["event_ids"]));

    // ...and the core merges and reads it.
    let outcome = s.ops.apply_remote(&s.order, &changes_of(&output)).unwrap();
    assert_eq!(outcome.new_changes, 1, "only the JS change is new");
    assert!(!outcome.waiting_for_dependencies);
    let after = s.ops.order(&s.order).unwrap();
    assert_eq!(after.status, "confirmed");
    assert!(after.conflicts.is_empty());
    assert_eq!(after.notes, format!("{}\n{note}", before.notes));
    let last = after.timeline.last().unwrap();
    assert_eq!(last.id, event["id"].as_str().unwrap());
    assert_eq!(last.kind, "confirmed");
    assert_eq!(last.actor, "web-backoffice");
    assert_eq!(last.at.wall_ms, event["at"]["wall_ms"].as_i64().unwrap());
    assert_eq!(last.at.counter, event["at"]["counter"].as_i64().unwrap());
    assert_eq!(last.note, None);
    assert_eq!(after.balance, before.balance);
    assert_eq!(s.ops.heads(&s.order).unwrap(), strings(&written["heads"]));
    assert!(s.ops.verify().unwrap().mismatches.is_empty());

    // The core carries on from the JS event.
    s.ops
        .record_event(&s.order, "picking", &EventDetails::default())
        .unwrap();
    let kinds: Vec<_> = s
        .ops
        .order(&s.order)
        .unwrap()
        .timeline
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["placed", "confirmed", "picking"]);

    // A device that only ever saw the JS-saved bytes reads the whole order.
    let tablet = Replica::open_in_memory(
        DeviceIdentity::store("tab-1", "S1"),
        ReplicaOptions::default(),
    )
    .unwrap();
    tablet.apply_remote(&s.order, &changes_of(&output)).unwrap();
    let seen = tablet.order(&s.order).unwrap();
    assert_eq!(seen.status, "confirmed");
    assert_eq!(seen.notes, after.notes);
    assert_eq!(seen.balance, before.balance);
}

#[test]
fn javascript_reads_a_delivery_and_records_in_transit_with_a_location() {
    let Some(fixture) = fixture() else { return };
    let s = Scenario::new();
    let before = s.ops.delivery(&s.delivery).unwrap();
    assert_eq!(before.status, "picked_up");
    let input = s.saved(&s.delivery);
    let output = s.path("delivery.from-js.automerge");
    let (code, summary) = read_waybill(
        &fixture,
        &[
            input.to_str().unwrap(),
            output.to_str().unwrap(),
            "--event",
            "in_transit",
            "--lat",
            "35",
            "--lon",
            "51",
            "--actor",
            "courier-app-js",
            "--note",
            "Stuck behind a tram",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["type"], "delivery");
    assert_eq!(summary["id"], s.delivery.as_str());
    assert_eq!(summary["order_id"], s.order.as_str());
    assert_eq!(strings(&summary["event_kinds"]), ["assigned", "picked_up"]);
    assert_eq!(strings(&summary["couriers"]), ["c1"]);
    assert_eq!(summary["proofs"], 1);
    assert_eq!(summary["notes"], "Gate code 4711");
    assert_eq!(summary["written"]["valid"], true, "{summary}");

    s.ops
        .apply_remote(&s.delivery, &changes_of(&output))
        .unwrap();
    let after = s.ops.delivery(&s.delivery).unwrap();
    assert_eq!(after.status, "in_transit");
    assert_eq!(after.courier.as_deref(), Some("c1"));
    assert_eq!(after.notes, "Gate code 4711\nStuck behind a tram");
    let last = after.timeline.last().unwrap();
    assert_eq!(last.kind, "in_transit");
    assert_eq!(last.actor, "courier-app-js");
    // Integral coordinates written by JS as Float64 read back as f64.
    assert_eq!(
        last.location,
        Some(GeoPoint {
            lat: 35.0,
            lon: 51.0,
            accuracy_m: None
        })
    );
    // The core's own next step builds on it.
    s.ops
        .record_event(&s.delivery, "arrived", &EventDetails::default())
        .unwrap();
    assert_eq!(s.ops.delivery(&s.delivery).unwrap().status, "arrived");
}

#[test]
fn documents_written_against_the_schema_are_refused_and_change_nothing() {
    let Some(fixture) = fixture() else { return };
    let s = Scenario::new();
    let input = s.saved(&s.order);
    let heads = s.ops.heads(&s.order).unwrap();

    // Plain JS literals: strings become text, 0 becomes f64. Both sides say no.
    let naive = s.path("order.naive.automerge");
    let (code, summary) = read_waybill(
        &fixture,
        &[input.to_str().unwrap(), naive.to_str().unwrap(), "--naive"],
    );
    assert_eq!(code, 0, "the input itself is fine");
    assert_eq!(summary["written"]["valid"], false, "{summary}");
    let errors = summary["written"]["errors"].to_string();
    assert!(
        errors.contains("is an Automerge text, expected str"),
        "{errors}"
    );
    let err = s
        .ops
        .apply_remote(&s.order, &changes_of(&naive))
        .unwrap_err();
    assert!(
        matches!(err, ReplicaError::Model(ModelError::Malformed { .. })),
        "{err}"
    );
    let (code, _) = read_waybill(&fixture, &[naive.to_str().unwrap()]);
    assert_eq!(code, 1, "the JS checker refuses it too");

    // A newer schema version: refused with a clear error, on both sides.
    let future = s.path("order.v2.automerge");
    read_waybill(
        &fixture,
        &[
            input.to_str().unwrap(),
            future.to_str().unwrap(),
            "--schema-version",
            "2",
        ],
    );
    let err = s
        .ops
        .apply_remote(&s.order, &changes_of(&future))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ReplicaError::Model(ModelError::FutureSchema {
                found: 2,
                supported: 1
            })
        ),
        "{err}"
    );
    let (code, summary) = read_waybill(&fixture, &[future.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(summary["errors"].to_string().contains("newer"), "{summary}");

    assert_eq!(s.ops.heads(&s.order).unwrap(), heads);
    assert_eq!(s.ops.order(&s.order).unwrap().status, "placed");
}
