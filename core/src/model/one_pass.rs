//! A read-only view of an Automerge document that reads each map and list once.
//!
//! autosurgeon's derived `Hydrate` asks for one field at a time (`get(obj, key)`),
//! and each `get` seeks the key in Automerge's columnar op set from the start of the
//! object: for an order (17 fields, 3 lines, a few events, each a map of its own)
//! that is ≈ 45 seeks, 90 % of the typed read. [`OnePass`] answers those `get`s from
//! one `map_range` / `list_range` pass per object, made the first time the object is
//! asked for, so the typed schema stays the derive's and the read costs a pass per
//! object instead of a seek per field. Anything it does not cache (text, errors,
//! `parents`) is Automerge's own answer.

use automerge::ReadDoc as Read;
use automerge::{Automerge, AutomergeError, ObjId, ObjType, Prop, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::RangeBounds;

/// One visible value: what `get` returns, and whether other values conflict with it.
#[derive(Clone)]
struct Entry {
    value: Value<'static>,
    id: ObjId,
    conflict: bool,
}

/// An object's visible values, as read in one pass.
enum Object {
    /// A map's keys, sorted.
    Map(Vec<(String, Entry)>),
    /// A list's elements, in order.
    List(Vec<Entry>),
    /// Text, or not an object: every question goes to Automerge.
    Other,
}

/// A document seen through per-object caches (see the module docs). Lives for one
/// read; the document cannot change under it (it holds a shared borrow).
pub struct OnePass<'d> {
    doc: &'d Automerge,
    objects: RefCell<HashMap<ObjId, Object>>,
}

impl<'d> OnePass<'d> {
    /// A view of `doc` with nothing read yet.
    pub fn new(doc: &'d Automerge) -> Self {
        OnePass {
            doc,
            objects: RefCell::new(HashMap::new()),
        }
    }

    /// The visible value at `prop` of `obj`, and whether other values conflict with
    /// it (what `get_all(..).len() > 1` tells, without a second seek). `None` when
    /// the object is not a cached map or list; `Some(None)` when the prop is unset.
    fn entry(&self, obj: &ObjId, prop: &Prop) -> Option<Option<Entry>> {
        self.read_object(obj);
        let objects = self.objects.borrow();
        match (objects.get(obj)?, prop) {
            (Object::Map(keys), Prop::Map(key)) => Some(
                keys.binary_search_by(|(k, _)| k.as_str().cmp(key))
                    .ok()
                    .map(|at| keys[at].1.clone()),
            ),
            (Object::List(items), Prop::Seq(index)) => Some(items.get(*index).cloned()),
            _ => None,
        }
    }

    /// Whether `key` of `obj` has several concurrent values.
    pub fn conflicted(&self, obj: &ObjId, key: &str) -> Result<bool, AutomergeError> {
        match self.entry(obj, &Prop::Map(key.to_owned())) {
            Some(entry) => Ok(entry.is_some_and(|e| e.conflict)),
            None => Ok(Read::get_all(self.doc, obj, key)?.len() > 1),
        }
    }

    /// Read `obj` in one pass, the first time it is asked for.
    fn read_object(&self, obj: &ObjId) {
        if self.objects.borrow().contains_key(obj) {
            return;
        }
        let object = match Read::object_type(self.doc, obj) {
            Ok(ObjType::Map | ObjType::Table) => {
                let mut keys: Vec<(String, Entry)> = Read::map_range(self.doc, obj, ..)
                    .map(|item| {
                        let entry = Entry {
                            id: item.id(),
                            value: item.value.into_value(),
                            conflict: item.conflict,
                        };
                        (item.key.into_owned(), entry)
                    })
                    .collect();
                keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                Object::Map(keys)
            }
            Ok(ObjType::List) => Object::List(
                Read::list_range(self.doc, obj, ..)
                    .map(|item| Entry {
                        id: item.id(),
                        value: item.value.into_value(),
                        conflict: item.conflict,
                    })
                    .collect(),
            ),
            Ok(ObjType::Text) | Err(_) => Object::Other,
        };
        self.objects.borrow_mut().insert(obj.clone(), object);
    }
}

impl autosurgeon::ReadDoc for OnePass<'_> {
    type Parents<'a>
        = automerge::Parents<'a>
    where
        Self: 'a;

    fn get_heads(&self) -> Vec<automerge::ChangeHash> {
        self.doc.get_heads()
    }

    fn get<P: Into<Prop>>(
        &self,
        obj: &ObjId,
        prop: P,
    ) -> Result<Option<(Value<'_>, ObjId)>, AutomergeError> {
        let prop = prop.into();
        match self.entry(obj, &prop) {
            Some(found) => Ok(found.map(|e| (e.value, e.id))),
            None => Read::get(self.doc, obj, prop),
        }
    }

    fn object_type<O: AsRef<ObjId>>(&self, obj: O) -> Option<ObjType> {
        Read::object_type(self.doc, obj).ok()
    }

    fn map_range<'a, O, R>(&'a self, obj: O, range: R) -> automerge::iter::MapRange<'a>
    where
        R: RangeBounds<String> + 'a,
        O: AsRef<ObjId>,
    {
        Read::map_range(self.doc, obj, range)
    }

    fn list_range<O: AsRef<ObjId>, R: RangeBounds<usize>>(
        &self,
        obj: O,
        range: R,
    ) -> automerge::iter::ListRange<'_> {
        Read::list_range(self.doc, obj, range)
    }

    fn length<O: AsRef<ObjId>>(&self, obj: O) -> usize {
        let obj = obj.as_ref();
        self.read_object(obj);
        match self.objects.borrow().get(obj) {
            Some(Object::List(items)) => items.len(),
            Some(Object::Map(keys)) => keys.len(),
            _ => Read::length(self.doc, obj),
        }
    }

    fn text<O: AsRef<ObjId>>(&self, obj: O) -> Result<String, AutomergeError> {
        Read::text(self.doc, obj)
    }

    fn parents<O: AsRef<ObjId>>(&self, obj: O) -> Result<Self::Parents<'_>, AutomergeError> {
        Read::parents(self.doc, obj)
    }

    fn is_empty(&self) -> bool {
        self.length(automerge::ROOT) == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{ActorId, ROOT, ScalarValue};

    /// Two actors' concurrent writes, a nested map, a list of maps, text.
    fn merged() -> Automerge {
        let mut a = Automerge::new().with_actor(ActorId::from([1u8; 16]));
        let mut tx = a.transaction();
        tx.put(ROOT, "number", "S1-000001").unwrap();
        tx.put(ROOT, "qty", 3i64).unwrap();
        let customer = tx.put_object(ROOT, "customer", ObjType::Map).unwrap();
        tx.put(&customer, "name", "Leila").unwrap();
        let lines = tx.put_object(ROOT, "lines", ObjType::List).unwrap();
        for i in 0..3usize {
            let line = tx.insert_object(&lines, i, ObjType::Map).unwrap();
            tx.put(&line, "sku", format!("SKU-{i}")).unwrap();
        }
        tx.insert(&lines, 3, 7i64).unwrap();
        let notes = tx.put_object(ROOT, "notes", ObjType::Text).unwrap();
        tx.splice_text(&notes, 0, 0, "Ring twice").unwrap();
        tx.commit();
        let mut b = a.fork().with_actor(ActorId::from([2u8; 16]));
        let mut tx = a.transaction();
        tx.put(ROOT, "qty", 4i64).unwrap();
        tx.put(&customer, "name", "L. Karimi").unwrap();
        tx.commit();
        let mut tx = b.transaction();
        tx.put(ROOT, "qty", 5i64).unwrap();
        tx.put(&customer, "name", "Leila K.").unwrap();
        tx.commit();
        a.merge(&mut b).unwrap();
        a
    }

    #[test]
    fn answers_as_automerge_does() {
        let doc = merged();
        let view = OnePass::new(&doc);
        let (_, customer) = doc.get(ROOT, "customer").unwrap().unwrap();
        let (_, lines) = doc.get(ROOT, "lines").unwrap().unwrap();
        let (_, notes) = doc.get(ROOT, "notes").unwrap().unwrap();
        let mut asked: Vec<(ObjId, Prop)> = Vec::new();
        for key in ["number", "qty", "customer", "lines", "notes", "absent", ""] {
            asked.push((ROOT, key.into()));
        }
        asked.push((customer.clone(), "name".into()));
        asked.push((customer.clone(), "absent".into()));
        for i in 0..6 {
            asked.push((lines.clone(), i.into()));
        }
        asked.push((lines.clone(), "not-a-seq".into()));
        asked.push((ROOT, 0.into()));
        asked.push((notes.clone(), 0.into()));
        // Twice: the second time every answer comes from the cache.
        for _ in 0..2 {
            for (obj, prop) in &asked {
                let ours =
                    autosurgeon::ReadDoc::get(&view, obj, prop.clone()).map_err(|e| e.to_string());
                let theirs = doc.get(obj, prop.clone()).map_err(|e| e.to_string());
                assert_eq!(ours, theirs, "{obj} {prop:?}");
            }
        }
        assert_eq!(
            autosurgeon::ReadDoc::get(&view, &ROOT, "qty")
                .unwrap()
                .unwrap()
                .0,
            Value::Scalar(std::borrow::Cow::Owned(ScalarValue::Int(5)))
        );
        for obj in [&ROOT, &customer, &lines, &notes] {
            assert_eq!(autosurgeon::ReadDoc::length(&view, obj), doc.length(obj));
        }
        assert!(view.conflicted(&ROOT, "qty").unwrap());
        assert!(view.conflicted(&customer, "name").unwrap());
        assert!(!view.conflicted(&ROOT, "number").unwrap());
        assert!(!view.conflicted(&ROOT, "absent").unwrap());
        assert_eq!(
            autosurgeon::ReadDoc::text(&view, &notes).unwrap(),
            "Ring twice"
        );
    }
}
