//! `condition` in etcd: wait and notify over a lock kept as [`super`] keeps it.
//!
//! A condition has its own rlock (its keys under the condition's own prefix) or shares the
//! keys of an existing `lock` or `rlock`. Its waiters are keys `P o/CID/c/LEASE-N` on their
//! manager's lease. `wait` releases every level of the lock and puts its key in one
//! transaction, then watches its key from that revision: `notify(n)` deletes the `n` oldest
//! keys. A woken (or timed-out) waiter then joins the lock's line as any acquirer does and
//! answers only once it holds the lock again, at the depth it released, as Python's
//! `Condition.wait` does: true when notified, false after its timeout.

use std::sync::{Arc, Weak};

use etcd_client::{Compare, CompareOp, EventType, GetOptions, SortOrder, SortTarget, TxnOp};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::warn;

use agora_proto::{params, CallError, ErrorName, Params};

use crate::lifecycle::{
    blocking_params, timeout_param, Caller, Grant, Holder, Outcome, Owner, Reply, View, WaiterId,
};
use crate::objects::{arity, unknown_method, Args, Kind, SharedObject};

use super::super::waits::{hand_over, Cancels, Parks};
use super::{
    busy, give_back_op, nil, send_give_back, serve, timed, Acquire, Call, EtcdStore, Op, Resume,
    Shared, Started, MAX_RETRIES,
};

/// A condition kept in etcd, as one manager serves it.
pub struct Cond {
    calls: mpsc::UnboundedSender<CondCall>,
    /// The cancel signal of each waiting call, by waiter.
    cancels: Cancels,
    this: Weak<Cond>,
}

/// One call, checked, for the condition's task.
struct CondCall {
    op: CondOp,
    holder: Holder,
    reply: oneshot::Sender<Reply>,
}

enum CondOp {
    /// A call of the lock's.
    Lock(Op),
    Wait(WaitCall),
    Notify {
        owner: Owner,
        n: Option<u64>,
    },
}

struct WaitCall {
    owner: Owner,
    deadline: Option<Instant>,
    waiter: WaiterId,
    cancel: oneshot::Receiver<()>,
}

/// Which lock the condition is over.
enum Over {
    Ready(Arc<Shared>),
    /// Another object's, read from etcd on the first call.
    Object(u64),
}

/// The condition's task state.
struct Task {
    store: Arc<EtcdStore>,
    lock: Over,
    /// `P o/CID/c/`.
    waiters: Vec<u8>,
}

impl Cond {
    /// The local handle of condition `id`, and for a new one with a lock of its own, that
    /// lock's state key.
    pub fn build(store: &Arc<EtcdStore>, id: u64, init: &Params) -> super::super::Built {
        let args = Args::of(Kind::Condition, init);
        args.expect(0, 1)?;
        let (lock, initial) = match args.opt(0) {
            None => {
                let own = Shared::new(store, id, Kind::RLock, 1, None);
                let initial = vec![own.initial_state()];
                (Over::Ready(own), initial)
            }
            Some(raw) => {
                let lock = params::int_u64(raw).ok_or_else(|| {
                    CallError::type_error("a condition's lock must be given by its object id")
                })?;
                (Over::Object(lock), Vec::new())
            }
        };
        let task = Task {
            store: store.clone(),
            lock,
            waiters: store.object_key(id, "c/"),
        };
        let (calls, rx) = mpsc::unbounded_channel();
        tokio::spawn(task.run(rx));
        let cond = Arc::new_cyclic(|this| Cond {
            calls,
            cancels: Cancels::default(),
            this: this.clone(),
        });
        Ok((cond, initial))
    }

    fn check(
        &self,
        method: &str,
        p: &Params,
        caller: &Caller<'_>,
    ) -> Result<(CondOp, Option<WaiterId>), CallError> {
        let a = |min, max| arity(p, Kind::Condition, method, min, max);
        Ok(match method {
            "acquire" => {
                a(1, 5)?;
                let (blocking, timeout) = blocking_params(p)?;
                let owner = caller.owner(p, 3)?;
                let asked = p.opt_bool(4)?;
                let (waiter, cancel) = self.cancels.register();
                let acquire = Acquire {
                    owner,
                    // A condition over another lock follows that lock's policy: the task
                    // applies it once it knows the lock.
                    owned: asked.unwrap_or(true),
                    blocking,
                    deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
                    waiter,
                    cancel: Some(cancel),
                    resume: None,
                };
                (CondOp::Lock(Op::Acquire(acquire)), Some(waiter))
            }
            "release" => {
                a(1, 2)?;
                let owner = caller.owner(p, 1)?;
                (CondOp::Lock(Op::Release { owner, n: 1 }), None)
            }
            "locked" => {
                a(1, 1)?;
                (CondOp::Lock(Op::Locked), None)
            }
            "wait" => {
                a(1, 3)?;
                let timeout = timeout_param(p, 1)?;
                let owner = caller.owner(p, 2)?;
                let (waiter, cancel) = self.cancels.register();
                let wait = WaitCall {
                    owner,
                    deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
                    waiter,
                    cancel,
                };
                (CondOp::Wait(wait), Some(waiter))
            }
            "notify" => {
                a(1, 3)?;
                let n = p.opt(1).map(|_| p.u64(1)).transpose()?.unwrap_or(1);
                let owner = caller.owner(p, 2)?;
                (CondOp::Notify { owner, n: Some(n) }, None)
            }
            "notify_all" => {
                a(1, 2)?;
                let owner = caller.owner(p, 1)?;
                (CondOp::Notify { owner, n: None }, None)
            }
            _ => return Err(unknown_method(Kind::Condition, method)),
        })
    }
}

impl SharedObject for Cond {
    fn kind(&self) -> Kind {
        Kind::Condition
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
        let call = |reply| CondCall { op, holder, reply };
        let registered = waiter.map(|w| (w, &self.cancels));
        hand_over(&self.this, &self.calls, call, registered)
    }

    fn view(&self) -> View {
        View::default()
    }
}

impl Parks for Cond {
    fn cancels(&self) -> Option<&Cancels> {
        Some(&self.cancels)
    }

    fn give_back(&self, grant: Grant, to: &Holder) {
        let Some(op) = give_back_op(grant, to) else {
            return;
        };
        let (reply, _) = oneshot::channel();
        let call = CondCall {
            op: CondOp::Lock(op),
            holder: to.clone(),
            reply,
        };
        send_give_back(&self.calls, call);
    }
}

impl Task {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<CondCall>) {
        while let Some(CondCall { op, holder, reply }) = rx.recv().await {
            let lock = match self.lock().await {
                Ok(lock) => lock,
                Err(e) => {
                    let _ = reply.send(Err(e));
                    continue;
                }
            };
            match op {
                CondOp::Lock(mut op) => {
                    if let Op::Acquire(acquire) = &mut op {
                        acquire.owned = lock.policy.unwrap_or(acquire.owned);
                    }
                    serve(&lock, Call { op, holder, reply }).await;
                }
                CondOp::Wait(wait) => match self.start_wait(&lock, &wait, &holder).await {
                    Ok(released) => {
                        tokio::spawn(finish_wait(lock, released, wait, holder, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
                CondOp::Notify { owner, n } => {
                    let answer = self.notify(&lock, owner, n).await.map(|()| nil());
                    let _ = reply.send(answer);
                }
            }
        }
    }

    /// The lock, read from etcd the first time when it is another object's.
    async fn lock(&mut self) -> Result<Arc<Shared>, CallError> {
        let id = match &self.lock {
            Over::Ready(lock) => return Ok(lock.clone()),
            Over::Object(id) => *id,
        };
        let meta = self.store.meta(id).await?.ok_or_else(|| {
            CallError::new(
                ErrorName::UnknownObjectError,
                format!("the condition's lock {id} was deleted"),
            )
        })?;
        if !matches!(meta.kind, Kind::Lock | Kind::RLock) {
            return Err(CallError::type_error(format!(
                "object {id} is not a lock or an rlock"
            )));
        }
        let policy = crate::objects::lock::Lock::policy(meta.kind, &meta.init_params()?)?;
        let lock = Shared::new(&self.store, id, meta.kind, 1, policy);
        self.lock = Over::Ready(lock.clone());
        Ok(lock)
    }

    /// The ordered part of a wait: releases every level of the lock the caller holds and puts
    /// its waiter key, in one transaction.
    async fn start_wait(
        &self,
        lock: &Shared,
        wait: &WaitCall,
        holder: &Holder,
    ) -> Result<Released, CallError> {
        let me = lock.identity(wait.owner);
        for _ in 0..MAX_RETRIES {
            let snapshot = lock.snapshot().await?;
            let holding = (snapshot.state.holder == me)
                .then(|| snapshot.holding_of(&me))
                .flatten()
                .ok_or_else(|| CallError::runtime("cannot wait on un-acquired lock"))?;
            let mut state = snapshot.state.clone();
            let released = Released {
                key: lock.unique(&self.waiters),
                revision: 0,
                depth: state.depth.max(1),
                owned: holding.lease() != 0,
            };
            state.owned = state.owned.saturating_sub(1);
            state.depth = 0;
            state.holder.clear();
            let when = vec![Compare::mod_revision(
                lock.keys.state.clone(),
                CompareOp::Equal,
                snapshot.state_revision,
            )];
            let ops = vec![
                TxnOp::delete(holding.key().to_vec(), None),
                TxnOp::put(lock.keys.state.clone(), state.encode(), None),
                TxnOp::put(released.key.clone(), me.clone(), Some(lock.store.held())),
            ];
            let answer = lock
                .store
                .txn("waiting on a condition", when, ops, Vec::new())
                .await?;
            if answer.succeeded {
                lock.untrack_holding(holding.key(), holding.value());
                lock.store.track(&holder.as_caller(), released.key.clone());
                return Ok(Released {
                    revision: answer.revision,
                    ..released
                });
            }
        }
        Err(busy())
    }

    /// `notify`: deletes the `n` (all, for `notify_all`) oldest waiter keys.
    async fn notify(&self, lock: &Shared, owner: Owner, n: Option<u64>) -> Result<(), CallError> {
        let me = lock.identity(owner);
        let snapshot = lock.snapshot().await?;
        if snapshot.state.holder != me || snapshot.holding_of(&me).is_none() {
            return Err(CallError::runtime("cannot notify on un-acquired lock"));
        }
        let mut options = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_sort(SortTarget::Create, SortOrder::Ascend);
        if let Some(n) = n {
            options = options.with_limit(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let got = lock
            .store
            .get("notifying a condition", self.waiters.clone(), Some(options))
            .await?;
        let ops: Vec<TxnOp> = got
            .kvs()
            .iter()
            .map(|kv| TxnOp::delete(kv.key().to_vec(), None))
            .collect();
        if ops.is_empty() {
            return Ok(());
        }
        lock.store
            .txn("notifying a condition", Vec::new(), ops, Vec::new())
            .await?;
        Ok(())
    }
}

/// What a wait released, to restore when it takes the lock back.
struct Released {
    key: Vec<u8>,
    revision: i64,
    depth: u64,
    owned: bool,
}

/// The waiting part of a wait: until notified, timed out or cancelled; then the lock again.
async fn finish_wait(
    lock: Arc<Shared>,
    released: Released,
    wait: WaitCall,
    holder: Holder,
    reply: oneshot::Sender<Reply>,
) {
    let WaitCall {
        owner,
        deadline,
        waiter,
        mut cancel,
    } = wait;
    let notified = match notified(&lock, &released, deadline, &mut cancel).await {
        Ok(Some(notified)) => notified,
        ended => {
            // Cancelled, or etcd failed: no key left behind, the lock not taken back.
            let ops = vec![TxnOp::delete(released.key.clone(), None)];
            let left = lock
                .store
                .txn("leaving a condition", Vec::new(), ops, Vec::new())
                .await;
            if let Err(e) = left {
                warn!(error = %e.message, "a condition waiter key was not deleted; it goes with its connection or the lease");
            }
            lock.store.untrack(holder.session, &released.key);
            if let Err(e) = ended {
                let _ = reply.send(Err(e));
            }
            return;
        }
    };
    lock.store.untrack(holder.session, &released.key);
    let acquire = Acquire {
        owner,
        owned: released.owned,
        blocking: true,
        deadline: None,
        waiter,
        cancel: Some(cancel),
        resume: Some(Resume {
            depth: released.depth,
            notified,
        }),
    };
    match lock.start_acquire(acquire, &holder).await {
        Started::Done(answer) => lock.answer(reply, &holder, answer).await,
        Started::Waiting(waiting) => lock.clone().wait(waiting, holder, reply).await,
    }
}

/// Watches the waiter's key from the revision the wait put it at: `Some(true)` when a notify
/// deleted it, `Some(false)` when the deadline came first (the key is then deleted here; one
/// already gone was notified), `None` when cancelled.
async fn notified(
    lock: &Shared,
    released: &Released,
    deadline: Option<Instant>,
    cancel: &mut oneshot::Receiver<()>,
) -> Result<Option<bool>, CallError> {
    let timeout = async move {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timeout);
    let mut revision = released.revision;
    // A watch that fails (its member died) is made again through another member.
    let mut failed_watches = 0u32;
    loop {
        let options = etcd_client::WatchOptions::new().with_start_revision(revision + 1);
        let mut client = lock.store.client();
        let made = timed(
            "watching a condition",
            client.watch(released.key.clone(), Some(options)),
        )
        .await;
        let (_watcher, mut stream) = match made {
            Ok(made) => made,
            Err(e) if failed_watches >= super::super::MAX_FAILED_WATCHES => return Err(e),
            Err(_) => {
                failed_watches += 1;
                tokio::time::sleep(super::super::WATCH_RETRY).await;
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                m = stream.message() => m,
                () = &mut timeout => {
                    // Timed out, unless a notify deleted the key first: whoever deletes it
                    // decides.
                    let key = released.key.clone();
                    let when = vec![Compare::version(key.clone(), CompareOp::Greater, 0)];
                    let ops = vec![TxnOp::delete(key, None)];
                    let mine = lock
                        .store
                        .txn("leaving a condition", when, ops, Vec::new())
                        .await?;
                    return Ok(Some(!mine.succeeded));
                }
                _ = &mut *cancel => return Ok(None),
            };
            // An error or the end of the watch: look at the key, then watch again.
            let Ok(Some(message)) = message else { break };
            if message
                .events()
                .iter()
                .any(|e| e.event_type() == EventType::Delete)
            {
                return Ok(Some(true));
            }
            if message.canceled() {
                break;
            }
        }
        // The watch ended: is the key still there, and from when to watch again.
        let got = lock
            .store
            .get("watching a condition", released.key.clone(), None)
            .await?;
        if got.kvs().is_empty() {
            return Ok(Some(true));
        }
        revision = got.header().map_or(revision, |h| h.revision());
    }
}
