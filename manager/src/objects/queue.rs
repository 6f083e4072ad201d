//! `queue` and `joinable_queue`: FIFO queues with blocking, batched and closable puts and gets.
//!
//! Putters, getters and joiners wait in FIFO lines of the lifecycle core, which offers grants
//! after every change: waiting putters' items go in while there is room, waiting getters get
//! items while there are items, so no wake-up is lost. An item handed to a getter whose
//! connection is gone goes back to the head of the queue: every item is delivered exactly once
//! or stays.
//!
//! # Redelivery
//! Some items stay on record after they are delivered, in `Outstanding`: a FIFO per
//! connection of the items it got and has not finished, counted in the object's
//! [`HeldBy`] so that the connection's holdings record has the queue
//! while it holds any. Those are a joinable queue's items until `task_done` marks them, and a
//! queue's items got with `get_acked` / `get_many_acked` until `ack` (or `nack`). When the
//! connection closes, however it closes, [`Semantics::release_dead`] puts its items back at the
//! head of the queue in their order, and the next getter gets them: at-least-once delivery. A
//! plain `get` of a plain queue keeps no record: at-most-once.
//!
//! Both kinds count `task_done` and answer `join` as Python's `queue.Queue` does (Python's
//! manager `Queue()` is one). A plain queue's `task_done` only counts: it keeps nothing on
//! record, so nothing is redelivered.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use agora_proto::params::array_items;
use agora_proto::{encode, params, CallError, ErrorName, Params};

use crate::lifecycle::{
    counted, timeout_param, Caller, Grant, HeldBy, HeldInfo, Holder, Leave, Left, LineId,
    ObjectKey, Offer, Outcome, Parking, Semantics, SessionId, Shape, View,
};

use super::{arity, expected, store, unknown_method, Args, Kind, SharedObject, Stored};

/// The lines, in the order they are offered grants: putters first, so that a getter granted
/// next finds their items.
const PUT: LineId = 0;
const GET: LineId = 1;
const JOIN: LineId = 2;

/// What a parked call waits for.
#[derive(Debug)]
enum Wait {
    /// A putter's items that did not fit yet, and how many went in already.
    Put {
        items: VecDeque<Stored>,
        done: usize,
        many: bool,
    },
    /// A getter: how many items it takes at most, and how its answer is written.
    Get { max: usize, shape: Shape },
    /// A joiner: all work done.
    Join,
}

#[derive(Debug)]
struct State {
    maxsize: usize,
    items: VecDeque<Stored>,
    closed: bool,
    /// Items put and not yet marked done with `task_done`.
    unfinished: u64,
    /// A joinable queue: every item got stays on record until it is marked done.
    joinable: bool,
    /// Items delivered and not finished, per connection.
    out: Outstanding,
}

/// The items each connection got and has not finished (marked done, acknowledged), oldest
/// first, each with its receipt. Receipts are numbered from 1 in the order items are got, so
/// that a smaller receipt is an older item.
#[derive(Debug)]
struct Outstanding {
    by: HashMap<SessionId, VecDeque<(u64, Stored)>>,
    /// The connection holding each receipt.
    owner: HashMap<u64, SessionId>,
    held: HeldBy,
    next: u64,
}

impl Outstanding {
    fn new(held: HeldBy) -> Outstanding {
        Outstanding {
            by: HashMap::new(),
            owner: HashMap::new(),
            held,
            next: 1,
        }
    }

    /// Number of items on record, all connections together.
    fn len(&self) -> u64 {
        self.owner.len() as u64
    }

    /// `to` got `item`: keeps a copy on record; returns the item with its receipt.
    fn record(&mut self, to: Caller<'_>, item: Stored) -> (u64, Stored) {
        let receipt = self.next;
        self.next += 1;
        self.by
            .entry(to.session)
            .or_default()
            .push_back((receipt, item.clone()));
        self.owner.insert(receipt, to.session);
        self.held.add(to, 1);
        (receipt, item)
    }

    /// The item of `receipt` is finished: it leaves the record. `None` when it is not on record
    /// (finished already, released with its connection, or never given).
    fn finish(&mut self, receipt: u64) -> Option<Stored> {
        let session = self.owner.remove(&receipt)?;
        let fifo = self.by.get_mut(&session)?;
        let at = fifo.partition_point(|(r, _)| *r < receipt);
        let (_, item) = fifo.remove(at)?;
        if fifo.is_empty() {
            self.by.remove(&session);
        }
        self.held.remove(session, 1);
        Some(item)
    }

    /// The receipt of the oldest item `session` holds.
    fn oldest_of(&self, session: SessionId) -> Option<u64> {
        self.by.get(&session)?.front().map(|(r, _)| *r)
    }

    /// The receipt of the oldest item any connection holds.
    fn oldest(&self) -> Option<u64> {
        self.by
            .values()
            .filter_map(|f| f.front())
            .map(|(r, _)| *r)
            .min()
    }

    /// Connection `session` closed: its items leave the record, oldest first.
    fn release(&mut self, session: SessionId) -> VecDeque<(u64, Stored)> {
        let fifo = self.by.remove(&session).unwrap_or_default();
        for (receipt, _) in &fifo {
            self.owner.remove(receipt);
        }
        self.held.take(session);
        fifo
    }

    /// The queue is deleted: forgets everything.
    fn clear(&mut self) {
        self.by.clear();
        self.owner.clear();
        self.held.clear();
    }
}

/// A call on a closed queue (the etcd store's queues answer the same).
pub fn closed() -> CallError {
    CallError::new(ErrorName::Closed, "the queue is closed")
}

/// A get that found no item in time.
pub fn empty() -> CallError {
    CallError::new(ErrorName::Empty, "the queue is empty")
}

/// A put that found no room in time.
pub fn full() -> CallError {
    CallError::new(ErrorName::Full, "the queue is full")
}

/// What a putter is answered: `nil` for `put`, the count of items put for `put_many`.
fn put_done(done: usize, many: bool) -> Grant {
    if many {
        Grant::Count(done as u64)
    } else {
        Grant::Nil
    }
}

impl State {
    fn room(&self) -> usize {
        if self.maxsize == 0 {
            usize::MAX
        } else {
            self.maxsize.saturating_sub(self.items.len())
        }
    }

    /// Moves as many of `items` in as fit; returns how many.
    fn admit(&mut self, items: &mut VecDeque<Stored>) -> usize {
        let n = self.room().min(items.len());
        self.items.extend(items.drain(..n));
        self.unfinished += n as u64;
        n
    }

    /// Takes up to `max` items from the head for `to`, answered as `shape` says. Acknowledged
    /// gets record their items; a joinable queue records its items while fewer are on record
    /// than are unfinished (a `task_done` that came before its item was got already counted
    /// it).
    fn take(&mut self, max: usize, shape: Shape, to: Caller<'_>) -> Grant {
        let (many, acked) = match shape {
            Shape::Item => (false, false),
            Shape::Items => (true, false),
            Shape::Receipted => (false, true),
            Shape::ReceiptedItems => (true, true),
        };
        let n = if many { max } else { 1 }.min(self.items.len());
        let items: Vec<Stored> = self.items.drain(..n).collect();
        let items = items
            .into_iter()
            .map(|item| {
                if acked || (self.joinable && self.out.len() < self.unfinished) {
                    self.out.record(to, item)
                } else {
                    (0, item)
                }
            })
            .collect();
        Grant::Taken { items, shape }
    }

    /// Puts items back at the head of the queue, keeping their order.
    fn unget(&mut self, items: impl DoubleEndedIterator<Item = Stored>) {
        for item in items.rev() {
            self.items.push_front(item);
        }
    }

    fn offer_put(&mut self, items: &mut VecDeque<Stored>, done: &mut usize, many: bool) -> Offer {
        if self.closed {
            return Offer::Grant(Err(closed()));
        }
        let n = self.admit(items);
        *done += n;
        match (items.is_empty(), n) {
            (true, _) => Offer::Grant(Ok(put_done(*done, many))),
            (false, 0) => Offer::Wait,
            (false, _) => Offer::Progress,
        }
    }
}

impl Semantics for State {
    type Wait = Wait;

    fn offer(&mut self, _line: LineId, wait: &mut Wait, to: &Holder) -> Offer {
        match wait {
            Wait::Put { items, done, many } => self.offer_put(items, done, *many),
            Wait::Get { max, shape } if !self.items.is_empty() => {
                Offer::Grant(Ok(self.take(*max, *shape, to.as_caller())))
            }
            Wait::Get { .. } if self.closed => Offer::Grant(Err(closed())),
            Wait::Join if self.unfinished == 0 => Offer::Grant(Ok(Grant::Bool(true))),
            Wait::Get { .. } | Wait::Join => Offer::Wait,
        }
    }

    /// Items got by a getter that never learnt of them go back to the head, in their order,
    /// and leave the record. One no longer on record was put back already (its connection's
    /// close came first) or marked done meanwhile: it does not come back twice.
    fn give_back(&mut self, grant: Grant, _to: &Holder) {
        let items = match grant {
            Grant::Item(item) => vec![item],
            Grant::Items(items) => items,
            Grant::Taken { items, .. } => items
                .into_iter()
                .filter(|(receipt, _)| *receipt == 0 || self.out.finish(*receipt).is_some())
                .map(|(_, item)| item)
                .collect(),
            // A put or a join took nothing that can be returned.
            _ => return,
        };
        self.unget(items.into_iter());
    }

    /// The items a closed connection got and had not finished go back to the head, in their
    /// order, for the next getter (at-least-once). Nobody is told: no acquire can follow.
    fn release_dead(&mut self, session: SessionId) -> bool {
        let fifo = self.out.release(session);
        self.unget(fifo.into_iter().map(|(_, item)| item));
        false
    }

    fn retire(&mut self) {
        self.out.clear();
    }

    fn leave(&mut self, _line: LineId, wait: Wait, why: Leave) -> Left<Wait> {
        if why == Leave::Abandoned {
            // The items a putter already put stay; the rest go with it.
            return Left::Gone;
        }
        Left::Answer(match wait {
            Wait::Get { .. } => Err(empty()),
            Wait::Put { many: false, .. } => Err(full()),
            Wait::Put {
                done, many: true, ..
            } => Ok(Grant::Count(done as u64)),
            Wait::Join => Ok(Grant::Bool(false)),
        })
    }

    /// The items each connection got and has not finished.
    fn holding(&self) -> Vec<HeldInfo> {
        counted(Some(&self.out.held))
    }

    /// The items in the queue.
    fn size(&self) -> Option<u64> {
        Some(self.items.len() as u64)
    }

    fn waits_for(&self, _line: LineId, wait: &Wait) -> String {
        match wait {
            Wait::Put { items, .. } if items.len() == 1 => "room for an item".to_owned(),
            Wait::Put { items, .. } => format!("room for {} items", items.len()),
            Wait::Get { max: 1, .. } => "an item".to_owned(),
            Wait::Get { max, .. } => format!("items (up to {max})"),
            Wait::Join => "every item to be done".to_owned(),
        }
    }
}

/// A shared queue (and, with `joinable`, a joinable queue).
pub struct Queue {
    kind: Kind,
    key: ObjectKey,
    state: Arc<Parking<State>>,
}

/// How a put or get behaves when it cannot complete at once (the etcd store's queues parse
/// theirs the same way).
#[derive(Debug, Clone, Copy)]
pub struct Blocking {
    /// Whether the call waits at all.
    pub block: bool,
    /// How long it waits; none for ever.
    pub timeout: Option<Duration>,
}

impl Blocking {
    /// `[.., block, timeout]` at params `at` and `at + 1`; a non-blocking call has no timeout.
    pub fn from_params(p: &Params, at: usize) -> Result<Blocking, CallError> {
        let block = p.bool_or(at, true)?;
        let timeout = if block {
            timeout_param(p, at + 1)?
        } else {
            None
        };
        Ok(Blocking { block, timeout })
    }

    /// A call that never waits.
    pub const NOWAIT: Blocking = Blocking {
        block: false,
        timeout: None,
    };
}

impl Queue {
    /// A queue from `create`'s init args: `[]` or `[maxsize]` (0 or nil: unbounded).
    pub fn new(kind: Kind, args: &Args<'_>) -> Result<Queue, CallError> {
        args.expect(0, 1)?;
        let maxsize = match args.opt(0) {
            None => 0,
            Some(raw) => match params::int_i64(raw) {
                Some(n) if n <= 0 => 0,
                Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
                None => return Err(expected("an int maxsize", 2, raw)),
            },
        };
        Ok(Queue {
            kind,
            key: crate::lifecycle::next_object_key(),
            state: Parking::new(|held: HeldBy| State {
                maxsize,
                items: VecDeque::new(),
                closed: false,
                unfinished: 0,
                joinable: kind == Kind::JoinableQueue,
                out: Outstanding::new(held),
            }),
        })
    }

    /// `put` / `put_many`: puts what fits now (waiting putters go first: a new put never
    /// overtakes them); the rest waits (blocking) or is refused.
    fn put(
        &self,
        items: Vec<Stored>,
        many: bool,
        how: Blocking,
        caller: &Caller<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        self.state.op(|cx| {
            if cx.state.closed {
                return Err(closed());
            }
            let mut items = VecDeque::from(items);
            let done = if cx.waiting(PUT) == 0 {
                cx.state.admit(&mut items)
            } else {
                0
            };
            if items.is_empty() || (many && !how.block) {
                put_done(done, many).encode(out);
                return Ok(Outcome::Done);
            }
            if !how.block {
                return Err(full());
            }
            let wait = Wait::Put { items, done, many };
            Ok(Outcome::Parked(cx.park(
                PUT,
                self.key,
                caller,
                wait,
                how.timeout,
            )))
        })
    }

    /// `get` / `get_many` (and their acknowledged forms): takes what is there; waits
    /// (blocking) when the queue is empty.
    fn get(
        &self,
        max: usize,
        shape: Shape,
        how: Blocking,
        caller: &Caller<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        self.state.op(|cx| {
            if !cx.state.items.is_empty() {
                cx.state.take(max, shape, *caller).encode(out);
                return Ok(Outcome::Done);
            }
            if cx.state.closed {
                return Err(closed());
            }
            if !how.block {
                return Err(empty());
            }
            let wait = Wait::Get { max, shape };
            Ok(Outcome::Parked(cx.park(
                GET,
                self.key,
                caller,
                wait,
                how.timeout,
            )))
        })
    }

    fn join(
        &self,
        p: &Params,
        caller: &Caller<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let timeout = timeout_param(p, 1)?;
        self.state.op(|cx| {
            if cx.state.unfinished == 0 {
                encode::bool(out, true);
                return Ok(Outcome::Done);
            }
            Ok(Outcome::Parked(cx.park(
                JOIN,
                self.key,
                caller,
                Wait::Join,
                timeout,
            )))
        })
    }

    fn close(&self) -> Result<(), CallError> {
        self.state.op(|cx| {
            cx.state.closed = true;
            cx.fail(PUT, &closed());
            Ok(())
        })
    }

    /// Marks one item done: the oldest the caller's connection got and has not marked; when it
    /// has none, the oldest item any connection got and has not marked (the one got earliest);
    /// when nobody has one, it only counts, as Python's does.
    fn task_done(&self, caller: &Caller<'_>) -> Result<(), CallError> {
        self.state.op(|cx| {
            if cx.state.unfinished == 0 {
                return Err(CallError::value("task_done() called too many times"));
            }
            cx.state.unfinished -= 1;
            if !cx.state.joinable {
                // A plain queue's task_done only counts, as Python's queue.Queue does: its
                // record holds acknowledged gets, which only their receipts settle.
                return Ok(());
            }
            let out = &mut cx.state.out;
            if let Some(receipt) = out.oldest_of(caller.session).or_else(|| out.oldest()) {
                out.finish(receipt);
            }
            Ok(())
        })
    }

    /// `ack`: the item of `receipt` is processed and leaves the record; `nack`: it goes back to
    /// the head of the queue now.
    fn settle(&self, receipt: u64, redeliver: bool) -> Result<(), CallError> {
        self.state.op(|cx| {
            let item = cx.state.out.finish(receipt).ok_or_else(|| {
                CallError::value(format!(
                    "receipt {receipt} is not outstanding: acknowledged already, never given, \
                     or its item was redelivered when its connection closed"
                ))
            })?;
            if redeliver {
                cx.state.items.push_front(item);
            }
            Ok(())
        })
    }

    fn plain_only(&self, method: &str) -> Result<(), CallError> {
        if self.kind == Kind::Queue {
            return Ok(());
        }
        Err(CallError::new(
            ErrorName::UnknownMethodError,
            format!(
                "joinable_queue has no method {method:?}: its task_done is the acknowledgement"
            ),
        ))
    }

    /// The calls that may wait: puts, gets and join.
    fn blocking_call(
        &self,
        method: &str,
        p: &Params,
        caller: &Caller<'_>,
        out: &mut Vec<u8>,
    ) -> Option<Result<Outcome, CallError>> {
        let a = |min, max| arity(p, self.kind, method, min, max);
        let one = || vec![store(p.raw(1))];
        Some(match method {
            "put" => a(2, 4)
                .and_then(|()| Blocking::from_params(p, 2))
                .and_then(|how| self.put(one(), false, how, caller, out)),
            "put_nowait" => {
                a(2, 2).and_then(|()| self.put(one(), false, Blocking::NOWAIT, caller, out))
            }
            "put_many" => a(2, 4).and_then(|()| {
                let items =
                    array_items(p.raw(1)).ok_or_else(|| expected("an array", 1, p.raw(1)))?;
                let how = Blocking::from_params(p, 2)?;
                self.put(
                    items.into_iter().map(store).collect(),
                    true,
                    how,
                    caller,
                    out,
                )
            }),
            "get" => a(1, 3)
                .and_then(|()| Blocking::from_params(p, 1))
                .and_then(|how| self.get(1, Shape::Item, how, caller, out)),
            "get_acked" => self
                .plain_only(method)
                .and_then(|()| a(1, 3))
                .and_then(|()| Blocking::from_params(p, 1))
                .and_then(|how| self.get(1, Shape::Receipted, how, caller, out)),
            "get_nowait" => {
                a(1, 1).and_then(|()| self.get(1, Shape::Item, Blocking::NOWAIT, caller, out))
            }
            "get_many" | "get_many_acked" => a(2, 4).and_then(|()| {
                let shape = if method == "get_many" {
                    Shape::Items
                } else {
                    self.plain_only(method)?;
                    Shape::ReceiptedItems
                };
                let max = usize::try_from(p.u64(1)?).unwrap_or(usize::MAX);
                if max == 0 {
                    return Err(CallError::value(format!("{method} takes at least 1 item")));
                }
                let how = Blocking::from_params(p, 2)?;
                self.get(max, shape, how, caller, out)
            }),
            "join" => a(1, 2).and_then(|()| self.join(p, caller, out)),
            _ => return None,
        })
    }

    /// The calls that never wait: state queries, `close`, `task_done`.
    fn quick_call(
        &self,
        method: &str,
        p: &Params,
        caller: &Caller<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), CallError> {
        if method == "ack" || method == "nack" {
            self.plain_only(method)?;
            arity(p, self.kind, method, 2, 2)?;
            self.settle(p.u64(1)?, method == "nack")?;
            encode::nil(out);
            return Ok(());
        }
        arity(p, self.kind, method, 1, 1)?;
        let read = |f: fn(&State) -> bool| self.state.read(f);
        match method {
            "qsize" => encode::uint(out, self.state.read(|st| st.items.len() as u64)?),
            "empty" => encode::bool(out, read(|st| st.items.is_empty())?),
            "full" => encode::bool(
                out,
                read(|st| st.maxsize > 0 && st.items.len() >= st.maxsize)?,
            ),
            "maxsize" => encode::uint(out, self.state.read(|st| st.maxsize as u64)?),
            "is_closed" => encode::bool(out, read(|st| st.closed)?),
            "close" => {
                self.close()?;
                encode::nil(out);
            }
            "task_done" => {
                self.task_done(caller)?;
                encode::nil(out);
            }
            _ => return Err(unknown_method(self.kind, method)),
        }
        Ok(())
    }
}

impl SharedObject for Queue {
    fn kind(&self) -> Kind {
        self.kind
    }

    fn call(
        &self,
        method: &str,
        p: &Params,
        caller: &Caller<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        if let Some(result) = self.blocking_call(method, p, caller, out) {
            return result;
        }
        self.quick_call(method, p, caller, out)
            .map(|()| Outcome::Done)
    }

    parking_events!(state);
}
