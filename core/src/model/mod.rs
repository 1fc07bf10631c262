//! The document model: typed orders and deliveries on Automerge, and their rules.
//!
//! Status is a deterministic fold over an append-only event log ([`lifecycle`]);
//! money is an append-only ledger ([`money`]). [`rules`] says which role may change what.

pub mod delivery;
pub mod document;
pub mod effect;
pub mod error;
pub mod event;
pub mod input;
pub mod lifecycle;
pub mod money;
mod one_pass;
pub mod order;
pub mod rules;

pub use delivery::{
    Delivery, DeliveryEventKind, DeliveryState, DeliveryStatus, ProofKind, ProofRef, Stop,
    TimeWindow,
};
pub use document::{Document, SCHEMA_VERSION};
pub use error::ModelError;
pub use event::{EventDetails, GeoPoint, StatusEvent};
pub use input::{NewDelivery, NewLedgerEntry, NewLine, NewOrder, NewProof, NewReturn};
pub use lifecycle::{Conflict, ConflictingEvent};
pub use money::{Balance, EntryKind, LedgerEntry, PaymentMethod};
pub use order::{
    Channel, Customer, Fulfilment, Order, OrderEventKind, OrderLine, OrderState, OrderStatus,
    ReturnEntry, ReturnLine,
};
