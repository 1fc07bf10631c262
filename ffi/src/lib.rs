//! Waybill's mobile SDK surface: uniffi exports over `waybill-core` for Kotlin,
//! Swift and Python.
//!
//! This crate only adapts types. Each module mirrors one part of the core:
//! [`replica`] the façade (open, mutate, query), [`records`] the typed views and
//! inputs, [`observer`] change and status callbacks, [`sync`] the background sync
//! and one-shot exchanges, [`error`] the one error type apps catch. Everything that
//! touches the network runs on one tokio runtime owned by the SDK ([`runtime`]),
//! so no exported call blocks its caller on network I/O.

uniffi::setup_scaffolding!();

pub mod error;
pub mod observer;
pub mod records;
pub mod replica;
pub mod sync;

pub use error::WaybillError;
pub use replica::WaybillReplica;

use std::sync::{Once, OnceLock};

/// The SDK's tokio runtime: two worker threads for sync, started on first use.
///
/// # Panics
///
/// If the operating system refuses to start the runtime's threads.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        #[allow(clippy::expect_used)] // nothing can sync without it; there is no caller to tell
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("waybill-sync")
            .enable_all()
            .build()
            .expect("cannot start the Waybill SDK's tokio runtime")
    })
}

/// Send the SDK's logs to stderr (logcat shows it on Android; Xcode's console on
/// iOS) at the level `filter` gives, in tracing's env-filter syntax (`info`,
/// `waybill_core=debug,warn`); an unparsable filter falls back to `info`. Also logs
/// panics inside the SDK before they unwind. Only the first call takes effect.
#[uniffi::export]
pub fn init_logging(filter: String) {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_new(&filter)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_target(true)
            .try_init();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            tracing::error!(panic = %info, "panic in the Waybill SDK");
            previous(info);
        }));
    });
}

/// The version of the Waybill core these bindings wrap.
#[uniffi::export]
pub fn core_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
