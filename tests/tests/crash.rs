//! A child process killed (SIGKILL) in the middle of a stream of writes leaves a store
//! that reopens consistent: every index row matches its document, every acknowledged
//! write is present, and the outbox still holds every local change.
//!
//! The test runs its own binary again as the child (`crash_child`, which does nothing
//! unless `WAYBILL_CRASH_CHILD` names a store file). The child writes forever and prints
//! one `ACK …` line after each call that returned `Ok`; the parent reads a random number
//! of them, kills the child, reopens the file and checks it, several rounds on the same
//! file. `WAYBILL_CRASH_SEED` replays a run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use automerge::{Automerge, Change, ReadDoc};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use waybill_core::model::{
    Channel, Customer, EventDetails, Fulfilment, NewDelivery, NewLedgerEntry, NewLine, NewOrder,
    PaymentMethod,
};
use waybill_core::replica::ReplicaOptions;
use waybill_core::store::query::OrderQuery;
use waybill_core::store::{Store, StoreOptions};
use waybill_core::{DeviceIdentity, DocId, DocKind, Replica};

const CHILD_ENV: &str = "WAYBILL_CRASH_CHILD";
const SEED_ENV: &str = "WAYBILL_CRASH_SEED";
const ROUNDS: u64 = 5;
const DEVICE: &str = "crash-ops";

/// SplitMix64: small, seedable, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T>(&mut self, items: &[T]) -> usize {
        usize::try_from(self.below(items.len() as u64)).unwrap()
    }
}

fn seed_from_env(default: u64) -> u64 {
    std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn new_order(number: String) -> NewOrder {
    NewOrder {
        number,
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

/// The order events the child walks each order through, before assigning a courier.
const STEPS: [&str; 3] = ["confirmed", "picking", "packed"];

/// How far an order has come: an index into `STEPS`, `STEPS.len()` when packed (next:
/// assign a courier), one more once a courier is assigned.
fn stage_of(replica: &Replica, id: &DocId) -> usize {
    let view = replica.order(id).unwrap();
    if !view.deliveries.is_empty() {
        return STEPS.len() + 1;
    }
    match view.status.as_str() {
        "placed" => 0,
        "confirmed" => 1,
        "picking" => 2,
        "packed" => 3,
        other => panic!("the child never leaves an order {other}"),
    }
}

/// The child: write forever, acknowledging each write once it returned `Ok`.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut rng = Rng(seed_from_env(1));
    let replica = Replica::open(
        &path,
        DeviceIdentity::dispatcher(DEVICE),
        ReplicaOptions::default(),
    )
    .unwrap();
    // Continue the stream where the previous (killed) child left it.
    let mut orders: Vec<(DocId, usize)> = replica
        .doc_ids()
        .unwrap()
        .into_iter()
        .filter(|id| id.kind() == DocKind::Order)
        .map(|id| {
            let stage = stage_of(&replica, &id);
            (id, stage)
        })
        .collect();
    let mut out = std::io::stdout().lock();
    let mut created = orders.len();
    loop {
        let roll = rng.below(100);
        let open: Vec<usize> = (0..orders.len())
            .filter(|&i| orders[i].1 <= STEPS.len())
            .collect();
        if orders.is_empty() || roll < 25 || (roll < 70 && open.is_empty()) {
            created += 1;
            let id = replica
                .create_order(&new_order(format!("S1-{created:06}")))
                .unwrap();
            writeln!(out, "ACK order {id}").unwrap();
            orders.push((id, 0));
        } else if roll < 70 {
            let (id, stage) = &mut orders[open[rng.pick(&open)]];
            if let Some(kind) = STEPS.get(*stage) {
                let event = replica
                    .record_event(id, kind, &EventDetails::default())
                    .unwrap();
                writeln!(out, "ACK event {id} {event} {kind}").unwrap();
            } else {
                let courier = format!("c{}", rng.below(5));
                let dlv = replica
                    .assign_courier(id, &courier, &NewDelivery::default())
                    .unwrap();
                writeln!(out, "ACK assign {id} {dlv} {courier}").unwrap();
            }
            *stage += 1;
        } else if roll < 80 {
            // Reassign an assigned delivery (a second change to the delivery document).
            let assigned: Vec<usize> = (0..orders.len())
                .filter(|&i| orders[i].1 > STEPS.len())
                .collect();
            if assigned.is_empty() {
                continue;
            }
            let id = &orders[assigned[rng.pick(&assigned)]].0;
            let courier = format!("c{}", rng.below(5));
            let dlv = replica
                .assign_courier(id, &courier, &NewDelivery::default())
                .unwrap();
            writeln!(out, "ACK assign {id} {dlv} {courier}").unwrap();
        } else {
            // Half the payments go to the three oldest orders, so some documents grow
            // past the compaction threshold and the kill can land on a compaction.
            let hot = &orders[..orders.len().min(3)];
            let id = if rng.below(2) == 0 {
                &hot[rng.pick(hot)].0
            } else {
                &orders[rng.pick(&orders)].0
            };
            let amount = 1 + i64::try_from(rng.below(50_000)).unwrap();
            let entry = replica
                .record_payment(
                    id,
                    &NewLedgerEntry::payment(PaymentMethod::Cash, amount, "IRR"),
                )
                .unwrap();
            writeln!(out, "ACK payment {id} {entry} {amount}").unwrap();
        }
        out.flush().unwrap();
    }
}

/// What the parent has seen acknowledged for one order.
#[derive(Default, Debug)]
struct OrderAcks {
    created: bool,
    /// (event id, kind), in acknowledgement order.
    events: Vec<(String, String)>,
    /// (entry id, amount).
    payments: Vec<(String, i64)>,
    /// (delivery id, courier).
    assignments: Vec<(String, String)>,
}

#[derive(Default, Debug)]
struct Acked {
    writes: usize,
    orders: BTreeMap<String, OrderAcks>,
}

impl Acked {
    fn record(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let order = self.orders.entry(words[1].to_owned()).or_default();
        match words[..] {
            ["order", _] => order.created = true,
            ["event", _, event, kind] => order.events.push((event.into(), kind.into())),
            ["payment", _, entry, amount] => {
                order.payments.push((entry.into(), amount.parse().unwrap()));
            }
            ["assign", _, dlv, courier] => order.assignments.push((dlv.into(), courier.into())),
            _ => panic!("unexpected acknowledgement `{line}`"),
        }
        self.writes += 1;
    }

    /// Documents with at least one acknowledged write.
    fn docs(&self) -> BTreeSet<String> {
        let mut docs = BTreeSet::new();
        for (order, acks) in &self.orders {
            docs.insert(order.clone());
            docs.extend(acks.assignments.iter().map(|(dlv, _)| dlv.clone()));
        }
        docs
    }
}

/// Run a child on `path` until it has acknowledged at least `target` writes, let it
/// run on for `linger`, then kill it. Every complete line it printed counts, including
/// those read after the kill.
fn run_child(
    path: &Path,
    round: u64,
    seed: u64,
    target: usize,
    linger: Duration,
    acked: &mut Acked,
) {
    let stderr_path = path.with_extension(format!("child-{round}.stderr"));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, path)
        .env(SEED_ENV, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdout.read_until(b'\n', &mut line) {
                // A line cut short by the kill was never acknowledged.
                Ok(0) | Err(_) => break,
                Ok(_) if line.ends_with(b"\n") => {
                    let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                    if tx.send(text).is_err() {
                        break;
                    }
                }
                Ok(_) => break,
            }
        }
    });

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = 0;
    while seen < target {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if let Some(ack) = line.strip_prefix("ACK ") {
                    acked.record(ack);
                    seen += 1;
                }
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "round {round}: the child stopped after {seen} of {target} writes ({e:?}); its stderr:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
        }
    }
    // Let it run on a little (what it prints meanwhile still counts) so the kill
    // lands at varied points of a write.
    std::thread::sleep(linger);
    child.kill().unwrap();
    let status = child.wait().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "round {round}: {status:?}");
    }
    #[cfg(not(unix))]
    assert!(!status.success());
    reader.join().unwrap();
    for line in rx.try_iter() {
        if let Some(ack) = line.strip_prefix("ACK ") {
            acked.record(ack);
        }
    }
}

fn open(path: &Path) -> Replica {
    Replica::open(
        path,
        DeviceIdentity::dispatcher(DEVICE),
        ReplicaOptions::default(),
    )
    .unwrap()
}

/// Check one open replica against everything acknowledged; returns each document's heads.
fn check(replica: &Replica, acked: &Acked, round: u64) -> BTreeMap<String, Vec<String>> {
    let report = replica.verify().unwrap();
    assert!(
        report.mismatches.is_empty(),
        "round {round}: index rows disagree with documents:\n{:#?}",
        report.mismatches
    );

    let rows: BTreeMap<String, String> = replica
        .orders(&OrderQuery {
            limit: Some(1_000_000),
            ..OrderQuery::default()
        })
        .unwrap()
        .into_iter()
        .map(|row| (row.doc_id, row.status))
        .collect();

    for (order, acks) in &acked.orders {
        let id = DocId::parse(order).unwrap();
        let view = replica
            .order(&id)
            .unwrap_or_else(|e| panic!("round {round}: acknowledged order {order}: {e}"));
        assert_eq!(view.timeline[0].kind, "placed", "round {round}: {order}");
        assert_eq!(
            rows.get(order),
            Some(&view.status),
            "round {round}: the order list disagrees with {order}"
        );
        // Acknowledged events are all there, in the order they were acknowledged.
        let positions: Vec<usize> = acks
            .events
            .iter()
            .map(|(event, kind)| {
                let pos = view
                    .timeline
                    .iter()
                    .position(|e| e.id == *event)
                    .unwrap_or_else(|| {
                        panic!("round {round}: acknowledged event {event} ({kind}) of {order} lost")
                    });
                assert_eq!(view.timeline[pos].kind, *kind, "round {round}: {event}");
                pos
            })
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "round {round}: {order}: events out of order: {positions:?}"
        );
        for (entry, amount) in &acks.payments {
            assert!(
                view.payments
                    .iter()
                    .any(|p| p.id == *entry && p.amount == *amount),
                "round {round}: acknowledged payment {entry} of {order} lost"
            );
        }
        for (dlv, courier) in &acks.assignments {
            assert!(
                view.deliveries.contains(dlv),
                "round {round}: {order} lost its delivery {dlv}"
            );
            let delivery = replica
                .delivery(&DocId::parse(dlv).unwrap())
                .unwrap_or_else(|e| panic!("round {round}: acknowledged delivery {dlv}: {e}"));
            assert_eq!(delivery.order_id, *order);
            assert!(
                delivery
                    .timeline
                    .iter()
                    .any(|e| e.kind == "assigned" && e.courier.as_deref() == Some(courier)),
                "round {round}: assignment of {dlv} to {courier} lost"
            );
        }
    }

    // The outbox: never acknowledged here, so it holds every local change ever made.
    let outbox = replica.outbox(usize::MAX).unwrap();
    assert_eq!(outbox.len() as u64, replica.pending_uploads().unwrap());
    assert!(
        outbox.len() >= acked.writes,
        "round {round}: {} outbox entries for {} acknowledged writes",
        outbox.len(),
        acked.writes
    );
    assert!(outbox.windows(2).all(|w| w[0].seq < w[1].seq));
    let mut by_doc: BTreeMap<String, Vec<Change>> = BTreeMap::new();
    for entry in outbox {
        let change = Change::from_bytes(entry.bytes).unwrap();
        assert_eq!(change.hash().0[..], entry.hash[..]);
        by_doc.entry(entry.doc_id).or_default().push(change);
    }
    for doc in acked.docs() {
        assert!(
            by_doc.contains_key(&doc),
            "round {round}: no outbox entry for {doc}"
        );
    }
    // Every document was written on this device only, so its outbox changes are its
    // whole history: replaying them rebuilds exactly the stored document.
    let ids: Vec<DocId> = replica.doc_ids().unwrap();
    assert_eq!(
        ids.iter().map(ToString::to_string).collect::<BTreeSet<_>>(),
        by_doc.keys().cloned().collect::<BTreeSet<_>>(),
        "round {round}: documents and outbox name different documents"
    );
    let mut all_heads = BTreeMap::new();
    for id in ids {
        let mut rebuilt = Automerge::new();
        rebuilt
            .apply_changes(by_doc.remove(id.as_str()).unwrap())
            .unwrap();
        assert!(rebuilt.get_missing_deps(&[]).is_empty(), "round {round}");
        let mut from_outbox: Vec<String> = rebuilt
            .get_heads()
            .iter()
            .map(ToString::to_string)
            .collect();
        from_outbox.sort();
        let mut heads = replica.heads(&id).unwrap();
        heads.sort();
        assert_eq!(
            from_outbox, heads,
            "round {round}: the outbox does not rebuild {id}"
        );
        all_heads.insert(id.to_string(), heads);
    }
    all_heads
}

#[test]
fn a_store_killed_mid_write_reopens_consistent() {
    let seed = seed_from_env(0x5EED_CAFE);
    eprintln!("crash test seed {seed} (set {SEED_ENV} to replay)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let mut acked = Acked::default();
    let started = Instant::now();
    for round in 0..ROUNDS {
        let target = 50 + usize::try_from(rng.below(351)).unwrap();
        let before = acked.writes;
        let linger = Duration::from_micros(rng.below(3_000));
        run_child(&path, round, rng.next(), target, linger, &mut acked);
        eprintln!(
            "round {round}: killed after {} acknowledged writes ({} in all, {:?})",
            acked.writes - before,
            acked.writes,
            started.elapsed()
        );
        // Reopen, check, close; reopen and check again: nothing moves.
        let first = check(&open(&path), &acked, round);
        let second = check(&open(&path), &acked, round);
        assert_eq!(
            first, second,
            "round {round}: a second reopen changed the store"
        );
        assert!(acked.orders.values().any(|o| o.created));
    }
    // The stream was long enough for kills to land among compactions too.
    let store = Store::open(&path, StoreOptions::default()).unwrap();
    let compacted: i64 = store
        .conn()
        .query_row(
            "SELECT count(*) FROM documents WHERE snapshot IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(compacted > 0, "no document was ever compacted");
}
