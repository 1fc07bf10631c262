//! `waybill device --db FILE …`: a device on the command line, over the same
//! replica façade the mobile SDK wraps. Useful for integrators feeding orders in,
//! for operators checking what a device holds, and for end-to-end tests.
//!
//! `init` stores the device's credential (and an optional relay address override)
//! in the store file itself, as device settings; every other command opens the
//! replica with the identity that credential names, so a store file is always used
//! as the device it was initialised for.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use waybill_core::credential::{Credential, CredentialBody, CredentialError, FORMAT};
use waybill_core::model::{EventDetails, NewDelivery, NewLedgerEntry, NewOrder};
use waybill_core::net::{SyncOptions, sync_once};
use waybill_core::replica::ReplicaOptions;
use waybill_core::store::query::{DeliveryQuery, OrderQuery};
use waybill_core::{DeviceIdentity, DocId, DocKind, Replica, Role};

use super::device_args::{
    DeviceAction, DeviceArgs, DeviceCommand, OrderCommand, ShowDeliveryCommand,
};
use super::output::{
    delivery_row, order_row, refused_change, to_json, utc_timestamp, write_json, write_line,
};
use super::{CliError, check_relay_addr, now_ms};

/// The device setting holding the credential file's text.
const CREDENTIAL_SETTING: &str = "credential";
/// The device setting holding the relay address override (empty: none).
const RELAY_SETTING: &str = "relay_addr";

/// An opened device: its replica and the credential it was initialised with.
struct Device {
    replica: Replica,
    credential: Credential,
    relay_override: Option<String>,
}

impl Device {
    /// The relay this device talks to.
    fn relay_addr(&self) -> &str {
        self.relay_override
            .as_deref()
            .unwrap_or(&self.credential.body.relay_addr)
    }
}

/// Run a device command.
pub(crate) fn run(args: DeviceArgs, out: &mut dyn Write) -> Result<(), CliError> {
    match args.command {
        DeviceCommand::Init {
            credential,
            relay,
            json,
        } => init(&args.db, &credential, relay.as_deref(), json, out),
        DeviceCommand::Use(action) => act(open(&args.db)?, action, out),
    }
}

fn act(device: Device, action: DeviceAction, out: &mut dyn Write) -> Result<(), CliError> {
    match action {
        DeviceAction::Order { command } => match command {
            OrderCommand::Create { json } => create_order(&device, &json, out),
            OrderCommand::Show { id, json } => show_order(&device, &id, json, out),
        },
        DeviceAction::Delivery {
            command: ShowDeliveryCommand::Show { id, json },
        } => show_delivery(&device, &id, json, out),
        DeviceAction::Orders {
            status,
            store,
            limit,
            json,
        } => {
            let query = OrderQuery {
                status,
                store,
                limit,
                ..OrderQuery::default()
            };
            list_orders(&device, &query, json, out)
        }
        DeviceAction::Deliveries {
            status,
            courier,
            limit,
            json,
        } => {
            let query = DeliveryQuery {
                status,
                courier,
                limit,
                ..DeliveryQuery::default()
            };
            list_deliveries(&device, &query, json, out)
        }
        DeviceAction::Assign { order, courier } => {
            let order = parse_id(&order)?;
            let delivery =
                device
                    .replica
                    .assign_courier(&order, &courier, &NewDelivery::default())?;
            write_line(out, delivery)
        }
        DeviceAction::Event {
            doc_id,
            kind,
            note,
            resolution,
            json,
        } => {
            let details = EventDetails {
                note,
                location: None,
                resolution,
            };
            record_event(&device, &doc_id, &kind, &details, json, out)
        }
        DeviceAction::Pay {
            order,
            amount,
            currency,
            method,
            delivery,
            reference,
            json,
        } => {
            let entry = NewLedgerEntry {
                delivery_id: delivery,
                reference,
                ..NewLedgerEntry::payment(method.into(), amount, currency)
            };
            pay(&device, &order, &entry, json, out)
        }
        DeviceAction::Sync { timeout, json } => {
            sync(device, Duration::from_secs(timeout), json, out)
        }
        DeviceAction::Export { doc_id, out: file } => export(&device, &doc_id, &file, out),
        DeviceAction::Status { json } => status(&device, json, out),
        DeviceAction::Refused { json } => refused(&device, json, out),
    }
}

/// `device init`: check the credential, open (or create) the store for its
/// device and keep the credential and relay override in it.
fn init(
    db: &Path,
    credential_file: &Path,
    relay: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let origin = credential_file.display().to_string();
    let credential_error = |source| CliError::Credential {
        origin: origin.clone(),
        source,
    };
    let bytes = std::fs::read(credential_file).map_err(|err| CliError::io(&origin, err))?;
    // The signature is the relay's to check (only it holds the key); here the file
    // must at least be a credential of this format, still valid.
    let credential = Credential::from_bytes(&bytes).map_err(credential_error)?;
    let body = &credential.body;
    if body.format != FORMAT {
        return Err(credential_error(CredentialError::Malformed(format!(
            "format {} is not the supported {FORMAT}",
            body.format
        ))));
    }
    body.relay_cert_der().map_err(credential_error)?;
    body.check_not_expired(now_ms()).map_err(credential_error)?;
    if let Some(addr) = relay {
        check_relay_addr(addr)?;
    }
    let existing = if db.exists() {
        stored_credential(db)?
    } else {
        None
    };
    if let Some(existing) = existing
        && existing.body.device_id != body.device_id
    {
        return Err(CliError::OtherDevice {
            db: db.to_path_buf(),
            existing: existing.body.device_id,
            given: body.device_id.clone(),
        });
    }
    let replica = Replica::open(db, body.identity(), ReplicaOptions::default())?;
    // Store what was read, not a re-serialization: the file stays byte for byte.
    let text = String::from_utf8(bytes)
        .map_err(|err| credential_error(CredentialError::Malformed(format!("not UTF-8: {err}"))))?;
    replica.set_setting(CREDENTIAL_SETTING, &text)?;
    replica.set_setting(RELAY_SETTING, relay.unwrap_or(""))?;
    let relay_addr = relay.unwrap_or(&body.relay_addr);
    if json {
        return write_json(
            out,
            &json!({
                "device_id": body.device_id,
                "role": body.role,
                "store_id": body.store_id,
                "courier_id": body.courier_id,
                "relay_addr": relay_addr,
                "expires_ms": body.expires_ms,
            }),
        );
    }
    write_line(
        out,
        format_args!(
            "device {} ({}) relay {relay_addr}",
            body.device_id,
            role_label(body)
        ),
    )
}

/// The credential stored in an existing store file, if any. The replica is opened
/// with a placeholder identity only to read the setting (identities live in
/// memory; nothing is written).
fn stored_credential(db: &Path) -> Result<Option<Credential>, CliError> {
    let probe = Replica::open(
        db,
        DeviceIdentity::dispatcher("waybill-cli-probe"),
        ReplicaOptions::default(),
    )?;
    let Some(text) = probe.setting(CREDENTIAL_SETTING)? else {
        return Ok(None);
    };
    Credential::from_bytes(text.as_bytes())
        .map(Some)
        .map_err(|source| CliError::Credential {
            origin: format!("the credential stored in {}", db.display()),
            source,
        })
}

/// Open an initialised device store with the identity of its credential.
fn open(db: &Path) -> Result<Device, CliError> {
    let not_initialised = || CliError::NotInitialised {
        db: db.to_path_buf(),
    };
    // Opening would create the file: refuse first, so a typo creates nothing.
    if !db.exists() {
        return Err(not_initialised());
    }
    let credential = stored_credential(db)?.ok_or_else(not_initialised)?;
    let replica = Replica::open(db, credential.body.identity(), ReplicaOptions::default())?;
    let relay_override = replica
        .setting(RELAY_SETTING)?
        .filter(|addr| !addr.is_empty());
    Ok(Device {
        replica,
        credential,
        relay_override,
    })
}

fn create_order(device: &Device, input: &Path, out: &mut dyn Write) -> Result<(), CliError> {
    let (what, text) = if input == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|err| CliError::io("stdin", err))?;
        ("stdin".to_owned(), text)
    } else {
        let what = input.display().to_string();
        let text = std::fs::read_to_string(input).map_err(|err| CliError::io(&what, err))?;
        (what, text)
    };
    let order: NewOrder = serde_json::from_str(&text).map_err(|source| CliError::Json {
        what,
        expected: "order",
        source,
    })?;
    let id = device.replica.create_order(&order)?;
    write_line(out, id)
}

fn show_order(device: &Device, id: &str, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let id = parse_id(id)?;
    let view = device.replica.order(&id)?;
    if json {
        return write_json(out, &to_json(&view)?);
    }
    write_line(out, format_args!("order     {} ({})", view.id, view.number))?;
    write_line(out, format_args!("store     {}", view.store))?;
    write_line(out, format_args!("status    {}", view.status))?;
    write_line(
        out,
        format_args!(
            "total     {} {}  paid {}  due {}",
            view.balance.total, view.currency, view.balance.paid, view.balance.due
        ),
    )?;
    for delivery in &view.deliveries {
        write_line(out, format_args!("delivery  {delivery}"))?;
    }
    for entry in &view.timeline {
        write_line(
            out,
            format_args!(
                "  {}  {}  by {}",
                utc_timestamp(entry.at.wall_ms),
                entry.kind,
                entry.actor
            ),
        )?;
    }
    Ok(())
}

fn show_delivery(
    device: &Device,
    id: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let id = parse_id(id)?;
    let view = device.replica.delivery(&id)?;
    if json {
        return write_json(out, &to_json(&view)?);
    }
    write_line(out, format_args!("delivery  {}", view.id))?;
    write_line(out, format_args!("order     {}", view.order_id))?;
    write_line(
        out,
        format_args!("courier   {}", view.courier.as_deref().unwrap_or("-")),
    )?;
    write_line(out, format_args!("status    {}", view.status))?;
    for entry in &view.timeline {
        write_line(
            out,
            format_args!(
                "  {}  {}  by {}",
                utc_timestamp(entry.at.wall_ms),
                entry.kind,
                entry.actor
            ),
        )?;
    }
    Ok(())
}

fn list_orders(
    device: &Device,
    query: &OrderQuery,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let rows = device.replica.orders(query)?;
    if json {
        let list = rows.iter().map(order_row).collect();
        return write_json(out, &serde_json::Value::Array(list));
    }
    write_line(out, "ID\tNUMBER\tSTORE\tSTATUS\tTOTAL\tDUE\tCURRENCY")?;
    for row in &rows {
        write_line(
            out,
            format_args!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                row.doc_id,
                row.number,
                row.store,
                row.status,
                row.total,
                row.balance_due,
                row.currency
            ),
        )?;
    }
    Ok(())
}

fn list_deliveries(
    device: &Device,
    query: &DeliveryQuery,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let rows = device.replica.deliveries(query)?;
    if json {
        let list = rows.iter().map(delivery_row).collect();
        return write_json(out, &serde_json::Value::Array(list));
    }
    write_line(out, "ID\tORDER\tCOURIER\tSTATUS")?;
    for row in &rows {
        write_line(
            out,
            format_args!(
                "{}\t{}\t{}\t{}",
                row.doc_id,
                row.order_id,
                row.courier.as_deref().unwrap_or("-"),
                row.status
            ),
        )?;
    }
    Ok(())
}

fn record_event(
    device: &Device,
    doc_id: &str,
    kind: &str,
    details: &EventDetails,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let id = parse_id(doc_id)?;
    let event_id = device.replica.record_event(&id, kind, details)?;
    let status = match id.kind() {
        DocKind::Order => device.replica.order(&id)?.status,
        DocKind::Delivery => device.replica.delivery(&id)?.status,
    };
    if json {
        return write_json(
            out,
            &json!({ "doc_id": id.to_string(), "event_id": event_id, "status": status }),
        );
    }
    write_line(out, status)
}

fn pay(
    device: &Device,
    order: &str,
    entry: &NewLedgerEntry,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let order = parse_id(order)?;
    let entry_id = device.replica.record_payment(&order, entry)?;
    let view = device.replica.order(&order)?;
    if json {
        return write_json(
            out,
            &json!({
                "entry_id": entry_id,
                "order_id": view.id,
                "currency": view.currency,
                "balance": to_json(&view.balance)?,
            }),
        );
    }
    write_line(
        out,
        format_args!("{entry_id} due {} {}", view.balance.due, view.currency),
    )
}

fn sync(
    device: Device,
    timeout: Duration,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let options = SyncOptions {
        relay_addr: device.relay_override.clone(),
        ..SyncOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let replica = Arc::new(device.replica);
    let report = runtime.block_on(sync_once(replica, &device.credential, &options, timeout))?;
    if json {
        return write_json(
            out,
            &json!({
                "uploaded": report.uploaded,
                "received": report.received,
                "bytes_sent": report.bytes_sent,
                "bytes_received": report.bytes_received,
                "messages_sent": report.messages_sent,
                "messages_received": report.messages_received,
                "cursor": report.cursor,
                "full_sync": report.full_sync,
            }),
        );
    }
    write_line(
        out,
        format_args!(
            "uploaded {}, received {}, sent {} bytes, received {} bytes",
            report.uploaded, report.received, report.bytes_sent, report.bytes_received
        ),
    )
}

fn export(device: &Device, doc_id: &str, file: &Path, out: &mut dyn Write) -> Result<(), CliError> {
    let id = parse_id(doc_id)?;
    let bytes = device.replica.export(&id)?;
    std::fs::write(file, &bytes).map_err(|err| CliError::io(file.display(), err))?;
    write_line(
        out,
        format_args!("wrote {} bytes to {}", bytes.len(), file.display()),
    )
}

fn status(device: &Device, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let replica = &device.replica;
    let body = &device.credential.body;
    let pending = replica.pending_uploads()?;
    let cursor = replica.sync_cursor()?;
    let refused = replica.refused_changes()?.len();
    let documents = replica.doc_ids()?.len();
    if json {
        return write_json(
            out,
            &json!({
                "device_id": body.device_id,
                "role": body.role,
                "store_id": body.store_id,
                "courier_id": body.courier_id,
                "relay_addr": device.relay_addr(),
                "credential_expires_ms": body.expires_ms,
                "documents": documents,
                "pending_uploads": pending,
                "cursor": cursor.as_ref().map(|c| json!({ "relay_id": c.relay_id, "seq": c.seq })),
                "refused": refused,
            }),
        );
    }
    write_line(
        out,
        format_args!("device    {} ({})", body.device_id, role_label(body)),
    )?;
    write_line(out, format_args!("relay     {}", device.relay_addr()))?;
    write_line(
        out,
        format_args!("expires   {}", utc_timestamp(body.expires_ms)),
    )?;
    write_line(out, format_args!("documents {documents}"))?;
    write_line(out, format_args!("pending   {pending} changes to upload"))?;
    match &cursor {
        Some(cursor) => write_line(
            out,
            format_args!("cursor    {} at {}", cursor.relay_id, cursor.seq),
        )?,
        None => write_line(out, "cursor    none (never synced)")?,
    }
    write_line(out, format_args!("refused   {refused} changes"))
}

fn refused(device: &Device, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let refused = device.replica.refused_changes()?;
    if json {
        let list = refused.iter().map(refused_change).collect();
        return write_json(out, &serde_json::Value::Array(list));
    }
    if refused.is_empty() {
        return write_line(out, "no refused changes");
    }
    write_line(out, "TIME\tDOCUMENT\tCODE\tREASON")?;
    for change in &refused {
        write_line(
            out,
            format_args!(
                "{}\t{}\t{}\t{}",
                utc_timestamp(change.refused_ms),
                change.doc_id,
                change.code,
                change.reason
            ),
        )?;
    }
    Ok(())
}

/// `courier courier-7`, `store S1` or `dispatcher`.
fn role_label(body: &CredentialBody) -> String {
    let acts_for = match body.role {
        Role::Courier => body.courier_id.as_deref(),
        Role::Store => body.store_id.as_deref(),
        Role::Dispatcher => None,
    };
    match acts_for {
        Some(id) => format!("{} {id}", body.role),
        None => body.role.to_string(),
    }
}

fn parse_id(id: &str) -> Result<DocId, CliError> {
    Ok(DocId::parse(id).map_err(waybill_core::ReplicaError::from)?)
}
