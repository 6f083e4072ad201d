//! Polling for a reply before sleeping in `read`.
//!
//! A reply usually comes within a few microseconds of its request. A thread that sleeps in
//! `read` and is woken when it arrives pays for the wake-up, and on a virtual machine waking a
//! halted CPU costs tens of microseconds: more than the call itself. So the reading thread
//! first polls the socket without blocking for a short budget, giving its CPU to any other
//! thread or process that wants it between polls (perhaps the manager, on a machine with few
//! CPUs), and only then sleeps.
//!
//! Polling that finds nothing in time (a loaded machine, a call the manager parks) was
//! wasted, and so was polling during which the CPU went elsewhere (a gap of [`STALL`] between
//! two tries: the manager or another process needed this CPU, so sleeping would have served
//! as well). After wasted polling, a connection skips polling for its next 1, 2, 4, ... up to
//! [`MAX_BACKOFF`] replies; polling that pays off resets the back-off. Calls the manager may
//! park keep a back-off of their own.
//!
//! The budget is `AGORA_SPIN_US` microseconds (0 never polls; at most [`MAX_BUDGET`]), read
//! once per process; by default 50, or 0 when the process may run on one CPU only
//! ([`default_budget`]). The manager reads the same variable.
//!
//! The module is public so that code measured against agora (a benchmark's raw round trip)
//! can poll exactly as the client does: same budget, same back-off, same stall test.

use std::io;
use std::os::fd::RawFd;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The longest a call polls, whatever `AGORA_SPIN_US` says (as in the manager).
pub const MAX_BUDGET: Duration = Duration::from_millis(1);

/// The most replies a connection reads without polling after polls that found nothing.
pub const MAX_BACKOFF: u32 = 64;

/// The polling budget when `AGORA_SPIN_US` is not set: 50 µs, or none when this process may
/// run on one CPU only (one CPU, or pinned with `taskset`), since a manager started from it
/// shares that CPU and cannot answer while this thread polls.
pub fn default_budget() -> Duration {
    match std::thread::available_parallelism() {
        Ok(cpus) if cpus.get() < 2 => Duration::ZERO,
        _ => Duration::from_micros(50),
    }
}

/// This process's polling budget.
pub fn budget() -> Duration {
    static BUDGET: OnceLock<Duration> = OnceLock::new();
    *BUDGET.get_or_init(|| match std::env::var("AGORA_SPIN_US") {
        Ok(raw) => match raw.trim().parse() {
            Ok(micros) => Duration::from_micros(micros).min(MAX_BUDGET),
            Err(_) => {
                tracing::warn!(
                    value = %raw,
                    "ignoring AGORA_SPIN_US: not a whole number of microseconds"
                );
                default_budget()
            }
        },
        Err(_) => default_budget(),
    })
}

/// One connection's back-off.
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
}

/// A gap this long between two polls means the CPU went to another thread or process
/// meanwhile (a poll takes a microsecond or so).
pub const STALL: Duration = Duration::from_micros(5);

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
/// has passed, and giving the CPU to whoever wants it between tries. A zero budget makes no
/// try at all.
pub fn poll_read(fd: RawFd, buf: &mut [u8], budget: Duration) -> Polled {
    poll_read_with(fd, buf, budget, std::thread::yield_now)
}

/// As [`poll_read`], calling `pause` between tries instead of yielding the CPU (a server that
/// must answer promptly may prefer [`std::hint::spin_loop`]).
pub fn poll_read_with(
    fd: RawFd,
    buf: &mut [u8],
    budget: Duration,
    mut pause: impl FnMut(),
) -> Polled {
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
    fn poll_read_finds_waiting_bytes_and_times_out_on_silence() {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let mut buf = [0u8; 16];
        let budget = Duration::from_micros(200);
        let started = Instant::now();
        assert!(matches!(
            poll_read(theirs.as_raw_fd(), &mut buf, budget),
            Polled::Nothing
        ));
        assert!(started.elapsed() >= budget);
        ours.write_all(b"abc").unwrap();
        let Polled::Read { len, .. } = poll_read(theirs.as_raw_fd(), &mut buf, budget) else {
            panic!("the bytes were waiting");
        };
        assert_eq!(&buf[..len], b"abc");
        drop(ours);
        let Polled::Read { len, .. } = poll_read(theirs.as_raw_fd(), &mut buf, budget) else {
            panic!("the end of the stream was waiting");
        };
        assert_eq!(len, 0, "end of stream is a read of zero bytes");
    }

    #[test]
    fn a_descriptor_that_is_not_a_socket_is_left_to_the_blocking_read() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let mut buf = [0u8; 4];
        assert!(matches!(
            poll_read(file.as_raw_fd(), &mut buf, Duration::from_millis(1)),
            Polled::Nothing
        ));
    }
}
