//! The shared objects: one file per kind.
//!
//! Every object owns its state behind its own mutex, so operations on different objects run in
//! parallel and an operation on one object is atomic. Stored values are kept as the encoded
//! bytes the client sent (copied out of the read buffer, so a stored value never pins a whole
//! network buffer) and decoded only when an operation must inspect them.

pub mod array;
pub mod dict;
pub mod list;
pub mod namespace;
pub mod slice;
pub mod typecode;
pub mod value;

use std::fmt;
use std::sync::Arc;

use agora_proto::{CallError, ErrorName, Params};

/// An encoded MessagePack value, owned by an object.
pub type Stored = Box<[u8]>;

/// Copies an encoded value for storage.
pub fn store(raw: &[u8]) -> Stored {
    raw.into()
}

/// The kinds of objects `create` can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An insertion-ordered map.
    Dict,
    /// A sequence.
    List,
    /// One value with atomic read-modify-write operations.
    Value,
    /// A fixed-length array of one typecode.
    Array,
    /// A bag of named attributes.
    Namespace,
}

impl Kind {
    /// Every kind, in documentation order.
    pub const ALL: &'static [Kind] = &[
        Kind::Dict,
        Kind::List,
        Kind::Value,
        Kind::Array,
        Kind::Namespace,
    ];

    /// The kind's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Dict => "dict",
            Kind::List => "list",
            Kind::Value => "value",
            Kind::Array => "array",
            Kind::Namespace => "namespace",
        }
    }

    /// The kind with that wire name.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What every shared object implements.
pub trait SharedObject: Send + Sync + 'static {
    /// The object's kind.
    fn kind(&self) -> Kind;

    /// Runs `method` (the part of the wire method after `<kind>.`) and appends the encoded
    /// result to `out`. `params[0]` is the object id, already resolved to `self`.
    ///
    /// On error nothing useful is in `out`: the caller truncates it.
    fn call(&self, method: &str, params: &Params, out: &mut Vec<u8>) -> Result<(), CallError>;
}

/// A shared object as the registry holds it.
pub type ObjectHandle = Arc<dyn SharedObject>;

/// Builds a new object of `kind` from `create`'s init args (`params[first..]`).
pub fn create(kind: Kind, params: &Params, first: usize) -> Result<ObjectHandle, CallError> {
    let args = Args {
        params,
        first,
        what: kind.as_str(),
    };
    Ok(match kind {
        Kind::Dict => Arc::new(dict::Dict::new(&args)?),
        Kind::List => Arc::new(list::List::new(&args)?),
        Kind::Value => Arc::new(value::Value::new(&args)?),
        Kind::Array => Arc::new(array::Array::new(&args)?),
        Kind::Namespace => Arc::new(namespace::Namespace::new(&args)?),
    })
}

/// `create`'s init args for one kind: `params[first..]`.
pub struct Args<'a> {
    params: &'a Params,
    first: usize,
    what: &'static str,
}

impl Args<'_> {
    /// Number of init args.
    pub fn len(&self) -> usize {
        self.params.len() - self.first
    }

    /// True when no init args were given.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fails unless there are `min..=max` init args.
    pub fn expect(&self, min: usize, max: usize) -> Result<(), CallError> {
        if (min..=max).contains(&self.len()) {
            return Ok(());
        }
        Err(CallError::new(
            ErrorName::ArgumentCountError,
            format!(
                "create of a {} takes {min} to {max} init args, got {}",
                self.what,
                self.len()
            ),
        ))
    }

    /// Init arg `i`, raw; `None` when absent or nil.
    pub fn opt(&self, i: usize) -> Option<&[u8]> {
        self.params.opt(self.first + i)
    }

    /// Init arg `i`, raw. Check the count with [`Args::expect`] first.
    pub fn raw(&self, i: usize) -> &[u8] {
        self.params.raw(self.first + i)
    }
}

/// Checks the number of params of `kind.method` (the object id included).
pub fn arity(
    params: &Params,
    kind: Kind,
    method: &str,
    min: usize,
    max: usize,
) -> Result<(), CallError> {
    let n = params.len();
    if (min..=max).contains(&n) {
        return Ok(());
    }
    let wanted = if min == max {
        format!("{min}")
    } else {
        format!("{min} to {max}")
    };
    Err(CallError::new(
        ErrorName::ArgumentCountError,
        format!("{kind}.{method} takes {wanted} params (the object id first), got {n}"),
    ))
}

/// The error for a method the kind does not have.
pub fn unknown_method(kind: Kind, method: &str) -> CallError {
    CallError::new(
        ErrorName::UnknownMethodError,
        format!("{kind} has no method {method:?} (see PROTOCOL.md for the methods of a {kind})"),
    )
}

/// A `TypeError` for a param that should have been an array (or a map).
pub fn expected(what: &str, param: usize, raw: &[u8]) -> CallError {
    CallError::type_error(format!(
        "param {param} must be {what}, got {}",
        agora_proto::params::type_name(raw)
    ))
}
