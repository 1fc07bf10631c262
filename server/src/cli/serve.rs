//! `waybill serve`: run the relay until SIGINT or SIGTERM.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use waybill_core::sync::RelayConfig;

use super::CliError;
use crate::service::{self, ServeOptions};

/// `waybill serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Data directory (relay database, keys, certificate).
    #[arg(
        long,
        default_value = "./waybill-data",
        env = "WAYBILL_DATA",
        value_name = "DIR"
    )]
    pub data: PathBuf,
    /// UDP address to listen on for devices (QUIC).
    #[arg(long, default_value = "0.0.0.0:4433", env = "WAYBILL_LISTEN")]
    pub listen: SocketAddr,
    /// Your own TLS certificate (PEM) instead of the generated self-signed one.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// An extra host name or IP address for the generated certificate (repeatable;
    /// it only matters when the certificate is first created).
    #[arg(long = "name", value_name = "HOST")]
    pub names: Vec<String>,
    /// Keep the log in PostgreSQL instead of `relay.db` in the data directory; every
    /// relay node of a deployment uses the same database (and schema: put one in the
    /// URL, `?options=-c%20search_path%3Dwaybill`).
    #[arg(long, env = "WAYBILL_POSTGRES", value_name = "URL")]
    pub postgres: Option<String>,
    /// Announce commits to the other relay nodes through NATS JetStream, so their
    /// devices get changes accepted here at once (e.g. `nats://10.0.0.5:4222`).
    #[arg(long, env = "WAYBILL_NATS", value_name = "URL")]
    pub nats: Option<String>,
    /// TCP address for the HTTP API, the dashboard, /metrics and /health
    /// (off unless given).
    #[arg(long, env = "WAYBILL_HTTP", value_name = "ADDR")]
    pub http: Option<SocketAddr>,
}

/// Run the relay on a multi-threaded runtime until a signal asks it to stop.
pub(crate) fn run(args: ServeArgs) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let options = ServeOptions {
        data: args.data,
        listen: args.listen,
        cert: args.cert,
        key: args.key,
        names: args.names,
        postgres: args.postgres,
        nats: args.nats,
        bus: None,
        tick: service::TICK,
        config: RelayConfig::default(),
        http: args.http,
    };
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        service::serve(options, shutdown)
            .await
            .map_err(CliError::Serve)
    })
}

/// Resolves on the first SIGINT or SIGTERM. The handlers are installed before this
/// returns, so a signal that arrives while the relay starts is not lost.
#[cfg(unix)]
fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static, CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).map_err(CliError::Runtime)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(CliError::Runtime)?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "signal received");
    })
}

/// Resolves on Ctrl-C (platforms without Unix signals).
#[cfg(not(unix))]
fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static, CliError> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("shutting down");
        }
    })
}
