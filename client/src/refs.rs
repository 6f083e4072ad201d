//! The reference table: what this process's connection to a manager holds, per object, so
//! that unnamed objects are freed when the last proxy of them goes (`PROTOCOL.md`, 3.2).
//!
//! # What is counted
//! The manager counts, per connection and object, the references it handed to that
//! connection: a `create` answered with the id, an `incref` or `adopt` of it, and every ext
//! type 1 reference in the result of every successful response. The table counts the same
//! things on this side, in `received`, the moment a reply is read by its caller, whether or
//! not it is ever decoded. When the last proxy of an object goes, the table sends `decref`
//! with what it received since its previous `decref` of that object, so the two counts agree
//! and the manager frees the object once no connection, no stored value and no handoff holds
//! it.
//!
//! Three numbers per object:
//! - `received`: references the manager counted for this connection and this side has not
//!   given back yet;
//! - `proxies`: live proxy values of the object in this process (every `from_id`, clone and
//!   decoded reference adds one, every drop takes one);
//! - `holds`: replies that hold a reference to it and may still be decoded into proxies (a
//!   reply being decoded by [`Client::run`](crate::Client::run), the [`Replies`](crate::Replies) of a
//!   pipeline while they live). A reply is a holder so that another thread's flush cannot give
//!   back the reference a proxy is about to be decoded from.
//!
//! # When a `decref` is due
//! Only when a *proxy* let go: the last proxy of an object dropped (`release`), and nothing
//! was received for it since. A reference received and never turned into a proxy (an id from
//! [`Client::create`](crate::Client::create), a reply read as raw bytes or as a
//! [`SharedRef`](crate::SharedRef)) stays counted: the caller may still make a proxy of it,
//! which then takes the count over, and the object is given back when that proxy drops. So raw
//! ids keep working as they always did, at the cost of holding their objects until the
//! connection closes if no proxy of them is ever made.
//!
//! Due entries go on the pending list; [`Refs::write_decrefs`] writes them as one
//! notification `[2, "decref", [[id, count], ...]]` (each param one pair), which the connection puts in the same
//! write as its next request, or writes alone as soon as the connection is idle (see
//! `Connection::flush_if_idle`). Entries whose proxies came back before the flush are not
//! sent, and nothing is sent for an object whose count is 0 (a `from_id` proxy of an id this
//! connection never received holds nothing).
//!
//! # Fork
//! A forked child shares nothing with its parent's connection: it opens its own on its first
//! call, and the manager knows nothing of what the parent held for it. So the first time a
//! child touches its copy of a table, the table forgets what was received (the child received
//! nothing), keeps the proxy counts (the proxies are in the child's memory too) and notes the
//! ids that still have proxies: the child `adopt`s each of them when its connection opens.
//! `export_for_fork` (called by `agora::Process::spawn` before it forks) gives each of them a
//! handoff in the manager first, so that the objects survive the parent dropping its proxies
//! before the child has adopted them.
//!
//! The tables of all clients sit behind one lock, taken by a `pthread_atfork` prepare handler
//! (`atfork`) and released on both sides of the fork: the child gets tables that no vanished
//! thread was half-way through changing, and a lock it can take. One lock for every client of
//! the process costs nothing measurable: it is taken when a proxy is made, cloned or dropped,
//! and for replies that hold references, never for the others.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, Weak};

use agora_proto::encode;
use tracing::debug;

use crate::run::ManagerRun;

/// How many of the runs a client was connected to are remembered, for messages.
const RUNS_KEPT: usize = 8;

/// Where a reply was read: the connection and its manager run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Receipt {
    pub(crate) serial: u64,
    pub(crate) run: u64,
}

/// Pairs per `decref` notification: a long list is split so that no notification approaches a
/// manager's `--max-container-len` or `--max-message-bytes`, however low an operator set them.
const PAIRS_PER_NOTIFICATION: usize = 1024;

/// Every client's table, by [`Refs::key`].
static TABLES: Mutex<BTreeMap<u64, Table>> = Mutex::new(BTreeMap::new());

/// Tells the tables of the clients of a process apart.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The lock the fork prepare handler took, released by the parent and child handlers (the
    /// same thread runs all three).
    static HELD_FOR_FORK: Cell<Option<MutexGuard<'static, BTreeMap<u64, Table>>>> =
        const { Cell::new(None) };
}

/// Locks the tables. A panic while they were locked left no count half-updated (every change
/// is a few integer updates), so a poisoned lock is used as it is.
fn tables() -> MutexGuard<'static, BTreeMap<u64, Table>> {
    TABLES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `pthread_atfork` prepare handler's part: lock the tables until the fork is done.
pub(crate) fn lock_for_fork() {
    let guard = tables();
    // A thread being torn down has no slot left: the lock is then released at once, and the
    // child only risks what it risked before this handler existed.
    let _ = HELD_FOR_FORK.try_with(|held| held.set(Some(guard)));
}

/// The parent and child handlers' part: unlock the tables. In the child this is an atomic
/// store on the lock's word (and, if some thread of the parent was waiting, a futex wake that
/// finds nobody): no allocation, nothing another thread could have left locked.
pub(crate) fn unlock_after_fork() {
    let _ = HELD_FOR_FORK.try_with(|held| drop(held.take()));
}

/// One object's counts. See the module docs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Entry {
    received: u64,
    proxies: u64,
    holds: u64,
    /// The last proxy dropped and nothing was received since: a `decref` is due once no hold
    /// remains.
    release: bool,
    /// On the pending list already.
    queued: bool,
}

/// Hashes object ids, which are already well mixed (a keyed permutation), and msgids, which
/// are small consecutive integers, with one multiplication.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// One client's table.
struct Table {
    /// The process whose connection the counts are for: another one (a forked child) must
    /// start afresh (see [`Table::current`]).
    pid: u32,
    /// The connection the `received` counts are for ([`Connection::serial`]): a reply read
    /// on an older one (that broke) counts nothing.
    ///
    /// [`Connection::serial`]: crate::connection::Connection::serial
    serial: u64,
    /// The manager run the ids are of ([`ManagerRun::key`]): a proxy or reply of another run
    /// counts nothing (its id names another object, or none, in this run).
    run: u64,
    /// The runs this client has been connected to, newest last (a few), for messages.
    runs: Vec<ManagerRun>,
    /// The names of the objects of this run the client created or looked up by name, for
    /// messages (a decode error names its object). Forgotten when one is deleted by name.
    names: HashMap<u64, String, BuildHasherDefault<IdHasher>>,
    entries: HashMap<u64, Entry, BuildHasherDefault<IdHasher>>,
    /// Ids that may be due for a `decref`, checked again when written.
    pending: Vec<u64>,
    /// In a forked child, the ids it inherited proxies of, to adopt when its connection opens.
    inherited: Vec<u64>,
    /// The client, for `export_for_fork`.
    client: Weak<crate::client::Inner>,
}

impl Table {
    /// The table as this process must see it: in a forked child, the counts of the parent's
    /// connection are forgotten, the proxies kept, and the ids with proxies noted for adoption.
    fn current(&mut self) -> &mut Table {
        let pid = crate::atfork::current_pid();
        if self.pid != pid {
            self.pid = pid;
            self.forget_received();
            debug!(
                objects = self.inherited.len(),
                "forked child: the objects of inherited proxies will be adopted"
            );
        }
        self
    }

    /// The connection the counts were for is gone, and the manager dropped everything it
    /// counted for it: forget what was received, keep the proxies and the replies still
    /// held, and note their ids, for the next connection to adopt. Ids noted before and not
    /// adopted yet stay noted: a forked child adopts what it inherited even if it dropped
    /// the proxies before connecting, which ends the parent's handoff at once.
    fn forget_received(&mut self) {
        self.pending.clear();
        self.entries.retain(|_, e| e.proxies > 0 || e.holds > 0);
        for e in self.entries.values_mut() {
            *e = Entry {
                proxies: e.proxies,
                holds: e.holds,
                ..Entry::default()
            };
        }
        self.inherited.extend(self.entries.keys().copied());
        self.inherited.sort_unstable();
        self.inherited.dedup();
    }

    /// The ids this process holds proxies (or undecoded replies) of: what a fork hands over.
    fn live_ids(&self) -> Vec<u64> {
        self.entries
            .iter()
            .filter(|(_, e)| e.proxies > 0 || e.holds > 0)
            .map(|(&id, _)| id)
            .collect()
    }

    /// Queues `id` for a `decref` unless it is queued already; true when it was not.
    fn queue(&mut self, id: u64, flag: &AtomicBool) -> bool {
        let Some(e) = self.entries.get_mut(&id) else {
            return false;
        };
        if e.queued {
            return false;
        }
        e.queued = true;
        self.pending.push(id);
        flag.store(true, Ordering::SeqCst);
        true
    }

    /// One more reference received for `id`, held (as a reply is) when `hold`.
    fn received(&mut self, id: u64, hold: bool) {
        let e = self.entries.entry(id).or_default();
        e.received = e.received.saturating_add(1);
        if hold {
            e.holds = e.holds.saturating_add(1);
        }
        // Whatever was due is not any more: the new reference is the caller's now.
        e.release = false;
    }

    /// A proxy or a hold of `id` went; true when a `decref` became due (and was not already).
    fn let_go(&mut self, id: u64, hold: bool, flag: &AtomicBool) -> bool {
        let Some(e) = self.entries.get_mut(&id) else {
            // Clamp: nothing is held for an id the table does not know (its client's table
            // was removed, or a count went wrong); there is nothing to take away.
            debug!(
                id,
                "a proxy or reply of an object the reference table does not know"
            );
            return false;
        };
        let count = if hold { &mut e.holds } else { &mut e.proxies };
        if *count == 0 {
            debug!(id, hold, "reference table count already 0: clamped");
        }
        *count = count.saturating_sub(1);
        if !hold && e.proxies == 0 {
            e.release = true;
        }
        if e.proxies > 0 || e.holds > 0 {
            return false;
        }
        if e.received == 0 {
            // Nothing to give back: forget the object (a stale id on the pending list is
            // skipped when written).
            self.entries.remove(&id);
            return false;
        }
        if !e.release {
            return false;
        }
        self.queue(id, flag)
    }
}

/// One client's handle on its table (shared with its connections).
pub(crate) struct Refs {
    key: u64,
    /// Set while the pending list may be non-empty: what a request checks, without a lock,
    /// before it looks for decrefs to send. Sequentially consistent, so that a flush that
    /// kept a dropping thread from the writer sees, once it lets go, the decref that thread
    /// queued (a plain load on x86, like an acquire).
    pending: AtomicBool,
}

impl std::fmt::Debug for Refs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refs").field("key", &self.key).finish()
    }
}

impl Refs {
    /// A new, empty table for `client`, whose first connection is `serial`, to `run`.
    pub(crate) fn new(client: Weak<crate::client::Inner>, serial: u64, run: &ManagerRun) -> Refs {
        // Installs the fork handlers that keep the tables consistent in a child.
        let pid = crate::atfork::current_pid();
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        tables().insert(
            key,
            Table {
                pid,
                serial,
                run: run.key(),
                runs: vec![run.clone()],
                names: HashMap::default(),
                entries: HashMap::default(),
                pending: Vec::new(),
                inherited: Vec::new(),
                client,
            },
        );
        Refs {
            key,
            pending: AtomicBool::new(false),
        }
    }

    /// Runs `f` on the table as this process sees it; `None` once the client is gone.
    fn with<R>(&self, f: impl FnOnce(&mut Table) -> R) -> Option<R> {
        let mut tables = tables();
        tables.get_mut(&self.key).map(|t| f(t.current()))
    }

    /// A proxy of `id`, of run `run`, was made. Nothing is counted for a proxy of another
    /// run than the table's: it is stale, and its calls fail.
    pub(crate) fn acquire(&self, id: u64, run: u64) {
        self.with(|t| {
            if t.run != run {
                return;
            }
            let e = t.entries.entry(id).or_default();
            e.proxies = e.proxies.saturating_add(1);
            e.release = false;
        });
    }

    /// A proxy of `id`, of run `run`, was dropped. True when a `decref` became due, to be
    /// written soon.
    pub(crate) fn release(&self, id: u64, run: u64) -> bool {
        self.with(|t| t.run == run && t.let_go(id, false, &self.pending))
            .unwrap_or(false)
    }

    /// References the manager counted for the connection of `receipt`, each held as a reply
    /// until [`Refs::release_holds`]. A reply of an older connection of the same run is held
    /// but counts nothing received (the manager dropped that connection's counts); one of
    /// another run counts nothing at all.
    pub(crate) fn received_held(&self, ids: &[u64], receipt: Receipt) {
        self.with(|t| {
            if t.run != receipt.run {
                return;
            }
            let counted = t.serial == receipt.serial;
            for &id in ids {
                if counted {
                    t.received(id, true);
                } else {
                    let e = t.entries.entry(id).or_default();
                    e.holds = e.holds.saturating_add(1);
                }
            }
        });
    }

    /// A reference counted without a reply to decode, on the connection `serial`: the forked
    /// child's `adopt` of an inherited proxy's object, or a reconnection's `incref`. If the
    /// proxies were dropped before the adoption, the adoption only took the parent's handoff
    /// over and is given back at once. One answered on a connection that was replaced since
    /// counts nothing: the manager dropped it with that connection, and the new one adopts
    /// the object again.
    pub(crate) fn adopted(&self, id: u64, serial: u64) {
        self.with(|t| {
            if t.serial != serial {
                return;
            }
            t.received(id, false);
            let e = t.entries.get(&id).copied().unwrap_or_default();
            if e.proxies == 0 && e.holds == 0 {
                if let Some(e) = t.entries.get_mut(&id) {
                    e.release = true;
                }
                t.queue(id, &self.pending);
            }
        });
    }

    /// The replies holding `ids`, read from a connection to run `run`, are gone. True when
    /// a `decref` became due.
    pub(crate) fn release_holds(&self, ids: &[u64], run: u64) -> bool {
        self.with(|t| {
            if t.run != run {
                return false;
            }
            let mut due = false;
            for &id in ids {
                due |= t.let_go(id, true, &self.pending);
            }
            due
        })
        .unwrap_or(false)
    }

    /// True while decrefs may be waiting: a lock-free check for every request.
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }

    /// Appends the due decrefs to `out` as notifications, for the connection `serial` to
    /// write, and forgets them. False when there was nothing to send.
    ///
    /// The counts are the table's connection's: a thread still writing on an older one (it
    /// took that connection before another thread replaced it) writes none, and they stay
    /// due for the table's own connection. Written on the old one they would be lost (it
    /// is closing), and the manager would keep the new connection's counts forever.
    pub(crate) fn write_decrefs(&self, out: &mut Vec<u8>, serial: u64) -> bool {
        let pairs = self
            .with(|t| {
                if t.serial != serial {
                    return Vec::new();
                }
                self.pending.store(false, Ordering::SeqCst);
                let mut pairs = Vec::new();
                for id in std::mem::take(&mut t.pending) {
                    let Some(e) = t.entries.get_mut(&id) else {
                        continue;
                    };
                    e.queued = false;
                    if e.proxies > 0 || e.holds > 0 || !e.release {
                        // A proxy came back, or a reply still holds it (its release queues
                        // it again).
                        continue;
                    }
                    if e.received > 0 {
                        pairs.push((id, e.received));
                    }
                    t.entries.remove(&id);
                }
                pairs
            })
            .unwrap_or_default();
        encode_decrefs(out, &pairs);
        !pairs.is_empty()
    }

    /// Makes the connection `serial` to `run` the table's, if `publish` (which makes it the
    /// client's) succeeds, as the `bool` it gives says; gives what `publish` gives. Both
    /// happen under the tables' lock, so no reply read on the new connection is counted
    /// against the old one's numbers.
    ///
    /// The same run: the manager dropped what it counted for the old connection, so what was
    /// received is forgotten and the ids of the live proxies are noted, for the new
    /// connection to adopt ([`Refs::take_inherited`]). Another run (the manager restarted):
    /// every id of the old run is stale; the table starts empty.
    pub(crate) fn switch<R>(
        &self,
        serial: u64,
        run: &ManagerRun,
        publish: impl FnOnce() -> (R, bool),
    ) -> (R, bool) {
        let mut tables = tables();
        let Some(t) = tables.get_mut(&self.key) else {
            return publish();
        };
        let t = t.current();
        let published = publish();
        if !published.1 {
            return published;
        }
        t.serial = serial;
        let key = run.key();
        if t.run == key {
            t.forget_received();
        } else {
            t.run = key;
            t.names.clear();
            t.entries.clear();
            t.pending.clear();
            t.inherited.clear();
            if t.runs.len() == RUNS_KEPT {
                t.runs.remove(0);
            }
            t.runs.push(run.clone());
        }
        self.pending.store(false, Ordering::SeqCst);
        published
    }

    /// Object `id` of run `run` is called `name`.
    pub(crate) fn named(&self, id: u64, run: u64, name: &str) {
        self.with(|t| {
            if t.run == run && t.names.get(&id).map(String::as_str) != Some(name) {
                t.names.insert(id, name.to_owned());
            }
        });
    }

    /// The object called `name` was deleted.
    pub(crate) fn unnamed(&self, name: &str) {
        self.with(|t| t.names.retain(|_, n| n != name));
    }

    /// The name of object `id` of run `run`, if the client knows it.
    pub(crate) fn name_of(&self, id: u64, run: u64) -> Option<String> {
        self.with(|t| (t.run == run).then(|| t.names.get(&id).cloned()).flatten())
            .flatten()
    }

    /// The run whose [`ManagerRun::key`] is `key`, if this client was connected to it.
    pub(crate) fn run_of(&self, key: u64) -> Option<ManagerRun> {
        self.with(|t| t.runs.iter().find(|r| r.key() == key).cloned())
            .flatten()
    }

    /// In a forked child: the ids to adopt on its new connection (once; empty afterwards and
    /// in the process that made the table).
    pub(crate) fn take_inherited(&self) -> Vec<u64> {
        self.with(|t| std::mem::take(&mut t.inherited))
            .unwrap_or_default()
    }

    #[cfg(test)]
    fn live_ids(&self) -> Vec<u64> {
        self.with(|t| t.live_ids()).unwrap_or_default()
    }

    /// Removes the table: its client is gone, and with it the connection that held the
    /// references (the manager drops a closed connection's counts).
    pub(crate) fn unregister(&self) {
        let removed = tables().remove(&self.key);
        // Dropped outside the lock: the table's `Weak` is the last thing pointing at the
        // client, and nothing must run under the lock that could take it again.
        drop(removed);
    }

    #[cfg(test)]
    fn entry(&self, id: u64) -> Option<Entry> {
        self.with(|t| t.entries.get(&id).copied()).flatten()
    }
}

/// Every client of this process with its live ids, for `export_for_fork`.
pub(crate) fn live_by_client() -> Vec<(Weak<crate::client::Inner>, Vec<u64>)> {
    let mut tables = tables();
    tables
        .values_mut()
        .map(|t| {
            let t = t.current();
            (t.client.clone(), t.live_ids())
        })
        .collect()
}

/// `[2, "decref", [[id, count], ...]]` (each param one pair), one notification per
/// [`PAIRS_PER_NOTIFICATION`] pairs.
pub(crate) fn encode_decrefs(out: &mut Vec<u8>, pairs: &[(u64, u64)]) {
    for chunk in pairs.chunks(PAIRS_PER_NOTIFICATION) {
        encode::array_header(out, 3);
        encode::uint(out, u64::from(agora_proto::NOTIFICATION));
        encode::str(out, "decref");
        encode::array_header(out, chunk.len());
        for &(id, count) in chunk {
            encode::array_header(out, 2);
            encode::uint(out, id);
            encode::uint(out, count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The run and the connection the test tables are for.
    const R: u64 = 0x5eed;
    const AT: Receipt = Receipt { serial: 1, run: R };

    fn table() -> Refs {
        let refs = Refs::new(
            Weak::new(),
            1,
            &ManagerRun {
                id: String::new(),
                started: 0,
            },
        );
        refs.with(|t| t.run = R);
        refs
    }

    /// The `[id, count]` pairs of the notifications in `raw`.
    fn sent(raw: &[u8]) -> Vec<(u64, u64)> {
        let mut pairs = Vec::new();
        let mut rest = raw;
        while !rest.is_empty() {
            let mut cursor = std::io::Cursor::new(rest);
            let v = rmpv::decode::read_value(&mut cursor).unwrap();
            rest = &rest[cursor.position() as usize..];
            let items = v.as_array().unwrap();
            assert_eq!(items[0].as_u64(), Some(2));
            assert_eq!(items[1].as_str(), Some("decref"));
            for pair in items[2].as_array().unwrap() {
                let pair = pair.as_array().unwrap();
                pairs.push((pair[0].as_u64().unwrap(), pair[1].as_u64().unwrap()));
            }
        }
        pairs
    }

    fn flush(refs: &Refs) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let wrote = refs.write_decrefs(&mut out, AT.serial);
        assert_eq!(wrote, !out.is_empty());
        sent(&out)
    }

    #[test]
    fn the_last_proxy_gives_back_everything_received() {
        let refs = table();
        // A create (held while decoded), its proxy, two clones.
        refs.received_held(&[7], AT);
        refs.acquire(7, R);
        assert!(!refs.release_holds(&[7], R));
        refs.acquire(7, R);
        refs.acquire(7, R);
        // A reply with two references to it, decoded into proxies.
        refs.received_held(&[7, 7], AT);
        refs.acquire(7, R);
        refs.acquire(7, R);
        assert!(!refs.release_holds(&[7, 7], R));
        assert!(!refs.has_pending());
        for _ in 0..4 {
            assert!(!refs.release(7, R));
        }
        assert!(refs.release(7, R), "the fifth and last proxy");
        assert!(refs.has_pending());
        assert_eq!(flush(&refs), [(7, 3)]);
        assert!(!refs.has_pending());
        assert_eq!(refs.entry(7), None, "forgotten once given back");
        assert_eq!(flush(&refs), [], "sent once");
    }

    #[test]
    fn a_proxy_that_comes_back_before_the_flush_cancels_it() {
        let refs = table();
        refs.received_held(&[1], AT);
        refs.acquire(1, R);
        refs.release_holds(&[1], R);
        assert!(refs.release(1, R));
        // Made again (from_id, or decoded from a reply) before anything was written.
        refs.acquire(1, R);
        assert_eq!(flush(&refs), []);
        assert_eq!(refs.entry(1).map(|e| (e.received, e.proxies)), Some((1, 1)));
        // Its drop is due again, with the same count.
        assert!(refs.release(1, R));
        assert_eq!(flush(&refs), [(1, 1)]);
    }

    #[test]
    fn an_id_never_received_holds_nothing_and_sends_nothing() {
        let refs = table();
        refs.acquire(5, R);
        refs.acquire(5, R);
        assert!(!refs.release(5, R));
        assert!(!refs.release(5, R), "nothing to give back");
        assert_eq!(refs.entry(5), None);
        assert_eq!(flush(&refs), []);
    }

    #[test]
    fn counts_clamp_at_zero() {
        let refs = table();
        assert!(!refs.release(9, R), "an unknown id");
        assert!(!refs.release_holds(&[9], R));
        refs.received_held(&[9], AT);
        refs.release_holds(&[9], R);
        // Received but no proxy ever made: a raw reference, kept.
        assert_eq!(refs.entry(9).map(|e| e.received), Some(1));
        assert!(
            refs.release(9, R),
            "one drop too many clamps and still gives back"
        );
        assert_eq!(refs.entry(9).map(|e| e.proxies), Some(0));
        assert!(!refs.release(9, R));
        assert_eq!(flush(&refs), [(9, 1)]);
    }

    #[test]
    fn raw_references_stay_until_a_proxy_of_them_drops() {
        let refs = table();
        // Read as bytes (call_raw, SharedRef): counted, held while read, then kept.
        refs.received_held(&[3, 3], AT);
        assert!(!refs.release_holds(&[3, 3], R));
        assert_eq!(flush(&refs), []);
        // Later a proxy is made of it and dropped: everything goes back.
        refs.acquire(3, R);
        assert!(refs.release(3, R));
        assert_eq!(flush(&refs), [(3, 2)]);
    }

    #[test]
    fn a_reply_being_decoded_keeps_its_objects() {
        let refs = table();
        refs.received_held(&[4], AT);
        refs.acquire(4, R);
        refs.release_holds(&[4], R);
        // Another reply with the object is read; meanwhile the last proxy drops.
        refs.received_held(&[4], AT);
        assert!(!refs.release(4, R), "a reply still holds it");
        assert_eq!(flush(&refs), []);
        // The reply decodes into a proxy, then goes.
        refs.acquire(4, R);
        assert!(!refs.release_holds(&[4], R));
        assert!(refs.release(4, R));
        assert_eq!(flush(&refs), [(4, 2)]);
        // A reply that is dropped undecoded after the last proxy went gives back too.
        refs.received_held(&[6], AT);
        refs.acquire(6, R);
        refs.received_held(&[6], AT);
        assert!(!refs.release(6, R));
        assert!(refs.release_holds(&[6, 6], R));
        assert_eq!(flush(&refs), [(6, 2)]);
    }

    #[test]
    fn new_references_cancel_a_due_decref() {
        let refs = table();
        refs.received_held(&[8], AT);
        refs.acquire(8, R);
        refs.release_holds(&[8], R);
        assert!(refs.release(8, R));
        // An adopt (from_token) or a reply arrives before the flush: the caller owns it now.
        refs.received_held(&[8], AT);
        refs.release_holds(&[8], R);
        assert_eq!(flush(&refs), []);
        assert_eq!(refs.entry(8).map(|e| e.received), Some(2));
    }

    #[test]
    fn long_lists_are_split_into_several_notifications() {
        let refs = table();
        let n = PAIRS_PER_NOTIFICATION as u64 * 2 + 5;
        for id in 1..=n {
            refs.received_held(&[id], AT);
            refs.acquire(id, R);
            refs.release_holds(&[id], R);
            refs.release(id, R);
        }
        let mut out = Vec::new();
        assert!(refs.write_decrefs(&mut out, AT.serial));
        let notifications = {
            let mut count = 0;
            let mut rest = &out[..];
            while let Some(len) = agora_proto::scanner::value_len(rest) {
                count += 1;
                rest = &rest[len..];
            }
            count
        };
        assert_eq!(notifications, 3);
        let pairs = sent(&out);
        assert_eq!(pairs.len() as u64, n);
        assert!(pairs.iter().all(|&(_, count)| count == 1));
    }

    #[test]
    fn a_forked_child_forgets_counts_and_adopts_live_proxies() {
        let refs = table();
        for id in [1, 2, 3] {
            refs.received_held(&[id], AT);
            refs.acquire(id, R);
            refs.release_holds(&[id], R);
        }
        refs.release(3, R);
        // A raw reference without proxies is not handed over.
        refs.received_held(&[4], AT);
        refs.release_holds(&[4], R);
        assert_eq!(refs.take_inherited(), Vec::<u64>::new(), "not a child");
        let mut live = refs.live_ids();
        live.sort_unstable();
        assert_eq!(live, [1, 2]);
        // SAFETY: the child only checks, then leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let mut inherited = refs.take_inherited();
            inherited.sort_unstable();
            let forgot = refs.entry(1).map(|e| (e.received, e.proxies)) == Some((0, 1))
                && refs.entry(4).is_none();
            let nothing_sent = flush(&refs).is_empty();
            // Dropped before the connection opened, then adopted: the adoption is given back.
            refs.release(2, R);
            refs.adopted(2, AT.serial);
            refs.adopted(1, AT.serial);
            let given_back = flush(&refs) == [(2, 1)];
            let ok = inherited == [1, 2] && forgot && nothing_sent && given_back;
            // SAFETY: async-signal-safe.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: a valid out-pointer; the child is ours.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        // The parent's counts are untouched.
        assert_eq!(flush(&refs), [(3, 1)]);
    }

    /// A thread that took the old connection before another replaced it may still write on
    /// it: the decrefs due for the new connection's counts are not written there (they would
    /// be lost with it, and the manager would keep the object held for the new one), and a
    /// late answer to the old connection's adoption counts nothing.
    #[test]
    fn decrefs_and_adoptions_belong_to_the_table_s_connection() {
        let refs = table();
        let run = ManagerRun {
            id: String::new(),
            started: 0,
        };
        let r = run.key();
        refs.with(|t| t.run = r);
        refs.received_held(&[5], Receipt { serial: 1, run: r });
        refs.acquire(5, r);
        refs.release_holds(&[5], r);
        let ((), switched) = refs.switch(2, &run, || ((), true));
        assert!(switched);
        assert_eq!(refs.take_inherited(), [5]);
        refs.adopted(5, 1);
        refs.adopted(5, 2);
        assert_eq!(
            refs.entry(5).map(|e| e.received),
            Some(1),
            "the new one's only"
        );
        assert!(refs.release(5, r));
        let mut out = Vec::new();
        assert!(
            !refs.write_decrefs(&mut out, 1),
            "none on the old connection"
        );
        assert!(out.is_empty());
        assert!(refs.has_pending(), "still due");
        assert!(refs.write_decrefs(&mut out, 2));
        assert_eq!(sent(&out), [(5, 1)]);
    }

    #[test]
    fn a_removed_table_answers_nothing() {
        let refs = table();
        refs.acquire(1, R);
        refs.unregister();
        assert!(!refs.release(1, R));
        assert_eq!(flush(&refs), []);
        assert!(refs.live_ids().is_empty());
    }
}
