//! Reading typed documents out of Automerge, and the append-only writes into them.

use super::delivery::Delivery;
use super::error::ModelError;
use super::one_pass::OnePass;
use super::order::Order;
use crate::ids::{DocId, DocKind};
use automerge::transaction::{Transactable, Transaction};
use automerge::{Automerge, ObjType, ROOT, ReadDoc, ScalarValue, Value};
use autosurgeon::{Reconcile, hydrate, reconcile_insert};

/// The schema version this build writes, and the newest it reads.
pub const SCHEMA_VERSION: i64 = 1;

/// A typed document of either kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    /// An order.
    Order(Box<Order>),
    /// A delivery.
    Delivery(Box<Delivery>),
}

impl Document {
    /// The owning store.
    pub fn store(&self) -> &str {
        match self {
            Document::Order(o) => &o.store,
            Document::Delivery(d) => &d.store,
        }
    }
}

fn malformed(id: &DocId, reason: impl std::fmt::Display) -> ModelError {
    ModelError::Malformed {
        doc_id: id.to_string(),
        reason: reason.to_string(),
    }
}

/// Check the version and type fields before reading anything else, so a document
/// from a newer Waybill gets a clear error rather than a confusing field mismatch.
fn check_header(id: &DocId, doc: &OnePass<'_>) -> Result<(), ModelError> {
    use autosurgeon::ReadDoc as _;
    let version = match doc
        .get(&ROOT, "schema_version")
        .map_err(|e| malformed(id, e))?
    {
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Int(v) => *v,
            other => {
                return Err(malformed(
                    id,
                    format!("schema_version is {other}, not an integer"),
                ));
            }
        },
        _ => return Err(malformed(id, "no schema_version")),
    };
    if version > SCHEMA_VERSION {
        return Err(ModelError::FutureSchema {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    match doc.get(&ROOT, "type").map_err(|e| malformed(id, e))? {
        Some((Value::Scalar(s), _)) if s.as_str() == Some(id.kind().as_str()) => {}
        Some((Value::Object(_), _)) => {
            return Err(malformed(
                id,
                "type must be a string, not an object or text",
            ));
        }
        _ => return Err(malformed(id, format!("type is not `{}`", id.kind()))),
    }
    // Identity fields are written once, by the creator. Several concurrent values mean
    // changes of two different documents were merged under one id: refuse it rather
    // than let whichever actor sorts higher win.
    for key in ["schema_version", "type", "id"] {
        if doc.conflicted(&ROOT, key).map_err(|e| malformed(id, e))? {
            return Err(malformed(
                id,
                format!("`{key}` has concurrent values: changes of another document"),
            ));
        }
    }
    Ok(())
}

/// Read an order document.
pub fn read_order(id: &DocId, doc: &Automerge) -> Result<Order, ModelError> {
    let doc = OnePass::new(doc);
    check_header(id, &doc)?;
    let order: Order = hydrate(&doc).map_err(|e| malformed(id, e))?;
    if order.id != id.as_str() {
        return Err(malformed(id, format!("its id field says {}", order.id)));
    }
    Ok(order)
}

/// Read a delivery document.
pub fn read_delivery(id: &DocId, doc: &Automerge) -> Result<Delivery, ModelError> {
    let doc = OnePass::new(doc);
    check_header(id, &doc)?;
    let delivery: Delivery = hydrate(&doc).map_err(|e| malformed(id, e))?;
    if delivery.id != id.as_str() {
        return Err(malformed(id, format!("its id field says {}", delivery.id)));
    }
    Ok(delivery)
}

/// Read a document of the kind its id names.
pub fn read(id: &DocId, doc: &Automerge) -> Result<Document, ModelError> {
    Ok(match id.kind() {
        DocKind::Order => Document::Order(Box::new(read_order(id, doc)?)),
        DocKind::Delivery => Document::Delivery(Box::new(read_delivery(id, doc)?)),
    })
}

/// Errors while writing into a transaction. They only arise from a document that
/// changed shape under us, so they are reported as malformed.
fn write_error(field: &str, e: impl std::fmt::Display) -> ModelError {
    ModelError::Malformed {
        doc_id: String::new(),
        reason: format!("writing {field}: {e}"),
    }
}

/// Write a whole new document (order or delivery) into an empty transaction.
pub fn write_new<T: Reconcile>(tx: &mut Transaction<'_>, value: &T) -> Result<(), ModelError> {
    autosurgeon::reconcile(tx, value).map_err(|e| write_error("document", e))
}

/// Append one element to the list at `ROOT[key]`. Inserting (never rewriting the
/// list) is what makes concurrent appends on two devices both survive the merge.
pub fn append<T: Reconcile>(
    tx: &mut Transaction<'_>,
    key: &str,
    value: &T,
) -> Result<(), ModelError> {
    let list = match ReadDoc::get(tx, ROOT, key).map_err(|e| write_error(key, e))? {
        Some((Value::Object(ObjType::List), obj)) => obj,
        _ => return Err(write_error(key, "not a list")),
    };
    let len = ReadDoc::length(tx, &list);
    reconcile_insert(tx, list, len, value).map_err(|e| write_error(key, e))
}

/// Append text to the collaborative text at `ROOT[key]`, on a new line.
pub fn append_text(tx: &mut Transaction<'_>, key: &str, text: &str) -> Result<(), ModelError> {
    let obj = match ReadDoc::get(tx, ROOT, key).map_err(|e| write_error(key, e))? {
        Some((Value::Object(ObjType::Text), obj)) => obj,
        _ => return Err(write_error(key, "not text")),
    };
    let len = ReadDoc::length(tx, &obj);
    let insert = if len == 0 {
        text.to_owned()
    } else {
        format!("\n{text}")
    };
    tx.splice_text(&obj, len, 0, &insert)
        .map_err(|e| write_error(key, e))
}
