//! `/metrics` (Prometheus text format, version 0.0.4) and `/health`.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use waybill_core::net::ConnectionState;

use super::AppState;

/// HTTP responses by status class.
#[derive(Debug, Default)]
pub struct RequestCounters {
    by_class: [AtomicU64; 5],
}

impl RequestCounters {
    /// Count one response.
    pub fn record(&self, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
    }
}

/// The size of a SQLite database with its WAL.
fn db_bytes(path: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    size(path) + size(Path::new(&wal))
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let t = &state.ctx.telemetry;
    let c = &t.counters;
    let devices = t.devices();
    let online: Vec<_> = devices.iter().filter(|d| d.online).collect();
    let lag: Vec<u64> = online.iter().filter_map(|d| d.behind).collect();
    let pending = state
        .dispatcher
        .replica
        .pending_uploads()
        .unwrap_or_default();
    let http_dir = state.ctx.data.join("http");
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    metric(
        "waybill_connections_open",
        "gauge",
        "Open device connections (QUIC streams).",
        &[("", t.open_connections() as u64)],
    );
    metric(
        "waybill_connections_total",
        "counter",
        "Device connections opened since the relay started.",
        &[("", load(&c.connections_total))],
    );
    metric(
        "waybill_devices_online",
        "gauge",
        "Devices with an open, authenticated session.",
        &[("", online.len() as u64)],
    );
    metric(
        "waybill_changes_uploaded_total",
        "counter",
        "Changes devices uploaded.",
        &[("", load(&c.changes_uploaded))],
    );
    metric(
        "waybill_changes_accepted_total",
        "counter",
        "Uploaded changes the relay acknowledged as durable.",
        &[("", load(&c.changes_accepted))],
    );
    metric(
        "waybill_changes_refused_total",
        "counter",
        "Uploaded changes the relay refused (quarantined).",
        &[("", load(&c.changes_refused))],
    );
    metric(
        "waybill_changes_sent_total",
        "counter",
        "Log entries sent to devices (catch-up and live pushes).",
        &[("", load(&c.changes_sent))],
    );
    metric(
        "waybill_snapshots_sent_total",
        "counter",
        "Whole documents sent to never-synced devices as snapshots.",
        &[("", load(&c.snapshots_sent))],
    );
    metric(
        "waybill_bytes_received_total",
        "counter",
        "Bytes read from devices.",
        &[("", load(&c.bytes_received))],
    );
    metric(
        "waybill_bytes_sent_total",
        "counter",
        "Bytes written to devices.",
        &[("", load(&c.bytes_sent))],
    );
    metric(
        "waybill_log_head",
        "gauge",
        "Newest sequence number in the relay's change log (updated every 2 s).",
        &[("", t.head())],
    );
    metric(
        "waybill_sync_lag_changes_max",
        "gauge",
        "Most log entries an online device has not been sent yet (head - its cursor).",
        &[("", lag.iter().copied().max().unwrap_or(0))],
    );
    metric(
        "waybill_sync_lag_changes_sum",
        "gauge",
        "Log entries online devices have not been sent yet, summed over devices.",
        &[("", lag.iter().sum())],
    );
    metric(
        "waybill_storage_bytes",
        "gauge",
        "Size on disk of each database, WAL included.",
        &[
            ("{db=\"relay\"}", db_bytes(&state.ctx.database)),
            (
                "{db=\"dispatcher\"}",
                db_bytes(&http_dir.join("dispatcher.db")),
            ),
            ("{db=\"http\"}", db_bytes(&http_dir.join("http.db"))),
        ],
    );
    metric(
        "waybill_dispatcher_pending_uploads",
        "gauge",
        "Changes made through the API that the relay has not acknowledged yet.",
        &[("", pending)],
    );
    metric(
        "waybill_event_feed_head",
        "gauge",
        "Newest position of the integration event feed.",
        &[("", u64::try_from(state.feed.head()).unwrap_or(0))],
    );
    let r = &state.requests.by_class;
    metric(
        "waybill_http_responses_total",
        "counter",
        "HTTP responses by status class.",
        &[
            ("{class=\"1xx\"}", load(&r[0])),
            ("{class=\"2xx\"}", load(&r[1])),
            ("{class=\"3xx\"}", load(&r[2])),
            ("{class=\"4xx\"}", load(&r[3])),
            ("{class=\"5xx\"}", load(&r[4])),
        ],
    );
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        out,
    )
        .into_response()
}

/// `GET /health`: 200 while the relay serves; `status` is `degraded` while the
/// dispatcher device is not connected to the relay.
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    let sync = state.dispatcher.status();
    let dispatcher = match sync.as_ref().map(|s| &s.state) {
        Some(ConnectionState::Live) => "live",
        Some(ConnectionState::Syncing) => "syncing",
        Some(ConnectionState::Connecting) => "connecting",
        Some(ConnectionState::Offline) => "offline",
        Some(ConnectionState::Stopped { .. }) | None => "stopped",
    };
    let status = if dispatcher == "live" {
        "ok"
    } else {
        "degraded"
    };
    Json(json!({
        "status": status,
        "relay": {
            "log_head": state.ctx.telemetry.head(),
            "connections": state.ctx.telemetry.open_connections(),
        },
        "dispatcher": {
            "state": dispatcher,
            "pending_uploads": sync.as_ref().map_or(0, |s| s.pending_uploads),
            "last_synced_ms": sync.as_ref().and_then(|s| s.last_synced_ms),
            "last_error": sync.as_ref().and_then(|s| s.last_error.clone()),
        },
        "feed_head": state.feed.head(),
    }))
    .into_response()
}
