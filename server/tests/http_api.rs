//! The HTTP integration API against a relay started in-process with `--http` on
//! loopback: authentication, idempotent ingest under retries, pagination, clear
//! 4xx errors, reassignment, device presence, metrics, and an event feed that
//! resumes from a cursor with nothing missed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{Value, json};
use waybill_core::identity::Role;
use waybill_core::model::NewOrder;
use waybill_core::net::{SyncOptions, sync_once};
use waybill_core::replica::{Replica, ReplicaOptions};
use waybill_server::enroll::{EnrollRequest, enroll};
use waybill_server::http::auth;
use waybill_server::service::{RunningRelay, ServeOptions, start};

struct Api {
    _dir: tempfile::TempDir,
    relay: Option<RunningRelay>,
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Api {
    async fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap()).await
    }

    async fn start_in(dir: tempfile::TempDir) -> Self {
        let mut options = ServeOptions::new(dir.path(), "127.0.0.1:0".parse().unwrap());
        options.http = Some("127.0.0.1:0".parse().unwrap());
        let relay = start(options).await.unwrap();
        let base = format!("http://{}", relay.http.as_ref().unwrap().local_addr);
        let token = auth::issue(dir.path(), now_ms(), false).unwrap();
        Self {
            _dir: dir,
            relay: Some(relay),
            base,
            token,
            client: reqwest::Client::new(),
        }
    }

    fn relay(&self) -> &RunningRelay {
        self.relay.as_ref().unwrap()
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn json(&self, path: &str) -> Value {
        let res = self.get(path).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "GET {path}");
        res.json().await.unwrap()
    }

    async fn ingest(
        &self,
        key: &str,
        order: &Value,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let res = self
            .post("/api/v1/orders")
            .header("Idempotency-Key", key)
            .json(order)
            .send()
            .await
            .unwrap();
        let (status, headers) = (res.status(), res.headers().clone());
        (status, headers, res.json().await.unwrap())
    }

    async fn shutdown(mut self) {
        self.relay.take().unwrap().shutdown().await;
    }

    /// Stop the relay and keep its data directory.
    async fn stop(mut self) -> tempfile::TempDir {
        self.relay.take().unwrap().shutdown().await;
        self._dir
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn order(number: &str) -> Value {
    json!({"number": number, "channel": "web", "store": "S1",
           "customer": {"id": "c-88", "name": "Leila Karimi", "phone": "+98 912 000 0000",
                        "address": "12 Vali-Asr St, Tehran"},
           "currency": "IRR", "fulfilment": "delivery",
           "lines": [{"sku": "TEA-500", "name": "Black tea 500 g", "qty": 2, "unit_price": 1850000}]})
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

#[tokio::test]
async fn calls_without_a_valid_admin_token_are_refused() {
    let api = Api::start().await;
    let url = format!("{}/api/v1/orders", api.base);
    for request in [
        api.client.get(&url),
        api.client.get(&url).bearer_auth("wbt_not-a-token"),
        api.client
            .get(&url)
            .header("Authorization", "Basic YWRtaW46YWRtaW4="),
        api.client
            .post(&url)
            .header("Idempotency-Key", "k")
            .json(&order("S1-1")),
    ] {
        let res = request.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let body: Value = res.json().await.unwrap();
        assert_eq!(error_code(&body), "unauthorized");
        assert!(body["error"]["message"].as_str().unwrap().len() > 10);
    }
    // Nothing was created by the refused POST.
    let list = api.json("/api/v1/orders").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);

    // A token revoked by `--revoke-all` stops working at once.
    let dir = api
        .relay()
        .database
        .as_ref()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let fresh = auth::issue(&dir, now_ms(), true).unwrap();
    let res = api.get("/api/v1/orders").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = api
        .client
        .get(&url)
        .bearer_auth(&fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // Health, metrics, the dashboard and the OpenAPI file need no token.
    for path in [
        "/health",
        "/metrics",
        "/",
        "/app.js",
        "/api/v1/openapi.json",
    ] {
        let res = api
            .client
            .get(format!("{}{path}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
    api.shutdown().await;
}

#[tokio::test]
async fn a_retried_ingest_never_creates_a_second_order() {
    let api = Arc::new(Api::start().await);
    let body = order("S1-000123");
    // Eight concurrent retries of one request.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let api = Arc::clone(&api);
        let body = body.clone();
        tasks.push(tokio::spawn(
            async move { api.ingest("web-123", &body).await },
        ));
    }
    let mut created = 0;
    let mut ids = BTreeSet::new();
    for task in tasks {
        let (status, headers, body) = task.await.unwrap();
        match status {
            StatusCode::CREATED => {
                created += 1;
                assert_eq!(body["sync"], "acknowledged");
                assert!(headers.get("location").is_some());
            }
            // A retry answered while the first is still waiting for the relay
            // says so (202, pending); later ones get 200.
            StatusCode::OK | StatusCode::ACCEPTED => {
                assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
            }
            other => panic!("unexpected {other}: {body}"),
        }
        ids.insert(body["order"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(created, 1, "exactly one request created the order");
    assert_eq!(ids.len(), 1, "every retry answered with the same order");

    // Later retries, with the keys of the JSON in another order: still the same.
    let mut reordered = serde_json::Map::new();
    for (k, v) in body.as_object().unwrap().iter().rev() {
        reordered.insert(k.clone(), v.clone());
    }
    let (status, _, again) = api.ingest("web-123", &Value::Object(reordered)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["order"]["id"].as_str().unwrap(), ids.first().unwrap());

    // The same key with another body is a conflict, and creates nothing.
    let (status, _, err) = api.ingest("web-123", &order("S1-000999")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&err), "idempotency_key_reused");

    let list = api.json("/api/v1/orders").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let view = api
        .json(&format!("/api/v1/orders/{}", ids.first().unwrap()))
        .await;
    assert_eq!(view["number"], "S1-000123");
    assert_eq!(view["status"], "placed");
    assert_eq!(view["created_by"], "relay-dispatcher");

    // The relay holds it too: it was uploaded and acknowledged, like a device's.
    let metrics = api
        .client
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("waybill_changes_accepted_total "),
        "{metrics}"
    );
    let accepted: u64 = metric(&metrics, "waybill_changes_accepted_total");
    assert!(accepted >= 1, "{metrics}");
    Arc::into_inner(api).unwrap().shutdown().await;
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test]
async fn bad_requests_get_a_clear_4xx() {
    let api = Api::start().await;
    let post = |body: &'static str, key: Option<&str>| {
        let mut req = api
            .post("/api/v1/orders")
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        req.send()
    };
    let check = |res: reqwest::Response, status: StatusCode, code: &'static str| async move {
        assert_eq!(res.status(), status);
        let body: Value = res.json().await.unwrap();
        assert_eq!(error_code(&body), code, "{body}");
        body["error"]["message"].as_str().unwrap().to_owned()
    };
    let msg = check(
        post("{\"number\": ", Some("k1")).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_json",
    )
    .await;
    assert!(msg.contains("not valid JSON"), "{msg}");

    let mut unknown = order("S1-1");
    unknown["discount"] = json!(10);
    let res = api
        .post("/api/v1/orders")
        .header("Idempotency-Key", "k2")
        .json(&unknown)
        .send()
        .await
        .unwrap();
    let msg = check(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    assert!(msg.contains("unknown field `discount`"), "{msg}");

    let mut no_lines = order("S1-2");
    no_lines["lines"] = json!([]);
    let res = api
        .post("/api/v1/orders")
        .header("Idempotency-Key", "k3")
        .json(&no_lines)
        .send()
        .await
        .unwrap();
    check(res, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;

    let res = api
        .post("/api/v1/orders")
        .json(&order("S1-3"))
        .send()
        .await
        .unwrap();
    let msg = check(res, StatusCode::BAD_REQUEST, "bad_request").await;
    assert!(msg.contains("Idempotency-Key"), "{msg}");

    let res = api.get("/api/v1/orders?colour=red").send().await.unwrap();
    check(res, StatusCode::BAD_REQUEST, "bad_request").await;
    let res = api.get("/api/v1/orders?limit=0").send().await.unwrap();
    check(res, StatusCode::BAD_REQUEST, "bad_request").await;
    let res = api.get("/api/v1/orders?cursor=xyz").send().await.unwrap();
    check(res, StatusCode::BAD_REQUEST, "bad_request").await;
    let res = api.get("/api/v1/orders/ord_nope").send().await.unwrap();
    check(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = api
        .get("/api/v1/orders/ord_0190a0b0c0d07000800000000000000a")
        .send()
        .await
        .unwrap();
    check(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = api.get("/api/v1/nothing-here").send().await.unwrap();
    check(res, StatusCode::NOT_FOUND, "not_found").await;

    // Nothing of the above created an order.
    let list = api.json("/api/v1/orders").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    api.shutdown().await;
}

#[tokio::test]
async fn lists_page_with_a_cursor() {
    let api = Api::start().await;
    let mut created = BTreeSet::new();
    for i in 0..7 {
        let (status, _, body) = api
            .ingest(&format!("k{i}"), &order(&format!("S1-{i}")))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        created.insert(body["order"]["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/orders?limit=3".to_owned();
    let mut pages = Vec::new();
    loop {
        let page = api.json(&path).await;
        let items = page["items"].as_array().unwrap();
        pages.push(items.len());
        seen.extend(items.iter().map(|o| o["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/orders?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, vec![3, 3, 1]);
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique, created, "every order once, none twice");
    let mut newest_first = seen.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, newest_first);

    // Filters combine with pages.
    let none = api.json("/api/v1/orders?status=completed").await;
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
    let placed = api
        .json("/api/v1/orders?status=placed&store=S1&limit=500")
        .await;
    assert_eq!(placed["items"].as_array().unwrap().len(), 7);
    assert!(placed["next_cursor"].is_null());
    api.shutdown().await;
}

/// Read server-sent events until `count` have arrived; returns their ids.
async fn read_sse(
    api: &Api,
    query: &str,
    last_event_id: Option<&str>,
    count: usize,
) -> Vec<(i64, Value)> {
    let mut req = api
        .get(&format!("/api/v1/events{query}"))
        .header("Accept", "text/event-stream");
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let mut res = req.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut buf = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(10), res.chunk())
            .await
            .expect("the feed keeps sending")
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(cut) = buf.find("\n\n") {
            let block: String = buf.drain(..cut + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().parse::<i64>().unwrap());
                }
                if let Some(v) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str::<Value>(v.trim()).unwrap());
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                events.push((id, data));
            }
        }
    }
    events
}

#[tokio::test]
async fn the_event_feed_resumes_from_a_cursor_with_nothing_missed() {
    let api = Api::start().await;
    for i in 0..4 {
        let (status, _, body) = api
            .ingest(&format!("k{i}"), &order(&format!("S1-{i}")))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // Each order's `placed` event is in the feed.
    let page = wait_for_feed(&api, 4).await;
    let all: Vec<i64> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(all, vec![1, 2, 3, 4], "numbered without gaps");
    assert!(
        page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] == "order.event" && e["data"]["event"]["kind"] == "placed")
    );

    // Resume after 2 over SSE: exactly 3 and 4, then a live change.
    let reader = read_sse(&api, "?after=2", None, 4);
    let writer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let id = api.json("/api/v1/orders?limit=1").await["items"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let res = api
            .post(&format!("/api/v1/orders/{id}/events"))
            .json(&json!({"kind": "confirmed"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let res = api
            .post(&format!("/api/v1/orders/{id}/assign"))
            .json(&json!({"courier": "courier-7"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    };
    let (events, ()) = tokio::join!(reader, writer);
    let ids: Vec<i64> = events.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        vec![3, 4, 5, 6],
        "after 2: every later entry, in order, once"
    );
    let live: BTreeSet<String> = events[2..]
        .iter()
        .map(|(_, e)| {
            format!(
                "{}:{}",
                e["type"].as_str().unwrap(),
                e["data"]["event"]["kind"].as_str().unwrap()
            )
        })
        .collect();
    let expected: BTreeSet<String> = ["order.event:confirmed", "delivery.event:assigned"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(live, expected);
    assert_eq!(
        wait_for_feed(&api, 6).await["head"],
        6,
        "nothing else was recorded"
    );

    // Reconnecting with Last-Event-ID resumes after it, as EventSource does.
    let again = read_sse(&api, "", Some("5"), 1).await;
    assert_eq!(again[0].0, 6);
    api.shutdown().await;
}

async fn wait_for_feed(api: &Api, at_least: usize) -> Value {
    for _ in 0..200 {
        let res = api
            .get("/api/v1/events?after=0")
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap();
        let page: Value = res.json().await.unwrap();
        if page["entries"].as_array().unwrap().len() >= at_least {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the feed did not reach {at_least} entries");
}

#[tokio::test]
async fn devices_reassignment_and_the_board() {
    let api = Api::start().await;
    let relay = api.relay();
    // A store tablet creates an order offline and syncs.
    let credential = enroll(
        &relay.keys,
        &EnrollRequest {
            role: Role::Store,
            courier: None,
            store: Some("S1".into()),
            device_id: Some("tablet-1".into()),
            relay_addr: relay.local_addr.to_string(),
            valid_for_ms: 86_400_000,
            now_ms: now_ms(),
        },
    )
    .unwrap();
    let tablet = Arc::new(
        Replica::open_in_memory(credential.body.identity(), ReplicaOptions::default()).unwrap(),
    );
    let new: NewOrder = serde_json::from_value(order("S1-77")).unwrap();
    let order_id = tablet.create_order(&new).unwrap();
    let delivery = tablet
        .assign_courier(&order_id, "courier-7", &Default::default())
        .unwrap();
    sync_once(
        Arc::clone(&tablet),
        &credential,
        &SyncOptions::default(),
        Duration::from_secs(20),
    )
    .await
    .unwrap();

    // The dispatcher sees it, and the tablet is listed as a device (offline now).
    let path = format!("/api/v1/deliveries/{delivery}");
    let mut view = Value::Null;
    for _ in 0..200 {
        let res = api.get(&path).send().await.unwrap();
        if res.status() == StatusCode::OK {
            view = res.json().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(view["courier"], "courier-7");
    let devices = api.json("/api/v1/devices").await;
    let tablet_row = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == "tablet-1")
        .expect("the tablet is listed")
        .clone();
    assert_eq!(tablet_row["role"], "store");
    // The order, the delivery, and the order's link to it.
    assert_eq!(tablet_row["uploaded"], 3, "{tablet_row}");
    assert!(tablet_row["last_sync_ms"].as_i64().is_some());
    let dispatcher = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == "relay-dispatcher")
        .expect("the relay's own dispatcher is a device too");
    assert_eq!(dispatcher["online"], true);

    // Reassign through the API; the tablet receives it on its next sync.
    let res = api
        .post(&format!("{path}/assign"))
        .json(&json!({"courier": "courier-9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["delivery"]["courier"], "courier-9");
    assert_eq!(body["sync"], "acknowledged");
    sync_once(
        Arc::clone(&tablet),
        &credential,
        &SyncOptions::default(),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(
        tablet.delivery(&delivery).unwrap().courier.as_deref(),
        Some("courier-9")
    );

    // An unknown field in the assignment is refused and changes nothing.
    let res = api
        .post(&format!("{path}/assign"))
        .json(&json!({"courier": "courier-1", "priority": "high"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let deliveries = api.json("/api/v1/deliveries?courier=courier-9").await;
    assert_eq!(deliveries["items"].as_array().unwrap().len(), 1);
    let board = api.json("/api/v1/board").await;
    assert_eq!(board["orders"]["placed"], 1);
    assert_eq!(board["deliveries"]["assigned"], 1);
    api.shutdown().await;
}

fn credential_for(
    relay: &RunningRelay,
    device: &str,
    role: Role,
    id: &str,
) -> waybill_core::credential::Credential {
    let (store, courier) = match role {
        Role::Store => (Some(id.to_owned()), None),
        Role::Courier => (None, Some(id.to_owned())),
        Role::Dispatcher => (None, None),
    };
    enroll(
        &relay.keys,
        &EnrollRequest {
            role,
            courier,
            store,
            device_id: Some(device.into()),
            relay_addr: relay.local_addr.to_string(),
            valid_for_ms: 86_400_000,
            now_ms: now_ms(),
        },
    )
    .unwrap()
}

async fn sync(replica: &Arc<Replica>, credential: &waybill_core::credential::Credential) {
    sync_once(
        Arc::clone(replica),
        credential,
        &SyncOptions::default(),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
}

async fn eventually_json(api: &Api, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..400 {
        last = api.json(path).await;
        if ok(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{path} never matched; last: {last}");
}

#[tokio::test]
async fn a_conflict_is_listed_and_resolved_through_the_api() {
    let api = Api::start().await;
    let relay = api.relay();
    let tablet_cred = credential_for(relay, "tablet-1", Role::Store, "S1");
    let phone_cred = credential_for(relay, "phone-7", Role::Courier, "courier-7");
    let open = |c: &waybill_core::credential::Credential| {
        Arc::new(Replica::open_in_memory(c.body.identity(), ReplicaOptions::default()).unwrap())
    };
    let (tablet, phone) = (open(&tablet_cred), open(&phone_cred));
    let new: NewOrder = serde_json::from_value(order("S1-9")).unwrap();
    let order_id = tablet.create_order(&new).unwrap();
    tablet
        .record_event(&order_id, "confirmed", &Default::default())
        .unwrap();
    let delivery = tablet
        .assign_courier(&order_id, "courier-7", &Default::default())
        .unwrap();
    sync(&tablet, &tablet_cred).await;
    sync(&phone, &phone_cred).await;
    // The courier delivers while the store cancels, neither seeing the other.
    phone
        .record_event(&delivery, "picked_up", &Default::default())
        .unwrap();
    phone
        .record_event(&delivery, "delivered", &Default::default())
        .unwrap();
    tablet
        .record_event(&order_id, "cancelled", &Default::default())
        .unwrap();
    sync(&tablet, &tablet_cred).await;
    sync(&phone, &phone_cred).await;

    let conflicts = eventually_json(&api, "/api/v1/conflicts", |c| {
        c["conflicts"].as_array().is_some_and(|l| !l.is_empty())
    })
    .await;
    let listed = &conflicts["conflicts"][0];
    assert_eq!(listed["kind"], "order");
    assert_eq!(listed["id"], order_id.to_string());
    let pair = &listed["conflicts"][0];
    let kinds: BTreeSet<&str> = [&pair["first"]["kind"], &pair["second"]["kind"]]
        .into_iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(kinds, BTreeSet::from(["cancelled", "completed"]));
    let board = api.json("/api/v1/board").await;
    assert_eq!(board["orders"]["conflict"], 1);

    let path = format!("/api/v1/orders/{order_id}/resolve");
    let res = api
        .post(&path)
        .json(&json!({"outcome": "completed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = api
        .post(&path)
        .json(&json!({"resolution": "completed", "note": "paid and delivered"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["document"]["status"], "completed", "{body}");
    assert_eq!(body["sync"], "acknowledged");
    eventually_json(&api, "/api/v1/conflicts", |c| {
        c["conflicts"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    // The store sees the dispatcher's resolution.
    sync(&tablet, &tablet_cred).await;
    assert_eq!(tablet.order(&order_id).unwrap().status, "completed");
    api.shutdown().await;
}

#[tokio::test]
async fn a_change_the_relay_refuses_is_in_the_quarantine_and_the_metrics() {
    let api = Api::start().await;
    let relay = api.relay();
    // A modified app: a courier's credential on a store that writes as a store
    // would. The relay judges by the credential and refuses the new order.
    let courier = credential_for(relay, "phone-x", Role::Courier, "courier-9");
    let mut identity = courier.body.identity();
    identity.role = Role::Store;
    identity.store_id = Some("S1".into());
    identity.courier_id = None;
    let rogue = Arc::new(Replica::open_in_memory(identity, ReplicaOptions::default()).unwrap());
    let new: NewOrder = serde_json::from_value(order("S1-X")).unwrap();
    rogue.create_order(&new).unwrap();
    sync(&rogue, &courier).await;
    assert_eq!(rogue.refused_changes().unwrap().len(), 1);

    let quarantine = api.json("/api/v1/quarantine").await;
    assert_eq!(quarantine["total"], 1, "{quarantine}");
    let entry = &quarantine["entries"][0];
    assert_eq!(entry["device_id"], "phone-x");
    assert_eq!(entry["code"], "Forbidden");
    assert!(entry["reason"].as_str().unwrap().len() > 10);

    let metrics = api
        .client
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metric(&metrics, "waybill_changes_refused_total"), 1);
    assert!(metric(&metrics, "waybill_bytes_received_total") > 0);
    assert!(metric(&metrics, "waybill_connections_total") >= 2);
    assert!(metrics.contains("waybill_storage_bytes{db=\"relay\"} "));
    let devices = api.json("/api/v1/devices").await;
    let row = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == "phone-x")
        .unwrap()
        .clone();
    assert_eq!(
        (row["role"].as_str(), row["refused"].as_u64()),
        (Some("courier"), Some(1))
    );
    // Nothing of it reached the dispatcher.
    let orders = api.json("/api/v1/orders").await;
    assert_eq!(orders["items"].as_array().unwrap().len(), 0);
    api.shutdown().await;
}

#[test]
fn admin_token_prints_a_token_only_for_a_relay_directory() {
    let dir = tempfile::tempdir().unwrap();
    let waybill = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_waybill"))
            .args(args)
            .output()
            .unwrap()
    };
    let data = dir.path().join("relay");
    let data_arg = data.to_str().unwrap();
    let refused = waybill(&["admin-token", "--data", data_arg]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("holds no relay"),
        "{stderr}"
    );
    assert!(!data.exists(), "a typo in --data creates nothing");

    let enrolled = waybill(&[
        "enroll",
        "--data",
        data_arg,
        "--role",
        "dispatcher",
        "--out",
        dir.path().join("d.cred").to_str().unwrap(),
    ]);
    assert!(enrolled.status.success());
    let first = waybill(&["admin-token", "--data", data_arg]);
    assert!(first.status.success());
    let first = String::from_utf8(first.stdout).unwrap().trim().to_owned();
    assert!(first.starts_with("wbt_") && first.len() == 68, "{first}");
    assert!(auth::verify(&data, &first).unwrap());
    let second = waybill(&["admin-token", "--data", data_arg, "--revoke-all"]);
    let second = String::from_utf8(second.stdout).unwrap().trim().to_owned();
    assert!(!auth::verify(&data, &first).unwrap());
    assert!(auth::verify(&data, &second).unwrap());
}

#[tokio::test]
async fn the_feed_and_the_idempotency_keys_survive_a_restart() {
    let api = Api::start().await;
    for i in 0..2 {
        let (status, _, _) = api
            .ingest(&format!("k{i}"), &order(&format!("S1-{i}")))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let before = wait_for_feed(&api, 2).await["entries"].clone();
    let dir = api.stop().await;

    let api = Api::start_in(dir).await;
    // Same entries, same positions; the start-up scan added nothing twice.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = wait_for_feed(&api, 2).await;
    assert_eq!(after["entries"], before);
    assert_eq!(after["head"], 2);
    // A retry after the restart still finds its order.
    let (status, headers, body) = api.ingest("k1", &order("S1-1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["idempotent-replayed"], "true");
    let (status, _, _) = api.ingest("k2", &order("S1-2")).await;
    assert_eq!(status, StatusCode::CREATED);
    let page = wait_for_feed(&api, 3).await;
    assert_eq!(page["entries"][2]["seq"], 3);
    assert_eq!(
        api.json("/api/v1/orders").await["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    api.shutdown().await;
}
