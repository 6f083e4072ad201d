//! What a manager is configured with, and the listeners it serves.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use agora_proto::Limits;

use crate::spin::Spin;

/// Largest message an unauthenticated connection may send: `hello` and `auth` are tiny, and a
/// stranger must not make the manager buffer the full message limit.
pub const PRE_AUTH_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A manager's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The shared secret clients prove they know. Never empty.
    pub authkey: Vec<u8>,
    /// Limits on each message a connection sends.
    pub limits: Limits,
    /// Most requests one connection may have in flight (received, not yet answered).
    pub max_in_flight: usize,
    /// How busy connections poll for their next request before sleeping.
    pub spin: Spin,
    /// Which run of a manager this is, reported by `hello`. A fresh one for every
    /// [`Config::new`], so that two servers never share one.
    pub run: Run,
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
            spin: Spin::default(),
            run: Run::new(),
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
}

impl Listener {
    /// The address clients connect to, in the `unix:PATH` / `tcp:HOST:PORT` form.
    pub fn address(&self) -> String {
        match self {
            Listener::Unix { path, .. } => format!("unix:{}", path.display()),
            Listener::Tcp(l) => match l.local_addr() {
                Ok(addr) => format!("tcp:{addr}"),
                Err(_) => "tcp:?".to_owned(),
            },
        }
    }
}
