//! The manager against the method table (`agora_proto::methods`): every method the table lists
//! is known to the manager and takes the param counts the table documents; every other
//! `<kind>.<method>` is answered `UnknownMethodError`, whatever its params and whether or not
//! its id names an object.
//!
//! Each test starts an in-process manager on a Unix socket in a temporary directory and speaks
//! to it with a minimal raw client. Every socket has a read timeout, so a manager that fails to
//! answer makes a test fail instead of hanging it.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use agora_manager::{Config, Listener, Server};
use agora_proto::methods::{self, MethodSpec};
use agora_proto::{FrameDecoder, Kind, Limits};
use hmac::{Hmac, KeyInit, Mac};
use rmpv::Value;
use sha2::Sha256;

const AUTHKEY: &[u8] = b"method table tests: 32-byte key!";

/// How long to wait for a reply before declaring the manager stuck; generous, since the tests
/// assert what arrives, never how fast.
const TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// A manager and a raw client
// replaced by agora_proto::testing::RawClient once it lands
// ---------------------------------------------------------------------------------------------

/// A manager on its own thread; dropping it stops the manager and waits for it (bounded).
struct TestServer {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: mpsc::Receiver<()>,
}

impl TestServer {
    fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let socket = dir.path().join("manager.sock");
        let listener = Listener::Unix {
            listener: UnixListener::bind(&socket).expect("bind the socket"),
            path: socket.clone(),
        };
        let server = Server::new(vec![listener], Config::new(AUTHKEY.to_vec())).expect("server");
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = mpsc::channel();
        thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            let _ = runtime.block_on(server.run(async {
                let _ = stop_rx.await;
            }));
            let _ = done_tx.send(());
        });
        TestServer {
            _dir: dir,
            socket,
            stop: Some(stop),
            done,
        }
    }

    /// A connection that has passed `hello` and `auth`.
    fn client(&self) -> Client {
        let mut c = self.connect();
        let hello = c.ok("hello", vec![]);
        let challenge = field(&hello, "challenge");
        let challenge = challenge.as_slice().expect("the challenge is a bin");
        let mut mac = Hmac::<Sha256>::new_from_slice(AUTHKEY).expect("any key length");
        mac.update(challenge);
        let digest = mac.finalize().into_bytes().to_vec();
        c.ok("auth", vec![Value::Binary(digest)]);
        c
    }

    /// A fresh, unauthenticated connection.
    fn connect(&self) -> Client {
        let sock = UnixStream::connect(&self.socket).expect("connect to the manager");
        sock.set_read_timeout(Some(TIMEOUT))
            .expect("a read timeout");
        Client {
            sock,
            decoder: FrameDecoder::new(Limits::UNLIMITED),
            next_msgid: 0,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        drop(self.stop.take());
        let _ = self.done.recv_timeout(TIMEOUT);
    }
}

fn field<'a>(map: &'a Value, key: &str) -> &'a Value {
    map.as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(key)))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {key:?} in {map}"))
}

/// An error the manager answered: `[name, message]`.
#[derive(Debug)]
struct Remote {
    name: String,
    message: String,
}

/// One response: its msgid and its result or error.
struct Response {
    msgid: u32,
    result: Result<Value, Remote>,
}

struct Client {
    sock: UnixStream,
    decoder: FrameDecoder,
    next_msgid: u32,
}

impl Client {
    /// Writes a request without waiting for its answer; gives its msgid.
    fn send(&mut self, method: &str, params: Vec<Value>) -> u32 {
        self.next_msgid += 1;
        let msgid = self.next_msgid;
        let request = Value::Array(vec![
            Value::from(0),
            Value::from(msgid),
            Value::from(method),
            Value::Array(params),
        ]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &request).expect("encode a request");
        self.sock.write_all(&bytes).expect("write to the manager");
        msgid
    }

    /// The next response from the manager.
    fn response(&mut self) -> Response {
        let mut buf = [0u8; 64 * 1024];
        let frame = loop {
            if let Some(frame) = self.decoder.next_frame().expect("valid MessagePack") {
                break frame.to_vec();
            }
            match self.sock.read(&mut buf) {
                Ok(0) => panic!("the manager closed the connection instead of answering"),
                Ok(n) => self.decoder.extend(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("no answer from the manager: {e}"),
            }
        };
        let message = rmpv::decode::read_value(&mut &frame[..]).expect("a MessagePack value");
        let parts = message.as_array().expect("a response is an array");
        assert_eq!(parts.len(), 4, "not a response: {message}");
        assert_eq!(parts[0], Value::from(1), "not a response: {message}");
        let msgid = parts[1].as_u64().expect("a msgid") as u32;
        let result = match &parts[2] {
            Value::Nil => Ok(parts[3].clone()),
            error => {
                let pair = error.as_array().expect("an error is [name, message]");
                Err(Remote {
                    name: pair[0].as_str().expect("a name").to_owned(),
                    message: pair[1].as_str().expect("a message").to_owned(),
                })
            }
        };
        Response { msgid, result }
    }

    /// Calls `method` and gives its answer.
    fn call(&mut self, method: &str, params: Vec<Value>) -> Result<Value, Remote> {
        let msgid = self.send(method, params);
        let r = self.response();
        assert_eq!(r.msgid, msgid, "the answer to another call");
        r.result
    }

    fn ok(&mut self, method: &str, params: Vec<Value>) -> Value {
        self.call(method, params)
            .unwrap_or_else(|e| panic!("{method} failed: {}: {}", e.name, e.message))
    }

    /// A new object of `kind` with init args that make every method answer promptly where it
    /// can (a barrier of one party, a semaphore with a permit); gives its id.
    fn create(&mut self, kind: Kind) -> u64 {
        let args = match kind {
            Kind::Value => vec![Value::Nil, Value::from(0)],
            Kind::Array => vec![Value::from("b"), Value::from(2)],
            Kind::Barrier => vec![Value::from(1)],
            _ => vec![],
        };
        let mut params = vec![Value::from(kind.as_str()), Value::Nil];
        params.extend(args);
        let id = self.ok("create", params);
        id.as_u64().expect("create gives an id")
    }
}

/// `[id]` followed by nils up to `n` params.
fn params_of(id: u64, n: usize) -> Vec<Value> {
    let mut params = vec![Value::from(id)];
    params.resize(n.max(1), Value::Nil);
    params
}

/// Every method name of every kind, and of no kind.
fn every_name() -> BTreeSet<&'static str> {
    methods::TABLE.iter().map(|m| m.name).collect()
}

// ---------------------------------------------------------------------------------------------
// Every method in the table is known, with its documented param counts
// ---------------------------------------------------------------------------------------------

/// Calls `spec` with every param count from 1 to one past its most (nils after the id), each
/// on a fresh object, all in one write with a `ping` behind them. Counts outside the table's
/// must get `ArgumentCountError`; counts inside must get anything but `UnknownMethodError` and
/// `ArgumentCountError`. A call still unanswered when the ping is (the manager answers in
/// order the calls it does not park) must be one the table says parks.
fn check_counts(server: &TestServer, spec: &MethodSpec) {
    let kind = spec.kind.expect("an object method");
    let most = spec.max_params().expect("object methods have a most");
    let mut c = server.client();
    let ids: Vec<u64> = (0..=most).map(|_| c.create(kind)).collect();
    let calls: Vec<(u32, usize)> = (1..=most + 1)
        .zip(ids)
        .map(|(n, id)| (c.send(spec.wire, params_of(id, n)), n))
        .collect();
    let ping = c.send("ping", vec![]);
    let mut unanswered: BTreeSet<u32> = calls.iter().map(|(msgid, _)| *msgid).collect();
    loop {
        let r = c.response();
        if r.msgid == ping {
            break;
        }
        assert!(
            unanswered.remove(&r.msgid),
            "an answer to no call: {}",
            r.msgid
        );
        let n = calls
            .iter()
            .find(|(msgid, _)| *msgid == r.msgid)
            .map(|(_, n)| *n);
        let n = n.expect("a call of this test");
        let error = r.result.err().map(|e| (e.name, e.message));
        let shown = format!("{} with {n} params: {error:?}", spec.wire);
        if spec.accepts(n) {
            let name = error.as_ref().map(|(name, _)| name.as_str());
            assert_ne!(name, Some("UnknownMethodError"), "{shown}");
            assert_ne!(name, Some("ArgumentCountError"), "{shown}: {}", spec.params);
        } else {
            let name = error.as_ref().map(|(name, _)| name.as_str());
            assert_eq!(name, Some("ArgumentCountError"), "{shown}: {}", spec.params);
        }
    }
    assert!(
        unanswered.is_empty() || spec.parks,
        "{} parked, but the table says it is answered at once",
        spec.wire
    );
}

#[test]
fn every_method_of_every_kind_is_known_and_takes_the_documented_param_counts() {
    let server = TestServer::start();
    for kind in Kind::ALL {
        for spec in methods::of(Some(*kind)) {
            check_counts(&server, spec);
        }
    }
}

#[test]
fn every_method_of_no_kind_is_known() {
    let server = TestServer::start();
    let mut c = server.client();
    for spec in methods::of(None) {
        if matches!(spec.name, "auth" | "shutdown") {
            continue; // a failed auth closes the connection, shutdown stops the manager
        }
        let params = vec![Value::Nil; spec.min_params()];
        if let Err(e) = c.call(spec.wire, params) {
            assert_ne!(e.name, "UnknownMethodError", "{}: {}", spec.wire, e.message);
        }
    }
    let mut fresh = server.connect();
    fresh.ok("hello", vec![]);
    let e = fresh
        .call("auth", vec![Value::Nil])
        .expect_err("a nil digest");
    assert_eq!(e.name, "AuthenticationError", "{}", e.message);
    assert_eq!(c.ok("shutdown", vec![]), Value::Boolean(true));
}

// ---------------------------------------------------------------------------------------------
// Every method not in the table is unknown, before the params or the object are looked at
// ---------------------------------------------------------------------------------------------

#[test]
fn methods_outside_the_table_are_unknown_whatever_the_params_or_object() {
    let server = TestServer::start();
    let mut c = server.client();
    let names = every_name();
    for kind in Kind::ALL {
        let own: BTreeSet<&str> = methods::of(Some(*kind)).iter().map(|m| m.name).collect();
        let first = methods::of(Some(*kind))[0].name;
        // Names of other kinds' methods and of no kind's, and names of no method at all.
        let shouted = first.to_uppercase();
        let mut foreign: Vec<&str> = names.difference(&own).copied().collect();
        foreign.extend(["nonsense", "owner", "", " get", shouted.as_str()]);
        let id = c.create(*kind);
        let other = c.create(if *kind == Kind::Dict {
            Kind::List
        } else {
            Kind::Dict
        });
        let shapes = [
            vec![Value::from(id)],
            vec![],
            vec![Value::from(u64::MAX)],
            vec![Value::from(other)],
            vec![Value::from("not an id")],
            params_of(id, 6),
        ];
        let mut sent = Vec::new();
        for name in &foreign {
            let wire = format!("{kind}.{name}");
            for (shape, params) in shapes.iter().enumerate() {
                sent.push((c.send(&wire, params.clone()), wire.clone(), shape));
            }
        }
        for (msgid, wire, shape) in sent {
            let r = c.response();
            assert_eq!(r.msgid, msgid, "answered out of order: {wire} parked");
            match r.result {
                Ok(v) => panic!("{wire} {:?} answered {v}", shapes[shape]),
                Err(e) => assert_eq!(
                    e.name, "UnknownMethodError",
                    "{wire} {:?}: {}",
                    shapes[shape], e.message
                ),
            }
        }
    }
}

#[test]
fn cases_that_used_to_get_another_error_are_unknown_methods() {
    let server = TestServer::start();
    let mut c = server.client();
    let lock = c.create(Kind::Lock);
    let barrier = c.create(Kind::Barrier);
    let queue = c.create(Kind::Queue);
    let cases: [(&str, Vec<Value>); 6] = [
        // A lock checked its param count before its method name.
        ("lock.owner", vec![Value::from(lock)]),
        // An unknown id was reported before the unknown method.
        ("lock.owner", vec![Value::from(999_999)]),
        // A barrier checked that non-wait methods take only the id before the name.
        ("barrier.nonsense", vec![Value::from(barrier), Value::Nil]),
        // A call with no params was refused for its missing id before the name was looked at.
        ("dict.nonsense", vec![]),
        // task_done and join are a joinable_queue's only.
        ("queue.task_done", vec![Value::from(queue)]),
        ("queue.join", vec![Value::from(queue), Value::from(0.1)]),
    ];
    for (method, params) in cases {
        let e = c.call(method, params).expect_err(method);
        assert_eq!(e.name, "UnknownMethodError", "{method}: {}", e.message);
    }
    assert!(methods::find(Some(Kind::Queue), "task_done").is_none());
}
