//! Query-index rows derived from a document. Written in the same transaction as the
//! document's changes; `Store::verify` recomputes them to prove they match.

use crate::model::{Delivery, Document, Order};
use rusqlite::{OptionalExtension, Transaction, params};

/// The `order_index` row of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    /// Document id.
    pub doc_id: String,
    /// Order number.
    pub number: String,
    /// Owning store.
    pub store: String,
    /// Sales channel.
    pub channel: String,
    /// Fulfilment method.
    pub fulfilment: String,
    /// Derived status (`conflict` while one is open).
    pub status: String,
    /// Customer id.
    pub customer_id: String,
    /// Customer name.
    pub customer_name: String,
    /// Currency.
    pub currency: String,
    /// Sum of lines.
    pub total: i64,
    /// What the customer still owes.
    pub balance_due: i64,
    /// Creation time (wall ms of its HLC).
    pub created_ms: i64,
    /// Time of the newest event or entry (wall ms).
    pub updated_ms: i64,
}

/// The `delivery_index` row of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    /// Document id.
    pub doc_id: String,
    /// Its order.
    pub order_id: String,
    /// The store it leaves from.
    pub store: String,
    /// Current courier.
    pub courier: Option<String>,
    /// Derived status.
    pub status: String,
    /// Promised window start (ms).
    pub window_start: Option<i64>,
    /// Promised window end (ms).
    pub window_end: Option<i64>,
    /// Time of the newest event (wall ms).
    pub updated_ms: i64,
}

/// One `ledger_index` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    /// Entry id.
    pub entry_id: String,
    /// Its order.
    pub order_id: String,
    /// Delivery it was collected on.
    pub delivery_id: Option<String>,
    /// payment / refund / store_credit.
    pub kind: String,
    /// cash / card / …
    pub method: String,
    /// Minor units.
    pub amount: i64,
    /// Currency.
    pub currency: String,
    /// Recording device.
    pub actor: String,
    /// When (wall ms).
    pub at_ms: i64,
}

/// Every index row one document contributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexRows {
    /// An order's row and its ledger rows.
    Order(OrderRow, Vec<LedgerRow>),
    /// A delivery's row.
    Delivery(DeliveryRow),
}

impl IndexRows {
    /// Derive the rows of a document.
    pub fn of(doc: &Document) -> Self {
        match doc {
            Document::Order(o) => order_rows(o),
            Document::Delivery(d) => IndexRows::Delivery(delivery_row(d)),
        }
    }

    /// Upsert the rows. Upserts keep the row's rowid, which also keys its search row;
    /// ledger entries are immutable, so only new ones are inserted. Writing as few
    /// pages as possible keeps commits (and WAL checkpoints) short.
    pub(crate) fn write(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        match self {
            IndexRows::Order(o, ledger) => {
                let before: Option<(i64, String, String)> = tx
                    .prepare_cached(
                        "SELECT rowid, number, customer_name FROM order_index WHERE doc_id = ?1",
                    )?
                    .query_row([&o.doc_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                let rowid: i64 = tx
                    .prepare_cached(
                        "INSERT INTO order_index (doc_id, number, store, channel, fulfilment, status, customer_id,
                         customer_name, currency, total, balance_due, created_ms, updated_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                         ON CONFLICT (doc_id) DO UPDATE SET number = excluded.number, store = excluded.store,
                           channel = excluded.channel, fulfilment = excluded.fulfilment, status = excluded.status,
                           customer_id = excluded.customer_id, customer_name = excluded.customer_name,
                           currency = excluded.currency, total = excluded.total, balance_due = excluded.balance_due,
                           created_ms = excluded.created_ms, updated_ms = excluded.updated_ms
                         RETURNING rowid",
                    )?
                    .query_row(
                        params![
                            o.doc_id, o.number, o.store, o.channel, o.fulfilment, o.status, o.customer_id,
                            o.customer_name, o.currency, o.total, o.balance_due, o.created_ms, o.updated_ms
                        ],
                        |r| r.get(0),
                    )?;
                let search_changed = match &before {
                    None => true,
                    Some((_, number, name)) => *number != o.number || *name != o.customer_name,
                };
                if search_changed {
                    tx.prepare_cached("DELETE FROM order_search WHERE rowid = ?1")?
                        .execute([rowid])?;
                    tx.prepare_cached("INSERT INTO order_search (rowid, number, customer_name) VALUES (?1, ?2, ?3)")?
                        .execute(params![rowid, o.number, o.customer_name])?;
                }
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO ledger_index (entry_id, order_id, delivery_id, kind, method, amount, currency, actor, at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                for l in ledger {
                    insert.execute(params![
                        l.entry_id,
                        l.order_id,
                        l.delivery_id,
                        l.kind,
                        l.method,
                        l.amount,
                        l.currency,
                        l.actor,
                        l.at_ms
                    ])?;
                }
            }
            IndexRows::Delivery(d) => {
                tx.prepare_cached(
                    "INSERT INTO delivery_index (doc_id, order_id, store, courier, status, window_start, window_end, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (doc_id) DO UPDATE SET order_id = excluded.order_id, store = excluded.store,
                       courier = excluded.courier, status = excluded.status, window_start = excluded.window_start,
                       window_end = excluded.window_end, updated_ms = excluded.updated_ms",
                )?
                .execute(params![
                    d.doc_id, d.order_id, d.store, d.courier, d.status, d.window_start, d.window_end, d.updated_ms
                ])?;
            }
        }
        Ok(())
    }
}

fn order_rows(o: &Order) -> IndexRows {
    let folded = o.fold();
    let updated_ms = o
        .events
        .iter()
        .map(|e| e.at.wall_ms)
        .chain(o.payments.iter().map(|p| p.at.wall_ms))
        .chain(o.returns.iter().map(|r| r.at.wall_ms))
        .fold(o.created_at.wall_ms, i64::max);
    let status = crate::model::order::status_of(&folded);
    let balance = o.balance();
    let mut seen = std::collections::HashSet::new();
    let mut ledger: Vec<LedgerRow> = o
        .payments
        .iter()
        .filter(|p| seen.insert(p.id.as_str()))
        .map(|p| LedgerRow {
            entry_id: p.id.clone(),
            order_id: o.id.clone(),
            delivery_id: p.delivery_id.clone(),
            kind: p.kind.as_str().to_owned(),
            method: p.method.as_str().to_owned(),
            amount: p.amount,
            currency: p.currency.clone(),
            actor: p.actor.clone(),
            at_ms: p.at.wall_ms,
        })
        .collect();
    ledger.sort_by(|a, b| (a.at_ms, &a.entry_id).cmp(&(b.at_ms, &b.entry_id)));
    IndexRows::Order(
        OrderRow {
            doc_id: o.id.clone(),
            number: o.number.clone(),
            store: o.store.clone(),
            channel: enum_name(&o.channel),
            fulfilment: enum_name(&o.fulfilment),
            status: status.as_str().to_owned(),
            customer_id: o.customer.id.clone(),
            customer_name: o.customer.name.clone(),
            currency: o.currency.clone(),
            total: balance.total,
            balance_due: balance.due,
            created_ms: o.created_at.wall_ms,
            updated_ms,
        },
        ledger,
    )
}

fn delivery_row(d: &Delivery) -> DeliveryRow {
    let folded = d.fold();
    let status = crate::model::delivery::status_of(&folded);
    let courier = crate::model::delivery::courier_of(&d.events, &folded);
    DeliveryRow {
        doc_id: d.id.clone(),
        order_id: d.order_id.clone(),
        store: d.store.clone(),
        courier,
        status: status.as_str().to_owned(),
        window_start: d.window.map(|w| w.start_ms),
        window_end: d.window.map(|w| w.end_ms),
        updated_ms: d
            .events
            .iter()
            .map(|e| e.at.wall_ms)
            .fold(d.created_at.wall_ms, i64::max),
    }
}

/// The serde name of a unit enum (`call_centre`), for index columns.
pub(crate) fn enum_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}
