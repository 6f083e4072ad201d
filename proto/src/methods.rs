//! Facts about methods that every client needs beyond their names and params.

/// The methods the manager may park: their answers can come long after the request (section
/// 4.1 of `PROTOCOL.md`). Every other method is answered as soon as it is read.
///
/// Clients use this to tell a slow answer that is normal (a contended `lock.acquire`) from one
/// that says something about the machine, for instance when deciding whether to poll for
/// replies before sleeping.
pub const MAY_WAIT: &[&str] = &[
    "queue.get",
    "queue.put",
    "queue.get_many",
    "queue.put_many",
    "joinable_queue.get",
    "joinable_queue.put",
    "joinable_queue.get_many",
    "joinable_queue.put_many",
    "joinable_queue.join",
    "lock.acquire",
    "rlock.acquire",
    "semaphore.acquire",
    "bounded_semaphore.acquire",
    "condition.acquire",
    "condition.wait",
    "event.wait",
    "barrier.wait",
];

/// Whether the manager may park `method` (see [`MAY_WAIT`]).
pub fn may_wait(method: &str) -> bool {
    MAY_WAIT.contains(&method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_methods_are_told_from_quick_ones() {
        assert!(may_wait("lock.acquire"));
        assert!(may_wait("queue.get"));
        assert!(!may_wait("dict.get"));
        assert!(!may_wait("queue.get_nowait"));
        assert!(!may_wait("lock.release"));
    }
}
