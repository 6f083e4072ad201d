//! The limits an operator may change while the manager runs (the admin method `limits`,
//! `PROTOCOL.md`, section 4.2): how many connections it serves, how many calls one connection
//! may have parked, how many bytes of replies one may leave unread, and how long a new one has
//! to authenticate.
//!
//! They start as [`Config`] says and live in one [`AdjustableLimits`] that every connection
//! reads where it applies them, so a change takes effect at the next check: a lowered
//! `max_connections` closes nobody but refuses new connections until fewer are open; a lowered
//! `max_in_flight` refuses the next call that would park beyond it; a new `auth_timeout`
//! applies to connections accepted from then on.
//!
//! The limits on each message ([`agora_proto::Limits`]) are not here: `hello` tells them to
//! clients, which rely on them for the whole connection, so they never change.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agora_proto::{CallError, ErrorName};
use rmpv::Value;
use tracing::info;

use crate::config::{open_files_limit, Config, FD_RESERVE, PRE_AUTH_MAX_OUTPUT_BYTES};

/// The names `limits` accepts, in the order its answer lists them.
pub const NAMES: [&str; 4] = [
    "max_connections",
    "max_in_flight",
    "max_output_bytes",
    "auth_timeout",
];

/// The limits `hello` announces, which `limits` refuses to change.
const FIXED: [&str; 3] = ["max_message_bytes", "max_depth", "max_container_len"];

/// The limits that may change at run time, and the count of open connections that
/// `max_connections` bounds. Every field is atomic: read on every use, without a lock.
#[derive(Debug)]
pub struct AdjustableLimits {
    max_connections: AtomicUsize,
    max_in_flight: AtomicUsize,
    max_output_bytes: AtomicUsize,
    /// In nanoseconds, never zero.
    auth_timeout: AtomicU64,
    /// Connections holding a [`ConnectionSlot`].
    open: AtomicUsize,
}

impl AdjustableLimits {
    /// The limits `config` starts the manager with.
    pub fn new(config: &Config) -> AdjustableLimits {
        AdjustableLimits {
            max_connections: AtomicUsize::new(config.max_connections),
            max_in_flight: AtomicUsize::new(config.max_in_flight),
            max_output_bytes: AtomicUsize::new(config.max_output_bytes),
            auth_timeout: AtomicU64::new(nanos(config.auth_timeout)),
            open: AtomicUsize::new(0),
        }
    }

    /// Most connections served at once (see [`Config::max_connections`]).
    pub fn max_connections(&self) -> usize {
        self.max_connections.load(Ordering::Relaxed)
    }

    /// Most calls one connection may have parked (see [`Config::max_in_flight`]).
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::Relaxed)
    }

    /// Most bytes of replies one authenticated connection may leave unwritten (see
    /// [`Config::max_output_bytes`]).
    pub fn max_output_bytes(&self) -> usize {
        self.max_output_bytes.load(Ordering::Relaxed)
    }

    /// The bound on unwritten replies before a connection has authenticated: the smaller of
    /// [`AdjustableLimits::max_output_bytes`] and [`PRE_AUTH_MAX_OUTPUT_BYTES`].
    pub fn pre_auth_max_output_bytes(&self) -> usize {
        self.max_output_bytes().min(PRE_AUTH_MAX_OUTPUT_BYTES)
    }

    /// How long a new connection has to authenticate (see [`Config::auth_timeout`]).
    pub fn auth_timeout(&self) -> Duration {
        Duration::from_nanos(self.auth_timeout.load(Ordering::Relaxed))
    }

    /// How many connections hold a slot now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A slot for one more connection, or `None` when [`AdjustableLimits::max_connections`]
    /// are open already. The slot frees when dropped.
    pub fn admit(self: &Arc<Self>) -> Option<ConnectionSlot> {
        // Checked and counted in one step, so that two accept loops never both take the last
        // slot; the maximum may move meanwhile, and the next admission sees the new one.
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max_connections()).then_some(open + 1)
            })
            .ok()
            .map(|_| ConnectionSlot(self.clone()))
    }

    /// The current values, in the order of [`NAMES`].
    pub fn current(&self) -> [(&'static str, Setting); 4] {
        [
            (NAMES[0], Setting::Count(self.max_connections())),
            (NAMES[1], Setting::Count(self.max_in_flight())),
            (NAMES[2], Setting::Count(self.max_output_bytes())),
            (NAMES[3], Setting::Seconds(self.auth_timeout())),
        ]
    }

    /// Applies `changes` (all of them valid: see [`parse_changes`]), logging each at INFO with
    /// its old and new value.
    pub fn apply(&self, changes: &[Change]) {
        for change in changes {
            let old = match change.setting {
                Setting::Count(n) => match self.count(change.name) {
                    Some(limit) => Setting::Count(limit.swap(n, Ordering::Relaxed)),
                    // parse_changes gives counts only for the names count() knows.
                    None => continue,
                },
                Setting::Seconds(d) => Setting::Seconds(Duration::from_nanos(
                    self.auth_timeout.swap(nanos(d), Ordering::Relaxed),
                )),
            };
            info!(limit = change.name, old = %old, new = %change.setting, "limit changed");
        }
    }

    /// The atomic behind a count limit.
    fn count(&self, name: &str) -> Option<&AtomicUsize> {
        match name {
            "max_connections" => Some(&self.max_connections),
            "max_in_flight" => Some(&self.max_in_flight),
            "max_output_bytes" => Some(&self.max_output_bytes),
            _ => None,
        }
    }
}

/// Nanoseconds of `d`, at least 1 and saturating.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// One connection's place among [`AdjustableLimits::max_connections`]; frees it when dropped.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<AdjustableLimits>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A limit's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Setting {
    /// A count: connections, calls or bytes.
    Count(usize),
    /// A duration, given and answered in seconds.
    Seconds(Duration),
}

impl Setting {
    /// The value as the wire carries it: an integer, or seconds as a float.
    pub fn to_value(self) -> Value {
        match self {
            Setting::Count(n) => Value::from(n as u64),
            Setting::Seconds(d) => Value::from(d.as_secs_f64()),
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setting::Count(n) => write!(f, "{n}"),
            Setting::Seconds(d) => write!(f, "{}s", d.as_secs_f64()),
        }
    }
}

/// A valid change of one limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// One of [`NAMES`].
    pub name: &'static str,
    /// Its new value.
    pub setting: Setting,
}

/// The changes a `limits` map asks for, every one checked before any is applied: a name that
/// is not in [`NAMES`], or a value below the minimum its command-line flag has, fails the whole
/// call (`ValueError`, or `TypeError` for a value of the wrong type), naming the entry.
///
/// ```
/// use agora_manager::limits::{parse_changes, Setting};
/// use rmpv::Value;
/// let map = Value::Map(vec![(Value::from("max_in_flight"), Value::from(8))]);
/// let changes = parse_changes(&map).unwrap();
/// assert_eq!(changes[0].setting, Setting::Count(8));
/// let bad = Value::Map(vec![(Value::from("max_depth"), Value::from(8))]);
/// assert!(parse_changes(&bad).is_err());
/// ```
pub fn parse_changes(map: &Value) -> Result<Vec<Change>, CallError> {
    let Value::Map(entries) = map else {
        return Err(CallError::new(
            ErrorName::TypeError,
            "limits takes a map of limit names to new values, or nothing to read them",
        ));
    };
    entries.iter().map(|(k, v)| parse_change(k, v)).collect()
}

/// One entry of a `limits` map.
fn parse_change(key: &Value, value: &Value) -> Result<Change, CallError> {
    let Some(text) = key.as_str() else {
        return Err(CallError::new(
            ErrorName::TypeError,
            format!("limit names are strings, not {key}"),
        ));
    };
    let Some(name) = NAMES.iter().copied().find(|n| *n == text) else {
        return Err(unknown(text));
    };
    let setting = if name == "auth_timeout" {
        Setting::Seconds(seconds(name, value)?)
    } else {
        Setting::Count(count(name, value)?)
    };
    Ok(Change { name, setting })
}

/// The error for a name `limits` cannot change.
fn unknown(name: &str) -> CallError {
    let message = if FIXED.contains(&name) {
        format!(
            "{name} cannot change while the manager runs: hello tells it to every client, \
             which relies on it for the whole connection; restart the manager with the flag \
             to change it"
        )
    } else {
        format!(
            "no limit named {name:?}: the limits that may change are {}",
            NAMES.join(", ")
        )
    };
    CallError::new(ErrorName::ValueError, message)
}

/// A count limit's new value: a whole number, at least 1 (as its flag requires);
/// `max_connections` also within the descriptors this process may open.
fn count(name: &str, value: &Value) -> Result<usize, CallError> {
    let n = match value {
        Value::Integer(i) => i.as_u64().and_then(|n| usize::try_from(n).ok()),
        _ => {
            return Err(CallError::new(
                ErrorName::TypeError,
                format!("{name} must be a whole number, not {value}"),
            ))
        }
    };
    let n = match n {
        Some(n) if n >= 1 => n,
        _ => {
            return Err(CallError::new(
                ErrorName::ValueError,
                format!("{name} must be at least 1, not {value}"),
            ))
        }
    };
    if name == "max_connections" {
        let allowed = open_files_limit().map_or(usize::MAX, |l| l.saturating_sub(FD_RESERVE));
        if n > allowed {
            return Err(CallError::new(
                ErrorName::ValueError,
                format!(
                    "max_connections {n} is more than the open-files limit (RLIMIT_NOFILE) \
                     allows, {allowed}: raise it and restart, or ask for fewer"
                ),
            ));
        }
    }
    Ok(n)
}

/// A duration's new value: seconds, whole or fractional, more than 0.
fn seconds(name: &str, value: &Value) -> Result<Duration, CallError> {
    let secs = match value {
        Value::Integer(i) => i.as_f64(),
        Value::F32(f) => Some(f64::from(*f)),
        Value::F64(f) => Some(*f),
        _ => None,
    };
    let Some(secs) = secs else {
        return Err(CallError::new(
            ErrorName::TypeError,
            format!("{name} must be a number of seconds, not {value}"),
        ));
    };
    if secs.is_nan() || secs <= 0.0 {
        return Err(CallError::new(
            ErrorName::ValueError,
            format!("{name} must be more than 0 seconds, not {value}"),
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| {
        CallError::new(
            ErrorName::ValueError,
            format!("{name} {value} is not a usable duration: {e}"),
        )
    })
}

/// Appends the current limits to `out`, as the map `limits` answers.
pub fn write_current(limits: &AdjustableLimits, out: &mut Vec<u8>) {
    let map = Value::Map(
        limits
            .current()
            .into_iter()
            .map(|(name, setting)| (Value::from(name), setting.to_value()))
            .collect(),
    );
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(out, &map);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize) -> Arc<AdjustableLimits> {
        let mut config = Config::new(b"key".to_vec());
        config.max_connections = max_connections;
        Arc::new(AdjustableLimits::new(&config))
    }

    #[test]
    fn slots_follow_the_maximum_both_ways() {
        let l = limits(2);
        let a = l.admit().unwrap();
        let _b = l.admit().unwrap();
        assert!(l.admit().is_none());
        l.apply(&[Change {
            name: "max_connections",
            setting: Setting::Count(1),
        }]);
        drop(a);
        assert!(l.admit().is_none(), "still one open, the new maximum");
        l.apply(&[Change {
            name: "max_connections",
            setting: Setting::Count(3),
        }]);
        let _c = l.admit().unwrap();
        assert_eq!(l.open_connections(), 2);
    }

    /// Threads take and free slots at random while the maximum stays put: never more slots
    /// are held than it allows, and every one comes back.
    #[test]
    fn racing_admissions_never_exceed_the_maximum() {
        let l = limits(5);
        let held = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8u64)
            .map(|seed| {
                let (l, held) = (l.clone(), held.clone());
                std::thread::spawn(move || {
                    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                    for _ in 0..2_000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        if let Some(slot) = l.admit() {
                            let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                            assert!(now <= 5, "{now} slots held");
                            if x % 3 == 0 {
                                std::thread::yield_now();
                            }
                            held.fetch_sub(1, Ordering::SeqCst);
                            drop(slot);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(l.open_connections(), 0);
    }

    #[test]
    fn a_bad_entry_fails_the_whole_map() {
        let map = |entries: Vec<(&str, Value)>| {
            Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (Value::from(k), v))
                    .collect(),
            )
        };
        let good = ("max_in_flight", Value::from(4));
        for (bad, name, said) in [
            (
                ("max_in_flight", Value::from(0)),
                ErrorName::ValueError,
                "at least 1",
            ),
            (
                ("max_in_flight", Value::from(-3)),
                ErrorName::ValueError,
                "at least 1",
            ),
            (
                ("max_output_bytes", Value::from("8")),
                ErrorName::TypeError,
                "whole number",
            ),
            (
                ("auth_timeout", Value::from(0.0)),
                ErrorName::ValueError,
                "more than 0",
            ),
            (
                ("auth_timeout", Value::Nil),
                ErrorName::TypeError,
                "seconds",
            ),
            (
                ("max_depth", Value::from(9)),
                ErrorName::ValueError,
                "cannot change",
            ),
            (
                ("max_inflight", Value::from(9)),
                ErrorName::ValueError,
                "no limit named",
            ),
        ] {
            let err = parse_changes(&map(vec![good.clone(), bad])).unwrap_err();
            assert_eq!(err.name, name, "{}", err.message);
            assert!(err.message.contains(said), "{}", err.message);
        }
        let ok = parse_changes(&map(vec![good, ("auth_timeout", Value::from(2))])).unwrap();
        assert_eq!(ok[1].setting, Setting::Seconds(Duration::from_secs(2)));
    }
}
