//! The blocking objects: queue put+get and lock acquire+release round trips from one client,
//! queue items per second between producer and consumer processes (with and without
//! batching) beside a raw pipe between the same processes, and lock pairs per second with
//! processes contending. Every figure sits beside its raw ceiling measured in the same rounds.

use std::time::{Duration, Instant};

use agora::{Client, Lock, Queue};

use crate::harness::{
    per_second, rate, raw_polls, run_workers, until, RawStream, Samples, Servers,
};
use crate::pipe;
use crate::progress::Progress;
use crate::report::{Group, Report};
use crate::rpc::{transports, Transport};

type BoxError = Box<dyn std::error::Error>;

/// Items per `put_many` / `get_many` call in the batched runs (and per raw pipe write).
pub const BATCH: usize = 128;

const ONE_CLIENT: Group = Group {
    title: "blocking: one client (ratio vs raw ping-pong)",
    unit: "ops/s",
};

const QUEUE: Group = Group {
    title: "queue between processes (ratio vs a raw pipe between the same processes)",
    unit: "items/s",
};

const LOCKS: Group = Group {
    title: "lock between processes (ratio vs raw ping-pong over unix)",
    unit: "pairs/s",
};

/// The producer/consumer layouts: 1 to 1, and 4 to 4.
const LAYOUTS: [(usize, usize); 2] = [(1, 1), (4, 4)];

/// Lock contention: 1 process alone, 4 contending.
const LOCKERS: [usize; 2] = [1, 4];

/// The measurements [`run`] makes, for the progress bar.
pub fn steps(rounds: usize) -> u64 {
    let one_client = 2 * 3;
    let processes = LAYOUTS.len() * Carrier::ALL.len() + LOCKERS.len();
    (rounds * (one_client + processes)) as u64
}

/// How long a benchmark producer or consumer waits for room or an item before it looks at the
/// clock again (so that none outlives its deadline by more than this).
const PATIENCE: Duration = Duration::from_millis(20);

/// The bytes of the `lock.acquire` request the raw ping-pong mirrors, so both move the same
/// size: `[0, 1, "lock.acquire", [id, true, nil, 1]]`.
fn acquire_request_bytes(lock_id: u64) -> Vec<u8> {
    let mut id = Vec::new();
    agora_proto::encode::uint(&mut id, lock_id);
    let mut out = Vec::new();
    agora_proto::encode::request(
        &mut out,
        1,
        "lock.acquire",
        &[&id, &[0xc3], &[0xc0], &[0x01]],
    );
    out
}

/// How the items of a producer/consumer run travel.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Carrier {
    /// A manager queue, one item a call.
    Unbatched,
    /// A manager queue, [`BATCH`] items a call.
    Batched,
    /// A raw pipe, [`BATCH`] framed items a write: the ceiling.
    Pipe,
}

impl Carrier {
    const ALL: [Carrier; 3] = [Carrier::Unbatched, Carrier::Batched, Carrier::Pipe];

    fn label(self, (producers, consumers): (usize, usize)) -> String {
        let how = match self {
            Carrier::Unbatched => "manager queue unbatched".to_owned(),
            Carrier::Batched => format!("manager queue batched x{BATCH}"),
            Carrier::Pipe => format!("raw pipe, x{BATCH} a write"),
        };
        format!("{producers}p/{consumers}c {how}")
    }

    /// What the table's socket column says.
    fn transport(self) -> &'static str {
        match self {
            Carrier::Pipe => "pipe",
            _ => "unix",
        }
    }
}

/// Items per second from `layout.0` producer processes to `layout.1` consumer processes.
fn flow(
    servers: &Servers,
    carrier: Carrier,
    layout: (usize, usize),
    duration: Duration,
) -> Result<f64, BoxError> {
    match carrier {
        Carrier::Pipe => {
            let batch: Vec<u64> = (0..BATCH as u64).collect();
            pipe::flow(layout.0, layout.1, &batch, duration, PATIENCE)
        }
        _ => queue_flow(servers, carrier == Carrier::Batched, layout, duration),
    }
}

/// Moves items from `layout.0` processes to `layout.1` processes through a fresh bounded
/// queue for `duration`; returns the items consumed per second.
fn queue_flow(
    servers: &Servers,
    batched: bool,
    (producers, consumers): (usize, usize),
    duration: Duration,
) -> Result<f64, BoxError> {
    let setup = servers.client(&servers.agora_unix)?;
    let queue = setup.queue::<u64>(4 * BATCH)?;
    let (address, key, queue_id) = (
        servers.agora_unix.clone(),
        servers.authkey.clone(),
        queue.id(),
    );
    let items_per_s = run_workers(producers + consumers, duration, move |index, deadline| {
        let client = Client::connect(&address, &key)?;
        let q = Queue::<u64>::from_id(&client, queue_id);
        let mut consumed = 0u64;
        if index < producers {
            let batch: Vec<u64> = (0..BATCH as u64).collect();
            while Instant::now() < deadline {
                if batched {
                    q.put_many_timeout(&batch, PATIENCE)?;
                } else {
                    for i in 0..16 {
                        q.put_timeout(&i, PATIENCE)?;
                    }
                }
            }
        } else {
            while Instant::now() < deadline {
                if batched {
                    consumed += q
                        .get_many_timeout(BATCH, PATIENCE)?
                        .map_or(0, |items| items.len()) as u64;
                } else {
                    for _ in 0..16 {
                        consumed += u64::from(q.get_timeout(PATIENCE)?.is_some());
                    }
                }
            }
        }
        Ok(consumed)
    })?;
    setup.delete(queue.id())?;
    Ok(items_per_s)
}

/// Lock acquire+release pairs per second, `clients` processes contending for one lock.
fn lock_pairs(servers: &Servers, clients: usize, duration: Duration) -> Result<f64, BoxError> {
    let setup = servers.client(&servers.agora_unix)?;
    let lock = setup.lock_named("bench-contended")?;
    let (address, key, id) = (
        servers.agora_unix.clone(),
        servers.authkey.clone(),
        lock.id(),
    );
    run_workers(clients, duration, move |_, deadline| {
        let client = Client::connect(&address, &key)?;
        let lock = Lock::from_id(&client, id);
        Ok(until(deadline, || lock.acquire()?.unlock())?)
    })
}

/// Runs the section, adds its rows to `report`, and returns one line per target of the issue
/// saying whether this run met it.
pub fn run(
    servers: &Servers,
    rounds: usize,
    report: &mut Report,
    progress: &Progress,
) -> Result<Vec<String>, BoxError> {
    let mut targets = Vec::new();
    let mut raw_unix = f64::NAN;
    for t in &transports(servers) {
        let (raw, target) = one_client(servers, t, rounds, report, progress)?;
        if t.name == "unix" {
            raw_unix = raw;
        }
        targets.push(target);
    }
    targets.extend(processes(servers, rounds, raw_unix, report, progress)?);
    Ok(targets)
}

/// Queue put+get and lock acquire+release pairs per second from one client over `t`, beside
/// the raw ping-pong; returns the raw round trips/s and the lock's target line.
fn one_client(
    servers: &Servers,
    t: &Transport<'_>,
    rounds: usize,
    report: &mut Report,
    progress: &Progress,
) -> Result<(f64, String), BoxError> {
    let setup = servers.client(&servers.agora_unix)?;
    let lock = setup.lock_named("bench-lock")?;
    let queue = setup.queue_named::<u64>("bench-round-trip", 0)?;
    let message = acquire_request_bytes(lock.id());
    let client = servers.client(t.agora)?;
    let l = Lock::from_id(&client, lock.id());
    let q = Queue::<u64>::from_id(&client, queue.id());
    let mut raw = RawStream::connect(t.echo)?;
    let mut buf = vec![0u8; 1024];
    let raw_label = format!("raw ping-pong ({} B{})", message.len(), raw_polls());
    let (mut raw_s, mut queue_s, mut lock_s) =
        (Samples::default(), Samples::default(), Samples::default());
    let slice = Duration::from_millis(200);
    let section = format!("blocking/{}", t.name);
    for round in 0..rounds {
        raw_s
            .0
            .push(progress.measure(&section, &raw_label, round, || {
                per_second(slice, || Ok(raw.round_trip(&message, &mut buf)?))
            })?);
        queue_s
            .0
            .push(progress.measure(&section, "queue put+get", round, || {
                per_second(slice, || {
                    q.put(&7)?;
                    q.get()?;
                    Ok(())
                })
            })?);
        lock_s.0.push(
            progress.measure(&section, "lock acquire+release", round, || {
                per_second(slice, || Ok(l.acquire()?.unlock()?))
            })?,
        );
    }
    let base = raw_s.median();
    report.row(&ONE_CLIENT, t.name, 1, &raw_label, &raw_s, None);
    report.row(
        &ONE_CLIENT,
        t.name,
        1,
        "queue put+get pairs",
        &queue_s,
        Some(base),
    );
    report.row(
        &ONE_CLIENT,
        t.name,
        1,
        "lock acquire+release pairs",
        &lock_s,
        Some(base),
    );
    let cost = base / lock_s.median();
    let target = format!(
        "{}: an uncontended lock acquire+release pair costs {cost:.2} raw round trips \
         (target <= 2.5: {})",
        t.name,
        if cost <= 2.5 { "met" } else { "NOT met" }
    );
    progress.note(&format!(
        "  {}: raw {} rt/s, queue put+get {} pairs/s, lock {} pairs/s",
        t.name,
        rate(base),
        rate(queue_s.median()),
        rate(lock_s.median())
    ));
    Ok((base, target))
}

/// Producer/consumer items per second on every carrier and lock pairs per second with
/// processes contending, interleaved round by round; returns the batching target lines.
fn processes(
    servers: &Servers,
    rounds: usize,
    raw_unix: f64,
    report: &mut Report,
    progress: &Progress,
) -> Result<Vec<String>, BoxError> {
    let slice = Duration::from_millis(400);
    // [layout][carrier]
    let mut flow_s = vec![vec![Samples::default(); Carrier::ALL.len()]; LAYOUTS.len()];
    let mut lock_s = vec![Samples::default(); LOCKERS.len()];
    for round in 0..rounds {
        for (&layout, per_carrier) in LAYOUTS.iter().zip(&mut flow_s) {
            for (&carrier, s) in Carrier::ALL.iter().zip(per_carrier.iter_mut()) {
                let label = carrier.label(layout);
                s.0.push(progress.measure("queue", &label, round, || {
                    flow(servers, carrier, layout, slice)
                })?);
            }
        }
        for (&n, s) in LOCKERS.iter().zip(&mut lock_s) {
            let label = format!("{n} processes");
            s.0.push(progress.measure("lock", &label, round, || lock_pairs(servers, n, slice))?);
        }
    }
    let mut targets = Vec::new();
    for (&layout, per_carrier) in LAYOUTS.iter().zip(&flow_s) {
        targets.push(queue_rows(report, layout, per_carrier, progress));
    }
    for (&n, s) in LOCKERS.iter().zip(&lock_s) {
        let label = match n {
            1 => "lock pairs, uncontended".to_owned(),
            n => format!("lock pairs, {n} contending"),
        };
        report.row(&LOCKS, "unix", n, &label, s, Some(raw_unix));
    }
    Ok(targets)
}

/// The rows of one producer/consumer layout, each carrier against the raw pipe; returns the
/// batching target line.
fn queue_rows(
    report: &mut Report,
    layout: (usize, usize),
    per_carrier: &[Samples],
    progress: &Progress,
) -> String {
    // per_carrier follows Carrier::ALL, which lists the carriers in declaration order.
    let median = |c: Carrier| per_carrier[c as usize].median();
    let ceiling = median(Carrier::Pipe);
    for (&carrier, s) in Carrier::ALL.iter().zip(per_carrier) {
        let ratio = (carrier != Carrier::Pipe).then_some(ceiling);
        report.row(
            &QUEUE,
            carrier.transport(),
            layout.0 + layout.1,
            &carrier.label(layout),
            s,
            ratio,
        );
    }
    progress.note(&format!(
        "  queue {}p/{}c items/s: unbatched {}, batched {}, raw pipe {}",
        layout.0,
        layout.1,
        rate(median(Carrier::Unbatched)),
        rate(median(Carrier::Batched)),
        rate(ceiling)
    ));
    let gain = median(Carrier::Batched) / median(Carrier::Unbatched);
    format!(
        "queue {}p/{}c: put_many/get_many move {gain:.1}x the items/s of put/get \
         (target >= 10: {}); batched reaches {:.0}% of the raw pipe",
        layout.0,
        layout.1,
        if gain >= 10.0 { "met" } else { "NOT met" },
        100.0 * median(Carrier::Batched) / ceiling
    )
}
