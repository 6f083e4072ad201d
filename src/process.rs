//! Worker processes, in the spirit of Python's `Process(target=..., args=...).start()`.
//!
//! Two ways to start one:
//!
//! - [`Process::spawn`] forks the current program and runs a closure in the child. Proxies the
//!   closure captures keep working there: the client notices it runs under a new pid and opens
//!   its own connection. **Only for programs that have not started threads yet** (see below).
//! - [`Process::start`] runs a program from a [`Command`]; build it with
//!   [`Manager::command`](crate::Manager::command) so the program finds the manager through
//!   [`Client::from_env`](crate::Client::from_env). This works from any program, threaded or not.
//!
//! Either way you get a [`Process`]: [`join`](Process::join) returns the exit status,
//! [`is_alive`](Process::is_alive), [`pid`](Process::pid), [`terminate`](Process::terminate)
//! and [`kill`](Process::kill) do what their Python namesakes do.
//!
//! # Forking and threads
//! `fork` copies only the thread that calls it. If other threads exist, any lock one of them
//! held at that instant (inside the allocator of a non-glibc libc, the standard output lock, a
//! logging framework, a runtime's internal state) stays locked forever in the child, and the
//! child can hang the first time it touches it. So call [`Process::spawn`] from a program that
//! is still single-threaded: before starting a tokio runtime, a thread pool, or anything else
//! that spawns threads. A program that already has threads should start workers as programs
//! with [`Process::start`] instead.
//!
//! The agora client's own background state is fork-aware, which is why proxies survive the fork.
//!
//! # Objects the child inherits
//! An unnamed object lives while something holds it (see the client's Lifetime docs), and a
//! child's proxies hold nothing until the child's own connection adopts their objects, on its
//! first call. So [`Process::spawn`] first exports, on every client of the program, every
//! object it holds proxies of (one pipelined round trip per client): the manager keeps each
//! one for the child until the child adopts it, and the parent may drop its proxies the moment
//! `spawn` returns. A handoff the child never takes (it makes no call) ends after the
//! manager's `--handoff-seconds` (300 by default).

use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use crate::fork;

/// The exit code of a worker whose closure panicked, the same code a Rust program that panics
/// in `main` exits with.
pub const PANIC_EXIT_CODE: i32 = 101;

/// A worker process: forked by [`Process::spawn`] or started from a program by
/// [`Process::start`].
///
/// ```
/// use agora::Process;
///
/// let mut worker = Process::spawn(|| std::process::exit(3))?;
/// assert_eq!(worker.join()?.code(), Some(3));
/// assert!(!worker.is_alive());
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Drop
/// Dropping a `Process` neither kills nor waits for it: a worker outlives its handle, as a
/// `std::process::Child` does. If it has already exited it is reaped then, so no zombie is left.
/// A worker still running when its handle is dropped is reaped by nobody until the program
/// ends; [`join`](Process::join) it (or [`kill`](Process::kill) then `join`) to avoid that.
pub struct Process {
    inner: Inner,
}

enum Inner {
    /// A child made by `fork`; `status` is set once it has been reaped.
    Forked {
        pid: libc::pid_t,
        status: Option<ExitStatus>,
    },
    /// A child started by `std::process::Command`, which keeps its own status.
    Program(Child),
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, status) = match &self.inner {
            Inner::Forked { status, .. } => ("forked", *status),
            Inner::Program(_) => ("program", None),
        };
        f.debug_struct("Process")
            .field("pid", &self.pid())
            .field("kind", &kind)
            .field("status", &status)
            .finish()
    }
}

impl Process {
    /// Forks the current program and runs `f` in the child, which then exits with 0, or with
    /// [`PANIC_EXIT_CODE`] (101) if `f` panics, after printing the panic message. `f` may end
    /// the child itself with `std::process::exit(code)`.
    ///
    /// The child is a copy of the parent at the time of the call: `f` may borrow the parent's
    /// data, and proxies it uses open their own connection to the manager. The child never
    /// returns into the caller's code and runs no destructors of the parent's values (it leaves
    /// with `_exit`), so nothing is dropped or flushed twice; only standard output is flushed
    /// before the fork and again when `f` returns.
    ///
    /// The child does not keep any manager of this process alive: when the parent dies, its
    /// managers stop even if workers still run.
    ///
    /// Before forking, the objects of every live proxy of the program are exported to the
    /// child (one round trip per client; see the [module docs](self)), so the parent may drop
    /// the proxies it gave `f` at once. A manager that cannot be reached then is logged and
    /// the fork goes ahead: the child's calls to it would fail anyway.
    ///
    /// **For programs that have not started threads yet** (see the [module docs](self)). In a
    /// multi-threaded program use [`Process::start`] with a program instead.
    ///
    /// # Errors
    /// The error of `fork(2)` (typically `EAGAIN`: too many processes).
    pub fn spawn<F: FnOnce()>(f: F) -> io::Result<Process> {
        Process::fork_with(|| {
            f();
            0
        })
    }

    /// As [`spawn`](Process::spawn), for a closure that can fail, so that it may use `?` on
    /// proxy operations: `Ok(())` exits with 0; `Err(e)` prints `Error: {e:?}` to standard
    /// error and exits with 1, as `main` returning an error does.
    ///
    /// # Errors
    /// The error of `fork(2)`.
    pub fn spawn_fallible<F, E>(f: F) -> io::Result<Process>
    where
        F: FnOnce() -> Result<(), E>,
        E: fmt::Debug,
    {
        Process::fork_with(|| match f() {
            Ok(()) => 0,
            Err(e) => {
                fork::write_stderr(&format!("Error: {e:?}\n"));
                1
            }
        })
    }

    /// Forks; the child runs `f` and exits with the code it returns.
    fn fork_with<F: FnOnce() -> i32>(f: F) -> io::Result<Process> {
        fork::warn_if_threaded("Process::spawn");
        // The child's proxies must not die with the parent's before the child adopts them.
        if let Err(e) = agora_client::export_for_fork() {
            tracing::warn!(
                error = %e,
                "could not hand the objects of live proxies over to a forked worker; objects \
                 the parent drops may be gone before the worker uses them"
            );
        }
        fork::flush_stdout();
        let mut lifelines = fork::lock();
        // SAFETY: the child runs `run_child`, which never returns; the callers document that
        // this is for programs without other threads.
        let pid = unsafe { fork::fork() }?;
        if pid == 0 {
            let inherited = std::mem::take(&mut *lifelines);
            drop(lifelines);
            run_child(inherited, f);
        }
        drop(lifelines);
        tracing::debug!(pid, "forked a worker process");
        Ok(Process {
            inner: Inner::Forked { pid, status: None },
        })
    }

    /// Starts a worker from a program. Pass [`Manager::command`](crate::Manager::command) to
    /// give the program the manager's address and authkey.
    ///
    /// # Errors
    /// Whatever [`Command::spawn`] returns (program not found, not executable, ...).
    pub fn start(command: &mut Command) -> io::Result<Process> {
        let child = command.spawn()?;
        Ok(Process::from(child))
    }

    /// The operating system's process id.
    pub fn pid(&self) -> u32 {
        match &self.inner {
            Inner::Forked { pid, .. } => *pid as u32,
            Inner::Program(child) => child.id(),
        }
    }

    /// Waits for the worker to exit and returns its exit status (Python's `join()` followed by
    /// `exitcode`). Returns at once if it has already been reaped.
    ///
    /// # Errors
    /// `waitpid` failing, e.g. `ECHILD` when the program set `SIGCHLD` to be ignored or reaped
    /// the child by other means.
    pub fn join(&mut self) -> io::Result<ExitStatus> {
        match &mut self.inner {
            Inner::Forked { pid, status } => {
                if let Some(done) = status {
                    return Ok(*done);
                }
                let done = fork::wait_pid(*pid, true)?.ok_or_else(|| {
                    io::Error::other("waitpid returned without a status for a blocking wait")
                })?;
                *status = Some(done);
                Ok(done)
            }
            Inner::Program(child) => child.wait(),
        }
    }

    /// Waits up to `timeout` for the worker to exit: `Some(status)` if it did, `None` if it
    /// still runs (Python's `join(timeout)`, which tells the two apart only by `is_alive()`).
    ///
    /// # Errors
    /// As [`join`](Process::join).
    pub fn join_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        match &mut self.inner {
            Inner::Forked { pid, status } => {
                if status.is_none() {
                    *status = fork::wait_pid_timeout(*pid, timeout)?;
                }
                Ok(*status)
            }
            Inner::Program(child) => {
                let deadline = std::time::Instant::now() + timeout;
                let mut pause = Duration::from_micros(200);
                loop {
                    if let Some(done) = child.try_wait()? {
                        return Ok(Some(done));
                    }
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        return Ok(None);
                    }
                    std::thread::sleep(pause.min(deadline - now));
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
            }
        }
    }

    /// The exit status if the worker has exited, without waiting. Reaps it if it just exited.
    ///
    /// # Errors
    /// As [`join`](Process::join).
    pub fn try_join(&mut self) -> io::Result<Option<ExitStatus>> {
        self.join_timeout(Duration::ZERO)
    }

    /// True while the worker runs. A worker that has exited is reaped by this call.
    ///
    /// A worker that cannot be waited for any more (reaped elsewhere) counts as not alive.
    pub fn is_alive(&mut self) -> bool {
        match self.try_join() {
            Ok(status) => status.is_none(),
            Err(e) => {
                tracing::debug!(pid = self.pid(), error = %e, "cannot wait for worker");
                false
            }
        }
    }

    /// Asks the worker to stop with `SIGTERM` (Python's `terminate()`); it may clean up first.
    /// Does nothing if the worker has already been reaped. Follow with [`join`](Process::join).
    ///
    /// # Errors
    /// The error of `kill(2)`.
    pub fn terminate(&mut self) -> io::Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// Stops the worker at once with `SIGKILL` (Python's `kill()`). Does nothing if the worker
    /// has already been reaped. Follow with [`join`](Process::join).
    ///
    /// # Errors
    /// The error of `kill(2)`.
    pub fn kill(&mut self) -> io::Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// Sends `signal` unless the worker has been reaped (its pid could then belong to another
    /// process). A worker that exited but is not reaped yet is a zombie: signalling it is
    /// harmless.
    fn signal(&mut self, signal: libc::c_int) -> io::Result<()> {
        match &mut self.inner {
            Inner::Forked {
                status: Some(_), ..
            } => Ok(()),
            Inner::Forked { pid, status: None } => fork::send_signal(*pid, signal),
            Inner::Program(child) => {
                if child.try_wait()?.is_some() {
                    return Ok(());
                }
                fork::send_signal(child.id() as libc::pid_t, signal)
            }
        }
    }
}

impl From<Child> for Process {
    /// Adopts a child started by [`Command::spawn`].
    fn from(child: Child) -> Process {
        Process {
            inner: Inner::Program(child),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        match self.try_join() {
            Ok(Some(_)) => {}
            Ok(None) => tracing::debug!(
                pid = self.pid(),
                "worker handle dropped while the worker runs; it will not be reaped"
            ),
            Err(e) => tracing::debug!(pid = self.pid(), error = %e, "cannot reap worker"),
        }
    }
}

/// The forked child's whole life: disown the parent's lifelines, run `f`, exit.
fn run_child<F: FnOnce() -> i32>(inherited_lifelines: Vec<libc::c_int>, f: F) -> ! {
    match fork::open_dev_null() {
        Ok(null) => {
            for fd in inherited_lifelines {
                if let Err(e) = fork::disown(null, fd) {
                    fork::write_stderr(&format!(
                        "agora: worker could not release a manager lifeline (fd {fd}): {e}\n"
                    ));
                    fork::exit_now(PANIC_EXIT_CODE);
                }
            }
            // SAFETY: `null` was opened above and is not used after this.
            unsafe { libc::close(null) };
        }
        Err(e) => {
            // Running on would tie the parent's managers to this worker's life.
            fork::write_stderr(&format!("agora: worker could not open /dev/null: {e}\n"));
            fork::exit_now(PANIC_EXIT_CODE);
        }
    }
    let code = match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(code) => code,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(a panic payload that is not a string)");
            fork::write_stderr(&format!(
                "agora: worker process {} panicked: {message}\n",
                std::process::id()
            ));
            // The payload's destructor could panic too; the process is ending anyway.
            std::mem::forget(payload);
            PANIC_EXIT_CODE
        }
    };
    fork::flush_stdout();
    fork::exit_now(code)
}
