//! Typed proxies: local handles on shared objects that live in the manager.
//!
//! A proxy is a [`Client`](crate::Client) plus an object id, so it is cheap to clone and can be
//! sent to any thread. Every method is one call to the manager (one round trip), atomic there;
//! every method `foo` has a twin `foo_cmd` returning the same call as a [`Cmd`](crate::Cmd) for
//! a [`Pipeline`](crate::Pipeline).
//!
//! # Values
//!
//! Keys and values are encoded with `rmp_serde`'s defaults: integers and floats as MessagePack
//! numbers, `String` as str, sequences and tuples as arrays, maps as maps, and **structs as
//! arrays of their fields** (compact, positional). Another language reads a struct as a list;
//! if it must see field names, serialize a map instead. `Vec<u8>` is an array of integers
//! unless wrapped in `serde_bytes::ByteBuf` (or marked `#[serde(with = "serde_bytes")]`),
//! which makes it bin, as Python's `bytes` is.
//!
//! # Values of another type
//!
//! A shared object holds whatever its writers put in it, in any language: a Python program
//! may put a `str` in a queue that a Rust consumer reads as `Queue<i64>`. A reply that does not
//! decode as the proxy's type fails with [`Error::Decode`](crate::Error::Decode), whose
//! [`DecodeError`](crate::DecodeError) keeps the whole result undecoded
//! ([`raw`](crate::DecodeError::raw)) and names the call, the object (kind and id), the key or
//! index, the bad entry of a bulk read, the Rust type expected and the MessagePack type found.
//! Nothing is lost:
//!
//! - a read (`get`, `getitem`, `items`, `copy`, ...) changed nothing: read again with another
//!   type, or with a raw variant ([`Dict::items_raw`], [`Dict::values_raw`],
//!   [`List::copy_raw`], ...) that returns every entry undecoded;
//! - a queue get took the item: it is in the error, and only there
//!   ([`applied`](crate::DecodeError::applied) is true); the items behind it stay in the queue
//!   for the next getter. An acknowledged get's item was not acknowledged: `nack` its receipt
//!   (the first element of the raw `[receipt, item]`) to put it back;
//! - a read-modify-write (`Value::fetch_add`, `compare_and_swap`, `Dict::pop`, `List::pop`,
//!   ...) was carried out before its result failed to decode: the error says so, and the
//!   result is in it.
//!
//! # Shared objects inside values
//!
//! A proxy serializes as a reference to its object (MessagePack ext type 1, see `PROTOCOL.md`)
//! and deserializes back into a live proxy, so a `Dict<String, List<i64>>` stores shared lists
//! and hands back proxies that modify them in place, like nested proxies in Python. Decoding a
//! proxy needs to know which client to attach it to: replies are decoded with their client set
//! as the thread's current one (see [`Client::decode`](crate::Client::decode)). [`SharedRef`]
//! reads and writes a reference of any kind.
//!
//! # Blocking objects
//!
//! [`Queue`], [`JoinableQueue`], [`Lock`], [`RLock`], [`Semaphore`], [`BoundedSemaphore`],
//! [`Event`], [`Condition`] and [`Barrier`] have calls that wait. Each is still one request:
//! the manager parks it in the object's FIFO line of waiters and answers when it completes or
//! its timeout passes (the timeout runs on the manager). The client never polls and holds no
//! lock of its own while it waits, so other threads keep calling through the same connection.
//! Locks, semaphores and conditions hand out RAII guards; what a process held when it died is
//! released by the manager, and the next acquirer is told ([`Acquired::OwnerDied`]). A
//! [`Mutex`] guards a value and is poisoned for every later locker when its holder dies.

mod array;
mod barrier;
mod condition;
pub(crate) mod context;
mod dict;
mod event;
mod list;
mod lock;
mod mutex;
mod namespace;
mod queue;
mod semaphore;
mod set;
mod slicing;
mod value;
mod wait;

use std::fmt;

use agora_proto::ObjectRef;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use array::Array;
pub use barrier::Barrier;
#[cfg(feature = "tokio")]
pub(crate) use condition::{notify_cmd, owner_cmd, wait_cmd};
pub use condition::{Condition, ConditionGuard};
pub use dict::Dict;
pub use event::Event;
pub use list::List;
#[cfg(feature = "tokio")]
pub(crate) use lock::acquire_cmd;
pub use lock::{Lock, LockGuard, OwnedLockGuard, RLock, RLockGuard};
pub use mutex::{Mutex, MutexGuard};
pub use namespace::Namespace;
pub use queue::{Acked, Joinable, JoinableQueue, Plain, Queue, QueueBatches, QueueIter, QueueKind};
#[cfg(feature = "tokio")]
pub(crate) use semaphore::semaphore_acquire_cmd;
pub use semaphore::{BoundedSemaphore, OwnedSemaphoreGuard, Permits, Semaphore, SemaphoreGuard};
pub use set::{Set, SetOperand};
pub use slicing::Slice;
pub use value::{Number, Value};
pub use wait::Acquired;
#[cfg(feature = "tokio")]
pub(crate) use wait::{fresh_owner, Held};

/// The name rmp_serde gives the newtype struct it writes as a MessagePack ext.
const EXT: &str = rmp_serde::MSGPACK_EXT_STRUCT_NAME;

/// A reference to a shared object of any kind, as stored in values: MessagePack ext type 1.
///
/// Use it where the kind is not known in advance, then turn it into a proxy with the proxy's
/// `from_object_ref`.
///
/// It is not a proxy and holds nothing by itself: the reference the manager counted when it
/// sent it stays with the connection until a proxy of the object made in this process is
/// dropped (or the client closes), so that a proxy made from it later still finds the object.
/// Decoding references into proxies rather than `SharedRef`s lets them go as soon as they
/// are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SharedRef(pub ObjectRef);

impl Serialize for SharedRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let data = self.0.ext_data();
        s.serialize_newtype_struct(
            EXT,
            &(
                agora_proto::objref::EXT_TYPE,
                serde_bytes::Bytes::new(&data),
            ),
        )
    }
}

impl<'de> Deserialize<'de> for SharedRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SharedRef, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename = "_ExtStruct")]
        struct Ext((i8, serde_bytes::ByteBuf));

        let Ext((tag, data)) = Ext::deserialize(d)?;
        if tag != agora_proto::objref::EXT_TYPE {
            return Err(D::Error::custom(format!(
                "expected a shared object reference (ext type 1), got ext type {tag}"
            )));
        }
        ObjectRef::from_ext_data(&data)
            .map(SharedRef)
            .ok_or_else(|| {
                D::Error::custom("malformed shared object reference: ext data is not [kind, id]")
            })
    }
}

impl From<ObjectRef> for SharedRef {
    fn from(r: ObjectRef) -> SharedRef {
        SharedRef(r)
    }
}

impl fmt::Display for SharedRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0.kind, self.0.id)
    }
}

/// The parts every proxy type shares: identity, the reference it holds (made by `from_id`,
/// which clones and decoding go through, and given back by `Drop`), tokens, serde.
///
/// `proxy_common!(Dict[K, V], "dict")` for a type whose kind is fixed; a type generic over its
/// kind gives its type parameters' bounds, the kind as a constant expression and the name its
/// `Debug` shows: `proxy_common!(Queue[T, K: QueueKind], K::WIRE.kind, K::WIRE.name)`.
macro_rules! proxy_common {
    ($name:ident [$($param:ident),*], $kind:literal) => {
        $crate::proxies::proxy_common!($name [$($param),*], $kind, stringify!($name));
    };
    ($name:ident [$($param:ident $(: $bound:path)?),*], $kind:expr, $label:expr) => {
        impl<$($param $(: $bound)?),*> $name<$($param),*> {
            /// The wire name of this kind of object.
            pub const KIND: &'static str = $kind;

            /// A proxy for the existing object `id` (not checked until the first call).
            ///
            /// The proxy joins the others of `id` in this process: while any of them lives,
            /// what this connection received of the object (a `create` of it, a reference to
            /// it in a reply) stays held, and it is given back when the last one drops. A
            /// proxy of an id this connection never received holds nothing in the manager:
            /// the object lives as long as its other holders do.
            ///
            /// The proxy belongs to the manager run `client` is connected to now: should the
            /// manager restart, its calls fail with [`Error::OtherRun`](crate::Error::OtherRun)
            /// rather than reach the object that has its id in the new run.
            pub fn from_id(client: &$crate::Client, id: u64) -> Self {
                Self::from_target(client, client.target(id))
            }

            /// A proxy for the object `target` (the run given, not the client's current one:
            /// a reply's references are of the run that sent it).
            pub(crate) fn from_target(client: &$crate::Client, target: $crate::command::Target) -> Self {
                client.proxy_made(target);
                $name {
                    client: client.clone(),
                    id: target,
                    marker: std::marker::PhantomData,
                }
            }

            /// The object's id in its manager.
            pub fn id(&self) -> u64 {
                self.id.id
            }

            /// The object and its run, what commands are made for.
            #[allow(dead_code)]
            pub(crate) fn target(&self) -> $crate::command::Target {
                self.id
            }

            /// The client this proxy calls through.
            pub fn client(&self) -> &$crate::Client {
                &self.client
            }

            /// A reference to the object, as stored inside values.
            pub fn object_ref(&self) -> agora_proto::ObjectRef {
                agora_proto::ObjectRef::new(Self::KIND, self.id.id)
            }

            /// A proxy for the referenced object. Fails with
            /// [`Error::WrongKind`](crate::Error::WrongKind) when the reference is to another
            /// kind of object.
            pub fn from_object_ref(
                client: &$crate::Client,
                r: &agora_proto::ObjectRef,
            ) -> $crate::Result<Self> {
                Self::from_object_ref_in(client, client.target(r.id), r)
            }

            /// [`from_object_ref`](Self::from_object_ref) for a reference of the run of
            /// `target`, whose id is `r`'s.
            pub(crate) fn from_object_ref_in(
                client: &$crate::Client,
                target: $crate::command::Target,
                r: &agora_proto::ObjectRef,
            ) -> $crate::Result<Self> {
                if r.kind != Self::KIND {
                    return Err($crate::Error::WrongKind {
                        id: r.id,
                        expected: Self::KIND,
                        found: r.kind.clone(),
                    });
                }
                Ok(Self::from_target(client, target))
            }

            /// The object as a [`Token`](crate::Token) string, to hand to another process
            /// (`agora:2:<kind>:<id>@<address>#<run>`; it carries no authkey).
            ///
            /// One round trip: the object is first `export`ed, which keeps it alive for the
            /// receiver until it redeems the token with `from_token`, even if every proxy of
            /// it here is dropped in between, for up to the manager's `--handoff-seconds`
            /// (300 by default). Take one token per receiver. Fails with
            /// `UnknownObjectError` when the object is gone.
            pub fn token(&self) -> $crate::Result<String> {
                let run = self.client.export(self.id)?;
                Ok($crate::Token {
                    kind: Self::KIND.to_owned(),
                    id: self.id.id,
                    address: self.client.address().clone(),
                    run,
                }
                .to_string())
            }

            /// A proxy for the object a token names, called through `client`. Fails when the
            /// token is malformed (a token of an older version among others) or names another
            /// kind of object, and with [`Error::OtherRun`](crate::Error::OtherRun), which
            /// counts as `UnknownObjectError`, when the token's run is not the run of
            /// `client`'s manager: the manager was restarted since the token was taken (its
            /// object is gone, and its id names another object now), or `client` is connected
            /// to another manager. The addresses need not be equal: one manager can listen on
            /// several.
            ///
            /// One round trip: `client`'s connection `adopt`s the object, taking over the
            /// handoff [`token`](Self::token) made, so the proxy holds it from now on. Fails
            /// with `UnknownObjectError` at once when the object is gone (deleted, or its
            /// handoff ran out with nothing else holding it).
            pub fn from_token(client: &$crate::Client, token: &str) -> $crate::Result<Self> {
                let token: $crate::Token = token.parse()?;
                token.expect_kind(Self::KIND)?;
                let target = client.adopt(&token)?;
                Ok(Self::from_target(client, target))
            }
        }

        /// The last proxy of an unnamed object to drop gives the object back to the manager,
        /// which frees it once nothing else holds it (`PROTOCOL.md`, 3.2).
        impl<$($param),*> Drop for $name<$($param),*> {
            fn drop(&mut self) {
                self.client.proxy_dropped(self.id);
            }
        }

        impl<$($param $(: $bound)?),*> Clone for $name<$($param),*> {
            fn clone(&self) -> Self {
                Self::from_target(&self.client, self.id)
            }
        }

        impl<$($param $(: $bound)?),*> std::fmt::Debug for $name<$($param),*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({}@{})", $label, self.id.id, self.client.address())
            }
        }

        /// Two proxies are equal when they name the same object of the same manager run and
        /// address.
        impl<$($param $(: $bound)?),*> PartialEq for $name<$($param),*> {
            fn eq(&self, other: &Self) -> bool {
                self.id == other.id && self.client.address() == other.client.address()
            }
        }

        impl<$($param $(: $bound)?),*> Eq for $name<$($param),*> {}

        /// Serializes as a reference to the shared object (ext type 1).
        ///
        /// Fails for a proxy of another manager run than its client's current one: its id
        /// names another object (or none) there.
        impl<$($param $(: $bound)?),*> serde::Serialize for $name<$($param),*> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::Error as _;
                self.client.check_run(self.id).map_err(S::Error::custom)?;
                $crate::proxies::SharedRef(self.object_ref()).serialize(s)
            }
        }

        /// Deserializes a reference into a proxy attached to the client whose reply is being
        /// decoded.
        impl<'de, $($param $(: $bound)?),*> serde::Deserialize<'de> for $name<$($param),*> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use serde::de::Error as _;
                let r = $crate::proxies::SharedRef::deserialize(d)?.0;
                let (client, run) = $crate::proxies::context::current()
                    .ok_or_else(|| D::Error::custom($crate::proxies::context::NO_CLIENT))?;
                let target = $crate::command::Target { id: r.id, run };
                Self::from_object_ref_in(&client, target, &r).map_err(D::Error::custom)
            }
        }
    };
}

pub(crate) use proxy_common;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_ref_is_the_documented_ext() {
        let r = SharedRef(ObjectRef::new("list", 7));
        let bytes = rmp_serde::to_vec(&r).unwrap();
        assert_eq!(bytes, ObjectRef::new("list", 7).encode());
        let back: SharedRef = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, r);
        // Inside a container too.
        let v = vec![Some(r.clone()), None];
        let back: Vec<Option<SharedRef>> =
            rmp_serde::from_slice(&rmp_serde::to_vec(&v).unwrap()).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn other_ext_types_and_non_ext_values_are_rejected() {
        let other = [0xd4, 0x05, 0x00]; // fixext1, type 5
        assert!(rmp_serde::from_slice::<SharedRef>(&other).is_err());
        assert!(rmp_serde::from_slice::<SharedRef>(&[0x07]).is_err());
    }
}
