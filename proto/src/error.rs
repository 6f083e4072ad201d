//! The error names of the protocol and the error a call returns.
//!
//! On the wire an error is `[name, message]`. Names are Python's exception class names wherever
//! one fits, so Python clients can raise the matching built-in exception, and names of our own
//! otherwise.

use std::fmt;

use thiserror::Error;

macro_rules! error_names {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Every error name the manager sends.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorName {
            $($(#[$doc])* $name,)*
        }

        impl ErrorName {
            /// Every name, for documentation and tests.
            pub const ALL: &'static [ErrorName] = &[$(ErrorName::$name),*];

            /// The name as it travels on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorName::$name => stringify!($name),)*
                }
            }

            /// The name for a wire string, `None` for a name this version does not know.
            pub fn parse(name: &str) -> Option<ErrorName> {
                match name {
                    $(stringify!($name) => Some(ErrorName::$name),)*
                    _ => None,
                }
            }
        }
    };
}

error_names! {
    /// A missing dict key or object name.
    KeyError,
    /// An index out of range.
    IndexError,
    /// An argument of the right type but a bad value.
    ValueError,
    /// An argument of the wrong type, an unhashable key, incomparable values.
    TypeError,
    /// An integer that does not fit the object's typecode.
    OverflowError,
    /// A missing namespace attribute.
    AttributeError,
    /// A wrong authentication digest, or a call before authentication.
    AuthenticationError,
    /// A method reserved to the operator (`shutdown`, `stats`), called by a connection that
    /// authenticated with the worker authkey of a manager that has an admin authkey.
    PermissionError,
    /// No object has that id or name.
    UnknownObjectError,
    /// No method has that name.
    UnknownMethodError,
    /// The method takes another number of params.
    ArgumentCountError,
    /// Bytes that are not MessagePack, or a bad MessagePack-RPC envelope.
    ProtocolError,
    /// A message over one of the manager's limits.
    LimitError,
    /// The manager stopped while the call was pending.
    ShutdownError,
    /// A queue get found nothing before its timeout.
    Empty,
    /// A queue put found no room before its timeout.
    Full,
    /// A blocking call ran out of time.
    TimeoutError,
    /// Misuse of a synchronisation object (releasing an unlocked lock, say).
    RuntimeError,
    /// A barrier was broken (aborted, reset, or a party timed out).
    BrokenBarrierError,
    /// The queue was closed.
    Closed,
    /// The client cancelled the parked call (`cancel`, PROTOCOL.md section 4.1).
    CancelledError,
}

impl fmt::Display for ErrorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The failure of one call, as the manager reports it: `[name, message]`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{name}: {message}")]
pub struct CallError {
    /// Which kind of failure.
    pub name: ErrorName,
    /// A self-contained explanation for people.
    pub message: String,
}

impl CallError {
    /// An error with that name and message.
    pub fn new(name: ErrorName, message: impl Into<String>) -> Self {
        CallError {
            name,
            message: message.into(),
        }
    }
}

macro_rules! constructors {
    ($($fn_name:ident => $name:ident),* $(,)?) => {
        impl CallError {
            $(
                #[doc = concat!("A `", stringify!($name), "` with that message.")]
                pub fn $fn_name(message: impl Into<String>) -> Self {
                    CallError::new(ErrorName::$name, message)
                }
            )*
        }
    };
}

constructors! {
    key => KeyError,
    index => IndexError,
    value => ValueError,
    type_error => TypeError,
    overflow => OverflowError,
    attribute => AttributeError,
    runtime => RuntimeError,
}
