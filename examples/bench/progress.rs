//! The progress bar on standard error: which section, contender and round is running.
//!
//! The bar is redrawn only when a measurement starts or ends, from the main thread: no ticker
//! thread, because the benchmark forks its workers and a program should not fork while it
//! runs other threads. It is cleared before the table goes to standard output.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting measurements, one step each.
pub struct Progress {
    bar: ProgressBar,
    rounds: usize,
}

impl Progress {
    /// A bar for `steps` measurements spread over `rounds` rounds.
    pub fn new(steps: u64, rounds: usize) -> Result<Progress, String> {
        let style = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:16.cyan/blue}] {pos}/{len} {wide_msg}",
        )
        .map_err(|e| format!("progress bar template: {e}"))?
        .progress_chars("=> ");
        let bar = ProgressBar::new(steps);
        bar.set_style(style);
        Ok(Progress { bar, rounds })
    }

    /// Runs one measurement of `contender` in `section` (round `round`, counted from 0) with
    /// the bar saying so, then counts it done.
    pub fn measure<T, E>(
        &self,
        section: &str,
        contender: &str,
        round: usize,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        self.bar.set_message(format!(
            "{section}: {contender}, round {}/{}",
            round + 1,
            self.rounds
        ));
        let result = f();
        self.bar.inc(1);
        result
    }

    /// Prints a line above the bar (also when standard error is not a terminal and the bar is
    /// hidden).
    pub fn note(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    /// Removes the bar, so that what follows starts on a clean line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
