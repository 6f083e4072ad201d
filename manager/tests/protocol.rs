//! The wire contract (`PROTOCOL.md`), tested with raw bytes against a real manager.
//!
//! No client library is involved: each test starts an in-process manager on a Unix socket in a
//! temporary directory (one also on TCP), writes MessagePack bytes built by hand or with `rmpv`,
//! and reads the replies with `agora_proto::testing::RawClient`. Every socket has a read
//! timeout, so a manager that fails to answer makes a test fail instead of hanging it.

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use agora_manager::{Config, Listener, Server};
use agora_proto::testing::{
    challenge_of, dec, enc, hmac_sha256, request, request_raw, RawClient, DEFAULT_TIMEOUT,
};
use agora_proto::Limits;
use rmpv::Value;

/// The authkey every test manager uses.
const AUTHKEY: &[u8] = b"wire tests: a known 32-byte key!";

/// How long a test waits for the manager to stop before declaring it stuck: as long as a
/// client waits for a reply.
const TIMEOUT: Duration = DEFAULT_TIMEOUT;

// ---------------------------------------------------------------------------------------------
// Encoding helpers
// ---------------------------------------------------------------------------------------------

/// A str encoded as str8 even when it is short enough for a fixstr.
fn str8(s: &str) -> Vec<u8> {
    let mut out = vec![0xd9, s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

/// An int encoded as int64 (`0xd3` and 8 bytes) whatever its size.
fn int64(n: i64) -> Vec<u8> {
    let mut out = vec![0xd3];
    out.extend_from_slice(&n.to_be_bytes());
    out
}

/// A float32 (`0xca` and 4 bytes).
fn float32(x: f32) -> Vec<u8> {
    let mut out = vec![0xca];
    out.extend_from_slice(&x.to_be_bytes());
    out
}

/// A float64 (`0xcb` and 8 bytes).
fn float64(x: f64) -> Vec<u8> {
    let mut out = vec![0xcb];
    out.extend_from_slice(&x.to_be_bytes());
    out
}

/// The reference to list 7 exactly as PROTOCOL.md spells it: ext type 1 holding `["list", 7]`.
const LIST_7_REF: [u8; 10] = [0xc7, 0x07, 0x01, 0x92, 0xa4, b'l', b'i', b's', b't', 0x07];

/// Params as values: `p![id, "k", 1]`.
macro_rules! p {
    ($($x:expr),* $(,)?) => { vec![$(Value::from($x)),*] };
}

/// An array value: `arr![1, "a"]`.
macro_rules! arr {
    ($($x:expr),* $(,)?) => { Value::Array(vec![$(Value::from($x)),*]) };
}

/// A map value: `map! {"a" => 1}`.
macro_rules! map {
    ($($k:expr => $v:expr),* $(,)?) => { Value::Map(vec![$((Value::from($k), Value::from($v))),*]) };
}

const NIL: Value = Value::Nil;

// ---------------------------------------------------------------------------------------------
// The manager under test
// ---------------------------------------------------------------------------------------------

/// A manager running on its own thread and runtime. Dropping it stops the manager (through the
/// stop future given to `Server::run`) and waits for it.
struct TestServer {
    dir: tempfile::TempDir,
    socket: PathBuf,
    tcp: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: mpsc::Receiver<io::Result<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TestServer {
    fn start() -> TestServer {
        TestServer::with_config(Config::new(AUTHKEY.to_vec()), false)
    }

    fn with_limits(limits: Limits) -> TestServer {
        let mut config = Config::new(AUTHKEY.to_vec());
        config.limits = limits;
        TestServer::with_config(config, false)
    }

    fn with_config(config: Config, with_tcp: bool) -> TestServer {
        TestServer::with_workers(config, with_tcp, 2)
    }

    /// As [`TestServer::with_config`], on a runtime with this many worker threads.
    fn with_workers(config: Config, with_tcp: bool, workers: usize) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("manager.sock");
        let mut listeners = vec![Listener::Unix {
            listener: UnixListener::bind(&socket).unwrap(),
            path: socket.clone(),
        }];
        let mut tcp = None;
        if with_tcp {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            tcp = Some(listener.local_addr().unwrap());
            listeners.push(Listener::Tcp(listener));
        }
        let server = Server::new(listeners, config).unwrap();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = mpsc::channel();
        let thread = thread::spawn(move || {
            let result = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
                .and_then(|runtime| {
                    runtime.block_on(server.run(async {
                        // A send or a dropped sender both stop the manager.
                        let _ = stop_rx.await;
                    }))
                });
            let _ = done_tx.send(result);
        });
        TestServer {
            dir,
            socket,
            tcp,
            stop: Some(stop),
            done,
            thread: Some(thread),
        }
    }

    /// A fresh, unauthenticated connection over the Unix socket.
    fn connect(&self) -> RawClient {
        RawClient::connect_unix(&self.socket).expect("connect to the manager")
    }

    /// A fresh, unauthenticated connection over TCP.
    fn connect_tcp(&self) -> RawClient {
        RawClient::connect_tcp(self.tcp.expect("a TCP listener")).expect("connect over TCP")
    }

    /// A connection that has passed `hello` and `auth`.
    fn client(&self) -> RawClient {
        let mut c = self.connect();
        c.authenticate(AUTHKEY);
        c
    }

    /// Waits for `run` to return on its own (after the `shutdown` method) and gives its result.
    fn wait_stopped(&mut self) -> io::Result<()> {
        let result = self
            .done
            .recv_timeout(TIMEOUT)
            .expect("the manager did not stop");
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        result
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            // Bounded: a manager that does not stop must not hang the test binary.
            if self.done.recv_timeout(TIMEOUT).is_ok() {
                let _ = t.join();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handshake (PROTOCOL.md section 2)
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Framing (PROTOCOL.md section 1)
// ---------------------------------------------------------------------------------------------

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
        Value::Ext(1, LIST_7_REF[3..].to_vec()),
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

/// Reads the `[2, "error", ["ProtocolError", message]]` notification.
fn expect_error_notification(c: &mut RawClient, name: &str) {
    let frame = c.frame();
    let v = dec(&frame);
    let items = v.as_array().unwrap_or_else(|| panic!("not an array: {v}"));
    assert_eq!(items.len(), 3, "{v}");
    assert_eq!(items[0], Value::from(2), "a notification: {v}");
    assert_eq!(items[1], Value::from("error"), "{v}");
    let params = items[2].as_array().expect("params");
    assert_eq!(params.len(), 2, "{v}");
    assert_eq!(params[0], Value::from(name), "{v}");
    assert!(!params[1].as_str().unwrap().is_empty());
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
fn an_oversize_message_gets_a_limit_error_and_the_connection_closes() {
    let server = TestServer::with_limits(Limits {
        max_message_bytes: 4096,
        ..Limits::default()
    });
    let mut c = server.client();
    let id = c.create("list", None, vec![]);
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
    let probe = request(1, "list.append", p![1, Value::Binary(vec![0; 1000])]);
    let server = TestServer::with_limits(Limits {
        max_message_bytes: probe.len(),
        ..Limits::default()
    });
    let mut c = server.client();
    let id = c.create("list", None, vec![]);
    assert_eq!(id, 1, "the probe was built for id 1");
    c.send(&probe);
    assert_eq!(c.response().result.unwrap(), [0xc0]);
    let over = request(2, "list.append", p![1, Value::Binary(vec![0; 1001])]);
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
    let id = c.create("list", None, vec![]);
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

// ---------------------------------------------------------------------------------------------
// Registry (PROTOCOL.md section 4.2)
// ---------------------------------------------------------------------------------------------

#[test]
fn create_without_a_name_makes_a_new_object_each_time() {
    let server = TestServer::start();
    let mut c = server.client();
    let a = c.create("dict", None, vec![]);
    let b = c.create("dict", None, vec![]);
    let l = c.create("list", None, vec![]);
    assert!(a != b && b != l && a != l);
    // Ids are plain unsigned ints, each new one larger than the last.
    let d = c.call_raw("create", &[&[0xa4, b'd', b'i', b'c', b't'], &[0xc0]]);
    let d = dec(&d.unwrap()).as_u64().expect("an unsigned int");
    assert!(d > a && d > b && d > l);
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
    assert_eq!(c.fail("create", p!["set", NIL]), "ValueError");
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
    assert!(again > anonymous);
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
            arr![a, "a", "dict"],
            arr![n, "ns", "namespace"],
            arr![v, NIL, "value"],
            arr![r, "arr", "array"],
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
    c.authenticate(AUTHKEY);
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
    assert_eq!(c.fail("set.add", p![d, 1]), "UnknownMethodError");
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

// ---------------------------------------------------------------------------------------------
// dict (PROTOCOL.md section 4.3)
// ---------------------------------------------------------------------------------------------

#[test]
fn dict_get_getitem_setitem_contains_len() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    assert_eq!(c.ok("dict.get", p![d, "a"]), NIL);
    assert_eq!(c.ok("dict.get", p![d, "a", 7]), Value::from(7));
    assert_eq!(c.fail("dict.getitem", p![d, "a"]), "KeyError");
    assert_eq!(c.ok("dict.contains", p![d, "a"]), Value::Boolean(false));
    assert_eq!(c.ok("dict.len", p![d]), Value::from(0));
    assert_eq!(c.ok("dict.setitem", p![d, "a", 1]), NIL);
    assert_eq!(c.ok("dict.get", p![d, "a"]), Value::from(1));
    assert_eq!(c.ok("dict.get", p![d, "a", 7]), Value::from(1));
    assert_eq!(c.ok("dict.getitem", p![d, "a"]), Value::from(1));
    assert_eq!(c.ok("dict.contains", p![d, "a"]), Value::Boolean(true));
    // Overwriting keeps one entry; nil is a value like any other.
    c.ok("dict.setitem", p![d, "a", NIL]);
    assert_eq!(c.ok("dict.len", p![d]), Value::from(1));
    assert_eq!(c.ok("dict.getitem", p![d, "a"]), NIL);
    assert_eq!(c.ok("dict.contains", p![d, "a"]), Value::Boolean(true));
    // nil, bools, arrays are keys too.
    c.ok("dict.setitem", p![d, NIL, "nil"]);
    c.ok("dict.setitem", p![d, true, "true"]);
    c.ok("dict.setitem", p![d, arr![1, "x"], "tuple"]);
    assert_eq!(c.ok("dict.getitem", p![d, NIL]), Value::from("nil"));
    assert_eq!(c.ok("dict.getitem", p![d, true]), Value::from("true"));
    assert_eq!(
        c.ok("dict.getitem", p![d, arr![1.0, "x"]]),
        Value::from("tuple")
    );
    assert_eq!(c.ok("dict.len", p![d]), Value::from(4));

    for (method, n) in [
        ("dict.get", 1),
        ("dict.get", 4),
        ("dict.getitem", 1),
        ("dict.getitem", 3),
        ("dict.setitem", 2),
        ("dict.setitem", 4),
        ("dict.contains", 1),
        ("dict.len", 2),
    ] {
        let mut params = p![d];
        params.extend((1..n).map(|_| Value::from("x")));
        assert_eq!(c.fail(method, params), "ArgumentCountError", "{method} {n}");
    }
}

#[test]
fn dict_keys_values_items_copy_keep_insertion_order() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![map! {"z" => 1, "a" => 2}]);
    c.ok("dict.setitem", p![d, "m", 3]);
    c.ok("dict.setitem", p![d, "z", 10]); // updating keeps the position
    assert_eq!(c.ok("dict.keys", p![d]), arr!["z", "a", "m"]);
    assert_eq!(c.ok("dict.values", p![d]), arr![10, 2, 3]);
    assert_eq!(
        c.ok("dict.items", p![d]),
        Value::Array(vec![arr!["z", 10], arr!["a", 2], arr!["m", 3]])
    );
    assert_eq!(
        c.ok("dict.copy", p![d]),
        map! {"z" => 10, "a" => 2, "m" => 3}
    );
    // Deleting and re-inserting moves a key to the end.
    c.ok("dict.delitem", p![d, "z"]);
    c.ok("dict.setitem", p![d, "z", 0]);
    assert_eq!(c.ok("dict.keys", p![d]), arr!["a", "m", "z"]);
    for m in ["dict.keys", "dict.values", "dict.items", "dict.copy"] {
        assert_eq!(c.fail(m, p![d, 1]), "ArgumentCountError");
    }
    let empty = c.create("dict", None, vec![]);
    assert_eq!(c.ok("dict.keys", p![empty]), arr![]);
    assert_eq!(c.ok("dict.copy", p![empty]), map! {});
}

#[test]
fn dict_update_takes_a_map_or_pairs() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![map! {"a" => 1}]);
    assert_eq!(c.ok("dict.update", p![d, map! {"b" => 2, "a" => 3}]), NIL);
    assert_eq!(
        c.ok(
            "dict.update",
            p![d, Value::Array(vec![arr!["c", 4], arr![5, 6]])]
        ),
        NIL
    );
    assert_eq!(
        c.ok("dict.copy", p![d]),
        map! {"a" => 3, "b" => 2, "c" => 4, 5 => 6}
    );
    // Bad arguments change nothing.
    assert_eq!(c.fail("dict.update", p![d, 5]), "TypeError");
    assert_eq!(c.fail("dict.update", p![d, "ab"]), "TypeError");
    assert_eq!(
        c.fail("dict.update", p![d, Value::Array(vec![arr!["x", 1, 2]])]),
        "TypeError"
    );
    assert_eq!(
        c.fail(
            "dict.update",
            p![d, Value::Array(vec![arr!["ok", 1], arr![map! {}, 1]])]
        ),
        "TypeError"
    );
    assert_eq!(
        c.fail(
            "dict.update",
            p![
                d,
                Value::Map(vec![("y".into(), 1.into()), (map! {}, 1.into())])
            ]
        ),
        "TypeError"
    );
    assert_eq!(c.ok("dict.len", p![d]), Value::from(4));
    assert_eq!(c.fail("dict.update", p![d]), "ArgumentCountError");
}

#[test]
fn dict_delitem_pop_popitem() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create(
        "dict",
        None,
        vec![map! {"a" => 1, "b" => 2, "c" => 3, "d" => 4}],
    );
    assert_eq!(c.ok("dict.delitem", p![d, "b"]), NIL);
    assert_eq!(c.fail("dict.delitem", p![d, "b"]), "KeyError");
    assert_eq!(c.ok("dict.pop", p![d, "c"]), Value::from(3));
    assert_eq!(c.fail("dict.pop", p![d, "c"]), "KeyError");
    assert_eq!(c.ok("dict.pop", p![d, "c", "dflt"]), Value::from("dflt"));
    assert_eq!(c.ok("dict.pop", p![d, "c", NIL]), NIL);
    // popitem takes the last inserted.
    c.ok("dict.setitem", p![d, "e", 5]);
    assert_eq!(c.ok("dict.popitem", p![d]), arr!["e", 5]);
    assert_eq!(c.ok("dict.popitem", p![d]), arr!["d", 4]);
    assert_eq!(c.ok("dict.popitem", p![d]), arr!["a", 1]);
    assert_eq!(c.fail("dict.popitem", p![d]), "KeyError");
    assert_eq!(c.ok("dict.len", p![d]), Value::from(0));
    assert_eq!(c.fail("dict.pop", p![d]), "ArgumentCountError");
    assert_eq!(c.fail("dict.pop", p![d, 1, 2, 3]), "ArgumentCountError");
    assert_eq!(c.fail("dict.popitem", p![d, 1]), "ArgumentCountError");
    assert_eq!(c.fail("dict.delitem", p![d]), "ArgumentCountError");
}

#[test]
fn dict_setdefault_clear() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    assert_eq!(c.ok("dict.setdefault", p![d, "a"]), NIL);
    assert_eq!(c.ok("dict.contains", p![d, "a"]), Value::Boolean(true));
    assert_eq!(c.ok("dict.setdefault", p![d, "a", 5]), NIL);
    assert_eq!(c.ok("dict.setdefault", p![d, "b", 5]), Value::from(5));
    assert_eq!(c.ok("dict.setdefault", p![d, "b", 6]), Value::from(5));
    assert_eq!(c.ok("dict.copy", p![d]), map! {"a" => NIL, "b" => 5});
    assert_eq!(c.fail("dict.setdefault", p![d]), "ArgumentCountError");
    assert_eq!(c.ok("dict.clear", p![d]), NIL);
    assert_eq!(c.ok("dict.len", p![d]), Value::from(0));
    assert_eq!(c.ok("dict.get", p![d, "b"]), NIL);
    assert_eq!(c.fail("dict.clear", p![d, 1]), "ArgumentCountError");
}

#[test]
fn dict_map_keys_are_unhashable() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    let m = map! {"a" => 1};
    for (method, params) in [
        ("dict.setitem", p![d, m.clone(), 1]),
        ("dict.get", p![d, m.clone()]),
        ("dict.getitem", p![d, m.clone()]),
        ("dict.contains", p![d, m.clone()]),
        ("dict.delitem", p![d, m.clone()]),
        ("dict.pop", p![d, m.clone(), 1]),
        ("dict.setdefault", p![d, m.clone(), 1]),
        // Inside an array too, as a tuple holding a dict is unhashable in Python.
        ("dict.setitem", p![d, arr![1, m.clone()], 1]),
    ] {
        assert_eq!(c.fail(method, params), "TypeError", "{method}");
    }
    assert_eq!(
        c.fail(
            "create",
            p!["dict", NIL, Value::Map(vec![(m.clone(), 1.into())])]
        ),
        "TypeError"
    );
    assert_eq!(c.ok("dict.len", p![d]), Value::from(0));
}

// ---------------------------------------------------------------------------------------------
// list (PROTOCOL.md section 4.4)
// ---------------------------------------------------------------------------------------------

/// An array of the ints in `range`.
fn ints(range: impl IntoIterator<Item = i64>) -> Value {
    Value::Array(range.into_iter().map(Value::from).collect())
}

/// An optional slice bound: an int, or nil.
fn bound(b: Option<i64>) -> Value {
    b.map_or(NIL, Value::from)
}

#[test]
fn list_getitem_setitem_delitem_with_python_indices() {
    let server = TestServer::start();
    let mut c = server.client();
    let l = c.create("list", None, vec![arr!["a", "b", "c"]]);
    assert_eq!(c.ok("list.getitem", p![l, 0]), Value::from("a"));
    assert_eq!(c.ok("list.getitem", p![l, 2]), Value::from("c"));
    assert_eq!(c.ok("list.getitem", p![l, -1]), Value::from("c"));
    assert_eq!(c.ok("list.getitem", p![l, -3]), Value::from("a"));
    for i in [3, -4, 1000, i64::MIN, i64::MAX] {
        assert_eq!(c.fail("list.getitem", p![l, i]), "IndexError", "{i}");
        assert_eq!(c.fail("list.setitem", p![l, i, 0]), "IndexError", "{i}");
        assert_eq!(c.fail("list.delitem", p![l, i]), "IndexError", "{i}");
    }
    assert_eq!(c.ok("list.setitem", p![l, -2, "B"]), NIL);
    assert_eq!(c.ok("list.copy", p![l]), arr!["a", "B", "c"]);
    assert_eq!(c.ok("list.delitem", p![l, 0]), NIL);
    assert_eq!(c.ok("list.copy", p![l]), arr!["B", "c"]);
    assert_eq!(c.fail("list.getitem", p![l, "0"]), "TypeError");
    assert_eq!(c.fail("list.getitem", p![l, 0.0]), "TypeError");
    assert_eq!(c.fail("list.getitem", p![l]), "ArgumentCountError");
    assert_eq!(c.fail("list.setitem", p![l, 0]), "ArgumentCountError");
    assert_eq!(c.fail("list.delitem", p![l]), "ArgumentCountError");
}

#[test]
fn list_getslice_follows_python() {
    let server = TestServer::start();
    let mut c = server.client();
    let l = c.create("list", None, vec![ints(0..10)]);
    // Expected results computed with CPython: list(range(10))[start:stop:step].
    type Case = ((Option<i64>, Option<i64>, Option<i64>), &'static [i64]);
    let cases: &[Case] = &[
        ((None, None, None), &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        ((Some(2), Some(5), None), &[2, 3, 4]),
        ((Some(-3), None, None), &[7, 8, 9]),
        ((None, None, Some(-1)), &[9, 8, 7, 6, 5, 4, 3, 2, 1, 0]),
        ((Some(8), Some(2), Some(-2)), &[8, 6, 4]),
        ((Some(100), None, None), &[]),
        ((Some(-100), Some(2), None), &[0, 1]),
        (
            (None, Some(-100), Some(-1)),
            &[9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
        ),
        ((Some(5), Some(5), None), &[]),
        ((Some(1), None, Some(3)), &[1, 4, 7]),
        ((None, None, Some(-3)), &[9, 6, 3, 0]),
        ((Some(-1), Some(-11), Some(-4)), &[9, 5, 1]),
        ((Some(9), None, Some(-2)), &[9, 7, 5, 3, 1]),
        ((Some(7), Some(3), None), &[]),
        ((None, None, Some(100)), &[0]),
    ];
    for &((start, stop, step), expected) in cases {
        let got = c.ok(
            "list.getslice",
            p![l, bound(start), bound(stop), bound(step)],
        );
        assert_eq!(
            got,
            ints(expected.iter().copied()),
            "[{start:?}:{stop:?}:{step:?}]"
        );
    }
    assert_eq!(c.fail("list.getslice", p![l, NIL, NIL, 0]), "ValueError");
    assert_eq!(c.fail("list.getslice", p![l, "a", NIL, NIL]), "TypeError");
    assert_eq!(
        c.fail("list.getslice", p![l, NIL, NIL]),
        "ArgumentCountError"
    );
}

#[test]
fn list_slices_with_extreme_steps_follow_python() {
    let server = TestServer::start();
    let mut c = server.client();
    let l = c.create("list", None, vec![ints(1..4)]);
    // CPython: [1, 2, 3][::2**63 - 1] == [1] and [1, 2, 3][::-(2**63)] == [3].
    assert_eq!(
        c.call("list.getslice", p![l, NIL, NIL, i64::MAX]),
        Ok(arr![1])
    );
    assert_eq!(
        c.call("list.getslice", p![l, NIL, NIL, i64::MIN]),
        Ok(arr![3])
    );
    assert_eq!(
        c.call("list.setslice", p![l, NIL, NIL, i64::MIN, arr!["z"]]),
        Ok(NIL)
    );
    assert_eq!(c.call("list.delslice", p![l, NIL, NIL, i64::MIN]), Ok(NIL));
    assert_eq!(c.ok("list.copy", p![l]), arr![1, 2]);
    let a = c.create("array", None, p!["b", 3]);
    assert_eq!(
        c.call("array.getslice", p![a, NIL, NIL, i64::MIN]),
        Ok(arr![0])
    );
}

#[test]
fn list_setslice_and_delslice_follow_python() {
    let server = TestServer::start();
    let mut c = server.client();
    let fresh = |c: &mut RawClient| c.create("list", None, vec![ints(0..10)]);
    // A simple slice may change the length.
    let l = fresh(&mut c);
    assert_eq!(c.ok("list.setslice", p![l, 2, 5, NIL, arr!["x"]]), NIL);
    assert_eq!(c.ok("list.copy", p![l]), arr![0, 1, "x", 5, 6, 7, 8, 9]);
    // Past the end appends; an empty slice inserts.
    c.ok("list.setslice", p![l, 20, 30, NIL, arr!["e"]]);
    c.ok("list.setslice", p![l, 0, 0, 1, arr!["s", "t"]]);
    assert_eq!(
        c.ok("list.copy", p![l]),
        arr!["s", "t", 0, 1, "x", 5, 6, 7, 8, 9, "e"]
    );
    // An extended slice takes exactly as many elements as it selects.
    let l = fresh(&mut c);
    c.ok("list.setslice", p![l, 8, 2, -3, arr!["a", "b"]]);
    assert_eq!(
        c.ok("list.copy", p![l]),
        arr![0, 1, 2, 3, 4, "b", 6, 7, "a", 9]
    );
    assert_eq!(
        c.fail("list.setslice", p![l, 8, 2, -3, arr!["a"]]),
        "ValueError"
    );
    assert_eq!(
        c.fail("list.setslice", p![l, NIL, NIL, 2, arr![1, 2, 3, 4, 5, 6]]),
        "ValueError"
    );
    c.ok("list.setslice", p![l, NIL, NIL, -1, ints(0..10)]);
    assert_eq!(c.ok("list.copy", p![l]), ints((0..10).rev()));
    assert_eq!(
        c.fail("list.setslice", p![l, NIL, NIL, 0, arr![]]),
        "ValueError"
    );
    assert_eq!(
        c.fail("list.setslice", p![l, NIL, NIL, NIL, 5]),
        "TypeError"
    );
    assert_eq!(c.ok("list.copy", p![l]), ints((0..10).rev()));

    let l = fresh(&mut c);
    assert_eq!(c.ok("list.delslice", p![l, NIL, NIL, 2]), NIL);
    assert_eq!(c.ok("list.copy", p![l]), arr![1, 3, 5, 7, 9]);
    let l = fresh(&mut c);
    c.ok("list.delslice", p![l, 7, 2, -2]);
    assert_eq!(c.ok("list.copy", p![l]), arr![0, 1, 2, 4, 6, 8, 9]);
    c.ok("list.delslice", p![l, 1, 3, NIL]);
    assert_eq!(c.ok("list.copy", p![l]), arr![0, 4, 6, 8, 9]);
    assert_eq!(c.fail("list.delslice", p![l, NIL, NIL, 0]), "ValueError");
    assert_eq!(
        c.fail("list.delslice", p![l, NIL, NIL]),
        "ArgumentCountError"
    );
    assert_eq!(c.ok("list.len", p![l]), Value::from(5));
}

#[test]
fn list_append_extend_insert_pop() {
    let server = TestServer::start();
    let mut c = server.client();
    let l = c.create("list", None, vec![]);
    assert_eq!(c.ok("list.append", p![l, 1]), NIL);
    assert_eq!(c.ok("list.extend", p![l, arr![2, 3]]), NIL);
    assert_eq!(c.ok("list.extend", p![l, arr![]]), NIL);
    assert_eq!(c.fail("list.extend", p![l, 4]), "TypeError");
    assert_eq!(c.fail("list.extend", p![l, map! {1 => 2}]), "TypeError");
    // insert clamps its index like Python.
    assert_eq!(c.ok("list.insert", p![l, -100, "s"]), NIL);
    c.ok("list.insert", p![l, 100, "e"]);
    c.ok("list.insert", p![l, -1, "m"]);
    c.ok("list.insert", p![l, 1, "one"]);
    assert_eq!(
        c.ok("list.copy", p![l]),
        arr!["s", "one", 1, 2, 3, "m", "e"]
    );
    assert_eq!(c.ok("list.pop", p![l]), Value::from("e"));
    assert_eq!(c.ok("list.pop", p![l, 0]), Value::from("s"));
    assert_eq!(c.ok("list.pop", p![l, -2]), Value::from(3));
    assert_eq!(c.ok("list.pop", p![l, NIL]), Value::from("m"));
    assert_eq!(c.fail("list.pop", p![l, 3]), "IndexError");
    assert_eq!(c.fail("list.pop", p![l, -4]), "IndexError");
    assert_eq!(c.ok("list.copy", p![l]), arr!["one", 1, 2]);
    c.ok("list.clear", p![l]);
    assert_eq!(c.fail("list.pop", p![l]), "IndexError");
    assert_eq!(c.fail("list.pop", p![l, 0]), "IndexError");
    assert_eq!(c.fail("list.append", p![l]), "ArgumentCountError");
    assert_eq!(c.fail("list.insert", p![l, 0]), "ArgumentCountError");
    assert_eq!(c.fail("list.pop", p![l, 0, 0]), "ArgumentCountError");
    assert_eq!(c.fail("list.insert", p![l, "x", 0]), "TypeError");
}

#[test]
fn list_remove_index_count_use_value_equality() {
    let server = TestServer::start();
    let mut c = server.client();
    let l = c.create(
        "list",
        None,
        vec![arr![1, "a", 2.0, Value::Binary(b"a".to_vec()), 1, true, 2]],
    );
    assert_eq!(c.ok("list.count", p![l, 1]), Value::from(2));
    assert_eq!(c.ok("list.count", p![l, 1.0]), Value::from(2));
    assert_eq!(c.ok("list.count", p![l, 2]), Value::from(2));
    assert_eq!(c.ok("list.count", p![l, "a"]), Value::from(1));
    assert_eq!(c.ok("list.count", p![l, true]), Value::from(1), "true != 1");
    assert_eq!(c.ok("list.count", p![l, "zz"]), Value::from(0));
    assert_eq!(c.ok("list.index", p![l, 2]), Value::from(2));
    assert_eq!(c.ok("list.index", p![l, 1, 1]), Value::from(4));
    assert_eq!(c.ok("list.index", p![l, 1, -3]), Value::from(4));
    assert_eq!(c.fail("list.index", p![l, 1, 1, 4]), "ValueError");
    assert_eq!(c.ok("list.index", p![l, 1, 1, 5]), Value::from(4));
    assert_eq!(c.ok("list.index", p![l, 1, NIL, NIL]), Value::from(0));
    assert_eq!(c.fail("list.index", p![l, 1, 100]), "ValueError");
    assert_eq!(
        c.ok("list.index", p![l, Value::Binary(b"a".to_vec())]),
        Value::from(3)
    );
    assert_eq!(c.fail("list.index", p![l, "zz"]), "ValueError");
    // remove takes the first equal value: 2.0 for 2.
    assert_eq!(c.ok("list.remove", p![l, 2]), NIL);
    assert_eq!(
        c.ok("list.copy", p![l]),
        arr![1, "a", Value::Binary(b"a".to_vec()), 1, true, 2]
    );
    assert_eq!(c.fail("list.remove", p![l, 3]), "ValueError");
    assert_eq!(c.fail("list.remove", p![l]), "ArgumentCountError");
    assert_eq!(c.fail("list.count", p![l]), "ArgumentCountError");
    assert_eq!(c.fail("list.index", p![l]), "ArgumentCountError");
    assert_eq!(
        c.fail("list.index", p![l, 1, 0, 1, 1]),
        "ArgumentCountError"
    );
}

#[test]
fn list_len_reverse_clear_copy() {
    let server = TestServer::start();
    let mut c = server.client();
    let l = c.create("list", None, vec![ints(0..5)]);
    assert_eq!(c.ok("list.len", p![l]), Value::from(5));
    assert_eq!(c.ok("list.reverse", p![l]), NIL);
    assert_eq!(c.ok("list.copy", p![l]), ints((0..5).rev()));
    assert_eq!(c.ok("list.clear", p![l]), NIL);
    assert_eq!(c.ok("list.len", p![l]), Value::from(0));
    assert_eq!(c.ok("list.copy", p![l]), arr![]);
    for m in ["list.len", "list.reverse", "list.clear", "list.copy"] {
        assert_eq!(c.fail(m, p![l, 1]), "ArgumentCountError", "{m}");
    }
}

#[test]
fn list_sort_is_stable_and_follows_the_protocol_ordering() {
    let server = TestServer::start();
    let mut c = server.client();
    let l = c.create("list", None, vec![arr![3, -1.5, 2, 10, 0, 2.0]]);
    assert_eq!(c.ok("list.sort", p![l]), NIL);
    // Stable: 2 stays before 2.0. Compare the raw bytes to tell them apart.
    let raw = c.call_raw("list.copy", &[&enc(&l.into())]).unwrap();
    let mut expected = vec![0x96];
    expected.extend(enc(&Value::F64(-1.5)));
    expected.extend([0x00, 0x02]);
    expected.extend(enc(&Value::F64(2.0)));
    expected.extend([0x03, 0x0a]);
    assert_eq!(raw, expected);
    // Reverse keeps equal elements in their original order too, as Python does.
    assert_eq!(c.ok("list.sort", p![l, true]), NIL);
    let raw = c.call_raw("list.copy", &[&enc(&l.into())]).unwrap();
    let mut expected = vec![0x96, 0x0a, 0x03, 0x02];
    expected.extend(enc(&Value::F64(2.0)));
    expected.push(0x00);
    expected.extend(enc(&Value::F64(-1.5)));
    assert_eq!(raw, expected);
    assert_eq!(c.ok("list.sort", p![l, false]), NIL);
    assert_eq!(c.ok("list.getitem", p![l, 0]), Value::F64(-1.5));

    // str by code point, bin bytewise, bools, arrays lexicographically, NaN after numbers.
    let s = c.create("list", None, vec![arr!["b", "é", "B", "a"]]);
    c.ok("list.sort", p![s]);
    assert_eq!(c.ok("list.copy", p![s]), arr!["B", "a", "b", "é"]);
    let b = c.create(
        "list",
        None,
        vec![Value::Array(vec![
            Value::Binary(vec![2]),
            Value::Binary(vec![1, 5]),
            Value::Binary(vec![1]),
        ])],
    );
    c.ok("list.sort", p![b]);
    assert_eq!(
        c.ok("list.copy", p![b]),
        Value::Array(vec![
            Value::Binary(vec![1]),
            Value::Binary(vec![1, 5]),
            Value::Binary(vec![2]),
        ])
    );
    let t = c.create("list", None, vec![arr![true, false, true]]);
    c.ok("list.sort", p![t]);
    assert_eq!(c.ok("list.copy", p![t]), arr![false, true, true]);
    let a = c.create(
        "list",
        None,
        vec![Value::Array(vec![
            arr![1, 2],
            arr![1],
            arr![0, 9],
            arr![1, 1.5],
        ])],
    );
    c.ok("list.sort", p![a]);
    assert_eq!(
        c.ok("list.copy", p![a]),
        Value::Array(vec![arr![0, 9], arr![1], arr![1, 1.5], arr![1, 2]])
    );
    let n = c.create("list", None, vec![arr![f64::NAN, 1, f64::INFINITY, -5]]);
    c.ok("list.sort", p![n]);
    let sorted = c.ok("list.copy", p![n]);
    let sorted = sorted.as_array().unwrap();
    assert_eq!(
        sorted[..3],
        [Value::from(-5), Value::from(1), Value::F64(f64::INFINITY)]
    );
    assert!(sorted[3].as_f64().unwrap().is_nan());

    assert_eq!(c.fail("list.sort", p![l, "yes"]), "TypeError");
    assert_eq!(c.fail("list.sort", p![l, true, 1]), "ArgumentCountError");
}

#[test]
fn list_sort_of_incomparable_values_is_a_type_error_and_changes_nothing() {
    let server = TestServer::start();
    let mut c = server.client();
    for contents in [
        arr![3, "a", 1],
        arr![2, NIL, 1],
        arr![map! {}, map! {}],
        arr![1, true],
        arr![Value::Binary(vec![1]), "a"],
        arr![arr![1], arr!["a"]],
        Value::Array(vec![Value::Ext(5, vec![1]), Value::Ext(5, vec![2])]),
    ] {
        let l = c.create("list", None, vec![contents.clone()]);
        assert_eq!(c.fail("list.sort", p![l]), "TypeError", "{contents}");
        assert_eq!(c.ok("list.copy", p![l]), contents);
    }
}

#[test]
fn list_sort_of_many_mixed_values_is_a_type_error_and_changes_nothing() {
    // Enough elements for the sort to leave its smallest-input path, mixing strs into ints.
    let server = TestServer::start();
    let mut c = server.client();
    for n in [50u64, 1000] {
        let contents = Value::Array(
            (0..n)
                .map(|i| {
                    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
                    if h % 17 == 0 {
                        Value::from(format!("s{h}"))
                    } else {
                        Value::from(h % 1000)
                    }
                })
                .collect(),
        );
        let l = c.create("list", None, vec![contents.clone()]);
        assert_eq!(c.fail("list.sort", p![l]), "TypeError", "{n} elements");
        assert_eq!(c.ok("list.copy", p![l]), contents);
    }
}

#[test]
fn list_sort_compares_big_ints_and_floats_exactly() {
    let server = TestServer::start();
    let mut c = server.client();
    let big = 1u64 << 53;
    for n in [12u64, 30, 1000] {
        // 2.0**53, 2**53 + 1 and 2**53, repeated.
        let contents: Vec<Value> = (0..n)
            .map(|i| match (i * 7) % 3 {
                0 => Value::F64(big as f64),
                1 => Value::from(big + 1),
                _ => Value::from(big),
            })
            .collect();
        let l = c.create("list", None, vec![Value::Array(contents.clone())]);
        assert_eq!(c.call("list.sort", p![l]), Ok(NIL), "{n} elements");
        // As CPython sorts them: every 2**53 (int or float, in their original order) first.
        let mut expected: Vec<Value> = contents
            .iter()
            .filter(|v| **v != Value::from(big + 1))
            .cloned()
            .collect();
        expected.extend(
            contents
                .iter()
                .filter(|v| **v == Value::from(big + 1))
                .cloned(),
        );
        assert_eq!(
            c.ok("list.copy", p![l]),
            Value::Array(expected),
            "{n} elements"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// value (PROTOCOL.md section 4.5)
// ---------------------------------------------------------------------------------------------

#[test]
fn value_get_set_typecode_untyped() {
    let server = TestServer::start();
    let mut c = server.client();
    let v = c.create("value", None, p![NIL, 5]);
    assert_eq!(c.ok("value.get", p![v]), Value::from(5));
    assert_eq!(c.ok("value.typecode", p![v]), NIL);
    // Untyped: anything goes.
    for x in [
        Value::from("x"),
        NIL,
        map! {"a" => arr![1]},
        Value::F32(0.5),
    ] {
        assert_eq!(c.ok("value.set", p![v, x.clone()]), NIL);
        assert_eq!(c.ok("value.get", p![v]), x);
    }
    assert_eq!(c.fail("value.get", p![v, 1]), "ArgumentCountError");
    assert_eq!(c.fail("value.set", p![v]), "ArgumentCountError");
    assert_eq!(c.fail("value.typecode", p![v, 1]), "ArgumentCountError");
    assert_eq!(c.fail("create", p!["value", NIL]), "ArgumentCountError");
    assert_eq!(
        c.fail("create", p!["value", NIL, NIL, 1, 2]),
        "ArgumentCountError"
    );
}

#[test]
fn value_fetch_add_untyped() {
    let server = TestServer::start();
    let mut c = server.client();
    let v = c.create("value", None, p![NIL, 10]);
    assert_eq!(c.ok("value.fetch_add", p![v, 5]), Value::from(10));
    assert_eq!(c.ok("value.fetch_add", p![v, -20]), Value::from(15));
    assert_eq!(c.ok("value.get", p![v]), Value::from(-5));
    // A float on either side gives a float.
    assert_eq!(c.ok("value.fetch_add", p![v, 0.5]), Value::from(-5));
    assert_eq!(c.ok("value.get", p![v]), Value::F64(-4.5));
    let f = c.create("value", None, p![NIL, 1.5]);
    c.ok("value.fetch_add", p![f, 1]);
    assert_eq!(c.ok("value.get", p![f]), Value::F64(2.5));
    // 64-bit exact, past i64 into u64, and no further.
    let big = c.create("value", None, p![NIL, i64::MAX]);
    assert_eq!(c.ok("value.fetch_add", p![big, 1]), Value::from(i64::MAX));
    assert_eq!(c.ok("value.get", p![big]), Value::from(i64::MAX as u64 + 1));
    let top = c.create("value", None, p![NIL, u64::MAX]);
    assert_eq!(c.fail("value.fetch_add", p![top, 1]), "OverflowError");
    assert_eq!(c.ok("value.get", p![top]), Value::from(u64::MAX));
    let bottom = c.create("value", None, p![NIL, i64::MIN]);
    assert_eq!(c.fail("value.fetch_add", p![bottom, -1]), "OverflowError");
    assert_eq!(
        c.ok("value.fetch_add", p![top, i64::MIN]),
        Value::from(u64::MAX)
    );
    assert_eq!(
        c.ok("value.get", p![top]),
        Value::from(u64::MAX - (1u64 << 63))
    );
    // Not numbers.
    let s = c.create("value", None, p![NIL, "text"]);
    assert_eq!(c.fail("value.fetch_add", p![s, 1]), "TypeError");
    assert_eq!(c.fail("value.fetch_add", p![v, "1"]), "TypeError");
    assert_eq!(c.fail("value.fetch_add", p![v, true]), "TypeError");
    assert_eq!(c.fail("value.fetch_add", p![v, NIL]), "TypeError");
    assert_eq!(c.fail("value.fetch_add", p![v]), "ArgumentCountError");
}

#[test]
fn value_with_a_typecode_checks_what_it_holds() {
    let server = TestServer::start();
    let mut c = server.client();
    let b = c.create("value", None, p!["b", 100]);
    assert_eq!(c.ok("value.typecode", p![b]), Value::from("b"));
    assert_eq!(c.ok("value.fetch_add", p![b, 27]), Value::from(100));
    assert_eq!(c.ok("value.get", p![b]), Value::from(127));
    assert_eq!(c.fail("value.fetch_add", p![b, 1]), "OverflowError");
    assert_eq!(c.fail("value.fetch_add", p![b, 0.5]), "TypeError");
    assert_eq!(c.ok("value.get", p![b]), Value::from(127));
    assert_eq!(c.fail("value.set", p![b, 128]), "OverflowError");
    assert_eq!(c.fail("value.set", p![b, -129]), "OverflowError");
    assert_eq!(c.fail("value.set", p![b, "x"]), "TypeError");
    assert_eq!(c.fail("value.set", p![b, 1.0]), "TypeError");
    assert_eq!(c.fail("value.set", p![b, true]), "TypeError");
    c.ok("value.set", p![b, -128]);
    assert_eq!(c.ok("value.get", p![b]), Value::from(-128));

    let u = c.create("value", None, p!["B", 0]);
    assert_eq!(c.fail("value.set", p![u, -1]), "OverflowError");
    assert_eq!(c.fail("value.fetch_add", p![u, -1]), "OverflowError");
    assert_eq!(
        c.fail("create", p!["value", NIL, "i", 1i64 << 40]),
        "OverflowError"
    );
    assert_eq!(c.fail("create", p!["value", NIL, "Q", -1]), "OverflowError");

    // Float typecodes take ints and convert them.
    let d = c.create("value", None, p!["d", 1]);
    assert_eq!(c.ok("value.get", p![d]), Value::F64(1.0));
    c.ok("value.fetch_add", p![d, 0.25]);
    assert_eq!(c.ok("value.get", p![d]), Value::F64(1.25));
    let f = c.create("value", None, p!["f", 0.5]);
    assert_eq!(c.ok("value.get", p![f]), Value::F32(0.5));
    c.ok("value.fetch_add", p![f, 1]);
    assert_eq!(c.ok("value.get", p![f]), Value::F32(1.5));
    assert_eq!(c.ok("value.typecode", p![f]), Value::from("f"));

    // A typed value is kept in its typecode's form, not as sent (PROTOCOL.md section 3).
    let b_id = enc(&b.into());
    c.call_raw("value.set", &[&b_id, &int64(5)]).unwrap();
    assert_eq!(c.call_raw("value.get", &[&b_id]).unwrap(), [0x05]);
    let d_id = enc(&d.into());
    c.call_raw("value.set", &[&d_id, &float32(0.5)]).unwrap();
    assert_eq!(c.call_raw("value.get", &[&d_id]).unwrap(), float64(0.5));
    let f_id = enc(&f.into());
    c.call_raw("value.set", &[&f_id, &float64(0.5)]).unwrap();
    assert_eq!(c.call_raw("value.get", &[&f_id]).unwrap(), float32(0.5));

    // Bad typecodes.
    assert_eq!(c.fail("create", p!["value", NIL, "x", 1]), "ValueError");
    assert_eq!(c.fail("create", p!["value", NIL, "bb", 1]), "ValueError");
    assert_eq!(c.fail("create", p!["value", NIL, "", 1]), "ValueError");
    assert_eq!(c.fail("create", p!["value", NIL, 5, 1]), "TypeError");
    assert_eq!(c.fail("create", p!["value", NIL, "i", "x"]), "TypeError");
}

#[test]
fn value_compare_and_swap() {
    let server = TestServer::start();
    let mut c = server.client();
    let v = c.create("value", None, p![NIL, 5]);
    assert_eq!(c.ok("value.compare_and_swap", p![v, 5, 6]), arr![true, 5]);
    assert_eq!(c.ok("value.get", p![v]), Value::from(6));
    assert_eq!(c.ok("value.compare_and_swap", p![v, 5, 7]), arr![false, 6]);
    assert_eq!(c.ok("value.get", p![v]), Value::from(6));
    // By value, not by encoding.
    assert_eq!(
        c.ok("value.compare_and_swap", p![v, 6.0, "s"]),
        arr![true, 6]
    );
    assert_eq!(
        c.ok(
            "value.compare_and_swap",
            p![v, Value::Binary(b"s".to_vec()), 1]
        ),
        arr![false, "s"]
    );
    assert_eq!(
        c.ok(
            "value.compare_and_swap",
            p![v, "s", map! {"k" => arr![1, 2]}]
        ),
        arr![true, "s"]
    );
    assert_eq!(
        c.ok(
            "value.compare_and_swap",
            p![v, map! {"k" => arr![1.0, 2]}, NIL]
        ),
        arr![true, map! {"k" => arr![1, 2]}]
    );
    // With a typecode, the new value must fit; a failed swap changes nothing.
    let b = c.create("value", None, p!["b", 1]);
    assert_eq!(
        c.fail("value.compare_and_swap", p![b, 1, 1000]),
        "OverflowError"
    );
    assert_eq!(c.fail("value.compare_and_swap", p![b, 1, "x"]), "TypeError");
    assert_eq!(c.ok("value.get", p![b]), Value::from(1));
    assert_eq!(c.ok("value.compare_and_swap", p![b, 1, 2]), arr![true, 1]);
    assert_eq!(
        c.fail("value.compare_and_swap", p![b, 1]),
        "ArgumentCountError"
    );
}

// ---------------------------------------------------------------------------------------------
// array (PROTOCOL.md section 4.6)
// ---------------------------------------------------------------------------------------------

#[test]
fn array_of_a_size_or_an_initializer() {
    let server = TestServer::start();
    let mut c = server.client();
    let a = c.create("array", None, p!["i", 3]);
    assert_eq!(c.ok("array.tolist", p![a]), arr![0, 0, 0]);
    assert_eq!(c.ok("array.len", p![a]), Value::from(3));
    assert_eq!(c.ok("array.typecode", p![a]), Value::from("i"));
    let d = c.create("array", None, p!["d", arr![1, 2.5]]);
    assert_eq!(
        c.ok("array.tolist", p![d]),
        Value::Array(vec![Value::F64(1.0), Value::F64(2.5)])
    );
    let f = c.create("array", None, p!["f", 2]);
    assert_eq!(
        c.ok("array.tolist", p![f]),
        Value::Array(vec![Value::F32(0.0), Value::F32(0.0)])
    );
    let bytes = c.create("array", None, p!["c", Value::Binary(b"abc".to_vec())]);
    assert_eq!(
        c.ok("array.tolist", p![bytes]),
        Value::Array(b"abc".iter().map(|b| Value::Binary(vec![*b])).collect())
    );
    let chars = c.create("array", None, p!["u", arr!["é", "x"]]);
    assert_eq!(c.ok("array.tolist", p![chars]), arr!["é", "x"]);
    let empty = c.create("array", None, p!["B", 0]);
    assert_eq!(c.ok("array.tolist", p![empty]), arr![]);

    assert_eq!(c.fail("create", p!["array", NIL, "z", 3]), "ValueError");
    assert_eq!(c.fail("create", p!["array", NIL, "i", "x"]), "TypeError");
    assert_eq!(
        c.fail("create", p!["array", NIL, "i", arr![1, "x"]]),
        "TypeError"
    );
    assert_eq!(
        c.fail("create", p!["array", NIL, "b", arr![1, 200]]),
        "OverflowError"
    );
    assert_eq!(
        c.fail("create", p!["array", NIL, "i"]),
        "ArgumentCountError"
    );
    assert_eq!(c.fail("array.len", p![a, 1]), "ArgumentCountError");
    assert_eq!(c.fail("array.tolist", p![a, 1]), "ArgumentCountError");
    assert_eq!(c.fail("array.typecode", p![a, 1]), "ArgumentCountError");
}

#[test]
fn array_getitem_setitem() {
    let server = TestServer::start();
    let mut c = server.client();
    let a = c.create("array", None, p!["i", arr![1, 2, 3]]);
    assert_eq!(c.ok("array.getitem", p![a, 0]), Value::from(1));
    assert_eq!(c.ok("array.getitem", p![a, -1]), Value::from(3));
    assert_eq!(c.fail("array.getitem", p![a, 3]), "IndexError");
    assert_eq!(c.fail("array.getitem", p![a, -4]), "IndexError");
    assert_eq!(c.ok("array.setitem", p![a, 1, -7]), NIL);
    assert_eq!(c.ok("array.getitem", p![a, 1]), Value::from(-7));
    assert_eq!(c.fail("array.setitem", p![a, 3, 0]), "IndexError");
    assert_eq!(
        c.fail("array.setitem", p![a, 0, 1i64 << 31]),
        "OverflowError"
    );
    assert_eq!(c.fail("array.setitem", p![a, 0, "x"]), "TypeError");
    assert_eq!(c.fail("array.setitem", p![a, 0, 1.5]), "TypeError");
    assert_eq!(c.fail("array.setitem", p![a, 0]), "ArgumentCountError");
    assert_eq!(c.fail("array.getitem", p![a]), "ArgumentCountError");
    assert_eq!(c.ok("array.tolist", p![a]), arr![1, -7, 3]);

    let bytes = c.create("array", None, p!["c", 2]);
    assert_eq!(c.ok("array.getitem", p![bytes, 0]), Value::Binary(vec![0]));
    c.ok("array.setitem", p![bytes, 0, Value::Binary(b"z".to_vec())]);
    assert_eq!(
        c.fail("array.setitem", p![bytes, 0, Value::Binary(b"zz".to_vec())]),
        "TypeError"
    );
    assert_eq!(c.fail("array.setitem", p![bytes, 0, "z"]), "TypeError");
    let chars = c.create("array", None, p!["u", 1]);
    c.ok("array.setitem", p![chars, 0, "ß"]);
    assert_eq!(c.ok("array.getitem", p![chars, 0]), Value::from("ß"));
    assert_eq!(c.fail("array.setitem", p![chars, 0, "ab"]), "TypeError");
    // f stores float32, d float64, whatever was sent.
    let f = c.create("array", None, p!["f", 1]);
    c.ok("array.setitem", p![f, 0, 0.1]);
    assert_eq!(c.ok("array.getitem", p![f, 0]), Value::F32(0.1));
    let d = c.create("array", None, p!["d", 1]);
    c.call_raw("array.setitem", &[&enc(&d.into()), &[0], &float32(0.5)])
        .unwrap();
    assert_eq!(c.ok("array.getitem", p![d, 0]), Value::F64(0.5));
}

#[test]
fn array_integer_typecodes_have_their_ranges() {
    let server = TestServer::start();
    let mut c = server.client();
    let ranges: &[(&str, i128, i128)] = &[
        ("b", -128, 127),
        ("B", 0, 255),
        ("h", -32_768, 32_767),
        ("H", 0, 65_535),
        ("i", -(1 << 31), (1 << 31) - 1),
        ("I", 0, (1 << 32) - 1),
        ("l", i64::MIN.into(), i64::MAX.into()),
        ("L", 0, u64::MAX.into()),
        ("q", i64::MIN.into(), i64::MAX.into()),
        ("Q", 0, u64::MAX.into()),
    ];
    let int = |n: i128| -> Value {
        if n < 0 {
            Value::from(n as i64)
        } else {
            Value::from(n as u64)
        }
    };
    for &(code, min, max) in ranges {
        let a = c.create("array", None, p![code, 1]);
        assert_eq!(c.ok("array.typecode", p![a]), Value::from(code));
        for n in [min, max] {
            assert_eq!(c.ok("array.setitem", p![a, 0, int(n)]), NIL, "{code} {n}");
            assert_eq!(c.ok("array.getitem", p![a, 0]), int(n), "{code} {n}");
        }
        // Outside the range, when MessagePack can express it at all.
        for n in [min - 1, max + 1] {
            if n >= i64::MIN.into() && n <= u64::MAX.into() {
                assert_eq!(
                    c.fail("array.setitem", p![a, 0, int(n)]),
                    "OverflowError",
                    "{code} {n}"
                );
            }
        }
        let v = c.create("value", None, p![code, int(max)]);
        if max < u64::MAX.into() {
            assert_eq!(
                c.fail("value.fetch_add", p![v, 1]),
                "OverflowError",
                "{code}"
            );
        }
    }
}

#[test]
fn array_slices_keep_the_length() {
    let server = TestServer::start();
    let mut c = server.client();
    let a = c.create("array", None, p!["h", ints(0..6)]);
    assert_eq!(c.ok("array.getslice", p![a, 1, 4, NIL]), arr![1, 2, 3]);
    assert_eq!(c.ok("array.getslice", p![a, NIL, NIL, -2]), arr![5, 3, 1]);
    assert_eq!(c.ok("array.getslice", p![a, 10, NIL, NIL]), arr![]);
    assert_eq!(c.fail("array.getslice", p![a, NIL, NIL, 0]), "ValueError");
    assert_eq!(c.ok("array.setslice", p![a, 0, 2, NIL, arr![10, 11]]), NIL);
    assert_eq!(
        c.ok("array.setslice", p![a, NIL, NIL, -2, arr![50, 30, 10]]),
        NIL
    );
    assert_eq!(c.ok("array.tolist", p![a]), arr![10, 10, 2, 30, 4, 50]);
    // The length may not change, even through a simple slice.
    assert_eq!(
        c.fail("array.setslice", p![a, 0, 2, NIL, arr![1]]),
        "ValueError"
    );
    assert_eq!(
        c.fail("array.setslice", p![a, 0, 2, NIL, arr![1, 2, 3]]),
        "ValueError"
    );
    assert_eq!(
        c.fail("array.setslice", p![a, NIL, NIL, 0, arr![]]),
        "ValueError"
    );
    assert_eq!(
        c.fail("array.setslice", p![a, 0, 2, NIL, arr![1, "x"]]),
        "TypeError"
    );
    assert_eq!(
        c.fail("array.setslice", p![a, 0, 2, NIL, arr![1, 1 << 20]]),
        "OverflowError"
    );
    assert_eq!(c.fail("array.setslice", p![a, 0, 2, NIL, 5]), "TypeError");
    assert_eq!(
        c.fail("array.setslice", p![a, 0, 2, NIL]),
        "ArgumentCountError"
    );
    assert_eq!(c.fail("array.getslice", p![a, 0, 2]), "ArgumentCountError");
    assert_eq!(c.ok("array.tolist", p![a]), arr![10, 10, 2, 30, 4, 50]);
    assert_eq!(c.ok("array.len", p![a]), Value::from(6));
}

// ---------------------------------------------------------------------------------------------
// namespace (PROTOCOL.md section 4.7)
// ---------------------------------------------------------------------------------------------

#[test]
fn namespace_attributes() {
    let server = TestServer::start();
    let mut c = server.client();
    let n = c.create("namespace", None, vec![map! {"a" => 1}]);
    assert_eq!(c.ok("namespace.getattr", p![n, "a"]), Value::from(1));
    assert_eq!(c.fail("namespace.getattr", p![n, "b"]), "AttributeError");
    assert_eq!(c.ok("namespace.setattr", p![n, "b", arr![1, 2]]), NIL);
    assert_eq!(c.ok("namespace.getattr", p![n, "b"]), arr![1, 2]);
    c.ok("namespace.setattr", p![n, "c", NIL]);
    // Setting again keeps the first-set order.
    c.ok("namespace.setattr", p![n, "a", "again"]);
    assert_eq!(
        c.ok("namespace.items", p![n]),
        map! {"a" => "again", "b" => arr![1, 2], "c" => NIL}
    );
    assert_eq!(c.ok("namespace.delattr", p![n, "a"]), NIL);
    assert_eq!(c.fail("namespace.delattr", p![n, "a"]), "AttributeError");
    assert_eq!(c.fail("namespace.getattr", p![n, "a"]), "AttributeError");
    assert_eq!(
        c.ok("namespace.items", p![n]),
        map! {"b" => arr![1, 2], "c" => NIL}
    );
    // Names are strs.
    assert_eq!(c.fail("namespace.getattr", p![n, 5]), "TypeError");
    assert_eq!(c.fail("namespace.setattr", p![n, NIL, 5]), "TypeError");
    assert_eq!(c.fail("namespace.delattr", p![n, arr![]]), "TypeError");
    assert_eq!(
        c.fail(
            "create",
            p!["namespace", NIL, Value::Map(vec![(1.into(), 2.into())])]
        ),
        "TypeError"
    );
    assert_eq!(c.fail("create", p!["namespace", NIL, arr![]]), "TypeError");
    assert_eq!(c.fail("namespace.getattr", p![n]), "ArgumentCountError");
    assert_eq!(
        c.fail("namespace.setattr", p![n, "x"]),
        "ArgumentCountError"
    );
    assert_eq!(c.fail("namespace.delattr", p![n]), "ArgumentCountError");
    assert_eq!(c.fail("namespace.items", p![n, 1]), "ArgumentCountError");
    let empty = c.create("namespace", None, vec![]);
    assert_eq!(c.ok("namespace.items", p![empty]), map! {});
}

// ---------------------------------------------------------------------------------------------
// Value semantics (PROTOCOL.md section 3)
// ---------------------------------------------------------------------------------------------

#[test]
fn an_int_is_the_same_key_whatever_its_encoding() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    let id = enc(&d.into());
    c.call_raw("dict.setitem", &[&id, &[0x05], &[0xa1, b'x']])
        .unwrap();
    for five in [
        int64(5),
        vec![0xcc, 5],
        vec![0xcd, 0, 5],
        vec![0xce, 0, 0, 0, 5],
        vec![0xcf, 0, 0, 0, 0, 0, 0, 0, 5],
        vec![0xd0, 5],
        vec![0xd1, 0, 5],
        vec![0xd2, 0, 0, 0, 5],
        float64(5.0),
        float32(5.0),
    ] {
        assert_eq!(
            c.call_raw("dict.get", &[&id, &five]).unwrap(),
            [0xa1, b'x'],
            "{five:02x?}"
        );
    }
    c.call_raw("dict.setitem", &[&id, &int64(5), &[0xa1, b'y']])
        .unwrap();
    c.call_raw("dict.setitem", &[&id, &int64(-1), &[0xa1, b'm']])
        .unwrap();
    assert_eq!(c.ok("dict.len", p![d]), Value::from(2));
    assert_eq!(c.ok("dict.get", p![d, 5]), Value::from("y"));
    assert_eq!(c.ok("dict.get", p![d, -1]), Value::from("m"));
    // Integer ids are read whatever their encoding, too.
    assert_eq!(c.call_raw("dict.len", &[&int64(d as i64)]).unwrap(), [0x02]);
}

#[test]
fn a_float_equal_to_an_int_is_the_same_key() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    c.ok("dict.setitem", p![d, 1.0, "float"]);
    assert_eq!(c.ok("dict.getitem", p![d, 1]), Value::from("float"));
    c.ok("dict.setitem", p![d, 1, "int"]);
    assert_eq!(c.ok("dict.len", p![d]), Value::from(1));
    assert_eq!(c.ok("dict.getitem", p![d, 1.0]), Value::from("int"));
    // float32 and float64 of the same value, and -0.0 and 0.
    c.ok("dict.setitem", p![d, Value::F32(0.5), "half"]);
    assert_eq!(c.ok("dict.getitem", p![d, 0.5]), Value::from("half"));
    c.ok("dict.setitem", p![d, 0, "zero"]);
    assert_eq!(c.ok("dict.getitem", p![d, -0.0]), Value::from("zero"));
    assert_eq!(c.ok("dict.len", p![d]), Value::from(3));
    // 1.5 is no int.
    assert_eq!(c.fail("dict.getitem", p![d, 1.5]), "KeyError");
}

#[test]
fn str_and_bin_are_different_keys_and_bool_is_not_an_int() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    c.ok("dict.setitem", p![d, "a", "str"]);
    assert_eq!(
        c.fail("dict.getitem", p![d, Value::Binary(b"a".to_vec())]),
        "KeyError"
    );
    c.ok("dict.setitem", p![d, Value::Binary(b"a".to_vec()), "bin"]);
    c.ok("dict.setitem", p![d, 1, "int"]);
    c.ok("dict.setitem", p![d, true, "bool"]);
    assert_eq!(c.ok("dict.len", p![d]), Value::from(4));
    assert_eq!(c.ok("dict.getitem", p![d, "a"]), Value::from("str"));
    assert_eq!(
        c.ok("dict.getitem", p![d, Value::Binary(b"a".to_vec())]),
        Value::from("bin")
    );
    assert_eq!(c.ok("dict.getitem", p![d, 1]), Value::from("int"));
    assert_eq!(c.ok("dict.getitem", p![d, true]), Value::from("bool"));
    // A str8 and a fixstr of the same text are the same key.
    let id = enc(&d.into());
    assert_eq!(
        c.call_raw("dict.get", &[&id, &str8("a")]).unwrap(),
        enc(&"str".into())
    );
}

#[test]
fn ext_keys_compare_by_type_and_data() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    c.ok("dict.setitem", p![d, Value::Ext(1, vec![1, 2]), "one"]);
    c.ok("dict.setitem", p![d, Value::Ext(2, vec![1, 2]), "two"]);
    assert_eq!(c.ok("dict.len", p![d]), Value::from(2));
    // The same ext in its ext8 form instead of fixext2.
    let id = enc(&d.into());
    let ext8 = [0xc7, 0x02, 0x01, 1, 2];
    assert_eq!(
        c.call_raw("dict.get", &[&id, &ext8]).unwrap(),
        enc(&"one".into())
    );
}

#[test]
fn a_str_that_is_not_utf8_is_still_a_str_key() {
    // Clients that predate bin send binary data as str: such strs are keys like any other.
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    let id = enc(&d.into());
    c.call_raw("dict.setitem", &[&id, &[0xc4, 0x01, 0xff], &[0x01]])
        .unwrap();
    c.call_raw("dict.setitem", &[&id, &[0xd9, 0x01, 0xff], &[0x02]])
        .unwrap();
    // bin b"\xff" and str "\xff" are different keys.
    assert_eq!(c.ok("dict.len", p![d]), Value::from(2));
    assert_eq!(
        c.call_raw("dict.get", &[&id, &[0xc4, 0x01, 0xff]]).unwrap(),
        [0x01]
    );
    // The fixstr and the str8 of the same bytes are the same key.
    assert_eq!(
        c.call_raw("dict.get", &[&id, &[0xa1, 0xff]]).unwrap(),
        [0x02]
    );
    c.call_raw("dict.setitem", &[&id, &[0xa1, 0xff], &[0x03]])
        .unwrap();
    assert_eq!(c.ok("dict.len", p![d]), Value::from(2));
    assert_eq!(
        c.call_raw("dict.get", &[&id, &[0xd9, 0x01, 0xff]]).unwrap(),
        [0x03]
    );
}

#[test]
fn a_dict_keeps_the_first_encoding_of_a_key_like_python() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    c.ok("dict.setitem", p![d, 1.0, "a"]);
    c.ok("dict.setitem", p![d, 1, "b"]);
    assert_eq!(c.ok("dict.keys", p![d]), arr![1.0]);
    assert_eq!(
        c.ok("dict.copy", p![d]),
        Value::Map(vec![(1.0.into(), "b".into())])
    );
}

/// Raw encodings the manager must hand back exactly as it received them.
fn unusual_encodings() -> Vec<Vec<u8>> {
    let map_out_of_order = vec![0x82, 0xa1, b'z', 0x01, 0xa1, b'a', 0x02];
    vec![
        float32(1.5),
        float32(f32::NAN),
        float64(3.0),
        str8("hi"),
        vec![0xda, 0x00, 0x02, b'h', b'i'], // str16
        vec![0xc5, 0x00, 0x01, 0xff],       // bin16
        int64(5),
        vec![0xcf, 0, 0, 0, 0, 0, 0, 0, 7],       // uint64 7
        vec![0xdc, 0x00, 0x01, 0x01],             // array16 of one element
        vec![0xde, 0x00, 0x01, 0xa1, b'k', 0xc0], // map16 of one entry
        map_out_of_order,
        LIST_7_REF.to_vec(),
        vec![0xd6, 0xff, 0, 0, 0, 1], // timestamp ext -1
        vec![0xc7, 0x00, 0x05],       // empty ext8
        vec![0xa0],                   // empty str
        vec![0xd9, 0x01, 0xff],       // a str that is not UTF-8
    ]
}

#[test]
fn stored_values_come_back_byte_identical() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    let l = c.create("list", None, vec![]);
    let n = c.create("namespace", None, vec![]);
    let (d_id, l_id, n_id) = (enc(&d.into()), enc(&l.into()), enc(&n.into()));
    let values = unusual_encodings();
    for (i, raw) in values.iter().enumerate() {
        let key = enc(&(i as u64).into());
        let name = enc(&format!("attr{i}").into());
        c.call_raw("dict.setitem", &[&d_id, &key, raw]).unwrap();
        c.call_raw("list.append", &[&l_id, raw]).unwrap();
        c.call_raw("namespace.setattr", &[&n_id, &name, raw])
            .unwrap();
    }
    for (i, raw) in values.iter().enumerate() {
        let key = enc(&(i as u64).into());
        let name = enc(&format!("attr{i}").into());
        let index = enc(&(i as u64).into());
        assert_eq!(
            &c.call_raw("dict.get", &[&d_id, &key]).unwrap(),
            raw,
            "dict {i}"
        );
        assert_eq!(&c.call_raw("dict.getitem", &[&d_id, &key]).unwrap(), raw);
        assert_eq!(
            &c.call_raw("list.getitem", &[&l_id, &index]).unwrap(),
            raw,
            "list {i}"
        );
        assert_eq!(
            &c.call_raw("namespace.getattr", &[&n_id, &name]).unwrap(),
            raw,
            "namespace {i}"
        );
        let created = c
            .call_raw("create", &[&enc(&"value".into()), &[0xc0], &[0xc0], raw])
            .unwrap();
        assert_eq!(
            &c.call_raw("value.get", &[&created]).unwrap(),
            raw,
            "value {i}"
        );
        c.call_raw("value.set", &[&created, &[0x00]]).unwrap();
        c.call_raw("value.set", &[&created, raw]).unwrap();
        assert_eq!(&c.call_raw("value.get", &[&created]).unwrap(), raw);
    }
    // The whole containers too: header, then the values as sent.
    let mut expected = Vec::new();
    rmp::encode::write_array_len(&mut expected, values.len() as u32).unwrap();
    values.iter().for_each(|v| expected.extend(v));
    assert_eq!(c.call_raw("list.copy", &[&l_id]).unwrap(), expected);
    assert_eq!(c.call_raw("dict.values", &[&d_id]).unwrap(), expected);
    assert_eq!(
        c.call_raw("list.getslice", &[&l_id, &[0xc0], &[0xc0], &[0xc0]])
            .unwrap(),
        expected
    );
    // An initializer's elements are kept as sent as well.
    let mut init = Vec::new();
    rmp::encode::write_array_len(&mut init, values.len() as u32).unwrap();
    values.iter().for_each(|v| init.extend(v));
    let l2 = c
        .call_raw("create", &[&enc(&"list".into()), &[0xc0], &init])
        .unwrap();
    assert_eq!(c.call_raw("list.copy", &[&l2]).unwrap(), expected);
}

#[test]
fn keys_come_back_as_they_were_sent() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    let id = enc(&d.into());
    let keys = [
        str8("k"),
        int64(70_000),
        float32(2.5),
        float64(-1.0),
        LIST_7_REF.to_vec(),
    ];
    for (i, k) in keys.iter().enumerate() {
        c.call_raw("dict.setitem", &[&id, k, &[i as u8]]).unwrap();
    }
    let mut expected = vec![0x90 | keys.len() as u8];
    keys.iter().for_each(|k| expected.extend(k));
    assert_eq!(c.call_raw("dict.keys", &[&id]).unwrap(), expected);
    let items = c.call_raw("dict.items", &[&id]).unwrap();
    let mut expected = vec![0x90 | keys.len() as u8];
    for (i, k) in keys.iter().enumerate() {
        expected.push(0x92);
        expected.extend(k);
        expected.push(i as u8);
    }
    assert_eq!(items, expected);
    // popitem hands back the key as sent.
    let mut last = vec![0x92];
    last.extend(&LIST_7_REF);
    last.push(4);
    assert_eq!(c.call_raw("dict.popitem", &[&id]).unwrap(), last);
}

#[test]
fn object_references_are_stored_and_returned_unchanged() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    let l = c.create("list", None, vec![]);
    // A reference to the real list l, built as PROTOCOL.md describes.
    let data = enc(&arr!["list", l]);
    let reference = Value::Ext(1, data.clone());
    c.ok("dict.setitem", p![d, "child", reference.clone()]);
    assert_eq!(c.ok("dict.getitem", p![d, "child"]), reference);
    let Value::Ext(1, got) = c.ok("dict.getitem", p![d, "child"]) else {
        panic!("not an ext of type 1")
    };
    assert_eq!(dec(&got), arr!["list", l]);
    // References are values like others: keys, list elements, compared by bytes.
    c.ok("dict.setitem", p![d, reference.clone(), "by ref"]);
    assert_eq!(
        c.ok("dict.getitem", p![d, reference.clone()]),
        Value::from("by ref")
    );
    c.ok("list.append", p![l, reference.clone()]);
    assert_eq!(c.ok("list.index", p![l, reference.clone()]), Value::from(0));
    assert_eq!(
        c.ok(
            "list.count",
            p![l, Value::Ext(1, enc(&arr!["list", l + 1]))]
        ),
        Value::from(0)
    );
    // The manager does not count references: deleting the target leaves the reference as is.
    c.ok("delete", p![l]);
    assert_eq!(c.ok("dict.getitem", p![d, "child"]), reference);
}

// ---------------------------------------------------------------------------------------------
// Concurrency and transports
// ---------------------------------------------------------------------------------------------

#[test]
fn eight_clients_writing_at_once_lose_nothing() {
    const THREADS: usize = 8;
    const EACH: usize = 500;
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", Some("d"), vec![]);
    let l = c.create("list", Some("l"), vec![]);
    let counter = c.create("value", Some("n"), p!["q", 0]);
    thread::scope(|s| {
        for t in 0..THREADS {
            let socket = server.socket.as_path();
            s.spawn(move || {
                let mut c = RawClient::connect_unix(socket).expect("connect to the manager");
                c.authenticate(AUTHKEY);
                for i in 0..EACH {
                    let key = format!("{t}-{i}");
                    assert_eq!(c.ok("dict.setitem", p![d, key.as_str(), i as u64]), NIL);
                    assert_eq!(c.ok("list.append", p![l, key.as_str()]), NIL);
                    c.ok("value.fetch_add", p![counter, 1]);
                }
            });
        }
    });
    let total = THREADS * EACH;
    assert_eq!(c.ok("dict.len", p![d]), Value::from(total as u64));
    assert_eq!(c.ok("list.len", p![l]), Value::from(total as u64));
    assert_eq!(c.ok("value.get", p![counter]), Value::from(total as u64));
    let listed: HashSet<String> = c
        .ok("list.copy", p![l])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let keys: HashSet<String> = c
        .ok("dict.keys", p![d])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let expected: HashSet<String> = (0..THREADS)
        .flat_map(|t| (0..EACH).map(move |i| format!("{t}-{i}")))
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(keys, expected);
}

#[test]
fn the_same_protocol_over_tcp() {
    let server = TestServer::with_config(Config::new(AUTHKEY.to_vec()), true);
    let mut t = server.connect_tcp();
    assert_eq!(t.fail("ping", vec![]), "AuthenticationError");
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

#[test]
fn a_semaphore_release_that_would_overflow_is_refused_and_the_value_kept() {
    let server = TestServer::start();
    let mut c = server.client();
    let sem = c.create("semaphore", None, vec![Value::from(1)]);
    let err = c.fail(
        "semaphore.release",
        vec![Value::from(sem), Value::from(u64::MAX)],
    );
    assert!(err.starts_with("OverflowError"), "{err}");
    // The session survived and the value is what it was.
    assert_eq!(
        c.ok("semaphore.get_value", vec![Value::from(sem)]),
        Value::from(1)
    );
}

#[test]
fn negative_sizes_and_counts_are_reported_as_themselves() {
    let server = TestServer::start();
    let mut c = server.client();
    let err = c
        .call(
            "create",
            vec!["array".into(), Value::Nil, "i".into(), Value::from(-1)],
        )
        .unwrap_err();
    assert_eq!(err.name, "ValueError");
    assert!(err.message.contains("-1"), "{}", err.message);
    let sem = c.create("semaphore", None, vec![]);
    let err = c
        .call("semaphore.release", vec![Value::from(sem), Value::from(-1)])
        .unwrap_err();
    assert!(err.message.ends_with("got -1"), "{}", err.message);
}

// ---------------------------------------------------------------------------------------------
// Which methods wait (PROTOCOL.md section 4.1, agora_proto::methods::MAY_WAIT)
// ---------------------------------------------------------------------------------------------

/// Sets up an object on which `method` must wait, using `holder` for whatever another client
/// has to hold; gives the id and the params of a call that waits at most `timeout` seconds.
fn waiting_call(
    c: &mut RawClient,
    holder: &mut RawClient,
    method: &str,
    timeout: f64,
) -> Vec<Value> {
    let (kind, op) = method.split_once('.').expect("kind.method");
    let t = Value::F64(timeout);
    let yes = Value::Boolean(true);
    let item = Value::from(7);
    match (kind, op) {
        ("queue" | "joinable_queue", "get") => {
            let id = Value::from(c.create(kind, None, vec![]));
            vec![id, yes, t]
        }
        ("queue" | "joinable_queue", "get_many") => {
            let id = Value::from(c.create(kind, None, vec![]));
            vec![id, Value::from(2), yes, t]
        }
        ("queue" | "joinable_queue", "put" | "put_many") => {
            let id = c.create(kind, None, vec![Value::from(1)]);
            c.ok(&format!("{kind}.put"), vec![Value::from(id), item.clone()]);
            let arg = if op == "put" {
                item
            } else {
                Value::Array(vec![item])
            };
            vec![Value::from(id), arg, yes, t]
        }
        ("joinable_queue", "join") => {
            let id = Value::from(c.create(kind, None, vec![]));
            c.ok("joinable_queue.put", vec![id.clone(), item]);
            vec![id, t]
        }
        ("lock" | "rlock" | "condition" | "semaphore" | "bounded_semaphore", "acquire") => {
            let id = Value::from(c.create(kind, None, vec![]));
            holder.ok(method, vec![id.clone()]);
            vec![id, yes, t]
        }
        ("condition", "wait") => {
            let id = Value::from(c.create(kind, None, vec![]));
            c.ok("condition.acquire", vec![id.clone()]);
            vec![id, t]
        }
        ("event", "wait") => vec![Value::from(c.create(kind, None, vec![])), t],
        ("barrier", "wait") => vec![Value::from(c.create(kind, None, vec![Value::from(2)])), t],
        _ => panic!("{method} is listed as waiting but this test cannot make it wait"),
    }
}

#[test]
fn every_method_listed_as_waiting_parks_and_lets_later_calls_pass() {
    let server = TestServer::start();
    for method in agora_proto::methods::MAY_WAIT {
        let (mut c, mut holder) = (server.client(), server.client());
        let params = waiting_call(&mut c, &mut holder, method, 0.3);
        let (waiting, ping) = (c.msgid(), c.msgid());
        let mut bytes = request(waiting, method, params);
        bytes.extend(request(ping, "ping", vec![]));
        c.send(&bytes);
        // Parked: the ping behind it is answered first, and the waiting call at its timeout.
        let first = c.response();
        assert_eq!(first.msgid, ping, "{method} did not park");
        let second = c.response();
        assert_eq!(second.msgid, waiting, "{method}: no answer at its timeout");
    }
}

// ---------------------------------------------------------------------------------------------
// Polling for the next request (agora_manager::spin)
// ---------------------------------------------------------------------------------------------

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

#[test]
fn a_grant_that_cannot_be_delivered_passes_on_without_an_owner_died_notice() {
    for kind in [
        "lock",
        "rlock",
        "semaphore",
        "bounded_semaphore",
        "condition",
    ] {
        let server = TestServer::start();
        let (mut holder, mut gone, mut next) = (server.client(), server.client(), server.client());
        let id = Value::from(holder.create(kind, None, vec![]));
        let (acquire, release) = (format!("{kind}.acquire"), format!("{kind}.release"));
        holder.ok(&acquire, vec![id.clone()]);
        gone.park(&acquire, vec![id.clone()]);
        gone.stop_reading();
        let waiting = next.park(&acquire, vec![id.clone()]);
        // The lock is granted to `gone`, whose reply cannot be written: it goes to `next`, and
        // since `gone` never learnt it held the lock, nobody died holding it.
        holder.ok(&release, vec![id.clone()]);
        let answer = next.response();
        assert_eq!(answer.msgid, waiting);
        let code = dec(&answer.result.unwrap_or_else(|e| panic!("{kind}: {e:?}")));
        assert_eq!(code, Value::from(1), "{kind}: a spurious owner-died notice");
    }
}
