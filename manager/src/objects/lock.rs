//! `lock` and `rlock`, and the lock core that `condition` shares.
//!
//! Acquirers wait in one FIFO line and the lock is handed to the first of them on release:
//! nobody can barge in between, so the order of acquisition is the order of arrival.
//!
//! Ownership is tied to the connection (plus the client's thread id). When a connection
//! closes while holding the lock, the manager releases it, as the kernel releases an `flock`
//! of a dead process, and the next acquirer is told: its acquire returns 2 instead of 1.

use std::sync::Arc;

use parking_lot::Mutex;

use agora_proto::{encode, CallError, ErrorName, Params};

use crate::waiters::{
    timeout_param, Caller, Expired, Outcome, Owner, Park, Reply, SessionId, Waiter, WaiterId,
    Waiters,
};

use super::{arity, unknown_method, Args, Kind, SharedObject};

/// What an acquire returns: not acquired.
pub const NOT_ACQUIRED: u64 = 0;
/// What an acquire returns: acquired.
pub const ACQUIRED: u64 = 1;
/// What an acquire returns: acquired, and the previous holder's connection died holding it.
pub const ACQUIRED_OWNER_DIED: u64 = 2;

/// What an acquire whose deadline passed is answered: 0 if its waiter was still in line (and
/// has been removed), nothing yet if it had been granted meanwhile.
pub fn not_acquired_unless_granted(removed: bool) -> Expired {
    if !removed {
        return Expired::Pending;
    }
    let mut out = Vec::with_capacity(1);
    encode::uint(&mut out, NOT_ACQUIRED);
    Expired::Reply(Ok(out))
}

/// Waiter tag of a parked acquire.
pub const ACQUIRE: u8 = 0;

/// What a granted waiter is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnGrant {
    /// A plain acquire: 1, or 2 when the previous holder died.
    Acquire,
    /// A condition waiter re-acquiring: whether it was notified (else it timed out).
    Resume {
        /// True when woken by notify, false after its timeout.
        notified: bool,
    },
}

/// One acquirer in line.
#[derive(Debug, Clone, Copy)]
pub struct Acquirer {
    /// Who will hold the lock.
    pub owner: Owner,
    /// The recursion depth to restore (1, or a condition waiter's saved depth).
    pub depth: u64,
    /// What to answer on grant.
    pub on_grant: OnGrant,
}

/// The state of a lock: its holder, recursion depth and line of acquirers.
#[derive(Debug)]
pub struct LockCore {
    reentrant: bool,
    holder: Option<Owner>,
    depth: u64,
    /// The last holder died holding the lock; the next plain acquirer is told.
    owner_died: bool,
    /// Acquirers in line.
    pub waiters: Waiters<Acquirer>,
}

/// A lock core shared between a lock object and the conditions built on it.
pub type SharedCore = Arc<Mutex<LockCore>>;

fn unlocked_release(reentrant: bool) -> CallError {
    CallError::runtime(if reentrant {
        "cannot release un-acquired lock"
    } else {
        "release unlocked lock"
    })
}

impl LockCore {
    /// A free lock; `reentrant` for an rlock.
    pub fn new(reentrant: bool) -> LockCore {
        LockCore {
            reentrant,
            holder: None,
            depth: 0,
            owner_died: false,
            waiters: Waiters::default(),
        }
    }

    /// True for an rlock's core.
    pub fn is_reentrant(&self) -> bool {
        self.reentrant
    }

    /// True when `owner` holds the lock.
    pub fn is_held_by(&self, owner: Owner) -> bool {
        self.holder == Some(owner)
    }

    /// True when anyone holds the lock.
    pub fn is_locked(&self) -> bool {
        self.holder.is_some()
    }

    /// Takes the lock for `owner` if that can be done now; returns the acquire code.
    pub fn try_acquire(&mut self, owner: Owner) -> Option<u64> {
        if self.reentrant && self.holder == Some(owner) {
            self.depth += 1;
            return Some(ACQUIRED);
        }
        if self.holder.is_some() || !self.waiters.is_empty() {
            return None;
        }
        self.holder = Some(owner);
        self.depth = 1;
        Some(self.take_notice())
    }

    fn take_notice(&mut self) -> u64 {
        if std::mem::take(&mut self.owner_died) {
            ACQUIRED_OWNER_DIED
        } else {
            ACQUIRED
        }
    }

    /// Releases one level. A plain lock may be released by anyone (as in Python); an rlock
    /// only by its holder.
    pub fn release(&mut self, owner: Owner) -> Result<(), CallError> {
        if self.holder.is_none() || (self.reentrant && self.holder != Some(owner)) {
            return Err(unlocked_release(self.reentrant));
        }
        self.depth -= 1;
        if self.depth == 0 {
            self.holder = None;
            self.hand_off();
        }
        Ok(())
    }

    /// Releases every level held by `owner` (a condition wait); returns the depth released.
    pub fn release_all(&mut self, owner: Owner) -> u64 {
        let depth = std::mem::take(&mut self.depth);
        self.holder = None;
        debug_assert!(depth > 0, "{owner:?} released a lock it did not hold");
        self.hand_off();
        depth
    }

    /// Grants the lock to the first acquirer in line whose connection is still there.
    pub fn hand_off(&mut self) {
        while self.holder.is_none() {
            let Some((_, w)) = self.waiters.pop() else {
                return;
            };
            let notice = self.owner_died;
            let reply = match w.data.on_grant {
                OnGrant::Acquire => {
                    let mut out = Vec::with_capacity(1);
                    encode::uint(&mut out, self.take_notice());
                    out
                }
                // A condition waiter's answer is whether it was notified; the owner-died
                // notice is left for the next plain acquire.
                OnGrant::Resume { notified: true } => encode::TRUE.to_vec(),
                OnGrant::Resume { notified: false } => encode::FALSE.to_vec(),
            };
            self.holder = Some(w.data.owner);
            self.depth = w.data.depth;
            if w.reply.send(Ok(reply)).is_err() {
                // Gone before it could be told: the lock, and the notice, go to the next one.
                self.holder = None;
                self.depth = 0;
                self.owner_died = notice;
            }
        }
    }

    /// Parks an acquirer at the back of the line.
    pub fn park(
        &mut self,
        session: SessionId,
        acquirer: Acquirer,
    ) -> (WaiterId, tokio::sync::oneshot::Receiver<Reply>) {
        self.waiters.push(session, acquirer)
    }

    /// Puts a waiter in line under its original id (a notified condition waiter).
    pub fn enqueue(&mut self, id: WaiterId, waiter: Waiter<Acquirer>) {
        self.waiters.push_with_id(id, waiter);
        self.hand_off();
    }

    /// Takes the connection's place: removes its acquirers, and releases the lock if it held
    /// it, telling the next acquirer that the holder died.
    pub fn session_closed(&mut self, session: SessionId) {
        if self.holder.is_some_and(|h| h.session == session) {
            self.holder = None;
            self.depth = 0;
            self.owner_died = true;
            self.hand_off();
        }
    }

    /// A grant never reached `session`, which closed: if it still holds the lock, the lock
    /// goes to the next in line as if never granted (with the owner-died notice the grant
    /// carried, if any: the holder that died before it is still news).
    pub fn undeliver(&mut self, session: SessionId, reply: &Reply) {
        if self.holder.is_none_or(|h| h.session != session) {
            return;
        }
        self.holder = None;
        self.depth = 0;
        if let Ok(bytes) = reply {
            self.owner_died |= bytes.as_slice() == [ACQUIRED_OWNER_DIED as u8];
        }
        self.hand_off();
    }

    /// A parked acquire's deadline passed: remove it (answering 0) unless it was granted.
    pub fn expire(&mut self, waiter: WaiterId) -> Expired {
        not_acquired_unless_granted(self.waiters.remove(waiter).is_some())
    }

    /// Answers a lock-like call (`acquire`, `release`, `locked`) on this core; `None` for other
    /// methods. Shared by `lock`, `rlock` and `condition`.
    pub fn call(
        core: &SharedCore,
        kind: Kind,
        method: &str,
        p: &Params,
        caller: &Caller,
        out: &mut Vec<u8>,
    ) -> Option<Result<Outcome, CallError>> {
        let a = |min, max| arity(p, kind, method, min, max);
        let result = match method {
            "acquire" => a(1, 4).and_then(|()| acquire(core, p, caller, out)),
            "release" => a(1, 2).and_then(|()| {
                core.lock().release(caller.owner(p, 1)?)?;
                encode::nil(out);
                Ok(Outcome::Done)
            }),
            "locked" => a(1, 1).map(|()| {
                encode::bool(out, core.lock().is_locked());
                Outcome::Done
            }),
            _ => return None,
        };
        Some(result)
    }
}

/// `acquire [id, blocking, timeout, owner]`.
fn acquire(
    core: &SharedCore,
    p: &Params,
    caller: &Caller,
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
    let mut core = core.lock();
    if let Some(code) = core.try_acquire(owner) {
        encode::uint(out, code);
        return Ok(Outcome::Done);
    }
    if !blocking {
        encode::uint(out, NOT_ACQUIRED);
        return Ok(Outcome::Done);
    }
    let acquirer = Acquirer {
        owner,
        depth: 1,
        on_grant: OnGrant::Acquire,
    };
    let (id, rx) = core.park(caller.session, acquirer);
    Ok(Outcome::Parked(Park::new(rx, id, ACQUIRE, timeout)))
}

/// A shared lock or rlock.
#[derive(Debug)]
pub struct Lock {
    kind: Kind,
    core: SharedCore,
}

impl Lock {
    /// A free lock (`Kind::Lock`) or rlock (`Kind::RLock`); takes no init args.
    pub fn new(kind: Kind, args: &Args<'_>) -> Result<Lock, CallError> {
        args.expect(0, 0)?;
        Ok(Lock {
            kind,
            core: Arc::new(Mutex::new(LockCore::new(kind == Kind::RLock))),
        })
    }

    /// The core, for a condition built on this lock.
    pub fn core(&self) -> SharedCore {
        self.core.clone()
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
        caller: &Caller,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        LockCore::call(&self.core, self.kind, method, p, caller, out)
            .unwrap_or_else(|| Err(unknown_method(self.kind, method)))
    }

    fn expire(&self, waiter: WaiterId, _tag: u8) -> Expired {
        self.core.lock().expire(waiter)
    }

    fn abandon(&self, waiter: WaiterId, _tag: u8) {
        self.core.lock().waiters.remove(waiter);
    }

    fn undeliver(&self, _waiter: WaiterId, _tag: u8, session: SessionId, reply: Reply) {
        self.core.lock().undeliver(session, &reply);
    }

    fn tracks_sessions(&self) -> bool {
        true
    }

    fn session_closed(&self, session: SessionId) {
        self.core.lock().session_closed(session);
    }

    fn deleted(&self) {
        let err = CallError::new(ErrorName::UnknownObjectError, "the lock was deleted");
        self.core.lock().waiters.fail_all(&err);
    }

    fn lock_core(&self) -> Option<SharedCore> {
        Some(self.core.clone())
    }
}
