//! The async client beside the blocking one, `dict.get` over the Unix socket: one task against
//! one thread; 16 tasks sharing one async connection against 16 threads with a blocking
//! client (and a connection) each; pipelines of 16 and 1000 calls on each client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agora::aio::{AsyncClient, Dict as AsyncDict};
use agora::{Client, Dict};

use crate::harness::{calls_per_second, per_second, rate, Samples, Servers};
use crate::progress::Progress;
use crate::report::{Group, Report};

type BoxError = Box<dyn std::error::Error>;

const GROUP: Group = Group {
    title: "async client: dict.get (ratio vs the blocking client doing the same)",
    unit: "calls/s",
};

/// Tasks (and threads) of the concurrent rows.
const TASKS: usize = 16;
/// Pipeline depths.
const DEPTHS: [usize; 2] = [16, 1000];

/// The measurements [`run`] makes, for the progress bar.
pub fn steps(rounds: usize) -> u64 {
    (rounds * (4 + 2 * DEPTHS.len())) as u64
}

/// One contender's measurement of a round.
type Measure<'a> = Box<dyn Fn() -> Result<f64, BoxError> + 'a>;

/// Runs the section and adds its rows to `report`; returns the target lines.
pub fn run(
    servers: &Servers,
    rounds: usize,
    report: &mut Report,
    progress: &Progress,
) -> Result<Vec<String>, BoxError> {
    let address = &servers.agora_unix;
    let blocking = servers.client(address)?;
    let dict: Dict<String, i64> = blocking.dict_named("bench-aio")?;
    dict.set("k", &12345)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let client = runtime.block_on(AsyncClient::from_client(servers.client(address)?))?;
    let adict = Arc::new(client.wrap(Dict::<String, i64>::from_id(client.blocking(), dict.id())));
    let slice = Duration::from_millis(200);
    let threads: Vec<Client> = (0..TASKS)
        .map(|_| servers.client(address))
        .collect::<Result<_, _>>()?;

    // (clients, blocking baseline, async contender, their labels), interleaved round by round.
    let mut pairs: Vec<(usize, Measure<'_>, Measure<'_>, [String; 2])> = vec![
        (
            1,
            Box::new(|| per_second(slice, || Ok(dict.get("k").map(drop)?))),
            Box::new(|| runtime.block_on(tasks(&adict, 1, slice))),
            ["blocking, one thread".into(), "async, one task".into()],
        ),
        (
            TASKS,
            Box::new(|| calls_per_second(&threads, dict.id(), threads.len(), slice)),
            Box::new(|| runtime.block_on(tasks(&adict, TASKS, slice))),
            [
                "blocking, a client (connection) per thread".into(),
                "async, tasks on one connection".into(),
            ],
        ),
    ];
    for depth in DEPTHS {
        let (dict, adict) = (&dict, &adict);
        let (blocking, client, runtime) = (&blocking, &client, &runtime);
        pairs.push((
            1,
            Box::new(move || {
                per_call(slice, depth, || {
                    let mut p = blocking.pipeline();
                    for _ in 0..depth {
                        p.add(dict.get_cmd("k"));
                    }
                    Ok(p.execute()?.check()?)
                })
            }),
            Box::new(move || {
                per_call(slice, depth, || {
                    let mut p = client.pipeline();
                    for _ in 0..depth {
                        p.add(adict.proxy().get_cmd("k"));
                    }
                    Ok(runtime.block_on(p.execute())?.check()?)
                })
            }),
            [
                format!("blocking, pipelined {depth} deep"),
                format!("async, pipelined {depth} deep"),
            ],
        ));
    }
    let mut samples = vec![(Samples::default(), Samples::default()); pairs.len()];
    for round in 0..rounds {
        for ((_, blocking, asynch, [bl, al]), (b, a)) in pairs.iter().zip(&mut samples) {
            b.0.push(progress.measure("async", bl, round, blocking)?);
            a.0.push(progress.measure("async", al, round, asynch)?);
        }
    }
    let mut targets = Vec::new();
    for ((clients, _, _, [bl, al]), (b, a)) in pairs.iter().zip(&samples) {
        report.row(&GROUP, "unix", *clients, bl, b, None);
        report.row(&GROUP, "unix", *clients, al, a, Some(b.median()));
        progress.note(&format!(
            "  {bl}: {} calls/s; {al}: {} calls/s",
            rate(b.median()),
            rate(a.median())
        ));
    }
    if let Some((b, a)) = samples.get(1) {
        let ratio = a.median() / b.median();
        targets.push(format!(
            "{TASKS} tasks on one async connection at least as fast as {TASKS} blocking clients \
             on {TASKS} connections: {ratio:.2}x ({})",
            if ratio >= 1.0 { "met" } else { "NOT met" }
        ));
    }
    drop(pairs);
    drop(client);
    // The runtime's threads end here, before any later section forks workers.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(targets)
}

/// Calls per second of `op`, which makes `calls` calls, on this thread for `duration`.
fn per_call(
    duration: Duration,
    calls: usize,
    op: impl FnMut() -> Result<(), BoxError>,
) -> Result<f64, BoxError> {
    Ok(per_second(duration, op)? * calls as f64)
}

/// Calls per second of `n` tasks sharing `dict`'s connection, each calling in a loop.
async fn tasks(
    dict: &Arc<AsyncDict<String, i64>>,
    n: usize,
    duration: Duration,
) -> Result<f64, BoxError> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let dict = dict.clone();
        set.spawn(async move {
            let mut calls = 0u64;
            while Instant::now() < deadline {
                for _ in 0..16 {
                    dict.get("k").await?;
                }
                calls += 16;
            }
            Ok::<u64, agora::Error>(calls)
        });
    }
    let mut total = 0;
    while let Some(done) = set.join_next().await {
        total += done??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}
