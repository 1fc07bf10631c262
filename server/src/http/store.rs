//! The HTTP layer's own SQLite file (`DATA/http/http.db`: idempotency keys and
//! the event feed), and list queries over the dispatcher device's index tables.
//!
//! Lists read the dispatcher's `order_index` / `delivery_index` / `ledger_index`
//! through a read-only connection, with keyset pagination on the document id
//! (ids are UUIDv7, so id order is creation order and a page boundary never
//! moves while documents change).

use std::path::Path;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

/// Schema of `http.db`, version 1.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    order_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS feed (
    seq INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    recorded_ms INTEGER NOT NULL,
    UNIQUE (doc_id, item_id)
);
PRAGMA user_version = 1;
";

/// Open (creating if needed) the HTTP layer's database.
pub fn open_http_db(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// A read-only connection on the dispatcher's store.
pub fn open_read_model(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// What an idempotency key was used for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentRequest {
    /// SHA-256 of the request body (canonical JSON).
    pub request_hash: String,
    /// The order it created.
    pub order_id: String,
}

/// The order an idempotency key created, if it was used before.
pub fn idempotency_get(
    conn: &Connection,
    key: &str,
) -> rusqlite::Result<Option<IdempotentRequest>> {
    conn.query_row(
        "SELECT request_hash, order_id FROM idempotency WHERE key = ?1",
        [key],
        |r| {
            Ok(IdempotentRequest {
                request_hash: r.get(0)?,
                order_id: r.get(1)?,
            })
        },
    )
    .optional()
}

/// Remember that `key` created `order_id`.
pub fn idempotency_put(
    conn: &Connection,
    key: &str,
    request: &IdempotentRequest,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO idempotency (key, request_hash, order_id, created_ms) VALUES (?1, ?2, ?3, ?4)",
        params![key, request.request_hash, request.order_id, now_ms],
    )?;
    Ok(())
}

/// One entry of the event feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeedEntry {
    /// Position in the feed (the cursor to resume after).
    pub seq: i64,
    /// `order.event`, `delivery.event` or `order.payment`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The document.
    pub doc_id: String,
    /// The event or ledger entry id (unique within the document).
    pub item_id: String,
    /// The entry's content (JSON object).
    pub data: serde_json::Value,
    /// When the relay's dispatcher recorded it in the feed (Unix ms).
    pub recorded_ms: i64,
}

/// Append an entry unless the feed already has this document's item; returns
/// whether it was new. Only the projector writes, so numbers only grow.
pub fn feed_append(
    conn: &Connection,
    doc_id: &str,
    item_id: &str,
    kind: &str,
    data: &serde_json::Value,
    now_ms: i64,
) -> rusqlite::Result<bool> {
    // Numbered explicitly: `INSERT OR IGNORE` with AUTOINCREMENT spends a number
    // on every ignored row, and the feed should read without gaps.
    let n = conn.execute(
        "INSERT INTO feed (seq, doc_id, item_id, type, data, recorded_ms)
         SELECT (SELECT COALESCE(MAX(seq), 0) + 1 FROM feed), ?1, ?2, ?3, ?4, ?5
         WHERE NOT EXISTS (SELECT 1 FROM feed WHERE doc_id = ?1 AND item_id = ?2)",
        params![doc_id, item_id, kind, data.to_string(), now_ms],
    )?;
    Ok(n == 1)
}

/// Feed entries after `after`, oldest first.
pub fn feed_after(conn: &Connection, after: i64, limit: u32) -> rusqlite::Result<Vec<FeedEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, type, doc_id, item_id, data, recorded_ms FROM feed WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after, limit], |r| {
        let data: String = r.get(4)?;
        Ok(FeedEntry {
            seq: r.get(0)?,
            kind: r.get(1)?,
            doc_id: r.get(2)?,
            item_id: r.get(3)?,
            data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
            recorded_ms: r.get(5)?,
        })
    })?;
    rows.collect()
}

/// The newest feed position (0 when empty).
pub fn feed_head(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM feed", [], |r| r.get(0))
}

/// An order as lists show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderListRow {
    /// Document id.
    pub id: String,
    /// Order number.
    pub number: String,
    /// Owning store.
    pub store: String,
    /// Sales channel.
    pub channel: String,
    /// Fulfilment method.
    pub fulfilment: String,
    /// Derived status.
    pub status: String,
    /// Customer id.
    pub customer_id: String,
    /// Currency.
    pub currency: String,
    /// Total in minor units.
    pub total: i64,
    /// Balance due in minor units.
    pub balance_due: i64,
    /// Creation time (Unix ms).
    pub created_ms: i64,
    /// Last change (Unix ms).
    pub updated_ms: i64,
}

/// A delivery as lists show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryListRow {
    /// Document id.
    pub id: String,
    /// Its order.
    pub order_id: String,
    /// Store it leaves from.
    pub store: String,
    /// Current courier.
    pub courier: Option<String>,
    /// Derived status.
    pub status: String,
    /// Window start (Unix ms).
    pub window_start: Option<i64>,
    /// Window end (Unix ms).
    pub window_end: Option<i64>,
    /// Last change (Unix ms).
    pub updated_ms: i64,
}

/// Equality filters and a page.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// `(column, value)` pairs that must all match.
    pub equal: Vec<(&'static str, String)>,
    /// Only rows created at or after this time (orders only).
    pub created_from_ms: Option<i64>,
    /// Only rows created before this time (orders only).
    pub created_before_ms: Option<i64>,
    /// Rows with an id below this (the previous page's cursor).
    pub before_id: Option<String>,
    /// Page size.
    pub limit: u32,
}

fn where_clause(q: &ListQuery, created: bool) -> (String, Vec<Value>) {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    for (column, value) in &q.equal {
        values.push(Value::Text(value.clone()));
        clauses.push(format!("{column} = ?{}", values.len()));
    }
    if created {
        if let Some(from) = q.created_from_ms {
            values.push(Value::Integer(from));
            clauses.push(format!("created_ms >= ?{}", values.len()));
        }
        if let Some(before) = q.created_before_ms {
            values.push(Value::Integer(before));
            clauses.push(format!("created_ms < ?{}", values.len()));
        }
    }
    if let Some(id) = &q.before_id {
        values.push(Value::Text(id.clone()));
        clauses.push(format!("doc_id < ?{}", values.len()));
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (sql, values)
}

/// Orders, newest first.
pub fn orders(conn: &Connection, q: &ListQuery) -> rusqlite::Result<Vec<OrderListRow>> {
    let (filter, mut values) = where_clause(q, true);
    values.push(Value::Integer(i64::from(q.limit)));
    let sql = format!(
        "SELECT doc_id, number, store, channel, fulfilment, status, customer_id, currency, total,
                balance_due, created_ms, updated_ms
         FROM order_index {filter} ORDER BY doc_id DESC LIMIT ?{}",
        values.len()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(values.iter()), |r| {
        Ok(OrderListRow {
            id: r.get(0)?,
            number: r.get(1)?,
            store: r.get(2)?,
            channel: r.get(3)?,
            fulfilment: r.get(4)?,
            status: r.get(5)?,
            customer_id: r.get(6)?,
            currency: r.get(7)?,
            total: r.get(8)?,
            balance_due: r.get(9)?,
            created_ms: r.get(10)?,
            updated_ms: r.get(11)?,
        })
    })?;
    rows.collect()
}

/// Deliveries, newest first.
pub fn deliveries(conn: &Connection, q: &ListQuery) -> rusqlite::Result<Vec<DeliveryListRow>> {
    let (filter, mut values) = where_clause(q, false);
    values.push(Value::Integer(i64::from(q.limit)));
    let sql = format!(
        "SELECT doc_id, order_id, store, courier, status, window_start, window_end, updated_ms
         FROM delivery_index {filter} ORDER BY doc_id DESC LIMIT ?{}",
        values.len()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(values.iter()), |r| {
        Ok(DeliveryListRow {
            id: r.get(0)?,
            order_id: r.get(1)?,
            store: r.get(2)?,
            courier: r.get(3)?,
            status: r.get(4)?,
            window_start: r.get(5)?,
            window_end: r.get(6)?,
            updated_ms: r.get(7)?,
        })
    })?;
    rows.collect()
}

/// `(status, count)` pairs.
pub type StatusCounts = Vec<(String, i64)>;

/// How many orders and deliveries are in each status.
pub fn status_counts(conn: &Connection) -> rusqlite::Result<(StatusCounts, StatusCounts)> {
    let count = |table: &str| -> rusqlite::Result<StatusCounts> {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT status, COUNT(*) FROM {table} GROUP BY status ORDER BY status"
        ))?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    };
    Ok((count("order_index")?, count("delivery_index")?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_feed_is_numbered_without_gaps_and_keeps_each_item_once() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_http_db(&dir.path().join("http.db")).unwrap();
        let data = serde_json::json!({"k": 1});
        assert!(feed_append(&conn, "ord_1", "ev_1", "order.event", &data, 1).unwrap());
        assert!(!feed_append(&conn, "ord_1", "ev_1", "order.event", &data, 2).unwrap());
        assert!(!feed_append(&conn, "ord_1", "ev_1", "order.event", &data, 3).unwrap());
        assert!(feed_append(&conn, "ord_1", "ev_2", "order.event", &data, 4).unwrap());
        assert!(feed_append(&conn, "dlv_1", "ev_1", "delivery.event", &data, 5).unwrap());
        let seqs: Vec<i64> = feed_after(&conn, 0, 10)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(feed_head(&conn).unwrap(), 3);
        let after: Vec<String> = feed_after(&conn, 1, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.item_id)
            .collect();
        assert_eq!(after, vec!["ev_2", "ev_1"]);
    }
}
