//! A look at one object for `stats` (`PROTOCOL.md`, section 4.2.1): who holds it, and the
//! calls parked on it with what each waits for. Taken under the parking's lock, so holders and
//! waiters are seen at one moment; never on the path of a call.

use std::time::Instant;

use super::holdings::{HeldBy, Owner, SessionId};

/// Someone holding something in an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldInfo {
    /// The connection.
    pub session: SessionId,
    /// The owner's thread id, for a lock or a mutex (whose holder is a connection and a
    /// thread); `None` where holdings are counted per connection only.
    pub thread: Option<u64>,
    /// How much it holds: 1 for a lock, the depth of an rlock, permits of a semaphore, queue
    /// items got and not finished.
    pub count: u64,
    /// Whether the holding is released when the connection closes (`PROTOCOL.md` 4.1,
    /// Ownership).
    pub owned: bool,
}

impl HeldInfo {
    /// The holding of `holder` (a connection and its thread, as a lock's or a mutex's), if
    /// there is one.
    pub fn of_owner(holder: Option<&Owner>, count: u64, owned: bool) -> Vec<HeldInfo> {
        holder
            .map(|h| HeldInfo {
                session: h.session,
                thread: Some(h.thread),
                count,
                owned,
            })
            .into_iter()
            .collect()
    }
}

/// One parked call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaiterInfo {
    /// The connection that made it.
    pub session: SessionId,
    /// What it waits for, in words (`"the lock"`, `"an item"`...).
    pub waits_for: String,
    /// When it was parked.
    pub since: Instant,
}

/// What `stats` shows of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Items, entries, elements or attributes; the items in a queue; a semaphore's free
    /// permits. `None` for kinds without one.
    pub size: Option<u64>,
    /// Who holds something in it.
    pub held: Vec<HeldInfo>,
    /// The calls parked through it, oldest first.
    pub waiting: Vec<WaiterInfo>,
}

impl View {
    /// The view of an object that parks nothing and that nobody holds.
    pub fn sized(size: u64) -> View {
        View {
            size: Some(size),
            ..View::default()
        }
    }
}

/// The owned holdings counted in `held`, per connection, for objects that keep no more
/// detail about their holders.
pub fn counted(held: Option<&HeldBy>) -> Vec<HeldInfo> {
    let Some(held) = held else {
        return Vec::new();
    };
    let mut all: Vec<HeldInfo> = held
        .counts()
        .map(|(session, count)| HeldInfo {
            session,
            thread: None,
            count,
            owned: true,
        })
        .collect();
    all.sort_by_key(|h| h.session);
    all
}
