//! `waybill bench`: the load generator (see [`crate::loadgen`]).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::CliError;
use crate::loadgen::{
    self, DeviceRun, IngestMethod, InitialSync, Options, Scenario, metrics::Figure,
};

/// `waybill bench`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// A device process the load generator starts (not for direct use).
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// The scenarios and their scale.
    #[command(flatten)]
    pub run: BenchRunArgs,
}

/// What `waybill bench` runs.
#[derive(Args, Debug)]
pub struct BenchRunArgs {
    /// Scenarios to run, in order (default: all).
    #[arg(value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Orders held (sync).
    #[arg(long, default_value_t = 10_000)]
    pub docs: usize,
    /// Documents changed on each side while offline (sync).
    #[arg(long, default_value_t = 100)]
    pub changed: usize,
    /// Writers (ingest).
    #[arg(long, default_value_t = 50)]
    pub writers: usize,
    /// Orders each writer creates before the measured part (ingest).
    #[arg(long, default_value_t = 10)]
    pub orders_per_writer: usize,
    /// Small changes each writer uploads (ingest).
    #[arg(long, default_value_t = 200)]
    pub changes_per_writer: usize,
    /// Changes in one upload (ingest, streamed).
    #[arg(long, default_value_t = 20)]
    pub ingest_batch: usize,
    /// Uploads each writer keeps unacknowledged (ingest, streamed).
    #[arg(long, default_value_t = 4)]
    pub ingest_in_flight: usize,
    /// How the writers upload in the measured part (ingest).
    #[arg(long, value_enum, default_value_t = IngestMethod::SyncOnce)]
    pub ingest_method: IngestMethod,
    /// How the fresh device gets its documents (sync): `snapshots` (protocol 1.1)
    /// or `log` (the device offers 1.0 and reads every change), to compare the two.
    #[arg(long, value_enum, default_value_t = InitialSync::Snapshots)]
    pub initial_sync: InitialSync,
    /// Connected devices (fan-out).
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    /// Changes sent one after another (fan-out).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Idle device counts, comma-separated (idle).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub idle: Vec<usize>,
    /// Working directory (relay data and device stores); default: a temporary
    /// directory removed afterwards.
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,
    /// Use the relay at this address instead of starting one per scenario
    /// (needs --data).
    #[arg(long, requires = "data")]
    pub relay: Option<SocketAddr>,
    /// The data directory of the relay given with --relay (its keys sign the
    /// simulated devices' credentials).
    #[arg(long, requires = "relay", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// The process id of the relay given with --relay, for memory figures.
    #[arg(long, requires = "relay")]
    pub relay_pid: Option<u32>,
    /// The `waybill` binary to run as relay and device processes (default: this one).
    #[arg(long, value_name = "FILE")]
    pub waybill: Option<PathBuf>,
    /// Bound on any one sync, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Print one JSON object per figure instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Commands under `waybill bench`.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// One full device in its own process: open, edit offline, sync once, report
    /// (JSON). The load generator runs this to measure a device's memory.
    #[command(hide = true)]
    Device(BenchDeviceArgs),
}

/// `waybill bench device`.
#[derive(Args, Debug)]
pub struct BenchDeviceArgs {
    /// The device's store file.
    #[arg(long)]
    pub db: PathBuf,
    /// Its credential file.
    #[arg(long)]
    pub credential: PathBuf,
    /// Document ids (one a line) to record --kind on before syncing.
    #[arg(long, requires = "kind")]
    pub edit: Option<PathBuf>,
    /// The event to record on each --edit document.
    #[arg(long)]
    pub kind: Option<String>,
    /// Bound on the sync, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Offer this protocol minor version instead of the newest.
    #[arg(long)]
    pub protocol_minor: Option<u16>,
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

/// Run `waybill bench`.
pub(crate) fn run(args: BenchArgs, out: &mut dyn Write) -> Result<(), CliError> {
    if let Some(BenchCommand::Device(device)) = args.command {
        let run = DeviceRun {
            db: device.db,
            credential: device.credential,
            edit: device.edit,
            kind: device.kind.unwrap_or_default(),
            timeout: Duration::from_secs(device.timeout_secs),
            protocol_minor: device.protocol_minor,
        };
        let report = runtime()?.block_on(loadgen::run_device(&run))?;
        let json = serde_json::to_string(&report).map_err(|e| CliError::Output(e.into()))?;
        return writeln!(out, "{json}").map_err(CliError::Output);
    }
    let args = args.run;
    let waybill = match args.waybill {
        Some(path) => path,
        None => std::env::current_exe().map_err(|e| CliError::io("the waybill binary", e))?,
    };
    let (work, temporary) = match args.work {
        Some(work) => (work, false),
        None => (
            std::env::temp_dir().join(format!("waybill-bench-{}", std::process::id())),
            true,
        ),
    };
    let scenarios = if args.scenarios.is_empty() {
        vec![
            Scenario::Sync,
            Scenario::Ingest,
            Scenario::Fanout,
            Scenario::Idle,
        ]
    } else {
        args.scenarios
    };
    let options = Options {
        waybill,
        work: work.clone(),
        docs: args.docs.max(1),
        changed: args.changed.min(args.docs / 2),
        writers: args.writers.max(1),
        orders_per_writer: args.orders_per_writer.max(1),
        changes_per_writer: args.changes_per_writer,
        ingest_batch: args.ingest_batch.max(1),
        ingest_in_flight: args.ingest_in_flight.max(1),
        ingest_method: args.ingest_method,
        initial_sync: args.initial_sync,
        fanout_devices: args.devices.max(1),
        fanout_rounds: args.rounds.max(1),
        idle_devices: args.idle,
        external: args
            .relay
            .zip(args.data)
            .map(|(addr, data)| (addr, data, args.relay_pid)),
        timeout: Duration::from_secs(args.timeout_secs),
    };
    let json = args.json;
    let mut failed_output = None;
    let mut emit = |figure: Figure| {
        let line = if json {
            serde_json::to_string(&figure).unwrap_or_default()
        } else {
            format!(
                "{:<14} {:<24} {:>14.3} {:<11} {}",
                figure.scenario, figure.metric, figure.value, figure.unit, figure.note
            )
        };
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            failed_output.get_or_insert(e);
        }
    };
    let result = runtime()?.block_on(loadgen::run(&scenarios, &options, &mut emit));
    if temporary {
        let _ = std::fs::remove_dir_all(&work);
    }
    result?;
    match failed_output {
        Some(e) => Err(CliError::Output(e)),
        None => Ok(()),
    }
}
