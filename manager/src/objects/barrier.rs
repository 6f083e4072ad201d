//! `barrier`: `parties` callers wait until all have arrived, then all go on.
//!
//! As in Python, a party that times out breaks the barrier for everybody, and so does a party
//! whose connection closes while it waits: the others would otherwise wait for it forever.

use std::time::Duration;

use parking_lot::Mutex;

use agora_proto::{encode, params, CallError, ErrorName, Params};

use crate::waiters::{timeout_param, Caller, Expired, Outcome, Park, WaiterId, Waiters};

use super::{arity, expected, unknown_method, Args, Kind, SharedObject};

#[derive(Debug, Default)]
struct State {
    broken: bool,
    /// Parties waiting, with the index each will be answered.
    waiters: Waiters<u64>,
}

/// A shared barrier.
#[derive(Debug)]
pub struct Barrier {
    parties: u64,
    default_timeout: Option<Duration>,
    state: Mutex<State>,
}

fn broken() -> CallError {
    CallError::new(ErrorName::BrokenBarrierError, "the barrier is broken")
}

impl State {
    fn break_all(&mut self) {
        self.broken = true;
        self.waiters.fail_all(&broken());
    }
}

impl Barrier {
    /// A barrier from `create`'s init args: `[parties]` or `[parties, timeout]`.
    pub fn new(args: &Args<'_>) -> Result<Barrier, CallError> {
        args.expect(1, 2)?;
        let raw = args.raw(0);
        let parties = match params::int_i64(raw) {
            Some(n) if n >= 1 => n as u64,
            Some(_) => return Err(CallError::value("parties must be > 0")),
            None => return Err(expected("an int", 2, raw)),
        };
        let default_timeout = match args.opt(1) {
            None => None,
            Some(raw) => {
                let secs = super::typecode::number(raw)
                    .filter(|s| *s >= 0.0)
                    .ok_or_else(|| CallError::value("timeout must be a non-negative number"))?;
                Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
            }
        };
        Ok(Barrier {
            parties,
            default_timeout,
            state: Mutex::new(State::default()),
        })
    }

    fn wait(&self, p: &Params, caller: &Caller, out: &mut Vec<u8>) -> Result<Outcome, CallError> {
        let timeout = timeout_param(p, 1)?.or(self.default_timeout);
        let mut st = self.state.lock();
        if st.broken {
            return Err(broken());
        }
        let index = st.waiters.len() as u64;
        if index + 1 < self.parties {
            let (id, rx) = st.waiters.push(caller.session, index);
            return Ok(Outcome::Parked(Park::new(rx, id, 0, timeout)));
        }
        // The last party: everybody goes.
        while let Some((_, w)) = st.waiters.pop() {
            let mut reply = Vec::with_capacity(9);
            encode::uint(&mut reply, w.data);
            let _ = w.reply.send(Ok(reply));
        }
        encode::uint(out, index);
        Ok(Outcome::Done)
    }
}

impl SharedObject for Barrier {
    fn kind(&self) -> Kind {
        Kind::Barrier
    }

    fn call(
        &self,
        method: &str,
        p: &Params,
        caller: &Caller,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let a = |min, max| arity(p, Kind::Barrier, method, min, max);
        if method == "wait" {
            a(1, 2)?;
            return self.wait(p, caller, out);
        }
        a(1, 1)?;
        let mut st = self.state.lock();
        match method {
            "abort" => {
                st.break_all();
                encode::nil(out);
            }
            "reset" => {
                st.waiters.fail_all(&broken());
                st.broken = false;
                encode::nil(out);
            }
            "parties" => encode::uint(out, self.parties),
            "n_waiting" => encode::uint(out, st.waiters.len() as u64),
            "broken" => encode::bool(out, st.broken),
            _ => return Err(unknown_method(Kind::Barrier, method)),
        }
        Ok(Outcome::Done)
    }

    fn expire(&self, waiter: WaiterId, _tag: u8) -> Expired {
        let mut st = self.state.lock();
        if st.waiters.remove(waiter).is_none() {
            return Expired::Pending;
        }
        st.break_all();
        Expired::Reply(Err(broken()))
    }

    fn abandon(&self, waiter: WaiterId, _tag: u8) {
        let mut st = self.state.lock();
        if st.waiters.remove(waiter).is_some() {
            st.break_all();
        }
    }

    fn deleted(&self) {
        let err = CallError::new(ErrorName::UnknownObjectError, "the barrier was deleted");
        self.state.lock().waiters.fail_all(&err);
    }
}
