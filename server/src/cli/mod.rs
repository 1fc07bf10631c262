//! The `waybill` command line: the relay (`serve`), the operators' commands
//! (`enroll`, `revoke`, `quarantine`) and a device on the command line (`device`).
//!
//! `main.rs` only parses [`Cli`] and calls [`run`]; everything a command does is
//! here, in the library, where tests can reach it. Every command writes its result
//! to stdout (a line for people, or one JSON document with `--json`; the shapes are
//! documented in `docs/cli.md` and kept stable) and its failure as one typed
//! [`CliError`], which `main` prints as a single `error: …` line with exit code 1.
//! Usage mistakes are clap's, with exit code 2.

mod admin;
mod admin_token;
mod bench;
mod device;
mod device_args;
mod output;
mod serve;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::enroll::EnrollError;
use crate::keys::KeysError;
use waybill_core::ReplicaError;
use waybill_core::credential::CredentialError;
use waybill_core::net::NetError;
use waybill_core::sync::LogStoreError;

pub use admin::{EnrollArgs, QuarantineCommand, RevokeArgs, RoleArg};
pub use admin_token::AdminTokenArgs;
pub use bench::{BenchArgs, BenchCommand, BenchDeviceArgs, BenchRunArgs};
pub use device_args::{
    DeviceAction, DeviceArgs, DeviceCommand, MethodArg, OrderCommand, ShowDeliveryCommand,
};
pub use serve::ServeArgs;

/// `waybill`: the Waybill relay and its command line.
#[derive(Parser, Debug)]
#[command(name = "waybill", version, about = "Waybill relay and command line")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the relay (QUIC) until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Issue a device credential, signed by the relay's key.
    Enroll(EnrollArgs),
    /// Revoke a device: the relay refuses it from its next connection on.
    Revoke(RevokeArgs),
    /// Inspect changes the relay refused.
    Quarantine {
        /// What to show.
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// Act as a device on a local store file (orders, deliveries, sync).
    Device(DeviceArgs),
    /// Load generator: simulated devices over QUIC against a relay, printing
    /// figures (BENCHMARKS.md; `bench/run.sh` compares them with automerge-repo).
    Bench(BenchArgs),
    /// Print a new admin token for the HTTP API and dashboard.
    AdminToken(AdminTokenArgs),
}

impl Cli {
    /// The log level used when `RUST_LOG` is not set: the relay reports what it
    /// does; operators' commands show warnings (a signing key that had to be
    /// recreated, say); device commands keep stderr to the one `error:` line, since
    /// what a warning would say reaches their output (`status`, `refused`).
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Serve(_) => "info",
            Command::Device(_) => "error",
            Command::Bench(_) => "warn",
            _ => "warn",
        }
    }
}

/// Why a command failed. Each message is one line an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The relay's key material could not be loaded or created.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// The enrolment request was refused.
    #[error(transparent)]
    Enroll(#[from] EnrollError),
    /// The relay's database failed.
    #[error(transparent)]
    LogStore(#[from] LogStoreError),
    /// A device store operation failed or was refused.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// A credential could not be read, written or used.
    #[error("{origin}: {source}")]
    Credential {
        /// Where it came from (a file, or the device store).
        origin: String,
        /// What went wrong.
        source: CredentialError,
    },
    /// Reading or writing a file (or stdin) failed.
    #[error("{what}: {source}")]
    Io {
        /// The file, or `stdin`.
        what: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Writing the command's output failed.
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    /// Input JSON that does not describe what the command expects.
    #[error("{what} is not a valid {expected}: {source}")]
    Json {
        /// The file, or `stdin`.
        what: String,
        /// What it should hold (`order`).
        expected: &'static str,
        /// Where and why parsing stopped.
        source: serde_json::Error,
    },
    /// A device command on a store that was never initialised.
    #[error(
        "{} has no device credential: run `waybill device --db {} init --credential FILE` first",
        db.display(),
        db.display()
    )]
    NotInitialised {
        /// The device store.
        db: PathBuf,
    },
    /// `device init` with another device's credential on an initialised store.
    #[error(
        "{} belongs to device {existing}, not {given}: use another --db file for another device",
        db.display()
    )]
    OtherDevice {
        /// The device store.
        db: PathBuf,
        /// The device it was initialised for.
        existing: String,
        /// The device of the credential given.
        given: String,
    },
    /// An operator command on a directory that holds no relay.
    #[error(
        "{} holds no relay (no relay-id file): pass the --data directory of `waybill serve`",
        data.display()
    )]
    NoRelay {
        /// The directory given.
        data: PathBuf,
    },
    /// No quarantined change with this id.
    #[error("no quarantined change with id {0} (see `waybill quarantine list`)")]
    NoQuarantineEntry(i64),
    /// A relay address that is not `host:port`.
    #[error("the relay address {0:?} is not host:port (for example relay.example.com:4433)")]
    BadRelayAddr(String),
    /// The tokio runtime or the signal handlers could not be set up.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Syncing with the relay failed.
    #[error(transparent)]
    Sync(#[from] NetError),
    /// A benchmark could not run or its checks failed.
    #[error(transparent)]
    Bench(#[from] crate::loadgen::LoadError),
    /// The relay could not start or stopped with an error (the whole chain of
    /// causes, outermost first).
    #[error("{0:#}")]
    Serve(anyhow::Error),
}

impl CliError {
    /// An I/O failure on `what` (a path or `stdin`).
    pub(crate) fn io(what: impl std::fmt::Display, source: std::io::Error) -> Self {
        CliError::Io {
            what: what.to_string(),
            source,
        }
    }
}

/// Run a parsed command, writing its result to `out`.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Enroll(args) => admin::enroll(&args, out),
        Command::Revoke(args) => admin::revoke(&args, out),
        Command::Quarantine { command } => admin::quarantine(&command, out),
        Command::Device(args) => device::run(args, out),
        Command::Bench(args) => bench::run(args, out),
        Command::AdminToken(args) => admin_token::run(&args, out),
    }
}

/// The message `main` prints after `error: `, on one line.
pub fn error_line(err: &CliError) -> String {
    err.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// `host:port` with a non-empty host and a non-zero port (`[::1]:4433` for IPv6);
/// the same rule `waybill enroll` applies.
pub(crate) fn check_relay_addr(addr: &str) -> Result<(), CliError> {
    let fits = addr.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && !host.chars().any(char::is_whitespace)
            && port.parse::<u16>().is_ok_and(|port| port != 0)
    });
    if fits {
        Ok(())
    } else {
        Err(CliError::BadRelayAddr(addr.to_owned()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn relay_addresses() {
        for good in ["127.0.0.1:4433", "relay.example.com:1", "[::1]:4433"] {
            check_relay_addr(good).unwrap();
        }
        for bad in ["", "relay", ":4433", "relay:0", "relay:http", "re lay:4433"] {
            assert!(check_relay_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_lines_are_one_line() {
        let err = CliError::NoRelay {
            data: PathBuf::from("a\nb"),
        };
        assert!(!error_line(&err).contains('\n'));
    }
}
