//! A blocking client for the agora manager: typed proxies for shared dicts, lists, sets,
//! values, arrays and namespaces, and for queues, locks, semaphores, events, conditions,
//! barriers and mutexes, that live in a manager process, as with Python's
//! `multiprocessing.Manager`.
//!
//! ```no_run
//! use agora_client::Client;
//!
//! // Worker processes find their manager in AGORA_ADDRESS and AGORA_AUTHKEY.
//! let client = Client::from_env()?;
//! let results = client.dict_named::<String, Vec<f64>>("results")?;
//! results.set("run-1", &vec![0.5, 0.25])?;
//!
//! // Many calls, one round trip.
//! let log = client.list_named::<String>("log")?;
//! let mut p = client.pipeline();
//! for i in 0..100 {
//!     p.add(log.append_cmd(&format!("step {i}")));
//! }
//! p.execute()?.check()?;
//! # Ok::<(), agora_client::Error>(())
//! ```
//!
//! # Layout
//!
//! - [`address`](Address): where a manager listens, `unix:/path`, `tcp:host:port` or
//!   `tls:host:port`; [`Addresses`], a list of managers serving the same objects, for a
//!   client that moves to the next when one fails.
//! - `connection`: one socket, authenticated with `hello`/`auth`, shared by the threads of a
//!   process. Calls are multiplexed by msgid with a leader/follower scheme: no background
//!   thread; whichever waiting caller finds the socket unread reads it for everybody.
//! - `spin`: the reading thread polls the socket for a reply for up to `AGORA_SPIN_US`
//!   microseconds (default 50; 0 never polls; see [`spin_budget`]) before it sleeps in `read`,
//!   since being woken costs more than a call on many machines; polls that find nothing back
//!   off exponentially. The whole polling policy is in that one module, but for the budget's
//!   rules (the variable, its default and cap), which are `agora_proto::spin`'s, shared with
//!   the manager.
//! - `slot`: the current connection, swapped lock-free for a new one in a forked child.
//! - `refs`: the reference table of each client: what its connection holds of each object,
//!   how many proxies of it live, and the `decref`s due; see [Lifetime](#lifetime).
//! - [`client`](Client): the [`Client`] handle, registry methods and the raw call API.
//! - [`command`](Cmd): [`Cmd`], one call encoded and typed, to run now or later.
//! - [`pipeline`](Pipeline): many commands in one write; typed [`Handle`]s into the [`Replies`].
//! - [`proxies`]: [`Dict`], [`List`], [`Set`], [`Value`], [`Array`], [`Namespace`], and the
//!   serde glue that stores a proxy inside a value as a reference and decodes it back into a
//!   live proxy;
//!   the blocking objects [`Queue`], [`JoinableQueue`], [`Lock`], [`RLock`], [`Semaphore`],
//!   [`BoundedSemaphore`], [`Event`], [`Condition`], [`Barrier`], with RAII guards.
//! - `aio` (feature `tokio`): the async client, whose proxies run the same [`Cmd`]s on one
//!   connection shared by every task, with cancellation-safe waits and async guards.
//! - `atfork`: a forked child gets `/dev/null` in place of this process's manager sockets, so
//!   that it never keeps the parent's session (and the locks it holds) alive; the reference
//!   tables are locked across the fork, so the child finds them whole.
//! - [`token`](Token): a proxy written as a string for another process.
//! - `run`: [`ManagerRun`], which run of a manager a client talks to, so that a proxy, token
//!   or pickle of a manager that was restarted never reaches an object of the new run.
//! - [`error`](Error): one error type, separating transport, authentication, the manager's own
//!   errors ([`Error::Remote`], with names like `KeyError`) and serde failures.
//!
//! # The path of a call
//!
//! `list.append(&x)` builds a [`Cmd`] (`list.append_cmd(&x)`: the params `[id, x]` encoded with
//! `rmp_serde`), and [`Client::run`] sends it: the client checks the process id (a forked child
//! reconnects), registers a msgid, writes `[0, msgid, "list.append", params]` in one write, and
//! waits. Its thread reads the socket unless another thread already does; responses are
//! matched by msgid and handed to their callers. The reply's result is decoded with
//! `rmp_serde`, with the client set as the thread's current one so that object references in
//! it become proxies; an error reply becomes [`Error::Remote`].
//!
//! # Lifetime
//!
//! An unnamed object lives while something holds it, as in Python's Manager (`PROTOCOL.md`,
//! 3.2): a connection with proxies of it, a reference to it stored in another live object, or
//! a handoff to another process. When the last proxy of an object in a process is dropped,
//! the client gives back what its connection received of it, and the manager frees it if
//! nothing else holds it. Named objects live until deleted, whatever holds them.
//!
//! ```no_run
//! # let client = agora_client::Client::from_env()?;
//! let scratch = client.list::<i64>()?; // unnamed: lives while a proxy of it does
//! let copy = scratch.clone();
//! drop(scratch);
//! copy.append(&1)?; // still alive: a clone holds it
//! drop(copy); // gone: the manager frees it
//! let kept = client.list_named::<i64>("log")?; // named: lives until deleted
//! # Ok::<(), agora_client::Error>(())
//! ```
//!
//! - **What holds.** Every proxy value holds its object: those made by `from_id`, clones,
//!   and those decoded from replies (a `Dict<String, List<i64>>`'s values). A reply being
//!   decoded, and a pipeline's [`Replies`] while they live, hold the objects they reference
//!   until their proxies are made. A bare id or a [`SharedRef`] holds nothing by itself: the
//!   connection keeps what it received of that object (so the id stays valid) until a proxy
//!   made of it is dropped, or the client closes.
//! - **No round trip.** Dropping the last proxy costs no call: the `decref` notification
//!   goes out in the same write as the connection's next request, or, when no call is in
//!   flight, is written at once (a write, no reply). If calls are in flight, it goes with the
//!   next request or when the last of them completes, whichever is first: an idle process
//!   keeps no dropped object alive.
//! - **Tokens.** [`token`](Dict::token) exports the object (a handoff), so it outlives the
//!   proxy it came from until the receiver's [`from_token`](Dict::from_token) adopts it, or
//!   the manager's `--handoff-seconds` pass.
//! - **Fork.** A forked child's proxies hold nothing until its own connection adopts their
//!   objects, which it does when the connection opens (the child's first call).
//!   `agora::Process::spawn` calls [`export_for_fork`] before forking, so the parent may drop
//!   its proxies at once. A raw `libc::fork` without it leaves a race: an object whose last
//!   parent proxy is dropped before the child's first call is freed, and the child's proxies
//!   of it get `UnknownObjectError`. Call [`export_for_fork`] before such a fork.
//! - [`Client::objects`] reports each object's `holders`, to tell a leak from a live object.
//!
//! # Naming
//!
//! Proxy methods follow Rust's naming but map one to one to the wire methods of `PROTOCOL.md`;
//! each method's documentation names its wire method. Every method `foo` has a twin `foo_cmd`
//! for pipelines. A few rules hold for every proxy:
//!
//! - **Absent is a value.** Lookups that Python answers with `KeyError`, `IndexError` or
//!   `AttributeError` return an `Option` (`get`, `pop`, `pop_at`) or a `bool`; the `getitem`
//!   methods keep the error.
//! - **Removing an entry is `del`**, as Python's `del d[k]` statement: [`Dict::del`],
//!   [`List::del`], [`Namespace::del`] and [`List::del_slice`] return whether there was
//!   something to remove. Removing an entry *and returning it* is `pop` ([`Dict::pop`],
//!   [`List::pop_at`]); [`List::remove`] is Python's remove-by-value. [`Client::delete`] is a
//!   different thing: it deletes a whole object from the manager.
//! - **Yes/no questions start with `is_`**: [`Lock::is_locked`], [`Event::is_set`],
//!   [`Queue::is_closed`], [`Barrier::is_broken`], [`LockGuard::is_owner_dead`], ...
//! - **Slices are [`Slice`]s**, made from Rust ranges (`1..3`, `-2..`, `..`) with an optional
//!   [`step_by`](Slice::step_by).
//!
//! # Timeouts
//!
//! Every call that may wait (a queue's put and get, an acquire, a wait, a join) comes in up to
//! three forms with one rule for their results. If `foo(..)` returns `Result<R>`:
//!
//! - `foo(..)` waits as long as it takes and returns `R`;
//! - `foo_timeout(.., timeout)` waits at most `timeout` (on the manager) and returns
//!   `Result<Option<R>>`: `Some` with what `foo` would have returned, or `None` when the
//!   timeout passed before the call did anything (no item taken or put, no lock held, the
//!   event not set, the work not done);
//! - `try_foo(..)` does not wait at all and returns the same `Result<Option<R>>`: `None` when
//!   it would have had to wait.
//!
//! So [`Lock::acquire_timeout`] gives `Option<LockGuard>`, [`Queue::get_timeout`]
//! `Option<T>`, [`Queue::put_timeout`], [`Event::wait_timeout`] and
//! [`Queue::join_timeout`] `Option<()>`, [`Barrier::wait_timeout`] `Option<usize>`. Batch
//! calls that did part of their work say how much inside the `Some`
//! ([`Queue::put_many_timeout`]: `Some(n)` when the first `n` items got in). `Err` is kept for
//! what is not routine: a closed queue, a lost connection, a value of another type. The one
//! object whose timeout is not quiet is the barrier: as in Python its timeout breaks it for
//! every party, so its `None` means the parties did not all meet, whatever the cause. The
//! `_raw` methods ([`Lock::acquire_raw`], [`Condition::wait_raw`]) are the exception by design:
//! they take Python's `(blocking, timeout)` and answer as Python does.

#![warn(missing_docs)]

mod address;
#[cfg(feature = "tokio")]
pub mod aio;
mod atfork;
pub mod baseline;
mod chain;
mod client;
mod command;
mod connection;
mod error;
mod in_flight;
mod limits;
mod options;
mod pipeline;
pub mod proxies;
mod refs;
mod run;
mod slot;
mod spin;
mod tls;
mod token;

#[cfg(test)]
mod tests;

pub use address::{Address, Addresses};
pub use agora_proto::ObjectRef;
pub use bytes::Bytes;
pub use client::{export_for_fork, Client, ObjectInfo, ENV_ADDRESS, ENV_AUTHKEY};
pub use command::Cmd;
pub use error::{report, DecodeError, Error, ErrorName, RemoteName, Result};
pub use limits::{LimitChanges, ManagerLimits};
pub use options::{
    ConnectOptions, ENV_CALL_TIMEOUT, ENV_CONNECT_TIMEOUT, ENV_HANDSHAKE_TIMEOUT, ENV_TLS_CA,
};
pub use pipeline::{Handle, Pipeline, Replies};
pub use proxies::{
    Acked, Acquired, Array, Barrier, BoundedSemaphore, Condition, ConditionGuard, Dict, Event,
    JoinableQueue, List, Lock, LockGuard, Mutex, MutexGuard, Namespace, Number, OwnedLockGuard,
    OwnedSemaphoreGuard, Permits, Queue, QueueBatches, QueueIter, RLock, RLockGuard, Semaphore,
    SemaphoreGuard, Set, SetOperand, SharedRef, Slice, Value,
};
pub use run::ManagerRun;
pub use spin::{budget as spin_budget, ENV_SPIN_US};
pub use token::Token;

/// For the `agora` crate: descriptors a forked child must not keep (a manager's lifeline),
/// pointed at `/dev/null` in every child `fork` makes, as the client's sockets are. Not a
/// stable API.
#[doc(hidden)]
pub mod fork_guard {
    use std::os::fd::RawFd;

    /// From now on, a forked child gets `/dev/null` in place of `fd`.
    pub fn protect(fd: RawFd) {
        crate::atfork::register(fd);
    }

    /// Stops protecting `fd`: call it before closing it.
    pub fn unprotect(fd: RawFd) {
        crate::atfork::unregister(fd);
    }
}

/// The client's polling internals, for code measured against agora that must poll exactly as
/// the client does: the benchmark's raw contenders (`examples/bench`) use the client's own
/// budget, back-off and poll loop rather than a copy of them. Not a stable API: it exists
/// only with the `bench-internals` feature, which the workspace's examples turn on.
#[cfg(feature = "bench-internals")]
pub mod bench_internals {
    pub use crate::spin::{budget, pause, poll_read, Backoff, Polled};
}
