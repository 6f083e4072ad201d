//! [`Client`]: a handle on one manager, shared by every thread and every proxy of a process.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::address::Address;
use crate::command::{decode, Args, Cmd};
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::proxies::context;
use crate::run::ManagerRun;
use crate::slot::Slot;

/// The environment variable holding the manager's address (`unix:/path` or `tcp:host:port`).
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

struct Inner {
    address: Address,
    authkey: Vec<u8>,
    /// The run of the manager this client first connected to, the only one it talks to.
    run: ManagerRun,
    conn: Slot,
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
    pub fn connect(address: &Address, authkey: &[u8]) -> Result<Client> {
        let conn = Connection::open(address, authkey)?;
        Ok(Client {
            inner: Arc::new(Inner {
                address: address.clone(),
                authkey: authkey.to_vec(),
                run: conn.run().clone(),
                conn: Slot::new(conn),
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
        Client::connect(&address, &authkey)
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
        let fresh = Connection::open(&self.inner.address, &self.inner.authkey)?;
        if fresh.run().id != self.inner.run.id {
            // The manager was restarted: this client's ids name other objects there now.
            let address = self.inner.address.to_string();
            return Err(fresh.run().mismatch(&self.inner.run.id, &address, &address));
        }
        Ok(self.inner.conn.replace(conn, fresh))
    }

    /// Runs one command now: one round trip. Every proxy method is this applied to its `*_cmd`
    /// twin.
    pub fn run<T>(&self, cmd: Cmd<T>) -> Result<T> {
        let args = cmd.args?;
        let reply = self.connection()?.call(&cmd.method, &args);
        self.decoding(|| (cmd.decode)(reply))
    }

    /// Runs `f` with this client as the one that shared-object references decode into.
    pub(crate) fn decoding<R>(&self, f: impl FnOnce() -> R) -> R {
        context::with(self, f)
    }

    /// Sends many calls in one write and waits for all replies; used by pipelines.
    pub(crate) fn run_many(&self, calls: &[(&str, &Args)]) -> Result<Vec<crate::command::Reply>> {
        self.connection()?.call_many(calls)
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
        self.decoding(|| rmp_serde::from_slice(encoded).map_err(Error::decode))
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

    /// Every object of the manager, in the order they were created.
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
