//! What a manager is configured with, and the listeners it serves.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Duration;

use agora_proto::Limits;

pub use crate::registry::DEFAULT_HANDOFF_LEASE;
use crate::spin::Spin;

/// Largest message an unauthenticated connection may send: `hello` and `auth` are tiny, and a
/// stranger must not make the manager buffer the full message limit.
pub const PRE_AUTH_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Most connections a manager serves at once unless told otherwise, when the descriptor limit
/// allows (see [`default_max_connections`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Descriptors kept free for everything but connections (listeners, the runtime, log files,
/// the one a refused connection occupies while it is told so).
pub const FD_RESERVE: usize = 64;

/// How long a connection may take to authenticate unless told otherwise.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// How many bytes of replies a connection may have waiting to be written before the manager
/// stops reading its requests, unless told otherwise.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 32 * 1024 * 1024;

/// The soft `RLIMIT_NOFILE` of this process: how many descriptors it may have open.
/// `None` if it cannot be read; `usize::MAX` when unlimited.
pub fn open_files_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    Some(usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

/// The default for [`Config::max_connections`]: [`DEFAULT_MAX_CONNECTIONS`], or fewer when
/// the soft `RLIMIT_NOFILE` less [`FD_RESERVE`] is lower (never below 1), so that the manager
/// refuses a connection with a clear error before `accept` starts failing for want of
/// descriptors.
pub fn default_max_connections() -> usize {
    let allowed =
        open_files_limit().map_or(DEFAULT_MAX_CONNECTIONS, |n| n.saturating_sub(FD_RESERVE));
    DEFAULT_MAX_CONNECTIONS.min(allowed).max(1)
}

/// Most bytes of replies an unauthenticated connection may leave unread before the manager
/// stops reading it: a stranger pipelining `hello` must not cost [`Config::max_output_bytes`]
/// (see [`crate::limits::AdjustableLimits::pre_auth_max_output_bytes`]).
pub const PRE_AUTH_MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// The most runtime threads [`default_threads`] gives, however many CPUs there are.
pub const MAX_DEFAULT_THREADS: usize = 2;

/// The default for [`Config::threads`] on a machine where the manager may run on `cpus` CPUs:
/// one thread for every two CPUs, at least one and at most [`MAX_DEFAULT_THREADS`].
///
/// A manager's clients are mostly processes on the same machine, and every thread the manager
/// runs on is a CPU they do not get. On two CPUs a second thread costs more than it gives:
/// the runtime wakes it to share work that one thread would do in passing, and it then runs
/// on the CPU of the very client whose next call is awaited (the contended four-call ticket
/// grab at 8 workers sold about 1.4x as many tickets on one thread as on two, pipelined gets
/// from 4 and 16 clients rose, unpipelined calls over a Unix socket fell about 5%; README,
/// "Changelog").
pub fn default_threads_for(cpus: usize) -> usize {
    (cpus / 2).clamp(1, MAX_DEFAULT_THREADS)
}

/// [`default_threads_for`] the CPUs this process may run on (`std`'s count; one when unknown).
pub fn default_threads() -> usize {
    default_threads_for(std::thread::available_parallelism().map_or(1, usize::from))
}

/// A manager's configuration. `max_in_flight`, `max_connections`, `auth_timeout` and
/// `max_output_bytes` are the values it starts with: an admin may change them while it runs
/// ([`crate::limits`]).
#[derive(Debug, Clone)]
pub struct Config {
    /// The shared secret clients prove they know. Never empty.
    pub authkey: Vec<u8>,
    /// Limits on each message a connection sends.
    pub limits: Limits,
    /// Most requests one connection may have in flight (received, not yet answered).
    pub max_in_flight: usize,
    /// Most connections served at once, over all listeners. One more is accepted, told
    /// `LimitError` and closed at once. Default: [`default_max_connections`].
    pub max_connections: usize,
    /// How long a new connection has to authenticate (`hello`, then `auth`) before it is
    /// closed. Default: [`DEFAULT_AUTH_TIMEOUT`].
    pub auth_timeout: Duration,
    /// How many bytes of replies one connection may have waiting to be written (its client is
    /// not reading them) before the manager stops reading that connection's requests, until
    /// they are written. Bounds what a client that never reads costs: about this much, plus one
    /// reply, plus one request. Default: [`DEFAULT_MAX_OUTPUT_BYTES`].
    pub max_output_bytes: usize,
    /// How long a handoff (`export`) keeps an object alive waiting for a process to adopt it
    /// (`PROTOCOL.md`, section 3.2). Default: [`DEFAULT_HANDOFF_LEASE`].
    pub handoff_lease: Duration,
    /// How busy connections poll for their next request before sleeping.
    pub spin: Spin,
    /// How many threads the runtime that [`crate::run_blocking_with`] builds runs connections
    /// on (`--threads`); at least 1. Default: [`default_threads`]. A [`crate::Server`] run
    /// directly uses its caller's runtime, whatever this says.
    pub threads: usize,
    /// Which run of a manager this is, reported by `hello`. A fresh one for every
    /// [`Config::new`], so that two servers never share one.
    pub run: Run,
    /// The operator's secret, if there is one: a connection that authenticates with it is
    /// *admin* and may call the methods of [`crate::auth::ADMIN_METHODS`]; one that
    /// authenticates with [`Config::authkey`] may not. `None` (the default): every
    /// authenticated connection is admin. Never empty when given.
    pub admin_authkey: Option<Vec<u8>>,
    /// How failed `auth` attempts are slowed down, per peer. Default:
    /// [`crate::throttle::ThrottleConfig::default`].
    pub auth_throttle: crate::throttle::ThrottleConfig,
    /// Where the objects live (`--store`): memory (the default) or etcd. Opened by
    /// [`crate::run_blocking_with`]; a [`crate::Server`] built directly takes an open
    /// [`crate::store::Store`] ([`crate::Server::with_store`]).
    pub store: crate::store::StoreSpec,
}

/// The identity of one run of a manager: a random id made when it starts, and when that was.
///
/// A manager restarted at the same address with the same authkey hands out the same small
/// object ids again. Clients compare the run a proxy was made in with the run of the manager
/// they reach, so that a stale proxy, token or pickle fails instead of silently reaching
/// another object of the new run (`PROTOCOL.md`, section 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// A random (version 4) uuid: two runs never share one.
    pub id: uuid::Uuid,
    /// When the run started, in seconds since the Unix epoch; for people reading errors.
    pub started: u64,
}

impl Run {
    /// A new run, starting now.
    pub fn new() -> Run {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Run {
            id: uuid::Uuid::new_v4(),
            started,
        }
    }
}

impl Default for Run {
    fn default() -> Run {
        Run::new()
    }
}

impl Config {
    /// A configuration with this authkey and the default limits.
    pub fn new(authkey: Vec<u8>) -> Config {
        Config {
            authkey,
            limits: Limits::default(),
            max_in_flight: 65_536,
            max_connections: default_max_connections(),
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            handoff_lease: DEFAULT_HANDOFF_LEASE,
            spin: Spin::default(),
            threads: default_threads(),
            run: Run::new(),
            admin_authkey: None,
            auth_throttle: crate::throttle::ThrottleConfig::default(),
            store: crate::store::StoreSpec::Memory,
        }
    }

    /// The limits before a connection has authenticated.
    pub fn pre_auth_limits(&self) -> Limits {
        Limits {
            max_message_bytes: self
                .limits
                .max_message_bytes
                .min(PRE_AUTH_MAX_MESSAGE_BYTES),
            ..self.limits
        }
    }
}

/// A bound socket the manager accepts connections on.
#[derive(Debug)]
pub enum Listener {
    /// A Unix socket; `path` is removed when the manager stops.
    Unix {
        /// The bound listener.
        listener: UnixListener,
        /// Where the socket file is.
        path: PathBuf,
    },
    /// A TCP socket.
    Tcp(std::net::TcpListener),
    /// A TCP socket whose connections speak TLS (see [`crate::tls`]).
    Tls {
        /// The bound listener.
        listener: std::net::TcpListener,
        /// The certificate and key it serves ([`crate::tls::server_config`]).
        config: std::sync::Arc<rustls::ServerConfig>,
    },
}

impl Listener {
    /// The address clients connect to, in the `unix:PATH` / `tcp:HOST:PORT` /
    /// `tls:HOST:PORT` form.
    pub fn address(&self) -> String {
        let tcp = |scheme: &str, l: &std::net::TcpListener| match l.local_addr() {
            Ok(addr) => format!("{scheme}:{addr}"),
            Err(_) => format!("{scheme}:?"),
        };
        match self {
            Listener::Unix { path, .. } => format!("unix:{}", path.display()),
            Listener::Tcp(l) => tcp("tcp", l),
            Listener::Tls { listener, .. } => tcp("tls", listener),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_thread_per_two_cpus_at_least_one_at_most_the_cap() {
        let threads: Vec<usize> = [0, 1, 2, 3, 4, 5, 8, 64]
            .into_iter()
            .map(default_threads_for)
            .collect();
        assert_eq!(threads, [1, 1, 1, 1, 2, 2, 2, 2]);
        assert!((1..=MAX_DEFAULT_THREADS).contains(&default_threads()));
        assert_eq!(Config::new(b"k".to_vec()).threads, default_threads());
    }
}
