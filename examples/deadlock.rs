//! The tutorials' deadlock, and its cure with a reentrant lock.
//!
//! ```text
//! cargo run --example deadlock
//! ```
//!
//! 1. Two workers (processes) and two manager locks, A and B. One takes A then B, the other
//!    B then A. Each gets its first lock, and then (a barrier makes sure of it) each waits for
//!    the lock the other holds: a deadlock. The tutorials' program hangs there forever; here
//!    the second acquire has a timeout, so a worker that waits too long reports the deadlock
//!    and gives up, releasing what it holds.
//! 2. The tutorials' cure, `lock_A = lock_B = RLock()`: both names are one reentrant lock.
//!    Whoever gets it first may take it "again" at once, and the other waits for it to be
//!    released. Both workers finish; nobody times out.
//!
//! The worker is written once against [`Locker`], for the manager's `Lock` and `RLock`.
//! Invariant, checked before exiting 0: the first run detected a deadlock (some worker timed
//! out) and the second completed without one.

use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

use agora::baseline::Locker;
use agora::{Barrier, List, Manager, Process};

/// How long a worker waits for its second lock before calling it a deadlock.
const PATIENCE: Duration = Duration::from_millis(500);

/// How long a worker waits for its first lock (only the cure makes a worker wait for it).
const FIRST_PATIENCE: Duration = Duration::from_secs(10);

/// What the two runs did: for each, `(worker, got both locks)`.
#[derive(Debug)]
pub struct Outcome {
    /// The run with two locks taken in opposite orders.
    pub deadlock: Vec<(usize, bool)>,
    /// The run with one reentrant lock under both names.
    pub cure: Vec<(usize, bool)>,
}

impl Outcome {
    /// The invariant: the first run deadlocked (detected by a timeout), the cure did not.
    pub fn check(&self) -> Result<(), String> {
        if self.deadlock.len() != 2 || self.deadlock.iter().all(|&(_, both)| both) {
            return Err(format!(
                "opposite lock orders with a rendezvous must deadlock: {:?}",
                self.deadlock
            ));
        }
        if self.cure.len() != 2 || !self.cure.iter().all(|&(_, both)| both) {
            return Err(format!(
                "with one reentrant lock every worker must finish: {:?}",
                self.cure
            ));
        }
        Ok(())
    }
}

/// One worker: take `first`, meet the other worker (if there is a rendezvous), then try
/// `second` for at most [`PATIENCE`]. Records whether it got both.
fn worker<L: Locker>(
    who: usize,
    first: (&str, &L),
    second: (&str, &L),
    rendezvous: Option<&Barrier>,
    log: &List<(usize, bool)>,
) -> Result<(), Box<dyn Error>> {
    let (first_name, first) = first;
    let (second_name, second) = second;
    let Some(_first) = first.lock_timeout(FIRST_PATIENCE)? else {
        return Err(format!("worker {who} never got lock {first_name}").into());
    };
    println!("worker {who} got lock {first_name}");
    match rendezvous {
        Some(barrier) => {
            barrier.wait()?;
        }
        None => std::thread::sleep(Duration::from_millis(50)),
    }
    match second.lock_timeout(PATIENCE)? {
        Some(_second) => {
            println!("worker {who} got lock {second_name}");
            std::thread::sleep(Duration::from_millis(50));
            log.append(&(who, true))?;
            println!("worker {who} releases {second_name} and {first_name}");
        }
        None => {
            log.append(&(who, false))?;
            println!(
                "worker {who} waited {PATIENCE:?} for lock {second_name} while holding \
                 {first_name}: DEADLOCK; it gives up and releases {first_name}"
            );
        }
    }
    Ok(())
}

/// Runs the two workers on `a` and `b` (which may be the same lock) and returns the log.
fn run_pair<L: Locker>(
    manager: &Manager,
    a: &L,
    b: &L,
    rendezvous: Option<&Barrier>,
) -> Result<Vec<(usize, bool)>, Box<dyn Error>> {
    let log = manager.list::<(usize, bool)>()?;
    let log = &log;
    let workers = [
        Process::spawn_fallible(move || worker(0, ("A", a), ("B", b), rendezvous, log))?,
        Process::spawn_fallible(move || worker(1, ("B", b), ("A", a), rendezvous, log))?,
    ];
    for mut w in workers {
        let status = w.join()?;
        if !status.success() {
            return Err(format!("a worker failed: {status}").into());
        }
    }
    Ok(log.copy()?)
}

/// Runs the deadlock and its cure, with a manager of its own.
pub fn run() -> Result<Outcome, Box<dyn Error>> {
    let manager = Manager::spawn()?;

    println!("--- two locks, taken in opposite orders ---");
    let (a, b) = (manager.lock()?, manager.lock()?);
    let rendezvous = manager.barrier(2, Some(FIRST_PATIENCE))?;
    let deadlock = run_pair(&manager, &a, &b, Some(&rendezvous))?;

    println!("\n--- the cure: lock A and lock B are one reentrant lock ---");
    let one = manager.rlock()?;
    let cure = run_pair(&manager, &one, &one, None)?;

    Ok(Outcome { deadlock, cure })
}

fn main() -> ExitCode {
    match run().map_err(|e| e.to_string()).and_then(|o| o.check()) {
        Ok(()) => {
            println!("\nthe deadlock was detected, and the reentrant lock cured it");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("deadlock: {e}");
            ExitCode::FAILURE
        }
    }
}
