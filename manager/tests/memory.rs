//! One connection creating, using and deleting objects in a loop costs the manager nothing
//! that lasts: after a warm-up, its memory stays flat for every kind (issue: a connection's
//! record of what it held only grew, ~200 bytes a cycle for locks, semaphores and conditions).
//!
//! The manager is the real binary in its own process, so its resident memory is its own. The
//! cycles are pipelined (a batch of creates, then of uses, then of deletes), so the test takes
//! seconds, not minutes. It prints bytes per cycle for each kind, and fails when the memory
//! grows by more than [`GROWTH_LIMIT`] over the measured cycles.

use std::collections::HashMap;

use agora_proto::testing::{request, RawClient};
use rmpv::Value;

mod real_binary;
use real_binary::ManagerProcess;

/// Cycles run before the first measurement: allocator pools, caches and tables reach their
/// working size.
const WARMUP: usize = 10_000;
/// Cycles in all, per kind.
const CYCLES: usize = 40_000;
/// Objects created, used and deleted per round trip.
const BATCH: usize = 500;
/// Most the manager's memory may grow over the 30,000 measured cycles of one kind: about 35
/// bytes a cycle, a fifth of the smallest leak this guards against.
const GROWTH_LIMIT: u64 = 1 << 20;

/// The calls that use an object of `kind` (id `v`), each answered at once, some leaving a
/// holding behind for the delete to end (an acquired lock, a taken permit).
fn uses(kind: &str, v: &Value) -> Vec<(String, Vec<Value>)> {
    let call = |m: &str, extra: Vec<Value>| {
        let mut params = vec![v.clone()];
        params.extend(extra);
        (format!("{kind}.{m}"), params)
    };
    let x = Value::from(7);
    match kind {
        "dict" => vec![call("setitem", vec!["k".into(), x])],
        "list" => vec![call("append", vec![x])],
        "value" => vec![call("set", vec![x])],
        "array" => vec![call("setitem", vec![0.into(), x])],
        "namespace" => vec![call("setattr", vec!["a".into(), x])],
        "queue" => vec![call("put", vec![x]), call("get", vec![])],
        "joinable_queue" => vec![
            call("put", vec![x]),
            call("get", vec![]),
            call("task_done", vec![]),
        ],
        "rlock" => vec![call("acquire", vec![]), call("acquire", vec![])],
        "lock" | "semaphore" | "bounded_semaphore" => vec![call("acquire", vec![])],
        "condition" => vec![call("acquire", vec![]), call("notify", vec![])],
        "event" => vec![call("set", vec![]), call("wait", vec![])],
        "barrier" => vec![call("wait", vec![])],
        "mutex" => vec![call("lock", vec![]), call("set", vec![x])],
        "set" => {
            // The set itself as operand: the path that reads another object in a call.
            let id = v.as_u64().unwrap_or_default();
            let me = Value::Ext(1, agora_proto::ObjectRef::new("set", id).ext_data());
            vec![
                call("add", vec![x.clone()]),
                call(
                    "update",
                    vec![Value::Array(vec![x, "y".into()]), me.clone()],
                ),
                call("union", vec![me]),
            ]
        }
        other => panic!("no uses for {other}"),
    }
}

/// `create`'s init args for `kind`.
fn init(kind: &str) -> Vec<Value> {
    match kind {
        "array" => vec!["i".into(), 4.into()],
        "value" => vec![Value::Nil, 0.into()],
        "barrier" => vec![1.into()],
        _ => vec![],
    }
}

/// Sends `calls` in one write and checks that each succeeded; gives the results in order.
fn pipelined(c: &mut RawClient, calls: Vec<(String, Vec<Value>)>) -> Vec<Value> {
    let mut bytes = Vec::new();
    let mut ids = Vec::with_capacity(calls.len());
    for (method, params) in calls {
        let msgid = c.msgid();
        bytes.extend(request(msgid, &method, params));
        ids.push((msgid, method));
    }
    c.send(&bytes);
    let mut got: HashMap<u32, _> = c.responses_by_msgid(ids.len());
    ids.into_iter()
        .map(|(msgid, method)| match got.remove(&msgid) {
            Some(Ok(raw)) => agora_proto::testing::dec(&raw),
            Some(Err(e)) => panic!("{method} failed: {e:?}"),
            None => panic!("{method} was not answered"),
        })
        .collect()
}

/// `n` create/use/delete cycles of `kind` on one connection.
fn cycles(c: &mut RawClient, kind: &str, n: usize) {
    for _ in 0..n.div_ceil(BATCH) {
        let mut create = vec![Value::from(kind), Value::Nil];
        create.extend(init(kind));
        let ids = pipelined(c, vec![("create".into(), create); BATCH]);
        pipelined(c, ids.iter().flat_map(|v| uses(kind, v)).collect());
        pipelined(
            c,
            ids.into_iter()
                .map(|v| ("delete".to_owned(), vec![v]))
                .collect(),
        );
    }
}

#[test]
fn create_use_delete_cycles_leave_the_memory_flat() {
    let manager = ManagerProcess::start(&[]);
    let mut c = manager.client();
    let mut grown = Vec::new();
    for kind in agora_proto::Kind::ALL.iter().map(|k| k.as_str()) {
        cycles(&mut c, kind, WARMUP);
        let before = manager.rss();
        cycles(&mut c, kind, CYCLES - WARMUP);
        let after = manager.rss();
        let growth = after.saturating_sub(before);
        let measured = (CYCLES - WARMUP) as f64;
        println!(
            "{kind:>18}: {:>7.1} bytes/cycle over cycles {WARMUP}..{CYCLES} (RSS {} -> {} KiB)",
            growth as f64 / measured,
            before / 1024,
            after / 1024
        );
        if growth > GROWTH_LIMIT {
            grown.push(format!("{kind}: +{growth} bytes"));
        }
    }
    assert_eq!(
        c.ok("objects", vec![]),
        Value::Array(vec![]),
        "every object was deleted"
    );
    drop(manager);
    assert!(grown.is_empty(), "the manager grew: {grown:?}");
}
