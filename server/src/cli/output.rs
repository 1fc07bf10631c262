//! What the commands print: the JSON shapes (stable; documented in `docs/cli.md`)
//! and the small formatting helpers the human-readable lines share.
//!
//! Index rows and store records do not implement `Serialize` (core keeps them
//! plain), so their JSON is built here, field by field, which also pins the
//! shape: renaming a field in core does not silently change the CLI's output.

use std::io::Write;

use serde_json::{Value, json};
use waybill_core::store::{DeliveryRow, OrderRow, RefusedChange};
use waybill_core::sync::QuarantinedChange;

use super::CliError;

/// Write one JSON document and a newline.
pub(crate) fn write_json(out: &mut dyn Write, value: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|err| {
        // A `Value` always serializes; keep the error typed all the same.
        CliError::Output(std::io::Error::other(err))
    })?;
    writeln!(out, "{text}").map_err(CliError::Output)
}

/// Write one line.
pub(crate) fn write_line(
    out: &mut dyn Write,
    line: impl std::fmt::Display,
) -> Result<(), CliError> {
    writeln!(out, "{line}").map_err(CliError::Output)
}

/// Serialize a value whose type derives `Serialize` (the replica's views).
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, CliError> {
    serde_json::to_value(value).map_err(|err| CliError::Output(std::io::Error::other(err)))
}

/// Lowercase hex of some bytes (change hashes).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) use waybill_core::hlc::utc_timestamp;

/// One order of `device orders --json`.
pub(crate) fn order_row(row: &OrderRow) -> Value {
    json!({
        "id": row.doc_id,
        "number": row.number,
        "store": row.store,
        "channel": row.channel,
        "fulfilment": row.fulfilment,
        "status": row.status,
        "customer_id": row.customer_id,
        "customer_name": row.customer_name,
        "currency": row.currency,
        "total": row.total,
        "balance_due": row.balance_due,
        "created_ms": row.created_ms,
        "updated_ms": row.updated_ms,
    })
}

/// One delivery of `device deliveries --json`.
pub(crate) fn delivery_row(row: &DeliveryRow) -> Value {
    json!({
        "id": row.doc_id,
        "order_id": row.order_id,
        "store": row.store,
        "courier": row.courier,
        "status": row.status,
        "window_start": row.window_start,
        "window_end": row.window_end,
        "updated_ms": row.updated_ms,
    })
}

/// One refused change of `device refused --json`.
pub(crate) fn refused_change(change: &RefusedChange) -> Value {
    json!({
        "doc_id": change.doc_id,
        "hash": hex(&change.hash),
        "code": change.code,
        "reason": change.reason,
        "refused_ms": change.refused_ms,
    })
}

/// One quarantined change of `quarantine list --json` and `quarantine show --json`.
pub(crate) fn quarantined_change(id: i64, entry: &QuarantinedChange) -> Value {
    json!({
        "id": id,
        "at_ms": entry.at_ms,
        "device_id": entry.change.device_id,
        "doc_id": entry.change.doc_id,
        "code": entry.code,
        "reason": entry.reason,
        "hash": hex(&entry.change.hash),
        "size": entry.change.bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_hex() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
