//! The tutorials' producer/consumer programs: cooks (producers) put dishes in a queue, eaters
//! (consumers) take them out, and the queue decouples the two speeds. The tutorials build it
//! up in four steps, and so does this program:
//!
//! ```text
//! cargo run --example producer_consumer -- [all|sentinel|many|close|joinable]
//! ```
//!
//! - `sentinel`: one cook, one eater. The cook puts `None` after its last dish, and the eater
//!   stops when it gets it (without it the eater would wait forever).
//! - `many`: three cooks, two eaters. The parent waits for the cooks, then puts one `None` per
//!   eater: "as many sentinels as consumers", which the tutorials call clumsy.
//! - `close`: the same crowd, no sentinels: the parent closes the queue once the cooks are
//!   done, and each eater's loop ends when the queue is closed and drained.
//! - `joinable`: a joinable queue. Eaters call `task_done` for each dish; each cook, after its
//!   last put, waits in `join` until everything put has been eaten. The eaters loop forever,
//!   like Python's daemon processes: once the cooks are done the parent stops them.
//!
//! Every dish eaten is recorded in a manager list; the invariant, checked before exiting 0,
//! is that every dish cooked was eaten exactly once.

use std::collections::BTreeMap;
use std::error::Error;
use std::hash::{BuildHasher, RandomState};
use std::process::ExitCode;
use std::time::Duration;

use agora::{List, Manager, Process, Queue};

/// The four programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// One cook, one eater, a `None` sentinel from the cook.
    Sentinel,
    /// Three cooks, two eaters, one sentinel per eater from the parent.
    Many,
    /// Three cooks, three eaters, the queue closed by the parent.
    Close,
    /// A joinable queue: `task_done`, `join`, daemon-like eaters.
    Joinable,
}

impl Variant {
    /// Every variant, in the order `all` runs them.
    pub const ALL: [Variant; 4] = [
        Variant::Sentinel,
        Variant::Many,
        Variant::Close,
        Variant::Joinable,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Sentinel => "sentinel",
            Variant::Many => "many",
            Variant::Close => "close",
            Variant::Joinable => "joinable",
        }
    }

    fn crowd(self) -> (&'static [&'static str], usize) {
        const ONE: &[&str] = &["bun"];
        const THREE: &[&str] = &["bun", "dumpling", "noodles"];
        match self {
            Variant::Sentinel => (ONE, 1),
            Variant::Many => (THREE, 2),
            Variant::Close | Variant::Joinable => (THREE, 3),
        }
    }
}

/// What was cooked and what was eaten.
#[derive(Debug)]
pub struct Meal {
    /// The variant that ran.
    pub variant: Variant,
    /// Every dish put in the queue.
    pub cooked: Vec<String>,
    /// `(eater, dish)` for every dish taken out, in the order they were recorded.
    pub eaten: Vec<(usize, String)>,
}

impl Meal {
    /// The invariant: the dishes eaten are the dishes cooked, each exactly once.
    pub fn check(&self) -> Result<(), String> {
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for dish in &self.cooked {
            *counts.entry(dish).or_default() += 1;
        }
        for (_, dish) in &self.eaten {
            *counts.entry(dish).or_default() -= 1;
        }
        let wrong: Vec<_> = counts.into_iter().filter(|&(_, n)| n != 0).collect();
        if wrong.is_empty() && self.cooked.len() == self.eaten.len() {
            Ok(())
        } else {
            Err(format!(
                "{}: dishes not eaten exactly once (cooked minus eaten): {wrong:?}",
                self.variant.name()
            ))
        }
    }
}

/// A random pause between `lo` and `hi` milliseconds (the tutorials' `random.randint(1, 3)`
/// seconds, scaled down).
fn pause(lo: u64, hi: u64) {
    let r = RandomState::new().hash_one(std::process::id());
    std::thread::sleep(Duration::from_millis(lo + r % (hi - lo + 1)));
}

const DISHES_PER_COOK: usize = 4;

/// One cook: puts its dishes, recording each; `finish` runs after the last put.
fn cook<Q>(
    food: &str,
    put: impl Fn(&Option<String>) -> agora::Result<()>,
    cooked: &List<String>,
    finish: impl FnOnce() -> agora::Result<Q>,
) -> agora::Result<()> {
    let pid = std::process::id();
    for i in 0..DISHES_PER_COOK {
        pause(5, 20);
        let dish = format!("{food} {i}");
        cooked.append(&dish)?;
        put(&Some(dish.clone()))?;
        println!("cook {pid} made {dish}");
    }
    finish().map(drop)
}

/// One eater's meal: records it, with a pause to eat.
fn eat(who: usize, dish: String, eaten: &List<(usize, String)>) -> agora::Result<()> {
    pause(10, 40);
    println!("eater {who} (pid {}) ate {dish}", std::process::id());
    eaten.append(&(who, dish))
}

fn join_all(processes: Vec<Process>, what: &str) -> Result<(), Box<dyn Error>> {
    for mut p in processes {
        let status = p.join()?;
        if !status.success() {
            return Err(format!("{what} failed: {status}").into());
        }
    }
    Ok(())
}

/// Runs one variant with a manager of its own.
pub fn run(variant: Variant) -> Result<Meal, Box<dyn Error>> {
    let (foods, eaters) = variant.crowd();
    println!(
        "--- {}: {} cook(s), {eaters} eater(s) ---",
        variant.name(),
        foods.len()
    );
    let manager = Manager::spawn()?;
    let cooked = manager.list::<String>()?;
    let eaten = manager.list::<(usize, String)>()?;
    let (cooked_ref, eaten_ref) = (&cooked, &eaten);

    if variant == Variant::Joinable {
        let q = manager.joinable_queue::<Option<String>>(0)?;
        let q = &q;
        let eater_procs = (0..eaters)
            .map(|who| {
                Process::spawn_fallible(move || -> agora::Result<()> {
                    loop {
                        if let Some(dish) = q.get()? {
                            eat(who, dish, eaten_ref)?;
                        }
                        // Tells the cooks' join one more dish is done.
                        q.task_done()?;
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cooks = foods
            .iter()
            .map(|&food| {
                Process::spawn_fallible(move || {
                    // Each cook waits until everything put so far has been eaten.
                    cook(food, |d| q.put(d), cooked_ref, || q.join())
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        join_all(cooks, "a cook")?;
        // The cooks' join returned: every dish was eaten. Read the record now, then stop the
        // eaters, which are still waiting for more (Python ends its daemons the same way).
        let meal = Meal {
            variant,
            cooked: cooked.copy()?,
            eaten: eaten.copy()?,
        };
        for mut e in eater_procs {
            e.kill()?;
            e.join()?;
        }
        println!("main: the cooks are done, so every dish is eaten; eaters stopped");
        return Ok(meal);
    }

    let q: Queue<Option<String>> = manager.queue(0)?;
    let q = &q;
    let eater_procs = (0..eaters)
        .map(|who| {
            Process::spawn_fallible(move || -> agora::Result<()> {
                if variant == Variant::Close {
                    // Ends when the queue is closed and drained: no sentinel needed.
                    for dish in q.iter() {
                        if let Some(dish) = dish? {
                            eat(who, dish, eaten_ref)?;
                        }
                    }
                } else {
                    // The sentinel, None, says stop.
                    while let Some(dish) = q.get()? {
                        eat(who, dish, eaten_ref)?;
                    }
                }
                Ok(())
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cooks = foods
        .iter()
        .map(|&food| {
            Process::spawn_fallible(move || {
                cook(
                    food,
                    |d| q.put(d),
                    cooked_ref,
                    || {
                        if variant == Variant::Sentinel {
                            // The cook sends the end signal itself.
                            q.put(&None)?;
                        }
                        Ok(())
                    },
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    join_all(cooks, "a cook")?;
    match variant {
        Variant::Many => {
            for _ in 0..eaters {
                q.put(&None)?;
            }
        }
        Variant::Close => q.close()?,
        Variant::Sentinel | Variant::Joinable => {}
    }
    join_all(eater_procs, "an eater")?;
    println!("main: every eater has stopped");
    Ok(Meal {
        variant,
        cooked: cooked.copy()?,
        eaten: eaten.copy()?,
    })
}

fn main() -> ExitCode {
    let variants = match std::env::args().nth(1).as_deref() {
        None | Some("all") => Variant::ALL.to_vec(),
        Some(name) => match Variant::ALL.into_iter().find(|v| v.name() == name) {
            Some(v) => vec![v],
            None => {
                eprintln!("usage: producer_consumer [all|sentinel|many|close|joinable]");
                return ExitCode::from(2);
            }
        },
    };
    let mut failed = false;
    for variant in variants {
        match run(variant)
            .map_err(|e| e.to_string())
            .and_then(|m| m.check().map(|()| m))
        {
            Ok(meal) => println!(
                "{}: {} dishes cooked, each eaten exactly once\n",
                variant.name(),
                meal.cooked.len()
            ),
            Err(e) => {
                eprintln!("{}: {e}\n", variant.name());
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
