//! The registry (PROTOCOL.md section 4.2): `create`, `lookup`, `delete`, `objects`,
//! `shutdown`, and how methods are routed to objects.

use std::os::unix::net::UnixStream;

use agora_proto::testing::{dec, request};
use rmpv::Value;

use crate::support::*;

#[test]
fn create_without_a_name_makes_a_new_object_each_time() {
    let server = TestServer::start();
    let mut c = server.client();
    let a = c.create("dict", None, vec![]);
    let b = c.create("dict", None, vec![]);
    let l = c.create("list", None, vec![]);
    assert!(a != b && b != l && a != l);
    // Ids are plain unsigned ints below 2^53, never one handed out before (and in no order).
    let d = c.call_raw("create", &[&[0xa4, b'd', b'i', b'c', b't'], &[0xc0]]);
    let d = dec(&d.unwrap()).as_u64().expect("an unsigned int");
    assert!(d != a && d != b && d != l);
    assert!([a, b, l, d].iter().all(|&id| (1..1 << 53).contains(&id)));
    // Too few params: the name (or nil) is required.
    assert_eq!(c.fail("create", p!["dict"]), "ArgumentCountError");
    assert_eq!(c.fail("create", vec![]), "ArgumentCountError");
}

#[test]
fn create_with_a_name_is_get_or_create() {
    let server = TestServer::start();
    let mut c = server.client();
    let id = c.create("dict", Some("shared"), vec![map! {"a" => 1}]);
    let mut other = server.client();
    // The init args of the second create are ignored.
    let again = other.create("dict", Some("shared"), vec![map! {"b" => 2}]);
    assert_eq!(again, id);
    assert_eq!(other.ok("dict.copy", p![id]), map! {"a" => 1});
    // The same name with another kind is a TypeError, and changes nothing.
    assert_eq!(c.fail("create", p!["list", "shared"]), "TypeError");
    assert_eq!(c.ok("lookup", p!["shared"]), arr!["dict", id]);
    // Another name is another object.
    let l = c.create("list", Some("other"), vec![]);
    assert_ne!(l, id);
    assert_eq!(other.ok("lookup", p!["other"]), arr!["list", l]);
}

#[test]
fn create_of_an_unknown_kind_is_a_value_error() {
    let server = TestServer::start();
    let mut c = server.client();
    assert_eq!(c.fail("create", p!["bag", NIL]), "ValueError");
    assert_eq!(c.fail("create", p!["Dict", "x"]), "ValueError");
    assert_eq!(c.fail("create", p![5, NIL]), "TypeError");
    assert_eq!(c.fail("create", p!["dict", 5]), "TypeError");
    // Bad init args.
    assert_eq!(c.fail("create", p!["dict", NIL, 5]), "TypeError");
    assert_eq!(c.fail("create", p!["list", NIL, "abc"]), "TypeError");
    assert_eq!(
        c.fail("create", p!["list", NIL, arr![], arr![]]),
        "ArgumentCountError"
    );
    // A failed named create does not take the name.
    assert_eq!(c.fail("create", p!["dict", "n", 5]), "TypeError");
    assert_eq!(c.fail("lookup", p!["n"]), "KeyError");
    assert!(c.ok("objects", vec![]).as_array().unwrap().is_empty());
}

#[test]
fn lookup_finds_named_objects() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", Some("d"), vec![]);
    let v = c.create("value", Some("counter"), p![NIL, 0]);
    assert_eq!(c.ok("lookup", p!["d"]), arr!["dict", d]);
    assert_eq!(c.ok("lookup", p!["counter"]), arr!["value", v]);
    assert_eq!(c.fail("lookup", p!["nobody"]), "KeyError");
    assert_eq!(c.fail("lookup", vec![]), "ArgumentCountError");
    assert_eq!(c.fail("lookup", p![d]), "TypeError");
}

#[test]
fn delete_by_id_and_by_name() {
    let server = TestServer::start();
    let mut c = server.client();
    let by_id = c.create("list", Some("first"), vec![]);
    let by_name = c.create("dict", Some("second"), vec![]);
    let anonymous = c.create("value", None, p![NIL, 1]);
    let mut other = server.client();

    assert_eq!(c.ok("delete", p![by_id]), Value::Boolean(true));
    assert_eq!(other.fail("list.len", p![by_id]), "UnknownObjectError");
    // Deleting by id also frees the name.
    assert_eq!(other.fail("lookup", p!["first"]), "KeyError");
    assert_eq!(c.fail("delete", p![by_id]), "UnknownObjectError");

    assert_eq!(c.ok("delete", p!["second"]), Value::Boolean(true));
    assert_eq!(other.fail("dict.len", p![by_name]), "UnknownObjectError");
    assert_eq!(other.fail("lookup", p!["second"]), "KeyError");
    assert_eq!(c.fail("delete", p!["second"]), "UnknownObjectError");
    assert_eq!(c.fail("delete", p![by_name]), "UnknownObjectError");

    assert_eq!(c.ok("delete", p![anonymous]), Value::Boolean(true));
    assert_eq!(c.fail("value.get", p![anonymous]), "UnknownObjectError");
    assert_eq!(c.fail("delete", p![12_345]), "UnknownObjectError");
    assert_eq!(c.fail("delete", vec![]), "ArgumentCountError");

    // A freed name can be taken again, by another kind, and ids are never reused.
    let again = c.create("list", Some("second"), vec![]);
    assert_ne!(again, anonymous);
    assert_eq!(c.ok("lookup", p!["second"]), arr!["list", again]);
}

#[test]
fn objects_lists_every_object_by_id() {
    let server = TestServer::start();
    let mut c = server.client();
    assert_eq!(c.ok("objects", vec![]), Value::Array(vec![]));
    let a = c.create("dict", Some("a"), vec![]);
    let b = c.create("list", None, vec![]);
    let n = c.create("namespace", Some("ns"), vec![]);
    let v = c.create("value", None, p!["i", 3]);
    let r = c.create("array", Some("arr"), p!["d", 2]);
    c.ok("delete", p![b]);
    assert_eq!(
        c.ok("objects", vec![]),
        Value::Array(vec![
            arr![a, "a", "dict", 1],
            arr![n, "ns", "namespace", 1],
            arr![v, NIL, "value", 1],
            arr![r, "arr", "array", 1],
        ])
    );
    assert_eq!(c.fail("objects", p![1]), "ArgumentCountError");
}

#[test]
fn shutdown_answers_true_then_the_server_stops() {
    let mut server = TestServer::start();
    let mut idle = server.client();
    let mut unauthenticated = server.connect();
    let mut c = server.client();
    c.create("dict", Some("x"), vec![]);
    assert_eq!(c.call_raw("shutdown", &[]).unwrap(), [0xc3]);
    c.expect_closed();
    idle.expect_closed();
    // A connection still authenticating is told why before it closes.
    let notice = unauthenticated.next_frame().expect("the shutdown notice");
    let notice = rmpv::decode::read_value(&mut notice.as_slice()).unwrap();
    assert_eq!(notice[1].as_str(), Some("error"), "{notice}");
    assert_eq!(notice[2][0].as_str(), Some("ShutdownError"), "{notice}");
    unauthenticated.expect_closed();
    server.wait_stopped().expect("run returns Ok");
    assert!(!server.socket.exists(), "the socket file is removed");
    assert!(UnixStream::connect(&server.socket).is_err());
    assert!(server.dir.path().exists());
}

#[test]
fn shutdown_answers_a_pending_call_with_shutdown_error() {
    let mut server = TestServer::start();
    let mut waiter = server.client();
    let q = waiter.create("queue", None, vec![]);
    // A get on an empty queue waits; a ping behind it is answered meanwhile.
    waiter.send(&request(100, "queue.get", p![q]));
    waiter.send(&request(101, "ping", vec![]));
    let r = waiter.response();
    assert_eq!(r.msgid, 101);
    let mut c = server.client();
    assert_eq!(c.ok("shutdown", vec![]), Value::Boolean(true));
    let r = waiter.response();
    assert_eq!(r.msgid, 100);
    assert_eq!(r.result.unwrap_err().name, "ShutdownError");
    waiter.expect_closed();
    server.wait_stopped().expect("run returns Ok");
}

#[test]
fn shutdown_needs_authentication_and_no_params() {
    let server = TestServer::start();
    let mut c = server.connect();
    assert_eq!(c.fail("shutdown", vec![]), "AuthenticationError");
    c.expect_closed();
    let mut c = server.client();
    assert_eq!(c.fail("shutdown", p![1]), "ArgumentCountError");
    // Still running.
    assert_eq!(server.client().ok("ping", vec![]), Value::from("pong"));
}

#[test]
fn method_routing_errors() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    let l = c.create("list", None, vec![]);
    assert_eq!(c.fail("frobnicate", vec![]), "UnknownMethodError");
    assert_eq!(c.fail("dict.frobnicate", p![d]), "UnknownMethodError");
    assert_eq!(c.fail("bag.add", p![d, 1]), "UnknownMethodError");
    assert_eq!(c.fail("", vec![]), "UnknownMethodError");
    assert_eq!(c.fail("dict.", p![d]), "UnknownMethodError");
    // A dict method on a list id, and the other way round.
    assert_eq!(c.fail("dict.len", p![l]), "TypeError");
    assert_eq!(c.fail("list.len", p![d]), "TypeError");
    assert_eq!(c.fail("dict.setitem", p![l, "k", 1]), "TypeError");
    // The id: missing, of the wrong type, unknown.
    assert_eq!(c.fail("dict.len", vec![]), "ArgumentCountError");
    assert_eq!(c.fail("dict.len", p!["1"]), "TypeError");
    assert_eq!(c.fail("dict.len", p![-1]), "TypeError");
    assert_eq!(c.fail("dict.len", p![999]), "UnknownObjectError");
}

/// Shutdown answers every parked call before any holding is released (PROTOCOL.md section
/// 4.1): A holds a lock and a semaphore permit, B waits for both, C shuts the manager down.
/// B must get `ShutdownError` for both, never "acquired, the previous holder died" from A's
/// close racing B's own. 100 managers in a row; before the ordering, about one run in five
/// granted B the lock.
#[test]
fn shutdown_grants_nothing_a_closing_holder_releases() {
    for run in 0..100 {
        let mut server = TestServer::start();
        let mut a = server.client();
        let lock = a.create("lock", Some("l"), vec![]);
        let sem = a.create("semaphore", Some("s"), p![1]);
        assert_eq!(a.ok("lock.acquire", p![lock]), Value::from(1));
        // Owned: A's close would give the permit back.
        assert_eq!(
            a.ok("semaphore.acquire", p![sem, true, NIL, true]),
            Value::from(1)
        );
        let mut b = server.client();
        b.send(&request(7, "lock.acquire", p![lock]));
        b.send(&request(8, "semaphore.acquire", p![sem]));
        // Both parked: a ping behind them is answered first.
        b.send(&request(9, "ping", vec![]));
        assert_eq!(b.response().msgid, 9);
        let mut c = server.client();
        assert_eq!(c.ok("shutdown", vec![]), Value::Boolean(true));
        let mut answered = Vec::new();
        for _ in 0..2 {
            let r = b.response();
            answered.push((r.msgid, r.result.map_err(|e| e.name)));
        }
        answered.sort_by_key(|(m, _)| *m);
        assert_eq!(
            answered,
            [
                (7, Err("ShutdownError".into())),
                (8, Err("ShutdownError".into()))
            ],
            "run {run}"
        );
        b.expect_closed();
        drop(a);
        server.wait_stopped().expect("run returns Ok");
    }
}
