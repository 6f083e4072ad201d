//! What the blocking objects share: acquire results, the owner identity of a thread, timeout
//! encoding, the guards' release bookkeeping, and the decoders that turn "nothing happened"
//! errors into values.
//!
//! # Where the waiting happens
//! Every blocking call is one request that the manager *parks* until it can complete or its
//! timeout passes (`PROTOCOL.md`, section 4.1). The client only waits for the reply, as for
//! any call: it never polls, and never holds a lock of its own while it waits, so the other
//! threads of the process keep using the same connection meanwhile.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tracing::{debug, warn};

use crate::client::Client;
use crate::command::Target;
use crate::command::{decode, Args, Cmd, Reply};
use crate::error::{Error, ErrorName, Result};

/// What an acquire answered (`PROTOCOL.md`, section 4.1): not acquired, acquired, or acquired
/// from a holder that died holding it.
///
/// ```
/// use agora_client::proxies::Acquired;
/// assert!(Acquired::OwnerDied.is_acquired());
/// assert!(!Acquired::No.is_acquired());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Acquired {
    /// Not acquired (wire `0`): non-blocking and taken, or the timeout passed.
    No,
    /// Acquired (wire `1`).
    Yes,
    /// Acquired (wire `2`), and the previous holder's connection closed while it held the lock
    /// or the permit: its process died or exited mid-way, so the data the lock guards may be
    /// half-updated. Check or repair it before trusting it.
    OwnerDied,
}

impl Acquired {
    /// True for [`Acquired::Yes`] and [`Acquired::OwnerDied`].
    pub fn is_acquired(self) -> bool {
        self != Acquired::No
    }

    /// True for [`Acquired::OwnerDied`].
    pub fn is_owner_dead(self) -> bool {
        self == Acquired::OwnerDied
    }

    /// The result for a wire code; another code is a protocol violation.
    pub(crate) fn from_code(code: u64) -> Result<Acquired> {
        match code {
            0 => Ok(Acquired::No),
            1 => Ok(Acquired::Yes),
            2 => Ok(Acquired::OwnerDied),
            other => Err(Error::Protocol(format!(
                "an acquire answered {other}; expected 0, 1 or 2"
            ))),
        }
    }
}

/// Hands out owner identities: one per thread, never reused within a process.
static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's owner identity, 0 until first used.
    static OWNER: Cell<u64> = const { Cell::new(0) };
}

/// The calling thread's owner identity: the `owner` param of `lock`, `rlock` and `condition`
/// calls, so that threads sharing one connection are told apart (the manager's owner is the
/// pair (connection, owner)).
///
/// Ids come from a counter of this process and start at 1 (0 is what clients that send no
/// owner get). After `fork` the child's thread keeps its parent thread's id and the counter
/// continues from the parent's value, so an id may repeat one of the parent's, but never with
/// the same connection: a forked child always opens its own. The pair is what the manager
/// compares, and it is unique.
pub(crate) fn thread_owner() -> u64 {
    OWNER
        .try_with(|id| {
            if id.get() == 0 {
                id.set(NEXT_OWNER.fetch_add(1, Ordering::Relaxed));
            }
            id.get()
        })
        // A thread being torn down (a guard dropped by a thread-local destructor): a fresh id
        // is an owner that holds nothing, which is the truth for a thread that is ending.
        .unwrap_or_else(|_| NEXT_OWNER.fetch_add(1, Ordering::Relaxed))
}

/// An owner identity of its own, for an acquire made by an async task, which has no thread
/// of its own: the guard releases with it.
#[cfg(feature = "tokio")]
pub(crate) fn fresh_owner() -> u64 {
    NEXT_OWNER.fetch_add(1, Ordering::Relaxed)
}

/// Timeouts longer than this are sent as "no limit": no program waits a century, and the
/// manager need not represent a deadline that far away.
pub(crate) const NO_LIMIT_BEYOND: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Appends a timeout param: seconds as a float, or nil for none (or one past
/// [`NO_LIMIT_BEYOND`]).
pub(crate) fn timeout(a: &mut Args, t: Option<Duration>) {
    match t {
        Some(t) if t <= NO_LIMIT_BEYOND => {
            a.raw(&float(t.as_secs_f64()));
        }
        _ => {
            a.raw(&[0xc0]);
        }
    }
}

fn float(x: f64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    agora_proto::encode::f64(&mut out, x);
    out
}

/// A guard's claim on what it acquired: released once, by the process that acquired it.
#[derive(Debug)]
pub(crate) struct Held {
    /// The wire method that releases (`lock.release`, ...).
    release: &'static str,
    id: Target,
    /// The owner param of the release (`None` for semaphores, which take none).
    owner: Option<u64>,
    /// The process that acquired; a forked copy of the guard releases nothing.
    pid: u32,
    owner_died: bool,
    armed: bool,
}

impl Held {
    pub(crate) fn new(
        release: &'static str,
        id: Target,
        owner: Option<u64>,
        acquired: Acquired,
    ) -> Held {
        Held {
            release,
            id,
            owner,
            pid: crate::atfork::current_pid(),
            owner_died: acquired.is_owner_dead(),
            armed: true,
        }
    }

    pub(crate) fn is_owner_dead(&self) -> bool {
        self.owner_died
    }

    /// True until it was released (or its release taken).
    #[cfg(feature = "tokio")]
    pub(crate) fn is_armed(&self) -> bool {
        self.armed
    }

    /// True in the process that acquired.
    pub(crate) fn is_ours(&self) -> bool {
        self.pid == crate::atfork::current_pid()
    }

    /// Takes the release out of the guard's hands, for the caller to send (in a chain): `None`
    /// when there is nothing for this process to release (released already, or a copy in a
    /// forked child).
    pub(crate) fn take_release(&mut self) -> Option<Cmd<()>> {
        if !self.armed || !self.is_ours() {
            return None;
        }
        self.armed = false;
        Some(self.release_cmd())
    }

    /// The release command.
    pub(crate) fn release_cmd(&self) -> Cmd<()> {
        let owner = self.owner;
        Cmd::object(self.id, self.release, decode::unit, move |a| {
            if let Some(owner) = owner {
                a.uint(owner);
            }
            Ok(())
        })
    }

    /// Releases now (an explicit `unlock`), reporting the error.
    pub(crate) fn release(&mut self, client: &Client) -> Result<()> {
        if !std::mem::replace(&mut self.armed, false) {
            return Ok(());
        }
        if !self.is_ours() {
            return Err(Error::Usage(format!(
                "a guard of object {} was released in a forked child; it belongs to the \
                 process that acquired it, which still holds it",
                self.id.id
            )));
        }
        client.run(self.release_cmd())
    }

    /// Releases from a guard's `Drop`: errors are logged, never raised (also while unwinding
    /// from a panic, when raising would abort).
    pub(crate) fn release_on_drop(&mut self, client: &Client, what: &str) {
        if !self.armed {
            return;
        }
        if !self.is_ours() {
            self.armed = false;
            debug!(
                object = self.id.id,
                what, "a guard copied into a forked child releases nothing"
            );
            return;
        }
        self.armed = false;
        // Not waited for: the caller goes on while the manager passes the lock on.
        match client.run_detached(self.release_cmd()) {
            Ok(()) => {}
            // The session is gone: the manager released what it held when it saw it end.
            Err(e) if e.is_disconnected() => {
                debug!(object = self.id.id, what, error = %e, "release skipped: connection closed")
            }
            Err(e) => warn!(object = self.id.id, what, error = %e, "releasing a guard failed"),
        }
    }
}

/// The doc line of a `*_cmd` twin that a macro generates for several proxy types:
/// "[`Type::method`] as a command (`kind.wire`)", plus an optional remark.
macro_rules! cmd_doc {
    ($ty:ident, $method:literal, $kind:literal, $wire:literal $(, $extra:literal)?) => {
        concat!(
            "[`", stringify!($ty), "::", $method, "`] as a command (`", $kind, ".", $wire, "`)",
            $($extra,)? "."
        )
    };
}

pub(crate) use cmd_doc;

/// Decoders for the blocking methods.
pub(crate) mod decoders {
    use super::*;

    /// An acquire code.
    pub(crate) fn acquired(r: Reply) -> Result<Acquired> {
        Acquired::from_code(decode::value::<u64>(r)?)
    }

    /// `Empty` means nothing came: `None`.
    pub(crate) fn unless_empty<T: DeserializeOwned>(r: Reply) -> Result<Option<T>> {
        match r {
            Err(e) if e.is(ErrorName::Empty) => Ok(None),
            r => decode::value(r).map(Some),
        }
    }

    /// `Empty` means nothing came: `None`; so does a batch of no items.
    pub(crate) fn batch_unless_empty<T: DeserializeOwned>(r: Reply) -> Result<Option<Vec<T>>> {
        match r {
            Err(e) if e.is(ErrorName::Empty) => Ok(None),
            r => decode::seq::<T>(r).map(|items| (!items.is_empty()).then_some(items)),
        }
    }

    /// Success is `Some(())`; `Full` means nothing was put: `None`.
    pub(crate) fn unless_full(r: Reply) -> Result<Option<()>> {
        match r {
            Ok(_) => Ok(Some(())),
            Err(e) if e.is(ErrorName::Full) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A count of items that got in, `None` when none did.
    pub(crate) fn count_unless_zero(r: Reply) -> Result<Option<usize>> {
        decode::value::<usize>(r).map(|n| (n > 0).then_some(n))
    }

    /// A wait that answers `true` when what it waited for happened, `false` at its timeout.
    pub(crate) fn unless_timed_out(r: Reply) -> Result<Option<()>> {
        decode::value::<bool>(r).map(|done| done.then_some(()))
    }

    /// A barrier's arrival index; `BrokenBarrierError` means the parties did not all meet.
    pub(crate) fn unless_broken(r: Reply) -> Result<Option<usize>> {
        match r {
            Err(e) if e.is(ErrorName::BrokenBarrierError) => Ok(None),
            r => decode::value(r).map(Some),
        }
    }

    /// A `bool` result.
    pub(crate) fn flag(r: Reply) -> Result<bool> {
        decode::value(r)
    }

    /// A count.
    pub(crate) fn count(r: Reply) -> Result<usize> {
        decode::value(r)
    }

    /// A fencing token.
    pub(crate) fn token(r: Reply) -> Result<u64> {
        decode::value(r)
    }

    /// No result.
    pub(crate) fn unit(r: Reply) -> Result<()> {
        decode::unit(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_codes() {
        assert_eq!(Acquired::from_code(0).unwrap(), Acquired::No);
        assert_eq!(Acquired::from_code(1).unwrap(), Acquired::Yes);
        assert!(Acquired::from_code(2).unwrap().is_owner_dead());
        assert!(matches!(Acquired::from_code(3), Err(Error::Protocol(_))));
    }

    #[test]
    fn owners_differ_between_threads_and_stay_put_within_one() {
        let here = thread_owner();
        assert_ne!(here, 0);
        assert_eq!(thread_owner(), here);
        let there = std::thread::spawn(thread_owner).join().unwrap();
        assert_ne!(there, here);
    }

    #[test]
    fn timeouts_are_float_seconds_or_nil() {
        let mut a = Args::default();
        timeout(&mut a, Some(Duration::from_millis(250)));
        timeout(&mut a, None);
        timeout(&mut a, Some(Duration::MAX));
        let mut expected = vec![0xcb];
        expected.extend_from_slice(&0.25f64.to_be_bytes());
        expected.extend_from_slice(&[0xc0, 0xc0]);
        assert_eq!(a.bytes(), expected);
        assert_eq!(a.count(), 3);
    }

    #[test]
    fn what_happened_is_some_and_nothing_is_none() {
        fn encoded<V: serde::Serialize + ?Sized>(v: &V) -> Reply {
            Ok(bytes::Bytes::from(rmp_serde::to_vec(v).unwrap()))
        }
        assert_eq!(decoders::unless_full(encoded(&())).unwrap(), Some(()));
        assert_eq!(decoders::count_unless_zero(encoded(&3u8)).unwrap(), Some(3));
        assert_eq!(decoders::count_unless_zero(encoded(&0u8)).unwrap(), None);
        assert_eq!(
            decoders::unless_timed_out(encoded(&true)).unwrap(),
            Some(())
        );
        assert_eq!(decoders::unless_timed_out(encoded(&false)).unwrap(), None);
        assert_eq!(decoders::unless_broken(encoded(&2u8)).unwrap(), Some(2));
        assert_eq!(
            decoders::batch_unless_empty::<u8>(encoded(&[7u8])).unwrap(),
            Some(vec![7])
        );
        assert_eq!(
            decoders::batch_unless_empty::<u8>(encoded(&Vec::<u8>::new())).unwrap(),
            None
        );
    }

    #[test]
    fn nothing_happened_errors_become_values() {
        let empty = || Err(Error::remote("Empty", "the queue is empty"));
        let full = || Err(Error::remote("Full", "the queue is full"));
        assert_eq!(decoders::unless_empty::<i64>(empty()).unwrap(), None);
        assert_eq!(decoders::batch_unless_empty::<i64>(empty()).unwrap(), None);
        assert_eq!(decoders::unless_full(full()).unwrap(), None);
        assert!(decoders::unless_empty::<i64>(full()).is_err());
        let broken = || Err(Error::remote("BrokenBarrierError", "the barrier is broken"));
        assert_eq!(decoders::unless_broken(broken()).unwrap(), None);
        assert!(decoders::unless_broken(full()).is_err());
        let closed = Err(Error::remote("Closed", "the queue is closed"));
        assert!(decoders::unless_full(closed)
            .unwrap_err()
            .is(ErrorName::Closed));
    }
}
