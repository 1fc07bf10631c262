//! Reading: whole-document views for detail screens, index queries for lists.

use super::{Replica, ReplicaError};
use crate::hlc::Hlc;
use crate::ids::{DocId, DocKind};
use crate::model::lifecycle::Conflict;
use crate::model::{
    Balance, Channel, Customer, Fulfilment, GeoPoint, LedgerEntry, OrderLine, ProofRef,
    ReturnEntry, Stop, TimeWindow, document,
};
use crate::store::query::{self, DeliveryQuery, OrderQuery};
use crate::store::{DeliveryRow, OrderRow};
use serde::Serialize;

/// One event in a document's timeline (linear order).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    /// Event id.
    pub id: String,
    /// Kind name.
    pub kind: String,
    /// Recording device.
    pub actor: String,
    /// When.
    pub at: Hlc,
    /// Where.
    pub location: Option<GeoPoint>,
    /// Note.
    pub note: Option<String>,
    /// For `conflict_resolved`: the outcome chosen.
    pub resolution: Option<String>,
    /// For `assigned`: the courier.
    pub courier: Option<String>,
}

/// Everything about an order, derived values included (the JSON of `order show`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderView {
    /// Document id.
    pub id: String,
    /// Order number.
    pub number: String,
    /// Sales channel.
    pub channel: Channel,
    /// Owning store.
    pub store: String,
    /// Customer.
    pub customer: Customer,
    /// Currency.
    pub currency: String,
    /// Fulfilment method.
    pub fulfilment: Fulfilment,
    /// Lines.
    pub lines: Vec<OrderLine>,
    /// Delivery ids.
    pub deliveries: Vec<String>,
    /// Ledger.
    pub payments: Vec<LedgerEntry>,
    /// Returns.
    pub returns: Vec<ReturnEntry>,
    /// Notes.
    pub notes: String,
    /// Derived status (`conflict` while one is open).
    pub status: String,
    /// Open conflicts.
    pub conflicts: Vec<Conflict>,
    /// Derived balance.
    pub balance: Balance,
    /// Events in timeline order.
    pub timeline: Vec<TimelineEntry>,
    /// Creation time.
    pub created_at: Hlc,
    /// Creating device.
    pub created_by: String,
    /// Local changes to this order the relay refused (never applied elsewhere; the
    /// app shows them so someone can act).
    pub refused: Vec<RefusedView>,
}

/// A local change the relay refused, as a view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedView {
    /// The relay's code (`Forbidden`, …).
    pub code: String,
    /// The relay's reason.
    pub reason: String,
    /// When the refusal arrived (ms since the epoch).
    pub refused_ms: i64,
}

/// Everything about a delivery (the JSON of `delivery show`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryView {
    /// Document id.
    pub id: String,
    /// Its order.
    pub order_id: String,
    /// The store it leaves from.
    pub store: String,
    /// Current courier.
    pub courier: Option<String>,
    /// Where to go.
    pub stop: Stop,
    /// Promised window.
    pub window: Option<TimeWindow>,
    /// Derived status.
    pub status: String,
    /// Open conflicts.
    pub conflicts: Vec<Conflict>,
    /// Failed attempts so far.
    pub failed_attempts: usize,
    /// Proof of delivery references.
    pub proofs: Vec<ProofRef>,
    /// Notes.
    pub notes: String,
    /// Events in timeline order.
    pub timeline: Vec<TimelineEntry>,
    /// Local changes to this delivery the relay refused.
    pub refused: Vec<RefusedView>,
}

/// The result of [`Replica::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntegrityReport {
    /// Documents checked.
    pub documents: usize,
    /// Documents whose index rows disagree with their content.
    pub mismatches: Vec<String>,
}

fn timeline<K: Copy>(
    events: &[crate::model::StatusEvent<K>],
    order: &[usize],
    name: fn(K) -> &'static str,
) -> Vec<TimelineEntry> {
    order
        .iter()
        .map(|&i| {
            let e = &events[i];
            TimelineEntry {
                id: e.id.clone(),
                kind: name(e.kind).to_owned(),
                actor: e.actor.clone(),
                at: e.at,
                location: e.location,
                note: e.note.clone(),
                resolution: e.resolution.map(|k| name(k).to_owned()),
                courier: e.courier.clone(),
            }
        })
        .collect()
}

impl Replica {
    /// An order with everything derived from it.
    pub fn order(&self, id: &DocId) -> Result<OrderView, ReplicaError> {
        if id.kind() != DocKind::Order {
            return Err(ReplicaError::WrongKind {
                doc_id: id.to_string(),
                expected: "order",
            });
        }
        let o = self.with_doc(id, |doc| {
            Ok(document::read_order(
                id,
                super::session::readable(id, doc)?,
            )?)
        })?;
        let folded = o.fold();
        let balance = o.balance();
        let timeline = timeline(&o.events, &folded.timeline, |k| k.as_str());
        let status = crate::model::order::status_of(&folded).as_str().to_owned();
        Ok(OrderView {
            id: o.id,
            number: o.number,
            channel: o.channel,
            store: o.store,
            customer: o.customer,
            currency: o.currency,
            fulfilment: o.fulfilment,
            lines: o.lines,
            deliveries: o.deliveries,
            payments: o.payments,
            returns: o.returns,
            notes: o.notes.as_str().to_owned(),
            status,
            conflicts: folded.conflicts,
            balance,
            timeline,
            created_at: o.created_at,
            created_by: o.created_by,
            refused: self.refused_for(id)?,
        })
    }

    /// A delivery with everything derived from it.
    pub fn delivery(&self, id: &DocId) -> Result<DeliveryView, ReplicaError> {
        if id.kind() != DocKind::Delivery {
            return Err(ReplicaError::WrongKind {
                doc_id: id.to_string(),
                expected: "delivery",
            });
        }
        let d = self.with_doc(id, |doc| {
            Ok(document::read_delivery(
                id,
                super::session::readable(id, doc)?,
            )?)
        })?;
        let folded = d.fold();
        let courier = crate::model::delivery::courier_of(&d.events, &folded);
        let status = crate::model::delivery::status_of(&folded)
            .as_str()
            .to_owned();
        let failed_attempts = d.failed_attempts();
        Ok(DeliveryView {
            timeline: timeline(&d.events, &folded.timeline, |k| k.as_str()),
            id: d.id,
            order_id: d.order_id,
            store: d.store,
            courier,
            stop: d.stop,
            window: d.window,
            status,
            conflicts: folded.conflicts,
            failed_attempts,
            proofs: d.proofs,
            notes: d.notes.as_str().to_owned(),
            refused: self.refused_for(id)?,
        })
    }

    fn refused_for(&self, id: &DocId) -> Result<Vec<RefusedView>, ReplicaError> {
        Ok(self
            .refused_changes()?
            .into_iter()
            .filter(|r| r.doc_id == id.as_str())
            .map(|r| RefusedView {
                code: r.code,
                reason: r.reason,
                refused_ms: r.refused_ms,
            })
            .collect())
    }

    /// List orders from the index.
    pub fn orders(&self, q: &OrderQuery) -> Result<Vec<OrderRow>, ReplicaError> {
        self.read(|conn| query::orders(conn, q))
    }

    /// List deliveries from the index.
    pub fn deliveries(&self, q: &DeliveryQuery) -> Result<Vec<DeliveryRow>, ReplicaError> {
        self.read(|conn| query::deliveries(conn, q))
    }

    /// Orders whose number or customer name contains `text`.
    pub fn search_orders(&self, text: &str, limit: u32) -> Result<Vec<OrderRow>, ReplicaError> {
        self.orders(&OrderQuery {
            text: Some(text.to_owned()),
            limit: Some(limit),
            ..OrderQuery::default()
        })
    }

    /// Cash a courier collected at the door, per currency.
    pub fn cash_collected(&self, courier: &str) -> Result<Vec<(String, i64)>, ReplicaError> {
        self.read(|conn| query::cash_collected(conn, courier))
    }
}
