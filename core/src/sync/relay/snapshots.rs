//! Snapshots for a device that has never synced (protocol 1.1): instead of the whole
//! log, each document it may see as one saved Automerge document, a page at a time,
//! then the log from the position the snapshots cover.
//!
//! The position is the log head read *before* the list of documents: every document
//! then holds at least every change logged up to it (a page built later may hold
//! more, which the log after it repeats harmlessly), and a document that joins or
//! leaves the device's view after it reaches the device through the log pages'
//! view changes, exactly as for a resuming device.

use super::{ConnId, Relay};
use crate::protocol::{DocSnapshot, LogEntry, Message, Snapshots};
use crate::sync::audience::{self, DISPATCH};
use crate::sync::log_store::{LogStore, LogStoreError, SavedDoc};
use crate::sync::relay_docs;
use std::collections::{HashMap, VecDeque};

/// The documents still to send to one device, and the log position they cover.
pub(super) struct SnapshotQueue {
    remaining: VecDeque<String>,
    through: u64,
}

impl<S: LogStore> Relay<S> {
    /// What a never-synced device of `principal` is sent before the log.
    pub(super) fn open_snapshots(&self, principal: &str) -> Result<SnapshotQueue, LogStoreError> {
        let through = self.store.head()?;
        let docs = if principal == DISPATCH {
            self.store.doc_ids()?
        } else {
            self.store.view(principal)?
        };
        Ok(SnapshotQueue {
            remaining: docs.into(),
            through,
        })
    }

    /// Queue the next page of snapshots; after the last, the device reads the log
    /// from the position they cover. Fresh snapshots come from the store as they
    /// are; the others are rebuilt from the log and kept for the next device.
    pub(super) fn queue_snapshot_page(&mut self, conn: ConnId) -> Result<(), LogStoreError> {
        let max_docs = self.config.snapshot_docs.max(1);
        let max_bytes = self.config.page_bytes;
        let Some(peer) = self.peer_mut(conn) else {
            return Ok(());
        };
        let principal = peer.principal.clone();
        let Some(queue) = peer.snapshots.as_mut() else {
            return Ok(());
        };
        let through = queue.through;
        let take = queue.remaining.len().min(max_docs);
        let listed: Vec<String> = queue.remaining.drain(..take).collect();
        // Only documents the device may still see: one that left its view since the
        // list was made is not sent (the log from `through` tells it to remove it,
        // which it does not hold), so nothing written after it left can reach it.
        let mut ids = Vec::with_capacity(listed.len());
        for doc_id in listed {
            if principal == DISPATCH
                || audience::sees(&principal, &self.docs.audience(&self.store, &doc_id)?)
            {
                ids.push(doc_id);
            }
        }
        // Cached documents changed since their last snapshot are saved first, so
        // the store's snapshots of them are fresh.
        self.flush_snapshots(true);
        let mut found: HashMap<String, Vec<u8>> =
            self.store.fresh_snapshots(&ids)?.into_iter().collect();
        let stale: Vec<String> = ids
            .iter()
            .filter(|id| !found.contains_key(*id))
            .cloned()
            .collect();
        if !stale.is_empty() {
            let rebuilt = self.rebuild_snapshots(&stale)?;
            if let Err(e) = self.store.put_snapshots(&rebuilt) {
                tracing::warn!(error = %e, "cannot keep rebuilt snapshots");
            }
            found.extend(rebuilt.into_iter().map(|s| (s.doc_id, s.bytes)));
        }
        let mut docs = Vec::with_capacity(ids.len());
        let mut bytes = 0usize;
        let mut unsent = Vec::new();
        for doc_id in ids {
            if bytes >= max_bytes {
                unsent.push(doc_id);
                continue;
            }
            // A document without one was listed but has only waiting changes: they
            // reach the device through the log once complete.
            if let Some(saved) = found.remove(&doc_id) {
                bytes += saved.len();
                docs.push(DocSnapshot {
                    doc_id,
                    bytes: saved,
                });
            }
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return Ok(());
        };
        let Some(peer) = c.peer.as_mut() else {
            return Ok(());
        };
        let done = match peer.snapshots.as_mut() {
            Some(queue) => {
                for doc_id in unsent.into_iter().rev() {
                    queue.remaining.push_front(doc_id);
                }
                queue.remaining.is_empty()
            }
            None => true,
        };
        if done {
            // The log continues from the snapshots' position.
            peer.snapshots = None;
            peer.sent_through = through;
            tracing::info!(cursor = through, "snapshots sent; continuing with the log");
        }
        c.out.push_back(Message::Snapshots(Snapshots {
            docs,
            through,
            done,
        }));
        Ok(())
    }

    /// Write the snapshots of documents committed since they were last saved: those
    /// the cache let go and (with `cached`) those still cached; nothing is rebuilt.
    /// A failure only costs work later: the log stays the truth.
    pub(super) fn flush_snapshots(&mut self, cached: bool) {
        let saved = self.docs.take_snapshots(cached);
        if saved.is_empty() {
            return;
        }
        if let Err(e) = self.store.put_snapshots(&saved) {
            tracing::warn!(error = %e, documents = saved.len(), "cannot keep snapshots");
        }
    }

    /// Snapshots rebuilt from the log, each at the version read before its changes
    /// (so one that holds more than its version says is never served as fresh).
    fn rebuild_snapshots(&self, doc_ids: &[String]) -> Result<Vec<SavedDoc>, LogStoreError> {
        let mut versions = Vec::with_capacity(doc_ids.len());
        for doc_id in doc_ids {
            versions.push(self.store.doc_version(doc_id)?);
        }
        let mut out = Vec::with_capacity(doc_ids.len());
        for ((doc_id, entries), version) in group_by_doc(self.store.docs_log(doc_ids)?, doc_ids)
            .into_iter()
            .zip(versions)
        {
            if entries.is_empty() {
                continue;
            }
            out.push(SavedDoc {
                // A change that no longer decodes fails the page (the device comes
                // back) rather than leave a document out of what the cursor passes.
                bytes: relay_docs::rebuild(&doc_id, entries)?.save(),
                doc_id,
                version,
            });
        }
        Ok(out)
    }
}

/// Entries grouped by document, in the order of `ids` (every id present).
fn group_by_doc(entries: Vec<LogEntry>, ids: &[String]) -> Vec<(String, Vec<Vec<u8>>)> {
    let mut at: HashMap<&str, usize> = HashMap::with_capacity(ids.len());
    let mut groups: Vec<(String, Vec<Vec<u8>>)> = Vec::with_capacity(ids.len());
    for id in ids {
        at.entry(id.as_str()).or_insert_with(|| {
            groups.push((id.clone(), Vec::new()));
            groups.len() - 1
        });
    }
    for entry in entries {
        if let Some(&i) = at.get(entry.doc_id.as_str()) {
            groups[i].1.push(entry.bytes);
        }
    }
    groups
}
