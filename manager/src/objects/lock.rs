//! `lock` and `rlock`, and the lock state that `condition` shares.
//!
//! Acquirers wait in one FIFO line and the lock is handed to the first of them on release:
//! nobody can barge in between, so the order of acquisition is the order of arrival.
//!
//! The holder is a connection plus the client's thread id. An *owned* holding (the default, and
//! always what a `with` block or a guard takes) is recorded in the connection's holdings: when
//! the connection closes holding it, the lifecycle core releases it, as the kernel releases an
//! `flock` of a dead process, and the next acquirer is told: its acquire returns 2 instead of 1.
//! An unowned holding (`owned` false on the acquire, or a lock created with `owned` false) is
//! recorded nowhere but here: it stays until someone releases it, as in Python, so a lock may
//! be handed from a process that exits to one that releases it.

use std::sync::Arc;

use agora_proto::{encode, CallError, Params};

use crate::lifecycle::{
    blocking_params, Caller, Ctx, Grant, HeldBy, HeldInfo, Holder, Leave, Left, LineId, ObjectKey,
    Offer, Outcome, Owner, Parking, Semantics, SessionId, View,
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
    /// Whether the holding will be owned (released when its connection closes).
    pub owned: bool,
    /// What to answer on grant.
    pub on_grant: OnGrant,
}

/// The state of a lock: its holder and recursion depth.
#[derive(Debug)]
pub struct LockState {
    reentrant: bool,
    holder: Option<Owner>,
    depth: u64,
    /// The current holding is owned: recorded in `held`, released if its connection closes.
    owned: bool,
    /// The `owned` option given at creation, which every acquire follows; `None`: each
    /// acquire says (owned unless it says otherwise).
    policy: Option<bool>,
    /// Grants so far: the current holding's fencing token.
    grants: u64,
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

    /// Whether an acquire that asked for `asked` (absent: the default, owned) is owned.
    pub fn owned(&self, asked: Option<bool>) -> bool {
        self.policy.or(asked).unwrap_or(true)
    }

    fn take(&mut self, owner: Owner, depth: u64, owned: bool, who: Caller<'_>) {
        self.grants += 1;
        self.holder = Some(owner);
        self.depth = depth;
        self.owned = owned;
        if owned {
            self.held.add(who, 1);
        }
    }

    fn drop_holder(&mut self) {
        if let Some(h) = self.holder.take() {
            self.held.take(h.session);
        }
        self.depth = 0;
        self.owned = false;
    }

    /// The fencing token of `owner`'s holding: the number of the grant that made it, which
    /// grows with every grant.
    pub fn token(&self, owner: Owner) -> Result<u64, CallError> {
        if self.holder == Some(owner) {
            return Ok(self.grants);
        }
        Err(CallError::runtime(
            "cannot get a fencing token: the lock is not held by the caller",
        ))
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

    /// Releases every level held (a condition wait); returns the depth released and whether
    /// the holding was owned, to be restored when the waiter holds the lock again.
    pub fn release_all(&mut self) -> (u64, bool) {
        let (depth, owned) = (self.depth, self.owned);
        self.drop_holder();
        (depth, owned)
    }
}

impl Semantics for LockState {
    type Wait = Acquirer;

    fn offer(&mut self, line: LineId, wait: &mut Acquirer, to: &Holder) -> Offer {
        if line != ACQUIRE || self.holder.is_some() {
            return Offer::Wait;
        }
        self.take(wait.owner, wait.depth, wait.owned, to.as_caller());
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
        // Only an owned holding is released with its connection (an unowned one is not in the
        // connection's record, so this is a safeguard).
        if self.owned && self.holder.is_some_and(|h| h.session == session) {
            self.drop_holder();
            return true;
        }
        false
    }

    fn retire(&mut self) {
        self.holder = None;
        self.held.clear();
    }

    fn held(&self) -> Option<&HeldBy> {
        Some(&self.held)
    }

    /// The holder, owned or not, with its thread and depth.
    fn holding(&self) -> Vec<HeldInfo> {
        HeldInfo::of_owner(self.holder.as_ref(), self.depth, self.owned)
    }

    fn waits_for(&self, line: LineId, wait: &Acquirer) -> String {
        match (line, wait.on_grant) {
            (ACQUIRE, OnGrant::Acquire) => "the lock".to_owned(),
            (ACQUIRE, OnGrant::Resume { .. }) => "the lock again, after a wait".to_owned(),
            _ => "a notify".to_owned(),
        }
    }
}

/// A new lock's state and waiters; `reentrant` for an rlock; `policy`: the `owned` option.
pub fn new_lock(reentrant: bool, policy: Option<bool>) -> SharedLock {
    Parking::new(|held| LockState {
        reentrant,
        holder: None,
        depth: 0,
        owned: false,
        policy,
        grants: 0,
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
        "acquire" => a(1, 5).and_then(|()| acquire(lock, origin, p, caller, out)),
        "release" => a(1, 2).and_then(|()| {
            let owner = caller.owner(p, 1)?;
            // Releasing what a connection that already left holds: its close comes first.
            lock.settle(caller.session);
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

/// `acquire [id, blocking, timeout, owner, owned]`.
fn acquire(
    lock: &SharedLock,
    origin: ObjectKey,
    p: &Params,
    caller: &Caller<'_>,
    out: &mut Vec<u8>,
) -> Result<Outcome, CallError> {
    let (blocking, timeout) = blocking_params(p)?;
    let owner = caller.owner(p, 3)?;
    let asked = p.opt_bool(4)?;
    // A close of the holder's connection that already happened is finished first.
    lock.settle(caller.session);
    lock.op(|cx| {
        let owned = cx.state.owned(asked);
        if let Some(grant) = try_acquire(cx, owner, owned, caller) {
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
            owned,
            on_grant: OnGrant::Acquire,
        };
        Ok(Outcome::Parked(
            cx.park(ACQUIRE, origin, caller, acquirer, timeout),
        ))
    })
}

/// Takes the lock for `owner` if that can be done now: the holder re-entering an rlock, or a
/// free lock nobody waits for (a newcomer never overtakes the line).
fn try_acquire(
    cx: &mut Ctx<'_, LockState>,
    owner: Owner,
    owned: bool,
    caller: &Caller<'_>,
) -> Option<Grant> {
    if cx.state.reentrant && cx.state.holder == Some(owner) {
        cx.state.depth += 1;
        return Some(Grant::ACQUIRED);
    }
    if cx.state.holder.is_some() || cx.waiting(ACQUIRE) > 0 {
        return None;
    }
    cx.state.take(owner, 1, owned, *caller);
    Some(cx.acquired())
}

/// A shared lock or rlock.
pub struct Lock {
    kind: Kind,
    key: ObjectKey,
    lock: SharedLock,
}

impl Lock {
    /// A free lock (`Kind::Lock`) or rlock (`Kind::RLock`) from `create`'s init args: `[]`
    /// or `[owned]` (nil: each acquire says).
    pub fn new(kind: Kind, args: &Args<'_>) -> Result<Lock, CallError> {
        args.expect(0, 1)?;
        Ok(Lock {
            kind,
            key: crate::lifecycle::next_object_key(),
            lock: new_lock(kind == Kind::RLock, args.opt_bool(0)?),
        })
    }

    /// The `owned` option of a lock from init args as a store keeps them (the whole array),
    /// checked as `create` checks them.
    pub fn policy(kind: Kind, init: &Params) -> Result<Option<bool>, CallError> {
        let args = Args::of(kind, init);
        args.expect(0, 1)?;
        args.opt_bool(0)
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
        if method == "token" {
            arity(p, self.kind, method, 1, 2)?;
            let owner = caller.owner(p, 1)?;
            encode::uint(out, self.lock.read(|st| st.token(owner))??);
            return Ok(Outcome::Done);
        }
        lock_call(&self.lock, (self.kind, self.key), method, p, caller, out)
            .unwrap_or_else(|| Err(unknown_method(self.kind, method)))
    }

    fn lock_parking(&self) -> Option<SharedLock> {
        Some(self.lock.clone())
    }

    parking_events!(lock);
}
