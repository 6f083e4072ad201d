//! The lifecycle core: parked calls, grants, holdings and deletion, written once for every
//! object whose calls can wait (queue, joinable queue, lock, rlock, semaphore, bounded
//! semaphore, condition, event, barrier).
//!
//! # The model
//! - A **waiter** is a call that could not complete at once. It waits in a FIFO **line** of a
//!   [`Parking`] (an object has one or more lines: a queue's getters, putters and joiners; a
//!   lock's acquirers and each condition's waiters). Its connection holds a [`Parked`] future
//!   for it.
//! - A **grant** ([`Grant`]) is what a waiter is answered, typed until the connection writes it.
//!   After every change to an object the core offers grants to the front of each line, in line
//!   order, until no front waiter can be granted ([`Semantics::offer`]).
//! - A **holding** is something a connection keeps between calls: a lock, semaphore permits,
//!   queue items it got and has not finished (marked done, acknowledged). Objects count them
//!   in a [`HeldBy`]; every connection has a [`Holdings`] record of the
//!   objects it holds something in, from which an entry leaves when the holding ends or the
//!   object is deleted.
//!
//! # Events, each handled here and nowhere else
//! - **expiry**: a waiter's deadline passed: it leaves its line and the object says what it is
//!   answered ([`Semantics::leave`]), or keeps it waiting (a condition waiter that must first
//!   re-acquire its lock).
//! - **cancellation**: the waiter's connection closed, its call was dropped, or its client
//!   sent `cancel` for it (the session aborts the call's task): it leaves its line unanswered,
//!   and a grant that reached it unwritten is given back as an undeliverable one.
//! - **undeliverable grant**: a grant whose connection is gone before it could be written is
//!   given back ([`Semantics::give_back`]) and offered to the next waiter as it was: an
//!   owner-died notice it carried goes on to the next acquirer, and a plain grant stays plain.
//! - **owner death**: a connection closes holding something: the object releases it
//!   ([`Semantics::release_dead`]) and the next acquire is granted with the owner-died notice;
//!   a queue puts the items back at the head, in their order, for the next getter. Only what
//!   was taken *owned* is a holding: an unowned acquire (a bare semaphore acquire, or any
//!   acquire of an object created with `owned` false) is recorded nowhere, and only a release
//!   gives it back, as in Python.
//! - **a close racing a call**: before an object serves a call whose outcome depends on
//!   whether another connection still holds something ([`Parking::settle`]), the close of
//!   every holder that has already left (its client closed the socket, or its task is ending)
//!   is finished first, so the call sees one outcome whichever task the scheduler ran first.
//! - **stop**: when the manager stops, every parking answers its waiters `ShutdownError` and
//!   grants nothing more ([`Parking::stop`]), before any connection's holdings are released.
//! - **deletion**: every call parked through the deleted object is answered with
//!   `UnknownObjectError` at once, its holdings are forgotten (and leave their connections'
//!   records), and any later call that still reaches it fails the same way.
//!
//! Objects supply only their semantics: whether a waiter can be granted now, and what giving a
//! grant back means. They never see a reply channel.
//!
//! # Locking
//! One mutex per [`Parking`] guards the object's state and its lines together, so every race
//! between a grant, an expiry, a cancellation and a close is decided under it. A connection's
//! [`Holdings`] has its own mutex, always taken after (inside) a parking's, never before.

mod grant;
mod holdings;
mod parked;
mod parking;
mod view;

pub use grant::{Grant, Reply, Shape};
#[cfg(feature = "etcd")]
pub(crate) use holdings::Holdable;
pub use holdings::{let_goes, Caller, HeldBy, Holder, Holdings, Owner, SessionId};
#[cfg(feature = "etcd")]
pub(crate) use parked::Waitable;
pub use parked::{blocking_params, timeout_param, Outcome, Park, Parked, Ticket};
pub use parking::{
    deleted, grants_sent, next_object_key, next_waiter_id, shutting_down, Ctx, Leave, Left, LineId,
    ObjectKey, Offer, Parking, Semantics, WaiterId,
};
pub use view::{counted, HeldInfo, View, WaiterInfo};

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod toy;
