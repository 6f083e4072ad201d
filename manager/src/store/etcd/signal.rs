//! `event` and `barrier` in etcd: a key each, and watches.
//!
//! # Event (keys under `P o/ID/`)
//! - `set`: present while the event is set. `set` puts it, `clear` deletes it; `wait` reads
//!   it and, when absent, watches it from the revision of its read for a put, so that a `set`
//!   through any manager wakes every waiter (a `set` then `clear` between two reads still wakes
//!   them: the watch sees the put).
//!
//! # Barrier (keys under `P o/ID/`)
//! - `state`: `GEN ARRIVED BROKEN PASSED`, changed only by compare-and-swap on its revision.
//!   GEN counts the barrier's rounds (completed or reset), ARRIVED the parties waiting in the
//!   current round, BROKEN whether it is broken, PASSED the rounds that completed.
//! - `p/P`: waiting party P is there (value: its round), on its manager's lease, held by its
//!   connection.
//!
//! A party's arrival is one transaction: it takes index ARRIVED and counts itself; the last
//! party of a round instead starts the next (GEN + 1, ARRIVED 0, PASSED = GEN + 1) and goes on
//! at once. The others watch `state` from their arrival's revision: they go on with their index
//! when their round passed, and fail with `BrokenBarrierError` when it was broken (`abort`, a
//! party's timeout or its connection closing) or reset (GEN moved on without PASSED). A party
//! whose timeout passes breaks the barrier, as in Python; so does a party whose `p/` key goes
//! while it waits (its connection closed, or its manager's lease expired): the others watch
//! those keys and break the round when fewer parties are present than arrived.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, EventType, GetOptions, TxnOp};

use agora_proto::{params, CallError, ErrorName, Params};

use crate::lifecycle::{timeout_param, Caller, Grant, Reply, SessionId};
use crate::objects::{arity, expected, unknown_method, Kind};

use super::waits::{self, changed, deadline, Boxed, Cancel, Engine, Front, Seen, Step, Watch};
use super::EtcdStore;

/// Most times one call tries again when other callers keep winning the race.
const MAX_RETRIES: usize = 10_000;

/// An event in etcd, as one manager serves it.
pub struct Event {
    store: Arc<EtcdStore>,
    object: Vec<u8>,
    meta: Vec<u8>,
    set: Vec<u8>,
}

/// A parsed event call.
pub enum EventOp {
    /// `set` (true) or `clear` (false).
    Set(bool),
    /// `is_set`.
    IsSet,
    /// `wait`, with its timeout.
    Wait(Option<Duration>),
}

impl Event {
    /// The local handle of event `id`; a new event starts cleared (no keys).
    pub fn build(store: &Arc<EtcdStore>, id: u64, init: &Params) -> super::Built {
        if !init.is_empty() {
            return Err(init_count("an event", 0, 0, init.len()));
        }
        let event = Event {
            store: store.clone(),
            object: store.object_key(id, ""),
            meta: store.object_key(id, "meta"),
            set: store.object_key(id, "set"),
        };
        Ok((Front::start(Kind::Event, event), Vec::new()))
    }

    async fn set(&self, flag: bool) -> Reply {
        let op = if flag {
            TxnOp::put(self.set.clone(), "1", None)
        } else {
            TxnOp::delete(self.set.clone(), None)
        };
        let when = vec![Compare::version(self.meta.clone(), CompareOp::Greater, 0)];
        let done = self
            .store
            .txn("setting an event", when, vec![op], Vec::new())
            .await?;
        if done.succeeded {
            Ok(Grant::Nil)
        } else {
            Err(waits::deleted())
        }
    }

    /// Whether the event is set, and the revision read.
    async fn read(&self) -> Result<(bool, i64), CallError> {
        let count = || Some(GetOptions::new().with_count_only());
        let ops = vec![
            TxnOp::get(self.meta.clone(), count()),
            TxnOp::get(self.set.clone(), count()),
        ];
        let answer = self.store.read("reading an event", ops).await?;
        let counts = counts(&answer);
        if counts.first().is_none_or(|n| *n == 0) {
            return Err(waits::deleted());
        }
        Ok((counts.get(1).is_some_and(|n| *n > 0), answer.revision))
    }

    async fn wait(self: Arc<Self>, timeout: Option<Duration>) -> Step {
        let from = match self.read().await {
            Err(e) => return Step::Done(Err(e)),
            Ok((set, _)) if set || timeout.is_some_and(|t| t.is_zero()) => {
                return Step::Done(Ok(Grant::Bool(set)))
            }
            Ok((_, at)) => at,
        };
        let until = deadline(timeout);
        let (set, meta) = (self.set.clone(), self.meta.clone());
        let wakes = move |event: EventType, key: &[u8]| match event {
            EventType::Put => key == set.as_slice(),
            EventType::Delete => key == meta.as_slice(),
        };
        Step::Wait(Box::new(move |mut cancel| {
            Box::pin(async move {
                let watch = Watch {
                    prefix: self.object.clone(),
                    after: from,
                    deadline: until,
                    wanted: wakes,
                };
                match changed(self.store.client(), watch, &mut cancel).await? {
                    Seen::TimedOut => Ok(Grant::Bool(false)),
                    Seen::Cancelled => Err(waits::gone()),
                    // The event was set after the read (even if cleared since), unless the
                    // object went.
                    Seen::Changed => self.read().await.map(|_| Grant::Bool(true)),
                }
            })
        }))
    }
}

impl Engine for Event {
    type Op = EventOp;

    fn parse(&self, method: &str, p: &Params, _: &Caller<'_>) -> Result<EventOp, CallError> {
        let a = |min, max| arity(p, Kind::Event, method, min, max);
        match method {
            "set" | "clear" => a(1, 1).map(|()| EventOp::Set(method == "set")),
            "is_set" => a(1, 1).map(|()| EventOp::IsSet),
            "wait" => {
                a(1, 2)?;
                Ok(EventOp::Wait(timeout_param(p, 1)?))
            }
            _ => Err(unknown_method(Kind::Event, method)),
        }
    }

    fn first(self: Arc<Self>, op: EventOp) -> Boxed<Step> {
        Box::pin(async move {
            match op {
                EventOp::Set(flag) => Step::Done(self.set(flag).await),
                EventOp::IsSet => Step::Done(self.read().await.map(|(set, _)| Grant::Bool(set))),
                EventOp::Wait(timeout) => self.wait(timeout).await,
            }
        })
    }
}

/// A barrier in etcd, as one manager serves it.
pub struct Barrier {
    store: Arc<EtcdStore>,
    parties: u64,
    default_timeout: Option<Duration>,
    object: Vec<u8>,
    state: Vec<u8>,
    /// `p/`: one key per waiting party, on its manager's lease.
    present: Vec<u8>,
}

/// A waiting party's presence key, held by its connection.
pub struct Presence {
    key: Vec<u8>,
    session: SessionId,
}

/// A parsed barrier call.
pub enum BarrierOp {
    /// `wait`, with its timeout and the key that says the party is there.
    Wait(Option<Duration>, Presence),
    /// `abort` (true) or `reset` (false).
    Break(bool),
    /// `parties`.
    Parties,
    /// `n_waiting`.
    Waiting,
    /// `broken`.
    Broken,
}

/// A waiting party: its round, its index in it, and its deadline.
struct Party {
    generation: u64,
    index: u64,
    until: Option<tokio::time::Instant>,
}

/// The barrier's state key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct State {
    generation: u64,
    arrived: u64,
    broken: bool,
    passed: u64,
}

impl State {
    fn encode(&self) -> String {
        format!(
            "{} {} {} {}",
            self.generation,
            self.arrived,
            u8::from(self.broken),
            self.passed
        )
    }

    fn decode(raw: &[u8]) -> Option<State> {
        let text = std::str::from_utf8(raw).ok()?;
        let mut parts = text.split(' ').map(|p| p.parse::<u64>().ok());
        let mut next = || parts.next().flatten();
        let state = State {
            generation: next()?,
            arrived: next()?,
            broken: next()? != 0,
            passed: next()?,
        };
        Some(state)
    }

    /// What a party of round `generation` with `index` is answered, or `None` while it waits.
    fn outcome(&self, generation: u64, index: u64) -> Option<Reply> {
        if self.generation == generation {
            return self.broken.then(|| Err(broken()));
        }
        Some(if self.passed > generation {
            Ok(Grant::Count(index))
        } else {
            Err(broken())
        })
    }
}

fn broken() -> CallError {
    CallError::new(ErrorName::BrokenBarrierError, "the barrier is broken")
}

fn busy() -> CallError {
    CallError::runtime("the barrier changed through other managers on every try; try again")
}

impl Barrier {
    /// The local handle of barrier `id` (init args `[parties]` or `[parties, timeout]`), and
    /// for a new one its state key.
    pub fn build(store: &Arc<EtcdStore>, id: u64, init: &Params) -> super::Built {
        if !(1..=2).contains(&init.len()) {
            return Err(init_count("a barrier", 1, 2, init.len()));
        }
        let raw = init.raw(0);
        let parties = match params::int_i64(raw) {
            Some(n) if n >= 1 => n as u64,
            Some(_) => return Err(CallError::value("parties must be > 0")),
            None => return Err(expected("an int", 2, raw)),
        };
        let default_timeout = match init.opt(1) {
            None => None,
            Some(raw) => {
                let secs = crate::objects::typecode::number(raw)
                    .filter(|s| *s >= 0.0)
                    .ok_or_else(|| CallError::value("timeout must be a non-negative number"))?;
                Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
            }
        };
        let state = store.object_key(id, "state");
        let initial = vec![TxnOp::put(state.clone(), State::default().encode(), None)];
        let barrier = Barrier {
            store: store.clone(),
            parties,
            default_timeout,
            object: store.object_key(id, ""),
            state,
            present: store.object_key(id, "p/"),
        };
        Ok((Front::start(Kind::Barrier, barrier), initial))
    }

    /// The state and its revision.
    async fn read(&self) -> Result<(State, i64), CallError> {
        let got = self
            .store
            .get("reading a barrier", self.state.clone(), None)
            .await?;
        let kv = got.kvs().first().ok_or_else(waits::deleted)?;
        let state = State::decode(kv.value())
            .ok_or_else(|| CallError::runtime("a barrier's state in etcd is corrupt"))?;
        Ok((state, kv.mod_revision()))
    }

    /// Changes the state with `change` (which may answer without changing it) until the swap
    /// wins; returns the answer and the revision of the write (or of the read when nothing
    /// was written).
    async fn swap<T>(
        &self,
        change: impl Fn(State) -> Result<(Option<State>, T), CallError>,
    ) -> Result<(T, i64), CallError> {
        self.swap_with(change, |_| Vec::new()).await
    }

    /// [`Barrier::swap`], writing what `also` says for the new state in the same transaction.
    async fn swap_with<T>(
        &self,
        change: impl Fn(State) -> Result<(Option<State>, T), CallError>,
        also: impl Fn(&State) -> Vec<TxnOp>,
    ) -> Result<(T, i64), CallError> {
        for _ in 0..MAX_RETRIES {
            let (state, revision) = self.read().await?;
            let (new, answer) = change(state)?;
            let Some(new) = new else {
                return Ok((answer, revision));
            };
            let mut ops = vec![TxnOp::put(self.state.clone(), new.encode(), None)];
            ops.extend(also(&new));
            let when = vec![Compare::mod_revision(
                self.state.clone(),
                CompareOp::Equal,
                revision,
            )];
            let done = self
                .store
                .txn("changing a barrier", when, ops, Vec::new())
                .await?;
            if done.succeeded {
                return Ok((answer, done.revision));
            }
        }
        Err(busy())
    }

    async fn wait(self: Arc<Self>, timeout: Option<Duration>, presence: Presence) -> Step {
        let parties = self.parties;
        // A party that waits says so with its presence key, written with its arrival.
        let present = |new: &State| {
            if new.arrived == 0 {
                return Vec::new();
            }
            let value = new.generation.to_string();
            vec![TxnOp::put(
                presence.key.clone(),
                value,
                Some(self.store.held()),
            )]
        };
        let arrival = self
            .swap_with(
                |st| {
                    if st.broken {
                        return Err(broken());
                    }
                    let index = st.arrived;
                    if index + 1 < parties {
                        let next = State {
                            arrived: index + 1,
                            ..st
                        };
                        return Ok((Some(next), (st.generation, index, false)));
                    }
                    // The last party: the round is complete, and everybody in it goes.
                    let next = State {
                        generation: st.generation + 1,
                        arrived: 0,
                        broken: false,
                        passed: st.generation + 1,
                    };
                    Ok((Some(next), (st.generation, index, true)))
                },
                present,
            )
            .await;
        let ((generation, index, last), from) = match arrival {
            Err(e) => {
                self.leave(presence);
                return Step::Done(Err(e));
            }
            Ok(arrived) => arrived,
        };
        if last {
            self.leave(presence);
            return Step::Done(Ok(Grant::Count(index)));
        }
        let until = deadline(timeout.or(self.default_timeout));
        Step::Wait(Box::new(move |mut cancel| {
            Box::pin(async move {
                let party = Party {
                    generation,
                    index,
                    until,
                };
                let answer = self.await_round(party, from, &mut cancel).await;
                self.leave(presence);
                answer
            })
        }))
    }

    /// The party is no longer there: its presence key goes.
    fn leave(&self, presence: Presence) {
        let store = self.store.clone();
        tokio::spawn(async move {
            let left = store
                .delete_key("leaving a barrier", presence.key.clone())
                .await;
            match left {
                Ok(_) => store.untrack(presence.session, &presence.key),
                Err(e) => tracing::warn!(
                    error = %e.message,
                    "a barrier party's key stays until its connection closes"
                ),
            }
        });
    }

    /// The state, its revision, and how many parties of round `generation` are present.
    async fn read_round(&self, generation: u64) -> Result<(State, i64, u64), CallError> {
        let ops = vec![
            TxnOp::get(self.state.clone(), None),
            TxnOp::get(self.present.clone(), Some(GetOptions::new().with_prefix())),
        ];
        let answer = self.store.read("reading a barrier", ops).await?;
        let gets: Vec<_> = answer
            .responses
            .iter()
            .flatten()
            .filter_map(|r| match r {
                etcd_client::TxnOpResponse::Get(g) => Some(g.clone()),
                _ => None,
            })
            .collect();
        let kv = gets
            .first()
            .and_then(|g| g.kvs().first())
            .ok_or_else(waits::deleted)?;
        let state = State::decode(kv.value())
            .ok_or_else(|| CallError::runtime("a barrier's state in etcd is corrupt"))?;
        let round = generation.to_string();
        let present = gets.get(1).map_or(0, |g| {
            g.kvs()
                .iter()
                .filter(|kv| kv.value() == round.as_bytes())
                .count()
        });
        Ok((state, kv.mod_revision(), present as u64))
    }

    /// Waits for the party's round to pass (or break). At its deadline, or when its connection
    /// goes, the party breaks the round for everybody, as in memory.
    async fn await_round(&self, party: Party, mut from: i64, cancel: &mut Cancel) -> Reply {
        loop {
            let (state, present) = (self.state.clone(), self.present.clone());
            let watch = Watch {
                prefix: self.object.clone(),
                after: from,
                deadline: party.until,
                wanted: move |event: EventType, key: &[u8]| match event {
                    EventType::Put => key == state.as_slice(),
                    EventType::Delete => key == state.as_slice() || key.starts_with(&present),
                },
            };
            match changed(self.store.client(), watch, cancel).await? {
                Seen::Changed => {}
                Seen::TimedOut => {
                    let answer = self.break_round(party.generation).await?;
                    return answer.map_or(Err(broken()), |a| a(party.index));
                }
                Seen::Cancelled => {
                    self.break_round(party.generation).await?;
                    return Err(waits::gone());
                }
            }
            let (state, revision, present) = self.read_round(party.generation).await?;
            if let Some(answer) = state.outcome(party.generation, party.index) {
                return answer;
            }
            if present < state.arrived {
                // A waiting party's key went without it leaving: its connection closed or its
                // manager died. It breaks the barrier, as a party that leaves does in memory.
                let answer = self.break_round(party.generation).await?;
                return answer.map_or(Err(broken()), |a| a(party.index));
            }
            from = revision;
        }
    }

    /// Breaks round `generation` if it still waits. When it passed or broke meanwhile, returns
    /// how its parties are answered instead.
    async fn break_round(&self, generation: u64) -> Result<Option<fn(u64) -> Reply>, CallError> {
        let (answer, _) = self
            .swap(|st| {
                if st.generation != generation || st.broken {
                    let passed = st.generation != generation && st.passed > generation;
                    let answer: fn(u64) -> Reply = if passed {
                        |index| Ok(Grant::Count(index))
                    } else {
                        |_| Err(broken())
                    };
                    return Ok((None, Some(answer)));
                }
                let next = State {
                    arrived: 0,
                    broken: true,
                    ..st
                };
                Ok((Some(next), None))
            })
            .await?;
        Ok(answer)
    }

    /// `abort` (it stays broken) or `reset` (a fresh round): every waiting party is told the
    /// barrier broke.
    async fn break_all(&self, stay_broken: bool) -> Reply {
        self.swap(|st| {
            let next = if stay_broken {
                State {
                    arrived: 0,
                    broken: true,
                    ..st
                }
            } else {
                State {
                    generation: st.generation + 1,
                    arrived: 0,
                    broken: false,
                    passed: st.passed,
                }
            };
            Ok((Some(next), ()))
        })
        .await?;
        Ok(Grant::Nil)
    }
}

impl Engine for Barrier {
    type Op = BarrierOp;

    fn parse(&self, method: &str, p: &Params, caller: &Caller<'_>) -> Result<BarrierOp, CallError> {
        let a = |min, max| arity(p, Kind::Barrier, method, min, max);
        if method == "wait" {
            a(1, 2)?;
            let timeout = timeout_param(p, 1)?;
            let mut key = self.present.clone();
            key.extend_from_slice(format!("{:016x}", presence_id()?).as_bytes());
            self.store.track(caller, key.clone());
            let session = caller.session;
            return Ok(BarrierOp::Wait(timeout, Presence { key, session }));
        }
        a(1, 1)?;
        Ok(match method {
            "abort" => BarrierOp::Break(true),
            "reset" => BarrierOp::Break(false),
            "parties" => BarrierOp::Parties,
            "n_waiting" => BarrierOp::Waiting,
            "broken" => BarrierOp::Broken,
            _ => return Err(unknown_method(Kind::Barrier, method)),
        })
    }

    fn first(self: Arc<Self>, op: BarrierOp) -> Boxed<Step> {
        Box::pin(async move {
            let read = |f: fn(State) -> Grant| {
                let this = self.clone();
                async move { this.read().await.map(|(s, _)| f(s)) }
            };
            match op {
                BarrierOp::Wait(timeout, presence) => self.clone().wait(timeout, presence).await,
                BarrierOp::Break(stay) => Step::Done(self.break_all(stay).await),
                BarrierOp::Parties => Step::Done(Ok(Grant::Count(self.parties))),
                BarrierOp::Waiting => Step::Done(read(|s| Grant::Count(s.arrived)).await),
                BarrierOp::Broken => Step::Done(read(|s| Grant::Bool(s.broken)).await),
            }
        })
    }
}

/// The counts of a transaction's count-only reads, in order.
fn counts(answer: &super::Applied) -> Vec<i64> {
    answer
        .responses
        .iter()
        .flatten()
        .filter_map(|r| match r {
            etcd_client::TxnOpResponse::Get(g) => Some(g.count()),
            _ => None,
        })
        .collect()
}

/// The error for a `create` with the wrong number of init args, as the memory kinds word it.
fn init_count(what: &str, min: usize, max: usize, got: usize) -> CallError {
    CallError::new(
        ErrorName::ArgumentCountError,
        format!("create of {what} takes {min} to {max} init args, got {got}"),
    )
}

/// A random name for a waiting party's key.
fn presence_id() -> Result<u64, CallError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|e| CallError::runtime(format!("no randomness for a barrier party's key: {e}")))?;
    Ok(u64::from_le_bytes(bytes))
}
