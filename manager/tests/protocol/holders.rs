//! Object lifetime (`PROTOCOL.md`, section 3.2): unnamed objects live while something holds
//! them, named ones until deleted.

use std::thread;
use std::time::{Duration, Instant};

use agora_proto::testing::{enc, request, RawClient};
use agora_proto::ObjectRef;
use rmpv::Value;

use crate::support::*;

/// The holder count of every listed object, by id.
fn holders(c: &mut RawClient) -> Vec<(u64, u64)> {
    let Value::Array(all) = c.ok("objects", vec![]) else {
        panic!("objects is not an array")
    };
    all.iter()
        .map(|entry| {
            let Value::Array(fields) = entry else {
                panic!("an entry is not an array: {entry}")
            };
            let int = |i: usize| fields[i].as_u64().expect("an int");
            assert_eq!(fields.len(), 4, "[id, name, kind, holders]");
            (int(0), int(3))
        })
        .collect()
}

fn holders_of(c: &mut RawClient, id: u64) -> Option<u64> {
    holders(c)
        .into_iter()
        .find(|(i, _)| *i == id)
        .map(|(_, n)| n)
}

/// Waits until `id` is gone (a closed connection is noticed by the manager's side of it,
/// which may take a moment); fails after a generous deadline.
fn wait_freed(c: &mut RawClient, id: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while holders_of(c, id).is_some() {
        assert!(Instant::now() < deadline, "object {id} was never freed");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `id` has `n` holders.
fn wait_holders(c: &mut RawClient, id: u64, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while holders_of(c, id) != Some(n) {
        assert!(
            Instant::now() < deadline,
            "object {id} has {:?} holders, not {n}",
            holders_of(c, id)
        );
        thread::sleep(Duration::from_millis(5));
    }
}

fn reference(kind: &str, id: u64) -> Value {
    Value::Ext(1, ObjectRef::new(kind, id).ext_data())
}

#[test]
fn an_unnamed_object_goes_with_the_connection_that_made_it_and_a_named_one_stays() {
    let server = TestServer::start();
    let mut watcher = server.client();
    let mut maker = server.client();
    let unnamed: Vec<u64> = ["dict", "lock", "queue", "semaphore", "barrier"]
        .iter()
        .map(|kind| match *kind {
            "barrier" => maker.create(kind, None, p![2]),
            _ => maker.create(kind, None, vec![]),
        })
        .collect();
    let named = maker.create("list", Some("kept"), vec![]);
    for &id in &unnamed {
        assert_eq!(holders_of(&mut watcher, id), Some(1));
    }
    drop(maker);
    for &id in &unnamed {
        wait_freed(&mut watcher, id);
        assert_eq!(watcher.fail("dict.len", p![id]), "UnknownObjectError");
    }
    wait_holders(&mut watcher, named, 0);
    assert_eq!(watcher.ok("list.len", p![named]), Value::from(0));
}

#[test]
fn decref_as_a_request_or_a_notification_frees_at_zero() {
    let server = TestServer::start();
    let mut c = server.client();
    let a = c.create("dict", None, vec![]);
    let b = c.create("list", None, vec![]);
    // Two more references to `a`: the connection now counts three.
    c.ok("incref", p![a]);
    c.ok("incref", p![a]);
    assert_eq!(
        holders_of(&mut c, a),
        Some(1),
        "one connection is one holder"
    );
    c.ok("decref", vec![arr![a, 2]]);
    assert_eq!(holders_of(&mut c, a), Some(1));
    // As a notification, with an unknown id and a count larger than held, both harmless.
    let mut note = Vec::new();
    let (first, second) = (enc(&arr![a, 5]), enc(&arr![b ^ 1, 1]));
    agora_proto::encode::notification(&mut note, "decref", &[&first, &second]);
    c.send(&note);
    assert_eq!(holders_of(&mut c, a), None, "freed at zero");
    assert_eq!(holders_of(&mut c, b), Some(1));
    assert_eq!(c.fail("incref", p![a]), "UnknownObjectError");
    assert_eq!(c.fail("decref", p![a]), "TypeError");
    assert_eq!(c.fail("decref", vec![arr![b]]), "TypeError");
    assert_eq!(c.fail("decref", vec![arr![b, -1]]), "TypeError");
    assert_eq!(
        holders_of(&mut c, b),
        Some(1),
        "a malformed decref changes nothing"
    );
    assert_eq!(c.ok("decref", vec![]), Value::Nil);
}

#[test]
fn a_nested_object_lives_as_long_as_the_value_that_holds_it() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    let l = c.create("list", None, vec![]);
    c.ok("dict.setitem", p![d, "child", reference("list", l)]);
    c.ok("dict.setitem", p![d, "again", reference("list", l)]);
    assert_eq!(
        holders_of(&mut c, l),
        Some(3),
        "the connection and two values"
    );
    c.ok("decref", vec![arr![l, 1]]);
    assert_eq!(holders_of(&mut c, l), Some(2));
    c.ok("list.append", p![l, 7]);
    c.ok("dict.delitem", p![d, "again"]);
    assert_eq!(holders_of(&mut c, l), Some(1));
    // Overwriting the last value that holds it frees it.
    c.ok("dict.setitem", p![d, "child", 0]);
    assert_eq!(holders_of(&mut c, l), None);
    assert_eq!(c.fail("list.len", p![l]), "UnknownObjectError");
}

#[test]
fn a_reference_read_from_a_value_is_held_by_the_reader() {
    let server = TestServer::start();
    let mut maker = server.client();
    let mut reader = server.client();
    let d = maker.create("dict", Some("shared"), vec![]);
    let l = maker.create("list", None, vec![]);
    maker.ok("dict.setitem", p![d, "child", reference("list", l)]);
    maker.ok("decref", vec![arr![l, 1]]);
    assert_eq!(holders_of(&mut maker, l), Some(1), "only the dict");
    // Popping the entry hands the only reference to the reader with the reply.
    assert_eq!(reader.ok("dict.pop", p![d, "child"]), reference("list", l));
    assert_eq!(holders_of(&mut maker, l), Some(1), "now only the reader");
    reader.ok("list.append", p![l, 1]);
    drop(reader);
    wait_freed(&mut maker, l);
}

#[test]
fn freeing_a_container_frees_a_long_chain_of_nested_objects() {
    let server = TestServer::start();
    let mut c = server.client();
    // list 0 holds list 1 holds list 2 ...: each made, stored, and let go by the connection.
    const DEPTH: usize = 2_000;
    let head = c.create("list", None, vec![]);
    let mut last = head;
    for _ in 0..DEPTH {
        let next = c.create("list", None, vec![]);
        c.ok("list.append", p![last, reference("list", next)]);
        c.ok("decref", vec![arr![next, 1]]);
        last = next;
    }
    assert_eq!(holders(&mut c).len(), DEPTH + 1);
    c.ok("decref", vec![arr![head, 1]]);
    assert_eq!(holders(&mut c).len(), 0, "the whole chain went at once");
}

#[test]
fn a_queue_item_keeps_its_reference_alive_and_the_getter_gets_it() {
    let server = TestServer::start();
    let mut producer = server.client();
    let mut consumer = server.client();
    let q = producer.create("queue", Some("q"), vec![]);
    // A get parked before the put: its grant is written later, by the manager.
    let parked = consumer.park("queue.get", p![q]);
    let l = producer.create("list", None, vec![]);
    producer.ok("queue.put", p![q, reference("list", l)]);
    let r = consumer.response();
    assert_eq!(r.msgid, parked);
    producer.ok("decref", vec![arr![l, 1]]);
    wait_holders(&mut producer, l, 1);
    consumer.ok("list.append", p![l, 1]);
    // Items waiting in a queue hold theirs too.
    let m = producer.create("list", None, vec![]);
    producer.ok("queue.put", p![q, arr![reference("list", m)]]);
    drop(producer);
    let mut watcher = server.client();
    wait_holders(&mut watcher, m, 1);
    assert_eq!(consumer.ok("queue.get", p![q]), arr![reference("list", m)]);
    drop(consumer);
    wait_freed(&mut watcher, l);
    wait_freed(&mut watcher, m);
}

#[test]
fn calls_parked_on_an_object_that_is_freed_are_answered() {
    let server = TestServer::start();
    let mut maker = server.client();
    let mut waiter = server.client();
    let q = maker.create("queue", None, vec![]);
    // The waiter knows the id without holding the object.
    let msgid = waiter.msgid();
    waiter.send(&request(msgid, "queue.get", p![q]));
    thread::sleep(Duration::from_millis(50));
    drop(maker);
    let r = waiter.response();
    assert_eq!(r.msgid, msgid);
    assert_eq!(r.result.unwrap_err().name, "UnknownObjectError");
}

#[test]
fn a_handoff_keeps_an_object_until_it_is_adopted_or_its_lease_ends() {
    let mut config = agora_manager::config::Config::new(AUTHKEY.to_vec());
    config.handoff_lease = Duration::from_millis(300);
    let server = TestServer::with_config(config, false);
    let mut watcher = server.client();
    let mut sender = server.client();
    let adopted = sender.create("dict", None, vec![]);
    let expiring = sender.create("dict", None, vec![]);
    sender.ok("export", p![adopted]);
    sender.ok("export", p![expiring]);
    drop(sender);
    wait_holders(&mut watcher, adopted, 1);
    let mut receiver = server.client();
    receiver.ok("adopt", p![adopted]);
    assert_eq!(
        holders_of(&mut watcher, adopted),
        Some(1),
        "the handoff moved"
    );
    // Adopting again, with no handoff left, is an incref.
    receiver.ok("adopt", p![adopted]);
    receiver.ok("dict.setitem", p![adopted, "k", 1]);
    // The other one goes when its lease ends.
    wait_freed(&mut watcher, expiring);
    assert_eq!(receiver.fail("adopt", p![expiring]), "UnknownObjectError");
    drop(receiver);
    wait_freed(&mut watcher, adopted);
}

#[test]
fn references_to_objects_that_are_gone_are_refused_and_change_nothing() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    let l = c.create("list", None, vec![]);
    c.ok("decref", vec![arr![l, 1]]);
    assert_eq!(
        c.fail("dict.setitem", p![d, "k", reference("list", l)]),
        "UnknownObjectError"
    );
    assert_eq!(
        c.fail(
            "create",
            p!["dict", NIL, map! {"k" => reference("list", l)}]
        ),
        "UnknownObjectError"
    );
    assert_eq!(c.ok("dict.len", p![d]), Value::from(0));
}

/// A small deterministic generator (SplitMix64), so that a failing seed runs again as it was.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

/// Threads create lists, hand references to each other through a shared dict (put, pop,
/// overwrite), use, decref, delete and drop their connections at random. Each keeps the counts
/// the protocol says the manager keeps for its connection. During the run an object a thread
/// holds is never freed, and a reference read out of the dict always names a live object;
/// afterwards, with every connection closed and the dict deleted, nothing is left.
#[test]
fn random_handovers_never_free_a_held_object_and_leave_nothing_behind() {
    const THREADS: u64 = 6;
    const OPS: usize = 3_000;
    const KEYS: u64 = 8;
    let server = TestServer::start();
    let hub = server.client().create("dict", Some("hub"), vec![]);
    let socket = server.socket.clone();
    let client = move || {
        let mut c = RawClient::connect_unix(&socket).expect("connect");
        c.authenticate(AUTHKEY);
        c
    };
    // Ids deleted on purpose, recorded before the delete is sent: only those may vanish.
    let deleted = std::sync::Mutex::new(std::collections::HashSet::new());
    let excused = |id: u64| deleted.lock().unwrap().contains(&id);
    thread::scope(|scope| {
        for t in 0..THREADS {
            let (client, deleted, excused) = (&client, &deleted, &excused);
            scope.spawn(move || {
                let mut rng = Rng(t + 1);
                let mut c = client();
                let mut held: std::collections::HashMap<u64, u64> = Default::default();
                for step in 0..OPS {
                    let key = format!("k{}", rng.below(KEYS));
                    let some_held = {
                        let ids: Vec<u64> = held.keys().copied().collect();
                        (!ids.is_empty()).then(|| ids[rng.below(ids.len() as u64) as usize])
                    };
                    match (rng.below(8), some_held) {
                        (0, _) | (1, None) => {
                            let id = c.create("list", None, vec![]);
                            *held.entry(id).or_default() += 1;
                        }
                        (1, Some(id)) => {
                            let r = c.call("dict.setitem", p![hub, key, reference("list", id)]);
                            let fine = r.is_ok() || excused(id);
                            assert!(fine, "t{t} step {step}: storing held {id}: {r:?}");
                        }
                        (2, _) => {
                            let popped = c.ok("dict.pop", p![hub, key, NIL]);
                            if let Value::Ext(1, data) = popped {
                                let Value::Array(pair) = agora_proto::testing::dec(&data) else {
                                    panic!("not a reference")
                                };
                                let id = pair[1].as_u64().expect("an id");
                                *held.entry(id).or_default() += 1;
                                let len = c.call("list.len", p![id]);
                                let fine = len.is_ok() || excused(id);
                                assert!(fine, "t{t} step {step}: popped {id}: {len:?}");
                            }
                        }
                        (3 | 4, Some(id)) => {
                            let r = c.call("list.append", p![id, step as u64]);
                            let fine = r.is_ok() || excused(id);
                            assert!(fine, "t{t} step {step}: held {id} is gone: {r:?}");
                        }
                        (5, Some(id)) => {
                            let n = held.remove(&id).unwrap_or(0);
                            c.ok("decref", vec![arr![id, n]]);
                        }
                        (6, Some(id)) if rng.below(10) == 0 => {
                            deleted.lock().unwrap().insert(id);
                            // Another thread may have deleted it first.
                            let _ = c.call("delete", p![id]);
                            held.remove(&id);
                        }
                        (7, _) if rng.below(20) == 0 => {
                            c = client();
                            held.clear();
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    let mut c = server.client();
    c.ok("delete", p!["hub"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !holders(&mut c).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left behind: {:?}",
            holders(&mut c)
        );
        thread::sleep(Duration::from_millis(5));
    }
}
