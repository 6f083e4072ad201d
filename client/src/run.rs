//! [`ManagerRun`]: which run of a manager a client talks to.
//!
//! A manager restarted at the same address with the same authkey hands out the same small
//! object ids again, so an id alone cannot tell an object of the old run from one of the new
//! run. Each run of a manager has a random id that `hello` reports (`PROTOCOL.md`, section 2);
//! a client keeps the run it first connected to, tokens carry it, and a proxy of one run never
//! calls a manager of another ([`Error::OtherRun`]).

use crate::error::Error;

/// One run of a manager: its random id and when it started.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ManagerRun {
    /// The run's id, a uuid in its hyphenated lowercase form.
    pub id: String,
    /// When the run started, in seconds since the Unix epoch.
    pub started: u64,
}

impl ManagerRun {
    /// Checks a run id as it came from a manager or a token: a uuid, hyphenated, lowercase
    /// (the one spelling, so that ids compare as strings).
    pub(crate) fn is_valid_id(id: &str) -> bool {
        uuid::Uuid::try_parse(id).is_ok_and(|u| u.hyphenated().to_string() == id)
    }

    /// The run as a number, what proxies, commands and the reference table are bound to: the
    /// two halves of the uuid folded together, never 0 (0 means "no run" in a command).
    pub(crate) fn key(&self) -> u64 {
        key(&self.id)
    }

    /// The error for a proxy of run `run` (made for the manager at `address`) meeting this run,
    /// which answers at `manager_address`.
    pub(crate) fn mismatch(&self, run: &str, address: &str, manager_address: &str) -> Error {
        Error::OtherRun {
            run: run.to_owned(),
            address: address.to_owned(),
            manager_address: manager_address.to_owned(),
            manager_run: self.id.clone(),
            started: self.started,
        }
    }
}

/// [`ManagerRun::key`] of a run id (a token's, say); 1 for an id that is not a uuid, which no
/// manager reports.
pub(crate) fn key(id: &str) -> u64 {
    let n = uuid::Uuid::try_parse(id).map_or(0, |u| u.as_u128());
    (n as u64 ^ (n >> 64) as u64) | 1
}

/// `secs` since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`, for messages read by people.
pub(crate) fn utc(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days to a civil date (proleptic Gregorian), by eras of 400 years.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_767_225_599), "2025-12-31 23:59:59 UTC");
    }

    #[test]
    fn run_ids_have_one_spelling() {
        assert!(ManagerRun::is_valid_id(
            "0b5c3c3e-6f1e-4c8a-9d2b-3f4e5a6b7c8d"
        ));
        for bad in [
            "0B5C3C3E-6F1E-4C8A-9D2B-3F4E5A6B7C8D",
            "0b5c3c3e6f1e4c8a9d2b3f4e5a6b7c8d",
            "",
            "run",
        ] {
            assert!(!ManagerRun::is_valid_id(bad), "{bad}");
        }
    }
}
