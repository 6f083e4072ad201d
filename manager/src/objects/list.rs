//! `list`: a sequence with Python's indexing, slicing and methods.

use std::cmp::Ordering;

use parking_lot::Mutex;

use agora_proto::params::array_items;
use agora_proto::{encode, value, CallError, Params};

use super::slice::{index, Slice};
use crate::lifecycle::{Caller, Outcome};

use super::{arity, expected, store, unknown_method, Args, Kind, SharedObject, Stored};

/// A shared list.
#[derive(Debug, Default)]
pub struct List {
    items: Mutex<Vec<Stored>>,
}

impl List {
    /// A list from `create`'s init args: nothing, or an array.
    pub fn new(args: &Args<'_>) -> Result<List, CallError> {
        args.expect(0, 1)?;
        let items = match args.opt(0) {
            None => Vec::new(),
            Some(raw) => elements(raw, 2)?,
        };
        Ok(List {
            items: Mutex::new(items),
        })
    }
}

/// The elements of an array param, copied for storage.
fn elements(raw: &[u8], param: usize) -> Result<Vec<Stored>, CallError> {
    let items = array_items(raw).ok_or_else(|| expected("an array", param, raw))?;
    Ok(items.into_iter().map(store).collect())
}

/// Params `first..first + 3` as a slice (start, stop, step; each an int or nil).
pub fn slice_param(p: &Params, first: usize, len: usize) -> Result<Slice, CallError> {
    Slice::new(
        p.opt_i64(first)?,
        p.opt_i64(first + 1)?,
        p.opt_i64(first + 2)?,
        len,
    )
}

/// Appends the array of the elements a slice selects.
pub fn write_slice(out: &mut Vec<u8>, items: &[Stored], s: &Slice) {
    encode::array_header(out, s.len);
    for i in s.indices() {
        out.extend_from_slice(&items[i]);
    }
}

/// Assigns `new` to the slice `s` of `items`. A simple slice may change the length; an extended
/// one must be replaced by as many elements as it selects.
pub fn assign_slice(items: &mut Vec<Stored>, s: &Slice, new: Vec<Stored>) -> Result<(), CallError> {
    if s.is_simple() {
        items.splice(s.range(), new);
        return Ok(());
    }
    if new.len() != s.len {
        return Err(CallError::value(format!(
            "attempt to assign sequence of size {} to extended slice of size {}",
            new.len(),
            s.len
        )));
    }
    for (i, v) in s.indices().zip(new) {
        items[i] = v;
    }
    Ok(())
}

fn delete_slice(items: &mut Vec<Stored>, s: &Slice) {
    if s.is_simple() {
        items.drain(s.range());
        return;
    }
    let mut doomed = vec![false; items.len()];
    for i in s.indices() {
        doomed[i] = true;
    }
    let mut k = 0;
    items.retain(|_| {
        k += 1;
        !doomed[k - 1]
    });
}

/// The first position in `items[range]` equal to `raw`.
fn position(
    items: &[Stored],
    raw: &[u8],
    range: std::ops::Range<usize>,
) -> Result<Option<usize>, CallError> {
    let probe = value::decode(raw)?;
    for i in range {
        if items[i][..] == *raw || value::equal(&value::decode(&items[i])?, &probe) {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// Sorts by the protocol's ordering; a `TypeError` leaves the list as it was.
fn sort(items: &mut Vec<Stored>, reverse: bool) -> Result<(), CallError> {
    let decoded = items
        .iter()
        .map(|raw| Ok((value::decode(raw)?, raw.clone())))
        .collect::<Result<Vec<_>, CallError>>()?;
    let mut cmp = |a: &(rmpv::Value, Stored), b: &(rmpv::Value, Stored)| {
        let order = value::compare(&a.0, &b.0)?;
        Ok(if reverse { order.reverse() } else { order })
    };
    let sorted = merge_sort(decoded, &mut cmp)?;
    *items = sorted.into_iter().map(|(_, raw)| raw).collect();
    Ok(())
}

/// A stable merge sort whose comparison may fail. The standard sorts need a total order and
/// may panic when the comparison is not one; mixed types are simply not comparable here.
fn merge_sort<T>(
    mut items: Vec<T>,
    cmp: &mut impl FnMut(&T, &T) -> Result<Ordering, CallError>,
) -> Result<Vec<T>, CallError> {
    if items.len() <= 1 {
        return Ok(items);
    }
    let right = items.split_off(items.len() / 2);
    let left = merge_sort(items, cmp)?;
    let right = merge_sort(right, cmp)?;
    let mut out = Vec::with_capacity(left.len() + right.len());
    let (mut left, mut right) = (left.into_iter().peekable(), right.into_iter().peekable());
    while let (Some(a), Some(b)) = (left.peek(), right.peek()) {
        // Take from the right only when strictly smaller: equal elements keep their order.
        let next = if cmp(b, a)? == Ordering::Less {
            right.next()
        } else {
            left.next()
        };
        out.extend(next);
    }
    out.extend(left);
    out.extend(right);
    Ok(out)
}

impl SharedObject for List {
    fn kind(&self) -> Kind {
        Kind::List
    }

    fn call(
        &self,
        method: &str,
        p: &Params,
        _caller: &Caller,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let a = |min, max| arity(p, Kind::List, method, min, max);
        let mut items = self.items.lock();
        let len = items.len();
        match method {
            "getitem" => {
                a(2, 2)?;
                let i = index(p.i64(1)?, len)
                    .ok_or_else(|| CallError::index("list index out of range"))?;
                out.extend_from_slice(&items[i]);
                return Ok(Outcome::Done);
            }
            "getslice" => {
                a(4, 4)?;
                write_slice(out, &items, &slice_param(p, 1, len)?);
                return Ok(Outcome::Done);
            }
            "len" => {
                a(1, 1)?;
                encode::uint(out, len as u64);
                return Ok(Outcome::Done);
            }
            "copy" => {
                a(1, 1)?;
                encode::array_header(out, len);
                items.iter().for_each(|v| out.extend_from_slice(v));
                return Ok(Outcome::Done);
            }
            "pop" => {
                a(1, 2)?;
                if len == 0 {
                    return Err(CallError::index("pop from empty list"));
                }
                let at = p.opt_i64(1)?.unwrap_or(-1);
                let i = index(at, len).ok_or_else(|| CallError::index("pop index out of range"))?;
                out.extend_from_slice(&items.remove(i));
                return Ok(Outcome::Done);
            }
            "index" => {
                a(2, 4)?;
                let s = Slice::new(p.opt_i64(2)?, p.opt_i64(3)?, None, len)?;
                let found = position(&items, p.raw(1), s.range())?
                    .ok_or_else(|| CallError::value("list.index(x): x not in list"))?;
                encode::uint(out, found as u64);
                return Ok(Outcome::Done);
            }
            "count" => {
                a(2, 2)?;
                let probe = value::decode(p.raw(1))?;
                let mut n = 0u64;
                for v in items.iter() {
                    if v[..] == *p.raw(1) || value::equal(&value::decode(v)?, &probe) {
                        n += 1;
                    }
                }
                encode::uint(out, n);
                return Ok(Outcome::Done);
            }
            _ => {}
        }
        // The rest mutate and return nil.
        match method {
            "setitem" => {
                a(3, 3)?;
                let i = index(p.i64(1)?, len)
                    .ok_or_else(|| CallError::index("list assignment index out of range"))?;
                items[i] = store(p.raw(2));
            }
            "delitem" => {
                a(2, 2)?;
                let i = index(p.i64(1)?, len)
                    .ok_or_else(|| CallError::index("list assignment index out of range"))?;
                items.remove(i);
            }
            "setslice" => {
                a(5, 5)?;
                let s = slice_param(p, 1, len)?;
                assign_slice(&mut items, &s, elements(p.raw(4), 4)?)?;
            }
            "delslice" => {
                a(4, 4)?;
                delete_slice(&mut items, &slice_param(p, 1, len)?);
            }
            "append" => {
                a(2, 2)?;
                items.push(store(p.raw(1)));
            }
            "extend" => {
                a(2, 2)?;
                let new = elements(p.raw(1), 1)?;
                items.extend(new);
            }
            "insert" => {
                a(3, 3)?;
                let at = p.i64(1)?;
                let n = len as i64;
                let i = if at < 0 { (at + n).max(0) } else { at.min(n) };
                items.insert(i as usize, store(p.raw(2)));
            }
            "remove" => {
                a(2, 2)?;
                let i = position(&items, p.raw(1), 0..len)?
                    .ok_or_else(|| CallError::value("list.remove(x): x not in list"))?;
                items.remove(i);
            }
            "reverse" => {
                a(1, 1)?;
                items.reverse();
            }
            "sort" => {
                a(1, 2)?;
                sort(&mut items, p.bool_or(1, false)?)?;
            }
            "clear" => {
                a(1, 1)?;
                items.clear();
            }
            _ => return Err(unknown_method(Kind::List, method)),
        }
        encode::nil(out);
        Ok(Outcome::Done)
    }
}
