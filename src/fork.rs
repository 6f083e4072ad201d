//! What every `fork` in this crate shares: the registry of lifeline write ends, the discipline
//! around `fork(2)`, and the descriptor hygiene a child needs.
//!
//! # Why a registry
//! A manager started by [`Manager::spawn`](crate::Manager::spawn) lives as long as somebody
//! holds the write end of its lifeline pipe. Only the process that spawned the manager may hold
//! it: a worker forked later ([`Process::spawn`](crate::Process::spawn)) or another manager
//! forked later would otherwise keep the manager alive after the parent died. `exec` already
//! drops the write end (it is `O_CLOEXEC`); a plain `fork` does not, so every fork done here
//! disowns the registered write ends in the child.
//!
//! # Why the lock is held across `fork`
//! Creating a lifeline and registering it happen under the registry lock, and forks take the
//! same lock, so no fork can copy a write end that is not registered yet. The child inherits
//! the lock in its locked state and releases it (a futex word; no owner thread is recorded),
//! so a child may itself spawn managers and workers.
//!
//! # Why "disown" is `dup3(/dev/null)` rather than `close`
//! Closing a descriptor in the child frees its number for reuse, while objects copied from the
//! parent (a lifeline `OwnedFd`, a log file writer, a runtime's wake-up pipe) still believe they
//! own that number and may later write to it or close it. Pointing the number at `/dev/null`
//! instead releases the pipe or socket it held and keeps the number taken, so such stale owners
//! write into nothing and close nothing that matters.
//!
//! # Why a socket is disowned to a socket that talks to itself
//! A library may keep a socket of its own in a process-wide static and expect it to work in a
//! forked child: tokio's signal handling keeps a socket pair there, the first runtime of the
//! process creates it, and every later runtime registers it with its `epoll` and reads from it
//! what its signal handler writes into it. `/dev/null` cannot be registered with `epoll`
//! (`EPERM`), so a manager forked from a program running tokio, pointed at `/dev/null`, could
//! not build its own runtime. So the manager child points every inherited *socket* at
//! [`open_loopback`]'s datagram socket connected to itself instead: it can be polled, what is
//! written into any of the numbers is read back from any of them (a signal handler's wake-up
//! reaches the runtime that waits for it), and it is the child's own, not shared with the
//! parent.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The write ends of the lifelines of the managers this process spawned and still owns.
static LIFELINES: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

/// Locks the registry. Hold the guard across `fork` (see the module docs).
pub(crate) fn lock() -> MutexGuard<'static, Vec<RawFd>> {
    // The registry is a plain list of numbers: a panic elsewhere cannot leave it inconsistent.
    LIFELINES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Unregisters and closes a lifeline write end, which tells its manager to stop.
pub(crate) fn release(fd: OwnedFd) {
    let mut registry = lock();
    let raw = fd.as_raw_fd();
    registry.retain(|&registered| registered != raw);
    agora_client::fork_guard::unprotect(raw);
    // Close while still holding the lock, so no fork copies a number about to be reused.
    drop(fd);
    drop(registry);
}

/// Returns the calling thread's `errno` as an [`io::Error`].
pub(crate) fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// Flushes the standard output buffer before a fork, so the child does not inherit (and later
/// print a second time) text the parent has buffered but not yet written.
pub(crate) fn flush_stdout() {
    use std::io::Write;
    if let Err(e) = io::stdout().flush() {
        tracing::debug!(error = %e, "could not flush stdout before fork");
    }
}

/// Logs a warning, once per process, when `what` is about to fork a program that runs more
/// than one thread (see the `process` and `manager` module docs for why that is hazardous).
pub(crate) fn warn_if_threaded(what: &'static str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let threads = thread_count();
    if threads > 1 && !WARNED.swap(true, Ordering::Relaxed) {
        let text = format!(
            "{what} forks a program that already runs {threads} threads; if the child hangs \
             or fails, fork before starting threads or start the process by exec instead"
        );
        if tracing::dispatcher::has_been_set() {
            tracing::warn!(threads, "{text}");
        } else {
            // Nobody would see a tracing event: a warning that matters goes to stderr.
            eprintln!("agora: warning: {text}");
        }
    }
}

/// The number of threads of this process, from `/proc/self/status` (1 when unknown).
fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(1)
}

/// `fork(2)`: `Ok(0)` in the child, `Ok(pid)` in the parent.
///
/// # Safety
/// The child of a multi-threaded process may only call async-signal-safe functions until it
/// execs or exits; callers document that their child code is meant for processes that have not
/// started threads, and never return into the caller's code in the child.
pub(crate) unsafe fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: forwarded to the caller.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        Err(last_error())
    } else {
        Ok(pid)
    }
}

/// Opens `/dev/null` for reading and writing, close-on-exec.
pub(crate) fn open_dev_null() -> io::Result<RawFd> {
    const DEV_NULL: &CStr = c"/dev/null";
    // SAFETY: a valid NUL-terminated path; the returned descriptor is owned by the caller.
    let fd = unsafe { libc::open(DEV_NULL.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        Err(last_error())
    } else {
        Ok(fd)
    }
}

/// A non-blocking Unix datagram socket connected to itself, close-on-exec: what is written
/// into it is read back from it (see the module docs). Linux's abstract namespace gives it an
/// address of its own, without a file.
pub(crate) fn open_loopback() -> io::Result<RawFd> {
    // SAFETY: plain system calls on a socket created here; the address structures are
    // zero-initialised and sized as the calls expect.
    unsafe {
        let fd = libc::socket(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(last_error());
        }
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        // An address of the family alone asks the kernel to choose a unique abstract name.
        let family_only = std::mem::size_of::<libc::sa_family_t>() as libc::socklen_t;
        let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        let addr_ptr = (&raw mut addr).cast::<libc::sockaddr>();
        if libc::bind(fd, addr_ptr, family_only) != 0
            || libc::getsockname(fd, addr_ptr, &mut len) != 0
            || libc::connect(fd, addr_ptr, len) != 0
        {
            let e = last_error();
            libc::close(fd);
            return Err(e);
        }
        Ok(fd)
    }
}

/// True when `fd` is a socket.
pub(crate) fn is_socket(fd: RawFd) -> bool {
    // SAFETY: an all-zero stat is a valid out-buffer for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer.
    let rc = unsafe { libc::fstat(fd, &mut st) };
    rc == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
}

/// Points descriptor `fd` at the open file `null` (see the module docs), keeping it
/// close-on-exec unless it is one of the standard streams.
pub(crate) fn disown(null: RawFd, fd: RawFd) -> io::Result<()> {
    if fd == null {
        return Ok(());
    }
    let flags = if fd > 2 { libc::O_CLOEXEC } else { 0 };
    loop {
        // SAFETY: plain descriptor numbers; dup3 replaces `fd` atomically.
        if unsafe { libc::dup3(null, fd, flags) } >= 0 {
            return Ok(());
        }
        let e = last_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// True when `fd` is an open descriptor of this process.
fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// The descriptors open in this process above the standard streams, as far as they can be
/// listed: `/proc/self/fd` where it is mounted, else a probe of every number below the
/// descriptor limit (capped, so that a huge limit does not cost seconds).
pub(crate) fn open_descriptors() -> Vec<RawFd> {
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        let listed: Vec<RawFd> = entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd > 2)
            .collect();
        // The directory's own descriptor is in the list and is closed by now: filter it out.
        return listed.into_iter().filter(|&fd| is_open(fd)).collect();
    }
    // SAFETY: sysconf has no preconditions.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    let max = if max <= 0 { 1024 } else { max.min(65_536) } as RawFd;
    (3..max).filter(|&fd| is_open(fd)).collect()
}

/// Writes `message` straight to file descriptor 2, bypassing Rust's stderr lock and the test
/// harness's output capture: a forked child may have inherited that lock held by a thread that
/// does not exist in the child, and captured output would be lost with the child's memory.
pub(crate) fn write_stderr(message: &str) {
    let mut rest = message.as_bytes();
    while !rest.is_empty() {
        // SAFETY: the pointer and length describe `rest`, which outlives the call.
        let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        if n > 0 {
            rest = &rest[n as usize..];
        } else if n < 0 && last_error().kind() == io::ErrorKind::Interrupted {
            continue;
        } else {
            return;
        }
    }
}

/// Ends the current (child) process at once: no destructors, no `atexit` handlers, no unwinding
/// into the code that called `fork` (which belongs to the parent's story, not the child's).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// `waitpid(pid)`: the child's status once it has exited (`None` while it runs when `block`
/// is false). Reaps the child: its pid may be reused afterwards, so never signal it again.
pub(crate) fn wait_pid(pid: libc::pid_t, block: bool) -> io::Result<Option<ExitStatus>> {
    let options = if block { 0 } else { libc::WNOHANG };
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let r = unsafe { libc::waitpid(pid, &mut status, options) };
        if r == pid {
            return Ok(Some(ExitStatus::from_raw(status)));
        }
        if r == 0 {
            return Ok(None);
        }
        let e = last_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Waits up to `timeout` for child `pid` to exit, polling with a short, growing sleep (a child
/// that exits at once is noticed within a millisecond; a slow one costs a few wake-ups a second).
pub(crate) fn wait_pid_timeout(
    pid: libc::pid_t,
    timeout: Duration,
) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(200);
    loop {
        if let Some(status) = wait_pid(pid, false)? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Sends `signal` to `pid`. The caller guarantees `pid` is its own child and not yet reaped,
/// so the number cannot belong to an unrelated process.
pub(crate) fn send_signal(pid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(last_error())
    }
}
