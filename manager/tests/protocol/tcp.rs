//! The same protocol over TCP, the other transport (PROTOCOL.md section 1).

use std::thread;
use std::time::Duration;

use agora_manager::Config;
use agora_proto::testing::{hmac_sha256, request};
use rmpv::Value;

use crate::support::*;

#[test]
fn the_same_protocol_over_tcp() {
    let server = TestServer::with_config(Config::new(AUTHKEY.to_vec()), true);
    let mut t = server.connect_tcp();
    assert_eq!(t.fail("ping", vec![]), "AuthenticationError");
    t.expect_closed();
    let mut t = server.connect_tcp();
    t.authenticate(AUTHKEY);
    let d = t.create("dict", Some("over tcp"), vec![]);
    t.ok("dict.setitem", p![d, "k", "v"]);
    // Pipelined, and split across writes.
    let mut batch = Vec::new();
    for i in 0..100u32 {
        batch.extend(request(i, "dict.setitem", p![d, i, i]));
    }
    let (first, second) = batch.split_at(batch.len() / 3);
    t.send(first);
    thread::sleep(Duration::from_millis(5));
    t.send(second);
    let got = t.responses_by_msgid(100);
    assert!(got.values().all(|r| r.as_deref() == Ok(&[0xc0][..])));
    // A Unix client sees the same objects.
    let mut u = server.client();
    assert_eq!(u.ok("lookup", p!["over tcp"]), arr!["dict", d]);
    assert_eq!(u.ok("dict.len", p![d]), Value::from(101));
    // Wrong digest over TCP: refused and closed.
    let mut bad = server.connect_tcp();
    let challenge = bad.hello();
    let err = bad.call(
        "auth",
        vec![Value::Binary(hmac_sha256(b"nope", &challenge))],
    );
    assert_eq!(err.unwrap_err().name, "AuthenticationError");
    bad.expect_closed();
    // Garbage over TCP: the notification, then the close.
    let mut bad = server.connect_tcp();
    bad.send(&[0xc1]);
    expect_error_notification(&mut bad, "ProtocolError");
    bad.expect_closed();
    assert_eq!(t.ok("dict.getitem", p![d, "k"]), Value::from("v"));
}

#[test]
fn an_oversize_message_over_tcp_still_gets_its_limit_error() {
    // The manager stops reading at the bad header and closes with the rest of the message
    // unread; the LimitError it wrote first must still reach the client.
    let mut config = Config::new(AUTHKEY.to_vec());
    config.limits.max_message_bytes = 4096;
    let server = TestServer::with_config(config, true);
    for _ in 0..20 {
        let mut t = server.connect_tcp();
        t.authenticate(AUTHKEY);
        let msg = request(7, "ping", vec![Value::Binary(vec![0; 1 << 20])]);
        // The write may fail part way once the manager has closed; that is expected.
        let _ = t.try_send(&msg);
        let r = t.response();
        assert_eq!(r.msgid, 7);
        assert_eq!(r.result.unwrap_err().name, "LimitError");
        t.expect_closed();
    }
}
