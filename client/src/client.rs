//! [`Client`]: a handle on one manager (or on one at a time of several serving the same
//! objects), shared by every thread and every proxy of a process.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::address::{Address, Addresses};
use crate::command::{decode, Args, Cmd, Reply, Target};
use crate::connection::Connection;
use crate::error::{Error, ErrorName, Result};
use crate::options::ConnectOptions;
use crate::pipeline::Pipeline;
use crate::proxies::context;
use crate::refs::{Receipt, Refs};
use crate::run::ManagerRun;
use crate::slot::Slot;

/// The environment variable holding the manager's address (`unix:/path`, `tcp:host:port` or
/// `tls:host:port`), or several separated by commas ([`Addresses`]).
pub const ENV_ADDRESS: &str = "AGORA_ADDRESS";
/// The environment variable holding the authkey, as hexadecimal.
pub const ENV_AUTHKEY: &str = "AGORA_AUTHKEY";

/// A connection to a manager, shared by every thread and proxy that uses it.
///
/// Cloning is cheap (an `Arc`), and all clones share one socket: calls from many threads are
/// multiplexed on it by msgid, so a call the manager parks (a blocking `get`) does not delay the
/// calls of other threads, and a thread waiting for its reply is woken for that reply only, not
/// for the replies of the others (200 threads sharing one client make about as many calls as
/// 200 with a client each).
///
/// # Fork
///
/// A `Client` may be used in a child made by `fork`: on its first call the child sees that the
/// process id changed and opens a connection of its own. The inherited socket is never read or
/// written there, so the parent's calls are not disturbed; in fact the child's copy is replaced
/// by `/dev/null` the moment `fork` returns (a `pthread_atfork` handler), so that a child, even
/// one that never uses the client, does not keep the parent's session open: when the parent
/// dies, the manager releases the locks it held at once, not when its last child exits.
///
/// The child's new connection then `adopt`s the objects of the proxies it inherited, so that
/// they stay alive for it once the parent drops its own (see the crate's Lifetime section;
/// [`export_for_fork`] before the fork closes the race in between).
///
/// # Reconnection
///
/// When the connection breaks (the manager stopped or restarted, the network failed, a
/// deadline ran out), the calls in flight fail with [`Error::Disconnected`] (or
/// [`Error::Timeout`]): the client cannot tell whether the manager carried them out, so it
/// never sends them again. The next call opens a new connection, and fails with
/// [`Error::Connect`] while no manager answers at the address (each call tries again).
///
/// A client may have several addresses ([`Client::connect_any`], or a comma-separated list in
/// [`ENV_ADDRESS`]): managers that serve the same objects, from one store, and so present
/// the same run. It connects to the first that answers, in order. When its connection
/// breaks, the next call tries the address after the one that failed first, then the
/// following ones, round the list, each within [`ConnectOptions::connect_timeout`] and
/// [`ConnectOptions::handshake_timeout`], and logs at INFO the address it moved to
/// ([`Client::address`] says which it is on). When none answers, the call fails with
/// [`Error::NoManager`], naming each address and why. The calls in flight fail as above,
/// never sent again: moving to another manager does not make them safe to repeat. A
/// manager of another run found at the next address is treated as a restart, as follows.
///
/// - The same run of the manager (a network failure, a deadline): the new connection takes
///   over, with `incref`, every object this process has proxies of, so they keep working; an
///   unnamed object that nothing else held in between is gone (its proxies get
///   `UnknownObjectError`).
/// - Another run (the manager restarted): the client follows it, and every proxy of the old
///   run is stale: its calls, its tokens and storing it in a value fail with
///   [`Error::OtherRun`] (which counts as `UnknownObjectError`), unsent, because its id names
///   another object in the new run. Named objects are found again by name
///   (`client.dict_named("scores")`).
///
/// ```no_run
/// use agora_client::Client;
/// let client = Client::from_env()?;
/// let scores = client.dict_named::<String, i64>("scores")?;
/// scores.set("alice", &3)?;
/// assert_eq!(scores.get("alice")?, Some(3));
/// # Ok::<(), agora_client::Error>(())
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// The managers it may connect to, in the order it tries them.
    addresses: Addresses,
    /// The index in `addresses` of the manager the connection reaches (or last reached).
    current: AtomicUsize,
    authkey: Vec<u8>,
    /// The time limits it connects and calls with.
    options: ConnectOptions,
    /// Where the authkey came from, for error messages.
    key_from: &'static str,
    /// The connection of this process, replaced when it breaks and in a forked child.
    conn: Slot,
    /// What this process's connection holds of each object: proxies, references received,
    /// decrefs due (see `refs`).
    refs: Arc<Refs>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The connection closes with the client, and the manager drops everything it counted
        // for it: the table has nothing left to give back.
        self.refs.unregister();
    }
}

/// Appends the object id of every reference in `result` to `ids`. Most results hold none,
/// which a byte check tells without walking them.
pub(crate) fn push_refs(result: &[u8], ids: &mut Vec<u64>) {
    if agora_proto::objref::may_hold_refs(result) {
        agora_proto::objref::for_each_ref(result, |found| {
            if let agora_proto::objref::Found::Ref { id, .. } = found {
                ids.push(id);
            }
        });
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the authkey.
        f.debug_struct("Client")
            .field("address", self.address())
            .finish_non_exhaustive()
    }
}

/// One entry of [`Client::objects`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ObjectInfo {
    /// The object's id, unique for the life of the manager.
    pub id: u64,
    /// The name it was created with, if any.
    pub name: Option<String>,
    /// Its kind: `"dict"`, `"list"`, `"value"`, `"array"`, `"namespace"`, ...
    pub kind: String,
    /// How many holders keep it alive (`PROTOCOL.md`, 3.2): connections that hold a
    /// reference to it, references to it stored in other live objects, and handoffs of it
    /// (tokens and forks not adopted yet). An unnamed object is freed when this reaches 0; a
    /// named one lives on whatever it says. It is what tells a leak from a live object.
    pub holders: u64,
}

/// References to objects in replies that may still be decoded into proxies: while it lives,
/// no `decref` of those objects is sent (another thread's flush could otherwise give back the
/// reference a proxy is about to be made from). Empty, the common case, it costs nothing.
#[derive(Default)]
pub(crate) struct Hold {
    client: Option<Client>,
    ids: Vec<u64>,
    /// The run of the connection the replies came from (one connection per hold).
    run: u64,
}

impl Hold {
    /// Takes over what `other` holds (replies of the same connection).
    pub(crate) fn merge(&mut self, mut other: Hold) {
        if other.ids.is_empty() {
            return;
        }
        self.ids.append(&mut other.ids);
        self.client = other.client.take();
        self.run = other.run;
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if client.inner.refs.release_holds(&self.ids, self.run) {
                client.flush_soon();
            }
        }
    }
}

impl Client {
    /// Connects to the manager at `address` and authenticates with `authkey`. For several
    /// managers serving the same objects, see [`Client::connect_any`].
    ///
    /// Fails with [`Error::Connect`] when nothing listens there and with
    /// [`Error::Authentication`] when the authkey is not the manager's.
    ///
    /// Should the connection break, the client reconnects on its next call (see
    /// [Reconnection](Client#reconnection)); the proxies of a run the manager no longer is
    /// fail with [`Error::OtherRun`] instead of reaching the new run's objects, whose ids are
    /// the old ones over again.
    ///
    /// The time limits come from the environment ([`ConnectOptions::from_env`]): 10 s to
    /// connect and 10 s for the handshake by default, no deadline on calls.
    pub fn connect(address: &Address, authkey: &[u8]) -> Result<Client> {
        Client::connect_with(address, authkey, &ConnectOptions::from_env()?)
    }

    /// [`Client::connect`] with the time limits given.
    ///
    /// Fails with [`Error::NotAManager`] when the peer does not answer the handshake as a
    /// manager does, or not within [`ConnectOptions::handshake_timeout`].
    pub fn connect_with(
        address: &Address,
        authkey: &[u8],
        options: &ConnectOptions,
    ) -> Result<Client> {
        Client::connect_from(
            &Addresses::from(address.clone()),
            authkey,
            "given to Client::connect",
            options,
        )
    }

    /// Connects to the first of `addresses` that answers, in order, and authenticates with
    /// `authkey`: managers that serve the same objects (one store, one run id). When a
    /// connection breaks, the client moves to the next address (see
    /// [Reconnection](Client#reconnection)).
    ///
    /// Fails with [`Error::NoManager`], which says why at each address, when none answers.
    /// The time limits come from the environment, as for [`Client::connect`].
    ///
    /// ```no_run
    /// use agora_client::{Addresses, Client};
    /// let managers: Addresses = "tcp:10.0.0.1:5555,tcp:10.0.0.2:5555".parse()?;
    /// let client = Client::connect_any(&managers, b"secret")?;
    /// println!("connected to {}", client.address());
    /// # Ok::<(), agora_client::Error>(())
    /// ```
    pub fn connect_any(addresses: &Addresses, authkey: &[u8]) -> Result<Client> {
        Client::connect_any_with(addresses, authkey, &ConnectOptions::from_env()?)
    }

    /// [`Client::connect_any`] with the time limits given: each address is tried within
    /// them.
    pub fn connect_any_with(
        addresses: &Addresses,
        authkey: &[u8],
        options: &ConnectOptions,
    ) -> Result<Client> {
        Client::connect_from(addresses, authkey, "given to Client::connect_any", options)
    }

    /// Connects with an authkey that came from `key_from` (for error messages).
    #[doc(hidden)]
    pub fn connect_from(
        addresses: &Addresses,
        authkey: &[u8],
        key_from: &'static str,
        options: &ConnectOptions,
    ) -> Result<Client> {
        let (at, mut conn) = Connection::open_any(addresses, 0, authkey, key_from, options)?;
        Ok(Client {
            inner: Arc::new_cyclic(|inner| {
                let refs = Arc::new(Refs::new(inner.clone(), conn.serial(), conn.run()));
                conn.set_refs(refs.clone());
                Inner {
                    addresses: addresses.clone(),
                    current: AtomicUsize::new(at),
                    authkey: authkey.to_vec(),
                    options: options.clone(),
                    key_from,
                    conn: Slot::new(conn),
                    refs,
                }
            }),
        })
    }

    /// Connects using [`ENV_ADDRESS`] and [`ENV_AUTHKEY`], as set for the worker processes of a
    /// manager. A list of addresses in [`ENV_ADDRESS`] (`unix:/a.sock,tcp:host:5555`) works as
    /// [`Client::connect_any`].
    pub fn from_env() -> Result<Client> {
        Client::from_env_values(env_var(ENV_ADDRESS), env_var(ENV_AUTHKEY))
    }

    /// [`Client::from_env`] with the variables' values given (tests set no real variables:
    /// the environment is shared by every test thread).
    pub(crate) fn from_env_values(
        address: Result<String>,
        authkey: Result<String>,
    ) -> Result<Client> {
        let addresses: Addresses = address?.parse().map_err(|e: Error| Error::Env {
            var: ENV_ADDRESS,
            reason: e.to_string(),
        })?;
        let authkey = hex::decode(authkey?.trim()).map_err(|e| Error::Env {
            var: ENV_AUTHKEY,
            reason: format!("not hexadecimal: {e}"),
        })?;
        Client::connect_from(
            &addresses,
            &authkey,
            ENV_AUTHKEY,
            &ConnectOptions::from_env()?,
        )
    }

    /// The address of the manager the client is connected to (or was last, while no manager
    /// answers): one of [`Client::addresses`].
    pub fn address(&self) -> &Address {
        let list = self.inner.addresses.as_slice();
        &list[self.inner.current.load(Ordering::Relaxed) % list.len()]
    }

    /// Every address the client may connect to, in the order it tries them (one, unless it
    /// was made by [`Client::connect_any`] or from a list in [`ENV_ADDRESS`]).
    pub fn addresses(&self) -> &Addresses {
        &self.inner.addresses
    }

    /// The authkey, for handing to processes this one starts (as hex in [`ENV_AUTHKEY`]).
    pub fn authkey(&self) -> &[u8] {
        &self.inner.authkey
    }

    /// The run of the manager this client's connection reaches: its proxies are of this run.
    /// Tokens carry it, and `from_token` refuses a token of another run. It changes when the
    /// client reconnects to a restarted manager (see [Reconnection](Client#reconnection)).
    pub fn manager_run(&self) -> ManagerRun {
        self.inner.conn.get().run().clone()
    }

    /// `id` as an object of the run the client is connected to now.
    pub(crate) fn target(&self, id: u64) -> Target {
        Target {
            id,
            run: self.inner.conn.run_key(),
        }
    }

    /// Fails with [`Error::OtherRun`] when `target` is not of the run the client is
    /// connected to now (it does not reconnect to find out).
    pub(crate) fn check_run(&self, target: Target) -> Result<()> {
        let conn = self.inner.conn.get();
        if target.run == conn.run_key() {
            return Ok(());
        }
        Err(self.stale(target.run, &conn))
    }

    /// The error for a proxy or command of run `run` on a connection to another run.
    fn stale(&self, run: u64, conn: &Connection) -> Error {
        self.stale_for(run, conn.run())
    }

    /// The error for a proxy or command of run `run` meeting the manager run `current`.
    pub(crate) fn stale_for(&self, run: u64, current: &ManagerRun) -> Error {
        let old = self
            .inner
            .refs
            .run_of(run)
            .map_or_else(|| "an earlier run".to_owned(), |r| r.id);
        let address = self.address().to_string();
        current.mismatch(&old, &address, &address)
    }

    /// The time limits it connects and calls with.
    #[cfg(feature = "tokio")]
    pub(crate) fn options(&self) -> &ConnectOptions {
        &self.inner.options
    }

    /// Where the authkey came from, for error messages.
    #[cfg(feature = "tokio")]
    pub(crate) fn key_from(&self) -> &'static str {
        self.inner.key_from
    }

    /// The connection of this process, opening a new one if it broke or if this is a forked
    /// child (see [Reconnection](Client#reconnection)).
    pub(crate) fn connection(&self) -> Result<Arc<Connection>> {
        let conn = self.inner.conn.get();
        if conn.is_live() {
            return Ok(conn);
        }
        self.reconnect(conn)
    }

    /// Replaces `old` (broken, or the parent's) with a new connection, unless another thread
    /// did first. The winner makes the reference table the new connection's and takes over
    /// the objects of the live proxies, if the manager's run is the same.
    fn reconnect(&self, old: Arc<Connection>) -> Result<Arc<Connection>> {
        let forked = old.pid() != crate::atfork::current_pid();
        let was = self.inner.current.load(Ordering::Relaxed);
        let from = self.address().clone();
        if forked {
            debug!(address = %from, "forked child: opening a connection of its own");
        } else {
            debug!(address = %from, "the connection broke: opening a new one");
        }
        // A forked child's manager did not fail: it starts there. A broken connection moves
        // on to the next address (the same one when there is only one).
        let start = if forked { was } else { was + 1 };
        let (at, mut fresh) = Connection::open_any(
            &self.inner.addresses,
            start,
            &self.inner.authkey,
            self.inner.key_from,
            &self.inner.options,
        )?;
        fresh.set_refs(self.inner.refs.clone());
        let (serial, run) = (fresh.serial(), fresh.run().clone());
        let same_run = run.id == old.run().id;
        let (conn, won) = self.inner.refs.switch(serial, &run, || {
            let replaced = self.inner.conn.replace(&old, fresh);
            if replaced.1 {
                self.inner.current.store(at, Ordering::Relaxed);
            }
            replaced
        });
        if won {
            self.log_reconnected(&from, forked, same_run, &old, &conn);
            self.take_over(&conn, if forked { "adopt" } else { "incref" })?;
        }
        Ok(conn)
    }

    /// Says where a new connection went: INFO naming the address moved to, if another, or
    /// that it reconnected; WARN for another run, whose proxies are now stale.
    fn log_reconnected(
        &self,
        from: &Address,
        forked: bool,
        same_run: bool,
        old: &Connection,
        new: &Connection,
    ) {
        let address = self.address();
        if address != from {
            info!(%from, to = %address, "moved to the next agora manager");
        }
        if !same_run {
            warn!(
                %address,
                old_run = %old.run().id,
                new_run = %new.run().id,
                "the agora manager restarted or another one answered: reconnected; proxies \
                 of the old run are stale"
            );
        } else if address == from && !forked {
            info!(%address, "reconnected to the agora manager");
        }
    }

    /// On a new connection to the same run: holds the object of every live proxy again,
    /// pipelined, as the old connection did. A forked child `adopt`s them: `Process::spawn`
    /// exported them before forking, so the adoption takes over a handoff and the objects
    /// survive the parent dropping its proxies at once (after a raw `fork` without
    /// [`export_for_fork`] it works as `incref`). A reconnection `incref`s them: a handoff
    /// this process made is for another one. An object freed in between is gone (its proxies
    /// get `UnknownObjectError`).
    fn take_over(&self, conn: &Connection, method: &str) -> Result<()> {
        /// Objects per write: the replies of one batch stay far below what the manager
        /// buffers for a connection before it stops reading it.
        const BATCH: usize = 4096;
        let ids = self.inner.refs.take_inherited();
        for batch in ids.chunks(BATCH) {
            let args: Vec<Args> = batch.iter().map(|&id| Args::object(id)).collect();
            let calls: Vec<(&str, &Args)> = args.iter().map(|a| (method, a)).collect();
            for (&id, reply) in batch.iter().zip(conn.call_many(&calls)?) {
                match reply {
                    Ok(_) => self.inner.refs.adopted(id, conn.serial()),
                    Err(e) => debug!(id, error = %e, method, "could not hold an object again"),
                }
            }
        }
        if !ids.is_empty() {
            debug!(
                objects = ids.len(),
                method, "the new connection holds the objects of the live proxies"
            );
        }
        Ok(())
    }

    /// Runs one command now: one round trip. Every proxy method is this applied to its `*_cmd`
    /// twin.
    ///
    /// With a [`ConnectOptions::call_timeout`], a call the manager does not park fails with
    /// [`Error::Timeout`] when no reply came in time.
    pub fn run<T>(&self, cmd: Cmd<T>) -> Result<T> {
        let decode = cmd.decode;
        self.run_decoding(cmd, decode)
    }

    /// As [`Client::run`], failing with [`Error::Timeout`] if the reply has not come within
    /// `timeout`, whatever the call: for a manager that may be stopped or hung. The
    /// connection is closed then (the reply may still come), so the other calls in flight on
    /// it fail too, and the call may or may not have been carried out: for a blocking call,
    /// prefer its own timeout (`get_timeout`, ...), which the manager keeps.
    pub fn run_within<T>(&self, cmd: Cmd<T>, timeout: Duration) -> Result<T> {
        self.run_until(cmd, Some(timeout))
    }

    fn run_until<T>(&self, cmd: Cmd<T>, timeout: Option<Duration>) -> Result<T> {
        let conn = self.connection()?;
        self.run_on(&conn, cmd, timeout)
    }

    /// Runs `cmd` on `conn`, unless it is for an object of another run.
    fn run_on<T>(&self, conn: &Connection, cmd: Cmd<T>, timeout: Option<Duration>) -> Result<T> {
        let decode = cmd.decode;
        self.run_on_with(conn, cmd, timeout, decode)
    }

    /// [`Client::run`] with the reply decoded by `decode` rather than by the command's own
    /// decoder (a chain, whose reply holds several calls' results).
    pub(crate) fn run_decoding<T, R>(
        &self,
        cmd: Cmd<T>,
        decode: impl FnOnce(Reply) -> Result<R>,
    ) -> Result<R> {
        let deadline = self.inner.options.call_timeout.filter(|_| {
            let params = cmd.args.as_ref().map_or(&[][..], |a| a.bytes());
            !agora_proto::methods::request_may_wait(&cmd.method, params)
        });
        let conn = self.connection()?;
        self.run_on_with(&conn, cmd, deadline, decode)
    }

    fn run_on_with<T, R>(
        &self,
        conn: &Connection,
        cmd: Cmd<T>,
        timeout: Option<Duration>,
        decode: impl FnOnce(Reply) -> Result<R>,
    ) -> Result<R> {
        let args = cmd.args?;
        if cmd.run != 0 && cmd.run != conn.run_key() {
            return Err(self.stale(cmd.run, conn));
        }
        let deadline = timeout.map(|t| (Instant::now() + t, t));
        let reply = conn.call_until(&cmd.method, &args, deadline);
        // Counted before anything is decoded, and held until the decoding is done.
        let receipt = conn.receipt();
        let _hold = self.count(&cmd.method, &args, &reply, receipt);
        self.note_names(&cmd.method, &args, &reply, receipt.run);
        self.decoding_in(receipt.run, || decode(reply))
            .map_err(|e| self.named_error(e.in_call(&cmd.method, args.bytes()), receipt.run))
    }

    /// Remembers the names of objects created or looked up by name, and forgets deleted
    /// ones, so that a decode error can name its object.
    fn note_names(&self, method: &str, args: &Args, reply: &Reply, run: u64) {
        if !matches!(method, "create" | "lookup" | "delete") {
            return;
        }
        let Ok(result) = reply else {
            return;
        };
        let params = crate::error::split_values(args.bytes());
        let str_at = |i: usize| {
            params
                .get(i)
                .and_then(|raw| rmp_serde::from_slice::<String>(raw).ok())
        };
        match method {
            "create" => {
                if let (Some(name), Some(id)) = (str_at(1), agora_proto::params::int_u64(result)) {
                    self.inner.refs.named(id, run, &name);
                }
            }
            "lookup" => {
                let found = rmp_serde::from_slice::<(String, u64)>(result).ok();
                if let (Some(name), Some((_, id))) = (str_at(0), found) {
                    self.inner.refs.named(id, run, &name);
                }
            }
            "delete" => {
                if let Some(name) = str_at(0) {
                    self.inner.refs.unnamed(&name);
                }
            }
            _ => {}
        }
    }

    /// Adds the object's name to a decode error, if the client knows it.
    pub(crate) fn named_error(&self, e: Error, run: u64) -> Error {
        match e {
            Error::Decode(mut d) => {
                if let Some(name) = d
                    .object()
                    .and_then(|(_, id)| self.inner.refs.name_of(id, run))
                {
                    d.set_object_name(name);
                }
                Error::Decode(d)
            }
            e => e,
        }
    }

    /// Sends `cmd` without waiting for its reply (a release from a guard's `Drop`), on the
    /// connection this process has now; nothing is sent on a broken connection or for an
    /// object of another run: the session that held what it releases is gone, and the
    /// manager released it. See `Connection::send_detached`.
    pub(crate) fn run_detached(&self, cmd: Cmd<()>) -> Result<()> {
        let args = cmd.args?;
        let conn = self.inner.conn.get();
        if !conn.is_live() || (cmd.run != 0 && cmd.run != conn.run_key()) {
            return Ok(());
        }
        conn.send_detached(&cmd.method, &args)
    }

    /// Counts the references the manager counted for this connection in answering `method`
    /// (`PROTOCOL.md`, 3.2): the id a `create` returns, the object of an `incref` or `adopt`,
    /// and every reference in a successful result. Most results hold none, which a byte check
    /// tells without walking them; then nothing is locked or allocated.
    pub(crate) fn count(&self, method: &str, args: &Args, reply: &Reply, receipt: Receipt) -> Hold {
        let Ok(result) = reply else {
            return Hold::default();
        };
        let mut ids = Vec::new();
        match method {
            "create" => ids.extend(agora_proto::params::int_u64(result)),
            "incref" | "adopt" => ids.extend(agora_proto::params::int_u64(args.bytes())),
            _ => {}
        }
        push_refs(result, &mut ids);
        if ids.is_empty() {
            return Hold::default();
        }
        self.inner.refs.received_held(&ids, receipt);
        Hold {
            client: Some(self.clone()),
            ids,
            run: receipt.run,
        }
    }

    /// A proxy of `target` was made on this client.
    pub(crate) fn proxy_made(&self, target: Target) {
        self.inner.refs.acquire(target.id, target.run);
    }

    /// A proxy of `target` was dropped: when it was the last, the object is given back to the
    /// manager with the next write (at once if the connection is idle).
    pub(crate) fn proxy_dropped(&self, target: Target) {
        if self.inner.refs.release(target.id, target.run) {
            self.flush_soon();
        }
    }

    /// Writes due decrefs now if the connection is idle. Not in a forked child that has not
    /// opened its own connection yet (they go with its first request, after the adoptions),
    /// nor on a broken connection (the manager dropped its counts).
    fn flush_soon(&self) {
        let conn = self.inner.conn.get();
        if conn.is_live() {
            conn.flush_if_idle();
        }
    }

    /// `export [id]`: a handoff that keeps the object alive for a process this one hands it to
    /// (a token, a fork), until that process adopts it or the manager's `--handoff-seconds`
    /// pass. Gives the run id the handoff was made in, for the token.
    pub(crate) fn export(&self, target: Target) -> Result<String> {
        let conn = self.connection()?;
        self.run_on(&conn, export_cmd(target), None)?;
        Ok(conn.run().id.clone())
    }

    /// [`export_for_fork`] for this client alone.
    #[cfg(test)]
    pub(crate) fn export_live(&self) -> Result<()> {
        let ids = crate::refs::live_by_client()
            .into_iter()
            .find(|(inner, _)| std::ptr::eq(inner.as_ptr(), Arc::as_ptr(&self.inner)))
            .map(|(_, ids)| ids)
            .unwrap_or_default();
        self.export_ids(&ids)
    }

    /// Exports `ids`, pipelined. Objects that are gone are skipped.
    fn export_ids(&self, ids: &[u64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut pipeline = self.pipeline();
        for &id in ids {
            pipeline.add(export_cmd(Target { id, run: 0 }));
        }
        if let Err(e) = pipeline.execute()?.check() {
            if !e.is(ErrorName::UnknownObjectError) {
                debug!(error = %e, "export before a fork");
            }
        }
        Ok(())
    }

    /// `adopt [id]` of the object a token names: this connection holds it from now on,
    /// taking over the token's handoff. Fails with `UnknownObjectError` when the object is
    /// gone, and with [`Error::OtherRun`] when the token is of another run than the manager's.
    pub(crate) fn adopt(&self, token: &crate::Token) -> Result<Target> {
        let conn = self.connection()?;
        token.expect_run(conn.run(), self.address())?;
        let target = Target {
            id: token.id,
            run: conn.run_key(),
        };
        self.run_on(
            &conn,
            Cmd::object(target, "adopt", decode::unit, |_| Ok(())),
            None,
        )?;
        Ok(target)
    }

    /// Runs `f` with this client, and the manager run `run` the references are of, as what
    /// shared-object references decode into.
    pub(crate) fn decoding_in<R>(&self, run: u64, f: impl FnOnce() -> R) -> R {
        context::with(self, run, f)
    }

    /// Sends many calls in one write on `conn` and waits for all replies; used by pipelines.
    /// The references in the replies are counted and held until the returned [`Hold`] goes.
    pub(crate) fn run_many(
        &self,
        conn: &Connection,
        calls: &[(&str, &Args)],
    ) -> Result<(Vec<Reply>, Hold)> {
        let replies = conn.call_many(calls)?;
        let receipt = conn.receipt();
        let mut hold = Hold::default();
        for ((method, args), reply) in calls.iter().zip(&replies) {
            hold.merge(self.count(method, args, reply, receipt));
            self.note_names(method, args, reply, receipt.run);
        }
        Ok((replies, hold))
    }

    /// The error for a command of run `run` that a pipeline on `conn` does not send.
    pub(crate) fn stale_on(&self, run: u64, conn: &Connection) -> Option<Error> {
        (run != 0 && run != conn.run_key()).then(|| self.stale(run, conn))
    }

    /// Calls any method with params given as encoded MessagePack values (one slice per param)
    /// and returns the encoded result. The manager's errors come back as [`Error::Remote`].
    ///
    /// ```no_run
    /// # let client = agora_client::Client::from_env()?;
    /// let pong = client.call_raw("ping", &[])?;
    /// assert_eq!(&pong[..], b"\xa4pong");
    /// # Ok::<(), agora_client::Error>(())
    /// ```
    pub fn call_raw(&self, method: &str, params: &[&[u8]]) -> Result<Bytes> {
        self.run(Cmd::raw(method.to_owned(), params))
    }

    /// Calls any method with `params` serialized as the params array (a tuple, slice or `Vec`)
    /// and decodes the result as `R`.
    ///
    /// ```no_run
    /// # let client = agora_client::Client::from_env()?;
    /// let id: u64 = client.call("create", &("list", (), [1, 2, 3]))?;
    /// let len: usize = client.call("list.len", &(id,))?;
    /// # Ok::<(), agora_client::Error>(())
    /// ```
    pub fn call<P, R>(&self, method: &str, params: &P) -> Result<R>
    where
        P: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.run(Cmd::typed(method.to_owned(), params))
    }

    /// Decodes an encoded value (from [`Client::call_raw`], say), turning object references
    /// into proxies that use this client.
    pub fn decode<T: DeserializeOwned>(&self, encoded: &[u8]) -> Result<T> {
        self.decoding_in(self.inner.conn.run_key(), || {
            rmp_serde::from_slice(encoded)
                .map_err(|e| Error::decode::<T>(&Bytes::copy_from_slice(encoded), e))
        })
    }

    /// A new, empty pipeline on this client.
    pub fn pipeline(&self) -> Pipeline {
        Pipeline::new(self.clone())
    }

    /// Checks that the manager answers.
    pub fn ping(&self) -> Result<()> {
        self.run(Cmd::with_args("ping", Args::default(), decode::unit))
    }

    /// Creates an object of `kind` (or, with a name, finds the existing one: get-or-create) and
    /// returns its id. `args` are the kind's init args, encoded. The typed constructors
    /// ([`Client::dict`], [`Client::list_named`], ...) are built on this.
    ///
    /// A bare id holds the object for this connection until a proxy made of it
    /// (`Dict::from_id(&client, id)`, ...) is dropped, or the connection closes: an id is not
    /// a proxy, and the client cannot tell when it stops being used.
    pub fn create(&self, kind: &str, name: Option<&str>, args: &[&[u8]]) -> Result<u64> {
        self.run(Client::create_cmd(kind, name, args))
    }

    /// [`Client::create`] as a command, to create many objects in one round trip with a
    /// [`Pipeline`]; a typed proxy is then `Dict::from_id(&client, id)` (and so on).
    ///
    /// ```no_run
    /// # let client = agora_client::Client::from_env()?;
    /// let mut p = client.pipeline();
    /// let handles: Vec<_> = (0..100)
    ///     .map(|_| p.add(agora_client::Client::create_cmd("dict", None, &[])))
    ///     .collect();
    /// let replies = p.execute()?;
    /// let dicts = handles
    ///     .into_iter()
    ///     .map(|h| Ok(agora_client::Dict::<String, i64>::from_id(&client, replies.get(h)?)))
    ///     .collect::<agora_client::Result<Vec<_>>>()?;
    /// # Ok::<(), agora_client::Error>(())
    /// ```
    pub fn create_cmd(kind: &str, name: Option<&str>, args: &[&[u8]]) -> Cmd<u64> {
        let mut params = Args::default();
        params.str(kind).opt_str(name);
        for arg in args {
            params.raw(arg);
        }
        Cmd::with_args("create", params, decode::value::<u64>)
    }

    /// Creates an object with init args already in [`Args`] form (kind and name included).
    pub(crate) fn create_with(&self, params: Args) -> Result<u64> {
        self.run(Cmd::with_args("create", params, decode::value::<u64>))
    }

    /// The kind and id of the object called `name`. Fails with `KeyError` when there is none.
    pub fn lookup(&self, name: &str) -> Result<(String, u64)> {
        self.run(Client::lookup_cmd(name))
    }

    /// [`Client::lookup`] as a command.
    pub fn lookup_cmd(name: &str) -> Cmd<(String, u64)> {
        let mut params = Args::default();
        params.str(name);
        Cmd::with_args("lookup", params, decode::value)
    }

    /// Deletes the object `id`. Its proxies get `UnknownObjectError` afterwards.
    ///
    /// # Errors
    /// `UnknownObjectError` when there is no such object. `PermissionError` when this client
    /// authenticated with the worker authkey of a manager that has an admin authkey, and
    /// something else holds the object (another connection, a reference stored in another
    /// object, a handoff): the object is left alone. An admin client's delete is forced
    /// (`PROTOCOL.md`, section 4.2).
    pub fn delete(&self, id: u64) -> Result<()> {
        self.run(Client::delete_cmd(id))
    }

    /// [`Client::delete`] as a command.
    pub fn delete_cmd(id: u64) -> Cmd<()> {
        let mut params = Args::default();
        params.uint(id);
        Cmd::with_args("delete", params, decode::unit)
    }

    /// Deletes the object called `name`, and the name.
    ///
    /// # Errors
    /// As [`Client::delete`]; `UnknownObjectError` when no object has that name.
    pub fn delete_named(&self, name: &str) -> Result<()> {
        self.run(Client::delete_named_cmd(name))
    }

    /// [`Client::delete_named`] as a command.
    pub fn delete_named_cmd(name: &str) -> Cmd<()> {
        let mut params = Args::default();
        params.str(name);
        Cmd::with_args("delete", params, decode::unit)
    }

    /// Every object of the manager, in the order they were created, with its number of
    /// holders. The decrefs due on this client's connection go out in the same write, so the
    /// list never shows an object that only proxies this client dropped were holding.
    pub fn objects(&self) -> Result<Vec<ObjectInfo>> {
        self.run(Client::objects_cmd())
    }

    /// [`Client::objects`] as a command.
    pub fn objects_cmd() -> Cmd<Vec<ObjectInfo>> {
        Cmd::with_args("objects", Args::default(), decode::value)
    }

    /// Stops the manager. Every pending call of every client gets `ShutdownError`, and later
    /// calls [`Error::Disconnected`].
    ///
    /// A manager with an admin authkey lets only clients connected with it stop it: for a
    /// client connected with the authkey this fails with `PermissionError`
    /// ([`Error::is`]`(ErrorName::PermissionError)`), and the manager goes on.
    pub fn shutdown(&self) -> Result<()> {
        self.run(Cmd::with_args("shutdown", Args::default(), decode::unit))
    }
}

/// `export [id]` as a command.
fn export_cmd(target: Target) -> Cmd<()> {
    Cmd::object(target, "export", decode::unit, |_| Ok(()))
}

/// Gives a handoff (`export`) of every object this process holds proxies of, on every client
/// of the process (one pipelined round trip each), so that a child forked next can `adopt`
/// them even if this process drops its proxies first.
///
/// `agora::Process::spawn` calls it for you. Call it yourself just before a raw
/// `libc::fork()` whose child uses proxies it inherited: without it the child's adoption is a
/// plain `incref`, made when the child opens its connection, and an object the parent freed
/// before that (by dropping its last proxy) is gone for the child. A handoff nobody adopts
/// (a child that never calls the manager) ends after the manager's `--handoff-seconds`
/// (300 by default).
///
/// Objects that no longer exist are skipped. Fails with the first client whose connection
/// failed, after trying them all.
pub fn export_for_fork() -> Result<()> {
    let mut failure = None;
    for (inner, ids) in crate::refs::live_by_client() {
        // Upgraded outside the tables' lock: dropping the last clone of a client takes it.
        let Some(inner) = inner.upgrade() else {
            continue;
        };
        if let Err(e) = (Client { inner }).export_ids(&ids) {
            failure.get_or_insert(e);
        }
    }
    failure.map_or(Ok(()), Err)
}

fn env_var(var: &'static str) -> Result<String> {
    std::env::var(var).map_err(|e| Error::Env {
        var,
        reason: match e {
            std::env::VarError::NotPresent => {
                "not set (run under an agora manager, or set it to the manager's value)".into()
            }
            std::env::VarError::NotUnicode(_) => "not valid UTF-8".into(),
        },
    })
}
