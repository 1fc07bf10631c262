//! The relay's QUIC service around the sans-IO [`Relay`].
//!
//! ```text
//!  device ─QUIC─▶ connection task: ──(conn, message)──▶ ┌───────────────┐
//!                 reader (decodes)      bounded mpsc    │ relay thread  │
//!  device ◀─QUIC─ and writer ◀──────────────────────────│ owns Relay<S> │
//!                 (encodes)          bounded per conn   └───────────────┘
//! ```
//!
//! The state machine is single-threaded and commits to SQLite (an fsync per
//! acknowledged batch), so it runs on a thread of its own: a slow disk never
//! stalls the QUIC tasks, and the tasks never need a lock on the relay. Each
//! connection's outgoing channel is bounded; the relay thread takes messages from
//! the state machine only while there is room, so a device that is slowly catching
//! up costs a few pages of memory, not the log.

mod actor;
mod connection;
pub mod telemetry;
#[cfg(test)]
mod tests;

use crate::bus::{Bus, InProcessBus, NatsBus};
use crate::http::{self, HttpContext, HttpServer};
use crate::keys::{self, RelayKeys};
use crate::log_store::SqliteLogStore;
use crate::pg_log_store::PgLogStore;
use actor::{Actor, ToActor};
use anyhow::Context;
use quinn::{Endpoint, VarInt};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use telemetry::Telemetry;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use waybill_core::net::endpoint;
use waybill_core::sync::{CommitNotice, Relay, RelayConfig};

/// Messages from all connections waiting for the relay thread.
const INBOX: usize = 1024;
/// How long shutdown waits for devices to receive `ShuttingDown` and go.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);
/// How long shutdown waits for closed connections to drain.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);
/// How often live sessions are checked for expired or revoked credentials, and the
/// log head for commits of other nodes that no notice announced.
pub const TICK: Duration = Duration::from_secs(2);

/// The relay database's file name in the data directory.
pub const DATABASE_FILE: &str = "relay.db";

/// QUIC application close codes the relay uses.
pub mod close_code {
    /// Orderly close (after `Bye`).
    pub const BYE: u32 = 0;
    /// Closed after a protocol or credential error (sent as an `Error` first).
    pub const REFUSED: u32 = 1;
    /// The relay is shutting down.
    pub const SHUTTING_DOWN: u32 = 2;
    /// The relay failed.
    pub const INTERNAL: u32 = 3;
}

/// How to run the relay.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Data directory: keys, certificate, `relay.db`.
    pub data: PathBuf,
    /// UDP address devices connect to.
    pub listen: SocketAddr,
    /// The operator's own certificate (PEM) instead of a generated one.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM); required with `cert`.
    pub key: Option<PathBuf>,
    /// Extra host names or IP addresses for a generated certificate.
    pub names: Vec<String>,
    /// Keep the log in this PostgreSQL database (shared by every relay node of a
    /// deployment) instead of `relay.db` in the data directory.
    pub postgres: Option<String>,
    /// Announce commits to the other relay nodes through this NATS server
    /// (JetStream); without it, only nodes in this process hear them.
    pub nats: Option<String>,
    /// The bus to use instead of one made from `nats` (tests run several nodes in
    /// one process on one [`InProcessBus`]).
    pub bus: Option<Arc<dyn Bus>>,
    /// How often live sessions are checked for expired or revoked credentials and
    /// the shared log for commits no notice announced.
    pub tick: Duration,
    /// Tuning of the relay state machine.
    pub config: RelayConfig,
    /// TCP address for the HTTP API, dashboard and metrics (`--http`); none: off.
    pub http: Option<SocketAddr>,
}

impl ServeOptions {
    /// A relay keeping its data in `data` and listening on `listen`, with a
    /// generated certificate and default tuning.
    pub fn new(data: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        Self {
            data: data.into(),
            listen,
            cert: None,
            key: None,
            names: Vec::new(),
            postgres: None,
            nats: None,
            bus: None,
            tick: TICK,
            config: RelayConfig::default(),
            http: None,
        }
    }
}

/// A relay accepting devices; [`RunningRelay::shutdown`] stops it.
pub struct RunningRelay {
    /// The address it listens on (the real port when started on port 0).
    pub local_addr: SocketAddr,
    /// Its keys: the certificate devices pin and the credential issuer.
    pub keys: RelayKeys,
    /// The relay database, when the log is on SQLite (None on PostgreSQL).
    pub database: Option<PathBuf>,
    /// Counters and device presence (what `/metrics` and the dashboard show).
    pub telemetry: Arc<Telemetry>,
    /// The HTTP API and dashboard, when started with `http`.
    pub http: Option<HttpServer>,
    endpoint: Endpoint,
    inbox: mpsc::Sender<ToActor>,
    accept: JoinHandle<()>,
    ticker: JoinHandle<()>,
    listener: JoinHandle<()>,
    actor_done: oneshot::Receiver<()>,
}

impl std::fmt::Debug for RunningRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningRelay")
            .field("local_addr", &self.local_addr)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// Run the relay until `shutdown` resolves (the binary passes SIGINT/SIGTERM),
/// then stop gracefully.
pub async fn serve(
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let relay = start(options).await?;
    tracing::info!(listen = %relay.local_addr, relay_id = %relay.keys.relay_id, "relay listening");
    shutdown.await;
    tracing::info!("shutting down");
    relay.shutdown().await;
    Ok(())
}

/// Load (or create) the keys and the database in the data directory and start
/// accepting devices.
pub async fn start(options: ServeOptions) -> anyhow::Result<RunningRelay> {
    let keys = load_keys(&options)?;
    let bus: Arc<dyn Bus> = match (&options.bus, &options.nats) {
        (Some(bus), _) => bus.clone(),
        (None, Some(url)) => Arc::new(NatsBus::connect(url, &keys.relay_id).await?),
        (None, None) => Arc::new(InProcessBus::new()),
    };
    let server_config = keys
        .server_config()
        .context("the relay certificate cannot serve QUIC")?;
    let endpoint = endpoint::bind(options.listen, Some(server_config))
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let local_addr = endpoint.local_addr()?;

    let (inbox, rx) = mpsc::channel(INBOX);
    let telemetry = Arc::new(Telemetry::default());
    let (verifier, config, relay_id) = (
        keys.issuer.verifier(),
        options.config.clone(),
        keys.relay_id.clone(),
    );
    let database = options
        .postgres
        .is_none()
        .then(|| options.data.join(DATABASE_FILE));
    let actor_done = match &options.postgres {
        None => {
            let database = options.data.join(DATABASE_FILE);
            let open = move || {
                let store = SqliteLogStore::open(&database, &relay_id).with_context(|| {
                    format!("cannot open the relay database {}", database.display())
                })?;
                tracing::info!(database = %database.display(), "relay log on SQLite");
                Ok(Relay::new(store, verifier, config))
            };
            Actor::spawn(open, rx, bus.clone(), Arc::clone(&telemetry)).await?
        }
        Some(url) => {
            let url = url.clone();
            let open = move || {
                let store = PgLogStore::connect(&url, &relay_id)
                    .context("cannot open the relay log on PostgreSQL")?;
                tracing::info!("relay log on PostgreSQL");
                Ok(Relay::new(store, verifier, config))
            };
            Actor::spawn(open, rx, bus.clone(), Arc::clone(&telemetry)).await?
        }
    };
    let accept = tokio::spawn(accept_loop(
        endpoint.clone(),
        inbox.clone(),
        Arc::clone(&telemetry),
    ));
    let ticker = tokio::spawn(tick_loop(inbox.clone(), options.tick));
    let listener = tokio::spawn(listen_loop(bus.subscribe(), inbox.clone()));
    let http = match options.http {
        Some(addr) => Some(
            http::start(
                addr,
                HttpContext::new(&options.data, local_addr, &keys, &telemetry)
                    .with_postgres(options.postgres.clone()),
            )
            .await?,
        ),
        None => None,
    };
    Ok(RunningRelay {
        local_addr,
        keys,
        database,
        telemetry,
        http,
        endpoint,
        inbox,
        accept,
        ticker,
        listener,
        actor_done,
    })
}

/// Hand the relay what the other nodes committed.
async fn listen_loop(mut notices: mpsc::Receiver<CommitNotice>, inbox: mpsc::Sender<ToActor>) {
    while let Some(notice) = notices.recv().await {
        if inbox.send(ToActor::Remote(notice)).await.is_err() {
            return;
        }
    }
}

fn load_keys(options: &ServeOptions) -> anyhow::Result<RelayKeys> {
    let user_cert = match (&options.cert, &options.key) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        (None, None) => None,
        _ => anyhow::bail!("give both the certificate and its key, or neither"),
    };
    let (keys, created) = keys::load_or_create(&options.data, user_cert, &options.names)
        .with_context(|| format!("cannot load the relay keys from {}", options.data.display()))?;
    if created {
        tracing::info!(
            relay_id = %keys.relay_id,
            cert = %keys.cert_path.display(),
            "created the relay's keys; devices enrolled from now on pin this certificate"
        );
    } else {
        tracing::info!(relay_id = %keys.relay_id, cert = %keys.cert_path.display(), "loaded the relay's keys");
    }
    Ok(keys)
}

/// Let the relay notice, every few seconds, credentials that expired or were
/// revoked (by `waybill revoke`, from another process) during live sessions.
async fn tick_loop(inbox: mpsc::Sender<ToActor>, tick: Duration) {
    let mut every = tokio::time::interval(tick);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if inbox.send(ToActor::Tick).await.is_err() {
            return;
        }
    }
}

async fn accept_loop(endpoint: Endpoint, inbox: mpsc::Sender<ToActor>, telemetry: Arc<Telemetry>) {
    let next = Arc::new(AtomicU64::new(1));
    while let Some(incoming) = endpoint.accept().await {
        let conn = next.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection::run(
            Box::new(incoming),
            conn,
            inbox.clone(),
            Arc::clone(&telemetry),
        ));
    }
}

impl RunningRelay {
    /// Stop gracefully: refuse new devices, tell connected ones the relay is
    /// shutting down, give them a moment to hear it, then close. Everything
    /// acknowledged is already durable (acknowledgements follow the commit).
    pub async fn shutdown(self) {
        if let Some(http) = self.http {
            http.shutdown().await;
        }
        self.endpoint.set_server_config(None);
        self.accept.abort();
        self.ticker.abort();
        self.listener.abort();
        let (done, flushed) = oneshot::channel();
        if self.inbox.send(ToActor::Shutdown { done }).await.is_ok()
            && tokio::time::timeout(SHUTDOWN_FLUSH, flushed).await.is_err()
        {
            tracing::warn!("devices did not disconnect in time; closing their connections");
        }
        self.endpoint.close(
            VarInt::from_u32(close_code::SHUTTING_DOWN),
            b"relay shutting down",
        );
        let _ = tokio::time::timeout(SHUTDOWN_DRAIN, self.endpoint.wait_idle()).await;
        // The relay thread ends once every connection task has let go of it.
        drop(self.inbox);
        if tokio::time::timeout(SHUTDOWN_DRAIN, self.actor_done)
            .await
            .is_err()
        {
            tracing::warn!("the relay thread did not stop in time");
        }
        tracing::info!("relay stopped");
    }
}
