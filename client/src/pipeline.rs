//! Pipelines: many calls sent in one write, their replies read together.
//!
//! One call costs a round trip; a pipeline of a thousand calls costs about one too. Queue
//! commands with [`Pipeline::add`], which returns a typed [`Handle`], run them all with
//! [`Pipeline::execute`], then read each result from the [`Replies`] with its handle:
//!
//! ```no_run
//! # let client = agora_client::Client::from_env()?;
//! let list = client.list::<i64>()?;
//! let mut p = client.pipeline();
//! for i in 0..100 {
//!     p.add(list.append_cmd(&i));
//! }
//! let len = p.add(list.len_cmd());
//! let replies = p.execute()?;
//! replies.check()?; // the first failed call, if any
//! assert_eq!(replies.get(len)?, 100);
//! # Ok::<(), agora_client::Error>(())
//! ```
//!
//! The calls run in order, each atomically, but not as one transaction: other clients' calls
//! may run between them.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::client::{Client, Hold};
use crate::command::{Args, Cmd, Decoder, ParamBytes, Reply};
use crate::connection::Connection;
use crate::error::{missing_reply, Error, Result};

/// Requests are sent in chunks of about this many bytes, each chunk's replies read before the
/// next chunk is written. The manager stops reading a connection while its replies are not
/// being read, so writing an unbounded pipeline before reading could block both sides; a
/// chunk this size fits in the socket's buffer.
const CHUNK_BYTES: usize = 64 * 1024;

/// Params up to this many bytes are kept whole by [`Replies`] for the errors that name them.
const KEEP_PARAMS_UP_TO: usize = 64;

/// Tells apart the pipelines of a process, so a handle is only redeemed with its own replies.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// A queued call's params. A command that could not be encoded keeps its error boxed:
/// queuing a call moves only a few words, and a long pipeline's growing queue copies less.
type QueuedArgs = std::result::Result<Args, Box<Error>>;

/// Calls queued to be sent together. Build one with [`Client::pipeline`].
pub struct Pipeline {
    client: Client,
    serial: u64,
    /// Each call's method, params and run ([`Cmd`]'s).
    queued: Vec<(Cow<'static, str>, QueuedArgs, u64)>,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("calls", &self.queued.len())
            .finish_non_exhaustive()
    }
}

/// Where the result of one queued call will be, and how to decode it: redeem it with
/// [`Replies::get`].
pub struct Handle<T> {
    index: usize,
    serial: u64,
    decode: Decoder<T>,
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Handle<T> {}

impl<T> fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handle({})", self.index)
    }
}

/// The replies of an executed pipeline, one per queued call.
///
/// While they live, the objects their references name are held for this process (a reply can
/// be decoded into proxies any number of times, so the objects must not go before the replies
/// do): keep them until their proxies are made, drop them afterwards.
pub struct Replies {
    client: Client,
    serial: u64,
    /// The run of the connection the replies came from: the run their references are of.
    run: u64,
    replies: Vec<Reply>,
    /// Each call's method and its params, or (for large ones) what its decode errors name of
    /// them ([`crate::error::call_context`]).
    calls: Vec<(Cow<'static, str>, ParamBytes)>,
    _holds: Hold,
}

impl fmt::Debug for Replies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replies")
            .field("calls", &self.replies.len())
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    pub(crate) fn new(client: Client) -> Pipeline {
        Pipeline {
            client,
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            queued: Vec::new(),
        }
    }

    /// Queues a command (from a proxy's `*_cmd` method, or [`Cmd::raw`] / [`Cmd::typed`]).
    /// The command goes to this pipeline's client, whichever proxy built it; a proxy's
    /// command for another run than the client's fails alone with
    /// [`Error::OtherRun`](crate::Error::OtherRun), unsent.
    pub fn add<T>(&mut self, cmd: Cmd<T>) -> Handle<T> {
        let index = self.queued.len();
        self.queued
            .push((cmd.method, cmd.args.map_err(Box::new), cmd.run));
        Handle {
            index,
            serial: self.serial,
            decode: cmd.decode,
        }
    }

    /// How many calls are queued.
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    /// True when no call is queued.
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Sends every queued call and reads every reply.
    ///
    /// Fails only when the connection fails (then some calls may have run and others not).
    /// A call the manager rejects, or whose arguments could not be encoded, fails alone: its
    /// error is in its reply and the other calls run normally. Every chunk goes on the same
    /// connection: should it break half-way, the pipeline fails rather than sending the rest
    /// on a new one.
    pub fn execute(self) -> Result<Replies> {
        let conn = self.client.connection()?;
        // A call's params, or the error it fails with unsent (see `checked`).
        let sendable = |args, run| checked(args, self.client.stale_on(run, &conn));
        let calls: Vec<(&str, &Args)> = self
            .queued
            .iter()
            .filter_map(|(method, args, run)| Some((&**method, sendable(args, *run).ok()?)))
            .collect();
        let (sent, holds) = self.send_all(&conn, &calls)?;
        let replies = if calls.len() == self.queued.len() {
            sent
        } else {
            // Some failed unsent: each gets its error in its place, between the others'
            // replies (in the usual pipeline none does, and nothing is moved twice).
            let mut sent = sent.into_iter();
            self.queued
                .iter()
                .map(|(_, args, run)| {
                    sendable(args, *run)
                        .and_then(|_| sent.next().unwrap_or_else(|| Err(missing_reply())))
                })
                .collect()
        };
        drop(calls);
        Ok(self.into_replies(replies, conn.run_key(), holds))
    }

    /// Sends `calls` in chunks of about [`CHUNK_BYTES`], each chunk's replies read before the
    /// next is written; their replies in order.
    fn send_all(&self, conn: &Connection, calls: &[(&str, &Args)]) -> Result<(Vec<Reply>, Hold)> {
        let mut replies = Vec::with_capacity(calls.len());
        let mut holds = Hold::default();
        let mut rest = calls;
        while !rest.is_empty() {
            let mut bytes = 0;
            let end = rest
                .iter()
                .position(|(method, args)| {
                    bytes += args.bytes().len() + method.len() + 8;
                    bytes >= CHUNK_BYTES
                })
                .map_or(rest.len(), |at| at + 1);
            let (got, hold) = self.client.run_many(conn, &rest[..end])?;
            replies.extend(got);
            holds.merge(hold);
            rest = &rest[end..];
        }
        Ok((replies, holds))
    }

    /// The replies, once every call has one.
    pub(crate) fn into_replies(self, replies: Vec<Reply>, run: u64, holds: Hold) -> Replies {
        let calls = self
            .queued
            .into_iter()
            .map(|(method, args, _)| {
                // Small params are kept as they are (moved, not copied): what a decode error
                // names is cut from them only if one happens. Of large ones only that part
                // is kept, so the replies do not hold every value the pipeline sent.
                let context = match args {
                    Ok(a) if a.bytes().len() <= KEEP_PARAMS_UP_TO => a.into_bytes(),
                    Ok(a) => crate::error::call_context(&method, a.bytes()).into(),
                    Err(_) => ParamBytes::default(),
                };
                (method, context)
            })
            .collect();
        Replies {
            calls,
            client: self.client,
            serial: self.serial,
            run,
            _holds: holds,
            replies,
        }
    }

    /// The calls to send, by index, for a connection to the run `current` (`None` for each
    /// call that fails unsent: its params did not encode, or it is of another run), and the
    /// replies so far (those failures). `current_key` is the connection's cached key of
    /// `current`: computing it parses the run's id, too much to do once per call.
    #[cfg(feature = "tokio")]
    pub(crate) fn checked_calls(
        &self,
        current: &crate::run::ManagerRun,
        current_key: u64,
    ) -> (Vec<Option<Call<'_>>>, Vec<Option<Reply>>) {
        let mut replies = Vec::with_capacity(self.queued.len());
        let calls = self
            .queued
            .iter()
            .map(|(method, args, run)| {
                let stale = (*run != 0 && *run != current_key)
                    .then(|| self.client.stale_for(*run, current));
                match checked(args, stale) {
                    Ok(args) => {
                        replies.push(None);
                        Some((&**method, args))
                    }
                    Err(e) => {
                        replies.push(Some(Err(e)));
                        None
                    }
                }
            })
            .collect();
        (calls, replies)
    }
}

/// A call to send: its method and params.
#[cfg(feature = "tokio")]
pub(crate) type Call<'a> = (&'a str, &'a Args);

/// A queued call's params, unless it fails alone, unsent: its params failed to encode, or it
/// is of another run (`stale`).
fn checked(args: &QueuedArgs, stale: Option<Error>) -> Result<&Args> {
    args.as_ref()
        .map_err(|e| (**e).clone())
        .and_then(|args| stale.map_or(Ok(args), Err))
}

impl Replies {
    /// The result of the call behind `handle`, decoded. Each reply can be read any number of
    /// times.
    ///
    /// Fails with the call's own error, or with [`Error::Usage`] for a handle of another
    /// pipeline.
    pub fn get<T>(&self, handle: Handle<T>) -> Result<T> {
        if handle.serial != self.serial {
            return Err(Error::Usage(
                "this handle belongs to another pipeline's replies".into(),
            ));
        }
        let reply = self
            .replies
            .get(handle.index)
            .cloned()
            .unwrap_or_else(|| Err(Error::Usage("pipeline handle out of range".into())));
        self.client
            .decoding_in(self.run, || (handle.decode)(reply))
            .map_err(|e| match self.calls.get(handle.index) {
                Some((method, params)) => {
                    self.client.named_error(e.in_call(method, params), self.run)
                }
                None => e,
            })
    }

    /// The error of the first call that failed, if any: for pipelines whose results are not
    /// otherwise read.
    pub fn check(&self) -> Result<()> {
        match self.replies.iter().find_map(|r| r.as_ref().err()) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// How many replies there are (one per queued call).
    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// True for the replies of an empty pipeline.
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }
}
