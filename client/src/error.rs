//! The errors of the client, kept in layers: the transport failed ([`Error::Connect`],
//! [`Error::Disconnected`]), the manager refused ([`Error::Authentication`]), one operation failed
//! on the manager ([`Error::Remote`]), or a value could not be converted ([`Error::Encode`],
//! [`Error::Decode`]).
//!
//! Every variant is [`Clone`], because one broken connection must be reported to every thread
//! that was waiting on it, and one pipeline reply may be read more than once.

use std::fmt;
use std::io;
use std::sync::Arc;

pub use agora_proto::ErrorName;
use thiserror::Error;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The name of an error the manager returned: one this version knows, or another string (a newer
/// manager may send names this client has never heard of; they are kept, not lost).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RemoteName {
    /// A name listed in `PROTOCOL.md`.
    Known(ErrorName),
    /// A name this version of the client does not know.
    Other(String),
}

impl RemoteName {
    /// Classifies a name as it came over the wire.
    pub fn parse(name: &str) -> RemoteName {
        ErrorName::parse(name).map_or_else(|| RemoteName::Other(name.to_owned()), RemoteName::Known)
    }

    /// The name as it travels on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            RemoteName::Known(name) => name.as_str(),
            RemoteName::Other(name) => name,
        }
    }
}

impl fmt::Display for RemoteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can go wrong in a call.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket could not be opened. Nothing listens there, or the path is wrong.
    #[error(
        "cannot connect to the agora manager at {address}: {source} \
         (is the manager running, and is AGORA_ADDRESS right?)"
    )]
    Connect {
        /// The address tried, as written in `AGORA_ADDRESS`.
        address: String,
        /// What the operating system said.
        #[source]
        source: Arc<io::Error>,
    },

    /// The manager rejected the authkey.
    #[error(
        "authentication with the agora manager at {address} failed: {message} \
         (the authkey, AGORA_AUTHKEY in hex, must be the manager's)"
    )]
    Authentication {
        /// The manager's address.
        address: String,
        /// The manager's explanation.
        message: String,
    },

    /// The manager answered this call with an error, such as `KeyError` for a missing dict key.
    /// The connection is fine; test the name with [`Error::is`].
    #[error("{name}: {message}")]
    Remote {
        /// Which kind of failure (`KeyError`, `IndexError`, ...).
        name: RemoteName,
        /// The manager's self-contained explanation.
        message: String,
    },

    /// The connection is gone: the manager shut down, crashed or closed it. Every call that was
    /// waiting on it gets this error, and so does every later call on this client.
    #[error("the connection to the agora manager at {address} is closed: {reason}")]
    Disconnected {
        /// The manager's address.
        address: String,
        /// What ended the connection.
        reason: String,
    },

    /// A value could not be encoded as MessagePack (a map with non-string keys inside a struct
    /// serialized by name, a `Serialize` impl that failed, ...). Nothing was sent.
    #[error("cannot encode a value as MessagePack: {0}")]
    Encode(Arc<rmp_serde::encode::Error>),

    /// A reply could not be decoded into the requested Rust type: the shared object holds
    /// something else than the proxy's type parameter says.
    #[error("cannot decode the manager's reply into the requested type: {0}")]
    Decode(Arc<rmp_serde::decode::Error>),

    /// The manager broke the protocol (unexpected reply shape). A bug on one side.
    #[error("protocol violation: {0}")]
    Protocol(String),

    /// An environment variable read by [`Client::from_env`](crate::Client::from_env) is missing
    /// or malformed.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// The variable's name.
        var: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A string is not an address.
    #[error("bad address {input:?}: {reason}")]
    Address {
        /// The text given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A string is not a token, or the token names an object of another kind.
    #[error("bad token {token:?}: {reason}")]
    Token {
        /// The text given.
        token: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A proxy or token of one run of a manager met a manager of another run: the manager was
    /// restarted (the proxy's object is gone with the old run, and the new run's object with
    /// the same id is another object), or the client given to `from_token` is connected to
    /// another manager. Nothing was sent. It counts as `UnknownObjectError`:
    /// [`Error::is`]`(ErrorName::UnknownObjectError)` is true.
    #[error("UnknownObjectError: {}", other_run(.run, .address, .manager_address, .manager_run, *.started))]
    OtherRun {
        /// The run the proxy or token belongs to.
        run: String,
        /// The address the proxy or token names.
        address: String,
        /// The address of the manager the client is connected to.
        manager_address: String,
        /// The run of that manager.
        manager_run: String,
        /// When that run started, in seconds since the Unix epoch.
        started: u64,
    },

    /// A reference names an object of another kind than the proxy type asked for (a list
    /// where a `Dict` was expected).
    #[error("object {id} is a {found}, not a {expected}")]
    WrongKind {
        /// The object's id.
        id: u64,
        /// The kind the proxy type needs.
        expected: &'static str,
        /// The kind the reference names.
        found: String,
    },

    /// The API was used in a way it does not support (for example a pipeline handle passed to
    /// the replies of another pipeline).
    #[error("misuse of the agora client: {0}")]
    Usage(String),
}

impl Error {
    /// True when the manager answered with the error `name`.
    ///
    /// ```
    /// # use agora_client::{Error, ErrorName};
    /// # fn f(e: Error) {
    /// if e.is(ErrorName::KeyError) { /* the key is missing */ }
    /// # }
    /// ```
    pub fn is(&self, name: ErrorName) -> bool {
        match self {
            Error::Remote {
                name: RemoteName::Known(n),
                ..
            } => *n == name,
            Error::OtherRun { .. } => name == ErrorName::UnknownObjectError,
            _ => false,
        }
    }

    /// The error's name when the manager returned it, whether known or not
    /// (`UnknownObjectError` for [`Error::OtherRun`], which stands for it).
    pub fn remote_name(&self) -> Option<&str> {
        match self {
            Error::Remote { name, .. } => Some(name.as_str()),
            Error::OtherRun { .. } => Some(ErrorName::UnknownObjectError.as_str()),
            _ => None,
        }
    }

    /// True when the connection is unusable: every later call on it fails the same way.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Error::Disconnected { .. })
    }

    pub(crate) fn remote(name: &str, message: impl Into<String>) -> Error {
        Error::Remote {
            name: RemoteName::parse(name),
            message: message.into(),
        }
    }

    pub(crate) fn encode(e: rmp_serde::encode::Error) -> Error {
        Error::Encode(Arc::new(e))
    }

    pub(crate) fn decode(e: rmp_serde::decode::Error) -> Error {
        Error::Decode(Arc::new(e))
    }
}

/// The message of [`Error::OtherRun`]: the cause, both runs and both addresses.
fn other_run(
    run: &str,
    address: &str,
    manager_address: &str,
    manager_run: &str,
    started: u64,
) -> String {
    let started = crate::run::utc(started);
    if address == manager_address {
        format!(
            "this proxy belongs to run {run}; the manager at {manager_address} is run \
             {manager_run}, started at {started}; the object no longer exists"
        )
    } else {
        format!(
            "this proxy belongs to run {run} of the manager at {address}; the client is \
             connected to the manager at {manager_address}, run {manager_run}, started at \
             {started}: use a client of the manager at {address}"
        )
    }
}

impl From<rmp_serde::encode::Error> for Error {
    fn from(e: rmp_serde::encode::Error) -> Error {
        Error::encode(e)
    }
}

impl From<rmp_serde::decode::Error> for Error {
    fn from(e: rmp_serde::decode::Error) -> Error {
        Error::decode(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_names_known_and_unknown() {
        let e = Error::remote("KeyError", "'x'");
        assert!(e.is(ErrorName::KeyError));
        assert!(!e.is(ErrorName::IndexError));
        assert_eq!(e.to_string(), "KeyError: 'x'");
        let e = Error::remote("FancyNewError", "later");
        assert_eq!(e.remote_name(), Some("FancyNewError"));
        assert!(!e.is(ErrorName::KeyError));
    }

    #[test]
    fn connect_error_names_the_address() {
        let e = Error::Connect {
            address: "unix:/nowhere.sock".into(),
            source: Arc::new(io::Error::from(io::ErrorKind::NotFound)),
        };
        assert!(e.to_string().contains("unix:/nowhere.sock"));
        assert!(std::error::Error::source(&e).is_some());
    }
}
