//! `condition`: wait / notify over a lock, with the lock released and re-acquired atomically.
//!
//! A condition has its own lock (an rlock, as in Python) or shares the lock of an existing
//! `lock` or `rlock` object. Its waiters wait in a line of their own inside that lock's
//! parking: waiting releases every level of the lock and joins the condition's line; `notify`
//! moves waiters from that line to the lock's line of acquirers, where they re-acquire it in
//! turn. A waiter whose timeout passes moves to the lock's line too (and is answered `false`
//! once it holds the lock again), exactly as Python's `Condition.wait` returns only with the
//! lock held.
//!
//! A notified waiter keeps its place by arrival: it re-acquires the lock ahead of acquirers
//! that arrived after it started waiting.

use agora_proto::{encode, params, CallError, Params};

use crate::lifecycle::{timeout_param, Caller, ObjectKey, Outcome, View};
use crate::registry::Registry;

use super::lock::{lock_call, new_lock, Acquirer, OnGrant, SharedLock, ACQUIRE};
use super::{arity, unknown_method, Args, Kind, SharedObject};

/// A shared condition variable.
pub struct Condition {
    /// Its line of waiters in the lock's parking, and the origin of the calls made through it.
    key: ObjectKey,
    lock: SharedLock,
}

impl Condition {
    /// A condition from `create`'s init args: `[]` (a new rlock) or `[lock id]`.
    pub fn new(args: &Args<'_>, registry: &Registry) -> Result<Condition, CallError> {
        args.expect(0, 1)?;
        let key = crate::lifecycle::next_object_key();
        let lock = match args.opt(0) {
            None => new_lock(true, None),
            Some(raw) => {
                let id = params::int_u64(raw).ok_or_else(|| {
                    CallError::type_error("a condition's lock must be given by its object id")
                })?;
                let lock = registry.get(id)?.lock_parking().ok_or_else(|| {
                    CallError::type_error(format!("object {id} is not a lock or an rlock"))
                })?;
                lock.attach()?;
                lock
            }
        };
        Ok(Condition { key, lock })
    }

    fn wait(&self, p: &Params, caller: &Caller<'_>) -> Result<Outcome, CallError> {
        let timeout = timeout_param(p, 1)?;
        let owner = caller.owner(p, 2)?;
        self.lock.op(|cx| {
            if !cx.state.is_held_by(owner) {
                return Err(CallError::runtime("cannot wait on un-acquired lock"));
            }
            let (depth, owned) = cx.state.release_all();
            let acquirer = Acquirer {
                owner,
                depth,
                owned,
                on_grant: OnGrant::Resume { notified: true },
            };
            Ok(Outcome::Parked(
                cx.park(self.key, self.key, caller, acquirer, timeout),
            ))
        })
    }

    fn notify(
        &self,
        n: usize,
        owner_param: usize,
        p: &Params,
        caller: &Caller<'_>,
    ) -> Result<(), CallError> {
        let owner = caller.owner(p, owner_param)?;
        self.lock.op(|cx| {
            if !cx.state.is_held_by(owner) {
                return Err(CallError::runtime("cannot notify on un-acquired lock"));
            }
            cx.move_waiters(self.key, ACQUIRE, n, |_| {});
            Ok(())
        })
    }
}

impl SharedObject for Condition {
    fn kind(&self) -> Kind {
        Kind::Condition
    }

    fn call(
        &self,
        method: &str,
        p: &Params,
        caller: &Caller<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let origin = (Kind::Condition, self.key);
        if let Some(result) = lock_call(&self.lock, origin, method, p, caller, out) {
            return result;
        }
        let a = |min, max| arity(p, Kind::Condition, method, min, max);
        match method {
            "wait" => {
                a(1, 3)?;
                return self.wait(p, caller);
            }
            "notify" => {
                a(1, 3)?;
                let n = p.opt(1).map(|_| p.u64(1)).transpose()?.unwrap_or(1);
                self.notify(usize::try_from(n).unwrap_or(usize::MAX), 2, p, caller)?;
            }
            "notify_all" => {
                a(1, 2)?;
                self.notify(usize::MAX, 1, p, caller)?;
            }
            _ => return Err(unknown_method(Kind::Condition, method)),
        }
        encode::nil(out);
        Ok(Outcome::Done)
    }

    parking_events!(lock);
}
