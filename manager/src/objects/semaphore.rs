//! `semaphore` and `bounded_semaphore`.
//!
//! Permits are counted per connection, so the permits of a connection that closes come back
//! (and the next acquirer is told, with 2). Acquirers are served in FIFO order: a release hands
//! the permit to the first in line, never to a newcomer.

use std::sync::Arc;

use agora_proto::{encode, params, CallError, Params};

use crate::lifecycle::{
    timeout_param, Caller, Grant, HeldBy, Holder, Leave, Left, LineId, ObjectKey, Offer, Outcome,
    Parking, Semantics, SessionId,
};

use super::{arity, expected, unknown_method, Args, Kind, SharedObject};

/// The line of acquirers.
const ACQUIRE: LineId = 0;

/// A semaphore's count, and who holds the permits taken.
#[derive(Debug)]
struct State {
    value: u64,
    held: HeldBy,
}

impl State {
    /// Forgets `n` permits as held by `session` (or, released by someone who did not take
    /// them, by other holders), so a later death does not return them twice.
    fn forget(&mut self, session: SessionId, n: u64) {
        let mut left = n - self.held.remove(session, n);
        while left > 0 {
            let Some(other) = self.held.other_than(session) else {
                return;
            };
            left -= self.held.remove(other, left);
        }
    }
}

impl Semantics for State {
    type Wait = ();

    fn offer(&mut self, _line: LineId, _wait: &mut (), to: &Holder) -> Offer {
        if self.value == 0 {
            return Offer::Wait;
        }
        self.value -= 1;
        self.held.add(to.as_caller(), 1);
        Offer::Grant(Ok(Grant::ACQUIRED))
    }

    fn give_back(&mut self, _grant: Grant, to: &Holder) {
        if self.held.remove(to.session, 1) == 1 {
            self.value += 1;
        }
    }

    fn leave(&mut self, _line: LineId, _wait: (), why: Leave) -> Left<()> {
        match why {
            Leave::Expired => Left::Answer(Ok(Grant::NotAcquired)),
            Leave::Abandoned => Left::Gone,
        }
    }

    fn release_dead(&mut self, session: SessionId) -> bool {
        let n = self.held.take(session);
        self.value = self.value.saturating_add(n);
        n > 0
    }

    fn retire(&mut self) {
        self.held.clear();
    }
}

/// A shared semaphore.
pub struct Semaphore {
    kind: Kind,
    key: ObjectKey,
    initial: u64,
    state: Arc<Parking<State>>,
}

impl Semaphore {
    /// A semaphore from `create`'s init args: `[]` or `[value]` (default 1).
    pub fn new(kind: Kind, args: &Args<'_>) -> Result<Semaphore, CallError> {
        args.expect(0, 1)?;
        let initial = match args.opt(0) {
            None => 1,
            Some(raw) => match params::int_i64(raw) {
                Some(n) if n >= 0 => n as u64,
                Some(_) => return Err(CallError::value("semaphore initial value must be >= 0")),
                None => return Err(expected("an int", 2, raw)),
            },
        };
        Ok(Semaphore {
            kind,
            key: crate::lifecycle::next_object_key(),
            initial,
            state: Parking::new(|held| State {
                value: initial,
                held,
            }),
        })
    }

    /// `acquire [id, blocking, timeout, owner]`.
    fn acquire(
        &self,
        p: &Params,
        caller: &Caller<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let blocking = p.bool_or(1, true)?;
        let timeout = timeout_param(p, 2)?;
        if !blocking && timeout.is_some() {
            return Err(CallError::value(
                "can't specify a timeout for a non-blocking call",
            ));
        }
        self.state.op(|cx| {
            if cx.state.value > 0 && cx.waiting(ACQUIRE) == 0 {
                cx.state.value -= 1;
                cx.state.held.add(*caller, 1);
                cx.acquired().encode(out);
                return Ok(Outcome::Done);
            }
            if !blocking {
                Grant::NotAcquired.encode(out);
                return Ok(Outcome::Done);
            }
            Ok(Outcome::Parked(cx.park(
                ACQUIRE,
                self.key,
                caller,
                (),
                timeout,
            )))
        })
    }

    /// `release [id, n]`.
    fn release(&self, p: &Params, caller: &Caller<'_>) -> Result<(), CallError> {
        let n = p.opt(1).map(|_| p.u64(1)).transpose()?.unwrap_or(1);
        if n == 0 {
            return Err(CallError::value("n must be one or more"));
        }
        self.state.op(|cx| {
            // `n` comes from the client: an addition that does not fit is refused, never
            // wrapped.
            let value = cx.state.value.checked_add(n).ok_or_else(|| {
                CallError::overflow(format!(
                    "releasing {n} permits would take the value past {}",
                    u64::MAX
                ))
            })?;
            if self.kind == Kind::BoundedSemaphore && value > self.initial {
                return Err(CallError::value("Semaphore released too many times"));
            }
            cx.state.value = value;
            cx.state.forget(caller.session, n);
            Ok(())
        })
    }
}

impl SharedObject for Semaphore {
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
        let a = |min, max| arity(p, self.kind, method, min, max);
        match method {
            "acquire" => {
                a(1, 3)?;
                return self.acquire(p, caller, out);
            }
            "release" => {
                a(1, 2)?;
                self.release(p, caller)?;
                encode::nil(out);
            }
            "get_value" => {
                a(1, 1)?;
                encode::uint(out, self.state.read(|st| st.value)?);
            }
            _ => return Err(unknown_method(self.kind, method)),
        }
        Ok(Outcome::Done)
    }

    fn retire(&self) {
        self.state.detach(self.key);
    }

    fn stop(&self) {
        self.state.stop();
    }
}
