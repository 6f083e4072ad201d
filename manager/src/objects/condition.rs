//! `condition`: wait / notify over a lock, with the lock released and re-acquired atomically.
//!
//! A condition has its own lock (an rlock, as in Python) or shares the lock of an existing
//! `lock` or `rlock` object. Waiting releases every level of the lock and joins the
//! condition's FIFO line; `notify` moves waiters from that line to the lock's line, where they
//! re-acquire it in turn. A waiter whose timeout passes moves to the lock's line too (and is
//! answered `false` once it holds the lock again), exactly as Python's `Condition.wait` returns
//! only with the lock held.
//!
//! A notified waiter keeps its place by arrival: it re-acquires the lock ahead of acquirers
//! that arrived after it started waiting.

use std::sync::Arc;

use parking_lot::Mutex;

use agora_proto::{encode, params, CallError, ErrorName, Params};

use crate::registry::Registry;
use crate::waiters::{
    timeout_param, Caller, Expired, Outcome, Park, Reply, SessionId, WaiterId, Waiters,
};

use super::lock::{Acquirer, LockCore, OnGrant, SharedCore, ACQUIRE};
use super::{arity, unknown_method, Args, Kind, SharedObject};

/// Waiter tag of a parked `wait`.
const WAIT: u8 = 1;

/// A shared condition variable.
#[derive(Debug)]
pub struct Condition {
    core: SharedCore,
    /// Waiters not notified yet. Lock order: `core`, then `waiting`.
    waiting: Mutex<Waiters<Acquirer>>,
}

impl Condition {
    /// A condition from `create`'s init args: `[]` (a new rlock) or `[lock id]`.
    pub fn new(args: &Args<'_>, registry: &Registry) -> Result<Condition, CallError> {
        args.expect(0, 1)?;
        let core = match args.opt(0) {
            None => Arc::new(Mutex::new(LockCore::new(true))),
            Some(raw) => {
                let id = params::int_u64(raw).ok_or_else(|| {
                    CallError::type_error("a condition's lock must be given by its object id")
                })?;
                registry.get(id)?.lock_core().ok_or_else(|| {
                    CallError::type_error(format!("object {id} is not a lock or an rlock"))
                })?
            }
        };
        Ok(Condition {
            core,
            waiting: Mutex::new(Waiters::default()),
        })
    }

    fn wait(&self, p: &Params, caller: &Caller) -> Result<Outcome, CallError> {
        let timeout = timeout_param(p, 1)?;
        let owner = caller.owner(p, 2)?;
        let mut core = self.core.lock();
        if !core.is_held_by(owner) {
            return Err(CallError::runtime("cannot wait on un-acquired lock"));
        }
        let depth = core.release_all(owner);
        let acquirer = Acquirer {
            owner,
            depth,
            on_grant: OnGrant::Resume { notified: true },
        };
        let (id, rx) = self.waiting.lock().push(caller.session, acquirer);
        Ok(Outcome::Parked(Park::new(rx, id, WAIT, timeout)))
    }

    fn notify(
        &self,
        n: usize,
        owner_param: usize,
        p: &Params,
        caller: &Caller,
    ) -> Result<(), CallError> {
        let owner = caller.owner(p, owner_param)?;
        let mut core = self.core.lock();
        if !core.is_held_by(owner) {
            return Err(CallError::runtime("cannot notify on un-acquired lock"));
        }
        let mut waiting = self.waiting.lock();
        for _ in 0..n {
            let Some((id, w)) = waiting.pop() else {
                break;
            };
            core.enqueue(id, w);
        }
        Ok(())
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
        caller: &Caller,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        if let Some(result) = LockCore::call(&self.core, Kind::Condition, method, p, caller, out) {
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

    fn expire(&self, waiter: WaiterId, tag: u8) -> Expired {
        let mut core = self.core.lock();
        if tag == ACQUIRE {
            return core.expire(waiter);
        }
        // Not notified in time: re-acquire the lock, then answer false.
        if let Some(mut w) = self.waiting.lock().remove(waiter) {
            w.data.on_grant = OnGrant::Resume { notified: false };
            core.enqueue(waiter, w);
        }
        Expired::Pending
    }

    fn abandon(&self, waiter: WaiterId, _tag: u8) {
        let mut core = self.core.lock();
        core.waiters.remove(waiter);
        self.waiting.lock().remove(waiter);
    }

    fn tracks_sessions(&self) -> bool {
        true
    }

    fn undeliver(&self, _waiter: WaiterId, _tag: u8, session: SessionId, reply: Reply) {
        self.core.lock().undeliver(session, &reply);
    }

    fn session_closed(&self, session: SessionId) {
        self.core.lock().session_closed(session);
    }

    fn deleted(&self) {
        let err = CallError::new(ErrorName::UnknownObjectError, "the condition was deleted");
        self.waiting.lock().fail_all(&err);
    }
}
