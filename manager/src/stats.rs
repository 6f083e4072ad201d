//! What a manager counts about itself, for the `stats` method (`PROTOCOL.md`, section 4.2.1),
//! `agora-manager inspect` and `/metrics` ([`crate::metrics`]).
//!
//! Counting stays off the shared path of a call: the calls and errors of each method are
//! relaxed atomic counters in an array indexed by the method's row in
//! [`agora_proto::methods::TABLE`] (a relaxed increment takes no lock and orders nothing), and
//! a connection's own counts are written only by its own task. The connections are listed in
//! a table the manager touches once when a connection opens and once when it closes. The look
//! inside the objects (their holders and parked calls) is taken only when `stats` asks for it.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::Mutex;

use agora_proto::encode;
use agora_proto::methods::TABLE;

use crate::lifecycle::{SessionId, View};
use crate::peer::PeerInfo;
use crate::registry::ObjectInfo;
use crate::server::Shared;

/// The counter index of requests whose method is not in the table.
pub const OTHER: usize = TABLE.len();

/// The counter index of `method`: its row in [`TABLE`], or [`OTHER`].
pub fn method_index(method: &str) -> usize {
    static INDEX: OnceLock<HashMap<&'static str, usize, BuildHasherDefault<Fnv>>> = OnceLock::new();
    let index = INDEX.get_or_init(|| {
        TABLE
            .iter()
            .enumerate()
            .map(|(i, spec)| (spec.wire, i))
            .collect()
    });
    index.get(method).copied().unwrap_or(OTHER)
}

/// A connection's last few methods with their counter indexes, and the calls of each not yet
/// added to the manager's counters: a client calls the same few methods over and over, and
/// comparing a name with one seen before costs less than hashing it ([`method_index`] is asked
/// on a miss only). The calls are added in one go by [`RecentMethods::flush`] (after each
/// batch of requests, and when a slot is reused), not one atomic increment per call: shared
/// between every runtime thread, that increment was a tenth of a pipelined `dict.get`.
#[derive(Debug)]
pub struct RecentMethods {
    /// Most recent first: the name, its counter index, and its calls not added yet. An empty
    /// slot is the empty name, which no method has ([`OTHER`]).
    slots: [(&'static str, usize, u64); 4],
}

impl Default for RecentMethods {
    fn default() -> RecentMethods {
        RecentMethods {
            slots: [("", OTHER, 0); 4],
        }
    }
}

impl RecentMethods {
    /// Counts a call of `method`; gives its counter index ([`method_index`]). Adds the calls
    /// of the method it pushes out of the slots to `stats`.
    #[inline]
    pub fn count(&mut self, method: &str, stats: &Stats) -> usize {
        if let Some(at) = self.slots.iter().position(|(m, ..)| *m == method) {
            let mut found = self.slots[at];
            found.2 += 1;
            // Moved to the front, so that the methods used most stay.
            self.slots.copy_within(0..at, 1);
            self.slots[0] = found;
            return found.1;
        }
        let index = method_index(method);
        match TABLE.get(index) {
            Some(spec) => {
                let last = self.slots.len() - 1;
                let (_, evicted, calls) = self.slots[last];
                stats.add_calls(evicted, calls);
                self.slots.copy_within(0..last, 1);
                self.slots[0] = (spec.wire, index, 1);
            }
            None => stats.add_calls(index, 1),
        }
        index
    }

    /// Adds the calls counted here to `stats`.
    pub fn flush(&mut self, stats: &Stats) {
        for (_, index, calls) in &mut self.slots {
            stats.add_calls(*index, std::mem::take(calls));
        }
    }
}

/// The name a counter index stands for: a wire method, or `"other"`.
pub fn method_name(index: usize) -> &'static str {
    TABLE.get(index).map_or("other", |spec| spec.wire)
}

/// FNV-1a: method names are short and chosen by the code, not by an attacker who could aim
/// for collisions (an unknown name costs one probe and lands in [`OTHER`]), so a hash of a
/// few instructions a byte serves better than SipHash here.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// One connection as `stats` shows it. Its counts are written by its own task only.
#[derive(Debug)]
pub struct ConnStats {
    /// Random, unique across runs and managers: the `conn` field of its log lines.
    pub id: uuid::Uuid,
    /// The peer: a TCP address, or `unix peer`.
    pub peer: String,
    /// The peer's process id, on a Unix socket.
    pub pid: Option<u32>,
    /// When the connection was accepted.
    pub since: Instant,
    calls: AtomicU64,
    errors: AtomicU64,
    parked: AtomicU64,
    authenticated: AtomicBool,
}

/// Adds one to a counter only its owner writes: a plain load and store, no read-modify-write.
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

impl ConnStats {
    /// A connection with `peer`, accepted now.
    pub fn new(id: uuid::Uuid, peer: &PeerInfo) -> ConnStats {
        ConnStats {
            id,
            peer: peer.address.clone(),
            pid: peer.pid,
            since: Instant::now(),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            parked: AtomicU64::new(0),
            authenticated: AtomicBool::new(false),
        }
    }

    /// The connection made one more request (written by its own task only).
    #[inline]
    pub fn called(&self) {
        bump(&self.calls);
    }

    /// Requests the connection made.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Requests answered with an error.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Calls of the connection parked now.
    pub fn parked(&self) -> u64 {
        self.parked.load(Ordering::Relaxed)
    }

    /// Whether `auth` succeeded.
    pub fn authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }

    /// Notes that `auth` succeeded.
    pub fn set_authenticated(&self) {
        self.authenticated.store(true, Ordering::Relaxed);
    }

    /// Notes how many of the connection's calls are parked now.
    pub fn set_parked(&self, n: usize) {
        self.parked.store(n as u64, Ordering::Relaxed);
    }
}

/// What one manager counts.
pub struct Stats {
    /// When the manager started (for its uptime).
    pub started: Instant,
    calls: Box<[AtomicU64]>,
    errors: Box<[AtomicU64]>,
    connections: Mutex<BTreeMap<SessionId, Arc<ConnStats>>>,
    accepted: AtomicU64,
}

impl Default for Stats {
    fn default() -> Stats {
        let counters = || (0..=OTHER).map(|_| AtomicU64::new(0)).collect();
        Stats {
            started: Instant::now(),
            calls: counters(),
            errors: counters(),
            connections: Mutex::default(),
            accepted: AtomicU64::new(0),
        }
    }
}

impl Stats {
    /// `calls` requests of method `index` ([`method_index`]) arrived (counted by a
    /// connection's [`RecentMethods`]).
    fn add_calls(&self, index: usize, calls: u64) {
        if let (Some(c), true) = (self.calls.get(index), calls > 0) {
            c.fetch_add(calls, Ordering::Relaxed);
        }
    }

    /// A request of method `index` on `conn` was answered with an error.
    pub fn error(&self, conn: &ConnStats, index: usize) {
        if let Some(c) = self.errors.get(index) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        bump(&conn.errors);
    }

    /// Lists a new connection as `session`.
    pub fn open(&self, session: SessionId, conn: Arc<ConnStats>) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.connections.lock().insert(session, conn);
    }

    /// Connection `session` closed.
    pub fn close(&self, session: SessionId) {
        self.connections.lock().remove(&session);
    }

    /// The open connections, by session, oldest first.
    pub fn connections(&self) -> Vec<(SessionId, Arc<ConnStats>)> {
        let all = self.connections.lock();
        all.iter().map(|(s, c)| (*s, c.clone())).collect()
    }

    /// Connections accepted since the manager started.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Requests and error answers per method since the manager started: `(index, calls,
    /// errors)` for every method with at least one call.
    pub fn by_method(&self) -> Vec<(usize, u64, u64)> {
        self.calls
            .iter()
            .zip(self.errors.iter())
            .enumerate()
            .map(|(i, (c, e))| (i, c.load(Ordering::Relaxed), e.load(Ordering::Relaxed)))
            .filter(|(_, c, _)| *c > 0)
            .collect()
    }
}

/// One object as `stats` shows it.
struct ObjectRow {
    info: ObjectInfo,
    view: View,
}

/// Appends the answer of `stats` (`PROTOCOL.md`, section 4.2.1) to `out`.
pub fn write_stats(shared: &Shared, out: &mut Vec<u8>) {
    let now = Instant::now();
    let stats = &shared.stats;
    let connections = stats.connections();
    let uuid_of: HashMap<SessionId, String> = connections
        .iter()
        .map(|(s, c)| (*s, c.id.hyphenated().to_string()))
        .collect();
    // Taken outside the registry's locks: each view takes its object's lock.
    let objects: Vec<ObjectRow> = shared
        .registry
        .list_objects()
        .into_iter()
        .map(|(info, object)| ObjectRow {
            view: object.view(),
            info,
        })
        .collect();
    let seconds = |since: Instant| now.saturating_duration_since(since).as_secs_f64();
    let conn_ref = |out: &mut Vec<u8>, session: SessionId| match uuid_of.get(&session) {
        Some(id) => encode::str(out, id),
        None => encode::nil(out),
    };

    let (calls, errors) = stats
        .by_method()
        .iter()
        .fold((0, 0), |(c, e), (_, calls, errs)| (c + calls, e + errs));
    let parked: usize = objects.iter().map(|o| o.view.waiting.len()).sum();
    let held: usize = objects.iter().map(|o| o.view.held.len()).sum();

    encode::map_header(out, 7);
    encode::str(out, "run");
    encode::str(out, &shared.config.run.id.hyphenated().to_string());
    encode::str(out, "started");
    encode::uint(out, shared.config.run.started);
    encode::str(out, "store");
    encode::str(out, &shared.registry.store().describe());
    encode::str(out, "uptime");
    encode::f64(out, seconds(stats.started));

    encode::str(out, "totals");
    encode::map_header(out, 7);
    for (name, n) in [
        ("objects", objects.len() as u64),
        ("connections", connections.len() as u64),
        ("parked", parked as u64),
        ("held", held as u64),
        ("accepted", stats.accepted()),
        ("calls", calls),
        ("errors", errors),
    ] {
        encode::str(out, name);
        encode::uint(out, n);
    }

    encode::str(out, "objects");
    encode::array_header(out, objects.len());
    for ObjectRow { info, view } in &objects {
        encode::map_header(out, 8);
        encode::str(out, "id");
        encode::uint(out, info.id);
        encode::str(out, "name");
        match &info.name {
            Some(name) => encode::str(out, name),
            None => encode::nil(out),
        }
        encode::str(out, "kind");
        encode::str(out, info.kind.as_str());
        encode::str(out, "holders");
        encode::uint(out, info.holders);
        encode::str(out, "size");
        match view.size {
            Some(n) => encode::uint(out, n),
            None => encode::nil(out),
        }
        encode::str(out, "held_by");
        encode::array_header(out, view.held.len());
        for h in &view.held {
            encode::map_header(out, 4);
            encode::str(out, "connection");
            conn_ref(out, h.session);
            encode::str(out, "thread");
            match h.thread {
                Some(t) => encode::uint(out, t),
                None => encode::nil(out),
            }
            encode::str(out, "count");
            encode::uint(out, h.count);
            encode::str(out, "owned");
            encode::bool(out, h.owned);
        }
        encode::str(out, "parked");
        encode::uint(out, view.waiting.len() as u64);
        encode::str(out, "waiting");
        encode::array_header(out, view.waiting.len());
        for w in &view.waiting {
            encode::map_header(out, 3);
            encode::str(out, "connection");
            conn_ref(out, w.session);
            encode::str(out, "for");
            encode::str(out, &w.waits_for);
            encode::str(out, "seconds");
            encode::f64(out, seconds(w.since));
        }
    }

    // Each connection's holdings and parked calls, from the objects' side.
    let mut holds: HashMap<SessionId, Vec<(&ObjectInfo, u64)>> = HashMap::new();
    let mut waits: HashMap<SessionId, Vec<(&ObjectInfo, &str, Instant)>> = HashMap::new();
    for ObjectRow { info, view } in &objects {
        for h in &view.held {
            holds.entry(h.session).or_default().push((info, h.count));
        }
        for w in &view.waiting {
            waits
                .entry(w.session)
                .or_default()
                .push((info, &w.waits_for, w.since));
        }
    }
    let object_ref = |out: &mut Vec<u8>, info: &ObjectInfo| {
        encode::str(out, "object");
        encode::uint(out, info.id);
        encode::str(out, "kind");
        encode::str(out, info.kind.as_str());
        encode::str(out, "name");
        match &info.name {
            Some(name) => encode::str(out, name),
            None => encode::nil(out),
        }
    };

    encode::str(out, "connections");
    encode::array_header(out, connections.len());
    for (session, conn) in &connections {
        encode::map_header(out, 10);
        encode::str(out, "id");
        // uuid_of was built from these very connections: always found.
        encode::str(out, uuid_of.get(session).map_or("", String::as_str));
        encode::str(out, "peer");
        encode::str(out, &conn.peer);
        encode::str(out, "pid");
        match conn.pid {
            Some(pid) => encode::uint(out, u64::from(pid)),
            None => encode::nil(out),
        }
        encode::str(out, "seconds");
        encode::f64(out, seconds(conn.since));
        encode::str(out, "authenticated");
        encode::bool(out, conn.authenticated());
        encode::str(out, "calls");
        encode::uint(out, conn.calls());
        encode::str(out, "errors");
        encode::uint(out, conn.errors());
        encode::str(out, "parked");
        encode::uint(out, conn.parked());
        let held = holds.get(session).map_or(&[][..], Vec::as_slice);
        encode::str(out, "holds");
        encode::array_header(out, held.len());
        for (info, count) in held {
            encode::map_header(out, 4);
            object_ref(out, info);
            encode::str(out, "count");
            encode::uint(out, *count);
        }
        let waiting = waits.get(session).map_or(&[][..], Vec::as_slice);
        encode::str(out, "waits");
        encode::array_header(out, waiting.len());
        for (info, what, since) in waiting {
            encode::map_header(out, 5);
            object_ref(out, info);
            encode::str(out, "for");
            encode::str(out, what);
            encode::str(out, "seconds");
            encode::f64(out, seconds(*since));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_of_the_table_has_its_own_counter() {
        for (i, spec) in TABLE.iter().enumerate() {
            assert_eq!(method_index(spec.wire), i, "{}", spec.wire);
            assert_eq!(method_name(i), spec.wire);
        }
        assert_eq!(method_index("dict.no_such_method"), OTHER);
        assert_eq!(method_index(""), OTHER);
        assert_eq!(method_name(OTHER), "other");
    }

    #[test]
    fn recent_methods_give_the_same_index_as_the_table() {
        let stats = Stats::default();
        let mut recent = RecentMethods::default();
        let names = [
            "dict.get",
            "dict.setitem",
            "ping",
            "lock.acquire",
            "queue.put",
            "nope",
        ];
        for round in 0..3 {
            for (i, name) in names.iter().enumerate().skip(round) {
                assert_eq!(
                    recent.count(name, &stats),
                    method_index(name),
                    "{name} ({i})"
                );
            }
        }
        assert_eq!(
            recent.count("", &stats),
            OTHER,
            "an empty name is no empty slot"
        );
    }

    /// Methods pushed out of a connection's few slots have their calls added then.
    #[test]
    fn a_method_pushed_out_of_the_recent_ones_is_counted() {
        let stats = Stats::default();
        let mut recent = RecentMethods::default();
        let methods = [
            "dict.get",
            "dict.setitem",
            "list.append",
            "queue.put",
            "lock.acquire",
        ];
        for method in methods {
            recent.count(method, &stats);
        }
        let get = method_index("dict.get");
        assert_eq!(stats.by_method(), vec![(get, 1, 0)]);
        recent.flush(&stats);
        let total: u64 = stats.by_method().iter().map(|&(_, calls, _)| calls).sum();
        assert_eq!(total, methods.len() as u64);
    }

    #[test]
    fn counts_go_to_the_method_and_the_connection() {
        let stats = Stats::default();
        let (a, _) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::os::fd::AsRawFd;
        let peer = PeerInfo::of(a.as_raw_fd(), "test".into());
        let conn = Arc::new(ConnStats::new(uuid::Uuid::nil(), &peer));
        assert_eq!(
            conn.pid,
            Some(std::process::id()),
            "the peer is this process"
        );
        stats.open(7, conn.clone());
        let get = method_index("dict.get");
        let mut recent = RecentMethods::default();
        for method in ["dict.get", "dict.get", "no.such"] {
            recent.count(method, &stats);
            conn.called();
        }
        stats.error(&conn, get);
        assert_eq!((conn.calls(), conn.errors()), (3, 1));
        assert_eq!(
            stats.by_method(),
            vec![(OTHER, 1, 0)],
            "a known method's calls wait for the flush"
        );
        recent.flush(&stats);
        assert_eq!(stats.by_method(), vec![(get, 2, 1), (OTHER, 1, 0)]);
        recent.flush(&stats);
        assert_eq!(
            stats.by_method(),
            vec![(get, 2, 1), (OTHER, 1, 0)],
            "added once"
        );
        assert_eq!(stats.connections().len(), 1);
        stats.close(7);
        assert!(stats.connections().is_empty());
        assert_eq!(stats.accepted(), 1);
    }
}
