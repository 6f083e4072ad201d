//! The parked calls of one connection, run by the connection's own task.
//!
//! A call that must wait (an acquire, a queue get) is a future that completes with its reply.
//! These futures are polled by the task that serves the connection, not spawned as tasks of
//! their own: when a release grants a parked acquire, the waker it calls is the waiting
//! connection's task, which the runtime runs next on the releasing thread. A task per parked
//! call made a multi-threaded runtime wake another thread twice per parked call, once when
//! it was spawned and once when its completion woke the connection's task: in a profile of the
//! contended ticket grab at 8 workers on two runtime threads those were 37% of the manager's
//! futex calls, and they are gone (the grab's rate on two CPUs moved within run-to-run noise).
//!
//! What a task per call gave is kept:
//! - **cancellation**: [`ParkedCalls::cancel`] drops the future, at once if it has not
//!   finished (the lifecycle core takes the waiter out of line, or gives back a grant that
//!   reached it), and the call ends [`Ended::Cancelled`];
//! - **a panic stays in its call**: a future that panics ends [`Ended::Panicked`], answered as
//!   an internal error, while the connection goes on;
//! - **progress without delivery**: [`ParkedCalls::poll_done`] runs every call that can make
//!   progress even when the connection takes no replies (its client is not reading them), so
//!   that a timeout still takes its waiter out of line on time; what finished waits here, in
//!   the order it finished, until the connection takes it.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;

/// A parked call's number in its connection, unique for the connection's life (msgids may be
/// reused by the client; these are not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParkedId(u64);

/// Why a parked call ended without its reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ended {
    /// It was cancelled ([`ParkedCalls::cancel`], or [`ParkedCalls::cancel_all`]).
    #[error("the call was cancelled")]
    Cancelled,
    /// Its future panicked: a bug in the manager, with the panic's message.
    #[error("it panicked: {0}")]
    Panicked(String),
}

/// A finished call: its id, and its output or why it has none.
pub type Done<T> = (ParkedId, Result<T, Ended>);

type Running<T> = Pin<Box<dyn Future<Output = Done<T>> + Send>>;

/// The parked calls of one connection.
pub struct ParkedCalls<T> {
    running: FuturesUnordered<Running<T>>,
    /// Calls finished but not yet taken, in the order they finished.
    finished: VecDeque<Done<T>>,
    /// How to cancel each call not yet taken: the one place its abort handle is kept.
    handles: HashMap<ParkedId, AbortHandle>,
    next: u64,
}

impl<T: Send + 'static> ParkedCalls<T> {
    /// No calls.
    pub fn new() -> ParkedCalls<T> {
        ParkedCalls {
            running: FuturesUnordered::new(),
            finished: VecDeque::new(),
            handles: HashMap::new(),
            next: 0,
        }
    }

    /// Parks `call`, to be run by whoever polls this set; gives its id, to cancel it by.
    pub fn park(&mut self, call: impl Future<Output = T> + Send + 'static) -> ParkedId {
        let id = ParkedId(self.next);
        self.next += 1;
        let (abort, registration) = AbortHandle::new_pair();
        let guarded = Abortable::new(AssertUnwindSafe(call).catch_unwind(), registration);
        self.running.push(Box::pin(guarded.map(move |ended| {
            let result = match ended {
                Ok(Ok(output)) => Ok(output),
                Ok(Err(panic)) => Err(Ended::Panicked(panic_message(&*panic))),
                Err(_aborted) => Err(Ended::Cancelled),
            };
            (id, result)
        })));
        self.handles.insert(id, abort);
        id
    }

    /// Calls not yet taken (running, or finished and waiting).
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// True when no call is parked.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Cancels call `id`: its future is dropped the next time the set is polled, unless it has
    /// finished already (then its output stands). An id already taken is ignored.
    pub fn cancel(&self, id: ParkedId) {
        if let Some(abort) = self.handles.get(&id) {
            abort.abort();
        }
    }

    /// Cancels every call not yet finished.
    pub fn cancel_all(&self) {
        self.handles.values().for_each(AbortHandle::abort);
    }

    /// Runs the calls that can make progress, and gives the first finished one when `take`
    /// (else keeps it). `Ready(None)`: no call is parked (a `select!` branch on it disables
    /// itself); `Pending`: none to give now, and this task is woken when one finishes.
    pub fn poll_done(&mut self, cx: &mut Context<'_>, take: bool) -> Poll<Option<Done<T>>> {
        while let Poll::Ready(Some(done)) = self.running.poll_next_unpin(cx) {
            self.finished.push_back(done);
        }
        if take {
            if let Some(done) = self.finished.pop_front() {
                self.handles.remove(&done.0);
                return Poll::Ready(Some(done));
            }
        }
        if self.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    /// The next call to finish; `None` when none is parked.
    pub async fn next_done(&mut self, take: bool) -> Option<Done<T>> {
        std::future::poll_fn(|cx| self.poll_done(cx, take)).await
    }

    /// A call that has finished already, if any; never waits.
    pub fn try_next_done(&mut self) -> Option<Done<T>> {
        match self.poll_done(&mut Context::from_waker(Waker::noop()), true) {
            Poll::Ready(done) => done,
            Poll::Pending => None,
        }
    }
}

impl<T: Send + 'static> Default for ParkedCalls<T> {
    fn default() -> ParkedCalls<T> {
        ParkedCalls::new()
    }
}

/// The message a panic carried, when it is text.
fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::sync::oneshot;

    /// Sets its flag when dropped: tells whether a cancelled call's future was dropped.
    struct DropFlag(Arc<AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn calls_finish_in_the_order_they_finish_not_the_order_they_parked() {
        let mut calls = ParkedCalls::new();
        let (first_tx, first_rx) = oneshot::channel::<u32>();
        let (second_tx, second_rx) = oneshot::channel::<u32>();
        let first = calls.park(async move { first_rx.await.unwrap_or(0) });
        let second = calls.park(async move { second_rx.await.unwrap_or(0) });
        assert_eq!(calls.len(), 2);
        assert!(calls.try_next_done().is_none());
        second_tx.send(2).unwrap();
        assert_eq!(calls.next_done(true).await, Some((second, Ok(2))));
        first_tx.send(1).unwrap();
        assert_eq!(calls.next_done(true).await, Some((first, Ok(1))));
        assert!(calls.is_empty());
        assert_eq!(calls.next_done(true).await, None);
    }

    #[tokio::test]
    async fn a_cancelled_call_is_dropped_and_ends_cancelled() {
        let mut calls = ParkedCalls::<u32>::new();
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = DropFlag(dropped.clone());
        let id = calls.park(async move {
            let _flag = flag;
            std::future::pending::<u32>().await
        });
        assert!(calls.try_next_done().is_none());
        assert!(!dropped.load(Ordering::SeqCst));
        calls.cancel(id);
        assert_eq!(
            calls.next_done(true).await,
            Some((id, Err(Ended::Cancelled)))
        );
        assert!(
            dropped.load(Ordering::SeqCst),
            "the cancelled future was dropped"
        );
    }

    #[tokio::test]
    async fn a_call_that_finished_before_its_cancel_keeps_its_output() {
        let mut calls = ParkedCalls::new();
        let id = calls.park(async { 7u32 });
        // Not taken: the connection has no room for replies.
        let mut cx = Context::from_waker(Waker::noop());
        assert!(calls.poll_done(&mut cx, false).is_pending());
        calls.cancel(id);
        assert_eq!(calls.try_next_done(), Some((id, Ok(7))));
    }

    #[tokio::test]
    async fn a_panic_ends_its_call_only() {
        let mut calls = ParkedCalls::<u32>::new();
        let bad = calls.park(async { panic!("parked call bug") });
        let good = calls.park(async { 1u32 });
        let mut ends = vec![calls.next_done(true).await, calls.next_done(true).await];
        ends.sort_by_key(|d| d.as_ref().map(|(id, _)| id.0));
        assert_eq!(
            ends,
            vec![
                Some((bad, Err(Ended::Panicked("parked call bug".into())))),
                Some((good, Ok(1)))
            ]
        );
    }

    #[tokio::test]
    async fn calls_run_while_their_outputs_are_not_taken() {
        let mut calls = ParkedCalls::new();
        let timed_out = Arc::new(AtomicBool::new(false));
        let seen = timed_out.clone();
        let id = calls.park(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            seen.store(true, Ordering::SeqCst);
            3u32
        });
        // The connection takes no replies, yet the call's timer runs and the call finishes.
        let waiting =
            tokio::time::timeout(Duration::from_millis(500), calls.next_done(false)).await;
        assert!(
            waiting.is_err(),
            "nothing is given while outputs are not taken"
        );
        assert!(timed_out.load(Ordering::SeqCst), "the call ran meanwhile");
        assert_eq!(calls.len(), 1);
        calls.cancel_all();
        assert_eq!(calls.try_next_done(), Some((id, Ok(3))));
        assert!(calls.is_empty());
    }
}
