//! The load generator behind `waybill bench`: simulated devices over real QUIC
//! against a `waybill serve` child process, measuring the scenarios of
//! BENCHMARKS.md (reconnect after offline, initial sync, relay ingest, fan-out,
//! idle connections). Full devices are real [`waybill_core::Replica`]s synced with
//! [`waybill_core::net::sync_once`] (the devices whose memory is measured run in
//! their own `waybill bench device` process); the thousands of connected devices
//! of the fan-out and idle scenarios are light protocol-level devices
//! ([`device`]). Figures come out as [`metrics::Figure`]s.

pub mod device;
pub mod docs;
pub mod metrics;
pub mod relay;
mod scenarios;
mod sync_device;

pub use scenarios::{IngestMethod, InitialSync, Options, Scenario, run};
pub use sync_device::{DeviceRun, DeviceRunReport, run_device};

use waybill_core::ReplicaError;
use waybill_core::net::NetError;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Preparing the relay, the directories or the credentials failed.
    #[error("bench setup: {0}")]
    Setup(String),
    /// A light device failed.
    #[error("simulated device {index}: {reason}")]
    Device {
        /// Its index in the fleet.
        index: usize,
        /// What went wrong.
        reason: String,
    },
    /// A full device's replica failed.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// A full device's sync failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// A `waybill bench device` child failed.
    #[error("device process: {0}")]
    Child(String),
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A check on the outcome failed (the scenario did not do what it should).
    #[error("check failed: {0}")]
    Check(String),
}
