//! One authenticated socket shared by every task of an [`AsyncClient`](super::AsyncClient):
//! requests are written by a writer task, replies read by a reader task and handed to their
//! callers by msgid.
//!
//! # Locks
//! The table of pending calls is a plain mutex, taken for a few instructions and never across an
//! `.await`; the socket is owned by the two tasks, so no caller waits for another's I/O.
//!
//! # Cancellation
//! A call is a [`Pending`] value. Dropped before its reply came, it leaves an *abandoned* entry
//! in the table: the reply is read and dropped when it comes. A call the manager may park is
//! cancelled on the manager too (`cancel [msgid]`, `PROTOCOL.md` section 4.1), and when the
//! reply that comes is a grant after all (it was on its way), the call's [`GiveBack`] says
//! what returns it (a release, a `nack`), which is sent without waiting.

use std::collections::HashMap;
use std::sync::Arc;

use agora_proto::{encode, FrameDecoder, Limits};
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::address::Address;
use crate::command::{Args, Reply};
use crate::connection::{
    auth_failed, digest, drain_frames, hello_failed, read_hello, write_checked,
};
use crate::error::{Error, ErrorName, Result};
use crate::in_flight::Response;
use crate::options::ConnectOptions;
use crate::run::ManagerRun;

/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 64 * 1024;

/// What returns a grant that reached a cancelled call: given the reply's result, the commands
/// to send (without waiting), or `None` when nothing was granted.
pub(crate) type GiveBack = Box<dyn FnOnce(&Bytes) -> Option<Vec<(&'static str, Args)>> + Send>;

/// Who waits for the reply of a msgid.
enum Waiter {
    /// A caller.
    Call(oneshot::Sender<Reply>),
    /// Nobody: the call was dropped (with what gives back a grant), or sent detached.
    Abandoned(Option<GiveBack>),
}

/// The calls in flight.
struct Table {
    next_msgid: u32,
    pending: HashMap<u32, Waiter>,
    /// Why the connection is unusable, once it is.
    broken: Option<String>,
}

impl Table {
    /// A msgid not in use. Ids wrap after 2^32 calls; one still pending is skipped.
    fn register(&mut self, waiter: Waiter) -> u32 {
        loop {
            let id = self.next_msgid;
            self.next_msgid = self.next_msgid.wrapping_add(1);
            if let std::collections::hash_map::Entry::Vacant(slot) = self.pending.entry(id) {
                slot.insert(waiter);
                return id;
            }
        }
    }
}

/// What the tasks and the callers share.
struct Shared {
    address: String,
    limits: Limits,
    table: Mutex<Table>,
}

/// An authenticated async connection. Dropping it stops its reader and lets its writer write
/// what is queued (detached releases) and close the socket.
pub(crate) struct Conn {
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Vec<u8>>,
    run: ManagerRun,
    run_key: u64,
    reader: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Opens the socket to `address` within the connect timeout (and, for TLS, the handshake
/// timeout for the TLS handshake).
async fn connect(address: &Address, options: &ConnectOptions) -> Result<(BoxRead, BoxWrite)> {
    let failed = |e: std::io::Error| Error::Connect {
        address: address.to_string(),
        source: Arc::new(e),
    };
    let limit = options.connect_timeout;
    match address {
        Address::Unix(path) => {
            let s = open_unix(path.clone(), limit).await.map_err(failed)?;
            let (r, w) = s.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        Address::Tcp(host_port) => {
            let s = limited(limit, "connection", open_tcp(host_port))
                .await
                .map_err(failed)?;
            let (r, w) = s.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        Address::Tls(host_port) => {
            let tcp = limited(limit, "connection", open_tcp(host_port))
                .await
                .map_err(failed)?;
            start_tls(address, host_port, tcp, options).await
        }
    }
}

/// A Unix connection made as the blocking client makes it ([`crate::connection::open_unix`]):
/// tokio's own connect fails at once with `EAGAIN` when the manager's listen queue is full,
/// where this one tries again until the connect timeout. The waits are blocking sleeps, so
/// they run on a blocking thread.
async fn open_unix(
    path: std::path::PathBuf,
    limit: Option<std::time::Duration>,
) -> std::io::Result<tokio::net::UnixStream> {
    let s = tokio::task::spawn_blocking(move || crate::connection::open_unix(&path, limit))
        .await
        .map_err(std::io::Error::other)??;
    s.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(s)
}

/// A TCP connection with Nagle off: requests are small and latency-bound.
async fn open_tcp(host_port: &str) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpStream::connect(host_port).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// The TLS session on `tcp`, set up as the blocking client sets it up (`crate::tls`).
async fn start_tls(
    address: &Address,
    host_port: &str,
    tcp: tokio::net::TcpStream,
    options: &ConnectOptions,
) -> Result<(BoxRead, BoxWrite)> {
    let address = address.to_string();
    let (config, name) =
        crate::tls::session_parts(&address, host_port, options.tls_ca_file.as_deref())?;
    let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
    let tls = limited(options.handshake_timeout, "TLS handshake", handshake)
        .await
        .map_err(|e| Error::Tls {
            reason: crate::tls::handshake_failure(&e),
            address,
        })?;
    let (r, w) = tokio::io::split(tls);
    Ok((Box::new(r), Box::new(w)))
}

/// `step` within `limit`, if there is one.
async fn limited<T>(
    limit: Option<std::time::Duration>,
    what: &str,
    step: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    let Some(t) = limit else {
        return step.await;
    };
    tokio::time::timeout(t, step).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no {what} within {t:?}"),
        ))
    })
}

/// Reads frames for the handshake, before the reader task exists.
struct Handshake<'a> {
    read: &'a mut BoxRead,
    write: &'a mut BoxWrite,
    decoder: FrameDecoder,
    address: String,
    /// What the manager's `error` notification said, if it sent one.
    notice: Option<String>,
}

impl Handshake<'_> {
    /// One call, answered before anything else is sent.
    async fn call(&mut self, msgid: u32, method: &str, args: &Args) -> Reply {
        let mut out = Vec::new();
        write_checked(&Limits::default(), &mut out, msgid, method, args)?;
        self.write
            .write_all(&out)
            .await
            .map_err(|e| self.lost(&format!("writing {method} failed: {e}")))?;
        let mut buf = vec![0; 4096];
        loop {
            let mut reply = None;
            drain_frames(&mut self.decoder, &mut self.notice, |got, error, result| {
                if got == msgid {
                    reply = Some(Response { error, result }.into_reply());
                }
            })
            .map_err(|reason| self.lost(&reason))?;
            if let Some(reply) = reply {
                return reply;
            }
            if let Some(said) = &self.notice {
                return Err(self.lost(&format!("the manager closed it after an error: {said}")));
            }
            let n =
                self.read.read(&mut buf).await.map_err(|e| {
                    self.lost(&format!("reading the answer to {method} failed: {e}"))
                })?;
            if n == 0 {
                return Err(self.lost("the manager closed it (shut down or stopped)"));
            }
            self.decoder.extend(&buf[..n]);
        }
    }

    fn lost(&self, reason: &str) -> Error {
        Error::Disconnected {
            address: self.address.clone(),
            reason: reason.to_owned(),
        }
    }
}

impl Conn {
    /// Connects, runs `hello` and `auth` (`PROTOCOL.md`, section 2), and starts the reader and
    /// writer tasks.
    pub(crate) async fn open(
        address: &Address,
        authkey: &[u8],
        key_from: &'static str,
        options: &ConnectOptions,
    ) -> Result<Arc<Conn>> {
        if authkey.is_empty() {
            return Err(Error::EmptyAuthkey { key_from });
        }
        let (mut read, mut write) = connect(address, options).await?;
        let mut shake = Handshake {
            read: &mut read,
            write: &mut write,
            decoder: FrameDecoder::new(Limits::UNLIMITED),
            address: address.to_string(),
            notice: None,
        };
        let handshake = async {
            let hello = match shake.call(0, "hello", &Args::default()).await {
                Ok(hello) => hello,
                Err(e) => {
                    let after_notice = shake.notice.is_some();
                    return Err(hello_failed(&shake.address, e, || after_notice));
                }
            };
            let (run, limits, challenge) = read_hello(&shake.address, &hello)?;
            let mut args = Args::default();
            args.bin(&digest(authkey, &challenge));
            shake
                .call(1, "auth", &args)
                .await
                .map_err(|e| auth_failed(&shake.address, key_from, e))?;
            Ok((run, limits))
        };
        let (run, limits) = match options.handshake_timeout {
            None => handshake.await?,
            Some(t) => tokio::time::timeout(t, handshake)
                .await
                .map_err(|_| Error::Timeout {
                    address: address.to_string(),
                    what: "hello and auth (AGORA_HANDSHAKE_TIMEOUT)".into(),
                    after: t,
                })??,
        };
        let decoder = shake.decoder;
        crate::command::learn_max_message_bytes(limits.max_message_bytes);
        let shared = Arc::new(Shared {
            address: address.to_string(),
            limits,
            table: Mutex::new(Table {
                next_msgid: 2,
                pending: HashMap::new(),
                broken: None,
            }),
        });
        let (out, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(shared.clone(), write, rx));
        let reader = tokio::spawn(read_loop(shared.clone(), read, decoder, out.downgrade()));
        debug!(%address, "async connection to the agora manager open");
        Ok(Arc::new(Conn {
            shared,
            out,
            run_key: run.key(),
            run,
            reader,
        }))
    }

    /// The run of the manager this connection reaches.
    pub(crate) fn run(&self) -> &ManagerRun {
        &self.run
    }

    /// [`ManagerRun::key`] of [`Conn::run`].
    pub(crate) fn run_key(&self) -> u64 {
        self.run_key
    }

    /// False once the connection broke.
    pub(crate) fn is_live(&self) -> bool {
        self.shared.table.lock().broken.is_none()
    }

    /// Sends a call; its reply comes through the returned [`Pending`]. `may_wait` says that
    /// the manager may park it (then dropping the `Pending` cancels it on the manager), and
    /// `give_back` what returns a grant a dropped call got anyway.
    pub(crate) fn start(
        &self,
        method: &str,
        args: &Args,
        may_wait: bool,
        give_back: Option<GiveBack>,
    ) -> Result<Pending> {
        let (tx, rx) = oneshot::channel();
        let msgid = self.send(method, args, Waiter::Call(tx))?;
        Ok(Pending {
            shared: self.shared.clone(),
            out: self.out.clone(),
            msgid: Some(msgid),
            rx: Some(rx),
            may_wait,
            give_back,
        })
    }

    /// Sends many calls in one write; their replies come in order through the `Pending`s.
    pub(crate) fn start_many(&self, calls: &[(&str, &Args)]) -> Result<Vec<Pending>> {
        let mut bytes = Vec::new();
        let mut started = Vec::with_capacity(calls.len());
        let mut table = self.shared.table.lock();
        if let Some(reason) = &table.broken {
            return Err(disconnected(&self.shared.address, reason));
        }
        for (method, args) in calls {
            let (tx, rx) = oneshot::channel();
            let msgid = table.register(Waiter::Call(tx));
            if let Err(e) = write_checked(&self.shared.limits, &mut bytes, msgid, method, args) {
                // Refused unsent, alone: its reply is the error.
                table.pending.remove(&msgid);
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Err(e));
                started.push(Pending::answered(self, rx));
                continue;
            }
            started.push(Pending {
                shared: self.shared.clone(),
                out: self.out.clone(),
                msgid: Some(msgid),
                rx: Some(rx),
                may_wait: false,
                give_back: None,
            });
        }
        drop(table);
        self.out
            .send(bytes)
            .map_err(|_| disconnected(&self.shared.address, "the writer stopped"))?;
        Ok(started)
    }

    /// Sends a call whose reply nobody waits for (a release from a guard's `Drop`); an error
    /// reply is logged. Nothing is sent on a broken connection: the manager released what
    /// the session held when it ended.
    pub(crate) fn send_detached(&self, method: &str, args: &Args) {
        if let Err(e) = self.send(method, args, Waiter::Abandoned(None)) {
            debug!(%method, error = %e, "a detached call was not sent");
        }
    }

    /// A call's deadline passed: the connection is closed (its reply may still come, and the
    /// stream is shared), the call fails with [`Error::Timeout`] and every other with
    /// [`Error::Disconnected`] saying why.
    pub(crate) fn time_out(&self, method: &str, after: std::time::Duration) -> Error {
        let what = format!("a call to {method}");
        fail(
            &self.shared,
            format!("the manager did not answer {what} within {after:?} (stopped or hung?)"),
        );
        self.reader.abort();
        Error::Timeout {
            address: self.shared.address.clone(),
            what,
            after,
        }
    }

    /// Sends `decref` notifications for `pairs` of `(id, count)`, split as the blocking
    /// client splits them.
    pub(crate) fn send_decrefs(&self, pairs: &[(u64, u64)]) {
        let mut note = Vec::new();
        crate::refs::encode_decrefs(&mut note, pairs);
        let _ = self.out.send(note);
    }

    fn send(&self, method: &str, args: &Args, waiter: Waiter) -> Result<u32> {
        send_on(&self.shared, &self.out, method, args, waiter)
    }
}

/// Registers `waiter` and queues the request for the writer.
fn send_on(
    shared: &Shared,
    out: &mpsc::UnboundedSender<Vec<u8>>,
    method: &str,
    args: &Args,
    waiter: Waiter,
) -> Result<u32> {
    let mut bytes = Vec::new();
    let mut table = shared.table.lock();
    if let Some(reason) = &table.broken {
        return Err(disconnected(&shared.address, reason));
    }
    let msgid = table.register(waiter);
    if let Err(e) = write_checked(&shared.limits, &mut bytes, msgid, method, args) {
        table.pending.remove(&msgid);
        return Err(e);
    }
    // Queued under the table's lock, so requests go out in msgid order.
    if out.send(bytes).is_err() {
        table.pending.remove(&msgid);
        return Err(disconnected(&shared.address, "the writer stopped"));
    }
    Ok(msgid)
}

fn disconnected(address: &str, reason: &str) -> Error {
    Error::Disconnected {
        address: address.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A call sent and not yet answered. See the module documentation for what dropping it does.
pub(crate) struct Pending {
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Vec<u8>>,
    /// `None` for a call answered unsent, which has no entry in the table.
    msgid: Option<u32>,
    /// `None` once the reply was taken.
    rx: Option<oneshot::Receiver<Reply>>,
    may_wait: bool,
    give_back: Option<GiveBack>,
}

impl Pending {
    /// A call answered without being sent (refused by a limit).
    fn answered(conn: &Conn, rx: oneshot::Receiver<Reply>) -> Pending {
        Pending {
            shared: conn.shared.clone(),
            out: conn.out.clone(),
            msgid: None,
            rx: Some(rx),
            may_wait: false,
            give_back: None,
        }
    }

    /// Waits for the reply. Cancel-safe: see the module documentation.
    pub(crate) async fn reply(self) -> Reply {
        let (reply, unclaimed) = self.reply_keeping().await;
        unclaimed.claimed();
        reply
    }

    /// Waits for the reply, and hands over what gives back its grant: until the caller is
    /// done with the reply ([`Unclaimed::claimed`]), dropping it gives the grant back.
    pub(crate) async fn reply_keeping(mut self) -> (Reply, Unclaimed) {
        let Some(rx) = self.rx.as_mut() else {
            let taken = Error::Usage("a reply was taken twice".into());
            return (Err(taken), Unclaimed::none(&self));
        };
        let reply = rx.await;
        self.rx = None;
        let reply = reply.unwrap_or_else(|_| {
            let table = self.shared.table.lock();
            let reason = table.broken.as_deref().unwrap_or("the reader stopped");
            Err(disconnected(&self.shared.address, reason))
        });
        let mut unclaimed = Unclaimed::none(&self);
        if let Ok(result) = &reply {
            unclaimed.give_back = self.give_back.take().map(|g| (g, result.clone()));
        }
        (reply, unclaimed)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        let Some(id) = self.msgid else {
            return;
        };
        let mut table = self.shared.table.lock();
        if let Some(waiter) = table.pending.get_mut(&id) {
            if matches!(waiter, Waiter::Call(_)) {
                *waiter = Waiter::Abandoned(self.give_back.take());
                if self.may_wait && table.broken.is_none() {
                    let mut note = Vec::new();
                    let mut msgid = Vec::new();
                    encode::uint(&mut msgid, u64::from(id));
                    encode::notification(&mut note, "cancel", &[&msgid]);
                    let _ = self.out.send(note);
                }
                return;
            }
        }
        drop(table);
        // The reply came and was not read: it is this call's to give back.
        rx.close();
        if let (Ok(Ok(result)), Some(give_back)) = (rx.try_recv(), self.give_back.take()) {
            give_back_now(&self.shared, &self.out, give_back, &result);
        }
    }
}

/// A grant that reached its call and that the caller has not yet made its own: dropped
/// before [`Unclaimed::claimed`] (the caller's future was dropped while it decoded the reply),
/// it gives the grant back.
pub(crate) struct Unclaimed {
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Vec<u8>>,
    give_back: Option<(GiveBack, Bytes)>,
}

impl Unclaimed {
    fn none(pending: &Pending) -> Unclaimed {
        Unclaimed {
            shared: pending.shared.clone(),
            out: pending.out.clone(),
            give_back: None,
        }
    }

    /// The caller has the grant: nothing is given back.
    pub(crate) fn claimed(mut self) {
        self.give_back = None;
    }
}

impl Drop for Unclaimed {
    fn drop(&mut self) {
        if let Some((give_back, result)) = self.give_back.take() {
            give_back_now(&self.shared, &self.out, give_back, &result);
        }
    }
}

/// Sends what returns a grant nobody will use.
fn give_back_now(
    shared: &Shared,
    out: &mpsc::UnboundedSender<Vec<u8>>,
    give_back: GiveBack,
    result: &Bytes,
) {
    for (method, args) in give_back(result).unwrap_or_default() {
        debug!(%method, "giving back what a cancelled call was granted");
        if let Err(e) = send_on(shared, out, method, &args, Waiter::Abandoned(None)) {
            debug!(%method, error = %e, "could not give back a grant (the session is gone)");
        }
    }
}

/// Writes what callers queue, many requests a write when they come together.
async fn write_loop(
    shared: Arc<Shared>,
    mut write: BoxWrite,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    while let Some(mut batch) = rx.recv().await {
        while let Ok(more) = rx.try_recv() {
            batch.extend_from_slice(&more);
        }
        if let Err(e) = write.write_all(&batch).await {
            fail(&shared, format!("writing a request failed: {e}"));
            return;
        }
    }
    // Every sender is gone: the client dropped the connection. The manager sees it end.
    let _ = write.shutdown().await;
}

/// Reads replies and hands each to its caller until the connection ends.
async fn read_loop(
    shared: Arc<Shared>,
    mut read: BoxRead,
    mut decoder: FrameDecoder,
    out: mpsc::WeakUnboundedSender<Vec<u8>>,
) {
    let mut buf = vec![0; READ_CHUNK];
    let mut notice: Option<String> = None;
    let reason = loop {
        if let Err(reason) = drain(&shared, &mut decoder, &out, &mut notice) {
            break reason;
        }
        match read.read(&mut buf).await {
            Ok(0) => {
                break match notice.take() {
                    Some(notice) => format!("the manager closed it after an error: {notice}"),
                    None => "the manager closed it (shut down or stopped)".to_owned(),
                }
            }
            Ok(n) => decoder.extend(&buf[..n]),
            Err(e) => break format!("reading a reply failed: {e}"),
        }
    };
    fail(&shared, reason);
}

/// Hands every complete response in the decoder to its waiter.
fn drain(
    shared: &Shared,
    decoder: &mut FrameDecoder,
    out: &mpsc::WeakUnboundedSender<Vec<u8>>,
    notice: &mut Option<String>,
) -> std::result::Result<(), String> {
    drain_frames(decoder, notice, |msgid, error, result| {
        deliver(shared, out, msgid, Response { error, result }.into_reply())
    })
}

/// Hands one reply to its caller, or gives back the grant of a call nobody waits for.
fn deliver(shared: &Shared, out: &mpsc::WeakUnboundedSender<Vec<u8>>, msgid: u32, reply: Reply) {
    let mut table = shared.table.lock();
    let waiter = table.pending.remove(&msgid);
    if let Some(Waiter::Call(tx)) = waiter {
        // Sent under the lock: a `Pending` dropped meanwhile either still finds its entry
        // (and abandons it) or finds the reply in its receiver (and gives it back).
        let _ = tx.send(reply);
        return;
    }
    drop(table);
    match waiter {
        Some(Waiter::Call(_)) => {}
        Some(Waiter::Abandoned(give_back)) => match (reply, give_back, out.upgrade()) {
            (Ok(result), Some(give_back), Some(out)) => {
                give_back_now(shared, &out, give_back, &result)
            }
            (Err(e), _, _) if !e.is(ErrorName::CancelledError) => {
                warn!(msgid, error = %e, "a call nobody waited for failed");
            }
            _ => {}
        },
        None => warn!(
            msgid,
            "dropping a response to a msgid that no call is waiting for"
        ),
    }
}

/// Marks the connection broken (the first reason wins) and fails every caller.
fn fail(shared: &Shared, reason: String) {
    let mut table = shared.table.lock();
    if table.broken.is_none() {
        debug!(address = %shared.address, %reason, "async connection to the agora manager lost");
        table.broken = Some(reason);
    }
    let reason = table.broken.clone().unwrap_or_default();
    for (_, waiter) in table.pending.drain() {
        if let Waiter::Call(tx) = waiter {
            let _ = tx.send(Err(disconnected(&shared.address, &reason)));
        }
    }
}
