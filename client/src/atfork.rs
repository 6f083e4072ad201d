//! Forked children must not keep the parent's sessions alive.
//!
//! A child made by `fork` inherits a copy of every socket of the parent. The manager sees a
//! session end only when *every* copy of its socket is closed, so a child that never touches
//! the client (an idle helper, a worker that only computes) would keep the parent's session
//! open after the parent died: the locks, permits and barrier places that session held would
//! not be released until that child exited too. Owner-death recovery would silently wait on an
//! unrelated process.
//!
//! So every live connection registers its descriptor here, and a `pthread_atfork` child
//! handler points each registered descriptor at `/dev/null` in the child, right after `fork`
//! returns there. The child's copy of the socket is thereby closed, the parent's session is
//! the parent's alone, and the child's client opens a connection of its own on first use, as it
//! always does after a fork.
//!
//! # Why a fixed array of atomics
//! The handler runs in the child of a possibly multi-threaded parent, where only
//! async-signal-safe code may run: no locks (another thread of the parent may have held one at
//! the instant of the fork), no allocation. Reading a static array of `AtomicI32` is safe
//! there. Registering and unregistering is a compare-and-swap on one slot.
//!
//! # Why `dup2(/dev/null)` and not `close`
//! The inherited `Connection` object still believes it owns the number. Closing it would free
//! the number for reuse by the child's next `open` or `socket`, which the stale object could
//! later close or shut down. Pointing it at `/dev/null` releases the socket and keeps the
//! number taken until the stale object itself closes it (unregistering first).
//!
//! # The reference tables
//! The same `pthread_atfork` registration has a prepare and a parent handler: the prepare
//! handler locks the per-client reference tables (`refs`) in the forking thread and both sides
//! unlock them after the fork, so that a child never finds them locked by a thread it does not
//! have, nor half-updated.
//!
//! # Limits
//! - [`SLOTS`] connections per process are protected; more are logged and left as before (a
//!   process rarely holds more than a few: one per [`Client`](crate::Client)).
//! - A fork in another thread between a socket's creation and its registration, or between
//!   its unregistration and its close, copies it unprotected. The close side is harmless (the
//!   owner shuts the socket down before unregistering it, which ends the session for every
//!   copy); the creation side is a window of a few instructions.
//! - Only `fork(3)` runs the handler; raw `clone`/`vfork` system calls do not (and `exec`
//!   closes the sockets anyway: they are close-on-exec). A child made that way that goes on
//!   to use the client without `exec` would also see its parent's cached process id
//!   ([`current_pid`]) and use the parent's connection.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::Once;

use tracing::{debug, warn};

/// How many live connections one process can have protected.
pub(crate) const SLOTS: usize = 128;

const EMPTY: i32 = -1;

static LIVE: [AtomicI32; SLOTS] = [const { AtomicI32::new(EMPTY) }; SLOTS];

static INSTALL: Once = Once::new();

/// This process's id, once asked for; 0 until then, and again in a forked child (the handler
/// clears it).
static PID: AtomicU32 = AtomicU32::new(0);

/// This process's id, without a system call per ask: every call checks it to notice that it
/// runs in a forked child, and `getpid` costs about as much as a tenth of a round trip on a
/// virtual machine. The fork handler forgets the cached id in the child.
pub(crate) fn current_pid() -> u32 {
    install();
    match PID.load(Ordering::Relaxed) {
        0 => {
            let pid = std::process::id();
            PID.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

/// Registers the descriptor of a live connection (see the module docs).
pub(crate) fn register(fd: RawFd) {
    install();
    if fd < 0 {
        return;
    }
    for slot in &LIVE {
        if slot
            .compare_exchange(EMPTY, fd, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
    debug!(
        fd,
        slots = SLOTS,
        "too many live connections to protect them all from forked children; a child that \
         outlives this process may delay the release of what its session held"
    );
}

/// Unregisters a descriptor. Call it before the descriptor is closed, so that no later fork
/// redirects a number that by then belongs to another file.
pub(crate) fn unregister(fd: RawFd) {
    if fd < 0 {
        return;
    }
    for slot in &LIVE {
        if slot
            .compare_exchange(fd, EMPTY, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

fn install() {
    INSTALL.call_once(|| {
        // SAFETY: the handlers are `extern "C"` functions that never unwind; `in_child` only
        // makes async-signal-safe calls (see its docs).
        let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(in_parent), Some(in_child)) };
        if rc != 0 {
            warn!(
                rc,
                "pthread_atfork failed: forked children will keep copies of this process's \
                 manager connections"
            );
        }
    });
}

/// The prepare handler, in the thread that forks, just before: locks the reference tables of
/// every client (`refs`), so that the child gets them in a state no vanished thread was half-way
/// through changing. Held until the fork is done, on both sides.
extern "C" fn prepare() {
    crate::refs::lock_for_fork();
}

/// The parent handler: the fork is done, the reference tables are unlocked.
extern "C" fn in_parent() {
    crate::refs::unlock_after_fork();
}

/// The child handler: the cached process id is forgotten, every registered descriptor now
/// refers to `/dev/null`, and the reference tables locked by [`prepare`] are unlocked. Only
/// atomic stores and async-signal-safe calls (`open`, `dup2`, `fcntl`, `close`, and the
/// unlock, an atomic store plus at most a futex wake), no allocation, no lock taken.
extern "C" fn in_child() {
    // The child's id is asked for afresh on its first use.
    PID.store(0, Ordering::Relaxed);
    crate::refs::unlock_after_fork();
    // SAFETY: a valid NUL-terminated path; the descriptor is closed below.
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if null < 0 {
        // Nothing safe to do instead: closing would free numbers stale owners still use.
        return;
    }
    for slot in &LIVE {
        let fd = slot.load(Ordering::Acquire);
        if fd < 0 || fd == null {
            continue;
        }
        // SAFETY: plain descriptor numbers; dup2 replaces `fd` atomically. The socket was
        // close-on-exec; the replacement is made so too.
        unsafe {
            if libc::dup2(null, fd) >= 0 {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
    // SAFETY: `null` was opened above and is used by nobody else.
    unsafe { libc::close(null) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// True when `fd` refers to a character device (`/dev/null`), not a socket.
    fn is_char_device(fd: RawFd) -> bool {
        // SAFETY: an all-zero stat is a valid out-buffer for fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a valid out-pointer.
        let rc = unsafe { libc::fstat(fd, &mut st) };
        rc == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFCHR
    }

    #[test]
    fn slots_are_reused_and_unknown_numbers_ignored() {
        register(-5);
        unregister(-5);
        unregister(1_000_000);
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        register(fd);
        assert!(LIVE.iter().any(|s| s.load(Ordering::Relaxed) == fd));
        unregister(fd);
        assert!(!LIVE.iter().any(|s| s.load(Ordering::Relaxed) == fd));
    }

    /// In a forked child a registered socket is `/dev/null`; an unregistered one is not
    /// touched; in the parent nothing changes. When the child exits the peer sees the socket
    /// still open (the parent's copy), and when the parent closes its copy the peer sees the
    /// end even though the child is still alive.
    #[test]
    fn a_forked_child_keeps_no_copy_of_registered_sockets() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (other, _other_peer) = UnixStream::pair().unwrap();
        register(ours.as_raw_fd());
        let (ours_fd, other_fd) = (ours.as_raw_fd(), other.as_raw_fd());
        // SAFETY: the child only calls async-signal-safe functions and _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = is_char_device(ours_fd) && !is_char_device(other_fd);
            // Stay alive a little while the parent closes its copy.
            // SAFETY: async-signal-safe calls only.
            unsafe {
                libc::usleep(300_000);
                libc::_exit(if ok { 0 } else { 1 });
            }
        }
        assert!(!is_char_device(ours_fd), "the parent's socket is untouched");
        unregister(ours_fd);
        drop(ours);
        // The child still runs, yet the peer sees end-of-file: no copy is left in the child.
        theirs
            .set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 1];
        let n = std::io::Read::read(&mut &theirs, &mut buf);
        assert!(matches!(n, Ok(0)), "expected end-of-file, got {n:?}");
        let mut status = 0;
        // SAFETY: a valid out-pointer; the child is ours.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "in the child the registered socket was not /dev/null ({status})"
        );
    }

    #[test]
    fn a_forked_child_asks_for_its_own_process_id() {
        let parent = current_pid();
        assert_eq!(parent, std::process::id());
        // SAFETY: the child only reads atomics, calls getpid and _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let forgotten = PID.load(Ordering::Relaxed) == 0;
            let fresh = current_pid();
            let ok = forgotten && fresh == std::process::id() && fresh != parent;
            // SAFETY: async-signal-safe.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: a valid out-pointer; the child is ours.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child went on with its parent's process id ({status})"
        );
        assert_eq!(current_pid(), parent, "the parent's cache is untouched");
    }
}
