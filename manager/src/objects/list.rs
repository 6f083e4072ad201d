//! `list`: a sequence with Python's indexing, slicing and methods.

use std::cmp::Ordering;

use parking_lot::Mutex;

use agora_proto::params::array_items;
use agora_proto::{encode, value, CallError, Params};

use super::slice::Slice;
use crate::lifecycle::{Caller, Outcome, View};

use super::{arity, expected, store, unknown_method, Args, Kind, SharedObject, Stored};

/// The state of a list: its elements, as sent.
type Items = Vec<Stored>;

/// A shared list.
#[derive(Debug, Default)]
pub struct List {
    items: Mutex<Items>,
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
        let (op, min, max) = route(method).ok_or_else(|| unknown_method(Kind::List, method))?;
        arity(p, Kind::List, method, min, max)?;
        op(&mut self.items.lock(), p, out)?;
        Ok(Outcome::Done)
    }

    fn snapshot(&self, out: &mut Vec<u8>) -> bool {
        let items = self.items.lock();
        encode::array_header(out, 1);
        encode::array_header(out, items.len());
        items.iter().for_each(|i| out.extend_from_slice(i));
        true
    }

    fn view(&self) -> View {
        View::sized(self.items.lock().len() as u64)
    }
}

/// One list method: runs on the locked items and appends its result to `out`.
type Op = fn(&mut Items, &Params, &mut Vec<u8>) -> Result<(), CallError>;

/// The operation of `method`, with its fewest and most params (the object id included).
fn route(method: &str) -> Option<(Op, usize, usize)> {
    Some(match method {
        "getitem" => (op::getitem, 2, 2),
        "setitem" => (op::setitem, 3, 3),
        "delitem" => (op::delitem, 2, 2),
        "getslice" => (op::getslice, 4, 4),
        "setslice" => (op::setslice, 5, 5),
        "delslice" => (op::delslice, 4, 4),
        "append" => (op::append, 2, 2),
        "extend" => (op::extend, 2, 2),
        "insert" => (op::insert, 3, 3),
        "pop" => (op::pop, 1, 2),
        "remove" => (op::remove, 2, 2),
        "index" => (op::index, 2, 4),
        "count" => (op::count, 2, 2),
        "len" => (op::len, 1, 1),
        "reverse" => (op::reverse, 1, 1),
        "sort" => (op::sort, 1, 2),
        "clear" => (op::clear, 1, 1),
        "copy" => (op::copy, 1, 1),
        _ => return None,
    })
}

/// The list's operations, one function per method, all of one signature ([`Op`]).
mod op {
    use agora_proto::{encode, value, CallError, Params};

    use super::super::slice::{self, Slice};
    use super::super::store;
    use super::{assign_slice, delete_slice, elements, position, slice_param, write_slice, Items};

    /// Param `param` as a position in a list of `len` items; `IndexError` with `message` when it
    /// is out of range.
    fn at(p: &Params, param: usize, len: usize, message: &str) -> Result<usize, CallError> {
        slice::index(p.i64(param)?, len).ok_or_else(|| CallError::index(message))
    }

    /// `getitem [id, index]`.
    pub fn getitem(items: &mut Items, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        let i = at(p, 1, items.len(), "list index out of range")?;
        out.extend_from_slice(&items[i]);
        Ok(())
    }

    /// `setitem [id, index, value]`.
    pub fn setitem(items: &mut Items, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        let i = at(p, 1, items.len(), "list assignment index out of range")?;
        items[i] = store(p.raw(2));
        encode::nil(out);
        Ok(())
    }

    /// `delitem [id, index]`.
    pub fn delitem(items: &mut Items, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        let i = at(p, 1, items.len(), "list assignment index out of range")?;
        items.remove(i);
        encode::nil(out);
        Ok(())
    }

    /// `getslice [id, start, stop, step]`.
    pub fn getslice(items: &mut Items, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        write_slice(out, items, &slice_param(p, 1, items.len())?);
        Ok(())
    }

    /// `setslice [id, start, stop, step, array]`.
    pub fn setslice(items: &mut Items, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        let s = slice_param(p, 1, items.len())?;
        assign_slice(items, &s, elements(p.raw(4), 4)?)?;
        encode::nil(out);
        Ok(())
    }

    /// `delslice [id, start, stop, step]`.
    pub fn delslice(items: &mut Items, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        delete_slice(items, &slice_param(p, 1, items.len())?);
        encode::nil(out);
        Ok(())
    }

    /// `append [id, value]`.
    pub fn append(items: &mut Items, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        items.push(store(p.raw(1)));
        encode::nil(out);
        Ok(())
    }

    /// `extend [id, array]`: all or nothing.
    pub fn extend(items: &mut Items, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        let new = elements(p.raw(1), 1)?;
        items.extend(new);
        encode::nil(out);
        Ok(())
    }

    /// `insert [id, index, value]`: the index clamped, as Python does.
    pub fn insert(items: &mut Items, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        let (at, n) = (p.i64(1)?, items.len() as i64);
        let i = if at < 0 { (at + n).max(0) } else { at.min(n) };
        items.insert(i as usize, store(p.raw(2)));
        encode::nil(out);
        Ok(())
    }

    /// `pop [id, index?]`: the removed value, the last by default.
    pub fn pop(items: &mut Items, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        if items.is_empty() {
            return Err(CallError::index("pop from empty list"));
        }
        let at = p.opt_i64(1)?.unwrap_or(-1);
        let i = slice::index(at, items.len())
            .ok_or_else(|| CallError::index("pop index out of range"))?;
        out.extend_from_slice(&items.remove(i));
        Ok(())
    }

    /// `remove [id, value]`: the first equal value, or `ValueError`.
    pub fn remove(items: &mut Items, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        let i = position(items, p.raw(1), 0..items.len())?
            .ok_or_else(|| CallError::value("list.remove(x): x not in list"))?;
        items.remove(i);
        encode::nil(out);
        Ok(())
    }

    /// `index [id, value, start?, stop?]`: the first position of an equal value, or `ValueError`.
    pub fn index(items: &mut Items, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        let s = Slice::new(p.opt_i64(2)?, p.opt_i64(3)?, None, items.len())?;
        let found = position(items, p.raw(1), s.range())?
            .ok_or_else(|| CallError::value("list.index(x): x not in list"))?;
        encode::uint(out, found as u64);
        Ok(())
    }

    /// `count [id, value]`: how many items equal the value.
    pub fn count(items: &mut Items, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        let probe = value::decode(p.raw(1))?;
        let mut n = 0u64;
        for v in items.iter() {
            if v[..] == *p.raw(1) || value::equal(&value::decode(v)?, &probe) {
                n += 1;
            }
        }
        encode::uint(out, n);
        Ok(())
    }

    /// `len [id]`.
    pub fn len(items: &mut Items, _: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        encode::uint(out, items.len() as u64);
        Ok(())
    }

    /// `reverse [id]`.
    pub fn reverse(items: &mut Items, _: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        items.reverse();
        encode::nil(out);
        Ok(())
    }

    /// `sort [id, reverse?]`: stable; a `TypeError` leaves the list as it was.
    pub fn sort(items: &mut Items, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        super::sort(items, p.bool_or(1, false)?)?;
        encode::nil(out);
        Ok(())
    }

    /// `clear [id]`.
    pub fn clear(items: &mut Items, _: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        items.clear();
        encode::nil(out);
        Ok(())
    }

    /// `copy [id]`: an array (a snapshot).
    pub fn copy(items: &mut Items, _: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
        encode::array_header(out, items.len());
        items.iter().for_each(|v| out.extend_from_slice(v));
        Ok(())
    }
}
