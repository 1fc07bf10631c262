//! The relay's write rules, checked on the *effect* of a change.
//!
//! A device can upload any Automerge change it likes; the typed mutations in
//! `replica::mutations` are only what an honest build does. So the relay does not ask
//! "which mutation was this?" but "what did it do to the document?": it reads the
//! document before and after the change and compares the typed values. A change is
//! accepted when every difference is one the device's role may make.
//!
//! Rules for everyone (dispatchers included):
//!
//! | what | rule |
//! |---|---|
//! | identity: kind, `id`, `type`, `schema_version`, `created_at`, `created_by` | never changes; a new document names this device as `created_by` |
//! | `events`, `payments`, `returns`, `proofs` | append-only: every entry of `before` is still in `after`, unchanged (found by id, then compared by value); an id never carries two different values; new entries name this device as `actor` |
//! | new ledger entries | positive amount, in the order's currency |
//! | order `currency` | fixed once the ledger has entries (changing it would re-denominate money already recorded) |
//! | `notes` | insert only: `before` is a subsequence of `after` (dispatchers exempt) |
//!
//! What each role may do on top of that (checked after the rules for everyone, so the
//! first violation reported is deterministic):
//!
//! | role | document | may |
//! |---|---|---|
//! | courier `C` | any | never create a document |
//! | courier `C` | order | only if one of its `deliveries` is assigned to `C` (the relay's [`Facts::courier_of`]): append payments of kind `payment` and returns, each with a `delivery_id` of such a delivery; append event `completed` (what its `delivered` appends) and `return_requested` (only together with a new return, as a doorstep return appends); append notes. Nothing else: number, channel, store, customer, currency, fulfilment, lines, deliveries unchanged; no refunds, no store credit |
//! | courier `C` | delivery | only if `before`'s own event fold names `C` as the courier (the relay's facts only when the fold names nobody): append events except `assigned` and `conflict_resolved`; append proofs and notes. `order_id`, `store`, `stop`, `window` unchanged |
//! | store `S` | order | create one with store `S`; change one whose store is `S` before and after: any plain field but `store`; append order events except `conflict_resolved`, payments not collected at a door (no `delivery_id`, any method), refunds, store credit, returns, notes |
//! | store `S` | delivery | create or change one whose store is `S` before and after, never for an order the relay knows as another store's ([`Facts::store_of_order`]; an order not yet at the relay is let through, see [`check_effect`]) whenever `order_id` is set or changed; append events `assigned` and `returned_to_store`, notes; change stop and window; no proofs |
//! | dispatcher | any | anything the rules for everyone allow (including rewriting notes and resolving conflicts) |
//!
//! Every refusal is [`ModelError::Forbidden`] (except a malformed new ledger entry:
//! [`ModelError::CurrencyMismatch`] or [`ModelError::InvalidInput`]), saying what was
//! touched by field name and entry or document id, never by personal data.

use super::delivery::{Delivery, DeliveryEventKind, ProofRef};
use super::document::Document;
use super::error::ModelError;
use super::event::StatusEvent;
use super::money::{EntryKind, LedgerEntry};
use super::order::{Order, OrderEventKind, ReturnEntry};
use crate::hlc::Hlc;
use crate::identity::{DeviceIdentity, Role};
use std::collections::{HashMap, HashSet};

/// Facts the rules need that live outside the document (the relay knows them).
pub trait Facts {
    /// The courier currently assigned to a delivery, if the relay knows the delivery.
    fn courier_of(&self, delivery_id: &str) -> Option<String>;
    /// The store of an order, if the relay knows the order.
    fn store_of_order(&self, order_id: &str) -> Option<String>;
}

/// Check that `identity` may turn `before` (None: the document is being created)
/// into `after`. Returns the first violation, as [`ModelError::Forbidden`] naming
/// what was touched (a malformed new ledger entry gets the model's own
/// [`ModelError::CurrencyMismatch`] or [`ModelError::InvalidInput`]). The rules are in
/// the module docs. Only what the typed schema reads is compared: keys a document
/// carries outside the schema are invisible here.
///
/// A store creating a delivery (or re-pointing one at another order) must not attach
/// it to an order the relay knows belongs to another store. When the relay does not
/// know the order yet (it may still be on its way: a full sync offers `dlv_…` before
/// `ord_…`), the delivery is let through: what a delivery exposes of an order is
/// governed by the order's own `deliveries` list, which only the order's store may
/// edit, so a delivery pointing at a foreign order gains nothing.
pub fn check_effect(
    identity: &DeviceIdentity,
    before: Option<&Document>,
    after: &Document,
    facts: &dyn Facts,
) -> Result<(), ModelError> {
    if before == Some(after) {
        // Nothing the schema can see changed (e.g. an empty change).
        return Ok(());
    }
    if before.is_none() && identity.role == Role::Courier {
        return Err(forbid(identity, "create documents"));
    }
    match (before, after) {
        (None, Document::Order(a)) => order_effect(identity, None, a, facts),
        (Some(Document::Order(b)), Document::Order(a)) => order_effect(identity, Some(b), a, facts),
        (None, Document::Delivery(a)) => delivery_effect(identity, None, a, facts),
        (Some(Document::Delivery(b)), Document::Delivery(a)) => {
            delivery_effect(identity, Some(b), a, facts)
        }
        (Some(b), a) => Err(forbid(
            identity,
            format!(
                "turn {} {} into a {}: a document's identity never changes",
                kind_name(b),
                doc_id(b),
                kind_name(a)
            ),
        )),
    }
}

fn forbid(who: &DeviceIdentity, action: impl Into<String>) -> ModelError {
    ModelError::Forbidden {
        role: who.role.as_str().to_owned(),
        action: action.into(),
    }
}

fn kind_name(doc: &Document) -> &'static str {
    match doc {
        Document::Order(_) => "order",
        Document::Delivery(_) => "delivery",
    }
}

fn doc_id(doc: &Document) -> &str {
    match doc {
        Document::Order(o) => &o.id,
        Document::Delivery(d) => &d.id,
    }
}

// ---------------------------------------------------------------------------------
// Orders
// ---------------------------------------------------------------------------------

/// What a change did to an order, once the rules for everyone have passed.
struct OrderChange<'a> {
    before: Option<&'a Order>,
    after: &'a Order,
    /// Appended status events.
    events: Vec<&'a StatusEvent<OrderEventKind>>,
    /// Appended ledger entries.
    payments: Vec<&'a LedgerEntry>,
    /// Appended returns.
    returns: Vec<&'a ReturnEntry>,
    /// Plain fields whose value changed (empty for a new order).
    fields: Vec<&'static str>,
}

fn order_effect(
    who: &DeviceIdentity,
    before: Option<&Order>,
    after: &Order,
    facts: &dyn Facts,
) -> Result<(), ModelError> {
    let change = OrderChange::new(who, before, after)?;
    match who.role {
        Role::Dispatcher => Ok(()),
        Role::Store => store_order(who, &change),
        Role::Courier => courier_order(who, &change, facts),
    }
}

impl<'a> OrderChange<'a> {
    /// Apply the rules for everyone and collect what changed.
    fn new(
        who: &DeviceIdentity,
        before: Option<&'a Order>,
        after: &'a Order,
    ) -> Result<Self, ModelError> {
        check_identity(
            who,
            before.map(Header::of_order).as_ref(),
            &Header::of_order(after),
        )?;
        let events = appended(
            who,
            Log::OrderEvents,
            before.map_or(&[][..], |o| &o.events[..]),
            &after.events,
        )?;
        let payments = appended(
            who,
            Log::Ledger,
            before.map_or(&[][..], |o| &o.payments[..]),
            &after.payments,
        )?;
        let returns = appended(
            who,
            Log::Returns,
            before.map_or(&[][..], |o| &o.returns[..]),
            &after.returns,
        )?;
        check_new_money(after, &payments)?;
        let mut fields = Vec::new();
        if let Some(b) = before {
            if b.currency != after.currency && !b.payments.is_empty() {
                return Err(forbid(
                    who,
                    format!(
                        "change the currency of order {} once it has ledger entries: \
                         money is append-only",
                        after.id
                    ),
                ));
            }
            check_notes(who, &after.id, b.notes.as_str(), after.notes.as_str())?;
            fields = changed_order_fields(b, after);
        }
        Ok(Self {
            before,
            after,
            events,
            payments,
            returns,
            fields,
        })
    }
}

/// The order's plain (non-log) fields that differ, by name.
fn changed_order_fields(b: &Order, a: &Order) -> Vec<&'static str> {
    [
        ("number", b.number != a.number),
        ("channel", b.channel != a.channel),
        ("store", b.store != a.store),
        ("customer", b.customer != a.customer),
        ("currency", b.currency != a.currency),
        ("fulfilment", b.fulfilment != a.fulfilment),
        ("lines", b.lines != a.lines),
        ("deliveries", b.deliveries != a.deliveries),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

/// New ledger entries must be well-formed money: the relay cannot trust the client's
/// own validation, and a zero, negative or foreign-currency entry would corrupt every
/// balance derived from the ledger.
fn check_new_money(order: &Order, new: &[&LedgerEntry]) -> Result<(), ModelError> {
    for entry in new {
        if entry.amount <= 0 {
            return Err(ModelError::invalid(
                format!("payments[{}].amount", entry.id),
                "must be a positive number of minor units",
            ));
        }
        if entry.currency != order.currency {
            return Err(ModelError::CurrencyMismatch {
                expected: order.currency.clone(),
                got: entry.currency.clone(),
            });
        }
    }
    Ok(())
}

/// Store staff: their own store's orders, anything but resolving conflicts and
/// collecting money at a courier's door.
fn store_order(who: &DeviceIdentity, c: &OrderChange<'_>) -> Result<(), ModelError> {
    let store = own_store(who)?;
    if c.before.is_some_and(|b| b.store != store) {
        return Err(forbid(
            who,
            format!("change order {} of another store", c.after.id),
        ));
    }
    if c.after.store != store {
        return Err(forbid(
            who,
            match c.before {
                Some(_) => format!("move order {} to another store", c.after.id),
                None => "create an order for another store".to_owned(),
            },
        ));
    }
    if let Some(e) = c
        .events
        .iter()
        .find(|e| e.kind == OrderEventKind::ConflictResolved)
    {
        return Err(forbid(
            who,
            format!(
                "record order event `conflict_resolved` ({}): only a dispatcher resolves conflicts",
                e.id
            ),
        ));
    }
    // A payment naming a delivery was collected at that delivery's door, by its courier.
    if let Some(p) = c
        .payments
        .iter()
        .find(|p| p.kind == EntryKind::Payment && p.delivery_id.is_some())
    {
        return Err(forbid(
            who,
            format!(
                "record payment {} as collected at a delivery's door: only its courier does",
                p.id
            ),
        ));
    }
    Ok(())
}

/// Couriers: on an order with one of their deliveries, only what their doorstep work
/// appends (door payments, doorstep returns, `completed` from `delivered`, notes).
fn courier_order(
    who: &DeviceIdentity,
    c: &OrderChange<'_>,
    facts: &dyn Facts,
) -> Result<(), ModelError> {
    let courier = own_courier(who)?;
    let Some(before) = c.before else {
        return Err(forbid(who, "create documents"));
    };
    // The order document does not name couriers: its deliveries do, and the relay
    // knows who each is assigned to.
    let mine: Vec<&str> = before
        .deliveries
        .iter()
        .filter(|d| facts.courier_of(d).as_deref() == Some(courier))
        .map(String::as_str)
        .collect();
    if mine.is_empty() {
        return Err(forbid(
            who,
            format!(
                "change order {}: none of its deliveries is assigned to this courier",
                before.id
            ),
        ));
    }
    if let Some(field) = c.fields.first() {
        return Err(forbid(who, format!("change order {field}")));
    }
    let at_my_door =
        |delivery: &Option<String>| delivery.as_deref().is_some_and(|d| mine.contains(&d));
    for p in &c.payments {
        if p.kind != EntryKind::Payment {
            return Err(forbid(
                who,
                format!("record {} {}", p.kind.as_str().replace('_', " "), p.id),
            ));
        }
        if !at_my_door(&p.delivery_id) {
            return Err(forbid(
                who,
                format!(
                    "record payment {} other than at the door of its own delivery",
                    p.id
                ),
            ));
        }
    }
    for r in &c.returns {
        if !at_my_door(&r.delivery_id) {
            return Err(forbid(
                who,
                format!(
                    "start return {} other than at the door of its own delivery",
                    r.id
                ),
            ));
        }
    }
    for e in &c.events {
        let implied = match e.kind {
            // `delivered` on its delivery completes the order.
            OrderEventKind::Completed => true,
            // A doorstep return appends the return and `return_requested` together.
            OrderEventKind::ReturnRequested => !c.returns.is_empty(),
            _ => false,
        };
        if !implied {
            return Err(forbid(
                who,
                format!("record order event `{}` ({})", e.kind.as_str(), e.id),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Deliveries
// ---------------------------------------------------------------------------------

/// What a change did to a delivery, once the rules for everyone have passed.
struct DeliveryChange<'a> {
    before: Option<&'a Delivery>,
    after: &'a Delivery,
    /// Appended status events.
    events: Vec<&'a StatusEvent<DeliveryEventKind>>,
    /// Appended proofs of delivery.
    proofs: Vec<&'a ProofRef>,
    /// Plain fields whose value changed (empty for a new delivery).
    fields: Vec<&'static str>,
}

fn delivery_effect(
    who: &DeviceIdentity,
    before: Option<&Delivery>,
    after: &Delivery,
    facts: &dyn Facts,
) -> Result<(), ModelError> {
    let change = DeliveryChange::new(who, before, after)?;
    match who.role {
        Role::Dispatcher => Ok(()),
        Role::Store => store_delivery(who, &change, facts),
        Role::Courier => courier_delivery(who, &change, facts),
    }
}

impl<'a> DeliveryChange<'a> {
    /// Apply the rules for everyone and collect what changed.
    fn new(
        who: &DeviceIdentity,
        before: Option<&'a Delivery>,
        after: &'a Delivery,
    ) -> Result<Self, ModelError> {
        check_identity(
            who,
            before.map(Header::of_delivery).as_ref(),
            &Header::of_delivery(after),
        )?;
        let events = appended(
            who,
            Log::DeliveryEvents,
            before.map_or(&[][..], |d| &d.events[..]),
            &after.events,
        )?;
        let proofs = appended(
            who,
            Log::Proofs,
            before.map_or(&[][..], |d| &d.proofs[..]),
            &after.proofs,
        )?;
        let mut fields = Vec::new();
        if let Some(b) = before {
            check_notes(who, &after.id, b.notes.as_str(), after.notes.as_str())?;
            fields = [
                ("order_id", b.order_id != after.order_id),
                ("store", b.store != after.store),
                ("stop", b.stop != after.stop),
                ("window", b.window != after.window),
            ]
            .into_iter()
            .filter_map(|(name, changed)| changed.then_some(name))
            .collect();
        }
        Ok(Self {
            before,
            after,
            events,
            proofs,
            fields,
        })
    }
}

/// Store staff: their store's deliveries, for their store's orders; they assign
/// couriers and take parcels back, but the doorstep is the courier's.
fn store_delivery(
    who: &DeviceIdentity,
    c: &DeliveryChange<'_>,
    facts: &dyn Facts,
) -> Result<(), ModelError> {
    let store = own_store(who)?;
    let id = &c.after.id;
    if c.before.is_some_and(|b| b.store != store) {
        return Err(forbid(
            who,
            format!("change delivery {id} of another store"),
        ));
    }
    if c.after.store != store {
        return Err(forbid(
            who,
            match c.before {
                Some(_) => format!("move delivery {id} to another store"),
                None => "create a delivery for another store".to_owned(),
            },
        ));
    }
    // The delivery's own `store` field was written by this device; which order it
    // serves must be checked against what the relay knows (see `check_effect`).
    if c.before.is_none_or(|b| b.order_id != c.after.order_id) {
        match facts.store_of_order(&c.after.order_id) {
            Some(s) if s == store => {}
            Some(_) => {
                return Err(forbid(
                    who,
                    format!("attach delivery {id} to an order of another store"),
                ));
            }
            // The order has not reached the relay yet (a full sync offers documents
            // in id order, `dlv_` before `ord_`). Nothing leaks by letting it
            // through: who sees an order, and who may pay on it, follows the order's
            // own `deliveries` list, which only its store can edit.
            None => {}
        }
    }
    if let Some(e) = c.events.iter().find(|e| {
        !matches!(
            e.kind,
            DeliveryEventKind::Assigned | DeliveryEventKind::ReturnedToStore
        )
    }) {
        return Err(forbid(
            who,
            format!(
                "record delivery event `{}` ({}): only the courier (or a dispatcher) does",
                e.kind.as_str(),
                e.id
            ),
        ));
    }
    if let Some(p) = c.proofs.first() {
        return Err(forbid(
            who,
            format!("attach proof of delivery {}: only the courier does", p.id),
        ));
    }
    Ok(())
}

/// Couriers: their own stop's status, proofs and notes; nothing about where, when or
/// for whom.
fn courier_delivery(
    who: &DeviceIdentity,
    c: &DeliveryChange<'_>,
    facts: &dyn Facts,
) -> Result<(), ModelError> {
    let courier = own_courier(who)?;
    let Some(before) = c.before else {
        return Err(forbid(who, "create documents"));
    };
    // The assignee the change was made against: the document's own fold is
    // authoritative; the relay's index only when the fold names nobody.
    let assignee = before.courier().or_else(|| facts.courier_of(&before.id));
    if assignee.as_deref() != Some(courier) {
        return Err(forbid(
            who,
            format!(
                "change delivery {}: it is not assigned to this courier",
                before.id
            ),
        ));
    }
    if let Some(field) = c.fields.first() {
        return Err(forbid(who, format!("change delivery {field}")));
    }
    for e in &c.events {
        let why = match e.kind {
            DeliveryEventKind::Assigned => "only store staff or a dispatcher assign couriers",
            DeliveryEventKind::ConflictResolved => "only a dispatcher resolves conflicts",
            _ => continue,
        };
        return Err(forbid(
            who,
            format!(
                "record delivery event `{}` ({}): {why}",
                e.kind.as_str(),
                e.id
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Rules for everyone
// ---------------------------------------------------------------------------------

fn own_store(who: &DeviceIdentity) -> Result<&str, ModelError> {
    who.store_id
        .as_deref()
        .ok_or_else(|| forbid(who, "change documents: its credential names no store"))
}

fn own_courier(who: &DeviceIdentity) -> Result<&str, ModelError> {
    who.courier_id
        .as_deref()
        .ok_or_else(|| forbid(who, "change documents: its credential names no courier"))
}

/// The fields that say which document this is and who made it.
struct Header<'a> {
    id: &'a str,
    doc_type: &'a str,
    schema_version: i64,
    created_at: Hlc,
    created_by: &'a str,
}

impl<'a> Header<'a> {
    fn of_order(o: &'a Order) -> Self {
        Header {
            id: &o.id,
            doc_type: &o.doc_type,
            schema_version: o.schema_version,
            created_at: o.created_at,
            created_by: &o.created_by,
        }
    }

    fn of_delivery(d: &'a Delivery) -> Self {
        Header {
            id: &d.id,
            doc_type: &d.doc_type,
            schema_version: d.schema_version,
            created_at: d.created_at,
            created_by: &d.created_by,
        }
    }
}

/// A document's identity never changes; a new one is created in this device's name.
fn check_identity(
    who: &DeviceIdentity,
    before: Option<&Header<'_>>,
    after: &Header<'_>,
) -> Result<(), ModelError> {
    let Some(b) = before else {
        if after.created_by != who.device_id {
            return Err(forbid(
                who,
                format!(
                    "create {} in another device's name (created_by is not this device)",
                    after.id
                ),
            ));
        }
        return Ok(());
    };
    let changed = [
        ("id", b.id != after.id),
        ("type", b.doc_type != after.doc_type),
        ("schema_version", b.schema_version != after.schema_version),
        ("created_at", b.created_at != after.created_at),
        ("created_by", b.created_by != after.created_by),
    ]
    .into_iter()
    .find_map(|(name, changed)| changed.then_some(name));
    match changed {
        Some(field) => Err(forbid(
            who,
            format!(
                "change the {field} of {}: a document's identity never changes",
                b.id
            ),
        )),
        None => Ok(()),
    }
}

/// An entry of an append-only list.
trait Entry: PartialEq {
    fn id(&self) -> &str;
    fn actor(&self) -> &str;
}

impl<K: PartialEq> Entry for StatusEvent<K> {
    fn id(&self) -> &str {
        &self.id
    }
    fn actor(&self) -> &str {
        &self.actor
    }
}

impl Entry for LedgerEntry {
    fn id(&self) -> &str {
        &self.id
    }
    fn actor(&self) -> &str {
        &self.actor
    }
}

impl Entry for ReturnEntry {
    fn id(&self) -> &str {
        &self.id
    }
    fn actor(&self) -> &str {
        &self.actor
    }
}

impl Entry for ProofRef {
    fn id(&self) -> &str {
        &self.id
    }
    fn actor(&self) -> &str {
        &self.actor
    }
}

/// The append-only lists, for messages.
#[derive(Clone, Copy)]
enum Log {
    OrderEvents,
    DeliveryEvents,
    Ledger,
    Returns,
    Proofs,
}

impl Log {
    /// What one entry is called.
    fn entry(self) -> &'static str {
        match self {
            Log::OrderEvents => "order event",
            Log::DeliveryEvents => "delivery event",
            Log::Ledger => "ledger entry",
            Log::Returns => "return",
            Log::Proofs => "proof of delivery",
        }
    }

    /// Why it may not be edited.
    fn rule(self) -> &'static str {
        match self {
            Log::OrderEvents | Log::DeliveryEvents => "the status log is append-only",
            Log::Ledger => "money is append-only",
            Log::Returns => "returns are append-only",
            Log::Proofs => "proof of delivery is append-only",
        }
    }
}

/// Check an append-only list and return the entries `after` adds, first occurrence of
/// each new id. Entries are matched by id, then compared by value. A second, different
/// value under an id is refused too: readers count an id once (first in list order
/// wins), so it would be an edit in disguise.
fn appended<'a, T: Entry>(
    who: &DeviceIdentity,
    log: Log,
    before: &[T],
    after: &'a [T],
) -> Result<Vec<&'a T>, ModelError> {
    let (entry, rule) = (log.entry(), log.rule());
    let mut old: HashMap<&str, Vec<&T>> = HashMap::new();
    for e in before {
        old.entry(e.id()).or_default().push(e);
    }
    let mut now: HashMap<&str, Vec<&T>> = HashMap::new();
    for e in after {
        now.entry(e.id()).or_default().push(e);
    }
    // Every old entry is still there, unchanged.
    for e in before {
        match now.get(e.id()) {
            None => return Err(forbid(who, format!("remove {entry} {}: {rule}", e.id()))),
            Some(values) if !values.contains(&e) => {
                return Err(forbid(who, format!("alter {entry} {}: {rule}", e.id())));
            }
            Some(_) => {}
        }
    }
    let mut fresh: Vec<&'a T> = Vec::new();
    let mut seen = HashSet::new();
    for e in after {
        match old.get(e.id()) {
            // A known id: only the values it already had.
            Some(values) if !values.contains(&e) => {
                return Err(forbid(who, format!("alter {entry} {}: {rule}", e.id())));
            }
            Some(_) => {}
            None if !seen.insert(e.id()) => {
                // A new id written twice must be the same entry twice.
                if fresh.iter().any(|f| f.id() == e.id() && *f != e) {
                    return Err(forbid(
                        who,
                        format!("write two different entries under {entry} id {}", e.id()),
                    ));
                }
            }
            None => {
                if e.actor() != who.device_id {
                    return Err(forbid(
                        who,
                        format!(
                            "record {entry} {} in another device's name (its actor is not this device)",
                            e.id()
                        ),
                    ));
                }
                fresh.push(e);
            }
        }
    }
    Ok(fresh)
}

/// Notes are shared text that only grows: nobody but a dispatcher deletes or rewrites
/// what someone else wrote.
///
/// The test is "`before` is a subsequence of `after`" (insertions only), not "`after`
/// starts with `before`": two devices appending concurrently both insert after the same
/// last character, and Automerge may order the second device's text *before* the
/// first's, so an honest append can land in the middle of what the relay already holds.
fn check_notes(
    who: &DeviceIdentity,
    doc_id: &str,
    before: &str,
    after: &str,
) -> Result<(), ModelError> {
    if who.role == Role::Dispatcher || is_subsequence(before, after) {
        return Ok(());
    }
    Err(forbid(
        who,
        format!("delete or rewrite the notes of {doc_id}: notes only grow"),
    ))
}

/// Whether every character of `part` appears in `whole`, in order.
fn is_subsequence(part: &str, whole: &str) -> bool {
    let mut rest = whole.chars();
    part.chars().all(|c| rest.any(|w| w == c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::DocId;
    use crate::model::document;
    use crate::model::{
        Channel, Customer, EventDetails, Fulfilment, NewDelivery, NewLedgerEntry, NewLine,
        NewOrder, NewProof, NewReturn, PaymentMethod, ProofKind, ReturnLine,
    };
    use crate::replica::{Replica, ReplicaOptions};
    use automerge::Automerge;
    use std::collections::BTreeMap;

    // --- devices and the relay's view -------------------------------------------

    fn device(identity: DeviceIdentity) -> Replica {
        Replica::open_in_memory(identity, ReplicaOptions::default()).unwrap()
    }

    fn tablet() -> Replica {
        device(DeviceIdentity::store("tab-1", "S1"))
    }

    fn phone(courier: &str) -> Replica {
        device(DeviceIdentity::courier(format!("phone-{courier}"), courier))
    }

    fn ops() -> Replica {
        device(DeviceIdentity::dispatcher("ops-1"))
    }

    /// Copy every document (all its changes) from one device to another.
    fn sync(from: &Replica, to: &Replica) {
        for id in from.doc_ids().unwrap() {
            let doc = Automerge::load(&from.export(&id).unwrap()).unwrap();
            let changes: Vec<Vec<u8>> = doc
                .get_changes(&[])
                .into_iter()
                .map(|c| c.raw_bytes().to_vec())
                .collect();
            to.apply_remote(&id, &changes).unwrap();
        }
    }

    /// Read a document the way the relay does: from saved Automerge bytes.
    fn read(r: &Replica, id: &DocId) -> Document {
        let doc = Automerge::load(&r.export(id).unwrap()).unwrap();
        document::read(id, &doc).unwrap()
    }

    fn snapshot(r: &Replica) -> BTreeMap<DocId, Document> {
        r.doc_ids()
            .unwrap()
            .into_iter()
            .map(|id| {
                let doc = read(r, &id);
                (id, doc)
            })
            .collect()
    }

    /// What the relay knows: its copy of every document.
    struct Known(BTreeMap<DocId, Document>);

    impl Known {
        fn of(r: &Replica) -> Self {
            Known(snapshot(r))
        }
    }

    impl Facts for Known {
        fn courier_of(&self, delivery_id: &str) -> Option<String> {
            self.0.values().find_map(|d| match d {
                Document::Delivery(d) if d.id == delivery_id => d.courier(),
                _ => None,
            })
        }
        fn store_of_order(&self, order_id: &str) -> Option<String> {
            self.0.values().find_map(|d| match d {
                Document::Order(o) if o.id == order_id => Some(o.store.clone()),
                _ => None,
            })
        }
    }

    /// The relay knows nothing.
    struct Nothing;

    impl Facts for Nothing {
        fn courier_of(&self, _: &str) -> Option<String> {
            None
        }
        fn store_of_order(&self, _: &str) -> Option<String> {
            None
        }
    }

    /// Run a legitimate mutation and check that the effect on every document it
    /// touched passes, with the relay knowing what the device knew beforehand.
    fn passes<T>(r: &Replica, mutate: impl FnOnce(&Replica) -> T) -> T {
        let before = snapshot(r);
        let out = mutate(r);
        let after = snapshot(r);
        let facts = Known(before.clone());
        let mut changed = 0;
        for (id, a) in &after {
            let b = before.get(id);
            if b == Some(a) {
                continue;
            }
            changed += 1;
            if let Err(e) = check_effect(r.identity(), b, a, &facts) {
                panic!("legitimate change of {id} refused: {e}");
            }
        }
        assert!(changed > 0, "the mutation changed nothing");
        out
    }

    /// Expect a refusal whose message contains `reason`.
    fn refused(
        who: &DeviceIdentity,
        before: Option<&Document>,
        after: &Document,
        facts: &dyn Facts,
        reason: &str,
    ) {
        match check_effect(who, before, after, facts) {
            Err(e @ ModelError::Forbidden { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(reason), "{msg:?} does not say {reason:?}");
                assert!(
                    !msg.contains("Leila") && !msg.contains("Vali-Asr") && !msg.contains("+98"),
                    "personal data in {msg:?}"
                );
            }
            other => panic!("expected a refusal saying {reason:?}, got {other:?}"),
        }
    }

    // --- inputs ------------------------------------------------------------------

    fn new_order(store: &str) -> NewOrder {
        NewOrder {
            number: "S1-000123".into(),
            channel: Channel::Web,
            store: store.into(),
            customer: Customer {
                id: "c-88".into(),
                name: "Leila Karimi".into(),
                phone: "+98 912 000 0000".into(),
                address: "12 Vali-Asr St, Tehran".into(),
            },
            currency: "IRR".into(),
            fulfilment: Fulfilment::Delivery,
            lines: vec![NewLine {
                sku: "TEA-500".into(),
                name: "Black tea 500 g".into(),
                qty: 2,
                unit_price: 1_850_000,
            }],
            note: Some("ring twice".into()),
        }
    }

    fn money(kind: EntryKind, amount: i64, delivery: Option<&DocId>) -> NewLedgerEntry {
        NewLedgerEntry {
            kind,
            method: PaymentMethod::Cash,
            amount,
            currency: "IRR".into(),
            delivery_id: delivery.map(ToString::to_string),
            reference: None,
        }
    }

    fn a_return(delivery: Option<&DocId>) -> NewReturn {
        NewReturn {
            lines: vec![ReturnLine {
                sku: "TEA-500".into(),
                qty: 1,
            }],
            reason: "damaged".into(),
            delivery_id: delivery.map(ToString::to_string),
        }
    }

    fn record(r: &Replica, id: &DocId, kind: &str) -> String {
        r.record_event(id, kind, &EventDetails::default())
            .unwrap_or_else(|e| panic!("{kind}: {e}"))
    }

    /// Store S1 takes an order, packs it and assigns courier `c1`.
    fn out_for_delivery() -> (Replica, DocId, DocId) {
        let tab = tablet();
        let order = tab.create_order(&new_order("S1")).unwrap();
        for k in ["confirmed", "picking", "packed"] {
            record(&tab, &order, k);
        }
        let dlv = tab
            .assign_courier(&order, "c1", &NewDelivery::default())
            .unwrap();
        (tab, order, dlv)
    }

    fn order_of(doc: &Document) -> Order {
        match doc {
            Document::Order(o) => (**o).clone(),
            Document::Delivery(_) => panic!("not an order"),
        }
    }

    fn delivery_of(doc: &Document) -> Delivery {
        match doc {
            Document::Delivery(d) => (**d).clone(),
            Document::Order(_) => panic!("not a delivery"),
        }
    }

    fn order_doc(o: Order) -> Document {
        Document::Order(Box::new(o))
    }

    fn delivery_doc(d: Delivery) -> Document {
        Document::Delivery(Box::new(d))
    }

    fn new_event<K>(kind: K, actor: &str) -> StatusEvent<K> {
        StatusEvent {
            id: crate::ids::new_entry_id("ev_"),
            kind,
            actor: actor.into(),
            at: Hlc::at_wall_ms(4_000_000_000_000),
            after: Vec::new(),
            location: None,
            note: None,
            resolution: None,
            courier: None,
        }
    }

    fn new_payment(kind: EntryKind, actor: &str, delivery: Option<&DocId>) -> LedgerEntry {
        LedgerEntry {
            id: crate::ids::new_entry_id("pay_"),
            kind,
            method: PaymentMethod::Cash,
            amount: 1_000,
            currency: "IRR".into(),
            delivery_id: delivery.map(ToString::to_string),
            reference: None,
            actor: actor.into(),
            at: Hlc::at_wall_ms(4_000_000_000_000),
        }
    }

    /// Make a real Automerge change on a fork of the device's document with autosurgeon
    /// `reconcile`, then apply its change bytes to the relay's copy, as the relay would.
    /// Returns the documents before and after.
    fn forged(r: &Replica, id: &DocId, edit: impl FnOnce(&mut Document)) -> (Document, Document) {
        let bytes = r.export(id).unwrap();
        let doc = Automerge::load(&bytes).unwrap();
        let before = document::read(id, &doc).unwrap();
        let mut value = before.clone();
        edit(&mut value);
        let mut fork = doc.fork();
        let mut tx = fork.transaction();
        match &value {
            Document::Order(o) => autosurgeon::reconcile(&mut tx, o.as_ref()).unwrap(),
            Document::Delivery(d) => autosurgeon::reconcile(&mut tx, d.as_ref()).unwrap(),
        }
        tx.commit();
        let change: Vec<_> = fork.get_changes(&doc.get_heads());
        assert_eq!(change.len(), 1, "the edit made one real change");
        let mut relay = Automerge::load(&bytes).unwrap();
        let decoded = crate::changes::decode(change[0].raw_bytes()).unwrap();
        crate::changes::apply(&mut relay, vec![decoded]).unwrap();
        let after = document::read(id, &relay).unwrap();
        (before, after)
    }

    // --- every legitimate mutation passes ------------------------------------------

    #[test]
    fn store_staff_mutations_pass() {
        let tab = tablet();
        let order = passes(&tab, |r| r.create_order(&new_order("S1")).unwrap());
        passes(&tab, |r| {
            r.add_line(
                &order,
                &NewLine {
                    sku: "SUGAR-1K".into(),
                    name: "Sugar 1 kg".into(),
                    qty: 1,
                    unit_price: 400_000,
                },
            )
            .unwrap()
        });
        for k in ["confirmed", "picking", "packed"] {
            passes(&tab, |r| record(r, &order, k));
        }
        let dlv = passes(&tab, |r| {
            r.assign_courier(&order, "c1", &NewDelivery::default())
                .unwrap()
        });
        let again = passes(&tab, |r| {
            r.assign_courier(&order, "c2", &NewDelivery::default())
                .unwrap()
        });
        assert_eq!(dlv, again, "reassigning appends to the open delivery");
        passes(&tab, |r| {
            r.record_payment(&order, &money(EntryKind::Payment, 1_000_000, None))
                .unwrap()
        });
        passes(&tab, |r| {
            r.record_payment(&order, &money(EntryKind::Refund, 100_000, None))
                .unwrap()
        });
        passes(&tab, |r| {
            r.record_payment(&order, &money(EntryKind::StoreCredit, 50_000, None))
                .unwrap()
        });
        passes(&tab, |r| r.add_note(&order, "customer called").unwrap());
        passes(&tab, |r| r.add_note(&dlv, "fragile").unwrap());
        passes(&tab, |r| record(r, &order, "handed_over"));
        passes(&tab, |r| r.start_return(&order, &a_return(None)).unwrap());
        passes(&tab, |r| record(r, &order, "returned"));
    }

    #[test]
    fn courier_mutations_pass() {
        let (tab, order, dlv) = out_for_delivery();
        let c1 = phone("c1");
        sync(&tab, &c1);
        for k in [
            "picked_up",
            "in_transit",
            "arrived",
            "failed_attempt",
            "in_transit",
            "arrived",
        ] {
            passes(&c1, |r| record(r, &dlv, k));
        }
        passes(&c1, |r| r.add_note(&dlv, "gate code 12").unwrap());
        passes(&c1, |r| {
            r.attach_proof(
                &dlv,
                &NewProof {
                    kind: ProofKind::Signature,
                    blob: "sha256:00ff".into(),
                    media_type: "image/png".into(),
                },
            )
            .unwrap()
        });
        // Delivering also appends `completed` to the order: both changes pass.
        passes(&c1, |r| record(r, &dlv, "delivered"));
        assert_eq!(order_of(&read(&c1, &order)).status().as_str(), "completed");
        passes(&c1, |r| {
            r.record_payment(&order, &money(EntryKind::Payment, 3_700_000, Some(&dlv)))
                .unwrap()
        });
        passes(&c1, |r| r.add_note(&order, "paid in cash").unwrap());
        // A doorstep return appends the return and `return_requested` together.
        passes(&c1, |r| {
            r.start_return(&order, &a_return(Some(&dlv))).unwrap()
        });
    }

    #[test]
    fn taking_a_parcel_back_and_reassigning_pass() {
        let (tab, _order, dlv) = out_for_delivery();
        let c1 = phone("c1");
        sync(&tab, &c1);
        passes(&c1, |r| record(r, &dlv, "picked_up"));
        passes(&c1, |r| record(r, &dlv, "failed_attempt"));
        sync(&c1, &tab);
        passes(&tab, |r| record(r, &dlv, "returned_to_store"));
        let order = DocId::parse(&delivery_of(&read(&tab, &dlv)).order_id).unwrap();
        passes(&tab, |r| {
            r.assign_courier(&order, "c2", &NewDelivery::default())
                .unwrap()
        });
        // The new courier fails too and brings it back itself.
        let c2 = phone("c2");
        sync(&tab, &c2);
        passes(&c2, |r| record(r, &dlv, "picked_up"));
        passes(&c2, |r| record(r, &dlv, "failed_attempt"));
        passes(&c2, |r| record(r, &dlv, "returned_to_store"));
    }

    #[test]
    fn dispatcher_mutations_pass_including_conflict_resolution() {
        let desk = ops();
        let order = passes(&desk, |r| r.create_order(&new_order("S1")).unwrap());
        for k in ["confirmed", "picking", "packed"] {
            passes(&desk, |r| record(r, &order, k));
        }
        let dlv = passes(&desk, |r| {
            r.assign_courier(&order, "c1", &NewDelivery::default())
                .unwrap()
        });
        let c1 = phone("c1");
        sync(&desk, &c1);
        record(&c1, &dlv, "picked_up");
        record(&c1, &dlv, "delivered");
        passes(&desk, |r| record(r, &order, "cancelled"));
        sync(&c1, &desk);
        assert_eq!(order_of(&read(&desk, &order)).status().as_str(), "conflict");
        passes(&desk, |r| {
            r.record_event(
                &order,
                "conflict_resolved",
                &EventDetails {
                    resolution: Some("completed".into()),
                    ..EventDetails::default()
                },
            )
            .unwrap()
        });
        // Anything else a dispatcher does to plain fields or notes is allowed.
        let before = read(&desk, &order);
        let mut o = order_of(&before);
        o.lines[0].unit_price = 1;
        o.store = "S2".into();
        o.notes = autosurgeon::Text::with_value("rewritten");
        let known = Known::of(&desk);
        check_effect(desk.identity(), Some(&before), &order_doc(o), &known).unwrap();
    }

    #[test]
    fn concurrent_note_appends_pass_wherever_the_merge_puts_them() {
        // Which of two concurrent appends comes first depends on the (random) Automerge
        // actor ids; about half the time the courier's lands *before* the store's note
        // the relay already holds. Repeat until that case has been seen.
        for _ in 0..64 {
            let (tab, order, _dlv) = out_for_delivery();
            let c1 = phone("c1");
            sync(&tab, &c1);
            // Both append to the order's note while apart.
            tab.add_note(&order, "store: wrapped as gift").unwrap();
            c1.add_note(&order, "courier: customer away").unwrap();
            // The relay already holds the store's note; then the courier's change arrives.
            let relay = ops();
            sync(&tab, &relay);
            let known = Known::of(&relay);
            let before = read(&relay, &order);
            sync(&c1, &relay);
            let after = read(&relay, &order);
            check_effect(c1.identity(), Some(&before), &after, &known).unwrap();
            let (old, new) = (order_of(&before).notes, order_of(&after).notes);
            if !new.as_str().starts_with(old.as_str()) {
                return;
            }
        }
        panic!("the courier's note never landed before the store's");
    }

    // --- forbidden effects ---------------------------------------------------------

    #[test]
    fn a_courier_may_not_edit_a_price() {
        let (tab, order, _dlv) = out_for_delivery();
        let c1 = phone("c1");
        sync(&tab, &c1);
        let before = read(&c1, &order);
        let mut o = order_of(&before);
        o.lines[0].unit_price = 1;
        refused(
            c1.identity(),
            Some(&before),
            &order_doc(o),
            &Known::of(&c1),
            "a courier device may not change order lines",
        );
    }

    #[test]
    fn a_price_edited_through_a_real_automerge_change_is_refused() {
        let (tab, order, _dlv) = out_for_delivery();
        let c1 = phone("c1");
        sync(&tab, &c1);
        let (before, after) = forged(&c1, &order, |doc| {
            if let Document::Order(o) = doc {
                o.lines[0].unit_price = 1;
            }
        });
        assert_eq!(order_of(&after).lines[0].unit_price, 1);
        refused(
            c1.identity(),
            Some(&before),
            &after,
            &Known::of(&c1),
            "change order lines",
        );
    }

    #[test]
    fn a_courier_may_not_change_its_stop_or_another_couriers_delivery() {
        let (tab, order, dlv) = out_for_delivery();
        let c1 = phone("c1");
        sync(&tab, &c1);
        let before = read(&c1, &dlv);
        let mut d = delivery_of(&before);
        d.stop.address = "somewhere else".into();
        refused(
            c1.identity(),
            Some(&before),
            &delivery_doc(d.clone()),
            &Known::of(&c1),
            "change delivery stop",
        );
        // Once reassigned to c2, c1 may not touch the stop, nor record anything.
        tab.assign_courier(&order, "c2", &NewDelivery::default())
            .unwrap();
        sync(&tab, &c1);
        let before = read(&c1, &dlv);
        let mut d = delivery_of(&before);
        d.stop.address = "somewhere else".into();
        refused(
            c1.identity(),
            Some(&before),
            &delivery_doc(d),
            &Known::of(&c1),
            "not assigned to this courier",
        );
        let mut d = delivery_of(&before);
        d.events
            .push(new_event(DeliveryEventKind::PickedUp, "phone-c1"));
        refused(
            c1.identity(),
            Some(&before),
            &delivery_doc(d),
            &Known::of(&c1),
            "not assigned to this courier",
        );
        // Nor take money or notes on the order any more.
        let before = read(&c1, &order);
        let mut o = order_of(&before);
        o.payments
            .push(new_payment(EntryKind::Payment, "phone-c1", Some(&dlv)));
        refused(
            c1.identity(),
            Some(&before),
            &order_doc(o),
            &Known::of(&c1),
            "none of its deliveries is assigned to this courier",
        );
    }

    #[test]
    fn a_courier_may_not_touch_a_delivery_it_was_never_assigned() {
        let (tab, _order, dlv) = out_for_delivery();
        let c9 = phone("c9");
        sync(&tab, &c9);
        let before = read(&c9, &dlv);
        let mut d = delivery_of(&before);
        d.events
            .push(new_event(DeliveryEventKind::Delivered, "phone-c9"));
        refused(
            c9.identity(),
            Some(&before),
            &delivery_doc(d),
            &Known::of(&c9),
            "not assigned to this courier",
        );
    }

    #[test]
    fn a_courier_may_not_record_assigned_or_conflict_resolved() {
        let (tab, _order, dlv) = out_for_delivery();
        let c1 = phone("c1");
        sync(&tab, &c1);
        let before = read(&c1, &dlv);
        for (kind, name) in [
            (DeliveryEventKind::Assigned, "`assigned`"),
            (DeliveryEventKind::ConflictResolved, "`conflict_resolved`"),
        ] {
            let mut d = delivery_of(&before);
            let mut e = new_event(kind, "phone-c1");
            e.courier = Some("c1".into());
            d.events.push(e);
            refused(
                c1.identity(),
                Some(&before),
                &delivery_doc(d),
                &Known::of(&c1),
                name,
            );
        }
    }

    #[test]
    fn a_courier_may_not_refund_collect_off_the_door_or_record_other_order_events() {
        let (tab, order, dlv) = out_for_delivery();
        let c1 = phone("c1");
        sync(&tab, &c1);
        let known = Known::of(&c1);
        let before = read(&c1, &order);
        let mut o = order_of(&before);
        o.payments
            .push(new_payment(EntryKind::Refund, "phone-c1", Some(&dlv)));
        refused(
            c1.identity(),
            Some(&before),
            &order_doc(o),
            &known,
            "refund",
        );
        let mut o = order_of(&before);
        o.payments
            .push(new_payment(EntryKind::Payment, "phone-c1", None));
        refused(
            c1.identity(),
            Some(&before),
            &order_doc(o),
            &known,
            "other than at the door of its own delivery",
        );
        let mut o = order_of(&before);
        o.events
            .push(new_event(OrderEventKind::Cancelled, "phone-c1"));
        refused(
            c1.identity(),
            Some(&before),
            &order_doc(o),
            &known,
            "record order event `cancelled`",
        );
        // `return_requested` only comes with a doorstep return.
        let mut o = order_of(&before);
        o.events
            .push(new_event(OrderEventKind::ReturnRequested, "phone-c1"));
        refused(
            c1.identity(),
            Some(&before),
            &order_doc(o),
            &known,
            "`return_requested`",
        );
    }

    /// A ledger with one in-store payment (by the tablet) and one at the door (by c1).
    fn paid_order() -> (Replica, Replica, Replica, DocId) {
        let (tab, order, dlv) = out_for_delivery();
        tab.record_payment(&order, &money(EntryKind::Payment, 500_000, None))
            .unwrap();
        let c1 = phone("c1");
        sync(&tab, &c1);
        record(&c1, &dlv, "picked_up");
        c1.record_payment(&order, &money(EntryKind::Payment, 3_200_000, Some(&dlv)))
            .unwrap();
        let desk = ops();
        sync(&c1, &desk);
        sync(&c1, &tab);
        (tab, c1, desk, order)
    }

    #[test]
    fn money_is_append_only_for_every_role() {
        let (tab, c1, desk, order) = paid_order();
        for r in [&c1, &tab, &desk] {
            let known = Known::of(r);
            let before = read(r, &order);
            assert_eq!(order_of(&before).payments.len(), 2);
            for i in 0..2 {
                let mut o = order_of(&before);
                let id = o.payments.remove(i).id;
                refused(
                    r.identity(),
                    Some(&before),
                    &order_doc(o),
                    &known,
                    &format!("remove ledger entry {id}: money is append-only"),
                );
                let mut o = order_of(&before);
                o.payments[i].amount += 1;
                refused(
                    r.identity(),
                    Some(&before),
                    &order_doc(o),
                    &known,
                    &format!("alter ledger entry {id}: money is append-only"),
                );
                // A second entry under the same id, listed first, would be counted
                // instead of the real one: an edit in disguise.
                let mut o = order_of(&before);
                let mut twin = o.payments[i].clone();
                twin.amount = 1;
                o.payments.insert(0, twin);
                refused(
                    r.identity(),
                    Some(&before),
                    &order_doc(o),
                    &known,
                    &format!("alter ledger entry {id}"),
                );
            }
        }
    }

    #[test]
    fn a_payment_altered_through_a_real_automerge_change_is_refused_even_for_a_dispatcher() {
        let (_tab, _c1, desk, order) = paid_order();
        let (before, after) = forged(&desk, &order, |doc| {
            if let Document::Order(o) = doc {
                o.payments[0].amount = 1;
            }
        });
        let id = order_of(&before).payments[0].id.clone();
        refused(
            desk.identity(),
            Some(&before),
            &after,
            &Known::of(&desk),
            &format!("a dispatcher device may not alter ledger entry {id}: money is append-only"),
        );
        let (before, after) = forged(&desk, &order, |doc| {
            if let Document::Order(o) = doc {
                o.payments.remove(1);
            }
        });
        refused(
            desk.identity(),
            Some(&before),
            &after,
            &Known::of(&desk),
            "remove ledger entry",
        );
    }

    #[test]
    fn new_money_must_be_positive_and_in_the_orders_currency() {
        let (tab, order, _dlv) = out_for_delivery();
        let before = read(&tab, &order);
        let mut o = order_of(&before);
        let mut p = new_payment(EntryKind::Payment, "tab-1", None);
        p.currency = "EUR".into();
        o.payments.push(p);
        let err = check_effect(tab.identity(), Some(&before), &order_doc(o), &Nothing);
        assert!(
            matches!(err, Err(ModelError::CurrencyMismatch { .. })),
            "{err:?}"
        );
        let mut o = order_of(&before);
        let mut p = new_payment(EntryKind::Payment, "tab-1", None);
        p.amount = 0;
        o.payments.push(p);
        let err = check_effect(tab.identity(), Some(&before), &order_doc(o), &Nothing);
        assert!(
            matches!(err, Err(ModelError::InvalidInput { .. })),
            "{err:?}"
        );
        // And the currency is fixed once money is recorded.
        let (tab, _c1, desk, order) = paid_order();
        for r in [&tab, &desk] {
            let before = read(r, &order);
            let mut o = order_of(&before);
            o.currency = "EUR".into();
            refused(
                r.identity(),
                Some(&before),
                &order_doc(o),
                &Known::of(r),
                "change the currency",
            );
        }
    }

    #[test]
    fn an_event_removed_or_altered_is_refused_for_every_role() {
        let (tab, order, dlv) = out_for_delivery();
        let c1 = phone("c1");
        sync(&tab, &c1);
        let desk = ops();
        sync(&tab, &desk);
        for r in [&tab, &desk] {
            let before = read(r, &order);
            let mut o = order_of(&before);
            let gone = o.events.remove(1).id;
            refused(
                r.identity(),
                Some(&before),
                &order_doc(o),
                &Known::of(r),
                &format!("remove order event {gone}: the status log is append-only"),
            );
        }
        let before = read(&c1, &dlv);
        let mut d = delivery_of(&before);
        d.events[0].courier = Some("c9".into());
        refused(
            c1.identity(),
            Some(&before),
            &delivery_doc(d),
            &Known::of(&c1),
            "alter delivery event",
        );
    }

    #[test]
    fn a_store_may_not_create_move_or_touch_another_stores_order() {
        let tab = tablet();
        let order = tab.create_order(&new_order("S1")).unwrap();
        let created = read(&tab, &order);
        let mut o = order_of(&created);
        o.store = "S2".into();
        refused(
            tab.identity(),
            None,
            &order_doc(o.clone()),
            &Nothing,
            "create an order for another store",
        );
        refused(
            tab.identity(),
            Some(&created),
            &order_doc(o),
            &Nothing,
            "move order",
        );
        // The same move as a real Automerge change.
        let (before, after) = forged(&tab, &order, |doc| {
            if let Document::Order(o) = doc {
                o.store = "S2".into();
            }
        });
        refused(
            tab.identity(),
            Some(&before),
            &after,
            &Nothing,
            "to another store",
        );
        // A tablet of store S2 may not change S1's order at all.
        let other = DeviceIdentity::store("tab-9", "S2");
        let mut o = order_of(&created);
        o.lines[0].qty = 9;
        refused(
            &other,
            Some(&created),
            &order_doc(o),
            &Nothing,
            "of another store",
        );
    }

    #[test]
    fn a_store_may_not_resolve_conflicts_collect_at_doors_or_attach_proofs() {
        let (tab, order, dlv) = out_for_delivery();
        let known = Known::of(&tab);
        let before = read(&tab, &order);
        let mut o = order_of(&before);
        o.events
            .push(new_event(OrderEventKind::ConflictResolved, "tab-1"));
        refused(
            tab.identity(),
            Some(&before),
            &order_doc(o),
            &known,
            "`conflict_resolved`",
        );
        let mut o = order_of(&before);
        o.payments
            .push(new_payment(EntryKind::Payment, "tab-1", Some(&dlv)));
        refused(
            tab.identity(),
            Some(&before),
            &order_doc(o),
            &known,
            "at a delivery's door",
        );
        let before = read(&tab, &dlv);
        let mut d = delivery_of(&before);
        d.events
            .push(new_event(DeliveryEventKind::Delivered, "tab-1"));
        refused(
            tab.identity(),
            Some(&before),
            &delivery_doc(d),
            &known,
            "delivery event `delivered`",
        );
        let mut d = delivery_of(&before);
        d.proofs.push(ProofRef {
            id: "pod_x".into(),
            kind: ProofKind::Photo,
            blob: "sha256:00".into(),
            media_type: "image/jpeg".into(),
            actor: "tab-1".into(),
            at: Hlc::at_wall_ms(1),
        });
        refused(
            tab.identity(),
            Some(&before),
            &delivery_doc(d),
            &known,
            "attach proof of delivery pod_x",
        );
    }

    #[test]
    fn a_store_never_creates_deliveries_for_another_stores_order() {
        let (tab, _order, dlv) = out_for_delivery();
        let created = read(&tab, &dlv);
        // The relay's view right after the order: it knows the order is S1's.
        let known = Known::of(&tab);
        check_effect(tab.identity(), None, &created, &known).unwrap();
        // The order has not reached the relay yet (a full sync sends `dlv_` first).
        check_effect(tab.identity(), None, &created, &Nothing).unwrap();
        // An S2 tablet writing a delivery that claims S2 for S1's order.
        let other = DeviceIdentity::store("tab-9", "S2");
        let mut d = delivery_of(&created);
        d.store = "S2".into();
        d.created_by = "tab-9".into();
        for e in &mut d.events {
            e.actor = "tab-9".into();
        }
        refused(
            &other,
            None,
            &delivery_doc(d),
            &known,
            "to an order of another store",
        );
    }

    #[test]
    fn entries_must_name_the_device_that_writes_them() {
        let (tab, order, dlv) = out_for_delivery();
        let c1 = phone("c1");
        sync(&tab, &c1);
        let known = Known::of(&c1);
        let before = read(&c1, &order);
        let mut o = order_of(&before);
        let p = new_payment(EntryKind::Payment, "phone-c2", Some(&dlv));
        let id = p.id.clone();
        o.payments.push(p);
        refused(
            c1.identity(),
            Some(&before),
            &order_doc(o),
            &known,
            &format!("record ledger entry {id} in another device's name"),
        );
        let before = read(&c1, &dlv);
        let mut d = delivery_of(&before);
        d.events
            .push(new_event(DeliveryEventKind::PickedUp, "ops-1"));
        refused(
            c1.identity(),
            Some(&before),
            &delivery_doc(d),
            &known,
            "in another device's name",
        );
        // Dispatchers too, and on creation.
        let desk = ops();
        let order = desk.create_order(&new_order("S1")).unwrap();
        let mut o = order_of(&read(&desk, &order));
        o.events[0].actor = "tab-1".into();
        refused(
            desk.identity(),
            None,
            &order_doc(o.clone()),
            &Nothing,
            "in another device's name",
        );
        o.created_by = "tab-1".into();
        refused(
            desk.identity(),
            None,
            &order_doc(o),
            &Nothing,
            "created_by is not this device",
        );
    }

    #[test]
    fn a_courier_may_not_create_documents() {
        let (tab, order, dlv) = out_for_delivery();
        let c1 = DeviceIdentity::courier("phone-c1", "c1");
        for id in [&order, &dlv] {
            let mut doc = read(&tab, id);
            match &mut doc {
                Document::Order(o) => o.created_by = "phone-c1".into(),
                Document::Delivery(d) => d.created_by = "phone-c1".into(),
            }
            refused(
                &c1,
                None,
                &doc,
                &Known::of(&tab),
                "a courier device may not create documents",
            );
        }
    }

    #[test]
    fn identity_fields_never_change_even_for_a_dispatcher() {
        let (tab, order, dlv) = out_for_delivery();
        let desk = ops();
        sync(&tab, &desk);
        let before = read(&desk, &order);
        let mut o = order_of(&before);
        o.created_by = "ops-1".into();
        refused(
            desk.identity(),
            Some(&before),
            &order_doc(o),
            &Nothing,
            "change the created_by",
        );
        let other = read(&desk, &dlv);
        refused(
            desk.identity(),
            Some(&before),
            &other,
            &Nothing,
            "a document's identity never changes",
        );
    }

    #[test]
    fn notes_only_grow_except_for_dispatchers() {
        let (tab, order, _dlv) = out_for_delivery();
        let before = read(&tab, &order);
        let mut o = order_of(&before);
        o.notes = autosurgeon::Text::with_value("ring once");
        refused(
            tab.identity(),
            Some(&before),
            &order_doc(o),
            &Known::of(&tab),
            "notes only grow",
        );
        assert!(is_subsequence("ab\ncd", "ab\nxy\ncd"));
        assert!(!is_subsequence("ring twice", "ring once"));
    }
}
