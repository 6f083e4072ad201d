//! `event`: a flag that waiters wait on; `set` wakes every one of them.

use std::sync::Arc;

use agora_proto::{encode, CallError, Params};

use crate::lifecycle::{
    timeout_param, Caller, Grant, HeldBy, Holder, Leave, Left, LineId, ObjectKey, Offer, Outcome,
    Parking, Semantics, View,
};

use super::{arity, unknown_method, Args, Kind, SharedObject};

/// The line of waiters.
const WAIT: LineId = 0;

#[derive(Debug)]
struct State {
    flag: bool,
}

impl Semantics for State {
    type Wait = ();

    fn offer(&mut self, _line: LineId, _wait: &mut (), _to: &Holder) -> Offer {
        if self.flag {
            Offer::Grant(Ok(Grant::Bool(true)))
        } else {
            Offer::Wait
        }
    }

    /// A wait took nothing: there is nothing to give back.
    fn give_back(&mut self, _grant: Grant, _to: &Holder) {}

    fn leave(&mut self, _line: LineId, _wait: (), why: Leave) -> Left<()> {
        match why {
            Leave::Expired => Left::Answer(Ok(Grant::Bool(false))),
            Leave::Abandoned => Left::Gone,
        }
    }

    fn waits_for(&self, _line: LineId, _wait: &()) -> String {
        "the event to be set".to_owned()
    }
}

/// A shared event.
pub struct Event {
    key: ObjectKey,
    state: Arc<Parking<State>>,
}

impl Event {
    /// A cleared event; takes no init args.
    pub fn new(args: &Args<'_>) -> Result<Event, CallError> {
        args.expect(0, 0)?;
        Ok(Event {
            key: crate::lifecycle::next_object_key(),
            state: Parking::new(|_: HeldBy| State { flag: false }),
        })
    }
}

impl SharedObject for Event {
    fn kind(&self) -> Kind {
        Kind::Event
    }

    fn call(
        &self,
        method: &str,
        p: &Params,
        caller: &Caller<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let a = |min, max| arity(p, Kind::Event, method, min, max);
        match method {
            "set" | "clear" => {
                a(1, 1)?;
                let flag = method == "set";
                // Setting grants every waiter before the call returns.
                self.state.op(|cx| {
                    cx.state.flag = flag;
                    Ok(())
                })?;
                encode::nil(out);
            }
            "is_set" => {
                a(1, 1)?;
                encode::bool(out, self.state.read(|st| st.flag)?);
            }
            "wait" => {
                a(1, 2)?;
                let timeout = timeout_param(p, 1)?;
                return self.state.op(|cx| {
                    if cx.state.flag || timeout.is_some_and(|t| t.is_zero()) {
                        encode::bool(out, cx.state.flag);
                        return Ok(Outcome::Done);
                    }
                    Ok(Outcome::Parked(cx.park(
                        WAIT,
                        self.key,
                        caller,
                        (),
                        timeout,
                    )))
                });
            }
            _ => return Err(unknown_method(Kind::Event, method)),
        }
        Ok(Outcome::Done)
    }

    parking_events!(state);
}
