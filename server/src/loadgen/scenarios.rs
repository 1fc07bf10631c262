//! The scenarios. Each starts its own relay (a fresh data directory), so one does
//! not inherit another's log, cache or connections.

use super::LoadError;
use super::device::{Arrival, Fleet, LightDevice};
use super::docs::{self, RECONNECT_EVENT};
use super::metrics::{self, Figure, ms, percentile};
use super::relay::{RelayUnderTest, fresh_dir};
use super::sync_device::DeviceRunReport;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use waybill_core::Role;
use waybill_core::credential::Credential;
use waybill_core::ids::DocId;
use waybill_core::net::{SyncOptions, SyncReport, sync_once};
use waybill_core::replica::{Replica, ReplicaOptions};

/// Stores the seeded orders are spread over.
const STORES: [&str; 10] = [
    "S01", "S02", "S03", "S04", "S05", "S06", "S07", "S08", "S09", "S10",
];
/// Light devices connecting at the same time.
const CONNECT_CONCURRENCY: usize = 128;
/// Attempts after the first for a light device whose handshake fails.
const CONNECT_RETRIES: u32 = 3;
/// Bound on waiting for pushes in one fan-out round.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);

/// A scenario of `waybill bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Initial sync of `docs` orders to a fresh device, then reconnect after
    /// offline with `changed` documents changed on each side.
    Sync,
    /// Sustained small changes from `writers` devices.
    Ingest,
    /// One change reaching `fanout_devices` connected devices.
    Fanout,
    /// Relay memory per idle connected device.
    Idle,
}

/// How the writers upload in the ingest's measured part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IngestMethod {
    /// Writers are connected and caught up before the window; their changes are
    /// built beforehand; each streams them in uploads of `ingest_batch` changes,
    /// `ingest_in_flight` unacknowledged at a time. Measures the relay.
    Stream,
    /// Each writer runs `sync_once` (QUIC connect, handshake, one upload of all
    /// its changes) inside the window: the relay plus 50 handshakes and the
    /// writers' own client CPU (the method of the first figures).
    SyncOnce,
}

/// How the fresh device of the sync scenario gets its documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InitialSync {
    /// Whole documents as saved Automerge documents, then the log (protocol 1.1).
    Snapshots,
    /// The whole log, change by change (the device offers protocol 1.0).
    Log,
}

/// Scale and wiring of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `waybill` binary, run as the relay (`serve`) and as devices whose
    /// memory is measured (`bench device`).
    pub waybill: PathBuf,
    /// Working directory (relay data, device stores).
    pub work: PathBuf,
    /// Orders held (sync scenario).
    pub docs: usize,
    /// Documents changed on each side while offline (sync scenario).
    pub changed: usize,
    /// Writers (ingest).
    pub writers: usize,
    /// Orders each writer creates before the measured part (ingest).
    pub orders_per_writer: usize,
    /// Small changes each writer uploads in the measured part (ingest).
    pub changes_per_writer: usize,
    /// Changes in one upload (ingest, streamed).
    pub ingest_batch: usize,
    /// Uploads each writer keeps unacknowledged (ingest, streamed).
    pub ingest_in_flight: usize,
    /// How the ingest's measured part uploads.
    pub ingest_method: IngestMethod,
    /// How the fresh device gets its documents (sync).
    pub initial_sync: InitialSync,
    /// Connected devices (fan-out).
    pub fanout_devices: usize,
    /// Changes sent, one at a time (fan-out).
    pub fanout_rounds: usize,
    /// Idle device counts to measure at, increasing (idle).
    pub idle_devices: Vec<usize>,
    /// Use this relay (address, data directory, pid) instead of starting one per
    /// scenario.
    pub external: Option<(SocketAddr, PathBuf, Option<u32>)>,
    /// Bound on any one sync.
    pub timeout: Duration,
}

/// Run `scenarios` in order, handing each figure to `emit` as soon as it is known.
pub async fn run(
    scenarios: &[Scenario],
    options: &Options,
    emit: &mut dyn FnMut(Figure),
) -> Result<(), LoadError> {
    std::fs::create_dir_all(&options.work)
        .map_err(|e| LoadError::Setup(format!("{}: {e}", options.work.display())))?;
    for scenario in scenarios {
        let started = Instant::now();
        progress(&format!("scenario {scenario:?}"));
        match scenario {
            Scenario::Sync => sync(options, emit).await?,
            Scenario::Ingest => ingest(options, emit).await?,
            Scenario::Fanout => fanout(options, emit).await?,
            Scenario::Idle => idle(options, emit).await?,
        }
        progress(&format!(
            "scenario {scenario:?} done in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
    }
    Ok(())
}

fn progress(what: &str) {
    eprintln!("[bench] {what}");
}

async fn relay_for(options: &Options, name: &str) -> Result<RelayUnderTest, LoadError> {
    match &options.external {
        Some((addr, data, pid)) => RelayUnderTest::external(*addr, data, *pid),
        None => {
            let data = fresh_dir(&options.work, name)?;
            RelayUnderTest::spawn(&options.waybill, &data).await
        }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), LoadError> {
    if ok {
        Ok(())
    } else {
        Err(LoadError::Check(what()))
    }
}

async fn sync_replica(
    replica: &Arc<Replica>,
    credential: &Credential,
    timeout: Duration,
) -> Result<SyncReport, LoadError> {
    Ok(sync_once(
        Arc::clone(replica),
        credential,
        &SyncOptions::default(),
        timeout,
    )
    .await?)
}

/// Run `waybill bench device` in its own process.
async fn device_process(
    options: &Options,
    db: &Path,
    credential: &Path,
    edit: Option<&Path>,
    initial_sync: InitialSync,
) -> Result<DeviceRunReport, LoadError> {
    let mut command = std::process::Command::new(&options.waybill);
    command
        .arg("bench")
        .arg("device")
        .arg("--db")
        .arg(db)
        .arg("--credential")
        .arg(credential)
        .arg("--timeout-secs")
        .arg(options.timeout.as_secs().to_string())
        .env("RUST_LOG", "warn");
    if initial_sync == InitialSync::Log {
        command.arg("--protocol-minor").arg("0");
    }
    if let Some(edit) = edit {
        command
            .arg("--edit")
            .arg(edit)
            .arg("--kind")
            .arg(RECONNECT_EVENT);
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .map_err(|e| LoadError::Child(e.to_string()))?
        .map_err(|e| LoadError::Child(format!("cannot start: {e}")))?;
    if !output.status.success() {
        return Err(LoadError::Child(format!(
            "exit {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| LoadError::Child(format!("unreadable report: {e}")))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    std::fs::write(path, bytes).map_err(|e| LoadError::Setup(format!("{}: {e}", path.display())))
}

/// Initial sync of `docs` orders to a fresh device, then reconnect after offline.
async fn sync(o: &Options, emit: &mut dyn FnMut(Figure)) -> Result<(), LoadError> {
    let relay = relay_for(o, "sync-relay").await?;
    let scale = format!("{} orders", o.docs);
    let seeder_credential = relay.credential("bench-seeder", Role::Dispatcher, "")?;
    let seeder = Arc::new(Replica::open_in_memory(
        seeder_credential.body.identity(),
        ReplicaOptions::default(),
    )?);
    let started = Instant::now();
    let mut ids = Vec::with_capacity(o.docs);
    for i in 0..o.docs {
        ids.push(docs::seed_order(&seeder, STORES[i % STORES.len()], i)?);
    }
    progress(&format!(
        "seeded {} orders ({} changes) in {:.1} s",
        o.docs,
        o.docs * 3,
        started.elapsed().as_secs_f64()
    ));
    let saved: u64 = ids
        .iter()
        .map(|id| seeder.export(id).map(|bytes| bytes.len() as u64))
        .sum::<Result<u64, _>>()?;

    relay.reset_peak();
    let started = Instant::now();
    let up = sync_replica(&seeder, &seeder_credential, o.timeout).await?;
    let took = started.elapsed();
    check(up.uploaded == 3 * o.docs as u64, || {
        format!("seed upload acknowledged {} of {}", up.uploaded, 3 * o.docs)
    })?;
    emit(Figure::new(
        "bulk_upload",
        "changes_per_s",
        up.uploaded as f64 / took.as_secs_f64(),
        "changes/s",
        &format!("{} changes from 1 device, batches of 512", up.uploaded),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    emit(Figure::new(
        "relay_memory",
        "rss_holding_docs",
        mib(relay.memory().rss_kib),
        "MiB",
        &scale,
    ));

    // Initial sync to a fresh device, in its own process.
    let credential = relay.credential("bench-fresh", Role::Dispatcher, "")?;
    let credential_path = o.work.join("fresh.cred");
    write_file(&credential_path, &credential.to_bytes())?;
    let db = o.work.join("fresh.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    relay.reset_peak();
    let first = device_process(o, &db, &credential_path, None, o.initial_sync).await?;
    let relay_peak = relay.memory().hwm_kib;
    check(first.documents == o.docs as u64, || {
        format!(
            "fresh device holds {} of {} orders",
            first.documents, o.docs
        )
    })?;
    let s = "initial_sync";
    let how = match o.initial_sync {
        InitialSync::Snapshots => "snapshots (protocol 1.1)",
        InitialSync::Log => "the whole log (protocol 1.0)",
    };
    emit(Figure::new(
        s,
        "wall_time",
        first.converged_ms,
        "ms",
        &format!("connect until converged; {how}"),
    ));
    emit(Figure::new(
        s,
        "wall_time_with_close",
        first.sync_ms,
        "ms",
        "sync_once, goodbye and QUIC drain included",
    ));
    emit(Figure::new(
        s,
        "bytes_to_device",
        first.bytes_received as f64,
        "bytes",
        &scale,
    ));
    emit(Figure::new(
        s,
        "bytes_from_device",
        first.bytes_sent as f64,
        "bytes",
        &scale,
    ));
    emit(Figure::new(
        s,
        "messages",
        (first.messages_sent + first.messages_received) as f64,
        "messages",
        "both ways",
    ));
    emit(Figure::new(
        s,
        "bytes_per_saved_byte",
        (first.bytes_received + first.bytes_sent) as f64 / saved.max(1) as f64,
        "ratio",
        &format!("saved size of the documents: {saved} bytes; {how}"),
    ));
    emit(Figure::new(
        s,
        "device_peak_memory",
        mib(first.hwm_kib),
        "MiB",
        "device process VmHWM",
    ));
    emit(Figure::new(
        s,
        "relay_peak_memory",
        mib(relay_peak),
        "MiB",
        "relay VmHWM during the sync",
    ));

    // Reconnect after offline: `changed` documents on the relay side…
    docs::record_all(&seeder, &ids[..o.changed], RECONNECT_EVENT)?;
    let up = sync_replica(&seeder, &seeder_credential, o.timeout).await?;
    check(up.uploaded == o.changed as u64, || {
        format!("relay-side changes acknowledged: {}", up.uploaded)
    })?;
    // …and as many others on the device side, recorded by the device process
    // while offline, just before it reconnects.
    let edit = o.work.join("edit.txt");
    let lines: String = ids[o.changed..2 * o.changed]
        .iter()
        .map(|id| format!("{id}\n"))
        .collect();
    write_file(&edit, lines.as_bytes())?;
    let again = device_process(o, &db, &credential_path, Some(&edit), o.initial_sync).await?;
    check(
        again.uploaded == o.changed as u64 && again.received == o.changed as u64,
        || {
            format!(
                "reconnect uploaded {} and received {} (expected {} each)",
                again.uploaded, again.received, o.changed
            )
        },
    )?;
    let back = sync_replica(&seeder, &seeder_credential, o.timeout).await?;
    check(back.received == o.changed as u64, || {
        format!("relay side received {} device changes", back.received)
    })?;
    let s = "reconnect";
    let scale = format!("{} held, {} changed each side", o.docs, o.changed);
    let change_bytes = again.change_bytes_sent + again.change_bytes_received;
    emit(Figure::new(
        s,
        "wall_time",
        again.converged_ms,
        "ms",
        "device process restarted; connect until converged",
    ));
    emit(Figure::new(
        s,
        "wall_time_with_close",
        again.sync_ms,
        "ms",
        "sync_once, goodbye and QUIC drain included",
    ));
    emit(Figure::new(
        s,
        "bytes_to_device",
        again.bytes_received as f64,
        "bytes",
        &scale,
    ));
    emit(Figure::new(
        s,
        "bytes_from_device",
        again.bytes_sent as f64,
        "bytes",
        &scale,
    ));
    emit(Figure::new(
        s,
        "messages",
        (again.messages_sent + again.messages_received) as f64,
        "messages",
        "both ways",
    ));
    emit(Figure::new(
        s,
        "round_trips",
        again.round_trips as f64,
        "round trips",
        "after the handshake",
    ));
    emit(Figure::new(
        s,
        "bytes_per_change_byte",
        (again.bytes_sent + again.bytes_received) as f64 / change_bytes.max(1) as f64,
        "ratio",
        &format!("changed Automerge changes: {change_bytes} bytes"),
    ));
    emit(Figure::new(
        s,
        "device_open",
        again.open_ms,
        "ms",
        "Replica::open of the store",
    ));
    relay.stop();
    Ok(())
}

/// Sustained small changes from many writers.
async fn ingest(o: &Options, emit: &mut dyn FnMut(Figure)) -> Result<(), LoadError> {
    let relay = relay_for(o, "ingest-relay").await?;
    let mut writers = Vec::with_capacity(o.writers);
    for w in 0..o.writers {
        let store = format!("W{w:02}");
        let credential = relay.credential(&format!("bench-writer-{w:02}"), Role::Store, &store)?;
        let replica = Arc::new(Replica::open_in_memory(
            credential.body.identity(),
            ReplicaOptions::default(),
        )?);
        let ids = (0..o.orders_per_writer.max(1))
            .map(|i| replica.create_order(&docs::new_order(&store, i)))
            .collect::<Result<Vec<_>, _>>()?;
        writers.push((Arc::new(credential), replica, ids));
    }
    // Setup: the orders reach the relay first.
    all_sync(&writers, o.timeout).await?;
    // The small changes, recorded offline so the writers' own CPU does not compete
    // with the relay in the measured part.
    for (_, replica, ids) in &writers {
        for k in 0..o.changes_per_writer {
            replica.add_note(&ids[k % ids.len()], &format!("Call on arrival ({k})."))?;
        }
    }
    let expected = (o.writers * o.changes_per_writer) as u64;
    let (total, took, scale) = match o.ingest_method {
        IngestMethod::SyncOnce => {
            relay.reset_peak();
            let started = Instant::now();
            let reports = all_sync(&writers, o.timeout).await?;
            // Until the last upload is acknowledged: the goodbyes after it are
            // not ingest.
            let took = reports
                .iter()
                .map(|(_, converged)| converged.saturating_duration_since(started))
                .max()
                .unwrap_or_default();
            let total: u64 = reports.iter().map(|(r, _)| r.uploaded).sum();
            let scale = format!(
                "{} writers × {} changes, sync_once each (connect included)",
                o.writers, o.changes_per_writer
            );
            (total, took, scale)
        }
        IngestMethod::Stream => {
            let (total, took) = stream_ingest(o, &relay, &writers).await?;
            let scale = format!(
                "{} writers × {} changes, streamed: uploads of {}, {} in flight",
                o.writers, o.changes_per_writer, o.ingest_batch, o.ingest_in_flight
            );
            (total, took, scale)
        }
    };
    check(total == expected, || {
        format!("ingest acknowledged {total} of {expected} changes")
    })?;
    emit(Figure::new(
        "ingest",
        "changes_per_s",
        total as f64 / took.as_secs_f64(),
        "changes/s",
        &scale,
    ));
    emit(Figure::new("ingest", "wall_time", ms(took), "ms", &scale));
    emit(Figure::new(
        "ingest",
        "relay_peak_memory",
        mib(relay.memory().hwm_kib),
        "MiB",
        "relay VmHWM during the ingest",
    ));
    relay.stop();
    Ok(())
}

/// The streamed ingest: every writer connects (as a light device with its own
/// credential) and catches up before the window opens, and its changes are read
/// from its outbox beforehand. The window runs from the first upload until the last
/// acknowledgement: every writer keeps `ingest_in_flight` uploads of
/// `ingest_batch` changes unacknowledged, and an acknowledgement means durable.
/// Returns the changes acknowledged and the window.
async fn stream_ingest(
    o: &Options,
    relay: &RelayUnderTest,
    writers: &[Writer],
) -> Result<(u64, Duration), LoadError> {
    let fleet = Fleet::new(relay.addr, &relay.keys.cert_der, writers.len())?;
    let mut connected = Vec::with_capacity(writers.len());
    for (i, (credential, replica, _)) in writers.iter().enumerate() {
        let changes: Vec<(String, Vec<u8>)> = replica
            .outbox(usize::MAX)?
            .into_iter()
            .map(|e| (e.doc_id, e.bytes))
            .collect();
        let device = fleet.connect(i, credential.to_bytes(), None, None).await?;
        connected.push((device, changes));
    }
    let batch = o.ingest_batch.max(1);
    let window = o.ingest_in_flight.max(1);
    let timeout = o.timeout;
    relay.reset_peak();
    let start = Arc::new(tokio::sync::Barrier::new(connected.len() + 1));
    let mut set = JoinSet::new();
    for (i, (mut device, changes)) in connected.into_iter().enumerate() {
        let start = Arc::clone(&start);
        set.spawn(async move {
            let mut uploads = changes.chunks(batch).map(<[_]>::to_vec);
            start.wait().await;
            let run = async {
                let mut in_flight = 0usize;
                let mut accepted = 0u64;
                loop {
                    while in_flight < window {
                        let Some(upload) = uploads.next() else { break };
                        device.upload(upload).await?;
                        in_flight += 1;
                    }
                    if in_flight == 0 {
                        return Ok::<_, LoadError>((accepted, Instant::now()));
                    }
                    let acked = device.ack().await.ok_or_else(|| LoadError::Device {
                        index: i,
                        reason: "the relay closed the stream during the ingest".into(),
                    })?;
                    accepted += acked as u64;
                    in_flight -= 1;
                }
            };
            let done = tokio::time::timeout(timeout, run)
                .await
                .map_err(|_| LoadError::Timeout(format!("writer {i} uploading")))?;
            device.close().await;
            done
        });
    }
    start.wait().await;
    let started = Instant::now();
    let mut total = 0;
    let mut last = started;
    while let Some(joined) = set.join_next().await {
        let (accepted, finished) = joined.map_err(|e| LoadError::Setup(e.to_string()))??;
        total += accepted;
        last = last.max(finished);
    }
    Ok((total, last.duration_since(started)))
}

type Writer = (Arc<Credential>, Arc<Replica>, Vec<DocId>);

/// Each report comes with when its sync converged (its uploads acknowledged and
/// the device caught up), before the goodbye.
async fn all_sync(
    writers: &[Writer],
    timeout: Duration,
) -> Result<Vec<(SyncReport, Instant)>, LoadError> {
    let mut set = JoinSet::new();
    for (credential, replica, _) in writers {
        let (credential, replica) = (Arc::clone(credential), Arc::clone(replica));
        set.spawn(async move {
            let started = Instant::now();
            let report = sync_replica(&replica, &credential, timeout).await?;
            let converged = started + report.converged_in;
            Ok::<_, LoadError>((report, converged))
        });
    }
    let mut reports = Vec::with_capacity(writers.len());
    while let Some(joined) = set.join_next().await {
        reports.push(joined.map_err(|e| LoadError::Setup(e.to_string()))??);
    }
    Ok(reports)
}

/// Connect light devices `from..to` (store `store`) to `fleet`.
async fn connect_fleet(
    relay: &RelayUnderTest,
    fleet: &Arc<Fleet>,
    prefix: &str,
    store: &str,
    range: std::ops::Range<usize>,
    arrivals: Option<mpsc::UnboundedSender<Arrival>>,
) -> Result<Vec<LightDevice>, LoadError> {
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut set = JoinSet::new();
    for i in range {
        let credential = relay.credential(&format!("{prefix}-{i}"), Role::Store, store)?;
        let (fleet, gate, arrivals) = (Arc::clone(fleet), Arc::clone(&gate), arrivals.clone());
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            // A device whose handshake fails tries again, as a real one reconnects;
            // the retries are counted and reported.
            let mut retries = 0;
            loop {
                let attempt = tokio::time::timeout(
                    Duration::from_secs(60),
                    fleet.connect(i, credential.to_bytes(), None, arrivals.clone()),
                )
                .await
                .map_err(|_| LoadError::Timeout(format!("device {i} connecting")))
                .and_then(|connected| connected);
                match attempt {
                    Ok(device) => return Ok((device, retries)),
                    Err(e) if retries >= CONNECT_RETRIES => return Err(e),
                    Err(_) => {
                        retries += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
    }
    let mut devices = Vec::new();
    let mut retries = 0;
    while let Some(joined) = set.join_next().await {
        let (device, retried) = joined.map_err(|e| LoadError::Setup(e.to_string()))??;
        devices.push(device);
        retries += retried;
    }
    if retries > 0 {
        progress(&format!("{retries} connection attempts were retried"));
    }
    Ok(devices)
}

/// One change reaching many connected devices.
async fn fanout(o: &Options, emit: &mut dyn FnMut(Figure)) -> Result<(), LoadError> {
    let relay = relay_for(o, "fanout-relay").await?;
    let credential = relay.credential("bench-fan-writer", Role::Store, "F1")?;
    let replica = Arc::new(Replica::open_in_memory(
        credential.body.identity(),
        ReplicaOptions::default(),
    )?);
    let order = docs::seed_order(&replica, "F1", 0)?;
    sync_replica(&replica, &credential, o.timeout).await?;
    let fleet = Arc::new(Fleet::new(
        relay.addr,
        &relay.keys.cert_der,
        o.fanout_devices + 1,
    )?);
    let (tx, mut arrivals) = mpsc::unbounded_channel();
    let started = Instant::now();
    let devices = connect_fleet(
        &relay,
        &fleet,
        "bench-fan",
        "F1",
        0..o.fanout_devices,
        Some(tx),
    )
    .await?;
    progress(&format!(
        "{} devices connected and caught up in {:.1} s",
        devices.len(),
        started.elapsed().as_secs_f64()
    ));
    let mut writer = fleet
        .connect(o.fanout_devices, credential.to_bytes(), None, None)
        .await?;
    let mut latencies = Vec::with_capacity(o.fanout_devices * o.fanout_rounds);
    for round in 0..o.fanout_rounds {
        replica.add_note(&order, &format!("Customer called ({round})."))?;
        let pending = replica.outbox(64)?;
        replica.ack(&pending.iter().map(|e| e.hash.clone()).collect::<Vec<_>>())?;
        let changes = pending.into_iter().map(|e| (e.doc_id, e.bytes)).collect();
        let sent = Instant::now();
        writer.upload(changes).await?;
        let mut reached = 0;
        while reached < o.fanout_devices {
            let arrival = tokio::time::timeout(ROUND_TIMEOUT, arrivals.recv())
                .await
                .map_err(|_| {
                    LoadError::Timeout(format!(
                        "round {round}: {reached} of {} devices reached",
                        o.fanout_devices
                    ))
                })?
                .ok_or_else(|| LoadError::Check("arrivals channel closed".into()))?;
            latencies.push(ms(arrival.at.saturating_duration_since(sent)));
            reached += 1;
        }
        tokio::time::timeout(ROUND_TIMEOUT, writer.ack())
            .await
            .map_err(|_| LoadError::Timeout(format!("round {round}: upload ack")))?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let scale = format!("{} devices × {} changes", o.fanout_devices, o.fanout_rounds);
    for (metric, p) in [("p50", 50.0), ("p99", 99.0), ("max", 100.0)] {
        if let Some(value) = percentile(&mut latencies, p) {
            emit(Figure::new("fanout", metric, value, "ms", &scale));
        }
    }
    let received: u64 = devices.iter().map(|d| d.traffic().1.bytes).sum();
    emit(Figure::new(
        "fanout",
        "bytes_per_device",
        received as f64 / devices.len().max(1) as f64,
        "bytes",
        "received by one device, catch-up included",
    ));
    writer.close().await;
    for device in devices {
        device.close().await;
    }
    relay.stop();
    Ok(())
}

/// Relay memory per idle connected device.
async fn idle(o: &Options, emit: &mut dyn FnMut(Figure)) -> Result<(), LoadError> {
    let relay = relay_for(o, "idle-relay").await?;
    let most = o.idle_devices.iter().copied().max().unwrap_or(0);
    let fleet = Arc::new(Fleet::new(relay.addr, &relay.keys.cert_der, most)?);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = relay.memory().rss_kib;
    let own_base = metrics::memory(None).rss_kib;
    let mut devices: Vec<LightDevice> = Vec::new();
    let mut counts = o.idle_devices.clone();
    counts.sort_unstable();
    for target in counts {
        let started = Instant::now();
        let more = connect_fleet(
            &relay,
            &fleet,
            "bench-idle",
            "I1",
            devices.len()..target,
            None,
        )
        .await?;
        let took = started.elapsed();
        let added = more.len();
        devices.extend(more);
        progress(&format!(
            "{} idle devices connected ({added} in {:.1} s)",
            devices.len(),
            took.as_secs_f64()
        ));
        // Let the connections settle (handshake buffers freed, keep-alives running).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss = relay.memory().rss_kib;
        let scale = format!("{target} devices");
        emit(Figure::new(
            &format!("idle_{target}"),
            "relay_kib_per_device",
            rss.saturating_sub(base) as f64 / target.max(1) as f64,
            "KiB",
            &format!("relay RSS {:.1} MiB, {:.1} MiB before", mib(rss), mib(base)),
        ));
        emit(Figure::new(
            &format!("idle_{target}"),
            "relay_rss",
            mib(rss),
            "MiB",
            &scale,
        ));
        emit(Figure::new(
            &format!("idle_{target}"),
            "loadgen_kib_per_device",
            metrics::memory(None).rss_kib.saturating_sub(own_base) as f64 / target.max(1) as f64,
            "KiB",
            "the simulated devices' side (informative)",
        ));
    }
    for device in devices {
        device.close().await;
    }
    relay.stop();
    Ok(())
}
