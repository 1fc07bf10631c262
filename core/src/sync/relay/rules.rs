//! The relay's checks on what a device's change does: it must touch only
//! documents shared with the device, and its effect must be one the device's role
//! allows ([`crate::model::effect`]). And after a batch: who may now see what.

use super::visibility::ViewDelta;
use super::{Failure, Relay};
use crate::identity::DeviceIdentity;
use crate::model::Document;
use crate::model::effect::{self, Facts};
use crate::sync::audience;
use crate::sync::log_store::{AudienceUpdate, LogStore};
use crate::sync::relay_docs::Staged;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

/// The relay's knowledge of other documents, for the effect rules.
/// Documents changed earlier in the same upload are not stored yet: they are
/// looked up among the staged working copies first.
struct RelayFacts<'r, S: LogStore> {
    relay: RefCell<&'r mut Relay<S>>,
    staged: &'r [Staged],
}

impl<S: LogStore> RelayFacts<'_, S> {
    fn lookup(&self, doc_id: &str) -> Option<Document> {
        match self.staged.iter().find(|s| s.id == doc_id) {
            Some(staged) => staged.typed.clone(),
            None => self.relay.borrow_mut().typed(doc_id).ok().flatten(),
        }
    }
}

impl<S: LogStore> Facts for RelayFacts<'_, S> {
    fn courier_of(&self, delivery_id: &str) -> Option<String> {
        match self.lookup(delivery_id)? {
            Document::Delivery(d) => d.courier(),
            Document::Order(_) => None,
        }
    }

    fn store_of_order(&self, order_id: &str) -> Option<String> {
        match self.lookup(order_id)? {
            Document::Order(order) => Some(order.store),
            Document::Delivery(_) => None,
        }
    }
}

pub(super) use crate::sync::relay_docs::typed_of;

impl<S: LogStore> Relay<S> {
    /// Whether the device may touch this document at all: it must be shared with
    /// it, or not exist yet (a new document is judged by the effect rules).
    pub(super) fn may_touch(
        &mut self,
        principal: &str,
        doc_id: &str,
        exists: bool,
    ) -> Result<bool, Failure> {
        if !exists || principal == audience::DISPATCH {
            return Ok(true);
        }
        Ok(audience::sees(
            principal,
            &self.docs.audience(&self.store, doc_id)?,
        ))
    }

    /// Check the effect of turning `before` into `after` against the device's role.
    pub(super) fn check_effect(
        &mut self,
        identity: &DeviceIdentity,
        before: Option<&Document>,
        after: &Document,
        staged: &[Staged],
    ) -> Result<(), String> {
        let facts = RelayFacts {
            relay: RefCell::new(self),
            staged,
        };
        effect::check_effect(identity, before, after, &facts).map_err(|e| e.to_string())
    }

    /// The audience updates a batch implies: for every document it changed, and for
    /// the order of every delivery it changed (its couriers live in the deliveries).
    pub(super) fn audiences_after(
        &mut self,
        staged: &[Staged],
    ) -> Result<(Vec<AudienceUpdate>, ViewDelta), Failure> {
        let typed: Vec<(String, Document)> = staged
            .iter()
            .filter_map(|s| s.typed.clone().map(|t| (s.id.clone(), t)))
            .collect();
        let known_audience: HashMap<&str, &BTreeSet<String>> = staged
            .iter()
            .filter_map(|s| Some((s.id.as_str(), s.audience.as_ref()?)))
            .collect();
        let mut known: HashMap<String, Option<String>> = HashMap::new();
        let mut orders: BTreeSet<String> = BTreeSet::new();
        for (id, doc) in &typed {
            match doc {
                Document::Delivery(d) => {
                    known.insert(id.clone(), d.courier());
                    orders.insert(d.order_id.clone());
                }
                Document::Order(_) => {
                    orders.remove(id);
                }
            }
        }
        let mut docs: Vec<(String, Document)> = typed;
        for order_id in orders {
            if docs.iter().any(|(id, _)| *id == order_id) {
                continue;
            }
            if let Some(order) = self.typed(&order_id)? {
                docs.push((order_id, order));
            }
        }
        let mut updates = Vec::new();
        let mut delta = ViewDelta::default();
        for (id, doc) in docs {
            let new = self.audience_of_doc(&doc, &known)?;
            let old = match known_audience.get(id.as_str()) {
                Some(known) => (*known).clone(),
                None => self.docs.audience(&self.store, &id)?,
            };
            if new != old {
                delta.record(&id, &old, &new);
                updates.push(AudienceUpdate {
                    doc_id: id,
                    audience: new,
                });
            }
        }
        Ok((updates, delta))
    }
}
