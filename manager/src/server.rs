//! The server: accept loops, the state every connection shares, and an orderly shutdown.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::{Config, Listener};
use crate::registry::Registry;
use crate::session;
use crate::spin::Spinners;

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
}

impl Server {
    /// A server on these listeners. Fails if the authkey is empty.
    pub fn new(listeners: Vec<Listener>, config: Config) -> io::Result<Server> {
        if config.authkey.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the authkey must not be empty",
            ));
        }
        let (shutdown, _) = watch::channel(false);
        Ok(Server {
            shared: Arc::new(Shared {
                registry: Registry::new()?,
                config,
                shutdown,
                spinners: Spinners::default(),
            }),
            listeners,
        })
    }

    /// A handle that stops this server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shared.clone())
    }

    /// The addresses clients connect to.
    pub fn addresses(&self) -> Vec<String> {
        self.listeners.iter().map(Listener::address).collect()
    }

    /// Serves until shutdown (the `shutdown` method, a [`ShutdownHandle`], or `stop`
    /// completing), then lets connections finish and removes the socket files.
    pub async fn run(self, stop: impl Future<Output = ()>) -> io::Result<()> {
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
            }
        }
        let mut stopping = self.shared.shutdown.subscribe();
        tokio::select! {
            _ = stop => self.shared.shutdown.send_replace(true),
            _ = stopped(&mut stopping) => true,
        };
        info!("shutting down");
        while accepting.join_next().await.is_some() {}
        for path in socket_files {
            if let Err(e) = std::fs::remove_file(&path) {
                debug!(path = %path.display(), error = %e, "could not remove socket file");
            }
        }
        Ok(())
    }
}

/// Completes once shutdown has started (at once if it already has).
pub async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: drop it here, before any other await.
    let _ = stopping.wait_for(|stop| *stop).await;
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
    /// The stream of one connection.
    type Stream: AsyncRead + AsyncWrite + AsRawFd + Unpin + Send + 'static;

    /// The next connection and a description of its peer.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, String)>> + Send;
}

impl Accept for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;

    async fn accept(&self) -> io::Result<(Self::Stream, String)> {
        let (stream, _) = tokio::net::UnixListener::accept(self).await?;
        Ok((stream, "unix peer".to_owned()))
    }
}

impl Accept for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&self) -> io::Result<(Self::Stream, String)> {
        let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
        // Replies are small and latency-bound: never let Nagle hold them back.
        if let Err(e) = stream.set_nodelay(true) {
            debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        Ok((stream, peer.to_string()))
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
                Ok((stream, peer)) => {
                    connections.spawn(session::serve(stream, shared.clone(), peer));
                }
                Err(e) => {
                    // Out of descriptors, say: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drain(connections).await;
}
