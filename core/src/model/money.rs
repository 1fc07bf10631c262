//! Money is append-only: payments, refunds and store credit are ledger entries with
//! unique ids, never edited, only compensated. What is owed is derived.

use crate::hlc::Hlc;
use autosurgeon::{Hydrate, Reconcile};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// What a ledger entry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Reconcile, Hydrate, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Money received from the customer.
    #[autosurgeon(rename = "payment")]
    Payment,
    /// Money paid back to the customer.
    #[autosurgeon(rename = "refund")]
    Refund,
    /// Credit issued to the customer's account instead of a refund.
    #[autosurgeon(rename = "store_credit")]
    StoreCredit,
}

/// How the money moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Reconcile, Hydrate, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    /// Cash (at the door when the entry names a delivery, else at the till).
    #[autosurgeon(rename = "cash")]
    Cash,
    /// Card terminal (at the door when the entry names a delivery, else in store).
    #[autosurgeon(rename = "card")]
    Card,
    /// Paid online when ordering.
    #[autosurgeon(rename = "online")]
    Online,
    /// Paid in the retailer's app.
    #[autosurgeon(rename = "in_app")]
    InApp,
    /// Charged to the customer's account balance.
    #[autosurgeon(rename = "account")]
    Account,
}

impl PaymentMethod {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Cash => "cash",
            PaymentMethod::Card => "card",
            PaymentMethod::Online => "online",
            PaymentMethod::InApp => "in_app",
            PaymentMethod::Account => "account",
        }
    }

    /// Parse a stored or command-line name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "cash" => PaymentMethod::Cash,
            "card" => PaymentMethod::Card,
            "online" => PaymentMethod::Online,
            "in_app" => PaymentMethod::InApp,
            "account" => PaymentMethod::Account,
            _ => return None,
        })
    }
}

impl EntryKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Payment => "payment",
            EntryKind::Refund => "refund",
            EntryKind::StoreCredit => "store_credit",
        }
    }
}

/// One immutable ledger entry of an order.
#[derive(Debug, Clone, PartialEq, Eq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Unique id (`pay_…`).
    pub id: String,
    /// Payment, refund or store credit.
    pub kind: EntryKind,
    /// How the money moved.
    pub method: PaymentMethod,
    /// Amount in minor units (always positive; the kind gives the direction).
    pub amount: i64,
    /// ISO 4217 code; always the order's currency.
    pub currency: String,
    /// The delivery at whose door it was collected, if any.
    pub delivery_id: Option<String>,
    /// Terminal or bank reference, if any.
    pub reference: Option<String>,
    /// Device that recorded it.
    pub actor: String,
    /// When.
    pub at: Hlc,
}

/// What an order's customer owes, derived from lines, returns and the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Balance {
    /// Sum of the lines.
    pub total: i64,
    /// Value of the returned lines.
    pub returned: i64,
    /// Payments received.
    pub paid: i64,
    /// Refunds paid out.
    pub refunded: i64,
    /// Store credit issued.
    pub credited: i64,
    /// Still owed by the customer (negative: owed to the customer).
    pub due: i64,
}

impl Balance {
    /// Derive the balance. Entries are counted once per id, so a merge that somehow
    /// carried an entry twice can never double count it.
    pub fn derive(total: i64, returned: i64, entries: &[LedgerEntry]) -> Self {
        let mut seen = HashSet::with_capacity(entries.len());
        let (mut paid, mut refunded, mut credited) = (0i64, 0i64, 0i64);
        for e in entries.iter().filter(|e| seen.insert(e.id.as_str())) {
            let slot = match e.kind {
                EntryKind::Payment => &mut paid,
                EntryKind::Refund => &mut refunded,
                EntryKind::StoreCredit => &mut credited,
            };
            *slot = slot.saturating_add(e.amount);
        }
        let due = total
            .saturating_sub(returned)
            .saturating_sub(paid)
            .saturating_add(refunded)
            .saturating_add(credited);
        Balance {
            total,
            returned,
            paid,
            refunded,
            credited,
            due,
        }
    }
}
