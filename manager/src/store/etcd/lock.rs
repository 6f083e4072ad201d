//! The locks and semaphores in etcd (lock, rlock, semaphore, bounded_semaphore), after etcd's
//! concurrency recipes: a key per waiter, on the lease of the manager it waits through, whose
//! creation revision is its place in one line that every manager shares.
//!
//! # Keys
//! Under the object's prefix `P o/ID/`:
//! - `state`: `base owned depth holder` (no lease). `base` is the permits the object would
//!   have free if nobody held one (a lock's is always 1; a semaphore's moves with unowned
//!   acquires and releases); `owned` counts the holding keys granted and not released, so that
//!   holding keys gone without a release are the owner-died notice; `holder` and `depth` name
//!   a lock's holder (lease/connection/thread) and an rlock's recursion depth.
//! - `w/LEASE-N`: one per waiting acquire, on its manager's lease, valued its owner.
//! - `p/LEASE-N`: one per holding (an owned semaphore permit; every lock holding), valued its
//!   owner: on the lease when owned, so that its connection's close or its manager's death
//!   deletes it; without a lease when unowned (Python's semantics: it stays until someone
//!   releases it).
//!
//! The permits free are `base - #p`. A waiter is granted when it is among the first `free`
//! keys of the line (FIFO across managers, no barging): one transaction, guarded by the state
//! key's revision, deletes its waiter key, puts its holding key and rewrites the state. A
//! waiter that cannot be granted watches the object's prefix from the revision it read, so no
//! release, death or departure ahead of it is missed, and looks again on each change.
//!
//! # Owner death
//! A holding key deleted with its connection or its lease leaves `owned` above the number of
//! holding keys: the next grant sees the difference, answers the owner-died notice (2) and
//! settles the count, as the memory store tells the next acquirer.
//!
//! Conditions (the module `condition`) wait on these locks' keys.
//!
//! # Fencing tokens
//! A lock's token is its holding key's creation revision: unique, and increasing from one
//! grant to the next through every manager of the store.

use std::sync::{Arc, Weak};

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, KeyValue, SortOrder, SortTarget, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::warn;

use agora_proto::{encode, CallError, ErrorName, Params};

use crate::lifecycle::{
    blocking_params, next_waiter_id, Caller, Grant, Holder, Outcome, Owner, Reply, SessionId, View,
    WaiterId,
};
use crate::objects::{self, arity, unknown_method, Kind, SharedObject, Stored};

use super::waits::{hand_over, Cancels, Parks};
use super::{timed, EtcdStore};

mod condition;

pub use condition::Cond;

/// Most times a call reads the object again because another manager changed it meanwhile.
const MAX_RETRIES: usize = 1000;

/// A lock, rlock or semaphore kept in etcd, as one manager serves it.
pub struct Permits {
    shared: Arc<Shared>,
    calls: mpsc::UnboundedSender<Call>,
    this: Weak<Permits>,
}

/// What the object and its tasks share.
struct Shared {
    store: Arc<EtcdStore>,
    kind: Kind,
    /// A semaphore's initial value (a bounded one's ceiling); 1 for a lock.
    initial: u64,
    /// The `owned` option given at creation, which every acquire follows.
    policy: Option<bool>,
    keys: Keys,
    /// The cancel signal of each waiting acquire, by waiter.
    cancels: Cancels,
}

/// The object's keys.
struct Keys {
    all: Vec<u8>,
    state: Vec<u8>,
    waiters: Vec<u8>,
    holdings: Vec<u8>,
}

/// One call, checked, for the object's task.
struct Call {
    op: Op,
    holder: Holder,
    reply: oneshot::Sender<Reply>,
}

/// The calls the task runs.
enum Op {
    Acquire(Acquire),
    Release {
        owner: Owner,
        n: u64,
    },
    Locked,
    GetValue,
    Token {
        owner: Owner,
    },
    /// A grant that never reached its connection: release what it gave.
    GiveBack {
        session: SessionId,
        owned: bool,
    },
}

/// An acquire as its waiter keeps it.
struct Acquire {
    owner: Owner,
    owned: bool,
    blocking: bool,
    deadline: Option<Instant>,
    waiter: WaiterId,
    cancel: Option<oneshot::Receiver<()>>,
    /// A condition waiter taking the lock back: its depth, and whether it was notified.
    resume: Option<Resume>,
}

/// What a condition waiter restores when it holds the lock again.
#[derive(Debug, Clone, Copy)]
struct Resume {
    depth: u64,
    notified: bool,
}

/// The state key, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    base: u64,
    owned: u64,
    depth: u64,
    holder: String,
}

impl State {
    fn encode(&self) -> String {
        format!(
            "{} {} {} {}",
            self.base, self.owned, self.depth, self.holder
        )
    }

    fn decode(raw: &[u8]) -> Option<State> {
        let text = std::str::from_utf8(raw).ok()?;
        let mut parts = text.splitn(4, ' ');
        Some(State {
            base: parts.next()?.parse().ok()?,
            owned: parts.next()?.parse().ok()?,
            depth: parts.next()?.parse().ok()?,
            holder: parts.next()?.to_owned(),
        })
    }
}

/// The object as one read saw it.
struct Snapshot {
    revision: i64,
    state: State,
    state_revision: i64,
    holdings: Vec<KeyValue>,
    /// The waiter keys, oldest first.
    waiters: Vec<Vec<u8>>,
}

impl Snapshot {
    fn free(&self) -> u64 {
        self.state.base.saturating_sub(self.holdings.len() as u64)
    }

    /// Holding keys granted and gone without a release: their owners died.
    fn dead(&self) -> bool {
        self.state.owned > self.holdings.len() as u64
    }

    fn holding_of(&self, me: &str) -> Option<&KeyValue> {
        self.holdings.iter().find(|kv| kv.value() == me.as_bytes())
    }
}

impl Permits {
    /// The local handle of lock or semaphore `id`, and for a new one its state key.
    pub fn build(store: &Arc<EtcdStore>, id: u64, kind: Kind, init: &Params) -> super::Built {
        let (initial, policy) = match kind {
            Kind::Lock | Kind::RLock => (1, objects::lock::Lock::policy(kind, init)?),
            _ => {
                let memory = objects::semaphore::Semaphore::from_init(kind, init)?;
                (memory.initial(), memory.policy())
            }
        };
        let shared = Shared::new(store, id, kind, initial, policy);
        let initial_keys = vec![shared.initial_state()];
        let (calls, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(shared.clone(), rx));
        let permits = Arc::new_cyclic(|this| Permits {
            shared,
            calls,
            this: this.clone(),
        });
        Ok((permits, initial_keys))
    }

    fn is_lock(&self) -> bool {
        matches!(self.shared.kind, Kind::Lock | Kind::RLock)
    }

    /// Checks a call's params as the memory store does, into the op the task runs.
    fn check(
        &self,
        method: &str,
        p: &Params,
        caller: &Caller<'_>,
    ) -> Result<(Op, Option<WaiterId>), CallError> {
        let kind = self.shared.kind;
        let a = |min, max| arity(p, kind, method, min, max);
        Ok(match (method, self.is_lock()) {
            ("acquire", lock) => {
                a(1, if lock { 5 } else { 4 })?;
                let (blocking, timeout) = blocking_params(p)?;
                let (owner, asked) = if lock {
                    (caller.owner(p, 3)?, p.opt_bool(4)?)
                } else {
                    (whole(caller), p.opt_bool(3)?)
                };
                let default = kind != Kind::Semaphore;
                let owned = self.shared.policy.or(asked).unwrap_or(default);
                let (waiter, cancel) = self.shared.cancels.register();
                let acquire = Acquire {
                    owner,
                    owned,
                    blocking,
                    // A timeout too far away to represent is no deadline at all.
                    deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
                    waiter,
                    cancel: Some(cancel),
                    resume: None,
                };
                (Op::Acquire(acquire), Some(waiter))
            }
            ("release", true) => {
                a(1, 2)?;
                let owner = caller.owner(p, 1)?;
                (Op::Release { owner, n: 1 }, None)
            }
            ("release", false) => {
                a(1, 2)?;
                let n = p.opt(1).map(|_| p.u64(1)).transpose()?.unwrap_or(1);
                if n == 0 {
                    return Err(CallError::value("n must be one or more"));
                }
                let owner = whole(caller);
                (Op::Release { owner, n }, None)
            }
            ("locked", true) => {
                a(1, 1)?;
                (Op::Locked, None)
            }
            ("token", true) => {
                a(1, 2)?;
                let owner = caller.owner(p, 1)?;
                (Op::Token { owner }, None)
            }
            ("get_value", false) => {
                a(1, 1)?;
                (Op::GetValue, None)
            }
            _ => return Err(unknown_method(kind, method)),
        })
    }
}

impl SharedObject for Permits {
    fn kind(&self) -> Kind {
        self.shared.kind
    }

    fn call(
        &self,
        method: &str,
        params: &Params,
        caller: &Caller<'_>,
        _out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let (op, waiter) = self.check(method, params, caller)?;
        let holder = caller.holder();
        let call = |reply| Call { op, holder, reply };
        // The task enforces the acquire's timeout itself: it alone knows whether the waiter
        // left the line.
        let registered = waiter.map(|w| (w, &self.shared.cancels));
        hand_over(&self.this, &self.calls, call, registered)
    }

    fn view(&self) -> View {
        View::default()
    }
}

impl Parks for Permits {
    fn cancels(&self) -> Option<&Cancels> {
        Some(&self.shared.cancels)
    }

    fn give_back(&self, grant: Grant, to: &Holder) {
        let Some(op) = give_back_op(grant, to) else {
            return;
        };
        let (reply, _) = oneshot::channel();
        let call = Call {
            op,
            holder: to.clone(),
            reply,
        };
        send_give_back(&self.calls, call);
    }
}

/// The op that releases what an undelivered `grant` gave `to`'s session; none for a grant
/// that gave nothing.
fn give_back_op(grant: Grant, to: &Holder) -> Option<Op> {
    let owned = match grant {
        Grant::Acquired { owned, .. } => owned,
        // A condition waiter that took the lock back.
        Grant::Bool(_) => true,
        _ => return None,
    };
    Some(Op::GiveBack {
        session: to.session,
        owned,
    })
}

/// Hands the call that gives back an undelivered grant to the object's task.
fn send_give_back<C>(calls: &mpsc::UnboundedSender<C>, call: C) {
    if calls.send(call).is_err() {
        warn!("a grant that was not delivered could not be given back: the object is gone");
    }
}

/// The object's task: runs its calls in arrival order; an acquire that must wait waits in a
/// task of its own, so the calls behind it go on.
async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Call>) {
    while let Some(call) = rx.recv().await {
        serve(&shared, call).await;
    }
}

/// Runs one call in order (an acquire's waiting part goes to a task of its own).
async fn serve(shared: &Arc<Shared>, call: Call) {
    let Call { op, holder, reply } = call;
    let answer = match op {
        // A connection that has left joins no line: it would only be granted what its close
        // must then give back.
        Op::Acquire(acquire) if holder.holdings.departed() => {
            shared.cancels.forget(acquire.waiter);
            Err(super::waits::gone())
        }
        Op::Acquire(acquire) => match shared.start_acquire(acquire, &holder).await {
            Started::Done(answer) => answer,
            Started::Waiting(waiting) => {
                tokio::spawn(shared.clone().wait(waiting, holder, reply));
                return;
            }
        },
        Op::Release { owner, n } => shared.release(owner, n, &holder).await.map(|()| nil()),
        Op::Locked => shared.locked().await,
        Op::GetValue => shared.get_value().await,
        Op::Token { owner } => shared.token(owner).await,
        Op::GiveBack { session, owned } => {
            shared.give_back(session, owned).await;
            return;
        }
    };
    shared.answer(reply, &holder, answer).await;
}

/// How the ordered part of an acquire ended.
enum Started {
    Done(Reply),
    Waiting(Waiting),
}

/// An acquire in line, for its waiting task.
struct Waiting {
    acquire: Acquire,
    key: Vec<u8>,
    /// The revision the line was last read at: the watch starts after it.
    revision: i64,
}

/// A semaphore's caller: its connection (permits are counted per connection, not thread).
fn whole(caller: &Caller<'_>) -> Owner {
    Owner {
        session: caller.session,
        thread: 0,
    }
}

fn nil() -> Grant {
    let mut out = Vec::new();
    encode::nil(&mut out);
    Grant::Item(Stored::new(out.into_boxed_slice()))
}

fn item(write: impl FnOnce(&mut Vec<u8>)) -> Grant {
    let mut out = Vec::new();
    write(&mut out);
    Grant::Item(Stored::new(out.into_boxed_slice()))
}

fn deleted() -> CallError {
    CallError::new(
        ErrorName::UnknownObjectError,
        "the object was deleted (through this or another manager)",
    )
}

fn busy() -> CallError {
    CallError::runtime("the object changed through other managers on every try; try again")
}

impl Shared {
    /// The lock or semaphore `id` (whose keys are under `P o/ID/`).
    fn new(
        store: &Arc<EtcdStore>,
        id: u64,
        kind: Kind,
        initial: u64,
        policy: Option<bool>,
    ) -> Arc<Shared> {
        let keys = Keys {
            all: store.object_key(id, ""),
            state: store.object_key(id, "state"),
            waiters: store.object_key(id, "w/"),
            holdings: store.object_key(id, "p/"),
        };
        Arc::new(Shared {
            store: store.clone(),
            kind,
            initial,
            policy,
            keys,
            cancels: Cancels::default(),
        })
    }

    /// The state key of a new object.
    fn initial_state(&self) -> TxnOp {
        let state = State {
            base: self.initial,
            ..State::default()
        };
        TxnOp::put(self.keys.state.clone(), state.encode(), None)
    }

    fn is_lock(&self) -> bool {
        matches!(self.kind, Kind::Lock | Kind::RLock)
    }

    /// The owner as every manager knows it: this manager's lease, the connection, the thread.
    fn identity(&self, owner: Owner) -> String {
        format!(
            "{:x}/{}/{}",
            self.store.lease(),
            owner.session,
            owner.thread
        )
    }

    /// The prefix of every identity of one connection of this manager.
    fn session_prefix(&self, session: SessionId) -> String {
        format!("{:x}/{}/", self.store.lease(), session)
    }

    /// A key name no other manager or call uses.
    fn unique(&self, under: &[u8]) -> Vec<u8> {
        let mut key = under.to_vec();
        key.extend_from_slice(
            format!("{:x}-{:x}", self.store.lease(), next_waiter_id()).as_bytes(),
        );
        key
    }

    /// The holding key a grant of waiter `key` puts: the same name under `p/`, so that a
    /// departing waiter can delete what a grant it never heard of made.
    fn holding_key(&self, key: &[u8]) -> Vec<u8> {
        let mut hkey = self.keys.holdings.clone();
        hkey.extend_from_slice(&key[self.keys.waiters.len().min(key.len())..]);
        hkey
    }

    /// Sends an answer; a grant nobody will read is given back at once.
    async fn answer(&self, reply: oneshot::Sender<Reply>, holder: &Holder, answer: Reply) {
        match reply.send(answer) {
            Err(Ok(Grant::Acquired { owned, .. })) => self.give_back(holder.session, owned).await,
            // A condition waiter's grant of the lock.
            Err(Ok(Grant::Bool(_))) => self.give_back(holder.session, true).await,
            _ => {}
        }
    }

    /// Reads the state, the holding keys and the line in one consistent read.
    async fn snapshot(&self) -> Result<Snapshot, CallError> {
        let answer = self
            .store
            .read_txn(
                "reading a lock",
                Vec::new(),
                self.snapshot_ops(),
                Vec::new(),
            )
            .await?;
        self.parse_snapshot(answer.revision, answer.responses.unwrap_or_default())
    }

    fn snapshot_ops(&self) -> Vec<TxnOp> {
        let line = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_sort(SortTarget::Create, SortOrder::Ascend);
        vec![
            TxnOp::get(self.keys.state.clone(), None),
            TxnOp::get(
                self.keys.holdings.clone(),
                Some(GetOptions::new().with_prefix()),
            ),
            TxnOp::get(self.keys.waiters.clone(), Some(line)),
        ]
    }

    fn parse_snapshot(
        &self,
        revision: i64,
        responses: Vec<TxnOpResponse>,
    ) -> Result<Snapshot, CallError> {
        let mut gets = responses.into_iter().filter_map(|r| match r {
            TxnOpResponse::Get(mut get) => Some(get.take_kvs()),
            _ => None,
        });
        let (Some(state), Some(holdings), Some(line)) = (gets.next(), gets.next(), gets.next())
        else {
            return Err(CallError::runtime(
                "etcd answered a read of a lock incompletely",
            ));
        };
        let state_kv = state.first().ok_or_else(deleted)?;
        let decoded = State::decode(state_kv.value())
            .ok_or_else(|| CallError::runtime("a lock's state in etcd is corrupt"))?;
        Ok(Snapshot {
            revision,
            state: decoded,
            state_revision: state_kv.mod_revision(),
            holdings,
            waiters: line.into_iter().map(|kv| kv.key().to_vec()).collect(),
        })
    }

    /// The ordered part of an acquire: an rlock's holder re-enters; anyone else joins the line
    /// and is granted if first, answered not-acquired if it may not wait, or waits.
    async fn start_acquire(&self, acquire: Acquire, holder: &Holder) -> Started {
        if self.kind == Kind::RLock && acquire.resume.is_none() {
            match self.reenter(acquire.owner).await {
                Ok(false) => {}
                Ok(true) => {
                    self.cancels.forget(acquire.waiter);
                    return Started::Done(Ok(Grant::ACQUIRED));
                }
                Err(e) => {
                    self.cancels.forget(acquire.waiter);
                    return Started::Done(Err(e));
                }
            }
        }
        let key = self.unique(&self.keys.waiters);
        let me = self.identity(acquire.owner);
        let mut ops = vec![TxnOp::put(key.clone(), me, Some(self.store.held()))];
        ops.extend(self.snapshot_ops());
        let joined = self
            .store
            .txn("joining a lock's line", Vec::new(), ops, Vec::new())
            .await;
        let snapshot = match joined {
            Ok(answer) => match answer.responses {
                Some(responses) => self.parse_snapshot(answer.revision, responses),
                // Joined, but the read that went with it was lost: read again.
                None => self.snapshot().await,
            },
            Err(e) => Err(e),
        };
        // Tracked at once: if the connection closes now, its close deletes the key.
        self.store.track(&holder.as_caller(), key.clone());
        let snapshot = match snapshot {
            Ok(s) => s,
            Err(e) => {
                self.leave(&key, holder.session).await;
                self.cancels.forget(acquire.waiter);
                return Started::Done(Err(e));
            }
        };
        match self.try_grant(&acquire, &key, holder, snapshot).await {
            Ok(Tried::Granted(grant)) => {
                self.cancels.forget(acquire.waiter);
                Started::Done(Ok(grant))
            }
            Ok(Tried::Wait(revision)) if acquire.blocking => Started::Waiting(Waiting {
                acquire,
                key,
                revision,
            }),
            Ok(Tried::Wait(_)) => {
                self.leave(&key, holder.session).await;
                self.cancels.forget(acquire.waiter);
                Started::Done(Ok(Grant::NotAcquired))
            }
            Err(e) => {
                self.leave(&key, holder.session).await;
                self.cancels.forget(acquire.waiter);
                Started::Done(Err(e))
            }
        }
    }

    /// An rlock acquire by its holder: one level more. True when it was.
    async fn reenter(&self, owner: Owner) -> Result<bool, CallError> {
        let me = self.identity(owner);
        for _ in 0..MAX_RETRIES {
            let snapshot = self.snapshot().await?;
            if snapshot.state.holder != me || snapshot.holding_of(&me).is_none() {
                return Ok(false);
            }
            let mut state = snapshot.state.clone();
            state.depth = state.depth.saturating_add(1);
            if self.put_state(&snapshot, &state, Vec::new()).await? {
                return Ok(true);
            }
        }
        Err(busy())
    }

    /// Writes `state` and `ops` if the state is still the one `snapshot` read.
    async fn put_state(
        &self,
        snapshot: &Snapshot,
        state: &State,
        mut ops: Vec<TxnOp>,
    ) -> Result<bool, CallError> {
        ops.push(TxnOp::put(self.keys.state.clone(), state.encode(), None));
        let when = vec![Compare::mod_revision(
            self.keys.state.clone(),
            CompareOp::Equal,
            snapshot.state_revision,
        )];
        let answer = self
            .store
            .txn("changing a lock", when, ops, Vec::new())
            .await?;
        Ok(answer.succeeded)
    }

    /// Takes waiter `key` out of the line, with any holding a grant whose answer was lost
    /// made for it.
    async fn leave(&self, key: &[u8], session: SessionId) {
        let hkey = self.holding_key(key);
        let ops = vec![
            TxnOp::delete(key.to_vec(), None),
            TxnOp::delete(hkey.clone(), None),
        ];
        self.store.untrack(session, &hkey);
        let left = self
            .store
            .txn("leaving a lock's line", Vec::new(), ops, Vec::new())
            .await;
        if let Err(e) = left {
            warn!(error = %e.message, "a waiter key was not deleted; it goes with its connection or the lease");
            return;
        }
        self.store.untrack(session, key);
    }

    /// Grants the acquire if its key is among the first `free` of the line, retrying on the
    /// snapshots other managers' changes bring; else the revision to watch from.
    async fn try_grant(
        &self,
        acquire: &Acquire,
        key: &[u8],
        holder: &Holder,
        mut snapshot: Snapshot,
    ) -> Result<Tried, CallError> {
        for _ in 0..MAX_RETRIES {
            let Some(place) = snapshot.waiters.iter().position(|w| w == key) else {
                return Err(CallError::runtime(
                    "the acquire's place in line was deleted from etcd (the manager's lease \
                     may have expired); the lock was not acquired",
                ));
            };
            if place as u64 >= snapshot.free() {
                return Ok(Tried::Wait(snapshot.revision));
            }
            if let Some(grant) = self.grant(acquire, key, holder, &snapshot).await? {
                return Ok(Tried::Granted(grant));
            }
            snapshot = self.snapshot().await?;
        }
        Err(busy())
    }

    /// One try at the grant transaction; `None` when the object changed meanwhile.
    async fn grant(
        &self,
        acquire: &Acquire,
        key: &[u8],
        holder: &Holder,
        snapshot: &Snapshot,
    ) -> Result<Option<Grant>, CallError> {
        let me = self.identity(acquire.owner);
        let mut state = snapshot.state.clone();
        // The dead holdings are told now: only the holding keys that live stay counted. A
        // condition waiter's answer is whether it was notified: it leaves the notice to the
        // next plain acquire.
        let owner_died = acquire.resume.is_none() && snapshot.dead();
        if acquire.resume.is_none() {
            state.owned = snapshot.holdings.len() as u64;
        }
        let mut ops = vec![TxnOp::delete(key.to_vec(), None)];
        let mut holding = None;
        if self.is_lock() || acquire.owned {
            let hkey = self.holding_key(key);
            let lease = acquire.owned.then(|| self.store.held());
            ops.push(TxnOp::put(hkey.clone(), me.clone(), lease));
            state.owned += 1;
            holding = Some(hkey);
        } else {
            state.base -= 1;
        }
        if self.is_lock() {
            state.holder = me;
            state.depth = acquire.resume.map_or(1, |r| r.depth);
        }
        let when = vec![
            Compare::mod_revision(
                self.keys.state.clone(),
                CompareOp::Equal,
                snapshot.state_revision,
            ),
            Compare::version(key.to_vec(), CompareOp::Greater, 0),
        ];
        ops.push(TxnOp::put(self.keys.state.clone(), state.encode(), None));
        let answer = self
            .store
            .txn("granting a lock", when, ops, Vec::new())
            .await?;
        if !answer.succeeded {
            return Ok(None);
        }
        self.store.untrack(holder.session, key);
        if let (Some(hkey), true) = (holding, acquire.owned) {
            self.store.track(&holder.as_caller(), hkey);
        }
        Ok(Some(match acquire.resume {
            Some(r) => Grant::Bool(r.notified),
            None => Grant::Acquired {
                owner_died,
                owned: acquire.owned,
            },
        }))
    }

    /// The waiting part of an acquire: watches the object from the revision it read, looks
    /// again on every change that may let it through, until granted, timed out or cancelled.
    async fn wait(
        self: Arc<Self>,
        waiting: Waiting,
        holder: Holder,
        reply: oneshot::Sender<Reply>,
    ) {
        let Waiting {
            mut acquire,
            key,
            revision,
        } = waiting;
        let cancel = acquire.cancel.take();
        let ended = self
            .wait_in_line(&acquire, &key, &holder, revision, cancel)
            .await;
        self.cancels.forget(acquire.waiter);
        match ended {
            Ok(Ended::Granted(grant)) => self.answer(reply, &holder, Ok(grant)).await,
            other => {
                // Timed out, cancelled or failed: out of the line, leaving no key behind.
                self.leave(&key, holder.session).await;
                let _ = reply.send(other.map(|_| Grant::NotAcquired));
            }
        }
    }

    /// Waits in line. The deadline and the cancel are heeded only between looks at the line,
    /// never during a grant, so that a grant etcd made is never lost by the waiter.
    async fn wait_in_line(
        &self,
        acquire: &Acquire,
        key: &[u8],
        holder: &Holder,
        mut revision: i64,
        cancel: Option<oneshot::Receiver<()>>,
    ) -> Result<Ended, CallError> {
        let deadline = acquire.deadline;
        let timeout = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let cancelled = async move {
            match cancel {
                // Sent or dropped: either way nobody waits for this acquire any more.
                Some(rx) => {
                    let _ = rx.await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(timeout, cancelled);
        // A watch that fails (its member died) is made again through another member, from the
        // revision last read, for as long as etcd may take to fail over.
        let mut failed_watches = 0u32;
        loop {
            let mut client = self.store.client();
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(revision + 1);
            let watch = timed(
                "watching a lock",
                client.watch(self.keys.all.clone(), Some(options)),
            );
            let made = tokio::select! {
                watch = watch => watch,
                () = &mut timeout => return Ok(Ended::TimedOut),
                () = &mut cancelled => return Ok(Ended::Cancelled),
            };
            let (_watcher, mut stream) = match made {
                Ok(made) => made,
                Err(e) if failed_watches >= super::MAX_FAILED_WATCHES => return Err(e),
                Err(_) => {
                    failed_watches += 1;
                    tokio::time::sleep(super::WATCH_RETRY).await;
                    continue;
                }
            };
            loop {
                let message = tokio::select! {
                    m = stream.message() => m,
                    () = &mut timeout => return Ok(Ended::TimedOut),
                    () = &mut cancelled => return Ok(Ended::Cancelled),
                };
                // An error or the end of the watch: start another from the last revision read.
                let Ok(Some(message)) = message else {
                    break;
                };
                if message.canceled() {
                    break;
                }
                if !message.events().iter().any(|e| self.may_let_through(e)) {
                    continue;
                }
                let snapshot = self.snapshot().await?;
                match self.try_grant(acquire, key, holder, snapshot).await? {
                    Tried::Granted(grant) => return Ok(Ended::Granted(grant)),
                    Tried::Wait(read) => revision = revision.max(read),
                }
            }
            // Read again before watching again: what changed in between is seen.
            let snapshot = self.snapshot().await?;
            match self.try_grant(acquire, key, holder, snapshot).await? {
                Tried::Granted(grant) => return Ok(Ended::Granted(grant)),
                Tried::Wait(read) => revision = read,
            }
        }
    }

    /// Whether an event can free a place: anything but a newcomer joining the line.
    fn may_let_through(&self, event: &etcd_client::Event) -> bool {
        let joined = event.event_type() == EventType::Put
            && event
                .kv()
                .is_some_and(|kv| kv.key().starts_with(&self.keys.waiters));
        !joined
    }

    /// `release`: a lock by anyone (an rlock by its holder) one level; `n` permits of a
    /// semaphore, the caller's own first.
    ///
    /// A connection that has left is served no release, as the memory store settles a
    /// departed connection: its close has already released what it held, and a release it
    /// sent before it was killed, run now, would release the next holder's lock or permit.
    /// The check comes after each read of the object: a close marks the connection departed
    /// before it deletes its keys, so a release that finds it still here read the object
    /// before that deletion, and its write, guarded by the state it read, cannot reach a
    /// grant made since.
    async fn release(&self, owner: Owner, n: u64, holder: &Holder) -> Result<(), CallError> {
        for _ in 0..MAX_RETRIES {
            let snapshot = self.snapshot().await?;
            if holder.holdings.departed() {
                return Err(super::waits::gone());
            }
            let done = if self.is_lock() {
                self.release_lock(owner, &snapshot).await?
            } else {
                self.release_permits(owner.session, n, &snapshot).await?
            };
            if done {
                return Ok(());
            }
        }
        Err(busy())
    }

    async fn release_lock(&self, owner: Owner, snapshot: &Snapshot) -> Result<bool, CallError> {
        let me = self.identity(owner);
        let holding = match self.kind {
            Kind::RLock if snapshot.state.holder == me => snapshot.holding_of(&me),
            Kind::RLock => None,
            _ => snapshot.holdings.first(),
        };
        let Some(holding) = holding else {
            return Err(CallError::runtime(if self.kind == Kind::RLock {
                "cannot release un-acquired lock"
            } else {
                "release unlocked lock"
            }));
        };
        let mut state = snapshot.state.clone();
        let mut ops = Vec::new();
        if self.kind == Kind::RLock && state.depth > 1 {
            state.depth -= 1;
        } else {
            ops.push(TxnOp::delete(holding.key().to_vec(), None));
            state.owned = state.owned.saturating_sub(1);
            state.depth = 0;
            state.holder.clear();
        }
        let key = holding.key().to_vec();
        let value = holding.value().to_vec();
        let done = self.put_state(snapshot, &state, ops).await?;
        if done && state.depth == 0 {
            self.untrack_holding(&key, &value);
        }
        Ok(done)
    }

    async fn release_permits(
        &self,
        session: SessionId,
        n: u64,
        snapshot: &Snapshot,
    ) -> Result<bool, CallError> {
        let free = snapshot.free();
        let after = free.checked_add(n).ok_or_else(|| {
            CallError::overflow(format!(
                "releasing {n} permits would take the value past {}",
                u64::MAX
            ))
        })?;
        if self.kind == Kind::BoundedSemaphore && after > self.initial {
            return Err(CallError::value("Semaphore released too many times"));
        }
        // The caller's own permits first, then other holders' (forgotten, so that a later
        // death does not return them twice); the rest raises the base.
        let mine = self.session_prefix(session);
        let (own, others): (Vec<&KeyValue>, Vec<&KeyValue>) = snapshot
            .holdings
            .iter()
            .partition(|kv| kv.value().starts_with(mine.as_bytes()));
        let taken: Vec<&KeyValue> = own
            .into_iter()
            .chain(others)
            .take(usize::try_from(n).unwrap_or(usize::MAX))
            .collect();
        let mut state = snapshot.state.clone();
        let rest = n - taken.len() as u64;
        state.base = state.base.checked_add(rest).ok_or_else(|| {
            CallError::overflow(format!(
                "releasing {n} permits would take the value past {}",
                u64::MAX
            ))
        })?;
        state.owned = state.owned.saturating_sub(taken.len() as u64);
        let ops = taken
            .iter()
            .map(|kv| TxnOp::delete(kv.key().to_vec(), None))
            .collect();
        let done = self.put_state(snapshot, &state, ops).await?;
        if done {
            for kv in taken {
                self.untrack_holding(kv.key(), kv.value());
            }
        }
        Ok(done)
    }

    /// A released holding key is no longer its connection's, when that connection is here.
    fn untrack_holding(&self, key: &[u8], owner: &[u8]) {
        let lease = format!("{:x}/", self.store.lease());
        let Some(rest) = owner.strip_prefix(lease.as_bytes()) else {
            return;
        };
        let session = std::str::from_utf8(rest)
            .ok()
            .and_then(|r| r.split('/').next())
            .and_then(|s| s.parse::<SessionId>().ok());
        if let Some(session) = session {
            self.store.untrack(session, key);
        }
    }

    async fn locked(&self) -> Reply {
        let snapshot = self.snapshot().await?;
        Ok(item(|out| encode::bool(out, !snapshot.holdings.is_empty())))
    }

    async fn get_value(&self) -> Reply {
        let snapshot = self.snapshot().await?;
        Ok(item(|out| encode::uint(out, snapshot.free())))
    }

    /// `token`: the caller's holding's fencing token, its key's creation revision.
    async fn token(&self, owner: Owner) -> Reply {
        let snapshot = self.snapshot().await?;
        let me = self.identity(owner);
        let Some(holding) = snapshot.holding_of(&me) else {
            return Err(CallError::runtime(
                "cannot get a fencing token: the lock is not held by the caller",
            ));
        };
        let token = u64::try_from(holding.create_revision()).unwrap_or(0);
        Ok(item(|out| encode::uint(out, token)))
    }

    /// Gives back a grant its connection never saw: the holding it made is released, without
    /// the owner-died notice (nothing the connection did can depend on it).
    async fn give_back(&self, session: SessionId, owned: bool) {
        for _ in 0..MAX_RETRIES {
            match self.give_back_once(session, owned).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    warn!(error = %e.message, "a grant that was not delivered was not given back");
                    return;
                }
            }
        }
    }

    async fn give_back_once(&self, session: SessionId, owned: bool) -> Result<bool, CallError> {
        let snapshot = self.snapshot().await?;
        let mine = self.session_prefix(session);
        let holding = snapshot
            .holdings
            .iter()
            .find(|kv| kv.value().starts_with(mine.as_bytes()));
        let mut state = snapshot.state.clone();
        let mut ops = Vec::new();
        match holding {
            Some(kv) if self.is_lock() || owned => {
                ops.push(TxnOp::delete(kv.key().to_vec(), None));
                state.owned = state.owned.saturating_sub(1);
                if self.is_lock() {
                    state.depth = 0;
                    state.holder.clear();
                }
            }
            // Already released with its connection: nothing comes back twice.
            None if self.is_lock() || owned => return Ok(true),
            _ => state.base = state.base.saturating_add(1),
        }
        let done = self.put_state(&snapshot, &state, ops).await?;
        if let (true, Some(kv)) = (done, holding) {
            self.untrack_holding(kv.key(), kv.value());
        }
        Ok(done)
    }
}

/// How a wait in line ended.
enum Ended {
    Granted(Grant),
    TimedOut,
    Cancelled,
}

/// What one look at the line found.
enum Tried {
    Granted(Grant),
    /// Not yet: the revision the line was read at.
    Wait(i64),
}
