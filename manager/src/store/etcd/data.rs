//! The value kinds in etcd (dict, list, value, array, namespace, set): the object's whole state
//! is one key, `P o/ID/state`, holding its snapshot (`create`'s init args that rebuild it,
//! [`crate::objects::SharedObject::snapshot`]), changed only by compare-and-swap on its
//! revision.
//!
//! Each manager runs one task per object it serves. The task keeps the last state it read and
//! an object built from it, and runs the calls that came in since its last round, in their
//! order, on that object; then one transaction checks that the state's revision is still the
//! one it read and, if the calls changed the object, writes the new snapshot. If another
//! manager changed the state meanwhile, the same transaction returns the new state, and the
//! round runs again on it: every call takes effect exactly once, atomically, in an order every
//! manager agrees on (etcd's). The calls of a round share one round trip to etcd.

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

/// What the task knows of the state: its revision, snapshot and the object built from it.
struct Known {
    revision: i64,
    snapshot: Vec<u8>,
    object: ObjectHandle,
}

impl Data {
    /// The local handle of object `id`, and for a new object its initial state key.
    pub fn build(store: &Arc<EtcdStore>, id: u64, kind: Kind, init: &Params) -> super::Built {
        let object = objects::create_value(kind, init)?;
        let mut snapshot = Vec::new();
        object.snapshot(&mut snapshot);
        let key = store.object_key(id, "state");
        let initial = vec![TxnOp::put(key.clone(), snapshot, None)];
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
        for _ in 0..MAX_RETRIES {
            if self.known.is_none() {
                if let Err(e) = self.load().await {
                    return calls.iter().map(|_| Err(e.clone())).collect();
                }
            }
            let Some(known) = &self.known else {
                continue;
            };
            let answers = self.run_calls(&known.object, calls);
            let mut after = Vec::new();
            known.object.snapshot(&mut after);
            let compare = Compare::mod_revision(self.key.clone(), CompareOp::Equal, known.revision);
            let changed = after != known.snapshot;
            let reread = vec![TxnOp::get(self.key.clone(), None)];
            let sent = if changed {
                let write = vec![TxnOp::put(self.key.clone(), after.clone(), None)];
                self.store
                    .txn("running a call", vec![compare], write, reread)
                    .await
            } else {
                // Reads only: the state must still be the one the calls read.
                self.store
                    .read_txn("running a call", vec![compare], Vec::new(), reread)
                    .await
            };
            let answer = match sent {
                Ok(answer) => answer,
                Err(e) => {
                    // What etcd holds is unknown now: read it again next round.
                    self.known = None;
                    return calls.iter().map(|_| Err(e.clone())).collect();
                }
            };
            if answer.succeeded {
                if changed {
                    // The object already is the new state: only its revision is new.
                    if let Some(known) = &mut self.known {
                        known.revision = answer.revision;
                        known.snapshot = after;
                    }
                }
                return answers;
            }
            // Changed by another manager (or deleted): rebuild from what etcd has, run again.
            self.known = None;
            let fresh = answer.got(0).and_then(|kvs| {
                kvs.first()
                    .map(|kv| (kv.mod_revision(), kv.value().to_vec()))
            });
            match fresh {
                Some((revision, snapshot)) => match self.rebuild(revision, snapshot) {
                    Ok(()) => {}
                    Err(e) => return calls.iter().map(|_| Err(e.clone())).collect(),
                },
                None => return calls.iter().map(|_| Err(deleted())).collect(),
            }
        }
        let busy =
            CallError::runtime("the object changed through other managers on every try; try again");
        calls.iter().map(|_| Err(busy.clone())).collect()
    }

    /// Runs every call on `object` in order, each as a memory object runs it.
    fn run_calls(&self, object: &ObjectHandle, calls: &[Call]) -> Vec<Reply> {
        let caller = Caller {
            session: 0,
            holdings: &self.holdings,
        };
        calls
            .iter()
            .map(|call| {
                let mut out = Vec::new();
                match object.call(&call.op, &call.params, &caller, &mut out)? {
                    Outcome::Done => Ok(Grant::Item(objects::Stored::new(out.into_boxed_slice()))),
                    // Value kinds never park; were one to, it is refused rather than lost.
                    Outcome::Parked(_) => Err(CallError::runtime(format!(
                        "{}.{} would wait, which the etcd store does not do for a {}",
                        self.kind, call.op, self.kind
                    ))),
                }
            })
            .collect()
    }

    async fn load(&mut self) -> Result<(), CallError> {
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
            snapshot,
            object,
        });
        Ok(())
    }
}

fn deleted() -> CallError {
    CallError::new(
        ErrorName::UnknownObjectError,
        "the object was deleted (through this or another manager)",
    )
}
