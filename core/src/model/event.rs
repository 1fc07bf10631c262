//! Status events: the append-only log from which order and delivery status is derived.

use crate::hlc::Hlc;
use autosurgeon::{Hydrate, Reconcile};
use serde::{Deserialize, Serialize};

/// A point on the map, as a phone's location service reports it.
#[derive(Debug, Clone, Copy, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct GeoPoint {
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Horizontal accuracy in metres, when known.
    pub accuracy_m: Option<f64>,
}

/// One entry of a document's status log. `K` is the document's event kind
/// ([`super::OrderEventKind`] or [`super::DeliveryEventKind`]).
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct StatusEvent<K> {
    /// Unique id (`ev_…`).
    pub id: String,
    /// What happened.
    pub kind: K,
    /// The device that recorded it.
    pub actor: String,
    /// When, by the recording device's hybrid logical clock.
    pub at: Hlc,
    /// Ids of the events this one was recorded after (the log's frontier on the
    /// recording device). This makes causality explicit, so the fold can tell
    /// "after" from "concurrently with".
    pub after: Vec<String>,
    /// Where it happened, if the device knew.
    pub location: Option<GeoPoint>,
    /// Free text the person added.
    pub note: Option<String>,
    /// For `conflict_resolved`: the kind whose outcome the resolver chose.
    pub resolution: Option<K>,
    /// For a delivery's `assigned`: the courier it is assigned to.
    pub courier: Option<String>,
}

/// Options a person can attach when recording an event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventDetails {
    /// Free text.
    pub note: Option<String>,
    /// Where it happened.
    pub location: Option<GeoPoint>,
    /// For `conflict_resolved`: the outcome chosen, as an event kind name.
    pub resolution: Option<String>,
}
