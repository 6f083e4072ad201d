//! The calls in flight on one connection: who waits for which msgids, and the replies another
//! thread read for them.
//!
//! A call, or a pipeline's calls, holds a run of consecutive msgids and is known by the first.
//! Its thread waits for the replies in an [`Awaited`] of its own. Whichever thread holds the
//! reader role (see [`crate::connection`]) puts the replies to its own call straight into its
//! `Awaited`, and files those of other calls here, in the [`Call`] of their first msgid; the
//! owner of a call is woken (by [`Thread::unpark`], its thread's own wake-up) only when its
//! last reply has been filed, so a reply wakes no thread but the one it is for.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::thread::Thread;

use bytes::Bytes;

use crate::command::Reply;
use crate::connection::remote_error;
use crate::refs::IdHasher;

/// A response as it arrived: the error and result fields, still encoded.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) error: Bytes,
    pub(crate) result: Bytes,
}

impl Response {
    pub(crate) fn into_reply(self) -> Reply {
        if agora_proto::params::is_nil(&self.error) {
            Ok(self.result)
        } else {
            Err(remote_error(&self.error))
        }
    }
}

type ById<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// What the waiting thread of a call holds: one reply per msgid of its run, filled as they
/// arrive, whoever reads them.
#[derive(Debug)]
pub(crate) struct Awaited {
    /// The first msgid of the run.
    pub(crate) first: u32,
    /// By offset from `first`; a call refused unsent has its error here from the start.
    replies: Slots,
    /// Replies still to come.
    pub(crate) missing: usize,
}

impl Awaited {
    /// Waits for the replies to the `count` msgids from `first`, all of them sent.
    pub(crate) fn new(first: u32, count: usize) -> Awaited {
        let replies = match count {
            1 => Slots::One(None),
            _ => {
                let mut many = Vec::with_capacity(count);
                many.resize_with(count, || None);
                Slots::Many(many)
            }
        };
        Awaited {
            first,
            replies,
            missing: count,
        }
    }

    /// Fails the call at `offset` unsent: no reply is awaited for it.
    pub(crate) fn refuse(&mut self, offset: usize, error: crate::Error) {
        if let Some(slot @ None) = self.replies.get_mut(offset) {
            *slot = Some(Err(error));
            self.missing -= 1;
        }
    }

    /// Takes the reply to `msgid` if it is one of this call's, still awaited; gives it back
    /// otherwise.
    pub(crate) fn accept(&mut self, msgid: u32, response: Response) -> Option<Response> {
        let offset = msgid.wrapping_sub(self.first) as usize;
        match self.replies.get_mut(offset) {
            Some(slot @ None) => {
                *slot = Some(response.into_reply());
                self.missing -= 1;
                None
            }
            _ => Some(response),
        }
    }

    /// The replies, in msgid order (every one there once `missing` is 0).
    pub(crate) fn into_replies(self) -> Vec<Option<Reply>> {
        match self.replies {
            Slots::One(reply) => vec![reply],
            Slots::Many(replies) => replies,
        }
    }

    /// The reply of a single call (there once `missing` is 0).
    pub(crate) fn into_reply(self) -> Option<Reply> {
        match self.replies {
            Slots::One(reply) => reply,
            Slots::Many(replies) => replies.into_iter().next().flatten(),
        }
    }
}

/// Where an [`Awaited`] keeps its replies: a single call's in place, without an allocation
/// (most calls are single).
#[derive(Debug)]
enum Slots {
    One(Option<Reply>),
    Many(Vec<Option<Reply>>),
}

impl Slots {
    fn get_mut(&mut self, offset: usize) -> Option<&mut Option<Reply>> {
        match self {
            Slots::One(reply) => (offset == 0).then_some(reply),
            Slots::Many(replies) => replies.get_mut(offset),
        }
    }
}

/// A call in flight, as the table keeps it under its first msgid.
struct Call {
    /// How many consecutive msgids it holds.
    count: u32,
    /// The thread waiting for it, once it sleeps (or is about to): woken when its last
    /// reply is filed. A thread that never sleeps (it reads for itself) never needs a
    /// handle.
    owner: Option<Thread>,
    /// Replies not yet filed here (nor refused unsent), as far as filing knows: the owner,
    /// when it reads for itself, takes its replies without counting them here.
    unfiled: u32,
    /// Replies read by another thread, by offset from the first msgid.
    filed: Vec<(u32, Response)>,
}

/// What becomes of a filed response.
pub(crate) enum Filed {
    /// Filed for a sleeping call; wake this thread, its last reply is in.
    Complete(Thread),
    /// Filed for a call that waits for more replies, or whose thread is not asleep.
    Partial,
    /// The reply of a call sent without waiting: nobody collects it.
    Detached(Response),
    /// No call has this msgid.
    Unknown,
}

/// The table of calls in flight.
#[derive(Default)]
pub(crate) struct InFlight {
    next_msgid: u32,
    /// Set once msgids wrapped around: from then on a new run is checked against those in use
    /// (before, every msgid from `next_msgid` on is free).
    wrapped: bool,
    calls: ById<Call>,
    /// `(first, count)` of the calls holding more than one msgid (pipelines), to find the call
    /// of a msgid that is not a first.
    runs: Vec<(u32, u32)>,
    /// Msgids of calls sent without waiting: their replies are dropped when read.
    detached: HashSet<u32, BuildHasherDefault<IdHasher>>,
}

impl InFlight {
    /// True when no call waits for a reply (detached ones aside).
    pub(crate) fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// How many detached calls' replies are unread.
    pub(crate) fn detached(&self) -> usize {
        self.detached.len()
    }

    /// Allocates `count` consecutive msgids not in use, and a call waited for by the calling
    /// thread. Returns the first.
    pub(crate) fn register(&mut self, count: u32) -> u32 {
        let first = self.allocate(count);
        self.calls.insert(
            first,
            Call {
                count,
                owner: None,
                unfiled: count,
                filed: Vec::new(),
            },
        );
        if count > 1 {
            self.runs.push((first, count));
        }
        first
    }

    /// Allocates a msgid for a call sent without waiting.
    pub(crate) fn register_detached(&mut self) -> u32 {
        let id = self.allocate(1);
        self.detached.insert(id);
        id
    }

    /// Forgets a detached call that could not be sent.
    pub(crate) fn unregister_detached(&mut self, id: u32) {
        self.detached.remove(&id);
    }

    /// `count` consecutive msgids not in use (a run never wraps around).
    fn allocate(&mut self, count: u32) -> u32 {
        let count = count.max(1);
        loop {
            let first = self.next_msgid;
            let end = u64::from(first) + u64::from(count);
            if end > 1 << 32 {
                self.next_msgid = 0;
                self.wrapped = true;
                continue;
            }
            // Truncation is the wrap: a run ending at 2^32 leaves 0 next.
            self.next_msgid = end as u32;
            if end == 1 << 32 {
                self.wrapped = true;
            }
            if self.wrapped && (first..=((end - 1) as u32)).any(|id| self.in_use(id)) {
                continue;
            }
            return first;
        }
    }

    fn in_use(&self, id: u32) -> bool {
        self.detached.contains(&id) || self.first_of(id).is_some()
    }

    /// The first msgid of the call `id` belongs to.
    fn first_of(&self, id: u32) -> Option<u32> {
        if self.calls.contains_key(&id) {
            return Some(id);
        }
        self.runs
            .iter()
            .find(|&&(first, count)| id.wrapping_sub(first) < count)
            .map(|&(first, _)| first)
    }

    /// Some of the call's msgids were refused unsent: no reply will come for them.
    pub(crate) fn refused(&mut self, first: u32, how_many: u32) {
        if let Some(call) = self.calls.get_mut(&first) {
            call.unfiled = call.unfiled.saturating_sub(how_many);
        }
    }

    /// Files a response read by a thread it is not for.
    pub(crate) fn file(&mut self, id: u32, response: Response) -> Filed {
        let Some(first) = self.first_of(id) else {
            return match self.detached.remove(&id) {
                true => Filed::Detached(response),
                false => Filed::Unknown,
            };
        };
        let Some(call) = self.calls.get_mut(&first) else {
            return Filed::Unknown;
        };
        call.filed.push((id.wrapping_sub(first), response));
        call.unfiled = call.unfiled.saturating_sub(1);
        match (&call.owner, call.unfiled) {
            (Some(owner), 0) => Filed::Complete(owner.clone()),
            _ => Filed::Partial,
        }
    }

    /// Moves what was filed for `awaited`'s call into it.
    pub(crate) fn collect(&mut self, awaited: &mut Awaited) {
        let Some(call) = self.calls.get_mut(&awaited.first) else {
            return;
        };
        for (offset, response) in call.filed.drain(..) {
            if let Some(slot @ None) = awaited.replies.get_mut(offset as usize) {
                *slot = Some(response.into_reply());
                awaited.missing -= 1;
            }
        }
    }

    /// The thread of the call of `first` is about to sleep until it is woken: whoever files its
    /// last reply, hands over the reader role or finds the connection broken wakes it.
    pub(crate) fn sleeping(&mut self, first: u32) {
        if let Some(call) = self.calls.get_mut(&first) {
            call.owner.get_or_insert_with(std::thread::current);
        }
    }

    /// The call of `first` is over: its msgids are free again. A reply that comes later
    /// for one of them is dropped.
    pub(crate) fn finish(&mut self, first: u32) {
        if let Some(call) = self.calls.remove(&first) {
            if call.count > 1 {
                self.runs.retain(|&(f, _)| f != first);
            }
        }
    }

    /// A sleeping thread to hand the reader role to: one whose call still waits for a reply.
    /// None when none sleeps: those still sending, or about to sleep, see that nobody reads
    /// when they come to wait (not a thread still sending: it may be blocked in `send` until
    /// somebody reads).
    pub(crate) fn next_reader(&self) -> Option<Thread> {
        self.calls
            .values()
            .filter(|call| call.unfiled > 0)
            .find_map(|call| call.owner.clone())
    }

    /// Every sleeping thread: the connection broke, each must learn it.
    pub(crate) fn owners(&self) -> Vec<Thread> {
        self.calls
            .values()
            .filter_map(|call| call.owner.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(byte: u8) -> Response {
        Response {
            error: Bytes::from_static(&[0xc0]),
            result: Bytes::copy_from_slice(&[byte]),
        }
    }

    #[test]
    fn msgids_skip_those_in_use_once_they_wrap() {
        let mut table = InFlight {
            next_msgid: u32::MAX - 1,
            ..InFlight::default()
        };
        let old = table.register(1);
        assert_eq!(old, u32::MAX - 1);
        let zero = table.register(1);
        assert_eq!(zero, u32::MAX, "the last msgid is usable");
        let detached = table.register_detached();
        assert_eq!(detached, 0, "then they wrap");
        let run = table.register(3);
        assert_eq!(run, 1);
        table.finish(zero);
        // Wrapped: a run that would overlap one in use (1..=3) or a detached msgid moves on.
        table.next_msgid = 0;
        assert_eq!(table.register(2), 4);
        table.next_msgid = u32::MAX - 1;
        assert_eq!(
            table.register(2),
            6,
            "a run never wraps and skips those in use"
        );
    }

    #[test]
    fn a_run_files_its_replies_and_completes_once() {
        let mut table = InFlight::default();
        let first = table.register(3);
        let mut awaited = Awaited::new(first, 3);
        awaited.refuse(1, crate::Error::Usage("too big".into()));
        table.refused(first, 1);
        table.sleeping(first);
        assert!(matches!(table.file(first + 2, ok(2)), Filed::Partial));
        assert!(matches!(table.file(first, ok(0)), Filed::Complete(_)));
        assert!(matches!(table.file(first + 7, ok(7)), Filed::Unknown));
        table.collect(&mut awaited);
        assert_eq!(awaited.missing, 0);
        table.finish(first);
        assert!(table.is_empty() && table.runs.is_empty());
        let replies: Vec<_> = awaited
            .into_replies()
            .into_iter()
            .map(Option::unwrap)
            .collect();
        assert_eq!(replies[0].as_deref().unwrap(), &[0]);
        assert!(replies[1].is_err());
        assert_eq!(replies[2].as_deref().unwrap(), &[2]);
    }

    #[test]
    fn the_reader_takes_its_own_replies_directly() {
        let mut awaited = Awaited::new(10, 2);
        assert!(awaited.accept(11, ok(1)).is_none());
        assert!(
            awaited.accept(11, ok(1)).is_some(),
            "a duplicate is not taken"
        );
        assert!(awaited.accept(9, ok(9)).is_some(), "nor another call's");
        assert!(awaited.accept(10, ok(0)).is_none());
        assert_eq!(awaited.missing, 0);
    }

    #[test]
    fn detached_replies_are_recognised_once() {
        let mut table = InFlight::default();
        let id = table.register_detached();
        assert_eq!(table.detached(), 1);
        assert!(matches!(table.file(id, ok(0)), Filed::Detached(_)));
        assert!(matches!(table.file(id, ok(0)), Filed::Unknown));
        assert_eq!(table.detached(), 0);
    }
}
