//! The event feed for integrations: every status event and ledger entry the
//! dispatcher device holds, numbered in the order the relay's dispatcher first
//! saw them, durable in `http.db` and readable from any cursor.
//!
//! The projector listens to the dispatcher replica's observer; for each changed
//! document it reads the document and appends the events and ledger entries the
//! feed does not have yet (`UNIQUE (doc_id, item_id)`), in one transaction. At
//! start it goes over every document once, so nothing merged while the relay was
//! down, or before the observer was registered, is missed. A single writer
//! appends, so sequence numbers only grow and a reader that has seen `seq = n`
//! has seen every entry up to `n`: resuming after `n` misses nothing.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use rusqlite::Connection;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use waybill_core::replica::{ChangeOrigin, DocChange, Replica, Subscription};
use waybill_core::{DocId, DocKind, ReplicaError};

use super::dispatcher::now_ms;
use super::error::HttpError;
use super::store::{self, FeedEntry};

/// Entries read from the database per round trip while streaming.
const PAGE: u32 = 256;

/// The feed's database and the newest position, for waiting readers.
pub struct Feed {
    db: Arc<Mutex<Connection>>,
    head: watch::Sender<i64>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("head", &*self.head.borrow())
            .finish_non_exhaustive()
    }
}

impl Feed {
    /// A feed over `db` (`http.db`).
    pub fn new(db: Arc<Mutex<Connection>>) -> Result<Self, HttpError> {
        let head = {
            let conn = lock(&db)?;
            store::feed_head(&conn)?
        };
        Ok(Self {
            db,
            head: watch::channel(head).0,
        })
    }

    /// The newest position.
    pub fn head(&self) -> i64 {
        *self.head.borrow()
    }

    /// Entries after `after`, oldest first.
    pub async fn page(&self, after: i64, limit: u32) -> Result<Vec<FeedEntry>, HttpError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let conn = lock(&db)?;
            Ok(store::feed_after(&conn, after, limit)?)
        })
        .await?
    }

    /// A server-sent-event stream from `after` on: each entry is an event with
    /// `id` = its position (so `Last-Event-ID` resumes), `event` = its type and
    /// `data` = the entry as JSON. It ends when `stop` turns true.
    pub fn stream(
        self: Arc<Self>,
        after: i64,
        stop: watch::Receiver<bool>,
    ) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
        let state = (self, after, Vec::<FeedEntry>::new(), stop);
        let stream = futures_util::stream::unfold(
            state,
            |(feed, mut cursor, mut buffer, mut stop)| async move {
                loop {
                    if *stop.borrow() {
                        return None;
                    }
                    if !buffer.is_empty() {
                        let entry = buffer.remove(0);
                        cursor = entry.seq;
                        let event = Event::default()
                            .id(entry.seq.to_string())
                            .event(entry.kind.clone())
                            .json_data(&entry)
                            .unwrap_or_else(|_| Event::default().comment("unencodable entry"));
                        return Some((Ok(event), (feed, cursor, buffer, stop)));
                    }
                    let mut head = feed.head.subscribe();
                    match feed.page(cursor, PAGE).await {
                        Ok(page) if !page.is_empty() => {
                            buffer = page;
                            continue;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read the event feed");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                    tokio::select! {
                        _ = head.changed() => {}
                        _ = stop.changed() => {}
                    }
                }
            },
        );
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
    }
}

/// Keeps the feed up to date with the dispatcher replica until dropped.
pub struct Projector {
    _subscription: Subscription,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector").finish_non_exhaustive()
    }
}

impl Drop for Projector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Projector {
    /// Listen to `replica` and append what changes to `feed`; first go over
    /// every document it holds.
    pub fn start(replica: Arc<Replica>, feed: Arc<Feed>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<DocId>>();
        let subscription = replica.subscribe(Arc::new(move |changes: &[DocChange]| {
            let ids = changes
                .iter()
                .filter(|c| c.origin != ChangeOrigin::Removed)
                .map(|c| c.doc_id.clone())
                .collect();
            let _ = tx.send(ids);
        }));
        let task = tokio::spawn(async move {
            let mut pending: BTreeSet<DocId> = match replica.doc_ids() {
                Ok(ids) => ids.into_iter().collect(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot list the dispatcher's documents");
                    BTreeSet::new()
                }
            };
            loop {
                while let Ok(ids) = rx.try_recv() {
                    pending.extend(ids);
                }
                if pending.is_empty() {
                    match rx.recv().await {
                        Some(ids) => pending.extend(ids),
                        None => return,
                    }
                    continue;
                }
                let batch: Vec<DocId> = std::mem::take(&mut pending).into_iter().collect();
                let (replica2, feed2, batch2) =
                    (Arc::clone(&replica), Arc::clone(&feed), batch.clone());
                let done =
                    tokio::task::spawn_blocking(move || project(&replica2, &feed2, &batch2)).await;
                let error = match done {
                    Ok(Ok(head)) => {
                        feed.head.send_replace(head);
                        continue;
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                // Keep the documents and try again: the feed must not skip them.
                tracing::error!(error = %error, "cannot update the event feed; retrying");
                pending.extend(batch);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Self {
            _subscription: subscription,
            task,
        }
    }
}

/// Append the new events and ledger entries of `docs`; returns the new head.
fn project(replica: &Replica, feed: &Feed, docs: &[DocId]) -> Result<i64, HttpError> {
    let mut items = Vec::new();
    for id in docs {
        match items_of(replica, id) {
            Ok(mut found) => items.append(&mut found),
            // Gone (unshared) or not complete yet: a later change brings it back.
            Err(ReplicaError::NotFound { .. } | ReplicaError::Incomplete { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut conn = lock(&feed.db)?;
    let tx = conn.transaction()?;
    let now = now_ms();
    for (doc_id, item_id, kind, data) in &items {
        store::feed_append(&tx, doc_id, item_id, kind, data, now)?;
    }
    let head = store::feed_head(&tx)?;
    tx.commit()?;
    Ok(head)
}

type Item = (String, String, &'static str, serde_json::Value);

fn items_of(replica: &Replica, id: &DocId) -> Result<Vec<Item>, ReplicaError> {
    let doc = id.to_string();
    let mut items = Vec::new();
    match id.kind() {
        DocKind::Order => {
            let order = replica.order(id)?;
            for event in &order.timeline {
                items.push((
                    doc.clone(),
                    event.id.clone(),
                    "order.event",
                    json!({"order_id": order.id, "number": order.number, "store": order.store,
                           "channel": order.channel, "event": event, "status": order.status}),
                ));
            }
            for entry in &order.payments {
                items.push((
                    doc.clone(),
                    entry.id.clone(),
                    "order.payment",
                    json!({"order_id": order.id, "number": order.number, "store": order.store,
                           "entry": entry, "balance": order.balance}),
                ));
            }
        }
        DocKind::Delivery => {
            let delivery = replica.delivery(id)?;
            for event in &delivery.timeline {
                items.push((
                    doc.clone(),
                    event.id.clone(),
                    "delivery.event",
                    json!({"delivery_id": delivery.id, "order_id": delivery.order_id,
                           "store": delivery.store, "courier": delivery.courier,
                           "event": event, "status": delivery.status}),
                ));
            }
        }
    }
    Ok(items)
}

pub(crate) fn lock(
    db: &Mutex<Connection>,
) -> Result<std::sync::MutexGuard<'_, Connection>, HttpError> {
    db.lock()
        .map_err(|_| HttpError::Internal("the HTTP database lock is poisoned".into()))
}
