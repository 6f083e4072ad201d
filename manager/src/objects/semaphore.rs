//! `semaphore` and `bounded_semaphore`.
//!
//! A permit taken by an *owned* acquire is counted for the connection, and comes back when the
//! connection closes (the next acquirer is told, with 2). One taken by an unowned acquire is a
//! plain consumption, as in Python: only a release gives it back, so a semaphore works as a
//! signal. A bare `semaphore` acquire is unowned, a bare `bounded_semaphore` acquire owned;
//! the `owned` param of the acquire, or the `owned` option at creation, says otherwise.
//! Acquirers are served in FIFO order: a release hands the permit to the first in line, never
//! to a newcomer.

use std::sync::Arc;

use agora_proto::{encode, params, CallError, Params};

use crate::lifecycle::{
    blocking_params, Caller, Grant, HeldBy, Holder, Leave, Left, LineId, ObjectKey, Offer, Outcome,
    Parking, Semantics, SessionId, View,
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
    /// Whether the permit the waiter takes is owned.
    type Wait = bool;

    fn offer(&mut self, _line: LineId, owned: &mut bool, to: &Holder) -> Offer {
        if self.value == 0 {
            return Offer::Wait;
        }
        self.value -= 1;
        if *owned {
            self.held.add(to.as_caller(), 1);
        }
        Offer::Grant(Ok(Grant::Acquired {
            owner_died: false,
            owned: *owned,
        }))
    }

    fn give_back(&mut self, grant: Grant, to: &Holder) {
        match grant {
            // An owned permit comes back only if its connection still holds it: a close may
            // have returned it already, and it must not come back twice.
            Grant::Acquired { owned: true, .. } => {
                if self.held.remove(to.session, 1) == 1 {
                    self.value = self.value.saturating_add(1);
                }
            }
            // An unowned permit is recorded nowhere: nothing else can have returned it.
            _ => self.value = self.value.saturating_add(1),
        }
    }

    fn leave(&mut self, _line: LineId, _wait: bool, why: Leave) -> Left<bool> {
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

    fn held(&self) -> Option<&HeldBy> {
        Some(&self.held)
    }

    /// The permits free now.
    fn size(&self) -> Option<u64> {
        Some(self.value)
    }

    fn waits_for(&self, _line: LineId, _owned: &bool) -> String {
        "a permit".to_owned()
    }
}

/// A shared semaphore.
pub struct Semaphore {
    kind: Kind,
    key: ObjectKey,
    initial: u64,
    /// The `owned` option given at creation, which every acquire follows; `None`: each
    /// acquire says, and a bare one is owned for a `bounded_semaphore` only.
    policy: Option<bool>,
    state: Arc<Parking<State>>,
}

impl Semaphore {
    /// A semaphore from `create`'s init args: `[]`, `[value]` (default 1) or
    /// `[value, owned]`.
    pub fn new(kind: Kind, args: &Args<'_>) -> Result<Semaphore, CallError> {
        args.expect(0, 2)?;
        let policy = args.opt_bool(1)?;
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
            policy,
            state: Parking::new(|held| State {
                value: initial,
                held,
            }),
        })
    }

    /// A semaphore from init args as a store keeps them (the whole array), checked as
    /// `create` checks them.
    pub fn from_init(kind: Kind, init: &Params) -> Result<Semaphore, CallError> {
        Semaphore::new(kind, &Args::of(kind, init))
    }

    /// The initial value (a bounded semaphore's ceiling).
    pub fn initial(&self) -> u64 {
        self.initial
    }

    /// The `owned` option given at creation.
    pub fn policy(&self) -> Option<bool> {
        self.policy
    }

    /// Whether an acquire that asked for `asked` takes an owned permit.
    fn owned(&self, asked: Option<bool>) -> bool {
        self.policy
            .or(asked)
            .unwrap_or(self.kind == Kind::BoundedSemaphore)
    }

    /// `acquire [id, blocking, timeout, owned]`.
    fn acquire(
        &self,
        p: &Params,
        caller: &Caller<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let (blocking, timeout) = blocking_params(p)?;
        let owned = self.owned(p.opt_bool(3)?);
        // An acquire that would wait might wait behind a permit of a connection that has
        // left: its close comes first.
        if self.state.read(|st| st.value)? == 0 {
            self.state.settle(caller.session);
        }
        self.state.op(|cx| {
            if cx.state.value > 0 && cx.waiting(ACQUIRE) == 0 {
                cx.state.value -= 1;
                if owned {
                    cx.state.held.add(*caller, 1);
                }
                cx.acquired().encode(out);
                return Ok(Outcome::Done);
            }
            if !blocking {
                Grant::NotAcquired.encode(out);
                return Ok(Outcome::Done);
            }
            Ok(Outcome::Parked(
                cx.park(ACQUIRE, self.key, caller, owned, timeout),
            ))
        })
    }

    /// `release [id, n]`.
    fn release(&self, p: &Params, caller: &Caller<'_>) -> Result<(), CallError> {
        let n = p.opt(1).map(|_| p.u64(1)).transpose()?.unwrap_or(1);
        if n == 0 {
            return Err(CallError::value("n must be one or more"));
        }
        // The outcome depends on a close racing this release when the release counts permits
        // off other connections' accounts (a caller that holds fewer than `n`): a close that
        // already happened is finished first.
        if self.state.read(|st| st.held.count(caller.session) < n)? {
            self.state.settle(caller.session);
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
                a(1, 4)?;
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

    parking_events!(state);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::Holdings;

    /// A grant whose connection closes before it is written is given back after the close
    /// released what the connection held: an owned permit comes back once, not twice (the
    /// SIGKILL soak saw three users inside a semaphore of two when it came back twice), and
    /// an unowned one, which no close returns, comes back by the give-back.
    #[test]
    fn a_grant_given_back_after_its_close_comes_back_once() {
        let p = Parking::new(|held| State { value: 1, held });
        let holder = Holder {
            session: 7,
            holdings: Holdings::new(),
        };
        for owned in [true, false] {
            p.op(|cx| {
                let mut wait = owned;
                let grant = match cx.state.offer(ACQUIRE, &mut wait, &holder) {
                    Offer::Grant(Ok(grant)) => grant,
                    other => panic!("a free permit is granted, got {other:?}"),
                };
                assert_eq!(cx.state.value, 0);
                assert_eq!(cx.state.release_dead(holder.session), owned);
                cx.state.give_back(grant, &holder);
                assert_eq!(cx.state.value, 1, "owned {owned}");
                Ok(())
            })
            .unwrap();
        }
    }
}
