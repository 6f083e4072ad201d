//! [`LocalLock`]: the fast path that cannot cross processes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};

use super::{Held, Locker, Result};

/// A lock for the threads of one process: a `parking_lot` mutex with no data, plus a flag
/// that tells the next holder when the previous one panicked while holding it.
///
/// It is what a program that runs threads instead of processes uses, and the floor every
/// cross-process lock is measured against: an uncontended lock and unlock is a pair of atomic
/// operations, with no system call.
///
/// # Guarantees
/// - **Reach**: one process. A forked child gets a *copy* of the lock, which excludes nobody
///   in the parent; use a [`FileLock`](super::FileLock) or a manager lock between processes.
/// - **Fairness**: eventual, as `parking_lot` makes it. A thread that releases and at once
///   re-acquires usually wins (barging, good for throughput), but a waiter that has waited
///   long (about half a millisecond on average) is handed the lock directly.
/// - **Waiting** parks the thread; [`Locker::lock_timeout`] parks with a deadline.
/// - **Panics**: a guard dropped while its thread unwinds releases the lock and marks it, and
///   the next holder's [`Held::is_owner_dead`] is true (the standard library's mutex would call
///   it poisoned). The mark is cleared by that next acquisition.
#[derive(Debug, Default)]
pub struct LocalLock {
    mutex: Mutex<()>,
    /// Set when a holder panicked; taken by the next acquirer.
    abandoned: AtomicBool,
}

/// The guard of a [`LocalLock`]: the lock is held until it is dropped.
#[derive(Debug)]
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LocalLockGuard<'a> {
    lock: &'a LocalLock,
    owner_died: bool,
    _held: MutexGuard<'a, ()>,
}

impl LocalLock {
    /// A new, unlocked lock.
    pub const fn new() -> LocalLock {
        LocalLock {
            mutex: Mutex::new(()),
            abandoned: AtomicBool::new(false),
        }
    }

    /// True while some thread holds the lock (a snapshot, for reports and tests).
    pub fn is_locked(&self) -> bool {
        self.mutex.is_locked()
    }

    fn guard<'a>(&'a self, held: MutexGuard<'a, ()>) -> LocalLockGuard<'a> {
        // The mutex orders this read after the store of the holder that panicked.
        let owner_died = self.abandoned.swap(false, Ordering::Relaxed);
        LocalLockGuard {
            lock: self,
            owner_died,
            _held: held,
        }
    }
}

impl Drop for LocalLockGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Stored before the mutex guard (a later field) is dropped, i.e. while still held.
            self.lock.abandoned.store(true, Ordering::Relaxed);
        }
    }
}

impl Held for LocalLockGuard<'_> {
    fn is_owner_dead(&self) -> bool {
        self.owner_died
    }
}

impl Locker for LocalLock {
    type Guard<'a> = LocalLockGuard<'a>;

    const NAME: &'static str = "LocalLock";

    fn lock(&self) -> Result<LocalLockGuard<'_>> {
        Ok(self.guard(self.mutex.lock()))
    }

    fn try_lock(&self) -> Result<Option<LocalLockGuard<'_>>> {
        Ok(self.mutex.try_lock().map(|held| self.guard(held)))
    }

    fn lock_timeout(&self, timeout: Duration) -> Result<Option<LocalLockGuard<'_>>> {
        Ok(self
            .mutex
            .try_lock_for(timeout)
            .map(|held| self.guard(held)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::time::Instant;

    use super::*;

    #[test]
    fn excludes_other_threads() {
        let lock = LocalLock::new();
        let counter = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        let _held = lock.lock().unwrap();
                        // A separate load and store: correct only under the lock.
                        let n = counter.load(Ordering::Relaxed);
                        std::hint::spin_loop();
                        counter.store(n + 1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(counter.load(Ordering::Relaxed), 8000);
    }

    #[test]
    fn try_and_timeout_fail_while_held_then_succeed() {
        let lock = LocalLock::new();
        let held = lock.lock().unwrap();
        assert!(lock.is_locked());
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(lock.try_lock().unwrap().is_none());
                let start = Instant::now();
                assert!(lock
                    .lock_timeout(Duration::from_millis(100))
                    .unwrap()
                    .is_none());
                let waited = start.elapsed();
                assert!(waited >= Duration::from_millis(100), "{waited:?}");
                assert!(waited < Duration::from_secs(2), "{waited:?}");
            });
        });
        drop(held);
        assert!(!lock.is_locked());
        assert!(lock.try_lock().unwrap().is_some());
        let got = std::thread::scope(|s| {
            let held = lock.lock().unwrap();
            let waiter = s.spawn(|| {
                lock.lock_timeout(Duration::from_secs(10))
                    .unwrap()
                    .is_some()
            });
            std::thread::sleep(Duration::from_millis(50));
            drop(held);
            waiter.join().unwrap()
        });
        assert!(
            got,
            "a waiter with a long timeout gets the lock once it is released"
        );
    }

    #[test]
    fn a_holder_that_panics_releases_and_the_next_holder_is_told() {
        let lock = LocalLock::new();
        let result = std::thread::scope(|s| {
            s.spawn(|| {
                let _held = lock.lock().unwrap();
                panic!("boom while holding the lock");
            })
            .join()
        });
        assert!(result.is_err());
        let next = lock.try_lock().unwrap().expect("released on unwind");
        assert!(next.is_owner_dead());
        drop(next);
        let after = lock.lock().unwrap();
        assert!(
            !after.is_owner_dead(),
            "the mark is cleared by the acquisition that saw it"
        );
    }
}
