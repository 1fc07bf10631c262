//! `waybill bench device`: one full device (a SQLite replica on disk) in its own
//! process, so its memory is its own: open the store, optionally record an event
//! on listed documents while offline, then sync once and report.

use super::LoadError;
use super::metrics::{self, ms};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use waybill_core::credential::Credential;
use waybill_core::ids::DocId;
use waybill_core::net::{SyncOptions, sync_once};
use waybill_core::replica::{Replica, ReplicaOptions};

/// What the device process does.
#[derive(Debug, Clone)]
pub struct DeviceRun {
    /// The device's store file.
    pub db: PathBuf,
    /// Its credential file.
    pub credential: PathBuf,
    /// A file of document ids (one a line) to record `kind` on before syncing.
    pub edit: Option<PathBuf>,
    /// The event to record.
    pub kind: String,
    /// Bound on the sync.
    pub timeout: Duration,
    /// Offer this protocol minor instead of the newest (0: a never-synced device
    /// reads the whole log instead of snapshots).
    pub protocol_minor: Option<u16>,
}

/// What it measured (printed as JSON by `waybill bench device`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceRunReport {
    /// `Replica::open`, in ms.
    pub open_ms: f64,
    /// Local events recorded before the sync.
    pub edited: u64,
    /// Time to record them, in ms.
    pub edit_ms: f64,
    /// The sync (connect, handshake, exchange, goodbye), in ms.
    pub sync_ms: f64,
    /// From connecting until converged (caught up, uploads acknowledged), in ms:
    /// the sync without the goodbye.
    pub converged_ms: f64,
    /// Changes uploaded and acknowledged.
    pub uploaded: u64,
    /// New changes received.
    pub received: u64,
    /// Frame bytes device → relay.
    pub bytes_sent: u64,
    /// Frame bytes relay → device.
    pub bytes_received: u64,
    /// Frames device → relay.
    pub messages_sent: u64,
    /// Frames relay → device.
    pub messages_received: u64,
    /// Round trips after the handshake.
    pub round_trips: u64,
    /// Automerge change bytes uploaded.
    pub change_bytes_sent: u64,
    /// Automerge change bytes received.
    pub change_bytes_received: u64,
    /// Documents held after the sync.
    pub documents: u64,
    /// This process's peak RSS, KiB.
    pub hwm_kib: u64,
    /// Its RSS at the end, KiB.
    pub rss_kib: u64,
}

/// Run the device.
pub async fn run_device(run: &DeviceRun) -> Result<DeviceRunReport, LoadError> {
    let credential = Credential::load(&run.credential)
        .map_err(|e| LoadError::Child(format!("{}: {e}", run.credential.display())))?;
    let started = Instant::now();
    let replica = Arc::new(Replica::open(
        &run.db,
        credential.body.identity(),
        ReplicaOptions::default(),
    )?);
    let mut out = DeviceRunReport {
        open_ms: ms(started.elapsed()),
        ..DeviceRunReport::default()
    };
    if let Some(edit) = &run.edit {
        let text = std::fs::read_to_string(edit)
            .map_err(|e| LoadError::Child(format!("{}: {e}", edit.display())))?;
        let ids = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| DocId::parse(l.trim()).map_err(|e| LoadError::Child(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let started = Instant::now();
        super::docs::record_all(&replica, &ids, &run.kind)?;
        out.edit_ms = ms(started.elapsed());
        out.edited = ids.len() as u64;
    }
    let mut options = SyncOptions::default();
    if let Some(minor) = run.protocol_minor {
        options.client.version.minor = minor.min(options.client.version.minor);
    }
    let started = Instant::now();
    let report = sync_once(Arc::clone(&replica), &credential, &options, run.timeout).await?;
    out.sync_ms = ms(started.elapsed());
    out.converged_ms = ms(report.converged_in);
    out.uploaded = report.uploaded;
    out.received = report.received;
    out.bytes_sent = report.bytes_sent;
    out.bytes_received = report.bytes_received;
    out.messages_sent = report.messages_sent;
    out.messages_received = report.messages_received;
    out.round_trips = report.round_trips;
    out.change_bytes_sent = report.change_bytes_sent;
    out.change_bytes_received = report.change_bytes_received;
    out.documents = replica.doc_ids()?.len() as u64;
    let memory = metrics::memory(None);
    out.hwm_kib = memory.hwm_kib;
    out.rss_kib = memory.rss_kib;
    Ok(out)
}
