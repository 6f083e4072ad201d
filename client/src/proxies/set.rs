//! [`Set`]: a shared set, with the set algebra done in the manager.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashSet};
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::list::By;
use crate::client::Client;
use crate::command::Target;
use crate::command::{decode, Args, Cmd};
use crate::error::{Error, Result};

/// A shared set of `T`, like Python's `set` (Python 3.14's `SyncManager.set()`).
///
/// Elements are compared by value on the manager, as dict keys are (`1` and `1.0` are one
/// element; `true` and `1` are two, see `PROTOCOL.md` section 3); an element that encodes as a
/// map is refused with `TypeError`. Methods that take an element accept any borrowed form of
/// `T` (`&str` for `String` elements). Elements come back in insertion order.
///
/// The set algebra (`union`, `intersection`, `is_subset`, the `*_update` methods, ...) takes a
/// [`SetOperand`]: another shared `Set` of the same manager (the manager reads it there, no
/// copy travels) or a local collection (`Vec`, slice, array, `HashSet`, `BTreeSet`). Each is
/// one call, atomic in the manager.
///
/// ```no_run
/// # let client = agora_client::Client::from_env()?;
/// let seen = client.set::<String>()?;
/// seen.add("alice")?;
/// seen.update(&["bob".to_string(), "alice".to_string()])?;
/// assert_eq!(seen.len()?, 2);
/// let alive = client.set::<String>()?;
/// alive.add("bob")?;
/// assert_eq!(seen.difference(&alive)?, vec!["alice".to_string()]);
/// # Ok::<(), agora_client::Error>(())
/// ```
pub struct Set<T> {
    client: Client,
    id: Target,
    marker: PhantomData<fn() -> T>,
}

super::proxy_common!(Set[T], "set");

impl Client {
    /// Creates a new, empty shared set.
    pub fn set<T>(&self) -> Result<Set<T>> {
        let mut args = Args::default();
        args.str("set").opt_str(None);
        Ok(Set::from_id(self, self.create_with(args)?))
    }

    /// Creates a new shared set holding `items` (duplicates count once).
    pub fn set_from<T, I>(&self, items: I) -> Result<Set<T>>
    where
        T: Serialize,
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        let mut args = Args::default();
        args.str("set")
            .opt_str(None)
            .seq(items.into_iter().map(By::<T, _>::new))?;
        Ok(Set::from_id(self, self.create_with(args)?))
    }

    /// The set called `name`, created empty if there is none (get-or-create). Fails with
    /// `TypeError` if the name belongs to another kind of object.
    pub fn set_named<T>(&self, name: &str) -> Result<Set<T>> {
        let mut args = Args::default();
        args.str("set").str(name);
        Ok(Set::from_id(self, self.create_with(args)?))
    }
}

/// What the set algebra of a [`Set<T>`] takes: another shared set (sent as a reference, read
/// in the manager) or a local collection of `T` (sent as an array).
pub trait SetOperand<T> {
    /// The operand as one encoded param.
    fn encode_operand(&self) -> Result<Vec<u8>>;
}

impl<T> SetOperand<T> for Set<T> {
    fn encode_operand(&self) -> Result<Vec<u8>> {
        rmp_serde::to_vec(&super::SharedRef(self.object_ref())).map_err(Error::encode)
    }
}

/// Local collections: encoded as arrays of their elements.
macro_rules! local_operand {
    ($($ty:ty => [$($gen:tt)*]),* $(,)?) => {$(
        impl<$($gen)*> SetOperand<T> for $ty {
            fn encode_operand(&self) -> Result<Vec<u8>> {
                rmp_serde::to_vec(&self.iter().collect::<Vec<&T>>()).map_err(Error::encode)
            }
        }
    )*};
}

local_operand! {
    [T] => [T: Serialize],
    Vec<T> => [T: Serialize],
    HashSet<T, S> => [T: Serialize, S],
    BTreeSet<T> => [T: Serialize],
}

impl<T: Serialize, const N: usize> SetOperand<T> for [T; N] {
    fn encode_operand(&self) -> Result<Vec<u8>> {
        self.as_slice().encode_operand()
    }
}

impl<T> Set<T>
where
    T: Serialize + DeserializeOwned,
{
    /// Adds `element` (nothing happens when it is there already).
    pub fn add<Q>(&self, element: &Q) -> Result<()>
    where
        T: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.client.run(self.add_cmd(element))
    }

    /// [`Set::add`] as a command (`set.add`).
    pub fn add_cmd<Q>(&self, element: &Q) -> Cmd<()>
    where
        T: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        Cmd::object(self.id, "set.add", decode::unit, |a| {
            a.value(element).map(drop)
        })
    }

    /// Removes `element`; returns whether it was there (Python's `remove` raising `KeyError`
    /// is `false`).
    pub fn remove<Q>(&self, element: &Q) -> Result<bool>
    where
        T: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.client.run(self.remove_cmd(element))
    }

    /// [`Set::remove`] as a command (`set.remove`).
    pub fn remove_cmd<Q>(&self, element: &Q) -> Cmd<bool>
    where
        T: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        Cmd::object(self.id, "set.remove", decode::found_key, |a| {
            a.value(element).map(drop)
        })
    }

    /// Removes `element` if it is there, as Python's `discard`.
    pub fn discard<Q>(&self, element: &Q) -> Result<()>
    where
        T: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.client.run(self.discard_cmd(element))
    }

    /// [`Set::discard`] as a command (`set.discard`).
    pub fn discard_cmd<Q>(&self, element: &Q) -> Cmd<()>
    where
        T: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        Cmd::object(self.id, "set.discard", decode::unit, |a| {
            a.value(element).map(drop)
        })
    }

    /// True when `element` is in the set.
    pub fn contains<Q>(&self, element: &Q) -> Result<bool>
    where
        T: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.client.run(self.contains_cmd(element))
    }

    /// [`Set::contains`] as a command (`set.contains`).
    pub fn contains_cmd<Q>(&self, element: &Q) -> Cmd<bool>
    where
        T: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        Cmd::object(self.id, "set.contains", decode::value, |a| {
            a.value(element).map(drop)
        })
    }

    /// Removes and returns an element (the last inserted), `None` when the set is empty.
    pub fn pop(&self) -> Result<Option<T>> {
        self.client.run(self.pop_cmd())
    }

    /// [`Set::pop`] as a command (`set.pop`).
    pub fn pop_cmd(&self) -> Cmd<Option<T>> {
        Cmd::object(self.id, "set.pop", decode::unless_key_error, |_| Ok(()))
    }

    /// Removes every element.
    pub fn clear(&self) -> Result<()> {
        self.client.run(self.clear_cmd())
    }

    /// [`Set::clear`] as a command (`set.clear`).
    pub fn clear_cmd(&self) -> Cmd<()> {
        Cmd::object(self.id, "set.clear", decode::unit, |_| Ok(()))
    }

    /// The number of elements.
    pub fn len(&self) -> Result<usize> {
        self.client.run(self.len_cmd())
    }

    /// [`Set::len`] as a command (`set.len`).
    pub fn len_cmd(&self) -> Cmd<usize> {
        Cmd::object(self.id, "set.len", decode::value, |_| Ok(()))
    }

    /// True when the set has no elements.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Every element at one instant, in insertion order (collect it into a `HashSet` if you
    /// like).
    pub fn copy(&self) -> Result<Vec<T>> {
        self.client.run(self.copy_cmd())
    }

    /// [`Set::copy`] as a command (`set.copy`).
    pub fn copy_cmd(&self) -> Cmd<Vec<T>> {
        Cmd::object(self.id, "set.copy", decode::value, |_| Ok(()))
    }

    fn algebra<R: DeserializeOwned, O: SetOperand<T> + ?Sized>(
        &self,
        method: &'static str,
        operand: &O,
        decoder: crate::command::Decoder<R>,
    ) -> Cmd<R> {
        Cmd::object(self.id, method, decoder, |a| {
            a.raw(&operand.encode_operand()?);
            Ok(())
        })
    }

    /// Adds every element of `other` (Python's `update`, `|=`).
    pub fn update<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<()> {
        self.client.run(self.update_cmd(other))
    }

    /// [`Set::update`] as a command (`set.update`).
    pub fn update_cmd<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Cmd<()> {
        self.algebra("set.update", other, decode::unit)
    }

    /// Keeps only the elements also in `other` (Python's `intersection_update`, `&=`).
    pub fn intersection_update<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<()> {
        self.client.run(self.intersection_update_cmd(other))
    }

    /// [`Set::intersection_update`] as a command (`set.intersection_update`).
    pub fn intersection_update_cmd<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Cmd<()> {
        self.algebra("set.intersection_update", other, decode::unit)
    }

    /// Removes the elements of `other` (Python's `difference_update`, `-=`).
    pub fn difference_update<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<()> {
        self.client.run(self.difference_update_cmd(other))
    }

    /// [`Set::difference_update`] as a command (`set.difference_update`).
    pub fn difference_update_cmd<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Cmd<()> {
        self.algebra("set.difference_update", other, decode::unit)
    }

    /// Keeps the elements in exactly one of the set and `other` (Python's
    /// `symmetric_difference_update`, `^=`).
    pub fn symmetric_difference_update<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<()> {
        self.client.run(self.symmetric_difference_update_cmd(other))
    }

    /// [`Set::symmetric_difference_update`] as a command (`set.symmetric_difference_update`).
    pub fn symmetric_difference_update_cmd<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Cmd<()> {
        self.algebra("set.symmetric_difference_update", other, decode::unit)
    }

    /// The elements of the set and of `other` (the set is unchanged).
    pub fn union<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<Vec<T>> {
        self.client.run(self.union_cmd(other))
    }

    /// [`Set::union`] as a command (`set.union`).
    pub fn union_cmd<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Cmd<Vec<T>> {
        self.algebra("set.union", other, decode::value)
    }

    /// The elements of the set also in `other`.
    pub fn intersection<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<Vec<T>> {
        self.client.run(self.intersection_cmd(other))
    }

    /// [`Set::intersection`] as a command (`set.intersection`).
    pub fn intersection_cmd<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Cmd<Vec<T>> {
        self.algebra("set.intersection", other, decode::value)
    }

    /// The elements of the set not in `other`.
    pub fn difference<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<Vec<T>> {
        self.client.run(self.difference_cmd(other))
    }

    /// [`Set::difference`] as a command (`set.difference`).
    pub fn difference_cmd<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Cmd<Vec<T>> {
        self.algebra("set.difference", other, decode::value)
    }

    /// The elements in exactly one of the set and `other`.
    pub fn symmetric_difference<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<Vec<T>> {
        self.client.run(self.symmetric_difference_cmd(other))
    }

    /// [`Set::symmetric_difference`] as a command (`set.symmetric_difference`).
    pub fn symmetric_difference_cmd<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Cmd<Vec<T>> {
        self.algebra("set.symmetric_difference", other, decode::value)
    }

    /// True when every element of the set is in `other`.
    pub fn is_subset<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<bool> {
        self.client.run(self.is_subset_cmd(other))
    }

    /// [`Set::is_subset`] as a command (`set.issubset`).
    pub fn is_subset_cmd<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Cmd<bool> {
        self.algebra("set.issubset", other, decode::value)
    }

    /// True when every element of `other` is in the set.
    pub fn is_superset<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<bool> {
        self.client.run(self.is_superset_cmd(other))
    }

    /// [`Set::is_superset`] as a command (`set.issuperset`).
    pub fn is_superset_cmd<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Cmd<bool> {
        self.algebra("set.issuperset", other, decode::value)
    }

    /// True when the set and `other` have no element in common.
    pub fn is_disjoint<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<bool> {
        self.client.run(self.is_disjoint_cmd(other))
    }

    /// [`Set::is_disjoint`] as a command (`set.isdisjoint`).
    pub fn is_disjoint_cmd<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Cmd<bool> {
        self.algebra("set.isdisjoint", other, decode::value)
    }

    /// True when the set and `other` hold the same elements (one call: `set.compare`).
    pub fn equals<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<bool> {
        let (subset, superset) = self.client.run(self.compare_cmd(other))?;
        Ok(subset && superset)
    }

    /// How the set compares with `other` at one instant: `(is_subset, is_superset)`; both
    /// true means equal, as Python's `<=` and `>=` (a proper subset is `(true, false)`).
    pub fn compare<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<(bool, bool)> {
        self.client.run(self.compare_cmd(other))
    }

    /// [`Set::compare`] as a command (`set.compare`).
    pub fn compare_cmd<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Cmd<(bool, bool)> {
        self.algebra("set.compare", other, decode::value)
    }
}
