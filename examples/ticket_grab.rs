//! The tutorials' ticket grab: many buyers (processes) query the number of tickets left at
//! the same time, then buy one each, and buying is serialised so that no ticket is sold twice.
//!
//! ```text
//! cargo run --example ticket_grab -- [--backend all|file|manager-lock|manager-atomic|unlocked]
//!                                    [--buyers 10] [--tickets 3] [--latency-ms 30]
//! ```
//!
//! Backends, one generic buyer for all of them:
//!
//! - `file`: the tutorials' own way. The tickets are `db.json` (`{"count": N}`) and each
//!   purchase reads it, waits (a simulated slow database), and rewrites it, under an
//!   `flock` ([`FileLock`]) on `db.json.lock`.
//! - `manager-lock`: the same program moved onto the manager, as a Python user would write it:
//!   the count is a manager value, read and written back under the manager's `Lock` (four
//!   round trips per ticket: acquire, get, set, release).
//! - `manager-atomic`: the count is a manager value and a purchase is **one** atomic call,
//!   `fetch_add(-1)`, which returns the count from before; no lock at all ([`NoLock`]).
//! - `unlocked` (not part of `all`): the file without the lock, the tutorials' first version,
//!   to show what the lock is for: buyers that read the same count sell the same ticket.
//!
//! Every buyer records the number of the ticket it bought in a manager list; the program
//! checks that the numbers sold are exactly N, N-1, ..., 1, each once (with at least as many
//! buyers as tickets), and exits with status 1 if not (except for `unlocked`, which is
//! expected to break it and only reports).

use std::error::Error;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use agora::baseline::{
    buy, AtomicTickets, FileLock, JsonFileTickets, Locker, NoLock, TicketStore, ValueTickets,
};
use agora::{List, Manager, Process};

/// Where the tickets live and what serialises the purchases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `db.json` rewritten under a [`FileLock`].
    File,
    /// A manager value read and written under the manager's `Lock`.
    ManagerLock,
    /// A manager value decremented by one atomic `fetch_add`, no lock.
    ManagerAtomic,
    /// `db.json` with no lock: the race the lock prevents.
    Unlocked,
}

impl Backend {
    /// The backends `--backend all` runs: every correct one.
    pub const ALL: [Backend; 3] = [Backend::File, Backend::ManagerLock, Backend::ManagerAtomic];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::File => "file",
            Backend::ManagerLock => "manager-lock",
            Backend::ManagerAtomic => "manager-atomic",
            Backend::Unlocked => "unlocked",
        }
    }

    fn parse(s: &str) -> Option<Backend> {
        [
            Backend::File,
            Backend::ManagerLock,
            Backend::ManagerAtomic,
            Backend::Unlocked,
        ]
        .into_iter()
        .find(|b| b.name() == s)
    }
}

/// The size of the rush.
#[derive(Debug, Clone)]
pub struct Options {
    /// Buyer processes.
    pub buyers: usize,
    /// Tickets for sale.
    pub tickets: u64,
    /// The simulated delay of the query, and of a purchase between its read and its write.
    pub latency: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            buyers: 10,
            tickets: 3,
            latency: Duration::from_millis(30),
        }
    }
}

/// What one run sold.
#[derive(Debug)]
pub struct Sales {
    /// The backend that ran.
    pub backend: Backend,
    /// Tickets for sale at the start.
    pub tickets: u64,
    /// Buyers that tried.
    pub buyers: usize,
    /// `(buyer, ticket number)` for every purchase, in the order they were recorded.
    pub sold: Vec<(usize, u64)>,
    /// What the store says is left at the end.
    pub left: u64,
    /// Wall time of the rush.
    pub elapsed: Duration,
}

impl Sales {
    /// The invariant: every ticket sold once, none twice, none invented, and the store's count
    /// agrees with the sales.
    pub fn check(&self) -> Result<(), String> {
        let mut numbers: Vec<u64> = self.sold.iter().map(|&(_, n)| n).collect();
        numbers.sort_unstable();
        let expected_sales = self.tickets.min(self.buyers as u64);
        let want: Vec<u64> = (self.tickets - expected_sales + 1..=self.tickets).collect();
        if numbers != want {
            return Err(format!(
                "{}: ticket numbers sold {numbers:?}, want each of {want:?} exactly once",
                self.backend.name()
            ));
        }
        if self.left != self.tickets - expected_sales {
            return Err(format!(
                "{}: the store says {} left after {} sales of {}",
                self.backend.name(),
                self.left,
                numbers.len(),
                self.tickets
            ));
        }
        Ok(())
    }
}

/// One buyer: query concurrently, then buy under the lock. Written once, for every backend.
fn buyer<L: Locker, S: TicketStore>(
    who: usize,
    lock: &L,
    store: &S,
    sold: &List<(usize, u64)>,
    latency: Duration,
) -> Result<(), Box<dyn Error>> {
    let pid = std::process::id();
    std::thread::sleep(latency); // the query's network delay
    println!(
        "buyer {who:>2} (pid {pid}) sees {} ticket(s) left",
        store.remaining()?
    );
    match buy(lock, store)? {
        Some(number) => {
            sold.append(&(who, number))?;
            println!("buyer {who:>2} (pid {pid}) bought ticket #{number}");
        }
        None => println!("buyer {who:>2} (pid {pid}) found it sold out"),
    }
    Ok(())
}

/// Forks the buyers, waits for them, and collects the sales.
fn rush<L: Locker, S: TicketStore>(
    manager: &Manager,
    backend: Backend,
    lock: &L,
    store: &S,
    options: &Options,
) -> Result<Sales, Box<dyn Error>> {
    let sold = manager.list::<(usize, u64)>()?;
    let start = Instant::now();
    let buyers = (0..options.buyers)
        .map(|who| {
            let sold = &sold;
            Process::spawn_fallible(move || buyer(who, lock, store, sold, options.latency))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for mut b in buyers {
        let status = b.join()?;
        if !status.success() {
            return Err(format!("a buyer failed: {status}").into());
        }
    }
    Ok(Sales {
        backend,
        tickets: options.tickets,
        buyers: options.buyers,
        sold: sold.copy()?,
        left: store.remaining()?,
        elapsed: start.elapsed(),
    })
}

/// Runs the rush on one backend, with a manager of its own and files in a fresh directory.
pub fn run(backend: Backend, options: &Options) -> Result<Sales, Box<dyn Error>> {
    println!(
        "--- {}: {} buyers, {} ticket(s) ---",
        backend.name(),
        options.buyers,
        options.tickets
    );
    let manager = Manager::spawn()?;
    let dir = tempfile::tempdir()?;
    let db = |dir: &Path| {
        JsonFileTickets::create(dir.join("db.json"), options.tickets)
            .map(|store| store.with_latency(options.latency))
    };
    let sales = match backend {
        Backend::File => {
            let lock = FileLock::new(dir.path().join("db.json.lock"));
            rush(&manager, backend, &lock, &db(dir.path())?, options)?
        }
        Backend::Unlocked => rush(&manager, backend, &NoLock, &db(dir.path())?, options)?,
        Backend::ManagerLock => {
            let count = manager.value(&i64::try_from(options.tickets)?)?;
            let store = ValueTickets::new(count).with_latency(options.latency);
            rush(&manager, backend, &manager.lock()?, &store, options)?
        }
        Backend::ManagerAtomic => {
            let count = manager.value(&i64::try_from(options.tickets)?)?;
            rush(
                &manager,
                backend,
                &NoLock,
                &AtomicTickets::new(count),
                options,
            )?
        }
    };
    println!(
        "{}: sold {} ticket(s) of {} to {} buyers in {:.0?}, {} left",
        backend.name(),
        sales.sold.len(),
        sales.tickets,
        sales.buyers,
        sales.elapsed,
        sales.left
    );
    Ok(sales)
}

fn options() -> Result<(Vec<Backend>, Options), String> {
    let mut backends = Backend::ALL.to_vec();
    let mut o = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--backend" => {
                let v = value()?;
                backends = if v == "all" {
                    Backend::ALL.to_vec()
                } else {
                    vec![Backend::parse(&v).ok_or_else(|| format!("unknown backend {v:?}"))?]
                };
            }
            "--buyers" => o.buyers = value()?.parse().map_err(|e| format!("--buyers: {e}"))?,
            "--tickets" => o.tickets = value()?.parse().map_err(|e| format!("--tickets: {e}"))?,
            "--latency-ms" => {
                let ms = value()?.parse().map_err(|e| format!("--latency-ms: {e}"))?;
                o.latency = Duration::from_millis(ms);
            }
            _ => {
                return Err(format!(
                    "unknown argument {arg:?}; usage: ticket_grab [--backend \
                     all|file|manager-lock|manager-atomic|unlocked] [--buyers N] [--tickets N] \
                     [--latency-ms MS]"
                ))
            }
        }
    }
    Ok((backends, o))
}

fn main() -> ExitCode {
    let (backends, options) = match options() {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut failed = false;
    for backend in backends {
        match run(backend, &options) {
            Ok(sales) => match sales.check() {
                Ok(()) => println!("{}: every ticket sold exactly once\n", backend.name()),
                Err(e) if backend == Backend::Unlocked => {
                    println!("without the lock, as the tutorials warn: {e}\n")
                }
                Err(e) => {
                    eprintln!("INVARIANT BROKEN: {e}\n");
                    failed = true;
                }
            },
            Err(e) => {
                eprintln!("{}: {e}", backend.name());
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
