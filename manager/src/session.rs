//! One client connection: read frames, authenticate, dispatch, write replies, and answer parked
//! calls when they complete.
//!
//! Each connection is one task. It reads what has arrived, answers every complete request in
//! it into one output buffer, and writes what the socket takes of that buffer at once: replies
//! that are ready together go out together, and a pipelining client gets a batch per read.
//! What the socket does not take is written as it drains, while the task goes on serving; but
//! once the unwritten replies reach [`crate::Config::max_output_bytes`] the connection reads no
//! more requests (and takes in no parked replies) until they are written, so that a client
//! that does not read its replies costs a bounded amount.
//!
//! A call that must wait (a queue get, an acquire) becomes a [`Parked`] future in the
//! connection's `parked` set; the connection keeps serving other requests and writes the reply
//! when the future completes. When the connection ends, every parked call is given back
//! (an undelivered queue item returns to its queue) and every object the connection may hold
//! something in releases it.

use std::collections::HashMap;
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use agora_proto::{
    encode, envelope, CallError, Envelope, ErrorName, FrameDecoder, FrameError, Limits, Params,
};

use crate::auth;
use crate::chain;
use crate::conn_log::{Disconnect, Ending};
use crate::dispatch;
use crate::lifecycle::{Caller, Grant, Holdings, Outcome, Parked, Reply, SessionId, Ticket};
use crate::parked_calls::{Done, Ended, ParkedCalls, ParkedId};
use crate::peer::PeerInfo;
use crate::registry::Reach;
use crate::server::Shared;
use crate::spin::{SpinSlot, SpinState, Spinners};
use crate::stats::{ConnStats, RecentMethods};
use crate::throttle::{Admission, Peer};

/// How many bytes to ask the socket for at a time.
const READ_CHUNK: usize = 64 * 1024;

/// An output buffer whose capacity grew past this (a large reply) is given back once written.
const SHRINK_ABOVE: usize = 1024 * 1024;

/// Written bytes are cut from the front of the output buffer once there are this many and
/// they are at least half of it.
const COMPACT_AT: usize = 256 * 1024;

/// When one read brings a long run of requests (a deep pipeline), their replies are written
/// each time this many bytes of them are ready, not all at the end: the client reads and
/// decodes the first replies while the manager answers the rest, so that on two CPUs their
/// work overlaps instead of adding up. One client pipelining `dict.get` 1000 deep: a median
/// of 1.63M gets/s against 1.46M in eight interleaved pairs (ahead in six), for 3-10% more
/// of the manager's CPU a call. Not while another connection has input waiting: then the
/// manager's thread is the bottleneck, and an extra write would only cost it (4 and 16
/// clients 1000 deep measured within noise of before); nor once the client lags (the
/// socket did not take a part whole).
const EARLY_REPLY_BYTES: usize = 1024;

/// Requests a connection serves per taking of its place ([`Holdings::serve`]): few enough
/// that a call settling this connection's close waits for a few requests at most.
const REQUESTS_PER_SERVE: usize = 64;

/// How long a connection that must close gets to take the replies before it (the error that
/// explains why it closes among them).
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// What the connection loop should do after processing input.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Keep serving.
    Continue,
    /// Flush the replies, then close (bad frame, failed auth, too many calls in flight).
    Close(Disconnect),
    /// Flush the replies, then stop the whole manager.
    Shutdown,
}

/// What one request led to.
enum Step {
    /// Answered (the result follows the response header in the output buffer).
    Answered(Next),
    /// Parked: answered later (with the rest of its chain, if it is a chain's first call).
    Parked(Parked, Option<chain::Rest>),
    /// An `auth` waiting for its place in its peer's line ([`crate::throttle`]): answered by
    /// [`Session::settle_pending_auth`].
    Deferred,
}

/// An `auth` attempt as it will be checked: the challenge it answers and its digest, or why
/// it cannot be checked.
type Attempt = Result<([u8; auth::CHALLENGE_LEN], Vec<u8>), CallError>;

/// An `auth` that waits for its place in its peer's line; nothing else is read meanwhile.
struct PendingAuth {
    msgid: u32,
    attempt: Attempt,
    /// When it may be checked.
    due: tokio::time::Instant,
}

/// The output of a parked call: the msgid, the reply, and the ticket to give the reply back
/// with if it cannot be written.
type ParkedOutput = (u32, Reply, Ticket);

/// A parked call, as its reply will need it.
struct ParkedCall {
    msgid: u32,
    /// Its method's counter ([`crate::stats::method_index`]).
    counter: usize,
    /// The rest of its chain, when it is a chain's first call.
    rest: Option<chain::Rest>,
}

/// The state of one connection.
pub struct Session {
    shared: Arc<Shared>,
    id: SessionId,
    /// `auth` succeeded. Calling `hello` again does not undo it.
    authenticated: bool,
    /// Whom this connection's `auth` attempts count against, found once from its socket.
    peer: Peer,
    /// When the connection must have authenticated by.
    auth_deadline: tokio::time::Instant,
    /// An `auth` waiting for its place ([`crate::throttle`]).
    pending_auth: Option<PendingAuth>,
    /// The challenge of the latest `hello`, which the next `auth` must answer.
    challenge: Option<[u8; auth::CHALLENGE_LEN]>,
    parked: ParkedCalls<ParkedOutput>,
    /// What each parked call answers, by call.
    parked_calls: HashMap<ParkedId, ParkedCall>,
    /// Each parked call by msgid, for the client's `cancel` notification.
    cancels: HashMap<u32, ParkedId>,
    /// What this connection holds (locks, permits), released when it closes.
    holdings: Arc<Holdings>,
    /// The objects this connection has resolved, and those it holds.
    reach: Reach,
    /// What `stats` shows of this connection; its counts are written here only.
    stats: Arc<ConnStats>,
    /// The counters of the methods this connection called last.
    recent: RecentMethods,
}

impl Session {
    fn new(
        shared: Arc<Shared>,
        stats: ConnStats,
        fd: RawFd,
        auth_deadline: tokio::time::Instant,
    ) -> Session {
        let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
        let stats = Arc::new(stats);
        shared.stats.open(id, stats.clone());
        Session {
            shared,
            stats,
            recent: RecentMethods::default(),
            id,
            authenticated: false,
            peer: Peer::of(fd),
            auth_deadline,
            pending_auth: None,
            challenge: None,
            parked: ParkedCalls::new(),
            parked_calls: HashMap::new(),
            cancels: HashMap::new(),
            holdings: Holdings::new(),
            reach: Reach::default(),
        }
    }

    /// Answers the complete messages in the decoder into `out`, until `out` holds `stop_at`
    /// bytes (backpressure: the rest wait in the decoder), or until a request lets go of the
    /// last thing the client held while another connection (not `own`, this one's socket) has
    /// input waiting: its request for that thing must not be overtaken by this client's next
    /// one. Also says where it stopped. The batch's calls are added to the manager's
    /// per-method counts before its replies go.
    fn process(
        &mut self,
        decoder: &mut FrameDecoder,
        out: &mut Vec<u8>,
        stop_at: usize,
        own: RawFd,
    ) -> (Next, BatchEnd) {
        let answered = self.answer_batch(decoder, out, stop_at, own);
        self.recent.flush(&self.shared.stats);
        answered
    }

    /// [`Session::process`] but for the counts.
    fn answer_batch(
        &mut self,
        decoder: &mut FrameDecoder,
        out: &mut Vec<u8>,
        stop_at: usize,
        own: RawFd,
    ) -> (Next, BatchEnd) {
        let holdings = self.holdings.clone();
        let mut let_goes = crate::lifecycle::let_goes();
        loop {
            // Another connection's call finished this connection's close: its client left,
            // reads no reply, and a request it sent before leaving must not run after the
            // close (a release would give back twice what the close gave back). The place is
            // held for a few requests at a time, not taken for each: it is two atomic
            // operations, a tenth of a pipelined `dict.get`.
            let Some(serving) = holdings.serve() else {
                return (Next::Close(Disconnect::ClientClosed), BatchEnd::Read);
            };
            for _ in 0..REQUESTS_PER_SERVE {
                // Requests behind an `auth` that waits stay unread until it is answered.
                if out.len() >= stop_at || self.pending_auth.is_some() {
                    return (Next::Continue, BatchEnd::Full);
                }
                match decoder.next_frame() {
                    Ok(Some(frame)) => match self.handle_frame(frame, decoder, out) {
                        Next::Continue => {}
                        other => return (other, BatchEnd::Read),
                    },
                    Ok(None) => return (Next::Continue, BatchEnd::Read),
                    Err(e) => return (Next::Close(self.frame_error(&e, out)), BatchEnd::Read),
                }
                // With nothing behind it, the connection's next event checks instead.
                let now = crate::lifecycle::let_goes();
                if now != let_goes {
                    let_goes = now;
                    if decoder.buffered() > 0 && self.shared.spinners.others_ready(own) {
                        return (Next::Continue, BatchEnd::GaveWay);
                    }
                }
            }
            // Let a settling call in between: it waits for this place at most `SETTLE_WAIT`.
            drop(serving);
        }
    }

    /// Answers a frame that could not be read, and says why the connection closes.
    fn frame_error(&self, e: &FrameError, out: &mut Vec<u8>) -> Disconnect {
        let (name, reason) = if e.is_limit() {
            (ErrorName::LimitError, Disconnect::LimitExceeded)
        } else {
            (ErrorName::ProtocolError, Disconnect::ProtocolError)
        };
        let err = CallError::new(name, format!("{e}; closing the connection"));
        info!(error = err.to_string().as_str(), "closing connection");
        match e.msgid {
            Some(msgid) => encode::response_err(out, msgid, &err),
            None => error_notification(out, name, &err.message),
        }
        reason
    }

    fn handle_frame(
        &mut self,
        frame: bytes::Bytes,
        decoder: &mut FrameDecoder,
        out: &mut Vec<u8>,
    ) -> Next {
        let envelope = envelope::parse(frame);
        if !self.authenticated {
            if let Some(refused) = refused_before_auth(&envelope) {
                warn!(
                    from = self.peer().to_string().as_str(),
                    "closing connection: {refused} before authenticating"
                );
                write_refusal(&envelope, refused, out);
                return Next::Close(Disconnect::RefusedBeforeAuth);
            }
        }
        let (msgid, method, mut params) = match envelope {
            Ok(Envelope::Request {
                msgid,
                method,
                params,
            }) => (msgid, method, params),
            Ok(Envelope::Notification { method, params }) => {
                self.notification(&method, &params);
                return Next::Continue;
            }
            // Responses from a client are never answered.
            Ok(_) => return Next::Continue,
            Err(e) => {
                debug!(error = e.to_string().as_str(), "bad envelope");
                if let Some(msgid) = e.msgid {
                    let err = CallError::new(ErrorName::ProtocolError, e.to_string());
                    encode::response_err(out, msgid, &err);
                }
                return Next::Continue;
            }
        };
        params.set_framed_ext(decoder.last_frame_had_ext());
        let counter = self.recent.count(&method, &self.shared.stats);
        self.stats.called();
        // Write the success header, let the method append its result after it, and replace
        // both with an error response if the method fails (or remove them if it parks).
        let start = out.len();
        encode::response_ok(out, msgid, &[]);
        let failure = match self.call(msgid, &method, &params, decoder, out) {
            // Closing without an answer (the client left): the header written goes too.
            Ok(Step::Answered(Next::Close(reason))) => {
                out.truncate(start);
                return Next::Close(reason);
            }
            Ok(Step::Answered(next)) => return next,
            Ok(Step::Deferred) => {
                out.truncate(start);
                return Next::Continue;
            }
            Ok(Step::Parked(parked, rest)) => {
                out.truncate(start);
                match self.park(parked, rest, counter) {
                    Ok(()) => return Next::Continue,
                    Err(err) => err,
                }
            }
            Err(err) => err,
        };
        out.truncate(start);
        encode::response_err(out, msgid, &failure);
        self.shared.stats.error(&self.stats, counter);
        match failure.name {
            // A failed `auth`, whatever the reason, ends the connection: a guesser gets one
            // attempt per connection.
            _ if method == "auth" => Next::Close(Disconnect::AuthFailed),
            ErrorName::LimitError => Next::Close(Disconnect::LimitExceeded),
            _ => Next::Continue,
        }
    }

    /// Applies a notification: `decref` (`PROTOCOL.md`, section 3.2) and `cancel` (section
    /// 4.1). A notification is never answered, so a malformed one is only logged.
    fn notification(&mut self, method: &str, params: &Params) {
        if !self.authenticated {
            return;
        }
        match method {
            "decref" => {
                if let Err(e) = dispatch::decref(&mut self.reach.held, params) {
                    debug!(
                        error = e.to_string().as_str(),
                        "malformed decref notification ignored"
                    );
                }
                self.shared.registry.reap();
            }
            "cancel" => self.cancel(params),
            _ => {}
        }
    }

    /// Cancels the parked calls whose msgids are the params: each is cancelled, and its
    /// [`Parked`] dropped, which takes the waiter out of its line or gives back a grant that
    /// reached it and was not written (the lifecycle core's cancellation). The call is then
    /// answered `CancelledError` ([`Session::parked_failed`]). A msgid with no parked call
    /// (answered already, or never parked) is ignored: its reply is or was on its way.
    fn cancel(&mut self, params: &Params) {
        for raw in params.iter() {
            let Some(msgid) = agora_proto::params::int_u64(&raw) else {
                debug!("malformed cancel notification ignored");
                continue;
            };
            if let Some(&id) = u32::try_from(msgid).ok().and_then(|m| self.cancels.get(&m)) {
                self.parked.cancel(id);
            }
        }
    }

    /// Starts waiting for a parked call's reply, within the in-flight limit.
    fn park(
        &mut self,
        parked: Parked,
        rest: Option<chain::Rest>,
        counter: usize,
    ) -> Result<(), CallError> {
        let max_in_flight = self.shared.limits.max_in_flight();
        if self.parked.len() >= max_in_flight {
            // Dropping the parked call takes its waiter out of line.
            drop(parked);
            return Err(CallError::new(
                ErrorName::LimitError,
                format!(
                    "more than {max_in_flight} calls in flight on one connection; closing the \
                     connection"
                ),
            ));
        }
        let msgid = parked.msgid;
        let id = self.parked.park(parked.reply());
        self.parked_calls.insert(
            id,
            ParkedCall {
                msgid,
                counter,
                rest,
            },
        );
        self.cancels.insert(msgid, id);
        self.stats.set_parked(self.parked.len());
        Ok(())
    }

    /// Forgets the parked call `id`, which has ended. Its msgid's cancel handle goes too,
    /// unless a later call reusing the msgid has it now.
    fn forget(&mut self, id: ParkedId) -> Option<ParkedCall> {
        self.stats.set_parked(self.parked.len());
        let call = self.parked_calls.remove(&id)?;
        if self.cancels.get(&call.msgid) == Some(&id) {
            self.cancels.remove(&call.msgid);
        }
        Some(call)
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
                let config = &self.shared.config;
                write_hello(out, &challenge, &config.run, &config.limits);
                return Ok(Step::Answered(Next::Continue));
            }
            "auth" => return self.auth(msgid, p, decoder, out),
            _ => {}
        }
        if !self.authenticated {
            return Err(CallError::new(
                ErrorName::AuthenticationError,
                "authenticate first: call hello, then auth",
            ));
        }
        if self.reach.role != auth::Role::Admin && auth::ADMIN_METHODS.contains(&method) {
            return Err(CallError::new(
                ErrorName::PermissionError,
                format!(
                    "{method} is reserved to the operator: this connection authenticated with \
                     the worker authkey; authenticate with the manager's admin authkey \
                     (--admin-authkey-file or AGORA_ADMIN_AUTHKEY) to call it"
                ),
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
            "stats" => {
                p.expect(method, 0, 0)?;
                self.recent.flush(&self.shared.stats);
                crate::stats::write_stats(&self.shared, out);
                Ok(Step::Answered(Next::Continue))
            }
            "limits" => {
                p.expect(method, 0, 1)?;
                let limits = &self.shared.limits;
                if !p.is_empty() {
                    // Every entry is checked before any applies: a bad one changes nothing.
                    limits.apply(&crate::limits::parse_changes(&p.value(0)?)?);
                }
                crate::limits::write_current(limits, out);
                Ok(Step::Answered(Next::Continue))
            }
            "chain" => self.chain(msgid, p, out),
            _ => {
                let caller = Caller {
                    session: self.id,
                    holdings: &self.holdings,
                };
                let registry = &self.shared.registry;
                match dispatch::call(registry, &mut self.reach, method, p, &caller, out)? {
                    Outcome::Done => Ok(Step::Answered(Next::Continue)),
                    Outcome::Parked(park) => Ok(Step::Parked(
                        Parked::new(msgid, park, caller.holder()),
                        None,
                    )),
                }
            }
        }
    }

    /// Runs a chain (see [`chain`]): its first call, and the others now or, if the first
    /// parks, when its reply is written ([`Session::write_parked`]).
    fn chain(&mut self, msgid: u32, p: &Params, out: &mut Vec<u8>) -> Result<Step, CallError> {
        let mut calls = chain::parse(p)?.into_iter();
        encode::array_header(out, calls.len());
        let Some((method, params)) = calls.next() else {
            return Err(CallError::runtime("a chain with no call"));
        };
        let first_waits = agora_proto::methods::may_wait(&method);
        let entry = out.len();
        chain::begin_ok(out);
        let result = out.len();
        let caller = Caller {
            session: self.id,
            holdings: &self.holdings,
        };
        let registry = &self.shared.registry;
        match dispatch::call(registry, &mut self.reach, &method, &params, &caller, out) {
            Ok(Outcome::Done) => {
                let go = chain::goes_on(first_waits, &out[result..]);
                self.run_rest(calls, go, out);
            }
            Ok(Outcome::Parked(park)) => {
                let parked = Parked::new(msgid, park, caller.holder());
                let rest = chain::Rest {
                    calls: calls.collect(),
                    first_waits,
                };
                return Ok(Step::Parked(parked, Some(rest)));
            }
            Err(e) => {
                out.truncate(entry);
                chain::failed(out, &e);
                self.run_rest(calls, false, out);
            }
        }
        Ok(Step::Answered(Next::Continue))
    }

    /// Appends the entries of a chain's calls after the first: each run if `go`, each `nil`
    /// (not run) otherwise. None of them waits ([`chain::parse`] refuses those that may).
    fn run_rest(
        &mut self,
        calls: impl IntoIterator<Item = (String, Params)>,
        go: bool,
        out: &mut Vec<u8>,
    ) {
        for (method, params) in calls {
            if !go {
                chain::skipped(out);
                continue;
            }
            let entry = out.len();
            chain::begin_ok(out);
            let caller = Caller {
                session: self.id,
                holdings: &self.holdings,
            };
            let registry = &self.shared.registry;
            let failure =
                match dispatch::call(registry, &mut self.reach, &method, &params, &caller, out) {
                    Ok(Outcome::Done) => continue,
                    Ok(Outcome::Parked(park)) => match wait_in_chain(registry, park, &caller) {
                        Ok(grant) => {
                            grant.encode(out);
                            continue;
                        }
                        Err(e) => e,
                    },
                    Err(e) => e,
                };
            out.truncate(entry);
            chain::failed(out, &failure);
        }
    }

    /// `auth`: takes the attempt's place in its peer's line ([`crate::throttle`]), then checks
    /// it now, or once its place comes ([`Step::Deferred`]).
    fn auth(
        &mut self,
        msgid: u32,
        p: &Params,
        decoder: &mut FrameDecoder,
        out: &mut Vec<u8>,
    ) -> Result<Step, CallError> {
        let now = tokio::time::Instant::now();
        let peer = self.peer();
        let throttle = &self.shared.auth_throttle;
        // A connection authenticated already (authenticating again) has no deadline of its
        // own left; its attempt may wait as long as a new connection's.
        let deadline = if self.authenticated {
            now + self.shared.limits.auth_timeout()
        } else {
            self.auth_deadline
        };
        let due = match throttle.admit(peer, now, deadline) {
            Admission::At(due) => due,
            Admission::Refused { retry_in, log } => {
                if let Some(unlogged) = log {
                    warn!(
                        from = peer.to_string().as_str(),
                        unlogged,
                        "authentication refused unchecked: too many attempts from this peer"
                    );
                }
                return Err(CallError::new(
                    ErrorName::AuthenticationError,
                    format!(
                        "too many authentication attempts from {peer}; try again in {} s",
                        retry_in.as_secs() + 1
                    ),
                ));
            }
        };
        let attempt = self.attempt(p);
        if due > now {
            debug!(from = peer.to_string().as_str(), wait = ?(due - now), "auth waits for its place");
            self.pending_auth = Some(PendingAuth {
                msgid,
                attempt,
                due,
            });
            return Ok(Step::Deferred);
        }
        self.settle(attempt, decoder)?;
        out.extend_from_slice(encode::TRUE);
        Ok(Step::Answered(Next::Continue))
    }

    /// The attempt `auth` params make: the digest, and the challenge it answers (used up).
    fn attempt(&mut self, p: &Params) -> Attempt {
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
        Ok((challenge, digest.to_vec()))
    }

    /// Checks an attempt: authenticates the connection, with the role its key gives, or
    /// logs why it failed.
    fn settle(&mut self, attempt: Attempt, decoder: &mut FrameDecoder) -> Result<(), CallError> {
        let config = &self.shared.config;
        let role = attempt.and_then(|(challenge, digest)| {
            let admin_key = config.admin_authkey.as_deref();
            auth::role(&config.authkey, admin_key, &challenge, &digest).ok_or_else(|| {
                CallError::new(
                    ErrorName::AuthenticationError,
                    "wrong digest: the authkey differs from the manager's (check AGORA_AUTHKEY)",
                )
            })
        });
        let peer = self.peer();
        match role {
            Ok(role) => {
                self.shared
                    .auth_throttle
                    .succeeded(peer, tokio::time::Instant::now());
                self.authenticated = true;
                self.reach.role = role;
                self.stats.set_authenticated();
                decoder.set_limits(config.limits);
                Ok(())
            }
            Err(e) => {
                self.authenticated = false;
                warn!(
                    from = peer.to_string().as_str(),
                    reason = e.message.as_str(),
                    "authentication failed"
                );
                Err(e)
            }
        }
    }

    /// When the `auth` that waits for its place may be checked.
    fn auth_due(&self) -> Option<tokio::time::Instant> {
        self.pending_auth.as_ref().map(|pending| pending.due)
    }

    /// Checks the `auth` whose place has come and appends its answer: the connection goes on
    /// authenticated, or closes.
    fn settle_pending_auth(&mut self, decoder: &mut FrameDecoder, out: &mut Vec<u8>) -> Next {
        let Some(PendingAuth { msgid, attempt, .. }) = self.pending_auth.take() else {
            return Next::Continue;
        };
        match self.settle(attempt, decoder) {
            Ok(()) => {
                encode::response_ok(out, msgid, encode::TRUE);
                Next::Continue
            }
            Err(err) => {
                encode::response_err(out, msgid, &err);
                let counter = crate::stats::method_index("auth");
                self.shared.stats.error(&self.stats, counter);
                Next::Close(Disconnect::AuthFailed)
            }
        }
    }

    /// Whom this connection's `auth` attempts count against.
    fn peer(&self) -> Peer {
        self.peer
    }

    /// Appends the reply of a parked call that completed. Gives back the grant with its ticket
    /// when the reply carried one, to be given back if it is never written (an error reply
    /// granted nothing).
    fn write_parked(
        &mut self,
        id: ParkedId,
        (msgid, reply, ticket): ParkedOutput,
        out: &mut Vec<u8>,
    ) -> Option<(Reply, Ticket)> {
        let call = self.forget(id);
        if let (Err(_), Some(call)) = (&reply, &call) {
            self.shared.stats.error(&self.stats, call.counter);
        }
        if let Some(rest) = call.and_then(|c| c.rest) {
            return self.write_parked_chain(msgid, reply, ticket, rest, out);
        }
        match &reply {
            Ok(grant) => {
                encode::response_ok(out, msgid, &[]);
                self.write_grant(grant, out);
                Some((reply, ticket))
            }
            Err(err) => {
                encode::response_err(out, msgid, err);
                None
            }
        }
    }

    /// Appends a parked call's grant, and counts the references in it for this connection
    /// while the grant still pins what it carries.
    fn write_grant(&mut self, grant: &Grant, out: &mut Vec<u8>) {
        let start = out.len();
        grant.encode(out);
        let (registry, reach) = (&self.shared.registry, &mut self.reach);
        if registry.reaper().any_nested() {
            registry.count_refs(&mut reach.cache, &mut reach.held, &out[start..]);
        }
    }

    /// [`Session::write_parked`] for a chain whose first call was parked: its entry, then the
    /// others, run now (if it got what it waited for and the connection still serves).
    fn write_parked_chain(
        &mut self,
        msgid: u32,
        reply: Reply,
        ticket: Ticket,
        rest: chain::Rest,
        out: &mut Vec<u8>,
    ) -> Option<(Reply, Ticket)> {
        encode::response_ok(out, msgid, &[]);
        encode::array_header(out, 1 + rest.calls.len());
        let holdings = self.holdings.clone();
        let serving = holdings.serve();
        match &reply {
            Ok(grant) => {
                chain::begin_ok(out);
                let start = out.len();
                self.write_grant(grant, out);
                let go = serving.is_some() && chain::goes_on(rest.first_waits, &out[start..]);
                self.run_rest(rest.calls, go, out);
                Some((reply, ticket))
            }
            Err(err) => {
                chain::failed(out, err);
                self.run_rest(rest.calls, false, out);
                None
            }
        }
    }

    /// Answers a parked call that ended without a reply: cancelled by the client
    /// (`CancelledError`), or failed (a bug: it is reported, not hidden).
    fn parked_failed(&mut self, id: ParkedId, e: &Ended, out: &mut Vec<u8>) {
        let cancelled = *e == Ended::Cancelled;
        if !cancelled {
            tracing::error!(error = e.to_string().as_str(), "a parked call failed");
        }
        if let Some(ParkedCall { msgid, counter, .. }) = self.forget(id) {
            let err = if cancelled {
                CallError::new(ErrorName::CancelledError, "the call was cancelled")
            } else {
                CallError::runtime(format!("internal error in the manager: {e}"))
            };
            encode::response_err(out, msgid, &err);
            self.shared.stats.error(&self.stats, counter);
        }
    }

    /// Ends the connection: parked calls are answered with `ShutdownError` when the manager is
    /// stopping (best effort), or given back; then whatever the connection held is released.
    async fn finish<S: AsyncWrite + Unpin>(mut self, stream: &mut S, stopping: bool) {
        if stopping {
            // Before this connection's own parked calls are read: each is answered
            // `ShutdownError` by its object, never granted by another connection's close.
            self.shared.registry.stop();
        }
        self.parked.cancel_all();
        let mut out = Vec::new();
        let mut undelivered = Vec::new();
        while let Some((id, done)) = self.parked.next_done(true).await {
            match done {
                Ok(output) if stopping => {
                    undelivered.extend(self.write_parked(id, output, &mut out))
                }
                Ok((_, reply, ticket)) => ticket.undeliver(reply),
                Err(_) => {
                    let msgid = self.forget(id).map(|c| c.msgid);
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
        // While the manager stops, every parked call of every connection is answered
        // `ShutdownError` before any holding is released, so this close grants nothing (and
        // raises no owner-died notice) to a waiter of another connection that has not yet
        // seen the stop (`PROTOCOL.md` section 4.1).
        if *self.shared.shutdown.borrow() {
            self.shared.registry.stop();
        }
        self.shared.stats.close(self.id);
        self.recent.flush(&self.shared.stats);
        self.holdings.closing();
        self.holdings.release_all(self.id);
        // The connection stops holding objects: those it alone held are freed, unless the
        // manager is stopping, when every parked call must get `ShutdownError` from its own
        // connection, not `UnknownObjectError` from an object another connection's close freed.
        self.reach = Reach::default();
        if !*self.shared.shutdown.borrow() {
            self.shared.registry.reap();
        }
    }
}

/// Appends the notification `[2, "error", [name, message]]`, which tells a client why its
/// connection closes when there is no request to answer with that.
pub fn error_notification(out: &mut Vec<u8>, name: ErrorName, message: &str) {
    let mut name_bytes = Vec::new();
    encode::str(&mut name_bytes, name.as_str());
    let mut message_bytes = Vec::new();
    encode::str(&mut message_bytes, message);
    encode::notification(out, "error", &[&name_bytes, &message_bytes]);
}

/// What is wrong with a message sent before authenticating, if anything: only `hello` and
/// `auth` requests are allowed, and notifications (never acted on before `auth`). Bytes that
/// are no message (an HTTP request, say, which reads as a run of MessagePack ints) close the
/// connection at their first value.
fn refused_before_auth(
    envelope: &Result<Envelope, agora_proto::EnvelopeError>,
) -> Option<&'static str> {
    match envelope {
        Ok(Envelope::Request { method, .. }) if matches!(method.as_str(), "hello" | "auth") => None,
        Ok(Envelope::Request { .. }) => Some("a call other than hello or auth"),
        // Ignored, as on any connection: some clients send one as they connect.
        Ok(Envelope::Notification { .. }) => None,
        Ok(_) => Some("a response"),
        Err(_) => Some("a message that is not a MessagePack-RPC request"),
    }
}

/// Tells a connection closed by [`refused_before_auth`] why: the request's msgid, when one
/// can be read, is answered `AuthenticationError`; otherwise a notification says so.
fn write_refusal(
    envelope: &Result<Envelope, agora_proto::EnvelopeError>,
    refused: &str,
    out: &mut Vec<u8>,
) {
    let message =
        format!("{refused} before authenticating: call hello, then auth; closing the connection");
    let msgid = match envelope {
        Ok(Envelope::Request { msgid, .. }) => Some(*msgid),
        Err(e) => e.msgid,
        _ => None,
    };
    let name = ErrorName::AuthenticationError;
    match msgid {
        Some(msgid) => encode::response_err(out, msgid, &CallError::new(name, message)),
        None => error_notification(out, name, &message),
    }
}

/// One write to the socket that never waits: `WouldBlock` when its buffer is full. Bypasses
/// tokio's readiness tracking, which is harmless: tokio writes again when it thinks the socket
/// writable and learns otherwise from `EAGAIN`.
pub fn send_now(fd: RawFd, bytes: &[u8]) -> std::io::Result<usize> {
    loop {
        // SAFETY: `fd` is an open socket; `bytes` is readable for its length.
        let n = unsafe {
            libc::send(
                fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        match usize::try_from(n) {
            Ok(n) => return Ok(n),
            Err(_) => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// A connection's byte stream as the session reads and writes it: a Unix or TCP socket, or a
/// TLS connection ([`crate::tls::TlsConn`]). Besides the runtime's reads and writes, the
/// session reads and writes without waiting when it polls for a request or writes replies
/// at once; a plain socket does that with one system call, a TLS connection through rustls.
pub trait Transport: AsyncRead + AsyncWrite + AsRawFd + Unpin {
    /// One read that never waits, into `buf`'s spare room: `None` when nothing can be read
    /// now, `Some(Ok(0))` at the end of the stream.
    fn read_now(&mut self, buf: &mut BytesMut) -> Option<std::io::Result<usize>>;

    /// One write that never waits: how much of `bytes` was taken (`WouldBlock` when none).
    fn write_now(&mut self, bytes: &[u8]) -> std::io::Result<usize>;

    /// True while bytes taken by [`Transport::write_now`] or a write wait to go out
    /// (encrypted TLS records the socket has no room for); they go with the next write, or
    /// with a flush. Never for a plain socket.
    fn pending_output(&self) -> bool {
        false
    }
}

impl Transport for tokio::net::TcpStream {
    fn read_now(&mut self, buf: &mut BytesMut) -> Option<std::io::Result<usize>> {
        recv_now(self.as_raw_fd(), buf)
    }

    fn write_now(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        send_now(self.as_raw_fd(), bytes)
    }
}

impl Transport for tokio::net::UnixStream {
    fn read_now(&mut self, buf: &mut BytesMut) -> Option<std::io::Result<usize>> {
        recv_now(self.as_raw_fd(), buf)
    }

    fn write_now(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        send_now(self.as_raw_fd(), bytes)
    }
}

/// One read from `stream` into `buf`'s spare room.
fn poll_read_into<S: AsyncRead + Unpin>(
    stream: &mut S,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<std::io::Result<usize>> {
    let spare = buf.spare_capacity_mut();
    let start = spare.as_ptr();
    let mut read = tokio::io::ReadBuf::uninit(spare);
    match Pin::new(stream).poll_read(cx, &mut read) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
        Poll::Pending => return Poll::Pending,
    }
    let n = read.filled().len();
    if n > 0 && read.filled().as_ptr() != start.cast() {
        return Poll::Ready(Err(std::io::Error::other(
            "the stream read into another buffer",
        )));
    }
    // SAFETY: the read initialised the first `n` bytes of the spare room (checked above to be
    // where they were put).
    unsafe { buf.set_len(buf.len() + n) };
    Poll::Ready(Ok(n))
}

fn write_hello(out: &mut Vec<u8>, challenge: &[u8], run: &crate::Run, limits: &Limits) {
    encode::map_header(out, 7);
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
    // What an authenticated connection may send, so that a client refuses an oversized
    // request itself instead of losing its connection to it.
    encode::str(out, "limits");
    encode::map_header(out, 3);
    encode::str(out, "max_message_bytes");
    encode::uint(out, limits.max_message_bytes as u64);
    encode::str(out, "max_depth");
    encode::uint(out, limits.max_depth as u64);
    encode::str(out, "max_container_len");
    encode::uint(out, limits.max_container_len as u64);
}

/// What woke the connection loop.
enum Event {
    Stop,
    /// The connection has not authenticated within [`crate::Config::auth_timeout`].
    AuthTimeout,
    /// The place of the `auth` that waits has come.
    AuthDue,
    Read(std::io::Result<usize>),
    /// Some of the unwritten replies were written.
    Wrote(std::io::Result<usize>),
    /// Output the stream held back (TLS records) was flushed.
    Flushed(std::io::Result<()>),
    /// Requests read earlier wait in the decoder, and there is room for their replies again.
    Backlog,
    ParkedDone(Done<ParkedOutput>),
}

/// Where [`Session::process`] stopped answering what was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BatchEnd {
    /// Everything read was answered (or the connection is closing).
    Read,
    /// The replies reached their bound: the rest wait until they are written.
    Full,
    /// A request let go of the last thing the client held and another connection has input
    /// waiting: the rest wait until the others have been read (the connection's next event,
    /// which sees the let-go too).
    GaveWay,
}

/// Reads the connection's next request if it arrives before the slot's deadline, polling the
/// socket without blocking, and tells `spin` whether that paid off. This runtime thread is the
/// connection's while it polls (no other task runs on it meanwhile), except that a connection
/// whose client `holds` nothing, once it has polled [`GIVE_WAY_AFTER`], stops as soon as
/// another connection has input waiting, and gives the thread back (see [`crate::spin`]).
/// `None`: nothing came in time, another connection needs the thread, or the manager is
/// stopping.
fn poll_for_request<S: Transport>(
    stream: &mut S,
    decoder: &mut FrameDecoder,
    spin: &mut SpinState,
    mut slot: SpinSlot<'_>,
    holds: bool,
    stopping: &watch::Receiver<bool>,
) -> Option<std::io::Result<usize>> {
    slot.start();
    let mut tries = 0u32;
    loop {
        if let Some(read) = stream.read_now(decoder.read_buf(READ_CHUNK)) {
            spin.polled(&slot, true);
            return Some(read);
        }
        tries += 1;
        if !holds
            && slot.polled_for() > GIVE_WAY_AFTER
            && tries % OTHERS_EVERY == 0
            && slot.others_ready(stream.as_raw_fd())
        {
            spin.polled(&slot, false);
            return None;
        }
        if !slot.again() || *stopping.borrow() {
            spin.polled(&slot, false);
            return None;
        }
        // A client on another CPU answers within a few microseconds; one that has not may be
        // waiting for this very CPU (the kernel tends to wake a client on its server's CPU),
        // so from then on every few polls offer the CPU to whoever waits for it.
        if slot.polled_for() > YIELD_AFTER && tries % YIELD_EVERY == 0 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Logs a write that failed: an error, or a socket that took nothing.
fn write_failed(result: &std::io::Result<usize>) {
    match result {
        Err(e) => debug!(error = e.to_string().as_str(), "write failed"),
        Ok(n) => debug!(wrote = n, "write failed"),
    }
}

/// Every how many polls a polling connection checks whether others have requests waiting.
const OTHERS_EVERY: u32 = 4;

/// How long a connection whose client holds nothing polls before it gives way to other
/// connections with requests waiting. Long enough for a client calling in a loop to send its
/// next request: giving way counts as wasted polling, so a connection that gives way before
/// its client's usual turnaround backs off, and its next requests wait for the runtime's
/// reactor instead. With 4 µs, 4 Rust client processes alternating `dict` get and set
/// through one manager made 96k calls/s against 145k with 20 µs (median of 6 interleaved
/// rounds each; 16 processes 131k against 154k, 4 pipelining 16 deep 899k against 951k).
/// Giving way at once cost the chained ticket grab at 8 workers a third of its rate (the
/// releaser's connection, polling for its next acquire, gave its thread to the next
/// holder's, which then held it polling for its own client).
const GIVE_WAY_AFTER: Duration = Duration::from_micros(20);

/// Gives the runtime's thread to the connections other than `own` until none has input
/// waiting, or for [`GIVE_WAY_YIELDS`] turns of the runtime at most (a connection that is not
/// reading, its client not taking its replies, keeps input waiting for good). Checking beats
/// trusting one yield: which task the runtime resumes first after a yield is its own affair
/// (tokio runs the task woken last first, and a yielding task is woken after those the
/// reactor woke).
async fn let_others_in(spinners: &Spinners, own: RawFd) {
    for _ in 0..GIVE_WAY_YIELDS {
        tokio::task::yield_now().await;
        if !spinners.others_ready(own) {
            return;
        }
    }
}

/// The most turns of the runtime a connection whose client let go of what it held gives the
/// other connections with input waiting ([`let_others_in`]).
const GIVE_WAY_YIELDS: usize = 4;

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
/// shuts down, logging when it connects and when it ends.
///
/// Everything the connection logs is inside its [`crate::conn_log::span`], carrying a random uuid and the peer,
/// so one connection can be followed through the log: peers repeat (every Unix socket client is
/// the same unnamed peer) and the numeric session id is only unique within one run, while the
/// uuid is unique across runs and managers, so logs of several can be merged.
pub async fn serve<S>(stream: S, shared: Arc<Shared>, peer: String)
where
    S: Transport,
{
    let peer = PeerInfo::of(stream.as_raw_fd(), peer);
    crate::server::connection(std::future::ready(Ok(stream)), shared, peer).await
}

/// Serves a connection with `peer`, accepted at `accepted` and known by `id`, inside its
/// [`crate::conn_log::span`]: it must authenticate within [`crate::Config::auth_timeout`] of then (a TLS
/// connection's handshake counts). Gives how it ended.
pub async fn serve_from<S>(
    stream: S,
    shared: Arc<Shared>,
    id: uuid::Uuid,
    peer: &PeerInfo,
    accepted: tokio::time::Instant,
) -> Ending
where
    S: Transport,
{
    let fd = stream.as_raw_fd();
    let stats = ConnStats::new(id, peer);
    let mut conn = Connection {
        fd,
        stream,
        stopping: shared.shutdown.subscribe(),
        stop: Box::pin(crate::server::stopped_owned(shared.shutdown.subscribe())),
        decoder: FrameDecoder::new(shared.config.pre_auth_limits()),
        session: Session::new(
            shared.clone(),
            stats,
            fd,
            accepted + shared.limits.auth_timeout(),
        ),
        out: Vec::with_capacity(READ_CHUNK),
        written: 0,
        sent: Vec::new(),
        backlog: false,
        eof: false,
        spin: SpinState::new(),
        bytes_in: 0,
        bytes_out: 0,
        shared,
    };
    conn.session.holdings.watch(conn.fd);
    conn.shared.spinners.watch(conn.fd);
    debug!(session = conn.session.id, "serving");
    let reason = conn.run().await;
    conn.shared.spinners.unwatch(conn.fd);
    let stop = reason.stops_manager();
    // From here this connection serves nothing: another connection's call that touches what
    // it holds finishes its close first.
    conn.session.holdings.closing();
    if stop {
        // First of all: nothing this connection gives back (below) or releases (when its
        // session drops) may be granted to a waiter while the manager stops.
        conn.shared.registry.stop();
        conn.drain_out().await;
    }
    // Replies never written: their grants go back.
    conn.undeliver();
    let ending = Ending {
        reason,
        calls: conn.session.stats.calls(),
        errors: conn.session.stats.errors(),
        bytes_in: conn.bytes_in,
        bytes_out: conn.bytes_out,
    };
    let Connection {
        mut stream,
        session,
        ..
    } = conn;
    session.finish(&mut stream, stop).await;
    let _ = stream.shutdown().await;
    ending
}

/// One connection's loop state: its socket, what it read and is about to write.
struct Connection<S> {
    /// First, so that a task dropped mid-flight drops (and releases) the session before its
    /// socket closes: the descriptor its holdings watch is never one reused by another.
    session: Session,
    stream: S,
    fd: RawFd,
    shared: Arc<Shared>,
    stopping: watch::Receiver<bool>,
    /// Completes once shutdown has started: one wait on [`Connection::stopping`]'s channel for
    /// the connection's life, polled only when the connection has nothing else to do. A wait
    /// built and polled afresh for every event (a waiter registered on the channel and removed
    /// again) cost a tenth of a single call's instructions in the manager. Polled until it
    /// completes, never after: [`Event::Stop`] ends the connection.
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    decoder: FrameDecoder,
    /// Replies waiting to be written, from `written` on.
    out: Vec<u8>,
    /// How much of `out` is written.
    written: usize,
    /// The grants in `out`, each with where its reply ends in `out`, to give back if they
    /// cannot be written.
    sent: Vec<(usize, Reply, Ticket)>,
    /// Processing stopped at [`crate::Config::max_output_bytes`], or to give way: requests
    /// may wait in the decoder, to be answered before anything more is read.
    backlog: bool,
    /// The client has sent everything it will: end-of-file was read.
    eof: bool,
    spin: SpinState,
    /// Bytes read from the client, for the `disconnected` line.
    bytes_in: u64,
    /// Bytes of replies written, for the `disconnected` line.
    bytes_out: u64,
}

/// How the loop goes on after an event.
enum Flow {
    /// Serve the next event (after writing the replies).
    Next(Next),
    /// Stop at once, for this reason.
    End(Disconnect),
}

impl<S> Connection<S>
where
    S: Transport,
{
    /// Serves events until the connection ends; says why it ended.
    async fn run(&mut self) -> Disconnect {
        // Polling places borrow the shared state; this handle outlives them.
        let shared = self.shared.clone();
        let mut slot = None;
        let mut let_go = false;
        loop {
            if self.eof && !self.backlog && self.unwritten() == 0 && !self.stream.pending_output() {
                return Disconnect::ClientClosed;
            }
            let event = self.next_event(slot.take(), let_go).await;
            let answered = matches!(event, Event::Read(Ok(n)) if n > 0);
            let delivered = matches!(event, Event::ParkedDone((_, Ok(_))));
            if answered {
                self.spin
                    .request_arrived(&shared.config.spin, Instant::now());
            }
            let granted_before = crate::lifecycle::grants_sent();
            let let_goes_before = crate::lifecycle::let_goes();
            let next = match self.handle(event) {
                Flow::Next(next) => next,
                Flow::End(reason) => return reason,
            };
            let_go = crate::lifecycle::let_goes() != let_goes_before;
            // Poll for the next request after answering requests as they came, or after
            // handing the client a parked call's reply (a lock after a wait: its holder calls
            // again at once). A connection with parked calls sleeps so that their replies go
            // out at once. Nor after a request that granted a parked call (a release handing
            // the lock on):
            // the waiter's task runs next on this thread, and polling would hold its grant
            // back. The place is taken before writing, so that a preemption during the write
            // counts.
            let handed_on = crate::lifecycle::grants_sent() != granted_before;
            slot = (((answered && !handed_on) || delivered) && self.session.parked.is_empty())
                .then(|| self.spin.try_start(&shared.config.spin, &shared.spinners))
                .flatten();
            if let Err(reason) = self.flush_now() {
                return reason;
            }
            // Replies the client has not taken yet, or requests waiting for room: no polling.
            if self.unwritten() > 0 || self.backlog || self.stream.pending_output() {
                slot = None;
            }
            match next {
                Next::Continue => {}
                Next::Close(reason) => {
                    self.drain_out().await;
                    return reason;
                }
                Next::Shutdown => {
                    self.drain_out().await;
                    shared.shutdown.send_replace(true);
                    return Disconnect::ShutdownRequested;
                }
            }
        }
    }

    /// Bytes of replies not written yet.
    fn unwritten(&self) -> usize {
        self.out.len() - self.written
    }

    /// How many bytes of replies may wait unwritten before reading stops.
    fn output_bound(&self) -> usize {
        let limits = &self.shared.limits;
        if self.session.authenticated {
            limits.max_output_bytes()
        } else {
            limits.pre_auth_max_output_bytes()
        }
    }

    /// The next thing to do: a request polled for (when this connection holds a polling
    /// place), else whatever wakes the task first. While the unwritten replies are at
    /// [`crate::Config::max_output_bytes`] or more, neither requests nor parked replies are
    /// taken in: only writing them, or the manager stopping, moves the connection on.
    ///
    /// When the last requests let go of the last thing the client held (`let_go`), and
    /// another connection has input waiting (perhaps an `acquire` of what was let go, unread
    /// while this connection was served), the others are read first ([`let_others_in`]),
    /// whether this connection polls, reads at once, or has requests of its own left
    /// ([`BatchEnd::GaveWay`]): its client's next request must not overtake theirs. It does
    /// not poll then: by the time it is back, polling would find that request waiting or
    /// parking. Not counted as wasted polling: the client was quick, another was first.
    async fn next_event(&mut self, mut slot: Option<SpinSlot<'_>>, let_go: bool) -> Event {
        if let_go && self.shared.spinners.others_ready(self.fd) {
            slot = None;
            let_others_in(&self.shared.spinners, self.fd).await;
        }
        let polled = match slot {
            Some(slot) => poll_for_request(
                &mut self.stream,
                &mut self.decoder,
                &mut self.spin,
                slot,
                !self.session.holdings.is_empty(),
                &self.stopping,
            ),
            None => None,
        };
        if let Some(read) = polled {
            return Event::Read(read);
        }
        let room = self.unwritten() < self.output_bound();
        // An `auth` waiting for its place holds back every request behind it.
        let auth_due = self.session.auth_due();
        if room && self.backlog && auth_due.is_none() {
            return Event::Backlog;
        }
        let read = room && !self.eof && auth_due.is_none();
        let unauthenticated = !self.session.authenticated;
        let deadline = self.session.auth_deadline;
        let Connection {
            stream,
            out,
            written,
            decoder,
            stopping,
            stop,
            session,
            ..
        } = self;
        let unwritten = &out[*written..];
        let io = std::future::poll_fn(|cx| {
            if !unwritten.is_empty() {
                if let Poll::Ready(wrote) = Pin::new(&mut *stream).poll_write(cx, unwritten) {
                    return Poll::Ready(Event::Wrote(wrote));
                }
            } else if stream.pending_output() {
                if let Poll::Ready(flushed) = Pin::new(&mut *stream).poll_flush(cx) {
                    return Poll::Ready(Event::Flushed(flushed));
                }
            }
            if read {
                if let Poll::Ready(r) = poll_read_into(stream, cx, decoder.read_buf(READ_CHUNK)) {
                    return Poll::Ready(Event::Read(r));
                }
            }
            Poll::Pending
        });
        // One timer: an `auth` waiting for its place (never after the deadline: the throttle
        // refuses a place that would be), else the deadline of a connection still
        // authenticating. Made inside the future, so that the connections that need none
        // (every authenticated one) do not build one on each event.
        let timer = auth_due.or(unauthenticated.then_some(deadline));
        let alarm = async move {
            if let Some(at) = timer {
                tokio::time::sleep_until(at).await;
            }
        };
        // Shutdown comes first. Checked here, the wait on the channel is polled only when
        // nothing else is ready (last below), so a busy connection does not poll it per event.
        if *stopping.borrow() {
            return Event::Stop;
        }
        tokio::select! {
            biased;
            _ = alarm, if timer.is_some() => {
                if auth_due.is_some() { Event::AuthDue } else { Event::AuthTimeout }
            }
            // Run even without room, so that parked calls time out on time; taken with room.
            Some(done) = session.parked.next_done(room) => Event::ParkedDone(done),
            event = io => event,
            () = stop.as_mut() => Event::Stop,
        }
    }

    fn handle(&mut self, event: Event) -> Flow {
        match event {
            Event::Stop => {
                // Said before closing a connection still authenticating, when it fits: a
                // client that connected as the manager stopped learns why it closes, instead
                // of finding a peer that does not answer `hello`. (An authenticated client's
                // parked calls get their own `ShutdownError`.)
                if !self.session.authenticated {
                    self.tell_closing(ErrorName::ShutdownError, "the manager is shutting down");
                }
                Flow::End(Disconnect::Shutdown)
            }
            Event::AuthTimeout => {
                let timeout = self.shared.limits.auth_timeout();
                info!(?timeout, "closing connection: not authenticated in time");
                let message = format!(
                    "not authenticated within {timeout:?} of connecting; closing the connection"
                );
                self.tell_closing(ErrorName::AuthenticationError, &message);
                Flow::End(Disconnect::AuthTimeout)
            }
            Event::AuthDue => {
                let next = self
                    .session
                    .settle_pending_auth(&mut self.decoder, &mut self.out);
                // The requests behind it, read already, are answered next.
                self.backlog = true;
                Flow::Next(next)
            }
            Event::ParkedDone(done) => {
                self.answer_parked(done);
                Flow::Next(Next::Continue)
            }
            Event::Read(Ok(0)) => {
                self.eof = true;
                Flow::Next(Next::Continue)
            }
            Event::Read(Ok(n)) => {
                self.bytes_in += n as u64;
                self.process()
            }
            Event::Backlog => self.process(),
            Event::Read(Err(e)) => {
                debug!(error = e.to_string().as_str(), "read failed");
                Flow::End(Disconnect::ReadError)
            }
            Event::Wrote(Ok(n)) if n > 0 => {
                self.advance(n);
                Flow::Next(Next::Continue)
            }
            Event::Wrote(result) => {
                write_failed(&result);
                self.undeliver();
                Flow::End(Disconnect::WriteError)
            }
            Event::Flushed(Ok(())) => Flow::Next(Next::Continue),
            Event::Flushed(Err(e)) => {
                write_failed(&Err(e));
                self.undeliver();
                Flow::End(Disconnect::WriteError)
            }
        }
    }

    /// Tells the client why the connection closes, in an `error` notification written through
    /// the connection's transport (TLS or not), only between replies and only if it fits in
    /// the socket now: the connection closes anyway.
    fn tell_closing(&mut self, name: ErrorName, message: &str) {
        if self.unwritten() == 0 {
            let mut out = Vec::new();
            error_notification(&mut out, name, message);
            let _ = self.stream.write_now(&out);
        }
    }

    /// Answers what was read, as far as [`crate::Config::max_output_bytes`] allows. The
    /// replies to a long run of requests go out in parts as they are made (see
    /// [`EARLY_REPLY_BYTES`]); a part that cannot be written ends the connection.
    fn process(&mut self) -> Flow {
        let mut early = true;
        let (next, end) = loop {
            // Taken again after each part: writing one moves or empties the buffer, and the
            // bound is on the replies not yet written.
            let bound = self.written.saturating_add(self.output_bound());
            let part_end = self.out.len().saturating_add(EARLY_REPLY_BYTES);
            let stop_at = if early { bound.min(part_end) } else { bound };
            let (next, end) =
                self.session
                    .process(&mut self.decoder, &mut self.out, stop_at, self.fd);
            let part_done =
                end == BatchEnd::Full && stop_at < bound && matches!(next, Next::Continue);
            if !part_done || self.session.auth_due().is_some() {
                break (next, end);
            }
            // Only while nobody else waits for this thread, and while the client keeps up.
            early = !self.shared.spinners.others_ready(self.fd);
            if early {
                if let Err(reason) = self.flush_now() {
                    return Flow::End(reason);
                }
                early = self.unwritten() == 0 && !self.stream.pending_output();
            }
        };
        if end == BatchEnd::Full && !self.backlog && self.session.auth_due().is_none() {
            debug!(
                unwritten = self.unwritten(),
                "the client is not taking its replies: reading paused"
            );
        }
        self.backlog = end != BatchEnd::Read;
        Flow::Next(next)
    }

    /// Appends every parked reply that is ready, so they go out in one write.
    fn answer_parked(&mut self, first: Done<ParkedOutput>) {
        let mut done = Some(first);
        while let Some((id, result)) = done {
            match result {
                Ok(output) => {
                    let granted = self.session.write_parked(id, output, &mut self.out);
                    let end = self.out.len();
                    self.sent
                        .extend(granted.map(|(reply, ticket)| (end, reply, ticket)));
                }
                Err(e) => self.session.parked_failed(id, &e, &mut self.out),
            }
            done = self.session.parked.try_next_done();
        }
    }

    /// Notes that `n` more bytes were written: the grants whose replies are all out are
    /// delivered, and written bytes leave the buffer.
    fn advance(&mut self, n: usize) {
        self.bytes_out += n as u64;
        self.written += n;
        let written = self.written;
        self.sent.retain(|(end, ..)| *end > written);
        if self.written >= self.out.len() {
            self.out.clear();
            self.written = 0;
            if self.out.capacity() > SHRINK_ABOVE {
                self.out.shrink_to(READ_CHUNK);
            }
            self.spin.wrote(Instant::now());
        } else if self.written >= COMPACT_AT && self.written * 2 >= self.out.len() {
            self.out.drain(..self.written);
            self.sent.iter_mut().for_each(|(end, ..)| *end -= written);
            self.written = 0;
        }
    }

    /// Gives back the grants whose replies were not written.
    fn undeliver(&mut self) {
        self.sent.drain(..).for_each(|(_, r, t)| t.undeliver(r));
    }

    /// Writes what the socket takes now, without waiting; fails when the connection is gone
    /// (its grants are given back). The rest is written as the socket drains ([`Event::Wrote`]).
    fn flush_now(&mut self) -> Result<(), Disconnect> {
        // A grant goes only to a connection whose client has not already left: one whose
        // end-of-file is waiting to be read gives its grants back (so the next waiter gets a
        // plain grant, not an owner-died notice from a holder that never knew it held).
        if !self.sent.is_empty() && peer_closed(self.fd) {
            debug!("left with grants in flight");
            self.undeliver();
            return Err(Disconnect::ClientClosed);
        }
        while self.unwritten() > 0 {
            match self.stream.write_now(&self.out[self.written..]) {
                Ok(n) if n > 0 => self.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                result => {
                    write_failed(&result);
                    self.undeliver();
                    return Err(Disconnect::WriteError);
                }
            }
        }
        Ok(())
    }

    /// Writes the rest of the replies before the connection closes, waiting at most
    /// [`CLOSE_WRITE_TIMEOUT`]. What cannot be written is given back.
    async fn drain_out(&mut self) {
        if self.unwritten() == 0 && !self.stream.pending_output() {
            return;
        }
        let stream = &mut self.stream;
        let out = &self.out[self.written..];
        // The flush sends what a TLS stream holds back (for a socket it does nothing).
        let write = async move {
            stream.write_all(out).await?;
            stream.flush().await
        };
        match tokio::time::timeout(CLOSE_WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => {
                let rest = self.unwritten();
                self.advance(rest);
            }
            Ok(Err(e)) => write_failed(&Err(e)),
            Err(_) => warn!(
                unwritten = self.unwritten(),
                "closing connection with replies its client did not take"
            ),
        }
        self.undeliver();
    }
}

/// The answer of a call after a chain's first that parked. Only the etcd store's objects
/// park such calls (every call of theirs is answered by their task, within an etcd round
/// trip, never waiting for another client): their answer is waited for here, off the
/// runtime's other tasks. Anywhere else a parked call in a chain is refused (dropping it takes
/// its waiter out of line), as [`chain::parse`] refuses the methods that may wait.
fn wait_in_chain(
    registry: &crate::registry::Registry,
    park: crate::lifecycle::Park,
    caller: &Caller<'_>,
) -> Result<Grant, CallError> {
    match registry.store() {
        #[cfg(feature = "etcd")]
        crate::store::Store::Etcd(_) => {
            let parked = Parked::new(0, park, caller.holder());
            crate::store::etcd::wait_for(parked.reply()).1
        }
        _ => {
            drop((park, caller));
            Err(CallError::runtime(
                "a call after the first of a chain waited, where only the first call may",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use agora_proto::testing::RawClient;
    use rmpv::Value;

    const KEY: &[u8] = b"session tests";

    /// A Unix socket that keeps a copy of every write the connection makes.
    struct Recorded {
        inner: tokio::net::UnixStream,
        writes: Arc<parking_lot::Mutex<Vec<Vec<u8>>>>,
    }

    impl Recorded {
        fn note(&self, bytes: &[u8], result: &std::io::Result<usize>) {
            if let Ok(n) = result {
                self.writes.lock().push(bytes[..*n].to_vec());
            }
        }
    }

    impl AsyncRead for Recorded {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Recorded {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
            if let Poll::Ready(result) = &polled {
                self.note(buf, result);
            }
            polled
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    impl AsRawFd for Recorded {
        fn as_raw_fd(&self) -> RawFd {
            self.inner.as_raw_fd()
        }
    }

    impl Transport for Recorded {
        fn read_now(&mut self, buf: &mut BytesMut) -> Option<std::io::Result<usize>> {
            self.inner.read_now(buf)
        }

        fn write_now(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let result = self.inner.write_now(bytes);
            self.note(bytes, &result);
            result
        }
    }

    /// Serves one connection of `shared` through a [`Recorded`] socket; sends `DEPTH`
    /// pipelined `list.getitem` in one write, checks that every reply comes once and in
    /// order, and gives the sizes of the writes that carried them.
    async fn deep_pipeline_writes(shared: Arc<Shared>) -> Vec<usize> {
        const DEPTH: u32 = 1000;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        let writes = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let recorded = Recorded {
            inner: tokio::net::UnixStream::from_std(theirs).unwrap(),
            writes: writes.clone(),
        };
        let task = tokio::spawn(serve(recorded, shared, "test".into()));
        let (first, replies, batch_writes) = tokio::task::spawn_blocking(move || {
            let mut c = RawClient::from_unix_stream(ours).unwrap();
            c.authenticate(KEY);
            let id = c.create("list", None, vec![]);
            let items: Vec<Value> = (0..DEPTH).map(Value::from).collect();
            c.ok("list.extend", vec![Value::from(id), Value::Array(items)]);
            let first = c.msgid();
            let batch: Vec<u8> = (0..DEPTH)
                .flat_map(|i| {
                    let params = vec![Value::from(id), Value::from(i)];
                    agora_proto::testing::request(first + i, "list.getitem", params)
                })
                .collect();
            c.send(&batch);
            for _ in 1..DEPTH {
                c.msgid();
            }
            let frames: Vec<Vec<u8>> = (0..DEPTH).map(|_| c.frame()).collect();
            let replies_bytes = frames.concat();
            // The connection notes a write after making it: once a later call is answered,
            // every write of the batch has been noted.
            c.ok("ping", vec![]);
            let noted = writes.lock().clone();
            let start = noted
                .iter()
                .position(|w| !w.is_empty() && replies_bytes.starts_with(w))
                .expect("the batch's first write");
            let mut batch_writes = Vec::new();
            let mut taken = 0;
            for w in &noted[start..] {
                if taken == replies_bytes.len() {
                    break;
                }
                assert_eq!(
                    w[..],
                    replies_bytes[taken..taken + w.len()],
                    "replies written alone"
                );
                batch_writes.push(w.len());
                taken += w.len();
            }
            let replies: Vec<_> = frames
                .iter()
                .map(|f| agora_proto::testing::parse_response(f))
                .collect();
            (first, replies, batch_writes)
        })
        .await
        .unwrap();
        for (i, r) in (0u32..).zip(&replies) {
            assert_eq!(r.msgid, first + i, "replies in the order of the requests");
            let item = agora_proto::testing::dec(r.result.as_ref().expect("answered"));
            assert_eq!(item, Value::from(i));
        }
        task.abort();
        batch_writes
    }

    /// A deep pipeline read at once is answered in parts of about [`EARLY_REPLY_BYTES`], each
    /// written as soon as it is ready (so the client decodes while the rest are answered),
    /// every reply once and in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deep_pipeline_is_answered_in_parts_in_order() {
        let shared = Arc::new(Shared::new(Config::new(KEY.to_vec())).unwrap());
        let writes = deep_pipeline_writes(shared).await;
        // Each part is cut after the reply that reaches the size; a reply here is under 16
        // bytes.
        assert!(
            writes.len() > 1 && writes.iter().all(|&n| n < EARLY_REPLY_BYTES + 16),
            "the replies went out in writes of {writes:?} bytes"
        );
    }

    /// While another connection has input waiting, a deep pipeline's replies are not cut
    /// into parts: the manager's thread is wanted elsewhere, and each write would cost it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deep_pipeline_is_not_cut_while_another_connection_waits() {
        let shared = Arc::new(Shared::new(Config::new(KEY.to_vec())).unwrap());
        // A socket with a request in it that nobody serves: watched as a connection's is.
        let (waiting, mut sender) = std::os::unix::net::UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut sender, b"\x94\x00\x01\xa4ping\x90").unwrap();
        shared.spinners.watch(waiting.as_raw_fd());
        let writes = deep_pipeline_writes(shared.clone()).await;
        shared.spinners.unwatch(waiting.as_raw_fd());
        assert!(
            writes.iter().any(|&n| n >= EARLY_REPLY_BYTES + 16),
            "the replies went out in parts, in writes of {writes:?} bytes"
        );
    }

    /// A connection whose task is dropped mid-flight (what happens to a task that panics, or
    /// that the server aborts) still releases the lock it held.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_connection_task_releases_what_it_held() {
        let shared = Arc::new(Shared::new(Config::new(KEY.to_vec())).unwrap());
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        let theirs = tokio::net::UnixStream::from_std(theirs).unwrap();
        let task = tokio::spawn(serve(theirs, shared.clone(), "test".into()));
        // The raw client blocks, so it runs off the runtime's worker threads.
        let (ours, id) = tokio::task::spawn_blocking(move || {
            let mut c = RawClient::from_unix_stream(ours).unwrap();
            c.authenticate(KEY);
            // Named: an unnamed lock would be freed with its only holder, the connection.
            let id = c.create("lock", Some("held"), vec![]);
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
