//! [`Queue`] and [`JoinableQueue`]: FIFO queues between processes, with blocking, batched and
//! closable puts and gets.
//!
//! Both are one type, `Queue<T, K>`, whose kind `K` ([`Plain`] or [`Joinable`]) chooses the
//! wire names (`queue.put` or `joinable_queue.put`); both have `task_done` and `join`, and a
//! joinable queue's `task_done` also acknowledges an item. So every method is written once, as one line over a few private command builders
//! (`put_with`, `get_with`, `put_many_with`, `get_many_with`, `query`), which differ only in
//! how long a call may wait (`Wait`) and how its reply is read.

use std::borrow::Borrow;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::Client;
use crate::command::Target;
use crate::command::{decode, Args, Cmd, Decoder};
use crate::error::{ErrorName, Result};

use super::list::By;
use super::wait::{decoders, timeout};

/// A FIFO queue of `T` shared by processes, like Python's `multiprocessing.Manager().Queue()`,
/// plus batched puts and gets and [`close`](Queue::close). It has
/// [`task_done`](Queue::task_done) and [`join`](Queue::join), counted as Python's manager queue
/// (a `queue.Queue`) counts them; a [`JoinableQueue`] is the same type with the kind
/// [`Joinable`], whose `task_done` also finishes an item kept on record for redelivery.
///
/// ```no_run
/// # let client = agora_client::Client::from_env()?;
/// let jobs = client.queue_named::<String>("jobs", 100)?; // at most 100 items
/// jobs.put("compile")?;                                   // waits while full
/// jobs.put_many(["test".to_string(), "lint".into()])?;   // one round trip
/// // In each consumer process:
/// for job in jobs.iter() {
///     let job = job?;
///     // ...
/// } // ends once the queue is closed and drained
/// // In the producer, when everything has been put:
/// jobs.close()?;
/// # Ok::<(), agora_client::Error>(())
/// ```
///
/// # "Nothing there" is a value
/// Where Python raises `queue.Full` or `queue.Empty`, the non-blocking (`try_`) and timed
/// (`_timeout`) methods return `None`, as every such method of this crate does (see the
/// crate's "Timeouts"): [`try_put`](Queue::try_put) and [`put_timeout`](Queue::put_timeout)
/// when there was no room, [`try_get`](Queue::try_get) and [`get_timeout`](Queue::get_timeout)
/// when there was no item, the batched ones when not one item got in or came. Errors are kept
/// for what is not routine: `Closed`, a lost connection, a value of another type.
///
/// # Closing
/// After [`close`](Queue::close), puts fail with `Closed`; gets still take what is left, then
/// fail with `Closed`, and getters parked on an empty queue get `Closed` at once. So N
/// consumers stop without N sentinel values: [`iter`](Queue::iter) ends there.
///
/// # Fairness
/// Getters and putters each wait in a FIFO line on the manager: items go to the getter that
/// has waited longest, room to the putter that has waited longest, and a newcomer never
/// overtakes a parked caller. Python's `queue.Queue` wakes waiters in no defined order.
///
/// # Process death and timeouts
/// A waiter that times out or whose process dies is removed from its line at once; the next
/// one is served. An item is never handed to a getter that is gone: if the manager finds the
/// getter's connection closed when it delivers, the item goes back to the head of the queue.
/// Delivery means writing the reply to the getter's socket: a plain [`get`](Queue::get) is
/// at-most-once, and a getter that dies after that, before reading it, takes the item with it.
///
/// # Nothing lost when a consumer dies
/// For at-least-once delivery, a plain queue's consumer takes items with
/// [`get_acked`](Queue::get_acked) and [`ack`](Queue::ack)s each once it is processed (a second
/// round trip per item, or per batch with [`get_many_acked`](Queue::get_many_acked)). A
/// [`JoinableQueue`] needs nothing new: its [`task_done`](Queue::task_done) is the
/// acknowledgement. Either way, the items a connection got and had not finished go back to the
/// head of the queue, in their order, when its connection closes, however the process ends;
/// so [`join`](Queue::join) still completes after a consumer was killed. An item whose consumer
/// acted on it and died before finishing it is processed twice; no other item is.
///
/// # Threads
/// Any number of threads may block in `get` or `put` of the same client at once; each waits
/// only for its own reply.
pub struct Queue<T, K = Plain> {
    client: Client,
    id: Target,
    marker: PhantomData<fn() -> (T, K)>,
}

super::proxy_common!(Queue[T, K: QueueKind], K::WIRE.kind, K::WIRE.name);

/// A [`Queue`] whose consumers report each item done with
/// [`task_done`](Queue::task_done), so that producers can [`join`](Queue::join)
/// until all work is finished, like Python's `multiprocessing.Manager().JoinableQueue()`.
///
/// ```no_run
/// # let client = agora_client::Client::from_env()?;
/// let work = client.joinable_queue_named::<u64>("work", 0)?;
/// // Consumer process:
/// for n in work.iter() {
///     let _square = n? * 2;
///     work.task_done()?;
/// }
/// // Producer process:
/// work.put_many(0..100u64)?;
/// work.join()?; // every item taken and marked done
/// work.close()?; // the consumers' loops end
/// # Ok::<(), agora_client::Error>(())
/// ```
///
/// It is a [`Queue`] of kind [`Joinable`]: everything [`Queue`] documents holds here too, and
/// generic code can take any queue as `Queue<T, K>` with `K:` [`QueueKind`].
pub type JoinableQueue<T> = Queue<T, Joinable>;

/// An item taken with [`Queue::get_acked`], with the receipt that acknowledges it
/// ([`Queue::ack`]) or puts it back ([`Queue::nack`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked<T> {
    /// The receipt: unique within the queue.
    pub receipt: u64,
    /// The item.
    pub item: T,
}

fn acked<T: DeserializeOwned>(r: crate::command::Reply) -> Result<Acked<T>> {
    let (receipt, item) = decode::value::<(u64, T)>(r)?;
    Ok(Acked { receipt, item })
}

fn acked_unless_empty<T: DeserializeOwned>(r: crate::command::Reply) -> Result<Option<Acked<T>>> {
    let got = decoders::unless_empty::<(u64, T)>(r)?;
    Ok(got.map(|(receipt, item)| Acked { receipt, item }))
}

fn acked_batch<T: DeserializeOwned>(r: crate::command::Reply) -> Result<Vec<Acked<T>>> {
    let got = decode::seq::<(u64, T)>(r)?;
    Ok(got
        .into_iter()
        .map(|(receipt, item)| Acked { receipt, item })
        .collect())
}

/// The kind of a [`Queue`]: [`Plain`] or [`Joinable`]. It fixes the wire names of the queue's
/// methods; code generic over both kinds takes a `Queue<T, K>` with `K: QueueKind`. Sealed:
/// the manager has exactly these two kinds of queue.
pub trait QueueKind: sealed::Sealed {}

/// The kind of a plain [`Queue`] (`queue` on the wire), the default.
#[derive(Debug)]
pub enum Plain {}

/// The kind of a [`JoinableQueue`] (`joinable_queue` on the wire), whose consumers mark items
/// done so that producers can wait for all work to finish.
#[derive(Debug)]
pub enum Joinable {}

impl QueueKind for Plain {}
impl QueueKind for Joinable {}

mod sealed {
    /// The wire names of one kind of queue, spelled out so that commands borrow them for free.
    #[derive(Debug)]
    pub struct Wire {
        pub kind: &'static str,
        /// The type's name, for `Debug`.
        pub name: &'static str,
        pub put: &'static str,
        pub put_nowait: &'static str,
        pub get: &'static str,
        pub get_nowait: &'static str,
        pub put_many: &'static str,
        pub get_many: &'static str,
        pub qsize: &'static str,
        pub empty: &'static str,
        pub full: &'static str,
        pub maxsize: &'static str,
        pub close: &'static str,
        pub is_closed: &'static str,
        pub task_done: &'static str,
        pub join: &'static str,
    }

    /// What makes a type a queue kind; only this module can implement it.
    pub trait Sealed {
        const WIRE: Wire;
    }

    impl Sealed for super::Plain {
        const WIRE: Wire = Wire {
            kind: "queue",
            name: "Queue",
            put: "queue.put",
            put_nowait: "queue.put_nowait",
            get: "queue.get",
            get_nowait: "queue.get_nowait",
            put_many: "queue.put_many",
            get_many: "queue.get_many",
            qsize: "queue.qsize",
            empty: "queue.empty",
            full: "queue.full",
            maxsize: "queue.maxsize",
            close: "queue.close",
            is_closed: "queue.is_closed",
            task_done: "queue.task_done",
            join: "queue.join",
        };
    }

    impl Sealed for super::Joinable {
        const WIRE: Wire = Wire {
            kind: "joinable_queue",
            name: "JoinableQueue",
            put: "joinable_queue.put",
            put_nowait: "joinable_queue.put_nowait",
            get: "joinable_queue.get",
            get_nowait: "joinable_queue.get_nowait",
            put_many: "joinable_queue.put_many",
            get_many: "joinable_queue.get_many",
            qsize: "joinable_queue.qsize",
            empty: "joinable_queue.empty",
            full: "joinable_queue.full",
            maxsize: "joinable_queue.maxsize",
            close: "joinable_queue.close",
            is_closed: "joinable_queue.is_closed",
            task_done: "joinable_queue.task_done",
            join: "joinable_queue.join",
        };
    }
}

impl Client {
    /// Creates a new, empty queue holding at most `maxsize` items (0: unbounded).
    pub fn queue<T>(&self, maxsize: usize) -> Result<Queue<T>> {
        self.create_queue(None, maxsize)
    }

    /// The queue called `name`, created empty with `maxsize` if there is none (get-or-create:
    /// an existing queue keeps its items and maxsize).
    pub fn queue_named<T>(&self, name: &str, maxsize: usize) -> Result<Queue<T>> {
        self.create_queue(Some(name), maxsize)
    }

    /// Creates a new, empty joinable queue holding at most `maxsize` items (0: unbounded).
    pub fn joinable_queue<T>(&self, maxsize: usize) -> Result<JoinableQueue<T>> {
        self.create_queue(None, maxsize)
    }

    /// The joinable queue called `name`, created empty with `maxsize` if there is none
    /// (get-or-create).
    pub fn joinable_queue_named<T>(&self, name: &str, maxsize: usize) -> Result<JoinableQueue<T>> {
        self.create_queue(Some(name), maxsize)
    }

    fn create_queue<T, K: QueueKind>(
        &self,
        name: Option<&str>,
        maxsize: usize,
    ) -> Result<Queue<T, K>> {
        let mut args = Args::default();
        args.str(K::WIRE.kind).opt_str(name).uint(maxsize as u64);
        Ok(Queue::from_id(self, self.create_with(args)?))
    }
}

/// How long a put or a get may wait: the `block` and `timeout` params after its item (or its
/// count).
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// No such params: the method's own way (`put`/`get` wait without limit, `put_nowait`
    /// and `get_nowait` never wait).
    AsMethod,
    /// `block` true and a timeout.
    UpTo(Duration),
    /// `block` false.
    Never,
}

impl Wait {
    fn encode(self, a: &mut Args) {
        match self {
            Wait::AsMethod => {}
            Wait::UpTo(t) => {
                a.bool(true);
                timeout(a, Some(t));
            }
            Wait::Never => {
                a.bool(false);
            }
        }
    }
}

/// The command builders every method is made of.
impl<T, K: QueueKind> Queue<T, K> {
    /// `method` with `[item, block, timeout]`.
    fn put_with<U, R>(&self, method: &'static str, item: &U, wait: Wait, read: Decoder<R>) -> Cmd<R>
    where
        U: Serialize + ?Sized,
    {
        Cmd::object(self.id, method, read, |a| {
            a.value(item)?;
            wait.encode(a);
            Ok(())
        })
    }

    /// `method` with `[block, timeout]`.
    fn get_with<R>(&self, method: &'static str, wait: Wait, read: Decoder<R>) -> Cmd<R> {
        Cmd::object(self.id, method, read, |a| {
            wait.encode(a);
            Ok(())
        })
    }

    /// `put_many` with `[items, block, timeout]`.
    fn put_many_with<I, R>(&self, items: I, wait: Wait, read: Decoder<R>) -> Cmd<R>
    where
        T: Serialize,
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        Cmd::object(self.id, K::WIRE.put_many, read, |a| {
            a.seq(items.into_iter().map(By::<T, _>::new))?;
            wait.encode(a);
            Ok(())
        })
    }

    /// `get_many` with `[n, block, timeout]`.
    fn get_many_with<R>(&self, n: usize, wait: Wait, read: Decoder<R>) -> Cmd<R> {
        Cmd::object(self.id, K::WIRE.get_many, read, |a| {
            a.uint(n as u64);
            wait.encode(a);
            Ok(())
        })
    }

    /// `method` with no params but the id.
    fn query<R>(&self, method: &'static str, read: Decoder<R>) -> Cmd<R> {
        Cmd::object(self.id, method, read, |_| Ok(()))
    }
}

impl<T, K: QueueKind> Queue<T, K>
where
    T: Serialize + DeserializeOwned,
{
    /// Puts `item` at the back, waiting while the queue is full. Fails with `Closed` when the
    /// queue is (or becomes, while waiting) closed.
    pub fn put<U>(&self, item: &U) -> Result<()>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.client.run(self.put_cmd(item))
    }

    /// [`Queue::put`] as a command (`<kind>.put`).
    pub fn put_cmd<U>(&self, item: &U) -> Cmd<()>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.put_with(K::WIRE.put, item, Wait::AsMethod, decoders::unit)
    }

    /// Puts `item`, waiting up to `timeout` for room: `Some(())` once it is in, `None` if there
    /// was no room in time (Python's `Full`; the item was not put). The timeout runs on the
    /// manager.
    pub fn put_timeout<U>(&self, item: &U, timeout: Duration) -> Result<Option<()>>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.client.run(self.put_timeout_cmd(item, timeout))
    }

    /// [`Queue::put_timeout`] as a command (`<kind>.put`).
    pub fn put_timeout_cmd<U>(&self, item: &U, timeout: Duration) -> Cmd<Option<()>>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.put_with(
            K::WIRE.put,
            item,
            Wait::UpTo(timeout),
            decoders::unless_full,
        )
    }

    /// Puts `item` if there is room now: `Some(())` once it is in, `None` if the queue is full
    /// (Python's `put_nowait` raising `Full`). Never waits.
    pub fn try_put<U>(&self, item: &U) -> Result<Option<()>>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.client.run(self.try_put_cmd(item))
    }

    /// [`Queue::try_put`] as a command (`<kind>.put_nowait`).
    pub fn try_put_cmd<U>(&self, item: &U) -> Cmd<Option<()>>
    where
        T: Borrow<U>,
        U: Serialize + ?Sized,
    {
        self.put_with(
            K::WIRE.put_nowait,
            item,
            Wait::AsMethod,
            decoders::unless_full,
        )
    }

    /// Takes the item at the front, waiting while the queue is empty. Fails with `Closed` once
    /// the queue is closed and drained.
    ///
    /// An item that is not a `T` is taken all the same: the error
    /// ([`Error::Decode`](crate::Error::Decode)) holds it, undecoded, in
    /// [`DecodeError::raw`](crate::DecodeError::raw) (see the [module](crate::proxies) on
    /// values of another type). So do those of the other gets.
    pub fn get(&self) -> Result<T> {
        self.client.run(self.get_cmd())
    }

    /// [`Queue::get`] as a command (`<kind>.get`).
    pub fn get_cmd(&self) -> Cmd<T> {
        self.get_with(K::WIRE.get, Wait::AsMethod, decode::value)
    }

    /// Takes the item at the front, waiting up to `timeout` for one: `None` if none came in
    /// time (Python's `Empty`; nothing was taken). The timeout runs on the manager.
    pub fn get_timeout(&self, timeout: Duration) -> Result<Option<T>> {
        self.client.run(self.get_timeout_cmd(timeout))
    }

    /// [`Queue::get_timeout`] as a command (`<kind>.get`).
    pub fn get_timeout_cmd(&self, timeout: Duration) -> Cmd<Option<T>> {
        self.get_with(K::WIRE.get, Wait::UpTo(timeout), decoders::unless_empty)
    }

    /// Takes the item at the front if there is one: `None` if the queue is empty (Python's
    /// `get_nowait` raising `Empty`). Never waits.
    pub fn try_get(&self) -> Result<Option<T>> {
        self.client.run(self.try_get_cmd())
    }

    /// [`Queue::try_get`] as a command (`<kind>.get_nowait`).
    pub fn try_get_cmd(&self) -> Cmd<Option<T>> {
        self.get_with(K::WIRE.get_nowait, Wait::AsMethod, decoders::unless_empty)
    }

    /// Puts every item, in order, in one round trip, waiting for room as needed; returns how
    /// many were put (all of them). Another putter's items never interleave with a batch that
    /// fits at once; a batch that has to wait for room goes in as room appears, in order,
    /// ahead of later putters.
    pub fn put_many<I>(&self, items: I) -> Result<usize>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        self.client.run(self.put_many_cmd(items))
    }

    /// [`Queue::put_many`] as a command (`<kind>.put_many`).
    pub fn put_many_cmd<I>(&self, items: I) -> Cmd<usize>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        self.put_many_with(items, Wait::AsMethod, decoders::count)
    }

    /// As [`put_many`](Self::put_many), waiting up to `timeout` in all: `Some(n)` when `n`
    /// items got in (the first `n`, in order; the rest were not put), `None` when none did
    /// (also for a batch of no items).
    pub fn put_many_timeout<I>(&self, items: I, timeout: Duration) -> Result<Option<usize>>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        self.client.run(self.put_many_timeout_cmd(items, timeout))
    }

    /// [`Queue::put_many_timeout`] as a command (`<kind>.put_many`).
    pub fn put_many_timeout_cmd<I>(&self, items: I, timeout: Duration) -> Cmd<Option<usize>>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        self.put_many_with(items, Wait::UpTo(timeout), decoders::count_unless_zero)
    }

    /// Puts as many items as fit now, in order: `Some(n)` when `n` got in, `None` when none
    /// did. Never waits.
    pub fn try_put_many<I>(&self, items: I) -> Result<Option<usize>>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        self.client.run(self.try_put_many_cmd(items))
    }

    /// [`Queue::try_put_many`] as a command (`<kind>.put_many`).
    pub fn try_put_many_cmd<I>(&self, items: I) -> Cmd<Option<usize>>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        self.put_many_with(items, Wait::Never, decoders::count_unless_zero)
    }

    /// Takes up to `n` items from the front in one round trip, waiting while the queue is
    /// empty: returns 1 to `n` items. Fails with `Closed` once the queue is closed and drained,
    /// and with `ValueError` when `n` is 0.
    pub fn get_many(&self, n: usize) -> Result<Vec<T>> {
        self.client.run(self.get_many_cmd(n))
    }

    /// [`Queue::get_many`] as a command (`<kind>.get_many`).
    pub fn get_many_cmd(&self, n: usize) -> Cmd<Vec<T>> {
        self.get_many_with(n, Wait::AsMethod, decode::seq)
    }

    /// As [`get_many`](Self::get_many), waiting up to `timeout` for the first item: `Some`
    /// with 1 to `n` items, `None` if none came in time.
    pub fn get_many_timeout(&self, n: usize, timeout: Duration) -> Result<Option<Vec<T>>> {
        self.client.run(self.get_many_timeout_cmd(n, timeout))
    }

    /// [`Queue::get_many_timeout`] as a command (`<kind>.get_many`).
    pub fn get_many_timeout_cmd(&self, n: usize, timeout: Duration) -> Cmd<Option<Vec<T>>> {
        self.get_many_with(n, Wait::UpTo(timeout), decoders::batch_unless_empty)
    }

    /// Takes up to `n` items that are there now: `Some` with 1 to `n` items, `None` if the
    /// queue is empty. Never waits.
    pub fn try_get_many(&self, n: usize) -> Result<Option<Vec<T>>> {
        self.client.run(self.try_get_many_cmd(n))
    }

    /// [`Queue::try_get_many`] as a command (`<kind>.get_many`).
    pub fn try_get_many_cmd(&self, n: usize) -> Cmd<Option<Vec<T>>> {
        self.get_many_with(n, Wait::Never, decoders::batch_unless_empty)
    }

    /// The number of items in the queue now (exact, but possibly stale as soon as it is read).
    pub fn qsize(&self) -> Result<usize> {
        self.client.run(self.qsize_cmd())
    }

    /// [`Queue::qsize`] as a command (`<kind>.qsize`).
    pub fn qsize_cmd(&self) -> Cmd<usize> {
        self.query(K::WIRE.qsize, decoders::count)
    }

    /// True when the queue holds no item now.
    pub fn is_empty(&self) -> Result<bool> {
        self.client.run(self.is_empty_cmd())
    }

    /// [`Queue::is_empty`] as a command (`<kind>.empty`).
    pub fn is_empty_cmd(&self) -> Cmd<bool> {
        self.query(K::WIRE.empty, decoders::flag)
    }

    /// True when the queue is bounded and holds `maxsize` items now.
    pub fn is_full(&self) -> Result<bool> {
        self.client.run(self.is_full_cmd())
    }

    /// [`Queue::is_full`] as a command (`<kind>.full`).
    pub fn is_full_cmd(&self) -> Cmd<bool> {
        self.query(K::WIRE.full, decoders::flag)
    }

    /// The most items the queue holds (0: unbounded).
    pub fn maxsize(&self) -> Result<usize> {
        self.client.run(self.maxsize_cmd())
    }

    /// [`Queue::maxsize`] as a command (`<kind>.maxsize`).
    pub fn maxsize_cmd(&self) -> Cmd<usize> {
        self.query(K::WIRE.maxsize, decoders::count)
    }

    /// Closes the queue: puts fail with `Closed` from now on (waiting putters too, and their
    /// items that did not get in are dropped); getters drain what is left, then get `Closed`.
    /// Closing twice is harmless. There is no reopening.
    pub fn close(&self) -> Result<()> {
        self.client.run(self.close_cmd())
    }

    /// [`Queue::close`] as a command (`<kind>.close`).
    pub fn close_cmd(&self) -> Cmd<()> {
        self.query(K::WIRE.close, decoders::unit)
    }

    /// True once the queue has been closed.
    pub fn is_closed(&self) -> Result<bool> {
        self.client.run(self.is_closed_cmd())
    }

    /// [`Queue::is_closed`] as a command (`<kind>.is_closed`).
    pub fn is_closed_cmd(&self) -> Cmd<bool> {
        self.query(K::WIRE.is_closed, decoders::flag)
    }

    /// A blocking iterator over the items: each `next` is a [`get`](Self::get). It ends when
    /// the queue is closed and drained. An error (a lost connection, an item of another type)
    /// is yielded once, and then the iterator ends.
    pub fn iter(&self) -> QueueIter<'_, T> {
        QueueIter {
            client: &self.client,
            id: self.id,
            method: K::WIRE.get,
            done: false,
            marker: PhantomData,
        }
    }

    /// A blocking iterator over batches of up to `n` items: each `next` is a
    /// [`get_many`](Self::get_many)`(n)`, so a busy queue is drained with a round trip per
    /// batch rather than per item. Ends as [`iter`](Self::iter) does.
    pub fn batches(&self, n: usize) -> QueueBatches<'_, T> {
        QueueBatches {
            client: &self.client,
            id: self.id,
            method: K::WIRE.get_many,
            n,
            done: false,
            marker: PhantomData,
        }
    }
}

impl<'a, T, K: QueueKind> IntoIterator for &'a Queue<T, K>
where
    T: Serialize + DeserializeOwned,
{
    type Item = Result<T>;
    type IntoIter = QueueIter<'a, T>;

    fn into_iter(self) -> QueueIter<'a, T> {
        self.iter()
    }
}

/// What only a plain [`Queue`] has: acknowledged gets, for at-least-once delivery.
impl<T: DeserializeOwned> Queue<T, Plain> {
    /// Takes the item at the front, waiting while the queue is empty, with a receipt: the
    /// manager keeps the item on record until [`ack`](Queue::ack) (or [`nack`](Queue::nack)),
    /// and if this client's connection closes first, however it closes, the item goes back to
    /// the head of the queue for the next getter. Fails with `Closed` as [`get`](Queue::get).
    pub fn get_acked(&self) -> Result<Acked<T>> {
        self.client.run(self.get_acked_cmd())
    }

    /// [`Queue::get_acked`] as a command (`queue.get_acked`).
    pub fn get_acked_cmd(&self) -> Cmd<Acked<T>> {
        self.get_with("queue.get_acked", Wait::AsMethod, acked)
    }

    /// As [`get_acked`](Queue::get_acked), waiting up to `timeout`: `None` if no item came.
    pub fn get_acked_timeout(&self, timeout: Duration) -> Result<Option<Acked<T>>> {
        self.client.run(self.get_acked_timeout_cmd(timeout))
    }

    /// [`Queue::get_acked_timeout`] as a command (`queue.get_acked`).
    pub fn get_acked_timeout_cmd(&self, timeout: Duration) -> Cmd<Option<Acked<T>>> {
        self.get_with("queue.get_acked", Wait::UpTo(timeout), acked_unless_empty)
    }

    /// As [`get_many`](Queue::get_many) (1 to `n` items, waiting while the queue is empty),
    /// each item with its receipt, as [`get_acked`](Queue::get_acked).
    pub fn get_many_acked(&self, n: usize) -> Result<Vec<Acked<T>>> {
        self.client.run(self.get_many_acked_cmd(n))
    }

    /// [`Queue::get_many_acked`] as a command (`queue.get_many_acked`).
    pub fn get_many_acked_cmd(&self, n: usize) -> Cmd<Vec<Acked<T>>> {
        Cmd::object(self.id, "queue.get_many_acked", acked_batch, move |a| {
            a.uint(n as u64);
            Ok(())
        })
    }

    /// The item of `receipt` is processed: the manager forgets it. Any connection may
    /// acknowledge it. Fails with `ValueError` when the receipt is not on record: acknowledged
    /// already, or its item was redelivered because the connection that got it closed.
    pub fn ack(&self, receipt: u64) -> Result<()> {
        self.client.run(self.ack_cmd(receipt))
    }

    /// [`Queue::ack`] as a command (`queue.ack`).
    pub fn ack_cmd(&self, receipt: u64) -> Cmd<()> {
        self.settle("queue.ack", receipt)
    }

    /// The item of `receipt` goes back to the head of the queue now, for the next getter.
    /// Fails as [`ack`](Queue::ack).
    pub fn nack(&self, receipt: u64) -> Result<()> {
        self.client.run(self.nack_cmd(receipt))
    }

    /// [`Queue::nack`] as a command (`queue.nack`).
    pub fn nack_cmd(&self, receipt: u64) -> Cmd<()> {
        self.settle("queue.nack", receipt)
    }

    fn settle(&self, method: &'static str, receipt: u64) -> Cmd<()> {
        Cmd::object(self.id, method, decoders::unit, move |a| {
            a.uint(receipt);
            Ok(())
        })
    }
}

/// `task_done` and `join`, counted as Python's `queue.Queue` counts them (Python's manager
/// `Queue()` is one, so both kinds have them).
impl<T, K: QueueKind> Queue<T, K> {
    /// Marks one item taken from the queue as done; fails with `ValueError` when called more
    /// times than items were put, as in Python. On a [`JoinableQueue`] it also finishes the
    /// oldest item this client's connection took and has not marked (or, if it took none, the
    /// oldest any connection took): until then the manager keeps the item on record, and puts
    /// it back at the head of the queue if the connection closes first. On a plain queue it
    /// only counts: its gets stay at-most-once.
    pub fn task_done(&self) -> Result<()> {
        self.client.run(self.task_done_cmd())
    }

    /// [`Queue::task_done`] as a command (`queue.task_done` or `joinable_queue.task_done`).
    pub fn task_done_cmd(&self) -> Cmd<()> {
        self.query(K::WIRE.task_done, decoders::unit)
    }

    /// Waits until every item ever put has been marked done with
    /// [`task_done`](Queue::task_done) (at once if none is pending).
    pub fn join(&self) -> Result<()> {
        self.client.run(self.join_cmd())
    }

    /// [`Queue::join`] as a command (`queue.join` or `joinable_queue.join`).
    pub fn join_cmd(&self) -> Cmd<()> {
        self.query(K::WIRE.join, decoders::unit)
    }

    /// As [`join`](Queue::join), for up to `timeout`: `Some(())` when all work is done,
    /// `None` when the timeout passed first. The timeout runs on the manager.
    pub fn join_timeout(&self, timeout: Duration) -> Result<Option<()>> {
        self.client.run(self.join_timeout_cmd(timeout))
    }

    /// [`Queue::join_timeout`] as a command (`queue.join` or `joinable_queue.join`).
    pub fn join_timeout_cmd(&self, timeout: Duration) -> Cmd<Option<()>> {
        Cmd::object(
            self.id,
            K::WIRE.join,
            decoders::unless_timed_out,
            move |a| {
                super::wait::timeout(a, Some(timeout));
                Ok(())
            },
        )
    }
}

/// The blocking iterator of [`Queue::iter`] (of a plain or a joinable queue): yields each
/// item as [`get`](Queue::get) returns it, and ends when the queue is closed and drained.
#[derive(Debug)]
pub struct QueueIter<'a, T> {
    client: &'a Client,
    id: Target,
    method: &'static str,
    done: bool,
    marker: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Iterator for QueueIter<'_, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.done {
            return None;
        }
        let cmd = Cmd::object(self.id, self.method, decode::value, |_| Ok(()));
        end_on_closed(&mut self.done, self.client.run(cmd))
    }
}

impl<T: DeserializeOwned> std::iter::FusedIterator for QueueIter<'_, T> {}

/// The blocking iterator of [`Queue::batches`]: yields batches of 1 to `n` items, and ends
/// when the queue is closed and drained.
#[derive(Debug)]
pub struct QueueBatches<'a, T> {
    client: &'a Client,
    id: Target,
    method: &'static str,
    n: usize,
    done: bool,
    marker: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Iterator for QueueBatches<'_, T> {
    type Item = Result<Vec<T>>;

    fn next(&mut self) -> Option<Result<Vec<T>>> {
        if self.done {
            return None;
        }
        let n = self.n as u64;
        let cmd = Cmd::object(self.id, self.method, decode::seq, move |a| {
            a.uint(n);
            Ok(())
        });
        end_on_closed(&mut self.done, self.client.run(cmd))
    }
}

impl<T: DeserializeOwned> std::iter::FusedIterator for QueueBatches<'_, T> {}

/// An iterator step: `Closed` ends it quietly; another error is yielded, then it ends.
fn end_on_closed<T>(done: &mut bool, got: Result<T>) -> Option<Result<T>> {
    match got {
        Ok(item) => Some(Ok(item)),
        Err(e) => {
            *done = true;
            if e.is(ErrorName::Closed) {
                None
            } else {
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn iteration_ends_quietly_on_closed_and_once_after_an_error() {
        let mut done = false;
        assert_eq!(end_on_closed(&mut done, Ok(1)).unwrap().unwrap(), 1);
        assert!(!done);
        let closed = Err(Error::remote("Closed", "the queue is closed"));
        assert!(end_on_closed::<i32>(&mut done, closed).is_none());
        assert!(done);
        let mut done = false;
        let other = Err(Error::remote("TypeError", "nope"));
        assert!(end_on_closed::<i32>(&mut done, other).unwrap().is_err());
        assert!(done);
    }
}
