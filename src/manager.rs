//! [`Manager`]: a manager process started from code, tied to the life of the program.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = agora::Manager::spawn()?;
//! let scores = manager.dict_named::<String, i64>("scores")?;
//! scores.set("alice", &3)?;
//! assert_eq!(manager.shutdown()?.code(), Some(0));
//! # Ok(()) }
//! ```
//!
//! # How the manager is started
//! [`Manager::spawn`] needs nothing installed: the manager library is linked into your program,
//! and the manager runs in a child made by `fork`.
//!
//! 1. The parent makes a private directory (mode 0700), binds the Unix socket `manager.sock`
//!    in it (mode 0600), draws a 32-byte random authkey (its workers') and another one, the
//!    admin authkey (its own: see [`Manager::admin`]), and opens the *lifeline*: a pipe whose
//!    write end only the parent holds.
//! 2. It forks. The child points every descriptor except standard error, the listener and the
//!    lifeline's read end at `/dev/null`: it holds no pipe or socket of the parent's (such as
//!    another manager's lifeline, or the pipe the program's standard output feeds). It moves
//!    to its own process group (a Ctrl-C meant for the program must not stop the manager under
//!    it: the program decides when its manager stops), and runs the manager library on a fresh
//!    thread. It ends with `_exit`, never returning into the parent's code.
//! 3. The parent closes its copy of the listener (connections already queue in the backlog),
//!    checks that the manager answers, and connects its [`Client`].
//!
//! # How it stops
//! - Dropping the [`Manager`] (or [`Manager::shutdown`]) closes the lifeline and sends
//!   `SIGTERM`; the manager shuts down in order. If it has not exited after the shutdown
//!   timeout (3 s by default) it gets `SIGKILL`. Either way it is reaped and the directory is
//!   removed.
//! - If the program dies, even by `SIGKILL`, the kernel closes the lifeline's write end, the
//!   manager reads end-of-file and shuts down, and removes its directory itself. No orphaned
//!   managers. (`PR_SET_PDEATHSIG` is not used: it fires when the *thread* that forked exits.)
//! - Workers started with [`Process::spawn`](crate::Process::spawn) or
//!   [`Manager::command`] do not hold the lifeline, so they cannot keep a manager alive; nor
//!   do children of a raw `fork` (a `pthread_atfork` handler points their copy at
//!   `/dev/null`, as it does the client's sockets).
//!
//! # Fork, threads, and the exec start method
//! The child of `fork` in a multi-threaded program inherits every lock as it was at that
//! instant, held or not, and only the forking thread. The manager child touches little of the
//! parent's state (the allocator, which glibc makes fork-safe, thread creation, the standard
//! library, and tokio's process-wide signal socket, which the child points at a socket of its
//! own so that its runtime builds and receives its signals: see `fork`), but a lock another
//! thread held there would hang it. So `Manager::spawn` works from inside a tokio runtime of
//! either flavour (`#[tokio::main]`, `#[tokio::main(flavor = "current_thread")]`), and a
//! program that runs other threads of its own does best to call [`Manager::spawn`] early,
//! **before it starts them** (a thread pool), or to use the exec start method. If the manager
//! fails or does not answer within the startup timeout (10 s by default), `spawn` returns
//! [`SpawnError::ManagerExited`] or [`SpawnError::NotReady`] instead of hanging.
//!
//! Programs that already run threads use the *exec* start method
//! ([`ManagerBuilder::reexec`]): the manager is a fresh execution of the current program,
//! which inherits nothing but the sockets and the lifeline. Its cost is one line in `main`:
//! [`run_manager_if_requested`] must run first, as Python's `spawn` start method needs its
//! `if __name__ == "__main__":` guard; a library cannot arrange that by itself, which is why
//! fork, needing nothing, is the default. The standalone `agora-manager` program is the third
//! way, for managers that are not tied to one program's life.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::ops::Deref;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use agora_client::{Address, Addresses, Client, ENV_ADDRESS, ENV_AUTHKEY};
use agora_manager::store::StoreSpec;
use agora_manager::{Config, Listener};
use agora_proto::Limits;

use crate::fork;

mod reexec;

use reexec::ExecSpec;
pub use reexec::{run_manager_if_requested, ROLE_ENV};

/// Length of a generated authkey, in bytes.
pub const AUTHKEY_LEN: usize = 32;

/// How long [`Manager::spawn`] waits for the manager to answer, unless configured otherwise.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long dropping a [`Manager`] waits for an orderly exit before `SIGKILL`, unless
/// configured otherwise.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// The name of the socket file in the manager's private directory.
const SOCKET_NAME: &str = "manager.sock";

/// Why a manager could not be started. `Debug` shows what `Display` shows (with the causes
/// it does not already name), so that a `main` returning `Result` prints the advice.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// An operating-system step of the startup failed; `step` says which.
    #[error("cannot start the manager: {step}: {source}")]
    Io {
        /// What was being done, e.g. "create a private directory in the temporary directory".
        step: &'static str,
        /// The error the system returned.
        #[source]
        source: io::Error,
    },
    /// No authkey could be drawn from the system's random source.
    #[error("cannot start the manager: no random authkey: {0}")]
    Random(getrandom::Error),
    /// The builder was given something that cannot work.
    #[error("cannot start the manager: {0}")]
    InvalidConfig(&'static str),
    /// The manager process ended before it served; its standard error says why. With the fork
    /// start method, a cause can be a program that already runs threads, one of which left
    /// the child state it needed: spawn the manager before starting them, or use
    /// [`ManagerBuilder::reexec`].
    #[error(
        "the manager process exited during startup ({0}); its standard error says why. If this \
         program already runs threads, spawn the manager before starting them or use the exec \
         start method (Manager::builder().reexec())"
    )]
    ManagerExited(ExitStatus),
    /// The manager process did not answer in time and was killed. The usual cause is a fork
    /// from a program that already had threads, one of which held a lock the child needed:
    /// spawn the manager earlier, before starting threads, or raise the startup timeout on a
    /// very slow machine.
    #[error(
        "the manager process did not answer within {0:?} and was killed; spawn the manager \
         before the program starts threads, or raise the startup timeout"
    )]
    NotReady(Duration),
    /// The manager runs, but the handle's client could not connect or authenticate.
    #[error("the manager started but the client could not connect: {0}")]
    Connect(#[source] agora_client::Error),
}

impl std::fmt::Debug for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        agora_client::report(self, f)
    }
}

impl SpawnError {
    fn io(step: &'static str) -> impl FnOnce(io::Error) -> SpawnError {
        move |source| SpawnError::Io { step, source }
    }
}

/// Options for a manager started from code; [`Manager::builder`] makes one.
///
/// With no options it behaves as [`Manager::spawn`]: a private Unix socket and a fresh random
/// authkey.
#[derive(Clone)]
pub struct ManagerBuilder {
    tcp: Vec<String>,
    authkey: Option<Vec<u8>>,
    admin_authkey: Option<Vec<u8>>,
    limits: Limits,
    max_in_flight: Option<usize>,
    handoff_lease: Duration,
    /// `None`: this process's `AGORA_SPIN_US` budget.
    spin_budget: Option<Duration>,
    startup_timeout: Duration,
    shutdown_timeout: Duration,
    /// `None`: fork.
    exec: Option<ExecSpec>,
    /// Where the objects live.
    store: StoreSpec,
}

impl fmt::Debug for ManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the authkey: Debug output ends up in logs.
        f.debug_struct("ManagerBuilder")
            .field("tcp", &self.tcp)
            .field("authkey", &self.authkey.as_ref().map(|_| "<redacted>"))
            .field(
                "admin_authkey",
                &self.admin_authkey.as_ref().map(|_| "<redacted>"),
            )
            .field("limits", &self.limits)
            .field("max_in_flight", &self.max_in_flight)
            .field("handoff_lease", &self.handoff_lease)
            .field("spin_budget", &self.spin_budget)
            .field("startup_timeout", &self.startup_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("exec", &self.exec)
            .field("store", &self.store)
            .finish()
    }
}

impl Default for ManagerBuilder {
    fn default() -> Self {
        ManagerBuilder {
            tcp: Vec::new(),
            authkey: None,
            admin_authkey: None,
            limits: Limits::default(),
            max_in_flight: None,
            handoff_lease: agora_manager::config::DEFAULT_HANDOFF_LEASE,
            spin_budget: None,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            exec: None,
            store: StoreSpec::Memory,
        }
    }
}

impl ManagerBuilder {
    /// Also listen on TCP at `address` (`"127.0.0.1:0"` picks a free port; see
    /// [`Manager::addresses`] for the one chosen), for clients on other machines or in
    /// containers. Repeatable. The handle itself always uses the private Unix socket.
    ///
    /// Anyone who can reach the port and knows the authkey can use the objects, and the
    /// traffic is not encrypted: prefer loopback or a trusted network.
    pub fn listen_tcp(mut self, address: impl Into<String>) -> Self {
        self.tcp.push(address.into());
        self
    }

    /// Use this authkey instead of a fresh random one, for clients that get it another way
    /// than from this process (a file, a secret store). Must not be empty.
    pub fn authkey(mut self, authkey: impl Into<Vec<u8>>) -> Self {
        self.authkey = Some(authkey.into());
        self
    }

    /// Use this admin authkey instead of a fresh random one: the key of the connections that
    /// may call `shutdown`, `stats` and `limits`, and force deletes (`PROTOCOL.md`, section 2),
    /// for an operator's tools that get it another way than from [`Manager::admin_authkey`].
    /// Must not be empty, nor the authkey.
    pub fn admin_authkey(mut self, admin_authkey: impl Into<Vec<u8>>) -> Self {
        self.admin_authkey = Some(admin_authkey.into());
        self
    }

    /// Limits on what one connection may send (message size, nesting depth, container length).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Most requests one connection may have in flight.
    pub fn max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = Some(max_in_flight);
        self
    }

    /// How long an exported object (a token taken, a proxy handed to a forked worker) stays
    /// alive waiting for the receiving process to adopt it when nothing else holds it, as
    /// `agora-manager --handoff-seconds` sets it (PROTOCOL.md, section 3.2). Default: 300 s.
    /// Raise it for tokens redeemed long after they are taken (or name the object instead).
    pub fn handoff_lease(mut self, lease: Duration) -> Self {
        self.handoff_lease = lease;
        self
    }

    /// How long the manager polls a busy connection for its next request before it sleeps
    /// (`Duration::ZERO`: never; at most 1 ms is used), as `agora-manager --spin-us` sets it.
    ///
    /// By default the manager polls as this process's clients do: for the budget
    /// `AGORA_SPIN_US` sets ([`spin_budget`](crate::spin_budget): 50 µs when unset, none on
    /// one CPU), so that one variable tunes, or turns off, the polling of both sides, as it
    /// does for the `agora-manager` program.
    pub fn spin_budget(mut self, budget: Duration) -> Self {
        self.spin_budget = Some(budget);
        self
    }

    /// Where the manager keeps the objects, as `agora-manager --store` says: memory (the
    /// default), or an etcd cluster (`"etcd://HOST:PORT/PREFIX".parse()?`) that other managers
    /// may serve too; that needs this crate's feature `etcd`, else the spawn fails with
    /// [`SpawnError::NotReady`] naming the feature. See docs/stores.md.
    pub fn store(mut self, store: StoreSpec) -> Self {
        self.store = store;
        self
    }

    /// How long [`spawn`](ManagerBuilder::spawn) waits for the manager to answer before it
    /// kills it and fails with [`SpawnError::NotReady`].
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// How long dropping the [`Manager`] waits for an orderly exit before `SIGKILL`.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Start the manager by executing the current program again instead of forking, for
    /// programs that already run threads of their own (a fork copies only the calling thread,
    /// and the locks the others held).
    ///
    /// The program's `main` must call [`run_manager_if_requested`] before anything else; see
    /// there. The new execution gets no arguments; use [`exec`](ManagerBuilder::exec) to pass
    /// some (a test binary needs a test name, say).
    pub fn reexec(mut self) -> Self {
        self.exec = Some(ExecSpec {
            program: None,
            args: Vec::new(),
        });
        self
    }

    /// Start the manager by executing `program` with `args`, a program whose `main` calls
    /// [`run_manager_if_requested`] first; `None` means the current program. See
    /// [`reexec`](ManagerBuilder::reexec).
    pub fn exec<I, S>(mut self, program: Option<PathBuf>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        self.exec = Some(ExecSpec {
            program,
            args: args.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// Starts the manager process and connects to it. See the [module docs](self) for what
    /// happens and for the rule about threads.
    ///
    /// # Errors
    /// [`SpawnError`], whose message says which step failed.
    pub fn spawn(self) -> Result<Manager, SpawnError> {
        Manager::spawn_with(self)
    }
}

/// A manager process owned by this program, and a client connected to it.
///
/// Derefs to [`Client`], so the client's methods are the manager's: `manager.dict()`,
/// `manager.dict_named("scores")`, `manager.list()`, ... Clone the client
/// ([`Manager::client`]) to hand a connection to a thread; objects keep working until the
/// manager stops.
///
/// Dropping it stops the manager (see the [module docs](self)). A copy of this value that
/// ends up in another process (moved into a forked worker's closure, say) does not stop the
/// manager when dropped there: only the process that spawned the manager owns it.
pub struct Manager {
    client: Client,
    /// The key of admin connections; the handle's own client and its workers use the authkey.
    admin_authkey: Vec<u8>,
    process: ManagerProcess,
    /// The address the handle connects to (the Unix socket), then any TCP ones.
    addresses: Vec<Address>,
    /// The polling budget the manager was started with.
    spin_budget: Duration,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("pid", &self.process.pid)
            .field("addresses", &self.addresses)
            .field("spin_budget", &self.spin_budget)
            .finish_non_exhaustive()
    }
}

impl Deref for Manager {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// The key given, refused with `if_empty` when it is empty, else a fresh random one.
fn key_or_random(given: Option<Vec<u8>>, if_empty: &'static str) -> Result<Vec<u8>, SpawnError> {
    match given {
        Some(key) if key.is_empty() => Err(SpawnError::InvalidConfig(if_empty)),
        Some(key) => Ok(key),
        None => {
            let mut key = vec![0u8; AUTHKEY_LEN];
            getrandom::fill(&mut key).map_err(SpawnError::Random)?;
            Ok(key)
        }
    }
}

impl Manager {
    /// Starts a manager with no configuration: a private Unix socket and a fresh random
    /// authkey. Shorthand for `Manager::builder().spawn()`.
    ///
    /// Call it before the program starts threads (see the [module docs](self)).
    ///
    /// # Errors
    /// [`SpawnError`], whose message says which step failed.
    pub fn spawn() -> Result<Manager, SpawnError> {
        Manager::builder().spawn()
    }

    /// Options: TCP listeners, an explicit authkey, limits, timeouts.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// The manager's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid as u32
    }

    /// The address of the private Unix socket, the one this handle uses. Other processes
    /// connect with it and [`authkey`](Manager::authkey) (or through
    /// [`command`](Manager::command)).
    pub fn address(&self) -> &Address {
        &self.addresses[0]
    }

    /// Every address the manager listens on: the Unix socket first, then the TCP ones with the
    /// ports actually bound.
    pub fn addresses(&self) -> &[Address] {
        &self.addresses
    }

    /// How long the manager polls a busy connection for its next request before it sleeps,
    /// as it was started with: [`ManagerBuilder::spin_budget`], else this process's
    /// `AGORA_SPIN_US` budget. Zero: it never polls.
    pub fn spin_budget(&self) -> Duration {
        self.spin_budget
    }

    /// The authkey clients must prove they know. Treat it as a secret. It is a worker's key:
    /// everything but `shutdown`, `stats`, `limits` and forced deletes, which take the [admin
    /// authkey](Manager::admin_authkey).
    pub fn authkey(&self) -> &[u8] {
        self.client.authkey()
    }

    /// The admin authkey: the key of connections that may also call `shutdown`, `stats` and
    /// `limits`, and force deletes (`PROTOCOL.md`, section 2), such as `agora-manager
    /// inspect`'s. A fresh random one unless [`ManagerBuilder::admin_authkey`] gave one. It is
    /// not in [`worker_env`](Manager::worker_env): keep it for the operator.
    pub fn admin_authkey(&self) -> &[u8] {
        &self.admin_authkey
    }

    /// A new client connected with the [admin authkey](Manager::admin_authkey), for the calls
    /// reserved to it (`client.shutdown()`, `stats`, `limits`) and for a forced `delete` of an
    /// object other connections hold (the handle's own client, a worker's, is refused that).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = agora::Manager::spawn()?;
    /// // The handle's own client is a worker's: it may not stop the manager.
    /// assert!(manager.client().shutdown().is_err());
    /// manager.admin()?.shutdown()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub fn admin(&self) -> agora_client::Result<Client> {
        let options = agora_client::ConnectOptions::from_env()?;
        let key_from = "the manager's admin authkey, from Manager::spawn";
        let address = Addresses::from(self.address().clone());
        Client::connect_from(&address, &self.admin_authkey, key_from, &options)
    }

    /// The client this handle derefs to, for code that wants its own clone of it (to move
    /// into a thread, say).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The environment a worker program needs to reach this manager with
    /// [`Client::from_env`]: the address and the hex authkey, under [`ENV_ADDRESS`] and
    /// [`ENV_AUTHKEY`]. For process builders other than [`std::process::Command`].
    pub fn worker_env(&self) -> [(&'static str, String); 2] {
        [
            (ENV_ADDRESS, self.address().to_string()),
            (ENV_AUTHKEY, hex::encode(self.authkey())),
        ]
    }

    /// A [`Command`] for `program` with [`worker_env`](Manager::worker_env) set, so the program
    /// reaches this manager with [`Client::from_env`]. Add arguments, then start it with
    /// [`Process::start`](crate::Process::start) or [`Command::spawn`].
    ///
    /// The program does not keep the manager alive: the lifeline is close-on-exec.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command.envs(self.worker_env());
        command
    }

    /// Stops the manager now and returns its exit status: closes the lifeline and sends
    /// `SIGTERM`, waits up to the shutdown timeout, then `SIGKILL`s it. Dropping the handle
    /// does the same and ignores the status.
    ///
    /// An orderly stop exits with status 0; a status killed by `SIGKILL` means the manager
    /// did not stop within the shutdown timeout. Proxies still held elsewhere fail from then
    /// on.
    ///
    /// # Errors
    /// `waitpid` failing, e.g. `ECHILD` when the program reaped the manager by other means.
    pub fn shutdown(mut self) -> io::Result<ExitStatus> {
        self.process.stop()
    }

    fn spawn_with(options: ManagerBuilder) -> Result<Manager, SpawnError> {
        if options.exec.is_some() && reexec::is_unhandled_role() {
            return Err(SpawnError::InvalidConfig(
                "this process was started to be an agora manager, but its main did not call \
                 agora::run_manager_if_requested() first",
            ));
        }
        let authkey = key_or_random(options.authkey.clone(), "the authkey must not be empty")?;
        let admin_authkey = key_or_random(
            options.admin_authkey.clone(),
            "the admin authkey must not be empty",
        )?;
        if admin_authkey == authkey {
            return Err(SpawnError::InvalidConfig(
                "the admin authkey must not be the authkey: every worker would be admin",
            ));
        }
        let mut config = Config::new(authkey.clone());
        config.admin_authkey = Some(admin_authkey.clone());
        config.limits = options.limits;
        if let Some(max_in_flight) = options.max_in_flight {
            config.max_in_flight = max_in_flight;
        }
        config.handoff_lease = options.handoff_lease;
        config.store = options.store.clone();
        // As the agora-manager program does: the option (its --spin-us), else AGORA_SPIN_US
        // through the client's own policy, so that both sides poll with one budget.
        config.spin.budget = options
            .spin_budget
            .unwrap_or_else(agora_client::spin_budget);
        let spin_budget = config.spin.budget;

        let dir = private_dir()?;
        let (mut process, addresses) = start_process(dir, &options, config)?;
        if let Err(e) = wait_ready(&mut process, &addresses[0], options.startup_timeout) {
            let _ = process.stop();
            return Err(e);
        }
        let options = agora_client::ConnectOptions::from_env().map_err(SpawnError::Connect)?;
        let key_from = "the manager's own, from Manager::spawn";
        let first = Addresses::from(addresses[0].clone());
        let client = match Client::connect_from(&first, &authkey, key_from, &options) {
            Ok(client) => client,
            Err(e) => {
                let _ = process.stop();
                return Err(SpawnError::Connect(e));
            }
        };
        tracing::debug!(pid = process.pid, address = %addresses[0], "manager started");
        Ok(Manager {
            client,
            admin_authkey,
            process,
            addresses,
            spin_budget,
        })
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let Err(e) = self.process.stop() {
            tracing::debug!(pid = self.process.pid, error = %e, "could not reap the manager");
        }
    }
}

/// The manager child as its parent sees it, and everything needed to stop it and clean up.
struct ManagerProcess {
    /// The manager's pid: an unreaped child of `owner` while `status` is `None`.
    pid: libc::pid_t,
    /// The process that spawned the manager: the only one that may stop it.
    owner: u32,
    /// The lifeline's write end; `None` once released.
    lifeline: Option<OwnedFd>,
    /// The private directory holding the socket.
    dir: PathBuf,
    shutdown_timeout: Duration,
    /// Set once the manager has been reaped.
    status: Option<ExitStatus>,
}

impl ManagerProcess {
    /// Stops the manager (idempotent) and returns its exit status.
    ///
    /// Closing the lifeline alone makes the manager stop; `SIGTERM` also covers a copy of the
    /// write end leaked into a process forked by other means than this crate. Both return at
    /// once, unlike a `shutdown` call, which would hang on a wedged manager.
    fn stop(&mut self) -> io::Result<ExitStatus> {
        if self.owner != std::process::id() {
            // A copy in a forked child: the manager belongs to the parent. The lifeline
            // number points at /dev/null there (see `fork`), so dropping it is harmless; the
            // process and the directory must not be touched.
            return Err(io::Error::other(
                "this manager belongs to the process that spawned it",
            ));
        }
        if let Some(lifeline) = self.lifeline.take() {
            fork::release(lifeline);
        }
        let result = match self.status {
            Some(status) => Ok(status),
            None => self.wait_or_kill(),
        };
        if let Ok(status) = &result {
            self.status = Some(*status);
        }
        remove_dir(&self.dir);
        result
    }

    fn wait_or_kill(&mut self) -> io::Result<ExitStatus> {
        if let Err(e) = fork::send_signal(self.pid, libc::SIGTERM) {
            tracing::debug!(pid = self.pid, error = %e, "cannot send SIGTERM to the manager");
        }
        if let Some(status) = fork::wait_pid_timeout(self.pid, self.shutdown_timeout)? {
            tracing::debug!(pid = self.pid, %status, "manager stopped");
            return Ok(status);
        }
        tracing::warn!(
            pid = self.pid,
            timeout = ?self.shutdown_timeout,
            "the manager did not stop in time; killing it"
        );
        if let Err(e) = fork::send_signal(self.pid, libc::SIGKILL) {
            tracing::debug!(pid = self.pid, error = %e, "cannot send SIGKILL to the manager");
        }
        fork::wait_pid(self.pid, true)?.ok_or_else(|| {
            io::Error::other("waitpid returned without a status for a blocking wait")
        })
    }
}

/// Removes the manager's private directory (and the socket, should the manager have left it).
fn remove_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the manager's directory")
        }
    }
}

/// Makes a fresh directory only this user can enter, in the temporary directory.
fn private_dir() -> Result<PathBuf, SpawnError> {
    let dir = tempfile::Builder::new()
        .prefix("agora-")
        .tempdir()
        .map_err(SpawnError::io(
            "create a private directory in the temporary directory (is TMPDIR writable?)",
        ))?
        // The directory outlives this value: the manager removes it if the parent dies.
        .keep();
    if let Err(e) = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)) {
        remove_dir(&dir);
        return Err(SpawnError::Io {
            step: "make the private directory 0700",
            source: e,
        });
    }
    Ok(dir)
}

/// Binds the listeners in `dir` and forks the manager. Returns the manager process (which
/// owns `dir` from then on) and the addresses, Unix first. Removes `dir` on failure.
fn start_process(
    dir: PathBuf,
    options: &ManagerBuilder,
    config: Config,
) -> Result<(ManagerProcess, Vec<Address>), SpawnError> {
    let bound = match bind(&dir, &options.tcp) {
        Ok(bound) => bound,
        Err(e) => {
            remove_dir(&dir);
            return Err(e);
        }
    };
    let (unix, tcp_listeners, addresses) = bound;
    let path = dir.join(SOCKET_NAME);

    if options.exec.is_none() {
        fork::warn_if_threaded("Manager::spawn");
    }
    fork::flush_stdout();
    // Held from the pipe's creation to the write end's registration (see `fork`).
    let mut lifelines = fork::lock();
    let forked = pipe()
        .and_then(|(read, write)| Ok((above_stdio(read)?, write)))
        .map_err(SpawnError::io("create the lifeline pipe"))
        .and_then(|(read, write)| {
            let pid = match &options.exec {
                // SAFETY: the child runs `run_manager_child`, which never returns.
                None => unsafe { fork::fork() }.map_err(SpawnError::io("fork the manager process")),
                Some(spec) => reexec::launch(spec, &unix, &tcp_listeners, &read, &config, &dir)
                    .map_err(SpawnError::io("execute the program given to reexec/exec")),
            }?;
            Ok((pid, read, write))
        });
    let (pid, lifeline_read, lifeline_write) = match forked {
        Ok(forked) => forked,
        Err(e) => {
            drop(lifelines);
            remove_dir(&dir);
            return Err(e);
        }
    };
    if pid == 0 {
        lifelines.clear();
        drop(lifelines);
        run_manager_child(unix, path, tcp_listeners, lifeline_read, config, &dir);
    }
    lifelines.push(lifeline_write.as_raw_fd());
    // A child forked by other means than this crate (a raw `fork`) lets go of it too.
    agora_client::fork_guard::protect(lifeline_write.as_raw_fd());
    drop(lifelines);
    // The child has its own copies; the backlog queues connections until it accepts them.
    drop(unix);
    drop(tcp_listeners);
    drop(lifeline_read);
    let process = ManagerProcess {
        pid,
        owner: std::process::id(),
        lifeline: Some(lifeline_write),
        dir,
        shutdown_timeout: options.shutdown_timeout,
        status: None,
    };
    Ok((process, addresses))
}

/// Binds the private Unix socket in `dir` (mode 0600) and the TCP addresses.
#[allow(clippy::type_complexity)]
fn bind(dir: &Path, tcp: &[String]) -> Result<(OwnedFd, Vec<OwnedFd>, Vec<Address>), SpawnError> {
    let path = dir.join(SOCKET_NAME);
    let unix = UnixListener::bind(&path).map_err(SpawnError::io("bind the Unix socket"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(SpawnError::io("make the Unix socket 0600"))?;
    let unix = above_stdio(unix.into()).map_err(SpawnError::io(
        "move the Unix socket above the standard streams",
    ))?;
    let mut addresses = vec![Address::Unix(path)];
    let mut listeners = Vec::new();
    for address in tcp {
        let listener = TcpListener::bind(address.as_str())
            .map_err(SpawnError::io("bind the TCP address given to listen_tcp"))?;
        let local = listener
            .local_addr()
            .map_err(SpawnError::io("read the bound TCP address"))?;
        addresses.push(Address::Tcp(local.to_string()));
        let listener = above_stdio(listener.into()).map_err(SpawnError::io(
            "move a TCP socket above the standard streams",
        ))?;
        listeners.push(listener);
    }
    Ok((unix, listeners, addresses))
}

/// A pipe, close-on-exec at both ends: `(read, write)`.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(fork::last_error());
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Makes sure `fd` is not 0, 1 or 2 (possible when the program runs with a standard stream
/// closed), since the child replaces its standard input.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // try_clone duplicates with F_DUPFD_CLOEXEC at 3 or above.
    fd.try_clone()
}

/// Waits until the manager answers a request on its socket, or exits, or the time is up.
///
/// The listener is bound before the fork, so connecting succeeds at once whatever the child
/// does; only an answer proves the manager serves. The probe sends `hello` (which needs no
/// authentication) and takes the first byte of any reply as the sign of life. A
/// manager that exits meanwhile is reaped here, its status kept in `process`.
fn wait_ready(
    process: &mut ManagerProcess,
    address: &Address,
    timeout: Duration,
) -> Result<(), SpawnError> {
    // [0, 0, "hello", []]: a request with msgid 0.
    const HELLO: &[u8] = &[0x94, 0x00, 0x00, 0xa5, b'h', b'e', b'l', b'l', b'o', 0x90];
    let Address::Unix(path) = address else {
        return Err(SpawnError::InvalidConfig(
            "the handle's address must be a Unix socket",
        ));
    };
    let deadline = Instant::now() + timeout;
    let mut stream =
        UnixStream::connect(path).map_err(SpawnError::io("connect to the manager's socket"))?;
    stream
        .write_all(HELLO)
        .map_err(SpawnError::io("send the startup probe"))?;
    let mut byte = [0u8; 1];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(SpawnError::NotReady(timeout));
        }
        stream
            .set_read_timeout(Some((deadline - now).min(Duration::from_millis(50))))
            .map_err(SpawnError::io("set a timeout on the startup probe"))?;
        let failure = match stream.read(&mut byte) {
            Ok(n) if n > 0 => return Ok(()),
            Ok(_) => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the manager closed the connection without answering",
            ),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                let status = fork::wait_pid(process.pid, false)
                    .map_err(SpawnError::io("wait for the manager process"))?;
                if let Some(status) = status {
                    process.status = Some(status);
                    return Err(SpawnError::ManagerExited(status));
                }
                continue;
            }
            // A reset: the listener closed with our connection still queued.
            Err(e) => e,
        };
        // The manager only drops a connection unanswered when it is going away.
        let status = fork::wait_pid_timeout(process.pid, Duration::from_secs(1))
            .map_err(SpawnError::io("wait for the manager process"))?;
        return match status {
            Some(status) => {
                process.status = Some(status);
                Err(SpawnError::ManagerExited(status))
            }
            None => Err(SpawnError::Io {
                step: "read the startup probe's answer",
                source: failure,
            }),
        };
    }
}

/// The manager child's whole life. Never returns; ends with `_exit`.
fn run_manager_child(
    unix: OwnedFd,
    path: PathBuf,
    tcp: Vec<OwnedFd>,
    lifeline: OwnedFd,
    config: Config,
    dir: &Path,
) -> ! {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut keep: Vec<RawFd> = vec![unix.as_raw_fd(), lifeline.as_raw_fd()];
        keep.extend(tcp.iter().map(AsRawFd::as_raw_fd));
        if let Err(e) = isolate(&keep) {
            return Err(format!("cannot isolate the manager process: {e}"));
        }
        let mut listeners = vec![Listener::Unix {
            listener: UnixListener::from(unix),
            path,
        }];
        listeners.extend(
            tcp.into_iter()
                .map(|fd| Listener::Tcp(TcpListener::from(fd))),
        );
        // A fresh thread: the forking thread may carry a runtime context in its thread-locals,
        // and the manager builds its own runtime.
        let server = std::thread::Builder::new()
            .name("agora-manager".into())
            .spawn(move || agora_manager::run_blocking(listeners, config, Some(lifeline)))
            .map_err(|e| format!("cannot start the manager thread: {e}"))?;
        match server.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the manager failed: {e}")),
            Err(_) => Err("the manager thread panicked".to_owned()),
        }
    }));
    // Normally the manager removed its socket; the directory is ours to remove, in case the
    // parent is gone and cannot.
    let _ = std::fs::remove_dir_all(dir);
    let code = match outcome {
        Ok(Ok(())) => 0,
        Ok(Err(message)) => {
            fork::write_stderr(&format!("agora: {message}\n"));
            1
        }
        Err(_) => {
            fork::write_stderr("agora: the manager process panicked\n");
            101
        }
    };
    fork::exit_now(code)
}

/// Detaches the manager child from the parent's resources: every descriptor but `keep` and
/// standard error now points at `/dev/null` (standard input and output included), but sockets,
/// which point at a socket of the child's own that talks to itself (so that a tokio runtime
/// the parent ran leaves the manager's own runtime a signal socket it can poll: see
/// [`fork`]); signals are unblocked, and the process leads its own process group.
fn isolate(keep: &[RawFd]) -> io::Result<()> {
    let null = fork::open_dev_null()?;
    let loopback = fork::open_loopback()?;
    for fd in fork::open_descriptors() {
        if fd == loopback || keep.contains(&fd) {
            continue;
        }
        if fork::is_socket(fd) {
            fork::disown(loopback, fd)?;
        } else {
            fork::disown(null, fd)?;
        }
    }
    // Every socket that needs it holds its own number for it now.
    // SAFETY: `loopback` is ours and unused from here on.
    unsafe { libc::close(loopback) };
    // Standard input and output: the manager reads nothing and must not write into the
    // program's output (a pipe the program's consumer waits on, or data it prints).
    fork::disown(null, 0)?;
    fork::disown(null, 1)?;
    // SAFETY: `null` is ours and unused from here on.
    unsafe { libc::close(null) };
    // The forking thread's signal mask is inherited; the manager wants SIGTERM delivered.
    // SAFETY: a zeroed sigset_t is a valid argument to sigemptyset, which initialises it.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
    // SAFETY: setpgid(0, 0) only changes this process's group.
    if unsafe { libc::setpgid(0, 0) } != 0 {
        // Not fatal: the manager then shares the terminal's Ctrl-C with the program.
        tracing::debug!(error = %fork::last_error(), "manager could not leave the process group");
    }
    Ok(())
}
