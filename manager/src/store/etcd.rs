//! The etcd store: every object as keys in an etcd cluster, so that several managers serve the
//! same objects.
//!
//! # Keys
//! Everything lives under the store's prefix `P` (`/agora/` unless the address names one):
//! - `P run`: the store's run (a uuid and when it was made), written by the first manager
//!   to open the store and reported by every manager's `hello`, so that clients keep their
//!   proxies when they move from one manager to another.
//! - `P n/NAME`: the id of the object named NAME.
//! - `P o/ID/meta`: the object's kind, name and `create` init args; its presence is the
//!   object's existence (a `delete` removes everything under `P o/ID/`).
//! - `P o/ID/...`: the object's state, in the form its kind keeps ([`data`] for the value
//!   kinds, [`lock`] for the locks, semaphores and conditions, [`queue`] for the queues,
//!   [`signal`] for events and barriers).
//!
//! Ids are drawn at random below 2^53 and claimed with a transaction, so that managers never
//! hand out one id twice.
//!
//! # Holdings and owner death
//! Each manager takes one lease at start-up and keeps it alive (every third of its time to
//! live). Whatever a connection holds or waits for in etcd (a lock's waiter key, a permit) is a
//! key on that lease, recorded for the connection here ([`EtcdStore::track`]): when the
//! connection closes its keys are deleted at once, so the next acquirer, through any manager,
//! is granted with the owner-died notice; when the manager dies, etcd deletes them when the
//! lease expires (`--store-lease-seconds`, 5 s by default), with the same notice. A manager
//! whose lease expired while it lived (etcd unreachable for longer than the lease) has lost
//! every holding it granted: it stops, so that its clients fail over instead of believing they
//! still hold locks.
//!
//! # When an etcd member fails
//! A request to a member that dies (or loses its leader) fails without telling whether it took
//! effect. Reads are simply sent again. Writes go through [`EtcdStore::txn`], which makes a
//! transaction take effect at most once: each carries a fresh *marker* key that it creates,
//! guarded by the marker's absence; after an unknown outcome the store *settles* it by
//! creating the marker itself if it is still absent, so that the lost transaction can never
//! apply later, and sends it again; if the marker is there, the transaction did apply, at the
//! marker's revision. Calls go on through the other members, with nothing applied twice or
//! lost, as long as etcd keeps a quorum. Markers are on the manager's lease and are deleted by
//! later transactions.
//!
//! # Calls
//! A call on an etcd object is answered asynchronously (the connection parks it, see
//! [`crate::lifecycle::Park`]): the object's task runs it against etcd and sends the answer.
//! The registry's own operations (create, lookup, delete, resolving an id another manager
//! handed out) wait for etcd on the connection's task, off the runtime's other tasks
//! ([`tokio::task::block_in_place`]).

pub mod data;
pub mod lock;
pub mod queue;
pub mod signal;
pub mod waits;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse,
};
use parking_lot::Mutex;
use tracing::{error, info, warn};

use agora_proto::{encode, params, CallError, ErrorName, Params};

use crate::lifecycle::{Caller, Holdable, SessionId};
use crate::objects::{Kind, ObjectHandle};
use crate::Run;

use super::{EtcdSpec, OpenError};

/// How long one etcd request may take before it counts as failed with an unknown outcome.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request is tried again (through whichever members answer) before the call that
/// made it fails: long enough for etcd to elect a new leader after losing one.
pub const RETRY_BUDGET: Duration = Duration::from_secs(30);

/// Most times in a row a watch may fail to be made (each [`WATCH_RETRY`] apart) before the
/// wait that needs it fails: [`RETRY_BUDGET`] in all.
pub const MAX_FAILED_WATCHES: u32 = 300;

/// The pause before a failed watch is made again.
pub const WATCH_RETRY: Duration = Duration::from_millis(100);

/// Most operations etcd takes in one branch of a transaction (its `--max-txn-ops`, 128 by
/// default): a transaction's own operations and its marker must stay within it.
pub const MAX_TXN_OPS: usize = 128;

/// Most old markers one transaction deletes on its way.
const MARKERS_PER_TXN: usize = 16;

/// What a transaction sent through [`EtcdStore::txn`] came to.
pub struct Applied {
    /// Its comparisons held: the `then` branch ran (else the `or_else` one did).
    pub succeeded: bool,
    /// The store's revision after it (its writes' revision when it succeeded).
    pub revision: i64,
    /// The answers of the branch that ran; `None` when the transaction succeeded but its answer
    /// was lost (a member failed) and only its having applied, and its revision, are known.
    pub responses: Option<Vec<TxnOpResponse>>,
}

impl Applied {
    /// The key-values the `i`th operation of the branch that ran read (a get), if known.
    pub fn got(&self, i: usize) -> Option<Vec<etcd_client::KeyValue>> {
        match self.responses.as_ref()?.get(i)? {
            TxnOpResponse::Get(get) => Some(get.kvs().to_vec()),
            _ => None,
        }
    }
}

/// True for an error after which the request may or may not have reached etcd and been
/// carried out: worth settling and sending again through another member.
fn transient(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::TransportError(_) | E::IoError(_) => true,
        // gRPC codes: cancelled 1, unknown 2, deadline exceeded 4, resource exhausted 8,
        // aborted 10, internal 13, unavailable 14 (etcd's "request timed out", "no leader").
        E::GRpcStatus(status) => matches!(status.code() as i32, 1 | 2 | 4 | 8 | 10 | 13 | 14),
        _ => false,
    }
}

/// How one try of a request ended.
enum Try<T> {
    Done(T),
    /// Failed for good: nothing was applied.
    Refused(etcd_client::Error),
    /// Failed with an unknown outcome, or timed out.
    Unknown(String),
}

async fn try_once<T>(f: impl Future<Output = Result<T, etcd_client::Error>>) -> Try<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(Ok(t)) => Try::Done(t),
        Ok(Err(e)) if transient(&e) => Try::Unknown(e.to_string()),
        Ok(Err(e)) => Try::Refused(e),
        Err(_) => Try::Unknown(format!("no answer within {REQUEST_TIMEOUT:?}")),
    }
}

/// A pause between two tries, growing to half a second.
async fn backoff(attempt: u32) {
    let ms = 20u64.saturating_mul(1 << attempt.min(5)).min(500);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// A manager's connection to an etcd store.
pub struct EtcdStore {
    client: Client,
    spec: EtcdSpec,
    /// This manager's lease: every key a connection holds is on it.
    lease: i64,
    run: Run,
    /// What each connection holds here: its keys, deleted when it closes.
    sessions: Mutex<HashMap<SessionId, HashSet<Vec<u8>>>>,
    /// This store as its connections' holdings records know it.
    me: Weak<EtcdStore>,
    /// The key that files this store in a connection's holdings record.
    holdings_key: usize,
    /// Numbers this manager's markers.
    markers: std::sync::atomic::AtomicU64,
    /// Markers whose transactions' outcomes are known: deleted by later transactions.
    stale_markers: Mutex<Vec<Vec<u8>>>,
}

/// An etcd error as a call's error: the call may or may not have been carried out.
pub fn failed(what: &str, e: impl std::fmt::Display) -> CallError {
    CallError::runtime(format!(
        "the etcd store failed while {what}: {e} (the call may or may not have taken effect)"
    ))
}

/// An etcd error that says the request was not carried out (a refused request, as opposed to
/// one whose answer was lost): the call took no effect.
fn refused(what: &str, e: impl std::fmt::Display) -> CallError {
    CallError::runtime(format!(
        "the etcd store refused a request while {what}: {e} (the call took no effect)"
    ))
}

/// Runs `f` with the store's request timeout.
pub async fn timed<T, E: std::fmt::Display>(
    what: &str,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(failed(what, e)),
        Err(_) => Err(failed(
            what,
            format!("no answer within {REQUEST_TIMEOUT:?}"),
        )),
    }
}

/// Waits for `f` on the calling connection's task, letting the runtime move its other tasks
/// to another thread meanwhile. Only for the registry's rare operations (create, lookup,
/// delete, a first sight of an id), never for object calls.
pub fn wait_for<T>(f: impl Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// What the catalog knows of one object.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Its kind.
    pub kind: Kind,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// `create`'s init args, an encoded array.
    pub init: Vec<u8>,
}

impl Meta {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.init.len() + 32);
        encode::array_header(&mut out, 3);
        encode::str(&mut out, self.kind.as_str());
        match &self.name {
            Some(name) => encode::str(&mut out, name),
            None => encode::nil(&mut out),
        }
        out.extend_from_slice(&self.init);
        out
    }

    fn decode(raw: &[u8]) -> Option<Meta> {
        let p = Params::from_array(raw.to_vec().into())?;
        if p.len() != 3 {
            return None;
        }
        let kind = Kind::parse(p.str(0).ok()?)?;
        let name = match p.opt(1) {
            Some(_) => Some(p.str(1).ok()?.to_owned()),
            None => None,
        };
        Some(Meta {
            kind,
            name,
            init: p.raw(2).to_vec(),
        })
    }

    /// The init args as params.
    pub fn init_params(&self) -> Result<Params, CallError> {
        Params::from_array(self.init.clone().into())
            .ok_or_else(|| CallError::runtime("an object's init args in etcd are corrupt"))
    }
}

impl EtcdStore {
    /// Connects, takes the store's run (making it if this is the first manager), and takes
    /// this manager's lease and keeps it alive.
    pub async fn open(spec: &EtcdSpec) -> Result<Arc<EtcdStore>, OpenError> {
        let at = spec.endpoints.join(",");
        let fail = |why: String| OpenError::Etcd {
            at: at.clone(),
            why,
        };
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        let mut client = timed(
            "connecting",
            Client::connect(&spec.endpoints, Some(options)),
        )
        .await
        .map_err(|e| fail(e.message))?;
        let run = open_run(&mut client, &spec.prefix)
            .await
            .map_err(|e| fail(e.message))?;
        let ttl = i64::try_from(spec.lease_ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let lease = timed("taking a lease", client.lease_grant(ttl, None))
            .await
            .map_err(|e| fail(e.message))?
            .id();
        let store = Arc::new_cyclic(|me| EtcdStore {
            client,
            spec: spec.clone(),
            lease,
            run,
            sessions: Mutex::default(),
            me: me.clone(),
            holdings_key: crate::lifecycle::next_object_key() as usize,
            markers: std::sync::atomic::AtomicU64::new(0),
            stale_markers: Mutex::default(),
        });
        info!(store = %store.describe(), lease, run = %store.run.id, "opened the etcd store");
        Ok(store)
    }

    /// Keeps the lease alive until it cannot: returns when the lease is lost (expired, or etcd
    /// unreachable past its time to live), after which this manager must stop.
    ///
    /// The lease is counted as lasting its time to live from when the last renewal that
    /// succeeded was *sent* (etcd restarts it when it receives it, later): the manager never
    /// believes in a lease etcd has already let expire. Each try is short, so that while a
    /// member fails (a keep-alive sent to a leader that died hangs until its timeout) several
    /// tries, through whichever member answers, fit before the lease is up.
    pub async fn keep_lease_alive(self: Arc<EtcdStore>) {
        let every = (self.spec.lease_ttl / 3).max(Duration::from_millis(200));
        let try_limit = (every / 3).max(Duration::from_millis(100));
        let mut renewed_at = tokio::time::Instant::now();
        loop {
            tokio::time::sleep_until(renewed_at + every).await;
            let mut attempt = 0;
            loop {
                let sent = tokio::time::Instant::now();
                match self.renew(try_limit).await {
                    Ok(true) => {
                        renewed_at = sent;
                        break;
                    }
                    Ok(false) => {
                        error!(
                            lease = self.lease,
                            "the etcd lease expired: every holding this manager granted is gone"
                        );
                        return;
                    }
                    Err(why) if attempt % 10 == 0 => {
                        warn!(error = %why, "renewing the etcd lease failed; retrying");
                    }
                    Err(_) => {}
                }
                if renewed_at.elapsed() + try_limit >= self.spec.lease_ttl {
                    error!(
                        lease = self.lease,
                        "the etcd lease could not be renewed within its time to live"
                    );
                    return;
                }
                attempt += 1;
                backoff(attempt.min(2)).await;
            }
        }
    }

    /// One keep-alive of the lease: whether it is still alive.
    async fn renew(&self, limit: Duration) -> Result<bool, String> {
        let mut client = self.client();
        let renewed = async {
            let (mut keeper, mut stream) = client.lease_keep_alive(self.lease).await?;
            keeper.keep_alive().await?;
            stream.message().await
        };
        match tokio::time::timeout(limit, renewed).await {
            Ok(Ok(Some(answer))) => Ok(answer.ttl() > 0),
            Ok(Ok(None)) => Err("the keep-alive stream ended".to_owned()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {limit:?}")),
        }
    }

    /// Revokes the lease: what this manager's connections held is released at once.
    pub async fn close(&self) {
        let mut client = self.client.clone();
        if let Err(e) = timed("revoking the lease", client.lease_revoke(self.lease)).await {
            warn!(error = %e.message, "revoking the etcd lease failed; it expires on its own");
        }
    }

    /// The store's run.
    pub fn run(&self) -> &Run {
        &self.run
    }

    /// `etcd://HOSTS/PREFIX`, for logs and `stats`.
    pub fn describe(&self) -> String {
        super::StoreSpec::Etcd(self.spec.clone()).to_string()
    }

    /// The lease every held key is put on.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// A client for one request (clones share the connection).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Reads `key` (with `options`), trying again through whichever member answers while
    /// etcd is failing over, for up to [`RETRY_BUDGET`].
    pub async fn get(
        &self,
        what: &str,
        key: impl Into<Vec<u8>>,
        options: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse, CallError> {
        let key = key.into();
        self.retried(what, || {
            let (mut client, key, options) = (self.client(), key.clone(), options.clone());
            async move { client.get(key, options).await }
        })
        .await
    }

    /// Runs the request `send` makes, making and sending it again through whichever member
    /// answers while etcd is failing over, for up to [`RETRY_BUDGET`]: only for requests that
    /// are harmless to apply twice (reads).
    async fn retried<T, F>(&self, what: &str, mut send: impl FnMut() -> F) -> Result<T, CallError>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + RETRY_BUDGET;
        let mut attempt = 0;
        loop {
            match try_once(send()).await {
                Try::Done(got) => return Ok(got),
                Try::Refused(e) => return Err(refused(what, e)),
                Try::Unknown(why) if tokio::time::Instant::now() >= deadline => {
                    return Err(failed(what, why))
                }
                Try::Unknown(_) => backoff(attempt).await,
            }
            attempt += 1;
        }
    }

    /// Runs a transaction that takes effect at most once, trying it again through whichever
    /// member answers while etcd is failing over (see the module's doc). The `or_else` branch
    /// must only read: it may run more than once.
    pub async fn txn(
        &self,
        what: &str,
        when: Vec<Compare>,
        then: Vec<TxnOp>,
        or_else: Vec<TxnOp>,
    ) -> Result<Applied, CallError> {
        let deadline = tokio::time::Instant::now() + RETRY_BUDGET;
        let mut attempt = 0;
        loop {
            let marker = self.next_marker();
            let cleared = self.take_stale_markers(then.len() + 1);
            let mut guarded = when.clone();
            guarded.push(Compare::version(marker.clone(), CompareOp::Equal, 0));
            let mut ops = then.clone();
            ops.push(TxnOp::put(marker.clone(), Vec::new(), Some(self.held())));
            ops.extend(cleared.iter().map(|m| TxnOp::delete(m.clone(), None)));
            let txn = Txn::new()
                .when(guarded)
                .and_then(ops)
                .or_else(or_else.clone());
            let mut client = self.client();
            let outcome = try_once(client.txn(txn)).await;
            let done = match &outcome {
                Try::Done(answer) => answer.succeeded(),
                _ => false,
            };
            // The old markers went only if the transaction's own branch ran.
            if !done {
                self.stale_markers.lock().extend(cleared);
            }
            match outcome {
                Try::Done(answer) => {
                    self.stale_markers.lock().push(marker);
                    let revision = answer.header().map_or(0, |h| h.revision());
                    let succeeded = answer.succeeded();
                    let responses = answer.op_responses();
                    return Ok(Applied {
                        succeeded,
                        revision,
                        responses: Some(responses),
                    });
                }
                Try::Refused(e) => return Err(refused(what, e)),
                Try::Unknown(why) => {
                    match self.settle(&marker, deadline).await {
                        Ok(Some(revision)) => {
                            self.stale_markers.lock().push(marker);
                            return Ok(Applied {
                                succeeded: true,
                                revision,
                                responses: None,
                            });
                        }
                        // It never took effect, and never will: send it again.
                        Ok(None) => self.stale_markers.lock().push(marker),
                        Err(settling) => {
                            return Err(failed(
                                what,
                                format!("{why}; whether it applied is unknown: {settling}"),
                            ))
                        }
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(failed(what, why));
                    }
                    backoff(attempt).await;
                }
            }
            attempt += 1;
        }
    }

    /// Runs a transaction that writes nothing (comparisons and reads only), trying it again
    /// through whichever member answers while etcd is failing over: running it twice is
    /// harmless.
    pub async fn read_txn(
        &self,
        what: &str,
        when: Vec<Compare>,
        then: Vec<TxnOp>,
        or_else: Vec<TxnOp>,
    ) -> Result<Applied, CallError> {
        let answer = self
            .retried(what, || {
                let txn = Txn::new()
                    .when(when.clone())
                    .and_then(then.clone())
                    .or_else(or_else.clone());
                let mut client = self.client();
                async move { client.txn(txn).await }
            })
            .await?;
        Ok(Applied {
            succeeded: answer.succeeded(),
            revision: answer.header().map_or(0, |h| h.revision()),
            responses: Some(answer.op_responses()),
        })
    }

    /// Reads with `ops` (gets only) in one consistent snapshot, trying again as
    /// [`EtcdStore::read_txn`] does.
    pub async fn read(&self, what: &str, ops: Vec<TxnOp>) -> Result<Applied, CallError> {
        self.read_txn(what, Vec::new(), ops, Vec::new()).await
    }

    /// Puts `key` (at most once, see [`EtcdStore::txn`]); returns the revision it was put at.
    pub async fn put(
        &self,
        what: &str,
        key: Vec<u8>,
        value: impl Into<Vec<u8>>,
        options: Option<PutOptions>,
    ) -> Result<i64, CallError> {
        let ops = vec![TxnOp::put(key, value, options)];
        Ok(self.txn(what, Vec::new(), ops, Vec::new()).await?.revision)
    }

    /// Deletes `key` (at most once, see [`EtcdStore::txn`]).
    pub async fn delete_key(&self, what: &str, key: Vec<u8>) -> Result<(), CallError> {
        let ops = vec![TxnOp::delete(key, None)];
        self.txn(what, Vec::new(), ops, Vec::new()).await.map(drop)
    }

    /// After a transaction's unknown outcome: creates its marker if it is still absent (the
    /// transaction then never applies: it requires the marker absent) and returns `None`, or
    /// returns the revision at which the transaction made the marker.
    /// Fails with why it could not tell, for the caller's error.
    async fn settle(
        &self,
        marker: &[u8],
        deadline: tokio::time::Instant,
    ) -> Result<Option<i64>, String> {
        let mut attempt = 0;
        loop {
            let fence = Txn::new()
                .when(vec![Compare::version(marker.to_vec(), CompareOp::Equal, 0)])
                .and_then(vec![TxnOp::put(
                    marker.to_vec(),
                    b"fenced".to_vec(),
                    Some(self.held()),
                )])
                .or_else(vec![TxnOp::get(marker.to_vec(), None)]);
            let mut client = self.client();
            match try_once(client.txn(fence)).await {
                Try::Done(answer) if answer.succeeded() => return Ok(None),
                Try::Done(answer) => {
                    let kv = answer.op_responses().into_iter().find_map(|r| match r {
                        TxnOpResponse::Get(get) => get.kvs().first().cloned(),
                        _ => None,
                    });
                    return match kv {
                        Some(kv) if kv.value().is_empty() => Ok(Some(kv.create_revision())),
                        // Fenced by an earlier settle whose answer was lost.
                        Some(_) => Ok(None),
                        None => Err("its marker vanished".to_owned()),
                    };
                }
                Try::Refused(e) => return Err(e.to_string()),
                Try::Unknown(why) if tokio::time::Instant::now() >= deadline => return Err(why),
                Try::Unknown(_) => backoff(attempt).await,
            }
            attempt += 1;
        }
    }

    fn next_marker(&self) -> Vec<u8> {
        let n = self
            .markers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}m/{:x}/{n:x}", self.spec.prefix, self.lease).into_bytes()
    }

    /// Up to [`MARKERS_PER_TXN`] old markers, as many as a transaction of `ops` operations
    /// (its marker's put included) has room for under etcd's limit.
    fn take_stale_markers(&self, ops: usize) -> Vec<Vec<u8>> {
        let room = MAX_TXN_OPS.saturating_sub(ops);
        let mut stale = self.stale_markers.lock();
        let n = stale.len().min(MARKERS_PER_TXN).min(room);
        stale.drain(..n).collect()
    }

    /// The key `P o/ID/suffix`.
    pub fn object_key(&self, id: u64, suffix: &str) -> Vec<u8> {
        format!("{}o/{id:x}/{suffix}", self.spec.prefix).into_bytes()
    }

    /// The catalog's key of object `id`, `P c/ID`: one key an object, so that listing the
    /// objects reads one key each.
    fn catalog_key(&self, id: u64) -> Vec<u8> {
        format!("{}c/{id:x}", self.spec.prefix).into_bytes()
    }

    fn name_key(&self, name: &str) -> Vec<u8> {
        format!("{}n/{name}", self.spec.prefix).into_bytes()
    }

    /// Put options for a key held by a connection: on this manager's lease.
    pub fn held(&self) -> PutOptions {
        PutOptions::new().with_lease(self.lease)
    }

    /// Records `key` as held by the caller's connection: deleted when it closes.
    pub fn track(&self, caller: &Caller<'_>, key: Vec<u8>) {
        let first = {
            let mut sessions = self.sessions.lock();
            let keys = sessions.entry(caller.session).or_default();
            let first = keys.is_empty();
            keys.insert(key);
            first
        };
        if first {
            let me: Weak<dyn Holdable> = self.me.clone();
            caller.holdings.insert(self.holdings_key, &me);
        }
    }

    /// The connection no longer holds `key` (it released it, or gave it up).
    pub fn untrack(&self, session: SessionId, key: &[u8]) {
        let mut sessions = self.sessions.lock();
        if let Some(keys) = sessions.get_mut(&session) {
            keys.remove(key);
            if keys.is_empty() {
                sessions.remove(&session);
            }
        }
    }

    /// Creates an object (get-or-create by name): checks the init args by building the object
    /// here, then claims an id and writes its meta and initial keys in one transaction.
    /// Returns the id and the object's local handle.
    pub async fn create(
        self: &Arc<Self>,
        kind: Kind,
        name: Option<&str>,
        init: &[u8],
    ) -> Result<(u64, ObjectHandle), CallError> {
        let meta = Meta {
            kind,
            name: name.map(str::to_owned),
            init: init.to_vec(),
        };
        loop {
            let id = random_id()?;
            let (object, initial) = build(self, id, &meta)?;
            let mut ops = vec![
                TxnOp::put(self.object_key(id, "meta"), meta.encode(), None),
                TxnOp::put(self.catalog_key(id), Vec::new(), None),
            ];
            ops.extend(initial);
            let mut when = vec![Compare::version(
                self.object_key(id, "meta"),
                CompareOp::Equal,
                0,
            )];
            let mut or_else = Vec::new();
            if let Some(name) = name {
                let key = self.name_key(name);
                when.push(Compare::version(key.clone(), CompareOp::Equal, 0));
                ops.push(TxnOp::put(key.clone(), id.to_string(), None));
                or_else.push(TxnOp::get(key, None));
            }
            let answer = self.txn("creating an object", when, ops, or_else).await?;
            if answer.succeeded {
                return Ok((id, object));
            }
            // The name is taken (or, once in 2^53, the id): the named object is the answer.
            let existing = answer
                .got(0)
                .and_then(|kvs| kvs.first().map(|kv| kv.value().to_vec()));
            if let (Some(name), Some(raw)) = (name, existing) {
                let id = std::str::from_utf8(&raw)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| {
                        CallError::runtime(format!("the id of {name:?} in etcd is corrupt"))
                    })?;
                let Some(found) = self.meta(id).await? else {
                    continue; // deleted meanwhile: try again
                };
                if found.kind != kind {
                    return Err(CallError::type_error(format!(
                        "the object named {name:?} is a {}, not a {kind}",
                        found.kind
                    )));
                }
                let (object, _) = build(self, id, &found)?;
                return Ok((id, object));
            }
        }
    }

    /// The catalog entry of object `id`, if it exists.
    pub async fn meta(&self, id: u64) -> Result<Option<Meta>, CallError> {
        let got = self
            .get("reading an object", self.object_key(id, "meta"), None)
            .await?;
        match got.kvs().first() {
            None => Ok(None),
            Some(kv) => Meta::decode(kv.value()).map(Some).ok_or_else(|| {
                CallError::runtime(format!("object {id}'s entry in etcd is corrupt"))
            }),
        }
    }

    /// Builds the local handle of object `id`, made by any manager; `None` when no such object.
    pub async fn resolve(
        self: &Arc<Self>,
        id: u64,
    ) -> Result<Option<(Meta, ObjectHandle)>, CallError> {
        let Some(meta) = self.meta(id).await? else {
            return Ok(None);
        };
        let (object, _) = build(self, id, &meta)?;
        Ok(Some((meta, object)))
    }

    /// The id of the object named `name`, if any.
    pub async fn lookup(&self, name: &str) -> Result<Option<u64>, CallError> {
        let got = self
            .get("looking up a name", self.name_key(name), None)
            .await?;
        Ok(got
            .kvs()
            .first()
            .and_then(|kv| std::str::from_utf8(kv.value()).ok()?.parse().ok()))
    }

    /// Deletes object `id` (and its name): every key under it. False when it did not exist.
    pub async fn delete(&self, id: u64, name: Option<&str>) -> Result<bool, CallError> {
        let mut ops = vec![
            TxnOp::delete(
                self.object_key(id, ""),
                Some(DeleteOptions::new().with_prefix()),
            ),
            TxnOp::delete(self.catalog_key(id), None),
        ];
        let mut when = vec![Compare::version(
            self.object_key(id, "meta"),
            CompareOp::Greater,
            0,
        )];
        if let Some(name) = name {
            let key = self.name_key(name);
            // Only while the name still names this object.
            when.push(Compare::value(
                key.clone(),
                CompareOp::Equal,
                id.to_string(),
            ));
            ops.push(TxnOp::delete(key, None));
        }
        let answer = self
            .txn("deleting an object", when, ops, Vec::new())
            .await?;
        Ok(answer.succeeded)
    }

    /// Every object in the store: (id, meta). Reads the catalog's keys (`P c/ID`, one an
    /// object), then the objects' meta in batches: an object's own keys (a queue's items, a
    /// dict's entries, however many) are never read to list it.
    pub async fn list(&self) -> Result<Vec<(u64, Meta)>, CallError> {
        let prefix = format!("{}c/", self.spec.prefix);
        let keys = GetOptions::new().with_prefix().with_keys_only();
        let got = self
            .get("listing objects", prefix.clone(), Some(keys))
            .await?;
        let ids: Vec<u64> = got
            .kvs()
            .iter()
            .filter_map(|kv| {
                let hex = kv.key_str().ok()?.strip_prefix(&prefix)?;
                u64::from_str_radix(hex, 16).ok()
            })
            .collect();
        let mut all = Vec::with_capacity(ids.len());
        for batch in ids.chunks(MAX_TXN_OPS) {
            let ops = batch
                .iter()
                .map(|&id| TxnOp::get(self.object_key(id, "meta"), None))
                .collect();
            let answer = self.read("listing objects", ops).await?;
            for (i, &id) in batch.iter().enumerate() {
                // An object deleted between the two reads is left out.
                let meta = answer
                    .got(i)
                    .and_then(|kvs| Meta::decode(kvs.first()?.value()));
                if let Some(meta) = meta {
                    all.push((id, meta));
                }
            }
        }
        Ok(all)
    }
}

impl Holdable for EtcdStore {
    fn session_closed(&self, session: SessionId) {
        let Some(keys) = self.sessions.lock().remove(&session) else {
            return;
        };
        let Some(me) = self.me.upgrade() else {
            return;
        };
        // Deleting a held key without its release bookkeeping is what the next acquirer
        // reads as the owner's death.
        let ops: Vec<TxnOp> = keys.into_iter().map(|k| TxnOp::delete(k, None)).collect();
        tokio::spawn(async move {
            let n = ops.len();
            let what = "releasing a closed connection's holdings";
            if let Err(e) = me.txn(what, Vec::new(), ops, Vec::new()).await {
                warn!(keys = n, error = %e.message, "a closed connection's etcd keys were not deleted; they go with the lease");
            }
        });
    }
}

/// Reads the store's run, making it if this is the first manager ever to open the store.
async fn open_run(client: &mut Client, prefix: &str) -> Result<Run, CallError> {
    let key = format!("{prefix}run");
    let mine = Run::new();
    let mut value = Vec::with_capacity(24);
    value.extend_from_slice(mine.id.as_bytes());
    value.extend_from_slice(&mine.started.to_be_bytes());
    let txn = Txn::new()
        .when(vec![Compare::version(key.clone(), CompareOp::Equal, 0)])
        .and_then(vec![TxnOp::put(key.clone(), value, None)])
        .or_else(vec![TxnOp::get(key, None)]);
    let answer = timed("reading the store's run", client.txn(txn)).await?;
    if answer.succeeded() {
        return Ok(mine);
    }
    let stored = answer.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
        _ => None,
    });
    let corrupt = || CallError::runtime("the store's run key in etcd is corrupt");
    let stored = stored.ok_or_else(corrupt)?;
    let (id, started) = stored.split_at_checked(16).ok_or_else(corrupt)?;
    Ok(Run {
        id: uuid::Uuid::from_slice(id).map_err(|_| corrupt())?,
        started: u64::from_be_bytes(started.try_into().map_err(|_| corrupt())?),
    })
}

/// A random id in `1..2^53`, as the registry's ids are.
fn random_id() -> Result<u64, CallError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|e| CallError::runtime(format!("no randomness for an object id: {e}")))?;
    Ok((u64::from_le_bytes(bytes) & crate::registry::ids::MAX_ID).max(1))
}

/// An etcd object's local handle, and the keys a new one starts with: what each kind's
/// `build` makes.
pub type Built = Result<(ObjectHandle, Vec<TxnOp>), CallError>;

/// Builds the local handle of an etcd object, and the keys a new one starts with.
fn build(store: &Arc<EtcdStore>, id: u64, meta: &Meta) -> Built {
    let init = meta.init_params()?;
    match meta.kind {
        Kind::Dict | Kind::List | Kind::Value | Kind::Array | Kind::Namespace | Kind::Set => {
            data::Data::build(store, id, meta.kind, &init)
        }
        Kind::Lock | Kind::RLock | Kind::Semaphore | Kind::BoundedSemaphore => {
            lock::Permits::build(store, id, meta.kind, &init)
        }
        Kind::Condition => lock::Cond::build(store, id, &init),
        Kind::Queue | Kind::JoinableQueue => queue::Queue::build(store, id, meta.kind, &init),
        Kind::Event => signal::Event::build(store, id, &init),
        Kind::Barrier => signal::Barrier::build(store, id, &init),
        kind => Err(CallError::new(
            ErrorName::TypeError,
            format!(
                "the etcd store does not keep {kind} objects (see docs/stores.md for the kinds \
                 it keeps); use the memory store for them"
            ),
        )),
    }
}

/// Reads an int param the way the wire sends ints.
pub fn int(raw: &[u8]) -> Option<i64> {
    params::int_i64(raw)
}
