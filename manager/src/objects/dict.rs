//! `dict`: an insertion-ordered map, keyed by value (see `PROTOCOL.md`, section 3).

use indexmap::IndexMap;
use parking_lot::Mutex;

use agora_proto::params::{array_items, map_entries};
use agora_proto::{encode, value, CallError, Params};

use crate::lifecycle::{Caller, Outcome};

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
        let a = |min, max| arity(p, Kind::Dict, method, min, max);
        let mut map = self.map.lock();
        match method {
            "get" => {
                a(2, 3)?;
                match map.get(value::key(p.raw(1))?.as_ref()) {
                    Some(e) => out.extend_from_slice(&e.value),
                    None if p.len() == 3 => out.extend_from_slice(p.raw(2)),
                    None => encode::nil(out),
                }
            }
            "getitem" => {
                a(2, 2)?;
                let e = map
                    .get(value::key(p.raw(1))?.as_ref())
                    .ok_or_else(|| key_error(p.raw(1)))?;
                out.extend_from_slice(&e.value);
            }
            "setitem" => {
                a(3, 3)?;
                insert(&mut map, p.raw(1), p.raw(2))?;
                encode::nil(out);
            }
            "delitem" => {
                a(2, 2)?;
                map.shift_remove(value::key(p.raw(1))?.as_ref())
                    .ok_or_else(|| key_error(p.raw(1)))?;
                encode::nil(out);
            }
            "contains" => {
                a(2, 2)?;
                encode::bool(out, map.contains_key(value::key(p.raw(1))?.as_ref()));
            }
            "len" => {
                a(1, 1)?;
                encode::uint(out, map.len() as u64);
            }
            "keys" => {
                a(1, 1)?;
                encode::array_header(out, map.len());
                for (k, e) in map.iter() {
                    out.extend_from_slice(key_of(k, e));
                }
            }
            "values" => {
                a(1, 1)?;
                encode::array_header(out, map.len());
                for e in map.values() {
                    out.extend_from_slice(&e.value);
                }
            }
            "items" => {
                a(1, 1)?;
                encode::array_header(out, map.len());
                for (k, e) in map.iter() {
                    write_pair(out, key_of(k, e), &e.value);
                }
            }
            "update" => {
                a(2, 2)?;
                insert_all(&mut map, p.raw(1), 1)?;
                encode::nil(out);
            }
            "pop" => {
                a(2, 3)?;
                match map.shift_remove(value::key(p.raw(1))?.as_ref()) {
                    Some(e) => out.extend_from_slice(&e.value),
                    None if p.len() == 3 => out.extend_from_slice(p.raw(2)),
                    None => return Err(key_error(p.raw(1))),
                }
            }
            "popitem" => {
                a(1, 1)?;
                let (k, e) = map
                    .pop()
                    .ok_or_else(|| CallError::key("popitem(): dictionary is empty"))?;
                write_pair(out, key_of(&k, &e), &e.value);
            }
            "setdefault" => {
                a(2, 3)?;
                let default = if p.len() == 3 { p.raw(2) } else { encode::NIL };
                let canonical = value::key(p.raw(1))?;
                if let Some(e) = map.get(canonical.as_ref()) {
                    out.extend_from_slice(&e.value);
                } else {
                    insert(&mut map, p.raw(1), default)?;
                    out.extend_from_slice(default);
                }
            }
            "clear" => {
                a(1, 1)?;
                map.clear();
                encode::nil(out);
            }
            "copy" => {
                a(1, 1)?;
                encode::map_header(out, map.len());
                for (k, e) in map.iter() {
                    out.extend_from_slice(key_of(k, e));
                    out.extend_from_slice(&e.value);
                }
            }
            _ => return Err(unknown_method(Kind::Dict, method)),
        }
        Ok(Outcome::Done)
    }
}
