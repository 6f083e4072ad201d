//! [`Array`]: a shared fixed-length array of one element type.

use std::borrow::Borrow;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::Client;
use crate::command::Target;
use crate::command::{decode, Args, Cmd};
use crate::error::Result;

use super::slicing::{self, Slice};

/// A shared array of `T` with a fixed length and a typecode, like Python's `array.array`:
/// `'b'`/`'B'` int8/uint8 ... `'q'`/`'Q'` int64/uint64, `'f'`/`'d'` floats, `'u'` one-char
/// strings, `'c'` one-byte bins (use `serde_bytes::ByteBuf` elements). Every element written is
/// checked against the typecode (`TypeError`, `OverflowError`), and the length never changes.
///
/// ```no_run
/// # let client = agora_client::Client::from_env()?;
/// let a = client.array_zeroed::<f64>('d', 4)?;
/// a.set(-1, &2.5)?;
/// assert_eq!(a.to_vec()?, vec![0.0, 0.0, 0.0, 2.5]);
/// a.set_slice(..2, [1.0, 1.5])?; // a[:2] = ...
/// assert_eq!(a.get_slice(-3..)?, vec![1.5, 0.0, 2.5]);
/// # Ok::<(), agora_client::Error>(())
/// ```
pub struct Array<T> {
    client: Client,
    id: Target,
    marker: PhantomData<fn() -> T>,
}

super::proxy_common!(Array[T], "array");

impl Client {
    /// Creates a shared array of `typecode` holding `values`.
    pub fn array<T: Serialize>(&self, typecode: char, values: &[T]) -> Result<Array<T>> {
        self.create_array(None, typecode, |a| a.seq(values).map(drop))
    }

    /// The array called `name`, created holding `values` if there is none (get-or-create).
    pub fn array_named<T: Serialize>(
        &self,
        name: &str,
        typecode: char,
        values: &[T],
    ) -> Result<Array<T>> {
        self.create_array(Some(name), typecode, |a| a.seq(values).map(drop))
    }

    /// Creates a shared array of `typecode` holding `len` zeros.
    pub fn array_zeroed<T>(&self, typecode: char, len: usize) -> Result<Array<T>> {
        self.create_array(None, typecode, |a| {
            a.uint(len as u64);
            Ok(())
        })
    }

    fn create_array<T>(
        &self,
        name: Option<&str>,
        typecode: char,
        init: impl FnOnce(&mut Args) -> Result<()>,
    ) -> Result<Array<T>> {
        let mut args = Args::default();
        args.str("array")
            .opt_str(name)
            .str(typecode.encode_utf8(&mut [0; 4]));
        init(&mut args)?;
        Ok(Array::from_id(self, self.create_with(args)?))
    }
}

impl<T> Array<T>
where
    T: Serialize + DeserializeOwned,
{
    /// The element at `index` (negative from the end), `None` when out of range.
    pub fn get(&self, index: i64) -> Result<Option<T>> {
        self.client.run(self.get_cmd(index))
    }

    /// [`Array::get`] as a command (`array.getitem`).
    pub fn get_cmd(&self, index: i64) -> Cmd<Option<T>> {
        Cmd::object(self.id, "array.getitem", decode::unless_index_error, |a| {
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

    /// [`Array::set`] as a command (`array.setitem`).
    pub fn set_cmd<U>(&self, index: i64, value: &U) -> Cmd<()>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        Cmd::object(self.id, "array.setitem", decode::unit, |a| {
            a.int(index).value(value).map(drop)
        })
    }

    /// The elements `slice` selects, as `a[start:stop:step]` in Python (see [`Slice`]).
    /// Fails with `ValueError` for a step of 0.
    pub fn get_slice(&self, slice: impl Into<Slice>) -> Result<Vec<T>> {
        self.client.run(self.get_slice_cmd(slice))
    }

    /// [`Array::get_slice`] as a command (`array.getslice`).
    pub fn get_slice_cmd(&self, slice: impl Into<Slice>) -> Cmd<Vec<T>> {
        slicing::get(self.id, "array.getslice", slice.into())
    }

    /// Replaces the elements `slice` selects with `items`, as `a[start:stop:step] = items`;
    /// `items` must have the slice's length, since an array's length never changes
    /// (`ValueError`).
    pub fn set_slice<I>(&self, slice: impl Into<Slice>, items: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        self.client.run(self.set_slice_cmd(slice, items))
    }

    /// [`Array::set_slice`] as a command (`array.setslice`).
    pub fn set_slice_cmd<I>(&self, slice: impl Into<Slice>, items: I) -> Cmd<()>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        slicing::set::<T, I>(self.id, "array.setslice", slice.into(), items)
    }

    /// The number of elements, fixed at creation.
    pub fn len(&self) -> Result<usize> {
        self.client.run(self.len_cmd())
    }

    /// [`Array::len`] as a command (`array.len`).
    pub fn len_cmd(&self) -> Cmd<usize> {
        Cmd::object(self.id, "array.len", decode::value, |_| Ok(()))
    }

    /// True for an array of no elements.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Every element at one instant.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.client.run(self.to_vec_cmd())
    }

    /// [`Array::to_vec`] as a command (`array.tolist`).
    pub fn to_vec_cmd(&self) -> Cmd<Vec<T>> {
        Cmd::object(self.id, "array.tolist", decode::seq, |_| Ok(()))
    }

    /// The typecode the array was created with.
    pub fn typecode(&self) -> Result<char> {
        self.client.run(self.typecode_cmd())
    }

    /// [`Array::typecode`] as a command (`array.typecode`).
    pub fn typecode_cmd(&self) -> Cmd<char> {
        Cmd::object(self.id, "array.typecode", decode::value, |_| Ok(()))
    }
}
