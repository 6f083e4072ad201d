//! `array`: a fixed-length array of one typecode, like Python's `multiprocessing.Array`.

use parking_lot::Mutex;

use agora_proto::params::{array_items, bytes_of};
use agora_proto::{encode, CallError, Params};

use super::list::{slice_param, write_slice};
use super::slice::index;
use super::typecode::Typecode;
use crate::lifecycle::{Caller, Outcome, View};

use super::{arity, expected, unknown_method, Args, Kind, SharedObject, Stored};

/// The longest array `create` makes from a size: each element is stored on its own, so a
/// size is memory the manager must find at once.
const MAX_LEN: usize = 1 << 24;

/// A shared fixed-length array.
#[derive(Debug)]
pub struct Array {
    typecode: Typecode,
    items: Mutex<Vec<Stored>>,
}

impl Array {
    /// An array from `create`'s init args: `[typecode, size or initializer]`.
    pub fn new(args: &Args<'_>) -> Result<Array, CallError> {
        args.expect(2, 2)?;
        let typecode = Typecode::parse(args.raw(0))?;
        let init = args.raw(1);
        if let Some(n) = agora_proto::params::int_i64(init).filter(|n| *n < 0) {
            return Err(CallError::value(format!(
                "array size must be >= 0, got {n}"
            )));
        }
        let items = if let Some(n) = agora_proto::params::int_u64(init) {
            let n = usize::try_from(n)
                .ok()
                .filter(|n| *n <= MAX_LEN)
                .ok_or_else(|| {
                    CallError::value(format!("array size {n} is too large (at most {MAX_LEN})"))
                })?;
            vec![typecode.zero(); n]
        } else {
            initial_items(typecode, init)?
        };
        Ok(Array {
            typecode,
            items: Mutex::new(items),
        })
    }

    /// Normalizes every element of an array param to the typecode.
    fn elements(&self, raw: &[u8], param: usize) -> Result<Vec<Stored>, CallError> {
        let items = array_items(raw).ok_or_else(|| expected("an array", param, raw))?;
        items
            .into_iter()
            .map(|v| self.typecode.normalize(v))
            .collect()
    }
}

/// The contents of an initializer: an array, or for typecode `c` also a bin of bytes.
fn initial_items(typecode: Typecode, raw: &[u8]) -> Result<Vec<Stored>, CallError> {
    if typecode.code() == 'c' && matches!(raw.first(), Some(0xc4..=0xc6)) {
        let bytes = bytes_of(raw).unwrap_or_default();
        return Ok(bytes
            .iter()
            .map(|b| {
                let mut out = Vec::with_capacity(3);
                encode::bin(&mut out, &[*b]);
                out.into()
            })
            .collect());
    }
    let items = array_items(raw).ok_or_else(|| expected("a size (int) or an array", 3, raw))?;
    items.into_iter().map(|v| typecode.normalize(v)).collect()
}

impl SharedObject for Array {
    fn kind(&self) -> Kind {
        Kind::Array
    }

    fn call(
        &self,
        method: &str,
        p: &Params,
        _caller: &Caller,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let a = |min, max| arity(p, Kind::Array, method, min, max);
        let mut items = self.items.lock();
        let len = items.len();
        match method {
            "getitem" => {
                a(2, 2)?;
                let i = index(p.i64(1)?, len)
                    .ok_or_else(|| CallError::index("array index out of range"))?;
                out.extend_from_slice(&items[i]);
            }
            "setitem" => {
                a(3, 3)?;
                let i = index(p.i64(1)?, len)
                    .ok_or_else(|| CallError::index("array assignment index out of range"))?;
                items[i] = self.typecode.normalize(p.raw(2))?;
                encode::nil(out);
            }
            "getslice" => {
                a(4, 4)?;
                write_slice(out, &items, &slice_param(p, 1, len)?);
            }
            "setslice" => {
                a(5, 5)?;
                let s = slice_param(p, 1, len)?;
                let new = self.elements(p.raw(4), 4)?;
                if new.len() != s.len {
                    return Err(CallError::value(format!(
                        "an array's length is fixed: cannot assign {} elements to a slice of {}",
                        new.len(),
                        s.len
                    )));
                }
                for (i, v) in s.indices().zip(new) {
                    items[i] = v;
                }
                encode::nil(out);
            }
            "len" => {
                a(1, 1)?;
                encode::uint(out, len as u64);
            }
            "tolist" => {
                a(1, 1)?;
                encode::array_header(out, len);
                items.iter().for_each(|v| out.extend_from_slice(v));
            }
            "typecode" => {
                a(1, 1)?;
                encode::str(out, &self.typecode.code().to_string());
            }
            _ => return Err(unknown_method(Kind::Array, method)),
        }
        Ok(Outcome::Done)
    }

    fn snapshot(&self, out: &mut Vec<u8>) -> bool {
        let items = self.items.lock();
        encode::array_header(out, 2);
        self.typecode.encode(out);
        encode::array_header(out, items.len());
        items.iter().for_each(|i| out.extend_from_slice(i));
        true
    }

    fn view(&self) -> View {
        View::sized(self.items.lock().len() as u64)
    }
}
