//! Who sees what, on every path: the log pages a device catches up with, live
//! pushes, and what a resuming device gained or lost while it was away.

use super::Relay;
use crate::ids::DocId;
use crate::model::Document;
use crate::protocol::LogEntry;
use crate::sync::audience::{self, DISPATCH};
use crate::sync::log_store::{LogStore, LogStoreError};
use std::collections::{BTreeMap, BTreeSet, HashMap};

impl<S: LogStore> Relay<S> {
    /// A document as its typed value (None when absent or still incomplete).
    pub(super) fn typed(&mut self, doc_id: &str) -> Result<Option<Document>, LogStoreError> {
        if DocId::parse(doc_id).is_err() {
            return Ok(None);
        }
        self.docs.typed(&self.store, doc_id)
    }

    /// The current courier of a delivery, as the relay holds it.
    pub(super) fn courier_of(
        &mut self,
        delivery_id: &str,
    ) -> Result<Option<String>, LogStoreError> {
        Ok(match self.typed(delivery_id)? {
            Some(Document::Delivery(d)) => d.courier(),
            _ => None,
        })
    }

    /// The audience of a document's typed value; `known` gives couriers of
    /// deliveries that are changing in the same batch (not stored yet).
    pub(super) fn audience_of_doc(
        &mut self,
        doc: &Document,
        known: &HashMap<String, Option<String>>,
    ) -> Result<BTreeSet<String>, LogStoreError> {
        let mut couriers = HashMap::new();
        if let Document::Order(order) = doc {
            for delivery in &order.deliveries {
                let courier = match known.get(delivery) {
                    Some(c) => c.clone(),
                    None => self.courier_of(delivery)?,
                };
                couriers.insert(delivery.clone(), courier);
            }
        }
        Ok(audience::audience(doc, &|d| {
            couriers.get(d).cloned().flatten()
        }))
    }

    /// Keep only the entries whose documents the principal sees now (live pushes,
    /// where the batch's own view changes come separately in a [`ViewDelta`]).
    pub(super) fn visible_entries(
        &mut self,
        principal: &str,
        entries: Vec<LogEntry>,
    ) -> Result<Vec<LogEntry>, LogStoreError> {
        if principal == DISPATCH {
            return Ok(entries);
        }
        let mut seen: HashMap<String, bool> = HashMap::new();
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let visible = match seen.get(&entry.doc_id) {
                Some(v) => *v,
                None => {
                    let v =
                        audience::sees(principal, &self.docs.audience(&self.store, &entry.doc_id)?);
                    seen.insert(entry.doc_id.clone(), v);
                    v
                }
            };
            if visible {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// What a device reading the log from `after` through `through` is sent, so that
    /// holding exactly its view as of `after` it ends holding exactly its view as of
    /// `through`: entries of documents in its view at both ends; the whole history
    /// (up to `through`) of documents that joined; and the ids of documents that
    /// left, to remove. Membership at a position is read from the view changes; a
    /// document no longer in the view now counts as gone at `through` already.
    pub(super) fn page_view(
        &self,
        principal: &str,
        after: u64,
        through: u64,
        entries: Vec<LogEntry>,
    ) -> Result<(Vec<LogEntry>, Vec<String>), LogStoreError> {
        if principal == DISPATCH {
            return Ok((entries, Vec::new()));
        }
        // For each document with a view change after `after`: its first change after
        // `after` and its first change after `through` give membership at both ends.
        let mut at_after: BTreeMap<String, bool> = BTreeMap::new();
        let mut at_through: BTreeMap<String, bool> = BTreeMap::new();
        for change in self.store.view_changes(principal, after)? {
            at_after
                .entry(change.doc_id.clone())
                .or_insert(!change.joined);
            if change.seq > through {
                at_through.entry(change.doc_id).or_insert(!change.joined);
            }
        }
        // Every document of the page and every one whose view changed: their
        // audiences now, in one look-up.
        let mut ids: Vec<&str> = entries.iter().map(|e| e.doc_id.as_str()).collect();
        ids.extend(at_after.keys().map(String::as_str));
        ids.sort_unstable();
        ids.dedup();
        let audiences = self.store.audiences_of(&ids)?;
        let mut member: HashMap<String, (bool, bool)> = HashMap::new();
        let mut membership = |doc_id: &str| -> Result<(bool, bool), LogStoreError> {
            if let Some(m) = member.get(doc_id) {
                return Ok(*m);
            }
            let now = audiences
                .get(doc_id)
                .is_some_and(|audience| audience::sees(principal, audience));
            // A document that has left the view since `through` is treated as
            // leaving now: nothing more of it is sent to a device no longer allowed it.
            let m = (
                at_after.get(doc_id).copied().unwrap_or(now),
                at_through.get(doc_id).copied().unwrap_or(now) && now,
            );
            member.insert(doc_id.to_owned(), m);
            Ok(m)
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            if membership(&entry.doc_id)? == (true, true) {
                out.push(entry);
            }
        }
        let mut unshared = Vec::new();
        let changed: Vec<String> = at_after.keys().cloned().collect();
        for doc_id in changed {
            match membership(&doc_id)? {
                (false, true) => out.extend(
                    self.store
                        .doc_log(&doc_id)?
                        .into_iter()
                        .filter(|e| e.seq <= through),
                ),
                (true, false) => unshared.push(doc_id),
                _ => {}
            }
        }
        out.sort_by_key(|e| e.seq);
        out.dedup_by_key(|e| e.seq);
        Ok((out, unshared))
    }

    /// The whole logged history of documents a device has just been given.
    pub(super) fn history_of(&self, docs: &[String]) -> Result<Vec<LogEntry>, LogStoreError> {
        let mut history = Vec::new();
        for doc_id in docs {
            history.extend(self.store.doc_log(doc_id)?);
        }
        Ok(history)
    }
}

/// Who gained and who lost which documents in one batch, by principal.
#[derive(Debug, Default)]
pub(super) struct ViewDelta {
    pub(super) gained: HashMap<String, Vec<String>>,
    pub(super) lost: HashMap<String, Vec<String>>,
}

impl ViewDelta {
    /// Record a document's audience going from `old` to `new`.
    pub(super) fn record(&mut self, doc_id: &str, old: &BTreeSet<String>, new: &BTreeSet<String>) {
        for principal in new.difference(old) {
            self.gained
                .entry(principal.clone())
                .or_default()
                .push(doc_id.to_owned());
        }
        for principal in old.difference(new) {
            self.lost
                .entry(principal.clone())
                .or_default()
                .push(doc_id.to_owned());
        }
    }
}
