#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Device-store benchmark: a store file on disk holding N realistic orders.
//!
//! Run with `cargo bench -p waybill-core --bench store`. Environment:
//! - `WAYBILL_BENCH_ORDERS` (default 10000; 500 is the CI smoke size),
//! - `WAYBILL_BENCH_WRITES` (default 2000 writes per latency series),
//! - `WAYBILL_BENCH_DIR` (where the store file goes, and stays; default a temporary
//!   directory removed at the end).
//!
//! Each order has 3 lines, a courier delivery (one of 50 couriers, window spread over
//! 3 days), 4 order events, 1–3 delivery events and one payment. Figures printed:
//! build rate, cold open, index queries, local write latency under `Durability::Full`
//! and `Durability::Normal` (side by side, in alternating blocks) with what sets them
//! (WAL checkpoints, pages per write, history length, load and hydration), the cost
//! of applying remote changes, peak memory and the file size. The table goes to
//! stdout, progress to stderr. See BENCHMARKS.md for a reading of the figures.

use automerge::{Automerge, Change};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use waybill_core::model::document;
use waybill_core::model::{
    Channel, Customer, EventDetails, Fulfilment, GeoPoint, NewDelivery, NewLedgerEntry, NewLine,
    NewOrder, PaymentMethod, Stop, TimeWindow,
};
use waybill_core::replica::{Replica, ReplicaOptions};
use waybill_core::store::query::DeliveryQuery;
use waybill_core::store::{Durability, IndexRows, Store, StoreOptions};
use waybill_core::{DeviceIdentity, DocId};

const COURIERS: usize = 50;
const DAYS: usize = 3;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Alternating Full/Normal blocks per write series.
const WRITE_BLOCKS: usize = 4;
/// Orders whose two documents form the "hot" write set (400 documents, inside the
/// replica's 512-document cache).
const HOT_ORDERS: usize = 200;
/// Deliveries in the cached `apply_remote` set.
const HOT_APPLY: usize = 256;
const REOPENS: usize = 10;
/// Changes the history-length test brings one delivery to.
const HISTORY: usize = 64;

const STORES: [&str; 8] = ["S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8"];
const FIRST: [&str; 20] = [
    "Leila", "Sam", "Ana", "Omid", "Sara", "Reza", "Maryam", "Ali", "Nika", "Dariush", "Elena",
    "Jonas", "Priya", "Kenji", "Fatemeh", "Hamid", "Zahra", "Arash", "Lucia", "Tomas",
];
const LAST: [&str; 25] = [
    "Karimi", "Doe", "Rahimi", "Moradi", "Hosseini", "Ahmadi", "Jafari", "Tehrani", "Novak",
    "Silva", "Larsen", "Okafor", "Sato", "Kovacs", "Rossi", "Bauer", "Nguyen", "Haddad", "Petrov",
    "Mendes", "Alavi", "Sadeghi", "Ghorbani", "Kazemi", "Farahani",
];
const STREETS: [&str; 8] = [
    "Vali-Asr St",
    "Enghelab Sq",
    "Motahari Ave",
    "Shariati St",
    "Azadi St",
    "Keshavarz Blvd",
    "Jordan St",
    "Pasdaran Ave",
];
const PRODUCTS: [&str; 12] = [
    "Black tea 500 g",
    "Basmati rice 5 kg",
    "Saffron 4.6 g",
    "Pistachios 1 kg",
    "Dates 1 kg",
    "Olive oil 1 l",
    "Feta 400 g",
    "Sugar 1 kg",
    "Lentils 900 g",
    "Barberries 200 g",
    "Rosewater 500 ml",
    "Flatbread x6",
];
const CHANNELS: [Channel; 5] = [
    Channel::Web,
    Channel::App,
    Channel::Pos,
    Channel::CallCentre,
    Channel::Social,
];

// ---------------------------------------------------------------------------
// Small helpers: a seeded PRNG, statistics, the report table, /proc readings.

/// splitmix64: deterministic, std only.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    /// Distinct indices in `0..n`, at most `k` of them, in random order.
    fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        for i in (1..all.len()).rev() {
            let j = self.below(i + 1);
            all.swap(i, j);
        }
        all.truncate(k.min(n));
        all
    }
}

struct Stats(Vec<Duration>);

impl Stats {
    fn new(mut samples: Vec<Duration>) -> Self {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_unstable();
        Self(samples)
    }
    /// Nearest-rank percentile.
    fn pct(&self, p: f64) -> Duration {
        let n = self.0.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.0[rank.clamp(1, n) - 1]
    }
    fn median(&self) -> Duration {
        self.pct(50.0)
    }
    fn max(&self) -> Duration {
        self.0[self.0.len() - 1]
    }
    fn total(&self) -> Duration {
        self.0.iter().sum()
    }
    fn per_second(&self) -> f64 {
        self.0.len() as f64 / self.total().as_secs_f64()
    }
    /// The given percentiles in ms, joined by " / ".
    fn ms_at(&self, pcts: &[f64]) -> String {
        let cells: Vec<String> = pcts.iter().map(|p| ms(self.pct(*p))).collect();
        cells.join(" / ")
    }
    /// "p50 / p90 / p99 / max" in ms.
    fn spread_ms(&self) -> String {
        format!("{} / {}", self.ms_at(&[50.0, 90.0, 99.0]), ms(self.max()))
    }
}

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

struct Row {
    name: String,
    figure: String,
    unit: &'static str,
    target: &'static str,
    status: &'static str,
}

#[derive(Default)]
struct Report(Vec<Row>);

impl Report {
    fn add(&mut self, name: impl Into<String>, figure: impl Into<String>, unit: &'static str) {
        self.target(name, figure, unit, "", None);
    }
    fn target(
        &mut self,
        name: impl Into<String>,
        figure: impl Into<String>,
        unit: &'static str,
        target: &'static str,
        met: Option<bool>,
    ) {
        let status = match met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        };
        let row = Row {
            name: name.into(),
            figure: figure.into(),
            unit,
            target,
            status,
        };
        eprintln!("  {}: {} {}", row.name, row.figure, row.unit);
        self.0.push(row);
    }
    fn print(&self) {
        let header = ["figure", "value", "unit", "target", "status"];
        let cells: Vec<[&str; 5]> = self
            .0
            .iter()
            .map(|r| [r.name.as_str(), &r.figure, r.unit, r.target, r.status])
            .collect();
        let mut width = header.map(str::len);
        for row in &cells {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |row: &[&str; 5]| {
            let padded: Vec<String> = row
                .iter()
                .zip(width)
                .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
                .collect();
            println!("| {} |", padded.join(" | "));
        };
        line(&header);
        let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
        println!("|-{}-|", rule.join("-|-"));
        for row in &cells {
            line(row);
        }
    }
}

/// A `/proc/self/status` field in kB.
fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Modification time of the main store file.
fn db_mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Peak resident memory (VmHWM, kB) since the last call, then reset the peak
/// (writing 5 to /proc/self/clear_refs; if the kernel refuses, peaks accumulate).
fn phase_peak_kb() -> u64 {
    let peak = proc_status_kb("VmHWM:");
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    peak
}

/// Bytes of the store file plus its WAL (and shared-memory index) if present.
fn store_bytes(path: &Path) -> (u64, u64) {
    let len = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    (len(path.to_owned()), len(PathBuf::from(wal)))
}

/// fdatasync latency of small appends to a file next to the store.
fn fsync_probe(dir: &Path) -> Stats {
    use std::io::Write;
    let probe = dir.join("fsync-probe.bin");
    let mut file = std::fs::File::create(&probe).unwrap();
    let block = vec![0x5au8; 4096];
    let mut samples = Vec::new();
    for _ in 0..200 {
        file.write_all(&block).unwrap();
        let t = Instant::now();
        file.sync_data().unwrap();
        samples.push(t.elapsed());
    }
    drop(file);
    let _ = std::fs::remove_file(probe);
    Stats::new(samples)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

fn open(path: &Path, durability: Durability) -> Replica {
    let options = ReplicaOptions {
        store: StoreOptions {
            durability,
            ..StoreOptions::default()
        },
        ..ReplicaOptions::default()
    };
    Replica::open(path, DeviceIdentity::dispatcher("ops-bench"), options).unwrap()
}

// ---------------------------------------------------------------------------
// The fixture.

/// What the bench remembers about one order it created.
struct Rec {
    order: DocId,
    delivery: DocId,
    order_state: &'static str,
    delivery_state: &'static str,
}

/// Next valid order event from a known state (cycles forever).
fn next_order_event(state: &str) -> &'static str {
    match state {
        "packed" => "handed_over",
        "handed_over" => "completed",
        "completed" | "returned" => "return_requested",
        "return_requested" => "returned",
        other => panic!("bench does not drive orders from {other}"),
    }
}

/// Next valid delivery event from a known state (cycles forever, never `delivered`).
fn next_delivery_event(state: &str) -> &'static str {
    match state {
        "assigned" => "picked_up",
        "picked_up" | "failed_attempt" => "in_transit",
        "in_transit" => "failed_attempt",
        other => panic!("bench does not drive deliveries from {other}"),
    }
}

fn details(rng: &mut Rng) -> EventDetails {
    EventDetails {
        note: (rng.below(4) == 0).then(|| "customer called, on the way".to_owned()),
        location: Some(GeoPoint {
            lat: 35.6 + rng.below(2000) as f64 / 10_000.0,
            lon: 51.3 + rng.below(2000) as f64 / 10_000.0,
            accuracy_m: Some(8.0 + rng.below(30) as f64),
        }),
        resolution: None,
    }
}

fn customer(n: usize) -> Customer {
    Customer {
        id: format!("cust-{n:05}"),
        name: format!(
            "{} {}",
            FIRST[n % FIRST.len()],
            LAST[(n / FIRST.len()) % LAST.len()]
        ),
        phone: format!("+98 912 {:03} {:04}", n % 1000, (n * 7919) % 10_000),
        address: format!(
            "{} {}, Unit {}, Tehran",
            1 + n % 180,
            STREETS[n % STREETS.len()],
            1 + n % 24
        ),
    }
}

fn new_order(i: usize, rng: &mut Rng) -> NewOrder {
    let store = STORES[i % STORES.len()];
    let lines = (0..3)
        .map(|_| {
            let p = rng.below(PRODUCTS.len());
            NewLine {
                sku: format!("SKU-{p:03}-{:02}", rng.below(20)),
                name: PRODUCTS[p].to_owned(),
                qty: 1 + rng.below(4) as i64,
                unit_price: 100_000 * (1 + rng.below(40) as i64),
            }
        })
        .collect();
    NewOrder {
        number: format!("{store}-{i:06}"),
        channel: *rng.pick(&CHANNELS),
        store: store.to_owned(),
        customer: customer(rng.below(5000)),
        currency: "IRR".to_owned(),
        fulfilment: Fulfilment::Delivery,
        lines,
        note: (rng.below(3) == 0).then(|| "Ring twice; leave with the doorman.".to_owned()),
    }
}

fn courier_name(c: usize) -> String {
    format!("courier-{c:02}")
}

/// Midnight UTC today, in ms.
fn today_ms() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    now - now % DAY_MS
}

fn day_query(courier: usize, day: usize, base: i64) -> DeliveryQuery {
    let from = base + day as i64 * DAY_MS;
    DeliveryQuery {
        courier: Some(courier_name(courier)),
        due_from_ms: Some(from),
        due_before_ms: Some(from + DAY_MS),
        ..DeliveryQuery::default()
    }
}

/// Create one order with its delivery, events and payment; returns the number of
/// write transactions it took.
fn populate_one(r: &Replica, i: usize, base: i64, rng: &mut Rng) -> (Rec, usize) {
    let new = new_order(i, rng);
    let total: i64 = new.lines.iter().map(|l| l.qty * l.unit_price).sum();
    let order = r.create_order(&new).unwrap();
    let mut tx = 1;
    for kind in ["confirmed", "picking", "packed"] {
        r.record_event(&order, kind, &EventDetails::default())
            .unwrap();
        tx += 1;
    }
    let start = base
        + (i % DAYS) as i64 * DAY_MS
        + (8 + rng.below(12) as i64) * HOUR_MS
        + rng.below(4) as i64 * 15 * 60_000;
    let stop = Stop {
        address: new.customer.address.clone(),
        geo: Some(GeoPoint {
            lat: 35.6 + rng.below(2000) as f64 / 10_000.0,
            lon: 51.3 + rng.below(2000) as f64 / 10_000.0,
            accuracy_m: None,
        }),
        contact_name: Some(new.customer.name.clone()),
        contact_phone: Some(new.customer.phone.clone()),
    };
    let delivery = r
        .assign_courier(
            &order,
            &courier_name(rng.below(COURIERS)),
            &NewDelivery {
                stop: Some(stop),
                window: Some(TimeWindow {
                    start_ms: start,
                    end_ms: start + 2 * HOUR_MS,
                }),
            },
        )
        .unwrap();
    tx += 1;
    let payment = if rng.below(2) == 0 {
        NewLedgerEntry {
            reference: Some(format!("PSP-{i:08}")),
            ..NewLedgerEntry::payment(PaymentMethod::Online, total, "IRR")
        }
    } else {
        NewLedgerEntry {
            delivery_id: Some(delivery.to_string()),
            ..NewLedgerEntry::payment(PaymentMethod::Cash, total, "IRR")
        }
    };
    r.record_payment(&order, &payment).unwrap();
    tx += 1;
    let mut delivery_state = "assigned";
    for _ in 0..(i % 3) {
        let kind = next_delivery_event(delivery_state);
        r.record_event(&delivery, kind, &details(rng)).unwrap();
        delivery_state = kind;
        tx += 1;
    }
    let rec = Rec {
        order,
        delivery,
        order_state: "packed",
        delivery_state,
    };
    (rec, tx)
}

/// Record the next valid event on the order (`on_order`) or delivery of `rec`;
/// returns the call's latency.
fn write_one(r: &Replica, rec: &mut Rec, on_order: bool, rng: &mut Rng) -> Duration {
    let (id, kind, d) = if on_order {
        (
            &rec.order,
            next_order_event(rec.order_state),
            EventDetails::default(),
        )
    } else {
        (
            &rec.delivery,
            next_delivery_event(rec.delivery_state),
            details(rng),
        )
    };
    let t = Instant::now();
    r.record_event(id, kind, &d).unwrap();
    let elapsed = t.elapsed();
    if on_order {
        rec.order_state = kind;
    } else {
        rec.delivery_state = kind;
    }
    elapsed
}

// ---------------------------------------------------------------------------

fn main() {
    let n = env_usize("WAYBILL_BENCH_ORDERS", 10_000);
    let writes = env_usize("WAYBILL_BENCH_WRITES", 2_000);
    let _tmp;
    let dir = match std::env::var_os("WAYBILL_BENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            _tmp = tempfile::tempdir().unwrap();
            _tmp.path().to_owned()
        }
    };
    let path = dir.join(format!("waybill-bench-{n}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    let base = today_ms();
    let mut rng = Rng(0x5741_5942_494C_4C21);
    let mut report = Report::default();
    eprintln!(
        "waybill store bench: {n} orders, {writes} writes per series, store at {}",
        path.display()
    );

    // --- Build -----------------------------------------------------------------
    eprintln!("building the store (Durability::Normal)…");
    let mut recs = Vec::with_capacity(n);
    let mut transactions = 0usize;
    let build = {
        let r = open(&path, Durability::Normal);
        let t = Instant::now();
        let step = (n / 10).max(1);
        let mut last_step = (Instant::now(), 0.0f64);
        for i in 0..n {
            let (rec, tx) = populate_one(&r, i, base, &mut rng);
            recs.push(rec);
            transactions += tx;
            if (i + 1) % step == 0 {
                last_step = (
                    Instant::now(),
                    step as f64 / last_step.0.elapsed().as_secs_f64(),
                );
                eprintln!(
                    "  {:>6} orders, {:.0} orders/s so far",
                    i + 1,
                    (i + 1) as f64 / t.elapsed().as_secs_f64()
                );
            }
        }
        (t.elapsed(), last_step.1)
    };
    let (build, last_rate) = build;
    let mut peaks: Vec<(&str, u64)> = Vec::new();
    peaks.push(("build", phase_peak_kb()));
    let (db_build, _) = store_bytes(&path);
    report.add("orders in the store (2 documents each)", n.to_string(), "");
    report.add(
        "build: orders/s (Durability::Normal, one call per mutation)",
        format!("{:.0}", n as f64 / build.as_secs_f64()),
        "orders/s",
    );
    report.add(
        "build: orders/s over the last 10% of the build",
        format!("{last_rate:.0}"),
        "orders/s",
    );
    report.add(
        "build: write transactions/s",
        format!("{:.0}", transactions as f64 / build.as_secs_f64()),
        "tx/s",
    );
    report.add(
        "build: total time",
        format!("{:.1}", build.as_secs_f64()),
        "s",
    );
    report.add("store file after build", mib(db_build), "MiB");

    // --- Cold open -------------------------------------------------------------
    eprintln!("cold open ×{REOPENS}…");
    let mut open_only = Vec::new();
    let mut open_query = Vec::new();
    let mut first_view = Vec::new();
    for k in 0..REOPENS {
        let t = Instant::now();
        let r = open(&path, Durability::Full);
        open_only.push(t.elapsed());
        let rows = r.deliveries(&day_query(k % COURIERS, 0, base)).unwrap();
        open_query.push(t.elapsed());
        assert!(n < 2_000 || !rows.is_empty());
        let rec = &recs[rng.below(n)];
        let t = Instant::now();
        let view = r.order(&rec.order).unwrap();
        first_view.push(t.elapsed());
        assert_eq!(view.status, "packed");
    }
    let open_query = Stats::new(open_query);
    report.target(
        "cold open: Replica::open + first courier query, median",
        ms(open_query.median()),
        "ms",
        "≤ 100 ms",
        Some(open_query.median() <= Duration::from_millis(100)),
    );
    report.add(
        "cold open: same, max of the reopens",
        ms(open_query.max()),
        "ms",
    );
    report.add(
        "cold open: Replica::open alone, median",
        ms(Stats::new(open_only).median()),
        "ms",
    );
    report.add(
        "first order() view after open, median",
        ms(Stats::new(first_view).median()),
        "ms",
    );

    peaks.push(("cold open", phase_peak_kb()));

    // --- Queries ---------------------------------------------------------------
    eprintln!("queries…");
    {
        let r = open(&path, Durability::Full);
        let mut samples = Vec::new();
        let mut rows = 0usize;
        for _round in 0..5 {
            for day in 0..DAYS {
                for c in 0..COURIERS {
                    let q = day_query(c, day, base);
                    let t = Instant::now();
                    let found = r.deliveries(&q).unwrap();
                    samples.push(t.elapsed());
                    rows += found.len();
                }
            }
        }
        let count = samples.len();
        let s = Stats::new(samples);
        report.add(
            "courier's deliveries for one day: median / p99",
            s.ms_at(&[50.0, 99.0]),
            "ms",
        );
        report.add(
            "courier's deliveries for one day: rows returned, mean",
            format!("{:.1}", rows as f64 / count as f64),
            "rows",
        );

        let mut trigram = Vec::new();
        let mut hits = 0usize;
        for k in 0..300 {
            let text = match k % 3 {
                0 => LAST[rng.below(LAST.len())].to_lowercase(),
                1 => FIRST[rng.below(FIRST.len())][..3].to_owned(),
                _ => format!("{:06}", rng.below(n)),
            };
            let t = Instant::now();
            hits += r.search_orders(&text, 20).unwrap().len();
            trigram.push(t.elapsed());
        }
        let s = Stats::new(trigram);
        report.add(
            "search_orders, ≥3 chars (FTS5 trigram), limit 20: median / p99",
            s.ms_at(&[50.0, 99.0]),
            "ms",
        );
        report.add(
            "search_orders, ≥3 chars: hits per query, mean",
            format!("{:.1}", hits as f64 / 300.0),
            "rows",
        );
        let mut short = Vec::new();
        for _ in 0..60 {
            let name = LAST[rng.below(LAST.len())].to_lowercase();
            let t = Instant::now();
            r.search_orders(&name[1..3], 20).unwrap();
            short.push(t.elapsed());
        }
        let s = Stats::new(short);
        report.add(
            "search_orders, 2 chars (LIKE scan), limit 20: median / p99",
            s.ms_at(&[50.0, 99.0]),
            "ms",
        );
    }

    peaks.push(("queries", phase_peak_kb()));

    // --- Local write latency ---------------------------------------------------
    eprintln!("write latency, Full and Normal in alternating blocks…");
    let hot: Vec<usize> = rng.sample(n, HOT_ORDERS);
    let modes = [Durability::Full, Durability::Normal];
    let mut random_lat: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    // Random writes during which SQLite checkpointed the WAL into the main file (in
    // WAL mode the main file is only written by checkpoints, so its mtime tells).
    let mut checkpointed: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut plain: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    // Random writes split by document kind: [mode][0 = order, 1 = delivery].
    let mut by_kind: [[Vec<Duration>; 2]; 2] = Default::default();
    let mut hot_lat: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let per_block = writes.div_ceil(WRITE_BLOCKS);
    // Fewer writes on the cached set, so its documents do not grow much longer than
    // the random ones (write cost grows with a document's history).
    let hot_per_block = (writes / 4).div_ceil(WRITE_BLOCKS);
    for _block in 0..WRITE_BLOCKS {
        for (m, mode) in modes.iter().enumerate() {
            let r = open(&path, *mode);
            for _ in 0..per_block {
                let i = rng.below(n);
                let on_order = rng.below(2) == 0;
                let before = db_mtime(&path);
                let latency = write_one(&r, &mut recs[i], on_order, &mut rng);
                random_lat[m].push(latency);
                by_kind[m][usize::from(!on_order)].push(latency);
                if db_mtime(&path) == before {
                    plain[m].push(latency);
                } else {
                    checkpointed[m].push(latency);
                }
            }
            for &i in &hot {
                r.order(&recs[i].order).unwrap();
                r.delivery(&recs[i].delivery).unwrap();
            }
            for _ in 0..hot_per_block {
                let i = hot[rng.below(hot.len())];
                let on_order = rng.below(2) == 0;
                hot_lat[m].push(write_one(&r, &mut recs[i], on_order, &mut rng));
            }
        }
    }
    let counts = random_lat.each_ref().map(Vec::len);
    let [random_full, random_normal] = random_lat.map(Stats::new);
    let [hot_full, hot_normal] = hot_lat.map(Stats::new);
    let p99_ok = |s: &Stats| Some(s.pct(99.0) <= Duration::from_millis(2));
    for (label, s) in [
        ("Full, random document", &random_full),
        ("Normal, random document", &random_normal),
        ("Full, cached document", &hot_full),
        ("Normal, cached document", &hot_normal),
    ] {
        report.target(
            format!("record_event, {label}: p50 / p90 / p99 / max"),
            s.spread_ms(),
            "ms",
            "p99 ≤ 2 ms",
            p99_ok(s),
        );
    }
    for (m, mode) in ["Full", "Normal"].iter().enumerate() {
        let share = 100.0 * checkpointed[m].len() as f64 / counts[m] as f64;
        let during = if checkpointed[m].is_empty() {
            "-".to_owned()
        } else {
            ms(Stats::new(checkpointed[m].clone()).median())
        };
        report.add(
            format!("{mode}, random: writes that ran a WAL checkpoint: share / their median"),
            format!("{share:.1}% / {during}"),
            "ms",
        );
        let rest = Stats::new(plain[m].clone());
        report.add(
            format!("{mode}, random: writes without a checkpoint: p50 / p99"),
            rest.ms_at(&[50.0, 99.0]),
            "ms",
        );
    }
    for (m, mode) in ["Full", "Normal"].iter().enumerate() {
        for (k, kind) in ["order", "delivery"].iter().enumerate() {
            let s = Stats::new(by_kind[m][k].clone());
            report.add(
                format!("{mode}, random, {kind} events only: p50 / p90 / p99"),
                s.ms_at(&[50.0, 90.0, 99.0]),
                "ms",
            );
        }
    }
    let fsync_cost = random_full.median().saturating_sub(random_normal.median());
    report.add(
        "Full minus Normal, random document, median",
        ms(fsync_cost),
        "ms",
    );
    let fsync = fsync_probe(&dir);
    report.add(
        "raw fdatasync of a 4 KiB append in the store's directory: p50 / p99",
        fsync.ms_at(&[50.0, 99.0]),
        "ms",
    );

    // WAL pages one write appends, which sets how often a write has to run SQLite's
    // 1000-page auto-checkpoint. After a complete checkpoint the next write starts the
    // WAL afresh, so a passive checkpoint after each write reports that write's pages.
    {
        let r = open(&path, Durability::Normal);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let checkpoint = || -> (i64, i64) {
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                Ok((row.get(1)?, row.get(2)?))
            })
            .unwrap()
        };
        checkpoint();
        let mut pages = [0i64; 2];
        for k in 0..200 {
            let on_order = k % 2 == 0;
            write_one(&r, &mut recs[rng.below(n)], on_order, &mut rng);
            let (log, done) = checkpoint();
            assert_eq!(log, done, "checkpoint did not complete");
            pages[usize::from(!on_order)] += log;
        }
        report.add(
            "WAL pages appended per write, order / delivery event, mean",
            format!(
                "{:.1} / {:.1}",
                pages[0] as f64 / 100.0,
                pages[1] as f64 / 100.0
            ),
            "pages",
        );
    }

    peaks.push(("local writes", phase_peak_kb()));

    // --- Write cost against a document's history length --------------------------
    eprintln!("write latency against history length…");
    {
        let compact_after = StoreOptions::default().compact_after as usize;
        let r = open(&path, Durability::Normal);
        let (mut rec, _) = populate_one(&r, n, base, &mut rng);
        // The delivery starts with 1 + n % 3 changes (assignment, then events) and gets
        // one change per write. The store rewrites its snapshot whenever the changes
        // since the last one reach `compact_after`; those writes are reported apart.
        let initial = 1 + n % 3;
        let history = HISTORY.max(compact_after);
        let mut plain = Vec::new();
        // (changes after the write, its latency, the latency of the write before it)
        let mut compacting = Vec::new();
        let mut previous = Duration::ZERO;
        for changes in initial + 1..=history {
            let latency = write_one(&r, &mut rec, false, &mut rng);
            if changes % compact_after == 0 {
                compacting.push((changes, latency, previous));
            } else {
                plain.push((changes, latency));
            }
            previous = latency;
        }
        for window in [&plain[..10], &plain[plain.len() - 10..]] {
            report.add(
                format!(
                    "record_event on one delivery, Normal, events {}–{}: median",
                    window[0].0, window[9].0
                ),
                ms(Stats::new(window.iter().map(|w| w.1).collect()).median()),
                "ms",
            );
        }
        let list = |cell: fn(&(usize, Duration, Duration)) -> String| {
            let cells: Vec<String> = compacting.iter().map(cell).collect();
            cells.join(" / ")
        };
        report.add(
            format!(
                "record_event that compacts (changes {}); in brackets the write before",
                list(|c| c.0.to_string())
            ),
            format!("{} ({})", list(|c| ms(c.1)), list(|c| ms(c.2))),
            "ms",
        );
        drop(r);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let (snapshot, pending): (Option<Vec<u8>>, i64) = conn
            .query_row(
                "SELECT snapshot, change_count FROM documents WHERE doc_id = ?1",
                [rec.delivery.as_str()],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert!(snapshot.is_some(), "compaction did not happen");
        assert_eq!(pending as usize, history % compact_after);
    }

    peaks.push(("history-length writes", phase_peak_kb()));

    // --- Where a write's time goes: loading a stored document ------------------
    eprintln!("load breakdown…");
    {
        let store = Store::open(
            &path,
            StoreOptions {
                durability: Durability::Normal,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let mut store_load = Vec::new();
        let mut am_load = Vec::new();
        let mut hydrate = Vec::new();
        let mut save = Vec::new();
        let mut saved_len = 0usize;
        for k in 0..500 {
            let rec = &recs[rng.below(n)];
            let id = if k % 2 == 0 {
                &rec.order
            } else {
                &rec.delivery
            };
            let t = Instant::now();
            let doc = store.load(id).unwrap().unwrap();
            store_load.push(t.elapsed());
            let t = Instant::now();
            let typed = document::read(id, &doc).unwrap();
            let _rows = IndexRows::of(&typed);
            hydrate.push(t.elapsed());
            let t = Instant::now();
            let bytes = doc.save();
            save.push(t.elapsed());
            saved_len += bytes.len();
            let t = Instant::now();
            let again = Automerge::load(&bytes).unwrap();
            am_load.push(t.elapsed());
            assert_eq!(again.get_heads(), doc.get_heads());
        }
        report.add(
            "Store::load of an uncached document (SQLite + change replay), median",
            us(Stats::new(store_load).median()),
            "µs",
        );
        report.add(
            "Automerge::load of the same document saved, median",
            us(Stats::new(am_load).median()),
            "µs",
        );
        report.add(
            "hydrate + fold + index rows of a document, median",
            us(Stats::new(hydrate).median()),
            "µs",
        );
        report.add(
            "Automerge save() of a document (compaction), median",
            us(Stats::new(save).median()),
            "µs",
        );
        report.add(
            "saved document size, mean",
            format!("{:.0}", saved_len as f64 / 500.0),
            "bytes",
        );
        drop(store);

        // An order's search row shares the rowid of its `order_index` row, and a write
        // rewrites it (delete by rowid, insert) only when the number or customer name
        // changed (store/index.rs). Check that every order has its search row under that
        // rowid, that the delete is a rowid lookup rather than a table scan, and time it
        // alone, inside a transaction that is rolled back.
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        let orders = count("SELECT count(*) FROM order_index");
        let matched = count(
            "SELECT count(*) FROM order_index o JOIN order_search s ON s.rowid = o.rowid
             WHERE s.number = o.number AND s.customer_name = o.customer_name",
        );
        assert_eq!(orders, (n + 1) as i64);
        assert_eq!(
            matched, orders,
            "order_search rows out of step with order_index"
        );
        assert_eq!(count("SELECT count(*) FROM order_search"), orders);
        let delete = "DELETE FROM order_search WHERE rowid = ?1";
        let plan: String = conn
            .query_row(&format!("EXPLAIN QUERY PLAN {delete}"), [0], |r| r.get(3))
            .unwrap();
        eprintln!("  query plan of `{delete}`: {plan}");
        // FTS5 names its plan in the index string: `0:=` is a rowid lookup, a bare
        // `0:` is a scan of the whole table.
        assert!(
            plan.ends_with(":="),
            "search row delete is not a rowid lookup: {plan}"
        );
        let mut samples = Vec::new();
        for _ in 0..50 {
            let tx = conn.transaction().unwrap();
            let rowid: i64 = tx
                .query_row(
                    "SELECT rowid FROM order_index WHERE doc_id = ?1",
                    [recs[rng.below(n)].order.as_str()],
                    |r| r.get(0),
                )
                .unwrap();
            let t = Instant::now();
            assert_eq!(tx.execute(delete, [rowid]).unwrap(), 1);
            samples.push(t.elapsed());
            tx.rollback().unwrap();
        }
        report.add(
            "order_search row delete by rowid (only on number or name change), median",
            ms(Stats::new(samples).median()),
            "ms",
        );
    }

    peaks.push(("load breakdown", phase_peak_kb()));

    // --- Applying remote changes -----------------------------------------------
    eprintln!("apply_remote: preparing changes on a second replica…");
    let set: Vec<usize> = rng.sample(n, writes.min(n));
    let hot_set: Vec<usize> = set[..HOT_APPLY.min(set.len())].to_vec();
    let source = Replica::open_in_memory(
        DeviceIdentity::dispatcher("ops-remote"),
        ReplicaOptions::default(),
    )
    .unwrap();
    {
        let target = open(&path, Durability::Normal);
        for &i in &set {
            let id = &recs[i].delivery;
            let doc = Automerge::load(&target.export(id).unwrap()).unwrap();
            let changes: Vec<Vec<u8>> = doc
                .get_changes(&[])
                .into_iter()
                .map(|c| c.raw_bytes().to_vec())
                .collect();
            source.apply_remote(id, &changes).unwrap();
        }
    }
    // One round = one new event on each delivery of `which`, as change bytes.
    let round = |which: &[usize], recs: &mut [Rec], rng: &mut Rng| -> Vec<Vec<u8>> {
        for &i in which {
            let kind = next_delivery_event(recs[i].delivery_state);
            source
                .record_event(&recs[i].delivery, kind, &details(rng))
                .unwrap();
            recs[i].delivery_state = kind;
        }
        let entries = source.outbox(which.len() + 1).unwrap();
        assert_eq!(entries.len(), which.len());
        for (e, &i) in entries.iter().zip(which) {
            assert_eq!(e.doc_id, recs[i].delivery.as_str());
        }
        let hashes: Vec<Vec<u8>> = entries.iter().map(|e| e.hash.clone()).collect();
        source.ack(&hashes).unwrap();
        entries.into_iter().map(|e| e.bytes).collect()
    };
    let first = round(&set, &mut recs, &mut rng);
    let second = round(&set, &mut recs, &mut rng);
    let hot_rounds: Vec<Vec<Vec<u8>>> = (0..4)
        .map(|_| round(&hot_set, &mut recs, &mut rng))
        .collect();
    let change_len = first.iter().map(Vec::len).sum::<usize>() as f64 / first.len() as f64;

    eprintln!("apply_remote: uncached documents, Normal then Full…");
    let apply_series = |durability: Durability, changes: &[Vec<u8>], recs: &[Rec]| -> Stats {
        let r = open(&path, durability);
        let mut samples = Vec::with_capacity(changes.len());
        for (bytes, &i) in changes.iter().zip(&set) {
            let t = Instant::now();
            let outcome = r
                .apply_remote(&recs[i].delivery, std::slice::from_ref(bytes))
                .unwrap();
            samples.push(t.elapsed());
            assert_eq!(outcome.new_changes, 1);
            assert!(!outcome.waiting_for_dependencies);
        }
        Stats::new(samples)
    };
    let apply_normal = apply_series(Durability::Normal, &first, &recs);
    let apply_full = apply_series(Durability::Full, &second, &recs);

    eprintln!("apply_remote: raw Automerge and cached documents…");
    let target = open(&path, Durability::Normal);
    let mut raw_apply = Vec::new();
    let mut raw_decode_apply = Vec::new();
    for (k, &i) in hot_set.iter().enumerate() {
        let mut doc = Automerge::load(&target.export(&recs[i].delivery).unwrap()).unwrap();
        for hot_round in &hot_rounds {
            let bytes = hot_round[k].clone();
            let t = Instant::now();
            let change = Change::from_bytes(bytes).unwrap();
            let decoded = t.elapsed();
            let t = Instant::now();
            doc.apply_changes([change]).unwrap();
            let applied = t.elapsed();
            raw_apply.push(applied);
            raw_decode_apply.push(decoded + applied);
        }
    }
    for &i in &hot_set {
        target.heads(&recs[i].delivery).unwrap();
    }
    let mut cached = Vec::new();
    for hot_round in &hot_rounds {
        for (bytes, &i) in hot_round.iter().zip(&hot_set) {
            let t = Instant::now();
            let outcome = target
                .apply_remote(&recs[i].delivery, std::slice::from_ref(bytes))
                .unwrap();
            cached.push(t.elapsed());
            assert_eq!(outcome.new_changes, 1);
        }
    }
    let verify = target.verify().unwrap();
    assert!(verify.mismatches.is_empty(), "{:?}", verify.mismatches);
    drop(target);
    let apply_cached = Stats::new(cached);
    let raw_apply = Stats::new(raw_apply);
    let raw_decode_apply = Stats::new(raw_decode_apply);
    report.add(
        "remote change size (one delivery event), mean",
        format!("{change_len:.0}"),
        "bytes",
    );
    for (label, s) in [
        ("uncached document, Normal", &apply_normal),
        ("uncached document, Full", &apply_full),
        ("cached document, Normal", &apply_cached),
    ] {
        report.add(
            format!("apply_remote, 1 change per call, {label}: rate"),
            format!("{:.0}", s.per_second()),
            "changes/s",
        );
        report.add(
            format!("apply_remote, {label}: p50 / p90 / p99 / max"),
            s.spread_ms(),
            "ms",
        );
    }
    report.add(
        "raw Automerge: decode + apply_changes of 1 change to a loaded doc: rate",
        format!("{:.0}", raw_decode_apply.per_second()),
        "changes/s",
    );
    report.add(
        "raw Automerge: apply_changes only, median",
        us(raw_apply.median()),
        "µs",
    );

    // --- Memory and size ---------------------------------------------------------
    drop(source);
    let (db_end, wal_end) = store_bytes(&path);
    peaks.push(("apply_remote", phase_peak_kb()));
    for (phase, kb) in &peaks {
        eprintln!("  peak memory during {phase}: {} MiB", mib(kb * 1024));
    }
    let device = peaks
        .iter()
        .filter(|(phase, _)| *phase != "apply_remote")
        .map(|(_, kb)| *kb)
        .max()
        .unwrap_or(0);
    report.add(
        "peak memory (VmHWM), device phases (build … load breakdown)",
        mib(device * 1024),
        "MiB",
    );
    for (phase, kb) in &peaks {
        if matches!(*phase, "build" | "local writes") {
            report.add(
                format!("peak memory (VmHWM) during {phase}"),
                mib(kb * 1024),
                "MiB",
            );
        }
    }
    report.add(
        "peak memory (VmHWM) during apply_remote (+ second replica, exports)",
        mib(peaks.last().map_or(0, |(_, kb)| *kb) * 1024),
        "MiB",
    );
    report.add(
        "store file at the end (+ WAL)",
        format!("{} (+ {})", mib(db_end), mib(wal_end)),
        "MiB",
    );
    {
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let sum = |sql: &str| -> (i64, i64) {
            conn.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
        };
        let (changes, change_bytes) =
            sum("SELECT count(*), ifnull(sum(length(bytes)), 0) FROM changes");
        let (outbox, outbox_bytes) =
            sum("SELECT count(*), ifnull(sum(length(bytes)), 0) FROM outbox");
        let (snapshots, snapshot_bytes) =
            sum("SELECT count(snapshot), ifnull(sum(length(snapshot)), 0) FROM documents");
        report.add(
            "  of which change rows (count, payload)",
            format!("{changes}, {}", mib(change_bytes as u64)),
            "MiB",
        );
        report.add(
            "  of which unacknowledged outbox rows (count, payload)",
            format!("{outbox}, {}", mib(outbox_bytes as u64)),
            "MiB",
        );
        report.add(
            "  of which snapshots (count, payload)",
            format!("{snapshots}, {}", mib(snapshot_bytes as u64)),
            "MiB",
        );
    }

    println!();
    println!(
        "Waybill device store, {n} orders ({} documents), {writes} writes per latency series, SQLite {}",
        2 * n,
        rusqlite::version()
    );
    report.print();
}
