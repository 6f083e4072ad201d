//! `event`: a flag that waiters wait on; `set` wakes every one of them.

use parking_lot::Mutex;

use agora_proto::{encode, CallError, ErrorName, Params};

use crate::waiters::{timeout_param, Caller, Expired, Outcome, Park, WaiterId, Waiters};

use super::{arity, unknown_method, Args, Kind, SharedObject};

#[derive(Debug, Default)]
struct State {
    flag: bool,
    waiters: Waiters<()>,
}

/// A shared event.
#[derive(Debug, Default)]
pub struct Event {
    state: Mutex<State>,
}

impl Event {
    /// A cleared event; takes no init args.
    pub fn new(args: &Args<'_>) -> Result<Event, CallError> {
        args.expect(0, 0)?;
        Ok(Event::default())
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
        caller: &Caller,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let a = |min, max| arity(p, Kind::Event, method, min, max);
        let mut st = self.state.lock();
        match method {
            "set" => {
                a(1, 1)?;
                st.flag = true;
                while let Some((_, w)) = st.waiters.pop() {
                    let _ = w.reply.send(Ok(encode::TRUE.to_vec()));
                }
                encode::nil(out);
            }
            "clear" => {
                a(1, 1)?;
                st.flag = false;
                encode::nil(out);
            }
            "is_set" => {
                a(1, 1)?;
                encode::bool(out, st.flag);
            }
            "wait" => {
                a(1, 2)?;
                let timeout = timeout_param(p, 1)?;
                if st.flag {
                    out.extend_from_slice(encode::TRUE);
                } else if timeout.is_some_and(|t| t.is_zero()) {
                    out.extend_from_slice(encode::FALSE);
                } else {
                    let (id, rx) = st.waiters.push(caller.session, ());
                    return Ok(Outcome::Parked(Park::new(rx, id, 0, timeout)));
                }
            }
            _ => return Err(unknown_method(Kind::Event, method)),
        }
        Ok(Outcome::Done)
    }

    fn expire(&self, waiter: WaiterId, _tag: u8) -> Expired {
        match self.state.lock().waiters.remove(waiter) {
            Some(_) => Expired::Reply(Ok(encode::FALSE.to_vec())),
            None => Expired::Pending,
        }
    }

    fn abandon(&self, waiter: WaiterId, _tag: u8) {
        self.state.lock().waiters.remove(waiter);
    }

    fn deleted(&self) {
        let err = CallError::new(ErrorName::UnknownObjectError, "the event was deleted");
        self.state.lock().waiters.fail_all(&err);
    }
}
