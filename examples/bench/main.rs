//! agora's benchmark: every figure is a ratio measured side by side in one run.
//!
//! ```text
//! cargo run --release --example bench -- [--workers 1,2,4,8] [--rounds N] [--quick]
//!     [--scale N] [--section rpc|latency|blocking|tickets|redis|sharing|async|stores|all]
//! ```
//!
//! Sections: `rpc` (calls/s of one client, and dict get/set ops/s by number of client
//! processes: the `--workers` list, `--clients` is another name for it), `latency` (p50 to
//! max of one call beside the raw socket round trip), `blocking` (queues and locks, with a raw
//! pipe as the ceiling of the queue), `tickets` (the ticket grab on five backends, by
//! `--workers`, and where a four-call ticket's time goes), `redis` (`dict.get` beside Redis
//! `GET` at depths 1, 16 and 1000 from 1, 4 and 16 processes, and the locked and atomic ticket
//! grabs beside Redis `SET NX` and `DECR`, when `redis-server` is installed), `sharing`
//! (`dict.get` from 8 and 200 threads of one process, sharing one client or with a client
//! each), `async` (the async client beside the blocking one: one task, 16 tasks on one
//! connection against 16 blocking clients, pipelines of 16 and 1000), `stores` (the same
//! calls on the memory store and on the etcd store, when built with the feature `etcd` and
//! `etcd` is installed).
//!
//! Contenders are interleaved round by round (so a burst of load from another tenant hits all
//! of them), each figure is the median of the rounds, and every row says how much its rounds
//! spread: that is how noisy the run was. A progress bar runs on standard error; the table goes
//! to standard output, every figure to `bench-results/bench.csv`, and the charts (by number of
//! workers) to `bench-results/bench-dict.svg` and `bench-results/bench-tickets.svg`. A run never
//! changes a tracked file: `--charts docs` also copies the charts over the README's.
//!
//! agora's client and manager poll the socket briefly before sleeping (`AGORA_SPIN_US`
//! microseconds; 50 by default, none on one CPU), and so does the raw floor, with the same budget: the raw
//! client polls for its reply and the echo server for the next message, one connection at a
//! time as the manager does. A floor that slept instead would pay wake-ups that agora avoids,
//! and the ratios would measure polling, not agora's own overhead. `AGORA_SPIN_US=0` runs
//! every contender, the benchmark's manager included, without polling.

mod aio;
mod blocking;
mod chart;
mod harness;
mod latency;
mod pipe;
mod progress;
mod redis;
mod report;
mod rpc;
mod sharing;
mod stores;
mod ticket_phases;
mod tickets;

use std::path::PathBuf;
use std::process::ExitCode;

use harness::{load_average, results_dir, stolen_since, CpuTimes, Servers};
use progress::Progress;
use report::Report;

struct Options {
    rounds: usize,
    workers: Vec<usize>,
    scale: u64,
    section: Section,
    /// Where to copy the charts too (the README's are in `docs/`).
    charts: Option<PathBuf>,
}

/// Which sections run: `--section rpc`, `--section latency`... or all of them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    All,
    Rpc,
    Latency,
    Blocking,
    Tickets,
    Redis,
    Sharing,
    Async,
    Stores,
}

impl Section {
    fn parse(s: &str) -> Result<Section, String> {
        match s {
            "all" => Ok(Section::All),
            "rpc" => Ok(Section::Rpc),
            "latency" => Ok(Section::Latency),
            "blocking" => Ok(Section::Blocking),
            "tickets" => Ok(Section::Tickets),
            "redis" => Ok(Section::Redis),
            "sharing" => Ok(Section::Sharing),
            "async" => Ok(Section::Async),
            "stores" => Ok(Section::Stores),
            other => Err(format!(
                "unknown section {other:?} (rpc, latency, blocking, tickets, redis, sharing, \
                 async, stores or all)"
            )),
        }
    }

    fn runs(self, section: Section) -> bool {
        self == Section::All || self == section
    }
}

fn parse_list(s: &str) -> Result<Vec<usize>, String> {
    s.split(',')
        .map(|x| {
            x.trim()
                .parse::<usize>()
                .map_err(|e| format!("bad number {x:?}: {e}"))
        })
        .collect()
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        rounds: 5,
        workers: vec![1, 2, 4, 8],
        scale: 1,
        section: Section::All,
        charts: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--rounds" => o.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            // --clients: the name this list had when only the rpc section used it.
            "--workers" | "--clients" => o.workers = parse_list(&value()?)?,
            "--scale" => o.scale = value()?.parse().map_err(|e| format!("--scale: {e}"))?,
            "--quick" => o.rounds = 3,
            "--section" => o.section = Section::parse(&value()?)?,
            "--charts" => o.charts = Some(PathBuf::from(value()?)),
            "--help" | "-h" => {
                return Err(
                    "usage: bench [--workers 1,2,4,8] [--rounds N] [--quick] [--scale N] \
                            [--section rpc|latency|blocking|tickets|redis|sharing|async|all] \
                            [--charts DIR]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; run with --release for figures that mean anything");
    }
    match run(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(o: &Options) -> Result<(), Box<dyn std::error::Error>> {
    // Fork the server process first, while this program has no other threads.
    let servers = Servers::start()?;
    // The etcd store's manager is forked now too, while there is still no other thread.
    let etcd = if o.section.runs(Section::Stores) {
        stores::start()?
    } else {
        None
    };
    let load_before = load_average();
    let cpu_before = CpuTimes::now();
    let mut report = Report::default();
    let progress = Progress::new(steps(o), o.rounds)?;
    let mut targets = Vec::new();
    let mut charts = Vec::new();
    if o.section.runs(Section::Rpc) {
        let curves = rpc::run(&servers, o.rounds, &o.workers, &mut report, &progress)?;
        charts.push(dict_chart(curves));
    }
    if o.section.runs(Section::Latency) {
        latency::run(&servers, o.rounds, &mut report, &progress)?;
    }
    if o.section.runs(Section::Blocking) {
        targets.extend(blocking::run(&servers, o.rounds, &mut report, &progress)?);
    }
    if o.section.runs(Section::Tickets) {
        let (chart, lines) = run_tickets(&servers, o, &mut report, &progress)?;
        charts.push(chart);
        targets.extend(lines);
    }
    if o.section.runs(Section::Redis) {
        if let Some(outcome) = redis::run(&servers, o.rounds, &mut report, &progress)? {
            charts.push(Chart::new(
                "bench-redis-get.svg",
                "agora dict.get vs Redis GET: gets/s by number of client processes",
                "gets/s (log scale)",
                outcome.gets,
            ));
            charts.push(Chart::new(
                "bench-redis-grab.svg",
                "Ticket grab, agora vs Redis: tickets/s by number of workers",
                "tickets/s (log scale)",
                outcome.grabs,
            ));
            targets.extend(outcome.targets);
        }
    }
    if o.section.runs(Section::Sharing) {
        targets.extend(sharing::run(&servers, o.rounds, &mut report, &progress)?);
    }
    if o.section.runs(Section::Stores) {
        let lines = stores::run(&servers, etcd.as_ref(), o.rounds, &mut report, &progress)?;
        targets.extend(lines);
    }
    // Last: its runtime's threads must not be running while another section forks.
    if o.section.runs(Section::Async) {
        targets.extend(aio::run(&servers, o.rounds, &mut report, &progress)?);
    }
    progress.finish();
    println!(
        "agora benchmark: {} rounds per figure, contenders interleaved; {}; load average {} -> {} ({} cores); CPU time stolen by the hypervisor: {}",
        o.rounds,
        polling(),
        load_before,
        load_average(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        stolen_since(cpu_before)
    );
    print!("{}", report.table());
    println!("\nspread = (max - min) / median over the rounds: the noise of each figure.");
    if !targets.is_empty() {
        println!("\ntargets");
        for line in &targets {
            println!("  {line}");
        }
    }
    let csv = results_dir().join("bench.csv");
    report.write_csv(&csv)?;
    println!("results written to {}", csv.display());
    for chart in &charts {
        chart.draw()?;
        println!("chart written to {}", chart.path.display());
        if let (Some(dir), Some(file)) = (&o.charts, chart.path.file_name()) {
            std::fs::create_dir_all(dir)?;
            std::fs::copy(&chart.path, dir.join(file))?;
            println!("chart copied to {}", dir.join(file).display());
        }
    }
    Ok(())
}

/// How every contender polls before sleeping, for the table's heading.
fn polling() -> String {
    match agora::spin_budget().as_micros() {
        0 => "no polling (AGORA_SPIN_US=0, or one CPU)".into(),
        us => format!("agora and raw poll {us} us before sleeping (AGORA_SPIN_US)"),
    }
}

/// The measurements the selected sections make, for the progress bar.
fn steps(o: &Options) -> u64 {
    let mut n = 0;
    if o.section.runs(Section::Rpc) {
        n += rpc::steps(o.rounds, &o.workers);
    }
    if o.section.runs(Section::Latency) {
        n += latency::steps(o.rounds);
    }
    if o.section.runs(Section::Blocking) {
        n += blocking::steps(o.rounds);
    }
    if o.section.runs(Section::Tickets) {
        n += tickets::steps(o.rounds, &o.workers);
    }
    if o.section.runs(Section::Redis) {
        n += redis::steps(o.rounds);
    }
    if o.section.runs(Section::Sharing) {
        n += sharing::steps(o.rounds);
    }
    if o.section.runs(Section::Async) {
        n += aio::steps(o.rounds);
    }
    if o.section.runs(Section::Stores) {
        n += stores::steps(o.rounds);
    }
    n
}

/// A chart to draw into `bench-results/` once the table is out.
struct Chart {
    path: PathBuf,
    title: &'static str,
    y_desc: &'static str,
    curves: Vec<chart::Curve>,
}

impl Chart {
    fn new(
        file: &str,
        title: &'static str,
        y_desc: &'static str,
        curves: Vec<chart::Curve>,
    ) -> Chart {
        let path = results_dir().join(file);
        Chart {
            path,
            title,
            y_desc,
            curves,
        }
    }

    fn draw(&self) -> Result<(), Box<dyn std::error::Error>> {
        chart::draw(&self.path, self.title, self.y_desc, &self.curves)
    }
}

fn dict_chart(curves: Vec<chart::Curve>) -> Chart {
    Chart::new(
        "bench-dict.svg",
        "Dict get/set: ops/s by number of client processes",
        "ops/s (log scale)",
        curves,
    )
}

/// The ticket grab on every backend; returns the chart of its medians.
fn run_tickets(
    servers: &Servers,
    o: &Options,
    report: &mut Report,
    progress: &Progress,
) -> Result<(Chart, Vec<String>), Box<dyn std::error::Error>> {
    let dir = tempfile::Builder::new()
        .prefix("agora-tickets-")
        .tempdir()?;
    let (curves, targets) = tickets::run(
        servers,
        o.rounds,
        &o.workers,
        o.scale,
        dir.path(),
        report,
        progress,
    )?;
    let chart = Chart::new(
        "bench-tickets.svg",
        "Ticket grab: tickets/s by number of workers",
        "tickets/s (log scale)",
        curves,
    );
    Ok((chart, targets))
}
