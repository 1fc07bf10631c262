//! The order document and its lifecycle.

use super::error::ModelError;
use super::event::StatusEvent;
use super::lifecycle::{self, EventFacts, Folded, Lifecycle};
use super::money::{Balance, LedgerEntry};
use crate::hlc::Hlc;
use autosurgeon::{Hydrate, Reconcile, Text};
use serde::{Deserialize, Serialize};

/// Where the order came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Reconcile, Hydrate, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The web shop.
    #[autosurgeon(rename = "web")]
    Web,
    /// The retailer's app.
    #[autosurgeon(rename = "app")]
    App,
    /// A till in a store.
    #[autosurgeon(rename = "pos")]
    Pos,
    /// The call centre.
    #[autosurgeon(rename = "call_centre")]
    #[serde(alias = "call-centre")]
    CallCentre,
    /// Social-media shops and messaging.
    #[autosurgeon(rename = "social")]
    Social,
}

/// How the order reaches the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Reconcile, Hydrate, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fulfilment {
    /// A courier delivers it.
    #[autosurgeon(rename = "delivery")]
    Delivery,
    /// The customer collects it in store.
    #[autosurgeon(rename = "pickup")]
    #[serde(alias = "in_store_pickup", alias = "in-store-pickup")]
    Pickup,
    /// A store ships it by carrier.
    #[autosurgeon(rename = "ship_from_store")]
    #[serde(alias = "ship-from-store")]
    ShipFromStore,
}

/// The customer, as the order recorded them.
#[derive(Debug, Clone, PartialEq, Eq, Reconcile, Hydrate, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    /// The retailer's customer id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Phone number.
    #[serde(default)]
    pub phone: String,
    /// Delivery address.
    #[serde(default)]
    pub address: String,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct OrderLine {
    /// Unique id (`ln_…`).
    pub id: String,
    /// Stock keeping unit.
    pub sku: String,
    /// Product name as sold.
    pub name: String,
    /// Quantity (positive).
    pub qty: i64,
    /// Price of one unit in minor units.
    pub unit_price: i64,
}

impl OrderLine {
    /// `qty × unit_price`, saturating.
    pub fn total(&self) -> i64 {
        self.qty.saturating_mul(self.unit_price)
    }
}

/// One returned SKU and quantity.
#[derive(Debug, Clone, PartialEq, Eq, Reconcile, Hydrate, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnLine {
    /// Stock keeping unit.
    pub sku: String,
    /// Quantity returned (positive).
    pub qty: i64,
}

/// A return started for some of an order's lines (append-only).
#[derive(Debug, Clone, PartialEq, Eq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct ReturnEntry {
    /// Unique id (`ret_…`).
    pub id: String,
    /// What comes back.
    pub lines: Vec<ReturnLine>,
    /// Why, in the customer's words.
    pub reason: String,
    /// The delivery at whose door the return started, if any.
    pub delivery_id: Option<String>,
    /// Device that recorded it.
    pub actor: String,
    /// When.
    pub at: Hlc,
}

/// What can happen to an order.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Reconcile,
    Hydrate,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum OrderEventKind {
    #[autosurgeon(rename = "placed")]
    Placed,
    #[autosurgeon(rename = "confirmed")]
    Confirmed,
    #[autosurgeon(rename = "picking")]
    Picking,
    #[autosurgeon(rename = "packed")]
    Packed,
    #[autosurgeon(rename = "ready_for_pickup")]
    ReadyForPickup,
    #[autosurgeon(rename = "handed_over")]
    HandedOver,
    #[autosurgeon(rename = "completed")]
    Completed,
    #[autosurgeon(rename = "cancelled")]
    Cancelled,
    #[autosurgeon(rename = "return_requested")]
    ReturnRequested,
    #[autosurgeon(rename = "returned")]
    Returned,
    #[autosurgeon(rename = "conflict_resolved")]
    ConflictResolved,
}

impl OrderEventKind {
    /// Every kind, in lifecycle order.
    pub const ALL: [OrderEventKind; 11] = [
        Self::Placed,
        Self::Confirmed,
        Self::Picking,
        Self::Packed,
        Self::ReadyForPickup,
        Self::HandedOver,
        Self::Completed,
        Self::Cancelled,
        Self::ReturnRequested,
        Self::Returned,
        Self::ConflictResolved,
    ];

    /// The stored name (`ready_for_pickup`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Placed => "placed",
            Self::Confirmed => "confirmed",
            Self::Picking => "picking",
            Self::Packed => "packed",
            Self::ReadyForPickup => "ready_for_pickup",
            Self::HandedOver => "handed_over",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::ReturnRequested => "return_requested",
            Self::Returned => "returned",
            Self::ConflictResolved => "conflict_resolved",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Result<Self, ModelError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ModelError::UnknownEventKind {
                doc_kind: "order",
                kind: s.to_owned(),
            })
    }
}

/// Where an order stands (without the conflict state; see [`OrderStatus`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum OrderState {
    Placed,
    Confirmed,
    Picking,
    Packed,
    ReadyForPickup,
    HandedOver,
    Completed,
    Cancelled,
    ReturnRequested,
    Returned,
}

impl OrderState {
    /// The name used in indexes and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Placed => "placed",
            Self::Confirmed => "confirmed",
            Self::Picking => "picking",
            Self::Packed => "packed",
            Self::ReadyForPickup => "ready_for_pickup",
            Self::HandedOver => "handed_over",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::ReturnRequested => "return_requested",
            Self::Returned => "returned",
        }
    }
}

/// The rules of an order's life.
#[derive(Debug)]
pub enum OrderLifecycle {}

impl Lifecycle for OrderLifecycle {
    type Kind = OrderEventKind;
    type State = OrderState;
    const RESOLVES: OrderEventKind = OrderEventKind::ConflictResolved;
    const ATTEMPT_MARKER: Option<OrderEventKind> = None;

    fn target(kind: OrderEventKind) -> Option<OrderState> {
        use OrderEventKind as K;
        Some(match kind {
            K::Placed => OrderState::Placed,
            K::Confirmed => OrderState::Confirmed,
            K::Picking => OrderState::Picking,
            K::Packed => OrderState::Packed,
            K::ReadyForPickup => OrderState::ReadyForPickup,
            K::HandedOver => OrderState::HandedOver,
            K::Completed => OrderState::Completed,
            K::Cancelled => OrderState::Cancelled,
            K::ReturnRequested => OrderState::ReturnRequested,
            K::Returned => OrderState::Returned,
            K::ConflictResolved => return None,
        })
    }

    fn precedence(state: OrderState) -> u8 {
        use OrderState as S;
        match state {
            S::Placed => 0,
            S::Confirmed => 1,
            S::Picking => 2,
            S::Packed => 3,
            S::ReadyForPickup => 4,
            S::HandedOver => 5,
            S::Completed => 6,
            S::ReturnRequested => 7,
            S::Returned => 8,
            S::Cancelled => 9,
        }
    }

    fn absorbing(state: OrderState) -> bool {
        state == OrderState::Cancelled
    }

    /// A cancellation concurrent with goods leaving the store is a real-world
    /// contradiction; a cancellation concurrent with picking or packing is not
    /// (the cancellation simply wins).
    fn incompatible(
        a: &EventFacts<'_, OrderEventKind>,
        b: &EventFacts<'_, OrderEventKind>,
    ) -> bool {
        use OrderEventKind as K;
        let left = |k: K| matches!(k, K::HandedOver | K::Completed);
        (a.event.kind == K::Cancelled && left(b.event.kind))
            || (b.event.kind == K::Cancelled && left(a.event.kind))
    }

    fn allowed(from: Option<OrderState>, kind: OrderEventKind) -> bool {
        use OrderEventKind as K;
        use OrderState as S;
        match from {
            None => kind == K::Placed,
            Some(from) => matches!(
                (from, kind),
                (S::Placed, K::Confirmed | K::Picking | K::Cancelled)
                    | (S::Confirmed, K::Picking | K::Cancelled)
                    | (S::Picking, K::Packed | K::Cancelled)
                    | (
                        S::Packed,
                        K::ReadyForPickup | K::HandedOver | K::Completed | K::Cancelled
                    )
                    | (
                        S::ReadyForPickup,
                        K::HandedOver | K::Completed | K::Cancelled
                    )
                    | (S::HandedOver, K::Completed | K::ReturnRequested)
                    | (S::Completed, K::ReturnRequested)
                    | (S::ReturnRequested, K::Returned | K::Completed)
                    | (S::Returned, K::ReturnRequested)
            ),
        }
    }

    fn kind_name(kind: OrderEventKind) -> &'static str {
        kind.as_str()
    }
}

/// An order's derived status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderStatus {
    /// No conflict: the order is in this state.
    State(OrderState),
    /// Two concurrent events contradict each other; a dispatcher must resolve it.
    Conflict(Box<lifecycle::Conflict>),
}

impl OrderStatus {
    /// The name used in indexes and JSON (`packed`, `conflict`).
    pub fn as_str(&self) -> &'static str {
        match self {
            OrderStatus::State(s) => s.as_str(),
            OrderStatus::Conflict(_) => "conflict",
        }
    }
}

/// An order document, as stored in Automerge (see SCHEMA.md).
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
pub struct Order {
    /// Schema version the document was written with.
    pub schema_version: i64,
    /// Always `"order"`.
    #[autosurgeon(rename = "type")]
    pub doc_type: String,
    /// The document id (`ord_…`).
    pub id: String,
    /// The retailer's human-facing order number.
    pub number: String,
    /// Sales channel.
    pub channel: Channel,
    /// Store that owns and fulfils the order.
    pub store: String,
    /// The customer.
    pub customer: Customer,
    /// ISO 4217 currency of every amount in the order.
    pub currency: String,
    /// How it reaches the customer.
    pub fulfilment: Fulfilment,
    /// What was ordered.
    pub lines: Vec<OrderLine>,
    /// Ids of the order's delivery documents.
    pub deliveries: Vec<String>,
    /// The money ledger (append-only).
    pub payments: Vec<LedgerEntry>,
    /// Returns (append-only).
    pub returns: Vec<ReturnEntry>,
    /// Free-text notes (collaborative text).
    pub notes: Text,
    /// Status log (append-only).
    pub events: Vec<StatusEvent<OrderEventKind>>,
    /// When it was created.
    pub created_at: Hlc,
    /// Device that created it.
    pub created_by: String,
}

impl Order {
    /// Fold the status log.
    pub fn fold(&self) -> Folded<OrderState> {
        lifecycle::fold::<OrderLifecycle>(&self.events)
    }

    /// The derived status.
    pub fn status(&self) -> OrderStatus {
        status_of(&self.fold())
    }

    /// Sum of the lines.
    pub fn total(&self) -> i64 {
        self.distinct_lines()
            .map(OrderLine::total)
            .fold(0i64, i64::saturating_add)
    }

    /// The lines, each id counted once.
    pub fn distinct_lines(&self) -> impl Iterator<Item = &OrderLine> {
        let mut seen = std::collections::HashSet::new();
        self.lines
            .iter()
            .filter(move |l| seen.insert(l.id.as_str()))
    }

    /// Quantity of each SKU that can still be returned: sold minus already returned.
    pub fn returnable(&self) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = Vec::new();
        for l in self.distinct_lines() {
            match out.iter_mut().find(|(sku, _)| *sku == l.sku) {
                Some((_, qty)) => *qty = qty.saturating_add(l.qty),
                None => out.push((l.sku.clone(), l.qty)),
            }
        }
        let mut seen = std::collections::HashSet::new();
        let returned = self.returns.iter().filter(|r| seen.insert(r.id.as_str()));
        for rl in returned.flat_map(|r| &r.lines) {
            if let Some((_, qty)) = out.iter_mut().find(|(sku, _)| *sku == rl.sku) {
                *qty = qty.saturating_sub(rl.qty);
            }
        }
        out
    }

    /// Value of returned items, at the price each SKU was sold for.
    pub fn returned_value(&self) -> i64 {
        let mut seen = std::collections::HashSet::new();
        self.returns
            .iter()
            .filter(|r| seen.insert(r.id.as_str()))
            .flat_map(|r| &r.lines)
            .map(|rl| {
                let price = self
                    .lines
                    .iter()
                    .find(|l| l.sku == rl.sku)
                    .map_or(0, |l| l.unit_price);
                rl.qty.saturating_mul(price)
            })
            .fold(0i64, i64::saturating_add)
    }

    /// What the customer still owes.
    pub fn balance(&self) -> Balance {
        Balance::derive(self.total(), self.returned_value(), &self.payments)
    }
}

/// Turn a fold into the public status (conflict first).
pub(crate) fn status_of(folded: &Folded<OrderState>) -> OrderStatus {
    match folded.conflicts.first() {
        Some(c) => OrderStatus::Conflict(Box::new(c.clone())),
        None => OrderStatus::State(folded.state.unwrap_or(OrderState::Placed)),
    }
}
