//! The manager's own locks as [`Locker`]s, so that a workload written for the baselines runs on
//! them unchanged.

use std::time::Duration;

use super::{Held, Locker, Result};
use crate::proxies::{Lock, LockGuard, RLock, RLockGuard};

impl Held for LockGuard<'_> {
    fn is_owner_dead(&self) -> bool {
        LockGuard::is_owner_dead(self)
    }
}

impl Held for RLockGuard<'_> {
    fn is_owner_dead(&self) -> bool {
        RLockGuard::is_owner_dead(self)
    }
}

/// The manager's `lock`: FIFO among waiters, released by the manager when the holder's
/// connection closes (the next holder is told), one round trip to acquire; the release is
/// sent without waiting for its answer.
/// A timed wait parks on the manager, which answers at the deadline.
impl Locker for Lock {
    type Guard<'a> = LockGuard<'a>;

    const NAME: &'static str = "manager Lock";

    fn lock(&self) -> Result<LockGuard<'_>> {
        Ok(self.acquire()?)
    }

    fn try_lock(&self) -> Result<Option<LockGuard<'_>>> {
        Ok(self.try_acquire()?)
    }

    fn lock_timeout(&self, timeout: Duration) -> Result<Option<LockGuard<'_>>> {
        if timeout.is_zero() {
            return self.try_lock();
        }
        Ok(self.acquire_timeout(timeout)?)
    }
}

/// The manager's `rlock`, the one exception to the trait's "not reentrant": the thread that
/// holds it may take it again at once, and holds it until every guard is dropped. Otherwise
/// as the manager's `Lock`.
impl Locker for RLock {
    type Guard<'a> = RLockGuard<'a>;

    const NAME: &'static str = "manager RLock";

    fn lock(&self) -> Result<RLockGuard<'_>> {
        Ok(self.acquire()?)
    }

    fn try_lock(&self) -> Result<Option<RLockGuard<'_>>> {
        Ok(self.try_acquire()?)
    }

    fn lock_timeout(&self, timeout: Duration) -> Result<Option<RLockGuard<'_>>> {
        if timeout.is_zero() {
            return self.try_lock();
        }
        Ok(self.acquire_timeout(timeout)?)
    }
}
