//! The delivery document (one courier stop for an order) and its lifecycle.

use super::error::ModelError;
use super::event::{GeoPoint, StatusEvent};
use super::lifecycle::{self, EventFacts, Folded, Lifecycle};
use crate::hlc::Hlc;
use autosurgeon::{Hydrate, Reconcile, Text};
use serde::{Deserialize, Serialize};

/// Where the courier goes.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Stop {
    /// Street address.
    pub address: String,
    /// Map position, when geocoded.
    #[serde(default)]
    pub geo: Option<GeoPoint>,
    /// Who to ask for at the door.
    #[serde(default)]
    pub contact_name: Option<String>,
    /// Phone to call at the door.
    #[serde(default)]
    pub contact_phone: Option<String>,
}

/// When the customer expects the delivery (milliseconds since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Reconcile, Hydrate, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    /// Earliest promised arrival.
    pub start_ms: i64,
    /// Latest promised arrival.
    pub end_ms: i64,
}

/// What kind of proof of delivery was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Reconcile, Hydrate, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProofKind {
    /// A signature drawn on the phone.
    #[autosurgeon(rename = "signature")]
    Signature,
    /// A photo of the parcel at the door.
    #[autosurgeon(rename = "photo")]
    Photo,
}

/// A reference to a proof-of-delivery blob held outside the document.
#[derive(Debug, Clone, PartialEq, Eq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct ProofRef {
    /// Unique id (`pod_…`).
    pub id: String,
    /// Signature or photo.
    pub kind: ProofKind,
    /// Content address of the blob (e.g. `sha256:…`), never the blob itself.
    pub blob: String,
    /// MIME type of the blob.
    pub media_type: String,
    /// Device that captured it.
    pub actor: String,
    /// When.
    pub at: Hlc,
}

/// What can happen to a delivery.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Reconcile,
    Hydrate,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum DeliveryEventKind {
    #[autosurgeon(rename = "assigned")]
    Assigned,
    #[autosurgeon(rename = "picked_up")]
    PickedUp,
    #[autosurgeon(rename = "in_transit")]
    InTransit,
    #[autosurgeon(rename = "arrived")]
    Arrived,
    #[autosurgeon(rename = "delivered")]
    Delivered,
    #[autosurgeon(rename = "failed_attempt")]
    FailedAttempt,
    #[autosurgeon(rename = "returned_to_store")]
    ReturnedToStore,
    #[autosurgeon(rename = "conflict_resolved")]
    ConflictResolved,
}

impl DeliveryEventKind {
    /// Every kind, in lifecycle order.
    pub const ALL: [DeliveryEventKind; 8] = [
        Self::Assigned,
        Self::PickedUp,
        Self::InTransit,
        Self::Arrived,
        Self::Delivered,
        Self::FailedAttempt,
        Self::ReturnedToStore,
        Self::ConflictResolved,
    ];

    /// The stored name (`picked_up`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Assigned => "assigned",
            Self::PickedUp => "picked_up",
            Self::InTransit => "in_transit",
            Self::Arrived => "arrived",
            Self::Delivered => "delivered",
            Self::FailedAttempt => "failed_attempt",
            Self::ReturnedToStore => "returned_to_store",
            Self::ConflictResolved => "conflict_resolved",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Result<Self, ModelError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ModelError::UnknownEventKind {
                doc_kind: "delivery",
                kind: s.to_owned(),
            })
    }
}

/// Where a delivery stands (without the conflict state; see [`DeliveryStatus`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum DeliveryState {
    Assigned,
    PickedUp,
    InTransit,
    Arrived,
    Delivered,
    FailedAttempt,
    ReturnedToStore,
}

impl DeliveryState {
    /// The name used in indexes and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Assigned => "assigned",
            Self::PickedUp => "picked_up",
            Self::InTransit => "in_transit",
            Self::Arrived => "arrived",
            Self::Delivered => "delivered",
            Self::FailedAttempt => "failed_attempt",
            Self::ReturnedToStore => "returned_to_store",
        }
    }
}

/// The rules of a delivery's life.
#[derive(Debug)]
pub enum DeliveryLifecycle {}

impl Lifecycle for DeliveryLifecycle {
    type Kind = DeliveryEventKind;
    type State = DeliveryState;
    const RESOLVES: DeliveryEventKind = DeliveryEventKind::ConflictResolved;
    const ATTEMPT_MARKER: Option<DeliveryEventKind> = Some(DeliveryEventKind::FailedAttempt);

    fn target(kind: DeliveryEventKind) -> Option<DeliveryState> {
        use DeliveryEventKind as K;
        Some(match kind {
            K::Assigned => DeliveryState::Assigned,
            K::PickedUp => DeliveryState::PickedUp,
            K::InTransit => DeliveryState::InTransit,
            K::Arrived => DeliveryState::Arrived,
            K::Delivered => DeliveryState::Delivered,
            K::FailedAttempt => DeliveryState::FailedAttempt,
            K::ReturnedToStore => DeliveryState::ReturnedToStore,
            K::ConflictResolved => return None,
        })
    }

    fn precedence(state: DeliveryState) -> u8 {
        use DeliveryState as S;
        match state {
            S::Assigned => 0,
            S::PickedUp => 1,
            S::InTransit => 2,
            S::Arrived => 3,
            S::FailedAttempt => 4,
            S::ReturnedToStore => 5,
            S::Delivered => 6,
        }
    }

    fn absorbing(state: DeliveryState) -> bool {
        state == DeliveryState::Delivered
    }

    /// Delivered contradicts a concurrent failed attempt on the same attempt, and a
    /// concurrent return to the store.
    fn incompatible(
        a: &EventFacts<'_, DeliveryEventKind>,
        b: &EventFacts<'_, DeliveryEventKind>,
    ) -> bool {
        use DeliveryEventKind as K;
        let one_way = |x: &EventFacts<'_, K>, y: &EventFacts<'_, K>| {
            x.event.kind == K::Delivered
                && ((y.event.kind == K::FailedAttempt && x.attempt == y.attempt)
                    || y.event.kind == K::ReturnedToStore)
        };
        one_way(a, b) || one_way(b, a)
    }

    fn allowed(from: Option<DeliveryState>, kind: DeliveryEventKind) -> bool {
        use DeliveryEventKind as K;
        use DeliveryState as S;
        match from {
            None => kind == K::Assigned,
            Some(from) => matches!(
                (from, kind),
                (S::Assigned, K::Assigned | K::PickedUp)
                    | (
                        S::PickedUp,
                        K::InTransit | K::Arrived | K::Delivered | K::FailedAttempt
                    )
                    | (S::InTransit, K::Arrived | K::Delivered | K::FailedAttempt)
                    | (S::Arrived, K::Delivered | K::FailedAttempt)
                    | (
                        S::FailedAttempt,
                        K::InTransit | K::Arrived | K::ReturnedToStore | K::Assigned
                    )
                    | (S::ReturnedToStore, K::Assigned)
            ),
        }
    }

    fn kind_name(kind: DeliveryEventKind) -> &'static str {
        kind.as_str()
    }
}

/// A delivery's derived status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// No conflict: the delivery is in this state.
    State(DeliveryState),
    /// Two concurrent events contradict each other; a dispatcher must resolve it.
    Conflict(Box<lifecycle::Conflict>),
}

impl DeliveryStatus {
    /// The name used in indexes and JSON (`in_transit`, `conflict`).
    pub fn as_str(&self) -> &'static str {
        match self {
            DeliveryStatus::State(s) => s.as_str(),
            DeliveryStatus::Conflict(_) => "conflict",
        }
    }
}

/// A delivery document, as stored in Automerge (see SCHEMA.md).
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
pub struct Delivery {
    /// Schema version the document was written with.
    pub schema_version: i64,
    /// Always `"delivery"`.
    #[autosurgeon(rename = "type")]
    pub doc_type: String,
    /// The document id (`dlv_…`).
    pub id: String,
    /// The order it delivers.
    pub order_id: String,
    /// The store it leaves from.
    pub store: String,
    /// Where to go.
    pub stop: Stop,
    /// When the customer expects it.
    pub window: Option<TimeWindow>,
    /// Proof of delivery references (append-only).
    pub proofs: Vec<ProofRef>,
    /// Free-text notes (collaborative text).
    pub notes: Text,
    /// Status log (append-only); `assigned` events carry the courier.
    pub events: Vec<StatusEvent<DeliveryEventKind>>,
    /// When it was created.
    pub created_at: Hlc,
    /// Device that created it.
    pub created_by: String,
}

impl Delivery {
    /// Fold the status log.
    pub fn fold(&self) -> Folded<DeliveryState> {
        lifecycle::fold::<DeliveryLifecycle>(&self.events)
    }

    /// The derived status.
    pub fn status(&self) -> DeliveryStatus {
        status_of(&self.fold())
    }

    /// The courier of the last `assigned` event in timeline order.
    pub fn courier(&self) -> Option<String> {
        courier_of(&self.events, &self.fold())
    }

    /// How many attempts have failed.
    pub fn failed_attempts(&self) -> usize {
        let folded = self.fold();
        folded
            .timeline
            .iter()
            .filter(|&&i| self.events[i].kind == DeliveryEventKind::FailedAttempt)
            .count()
    }
}

pub(crate) fn status_of(folded: &Folded<DeliveryState>) -> DeliveryStatus {
    match folded.conflicts.first() {
        Some(c) => DeliveryStatus::Conflict(Box::new(c.clone())),
        None => DeliveryStatus::State(folded.state.unwrap_or(DeliveryState::Assigned)),
    }
}

pub(crate) fn courier_of(
    events: &[StatusEvent<DeliveryEventKind>],
    folded: &Folded<DeliveryState>,
) -> Option<String> {
    folded
        .timeline
        .iter()
        .rev()
        .map(|&i| &events[i])
        .find(|e| e.kind == DeliveryEventKind::Assigned && e.courier.is_some())
        .and_then(|e| e.courier.clone())
}
