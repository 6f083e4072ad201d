//! One client connection: read frames, authenticate, dispatch, write replies, and answer parked
//! calls when they complete.
//!
//! Each connection is one task. It reads what has arrived, answers every complete request in
//! it into one output buffer, and writes that buffer with one write: replies that are ready
//! together go out together, and a pipelining client gets a batch per read.
//!
//! A call that must wait (a queue get, an acquire) becomes a [`Parked`] future in the
//! connection's `parked` set; the connection keeps serving other requests and writes the reply
//! when the future completes. When the connection ends, every parked call is given back
//! (an undelivered queue item returns to its queue) and every object the connection may hold
//! something in releases it.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::{Id, JoinSet};
use tracing::{debug, info, Instrument};

use agora_proto::{
    encode, envelope, CallError, Envelope, ErrorName, FrameDecoder, FrameError, Params,
};

use crate::auth;
use crate::dispatch;
use crate::lifecycle::{Caller, Holdings, Outcome, Parked, Reply, SessionId, Ticket};
use crate::registry::ObjectCache;
use crate::server::Shared;
use crate::spin::{SpinSlot, SpinState};

/// How many bytes to ask the socket for at a time.
const READ_CHUNK: usize = 64 * 1024;

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// What the connection loop should do after processing input.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Keep serving.
    Continue,
    /// Flush the replies, then close (bad frame, failed auth, too many calls in flight).
    Close,
    /// Flush the replies, then stop the whole manager.
    Shutdown,
}

/// What one request led to.
enum Step {
    /// Answered (the result follows the response header in the output buffer).
    Answered(Next),
    /// Parked: answered later.
    Parked(Parked),
}

/// The output of a parked call's task: the msgid, the reply, and the ticket to give the reply
/// back with if it cannot be written.
type ParkedOutput = (u32, Reply, Ticket);

/// The state of one connection.
pub struct Session {
    shared: Arc<Shared>,
    id: SessionId,
    /// `auth` succeeded. Calling `hello` again does not undo it.
    authenticated: bool,
    /// The challenge of the latest `hello`, which the next `auth` must answer.
    challenge: Option<[u8; auth::CHALLENGE_LEN]>,
    parked: JoinSet<ParkedOutput>,
    parked_msgids: HashMap<Id, u32>,
    /// What this connection holds (locks, permits), released when it closes.
    holdings: Arc<Holdings>,
    /// The objects this connection has resolved.
    cache: ObjectCache,
}

impl Session {
    fn new(shared: Arc<Shared>) -> Session {
        Session {
            shared,
            id: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
            authenticated: false,
            challenge: None,
            parked: JoinSet::new(),
            parked_msgids: HashMap::new(),
            holdings: Holdings::new(),
            cache: ObjectCache::default(),
        }
    }

    /// Answers every complete message in the decoder into `out`.
    fn process(&mut self, decoder: &mut FrameDecoder, out: &mut Vec<u8>) -> Next {
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => match self.handle_frame(frame, decoder, out) {
                    Next::Continue => {}
                    other => return other,
                },
                Ok(None) => return Next::Continue,
                Err(e) => {
                    self.frame_error(&e, out);
                    return Next::Close;
                }
            }
        }
    }

    fn frame_error(&self, e: &FrameError, out: &mut Vec<u8>) {
        let name = if e.is_limit() {
            ErrorName::LimitError
        } else {
            ErrorName::ProtocolError
        };
        let err = CallError::new(name, format!("{e}; closing the connection"));
        info!(error = %err, "closing connection");
        match e.msgid {
            Some(msgid) => encode::response_err(out, msgid, &err),
            None => {
                let mut pair = Vec::new();
                encode::str(&mut pair, name.as_str());
                let mut msg = Vec::new();
                encode::str(&mut msg, &err.message);
                encode::notification(out, "error", &[&pair, &msg]);
            }
        }
    }

    fn handle_frame(
        &mut self,
        frame: bytes::Bytes,
        decoder: &mut FrameDecoder,
        out: &mut Vec<u8>,
    ) -> Next {
        let (msgid, method, params) = match envelope::parse(frame) {
            Ok(Envelope::Request {
                msgid,
                method,
                params,
            }) => (msgid, method, params),
            // Notifications and responses from a client are never answered.
            Ok(_) => return Next::Continue,
            Err(e) => {
                debug!(error = %e, "bad envelope");
                if let Some(msgid) = e.msgid {
                    let err = CallError::new(ErrorName::ProtocolError, e.to_string());
                    encode::response_err(out, msgid, &err);
                }
                return Next::Continue;
            }
        };
        // Write the success header, let the method append its result after it, and replace
        // both with an error response if the method fails (or remove them if it parks).
        let start = out.len();
        encode::response_ok(out, msgid, &[]);
        let failure = match self.call(msgid, &method, &params, decoder, out) {
            Ok(Step::Answered(next)) => return next,
            Ok(Step::Parked(parked)) => {
                out.truncate(start);
                match self.park(parked) {
                    Ok(()) => return Next::Continue,
                    Err(err) => err,
                }
            }
            Err(err) => err,
        };
        out.truncate(start);
        encode::response_err(out, msgid, &failure);
        match failure.name {
            ErrorName::AuthenticationError if method == "auth" => Next::Close,
            ErrorName::LimitError => Next::Close,
            _ => Next::Continue,
        }
    }

    /// Starts waiting for a parked call's reply, within the in-flight limit.
    fn park(&mut self, parked: Parked) -> Result<(), CallError> {
        if self.parked.len() >= self.shared.config.max_in_flight {
            // Dropping the parked call takes its waiter out of line.
            drop(parked);
            return Err(CallError::new(
                ErrorName::LimitError,
                format!(
                    "more than {} calls in flight on one connection; closing the connection",
                    self.shared.config.max_in_flight
                ),
            ));
        }
        let msgid = parked.msgid;
        let task = self.parked.spawn(parked.reply());
        self.parked_msgids.insert(task.id(), msgid);
        Ok(())
    }

    /// Runs one request, appending its result to `out`.
    fn call(
        &mut self,
        msgid: u32,
        method: &str,
        p: &Params,
        decoder: &mut FrameDecoder,
        out: &mut Vec<u8>,
    ) -> Result<Step, CallError> {
        match method {
            "hello" => {
                let challenge = auth::challenge()
                    .map_err(|e| CallError::runtime(format!("cannot make a challenge: {e}")))?;
                self.challenge = Some(challenge);
                write_hello(out, &challenge, &self.shared.config.run);
                return Ok(Step::Answered(Next::Continue));
            }
            "auth" => {
                self.authenticate(p)?;
                decoder.set_limits(self.shared.config.limits);
                out.extend_from_slice(encode::TRUE);
                return Ok(Step::Answered(Next::Continue));
            }
            _ => {}
        }
        if !self.authenticated {
            return Err(CallError::new(
                ErrorName::AuthenticationError,
                "authenticate first: call hello, then auth",
            ));
        }
        match method {
            "ping" => {
                p.expect(method, 0, 0)?;
                encode::str(out, "pong");
                Ok(Step::Answered(Next::Continue))
            }
            "shutdown" => {
                p.expect(method, 0, 0)?;
                out.extend_from_slice(encode::TRUE);
                info!("shutdown requested");
                Ok(Step::Answered(Next::Shutdown))
            }
            _ => {
                let caller = Caller {
                    session: self.id,
                    holdings: &self.holdings,
                };
                let registry = &self.shared.registry;
                match dispatch::call(registry, &mut self.cache, method, p, &caller, out)? {
                    Outcome::Done => Ok(Step::Answered(Next::Continue)),
                    Outcome::Parked(park) => {
                        Ok(Step::Parked(Parked::new(msgid, park, caller.holder())))
                    }
                }
            }
        }
    }

    fn authenticate(&mut self, p: &Params) -> Result<(), CallError> {
        let fail = |why: &str| CallError::new(ErrorName::AuthenticationError, why.to_owned());
        p.expect("auth", 1, 1)?;
        let Some(challenge) = self.challenge.take() else {
            return Err(fail(
                "call hello first: auth answers the challenge hello returns",
            ));
        };
        // A str carrying the digest bytes is accepted: some clients predate bin.
        let digest = agora_proto::params::bytes_of(p.raw(0))
            .ok_or_else(|| fail("auth takes the digest as a bin"))?;
        if !auth::verify(&self.shared.config.authkey, &challenge, digest) {
            self.authenticated = false;
            info!("authentication failed");
            return Err(fail(
                "wrong digest: the authkey differs from the manager's (check AGORA_AUTHKEY)",
            ));
        }
        self.authenticated = true;
        Ok(())
    }

    /// Appends the reply of a parked call that completed.
    fn write_parked(
        &mut self,
        id: Id,
        (msgid, reply, ticket): ParkedOutput,
        out: &mut Vec<u8>,
        sent: &mut Vec<(Reply, Ticket)>,
    ) {
        self.parked_msgids.remove(&id);
        match &reply {
            Ok(grant) => {
                encode::response_ok(out, msgid, &[]);
                grant.encode(out);
            }
            Err(err) => encode::response_err(out, msgid, err),
        }
        sent.push((reply, ticket));
    }

    /// Answers a parked call whose task failed (a bug: it is reported, not hidden).
    fn parked_failed(&mut self, e: &tokio::task::JoinError, out: &mut Vec<u8>) {
        tracing::error!(error = %e, "a parked call failed");
        if let Some(msgid) = self.parked_msgids.remove(&e.id()) {
            let err = CallError::runtime(format!("internal error in the manager: {e}"));
            encode::response_err(out, msgid, &err);
        }
    }

    /// Ends the connection: parked calls are answered with `ShutdownError` when the manager is
    /// stopping (best effort), or given back; then whatever the connection held is released.
    async fn finish<S: AsyncWrite + Unpin>(mut self, stream: &mut S, stopping: bool) {
        self.parked.abort_all();
        let mut out = Vec::new();
        let mut undelivered = Vec::new();
        while let Some(done) = self.parked.join_next_with_id().await {
            match done {
                Ok((id, output)) if stopping => {
                    self.write_parked(id, output, &mut out, &mut undelivered)
                }
                Ok((_, (_, reply, ticket))) => ticket.undeliver(reply),
                Err(e) => {
                    let msgid = self.parked_msgids.remove(&e.id());
                    if let (Some(msgid), true) = (msgid, stopping) {
                        let err = CallError::new(
                            ErrorName::ShutdownError,
                            "the manager is shutting down",
                        );
                        encode::response_err(&mut out, msgid, &err);
                    }
                }
            }
        }
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            undelivered.into_iter().for_each(|(r, t)| t.undeliver(r));
        }
        // Dropping the session releases what it held.
    }
}

impl Drop for Session {
    /// Releases whatever the connection held (locks, permits, a place at a barrier). In `Drop`
    /// so that it also happens if the connection's task panics or is cancelled: a bug in one
    /// connection must not leave a lock held forever for everybody else.
    fn drop(&mut self) {
        self.holdings.release_all(self.id);
    }
}

fn write_hello(out: &mut Vec<u8>, challenge: &[u8], run: &crate::Run) {
    encode::map_header(out, 6);
    encode::str(out, "protocol");
    encode::uint(out, u64::from(agora_proto::PROTOCOL_VERSION));
    encode::str(out, "server");
    encode::str(out, "agora-manager");
    encode::str(out, "version");
    encode::str(out, env!("CARGO_PKG_VERSION"));
    encode::str(out, "challenge");
    encode::bin(out, challenge);
    encode::str(out, "run");
    encode::str(out, &run.id.hyphenated().to_string());
    encode::str(out, "started");
    encode::uint(out, run.started);
}

/// What woke the connection loop.
enum Event {
    Stop,
    Read(std::io::Result<usize>),
    ParkedDone(Result<(Id, ParkedOutput), tokio::task::JoinError>),
}

/// Reads the connection's next request if it arrives before the slot's deadline, polling the
/// socket without blocking (this runtime thread is the connection's for that long: no other
/// task runs on it meanwhile, see [`crate::spin`]), and tells `spin` whether that paid off.
/// `None`: nothing came in time, or the manager is stopping.
fn poll_for_request(
    fd: RawFd,
    decoder: &mut FrameDecoder,
    spin: &mut SpinState,
    mut slot: SpinSlot<'_>,
    stopping: &watch::Receiver<bool>,
) -> Option<std::io::Result<usize>> {
    slot.start();
    let mut tries = 0u32;
    loop {
        if let Some(read) = recv_now(fd, decoder.read_buf(READ_CHUNK)) {
            spin.polled(&slot, true);
            return Some(read);
        }
        if !slot.again() || *stopping.borrow() {
            spin.polled(&slot, false);
            return None;
        }
        // A client on another CPU answers within a few microseconds; one that has not may be
        // waiting for this very CPU (the kernel tends to wake a client on its server's CPU),
        // so from then on every few polls offer the CPU to whoever waits for it.
        tries += 1;
        if slot.polled_for() > YIELD_AFTER && tries % YIELD_EVERY == 0 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// How long a connection polls before it starts offering its CPU to others.
const YIELD_AFTER: Duration = Duration::from_micros(10);

/// Polls between two offers of the CPU (`sched_yield`, a trip through the scheduler).
const YIELD_EVERY: u32 = 4;

/// True when the peer has closed its end: end-of-file (or a reset) is all that is left to read.
/// Unread requests in front of the end-of-file count as still open (they will be read first).
fn peer_closed(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: `fd` is the connection's open socket; `byte` is writable for one byte.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => true,
        n if n > 0 => false,
        _ => std::io::Error::last_os_error().kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// One non-blocking read from the socket into `buf`'s spare room. `None`: nothing to read.
///
/// It bypasses tokio's readiness tracking, which is harmless: tokio reads again when it
/// thinks the socket readable and learns otherwise from `EAGAIN`.
fn recv_now(fd: RawFd, buf: &mut BytesMut) -> Option<std::io::Result<usize>> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: `fd` is the connection's open socket; `spare` is writable for its length.
    let n = unsafe {
        libc::recv(
            fd,
            spare.as_mut_ptr().cast(),
            spare.len(),
            libc::MSG_DONTWAIT,
        )
    };
    match usize::try_from(n) {
        Ok(n) => {
            // SAFETY: recv initialised the first `n` bytes of the spare room.
            unsafe { buf.set_len(buf.len() + n) };
            Some(Ok(n))
        }
        Err(_) => {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => None,
                _ => Some(Err(e)),
            }
        }
    }
}

/// Serves one connection until the peer leaves, the connection must close, or the manager
/// shuts down.
///
/// Everything the connection logs is inside a `conn` span carrying a random uuid and the peer,
/// so one connection can be followed through the log: peers repeat (every Unix socket client is
/// the same unnamed peer) and the numeric session id is only unique within one run, while the
/// uuid is unique across runs and managers, so logs of several can be merged.
pub async fn serve<S>(stream: S, shared: Arc<Shared>, peer: String)
where
    S: AsyncRead + AsyncWrite + AsRawFd + Unpin,
{
    let span = tracing::info_span!("conn", conn = %uuid::Uuid::new_v4(), peer = %peer);
    serve_in_span(stream, shared).instrument(span).await
}

async fn serve_in_span<S>(stream: S, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + AsRawFd + Unpin,
{
    let mut conn = Connection {
        fd: stream.as_raw_fd(),
        stream,
        stopping: shared.shutdown.subscribe(),
        decoder: FrameDecoder::new(shared.config.pre_auth_limits()),
        session: Session::new(shared.clone()),
        out: Vec::with_capacity(READ_CHUNK),
        sent: Vec::new(),
        spin: SpinState::new(),
        shared,
    };
    debug!(session = conn.session.id, "connected");
    let stop = conn.run().await;
    let Connection {
        mut stream,
        session,
        ..
    } = conn;
    session.finish(&mut stream, stop).await;
    let _ = stream.shutdown().await;
    debug!("disconnected");
}

/// One connection's loop state: its socket, what it read and is about to write.
struct Connection<S> {
    stream: S,
    fd: RawFd,
    shared: Arc<Shared>,
    stopping: watch::Receiver<bool>,
    decoder: FrameDecoder,
    session: Session,
    /// Replies waiting to be written, in one write.
    out: Vec<u8>,
    /// The grants in `out`, to give back if they cannot be written.
    sent: Vec<(Reply, Ticket)>,
    spin: SpinState,
}

/// How the loop goes on after an event.
enum Flow {
    /// Serve the next event (after writing the replies).
    Next(Next),
    /// Stop at once; `true` when the manager is stopping.
    End(bool),
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + AsRawFd + Unpin,
{
    /// Serves events until the connection ends; returns `true` when the manager is stopping.
    async fn run(&mut self) -> bool {
        // Polling places borrow the shared state; this handle outlives them.
        let shared = self.shared.clone();
        let mut slot = None;
        loop {
            let event = self.next_event(slot.take()).await;
            let answered = matches!(event, Event::Read(Ok(n)) if n > 0);
            if answered {
                self.spin
                    .request_arrived(&shared.config.spin, Instant::now());
            }
            let next = match self.handle(event) {
                Flow::Next(next) => next,
                Flow::End(stopping) => return stopping,
            };
            // Poll for the next request only after answering requests as they came: a
            // connection with parked calls sleeps so that their replies go out at once, and a
            // client just handed a parked call's reply (a lock after a wait) is slow to wake.
            // The place is taken before writing, so that a preemption during the write counts.
            slot = (answered && self.session.parked.is_empty())
                .then(|| self.spin.try_start(&shared.config.spin, &shared.spinners))
                .flatten();
            if !self.flush().await {
                return false;
            }
            match next {
                Next::Continue => {}
                Next::Close => return false,
                Next::Shutdown => {
                    shared.shutdown.send_replace(true);
                    return true;
                }
            }
        }
    }

    /// The next thing to do: a request polled for (when this connection holds a polling
    /// place), else whatever wakes the task first.
    async fn next_event(&mut self, slot: Option<SpinSlot<'_>>) -> Event {
        let polled = slot.and_then(|slot| {
            poll_for_request(
                self.fd,
                &mut self.decoder,
                &mut self.spin,
                slot,
                &self.stopping,
            )
        });
        if let Some(read) = polled {
            return Event::Read(read);
        }
        tokio::select! {
            biased;
            _ = crate::server::stopped(&mut self.stopping) => Event::Stop,
            Some(done) = self.session.parked.join_next_with_id() => Event::ParkedDone(done),
            read = self.stream.read_buf(self.decoder.read_buf(READ_CHUNK)) => Event::Read(read),
        }
    }

    fn handle(&mut self, event: Event) -> Flow {
        match event {
            Event::Stop => Flow::End(true),
            Event::ParkedDone(done) => {
                self.answer_parked(done);
                Flow::Next(Next::Continue)
            }
            Event::Read(Ok(0)) => Flow::End(false),
            Event::Read(Ok(_)) => {
                Flow::Next(self.session.process(&mut self.decoder, &mut self.out))
            }
            Event::Read(Err(e)) => {
                debug!(error = %e, "read failed");
                Flow::End(false)
            }
        }
    }

    /// Appends every parked reply that is ready, so they go out in one write.
    fn answer_parked(&mut self, first: Result<(Id, ParkedOutput), tokio::task::JoinError>) {
        let mut done = Some(first);
        while let Some(result) = done {
            match result {
                Ok((id, output)) => {
                    self.session
                        .write_parked(id, output, &mut self.out, &mut self.sent)
                }
                Err(e) => self.session.parked_failed(&e, &mut self.out),
            }
            done = self.session.parked.try_join_next_with_id();
        }
    }

    /// Writes the replies; false when the connection is gone (its grants are given back).
    async fn flush(&mut self) -> bool {
        // A grant goes only to a connection whose client has not already left: one whose
        // end-of-file is waiting to be read gives its grants back (so the next waiter gets a
        // plain grant, not an owner-died notice from a holder that never knew it held).
        if !self.sent.is_empty() && peer_closed(self.fd) {
            debug!("left with grants in flight");
            self.sent.drain(..).for_each(|(r, t)| t.undeliver(r));
            return false;
        }
        if !self.out.is_empty() {
            if let Err(e) = self.stream.write_all(&self.out).await {
                debug!(error = %e, "write failed");
                self.sent.drain(..).for_each(|(r, t)| t.undeliver(r));
                return false;
            }
            self.out.clear();
            self.spin.wrote(Instant::now());
        }
        self.sent.clear();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::registry::Registry;
    use agora_proto::testing::RawClient;
    use rmpv::Value;

    const KEY: &[u8] = b"session tests";

    /// A connection whose task is dropped mid-flight (what happens to a task that panics, or
    /// that the server aborts) still releases the lock it held.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_connection_task_releases_what_it_held() {
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            registry: Registry::new().unwrap(),
            config: Config::new(KEY.to_vec()),
            shutdown,
            spinners: Default::default(),
        });
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        let theirs = tokio::net::UnixStream::from_std(theirs).unwrap();
        let task = tokio::spawn(serve(theirs, shared.clone(), "test".into()));
        // The raw client blocks, so it runs off the runtime's worker threads.
        let (ours, id) = tokio::task::spawn_blocking(move || {
            let mut c = RawClient::from_unix_stream(ours).unwrap();
            c.authenticate(KEY);
            let id = c.create("lock", None, vec![]);
            assert_eq!(c.ok("lock.acquire", vec![Value::from(id)]), Value::from(1));
            (c, id)
        })
        .await
        .unwrap();
        let lock = shared.registry.get(id).unwrap();
        let lock = lock.lock_parking().expect("a lock has a lock state");
        assert!(lock.read(|st| st.is_locked()).unwrap());

        // The socket stays open: only dropping the task can release the lock.
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert!(
            !lock.read(|st| st.is_locked()).unwrap(),
            "the lock outlived its connection's task"
        );
        drop(ours);
    }
}
