//! The typed values that cross the FFI: inputs (`New…`), detail views, list rows,
//! and enums mirroring the core's. Only `From` conversions live here.

use waybill_core::hlc::Hlc;
use waybill_core::model::lifecycle::ConflictingEvent;
use waybill_core::model::{self as m, EventDetails};
use waybill_core::replica::{DeliveryView, OrderView, RefusedView, TimelineEntry};
use waybill_core::store::{DeliveryRow, OrderRow, RefusedChange};

/// Sales channel of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Channel {
    /// Web shop.
    Web,
    /// The retailer's app.
    App,
    /// Point of sale in a store.
    Pos,
    /// Phone orders.
    CallCentre,
    /// Social media.
    Social,
}

/// How an order reaches the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Fulfilment {
    /// A courier delivers it.
    Delivery,
    /// The customer picks it up in store.
    Pickup,
    /// Shipped from the store.
    ShipFromStore,
}

/// How money moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum PaymentMethod {
    /// Cash (at the door when the entry names a delivery, else at the till).
    Cash,
    /// Card terminal.
    Card,
    /// Paid online when ordering.
    Online,
    /// Paid in the retailer's app.
    InApp,
    /// Charged to the customer's account.
    Account,
}

/// What a ledger entry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum EntryKind {
    /// Money received from the customer.
    Payment,
    /// Money paid back to the customer.
    Refund,
    /// Credit issued to the customer's account instead of a refund.
    StoreCredit,
}

/// Kind of proof of delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ProofKind {
    /// A signature drawn on the phone.
    Signature,
    /// A photo of the parcel at the door.
    Photo,
}

/// A device's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Role {
    /// A courier's phone: its own deliveries.
    Courier,
    /// A store tablet: its store's orders.
    Store,
    /// Dispatch and operations: everything.
    Dispatcher,
}

macro_rules! mirror_enum {
    ($ffi:ident <=> $core:path { $($v:ident),* $(,)? }) => {
        impl From<$ffi> for $core {
            fn from(v: $ffi) -> Self {
                use $core as C;
                match v { $($ffi::$v => C::$v),* }
            }
        }
        impl From<$core> for $ffi {
            fn from(v: $core) -> Self {
                use $core as C;
                match v { $(C::$v => $ffi::$v),* }
            }
        }
    };
}

mirror_enum!(Channel <=> m::Channel { Web, App, Pos, CallCentre, Social });
mirror_enum!(Fulfilment <=> m::Fulfilment { Delivery, Pickup, ShipFromStore });
mirror_enum!(PaymentMethod <=> m::PaymentMethod { Cash, Card, Online, InApp, Account });
mirror_enum!(EntryKind <=> m::EntryKind { Payment, Refund, StoreCredit });
mirror_enum!(ProofKind <=> m::ProofKind { Signature, Photo });
mirror_enum!(Role <=> waybill_core::Role { Courier, Store, Dispatcher });

/// A customer.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CustomerRecord {
    /// Customer id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Phone number (may be empty).
    pub phone: String,
    /// Address (may be empty).
    pub address: String,
}

impl From<CustomerRecord> for m::Customer {
    fn from(c: CustomerRecord) -> Self {
        Self {
            id: c.id,
            name: c.name,
            phone: c.phone,
            address: c.address,
        }
    }
}

impl From<m::Customer> for CustomerRecord {
    fn from(c: m::Customer) -> Self {
        Self {
            id: c.id,
            name: c.name,
            phone: c.phone,
            address: c.address,
        }
    }
}

/// An order line as handed in.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NewLineRecord {
    /// Stock keeping unit.
    pub sku: String,
    /// Product name.
    pub name: String,
    /// Quantity (positive).
    pub qty: i64,
    /// Price of one unit in minor units.
    pub unit_price: i64,
}

impl From<NewLineRecord> for m::NewLine {
    fn from(l: NewLineRecord) -> Self {
        Self {
            sku: l.sku,
            name: l.name,
            qty: l.qty,
            unit_price: l.unit_price,
        }
    }
}

/// An order as handed in (the typed twin of the order JSON).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NewOrderRecord {
    /// The retailer's order number (`S1-000123`).
    pub number: String,
    /// Sales channel.
    pub channel: Channel,
    /// Owning store id.
    pub store: String,
    /// The customer.
    pub customer: CustomerRecord,
    /// ISO 4217 currency code.
    pub currency: String,
    /// How it reaches the customer.
    pub fulfilment: Fulfilment,
    /// At least one line.
    pub lines: Vec<NewLineRecord>,
    /// An opening note.
    pub note: Option<String>,
}

impl From<NewOrderRecord> for m::NewOrder {
    fn from(o: NewOrderRecord) -> Self {
        Self {
            number: o.number,
            channel: o.channel.into(),
            store: o.store,
            customer: o.customer.into(),
            currency: o.currency,
            fulfilment: o.fulfilment.into(),
            lines: o.lines.into_iter().map(Into::into).collect(),
            note: o.note,
        }
    }
}

/// A point on the map.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct GeoPointRecord {
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Accuracy radius in metres, if known.
    pub accuracy_m: Option<f64>,
}

impl From<GeoPointRecord> for m::GeoPoint {
    fn from(p: GeoPointRecord) -> Self {
        Self {
            lat: p.lat,
            lon: p.lon,
            accuracy_m: p.accuracy_m,
        }
    }
}

impl From<m::GeoPoint> for GeoPointRecord {
    fn from(p: m::GeoPoint) -> Self {
        Self {
            lat: p.lat,
            lon: p.lon,
            accuracy_m: p.accuracy_m,
        }
    }
}

/// Details of a status event.
#[derive(Debug, Clone, PartialEq, Default, uniffi::Record)]
pub struct EventDetailsRecord {
    /// Free text.
    pub note: Option<String>,
    /// Where it happened.
    pub location: Option<GeoPointRecord>,
    /// For `conflict_resolved`: the outcome chosen, as an event kind name.
    pub resolution: Option<String>,
}

impl From<EventDetailsRecord> for EventDetails {
    fn from(d: EventDetailsRecord) -> Self {
        Self {
            note: d.note,
            location: d.location.map(Into::into),
            resolution: d.resolution,
        }
    }
}

/// Where a delivery goes.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct StopRecord {
    /// Street address.
    pub address: String,
    /// Coordinates, if known.
    pub geo: Option<GeoPointRecord>,
    /// Who to ask for.
    pub contact_name: Option<String>,
    /// Their phone.
    pub contact_phone: Option<String>,
}

impl From<StopRecord> for m::Stop {
    fn from(s: StopRecord) -> Self {
        Self {
            address: s.address,
            geo: s.geo.map(Into::into),
            contact_name: s.contact_name,
            contact_phone: s.contact_phone,
        }
    }
}

impl From<m::Stop> for StopRecord {
    fn from(s: m::Stop) -> Self {
        Self {
            address: s.address,
            geo: s.geo.map(Into::into),
            contact_name: s.contact_name,
            contact_phone: s.contact_phone,
        }
    }
}

/// A promised delivery window (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct TimeWindowRecord {
    /// Start.
    pub start_ms: i64,
    /// End.
    pub end_ms: i64,
}

impl From<TimeWindowRecord> for m::TimeWindow {
    fn from(w: TimeWindowRecord) -> Self {
        Self {
            start_ms: w.start_ms,
            end_ms: w.end_ms,
        }
    }
}

impl From<m::TimeWindow> for TimeWindowRecord {
    fn from(w: m::TimeWindow) -> Self {
        Self {
            start_ms: w.start_ms,
            end_ms: w.end_ms,
        }
    }
}

/// A money movement as handed in (payments, refunds, store credit).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NewLedgerEntryRecord {
    /// Payment, refund or store credit.
    pub kind: EntryKind,
    /// How the money moved.
    pub method: PaymentMethod,
    /// Positive amount in minor units.
    pub amount: i64,
    /// Must equal the order's currency.
    pub currency: String,
    /// The delivery at whose door it was collected, if any.
    pub delivery_id: Option<String>,
    /// Terminal or bank reference.
    pub reference: Option<String>,
}

impl From<NewLedgerEntryRecord> for m::NewLedgerEntry {
    fn from(e: NewLedgerEntryRecord) -> Self {
        Self {
            kind: e.kind.into(),
            method: e.method.into(),
            amount: e.amount,
            currency: e.currency,
            delivery_id: e.delivery_id,
            reference: e.reference,
        }
    }
}

/// A returned SKU and quantity.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ReturnLineRecord {
    /// Stock keeping unit (must be on the order).
    pub sku: String,
    /// Quantity returned.
    pub qty: i64,
}

impl From<ReturnLineRecord> for m::ReturnLine {
    fn from(l: ReturnLineRecord) -> Self {
        Self {
            sku: l.sku,
            qty: l.qty,
        }
    }
}

impl From<m::ReturnLine> for ReturnLineRecord {
    fn from(l: m::ReturnLine) -> Self {
        Self {
            sku: l.sku,
            qty: l.qty,
        }
    }
}

/// An order line as stored.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct OrderLineRecord {
    /// Line id.
    pub id: String,
    /// Stock keeping unit.
    pub sku: String,
    /// Product name.
    pub name: String,
    /// Quantity.
    pub qty: i64,
    /// Price of one unit in minor units.
    pub unit_price: i64,
    /// `qty × unit_price`.
    pub total: i64,
}

impl From<m::OrderLine> for OrderLineRecord {
    fn from(l: m::OrderLine) -> Self {
        Self {
            total: l.total(),
            id: l.id,
            sku: l.sku,
            name: l.name,
            qty: l.qty,
            unit_price: l.unit_price,
        }
    }
}

/// A ledger entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct LedgerEntryRecord {
    /// Entry id.
    pub id: String,
    /// Payment, refund or store credit.
    pub kind: EntryKind,
    /// How the money moved.
    pub method: PaymentMethod,
    /// Amount in minor units.
    pub amount: i64,
    /// Currency.
    pub currency: String,
    /// The delivery at whose door it was collected, if any.
    pub delivery_id: Option<String>,
    /// Terminal or bank reference.
    pub reference: Option<String>,
    /// Recording device.
    pub actor: String,
    /// When (Unix ms).
    pub at_ms: i64,
}

impl From<m::LedgerEntry> for LedgerEntryRecord {
    fn from(e: m::LedgerEntry) -> Self {
        Self {
            id: e.id,
            kind: e.kind.into(),
            method: e.method.into(),
            amount: e.amount,
            currency: e.currency,
            delivery_id: e.delivery_id,
            reference: e.reference,
            actor: e.actor,
            at_ms: e.at.wall_ms,
        }
    }
}

/// A return as stored.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ReturnEntryRecord {
    /// Return id.
    pub id: String,
    /// What came back.
    pub lines: Vec<ReturnLineRecord>,
    /// Why.
    pub reason: String,
    /// Doorstep return on this delivery, if any.
    pub delivery_id: Option<String>,
    /// Recording device.
    pub actor: String,
    /// When (Unix ms).
    pub at_ms: i64,
}

impl From<m::ReturnEntry> for ReturnEntryRecord {
    fn from(r: m::ReturnEntry) -> Self {
        Self {
            id: r.id,
            lines: r.lines.into_iter().map(Into::into).collect(),
            reason: r.reason,
            delivery_id: r.delivery_id,
            actor: r.actor,
            at_ms: r.at.wall_ms,
        }
    }
}

/// The derived balance of an order, in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct BalanceRecord {
    /// Sum of the lines.
    pub total: i64,
    /// Value of returned goods.
    pub returned: i64,
    /// Payments received.
    pub paid: i64,
    /// Refunds paid out.
    pub refunded: i64,
    /// Store credit issued.
    pub credited: i64,
    /// `total − returned − paid + refunded + credited`.
    pub due: i64,
}

impl From<m::Balance> for BalanceRecord {
    fn from(b: m::Balance) -> Self {
        Self {
            total: b.total,
            returned: b.returned,
            paid: b.paid,
            refunded: b.refunded,
            credited: b.credited,
            due: b.due,
        }
    }
}

/// One event in a document's timeline.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct TimelineEntryRecord {
    /// Event id.
    pub id: String,
    /// Kind name (`confirmed`, `picked_up`…).
    pub kind: String,
    /// Recording device.
    pub actor: String,
    /// When (Unix ms, as the recording device knew it).
    pub at_ms: i64,
    /// Where.
    pub location: Option<GeoPointRecord>,
    /// Note.
    pub note: Option<String>,
    /// For `conflict_resolved`: the outcome chosen.
    pub resolution: Option<String>,
    /// For `assigned`: the courier.
    pub courier: Option<String>,
}

impl From<TimelineEntry> for TimelineEntryRecord {
    fn from(e: TimelineEntry) -> Self {
        Self {
            id: e.id,
            kind: e.kind,
            actor: e.actor,
            at_ms: e.at.wall_ms,
            location: e.location.map(Into::into),
            note: e.note,
            resolution: e.resolution,
            courier: e.courier,
        }
    }
}

/// One side of a conflict.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ConflictingEventRecord {
    /// Event id.
    pub id: String,
    /// Kind name.
    pub kind: String,
    /// Recording device.
    pub actor: String,
    /// When (Unix ms).
    pub at_ms: i64,
}

impl From<ConflictingEvent> for ConflictingEventRecord {
    fn from(e: ConflictingEvent) -> Self {
        Self {
            id: e.id,
            kind: e.kind,
            actor: e.actor,
            at_ms: e.at.wall_ms,
        }
    }
}

/// Two concurrent events that contradict each other; a dispatcher resolves it
/// with `conflict_resolved`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ConflictRecord {
    /// The earlier of the two in linear order.
    pub first: ConflictingEventRecord,
    /// The later.
    pub second: ConflictingEventRecord,
}

impl From<m::Conflict> for ConflictRecord {
    fn from(c: m::Conflict) -> Self {
        Self {
            first: c.first.into(),
            second: c.second.into(),
        }
    }
}

/// A local change the relay refused, as a detail view shows it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RefusedRecord {
    /// The relay's code (`Forbidden`…).
    pub code: String,
    /// The relay's reason.
    pub reason: String,
    /// When the refusal arrived (Unix ms).
    pub refused_ms: i64,
}

impl From<RefusedView> for RefusedRecord {
    fn from(r: RefusedView) -> Self {
        Self {
            code: r.code,
            reason: r.reason,
            refused_ms: r.refused_ms,
        }
    }
}

/// A local change the relay refused, as `refused_changes` lists it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RefusedChangeRecord {
    /// The document it changes.
    pub doc_id: String,
    /// Automerge change hash, hex.
    pub hash: String,
    /// The relay's code.
    pub code: String,
    /// The relay's reason.
    pub reason: String,
    /// When the refusal arrived (Unix ms).
    pub refused_ms: i64,
}

impl From<RefusedChange> for RefusedChangeRecord {
    fn from(r: RefusedChange) -> Self {
        Self {
            doc_id: r.doc_id,
            hash: r.hash.iter().map(|b| format!("{b:02x}")).collect(),
            code: r.code,
            reason: r.reason,
            refused_ms: r.refused_ms,
        }
    }
}

/// Everything about an order, for a detail screen.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct OrderDetails {
    /// Document id (`ord_…`).
    pub id: String,
    /// Order number.
    pub number: String,
    /// Sales channel.
    pub channel: Channel,
    /// Owning store.
    pub store: String,
    /// Customer.
    pub customer: CustomerRecord,
    /// Currency.
    pub currency: String,
    /// Fulfilment method.
    pub fulfilment: Fulfilment,
    /// Derived status (`placed`, `confirmed`… `completed`; `conflict` while one is open).
    pub status: String,
    /// Sum of the lines (minor units).
    pub total: i64,
    /// What the customer still owes (minor units).
    pub balance_due: i64,
    /// The whole derived balance.
    pub balance: BalanceRecord,
    /// Lines.
    pub lines: Vec<OrderLineRecord>,
    /// Delivery ids.
    pub deliveries: Vec<String>,
    /// Payments, refunds and store credit.
    pub payments: Vec<LedgerEntryRecord>,
    /// Returns.
    pub returns: Vec<ReturnEntryRecord>,
    /// Notes.
    pub notes: String,
    /// Open conflicts.
    pub conflicts: Vec<ConflictRecord>,
    /// Events in timeline order.
    pub timeline: Vec<TimelineEntryRecord>,
    /// Creation time (Unix ms).
    pub created_ms: i64,
    /// Creating device.
    pub created_by: String,
    /// Local changes to this order the relay refused.
    pub refused: Vec<RefusedRecord>,
}

fn list<A, B: From<A>>(v: Vec<A>) -> Vec<B> {
    v.into_iter().map(Into::into).collect()
}

fn ms(at: Hlc) -> i64 {
    at.wall_ms
}

impl From<OrderView> for OrderDetails {
    fn from(v: OrderView) -> Self {
        Self {
            id: v.id,
            number: v.number,
            channel: v.channel.into(),
            store: v.store,
            customer: v.customer.into(),
            currency: v.currency,
            fulfilment: v.fulfilment.into(),
            status: v.status,
            total: v.balance.total,
            balance_due: v.balance.due,
            balance: v.balance.into(),
            lines: list(v.lines),
            deliveries: v.deliveries,
            payments: list(v.payments),
            returns: list(v.returns),
            notes: v.notes,
            conflicts: list(v.conflicts),
            timeline: list(v.timeline),
            created_ms: ms(v.created_at),
            created_by: v.created_by,
            refused: list(v.refused),
        }
    }
}

/// A proof of delivery reference.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ProofRecord {
    /// Proof id.
    pub id: String,
    /// Signature or photo.
    pub kind: ProofKind,
    /// Content address of the blob.
    pub blob: String,
    /// MIME type.
    pub media_type: String,
    /// Recording device.
    pub actor: String,
    /// When (Unix ms).
    pub at_ms: i64,
}

impl From<m::ProofRef> for ProofRecord {
    fn from(p: m::ProofRef) -> Self {
        Self {
            id: p.id,
            kind: p.kind.into(),
            blob: p.blob,
            media_type: p.media_type,
            actor: p.actor,
            at_ms: p.at.wall_ms,
        }
    }
}

/// Everything about a delivery, for a detail screen.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct DeliveryDetails {
    /// Document id (`dlv_…`).
    pub id: String,
    /// Its order.
    pub order_id: String,
    /// The store it leaves from.
    pub store: String,
    /// Current courier.
    pub courier: Option<String>,
    /// Where to go.
    pub stop: StopRecord,
    /// Promised window.
    pub window: Option<TimeWindowRecord>,
    /// Derived status (`assigned`, `picked_up`… `delivered`).
    pub status: String,
    /// Open conflicts.
    pub conflicts: Vec<ConflictRecord>,
    /// Failed attempts so far.
    pub failed_attempts: u32,
    /// Proof of delivery references.
    pub proofs: Vec<ProofRecord>,
    /// Notes.
    pub notes: String,
    /// Events in timeline order.
    pub timeline: Vec<TimelineEntryRecord>,
    /// Local changes to this delivery the relay refused.
    pub refused: Vec<RefusedRecord>,
}

impl From<DeliveryView> for DeliveryDetails {
    fn from(v: DeliveryView) -> Self {
        Self {
            id: v.id,
            order_id: v.order_id,
            store: v.store,
            courier: v.courier,
            stop: v.stop.into(),
            window: v.window.map(Into::into),
            status: v.status,
            conflicts: list(v.conflicts),
            failed_attempts: u32::try_from(v.failed_attempts).unwrap_or(u32::MAX),
            proofs: list(v.proofs),
            notes: v.notes,
            timeline: list(v.timeline),
            refused: list(v.refused),
        }
    }
}

/// An order as a list shows it (from the index, without loading the document).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct OrderSummary {
    /// Document id.
    pub id: String,
    /// Order number.
    pub number: String,
    /// Owning store.
    pub store: String,
    /// Sales channel name.
    pub channel: String,
    /// Fulfilment method name.
    pub fulfilment: String,
    /// Derived status.
    pub status: String,
    /// Customer id.
    pub customer_id: String,
    /// Customer name.
    pub customer_name: String,
    /// Currency.
    pub currency: String,
    /// Sum of the lines.
    pub total: i64,
    /// What is still owed.
    pub balance_due: i64,
    /// Creation time (Unix ms).
    pub created_ms: i64,
    /// Last change (Unix ms).
    pub updated_ms: i64,
}

impl From<OrderRow> for OrderSummary {
    fn from(r: OrderRow) -> Self {
        Self {
            id: r.doc_id,
            number: r.number,
            store: r.store,
            channel: r.channel,
            fulfilment: r.fulfilment,
            status: r.status,
            customer_id: r.customer_id,
            customer_name: r.customer_name,
            currency: r.currency,
            total: r.total,
            balance_due: r.balance_due,
            created_ms: r.created_ms,
            updated_ms: r.updated_ms,
        }
    }
}

/// A delivery as a list shows it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DeliverySummary {
    /// Document id.
    pub id: String,
    /// Its order.
    pub order_id: String,
    /// The store it leaves from.
    pub store: String,
    /// Current courier.
    pub courier: Option<String>,
    /// Derived status.
    pub status: String,
    /// Window start (Unix ms).
    pub window_start_ms: Option<i64>,
    /// Window end (Unix ms).
    pub window_end_ms: Option<i64>,
    /// Last change (Unix ms).
    pub updated_ms: i64,
}

impl From<DeliveryRow> for DeliverySummary {
    fn from(r: DeliveryRow) -> Self {
        Self {
            id: r.doc_id,
            order_id: r.order_id,
            store: r.store,
            courier: r.courier,
            status: r.status,
            window_start_ms: r.window_start,
            window_end_ms: r.window_end,
            updated_ms: r.updated_ms,
        }
    }
}

/// Filters for listing orders; unset fields do not filter.
#[derive(Debug, Clone, PartialEq, Eq, Default, uniffi::Record)]
pub struct OrderFilter {
    /// Owning store.
    pub store: Option<String>,
    /// Derived status name.
    pub status: Option<String>,
    /// Sales channel name.
    pub channel: Option<String>,
    /// Customer id.
    pub customer_id: Option<String>,
    /// Substring of the order number or customer name (case-insensitive).
    pub text: Option<String>,
    /// At most this many (default 100).
    pub limit: Option<u32>,
}

impl From<OrderFilter> for waybill_core::store::query::OrderQuery {
    fn from(f: OrderFilter) -> Self {
        Self {
            store: f.store,
            status: f.status,
            channel: f.channel,
            customer_id: f.customer_id,
            text: f.text,
            limit: f.limit,
        }
    }
}

/// Filters for listing deliveries; unset fields do not filter.
#[derive(Debug, Clone, PartialEq, Eq, Default, uniffi::Record)]
pub struct DeliveryFilter {
    /// Current courier.
    pub courier: Option<String>,
    /// Derived status name.
    pub status: Option<String>,
    /// The store it leaves from.
    pub store: Option<String>,
    /// Its order.
    pub order_id: Option<String>,
    /// Window starting at or after this time (Unix ms).
    pub due_from_ms: Option<i64>,
    /// Window starting before this time (Unix ms).
    pub due_before_ms: Option<i64>,
    /// At most this many (default 100).
    pub limit: Option<u32>,
}

impl From<DeliveryFilter> for waybill_core::store::query::DeliveryQuery {
    fn from(f: DeliveryFilter) -> Self {
        Self {
            courier: f.courier,
            status: f.status,
            store: f.store,
            order_id: f.order_id,
            due_from_ms: f.due_from_ms,
            due_before_ms: f.due_before_ms,
            limit: f.limit,
        }
    }
}

/// Cash collected at the door in one currency.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CashTotal {
    /// Currency.
    pub currency: String,
    /// Amount in minor units.
    pub amount: i64,
}
