//! Who sees what, on every path: the log pages a device catches up with, live
//! pushes, and what a resuming device gained or lost while it was away.

use super::Relay;
use crate::ids::DocId;
use crate::model::{Document, document};
use crate::protocol::LogEntry;
use crate::sync::audience::{self, DISPATCH};
use crate::sync::log_store::{LogStore, LogStoreError};
use std::collections::{BTreeMap, BTreeSet, HashMap};

impl<S: LogStore> Relay<S> {
    /// A document as its typed value (None when absent or still incomplete).
    pub(super) fn typed(&mut self, doc_id: &str) -> Result<Option<Document>, LogStoreError> {
        let Ok(id) = DocId::parse(doc_id) else {
            return Ok(None);
        };
        let doc = self.docs.take(&self.store, doc_id)?;
        let typed = document::read(&id, &doc).ok();
        self.docs.put(doc_id.to_owned(), doc);
        Ok(typed)
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

    /// Keep only the entries whose documents the principal sees now.
    pub(super) fn visible_entries(
        &self,
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
                    let v = audience::sees(principal, &self.store.audience_of(&entry.doc_id)?);
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

    /// What changed in a device's view between two log positions, as it reads the
    /// log from `after` up to `through`: the documents it gained (with their history
    /// up to `after`; later entries come with the log) and the documents it lost.
    /// Judged by the first change after `after` and the audience now.
    pub(super) fn view_between(
        &self,
        principal: &str,
        after: u64,
        through: u64,
    ) -> Result<(Vec<LogEntry>, Vec<String>), LogStoreError> {
        if principal == DISPATCH {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut first: BTreeMap<String, bool> = BTreeMap::new();
        for change in self.store.view_changes(principal, after)? {
            if change.seq <= through {
                first.entry(change.doc_id).or_insert(change.joined);
            }
        }
        let mut history = Vec::new();
        let mut lost = Vec::new();
        for (doc_id, first_was_join) in first {
            let now = audience::sees(principal, &self.store.audience_of(&doc_id)?);
            match (first_was_join, now) {
                (true, true) => history.extend(
                    self.store
                        .doc_log(&doc_id)?
                        .into_iter()
                        .filter(|e| e.seq <= after),
                ),
                (false, false) => lost.push(doc_id),
                _ => {}
            }
        }
        Ok((history, lost))
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
