//! The value kinds in etcd (dict, list, value, array, namespace, set). A list, value, array or
//! set keeps its whole state in one key, `P o/ID/state`, holding its snapshot (`create`'s init
//! args that rebuild it, [`crate::objects::SharedObject::snapshot`]), changed only by
//! compare-and-swap on its revision. A dict or namespace keeps each entry in a key of its own,
//! with a header in `P o/ID/state` whose revision is the object's (the module `entries`): a
//! call writes the entries it changed, not the whole object.
//!
//! Each manager runs one task per object it serves. The task keeps the last state it read and
//! an object built from it, and runs the calls that came in since its last round, in their
//! order, on that object; then one transaction checks that the state's revision is still the
//! one it read and, if the calls changed the object, writes the new snapshot. If another
//! manager changed the state meanwhile, the same transaction returns the new state, and the
//! round runs again on it: every call takes effect exactly once, atomically, in an order every
//! manager agrees on (etcd's). The calls of a round share one round trip to etcd.

mod entries;

use std::sync::Arc;

use etcd_client::{Compare, CompareOp, TxnOp};
use tokio::sync::{mpsc, oneshot};

use agora_proto::{CallError, ErrorName, Params};

use crate::lifecycle::{Caller, Grant, Holder, Holdings, Outcome, Reply, View};
use crate::objects::{self, Kind, ObjectHandle, SharedObject};

use super::waits::{hand_over, Cancels, Parks};
use super::EtcdStore;

/// Most calls one round runs.
const ROUND: usize = 256;

/// Most rounds a call is retried when other managers keep changing the object.
const MAX_RETRIES: usize = 1000;

/// A value object kept in etcd, as one manager serves it.
pub struct Data {
    kind: Kind,
    calls: mpsc::UnboundedSender<Call>,
    this: std::sync::Weak<Data>,
}

/// One call waiting for its object's task.
struct Call {
    op: Box<str>,
    params: Params,
    reply: oneshot::Sender<Reply>,
}

/// What the task knows of the state: its revision, the object built from it, and the state
/// as etcd has it, to tell what a round changed.
struct Known {
    revision: i64,
    object: ObjectHandle,
    state: InEtcd,
}

/// An object's state as etcd has it.
enum InEtcd {
    /// A one-key kind's snapshot.
    Whole(Vec<u8>),
    /// A dict's or namespace's entries.
    Entries(entries::Entries),
}

/// Whether `kind` keeps its entries in keys of their own.
fn keeps_entries(kind: Kind) -> bool {
    matches!(kind, Kind::Dict | Kind::Namespace)
}

/// How a round's write (or check) ended.
enum Written {
    /// The calls changed nothing, and the state is still the one they ran on.
    Unchanged,
    /// The new state was written at this revision.
    At(i64),
    /// The state changed meanwhile: the fresh whole state when the answer had it (the kinds
    /// kept in one key), else it is read again (`None` for a one-key kind: deleted).
    Changed(Option<(i64, Vec<u8>)>),
}

impl Data {
    /// The local handle of object `id`, and for a new object its initial state key.
    pub fn build(store: &Arc<EtcdStore>, id: u64, kind: Kind, init: &Params) -> super::Built {
        let object = objects::create_value(kind, init)?;
        let key = store.object_key(id, "state");
        let entries = keeps_entries(kind).then(|| entries::Keys::new(store, id, key.clone()));
        let initial = match &entries {
            Some(keys) => keys.initial(&object)?,
            None => {
                let mut snapshot = Vec::new();
                object.snapshot(&mut snapshot);
                vec![TxnOp::put(key.clone(), snapshot, None)]
            }
        };
        let (calls, rx) = mpsc::unbounded_channel();
        let data = Arc::new_cyclic(|this| Data {
            kind,
            calls,
            this: this.clone(),
        });
        let task = Task {
            store: store.clone(),
            key,
            kind,
            known: None,
            holdings: Holdings::new(),
            entries,
        };
        tokio::spawn(task.run(rx));
        Ok((data, initial))
    }
}

impl SharedObject for Data {
    fn kind(&self) -> Kind {
        self.kind
    }

    fn call(
        &self,
        method: &str,
        params: &Params,
        _caller: &Caller<'_>,
        _out: &mut Vec<u8>,
    ) -> Result<Outcome, CallError> {
        let call = |reply| Call {
            op: method.into(),
            params: params.clone(),
            reply,
        };
        hand_over(&self.this, &self.calls, call, None)
    }

    fn view(&self) -> View {
        View::default()
    }
}

impl Parks for Data {
    // A value call never waits for anything but etcd: it has no deadline, and one whose
    // connection went is still carried out (its answer is dropped), as a memory object's is.
    fn cancels(&self) -> Option<&Cancels> {
        None
    }

    // A value call's answer holds nothing.
    fn give_back(&self, _grant: Grant, _to: &Holder) {}
}

/// The task that runs one object's calls against etcd.
struct Task {
    store: Arc<EtcdStore>,
    key: Vec<u8>,
    kind: Kind,
    known: Option<Known>,
    /// Value calls hold nothing; the objects they run on want a caller all the same.
    holdings: Arc<Holdings>,
    /// A dict's or namespace's entry keys.
    entries: Option<entries::Keys>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Call>) {
        let mut round = Vec::with_capacity(ROUND);
        while rx.recv_many(&mut round, ROUND).await > 0 {
            let answers = self.round(&round).await;
            for (call, answer) in round.drain(..).zip(answers) {
                // The connection may have gone: its answer is dropped.
                let _ = call.reply.send(answer);
            }
        }
    }

    /// Runs one round of calls until it commits, returning each call's answer.
    async fn round(&mut self, calls: &[Call]) -> Vec<Reply> {
        let fail = |e: CallError| calls.iter().map(|_| Err(e.clone())).collect();
        for _ in 0..MAX_RETRIES {
            if self.known.is_none() {
                if let Err(e) = self.load().await {
                    return fail(e);
                }
            }
            let Some(known) = self.known.as_mut() else {
                continue;
            };
            let answers = run_calls(self.kind, &self.holdings, &known.object, calls);
            let mut after = Vec::new();
            known.object.snapshot(&mut after);
            let written = match (&mut known.state, &self.entries) {
                (InEtcd::Entries(entries), Some(keys)) => {
                    match keys.write(entries, known.revision, &after).await {
                        Ok(None) => check(&self.store, &self.key, known.revision).await,
                        Ok(Some(entries::Wrote::At(revision))) => Ok(Written::At(revision)),
                        Ok(Some(entries::Wrote::Changed)) => Ok(Written::Changed(None)),
                        Err(e) => Err(e),
                    }
                }
                (InEtcd::Whole(before), _) if after == *before => {
                    check(&self.store, &self.key, known.revision).await
                }
                _ => write_whole(&self.store, &self.key, known.revision, &after).await,
            };
            match written {
                Ok(Written::Unchanged) => return answers,
                Ok(Written::At(revision)) => {
                    // The object already is the new state: only its revision is new (a dict's
                    // entries were brought up to date by their write).
                    known.revision = revision;
                    if let InEtcd::Whole(before) = &mut known.state {
                        *before = after;
                    }
                    return answers;
                }
                // Changed by another manager (or deleted): rebuild from what etcd has, run
                // again.
                Ok(Written::Changed(fresh)) => {
                    self.known = None;
                    if self.entries.is_some() {
                        continue;
                    }
                    let Some((revision, snapshot)) = fresh else {
                        return fail(deleted());
                    };
                    if let Err(e) = self.rebuild(revision, snapshot) {
                        return fail(e);
                    }
                }
                Err(e) => {
                    // What etcd holds is unknown now: read it again next round.
                    self.known = None;
                    return fail(e);
                }
            }
        }
        fail(CallError::runtime(
            "the object changed through other managers on every try; try again",
        ))
    }

    async fn load(&mut self) -> Result<(), CallError> {
        if let Some(keys) = &self.entries {
            let (revision, object, entries) = keys.load(self.kind).await?;
            self.known = Some(Known {
                revision,
                object,
                state: InEtcd::Entries(entries),
            });
            return Ok(());
        }
        let got = self
            .store
            .get("reading an object", self.key.clone(), None)
            .await?;
        let Some(kv) = got.kvs().first() else {
            return Err(deleted());
        };
        self.rebuild(kv.mod_revision(), kv.value().to_vec())
    }

    fn rebuild(&mut self, revision: i64, snapshot: Vec<u8>) -> Result<(), CallError> {
        let init = Params::from_array(snapshot.clone().into())
            .ok_or_else(|| CallError::runtime("an object's state in etcd is corrupt"))?;
        let object = objects::create_value(self.kind, &init)?;
        self.known = Some(Known {
            revision,
            object,
            state: InEtcd::Whole(snapshot),
        });
        Ok(())
    }
}

/// Runs every call on `object` in order, each as a memory object runs it.
fn run_calls(
    kind: Kind,
    holdings: &Arc<Holdings>,
    object: &ObjectHandle,
    calls: &[Call],
) -> Vec<Reply> {
    let caller = Caller {
        session: 0,
        holdings,
    };
    calls
        .iter()
        .map(|call| {
            let mut out = Vec::new();
            match object.call(&call.op, &call.params, &caller, &mut out)? {
                Outcome::Done => Ok(Grant::Item(objects::Stored::new(out.into_boxed_slice()))),
                // Value kinds never park; were one to, it is refused rather than lost.
                Outcome::Parked(_) => Err(CallError::runtime(format!(
                    "{kind}.{} would wait, which the etcd store does not do for a {kind}",
                    call.op
                ))),
            }
        })
        .collect()
}

/// Checks that `key` is still at `revision` (a round that only read): reads only.
async fn check(store: &EtcdStore, key: &[u8], revision: i64) -> Result<Written, CallError> {
    let compare = Compare::mod_revision(key.to_vec(), CompareOp::Equal, revision);
    let reread = vec![TxnOp::get(key.to_vec(), None)];
    let answer = store
        .read_txn("running a call", vec![compare], Vec::new(), reread)
        .await?;
    Ok(if answer.succeeded {
        Written::Unchanged
    } else {
        Written::Changed(fresh(&answer))
    })
}

/// Writes a one-key kind's whole new state `after`, if `key` is still at `revision`.
async fn write_whole(
    store: &EtcdStore,
    key: &[u8],
    revision: i64,
    after: &[u8],
) -> Result<Written, CallError> {
    let compare = Compare::mod_revision(key.to_vec(), CompareOp::Equal, revision);
    let write = vec![TxnOp::put(key.to_vec(), after.to_vec(), None)];
    let reread = vec![TxnOp::get(key.to_vec(), None)];
    let answer = store
        .txn("running a call", vec![compare], write, reread)
        .await?;
    Ok(if answer.succeeded {
        Written::At(answer.revision)
    } else {
        Written::Changed(fresh(&answer))
    })
}

/// The state a failed comparison's other branch read: its revision and value.
fn fresh(answer: &super::Applied) -> Option<(i64, Vec<u8>)> {
    answer.got(0).and_then(|kvs| {
        kvs.first()
            .map(|kv| (kv.mod_revision(), kv.value().to_vec()))
    })
}

fn deleted() -> CallError {
    CallError::new(
        ErrorName::UnknownObjectError,
        "the object was deleted (through this or another manager)",
    )
}
