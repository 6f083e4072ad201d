//! The benchmark's results: a table on stdout and a CSV file.

use std::fmt::Write as _;
use std::path::Path;

use crate::harness::{rate, Samples};

/// A block of the table: its title and the unit its figures are in.
pub struct Group {
    /// The title printed above the block (and the CSV's `section`).
    pub title: &'static str,
    /// The unit of the medians: `ops/s`, `items/s`, `tickets/s`...
    pub unit: &'static str,
}

/// One measured contender, as a rate.
pub struct Row {
    /// Which part of the benchmark.
    pub section: &'static str,
    /// The unit of `median` (in the CSV, the metric: `ops/s`, `p99 us`...).
    pub unit: String,
    /// unix or tcp.
    pub transport: String,
    /// Client processes (or threads).
    pub clients: usize,
    /// What was measured.
    pub contender: String,
    /// Median operations per second.
    pub median: f64,
    /// (max - min) / median over the rounds.
    pub spread: f64,
    /// The median divided by the baseline's, when there is a baseline.
    pub ratio: Option<f64>,
}

/// One statistic of a latency row: a percentile's median over the rounds.
pub struct Stat {
    /// `p50`, `p99`, `max`...
    pub name: &'static str,
    /// The median over the rounds of this percentile, in microseconds.
    pub median_us: f64,
    /// (max - min) / median of this percentile over the rounds.
    pub spread: f64,
    /// The median divided by the baseline's same percentile, when there is a baseline.
    pub ratio: Option<f64>,
}

/// One contender's latency percentiles.
pub struct LatencyRow {
    /// Which part of the benchmark.
    pub section: &'static str,
    /// unix or tcp.
    pub transport: String,
    /// What was measured.
    pub contender: String,
    /// Its percentiles, in the order they are printed.
    pub stats: Vec<Stat>,
}

impl LatencyRow {
    /// Each statistic as a row of its own, the way the CSV has them.
    fn rows(&self) -> Vec<Row> {
        self.stats
            .iter()
            .map(|s| Row {
                section: self.section,
                unit: format!("{} us", s.name),
                transport: self.transport.clone(),
                clients: 1,
                contender: self.contender.clone(),
                median: s.median_us,
                spread: s.spread,
                ratio: s.ratio,
            })
            .collect()
    }
}

/// Rates and latencies print differently, so the report keeps them apart but in order.
enum Entry {
    Rate(Row),
    Latency(LatencyRow),
}

impl Entry {
    fn section(&self) -> &'static str {
        match self {
            Entry::Rate(r) => r.section,
            Entry::Latency(l) => l.section,
        }
    }
}

/// Every row of one run.
#[derive(Default)]
pub struct Report {
    entries: Vec<Entry>,
}

/// The two statistics of a latency row the table shows spreads and ratios for (the CSV has
/// all of them).
const HEADLINE: [&str; 2] = ["p50", "p99"];

impl Report {
    /// Records a contender's samples; `baseline` is the median it is compared with.
    pub fn row(
        &mut self,
        group: &Group,
        transport: &str,
        clients: usize,
        contender: &str,
        s: &Samples,
        baseline: Option<f64>,
    ) {
        self.entries.push(Entry::Rate(Row {
            section: group.title,
            unit: group.unit.into(),
            transport: transport.into(),
            clients,
            contender: contender.into(),
            median: s.median(),
            spread: s.spread(),
            ratio: baseline.map(|b| s.median() / b),
        }));
    }

    /// Records a contender's latency percentiles.
    pub fn latency(&mut self, row: LatencyRow) {
        self.entries.push(Entry::Latency(row));
    }

    /// The table, grouped by section.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut section = "";
        for e in &self.entries {
            let first = e.section() != section;
            section = e.section();
            match e {
                Entry::Rate(r) => rate_line(&mut out, r, first),
                Entry::Latency(l) => latency_line(&mut out, l, first),
            }
        }
        out
    }

    /// Writes every figure as CSV, one statistic a line.
    pub fn write_csv(&self, path: &Path) -> std::io::Result<()> {
        let mut csv =
            String::from("section,transport,clients,contender,metric,median,spread,ratio\n");
        for e in &self.entries {
            match e {
                Entry::Rate(r) => csv_line(&mut csv, r),
                Entry::Latency(l) => l.rows().iter().for_each(|r| csv_line(&mut csv, r)),
            }
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, csv)
    }
}

fn rate_line(out: &mut String, r: &Row, first: bool) {
    if first {
        let _ = writeln!(out, "\n{}", r.section);
        let _ = writeln!(
            out,
            "  {:<6} {:>7}  {:<36} {:>18} {:>8} {:>9}",
            "socket",
            "clients",
            "contender",
            format!("{} (median)", r.unit),
            "spread",
            "ratio"
        );
    }
    let ratio = r.ratio.map(times).unwrap_or_default();
    let _ = writeln!(
        out,
        "  {:<6} {:>7}  {:<36} {:>18} {:>7.0}% {:>9}",
        r.transport,
        r.clients,
        r.contender,
        rate(r.median),
        r.spread * 100.0,
        ratio
    );
}

fn latency_line(out: &mut String, l: &LatencyRow, first: bool) {
    if first {
        let _ = writeln!(out, "\n{}", l.section);
        let _ = write!(out, "  {:<6} {:<28}", "socket", "contender");
        for s in &l.stats {
            let _ = write!(out, " {:>8}", s.name);
        }
        let pair = HEADLINE.join(" / ");
        let _ = writeln!(
            out,
            "  {:>17}  {:>17}",
            format!("spread {pair}"),
            format!("ratio {pair}")
        );
    }
    let _ = write!(out, "  {:<6} {:<28}", l.transport, l.contender);
    for s in &l.stats {
        let _ = write!(out, " {:>8.1}", s.median_us);
    }
    let headline: Vec<&Stat> = HEADLINE
        .iter()
        .filter_map(|name| l.stats.iter().find(|s| s.name == *name))
        .collect();
    let spreads: Vec<String> = headline
        .iter()
        .map(|s| format!("{:.0}%", s.spread * 100.0))
        .collect();
    let ratios: Vec<String> = headline.iter().filter_map(|s| s.ratio.map(times)).collect();
    let _ = writeln!(
        out,
        "  {:>17}  {:>17}",
        spreads.join(" / "),
        ratios.join(" / ")
    );
}

/// A ratio with two decimals, or two significant digits when it is smaller than 0.1 (a queue
/// at 0.003x of a raw pipe should not read 0.00x).
fn times(x: f64) -> String {
    if x > 0.0 && x < 0.1 {
        let decimals = 1 - x.log10().floor() as i32;
        format!("{x:.*}x", decimals.max(0) as usize)
    } else {
        format!("{x:.2}x")
    }
}

/// One CSV line; text fields are quoted when they hold a comma or a quote.
fn csv_line(csv: &mut String, r: &Row) {
    let ratio = r.ratio.map(|x| format!("{x:.4}")).unwrap_or_default();
    let _ = writeln!(
        csv,
        "{},{},{},{},{},{:.1},{:.4},{ratio}",
        quote(r.section),
        quote(&r.transport),
        r.clients,
        quote(&r.contender),
        quote(&r.unit),
        r.median,
        r.spread,
    );
}

fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}
