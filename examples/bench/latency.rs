//! Latency of a single call: percentiles of `ping` and `dict.get` from one client, beside the
//! raw ping-pong with the echo server that runs in the manager's process.
//!
//! Each round times a fixed number of calls of every contender, one after the other (so that
//! `max` and `p99.9` come from as many calls for each), and takes each percentile of that
//! round; the table shows, per percentile, the median over the rounds and how much the rounds
//! spread.

use std::time::Instant;

use agora::{Client, Dict};

use crate::harness::{raw_polls, RawStream, Samples, Servers};
use crate::progress::Progress;
use crate::report::{LatencyRow, Report, Stat};
use crate::rpc::{get_request_bytes, transports, Transport};

type BoxError = Box<dyn std::error::Error>;

/// Timed calls per contender per round: enough for a p99.9 of several samples.
const CALLS: usize = 4_000;

/// Untimed calls first, so that a cold connection or cache does not count.
const WARM_UP: usize = 200;

/// The percentiles reported, with the fraction of calls at or below each.
const PERCENTILES: [(&str, f64); 5] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("max", 1.0),
];

const TITLE: &str =
    "latency of one call, microseconds (ratio vs raw ping-pong at the same percentile)";

/// What is timed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    /// The `dict.get` request's bytes to the echo server and back: the floor.
    Raw,
    /// `ping`: the manager's cheapest call.
    Ping,
    /// `dict.get` of a small key.
    DictGet,
}

impl Contender {
    /// In table order; the first is the baseline.
    const ALL: [Contender; 3] = [Contender::Raw, Contender::Ping, Contender::DictGet];

    fn name(self) -> &'static str {
        match self {
            Contender::Raw => "raw ping-pong",
            Contender::Ping => "agora ping",
            Contender::DictGet => "agora dict.get",
        }
    }
}

/// The measurements [`run`] makes, for the progress bar.
pub fn steps(rounds: usize) -> u64 {
    (rounds * 2 * Contender::ALL.len()) as u64
}

/// The connections of one transport, each contender's way to make one call.
struct Callers {
    raw: RawStream,
    client: Client,
    dict: u64,
    message: Vec<u8>,
    buf: Vec<u8>,
}

impl Callers {
    fn connect(servers: &Servers, t: &Transport<'_>, dict: u64) -> Result<Callers, BoxError> {
        Ok(Callers {
            raw: RawStream::connect(t.echo)?,
            client: servers.client(t.agora)?,
            dict,
            message: get_request_bytes(dict),
            buf: vec![0u8; 1024],
        })
    }

    /// One call of `which`.
    fn call(&mut self, which: Contender) -> Result<(), BoxError> {
        match which {
            Contender::Raw => Ok(self.raw.round_trip(&self.message, &mut self.buf)?),
            Contender::Ping => Ok(self.client.ping()?),
            Contender::DictGet => {
                let d = Dict::<String, i64>::from_id(&self.client, self.dict);
                Ok(d.get("k").map(drop)?)
            }
        }
    }

    /// The latencies of [`CALLS`] calls of `which`, in nanoseconds, sorted.
    fn time(&mut self, which: Contender) -> Result<Vec<u64>, BoxError> {
        for _ in 0..WARM_UP {
            self.call(which)?;
        }
        let mut latencies = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            // Instant is the monotonic clock: a wall-clock step cannot make a call negative.
            let start = Instant::now();
            self.call(which)?;
            latencies.push(start.elapsed().as_nanos() as u64);
        }
        latencies.sort_unstable();
        Ok(latencies)
    }
}

/// The value at or below which `fraction` of the sorted `latencies` fall (nearest rank), in
/// microseconds.
fn percentile(latencies: &[u64], fraction: f64) -> f64 {
    let rank = (fraction * latencies.len() as f64).ceil() as usize;
    let i = rank.clamp(1, latencies.len().max(1)) - 1;
    latencies.get(i).map_or(f64::NAN, |&ns| ns as f64 / 1_000.0)
}

/// Runs the section and adds its rows to `report`.
pub fn run(
    servers: &Servers,
    rounds: usize,
    report: &mut Report,
    progress: &Progress,
) -> Result<(), BoxError> {
    let setup = servers.client(&servers.agora_unix)?;
    let dict: Dict<String, i64> = setup.dict_named("bench-latency")?;
    dict.set("k", &12345)?;
    let transports = transports(servers);
    let mut callers = transports
        .iter()
        .map(|t| Callers::connect(servers, t, dict.id()))
        .collect::<Result<Vec<_>, _>>()?;
    // [transport][contender][percentile]: one sample a round.
    let mut samples =
        vec![vec![vec![Samples::default(); PERCENTILES.len()]; Contender::ALL.len()]; 2];
    for round in 0..rounds {
        for ((t, c), per_contender) in transports.iter().zip(&mut callers).zip(&mut samples) {
            let section = format!("latency/{}", t.name);
            for (&which, per_pct) in Contender::ALL.iter().zip(per_contender.iter_mut()) {
                let latencies =
                    progress.measure(&section, which.name(), round, || c.time(which))?;
                for ((_, fraction), s) in PERCENTILES.iter().zip(per_pct.iter_mut()) {
                    s.0.push(percentile(&latencies, *fraction));
                }
            }
        }
    }
    for (t, per_contender) in transports.iter().zip(&samples) {
        add_rows(report, t.name, per_contender, callers[0].message.len());
    }
    setup.delete(dict.id())?;
    Ok(())
}

/// One table row per contender of `transport`, each percentile against the raw one's.
fn add_rows(report: &mut Report, transport: &str, per_contender: &[Vec<Samples>], bytes: usize) {
    let raw = &per_contender[0];
    for (&which, per_pct) in Contender::ALL.iter().zip(per_contender) {
        let stats = PERCENTILES
            .iter()
            .zip(per_pct)
            .zip(raw)
            .map(|((&(name, _), s), base)| Stat {
                name,
                median_us: s.median(),
                spread: s.spread(),
                ratio: (which != Contender::Raw).then(|| s.median() / base.median()),
            })
            .collect();
        let contender = match which {
            Contender::Raw => format!("{} ({bytes} B{})", which.name(), raw_polls()),
            _ => which.name().to_owned(),
        };
        report.latency(LatencyRow {
            section: TITLE,
            transport: transport.into(),
            contender,
            stats,
        });
    }
}
