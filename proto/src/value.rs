//! Value semantics shared by the manager and every client: equality, dict-key identity and
//! ordering, defined on values rather than on their encodings.
//!
//! MessagePack lets one integer be written several ways (5 as a fixint or as an int64), and
//! different languages pick different ones. Dict keys, `list.index` and
//! `value.compare_and_swap` must not care, so they work on the rules below, which follow Python
//! except where noted in `PROTOCOL.md` (bool is not an int).

use std::borrow::Cow;
use std::cmp::Ordering;

use rmpv::Value;

use crate::error::CallError;

/// Decodes one value. The bytes are expected to be one complete value (the framing layer has
/// checked them), so an error here means a bug or a truncated stored value.
pub fn decode(raw: &[u8]) -> Result<Value, CallError> {
    let mut rest = raw;
    rmpv::decode::read_value(&mut rest)
        .map_err(|e| CallError::new(crate::ErrorName::ProtocolError, format!("bad value: {e}")))
}

/// The name of a value's type, for error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "bool",
        Value::Integer(_) => "int",
        Value::F32(_) | Value::F64(_) => "float",
        Value::String(_) => "str",
        Value::Binary(_) => "bin",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        Value::Ext(..) => "ext",
    }
}

/// The number a value holds: an exact integer or a float.
#[derive(Clone, Copy, Debug)]
enum Num {
    Int(i128),
    Float(f64),
}

fn num(v: &Value) -> Option<Num> {
    match v {
        Value::Integer(i) => i
            .as_i64()
            .map(i128::from)
            .or_else(|| i.as_u64().map(i128::from))
            .map(Num::Int),
        Value::F32(x) => Some(Num::Float(f64::from(*x))),
        Value::F64(x) => Some(Num::Float(*x)),
        _ => None,
    }
}

/// The integer a float equals exactly, if any (`-0.0` equals 0).
fn float_as_int(x: f64) -> Option<i128> {
    // 2^64 and -2^63 bound what MessagePack integers can hold.
    (x.is_finite()
        && x.fract() == 0.0
        && (-9.223_372_036_854_776e18..1.844_674_407_370_955_2e19).contains(&x))
    .then_some(x as i128)
}

fn num_eq(a: Num, b: Num) -> bool {
    match (a, b) {
        (Num::Int(a), Num::Int(b)) => a == b,
        (Num::Float(a), Num::Float(b)) => a == b,
        (Num::Int(i), Num::Float(x)) | (Num::Float(x), Num::Int(i)) => float_as_int(x) == Some(i),
    }
}

fn num_cmp(a: Num, b: Num) -> Ordering {
    match (a, b) {
        (Num::Int(a), Num::Int(b)) => a.cmp(&b),
        (Num::Float(x), Num::Float(y)) => float_cmp(x, y),
        (Num::Int(i), Num::Float(x)) => int_float_cmp(i, x),
        (Num::Float(x), Num::Int(i)) => int_float_cmp(i, x).reverse(),
    }
}

/// NaN sorts after every number and equal to itself; the rest numerically.
fn float_cmp(x: f64, y: f64) -> Ordering {
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    }
}

/// Compares an integer with a float exactly: `i as f64` alone would round 2**53 + 1 down.
fn int_float_cmp(i: i128, x: f64) -> Ordering {
    if x.is_nan() {
        return Ordering::Less;
    }
    match float_cmp(i as f64, x) {
        // Equal after rounding: the float is integral and within range, so compare exactly.
        Ordering::Equal => match float_as_int(x) {
            Some(j) => i.cmp(&j),
            None => Ordering::Equal,
        },
        other => other,
    }
}

/// Value equality, as `PROTOCOL.md` defines it.
pub fn equal(a: &Value, b: &Value) -> bool {
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return num_eq(x, y);
    }
    match (a, b) {
        (Value::Nil, Value::Nil) => true,
        (Value::Boolean(x), Value::Boolean(y)) => x == y,
        (Value::String(x), Value::String(y)) => x.as_bytes() == y.as_bytes(),
        (Value::Binary(x), Value::Binary(y)) => x == y,
        (Value::Ext(t, x), Value::Ext(u, y)) => t == u && x == y,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equal(p, q))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.iter().any(|(k2, v2)| equal(k, k2) && equal(v, v2)))
        }
        _ => false,
    }
}

/// Equality of two encoded values: identical bytes are equal without decoding.
pub fn equal_raw(a: &[u8], b: &[u8]) -> Result<bool, CallError> {
    if a == b {
        return Ok(true);
    }
    Ok(equal(&decode(a)?, &decode(b)?))
}

/// The order `list.sort` uses. Incomparable types are a `TypeError`, as in Python.
pub fn compare(a: &Value, b: &Value) -> Result<Ordering, CallError> {
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return Ok(num_cmp(x, y));
    }
    match (a, b) {
        (Value::Boolean(x), Value::Boolean(y)) => Ok(x.cmp(y)),
        (Value::String(x), Value::String(y)) => Ok(x.as_bytes().cmp(y.as_bytes())),
        (Value::Binary(x), Value::Binary(y)) => Ok(x.cmp(y)),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                match compare(p, q)? {
                    Ordering::Equal => continue,
                    other => return Ok(other),
                }
            }
            Ok(x.len().cmp(&y.len()))
        }
        _ => Err(CallError::type_error(format!(
            "'<' not supported between instances of '{}' and '{}'",
            type_name(a),
            type_name(b)
        ))),
    }
}

/// Writes the canonical encoding of a key: equal keys get identical bytes, so hashing the
/// canonical encoding hashes by value. Shortest headers; integral floats as integers; strs
/// keep their bytes as they are, even when they are not valid UTF-8 (so that they never turn
/// into bins).
fn write_canonical(out: &mut Vec<u8>, v: &Value) -> Result<(), CallError> {
    use crate::encode;
    match v {
        Value::F32(x) => write_canonical_float(out, f64::from(*x)),
        Value::F64(x) => write_canonical_float(out, *x),
        Value::String(s) => {
            rmp::encode::write_str_len(out, s.as_bytes().len() as u32).ok();
            out.extend_from_slice(s.as_bytes());
        }
        Value::Array(items) => {
            encode::array_header(out, items.len());
            for item in items {
                write_canonical(out, item)?;
            }
        }
        Value::Map(_) => return Err(CallError::type_error("unhashable type: 'map'")),
        other => encode::value(out, other),
    }
    Ok(())
}

fn write_canonical_float(out: &mut Vec<u8>, x: f64) {
    use crate::encode;
    match float_as_int(x) {
        Some(i) if i < 0 => encode::int(out, i as i64),
        Some(i) => encode::uint(out, i as u64),
        None if x.is_nan() => encode::f64(out, f64::NAN),
        None => encode::f64(out, x),
    }
}

/// The canonical encoding of a dict key: two keys are the same key exactly when their canonical
/// encodings are equal. Fails with `TypeError` for maps, which are unhashable.
///
/// The common keys (short strings, small integers, nil, bools) are borrowed as they are: their
/// encoding is already canonical, so looking them up allocates nothing.
pub fn key(raw: &[u8]) -> Result<Cow<'_, [u8]>, CallError> {
    match raw.first() {
        // Single-byte-header forms that are already the shortest encoding of their value.
        Some(0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 | 0xa0..=0xbf) => {
            Ok(Cow::Borrowed(raw))
        }
        _ => {
            let mut out = Vec::with_capacity(raw.len());
            write_canonical(&mut out, &decode(raw)?)?;
            Ok(Cow::Owned(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_u64_as_int64(n: i64) -> Vec<u8> {
        let mut out = vec![0xd3];
        out.extend_from_slice(&n.to_be_bytes());
        out
    }

    #[test]
    fn integer_keys_ignore_their_encoding() {
        assert_eq!(key(&[5]).unwrap(), key(&raw_u64_as_int64(5)).unwrap());
        assert_eq!(key(&[0xcc, 5]).unwrap(), key(&[5]).unwrap());
        let one_f64 = crate::encode::to_vec(&Value::F64(1.0));
        let one_f32 = crate::encode::to_vec(&Value::F32(1.0));
        assert_eq!(key(&one_f64).unwrap(), key(&[1]).unwrap());
        assert_eq!(key(&one_f32).unwrap(), key(&[1]).unwrap());
        let half_f32 = crate::encode::to_vec(&Value::F32(0.5));
        let half_f64 = crate::encode::to_vec(&Value::F64(0.5));
        assert_eq!(key(&half_f32).unwrap(), key(&half_f64).unwrap());
        assert_ne!(key(&[0xc3]).unwrap(), key(&[1]).unwrap());
        assert_ne!(key(&[0xa1, b'a']).unwrap(), key(&[0xc4, 1, b'a']).unwrap());
        // str8 of a short string is the same key as the fixstr.
        assert_eq!(key(&[0xd9, 1, b'a']).unwrap(), key(&[0xa1, b'a']).unwrap());
        assert_eq!(key(&[0x80]).unwrap_err().name, crate::ErrorName::TypeError);
    }

    #[test]
    fn equality_and_order() {
        let m1 = Value::Map(vec![("a".into(), 1.into()), ("b".into(), 2.into())]);
        let m2 = Value::Map(vec![("b".into(), Value::F64(2.0)), ("a".into(), 1.into())]);
        assert!(equal(&m1, &m2));
        assert!(!equal(&Value::from(1), &Value::from(true)));
        assert_eq!(
            compare(&1.into(), &Value::F64(1.5)).unwrap(),
            Ordering::Less
        );
        assert_eq!(
            compare(&"b".into(), &"a".into()).unwrap(),
            Ordering::Greater
        );
        assert_eq!(
            compare(&Value::F64(f64::NAN), &Value::from(u64::MAX)).unwrap(),
            Ordering::Greater
        );
        assert!(compare(&"a".into(), &1.into()).is_err());
        assert_eq!(
            compare(
                &Value::Array(vec![1.into()]),
                &Value::Array(vec![1.into(), 0.into()])
            )
            .unwrap(),
            Ordering::Less
        );
    }
}
