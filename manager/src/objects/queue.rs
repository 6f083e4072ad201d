//! `queue` and `joinable_queue`: FIFO queues with blocking, batched and closable puts and gets.
//!
//! Getters and putters wait in FIFO lines on the manager; every state change runs `State::pump`,
//! which moves waiting putters' items in while there is room and hands items to waiting getters
//! while there are items, so no wake-up is lost. An item handed to a getter whose connection is
//! gone goes back to the head of the queue: every item is delivered exactly once or stays.

use std::collections::VecDeque;

use parking_lot::Mutex;

use agora_proto::params::array_items;
use agora_proto::{encode, params, CallError, ErrorName, Params};

use crate::waiters::{
    timeout_param, Caller, Expired, Outcome, Park, Reply, SessionId, WaiterId, Waiters,
};

use super::{arity, expected, store, unknown_method, Args, Kind, SharedObject, Stored};

/// Waiter tags: what a parked call waits for.
const GET: u8 = 0;
const GET_MANY: u8 = 1;
const PUT: u8 = 2;
const PUT_MANY: u8 = 3;
const JOIN: u8 = 4;

/// A putter's items that did not fit yet.
#[derive(Debug)]
struct Putting {
    items: VecDeque<Stored>,
    done: usize,
    many: bool,
}

/// A getter: how many items it takes at most, and whether it wants an array.
#[derive(Debug, Clone, Copy)]
struct Getting {
    max: usize,
    many: bool,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Stored>,
    closed: bool,
    getters: Waiters<Getting>,
    putters: Waiters<Putting>,
    /// Items put and not yet marked done with `task_done`.
    unfinished: u64,
    joiners: Waiters<()>,
}

/// A shared queue (and, with `joinable`, a joinable queue).
#[derive(Debug)]
pub struct Queue {
    kind: Kind,
    maxsize: usize,
    state: Mutex<State>,
}

fn closed() -> CallError {
    CallError::new(ErrorName::Closed, "the queue is closed")
}

fn empty() -> CallError {
    CallError::new(ErrorName::Empty, "the queue is empty")
}

fn full() -> CallError {
    CallError::new(ErrorName::Full, "the queue is full")
}

/// Encodes what a getter receives: one item, or an array of items.
fn encode_items(items: Vec<Stored>, many: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.iter().map(|i| i.len()).sum::<usize>() + 5);
    if many {
        encode::array_header(&mut out, items.len());
    }
    items.iter().for_each(|i| out.extend_from_slice(i));
    out
}

impl State {
    fn room(&self, maxsize: usize) -> usize {
        if maxsize == 0 {
            usize::MAX
        } else {
            maxsize.saturating_sub(self.items.len())
        }
    }

    fn take(&mut self, max: usize) -> Vec<Stored> {
        let n = max.min(self.items.len());
        self.items.drain(..n).collect()
    }

    /// Puts items back at the head, in their order (a grant that was not delivered).
    fn restore(&mut self, items: Vec<Stored>) {
        for item in items.into_iter().rev() {
            self.items.push_front(item);
        }
    }

    /// Moves waiting putters' items in and hands items to waiting getters until neither can
    /// make progress; then wakes joiners if all work is done and fails getters of a closed,
    /// drained queue.
    fn pump(&mut self, maxsize: usize) {
        loop {
            let moved = self.admit_putters(maxsize);
            let served = self.serve_getters();
            if !moved && !served {
                break;
            }
        }
        if self.closed && self.items.is_empty() {
            self.getters.fail_all(&closed());
        }
        if self.unfinished == 0 {
            while let Some((_, w)) = self.joiners.pop() {
                let _ = w.reply.send(Ok(encode::TRUE.to_vec()));
            }
        }
    }

    fn admit_putters(&mut self, maxsize: usize) -> bool {
        let mut moved = false;
        loop {
            let room = self.room(maxsize);
            let Some(front) = self.putters.front_mut() else {
                return moved;
            };
            if room == 0 {
                return moved;
            }
            let n = room.min(front.data.items.len());
            let batch: Vec<Stored> = front.data.items.drain(..n).collect();
            front.data.done += n;
            let finished = front.data.items.is_empty();
            self.items.extend(batch);
            self.unfinished += n as u64;
            moved |= n > 0;
            if !finished {
                return moved;
            }
            if let Some((_, w)) = self.putters.pop() {
                let mut out = Vec::with_capacity(9);
                if w.data.many {
                    encode::uint(&mut out, w.data.done as u64);
                } else {
                    encode::nil(&mut out);
                }
                // A putter that is gone still put its items: nothing to undo.
                let _ = w.reply.send(Ok(out));
            }
        }
    }

    fn serve_getters(&mut self) -> bool {
        let mut served = false;
        while !self.items.is_empty() {
            let Some((_, w)) = self.getters.pop() else {
                break;
            };
            let items = self.take(w.data.max);
            let reply = Ok(encode_items(items.clone(), w.data.many));
            match w.reply.send(reply) {
                Ok(()) => served = true,
                // The getter's connection is gone: the items stay, for the next getter.
                Err(_) => self.restore(items),
            }
        }
        served
    }
}

impl Queue {
    /// A queue from `create`'s init args: `[]` or `[maxsize]` (0 or nil: unbounded).
    pub fn new(kind: Kind, args: &Args<'_>) -> Result<Queue, CallError> {
        args.expect(0, 1)?;
        let maxsize = match args.opt(0) {
            None => 0,
            Some(raw) => match params::int_i64(raw) {
                Some(n) if n <= 0 => 0,
                Some(n) => n as usize,
                None => return Err(expected("an int maxsize", 2, raw)),
            },
        };
        Ok(Queue {
            kind,
            maxsize,
            state: Mutex::new(State::default()),
        })
    }

    /// `put` / `put_many`: puts what fits now; the rest waits (blocking) or is refused.
    #[allow(clippy::too_many_arguments)]
    fn put(
        &self,
        st: &mut State,
        items: Vec<Stored>,
        many: bool,
        block: bool,
        timeout_at: usize,
        p: &Params,
        caller: &Caller,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let timeout = if block {
            timeout_param(p, timeout_at)?
        } else {
            None
        };
        if st.closed {
            return Err(closed());
        }
        let mut pending = Putting {
            items: items.into(),
            done: 0,
            many,
        };
        // Waiting putters go first: a new put never overtakes them.
        if st.putters.is_empty() {
            let n = st.room(self.maxsize).min(pending.items.len());
            st.items.extend(pending.items.drain(..n));
            st.unfinished += n as u64;
            pending.done = n;
            st.pump(self.maxsize);
        }
        if pending.items.is_empty() || (many && !block) {
            if many {
                encode::uint(out, pending.done as u64);
            } else {
                encode::nil(out);
            }
            return Ok(Outcome::Done);
        }
        if !block {
            return Err(full());
        }
        let tag = if many { PUT_MANY } else { PUT };
        let (id, rx) = st.putters.push(caller.session, pending);
        // Items handed straight to parked getters above may have made room for the rest.
        st.pump(self.maxsize);
        Ok(Outcome::Parked(Park::new(rx, id, tag, timeout)))
    }

    /// `get` / `get_many`: takes what is there; waits (blocking) when the queue is empty.
    fn get(
        &self,
        st: &mut State,
        want: Getting,
        block: bool,
        timeout: Option<std::time::Duration>,
        caller: &Caller,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        if !st.items.is_empty() {
            let items = st.take(want.max);
            st.pump(self.maxsize);
            out.extend_from_slice(&encode_items(items, want.many));
            return Ok(Outcome::Done);
        }
        if st.closed {
            return Err(closed());
        }
        if !block {
            return Err(empty());
        }
        let tag = if want.many { GET_MANY } else { GET };
        let (id, rx) = st.getters.push(caller.session, want);
        Ok(Outcome::Parked(Park::new(rx, id, tag, timeout)))
    }

    fn joinable_only(&self, method: &str) -> Result<(), CallError> {
        if self.kind == Kind::JoinableQueue {
            return Ok(());
        }
        Err(CallError::new(
            ErrorName::UnknownMethodError,
            format!("queue has no method {method:?}: task_done and join belong to joinable_queue"),
        ))
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
        caller: &Caller,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let a = |min, max| arity(p, self.kind, method, min, max);
        let mut st = self.state.lock();
        let st = &mut *st;
        match method {
            "put" => {
                a(2, 4)?;
                let block = p.bool_or(2, true)?;
                return self.put(st, vec![store(p.raw(1))], false, block, 3, p, caller, out);
            }
            "put_nowait" => {
                a(2, 2)?;
                return self.put(st, vec![store(p.raw(1))], false, false, 3, p, caller, out);
            }
            "put_many" => {
                a(2, 4)?;
                let items =
                    array_items(p.raw(1)).ok_or_else(|| expected("an array", 1, p.raw(1)))?;
                let items = items.into_iter().map(store).collect();
                let block = p.bool_or(2, true)?;
                return self.put(st, items, true, block, 3, p, caller, out);
            }
            "get" | "get_nowait" => {
                let nowait = method == "get_nowait";
                if nowait {
                    a(1, 1)?
                } else {
                    a(1, 3)?
                };
                let block = !nowait && p.bool_or(1, true)?;
                let timeout = if block { timeout_param(p, 2)? } else { None };
                let want = Getting {
                    max: 1,
                    many: false,
                };
                return self.get(st, want, block, timeout, caller, out);
            }
            "get_many" => {
                a(2, 4)?;
                let max = usize::try_from(p.u64(1)?).unwrap_or(usize::MAX);
                if max == 0 {
                    return Err(CallError::value("get_many takes at least 1 item"));
                }
                let block = p.bool_or(2, true)?;
                let timeout = if block { timeout_param(p, 3)? } else { None };
                return self.get(st, Getting { max, many: true }, block, timeout, caller, out);
            }
            "join" => {
                self.joinable_only(method)?;
                a(1, 2)?;
                let timeout = timeout_param(p, 1)?;
                if st.unfinished == 0 {
                    out.extend_from_slice(encode::TRUE);
                    return Ok(Outcome::Done);
                }
                let (id, rx) = st.joiners.push(caller.session, ());
                return Ok(Outcome::Parked(Park::new(rx, id, JOIN, timeout)));
            }
            _ => {}
        }
        match method {
            "qsize" => {
                a(1, 1)?;
                encode::uint(out, st.items.len() as u64);
            }
            "empty" => {
                a(1, 1)?;
                encode::bool(out, st.items.is_empty());
            }
            "full" => {
                a(1, 1)?;
                encode::bool(out, self.maxsize > 0 && st.items.len() >= self.maxsize);
            }
            "maxsize" => {
                a(1, 1)?;
                encode::uint(out, self.maxsize as u64);
            }
            "close" => {
                a(1, 1)?;
                st.closed = true;
                st.putters.fail_all(&closed());
                st.pump(self.maxsize);
                encode::nil(out);
            }
            "is_closed" => {
                a(1, 1)?;
                encode::bool(out, st.closed);
            }
            "task_done" => {
                self.joinable_only(method)?;
                a(1, 1)?;
                if st.unfinished == 0 {
                    return Err(CallError::value("task_done() called too many times"));
                }
                st.unfinished -= 1;
                st.pump(self.maxsize);
                encode::nil(out);
            }
            _ => return Err(unknown_method(self.kind, method)),
        }
        Ok(Outcome::Done)
    }

    fn expire(&self, waiter: WaiterId, tag: u8) -> Expired {
        let mut st = self.state.lock();
        let reply: Reply = match tag {
            GET | GET_MANY => match st.getters.remove(waiter) {
                Some(_) => Err(empty()),
                None => return Expired::Pending,
            },
            PUT => match st.putters.remove(waiter) {
                Some(_) => Err(full()),
                None => return Expired::Pending,
            },
            PUT_MANY => match st.putters.remove(waiter) {
                Some(w) => {
                    let mut out = Vec::with_capacity(9);
                    encode::uint(&mut out, w.data.done as u64);
                    Ok(out)
                }
                None => return Expired::Pending,
            },
            _ => match st.joiners.remove(waiter) {
                Some(_) => Ok(encode::FALSE.to_vec()),
                None => return Expired::Pending,
            },
        };
        // A putter that left may have been blocking the line behind it.
        st.pump(self.maxsize);
        Expired::Reply(reply)
    }

    fn abandon(&self, waiter: WaiterId, tag: u8) {
        let mut st = self.state.lock();
        match tag {
            GET | GET_MANY => drop(st.getters.remove(waiter)),
            PUT | PUT_MANY => {
                // The items already put stay; the rest are dropped with the putter.
                if st.putters.remove(waiter).is_some() {
                    st.pump(self.maxsize);
                }
            }
            _ => drop(st.joiners.remove(waiter)),
        }
    }

    fn undeliver(&self, _waiter: WaiterId, tag: u8, _session: SessionId, reply: Reply) {
        let Ok(bytes) = reply else { return };
        let items: Vec<Stored> = match tag {
            GET => vec![bytes.into()],
            GET_MANY => array_items(&bytes)
                .map(|items| items.into_iter().map(store).collect())
                .unwrap_or_default(),
            _ => return,
        };
        let mut st = self.state.lock();
        st.restore(items);
        st.pump(self.maxsize);
    }

    fn deleted(&self) {
        let mut st = self.state.lock();
        let err = CallError::new(ErrorName::UnknownObjectError, "the queue was deleted");
        st.getters.fail_all(&err);
        st.putters.fail_all(&err);
        st.joiners.fail_all(&err);
    }
}
