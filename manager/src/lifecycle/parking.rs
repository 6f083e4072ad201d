//! [`Parking`]: an object's state and its lines of waiters behind one mutex, and the one
//! implementation of park, grant, expiry, cancellation, give-back, owner death and deletion.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use agora_proto::{CallError, ErrorName};

use super::grant::{Grant, Reply};
use super::holdings::{Caller, HeldBy, Holdable, Holder, SessionId};
use super::parked::{Park, Waitable};
use super::view::{counted, HeldInfo, View, WaiterInfo};

/// Identifies one parked call. Allocated in increasing order, so that sorting by id is arrival
/// order: a waiter moved from one line to another keeps its place by arrival.
pub type WaiterId = u64;

/// Names a line of waiters within one [`Parking`]. Objects use small constants for their own
/// lines; a condition's line is named by its [`ObjectKey`].
pub type LineId = u64;

/// Identifies one object that parks calls in a [`Parking`] (several can share one: a lock and
/// the conditions built on it), so that deleting it answers exactly the calls made through it.
pub type ObjectKey = u64;

static NEXT_WAITER: AtomicU64 = AtomicU64::new(1);

/// Object keys start above every constant line id, so a condition's line never collides.
static NEXT_OBJECT: AtomicU64 = AtomicU64::new(1 << 32);

/// A fresh waiter id, for a call parked outside a [`Parking`] (the etcd store's).
pub fn next_waiter_id() -> WaiterId {
    NEXT_WAITER.fetch_add(1, Ordering::Relaxed)
}

thread_local! {
    /// Grants this thread has sent to parked calls, for [`grants_sent`].
    static GRANTS_SENT: Cell<u64> = const { Cell::new(0) };
}

/// How many grants this thread has sent to parked calls so far. A connection compares the
/// count before and after serving requests: sending a grant wakes the waiter's task, which the
/// runtime then runs next on this very thread (and no other thread may take it), so a
/// connection that sent one must not keep the thread polling for its own next request while
/// the grant waits to be written.
pub fn grants_sent() -> u64 {
    GRANTS_SENT.with(Cell::get)
}

/// A fresh key for a new object.
pub fn next_object_key() -> ObjectKey {
    NEXT_OBJECT.fetch_add(1, Ordering::Relaxed)
}

/// Can the front waiter of a line be granted now?
#[derive(Debug)]
pub enum Offer {
    /// Yes: it leaves its line with this answer.
    Grant(Reply),
    /// Partly: the object changed (a putter's first items went in) but the waiter stays at the
    /// front of its line; other lines may now make progress.
    Progress,
    /// Not now: the waiter, and everyone behind it in its line, keeps waiting.
    Wait,
}

/// Why a waiter leaves its line before it is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// Its deadline passed.
    Expired,
    /// Its connection closed or its call was dropped: nobody reads an answer.
    Abandoned,
}

/// What becomes of a waiter that leaves.
#[derive(Debug)]
pub enum Left<W> {
    /// It is answered with this (for an expiry).
    Answer(Reply),
    /// It waits on, in this line and with this wait, keeping its place by arrival (a
    /// condition waiter must re-acquire its lock before it is answered).
    Requeue(LineId, W),
    /// It is gone.
    Gone,
}

/// What an object supplies to the core: its semantics, and nothing about reply channels,
/// deadlines or connections.
pub trait Semantics: Send + 'static {
    /// What a waiter waits for (a count of items, an owner, a generation...).
    type Wait: Send + 'static;

    /// Whether the front waiter of `line`, waiting for `wait`, can be granted now; a grant
    /// takes what it grants from the state (and records a holding for `to` if it is one).
    fn offer(&mut self, line: LineId, wait: &mut Self::Wait, to: &Holder) -> Offer;

    /// `grant` never reached `to`: undo it (a queue item goes back to the head of the queue,
    /// a lock is released). The core then offers it to the next waiter.
    fn give_back(&mut self, grant: Grant, to: &Holder);

    /// A waiter leaves its line before it was granted.
    fn leave(&mut self, line: LineId, wait: Self::Wait, why: Leave) -> Left<Self::Wait>;

    /// Connection `session` closed: release what it held. True when it held something (a
    /// holder died: the next acquire is told).
    fn release_dead(&mut self, _session: SessionId) -> bool {
        false
    }

    /// The object is deleted: forget every holding.
    fn retire(&mut self) {}

    /// Who holds something here, for [`Parking::settle`]; `None` for objects nobody holds.
    fn held(&self) -> Option<&HeldBy> {
        None
    }

    /// Who holds what, for `stats`: by default the owned holdings [`Semantics::held`]
    /// counts. Objects that know more (a lock's holder thread, an unowned holding) say so.
    fn holding(&self) -> Vec<HeldInfo> {
        counted(self.held())
    }

    /// How many items, permits... the object has now, for `stats` (see [`View::size`]).
    fn size(&self) -> Option<u64> {
        None
    }

    /// What a waiter of `line` waiting for `wait` waits for, in a few words, for `stats`.
    fn waits_for(&self, line: LineId, wait: &Self::Wait) -> String;
}

/// One parked waiter.
struct Waiter<W> {
    reply: oneshot::Sender<Reply>,
    holder: Holder,
    /// When the call was parked (a requeued waiter keeps it).
    since: Instant,
    /// The object the call was made through.
    origin: ObjectKey,
    wait: W,
}

/// The lines of one parking, and the facts the core keeps beside the object's state.
struct Lines<W> {
    lines: BTreeMap<LineId, BTreeMap<WaiterId, Waiter<W>>>,
    /// A holder died holding something; the next acquire grant carries the notice.
    owner_died: bool,
    /// Objects parking calls here; the last one deleted retires the parking.
    users: usize,
    retired: bool,
    /// The manager is stopping: every waiter was answered `ShutdownError`, and nothing is
    /// granted any more (not even to what a closing holder releases).
    stopped: bool,
}

struct Inner<S: Semantics> {
    state: S,
    core: Lines<S::Wait>,
}

/// An object's state and its waiters, behind one mutex.
pub struct Parking<S: Semantics> {
    me: Weak<Parking<S>>,
    inner: Mutex<Inner<S>>,
}

/// What an object's operation sees: its state, and the core's operations on its lines.
pub struct Ctx<'a, S: Semantics> {
    /// The object's own state.
    pub state: &'a mut S,
    core: &'a mut Lines<S::Wait>,
    me: &'a Weak<Parking<S>>,
}

/// The error for a call that reaches a deleted object.
pub fn deleted() -> CallError {
    CallError::new(ErrorName::UnknownObjectError, "the object was deleted")
}

/// The error for a call parked (or made) while the manager stops.
pub fn shutting_down() -> CallError {
    CallError::new(ErrorName::ShutdownError, "the manager is shutting down")
}

impl<S: Semantics> Parking<S> {
    /// A parking for one object, whose state is built with the [`HeldBy`] it must keep its
    /// holdings in.
    pub fn new(state: impl FnOnce(HeldBy) -> S) -> Arc<Parking<S>> {
        Arc::new_cyclic(|me: &Weak<Parking<S>>| {
            let object: Weak<dyn Holdable> = me.clone();
            let held = HeldBy::new(me.as_ptr() as usize, object);
            Parking {
                me: me.clone(),
                inner: Mutex::new(Inner {
                    state: state(held),
                    core: Lines {
                        lines: BTreeMap::new(),
                        owner_died: false,
                        users: 1,
                        retired: false,
                        stopped: false,
                    },
                }),
            }
        })
    }

    /// Runs an object operation on the state under the lock, then offers grants to every line:
    /// whatever the operation made possible is handed out before anyone else can look. Fails
    /// with `UnknownObjectError` once the object is deleted.
    pub fn op<R>(
        &self,
        f: impl FnOnce(&mut Ctx<'_, S>) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        if inner.core.retired {
            return Err(deleted());
        }
        if inner.core.stopped {
            return Err(shutting_down());
        }
        let result = f(&mut Ctx {
            state: &mut inner.state,
            core: &mut inner.core,
            me: &self.me,
        });
        pump(&mut inner.state, &mut inner.core);
        result
    }

    /// Finishes the close of every connection other than `caller` that holds something here
    /// and has already left (its client closed its end, or its task is ending): their holdings
    /// are released now, as their own close would, before the call that follows runs. So a
    /// call racing another connection's close always sees the close done (`PROTOCOL.md`
    /// section 4.1, Closes before calls), whichever task the scheduler ran first. Cheap when
    /// nobody else holds anything here: no system call.
    pub fn settle(&self, caller: SessionId) {
        let departed = {
            let inner = self.inner.lock();
            match inner.state.held() {
                Some(held) if !inner.core.retired => held.departed(caller),
                _ => return,
            }
        };
        // Outside the lock: releasing takes this parking's lock (and others').
        for (session, holdings) in departed {
            holdings.settle(session);
        }
    }

    /// Reads the state (no grants can follow a read).
    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> Result<R, CallError> {
        let inner = self.inner.lock();
        if inner.core.retired {
            return Err(deleted());
        }
        Ok(f(&inner.state))
    }

    /// Another object parks calls here from now on (a condition built on a lock).
    pub fn attach(&self) -> Result<(), CallError> {
        let mut inner = self.inner.lock();
        if inner.core.retired {
            return Err(deleted());
        }
        inner.core.users += 1;
        Ok(())
    }

    /// The manager is stopping: every parked call is answered `ShutdownError` now, and from
    /// here on the parking grants nothing and refuses every operation with `ShutdownError`.
    /// Called for every object before any connection's holdings are released, so that a
    /// holder closing while the manager stops hands nothing (and no owner-died notice) to a
    /// waiter (`PROTOCOL.md` section 4.1). Idempotent.
    pub fn stop(&self) {
        let mut guard = self.inner.lock();
        let core = &mut guard.core;
        if core.stopped {
            return;
        }
        core.stopped = true;
        let err = shutting_down();
        for line in core.lines.values_mut() {
            while let Some((_, w)) = line.pop_first() {
                let _ = w.reply.send(Err(err.clone()));
            }
        }
    }

    /// Object `origin` is deleted: every call parked through it is answered with
    /// `UnknownObjectError` and its own line goes; the last object to go retires the parking
    /// (every waiter answered, every holding forgotten, every later call refused).
    pub fn detach(&self, origin: ObjectKey) {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        if inner.core.retired {
            return;
        }
        inner.core.users = inner.core.users.saturating_sub(1);
        let retire = inner.core.users == 0;
        let err = deleted();
        for line in inner.core.lines.values_mut() {
            let gone: Vec<WaiterId> = line
                .iter()
                .filter(|(_, w)| retire || w.origin == origin)
                .map(|(id, _)| *id)
                .collect();
            for id in gone {
                if let Some(w) = line.remove(&id) {
                    let _ = w.reply.send(Err(err.clone()));
                }
            }
        }
        inner.core.lines.remove(&origin);
        if retire {
            inner.core.retired = true;
            inner.core.lines.clear();
            inner.state.retire();
        } else {
            pump(&mut inner.state, &mut inner.core);
        }
    }
}

/// Offers grants to the front of every line, in line order, until none can be granted. Once
/// the parking is stopped it grants nothing.
fn pump<S: Semantics>(state: &mut S, core: &mut Lines<S::Wait>) {
    if core.stopped {
        return;
    }
    let Lines {
        lines, owner_died, ..
    } = core;
    loop {
        let mut moved = false;
        for (&line_id, line) in lines.iter_mut() {
            while let Some(mut front) = line.first_entry() {
                let w = front.get_mut();
                match state.offer(line_id, &mut w.wait, &w.holder) {
                    Offer::Wait => break,
                    Offer::Progress => {
                        moved = true;
                        break;
                    }
                    Offer::Grant(mut reply) => {
                        moved = true;
                        let w = front.remove();
                        if let Ok(Grant::Acquired {
                            owner_died: notice, ..
                        }) = &mut reply
                        {
                            *notice = std::mem::take(owner_died);
                        }
                        match w.reply.send(reply) {
                            Ok(()) => GRANTS_SENT.with(|n| n.set(n.get() + 1)),
                            // Its connection is gone: nobody learnt of the grant.
                            Err(Ok(grant)) => give_back(state, owner_died, grant, &w.holder),
                            Err(Err(_)) => {}
                        }
                    }
                }
            }
        }
        if !moved {
            return;
        }
    }
}

/// Undoes a grant that was not delivered; a notice it carried is still news for the next one.
fn give_back<S: Semantics>(state: &mut S, owner_died: &mut bool, grant: Grant, to: &Holder) {
    if let Grant::Acquired {
        owner_died: true, ..
    } = grant
    {
        *owner_died = true;
    }
    state.give_back(grant, to);
}

impl<S: Semantics> Ctx<'_, S> {
    /// Parks the caller in `line`, waiting for `wait`, as a call made through `origin`.
    pub fn park(
        &mut self,
        line: LineId,
        origin: ObjectKey,
        caller: &Caller<'_>,
        wait: S::Wait,
        timeout: Option<Duration>,
    ) -> Park {
        let (reply, rx) = oneshot::channel();
        let id = NEXT_WAITER.fetch_add(1, Ordering::Relaxed);
        let waiter = Waiter {
            reply,
            holder: caller.holder(),
            since: Instant::now(),
            origin,
            wait,
        };
        self.core.lines.entry(line).or_default().insert(id, waiter);
        let object = match self.me.upgrade() {
            Some(me) => me as Arc<dyn Waitable>,
            None => unreachable!("a parking is only used through its Arc"),
        };
        Park::new(rx, id, object, timeout)
    }

    /// An acquire granted now, with the owner-died notice if a holder died since the last one.
    pub fn acquired(&mut self) -> Grant {
        Grant::Acquired {
            owner_died: std::mem::take(&mut self.core.owner_died),
            owned: true,
        }
    }

    /// Number of waiters in `line`.
    pub fn waiting(&self, line: LineId) -> usize {
        self.core.lines.get(&line).map_or(0, BTreeMap::len)
    }

    /// Moves up to `n` waiters from the front of `from` to `to` (where they take their place by
    /// arrival), changing each one's wait with `change`.
    pub fn move_waiters(
        &mut self,
        from: LineId,
        to: LineId,
        n: usize,
        mut change: impl FnMut(&mut S::Wait),
    ) {
        let mut moved = Vec::new();
        if let Some(line) = self.core.lines.get_mut(&from) {
            while moved.len() < n {
                let Some((id, mut w)) = line.pop_first() else {
                    break;
                };
                change(&mut w.wait);
                moved.push((id, w));
            }
        }
        self.core.lines.entry(to).or_default().extend(moved);
    }

    /// Answers every waiter of `line` with `err` (a closed queue's putters, a broken barrier).
    pub fn fail(&mut self, line: LineId, err: &CallError) {
        if let Some(line) = self.core.lines.get_mut(&line) {
            while let Some((_, w)) = line.pop_first() {
                let _ = w.reply.send(Err(err.clone()));
            }
        }
    }
}

impl<S: Semantics> Waitable for Parking<S> {
    fn expire(&self, waiter: WaiterId) -> Option<Reply> {
        self.leave(waiter, Leave::Expired)
    }

    fn abandon(&self, waiter: WaiterId) {
        self.leave(waiter, Leave::Abandoned);
    }

    fn undeliver(&self, grant: Grant, to: &Holder) {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        if inner.core.retired || inner.core.stopped {
            return;
        }
        give_back(&mut inner.state, &mut inner.core.owner_died, grant, to);
        pump(&mut inner.state, &mut inner.core);
    }
}

impl<S: Semantics> Parking<S> {
    /// Takes a waiter out of its line, if it is still in one, and lets the object say what
    /// becomes of it. `None`: it was granted already, or waits on (requeued).
    fn leave(&self, waiter: WaiterId, why: Leave) -> Option<Reply> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let (line, w) = inner
            .core
            .lines
            .iter_mut()
            .find_map(|(id, line)| line.remove(&waiter).map(|w| (*id, w)))?;
        let Waiter {
            reply,
            holder,
            since,
            origin,
            wait,
        } = w;
        let answer = match inner.state.leave(line, wait, why) {
            Left::Answer(answer) => Some(answer),
            Left::Requeue(to, wait) => {
                let w = Waiter {
                    reply,
                    holder,
                    since,
                    origin,
                    wait,
                };
                inner.core.lines.entry(to).or_default().insert(waiter, w);
                None
            }
            Left::Gone => None,
        };
        pump(&mut inner.state, &mut inner.core);
        answer
    }

    /// What `stats` shows of the object `origin` parking here: the state's size and holders,
    /// and the calls parked through `origin` (a lock and the conditions built on it share a
    /// parking; each shows its own calls), oldest first. Empty once the object is deleted.
    pub fn view(&self, origin: ObjectKey) -> View {
        let inner = self.inner.lock();
        if inner.core.retired {
            return View::default();
        }
        let mut waiting: Vec<(WaiterId, WaiterInfo)> = inner
            .core
            .lines
            .iter()
            .flat_map(|(line, waiters)| waiters.iter().map(move |(id, w)| (*line, *id, w)))
            .filter(|(_, _, w)| w.origin == origin)
            .map(|(line, id, w)| {
                let info = WaiterInfo {
                    session: w.holder.session,
                    waits_for: inner.state.waits_for(line, &w.wait),
                    since: w.since,
                };
                (id, info)
            })
            .collect();
        // Waiter ids are handed out in arrival order.
        waiting.sort_by_key(|(id, _)| *id);
        View {
            size: inner.state.size(),
            held: inner.state.holding(),
            waiting: waiting.into_iter().map(|(_, w)| w).collect(),
        }
    }

    /// Number of calls parked in every line, for tests and inspection.
    pub fn parked(&self) -> usize {
        self.inner
            .lock()
            .core
            .lines
            .values()
            .map(BTreeMap::len)
            .sum()
    }
}

impl<S: Semantics> Holdable for Parking<S> {
    fn session_closed(&self, session: SessionId) {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        // Once stopped nothing is granted, so releasing would only raise a notice nobody reads.
        if inner.core.retired || inner.core.stopped {
            return;
        }
        if inner.state.release_dead(session) {
            inner.core.owner_died = true;
        }
        pump(&mut inner.state, &mut inner.core);
    }
}
