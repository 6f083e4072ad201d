//! What every test module shares: the manager under test ([`TestServer`]), the authkey, the
//! encoding helpers for bytes `rmpv` would never write, and macros that keep params short.
//! The raw client itself is `agora_proto::testing::RawClient`.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use agora_manager::{Config, Listener, Server};
use agora_proto::testing::{dec, RawClient, DEFAULT_TIMEOUT};
use agora_proto::Limits;
use rmpv::Value;

/// The authkey every test manager uses.
pub const AUTHKEY: &[u8] = b"wire tests: a known 32-byte key!";

/// How long a test waits for the manager to stop before declaring it stuck: as long as a
/// client waits for a reply.
const TIMEOUT: Duration = DEFAULT_TIMEOUT;

// ---------------------------------------------------------------------------------------------
// Encoding helpers
// ---------------------------------------------------------------------------------------------

/// A str encoded as str8 even when it is short enough for a fixstr.
pub fn str8(s: &str) -> Vec<u8> {
    let mut out = vec![0xd9, s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

/// An int encoded as int64 (`0xd3` and 8 bytes) whatever its size.
pub fn int64(n: i64) -> Vec<u8> {
    let mut out = vec![0xd3];
    out.extend_from_slice(&n.to_be_bytes());
    out
}

/// A float32 (`0xca` and 4 bytes).
pub fn float32(x: f32) -> Vec<u8> {
    let mut out = vec![0xca];
    out.extend_from_slice(&x.to_be_bytes());
    out
}

/// A float64 (`0xcb` and 8 bytes).
pub fn float64(x: f64) -> Vec<u8> {
    let mut out = vec![0xcb];
    out.extend_from_slice(&x.to_be_bytes());
    out
}

/// A new list, as a reference encoded as PROTOCOL.md spells one (ext 8, type 1, `["list", id]`).
/// A value may only reference a live object, so the list is created first.
pub fn list_ref(c: &mut agora_proto::testing::RawClient) -> Vec<u8> {
    let id = c.create("list", None, vec![]);
    agora_proto::ObjectRef::new("list", id).encode()
}

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

pub const NIL: Value = Value::Nil;

/// An array of the ints in `range`.
pub fn ints(range: impl IntoIterator<Item = i64>) -> Value {
    Value::Array(range.into_iter().map(Value::from).collect())
}

// ---------------------------------------------------------------------------------------------
// The manager under test
// ---------------------------------------------------------------------------------------------

/// A manager running on its own thread and runtime. Dropping it stops the manager (through the
/// stop future given to `Server::run`) and waits for it.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    tcp: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: mpsc::Receiver<io::Result<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::with_config(Config::new(AUTHKEY.to_vec()), false)
    }

    pub fn with_limits(limits: Limits) -> TestServer {
        let mut config = Config::new(AUTHKEY.to_vec());
        config.limits = limits;
        TestServer::with_config(config, false)
    }

    pub fn with_config(config: Config, with_tcp: bool) -> TestServer {
        TestServer::with_workers(config, with_tcp, 2)
    }

    /// As [`TestServer::with_config`], on a runtime with this many worker threads.
    pub fn with_workers(config: Config, with_tcp: bool, workers: usize) -> TestServer {
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
    pub fn connect(&self) -> RawClient {
        RawClient::connect_unix(&self.socket).expect("connect to the manager")
    }

    /// A fresh, unauthenticated connection over TCP.
    pub fn connect_tcp(&self) -> RawClient {
        RawClient::connect_tcp(self.tcp.expect("a TCP listener")).expect("connect over TCP")
    }

    /// A connection that has passed `hello` and `auth`.
    pub fn client(&self) -> RawClient {
        let mut c = self.connect();
        c.authenticate(AUTHKEY);
        c
    }

    /// Waits for `run` to return on its own (after the `shutdown` method) and gives its result.
    pub fn wait_stopped(&mut self) -> io::Result<()> {
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
// Reading what the manager sends besides responses
// ---------------------------------------------------------------------------------------------

/// Reads the `[2, "error", ["ProtocolError", message]]` notification.
pub fn expect_error_notification(c: &mut RawClient, name: &str) {
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
