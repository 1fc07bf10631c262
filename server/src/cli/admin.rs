//! The operators' commands on a relay's data directory: `enroll`, `revoke` and
//! `quarantine`. They work beside a running relay (SQLite in WAL mode lets the
//! relay and these commands use the database at the same time).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use waybill_core::Role;

use super::output::{quarantined_change, utc_timestamp, write_json, write_line};
use super::{CliError, now_ms};
use crate::admin_store::{AdminStore, AdminStoreError};
use crate::enroll::{self, EnrollRequest};
use crate::keys;

/// The relay id file `keys` creates; its presence says a directory holds a relay.
const DAY_MS: i64 = 24 * 3600 * 1000;

/// A device role, as the command line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// A courier's phone (needs --courier).
    Courier,
    /// A store tablet (needs --store).
    Store,
    /// Dispatch and operations.
    Dispatcher,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Courier => Role::Courier,
            RoleArg::Store => Role::Store,
            RoleArg::Dispatcher => Role::Dispatcher,
        }
    }
}

/// `waybill enroll`.
#[derive(Args, Debug)]
pub struct EnrollArgs {
    /// The relay's data directory (created with its keys on first use).
    #[arg(long, env = "WAYBILL_DATA", value_name = "DIR")]
    pub data: PathBuf,
    /// The device's role.
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// The courier a courier device belongs to.
    #[arg(long)]
    pub courier: Option<String>,
    /// The store of a store device (a courier may be based at one).
    #[arg(long)]
    pub store: Option<String>,
    /// The device id (default: `dev_` and 12 random hex digits).
    #[arg(long = "device-id")]
    pub device_id: Option<String>,
    /// Where devices reach the relay, written into the credential.
    #[arg(long = "relay-addr", default_value = "127.0.0.1:4433")]
    pub relay_addr: String,
    /// How many days the credential is valid.
    #[arg(long = "valid-days", default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub valid_days: u32,
    /// The relay's own certificate (PEM), when `serve` runs with --cert: the
    /// credential pins the certificate the relay presents.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Where to write the credential file (readable by its owner only).
    #[arg(long)]
    pub out: PathBuf,
    /// Print a JSON object instead of a line.
    #[arg(long)]
    pub json: bool,
}

/// `waybill revoke`.
#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// The relay's data directory.
    #[arg(long, env = "WAYBILL_DATA", value_name = "DIR")]
    pub data: PathBuf,
    /// The device to revoke.
    #[arg(value_name = "DEVICE_ID")]
    pub device_id: String,
    /// The relay log is in PostgreSQL (as `waybill serve --postgres URL`).
    #[arg(long, env = "WAYBILL_POSTGRES", value_name = "URL")]
    pub postgres: Option<String>,
}

/// `waybill quarantine …`.
#[derive(Subcommand, Debug)]
pub enum QuarantineCommand {
    /// List refused changes, oldest first.
    List {
        /// The relay's data directory.
        #[arg(long, env = "WAYBILL_DATA", value_name = "DIR")]
        data: PathBuf,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// The relay log is in PostgreSQL (as `waybill serve --postgres URL`).
        #[arg(long, env = "WAYBILL_POSTGRES", value_name = "URL")]
        postgres: Option<String>,
    },
    /// Show one refused change.
    Show {
        /// Its quarantine id (from `quarantine list`).
        id: i64,
        /// The relay's data directory.
        #[arg(long, env = "WAYBILL_DATA", value_name = "DIR")]
        data: PathBuf,
        /// Print a JSON object instead of lines.
        #[arg(long)]
        json: bool,
        /// The relay log is in PostgreSQL (as `waybill serve --postgres URL`).
        #[arg(long, env = "WAYBILL_POSTGRES", value_name = "URL")]
        postgres: Option<String>,
    },
}

/// Sign a credential and write it to `--out`.
pub(crate) fn enroll(args: &EnrollArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let user_cert = args.cert.as_deref().zip(args.key.as_deref());
    let (keys, _created) = keys::load_or_create(&args.data, user_cert, &[])?;
    let request = EnrollRequest {
        role: args.role.into(),
        courier: args.courier.clone(),
        store: args.store.clone(),
        device_id: args.device_id.clone(),
        relay_addr: args.relay_addr.clone(),
        valid_for_ms: i64::from(args.valid_days) * DAY_MS,
        now_ms: now_ms(),
    };
    let credential = enroll::enroll(&keys, &request)?;
    credential
        .save(&args.out)
        .map_err(|source| CliError::Credential {
            origin: args.out.display().to_string(),
            source,
        })?;
    let body = &credential.body;
    if args.json {
        write_json(
            out,
            &json!({
                "device_id": body.device_id,
                "role": body.role,
                "store_id": body.store_id,
                "courier_id": body.courier_id,
                "relay_id": body.relay_id,
                "relay_addr": body.relay_addr,
                "issued_ms": body.issued_ms,
                "expires_ms": body.expires_ms,
                "out": args.out.display().to_string(),
            }),
        )
    } else {
        write_line(
            out,
            format_args!(
                "{} {} expires {}",
                body.device_id,
                body.role,
                utc_timestamp(body.expires_ms)
            ),
        )
    }
}

/// Record a revocation in the relay's database.
pub(crate) fn revoke(args: &RevokeArgs, out: &mut dyn Write) -> Result<(), CliError> {
    open_log_store(&args.data, args.postgres.as_deref())?.revoke(&args.device_id)?;
    write_line(
        out,
        format_args!(
            "revoked {}; the relay refuses it from its next connection",
            args.device_id
        ),
    )
}

/// `quarantine list` and `quarantine show`.
pub(crate) fn quarantine(command: &QuarantineCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        QuarantineCommand::List {
            data,
            json,
            postgres,
        } => {
            let entries = open_log_store(data, postgres.as_deref())?.quarantine_list()?;
            if *json {
                let list = entries
                    .iter()
                    .map(|(id, entry)| quarantined_change(*id, entry))
                    .collect();
                return write_json(out, &serde_json::Value::Array(list));
            }
            if entries.is_empty() {
                return write_line(out, "no quarantined changes");
            }
            write_line(out, "ID\tTIME\tDEVICE\tDOCUMENT\tCODE\tREASON")?;
            for (id, entry) in &entries {
                write_line(
                    out,
                    format_args!(
                        "{id}\t{}\t{}\t{}\t{}\t{}",
                        utc_timestamp(entry.at_ms),
                        entry.change.device_id,
                        entry.change.doc_id,
                        entry.code,
                        entry.reason
                    ),
                )?;
            }
            Ok(())
        }
        QuarantineCommand::Show {
            id,
            data,
            json,
            postgres,
        } => {
            let (id, entry) = open_log_store(data, postgres.as_deref())?
                .quarantine_entry(*id)?
                .ok_or(CliError::NoQuarantineEntry(*id))?;
            let value = quarantined_change(id, &entry);
            if *json {
                return write_json(out, &value);
            }
            write_line(out, format_args!("id        {id}"))?;
            write_line(
                out,
                format_args!("time      {}", utc_timestamp(entry.at_ms)),
            )?;
            write_line(out, format_args!("device    {}", entry.change.device_id))?;
            write_line(out, format_args!("document  {}", entry.change.doc_id))?;
            write_line(out, format_args!("code      {}", entry.code))?;
            write_line(out, format_args!("reason    {}", entry.reason))?;
            write_line(
                out,
                format_args!("hash      {}", value["hash"].as_str().unwrap_or("")),
            )?;
            write_line(
                out,
                format_args!("size      {} bytes", entry.change.bytes.len()),
            )
        }
    }
}

fn open_log_store(data: &Path, postgres: Option<&str>) -> Result<AdminStore, CliError> {
    AdminStore::open(data, postgres).map_err(|e| match e {
        AdminStoreError::NoRelay(data) => CliError::NoRelay { data },
        AdminStoreError::Io { path, source } => CliError::io(path.display(), source),
        AdminStoreError::Store(e) => e.into(),
    })
}
