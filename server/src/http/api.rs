//! The `/api/v1` handlers. Writes go through the [`Dispatcher`] (a device);
//! lists read the dispatcher's index tables; details read its documents.
//!
//! [`Dispatcher`]: super::dispatcher::Dispatcher

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use waybill_core::model::{EventDetails, GeoPoint, NewDelivery, NewOrder, Stop, TimeWindow};
use waybill_core::replica::Replica;
use waybill_core::{DocId, DocKind, ReplicaError};

use super::AppState;
use super::dispatcher::{Verdict, now_ms};
use super::error::HttpError;
use super::feed::lock;
use super::kpi::{self, OrderFacts};
use super::store::{self, IdempotentRequest, ListQuery};
use crate::admin_store::AdminStore;

/// Default page size of lists.
const DEFAULT_LIMIT: u32 = 50;
/// Largest page size of lists.
const MAX_LIMIT: u32 = 500;
/// Longest idempotency key accepted.
const MAX_KEY_LEN: usize = 200;
/// Most orders a KPI request reads.
const KPI_MAX_ORDERS: usize = 50_000;

type Params<T> = Result<Query<T>, QueryRejection>;

fn params<T>(q: Params<T>) -> Result<T, HttpError> {
    q.map(|Query(t)| t)
        .map_err(|e| HttpError::BadRequest(e.body_text()))
}

fn doc_id(raw: &str, kind: DocKind) -> Result<DocId, HttpError> {
    let id = DocId::parse(raw).map_err(|e| HttpError::NotFound(e.to_string()))?;
    if id.kind() != kind {
        return Err(HttpError::NotFound(format!(
            "{raw} is not a{} {kind}",
            if kind == DocKind::Order { "n" } else { "" }
        )));
    }
    Ok(id)
}

async fn blocking<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&AppState) -> Result<T, HttpError> + Send + 'static,
) -> Result<T, HttpError> {
    let state = Arc::clone(state);
    tokio::task::spawn_blocking(move || f(&state)).await?
}

/// The verdict as a response: 201/200 when acknowledged, 202 when pending,
/// 403 when the relay refused.
fn written(
    verdict: Verdict,
    created: bool,
    body: Value,
    location: Option<String>,
) -> Result<Response, HttpError> {
    let status = match &verdict {
        Verdict::Refused { code, reason } => {
            return Err(HttpError::RefusedByRelay {
                code: code.clone(),
                reason: reason.clone(),
            });
        }
        Verdict::Pending => StatusCode::ACCEPTED,
        Verdict::Acknowledged if created => StatusCode::CREATED,
        Verdict::Acknowledged => StatusCode::OK,
    };
    let mut body = body;
    body["sync"] = json!(verdict.as_str());
    let mut response = (status, Json(body)).into_response();
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

// ---------------------------------------------------------------- orders

/// `POST /api/v1/orders` with `Idempotency-Key`: ingest an order.
pub async fn create_order(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    let key = headers
        .get("idempotency-key")
        .ok_or_else(|| {
            HttpError::BadRequest(
                "the Idempotency-Key header is required (one unique key per order, reused on retries)"
                    .into(),
            )
        })?
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
        .ok_or_else(|| {
            HttpError::BadRequest(format!(
                "the Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
            ))
        })?
        .to_owned();
    let new: NewOrder = HttpError::parse_json(&body, "order")?;
    // The hash of the parsed order: key order and spacing do not matter.
    let canonical = serde_json::to_vec(&new).map_err(|e| HttpError::Internal(e.to_string()))?;
    let request_hash: String = Sha256::digest(&canonical)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    // One ingest at a time: two retries of one key never both create an order.
    let serial = state.ingest.lock().await;
    let k = key.clone();
    let previous = blocking(&state, move |s| {
        Ok(store::idempotency_get(&*lock(&s.http_db)?, &k)?)
    })
    .await?;
    if let Some(previous) = previous {
        if previous.request_hash != request_hash {
            return Err(HttpError::IdempotencyKeyReused(key));
        }
        return replay(&state, &previous.order_id).await;
    }
    let db = Arc::clone(&state.http_db);
    let (order_id, changes) = state
        .dispatcher
        .apply(move |replica| {
            let id = replica.create_order(&new)?;
            let remembered = IdempotentRequest {
                request_hash,
                order_id: id.to_string(),
            };
            store::idempotency_put(&*lock(&db)?, &key, &remembered, now_ms())?;
            Ok((id.clone(), vec![id]))
        })
        .await?;
    // The key is stored: retries find it while this one waits for the relay.
    drop(serial);
    let verdict = state.dispatcher.settle(changes).await?;
    tracing::info!(order = %order_id, sync = verdict.as_str(), "order ingested");
    let view = order_view(&state, &order_id).await?;
    written(
        verdict,
        true,
        json!({"order": view}),
        Some(format!("/api/v1/orders/{order_id}")),
    )
}

/// A retried ingest: the order the key created, as it is now.
async fn replay(state: &Arc<AppState>, order_id: &str) -> Result<Response, HttpError> {
    let id = doc_id(order_id, DocKind::Order)?;
    let view = order_view(state, &id).await?;
    if let Some(refused) = view["refused"].as_array().and_then(|r| r.first()) {
        return Err(HttpError::RefusedByRelay {
            code: refused["code"].as_str().unwrap_or_default().to_owned(),
            reason: refused["reason"].as_str().unwrap_or_default().to_owned(),
        });
    }
    let pending = {
        let replica = Arc::clone(&state.dispatcher.replica);
        let order = order_id.to_owned();
        tokio::task::spawn_blocking(move || {
            replica
                .outbox(100_000)
                .map(|o| o.iter().any(|e| e.doc_id == order))
        })
        .await??
    };
    let verdict = if pending {
        Verdict::Pending
    } else {
        Verdict::Acknowledged
    };
    let mut response = written(verdict, false, json!({"order": view}), None)?;
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(response)
}

async fn order_view(state: &Arc<AppState>, id: &DocId) -> Result<Value, HttpError> {
    let replica = Arc::clone(&state.dispatcher.replica);
    let id = id.clone();
    let view = tokio::task::spawn_blocking(move || replica.order(&id)).await??;
    serde_json::to_value(view).map_err(|e| HttpError::Internal(e.to_string()))
}

async fn delivery_view(state: &Arc<AppState>, id: &DocId) -> Result<Value, HttpError> {
    let replica = Arc::clone(&state.dispatcher.replica);
    let id = id.clone();
    let view = tokio::task::spawn_blocking(move || replica.delivery(&id)).await??;
    serde_json::to_value(view).map_err(|e| HttpError::Internal(e.to_string()))
}

/// Filters of `GET /api/v1/orders`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderParams {
    status: Option<String>,
    store: Option<String>,
    channel: Option<String>,
    customer_id: Option<String>,
    created_from_ms: Option<i64>,
    created_before_ms: Option<i64>,
    limit: Option<u32>,
    cursor: Option<String>,
}

fn page_limit(limit: Option<u32>) -> Result<u32, HttpError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        n => Err(HttpError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT}, got {n}"
        ))),
    }
}

fn cursor(raw: Option<String>, kind: DocKind) -> Result<Option<String>, HttpError> {
    raw.map(|c| {
        DocId::parse(&c)
            .ok()
            .filter(|id| id.kind() == kind)
            .map(|id| id.to_string())
            .ok_or_else(|| HttpError::BadRequest(format!("{c:?} is not a cursor of this list")))
    })
    .transpose()
}

fn equal(pairs: [(&'static str, Option<String>); 4]) -> Vec<(&'static str, String)> {
    pairs
        .into_iter()
        .filter_map(|(column, value)| value.map(|v| (column, v)))
        .collect()
}

/// `GET /api/v1/orders`: newest first, cursor-paginated.
pub async fn list_orders(
    State(state): State<Arc<AppState>>,
    q: Params<OrderParams>,
) -> Result<Json<Value>, HttpError> {
    let p = params(q)?;
    let query = ListQuery {
        equal: equal([
            ("status", p.status),
            ("store", p.store),
            ("channel", p.channel),
            ("customer_id", p.customer_id),
        ]),
        created_from_ms: p.created_from_ms,
        created_before_ms: p.created_before_ms,
        before_id: cursor(p.cursor, DocKind::Order)?,
        limit: page_limit(p.limit)?,
    };
    let rows = blocking(&state, move |s| {
        Ok(store::orders(&*lock(&s.read_model)?, &query).map(|rows| (rows, query.limit))?)
    })
    .await?;
    let (rows, limit) = rows;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    Ok(Json(json!({"items": rows, "next_cursor": next})))
}

/// `GET /api/v1/orders/{id}`: the full order view.
pub async fn get_order(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let id = doc_id(&id, DocKind::Order)?;
    Ok(Json(order_view(&state, &id).await?))
}

/// Body of `POST /api/v1/orders/{id}/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    kind: String,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    location: Option<GeoPoint>,
}

/// `POST /api/v1/orders/{id}/events`: record an order event (`confirmed`,
/// `cancelled`…) as the dispatcher.
pub async fn record_order_event(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, HttpError> {
    let id = doc_id(&id, DocKind::Order)?;
    let body: EventBody = HttpError::parse_json(&body, "event")?;
    let details = EventDetails {
        note: body.note,
        location: body.location,
        resolution: None,
    };
    event(&state, id, body.kind, details).await
}

async fn event(
    state: &Arc<AppState>,
    id: DocId,
    kind: String,
    details: EventDetails,
) -> Result<Response, HttpError> {
    let doc = id.clone();
    let (event_id, verdict) = state
        .dispatcher
        .write(move |replica| {
            let event = replica.record_event(&doc, &kind, &details)?;
            Ok((event, touched(replica, &doc)))
        })
        .await?;
    let view = match id.kind() {
        DocKind::Order => order_view(state, &id).await?,
        DocKind::Delivery => delivery_view(state, &id).await?,
    };
    written(
        verdict,
        false,
        json!({"event_id": event_id, "document": view}),
        None,
    )
}

/// The documents an event on `doc` may change: itself, and a delivery's order
/// (a `delivered` completes it).
fn touched(replica: &Replica, doc: &DocId) -> Vec<DocId> {
    let mut docs = vec![doc.clone()];
    if doc.kind() == DocKind::Delivery
        && let Ok(view) = replica.delivery(doc)
        && let Ok(order) = DocId::parse(&view.order_id)
    {
        docs.push(order);
    }
    docs
}

/// Body of the `resolve` endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    resolution: String,
    #[serde(default)]
    note: Option<String>,
}

/// `POST /api/v1/orders/{id}/resolve`: record `conflict_resolved` choosing an outcome.
pub async fn resolve_order(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, HttpError> {
    resolve(&state, doc_id(&id, DocKind::Order)?, &body).await
}

/// `POST /api/v1/deliveries/{id}/resolve`.
pub async fn resolve_delivery(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, HttpError> {
    resolve(&state, doc_id(&id, DocKind::Delivery)?, &body).await
}

async fn resolve(state: &Arc<AppState>, id: DocId, body: &[u8]) -> Result<Response, HttpError> {
    let body: ResolveBody = HttpError::parse_json(body, "resolution")?;
    let details = EventDetails {
        note: body.note,
        location: None,
        resolution: Some(body.resolution),
    };
    event(state, id, "conflict_resolved".into(), details).await
}

// ---------------------------------------------------------------- deliveries

/// Filters of `GET /api/v1/deliveries`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryParams {
    status: Option<String>,
    courier: Option<String>,
    store: Option<String>,
    order_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `GET /api/v1/deliveries`: newest first, cursor-paginated.
pub async fn list_deliveries(
    State(state): State<Arc<AppState>>,
    q: Params<DeliveryParams>,
) -> Result<Json<Value>, HttpError> {
    let p = params(q)?;
    let query = ListQuery {
        equal: equal([
            ("status", p.status),
            ("courier", p.courier),
            ("store", p.store),
            ("order_id", p.order_id),
        ]),
        before_id: cursor(p.cursor, DocKind::Delivery)?,
        limit: page_limit(p.limit)?,
        ..ListQuery::default()
    };
    let (rows, limit) = blocking(&state, move |s| {
        Ok(store::deliveries(&*lock(&s.read_model)?, &query).map(|rows| (rows, query.limit))?)
    })
    .await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    Ok(Json(json!({"items": rows, "next_cursor": next})))
}

/// `GET /api/v1/deliveries/{id}`.
pub async fn get_delivery(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let id = doc_id(&id, DocKind::Delivery)?;
    Ok(Json(delivery_view(&state, &id).await?))
}

/// Body of `POST /api/v1/deliveries/{id}/assign`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    courier: String,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    window: Option<TimeWindow>,
}

/// `POST /api/v1/deliveries/{id}/assign`: (re)assign the delivery's courier.
pub async fn assign_delivery(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, HttpError> {
    let id = doc_id(&id, DocKind::Delivery)?;
    assign(&state, id, &body).await
}

/// `POST /api/v1/orders/{id}/assign`: assign a courier to an order (creates its
/// delivery, or reassigns the open one).
pub async fn assign_order(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, HttpError> {
    let id = doc_id(&id, DocKind::Order)?;
    assign(&state, id, &body).await
}

async fn assign(state: &Arc<AppState>, id: DocId, body: &[u8]) -> Result<Response, HttpError> {
    let body: AssignBody = HttpError::parse_json(body, "assignment")?;
    let (assigned, verdict) = state
        .dispatcher
        .write(move |replica| {
            let order = match id.kind() {
                DocKind::Order => id,
                DocKind::Delivery => DocId::parse(&replica.delivery(&id)?.order_id)?,
            };
            let new = NewDelivery {
                stop: body.stop,
                window: body.window,
            };
            let assigned = replica.assign_courier(&order, &body.courier, &new)?;
            Ok((assigned.clone(), vec![assigned, order]))
        })
        .await?;
    let view = delivery_view(state, &assigned).await?;
    written(verdict, false, json!({"delivery": view}), None)
}

// ---------------------------------------------------------------- feed

/// Parameters of `GET /api/v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    after: Option<i64>,
    limit: Option<u32>,
}

/// `GET /api/v1/events?after=CURSOR`: server-sent events from the cursor on
/// (resumable with `Last-Event-ID`), or one JSON page with
/// `Accept: application/json`.
pub async fn events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Params<EventParams>,
) -> Result<Response, HttpError> {
    let p = params(q)?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim().parse::<i64>().map_err(|_| {
                HttpError::BadRequest(format!("Last-Event-ID {v:?} is not a feed position"))
            })
        })
        .transpose()?;
    let after = p.after.or(last_event_id).unwrap_or(0);
    if after < 0 {
        return Err(HttpError::BadRequest("after must be 0 or more".into()));
    }
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json") && !a.contains("text/event-stream"));
    if wants_json {
        let limit = page_limit(p.limit)?;
        let entries = state.feed.page(after, limit).await?;
        let next = entries.last().map_or(after, |e| e.seq);
        return Ok(Json(
            json!({"entries": entries, "next_after": next, "head": state.feed.head()}),
        )
        .into_response());
    }
    Ok(Arc::clone(&state.feed)
        .stream(after, state.stopping.clone())
        .into_response())
}

// ---------------------------------------------------------------- dashboard

/// `GET /api/v1/board`: counts per status and the most recent documents.
pub async fn board(State(state): State<Arc<AppState>>) -> Result<Json<Value>, HttpError> {
    blocking(&state, |s| {
        let conn = lock(&s.read_model)?;
        let (orders, deliveries) = store::status_counts(&conn)?;
        let recent = ListQuery {
            limit: MAX_LIMIT,
            ..ListQuery::default()
        };
        let recent_orders = store::orders(&conn, &recent)?;
        let recent_deliveries = store::deliveries(&conn, &recent)?;
        let as_map = |v: Vec<(String, i64)>| {
            v.into_iter()
                .map(|(k, n)| (k, json!(n)))
                .collect::<serde_json::Map<String, Value>>()
        };
        Ok(Json(json!({
            "orders": as_map(orders),
            "deliveries": as_map(deliveries),
            "recent_orders": recent_orders,
            "recent_deliveries": recent_deliveries,
            "feed_head": s.feed.head(),
        })))
    })
    .await
}

/// `GET /api/v1/devices`: every device seen since the relay started.
pub async fn devices(State(state): State<Arc<AppState>>) -> Json<Value> {
    let now = now_ms();
    let list: Vec<Value> = state
        .ctx
        .telemetry
        .devices()
        .into_iter()
        .map(|d| {
            json!({
                "device_id": d.device_id, "role": d.role, "store_id": d.store_id,
                "courier_id": d.courier_id, "online": d.online,
                "last_seen_ms": d.last_seen_ms, "last_sync_ms": d.last_sync_ms,
                "cursor": d.cursor, "behind": d.behind,
                "uploads_in_flight": d.uploads_in_flight, "uploaded": d.uploaded,
                "refused": d.refused,
            })
        })
        .collect();
    Json(json!({"devices": list, "now_ms": now, "log_head": state.ctx.telemetry.head()}))
}

/// `GET /api/v1/quarantine`: changes the relay refused, newest first.
pub async fn quarantine(State(state): State<Arc<AppState>>) -> Result<Json<Value>, HttpError> {
    blocking(&state, |s| {
        let store = AdminStore::open(&s.ctx.data, s.ctx.postgres.as_deref())
            .map_err(|e| HttpError::Internal(e.to_string()))?;
        let mut entries = store
            .quarantine_list()
            .map_err(|e| HttpError::Internal(e.to_string()))?;
        let total = entries.len();
        entries.reverse();
        entries.truncate(MAX_LIMIT as usize);
        let list: Vec<Value> = entries
            .iter()
            .map(|(id, e)| {
                json!({"id": id, "at_ms": e.at_ms, "device_id": e.change.device_id,
                       "doc_id": e.change.doc_id, "code": e.code, "reason": e.reason,
                       "size": e.change.bytes.len()})
            })
            .collect();
        Ok(Json(json!({"entries": list, "total": total})))
    })
    .await
}

/// `GET /api/v1/conflicts`: orders and deliveries in `conflict`, with both sides.
pub async fn conflicts(State(state): State<Arc<AppState>>) -> Result<Json<Value>, HttpError> {
    blocking(&state, |s| {
        let in_conflict = ListQuery {
            equal: vec![("status", "conflict".to_owned())],
            limit: MAX_LIMIT,
            ..ListQuery::default()
        };
        let (orders, deliveries) = {
            let conn = lock(&s.read_model)?;
            (
                store::orders(&conn, &in_conflict)?,
                store::deliveries(&conn, &in_conflict)?,
            )
        };
        let replica = &s.dispatcher.replica;
        let mut list = Vec::new();
        for row in orders {
            let view = replica.order(&DocId::parse(&row.id)?)?;
            list.push(
                json!({"kind": "order", "id": view.id, "number": view.number,
                             "store": view.store, "conflicts": view.conflicts}),
            );
        }
        for row in deliveries {
            let view = replica.delivery(&DocId::parse(&row.id)?)?;
            list.push(
                json!({"kind": "delivery", "id": view.id, "order_id": view.order_id,
                             "courier": view.courier, "conflicts": view.conflicts}),
            );
        }
        Ok(Json(json!({"conflicts": list})))
    })
    .await
}

impl From<waybill_core::ids::InvalidDocId> for HttpError {
    fn from(err: waybill_core::ids::InvalidDocId) -> Self {
        HttpError::Internal(format!("an index row names a bad document id: {err}"))
    }
}

/// Parameters of `GET /api/v1/kpis`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KpiParams {
    from_ms: Option<i64>,
    to_ms: Option<i64>,
}

/// `GET /api/v1/kpis?from_ms=&to_ms=`: KPIs of orders created in the range
/// (default: the last 24 hours).
pub async fn kpis(
    State(state): State<Arc<AppState>>,
    q: Params<KpiParams>,
) -> Result<Json<kpi::Kpis>, HttpError> {
    let p = params(q)?;
    let to_ms = p.to_ms.unwrap_or_else(|| now_ms() + 1);
    let from_ms = p.from_ms.unwrap_or(to_ms - 86_400_000);
    if from_ms >= to_ms {
        return Err(HttpError::BadRequest("from_ms must be before to_ms".into()));
    }
    if to_ms - from_ms > 400 * 86_400_000 {
        return Err(HttpError::BadRequest(
            "the range may span at most 400 days".into(),
        ));
    }
    blocking(&state, move |s| {
        let mut ids = Vec::new();
        let mut query = ListQuery {
            created_from_ms: Some(from_ms),
            created_before_ms: Some(to_ms),
            limit: MAX_LIMIT,
            ..ListQuery::default()
        };
        loop {
            let rows = store::orders(&*lock(&s.read_model)?, &query)?;
            let full = rows.len() == MAX_LIMIT as usize;
            query.before_id = rows.last().map(|r| r.id.clone());
            ids.extend(rows.into_iter().map(|r| r.id));
            if !full || ids.len() >= KPI_MAX_ORDERS {
                break;
            }
        }
        let replica = &s.dispatcher.replica;
        let mut facts = Vec::with_capacity(ids.len());
        for id in ids {
            let order = match replica.order(&DocId::parse(&id)?) {
                Ok(order) => order,
                Err(ReplicaError::NotFound { .. } | ReplicaError::Incomplete { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let mut deliveries = Vec::new();
            for d in &order.deliveries {
                match DocId::parse(d)
                    .map_err(ReplicaError::from)
                    .and_then(|d| replica.delivery(&d))
                {
                    Ok(view) => deliveries.push(view),
                    Err(ReplicaError::NotFound { .. } | ReplicaError::Incomplete { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            facts.push(OrderFacts { order, deliveries });
        }
        let truncated = facts.len() >= KPI_MAX_ORDERS;
        let mut kpis = kpi::compute(&facts, from_ms, to_ms);
        kpis.truncated = truncated;
        Ok(Json(kpis))
    })
    .await
}
