//! What the etcd kinds whose calls wait (queues, events, barriers) share: a front that parks
//! every call and keeps one connection's calls in order, and a watch that wakes a waiter when
//! what it waits for changed.
//!
//! Each object has one task per manager that runs its calls in arrival order. A call's
//! non-waiting part (a put that fits, a get that finds an item, a barrier arrival) runs in that
//! task; when the call must wait, its waiting part runs in a task of its own, so that it never
//! holds up the calls behind it. A waiting part enforces the call's timeout itself and stops
//! when its connection goes (the front keeps a cancel signal per waiter).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use etcd_client::{Client, EventType, WatchOptions};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use agora_proto::{CallError, ErrorName, Params};

use crate::lifecycle::{
    next_waiter_id, Caller, Grant, Holder, Outcome, Park, Reply, View, Waitable, WaiterId,
};
use crate::objects::{Kind, SharedObject};

use super::timed;

/// A boxed future, as the kinds hand their steps to the front.
pub type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a call's in-order part decided.
pub enum Step {
    /// The call is answered.
    Done(Reply),
    /// The call waits: `wait` answers it; `on_abandon` runs instead if its connection goes
    /// first (a barrier party that leaves breaks the barrier).
    Wait {
        /// The waiting part.
        wait: Boxed<Reply>,
        /// What leaving early must undo.
        on_abandon: Option<Boxed<()>>,
    },
}

/// One kind's calls against etcd.
pub trait Engine: Send + Sync + 'static {
    /// A parsed call.
    type Op: Send + 'static;
    /// Checks a call's params at once (errors are answered without parking).
    fn parse(&self, method: &str, p: &Params) -> Result<Self::Op, CallError>;
    /// Runs the call's in-order part.
    fn first(self: Arc<Self>, op: Self::Op) -> Boxed<Step>;
    /// A grant its connection never received: give back what it took.
    fn undeliver(self: Arc<Self>, _grant: Grant) {}
}

/// A call waiting for its object's task.
struct Job<Op> {
    op: Op,
    reply: oneshot::Sender<Reply>,
    cancel: oneshot::Receiver<()>,
    waiter: WaiterId,
}

/// An etcd object of a waiting kind, as one manager serves it.
pub struct Front<E: Engine> {
    kind: Kind,
    engine: Arc<E>,
    jobs: mpsc::UnboundedSender<Job<E::Op>>,
    /// The cancel signal of every call in flight, by waiter.
    cancels: Arc<Mutex<HashMap<WaiterId, oneshot::Sender<()>>>>,
    this: Weak<Front<E>>,
}

impl<E: Engine> Front<E> {
    /// The front of `engine`, with its task started.
    pub fn start(kind: Kind, engine: E) -> Arc<Front<E>> {
        let (jobs, rx) = mpsc::unbounded_channel();
        let engine = Arc::new(engine);
        let front = Arc::new_cyclic(|this| Front {
            kind,
            engine: engine.clone(),
            jobs,
            cancels: Arc::default(),
            this: this.clone(),
        });
        tokio::spawn(run(engine, rx, front.cancels.clone()));
        front
    }
}

/// The object's task: each call's in-order part, in arrival order.
async fn run<E: Engine>(
    engine: Arc<E>,
    mut rx: mpsc::UnboundedReceiver<Job<E::Op>>,
    cancels: Arc<Mutex<HashMap<WaiterId, oneshot::Sender<()>>>>,
) {
    while let Some(job) = rx.recv().await {
        match engine.clone().first(job.op).await {
            Step::Done(reply) => {
                cancels.lock().remove(&job.waiter);
                deliver(&engine, job.reply, reply);
            }
            Step::Wait { wait, on_abandon } => {
                let (engine, cancels) = (engine.clone(), cancels.clone());
                let (reply, cancel, waiter) = (job.reply, job.cancel, job.waiter);
                tokio::spawn(async move {
                    tokio::select! {
                        answer = wait => deliver(&engine, reply, answer),
                        _ = cancel => if let Some(undo) = on_abandon { undo.await },
                    }
                    cancels.lock().remove(&waiter);
                });
            }
        }
    }
}

/// Sends a call's answer; one its connection can no longer take is given back.
fn deliver<E: Engine>(engine: &Arc<E>, to: oneshot::Sender<Reply>, reply: Reply) {
    if let Err(Ok(grant)) = to.send(reply) {
        engine.clone().undeliver(grant);
    }
}

impl<E: Engine> SharedObject for Front<E> {
    fn kind(&self) -> Kind {
        self.kind
    }

    fn call(
        &self,
        method: &str,
        params: &Params,
        _caller: &Caller<'_>,
        _out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let op = self.engine.parse(method, params)?;
        let this: Arc<dyn Waitable> = self.this.upgrade().ok_or_else(deleted)?;
        let (reply, rx) = oneshot::channel();
        let (cancel_tx, cancel) = oneshot::channel();
        let waiter = next_waiter_id();
        self.cancels.lock().insert(waiter, cancel_tx);
        let job = Job {
            op,
            reply,
            cancel,
            waiter,
        };
        if self.jobs.send(job).is_err() {
            self.cancels.lock().remove(&waiter);
            return Err(deleted());
        }
        Ok(Outcome::Parked(Park::new(rx, waiter, this, None)))
    }

    fn view(&self) -> View {
        View::default()
    }
}

impl<E: Engine> Waitable for Front<E> {
    // The waiting part enforces the call's own timeout: there is no deadline to expire here.
    fn expire(&self, _waiter: WaiterId) -> Option<Reply> {
        None
    }

    fn abandon(&self, waiter: WaiterId) {
        if let Some(cancel) = self.cancels.lock().remove(&waiter) {
            let _ = cancel.send(());
        }
    }

    fn undeliver(&self, grant: Grant, _to: &Holder) {
        self.engine.clone().undeliver(grant);
    }
}

/// The error for a call on an object deleted through this or another manager.
pub fn deleted() -> CallError {
    CallError::new(
        ErrorName::UnknownObjectError,
        "the object was deleted (through this or another manager)",
    )
}

/// What a watch saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Some key under the watched prefix changed (after the revision read): read again.
    Changed,
    /// The deadline passed first.
    TimedOut,
}

/// Waits until a key under `prefix` is put or deleted after revision `after` (so that nothing
/// that happened since the caller's read is missed), or `deadline` passes. Only events that
/// `wanted` accepts (by type and key) count.
pub async fn changed(
    mut client: Client,
    prefix: Vec<u8>,
    after: i64,
    deadline: Option<Instant>,
    wanted: impl Fn(EventType, &[u8]) -> bool,
) -> Result<Seen, CallError> {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(after + 1);
    let (_watcher, mut stream) = timed("watching", client.watch(prefix, Some(options))).await?;
    loop {
        let next = stream.message();
        let message = match deadline {
            Some(at) => match tokio::time::timeout_at(at, next).await {
                Ok(m) => m,
                Err(_) => return Ok(Seen::TimedOut),
            },
            None => next.await,
        };
        let message = message
            .map_err(|e| super::failed("watching", e))?
            .ok_or_else(|| super::failed("watching", "the watch ended"))?;
        if message.canceled() {
            // Compacted past `after` (or refused): what changed is unknown, so read again.
            return Ok(Seen::Changed);
        }
        let hit = message
            .events()
            .iter()
            .any(|e| e.kv().is_some_and(|kv| wanted(e.event_type(), kv.key())));
        if hit {
            return Ok(Seen::Changed);
        }
    }
}

/// The deadline `timeout` from now; none for no timeout (or one too far away to represent).
pub fn deadline(timeout: Option<std::time::Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}
