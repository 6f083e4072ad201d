//! [`Lock`] and [`RLock`]: mutual exclusion between processes, with RAII guards and owner-death
//! recovery.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::client::Client;
use crate::command::Target;
use crate::command::{Args, Cmd};
use crate::error::{Error, Result};

use super::wait::{cmd_doc, decoders, thread_owner, timeout, Acquired, Held};

/// A lock shared by processes, like Python's `multiprocessing.Manager().Lock()`.
///
/// ```no_run
/// # let client = agora_client::Client::from_env()?;
/// let lock = client.lock_named("tickets")?;
/// let counter = client.value_named("sold", &0i64)?;
/// {
///     let guard = lock.acquire()?;
///     if guard.is_owner_dead() {
///         // The previous holder died inside its critical section: check the data.
///     }
///     let sold = counter.get()?;
///     counter.set(&(sold + 1))?;
/// } // released here
/// if let Some(_guard) = lock.acquire_timeout(std::time::Duration::from_millis(100))? {
///     // held
/// }
/// # Ok::<(), agora_client::Error>(())
/// ```
///
/// # Guards
/// [`acquire`](Lock::acquire), [`try_acquire`](Lock::try_acquire) and
/// [`acquire_timeout`](Lock::acquire_timeout) return a [`LockGuard`] that releases the lock
/// when dropped, also when the thread unwinds from a panic. [`LockGuard::unlock`] releases it
/// explicitly and reports a failure. For Python-style unpaired use (one process acquires,
/// another releases, as Python allows for a `Lock`), [`acquire_raw`](Lock::acquire_raw) and
/// [`release`](Lock::release) work without a guard.
///
/// # Fairness
/// Waiting acquirers are served in the order they arrived, by the manager: a release hands the
/// lock to the first in line, and no newcomer (not even a [`try_acquire`](Lock::try_acquire))
/// can take it while anyone waits. Python's `threading.Lock` makes no such promise.
///
/// # Process death
/// If the holding process dies (even by `SIGKILL`) or exits while holding the lock, the manager
/// sees its connection close and releases the lock. The next acquirer is told: its guard's
/// [`is_owner_dead`](LockGuard::is_owner_dead) is true ([`Acquired::OwnerDied`] from
/// [`acquire_raw`](Lock::acquire_raw)), because what the lock protected may be half-updated.
///
/// # Ownership
/// What a guard holds is always *owned*: released when the holding process dies or exits. An
/// [`acquire_raw`](Lock::acquire_raw) is owned too, unless the lock was created with
/// `owned` false ([`Client::lock_with`]), which gives Python's ownerless semantics: a child
/// acquires and exits, its parent releases. With an owned acquire that parent's
/// [`release`](Lock::release) fails with `RuntimeError` on every run, because the manager
/// finishes an exit it can see before it serves a call that races it (`PROTOCOL.md` 4.1).
/// A forked child that inherited the holder's socket does not delay this: the client hands
/// children `/dev/null` in place of its sockets.
///
/// # Threads
/// Every thread of a process may use the same `Lock` (and `Client`) at once: a thread blocked
/// in `acquire` does not stop the others from making calls. The lock is not reentrant: a thread
/// that acquires it twice waits for itself, as with Python's `Lock`.
///
/// # Differences from Python
/// - Acquiring returns a guard (or an [`Acquired`] from [`acquire_raw`](Lock::acquire_raw))
///   instead of `True`/`False`, and says when the previous holder died holding the lock.
/// - Waiters are served in FIFO order (see Fairness).
/// - `acquire_raw(false, Some(timeout))` ignores the timeout, where Python raises
///   `ValueError`.
pub struct Lock {
    client: Client,
    id: Target,
    marker: PhantomData<()>,
}

super::proxy_common!(Lock[], "lock");

/// A reentrant lock shared by processes, like Python's `multiprocessing.Manager().RLock()`.
///
/// The holder is one thread of one process (precisely: one thread's owner id on one
/// connection, see `PROTOCOL.md` section 4.1), which may acquire it again without waiting and
/// must release it as many times. Release by anyone else fails with `RuntimeError`.
///
/// ```no_run
/// # let client = agora_client::Client::from_env()?;
/// let rlock = client.rlock()?;
/// let outer = rlock.acquire()?;
/// let inner = rlock.acquire()?; // the same thread: at once
/// drop(inner);
/// drop(outer); // now released
/// # Ok::<(), agora_client::Error>(())
/// ```
///
/// # Guards
/// As for [`Lock`]; an [`RLockGuard`] cannot move to another thread (it is not `Send`),
/// because the lock belongs to the thread that acquired it.
///
/// # Fairness
/// FIFO, as for [`Lock`]. A re-acquire by the holder never waits.
///
/// # Process death
/// As for [`Lock`], at any depth: a holder that dies with the lock acquired three times
/// releases it completely, and the next acquirer is told.
///
/// # Reentrancy and clients
/// Reentrancy is per thread *and per connection*: two [`Client`]s of one process are two
/// connections, so a thread holding the lock through one waits for itself if it acquires
/// through the other. Use one client per process (clones share it).
pub struct RLock {
    client: Client,
    id: Target,
    marker: PhantomData<()>,
}

super::proxy_common!(RLock[], "rlock");

impl Client {
    /// Creates a new, free lock.
    pub fn lock(&self) -> Result<Lock> {
        self.lock_with(None, None)
    }

    /// The lock called `name`, created free if there is none (get-or-create: every process
    /// asking for the name gets the same lock).
    pub fn lock_named(&self, name: &str) -> Result<Lock> {
        self.lock_with(Some(name), None)
    }

    /// A lock (named, get-or-create, or new) with the `owned` option: `Some(false)` for
    /// Python's ownerless semantics on every acquire (nothing is released when the acquiring
    /// process exits or dies: a child may acquire and its parent release), `Some(true)` to
    /// protect every acquire; `None`: guards and [`Lock::acquire_raw`] are both owned (see
    /// [`Lock`], Ownership). An existing named lock keeps the option it was created with.
    pub fn lock_with(&self, name: Option<&str>, owned: Option<bool>) -> Result<Lock> {
        Ok(Lock::from_id(self, create_lock(self, "lock", name, owned)?))
    }

    /// Creates a new, free reentrant lock.
    pub fn rlock(&self) -> Result<RLock> {
        self.rlock_with(None, None)
    }

    /// The reentrant lock called `name`, created free if there is none (get-or-create).
    pub fn rlock_named(&self, name: &str) -> Result<RLock> {
        self.rlock_with(Some(name), None)
    }

    /// A reentrant lock with the `owned` option, as [`Client::lock_with`].
    pub fn rlock_with(&self, name: Option<&str>, owned: Option<bool>) -> Result<RLock> {
        Ok(RLock::from_id(
            self,
            create_lock(self, "rlock", name, owned)?,
        ))
    }
}

/// The acquire command on `kind`'s object `id`: `[id, blocking, timeout, owner]`, and
/// `owned` after them when given (`None`: the kind's default, owned for every lock kind).
pub(crate) fn acquire_cmd(
    id: Target,
    method: &'static str,
    blocking: bool,
    wait: Option<Duration>,
    owner: u64,
    owned: Option<bool>,
) -> Cmd<Acquired> {
    Cmd::object(id, method, decoders::acquired, move |a| {
        a.bool(blocking);
        timeout(a, if blocking { wait } else { None });
        a.uint(owner);
        if let Some(owned) = owned {
            a.bool(owned);
        }
        Ok(())
    })
}

/// `create` of a lock kind, with the `owned` option when given.
fn create_lock(
    client: &Client,
    kind: &str,
    name: Option<&str>,
    owned: Option<bool>,
) -> Result<u64> {
    let mut args = Args::default();
    args.str(kind).opt_str(name);
    if let Some(owned) = owned {
        args.bool(owned);
    }
    client.create_with(args)
}

/// What a blocking acquire without a timeout may answer.
pub(crate) fn must_acquire(got: Acquired, what: &str) -> Result<Acquired> {
    if got.is_acquired() {
        return Ok(got);
    }
    Err(Error::Protocol(format!(
        "a blocking {what} acquire without a timeout answered 0 (not acquired)"
    )))
}

/// The methods [`Lock`] and [`RLock`] share; `$guard` is the guard type each returns.
macro_rules! lock_methods {
    ($name:ident, $guard:ident, $kind:literal) => {
        impl $name {
            /// Waits until the lock is free, takes it, and returns a guard that releases it when
            /// dropped. Waits in FIFO order behind earlier acquirers.
            pub fn acquire(&self) -> Result<$guard<'_>> {
                let owner = thread_owner();
                // What a guard holds is always owned: a process dying with it releases it.
                let cmd = acquire_cmd(
                    self.id,
                    concat!($kind, ".acquire"),
                    true,
                    None,
                    owner,
                    Some(true),
                );
                let got = must_acquire(self.client.run(cmd)?, $kind)?;
                Ok($guard::new(self, owner, got))
            }

            /// Waits for the lock as [`acquire`](Self::acquire) does, then runs `first` in the
            /// manager the moment the lock is granted, in the same round trip (a `chain`,
            /// `PROTOCOL.md` section 4.16): the critical section's first read costs no round
            /// trip of its own, and under contention it is done before this thread has even
            /// woken up. When `first` fails, the lock is released and its error returned.
            ///
            /// ```no_run
            /// # let client = agora_client::Client::from_env()?;
            /// let (lock, tickets) = (client.lock()?, client.value::<i64>(&100)?);
            /// let (guard, left) = lock.acquire_then(tickets.get_cmd())?;
            /// // One round trip more: the write, then the release.
            /// guard.unlock_after(tickets.set_cmd(&(left - 1)))?;
            /// # Ok::<(), agora_client::Error>(())
            /// ```
            pub fn acquire_then<T>(&self, first: Cmd<T>) -> Result<($guard<'_>, T)> {
                match self.guard_then(None, first)? {
                    Some(pair) => Ok(pair),
                    None => Err(Error::Protocol(format!(
                        "a blocking {} acquire without a timeout answered 0 (not acquired)",
                        $kind
                    ))),
                }
            }

            /// [`acquire_then`](Self::acquire_then) waiting at most `timeout`; `None` (and
            /// `first` not run) if the lock could not be taken in time.
            pub fn acquire_timeout_then<T>(
                &self,
                timeout: Duration,
                first: Cmd<T>,
            ) -> Result<Option<($guard<'_>, T)>> {
                self.guard_then(Some(timeout), first)
            }

            fn guard_then<T>(
                &self,
                wait: Option<Duration>,
                first: Cmd<T>,
            ) -> Result<Option<($guard<'_>, T)>> {
                let owner = thread_owner();
                let acquire = acquire_cmd(
                    self.id,
                    concat!($kind, ".acquire"),
                    true,
                    wait,
                    owner,
                    Some(true),
                );
                let (got, then) = crate::chain::run(&self.client, acquire, first)?;
                let got = got?;
                if !got.is_acquired() {
                    return Ok(None);
                }
                // From here the guard holds the lock: an error below drops it, releasing.
                let guard = $guard::new(self, owner, got);
                let then = then.ok_or_else(|| {
                    Error::Protocol("the manager did not run a chain's call after a grant".into())
                })?;
                Ok(Some((guard, then?)))
            }

            /// Takes the lock if it is free and nobody waits for it; `None` otherwise. Never
            /// waits.
            pub fn try_acquire(&self) -> Result<Option<$guard<'_>>> {
                self.guard(false, None)
            }

            /// Waits up to `timeout` for the lock; `None` if it could not be taken in time.
            /// The timeout runs on the manager.
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<$guard<'_>>> {
                self.guard(true, Some(timeout))
            }

            fn guard(&self, blocking: bool, wait: Option<Duration>) -> Result<Option<$guard<'_>>> {
                let owner = thread_owner();
                let cmd = acquire_cmd(
                    self.id,
                    concat!($kind, ".acquire"),
                    blocking,
                    wait,
                    owner,
                    Some(true),
                );
                Ok(match self.client.run(cmd)? {
                    Acquired::No => None,
                    got => Some($guard::new(self, owner, got)),
                })
            }

            /// Acquires without a guard, as Python's `acquire(blocking, timeout)`: the caller
            /// must [`release`](Self::release) it. `timeout` is ignored when `blocking` is
            /// false; `None` waits without limit.
            pub fn acquire_raw(
                &self,
                blocking: bool,
                timeout: Option<Duration>,
            ) -> Result<Acquired> {
                self.client.run(self.acquire_raw_cmd(blocking, timeout))
            }

            #[doc = cmd_doc!($name, "acquire_raw", $kind, "acquire", ", for the calling thread")]
            pub fn acquire_raw_cmd(
                &self,
                blocking: bool,
                timeout: Option<Duration>,
            ) -> Cmd<Acquired> {
                acquire_cmd(
                    self.id,
                    concat!($kind, ".acquire"),
                    blocking,
                    timeout,
                    thread_owner(),
                    None,
                )
            }

            /// Releases the lock (one level, for a reentrant lock) without a guard. Fails with
            /// `RuntimeError` when it is not locked (or, for a reentrant lock, not held by this
            /// thread).
            pub fn release(&self) -> Result<()> {
                self.client.run(self.release_cmd())
            }

            #[doc = cmd_doc!($name, "release", $kind, "release", ", for the calling thread")]
            pub fn release_cmd(&self) -> Cmd<()> {
                let owner = thread_owner();
                Cmd::object(
                    self.id,
                    concat!($kind, ".release"),
                    decoders::unit,
                    move |a| {
                        a.uint(owner);
                        Ok(())
                    },
                )
            }

            /// The fencing token of the calling thread's holding: a number that grows with
            /// every grant of the lock, so that a resource the lock guards can refuse the
            /// writes of a holder whose holding another has since replaced (`PROTOCOL.md`,
            /// "Fencing tokens"). Fails with `RuntimeError` when this thread does not hold the
            /// lock.
            pub fn fencing_token(&self) -> Result<u64> {
                self.client.run(self.fencing_token_cmd())
            }

            #[doc = cmd_doc!($name, "fencing_token", $kind, "token", ", for the calling thread")]
            pub fn fencing_token_cmd(&self) -> Cmd<u64> {
                let owner = thread_owner();
                Cmd::object(
                    self.id,
                    concat!($kind, ".token"),
                    decoders::token,
                    move |a| {
                        a.uint(owner);
                        Ok(())
                    },
                )
            }

            /// True when anyone holds the lock (Python's `locked()`).
            pub fn is_locked(&self) -> Result<bool> {
                self.client.run(self.is_locked_cmd())
            }

            #[doc = cmd_doc!($name, "is_locked", $kind, "locked")]
            pub fn is_locked_cmd(&self) -> Cmd<bool> {
                Cmd::object(self.id, concat!($kind, ".locked"), decoders::flag, |_| {
                    Ok(())
                })
            }
        }

        impl<'a> $guard<'a> {
            fn new(lock: &'a $name, owner: u64, got: Acquired) -> $guard<'a> {
                $guard {
                    lock,
                    held: Held::new(concat!($kind, ".release"), lock.id, Some(owner), got),
                    not_send: PhantomData,
                }
            }

            /// True when the previous holder's connection closed while it held the lock (its
            /// process died or exited inside the critical section): the data the lock guards
            /// may be half-updated.
            pub fn is_owner_dead(&self) -> bool {
                self.held.is_owner_dead()
            }

            /// Releases now, waiting for the manager's answer, and reports the outcome
            /// (dropping the guard releases too, without waiting, and can only log a failure).
            pub fn unlock(mut self) -> Result<()> {
                self.held.release(&self.lock.client)
            }

            /// Runs `last`, then releases, in one round trip (a `chain`, `PROTOCOL.md`
            /// section 4.16), and gives `last`'s result: the critical section's last write
            /// and its release cost one round trip together. When `last` fails the lock is
            /// released all the same and `last`'s error returned.
            pub fn unlock_after<T>(mut self, last: Cmd<T>) -> Result<T> {
                let client = &self.lock.client;
                let Some(release) = self.held.take_release() else {
                    // Released already, or a forked copy: as `unlock` says.
                    self.held.release(client)?;
                    return client.run(last);
                };
                let (result, released) = crate::chain::run(client, last, release)?;
                match released {
                    Some(released) => released?,
                    // `last` failed, which stopped the chain before the release.
                    None => client.run(self.held.release_cmd())?,
                }
                result
            }

            /// The lock this guard holds.
            pub fn lock(&self) -> &'a $name {
                self.lock
            }
        }

        impl Drop for $guard<'_> {
            fn drop(&mut self) {
                self.held.release_on_drop(&self.lock.client, $kind);
            }
        }
    };
}

lock_methods!(Lock, LockGuard, "lock");
lock_methods!(RLock, RLockGuard, "rlock");

/// Holds a [`Lock`]; releases it when dropped.
///
/// # Drop and panics
/// Dropping the guard releases the lock with one request to the manager that it does not
/// wait for: the thread goes on while the manager hands the lock to the next waiter, and
/// every later call of this process (of any thread) reaches the manager after the release.
/// [`unlock`](LockGuard::unlock) waits for the manager's answer instead: use it when a
/// process must find the lock free as soon as this one signals it through something agora
/// does not carry (a pipe, its exit), or to see a failure, which a drop can only log with
/// `tracing`. Dropping releases also while the thread unwinds from a panic. If the process dies instead, or exits with
/// the guard alive (`std::process::exit` runs no destructors), the manager releases the lock
/// when the connection closes and tells the next acquirer ([`LockGuard::is_owner_dead`]).
///
/// A guard copied into a forked child (by `fork` while it was alive) releases nothing there:
/// the lock stays with the process that acquired it.
#[derive(Debug)]
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
    held: Held,
    /// A plain lock may be released by any thread: the guard may move freely.
    not_send: PhantomData<()>,
}

/// Holds an [`RLock`] (one level of it); releases that level when dropped.
///
/// Not `Send`: the lock belongs to the thread that acquired it. Drop, panic and process death
/// behave as for [`LockGuard`].
///
/// ```compile_fail
/// fn send<T: Send>() {}
/// send::<agora_client::RLockGuard<'static>>();
/// ```
#[derive(Debug)]
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    held: Held,
    not_send: PhantomData<*const ()>,
}

impl Lock {
    /// As [`acquire`](Lock::acquire), with a guard that owns an `Arc` of the lock instead of
    /// borrowing it (as tokio's `OwnedMutexGuard`): it can move into another thread, a
    /// `spawn_blocking` closure, a struct that outlives this borrow.
    ///
    /// ```no_run
    /// # let client = agora_client::Client::from_env()?;
    /// let lock = std::sync::Arc::new(client.lock()?);
    /// let guard = lock.acquire_owned()?;
    /// std::thread::spawn(move || guard.unlock()).join().unwrap()?;
    /// # Ok::<(), agora_client::Error>(())
    /// ```
    pub fn acquire_owned(self: &Arc<Self>) -> Result<OwnedLockGuard> {
        let owner = thread_owner();
        let cmd = acquire_cmd(self.id, "lock.acquire", true, None, owner, Some(true));
        let got = must_acquire(self.client.run(cmd)?, "lock")?;
        Ok(OwnedLockGuard {
            held: Held::new("lock.release", self.id, Some(owner), got),
            lock: self.clone(),
        })
    }
}

/// Holds a [`Lock`] as a [`LockGuard`] does (drop, panics and process death alike), owning an
/// `Arc` of the lock: made by [`Lock::acquire_owned`].
#[derive(Debug)]
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct OwnedLockGuard {
    lock: Arc<Lock>,
    held: Held,
}

impl OwnedLockGuard {
    /// As [`LockGuard::is_owner_dead`].
    pub fn is_owner_dead(&self) -> bool {
        self.held.is_owner_dead()
    }

    /// Releases now, waiting for the manager's answer, and reports the outcome.
    pub fn unlock(mut self) -> Result<()> {
        self.held.release(&self.lock.client)
    }

    /// The lock this guard holds.
    pub fn lock(&self) -> &Arc<Lock> {
        &self.lock
    }
}

impl Drop for OwnedLockGuard {
    fn drop(&mut self) {
        self.held.release_on_drop(&self.lock.client, "lock");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_guard_may_move_between_threads() {
        fn send<T: Send + 'static>() {}
        send::<LockGuard<'static>>();
        send::<OwnedLockGuard>();
    }

    const SEVEN: Target = Target { id: 7, run: 1 };

    #[test]
    fn acquire_params() {
        let wait = Some(Duration::from_millis(500));
        let cmd = acquire_cmd(SEVEN, "lock.acquire", true, wait, 3, None);
        let args = cmd.args.unwrap();
        let mut expected = vec![0x07, 0xc3, 0xcb];
        expected.extend_from_slice(&0.5f64.to_be_bytes());
        expected.push(0x03);
        assert_eq!(args.bytes(), expected);
        // A non-blocking acquire never sends a timeout (the manager would refuse it).
        let cmd = acquire_cmd(
            SEVEN,
            "lock.acquire",
            false,
            Some(Duration::from_secs(1)),
            3,
            None,
        );
        assert_eq!(cmd.args.unwrap().bytes(), [0x07, 0xc2, 0xc0, 0x03]);
        // A guard's acquire says it owns what it takes.
        let cmd = acquire_cmd(SEVEN, "lock.acquire", false, None, 3, Some(true));
        assert_eq!(cmd.args.unwrap().bytes(), [0x07, 0xc2, 0xc0, 0x03, 0xc3]);
    }
}
