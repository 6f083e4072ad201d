//! Redelivery (PROTOCOL.md sections 4.1 and 4.8): the items a connection got from a joinable
//! queue and did not mark done, or got from a queue with `get_acked` and did not acknowledge,
//! go back to the head of the queue, in their order, when the connection closes. A plain `get`
//! is at-most-once and is not redelivered.

use std::time::{Duration, Instant};

use agora_proto::testing::RawClient;
use rmpv::Value;

use crate::support::*;

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("an int, got {v}"))
}

/// A blocking get (at most 5 s), answering the item.
fn get(c: &mut RawClient, kind: &str, id: u64) -> i64 {
    let v = c.ok(
        &format!("{kind}.get"),
        vec![Value::from(id), Value::Boolean(true), Value::F64(5.0)],
    );
    int(&v)
}

/// A blocking `get_acked`, answering `(receipt, item)`.
fn get_acked(c: &mut RawClient, id: u64) -> (u64, i64) {
    let v = c.ok(
        "queue.get_acked",
        vec![Value::from(id), Value::Boolean(true), Value::F64(5.0)],
    );
    match v.as_array().map(Vec::as_slice) {
        Some([receipt, item]) => (
            receipt
                .as_u64()
                .unwrap_or_else(|| panic!("a receipt, got {receipt}")),
            int(item),
        ),
        _ => panic!("get_acked answers [receipt, item], got {v}"),
    }
}

/// Waits until the queue holds `n` items (a closed connection is released by the manager
/// after the client has gone).
fn wait_qsize(c: &mut RawClient, kind: &str, id: u64, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let size = c.ok(&format!("{kind}.qsize"), vec![Value::from(id)]);
        if size.as_u64() == Some(n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "qsize stayed {size}, expected {n}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_dead_consumers_unfinished_joinable_items_come_back_in_order_and_join_completes() {
    let server = TestServer::start();
    let (mut producer, mut joiner) = (server.client(), server.client());
    let id = producer.create("joinable_queue", None, vec![]);
    producer.ok(
        "joinable_queue.put_many",
        vec![Value::from(id), ints(1..=5)],
    );
    let joined = joiner.park("joinable_queue.join", vec![Value::from(id)]);

    let mut first = server.client();
    let got: Vec<i64> = (0..3)
        .map(|_| get(&mut first, "joinable_queue", id))
        .collect();
    assert_eq!(got, [1, 2, 3]);
    first.ok("joinable_queue.task_done", vec![Value::from(id)]);
    drop(first);
    // 2 and 3 come back at the head, before 4 and 5.
    wait_qsize(&mut producer, "joinable_queue", id, 4);

    let mut second = server.client();
    let got: Vec<i64> = (0..4)
        .map(|_| get(&mut second, "joinable_queue", id))
        .collect();
    assert_eq!(got, [2, 3, 4, 5]);
    for _ in 0..4 {
        second.ok("joinable_queue.task_done", vec![Value::from(id)]);
    }
    let r = joiner.response();
    assert_eq!(r.msgid, joined);
    assert_eq!(
        r.result.map(|raw| agora_proto::testing::dec(&raw)),
        Ok(Value::Boolean(true))
    );
    // Python's count: one task_done too many is still an error.
    assert_eq!(
        second.fail("joinable_queue.task_done", vec![Value::from(id)]),
        "ValueError"
    );
}

#[test]
fn task_done_from_a_connection_that_got_nothing_marks_the_oldest_item_of_another() {
    let server = TestServer::start();
    let (mut producer, mut consumer) = (server.client(), server.client());
    let id = producer.create("joinable_queue", None, vec![]);
    producer.ok(
        "joinable_queue.put_many",
        vec![Value::from(id), ints(1..=3)],
    );
    let got: Vec<i64> = (0..3)
        .map(|_| get(&mut consumer, "joinable_queue", id))
        .collect();
    assert_eq!(got, [1, 2, 3]);
    // The producer got nothing: its task_done marks the consumer's oldest item, 1.
    producer.ok("joinable_queue.task_done", vec![Value::from(id)]);
    drop(consumer);
    wait_qsize(&mut producer, "joinable_queue", id, 2);
    assert_eq!(get(&mut producer, "joinable_queue", id), 2);
    assert_eq!(get(&mut producer, "joinable_queue", id), 3);
}

#[test]
fn a_dead_consumers_unacknowledged_items_come_back_in_order() {
    let server = TestServer::start();
    let mut producer = server.client();
    let id = producer.create("queue", None, vec![]);
    producer.ok("queue.put_many", vec![Value::from(id), ints(1..=5)]);

    let mut first = server.client();
    let got: Vec<(u64, i64)> = (0..3).map(|_| get_acked(&mut first, id)).collect();
    assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "receipts increase");
    first.ok("queue.ack", vec![Value::from(id), Value::from(got[0].0)]);
    // Acknowledged once is acknowledged: a second ack is refused.
    assert_eq!(
        first.fail("queue.ack", vec![Value::from(id), Value::from(got[0].0)]),
        "ValueError"
    );
    drop(first);
    wait_qsize(&mut producer, "queue", id, 4);

    let mut second = server.client();
    let again: Vec<(u64, i64)> = (0..4).map(|_| get_acked(&mut second, id)).collect();
    assert_eq!(again.iter().map(|g| g.1).collect::<Vec<_>>(), [2, 3, 4, 5]);
    // The dead consumer's receipts are void: their items were redelivered.
    assert_eq!(
        second.fail("queue.ack", vec![Value::from(id), Value::from(got[1].0)]),
        "ValueError"
    );
    for (receipt, _) in &again {
        second.ok("queue.ack", vec![Value::from(id), Value::from(*receipt)]);
    }
    drop(second);
    // Nothing on record any more: nothing comes back.
    producer.ok("queue.put", vec![Value::from(id), Value::from(6)]);
    std::thread::sleep(Duration::from_millis(100));
    wait_qsize(&mut producer, "queue", id, 1);
}

#[test]
fn get_many_acked_and_nack() {
    let server = TestServer::start();
    let mut c = server.client();
    let id = c.create("queue", None, vec![]);
    c.ok("queue.put_many", vec![Value::from(id), ints(1..=3)]);
    let batch = c.ok(
        "queue.get_many_acked",
        vec![Value::from(id), Value::from(2)],
    );
    let pairs: Vec<(u64, i64)> = batch
        .as_array()
        .expect("an array")
        .iter()
        .map(|pair| match pair.as_array().map(Vec::as_slice) {
            Some([r, item]) => (r.as_u64().expect("a receipt"), int(item)),
            _ => panic!("[receipt, item], got {pair}"),
        })
        .collect();
    assert_eq!(pairs.iter().map(|p| p.1).collect::<Vec<_>>(), [1, 2]);
    // nack puts 2 back at the head at once.
    c.ok("queue.nack", vec![Value::from(id), Value::from(pairs[1].0)]);
    assert_eq!(get(&mut c, "queue", id), 2);
    c.ok("queue.ack", vec![Value::from(id), Value::from(pairs[0].0)]);
    assert_eq!(
        c.fail("queue.nack", vec![Value::from(id), Value::from(pairs[1].0)]),
        "ValueError"
    );
    // Not a joinable queue's method.
    let j = c.create("joinable_queue", None, vec![]);
    assert_eq!(
        c.fail("joinable_queue.get_acked", vec![Value::from(j)]),
        "UnknownMethodError"
    );
}

#[test]
fn a_plain_get_is_not_redelivered() {
    let server = TestServer::start();
    let mut producer = server.client();
    let id = producer.create("queue", None, vec![]);
    producer.ok("queue.put_many", vec![Value::from(id), ints(1..=2)]);
    let mut consumer = server.client();
    assert_eq!(get(&mut consumer, "queue", id), 1);
    drop(consumer);
    std::thread::sleep(Duration::from_millis(200));
    wait_qsize(&mut producer, "queue", id, 1);
    assert_eq!(get(&mut producer, "queue", id), 2);
}

#[test]
fn a_parked_getter_gets_the_redelivered_items() {
    let server = TestServer::start();
    let (mut producer, mut waiting) = (server.client(), server.client());
    let id = producer.create("queue", None, vec![]);
    producer.ok("queue.put", vec![Value::from(id), Value::from(1)]);
    let mut first = server.client();
    assert_eq!(get_acked(&mut first, id).1, 1);
    let parked = waiting.park("queue.get", vec![Value::from(id)]);
    drop(first);
    let r = waiting.response();
    assert_eq!(r.msgid, parked);
    assert_eq!(
        r.result.map(|raw| agora_proto::testing::dec(&raw)),
        Ok(Value::from(1))
    );
}

#[test]
fn deleting_a_queue_forgets_what_connections_hold_in_it() {
    let server = TestServer::start();
    let mut c = server.client();
    let id = c.create("joinable_queue", Some("jobs"), vec![]);
    c.ok("joinable_queue.put", vec![Value::from(id), Value::from(1)]);
    assert_eq!(get(&mut c, "joinable_queue", id), 1);
    c.ok("delete", vec![Value::from(id)]);
    assert_eq!(
        c.fail("joinable_queue.task_done", vec![Value::from(id)]),
        "UnknownObjectError"
    );
    drop(c);
    // The manager goes on serving.
    let mut other = server.client();
    other.ok("ping", vec![]);
}

/// A plain queue counts `task_done` and answers `join` as Python's `queue.Queue` does (Python's
/// manager `Queue()` is one), and stays at-most-once: an item got and not marked done is not
/// redelivered when its consumer goes, and `task_done` never settles an acknowledged get.
#[test]
fn a_plain_queue_counts_task_done_and_joins_without_redelivering() {
    let server = TestServer::start();
    let (mut producer, mut joiner) = (server.client(), server.client());
    let id = producer.create("queue", None, vec![]);
    producer.ok("queue.put_many", vec![Value::from(id), ints(1..=3)]);
    let joined = joiner.park("queue.join", vec![Value::from(id)]);

    let mut consumer = server.client();
    assert_eq!(get(&mut consumer, "queue", id), 1);
    let (receipt, item) = get_acked(&mut consumer, id);
    assert_eq!(item, 2);
    drop(consumer);
    // The plain get is gone with its consumer; the acknowledged one comes back.
    wait_qsize(&mut producer, "queue", id, 2);
    assert_eq!(get(&mut producer, "queue", id), 2);
    assert_eq!(get(&mut producer, "queue", id), 3);
    assert_eq!(
        producer.fail("queue.ack", vec![Value::from(id), Value::from(receipt)]),
        "ValueError"
    );
    let timed_out = producer.ok("queue.join", vec![Value::from(id), Value::F64(0.01)]);
    assert_eq!(timed_out, Value::Boolean(false));
    for _ in 0..3 {
        producer.ok("queue.task_done", vec![Value::from(id)]);
    }
    let r = joiner.response();
    assert_eq!(r.msgid, joined);
    assert_eq!(
        r.result.map(|raw| agora_proto::testing::dec(&raw)),
        Ok(Value::Boolean(true))
    );
    assert_eq!(
        producer.fail("queue.task_done", vec![Value::from(id)]),
        "ValueError"
    );
    // A task_done does not settle an acknowledged get: its receipt still does.
    producer.ok("queue.put", vec![Value::from(id), Value::from(4)]);
    let (receipt, _) = get_acked(&mut producer, id);
    producer.ok("queue.task_done", vec![Value::from(id)]);
    producer.ok("queue.ack", vec![Value::from(id), Value::from(receipt)]);
}
