//! Waybill's mobile SDK surface.
//!
//! The uniffi exports for Kotlin and Swift arrive with the mobile SDK issue; until
//! then this crate only pins the core version the bindings will wrap.

/// The version of the core these bindings wrap.
pub fn core_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
