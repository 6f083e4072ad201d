//! [`Dict`]: a shared, insertion-ordered map.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::client::Client;
use crate::command::Target;
use crate::command::{decode, Args, Cmd};
use crate::error::Result;

/// A shared dict, ordered by insertion like Python's, with keys of type `K` and values of type
/// `V`.
///
/// Keys are compared by value on the manager (`1` and `1.0` are the same key; `true` and `1`
/// are not, see `PROTOCOL.md`). Methods that take a key accept any borrowed form of `K`
/// (`&str` for `String` keys).
///
/// Methods map one to one to the wire methods: `get` → `dict.getitem` (`KeyError` becomes
/// `None`), `get_or` → `dict.get`, `set` → `dict.setitem`, and so on. Each has a `*_cmd` twin
/// for pipelines.
///
/// ```no_run
/// # let client = agora_client::Client::from_env()?;
/// let d = client.dict::<String, i64>()?;
/// d.set("a", &1)?;
/// assert_eq!(d.get("a")?, Some(1));
/// assert_eq!(d.get_or("b", &0)?, 0);
/// assert_eq!(d.items()?, vec![("a".to_string(), 1)]);
/// # Ok::<(), agora_client::Error>(())
/// ```
pub struct Dict<K, V> {
    client: Client,
    id: Target,
    marker: PhantomData<fn() -> (K, V)>,
}

super::proxy_common!(Dict[K, V], "dict");

impl Client {
    /// Creates a new, empty shared dict.
    pub fn dict<K, V>(&self) -> Result<Dict<K, V>> {
        let mut args = Args::default();
        args.str("dict").opt_str(None);
        Ok(Dict::from_id(self, self.create_with(args)?))
    }

    /// The dict called `name`, created empty if there is none (get-or-create: every process
    /// asking for the name gets the same dict). Fails with `TypeError` if the name belongs to
    /// another kind of object.
    pub fn dict_named<K, V>(&self, name: &str) -> Result<Dict<K, V>> {
        let mut args = Args::default();
        args.str("dict").str(name);
        Ok(Dict::from_id(self, self.create_with(args)?))
    }
}

impl<K, V> Dict<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// The value at `key`, `None` when there is none.
    pub fn get<Q>(&self, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.client.run(self.get_cmd(key))
    }

    /// [`Dict::get`] as a command (`dict.getitem`).
    pub fn get_cmd<Q>(&self, key: &Q) -> Cmd<Option<V>>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        Cmd::object(self.id, "dict.getitem", decode::unless_key_error, |a| {
            a.value(key).map(drop)
        })
    }

    /// The value at `key`, or `default` when there is none.
    pub fn get_or<Q, W>(&self, key: &Q, default: &W) -> Result<V>
    where
        K: Borrow<Q>,
        V: Borrow<W>,
        Q: Serialize + ?Sized,
        W: Serialize + ?Sized,
    {
        self.client.run(self.get_or_cmd(key, default))
    }

    /// [`Dict::get_or`] as a command (`dict.get`).
    pub fn get_or_cmd<Q, W>(&self, key: &Q, default: &W) -> Cmd<V>
    where
        K: Borrow<Q>,
        V: Borrow<W>,
        Q: Serialize + ?Sized,
        W: Serialize + ?Sized,
    {
        Cmd::object(self.id, "dict.get", decode::value, |a| {
            a.value(key)?.value(default).map(drop)
        })
    }

    /// The value at `key`; fails with `KeyError` when there is none, as `d[key]` in Python.
    pub fn getitem<Q>(&self, key: &Q) -> Result<V>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.client.run(self.getitem_cmd(key))
    }

    /// [`Dict::getitem`] as a command (`dict.getitem`).
    pub fn getitem_cmd<Q>(&self, key: &Q) -> Cmd<V>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        Cmd::object(self.id, "dict.getitem", decode::value, |a| {
            a.value(key).map(drop)
        })
    }

    /// Sets `key` to `value`.
    pub fn set<Q, W>(&self, key: &Q, value: &W) -> Result<()>
    where
        K: Borrow<Q>,
        V: Borrow<W>,
        Q: Serialize + ?Sized,
        W: Serialize + ?Sized,
    {
        self.client.run(self.set_cmd(key, value))
    }

    /// [`Dict::set`] as a command (`dict.setitem`).
    pub fn set_cmd<Q, W>(&self, key: &Q, value: &W) -> Cmd<()>
    where
        K: Borrow<Q>,
        V: Borrow<W>,
        Q: Serialize + ?Sized,
        W: Serialize + ?Sized,
    {
        Cmd::object(self.id, "dict.setitem", decode::unit, |a| {
            a.value(key)?.value(value).map(drop)
        })
    }

    /// Removes the entry at `key`, as `del d[key]` in Python; returns whether there was one
    /// (Python's `KeyError` is `false`). [`pop`](Dict::pop) removes it and returns the value.
    pub fn del<Q>(&self, key: &Q) -> Result<bool>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.client.run(self.del_cmd(key))
    }

    /// [`Dict::del`] as a command (`dict.delitem`).
    pub fn del_cmd<Q>(&self, key: &Q) -> Cmd<bool>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        Cmd::object(self.id, "dict.delitem", decode::found_key, |a| {
            a.value(key).map(drop)
        })
    }

    /// Removes the entry at `key` and returns its value, `None` when there was none (Python's
    /// `d.pop(key)` raising `KeyError`).
    pub fn pop<Q>(&self, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.client.run(self.pop_cmd(key))
    }

    /// [`Dict::pop`] as a command (`dict.pop` without default).
    pub fn pop_cmd<Q>(&self, key: &Q) -> Cmd<Option<V>>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        Cmd::object(self.id, "dict.pop", decode::unless_key_error, |a| {
            a.value(key).map(drop)
        })
    }

    /// Removes `key` and returns its value, or `default` when it was not there.
    pub fn pop_or<Q, W>(&self, key: &Q, default: &W) -> Result<V>
    where
        K: Borrow<Q>,
        V: Borrow<W>,
        Q: Serialize + ?Sized,
        W: Serialize + ?Sized,
    {
        self.client.run(self.pop_or_cmd(key, default))
    }

    /// [`Dict::pop_or`] as a command (`dict.pop` with default).
    pub fn pop_or_cmd<Q, W>(&self, key: &Q, default: &W) -> Cmd<V>
    where
        K: Borrow<Q>,
        V: Borrow<W>,
        Q: Serialize + ?Sized,
        W: Serialize + ?Sized,
    {
        Cmd::object(self.id, "dict.pop", decode::value, |a| {
            a.value(key)?.value(default).map(drop)
        })
    }

    /// Removes and returns the last inserted entry, `None` when the dict is empty.
    pub fn popitem(&self) -> Result<Option<(K, V)>> {
        self.client.run(self.popitem_cmd())
    }

    /// [`Dict::popitem`] as a command (`dict.popitem`).
    pub fn popitem_cmd(&self) -> Cmd<Option<(K, V)>> {
        Cmd::object(
            self.id,
            "dict.popitem",
            decode::unless_key_error,
            |_| Ok(()),
        )
    }

    /// The value at `key`, after setting it to `default` if there was none.
    pub fn setdefault<Q, W>(&self, key: &Q, default: &W) -> Result<V>
    where
        K: Borrow<Q>,
        V: Borrow<W>,
        Q: Serialize + ?Sized,
        W: Serialize + ?Sized,
    {
        self.client.run(self.setdefault_cmd(key, default))
    }

    /// [`Dict::setdefault`] as a command (`dict.setdefault`).
    pub fn setdefault_cmd<Q, W>(&self, key: &Q, default: &W) -> Cmd<V>
    where
        K: Borrow<Q>,
        V: Borrow<W>,
        Q: Serialize + ?Sized,
        W: Serialize + ?Sized,
    {
        Cmd::object(self.id, "dict.setdefault", decode::value, |a| {
            a.value(key)?.value(default).map(drop)
        })
    }

    /// True when `key` is in the dict.
    pub fn contains<Q>(&self, key: &Q) -> Result<bool>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.client.run(self.contains_cmd(key))
    }

    /// [`Dict::contains`] as a command (`dict.contains`).
    pub fn contains_cmd<Q>(&self, key: &Q) -> Cmd<bool>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        Cmd::object(self.id, "dict.contains", decode::value, |a| {
            a.value(key).map(drop)
        })
    }

    /// The number of entries.
    pub fn len(&self) -> Result<usize> {
        self.client.run(self.len_cmd())
    }

    /// [`Dict::len`] as a command (`dict.len`).
    pub fn len_cmd(&self) -> Cmd<usize> {
        Cmd::object(self.id, "dict.len", decode::value, |_| Ok(()))
    }

    /// True when the dict has no entries.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The keys, in insertion order (a snapshot).
    pub fn keys(&self) -> Result<Vec<K>> {
        self.client.run(self.keys_cmd())
    }

    /// [`Dict::keys`] as a command (`dict.keys`).
    pub fn keys_cmd(&self) -> Cmd<Vec<K>> {
        Cmd::object(self.id, "dict.keys", decode::seq, |_| Ok(()))
    }

    /// The values, in insertion order (a snapshot).
    pub fn values(&self) -> Result<Vec<V>> {
        self.client.run(self.values_cmd())
    }

    /// [`Dict::values`] as a command (`dict.values`).
    pub fn values_cmd(&self) -> Cmd<Vec<V>> {
        Cmd::object(self.id, "dict.values", decode::seq, |_| Ok(()))
    }

    /// The entries, in insertion order (a snapshot).
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        self.client.run(self.items_cmd())
    }

    /// [`Dict::items`] as a command (`dict.items`).
    pub fn items_cmd(&self) -> Cmd<Vec<(K, V)>> {
        Cmd::object(self.id, "dict.items", decode::pairs, |_| Ok(()))
    }

    /// The keys, each undecoded (one MessagePack value): for a dict whose keys are not all
    /// `K`. Decode each with [`Client::decode`].
    pub fn keys_raw(&self) -> Result<Vec<Bytes>> {
        self.client.run(self.keys_raw_cmd())
    }

    /// [`Dict::keys_raw`] as a command (`dict.keys`).
    pub fn keys_raw_cmd(&self) -> Cmd<Vec<Bytes>> {
        Cmd::object(self.id, "dict.keys", decode::raw_seq, |_| Ok(()))
    }

    /// The values, each undecoded (one MessagePack value): for a dict whose values are not
    /// all `V`. Decode each with [`Client::decode`].
    pub fn values_raw(&self) -> Result<Vec<Bytes>> {
        self.client.run(self.values_raw_cmd())
    }

    /// [`Dict::values_raw`] as a command (`dict.values`).
    pub fn values_raw_cmd(&self) -> Cmd<Vec<Bytes>> {
        Cmd::object(self.id, "dict.values", decode::raw_seq, |_| Ok(()))
    }

    /// The entries, each key and value undecoded (one MessagePack value each): for a dict
    /// whose entries are not all `(K, V)`, when [`items`](Dict::items) fails with
    /// [`Error::Decode`](crate::Error::Decode). Decode each with [`Client::decode`].
    pub fn items_raw(&self) -> Result<Vec<(Bytes, Bytes)>> {
        self.client.run(self.items_raw_cmd())
    }

    /// [`Dict::items_raw`] as a command (`dict.items`).
    pub fn items_raw_cmd(&self) -> Cmd<Vec<(Bytes, Bytes)>> {
        Cmd::object(self.id, "dict.items", decode::raw_pairs, |_| Ok(()))
    }

    /// The whole dict at one instant, each key and value undecoded, as
    /// [`items_raw`](Dict::items_raw).
    pub fn copy_raw(&self) -> Result<Vec<(Bytes, Bytes)>> {
        self.client.run(self.copy_raw_cmd())
    }

    /// [`Dict::copy_raw`] as a command (`dict.copy`).
    pub fn copy_raw_cmd(&self) -> Cmd<Vec<(Bytes, Bytes)>> {
        Cmd::object(self.id, "dict.copy", decode::raw_entries, |_| Ok(()))
    }

    /// Sets every entry of `entries`, in order: a `HashMap` (owned or borrowed), a `Vec` of
    /// pairs, an iterator of pairs.
    pub fn update<I, Q, W>(&self, entries: I) -> Result<()>
    where
        I: IntoIterator<Item = (Q, W)>,
        Q: Borrow<K>,
        W: Borrow<V>,
    {
        self.client.run(self.update_cmd(entries))
    }

    /// [`Dict::update`] as a command (`dict.update` with an array of pairs).
    pub fn update_cmd<I, Q, W>(&self, entries: I) -> Cmd<()>
    where
        I: IntoIterator<Item = (Q, W)>,
        Q: Borrow<K>,
        W: Borrow<V>,
    {
        Cmd::object(self.id, "dict.update", decode::unit, |a| {
            let pairs = entries.into_iter();
            a.seq(pairs.map(|(k, v)| Pair(k, v, PhantomData))).map(drop)
        })
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<()> {
        self.client.run(self.clear_cmd())
    }

    /// [`Dict::clear`] as a command (`dict.clear`).
    pub fn clear_cmd(&self) -> Cmd<()> {
        Cmd::object(self.id, "dict.clear", decode::unit, |_| Ok(()))
    }

    /// The whole dict at one instant, as pairs in insertion order (collect it into a
    /// `HashMap` if you like).
    pub fn copy(&self) -> Result<Vec<(K, V)>> {
        self.client.run(self.copy_cmd())
    }

    /// [`Dict::copy`] as a command (`dict.copy`).
    pub fn copy_cmd(&self) -> Cmd<Vec<(K, V)>> {
        Cmd::object(self.id, "dict.copy", decode_entries, |_| Ok(()))
    }
}

/// A borrowed key and value, serialized as the pair `[key, value]`.
struct Pair<Q, W, K, V>(Q, W, PhantomData<fn() -> (K, V)>);

impl<Q: Borrow<K>, W: Borrow<V>, K: Serialize, V: Serialize> Serialize for Pair<Q, W, K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (self.0.borrow(), self.1.borrow()).serialize(s)
    }
}

/// Decodes a map into its entries, keeping their order.
pub(crate) fn decode_entries<K: DeserializeOwned, V: DeserializeOwned>(
    r: crate::command::Reply,
) -> Result<Vec<(K, V)>> {
    let raw = r?;
    match rmp_serde::from_slice::<Entries<K, V>>(&raw) {
        Ok(entries) => Ok(entries.0),
        Err(e) => Err(decode::locate_in_map::<K, V>(&raw, e)),
    }
}

/// The entries of a map, in order.
struct Entries<K, V>(Vec<(K, V)>);

impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for Entries<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct EntriesVisitor<K, V>(PhantomData<fn() -> (K, V)>);

        impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<K, V> {
            type Value = Entries<K, V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                // The size hint comes from the wire: don't trust it for the allocation.
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }

        d.deserialize_map(EntriesVisitor(PhantomData))
    }
}
