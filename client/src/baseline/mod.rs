//! The two baselines every comparison uses, beside the manager's own lock: a lock for the
//! threads of one process, and an `flock(2)` file lock, the way the tutorials guard a JSON
//! "ticket database". One small trait covers all three locks, so a workload is written once
//! and run on each.
//!
//! # Locks
//!
//! [`Locker`] is the trait; its guards release the lock when dropped (RAII) and say, through
//! [`Held::is_owner_dead`], whether the previous holder went away without releasing it.
//!
//! | lock | reaches | fairness | holder panics | holder process dies |
//! |---|---|---|---|---|
//! | [`LocalLock`] | threads of one process | eventual (mostly barging) | released on unwind; the next holder is told | n/a: the lock dies with it |
//! | [`FileLock`] | processes sharing a file system | none (the kernel wakes any waiter) | released on unwind | released by the kernel; nobody is told |
//! | manager `Lock` | processes reaching the manager | FIFO | released on unwind | released by the manager; the next holder is told |
//! | manager `RLock` | as `Lock`, and reentrant for the thread that holds it | FIFO | released on unwind | released by the manager; the next holder is told |
//!
//! [`NoLock`] stands in where the data needs no lock because each update is one atomic
//! operation (see [`AtomicTickets`]).
//!
//! # Ticket stores
//!
//! [`TicketStore`] is the tutorials' ticket counter: everybody may ask how many tickets are
//! left ([`TicketStore::remaining`]) at any time, and buying one ([`TicketStore::take_one`])
//! is a read followed by a write, to be run under a lock ([`buy`]):
//!
//! - [`ValueTickets`]: a manager [`Value`](crate::Value), read and written in two calls under
//!   the manager's [`Lock`](crate::Lock);
//! - [`JsonFileTickets`]: the tutorials' `db.json`, `{"count": N}`, read and rewritten;
//! - [`LocalTickets`]: a plain integer in this process, for threads behind a [`LocalLock`];
//! - [`AtomicTickets`]: a manager value decremented by one atomic call, which needs no lock.
//!
//! ```no_run
//! use agora_client::baseline::{buy, FileLock, JsonFileTickets, TicketStore};
//!
//! let lock = FileLock::new("/tmp/db.json.lock");
//! let tickets = JsonFileTickets::create("/tmp/db.json", 3)?;
//! println!("{} left", tickets.remaining()?);
//! match buy(&lock, &tickets)? {
//!     Some(number) => println!("bought ticket {number}"),
//!     None => println!("sold out"),
//! }
//! # Ok::<(), agora_client::baseline::Error>(())
//! ```

use std::io;
use std::path::PathBuf;
use std::time::Duration;

mod file;
mod local;
mod manager;
mod tickets;

pub use file::{FileLock, FileLockGuard};
pub use local::{LocalLock, LocalLockGuard};
pub use tickets::{AtomicTickets, JsonFileTickets, LocalTickets, ValueTickets};

/// What can go wrong with a baseline lock or ticket store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A call to the manager failed (manager locks and manager-backed stores).
    #[error(transparent)]
    Manager(#[from] crate::Error),

    /// A file operation failed (file locks and the JSON store). `op` says which one.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done, e.g. "lock" or "read the ticket file".
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// The ticket file does not hold `{"count": N}` with N a non-negative integer.
    #[error("{path} is not a ticket file ({{\"count\": N}}): {reason}")]
    BadTicketFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with its contents.
        reason: String,
    },
}

/// Shorthand for results of the baselines.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A mutual-exclusion lock, whatever it is made of: one workload, written against this trait,
/// runs on a [`LocalLock`], a [`FileLock`], the manager's [`Lock`](crate::Lock) (or
/// [`RLock`](crate::RLock)), or [`NoLock`].
///
/// Each method returns a guard that holds the lock until it is dropped. The locks are not
/// reentrant, except the manager's `RLock`: a second `lock` by the holder waits forever (a
/// [`Locker::lock_timeout`] gives up). Each implementation documents its fairness and what
/// happens when a holder dies.
pub trait Locker {
    /// The guard: holding it is holding the lock; dropping it releases the lock.
    type Guard<'a>: Held
    where
        Self: 'a;

    /// A short name for reports, such as `"FileLock"`.
    const NAME: &'static str;

    /// Waits as long as it takes for the lock.
    fn lock(&self) -> Result<Self::Guard<'_>>;

    /// Takes the lock if it is free, without waiting: `None` when somebody holds it.
    fn try_lock(&self) -> Result<Option<Self::Guard<'_>>>;

    /// Waits at most `timeout` for the lock: `None` when it did not come free in time. The wait
    /// sleeps (no busy-spinning). A zero timeout is [`Locker::try_lock`].
    fn lock_timeout(&self, timeout: Duration) -> Result<Option<Self::Guard<'_>>>;
}

/// What every lock guard can tell.
pub trait Held {
    /// True when the previous holder went away without releasing the lock (a thread that
    /// panicked while holding a [`LocalLock`], a process that died holding a manager lock):
    /// the data the lock guards may be half-updated. Always false for a [`FileLock`], since
    /// the kernel releases the `flock` of a dead process without telling anybody.
    fn is_owner_dead(&self) -> bool;
}

/// No lock at all: every method succeeds at once, and nothing is excluded.
///
/// For data whose every update is one atomic operation, such as [`AtomicTickets`], so that
/// the same generic workload measures the lock-free way too. With any other store it lets
/// every race through: that is its point and its danger.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NoLock;

/// The guard of [`NoLock`]: holds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoGuard;

impl Held for NoGuard {
    fn is_owner_dead(&self) -> bool {
        false
    }
}

impl Locker for NoLock {
    type Guard<'a> = NoGuard;

    const NAME: &'static str = "no lock";

    fn lock(&self) -> Result<NoGuard> {
        Ok(NoGuard)
    }

    fn try_lock(&self) -> Result<Option<NoGuard>> {
        Ok(Some(NoGuard))
    }

    fn lock_timeout(&self, _timeout: Duration) -> Result<Option<NoGuard>> {
        Ok(Some(NoGuard))
    }
}

/// A counter of tickets for sale, the tutorials' ticket database.
///
/// Reading the count is safe at any time, from any number of processes or threads. Buying
/// is a read-modify-write: unless the store's documentation says its [`TicketStore::take_one`]
/// is atomic, it must run while holding the lock that guards the store, which is what [`buy`]
/// does. Run without that lock, two buyers can read the same count and both "buy" the same
/// ticket, as in the tutorials' first version.
pub trait TicketStore {
    /// How many tickets are left. Takes no lock: it is the tutorials' query, which everybody
    /// runs concurrently. The answer may be stale by the time it is used.
    fn remaining(&self) -> Result<u64>;

    /// Buys one ticket if any is left and returns its number: the count before the purchase
    /// (N for the first of N tickets, 1 for the last), so that every ticket sold has a number
    /// and a ticket sold twice shows up as a repeated number. `None` when sold out.
    fn take_one(&self) -> Result<Option<u64>>;
}

/// Buys one ticket from `store` while holding `lock`: the tutorials' serialised purchase.
/// Returns the ticket's number, or `None` when sold out.
pub fn buy<L, S>(lock: &L, store: &S) -> Result<Option<u64>>
where
    L: Locker + ?Sized,
    S: TicketStore + ?Sized,
{
    let held = lock.lock()?;
    if held.is_owner_dead() {
        tracing::warn!(
            lock = L::NAME,
            "the previous holder died holding the ticket lock; buying anyway"
        );
    }
    let bought = store.take_one();
    drop(held);
    bought
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_lock_never_waits() {
        let lock = NoLock;
        let a = lock.lock().unwrap();
        let b = lock.try_lock().unwrap();
        let c = lock.lock_timeout(Duration::from_secs(5)).unwrap();
        assert!(b.is_some() && c.is_some());
        assert!(!a.is_owner_dead());
    }

    #[test]
    fn buy_sells_each_ticket_once_under_a_local_lock() {
        let lock = LocalLock::new();
        let store = LocalTickets::new(50).with_latency(Duration::from_micros(50));
        let sold: Vec<u64> = std::thread::scope(|s| {
            let buyers: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = Vec::new();
                        while let Some(n) = buy(&lock, &store).unwrap() {
                            mine.push(n);
                        }
                        mine
                    })
                })
                .collect();
            buyers.into_iter().flat_map(|b| b.join().unwrap()).collect()
        });
        let mut sorted = sold.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=50).collect::<Vec<_>>(), "sold: {sold:?}");
        assert_eq!(store.remaining().unwrap(), 0);
    }
}
