//! One authenticated connection to the manager, multiplexed by msgid between the threads of a
//! process.
//!
//! # How calls share the socket (leader/follower)
//!
//! A caller registers a msgid (a pipeline, a run of consecutive ones) in the table of calls in
//! flight ([`InFlight`]), writes its request under the write lock, then waits for the response.
//! There is no background thread: whichever waiting caller finds that nobody is reading becomes
//! the *reader*. The reader reads frames, puts its own responses straight into its own
//! [`Awaited`] (a pipeline's, in one pass) and files the others in the table, waking a call's
//! thread, and that thread only, when its last response is in. Waiting threads sleep in
//! [`std::thread::park`], each on its own wake-up, so a reply costs at most one wake-up, never
//! one per waiting thread. When its own responses have arrived the reader gives up the role
//! and wakes one thread still waiting, which takes it over.
//!
//! A single-threaded caller is always its own reader, so a call costs one write and one read
//! system call and no thread hand-off. A call that the manager parks (a queue `get` with a
//! timeout) only delays the thread that made it: the others keep reading and writing.
//!
//! # Decrefs
//!
//! The reference table ([`Refs`]) gives back what the manager counted for this connection
//! when the last proxy of an object drops. Those `decref` notifications go out in the same
//! write as the next request, so that dropping a proxy never costs a round trip of its own;
//! and when the connection is idle (nothing in flight, nobody writing) the drop writes them
//! at once, as does the last call to complete, so that a process that stops calling does not
//! keep objects alive (see [`Connection::flush_if_idle`]).
//!
//! # Failure
//!
//! When the connection breaks (end of stream, an I/O error, bytes that are not MessagePack),
//! the reason is recorded, the socket is shut down so that a blocked reader wakes up, and every
//! waiter, present and future, gets [`Error::Disconnected`].

use std::io::{self, Read};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_proto::frame::Frame;
use agora_proto::{encode, envelope, Envelope, FrameDecoder, Limits};
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use parking_lot::{Mutex, MutexGuard};
use serde::Deserialize;
use sha2::Sha256;
use tracing::{debug, warn};

use crate::address::{Address, Addresses};
use crate::command::{Args, Reply};
use crate::error::{Error, ErrorName, Result};
use crate::in_flight::{Awaited, Filed, InFlight, Response};
use crate::options::ConnectOptions;
use crate::refs::Refs;
use crate::run::ManagerRun;
use crate::spin;
use crate::tls::TlsStream;

/// Bytes asked of the kernel per read: large enough that a burst of pipelined replies arrives
/// in a few reads, small enough to keep per connection.
const READ_CHUNK: usize = 64 * 1024;

/// Numbers the connections of a process (see [`Connection::serial`]).
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// Detached calls whose replies may be unread at once: past this, a detached call waits for
/// its reply like any other, so that a program releasing many guards without making a call
/// in between never lets unread replies pile up until the manager stops reading it.
const MAX_DETACHED: usize = 1024;

/// A request buffer grown past this is released after use, so that one huge call does not
/// pin its memory for the life of the connection.
const KEEP_WRITE_BUFFER: usize = 1 << 20;

/// A long pipeline's requests are written in pieces of about this many bytes, so that the
/// manager answers the first ones while the rest are encoded (on two CPUs, the client's work
/// and the manager's overlap instead of adding up).
const PIECE_BYTES: usize = 8 * 1024;

/// The socket, Unix, TCP or TLS on TCP. Each is read and written through shared references,
/// so reading and writing need no common lock.
#[derive(Debug)]
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Box<TlsStream>),
}

impl Stream {
    /// Connects to `address`. Gives the deadline of the handshake with the manager, counted
    /// from the moment the socket connected: a TLS handshake is part of it.
    fn connect(
        address: &Address,
        options: &ConnectOptions,
    ) -> Result<(Stream, Option<(Instant, Duration)>)> {
        let deadline = || options.handshake_timeout.map(|t| (Instant::now() + t, t));
        let connect_failed = |e: io::Error| Error::Connect {
            address: address.to_string(),
            source: Arc::new(e),
        };
        match address {
            Address::Unix(path) => open_unix(path, options.connect_timeout)
                .map(|s| (Stream::Unix(s), deadline()))
                .map_err(connect_failed),
            Address::Tcp(host_port) => open_tcp(host_port, options.connect_timeout)
                .map(|s| (Stream::Tcp(s), deadline()))
                .map_err(connect_failed),
            Address::Tls(host_port) => {
                let tcp = open_tcp(host_port, options.connect_timeout).map_err(connect_failed)?;
                let deadline = deadline();
                let ca = options.tls_ca_file.as_deref();
                TlsStream::handshake(tcp, &address.to_string(), host_port, ca, deadline)
                    .map(|s| (Stream::Tls(Box::new(s)), deadline))
            }
        }
    }

    /// Reads what the socket holds: for TLS, encrypted bytes, which [`Connection::fill`]
    /// decrypts.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => (&*s).read(buf),
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Tls(s) => s.socket().read(buf),
        }
    }

    /// Writes all of `buf`. Uses `send` with `MSG_NOSIGNAL`: a manager that went away must
    /// give an error, not a SIGPIPE that kills a process whose `main` is not Rust's (which
    /// would have ignored the signal).
    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Tls(s) => s.write_all(buf),
            _ => send_all(self.raw_fd(), buf),
        }
    }

    fn shutdown(&self) {
        // Failing to shut down a socket that is already broken changes nothing. TLS's
        // close_notify is not sent: the manager learns that its client left from the end of
        // the stream alone, with nothing unread before it (PROTOCOL.md, section 4.1).
        let _ = match self {
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Tls(s) => s.socket().shutdown(Shutdown::Both),
        };
    }

    fn raw_fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.socket().as_raw_fd(),
        }
    }
}

/// The error a failed `hello` is reported as, by both clients: a peer that does not answer
/// it as a manager does is not one. `after_notice` tells whether the peer sent an `error`
/// notification before closing: a manager that refuses the connection (too many) says why.
pub(crate) fn hello_failed(address: &str, e: Error, after_notice: impl FnOnce() -> bool) -> Error {
    let not_a_manager = |reason: String| Error::NotAManager {
        address: address.to_owned(),
        reason,
    };
    match e {
        e @ Error::Disconnected { .. } if after_notice() => e,
        Error::Disconnected { reason, .. } => {
            not_a_manager(if reason.starts_with("the manager closed it (") {
                "it closed the connection without answering hello".to_owned()
            } else {
                format!("it did not answer hello: {reason}")
            })
        }
        Error::Timeout { after, address, .. } => Error::Timeout {
            address,
            what: "hello (a peer that is not an agora manager does not either; \
                   AGORA_HANDSHAKE_TIMEOUT)"
                .into(),
            after,
        },
        Error::Remote { name, message } => not_a_manager(format!(
            "it answered hello with an error: {name}: {message}"
        )),
        e => e,
    }
}

/// The error a failed `auth` is reported as, by both clients: a refused key says where the
/// key came from.
pub(crate) fn auth_failed(address: &str, key_from: &'static str, e: Error) -> Error {
    if !e.is(ErrorName::AuthenticationError) {
        return e;
    }
    Error::Authentication {
        address: address.to_owned(),
        message: match e {
            Error::Remote { message, .. } => message,
            other => other.to_string(),
        },
        key_from,
    }
}

/// Connects to the Unix socket at `path`, within `timeout` if given (see [`connect_unix`]).
/// The async client uses it too, so that both wait alike for room in a full listen queue.
pub(crate) fn open_unix(
    path: &std::path::Path,
    timeout: Option<Duration>,
) -> io::Result<UnixStream> {
    match timeout {
        None => UnixStream::connect(path),
        Some(timeout) => connect_unix(path, timeout),
    }
}

/// Connects to the Unix socket at `path`, waiting at most `timeout` for room in its listen
/// queue. A blocking connect to a listener whose queue is full (a manager that stopped
/// accepting: stopped with SIGSTOP, hung) waits without limit; a non-blocking one fails with
/// `EAGAIN` at once, so it is tried again, with a growing pause, until the time is up.
fn connect_unix(path: &std::path::Path, timeout: Duration) -> io::Result<UnixStream> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};

    let addr = UnixAddr::new(path).map_err(io::Error::from)?;
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(io::Error::from)?;
        match socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => {
                let stream = UnixStream::from(fd);
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(nix::errno::Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(nix::errno::Errno::EAGAIN) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "its listen queue stayed full for {timeout:?} (the manager is not \
                         accepting: stopped or hung?)"
                    ),
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One `send` with `MSG_NOSIGNAL` (see [`Stream::write_all`]).
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `fd` is an open socket and `buf` is valid for its length.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Sends all of `buf` on the socket `fd` (see [`Stream::write_all`]).
pub(crate) fn send_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match send(fd, buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Opens a TCP connection to `host_port` (within `timeout`, if given), with Nagle off.
fn open_tcp(host_port: &str, timeout: Option<Duration>) -> io::Result<TcpStream> {
    let s = match timeout {
        None => TcpStream::connect(host_port)?,
        Some(timeout) => connect_tcp(host_port, timeout)?,
    };
    // Requests are small and latency-bound: never wait to coalesce them.
    s.set_nodelay(true)?;
    Ok(s)
}

/// Connects to the first address `host_port` resolves to that accepts within `timeout`.
fn connect_tcp(host_port: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host resolves to no address");
    for addr in host_port.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                last = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{addr} did not accept within {timeout:?}"),
                );
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Reads the `[name, message]` error field; anything else is kept as text rather than lost.
pub(crate) fn remote_error(raw: &[u8]) -> Error {
    let value = agora_proto::value::decode(raw).unwrap_or(rmpv::Value::Nil);
    if let rmpv::Value::Array(items) = &value {
        if let [name, message] = items.as_slice() {
            if let (Some(name), Some(message)) = (name.as_str(), message.as_str()) {
                return Error::remote(name, message);
            }
        }
    }
    Error::remote("UnknownError", value.to_string())
}

/// What the threads sharing the connection coordinate on.
struct State {
    /// Every call sent and not yet collected, and those sent by
    /// [`Connection::send_detached`], whose replies nobody waits for: they are dropped when
    /// read (an error is logged).
    calls: InFlight,
    /// True while some thread holds the reader role.
    reading: bool,
    /// Why the connection is unusable, once it is.
    broken: Option<String>,
    /// The manager sent an `error` notification before closing it.
    after_notice: bool,
}

/// When a call must have its reply.
struct Deadline<'a> {
    at: Instant,
    /// The duration the deadline was set from, for messages.
    after: Duration,
    method: &'a str,
}

/// Waits until `fd` is readable (or closed) or `at` passes: true when it is readable.
fn readable_by(fd: RawFd, at: Instant) -> bool {
    loop {
        let left = at.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // Round up, so that a deadline a fraction of a millisecond away is not a busy loop.
        let ms = if left > Duration::from_millis(u64::from(ms as u32)) {
            ms + 1
        } else {
            ms
        };
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        match n {
            0 if Instant::now() >= at => return false,
            0 => continue,
            n if n > 0 => return true,
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
            // A poll that cannot poll: let the read tell what is wrong.
            _ => return true,
        }
    }
}

/// The reader role's tools: only the thread holding the role touches them.
struct Reader {
    decoder: FrameDecoder,
    buf: Box<[u8]>,
    /// The text of an `error` notification, which the manager sends just before closing.
    notice: Option<String>,
    /// When to poll for replies before sleeping in `read`: for quick calls, and for calls
    /// the manager may park.
    backoff: [spin::Backoff; 2],
}

/// An authenticated connection. See the module documentation for how threads share it.
pub(crate) struct Connection {
    stream: Stream,
    address: String,
    /// The process that opened the socket; any other process must not use it.
    pid: u32,
    writer: Mutex<Vec<u8>>,
    reader: Mutex<Reader>,
    state: Mutex<State>,
    /// The run of the manager, as its `hello` reported it.
    run: ManagerRun,
    /// [`ManagerRun::key`] of `run`.
    run_key: u64,
    /// See [`Connection::serial`].
    serial: u64,
    /// Set once `state.broken` is: read without the lock by [`Connection::is_live`].
    broken: AtomicBool,
    /// What the manager accepts of an authenticated connection, as its `hello` reported it
    /// (the defaults for managers that do not): requests over them are refused unsent.
    limits: Limits,
    /// The client's reference table, whose decrefs this connection writes; set once the
    /// connection is authenticated (the manager ignores notifications before).
    refs: Option<Arc<Refs>>,
}

/// The `hello` result.
#[derive(Deserialize)]
struct Hello {
    protocol: u32,
    challenge: serde_bytes::ByteBuf,
    /// Absent from managers older than run ids.
    run: Option<String>,
    started: Option<u64>,
    /// Absent from managers older than it: they have the default limits unless configured.
    limits: Option<HelloLimits>,
}

/// The `limits` of the `hello` result.
#[derive(Deserialize)]
struct HelloLimits {
    max_message_bytes: u64,
    max_depth: u64,
    max_container_len: u64,
}

impl From<HelloLimits> for Limits {
    fn from(l: HelloLimits) -> Limits {
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Limits {
            max_message_bytes: size(l.max_message_bytes),
            max_depth: size(l.max_depth),
            max_container_len: size(l.max_container_len),
        }
    }
}

impl Connection {
    /// Connects to the manager at `address` and authenticates with `authkey`.
    pub(crate) fn open(
        address: &Address,
        authkey: &[u8],
        key_from: &'static str,
        options: &ConnectOptions,
    ) -> Result<Connection> {
        if authkey.is_empty() {
            return Err(Error::EmptyAuthkey { key_from });
        }
        let (stream, deadline) = Stream::connect(address, options)?;
        let mut conn = Connection::new(stream, address.to_string());
        let (run, limits) = conn.authenticate(authkey, key_from, deadline)?;
        conn.run_key = run.key();
        conn.run = run;
        conn.limits = limits;
        crate::command::learn_max_message_bytes(limits.max_message_bytes);
        debug!(%address, "connected to the agora manager");
        Ok(conn)
    }

    /// Connects to the first of `addresses` that answers, trying them in turn from the one at
    /// `start` (and round to those before it), each within the options' time limits. Returns
    /// the index of the address connected to. When none answers: the error of the only
    /// address, or [`Error::NoManager`] with every address's.
    pub(crate) fn open_any(
        addresses: &Addresses,
        start: usize,
        authkey: &[u8],
        key_from: &'static str,
        options: &ConnectOptions,
    ) -> Result<(usize, Connection)> {
        let list = addresses.as_slice();
        let mut failures = Vec::new();
        for step in 0..list.len() {
            let at = (start + step) % list.len();
            match Connection::open(&list[at], authkey, key_from, options) {
                Ok(conn) => return Ok((at, conn)),
                // The same at every address: no point trying the others.
                Err(e @ Error::EmptyAuthkey { .. }) => return Err(e),
                Err(e) => {
                    debug!(address = %list[at], error = %e, "no agora manager answered there");
                    failures.push(e);
                }
            }
        }
        match failures.len() {
            1 => Err(failures.remove(0)),
            _ => Err(Error::NoManager { failures }),
        }
    }

    fn new(stream: Stream, address: String) -> Connection {
        // From now on a forked child gets `/dev/null` in place of this socket.
        crate::atfork::register(stream.raw_fd());
        Connection {
            stream,
            address,
            pid: crate::atfork::current_pid(),
            writer: Mutex::new(Vec::with_capacity(8 * 1024)),
            reader: Mutex::new(Reader {
                // The client trusts the manager it authenticated: replies are as large as the
                // values the manager stores, which its own limits bound.
                decoder: FrameDecoder::new(Limits::UNLIMITED),
                buf: vec![0; READ_CHUNK].into_boxed_slice(),
                notice: None,
                backoff: Default::default(),
            }),
            state: Mutex::new(State {
                calls: InFlight::default(),
                reading: false,
                broken: None,
                after_notice: false,
            }),
            run: ManagerRun {
                id: String::new(),
                started: 0,
            },
            run_key: 0,
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            broken: AtomicBool::new(false),
            // Until `hello` tells: the handshake's own requests are tiny.
            limits: Limits::default(),
            refs: None,
        }
    }

    /// From now on, the decrefs of `refs` go out on this connection.
    pub(crate) fn set_refs(&mut self, refs: Arc<Refs>) {
        self.refs = Some(refs);
    }

    /// The run of the manager this connection reaches.
    pub(crate) fn run(&self) -> &ManagerRun {
        &self.run
    }

    /// `hello`, then `auth` with HMAC-SHA256(authkey, challenge). Gives the manager's run and
    /// limits.
    fn authenticate(
        &self,
        authkey: &[u8],
        key_from: &'static str,
        deadline: Option<(Instant, Duration)>,
    ) -> Result<(ManagerRun, Limits)> {
        let hello = self
            .call_until("hello", &Args::default(), deadline)
            .map_err(|e| hello_failed(&self.address, e, || self.closed_after_notice()))?;
        let (run, limits, challenge) = read_hello(&self.address, &hello)?;
        let mut args = Args::default();
        args.bin(&digest(authkey, &challenge));
        self.call_until("auth", &args, deadline)
            .map_err(|e| auth_failed(&self.address, key_from, e))?;
        Ok((run, limits))
    }

    /// The process that opened this connection.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// True when this process may use the connection: it opened it, and it has not broken.
    /// One relaxed load and a comparison: every call checks it.
    pub(crate) fn is_live(&self) -> bool {
        self.pid == crate::atfork::current_pid() && !self.broken.load(Ordering::Relaxed)
    }

    /// Tells this connection apart from every other of the process, for the reference
    /// table: what the manager counted for one connection is not counted for the next.
    pub(crate) fn serial(&self) -> u64 {
        self.serial
    }

    /// Where a reply read on this connection comes from, for the reference table.
    pub(crate) fn receipt(&self) -> crate::refs::Receipt {
        crate::refs::Receipt {
            serial: self.serial,
            run: self.run_key,
        }
    }

    /// The run of the manager as a number ([`ManagerRun::key`]): what proxies and commands
    /// are bound to.
    pub(crate) fn run_key(&self) -> u64 {
        self.run_key
    }

    /// True when the connection broke after the manager sent an `error` notification.
    fn closed_after_notice(&self) -> bool {
        self.state.lock().after_notice
    }

    /// One call: sends it and waits for its reply.
    #[cfg(test)]
    pub(crate) fn call(&self, method: &str, args: &Args) -> Reply {
        self.call_until(method, args, None)
    }

    /// One call, failing with [`Error::Timeout`] (and closing the connection) if no reply has
    /// come by the deadline `(instant, the duration it was set from)`.
    pub(crate) fn call_until(
        &self,
        method: &str,
        args: &Args,
        deadline: Option<(Instant, Duration)>,
    ) -> Reply {
        let id = self.register(1)?;
        if let Err(e) = self.send_one(id, method, args) {
            self.state.lock().calls.finish(id);
            return Err(e);
        }
        let until = deadline.map(|(at, after)| Deadline { at, after, method });
        let mut awaited = Awaited::new(id, 1);
        let waited = self.wait(
            &mut awaited,
            agora_proto::methods::request_may_wait(method, args.bytes()),
            until.as_ref(),
        );
        let reply = waited.and_then(|()| {
            let reply = awaited.into_reply();
            reply.unwrap_or_else(|| Err(crate::error::missing_reply()))
        });
        if let Err(e) = &reply {
            self.note_shutdown(e);
        }
        self.after_call();
        reply
    }

    /// Registers a call of `count` consecutive msgids, waited for by this thread; gives the
    /// first.
    fn register(&self, count: u32) -> Result<u32> {
        let mut state = self.state.lock();
        if let Some(reason) = &state.broken {
            return Err(self.disconnected(reason));
        }
        Ok(state.calls.register(count))
    }

    /// Sends a call without waiting for its reply: for a release from a guard's `Drop`, whose
    /// caller goes on at once (the lock passes to the next waiter while it does). The
    /// manager runs the calls of a connection in the order they arrive, so every later call
    /// of this process comes after it. The reply is read with the next call's, and dropped
    /// (an error reply is logged). Fails only when the request could not be sent.
    pub(crate) fn send_detached(&self, method: &str, args: &Args) -> Result<()> {
        let id = {
            let mut state = self.state.lock();
            if let Some(reason) = &state.broken {
                return Err(self.disconnected(reason));
            }
            (state.calls.detached() < MAX_DETACHED).then(|| state.calls.register_detached())
        };
        let Some(id) = id else {
            return self.call_until(method, args, None).map(drop);
        };
        if let Err(e) = self.send_one(id, method, args) {
            self.state.lock().calls.unregister_detached(id);
            return Err(e);
        }
        Ok(())
    }

    /// Many calls in one write, then every reply, in order. Fails as a whole only when the
    /// connection fails; each call's own error is in its reply.
    ///
    /// The calls take consecutive msgids, so that the thread reading the replies puts them
    /// straight into their places.
    pub(crate) fn call_many(&self, calls: &[(&str, &Args)]) -> Result<Vec<Reply>> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let count = u32::try_from(calls.len())
            .map_err(|_| Error::Usage("a pipeline of more than 2^32 calls".into()))?;
        let first = self.register(count)?;
        let mut awaited = Awaited::new(first, calls.len());
        // A call over the manager's limits fails alone, unsent.
        let mut refused = 0;
        let sent = self.send_pieces(|out, flush| {
            for (offset, (method, args)) in calls.iter().enumerate() {
                let id = first.wrapping_add(offset as u32);
                if let Err(e) = self.write_checked(out, id, method, args) {
                    awaited.refuse(offset, e);
                    refused += 1;
                }
                if out.len() >= PIECE_BYTES {
                    flush(out)?;
                }
            }
            Ok(())
        });
        if refused > 0 {
            self.state.lock().calls.refused(first, refused);
        }
        let waited = match sent {
            Ok(()) => {
                let may_wait = calls
                    .iter()
                    .any(|(m, a)| agora_proto::methods::request_may_wait(m, a.bytes()));
                self.wait(&mut awaited, may_wait, None)
            }
            Err(e) => {
                self.state.lock().calls.finish(first);
                Err(e)
            }
        };
        self.after_call();
        waited?;
        let replies: Vec<Reply> = awaited
            .into_replies()
            .into_iter()
            .map(|reply| reply.unwrap_or_else(|| Err(crate::error::missing_reply())))
            .collect();
        for e in replies.iter().filter_map(|r| r.as_ref().err()) {
            self.note_shutdown(e);
        }
        Ok(replies)
    }

    /// A `ShutdownError` reply means the manager is closing the connection: it is marked
    /// broken now, so that the next call reconnects (or finds no manager) rather than
    /// writing into a socket about to close.
    fn note_shutdown(&self, e: &Error) {
        if e.is(ErrorName::ShutdownError) {
            self.fail("the manager shut down".to_owned());
        }
    }

    /// A call is complete: if decrefs became due while it was in flight and it was the last
    /// one, the connection is idle now and they go out (one atomic load otherwise).
    fn after_call(&self) {
        if self.refs.as_ref().is_some_and(|refs| refs.has_pending()) {
            self.flush_if_idle();
        }
    }

    /// Writes the due decrefs now, alone, if the connection is idle: no call in flight and no
    /// thread writing. Otherwise they wait for the next request's write, or for the end of
    /// the last call in flight ([`Connection::after_call`]), whichever comes first; so decrefs
    /// never wait on an idle connection. A notification has no reply: this is a write, never a
    /// round trip. When nothing is in flight the manager has no unread replies of ours, so it
    /// is reading this socket and the small write does not block.
    pub(crate) fn flush_if_idle(&self) {
        let Some(refs) = &self.refs else {
            return;
        };
        // Again after each write: a drop that found the writer taken by this very flush left
        // its decref to it.
        while refs.has_pending() {
            {
                let state = self.state.lock();
                if state.broken.is_some() || !state.calls.is_empty() {
                    return;
                }
            }
            // A thread holding the writer takes the decrefs with its own request.
            let Some(mut out) = self.writer.try_lock() else {
                return;
            };
            out.clear();
            if !refs.write_decrefs(&mut out, self.serial) {
                return;
            }
            let written = self.stream.write_all(&out);
            shrink_if_huge(&mut out);
            drop(out);
            if let Err(e) = written {
                // The manager drops every count of a connection that breaks: nothing is lost.
                self.fail(io_reason("writing decrefs", &e));
                return;
            }
        }
    }

    /// Appends the request to `out` if the manager takes it; otherwise leaves `out` as it was
    /// and gives the [`Error::Limit`] it would have closed the connection for.
    fn write_checked(&self, out: &mut Vec<u8>, id: u32, method: &str, args: &Args) -> Result<()> {
        write_checked(&self.limits, out, id, method, args)
    }

    /// Sends one request under msgid `id`: fails if the write fails or if the manager would
    /// refuse the request (then nothing of it is sent).
    fn send_one(&self, id: u32, method: &str, args: &Args) -> Result<()> {
        let mut refused = Ok(());
        self.send(|out| refused = self.write_checked(out, id, method, args))?;
        refused
    }

    /// Writes what `fill` puts in the request buffer, with one write call, after the decrefs
    /// that are due (they ride along for free).
    fn send(&self, fill: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
        let mut out = self.writer.lock();
        out.clear();
        if let Some(refs) = &self.refs {
            if refs.has_pending() {
                refs.write_decrefs(&mut out, self.serial);
            }
        }
        fill(&mut out);
        let written = self.stream.write_all(&out);
        shrink_if_huge(&mut out);
        drop(out);
        written.map_err(|e| self.fail(io_reason("writing a request", &e)))
    }

    /// As [`Connection::send`], for many requests: `fill` may call `flush` to write what it
    /// has put in the buffer so far (whole requests), so that the manager starts on the first
    /// requests of a long pipeline while the rest are still being encoded. Other threads'
    /// requests wait for the last piece.
    fn send_pieces(
        &self,
        fill: impl FnOnce(
            &mut Vec<u8>,
            &mut dyn FnMut(&mut Vec<u8>) -> std::io::Result<()>,
        ) -> std::io::Result<()>,
    ) -> Result<()> {
        let mut out = self.writer.lock();
        out.clear();
        if let Some(refs) = &self.refs {
            if refs.has_pending() {
                refs.write_decrefs(&mut out, self.serial);
            }
        }
        let mut flush = |out: &mut Vec<u8>| {
            let written = self.stream.write_all(out);
            out.clear();
            written
        };
        let written = fill(&mut out, &mut flush).and_then(|()| flush(&mut out));
        shrink_if_huge(&mut out);
        drop(out);
        written.map_err(|e| self.fail(io_reason("writing a request", &e)))
    }

    /// Waits for the responses `awaited` still misses, reading the socket when nobody else
    /// is, and parked otherwise until the reader files the last of them, hands over its role,
    /// or the connection fails. Whatever the outcome, the call is out of the table after.
    /// `may_wait`: the manager may park the call (see [`spin`]).
    fn wait(
        &self,
        awaited: &mut Awaited,
        may_wait: bool,
        deadline: Option<&Deadline<'_>>,
    ) -> Result<()> {
        let first = awaited.first;
        let mut state = self.state.lock();
        loop {
            state.calls.collect(awaited);
            if awaited.missing == 0 {
                state.calls.finish(first);
                return Ok(());
            }
            if let Some(reason) = &state.broken {
                let err = self.disconnected(reason);
                state.calls.finish(first);
                return Err(err);
            }
            if !state.reading {
                state.reading = true;
                let outcome = MutexGuard::unlocked(&mut state, || {
                    panic::catch_unwind(AssertUnwindSafe(|| self.lead(awaited, may_wait, deadline)))
                });
                state.reading = false;
                state.calls.finish(first);
                return match outcome {
                    Ok(outcome) => {
                        // Someone may be waiting for a response still to come: they read now.
                        let next = state.calls.next_reader();
                        drop(state);
                        if let Some(next) = next {
                            next.unpark();
                        }
                        outcome
                    }
                    Err(panicked) => {
                        // A bug, not the server's doing; still, never leave the others waiting
                        // on a reader that is gone, nor let them read a half-decoded stream.
                        drop(state);
                        self.fail("a reading thread panicked".into());
                        panic::resume_unwind(panicked)
                    }
                };
            }
            state.calls.sleeping(first);
            match deadline {
                None => MutexGuard::unlocked(&mut state, std::thread::park),
                Some(d) => {
                    let left = d.at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        state.calls.finish(first);
                        drop(state);
                        return Err(self.time_out(d));
                    }
                    MutexGuard::unlocked(&mut state, || std::thread::park_timeout(left));
                }
            }
        }
    }

    /// The reader role: reads until `awaited` has every response, filing the others.
    fn lead(
        &self,
        awaited: &mut Awaited,
        may_wait: bool,
        deadline: Option<&Deadline<'_>>,
    ) -> Result<()> {
        let mut reader = self.reader.lock();
        let mut others = Vec::new();
        loop {
            if let Err(reason) = drain(&mut reader, awaited, &mut others) {
                return Err(self.fail(reason));
            }
            if !others.is_empty() {
                self.file(&mut others);
            }
            if awaited.missing == 0 {
                return Ok(());
            }
            self.fill(&mut reader, may_wait, deadline)?;
        }
    }

    /// Reads what has arrived into the decoder (at least one byte), polling briefly before
    /// sleeping (see [`spin`]). Calls that `may_wait` keep a back-off of their own, so that
    /// a contended lock does not stop the polling for the quick calls made while holding it.
    fn fill(
        &self,
        reader: &mut Reader,
        may_wait: bool,
        deadline: Option<&Deadline<'_>>,
    ) -> Result<()> {
        let backoff = &mut reader.backoff[usize::from(may_wait)];
        let mut polled = backoff
            .poll_read(self.stream.raw_fd(), &mut reader.buf, spin::pause)
            .map(Ok);
        loop {
            let read = match polled.take() {
                Some(read) => read,
                None => {
                    if let Some(d) = deadline {
                        if !readable_by(self.stream.raw_fd(), d.at) {
                            return Err(self.time_out(d));
                        }
                    }
                    self.stream.read(&mut reader.buf)
                }
            };
            match read {
                Ok(0) => {
                    let reason = match reader.notice.take() {
                        Some(notice) => {
                            self.state.lock().after_notice = true;
                            format!("the manager closed it after an error: {notice}")
                        }
                        None => "the manager closed it (shut down or stopped)".to_owned(),
                    };
                    return Err(self.fail(reason));
                }
                Ok(n) => {
                    let Reader { decoder, buf, .. } = reader;
                    match &self.stream {
                        // It may be part of a record only: then nothing is decoded this time.
                        Stream::Tls(tls) => tls.decrypt(&buf[..n], decoder).map_err(|e| {
                            self.fail(format!("the manager sent bytes that are not TLS: {e}"))
                        })?,
                        _ => decoder.extend(&buf[..n]),
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.fail(io_reason("reading a reply", &e))),
            }
        }
    }

    /// Files responses for other threads, and wakes those whose last response is in.
    fn file(&self, responses: &mut Vec<(u32, Response)>) {
        let mut complete = Vec::new();
        let mut state = self.state.lock();
        for (id, response) in responses.drain(..) {
            match state.calls.file(id, response) {
                Filed::Complete(owner) => complete.push(owner),
                Filed::Partial => {}
                Filed::Detached(response) => {
                    if let Err(e) = response.into_reply() {
                        warn!(msgid = id, error = %e, "a call sent without waiting failed");
                    }
                }
                Filed::Unknown => warn!(
                    msgid = id,
                    "dropping a response to a msgid that no call is waiting for"
                ),
            }
        }
        drop(state);
        for owner in complete {
            owner.unpark();
        }
    }

    /// A call's deadline passed: the connection is closed (its reply may still come, and the
    /// stream is shared), the call fails with [`Error::Timeout`] and every other with
    /// [`Error::Disconnected`] saying why.
    fn time_out(&self, d: &Deadline<'_>) -> Error {
        let what = format!("a call to {}", d.method);
        self.fail(format!(
            "the manager did not answer {what} within {:?} (stopped or hung?)",
            d.after
        ));
        Error::Timeout {
            address: self.address.clone(),
            what,
            after: d.after,
        }
    }

    /// Marks the connection broken (the first reason wins) and wakes every waiter.
    fn fail(&self, reason: String) -> Error {
        let mut state = self.state.lock();
        if state.broken.is_none() {
            debug!(address = %self.address, %reason, "connection to the agora manager lost");
            // Wakes a reader blocked in read(), if the failure was found by a writer.
            self.stream.shutdown();
            state.broken = Some(reason);
            self.broken.store(true, Ordering::Relaxed);
        }
        let err = self.disconnected(state.broken.as_deref().unwrap_or_default());
        let owners = state.calls.owners();
        drop(state);
        owners.iter().for_each(std::thread::Thread::unpark);
        err
    }

    fn disconnected(&self, reason: &str) -> Error {
        Error::Disconnected {
            address: self.address.clone(),
            reason: reason.to_owned(),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Shut the socket down, not only close it: a forked child that never used the client
        // still holds a copy of the descriptor, and the manager must see this session end now
        // (it releases what the session held). Only the owning process may do that.
        if self.pid == crate::atfork::current_pid() {
            debug!(address = %self.address, "closing the connection to the agora manager");
            self.stream.shutdown();
        }
        // Before the stream's own drop closes the number, which may then be reused.
        crate::atfork::unregister(self.stream.raw_fd());
    }
}

/// Releases a request buffer grown past [`KEEP_WRITE_BUFFER`] by one huge write.
fn shrink_if_huge(out: &mut Vec<u8>) {
    if out.capacity() > KEEP_WRITE_BUFFER {
        *out = Vec::with_capacity(8 * 1024);
    }
}

/// Why an I/O error ended the connection, in words: a reset or a broken pipe means the manager
/// went away, which is what the user needs to know.
fn io_reason(doing: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
            format!("the manager closed it (shut down or stopped) while {doing}: {e}")
        }
        _ => format!("{doing} failed: {e}"),
    }
}

/// Takes every complete frame out of the decoder: the responses `awaited` waits for into it,
/// other responses into `others`. Fails only on bytes that are not MessagePack.
fn drain(
    reader: &mut Reader,
    awaited: &mut Awaited,
    others: &mut Vec<(u32, Response)>,
) -> std::result::Result<(), String> {
    drain_frames(
        &mut reader.decoder,
        &mut reader.notice,
        |msgid, error, result| {
            let response = Response { error, result };
            if let Some(other) = awaited.accept(msgid, response) {
                others.push((msgid, other));
            }
        },
    )
}

/// Takes every complete frame out of `decoder` and hands each response (msgid, error, result)
/// to `response`. A notification is logged, and the text of an `error` one (the manager's
/// reason for closing) kept in `notice`; requests and malformed messages are logged and
/// skipped. Fails only on bytes that are not MessagePack. Both clients read with it.
pub(crate) fn drain_frames(
    decoder: &mut FrameDecoder,
    notice: &mut Option<String>,
    mut response: impl FnMut(u32, Bytes, Bytes),
) -> std::result::Result<(), String> {
    loop {
        // A reply whose result is one byte is read where it lies: not scanned first (about 180
        // of the 2,100 instructions of a pipelined call on the client, by callgrind) and
        // taking no reference to the read buffer (two atomic operations).
        let frame = match decoder.next_frame_in_place(envelope::one_byte_response) {
            Ok(Some(Frame::InPlace((msgid, result)))) => {
                response(msgid, Bytes::from_static(&[0xc0]), result);
                continue;
            }
            Ok(Some(Frame::Whole(frame))) => frame,
            Ok(None) => return Ok(()),
            Err(e) => {
                return Err(format!(
                    "the manager sent bytes that are not MessagePack-RPC: {e}"
                ))
            }
        };
        match envelope::parse(frame) {
            Ok(Envelope::Response {
                msgid,
                error,
                result,
            }) => response(msgid, error, result),
            Ok(Envelope::Notification { method, params }) => {
                let text = notice_text(&params);
                warn!(%method, params = ?text, "notification from the agora manager");
                if method == "error" {
                    *notice = Some(text.join(": "));
                }
            }
            Ok(Envelope::Request { method, .. }) => {
                warn!(%method, "ignoring a request sent by the agora manager");
            }
            Err(e) => warn!(error = %e, "ignoring a malformed message from the agora manager"),
        }
    }
}

/// A notification's params as text, for logs and errors.
pub(crate) fn notice_text(params: &agora_proto::Params) -> Vec<String> {
    params
        .iter()
        .map(|p| agora_proto::params::text(&p).unwrap_or("?").to_owned())
        .collect()
}

/// The length of the request [`write_request`] writes, without writing it.
fn request_len(msgid: u32, method: &str, args: &Args) -> usize {
    let msgid_len = match msgid {
        0..=0x7f => 1,
        0x80..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    };
    let array_header = match args.count() {
        0..=15 => 1,
        16..=0xffff => 3,
        _ => 5,
    };
    let str_header = match method.len() {
        0..=31 => 1,
        32..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    };
    2 + msgid_len + array_header + str_header + method.len() + args.bytes().len()
}

/// Appends the request to `out` if a manager with `limits` takes it; otherwise leaves `out` as
/// it was and gives the [`Error::Limit`] it would have closed the connection for. Shared by the
/// blocking and the async connection.
pub(crate) fn write_checked(
    limits: &Limits,
    out: &mut Vec<u8>,
    id: u32,
    method: &str,
    args: &Args,
) -> Result<()> {
    let size = request_len(id, method, args);
    if size > limits.max_message_bytes {
        return Err(Error::Limit {
            limit: "max_message_bytes",
            max: limits.max_message_bytes as u64,
            size: size as u64,
            encoding_stopped: false,
        });
    }
    let start = out.len();
    write_request(out, id, method, args);
    // A frame shorter than both limits can neither nest nor hold that many.
    if out.len() - start >= limits.max_depth.min(limits.max_container_len) {
        let scanned = agora_proto::Scanner::new(*limits).scan(&out[start..]);
        let (limit, max, size) = match scanned {
            Err(agora_proto::scanner::ScanError::TooDeep { limit }) => {
                ("max_depth", limit, limit as u64 + 1)
            }
            Err(agora_proto::scanner::ScanError::TooLong { len, limit }) => {
                ("max_container_len", limit, len)
            }
            Err(agora_proto::scanner::ScanError::TooLarge { limit }) => {
                ("max_message_bytes", limit, (out.len() - start) as u64)
            }
            _ => return Ok(()),
        };
        out.truncate(start);
        return Err(Error::Limit {
            limit,
            max: max as u64,
            size,
            encoding_stopped: false,
        });
    }
    Ok(())
}

/// Appends `[0, msgid, method, params]`.
fn write_request(out: &mut Vec<u8>, msgid: u32, method: &str, args: &Args) {
    out.push(0x94);
    out.push(agora_proto::REQUEST);
    encode::uint(out, u64::from(msgid));
    encode::str(out, method);
    encode::array_header(out, args.count() as usize);
    out.extend_from_slice(args.bytes());
}

/// Checks a manager's `hello` result (`PROTOCOL.md`, section 2): its protocol version and run.
/// Gives the run, the limits and the challenge to answer. Shared by the blocking and the async
/// connection.
pub(crate) fn read_hello(address: &str, hello: &[u8]) -> Result<(ManagerRun, Limits, Vec<u8>)> {
    let not_a_manager = |reason: String| Error::NotAManager {
        address: address.to_owned(),
        reason,
    };
    let hello: Hello = rmp_serde::from_slice(hello).map_err(|e| {
        not_a_manager(format!(
            "its answer to hello is not an agora manager's: {e}"
        ))
    })?;
    if hello.protocol != agora_proto::PROTOCOL_VERSION {
        return Err(Error::Protocol(format!(
            "the manager speaks protocol version {}, this client version {}",
            hello.protocol,
            agora_proto::PROTOCOL_VERSION
        )));
    }
    let run = match (hello.run, hello.started) {
        (Some(id), Some(started)) if ManagerRun::is_valid_id(&id) => ManagerRun { id, started },
        (Some(id), _) if !ManagerRun::is_valid_id(&id) => {
            return Err(Error::Protocol(format!(
                "the manager at {} reports a run {id:?} that is not a lowercase uuid",
                address
            )))
        }
        _ => {
            return Err(Error::Protocol(format!(
                "the manager at {} does not report its run and start time in hello: it is \
                 older than this client; run the agora-manager of this version",
                address
            )))
        }
    };
    let limits = hello.limits.map_or_else(Limits::default, Limits::from);
    Ok((run, limits, hello.challenge.into_vec()))
}

/// HMAC-SHA256 of the challenge, keyed with the authkey.
pub(crate) fn digest(authkey: &[u8], challenge: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail; an empty digest would only be
    // rejected by the manager.
    match Hmac::<Sha256>::new_from_slice(authkey) {
        Ok(mut mac) => {
            mac.update(challenge);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
pub(crate) fn test_digest(authkey: &[u8], challenge: &[u8]) -> Vec<u8> {
    digest(authkey, challenge)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn request_bytes_match_the_proto_encoder() {
        let mut args = Args::object(3);
        args.value("k").unwrap();
        let mut ours = Vec::new();
        write_request(&mut ours, 9, "dict.get", &args);
        let mut theirs = Vec::new();
        encode::request(&mut theirs, 9, "dict.get", &[&[3], &[0xa1, b'k']]);
        assert_eq!(ours, theirs);
    }

    /// The size checked against the manager's limit is the size written, at every width of
    /// the msgid, the params array header and the method's str header.
    #[test]
    fn request_len_is_the_written_length() {
        for msgid in [0, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, u32::MAX] {
            for count in [0usize, 1, 15, 16, 0xffff, 0x10000] {
                for method_len in [0usize, 31, 32, 0xff, 0x100, 0x10000] {
                    let mut args = Args::default();
                    for _ in 0..count {
                        args.bool(true);
                    }
                    let method = "m".repeat(method_len);
                    let mut out = Vec::new();
                    write_request(&mut out, msgid, &method, &args);
                    assert_eq!(
                        request_len(msgid, &method, &args),
                        out.len(),
                        "msgid {msgid}, {count} params, method of {method_len} bytes"
                    );
                }
            }
        }
    }

    /// A pipeline's requests go out as the proto encoder would write them, one after the
    /// other; replies sent back in reverse order still reach the right calls.
    #[test]
    fn batch_encoding_and_reverse_order_replies() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let conn = Connection::new(Stream::Unix(ours), "unix:/test".into());
        let server = std::thread::spawn(move || {
            let mut theirs = theirs;
            let mut decoder = FrameDecoder::new(Limits::default());
            let mut frames = Vec::new();
            let mut buf = [0u8; 4096];
            while frames.len() < 3 {
                let n = theirs.read(&mut buf).unwrap();
                decoder.extend(&buf[..n]);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    frames.push(frame);
                }
            }
            let mut replies = Vec::new();
            for (msgid, frame) in frames.iter().enumerate().rev() {
                let Envelope::Request { params, .. } = envelope::parse(frame.clone()).unwrap()
                else {
                    panic!("not a request")
                };
                encode::response_ok(&mut replies, msgid as u32, params.raw(1));
            }
            theirs.write_all(&replies).unwrap();
            frames.concat()
        });
        let calls: Vec<Args> = (0..3)
            .map(|i| {
                let mut a = Args::object(9);
                a.int(i * 100);
                a
            })
            .collect();
        let batch: Vec<(&str, &Args)> = calls.iter().map(|a| ("list.append", a)).collect();
        let replies = conn.call_many(&batch).unwrap();
        let got: Vec<Vec<u8>> = replies.into_iter().map(|r| r.unwrap().to_vec()).collect();
        assert_eq!(got, [vec![0x00], vec![0x64], vec![0xcc, 0xc8]]);
        let mut expected = Vec::new();
        for (msgid, value) in [(0, &[0x00][..]), (1, &[0x64]), (2, &[0xcc, 0xc8])] {
            encode::request(&mut expected, msgid, "list.append", &[&[9], value]);
        }
        assert_eq!(server.join().unwrap(), expected);
        assert!(conn.state.lock().calls.is_empty(), "no msgid left behind");
    }

    /// Bytes that are not MessagePack break the connection for every caller.
    #[test]
    fn garbage_from_the_server_is_a_disconnect() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let conn = Connection::new(Stream::Unix(ours), "unix:/test".into());
        theirs.write_all(&[0xc1]).unwrap();
        let err = conn.call("ping", &Args::default()).unwrap_err();
        assert!(err.is_disconnected(), "{err}");
        assert!(err.to_string().contains("not MessagePack"), "{err}");
        assert!(conn
            .call("ping", &Args::default())
            .unwrap_err()
            .is_disconnected());
    }

    #[test]
    fn request_len_is_what_write_request_writes() {
        for method in ["ping", "dict.setitem", &"m".repeat(40), &"m".repeat(300)] {
            for id in [0, 200, 70_000, u32::MAX] {
                let mut args = Args::object(u64::from(id));
                args.str("key").bin(&[0; 100]);
                let mut out = Vec::new();
                write_request(&mut out, id, method, &args);
                assert_eq!(request_len(id, method, &args), out.len(), "{method} {id}");
            }
        }
    }

    #[test]
    fn error_fields_become_remote_errors() {
        let mut raw = Vec::new();
        encode::error_pair(&mut raw, "KeyError", "'x'");
        assert!(remote_error(&raw).is(ErrorName::KeyError));
        let odd = remote_error(&[0xa2, b'n', b'o']);
        assert_eq!(odd.remote_name(), Some("UnknownError"));
        assert!(odd.to_string().contains("no"));
    }
}
