//! Acknowledged gets of a queue in etcd (`get_acked`, `get_many_acked`, `ack`, `nack`).
//!
//! An acknowledged get C moves its items from `q/` to `h/C-I` (not on a lease: the item must
//! outlive its getter) and puts `t/C` on the manager's lease, recorded for the getter's
//! connection, in the transaction that takes them. Receipt `C * 256 + I` names item I. `ack`
//! deletes `h/C-I`; `nack` moves it back into the queue (at the tail). When the connection
//! closes (or its manager dies, at lease expiry), `t/C` goes: its `h/C-I` items are then
//! orphans, which the next get, through any manager, takes before the queue's other items:
//! at-least-once delivery, as in memory.

use std::collections::VecDeque;
use std::sync::Arc;

use etcd_client::{Compare, CompareOp, GetOptions, GetResponse, TxnOp};
use tracing::warn;

use agora_proto::{CallError, ErrorName, Params};

use crate::lifecycle::{Caller, Grant, Holdable, Reply, SessionId, Shape};
use crate::objects::{arity, store, Kind, Stored};

use super::{busy, Blocking, Op, Queue, MAX_RETRIES};

/// Ids of acknowledged gets are below 2^40, so that receipts fit in 48 bits.
const CALL_BITS: u32 = 40;

/// One acknowledged get: its id and the connection that made it.
pub struct Acked {
    call: u64,
    session: SessionId,
}

/// Item `index` of acknowledged get `call`.
fn receipt(call: u64, index: usize) -> u64 {
    (call << 8) | index as u64
}

fn not_outstanding(receipt: u64) -> CallError {
    CallError::value(format!(
        "receipt {receipt} is not outstanding: acknowledged already, never given, or its item \
         was redelivered when its connection closed"
    ))
}

impl Queue {
    /// `h/C-I`.
    fn held_key(&self, call: u64, index: usize) -> Vec<u8> {
        let mut key = self.keys.held.clone();
        key.extend_from_slice(format!("{call:010x}-{index:02x}").as_bytes());
        key
    }

    /// `t/C`.
    fn hold_key(&self, call: u64) -> Vec<u8> {
        let mut key = self.keys.holds.clone();
        key.extend_from_slice(format!("{call:010x}").as_bytes());
        key
    }

    /// The get C of a key `h/C-I`.
    fn call_of(&self, held: &[u8]) -> Option<u64> {
        let name = std::str::from_utf8(held.get(self.keys.held.len()..)?).ok()?;
        u64::from_str_radix(name.split('-').next()?, 16).ok()
    }

    /// Parses an acknowledged get (recording its `t/C` key for the caller's connection) or a
    /// settlement.
    pub(super) fn parse_acked(
        &self,
        method: &str,
        p: &Params,
        caller: &Caller<'_>,
    ) -> Result<Op, CallError> {
        if self.kind != Kind::Queue {
            return Err(CallError::new(
                ErrorName::UnknownMethodError,
                format!(
                    "joinable_queue has no method {method:?}: its task_done is the \
                     acknowledgement"
                ),
            ));
        }
        let a = |min, max| arity(p, self.kind, method, min, max);
        let (max, shape, how) = match method {
            "ack" | "nack" => {
                a(2, 2)?;
                return Ok(Op::Settle {
                    receipt: p.u64(1)?,
                    redeliver: method == "nack",
                    session: caller.session,
                });
            }
            "get_acked" => {
                a(1, 3)?;
                (1, Shape::Receipted, Blocking::from_params(p, 1)?)
            }
            _ => {
                a(2, 4)?;
                let max = usize::try_from(p.u64(1)?).unwrap_or(usize::MAX);
                if max == 0 {
                    return Err(CallError::value(format!("{method} takes at least 1 item")));
                }
                (max, Shape::ReceiptedItems, Blocking::from_params(p, 2)?)
            }
        };
        let call = (super::unique()? >> (64 - CALL_BITS)).max(1);
        self.store.track(caller, self.hold_key(call));
        Ok(Op::Get {
            max,
            shape,
            how,
            acked: Some(Acked {
                call,
                session: caller.session,
            }),
        })
    }

    /// The `h/` items whose `t/` key is gone, from keys-only reads of both prefixes.
    pub(super) fn orphans(
        &self,
        held: Option<&GetResponse>,
        holds: Option<&GetResponse>,
    ) -> Vec<Vec<u8>> {
        let (Some(held), Some(holds)) = (held, holds) else {
            return Vec::new();
        };
        let live: std::collections::HashSet<&[u8]> = holds
            .kvs()
            .iter()
            .filter_map(|kv| kv.key().get(self.keys.holds.len()..))
            .collect();
        held.kvs()
            .iter()
            .filter(|kv| {
                let call = self.call_of(kv.key());
                let name = call.map(|c| format!("{c:010x}"));
                name.is_none_or(|n| !live.contains(n.as_bytes()))
            })
            .map(|kv| kv.key().to_vec())
            .collect()
    }

    /// The writes that record taken `items` for an acknowledged get, and the items with their
    /// receipts (0 for a plain get, which records nothing).
    pub(super) fn hold_ops(
        &self,
        acked: Option<&Acked>,
        items: Vec<Stored>,
    ) -> (Vec<TxnOp>, Vec<(u64, Stored)>) {
        let Some(acked) = acked else {
            return (Vec::new(), items.into_iter().map(|i| (0, i)).collect());
        };
        let mut ops = vec![TxnOp::put(
            self.hold_key(acked.call),
            "",
            Some(self.store.held()),
        )];
        let mut taken = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            ops.push(TxnOp::put(
                self.held_key(acked.call, i),
                item.to_vec(),
                None,
            ));
            taken.push((receipt(acked.call, i), item));
        }
        (ops, taken)
    }

    /// Takes one orphan (for `acked`, recording it again). `None` when another getter took it
    /// first.
    pub(super) async fn take_orphan(
        &self,
        key: &[u8],
        acked: Option<&Acked>,
    ) -> Result<Option<(u64, Stored)>, CallError> {
        let got = self
            .store
            .get("getting from a queue", key.to_vec(), None)
            .await?;
        let Some(kv) = got.kvs().first() else {
            return Ok(None);
        };
        let Some(call) = self.call_of(key) else {
            return Err(CallError::runtime(
                "a queue's held item key in etcd is corrupt",
            ));
        };
        let item = store(kv.value());
        let (hold, mut taken) = self.hold_ops(acked, vec![item]);
        let mut ops = vec![TxnOp::delete(key.to_vec(), None)];
        ops.extend(hold);
        let when = vec![
            Compare::version(self.hold_key(call), CompareOp::Equal, 0),
            Compare::mod_revision(key.to_vec(), CompareOp::Equal, kv.mod_revision()),
        ];
        let done = self
            .store
            .txn("getting from a queue", when, ops, Vec::new())
            .await?;
        Ok(if done.succeeded { taken.pop() } else { None })
    }

    /// An acknowledged get that took nothing holds nothing.
    pub(super) fn unhold(&self, acked: Option<&Acked>) {
        if let Some(acked) = acked {
            self.store
                .untrack(acked.session, &self.hold_key(acked.call));
        }
    }

    /// The items of these receipts were never delivered: their get lets go of them, and the
    /// next getter takes them first.
    pub(super) fn drop_holds(self: Arc<Self>, receipts: impl Iterator<Item = u64>) {
        let mut calls: Vec<u64> = receipts.map(|r| r >> 8).collect();
        calls.dedup();
        tokio::spawn(async move {
            for call in calls {
                let key = self.hold_key(call);
                let given = self.store.delete_key("giving back queue items", key).await;
                if let Err(e) = given {
                    warn!(
                        error = %e.message,
                        "undelivered queue items wait for their connection's close to be \
                         redelivered"
                    );
                }
            }
        });
    }

    /// `ack` (the item is done) or `nack` (it goes back into the queue, at the tail).
    pub(super) async fn settle(&self, receipt: u64, redeliver: bool, session: SessionId) -> Reply {
        let call = receipt >> 8;
        let key = self.held_key(call, (receipt & 0xff) as usize);
        for _ in 0..MAX_RETRIES {
            let got = self
                .store
                .get("settling a receipt", key.clone(), None)
                .await?;
            let Some(kv) = got.kvs().first() else {
                return Err(not_outstanding(receipt));
            };
            let mut when = vec![Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                kv.mod_revision(),
            )];
            let mut ops = vec![TxnOp::delete(key.clone(), None)];
            if redeliver {
                let (w, o) = self.back_ops(store(kv.value())).await?;
                when.extend(w);
                ops.extend(o);
            }
            let answer = self
                .store
                .txn("settling a receipt", when, ops, Vec::new())
                .await?;
            if answer.succeeded {
                self.release_if_settled(call, session).await?;
                return Ok(Grant::Nil);
            }
        }
        Err(busy())
    }

    /// The compares and writes that put `item` back into the queue (counted in `len` when
    /// bounded, whatever the room, as memory puts a nacked item back).
    async fn back_ops(&self, item: Stored) -> Result<(Vec<Compare>, Vec<TxnOp>), CallError> {
        let mut when = Vec::new();
        let mut ops = self.item_ops(std::iter::once(&item), false)?;
        if self.bounded() {
            let head = self.head(0).await?;
            let (len, rev) = head.len;
            when.push(Compare::mod_revision(
                self.keys.len.clone(),
                CompareOp::Equal,
                rev,
            ));
            ops.push(TxnOp::put(
                self.keys.len.clone(),
                (len + 1).to_string(),
                None,
            ));
        }
        Ok((when, ops))
    }

    /// When get C has no item left on record, its `t/C` key goes.
    async fn release_if_settled(&self, call: u64, session: SessionId) -> Result<(), CallError> {
        let mut prefix = self.keys.held.clone();
        prefix.extend_from_slice(format!("{call:010x}-").as_bytes());
        let hold = self.hold_key(call);
        let left = GetOptions::new().with_prefix().with_count_only();
        let got = self
            .store
            .get("settling a receipt", prefix.clone(), Some(left))
            .await?;
        if got.count() == 0 {
            self.store
                .delete_key("settling a receipt", hold.clone())
                .await?;
            self.store.untrack(session, &hold);
        }
        Ok(())
    }
}

/// The record of one item got from a joinable queue, finished by a `task_done`.
pub(super) struct Finished {
    /// Its `h/C-I` key.
    pub(super) key: Vec<u8>,
    /// Its receipt when the caller's connection got it here.
    own: Option<u64>,
}

impl Queue {
    /// A joinable queue's gets keep a record of their items, as acknowledged gets do, until
    /// `task_done`: items a connection got and had not marked done are redelivered when it
    /// closes. A plain queue's gets keep none.
    pub(super) fn record_for(&self, op: Op, caller: &Caller<'_>) -> Op {
        let Op::Get {
            max, shape, how, ..
        } = op
        else {
            return op;
        };
        let acked = if self.kind == Kind::JoinableQueue {
            super::unique().ok().map(|u| {
                let call = (u >> (64 - CALL_BITS)).max(1);
                self.store.track(caller, self.hold_key(call));
                let me: std::sync::Weak<dyn Holdable> = self.me.clone();
                caller.holdings.insert(self.holdings_key, &me);
                Acked {
                    call,
                    session: caller.session,
                }
            })
        } else {
            None
        };
        Op::Get {
            max,
            shape,
            how,
            acked,
        }
    }

    /// Remembers the items a joinable queue's get took for its connection.
    pub(super) fn remember(&self, acked: Option<&Acked>, taken: &[(u64, Stored)]) {
        let Some(acked) = acked else {
            return;
        };
        if self.kind != Kind::JoinableQueue {
            return;
        }
        let mut unmarked = self.unmarked.lock();
        let fifo = unmarked.entry(acked.session).or_default();
        fifo.extend(taken.iter().map(|(r, _)| *r));
    }

    /// The item record a `task_done` by `session` finishes, if any: the oldest its connection
    /// got here, else the oldest anybody got.
    pub(super) async fn finish_one(
        &self,
        session: SessionId,
    ) -> Result<Option<Finished>, CallError> {
        if self.kind != Kind::JoinableQueue {
            return Ok(None);
        }
        let own = {
            let mut unmarked = self.unmarked.lock();
            let own = unmarked.get_mut(&session).and_then(VecDeque::pop_front);
            if unmarked.get(&session).is_some_and(VecDeque::is_empty) {
                unmarked.remove(&session);
            }
            own
        };
        if let Some(receipt) = own {
            let key = self.held_key(receipt >> 8, (receipt & 0xff) as usize);
            return Ok(Some(Finished { key, own }));
        }
        let oldest = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_sort(
                etcd_client::SortTarget::Create,
                etcd_client::SortOrder::Ascend,
            )
            .with_limit(1);
        let got = self
            .store
            .get(
                "marking a queue item done",
                self.keys.held.clone(),
                Some(oldest),
            )
            .await?;
        Ok(got.kvs().first().map(|kv| Finished {
            key: kv.key().to_vec(),
            own: None,
        }))
    }

    /// A `task_done` finished `f`: its get lets go of its hold when nothing of it is left.
    pub(super) async fn finished(&self, f: Finished, session: SessionId) -> Result<(), CallError> {
        match f.own {
            Some(receipt) => self.release_if_settled(receipt >> 8, session).await,
            None => Ok(()),
        }
    }

    /// A `task_done` that lost its race: `f` is not finished after all.
    pub(super) fn unfinish(&self, f: Finished, session: SessionId) {
        if let Some(receipt) = f.own {
            self.unmarked
                .lock()
                .entry(session)
                .or_default()
                .push_front(receipt);
        }
    }
}

impl Holdable for Queue {
    /// The connection's items are redelivered through their `t/` keys (the store deletes
    /// them); here only its receipts are forgotten.
    fn session_closed(&self, session: SessionId) {
        self.unmarked.lock().remove(&session);
    }
}
