//! `semaphore` and `bounded_semaphore`.
//!
//! Permits are counted per connection, so the permits of a connection that closes come back
//! (and the next acquirer is told, with 2). Acquirers are served in FIFO order: a release hands
//! the permit to the first in line, never to a newcomer.

use std::collections::HashMap;

use parking_lot::Mutex;

use agora_proto::{encode, params, CallError, ErrorName, Params};

use crate::waiters::{
    timeout_param, Caller, Expired, Outcome, Park, Reply, SessionId, WaiterId, Waiters,
};

use super::lock::{
    not_acquired_unless_granted, ACQUIRE, ACQUIRED, ACQUIRED_OWNER_DIED, NOT_ACQUIRED,
};
use super::{arity, expected, unknown_method, Args, Kind, SharedObject};

#[derive(Debug, Default)]
struct State {
    value: u64,
    /// Permits taken and not yet released, by connection.
    held: HashMap<SessionId, u64>,
    /// A connection died holding permits; the next acquirer is told.
    owner_died: bool,
    waiters: Waiters<()>,
}

/// A shared semaphore.
#[derive(Debug)]
pub struct Semaphore {
    kind: Kind,
    initial: u64,
    state: Mutex<State>,
}

impl State {
    fn take(&mut self, session: SessionId) -> u64 {
        self.value -= 1;
        *self.held.entry(session).or_default() += 1;
        if std::mem::take(&mut self.owner_died) {
            ACQUIRED_OWNER_DIED
        } else {
            ACQUIRED
        }
    }

    fn untake(&mut self, session: SessionId, code: u64) {
        self.value += 1;
        self.forget(session, 1);
        self.owner_died |= code == ACQUIRED_OWNER_DIED;
    }

    /// Forgets `n` permits as held by `session` (or, released by someone who did not take
    /// them, by any holder), so a later death does not return them twice.
    fn forget(&mut self, session: SessionId, mut n: u64) {
        let drop_from = |s: SessionId, n: &mut u64, held: &mut HashMap<SessionId, u64>| {
            if let Some(h) = held.get_mut(&s) {
                let k = (*h).min(*n);
                *h -= k;
                *n -= k;
                if *h == 0 {
                    held.remove(&s);
                }
            }
        };
        drop_from(session, &mut n, &mut self.held);
        while n > 0 {
            let Some(&other) = self.held.keys().next() else {
                return;
            };
            drop_from(other, &mut n, &mut self.held);
        }
    }

    /// Hands free permits to acquirers in line.
    fn hand_off(&mut self) {
        while self.value > 0 {
            let Some((_, w)) = self.waiters.pop() else {
                return;
            };
            let code = self.take(w.session);
            let mut out = Vec::with_capacity(1);
            encode::uint(&mut out, code);
            if w.reply.send(Ok(out)).is_err() {
                self.untake(w.session, code);
            }
        }
    }
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
            initial,
            state: Mutex::new(State {
                value: initial,
                ..State::default()
            }),
        })
    }

    fn acquire(
        &self,
        p: &Params,
        caller: &Caller,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let blocking = p.bool_or(1, true)?;
        let timeout = timeout_param(p, 2)?;
        if !blocking && timeout.is_some() {
            return Err(CallError::value(
                "can't specify a timeout for a non-blocking call",
            ));
        }
        let mut st = self.state.lock();
        if st.value > 0 && st.waiters.is_empty() {
            encode::uint(out, st.take(caller.session));
            return Ok(Outcome::Done);
        }
        if !blocking {
            encode::uint(out, NOT_ACQUIRED);
            return Ok(Outcome::Done);
        }
        let (id, rx) = st.waiters.push(caller.session, ());
        Ok(Outcome::Parked(Park::new(rx, id, ACQUIRE, timeout)))
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
        caller: &Caller,
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
                let n = p.opt(1).map(|_| p.u64(1)).transpose()?.unwrap_or(1);
                if n == 0 {
                    return Err(CallError::value("n must be one or more"));
                }
                let mut st = self.state.lock();
                // `n` comes from the client: an addition that does not fit is refused, never
                // wrapped.
                let value = st.value.checked_add(n).ok_or_else(|| {
                    CallError::overflow(format!(
                        "releasing {n} permits would take the value past {}",
                        u64::MAX
                    ))
                })?;
                if self.kind == Kind::BoundedSemaphore && value > self.initial {
                    return Err(CallError::value("Semaphore released too many times"));
                }
                st.value = value;
                st.forget(caller.session, n);
                st.hand_off();
                encode::nil(out);
            }
            "get_value" => {
                a(1, 1)?;
                encode::uint(out, self.state.lock().value);
            }
            _ => return Err(unknown_method(self.kind, method)),
        }
        Ok(Outcome::Done)
    }

    fn expire(&self, waiter: WaiterId, _tag: u8) -> Expired {
        not_acquired_unless_granted(self.state.lock().waiters.remove(waiter).is_some())
    }

    fn abandon(&self, waiter: WaiterId, _tag: u8) {
        self.state.lock().waiters.remove(waiter);
    }

    fn tracks_sessions(&self) -> bool {
        true
    }

    fn undeliver(&self, _waiter: WaiterId, _tag: u8, session: SessionId, reply: Reply) {
        let Ok(bytes) = reply else { return };
        let mut st = self.state.lock();
        if st.held.contains_key(&session) {
            let code = if bytes.as_slice() == [ACQUIRED_OWNER_DIED as u8] {
                ACQUIRED_OWNER_DIED
            } else {
                ACQUIRED
            };
            st.untake(session, code);
            st.hand_off();
        }
    }

    fn session_closed(&self, session: SessionId) {
        let mut st = self.state.lock();
        if let Some(n) = st.held.remove(&session) {
            st.value += n;
            st.owner_died = true;
            st.hand_off();
        }
    }

    fn deleted(&self) {
        let err = CallError::new(ErrorName::UnknownObjectError, "the semaphore was deleted");
        self.state.lock().waiters.fail_all(&err);
    }
}
