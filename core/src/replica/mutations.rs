//! Typed mutations. Each checks the role's rules and the document's lifecycle, then
//! appends to the document (never rewrites what others may be appending to).

use super::session::Session;
use super::{Replica, ReplicaError};
use crate::ids::{DocId, DocKind, new_entry_id};
use crate::model::document::{SCHEMA_VERSION, append, append_text, write_new};
use crate::model::input::validate_location;
use crate::model::lifecycle::Lifecycle;
use crate::model::rules::{self, Action};
use crate::model::{
    Delivery, DeliveryEventKind, DeliveryState, DeliveryStatus, EntryKind, EventDetails,
    Fulfilment, LedgerEntry, ModelError, NewDelivery, NewLedgerEntry, NewLine, NewOrder, NewProof,
    NewReturn, Order, OrderEventKind, OrderLine, OrderState, OrderStatus, ProofRef, ReturnEntry,
    StatusEvent, Stop, delivery::DeliveryLifecycle, order::OrderLifecycle,
};
use autosurgeon::Text;

fn event<K>(
    s: &mut Session<'_>,
    kind: K,
    after: Vec<String>,
    details: &EventDetails,
    resolution: Option<K>,
) -> StatusEvent<K> {
    StatusEvent {
        id: new_entry_id("ev_"),
        kind,
        actor: s.identity.device_id.clone(),
        at: s.tick(),
        after,
        location: details.location,
        note: details.note.clone(),
        resolution,
        courier: None,
    }
}

fn transition_error(doc_id: &DocId, status: &str, kind: &str) -> ReplicaError {
    ModelError::InvalidTransition {
        doc_id: doc_id.to_string(),
        status: status.to_owned(),
        kind: kind.to_owned(),
    }
    .into()
}

/// Check a locally recorded event against the lifecycle: the strict transition table,
/// or, while a conflict is open, only a `conflict_resolved` choosing a real outcome.
fn check_transition<L: Lifecycle>(
    doc_id: &DocId,
    state: Option<L::State>,
    in_conflict: bool,
    status_name: &str,
    kind: L::Kind,
    resolution: Option<L::Kind>,
) -> Result<(), ReplicaError> {
    let ok = if kind == L::RESOLVES {
        in_conflict && resolution.and_then(L::target).is_some()
    } else {
        !in_conflict && L::allowed(state, kind)
    };
    if ok {
        Ok(())
    } else {
        Err(transition_error(doc_id, status_name, L::kind_name(kind)))
    }
}

impl Replica {
    /// Create an order; returns its id. It starts `placed`.
    pub fn create_order(&self, new: &NewOrder) -> Result<DocId, ReplicaError> {
        new.validate()?;
        rules::check(&self.identity, Action::CreateOrder { store: &new.store })?;
        let id = DocId::new(DocKind::Order);
        self.write(|s| {
            let at = s.tick();
            let actor = s.identity.device_id.clone();
            let placed = StatusEvent {
                id: new_entry_id("ev_"),
                kind: OrderEventKind::Placed,
                actor: actor.clone(),
                at,
                after: Vec::new(),
                location: None,
                note: None,
                resolution: None,
                courier: None,
            };
            let order = Order {
                schema_version: SCHEMA_VERSION,
                doc_type: DocKind::Order.as_str().to_owned(),
                id: id.to_string(),
                number: new.number.clone(),
                channel: new.channel,
                store: new.store.clone(),
                customer: new.customer.clone(),
                currency: new.currency.clone(),
                fulfilment: new.fulfilment,
                lines: new.lines.iter().map(line).collect(),
                deliveries: Vec::new(),
                payments: Vec::new(),
                returns: Vec::new(),
                notes: Text::with_value(new.note.as_deref().unwrap_or_default()),
                events: vec![placed],
                created_at: at,
                created_by: actor,
            };
            s.change(&id, true, "create order", |tx| write_new(tx, &order))?;
            Ok(id.clone())
        })
    }

    /// Add a line to an order that is not packed yet.
    pub fn add_line(&self, order_id: &DocId, new: &NewLine) -> Result<String, ReplicaError> {
        new.validate("line")?;
        self.write(|s| {
            let order = s.order(order_id)?;
            rules::check(
                s.identity,
                Action::EditLines {
                    store: &order.store,
                },
            )?;
            let status = order.status();
            if !matches!(
                status,
                OrderStatus::State(
                    OrderState::Placed | OrderState::Confirmed | OrderState::Picking
                )
            ) {
                return Err(ModelError::invalid(
                    "lines",
                    format!(
                        "order {order_id} is {} and can no longer change",
                        status.as_str()
                    ),
                )
                .into());
            }
            let line = line(new);
            let line_id = line.id.clone();
            s.change(order_id, false, "add line", |tx| append(tx, "lines", &line))?;
            Ok(line_id)
        })
    }

    /// Assign a courier to an order: creates its delivery, or reassigns the open one.
    /// Returns the delivery id.
    pub fn assign_courier(
        &self,
        order_id: &DocId,
        courier: &str,
        new: &NewDelivery,
    ) -> Result<DocId, ReplicaError> {
        if courier.trim().is_empty() {
            return Err(ModelError::invalid("courier", "must not be empty").into());
        }
        self.write(|s| {
            let order = s.order(order_id)?;
            rules::check(
                s.identity,
                Action::AssignCourier {
                    store: &order.store,
                },
            )?;
            if order.fulfilment != Fulfilment::Delivery {
                return Err(ModelError::invalid(
                    "fulfilment",
                    format!("order {order_id} is not for delivery"),
                )
                .into());
            }
            let status = order.status();
            if matches!(
                status,
                OrderStatus::Conflict(_)
                    | OrderStatus::State(
                        OrderState::Cancelled | OrderState::Completed | OrderState::Returned
                    )
            ) {
                return Err(transition_error(order_id, status.as_str(), "assigned"));
            }
            // Reassign the open delivery, if any.
            for existing in order.deliveries.iter().rev() {
                let dlv_id = DocId::parse(existing)?;
                if !s.exists(&dlv_id)? {
                    continue;
                }
                let delivery = s.delivery(&dlv_id)?;
                let folded = delivery.fold();
                if matches!(folded.state, Some(DeliveryState::Delivered))
                    && folded.conflicts.is_empty()
                {
                    continue;
                }
                check_transition::<DeliveryLifecycle>(
                    &dlv_id,
                    folded.state,
                    !folded.conflicts.is_empty(),
                    delivery.status().as_str(),
                    DeliveryEventKind::Assigned,
                    None,
                )?;
                let mut assigned = event(
                    s,
                    DeliveryEventKind::Assigned,
                    folded.frontier,
                    &EventDetails::default(),
                    None,
                );
                assigned.courier = Some(courier.to_owned());
                s.change(&dlv_id, false, "reassign courier", |tx| {
                    append(tx, "events", &assigned)
                })?;
                return Ok(dlv_id);
            }
            let dlv_id = DocId::new(DocKind::Delivery);
            let mut assigned = event(
                s,
                DeliveryEventKind::Assigned,
                Vec::new(),
                &EventDetails::default(),
                None,
            );
            assigned.courier = Some(courier.to_owned());
            let delivery = Delivery {
                schema_version: SCHEMA_VERSION,
                doc_type: DocKind::Delivery.as_str().to_owned(),
                id: dlv_id.to_string(),
                order_id: order_id.to_string(),
                store: order.store.clone(),
                stop: new.stop.clone().unwrap_or_else(|| Stop {
                    address: order.customer.address.clone(),
                    geo: None,
                    contact_name: Some(order.customer.name.clone()),
                    contact_phone: Some(order.customer.phone.clone()).filter(|p| !p.is_empty()),
                }),
                window: new.window,
                proofs: Vec::new(),
                notes: Text::default(),
                created_at: assigned.at,
                created_by: s.identity.device_id.clone(),
                events: vec![assigned],
            };
            s.change(&dlv_id, true, "create delivery", |tx| {
                write_new(tx, &delivery)
            })?;
            let dlv_str = dlv_id.to_string();
            s.change(order_id, false, "link delivery", |tx| {
                append(tx, "deliveries", &dlv_str)
            })?;
            Ok(dlv_id)
        })
    }

    /// Record a status event (`picked_up`, `packed`…) on an order or delivery.
    /// Returns the event id. A delivery's `delivered` also completes its order.
    pub fn record_event(
        &self,
        doc_id: &DocId,
        kind: &str,
        details: &EventDetails,
    ) -> Result<String, ReplicaError> {
        if let Some(location) = &details.location {
            validate_location(location)?;
        }
        match doc_id.kind() {
            DocKind::Order => {
                self.record_order_event(doc_id, OrderEventKind::parse(kind)?, details)
            }
            DocKind::Delivery => {
                self.record_delivery_event(doc_id, DeliveryEventKind::parse(kind)?, details)
            }
        }
    }

    fn record_order_event(
        &self,
        doc_id: &DocId,
        kind: OrderEventKind,
        details: &EventDetails,
    ) -> Result<String, ReplicaError> {
        let resolution = details
            .resolution
            .as_deref()
            .map(OrderEventKind::parse)
            .transpose()?;
        self.write(|s| {
            let order = s.order(doc_id)?;
            rules::check(
                s.identity,
                Action::OrderEvent {
                    store: &order.store,
                    kind,
                },
            )?;
            let folded = order.fold();
            let status = crate::model::order::status_of(&folded);
            check_transition::<OrderLifecycle>(
                doc_id,
                folded.state,
                !folded.conflicts.is_empty(),
                status.as_str(),
                kind,
                resolution,
            )?;
            let ev = event(s, kind, folded.frontier, details, resolution);
            let id = ev.id.clone();
            s.change(doc_id, false, kind.as_str(), |tx| append(tx, "events", &ev))?;
            Ok(id)
        })
    }

    fn record_delivery_event(
        &self,
        doc_id: &DocId,
        kind: DeliveryEventKind,
        details: &EventDetails,
    ) -> Result<String, ReplicaError> {
        if kind == DeliveryEventKind::Assigned {
            return Err(
                ModelError::invalid("kind", "use assign_courier to assign a delivery").into(),
            );
        }
        let resolution = details
            .resolution
            .as_deref()
            .map(DeliveryEventKind::parse)
            .transpose()?;
        self.write(|s| {
            let delivery = s.delivery(doc_id)?;
            let folded = delivery.fold();
            let courier = crate::model::delivery::courier_of(&delivery.events, &folded);
            rules::check(
                s.identity,
                Action::DeliveryEvent {
                    store: &delivery.store,
                    courier: courier.as_deref(),
                    kind,
                },
            )?;
            let status = crate::model::delivery::status_of(&folded);
            check_transition::<DeliveryLifecycle>(
                doc_id,
                folded.state,
                !folded.conflicts.is_empty(),
                status.as_str(),
                kind,
                resolution,
            )?;

            // Delivering completes the order; an order cancelled meanwhile refuses it.
            let order_id = DocId::parse(&delivery.order_id)?;
            let mut complete_order = None;
            if kind == DeliveryEventKind::Delivered && s.exists(&order_id)? {
                let order = s.order(&order_id)?;
                let order_folded = order.fold();
                match crate::model::order::status_of(&order_folded) {
                    OrderStatus::State(OrderState::Cancelled) => {
                        return Err(transition_error(&order_id, "cancelled", "delivered"));
                    }
                    OrderStatus::State(
                        OrderState::Completed | OrderState::ReturnRequested | OrderState::Returned,
                    )
                    | OrderStatus::Conflict(_) => {}
                    OrderStatus::State(_) => complete_order = Some(order_folded.frontier),
                }
            }

            let ev = event(s, kind, folded.frontier, details, resolution);
            let id = ev.id.clone();
            s.change(doc_id, false, kind.as_str(), |tx| append(tx, "events", &ev))?;
            if let Some(after) = complete_order {
                let note = EventDetails {
                    note: Some(format!("delivered ({doc_id})")),
                    location: details.location,
                    resolution: None,
                };
                let completed = event(s, OrderEventKind::Completed, after, &note, None);
                s.change(&order_id, false, "completed", |tx| {
                    append(tx, "events", &completed)
                })?;
            }
            Ok(id)
        })
    }

    /// Record a payment, refund or store credit on an order; returns the entry id.
    pub fn record_payment(
        &self,
        order_id: &DocId,
        new: &NewLedgerEntry,
    ) -> Result<String, ReplicaError> {
        self.write(|s| {
            let order = s.order(order_id)?;
            new.validate(&order.currency)?;
            let at_door_of = door_courier(s, &order, new.delivery_id.as_deref())?;
            let action = match new.kind {
                EntryKind::Payment => Action::CollectPayment {
                    store: &order.store,
                    at_door_of: at_door_of.as_deref(),
                },
                EntryKind::Refund | EntryKind::StoreCredit => Action::Refund {
                    store: &order.store,
                },
            };
            rules::check(s.identity, action)?;
            let entry = LedgerEntry {
                id: new_entry_id("pay_"),
                kind: new.kind,
                method: new.method,
                amount: new.amount,
                currency: new.currency.clone(),
                delivery_id: new.delivery_id.clone(),
                reference: new.reference.clone(),
                actor: s.identity.device_id.clone(),
                at: s.tick(),
            };
            let id = entry.id.clone();
            s.change(order_id, false, new.kind.as_str(), |tx| {
                append(tx, "payments", &entry)
            })?;
            Ok(id)
        })
    }

    /// Start a return of some of an order's items; the order becomes `return_requested`.
    pub fn start_return(&self, order_id: &DocId, new: &NewReturn) -> Result<String, ReplicaError> {
        self.write(|s| {
            let order = s.order(order_id)?;
            new.validate(&order.returnable())?;
            let at_door_of = door_courier(s, &order, new.delivery_id.as_deref())?;
            rules::check(
                s.identity,
                Action::StartReturn {
                    store: &order.store,
                    at_door_of: at_door_of.as_deref(),
                },
            )?;
            let folded = order.fold();
            let status = crate::model::order::status_of(&folded);
            check_transition::<OrderLifecycle>(
                order_id,
                folded.state,
                !folded.conflicts.is_empty(),
                status.as_str(),
                OrderEventKind::ReturnRequested,
                None,
            )?;
            let at = s.tick();
            let entry = ReturnEntry {
                id: new_entry_id("ret_"),
                lines: new.lines.clone(),
                reason: new.reason.clone(),
                delivery_id: new.delivery_id.clone(),
                actor: s.identity.device_id.clone(),
                at,
            };
            let details = EventDetails {
                note: Some(format!("return {}", entry.id)),
                ..EventDetails::default()
            };
            let requested = event(
                s,
                OrderEventKind::ReturnRequested,
                folded.frontier,
                &details,
                None,
            );
            let id = entry.id.clone();
            s.change(order_id, false, "start return", |tx| {
                append(tx, "returns", &entry)?;
                append(tx, "events", &requested)
            })?;
            Ok(id)
        })
    }

    /// Add a note to an order or delivery.
    pub fn add_note(&self, doc_id: &DocId, text: &str) -> Result<(), ReplicaError> {
        if text.trim().is_empty() || text.len() > 4096 {
            return Err(ModelError::invalid("note", "must be 1 to 4096 bytes").into());
        }
        self.write(|s| {
            let (store, courier) = match doc_id.kind() {
                DocKind::Order => {
                    let order = s.order(doc_id)?;
                    let courier = order_couriers(s, &order)?
                        .into_iter()
                        .find(|c| Some(c) == s.identity.courier_id.as_ref());
                    (order.store, courier)
                }
                DocKind::Delivery => {
                    let d = s.delivery(doc_id)?;
                    let courier = d.courier();
                    (d.store, courier)
                }
            };
            rules::check(
                s.identity,
                Action::AddNote {
                    store: &store,
                    courier: courier.as_deref(),
                },
            )?;
            s.change(doc_id, false, "note", |tx| append_text(tx, "notes", text))
        })
    }

    /// Attach a proof-of-delivery reference to a delivery; returns its id.
    pub fn attach_proof(
        &self,
        delivery_id: &DocId,
        new: &NewProof,
    ) -> Result<String, ReplicaError> {
        new.validate()?;
        self.write(|s| {
            let delivery = s.delivery(delivery_id)?;
            rules::check(
                s.identity,
                Action::AttachProof {
                    courier: delivery.courier().as_deref(),
                },
            )?;
            if matches!(
                delivery.status(),
                DeliveryStatus::State(DeliveryState::Assigned)
            ) {
                return Err(transition_error(delivery_id, "assigned", "proof"));
            }
            let proof = ProofRef {
                id: new_entry_id("pod_"),
                kind: new.kind,
                blob: new.blob.clone(),
                media_type: new.media_type.clone(),
                actor: s.identity.device_id.clone(),
                at: s.tick(),
            };
            let id = proof.id.clone();
            s.change(delivery_id, false, "proof", |tx| {
                append(tx, "proofs", &proof)
            })?;
            Ok(id)
        })
    }
}

fn line(new: &NewLine) -> OrderLine {
    OrderLine {
        id: new_entry_id("ln_"),
        sku: new.sku.clone(),
        name: new.name.clone(),
        qty: new.qty,
        unit_price: new.unit_price,
    }
}

/// The courier of a delivery named on a payment or return, which must be one of the order's.
fn door_courier(
    s: &mut Session<'_>,
    order: &Order,
    delivery_id: Option<&str>,
) -> Result<Option<String>, ReplicaError> {
    let Some(delivery_id) = delivery_id else {
        return Ok(None);
    };
    if !order.deliveries.iter().any(|d| d == delivery_id) {
        return Err(ModelError::invalid(
            "delivery_id",
            format!("{delivery_id} is not a delivery of order {}", order.id),
        )
        .into());
    }
    let id = DocId::parse(delivery_id)?;
    Ok(s.delivery(&id)?.courier())
}

/// Couriers of an order's deliveries held on this device.
fn order_couriers(s: &mut Session<'_>, order: &Order) -> Result<Vec<String>, ReplicaError> {
    let mut out = Vec::new();
    for d in &order.deliveries {
        let id = DocId::parse(d)?;
        if s.exists(&id)? {
            out.extend(s.delivery(&id)?.courier());
        }
    }
    Ok(out)
}
