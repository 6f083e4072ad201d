//! Async locks and semaphores: acquires that park only their task, and guards released on
//! drop without blocking the runtime.
//!
//! A guard's drop sends the release without waiting for its answer (a detached call, as the
//! blocking guard's drop does), on the session that acquired: when that connection broke, the
//! manager released the holding already and nothing is sent. [`LockGuard::unlock`] waits for
//! the answer, for callers who want the error.
//!
//! # Owners
//! A task is not a thread: every async acquire of a lock or rlock gets an owner identity of
//! its own, which its guard releases with. An async `RLock` is therefore not reentrant from a
//! task: a second acquire waits like any other acquirer's.
//!
//! # Cancel safety
//! Every acquire future here may be dropped before it completes: a waiting acquire is
//! cancelled on the manager, and a lock or permit granted meanwhile is released.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::connection::{Conn, GiveBack};
use super::{Async, AsyncClient, Call};
use crate::command::Target;
use crate::error::{Error, Result};
use crate::proxies::{
    acquire_cmd, fresh_owner, notify_cmd, owner_cmd, semaphore_acquire_cmd, wait_cmd, Acquired,
    Held,
};

/// The wire methods of a kind of lock or semaphore.
struct Kind {
    acquire: &'static str,
    release: &'static str,
    /// Locks take an owner param; semaphores do not.
    owned_by_task: bool,
}

/// What a guard holds: the release and the session it must go to.
struct Hold {
    held: Held,
    conn: Arc<Conn>,
    /// The owner identity it acquired with (`None` for a semaphore's permit).
    owner: Option<u64>,
}

impl Hold {
    fn is_owner_dead(&self) -> bool {
        self.held.is_owner_dead()
    }

    /// Releases now, waiting for the answer.
    async fn release(&mut self) -> Result<()> {
        let Some(cmd) = self.held.take_release() else {
            return Ok(());
        };
        if !self.conn.is_live() {
            return Err(Error::Usage(
                "the connection that acquired broke: the manager released the holding".into(),
            ));
        }
        let args = cmd.args?;
        self.conn
            .start(&cmd.method, &args, false, None)?
            .reply()
            .await
            .map(drop)
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(cmd) = self.held.take_release() {
            if let (true, Ok(args)) = (self.conn.is_live(), cmd.args) {
                self.conn.send_detached(&cmd.method, &args);
            }
        }
    }
}

/// Gives back what a dropped call was granted with `release` (`[id, owner]`), when `granted`
/// says the reply's result granted it. The release is encoded only then: most calls are not
/// dropped, and of those few are granted after all.
fn release_if(
    release: &'static str,
    id: Target,
    owner: Option<u64>,
    granted: fn(&bytes::Bytes) -> bool,
) -> GiveBack {
    Box::new(move |result| {
        if !granted(result) {
            return None;
        }
        match Held::new(release, id, owner, Acquired::Yes)
            .release_cmd()
            .args
        {
            Ok(args) => Some(vec![(release, args)]),
            // An object id and an owner always encode; were it not so, the grant would stay
            // with this process until its connection closes, as any unreleased one.
            Err(e) => {
                tracing::warn!(error = %e, "could not encode the release of a dropped grant");
                None
            }
        }
    })
}

/// Acquires for a guard: `None` when not acquired (a try, or the timeout passed).
async fn acquire(
    client: &AsyncClient,
    id: Target,
    kind: &Kind,
    blocking: bool,
    wait: Option<Duration>,
) -> Result<Option<Hold>> {
    let owner = kind.owned_by_task.then(fresh_owner);
    // What a guard holds is always owned: released if this process dies.
    let cmd = match owner {
        Some(owner) => acquire_cmd(id, kind.acquire, blocking, wait, owner, Some(true)),
        None => semaphore_acquire_cmd(id, kind.acquire, blocking, wait, Some(true)),
    };
    let release = kind.release;
    let give_back = release_if(release, id, owner, |result| {
        matches!(agora_proto::params::int_u64(result), Some(1 | 2))
    });
    let conn = client.connection().await?;
    let got = client.call_on(&conn, cmd, Some(give_back)).await?;
    Ok(got.is_acquired().then(|| Hold {
        held: Held::new(release, id, owner, got),
        conn,
        owner,
    }))
}

macro_rules! guards {
    ($guard:ident, $owned:ident, $what:literal) => {
        #[doc = concat!("Holds ", $what, " until dropped (released without waiting) or released with `unlock`.")]
        #[must_use = "dropping the guard releases at once"]
        pub struct $guard<'a> {
            hold: Hold,
            _proxy: PhantomData<&'a ()>,
        }

        impl $guard<'_> {
            /// True when the previous holder's connection closed while it held this (its
            /// process died or exited inside the critical section): the data it guards may be
            /// half-updated.
            pub fn is_owner_dead(&self) -> bool {
                self.hold.is_owner_dead()
            }

            /// Releases now and reports the outcome (dropping the guard releases too, without
            /// waiting, and can only log a failure).
            pub async fn unlock(mut self) -> Result<()> {
                self.hold.release().await
            }
        }

        impl std::fmt::Debug for $guard<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($guard)).finish_non_exhaustive()
            }
        }

        #[doc = concat!("Holds ", $what, " as [`", stringify!($guard), "`] does, owning an `Arc` of its proxy instead of borrowing it: it can move into a spawned task.")]
        #[must_use = "dropping the guard releases at once"]
        pub struct $owned<P> {
            hold: Hold,
            proxy: Arc<Async<P>>,
        }

        impl<P> $owned<P> {
            /// As [`is_owner_dead`](LockGuard::is_owner_dead).
            pub fn is_owner_dead(&self) -> bool {
                self.hold.is_owner_dead()
            }

            /// Releases now and reports the outcome.
            pub async fn unlock(mut self) -> Result<()> {
                self.hold.release().await
            }

            /// The proxy this guard holds an `Arc` of.
            pub fn proxy(&self) -> &Arc<Async<P>> {
                &self.proxy
            }
        }

        impl<P> std::fmt::Debug for $owned<P> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($owned)).finish_non_exhaustive()
            }
        }
    };
}

guards!(LockGuard, OwnedLockGuard, "a lock or an rlock");
guards!(
    SemaphoreGuard,
    OwnedSemaphoreGuard,
    "one permit of a semaphore"
);

macro_rules! lock_methods {
    ($proxy:ty, $guard:ident, $owned:ident, $kind:literal, $owner:literal,
     $lock:ident, $lock_timeout:ident, $try_lock:ident, $lock_owned:ident) => {
        impl Async<$proxy> {
            const KIND: Kind = Kind {
                acquire: concat!($kind, ".acquire"),
                release: concat!($kind, ".release"),
                owned_by_task: $owner,
            };

            async fn guard(&self, blocking: bool, wait: Option<Duration>) -> Result<Option<Hold>> {
                acquire(&self.client, self.proxy.target(), &Self::KIND, blocking, wait).await
            }

            #[doc = concat!("Waits for the ", $kind, " and gives a guard that releases it (`", $kind, ".acquire`).")]
            ///
            /// # Cancel safety
            /// Dropped before it completes, it holds nothing: the waiting acquire is cancelled,
            /// and what was granted meanwhile is released.
            pub async fn $lock(&self) -> Result<$guard<'_>> {
                match self.guard(true, None).await? {
                    Some(hold) => Ok($guard { hold, _proxy: PhantomData }),
                    None => Err(Error::Protocol("a blocking acquire answered 0".into())),
                }
            }

            /// As the method above, waiting at most `timeout`: `None` when the timeout passed.
            /// Cancel-safe likewise.
            pub async fn $lock_timeout(&self, timeout: Duration) -> Result<Option<$guard<'_>>> {
                let hold = self.guard(true, Some(timeout)).await?;
                Ok(hold.map(|hold| $guard { hold, _proxy: PhantomData }))
            }

            /// Without waiting: `None` when it would have had to wait.
            pub async fn $try_lock(&self) -> Result<Option<$guard<'_>>> {
                let hold = self.guard(false, None).await?;
                Ok(hold.map(|hold| $guard { hold, _proxy: PhantomData }))
            }

            /// As the waiting acquire, with a guard that owns an `Arc` of the proxy (it can
            /// move into another task, as tokio's `OwnedMutexGuard`). Cancel-safe likewise.
            pub async fn $lock_owned(self: Arc<Self>) -> Result<$owned<$proxy>> {
                match self.guard(true, None).await? {
                    Some(hold) => Ok($owned { hold, proxy: self }),
                    None => Err(Error::Protocol("a blocking acquire answered 0".into())),
                }
            }
        }
    };
}

lock_methods!(
    crate::Lock,
    LockGuard,
    OwnedLockGuard,
    "lock",
    true,
    lock,
    lock_timeout,
    try_lock,
    lock_owned
);
lock_methods!(
    crate::RLock,
    LockGuard,
    OwnedLockGuard,
    "rlock",
    true,
    lock,
    lock_timeout,
    try_lock,
    lock_owned
);
lock_methods!(
    crate::Semaphore,
    SemaphoreGuard,
    OwnedSemaphoreGuard,
    "semaphore",
    false,
    acquire,
    acquire_timeout,
    try_acquire,
    acquire_owned
);
lock_methods!(
    crate::BoundedSemaphore,
    SemaphoreGuard,
    OwnedSemaphoreGuard,
    "bounded_semaphore",
    false,
    acquire,
    acquire_timeout,
    try_acquire,
    acquire_owned
);

impl Async<crate::Lock> {
    /// True when anyone holds the lock ([`crate::Lock::is_locked`]).
    pub fn is_locked(&self) -> Call<bool> {
        self.run(self.proxy.is_locked_cmd())
    }
}

impl Async<crate::RLock> {
    /// True when anyone holds the lock ([`crate::RLock::is_locked`]).
    pub fn is_locked(&self) -> Call<bool> {
        self.run(self.proxy.is_locked_cmd())
    }
}

macro_rules! semaphore_methods {
    ($proxy:ty) => {
        impl Async<$proxy> {
            /// Gives `n` permits back, as [`crate::Semaphore::release`].
            pub fn release(&self, n: usize) -> Call<()> {
                self.run(self.proxy.release_cmd(n))
            }

            /// The number of permits free now.
            pub fn get_value(&self) -> Call<usize> {
                self.run(self.proxy.get_value_cmd())
            }
        }
    };
}

semaphore_methods!(crate::Semaphore);
semaphore_methods!(crate::BoundedSemaphore);

/// The calls of an async [`crate::Condition`]: [`lock`](Async::lock) gives a
/// [`ConditionGuard`], on which the waits and notifications are made.
impl Async<crate::Condition> {
    const KIND: Kind = Kind {
        acquire: "condition.acquire",
        release: "condition.release",
        owned_by_task: true,
    };

    /// Waits for the condition's lock and gives a guard that releases it.
    ///
    /// # Cancel safety
    /// As for [`Lock`](super::Lock): dropped before it completes, it holds nothing.
    pub async fn lock(&self) -> Result<ConditionGuard<'_>> {
        let target = self.proxy.target();
        match acquire(&self.client, target, &Self::KIND, true, None).await? {
            Some(hold) => Ok(ConditionGuard {
                hold,
                client: &self.client,
                id: target,
            }),
            None => Err(Error::Protocol("a blocking acquire answered 0".into())),
        }
    }

    /// True when anyone holds the condition's lock.
    pub fn is_locked(&self) -> Call<bool> {
        self.run(self.proxy.is_locked_cmd())
    }
}

/// Holds an async [`crate::Condition`]'s lock, with an owner identity of its own; waits and
/// notifications go through it. Released on drop, without waiting.
#[must_use = "dropping the guard releases at once"]
pub struct ConditionGuard<'a> {
    hold: Hold,
    client: &'a AsyncClient,
    id: Target,
}

impl std::fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConditionGuard").finish_non_exhaustive()
    }
}

impl ConditionGuard<'_> {
    /// The guard's owner identity.
    fn owner(&self) -> u64 {
        self.hold.owner.unwrap_or_default()
    }

    /// As [`LockGuard::is_owner_dead`].
    pub fn is_owner_dead(&self) -> bool {
        self.hold.is_owner_dead()
    }

    /// Releases the lock, waits until notified, and holds the lock again
    /// ([`crate::ConditionGuard::wait`]).
    ///
    /// # Cancel safety
    /// Dropped before it completes, the wait is cancelled and the guard no longer holds the
    /// lock (the wait had released it; a re-acquire that was on its way is released): its drop
    /// sends nothing, and a later wait or `unlock` fails with [`Error::Usage`].
    pub async fn wait(&mut self) -> Result<()> {
        self.wait_for(None).await.map(drop)
    }

    /// [`wait`](Self::wait) for at most `timeout`: `None` when the timeout passed (the lock is
    /// held again either way, as in Python). Cancel-safe as `wait`.
    pub async fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<()>> {
        Ok(self.wait_for(Some(timeout)).await?.then_some(()))
    }

    async fn wait_for(&mut self, timeout: Option<Duration>) -> Result<bool> {
        if self.hold.held.take_release().is_none() {
            return Err(gave_up());
        }
        let owner = Some(self.owner());
        // Notified or timed out, the wait holds the lock again: a dropped wait releases it.
        let give_back = release_if("condition.release", self.id, owner, |_| true);
        let cmd = wait_cmd(self.id, timeout, self.owner());
        let notified = self
            .client
            .call_on(&self.hold.conn, cmd, Some(give_back))
            .await?;
        self.hold.held = Held::new("condition.release", self.id, owner, Acquired::Yes);
        Ok(notified)
    }

    /// Wakes up to `n` waiters ([`crate::ConditionGuard::notify`]).
    pub async fn notify(&self, n: usize) -> Result<()> {
        let cmd = notify_cmd(self.id, n, self.owner());
        self.client.call_on(&self.hold.conn, cmd, None).await
    }

    /// Wakes every waiter.
    pub async fn notify_all(&self) -> Result<()> {
        let cmd = owner_cmd(self.id, "condition.notify_all", self.owner());
        self.client.call_on(&self.hold.conn, cmd, None).await
    }

    /// Releases now and reports the outcome.
    pub async fn unlock(mut self) -> Result<()> {
        if !self.hold.held.is_armed() {
            return Err(gave_up());
        }
        self.hold.release().await
    }
}

/// The error of a guard whose wait was cancelled.
fn gave_up() -> Error {
    Error::Usage("this condition guard gave up the lock: a wait on it was cancelled".into())
}
