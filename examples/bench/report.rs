//! The benchmark's results: a table on stdout and a CSV file.

use std::fmt::Write as _;
use std::path::Path;

use crate::harness::{rate, Samples};

/// One measured contender.
pub struct Row {
    /// Which part of the benchmark.
    pub section: String,
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

/// Every row of one run.
#[derive(Default)]
pub struct Report {
    /// The rows, in the order they were measured.
    pub rows: Vec<Row>,
}

impl Report {
    /// Records a contender's samples; `baseline` is the median it is compared with.
    pub fn row(
        &mut self,
        section: &str,
        transport: &str,
        clients: usize,
        contender: &str,
        s: &Samples,
        baseline: Option<f64>,
    ) {
        self.rows.push(Row {
            section: section.into(),
            transport: transport.into(),
            clients,
            contender: contender.into(),
            median: s.median(),
            spread: s.spread(),
            ratio: baseline.map(|b| s.median() / b),
        });
    }

    /// The table, grouped by section.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut section = "";
        for r in &self.rows {
            if r.section != section {
                section = &r.section;
                let _ = writeln!(out, "\n{section}");
                let _ = writeln!(
                    out,
                    "  {:<6} {:>7}  {:<28} {:>14} {:>8} {:>9}",
                    "socket", "clients", "contender", "ops/s (median)", "spread", "ratio"
                );
            }
            let ratio = r.ratio.map(|x| format!("{x:.2}x")).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<6} {:>7}  {:<28} {:>14} {:>7.0}% {:>9}",
                r.transport,
                r.clients,
                r.contender,
                rate(r.median),
                r.spread * 100.0,
                ratio
            );
        }
        out
    }

    /// Writes the rows as CSV.
    pub fn write_csv(&self, path: &Path) -> std::io::Result<()> {
        let mut csv =
            String::from("section,transport,clients,contender,median_ops_per_s,spread,ratio\n");
        for r in &self.rows {
            let ratio = r.ratio.map(|x| format!("{x:.4}")).unwrap_or_default();
            let _ = writeln!(
                csv,
                "{},{},{},{},{:.1},{:.4},{}",
                r.section, r.transport, r.clients, r.contender, r.median, r.spread, ratio
            );
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, csv)
    }
}
