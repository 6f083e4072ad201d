//! `mutex` (PROTOCOL.md section 4.14): a value with its lock, poisoned by a holder's death.

use agora_proto::testing::request;
use rmpv::Value;

use crate::support::*;

#[test]
fn lock_answers_the_value_and_only_the_holder_touches_it() {
    let server = TestServer::start();
    let mut a = server.client();
    let mut b = server.client();
    let m = a.create("mutex", Some("m"), p![arr![1, 2]]);
    assert_eq!(a.ok("mutex.locked", p![m]), false.into());
    assert_eq!(a.ok("mutex.lock", p![m]), arr![false, arr![1, 2]]);
    assert_eq!(a.ok("mutex.locked", p![m]), true.into());
    // Not reentrant, and others cannot touch it.
    assert_eq!(a.ok("mutex.lock", p![m, false]), NIL);
    assert_eq!(b.ok("mutex.lock", p![m, true, 0.01]), NIL);
    for (method, params) in [
        ("mutex.get", p![m]),
        ("mutex.set", p![m, 3]),
        ("mutex.unlock", p![m]),
        ("mutex.set_unlock", p![m, 3]),
    ] {
        assert_eq!(b.fail(method, params), "RuntimeError", "{method}");
    }
    // Another thread of the holder's connection is another owner.
    assert_eq!(a.fail("mutex.get", p![m, 7]), "RuntimeError");
    assert_eq!(a.ok("mutex.get", p![m]), arr![1, 2]);
    assert_eq!(a.ok("mutex.set", p![m, "x"]), NIL);
    assert_eq!(a.ok("mutex.get", p![m]), "x".into());
    // A waiter parks and is handed the lock, with the value as the holder left it.
    let waiting = b.park("mutex.lock", p![m]);
    assert_eq!(a.ok("mutex.set_unlock", p![m, "y"]), NIL);
    let r = b.response();
    assert_eq!(r.msgid, waiting);
    assert_eq!(
        agora_proto::testing::dec(&r.result.unwrap()),
        arr![false, "y"]
    );
    assert_eq!(b.ok("mutex.unlock", p![m]), NIL);
    assert_eq!(b.fail("mutex.unlock", p![m]), "RuntimeError");
    assert_eq!(a.fail("mutex.lock", p![m, false, 1]), "ValueError");
    // No value: nil.
    let empty = a.create("mutex", None, vec![]);
    assert_eq!(a.ok("mutex.lock", p![empty]), arr![false, NIL]);
}

/// A holder that dies mid-update poisons the mutex for every later locker, whoever it is and
/// however many times, until `clear_poison`; the value is the one the holder last set.
#[test]
fn a_holder_that_dies_poisons_it_until_cleared() {
    let server = TestServer::start();
    let mut c = server.client();
    let m = c.create("mutex", Some("poison"), p![0]);
    {
        let mut holder = server.client();
        holder.ok("mutex.lock", p![m]);
        holder.ok("mutex.set", p![m, 1]);
        // Dies before finishing the update.
    }
    let mut waiter = server.client();
    for i in 0..3 {
        let got = waiter.ok("mutex.lock", p![m, true, 5]);
        assert_eq!(got, arr![true, 1], "locker {i}");
        waiter.ok("mutex.unlock", p![m]);
        assert_eq!(c.ok("mutex.is_poisoned", p![m]), true.into());
    }
    assert_eq!(c.ok("mutex.clear_poison", p![m]), NIL);
    assert_eq!(waiter.ok("mutex.lock", p![m]), arr![false, 1]);
    waiter.ok("mutex.set_unlock", p![m, 2]);
    assert_eq!(c.ok("mutex.is_poisoned", p![m]), false.into());
}

/// A waiter parked behind the holder is handed the poisoned lock when the holder dies.
#[test]
fn a_parked_locker_gets_the_poisoned_lock() {
    let server = TestServer::start();
    let mut holder = server.client();
    let mut waiter = server.client();
    let m = holder.create("mutex", Some("parked"), p!["v"]);
    holder.ok("mutex.lock", p![m]);
    waiter.send(&request(9, "mutex.lock", p![m]));
    waiter.send(&request(10, "ping", vec![]));
    assert_eq!(waiter.response().msgid, 10);
    drop(holder);
    let r = waiter.response();
    assert_eq!(r.msgid, 9);
    assert_eq!(
        agora_proto::testing::dec(&r.result.unwrap()),
        arr![true, "v"]
    );
}
