//! Which role may make which change (checked locally first; the relay checks again).

use super::delivery::DeliveryEventKind;
use super::error::ModelError;
use super::order::OrderEventKind;
use crate::identity::{DeviceIdentity, Role};

/// A change a device wants to make, with the facts the rules need.
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    /// Create an order for a store.
    CreateOrder {
        /// Owning store.
        store: &'a str,
    },
    /// Change an order's lines.
    EditLines {
        /// Owning store.
        store: &'a str,
    },
    /// Assign or reassign a courier.
    AssignCourier {
        /// Owning store.
        store: &'a str,
    },
    /// Record an order status event.
    OrderEvent {
        /// Owning store.
        store: &'a str,
        /// The event.
        kind: OrderEventKind,
    },
    /// Record a delivery status event.
    DeliveryEvent {
        /// The store it leaves from.
        store: &'a str,
        /// Its current courier.
        courier: Option<&'a str>,
        /// The event.
        kind: DeliveryEventKind,
    },
    /// Record money received; `at_door_of` is the courier of the delivery it was collected on.
    CollectPayment {
        /// Owning store.
        store: &'a str,
        /// Courier of the delivery, for door collections.
        at_door_of: Option<&'a str>,
    },
    /// Refund or issue store credit.
    Refund {
        /// Owning store.
        store: &'a str,
    },
    /// Start a return; `at_door_of` as for payments.
    StartReturn {
        /// Owning store.
        store: &'a str,
        /// Courier of the delivery, for doorstep returns.
        at_door_of: Option<&'a str>,
    },
    /// Add a note to an order or delivery.
    AddNote {
        /// Owning store.
        store: &'a str,
        /// Courier of the delivery (or of one of the order's deliveries).
        courier: Option<&'a str>,
    },
    /// Attach proof of delivery.
    AttachProof {
        /// Courier of the delivery.
        courier: Option<&'a str>,
    },
}

impl Action<'_> {
    fn describe(&self) -> String {
        match self {
            Action::CreateOrder { store } => format!("create orders for store {store}"),
            Action::EditLines { store } => format!("edit the lines of store {store}'s orders"),
            Action::AssignCourier { store } => format!("assign couriers for store {store}"),
            Action::OrderEvent { kind, .. } => format!("record order event `{}`", kind.as_str()),
            Action::DeliveryEvent { kind, .. } => {
                format!("record delivery event `{}` here", kind.as_str())
            }
            Action::CollectPayment { .. } => "record this payment".to_owned(),
            Action::Refund { .. } => "refund or issue store credit".to_owned(),
            Action::StartReturn { .. } => "start this return".to_owned(),
            Action::AddNote { .. } => "add notes here".to_owned(),
            Action::AttachProof { .. } => "attach proof of delivery here".to_owned(),
        }
    }
}

/// Allow or refuse an action for a device.
pub fn check(who: &DeviceIdentity, action: Action<'_>) -> Result<(), ModelError> {
    let own_store = |store: &str| who.store_id.as_deref() == Some(store);
    let own_stop =
        |courier: Option<&str>| courier.is_some() && courier == who.courier_id.as_deref();
    let allowed = match who.role {
        Role::Dispatcher => true,
        Role::Store => match action {
            Action::CreateOrder { store }
            | Action::EditLines { store }
            | Action::AssignCourier { store }
            | Action::Refund { store }
            | Action::StartReturn { store, .. }
            | Action::AddNote { store, .. } => own_store(store),
            Action::OrderEvent { store, kind } => {
                own_store(store) && kind != OrderEventKind::ConflictResolved
            }
            Action::DeliveryEvent { store, kind, .. } => {
                own_store(store) && kind == DeliveryEventKind::ReturnedToStore
            }
            Action::CollectPayment { store, at_door_of } => {
                own_store(store) && at_door_of.is_none()
            }
            Action::AttachProof { .. } => false,
        },
        Role::Courier => match action {
            Action::DeliveryEvent { courier, kind, .. } => {
                own_stop(courier)
                    && !matches!(
                        kind,
                        DeliveryEventKind::Assigned | DeliveryEventKind::ConflictResolved
                    )
            }
            Action::CollectPayment { at_door_of, .. } | Action::StartReturn { at_door_of, .. } => {
                own_stop(at_door_of)
            }
            Action::AddNote { courier, .. } | Action::AttachProof { courier } => own_stop(courier),
            Action::CreateOrder { .. }
            | Action::EditLines { .. }
            | Action::AssignCourier { .. }
            | Action::OrderEvent { .. }
            | Action::Refund { .. } => false,
        },
    };
    if allowed {
        Ok(())
    } else {
        Err(ModelError::Forbidden {
            role: who.role.as_str().to_owned(),
            action: action.describe(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_courier_changes_only_its_own_stops() {
        let me = DeviceIdentity::courier("phone-1", "c1");
        let mine = Action::DeliveryEvent {
            store: "S1",
            courier: Some("c1"),
            kind: DeliveryEventKind::Delivered,
        };
        let theirs = Action::DeliveryEvent {
            store: "S1",
            courier: Some("c2"),
            kind: DeliveryEventKind::Delivered,
        };
        assert!(check(&me, mine).is_ok());
        assert!(matches!(
            check(&me, theirs),
            Err(ModelError::Forbidden { .. })
        ));
        assert!(check(&me, Action::EditLines { store: "S1" }).is_err());
        assert!(
            check(
                &me,
                Action::CollectPayment {
                    store: "S1",
                    at_door_of: Some("c1")
                }
            )
            .is_ok()
        );
        assert!(
            check(
                &me,
                Action::CollectPayment {
                    store: "S1",
                    at_door_of: None
                }
            )
            .is_err()
        );
    }

    #[test]
    fn store_staff_work_on_their_store_and_only_dispatch_resolves_conflicts() {
        let tablet = DeviceIdentity::store("tab-1", "S1");
        assert!(check(&tablet, Action::CreateOrder { store: "S1" }).is_ok());
        assert!(check(&tablet, Action::CreateOrder { store: "S2" }).is_err());
        let resolve = Action::OrderEvent {
            store: "S1",
            kind: OrderEventKind::ConflictResolved,
        };
        assert!(check(&tablet, resolve).is_err());
        assert!(check(&DeviceIdentity::dispatcher("ops"), resolve).is_ok());
    }
}
