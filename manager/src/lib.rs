//! The agora manager: a MessagePack-RPC server that hosts shared objects.
//!
//! Clients in other processes (the Rust client, Python, anything that speaks `PROTOCOL.md`)
//! connect over a Unix socket, TCP or TLS on TCP, authenticate with the shared authkey, create objects
//! (dicts, lists, values, arrays, namespaces) and call their methods.
//!
//! # Layout
//! - [`config`]: [`Config`] (authkey, limits) and [`Listener`] (bound sockets).
//! - [`config_file`]: `agora-manager --config FILE`: a TOML file whose keys are the flags.
//! - [`server`]: [`Server`], its accept loops, the state connections share, shutdown.
//! - [`session`]: one connection: framing, the `hello`/`auth` handshake, replies.
//! - [`parked_calls`]: a connection's parked calls, run by the connection's own task.
//! - [`auth`]: the challenge and HMAC-SHA256 check, and the worker and admin roles.
//! - [`limits`]: the limits an admin may change while the manager runs (`limits`), read
//!   where they apply, and the count of open connections.
//! - [`throttle`]: failed authentication attempts slowed down per peer.
//! - [`conn_log`]: a connection's log span, why it ended and its totals.
//! - [`peer`]: who is at the other end of a connection (address, and a Unix peer's pid and uid).
//! - [`dispatch`]: routes `create`/`lookup`/`delete`/`objects`, the reference counts
//!   (`incref`/`decref`/`export`/`adopt`) and `<kind>.<method>`.
//! - [`registry`]: objects by id and by name, and their lifetimes ([`registry::holders`]): an
//!   unnamed object lives while a connection, a value nested in a live object, or a handoff
//!   holds it, and is freed (as by `delete`) when the last one goes.
//! - [`objects`]: one file per kind; each object owns its state behind its own lock.
//! - [`store`]: where the objects live: memory (the default) or, with the feature `etcd`, an
//!   etcd cluster that several managers serve the same objects from.
//! - [`lifecycle`]: the one core every blocking object uses: parked calls in FIFO lines,
//!   typed grants, expiry, cancellation, give-back of undeliverable grants, owner death,
//!   deletion, and each connection's record of what it holds.
//! - [`inspect`]: the `stats` answer as tables or JSON, for `agora-manager inspect`.
//! - [`metrics`]: the same counts for Prometheus, served at `/metrics` (`--metrics`).
//! - [`stats`]: calls and errors by method, the open connections, and the `stats` answer
//!   that `agora-manager inspect` shows.
//! - [`spin`]: a busy connection polls briefly for its next request before its thread sleeps,
//!   since waking a sleeping thread costs more than a call (tens of microseconds on a VM).
//! - [`tls`]: TLS on TCP: the server's certificate and key, and a TLS connection as the
//!   session reads and writes it.
//!
//! # The path of a request
//! A connection task reads what arrived into a [`agora_proto::FrameDecoder`]; every complete
//! request is parsed ([`agora_proto::envelope::parse`]), dispatched, and its reply appended to
//! one output buffer, written as far as the socket takes it at once, the rest as it drains
//! (past [`Config::max_output_bytes`] unwritten, the connection reads no more requests until
//! it has drained). Then, if the client is calling in a loop, the connection polls for its
//! next request for a few tens of microseconds, yielding to the runtime between polls, before
//! it lets its thread sleep. An object operation locks only that object, so operations on
//! different objects run in parallel on the runtime's threads, and one on a single object is
//! atomic.
//!
//! # Limits
//! Besides the limits on each message ([`agora_proto::Limits`]), a manager bounds what each
//! connection may cost: how many it serves at once ([`Config::max_connections`]), how long
//! one may take to authenticate ([`Config::auth_timeout`]), and how many bytes of replies its
//! client may leave unread ([`Config::max_output_bytes`]). Each refusal or close is logged.
//! These, and how many calls one connection may have parked, may be changed by an admin
//! connection while the manager runs ([`limits`]).
//!
//! # Running
//! The `agora-manager` binary wraps [`run_blocking`]; programs embed a manager through the
//! `agora` crate's `Manager::spawn`.

pub mod auth;
pub mod chain;
pub mod config;
pub mod config_file;
pub mod conn_log;
pub mod dispatch;
pub mod inspect;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod objects;
pub mod parked_calls;
pub mod peer;
pub mod registry;
pub mod server;
pub mod session;
pub mod spin;
pub mod stats;
pub mod store;
pub mod throttle;
pub mod tls;

use std::io::{self, Read};
use std::os::fd::OwnedFd;

pub use config::{Config, Listener, Run};
pub use server::{Server, ShutdownHandle};

/// Runs a manager on the current thread until it is told to stop: SIGTERM or SIGINT, the
/// `shutdown` method, or, when `lifeline` is given, end-of-file on that descriptor (the write
/// end is held by the parent process, so its death, even by SIGKILL, closes it).
///
/// Builds its own tokio runtime: call it from a thread without one (after `fork`, from a fresh
/// thread, since the forking thread's thread-locals may still say it is inside a runtime).
pub fn run_blocking(
    listeners: Vec<Listener>,
    config: Config,
    lifeline: Option<OwnedFd>,
) -> io::Result<()> {
    run_blocking_then(listeners, config, lifeline, || {})
}

/// As [`run_blocking`], calling `ready` once the manager is ready: its listeners accept, and
/// SIGTERM and SIGINT already stop it cleanly (so a signal sent as soon as a supervisor learns
/// of the manager never kills it half-way). The `agora-manager` binary prints its ready line
/// there.
pub fn run_blocking_then(
    listeners: Vec<Listener>,
    config: Config,
    lifeline: Option<OwnedFd>,
    ready: impl FnOnce(),
) -> io::Result<()> {
    run_blocking_with(listeners, None, config, lifeline, |_| ready())
}

/// As [`run_blocking_then`], serving the metrics at `/metrics` on `metrics` too, when given
/// (see [`metrics`]), and keeping the objects in the store [`Config::store`] names, which it
/// opens first. `ready` is given the run clients will see (the store's, for etcd).
pub fn run_blocking_with(
    listeners: Vec<Listener>,
    metrics: Option<std::net::TcpListener>,
    config: Config,
    lifeline: Option<OwnedFd>,
    ready: impl FnOnce(&Run),
) -> io::Result<()> {
    let threads = config.threads.max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("agora-manager")
        .enable_all()
        .build()?;
    tracing::info!(threads, "runtime started");
    let store = runtime
        .block_on(store::Store::open(&config.store))
        .map_err(io::Error::other)?;
    let mut server = Server::with_store(listeners, config, store.clone())?;
    if let Some(listener) = metrics {
        server = server.with_metrics(listener);
    }
    if let Some(fd) = lifeline {
        watch_lifeline(fd, server.shutdown_handle())?;
    }
    let run = server.run_id().clone();
    runtime.block_on(async move {
        let stop = termination_signal()?;
        let lost = keep_store_alive(&store, server.shutdown_handle());
        ready(&run);
        let served = server.run(stop).await;
        close_store(&store).await;
        served?;
        if lost.load(std::sync::atomic::Ordering::Acquire) {
            return Err(io::Error::other(
                "stopped: the etcd lease could not be renewed, so every holding this manager \
                 granted is gone (is etcd reachable from here, with a quorum?)",
            ));
        }
        Ok(())
    })
}

/// Keeps the store's lease alive; a manager that lost it stops (see [`store::etcd`]), and the
/// flag returned is set, so that the run ends with an error rather than as a clean stop.
fn keep_store_alive(
    store: &store::Store,
    handle: ShutdownHandle,
) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    match store {
        store::Store::Memory => drop(handle),
        #[cfg(feature = "etcd")]
        store::Store::Etcd(etcd) => {
            let (etcd, flag) = (etcd.clone(), lost.clone());
            tokio::spawn(async move {
                etcd.keep_lease_alive().await;
                tracing::error!("stopping: this manager's holdings in etcd are gone");
                flag.store(true, std::sync::atomic::Ordering::Release);
                handle.shutdown();
            });
        }
    }
    lost
}

/// Gives back what the store holds for this manager (the etcd lease: every holding of its
/// connections is released at once rather than when the lease would expire).
async fn close_store(store: &store::Store) {
    match store {
        store::Store::Memory => {}
        #[cfg(feature = "etcd")]
        store::Store::Etcd(etcd) => etcd.close().await,
    }
}

/// Shuts the server down when the lifeline reaches end-of-file (or fails).
fn watch_lifeline(fd: OwnedFd, handle: ShutdownHandle) -> io::Result<()> {
    std::thread::Builder::new()
        .name("agora-lifeline".into())
        .spawn(move || {
            let mut pipe = std::fs::File::from(fd);
            let mut buf = [0u8; 64];
            // Anything written is ignored; only end-of-file or an error ends the wait.
            while matches!(pipe.read(&mut buf), Ok(n) if n > 0) {}
            tracing::info!("parent process is gone: shutting down");
            handle.shutdown();
        })?;
    Ok(())
}

/// Installs the SIGTERM, SIGINT and SIGHUP handlers now (inside a tokio runtime) and returns
/// a future that completes when SIGTERM or SIGINT arrives. SIGHUP, whose default action would
/// kill the manager without its cleanup (parked calls unanswered, the socket file left
/// behind), is logged and ignored: a manager's settings are fixed for its run (rereading a
/// config file could not change its listeners or the limits its connections already use).
pub fn termination_signal() -> io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        loop {
            tokio::select! {
                _ = term.recv() => return tracing::info!("SIGTERM"),
                _ = int.recv() => return tracing::info!("SIGINT"),
                _ = hup.recv() => tracing::info!(
                    "SIGHUP ignored: settings are fixed for the run; SIGTERM stops the manager"
                ),
            }
        }
    })
}
