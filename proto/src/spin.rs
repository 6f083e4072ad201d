//! The polling budget: how long a side polls its socket before it sleeps, and how
//! `AGORA_SPIN_US` sets it.
//!
//! Both sides of a connection poll briefly before sleeping (a client for its reply, the
//! manager for a busy connection's next request), because waking a sleeping thread costs more
//! than a call on many machines. One variable sets the budget of both, so both must read it
//! alike; these are the facts they share, defined once:
//!
//! - the budget is whole microseconds ([`ENV_SPIN_US`]); `0` never polls;
//! - at most [`MAX_BUDGET`] (1 ms) is used, whatever is asked ([`capped`]): polling holds a
//!   CPU, and a reply that takes longer than that is not coming within a wake-up's time;
//! - unset, or set to nothing but blanks, the budget is [`DEFAULT_BUDGET`] (50 µs) when the
//!   process may run on two CPUs or more, and none on one CPU ([`default_budget_for`]): there
//!   the other side can only answer once the poller stops, so polling would only delay it;
//! - anything else is a [`BudgetError`] ([`parse_micros`] says exactly what is accepted).
//!
//! What a caller does with a [`BudgetError`] is its own policy, and the two differ on purpose:
//! the `agora-manager` program refuses to start, since an operator's typo should be seen
//! before it silently changes latency; the Rust client and `Manager::spawn` log a warning and
//! use the default, since a tuning knob must not make a program fail. The Python client
//! (`client/python/agora/connection.py`) follows the same rules, and a cross-language test
//! compares its parse with this one.
//!
//! # What this module reads
//!
//! Like the rest of this crate it has no I/O policy: the poll loops, sockets and back-off
//! stay with the code that polls. Every function here is a pure function of its arguments,
//! except the two that say so: [`from_env`] reads the variable, and it and [`default_budget`]
//! ask `std` how many CPUs this process may run on. Both reads are here rather than in each
//! caller because *which* variable and *which* CPU count are facts too: the manager and the
//! client once counted CPUs differently when the count was unknown. Tests call the pure
//! [`budget_from`] with the inputs they choose.

use std::ffi::OsStr;
use std::time::Duration;

use thiserror::Error;

/// The environment variable that sets the polling budget, in whole microseconds (`0`: never
/// poll). Read by the `agora-manager` program, `Manager::spawn`, and the Rust and Python
/// clients, so that one setting tunes, or turns off, the polling of every side.
pub const ENV_SPIN_US: &str = "AGORA_SPIN_US";

/// The budget when [`ENV_SPIN_US`] is not set, on a process that may run on two CPUs or
/// more: about two wake-ups of an idle CPU on a virtual machine, long enough for a reply that
/// comes right away, short enough that a wasted poll costs little.
pub const DEFAULT_BUDGET: Duration = Duration::from_micros(50);

/// The longest any side polls, whatever it is asked to: polling holds a CPU that other
/// threads and processes may want, and a reply slower than this is better slept for.
pub const MAX_BUDGET: Duration = Duration::from_millis(1);

/// A value of [`ENV_SPIN_US`] that is not a budget: anything but blanks around ASCII digits
/// (`"fifty"`, `"-1"`, `"1.5"`, `"+5"`). The caller decides whether that is fatal.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "{ENV_SPIN_US}={value:?} is not a whole number of microseconds \
     (digits only; 0 turns polling off, at most 1000 are used)"
)]
pub struct BudgetError {
    /// The value as set (non-UTF-8 bytes replaced), for the message.
    value: String,
}

impl BudgetError {
    /// The offending value, as set (any bytes that are not UTF-8 shown as U+FFFD), so that a
    /// caller can report it in its own words.
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// `budget`, or [`MAX_BUDGET`] if it is longer. For budgets that come from elsewhere than the
/// variable (`agora-manager --spin-us`, a builder option), so that they are held to the same
/// cap.
pub fn capped(budget: Duration) -> Duration {
    budget.min(MAX_BUDGET)
}

/// The default budget of a process that may run on `cpus` CPUs: [`DEFAULT_BUDGET`], or none
/// below two CPUs (one CPU, or pinned to one with `taskset`), where the side whose answer is
/// awaited shares the poller's CPU and cannot run until the poller stops.
pub fn default_budget_for(cpus: usize) -> Duration {
    if cpus < 2 {
        Duration::ZERO
    } else {
        DEFAULT_BUDGET
    }
}

/// The default budget of this process: [`default_budget_for`] the number of CPUs it may run
/// on, as `std::thread::available_parallelism` counts them (on Linux: the CPUs in its affinity
/// mask, fewer under a cgroup CPU quota).
///
/// Reads process state, not the environment. When the count is unknown it assumes one CPU and
/// does not poll: polling where it cannot help delays the other side, while not polling where
/// it could costs only a wake-up per call.
pub fn default_budget() -> Duration {
    default_budget_for(cpus_to_run_on())
}

/// Parses a value of [`ENV_SPIN_US`]: `Ok(None)` when it is blank (empty, or only spaces,
/// tabs and line ends), which means "not set"; else the budget it sets, capped at
/// [`MAX_BUDGET`].
///
/// Accepted: ASCII digits, with blanks around them (what a shell or a file leaves); any number
/// of digits, a value too large for a `u64` being just as capped as `5000`. Refused, with a
/// [`BudgetError`]: anything else, including signs (`-1` is not "off", `0` is), fractions,
/// underscores and non-ASCII digits. The rule is this narrow so that every client, whatever its
/// language's idea of an integer, can accept exactly the same values.
///
/// A blank value counts as unset, not as an error, because `AGORA_SPIN_US=` is the usual way
/// to clear a variable in a shell line, a compose file or a unit file.
pub fn parse_micros(raw: &str) -> Result<Option<Duration>, BudgetError> {
    let digits = raw.trim_matches([' ', '\t', '\r', '\n']);
    if digits.is_empty() {
        return Ok(None);
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BudgetError {
            value: raw.to_owned(),
        });
    }
    // Only ASCII digits: parsing fails only on overflow, and a number that large is capped.
    let budget = digits
        .parse::<u64>()
        .map_or(MAX_BUDGET, Duration::from_micros);
    Ok(Some(capped(budget)))
}

/// The budget [`ENV_SPIN_US`] sets, given its value (`None`: not set) and the number of CPUs
/// the process may run on: [`parse_micros`]'s budget, or [`default_budget_for`] `cpus` when the
/// variable is unset or blank. A value that is not UTF-8 is a [`BudgetError`] too.
///
/// Pure: [`from_env`] supplies the real inputs.
pub fn budget_from(raw: Option<&OsStr>, cpus: usize) -> Result<Duration, BudgetError> {
    let parsed = match raw {
        None => None,
        Some(raw) => match raw.to_str() {
            Some(raw) => parse_micros(raw)?,
            None => {
                return Err(BudgetError {
                    value: raw.to_string_lossy().into_owned(),
                })
            }
        },
    };
    Ok(parsed.unwrap_or_else(|| default_budget_for(cpus)))
}

/// The budget this process's [`ENV_SPIN_US`] sets: [`budget_from`] the variable as it is now
/// and the CPUs this process may run on (counted as [`default_budget`] counts them). Reads the
/// environment on each call: callers that want one budget for the life of the process keep
/// the first answer.
pub fn from_env() -> Result<Duration, BudgetError> {
    budget_from(std::env::var_os(ENV_SPIN_US).as_deref(), cpus_to_run_on())
}

/// The CPUs this process may run on, or 1 when `std` cannot tell (see [`default_budget`]).
fn cpus_to_run_on() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn micros(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// The budget `raw` sets on a process that may run on `cpus` CPUs.
    fn budget(raw: &str, cpus: usize) -> Result<Duration, BudgetError> {
        budget_from(Some(OsStr::new(raw)), cpus)
    }

    #[test]
    fn unset_or_blank_is_the_default_for_the_cpus() {
        for cpus in [1, 2, 64] {
            let default = default_budget_for(cpus);
            assert_eq!(budget_from(None, cpus), Ok(default));
            assert_eq!(budget("", cpus), Ok(default));
            assert_eq!(budget(" \t\r\n", cpus), Ok(default));
        }
        assert_eq!(parse_micros(""), Ok(None));
    }

    #[test]
    fn the_default_is_50_us_on_two_cpus_or_more_and_none_on_one() {
        assert_eq!(DEFAULT_BUDGET, micros(50));
        assert_eq!(default_budget_for(0), Duration::ZERO);
        assert_eq!(default_budget_for(1), Duration::ZERO);
        assert_eq!(default_budget_for(2), micros(50));
        assert_eq!(default_budget_for(64), micros(50));
    }

    #[test]
    fn whole_microseconds_are_the_budget_and_zero_turns_polling_off() {
        for cpus in [1, 2] {
            assert_eq!(budget("0", cpus), Ok(Duration::ZERO));
            assert_eq!(budget("50", cpus), Ok(micros(50)));
            assert_eq!(budget("999", cpus), Ok(micros(999)));
            assert_eq!(budget("1000", cpus), Ok(MAX_BUDGET));
            assert_eq!(budget("007", cpus), Ok(micros(7)));
            assert_eq!(budget(" 30 \n", cpus), Ok(micros(30)));
        }
    }

    #[test]
    fn the_budget_is_capped_at_one_millisecond() {
        assert_eq!(MAX_BUDGET, Duration::from_millis(1));
        assert_eq!(budget("1001", 2), Ok(MAX_BUDGET));
        assert_eq!(budget("10000000", 2), Ok(MAX_BUDGET));
        assert_eq!(budget("18446744073709551615", 2), Ok(MAX_BUDGET));
        // Past u64: still a whole number, still capped.
        assert_eq!(budget("99999999999999999999999999", 2), Ok(MAX_BUDGET));
        assert_eq!(capped(Duration::from_secs(3600)), MAX_BUDGET);
        assert_eq!(capped(micros(20)), micros(20));
    }

    #[test]
    fn anything_but_digits_is_refused() {
        for bad in [
            "abc", "fifty", "-1", "-0", "+5", "1.5", "1e3", "1_000", "5 0", "50us", "0x10",
            "\u{663}",
        ] {
            let err = budget(bad, 2).expect_err(bad);
            assert_eq!(err.value(), bad);
        }
        let not_utf8 = OsStr::from_bytes(b"5\xff");
        let err = budget_from(Some(not_utf8), 2).expect_err("not UTF-8");
        assert_eq!(err.value(), "5\u{fffd}");
    }

    #[test]
    fn the_error_names_the_variable_and_the_value() {
        let message = budget("fifty", 2).unwrap_err().to_string();
        assert!(message.starts_with("AGORA_SPIN_US=\"fifty\" "), "{message}");
        assert!(
            message.contains("whole number of microseconds"),
            "{message}"
        );
    }
}
