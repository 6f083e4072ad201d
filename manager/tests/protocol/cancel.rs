//! The `cancel` notification (PROTOCOL.md section 4.1): a parked call the client gives up on
//! leaves its line and is answered `CancelledError`; a grant already written stays the
//! client's to give back; nothing else on the connection changes.

use agora_proto::testing::{dec, RawClient};
use rmpv::Value;

use crate::support::*;

/// Sends `cancel [msgid]` as a notification.
fn cancel(c: &mut RawClient, msgid: u32) {
    let mut note = Vec::new();
    let param = agora_proto::testing::enc(&Value::from(msgid));
    agora_proto::encode::notification(&mut note, "cancel", &[&param]);
    c.send(&note);
}

/// The next response, which must be the cancelled call's `CancelledError`.
fn expect_cancelled(c: &mut RawClient, msgid: u32) {
    let r = c.response();
    assert_eq!(r.msgid, msgid);
    let err = r
        .result
        .expect_err("a cancelled call is answered with an error");
    assert_eq!(err.name, "CancelledError", "{err}");
}

#[test]
fn every_parked_method_can_be_cancelled() {
    let server = TestServer::start();
    for method in agora_proto::methods::MAY_WAIT {
        let (mut c, mut holder) = (server.client(), server.client());
        // A long timeout: only the cancel can end the call within the test's read timeout.
        let params = waiting_params(&mut c, &mut holder, method);
        let call = c.park(method, params);
        cancel(&mut c, call);
        expect_cancelled(&mut c, call);
        // The connection serves on.
        assert_eq!(c.ok("ping", vec![]), Value::from("pong"), "{method}");
    }
}

/// The params of a call to `method` that waits for a long time (see `waiting::waiting_call`).
fn waiting_params(c: &mut RawClient, holder: &mut RawClient, method: &str) -> Vec<Value> {
    crate::waiting::waiting_call(c, holder, method, 600.0)
}

#[test]
fn a_cancelled_acquire_leaves_the_lock_to_the_next_in_line() {
    let server = TestServer::start();
    let (mut a, mut b, mut holder) = (server.client(), server.client(), server.client());
    let lock = Value::from(a.create("lock", None, vec![]));
    assert_eq!(
        holder.ok("lock.acquire", vec![lock.clone()]),
        Value::from(1)
    );
    let first = a.park("lock.acquire", vec![lock.clone()]);
    let second = b.park("lock.acquire", vec![lock.clone()]);
    cancel(&mut a, first);
    expect_cancelled(&mut a, first);
    holder.ok("lock.release", vec![lock.clone()]);
    // The cancelled waiter was skipped: the next one gets the lock, as a plain grant.
    let r = b.response();
    assert_eq!(
        (r.msgid, r.result.map(|v| dec(&v))),
        (second, Ok(Value::from(1)))
    );
    b.ok("lock.release", vec![lock.clone()]);
    assert_eq!(a.ok("lock.locked", vec![lock]), Value::Boolean(false));
}

#[test]
fn a_cancelled_get_takes_no_item() {
    let server = TestServer::start();
    let mut c = server.client();
    let q = Value::from(c.create("queue", None, vec![]));
    let get = c.park("queue.get", vec![q.clone()]);
    cancel(&mut c, get);
    expect_cancelled(&mut c, get);
    c.ok("queue.put", vec![q.clone(), Value::from(5)]);
    assert_eq!(c.ok("queue.qsize", vec![q.clone()]), Value::from(1));
    assert_eq!(c.ok("queue.get", vec![q]), Value::from(5));
}

#[test]
fn a_cancel_after_the_grant_was_written_changes_nothing() {
    let server = TestServer::start();
    let (mut c, mut holder) = (server.client(), server.client());
    let lock = Value::from(c.create("lock", None, vec![]));
    holder.ok("lock.acquire", vec![lock.clone()]);
    let call = c.park("lock.acquire", vec![lock.clone()]);
    holder.ok("lock.release", vec![lock.clone()]);
    let r = c.response();
    assert_eq!(
        (r.msgid, r.result.map(|v| dec(&v))),
        (call, Ok(Value::from(1)))
    );
    // Too late: the grant is the client's, which gives it back with a release.
    cancel(&mut c, call);
    assert_eq!(
        c.ok("lock.locked", vec![lock.clone()]),
        Value::Boolean(true)
    );
    c.ok("lock.release", vec![lock.clone()]);
    assert_eq!(c.ok("lock.locked", vec![lock]), Value::Boolean(false));
}

#[test]
fn cancelling_an_unknown_msgid_or_garbage_is_ignored() {
    let server = TestServer::start();
    let mut c = server.client();
    cancel(&mut c, 12_345);
    let mut note = Vec::new();
    agora_proto::encode::notification(&mut note, "cancel", &[&[0xa1, b'x']]);
    c.send(&note);
    assert_eq!(c.ok("ping", vec![]), Value::from("pong"));
}

/// A cancel racing the grant, from two connections at once: the waiter is answered either
/// the grant (written before the cancel was read: the client gives it back) or
/// `CancelledError` (the lock went on as a plain grant, never an owner-died one). Either way
/// the next waiter gets the lock with `1`, and nothing is left held.
#[test]
fn a_cancel_racing_a_release_leaves_the_lock_to_the_next_in_line() {
    let server = TestServer::start();
    let (mut holder, mut racer, mut next) = (server.client(), server.client(), server.client());
    let lock = Value::from(holder.create("lock", None, vec![]));
    let (mut granted, mut cancelled) = (0, 0);
    for round in 0..200 {
        holder.ok("lock.acquire", vec![lock.clone()]);
        let call = racer.park("lock.acquire", vec![lock.clone()]);
        let behind = next.park("lock.acquire", vec![lock.clone()]);
        let release = {
            let mut note = Vec::new();
            let msgid = holder.msgid();
            note.extend(agora_proto::testing::request(
                msgid,
                "lock.release",
                vec![lock.clone()],
            ));
            (msgid, note)
        };
        // Both written at once, the order left to the scheduler.
        std::thread::scope(|s| {
            s.spawn(|| holder.send(&release.1));
            if round % 2 == 0 {
                std::thread::yield_now();
            }
            cancel(&mut racer, call);
        });
        assert_eq!(holder.response().msgid, release.0);
        let r = racer.response();
        assert_eq!(r.msgid, call);
        match r.result {
            Ok(v) => {
                assert_eq!(dec(&v), Value::from(1));
                granted += 1;
                racer.ok("lock.release", vec![lock.clone()]);
            }
            Err(e) => {
                assert_eq!(e.name, "CancelledError", "{e}");
                cancelled += 1;
            }
        }
        let r = next.response();
        assert_eq!(r.msgid, behind);
        assert_eq!(
            r.result.map(|v| dec(&v)),
            Ok(Value::from(1)),
            "a plain grant"
        );
        next.ok("lock.release", vec![lock.clone()]);
    }
    assert_eq!(granted + cancelled, 200);
    assert_eq!(holder.ok("lock.locked", vec![lock]), Value::Boolean(false));
}

/// The same race on a queue: the item is delivered to the cancelled get (whose client puts it
/// back with `nack`) or stays in the queue; never lost, never twice.
#[test]
fn a_cancel_racing_a_put_loses_no_item() {
    let server = TestServer::start();
    let (mut putter, mut getter) = (server.client(), server.client());
    let q = Value::from(putter.create("queue", None, vec![]));
    for round in 0..200i64 {
        let call = getter.park("queue.get_acked", vec![q.clone()]);
        let put = {
            let msgid = putter.msgid();
            let bytes = agora_proto::testing::request(
                msgid,
                "queue.put",
                vec![q.clone(), Value::from(round)],
            );
            (msgid, bytes)
        };
        std::thread::scope(|s| {
            s.spawn(|| putter.send(&put.1));
            cancel(&mut getter, call);
        });
        assert_eq!(putter.response().msgid, put.0);
        let r = getter.response();
        assert_eq!(r.msgid, call);
        if let Ok(v) = r.result {
            let got = dec(&v);
            let pair = got.as_array().expect("[receipt, item]");
            assert_eq!(pair[1], Value::from(round));
            getter.ok("queue.nack", vec![q.clone(), pair[0].clone()]);
        }
        assert_eq!(putter.ok("queue.qsize", vec![q.clone()]), Value::from(1));
        assert_eq!(putter.ok("queue.get", vec![q.clone()]), Value::from(round));
    }
}

/// A client may reuse the msgid of a parked call for another (the protocol leaves msgids to
/// it): when the first of the two is answered, the second stays cancellable by that msgid.
#[test]
fn a_reused_msgid_stays_cancellable_after_the_first_call_ends() {
    let server = TestServer::start();
    let (mut c, mut holder) = (server.client(), server.client());
    let (first_lock, second_lock) = (
        Value::from(c.create("lock", None, vec![])),
        Value::from(c.create("lock", None, vec![])),
    );
    for lock in [&first_lock, &second_lock] {
        assert_eq!(
            holder.ok("lock.acquire", vec![lock.clone()]),
            Value::from(1)
        );
    }
    let msgid = 900_000;
    let mut both = agora_proto::testing::request(msgid, "lock.acquire", vec![first_lock.clone()]);
    both.extend(agora_proto::testing::request(
        msgid,
        "lock.acquire",
        vec![second_lock.clone()],
    ));
    c.send(&both);
    assert_eq!(c.ok("ping", vec![]), Value::from("pong"), "both parked");
    holder.ok("lock.release", vec![first_lock]);
    let granted = c.response();
    assert_eq!(
        (granted.msgid, granted.result.map(|v| dec(&v))),
        (msgid, Ok(Value::from(1)))
    );
    cancel(&mut c, msgid);
    expect_cancelled(&mut c, msgid);
    assert_eq!(c.ok("lock.locked", vec![second_lock]), Value::Boolean(true));
}
