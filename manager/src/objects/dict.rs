//! `dict`: an insertion-ordered map, keyed by value (see `PROTOCOL.md`, section 3).

use indexmap::IndexMap;
use parking_lot::Mutex;

use agora_proto::params::{array_items, map_entries};
use agora_proto::{encode, value, CallError, Params};

use crate::lifecycle::{Caller, Outcome, View};

use super::{arity, expected, store, unknown_method, Args, Kind, SharedObject, Stored};

/// One entry. The key is stored as sent only when that differs from its canonical form (the
/// map's own key), which for the common keys (short strs, small ints) it does not.
#[derive(Debug)]
struct Entry {
    original_key: Option<Stored>,
    value: Stored,
}

/// The state of a dict: canonical key → entry, in insertion order.
type Map = IndexMap<Stored, Entry>;

/// A shared dict.
#[derive(Debug, Default)]
pub struct Dict {
    map: Mutex<Map>,
}

impl Dict {
    /// A dict from `create`'s init args: nothing, or a map.
    pub fn new(args: &Args<'_>) -> Result<Dict, CallError> {
        args.expect(0, 1)?;
        let mut map = Map::new();
        if let Some(raw) = args.opt(0) {
            insert_all(&mut map, raw, 2)?;
        }
        Ok(Dict {
            map: Mutex::new(map),
        })
    }
}

/// Sets a key's value. A new key is stored as sent (its original encoding kept when that is
/// not canonical); an existing key keeps the encoding it was first stored with, as Python's
/// dict keeps the first key object (`{1.0: 'a'}` then `d[1] = 'b'` still shows `1.0`).
fn insert(map: &mut Map, key: &[u8], value: &[u8]) -> Result<(), CallError> {
    let canonical = value::key(key)?;
    if let Some(entry) = map.get_mut(canonical.as_ref()) {
        entry.value = store(value);
        return Ok(());
    }
    let original_key = (canonical.as_ref() != key).then(|| store(key));
    map.insert(
        canonical.into_owned().into(),
        Entry {
            original_key,
            value: store(value),
        },
    );
    Ok(())
}

/// Inserts every entry of a map, or every `[key, value]` pair of an array (param `param`).
fn insert_all(map: &mut Map, raw: &[u8], param: usize) -> Result<(), CallError> {
    if let Some(entries) = map_entries(raw) {
        // Hash every key before inserting any, so a bad key leaves the dict unchanged.
        let mut staged = Map::new();
        for (k, v) in entries {
            insert(&mut staged, k, v)?;
        }
        map.extend(staged);
        return Ok(());
    }
    let pairs =
        array_items(raw).ok_or_else(|| expected("a map or an array of pairs", param, raw))?;
    let mut staged = Map::new();
    for pair in pairs {
        match array_items(pair).as_deref() {
            Some([k, v]) => insert(&mut staged, k, v)?,
            _ => {
                return Err(CallError::type_error(
                    "dict.update: every element of an array must be a [key, value] pair",
                ))
            }
        }
    }
    map.extend(staged);
    Ok(())
}

fn key_of<'a>(canonical: &'a [u8], entry: &'a Entry) -> &'a [u8] {
    entry.original_key.as_deref().unwrap_or(canonical)
}

/// A `KeyError` whose message is the key, written as Python would show it.
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

fn write_pair(out: &mut Vec<u8>, k: &[u8], v: &[u8]) {
    out.push(0x92);
    out.extend_from_slice(k);
    out.extend_from_slice(v);
}

impl SharedObject for Dict {
    fn kind(&self) -> Kind {
        Kind::Dict
    }

    fn call(
        &self,
        method: &str,
        p: &Params,
        _caller: &Caller,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let (op, min, max) = route(method).ok_or_else(|| unknown_method(Kind::Dict, method))?;
        arity(p, Kind::Dict, method, min, max)?;
        op(&mut self.map.lock(), p, out)?;
        Ok(Outcome::Done)
    }

    fn snapshot(&self, out: &mut Vec<u8>) -> bool {
        let map = self.map.lock();
        encode::array_header(out, 1);
        encode::map_header(out, map.len());
        for (key, entry) in map.iter() {
            out.extend_from_slice(entry.original_key.as_deref().unwrap_or(key));
            out.extend_from_slice(&entry.value);
        }
        true
    }

    fn view(&self) -> View {
        View::sized(self.map.lock().len() as u64)
    }
}

/// One dict method: runs on the locked map and appends its result to `out`.
type Op = fn(&mut Map, &Params, &mut Vec<u8>) -> Result<(), CallError>;

/// The operation of `method`, with its fewest and most params (the object id included).
fn route(method: &str) -> Option<(Op, usize, usize)> {
    Some(match method {
        "get" => (op::get, 2, 3),
        "getitem" => (op::getitem, 2, 2),
        "setitem" => (op::setitem, 3, 3),
        "delitem" => (op::delitem, 2, 2),
        "contains" => (op::contains, 2, 2),
        "len" => (op::len, 1, 1),
        "keys" => (op::keys, 1, 1),
        "values" => (op::values, 1, 1),
        "items" => (op::items, 1, 1),
        "update" => (op::update, 2, 2),
        "pop" => (op::pop, 2, 3),
        "popitem" => (op::popitem, 1, 1),
        "setdefault" => (op::setdefault, 2, 3),
        "clear" => (op::clear, 1, 1),
        "copy" => (op::copy, 1, 1),
        _ => return None,
    })
}

/// The dict's operations, one function per method, all of one signature ([`Op`]).
mod op {
    use agora_proto::{encode, value, CallError, Params};

    use super::{insert, insert_all, key_error, key_of, write_pair, Map};

    /// `get [id, key, default?]`: the value, or the default (nil when omitted).
    pub fn get(map: &mut Map, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        match map.get(value::key(p.raw(1))?.as_ref()) {
            Some(e) => out.extend_from_slice(&e.value),
            None if p.len() == 3 => out.extend_from_slice(p.raw(2)),
            None => encode::nil(out),
        }
        Ok(())
    }

    /// `getitem [id, key]`: the value, or `KeyError`.
    pub fn getitem(map: &mut Map, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        let e = map
            .get(value::key(p.raw(1))?.as_ref())
            .ok_or_else(|| key_error(p.raw(1)))?;
        out.extend_from_slice(&e.value);
        Ok(())
    }

    /// `setitem [id, key, value]`.
    pub fn setitem(map: &mut Map, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        insert(map, p.raw(1), p.raw(2))?;
        encode::nil(out);
        Ok(())
    }

    /// `delitem [id, key]`: `KeyError` when absent.
    pub fn delitem(map: &mut Map, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        map.shift_remove(value::key(p.raw(1))?.as_ref())
            .ok_or_else(|| key_error(p.raw(1)))?;
        encode::nil(out);
        Ok(())
    }

    /// `contains [id, key]`: a bool.
    pub fn contains(map: &mut Map, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        encode::bool(out, map.contains_key(value::key(p.raw(1))?.as_ref()));
        Ok(())
    }

    /// `len [id]`.
    pub fn len(map: &mut Map, _: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        encode::uint(out, map.len() as u64);
        Ok(())
    }

    /// `keys [id]`: every key as first stored, in insertion order.
    pub fn keys(map: &mut Map, _: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        encode::array_header(out, map.len());
        for (k, e) in map.iter() {
            out.extend_from_slice(key_of(k, e));
        }
        Ok(())
    }

    /// `values [id]`.
    pub fn values(map: &mut Map, _: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        encode::array_header(out, map.len());
        for e in map.values() {
            out.extend_from_slice(&e.value);
        }
        Ok(())
    }

    /// `items [id]`: `[key, value]` pairs.
    pub fn items(map: &mut Map, _: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        encode::array_header(out, map.len());
        for (k, e) in map.iter() {
            write_pair(out, key_of(k, e), &e.value);
        }
        Ok(())
    }

    /// `update [id, map or array of pairs]`: all or nothing.
    pub fn update(map: &mut Map, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        insert_all(map, p.raw(1), 1)?;
        encode::nil(out);
        Ok(())
    }

    /// `pop [id, key, default?]`: the removed value, the default, or `KeyError`.
    pub fn pop(map: &mut Map, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        match map.shift_remove(value::key(p.raw(1))?.as_ref()) {
            Some(e) => out.extend_from_slice(&e.value),
            None if p.len() == 3 => out.extend_from_slice(p.raw(2)),
            None => return Err(key_error(p.raw(1))),
        }
        Ok(())
    }

    /// `popitem [id]`: the last inserted `[key, value]`, or `KeyError` when empty.
    pub fn popitem(map: &mut Map, _: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        let (k, e) = map
            .pop()
            .ok_or_else(|| CallError::key("popitem(): dictionary is empty"))?;
        write_pair(out, key_of(&k, &e), &e.value);
        Ok(())
    }

    /// `setdefault [id, key, default?]`: the value at key, inserting the default (nil) if absent.
    pub fn setdefault(map: &mut Map, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        let default = if p.len() == 3 { p.raw(2) } else { encode::NIL };
        if let Some(e) = map.get(value::key(p.raw(1))?.as_ref()) {
            out.extend_from_slice(&e.value);
            return Ok(());
        }
        insert(map, p.raw(1), default)?;
        out.extend_from_slice(default);
        Ok(())
    }

    /// `clear [id]`.
    pub fn clear(map: &mut Map, _: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        map.clear();
        encode::nil(out);
        Ok(())
    }

    /// `copy [id]`: a map, keys as first stored.
    pub fn copy(map: &mut Map, _: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        encode::map_header(out, map.len());
        for (k, e) in map.iter() {
            out.extend_from_slice(key_of(k, e));
            out.extend_from_slice(&e.value);
        }
        Ok(())
    }
}
