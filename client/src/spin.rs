//! Polling for a reply before sleeping in `read`: the client's whole polling policy.
//!
//! A reply usually comes within a few microseconds of its request. A thread that sleeps in
//! `read` and is woken when it arrives pays for the wake-up, and on a virtual machine waking a
//! halted CPU costs tens of microseconds: more than the call itself. So the reading thread
//! first polls the socket without blocking for a short budget, giving its CPU to any other
//! thread or process that wants it between polls ([`pause`]; perhaps the manager, on a
//! machine with few CPUs), and only then sleeps.
//!
//! Everything that decides how the Rust client polls is here, and nowhere else, but for the
//! budget's rules, which it shares with the manager (`agora_proto::spin`):
//!
//! - **the budget**: `AGORA_SPIN_US` microseconds ([`ENV_SPIN_US`]), read once per process
//!   ([`budget`]) by those shared rules: 0 never polls; at most
//!   1 ms whatever the variable says; unset or blank, 50 µs, or none when the process may run
//!   on one CPU only, since the other side can only answer once the poller stops. A value that
//!   is not a whole number is ignored with a warning (where the `agora-manager` program
//!   refuses to start);
//! - **the back-off** ([`Backoff`]): polling that finds nothing in time (a loaded machine, a
//!   call the manager parks) was wasted, and so was polling during which the CPU went
//!   elsewhere (a gap of [`STALL`] between two tries: sleeping would have served as well).
//!   After wasted polling a connection skips polling for its next 1, 2, 4, ... up to
//!   [`MAX_BACKOFF`] replies; polling that pays off resets it.
//!
//! The manager library applies the same numbers to its side; [`budget`] is also the budget
//! `agora::Manager::spawn` gives the manager it starts, so that one variable sets both.
//! The benchmark polls its raw contenders with these very functions (the crate's
//! `bench-internals` feature).

use std::io;
use std::os::fd::RawFd;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use agora_proto::spin::BudgetError;

/// The environment variable that sets the polling budget, in microseconds (`0`: never poll).
/// The `agora-manager` program and the Python client read it too.
pub use agora_proto::spin::ENV_SPIN_US;

/// The most replies a connection reads without polling after polls that found nothing.
pub const MAX_BACKOFF: u32 = 64;

/// A gap this long between two polls means the CPU went to another thread or process
/// meanwhile (a poll takes a microsecond or so).
pub const STALL: Duration = Duration::from_micros(5);

/// The budget `AGORA_SPIN_US` sets, as `agora_proto::spin` parsed it, or, for a value that is
/// not a whole number, the default with a warning: a tuning knob must not make a program fail.
fn budget_or_default(parsed: Result<Duration, BudgetError>) -> Duration {
    parsed.unwrap_or_else(|e| {
        tracing::warn!("ignoring {e}; polling with the default budget");
        agora_proto::spin::default_budget()
    })
}

/// How long this process polls for a reply before it sleeps, from the `AGORA_SPIN_US` it
/// started with (read once, so that every connection polls alike): whole microseconds, `0` to
/// never poll, at most 1 ms. Unset, blank, or not a whole number (logged, then ignored): 50 µs, or
/// none when the process may run on one CPU only (one CPU, or pinned with `taskset`), where
/// the other side could only answer once the poller stopped.
pub fn budget() -> Duration {
    static BUDGET: OnceLock<Duration> = OnceLock::new();
    *BUDGET.get_or_init(|| budget_or_default(agora_proto::spin::from_env()))
}

/// What the client does between two polls: offer its CPU to whoever wants it (the manager,
/// perhaps, on a machine with few CPUs), rather than hold it.
pub fn pause() {
    std::thread::yield_now();
}

/// One connection's back-off: when to poll for the next reply at all.
#[derive(Debug, Default)]
pub struct Backoff {
    /// Replies left to read without polling.
    skip: u32,
    /// What `skip` becomes after the next wasted poll.
    next: u32,
}

impl Backoff {
    /// Whether to poll for this reply (counts a skipped one if not).
    pub fn should_poll(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// Notes whether polling paid off; if not, back off.
    pub fn polled(&mut self, paid_off: bool) {
        if paid_off {
            self.next = 0;
        } else {
            self.next = (self.next * 2).clamp(1, MAX_BACKOFF);
            self.skip = self.next;
        }
    }

    /// The whole policy for one read: when polling is on ([`budget`]) and this connection's
    /// back-off lets it, polls `fd` into `buf` ([`poll_read`] with `pause` between tries) and
    /// notes whether that paid off. Returns how many bytes it read (0: the end of the stream),
    /// or `None` when it did not poll or nothing came: the caller's blocking read takes over.
    pub fn poll_read(&mut self, fd: RawFd, buf: &mut [u8], pause: impl FnMut()) -> Option<usize> {
        let budget = budget();
        if budget.is_zero() || !self.should_poll() {
            return None;
        }
        match poll_read(fd, buf, budget, pause) {
            Polled::Read { len, paid_off } => {
                self.polled(paid_off);
                Some(len)
            }
            Polled::Nothing => {
                self.polled(false);
                None
            }
        }
    }
}

/// What polling for a reply came to.
#[derive(Debug)]
pub enum Polled {
    /// It read something.
    Read {
        /// How many bytes (0: the end of the stream).
        len: usize,
        /// False when the CPU went elsewhere while polling, since then sleeping would have
        /// served as well and polling only delayed whoever wanted the CPU (the manager,
        /// perhaps): feed it to [`Backoff::polled`].
        paid_off: bool,
    },
    /// Nothing came within the budget, or the socket cannot be polled (the caller's blocking
    /// read then reports whatever is wrong with it).
    Nothing,
}

/// Reads from `fd` into `buf` without blocking, trying until something arrives or `budget`
/// has passed, and calling `pause` between tries ([`pause`] is the client's; a server that
/// must answer promptly may prefer [`std::hint::spin_loop`]). A zero budget makes no try at
/// all.
pub fn poll_read(fd: RawFd, buf: &mut [u8], budget: Duration, mut pause: impl FnMut()) -> Polled {
    let mut last = Instant::now();
    let deadline = last + budget;
    let mut stalled = false;
    while deadline > last {
        // SAFETY: `fd` is an open descriptor owned by the caller and `buf` is valid for writes
        // of its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if let Ok(n) = usize::try_from(n) {
            return Polled::Read {
                len: n,
                paid_off: !stalled,
            };
        }
        match io::Error::last_os_error().kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => {}
            // Not a socket any more (a forked child's `/dev/null`), or broken: let the
            // blocking read find out.
            _ => return Polled::Nothing,
        }
        let now = Instant::now();
        stalled |= now.saturating_duration_since(last) > STALL;
        last = now;
        if now < deadline {
            pause();
        }
    }
    Polled::Nothing
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// The parsing itself is `agora_proto::spin`'s, tested there; what is the client's own is
    /// what it does with a bad value.
    #[test]
    fn a_bad_budget_falls_back_to_the_default() {
        let bad = agora_proto::spin::parse_micros("fifty").unwrap_err();
        assert_eq!(
            budget_or_default(Err(bad)),
            agora_proto::spin::default_budget()
        );
        assert_eq!(
            budget_or_default(Ok(Duration::from_micros(30))),
            Duration::from_micros(30)
        );
    }

    #[test]
    fn wasted_polls_back_off_exponentially_and_a_find_resets() {
        let mut backoff = Backoff::default();
        assert!(backoff.should_poll());
        let mut skipped = Vec::new();
        for _ in 0..8 {
            backoff.polled(false);
            let mut n = 0;
            while !backoff.should_poll() {
                n += 1;
            }
            skipped.push(n);
        }
        assert_eq!(skipped, [1, 2, 4, 8, 16, 32, 64, 64]);
        backoff.polled(true);
        assert!(backoff.should_poll());
        backoff.polled(false);
        assert!(!backoff.should_poll(), "back to a skip of one");
        assert!(backoff.should_poll());
    }

    #[test]
    fn a_backoff_poll_reads_what_is_waiting_and_backs_off_on_silence() {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let mut buf = [0u8; 16];
        let mut backoff = Backoff::default();
        ours.write_all(b"hi").unwrap();
        if budget().is_zero() {
            // AGORA_SPIN_US=0, or one CPU: the policy is never to poll.
            assert_eq!(backoff.poll_read(theirs.as_raw_fd(), &mut buf, pause), None);
            return;
        }
        assert_eq!(
            backoff.poll_read(theirs.as_raw_fd(), &mut buf, pause),
            Some(2)
        );
        assert_eq!(&buf[..2], b"hi");
        // Nothing comes: the poll is wasted, so the next read does not poll at all, even
        // though bytes are waiting by then.
        assert_eq!(backoff.poll_read(theirs.as_raw_fd(), &mut buf, pause), None);
        ours.write_all(b"x").unwrap();
        assert_eq!(backoff.poll_read(theirs.as_raw_fd(), &mut buf, pause), None);
        assert_eq!(
            backoff.poll_read(theirs.as_raw_fd(), &mut buf, pause),
            Some(1)
        );
    }

    #[test]
    fn poll_read_finds_waiting_bytes_and_times_out_on_silence() {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let mut buf = [0u8; 16];
        let budget = Duration::from_micros(200);
        let started = Instant::now();
        assert!(matches!(
            poll_read(theirs.as_raw_fd(), &mut buf, budget, pause),
            Polled::Nothing
        ));
        assert!(started.elapsed() >= budget);
        ours.write_all(b"abc").unwrap();
        let Polled::Read { len, .. } = poll_read(theirs.as_raw_fd(), &mut buf, budget, pause)
        else {
            panic!("the bytes were waiting");
        };
        assert_eq!(&buf[..len], b"abc");
        drop(ours);
        let Polled::Read { len, .. } = poll_read(theirs.as_raw_fd(), &mut buf, budget, pause)
        else {
            panic!("the end of the stream was waiting");
        };
        assert_eq!(len, 0, "end of stream is a read of zero bytes");
    }

    #[test]
    fn a_descriptor_that_is_not_a_socket_is_left_to_the_blocking_read() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let mut buf = [0u8; 4];
        assert!(matches!(
            poll_read(file.as_raw_fd(), &mut buf, Duration::from_millis(1), pause),
            Polled::Nothing
        ));
    }
}
