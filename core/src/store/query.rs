//! Queries answered from the index tables alone, without loading documents.

use super::{DeliveryRow, IndexRows, LedgerRow, OrderRow, StoreError};
use crate::ids::{DocId, DocKind};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row};

/// Filters for listing orders. Unset fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderQuery {
    /// Owning store.
    pub store: Option<String>,
    /// Derived status name (`packed`, `conflict`…).
    pub status: Option<String>,
    /// Sales channel (`web`…).
    pub channel: Option<String>,
    /// Customer id.
    pub customer_id: Option<String>,
    /// Substring of the order number or customer name (case-insensitive).
    pub text: Option<String>,
    /// At most this many (default 100).
    pub limit: Option<u32>,
}

/// Filters for listing deliveries. Unset fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryQuery {
    /// Current courier.
    pub courier: Option<String>,
    /// Derived status name.
    pub status: Option<String>,
    /// The store it leaves from.
    pub store: Option<String>,
    /// Its order.
    pub order_id: Option<String>,
    /// Window starting at or after this time (ms).
    pub due_from_ms: Option<i64>,
    /// Window starting before this time (ms).
    pub due_before_ms: Option<i64>,
    /// At most this many (default 100).
    pub limit: Option<u32>,
}

const ORDER_COLUMNS: &str = "o.doc_id, o.number, o.store, o.channel, o.fulfilment, o.status, o.customer_id, o.customer_name,
     o.currency, o.total, o.balance_due, o.created_ms, o.updated_ms";
const DELIVERY_COLUMNS: &str =
    "doc_id, order_id, store, courier, status, window_start, window_end, updated_ms";

fn order_row(r: &Row<'_>) -> rusqlite::Result<OrderRow> {
    Ok(OrderRow {
        doc_id: r.get(0)?,
        number: r.get(1)?,
        store: r.get(2)?,
        channel: r.get(3)?,
        fulfilment: r.get(4)?,
        status: r.get(5)?,
        customer_id: r.get(6)?,
        customer_name: r.get(7)?,
        currency: r.get(8)?,
        total: r.get(9)?,
        balance_due: r.get(10)?,
        created_ms: r.get(11)?,
        updated_ms: r.get(12)?,
    })
}

fn delivery_row(r: &Row<'_>) -> rusqlite::Result<DeliveryRow> {
    Ok(DeliveryRow {
        doc_id: r.get(0)?,
        order_id: r.get(1)?,
        store: r.get(2)?,
        courier: r.get(3)?,
        status: r.get(4)?,
        window_start: r.get(5)?,
        window_end: r.get(6)?,
        updated_ms: r.get(7)?,
    })
}

fn ledger_row(r: &Row<'_>) -> rusqlite::Result<LedgerRow> {
    Ok(LedgerRow {
        entry_id: r.get(0)?,
        order_id: r.get(1)?,
        delivery_id: r.get(2)?,
        kind: r.get(3)?,
        method: r.get(4)?,
        amount: r.get(5)?,
        currency: r.get(6)?,
        actor: r.get(7)?,
        at_ms: r.get(8)?,
    })
}

/// A WHERE clause under construction.
#[derive(Default)]
struct Filter {
    clauses: Vec<String>,
    params: Vec<Value>,
}

impl Filter {
    fn eq(&mut self, column: &str, value: &Option<String>) {
        if let Some(v) = value {
            self.params.push(Value::Text(v.clone()));
            self.clauses
                .push(format!("{column} = ?{}", self.params.len()));
        }
    }
    fn cmp(&mut self, column: &str, op: &str, value: Option<i64>) {
        if let Some(v) = value {
            self.params.push(Value::Integer(v));
            self.clauses
                .push(format!("{column} {op} ?{}", self.params.len()));
        }
    }
    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }
}

fn limit(l: Option<u32>) -> i64 {
    i64::from(l.unwrap_or(100).min(10_000))
}

/// List orders, newest first.
pub fn orders(conn: &Connection, q: &OrderQuery) -> Result<Vec<OrderRow>, StoreError> {
    let mut f = Filter::default();
    f.eq("o.store", &q.store);
    f.eq("o.status", &q.status);
    f.eq("o.channel", &q.channel);
    f.eq("o.customer_id", &q.customer_id);
    if let Some(text) = q.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        if text.chars().count() >= 3 {
            // Trigram full-text search; the text is one quoted phrase.
            f.params
                .push(Value::Text(format!("\"{}\"", text.replace('"', "\"\""))));
            f.clauses.push(format!(
                "o.rowid IN (SELECT rowid FROM order_search WHERE order_search MATCH ?{})",
                f.params.len()
            ));
        } else {
            let escaped = text
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            f.params.push(Value::Text(format!("%{escaped}%")));
            let n = f.params.len();
            f.clauses.push(format!(
                "(o.number LIKE ?{n} ESCAPE '\\' OR o.customer_name LIKE ?{n} ESCAPE '\\')"
            ));
        }
    }
    f.params.push(Value::Integer(limit(q.limit)));
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM order_index o {} ORDER BY o.created_ms DESC, o.doc_id LIMIT ?{}",
        f.sql(),
        f.params.len()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(f.params.iter()), order_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// List deliveries by window start, earliest first.
pub fn deliveries(conn: &Connection, q: &DeliveryQuery) -> Result<Vec<DeliveryRow>, StoreError> {
    let mut f = Filter::default();
    f.eq("courier", &q.courier);
    f.eq("status", &q.status);
    f.eq("store", &q.store);
    f.eq("order_id", &q.order_id);
    f.cmp("window_start", ">=", q.due_from_ms);
    f.cmp("window_start", "<", q.due_before_ms);
    f.params.push(Value::Integer(limit(q.limit)));
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM delivery_index {} ORDER BY window_start IS NULL, window_start, doc_id LIMIT ?{}",
        f.sql(),
        f.params.len()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(f.params.iter()), delivery_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Ledger entries of an order, oldest first.
pub fn ledger(conn: &Connection, order_id: &str) -> Result<Vec<LedgerRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT entry_id, order_id, delivery_id, kind, method, amount, currency, actor, at_ms
         FROM ledger_index WHERE order_id = ?1 ORDER BY at_ms, entry_id",
    )?;
    let rows = stmt.query_map([order_id], ledger_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Cash collected at the door by a courier (payments in cash on its deliveries,
/// minus nothing: refunds are never paid out at the door), per currency.
pub fn cash_collected(conn: &Connection, courier: &str) -> Result<Vec<(String, i64)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT l.currency, sum(l.amount) FROM ledger_index l JOIN delivery_index d ON d.doc_id = l.delivery_id
         WHERE d.courier = ?1 AND l.kind = 'payment' AND l.method = 'cash' GROUP BY l.currency ORDER BY l.currency",
    )?;
    let rows = stmt.query_map([courier], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The stored index rows of one document.
pub fn index_rows(conn: &Connection, id: &DocId) -> Result<Option<IndexRows>, StoreError> {
    Ok(match id.kind() {
        DocKind::Order => {
            let sql = format!("SELECT {ORDER_COLUMNS} FROM order_index o WHERE o.doc_id = ?1");
            match conn.query_row(&sql, [id.as_str()], order_row).optional()? {
                Some(row) => Some(IndexRows::Order(row, ledger(conn, id.as_str())?)),
                None => None,
            }
        }
        DocKind::Delivery => {
            let sql = format!("SELECT {DELIVERY_COLUMNS} FROM delivery_index WHERE doc_id = ?1");
            conn.query_row(&sql, [id.as_str()], delivery_row)
                .optional()?
                .map(IndexRows::Delivery)
        }
    })
}
