//! The tutorials' "first 10 of 100 users" rush: a hundred user processes try to get into a
//! queue of ten places, each with one non-blocking put (`put_nowait`); whoever finds it full
//! is turned away at once. The parent then reads the queue: the ranking of the ten winners.
//!
//! ```text
//! cargo run --example first_ten -- [--users 100] [--places 10]
//! ```
//!
//! Invariant, checked before exiting 0: exactly ten users got in, each once, and they are
//! exactly the users that were told so; everybody else was told it was full.

use std::collections::BTreeSet;
use std::error::Error;
use std::process::ExitCode;

use agora::{Manager, Process};

/// What the rush produced.
#[derive(Debug)]
pub struct Rush {
    /// Users that tried.
    pub users: usize,
    /// Places in the queue.
    pub places: usize,
    /// The queue's contents at the end, in arrival order: user process ids.
    pub ranking: Vec<u32>,
    /// `(pid, got in)` as each user reported it.
    pub reports: Vec<(u32, bool)>,
}

impl Rush {
    /// Users that were told they got in.
    pub fn winners(&self) -> BTreeSet<u32> {
        self.reports
            .iter()
            .filter(|&&(_, won)| won)
            .map(|&(pid, _)| pid)
            .collect()
    }

    /// The invariant: `min(users, places)` users got in, each once, and they are the ones
    /// told so; every user reported exactly once.
    pub fn check(&self) -> Result<(), String> {
        let want = self.users.min(self.places);
        let in_queue: BTreeSet<u32> = self.ranking.iter().copied().collect();
        if self.ranking.len() != want || in_queue.len() != want {
            return Err(format!(
                "{} entries ({} distinct) in the queue, want {want}",
                self.ranking.len(),
                in_queue.len()
            ));
        }
        if self.reports.len() != self.users {
            return Err(format!(
                "{} reports from {} users",
                self.reports.len(),
                self.users
            ));
        }
        if in_queue != self.winners() {
            return Err(format!(
                "the queue holds {in_queue:?} but the users told they got in are {:?}",
                self.winners()
            ));
        }
        Ok(())
    }
}

/// Runs the rush with a manager of its own.
pub fn run(users: usize, places: usize) -> Result<Rush, Box<dyn Error>> {
    println!("{users} users rush for {places} places");
    let manager = Manager::spawn()?;
    let queue = manager.queue::<u32>(places)?;
    let reports = manager.list::<(u32, bool)>()?;

    let processes = (0..users)
        .map(|_| {
            let (queue, reports) = (&queue, &reports);
            Process::spawn_fallible(move || -> agora::Result<()> {
                let pid = std::process::id();
                // put_nowait: in if there is room, turned away at once if not.
                let got_in = queue.try_put(&pid)?.is_some();
                reports.append(&(pid, got_in))?;
                Ok(())
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for mut p in processes {
        let status = p.join()?;
        if !status.success() {
            return Err(format!("a user process failed: {status}").into());
        }
    }

    let mut ranking = Vec::new();
    while let Some(pid) = queue.try_get()? {
        ranking.push(pid);
    }
    for (place, pid) in ranking.iter().enumerate() {
        println!("No. {:>2} user is {pid}", place + 1);
    }
    let rush = Rush {
        users,
        places,
        ranking,
        reports: reports.copy()?,
    };
    println!(
        "{} users were turned away",
        rush.reports.iter().filter(|&&(_, won)| !won).count()
    );
    Ok(rush)
}

fn main() -> ExitCode {
    let mut users = 100;
    let mut places = 10;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--users", Some(v)) => users = v,
            ("--places", Some(v)) if v > 0 => places = v,
            _ => {
                eprintln!("usage: first_ten [--users N] [--places N]");
                return ExitCode::from(2);
            }
        }
    }
    match run(users, places)
        .map_err(|e| e.to_string())
        .and_then(|r| r.check())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("first_ten: {e}");
            ExitCode::FAILURE
        }
    }
}
