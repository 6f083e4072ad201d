//! [`Condition`]: wait and notify between processes, over a shared lock.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::command::Target;
use crate::command::{Args, Cmd};
use crate::error::Result;

use super::lock::{acquire_cmd, must_acquire, Lock, RLock};
use super::wait::{decoders, thread_owner, timeout, Acquired, Held};

/// A condition variable shared by processes, like Python's
/// `multiprocessing.Manager().Condition(lock)`: waiters release the lock, sleep until
/// notified, and hold the lock again when they wake.
///
/// ```no_run
/// # let client = agora_client::Client::from_env()?;
/// let cond = client.condition_named("jobs-changed")?;
/// let jobs = client.list_named::<String>("jobs")?;
/// // Consumer: wait until there is a job, at most 2 s.
/// let mut guard = cond.acquire()?;
/// if guard
///     .wait_for_timeout(|| Ok(jobs.len()? > 0), std::time::Duration::from_secs(2))?
///     .is_some()
/// {
///     let job = jobs.pop()?;
/// }
/// drop(guard);
/// // Producer:
/// let guard = cond.acquire()?;
/// jobs.append("compile")?;
/// guard.notify(1)?;
/// # Ok::<(), agora_client::Error>(())
/// ```
///
/// # The lock
/// [`Client::condition`] makes a condition over a new reentrant lock, as Python does;
/// [`Client::condition_with`] and [`Client::condition_with_rlock`] share an existing [`Lock`]
/// or [`RLock`], so that code holding that lock can wait on the condition. The lock is held by
/// a thread of a process (see [`RLock`]); [`acquire`](Condition::acquire) returns a
/// [`ConditionGuard`], on which `wait` and `notify` are called.
///
/// # Fairness
/// Waiters are notified in the order they began waiting; `notify(n)` wakes the `n` that have
/// waited longest. A woken waiter re-acquires the lock ahead of every acquirer that arrived
/// after it began waiting. Python makes neither promise.
///
/// # Timeouts, spurious wake-ups
/// A wait whose timeout passes returns `None`, with the lock held again (it may have to
/// wait for the lock after its timeout, as in Python). There are no spurious wake-ups, but a
/// predicate may still be false when a waiter wakes (another process may have run first), so
/// loop on it: [`ConditionGuard::wait_for`], [`ConditionGuard::wait_for_timeout`].
///
/// # Process death
/// A process that dies holding the condition's lock has it released by the manager, and the
/// next plain acquirer is told ([`ConditionGuard::is_owner_dead`]). A process that dies while
/// waiting is removed from the line of waiters at once: a later `notify` wakes someone alive.
pub struct Condition {
    client: Client,
    id: Target,
    marker: PhantomData<()>,
}

super::proxy_common!(Condition[], "condition");

impl Client {
    /// Creates a new condition over a new reentrant lock of its own.
    pub fn condition(&self) -> Result<Condition> {
        self.create_condition(None, None)
    }

    /// The condition called `name`, created over a new reentrant lock if there is none
    /// (get-or-create).
    pub fn condition_named(&self, name: &str) -> Result<Condition> {
        self.create_condition(Some(name), None)
    }

    /// Creates a new condition over an existing lock: acquiring either acquires the same lock.
    pub fn condition_with(&self, lock: &Lock) -> Result<Condition> {
        self.create_condition(None, Some(lock.id()))
    }

    /// Creates a new condition over an existing reentrant lock.
    pub fn condition_with_rlock(&self, lock: &RLock) -> Result<Condition> {
        self.create_condition(None, Some(lock.id()))
    }

    fn create_condition(&self, name: Option<&str>, lock: Option<u64>) -> Result<Condition> {
        let mut args = Args::default();
        args.str("condition").opt_str(name);
        if let Some(lock) = lock {
            args.uint(lock);
        }
        Ok(Condition::from_id(self, self.create_with(args)?))
    }
}

impl Condition {
    /// Waits for the condition's lock (in FIFO order), takes it, and returns a guard that
    /// releases it when dropped.
    pub fn acquire(&self) -> Result<ConditionGuard<'_>> {
        let owner = thread_owner();
        let cmd = acquire_cmd(self.id, "condition.acquire", true, None, owner, Some(true));
        let got = must_acquire(self.client.run(cmd)?, "condition")?;
        Ok(ConditionGuard::new(self, owner, got))
    }

    /// Takes the lock if it is free and nobody waits for it; `None` otherwise.
    pub fn try_acquire(&self) -> Result<Option<ConditionGuard<'_>>> {
        self.guard(false, None)
    }

    /// Waits up to `timeout` for the lock; `None` if it could not be taken in time.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<ConditionGuard<'_>>> {
        self.guard(true, Some(timeout))
    }

    fn guard(&self, blocking: bool, wait: Option<Duration>) -> Result<Option<ConditionGuard<'_>>> {
        let owner = thread_owner();
        let cmd = acquire_cmd(
            self.id,
            "condition.acquire",
            blocking,
            wait,
            owner,
            Some(true),
        );
        Ok(match self.client.run(cmd)? {
            Acquired::No => None,
            got => Some(ConditionGuard::new(self, owner, got)),
        })
    }

    /// Acquires the lock without a guard (Python's `acquire`); release it with
    /// [`release`](Condition::release). `timeout` is ignored when `blocking` is false.
    pub fn acquire_raw(&self, blocking: bool, timeout: Option<Duration>) -> Result<Acquired> {
        self.client.run(self.acquire_raw_cmd(blocking, timeout))
    }

    /// [`Condition::acquire_raw`] as a command (`condition.acquire`), for the calling thread.
    pub fn acquire_raw_cmd(&self, blocking: bool, timeout: Option<Duration>) -> Cmd<Acquired> {
        acquire_cmd(
            self.id,
            "condition.acquire",
            blocking,
            timeout,
            thread_owner(),
            None,
        )
    }

    /// Releases the lock (one level) without a guard. `RuntimeError` unless this thread holds
    /// it (or, over a plain [`Lock`], unless anyone holds it).
    pub fn release(&self) -> Result<()> {
        self.client.run(self.release_cmd())
    }

    /// [`Condition::release`] as a command (`condition.release`), for the calling thread.
    pub fn release_cmd(&self) -> Cmd<()> {
        owner_cmd(self.id, "condition.release", thread_owner())
    }

    /// True when anyone holds the condition's lock (Python's `locked()`).
    pub fn is_locked(&self) -> Result<bool> {
        self.client.run(self.is_locked_cmd())
    }

    /// [`Condition::is_locked`] as a command (`condition.locked`).
    pub fn is_locked_cmd(&self) -> Cmd<bool> {
        Cmd::object(self.id, "condition.locked", decoders::flag, |_| Ok(()))
    }

    /// Waits without a guard (Python's `wait(timeout)`): this thread must hold the lock
    /// (`RuntimeError` otherwise); every level of it is released, and held again when this
    /// returns. `true` when notified, `false` when the timeout passed.
    pub fn wait_raw(&self, timeout: Option<Duration>) -> Result<bool> {
        self.client.run(self.wait_raw_cmd(timeout))
    }

    /// [`Condition::wait_raw`] as a command (`condition.wait`), for the calling thread.
    pub fn wait_raw_cmd(&self, timeout: Option<Duration>) -> Cmd<bool> {
        wait_cmd(self.id, timeout, thread_owner())
    }

    /// Wakes up to `n` waiters, those that have waited longest. This thread must hold the lock
    /// (`RuntimeError` otherwise); the woken waiters run once it is released.
    pub fn notify(&self, n: usize) -> Result<()> {
        self.client.run(self.notify_cmd(n))
    }

    /// [`Condition::notify`] as a command (`condition.notify`), for the calling thread.
    pub fn notify_cmd(&self, n: usize) -> Cmd<()> {
        notify_cmd(self.id, n, thread_owner())
    }

    /// Wakes every waiter. This thread must hold the lock.
    pub fn notify_all(&self) -> Result<()> {
        self.client.run(self.notify_all_cmd())
    }

    /// [`Condition::notify_all`] as a command (`condition.notify_all`), for the calling
    /// thread.
    pub fn notify_all_cmd(&self) -> Cmd<()> {
        owner_cmd(self.id, "condition.notify_all", thread_owner())
    }
}

/// A command whose only param after the id is the owner.
pub(crate) fn owner_cmd(id: Target, method: &'static str, owner: u64) -> Cmd<()> {
    Cmd::object(id, method, decoders::unit, move |a| {
        a.uint(owner);
        Ok(())
    })
}

pub(crate) fn wait_cmd(id: Target, wait: Option<Duration>, owner: u64) -> Cmd<bool> {
    Cmd::object(id, "condition.wait", decoders::flag, move |a| {
        timeout(a, wait);
        a.uint(owner);
        Ok(())
    })
}

pub(crate) fn notify_cmd(id: Target, n: usize, owner: u64) -> Cmd<()> {
    Cmd::object(id, "condition.notify", decoders::unit, move |a| {
        a.uint(n as u64);
        a.uint(owner);
        Ok(())
    })
}

/// Holds a [`Condition`]'s lock; `wait` and `notify` are called on it. Releases the lock when
/// dropped.
///
/// Not `Send`: the lock belongs to the thread that acquired it.
///
/// # Drop and panics
/// As for [`LockGuard`](super::LockGuard): dropping releases without waiting for the answer
/// (also while unwinding from a panic, logging a failure); if the process dies or exits holding it, the manager releases
/// it and tells the next acquirer. A guard copied into a forked child releases nothing.
#[derive(Debug)]
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ConditionGuard<'a> {
    condition: &'a Condition,
    owner: u64,
    held: Held,
    not_send: PhantomData<*const ()>,
}

impl<'a> ConditionGuard<'a> {
    fn new(condition: &'a Condition, owner: u64, got: Acquired) -> ConditionGuard<'a> {
        ConditionGuard {
            condition,
            owner,
            held: Held::new("condition.release", condition.id, Some(owner), got),
            not_send: PhantomData,
        }
    }

    /// True when the previous holder of the lock died (or exited) holding it: the data it
    /// guards may be half-updated.
    pub fn is_owner_dead(&self) -> bool {
        self.held.is_owner_dead()
    }

    /// The condition this guard holds the lock of.
    pub fn condition(&self) -> &'a Condition {
        self.condition
    }

    /// Releases the lock, waits until notified, and returns once the lock is held again.
    pub fn wait(&mut self) -> Result<()> {
        self.wait_inner(None).map(drop)
    }

    /// As [`wait`](ConditionGuard::wait), for up to `timeout`: `Some(())` when notified,
    /// `None` when the timeout passed first. Either way the lock is held again when it
    /// returns (after the timeout it may have had to wait for the lock, as in Python).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<()>> {
        Ok(self.wait_inner(Some(timeout))?.then_some(()))
    }

    /// One `condition.wait`: `true` when notified, `false` at the timeout.
    fn wait_inner(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let client = &self.condition.client;
        client.run(wait_cmd(self.condition.id, timeout, self.owner))
    }

    /// Waits until `predicate` holds, as Python's `wait_for()` without a timeout. The
    /// predicate runs with the lock held, first before any wait, then after each wake-up; its
    /// errors end the wait.
    pub fn wait_for<F>(&mut self, predicate: F) -> Result<()>
    where
        F: FnMut() -> Result<bool>,
    {
        self.wait_for_until(predicate, None).map(drop)
    }

    /// As [`wait_for`](ConditionGuard::wait_for), for up to `timeout` in all: `Some(())` when
    /// the predicate holds, `None` when it still did not as the timeout passed (Python's
    /// `wait_for` returning `False`). The lock is held when it returns, either way.
    pub fn wait_for_timeout<F>(&mut self, predicate: F, timeout: Duration) -> Result<Option<()>>
    where
        F: FnMut() -> Result<bool>,
    {
        // No deadline when the timeout is too far away to represent: that is no limit.
        let deadline = Instant::now().checked_add(timeout);
        Ok(self.wait_for_until(predicate, deadline)?.then_some(()))
    }

    /// Loops on `wait` until `predicate` holds (`true`) or `deadline` passes (`false`).
    fn wait_for_until<F>(&mut self, mut predicate: F, deadline: Option<Instant>) -> Result<bool>
    where
        F: FnMut() -> Result<bool>,
    {
        loop {
            if predicate()? {
                return Ok(true);
            }
            let left = match deadline {
                None => None,
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(false);
                    }
                    Some(deadline - now)
                }
            };
            self.wait_inner(left)?;
        }
    }

    /// Wakes up to `n` waiters, those that have waited longest; they run once the lock is
    /// released.
    pub fn notify(&self, n: usize) -> Result<()> {
        let client = &self.condition.client;
        client.run(notify_cmd(self.condition.id, n, self.owner))
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) -> Result<()> {
        let client = &self.condition.client;
        client.run(owner_cmd(
            self.condition.id,
            "condition.notify_all",
            self.owner,
        ))
    }

    /// Releases the lock now and reports the outcome.
    pub fn unlock(mut self) -> Result<()> {
        self.held.release(&self.condition.client)
    }
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        self.held
            .release_on_drop(&self.condition.client, "condition");
    }
}
