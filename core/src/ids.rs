//! Identifiers of documents, events and ledger entries.
//!
//! Document ids carry their kind as a prefix (`ord_…`, `dlv_…`) so a replica or relay
//! knows how to read a document from its id alone, before it has any of its content.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The two kinds of replicated document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocKind {
    /// A customer order.
    Order,
    /// One delivery (a courier's stop) of an order.
    Delivery,
}

impl DocKind {
    /// The id prefix for this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            DocKind::Order => "ord_",
            DocKind::Delivery => "dlv_",
        }
    }

    /// The name used in documents, indexes and JSON (`order`, `delivery`).
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Order => "order",
            DocKind::Delivery => "delivery",
        }
    }
}

impl fmt::Display for DocKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The id of an order or delivery document: `ord_<uuid v7>` or `dlv_<uuid v7>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DocId {
    raw: String,
    kind: DocKind,
}

/// A string that is not a valid document id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a document id (expected `ord_…` or `dlv_…`)")]
pub struct InvalidDocId(pub String);

impl DocId {
    /// A fresh id of the given kind.
    pub fn new(kind: DocKind) -> Self {
        Self {
            raw: format!("{}{}", kind.prefix(), uuid::Uuid::now_v7().simple()),
            kind,
        }
    }

    /// Parse an id, checking its prefix.
    pub fn parse(s: &str) -> Result<Self, InvalidDocId> {
        let kind = if s.starts_with(DocKind::Order.prefix()) {
            DocKind::Order
        } else if s.starts_with(DocKind::Delivery.prefix()) {
            DocKind::Delivery
        } else {
            return Err(InvalidDocId(s.to_owned()));
        };
        let rest = &s[4..];
        if rest.is_empty()
            || rest.len() > 64
            || !rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(InvalidDocId(s.to_owned()));
        }
        Ok(Self {
            raw: s.to_owned(),
            kind,
        })
    }

    /// Which kind of document this id names.
    pub fn kind(&self) -> DocKind {
        self.kind
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl std::str::FromStr for DocId {
    type Err = InvalidDocId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for DocId {
    type Error = InvalidDocId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<DocId> for String {
    fn from(id: DocId) -> Self {
        id.raw
    }
}

/// A fresh id for an event or ledger entry, with a short readable prefix
/// (`ev_`, `pay_`, `ret_`, `pod_`, `ln_`).
pub fn new_entry_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_carry_their_kind() {
        let id = DocId::new(DocKind::Delivery);
        let parsed = DocId::parse(id.as_str()).unwrap();
        assert_eq!(parsed, id);
        assert_eq!(parsed.kind(), DocKind::Delivery);
        assert!(DocId::parse("xyz_123").is_err());
        assert!(DocId::parse("ord_").is_err());
        assert!(DocId::parse("ord_a b").is_err());
    }
}
