//! Who may see a document. A device's credential makes it one *principal*
//! (`courier:<id>`, `store:<id>`, or `dispatch`); a document's content makes its
//! *audience*, the principals it is shared with:
//!
//! | document | audience |
//! |---|---|
//! | order | `store:<its store>`, and `courier:<c>` for the courier of each of its deliveries |
//! | delivery | `store:<its store>`, `courier:<its current courier>` |
//!
//! Dispatchers see everything. A courier therefore sees its own deliveries and the
//! orders they belong to, never the rest of its store's orders; reassigning a
//! delivery moves it (and its order) from one courier's view to the other's.

use crate::identity::{DeviceIdentity, Role};
use crate::model::Document;
use std::collections::BTreeSet;

/// The principal that sees everything.
pub const DISPATCH: &str = "dispatch";

/// The principal a device's credential makes it.
pub fn principal(identity: &DeviceIdentity) -> String {
    match identity.role {
        Role::Dispatcher => DISPATCH.to_owned(),
        Role::Store => format!("store:{}", identity.store_id.as_deref().unwrap_or_default()),
        Role::Courier => format!(
            "courier:{}",
            identity.courier_id.as_deref().unwrap_or_default()
        ),
    }
}

/// The audience of a document, from its content. `courier_of` tells the current
/// courier of a delivery by id (an order's couriers live in its deliveries).
pub fn audience(doc: &Document, courier_of: &dyn Fn(&str) -> Option<String>) -> BTreeSet<String> {
    let mut audience = BTreeSet::new();
    match doc {
        Document::Order(order) => {
            audience.insert(format!("store:{}", order.store));
            for delivery in &order.deliveries {
                if let Some(courier) = courier_of(delivery) {
                    audience.insert(format!("courier:{courier}"));
                }
            }
        }
        Document::Delivery(delivery) => {
            audience.insert(format!("store:{}", delivery.store));
            if let Some(courier) = delivery.courier() {
                audience.insert(format!("courier:{courier}"));
            }
        }
    }
    audience
}

/// Whether a principal sees a document with this audience.
pub fn sees(principal: &str, audience: &BTreeSet<String>) -> bool {
    principal == DISPATCH || audience.contains(principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_name_the_role_and_its_id() {
        assert_eq!(principal(&DeviceIdentity::dispatcher("d")), DISPATCH);
        assert_eq!(principal(&DeviceIdentity::store("t", "S1")), "store:S1");
        assert_eq!(principal(&DeviceIdentity::courier("p", "c7")), "courier:c7");
    }

    #[test]
    fn dispatchers_see_everything_others_only_their_audience() {
        let audience: BTreeSet<String> = ["store:S1".to_owned(), "courier:c7".to_owned()].into();
        assert!(sees(DISPATCH, &audience));
        assert!(sees("store:S1", &audience));
        assert!(sees("courier:c7", &audience));
        assert!(!sees("store:S2", &audience));
        assert!(!sees("courier:c8", &audience));
        assert!(sees(DISPATCH, &BTreeSet::new()));
    }
}
