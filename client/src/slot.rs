//! [`Slot`]: the client's current connection, replaceable after `fork` without taking a lock.
//!
//! A forked child inherits the parent's socket and the parent's locks in whatever state the
//! parent's other threads left them: a lock held by a thread that does not exist in the child
//! stays held forever there. So the child must neither use the inherited socket (its bytes
//! would interleave with the parent's) nor wait for any lock the parent might have held. The
//! slot is an atomic pointer: reading it takes no lock, and the child swaps in a fresh
//! connection with one compare-and-swap.
//!
//! A replaced connection is leaked rather than freed, because another thread of the child may
//! still hold a reference to it (it will find the pid wrong and not use it). That costs one
//! small allocation per client per fork, in the child only; its socket is closed.

use std::sync::atomic::{AtomicPtr, Ordering};

use crate::connection::Connection;

/// Holds the connection of the current process.
pub(crate) struct Slot {
    current: AtomicPtr<Connection>,
}

// The slot hands out `&Connection` to any thread.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Connection>();
};

impl Slot {
    pub(crate) fn new(conn: Connection) -> Slot {
        Slot {
            current: AtomicPtr::new(Box::into_raw(Box::new(conn))),
        }
    }

    /// The current connection (which may belong to the parent process: check its pid).
    pub(crate) fn get(&self) -> &Connection {
        // SAFETY: `current` always points to a live connection: it starts as one, only ever
        // changes to another, and a pointer taken out of it is never freed while the slot
        // lives (replaced ones are leaked; the last one is freed by `drop`, which has `&mut`).
        unsafe { &*self.current.load(Ordering::Acquire) }
    }

    /// Replaces `old` with `new`, unless another thread replaced it first, and returns the
    /// connection now current, and whether it is `new` (this thread won). The winner closes
    /// `old`'s socket, and does what a new connection needs once (adopting the objects of
    /// inherited proxies).
    pub(crate) fn replace(&self, old: &Connection, new: Connection) -> (&Connection, bool) {
        let new = Box::into_raw(Box::new(new));
        let old_ptr = old as *const Connection as *mut Connection;
        match self
            .current
            .compare_exchange(old_ptr, new, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                old.close_inherited();
                // SAFETY: `new` was just stored and is live for the slot's life (see `get`).
                (unsafe { &*new }, true)
            }
            Err(winner) => {
                // SAFETY: `new` never became visible to another thread: we still own it.
                drop(unsafe { Box::from_raw(new) });
                // SAFETY: as in `get`.
                (unsafe { &*winner }, false)
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `Box::into_raw` and nothing else can reach it now.
        drop(unsafe { Box::from_raw(*self.current.get_mut()) });
    }
}
