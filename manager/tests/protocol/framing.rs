//! Framing and envelopes (PROTOCOL.md section 1): messages split or pipelined any way, every
//! legal encoding of the envelope, notifications and responses from the client, bad envelopes
//! and bytes that are not MessagePack.

use std::collections::HashSet;
use std::thread;
use std::time::Duration;

use agora_proto::testing::{challenge_of, dec, enc, hmac_sha256, request};
use rmpv::Value;

use crate::support::*;

#[test]
fn a_request_sent_byte_by_byte_is_answered() {
    let server = TestServer::start();
    let mut c = server.connect();
    // The handshake itself, one byte per write.
    for byte in request(1, "hello", vec![]) {
        c.send(&[byte]);
        thread::sleep(Duration::from_millis(1));
    }
    let challenge = challenge_of(&dec(&c.response().result.unwrap()));
    let auth = request(
        2,
        "auth",
        vec![Value::Binary(hmac_sha256(AUTHKEY, &challenge))],
    );
    for byte in auth {
        c.send(&[byte]);
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(c.response().result.unwrap(), [0xc3]);

    // A request with every kind of header: str8, bin16, float, int64, a map, an ext.
    let id = c.create("dict", None, vec![]);
    let value = Value::Array(vec![
        Value::from("x".repeat(40)),
        Value::Binary(vec![7; 300]),
        Value::F64(2.5),
        Value::from(-5_000_000_000i64),
        map! {"k" => NIL},
        Value::Ext(1, list_ref(&mut c)[3..].to_vec()),
    ]);
    let msg = request(77, "dict.setitem", p![id, "key", value.clone()]);
    for byte in &msg {
        c.send(&[*byte]);
        thread::sleep(Duration::from_millis(1));
    }
    let r = c.response();
    assert_eq!((r.msgid, r.result.unwrap()), (77, vec![0xc0]));
    assert_eq!(c.ok("dict.get", p![id, "key"]), value);
}

#[test]
fn a_request_split_at_any_point_is_answered() {
    let server = TestServer::start();
    let mut c = server.client();
    let id = c.create("list", None, vec![]);
    let msg = request(
        1000,
        "list.append",
        p![id, arr!["abc", 1.5, -300, Value::Binary(vec![1, 2, 3])]],
    );
    for cut in 1..msg.len() {
        c.send(&msg[..cut]);
        // Give the manager time to read the first part on its own.
        thread::sleep(Duration::from_millis(2));
        c.send(&msg[cut..]);
        let r = c.response();
        assert_eq!(
            (r.msgid, r.result.unwrap()),
            (1000, vec![0xc0]),
            "cut {cut}"
        );
    }
    assert_eq!(c.ok("list.len", p![id]), Value::from(msg.len() as u64 - 1));
}

#[test]
fn a_thousand_pipelined_requests_get_a_thousand_answers() {
    let server = TestServer::start();
    let mut c = server.client();
    let id = c.create("dict", None, vec![]);
    // Scattered msgids, including 0 and the largest, sent in one write.
    let msgids: Vec<u32> = (0..1000u32)
        .map(|i| match i {
            0 => 0,
            999 => u32::MAX,
            _ => i.wrapping_mul(2_654_435_761) % 1_000_000_007,
        })
        .collect();
    assert_eq!(msgids.iter().collect::<HashSet<_>>().len(), 1000);
    let mut batch = Vec::new();
    for (i, &msgid) in msgids.iter().enumerate() {
        let req = if i % 2 == 0 {
            request(msgid, "dict.setitem", p![id, i as u64, i as u64 * 10])
        } else {
            request(msgid, "dict.get", p![id, i as u64 - 1])
        };
        batch.extend(req);
    }
    c.send(&batch);
    let got = c.responses_by_msgid(1000);
    for (i, msgid) in msgids.iter().enumerate() {
        let result = got[msgid].as_ref().expect("no errors");
        if i % 2 == 0 {
            assert_eq!(result, &[0xc0]);
        } else {
            // Requests on one connection run in order: the set before it is visible.
            assert_eq!(dec(result), Value::from((i as u64 - 1) * 10));
        }
    }
    assert_eq!(c.ok("dict.len", p![id]), Value::from(500));
}

#[test]
fn msgid_zero_and_the_largest_msgid_work() {
    let server = TestServer::start();
    let mut c = server.client();
    for msgid in [0, 1, 127, 128, 255, 256, 65_535, 65_536, u32::MAX] {
        c.send(&request(msgid, "ping", vec![]));
        let r = c.response();
        assert_eq!(r.msgid, msgid);
        assert_eq!(dec(&r.result.unwrap()), Value::from("pong"));
    }
    // msgid 0 in a non-canonical encoding (uint32) is still 0.
    c.send(&[
        0x94, 0x00, 0xce, 0, 0, 0, 0, 0xa4, b'p', b'i', b'n', b'g', 0x90,
    ]);
    let r = c.response();
    assert_eq!(r.msgid, 0);
}

#[test]
fn any_legal_encoding_of_the_envelope_is_understood() {
    let server = TestServer::start();
    let mut c = server.client();
    let headers: [&[u8]; 3] = [
        &[0x94],
        &[0xdc, 0x00, 0x04],
        &[0xdd, 0x00, 0x00, 0x00, 0x04],
    ];
    let msgids: [&[u8]; 9] = [
        &[0x21],
        &[0xcc, 0x21],
        &[0xcd, 0x00, 0x21],
        &[0xce, 0x00, 0x00, 0x00, 0x21],
        &[0xcf, 0, 0, 0, 0, 0, 0, 0, 0x21],
        &[0xd0, 0x21],
        &[0xd1, 0x00, 0x21],
        &[0xd2, 0x00, 0x00, 0x00, 0x21],
        &[0xd3, 0, 0, 0, 0, 0, 0, 0, 0x21],
    ];
    let methods: [&[u8]; 4] = [
        b"\xa4ping",
        b"\xd9\x04ping",
        b"\xda\x00\x04ping",
        b"\xdb\x00\x00\x00\x04ping",
    ];
    let params: [&[u8]; 3] = [
        &[0x90],
        &[0xdc, 0x00, 0x00],
        &[0xdd, 0x00, 0x00, 0x00, 0x00],
    ];
    for header in headers {
        for msgid in msgids {
            for method in methods {
                for p in params {
                    let msg = [header, &[0x00], msgid, method, p].concat();
                    c.send(&msg);
                    let r = c.response();
                    assert_eq!(r.msgid, 0x21, "{msg:02x?}");
                    assert_eq!(dec(&r.result.unwrap()), Value::from("pong"), "{msg:02x?}");
                }
            }
        }
    }
}

#[test]
fn a_request_type_in_a_wide_int_form_is_still_a_request() {
    let server = TestServer::start();
    let mut c = server.client();
    c.send(&[0x94, 0xcc, 0x00, 0x05, 0xa4, b'p', b'i', b'n', b'g', 0x90]);
    c.send(&request(6, "ping", vec![]));
    let r = c.response();
    assert_eq!(r.msgid, 5, "the request with a uint8 type is answered");
    assert_eq!(dec(&r.result.unwrap()), Value::from("pong"));
}

#[test]
fn the_method_may_be_a_bin() {
    let server = TestServer::start();
    let mut c = server.connect();
    // Even for the handshake.
    let hello = enc(&arr![
        0,
        5,
        Value::Binary(b"hello".to_vec()),
        Value::Array(vec![])
    ]);
    c.send(&hello);
    let r = c.response();
    assert_eq!(r.msgid, 5);
    let challenge = challenge_of(&dec(&r.result.unwrap()));
    c.send(&enc(&arr![
        0,
        6,
        Value::Binary(b"auth".to_vec()),
        arr![Value::Binary(hmac_sha256(AUTHKEY, &challenge))]
    ]));
    assert_eq!(c.response().result.unwrap(), [0xc3]);
    c.send(&enc(&arr![
        0,
        7,
        Value::Binary(b"ping".to_vec()),
        Value::Array(vec![])
    ]));
    assert_eq!(dec(&c.response().result.unwrap()), Value::from("pong"));
}

#[test]
fn notifications_and_responses_from_the_client_get_no_reply() {
    let server = TestServer::start();
    let mut c = server.connect();
    // Before authentication: a notification, as one common client sends right after connecting.
    c.send(&enc(&arr![2, "hello", Value::Array(vec![])]));
    c.send(&enc(&arr![2, "whatever", arr![1, 2]]));
    c.authenticate(AUTHKEY);
    let id = c.create("list", None, vec![]);
    let mut batch = Vec::new();
    // A notification naming a real method is not executed either.
    batch.extend(enc(&arr![
        2,
        "list.append",
        arr![id, "from a notification"]
    ]));
    batch.extend(enc(&arr![2, "shutdown", Value::Array(vec![])]));
    batch.extend(enc(&arr![1, 5, NIL, "a response of my own"]));
    batch.extend(enc(&arr![1, 6, arr!["KeyError", "x"], NIL]));
    batch.extend(request(42, "ping", vec![]));
    c.send(&batch);
    // The only reply is the ping's.
    let r = c.response();
    assert_eq!(r.msgid, 42);
    c.send(&request(43, "list.len", p![id]));
    let r = c.response();
    assert_eq!(r.msgid, 43);
    assert_eq!(dec(&r.result.unwrap()), Value::from(0));
}

#[test]
fn a_bad_envelope_with_a_msgid_gets_a_protocol_error_and_the_connection_stays() {
    let server = TestServer::start();
    let mut c = server.client();
    // params not an array, method not a str, method a bin that is not UTF-8.
    c.send(&enc(&arr![0, 9, "ping", 5]));
    c.send(&enc(&arr![0, 10, 42, Value::Array(vec![])]));
    c.send(&enc(&arr![
        0,
        11,
        Value::Binary(vec![0xff, 0xfe]),
        Value::Array(vec![])
    ]));
    for msgid in [9, 10, 11] {
        let r = c.response();
        assert_eq!(r.msgid, msgid);
        assert_eq!(r.result.unwrap_err().name, "ProtocolError");
    }
    assert_eq!(c.ok("ping", vec![]), Value::from("pong"));
}

#[test]
fn a_bad_envelope_without_a_msgid_is_dropped_and_the_connection_stays() {
    let server = TestServer::start();
    let mut c = server.client();
    let mut batch = Vec::new();
    batch.extend(enc(&Value::from(5))); // not an array
    batch.extend(enc(&map! {"a" => 1})); // not an array
    batch.extend(enc(&Value::Array(vec![]))); // empty
    batch.extend(enc(&arr![0, 12, "ping"])); // wrong length
    batch.extend(enc(&arr![3, 13, "ping", Value::Array(vec![])])); // unknown type
    batch.extend(enc(&arr![0, -1, "ping", Value::Array(vec![])])); // negative msgid
    batch.extend(enc(&arr![0, 1u64 << 32, "ping", Value::Array(vec![])])); // msgid > u32
    batch.extend(enc(&arr![0, "14", "ping", Value::Array(vec![])])); // msgid a str
    batch.extend(enc(&arr![2, 5, Value::Array(vec![])])); // notification, method an int
    batch.extend(request(15, "ping", vec![]));
    c.send(&batch);
    let r = c.response();
    assert_eq!(r.msgid, 15, "nothing is answered before the ping");
    assert_eq!(dec(&r.result.unwrap()), Value::from("pong"));
}

#[test]
fn garbage_gets_an_error_notification_then_the_connection_closes() {
    let server = TestServer::start();
    // Before authentication.
    let mut c = server.connect();
    c.send(&[0xc1]);
    expect_error_notification(&mut c, "ProtocolError");
    c.expect_closed();
    // After authentication, behind a good request that is answered first.
    let mut c = server.client();
    let mut batch = request(3, "ping", vec![]);
    batch.extend([0xc1, 0x00, 0x00]);
    c.send(&batch);
    assert_eq!(c.response().msgid, 3);
    expect_error_notification(&mut c, "ProtocolError");
    c.expect_closed();
}

#[test]
fn garbage_inside_a_request_is_answered_to_its_msgid_then_the_connection_closes() {
    let server = TestServer::start();
    let mut c = server.client();
    // [0, 12, "ping", <0xc1>
    c.send(&[0x94, 0x00, 0x0c, 0xa4, b'p', b'i', b'n', b'g', 0xc1]);
    let r = c.response();
    assert_eq!(r.msgid, 12);
    assert_eq!(r.result.unwrap_err().name, "ProtocolError");
    c.expect_closed();
}

#[test]
fn garbage_on_one_connection_does_not_disturb_another() {
    let server = TestServer::start();
    let mut good = server.client();
    let id = good.create("dict", Some("kept"), vec![map! {"a" => 1}]);
    good.ok("dict.setitem", p![id, "b", 2]);
    // Half a request on the good connection, then garbage on another, then the rest.
    let msg = request(500, "dict.setitem", p![id, "c", "x".repeat(100)]);
    good.send(&msg[..msg.len() / 2]);
    for _ in 0..5 {
        let mut bad = server.client();
        bad.send(&[0xc1; 64]);
        expect_error_notification(&mut bad, "ProtocolError");
        bad.expect_closed();
        let mut stranger = server.connect();
        stranger.send(&[0x94, 0x00, 0x01, 0xc1, 0xc1]);
        assert_eq!(
            stranger.response().result.unwrap_err().name,
            "ProtocolError"
        );
        stranger.expect_closed();
    }
    good.send(&msg[msg.len() / 2..]);
    let r = good.response();
    assert_eq!((r.msgid, r.result.unwrap()), (500, vec![0xc0]));
    assert_eq!(
        good.ok("dict.copy", p![id]),
        map! {"a" => 1, "b" => 2, "c" => "x".repeat(100)}
    );
    // New connections see the same dict.
    let mut later = server.client();
    assert_eq!(later.ok("lookup", p!["kept"]), arr!["dict", id]);
    assert_eq!(later.ok("dict.len", p![id]), Value::from(3));
}

#[test]
fn a_client_that_vanishes_mid_message_leaves_the_server_serving_others() {
    let server = TestServer::start();
    let mut other = server.client();
    let id = other.create("dict", None, vec![]);
    for i in 0..10u64 {
        let mut c = server.client();
        let msg = request(1, "dict.setitem", p![id, i, Value::Binary(vec![0; 5000])]);
        c.send(&msg[..msg.len() / 2]);
        drop(c);
        // Unauthenticated half messages, and probes that send nothing at all.
        let mut c = server.connect();
        c.send(&request(1, "hello", vec![])[..3]);
        drop(c);
        drop(server.connect());
        other.ok("dict.setitem", p![id, "alive", i]);
    }
    assert_eq!(other.ok("dict.len", p![id]), Value::from(1));
    assert_eq!(
        server.client().ok("dict.get", p![id, "alive"]),
        Value::from(9)
    );
}
