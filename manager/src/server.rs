//! The server: accept loops, the state every connection shares, and an orderly shutdown.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn, Instrument};

use agora_proto::Limits;

use crate::config::{Config, Listener};
use crate::conn_log::{self, Disconnect, Ending};
use crate::limits::AdjustableLimits;
use crate::peer::PeerInfo;
use crate::registry::Registry;
use crate::session::{self, Transport};
use crate::spin::Spinners;
use crate::stats::Stats;
use crate::throttle::Throttle;
use crate::tls::TlsConn;

/// How long connections get to finish after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// State shared by every connection of one manager.
pub struct Shared {
    /// The objects.
    pub registry: Registry,
    /// The configuration.
    pub config: Config,
    /// Set to true once to stop the manager; every task watches it.
    pub shutdown: watch::Sender<bool>,
    /// How many connections are polling for their next request right now.
    pub spinners: Spinners,
    /// The limits an admin may change while the manager runs, read where they apply, and the
    /// count of open connections: each connection's task holds a slot until it ends.
    pub limits: Arc<AdjustableLimits>,
    /// Calls and errors by method, and the open connections, for `stats` and `/metrics`.
    pub stats: Stats,
    /// Every peer's line of `auth` attempts ([`crate::throttle`]).
    pub auth_throttle: Throttle,
}

impl Shared {
    /// The state of a manager with this configuration.
    pub fn new(config: Config) -> io::Result<Shared> {
        Shared::with_store(config, crate::store::Store::Memory)
    }

    /// The state of a manager whose objects live in `store`.
    pub fn with_store(config: Config, store: crate::store::Store) -> io::Result<Shared> {
        let (shutdown, _) = watch::channel(false);
        Ok(Shared {
            registry: Registry::new()?
                .with_handoff_lease(config.handoff_lease)
                .with_store(store),
            auth_throttle: Throttle::new(config.auth_throttle),
            limits: Arc::new(AdjustableLimits::new(&config)),
            config,
            shutdown,
            spinners: Spinners::new(),
            stats: Stats::default(),
        })
    }
}

/// Stops a running [`Server`] from anywhere: another task, a thread, a signal handler.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Shared>);

impl ShutdownHandle {
    /// Starts an orderly shutdown. Idempotent.
    pub fn shutdown(&self) {
        self.0.shutdown.send_replace(true);
    }

    /// True once shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        *self.0.shutdown.borrow()
    }
}

/// A manager: its listeners and shared state, ready to run.
pub struct Server {
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
    /// Where `/metrics` is served, if anywhere.
    metrics: Option<std::net::TcpListener>,
}

impl Server {
    /// A server on these listeners. Fails if the authkey or the admin authkey is empty, if the
    /// admin authkey is the authkey, if [`Config::auth_throttle`] lets no attempt through, or
    /// if [`Config::max_in_flight`], [`Config::max_connections`], [`Config::auth_timeout`] or
    /// [`Config::max_output_bytes`] is zero.
    pub fn new(listeners: Vec<Listener>, config: Config) -> io::Result<Server> {
        Server::with_store(listeners, config, crate::store::Store::Memory)
    }

    /// As [`Server::new`], keeping the objects in `store`, opened already
    /// ([`crate::store::Store::open`]). The run reported to clients is the store's when it has
    /// one (etcd: shared by every manager serving the store), else [`Config::run`].
    pub fn with_store(
        listeners: Vec<Listener>,
        mut config: Config,
        store: crate::store::Store,
    ) -> io::Result<Server> {
        if let Some(run) = store.run() {
            config.run = run;
        }
        let invalid = |why: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, why.to_owned()));
        if config.authkey.is_empty() {
            return invalid("the authkey must not be empty");
        }
        if config.admin_authkey.as_ref().is_some_and(Vec::is_empty) {
            return invalid("the admin authkey must not be empty");
        }
        // Checked here, not only by the programs that build a Config: any embedder's equal
        // keys would otherwise make every worker an admin, silently.
        if config.admin_authkey.as_ref() == Some(&config.authkey) {
            return invalid(
                "the admin authkey is the authkey: every worker would be admin; use another \
                 admin authkey, or none",
            );
        }
        if config.auth_throttle.burst == 0 {
            return invalid("auth_throttle.burst must be at least 1");
        }
        if config.max_in_flight == 0 {
            return invalid("max_in_flight must be at least 1");
        }
        if config.max_connections == 0 {
            return invalid("max_connections must be at least 1");
        }
        if config.auth_timeout.is_zero() {
            return invalid("auth_timeout must not be zero");
        }
        if config.max_output_bytes == 0 {
            return invalid("max_output_bytes must be at least 1");
        }
        if config.limits.max_depth > Limits::DEEPEST {
            return invalid(&format!(
                "max_depth (--max-depth) may be at most {}: some methods decode values \
                 recursively, and deeper nesting could overflow a thread's stack",
                Limits::DEEPEST
            ));
        }
        Ok(Server {
            shared: Arc::new(Shared::with_store(config, store)?),
            listeners,
            metrics: None,
        })
    }

    /// Serves the manager's metrics at `/metrics` on `listener` too ([`crate::metrics`]).
    pub fn with_metrics(mut self, listener: std::net::TcpListener) -> Server {
        self.metrics = Some(listener);
        self
    }

    /// The run this server reports to its clients.
    pub fn run_id(&self) -> &crate::Run {
        &self.shared.config.run
    }

    /// A handle that stops this server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shared.clone())
    }

    /// Logs, at INFO, what this manager is and how it is limited: one line an operator can
    /// check a deployment against.
    fn log_start(&self) {
        let config = &self.shared.config;
        let metrics = self
            .metrics
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.to_string());
        info!(
            version = env!("CARGO_PKG_VERSION"),
            pid = std::process::id(),
            run = %config.run.id,
            listeners = self.addresses().join(" ").as_str(),
            metrics = metrics.as_deref(),
            max_message_bytes = config.limits.max_message_bytes,
            max_depth = config.limits.max_depth,
            max_container_len = config.limits.max_container_len,
            max_in_flight = config.max_in_flight,
            max_connections = config.max_connections,
            max_output_bytes = config.max_output_bytes,
            auth_timeout_secs = config.auth_timeout.as_secs_f64(),
            handoff_secs = config.handoff_lease.as_secs_f64(),
            spin_us = u64::try_from(config.spin.budget.as_micros()).unwrap_or(u64::MAX),
            "manager started"
        );
    }

    /// The addresses clients connect to.
    pub fn addresses(&self) -> Vec<String> {
        self.listeners.iter().map(Listener::address).collect()
    }

    /// Serves until shutdown (the `shutdown` method, a [`ShutdownHandle`], or `stop`
    /// completing), then lets connections finish and removes the socket files.
    pub async fn run(self, stop: impl Future<Output = ()>) -> io::Result<()> {
        self.log_start();
        let mut accepting = JoinSet::new();
        let mut socket_files = Vec::new();
        for listener in self.listeners {
            match listener {
                Listener::Unix { listener, path } => {
                    listener.set_nonblocking(true)?;
                    let listener = tokio::net::UnixListener::from_std(listener)?;
                    socket_files.push(path);
                    accepting.spawn(accept_loop(listener, self.shared.clone()));
                }
                Listener::Tcp(listener) => {
                    listener.set_nonblocking(true)?;
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    accepting.spawn(accept_loop(listener, self.shared.clone()));
                }
                Listener::Tls { listener, config } => {
                    listener.set_nonblocking(true)?;
                    let listener = TlsListener {
                        tcp: tokio::net::TcpListener::from_std(listener)?,
                        acceptor: tokio_rustls::TlsAcceptor::from(config),
                    };
                    accepting.spawn(accept_loop(listener, self.shared.clone()));
                }
            }
        }
        if let Some(listener) = self.metrics {
            listener.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            accepting.spawn(crate::metrics::serve(listener, self.shared.clone()));
        }
        let mut stopping = self.shared.shutdown.subscribe();
        tokio::select! {
            _ = stop => self.shared.shutdown.send_replace(true),
            _ = stopped(&mut stopping) => true,
            () = tick(&self.shared) => true,
        };
        info!("shutting down");
        // At once, not after the drain: a client reconnecting meanwhile is told that nothing
        // listens here, rather than being accepted by a manager on its way out.
        for path in socket_files {
            if let Err(e) = std::fs::remove_file(&path) {
                debug!(
                    path = path.display().to_string().as_str(),
                    error = e.to_string().as_str(),
                    "could not remove socket file"
                );
            }
        }
        while accepting.join_next().await.is_some() {}
        Ok(())
    }
}

/// Once a second: ends the handoffs nobody adopted in time, and frees the objects whose last
/// holder went outside any request (a parked grant dropped, a value freed while a call was
/// still running on its container). Never completes.
async fn tick(shared: &Shared) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let registry = &shared.registry;
        let expired = registry.expire_handoffs(std::time::Instant::now());
        let freed = registry.reap();
        if expired > 0 || freed > 0 {
            debug!(expired, freed, "tick: handoffs expired, objects freed");
        }
    }
}

/// How often [`tick`] runs.
const TICK: Duration = Duration::from_secs(1);

/// Completes once shutdown has started (at once if it already has).
pub async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: drop it here, before any other await.
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// [`stopped`] owning its receiver: a future to make once and poll many times.
pub async fn stopped_owned(mut stopping: watch::Receiver<bool>) {
    stopped(&mut stopping).await;
}

/// Waits (bounded) for the connections to finish after shutdown started.
async fn drain(mut connections: JoinSet<()>) {
    let all_done = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, all_done).await.is_err() {
        warn!("connections still open after the drain timeout; dropping them");
    }
}

/// A listener the accept loop can take connections from.
trait Accept: Send + 'static {
    /// A connection as accepted.
    type Socket: AsRawFd + Send + 'static;
    /// The stream the session serves.
    type Stream: Transport + Send + 'static;
    /// Whether the stream is the socket itself, whose client reads plain bytes: a refused
    /// connection can be told why.
    const PLAIN: bool;

    /// The next connection and a description of its peer.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Socket, String)>> + Send;

    /// The stream to serve on an accepted socket (for TLS, once the handshake is done).
    fn start(
        &self,
        socket: Self::Socket,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send + 'static;
}

impl Accept for tokio::net::UnixListener {
    type Socket = tokio::net::UnixStream;
    type Stream = tokio::net::UnixStream;
    const PLAIN: bool = true;

    async fn accept(&self) -> io::Result<(Self::Socket, String)> {
        let (stream, _) = tokio::net::UnixListener::accept(self).await?;
        Ok((stream, "unix peer".to_owned()))
    }

    fn start(
        &self,
        socket: Self::Socket,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send + 'static {
        std::future::ready(Ok(socket))
    }
}

/// Accepts a TCP connection, with Nagle's algorithm off.
async fn accept_tcp(
    listener: &tokio::net::TcpListener,
) -> io::Result<(tokio::net::TcpStream, String)> {
    let (stream, peer) = listener.accept().await?;
    // Replies are small and latency-bound: never let Nagle hold them back.
    if let Err(e) = stream.set_nodelay(true) {
        debug!(
            peer = peer.to_string().as_str(),
            error = e.to_string().as_str(),
            "could not set TCP_NODELAY"
        );
    }
    Ok((stream, peer.to_string()))
}

impl Accept for tokio::net::TcpListener {
    type Socket = tokio::net::TcpStream;
    type Stream = tokio::net::TcpStream;
    const PLAIN: bool = true;

    async fn accept(&self) -> io::Result<(Self::Socket, String)> {
        accept_tcp(self).await
    }

    fn start(
        &self,
        socket: Self::Socket,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send + 'static {
        std::future::ready(Ok(socket))
    }
}

/// A TCP listener whose connections speak TLS.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl Accept for TlsListener {
    type Socket = tokio::net::TcpStream;
    type Stream = TlsConn;
    const PLAIN: bool = false;

    async fn accept(&self) -> io::Result<(Self::Socket, String)> {
        accept_tcp(&self.tcp).await
    }

    fn start(
        &self,
        socket: Self::Socket,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send + 'static {
        let handshake = self.acceptor.accept(socket);
        async move { handshake.await.map(TlsConn::new) }
    }
}

/// Closes a connection past [`Config::max_connections`], telling it why first if that can be
/// done without waiting (not on TLS, whose handshake has not happened yet).
fn refuse<S: AsRawFd>(socket: S, plain: bool, peer: &str, max: usize) {
    warn!(
        peer,
        max_connections = max,
        "refusing a connection: too many connections"
    );
    if plain {
        let message = format!("too many connections ({max} at most); try again later");
        let mut out = Vec::new();
        session::error_notification(&mut out, agora_proto::ErrorName::LimitError, &message);
        // Written at most once, without blocking: a client that cannot take it is closed anyway.
        let _ = session::send_now(socket.as_raw_fd(), &out);
    }
    drop(socket);
}

/// Serves one accepted connection in its span ([`conn_log::span`]), logging when it connects
/// and when it ends: starts its stream (the TLS handshake), then the session.
pub(crate) async fn connection<S: Transport>(
    start: impl Future<Output = io::Result<S>>,
    shared: Arc<Shared>,
    peer: PeerInfo,
) {
    let accepted = tokio::time::Instant::now();
    let id = uuid::Uuid::new_v4();
    let span = conn_log::span(&id, &peer);
    async move {
        info!("connected");
        let ending = match handshake(start, &shared, accepted).await {
            Ok(stream) => session::serve_from(stream, shared, id, &peer, accepted).await,
            Err(reason) => Ending::before_session(reason),
        };
        ending.log(accepted);
    }
    .instrument(span)
    .await
}

/// Starts a connection's stream. The TLS handshake must be done within
/// [`Config::auth_timeout`] of the accept, which also bounds the rest of the authentication;
/// it is abandoned when the manager stops.
async fn handshake<S: Transport>(
    start: impl Future<Output = io::Result<S>>,
    shared: &Shared,
    accepted: tokio::time::Instant,
) -> Result<S, Disconnect> {
    let timeout = shared.limits.auth_timeout();
    let deadline = accepted + timeout;
    let mut stopping = shared.shutdown.subscribe();
    tokio::select! {
        biased;
        _ = stopped(&mut stopping) => Err(Disconnect::Shutdown),
        started = tokio::time::timeout_at(deadline, start) => match started {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => {
                info!(error = e.to_string().as_str(), "closing connection: TLS handshake failed");
                Err(Disconnect::TlsFailed)
            }
            Err(_) => {
                info!(?timeout,
                      "closing connection: TLS handshake not done in time");
                Err(Disconnect::AuthTimeout)
            }
        },
    }
}

/// Accepts connections until shutdown, then drains them.
async fn accept_loop<L: Accept>(listener: L, shared: Arc<Shared>) {
    let mut stopping = shared.shutdown.subscribe();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stopping) => break,
            Some(_) = connections.join_next() => {}
            accepted = listener.accept() => match accepted {
                Ok((socket, address)) => match shared.limits.admit() {
                    Some(slot) => {
                        let peer = PeerInfo::of(socket.as_raw_fd(), address);
                        let start = listener.start(socket);
                        let shared = shared.clone();
                        connections.spawn(async move {
                            connection(start, shared, peer).await;
                            // The slot frees once the connection is closed and released.
                            drop(slot);
                        });
                    }
                    None => refuse(socket, L::PLAIN, &address, shared.limits.max_connections()),
                },
                Err(e) => {
                    // Out of descriptors, say: back off instead of spinning.
                    warn!(error = e.to_string().as_str(), "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    // Closed before the drain: a connection attempt from now on is refused at once.
    drop(listener);
    drain(connections).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admin_key_that_is_the_authkey_is_refused() {
        let mut config = Config::new(b"0123456789abcdef".to_vec());
        config.admin_authkey = Some(config.authkey.clone());
        let err = Server::new(Vec::new(), config)
            .err()
            .expect("equal keys refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(
            err.to_string().contains("the admin authkey is the authkey"),
            "{err}"
        );
    }
}
