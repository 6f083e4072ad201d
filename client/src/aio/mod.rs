//! The async client, on tokio (the `tokio` feature): the same shared objects from async code,
//! with calls that wait (an acquire, a queue get) as futures that park only their task.
//!
//! ```no_run
//! # async fn demo() -> agora_client::Result<()> {
//! use agora_client::aio::AsyncClient;
//!
//! let client = AsyncClient::from_env().await?;
//! let scores = client.object(|c| c.dict_named::<String, i64>("scores")).await?;
//! scores.set("alice", &3).await?;
//! assert_eq!(scores.get("alice").await?, Some(3));
//!
//! let lock = client.object(|c| c.lock_named("tickets")).await?;
//! let guard = lock.lock().await?; // parks this task, never a runtime thread
//! guard.unlock().await?;
//! # Ok(()) }
//! ```
//!
//! # One surface, two clients
//! Every proxy method of the blocking client is a [`Cmd`] built by its `*_cmd` twin, which
//! encodes the request and knows how to decode the reply. An async proxy, [`Async<P>`], wraps
//! the blocking proxy `P` and runs the very same commands on the async connection: `foo(..)` is
//! `self.run(self.proxy().foo_cmd(..))`. Nothing is encoded or decoded twice, and any command
//! builder without an async twin runs with [`Async::run`].
//!
//! # Layout
//! - [`AsyncClient`]: one multiplexed connection shared by every task (replies matched by msgid
//!   in a reader task; no lock is held across an `.await`), beside a blocking [`Client`] that
//!   holds the objects of the proxies and makes registry calls (`create`, `lookup`) on a
//!   blocking thread ([`AsyncClient::object`]).
//! - [`Async`]: an async proxy; the per-kind methods are in `proxies`.
//! - `guards`: [`LockGuard`], [`SemaphoreGuard`] and their owned forms, released on drop
//!   without blocking the runtime.
//! - [`Call`]: the future of one call.
//!
//! # Tokens and nested proxies
//! A proxy decoded from a reply (a `Dict<String, List<i64>>`'s values) is a blocking proxy:
//! [`AsyncClient::wrap`] makes it async. A token is taken with the blocking proxy's `token`
//! ([`Async::proxy`]) on a blocking thread, and redeemed with
//! `client.object(move |c| Dict::from_token(c, &token))`.
//!
//! # Cancellation safety
//! Dropping the future of a call before it completes (a `select!` branch that lost, a
//! `tokio::time::timeout` that passed) leaves nothing behind on the manager for the calls that
//! wait: the client sends `cancel` for it (`PROTOCOL.md`, section 4.1), and a grant that was
//! already on its way when the future was dropped is given back:
//!
//! | future | dropped before completion |
//! |---|---|
//! | [`Lock::lock`], [`RLock::lock`], [`Semaphore::acquire`], [`BoundedSemaphore::acquire`], their `_timeout` and `_owned` forms | the acquire is cancelled; a lock or permit granted meanwhile is released |
//! | [`Queue::get`], [`Queue::get_timeout`], [`Queue::get_acked`] | cancelled; an item already delivered returns to the head of the queue (the get is a `get_acked`, `nack`ed) |
//! | [`JoinableQueue::get`], [`JoinableQueue::get_timeout`] | cancelled; an item already delivered is put back at the *tail* and its get marked done |
//! | [`Condition::lock`] | as a lock's |
//! | [`Event::wait`], [`Barrier::wait`] and their `_timeout` forms | cancelled; a wait that had completed stays completed (there is nothing to give back: the barrier passed) |
//! | `put`, `put_many`, `get_many`, `join` | cancelled if still parked; one that completed stays done (items got by a `get_many` are lost to a dropped future) |
//! | every other call | its reply is dropped when it comes; the call itself ran (or will) |
//!
//! | [`ConditionGuard::wait`], [`ConditionGuard::wait_timeout`] | cancelled; the guard no longer holds the lock (the wait gave it up), and a re-acquire granted meanwhile is released |
//!
//! # Reconnection
//! As for the blocking client: when the async connection breaks, the calls in flight on it fail
//! with [`Error::Disconnected`], and the next call opens a new one. A client of several
//! addresses ([`AsyncClient::connect_any`]) moves its blocking client to the next manager
//! first, and opens the new async connection where that one went.
//! What the old session held (locks, permits) was released by the manager, which is why a
//! guard's drop sends nothing on a new connection. Proxies keep working on the same run of the
//! manager (the blocking client holds their objects); those of an earlier run fail with
//! [`Error::OtherRun`].
//!
//! # Deadlines
//! As in the blocking client, a [`ConnectOptions::call_timeout`] applies to the calls the
//! manager does not park: one with no reply in time fails with
//! [`Error::Timeout`] and closes the connection (the reply may still
//! come), failing the other calls in flight on it. For a deadline of your own on any call, wrap
//! it in `tokio::time::timeout`, which is cancellation-safe.

mod connection;
mod guards;
mod pipeline;
mod proxies;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::address::{Address, Addresses};
use crate::client::Client;
use crate::command::{decode, Args, Cmd, Decoder, Reply};
use crate::error::{Error, Result};
use crate::options::ConnectOptions;

use connection::{Conn, GiveBack};
pub use guards::{ConditionGuard, LockGuard, OwnedLockGuard, OwnedSemaphoreGuard, SemaphoreGuard};
pub use pipeline::Pipeline;
pub use proxies::{
    Array, Barrier, BoundedSemaphore, Condition, Dict, Event, JoinableQueue, List, Lock, Namespace,
    Queue, RLock, Semaphore, Set, Value,
};

/// The future of one call: resolves to what the blocking method returns. It sends its request
/// when first polled; see [Cancellation safety](self#cancellation-safety) for what dropping
/// it does. It owns what it needs (`'static`), so it can be spawned.
#[must_use = "a call does nothing until awaited"]
pub struct Call<T> {
    fut: Pin<Box<dyn Future<Output = Result<T>> + Send + 'static>>,
}

impl<T> Call<T> {
    fn new(fut: impl Future<Output = Result<T>> + Send + 'static) -> Call<T> {
        Call { fut: Box::pin(fut) }
    }
}

impl<T> Future for Call<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        self.fut.as_mut().poll(cx)
    }
}

impl<T> fmt::Debug for Call<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Call")
    }
}

/// A client for async code: one connection to the manager that every task shares. Cloning is
/// cheap (an `Arc`); all clones share the connection.
///
/// It must be used inside a tokio runtime (it spawns the connection's reader and writer tasks).
#[derive(Clone)]
pub struct AsyncClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// Holds the proxies' objects and makes the registry calls.
    client: Client,
    /// The async connection, replaced when it breaks.
    conn: Mutex<Arc<Conn>>,
    /// Taken by the task that replaces a broken connection, so that one does.
    reconnecting: tokio::sync::Mutex<()>,
}

impl fmt::Debug for AsyncClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncClient")
            .field("address", self.inner.client.address())
            .finish_non_exhaustive()
    }
}

impl AsyncClient {
    /// Connects to the manager at `address` with `authkey`, as [`Client::connect`].
    pub async fn connect(address: &Address, authkey: &[u8]) -> Result<AsyncClient> {
        let options = ConnectOptions::from_env()?;
        let (address, authkey) = (address.clone(), authkey.to_vec());
        let client = blocking(move || {
            Client::connect_from(
                &Addresses::from(address),
                &authkey,
                "given to AsyncClient::connect",
                &options,
            )
        })
        .await?;
        AsyncClient::from_client(client).await
    }

    /// Connects to the first of `addresses` that answers, as [`Client::connect_any`]; the
    /// client moves to the next when a connection breaks.
    pub async fn connect_any(addresses: &Addresses, authkey: &[u8]) -> Result<AsyncClient> {
        let options = ConnectOptions::from_env()?;
        let (addresses, authkey) = (addresses.clone(), authkey.to_vec());
        let client = blocking(move || {
            Client::connect_from(
                &addresses,
                &authkey,
                "given to AsyncClient::connect_any",
                &options,
            )
        })
        .await?;
        AsyncClient::from_client(client).await
    }

    /// Connects using [`ENV_ADDRESS`](crate::ENV_ADDRESS) and
    /// [`ENV_AUTHKEY`](crate::ENV_AUTHKEY), as [`Client::from_env`].
    pub async fn from_env() -> Result<AsyncClient> {
        AsyncClient::from_client(blocking(Client::from_env).await?).await
    }

    /// An async client beside `client`, reaching the same manager: its proxies can be made
    /// async with [`AsyncClient::wrap`].
    pub async fn from_client(client: Client) -> Result<AsyncClient> {
        let conn = open_beside(&client).await?;
        Ok(AsyncClient {
            inner: Arc::new(Inner {
                client,
                conn: Mutex::new(conn),
                reconnecting: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The blocking client beside this one, which holds the proxies' objects.
    pub fn blocking(&self) -> &Client {
        &self.inner.client
    }

    /// Runs `make` with the blocking client on a blocking thread and makes its proxy async:
    /// the registry calls of [`Client`] (`dict_named`, `lock`, `queue_with`, `from_token`, ...)
    /// serve both clients.
    ///
    /// ```no_run
    /// # async fn demo(client: agora_client::aio::AsyncClient) -> agora_client::Result<()> {
    /// let jobs = client.object(|c| c.queue_named::<String>("jobs", 0)).await?;
    /// jobs.put(&"build".to_string()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn object<P, F>(&self, make: F) -> Result<Async<P>>
    where
        P: Send + 'static,
        F: FnOnce(&Client) -> Result<P> + Send + 'static,
    {
        let client = self.inner.client.clone();
        let proxy = blocking(move || make(&client)).await?;
        Ok(self.wrap(proxy))
    }

    /// Makes a proxy of the blocking client (one decoded from a reply, say) async.
    pub fn wrap<P>(&self, proxy: P) -> Async<P> {
        Async {
            proxy,
            client: self.clone(),
        }
    }

    /// Runs any command (a proxy's `*_cmd`, [`Cmd::raw`], [`Cmd::typed`]) on the async
    /// connection.
    pub fn run<T: Send + 'static>(&self, cmd: Cmd<T>) -> Call<T> {
        self.run_giving_back(cmd, None)
    }

    /// A pipeline: many commands in one write.
    pub fn pipeline(&self) -> Pipeline {
        Pipeline::new(self.clone())
    }

    /// [`AsyncClient::run`], with what gives back a grant that reaches the call after its
    /// future was dropped.
    fn run_giving_back<T: Send + 'static>(
        &self,
        cmd: Cmd<T>,
        give_back: Option<GiveBack>,
    ) -> Call<T> {
        let client = self.clone();
        Call::new(async move {
            let conn = client.connection().await?;
            client.call_on(&conn, cmd, give_back).await
        })
    }

    /// Runs `cmd` on `conn`, unless it is for an object of another run, and decodes its reply.
    async fn call_on<T>(&self, conn: &Conn, cmd: Cmd<T>, give_back: Option<GiveBack>) -> Result<T> {
        let args = cmd.args?;
        if cmd.run != 0 && cmd.run != conn.run_key() {
            return Err(self.inner.client.stale_for(cmd.run, conn.run()));
        }
        let may_wait = agora_proto::methods::request_may_wait(&cmd.method, args.bytes());
        let pending = conn.start(&cmd.method, &args, may_wait, give_back)?;
        let deadline = self.inner.client.options().call_timeout;
        let (reply, unclaimed) = match deadline.filter(|_| !may_wait) {
            None => pending.reply_keeping().await,
            Some(after) => match tokio::time::timeout(after, pending.reply_keeping()).await {
                Ok(replied) => replied,
                Err(_) => return Err(conn.time_out(&cmd.method, after)),
            },
        };
        if let Ok(result) = &reply {
            // The one await between the reply and the caller: a future dropped here gives
            // the grant back (`unclaimed`).
            self.adopt(conn, result).await;
        }
        unclaimed.claimed();
        self.finish(&cmd.method, &args, reply, cmd.decode)
    }

    /// Sends `cmd` without waiting for its reply (an `ack`), on the connection as it is: not
    /// on a broken one, whose session is gone with what the command would settle.
    fn send_detached(&self, cmd: Cmd<()>) {
        let conn = self.current();
        let same_run = cmd.run == 0 || cmd.run == conn.run_key();
        if let (Ok(args), true) = (cmd.args, same_run) {
            conn.send_detached(&cmd.method, &args);
        }
    }

    /// Decodes a reply as the blocking client does: object references become its proxies, and
    /// a decode error names the call.
    fn finish<T>(&self, method: &str, args: &Args, reply: Reply, decode: Decoder<T>) -> Result<T> {
        let client = &self.inner.client;
        let run = client.target(0).run;
        client
            .decoding_in(run, || decode(reply))
            .map_err(|e| client.named_error(e.in_call(method, args.bytes()), run))
    }

    /// Moves what the manager counted for the async connection of the references in `result`
    /// to the blocking client, which keeps the proxies' objects (`PROTOCOL.md`, 3.2): `incref`
    /// there, then `decref` here. Most results hold no reference; a byte check tells.
    async fn adopt(&self, conn: &Conn, result: &Bytes) {
        let mut ids: Vec<u64> = Vec::new();
        crate::client::push_refs(result, &mut ids);
        if ids.is_empty() {
            return;
        }
        let client = self.inner.client.clone();
        let held = ids.clone();
        // One pipeline, so one round trip however many references the reply holds; its
        // replies are counted as every blocking call's are.
        let adopted = blocking(move || {
            let mut increfs = client.pipeline();
            for id in held {
                increfs.add(Cmd::with_args("incref", Args::object(id), decode::unit));
            }
            increfs.execute()?.check()
        })
        .await;
        if let Err(e) = adopted {
            tracing::debug!(error = %e, "could not hold the objects of a reply's references");
        }
        let pairs: Vec<(u64, u64)> = ids.into_iter().map(|id| (id, 1)).collect();
        conn.send_decrefs(&pairs);
    }

    /// The connection, a new one if it broke (see [Reconnection](self#reconnection)).
    async fn connection(&self) -> Result<Arc<Conn>> {
        let conn = self.inner.conn.lock().clone();
        if conn.is_live() {
            return Ok(conn);
        }
        let _one = self.inner.reconnecting.lock().await;
        let current = self.inner.conn.lock().clone();
        if current.is_live() {
            return Ok(current);
        }
        let client = &self.inner.client;
        tracing::debug!(address = %client.address(), "the async connection broke: opening a new one");
        // The blocking client moves first (to the next address, when it has several), and
        // this connection follows it: both must reach the manager that holds the proxies'
        // objects.
        follow_blocking(client).await?;
        let fresh = open_beside(client).await?;
        *self.inner.conn.lock() = fresh.clone();
        Ok(fresh)
    }

    /// The connection as it is now, without reconnecting: for guards, which release only on
    /// the session that acquired.
    fn current(&self) -> Arc<Conn> {
        self.inner.conn.lock().clone()
    }
}

/// Makes sure the blocking `client` reaches a live manager. Its connection most likely broke
/// too (a manager that stopped): the first call finds out, the second opens a new connection,
/// so that a registry call of this client's does not fail later.
async fn follow_blocking(client: &Client) -> Result<()> {
    for _ in 0..2 {
        let beside = client.clone();
        match blocking(move || beside.ping()).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_disconnected() => {
                tracing::debug!(error = %e, "the blocking client's connection broke too");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// An async connection to the manager of `client`, with its authkey and time limits.
async fn open_beside(client: &Client) -> Result<Arc<Conn>> {
    let options = client.options();
    Conn::open(
        client.address(),
        client.authkey(),
        client.key_from(),
        options,
    )
    .await
}

/// Runs `f` on a blocking thread; a panic in it goes on in the caller.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> Result<R> + Send + 'static) -> Result<R> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::Usage(format!(
            "a blocking registry call was cancelled: {e}"
        ))),
    }
}

/// An async proxy: the blocking proxy `P` (for its command builders, tokens, and the object it
/// holds) and the [`AsyncClient`] its calls go through. The methods of each kind are those of
/// the blocking proxy, returning futures ([`Call`]).
pub struct Async<P> {
    proxy: P,
    client: AsyncClient,
}

impl<P: Clone> Clone for Async<P> {
    fn clone(&self) -> Self {
        Async {
            proxy: self.proxy.clone(),
            client: self.client.clone(),
        }
    }
}

impl<P: fmt::Debug> fmt::Debug for Async<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Async").field(&self.proxy).finish()
    }
}

impl<P> Async<P> {
    /// The blocking proxy: its `*_cmd` builders make commands for [`Async::run`] and
    /// pipelines, and its blocking methods work too (from a blocking thread).
    pub fn proxy(&self) -> &P {
        &self.proxy
    }

    /// The blocking proxy, taken out.
    pub fn into_proxy(self) -> P {
        self.proxy
    }

    /// The async client its calls go through.
    pub fn client(&self) -> &AsyncClient {
        &self.client
    }

    /// Runs a command on the async connection: `list.run(list.proxy().sort_cmd())`.
    pub fn run<T: Send + 'static>(&self, cmd: Cmd<T>) -> Call<T> {
        self.client.run(cmd)
    }
}
