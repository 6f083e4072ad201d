//! `queue` and `joinable_queue` in etcd: items as keys ordered by the revision that made them.
//! Acknowledged gets, and the record a joinable queue keeps of the items it handed out, are
//! in the `acked` submodule.
//!
//! # Keys (under `P o/ID/`)
//! - `q/U` (one `put`) or `q/U-I` (item I of one `put_many`): an item, U random. Items are
//!   not on a lease: a put item belongs to the queue, whoever put it. FIFO order is etcd's
//!   order of the puts (the items' create revisions), then I within one `put_many`.
//! - `u/U-I`: one unfinished item (put, not yet marked with `task_done`), written with the item.
//! - `len`: the number of items, kept only by a bounded queue (`maxsize` > 0), so that a put
//!   checks the room and adds its items in one transaction.
//! - `closed`: present once the queue is closed.
//! - `h/C-I` and `t/C`: the items got by acknowledged get C (or any get of a joinable queue)
//!   and not yet finished, and C's holding on its manager's lease (see `acked`).
//!
//! # Transactions
//! A put is one transaction per 60 items (`BATCH`): it checks that the object exists, is not
//! closed and (bounded) that `len` is the one it read, and writes the items, their unfinished
//! markers and `len`. A get reads the oldest items (sorted by create revision), then deletes
//! them in a transaction that checks each one's revision is still the one read: when another
//! getter (through any manager) took one first, it reads again. Every item is got exactly
//! once. Items whose holding is gone (their getter's connection closed, or its manager died)
//! are taken first.
//!
//! # Waiting
//! A blocking get that finds no item watches the object's keys from the revision of its read
//! for a put, a holding's end (or the close), then tries again; a put on a full queue watches
//! for deletions; `join` watches the unfinished markers. No wake-up is lost (the watch starts
//! at the read's revision), and nothing polls. Waiting getters stand in line: each puts a key
//! `w/W` on its manager's lease, and a woken getter takes only when it is the oldest, or when
//! there are more items than getters before it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, SortOrder, SortTarget, TxnOp, TxnOpResponse,
};
use tracing::warn;

use agora_proto::params::array_items;
use agora_proto::{params, CallError, ErrorName, Params};

use crate::lifecycle::{timeout_param, Caller, Grant, Holder, Reply, SessionId, Shape};
use crate::objects::queue::{closed, empty, full, Blocking};
use crate::objects::{arity, expected, store, unknown_method, Kind, Stored};

mod acked;

use super::waits::{self, changed, deadline, Boxed, Cancel, Engine, Front, Seen, Step, Watch};
use super::EtcdStore;

/// Most times one call tries again when other callers keep winning the race.
const MAX_RETRIES: usize = 10_000;

/// Most items one transaction puts or takes: etcd refuses a transaction of more than
/// `--max-txn-ops` operations (128 by default), and a put writes two keys per item.
const BATCH: usize = 60;

/// A queue in etcd, as one manager serves it.
pub struct Queue {
    store: Arc<EtcdStore>,
    kind: Kind,
    maxsize: usize,
    keys: Keys,
    /// A joinable queue: the receipts of the items each connection got here and has not
    /// marked done, oldest first.
    unmarked: parking_lot::Mutex<std::collections::HashMap<SessionId, VecDeque<u64>>>,
    /// This queue as connections' holdings records know it, so that a closed connection's
    /// receipts are forgotten here.
    me: std::sync::Weak<Queue>,
    holdings_key: usize,
}

/// The object's keys.
struct Keys {
    object: Vec<u8>,
    meta: Vec<u8>,
    items: Vec<u8>,
    marks: Vec<u8>,
    len: Vec<u8>,
    closed: Vec<u8>,
    /// `h/C-I`: item I of acknowledged get C, until acknowledged (not on a lease).
    held: Vec<u8>,
    /// `t/C`: acknowledged get C's connection lives (on the lease).
    holds: Vec<u8>,
    /// `w/W`: a waiting getter, in line by create revision (on the lease).
    waiters: Vec<u8>,
}

/// A parsed queue call.
pub enum Op {
    /// `put`, `put_nowait`, `put_many`.
    Put {
        items: VecDeque<Stored>,
        many: bool,
        how: Blocking,
    },
    /// `get`, `get_nowait`, `get_many`.
    Get {
        max: usize,
        shape: Shape,
        how: Blocking,
        acked: Option<acked::Acked>,
    },
    /// `ack` (false) or `nack` (true) of a receipt, by a connection.
    Settle {
        receipt: u64,
        redeliver: bool,
        session: SessionId,
    },
    /// A query.
    Count(Count),
    /// `close`.
    Close,
    /// `task_done`, by a connection.
    TaskDone(Holder),
    /// `join`, with its timeout.
    Join(Option<Duration>),
}

/// The queries answered from the item count and the closed key.
#[derive(Clone, Copy)]
pub enum Count {
    /// `qsize`.
    Qsize,
    /// `empty`.
    Empty,
    /// `full`.
    Full,
    /// `maxsize`.
    Maxsize,
    /// `is_closed`.
    IsClosed,
}

/// What one read of the queue found.
struct Head {
    /// The oldest items, oldest first: (key, mod revision, item).
    items: Vec<(Vec<u8>, i64, Stored)>,
    closed: bool,
    /// `len` and its mod revision (a bounded queue).
    len: (usize, i64),
    /// Items of acknowledged gets whose connection died: redelivered first.
    orphans: Vec<Vec<u8>>,
    revision: i64,
}

fn busy() -> CallError {
    CallError::runtime("the queue changed through other managers on every try; try again")
}

fn put_done(done: usize, many: bool) -> Reply {
    Ok(if many {
        Grant::Count(done as u64)
    } else {
        Grant::Nil
    })
}

impl Queue {
    /// The local handle of queue `id`, and for a new one its initial keys.
    pub fn build(store: &Arc<EtcdStore>, id: u64, kind: Kind, init: &Params) -> super::Built {
        let maxsize = maxsize(init)?;
        let key = |suffix: &str| store.object_key(id, suffix);
        let keys = Keys {
            object: key(""),
            meta: key("meta"),
            items: key("q/"),
            marks: key("u/"),
            len: key("len"),
            closed: key("closed"),
            held: key("h/"),
            holds: key("t/"),
            waiters: key("w/"),
        };
        let initial = if maxsize > 0 {
            vec![TxnOp::put(keys.len.clone(), "0", None)]
        } else {
            Vec::new()
        };
        let queue = Arc::new_cyclic(|me| Queue {
            store: store.clone(),
            kind,
            maxsize,
            keys,
            unmarked: parking_lot::Mutex::default(),
            me: me.clone(),
            holdings_key: crate::lifecycle::next_object_key() as usize,
        });
        Ok((Front::start_shared(kind, queue), initial))
    }

    fn bounded(&self) -> bool {
        self.maxsize > 0
    }

    /// The object exists and is not closed.
    fn open_compares(&self) -> Vec<Compare> {
        vec![
            Compare::version(self.keys.meta.clone(), CompareOp::Greater, 0),
            Compare::version(self.keys.closed.clone(), CompareOp::Equal, 0),
        ]
    }

    /// Reads the oldest `max` items (none when `max` is 0: etcd sorts every item to find the
    /// oldest), whether the queue is closed, and `len`.
    async fn head(&self, max: usize) -> Result<Head, CallError> {
        let oldest = if max == 0 {
            GetOptions::new().with_prefix().with_count_only()
        } else {
            GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Ascend)
                .with_limit(i64::try_from(max).unwrap_or(i64::MAX))
        };
        let count = || Some(GetOptions::new().with_count_only());
        let keys = || Some(GetOptions::new().with_prefix().with_keys_only());
        let mut ops = vec![
            TxnOp::get(self.keys.meta.clone(), count()),
            TxnOp::get(self.keys.items.clone(), Some(oldest)),
            TxnOp::get(self.keys.closed.clone(), count()),
            TxnOp::get(self.keys.len.clone(), None),
        ];
        if max > 0 {
            // Only a get takes orphans.
            ops.push(TxnOp::get(self.keys.held.clone(), keys()));
            ops.push(TxnOp::get(self.keys.holds.clone(), keys()));
        }
        let answer = self.store.read("reading a queue", ops).await?;
        let gets = gets(&answer);
        if gets.first().is_none_or(|g| g.count() == 0) {
            return Err(waits::deleted());
        }
        let mut items: Vec<_> = gets.get(1).map_or(Vec::new(), |g| {
            g.kvs()
                .iter()
                .map(|kv| {
                    (
                        kv.key().to_vec(),
                        kv.create_revision(),
                        kv.mod_revision(),
                        store(kv.value()),
                    )
                })
                .collect()
        });
        let revision = answer.revision;
        if max > 0 && items.len() == max {
            self.complete_batch(&mut items, max, revision).await?;
        }
        items.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        items.truncate(max);
        let len = gets
            .get(3)
            .and_then(|g| g.kvs().first())
            .map_or((0, 0), |kv| {
                let n = std::str::from_utf8(kv.value())
                    .ok()
                    .and_then(|s| s.parse().ok());
                (n.unwrap_or(0), kv.mod_revision())
            });
        Ok(Head {
            items: items.into_iter().map(|(k, _, m, v)| (k, m, v)).collect(),
            closed: gets.get(2).is_some_and(|g| g.count() > 0),
            len,
            orphans: self.orphans(gets.get(4), gets.get(5)),
            revision,
        })
    }

    /// The items of one `put_many` share a create revision, and etcd returns an arbitrary few
    /// of them when the limit cuts through them: when the last item read may be one of such a
    /// batch, reads the whole batch (at the same revision) so that the oldest are the ones
    /// taken.
    async fn complete_batch(
        &self,
        items: &mut Vec<(Vec<u8>, i64, i64, Stored)>,
        max: usize,
        revision: i64,
    ) -> Result<(), CallError> {
        let Some((key, created, ..)) = items.last() else {
            return Ok(());
        };
        if !key[self.keys.items.len()..].contains(&b'-') {
            return Ok(());
        }
        let created = *created;
        let batch = GetOptions::new()
            .with_prefix()
            .with_revision(revision)
            .with_min_create_revision(created)
            .with_max_create_revision(created)
            .with_limit(i64::try_from(max).unwrap_or(i64::MAX));
        let got = self
            .store
            .get("reading a queue", self.keys.items.clone(), Some(batch))
            .await?;
        items.retain(|i| i.1 != created);
        items.extend(got.kvs().iter().map(|kv| {
            (
                kv.key().to_vec(),
                kv.create_revision(),
                kv.mod_revision(),
                store(kv.value()),
            )
        }));
        Ok(())
    }

    /// Takes up to `max` of the oldest items. Empty when there are none (the head read tells
    /// whether the queue is closed, and the revision to watch from).
    async fn take(
        &self,
        max: usize,
        acked: Option<&acked::Acked>,
    ) -> Result<(Vec<(u64, Stored)>, Head), CallError> {
        let max = max.min(BATCH);
        for _ in 0..MAX_RETRIES {
            let mut head = self.head(max).await?;
            if let Some(orphan) = head.orphans.first() {
                // Items a dead connection had not acknowledged go first, as in memory.
                match self.take_orphan(orphan, acked).await? {
                    Some(item) => {
                        let taken = vec![item];
                        self.remember(acked, &taken);
                        return Ok((taken, head));
                    }
                    None => continue,
                }
            }
            if head.items.is_empty() {
                return Ok((Vec::new(), head));
            }
            let mut when: Vec<Compare> = head
                .items
                .iter()
                .map(|(k, m, _)| Compare::mod_revision(k.clone(), CompareOp::Equal, *m))
                .collect();
            let mut ops: Vec<TxnOp> = head
                .items
                .iter()
                .map(|(k, ..)| TxnOp::delete(k.clone(), None))
                .collect();
            if self.bounded() {
                let (n, rev) = head.len;
                when.push(Compare::mod_revision(
                    self.keys.len.clone(),
                    CompareOp::Equal,
                    rev,
                ));
                let left = n.saturating_sub(head.items.len());
                ops.push(TxnOp::put(self.keys.len.clone(), left.to_string(), None));
            }
            let items: Vec<Stored> = head.items.iter().map(|(.., v)| v.clone()).collect();
            let (hold, taken) = self.hold_ops(acked, items);
            ops.extend(hold);
            let answer = self
                .store
                .txn("getting from a queue", when, ops, Vec::new())
                .await?;
            if answer.succeeded {
                head.items.clear();
                self.remember(acked, &taken);
                return Ok((taken, head));
            }
            // Another getter took one of them first, or a put changed `len`: read again.
        }
        Err(busy())
    }

    /// Puts as many of `items` as there is room for (all of them when `room` is false: an item
    /// given back), with unfinished markers when `mark`, [`BATCH`] at a time. Returns how many
    /// went in and the revision read, to wait from when not all did.
    async fn put_some(
        &self,
        items: &mut VecDeque<Stored>,
        mark: bool,
        room: bool,
    ) -> Result<(usize, i64), CallError> {
        let mut done = 0;
        loop {
            let (n, revision) = self.put_batch(items, mark, room).await?;
            done += n;
            if n == 0 || items.is_empty() {
                return Ok((done, revision));
            }
        }
    }

    /// Puts up to [`BATCH`] of `items` in one transaction, as [`Queue::put_some`] says.
    async fn put_batch(
        &self,
        items: &mut VecDeque<Stored>,
        mark: bool,
        room: bool,
    ) -> Result<(usize, i64), CallError> {
        let most = items.len().min(BATCH);
        for _ in 0..MAX_RETRIES {
            let (mut when, mut ops, n, revision) = if self.bounded() {
                let head = self.head(0).await?;
                if head.closed {
                    return Err(closed());
                }
                let (len, rev) = head.len;
                let fits = if room {
                    self.maxsize.saturating_sub(len).min(most)
                } else {
                    most
                };
                if fits == 0 {
                    return Ok((0, head.revision));
                }
                let when = vec![Compare::mod_revision(
                    self.keys.len.clone(),
                    CompareOp::Equal,
                    rev,
                )];
                let ops = vec![TxnOp::put(
                    self.keys.len.clone(),
                    (len + fits).to_string(),
                    None,
                )];
                (when, ops, fits, head.revision)
            } else {
                (Vec::new(), Vec::new(), most, 0)
            };
            when.extend(self.open_compares());
            ops.extend(self.item_ops(items.iter().take(n), mark)?);
            let or_else = vec![
                TxnOp::get(
                    self.keys.meta.clone(),
                    Some(GetOptions::new().with_count_only()),
                ),
                TxnOp::get(
                    self.keys.closed.clone(),
                    Some(GetOptions::new().with_count_only()),
                ),
            ];
            let answer = self
                .store
                .txn("putting into a queue", when, ops, or_else)
                .await?;
            if answer.succeeded {
                items.drain(..n);
                return Ok((n, revision));
            }
            let gets = gets(&answer);
            if gets.first().is_none_or(|g| g.count() == 0) {
                return Err(waits::deleted());
            }
            if gets.get(1).is_some_and(|g| g.count() > 0) {
                return Err(closed());
            }
            // `len` changed (a put or get through another manager): read again.
        }
        Err(busy())
    }

    /// The puts of the items (and their markers), keyed to keep their order.
    fn item_ops<'a>(
        &self,
        items: impl ExactSizeIterator<Item = &'a Stored>,
        mark: bool,
    ) -> Result<Vec<TxnOp>, CallError> {
        let unique = unique()?;
        let single = items.len() == 1;
        let mut ops = Vec::with_capacity(items.len() * 2);
        for (i, item) in items.enumerate() {
            let name = if single {
                format!("{unique:016x}")
            } else {
                format!("{unique:016x}-{i:08x}")
            };
            let mut key = self.keys.items.clone();
            key.extend_from_slice(name.as_bytes());
            ops.push(TxnOp::put(key, item.to_vec(), None));
            if mark {
                let mut key = self.keys.marks.clone();
                key.extend_from_slice(format!("{unique:016x}-{i:08x}").as_bytes());
                ops.push(TxnOp::put(key, "", None));
            }
        }
        Ok(ops)
    }

    /// Whether a watched change may let a waiting getter (`get`), putter or joiner go on.
    fn wakes(&self, wait: Waits) -> impl Fn(EventType, &[u8]) -> bool + Send + 'static {
        let keys = (
            self.keys.meta.clone(),
            self.keys.items.clone(),
            self.keys.closed.clone(),
            self.keys.marks.clone(),
            self.keys.holds.clone(),
            self.keys.waiters.clone(),
        );
        move |event, key| {
            let (meta, items, closed, marks, holds, waiters) = &keys;
            match (wait, event) {
                (_, EventType::Delete) if key == meta.as_slice() => true,
                (Waits::Item | Waits::Room, EventType::Put) if key == closed.as_slice() => true,
                (Waits::Item, EventType::Put) => key.starts_with(items),
                (Waits::Item, EventType::Delete) => {
                    key.starts_with(holds) || key.starts_with(waiters)
                }
                (Waits::Room, EventType::Delete) => key.starts_with(items),
                (Waits::Done, EventType::Delete) => key.starts_with(marks),
                _ => false,
            }
        }
    }

    async fn watch(
        &self,
        from: i64,
        until: Option<tokio::time::Instant>,
        wait: Waits,
        cancel: &mut Cancel,
    ) -> Result<Seen, CallError> {
        let watch = Watch {
            prefix: self.keys.object.clone(),
            after: from,
            deadline: until,
            wanted: self.wakes(wait),
        };
        changed(self.store.client(), watch, cancel).await
    }
}

/// A waiting getter's place in line.
struct Turn {
    key: Vec<u8>,
    created: i64,
}

/// What a waiting call waits for.
#[derive(Clone, Copy)]
enum Waits {
    Item,
    Room,
    Done,
}

/// The range answers of a transaction, in order.
fn gets(answer: &super::Applied) -> Vec<etcd_client::GetResponse> {
    answer
        .responses
        .iter()
        .flatten()
        .filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g.clone()),
            _ => None,
        })
        .collect()
}

/// A random name for the keys of one put.
fn unique() -> Result<u64, CallError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|e| CallError::runtime(format!("no randomness for a queue item's key: {e}")))?;
    Ok(u64::from_le_bytes(bytes))
}

/// `create`'s init args: `[]` or `[maxsize]` (0 or nil: unbounded), as the memory queue reads
/// them.
fn maxsize(init: &Params) -> Result<usize, CallError> {
    if init.len() > 1 {
        return Err(CallError::new(
            ErrorName::ArgumentCountError,
            format!(
                "create of a queue takes 0 to 1 init args, got {}",
                init.len()
            ),
        ));
    }
    Ok(match init.opt(0) {
        None => 0,
        Some(raw) => match params::int_i64(raw) {
            Some(n) if n <= 0 => 0,
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => return Err(expected("an int maxsize", 2, raw)),
        },
    })
}

impl Queue {
    fn parse_put(&self, method: &str, p: &Params) -> Result<Op, CallError> {
        let a = |min, max| arity(p, self.kind, method, min, max);
        let one = || VecDeque::from(vec![store(p.raw(1))]);
        Ok(match method {
            "put" => {
                a(2, 4)?;
                let how = Blocking::from_params(p, 2)?;
                Op::Put {
                    items: one(),
                    many: false,
                    how,
                }
            }
            "put_nowait" => {
                a(2, 2)?;
                Op::Put {
                    items: one(),
                    many: false,
                    how: Blocking::NOWAIT,
                }
            }
            _ => {
                a(2, 4)?;
                let items =
                    array_items(p.raw(1)).ok_or_else(|| expected("an array", 1, p.raw(1)))?;
                let how = Blocking::from_params(p, 2)?;
                Op::Put {
                    items: items.into_iter().map(store).collect(),
                    many: true,
                    how,
                }
            }
        })
    }

    fn parse_get(&self, method: &str, p: &Params) -> Result<Op, CallError> {
        let a = |min, max| arity(p, self.kind, method, min, max);
        Ok(match method {
            "get" => {
                a(1, 3)?;
                Op::Get {
                    max: 1,
                    shape: Shape::Item,
                    how: Blocking::from_params(p, 1)?,
                    acked: None,
                }
            }
            "get_nowait" => {
                a(1, 1)?;
                Op::Get {
                    max: 1,
                    shape: Shape::Item,
                    how: Blocking::NOWAIT,
                    acked: None,
                }
            }
            _ => {
                a(2, 4)?;
                let max = usize::try_from(p.u64(1)?).unwrap_or(usize::MAX);
                if max == 0 {
                    return Err(CallError::value(format!("{method} takes at least 1 item")));
                }
                Op::Get {
                    max,
                    shape: Shape::Items,
                    how: Blocking::from_params(p, 2)?,
                    acked: None,
                }
            }
        })
    }

    async fn get(
        self: Arc<Self>,
        max: usize,
        shape: Shape,
        how: Blocking,
        acked: Option<acked::Acked>,
    ) -> Step {
        let taken = self.take(max, acked.as_ref()).await;
        let first = match taken {
            Ok((items, _)) if !items.is_empty() => {
                return Step::Done(Ok(Grant::Taken { items, shape }))
            }
            Err(e) => {
                self.unhold(acked.as_ref());
                return Step::Done(Err(e));
            }
            Ok((_, head)) if head.closed || !how.block => {
                self.unhold(acked.as_ref());
                return Step::Done(Err(if head.closed { closed() } else { empty() }));
            }
            Ok((_, head)) => head.revision,
        };
        let until = deadline(how.timeout);
        Step::Wait(Box::new(move |mut cancel| {
            Box::pin(async move {
                let answer = self
                    .wait_for_items(max, shape, first, until, acked.as_ref(), &mut cancel)
                    .await;
                if answer.is_err() {
                    self.unhold(acked.as_ref());
                }
                answer
            })
        }))
    }

    /// A blocking get's waiting part: takes items as soon as there are some and its turn came.
    async fn wait_for_items(
        &self,
        max: usize,
        shape: Shape,
        from: i64,
        until: Option<tokio::time::Instant>,
        acked: Option<&acked::Acked>,
        cancel: &mut Cancel,
    ) -> Reply {
        let turn = self.join_line().await?;
        let answer = self
            .wait_in_line(max, shape, from, until, acked, cancel, &turn)
            .await;
        self.leave_line(turn);
        answer
    }

    #[allow(clippy::too_many_arguments)]
    async fn wait_in_line(
        &self,
        max: usize,
        shape: Shape,
        mut from: i64,
        until: Option<tokio::time::Instant>,
        acked: Option<&acked::Acked>,
        cancel: &mut Cancel,
        turn: &Turn,
    ) -> Reply {
        loop {
            match self.watch(from, until, Waits::Item, cancel).await? {
                Seen::Changed => {}
                Seen::TimedOut => return Err(empty()),
                Seen::Cancelled => return Err(waits::gone()),
            }
            let (mine, at) = self.my_turn(turn).await?;
            if !mine {
                from = at;
                continue;
            }
            let (items, head) = self.take(max, acked).await?;
            if !items.is_empty() {
                return Ok(Grant::Taken { items, shape });
            }
            if head.closed {
                return Err(closed());
            }
            from = head.revision;
        }
    }

    /// Puts this getter in the line of waiting getters: a key on the lease, whose create
    /// revision is its place.
    async fn join_line(&self) -> Result<Turn, CallError> {
        let mut key = self.keys.waiters.clone();
        key.extend_from_slice(format!("{:016x}", unique()?).as_bytes());
        let created = self
            .store
            .put(
                "waiting on a queue",
                key.clone(),
                "",
                Some(self.store.held()),
            )
            .await?;
        Ok(Turn { key, created })
    }

    /// Whether a waiting getter may take now: it is the oldest waiter, or there are more items
    /// than waiters before it. Also the revision read.
    async fn my_turn(&self, turn: &Turn) -> Result<(bool, i64), CallError> {
        // etcd counts a range before filtering it: the older waiters are counted from their
        // keys.
        let older = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_max_create_revision((turn.created - 1).max(1));
        let items = GetOptions::new().with_prefix().with_count_only();
        let ops = vec![
            TxnOp::get(self.keys.waiters.clone(), Some(older)),
            TxnOp::get(self.keys.items.clone(), Some(items)),
        ];
        let answer = self.store.read("waiting on a queue", ops).await?;
        let gets = gets(&answer);
        let older = gets.first().map_or(0, |g| g.kvs().len() as i64);
        let items = gets.get(1).map_or(0, |g| g.count());
        Ok((older == 0 || older < items, answer.revision))
    }

    /// The getter left the line.
    fn leave_line(&self, turn: Turn) {
        let store = self.store.clone();
        tokio::spawn(async move {
            let left = store
                .delete_key("leaving a queue's waiting line", turn.key)
                .await;
            if let Err(e) = left {
                warn!(error = %e.message, "a queue waiter's key stays until its lease ends");
            }
        });
    }

    async fn put(self: Arc<Self>, mut items: VecDeque<Stored>, many: bool, how: Blocking) -> Step {
        let (mut done, from) = match self.put_some(&mut items, true, true).await {
            Ok(put) => put,
            Err(e) => return Step::Done(Err(e)),
        };
        if items.is_empty() || (many && !how.block) {
            return Step::Done(put_done(done, many));
        }
        if !how.block {
            return Step::Done(Err(full()));
        }
        let until = deadline(how.timeout);
        Step::Wait(Box::new(move |mut cancel| {
            Box::pin(async move {
                let mut from = from;
                loop {
                    match self.watch(from, until, Waits::Room, &mut cancel).await? {
                        Seen::Changed => {}
                        Seen::TimedOut if many => return put_done(done, many),
                        Seen::TimedOut => return Err(full()),
                        Seen::Cancelled => return Err(waits::gone()),
                    }
                    let (n, at) = self.put_some(&mut items, true, true).await?;
                    done += n;
                    if items.is_empty() {
                        return put_done(done, many);
                    }
                    from = at;
                }
            })
        }))
    }

    /// How many items are unfinished, and the revision read.
    async fn unfinished(&self) -> Result<(i64, i64), CallError> {
        let got = self
            .store
            .get(
                "reading a queue",
                self.keys.marks.clone(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await?;
        Ok((got.count(), got.header().map_or(0, |h| h.revision())))
    }

    async fn join(self: Arc<Self>, timeout: Option<Duration>) -> Step {
        let from = match self.unfinished().await {
            Err(e) => return Step::Done(Err(e)),
            Ok((0, _)) => return Step::Done(Ok(Grant::Bool(true))),
            Ok((_, at)) => at,
        };
        let until = deadline(timeout);
        Step::Wait(Box::new(move |mut cancel| {
            Box::pin(async move {
                let mut from = from;
                loop {
                    match self.watch(from, until, Waits::Done, &mut cancel).await? {
                        Seen::Changed => {}
                        Seen::TimedOut => return Ok(Grant::Bool(false)),
                        Seen::Cancelled => return Err(waits::gone()),
                    }
                    match self.unfinished().await? {
                        (0, _) => return Ok(Grant::Bool(true)),
                        (_, at) => from = at,
                    }
                }
            })
        }))
    }

    /// Marks one unfinished item done (any marker: a marker says only that an item is
    /// unfinished). A joinable queue also finishes the record of one item got: the oldest
    /// the caller's connection got here, else the oldest any connection got.
    async fn task_done(&self, session: SessionId) -> Reply {
        for _ in 0..MAX_RETRIES {
            let got = self
                .store
                .get(
                    "marking a queue item done",
                    self.keys.marks.clone(),
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_keys_only()
                            .with_limit(1),
                    ),
                )
                .await?;
            let Some(kv) = got.kvs().first() else {
                return Err(CallError::value("task_done() called too many times"));
            };
            let key = kv.key().to_vec();
            let finished = self.finish_one(session).await?;
            let mut ops = vec![TxnOp::delete(key.clone(), None)];
            ops.extend(finished.iter().map(|f| TxnOp::delete(f.key.clone(), None)));
            let when = vec![Compare::version(key, CompareOp::Greater, 0)];
            let answer = self
                .store
                .txn("marking a queue item done", when, ops, Vec::new())
                .await?;
            if answer.succeeded {
                if let Some(f) = finished {
                    self.finished(f, session).await?;
                }
                return Ok(Grant::Nil);
            }
            if let Some(f) = finished {
                self.unfinish(f, session);
            }
        }
        Err(busy())
    }

    async fn count(&self, what: Count) -> Reply {
        if let Count::Maxsize = what {
            return Ok(Grant::Count(self.maxsize as u64));
        }
        let count = || Some(GetOptions::new().with_count_only());
        let ops = vec![
            TxnOp::get(self.keys.meta.clone(), count()),
            TxnOp::get(
                self.keys.items.clone(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            ),
            TxnOp::get(self.keys.closed.clone(), count()),
        ];
        let answer = self.store.read("reading a queue", ops).await?;
        let counts: Vec<i64> = gets(&answer).iter().map(|g| g.count()).collect();
        let [meta, items, closed] = counts[..] else {
            return Err(CallError::runtime(
                "etcd answered a queue read incompletely",
            ));
        };
        if meta == 0 {
            return Err(waits::deleted());
        }
        let items = u64::try_from(items).unwrap_or(0);
        Ok(match what {
            Count::Qsize => Grant::Count(items),
            Count::Empty => Grant::Bool(items == 0),
            Count::Full => Grant::Bool(self.bounded() && items >= self.maxsize as u64),
            Count::IsClosed => Grant::Bool(closed > 0),
            Count::Maxsize => Grant::Count(self.maxsize as u64),
        })
    }

    async fn close(&self) -> Reply {
        let when = vec![Compare::version(
            self.keys.meta.clone(),
            CompareOp::Greater,
            0,
        )];
        let ops = vec![TxnOp::put(self.keys.closed.clone(), "1", None)];
        let answer = self
            .store
            .txn("closing a queue", when, ops, Vec::new())
            .await?;
        if answer.succeeded {
            Ok(Grant::Nil)
        } else {
            Err(waits::deleted())
        }
    }
}

impl Engine for Queue {
    type Op = Op;

    fn parse(&self, method: &str, p: &Params, caller: &Caller<'_>) -> Result<Op, CallError> {
        let a = |min, max| arity(p, self.kind, method, min, max);
        match method {
            "put" | "put_nowait" | "put_many" => self.parse_put(method, p),
            "get" | "get_nowait" | "get_many" => {
                let op = self.parse_get(method, p)?;
                Ok(self.record_for(op, caller))
            }
            "get_acked" | "get_many_acked" | "ack" | "nack" => self.parse_acked(method, p, caller),
            "join" => {
                a(1, 2)?;
                Ok(Op::Join(timeout_param(p, 1)?))
            }
            _ => {
                a(1, 1)?;
                Ok(match method {
                    "qsize" => Op::Count(Count::Qsize),
                    "empty" => Op::Count(Count::Empty),
                    "full" => Op::Count(Count::Full),
                    "maxsize" => Op::Count(Count::Maxsize),
                    "is_closed" => Op::Count(Count::IsClosed),
                    "close" => Op::Close,
                    "task_done" => Op::TaskDone(caller.holder()),
                    _ => return Err(unknown_method(self.kind, method)),
                })
            }
        }
    }

    fn first(self: Arc<Self>, op: Op) -> Boxed<Step> {
        Box::pin(async move {
            match op {
                Op::Put { items, many, how } => self.put(items, many, how).await,
                Op::Get {
                    max,
                    shape,
                    how,
                    acked,
                } => self.get(max, shape, how, acked).await,
                Op::Settle {
                    receipt,
                    redeliver,
                    session,
                } => Step::Done(self.settle(receipt, redeliver, session).await),
                Op::Join(timeout) => self.join(timeout).await,
                Op::Count(what) => Step::Done(self.count(what).await),
                Op::Close => Step::Done(self.close().await),
                // A connection that has left (its client killed with the call in flight) is
                // served nothing more, as the memory store settles a departed connection: its
                // close has already handed its unfinished items to the next getter, and a
                // `task_done` run now would finish another connection's item in their place.
                Op::TaskDone(holder) if holder.holdings.departed() => {
                    Step::Done(Err(waits::gone()))
                }
                Op::TaskDone(holder) => Step::Done(self.task_done(holder.session).await),
            }
        })
    }

    /// Items got by a getter that never learnt of them go back, at the tail (etcd orders items
    /// by the revision that put them: the head cannot be put back to), without new unfinished
    /// markers (they are still counted).
    fn undeliver(self: Arc<Self>, grant: Grant) {
        let items: VecDeque<Stored> = match grant {
            Grant::Taken { items, .. } if items.iter().any(|(r, _)| *r != 0) => {
                // Acknowledged: let go of them, and the next getter gets them first.
                return self.drop_holds(items.iter().map(|(r, _)| *r));
            }
            Grant::Taken { items, .. } => items.into_iter().map(|(_, i)| i).collect(),
            _ => return,
        };
        if items.is_empty() {
            return;
        }
        tokio::spawn(async move {
            let mut items = items;
            if let Err(e) = self.put_some(&mut items, false, false).await {
                warn!(
                    items = items.len(),
                    error = %e.message,
                    "queue items a getter never received could not be put back"
                );
            }
        });
    }
}
