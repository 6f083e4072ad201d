//! A fake manager on a Unix socket, in threads of the test process: real framing and
//! authentication, a tiny dict/list store, and test methods that delay, reorder and break.
//!
//! Test methods:
//! - `test.whoami` → the connection's number (1 for the first accepted connection, ...);
//! - `test.echo [x]` → x;
//! - `test.sleep [ms, x]` → x, answered from another thread after `ms` milliseconds, so
//!   replies to later requests overtake it;
//! - `test.close` → no reply: the server shuts the connection down.
//!
//! Lifetime: `incref`, `export` and `adopt` of an existing object answer `true`; they and the
//! `decref` notifications (each param one `[id, count]` pair) are written to the log
//! ([`FakeManager::logged`]: `"2: adopt 5"`, `"1: decref [[5, 2]]"`), in the order each connection sent them. Nothing is counted or
//! freed: the client's counts are what the log shows.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use agora_proto::{encode, envelope, CallError, Envelope, ErrorName, FrameDecoder, Limits, Params};
use bytes::Bytes;
use parking_lot::Mutex;

use crate::Address;

pub(crate) const AUTHKEY: &[u8] = b"test authkey";

/// A running fake manager. Its threads live until the test process exits.
pub(crate) struct FakeManager {
    _dir: tempfile::TempDir,
    pub(crate) address: Address,
    pub(crate) accepted: Arc<AtomicUsize>,
    /// Connections that have ended (the client closed or shut down its end).
    pub(crate) ended: Arc<AtomicUsize>,
    /// The run `hello` reports; a test changes it to play a restarted manager.
    pub(crate) run: Arc<Mutex<String>>,
    /// Lifetime calls and notifications, `"<connection>: <what>"`.
    log: Arc<Mutex<Vec<String>>>,
}

/// The run a fake manager reports until a test changes it.
pub(crate) const FIRST_RUN: &str = "00000000-0000-4000-8000-000000000001";

/// When every run of a fake manager started: 2023-11-14 22:13:20 UTC.
pub(crate) const STARTED: u64 = 1_700_000_000;

impl FakeManager {
    pub(crate) fn start() -> FakeManager {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("manager.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let accepted = Arc::new(AtomicUsize::new(0));
        let store = Arc::new(Mutex::new(Store::default()));
        let ended = Arc::new(AtomicUsize::new(0));
        let run = Arc::new(Mutex::new(FIRST_RUN.to_owned()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (counter, end_counter, current_run) = (accepted.clone(), ended.clone(), run.clone());
        let all_logs = log.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let number = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let (store, end_counter) = (store.clone(), end_counter.clone());
                let run = current_run.lock().clone();
                let log = all_logs.clone();
                thread::spawn(move || {
                    serve(stream, number, store, &run, &log);
                    end_counter.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        FakeManager {
            _dir: dir,
            address: Address::Unix(path),
            accepted,
            ended,
            run,
            log,
        }
    }

    /// The log's entries so far.
    pub(crate) fn logged(&self) -> Vec<String> {
        self.log.lock().clone()
    }

    /// What the `n`th accepted connection logged (`"<n>: ..."` lines).
    pub(crate) fn logged_by(&self, n: usize) -> Vec<String> {
        let prefix = format!("{n}: ");
        self.log
            .lock()
            .iter()
            .filter(|l| l.starts_with(&prefix))
            .cloned()
            .collect()
    }
}

#[derive(Default)]
struct Store {
    objects: Vec<Object>,
}

enum Object {
    Dict(Vec<(Bytes, Bytes)>),
    List(Vec<Bytes>),
}

type Writer = Arc<Mutex<UnixStream>>;

fn serve(
    stream: UnixStream,
    number: usize,
    store: Arc<Mutex<Store>>,
    run: &str,
    log: &Mutex<Vec<String>>,
) {
    let writer: Writer = Arc::new(Mutex::new(stream.try_clone().expect("clone")));
    let mut reader = stream;
    let mut decoder = FrameDecoder::new(Limits::default());
    let mut buf = vec![0; 4096];
    let challenge = [number as u8; 32];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        decoder.extend(&buf[..n]);
        let mut out = Vec::new();
        while let Ok(Some(frame)) = decoder.next_frame() {
            let (msgid, method, params) = match envelope::parse(frame) {
                Ok(Envelope::Request {
                    msgid,
                    method,
                    params,
                }) => (msgid, method, params),
                Ok(Envelope::Notification { method, params }) => {
                    // As the manager reads it: each param one [id, count] pair.
                    let pairs: Vec<String> = params
                        .iter()
                        .map(
                            |pair| match agora_proto::params::array_items(&pair).as_deref() {
                                Some([id, n]) => match (
                                    agora_proto::params::int_u64(id),
                                    agora_proto::params::int_u64(n),
                                ) {
                                    (Some(id), Some(n)) => format!("[{id}, {n}]"),
                                    _ => "malformed".to_owned(),
                                },
                                _ => "malformed".to_owned(),
                            },
                        )
                        .collect();
                    log.lock()
                        .push(format!("{number}: {method} [{}]", pairs.join(", ")));
                    continue;
                }
                _ => continue,
            };
            if matches!(method.as_str(), "incref" | "export" | "adopt") {
                log.lock()
                    .push(format!("{number}: {method} {}", params.u64(0).unwrap_or(0)));
            }
            match method.as_str() {
                "test.close" => {
                    let _ = reader.shutdown(std::net::Shutdown::Both);
                    return;
                }
                "test.sleep" => {
                    let writer = writer.clone();
                    thread::spawn(move || {
                        let ms = params.u64(0).unwrap_or(0);
                        thread::sleep(Duration::from_millis(ms));
                        let mut out = Vec::new();
                        encode::response_ok(&mut out, msgid, params.raw(1));
                        let _ = writer.lock().write_all(&out);
                    });
                }
                _ => match answer(&method, &params, number, &challenge, &store, run) {
                    Ok(result) => encode::response_ok(&mut out, msgid, &result),
                    Err(e) => encode::response_err(&mut out, msgid, &e),
                },
            }
        }
        if !out.is_empty() && writer.lock().write_all(&out).is_err() {
            return;
        }
    }
}

fn answer(
    method: &str,
    p: &Params,
    number: usize,
    challenge: &[u8],
    store: &Mutex<Store>,
    run: &str,
) -> Result<Vec<u8>, CallError> {
    let mut out = Vec::new();
    match method {
        "hello" => {
            encode::map_header(&mut out, 6);
            encode::str(&mut out, "run");
            encode::str(&mut out, run);
            encode::str(&mut out, "started");
            encode::uint(&mut out, STARTED);
            encode::str(&mut out, "protocol");
            encode::uint(&mut out, 1);
            encode::str(&mut out, "server");
            encode::str(&mut out, "fake");
            encode::str(&mut out, "version");
            encode::str(&mut out, "0");
            encode::str(&mut out, "challenge");
            encode::bin(&mut out, challenge);
        }
        "auth" => {
            let expected = crate::connection::test_digest(AUTHKEY, challenge);
            if agora_proto::params::bytes_of(p.raw(0)) != Some(&expected[..]) {
                return Err(CallError::new(
                    ErrorName::AuthenticationError,
                    "wrong digest",
                ));
            }
            encode::bool(&mut out, true);
        }
        "ping" => encode::str(&mut out, "pong"),
        "test.whoami" => encode::uint(&mut out, number as u64),
        "test.echo" => out.extend_from_slice(p.raw(0)),
        _ => return object_call(method, p, &mut store.lock(), out),
    }
    Ok(out)
}

fn object_call(
    method: &str,
    p: &Params,
    store: &mut Store,
    mut out: Vec<u8>,
) -> Result<Vec<u8>, CallError> {
    if matches!(method, "incref" | "export" | "adopt") {
        let id = p.u64(0)? as usize;
        if id >= store.objects.len() {
            return Err(CallError::new(
                ErrorName::UnknownObjectError,
                "no such object",
            ));
        }
        encode::bool(&mut out, true);
        return Ok(out);
    }
    if method == "create" {
        let object = match p.str(0)? {
            "dict" => Object::Dict(Vec::new()),
            "list" => Object::List(p.opt(2).map_or(Vec::new(), |_| {
                p.array(2).map(|a| a.iter().collect()).unwrap_or_default()
            })),
            other => return Err(CallError::value(format!("fake: no kind {other}"))),
        };
        store.objects.push(object);
        encode::uint(&mut out, store.objects.len() as u64 - 1);
        return Ok(out);
    }
    if !(method.starts_with("dict.") || method.starts_with("list.")) || p.is_empty() {
        return Err(CallError::new(
            ErrorName::UnknownMethodError,
            method.to_owned(),
        ));
    }
    let object = store
        .objects
        .get_mut(p.u64(0)? as usize)
        .ok_or_else(|| CallError::new(ErrorName::UnknownObjectError, "no such object"))?;
    match (method, object) {
        ("dict.setitem", Object::Dict(entries)) => {
            entries.retain(|(k, _)| k[..] != *p.raw(1));
            entries.push((p.bytes(1), p.bytes(2)));
            encode::nil(&mut out);
        }
        ("dict.getitem", Object::Dict(entries)) => {
            let (_, v) = entries
                .iter()
                .find(|(k, _)| k[..] == *p.raw(1))
                .ok_or_else(|| CallError::key("missing"))?;
            out.extend_from_slice(v);
        }
        ("dict.len", Object::Dict(entries)) => encode::uint(&mut out, entries.len() as u64),
        ("list.append", Object::List(items)) => {
            items.push(p.bytes(1));
            encode::nil(&mut out);
        }
        ("list.len", Object::List(items)) => encode::uint(&mut out, items.len() as u64),
        ("list.copy", Object::List(items)) => {
            encode::array_header(&mut out, items.len());
            for item in items.iter() {
                out.extend_from_slice(item);
            }
        }
        _ => {
            return Err(CallError::new(
                ErrorName::UnknownMethodError,
                method.to_owned(),
            ))
        }
    }
    Ok(out)
}
