//! The registry over the etcd store: ids and names are the store's, shared by every manager
//! serving it; this registry keeps a slot for each object its connections have reached, so
//! that holders, caches and deletion work as they do for memory objects.
//!
//! An etcd object's slot counts as named: it is never freed here when its last local holder
//! goes, since holders through other managers are not counted here. It lives until `delete`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use agora_proto::{encode, CallError, Params};

use super::{no_name, unknown_id, Deleter, Entry, HolderCount, ObjectInfo, Registry, Slot};
use crate::objects::{Kind, ObjectHandle};
use crate::store::etcd::{wait_for, EtcdStore};

impl Registry {
    pub(super) fn etcd_create(
        &self,
        store: &Arc<EtcdStore>,
        kind: Kind,
        name: Option<&str>,
        params: &Params,
        first: usize,
    ) -> Result<Arc<Slot>, CallError> {
        if self.is_stopping() {
            return Err(crate::lifecycle::shutting_down());
        }
        let mut init = Vec::new();
        encode::array_header(&mut init, params.len().saturating_sub(first));
        (first..params.len()).for_each(|i| init.extend_from_slice(params.raw(i)));
        let (id, object) = wait_for(store.create(kind, name, &init))?;
        Ok(self.etcd_adopt(id, object, name))
    }

    /// The local slot of etcd object `id`: the one this registry has, or a new one.
    fn etcd_adopt(&self, id: u64, object: ObjectHandle, name: Option<&str>) -> Arc<Slot> {
        let entry = self.objects.entry(id).or_insert_with(|| {
            let created = self.ids.next().map_or(u64::MAX, |(n, _)| n);
            Entry {
                slot: Arc::new(Slot {
                    object,
                    deleted: AtomicBool::new(false),
                    id,
                    named: true,
                    holders: HolderCount::default(),
                    reaper: self.reaper.clone(),
                }),
                name: name.map(Arc::from),
                created,
            }
        });
        entry.slot.clone()
    }

    /// A first sight of `id` here: made through another manager, perhaps.
    pub(super) fn etcd_resolve(
        &self,
        store: &Arc<EtcdStore>,
        id: u64,
    ) -> Result<Arc<Slot>, CallError> {
        match wait_for(store.resolve(id))? {
            Some((meta, object)) => Ok(self.etcd_adopt(id, object, meta.name.as_deref())),
            None => Err(unknown_id(id)),
        }
    }

    pub(super) fn etcd_lookup(
        &self,
        store: &Arc<EtcdStore>,
        name: &str,
    ) -> Result<(Kind, u64), CallError> {
        let id = wait_for(store.lookup(name))?.ok_or_else(|| no_name(name))?;
        let slot = self.slot(id).map_err(|_| no_name(name))?;
        Ok((slot.object.kind(), id))
    }

    /// Deletes object `id` from etcd, then here. A worker may not delete an object other
    /// holders hold here; holders through other managers are not known here.
    pub(super) fn etcd_delete(
        &self,
        store: &Arc<EtcdStore>,
        id: u64,
        by: Deleter<'_>,
    ) -> Result<(), CallError> {
        let slot = self.slot(id)?;
        by.may_delete(&slot)?;
        let name = self.objects.get(&id).and_then(|e| e.name.clone());
        if !wait_for(store.delete(id, name.as_deref()))? {
            return Err(unknown_id(id));
        }
        if let Some((_, entry)) = self.objects.remove(&id) {
            entry.slot.deleted.store(true, Ordering::Release);
            Registry::retire(entry);
        }
        Ok(())
    }

    /// Every object in the store, with the holders this manager counts.
    pub(super) fn etcd_list(&self, store: &Arc<EtcdStore>) -> Vec<ObjectInfo> {
        match wait_for(store.list()) {
            Ok(all) => all
                .into_iter()
                .map(|(id, meta)| ObjectInfo {
                    id,
                    holders: self.objects.get(&id).map_or(0, |e| e.slot.holders()),
                    name: meta.name,
                    kind: meta.kind,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e.message, "listing the etcd store failed: listing the objects seen here");
                self.list_objects()
                    .into_iter()
                    .map(|(info, _)| info)
                    .collect()
            }
        }
    }
}
