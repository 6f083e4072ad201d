//! The connection's side of a parked call: a [`Parked`] future that waits for its grant until
//! its deadline, and a [`Ticket`] to give back a grant that could not be written.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use agora_proto::{params, CallError, ErrorName, Params};

use super::grant::{Grant, Reply};
use super::holdings::Holder;
use super::parking::WaiterId;

/// The core's operations on one waiter, as its connection needs them.
pub(crate) trait Waitable: Send + Sync {
    /// The waiter's deadline passed: `Some(answer)` if it left its line, `None` if it was
    /// granted meanwhile or waits on.
    fn expire(&self, waiter: WaiterId) -> Option<Reply>;
    /// Nobody will read the waiter's answer: take it out of line.
    fn abandon(&self, waiter: WaiterId);
    /// A grant never reached `to`: give it back.
    fn undeliver(&self, grant: Grant, to: &Holder);
}

/// What an object returns for a call that must wait.
pub struct Park {
    rx: oneshot::Receiver<Reply>,
    waiter: WaiterId,
    object: Arc<dyn Waitable>,
    timeout: Option<Duration>,
}

impl Park {
    pub(crate) fn new(
        rx: oneshot::Receiver<Reply>,
        waiter: WaiterId,
        object: Arc<dyn Waitable>,
        timeout: Option<Duration>,
    ) -> Park {
        Park {
            rx,
            waiter,
            object,
            timeout,
        }
    }
}

/// How a call ended: done (its result is in the output buffer) or parked.
pub enum Outcome {
    /// The result has been appended to the output buffer.
    Done,
    /// The call waits; the connection answers it when its grant comes or its deadline passes.
    Parked(Park),
}

/// Names one parked call's waiter, to give back a grant that could not be written.
#[derive(Clone)]
pub struct Ticket {
    object: Arc<dyn Waitable>,
    holder: Holder,
}

impl Ticket {
    /// Gives back a reply that was granted but never reached its client (an error needs
    /// nothing given back).
    pub fn undeliver(&self, reply: Reply) {
        if let Ok(grant) = reply {
            self.object.undeliver(grant, &self.holder);
        }
    }
}

/// A parked call, owned by its connection's task until it is answered. Dropped unanswered (the
/// connection closed, or the task was cancelled), it gives back a grant that arrived and was
/// never written, or takes its waiter out of line: cancellation leaves nothing behind.
pub struct Parked {
    /// The request to answer.
    pub msgid: u32,
    rx: Option<oneshot::Receiver<Reply>>,
    deadline: Option<Instant>,
    waiter: WaiterId,
    ticket: Ticket,
}

impl Parked {
    /// A parked call for `msgid`, made by `holder`'s connection.
    pub fn new(msgid: u32, park: Park, holder: Holder) -> Parked {
        Parked {
            msgid,
            // A timeout too far away to represent (Python's `inf`) is no deadline at all.
            deadline: park.timeout.and_then(|t| Instant::now().checked_add(t)),
            rx: Some(park.rx),
            waiter: park.waiter,
            ticket: Ticket {
                object: park.object,
                holder,
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
                    if let Some(answer) = self.ticket.object.expire(self.waiter) {
                        self.rx = None;
                        return answer;
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
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        rx.close();
        match rx.try_recv() {
            Ok(reply) => self.ticket.undeliver(reply),
            Err(_) => self.ticket.object.abandon(self.waiter),
        }
    }
}

/// The answer of a call whose waiter vanished without one (its object was retired).
fn gone() -> CallError {
    CallError::new(
        ErrorName::UnknownObjectError,
        "the object was deleted while the call waited",
    )
}

/// Reads the `blocking` (param 1, default true) and `timeout` (param 2) of an acquire, which
/// every blocking acquire takes, refusing a timeout with `blocking` false as Python does.
pub fn blocking_params(p: &Params) -> Result<(bool, Option<Duration>), CallError> {
    let blocking = p.bool_or(1, true)?;
    let timeout = timeout_param(p, 2)?;
    if !blocking && timeout.is_some() {
        return Err(CallError::value(
            "can't specify a timeout for a non-blocking call",
        ));
    }
    Ok((blocking, timeout))
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
