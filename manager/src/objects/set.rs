//! `set`: an insertion-ordered set of values, compared as dict keys are (see `PROTOCOL.md`,
//! sections 3 and 4.15), with the set algebra done in the manager.
//!
//! An operand of the algebra is an array (a local collection) or a reference to a `set`
//! (another shared set, or this one). A shared operand is read first, under its own lock,
//! and then this set is read or changed under its lock: no call ever holds two sets' locks,
//! so two calls each taking the other's set as operand cannot deadlock.

use std::collections::HashSet;

use indexmap::IndexMap;
use parking_lot::Mutex;

use agora_proto::params::array_items;
use agora_proto::{encode, objref, value, CallError, Params};

use crate::lifecycle::{Caller, Outcome, View};

use super::{arity, expected, unknown_method, Args, Kind, SharedObject, Stored};

/// The elements: canonical encoding → the element as first stored, when that differs.
type Elements = IndexMap<Stored, Option<Stored>>;

/// One element of an operand: its canonical key and, when different, its encoding as sent.
type Element = (Stored, Option<Stored>);

/// A shared set.
#[derive(Debug, Default)]
pub struct Set {
    elements: Mutex<Elements>,
}

impl Set {
    /// A set from `create`'s init args: nothing, or an array of elements.
    pub fn new(args: &Args<'_>) -> Result<Set, CallError> {
        args.expect(0, 1)?;
        let mut elements = Elements::new();
        if let Some(raw) = args.opt(0) {
            let items = array_items(raw).ok_or_else(|| expected("an array", 2, raw))?;
            for item in items {
                let (key, original) = element(item)?;
                elements.entry(key).or_insert(original);
            }
        }
        Ok(Set {
            elements: Mutex::new(elements),
        })
    }

    /// Every element, as stored (a snapshot taken under the lock).
    fn snapshot(&self) -> Vec<Element> {
        self.elements
            .lock()
            .iter()
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect()
    }
}

/// The canonical key of an element as sent, and the element itself when it differs.
/// `TypeError` for a map (unhashable).
fn element(raw: &[u8]) -> Result<Element, CallError> {
    let canonical = value::key(raw)?;
    let original = (canonical.as_ref() != raw).then(|| raw.into());
    Ok((canonical.into_owned().into(), original))
}

/// The elements of the operand at param `i`: an array's items, or a shared set's elements.
fn operand(p: &Params, i: usize) -> Result<Vec<Element>, CallError> {
    let raw = p.raw(i);
    if let Some(items) = array_items(raw) {
        return items.into_iter().map(element).collect();
    }
    let not_operand = || expected("an array or a reference to a set", i, raw);
    // A reference is an operand only as the whole param (ext type 1), not inside a value.
    let reference = match value::decode(raw) {
        Ok(rmpv::Value::Ext(1, data)) => objref::ObjectRef::from_ext_data(&data),
        _ => None,
    };
    let reference = reference.ok_or_else(not_operand)?;
    let (kind, id) = (reference.kind, reference.id);
    if kind != Kind::Set.as_str() {
        return Err(CallError::type_error(format!(
            "param {i} refers to a {kind}, not a set: send its elements as an array"
        )));
    }
    let object = crate::registry::holders::admitted_object(id)
        .ok_or_else(|| crate::registry::unknown_id(id))?;
    let other = object
        .as_set()
        .ok_or_else(|| CallError::type_error(format!("object {id} is not a set")))?;
    Ok(other.snapshot())
}

/// The operands at params `1..`.
fn operands(p: &Params) -> Result<Vec<Vec<Element>>, CallError> {
    (1..p.len()).map(|i| operand(p, i)).collect()
}

fn write_element(out: &mut Vec<u8>, key: &Stored, original: &Option<Stored>) {
    out.extend_from_slice(original.as_deref().unwrap_or(key));
}

fn write_all<'a>(
    out: &mut Vec<u8>,
    items: impl ExactSizeIterator<Item = (&'a Stored, &'a Option<Stored>)>,
) {
    encode::array_header(out, items.len());
    for (k, o) in items {
        write_element(out, k, o);
    }
}

/// A `KeyError` naming the element as Python shows it.
fn key_error(raw: &[u8]) -> CallError {
    let shown = match value::decode(raw) {
        Ok(rmpv::Value::String(s)) => {
            let text = String::from_utf8_lossy(s.as_bytes());
            format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
        }
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    };
    CallError::key(shown)
}

/// The canonical keys of an operand's elements, for membership tests.
fn keys(elements: &[Element]) -> HashSet<&[u8]> {
    elements.iter().map(|(k, _)| k.as_ref()).collect()
}

/// `a ∪ others`, in order: `a`'s elements, then each operand's new ones.
fn union(a: &Elements, others: Vec<Vec<Element>>) -> Elements {
    let mut result = a.clone();
    for other in others {
        for (k, o) in other {
            result.entry(k).or_insert(o);
        }
    }
    result
}

/// `a ∩ others`, in `a`'s order.
fn intersection(a: &Elements, others: &[Vec<Element>]) -> Elements {
    let indexes: Vec<_> = others.iter().map(|o| keys(o)).collect();
    a.iter()
        .filter(|(k, _)| indexes.iter().all(|ix| ix.contains(k.as_ref())))
        .map(|(k, o)| (k.clone(), o.clone()))
        .collect()
}

/// `a − others`, in `a`'s order.
fn difference(a: &Elements, others: &[Vec<Element>]) -> Elements {
    let indexes: Vec<_> = others.iter().map(|o| keys(o)).collect();
    a.iter()
        .filter(|(k, _)| !indexes.iter().any(|ix| ix.contains(k.as_ref())))
        .map(|(k, o)| (k.clone(), o.clone()))
        .collect()
}

/// `a △ other`: `a`'s elements not in `other`, then `other`'s not in `a`.
fn symmetric_difference(a: &Elements, other: Vec<Element>) -> Elements {
    let index = keys(&other);
    let mut result: Elements = a
        .iter()
        .filter(|(k, _)| !index.contains(k.as_ref()))
        .map(|(k, o)| (k.clone(), o.clone()))
        .collect();
    for (k, o) in other {
        if !a.contains_key(k.as_ref()) {
            result.entry(k).or_insert(o);
        }
    }
    result
}

impl SharedObject for Set {
    fn kind(&self) -> Kind {
        Kind::Set
    }

    fn as_set(&self) -> Option<&Set> {
        Some(self)
    }

    fn call(
        &self,
        method: &str,
        p: &Params,
        _caller: &Caller,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let a = |min, max| arity(p, Kind::Set, method, min, max);
        match method {
            "add" | "discard" | "remove" | "contains" => {
                a(2, 2)?;
                let raw = p.raw(1);
                let (key, original) = element(raw)?;
                let mut set = self.elements.lock();
                match method {
                    "add" => {
                        set.entry(key).or_insert(original);
                        encode::nil(out);
                    }
                    "discard" => {
                        set.shift_remove(key.as_ref());
                        encode::nil(out);
                    }
                    "remove" => {
                        set.shift_remove(key.as_ref())
                            .ok_or_else(|| key_error(raw))?;
                        encode::nil(out);
                    }
                    _ => encode::bool(out, set.contains_key(key.as_ref())),
                }
            }
            "pop" => {
                a(1, 1)?;
                let (k, o) = self
                    .elements
                    .lock()
                    .pop()
                    .ok_or_else(|| CallError::key("pop from an empty set"))?;
                write_element(out, &k, &o);
            }
            "clear" => {
                a(1, 1)?;
                // Dropped outside the lock: the elements may hold the last references to
                // other objects.
                let old = std::mem::take(&mut *self.elements.lock());
                drop(old);
                encode::nil(out);
            }
            "len" => {
                a(1, 1)?;
                encode::uint(out, self.elements.lock().len() as u64);
            }
            "copy" => {
                a(1, 1)?;
                let set = self.elements.lock();
                write_all(out, set.iter());
            }
            "union" | "intersection" | "difference" => {
                a(1, usize::MAX)?;
                let others = operands(p)?;
                let set = self.elements.lock();
                let result = match method {
                    "union" => union(&set, others),
                    "intersection" => intersection(&set, &others),
                    _ => difference(&set, &others),
                };
                drop(set);
                write_all(out, result.iter());
            }
            "symmetric_difference" => {
                a(2, 2)?;
                let other = operand(p, 1)?;
                let result = symmetric_difference(&self.elements.lock(), other);
                write_all(out, result.iter());
            }
            "update" | "intersection_update" | "difference_update" => {
                a(1, usize::MAX)?;
                let others = operands(p)?;
                let mut set = self.elements.lock();
                let result = match method {
                    "update" => union(&set, others),
                    "intersection_update" => intersection(&set, &others),
                    _ => difference(&set, &others),
                };
                let old = std::mem::replace(&mut *set, result);
                drop(set);
                drop(old);
                encode::nil(out);
            }
            "symmetric_difference_update" => {
                a(2, 2)?;
                let other = operand(p, 1)?;
                let mut set = self.elements.lock();
                let result = symmetric_difference(&set, other);
                let old = std::mem::replace(&mut *set, result);
                drop(set);
                drop(old);
                encode::nil(out);
            }
            "issubset" | "issuperset" | "isdisjoint" | "compare" => {
                a(2, 2)?;
                let other = operand(p, 1)?;
                let index = keys(&other);
                let set = self.elements.lock();
                let subset = set.keys().all(|k| index.contains(k.as_ref()));
                let superset = index.iter().all(|k| set.contains_key(*k));
                match method {
                    "issubset" => encode::bool(out, subset),
                    "issuperset" => encode::bool(out, superset),
                    "isdisjoint" => encode::bool(out, !index.iter().any(|k| set.contains_key(*k))),
                    _ => {
                        out.push(0x92);
                        encode::bool(out, subset);
                        encode::bool(out, superset);
                    }
                }
            }
            _ => return Err(unknown_method(Kind::Set, method)),
        }
        Ok(Outcome::Done)
    }

    fn snapshot(&self, out: &mut Vec<u8>) -> bool {
        let elements = self.elements.lock();
        encode::array_header(out, 1);
        encode::array_header(out, elements.len());
        for (key, original) in elements.iter() {
            out.extend_from_slice(original.as_deref().unwrap_or(key));
        }
        true
    }

    fn view(&self) -> View {
        View::sized(self.elements.lock().len() as u64)
    }
}
