//! What callers hand in to create or change documents, with validation.
//!
//! [`NewOrder`] is also the JSON an integrator or the command line hands in
//! (see the README); unknown fields are refused rather than silently dropped.

use super::delivery::{ProofKind, Stop, TimeWindow};
use super::error::ModelError;
use super::event::GeoPoint;
use super::money::{EntryKind, PaymentMethod};
use super::order::{Channel, Customer, Fulfilment, ReturnLine};
use serde::{Deserialize, Serialize};

/// A line as handed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLine {
    /// Stock keeping unit.
    pub sku: String,
    /// Product name.
    pub name: String,
    /// Quantity (positive).
    pub qty: i64,
    /// Price of one unit in minor units (zero or more).
    pub unit_price: i64,
}

/// An order as handed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    /// The retailer's order number (`S1-000123`).
    pub number: String,
    /// Sales channel.
    pub channel: Channel,
    /// Owning store id.
    pub store: String,
    /// The customer.
    pub customer: Customer,
    /// ISO 4217 currency code.
    pub currency: String,
    /// How it reaches the customer.
    pub fulfilment: Fulfilment,
    /// At least one line.
    pub lines: Vec<NewLine>,
    /// An opening note.
    #[serde(default)]
    pub note: Option<String>,
}

/// A money movement as handed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLedgerEntry {
    /// Payment, refund or store credit.
    pub kind: EntryKind,
    /// How the money moved.
    pub method: PaymentMethod,
    /// Positive amount in minor units.
    pub amount: i64,
    /// Must equal the order's currency.
    pub currency: String,
    /// The delivery at whose door it was collected, if any.
    #[serde(default)]
    pub delivery_id: Option<String>,
    /// Terminal or bank reference.
    #[serde(default)]
    pub reference: Option<String>,
}

impl NewLedgerEntry {
    /// A payment received.
    pub fn payment(method: PaymentMethod, amount: i64, currency: impl Into<String>) -> Self {
        Self {
            kind: EntryKind::Payment,
            method,
            amount,
            currency: currency.into(),
            delivery_id: None,
            reference: None,
        }
    }
}

/// A return as handed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewReturn {
    /// What comes back.
    pub lines: Vec<ReturnLine>,
    /// Why.
    pub reason: String,
    /// Doorstep return on this delivery, if any.
    #[serde(default)]
    pub delivery_id: Option<String>,
}

/// A delivery as handed in when assigning a courier.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDelivery {
    /// Where to go; defaults to the customer's address.
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Promised window.
    #[serde(default)]
    pub window: Option<TimeWindow>,
}

/// A proof of delivery as handed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProof {
    /// Signature or photo.
    pub kind: ProofKind,
    /// Content address of the blob.
    pub blob: String,
    /// MIME type.
    pub media_type: String,
}

fn non_empty(field: &str, value: &str) -> Result<(), ModelError> {
    if value.trim().is_empty() {
        return Err(ModelError::invalid(field, "must not be empty"));
    }
    if value.len() > 4096 {
        return Err(ModelError::invalid(field, "longer than 4096 bytes"));
    }
    Ok(())
}

/// Check an ISO 4217-shaped code: three upper-case ASCII letters.
pub fn validate_currency(field: &str, code: &str) -> Result<(), ModelError> {
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(ModelError::invalid(
            field,
            format!("`{code}` is not a three-letter currency code"),
        ))
    }
}

impl NewLine {
    /// Check quantities and prices.
    pub fn validate(&self, field: &str) -> Result<(), ModelError> {
        non_empty(&format!("{field}.sku"), &self.sku)?;
        non_empty(&format!("{field}.name"), &self.name)?;
        if self.qty <= 0 || self.qty > 1_000_000 {
            return Err(ModelError::invalid(
                format!("{field}.qty"),
                "must be between 1 and 1,000,000",
            ));
        }
        if self.unit_price < 0 || self.unit_price > i64::MAX / 1_000_000 {
            return Err(ModelError::invalid(
                format!("{field}.unit_price"),
                "must be zero or more minor units",
            ));
        }
        Ok(())
    }
}

impl NewOrder {
    /// Check every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ModelError> {
        non_empty("number", &self.number)?;
        non_empty("store", &self.store)?;
        non_empty("customer.id", &self.customer.id)?;
        non_empty("customer.name", &self.customer.name)?;
        validate_currency("currency", &self.currency)?;
        if self.lines.is_empty() {
            return Err(ModelError::invalid(
                "lines",
                "an order needs at least one line",
            ));
        }
        if self.lines.len() > 1000 {
            return Err(ModelError::invalid("lines", "more than 1000 lines"));
        }
        for (i, line) in self.lines.iter().enumerate() {
            line.validate(&format!("lines[{i}]"))?;
        }
        Ok(())
    }
}

impl NewLedgerEntry {
    /// Check the amount and currency against the order's currency.
    pub fn validate(&self, order_currency: &str) -> Result<(), ModelError> {
        if self.amount <= 0 {
            return Err(ModelError::invalid(
                "amount",
                "must be a positive number of minor units",
            ));
        }
        validate_currency("currency", &self.currency)?;
        if self.currency != order_currency {
            return Err(ModelError::CurrencyMismatch {
                expected: order_currency.to_owned(),
                got: self.currency.clone(),
            });
        }
        Ok(())
    }
}

impl NewReturn {
    /// Check that every returned SKU was sold, in at most the quantity not yet returned
    /// (`returnable`: SKU and quantity left, as [`super::Order::returnable`] gives them).
    pub fn validate(&self, returnable: &[(String, i64)]) -> Result<(), ModelError> {
        non_empty("reason", &self.reason)?;
        if self.lines.is_empty() {
            return Err(ModelError::invalid(
                "lines",
                "a return needs at least one line",
            ));
        }
        for (i, line) in self.lines.iter().enumerate() {
            let Some(left) = returnable
                .iter()
                .find(|(sku, _)| *sku == line.sku)
                .map(|(_, q)| *q)
            else {
                return Err(ModelError::invalid(
                    format!("lines[{i}].sku"),
                    format!("`{}` is not on the order", line.sku),
                ));
            };
            // The same SKU may appear on several lines of one return.
            let asked: i64 = self
                .lines
                .iter()
                .filter(|l| l.sku == line.sku)
                .map(|l| l.qty)
                .sum();
            if line.qty <= 0 || asked > left {
                return Err(ModelError::invalid(
                    format!("lines[{i}].qty"),
                    format!("at most {left} left to return"),
                ));
            }
        }
        Ok(())
    }
}

impl NewProof {
    /// Check the blob reference.
    pub fn validate(&self) -> Result<(), ModelError> {
        non_empty("blob", &self.blob)?;
        non_empty("media_type", &self.media_type)
    }
}

/// Check a location.
pub fn validate_location(p: &GeoPoint) -> Result<(), ModelError> {
    if !(-90.0..=90.0).contains(&p.lat) || !(-180.0..=180.0).contains(&p.lon) {
        return Err(ModelError::invalid(
            "location",
            "latitude or longitude out of range",
        ));
    }
    Ok(())
}
