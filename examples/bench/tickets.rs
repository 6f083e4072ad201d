//! The ticket grab: W workers buy tickets until they are sold out, on four backends.
//!
//! - a manager `Lock` + `Value` (4 calls a ticket: acquire, get, set, and a release the buyer
//!   does not wait for);
//! - the same in two chains (2 round trips a ticket: acquire with the get, the set with the
//!   release; `Lock::acquire_then`, `LockGuard::unlock_after`);
//! - the manager's atomic `fetch_add` with no lock (1 round trip);
//! - the tutorials' JSON file guarded by a `FileLock` (`flock(2)`);
//! - a plain integer behind a `LocalLock`, with W threads of one process (the in-process
//!   ceiling, which cannot cross processes).
//!
//! Every run checks that exactly the initial number of tickets was sold, each number once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora::baseline::{
    buy, AtomicTickets, FileLock, JsonFileTickets, LocalLock, LocalTickets, Locker, NoLock,
    TicketStore, ValueTickets,
};
use agora::{Client, Lock, Value};

use crate::chart::Curve;
use crate::harness::{
    monotonic_ns, per_second, rate, run_to_completion, RawStream, Samples, Servers,
};
use crate::progress::Progress;
use crate::report::{Group, Report};
use crate::ticket_phases::{self, PhaseSamples, Stamped};

type BoxError = Box<dyn std::error::Error>;

/// One way to sell tickets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Manager `Lock` + `Value`, W processes.
    ManagerLock,
    /// Manager `Lock` + `Value` in two chains, W processes.
    ManagerChained,
    /// Manager `Value::fetch_add`, no lock, W processes.
    ManagerAtomic,
    /// `FileLock` + a JSON file, W processes.
    FileLock,
    /// `LocalLock` + an integer, W threads of this process.
    LocalLock,
}

impl Backend {
    /// Every backend, in table order.
    pub const ALL: [Backend; 5] = [
        Backend::ManagerLock,
        Backend::ManagerChained,
        Backend::ManagerAtomic,
        Backend::FileLock,
        Backend::LocalLock,
    ];

    /// The name in the table and the chart.
    pub fn name(self) -> &'static str {
        match self {
            Backend::ManagerLock => "manager Lock + Value",
            Backend::ManagerChained => "manager Lock + Value, chained",
            Backend::ManagerAtomic => "manager atomic fetch_add",
            Backend::FileLock => "FileLock + JSON file",
            Backend::LocalLock => "LocalLock + int (threads)",
        }
    }

    /// Tickets per run: enough for a few hundred milliseconds at this backend's speed.
    fn tickets(self, scale: u64) -> u64 {
        scale
            * match self {
                Backend::ManagerLock => 6_000,
                Backend::ManagerChained => 12_000,
                Backend::ManagerAtomic => 6_000,
                Backend::FileLock => 6_000,
                Backend::LocalLock => 200_000,
            }
    }
}

/// Where the manager backends find their objects.
#[derive(Clone)]
struct Objects {
    address: agora::Address,
    authkey: Vec<u8>,
    lock: u64,
    value: u64,
    dir: PathBuf,
}

impl Objects {
    /// Connects to the manager, and makes the lock and the value from their ids.
    fn connect(&self) -> Result<(Lock, Value<i64>), BoxError> {
        let client = Client::connect(&self.address, &self.authkey)?;
        let value = Value::<i64>::from_id(&client, self.value);
        Ok((Lock::from_id(&client, self.lock), value))
    }
}

/// Buys until sold out; returns the numbers bought.
fn grab<L: Locker, S: TicketStore>(lock: &L, store: &S) -> Result<Vec<u64>, BoxError> {
    let mut bought = Vec::new();
    while let Some(ticket) = buy(lock, store)? {
        bought.push(ticket);
    }
    Ok(bought)
}

/// What a worker process runs once released: its purchases.
type Purchases = Box<dyn FnOnce() -> Result<Vec<u64>, BoxError>>;

/// Prepares one worker process of a process backend (connected, for the manager's), and
/// gives what it runs once released.
fn worker(backend: Backend, o: &Objects) -> Result<Purchases, BoxError> {
    match backend {
        Backend::ManagerLock | Backend::ManagerChained | Backend::ManagerAtomic => {
            let (lock, value) = o.connect()?;
            Ok(Box::new(move || match backend {
                Backend::ManagerLock => grab(&lock, &ValueTickets::new(value)),
                Backend::ManagerChained => {
                    let store = ValueTickets::new(value);
                    let mut bought = Vec::new();
                    while let Some(ticket) = store.buy_chained(&lock)? {
                        bought.push(ticket);
                    }
                    Ok(bought)
                }
                _ => grab(&NoLock, &AtomicTickets::new(value)),
            }))
        }
        Backend::FileLock => {
            let (lock, store) = (
                FileLock::new(o.dir.join("db.lock")),
                JsonFileTickets::open(o.dir.join("db.json")),
            );
            Ok(Box::new(move || grab(&lock, &store)))
        }
        Backend::LocalLock => Err("LocalLock runs on threads, not processes".into()),
    }
}

/// Fails unless exactly `n` tickets were sold, each number once.
fn check(backend: Backend, n: u64, sold: &[u64]) -> Result<(), BoxError> {
    check_sale(backend.name(), n, sold)
}

/// Tickets per second for one run of `backend` with `w` workers.
fn run_once(
    backend: Backend,
    w: usize,
    n: u64,
    o: &Objects,
    manager: &Client,
) -> Result<f64, BoxError> {
    let (elapsed, sold) = match backend {
        Backend::LocalLock => local_threads(w, n)?,
        _ => {
            match backend {
                Backend::FileLock => {
                    JsonFileTickets::create(o.dir.join("db.json"), n)?;
                }
                _ => Value::<i64>::from_id(manager, o.value).set(&(n as i64))?,
            }
            let objects = o.clone();
            run_to_completion(w, move || worker(backend, &objects))?
        }
    };
    check(backend, n, &sold)?;
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// The four-call grab once more, with `w` worker processes stamping their critical sections
/// ([`ticket_phases::stamped_grab`]); checks the sale and gives the stamps.
fn stamped_run(w: usize, n: u64, o: &Objects, manager: &Client) -> Result<Vec<Stamped>, BoxError> {
    Value::<i64>::from_id(manager, o.value).set(&(n as i64))?;
    let objects = o.clone();
    let (_, words) = run_to_completion(w, move || {
        let (lock, value) = objects.connect()?;
        Ok(move || ticket_phases::stamped_grab(&lock, &value))
    })?;
    let sold = ticket_phases::stamps(&words);
    let numbers: Vec<u64> = sold.iter().map(|s| s.ticket).collect();
    check_sale("stamped manager Lock + Value", n, &numbers)?;
    Ok(sold)
}

/// The manager's two ticket backends, set up for another section to run beside its own
/// contenders (the Redis section's grabs).
pub struct ManagerGrabs {
    manager: Client,
    objects: Objects,
    // Held so that the unnamed objects live while the workers use them by id.
    _lock: Lock,
    _value: Value<i64>,
    _dir: tempfile::TempDir,
}

impl ManagerGrabs {
    /// A lock and a value of their own on the manager's Unix socket.
    pub fn new(servers: &Servers) -> Result<ManagerGrabs, BoxError> {
        let manager = servers.client(&servers.agora_unix)?;
        let (lock, value) = (manager.lock()?, manager.value(&0i64)?);
        let dir = tempfile::Builder::new().prefix("agora-grabs-").tempdir()?;
        let objects = Objects {
            address: servers.agora_unix.clone(),
            authkey: servers.authkey.clone(),
            lock: lock.id(),
            value: value.id(),
            dir: dir.path().to_owned(),
        };
        Ok(ManagerGrabs {
            manager,
            objects,
            _lock: lock,
            _value: value,
            _dir: dir,
        })
    }

    /// Tickets per second selling `n` tickets with `w` worker processes: with the manager's
    /// `Lock` + `Value` when `locked`, else with its atomic `fetch_add`. Checks the sale.
    pub fn run(&self, locked: bool, w: usize, n: u64) -> Result<f64, BoxError> {
        let backend = if locked {
            Backend::ManagerLock
        } else {
            Backend::ManagerAtomic
        };
        run_once(backend, w, n, &self.objects, &self.manager)
    }
}

/// Fails unless exactly `n` tickets were sold, each number once (for another section's
/// contenders).
pub fn check_sale(what: &str, n: u64, sold: &[u64]) -> Result<(), BoxError> {
    let distinct: BTreeSet<u64> = sold.iter().copied().collect();
    if sold.len() as u64 != n || distinct.len() != sold.len() {
        return Err(format!(
            "{what}: {n} tickets for sale, {} sold, {} distinct: a ticket was sold twice or lost",
            sold.len(),
            distinct.len()
        )
        .into());
    }
    Ok(())
}

/// The in-process ceiling: `w` threads on a `LocalLock`.
fn local_threads(w: usize, n: u64) -> Result<(Duration, Vec<u64>), BoxError> {
    let lock = LocalLock::new();
    let store = LocalTickets::new(n);
    let start = monotonic_ns();
    let sold = std::thread::scope(|s| {
        let handles: Vec<_> = (0..w)
            .map(|_| s.spawn(|| grab(&lock, &store).map_err(|e| e.to_string())))
            .collect();
        let mut all = Vec::new();
        for h in handles {
            let part = h
                .join()
                .map_err(|_| "a ticket thread panicked".to_owned())??;
            all.extend(part);
        }
        Ok::<_, String>(all)
    })?;
    Ok((Duration::from_nanos(monotonic_ns() - start), sold))
}

const GROUP: Group = Group {
    title: "tickets (ratio vs manager Lock)",
    unit: "tickets/s",
};

/// The measurements [`run`] makes, for the progress bar.
pub fn steps(rounds: usize, workers: &[usize]) -> u64 {
    // Every backend at every worker count, the stamped grab at every worker count, and the
    // raw ping-pong once a round.
    (rounds * (workers.len() * (Backend::ALL.len() + 1) + 1)) as u64
}

/// How long the raw ping-pong the targets are measured against runs each round.
const RAW_SLICE: Duration = Duration::from_millis(300);

/// Runs the section: every backend at every worker count, interleaved round by round.
pub fn run(
    servers: &Servers,
    rounds: usize,
    workers: &[usize],
    scale: u64,
    dir: &Path,
    report: &mut Report,
    progress: &Progress,
) -> Result<(Vec<Curve>, Vec<String>), BoxError> {
    let manager = servers.client(&servers.agora_unix)?;
    let mut raw = RawStream::connect(&servers.echo_unix)?;
    let (message, mut buf) = ([0x90u8; 21], [0u8; 21]);
    let mut raw_rate = Samples::default();
    // Kept for the whole section: the workers' proxies, made from the ids, hold nothing, and
    // an unnamed object goes with the last proxy that does.
    let (lock, value) = (manager.lock()?, manager.value(&0i64)?);
    let objects = Objects {
        address: servers.agora_unix.clone(),
        authkey: servers.authkey.clone(),
        lock: lock.id(),
        value: value.id(),
        dir: dir.to_owned(),
    };
    let mut samples = vec![vec![Samples::default(); workers.len()]; Backend::ALL.len()];
    let mut phases = PhaseSamples::default();
    for round in 0..rounds {
        raw_rate
            .0
            .push(progress.measure("tickets", "raw ping-pong", round, || {
                per_second(RAW_SLICE, || Ok(raw.round_trip(&message, &mut buf)?))
            })?);
        for (wi, &w) in workers.iter().enumerate() {
            for (bi, &backend) in Backend::ALL.iter().enumerate() {
                let what = format!("{} x{w}", backend.name());
                let rate = progress.measure("tickets", &what, round, || {
                    run_once(backend, w, backend.tickets(scale), &objects, &manager)
                })?;
                samples[bi][wi].0.push(rate);
            }
            let stamped = progress.measure("tickets", &format!("stamped x{w}"), round, || {
                stamped_run(w, Backend::ManagerLock.tickets(scale), &objects, &manager)
            })?;
            if let Some(p) = ticket_phases::phases(stamped) {
                phases.push(w, p);
            }
        }
    }
    let mut curves = Vec::new();
    for (bi, &backend) in Backend::ALL.iter().enumerate() {
        let mut points = Vec::new();
        for (wi, &w) in workers.iter().enumerate() {
            let s = &samples[bi][wi];
            let baseline = samples[0][wi].median();
            let ratio = (backend != Backend::ManagerLock).then_some(baseline);
            report.row(&GROUP, "unix", w, backend.name(), s, ratio);
            points.push((w, s.median()));
        }
        curves.push(Curve {
            name: backend.name().to_owned(),
            points,
        });
    }
    phases.report(workers, report);
    let targets = targets(workers, &samples, raw_rate.median());
    Ok((curves, targets))
}

/// The targets for the ticket grab, each with the figures it was judged on.
fn targets(workers: &[usize], samples: &[Vec<Samples>], raw_per_s: f64) -> Vec<String> {
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let medians = |backend: Backend| -> Vec<f64> {
        let i = Backend::ALL.iter().position(|&b| b == backend).unwrap_or(0);
        samples[i].iter().map(Samples::median).collect()
    };
    let locked = medians(Backend::ManagerLock);
    let atomic = medians(Backend::ManagerAtomic);
    let mut lines = Vec::new();
    if let Some(one) = workers.iter().position(|&w| w == 1) {
        for backend in [Backend::ManagerLock, Backend::ManagerChained] {
            let sold = medians(backend);
            let share = sold[one] / (raw_per_s / 4.0);
            lines.push(format!(
                "tickets: {} at W=1 sells {} tickets/s = {share:.2}x (raw round trips/s / 4 = {} / 4) (target >= 0.8: {})",
                backend.name(),
                rate(sold[one]),
                rate(raw_per_s),
                met(share >= 0.8)
            ));
            if let Some((most, &w)) = workers.iter().enumerate().max_by_key(|&(_, w)| *w) {
                let kept = sold[most] / sold[one];
                lines.push(format!(
                    "tickets: {} at W={w} sells {} tickets/s = {kept:.2}x W=1's {} (target >= 0.8: {})",
                    backend.name(),
                    rate(sold[most]),
                    rate(sold[one]),
                    met(kept >= 0.8)
                ));
            }
        }
    }
    let slowest = atomic
        .iter()
        .zip(&locked)
        .map(|(a, l)| a / l)
        .fold(f64::INFINITY, f64::min);
    lines.push(format!(
        "tickets: the atomic fetch_add sells at least {slowest:.1}x the tickets/s of Lock + Value at every W (target >= 3: {})",
        met(slowest >= 3.0)
    ));
    lines
}
