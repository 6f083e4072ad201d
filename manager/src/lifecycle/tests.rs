//! The core with a toy object: a counter of permits, one line of takers, holdings counted.

use std::sync::Arc;

use agora_proto::ErrorName;

use super::*;

use super::toy::Permits;

const LINE: LineId = 0;
const OBJECT: ObjectKey = 1 << 40;

fn permits(free: u64) -> Arc<Parking<Permits>> {
    Parking::new(|held| Permits { free, held })
}

/// A connection: its id and holdings record.
struct Conn {
    id: SessionId,
    holdings: Arc<Holdings>,
}

impl Conn {
    fn new(id: SessionId) -> Conn {
        Conn {
            id,
            holdings: Holdings::new(),
        }
    }

    fn caller(&self) -> Caller<'_> {
        Caller {
            session: self.id,
            holdings: &self.holdings,
        }
    }

    /// Takes a permit now, or parks for one.
    fn take(&self, p: &Arc<Parking<Permits>>) -> Result<Grant, Parked> {
        let caller = self.caller();
        let outcome = p
            .op(|cx| {
                if cx.state.free > 0 && cx.waiting(LINE) == 0 {
                    cx.state.free -= 1;
                    cx.state.held.add(caller, 1);
                    return Ok(Err(cx.acquired()));
                }
                Ok(Ok(cx.park(LINE, OBJECT, &caller, (), None)))
            })
            .expect("the parking is live");
        match outcome {
            Err(grant) => Ok(grant),
            Ok(park) => Err(Parked::new(0, park, caller.holder())),
        }
    }

    /// Gives a permit back (as a release by this connection).
    fn put(&self, p: &Arc<Parking<Permits>>) {
        p.op(|cx| {
            cx.state.free += cx.state.held.remove(self.id, 1);
            Ok(())
        })
        .expect("the parking is live");
    }
}

fn answer(parked: Parked) -> Reply {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async { parked.reply().await.1 })
}

#[test]
fn waiters_are_granted_in_arrival_order() {
    let p = permits(1);
    let (a, b, c) = (Conn::new(1), Conn::new(2), Conn::new(3));
    assert_eq!(a.take(&p).ok(), Some(Grant::ACQUIRED));
    let (wb, wc) = (b.take(&p).err().unwrap(), c.take(&p).err().unwrap());
    a.put(&p);
    assert_eq!(answer(wb).unwrap(), Grant::ACQUIRED);
    assert_eq!(c.holdings.len(), 0);
    b.put(&p);
    assert_eq!(answer(wc).unwrap(), Grant::ACQUIRED);
    assert_eq!(c.holdings.len(), 1);
}

#[test]
fn a_grant_to_a_dropped_call_goes_to_the_next_waiter_plainly() {
    let p = permits(1);
    let (a, b, c) = (Conn::new(1), Conn::new(2), Conn::new(3));
    a.take(&p).ok().unwrap();
    let wb = b.take(&p).err().unwrap();
    let wc = c.take(&p).err().unwrap();
    drop(wb); // b's call is cancelled: its waiter leaves the line
    a.put(&p);
    assert_eq!(answer(wc).unwrap(), Grant::ACQUIRED);
    assert!(b.holdings.is_empty());
    assert_eq!(p.parked(), 0);
}

#[test]
fn a_grant_that_arrived_but_was_never_written_is_given_back() {
    let p = permits(1);
    let (a, b, c) = (Conn::new(1), Conn::new(2), Conn::new(3));
    a.take(&p).ok().unwrap();
    let wb = b.take(&p).err().unwrap();
    let wc = c.take(&p).err().unwrap();
    a.put(&p); // granted to b, in b's channel, not written yet
    assert_eq!(b.holdings.len(), 1);
    drop(wb); // b's connection goes before writing it
    assert!(b.holdings.is_empty(), "the holding left b's record");
    assert_eq!(answer(wc).unwrap(), Grant::ACQUIRED);
}

#[test]
fn a_holder_that_dies_releases_with_the_notice_and_its_record_empties() {
    let p = permits(1);
    let (a, b) = (Conn::new(1), Conn::new(2));
    a.take(&p).ok().unwrap();
    let wb = b.take(&p).err().unwrap();
    assert_eq!(a.holdings.len(), 1);
    a.holdings.release_all(a.id);
    assert!(a.holdings.is_empty());
    assert_eq!(
        answer(wb).unwrap(),
        Grant::Acquired {
            owner_died: true,
            owned: true
        }
    );
    // The notice is given once.
    b.put(&p);
    assert_eq!(Conn::new(3).take(&p).ok(), Some(Grant::ACQUIRED));
}

#[test]
fn an_undelivered_notice_goes_on_to_the_next_acquirer() {
    let p = permits(1);
    let (a, b, c) = (Conn::new(1), Conn::new(2), Conn::new(3));
    a.take(&p).ok().unwrap();
    let wb = b.take(&p).err().unwrap();
    let wc = c.take(&p).err().unwrap();
    a.holdings.release_all(a.id); // granted to b with the notice
    drop(wb); // never written
    assert_eq!(
        answer(wc).unwrap(),
        Grant::Acquired {
            owner_died: true,
            owned: true
        }
    );
}

#[test]
fn expiry_answers_what_the_object_says_and_frees_the_line() {
    let p = permits(0);
    let a = Conn::new(1);
    let caller = a.caller();
    let park = p
        .op(|cx| Ok(cx.park(LINE, OBJECT, &caller, (), Some(std::time::Duration::ZERO))))
        .unwrap();
    let parked = Parked::new(0, park, caller.holder());
    assert_eq!(answer(parked).unwrap(), Grant::NotAcquired);
    assert_eq!(p.parked(), 0);
}

#[test]
fn deletion_answers_every_waiter_forgets_holdings_and_refuses_later_calls() {
    let p = permits(1);
    let (a, b) = (Conn::new(1), Conn::new(2));
    a.take(&p).ok().unwrap();
    let wb = b.take(&p).err().unwrap();
    p.detach(OBJECT);
    let err = answer(wb).unwrap_err();
    assert_eq!(err.name, ErrorName::UnknownObjectError);
    assert!(
        a.holdings.is_empty(),
        "a deleted object leaves no holding behind"
    );
    let refused = p.op(|_| Ok(())).unwrap_err();
    assert_eq!(refused.name, ErrorName::UnknownObjectError);
}

#[test]
fn detaching_one_of_two_users_answers_only_its_calls() {
    let p = permits(0);
    p.attach().unwrap();
    let (a, b) = (Conn::new(1), Conn::new(2));
    let (ca, cb) = (a.caller(), b.caller());
    let other: ObjectKey = OBJECT + 1;
    let pa = p.op(|cx| Ok(cx.park(LINE, OBJECT, &ca, (), None))).unwrap();
    let pb = p.op(|cx| Ok(cx.park(LINE, other, &cb, (), None))).unwrap();
    let (wa, wb) = (
        Parked::new(0, pa, ca.holder()),
        Parked::new(0, pb, cb.holder()),
    );
    p.detach(other);
    assert_eq!(answer(wb).unwrap_err().name, ErrorName::UnknownObjectError);
    p.op(|cx| {
        cx.state.free = 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(answer(wa).unwrap(), Grant::ACQUIRED);
}

/// What `stats` shows of an object: its holders and its waiters in arrival order, each with
/// what it waits for; a waiter leaves the view when it is granted, and a deleted object shows
/// nothing.
#[test]
fn the_view_shows_holders_and_waiters_in_arrival_order() {
    let p = permits(1);
    let (a, b, c) = (Conn::new(1), Conn::new(2), Conn::new(3));
    assert!(a.take(&p).is_ok());
    let parked_c = c.take(&p).expect_err("no permit left");
    let parked_b = b.take(&p).expect_err("no permit left");
    let view = p.view(OBJECT);
    assert_eq!(
        view.held,
        [HeldInfo {
            session: 1,
            thread: None,
            count: 1,
            owned: true
        }]
    );
    let waiters: Vec<(SessionId, &str)> = view
        .waiting
        .iter()
        .map(|w| (w.session, w.waits_for.as_str()))
        .collect();
    assert_eq!(waiters, [(3, "a permit"), (2, "a permit")]);
    assert!(view.waiting[0].since <= view.waiting[1].since);
    assert!(
        p.view(OBJECT + 1).waiting.is_empty(),
        "calls parked through another object are not this one's"
    );

    a.put(&p);
    let view = p.view(OBJECT);
    assert_eq!(view.held.iter().map(|h| h.session).collect::<Vec<_>>(), [3]);
    assert_eq!(view.waiting.len(), 1);
    drop(parked_c);
    p.detach(OBJECT);
    assert_eq!(p.view(OBJECT), View::default());
    drop(parked_b);
}

#[test]
fn only_a_grant_to_a_parked_call_counts_as_sent() {
    let p = permits(1);
    let (a, b) = (Conn::new(1), Conn::new(2));
    let before = grants_sent();
    a.take(&p).ok().unwrap();
    assert_eq!(
        grants_sent(),
        before,
        "an acquire answered at once is no grant sent"
    );
    let wb = b.take(&p).err().unwrap();
    a.put(&p);
    assert_eq!(
        grants_sent(),
        before + 1,
        "the release granted b's parked call"
    );
    assert_eq!(answer(wb).unwrap(), Grant::ACQUIRED);
    b.put(&p);
    assert_eq!(grants_sent(), before + 1, "a release with nobody waiting");
}
