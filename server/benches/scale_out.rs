//! Scale-out figures: relay ingest throughput (small changes per second from many
//! writers) and cross-node propagation latency (a change written on a device on one
//! node until a device live on another node has it, p50/p99), for one relay node
//! and for three, on PostgreSQL with NATS JetStream between the nodes; one node on
//! SQLite for reference. Devices, relays and QUIC all run in this process on
//! loopback. A plain `fn main` that prints a table (BENCHMARKS.md has figures).
//!
//! ```sh
//! WAYBILL_BENCH_POSTGRES=postgres://postgres@127.0.0.1:5432/test \
//! WAYBILL_BENCH_NATS=nats://127.0.0.1:4222 \
//!   cargo bench -p waybill-server --bench scale_out
//! ```
//! `WAYBILL_TEST_POSTGRES` / `WAYBILL_TEST_NATS` are used when the bench variables
//! are unset. Scale: `WAYBILL_BENCH_WRITERS` (default 12), `WAYBILL_BENCH_CHANGES`
//! (per writer, default 500), `WAYBILL_BENCH_SAMPLES` (latency samples, default 200).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};
use waybill_core::credential::Credential;
use waybill_core::model::NewOrder;
use waybill_core::net::{ConnectionState, SyncClient, SyncOptions, sync_once};
use waybill_core::replica::{ChangeOrigin, DocChange, Replica, ReplicaOptions};
use waybill_core::{DocId, Role};
use waybill_server::enroll::{EnrollRequest, enroll};
use waybill_server::service::{RunningRelay, ServeOptions, start};
use waybill_server::testing::PgSchema;

fn env_or(name: &str, fallback: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .or_else(|| std::env::var(fallback).ok())
        .filter(|v| !v.trim().is_empty())
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Setup {
    name: &'static str,
    nodes: usize,
    postgres: bool,
}

struct Figures {
    changes: u64,
    ingest_secs: f64,
    latency_ms: Vec<f64>,
}

/// An order of writer `writer`'s own store (writers do not see each other's orders,
/// so the ingest figure is the relay's, not the fan-out's).
fn order(writer: usize, n: usize) -> NewOrder {
    serde_json::from_value(serde_json::json!({
        "number": format!("W{writer:02}-{n:06}"), "channel": "web", "store": format!("S{writer}"),
        "customer": {"id": format!("c-{writer}-{n}"), "name": "Dana Roe",
                     "phone": "+98 912 000 0000", "address": "12 Vali-e Asr, Tehran"},
        "currency": "IRR", "fulfilment": "delivery", "note": "leave at the door",
        "lines": [
            {"sku": "TEA-500", "name": "Black tea 500 g", "qty": 2, "unit_price": 1_850_000},
            {"sku": "SAF-1G", "name": "Saffron 1 g", "qty": 1, "unit_price": 2_400_000},
            {"sku": "DAT-1K", "name": "Dates 1 kg", "qty": 1, "unit_price": 950_000}
        ]
    }))
    .unwrap()
}

fn credential(relay: &RunningRelay, device: &str, store: usize) -> Credential {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    enroll(
        &relay.keys,
        &EnrollRequest {
            role: Role::Store,
            courier: None,
            store: Some(format!("S{store}")),
            device_id: Some(device.into()),
            relay_addr: relay.local_addr.to_string(),
            valid_for_ms: 3_600_000,
            now_ms: now,
        },
    )
    .unwrap()
}

fn replica(credential: &Credential) -> Arc<Replica> {
    Arc::new(
        Replica::open_in_memory(credential.body.identity(), ReplicaOptions::default()).unwrap(),
    )
}

async fn nodes(
    setup: &Setup,
    data: &std::path::Path,
    pg: Option<&str>,
    nats: Option<&str>,
) -> Vec<RunningRelay> {
    let mut nodes = Vec::new();
    for _ in 0..setup.nodes {
        let mut options = ServeOptions::new(data, "127.0.0.1:0".parse().unwrap());
        if setup.postgres {
            options.postgres = pg.map(str::to_owned);
            if setup.nodes > 1 {
                options.nats = nats.map(str::to_owned);
            }
        }
        nodes.push(start(options).await.unwrap());
    }
    nodes
}

async fn wait_live(client: &SyncClient) {
    let until = Instant::now() + Duration::from_secs(30);
    while client.status().state != ConnectionState::Live {
        assert!(Instant::now() < until, "a device did not go live");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn measure(setup: &Setup, pg: Option<&str>, nats: Option<&str>) -> Figures {
    let writers = env_usize("WAYBILL_BENCH_WRITERS", 12);
    let per_writer = env_usize("WAYBILL_BENCH_CHANGES", 500);
    let samples = env_usize("WAYBILL_BENCH_SAMPLES", 200);
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(setup, dir.path(), pg, nats).await;

    // Ingest: every writer holds its orders (one change each), then all upload at
    // once, spread over the nodes.
    let mut devices = Vec::new();
    for w in 0..writers {
        let cred = credential(&nodes[w % nodes.len()], &format!("writer-{w}"), w);
        let device = replica(&cred);
        for n in 0..per_writer {
            device.create_order(&order(w, n)).unwrap();
        }
        devices.push((device, cred));
    }
    let started = Instant::now();
    let uploads = devices.iter().map(|(device, cred)| {
        let (device, cred) = (device.clone(), cred.clone());
        tokio::spawn(async move {
            sync_once(
                device,
                &cred,
                &SyncOptions::default(),
                Duration::from_secs(600),
            )
            .await
            .unwrap()
            .uploaded
        })
    });
    let mut changes = 0;
    for upload in uploads.collect::<Vec<_>>() {
        changes += upload.await.unwrap();
    }
    let ingest_secs = started.elapsed().as_secs_f64();

    // Propagation: a writer live on the first node, a reader live on the last.
    let (w_cred, r_cred) = (
        credential(&nodes[0], "latency-writer", 99),
        credential(&nodes[nodes.len() - 1], "latency-reader", 99),
    );
    let (writer, reader) = (replica(&w_cred), replica(&r_cred));
    let order_id: DocId = writer.create_order(&order(99, 0)).unwrap();
    let w_client = SyncClient::start(writer.clone(), w_cred, SyncOptions::default());
    let r_client = SyncClient::start(reader.clone(), r_cred, SyncOptions::default());
    wait_live(&w_client).await;
    wait_live(&r_client).await;
    let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let watched = order_id.clone();
    let _subscription = reader.subscribe(Arc::new(move |changes: &[DocChange]| {
        if changes
            .iter()
            .any(|c| c.doc_id == watched && c.origin == ChangeOrigin::Remote)
        {
            let _ = arrived.send(Instant::now());
        }
    }));
    // The order itself reaches the reader first.
    let until = Instant::now() + Duration::from_secs(30);
    while reader
        .heads(&order_id)
        .map(|h| h.is_empty())
        .unwrap_or(true)
    {
        assert!(Instant::now() < until, "the order did not reach the reader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while arrivals.try_recv().is_ok() {}
    let mut latency_ms = Vec::with_capacity(samples);
    for i in 0..samples {
        let sent = Instant::now();
        writer.add_note(&order_id, &format!("note {i}")).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
            .await
            .ok()
            .flatten()
            .expect("a change did not arrive in 10 s");
        latency_ms.push(got.duration_since(sent).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    w_client.stop().await;
    r_client.stop().await;
    for node in nodes {
        node.shutdown().await;
    }
    Figures {
        changes,
        ingest_secs,
        latency_ms,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let pg = env_or("WAYBILL_BENCH_POSTGRES", "WAYBILL_TEST_POSTGRES");
    let nats = env_or("WAYBILL_BENCH_NATS", "WAYBILL_TEST_NATS");
    let setups = [
        Setup {
            name: "SQLite, 1 node",
            nodes: 1,
            postgres: false,
        },
        Setup {
            name: "PostgreSQL, 1 node",
            nodes: 1,
            postgres: true,
        },
        Setup {
            name: "PostgreSQL + NATS, 3 nodes",
            nodes: 3,
            postgres: true,
        },
    ];
    println!(
        "| setup | writers × changes | ingest (changes/s) | propagation p50 (ms) | p99 (ms) | samples |"
    );
    println!("|---|---|---|---|---|---|");
    for setup in &setups {
        if setup.postgres && pg.is_none() || setup.nodes > 1 && nats.is_none() {
            eprintln!(
                "skipped {}: set WAYBILL_BENCH_POSTGRES and WAYBILL_BENCH_NATS",
                setup.name
            );
            continue;
        }
        let schema = setup
            .postgres
            .then(|| PgSchema::new(pg.as_deref().unwrap()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let figures = runtime.block_on(measure(
            setup,
            schema.as_ref().map(|s| s.url.as_str()),
            nats.as_deref(),
        ));
        drop(runtime);
        drop(schema);
        let mut sorted = figures.latency_ms.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "| {} | {} × {} | {:.0} | {:.1} | {:.1} | {} |",
            setup.name,
            env_usize("WAYBILL_BENCH_WRITERS", 12),
            env_usize("WAYBILL_BENCH_CHANGES", 500),
            figures.changes as f64 / figures.ingest_secs,
            percentile(&sorted, 50.0),
            percentile(&sorted, 99.0),
            sorted.len(),
        );
    }
}
