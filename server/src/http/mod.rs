//! The relay's HTTP side (`waybill serve --http ADDR`): the integration API
//! under `/api/v1`, the dispatcher's dashboard at `/`, Prometheus `/metrics`
//! and `/health`.
//!
//! ```text
//!  browser / ERP ──HTTP──▶ axum router ──▶ Dispatcher (Replica + SyncClient) ──QUIC──▶ relay
//!                            │  reads: dispatcher.db index tables, documents
//!                            │  feed:  http.db (Projector ◀── replica observer)
//!                            └─ devices, metrics: service::Telemetry (relay thread hooks)
//! ```
//!
//! The relay acts as a dispatcher device: every write goes through the same
//! document model and rules as a device's and is uploaded to the relay, which
//! checks it like any other device's change (see [`dispatcher`]).

pub mod api;
pub mod auth;
pub mod dispatcher;
pub mod error;
pub mod feed;
pub mod kpi;
pub mod metrics;
pub mod store;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rusqlite::Connection;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::keys::RelayKeys;
use crate::service::telemetry::Telemetry;
use dispatcher::Dispatcher;
use error::HttpError;
use feed::{Feed, Projector};

/// The OpenAPI description of the API (`server/openapi.json`), served at
/// `/api/v1/openapi.json` and, since JSON is YAML, at `/api/v1/openapi.yaml`.
pub const OPENAPI: &str = include_str!("../../openapi.json");

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");

/// What the HTTP layer needs from the relay.
#[derive(Debug, Clone)]
pub struct HttpContext {
    /// The relay's data directory (admin tokens; `http/` is created in it).
    pub data: PathBuf,
    /// The relay database (for its size and the quarantine).
    pub database: PathBuf,
    /// Where the dispatcher device reaches the relay over QUIC (`host:port`).
    pub relay_addr: String,
    /// The relay's keys (to issue the dispatcher's credential).
    pub keys: RelayKeys,
    /// The deployment's PostgreSQL URL when the log is there (not in `database`).
    pub postgres: Option<String>,
    /// Counters and presence from the relay's tasks.
    pub telemetry: Arc<Telemetry>,
}

impl HttpContext {
    /// The context of the relay with data directory `data` listening for QUIC on
    /// `quic`: its dispatcher device connects over loopback when the relay
    /// listens on every interface.
    pub fn new(
        data: &std::path::Path,
        quic: SocketAddr,
        keys: &RelayKeys,
        telemetry: &Arc<Telemetry>,
    ) -> Self {
        let ip: IpAddr = match quic.ip() {
            ip if !ip.is_unspecified() => ip,
            IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        };
        Self {
            data: data.to_path_buf(),
            database: data.join(crate::service::DATABASE_FILE),
            relay_addr: SocketAddr::new(ip, quic.port()).to_string(),
            keys: keys.clone(),
            postgres: None,
            telemetry: Arc::clone(telemetry),
        }
    }

    /// The relay log is in PostgreSQL at `url` (the quarantine is read there).
    pub fn with_postgres(mut self, url: Option<String>) -> Self {
        self.postgres = url;
        self
    }
}

/// Shared by every handler.
pub struct AppState {
    /// The relay's side.
    pub ctx: HttpContext,
    /// The dispatcher device.
    pub dispatcher: Dispatcher,
    /// The feed of events.
    pub feed: Arc<Feed>,
    /// `http.db` (idempotency keys, the feed).
    pub http_db: Arc<Mutex<Connection>>,
    /// Read-only connection on the dispatcher's store.
    pub read_model: Mutex<Connection>,
    /// Turns true when the server stops (ends event streams).
    pub stopping: watch::Receiver<bool>,
    /// Serialises idempotent ingest.
    pub ingest: tokio::sync::Mutex<()>,
    /// Counters of HTTP requests.
    pub requests: metrics::RequestCounters,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The HTTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpStartError {
    /// Creating `DATA/http` or opening its databases failed.
    #[error("cannot open the HTTP layer's databases in {}: {source}", dir.display())]
    Storage {
        /// `DATA/http`.
        dir: PathBuf,
        /// What failed.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The dispatcher device could not start.
    #[error(transparent)]
    Dispatcher(#[from] dispatcher::DispatcherError),
    /// The address could not be bound.
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
}

/// A running HTTP server; [`HttpServer::shutdown`] stops it.
pub struct HttpServer {
    /// The address it listens on (the real port when started on port 0).
    pub local_addr: SocketAddr,
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    _projector: Projector,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// Start the dispatcher device and serve HTTP on `listen`.
pub async fn start(listen: SocketAddr, ctx: HttpContext) -> Result<HttpServer, HttpStartError> {
    let dir = ctx.data.join("http");
    let storage = |source: Box<dyn std::error::Error + Send + Sync>| HttpStartError::Storage {
        dir: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(|e| storage(Box::new(e)))?;
    let http_db = store::open_http_db(&dir.join("http.db")).map_err(|e| storage(Box::new(e)))?;
    let http_db = Arc::new(Mutex::new(http_db));
    let dispatcher = Dispatcher::start(&dir, &ctx.keys, ctx.relay_addr.clone())?;
    let read_model =
        store::open_read_model(&dir.join("dispatcher.db")).map_err(|e| storage(Box::new(e)))?;
    let feed = Arc::new(Feed::new(Arc::clone(&http_db)).map_err(|e| storage(Box::new(e)))?);
    let projector = Projector::start(Arc::clone(&dispatcher.replica), Arc::clone(&feed));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| HttpStartError::Bind {
            addr: listen,
            source,
        })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| HttpStartError::Bind {
            addr: listen,
            source,
        })?;
    let (stop, stopping) = watch::channel(false);
    let state = Arc::new(AppState {
        ctx,
        dispatcher,
        feed,
        http_db,
        read_model: Mutex::new(read_model),
        stopping: stopping.clone(),
        ingest: tokio::sync::Mutex::new(()),
        requests: metrics::RequestCounters::default(),
    });
    let app = router(Arc::clone(&state));
    let mut until = stopping;
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = until.wait_for(|stop| *stop).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "the HTTP server failed");
        }
    });
    tracing::info!(http = %local_addr, "HTTP API and dashboard listening");
    Ok(HttpServer {
        local_addr,
        state,
        stop,
        task,
        _projector: projector,
    })
}

impl HttpServer {
    /// Stop serving (open event streams end), then stop the dispatcher's sync.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(std::time::Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            tracing::warn!("HTTP connections did not close in time");
        }
        self.state.dispatcher.stop().await;
    }
}

/// Every route.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/orders", post(api::create_order).get(api::list_orders))
        .route("/orders/{id}", get(api::get_order))
        .route("/orders/{id}/events", post(api::record_order_event))
        .route("/orders/{id}/resolve", post(api::resolve_order))
        .route("/orders/{id}/assign", post(api::assign_order))
        .route("/deliveries", get(api::list_deliveries))
        .route("/deliveries/{id}", get(api::get_delivery))
        .route("/deliveries/{id}/assign", post(api::assign_delivery))
        .route("/deliveries/{id}/resolve", post(api::resolve_delivery))
        .route("/events", get(api::events))
        .route("/board", get(api::board))
        .route("/devices", get(api::devices))
        .route("/quarantine", get(api::quarantine))
        .route("/conflicts", get(api::conflicts))
        .route("/kpis", get(api::kpis))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            require_admin,
        ))
        .route("/openapi.yaml", get(openapi_yaml))
        .route("/openapi.json", get(openapi_json));
    Router::new()
        .route(
            "/",
            get(|| async { static_file(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { static_file(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/app.css",
            get(|| async { static_file(APP_CSS, "text/css; charset=utf-8") }),
        )
        .route("/health", get(metrics::health))
        .route("/metrics", get(metrics::metrics))
        .nest("/api/v1", api)
        .fallback(|| async { HttpError::NotFound("no such path".into()) })
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            trace_request,
        ))
        .with_state(state)
}

/// The dashboard loads nothing but its own files and talks only to the relay.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn static_file(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn openapi_yaml() -> Response {
    static_file(OPENAPI, "application/yaml")
}

async fn openapi_json() -> Response {
    static_file(OPENAPI, "application/json")
}

/// A span per request (method, path, status), and the request counters.
async fn trace_request(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "http",
        method = %req.method(),
        path = %req.uri().path(),
        status = tracing::field::Empty
    );
    async move {
        let started = std::time::Instant::now();
        let response = next.run(req).await;
        let status = response.status();
        tracing::Span::current().record("status", status.as_u16());
        state.requests.record(status);
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "request");
        response
    }
    .instrument(span)
    .await
}

/// Refuse API calls without a valid admin token.
async fn require_admin(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Result<Response, HttpError> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(HttpError::Unauthorized(
            "missing `Authorization: Bearer <token>` (get one with `waybill admin-token --data DIR`)",
        ))?
        .to_owned();
    let data = state.ctx.data.clone();
    let valid = tokio::task::spawn_blocking(move || auth::verify(&data, &token))
        .await?
        .map_err(|e| HttpError::Internal(e.to_string()))?;
    if !valid {
        return Err(HttpError::Unauthorized(
            "the bearer token is not an admin token of this relay",
        ));
    }
    Ok(next.run(req).await)
}
