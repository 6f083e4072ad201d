//! The tutorials' shared print terminal: three workers each print "running", work a while,
//! and print "done". Without a lock their lines interleave; with one, each worker's two lines
//! come out together, the workers one after the other.
//!
//! ```text
//! cargo run --example print_terminal -- [all|none|manager|file|threads]
//! ```
//!
//! - `none`: processes, no lock (the tutorials' first version: fast, but the output is mixed);
//! - `manager`: processes behind the manager's `Lock`, as the tutorials' `Lock()` (a lock in
//!   a manager process here; a semaphore in shared memory in Python's `multiprocessing.Lock`);
//! - `file`: processes behind a [`FileLock`], an `flock` that every process takes;
//! - `threads`: threads of this process behind a [`LocalLock`], the lock that cannot cross
//!   processes (a forked child would lock its own copy).
//!
//! The worker is written once against [`Locker`]. Each line it prints is also appended to a
//! shared transcript (a manager list) while the lock is held, so the program can check its
//! invariant for the locked runs: the transcript is `running w, done w` pairs, never split.

use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

use agora::baseline::{FileLock, LocalLock, Locker, NoLock};
use agora::{List, Manager, Process};

/// Which lock guards the terminal, and whether the workers are processes or threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Processes, no lock.
    None,
    /// Processes behind the manager's `Lock`.
    Manager,
    /// Processes behind a [`FileLock`].
    File,
    /// Threads behind a [`LocalLock`].
    Threads,
}

impl Mode {
    /// Every mode, in the order `all` runs them.
    pub const ALL: [Mode; 4] = [Mode::None, Mode::Manager, Mode::File, Mode::Threads];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Manager => "manager",
            Mode::File => "file",
            Mode::Threads => "threads",
        }
    }

    /// True when the mode serialises the workers, so the transcript must be in pairs.
    pub fn locked(self) -> bool {
        self != Mode::None
    }
}

/// What the workers printed, in order.
#[derive(Debug)]
pub struct Transcript {
    /// The mode that ran.
    pub mode: Mode,
    /// The lines, as `(worker, "running" or "done")`.
    pub lines: Vec<(String, String)>,
}

impl Transcript {
    /// The invariant of the locked modes: every worker's "running" is followed at once by its
    /// own "done", and every worker appears exactly once. (Unlocked, anything may happen, so
    /// only the count of lines is checked.)
    pub fn check(&self, workers: usize) -> Result<(), String> {
        if self.lines.len() != 2 * workers {
            return Err(format!("{} lines, want {}", self.lines.len(), 2 * workers));
        }
        if !self.mode.locked() {
            return Ok(());
        }
        let mut seen = std::collections::BTreeSet::new();
        for pair in self.lines.chunks(2) {
            let ok = pair[0].1 == "running" && pair[1].1 == "done" && pair[0].0 == pair[1].0;
            if !ok || !seen.insert(pair[0].0.clone()) {
                return Err(format!("lines out of order under a lock: {:?}", self.lines));
            }
        }
        Ok(())
    }

    /// True when some worker started before another one finished.
    pub fn interleaved(&self) -> bool {
        self.lines
            .chunks(2)
            .any(|pair| pair.len() < 2 || pair[0].0 != pair[1].0)
    }
}

/// One worker, written once for every lock: print, work, print, all while holding the lock.
fn work<L: Locker>(
    who: &str,
    lock: &L,
    transcript: &List<(String, String)>,
    pause: Duration,
) -> Result<(), Box<dyn Error>> {
    let _terminal = lock.lock()?;
    for (i, what) in ["running", "done"].into_iter().enumerate() {
        if i == 1 {
            std::thread::sleep(pause);
        }
        println!("{who} is {what}");
        transcript.append(&(who.to_owned(), what.to_owned()))?;
    }
    Ok(())
}

/// Runs `workers` workers in `mode`, each working for `pause` between its two lines.
pub fn run(mode: Mode, workers: usize, pause: Duration) -> Result<Transcript, Box<dyn Error>> {
    println!("--- {}: {workers} workers ---", mode.name());
    let manager = Manager::spawn()?;
    let transcript = manager.list::<(String, String)>()?;
    let dir = tempfile::tempdir()?;
    match mode {
        Mode::None | Mode::Manager | Mode::File => {
            let file_lock = FileLock::new(dir.path().join("terminal.lock"));
            let manager_lock = manager.lock()?;
            let processes = (0..workers)
                .map(|_| {
                    let (transcript, file_lock, manager_lock) =
                        (&transcript, &file_lock, &manager_lock);
                    Process::spawn_fallible(move || {
                        let who = format!("process {}", std::process::id());
                        match mode {
                            Mode::Manager => work(&who, manager_lock, transcript, pause),
                            Mode::File => work(&who, file_lock, transcript, pause),
                            _ => work(&who, &NoLock, transcript, pause),
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            for mut p in processes {
                let status = p.join()?;
                if !status.success() {
                    return Err(format!("a worker failed: {status}").into());
                }
            }
        }
        Mode::Threads => {
            let lock = LocalLock::new();
            std::thread::scope(|s| -> Result<(), String> {
                let threads: Vec<_> = (0..workers)
                    .map(|i| {
                        let (lock, transcript) = (&lock, &transcript);
                        s.spawn(move || {
                            work(&format!("thread {i}"), lock, transcript, pause)
                                .map_err(|e| e.to_string())
                        })
                    })
                    .collect();
                for t in threads {
                    t.join().map_err(|_| "a worker thread panicked")??;
                }
                Ok(())
            })?;
        }
    }
    let transcript = Transcript {
        mode,
        lines: transcript.copy()?,
    };
    println!(
        "{}: the workers' lines {}",
        mode.name(),
        if transcript.interleaved() {
            "interleaved"
        } else {
            "came out one worker at a time"
        }
    );
    Ok(transcript)
}

fn main() -> ExitCode {
    let modes = match std::env::args().nth(1).as_deref() {
        None | Some("all") => Mode::ALL.to_vec(),
        Some(name) => {
            match Mode::ALL.into_iter().find(|m| m.name() == name) {
                Some(mode) => vec![mode],
                None => {
                    eprintln!("unknown mode {name:?}; usage: print_terminal [all|none|manager|file|threads]");
                    return ExitCode::from(2);
                }
            }
        }
    };
    const WORKERS: usize = 3;
    let mut failed = false;
    for mode in modes {
        let checked = run(mode, WORKERS, Duration::from_millis(200))
            .map_err(|e| e.to_string())
            .and_then(|t| t.check(WORKERS));
        if let Err(e) = checked {
            eprintln!("{}: {e}", mode.name());
            failed = true;
        }
        println!();
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
