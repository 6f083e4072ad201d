//! The tutorials' Event and a Barrier, between processes.
//!
//! ```text
//! cargo run --example event_barrier -- [all|event|barrier]
//! ```
//!
//! - `event`: cars (worker processes) wait at a red light, an event. The parent turns the
//!   light green (sets the event) after a while, and every waiting car goes at once. Each car
//!   checks, when released, that the parent had really turned the light green: a shared flag
//!   the parent sets just before the event.
//! - `barrier`: hikers arrive at a meeting point at different times and wait there (a barrier
//!   for all of them); nobody sets off before the last one arrives. Every arrival and every
//!   departure is logged in a manager list, in the order the manager saw them.
//!
//! Invariants, checked before exiting 0: every car was released, and only after the light
//! turned green; in the barrier's log every arrival comes before every departure, and the
//! arrival indices `wait` returned are 0 to N-1, each once.

use std::error::Error;
use std::hash::{BuildHasher, RandomState};
use std::process::ExitCode;
use std::time::Duration;

use agora::{Manager, Process};

/// How long any wait may last before the program gives up (nothing should come near it).
const PATIENCE: Duration = Duration::from_secs(10);

/// What the cars saw.
#[derive(Debug)]
pub struct Traffic {
    /// Cars that waited.
    pub cars: usize,
    /// `(car, released by the event, the light was green when released)`.
    pub released: Vec<(usize, bool, bool)>,
}

impl Traffic {
    /// The invariant: every car was released by the event, after the light turned green.
    pub fn check(&self) -> Result<(), String> {
        if self.released.len() != self.cars {
            return Err(format!(
                "{} of {} cars went",
                self.released.len(),
                self.cars
            ));
        }
        match self
            .released
            .iter()
            .find(|&&(_, set, green)| !(set && green))
        {
            Some(car) => Err(format!("a car went before the light was green: {car:?}")),
            None => Ok(()),
        }
    }
}

/// What the meeting point saw.
#[derive(Debug)]
pub struct Meeting {
    /// Hikers.
    pub hikers: usize,
    /// `("arrived" or "left", hiker)`, in the order the manager recorded them.
    pub log: Vec<(String, usize)>,
    /// `(hiker, arrival index from the barrier)`.
    pub indices: Vec<(usize, usize)>,
}

impl Meeting {
    /// The invariant: all arrivals before all departures, and each arrival index once.
    pub fn check(&self) -> Result<(), String> {
        let n = self.hikers;
        let arrived = self.log.iter().take(n).all(|(what, _)| what == "arrived");
        let left = self.log.iter().skip(n).all(|(what, _)| what == "left");
        if self.log.len() != 2 * n || !arrived || !left {
            return Err(format!(
                "somebody left before everybody arrived: {:?}",
                self.log
            ));
        }
        let mut indices: Vec<usize> = self.indices.iter().map(|&(_, i)| i).collect();
        indices.sort_unstable();
        if indices != (0..n).collect::<Vec<_>>() {
            return Err(format!("arrival indices {indices:?}, want 0..{n}"));
        }
        Ok(())
    }
}

/// A random pause between `lo` and `hi` milliseconds.
fn pause(lo: u64, hi: u64) {
    let r = RandomState::new().hash_one(std::process::id());
    std::thread::sleep(Duration::from_millis(lo + r % (hi - lo + 1)));
}

fn join_all(processes: Vec<Process>) -> Result<(), Box<dyn Error>> {
    for mut p in processes {
        let status = p.join()?;
        if !status.success() {
            return Err(format!("a worker failed: {status}").into());
        }
    }
    Ok(())
}

/// The red light: `cars` processes wait on an event the parent sets after `red`.
pub fn run_event(cars: usize, red: Duration) -> Result<Traffic, Box<dyn Error>> {
    println!("--- event: {cars} cars at a red light ---");
    let manager = Manager::spawn()?;
    let light = manager.event()?;
    let green = manager.value(&false)?;
    let released = manager.list::<(usize, bool, bool)>()?;

    let processes = (0..cars)
        .map(|car| {
            let (light, green, released) = (&light, &green, &released);
            Process::spawn_fallible(move || -> agora::Result<()> {
                println!("car {car} waits at the red light");
                let set = light.wait_timeout(PATIENCE)?.is_some();
                let was_green = green.get()?;
                println!("car {car} goes");
                released.append(&(car, set, was_green))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    std::thread::sleep(red);
    println!("the light turns green");
    green.set(&true)?;
    light.set()?;
    join_all(processes)?;
    Ok(Traffic {
        cars,
        released: released.copy()?,
    })
}

/// The meeting point: `hikers` processes arrive at random times and wait at a barrier.
pub fn run_barrier(hikers: usize) -> Result<Meeting, Box<dyn Error>> {
    println!("--- barrier: {hikers} hikers meet before setting off ---");
    let manager = Manager::spawn()?;
    let meeting_point = manager.barrier(hikers, Some(PATIENCE))?;
    let log = manager.list::<(String, usize)>()?;
    let indices = manager.list::<(usize, usize)>()?;

    let processes = (0..hikers)
        .map(|hiker| {
            let (meeting_point, log, indices) = (&meeting_point, &log, &indices);
            Process::spawn_fallible(move || -> agora::Result<()> {
                pause(10, 150);
                log.append(&("arrived".to_owned(), hiker))?;
                println!("hiker {hiker} arrives and waits");
                let index = meeting_point.wait()?;
                log.append(&("left".to_owned(), hiker))?;
                indices.append(&(hiker, index))?;
                println!("hiker {hiker} sets off (arrived {})", index + 1);
                Ok(())
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    join_all(processes)?;
    Ok(Meeting {
        hikers,
        log: log.copy()?,
        indices: indices.copy()?,
    })
}

fn main() -> ExitCode {
    let part = std::env::args().nth(1);
    let (event, barrier) = match part.as_deref() {
        None | Some("all") => (true, true),
        Some("event") => (true, false),
        Some("barrier") => (false, true),
        Some(_) => {
            eprintln!("usage: event_barrier [all|event|barrier]");
            return ExitCode::from(2);
        }
    };
    let mut failed = false;
    if event {
        let checked = run_event(5, Duration::from_millis(300))
            .map_err(|e| e.to_string())
            .and_then(|t| t.check());
        match checked {
            Ok(()) => println!("event: every car went, after the light turned green\n"),
            Err(e) => {
                eprintln!("event: {e}\n");
                failed = true;
            }
        }
    }
    if barrier {
        let checked = run_barrier(4)
            .map_err(|e| e.to_string())
            .and_then(|m| m.check());
        match checked {
            Ok(()) => println!("barrier: nobody set off before everybody arrived\n"),
            Err(e) => {
                eprintln!("barrier: {e}\n");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
