//! [`Value`]: one shared value with atomic read-modify-write operations.

use std::borrow::Borrow;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::Client;
use crate::command::Target;
use crate::command::{decode, Args, Cmd};
use crate::error::Result;

/// One shared value of type `T`.
///
/// Besides `get` and `set`, it offers what Python's `Value` lacks: [`Value::fetch_add`] and
/// [`Value::compare_and_swap`] run atomically on the manager, so counters need no lock.
/// Created with a typecode (see [`Client::value_typed`]), the manager also checks that every
/// new value fits it.
///
/// ```no_run
/// # let client = agora_client::Client::from_env()?;
/// let hits = client.value_named("hits", &0i64)?;
/// let before = hits.fetch_add(1)?;
/// let (swapped, now) = hits.compare_and_swap(&(before + 1), &0)?;
/// # Ok::<(), agora_client::Error>(())
/// ```
pub struct Value<T> {
    client: Client,
    id: Target,
    marker: PhantomData<fn() -> T>,
}

super::proxy_common!(Value[T], "value");

/// Numbers the manager can add: the argument of [`Value::fetch_add`].
pub trait Number: Serialize + DeserializeOwned + Copy + private::Sealed {}

mod private {
    pub trait Sealed {}
}

macro_rules! numbers {
    ($($t:ty),*) => {
        $(impl private::Sealed for $t {} impl Number for $t {})*
    };
}

numbers!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize, f32, f64);

impl Client {
    /// Creates a new shared value holding `initial`, of any type.
    pub fn value<T: Serialize>(&self, initial: &T) -> Result<Value<T>> {
        self.create_value(None, None, initial)
    }

    /// The value called `name`, created with `initial` if there is none (get-or-create; an
    /// existing value keeps what it holds).
    pub fn value_named<T: Serialize>(&self, name: &str, initial: &T) -> Result<Value<T>> {
        self.create_value(Some(name), None, initial)
    }

    /// Creates a shared value restricted to an array typecode (`'i'` int32, `'q'` int64,
    /// `'d'` float64, ... see `PROTOCOL.md`), optionally named: every `set` is checked against
    /// it (`TypeError` or `OverflowError`).
    pub fn value_typed<T: Serialize>(
        &self,
        name: Option<&str>,
        typecode: char,
        initial: &T,
    ) -> Result<Value<T>> {
        self.create_value(name, Some(typecode), initial)
    }

    fn create_value<T: Serialize>(
        &self,
        name: Option<&str>,
        typecode: Option<char>,
        initial: &T,
    ) -> Result<Value<T>> {
        let mut args = Args::default();
        args.str("value").opt_str(name);
        args.opt_str(typecode.map(String::from).as_deref())
            .value(initial)?;
        Ok(Value::from_id(self, self.create_with(args)?))
    }
}

impl<T> Value<T>
where
    T: Serialize + DeserializeOwned,
{
    /// The current value.
    pub fn get(&self) -> Result<T> {
        self.client.run(self.get_cmd())
    }

    /// [`Value::get`] as a command (`value.get`).
    pub fn get_cmd(&self) -> Cmd<T> {
        Cmd::object(self.id, "value.get", decode::value, |_| Ok(()))
    }

    /// Replaces the value.
    pub fn set<U>(&self, value: &U) -> Result<()>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.client.run(self.set_cmd(value))
    }

    /// [`Value::set`] as a command (`value.set`).
    pub fn set_cmd<U>(&self, value: &U) -> Cmd<()>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        Cmd::object(self.id, "value.set", decode::unit, |a| {
            a.value(value).map(drop)
        })
    }

    /// Replaces the value with `new` if it equals `expected` (by value, see `PROTOCOL.md`).
    /// Returns whether it did, and the value found.
    pub fn compare_and_swap<U>(&self, expected: &U, new: &U) -> Result<(bool, T)>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.client.run(self.compare_and_swap_cmd(expected, new))
    }

    /// [`Value::compare_and_swap`] as a command (`value.compare_and_swap`).
    pub fn compare_and_swap_cmd<U>(&self, expected: &U, new: &U) -> Cmd<(bool, T)>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        Cmd::object(self.id, "value.compare_and_swap", decode::value, |a| {
            a.value(expected)?.value(new).map(drop)
        })
    }

    /// The typecode the value was created with, `None` for any value.
    pub fn typecode(&self) -> Result<Option<char>> {
        self.client.run(self.typecode_cmd())
    }

    /// [`Value::typecode`] as a command (`value.typecode`).
    pub fn typecode_cmd(&self) -> Cmd<Option<char>> {
        Cmd::object(self.id, "value.typecode", decode::value, |_| Ok(()))
    }
}

impl<T: Number> Value<T> {
    /// Adds `delta` atomically and returns the value from **before** the addition. Integer
    /// arithmetic is exact (`OverflowError` past the type's range); `delta` may be negative.
    /// When the value held is not a `T` (a float in a `Value<i64>`), the addition is done all
    /// the same and the error ([`Error::Decode`](crate::Error::Decode), with
    /// [`applied`](crate::DecodeError::applied)) holds the value from before it.
    pub fn fetch_add(&self, delta: T) -> Result<T> {
        self.client.run(self.fetch_add_cmd(delta))
    }

    /// [`Value::fetch_add`] as a command (`value.fetch_add`).
    pub fn fetch_add_cmd(&self, delta: T) -> Cmd<T> {
        Cmd::object(self.id, "value.fetch_add", decode::value, |a| {
            a.value(&delta).map(drop)
        })
    }
}
