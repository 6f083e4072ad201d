//! Parked calls: the FIFO of waiters each blocking object keeps, and the handle a connection
//! holds while one of its calls is parked.
//!
//! A blocking call that cannot complete at once never blocks a thread. The object records a
//! waiter (with a [`oneshot`] sender) in its FIFO and the connection task gets a [`Parked`]
//! call: a receiver, a deadline and a [`Ticket`] naming the waiter. When the object's state
//! changes it grants the first waiter by sending its reply; a send that fails means the waiter's
//! connection is gone, and the object grants the next one instead, so nothing is handed to a
//! waiter that is gone.
//!
//! The connection side resolves every race between a grant, a timeout and a disconnect under
//! the object's lock: on timeout it asks the object to [`SharedObject::expire`](crate::objects::SharedObject::expire) the waiter
//! (which fails if the grant won), and a [`Parked`] call dropped before its reply was
//! delivered returns the reply with [`SharedObject::undeliver`](crate::objects::SharedObject::undeliver) (a queue item goes back to the
//! head of the queue) or removes the waiter with [`SharedObject::abandon`](crate::objects::SharedObject::abandon).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use agora_proto::{params, CallError, ErrorName, Params};

use crate::objects::ObjectHandle;

/// The encoded result of a call, or its error.
pub type Reply = Result<Vec<u8>, CallError>;

/// Identifies one parked call. Allocated in increasing order, so sorting by id is FIFO order.
pub type WaiterId = u64;

static NEXT_WAITER: AtomicU64 = AtomicU64::new(1);

/// A fresh waiter id.
pub fn next_waiter_id() -> WaiterId {
    NEXT_WAITER.fetch_add(1, Ordering::Relaxed)
}

/// Identifies one connection for the lifetime of the manager.
pub type SessionId = u64;

/// Who holds or waits for a lock: a connection, plus the thread id the client gave, so that
/// threads sharing one connection are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The connection.
    pub session: SessionId,
    /// The client's thread id (0 when the client did not give one).
    pub thread: u64,
}

/// What a call knows about its caller.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The connection the call came on.
    pub session: SessionId,
}

impl Caller {
    /// The owner a call names with its optional `owner` param at index `i`.
    pub fn owner(&self, p: &Params, i: usize) -> Result<Owner, CallError> {
        Ok(Owner {
            session: self.session,
            thread: p.opt(i).map(|_| p.u64(i)).transpose()?.unwrap_or(0),
        })
    }
}

/// One parked waiter: its reply channel and what it waits for.
#[derive(Debug)]
pub struct Waiter<T> {
    /// Where the grant goes.
    pub reply: oneshot::Sender<Reply>,
    /// The connection the call came on.
    pub session: SessionId,
    /// What the waiter waits for (an owner, a count, items to put...).
    pub data: T,
}

/// A FIFO of waiters, removable by id in O(log n): timeouts and disconnects remove waiters
/// from the middle, and 10,000 parked waiters must cost no more than their own memory.
#[derive(Debug)]
pub struct Waiters<T> {
    queue: BTreeMap<WaiterId, Waiter<T>>,
}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Waiters {
            queue: BTreeMap::new(),
        }
    }
}

impl<T> Waiters<T> {
    /// Parks a new waiter at the back; returns its id and the receiver of its reply.
    pub fn push(&mut self, session: SessionId, data: T) -> (WaiterId, oneshot::Receiver<Reply>) {
        let (reply, rx) = oneshot::channel();
        let id = next_waiter_id();
        self.queue.insert(
            id,
            Waiter {
                reply,
                session,
                data,
            },
        );
        (id, rx)
    }

    /// Puts a waiter back with its original id (and so its original place in line).
    pub fn push_with_id(&mut self, id: WaiterId, waiter: Waiter<T>) {
        self.queue.insert(id, waiter);
    }

    /// Number of parked waiters.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when nobody waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The first waiter, without removing it.
    pub fn front(&self) -> Option<&Waiter<T>> {
        self.queue.values().next()
    }

    /// The first waiter, mutably.
    pub fn front_mut(&mut self) -> Option<&mut Waiter<T>> {
        self.queue.values_mut().next()
    }

    /// Removes and returns the first waiter.
    pub fn pop(&mut self) -> Option<(WaiterId, Waiter<T>)> {
        self.queue.pop_first()
    }

    /// Removes a waiter by id (timeout, disconnect).
    pub fn remove(&mut self, id: WaiterId) -> Option<Waiter<T>> {
        self.queue.remove(&id)
    }

    /// True if the waiter is still parked here.
    pub fn contains(&self, id: WaiterId) -> bool {
        self.queue.contains_key(&id)
    }

    /// Fails every waiter with `err` (object deleted, queue closed, barrier broken).
    pub fn fail_all(&mut self, err: &CallError) {
        while let Some((_, w)) = self.pop() {
            let _ = w.reply.send(Err(err.clone()));
        }
    }
}

/// What happened when a parked call's deadline passed.
#[derive(Debug)]
pub enum Expired {
    /// The waiter was removed: answer with this.
    Reply(Reply),
    /// The waiter was already granted (or moved on, as a condition waiter that now waits for
    /// its lock without a deadline): keep waiting for its reply.
    Pending,
}

/// Names one parked waiter of one object.
#[derive(Clone)]
pub struct Ticket {
    /// The object the call is parked on.
    pub object: ObjectHandle,
    /// The waiter.
    pub waiter: WaiterId,
    /// What the waiter waits for, in the object's own terms (a get, a put...).
    pub tag: u8,
    /// The connection that made the call.
    pub session: SessionId,
}

impl Ticket {
    /// Gives back a reply that was granted but never reached its client.
    pub fn undeliver(&self, reply: Reply) {
        self.object
            .undeliver(self.waiter, self.tag, self.session, reply);
    }
}

/// What an object returns for a call that must wait.
pub struct Park {
    /// The receiver of the eventual reply.
    pub rx: oneshot::Receiver<Reply>,
    /// The waiter's id in the object.
    pub waiter: WaiterId,
    /// When to give up, if ever.
    pub timeout: Option<Duration>,
    /// What the waiter waits for, in the object's own terms; handed back to its hooks.
    pub tag: u8,
}

impl Park {
    /// A parked call.
    pub fn new(
        rx: oneshot::Receiver<Reply>,
        waiter: WaiterId,
        tag: u8,
        timeout: Option<Duration>,
    ) -> Park {
        Park {
            rx,
            waiter,
            timeout,
            tag,
        }
    }
}

/// How a call ended: done (its result is in the output buffer) or parked.
pub enum Outcome {
    /// The result has been appended to the output buffer.
    Done,
    /// The call waits; the connection answers it when `rx` delivers or the deadline passes.
    Parked(Park),
}

/// A parked call, owned by its connection's task until it is answered.
pub struct Parked {
    /// The request to answer.
    pub msgid: u32,
    rx: Option<oneshot::Receiver<Reply>>,
    deadline: Option<Instant>,
    ticket: Ticket,
}

impl Parked {
    /// A parked call for `msgid`, made by connection `session`.
    pub fn new(msgid: u32, park: Park, object: ObjectHandle, session: SessionId) -> Parked {
        Parked {
            msgid,
            // A timeout too far away to represent (Python's `inf`) is no deadline at all.
            deadline: park.timeout.and_then(|t| Instant::now().checked_add(t)),
            rx: Some(park.rx),
            ticket: Ticket {
                object,
                waiter: park.waiter,
                tag: park.tag,
                session,
            },
        }
    }

    /// Waits for the reply, expiring the waiter at its deadline. Returns the ticket with it, so
    /// that a reply that cannot be written can still be given back.
    pub async fn reply(mut self) -> (u32, Reply, Ticket) {
        let reply = self.wait().await;
        (self.msgid, reply, self.ticket.clone())
    }

    async fn wait(&mut self) -> Reply {
        let Some(rx) = self.rx.as_mut() else {
            return Err(gone());
        };
        if let Some(deadline) = self.deadline {
            match tokio::time::timeout_at(deadline, &mut *rx).await {
                Ok(delivered) => {
                    self.rx = None;
                    return delivered.unwrap_or_else(|_| Err(gone()));
                }
                Err(_) => {
                    if let Expired::Reply(reply) = self
                        .ticket
                        .object
                        .expire(self.ticket.waiter, self.ticket.tag)
                    {
                        self.rx = None;
                        return reply;
                    }
                }
            }
        }
        let delivered = rx.await;
        self.rx = None;
        delivered.unwrap_or_else(|_| Err(gone()))
    }
}

impl Drop for Parked {
    /// A parked call dropped unanswered (its connection closed): give back a grant that was
    /// sent but never delivered, or take the waiter out of line.
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        rx.close();
        match rx.try_recv() {
            Ok(reply) => self.ticket.undeliver(reply),
            Err(_) => self
                .ticket
                .object
                .abandon(self.ticket.waiter, self.ticket.tag),
        }
    }
}

/// The reply of a call whose object vanished while it waited.
fn gone() -> CallError {
    CallError::new(
        ErrorName::UnknownObjectError,
        "the object was deleted while the call waited",
    )
}

/// Reads a timeout param: nil (or absent) is no limit; seconds as an int or float, not negative.
/// Python's `-1` (no limit) is accepted too.
pub fn timeout_param(p: &Params, i: usize) -> Result<Option<Duration>, CallError> {
    let Some(raw) = p.opt(i) else {
        return Ok(None);
    };
    let seconds = crate::objects::typecode::number(raw).ok_or_else(|| {
        CallError::type_error(format!(
            "timeout (param {i}) must be a number of seconds or nil, got {}",
            params::type_name(raw)
        ))
    })?;
    if seconds == -1.0 {
        return Ok(None);
    }
    if seconds.is_nan() || seconds < 0.0 {
        return Err(CallError::value("'timeout' must be a non-negative number"));
    }
    Ok(Some(
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX),
    ))
}
