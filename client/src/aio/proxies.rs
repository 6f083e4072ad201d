//! The async methods of each kind of proxy: each is the blocking proxy's `*_cmd` run on the
//! async connection ([`Async::run`]), so requests are encoded and replies decoded by the one
//! typed surface both clients share. The calls whose cancellation must give something back
//! (queue gets, acquires) are written out below the forwarded ones, and in `guards`.

use std::borrow::Borrow;
use std::time::Duration;

use bytes::Bytes;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;

use super::{Async, Call};
use crate::command::{Args, Cmd};
use crate::proxies::{Number, Plain, QueueKind, SetOperand, Slice};

/// An async [`crate::Dict`].
pub type Dict<K, V> = Async<crate::Dict<K, V>>;
/// An async [`crate::List`].
pub type List<T> = Async<crate::List<T>>;
/// An async [`crate::Set`].
pub type Set<T> = Async<crate::Set<T>>;
/// An async [`crate::Value`].
pub type Value<T> = Async<crate::Value<T>>;
/// An async [`crate::Array`].
pub type Array<T> = Async<crate::Array<T>>;
/// An async [`crate::Namespace`].
pub type Namespace = Async<crate::Namespace>;
/// An async [`crate::Queue`].
pub type Queue<T> = Async<crate::Queue<T>>;
/// An async [`crate::JoinableQueue`].
pub type JoinableQueue<T> = Async<crate::JoinableQueue<T>>;
/// An async [`crate::Event`].
pub type Event = Async<crate::Event>;
/// An async [`crate::Barrier`].
pub type Barrier = Async<crate::Barrier>;
/// An async [`crate::Condition`]: its lock, waits and notifications through a
/// [`ConditionGuard`](super::ConditionGuard).
pub type Condition = Async<crate::Condition>;
/// An async [`crate::Lock`]; see `guards`.
pub type Lock = Async<crate::Lock>;
/// An async [`crate::RLock`]; see `guards`.
pub type RLock = Async<crate::RLock>;
/// An async [`crate::Semaphore`]; see `guards`.
pub type Semaphore = Async<crate::Semaphore>;
/// An async [`crate::BoundedSemaphore`]; see `guards`.
pub type BoundedSemaphore = Async<crate::BoundedSemaphore>;

impl<K, V> Async<crate::Dict<K, V>>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
    K: Send + 'static,
    V: Send + 'static,
{
    #[doc = concat!("[`Dict::get_cmd`](crate::Dict::get_cmd), run on the async connection.")]
    pub fn get<Q>(&self, key: &Q) -> Call<Option<V>>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.run(self.proxy.get_cmd(key))
    }

    #[doc = concat!("[`Dict::get_or_cmd`](crate::Dict::get_or_cmd), run on the async connection.")]
    pub fn get_or<Q, W>(&self, key: &Q, default: &W) -> Call<V>
    where
        K: Borrow<Q>,
        V: Borrow<W>,
        Q: Serialize + ?Sized,
        W: Serialize + ?Sized,
    {
        self.run(self.proxy.get_or_cmd(key, default))
    }

    #[doc = concat!("[`Dict::getitem_cmd`](crate::Dict::getitem_cmd), run on the async connection.")]
    pub fn getitem<Q>(&self, key: &Q) -> Call<V>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.run(self.proxy.getitem_cmd(key))
    }

    #[doc = concat!("[`Dict::set_cmd`](crate::Dict::set_cmd), run on the async connection.")]
    pub fn set<Q, W>(&self, key: &Q, value: &W) -> Call<()>
    where
        K: Borrow<Q>,
        V: Borrow<W>,
        Q: Serialize + ?Sized,
        W: Serialize + ?Sized,
    {
        self.run(self.proxy.set_cmd(key, value))
    }

    #[doc = concat!("[`Dict::del_cmd`](crate::Dict::del_cmd), run on the async connection.")]
    pub fn del<Q>(&self, key: &Q) -> Call<bool>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.run(self.proxy.del_cmd(key))
    }

    #[doc = concat!("[`Dict::pop_cmd`](crate::Dict::pop_cmd), run on the async connection.")]
    pub fn pop<Q>(&self, key: &Q) -> Call<Option<V>>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.run(self.proxy.pop_cmd(key))
    }

    #[doc = concat!("[`Dict::pop_or_cmd`](crate::Dict::pop_or_cmd), run on the async connection.")]
    pub fn pop_or<Q, W>(&self, key: &Q, default: &W) -> Call<V>
    where
        K: Borrow<Q>,
        V: Borrow<W>,
        Q: Serialize + ?Sized,
        W: Serialize + ?Sized,
    {
        self.run(self.proxy.pop_or_cmd(key, default))
    }

    #[doc = concat!("[`Dict::popitem_cmd`](crate::Dict::popitem_cmd), run on the async connection.")]
    pub fn popitem(&self) -> Call<Option<(K, V)>> {
        self.run(self.proxy.popitem_cmd())
    }

    #[doc = concat!("[`Dict::setdefault_cmd`](crate::Dict::setdefault_cmd), run on the async connection.")]
    pub fn setdefault<Q, W>(&self, key: &Q, default: &W) -> Call<V>
    where
        K: Borrow<Q>,
        V: Borrow<W>,
        Q: Serialize + ?Sized,
        W: Serialize + ?Sized,
    {
        self.run(self.proxy.setdefault_cmd(key, default))
    }

    #[doc = concat!("[`Dict::contains_cmd`](crate::Dict::contains_cmd), run on the async connection.")]
    pub fn contains<Q>(&self, key: &Q) -> Call<bool>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.run(self.proxy.contains_cmd(key))
    }

    #[doc = concat!("[`Dict::len_cmd`](crate::Dict::len_cmd), run on the async connection.")]
    pub fn len(&self) -> Call<usize> {
        self.run(self.proxy.len_cmd())
    }

    #[doc = concat!("[`Dict::keys_cmd`](crate::Dict::keys_cmd), run on the async connection.")]
    pub fn keys(&self) -> Call<Vec<K>> {
        self.run(self.proxy.keys_cmd())
    }

    #[doc = concat!("[`Dict::values_cmd`](crate::Dict::values_cmd), run on the async connection.")]
    pub fn values(&self) -> Call<Vec<V>> {
        self.run(self.proxy.values_cmd())
    }

    #[doc = concat!("[`Dict::items_cmd`](crate::Dict::items_cmd), run on the async connection.")]
    pub fn items(&self) -> Call<Vec<(K, V)>> {
        self.run(self.proxy.items_cmd())
    }

    #[doc = concat!("[`Dict::keys_raw_cmd`](crate::Dict::keys_raw_cmd), run on the async connection.")]
    pub fn keys_raw(&self) -> Call<Vec<Bytes>> {
        self.run(self.proxy.keys_raw_cmd())
    }

    #[doc = concat!("[`Dict::values_raw_cmd`](crate::Dict::values_raw_cmd), run on the async connection.")]
    pub fn values_raw(&self) -> Call<Vec<Bytes>> {
        self.run(self.proxy.values_raw_cmd())
    }

    #[doc = concat!("[`Dict::items_raw_cmd`](crate::Dict::items_raw_cmd), run on the async connection.")]
    pub fn items_raw(&self) -> Call<Vec<(Bytes, Bytes)>> {
        self.run(self.proxy.items_raw_cmd())
    }

    #[doc = concat!("[`Dict::copy_raw_cmd`](crate::Dict::copy_raw_cmd), run on the async connection.")]
    pub fn copy_raw(&self) -> Call<Vec<(Bytes, Bytes)>> {
        self.run(self.proxy.copy_raw_cmd())
    }

    #[doc = concat!("[`Dict::update_cmd`](crate::Dict::update_cmd), run on the async connection.")]
    pub fn update<I, Q, W>(&self, entries: I) -> Call<()>
    where
        I: IntoIterator<Item = (Q, W)>,
        Q: Borrow<K>,
        W: Borrow<V>,
    {
        self.run(self.proxy.update_cmd(entries))
    }

    #[doc = concat!("[`Dict::clear_cmd`](crate::Dict::clear_cmd), run on the async connection.")]
    pub fn clear(&self) -> Call<()> {
        self.run(self.proxy.clear_cmd())
    }

    #[doc = concat!("[`Dict::copy_cmd`](crate::Dict::copy_cmd), run on the async connection.")]
    pub fn copy(&self) -> Call<Vec<(K, V)>> {
        self.run(self.proxy.copy_cmd())
    }
}

impl<T> Async<crate::List<T>>
where
    T: Serialize + DeserializeOwned,
    T: Send + 'static,
{
    #[doc = concat!("[`List::get_cmd`](crate::List::get_cmd), run on the async connection.")]
    pub fn get(&self, index: i64) -> Call<Option<T>> {
        self.run(self.proxy.get_cmd(index))
    }

    #[doc = concat!("[`List::getitem_cmd`](crate::List::getitem_cmd), run on the async connection.")]
    pub fn getitem(&self, index: i64) -> Call<T> {
        self.run(self.proxy.getitem_cmd(index))
    }

    #[doc = concat!("[`List::set_cmd`](crate::List::set_cmd), run on the async connection.")]
    pub fn set<U>(&self, index: i64, value: &U) -> Call<()>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.run(self.proxy.set_cmd(index, value))
    }

    #[doc = concat!("[`List::del_cmd`](crate::List::del_cmd), run on the async connection.")]
    pub fn del(&self, index: i64) -> Call<bool> {
        self.run(self.proxy.del_cmd(index))
    }

    #[doc = concat!("[`List::get_slice_cmd`](crate::List::get_slice_cmd), run on the async connection.")]
    pub fn get_slice(&self, slice: impl Into<Slice>) -> Call<Vec<T>> {
        self.run(self.proxy.get_slice_cmd(slice))
    }

    #[doc = concat!("[`List::set_slice_cmd`](crate::List::set_slice_cmd), run on the async connection.")]
    pub fn set_slice<I>(&self, slice: impl Into<Slice>, items: I) -> Call<()>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        self.run(self.proxy.set_slice_cmd(slice, items))
    }

    #[doc = concat!("[`List::del_slice_cmd`](crate::List::del_slice_cmd), run on the async connection.")]
    pub fn del_slice(&self, slice: impl Into<Slice>) -> Call<()> {
        self.run(self.proxy.del_slice_cmd(slice))
    }

    #[doc = concat!("[`List::append_cmd`](crate::List::append_cmd), run on the async connection.")]
    pub fn append<U>(&self, value: &U) -> Call<()>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.run(self.proxy.append_cmd(value))
    }

    #[doc = concat!("[`List::extend_cmd`](crate::List::extend_cmd), run on the async connection.")]
    pub fn extend<I>(&self, items: I) -> Call<()>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        self.run(self.proxy.extend_cmd(items))
    }

    #[doc = concat!("[`List::insert_cmd`](crate::List::insert_cmd), run on the async connection.")]
    pub fn insert<U>(&self, index: i64, value: &U) -> Call<()>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.run(self.proxy.insert_cmd(index, value))
    }

    #[doc = concat!("[`List::pop_cmd`](crate::List::pop_cmd), run on the async connection.")]
    pub fn pop(&self) -> Call<Option<T>> {
        self.run(self.proxy.pop_cmd())
    }

    #[doc = concat!("[`List::pop_at_cmd`](crate::List::pop_at_cmd), run on the async connection.")]
    pub fn pop_at(&self, index: i64) -> Call<Option<T>> {
        self.run(self.proxy.pop_at_cmd(index))
    }

    #[doc = concat!("[`List::remove_cmd`](crate::List::remove_cmd), run on the async connection.")]
    pub fn remove<U>(&self, value: &U) -> Call<bool>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.run(self.proxy.remove_cmd(value))
    }

    #[doc = concat!("[`List::index_cmd`](crate::List::index_cmd), run on the async connection.")]
    pub fn index<U>(&self, value: &U) -> Call<Option<usize>>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.run(self.proxy.index_cmd(value))
    }

    #[doc = concat!("[`List::index_in_cmd`](crate::List::index_in_cmd), run on the async connection.")]
    pub fn index_in<U>(&self, value: &U, range: impl Into<Slice>) -> Call<Option<usize>>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.run(self.proxy.index_in_cmd(value, range))
    }

    #[doc = concat!("[`List::count_cmd`](crate::List::count_cmd), run on the async connection.")]
    pub fn count<U>(&self, value: &U) -> Call<usize>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.run(self.proxy.count_cmd(value))
    }

    #[doc = concat!("[`List::len_cmd`](crate::List::len_cmd), run on the async connection.")]
    pub fn len(&self) -> Call<usize> {
        self.run(self.proxy.len_cmd())
    }

    #[doc = concat!("[`List::reverse_cmd`](crate::List::reverse_cmd), run on the async connection.")]
    pub fn reverse(&self) -> Call<()> {
        self.run(self.proxy.reverse_cmd())
    }

    #[doc = concat!("[`List::sort_cmd`](crate::List::sort_cmd), run on the async connection.")]
    pub fn sort(&self) -> Call<()> {
        self.run(self.proxy.sort_cmd())
    }

    #[doc = concat!("[`List::sort_desc_cmd`](crate::List::sort_desc_cmd), run on the async connection.")]
    pub fn sort_desc(&self) -> Call<()> {
        self.run(self.proxy.sort_desc_cmd())
    }

    #[doc = concat!("[`List::clear_cmd`](crate::List::clear_cmd), run on the async connection.")]
    pub fn clear(&self) -> Call<()> {
        self.run(self.proxy.clear_cmd())
    }

    #[doc = concat!("[`List::copy_cmd`](crate::List::copy_cmd), run on the async connection.")]
    pub fn copy(&self) -> Call<Vec<T>> {
        self.run(self.proxy.copy_cmd())
    }

    #[doc = concat!("[`List::copy_raw_cmd`](crate::List::copy_raw_cmd), run on the async connection.")]
    pub fn copy_raw(&self) -> Call<Vec<Bytes>> {
        self.run(self.proxy.copy_raw_cmd())
    }
}

impl<T> Async<crate::Set<T>>
where
    T: Serialize + DeserializeOwned,
    T: Send + 'static,
{
    #[doc = concat!("[`Set::add_cmd`](crate::Set::add_cmd), run on the async connection.")]
    pub fn add<Q>(&self, element: &Q) -> Call<()>
    where
        T: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.run(self.proxy.add_cmd(element))
    }

    #[doc = concat!("[`Set::remove_cmd`](crate::Set::remove_cmd), run on the async connection.")]
    pub fn remove<Q>(&self, element: &Q) -> Call<bool>
    where
        T: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.run(self.proxy.remove_cmd(element))
    }

    #[doc = concat!("[`Set::discard_cmd`](crate::Set::discard_cmd), run on the async connection.")]
    pub fn discard<Q>(&self, element: &Q) -> Call<()>
    where
        T: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.run(self.proxy.discard_cmd(element))
    }

    #[doc = concat!("[`Set::contains_cmd`](crate::Set::contains_cmd), run on the async connection.")]
    pub fn contains<Q>(&self, element: &Q) -> Call<bool>
    where
        T: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.run(self.proxy.contains_cmd(element))
    }

    #[doc = concat!("[`Set::pop_cmd`](crate::Set::pop_cmd), run on the async connection.")]
    pub fn pop(&self) -> Call<Option<T>> {
        self.run(self.proxy.pop_cmd())
    }

    #[doc = concat!("[`Set::clear_cmd`](crate::Set::clear_cmd), run on the async connection.")]
    pub fn clear(&self) -> Call<()> {
        self.run(self.proxy.clear_cmd())
    }

    #[doc = concat!("[`Set::len_cmd`](crate::Set::len_cmd), run on the async connection.")]
    pub fn len(&self) -> Call<usize> {
        self.run(self.proxy.len_cmd())
    }

    #[doc = concat!("[`Set::copy_cmd`](crate::Set::copy_cmd), run on the async connection.")]
    pub fn copy(&self) -> Call<Vec<T>> {
        self.run(self.proxy.copy_cmd())
    }

    #[doc = concat!("[`Set::update_cmd`](crate::Set::update_cmd), run on the async connection.")]
    pub fn update<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Call<()> {
        self.run(self.proxy.update_cmd(other))
    }

    #[doc = concat!("[`Set::intersection_update_cmd`](crate::Set::intersection_update_cmd), run on the async connection.")]
    pub fn intersection_update<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Call<()> {
        self.run(self.proxy.intersection_update_cmd(other))
    }

    #[doc = concat!("[`Set::difference_update_cmd`](crate::Set::difference_update_cmd), run on the async connection.")]
    pub fn difference_update<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Call<()> {
        self.run(self.proxy.difference_update_cmd(other))
    }

    #[doc = concat!("[`Set::symmetric_difference_update_cmd`](crate::Set::symmetric_difference_update_cmd), run on the async connection.")]
    pub fn symmetric_difference_update<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Call<()> {
        self.run(self.proxy.symmetric_difference_update_cmd(other))
    }

    #[doc = concat!("[`Set::union_cmd`](crate::Set::union_cmd), run on the async connection.")]
    pub fn union<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Call<Vec<T>> {
        self.run(self.proxy.union_cmd(other))
    }

    #[doc = concat!("[`Set::intersection_cmd`](crate::Set::intersection_cmd), run on the async connection.")]
    pub fn intersection<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Call<Vec<T>> {
        self.run(self.proxy.intersection_cmd(other))
    }

    #[doc = concat!("[`Set::difference_cmd`](crate::Set::difference_cmd), run on the async connection.")]
    pub fn difference<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Call<Vec<T>> {
        self.run(self.proxy.difference_cmd(other))
    }

    #[doc = concat!("[`Set::symmetric_difference_cmd`](crate::Set::symmetric_difference_cmd), run on the async connection.")]
    pub fn symmetric_difference<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Call<Vec<T>> {
        self.run(self.proxy.symmetric_difference_cmd(other))
    }

    #[doc = concat!("[`Set::is_subset_cmd`](crate::Set::is_subset_cmd), run on the async connection.")]
    pub fn is_subset<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Call<bool> {
        self.run(self.proxy.is_subset_cmd(other))
    }

    #[doc = concat!("[`Set::is_superset_cmd`](crate::Set::is_superset_cmd), run on the async connection.")]
    pub fn is_superset<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Call<bool> {
        self.run(self.proxy.is_superset_cmd(other))
    }

    #[doc = concat!("[`Set::is_disjoint_cmd`](crate::Set::is_disjoint_cmd), run on the async connection.")]
    pub fn is_disjoint<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Call<bool> {
        self.run(self.proxy.is_disjoint_cmd(other))
    }

    #[doc = concat!("[`Set::compare_cmd`](crate::Set::compare_cmd), run on the async connection.")]
    pub fn compare<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Call<(bool, bool)> {
        self.run(self.proxy.compare_cmd(other))
    }
}

impl<T> Async<crate::Value<T>>
where
    T: Serialize + DeserializeOwned,
    T: Send + 'static,
{
    #[doc = concat!("[`Value::get_cmd`](crate::Value::get_cmd), run on the async connection.")]
    pub fn get(&self) -> Call<T> {
        self.run(self.proxy.get_cmd())
    }

    #[doc = concat!("[`Value::set_cmd`](crate::Value::set_cmd), run on the async connection.")]
    pub fn set<U>(&self, value: &U) -> Call<()>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.run(self.proxy.set_cmd(value))
    }

    #[doc = concat!("[`Value::compare_and_swap_cmd`](crate::Value::compare_and_swap_cmd), run on the async connection.")]
    pub fn compare_and_swap<U>(&self, expected: &U, new: &U) -> Call<(bool, T)>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.run(self.proxy.compare_and_swap_cmd(expected, new))
    }

    #[doc = concat!("[`Value::typecode_cmd`](crate::Value::typecode_cmd), run on the async connection.")]
    pub fn typecode(&self) -> Call<Option<char>> {
        self.run(self.proxy.typecode_cmd())
    }
}

impl<T: Number> Async<crate::Value<T>>
where
    T: Send + 'static,
{
    #[doc = concat!("[`Value::fetch_add_cmd`](crate::Value::fetch_add_cmd), run on the async connection.")]
    pub fn fetch_add(&self, delta: T) -> Call<T> {
        self.run(self.proxy.fetch_add_cmd(delta))
    }
}

impl<T> Async<crate::Array<T>>
where
    T: Serialize + DeserializeOwned,
    T: Send + 'static,
{
    #[doc = concat!("[`Array::get_cmd`](crate::Array::get_cmd), run on the async connection.")]
    pub fn get(&self, index: i64) -> Call<Option<T>> {
        self.run(self.proxy.get_cmd(index))
    }

    #[doc = concat!("[`Array::set_cmd`](crate::Array::set_cmd), run on the async connection.")]
    pub fn set<U>(&self, index: i64, value: &U) -> Call<()>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.run(self.proxy.set_cmd(index, value))
    }

    #[doc = concat!("[`Array::get_slice_cmd`](crate::Array::get_slice_cmd), run on the async connection.")]
    pub fn get_slice(&self, slice: impl Into<Slice>) -> Call<Vec<T>> {
        self.run(self.proxy.get_slice_cmd(slice))
    }

    #[doc = concat!("[`Array::set_slice_cmd`](crate::Array::set_slice_cmd), run on the async connection.")]
    pub fn set_slice<I>(&self, slice: impl Into<Slice>, items: I) -> Call<()>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        self.run(self.proxy.set_slice_cmd(slice, items))
    }

    #[doc = concat!("[`Array::len_cmd`](crate::Array::len_cmd), run on the async connection.")]
    pub fn len(&self) -> Call<usize> {
        self.run(self.proxy.len_cmd())
    }

    #[doc = concat!("[`Array::to_vec_cmd`](crate::Array::to_vec_cmd), run on the async connection.")]
    pub fn to_vec(&self) -> Call<Vec<T>> {
        self.run(self.proxy.to_vec_cmd())
    }

    #[doc = concat!("[`Array::typecode_cmd`](crate::Array::typecode_cmd), run on the async connection.")]
    pub fn typecode(&self) -> Call<char> {
        self.run(self.proxy.typecode_cmd())
    }
}

impl Async<crate::Namespace> {
    #[doc = concat!("[`Namespace::get_cmd`](crate::Namespace::get_cmd), run on the async connection.")]
    pub fn get<T: DeserializeOwned + Send + 'static>(&self, name: &str) -> Call<Option<T>> {
        self.run(self.proxy.get_cmd(name))
    }

    #[doc = concat!("[`Namespace::set_cmd`](crate::Namespace::set_cmd), run on the async connection.")]
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Call<()> {
        self.run(self.proxy.set_cmd(name, value))
    }

    #[doc = concat!("[`Namespace::del_cmd`](crate::Namespace::del_cmd), run on the async connection.")]
    pub fn del(&self, name: &str) -> Call<bool> {
        self.run(self.proxy.del_cmd(name))
    }

    #[doc = concat!("[`Namespace::items_cmd`](crate::Namespace::items_cmd), run on the async connection.")]
    pub fn items<T: DeserializeOwned + Send + 'static>(&self) -> Call<Vec<(String, T)>> {
        self.run(self.proxy.items_cmd())
    }
}

impl<T, K: QueueKind> Async<crate::Queue<T, K>>
where
    T: Serialize + DeserializeOwned,
    T: Send + 'static,
{
    #[doc = concat!("[`Queue::put_cmd`](crate::Queue::put_cmd), run on the async connection.")]
    pub fn put<U>(&self, item: &U) -> Call<()>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.run(self.proxy.put_cmd(item))
    }

    #[doc = concat!("[`Queue::put_timeout_cmd`](crate::Queue::put_timeout_cmd), run on the async connection.")]
    pub fn put_timeout<U>(&self, item: &U, timeout: Duration) -> Call<Option<()>>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.run(self.proxy.put_timeout_cmd(item, timeout))
    }

    #[doc = concat!("[`Queue::try_put_cmd`](crate::Queue::try_put_cmd), run on the async connection.")]
    pub fn try_put<U>(&self, item: &U) -> Call<Option<()>>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.run(self.proxy.try_put_cmd(item))
    }

    #[doc = concat!("[`Queue::try_get_cmd`](crate::Queue::try_get_cmd), run on the async connection.")]
    pub fn try_get(&self) -> Call<Option<T>> {
        self.run(self.proxy.try_get_cmd())
    }

    #[doc = concat!("[`Queue::put_many_cmd`](crate::Queue::put_many_cmd), run on the async connection.")]
    pub fn put_many<I>(&self, items: I) -> Call<usize>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        self.run(self.proxy.put_many_cmd(items))
    }

    #[doc = concat!("[`Queue::put_many_timeout_cmd`](crate::Queue::put_many_timeout_cmd), run on the async connection.")]
    pub fn put_many_timeout<I>(&self, items: I, timeout: Duration) -> Call<Option<usize>>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        self.run(self.proxy.put_many_timeout_cmd(items, timeout))
    }

    #[doc = concat!("[`Queue::try_put_many_cmd`](crate::Queue::try_put_many_cmd), run on the async connection.")]
    pub fn try_put_many<I>(&self, items: I) -> Call<Option<usize>>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        self.run(self.proxy.try_put_many_cmd(items))
    }

    #[doc = concat!("[`Queue::get_many_cmd`](crate::Queue::get_many_cmd), run on the async connection.")]
    pub fn get_many(&self, n: usize) -> Call<Vec<T>> {
        self.run(self.proxy.get_many_cmd(n))
    }

    #[doc = concat!("[`Queue::get_many_timeout_cmd`](crate::Queue::get_many_timeout_cmd), run on the async connection.")]
    pub fn get_many_timeout(&self, n: usize, timeout: Duration) -> Call<Option<Vec<T>>> {
        self.run(self.proxy.get_many_timeout_cmd(n, timeout))
    }

    #[doc = concat!("[`Queue::try_get_many_cmd`](crate::Queue::try_get_many_cmd), run on the async connection.")]
    pub fn try_get_many(&self, n: usize) -> Call<Option<Vec<T>>> {
        self.run(self.proxy.try_get_many_cmd(n))
    }

    #[doc = concat!("[`Queue::qsize_cmd`](crate::Queue::qsize_cmd), run on the async connection.")]
    pub fn qsize(&self) -> Call<usize> {
        self.run(self.proxy.qsize_cmd())
    }

    #[doc = concat!("[`Queue::is_empty_cmd`](crate::Queue::is_empty_cmd), run on the async connection.")]
    pub fn is_empty(&self) -> Call<bool> {
        self.run(self.proxy.is_empty_cmd())
    }

    #[doc = concat!("[`Queue::is_full_cmd`](crate::Queue::is_full_cmd), run on the async connection.")]
    pub fn is_full(&self) -> Call<bool> {
        self.run(self.proxy.is_full_cmd())
    }

    #[doc = concat!("[`Queue::maxsize_cmd`](crate::Queue::maxsize_cmd), run on the async connection.")]
    pub fn maxsize(&self) -> Call<usize> {
        self.run(self.proxy.maxsize_cmd())
    }

    #[doc = concat!("[`Queue::close_cmd`](crate::Queue::close_cmd), run on the async connection.")]
    pub fn close(&self) -> Call<()> {
        self.run(self.proxy.close_cmd())
    }

    #[doc = concat!("[`Queue::is_closed_cmd`](crate::Queue::is_closed_cmd), run on the async connection.")]
    pub fn is_closed(&self) -> Call<bool> {
        self.run(self.proxy.is_closed_cmd())
    }
}

impl<T: DeserializeOwned> Async<crate::Queue<T, Plain>>
where
    T: Send + 'static,
{
    #[doc = concat!("[`Queue::ack_cmd`](crate::Queue::ack_cmd), run on the async connection.")]
    pub fn ack(&self, receipt: u64) -> Call<()> {
        self.run(self.proxy.ack_cmd(receipt))
    }

    #[doc = concat!("[`Queue::nack_cmd`](crate::Queue::nack_cmd), run on the async connection.")]
    pub fn nack(&self, receipt: u64) -> Call<()> {
        self.run(self.proxy.nack_cmd(receipt))
    }
}

impl<T, K: QueueKind> Async<crate::Queue<T, K>>
where
    T: Send + 'static,
{
    #[doc = concat!("[`Queue::task_done_cmd`](crate::Queue::task_done_cmd), run on the async connection.")]
    pub fn task_done(&self) -> Call<()> {
        self.run(self.proxy.task_done_cmd())
    }

    #[doc = concat!("[`Queue::join_cmd`](crate::Queue::join_cmd), run on the async connection.")]
    pub fn join(&self) -> Call<()> {
        self.run(self.proxy.join_cmd())
    }

    #[doc = concat!("[`Queue::join_timeout_cmd`](crate::Queue::join_timeout_cmd), run on the async connection.")]
    pub fn join_timeout(&self, timeout: Duration) -> Call<Option<()>> {
        self.run(self.proxy.join_timeout_cmd(timeout))
    }
}

impl Async<crate::Event> {
    #[doc = concat!("[`Event::set_cmd`](crate::Event::set_cmd), run on the async connection.")]
    pub fn set(&self) -> Call<()> {
        self.run(self.proxy.set_cmd())
    }

    #[doc = concat!("[`Event::clear_cmd`](crate::Event::clear_cmd), run on the async connection.")]
    pub fn clear(&self) -> Call<()> {
        self.run(self.proxy.clear_cmd())
    }

    #[doc = concat!("[`Event::is_set_cmd`](crate::Event::is_set_cmd), run on the async connection.")]
    pub fn is_set(&self) -> Call<bool> {
        self.run(self.proxy.is_set_cmd())
    }

    #[doc = concat!("[`Event::wait_cmd`](crate::Event::wait_cmd), run on the async connection.")]
    pub fn wait(&self) -> Call<()> {
        self.run(self.proxy.wait_cmd())
    }

    #[doc = concat!("[`Event::wait_timeout_cmd`](crate::Event::wait_timeout_cmd), run on the async connection.")]
    pub fn wait_timeout(&self, wait: Duration) -> Call<Option<()>> {
        self.run(self.proxy.wait_timeout_cmd(wait))
    }
}

impl Async<crate::Barrier> {
    #[doc = concat!("[`Barrier::wait_cmd`](crate::Barrier::wait_cmd), run on the async connection.")]
    pub fn wait(&self) -> Call<usize> {
        self.run(self.proxy.wait_cmd())
    }

    #[doc = concat!("[`Barrier::wait_timeout_cmd`](crate::Barrier::wait_timeout_cmd), run on the async connection.")]
    pub fn wait_timeout(&self, wait: Duration) -> Call<Option<usize>> {
        self.run(self.proxy.wait_timeout_cmd(wait))
    }

    #[doc = concat!("[`Barrier::reset_cmd`](crate::Barrier::reset_cmd), run on the async connection.")]
    pub fn reset(&self) -> Call<()> {
        self.run(self.proxy.reset_cmd())
    }

    #[doc = concat!("[`Barrier::abort_cmd`](crate::Barrier::abort_cmd), run on the async connection.")]
    pub fn abort(&self) -> Call<()> {
        self.run(self.proxy.abort_cmd())
    }

    #[doc = concat!("[`Barrier::parties_cmd`](crate::Barrier::parties_cmd), run on the async connection.")]
    pub fn parties(&self) -> Call<usize> {
        self.run(self.proxy.parties_cmd())
    }

    #[doc = concat!("[`Barrier::n_waiting_cmd`](crate::Barrier::n_waiting_cmd), run on the async connection.")]
    pub fn n_waiting(&self) -> Call<usize> {
        self.run(self.proxy.n_waiting_cmd())
    }

    #[doc = concat!("[`Barrier::is_broken_cmd`](crate::Barrier::is_broken_cmd), run on the async connection.")]
    pub fn is_broken(&self) -> Call<bool> {
        self.run(self.proxy.is_broken_cmd())
    }
}

/// The queue gets, cancellation-safe: a plain queue's get is a `get_acked`, acknowledged (without
/// waiting) as soon as its item is here, and `nack`ed back to the head of the queue if its
/// future was dropped when the item came.
impl<T> Async<crate::Queue<T, Plain>>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    /// Takes the item at the front, waiting while the queue is empty ([`crate::Queue::get`]).
    ///
    /// # Cancel safety
    /// Dropped before it completes, it takes no item: a waiting get is cancelled, and an item
    /// already on its way goes back to the head of the queue.
    pub fn get(&self) -> Call<T> {
        let cmd = self.proxy.get_acked_cmd();
        let taken = self.take(cmd);
        Call::new(async move { Ok(taken.await?.item) })
    }

    /// [`Async::get`] waiting at most `timeout`: `None` when no item came in time
    /// ([`crate::Queue::get_timeout`]). Cancel-safe as [`get`](Async::get).
    pub fn get_timeout(&self, timeout: Duration) -> Call<Option<T>> {
        let cmd = self.proxy.get_acked_timeout_cmd(timeout);
        let taken = self.take(cmd);
        Call::new(async move { Ok(taken.await?.map(|got| got.item)) })
    }

    /// Takes an item with a receipt ([`crate::Queue::get_acked`]): the caller acknowledges it
    /// with [`ack`](Async::ack) or puts it back with [`nack`](Async::nack). Cancel-safe as
    /// [`get`](Async::get).
    pub fn get_acked(&self) -> Call<crate::Acked<T>> {
        self.client
            .run_giving_back(self.proxy.get_acked_cmd(), Some(nack(&self.proxy)))
    }

    /// Runs an acked get and acknowledges what it got, without waiting for the answer.
    fn take<R: Received + Send + 'static>(&self, cmd: Cmd<R>) -> Call<R> {
        let got = self.client.run_giving_back(cmd, Some(nack(&self.proxy)));
        let (client, queue) = (self.client.clone(), self.proxy.clone());
        Call::new(async move {
            let got = got.await?;
            if let Some(receipt) = got.receipt() {
                client.send_detached(queue.ack_cmd(receipt));
            }
            Ok(got)
        })
    }
}

/// What an acked get returns: an item with its receipt, or none.
trait Received {
    fn receipt(&self) -> Option<u64>;
}

impl<T> Received for crate::Acked<T> {
    fn receipt(&self) -> Option<u64> {
        Some(self.receipt)
    }
}

impl<T> Received for Option<crate::Acked<T>> {
    fn receipt(&self) -> Option<u64> {
        self.as_ref().map(|got| got.receipt)
    }
}

/// Gives back the item of an acked get nobody will read: `nack` puts it at the head.
fn nack<T>(queue: &crate::Queue<T, Plain>) -> super::GiveBack {
    let id = queue.id();
    Box::new(move |result: &Bytes| {
        let (receipt, _) = rmp_serde::from_slice::<(u64, IgnoredAny)>(result).ok()?;
        let mut args = Args::object(id);
        args.uint(receipt);
        Some(vec![("queue.nack", args)])
    })
}

/// A joinable queue's gets. Its items stay on record until `task_done` (no receipts), so an
/// item that reached a dropped get cannot go back to the head: it is put back at the tail and
/// its get marked done.
impl<T> Async<crate::JoinableQueue<T>>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    /// Takes the item at the front, waiting while the queue is empty
    /// ([`crate::Queue::get`]).
    ///
    /// # Cancel safety
    /// Dropped before it completes, it takes no item: a waiting get is cancelled; an item
    /// already on its way is put back, at the tail of the queue (not the head), and counted
    /// done, so `join` is not kept waiting for it twice.
    pub fn get(&self) -> Call<T> {
        self.client
            .run_giving_back(self.proxy.get_cmd(), Some(put_back(&self.proxy)))
    }

    /// [`Async::get`] waiting at most `timeout`: `None` when no item came in time.
    /// Cancel-safe as [`get`](Async::get).
    pub fn get_timeout(&self, timeout: Duration) -> Call<Option<T>> {
        self.client.run_giving_back(
            self.proxy.get_timeout_cmd(timeout),
            Some(put_back(&self.proxy)),
        )
    }
}

/// Gives back the item of a joinable queue's get nobody will read.
fn put_back<T>(queue: &crate::JoinableQueue<T>) -> super::GiveBack {
    let id = queue.id();
    Box::new(move |item: &Bytes| {
        let mut put = Args::object(id);
        put.raw(item);
        Some(vec![
            ("joinable_queue.put", put),
            ("joinable_queue.task_done", Args::object(id)),
        ])
    })
}
