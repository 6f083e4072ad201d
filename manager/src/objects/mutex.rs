//! `mutex`: a value and the lock that guards it, as one object, poisoned by a holder's death
//! as `std::sync::Mutex` is poisoned by a panic.
//!
//! `lock` answers the value with the lock, so a critical section costs no extra round trip to
//! read it; the holder reads and writes it with `get` and `set`, and may write it and unlock in
//! one call (`set_unlock`). Only the holder (its connection and owner id) may touch the value
//! or unlock. Every holding is owned: when the holder's connection closes holding the lock, the
//! lock is released and the mutex becomes **poisoned**: the value may be half updated. Every
//! later `lock` answers `poisoned` true, with the value, until someone calls `clear_poison`. A
//! notice nobody can miss, unlike the owner-died `2` of a plain lock, which only the next
//! acquirer sees.

use std::sync::Arc;

use agora_proto::{encode, CallError, Params};

use crate::lifecycle::{
    blocking_params, Caller, Grant, HeldBy, HeldInfo, Holder, Leave, Left, LineId, ObjectKey,
    Offer, Outcome, Owner, Parking, Semantics, SessionId, View,
};

use super::{arity, store, unknown_method, Args, Kind, SharedObject, Stored};

/// The line of lockers.
const LOCK: LineId = 0;

/// A mutex's value, holder and poison.
#[derive(Debug)]
struct State {
    value: Stored,
    holder: Option<Owner>,
    poisoned: bool,
    held: HeldBy,
}

impl State {
    /// The grant of the lock to `owner`: the value and the poison, as they are now.
    fn take(&mut self, owner: Owner, who: Caller<'_>) -> Grant {
        self.holder = Some(owner);
        self.held.add(who, 1);
        Grant::Locked {
            poisoned: self.poisoned,
            value: self.value.clone(),
        }
    }

    fn drop_holder(&mut self) {
        if let Some(h) = self.holder.take() {
            self.held.take(h.session);
        }
    }

    /// Fails unless `owner` holds the lock: only the holder may touch the value or unlock.
    fn check_holder(&self, owner: Owner, what: &str) -> Result<(), CallError> {
        if self.holder == Some(owner) {
            return Ok(());
        }
        Err(CallError::runtime(if self.holder.is_none() {
            format!("cannot {what}: the mutex is not locked")
        } else {
            format!("cannot {what}: the mutex is locked by someone else")
        }))
    }
}

impl Semantics for State {
    /// Who will hold the lock.
    type Wait = Owner;

    fn offer(&mut self, _line: LineId, owner: &mut Owner, to: &Holder) -> Offer {
        if self.holder.is_some() {
            return Offer::Wait;
        }
        Offer::Grant(Ok(self.take(*owner, to.as_caller())))
    }

    fn give_back(&mut self, _grant: Grant, to: &Holder) {
        // Never delivered: the connection never learnt it held the lock, so nothing it did
        // can have half updated the value. No poison.
        if self.holder.is_some_and(|h| h.session == to.session) {
            self.drop_holder();
        }
    }

    fn leave(&mut self, _line: LineId, _owner: Owner, why: Leave) -> Left<Owner> {
        match why {
            // Not locked in time: nil.
            Leave::Expired => Left::Answer(Ok(Grant::Nil)),
            Leave::Abandoned => Left::Gone,
        }
    }

    fn release_dead(&mut self, session: SessionId) -> bool {
        if self.holder.is_some_and(|h| h.session == session) {
            self.drop_holder();
            self.poisoned = true;
            return true;
        }
        false
    }

    fn retire(&mut self) {
        self.holder = None;
        self.held.clear();
    }

    fn held(&self) -> Option<&HeldBy> {
        Some(&self.held)
    }

    /// The holder, with its thread.
    fn holding(&self) -> Vec<HeldInfo> {
        HeldInfo::of_owner(self.holder.as_ref(), 1, true)
    }

    fn waits_for(&self, _line: LineId, _owner: &Owner) -> String {
        "the lock".to_owned()
    }
}

/// A shared mutex.
pub struct Mutex {
    key: ObjectKey,
    state: Arc<Parking<State>>,
}

impl Mutex {
    /// A mutex from `create`'s init args: `[]` (the value nil) or `[value]`.
    pub fn new(args: &Args<'_>) -> Result<Mutex, CallError> {
        args.expect(0, 1)?;
        let value = match args.len() {
            0 => store(&[0xc0]),
            _ => store(args.raw(0)),
        };
        Ok(Mutex {
            key: crate::lifecycle::next_object_key(),
            state: Parking::new(|held| State {
                value,
                holder: None,
                poisoned: false,
                held,
            }),
        })
    }

    /// `lock [id, blocking, timeout, owner]`: `[poisoned, value]`, or nil when not locked.
    fn lock(
        &self,
        p: &Params,
        caller: &Caller<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let (blocking, timeout) = blocking_params(p)?;
        let owner = caller.owner(p, 3)?;
        // A holder that has left is finished first: the lock is free (and poisoned) at once.
        self.state.settle(caller.session);
        self.state.op(|cx| {
            if cx.state.holder.is_none() && cx.waiting(LOCK) == 0 {
                let grant = cx.state.take(owner, *caller);
                grant.encode(out);
                return Ok(Outcome::Done);
            }
            if !blocking {
                encode::nil(out);
                return Ok(Outcome::Done);
            }
            Ok(Outcome::Parked(
                cx.park(LOCK, self.key, caller, owner, timeout),
            ))
        })
    }
}

impl SharedObject for Mutex {
    fn kind(&self) -> Kind {
        Kind::Mutex
    }

    fn call(
        &self,
        method: &str,
        p: &Params,
        caller: &Caller<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let a = |min, max| arity(p, Kind::Mutex, method, min, max);
        match method {
            "lock" => {
                a(1, 4)?;
                return self.lock(p, caller, out);
            }
            "get" => {
                a(1, 2)?;
                let owner = caller.owner(p, 1)?;
                self.state.op(|cx| {
                    cx.state.check_holder(owner, "get the value")?;
                    out.extend_from_slice(&cx.state.value);
                    Ok(())
                })?;
            }
            "set" | "set_unlock" => {
                a(2, 3)?;
                let owner = caller.owner(p, 2)?;
                let value = store(p.raw(1));
                self.state.op(|cx| {
                    cx.state.check_holder(owner, "set the value")?;
                    cx.state.value = value;
                    if method == "set_unlock" {
                        cx.state.drop_holder();
                    }
                    Ok(())
                })?;
                encode::nil(out);
            }
            "unlock" => {
                a(1, 2)?;
                let owner = caller.owner(p, 1)?;
                self.state.op(|cx| {
                    cx.state.check_holder(owner, "unlock")?;
                    cx.state.drop_holder();
                    Ok(())
                })?;
                encode::nil(out);
            }
            "is_poisoned" => {
                a(1, 1)?;
                encode::bool(out, self.state.read(|st| st.poisoned)?);
            }
            "clear_poison" => {
                a(1, 1)?;
                self.state.op(|cx| {
                    cx.state.poisoned = false;
                    Ok(())
                })?;
                encode::nil(out);
            }
            "locked" => {
                a(1, 1)?;
                encode::bool(out, self.state.read(|st| st.holder.is_some())?);
            }
            _ => return Err(unknown_method(Kind::Mutex, method)),
        }
        Ok(Outcome::Done)
    }

    parking_events!(state);
}
