//! The shared objects: one file per kind.
//!
//! Every object owns its state behind its own mutex, so operations on different objects run in
//! parallel and an operation on one object is atomic. Stored values are kept as the encoded
//! bytes the client sent ([`Stored`], which also keeps alive the objects a value references)
//! and decoded only when an operation must inspect them.

/// `retire`, `stop` and `view` of an object whose calls wait in the
/// [`Parking`](crate::lifecycle::Parking) at `self.$field`, filed under `self.key`: the
/// lifecycle core does all three, the same way for every blocking kind.
macro_rules! parking_events {
    ($field:ident) => {
        fn retire(&self) {
            self.$field.detach(self.key);
        }

        fn stop(&self) {
            self.$field.stop();
        }

        fn view(&self) -> View {
            self.$field.view(self.key)
        }
    };
}

pub mod array;
pub mod barrier;
pub mod condition;
pub mod dict;
pub mod event;
pub mod list;
pub mod lock;
pub mod mutex;
pub mod namespace;
pub mod queue;
pub mod semaphore;
pub mod set;
pub mod slice;
mod stored;
pub mod typecode;
pub mod value;

use std::sync::Arc;

use agora_proto::{CallError, ErrorName, Params};

/// The kinds of objects, defined with the wire protocol (a kind is part of its vocabulary);
/// re-exported so that `objects::Kind` keeps naming that one type.
pub use agora_proto::Kind;

use crate::lifecycle::{Caller, Outcome, View};

pub use stored::Stored;

/// Copies an encoded value for storage.
pub fn store(raw: &[u8]) -> Stored {
    raw.into()
}

/// What every shared object implements.
///
/// Objects whose calls can wait keep their state in a [`crate::lifecycle::Parking`], which
/// handles every lifecycle event (expiry, cancellation, give-back, owner death, deletion);
/// the object itself only answers calls.
pub trait SharedObject: Send + Sync + 'static {
    /// The object's kind.
    fn kind(&self) -> Kind;

    /// Runs `method` (the part of the wire method after `<kind>.`). A call that completes
    /// appends its encoded result to `out` and returns [`Outcome::Done`]; one that must wait
    /// returns [`Outcome::Parked`]. `params[0]` is the object id, already resolved to `self`.
    ///
    /// On error nothing useful is in `out`: the caller truncates it.
    fn call(
        &self,
        method: &str,
        params: &Params,
        caller: &Caller<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError>;

    /// The object was deleted: answer every call parked through it and refuse later ones.
    fn retire(&self) {}

    /// The manager is stopping: answer every parked call `ShutdownError` and grant nothing
    /// more ([`crate::lifecycle::Parking::stop`]). Objects whose calls never wait have nothing
    /// to do.
    fn stop(&self) {}

    /// Appends the object's whole state as `create`'s init args (an array) that build an
    /// equal object, and returns true; false (nothing appended) for kinds whose state is not
    /// a value: those whose calls wait, which a store keeps in its own form. The etcd store
    /// keeps a data object as this snapshot and runs calls on an object built from it.
    fn snapshot(&self, _out: &mut Vec<u8>) -> bool {
        false
    }

    /// The object as a `set`, for another set's algebra taking it as an operand.
    fn as_set(&self) -> Option<&set::Set> {
        None
    }

    /// What `stats` shows of the object: its size, who holds it and the calls parked on it.
    fn view(&self) -> View;

    /// The lock of a `lock` or `rlock`, for a `condition` built on it.
    fn lock_parking(&self) -> Option<lock::SharedLock> {
        None
    }
}

/// A shared object as the registry holds it.
pub type ObjectHandle = Arc<dyn SharedObject>;

/// Builds a new object of `kind` from `create`'s init args (`params[first..]`). The registry
/// is there for objects built on others (a condition over an existing lock).
pub fn create(
    kind: Kind,
    params: &Params,
    first: usize,
    registry: &crate::registry::Registry,
) -> Result<ObjectHandle, CallError> {
    let args = Args {
        params,
        first,
        what: kind.as_str(),
    };
    if let Some(value) = value_object(kind, &args) {
        return value;
    }
    Ok(match kind {
        Kind::Queue | Kind::JoinableQueue => Arc::new(queue::Queue::new(kind, &args)?),
        Kind::Lock | Kind::RLock => Arc::new(lock::Lock::new(kind, &args)?),
        Kind::Semaphore | Kind::BoundedSemaphore => {
            Arc::new(semaphore::Semaphore::new(kind, &args)?)
        }
        Kind::Event => Arc::new(event::Event::new(&args)?),
        Kind::Condition => Arc::new(condition::Condition::new(&args, registry)?),
        Kind::Barrier => Arc::new(barrier::Barrier::new(&args)?),
        Kind::Mutex => Arc::new(mutex::Mutex::new(&args)?),
        // Built above.
        Kind::Dict | Kind::List | Kind::Value | Kind::Array | Kind::Namespace | Kind::Set => {
            return Err(CallError::runtime(format!("a {kind} was not built")))
        }
    })
}

/// Builds a value object (dict, list, value, array, namespace, set) from its init args alone
/// (`params` is the init args array); the kinds that wait, or build on other objects, are
/// refused. The etcd store rebuilds its value objects from their snapshots with it.
pub fn create_value(kind: Kind, params: &Params) -> Result<ObjectHandle, CallError> {
    let args = Args {
        params,
        first: 0,
        what: kind.as_str(),
    };
    value_object(kind, &args).unwrap_or_else(|| {
        Err(CallError::type_error(format!(
            "a {kind} is not a value object"
        )))
    })
}

/// A value object of `kind` from `args`; `None` for the other kinds.
fn value_object(kind: Kind, args: &Args<'_>) -> Option<Result<ObjectHandle, CallError>> {
    let built: Result<ObjectHandle, CallError> = match kind {
        Kind::Dict => dict::Dict::new(args).map(|o| Arc::new(o) as ObjectHandle),
        Kind::List => list::List::new(args).map(|o| Arc::new(o) as ObjectHandle),
        Kind::Value => value::Value::new(args).map(|o| Arc::new(o) as ObjectHandle),
        Kind::Array => array::Array::new(args).map(|o| Arc::new(o) as ObjectHandle),
        Kind::Namespace => namespace::Namespace::new(args).map(|o| Arc::new(o) as ObjectHandle),
        Kind::Set => set::Set::new(args).map(|o| Arc::new(o) as ObjectHandle),
        _ => return None,
    };
    Some(built)
}

/// `create`'s init args for one kind: `params[first..]`.
pub struct Args<'a> {
    params: &'a Params,
    first: usize,
    what: &'static str,
}

impl<'a> Args<'a> {
    /// The init args of a `kind` as a store keeps them: the whole of `params`.
    pub fn of(kind: Kind, params: &'a Params) -> Args<'a> {
        Args {
            params,
            first: 0,
            what: kind.as_str(),
        }
    }

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

    /// Init arg `i` as a bool; `None` when absent or nil (the `owned` option of the locks and
    /// semaphores).
    pub fn opt_bool(&self, i: usize) -> Result<Option<bool>, CallError> {
        self.params.opt_bool(self.first + i)
    }

    /// Init arg `i`, raw. Check the count with [`Args::expect`] first.
    pub fn raw(&self, i: usize) -> &[u8] {
        self.params.raw(self.first + i)
    }
}

/// Checks the number of params of `kind.method` (the object id included). The method's full
/// name is formatted only for the error, off the hot path.
pub fn arity(
    params: &Params,
    kind: Kind,
    method: &str,
    min: usize,
    max: usize,
) -> Result<(), CallError> {
    if (min..=max).contains(&params.len()) {
        return Ok(());
    }
    let name = format!("{kind}.{method} (whose first param is the object id)");
    Err(agora_proto::params::argument_count(
        &name,
        min,
        max,
        params.len(),
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
