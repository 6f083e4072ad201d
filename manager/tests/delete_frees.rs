//! Deleting an object gives its memory back at once, whichever connections had used it: a
//! connection that once resolved an object's id must not keep the object alive (issue: each
//! connection's object cache held the object itself until it evicted the entry, so a large
//! dict read by a long-lived connection outlived its deletion).
//!
//! The manager is the real binary in its own process, so its resident memory is its own. Each
//! round creates a dict of [`DICT_BYTES`], has it read, and deletes it; the memory after the
//! last round must be within [`SLACK`] of the memory after the first (the first round brings
//! the allocator and the connections' buffers to their working size). Before the fix, the
//! memory grew by the whole dict every round: 134 MiB after the first, 834 after the eighth.

use agora_proto::testing::{enc, RawClient};
use rmpv::Value;

mod real_binary;
use real_binary::ManagerProcess;

/// Rounds of create, fill, read, delete.
const ROUNDS: usize = 8;
/// Values per dict.
const VALUES: usize = 10;
/// Bytes per value: ten of them make a 100 MB dict.
const VALUE_BYTES: usize = 10 << 20;
/// What one round's dict holds.
const DICT_BYTES: usize = VALUES * VALUE_BYTES;
/// How far the memory after the last round may be from the memory after the first: a fifth of
/// one dict, so one dict kept alive fails the test.
const SLACK: u64 = 20 << 20;

/// glibc serves a block of 10 MB from a fresh mapping, returned to the system when freed,
/// until the first such free: then it raises its threshold and serves the next ones from the
/// freeing thread's heap, where freed memory may stay resident for reuse (bounded, but tens of
/// MB with two runtime threads). A fixed threshold keeps every large block a mapping of its
/// own, so the resident memory is what is alive.
const FIXED_MMAP_THRESHOLD: (&str, &str) = ("MALLOC_MMAP_THRESHOLD_", "1048576");

/// One round on `conns`: the first connection creates and fills a dict, the last (the same
/// one when there is one) reads a value of it, so that it has resolved the id, and the first
/// deletes it.
fn round(conns: &mut [RawClient], value: &[u8]) {
    let last = conns.len() - 1;
    let id = conns[0].create("dict", None, vec![]);
    let id_bytes = enc(&Value::from(id));
    // Raw params: the 10 MB value is encoded once, not per call (and never printed).
    for k in 0..VALUES {
        let key = enc(&Value::from(k));
        conns[0]
            .call_raw("dict.setitem", &[&id_bytes, &key, value])
            .expect("dict.setitem");
    }
    let key = enc(&Value::from(VALUES - 1));
    let read = conns[last]
        .call_raw("dict.get", &[&id_bytes, &key])
        .expect("dict.get");
    assert_eq!(read, value, "the value read back");
    assert_eq!(conns[0].ok("delete", vec![id.into()]), Value::Boolean(true));
}

/// Runs the rounds on `n` connections and checks that the manager's memory after the last is
/// within [`SLACK`] of its memory after the first, and that the reader learnt of every
/// deletion.
fn rounds_leave_memory_flat(n: usize) {
    let manager = ManagerProcess::start_with_env(&[], &[FIXED_MMAP_THRESHOLD]);
    let mut conns: Vec<RawClient> = (0..n).map(|_| manager.client()).collect();
    let value = enc(&Value::Binary(vec![0x5a; VALUE_BYTES]));
    let mut after = Vec::new();
    for _ in 0..ROUNDS {
        round(&mut conns, &value);
        after.push(manager.rss());
    }
    let mib = |b: u64| b / (1 << 20);
    println!(
        "RSS after each round (MiB), {n} connection(s): {:?}",
        after.iter().map(|&b| mib(b)).collect::<Vec<_>>()
    );
    // Every id the reader resolved now fails, as any other connection's would.
    let objects = conns[n - 1].ok("objects", vec![]);
    assert_eq!(objects, Value::Array(vec![]), "every dict was deleted");
    let (first, last) = (after[0], after[ROUNDS - 1]);
    assert!(
        last <= first + SLACK,
        "the manager kept deleted dicts of {} MiB: {} MiB after the first round, {} MiB after \
         the last",
        DICT_BYTES >> 20,
        mib(first),
        mib(last)
    );
}

#[test]
fn a_dict_read_by_another_connection_is_freed_when_deleted() {
    rounds_leave_memory_flat(2);
}

#[test]
fn a_dict_used_and_deleted_by_one_connection_is_freed_when_deleted() {
    rounds_leave_memory_flat(1);
}
