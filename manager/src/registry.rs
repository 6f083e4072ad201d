//! The registry: every live object by id, and the names that point at them.
//!
//! Two concurrent maps (sharded, so connections creating and deleting different objects seldom
//! meet on a lock): `objects`, id to object, and `names`, name to id. Creating, naming and
//! deleting a named object happen under the write lock of that name's shard of `names`, and
//! touch `objects` only inside it (lock order: a `names` shard, then an `objects` shard, never
//! the other way), so that for every name in `names` its object is in `objects` with that
//! name, at every moment another thread can look:
//! - no two objects ever share a name, and a create-by-name racing a delete-by-name ends with
//!   the old object or a new one, never both;
//! - a lookup never returns a deleted object: an object is marked deleted and leaves `objects`
//!   under its shard's write lock, where no lookup sees it half way;
//! - a worker's delete ([`Deleter::Worker`]) counts the object's holders under that same lock,
//!   so no connection resolves the id between the count and the removal. A connection that
//!   resolved it before (its cache keeps the slot) can still take a pin in between, lock-free;
//!   it then holds a deleted object, as any holder does after a forced delete.
//!
//! Ids come from [`ids`]: a keyed permutation of a counter, never reused in a run and
//! unrelated across runs.
//!
//! Unnamed objects are freed when their last holder goes ([`holders`]): [`Registry::reap`]
//! takes them out as `delete` would. Handoffs ([`Registry::export`]) keep an object alive
//! between two processes for a while, with no connection holding it.
//!
//! The hot path takes none of these locks: each connection resolves ids through its own
//! [`ObjectCache`], which goes to the registry only the first time it meets an id, keeps the
//! object only weakly (deleting an object frees it whoever had used it), and learns of a
//! deletion from a flag on the object's [`Slot`].

#[cfg(feature = "etcd")]
mod etcd;
pub mod holders;
pub mod ids;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::Mutex;

use agora_proto::{CallError, ErrorName, Params};

use crate::auth::Role;
use crate::objects::{self, Kind, ObjectHandle};
use holders::{Held, HolderCount, Pin, Reaper};
use ids::{IdKey, IdMap, IdSequence};

/// A registered object and whether it has been deleted since. The registry holds the only
/// lasting strong reference; caches hold weak ones, and a call holds a strong one for as long
/// as it runs.
pub struct Slot {
    object: ObjectHandle,
    deleted: AtomicBool,
    id: u64,
    /// Named objects live until deleted, whatever holds them.
    named: bool,
    holders: HolderCount,
    reaper: Arc<Reaper>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("id", &self.id)
            .field("kind", &self.object.kind())
            .field("named", &self.named)
            .field("holders", &self.holders.get())
            .finish()
    }
}

impl Slot {
    /// The object.
    pub fn object(&self) -> &ObjectHandle {
        &self.object
    }

    /// The object's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// How many holders the object has (`PROTOCOL.md`, section 3.2).
    pub fn holders(&self) -> u64 {
        self.holders.get()
    }
}

struct Entry {
    slot: Arc<Slot>,
    name: Option<Arc<str>>,
    /// The object's place in the order of creation, which `objects` lists by.
    created: u64,
}

/// What `objects` reports about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's id.
    pub id: u64,
    /// Its name, if it was created with one.
    pub name: Option<String>,
    /// Its kind.
    pub kind: Kind,
    /// How many holders it has.
    pub holders: u64,
}

/// Most handoffs waiting to be adopted, over the whole manager: each costs memory until it is
/// adopted or expires, so a client exporting in a loop meets a `LimitError`.
pub const MAX_HANDOFFS: usize = 1 << 20;

/// Handoffs waiting to be adopted: per object, oldest first, and over every object in the order
/// they were made (which, with one lease for all, is the order they expire in).
#[derive(Default)]
struct Handoffs {
    by_id: HashMap<u64, VecDeque<(Instant, Pin)>>,
    order: VecDeque<(Instant, u64)>,
    len: usize,
}

/// Every object of one manager.
pub struct Registry {
    objects: DashMap<u64, Entry>,
    names: DashMap<Arc<str>, u64>,
    ids: IdSequence,
    reaper: Arc<Reaper>,
    handoffs: Mutex<Handoffs>,
    /// How long a handoff waits to be adopted.
    handoff_lease: Duration,
    /// The manager is stopping ([`Registry::stop`]): set before the walk over the objects.
    stopping: AtomicBool,
    /// The walk of [`Registry::stop`]: done once, and every other caller waits until it is.
    stopped: std::sync::Once,
    /// Where the objects live ([`crate::store`]).
    store: crate::store::Store,
}

/// How long a handoff waits to be adopted unless configured otherwise (`--handoff-seconds`).
pub const DEFAULT_HANDOFF_LEASE: Duration = Duration::from_secs(300);

/// What one connection knows of the objects and holds of them: its cache of ids, the
/// references it counted (`PROTOCOL.md`, section 3.2) and the role that bounds what it may do.
/// Dropped when the connection closes, which ends its holds.
#[derive(Default)]
pub struct Reach {
    /// Ids resolved before.
    pub cache: ObjectCache,
    /// Objects the connection holds.
    pub held: Held,
    /// What the connection authenticated as: whether it may call the admin methods, and
    /// delete objects others hold.
    pub role: Role,
}

/// Who asks for a `delete`, which decides whether the object's other holders stop it
/// (`PROTOCOL.md`, section 4.2).
#[derive(Clone, Copy)]
pub enum Deleter<'a> {
    /// An admin connection: the delete is forced, whoever holds the object.
    Admin,
    /// A worker connection, holding what its [`Held`] counts: refused while anyone else holds
    /// the object, so that one worker cannot pull an object out from under the others.
    Worker(&'a Held),
}

impl Deleter<'_> {
    /// The connection's role decides: see [`Deleter`].
    pub fn of(reach: &Reach) -> Deleter<'_> {
        match reach.role {
            Role::Admin => Deleter::Admin,
            Role::Worker => Deleter::Worker(&reach.held),
        }
    }

    /// Refuses a worker's delete of an object someone else holds: another connection, a
    /// value stored in another object, a handoff waiting to be adopted or a call in flight
    /// that names it. A connection is one holder however many references it counted.
    fn may_delete(self, slot: &Slot) -> Result<(), CallError> {
        let Deleter::Worker(held) = self else {
            return Ok(());
        };
        let own = u64::from(held.count(slot.id) > 0);
        let others = slot.holders().saturating_sub(own);
        if others == 0 {
            return Ok(());
        }
        Err(CallError::new(
            ErrorName::PermissionError,
            format!(
                "object {} is held by {others} other holder(s) (connections, references \
                 stored in other objects, handoffs): this connection authenticated with the \
                 worker authkey and may delete only objects nobody else holds; deleting it \
                 anyway needs the manager's admin authkey (--admin-authkey-file or \
                 AGORA_ADMIN_AUTHKEY)",
                slot.id
            ),
        ))
    }
}

/// The error for an id that names no live object, whether it never did here or its object was
/// deleted or freed (before or during the call).
pub(crate) fn unknown_id(id: u64) -> CallError {
    CallError::new(
        ErrorName::UnknownObjectError,
        format!(
            "no object has id {id} (it was deleted, or freed when nothing held it any more, or \
             belongs to another manager)"
        ),
    )
}

fn no_name(name: &str) -> CallError {
    CallError::key(format!("no object is named {name:?}"))
}

/// `Ok` when an existing object of kind `existing` answers a create of `kind` by `name`.
fn same_kind(name: &str, existing: Kind, kind: Kind) -> Result<(), CallError> {
    if existing == kind {
        return Ok(());
    }
    Err(CallError::type_error(format!(
        "the object named {name:?} is a {existing}, not a {kind}"
    )))
}

impl Registry {
    /// An empty registry whose ids are drawn under a fresh random key.
    pub fn new() -> std::io::Result<Registry> {
        Ok(Registry::with_key(IdKey::random()?))
    }

    /// An empty registry whose ids are drawn under `key` (tests use a fixed one).
    pub fn with_key(key: IdKey) -> Registry {
        Registry {
            objects: DashMap::new(),
            names: DashMap::new(),
            ids: IdSequence::new(key),
            reaper: Arc::default(),
            handoffs: Mutex::default(),
            handoff_lease: DEFAULT_HANDOFF_LEASE,
            stopping: AtomicBool::new(false),
            stopped: std::sync::Once::new(),
            store: crate::store::Store::Memory,
        }
    }

    /// Keeps the objects in `store` (memory unless told otherwise).
    pub fn with_store(mut self, store: crate::store::Store) -> Registry {
        self.store = store;
        self
    }

    /// The store the objects live in.
    pub fn store(&self) -> &crate::store::Store {
        &self.store
    }

    /// Sets how long a handoff waits to be adopted.
    pub fn with_handoff_lease(mut self, lease: Duration) -> Registry {
        self.handoff_lease = lease;
        self
    }

    /// The registry's side of lifetimes.
    pub fn reaper(&self) -> &Reaper {
        &self.reaper
    }

    /// Creates an object of `kind` from init args `params[first..]`. With a name this is
    /// get-or-create: an existing object of that name and kind is returned as it is.
    ///
    /// A new unnamed object has no holder yet: the caller makes the creating connection one
    /// ([`Held::add`]) before anything can reap it. (Nothing can before: an object is put on
    /// the list of the dying only when a holder goes.)
    pub fn create(
        &self,
        kind: Kind,
        name: Option<&str>,
        params: &Params,
        first: usize,
    ) -> Result<Arc<Slot>, CallError> {
        #[cfg(feature = "etcd")]
        if let crate::store::Store::Etcd(store) = &self.store {
            return self.etcd_create(store, kind, name, params, first);
        }
        let Some(name) = name else {
            let object = objects::create(kind, params, first, self)?;
            return self.insert(object, None);
        };
        // Getting an existing object, the common case, takes only read locks. While the name's
        // shard is read-locked its object cannot leave `objects`.
        if let Some(id) = self.names.get(name) {
            if let Some(entry) = self.objects.get(&*id) {
                same_kind(name, entry.slot.object.kind(), kind)?;
                return Ok(entry.slot.clone());
            }
        }
        let name: Arc<str> = Arc::from(name);
        match self.names.entry(name.clone()) {
            dashmap::Entry::Occupied(found) => {
                let id = *found.get();
                let existing = self.objects.get(&id).map(|e| e.slot.clone());
                // Cannot be missing (see the module's invariant); were it, the name is stale.
                let existing = existing.ok_or_else(|| no_name(&name))?;
                same_kind(&name, existing.object.kind(), kind)?;
                Ok(existing)
            }
            dashmap::Entry::Vacant(vacant) => {
                // Built under the name's lock, so that two creates of one name build one
                // object. A condition over a lock reads `objects` here: lock order holds.
                let object = objects::create(kind, params, first, self)?;
                let slot = self.insert(object, Some(name))?;
                vacant.insert(slot.id);
                Ok(slot)
            }
        }
    }

    /// The manager is stopping: every object answers its parked calls `ShutdownError` and
    /// grants nothing more, and later creates fail with `ShutdownError`. Runs before any
    /// connection releases what it holds, so that a holder's close during shutdown grants
    /// nothing to a waiter. Idempotent; the first call does the work.
    pub fn stop(&self) {
        // Every caller returns only once the walk is complete: a connection that closes
        // while another one walks must not release its holdings into an object not yet
        // stopped.
        self.stopped.call_once(|| {
            self.stopping.store(true, Ordering::SeqCst);
            // Collected first: an object's stop takes its own lock, never under a shard's.
            let all: Vec<ObjectHandle> =
                self.objects.iter().map(|e| e.slot.object.clone()).collect();
            all.iter().for_each(|o| o.stop());
        });
    }

    /// True once [`Registry::stop`] ran.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn insert(&self, object: ObjectHandle, name: Option<Arc<str>>) -> Result<Arc<Slot>, CallError> {
        if self.is_stopping() {
            return Err(crate::lifecycle::shutting_down());
        }
        let (created, id) = self.ids.next().ok_or_else(|| {
            CallError::runtime("this manager has handed out every object id (2^53 - 1); restart it")
        })?;
        let slot = Arc::new(Slot {
            object,
            deleted: AtomicBool::new(false),
            id,
            named: name.is_some(),
            holders: HolderCount::default(),
            reaper: self.reaper.clone(),
        });
        self.objects.insert(
            id,
            Entry {
                slot: slot.clone(),
                name,
                created,
            },
        );
        // A create that raced `stop`'s walk over the objects: stopped here instead.
        if self.is_stopping() {
            slot.object.stop();
        }
        Ok(slot)
    }

    fn slot(&self, id: u64) -> Result<Arc<Slot>, CallError> {
        if let Some(found) = self.objects.get(&id) {
            return Ok(found.slot.clone());
        }
        #[cfg(feature = "etcd")]
        if let crate::store::Store::Etcd(store) = &self.store {
            return self.etcd_resolve(store, id);
        }
        Err(unknown_id(id))
    }

    /// The object with that id.
    pub fn get(&self, id: u64) -> Result<ObjectHandle, CallError> {
        Ok(self.slot(id)?.object.clone())
    }

    /// Takes object `id` out of `objects`, unless `by` may not delete it. The check and the
    /// removal run under the write lock of the object's shard, so no connection resolves the
    /// id meanwhile, and no lookup finds a deleted object nor misses one not yet deleted;
    /// `Ok(None)` when there is no such object.
    fn remove_object(&self, id: u64, by: Deleter<'_>) -> Result<Option<Entry>, CallError> {
        match self.objects.entry(id) {
            dashmap::Entry::Occupied(found) => {
                by.may_delete(&found.get().slot)?;
                found.get().slot.deleted.store(true, Ordering::Release);
                Ok(Some(found.remove()))
            }
            dashmap::Entry::Vacant(_) => Ok(None),
        }
    }

    /// Lets a removed entry's object answer the calls parked on it (every connection's cache
    /// sees the deleted mark at its next call), then drops the registry's reference: the
    /// object's memory is freed here, or when the last call running on it ends.
    fn retire(entry: Entry) {
        entry.slot.object.retire();
    }

    /// The kind and id of the object with that name.
    pub fn lookup(&self, name: &str) -> Result<(Kind, u64), CallError> {
        #[cfg(feature = "etcd")]
        if let crate::store::Store::Etcd(store) = &self.store {
            return self.etcd_lookup(store, name);
        }
        let id = self.names.get(name).ok_or_else(|| no_name(name))?;
        let kind = self
            .objects
            .get(&*id)
            .map(|e| e.slot.object.kind())
            .ok_or_else(|| no_name(name))?;
        Ok((kind, *id))
    }

    /// Deletes an object by id, if `by` may (`PROTOCOL.md`, section 4.2).
    pub fn delete_id(&self, id: u64, by: Deleter<'_>) -> Result<(), CallError> {
        #[cfg(feature = "etcd")]
        if let crate::store::Store::Etcd(store) = &self.store {
            return self.etcd_delete(store, id, by);
        }
        // The name is read first and the `objects` guard dropped before the name's lock is
        // taken: lock order. A name never changes, so it is still the object's name then.
        let name = self
            .objects
            .get(&id)
            .map(|e| e.name.clone())
            .ok_or_else(|| unknown_id(id))?;
        let removed = match name {
            None => self.remove_object(id, by)?,
            Some(name) => {
                // Only while the name still points at this id: otherwise the object was
                // deleted meanwhile (and the name perhaps given to a new object, left as it is).
                let mut removed = Ok(None);
                self.names.remove_if(&*name, |_, &named| {
                    if named == id {
                        removed = self.remove_object(id, by);
                    }
                    matches!(removed, Ok(Some(_)))
                });
                removed?
            }
        };
        Registry::retire(removed.ok_or_else(|| unknown_id(id))?);
        Ok(())
    }

    /// Deletes an object by name, if `by` may (`PROTOCOL.md`, section 4.2); returns its id.
    pub fn delete_name(&self, name: &str, by: Deleter<'_>) -> Result<u64, CallError> {
        #[cfg(feature = "etcd")]
        if let crate::store::Store::Etcd(store) = &self.store {
            let (_, id) = self.etcd_lookup(store, name)?;
            self.etcd_delete(store, id, by)?;
            return Ok(id);
        }
        let mut removed = Ok(None);
        self.names.remove_if(name, |_, &id| {
            removed = self.remove_object(id, by);
            removed.is_ok()
        });
        match removed? {
            Some(entry) => {
                let id = entry.slot.id;
                Registry::retire(entry);
                Ok(id)
            }
            None => Err(CallError::new(
                ErrorName::UnknownObjectError,
                format!("no object is named {name:?}"),
            )),
        }
    }

    /// Every object, in the order they were created.
    pub fn list(&self) -> Vec<ObjectInfo> {
        #[cfg(feature = "etcd")]
        if let crate::store::Store::Etcd(store) = &self.store {
            return self.etcd_list(store);
        }
        self.list_objects()
            .into_iter()
            .map(|(info, _)| info)
            .collect()
    }

    /// Every object with its handle, in the order they were created. The handles are taken
    /// under the shards' locks and returned outside them: look inside an object (which takes
    /// its own lock) only afterwards.
    pub fn list_objects(&self) -> Vec<(ObjectInfo, ObjectHandle)> {
        let mut all: Vec<(u64, ObjectInfo, ObjectHandle)> = self
            .objects
            .iter()
            .map(|e| {
                let info = ObjectInfo {
                    id: *e.key(),
                    name: e.name.as_deref().map(str::to_owned),
                    kind: e.slot.object.kind(),
                    holders: e.slot.holders(),
                };
                (e.created, info, e.slot.object.clone())
            })
            .collect();
        all.sort_by_key(|(created, ..)| *created);
        all.into_iter()
            .map(|(_, info, object)| (info, object))
            .collect()
    }

    /// How many objects there are, by kind (in [`Kind::ALL`] order).
    pub fn count_by_kind(&self) -> [u64; Kind::ALL.len()] {
        let mut counts = [0u64; Kind::ALL.len()];
        for e in self.objects.iter() {
            let kind = e.slot.object.kind();
            if let Some(i) = Kind::ALL.iter().position(|k| *k == kind) {
                counts[i] += 1;
            }
        }
        counts
    }
}

/// Lifetimes: freeing the objects nobody holds, handoffs, and the references a request sends.
impl Registry {
    /// Frees every unnamed object whose last holder went, as `delete` would, and those their
    /// values held in turn. Returns how many it freed. Call it outside any
    /// [`CallScope`](holders::CallScope) and with no object lock held.
    #[inline]
    pub fn reap(&self) -> usize {
        // After nearly every request there is nothing to do: one load, no call.
        if !self.reaper.any_dying() {
            return 0;
        }
        self.reap_dying()
    }

    fn reap_dying(&self) -> usize {
        let mut freed = 0;
        loop {
            let dying = self.reaper.take();
            if dying.is_empty() {
                return freed;
            }
            for slot in dying {
                // A slot that gained a holder since (or was already reaped) stays as it is.
                if !slot.holders.kill_if_unheld() {
                    continue;
                }
                let entry = match self.objects.entry(slot.id) {
                    dashmap::Entry::Occupied(found) if Arc::ptr_eq(&found.get().slot, &slot) => {
                        found.get().slot.deleted.store(true, Ordering::Release);
                        found.remove()
                    }
                    // Deleted already.
                    _ => continue,
                };
                freed += 1;
                tracing::debug!(id = slot.id, kind = %slot.object.kind(), "freed: no holder left");
                // Dropping the entry drops the object, unless a call still runs on it, and
                // with it its values, whose pins put more slots on the list.
                Registry::retire(entry);
            }
        }
    }

    /// Adds a handoff of the object `slot`, for another process to adopt within the lease.
    pub fn export(&self, slot: &Arc<Slot>) -> Result<(), CallError> {
        let pin = Pin::new(slot).ok_or_else(|| unknown_id(slot.id))?;
        let until = Instant::now() + self.handoff_lease;
        let mut handoffs = self.handoffs.lock();
        if handoffs.len >= MAX_HANDOFFS {
            return Err(CallError::new(
                ErrorName::LimitError,
                format!(
                    "{MAX_HANDOFFS} handoffs are waiting to be adopted; adopt some or wait \
                     for them to expire"
                ),
            ));
        }
        handoffs
            .by_id
            .entry(slot.id)
            .or_default()
            .push_back((until, pin));
        handoffs.order.push_back((until, slot.id));
        handoffs.len += 1;
        Ok(())
    }

    /// Counts one reference to `slot` for the adopting connection: the oldest handoff of the
    /// object if there is one, a new reference otherwise.
    pub fn adopt(&self, slot: &Arc<Slot>, held: &mut Held) -> Result<(), CallError> {
        let handoff = {
            let mut handoffs = self.handoffs.lock();
            let queue = handoffs.by_id.get_mut(&slot.id);
            let taken = queue.and_then(VecDeque::pop_front);
            if taken.is_some() {
                handoffs.len -= 1;
                if handoffs.by_id.get(&slot.id).is_some_and(VecDeque::is_empty) {
                    handoffs.by_id.remove(&slot.id);
                }
            }
            taken
        };
        match handoff {
            Some((_, pin)) => held.add_pin(pin),
            None if held.add(slot) => {}
            None => return Err(unknown_id(slot.id)),
        }
        Ok(())
    }

    /// Drops the handoffs whose lease ended by `now`. Returns how many.
    pub fn expire_handoffs(&self, now: Instant) -> usize {
        let mut expired = Vec::new();
        {
            let mut handoffs = self.handoffs.lock();
            while let Some(&(until, id)) = handoffs.order.front() {
                if until > now {
                    break;
                }
                handoffs.order.pop_front();
                // The object's oldest handoff, unless an adopt took that one already (then its
                // front is younger, and this entry of `order` is stale).
                let Some(queue) = handoffs.by_id.get_mut(&id) else {
                    continue;
                };
                if queue.front().is_some_and(|(t, _)| *t <= now) {
                    expired.extend(queue.pop_front());
                    if queue.is_empty() {
                        handoffs.by_id.remove(&id);
                    }
                    handoffs.len -= 1;
                }
            }
        }
        // Pins dropped outside the lock.
        expired.len()
    }

    /// How many handoffs wait to be adopted.
    pub fn handoffs(&self) -> usize {
        self.handoffs.lock().len
    }

    /// Checks the references inside a request's params (`PROTOCOL.md`, section 3.2): each must
    /// name a live object of the kind it says. Returns their slots, for the values the request
    /// stores to pin. Worth calling only when [`Params::may_hold_ext`]: the walk finds nothing
    /// in params without an ext value.
    pub fn admit(
        &self,
        cache: &mut ObjectCache,
        params: &Params,
    ) -> Result<Vec<Arc<Slot>>, CallError> {
        let raw = params.encoded();
        let mut found = Vec::new();
        let mut malformed = false;
        agora_proto::objref::for_each_ref(raw, |f| match f {
            agora_proto::objref::Found::Ref { kind, id } => found.push((kind, id)),
            agora_proto::objref::Found::Malformed => malformed = true,
        });
        if malformed {
            return Err(CallError::value(
                "a value holds ext type 1, which is an object reference, but its data is not \
                 [kind, id] (see PROTOCOL.md, section 3)",
            ));
        }
        let mut slots: Vec<Arc<Slot>> = Vec::with_capacity(found.len());
        for (kind, id) in found {
            if slots.iter().any(|s| s.id == id) {
                continue;
            }
            let slot = cache.get(self, id).map_err(|_| {
                CallError::new(
                    ErrorName::UnknownObjectError,
                    format!(
                        "a value refers to {kind} {id}, which does not exist (it was freed or \
                         deleted, or belongs to another manager); nothing was changed"
                    ),
                )
            })?;
            let actual = slot.object.kind();
            if actual.as_str() != kind {
                return Err(CallError::type_error(format!(
                    "a value refers to {kind} {id}, but object {id} is a {actual}; nothing \
                     was changed"
                )));
            }
            slots.push(slot);
        }
        Ok(slots)
    }

    /// Counts for `held` every reference in `result`, a reply about to be written to its
    /// connection (`PROTOCOL.md`, section 3.2). Only references taken from stored values can
    /// name an object the connection might not hold yet, so callers skip this while no stored
    /// value holds one ([`Reaper::any_nested`]) and the call dropped none.
    pub fn count_refs(&self, cache: &mut ObjectCache, held: &mut Held, result: &[u8]) {
        if !agora_proto::objref::may_hold_refs(result) {
            return;
        }
        agora_proto::objref::for_each_ref(result, |f| {
            if let agora_proto::objref::Found::Ref { id, .. } = f {
                // An object gone since it was stored is simply not counted: the client's
                // later decref of it is ignored.
                if let Ok(slot) = cache.get(self, id) {
                    held.add(&slot);
                }
            }
        });
    }
}

/// Most ids one connection remembers; past that the cache starts over.
const CACHE_CAPACITY: usize = 4096;

/// One connection's memory of the objects it has used, so that resolving an id takes no lock
/// shared with other connections. It holds them weakly: a deleted object is freed when the
/// registry lets it go, not when every connection that used it has moved on.
#[derive(Default)]
pub struct ObjectCache {
    slots: IdMap<Weak<Slot>>,
}

impl ObjectCache {
    /// The object with that id: from the cache while it is not deleted, else from the registry.
    /// The slot returned keeps the object alive for the call; the cache does not.
    ///
    /// One atomic read-modify-write a call (taking the strong reference; dropping it is the
    /// second), as cloning the object's handle cost before.
    pub fn get(&mut self, registry: &Registry, id: u64) -> Result<Arc<Slot>, CallError> {
        if let Some(weak) = self.slots.get(&id) {
            if let Some(slot) = weak.upgrade() {
                if !slot.deleted.load(Ordering::Acquire) {
                    return Ok(slot);
                }
            }
            // Ids are never reused: a deleted id stays unknown for good.
            self.slots.remove(&id);
            return Err(unknown_id(id));
        }
        let slot = registry.slot(id)?;
        if self.slots.len() >= CACHE_CAPACITY {
            self.slots.clear();
        }
        self.slots.insert(id, Arc::downgrade(&slot));
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicU64, AtomicUsize};
    use std::sync::Mutex;

    fn no_args() -> Params {
        Params::from_array(bytes::Bytes::from_static(&[0x90])).expect("an empty array")
    }

    fn registry() -> Registry {
        Registry::with_key(IdKey::from_seed(7))
    }

    #[test]
    fn get_or_create_by_name_and_delete_by_either() {
        let r = registry();
        let a = r.create(Kind::Dict, Some("a"), &no_args(), 0).unwrap().id();
        assert_eq!(
            r.create(Kind::Dict, Some("a"), &no_args(), 0).unwrap().id(),
            a
        );
        let err = r.create(Kind::List, Some("a"), &no_args(), 0).unwrap_err();
        assert_eq!(err.name, ErrorName::TypeError);
        assert_eq!(r.lookup("a").unwrap(), (Kind::Dict, a));
        r.delete_id(a, Deleter::Admin).unwrap();
        assert_eq!(r.lookup("a").unwrap_err().name, ErrorName::KeyError);
        assert_eq!(
            r.get(a).err().map(|e| e.name),
            Some(ErrorName::UnknownObjectError)
        );
        let b = r.create(Kind::List, Some("a"), &no_args(), 0).unwrap().id();
        assert_ne!(a, b, "ids are never reused");
        r.delete_name("a", Deleter::Admin).unwrap();
        assert_eq!(
            r.get(b).err().map(|e| e.name),
            Some(ErrorName::UnknownObjectError)
        );
        assert_eq!(
            r.delete_name("a", Deleter::Admin).unwrap_err().name,
            ErrorName::UnknownObjectError
        );
        assert_eq!(
            r.delete_id(b, Deleter::Admin).unwrap_err().name,
            ErrorName::UnknownObjectError
        );
    }

    #[test]
    fn a_worker_deletes_only_what_nobody_else_holds() {
        let r = registry();
        let (mut mine, mut theirs) = (Held::default(), Held::default());
        let shared = r.create(Kind::Dict, None, &no_args(), 0).unwrap();
        assert!(mine.add(&shared) && mine.add(&shared) && theirs.add(&shared));
        let err = r
            .delete_id(shared.id(), Deleter::Worker(&mine))
            .unwrap_err();
        assert_eq!(err.name, ErrorName::PermissionError);
        assert!(err.message.contains("held by 1 other"), "{}", err.message);
        theirs.forget(shared.id());
        r.delete_id(shared.id(), Deleter::Worker(&mine)).unwrap();

        let named = r.create(Kind::List, Some("n"), &no_args(), 0).unwrap();
        assert!(theirs.add(&named));
        let err = r.delete_name("n", Deleter::Worker(&mine)).unwrap_err();
        assert_eq!(err.name, ErrorName::PermissionError);
        assert_eq!(
            r.lookup("n").unwrap().1,
            named.id(),
            "a refused delete keeps the name"
        );
        r.delete_name("n", Deleter::Admin).unwrap();
        let unheld = r.create(Kind::List, Some("u"), &no_args(), 0).unwrap().id();
        assert_eq!(r.delete_name("u", Deleter::Worker(&mine)).unwrap(), unheld);
    }

    #[test]
    fn objects_are_listed_in_the_order_they_were_created() {
        let r = registry();
        let ids: Vec<u64> = (0..50)
            .map(|_| r.create(Kind::Lock, None, &no_args(), 0).unwrap().id())
            .collect();
        let listed: Vec<u64> = r.list().into_iter().map(|info| info.id).collect();
        assert_eq!(listed, ids);
    }

    #[test]
    fn a_cache_does_not_keep_a_deleted_object_alive() {
        let r = registry();
        let mut cache = ObjectCache::default();
        let id = r.create(Kind::Dict, None, &no_args(), 0).unwrap().id();
        let object = Arc::downgrade(cache.get(&r, id).unwrap().object());
        r.delete_id(id, Deleter::Admin).unwrap();
        assert!(
            object.upgrade().is_none(),
            "the object outlived its deletion"
        );
        let err = cache.get(&r, id).err().map(|e| e.name);
        assert_eq!(err, Some(ErrorName::UnknownObjectError));
    }

    /// A small deterministic generator (SplitMix64), so that a failure runs again as it was.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % n
        }
    }

    /// Deletions as they returned, each stamped with a clock read after it returned, so that a
    /// lookup can tell the deletions that finished before it began.
    #[derive(Default)]
    struct Deletions {
        clock: AtomicU64,
        at: Mutex<HashMap<u64, u64>>,
    }

    impl Deletions {
        fn now(&self) -> u64 {
            self.clock.load(Ordering::SeqCst)
        }

        fn record(&self, id: u64) {
            let t = self.clock.fetch_add(1, Ordering::SeqCst);
            self.at.lock().unwrap().entry(id).or_insert(t);
        }

        /// True when `id`'s deletion returned before the clock read `began`.
        fn before(&self, id: u64, began: u64) -> bool {
            self.at.lock().unwrap().get(&id).is_some_and(|&t| t < began)
        }

        fn contains(&self, id: u64) -> bool {
            self.at.lock().unwrap().contains_key(&id)
        }
    }

    /// Threads create (by name and without), look up and delete the same few names and ids at
    /// random. During the run: a lookup by name or id never returns an object whose deletion
    /// returned before the lookup began, and a deleted object is gone for its deleter at once.
    /// Afterwards: no two objects share a name, every name leads to a listed object and every
    /// named object is what its name leads to, and exactly the listed objects are alive.
    #[test]
    fn concurrent_creates_lookups_and_deletes_keep_names_and_ids_consistent() {
        const THREADS: u64 = 8;
        const OPS: u64 = 20_000;
        const NAMES: u64 = 6;
        let r = registry();
        let deleted = Deletions::default();
        let created: Mutex<HashSet<u64>> = Mutex::default();
        // Ids recently created, shared by the threads so that they use and delete each other's.
        let recent: Vec<AtomicU64> = (0..16).map(|_| AtomicU64::new(0)).collect();
        let lookups = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let (r, deleted, created, recent) = (&r, &deleted, &created, &recent);
                let lookups = &lookups;
                scope.spawn(move || {
                    let mut rng = Rng(t);
                    for _ in 0..OPS {
                        let name = format!("n{}", rng.below(NAMES));
                        let recent = &recent[rng.below(recent.len() as u64) as usize];
                        let began = deleted.now();
                        match rng.below(6) {
                            0 | 1 => {
                                let named = rng.below(2) == 0;
                                let id = r
                                    .create(Kind::Lock, named.then_some(&*name), &no_args(), 0)
                                    .expect("create")
                                    .id();
                                assert!(!deleted.before(id, began), "create gave deleted {id}");
                                created.lock().unwrap().insert(id);
                                recent.store(id, Ordering::Relaxed);
                            }
                            2 => {
                                let id = recent.load(Ordering::Relaxed);
                                if r.get(id).is_ok() {
                                    assert!(!deleted.before(id, began), "get gave deleted {id}");
                                    lookups.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            3 => {
                                if let Ok((kind, id)) = r.lookup(&name) {
                                    assert_eq!(kind, Kind::Lock);
                                    assert!(
                                        !deleted.before(id, began),
                                        "lookup of {name} gave deleted {id}"
                                    );
                                    lookups.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            4 => {
                                let id = recent.load(Ordering::Relaxed);
                                if r.delete_id(id, Deleter::Admin).is_ok() {
                                    assert!(r.get(id).is_err(), "{id} survived its deletion");
                                    deleted.record(id);
                                }
                            }
                            _ => {
                                let id = r.lookup(&name).map(|(_, id)| id);
                                if r.delete_name(&name, Deleter::Admin).is_ok() {
                                    // Whichever object went, the one looked up may be it.
                                    if let Ok(id) = id {
                                        if r.get(id).is_err() {
                                            deleted.record(id);
                                        }
                                    }
                                }
                            }
                        }
                    }
                });
            }
        });
        assert!(
            lookups.load(Ordering::Relaxed) > 0,
            "no lookup found anything"
        );

        let mut names = HashSet::new();
        let mut live = HashSet::new();
        for info in r.list() {
            live.insert(info.id);
            assert!(!deleted.contains(info.id), "deleted {} is listed", info.id);
            assert!(r.get(info.id).is_ok());
            if let Some(name) = &info.name {
                assert!(names.insert(name.clone()), "two objects are named {name}");
                assert_eq!(r.lookup(name).unwrap().1, info.id, "{name} leads elsewhere");
            }
        }
        for n in 0..NAMES {
            if let Ok((_, id)) = r.lookup(&format!("n{n}")) {
                assert!(live.contains(&id), "n{n} leads to an unlisted object");
            }
        }
        for &id in created.lock().unwrap().iter() {
            assert_eq!(r.get(id).is_ok(), live.contains(&id), "object {id}");
        }
    }
}
