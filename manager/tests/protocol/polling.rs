//! Polling for the next request (`agora_manager::spin`): a polling connection holds up
//! neither the others nor a shutdown, and with polling off calls are answered as usual.

use std::time::Duration;

use agora_manager::Config;
use agora_proto::testing::RawClient;
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
