//! `lock` and `rlock`, and the lock state that `condition` shares.
//!
//! Acquirers wait in one FIFO line and the lock is handed to the first of them on release:
//! nobody can barge in between, so the order of acquisition is the order of arrival.
//!
//! Ownership is tied to the connection (plus the client's thread id). When a connection
//! closes while holding the lock, the lifecycle core releases it, as the kernel releases an
//! `flock` of a dead process, and the next acquirer is told: its acquire returns 2 instead of 1.

use std::sync::Arc;

use agora_proto::{encode, CallError, Params};

use crate::lifecycle::{
    timeout_param, Caller, Ctx, Grant, HeldBy, Holder, Leave, Left, LineId, ObjectKey, Offer,
    Outcome, Owner, Parking, Semantics, SessionId,
};

use super::{arity, unknown_method, Args, Kind, SharedObject};

/// The line of acquirers (a condition's waiters have a line each, named by the condition).
pub const ACQUIRE: LineId = 0;

/// What a granted acquirer is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnGrant {
    /// A plain acquire: acquired (with the owner-died notice, if any).
    Acquire,
    /// A condition waiter re-acquiring: whether it was notified (else it timed out).
    Resume {
        /// True when woken by notify, false after its timeout.
        notified: bool,
    },
}

/// One acquirer in line: who will hold the lock, at what depth, and what it is told.
#[derive(Debug, Clone, Copy)]
pub struct Acquirer {
    /// Who will hold the lock.
    pub owner: Owner,
    /// The recursion depth to restore (1, or a condition waiter's saved depth).
    pub depth: u64,
    /// What to answer on grant.
    pub on_grant: OnGrant,
}

/// The state of a lock: its holder and recursion depth.
#[derive(Debug)]
pub struct LockState {
    reentrant: bool,
    holder: Option<Owner>,
    depth: u64,
    held: HeldBy,
}

/// A lock's state and waiters, shared between a lock object and the conditions built on it.
pub type SharedLock = Arc<Parking<LockState>>;

impl LockState {
    /// True when `owner` holds the lock.
    pub fn is_held_by(&self, owner: Owner) -> bool {
        self.holder == Some(owner)
    }

    /// True when anyone holds the lock.
    pub fn is_locked(&self) -> bool {
        self.holder.is_some()
    }

    fn take(&mut self, owner: Owner, depth: u64, who: Caller<'_>) {
        self.holder = Some(owner);
        self.depth = depth;
        self.held.add(who, 1);
    }

    fn drop_holder(&mut self) {
        if let Some(h) = self.holder.take() {
            self.held.take(h.session);
        }
        self.depth = 0;
    }

    /// Releases one level. A plain lock may be released by anyone (as in Python); an rlock
    /// only by its holder.
    pub fn release(&mut self, owner: Owner) -> Result<(), CallError> {
        if self.holder.is_none() || (self.reentrant && self.holder != Some(owner)) {
            return Err(CallError::runtime(if self.reentrant {
                "cannot release un-acquired lock"
            } else {
                "release unlocked lock"
            }));
        }
        self.depth -= 1;
        if self.depth == 0 {
            self.drop_holder();
        }
        Ok(())
    }

    /// Releases every level held (a condition wait); returns the depth released.
    pub fn release_all(&mut self) -> u64 {
        let depth = self.depth;
        self.drop_holder();
        depth
    }
}

impl Semantics for LockState {
    type Wait = Acquirer;

    fn offer(&mut self, line: LineId, wait: &mut Acquirer, to: &Holder) -> Offer {
        if line != ACQUIRE || self.holder.is_some() {
            return Offer::Wait;
        }
        self.take(wait.owner, wait.depth, to.as_caller());
        Offer::Grant(Ok(match wait.on_grant {
            OnGrant::Acquire => Grant::ACQUIRED,
            // A condition waiter's answer is whether it was notified; the owner-died notice
            // is left for the next plain acquire.
            OnGrant::Resume { notified } => Grant::Bool(notified),
        }))
    }

    fn give_back(&mut self, _grant: Grant, to: &Holder) {
        if self.holder.is_some_and(|h| h.session == to.session) {
            self.drop_holder();
        }
    }

    fn leave(&mut self, line: LineId, mut wait: Acquirer, why: Leave) -> Left<Acquirer> {
        match (why, line, wait.on_grant) {
            (Leave::Abandoned, _, _) => Left::Gone,
            // A condition waiter answers only once it holds the lock again.
            (Leave::Expired, ACQUIRE, OnGrant::Resume { .. }) => Left::Requeue(ACQUIRE, wait),
            (Leave::Expired, ACQUIRE, OnGrant::Acquire) => Left::Answer(Ok(Grant::NotAcquired)),
            (Leave::Expired, _, _) => {
                wait.on_grant = OnGrant::Resume { notified: false };
                Left::Requeue(ACQUIRE, wait)
            }
        }
    }

    fn release_dead(&mut self, session: SessionId) -> bool {
        if self.holder.is_some_and(|h| h.session == session) {
            self.drop_holder();
            return true;
        }
        false
    }

    fn retire(&mut self) {
        self.holder = None;
        self.held.clear();
    }
}

/// A new lock's state and waiters; `reentrant` for an rlock.
pub fn new_lock(reentrant: bool) -> SharedLock {
    Parking::new(|held| LockState {
        reentrant,
        holder: None,
        depth: 0,
        held,
    })
}

/// Answers a lock-like call (`acquire`, `release`, `locked`) made through object `origin`;
/// `None` for other methods. Shared by `lock`, `rlock` and `condition`.
pub fn lock_call(
    lock: &SharedLock,
    (kind, origin): (Kind, ObjectKey),
    method: &str,
    p: &Params,
    caller: &Caller<'_>,
    out: &mut Vec<u8>,
) -> Option<Result<Outcome, CallError>> {
    let a = |min, max| arity(p, kind, method, min, max);
    let result = match method {
        "acquire" => a(1, 4).and_then(|()| acquire(lock, origin, p, caller, out)),
        "release" => a(1, 2).and_then(|()| {
            let owner = caller.owner(p, 1)?;
            lock.op(|cx| cx.state.release(owner))?;
            encode::nil(out);
            Ok(Outcome::Done)
        }),
        "locked" => a(1, 1).and_then(|()| {
            encode::bool(out, lock.read(LockState::is_locked)?);
            Ok(Outcome::Done)
        }),
        _ => return None,
    };
    Some(result)
}

/// `acquire [id, blocking, timeout, owner]`.
fn acquire(
    lock: &SharedLock,
    origin: ObjectKey,
    p: &Params,
    caller: &Caller<'_>,
    out: &mut Vec<u8>,
) -> Result<Outcome, CallError> {
    let blocking = p.bool_or(1, true)?;
    let timeout = timeout_param(p, 2)?;
    if !blocking && p.opt(2).is_some() && timeout.is_some() {
        return Err(CallError::value(
            "can't specify a timeout for a non-blocking call",
        ));
    }
    let owner = caller.owner(p, 3)?;
    lock.op(|cx| {
        if let Some(grant) = try_acquire(cx, owner, caller) {
            grant.encode(out);
            return Ok(Outcome::Done);
        }
        if !blocking {
            Grant::NotAcquired.encode(out);
            return Ok(Outcome::Done);
        }
        let acquirer = Acquirer {
            owner,
            depth: 1,
            on_grant: OnGrant::Acquire,
        };
        Ok(Outcome::Parked(
            cx.park(ACQUIRE, origin, caller, acquirer, timeout),
        ))
    })
}

/// Takes the lock for `owner` if that can be done now: the holder re-entering an rlock, or a
/// free lock nobody waits for (a newcomer never overtakes the line).
fn try_acquire(cx: &mut Ctx<'_, LockState>, owner: Owner, caller: &Caller<'_>) -> Option<Grant> {
    if cx.state.reentrant && cx.state.holder == Some(owner) {
        cx.state.depth += 1;
        return Some(Grant::ACQUIRED);
    }
    if cx.state.holder.is_some() || cx.waiting(ACQUIRE) > 0 {
        return None;
    }
    cx.state.take(owner, 1, *caller);
    Some(cx.acquired())
}

/// A shared lock or rlock.
pub struct Lock {
    kind: Kind,
    key: ObjectKey,
    lock: SharedLock,
}

impl Lock {
    /// A free lock (`Kind::Lock`) or rlock (`Kind::RLock`); takes no init args.
    pub fn new(kind: Kind, args: &Args<'_>) -> Result<Lock, CallError> {
        args.expect(0, 0)?;
        Ok(Lock {
            kind,
            key: crate::lifecycle::next_object_key(),
            lock: new_lock(kind == Kind::RLock),
        })
    }
}

impl SharedObject for Lock {
    fn kind(&self) -> Kind {
        self.kind
    }

    fn call(
        &self,
        method: &str,
        p: &Params,
        caller: &Caller<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        lock_call(&self.lock, (self.kind, self.key), method, p, caller, out)
            .unwrap_or_else(|| Err(unknown_method(self.kind, method)))
    }

    fn retire(&self) {
        self.lock.detach(self.key);
    }

    fn stop(&self) {
        self.lock.stop();
    }

    fn lock_parking(&self) -> Option<SharedLock> {
        Some(self.lock.clone())
    }
}
