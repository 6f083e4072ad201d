//! [`Slot`]: the client's current connection, replaced after a `fork` or when it broke.
//!
//! A connection is replaced in two cases: a forked child must open its own (the inherited
//! socket belongs to the parent), and a connection that broke (the manager restarted, the
//! network failed, a deadline closed it) is replaced by a new one on the next call.
//!
//! A forked child inherits the parent's locks in whatever state the parent's other threads
//! left them: a lock held by a thread that does not exist in the child stays held forever
//! there. So reading and replacing the slot takes no lock: it is an [`ArcSwap`], whose loads
//! and compare-and-swaps are lock-free. Each call holds the connection it uses by an `Arc`,
//! so a replaced connection is freed (and its socket closed) when the last call still using
//! it returns; in a child, a parent's thread that was mid-call at the fork never returns, and
//! its copy is then never freed (one small object per fork, whose socket the fork handler
//! already pointed at `/dev/null`).

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::connection::Connection;

/// Holds the connection of the current process.
pub(crate) struct Slot {
    current: ArcSwap<Connection>,
}

// The slot hands connections to any thread.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Connection>();
};

impl Slot {
    pub(crate) fn new(conn: Connection) -> Slot {
        Slot {
            current: ArcSwap::from_pointee(conn),
        }
    }

    /// The current connection (which may belong to the parent process, or be broken: check).
    pub(crate) fn get(&self) -> Arc<Connection> {
        self.current.load_full()
    }

    /// The current connection's [`Connection::run_key`], without taking a reference to it.
    pub(crate) fn run_key(&self) -> u64 {
        self.current.load().run_key()
    }

    /// Replaces `old` with `new`, unless another thread replaced it first, and returns the
    /// connection now current and whether it is `new` (this thread won). The winner does
    /// what a new connection needs once (adopting the objects of the proxies alive).
    pub(crate) fn replace(
        &self,
        old: &Arc<Connection>,
        new: Connection,
    ) -> (Arc<Connection>, bool) {
        let new = Arc::new(new);
        let previous = self.current.compare_and_swap(old, new.clone());
        if Arc::ptr_eq(&previous, old) {
            (new, true)
        } else {
            // `new` is dropped here, unused: its socket is shut down and closed.
            (arc_swap::Guard::into_inner(previous), false)
        }
    }
}
