//! agora's benchmark: every figure is a ratio measured side by side in one run.
//!
//! ```text
//! cargo run --release --example bench -- [--rounds N] [--clients 1,4,16] [--quick]
//!     [--section rpc|blocking|all]
//! ```
//!
//! Contenders are interleaved round by round (so a burst of load from another tenant hits all
//! of them), each figure is the median of the rounds, and every row says how much its rounds
//! spread: that is how noisy the run was. Results also go to `bench-results/bench.csv`.

mod blocking;
mod chart;
mod harness;
mod report;
mod rpc;
mod tickets;

use std::process::ExitCode;

use harness::{load_average, results_dir, Servers};
use report::Report;

struct Options {
    rounds: usize,
    clients: Vec<usize>,
    workers: Vec<usize>,
    scale: u64,
    section: Section,
}

/// Which sections run: `--section rpc`, `--section blocking`, or all of them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    All,
    Rpc,
    Blocking,
    Tickets,
}

impl Section {
    fn parse(s: &str) -> Result<Section, String> {
        match s {
            "all" => Ok(Section::All),
            "rpc" => Ok(Section::Rpc),
            "blocking" => Ok(Section::Blocking),
            "tickets" => Ok(Section::Tickets),
            other => Err(format!(
                "unknown section {other:?} (rpc, blocking, tickets or all)"
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
        clients: vec![1, 4, 16],
        workers: vec![1, 2, 4, 8],
        scale: 1,
        section: Section::All,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--rounds" => o.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--clients" => o.clients = parse_list(&value()?)?,
            "--workers" => o.workers = parse_list(&value()?)?,
            "--scale" => o.scale = value()?.parse().map_err(|e| format!("--scale: {e}"))?,
            "--quick" => o.rounds = 3,
            "--section" => o.section = Section::parse(&value()?)?,
            "--help" | "-h" => {
                return Err("usage: bench [--rounds N] [--clients 1,4,16] [--quick] \
                            [--workers 1,2,4,8] [--scale N] [--section rpc|blocking|tickets|all]"
                    .into())
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
    let load_before = load_average();
    let mut report = Report::default();
    if o.section.runs(Section::Rpc) {
        eprintln!("rpc: {} rounds, interleaved", o.rounds);
        rpc::run(&servers, o.rounds, &o.clients, &mut report)?;
    }
    let mut targets = Vec::new();
    if o.section.runs(Section::Blocking) {
        eprintln!("blocking: {} rounds, interleaved", o.rounds);
        targets.extend(blocking::run(&servers, o.rounds, &mut report)?);
    }
    if o.section.runs(Section::Tickets) {
        run_tickets(&servers, o, &mut report)?;
    }
    println!(
        "agora benchmark: {} rounds per figure, contenders interleaved; load average {} -> {} ({} cores)",
        o.rounds,
        load_before,
        load_average(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
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
    Ok(())
}

/// The ticket grab on every backend, with a progress line and a chart of the medians.
fn run_tickets(
    servers: &Servers,
    o: &Options,
    report: &mut Report,
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::Builder::new()
        .prefix("agora-tickets-")
        .tempdir()?;
    let total = o.rounds * o.workers.len() * tickets::Backend::ALL.len();
    let done = std::cell::Cell::new(0usize);
    let progress = |what: &str| {
        done.set(done.get() + 1);
        eprint!("\r\x1b[2K[{:>3}/{total}] {what}", done.get());
    };
    let curves = tickets::run(
        servers,
        o.rounds,
        &o.workers,
        o.scale,
        dir.path(),
        report,
        &progress,
    )?;
    eprintln!();
    let lines: Vec<chart::Line<'_>> = curves
        .iter()
        .map(|c| chart::Line {
            name: c.name,
            points: c.points.iter().map(|&(w, y)| (w as f64, y)).collect(),
        })
        .collect();
    let svg = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/bench-tickets.svg");
    chart::draw(
        &svg,
        "Ticket grab: tickets/s by number of workers",
        "workers",
        "tickets/s (log scale)",
        &lines,
    )?;
    println!("chart written to {}", svg.display());
    Ok(())
}
