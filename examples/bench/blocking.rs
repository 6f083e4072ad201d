//! The blocking objects: queue put+get and lock acquire+release round trips from one client,
//! queue items per second between producer and consumer processes (with and without
//! batching), and lock pairs per second with processes contending. Every figure sits beside
//! the raw ping-pong measured in the same rounds.

use std::time::{Duration, Instant};

use agora::{Address, Client, Lock, Queue, Value};

use crate::harness::{rate, run_workers, until, RawStream, Samples, Servers};
use crate::report::Report;

type BoxError = Box<dyn std::error::Error>;

/// Items per `put_many` / `get_many` call in the batched runs.
const BATCH: usize = 128;

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

/// Operations per second of `op`, run from this process for `duration`.
fn per_second(
    duration: Duration,
    mut op: impl FnMut() -> Result<(), BoxError>,
) -> Result<f64, BoxError> {
    let start = Instant::now();
    let n = until(start + duration, &mut op)?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

struct Transport<'a> {
    name: &'static str,
    agora: &'a Address,
    echo: &'a Address,
}

/// One producer/consumer configuration of the throughput runs.
#[derive(Clone, Copy)]
struct Flow {
    producers: u64,
    consumers: u64,
    batched: bool,
}

impl Flow {
    fn label(self) -> String {
        let how = if self.batched {
            format!("batched x{BATCH}")
        } else {
            "unbatched".to_owned()
        };
        format!(
            "queue items/s {}p/{}c {how}",
            self.producers, self.consumers
        )
    }
}

/// Moves items from `flow.producers` processes to `flow.consumers` processes through a fresh
/// bounded queue for `duration`; returns the items consumed per second.
fn queue_flow(servers: &Servers, flow: Flow, duration: Duration) -> Result<f64, BoxError> {
    let setup = servers.client(&servers.agora_unix)?;
    let queue = setup.queue::<u64>(4 * BATCH)?;
    let roles = setup.value(&0u64)?;
    let (address, key) = (servers.agora_unix.clone(), servers.authkey.clone());
    let (queue_id, roles_id) = (queue.id(), roles.id());
    let workers = (flow.producers + flow.consumers) as usize;
    let items_per_s = run_workers(workers, duration, move |deadline| {
        let client = Client::connect(&address, &key)?;
        let q = Queue::<u64>::from_id(&client, queue_id);
        let role = Value::<u64>::from_id(&client, roles_id).fetch_add(1)?;
        let mut consumed = 0u64;
        if role < flow.producers {
            let batch: Vec<u64> = (0..BATCH as u64).collect();
            while Instant::now() < deadline {
                if flow.batched {
                    q.put_many_timeout(&batch, PATIENCE)?;
                } else {
                    for i in 0..16 {
                        q.put_timeout(&i, PATIENCE)?;
                    }
                }
            }
        } else {
            while Instant::now() < deadline {
                if flow.batched {
                    consumed += q.get_many_timeout(BATCH, PATIENCE)?.len() as u64;
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
    setup.delete(roles.id())?;
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
    run_workers(clients, duration, move |deadline| {
        let client = Client::connect(&address, &key)?;
        let lock = Lock::from_id(&client, id);
        Ok(until(deadline, || lock.acquire()?.unlock())?)
    })
}

/// Runs the section, adds its rows to `report`, and returns one line per target of the issue
/// saying whether this run met it.
pub fn run(servers: &Servers, rounds: usize, report: &mut Report) -> Result<Vec<String>, BoxError> {
    let setup = servers.client(&servers.agora_unix)?;
    let lock = setup.lock_named("bench-lock")?;
    let queue = setup.queue_named::<u64>("bench-round-trip", 0)?;
    let message = acquire_request_bytes(lock.id());
    let transports = [
        Transport {
            name: "unix",
            agora: &servers.agora_unix,
            echo: &servers.echo_unix,
        },
        Transport {
            name: "tcp",
            agora: &servers.agora_tcp,
            echo: &servers.echo_tcp,
        },
    ];
    let mut targets = Vec::new();
    let mut raw_unix = f64::NAN;

    for t in &transports {
        let client = servers.client(t.agora)?;
        let l = Lock::from_id(&client, lock.id());
        let q = Queue::<u64>::from_id(&client, queue.id());
        let mut raw = RawStream::connect(t.echo)?;
        let mut buf = vec![0u8; 1024];
        let (mut raw_s, mut queue_s, mut lock_s) =
            (Samples::default(), Samples::default(), Samples::default());
        let slice = Duration::from_millis(200);
        for _ in 0..rounds {
            raw_s.0.push(per_second(slice, || {
                Ok(raw.round_trip(&message, &mut buf)?)
            })?);
            queue_s.0.push(per_second(slice, || {
                q.put(&7)?;
                q.get()?;
                Ok(())
            })?);
            lock_s
                .0
                .push(per_second(slice, || Ok(l.acquire()?.unlock()?))?);
        }
        let base = raw_s.median();
        if t.name == "unix" {
            raw_unix = base;
        }
        let section = "blocking: one client";
        let raw_label = format!("raw ping-pong ({} B)", message.len());
        report.row(section, t.name, 1, &raw_label, &raw_s, None);
        report.row(
            section,
            t.name,
            1,
            "queue put+get pairs",
            &queue_s,
            Some(base),
        );
        report.row(
            section,
            t.name,
            1,
            "lock acquire+release pairs",
            &lock_s,
            Some(base),
        );
        let cost = base / lock_s.median();
        targets.push(format!(
            "{}: an uncontended lock acquire+release pair costs {cost:.2} raw round trips \
             (target <= 2.5: {})",
            t.name,
            if cost <= 2.5 { "met" } else { "NOT met" }
        ));
        eprintln!(
            "  {}: raw {} rt/s, queue put+get {} pairs/s, lock {} pairs/s",
            t.name,
            rate(base),
            rate(queue_s.median()),
            rate(lock_s.median())
        );
    }

    let flows = [
        Flow {
            producers: 1,
            consumers: 1,
            batched: false,
        },
        Flow {
            producers: 1,
            consumers: 1,
            batched: true,
        },
        Flow {
            producers: 4,
            consumers: 4,
            batched: false,
        },
        Flow {
            producers: 4,
            consumers: 4,
            batched: true,
        },
    ];
    let slice = Duration::from_millis(400);
    let mut flow_s = vec![Samples::default(); flows.len()];
    let (mut lock1_s, mut lock4_s) = (Samples::default(), Samples::default());
    for _ in 0..rounds {
        for (flow, samples) in flows.iter().zip(&mut flow_s) {
            samples.0.push(queue_flow(servers, *flow, slice)?);
        }
        lock1_s.0.push(lock_pairs(servers, 1, slice)?);
        lock4_s.0.push(lock_pairs(servers, 4, slice)?);
    }
    let section = "blocking: processes";
    for (flow, samples) in flows.iter().zip(&flow_s) {
        let procs = (flow.producers + flow.consumers) as usize;
        report.row(
            section,
            "unix",
            procs,
            &flow.label(),
            samples,
            Some(raw_unix),
        );
    }
    report.row(
        section,
        "unix",
        1,
        "lock pairs/s, uncontended",
        &lock1_s,
        Some(raw_unix),
    );
    report.row(
        section,
        "unix",
        4,
        "lock pairs/s, 4 contending",
        &lock4_s,
        Some(raw_unix),
    );
    for pair in flow_s.chunks(2).zip(flows.chunks(2)) {
        let ([plain, batched], [flow, _]) = pair else {
            continue;
        };
        let gain = batched.median() / plain.median();
        targets.push(format!(
            "queue {}p/{}c: put_many/get_many move {gain:.1}x the items/s of put/get \
             (target >= 10: {})",
            flow.producers,
            flow.consumers,
            if gain >= 10.0 { "met" } else { "NOT met" }
        ));
    }
    eprintln!(
        "  queue items/s: {}; lock pairs/s: 1 process {}, 4 contending {}",
        flows
            .iter()
            .zip(&flow_s)
            .map(|(f, s)| format!("{} {}", f.label(), rate(s.median())))
            .collect::<Vec<_>>()
            .join(", "),
        rate(lock1_s.median()),
        rate(lock4_s.median())
    );
    Ok(targets)
}
