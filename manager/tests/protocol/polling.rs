//! Polling for the next request (`agora_manager::spin`): a polling connection holds up
//! neither the others nor a shutdown, and with polling off calls are answered as usual.

use std::time::Duration;

use agora_manager::Config;
use agora_proto::testing::{dec, request, RawClient};
use rmpv::Value;

use crate::support::*;

/// A manager on one worker thread whose busy connections poll for `budget`.
fn polling_server(budget: Duration) -> TestServer {
    let mut config = Config::new(AUTHKEY.to_vec());
    config.spin.budget = budget;
    TestServer::with_workers(config, false, 1)
}

/// Makes `c` a busy connection (requests right after replies), then leaves it silent, so that
/// its session polls for a next request that does not come.
fn leave_polling(c: &mut RawClient) {
    for _ in 0..50 {
        c.ok("ping", vec![]);
    }
}

#[test]
fn a_connection_polling_for_its_next_request_does_not_hold_up_the_others() {
    // One worker thread and a budget far longer than the test: only polling that yields to
    // the runtime between polls lets the other connection be served.
    let server = polling_server(Duration::from_secs(3600));
    let mut quiet = server.client();
    let mut other = server.client();
    leave_polling(&mut quiet);
    let started = std::time::Instant::now();
    for i in 0..200 {
        assert_eq!(other.ok("ping", vec![]), Value::from("pong"), "ping {i}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "200 pings took {:?} beside a polling connection",
        started.elapsed()
    );
    // And the polling connection itself is still served.
    assert_eq!(quiet.ok("ping", vec![]), Value::from("pong"));
}

#[test]
fn shutdown_is_not_held_up_by_a_polling_connection() {
    let mut server = polling_server(Duration::from_secs(3600));
    let mut quiet = server.client();
    leave_polling(&mut quiet);
    let started = std::time::Instant::now();
    server.client().ok("shutdown", vec![]);
    server.wait_stopped().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopping took {:?}",
        started.elapsed()
    );
}

#[test]
fn with_polling_off_calls_are_answered_as_usual() {
    let server = polling_server(Duration::ZERO);
    let mut c = server.client();
    let id = c.create("dict", None, vec![]);
    for i in 0..100 {
        c.ok(
            "dict.setitem",
            vec![Value::from(id), Value::from("k"), Value::from(i)],
        );
        assert_eq!(
            c.ok("dict.get", vec![Value::from(id), Value::from("k")]),
            Value::from(i)
        );
    }
}

/// A holder's connection is polled for its client's next call and the runtime's one thread is
/// its while it does, so another client's `acquire` may wait unread in its socket. When the
/// holder lets go of the lock, that acquire is read before the holder's next request: a
/// release sent with an acquire behind it (in one write, or in two) does not get the lock
/// straight back while someone asked first.
#[test]
fn a_release_lets_an_unread_acquire_in_before_the_releasers_next_request() {
    // One worker thread, and polling for up to its longest budget: only giving way on the
    // release lets the waiter's request be read before the holder's next one.
    let server = polling_server(Duration::from_secs(3600));
    let mut holder = server.client();
    let mut waiter = server.client();
    let lock = Value::from(holder.create("lock", None, vec![]));
    for together in [true, false] {
        assert_eq!(
            holder.ok("lock.acquire", vec![lock.clone()]),
            Value::from(1)
        );
        // Busy: the manager polls the holder's connection for its next request.
        leave_polling(&mut holder);
        // Sent before the holder's release, and left unread: the holder's connection holds
        // the thread, polling for the holder's next request, which comes right after.
        let asked = waiter.msgid();
        waiter.send(&request(asked, "lock.acquire", vec![lock.clone()]));
        let (release, again) = (holder.msgid(), holder.msgid());
        let release_req = request(release, "lock.release", vec![lock.clone()]);
        let again_req = request(again, "lock.acquire", vec![lock.clone()]);
        if together {
            holder.send(&[release_req, again_req].concat());
        } else {
            holder.send(&release_req);
            assert_eq!(holder.response().msgid, release);
            holder.send(&again_req);
        }
        let granted = waiter.response();
        assert_eq!(granted.msgid, asked, "together: {together}");
        assert_eq!(dec(&granted.result.expect("granted")), Value::from(1));
        // The holder's acquire waits behind the waiter's: a ping goes past it.
        let ping = holder.msgid();
        holder.send(&request(ping, "ping", vec![]));
        let mut first = holder.response();
        if together {
            assert_eq!(first.msgid, release);
            first = holder.response();
        }
        assert_eq!(
            first.msgid, ping,
            "the releaser's acquire was answered first"
        );
        assert_eq!(waiter.ok("lock.release", vec![lock.clone()]), Value::Nil);
        let back = holder.response();
        assert_eq!(back.msgid, again);
        assert_eq!(dec(&back.result.expect("granted")), Value::from(1));
        assert_eq!(holder.ok("lock.release", vec![lock.clone()]), Value::Nil);
    }
}
