//! One client connection: read frames, authenticate, dispatch, write replies.
//!
//! Each connection is one task. It reads what has arrived, answers every complete request in
//! it into one output buffer, and writes that buffer with one write: replies that are ready
//! together go out together, and a pipelining client gets a batch per read.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info};

use agora_proto::{
    encode, envelope, CallError, Envelope, ErrorName, FrameDecoder, FrameError, Params,
};

use crate::auth;
use crate::dispatch;
use crate::server::Shared;

/// How many bytes to ask the socket for at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Where a connection is in the handshake.
enum AuthState {
    /// Connected; `hello` not called yet.
    Fresh,
    /// `hello` answered with this challenge.
    Challenged([u8; auth::CHALLENGE_LEN]),
    /// `auth` succeeded.
    Authenticated,
}

/// What the connection loop should do after processing input.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Keep serving.
    Continue,
    /// Flush the replies, then close (bad frame, failed auth).
    Close,
    /// Flush the replies, then stop the whole manager.
    Shutdown,
}

/// The state of one connection.
pub struct Session {
    shared: Arc<Shared>,
    auth: AuthState,
    peer: String,
}

impl Session {
    fn new(shared: Arc<Shared>, peer: String) -> Session {
        Session {
            shared,
            auth: AuthState::Fresh,
            peer,
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
        info!(peer = %self.peer, error = %err, "closing connection");
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
                debug!(peer = %self.peer, error = %e, "bad envelope");
                if let Some(msgid) = e.msgid {
                    let err = CallError::new(ErrorName::ProtocolError, e.to_string());
                    encode::response_err(out, msgid, &err);
                }
                return Next::Continue;
            }
        };
        // Write the success header, let the method append its result after it, and replace
        // both with an error response if the method fails.
        let start = out.len();
        encode::response_ok(out, msgid, &[]);
        match self.call(&method, &params, decoder, out) {
            Ok(next) => next,
            Err(err) => {
                out.truncate(start);
                encode::response_err(out, msgid, &err);
                if err.name == ErrorName::AuthenticationError && method == "auth" {
                    return Next::Close;
                }
                Next::Continue
            }
        }
    }

    /// Runs one request, appending its result to `out`.
    fn call(
        &mut self,
        method: &str,
        p: &Params,
        decoder: &mut FrameDecoder,
        out: &mut Vec<u8>,
    ) -> Result<Next, CallError> {
        match method {
            "hello" => {
                let challenge = auth::challenge()
                    .map_err(|e| CallError::runtime(format!("cannot make a challenge: {e}")))?;
                self.auth = AuthState::Challenged(challenge);
                write_hello(out, &challenge);
                return Ok(Next::Continue);
            }
            "auth" => {
                self.authenticate(p)?;
                decoder.set_limits(self.shared.config.limits);
                out.extend_from_slice(encode::TRUE);
                return Ok(Next::Continue);
            }
            _ => {}
        }
        if !matches!(self.auth, AuthState::Authenticated) {
            return Err(CallError::new(
                ErrorName::AuthenticationError,
                "authenticate first: call hello, then auth",
            ));
        }
        match method {
            "ping" => {
                p.expect(method, 0, 0)?;
                encode::str(out, "pong");
                Ok(Next::Continue)
            }
            "shutdown" => {
                p.expect(method, 0, 0)?;
                out.extend_from_slice(encode::TRUE);
                info!(peer = %self.peer, "shutdown requested");
                Ok(Next::Shutdown)
            }
            _ => {
                dispatch::call(&self.shared.registry, method, p, out)?;
                Ok(Next::Continue)
            }
        }
    }

    fn authenticate(&mut self, p: &Params) -> Result<(), CallError> {
        let fail = |why: &str| CallError::new(ErrorName::AuthenticationError, why.to_owned());
        p.expect("auth", 1, 1)?;
        let AuthState::Challenged(challenge) = &self.auth else {
            return Err(fail(
                "call hello first: auth answers the challenge hello returns",
            ));
        };
        // A str carrying the digest bytes is accepted: some clients predate bin.
        let digest = agora_proto::params::bytes_of(p.raw(0))
            .ok_or_else(|| fail("auth takes the digest as a bin"))?;
        if !auth::verify(&self.shared.config.authkey, challenge, digest) {
            self.auth = AuthState::Fresh;
            info!(peer = %self.peer, "authentication failed");
            return Err(fail(
                "wrong digest: the authkey differs from the manager's (check AGORA_AUTHKEY)",
            ));
        }
        self.auth = AuthState::Authenticated;
        Ok(())
    }
}

fn write_hello(out: &mut Vec<u8>, challenge: &[u8]) {
    encode::map_header(out, 4);
    encode::str(out, "protocol");
    encode::uint(out, u64::from(agora_proto::PROTOCOL_VERSION));
    encode::str(out, "server");
    encode::str(out, "agora-manager");
    encode::str(out, "version");
    encode::str(out, env!("CARGO_PKG_VERSION"));
    encode::str(out, "challenge");
    encode::bin(out, challenge);
}

/// Serves one connection until the peer leaves, the connection must close, or the manager
/// shuts down.
pub async fn serve<S>(mut stream: S, shared: Arc<Shared>, peer: String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stopping = shared.shutdown.subscribe();
    let mut decoder = FrameDecoder::new(shared.config.pre_auth_limits());
    let mut session = Session::new(shared.clone(), peer);
    let mut out = Vec::with_capacity(READ_CHUNK);
    debug!(peer = %session.peer, "connected");
    loop {
        let read = tokio::select! {
            biased;
            _ = crate::server::stopped(&mut stopping) => break,
            read = stream.read_buf(decoder.read_buf(READ_CHUNK)) => read,
        };
        match read {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                debug!(peer = %session.peer, error = %e, "read failed");
                break;
            }
        }
        let next = session.process(&mut decoder, &mut out);
        if !out.is_empty() {
            if let Err(e) = stream.write_all(&out).await {
                debug!(peer = %session.peer, error = %e, "write failed");
                break;
            }
            out.clear();
        }
        match next {
            Next::Continue => {}
            Next::Close => break,
            Next::Shutdown => {
                shared.shutdown.send_replace(true);
                break;
            }
        }
    }
    let _ = stream.shutdown().await;
    debug!(peer = %session.peer, "disconnected");
}
