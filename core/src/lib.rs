//! Waybill's shared engine.
//!
//! Orders and deliveries are Automerge documents ([`model`]) kept in a durable
//! local SQLite store ([`store`]); apps hold a [`replica::Replica`], which mutates,
//! queries and observes them and hands changes to the sync layer.

pub mod changes;
pub mod credential;
#[doc(hidden)]
pub mod fuzz;
pub mod hlc;
pub mod identity;
pub mod ids;
pub mod model;
pub mod net;
mod observers;
mod parallel;
pub mod protocol;
pub mod replica;
pub mod store;
pub mod sync;

pub use hlc::Hlc;
pub use identity::{DeviceIdentity, Role};
pub use ids::{DocId, DocKind};
pub use replica::{Replica, ReplicaError};
