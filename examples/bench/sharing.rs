//! One client shared by many threads beside a client per thread: `dict.get` in a loop from 8
//! and from 200 threads of this process, on one connection or on one connection each; and 8
//! threads calling on a client on which 192 more wait in a `queue.get` the manager parks.
//!
//! Threads sharing a client share its connection: their requests go out one after the other
//! and whichever thread reads the socket hands each reply to the thread it is for. The figure
//! says what that costs against connections of their own (target: at least 0.8x at 200
//! threads). The parked threads must cost nothing while they wait: a reply wakes the thread it
//! is for, not every thread waiting on the connection.

use std::time::Duration;

use agora::{Client, Dict};

use crate::harness::{calls_per_second, rate, Samples, Servers};
use crate::progress::Progress;
use crate::report::{Group, Report};

type BoxError = Box<dyn std::error::Error>;

/// The thread counts measured.
const THREADS: [usize; 2] = [8, 200];

/// The least ratio of shared to own at 200 threads.
const TARGET: f64 = 0.8;

const GROUP: Group = Group {
    title: "threads of one process: one shared client vs a client each (ratio vs a client each)",
    unit: "calls/s",
};

/// Threads parked in a `queue.get` beside the 8 calling ones, in the last row.
const PARKED: usize = 192;

/// The measurements [`run`] makes, for the progress bar.
pub fn steps(rounds: usize) -> u64 {
    (rounds * (THREADS.len() * 2 + 1)) as u64
}

/// [`calls_per_second`] of 8 threads on `client` while [`PARKED`] more wait on it in a
/// `queue.get` (given their items afterwards).
fn beside_parked(client: &Client, dict_id: u64, duration: Duration) -> Result<f64, BoxError> {
    let queue = client.queue::<u64>(0)?;
    let getters: Vec<_> = (0..PARKED)
        .map(|_| {
            let queue = queue.clone();
            std::thread::spawn(move || queue.get())
        })
        .collect();
    // Time for all of them to send their gets (a few milliseconds do; one still sending when
    // the clock starts only joins the others late).
    std::thread::sleep(Duration::from_millis(300));
    let rate = calls_per_second(std::slice::from_ref(client), dict_id, 8, duration);
    for _ in 0..PARKED {
        queue.put(&0)?;
    }
    for getter in getters {
        getter.join().map_err(|_| "a parked thread panicked")??;
    }
    rate
}

/// Runs the section and adds its rows to `report`; returns the target line.
pub fn run(
    servers: &Servers,
    rounds: usize,
    report: &mut Report,
    progress: &Progress,
) -> Result<Vec<String>, BoxError> {
    let setup = servers.client(&servers.agora_unix)?;
    let dict: Dict<String, i64> = setup.dict_named("bench")?;
    dict.set("k", &12345)?;
    let slice = Duration::from_millis(300);
    // [thread count] -> (shared, own)
    let mut samples = vec![(Samples::default(), Samples::default()); THREADS.len()];
    let mut parked_s = Samples::default();
    for round in 0..rounds {
        let shared = servers.client(&servers.agora_unix)?;
        parked_s.0.push(progress.measure(
            "sharing/8 threads",
            "one shared client, 192 more parked on it",
            round,
            || beside_parked(&shared, dict.id(), slice),
        )?);
        for (&n, (shared_s, own_s)) in THREADS.iter().zip(&mut samples) {
            let section = format!("sharing/{n} threads");
            let shared = [servers.client(&servers.agora_unix)?];
            shared_s
                .0
                .push(progress.measure(&section, "one shared client", round, || {
                    calls_per_second(&shared, dict.id(), n, slice)
                })?);
            let own = (0..n)
                .map(|_| servers.client(&servers.agora_unix))
                .collect::<agora::Result<Vec<_>>>()?;
            own_s
                .0
                .push(progress.measure(&section, "a client each", round, || {
                    calls_per_second(&own, dict.id(), n, slice)
                })?);
        }
    }
    let mut targets = Vec::new();
    for (&n, (shared_s, own_s)) in THREADS.iter().zip(&samples) {
        let base = own_s.median();
        report.row(&GROUP, "unix", n, "agora, a client each", own_s, None);
        report.row(
            &GROUP,
            "unix",
            n,
            "agora, one shared client",
            shared_s,
            Some(base),
        );
        let ratio = shared_s.median() / base;
        progress.note(&format!(
            "  {n} threads: one shared client {} calls/s, a client each {} calls/s ({ratio:.2}x)",
            rate(shared_s.median()),
            rate(base),
        ));
        if n == 8 {
            report.row(
                &GROUP,
                "unix",
                n,
                "agora, shared, 192 parked on it",
                &parked_s,
                Some(base),
            );
        }
        if n == 200 {
            targets.push(format!(
                "200 threads sharing one client: {ratio:.2}x the rate of a client each \
                 (target {TARGET}x): {}",
                if ratio >= TARGET { "met" } else { "NOT met" }
            ));
        }
    }
    Ok(targets)
}
