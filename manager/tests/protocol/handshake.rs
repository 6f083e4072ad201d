//! `hello`, `auth` and `ping`: every connection must authenticate before anything else
//! (PROTOCOL.md section 2).

use agora_proto::testing::{dec, enc, hmac_sha256};
use rmpv::Value;

use crate::support::*;

#[test]
fn hello_reports_the_protocol_and_a_fresh_challenge_each_time() {
    let server = TestServer::start();
    let mut c = server.connect();
    // `hello` checks protocol 1, server name, version and a 32-byte bin challenge.
    let first = c.hello();
    let second = c.hello();
    assert_ne!(first, second, "each hello issues a fresh challenge");
    let mut other = server.connect();
    assert_ne!(other.hello(), second);
}

#[test]
fn auth_with_the_right_digest_succeeds() {
    let server = TestServer::start();
    let mut c = server.connect();
    let challenge = c.hello();
    let digest = hmac_sha256(AUTHKEY, &challenge);
    // Check the result's exact bytes: `true` is 0xc3.
    let mut d = vec![0xc4, 32];
    d.extend_from_slice(&digest);
    assert_eq!(c.call_raw("auth", &[&d]).unwrap(), [0xc3]);
    assert_eq!(c.ok("ping", vec![]), Value::from("pong"));
}

#[test]
fn auth_answers_the_latest_challenge_only() {
    let server = TestServer::start();
    let mut c = server.connect();
    let old = c.hello();
    let _new = c.hello();
    let r = c.call("auth", vec![Value::Binary(hmac_sha256(AUTHKEY, &old))]);
    assert_eq!(r.unwrap_err().name, "AuthenticationError");
}

#[test]
fn a_digest_sent_as_str_is_accepted() {
    let server = TestServer::start();
    let mut c = server.connect();
    let digest = hmac_sha256(AUTHKEY, &c.hello());
    // str8 carrying the 32 raw digest bytes (not UTF-8, as old clients send binary data).
    let mut as_str = vec![0xd9, 32];
    as_str.extend_from_slice(&digest);
    assert_eq!(c.call_raw("auth", &[&as_str]).unwrap(), [0xc3]);
    assert_eq!(c.ok("ping", vec![]), Value::from("pong"));
}

#[test]
fn a_wrong_digest_is_refused_and_the_connection_closed() {
    let server = TestServer::start();
    let mut c = server.connect();
    let challenge = c.hello();
    let digest = hmac_sha256(b"some other key", &challenge);
    let err = c.call("auth", vec![Value::Binary(digest)]).unwrap_err();
    assert_eq!(err.name, "AuthenticationError");
    c.expect_closed();

    // A truncated digest, and a digest of the wrong type, fare no better.
    let mut c = server.connect();
    let digest = hmac_sha256(AUTHKEY, &c.hello());
    let err = c
        .call("auth", vec![Value::Binary(digest[..31].to_vec())])
        .unwrap_err();
    assert_eq!(err.name, "AuthenticationError");
    c.expect_closed();
    let mut c = server.connect();
    c.hello();
    assert_eq!(c.fail("auth", p![12345]), "AuthenticationError");
    c.expect_closed();

    // The manager itself is fine.
    let mut c = server.client();
    assert_eq!(c.ok("ping", vec![]), Value::from("pong"));
}

#[test]
fn calls_before_auth_are_refused_and_close_the_connection() {
    let server = TestServer::start();
    for (method, params) in [
        ("ping", vec![]),
        ("create", p!["dict", NIL]),
        ("objects", vec![]),
        ("dict.len", p![1]),
        ("no.such.method", vec![]),
    ] {
        let mut c = server.connect();
        let err = c.call(method, params).unwrap_err();
        assert_eq!(err.name, "AuthenticationError", "{method}");
        assert_eq!(
            err.message,
            "a call other than hello or auth before authenticating: call hello, then auth; \
             closing the connection"
        );
        c.expect_closed();
    }
    // Refused after hello alone too.
    let mut c = server.connect();
    c.hello();
    assert_eq!(c.fail("ping", vec![]), "AuthenticationError");
    c.expect_closed();
    // A response from the client, or bytes that are MessagePack but no message, too.
    for junk in [enc(&arr![1, 5, NIL, NIL]), vec![0x47, 0x45, 0x54]] {
        let mut c = server.connect();
        c.send(&junk);
        let notice = c.frame();
        let notice = rmpv::decode::read_value(&mut notice.as_slice()).unwrap();
        assert!(
            notice.to_string().contains("AuthenticationError"),
            "{notice}"
        );
        c.expect_closed();
    }
    // A notification is ignored, and the connection may authenticate.
    let mut c = server.connect();
    c.send(&enc(&arr![2, "objects", Value::Array(vec![])]));
    c.authenticate(AUTHKEY);
    assert!(c.ok("objects", vec![]).as_array().unwrap().is_empty());
}

#[test]
fn auth_before_hello_fails() {
    let server = TestServer::start();
    let mut c = server.connect();
    // Whatever the digest, there is no challenge to answer yet.
    let err = c
        .call("auth", vec![Value::Binary(vec![0; 32])])
        .unwrap_err();
    assert_eq!(err.name, "AuthenticationError");
    // A fresh connection that does it in order succeeds.
    server.client();
}

#[test]
fn auth_with_a_wrong_number_of_params_is_an_argument_count_error() {
    let server = TestServer::start();
    let mut c = server.connect();
    c.hello();
    assert_eq!(c.fail("auth", vec![]), "ArgumentCountError");
    // A failed auth closes the connection, whatever made it fail.
    c.expect_closed();
    let mut c = server.connect();
    let digest = hmac_sha256(AUTHKEY, &c.hello());
    let err = c.call(
        "auth",
        vec![Value::Binary(digest.clone()), Value::Binary(digest)],
    );
    assert_eq!(err.unwrap_err().name, "ArgumentCountError");
    c.expect_closed();
}

#[test]
fn ping_takes_no_params() {
    let server = TestServer::start();
    let mut c = server.client();
    assert_eq!(c.fail("ping", p![1]), "ArgumentCountError");
    assert_eq!(
        c.call_raw("ping", &[]).unwrap(),
        [0xa4, b'p', b'o', b'n', b'g']
    );
}

/// A peer that failed recently waits for its place before its next `auth` is checked; a right
/// key then authenticates, and the requests sent behind the `auth` are answered after it.
#[test]
fn an_auth_that_waits_for_its_place_is_checked_then() {
    let mut config = agora_manager::Config::new(AUTHKEY.to_vec());
    config.auth_throttle = agora_manager::throttle::ThrottleConfig {
        burst: 1,
        interval: std::time::Duration::from_millis(300),
    };
    let server = TestServer::with_config(config, false);
    let mut bad = server.connect();
    let digest = hmac_sha256(b"not the key", &bad.hello());
    assert_eq!(
        bad.fail("auth", vec![Value::Binary(digest)]),
        "AuthenticationError"
    );
    bad.expect_closed();

    // Every client of the test is the same peer (its uid): this one waits for its place.
    let mut c = server.connect();
    let digest = hmac_sha256(AUTHKEY, &c.hello());
    let mut batch = agora_proto::testing::request(50, "auth", vec![Value::Binary(digest)]);
    batch.extend(agora_proto::testing::request(51, "ping", vec![]));
    let sent = std::time::Instant::now();
    c.send(&batch);
    let auth = c.response();
    // Its place came 300 ms after the failure (a lower bound: it did wait).
    assert!(sent.elapsed() >= std::time::Duration::from_millis(100));
    assert_eq!(auth.msgid, 50);
    assert_eq!(auth.result.expect("authenticated"), [0xc3]);
    let ping = c.response();
    assert_eq!(ping.msgid, 51);
    assert_eq!(dec(&ping.result.expect("pong")), Value::from("pong"));

    // A wrong key that waited fails as at once, and closes the connection.
    let mut bad = server.connect();
    bad.hello();
    let digest = hmac_sha256(b"still not the key", &bad.hello());
    assert_eq!(
        bad.fail("auth", vec![Value::Binary(digest)]),
        "AuthenticationError"
    );
    bad.expect_closed();
}

/// A connection authenticated longer ago than the auth timeout may authenticate again: its
/// attempt gets a place in its peer's line like a new connection's, not a refusal as if its
/// own connect-time deadline still applied.
#[test]
fn a_connection_older_than_the_auth_timeout_authenticates_again() {
    let mut config = agora_manager::Config::new(AUTHKEY.to_vec());
    config.auth_timeout = std::time::Duration::from_millis(200);
    let server = TestServer::with_config(config, false);
    let mut c = server.client();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let digest = hmac_sha256(AUTHKEY, &c.hello());
    assert_eq!(
        c.call("auth", vec![Value::Binary(digest)])
            .expect("authenticated again"),
        Value::Boolean(true)
    );
    assert_eq!(c.call("ping", vec![]).unwrap(), Value::from("pong"));
}
