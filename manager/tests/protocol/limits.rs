//! The limits on what one connection may send (PROTOCOL.md section 1.1): message size,
//! nesting depth, container length, and the smaller size allowed before authentication.

use agora_proto::testing::{dec, request, request_raw};
use agora_proto::Limits;
use rmpv::Value;

use crate::support::*;

#[test]
fn an_oversize_message_gets_a_limit_error_and_the_connection_closes() {
    let server = TestServer::with_limits(Limits {
        max_message_bytes: 4096,
        ..Limits::default()
    });
    let mut c = server.client();
    // Named: the connection that made it is closed below, and the list must outlive it.
    let id = c.create("list", Some("survivor"), vec![]);
    // Just under the limit is fine.
    let fits = request(1, "list.append", p![id, Value::Binary(vec![1; 4000])]);
    assert!(fits.len() <= 4096);
    c.send(&fits);
    assert_eq!(c.response().result.unwrap(), [0xc0]);
    // Over it: the bin header announces too many bytes.
    c.send(&request(
        2,
        "list.append",
        p![id, Value::Binary(vec![1; 10_000])],
    ));
    let r = c.response();
    assert_eq!(r.msgid, 2);
    assert_eq!(r.result.unwrap_err().name, "LimitError");
    c.expect_closed();
    // Over it by many small values.
    let mut c = server.client();
    let many: Vec<Value> = (0..5000).map(|i| Value::from(i % 100)).collect();
    c.send(&request(3, "list.extend", p![id, Value::Array(many)]));
    let r = c.response();
    assert_eq!(r.msgid, 3);
    assert_eq!(r.result.unwrap_err().name, "LimitError");
    c.expect_closed();
    // Nothing of the refused messages was applied.
    let mut c = server.client();
    assert_eq!(c.ok("list.len", p![id]), Value::from(1));
}

#[test]
fn a_message_exactly_at_the_size_limit_is_accepted() {
    // Ids are random below 2^53, so the limit is taken from a probe with a stand-in id, and
    // the real probe's binary is padded to the same length once the id is known.
    let append = |id: u64, n: usize| request(1, "list.append", p![id, Value::Binary(vec![0; n])]);
    let limit = append(1 << 52, 1000).len();
    let server = TestServer::with_limits(Limits {
        max_message_bytes: limit,
        ..Limits::default()
    });
    let mut c = server.client();
    let id = c.create("list", None, vec![]);
    let probe = append(id, 1000 + limit - append(id, 1000).len());
    assert_eq!(probe.len(), limit);
    c.send(&probe);
    assert_eq!(c.response().result.unwrap(), [0xc0]);
    let over = request(
        2,
        "list.append",
        p![
            id,
            Value::Binary(vec![0; 1001 + limit - append(id, 1000).len()])
        ],
    );
    c.send(&over);
    assert_eq!(c.response().result.unwrap_err().name, "LimitError");
    c.expect_closed();
}

/// `depth` arrays nested inside each other around a 1.
fn nested(depth: usize) -> Value {
    (0..depth).fold(Value::from(1), |inner, _| Value::Array(vec![inner]))
}

#[test]
fn too_deep_nesting_gets_a_limit_error_and_the_connection_closes() {
    let server = TestServer::with_limits(Limits {
        max_depth: 16,
        ..Limits::default()
    });
    let mut c = server.client();
    let id = c.create("list", None, vec![]);
    // The envelope is depth 1 and params depth 2, so the value may nest 14 deep.
    c.ok("list.append", p![id, nested(14)]);
    assert_eq!(c.ok("list.getitem", p![id, 0]), nested(14));
    c.send(&request(9, "list.append", p![id, nested(15)]));
    let r = c.response();
    assert_eq!(r.msgid, 9);
    assert_eq!(r.result.unwrap_err().name, "LimitError");
    c.expect_closed();
    // With the default limit (128) as well.
    let server = TestServer::start();
    let mut c = server.client();
    c.send(&request(10, "ping", vec![nested(200)]));
    let r = c.response();
    assert_eq!(r.msgid, 10);
    assert_eq!(r.result.unwrap_err().name, "LimitError");
    c.expect_closed();
}

#[test]
fn too_long_containers_get_a_limit_error_and_the_connection_closes() {
    let server = TestServer::with_limits(Limits {
        max_container_len: 100,
        ..Limits::default()
    });
    let mut c = server.client();
    let id = c.create("list", Some("survivor"), vec![]);
    let items = |n: usize| Value::Array((0..n).map(|i| Value::from(i as u64)).collect());
    c.ok("list.extend", p![id, items(100)]);
    c.send(&request(4, "list.extend", p![id, items(101)]));
    let r = c.response();
    assert_eq!(r.msgid, 4);
    assert_eq!(r.result.unwrap_err().name, "LimitError");
    c.expect_closed();
    // Maps count entries.
    let mut c = server.client();
    let entries = |n: usize| {
        Value::Map(
            (0..n)
                .map(|i| (Value::from(i as u64), Value::from(0)))
                .collect(),
        )
    };
    let d = c.create("dict", None, vec![entries(100)]);
    c.send(&request(5, "dict.update", p![d, entries(101)]));
    let r = c.response();
    assert_eq!(r.msgid, 5);
    assert_eq!(r.result.unwrap_err().name, "LimitError");
    c.expect_closed();
    // A header that announces a huge container fails at once, before its elements arrive.
    let mut c = server.client();
    // params [1, <array32 of 2^32 - 1 elements>], and nothing after the header.
    let msg = request_raw(
        6,
        "list.extend",
        &[&[0x01], &[0xdd, 0xff, 0xff, 0xff, 0xff]],
    );
    c.send(&msg);
    let r = c.response();
    assert_eq!(r.msgid, 6);
    assert_eq!(r.result.unwrap_err().name, "LimitError");
    c.expect_closed();
    let mut c = server.client();
    assert_eq!(c.ok("list.len", p![id]), Value::from(100));
}

#[test]
fn a_pre_auth_message_over_64_kib_is_refused() {
    let server = TestServer::start();
    let mut c = server.connect();
    c.send(&request(1, "hello", vec![Value::Binary(vec![0; 70_000])]));
    let r = c.response();
    assert_eq!(r.msgid, 1);
    assert_eq!(r.result.unwrap_err().name, "LimitError");
    c.expect_closed();
    // Once authenticated, the same message is an ordinary one.
    let mut c = server.client();
    let id = c.create("list", None, vec![]);
    c.ok("list.append", p![id, Value::Binary(vec![0; 70_000])]);
    assert_eq!(
        c.ok("list.getitem", p![id, 0]),
        Value::Binary(vec![0; 70_000])
    );
}

// ---------------------------------------------------------------------------------------------
// Limits per connection: connections, the time to authenticate, unwritten replies
// ---------------------------------------------------------------------------------------------

fn config() -> agora_manager::Config {
    agora_manager::Config::new(AUTHKEY.to_vec())
}

#[test]
fn a_server_refuses_limits_of_zero_and_a_depth_past_the_deepest() {
    use std::time::Duration;
    let zeroed: [fn(&mut agora_manager::Config); 4] = [
        |c| c.max_connections = 0,
        |c| c.auth_timeout = Duration::ZERO,
        |c| c.max_output_bytes = 0,
        |c| c.limits.max_depth = agora_proto::Limits::DEEPEST + 1,
    ];
    for zero in zeroed {
        let mut c = config();
        zero(&mut c);
        let err = agora_manager::Server::new(vec![], c)
            .err()
            .expect("refused");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    }
}

#[test]
fn max_connections_counts_every_listener() {
    let mut c = config();
    c.max_connections = 1;
    let server = TestServer::with_config(c, true);
    let mut first = server.client();
    let mut refused = server.connect_tcp();
    expect_error_notification(&mut refused, "LimitError");
    refused.expect_closed();
    assert_eq!(first.ok("ping", p![]), Value::from("pong"));
}

/// A client may pipeline far more replies than the bound on unwritten replies: the manager
/// stops reading until they are taken, then answers the rest, every one, in order.
#[test]
fn replies_beyond_the_output_bound_all_arrive_in_order() {
    let mut c = config();
    c.max_output_bytes = 4096;
    let server = TestServer::with_config(c, false);
    let stream = std::os::unix::net::UnixStream::connect(&server.socket).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut c = agora_proto::testing::RawClient::from_unix_stream(stream).unwrap();
    c.authenticate(AUTHKEY);
    let big = Value::Binary(vec![3; 100_000]);
    let id = c.create("value", None, vec![NIL, big.clone()]);
    let mut batch = Vec::new();
    for msgid in 1000..1200 {
        batch.extend(request(msgid, "value.get", p![id]));
    }
    batch.extend(request(1200, "ping", p![]));
    // Written from another thread: the manager stops taking them until replies are read.
    let sending = std::thread::spawn(move || {
        use std::io::Write;
        writer.write_all(&batch).expect("send the batch");
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    for msgid in 1000..1200 {
        let r = c.response();
        assert_eq!(r.msgid, msgid);
        assert_eq!(dec(&r.result.expect("value.get")), big);
    }
    let r = c.response();
    assert_eq!(r.msgid, 1200);
    assert_eq!(dec(&r.result.unwrap()), Value::from("pong"));
    sending.join().unwrap();
}

/// A client that sends its requests, then closes its writing half, still gets every reply,
/// however many wait behind the bound when its end-of-file is read.
#[test]
fn a_half_closed_client_gets_every_reply() {
    let mut c = config();
    c.max_output_bytes = 4096;
    let server = TestServer::with_config(c, false);
    let stream = std::os::unix::net::UnixStream::connect(&server.socket).unwrap();
    let mut c =
        agora_proto::testing::RawClient::from_unix_stream(stream.try_clone().unwrap()).unwrap();
    c.authenticate(AUTHKEY);
    let id = c.create("value", None, vec![NIL, Value::Binary(vec![5; 20_000])]);
    let mut batch = Vec::new();
    for msgid in 1..=50 {
        batch.extend(request(msgid, "value.get", p![id]));
    }
    c.send(&batch);
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    for msgid in 1..=50 {
        let r = c.response();
        assert_eq!(r.msgid, msgid);
        assert!(r.result.is_ok());
    }
    c.expect_closed();
}

/// A lock granted to a connection whose replies are stuck behind the bound (its client does
/// not read) and which then goes away is given back, not lost.
#[test]
fn a_grant_stuck_behind_unread_replies_is_given_back_when_the_client_leaves() {
    let mut c = config();
    c.max_output_bytes = 4096;
    let server = TestServer::with_config(c, false);
    let mut owner = server.client();
    let lock = owner.create("lock", None, vec![]);
    let value = owner.create("value", None, vec![NIL, Value::Binary(vec![9; 100_000])]);
    assert_eq!(owner.ok("lock.acquire", p![lock]), Value::from(1));

    let mut greedy = server.client();
    let mut batch = request(1, "lock.acquire", p![lock]);
    for msgid in 2..50 {
        batch.extend(request(msgid, "value.get", p![value]));
    }
    greedy.send(&batch);
    std::thread::sleep(std::time::Duration::from_millis(100));
    // Granted to the greedy client, whose replies wait behind what it never read.
    assert_eq!(owner.ok("lock.release", p![lock]), NIL);
    std::thread::sleep(std::time::Duration::from_millis(100));
    drop(greedy);

    let mut next = server.client();
    assert_eq!(next.ok("lock.acquire", p![lock]), Value::from(1));
}

/// A stranger that pipelines `hello` and never reads is bounded before authenticating too,
/// and closed at its auth timeout although its replies are stuck.
#[test]
fn a_stranger_pipelining_hello_without_reading_is_closed_at_its_auth_timeout() {
    use std::time::{Duration, Instant};
    let mut c = config();
    c.auth_timeout = Duration::from_millis(300);
    let server = TestServer::with_config(c, false);
    let stream = std::os::unix::net::UnixStream::connect(&server.socket).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let started = Instant::now();
    // Far more replies than the socket holds: writes stall once the manager stops reading.
    let sending = std::thread::spawn(move || {
        use std::io::Write;
        let hellos: Vec<u8> = (0..20_000)
            .flat_map(|i| request(i, "hello", p![]))
            .collect();
        // Fails once the manager closes the connection.
        let _ = writer.write_all(&hellos);
    });
    std::thread::sleep(Duration::from_millis(600));
    // What was answered before the close (it may end inside a reply), then end-of-file or a
    // reset (the manager closed with requests unread).
    let mut stream = stream;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        use std::io::Read;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the connection was not closed: {e}"),
        }
    }
    // Each hello reply is over 100 bytes.
    assert!(received < 20_000 * 100, "all hellos were answered");
    assert!(started.elapsed() < Duration::from_secs(10));
    sending.join().unwrap();
}

#[test]
fn hello_reports_the_limits_of_an_authenticated_connection() {
    let server = TestServer::with_limits(Limits {
        max_message_bytes: 4096,
        max_depth: 20,
        max_container_len: 300,
    });
    let mut c = server.connect();
    let hello = c.ok("hello", vec![]);
    let limits = hello
        .as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("limits")))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no limits in {hello}"));
    assert_eq!(
        limits,
        Value::Map(vec![
            ("max_message_bytes".into(), 4096.into()),
            ("max_depth".into(), 20.into()),
            ("max_container_len".into(), 300.into()),
        ])
    );
}
