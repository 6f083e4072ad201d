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

use bytes::Bytes;

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
///
/// `Debug` shows what `Display` shows, then the causes not already in it: a
/// `fn main() -> Result<(), Box<dyn std::error::Error>>` that fails prints the actionable text,
/// not the variant's fields. Match on the variants (or use [`Error::is`]) to tell them apart.
#[derive(Clone, Error)]
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

    /// No manager answered at any of the client's [`Addresses`](crate::Addresses): why each
    /// failed, in the order they were tried (each error names its address). A client of a
    /// single address fails with that address's error instead.
    #[error("{}", none_answered(.failures))]
    NoManager {
        /// The failure at each address, in the order tried.
        failures: Vec<Error>,
    },

    /// The TLS handshake with the manager at a `tls:` address failed: its certificate is not
    /// valid for the address or not signed by a trusted CA, the CA file cannot be read, or
    /// the peer does not speak TLS. The reason says which, and what to do.
    #[error("TLS with the agora manager at {address} failed: {reason}")]
    Tls {
        /// The address connected to.
        address: String,
        /// What went wrong.
        reason: String,
    },

    /// The peer at the address answered, but not as an agora manager does (a web server on
    /// that port, say). A peer that does not answer the handshake in time
    /// ([`ConnectOptions::handshake_timeout`](crate::ConnectOptions::handshake_timeout)) is an
    /// [`Error::Timeout`].
    #[error("the peer at {address} is not an agora manager: {reason} (is AGORA_ADDRESS right?)")]
    NotAManager {
        /// The address connected to.
        address: String,
        /// What it did instead.
        reason: String,
    },

    /// The manager did not answer within a deadline: it is stopped (SIGSTOP), hung, or
    /// unreachable. The connection is closed, as the reply may still come; the call may or
    /// may not have been carried out.
    #[error(
        "the agora manager at {address} did not answer {what} within {after:?}: it may be \
         stopped or hung; the connection is closed"
    )]
    Timeout {
        /// The manager's address.
        address: String,
        /// What was waited for: `"the connection"`, `"a call to queue.get"`, ...
        what: String,
        /// The deadline.
        after: std::time::Duration,
    },

    /// The manager rejected the authkey.
    #[error("{}", authentication(.address, .message, .key_from))]
    Authentication {
        /// The manager's address.
        address: String,
        /// The manager's explanation.
        message: String,
        /// Where the authkey came from: `"AGORA_AUTHKEY"`, `"given to Client::connect"`, ...
        key_from: &'static str,
    },

    /// The authkey is empty: no manager has one, so nothing was sent.
    #[error("the authkey ({key_from}) is empty: a manager's authkey never is")]
    EmptyAuthkey {
        /// Where the authkey came from, as in [`Error::Authentication`].
        key_from: &'static str,
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
    /// something else than the proxy's type parameter says. Nothing is lost: the
    /// [`DecodeError`] carries the undecoded result, says where it came from (object, key,
    /// entry, expected and found types) and whether the manager applied the call (a queue
    /// get took the item: it is in the error, nowhere else).
    #[error(transparent)]
    Decode(Box<DecodeError>),

    /// A request over one of the manager's limits (which it reports in `hello`): it would
    /// have closed the connection, so it was not sent. The connection is fine; nothing was
    /// done. Counts as the manager's `LimitError`:
    /// [`Error::is`]`(ErrorName::LimitError)` is true.
    #[error("LimitError: {}", limit_text(.limit, *.max, *.size, *.encoding_stopped))]
    Limit {
        /// Which limit: `"max_message_bytes"`, `"max_depth"` or `"max_container_len"`.
        limit: &'static str,
        /// The manager's limit.
        max: u64,
        /// The request's size in bytes, its container's length, or for `max_depth` one more
        /// than the limit (the depth is not measured further).
        size: u64,
        /// True when encoding the request stopped at the limit, so `size` is where it stopped
        /// rather than the whole request's.
        encoding_stopped: bool,
    },

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
            Error::Limit { .. } => name == ErrorName::LimitError,
            _ => false,
        }
    }

    /// The error's name when the manager returned it, whether known or not
    /// (`UnknownObjectError` for [`Error::OtherRun`], which stands for it).
    pub fn remote_name(&self) -> Option<&str> {
        match self {
            Error::Remote { name, .. } => Some(name.as_str()),
            Error::OtherRun { .. } => Some(ErrorName::UnknownObjectError.as_str()),
            Error::Limit { .. } => Some(ErrorName::LimitError.as_str()),
            _ => None,
        }
    }

    /// True when the call failed because its connection broke or closed: it may or may not
    /// have been carried out, and the next call opens a new connection (see
    /// [Reconnection](crate::Client#reconnection)). Includes [`Error::Timeout`] and the
    /// `ShutdownError` a call parked in the manager gets when it stops (the manager closes
    /// the connection right after).
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Error::Disconnected { .. } | Error::Timeout { .. })
            || self.is(ErrorName::ShutdownError)
    }

    /// True when the manager is gone, shut down or dead: the one check for a parked call
    /// (which gets `ShutdownError`), for a call in flight when the connection broke
    /// ([`Error::Disconnected`]) and for a call made after, which tries to reconnect and
    /// finds nothing at the address ([`Error::Connect`]). A manager that does not answer in
    /// time ([`Error::Timeout`]) may only be stopped or hung: not gone, though the connection
    /// is.
    pub fn is_manager_gone(&self) -> bool {
        matches!(
            self,
            Error::Disconnected { .. } | Error::Connect { .. } | Error::NoManager { .. }
        ) || self.is(ErrorName::ShutdownError)
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

    /// A decode error for a whole value, without the call's context (added by the runner).
    pub(crate) fn decode<T>(raw: &Bytes, e: rmp_serde::decode::Error) -> Error {
        DecodeError::new::<T>(raw.clone(), raw.clone(), e).into()
    }

    /// The [`DecodeError`] of an [`Error::Decode`].
    pub fn as_decode(&self) -> Option<&DecodeError> {
        match self {
            Error::Decode(d) => Some(d),
            _ => None,
        }
    }

    /// Adds what the runner of a call knows to a decode error: the method, the object, the key.
    pub(crate) fn in_call(self, method: &str, params: &[u8]) -> Error {
        match self {
            Error::Decode(mut d) => {
                d.set_call(method, params);
                Error::Decode(d)
            }
            e => e,
        }
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Error {
        Error::Decode(Box::new(e))
    }
}

/// A reply that could not be decoded into the Rust type asked for, kept whole.
///
/// The manager's result is in [`raw`](DecodeError::raw), undecoded (one MessagePack value):
/// decode it as another type with [`Client::decode`](crate::Client::decode), or look at it
/// as an `rmpv::Value`. When the call changed something on the manager before the reply
/// failed to decode ([`applied`](DecodeError::applied)), that change stands: a queue get took
/// the item, which is now only here; `Value::fetch_add` added.
///
/// For a bulk read (`items`, `values`, `copy`, `get_many`, ...) with one bad entry,
/// [`entry`](DecodeError::entry) is its position and [`value`](DecodeError::value) its bytes;
/// the other entries are still in [`raw`](DecodeError::raw).
#[derive(Debug, Clone)]
pub struct DecodeError {
    method: Option<String>,
    object: Option<(String, u64)>,
    /// The object's name, when this client knows it (it created or looked it up by name).
    name: Option<String>,
    key: Option<String>,
    entry: Option<usize>,
    entry_key: Option<String>,
    expected: &'static str,
    raw: Bytes,
    value: Bytes,
    applied: bool,
    source: Arc<rmp_serde::decode::Error>,
}

impl DecodeError {
    /// `value` (a part of `raw`, or all of it) failed to decode as `T`.
    pub(crate) fn new<T>(raw: Bytes, value: Bytes, source: rmp_serde::decode::Error) -> Self {
        DecodeError {
            method: None,
            object: None,
            name: None,
            key: None,
            entry: None,
            entry_key: None,
            expected: std::any::type_name::<T>(),
            raw,
            value,
            applied: false,
            source: Arc::new(source),
        }
    }

    /// The failing value is the entry at `index` of a bulk result (with its key, encoded,
    /// for a map or a list of pairs).
    pub(crate) fn at_entry(mut self, index: usize, key: Option<&[u8]>) -> Self {
        self.entry = Some(index);
        self.entry_key = key.map(render);
        self
    }

    fn set_call(&mut self, method: &str, params: &[u8]) {
        self.method = Some(method.to_owned());
        let items = split_values(params);
        let Some((kind, op)) = method.split_once('.') else {
            self.applied = method != "ping";
            return;
        };
        if let Some(id) = items
            .first()
            .and_then(|raw| agora_proto::params::int_u64(raw))
        {
            self.object = Some((kind.to_owned(), id));
        }
        let queue = kind.ends_with("queue");
        if !queue && KEYED.contains(&op) {
            self.key = items.get(1).map(|raw| render(raw));
        }
        self.applied = (queue && op.starts_with("get")) || !READ_ONLY.contains(&op);
    }

    /// The whole result of the call, undecoded: one MessagePack value.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The value that failed to decode: the whole result, or for a bulk read the bad entry.
    pub fn value(&self) -> &Bytes {
        &self.value
    }

    /// The wire method of the call (`"queue.get"`), when the error came from a call.
    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }

    /// The object called: its kind (`"queue"`) and id.
    pub fn object(&self) -> Option<(&str, u64)> {
        self.object.as_ref().map(|(kind, id)| (kind.as_str(), *id))
    }

    /// The name of the object the call was on, when the client knows it: the object was
    /// created or looked up by name through this client.
    pub fn object_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Names the object, for the message.
    pub(crate) fn set_object_name(&mut self, name: String) {
        self.name = Some(name);
    }

    /// The key or index the call named (a dict key, a list index), as text.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// For a bulk read, the position of the entry that failed to decode.
    pub fn entry(&self) -> Option<usize> {
        self.entry
    }

    /// For a bulk read of a map or of pairs, the key of the entry that failed, as text.
    pub fn entry_key(&self) -> Option<&str> {
        self.entry_key.as_deref()
    }

    /// The Rust type the value was to be decoded into.
    pub fn expected(&self) -> &'static str {
        self.expected
    }

    /// The MessagePack type of the value that failed (`"str"`, `"int"`, `"map"`, ...).
    pub fn found(&self) -> &'static str {
        agora_proto::params::type_name(&self.value)
    }

    /// True when the manager carried the call out before its reply failed to decode: the
    /// change stands (a queue get removed the item, which is in [`raw`](DecodeError::raw)).
    pub fn applied(&self) -> bool {
        self.applied
    }
}

/// The first two params of a call (the object id and the key, for the calls that have one),
/// from the params encoded one after the other without an array header.
pub(crate) fn split_values(mut params: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while out.len() < 2 {
        let Some(len) = agora_proto::scanner::value_len(params).filter(|&n| n > 0) else {
            break;
        };
        let (value, rest) = params.split_at(len.min(params.len()));
        out.push(value);
        params = rest;
    }
    out
}

/// The error in place of a call's reply that never came: never expected, since a
/// connection that breaks fails every call still waiting with the reason it broke.
pub(crate) fn missing_reply() -> Error {
    Error::Usage(
        "the reply to a call never arrived on a connection that is still open: a bug in the \
         agora client, please report it"
            .into(),
    )
}

/// What a decode error needs of a call's params (see [`Error::in_call`]): the object id, and
/// the key for the methods that take one. Kept by pipelines instead of the whole params.
pub(crate) fn call_context(method: &str, params: &[u8]) -> Vec<u8> {
    let keyed = method
        .split_once('.')
        .is_some_and(|(kind, op)| !kind.ends_with("queue") && KEYED.contains(&op));
    let values = split_values(params);
    let keep = values
        .iter()
        .take(if keyed { 2 } else { 1 })
        .map(|v| v.len())
        .sum();
    params[..keep].to_vec()
}

/// Methods whose param after the object id is a key or an index.
const KEYED: &[&str] = &["getitem", "get", "pop", "setdefault", "getattr"];

/// Methods that change nothing on the manager.
const READ_ONLY: &[&str] = &[
    "get",
    "getitem",
    "getslice",
    "getattr",
    "len",
    "keys",
    "values",
    "items",
    "copy",
    "contains",
    "count",
    "index",
    "tolist",
    "typecode",
    "qsize",
    "empty",
    "full",
    "maxsize",
    "is_closed",
    "locked",
    "is_set",
    "parties",
    "n_waiting",
    "broken",
];

/// A short text of an encoded value for messages: at most about 60 characters.
fn render(raw: &[u8]) -> String {
    let text = match agora_proto::value::decode(raw) {
        Ok(v) => v.to_string(),
        Err(_) => format!("<{} bytes>", raw.len()),
    };
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    } else {
        text
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cannot decode ")?;
        match (&self.method, &self.object) {
            (Some(method), Some((kind, id))) => {
                write!(f, "the reply of {method} on {kind} {id}")?;
                if let Some(name) = &self.name {
                    write!(f, " ({name:?})")?;
                }
            }
            (Some(method), None) => write!(f, "the reply of {method}")?,
            _ => f.write_str("a value")?,
        }
        if let Some(key) = &self.key {
            write!(f, " at {key}")?;
        }
        if let Some(entry) = self.entry {
            write!(f, ", entry {entry}")?;
            if let Some(key) = &self.entry_key {
                write!(f, " (key {key})")?;
            }
        }
        write!(
            f,
            ": expected {}, found {} {} ({})",
            self.expected,
            self.found(),
            render(&self.value),
            self.source
        )?;
        if self.applied {
            let taken = matches!(&self.object, Some((kind, _)) if kind.ends_with("queue"))
                && self.method.as_deref().is_some_and(|m| m.contains(".get"));
            if taken {
                f.write_str(
                    "; the item was taken from the queue and is in this error (DecodeError::raw)",
                )?;
            } else {
                f.write_str(
                    "; the manager carried the call out, its result is in this error \
                     (DecodeError::raw)",
                )?;
            }
        }
        Ok(())
    }
}

/// The decoder's own message is part of the text (it is often the most precise part, as in
/// "object 3 is a list, not a dict"), so it is not repeated as a source.
impl std::error::Error for DecodeError {}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        report(self, f)
    }
}

/// Writes `error` as `Display` does, then each cause its text does not already contain: the
/// `Debug` of the errors a `main` returning `Result` prints.
#[doc(hidden)]
pub fn report(error: &dyn std::error::Error, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let top = error.to_string();
    f.write_str(&top)?;
    let mut cause = error.source();
    let mut first = true;
    while let Some(e) = cause {
        let text = e.to_string();
        if !top.contains(&text) {
            if first {
                f.write_str("\n\nCaused by:")?;
                first = false;
            }
            write!(f, "\n    {text}")?;
        }
        cause = e.source();
    }
    Ok(())
}

/// The message of [`Error::NoManager`]: every address's failure, numbered in the order tried.
fn none_answered(failures: &[Error]) -> String {
    let each: Vec<String> = failures
        .iter()
        .enumerate()
        .map(|(i, e)| format!("({}) {e}", i + 1))
        .collect();
    format!(
        "no agora manager answered at any of the {} addresses: {}",
        failures.len(),
        each.join("; ")
    )
}

/// The message of [`Error::Authentication`]: the advice once, naming where the key came from.
fn authentication(address: &str, message: &str, key_from: &str) -> String {
    if message.starts_with("wrong digest") {
        format!(
            "the agora manager at {address} refused the authkey ({key_from}): it is not the \
             manager's authkey"
        )
    } else {
        format!(
            "authentication with the agora manager at {address} failed: {message} (the \
             authkey: {key_from})"
        )
    }
}

/// The message of [`Error::Limit`].
fn limit_text(limit: &str, max: u64, size: u64, stopped: bool) -> String {
    let what = match limit {
        "max_depth" => "the request nests arrays and maps too deep".to_owned(),
        "max_container_len" => format!("an array or map of the request has {size} elements"),
        _ if stopped => format!("the request reached {size} bytes when encoding stopped"),
        _ => format!("the request is {size} bytes"),
    };
    format!(
        "{what}, over the manager's limit of {max} ({limit}); nothing was sent and the \
         connection is fine (the manager's operator sets the limit with --{})",
        limit.replace('_', "-")
    )
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
    fn one_predicate_for_a_manager_that_is_gone() {
        let parked = Error::remote("ShutdownError", "the manager is shutting down");
        let later = Error::Disconnected {
            address: "unix:/m.sock".into(),
            reason: "the manager closed it (shut down or stopped)".into(),
        };
        for e in [&parked, &later] {
            assert!(e.is_manager_gone() && e.is_disconnected(), "{e}");
        }
        let hung = Error::Timeout {
            address: "unix:/m.sock".into(),
            what: "a call to ping".into(),
            after: std::time::Duration::from_secs(1),
        };
        assert!(!hung.is_manager_gone() && hung.is_disconnected());
        assert!(!Error::remote("KeyError", "'k'").is_manager_gone());
    }

    #[test]
    fn debug_says_what_display_says() {
        let e = Error::Connect {
            address: "unix:/nowhere.sock".into(),
            source: Arc::new(io::Error::from(io::ErrorKind::NotFound)),
        };
        assert_eq!(format!("{e:?}"), e.to_string());
        #[derive(Debug, Error)]
        #[error("outer")]
        struct Outer(#[source] Error);
        let outer = Outer(Error::Usage("inner".into()));
        struct Shown<'a>(&'a Outer);
        impl fmt::Debug for Shown<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                report(self.0, f)
            }
        }
        assert_eq!(
            format!("{:?}", Shown(&outer)),
            "outer\n\nCaused by:\n    misuse of the agora client: inner"
        );
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

    #[test]
    fn no_manager_names_every_address() {
        let refused = |address: &str| Error::Connect {
            address: address.into(),
            source: Arc::new(io::Error::from(io::ErrorKind::ConnectionRefused)),
        };
        let e = Error::NoManager {
            failures: vec![refused("unix:/a.sock"), refused("tcp:127.0.0.1:9")],
        };
        let text = e.to_string();
        assert!(text.contains("any of the 2 addresses"), "{text}");
        assert!(text.contains("(1) cannot connect to the agora manager at unix:/a.sock"));
        assert!(text.contains("(2) cannot connect to the agora manager at tcp:127.0.0.1:9"));
        assert!(e.is_manager_gone() && !e.is_disconnected());
    }
}
