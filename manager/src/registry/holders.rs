//! Holders: what keeps an unnamed object alive (`PROTOCOL.md`, section 3.2).
//!
//! Every object's [`Slot`] counts its holders, each one a [`Pin`] (a counted strong reference
//! to the slot):
//! - a connection that holds the object: one pin, however many references the connection
//!   counted ([`Held`] keeps the count);
//! - each reference nested in a value a live object stores: one pin per occurrence, owned by
//!   the stored value ([`Pins`]), so that whatever drops the value (an overwrite, a pop, a get,
//!   the container being freed) drops its pins with it, and no object needs code of its own;
//! - each handoff waiting to be adopted (kept by the registry).
//!
//! # Why freeing waits for [`Registry::reap`]
//! A pin is dropped wherever a value goes: inside an object's mutex, while a connection closes,
//! while a container is being freed. Freeing the object right there would take registry and
//! object locks under other locks, and recurse through chains of nested objects. So the last
//! pin of an unnamed object only puts its slot on the registry's list of the dying; whoever
//! calls `reap` next frees them (a connection at the end of each request and when it closes,
//! and the manager's tick), in one loop: freeing a container drops its values, whose pins put
//! more slots on the list, which the same loop frees.
//!
//! # Why a slot may come back from zero
//! A reference read out of a value (a queue item got, a dict entry popped) is counted for the
//! reading connection from the reply, after the call, when the value and its pin are already
//! gone. So during a request ([`CallScope`]) dropped pins are held back until the reply's
//! references are counted: the reader's pin is taken before the value's is let go. Elsewhere
//! an object at zero may still gain a pin until `reap` marks it dead. The count and the dead
//! mark are one atomic word, so a pin is either taken before the mark (and `reap` leaves the
//! object alone) or refused after it.
//!
//! [`Registry::reap`]: super::Registry::reap

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::ids::IdMap;
use super::Slot;

/// The bit of a slot's holder word that marks it dead: freed, never to be held again.
const DEAD: u64 = 1 << 63;

/// A slot's holder count and dead mark, in one word.
#[derive(Debug, Default)]
pub struct HolderCount(AtomicU64);

impl HolderCount {
    /// The number of holders now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire) & !DEAD
    }

    /// Adds a holder unless the slot is dead.
    fn try_add(&self) -> bool {
        let mut now = self.0.load(Ordering::Acquire);
        loop {
            if now & DEAD != 0 {
                return false;
            }
            match self
                .0
                .compare_exchange_weak(now, now + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(seen) => now = seen,
            }
        }
    }

    /// Removes a holder; true when it was the last.
    fn remove(&self) -> bool {
        self.0.fetch_sub(1, Ordering::AcqRel) & !DEAD == 1
    }

    /// Marks the slot dead if it has no holder. True when this call marked it.
    pub(super) fn kill_if_unheld(&self) -> bool {
        self.0
            .compare_exchange(0, DEAD, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// The registry's side of lifetimes: the slots whose last holder went, waiting for
/// [`Registry::reap`](super::Registry::reap), and how many pins stored values hold.
#[derive(Debug, Default)]
pub struct Reaper {
    dying: Mutex<Vec<Arc<Slot>>>,
    /// `dying` is not empty: read at the end of every request, so that the common case costs
    /// one load and no lock.
    any: AtomicBool,
    /// Pins owned by stored values, over every object. While it is zero no reply can hold a
    /// reference taken from a stored value, and replies are not searched for references.
    nested: AtomicUsize,
}

impl Reaper {
    fn push(&self, slot: Arc<Slot>) {
        let mut dying = self.dying.lock();
        dying.push(slot);
        self.any.store(true, Ordering::Release);
    }

    /// Takes the slots waiting to be freed.
    pub(super) fn take(&self) -> Vec<Arc<Slot>> {
        if !self.any.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut dying = self.dying.lock();
        self.any.store(false, Ordering::Release);
        std::mem::take(&mut *dying)
    }

    /// True when some slot waits to be freed.
    #[inline]
    pub fn any_dying(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// True while some stored value holds a reference.
    pub fn any_nested(&self) -> bool {
        self.nested.load(Ordering::Acquire) > 0
    }
}

/// One holder of an object. Dropping it removes the holder; dropping the last one of an
/// unnamed object lets [`Registry::reap`](super::Registry::reap) free the object.
///
/// It points at the slot weakly: the registry's entry is the slot's only lasting owner, so that
/// `delete` frees an object at once however many connections and values still hold it (their
/// pins then count for nothing).
#[derive(Debug)]
pub struct Pin {
    slot: Weak<Slot>,
    id: u64,
}

impl Pin {
    /// A new holder of `slot`; `None` once the slot is dead.
    pub fn new(slot: &Arc<Slot>) -> Option<Pin> {
        slot.holders.try_add().then(|| Pin {
            slot: Arc::downgrade(slot),
            id: slot.id,
        })
    }

    /// The id of the object held.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// False once the object has left the registry (deleted or freed).
    fn is_live(&self) -> bool {
        self.slot
            .upgrade()
            .is_some_and(|slot| !slot.deleted.load(Ordering::Acquire))
    }
}

impl Clone for Pin {
    fn clone(&self) -> Pin {
        // A slot this pin holds cannot be dead, so adding needs no check; a slot already out
        // of the registry (deleted) counts nothing any more.
        if let Some(slot) = self.slot.upgrade() {
            slot.holders.0.fetch_add(1, Ordering::AcqRel);
        }
        Pin {
            slot: self.slot.clone(),
            id: self.id,
        }
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let Some(slot) = self.slot.upgrade() else {
            return;
        };
        let deferred = CALL.try_with(|call| match call.try_borrow_mut() {
            Ok(mut call) if call.active => {
                call.deferred.push(slot.clone());
                true
            }
            _ => false,
        });
        if deferred != Ok(true) {
            release(&slot);
        }
    }
}

fn release(slot: &Arc<Slot>) {
    if slot.holders.remove() && !slot.named {
        slot.reaper.push(slot.clone());
    }
}

/// The pins a stored value owns: one per reference inside it. Empty (a null pointer, no
/// allocation) for the values of nearly every call, which hold no reference.
#[derive(Debug, Default)]
pub struct Pins(Option<Box<PinSet>>);

#[derive(Debug)]
struct PinSet {
    pins: Vec<Pin>,
    /// Where [`Reaper::nested`] is kept, counted up when the set is made and down when it goes.
    reaper: Arc<Reaper>,
}

impl Pins {
    /// Pins for every reference inside `raw`, a value being stored by the current request.
    /// The references were checked by [`CallScope::admit`]; one whose object died since is
    /// stored without a pin, as if the object had been deleted just after.
    pub fn of(raw: &[u8]) -> Pins {
        let found = CALL.try_with(|call| {
            let Ok(call) = call.try_borrow() else {
                return None;
            };
            let reaper = call.admitted.first()?.reaper.clone();
            if !agora_proto::objref::may_hold_refs(raw) {
                return None;
            }
            let mut pins = Vec::new();
            agora_proto::objref::for_each_ref(raw, |found| {
                if let agora_proto::objref::Found::Ref { id, .. } = found {
                    let slot = call.admitted.iter().find(|s| s.id == id);
                    pins.extend(slot.and_then(Pin::new));
                }
            });
            Some(PinSet { pins, reaper })
        });
        Pins::from_set(found.ok().flatten())
    }

    fn from_set(set: Option<PinSet>) -> Pins {
        match set {
            Some(set) if !set.pins.is_empty() => {
                set.reaper
                    .nested
                    .fetch_add(set.pins.len(), Ordering::AcqRel);
                Pins(Some(Box::new(set)))
            }
            _ => Pins(None),
        }
    }

    /// How many references the value holds.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |set| set.pins.len())
    }

    /// True for a value that holds no reference.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl Clone for Pins {
    fn clone(&self) -> Pins {
        Pins::from_set(self.0.as_ref().map(|set| PinSet {
            pins: set.pins.clone(),
            reaper: set.reaper.clone(),
        }))
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        if let Some(set) = &self.0 {
            set.reaper
                .nested
                .fetch_sub(set.pins.len(), Ordering::AcqRel);
        }
    }
}

/// What the current thread's request has going on: whether one is running, the pins it
/// dropped (held back until its reply is counted) and the objects its params reference.
#[derive(Default)]
struct CallState {
    active: bool,
    deferred: Vec<Arc<Slot>>,
    admitted: Vec<Arc<Slot>>,
}

thread_local! {
    // Const-initialized: every request enters and leaves a scope, and a lazily initialized
    // thread-local would check its state on each access.
    static CALL: RefCell<CallState> = const {
        RefCell::new(CallState {
            active: false,
            deferred: Vec::new(),
            admitted: Vec::new(),
        })
    };
}

/// One request, as far as lifetimes go: while it lives, pins dropped on this thread are held
/// back, and values stored pin the objects [`CallScope::admit`] checked. Dropping it lets the
/// held-back pins go (call [`Registry::reap`](super::Registry::reap) after it).
///
/// Not reentrant: a request never runs another on its thread.
pub struct CallScope(());

impl CallScope {
    /// Starts a request on this thread.
    pub fn enter() -> CallScope {
        CALL.with(|call| call.borrow_mut().active = true);
        CallScope(())
    }

    /// Records the objects the request's params reference, for the values it stores to pin.
    pub fn admit(&self, slots: Vec<Arc<Slot>>) {
        if slots.is_empty() {
            return;
        }
        let before = CALL.with(|call| std::mem::replace(&mut call.borrow_mut().admitted, slots));
        // Dropped outside the borrow (see `Drop`).
        drop(before);
    }
}

/// The object `id`, when the current request's params reference it (checked live by
/// [`CallScope::admit`]): how a call reaches another object its params name, such as a set
/// taking another set as operand.
pub fn admitted_object(id: u64) -> Option<crate::objects::ObjectHandle> {
    CALL.try_with(|call| {
        let call = call.try_borrow().ok()?;
        let slot = call.admitted.iter().find(|s| s.id == id)?;
        Some(slot.object().clone())
    })
    .ok()
    .flatten()
}

impl CallScope {
    /// True when the request dropped a pin so far: it took a value holding a reference out of
    /// an object, and its reply may carry that reference.
    pub fn dropped_pins(&self) -> bool {
        CALL.with(|call| !call.borrow().deferred.is_empty())
    }
}

impl Drop for CallScope {
    fn drop(&mut self) {
        let (deferred, admitted) = CALL.with(|call| {
            let mut call = call.borrow_mut();
            call.active = false;
            if call.deferred.is_empty() && call.admitted.is_empty() {
                // The common case: nothing to take, nothing to allocate or free.
                return (Vec::new(), Vec::new());
            }
            (
                std::mem::take(&mut call.deferred),
                std::mem::take(&mut call.admitted),
            )
        });
        // Outside the borrow: releasing touches no thread-local, but dropping `admitted` may
        // drop the last strong reference to a slot, and with it an object and its values.
        deferred.iter().for_each(release);
        drop(admitted);
    }
}

/// The objects one connection holds, each with the number of references the connection
/// counted (`PROTOCOL.md`, section 3.2) and the one pin that makes the connection a holder.
/// Dropped with its connection, however it closes: every pin goes with it.
///
/// Entries of objects deleted meanwhile (by this connection or another) are dropped when the
/// table has doubled since it was last swept, so that a long-lived connection that keeps
/// meeting objects others delete does not grow: amortized, a sweep costs O(1) per entry added.
#[derive(Debug, Default)]
pub struct Held {
    by_id: IdMap<(u64, Pin)>,
    /// The size at which the next sweep runs.
    sweep_at: usize,
}

/// The smallest table that is ever swept.
const FIRST_SWEEP: usize = 64;

impl Held {
    /// Counts one reference to `slot`. False when the object is dead (freed meanwhile).
    pub fn add(&mut self, slot: &Arc<Slot>) -> bool {
        if let Some((count, _)) = self.by_id.get_mut(&slot.id) {
            *count += 1;
            return true;
        }
        match Pin::new(slot) {
            Some(pin) => {
                self.insert(slot.id, pin);
                true
            }
            None => false,
        }
    }

    /// Counts one reference, carried by a pin taken elsewhere (a handoff being adopted).
    pub fn add_pin(&mut self, pin: Pin) {
        let id = pin.id();
        match self.by_id.get_mut(&id) {
            // The connection is a holder already: one pin is enough; `pin` goes.
            Some((count, _)) => *count += 1,
            None => self.insert(id, pin),
        }
    }

    fn insert(&mut self, id: u64, pin: Pin) {
        if self.by_id.len() >= self.sweep_at.max(FIRST_SWEEP) {
            self.by_id.retain(|_, (_, pin)| pin.is_live());
            self.sweep_at = 2 * self.by_id.len();
        }
        self.by_id.insert(id, (1, pin));
    }

    /// Forgets object `id`, deleted: its count means nothing any more.
    pub fn forget(&mut self, id: u64) {
        self.by_id.remove(&id);
    }

    /// Uncounts `n` references to object `id`, fewer if the connection counted fewer; at zero
    /// the connection stops holding it. Unknown ids are ignored.
    pub fn remove(&mut self, id: u64, n: u64) {
        if let Some((count, _)) = self.by_id.get_mut(&id) {
            *count = count.saturating_sub(n);
            if *count == 0 {
                self.by_id.remove(&id);
            }
        }
    }

    /// The references counted to object `id`.
    pub fn count(&self, id: u64) -> u64 {
        self.by_id.get(&id).map_or(0, |(count, _)| *count)
    }

    /// How many objects the connection holds.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when the connection holds nothing.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}
