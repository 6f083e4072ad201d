//! A SIGKILL soak: workers in every role share queues, locks, values and a semaphore through
//! one manager while a killer SIGKILLs a random worker every few milliseconds and starts a
//! replacement in the same role. Afterwards a checker reads what every worker wrote down and
//! judges the invariants: nothing lost, nothing given twice, never two holders at once.
//!
//! ```text
//! cargo run --release --example soak -- [--seconds 60] [--kill-every-ms 200] [--workers 2]
//!     [--store etcd://HOST:PORT[,HOST:PORT...][/PREFIX]]
//! ```
//!
//! `--store` runs it on a manager keeping its objects in etcd (this crate built with the
//! feature `etcd`); `tests/soak_etcd.rs` runs it so on a three-member cluster and stops one
//! member half way.
//!
//! `--workers` is the number of workers per role (one plain-get consumer, and two more
//! semaphore users than that, so that the semaphore is contended). Exits with status 1 when an
//! invariant is broken, and then keeps the histories and prints where they are.
//!
//! # Roles
//!
//! - queue producer: puts items numbered uniquely (worker id and sequence number) in a
//!   bounded queue;
//! - queue consumer: `get_acked`, notes the item, `ack`: at-least-once, so an item it got and
//!   did not acknowledge before it was killed comes back to another consumer;
//! - plain queue consumer: `get`: at-most-once, an item in its hands when it is killed is
//!   lost. Such losses are counted, and judged only against the number of its kills;
//! - joinable-queue producer and consumer (`get`, note, `task_done`); at the end `join`
//!   must return;
//! - lock holder: under a lock, writes a shared pair in two steps (`a`, then `b`); a holder
//!   killed between them leaves `a != b`, which the next holder, told by
//!   [`is_owner_dead`](agora::LockGuard::is_owner_dead), repairs;
//! - ticket seller: under another lock reads the number sold, and sells the next ticket
//!   while some of the fixed supply is left, half the time in four calls and half the time in
//!   two chains (`acquire_then` the read, `unlock_after` the write);
//! - `fetch_add` seller: takes numbers from one atomic counter;
//! - semaphore user: acquires one of [`SEMAPHORE_LIMIT`] permits, stays inside a moment.
//!
//! # Histories
//!
//! Each worker appends one line per event to its own file (`w<id>.log`), one `write` a line,
//! with the nanoseconds since the soak's start on the system-wide monotonic clock (a forked
//! worker shares the parent's `Instant` base). A SIGKILL can only cut the last line, which the
//! checker ignores. Lines are written where the checker needs them to be conservative: a lock
//! is noted as taken after `acquire` returns and as given back before `release`, so the
//! recorded intervals lie inside the real ones, and overlapping records prove a real overlap.
//! The killer notes each kill (`parent.log`) before it sends the signal: a killed holder's
//! open interval ends there, before the manager can have given its lock to anybody else.

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use agora::{JoinableQueue, Lock, Manager, Process, Queue, Semaphore, Value};

/// Permits of the semaphore: never more users than this inside at once.
pub const SEMAPHORE_LIMIT: usize = 2;
/// Room in each queue, so that producers cannot run far ahead of consumers.
const QUEUE_SIZE: usize = 100;
/// Tickets for sale per second of soak: enough to sell out mid-run and test the supply.
const TICKETS_PER_SECOND: u64 = 100;
/// How long a consumer waits for an item before it looks whether it should stop.
const POLL: Duration = Duration::from_millis(50);

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long the killer kills.
    pub duration: Duration,
    /// Time between two kills.
    pub kill_every: Duration,
    /// Workers per role.
    pub workers: usize,
    /// Where the manager keeps the objects.
    pub store: agora::StoreSpec,
}

/// The part a worker plays; a killed worker is replaced by one in the same role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Puts items in the queue.
    QueueProducer,
    /// `get_acked`, note, `ack`.
    QueueConsumer,
    /// `get`, note: at-most-once.
    PlainConsumer,
    /// Puts items in the joinable queue.
    JoinableProducer,
    /// `get`, note, `task_done`.
    JoinableConsumer,
    /// Writes the two-step pair under the lock.
    LockHolder,
    /// Sells tickets under the ticket lock.
    TicketSeller,
    /// Takes numbers with `fetch_add`.
    FetchAddSeller,
    /// Goes in and out of the semaphore.
    SemaphoreUser,
}

impl Role {
    const ALL: [Role; 9] = [
        Role::QueueProducer,
        Role::QueueConsumer,
        Role::PlainConsumer,
        Role::JoinableProducer,
        Role::JoinableConsumer,
        Role::LockHolder,
        Role::TicketSeller,
        Role::FetchAddSeller,
        Role::SemaphoreUser,
    ];

    fn name(self) -> &'static str {
        match self {
            Role::QueueProducer => "queue-producer",
            Role::QueueConsumer => "queue-consumer",
            Role::PlainConsumer => "plain-consumer",
            Role::JoinableProducer => "joinable-producer",
            Role::JoinableConsumer => "joinable-consumer",
            Role::LockHolder => "lock-holder",
            Role::TicketSeller => "ticket-seller",
            Role::FetchAddSeller => "fetch-add-seller",
            Role::SemaphoreUser => "semaphore-user",
        }
    }

    fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// How many workers play this role.
    fn count(self, workers: usize) -> usize {
        match self {
            Role::PlainConsumer => 1,
            Role::SemaphoreUser => workers + SEMAPHORE_LIMIT,
            _ => workers,
        }
    }

    fn is_producer(self) -> bool {
        matches!(self, Role::QueueProducer | Role::JoinableProducer)
    }
}

/// The shared objects, cloned into every worker.
#[derive(Clone)]
struct Shared {
    queue: Queue<u64>,
    joinable: JoinableQueue<u64>,
    lock: Lock,
    a: Value<u64>,
    b: Value<u64>,
    ticket_lock: Lock,
    sold: Value<u64>,
    counter: Value<u64>,
    semaphore: Semaphore,
    /// 0 while running, 1 when producers must stop, 2 when everybody must.
    phase: Value<u64>,
    supply: u64,
    epoch: Instant,
}

/// An append-only history: one `write` per line, so that a SIGKILL can only cut the last.
struct History {
    file: File,
    epoch: Instant,
}

impl History {
    fn create(path: &Path, epoch: Instant) -> std::io::Result<History> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)?;
        Ok(History { file, epoch })
    }

    /// Appends `<ns since the start> <event>`.
    fn note(&mut self, event: fmt::Arguments<'_>) -> std::io::Result<()> {
        let ns = self.epoch.elapsed().as_nanos();
        self.file.write_all(format!("{ns} {event}\n").as_bytes())
    }
}

/// A small deterministic generator for jitter and the killer's choices.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A consumer's work on an item: a moment in which a kill leaves the item unsettled.
fn process(rng: &mut Rng) {
    std::thread::sleep(Duration::from_micros(rng.below(1000)));
}

type BoxResult<T> = Result<T, Box<dyn Error>>;

/// One worker's life, in a forked child.
fn work(role: Role, id: u64, s: &Shared, dir: &Path) -> BoxResult<()> {
    let mut h = History::create(&dir.join(format!("w{id}.log")), s.epoch)?;
    let mut rng = Rng(id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    match role {
        Role::QueueProducer | Role::JoinableProducer => {
            let (tried, put) = match role {
                Role::QueueProducer => ("try", "put"),
                _ => ("jtry", "jput"),
            };
            let mut seq = 0u64;
            'items: while s.phase.get()? == 0 {
                seq += 1;
                let item = id << 32 | seq;
                h.note(format_args!("{tried} {item}"))?;
                loop {
                    let done = match role {
                        Role::QueueProducer => s.queue.put_timeout(&item, POLL)?,
                        _ => s.joinable.put_timeout(&item, POLL)?,
                    };
                    if done.is_some() {
                        h.note(format_args!("{put} {item}"))?;
                        break;
                    }
                    if s.phase.get()? != 0 {
                        break 'items;
                    }
                }
            }
        }
        Role::QueueConsumer => loop {
            match s.queue.get_acked_timeout(POLL)? {
                Some(got) => {
                    h.note(format_args!("got {}", got.item))?;
                    process(&mut rng);
                    s.queue.ack(got.receipt)?;
                    h.note(format_args!("ack {}", got.item))?;
                }
                None if s.phase.get()? >= 2 => break,
                None => {}
            }
        },
        Role::PlainConsumer => loop {
            match s.queue.get_timeout(POLL)? {
                Some(item) => h.note(format_args!("pgot {item}"))?,
                None if s.phase.get()? >= 2 => break,
                None => {}
            }
        },
        Role::JoinableConsumer => loop {
            match s.joinable.get_timeout(POLL)? {
                Some(item) => {
                    h.note(format_args!("jgot {item}"))?;
                    process(&mut rng);
                    s.joinable.task_done()?;
                    h.note(format_args!("jdone {item}"))?;
                }
                None if s.phase.get()? >= 2 => break,
                None => {}
            }
        },
        Role::LockHolder => {
            while s.phase.get()? == 0 {
                let guard = s.lock.acquire()?;
                let dead = guard.is_owner_dead();
                let (a, b) = (s.a.get()?, s.b.get()?);
                h.note(format_args!("lacq {} {a} {b}", u8::from(dead)))?;
                if a != b && dead {
                    s.b.set(&a)?;
                    h.note(format_args!("lrepair {a} {b}"))?;
                }
                // The two steps: a holder killed between them leaves a != b.
                s.a.set(&(a + 1))?;
                std::thread::sleep(Duration::from_micros(rng.below(300)));
                s.b.set(&(a + 1))?;
                h.note(format_args!("lrel"))?;
                guard.unlock()?;
            }
        }
        Role::TicketSeller => {
            while s.phase.get()? == 0 {
                // Half the sales in four calls, half in two chains (the read with the
                // acquire, the write with the release): a seller killed anywhere in either
                // must never let a ticket be sold twice.
                let sold = if rng.below(2) == 0 {
                    let guard = s.ticket_lock.acquire()?;
                    if guard.is_owner_dead() {
                        h.note(format_args!("tdead"))?;
                    }
                    let sold = s.sold.get()?;
                    if sold < s.supply {
                        s.sold.set(&(sold + 1))?;
                        // Noted once sold, under the lock: a seller killed before this line
                        // sold a ticket nobody knows of, never one sold twice.
                        h.note(format_args!("sell {}", sold + 1))?;
                    }
                    guard.unlock()?;
                    sold
                } else {
                    let (guard, sold) = s.ticket_lock.acquire_then(s.sold.get_cmd())?;
                    if guard.is_owner_dead() {
                        h.note(format_args!("tdead"))?;
                    }
                    if sold < s.supply {
                        guard.unlock_after(s.sold.set_cmd(&(sold + 1)))?;
                        // Noted after the release that went with the write: a seller killed
                        // in between sold a ticket nobody knows of, never one sold twice.
                        h.note(format_args!("sell {}", sold + 1))?;
                    } else {
                        guard.unlock()?;
                    }
                    sold
                };
                if sold >= s.supply {
                    h.note(format_args!("soldout {sold}"))?;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        Role::FetchAddSeller => {
            while s.phase.get()? == 0 {
                let number = s.counter.fetch_add(1)?;
                h.note(format_args!("fa {number}"))?;
            }
        }
        Role::SemaphoreUser => {
            while s.phase.get()? == 0 {
                let permit = s.semaphore.acquire()?;
                h.note(format_args!("sin {}", u8::from(permit.is_owner_dead())))?;
                std::thread::sleep(Duration::from_micros(rng.below(2000)));
                h.note(format_args!("sout"))?;
                permit.release()?;
            }
        }
    }
    h.note(format_args!("exit"))?;
    Ok(())
}

/// A running worker, as the killer knows it.
struct Worker {
    id: u64,
    role: Role,
    process: Process,
}

/// Runs the soak, with its histories in `dir`, and judges them.
///
/// Forks its workers from the calling thread: call it from a program (or test) that runs no
/// other thread, which is why the killer is this thread's loop and not a thread of its own.
pub fn run(config: &Config, dir: &Path) -> BoxResult<Report> {
    run_with(config, dir, || {})
}

/// [`run`], calling `midway` once when half of the killing time has passed (a test stops an
/// etcd member there).
pub fn run_with(config: &Config, dir: &Path, midway: impl FnOnce()) -> BoxResult<Report> {
    let mut midway = Some(midway);
    let epoch = Instant::now();
    let manager = Manager::builder().store(config.store.clone()).spawn()?;
    let supply = (TICKETS_PER_SECOND * config.duration.as_secs().max(1)).max(50);
    let shared = Shared {
        queue: manager.queue(QUEUE_SIZE)?,
        joinable: manager.joinable_queue(QUEUE_SIZE)?,
        lock: manager.lock()?,
        a: manager.value(&0u64)?,
        b: manager.value(&0u64)?,
        ticket_lock: manager.lock()?,
        sold: manager.value(&0u64)?,
        counter: manager.value(&0u64)?,
        semaphore: manager.semaphore(SEMAPHORE_LIMIT)?,
        phase: manager.value(&0u64)?,
        supply,
        epoch,
    };
    let mut parent = History::create(&dir.join("parent.log"), epoch)?;
    let mut failures = Vec::new();
    let mut next_id = 0u64;
    let mut spawn = |role: Role, parent: &mut History| -> BoxResult<Worker> {
        next_id += 1;
        let id = next_id;
        parent.note(format_args!("spawn {id} {}", role.name()))?;
        let s = shared.clone();
        let process = Process::spawn_fallible(move || work(role, id, &s, dir))?;
        Ok(Worker { id, role, process })
    };
    let mut workers = Vec::new();
    for role in Role::ALL {
        for _ in 0..role.count(config.workers) {
            workers.push(spawn(role, &mut parent)?);
        }
    }

    // The killer.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        | 1;
    parent.note(format_args!("seed {seed}"))?;
    let mut rng = Rng(seed);
    let end = Instant::now() + config.duration;
    let half = Instant::now() + config.duration / 2;
    let mut kills = 0u64;
    while Instant::now() < end {
        if Instant::now() >= half {
            if let Some(midway) = midway.take() {
                parent.note(format_args!("midway"))?;
                midway();
            }
        }
        std::thread::sleep(
            config
                .kill_every
                .min(end.saturating_duration_since(Instant::now())),
        );
        for w in &mut workers {
            if let Some(status) = w.process.try_join()? {
                failures.push(format!(
                    "worker {} ({}) exited by itself while running: {status}",
                    w.id,
                    w.role.name()
                ));
                *w = spawn(w.role, &mut parent)?;
            }
        }
        let at = rng.below(workers.len() as u64) as usize;
        let mut victim = workers.swap_remove(at);
        parent.note(format_args!("kill {}", victim.id))?;
        victim.process.kill()?;
        victim.process.join()?;
        kills += 1;
        workers.push(spawn(victim.role, &mut parent)?);
    }

    // Producers stop; the joinable queue's consumers finish its items, so join returns.
    shared.phase.set(&1)?;
    for w in workers.iter_mut().filter(|w| w.role.is_producer()) {
        stop(w, &mut failures)?;
    }
    let joined = shared
        .joinable
        .join_timeout(Duration::from_secs(60))?
        .is_some();
    parent.note(format_args!("join {}", u8::from(joined)))?;
    shared.phase.set(&2)?;
    for w in workers.iter_mut().filter(|w| !w.role.is_producer()) {
        stop(w, &mut failures)?;
    }
    // What is left in the queues, including items of killed consumers given back.
    while let Some(item) = shared.queue.get_timeout(Duration::from_millis(500))? {
        parent.note(format_args!("drain {item}"))?;
    }
    while let Some(item) = shared.joinable.try_get()? {
        parent.note(format_args!("jdrain {item}"))?;
    }
    let (a, b) = (shared.a.get()?, shared.b.get()?);
    parent.note(format_args!("lfinal {a} {b}"))?;
    let sold = shared.sold.get()?;
    parent.note(format_args!("sold {sold}"))?;
    drop(parent);
    drop(manager);

    let mut report = check(dir, supply)?;
    report.elapsed = epoch.elapsed();
    if report.kills != kills {
        failures.push(format!(
            "{kills} kills made, {} in the history",
            report.kills
        ));
    }
    report.verdicts.push(Verdict {
        name: "workers",
        failures,
        detail: "every worker not killed ran until told to stop, then exited with 0".into(),
    });
    Ok(report)
}

/// A failure for every number that more than one worker claimed (a ticket sold, a number taken).
fn claimed_twice(claims: &BTreeMap<u64, Vec<u64>>, noun: &str, verb: &str) -> Vec<String> {
    claims
        .iter()
        .filter(|(_, by)| by.len() > 1)
        .map(|(n, by)| format!("{noun} {n} {verb} by workers {by:?}"))
        .collect()
}

/// Waits for a worker told to stop; one that does not within 30 s is killed and reported.
fn stop(w: &mut Worker, failures: &mut Vec<String>) -> BoxResult<()> {
    match w.process.join_timeout(Duration::from_secs(30))? {
        Some(status) if status.success() => {}
        Some(status) => failures.push(format!(
            "worker {} ({}) ended with {status}",
            w.id,
            w.role.name()
        )),
        None => {
            w.process.kill()?;
            w.process.join()?;
            failures.push(format!(
                "worker {} ({}) did not stop when told",
                w.id,
                w.role.name()
            ));
        }
    }
    Ok(())
}

/// One invariant's verdict.
#[derive(Debug)]
pub struct Verdict {
    /// The invariant.
    pub name: &'static str,
    /// What broke it (a few examples, and counts); empty when it held.
    pub failures: Vec<String>,
    /// What was checked, with figures.
    pub detail: String,
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Report {
    /// History lines read.
    pub events: u64,
    /// Workers killed.
    pub kills: u64,
    /// Items received again after their consumer was killed (queue and joinable queue).
    pub redeliveries: u64,
    /// Acquires told that the previous owner died (lock, ticket lock, semaphore).
    pub owner_died: u64,
    /// Pairs found half-written and repaired.
    pub repairs: u64,
    /// Items lost in a killed plain-get consumer's hands.
    pub plain_losses: u64,
    /// One verdict per invariant.
    pub verdicts: Vec<Verdict>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

impl Report {
    /// True when every invariant held.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.failures.is_empty())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "soak: {:.1} s, {} events, {} kills, {} redeliveries, {} owner-died notices \
             ({} pairs repaired), {} items lost by plain gets",
            self.elapsed.as_secs_f64(),
            self.events,
            self.kills,
            self.redeliveries,
            self.owner_died,
            self.repairs,
            self.plain_losses
        )?;
        for v in &self.verdicts {
            let verdict = if v.failures.is_empty() {
                "ok"
            } else {
                "VIOLATED"
            };
            writeln!(f, "  {:<16} {verdict:<8} {}", v.name, v.detail)?;
            for failure in v.failures.iter().take(5) {
                writeln!(f, "      {failure}")?;
            }
            if v.failures.len() > 5 {
                writeln!(f, "      ... {} more", v.failures.len() - 5)?;
            }
        }
        write!(
            f,
            "verdict: {}",
            if self.passed() { "PASS" } else { "FAIL" }
        )
    }
}

/// One history line: when, which worker (0: the parent), what, and its arguments.
struct Event {
    ns: u64,
    worker: u64,
    kind: String,
    args: Vec<u64>,
}

/// Reads every history of `dir`; a last line cut by a SIGKILL is ignored.
fn read_histories(dir: &Path) -> BoxResult<(Vec<Event>, HashMap<u64, Role>)> {
    let mut events = Vec::new();
    let mut roles = HashMap::new();
    for entry in fs::read_dir(dir)? {
        let path: PathBuf = entry?.path();
        let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or("");
        let worker = match name.strip_prefix('w') {
            Some(id) => id.parse()?,
            None if name == "parent" => 0,
            None => continue,
        };
        let text = fs::read_to_string(&path)?;
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        for line in complete.lines() {
            let mut words = line.split(' ');
            let ns = words.next().unwrap_or("").parse()?;
            let kind = words.next().unwrap_or("").to_string();
            if worker == 0 && kind == "spawn" {
                let id = words.next().unwrap_or("").parse()?;
                let role = words.next().and_then(Role::from_name);
                roles.insert(id, role.ok_or("a spawn line without a known role")?);
                continue;
            }
            let args = words.map(str::parse).collect::<Result<_, _>>()?;
            events.push(Event {
                ns,
                worker,
                kind,
                args,
            });
        }
    }
    events.sort_by_key(|e| e.ns);
    Ok((events, roles))
}

/// How an item was received.
struct Receipt {
    ns: u64,
    worker: u64,
    /// A get that gives the item back if its consumer dies before it is acknowledged.
    redeliverable: bool,
}

/// Reads the histories in `dir` and judges every invariant.
pub fn check(dir: &Path, supply: u64) -> BoxResult<Report> {
    let (events, roles) = read_histories(dir)?;
    let mut report = Report {
        events: events.len() as u64,
        ..Report::default()
    };
    let killed: HashMap<u64, u64> = events
        .iter()
        .filter(|e| e.worker == 0 && e.kind == "kill")
        .map(|e| (e.args[0], e.ns))
        .collect();
    report.kills = killed.len() as u64;
    let plain_kills = killed
        .keys()
        .filter(|id| roles.get(id) == Some(&Role::PlainConsumer))
        .count() as u64;

    // Queues: what was tried, put, received (in order), and settled (acked / done).
    #[derive(Default)]
    struct Items {
        tried: BTreeMap<u64, ()>,
        put: BTreeMap<u64, ()>,
        received: BTreeMap<u64, Vec<Receipt>>,
        settled: BTreeMap<(u64, u64), ()>,
    }
    let (mut q, mut jq) = (Items::default(), Items::default());
    let mut joined = None;
    // Locks and the semaphore: intervals per worker.
    let mut lock_open: HashMap<u64, u64> = HashMap::new();
    let mut lock_intervals = Vec::new();
    let mut lock_failures = Vec::new();
    let mut sem_open: HashMap<u64, u64> = HashMap::new();
    let mut sem_intervals = Vec::new();
    let mut sold: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut taken: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut final_sold = None;
    for e in &events {
        let arg = |i: usize| e.args.get(i).copied().unwrap_or(u64::MAX);
        let receipt = |redeliverable| Receipt {
            ns: e.ns,
            worker: e.worker,
            redeliverable,
        };
        match e.kind.as_str() {
            "try" => drop(q.tried.insert(arg(0), ())),
            "put" => drop(q.put.insert(arg(0), ())),
            "got" => q.received.entry(arg(0)).or_default().push(receipt(true)),
            "pgot" | "drain" => q.received.entry(arg(0)).or_default().push(receipt(false)),
            "ack" => drop(q.settled.insert((e.worker, arg(0)), ())),
            "jtry" => drop(jq.tried.insert(arg(0), ())),
            "jput" => drop(jq.put.insert(arg(0), ())),
            "jgot" => jq.received.entry(arg(0)).or_default().push(receipt(true)),
            "jdrain" => jq.received.entry(arg(0)).or_default().push(receipt(false)),
            "jdone" => drop(jq.settled.insert((e.worker, arg(0)), ())),
            "join" => joined = Some(arg(0) == 1),
            "lacq" => {
                let (dead, a, b) = (arg(0) == 1, arg(1), arg(2));
                if dead {
                    report.owner_died += 1;
                }
                if a != b && !dead {
                    lock_failures.push(format!(
                        "worker {} found the pair half-written ({a}, {b}) at {} ns with no \
                         owner-died notice",
                        e.worker, e.ns
                    ));
                }
                if let Some(open) = lock_open.insert(e.worker, e.ns) {
                    lock_failures.push(format!("worker {} acquired twice at {open}", e.worker));
                }
            }
            "lrepair" => report.repairs += 1,
            "lrel" => match lock_open.remove(&e.worker) {
                Some(start) => lock_intervals.push((start, e.ns, e.worker)),
                None => lock_failures.push(format!("worker {} released unheld", e.worker)),
            },
            "lfinal" if arg(0) != arg(1) => lock_failures.push(format!(
                "the pair ended half-written: ({}, {})",
                arg(0),
                arg(1)
            )),
            "tdead" => report.owner_died += 1,
            "sell" => sold.entry(arg(0)).or_default().push(e.worker),
            "sold" => final_sold = Some(arg(0)),
            "fa" => taken.entry(arg(0)).or_default().push(e.worker),
            "sin" => {
                if arg(0) == 1 {
                    report.owner_died += 1;
                }
                sem_open.insert(e.worker, e.ns);
            }
            "sout" => {
                if let Some(start) = sem_open.remove(&e.worker) {
                    sem_intervals.push((start, e.ns));
                }
            }
            _ => {}
        }
    }
    // A killed holder's open interval ends when it was killed; one not killed never ends.
    for (worker, start) in lock_open {
        let end = killed.get(&worker).copied().unwrap_or(u64::MAX);
        lock_intervals.push((start, end, worker));
    }
    for (worker, start) in sem_open {
        sem_intervals.push((start, killed.get(&worker).copied().unwrap_or(u64::MAX)));
    }

    for (name, items, settle) in [("queue", &q, "ack"), ("joinable queue", &jq, "task_done")] {
        let mut failures = Vec::new();
        let mut lost = 0u64;
        let mut again = 0u64;
        for item in items.put.keys() {
            if !items.received.contains_key(item) {
                lost += 1;
            }
        }
        for (item, receipts) in &items.received {
            if !items.tried.contains_key(item) {
                failures.push(format!("item {item} received but never put"));
            }
            // Every reception but the last must have been given back: a redeliverable get
            // by a consumer killed before it settled the item, and received again after.
            for pair in receipts.windows(2) {
                let (first, next) = (&pair[0], &pair[1]);
                let given_back = first.redeliverable
                    && !items.settled.contains_key(&(first.worker, *item))
                    && killed
                        .get(&first.worker)
                        .is_some_and(|&death| death < next.ns);
                if given_back {
                    again += 1;
                } else {
                    failures.push(format!(
                        "item {item} received by worker {} at {} ns and again by worker {} at \
                         {} ns, without a death before {settle} in between",
                        first.worker, first.ns, next.worker, next.ns
                    ));
                }
            }
        }
        report.redeliveries += again;
        let mut detail = format!(
            "{} items put, {} received, {again} redelivered, {lost} lost",
            items.put.len(),
            items.received.len()
        );
        if name == "queue" {
            // A plain get is at-most-once: each kill of its consumer may lose one item.
            report.plain_losses = lost;
            detail += &format!(" (allowed: {plain_kills} plain-get consumers killed)");
            if lost > plain_kills {
                failures.push(format!(
                    "{lost} items lost, more than the {plain_kills} plain-get consumers killed"
                ));
            }
        } else {
            if lost > 0 {
                failures.push(format!("{lost} items lost"));
            }
            match joined {
                Some(true) => detail += ", join returned",
                _ => failures.push("join did not return within 60 s".into()),
            }
        }
        if items.put.is_empty() {
            failures.push("not exercised: no item put".into());
        }
        report.verdicts.push(Verdict {
            name: if name == "queue" {
                "queue"
            } else {
                "joinable-queue"
            },
            failures,
            detail,
        });
    }

    lock_intervals.sort();
    let mut latest: Option<(u64, u64)> = None;
    for &(start, end, worker) in &lock_intervals {
        if let Some((until, holder)) = latest {
            if start < until {
                lock_failures.push(format!(
                    "workers {holder} and {worker} held the lock at once (at {start} ns)"
                ));
            }
        }
        if latest.is_none_or(|(until, _)| end > until) {
            latest = Some((end, worker));
        }
    }
    if lock_intervals.is_empty() {
        lock_failures.push("not exercised: the lock was never held".into());
    }
    report.verdicts.push(Verdict {
        name: "lock",
        failures: lock_failures,
        detail: format!(
            "{} holds, never two at once, pair consistent or repaired ({} repairs)",
            lock_intervals.len(),
            report.repairs
        ),
    });

    let mut ticket_failures = claimed_twice(&sold, "ticket", "sold");
    if let Some((&n, _)) = sold.iter().find(|(&n, _)| n == 0 || n > supply) {
        ticket_failures.push(format!("ticket {n} sold, outside 1..={supply}"));
    }
    if final_sold.is_some_and(|n| n > supply) {
        ticket_failures.push(format!("{final_sold:?} sold of a supply of {supply}"));
    }
    if sold.is_empty() {
        ticket_failures.push("not exercised: no ticket sold".into());
    }
    report.verdicts.push(Verdict {
        name: "tickets",
        failures: ticket_failures,
        detail: format!(
            "{} tickets sold (supply {supply}, {} counted by the manager), none twice",
            sold.len(),
            final_sold.unwrap_or(0)
        ),
    });

    let mut fa_failures = claimed_twice(&taken, "number", "taken");
    if taken.is_empty() {
        fa_failures.push("not exercised: no number taken".into());
    }
    report.verdicts.push(Verdict {
        name: "fetch_add",
        failures: fa_failures,
        detail: format!("{} numbers taken, all distinct", taken.len()),
    });

    // Sweep the semaphore's intervals: ends before starts at the same instant.
    let mut edges: Vec<(u64, i64)> = sem_intervals
        .iter()
        .flat_map(|&(start, end)| [(start, 1), (end, -1)])
        .collect();
    edges.sort();
    let (mut inside, mut most) = (0i64, 0i64);
    let mut sem_failures = Vec::new();
    for (ns, delta) in edges {
        inside += delta;
        if inside > most {
            most = inside;
        }
        if inside > SEMAPHORE_LIMIT as i64 && delta > 0 {
            sem_failures.push(format!("{inside} users inside at {ns} ns"));
        }
    }
    if sem_intervals.is_empty() {
        sem_failures.push("not exercised: nobody entered".into());
    }
    report.verdicts.push(Verdict {
        name: "semaphore",
        failures: sem_failures,
        detail: format!(
            "{} entries, at most {most} inside at once (limit {SEMAPHORE_LIMIT})",
            sem_intervals.len()
        ),
    });
    Ok(report)
}

fn parse_args() -> Option<Config> {
    let mut config = Config {
        duration: Duration::from_secs(60),
        kill_every: Duration::from_millis(200),
        workers: 2,
        store: agora::StoreSpec::Memory,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let text = args.next()?;
        if arg == "--store" {
            config.store = text.parse().ok()?;
            continue;
        }
        let value: u64 = text.parse().ok()?;
        match arg.as_str() {
            "--seconds" => config.duration = Duration::from_secs(value),
            "--kill-every-ms" if value > 0 => config.kill_every = Duration::from_millis(value),
            "--workers" if value > 0 => config.workers = value as usize,
            _ => return None,
        }
    }
    Some(config)
}

fn main() -> ExitCode {
    let Some(config) = parse_args() else {
        eprintln!("usage: soak [--seconds N] [--kill-every-ms M] [--workers W] [--store SPEC]");
        return ExitCode::from(2);
    };
    let dir = match tempfile::Builder::new().prefix("agora-soak-").tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("soak: cannot make a directory for the histories: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&config, dir.path()) {
        Ok(report) if report.passed() => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Ok(report) => {
            println!("{report}");
            println!("histories kept in {}", dir.keep().display());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("soak: {e}");
            println!("histories kept in {}", dir.keep().display());
            ExitCode::FAILURE
        }
    }
}
