//! [`Mutex`]: a shared value and its lock as one object, poisoned by a holder's death.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::{LockResult, PoisonError};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, warn};

use crate::client::Client;
use crate::command::Target;
use crate::command::{decode, Args, Cmd};
use crate::error::{Error, Result};

use super::wait::{thread_owner, timeout};

/// A value of type `T` and the lock that guards it, shared by processes: `std::sync::Mutex<T>`
/// across processes (`mutex` on the wire, `PROTOCOL.md` section 4.14).
///
/// ```no_run
/// # let client = agora_client::Client::from_env()?;
/// let balance = client.mutex_named("balance", &100i64)?;
/// {
///     let mut guard = balance.lock()?.unwrap_or_else(|poisoned| {
///         // A holder died mid-update: check the value, then carry on.
///         poisoned.into_inner()
///     });
///     *guard -= 30;
/// } // written back and unlocked here, in one call
/// # Ok::<(), agora_client::Error>(())
/// ```
///
/// # Poisoning
/// If a process dies (even by `SIGKILL`) or exits while holding the lock, the manager releases
/// it and marks the mutex **poisoned**: the value may be half updated. Every later
/// [`lock`](Mutex::lock), by any process, returns `Err(PoisonError)` carrying the guard (the
/// lock is held all the same), until someone calls [`clear_poison`](Mutex::clear_poison). As
/// with `std::sync::Mutex`, a poisoned result cannot be missed by accident the way a flag can.
/// (A panic that unwinds through a guard does not poison: the guard is dropped and writes
/// back as usual. Only the death of the process does.)
///
/// # The guard and write-back
/// [`lock`](Mutex::lock) brings the value with the lock (one round trip). The guard
/// dereferences to a local copy: reading costs nothing, and a mutable borrow (`*guard = ...`,
/// `guard.push(...)`) marks it changed. Dropping the guard writes a changed value back and
/// unlocks in one call (`mutex.set_unlock`), or only unlocks if nothing was borrowed mutably.
/// [`MutexGuard::commit`] writes the value now, keeping the lock (so that a process killed
/// later leaves that value); [`MutexGuard::unlock`] unlocks and reports the outcome, which
/// `Drop` can only log. A guard is not `Send`: the lock belongs to the thread that took it.
pub struct Mutex<T> {
    client: Client,
    id: Target,
    marker: PhantomData<fn() -> T>,
}

super::proxy_common!(Mutex[T], "mutex");

impl Client {
    /// Creates a new, unlocked shared mutex holding `initial`.
    pub fn mutex<T: Serialize>(&self, initial: &T) -> Result<Mutex<T>> {
        self.create_mutex(None, initial)
    }

    /// The mutex called `name`, created with `initial` if there is none (get-or-create: an
    /// existing one keeps its value, lock and poison).
    pub fn mutex_named<T: Serialize>(&self, name: &str, initial: &T) -> Result<Mutex<T>> {
        self.create_mutex(Some(name), initial)
    }

    fn create_mutex<T: Serialize>(&self, name: Option<&str>, initial: &T) -> Result<Mutex<T>> {
        let mut args = Args::default();
        args.str("mutex").opt_str(name).value(initial)?;
        Ok(Mutex::from_id(self, self.create_with(args)?))
    }
}

/// What `mutex.lock` answers: nil, or `[poisoned, value]`.
type Locked<T> = Option<(bool, T)>;

impl<T> Mutex<T>
where
    T: Serialize + DeserializeOwned,
{
    /// Waits (in FIFO order) for the lock and returns a guard on the value; `Err` holding the
    /// guard when the mutex is poisoned (see Poisoning). The outer `Result` is the call's
    /// (connection, manager).
    pub fn lock(&self) -> Result<LockResult<MutexGuard<'_, T>>> {
        match self.lock_with(true, None)? {
            Some(locked) => Ok(locked),
            None => Err(Error::Protocol(
                "a blocking mutex.lock without a timeout answered nil (not locked)".to_owned(),
            )),
        }
    }

    /// Takes the lock if it is free and nobody waits for it; `None` otherwise. Never waits.
    pub fn try_lock(&self) -> Result<Option<LockResult<MutexGuard<'_, T>>>> {
        self.lock_with(false, None)
    }

    /// Waits up to `timeout` for the lock; `None` if it could not be taken in time. The
    /// timeout runs on the manager.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Option<LockResult<MutexGuard<'_, T>>>> {
        self.lock_with(true, Some(timeout))
    }

    fn lock_with(
        &self,
        blocking: bool,
        wait: Option<Duration>,
    ) -> Result<Option<LockResult<MutexGuard<'_, T>>>> {
        let owner = thread_owner();
        let cmd: Cmd<Locked<T>> = Cmd::object(self.id, "mutex.lock", decode::value, move |a| {
            a.bool(blocking);
            timeout(a, if blocking { wait } else { None });
            a.uint(owner);
            Ok(())
        });
        Ok(self.client.run(cmd)?.map(|(poisoned, value)| {
            let guard = MutexGuard {
                mutex: self,
                owner,
                value,
                changed: false,
                poisoned,
                pid: crate::atfork::current_pid(),
                armed: true,
                not_send: PhantomData,
            };
            if poisoned {
                Err(PoisonError::new(guard))
            } else {
                Ok(guard)
            }
        }))
    }

    /// True when a holder died holding the mutex and nobody cleared the poison since.
    pub fn is_poisoned(&self) -> Result<bool> {
        self.client.run(Cmd::object(
            self.id,
            "mutex.is_poisoned",
            decode::value,
            |_| Ok(()),
        ))
    }

    /// Clears the poison: later locks succeed plainly. Call it once the value is repaired.
    pub fn clear_poison(&self) -> Result<()> {
        self.client.run(Cmd::object(
            self.id,
            "mutex.clear_poison",
            decode::unit,
            |_| Ok(()),
        ))
    }

    /// True when anyone holds the lock.
    pub fn is_locked(&self) -> Result<bool> {
        self.client
            .run(Cmd::object(self.id, "mutex.locked", decode::value, |_| {
                Ok(())
            }))
    }
}

/// The lock of a [`Mutex`] and a local copy of its value; writes a changed value back and
/// unlocks when dropped (see [`Mutex`], The guard and write-back).
///
/// A guard copied into a forked child (by `fork` while it was alive) writes and unlocks
/// nothing there: the lock stays with the process that took it.
#[must_use = "the mutex is unlocked as soon as the guard is dropped"]
pub struct MutexGuard<'a, T: Serialize + DeserializeOwned> {
    mutex: &'a Mutex<T>,
    owner: u64,
    value: T,
    /// Borrowed mutably since the lock or the last commit: write back on unlock.
    changed: bool,
    poisoned: bool,
    /// The process that took the lock.
    pid: u32,
    armed: bool,
    /// The lock belongs to the thread that took it.
    not_send: PhantomData<*const ()>,
}

impl<T: Serialize + DeserializeOwned> std::fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutexGuard")
            .field("mutex", &self.mutex)
            .field("changed", &self.changed)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> Deref for MutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Serialize + DeserializeOwned> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.changed = true;
        &mut self.value
    }
}

impl<'a, T: Serialize + DeserializeOwned> MutexGuard<'a, T> {
    /// True when this lock came poisoned (a holder died holding the mutex).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The mutex this guard holds.
    pub fn mutex(&self) -> &'a Mutex<T> {
        self.mutex
    }

    fn check_ours(&self) -> Result<()> {
        if self.pid == crate::atfork::current_pid() {
            return Ok(());
        }
        Err(Error::Usage(format!(
            "a guard of mutex {} was used in a forked child; it belongs to the process that \
             locked it, which still holds it",
            self.mutex.id.id
        )))
    }

    /// Writes the value to the manager now (`mutex.set`), keeping the lock: a process that
    /// dies later leaves this value (and poisons the mutex).
    pub fn commit(&mut self) -> Result<()> {
        self.check_ours()?;
        let owner = self.owner;
        let value = &self.value;
        let cmd = Cmd::object(self.mutex.id, "mutex.set", decode::unit, |a| {
            a.value(value)?.uint(owner);
            Ok(())
        });
        self.mutex.client.run(cmd)?;
        self.changed = false;
        Ok(())
    }

    /// Writes a changed value back and unlocks, in one call, reporting the outcome.
    pub fn unlock(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        if !std::mem::replace(&mut self.armed, false) {
            return Ok(());
        }
        self.check_ours()?;
        let (id, owner) = (self.mutex.id, self.owner);
        let cmd = if self.changed {
            let value = &self.value;
            Cmd::object(id, "mutex.set_unlock", decode::unit, |a| {
                a.value(value)?.uint(owner);
                Ok(())
            })
        } else {
            Cmd::object(id, "mutex.unlock", decode::unit, move |a| {
                a.uint(owner);
                Ok(())
            })
        };
        self.mutex.client.run(cmd)
    }
}

impl<T: Serialize + DeserializeOwned> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        if self.armed && self.pid != crate::atfork::current_pid() {
            self.armed = false;
            debug!(
                object = self.mutex.id.id,
                "a mutex guard copied into a forked child does nothing"
            );
            return;
        }
        match self.finish() {
            Ok(()) => {}
            // The session is gone: the manager unlocked (and poisoned) when it saw it end.
            Err(e) if e.is_disconnected() => {
                debug!(object = self.mutex.id.id, error = %e, "unlock skipped: connection closed")
            }
            Err(e) => {
                warn!(object = self.mutex.id.id, error = %e, "unlocking a mutex guard failed")
            }
        }
    }
}
