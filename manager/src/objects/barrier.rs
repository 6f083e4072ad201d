//! `barrier`: `parties` callers wait until all have arrived, then all go on.
//!
//! As in Python, a party that times out breaks the barrier for everybody, and so does a party
//! whose connection closes while it waits: the others would otherwise wait for it forever.

use std::sync::Arc;
use std::time::Duration;

use agora_proto::{encode, params, CallError, ErrorName, Params};

use crate::lifecycle::{
    timeout_param, Caller, Grant, HeldBy, Holder, Leave, Left, LineId, ObjectKey, Offer, Outcome,
    Parking, Semantics, View,
};

use super::{arity, expected, unknown_method, Args, Kind, SharedObject};

/// The line of waiting parties.
const WAIT: LineId = 0;

/// What a party waits for: its round to be completed; it is then answered its index.
#[derive(Debug)]
struct Party {
    round: u64,
    index: u64,
}

#[derive(Debug, Default)]
struct State {
    broken: bool,
    /// Rounds completed so far; a party of an earlier round than this has passed.
    rounds: u64,
    /// Parties arrived in the current round.
    arrived: u64,
}

fn broken() -> CallError {
    CallError::new(ErrorName::BrokenBarrierError, "the barrier is broken")
}

impl Semantics for State {
    type Wait = Party;

    fn offer(&mut self, _line: LineId, party: &mut Party, _to: &Holder) -> Offer {
        if party.round < self.rounds {
            Offer::Grant(Ok(Grant::Count(party.index)))
        } else if self.broken {
            Offer::Grant(Err(broken()))
        } else {
            Offer::Wait
        }
    }

    /// A party that passed took nothing: there is nothing to give back.
    fn give_back(&mut self, _grant: Grant, _to: &Holder) {}

    fn leave(&mut self, _line: LineId, _party: Party, why: Leave) -> Left<Party> {
        // A party that leaves before its round completes breaks the barrier for everybody.
        self.broken = true;
        self.arrived = 0;
        match why {
            Leave::Expired => Left::Answer(Err(broken())),
            Leave::Abandoned => Left::Gone,
        }
    }

    fn waits_for(&self, _line: LineId, _party: &Party) -> String {
        format!("the other parties ({} arrived)", self.arrived)
    }
}

/// A shared barrier.
pub struct Barrier {
    key: ObjectKey,
    parties: u64,
    default_timeout: Option<Duration>,
    state: Arc<Parking<State>>,
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
            key: crate::lifecycle::next_object_key(),
            parties,
            default_timeout,
            state: Parking::new(|_: HeldBy| State::default()),
        })
    }

    fn wait(
        &self,
        p: &Params,
        caller: &Caller<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let timeout = timeout_param(p, 1)?.or(self.default_timeout);
        self.state.op(|cx| {
            let st = &mut *cx.state;
            if st.broken {
                return Err(broken());
            }
            let index = st.arrived;
            if index + 1 < self.parties {
                st.arrived += 1;
                let party = Party {
                    round: st.rounds,
                    index,
                };
                return Ok(Outcome::Parked(
                    cx.park(WAIT, self.key, caller, party, timeout),
                ));
            }
            // The last party: the round is complete, and everybody in it goes.
            st.rounds += 1;
            st.arrived = 0;
            encode::uint(out, index);
            Ok(Outcome::Done)
        })
    }

    /// `abort` (`broken` stays) or `reset` (a fresh barrier): every waiting party is told the
    /// barrier broke.
    fn break_all(&self, stay_broken: bool) -> Result<(), CallError> {
        self.state.op(|cx| {
            cx.fail(WAIT, &broken());
            cx.state.broken = stay_broken;
            cx.state.arrived = 0;
            Ok(())
        })
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
        caller: &Caller<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let a = |min, max| arity(p, Kind::Barrier, method, min, max);
        if method == "wait" {
            a(1, 2)?;
            return self.wait(p, caller, out);
        }
        a(1, 1)?;
        match method {
            "abort" | "reset" => {
                self.break_all(method == "abort")?;
                encode::nil(out);
            }
            "parties" => encode::uint(out, self.parties),
            "n_waiting" => encode::uint(out, self.state.read(|st| st.arrived)?),
            "broken" => encode::bool(out, self.state.read(|st| st.broken)?),
            _ => return Err(unknown_method(Kind::Barrier, method)),
        }
        Ok(Outcome::Done)
    }

    parking_events!(state);
}
