//! The registry: every live object by id, and the names that point at them.
//!
//! Creating, naming and deleting take the registry's locks (lock order: `names`, then
//! `objects`). The hot path does not: each connection resolves ids through its own
//! [`ObjectCache`], which goes to the registry only the first time it meets an id, and learns
//! of a deletion from a flag on the object's [`Slot`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use agora_proto::{CallError, ErrorName, Params};

use crate::objects::{self, Kind, ObjectHandle};

/// A registered object and whether it has been deleted since.
pub struct Slot {
    object: ObjectHandle,
    deleted: AtomicBool,
}

struct Entry {
    slot: Arc<Slot>,
    name: Option<String>,
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
}

/// Every object of one manager.
pub struct Registry {
    objects: RwLock<HashMap<u64, Entry>>,
    names: Mutex<HashMap<String, u64>>,
    next_id: AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            objects: RwLock::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }
}

fn unknown_id(id: u64) -> CallError {
    CallError::new(
        ErrorName::UnknownObjectError,
        format!("no object has id {id} (it was deleted, or belongs to another manager)"),
    )
}

impl Registry {
    /// Creates an object of `kind` from init args `params[first..]`. With a name this is
    /// get-or-create: an existing object of that name and kind is returned as it is.
    pub fn create(
        &self,
        kind: Kind,
        name: Option<&str>,
        params: &Params,
        first: usize,
    ) -> Result<u64, CallError> {
        let Some(name) = name else {
            let object = objects::create(kind, params, first, self)?;
            return Ok(self.insert(object, None));
        };
        let mut names = self.names.lock();
        if let Some(&id) = names.get(name) {
            let existing = self.get(id)?.kind();
            if existing != kind {
                return Err(CallError::type_error(format!(
                    "the object named {name:?} is a {existing}, not a {kind}"
                )));
            }
            return Ok(id);
        }
        let object = objects::create(kind, params, first, self)?;
        let id = self.insert(object, Some(name.to_owned()));
        names.insert(name.to_owned(), id);
        Ok(id)
    }

    fn insert(&self, object: ObjectHandle, name: Option<String>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            object,
            deleted: AtomicBool::new(false),
        });
        self.objects.write().insert(id, Entry { slot, name });
        id
    }

    fn slot(&self, id: u64) -> Result<Arc<Slot>, CallError> {
        self.objects
            .read()
            .get(&id)
            .map(|e| e.slot.clone())
            .ok_or_else(|| unknown_id(id))
    }

    /// The object with that id.
    pub fn get(&self, id: u64) -> Result<ObjectHandle, CallError> {
        Ok(self.slot(id)?.object.clone())
    }

    /// Marks a removed entry's object deleted (every connection's cache sees it at its next
    /// call) and lets the object answer the calls parked on it.
    fn retire(entry: Entry) {
        entry.slot.deleted.store(true, Ordering::Release);
        entry.slot.object.retire();
    }

    /// The kind and id of the object with that name.
    pub fn lookup(&self, name: &str) -> Result<(Kind, u64), CallError> {
        let id = *self
            .names
            .lock()
            .get(name)
            .ok_or_else(|| CallError::key(format!("no object is named {name:?}")))?;
        Ok((self.get(id)?.kind(), id))
    }

    /// Deletes an object by id.
    pub fn delete_id(&self, id: u64) -> Result<(), CallError> {
        let mut names = self.names.lock();
        let entry = self
            .objects
            .write()
            .remove(&id)
            .ok_or_else(|| unknown_id(id))?;
        if let Some(name) = &entry.name {
            names.remove(name);
        }
        drop(names);
        Registry::retire(entry);
        Ok(())
    }

    /// Deletes an object by name.
    pub fn delete_name(&self, name: &str) -> Result<(), CallError> {
        let mut names = self.names.lock();
        let id = names.remove(name).ok_or_else(|| {
            CallError::new(
                ErrorName::UnknownObjectError,
                format!("no object is named {name:?}"),
            )
        })?;
        let entry = self.objects.write().remove(&id);
        drop(names);
        if let Some(entry) = entry {
            Registry::retire(entry);
        }
        Ok(())
    }

    /// Every object, ordered by id.
    pub fn list(&self) -> Vec<ObjectInfo> {
        let mut all: Vec<ObjectInfo> = self
            .objects
            .read()
            .iter()
            .map(|(&id, e)| ObjectInfo {
                id,
                name: e.name.clone(),
                kind: e.slot.object.kind(),
            })
            .collect();
        all.sort_by_key(|info| info.id);
        all
    }
}

/// Most ids one connection remembers; past that the cache starts over.
const CACHE_CAPACITY: usize = 4096;

/// One connection's memory of the objects it has used, so that resolving an id takes no lock
/// shared with other connections.
#[derive(Default)]
pub struct ObjectCache {
    slots: HashMap<u64, Arc<Slot>>,
}

impl ObjectCache {
    /// The object with that id: from the cache while it is not deleted, else from the registry.
    pub fn get(&mut self, registry: &Registry, id: u64) -> Result<ObjectHandle, CallError> {
        if let Some(slot) = self.slots.get(&id) {
            if !slot.deleted.load(Ordering::Acquire) {
                return Ok(slot.object.clone());
            }
            self.slots.remove(&id);
            return Err(unknown_id(id));
        }
        let slot = registry.slot(id)?;
        if self.slots.len() >= CACHE_CAPACITY {
            self.slots.clear();
        }
        let object = slot.object.clone();
        self.slots.insert(id, slot);
        Ok(object)
    }
}
