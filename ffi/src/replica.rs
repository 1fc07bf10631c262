//! The replica façade: open a device's store with its credential, mutate, query,
//! observe. Sync lives in [`crate::sync`].

use crate::error::WaybillError;
use crate::observer::{DocumentObserver, ForeignDocumentObserver, Handle, Subscription};
use crate::records::{
    CashTotal, DeliveryDetails, DeliveryFilter, DeliverySummary, EventDetailsRecord,
    NewLedgerEntryRecord, NewLineRecord, NewOrderRecord, OrderDetails, OrderFilter, OrderSummary,
    PaymentMethod, ProofKind, RefusedChangeRecord, ReturnLineRecord, Role, StopRecord,
    TimeWindowRecord,
};
use crate::sync::SyncSlot;
use std::sync::Arc;
use waybill_core::credential::Credential;
use waybill_core::model::{
    EntryKind, EventDetails, NewDelivery, NewLedgerEntry, NewOrder, NewProof, NewReturn,
};
use waybill_core::replica::ReplicaOptions;
use waybill_core::store::query::{DeliveryQuery, OrderQuery};
use waybill_core::{DocId, Replica};

type Result<T> = std::result::Result<T, WaybillError>;

fn id(s: &str) -> Result<DocId> {
    Ok(DocId::parse(s)?)
}

fn list<A, B: From<A>>(v: Vec<A>) -> Vec<B> {
    v.into_iter().map(Into::into).collect()
}

/// One device's replica of the documents it can see, opened with its credential.
/// Every mutation is durable on the device before it returns; `start_sync` or
/// `sync_once` carries it to the relay.
#[derive(uniffi::Object)]
pub struct WaybillReplica {
    pub(crate) replica: Arc<Replica>,
    pub(crate) credential: Credential,
    pub(crate) sync: SyncSlot,
}

#[uniffi::export]
impl WaybillReplica {
    /// Open (or create) the store at `db_path` for the device that `credential_json`
    /// (the contents of the file `waybill enroll` wrote) names.
    #[uniffi::constructor]
    pub fn open(db_path: String, credential_json: String) -> Result<Arc<Self>> {
        let credential = Credential::from_bytes(credential_json.as_bytes())?;
        let replica = Replica::open(
            &db_path,
            credential.body.identity(),
            ReplicaOptions::default(),
        )?;
        Ok(Arc::new(Self {
            replica: Arc::new(replica),
            credential,
            sync: SyncSlot::default(),
        }))
    }

    /// This device's id (the actor of every event it records).
    pub fn device_id(&self) -> String {
        self.replica.identity().device_id.clone()
    }

    /// This device's role.
    pub fn role(&self) -> Role {
        self.replica.identity().role.into()
    }

    /// The store this device acts for (store tablets; some couriers).
    pub fn store_id(&self) -> Option<String> {
        self.replica.identity().store_id.clone()
    }

    /// The courier this device acts for (courier phones).
    pub fn courier_id(&self) -> Option<String> {
        self.replica.identity().courier_id.clone()
    }

    /// When the credential expires (Unix ms); enrol again before then.
    pub fn credential_expires_ms(&self) -> i64 {
        self.credential.body.expires_ms
    }

    // ---- mutations ----

    /// Create an order from its JSON (the integrator's shape, see the README;
    /// unknown fields are refused). Returns the order id.
    pub fn create_order(&self, order_json: String) -> Result<String> {
        let new: NewOrder =
            serde_json::from_str(&order_json).map_err(|e| WaybillError::InvalidInput {
                field: "order_json".into(),
                reason: e.to_string(),
            })?;
        Ok(self.replica.create_order(&new)?.to_string())
    }

    /// Create an order from typed fields. Returns the order id.
    pub fn create_order_typed(&self, order: NewOrderRecord) -> Result<String> {
        Ok(self.replica.create_order(&order.into())?.to_string())
    }

    /// Add a line to an order still being prepared. Returns the line id.
    pub fn add_line(&self, order_id: String, line: NewLineRecord) -> Result<String> {
        Ok(self.replica.add_line(&id(&order_id)?, &line.into())?)
    }

    /// Assign (or reassign) a courier to deliver the order to the customer's
    /// address. Returns the delivery id.
    pub fn assign_courier(&self, order_id: String, courier_id: String) -> Result<String> {
        let delivery =
            self.replica
                .assign_courier(&id(&order_id)?, &courier_id, &NewDelivery::default())?;
        Ok(delivery.to_string())
    }

    /// Assign a courier with an explicit stop and/or promised window. Returns the
    /// delivery id.
    pub fn assign_courier_with(
        &self,
        order_id: String,
        courier_id: String,
        stop: Option<StopRecord>,
        window: Option<TimeWindowRecord>,
    ) -> Result<String> {
        let new = NewDelivery {
            stop: stop.map(Into::into),
            window: window.map(Into::into),
        };
        let delivery = self
            .replica
            .assign_courier(&id(&order_id)?, &courier_id, &new)?;
        Ok(delivery.to_string())
    }

    /// Record a status event (`confirmed`, `packed`, `picked_up`, `delivered`…) on an
    /// order or delivery. A delivery's `delivered` also completes its order.
    pub fn record_event(&self, doc_id: String, kind: String, note: Option<String>) -> Result<()> {
        let details = EventDetails {
            note,
            ..EventDetails::default()
        };
        self.replica.record_event(&id(&doc_id)?, &kind, &details)?;
        Ok(())
    }

    /// Record a status event with a location or a conflict resolution. Returns the
    /// event id.
    pub fn record_event_with(
        &self,
        doc_id: String,
        kind: String,
        details: EventDetailsRecord,
    ) -> Result<String> {
        Ok(self
            .replica
            .record_event(&id(&doc_id)?, &kind, &details.into())?)
    }

    /// Record a payment received (at the door when `delivery_id` is given). Returns
    /// the ledger entry id.
    pub fn record_payment(
        &self,
        order_id: String,
        amount: i64,
        currency: String,
        method: PaymentMethod,
        delivery_id: Option<String>,
    ) -> Result<String> {
        let entry = NewLedgerEntry {
            kind: EntryKind::Payment,
            method: method.into(),
            amount,
            currency,
            delivery_id,
            reference: None,
        };
        Ok(self.replica.record_payment(&id(&order_id)?, &entry)?)
    }

    /// Record any ledger entry: a payment with a reference, a refund or store
    /// credit. Returns the entry id.
    pub fn record_ledger_entry(
        &self,
        order_id: String,
        entry: NewLedgerEntryRecord,
    ) -> Result<String> {
        Ok(self
            .replica
            .record_payment(&id(&order_id)?, &entry.into())?)
    }

    /// Start a return of some of the order's lines (a doorstep return when
    /// `delivery_id` is given). Returns the return id.
    pub fn start_return(
        &self,
        order_id: String,
        lines: Vec<ReturnLineRecord>,
        reason: String,
        delivery_id: Option<String>,
    ) -> Result<String> {
        let new = NewReturn {
            lines: list(lines),
            reason,
            delivery_id,
        };
        Ok(self.replica.start_return(&id(&order_id)?, &new)?)
    }

    /// Add a note to an order or delivery.
    pub fn add_note(&self, doc_id: String, text: String) -> Result<()> {
        Ok(self.replica.add_note(&id(&doc_id)?, &text)?)
    }

    /// Attach a proof of delivery (a blob stored elsewhere, by content address).
    /// Returns the proof id.
    pub fn attach_proof(
        &self,
        delivery_id: String,
        kind: ProofKind,
        blob: String,
        media_type: String,
    ) -> Result<String> {
        let new = NewProof {
            kind: kind.into(),
            blob,
            media_type,
        };
        Ok(self.replica.attach_proof(&id(&delivery_id)?, &new)?)
    }

    // ---- queries ----

    /// Everything about an order.
    pub fn order(&self, order_id: String) -> Result<OrderDetails> {
        Ok(self.replica.order(&id(&order_id)?)?.into())
    }

    /// Everything about a delivery.
    pub fn delivery(&self, delivery_id: String) -> Result<DeliveryDetails> {
        Ok(self.replica.delivery(&id(&delivery_id)?)?.into())
    }

    /// Orders on this device, newest first, optionally with one status.
    pub fn orders(&self, status: Option<String>, limit: u32) -> Result<Vec<OrderSummary>> {
        let q = OrderQuery {
            status,
            limit: Some(limit),
            ..OrderQuery::default()
        };
        Ok(list(self.replica.orders(&q)?))
    }

    /// Orders matching every filter set.
    pub fn orders_matching(&self, filter: OrderFilter) -> Result<Vec<OrderSummary>> {
        Ok(list(self.replica.orders(&filter.into())?))
    }

    /// Deliveries on this device, optionally of one courier and/or status.
    pub fn deliveries(
        &self,
        courier: Option<String>,
        status: Option<String>,
    ) -> Result<Vec<DeliverySummary>> {
        let q = DeliveryQuery {
            courier,
            status,
            ..DeliveryQuery::default()
        };
        Ok(list(self.replica.deliveries(&q)?))
    }

    /// Deliveries matching every filter set (due windows for a day's list).
    pub fn deliveries_matching(&self, filter: DeliveryFilter) -> Result<Vec<DeliverySummary>> {
        Ok(list(self.replica.deliveries(&filter.into())?))
    }

    /// Orders whose number or customer name contains `text` (case-insensitive).
    pub fn search_orders(&self, text: String, limit: u32) -> Result<Vec<OrderSummary>> {
        Ok(list(self.replica.search_orders(&text, limit)?))
    }

    /// Cash a courier collected at the door, per currency.
    pub fn cash_collected(&self, courier_id: String) -> Result<Vec<CashTotal>> {
        Ok(self
            .replica
            .cash_collected(&courier_id)?
            .into_iter()
            .map(|(currency, amount)| CashTotal { currency, amount })
            .collect())
    }

    /// Local changes the relay has not acknowledged yet.
    pub fn pending_uploads(&self) -> Result<u64> {
        Ok(self.replica.pending_uploads()?)
    }

    /// Local changes the relay refused (never applied anywhere else).
    pub fn refused_changes(&self) -> Result<Vec<RefusedChangeRecord>> {
        Ok(list(self.replica.refused_changes()?))
    }

    // ---- observers ----

    /// Hear which documents change (local writes, merged changes, removals). Keep
    /// the returned subscription; cancel or close it to stop.
    pub fn subscribe(&self, observer: Arc<dyn DocumentObserver>) -> Arc<Subscription> {
        let sub = self
            .replica
            .subscribe(Arc::new(ForeignDocumentObserver(observer)));
        Subscription::new(Handle::Documents(sub))
    }
}
