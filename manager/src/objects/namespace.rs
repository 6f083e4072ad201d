//! `namespace`: named attributes, like Python's `Manager().Namespace()`.

use indexmap::IndexMap;
use parking_lot::Mutex;

use agora_proto::params::{map_entries, text};
use agora_proto::{encode, CallError, Params};

use crate::lifecycle::{Caller, Outcome, View};

use super::{arity, expected, store, unknown_method, Args, Kind, SharedObject, Stored};

/// A shared namespace.
#[derive(Debug, Default)]
pub struct Namespace {
    attrs: Mutex<IndexMap<String, Stored>>,
}

impl Namespace {
    /// A namespace from `create`'s init args: nothing, or a map of str to value.
    pub fn new(args: &Args<'_>) -> Result<Namespace, CallError> {
        args.expect(0, 1)?;
        let mut attrs = IndexMap::new();
        if let Some(raw) = args.opt(0) {
            let entries = map_entries(raw).ok_or_else(|| expected("a map", 2, raw))?;
            for (k, v) in entries {
                let name =
                    text(k).ok_or_else(|| CallError::type_error("attribute names must be strs"))?;
                attrs.insert(name.to_owned(), store(v));
            }
        }
        Ok(Namespace {
            attrs: Mutex::new(attrs),
        })
    }
}

fn missing(name: &str) -> CallError {
    CallError::attribute(format!("'Namespace' object has no attribute '{name}'"))
}

impl SharedObject for Namespace {
    fn kind(&self) -> Kind {
        Kind::Namespace
    }

    fn call(
        &self,
        method: &str,
        p: &Params,
        _caller: &Caller,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let a = |min, max| arity(p, Kind::Namespace, method, min, max);
        let mut attrs = self.attrs.lock();
        match method {
            "getattr" => {
                a(2, 2)?;
                let name = p.str(1)?;
                out.extend_from_slice(attrs.get(name).ok_or_else(|| missing(name))?);
            }
            "setattr" => {
                a(3, 3)?;
                attrs.insert(p.str(1)?.to_owned(), store(p.raw(2)));
                encode::nil(out);
            }
            "delattr" => {
                a(2, 2)?;
                let name = p.str(1)?;
                attrs.shift_remove(name).ok_or_else(|| missing(name))?;
                encode::nil(out);
            }
            "items" => {
                a(1, 1)?;
                encode::map_header(out, attrs.len());
                for (k, v) in attrs.iter() {
                    encode::str(out, k);
                    out.extend_from_slice(v);
                }
            }
            _ => return Err(unknown_method(Kind::Namespace, method)),
        }
        Ok(Outcome::Done)
    }

    fn snapshot(&self, out: &mut Vec<u8>) -> bool {
        let attrs = self.attrs.lock();
        encode::array_header(out, 1);
        encode::map_header(out, attrs.len());
        for (name, value) in attrs.iter() {
            encode::str(out, name);
            out.extend_from_slice(value);
        }
        true
    }

    fn view(&self) -> View {
        View::sized(self.attrs.lock().len() as u64)
    }
}
