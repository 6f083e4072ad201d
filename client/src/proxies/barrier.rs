//! [`Barrier`]: a meeting point for a fixed number of processes.

use std::marker::PhantomData;
use std::time::Duration;

use crate::client::Client;
use crate::command::Target;
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
    id: Target,
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
        self.client.run(self.wait_cmd())
    }

    /// [`Barrier::wait`] as a command (`barrier.wait`).
    pub fn wait_cmd(&self) -> Cmd<usize> {
        Cmd::object(self.id, "barrier.wait", decoders::count, |_| Ok(()))
    }

    /// As [`wait`](Barrier::wait), for at most `timeout` instead of the barrier's default:
    /// `Some(index)` when every party arrived, `None` when they did not all meet.
    ///
    /// A barrier's timeout does not pass quietly: as in Python, it breaks the barrier for
    /// every party, and the manager answers each of them alike, so `None` stands for every way
    /// the meeting can fail, of which this call's own timeout is one: the barrier was already
    /// broken, or broke while this party waited (a party's timeout, [`abort`](Barrier::abort),
    /// [`reset`](Barrier::reset), a waiting party that died). [`wait`](Barrier::wait) reports
    /// the same as `BrokenBarrierError`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<usize>> {
        self.client.run(self.wait_timeout_cmd(timeout))
    }

    /// [`Barrier::wait_timeout`] as a command (`barrier.wait`).
    pub fn wait_timeout_cmd(&self, wait: Duration) -> Cmd<Option<usize>> {
        Cmd::object(self.id, "barrier.wait", decoders::unless_broken, move |a| {
            timeout(a, Some(wait));
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
