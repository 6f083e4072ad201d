//! What the etcd kinds whose calls wait (queues, events, barriers) share: a front that parks
//! every call and keeps one connection's calls in order, and a watch that wakes a waiter when
//! what it waits for changed.
//!
//! Each object has one task per manager that runs its calls in arrival order. A call's
//! non-waiting part (a put that fits, a get that finds an item, a barrier arrival) runs in that
//! task; when the call must wait, its waiting part runs in a task of its own, so that it never
//! holds up the calls behind it. A waiting part enforces the call's timeout itself and stops
//! when its connection goes (the front keeps a cancel signal per waiter).
//!
//! The other etcd kinds (values, locks, conditions) keep fronts of their own, but park their
//! calls, keep their cancel signals and answer for their parked calls with the parts here:
//! [`Cancels`], `hand_over` and `Parks`.

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
    /// The call waits: the waiting part answers it, and is told through its [`Cancel`] when its
    /// connection goes. It is never dropped half-way, so an item it took in etcd is either
    /// answered or given back, never lost.
    Wait(Box<dyn FnOnce(Cancel) -> Boxed<Reply> + Send>),
}

/// Tells a waiting part that nobody waits for its answer any more.
pub struct Cancel(oneshot::Receiver<()>);

/// The cancel signal of every call in flight that may wait, by waiter: registered when the
/// call is checked, fired when its connection goes, forgotten once it is answered.
#[derive(Default)]
pub struct Cancels(Mutex<HashMap<WaiterId, oneshot::Sender<()>>>);

impl Cancels {
    /// A new waiter, and the signal its waiting part is told through.
    pub fn register(&self) -> (WaiterId, oneshot::Receiver<()>) {
        let waiter = next_waiter_id();
        let (tx, rx) = oneshot::channel();
        let mut signals = self.0.lock();
        // A call answered without being forgotten (its waiting part dropped its receiver) is
        // swept here, at doubling sizes: the table stays as large as the calls in flight.
        if signals.len() >= 64 && signals.len().is_power_of_two() {
            signals.retain(|_, tx| !tx.is_closed());
        }
        signals.insert(waiter, tx);
        (waiter, rx)
    }

    /// How many signals are kept (calls in flight, and answered ones not yet swept).
    pub fn len(&self) -> usize {
        self.0.lock().len()
    }

    /// True when no signal is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tells `waiter`'s waiting part that its connection went.
    pub fn cancel(&self, waiter: WaiterId) {
        if let Some(cancel) = self.0.lock().remove(&waiter) {
            let _ = cancel.send(());
        }
    }

    /// Drops `waiter`'s signal: its call is answered (or was never handed over).
    pub fn forget(&self, waiter: WaiterId) {
        self.0.lock().remove(&waiter);
    }
}

/// An etcd object's side of its parked calls. No deadline is kept here (a call's waiting part
/// enforces its own timeout), a waiting call is cancelled through the object's [`Cancels`],
/// and an undelivered grant is given back as the kind does it.
pub(crate) trait Parks: Send + Sync {
    /// The cancel signals of the object's waiting calls; none for a kind whose calls never
    /// wait for anything but etcd (they are carried out even when their connection went).
    fn cancels(&self) -> Option<&Cancels>;
    /// A grant never reached `to`: give back what it holds.
    fn give_back(&self, grant: Grant, to: &Holder);
}

impl<T: Parks> Waitable for T {
    fn expire(&self, _waiter: WaiterId) -> Option<Reply> {
        None
    }

    fn abandon(&self, waiter: WaiterId) {
        if let Some(cancels) = self.cancels() {
            cancels.cancel(waiter);
        }
    }

    fn undeliver(&self, grant: Grant, to: &Holder) {
        self.give_back(grant, to);
    }
}

/// Hands the job `make` builds around its answer's sender to the object's task through
/// `jobs`, and parks the call until the task answers. `registered` is the call's waiter and
/// the cancels it is registered in, for a call that may wait (forgotten here if the task is
/// gone); any other call gets a fresh waiter.
pub(crate) fn hand_over<J, W: Parks + 'static>(
    this: &Weak<W>,
    jobs: &mpsc::UnboundedSender<J>,
    make: impl FnOnce(oneshot::Sender<Reply>) -> J,
    registered: Option<(WaiterId, &Cancels)>,
) -> Result<Outcome, CallError> {
    let forget = || {
        if let Some((waiter, cancels)) = registered {
            cancels.forget(waiter);
        }
    };
    let Some(this) = this.upgrade() else {
        forget();
        return Err(deleted());
    };
    let (reply, rx) = oneshot::channel();
    if jobs.send(make(reply)).is_err() {
        forget();
        return Err(deleted());
    }
    let waiter = registered.map_or_else(next_waiter_id, |(waiter, _)| waiter);
    Ok(Outcome::Parked(Park::new(rx, waiter, this, None)))
}

impl Cancel {
    /// Resolves when the waiter's connection went (or the object's front is gone).
    async fn cancelled(&mut self) {
        let _ = (&mut self.0).await;
    }
}

/// One kind's calls against etcd.
pub trait Engine: Send + Sync + 'static {
    /// A parsed call.
    type Op: Send + 'static;
    /// Checks a call's params at once (errors are answered without parking); records what the
    /// call will hold for the caller's connection.
    fn parse(&self, method: &str, p: &Params, caller: &Caller<'_>) -> Result<Self::Op, CallError>;
    /// Runs the call's in-order part.
    fn first(self: Arc<Self>, op: Self::Op) -> Boxed<Step>;
    /// A grant its connection never received: give back what it took.
    fn undeliver(self: Arc<Self>, _grant: Grant) {}
}

/// A call waiting for its object's task.
struct Job<Op> {
    op: Op,
    reply: oneshot::Sender<Reply>,
    cancel: Cancel,
    waiter: WaiterId,
}

/// An etcd object of a waiting kind, as one manager serves it.
pub struct Front<E: Engine> {
    kind: Kind,
    engine: Arc<E>,
    jobs: mpsc::UnboundedSender<Job<E::Op>>,
    /// The cancel signal of every call in flight, by waiter.
    cancels: Arc<Cancels>,
    this: Weak<Front<E>>,
}

impl<E: Engine> Front<E> {
    /// The front of `engine`, with its task started.
    pub fn start(kind: Kind, engine: E) -> Arc<Front<E>> {
        Front::start_shared(kind, Arc::new(engine))
    }

    /// The front of an engine shared with others (the holdings records of connections).
    pub fn start_shared(kind: Kind, engine: Arc<E>) -> Arc<Front<E>> {
        let (jobs, rx) = mpsc::unbounded_channel();
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
    cancels: Arc<Cancels>,
) {
    while let Some(job) = rx.recv().await {
        // A call whose connection went before its turn came is not run, as the memory store
        // serves a departed connection nothing: its close has already given back what it held,
        // and a barrier arrival or a get run now would count a party, or take an item, for
        // nobody.
        if job.reply.is_closed() {
            cancels.forget(job.waiter);
            continue;
        }
        match engine.clone().first(job.op).await {
            Step::Done(reply) => {
                cancels.forget(job.waiter);
                deliver(&engine, job.reply, reply);
            }
            Step::Wait(wait) => {
                let (engine, cancels) = (engine.clone(), cancels.clone());
                let (reply, waiter) = (job.reply, job.waiter);
                let answer = wait(job.cancel);
                tokio::spawn(async move {
                    let answer = answer.await;
                    cancels.forget(waiter);
                    deliver(&engine, reply, answer);
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
        caller: &Caller<'_>,
        _out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let op = self.engine.parse(method, params, caller)?;
        let (waiter, cancel) = self.cancels.register();
        let job = |reply| Job {
            op,
            reply,
            cancel: Cancel(cancel),
            waiter,
        };
        hand_over(&self.this, &self.jobs, job, Some((waiter, &self.cancels)))
    }

    fn view(&self) -> View {
        View::default()
    }
}

impl<E: Engine> Parks for Front<E> {
    fn cancels(&self) -> Option<&Cancels> {
        Some(&self.cancels)
    }

    fn give_back(&self, grant: Grant, _to: &Holder) {
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

/// The answer of a waiting call whose connection went: nobody reads it.
pub fn gone() -> CallError {
    CallError::new(
        ErrorName::CancelledError,
        "the call was cancelled: its connection went",
    )
}

/// What a watch saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Some key under the watched prefix changed (after the revision read): read again.
    Changed,
    /// The deadline passed first.
    TimedOut,
    /// The waiter's connection went first.
    Cancelled,
}

/// What a waiting part waits for: a change of a key under `prefix` after revision `after`
/// (so that nothing that happened since the caller's read is missed), that `wanted` accepts
/// (by type and key), until `deadline`.
pub struct Watch<F> {
    /// The keys watched.
    pub prefix: Vec<u8>,
    /// The revision read: changes after it count.
    pub after: i64,
    /// When to stop waiting.
    pub deadline: Option<Instant>,
    /// Which changes count.
    pub wanted: F,
}

/// Waits for what `watch` describes, the deadline, or the waiter's cancellation.
pub async fn changed<F: Fn(EventType, &[u8]) -> bool>(
    mut client: Client,
    watch: Watch<F>,
    cancel: &mut Cancel,
) -> Result<Seen, CallError> {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(watch.after + 1);
    let opened = tokio::select! {
        opened = timed("watching", client.watch(watch.prefix, Some(options))) => opened,
        () = cancel.cancelled() => return Ok(Seen::Cancelled),
    };
    // A watch that cannot be made, fails or ends (its member died) counts as a change after a
    // pause: the caller reads again, through whichever member answers, and watches again
    // from what it read, so nothing is missed and etcd's failover is waited out.
    let Ok((_watcher, mut stream)) = opened else {
        tokio::time::sleep(super::WATCH_RETRY).await;
        return Ok(Seen::Changed);
    };
    loop {
        let next = async {
            match watch.deadline {
                Some(at) => tokio::time::timeout_at(at, stream.message()).await.ok(),
                None => Some(stream.message().await),
            }
        };
        let message = tokio::select! {
            next = next => match next {
                Some(message) => message,
                None => return Ok(Seen::TimedOut),
            },
            () = cancel.cancelled() => return Ok(Seen::Cancelled),
        };
        let Ok(Some(message)) = message else {
            tokio::time::sleep(super::WATCH_RETRY).await;
            return Ok(Seen::Changed);
        };
        if message.canceled() {
            // Compacted past `after` (or refused): what changed is unknown, so read again.
            return Ok(Seen::Changed);
        }
        let hit = message.events().iter().any(|e| {
            e.kv()
                .is_some_and(|kv| (watch.wanted)(e.event_type(), kv.key()))
        });
        if hit {
            return Ok(Seen::Changed);
        }
    }
}

/// The deadline `timeout` from now; none for no timeout (or one too far away to represent).
pub fn deadline(timeout: Option<std::time::Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

#[cfg(test)]
mod tests {
    use super::Cancels;

    #[test]
    fn signals_of_answered_calls_do_not_pile_up() {
        let cancels = Cancels::default();
        // Each call is answered (its receiver dropped) without being forgotten.
        for _ in 0..10_000 {
            drop(cancels.register());
        }
        assert!(cancels.len() <= 128, "{} signals kept", cancels.len());
        // Calls still in flight are never swept.
        let live: Vec<_> = (0..100).map(|_| cancels.register()).collect();
        for _ in 0..1_000 {
            drop(cancels.register());
        }
        assert!(cancels.len() >= live.len());
        for (waiter, _) in &live {
            cancels.cancel(*waiter);
        }
    }
}
