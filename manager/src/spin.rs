//! Adaptive polling for the next request: spin briefly before going to sleep.
//!
//! A client calling in a loop sends its next request a few microseconds after it reads a
//! reply. If the connection's thread goes back to sleep in `epoll_wait`, that request has to
//! wake it, and waking a sleeping thread on an idle CPU costs tens of microseconds on a virtual
//! machine (an inter-processor interrupt through the hypervisor): more than everything else a
//! call costs together. So, after writing its replies, a connection that is busy polls its
//! socket for the next request, without blocking, for a short budget before it sleeps.
//!
//! Polling holds the runtime thread it runs on, so it is kept on a short leash:
//! - a connection polls only while it is *busy*: its latest request came within
//!   [`Spin::rearm_after`] of the replies before it; a client calling once a second never
//!   causes polling;
//! - at most [`Spin::max_spinners`] connections poll at once (one, by default), and never for
//!   longer than [`MAX_BUDGET`];
//! - a polling connection whose client holds nothing (no lock, no permit) gives way, once it
//!   has polled 20 µs (longer than a client calling in a loop takes to send its next request),
//!   as soon as another connection has input waiting
//!   ([`Spinners::others_ready`], a level-triggered epoll watch of every connection's socket):
//!   it stops polling (wasted, so it backs off) and the runtime serves the others. With one
//!   runtime thread (the default on two CPUs, [`crate::config::default_threads`]) nobody else
//!   would be served while it polled: 4 and 16 clients pipelining `dict.get` lost a third of
//!   their rate to polling before this rule. Stopping served them better than yielding and
//!   polling on (4 clients 16 deep 1.19-1.22x Redis's `GET` against 0.90-0.98x in the same
//!   sitting). A connection whose client holds a lock or permit does not give way: its
//!   client's next call is on the critical path of everyone waiting for what it holds, and the
//!   others' calls wait at most the budget (giving way there cost the contended ticket grab at
//!   8 workers a third of its rate);
//! - a connection whose request let go of the last thing its client held (a release) gives
//!   way at once when another connection has input waiting, even in the middle of a batch
//!   of its requests, and lets the others be read before its client's next request (a few
//!   turns of the runtime at most: `session::let_others_in`). Its polling did not give way
//!   while the client held the lock, so another client's `acquire` may have waited unread
//!   meanwhile, and the releaser's next `acquire`, read first, would take the lock straight
//!   back (2 processes in the four-call ticket grab: the lock changed hands on 3-6% of the
//!   tickets). Not counted as wasted polling: the client was quick, another was first;
//! - polling that was wasted makes the connection skip polling for its next 1, 2, 4, ... up to
//!   [`MAX_BACKOFF`] requests; polling that pays off resets the back-off. It was wasted if it
//!   timed out (the client is slow) or if the CPU was wanted by someone else meanwhile: the
//!   thread was descheduled (Linux counts its involuntary context switches; elsewhere a gap of
//!   [`STALL`] between two polls tells), since then polling only delayed whoever wanted the
//!   CPU, perhaps the very client whose request it awaited, on a machine with few CPUs;
//! - a connection with parked calls does not poll, nor one whose request granted
//!   a parked call (a release handing a lock on): the runtime runs the waiter's task next on
//!   the same thread, which polling would hold, and the grant with it;
//! - a connection just handed a parked call's reply (a lock after a wait) polls for its
//!   client's next request: the client wakes to it and calls again at once (its critical
//!   section's first call), and catching that call saves the manager's own wake-up on the
//!   lock's critical path (the contended four-call ticket grab at 8 workers sold 16-18% more
//!   in two sets of six interleaved bench runs; back-off covers a client slow to wake);
//! - shutdown stops polling at once.
//!
//! A budget of zero turns polling off (`agora-manager --spin-us 0`, or `AGORA_SPIN_US=0`); it
//! is the default when the manager may run on one CPU only ([`default_budget`]). The budget's
//! rules (the variable, its default, its cap) are `agora_proto::spin`'s, shared with the
//! clients; this module is how the manager polls within it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The most requests a connection skips polling for after polls that were wasted.
pub const MAX_BACKOFF: u32 = 64;

/// The longest a connection polls, whatever its configuration says: the protocol's cap,
/// re-exported so that the manager's polling reads as one module.
pub use agora_proto::spin::MAX_BUDGET;

/// A gap this long between two polls means the thread was descheduled (a poll takes a
/// microsecond or less).
pub const STALL: Duration = Duration::from_micros(5);

/// How a manager polls for its connections' next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spin {
    /// How long a busy connection polls for its next request before sleeping. Zero: never.
    /// At most [`MAX_BUDGET`] is used.
    pub budget: Duration,
    /// A connection is busy when its latest request came at most this long after its
    /// previous replies were written.
    pub rearm_after: Duration,
    /// Most connections polling at the same time.
    pub max_spinners: usize,
}

impl Default for Spin {
    /// [`default_budget`] of polling, for connections whose requests come within 1 ms of
    /// each other, one connection at a time.
    fn default() -> Spin {
        Spin {
            budget: default_budget(),
            rearm_after: Duration::from_millis(1),
            max_spinners: 1,
        }
    }
}

/// 50 µs (about two wake-ups of an idle CPU on a virtual machine) when this process may run
/// on two CPUs or more; none when it has one CPU to run on (one CPU, or pinned with
/// `taskset`), or when that cannot be told: there the client whose request is awaited can
/// only run once the manager stops polling, so polling would only delay it. The clients'
/// default too: see `agora_proto::spin::default_budget`, which this is.
pub use agora_proto::spin::default_budget;

impl Spin {
    /// No polling at all.
    pub fn off() -> Spin {
        Spin {
            budget: Duration::ZERO,
            ..Spin::default()
        }
    }
}

/// How many times the kernel has taken this thread's CPU for another thread or process
/// (involuntary context switches). Only Linux counts them per thread; elsewhere it is always
/// 0 and only [`STALL`] gaps tell.
pub fn preemptions() -> libc::c_long {
    #[cfg(target_os = "linux")]
    {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage writes a whole `rusage` into the pointer it is given.
        if unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) } == 0 {
            // SAFETY: initialised by the successful call (and zeroed before it).
            return unsafe { usage.assume_init() }.ru_nivcsw;
        }
    }
    0
}

/// The connections polling right now, and which connections have requests waiting: shared
/// by one manager's connections.
#[derive(Debug)]
pub struct Spinners {
    /// How many connections are polling.
    active: AtomicUsize,
    /// Every connection's socket, watched for input (level-triggered), for
    /// [`Spinners::others_ready`]; `None` where it could not be made (then polling never
    /// defers to other connections).
    readiness: Option<OwnedFd>,
}

impl Spinners {
    /// No connection polling yet; the readiness watch made if the system allows.
    pub fn new() -> Spinners {
        Spinners {
            active: AtomicUsize::new(0),
            readiness: readiness_watch(),
        }
    }

    /// Watches a new connection's socket for input.
    pub fn watch(&self, fd: RawFd) {
        if let Some(watch) = &self.readiness {
            let mut event = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: fd as u64,
            };
            // SAFETY: both descriptors are open; the event is a valid epoll_event.
            let added =
                unsafe { libc::epoll_ctl(watch.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
            if added != 0 {
                // Only polling is less fair: other connections do not see this one's input.
                tracing::debug!(
                    error = %std::io::Error::last_os_error(),
                    "a connection's socket is not watched for polling"
                );
            }
        }
    }

    /// Stops watching a connection's socket (before it is closed).
    pub fn unwatch(&self, fd: RawFd) {
        if let Some(watch) = &self.readiness {
            // SAFETY: both descriptors are open; a null event is allowed for EPOLL_CTL_DEL.
            unsafe {
                libc::epoll_ctl(
                    watch.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    fd,
                    std::ptr::null_mut(),
                )
            };
        }
    }

    /// True when a connection other than `own` has input waiting: a polling connection then
    /// gives its thread back, since it holds a runtime thread that other requests wait for.
    pub fn others_ready(&self, own: RawFd) -> bool {
        let Some(watch) = &self.readiness else {
            return false;
        };
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
        // SAFETY: `events` has room for the 4 events asked for; a zero timeout never blocks.
        let n = unsafe { libc::epoll_wait(watch.as_raw_fd(), events.as_mut_ptr(), 4, 0) };
        events
            .iter()
            .take(usize::try_from(n).unwrap_or(0))
            .any(|e| e.u64 != own as u64)
    }
}

impl Default for Spinners {
    /// [`Spinners::new`]: one way to make them, the watch included.
    fn default() -> Spinners {
        Spinners::new()
    }
}

/// An epoll instance to watch connections' sockets in, if one can be made.
fn readiness_watch() -> Option<OwnedFd> {
    // SAFETY: epoll_create1 takes only flags and returns a new descriptor or -1.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    // SAFETY: a non-negative result is a descriptor this process owns and nothing else does.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A place among the polling connections, given back when dropped. It is taken before the
/// replies are written, so that a preemption during the write counts (see [`SpinState`]).
pub struct SpinSlot<'a> {
    spinners: &'a Spinners,
    budget: Duration,
    started: Instant,
    deadline: Instant,
    last_poll: Instant,
    stalled: bool,
    /// [`preemptions`] when the place was taken.
    preempted_before: libc::c_long,
}

impl SpinSlot<'_> {
    /// Starts the clock: polling begins now (the write before it does not count as a stall).
    pub fn start(&mut self) {
        let now = Instant::now();
        self.started = now;
        self.last_poll = now;
        self.deadline = now + self.budget;
    }

    /// Called after each poll that found nothing: whether to poll again (the budget is not
    /// spent). Notes a stall: the poll did not run when it should have.
    pub fn again(&mut self) -> bool {
        let now = Instant::now();
        self.stalled |= now.saturating_duration_since(self.last_poll) > STALL;
        self.last_poll = now;
        now < self.deadline
    }

    /// True when a connection other than `own` has input waiting ([`Spinners::others_ready`]).
    pub fn others_ready(&self, own: RawFd) -> bool {
        self.spinners.others_ready(own)
    }

    /// How long this slot has been polling.
    pub fn polled_for(&self) -> Duration {
        self.last_poll.saturating_duration_since(self.started)
    }

    /// Whether polling paid off, given that it `found` a request: it did unless the thread
    /// was descheduled since the place was taken. Also gives the preemption count it read,
    /// which the next place starts from (one `getrusage` per request, not two).
    pub fn paid_off(&self, found: bool) -> (bool, Option<libc::c_long>) {
        if !found {
            return (false, None);
        }
        let now = preemptions();
        (!self.stalled && now == self.preempted_before, Some(now))
    }
}

impl Drop for SpinSlot<'_> {
    fn drop(&mut self) {
        self.spinners.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection's view: when its replies were last written, whether it is busy, and how
/// many requests it skips polling for after wasted polls.
#[derive(Debug, Default)]
pub struct SpinState {
    written_at: Option<Instant>,
    busy: bool,
    /// [`preemptions`] as read when the latest poll found its request.
    preempted_at_find: Option<libc::c_long>,
    /// Requests left to skip before polling again.
    skip: u32,
    /// What `skip` becomes after the next wasted poll (doubling, up to [`MAX_BACKOFF`]).
    backoff: u32,
}

impl SpinState {
    /// A connection that has not been busy yet.
    pub fn new() -> SpinState {
        SpinState::default()
    }

    /// Notes that replies were written now.
    pub fn wrote(&mut self, now: Instant) {
        self.written_at = Some(now);
    }

    /// Notes that a request arrived now: the connection is busy if it came soon enough after
    /// the replies before it.
    pub fn request_arrived(&mut self, spin: &Spin, now: Instant) {
        self.busy = self
            .written_at
            .is_some_and(|at| now.saturating_duration_since(at) <= spin.rearm_after);
    }

    /// A place to poll in after the replies about to be written, if this connection is busy
    /// and not backing off, polling is on and a place is free. Each call while backing off
    /// counts one skipped request. Reads how often this thread has been preempted so far
    /// (or reuses the count read when the last request was found: a preemption while
    /// answering it says as much about this CPU as one during the write).
    pub fn try_start<'a>(&mut self, spin: &Spin, spinners: &'a Spinners) -> Option<SpinSlot<'a>> {
        let earlier = self.preempted_at_find.take();
        if !self.busy || spin.budget.is_zero() {
            return None;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return None;
        }
        if spinners.active.fetch_add(1, Ordering::Relaxed) >= spin.max_spinners {
            spinners.active.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let now = Instant::now();
        let budget = agora_proto::spin::capped(spin.budget);
        Some(SpinSlot {
            spinners,
            budget,
            started: now,
            deadline: now + budget,
            last_poll: now,
            stalled: false,
            preempted_before: earlier.unwrap_or_else(preemptions),
        })
    }

    /// Notes how polling went: whether it `found` a request, and, if so, whether that paid
    /// off ([`SpinSlot::paid_off`]). If it was wasted, back off.
    pub fn polled(&mut self, slot: &SpinSlot<'_>, found: bool) {
        let (paid_off, preemptions) = slot.paid_off(found);
        self.preempted_at_find = preemptions;
        self.note(paid_off);
    }

    /// Resets the back-off if polling `paid_off`, else backs off further.
    fn note(&mut self, paid_off: bool) {
        if paid_off {
            self.backoff = 0;
        } else {
            self.backoff = (self.backoff * 2).clamp(1, MAX_BACKOFF);
            self.skip = self.backoff;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Polling on, whatever this machine's CPUs.
    fn on() -> Spin {
        Spin {
            budget: Duration::from_micros(50),
            ..Spin::default()
        }
    }

    fn busy(state: &mut SpinState, spin: &Spin) {
        let t0 = Instant::now();
        state.wrote(t0);
        state.request_arrived(spin, t0 + Duration::from_micros(10));
    }

    #[test]
    fn idle_connections_never_poll() {
        let spin = on();
        let spinners = Spinners::default();
        let mut state = SpinState::new();
        assert!(
            state.try_start(&spin, &spinners).is_none(),
            "fresh connection"
        );
        let t0 = Instant::now();
        state.wrote(t0);
        state.request_arrived(&spin, t0 + Duration::from_millis(5));
        assert!(state.try_start(&spin, &spinners).is_none(), "slow client");
    }

    #[test]
    fn busy_connections_poll_one_at_a_time() {
        let spin = on();
        let spinners = Spinners::default();
        let (mut a, mut b) = (SpinState::new(), SpinState::new());
        busy(&mut a, &spin);
        busy(&mut b, &spin);
        let slot = a
            .try_start(&spin, &spinners)
            .expect("a is busy and the place is free");
        assert!(
            b.try_start(&spin, &spinners).is_none(),
            "one spinner at a time"
        );
        drop(slot);
        assert!(
            b.try_start(&spin, &spinners).is_some(),
            "the place was given back"
        );
        assert_eq!(spinners.active.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn wasted_polls_back_off_exponentially_and_a_hit_resets() {
        let spin = on();
        let spinners = Spinners::default();
        let mut state = SpinState::new();
        busy(&mut state, &spin);
        assert!(state.try_start(&spin, &spinners).is_some());
        // Each wasted poll doubles the number of requests skipped before the next one.
        let mut skipped = Vec::new();
        for _ in 0..8 {
            state.note(false);
            let mut n = 0;
            while state.try_start(&spin, &spinners).is_none() {
                n += 1;
            }
            skipped.push(n);
        }
        assert_eq!(skipped, [1, 2, 4, 8, 16, 32, 64, 64]);
        state.note(true);
        assert!(state.try_start(&spin, &spinners).is_some(), "a hit resets");
    }

    #[test]
    fn polling_is_wasted_when_the_thread_stalls_or_was_preempted() {
        let spin = on();
        let spinners = Spinners::default();
        let mut state = SpinState::new();
        busy(&mut state, &spin);
        let mut slot = state.try_start(&spin, &spinners).unwrap();
        assert!(slot.paid_off(true).0, "found at once, no stall");
        assert!(!slot.paid_off(false).0, "found nothing");
        std::thread::sleep(STALL * 4);
        let _ = slot.again();
        assert!(!slot.paid_off(true).0, "a stall makes even a find wasted");
    }

    #[test]
    fn a_find_hands_its_preemption_count_to_the_next_place() {
        let spin = on();
        let spinners = Spinners::default();
        let mut state = SpinState::new();
        busy(&mut state, &spin);
        let mut slot = state.try_start(&spin, &spinners).unwrap();
        slot.start();
        state.polled(&slot, true);
        drop(slot);
        let found_at = state
            .preempted_at_find
            .expect("read when the request was found");
        // (A preemption just now would have made it back off: either way is right here.)
        if let Some(next) = state.try_start(&spin, &spinners) {
            assert_eq!(next.preempted_before, found_at, "reused, not read again");
        }
        assert!(state.preempted_at_find.is_none(), "used once");
    }

    #[test]
    fn others_are_ready_when_another_watched_socket_has_input() {
        let spinners = Spinners::new();
        let (mine, my_client) = std::os::unix::net::UnixStream::pair().unwrap();
        let (theirs, mut their_client) = std::os::unix::net::UnixStream::pair().unwrap();
        spinners.watch(mine.as_raw_fd());
        spinners.watch(theirs.as_raw_fd());
        assert!(!spinners.others_ready(mine.as_raw_fd()), "nobody has input");
        (&my_client).write_all(b"x").unwrap();
        assert!(
            !spinners.others_ready(mine.as_raw_fd()),
            "only the poller's own socket"
        );
        their_client.write_all(b"y").unwrap();
        assert!(spinners.others_ready(mine.as_raw_fd()));
        // Read, it is no longer waiting (the watch is level-triggered, not a history).
        let mut byte = [0u8; 1];
        (&theirs).read_exact(&mut byte).unwrap();
        assert!(!spinners.others_ready(mine.as_raw_fd()));
        their_client.write_all(b"z").unwrap();
        spinners.unwatch(theirs.as_raw_fd());
        assert!(
            !spinners.others_ready(mine.as_raw_fd()),
            "an unwatched socket is not asked"
        );
    }

    #[test]
    fn the_budget_is_capped() {
        let spin = Spin {
            budget: Duration::from_secs(3600),
            ..on()
        };
        let spinners = Spinners::default();
        let mut state = SpinState::new();
        busy(&mut state, &spin);
        let mut slot = state.try_start(&spin, &spinners).unwrap();
        let started = Instant::now();
        while slot.again() {}
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "polled {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_zero_budget_turns_polling_off() {
        let spin = Spin::off();
        let spinners = Spinners::default();
        let mut state = SpinState::new();
        busy(&mut state, &spin);
        assert!(state.try_start(&spin, &spinners).is_none());
    }
}
