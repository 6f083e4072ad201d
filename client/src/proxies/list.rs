//! [`List`]: a shared list.

use std::borrow::Borrow;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::Client;
use crate::command::Target;
use crate::command::{decode, Args, Cmd};
use crate::error::Result;

use super::slicing::{self, Slice};

/// A shared list of `T`.
///
/// Indexes are `i64` and, as in Python, negative ones count from the end (`-1` is the last
/// element). Slicing methods take a [`Slice`], made from a Rust range (`1..3` is `l[1:3]`,
/// `..` is `l[:]`) with an optional step (`Slice::from(..).step_by(-1)` is `l[::-1]`). Methods
/// that take an element accept any borrowed form of `T` (`&str` for `String`).
///
/// Methods map one to one to the wire methods (`get` → `list.getitem` with `IndexError` as
/// `None`, `del` → `list.delitem`, `get_slice` → `list.getslice`, ...). Each has a `*_cmd`
/// twin for pipelines.
///
/// ```no_run
/// # let client = agora_client::Client::from_env()?;
/// use agora_client::proxies::Slice;
/// let l = client.list::<i64>()?;
/// l.extend([3, 1, 2])?;
/// l.sort()?;
/// assert_eq!(l.copy()?, vec![1, 2, 3]);
/// assert_eq!(l.get(-1)?, Some(3));
/// assert_eq!(l.get_slice(1..)?, vec![2, 3]);
/// assert_eq!(l.get_slice(Slice::from(..).step_by(-1))?, vec![3, 2, 1]);
/// # Ok::<(), agora_client::Error>(())
/// ```
pub struct List<T> {
    client: Client,
    id: Target,
    marker: PhantomData<fn() -> T>,
}

super::proxy_common!(List[T], "list");

impl Client {
    /// Creates a new, empty shared list.
    pub fn list<T>(&self) -> Result<List<T>> {
        let mut args = Args::default();
        args.str("list").opt_str(None);
        Ok(List::from_id(self, self.create_with(args)?))
    }

    /// Creates a new shared list holding `items`.
    pub fn list_from<T, I>(&self, items: I) -> Result<List<T>>
    where
        T: Serialize,
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        let mut args = Args::default();
        args.str("list")
            .opt_str(None)
            .seq(items.into_iter().map(By::<T, _>::new))?;
        Ok(List::from_id(self, self.create_with(args)?))
    }

    /// The list called `name`, created empty if there is none (get-or-create). Fails with
    /// `TypeError` if the name belongs to another kind of object.
    pub fn list_named<T>(&self, name: &str) -> Result<List<T>> {
        let mut args = Args::default();
        args.str("list").str(name);
        Ok(List::from_id(self, self.create_with(args)?))
    }
}

/// Serializes an item through its `Borrow<T>`, so that `&i64`, `i64`, `&str` and `String`
/// items can all feed a `List<T>`.
pub(crate) struct By<T, U>(U, PhantomData<fn() -> T>);

impl<T, U> By<T, U> {
    pub(crate) fn new(item: U) -> By<T, U> {
        By(item, PhantomData)
    }
}

impl<T: Serialize, U: Borrow<T>> Serialize for By<T, U> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.borrow().serialize(s)
    }
}

impl<T> List<T>
where
    T: Serialize + DeserializeOwned,
{
    /// The element at `index`, `None` when out of range.
    pub fn get(&self, index: i64) -> Result<Option<T>> {
        self.client.run(self.get_cmd(index))
    }

    /// [`List::get`] as a command (`list.getitem`).
    pub fn get_cmd(&self, index: i64) -> Cmd<Option<T>> {
        Cmd::object(self.id, "list.getitem", decode::unless_index_error, |a| {
            a.int(index);
            Ok(())
        })
    }

    /// The element at `index`; fails with `IndexError` when out of range, as `l[i]` in Python.
    pub fn getitem(&self, index: i64) -> Result<T> {
        self.client.run(self.getitem_cmd(index))
    }

    /// [`List::getitem`] as a command (`list.getitem`).
    pub fn getitem_cmd(&self, index: i64) -> Cmd<T> {
        Cmd::object(self.id, "list.getitem", decode::value, |a| {
            a.int(index);
            Ok(())
        })
    }

    /// Replaces the element at `index`; fails with `IndexError` when out of range.
    pub fn set<U>(&self, index: i64, value: &U) -> Result<()>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.client.run(self.set_cmd(index, value))
    }

    /// [`List::set`] as a command (`list.setitem`).
    pub fn set_cmd<U>(&self, index: i64, value: &U) -> Cmd<()>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        Cmd::object(self.id, "list.setitem", decode::unit, |a| {
            a.int(index).value(value).map(drop)
        })
    }

    /// Removes the element at `index`, as `del l[index]` in Python; returns whether there was
    /// one (Python's `IndexError` is `false`). [`pop_at`](List::pop_at) removes it and returns
    /// it.
    pub fn del(&self, index: i64) -> Result<bool> {
        self.client.run(self.del_cmd(index))
    }

    /// [`List::del`] as a command (`list.delitem`).
    pub fn del_cmd(&self, index: i64) -> Cmd<bool> {
        Cmd::object(self.id, "list.delitem", decode::found_index, |a| {
            a.int(index);
            Ok(())
        })
    }

    /// The elements `slice` selects, as `l[start:stop:step]` in Python: `l.get_slice(1..3)`,
    /// `l.get_slice(Slice::from(..).step_by(-1))`. Fails with `ValueError` for a step of 0.
    pub fn get_slice(&self, slice: impl Into<Slice>) -> Result<Vec<T>> {
        self.client.run(self.get_slice_cmd(slice))
    }

    /// [`List::get_slice`] as a command (`list.getslice`).
    pub fn get_slice_cmd(&self, slice: impl Into<Slice>) -> Cmd<Vec<T>> {
        slicing::get(self.id, "list.getslice", slice.into())
    }

    /// Replaces the elements `slice` selects with `items`, as `l[start:stop:step] = items`.
    /// Without a step (or with step 1) the list grows or shrinks to fit; with another step
    /// the slice and `items` must have the same length (`ValueError` otherwise), as in Python.
    pub fn set_slice<I>(&self, slice: impl Into<Slice>, items: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        self.client.run(self.set_slice_cmd(slice, items))
    }

    /// [`List::set_slice`] as a command (`list.setslice`).
    pub fn set_slice_cmd<I>(&self, slice: impl Into<Slice>, items: I) -> Cmd<()>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        slicing::set::<T, I>(self.id, "list.setslice", slice.into(), items)
    }

    /// Removes the elements `slice` selects, as `del l[start:stop:step]`.
    pub fn del_slice(&self, slice: impl Into<Slice>) -> Result<()> {
        self.client.run(self.del_slice_cmd(slice))
    }

    /// [`List::del_slice`] as a command (`list.delslice`).
    pub fn del_slice_cmd(&self, slice: impl Into<Slice>) -> Cmd<()> {
        slicing::del(self.id, "list.delslice", slice.into())
    }

    /// Appends `value` at the end.
    pub fn append<U>(&self, value: &U) -> Result<()>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.client.run(self.append_cmd(value))
    }

    /// [`List::append`] as a command (`list.append`).
    pub fn append_cmd<U>(&self, value: &U) -> Cmd<()>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        Cmd::object(self.id, "list.append", decode::unit, |a| {
            a.value(value).map(drop)
        })
    }

    /// Appends every item, in one call.
    pub fn extend<I>(&self, items: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        self.client.run(self.extend_cmd(items))
    }

    /// [`List::extend`] as a command (`list.extend`).
    pub fn extend_cmd<I>(&self, items: I) -> Cmd<()>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        Cmd::object(self.id, "list.extend", decode::unit, |a| {
            a.seq(items.into_iter().map(By::<T, _>::new)).map(drop)
        })
    }

    /// Inserts `value` before `index` (clamped to the list, as in Python).
    pub fn insert<U>(&self, index: i64, value: &U) -> Result<()>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.client.run(self.insert_cmd(index, value))
    }

    /// [`List::insert`] as a command (`list.insert`).
    pub fn insert_cmd<U>(&self, index: i64, value: &U) -> Cmd<()>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        Cmd::object(self.id, "list.insert", decode::unit, |a| {
            a.int(index).value(value).map(drop)
        })
    }

    /// Removes and returns the last element, `None` when the list is empty.
    pub fn pop(&self) -> Result<Option<T>> {
        self.client.run(self.pop_cmd())
    }

    /// [`List::pop`] as a command (`list.pop`).
    pub fn pop_cmd(&self) -> Cmd<Option<T>> {
        Cmd::object(self.id, "list.pop", decode::unless_index_error, |_| Ok(()))
    }

    /// Removes and returns the element at `index`, `None` when out of range.
    pub fn pop_at(&self, index: i64) -> Result<Option<T>> {
        self.client.run(self.pop_at_cmd(index))
    }

    /// [`List::pop_at`] as a command (`list.pop` with an index).
    pub fn pop_at_cmd(&self, index: i64) -> Cmd<Option<T>> {
        Cmd::object(self.id, "list.pop", decode::unless_index_error, |a| {
            a.int(index);
            Ok(())
        })
    }

    /// Removes the first element equal to `value`; returns whether there was one.
    pub fn remove<U>(&self, value: &U) -> Result<bool>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.client.run(self.remove_cmd(value))
    }

    /// [`List::remove`] as a command (`list.remove`).
    pub fn remove_cmd<U>(&self, value: &U) -> Cmd<bool>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        Cmd::object(self.id, "list.remove", decode::found_value, |a| {
            a.value(value).map(drop)
        })
    }

    /// The index of the first element equal to `value`, `None` when there is none.
    pub fn index<U>(&self, value: &U) -> Result<Option<usize>>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.client.run(self.index_cmd(value))
    }

    /// [`List::index`] as a command (`list.index`).
    pub fn index_cmd<U>(&self, value: &U) -> Cmd<Option<usize>>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.index_in_cmd(value, ..)
    }

    /// The index of the first element equal to `value` among the indexes `range` covers, as
    /// Python's `l.index(value, start, stop)`: `l.index_in(&x, 2..)`. `None` when there is
    /// none. `range` is a [`Slice`] without a step; one with a step other than 1 fails with
    /// [`Error::Usage`](crate::Error::Usage) before anything is sent.
    pub fn index_in<U>(&self, value: &U, range: impl Into<Slice>) -> Result<Option<usize>>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.client.run(self.index_in_cmd(value, range))
    }

    /// [`List::index_in`] as a command (`list.index` with bounds).
    pub fn index_in_cmd<U>(&self, value: &U, range: impl Into<Slice>) -> Cmd<Option<usize>>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        let range = range.into();
        Cmd::object(self.id, "list.index", decode::unless_value_error, |a| {
            let (start, stop) = range.bounds("List::index_in")?;
            a.value(value)?;
            if start.is_some() || stop.is_some() {
                a.opt_int(start).opt_int(stop);
            }
            Ok(())
        })
    }

    /// How many elements equal `value`.
    pub fn count<U>(&self, value: &U) -> Result<usize>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.client.run(self.count_cmd(value))
    }

    /// [`List::count`] as a command (`list.count`).
    pub fn count_cmd<U>(&self, value: &U) -> Cmd<usize>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        Cmd::object(self.id, "list.count", decode::value, |a| {
            a.value(value).map(drop)
        })
    }

    /// The number of elements.
    pub fn len(&self) -> Result<usize> {
        self.client.run(self.len_cmd())
    }

    /// [`List::len`] as a command (`list.len`).
    pub fn len_cmd(&self) -> Cmd<usize> {
        Cmd::object(self.id, "list.len", decode::value, |_| Ok(()))
    }

    /// True when the list has no elements.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reverses the list in place.
    pub fn reverse(&self) -> Result<()> {
        self.client.run(self.reverse_cmd())
    }

    /// [`List::reverse`] as a command (`list.reverse`).
    pub fn reverse_cmd(&self) -> Cmd<()> {
        Cmd::object(self.id, "list.reverse", decode::unit, |_| Ok(()))
    }

    /// Sorts the list in place, ascending and stable, with the manager's value order
    /// (`TypeError` for elements that cannot be compared, such as a str and an int).
    pub fn sort(&self) -> Result<()> {
        self.client.run(self.sort_cmd())
    }

    /// [`List::sort`] as a command (`list.sort`).
    pub fn sort_cmd(&self) -> Cmd<()> {
        Cmd::object(self.id, "list.sort", decode::unit, |_| Ok(()))
    }

    /// Sorts the list in place, descending and stable.
    pub fn sort_desc(&self) -> Result<()> {
        self.client.run(self.sort_desc_cmd())
    }

    /// [`List::sort_desc`] as a command (`list.sort` with reverse).
    pub fn sort_desc_cmd(&self) -> Cmd<()> {
        Cmd::object(self.id, "list.sort", decode::unit, |a| {
            a.bool(true);
            Ok(())
        })
    }

    /// Removes every element.
    pub fn clear(&self) -> Result<()> {
        self.client.run(self.clear_cmd())
    }

    /// [`List::clear`] as a command (`list.clear`).
    pub fn clear_cmd(&self) -> Cmd<()> {
        Cmd::object(self.id, "list.clear", decode::unit, |_| Ok(()))
    }

    /// The whole list at one instant.
    pub fn copy(&self) -> Result<Vec<T>> {
        self.client.run(self.copy_cmd())
    }

    /// [`List::copy`] as a command (`list.copy`).
    pub fn copy_cmd(&self) -> Cmd<Vec<T>> {
        Cmd::object(self.id, "list.copy", decode::seq, |_| Ok(()))
    }

    /// The items, each undecoded (one MessagePack value): for a list whose items are not all
    /// `T`. Decode each with [`Client::decode`].
    pub fn copy_raw(&self) -> Result<Vec<Bytes>> {
        self.client.run(self.copy_raw_cmd())
    }

    /// [`List::copy_raw`] as a command (`list.copy`).
    pub fn copy_raw_cmd(&self) -> Cmd<Vec<Bytes>> {
        Cmd::object(self.id, "list.copy", decode::raw_seq, |_| Ok(()))
    }
}
