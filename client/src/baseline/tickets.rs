//! The ticket stores: one counter, four homes.

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Error, Result, TicketStore};
use crate::{Lock, Value};

/// Sleeps for a simulated network delay, if any.
fn pause(latency: Duration) {
    if !latency.is_zero() {
        std::thread::sleep(latency);
    }
}

/// A count as a ticket number: a negative count (see [`AtomicTickets`]) means none left.
fn count_left(count: i64) -> u64 {
    u64::try_from(count).unwrap_or(0)
}

/// Tickets in a manager [`Value`], bought with two calls: read the count, then write it back
/// one lower. Correct only under a lock that every buyer takes (the manager's `Lock`, say):
/// that is the tutorials' program moved onto the manager, with its four round trips per
/// ticket (acquire, get, set, release).
#[derive(Debug, Clone)]
pub struct ValueTickets {
    value: Value<i64>,
    latency: Duration,
}

impl ValueTickets {
    /// The tickets counted by `value`, which holds how many are left.
    pub fn new(value: Value<i64>) -> ValueTickets {
        ValueTickets {
            value,
            latency: Duration::ZERO,
        }
    }

    /// Sleeps `latency` between reading the count and writing it back, as the tutorials
    /// simulate a slow database; it widens the window a buyer without the lock can race in.
    pub fn with_latency(mut self, latency: Duration) -> ValueTickets {
        self.latency = latency;
        self
    }

    /// Buys one ticket under `lock` in two round trips instead of four: the read goes with the
    /// acquire ([`Lock::acquire_then`]), the write with the release
    /// ([`LockGuard::unlock_after`](crate::proxies::LockGuard::unlock_after)). Under
    /// contention the count is read in the manager the moment the lock is granted. `None`
    /// once sold out.
    pub fn buy_chained(&self, lock: &Lock) -> Result<Option<u64>> {
        let (guard, count) = lock.acquire_then(self.value.get_cmd())?;
        if guard.is_owner_dead() {
            tracing::warn!("the previous holder died holding the ticket lock; buying anyway");
        }
        if count <= 0 {
            return Ok(None);
        }
        pause(self.latency);
        guard.unlock_after(self.value.set_cmd(&(count - 1)))?;
        Ok(Some(count_left(count)))
    }

    /// The shared value.
    pub fn value(&self) -> &Value<i64> {
        &self.value
    }
}

impl TicketStore for ValueTickets {
    fn remaining(&self) -> Result<u64> {
        Ok(count_left(self.value.get()?))
    }

    /// Not atomic: call it under the lock that guards the store.
    fn take_one(&self) -> Result<Option<u64>> {
        let count = self.value.get()?;
        if count <= 0 {
            return Ok(None);
        }
        pause(self.latency);
        self.value.set(&(count - 1))?;
        Ok(Some(count_left(count)))
    }
}

/// Tickets in a manager [`Value`], bought with **one** atomic call and no lock at all.
///
/// A purchase is `fetch_add(-1)`, which returns the count from before the subtraction. The
/// manager applies the calls on one value one after another, so every caller gets a
/// different previous count: the callers that get N, N-1, ..., 1 have bought those tickets,
/// each number exactly once, and everybody else (who got 0 or less) is told it is sold out.
/// The count goes below zero as late buyers keep subtracting; [`TicketStore::remaining`]
/// reads that as 0.
///
/// `compare_and_swap` would be correct too (read n, swap n for n - 1, retry if somebody got
/// there first), but under contention most swaps fail and each retry is another round trip;
/// `fetch_add` is one round trip per buyer however many compete, and never retries.
#[derive(Debug, Clone)]
pub struct AtomicTickets {
    value: Value<i64>,
}

impl AtomicTickets {
    /// The tickets counted by `value`, which holds how many are left.
    pub fn new(value: Value<i64>) -> AtomicTickets {
        AtomicTickets { value }
    }

    /// The shared value.
    pub fn value(&self) -> &Value<i64> {
        &self.value
    }
}

impl TicketStore for AtomicTickets {
    fn remaining(&self) -> Result<u64> {
        Ok(count_left(self.value.get()?))
    }

    /// Atomic: needs no lock ([`NoLock`](super::NoLock) is enough).
    fn take_one(&self) -> Result<Option<u64>> {
        let before = self.value.fetch_add(-1)?;
        Ok((before > 0).then(|| count_left(before)))
    }
}

/// The tutorials' ticket database: a JSON file `{"count": N}`, read, decremented and
/// rewritten by each buyer. Correct only under a lock every buyer takes: a
/// [`FileLock`](super::FileLock) on a separate lock file.
///
/// The file is rewritten by writing a temporary file beside it and renaming it over the old
/// one, so a reader that takes no lock (the tutorials' concurrent query) always sees a whole
/// file, old or new, never a half-written one. Nothing is flushed to disk: the tickets
/// survive a crash of the program but not of the machine. Because the rename replaces the
/// file, never lock the data file itself; lock a file of its own.
#[derive(Debug, Clone)]
pub struct JsonFileTickets {
    path: PathBuf,
    latency: Duration,
}

impl JsonFileTickets {
    /// Writes a ticket file at `path` holding `count` tickets (replacing any file there).
    pub fn create(path: impl Into<PathBuf>, count: u64) -> Result<JsonFileTickets> {
        let store = JsonFileTickets::open(path);
        store.write(count)?;
        Ok(store)
    }

    /// The ticket file at `path`, which must exist by the first purchase or query.
    pub fn open(path: impl Into<PathBuf>) -> JsonFileTickets {
        JsonFileTickets {
            path: path.into(),
            latency: Duration::ZERO,
        }
    }

    /// Sleeps `latency` between reading the file and writing it back, as the tutorials
    /// simulate a slow database; it widens the window a buyer without the lock can race in.
    pub fn with_latency(mut self, latency: Duration) -> JsonFileTickets {
        self.latency = latency;
        self
    }

    /// The ticket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<u64> {
        let bytes = fs::read(&self.path).map_err(|source| Error::Io {
            op: "read the ticket file",
            path: self.path.clone(),
            source,
        })?;
        let bad = |reason: String| Error::BadTicketFile {
            path: self.path.clone(),
            reason,
        };
        let doc: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        doc.get("count")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| bad("no non-negative integer \"count\" in it".into()))
    }

    fn write(&self, count: u64) -> Result<()> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let mut temp = OsString::from(self.path.as_os_str());
        temp.push(format!(
            ".{}.{}.tmp",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let temp = PathBuf::from(temp);
        let io = |op, source| Error::Io {
            op,
            path: temp.clone(),
            source,
        };
        let bytes = serde_json::json!({ "count": count }).to_string();
        let written = fs::File::create(&temp)
            .and_then(|mut f| f.write_all(bytes.as_bytes()))
            .map_err(|e| io("write the new ticket file", e))
            .and_then(|()| {
                fs::rename(&temp, &self.path)
                    .map_err(|e| io("rename the new ticket file over the old", e))
            });
        if written.is_err() {
            // Best effort: the error being returned is the one that matters.
            let _ = fs::remove_file(&temp);
        }
        written
    }
}

impl TicketStore for JsonFileTickets {
    fn remaining(&self) -> Result<u64> {
        self.read()
    }

    /// Not atomic: call it under the [`FileLock`](super::FileLock) that guards the file.
    fn take_one(&self) -> Result<Option<u64>> {
        let count = self.read()?;
        if count == 0 {
            return Ok(None);
        }
        pause(self.latency);
        self.write(count - 1)?;
        Ok(Some(count))
    }
}

/// A plain integer in this process's memory, for threads behind a
/// [`LocalLock`](super::LocalLock): the cost of the ticket logic itself, with no
/// communication at all.
///
/// The count is an atomic integer only because Rust requires shared memory to be; a purchase
/// loads it and stores it back as two separate steps, like the other stores' read and write,
/// so it is correct only under the lock. A forked child gets its own copy.
#[derive(Debug, Default)]
pub struct LocalTickets {
    count: AtomicU64,
    latency: Duration,
}

impl LocalTickets {
    /// `count` tickets.
    pub fn new(count: u64) -> LocalTickets {
        LocalTickets {
            count: AtomicU64::new(count),
            latency: Duration::ZERO,
        }
    }

    /// Sleeps `latency` between reading the count and writing it back.
    pub fn with_latency(mut self, latency: Duration) -> LocalTickets {
        self.latency = latency;
        self
    }
}

impl TicketStore for LocalTickets {
    fn remaining(&self) -> Result<u64> {
        Ok(self.count.load(Ordering::Relaxed))
    }

    /// Not atomic: call it under the [`LocalLock`](super::LocalLock) that guards the store.
    fn take_one(&self) -> Result<Option<u64>> {
        let count = self.count.load(Ordering::Relaxed);
        if count == 0 {
            return Ok(None);
        }
        pause(self.latency);
        self.count.store(count - 1, Ordering::Relaxed);
        Ok(Some(count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{buy, FileLock};

    #[test]
    fn the_json_file_is_the_tutorials_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.json");
        let store = JsonFileTickets::create(&path, 2).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, serde_json::json!({"count": 2}));
        assert_eq!(store.remaining().unwrap(), 2);
        assert_eq!(store.take_one().unwrap(), Some(2));
        assert_eq!(store.take_one().unwrap(), Some(1));
        assert_eq!(store.take_one().unwrap(), None);
        assert_eq!(store.remaining().unwrap(), 0);
        // A file written by hand, with spaces, as the tutorials write it.
        fs::write(&path, "{\"count\": 1}\n").unwrap();
        assert_eq!(JsonFileTickets::open(&path).take_one().unwrap(), Some(1));
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_bad_ticket_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.json");
        for bad in ["", "{\"count\": -1}", "{\"seats\": 3}", "[1]"] {
            fs::write(&path, bad).unwrap();
            let err = JsonFileTickets::open(&path).remaining().unwrap_err();
            assert!(
                matches!(err, Error::BadTicketFile { .. }),
                "{bad:?}: {err:?}"
            );
        }
        let err = JsonFileTickets::open(dir.path().join("missing.json"))
            .take_one()
            .unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
    }

    #[test]
    fn threads_buying_under_a_file_lock_sell_each_ticket_once() {
        let dir = tempfile::tempdir().unwrap();
        let lock = FileLock::new(dir.path().join("db.json.lock"));
        let store = JsonFileTickets::create(dir.path().join("db.json"), 20).unwrap();
        let sold: Vec<u64> = std::thread::scope(|s| {
            let buyers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = Vec::new();
                        while let Some(n) = buy(&lock, &store).unwrap() {
                            mine.push(n);
                            // Concurrent, unlocked queries never see a torn file.
                            store.remaining().unwrap();
                        }
                        mine
                    })
                })
                .collect();
            buyers.into_iter().flat_map(|b| b.join().unwrap()).collect()
        });
        let mut sorted = sold;
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=20).collect::<Vec<_>>());
    }

    #[test]
    fn local_tickets_count_down() {
        let store = LocalTickets::new(2);
        assert_eq!(store.take_one().unwrap(), Some(2));
        assert_eq!(store.remaining().unwrap(), 1);
        assert_eq!(store.take_one().unwrap(), Some(1));
        assert_eq!(store.take_one().unwrap(), None);
    }

    #[test]
    fn negative_counts_mean_none_left() {
        assert_eq!(count_left(-3), 0);
        assert_eq!(count_left(0), 0);
        assert_eq!(count_left(7), 7);
    }
}
