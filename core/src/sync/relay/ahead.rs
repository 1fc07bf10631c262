//! A group's uploads applied ahead of their checks, on several cores.
//!
//! Automerge's apply and the typed read after it are most of what an upload costs
//! the relay, and they need nothing but the document and the changes. The checks
//! cannot run out of order (who may do what depends on what earlier uploads of the
//! group did), but the applies can: before the group's uploads are checked one by
//! one, every document they bring new changes to is taken from the cache and its
//! uploads are applied to it in order, all documents at once ([`Relay::apply_ahead`]).
//!
//! The check of an upload then takes its step if the step is exactly what the
//! upload would apply now ([`Ahead::next_is`]): the same upload, the same new
//! changes (a refusal earlier in the group can take some away), on a copy holding
//! what the earlier steps left, all of them accepted. Anything else, a refusal
//! above all, drops the document's remaining steps ([`Relay::settle`]): its copy is
//! rebuilt from the store and what the group accepted, and its later uploads are
//! applied one at a time, as without this module. So the verdicts, the log and the
//! copies are the same either way; the group tests and the simulation check that.

use super::ingest::{DocGroup, Ingest, Known, PendingUpload, sort_out};
use super::{Failure, LogStore, Relay};
use crate::ids::DocId;
use crate::model::Document;
use crate::parallel;
use crate::sync::relay_docs::{self, Applied, Refused, Staged, typed_of};
use std::collections::{HashMap, HashSet, VecDeque};

/// Groups with fewer new changes than this are applied on the relay's thread.
const PARALLEL_FROM: usize = 16;

/// One upload's new changes to a document, applied ahead.
pub(super) struct Step {
    /// The upload, by its place in the group.
    pub(super) upload: usize,
    /// The changes applied, by hash, in the order sent.
    pub(super) hashes: Vec<Vec<u8>>,
    /// Whether the document existed before the step.
    pub(super) exists: bool,
    /// Its typed value before the step.
    pub(super) before: Option<Document>,
    pub(super) applied: Result<Applied, Refused>,
}

/// A document's steps not taken yet, and its copy until the first one is (then the
/// copy is the group's, in `Ingest::docs`).
pub(super) struct Ahead {
    staged: Option<Staged>,
    steps: VecDeque<Step>,
}

/// The documents applied ahead, by id.
pub(super) type Aheads = HashMap<String, Ahead>;

impl Ahead {
    /// Whether the next step is what `upload` would apply now, given whether the
    /// group holds the copy already (`in_group`: earlier steps were taken).
    pub(super) fn next_is(&self, upload: usize, hashes: &[Vec<u8>], in_group: bool) -> bool {
        self.staged.is_some() != in_group
            && self
                .steps
                .front()
                .is_some_and(|s| s.upload == upload && s.hashes == hashes)
    }

    /// Take the next step, with the copy when it is the first.
    pub(super) fn take(&mut self) -> Option<(Step, Option<Staged>)> {
        let step = self.steps.pop_front()?;
        Some((step, self.staged.take()))
    }
}

/// A document to apply ahead: its copy and the uploads bringing it changes.
struct Job<'g> {
    doc_id: String,
    id: DocId,
    staged: Staged,
    uploads: Vec<(usize, &'g DocGroup)>,
}

impl Job<'_> {
    /// Apply the uploads in order, as the checks would, until one fails to apply.
    fn run(&mut self, known: &Known) -> VecDeque<Step> {
        let none = HashSet::new();
        let mut steps = VecDeque::with_capacity(self.uploads.len());
        let mut typed = self.staged.typed.take();
        for &(upload, group) in &self.uploads {
            let sorted = sort_out(group, known, &none);
            if sorted.fresh.is_empty() {
                continue;
            }
            let exists = !self.staged.doc.get_heads().is_empty();
            let before = typed
                .take()
                .or_else(|| typed_of(&self.doc_id, &self.staged.doc));
            let applied = relay_docs::apply_checked(
                &mut self.staged.doc,
                &self.id,
                before.as_ref(),
                sorted.fresh.into_iter().cloned().collect(),
            );
            let failed = match &applied {
                Ok(applied) => {
                    typed.clone_from(&applied.after);
                    false
                }
                Err(_) => true,
            };
            steps.push_back(Step {
                upload,
                hashes: sorted.hashes,
                exists,
                before,
                applied,
            });
            if failed {
                // The copy is half-updated: nothing more can be applied to it.
                break;
            }
        }
        if steps.is_empty() {
            self.staged.typed = typed;
        }
        steps
    }
}

impl<S: LogStore> Relay<S> {
    /// Take every document the group brings new changes to and apply each one's
    /// uploads to it, in order, spread over the cores when there is enough to do.
    pub(super) fn apply_ahead(
        &mut self,
        pending: &[PendingUpload],
        known: &Known,
    ) -> Result<Aheads, Failure> {
        let mut jobs: Vec<Job<'_>> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut work = 0;
        for (upload, pending) in pending.iter().enumerate() {
            for group in &pending.groups {
                let Ok(id) = DocId::parse(&group.doc_id) else {
                    continue;
                };
                let new = group
                    .decoded
                    .iter()
                    .flatten()
                    .filter(|c| !known.is_stored(&c.hash().0))
                    .count();
                if new == 0 {
                    continue;
                }
                work += new;
                match index.get(group.doc_id.as_str()) {
                    Some(&i) => jobs[i].uploads.push((upload, group)),
                    None => {
                        index.insert(&group.doc_id, jobs.len());
                        jobs.push(Job {
                            doc_id: group.doc_id.clone(),
                            id,
                            staged: self.docs.take_staged(&self.store, &group.doc_id)?,
                            uploads: vec![(upload, group)],
                        });
                    }
                }
            }
        }
        let threads = if jobs.len() < 2 {
            1
        } else {
            parallel::threads_for(work, PARALLEL_FROM)
        };
        let _span = tracing::debug_span!("apply_ahead", docs = jobs.len(), changes = work, threads)
            .entered();
        let steps = parallel::map_mut(&mut jobs, threads, |job| job.run(known));
        Ok(jobs
            .into_iter()
            .zip(steps)
            .map(|(job, steps)| {
                let ahead = Ahead {
                    staged: Some(job.staged),
                    steps,
                };
                (job.doc_id, ahead)
            })
            .collect())
    }

    /// Drop what is left of a document's steps: put back a copy nothing was
    /// applied to, forget one that holds steps not taken, and rebuild the group's
    /// copy if it holds any (from the store and what the group accepted).
    pub(super) fn settle(
        &mut self,
        doc_id: &str,
        ahead: Ahead,
        out: &mut Ingest,
    ) -> Result<(), Failure> {
        match ahead.staged {
            Some(staged) if ahead.steps.is_empty() => self.docs.put_staged(staged),
            Some(_) => self.docs.evict(doc_id),
            None if ahead.steps.is_empty() => {}
            None => {
                if let Some(i) = out.docs.iter().position(|s| s.id == doc_id) {
                    out.docs.swap_remove(i);
                    self.docs.evict(doc_id);
                    self.restage(doc_id, out)?;
                }
            }
        }
        Ok(())
    }
}
