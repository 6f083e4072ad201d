//! The tutorials' semaphore "room": thirty workers want a room that holds five. A semaphore of
//! five permits is the door: five get in, and each one leaving lets the next one in.
//!
//! ```text
//! cargo run --example semaphore_room -- [--workers 30] [--room 5]
//! ```
//!
//! The workers first wait for the doors to open (an event the parent sets once all of them
//! are started), so that they all push at the door together. Occupancy is counted in a
//! manager value, incremented (atomically, `fetch_add`) on the way
//! in and decremented on the way out while the worker still holds its permit. Every entry
//! records how many were inside at that moment. Invariant, checked before exiting 0: never
//! more than five inside, and five at some point (a door that let only one in at a time would
//! be wrong too).

use std::error::Error;
use std::hash::{BuildHasher, RandomState};
use std::process::ExitCode;
use std::time::Duration;

use agora::{Manager, Process};

/// What the door saw.
#[derive(Debug)]
pub struct Visits {
    /// The room's capacity (the semaphore's permits).
    pub room: usize,
    /// For each entry, in order, how many were inside counting the one who just entered.
    pub occupancy: Vec<i64>,
}

impl Visits {
    /// The most people inside at once.
    pub fn max(&self) -> i64 {
        self.occupancy.iter().copied().max().unwrap_or(0)
    }

    /// The invariant: everybody got in once, never more than `room` at once, and the room was
    /// full at some point.
    pub fn check(&self, workers: usize) -> Result<(), String> {
        let room = self.room as i64;
        if self.occupancy.len() != workers {
            return Err(format!("{} entries, want {workers}", self.occupancy.len()));
        }
        if self.max() > room {
            return Err(format!("{} inside a room for {room}", self.max()));
        }
        if self.max() < room.min(workers as i64) {
            return Err(format!(
                "never more than {} inside a room for {room}: the door is too strict",
                self.max()
            ));
        }
        Ok(())
    }
}

/// A random pause between `lo` and `hi` milliseconds.
fn pause(lo: u64, hi: u64) {
    let r = RandomState::new().hash_one(std::process::id());
    std::thread::sleep(Duration::from_millis(lo + r % (hi - lo + 1)));
}

/// Runs `workers` workers through a room for `room`, with a manager of its own.
pub fn run(workers: usize, room: usize) -> Result<Visits, Box<dyn Error>> {
    println!("{workers} workers, a room for {room}");
    let manager = Manager::spawn()?;
    let doors_open = manager.event()?;
    let door = manager.semaphore(room)?;
    let inside = manager.value(&0i64)?;
    let log = manager.list::<i64>()?;

    let processes = (0..workers)
        .map(|i| {
            let (doors_open, door, inside, log) = (&doors_open, &door, &inside, &log);
            Process::spawn_fallible(move || -> agora::Result<()> {
                doors_open.wait()?;
                let permit = door.acquire()?;
                let now = inside.fetch_add(1)? + 1;
                log.append(&now)?;
                println!("worker {i:>2} entered the room ({now} inside)");
                pause(30, 80);
                // Leave while still holding the permit, so the count never runs ahead of it.
                inside.fetch_add(-1)?;
                drop(permit);
                Ok(())
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    println!("the doors open");
    doors_open.set()?;
    for mut p in processes {
        let status = p.join()?;
        if !status.success() {
            return Err(format!("a worker failed: {status}").into());
        }
    }
    let visits = Visits {
        room,
        occupancy: log.copy()?,
    };
    println!(
        "at most {} inside a room for {room}; {} left inside",
        visits.max(),
        inside.get()?
    );
    Ok(visits)
}

fn main() -> ExitCode {
    let (mut workers, mut room) = (30, 5);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--workers", Some(v)) => workers = v,
            ("--room", Some(v)) if v > 0 => room = v,
            _ => {
                eprintln!("usage: semaphore_room [--workers N] [--room N]");
                return ExitCode::from(2);
            }
        }
    }
    match run(workers, room)
        .map_err(|e| e.to_string())
        .and_then(|v| v.check(workers))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("semaphore_room: {e}");
            ExitCode::FAILURE
        }
    }
}
