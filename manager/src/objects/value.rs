//! `value`: one shared value with atomic read-modify-write operations (`fetch_add`,
//! `compare_and_swap`) that Python's `Value` lacks, so a counter needs no lock.

use parking_lot::Mutex;

use agora_proto::{encode, params, value, CallError, Params};

use super::typecode::{number, Typecode};
use crate::lifecycle::{Caller, Outcome, View};

use super::{arity, store, unknown_method, Args, Kind, SharedObject, Stored};

/// A shared value, optionally constrained to a typecode.
#[derive(Debug)]
pub struct Value {
    typecode: Option<Typecode>,
    current: Mutex<Stored>,
}

impl Value {
    /// A value from `create`'s init args: `[typecode or nil, initial]`.
    pub fn new(args: &Args<'_>) -> Result<Value, CallError> {
        args.expect(2, 2)?;
        let typecode = args.opt(0).map(Typecode::parse).transpose()?;
        let value = Value {
            typecode,
            current: Mutex::new(Stored::default()),
        };
        *value.current.lock() = value.admit(args.raw(1))?;
        Ok(value)
    }

    /// Checks a new value against the typecode and returns its stored form.
    fn admit(&self, raw: &[u8]) -> Result<Stored, CallError> {
        match &self.typecode {
            Some(tc) => tc.normalize(raw),
            None => Ok(store(raw)),
        }
    }

    /// `current + delta`, in the stored form.
    fn sum(&self, current: &[u8], delta: &[u8]) -> Result<Stored, CallError> {
        let int = |raw: &[u8]| {
            params::int_i64(raw)
                .map(i128::from)
                .or_else(|| params::int_u64(raw).map(i128::from))
        };
        let not_number = |raw: &[u8], what: &str| {
            CallError::type_error(format!(
                "fetch_add needs numbers, but the {what} is a {}",
                params::type_name(raw)
            ))
        };
        let mut out = Vec::with_capacity(9);
        if let (Some(c), Some(d)) = (int(current), int(delta)) {
            let total = c + d;
            if let Ok(n) = i64::try_from(total) {
                encode::int(&mut out, n);
            } else if let Ok(n) = u64::try_from(total) {
                encode::uint(&mut out, n);
            } else {
                return Err(CallError::overflow(format!(
                    "{c} + {d} does not fit a 64-bit integer"
                )));
            }
            return self.admit(&out);
        }
        let c = number(current).ok_or_else(|| not_number(current, "value"))?;
        let d = number(delta).ok_or_else(|| not_number(delta, "delta"))?;
        if let Some(tc) = self.typecode.filter(|tc| tc.is_int()) {
            return Err(CallError::type_error(format!(
                "typecode {tc} holds ints: cannot add a float"
            )));
        }
        encode::f64(&mut out, c + d);
        self.admit(&out)
    }
}

impl SharedObject for Value {
    fn kind(&self) -> Kind {
        Kind::Value
    }

    fn call(
        &self,
        method: &str,
        p: &Params,
        _caller: &Caller,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let a = |min, max| arity(p, Kind::Value, method, min, max);
        let mut current = self.current.lock();
        match method {
            "get" => {
                a(1, 1)?;
                out.extend_from_slice(&current);
            }
            "set" => {
                a(2, 2)?;
                *current = self.admit(p.raw(1))?;
                encode::nil(out);
            }
            "fetch_add" => {
                a(2, 2)?;
                let next = self.sum(&current, p.raw(1))?;
                out.extend_from_slice(&std::mem::replace(&mut *current, next));
            }
            "compare_and_swap" => {
                a(3, 3)?;
                let swapped = value::equal_raw(&current, p.raw(1))?;
                out.push(0x92);
                encode::bool(out, swapped);
                out.extend_from_slice(&current);
                if swapped {
                    *current = self.admit(p.raw(2))?;
                }
            }
            "typecode" => {
                a(1, 1)?;
                match &self.typecode {
                    Some(tc) => encode::str(out, &tc.code().to_string()),
                    None => encode::nil(out),
                }
            }
            _ => return Err(unknown_method(Kind::Value, method)),
        }
        Ok(Outcome::Done)
    }

    /// A value has no size.
    fn snapshot(&self, out: &mut Vec<u8>) -> bool {
        encode::array_header(out, 2);
        match &self.typecode {
            Some(tc) => tc.encode(out),
            None => encode::nil(out),
        }
        out.extend_from_slice(&self.current.lock());
        true
    }

    fn view(&self) -> View {
        View::default()
    }
}
