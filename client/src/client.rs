//! [`Client`]: a handle on one manager, shared by every thread and every proxy of a process.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::address::Address;
use crate::command::{decode, Args, Cmd, Reply};
use crate::connection::Connection;
use crate::error::{Error, ErrorName, Result};
use crate::options::ConnectOptions;
use crate::pipeline::Pipeline;
use crate::proxies::context;
use crate::refs::Refs;
use crate::run::ManagerRun;
use crate::slot::Slot;

/// The environment variable holding the manager's address (`unix:/path`, `tcp:host:port` or
/// `tls:host:port`).
pub const ENV_ADDRESS: &str = "AGORA_ADDRESS";
/// The environment variable holding the authkey, as hexadecimal.
pub const ENV_AUTHKEY: &str = "AGORA_AUTHKEY";

/// A connection to a manager, shared by every thread and proxy that uses it.
///
/// Cloning is cheap (an `Arc`), and all clones share one socket: calls from many threads are
/// multiplexed on it by msgid, so a call the manager parks (a blocking `get`) does not delay the
/// calls of other threads.
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
    address: Address,
    authkey: Vec<u8>,
    /// The time limits it connects and calls with.
    options: ConnectOptions,
    /// Where the authkey came from, for error messages.
    key_from: &'static str,
    /// The run of the manager this client first connected to, the only one it talks to.
    run: ManagerRun,
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

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the authkey.
        f.debug_struct("Client")
            .field("address", &self.inner.address)
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
}

impl Hold {
    /// Takes over what `other` holds.
    pub(crate) fn merge(&mut self, mut other: Hold) {
        if other.ids.is_empty() {
            return;
        }
        self.ids.append(&mut other.ids);
        self.client = other.client.take();
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if client.inner.refs.release_holds(&self.ids) {
                client.flush_soon();
            }
        }
    }
}

impl Client {
    /// Connects to the manager at `address` and authenticates with `authkey`.
    ///
    /// Fails with [`Error::Connect`] when nothing listens there and with
    /// [`Error::Authentication`] when the authkey is not the manager's.
    ///
    /// The client is bound to the manager's current run ([`Client::manager_run`]): should a
    /// forked child find another run at the address (the manager was restarted), its calls
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
        Client::connect_from(address, authkey, "given to Client::connect", options)
    }

    /// Connects with an authkey that came from `key_from` (for error messages).
    #[doc(hidden)]
    pub fn connect_from(
        address: &Address,
        authkey: &[u8],
        key_from: &'static str,
        options: &ConnectOptions,
    ) -> Result<Client> {
        let mut conn = Connection::open(address, authkey, key_from, options)?;
        Ok(Client {
            inner: Arc::new_cyclic(|inner| {
                let refs = Arc::new(Refs::new(inner.clone()));
                conn.set_refs(refs.clone());
                Inner {
                    address: address.clone(),
                    authkey: authkey.to_vec(),
                    options: options.clone(),
                    key_from,
                    run: conn.run().clone(),
                    conn: Slot::new(conn),
                    refs,
                }
            }),
        })
    }

    /// Connects using [`ENV_ADDRESS`] and [`ENV_AUTHKEY`], as set for the worker processes of a
    /// manager.
    pub fn from_env() -> Result<Client> {
        Client::from_env_values(env_var(ENV_ADDRESS), env_var(ENV_AUTHKEY))
    }

    /// [`Client::from_env`] with the variables' values given (tests set no real variables:
    /// the environment is shared by every test thread).
    pub(crate) fn from_env_values(
        address: Result<String>,
        authkey: Result<String>,
    ) -> Result<Client> {
        let address: Address = address?.parse().map_err(|e: Error| Error::Env {
            var: ENV_ADDRESS,
            reason: e.to_string(),
        })?;
        let authkey = hex::decode(authkey?.trim()).map_err(|e| Error::Env {
            var: ENV_AUTHKEY,
            reason: format!("not hexadecimal: {e}"),
        })?;
        Client::connect_from(
            &address,
            &authkey,
            ENV_AUTHKEY,
            &ConnectOptions::from_env()?,
        )
    }

    /// The manager's address.
    pub fn address(&self) -> &Address {
        &self.inner.address
    }

    /// The authkey, for handing to processes this one starts (as hex in [`ENV_AUTHKEY`]).
    pub fn authkey(&self) -> &[u8] {
        &self.inner.authkey
    }

    /// The run of the manager this client is bound to: its objects are this run's. Tokens
    /// carry it, and `from_token` refuses a token of another run.
    pub fn manager_run(&self) -> &ManagerRun {
        &self.inner.run
    }

    /// Checks that `token` belongs to this client's run (see [`Token`](crate::Token)).
    pub(crate) fn expect_run(&self, token: &crate::Token) -> Result<()> {
        token.expect_run(&self.inner.run, &self.inner.address)
    }

    /// The connection of this process, opening a new one if this is a forked child.
    fn connection(&self) -> Result<&Connection> {
        let conn = self.inner.conn.get();
        if conn.pid() == crate::atfork::current_pid() {
            return Ok(conn);
        }
        debug!(address = %self.inner.address, "forked child: opening a connection of its own");
        let mut fresh = Connection::open(
            &self.inner.address,
            &self.inner.authkey,
            self.inner.key_from,
            &self.inner.options,
        )?;
        if fresh.run().id != self.inner.run.id {
            // The manager was restarted: this client's ids name other objects there now.
            let address = self.inner.address.to_string();
            return Err(fresh.run().mismatch(&self.inner.run.id, &address, &address));
        }
        fresh.set_refs(self.inner.refs.clone());
        let (conn, won) = self.inner.conn.replace(conn, fresh);
        if won {
            self.adopt_inherited(conn)?;
        }
        Ok(conn)
    }

    /// In a forked child, on its new connection: `adopt` the object of every proxy inherited
    /// from the parent, pipelined, so that this connection holds them as the parent's did.
    /// `Process::spawn` exported them before forking, so the adoption takes over a handoff
    /// and the objects survive the parent dropping its proxies at once; after a raw `fork`
    /// without [`export_for_fork`] it works as `incref`, and an object the parent freed in
    /// between is gone (its proxies get `UnknownObjectError`).
    fn adopt_inherited(&self, conn: &Connection) -> Result<()> {
        /// Adopts per write: the replies of one batch stay far below what the manager
        /// buffers for a connection before it stops reading it.
        const BATCH: usize = 4096;
        let ids = self.inner.refs.take_inherited();
        for batch in ids.chunks(BATCH) {
            let args: Vec<Args> = batch.iter().map(|&id| Args::object(id)).collect();
            let calls: Vec<(&str, &Args)> = args.iter().map(|a| ("adopt", a)).collect();
            for (&id, reply) in batch.iter().zip(conn.call_many(&calls)?) {
                match reply {
                    Ok(_) => self.inner.refs.adopted(id),
                    Err(e) => debug!(id, error = %e, "forked child: could not adopt an object"),
                }
            }
        }
        if !ids.is_empty() {
            debug!(
                objects = ids.len(),
                "forked child: adopted the inherited objects"
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
        let deadline = self
            .inner
            .options
            .call_timeout
            .filter(|_| !agora_proto::methods::may_wait(&cmd.method));
        self.run_until(cmd, deadline)
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
        let args = cmd.args?;
        let deadline = timeout.map(|t| (Instant::now() + t, t));
        let reply = self.connection()?.call_until(&cmd.method, &args, deadline);
        // Counted before anything is decoded, and held until the decoding is done.
        let _hold = self.count(&cmd.method, &args, &reply);
        self.decoding(|| (cmd.decode)(reply))
            .map_err(|e| e.in_call(&cmd.method, args.bytes()))
    }

    /// Counts the references the manager counted for this connection in answering `method`
    /// (`PROTOCOL.md`, 3.2): the id a `create` returns, the object of an `incref` or `adopt`,
    /// and every reference in a successful result. Most results hold none, which a byte check
    /// tells without walking them; then nothing is locked or allocated.
    pub(crate) fn count(&self, method: &str, args: &Args, reply: &Reply) -> Hold {
        let Ok(result) = reply else {
            return Hold::default();
        };
        let mut ids = Vec::new();
        match method {
            "create" => ids.extend(agora_proto::params::int_u64(result)),
            "incref" | "adopt" => ids.extend(agora_proto::params::int_u64(args.bytes())),
            _ => {}
        }
        if agora_proto::objref::may_hold_refs(result) {
            agora_proto::objref::for_each_ref(result, |found| {
                if let agora_proto::objref::Found::Ref { id, .. } = found {
                    ids.push(id);
                }
            });
        }
        if ids.is_empty() {
            return Hold::default();
        }
        self.inner.refs.received_held(&ids);
        Hold {
            client: Some(self.clone()),
            ids,
        }
    }

    /// A proxy of `id` was made on this client.
    pub(crate) fn proxy_made(&self, id: u64) {
        self.inner.refs.acquire(id);
    }

    /// A proxy of `id` was dropped: when it was the last, the object is given back to the
    /// manager with the next write (at once if the connection is idle).
    pub(crate) fn proxy_dropped(&self, id: u64) {
        if self.inner.refs.release(id) {
            self.flush_soon();
        }
    }

    /// Writes due decrefs now if the connection is idle. Not in a forked child that has not
    /// opened its own connection yet: they go with its first request, after the adoptions.
    fn flush_soon(&self) {
        let conn = self.inner.conn.get();
        if conn.pid() == crate::atfork::current_pid() {
            conn.flush_if_idle();
        }
    }

    /// `export [id]`: a handoff that keeps the object alive for a process this one hands it to
    /// (a token, a fork), until that process adopts it or the manager's `--handoff-seconds`
    /// pass.
    pub(crate) fn export(&self, id: u64) -> Result<()> {
        self.run(export_cmd(id))
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
            pipeline.add(export_cmd(id));
        }
        if let Err(e) = pipeline.execute()?.check() {
            if !e.is(ErrorName::UnknownObjectError) {
                debug!(error = %e, "export before a fork");
            }
        }
        Ok(())
    }

    /// `adopt [id]`: this connection holds the object from now on, taking over a handoff if
    /// there is one. Fails with `UnknownObjectError` when the object is gone.
    pub(crate) fn adopt(&self, id: u64) -> Result<()> {
        self.run(Cmd::object(id, "adopt", decode::unit, |_| Ok(())))
    }

    /// Runs `f` with this client as the one that shared-object references decode into.
    pub(crate) fn decoding<R>(&self, f: impl FnOnce() -> R) -> R {
        context::with(self, f)
    }

    /// Sends many calls in one write and waits for all replies; used by pipelines. The
    /// references in the replies are counted and held until the returned [`Hold`] goes.
    pub(crate) fn run_many(&self, calls: &[(&str, &Args)]) -> Result<(Vec<Reply>, Hold)> {
        let replies = self.connection()?.call_many(calls)?;
        let mut hold = Hold::default();
        for ((method, args), reply) in calls.iter().zip(&replies) {
            hold.merge(self.count(method, args, reply));
        }
        Ok((replies, hold))
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
        self.decoding(|| {
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
    pub fn shutdown(&self) -> Result<()> {
        self.run(Cmd::with_args("shutdown", Args::default(), decode::unit))
    }
}

/// `export [id]` as a command.
fn export_cmd(id: u64) -> Cmd<()> {
    Cmd::object(id, "export", decode::unit, |_| Ok(()))
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
