//! [`FileLock`]: `flock(2)` on a lock file, the tutorials' way to guard a file between
//! processes that share nothing but the file system.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::{Error, Held, Locker, Result};

/// An exclusive `flock(2)` on a lock file, shared by every process (and thread) that names
/// the same path.
///
/// `FileLock::new` only records the path; each acquisition opens the file (creating it if
/// needed) and locks that open file. Because an `flock` belongs to an *open file*, opening
/// anew each time makes the lock exclude other threads of the same process too, and a forked
/// child never shares a lock it did not take itself. The file's contents are never touched.
///
/// Lock a file of its own, not the data file: a store that replaces its data file by
/// renaming a new one over it (as [`JsonFileTickets`](super::JsonFileTickets) does) would
/// leave the lock on the old file.
///
/// # Guarantees
/// - **Reach**: processes on one machine that can open the path (local file systems; `flock`
///   over NFS is emulated with byte-range locks and is not relied on here).
/// - **Fairness**: none. When the holder releases, the kernel wakes the waiters and whichever
///   runs first wins; a waiter can lose any number of times.
/// - **Panics**: the guard is dropped during unwinding, which releases the lock. Nobody is
///   told.
/// - **Process death**: the kernel closes the dead process's files, which releases its lock,
///   even after `SIGKILL`. Nobody is told either: [`Held::is_owner_dead`] is always false.
/// - **Timeouts**: `flock` itself cannot time out. [`Locker::lock_timeout`] first tries
///   without waiting; if the lock is taken it opens the file again and hands that blocking
///   `flock` to a helper thread, while the caller sleeps on a channel with a deadline. If the
///   deadline passes first, the caller returns `None` and the helper stays blocked in the
///   kernel until the lock comes free, then releases it at once. So a timed-out wait costs a
///   thread until the holder lets go, and meanwhile the process counts one more thread (mind
///   this before forking). This was preferred to the other ways of bounding a blocking
///   `flock`: polling with `LOCK_NB` spins or oversleeps; interrupting the call with a timer
///   signal needs a process-wide signal handler, which a library must not install behind the
///   program's back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLock {
    path: PathBuf,
}

/// The guard of a [`FileLock`]: an open file holding the `flock`. Dropping it unlocks and
/// closes the file.
///
/// Do not fork while holding it: the child would share the open file, and the lock would be
/// released only when both processes have closed it.
#[derive(Debug)]
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct FileLockGuard {
    file: Flock<File>,
    path: PathBuf,
}

impl FileLock {
    /// A lock on the file at `path`. Nothing is opened or created until the first acquisition.
    pub fn new(path: impl Into<PathBuf>) -> FileLock {
        FileLock { path: path.into() }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&self) -> Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(|source| self.io("open the lock file", source))
    }

    fn io(&self, op: &'static str, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: self.path.clone(),
            source,
        }
    }

    fn guard(&self, file: Flock<File>) -> FileLockGuard {
        FileLockGuard {
            file,
            path: self.path.clone(),
        }
    }
}

/// Takes the exclusive lock on `file`, blocking, retrying when a signal interrupts the wait.
fn lock_blocking(mut file: File) -> std::result::Result<Flock<File>, Errno> {
    loop {
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(locked) => return Ok(locked),
            Err((back, Errno::EINTR)) => file = back,
            Err((_, errno)) => return Err(errno),
        }
    }
}

impl FileLockGuard {
    /// Releases the lock now, reporting a failure that dropping the guard would hide (closing
    /// the file releases the lock in any case).
    pub fn unlock(self) -> Result<()> {
        let FileLockGuard { file, path } = self;
        match file.unlock() {
            Ok(_file) => Ok(()),
            Err((_still_locked, errno)) => Err(Error::Io {
                op: "unlock",
                path,
                source: errno.into(),
            }),
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Held for FileLockGuard {
    /// Always false: the kernel releases a dead holder's lock without telling anybody.
    fn is_owner_dead(&self) -> bool {
        false
    }
}

impl std::ops::Deref for FileLockGuard {
    type Target = File;

    /// The open lock file (for `fstat` and the like; writing to it is allowed but pointless).
    fn deref(&self) -> &File {
        &self.file
    }
}

impl Locker for FileLock {
    type Guard<'a> = FileLockGuard;

    const NAME: &'static str = "FileLock";

    fn lock(&self) -> Result<FileLockGuard> {
        let locked = lock_blocking(self.open()?).map_err(|e| self.io("lock", e.into()))?;
        Ok(self.guard(locked))
    }

    fn try_lock(&self) -> Result<Option<FileLockGuard>> {
        match Flock::lock(self.open()?, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => Ok(Some(self.guard(locked))),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(self.io("lock", errno.into())),
        }
    }

    fn lock_timeout(&self, timeout: Duration) -> Result<Option<FileLockGuard>> {
        if let Some(guard) = self.try_lock()? {
            return Ok(Some(guard));
        }
        if timeout.is_zero() {
            return Ok(None);
        }
        let file = self.open()?;
        // Room for the one answer, so the helper never blocks on sending it.
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("agora-flock-wait".into())
            .spawn(move || {
                // If the caller has given up, the answer comes back here (or is dropped with
                // the channel) and the lock is released at once.
                if let Err(mpsc::SendError(Ok(_locked))) = tx.send(lock_blocking(file)) {
                    tracing::trace!("flock acquired after its waiter timed out; released");
                }
            })
            .map_err(|e| self.io("start a thread to wait for", e))?;
        match rx.recv_timeout(timeout) {
            Ok(Ok(locked)) => Ok(Some(self.guard(locked))),
            Ok(Err(errno)) => Err(self.io("lock", errno.into())),
            // Dropping `rx` on return drops an answer that arrives now: released at once.
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(self.io(
                "lock",
                std::io::Error::other("the thread waiting for the lock ended without an answer"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    use super::*;

    /// A child process that takes the lock with raw system calls (async-signal-safe, since the
    /// test harness runs threads), says so on a pipe, and sleeps until killed.
    struct Holder {
        pid: libc::pid_t,
    }

    impl Holder {
        fn start(path: &Path) -> Holder {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .unwrap();
            let mut fds = [0; 2];
            // SAFETY: plain system calls; the child makes only async-signal-safe calls and
            // leaves with _exit.
            unsafe {
                assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
                let pid = libc::fork();
                assert!(pid >= 0);
                if pid == 0 {
                    // Keep no copy of another test's files or sockets alive.
                    for fd in 3..1024 {
                        if fd != file.as_raw_fd() && fd != fds[1] {
                            libc::close(fd);
                        }
                    }
                    if libc::flock(file.as_raw_fd(), libc::LOCK_EX) != 0 {
                        libc::_exit(2);
                    }
                    libc::write(fds[1], b"L".as_ptr().cast(), 1);
                    loop {
                        libc::pause();
                    }
                }
                libc::close(fds[1]);
                let mut byte = 0u8;
                assert_eq!(libc::read(fds[0], (&mut byte as *mut u8).cast(), 1), 1);
                libc::close(fds[0]);
                // The parent's copy of the open file goes; the child's keeps the lock.
                drop(file);
                Holder { pid }
            }
        }

        fn kill(self) {
            // SAFETY: our own child, not reaped yet.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }

    fn temp_lock() -> (tempfile::TempDir, FileLock) {
        let dir = tempfile::tempdir().unwrap();
        let lock = FileLock::new(dir.path().join("test.lock"));
        (dir, lock)
    }

    #[test]
    fn excludes_a_second_acquisition_in_the_same_process() {
        let (_dir, lock) = temp_lock();
        let held = lock.lock().unwrap();
        assert!(!held.is_owner_dead());
        assert!(lock.try_lock().unwrap().is_none());
        assert!(lock.lock_timeout(Duration::ZERO).unwrap().is_none());
        held.unlock().unwrap();
        let again = lock.try_lock().unwrap();
        assert!(again.is_some());
        drop(again);
        assert!(lock.try_lock().unwrap().is_some(), "dropping releases");
    }

    #[test]
    fn excludes_threads() {
        let (_dir, lock) = temp_lock();
        let counter = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..100 {
                        let _held = lock.lock().unwrap();
                        let n = counter.load(Ordering::Relaxed);
                        std::thread::yield_now();
                        counter.store(n + 1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(counter.load(Ordering::Relaxed), 400);
    }

    #[test]
    fn times_out_while_another_process_holds_it_and_is_freed_by_its_death() {
        let (_dir, lock) = temp_lock();
        let holder = Holder::start(lock.path());
        assert!(lock.try_lock().unwrap().is_none());

        let start = Instant::now();
        let got = lock.lock_timeout(Duration::from_millis(200)).unwrap();
        let waited = start.elapsed();
        assert!(got.is_none());
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        assert!(waited < Duration::from_millis(1200), "{waited:?}");

        // The holder dies without unlocking: the kernel releases its lock, and both a waiter
        // parked now and the helper left behind by the timed-out wait see it.
        let waiter = std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let start = Instant::now();
                let got = lock.lock_timeout(Duration::from_secs(10)).unwrap();
                (got.is_some(), start.elapsed())
            });
            std::thread::sleep(Duration::from_millis(100));
            holder.kill();
            waiter.join().unwrap()
        });
        assert!(waiter.0, "the lock of a killed holder is released");
        assert!(waiter.1 < Duration::from_secs(5), "{:?}", waiter.1);

        // The abandoned helper takes the lock at some point and lets it go at once.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if lock.try_lock().unwrap().is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the abandoned helper kept the lock"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_timed_wait_gets_the_lock_when_it_is_released() {
        let (_dir, lock) = temp_lock();
        let held = lock.lock().unwrap();
        let (got, waited) = std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let start = Instant::now();
                let got = lock.lock_timeout(Duration::from_secs(10)).unwrap();
                (got.is_some(), start.elapsed())
            });
            std::thread::sleep(Duration::from_millis(100));
            drop(held);
            waiter.join().unwrap()
        });
        assert!(got);
        assert!(waited >= Duration::from_millis(90), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }

    #[test]
    fn an_unopenable_path_is_an_io_error_naming_it() {
        let lock = FileLock::new("/nonexistent-agora-dir/x.lock");
        let err = lock.lock().unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent-agora-dir/x.lock"));
        assert!(lock.try_lock().is_err());
        assert!(lock.lock_timeout(Duration::from_millis(10)).is_err());
    }
}
