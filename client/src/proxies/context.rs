//! The client that shared-object references decode into, per thread.
//!
//! serde gives a `Deserialize` impl no way to receive state, yet a proxy decoded out of a reply
//! needs a client to call through, and the manager run the reply came from (the run its
//! references are of). The client sets both here for the duration of each decode; a proxy's
//! `Deserialize` reads them.

use std::cell::RefCell;

use crate::client::Client;

thread_local! {
    static CURRENT: RefCell<Option<(Client, u64)>> = const { RefCell::new(None) };
}

/// The error a proxy's `Deserialize` reports when no client is decoding.
pub(crate) const NO_CLIENT: &str = "a shared object reference can only be decoded into a proxy \
     by an agora Client (decode with Client::decode, or decode into SharedRef)";

/// Runs `f` with `client` and the run `run` as the current ones, restoring the previous ones
/// afterwards (also when `f` panics), so decodes may nest.
pub(crate) fn with<R>(client: &Client, run: u64, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<(Client, u64)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            // A thread being torn down has no slot left to restore: nothing to do then.
            let _ = CURRENT.try_with(|c| *c.borrow_mut() = previous);
        }
    }
    let previous = CURRENT.with(|c| c.replace(Some((client.clone(), run))));
    let _restore = Restore(previous);
    f()
}

/// The client decoding on this thread and the run of the reply, if any.
pub(crate) fn current() -> Option<(Client, u64)> {
    CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
}
