//! Helpers shared by the process tests (`queues.rs`, `locks.rs`, `sync_objects.rs`, `spawn.rs`).
//!
//! The tests orchestrate real processes; when the test itself must know that a worker has
//! reached a point (parked in a call), the worker says so through a shared counter, and the
//! test polls that counter. Only the test polls: the objects under test never do.

#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use agora::{Process, Value};

/// The tests of one file fork: one at a time, so that no test forks while another holds a lock.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Polls `cond` every few milliseconds for up to `timeout`; true when it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits (up to 30 s, then fails the test) until the shared counter reaches `n`.
pub fn wait_count(counter: &Value<u64>, n: u64) {
    let reached = wait_until(Duration::from_secs(30), || {
        counter.get().expect("read the counter") >= n
    });
    assert!(reached, "the counter never reached {n}");
}

/// Nanoseconds of the system-wide monotonic clock: comparable between processes.
pub fn mono_ns() -> u64 {
    // SAFETY: an all-zero timespec is valid, and it is a valid out-pointer.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The slack a timed call may take beyond its timeout: generous, for a loaded machine and a
/// debug build. Never a speed claim.
pub const SLACK: Duration = Duration::from_secs(1);

/// Asserts that a call with `timeout` returned after it, within [`SLACK`].
pub fn assert_timed(what: &str, elapsed: Duration, timeout: Duration) {
    assert!(
        elapsed + Duration::from_millis(1) >= timeout,
        "{what} returned after {elapsed:?}, before its timeout of {timeout:?}"
    );
    assert!(
        elapsed <= timeout + SLACK,
        "{what} returned after {elapsed:?}, long after its timeout of {timeout:?}"
    );
}

/// Joins a worker and asserts it succeeded.
pub fn join_ok(worker: &mut Process, what: &str) {
    let status = worker.join().expect("join a worker");
    assert!(status.success(), "{what} failed: {status}");
}

/// Kills a worker with SIGKILL and reaps it: once this returns, its sockets are closed.
pub fn kill(worker: &mut Process) {
    worker.kill().expect("SIGKILL a worker");
    let status = worker.join().expect("reap a killed worker");
    assert!(!status.success(), "the worker had already exited: {status}");
}

/// True while `pid` exists and has not exited (a zombie has exited).
pub fn running(pid: u32) -> bool {
    // SAFETY: signal 0 only checks existence.
    if unsafe { libc::kill(pid as libc::pid_t, 0) } != 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

/// Makes this test process adopt its orphaned descendants (instead of init, which in a
/// container may never reap them), so that it can reap them.
pub fn adopt_orphans() {
    // SAFETY: a prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Kills `pid` (a descendant) and reaps it if it is our child by adoption.
pub fn kill_pid(pid: u32) {
    // SAFETY: kill and waitpid with plain integers and a valid out-pointer.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
        let mut status = 0;
        libc::waitpid(pid as libc::pid_t, &mut status, 0);
    }
}

/// A field of `/proc/<pid>/status` as a number (`VmRSS` in kB, `Threads`).
pub fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// A small deterministic generator, so that each worker has its own interleaving.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
