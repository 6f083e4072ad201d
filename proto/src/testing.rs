//! A blocking raw wire client, for tests that must see the protocol itself.
//!
//! Compiled only with the `testing` feature; tests enable it through a dev-dependency:
//!
//! ```toml
//! [dev-dependencies]
//! agora-proto = { workspace = true, features = ["testing"] }
//! ```
//!
//! The typed client (`agora-client`) hides the wire: it picks msgids, encodes params and turns
//! error pairs into Rust errors. A test of the manager, or of the contract in `PROTOCOL.md`,
//! needs the opposite: to write any bytes it likes (odd encodings, half messages, garbage), to
//! pipeline requests and see in what order the answers come, and to get results back as the
//! exact bytes the manager sent. [`RawClient`] does only that, over a plain `std` socket with
//! no runtime and no threads, so it also works inside a test that runs the manager on a runtime
//! of its own.
//!
//! # A test tool: it panics
//!
//! Everything here panics, with a message saying what was expected, when the manager does not
//! keep the protocol: a malformed response, a reply to another msgid, no reply within the
//! timeout, a failed call where [`RawClient::ok`] expected success. That is the point: a
//! panic is a failed test, with the reason in it. Only the functions that connect return an
//! [`io::Result`], because a test may mean to see a connection refused. Do not use this module
//! outside tests.
//!
//! Every socket has a read and a write timeout ([`DEFAULT_TIMEOUT`], 30 s), so a manager that
//! never answers fails the test instead of hanging it. The timeout is generous on purpose:
//! tests assert what arrives, never how fast.
//!
//! # Example
//!
//! ```no_run
//! use agora_proto::testing::RawClient;
//! use rmpv::Value;
//!
//! let mut c = RawClient::connect_unix("/tmp/agora/manager.sock".as_ref()).unwrap();
//! c.authenticate(b"the authkey");
//! let id = c.create("dict", None, vec![]);
//! c.ok("dict.setitem", vec![id.into(), "k".into(), 1.into()]);
//! assert_eq!(c.fail("dict.getitem", vec![id.into(), "missing".into()]), "KeyError");
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use rmpv::Value;
use sha2::Sha256;

use crate::{FrameDecoder, Limits};

/// How long a [`RawClient`] waits for the manager to answer (or to take its bytes) before the
/// test fails. Generous, so that a slow machine does not fail a test that checks behaviour.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// The MessagePack encoding of `v`, as `rmpv` writes it (every int and str in its shortest
/// form). Tests compare it with the raw bytes a call returns.
pub fn enc(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    crate::encode::value(&mut out, v);
    out
}

/// Decodes exactly one value from `raw`.
///
/// # Panics
///
/// When `raw` is not one whole MessagePack value, or has bytes after it: the manager sent
/// something other than what the protocol promises.
pub fn dec(raw: &[u8]) -> Value {
    let mut rest = raw;
    let v = rmpv::decode::read_value(&mut rest)
        .unwrap_or_else(|e| panic!("not a MessagePack value ({e}): {raw:02x?}"));
    assert!(rest.is_empty(), "{} trailing bytes after {v}", rest.len());
    v
}

/// `[0, msgid, method, params]`, with params given as values. For requests built from ordinary
/// values; [`request_raw`] writes params whose encoding matters.
pub fn request(msgid: u32, method: &str, params: Vec<Value>) -> Vec<u8> {
    enc(&Value::Array(vec![
        Value::from(crate::REQUEST),
        Value::from(msgid),
        Value::from(method),
        Value::Array(params),
    ]))
}

/// `[0, msgid, method, params]`, with each param given as its encoded bytes and copied
/// verbatim. This is how a test sends an encoding `rmpv` would never write (an int as int64,
/// a short str as str8) or bytes that are not a valid value at all.
pub fn request_raw(msgid: u32, method: &str, params: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    crate::encode::request(&mut out, msgid, method, params);
    out
}

/// HMAC-SHA256 of `message` under `key`: the digest `auth` expects for a challenge. Public so
/// that tests can also send a wrong one (another key, a truncated digest).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// The challenge in a decoded `hello` result, for tests that send `hello` by hand (byte by
/// byte, or with a bin method name) and still have to authenticate. [`RawClient::hello`]
/// checks the whole result instead.
///
/// # Panics
///
/// When `hello` is not a map with a bin `"challenge"`.
pub fn challenge_of(hello: &Value) -> Vec<u8> {
    let found = hello
        .as_map()
        .unwrap_or_else(|| panic!("hello answers a map, got {hello}"))
        .iter()
        .find(|(k, _)| k.as_str() == Some("challenge"));
    match found {
        Some((_, Value::Binary(c))) => c.clone(),
        other => panic!("no bin challenge in {hello}: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// An error the manager answered: the `[name, message]` pair of a response. Tests mostly
/// assert the name (`KeyError`, `LimitError` ...), which is the contract; the message is for
/// people, but some tests check that it names the culprit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// The error's name, one of those in `PROTOCOL.md` section 5.
    pub name: String,
    /// The human-readable message (never empty).
    pub message: String,
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl std::error::Error for Remote {}

/// One response, as it came: the msgid it answers and, on success, the result's raw bytes.
/// Keeping the bytes lets a test check that the manager hands a value back exactly as it was
/// stored; [`dec`] turns them into a value when that is all that matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The msgid of the request this answers.
    pub msgid: u32,
    /// The encoded result, or the error the manager reported.
    pub result: Result<Vec<u8>, Remote>,
}

/// Checks that `frame` is a well-formed response `[1, msgid, error, result]` and splits it.
///
/// Well-formed means what `PROTOCOL.md` section 1 says: four elements, type 1, a msgid that
/// fits a u32, and either a nil error or an error pair `[name, message]` of two strs (the
/// message not empty) with a nil result.
///
/// # Panics
///
/// When the frame is anything else, a notification included: a test that expects one reads
/// it with [`RawClient::frame`].
pub fn parse_response(frame: &[u8]) -> Response {
    let whole = dec(frame);
    let items = whole
        .as_array()
        .unwrap_or_else(|| panic!("a response is an array, got {whole}"));
    assert_eq!(items.len(), 4, "a response has 4 elements: {whole}");
    assert_eq!(
        items[0],
        Value::from(crate::RESPONSE),
        "not a response: {whole}"
    );
    let msgid = items[1]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or_else(|| panic!("msgid {} is not a u32", items[1]));
    // The result keeps its bytes as sent: it is what follows the first three elements.
    let result = result_bytes(frame);
    let error = &items[2];
    if error.is_nil() {
        return Response {
            msgid,
            result: Ok(result),
        };
    }
    assert!(
        items[3].is_nil(),
        "an error response has a nil result: {whole}"
    );
    let pair = error
        .as_array()
        .unwrap_or_else(|| panic!("error is [name, message], got {error}"));
    assert_eq!(pair.len(), 2, "error is [name, message]: {error}");
    let name = pair[0]
        .as_str()
        .unwrap_or_else(|| panic!("error name is a str: {error}"))
        .to_owned();
    let message = pair[1]
        .as_str()
        .unwrap_or_else(|| panic!("error message is a str: {error}"))
        .to_owned();
    assert!(!message.is_empty(), "{name} comes with a message");
    Response {
        msgid,
        result: Err(Remote { name, message }),
    }
}

/// The raw bytes of the fourth element of a frame already known to be a four-element array.
fn result_bytes(frame: &[u8]) -> Vec<u8> {
    let mut rest = frame;
    // None of these reads can fail: the caller decoded the whole frame.
    let _ = rmp::decode::read_array_len(&mut rest);
    for _ in 0..3 {
        let _ = rmpv::decode::read_value(&mut rest);
    }
    rest.to_vec()
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// The socket under a [`RawClient`]: the manager listens on both kinds.
#[derive(Debug)]
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn set_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Unix(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
        }
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

/// One connection to a manager, spoken to in raw MessagePack-RPC.
///
/// It keeps a [`FrameDecoder`] without limits (the manager's replies are what is under test,
/// not the client's patience) and a msgid counter starting at 1, so that tests need not pick
/// msgids unless the msgid is the point. Calls one at a time go through [`RawClient::call`]
/// and its shorthands; pipelining is [`RawClient::send`] of many requests, then
/// [`RawClient::response`] once per request.
///
/// Panics as the [module](self) says.
#[derive(Debug)]
pub struct RawClient {
    stream: Stream,
    decoder: FrameDecoder,
    next_msgid: u32,
}

impl RawClient {
    /// Connects to an address in the protocol's own spelling, `unix:PATH` or `tcp:HOST:PORT`,
    /// as the manager prints it on its ready line. Tests of the `agora-manager` binary get
    /// their addresses that way. The connection is not authenticated.
    pub fn connect(address: &str) -> io::Result<RawClient> {
        if let Some(path) = address.strip_prefix("unix:") {
            RawClient::connect_unix(Path::new(path))
        } else if let Some(host_port) = address.strip_prefix("tcp:") {
            let stream = TcpStream::connect(host_port)?;
            RawClient::from_tcp_stream(stream)
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not an agora address (unix:PATH or tcp:HOST:PORT): {address:?}"),
            ))
        }
    }

    /// Connects to the manager's Unix socket at `path`. Not authenticated: tests of the
    /// handshake start here; others call [`RawClient::authenticate`] next.
    pub fn connect_unix(path: &Path) -> io::Result<RawClient> {
        RawClient::from_unix_stream(UnixStream::connect(path)?)
    }

    /// Connects to the manager over TCP, with `TCP_NODELAY` so that small requests go out at
    /// once. Not authenticated.
    pub fn connect_tcp(addr: SocketAddr) -> io::Result<RawClient> {
        RawClient::from_tcp_stream(TcpStream::connect(addr)?)
    }

    /// Wraps a Unix stream connected some other way, typically one end of
    /// [`UnixStream::pair`] whose other end a test hands straight to the manager's session
    /// code, with no listener in between. Sets the timeouts.
    pub fn from_unix_stream(stream: UnixStream) -> io::Result<RawClient> {
        RawClient::new(Stream::Unix(stream))
    }

    /// Wraps a TCP stream connected some other way. Sets the timeouts and `TCP_NODELAY`.
    pub fn from_tcp_stream(stream: TcpStream) -> io::Result<RawClient> {
        stream.set_nodelay(true)?;
        RawClient::new(Stream::Tcp(stream))
    }

    fn new(stream: Stream) -> io::Result<RawClient> {
        stream.set_timeout(DEFAULT_TIMEOUT)?;
        Ok(RawClient {
            stream,
            decoder: FrameDecoder::new(Limits::UNLIMITED),
            next_msgid: 1,
        })
    }

    /// Changes the read and write timeout from [`DEFAULT_TIMEOUT`]: shorter for a test that
    /// expects silence and should not wait 30 s to see it, longer for a deliberately slow one.
    pub fn set_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.stream.set_timeout(timeout)
    }

    /// Calls `hello` and checks its whole result (protocol 1, server `agora-manager`, a
    /// non-empty version, a 32-byte bin challenge, a run id and its start time); gives the
    /// challenge, so that a test can
    /// answer it rightly or wrongly.
    pub fn hello(&mut self) -> Vec<u8> {
        let reply = self.ok("hello", vec![]);
        let fields: HashMap<String, Value> = reply
            .as_map()
            .unwrap_or_else(|| panic!("hello answers a map, got {reply}"))
            .iter()
            .map(|(k, v)| {
                let k = k
                    .as_str()
                    .unwrap_or_else(|| panic!("hello's keys are strs: {reply}"));
                (k.to_owned(), v.clone())
            })
            .collect();
        assert_eq!(
            fields.get("protocol"),
            Some(&Value::from(crate::PROTOCOL_VERSION)),
            "{reply}"
        );
        assert_eq!(
            fields.get("server"),
            Some(&Value::from("agora-manager")),
            "{reply}"
        );
        let version = fields
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("the version is a str: {reply}"));
        assert!(!version.is_empty(), "an empty version: {reply}");
        let run = fields
            .get("run")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("the run is a str: {reply}"));
        assert_eq!(run.len(), 36, "the run is a hyphenated uuid: {reply}");
        assert!(
            fields.get("started").and_then(Value::as_u64).is_some(),
            "started is an int: {reply}"
        );
        match fields.get("challenge") {
            Some(Value::Binary(c)) => {
                assert_eq!(c.len(), 32, "the challenge has 32 bytes: {reply}");
                c.clone()
            }
            other => panic!("the challenge must be a bin, got {other:?}"),
        }
    }

    /// `hello`, then `auth` with the digest of the challenge under `authkey`, which must
    /// answer `true`. The way into every test that is not about the handshake.
    pub fn authenticate(&mut self, authkey: &[u8]) {
        let challenge = self.hello();
        let digest = hmac_sha256(authkey, &challenge);
        let answer = self.ok("auth", vec![Value::Binary(digest)]);
        assert_eq!(answer, Value::Boolean(true), "auth answers true");
    }

    /// A fresh msgid (1, 2, 3 ...), for a test that builds its own requests but must not reuse
    /// one that [`RawClient::call`] may still be waiting on.
    pub fn msgid(&mut self) -> u32 {
        let id = self.next_msgid;
        self.next_msgid = self.next_msgid.wrapping_add(1);
        id
    }

    /// Writes `bytes` as they are: one request, many (pipelined), a part of one, or garbage.
    ///
    /// # Panics
    ///
    /// When the write fails; [`RawClient::try_send`] is for a test in which the manager may
    /// close the connection while the bytes are still going out.
    pub fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send(bytes) {
            panic!("could not write to the manager: {e}");
        }
    }

    /// Writes `bytes`, giving back the error if the write fails. For a message the manager is
    /// expected to refuse before reading it all (over a size limit): it may close the
    /// connection while the rest is being written, and the test then reads what was answered.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// The next whole message from the manager, as raw bytes; `None` once the manager has
    /// closed the connection. Tests that expect a close, or a notification rather than a
    /// response, read with this.
    ///
    /// # Panics
    ///
    /// When the manager sends bytes that are not MessagePack, closes in the middle of a
    /// message, or says nothing within the timeout.
    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => return Some(frame.to_vec()),
                Ok(None) => {}
                Err(e) => panic!("the manager sent invalid MessagePack: {e}"),
            }
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    assert_eq!(self.decoder.buffered(), 0, "connection closed mid-message");
                    return None;
                }
                Ok(n) => self.decoder.extend(&buf[..n]),
                // A close with unread input can surface as a reset rather than end-of-file.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("no answer from the manager: {e}"),
            }
        }
    }

    /// The next whole message, which must come: as [`RawClient::next_frame`], panicking when
    /// the manager closes the connection instead.
    pub fn frame(&mut self) -> Vec<u8> {
        self.next_frame()
            .expect("the manager closed the connection instead of answering")
    }

    /// The next message, which must be a well-formed response (see [`parse_response`]). After
    /// pipelined or parked requests this is how a test sees which msgid is answered first.
    pub fn response(&mut self) -> Response {
        parse_response(&self.frame())
    }

    /// The next `n` responses, by msgid, for a batch of pipelined requests whose answers may
    /// come in any order.
    ///
    /// # Panics
    ///
    /// When a msgid is answered twice, besides what [`RawClient::response`] panics on.
    pub fn responses_by_msgid(&mut self, n: usize) -> HashMap<u32, Result<Vec<u8>, Remote>> {
        let mut got = HashMap::new();
        for _ in 0..n {
            let r = self.response();
            assert!(
                got.insert(r.msgid, r.result).is_none(),
                "msgid {} answered twice",
                r.msgid
            );
        }
        got
    }

    /// Calls `method` and waits for its response, whose result comes back decoded. The
    /// answer must be to this call: a test that has other requests in flight reads with
    /// [`RawClient::response`] instead.
    pub fn call(&mut self, method: &str, params: Vec<Value>) -> Result<Value, Remote> {
        let msgid = self.msgid();
        self.send(&request(msgid, method, params));
        self.answer_to(msgid).map(|raw| dec(&raw))
    }

    /// Calls `method` with each param given as its encoded bytes (see [`request_raw`]); the
    /// result comes back as the bytes the manager sent, so that a test can check an encoding
    /// was kept.
    pub fn call_raw(&mut self, method: &str, params: &[&[u8]]) -> Result<Vec<u8>, Remote> {
        let msgid = self.msgid();
        self.send(&request_raw(msgid, method, params));
        self.answer_to(msgid)
    }

    fn answer_to(&mut self, msgid: u32) -> Result<Vec<u8>, Remote> {
        let r = self.response();
        assert_eq!(
            r.msgid, msgid,
            "a response to another request ({}) where {msgid} was expected",
            r.msgid
        );
        r.result
    }

    /// Calls a method that must succeed, and gives its result.
    ///
    /// # Panics
    ///
    /// On an error reply, showing the method, the params and the error.
    pub fn ok(&mut self, method: &str, params: Vec<Value>) -> Value {
        let shown = Value::Array(params.clone()).to_string();
        match self.call(method, params) {
            Ok(v) => v,
            Err(e) => panic!("{method} {shown} failed: {e}"),
        }
    }

    /// Calls a method that must fail, and gives the error's name, which is what the protocol
    /// promises (the message is for people).
    ///
    /// # Panics
    ///
    /// When the call succeeds, showing what it answered.
    pub fn fail(&mut self, method: &str, params: Vec<Value>) -> String {
        let shown = Value::Array(params.clone()).to_string();
        match self.call(method, params) {
            Ok(v) => panic!("{method} {shown} succeeded with {v}, expected an error"),
            Err(e) => e.name,
        }
    }

    /// Sends a call that should wait (an `acquire` of a held lock, a `get` on an empty
    /// queue ...) with a `ping` behind it in the same write, and checks that the ping is
    /// answered first. Calls on one connection are handled in order, so that proves the call
    /// was parked, not still on its way. Gives the call's msgid, for the test to match its
    /// answer later with [`RawClient::response`].
    ///
    /// # Panics
    ///
    /// When the first answer is not the ping's: the call was answered instead of parked.
    pub fn park(&mut self, method: &str, params: Vec<Value>) -> u32 {
        let (call, ping) = (self.msgid(), self.msgid());
        let mut bytes = request(call, method, params);
        bytes.extend(request(ping, "ping", vec![]));
        self.send(&bytes);
        let first = self.response();
        assert_eq!(
            first.msgid, ping,
            "{method} was answered, not parked: {first:?}"
        );
        call
    }

    /// `create [kind, name, args...]`, which must succeed; gives the new (or, with a name,
    /// the existing) object's id.
    pub fn create(&mut self, kind: &str, name: Option<&str>, args: Vec<Value>) -> u64 {
        let mut params = vec![Value::from(kind), name.map_or(Value::Nil, Value::from)];
        params.extend(args);
        let id = self.ok("create", params);
        id.as_u64()
            .unwrap_or_else(|| panic!("create answers an id, got {id}"))
    }

    /// Asserts that the manager closes the connection without sending anything more, as it
    /// must after a wrong digest, a limit exceeded, garbage, or when it stops.
    pub fn expect_closed(&mut self) {
        if let Some(frame) = self.next_frame() {
            panic!(
                "expected the connection to close, got {}",
                rmpv::decode::read_value(&mut frame.as_slice())
                    .map_or_else(|_| format!("{frame:02x?}"), |v| v.to_string())
            );
        }
    }

    /// Shuts down the reading half of the socket: the connection stays open, requests still
    /// go out, but the manager's next write to it fails (`EPIPE`). This is how a test makes an
    /// answer undeliverable (a lock granted to a client that cannot be told) without closing
    /// the connection, which the manager would notice by other means.
    pub fn stop_reading(&self) {
        if let Err(e) = self.stream.shutdown(Shutdown::Read) {
            panic!("could not shut down the reading half: {e}");
        }
    }

    /// Closes the writing half: the manager reads end-of-file (over TCP, once the FIN
    /// arrives) while this side can still read what the manager sends, and then its close.
    pub fn shut_down_writes(&self) {
        if let Err(e) = self.stream.shutdown(Shutdown::Write) {
            panic!("could not shut down the writing half: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    /// PROTOCOL.md section 7.1: `hello` with msgid 1.
    #[test]
    fn request_writes_the_documented_bytes() {
        let hello = [0x94, 0x00, 0x01, 0xa5, b'h', b'e', b'l', b'l', b'o', 0x90];
        assert_eq!(request(1, "hello", vec![]), hello);
        assert_eq!(request_raw(1, "hello", &[]), hello);
        // Section 7.4: params copied verbatim.
        let setitem = request_raw(4, "dict.setitem", &[&[0x01], b"\xa5alice", &[0x03]]);
        assert_eq!(
            setitem,
            request(4, "dict.setitem", vec![1.into(), "alice".into(), 3.into()])
        );
        // Raw params are not re-encoded: an int64 stays an int64.
        let wide = request_raw(5, "ping", &[&[0xd3, 0, 0, 0, 0, 0, 0, 0, 5]]);
        assert!(wide.ends_with(&[0x91, 0xd3, 0, 0, 0, 0, 0, 0, 0, 5]));
    }

    /// PROTOCOL.md section 7.2.
    #[test]
    fn hmac_sha256_gives_the_documented_digest() {
        let key: Vec<u8> = (0..32).collect();
        let challenge = hex("7fc34ab7f44d6c421fd731f196c7a7295269f0f3398922f13ff9c9f352ae1fa4");
        let digest = hex("71987ea38a09f329c2ad4dd75bb437489515ea86daa66fa86ab6d81bb11ee088");
        assert_eq!(hmac_sha256(&key, &challenge), digest);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn parse_response_keeps_the_result_bytes_and_splits_errors() {
        // The result is the manager's bytes, not a re-encoding: a 9 sent as uint32 stays a
        // uint32, where encoding the decoded value would give the fixint 0x09.
        let ok = [0x94, 0x01, 0x07, 0xc0, 0xce, 0, 0, 0, 9];
        assert_eq!(
            parse_response(&ok),
            Response {
                msgid: 7,
                result: Ok(vec![0xce, 0, 0, 0, 9])
            }
        );
        // PROTOCOL.md section 7.6.
        let err = b"\x94\x01\x06\x92\xa8KeyError\xa5\"bob\"\xc0";
        let r = parse_response(err);
        assert_eq!(r.msgid, 6);
        let e = r.result.unwrap_err();
        assert_eq!(
            (e.name.as_str(), e.message.as_str()),
            ("KeyError", "\"bob\"")
        );
        assert_eq!(e.to_string(), "KeyError: \"bob\"");
        // A wide array header and a wide msgid are still a response.
        let wide = [0xdc, 0x00, 0x04, 0x01, 0xce, 0, 0, 0, 9, 0xc0, 0xc3];
        assert_eq!(parse_response(&wide).result, Ok(vec![0xc3]));
    }

    #[test]
    #[should_panic(expected = "not a response")]
    fn parse_response_refuses_a_request() {
        parse_response(&request(1, "ping", vec![]));
    }

    #[test]
    #[should_panic(expected = "an error response has a nil result")]
    fn parse_response_refuses_an_error_with_a_result() {
        parse_response(b"\x94\x01\x01\x92\xa1X\xa1m\x01");
    }

    #[test]
    #[should_panic(expected = "comes with a message")]
    fn parse_response_refuses_an_error_without_a_message() {
        parse_response(b"\x94\x01\x01\x92\xa1X\xa0\xc0");
    }

    #[test]
    #[should_panic(expected = "trailing bytes")]
    fn dec_refuses_trailing_bytes() {
        dec(&[0x01, 0x02]);
    }

    #[test]
    fn connect_refuses_an_address_of_no_known_kind() {
        let err = RawClient::connect("udp:127.0.0.1:1").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    /// Both spellings of an address reach a listener, and the stream under the client is the
    /// one connected there: what the listener's side writes is what the client reads.
    #[test]
    fn connect_takes_unix_and_tcp_addresses() {
        let dir = std::env::temp_dir().join(format!("agora-rawclient-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp_addr = tcp.local_addr().unwrap();
        let pong = b"\x94\x01\x01\xc0\xa4pong";
        let clients = [
            RawClient::connect(&format!("unix:{}", path.display())).unwrap(),
            RawClient::connect(&format!("tcp:{tcp_addr}")).unwrap(),
            RawClient::connect_tcp(tcp_addr).unwrap(),
        ];
        unix.accept().unwrap().0.write_all(pong).unwrap();
        tcp.accept().unwrap().0.write_all(pong).unwrap();
        tcp.accept().unwrap().0.write_all(pong).unwrap();
        for mut c in clients {
            assert_eq!(c.response().result, Ok(b"\xa4pong".to_vec()));
            c.expect_closed();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A scripted peer on the other end of a socket pair: for each step, reads the bytes
    /// expected, checks them and writes the reply; then closes.
    fn peer(steps: Vec<(Vec<u8>, Vec<u8>)>) -> (RawClient, thread::JoinHandle<()>) {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let handle = thread::spawn(move || {
            for (expect, reply) in steps {
                let mut got = vec![0; expect.len()];
                theirs.read_exact(&mut got).unwrap();
                assert_eq!(got, expect);
                theirs.write_all(&reply).unwrap();
            }
        });
        (RawClient::from_unix_stream(ours).unwrap(), handle)
    }

    #[test]
    fn call_numbers_requests_and_decodes_the_answer() {
        let (mut c, peer) = peer(vec![
            (
                request(1, "ping", vec![]),
                b"\x94\x01\x01\xc0\xa4pong".to_vec(),
            ),
            (
                request(2, "dict.get", vec![3.into(), "k".into()]),
                b"\x94\x01\x02\x92\xa8KeyError\xa3\"k\"\xc0".to_vec(),
            ),
        ]);
        assert_eq!(c.ok("ping", vec![]), Value::from("pong"));
        assert_eq!(c.fail("dict.get", vec![3.into(), "k".into()]), "KeyError");
        peer.join().unwrap();
        c.expect_closed();
        assert_eq!(c.next_frame(), None);
    }

    #[test]
    #[should_panic(expected = "a response to another request")]
    fn call_refuses_an_answer_to_another_msgid() {
        let (mut c, _peer) = peer(vec![(
            request(1, "ping", vec![]),
            vec![0x94, 0x01, 0x05, 0xc0, 0xc0],
        )]);
        let _ = c.call("ping", vec![]);
    }

    #[test]
    fn park_sees_the_ping_answered_first() {
        let mut expect = request(1, "lock.acquire", vec![1.into()]);
        expect.extend(request(2, "ping", vec![]));
        let reply = [
            &b"\x94\x01\x02\xc0\xa4pong"[..],
            &[0x94, 0x01, 0x01, 0xc0, 0x01],
        ]
        .concat();
        let (mut c, peer) = peer(vec![(expect, reply)]);
        assert_eq!(c.park("lock.acquire", vec![1.into()]), 1);
        assert_eq!(
            c.response(),
            Response {
                msgid: 1,
                result: Ok(vec![0x01])
            }
        );
        peer.join().unwrap();
    }

    #[test]
    #[should_panic(expected = "was answered, not parked")]
    fn park_refuses_a_call_answered_at_once() {
        let mut expect = request(1, "lock.acquire", vec![1.into()]);
        expect.extend(request(2, "ping", vec![]));
        let reply = vec![0x94, 0x01, 0x01, 0xc0, 0x01];
        let (mut c, _peer) = peer(vec![(expect, reply)]);
        c.park("lock.acquire", vec![1.into()]);
    }

    #[test]
    #[should_panic(expected = "closed mid-message")]
    fn a_close_mid_message_is_reported() {
        let (mut c, peer) = peer(vec![(vec![], vec![0x94, 0x01])]);
        peer.join().unwrap();
        c.next_frame();
    }

    #[test]
    #[should_panic(expected = "no answer from the manager")]
    fn silence_fails_at_the_timeout() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let mut c = RawClient::from_unix_stream(ours).unwrap();
        c.set_timeout(Duration::from_millis(50)).unwrap();
        c.next_frame();
    }
}
