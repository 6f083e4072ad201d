//! `hello`, `auth` and `ping`: every connection must authenticate before anything else
//! (PROTOCOL.md section 2).

use agora_proto::testing::hmac_sha256;
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
fn calls_before_auth_are_refused_and_the_connection_stays_open() {
    let server = TestServer::start();
    let mut c = server.connect();
    for (method, params) in [
        ("ping", vec![]),
        ("create", p!["dict", NIL]),
        ("objects", vec![]),
        ("dict.len", p![1]),
        ("no.such.method", vec![]),
    ] {
        let err = c.call(method, params).unwrap_err();
        assert_eq!(err.name, "AuthenticationError", "{method}");
        assert_eq!(err.message, "authenticate first: call hello, then auth");
    }
    // Still refused after hello alone.
    c.hello();
    assert_eq!(c.fail("ping", vec![]), "AuthenticationError");
    // The same connection may still authenticate.
    c.authenticate(AUTHKEY);
    assert_eq!(c.ok("ping", vec![]), Value::from("pong"));
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
    let digest = hmac_sha256(AUTHKEY, &c.hello());
    assert_eq!(c.fail("auth", vec![]), "ArgumentCountError");
    let err = c.call(
        "auth",
        vec![Value::Binary(digest.clone()), Value::Binary(digest)],
    );
    assert_eq!(err.unwrap_err().name, "ArgumentCountError");
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
