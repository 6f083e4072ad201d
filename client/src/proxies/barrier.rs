//! [`Barrier`]: a meeting point for a fixed number of processes.

use std::marker::PhantomData;
use std::time::Duration;

use crate::client::Client;
use crate::command::{Args, Cmd};
use crate::error::Result;

use super::wait::{decoders, timeout};

/// A barrier shared by processes, like Python's `multiprocessing.Manager().Barrier(parties,
/// timeout=...)`: each of `parties` callers of [`wait`](Barrier::wait) blocks until all have
/// called it, then all go on.
///
/// ```no_run
/// # let client = agora_client::Client::from_env()?;
/// use agora_client::ErrorName;
/// let phase = client.barrier_named("phase", 4, Some(std::time::Duration::from_secs(30)))?;
/// match phase.wait() {
///     Ok(0) => println!("first to arrive"),
///     Ok(_) => {}
///     Err(e) if e.is(ErrorName::BrokenBarrierError) => eprintln!("a party gave up or died"),
///     Err(e) => return Err(e),
/// }
/// # Ok::<(), agora_client::Error>(())
/// ```
///
/// # Broken barriers
/// As in Python, the barrier *breaks* when a waiting party's timeout passes, when
/// [`abort`](Barrier::abort) is called, or (beyond Python) when a waiting party's process dies
/// or exits: the others would otherwise wait for it forever. Every waiter, and every later
/// `wait`, then fails with `BrokenBarrierError` (an [`Error::Remote`](crate::Error::Remote):
/// test it with `e.is(ErrorName::BrokenBarrierError)`) until [`reset`](Barrier::reset).
///
/// # Differences from Python
/// There is no `action` callable (the manager cannot run client code): let the party that
/// gets index 0 do the work, which Python's documentation suggests too. The index is the
/// party's arrival order (0 for the first), as in CPython.
pub struct Barrier {
    client: Client,
    id: u64,
    marker: PhantomData<()>,
}

super::proxy_common!(Barrier[], "barrier");

impl Client {
    /// Creates a new barrier for `parties` callers. `timeout` is the default for each
    /// [`Barrier::wait`]; `None` waits without limit. Fails with `ValueError` when `parties`
    /// is 0.
    pub fn barrier(&self, parties: usize, timeout: Option<Duration>) -> Result<Barrier> {
        self.create_barrier(None, parties, timeout)
    }

    /// The barrier called `name`, created as [`Client::barrier`] does if there is none
    /// (get-or-create: an existing barrier keeps its parties and timeout).
    pub fn barrier_named(
        &self,
        name: &str,
        parties: usize,
        timeout: Option<Duration>,
    ) -> Result<Barrier> {
        self.create_barrier(Some(name), parties, timeout)
    }

    fn create_barrier(
        &self,
        name: Option<&str>,
        parties: usize,
        wait: Option<Duration>,
    ) -> Result<Barrier> {
        let mut args = Args::default();
        args.str("barrier").opt_str(name).uint(parties as u64);
        if wait.is_some() {
            timeout(&mut args, wait);
        }
        Ok(Barrier::from_id(self, self.create_with(args)?))
    }
}

impl Barrier {
    /// Waits until every party has called `wait`, for at most the barrier's default timeout.
    /// Returns this party's arrival index, 0 to `parties - 1`. Fails with
    /// `BrokenBarrierError` if the barrier is or becomes broken (see the type's docs).
    pub fn wait(&self) -> Result<usize> {
        self.client.run(self.wait_cmd(None))
    }

    /// As [`wait`](Barrier::wait), for at most `timeout`; when it passes the barrier breaks
    /// and this call, like every other waiter's, fails with `BrokenBarrierError`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.client.run(self.wait_cmd(Some(timeout)))
    }

    /// [`Barrier::wait`] (`None`: the barrier's default timeout) or [`Barrier::wait_timeout`]
    /// as a command (`barrier.wait`).
    pub fn wait_cmd(&self, wait: Option<Duration>) -> Cmd<usize> {
        Cmd::object(self.id, "barrier.wait", decoders::count, move |a| {
            if wait.is_some() {
                timeout(a, wait);
            }
            Ok(())
        })
    }

    /// Makes the barrier whole and empty again: current waiters fail with
    /// `BrokenBarrierError`.
    pub fn reset(&self) -> Result<()> {
        self.client.run(self.reset_cmd())
    }

    /// [`Barrier::reset`] as a command (`barrier.reset`).
    pub fn reset_cmd(&self) -> Cmd<()> {
        Cmd::object(self.id, "barrier.reset", decoders::unit, |_| Ok(()))
    }

    /// Breaks the barrier: current and later waiters fail with `BrokenBarrierError` until
    /// [`reset`](Barrier::reset).
    pub fn abort(&self) -> Result<()> {
        self.client.run(self.abort_cmd())
    }

    /// [`Barrier::abort`] as a command (`barrier.abort`).
    pub fn abort_cmd(&self) -> Cmd<()> {
        Cmd::object(self.id, "barrier.abort", decoders::unit, |_| Ok(()))
    }

    /// The number of parties the barrier waits for.
    pub fn parties(&self) -> Result<usize> {
        self.client.run(self.parties_cmd())
    }

    /// [`Barrier::parties`] as a command (`barrier.parties`).
    pub fn parties_cmd(&self) -> Cmd<usize> {
        Cmd::object(self.id, "barrier.parties", decoders::count, |_| Ok(()))
    }

    /// The number of parties waiting now.
    pub fn n_waiting(&self) -> Result<usize> {
        self.client.run(self.n_waiting_cmd())
    }

    /// [`Barrier::n_waiting`] as a command (`barrier.n_waiting`).
    pub fn n_waiting_cmd(&self) -> Cmd<usize> {
        Cmd::object(self.id, "barrier.n_waiting", decoders::count, |_| Ok(()))
    }

    /// True when the barrier is broken (Python's `broken` attribute).
    pub fn is_broken(&self) -> Result<bool> {
        self.client.run(self.is_broken_cmd())
    }

    /// [`Barrier::is_broken`] as a command (`barrier.broken`).
    pub fn is_broken_cmd(&self) -> Cmd<bool> {
        Cmd::object(self.id, "barrier.broken", decoders::flag, |_| Ok(()))
    }
}
