//! [`Semaphore`] and [`BoundedSemaphore`]: counted permits shared by processes.

use std::marker::PhantomData;
use std::time::Duration;

use crate::client::Client;
use crate::command::Target;
use crate::command::{Args, Cmd};
use crate::error::Result;

use super::lock::must_acquire;
use super::wait::{cmd_doc, decoders, timeout, Acquired, Held};

/// A semaphore shared by processes, like Python's `multiprocessing.Manager().Semaphore(value)`:
/// a count of permits; an acquire takes one, waiting while there are none, and a release
/// gives permits back.
///
/// ```no_run
/// # let client = agora_client::Client::from_env()?;
/// // At most 4 processes download at once.
/// let slots = client.semaphore_named("downloads", 4)?;
/// let _permit = slots.acquire()?;
/// // ... download ...
/// # Ok::<(), agora_client::Error>(())
/// ```
///
/// # Guards
/// [`acquire`](Semaphore::acquire) and its variants return a [`SemaphoreGuard`] that gives the
/// permit back when dropped (also while unwinding from a panic). For Python-style use, where
/// one process acquires and another releases, use [`acquire_raw`](Semaphore::acquire_raw)
/// and [`release`](Semaphore::release).
///
/// # Fairness
/// Acquirers are served in the order they arrived: a release hands the permit to the first in
/// line, never to a newcomer. Python's `threading.Semaphore` makes no such promise.
///
/// # Process death and ownership
/// A permit a guard holds is *owned*: the manager counts it for the connection, and when the
/// process dies (even by `SIGKILL`) or exits holding it, it comes back, and the next acquirer
/// is told ([`SemaphoreGuard::is_owner_dead`], [`Acquired::OwnerDied`]). A permit taken with
/// [`acquire_raw`](Semaphore::acquire_raw) is *unowned*, as in Python: a consumption that
/// nothing gives back, so a semaphore works as a signal (a producer
/// [`release`](Semaphore::release)s, a consumer `acquire_raw`s and exits: the signal is
/// gone). A [`BoundedSemaphore`]'s `acquire_raw` is owned. The `owned` option at creation
/// ([`Client::semaphore_with`]) sets one behaviour for every acquire. A release by another
/// process than the one that took an owned permit is counted off the taker's account first,
/// then off any holder's, so it is never given back twice.
pub struct Semaphore {
    client: Client,
    id: Target,
    marker: PhantomData<()>,
}

super::proxy_common!(Semaphore[], "semaphore");

/// A [`Semaphore`] that refuses to be released above its initial value: such a release fails
/// with `ValueError` and changes nothing, as in Python. Everything else is as for
/// [`Semaphore`].
pub struct BoundedSemaphore {
    client: Client,
    id: Target,
    marker: PhantomData<()>,
}

super::proxy_common!(BoundedSemaphore[], "bounded_semaphore");

impl Client {
    /// Creates a new semaphore holding `value` permits.
    pub fn semaphore(&self, value: usize) -> Result<Semaphore> {
        Ok(Semaphore::from_id(
            self,
            self.create_semaphore("semaphore", None, value)?,
        ))
    }

    /// The semaphore called `name`, created with `value` permits if there is none
    /// (get-or-create: an existing one keeps its count).
    pub fn semaphore_named(&self, name: &str, value: usize) -> Result<Semaphore> {
        Ok(Semaphore::from_id(
            self,
            self.create_semaphore("semaphore", Some(name), value)?,
        ))
    }

    /// Creates a new bounded semaphore holding `value` permits, its maximum.
    pub fn bounded_semaphore(&self, value: usize) -> Result<BoundedSemaphore> {
        Ok(BoundedSemaphore::from_id(
            self,
            self.create_semaphore("bounded_semaphore", None, value)?,
        ))
    }

    /// The bounded semaphore called `name`, created with `value` permits if there is none
    /// (get-or-create).
    pub fn bounded_semaphore_named(&self, name: &str, value: usize) -> Result<BoundedSemaphore> {
        Ok(BoundedSemaphore::from_id(
            self,
            self.create_semaphore("bounded_semaphore", Some(name), value)?,
        ))
    }

    /// A semaphore (named, get-or-create, or new) with the `owned` option: `Some(false)`:
    /// no acquire, not even a guard's, is given back when its process exits or dies (Python's
    /// semantics); `Some(true)`: every acquire is; `None`: a guard's is, an `acquire_raw`'s is
    /// not (see [`Semaphore`]).
    pub fn semaphore_with(
        &self,
        name: Option<&str>,
        value: usize,
        owned: Option<bool>,
    ) -> Result<Semaphore> {
        Ok(Semaphore::from_id(
            self,
            self.create_semaphore_with("semaphore", name, value, owned)?,
        ))
    }

    /// A bounded semaphore with the `owned` option, as [`Client::semaphore_with`] (but with
    /// `None`, an `acquire_raw` is owned too).
    pub fn bounded_semaphore_with(
        &self,
        name: Option<&str>,
        value: usize,
        owned: Option<bool>,
    ) -> Result<BoundedSemaphore> {
        Ok(BoundedSemaphore::from_id(
            self,
            self.create_semaphore_with("bounded_semaphore", name, value, owned)?,
        ))
    }

    fn create_semaphore(&self, kind: &str, name: Option<&str>, value: usize) -> Result<u64> {
        self.create_semaphore_with(kind, name, value, None)
    }

    fn create_semaphore_with(
        &self,
        kind: &str,
        name: Option<&str>,
        value: usize,
        owned: Option<bool>,
    ) -> Result<u64> {
        let mut args = Args::default();
        args.str(kind).opt_str(name).uint(value as u64);
        if let Some(owned) = owned {
            args.bool(owned);
        }
        self.create_with(args)
    }
}

/// `acquire [id, blocking, timeout]`, and `owned` after them when given (`None`: the kind's
/// default: unowned for a semaphore, owned for a bounded one).
pub(crate) fn semaphore_acquire_cmd(
    id: Target,
    method: &'static str,
    blocking: bool,
    wait: Option<Duration>,
    owned: Option<bool>,
) -> Cmd<Acquired> {
    Cmd::object(id, method, decoders::acquired, move |a| {
        a.bool(blocking);
        timeout(a, if blocking { wait } else { None });
        if let Some(owned) = owned {
            a.bool(owned);
        }
        Ok(())
    })
}

/// The methods both semaphores share.
macro_rules! semaphore_methods {
    ($name:ident, $kind:literal) => {
        impl $name {
            /// Waits for a permit (in FIFO order), takes it, and returns a guard that gives it
            /// back when dropped.
            pub fn acquire(&self) -> Result<SemaphoreGuard<'_>> {
                let got = must_acquire(self.client.run(self.owned_cmd(true, None))?, $kind)?;
                Ok(SemaphoreGuard::new(
                    &self.client,
                    concat!($kind, ".release"),
                    self.id,
                    got,
                ))
            }

            /// As [`acquire`](Self::acquire), with a guard that owns an `Arc` of the semaphore
            /// instead of borrowing it: it can move into another thread.
            pub fn acquire_owned(
                self: &std::sync::Arc<Self>,
            ) -> Result<OwnedSemaphoreGuard<$name>> {
                let got = must_acquire(self.client.run(self.owned_cmd(true, None))?, $kind)?;
                Ok(OwnedSemaphoreGuard {
                    held: Held::new(concat!($kind, ".release"), self.id, None, got),
                    semaphore: self.clone(),
                })
            }

            /// Takes a permit if one is free and nobody waits; `None` otherwise. Never waits.
            pub fn try_acquire(&self) -> Result<Option<SemaphoreGuard<'_>>> {
                self.guard(false, None)
            }

            /// Waits up to `timeout` for a permit; `None` if none came in time. The timeout
            /// runs on the manager.
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<SemaphoreGuard<'_>>> {
                self.guard(true, Some(timeout))
            }

            fn guard(
                &self,
                blocking: bool,
                wait: Option<Duration>,
            ) -> Result<Option<SemaphoreGuard<'_>>> {
                Ok(match self.client.run(self.owned_cmd(blocking, wait))? {
                    Acquired::No => None,
                    got => Some(SemaphoreGuard::new(
                        &self.client,
                        concat!($kind, ".release"),
                        self.id,
                        got,
                    )),
                })
            }

            /// Takes a permit without a guard, as Python's `acquire(blocking, timeout)`; give it
            /// back with [`release`](Self::release). `timeout` is ignored when `blocking` is
            /// false; `None` waits without limit.
            pub fn acquire_raw(
                &self,
                blocking: bool,
                timeout: Option<Duration>,
            ) -> Result<Acquired> {
                self.client.run(self.acquire_raw_cmd(blocking, timeout))
            }

            #[doc = cmd_doc!($name, "acquire_raw", $kind, "acquire")]
            pub fn acquire_raw_cmd(&self, blocking: bool, wait: Option<Duration>) -> Cmd<Acquired> {
                semaphore_acquire_cmd(self.id, concat!($kind, ".acquire"), blocking, wait, None)
            }

            /// A guard's acquire: what a guard holds is always owned.
            fn owned_cmd(&self, blocking: bool, wait: Option<Duration>) -> Cmd<Acquired> {
                let method = concat!($kind, ".acquire");
                semaphore_acquire_cmd(self.id, method, blocking, wait, Some(true))
            }

            /// Gives `n` permits back (Python's `release(n)`), waking up to `n` acquirers in
            /// line. Fails with `ValueError` when `n` is 0, and for a bounded semaphore when
            /// the count would go above its initial value.
            pub fn release(&self, n: usize) -> Result<()> {
                self.client.run(self.release_cmd(n))
            }

            #[doc = cmd_doc!($name, "release", $kind, "release")]
            pub fn release_cmd(&self, n: usize) -> Cmd<()> {
                Cmd::object(
                    self.id,
                    concat!($kind, ".release"),
                    decoders::unit,
                    move |a| {
                        a.uint(n as u64);
                        Ok(())
                    },
                )
            }

            /// The number of free permits now.
            pub fn get_value(&self) -> Result<usize> {
                self.client.run(self.get_value_cmd())
            }

            #[doc = cmd_doc!($name, "get_value", $kind, "get_value")]
            pub fn get_value_cmd(&self) -> Cmd<usize> {
                Cmd::object(
                    self.id,
                    concat!($kind, ".get_value"),
                    decoders::count,
                    |_| Ok(()),
                )
            }
        }
    };
}

semaphore_methods!(Semaphore, "semaphore");
semaphore_methods!(BoundedSemaphore, "bounded_semaphore");

/// One permit of a [`Semaphore`] or [`BoundedSemaphore`]; given back when dropped.
///
/// # Drop and panics
/// Dropping the guard releases the permit with one request it does not wait for, as a
/// [`LockGuard`](super::LockGuard) does (every later call of this process comes after it),
/// also while the thread unwinds from a panic (a failure is logged;
/// [`release`](SemaphoreGuard::release) waits for the answer and reports it). If the
/// process dies or exits with the guard alive, the manager gives the permit back when the
/// connection closes and tells the next acquirer. A guard copied into a forked child releases
/// nothing there.
#[derive(Debug)]
#[must_use = "the permit is given back as soon as the guard is dropped"]
pub struct SemaphoreGuard<'a> {
    client: &'a Client,
    held: Held,
}

impl<'a> SemaphoreGuard<'a> {
    fn new(
        client: &'a Client,
        release: &'static str,
        id: Target,
        got: Acquired,
    ) -> SemaphoreGuard<'a> {
        SemaphoreGuard {
            client,
            held: Held::new(release, id, None, got),
        }
    }

    /// True when a holder's connection closed while it held permits (its process died or
    /// exited without releasing) before this acquire: whatever the permits protect may be
    /// half-updated.
    pub fn is_owner_dead(&self) -> bool {
        self.held.is_owner_dead()
    }

    /// Gives the permit back now and reports the outcome.
    pub fn release(mut self) -> Result<()> {
        self.held.release(self.client)
    }
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        self.held.release_on_drop(self.client, "semaphore");
    }
}

/// One permit, held as a [`SemaphoreGuard`] holds it, owning an `Arc` of its semaphore `S`
/// ([`Semaphore`] or [`BoundedSemaphore`]): made by `acquire_owned`.
#[derive(Debug)]
#[must_use = "the permit is given back as soon as the guard is dropped"]
pub struct OwnedSemaphoreGuard<S: Permits> {
    semaphore: std::sync::Arc<S>,
    held: Held,
}

/// The semaphores an [`OwnedSemaphoreGuard`] may hold a permit of. Sealed.
pub trait Permits: sealed::Sealed {}
impl Permits for Semaphore {}
impl Permits for BoundedSemaphore {}

mod sealed {
    pub trait Sealed {
        fn client(&self) -> &crate::Client;
    }
    impl Sealed for super::Semaphore {
        fn client(&self) -> &crate::Client {
            &self.client
        }
    }
    impl Sealed for super::BoundedSemaphore {
        fn client(&self) -> &crate::Client {
            &self.client
        }
    }
}

impl<S: Permits> OwnedSemaphoreGuard<S> {
    /// As [`SemaphoreGuard::is_owner_dead`].
    pub fn is_owner_dead(&self) -> bool {
        self.held.is_owner_dead()
    }

    /// Gives the permit back now and reports the outcome.
    pub fn release(mut self) -> Result<()> {
        self.held.release(sealed::Sealed::client(&*self.semaphore))
    }

    /// The semaphore this permit is of.
    pub fn semaphore(&self) -> &std::sync::Arc<S> {
        &self.semaphore
    }
}

impl<S: Permits> Drop for OwnedSemaphoreGuard<S> {
    fn drop(&mut self) {
        let client = sealed::Sealed::client(&*self.semaphore);
        self.held.release_on_drop(client, "semaphore");
    }
}
