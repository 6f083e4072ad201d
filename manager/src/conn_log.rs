//! What the log says of a connection: the span all its lines are in (its id, its peer), why
//! it ended, and what it did.
//!
//! ```
//! use agora_manager::conn_log::Disconnect;
//!
//! assert_eq!(Disconnect::AuthTimeout.to_string(), "auth_timeout");
//! ```

use tracing::info;

use crate::peer::PeerInfo;

/// Why a connection ended: the `reason` of its `disconnected` log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// The client closed its end (or left while replies were on their way to it).
    ClientClosed,
    /// Reading from the socket failed.
    ReadError,
    /// Writing to the socket failed.
    WriteError,
    /// The client did not authenticate within [`crate::Config::auth_timeout`].
    AuthTimeout,
    /// The client's `auth` failed (a wrong digest, or an attempt refused unchecked).
    AuthFailed,
    /// The client sent something other than `hello` or `auth` before authenticating.
    RefusedBeforeAuth,
    /// The client sent something that is not a message (`ProtocolError`).
    ProtocolError,
    /// The client went past a limit (`LimitError`): a message too large or too deep, too many
    /// calls in flight.
    LimitExceeded,
    /// The TLS handshake failed.
    TlsFailed,
    /// The manager is stopping.
    Shutdown,
    /// This connection called `shutdown`.
    ShutdownRequested,
}

impl Disconnect {
    /// The reason as one word, as log lines give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Disconnect::ClientClosed => "client_closed",
            Disconnect::ReadError => "read_error",
            Disconnect::WriteError => "write_error",
            Disconnect::AuthTimeout => "auth_timeout",
            Disconnect::AuthFailed => "auth_failed",
            Disconnect::RefusedBeforeAuth => "refused_before_auth",
            Disconnect::ProtocolError => "protocol_error",
            Disconnect::LimitExceeded => "limit_exceeded",
            Disconnect::TlsFailed => "tls_failed",
            Disconnect::Shutdown => "shutdown",
            Disconnect::ShutdownRequested => "shutdown_requested",
        }
    }

    /// Whether the manager is stopping with this connection.
    pub fn stops_manager(self) -> bool {
        matches!(self, Disconnect::Shutdown | Disconnect::ShutdownRequested)
    }
}

impl std::fmt::Display for Disconnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a connection did, told by its `disconnected` log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// Why it ended.
    pub reason: Disconnect,
    /// Requests it made.
    pub calls: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Bytes of requests read (after TLS, if any).
    pub bytes_in: u64,
    /// Bytes of replies written (before TLS, if any).
    pub bytes_out: u64,
}

impl Ending {
    /// The ending of a connection that never reached its session (its TLS handshake failed,
    /// or the manager stopped first).
    pub fn before_session(reason: Disconnect) -> Ending {
        Ending {
            reason,
            calls: 0,
            errors: 0,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// Logs the end of a connection accepted at `accepted`, inside its span.
    pub fn log(&self, accepted: tokio::time::Instant) {
        info!(
            reason = self.reason.as_str(),
            calls = self.calls,
            errors = self.errors,
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            duration_secs = accepted.elapsed().as_secs_f64(),
            "disconnected"
        );
    }
}

/// The span every line a connection logs is in: it carries the connection's id, its peer
/// and, for a Unix peer, the process and user (see [`crate::session::serve`]). Strings are recorded as `&str`,
/// which the text format quotes, so that a peer or path with spaces stays one value.
pub fn span(id: &uuid::Uuid, peer: &PeerInfo) -> tracing::Span {
    tracing::info_span!(
        "conn",
        conn = %id,
        peer = peer.address.as_str(),
        pid = peer.pid,
        uid = peer.uid
    )
}
