//! The core under random interleavings: a toy semaphore, several connections, and every event
//! the core handles (park, grant by release, expiry, cancellation, connection close, a grant
//! dropped before it was read, deletion), with the invariants checked after every step.
//!
//! `AGORA_FUZZ_CASES` sets the number of cases (see the README's test section).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use agora_proto::ErrorName;
use proptest::prelude::*;

use super::*;

use super::toy::Permits;

const LINE: LineId = 0;
const OBJECT: ObjectKey = 1 << 41;
const CONNS: usize = 3;

/// One step of a run.
#[derive(Debug, Clone)]
enum Step {
    /// Connection `c` takes a permit, or parks for one (with a deadline already passed when
    /// `expirable`: it expires the first time it is polled, unless granted by then).
    Take { c: usize, expirable: bool },
    /// Connection `c` gives back one permit it knows it holds.
    Release { c: usize },
    /// The connection reads the answer of parked call `k` if one came (or, for an expirable
    /// call, lets it expire).
    Poll { k: prop::sample::Index },
    /// Parked call `k` is dropped unread: a cancellation, or an undeliverable grant.
    Drop { k: prop::sample::Index },
    /// Connection `c` closes: its parked calls are dropped, then its holdings released.
    Close { c: usize },
    /// The object is deleted (ends the run).
    Delete,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..CONNS, any::<bool>()).prop_map(|(c, expirable)| Step::Take { c, expirable }),
        3 => (0..CONNS).prop_map(|c| Step::Release { c }),
        3 => any::<prop::sample::Index>().prop_map(|k| Step::Poll { k }),
        2 => any::<prop::sample::Index>().prop_map(|k| Step::Drop { k }),
        1 => (0..CONNS).prop_map(|c| Step::Close { c }),
        1 => Just(Step::Delete),
    ]
}

type Answer = Pin<Box<dyn Future<Output = (u32, Reply, Ticket)>>>;

/// A parked call the test has not read the answer of yet.
struct Call {
    conn: usize,
    /// Arrival order.
    seq: u64,
    expirable: bool,
    answer: Answer,
}

struct Conn {
    id: SessionId,
    holdings: Arc<Holdings>,
    /// Permits it was told it holds (answers read), minus those it gave back.
    holds: u64,
}

struct Run {
    rt: tokio::runtime::Runtime,
    p: Arc<Parking<Permits>>,
    total: u64,
    conns: Vec<Conn>,
    next_session: SessionId,
    calls: Vec<Call>,
    next_seq: u64,
    /// Holders that closed holding something, and owner-died notices read.
    deaths: u64,
    notices: u64,
}

impl Run {
    fn new(total: u64) -> Run {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let mut run = Run {
            rt,
            p: Parking::new(|held| Permits { free: total, held }),
            total,
            conns: Vec::new(),
            next_session: 1,
            calls: Vec::new(),
            next_seq: 0,
            deaths: 0,
            notices: 0,
        };
        for _ in 0..CONNS {
            let conn = run.fresh_conn();
            run.conns.push(conn);
        }
        run
    }

    fn fresh_conn(&mut self) -> Conn {
        self.next_session += 1;
        Conn {
            id: self.next_session,
            holdings: Holdings::new(),
            holds: 0,
        }
    }

    /// Reads an answer that came: the connection now holds what it was granted.
    fn got(&mut self, conn: usize, reply: &Reply) -> Result<(), TestCaseError> {
        match reply {
            Ok(Grant::Acquired { owner_died, .. }) => {
                self.conns[conn].holds += 1;
                if *owner_died {
                    self.notices += 1;
                    prop_assert!(self.notices <= self.deaths, "a notice no close caused");
                }
            }
            Ok(Grant::NotAcquired) => {}
            other => prop_assert!(false, "unexpected answer {:?}", other),
        }
        Ok(())
    }

    fn take(&mut self, c: usize, expirable: bool) -> Result<(), TestCaseError> {
        let holdings = self.conns[c].holdings.clone();
        let caller = Caller {
            session: self.conns[c].id,
            holdings: &holdings,
        };
        let timeout = expirable.then_some(Duration::ZERO);
        let outcome = self.p.op(|cx| {
            if cx.state.free > 0 && cx.waiting(LINE) == 0 {
                cx.state.free -= 1;
                cx.state.held.add(caller, 1);
                return Ok(Err(cx.acquired()));
            }
            Ok(Ok(cx.park(LINE, OBJECT, &caller, (), timeout)))
        });
        match outcome.expect("live until deleted") {
            Err(grant) => self.got(c, &Ok(grant))?,
            Ok(park) => {
                let parked = Parked::new(self.next_seq as u32, park, caller.holder());
                self.calls.push(Call {
                    conn: c,
                    seq: self.next_seq,
                    expirable,
                    answer: Box::pin(parked.reply()),
                });
                self.next_seq += 1;
            }
        }
        Ok(())
    }

    /// Polls call `i` once (an expirable one until it is answered); `Some` once answered.
    fn poll(&mut self, i: usize) -> Option<Reply> {
        let call = &mut self.calls[i];
        let answer = if call.expirable {
            let fut = call.answer.as_mut();
            let out = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), fut)
                    .await
                    .expect("an expired call is answered")
            });
            Some(out.1)
        } else {
            let mut cx = Context::from_waker(Waker::noop());
            match call.answer.as_mut().poll(&mut cx) {
                Poll::Ready((_, reply, _)) => Some(reply),
                Poll::Pending => None,
            }
        };
        if answer.is_some() {
            self.calls.remove(i);
        }
        answer
    }

    fn poll_step(&mut self, i: usize) -> Result<(), TestCaseError> {
        let (conn, seq) = (self.calls[i].conn, self.calls[i].seq);
        let Some(reply) = self.poll(i) else {
            return Ok(());
        };
        self.got(conn, &reply)?;
        if matches!(reply, Ok(Grant::Acquired { .. })) {
            // FIFO: every call still waiting that arrived earlier was granted too.
            while let Some(j) = self.calls.iter().position(|c| c.seq < seq) {
                let conn = self.calls[j].conn;
                let earlier = self.poll(j);
                prop_assert!(
                    matches!(earlier, Some(Ok(Grant::Acquired { .. }))),
                    "call {} granted before earlier call {}: {:?}",
                    seq,
                    j,
                    earlier
                );
                self.got(conn, &earlier.unwrap())?;
            }
        }
        Ok(())
    }

    fn release(&mut self, c: usize) {
        if self.conns[c].holds == 0 {
            return;
        }
        let id = self.conns[c].id;
        self.p
            .op(|cx| {
                cx.state.free += cx.state.held.remove(id, 1);
                Ok(())
            })
            .expect("live until deleted");
        self.conns[c].holds -= 1;
    }

    fn close(&mut self, c: usize) {
        self.calls.retain(|call| call.conn != c);
        let conn = std::mem::replace(
            &mut self.conns[c],
            Conn {
                id: 0,
                holdings: Holdings::new(),
                holds: 0,
            },
        );
        if conn.holds > 0 {
            self.deaths += 1;
        }
        conn.holdings.release_all(conn.id);
        assert!(conn.holdings.is_empty());
        self.conns[c] = self.fresh_conn();
    }

    /// Conservation, capacity and the holdings records, while the object lives.
    fn check(&self) -> Result<(), TestCaseError> {
        let counts: Vec<u64> = self
            .conns
            .iter()
            .map(|c| self.p.read(|s| s.held.count(c.id)).unwrap())
            .collect();
        let free = self.p.read(|s| s.free).unwrap();
        let held: u64 = counts.iter().sum();
        let told: u64 = self.conns.iter().map(|c| c.holds).sum();
        // Granted but unread: parked calls that left the line.
        let in_flight = (self.calls.len() - self.p.parked()) as u64;
        prop_assert_eq!(free + held, self.total, "permits conserved");
        prop_assert_eq!(
            held,
            told + in_flight,
            "held = read grants + grants in flight"
        );
        prop_assert!(held <= self.total);
        for (conn, n) in self.conns.iter().zip(&counts) {
            prop_assert!(*n >= conn.holds);
            prop_assert_eq!(
                conn.holdings.is_empty(),
                *n == 0,
                "the record is non-empty iff the connection holds something"
            );
        }
        if free > 0 {
            prop_assert_eq!(self.p.parked(), 0, "nobody waits while a permit is free");
        }
        Ok(())
    }

    /// Deletes the object: every call still parked is answered exactly once, with
    /// `UnknownObjectError` unless its grant was already in flight.
    fn delete(&mut self) -> Result<(), TestCaseError> {
        let in_flight = self.calls.len() - self.p.parked();
        self.p.detach(OBJECT);
        let mut granted = 0;
        while !self.calls.is_empty() {
            let conn = self.calls[0].conn;
            let reply = self.poll(0);
            prop_assert!(reply.is_some(), "a parked call unanswered after deletion");
            match reply.unwrap() {
                Err(e) => prop_assert_eq!(e.name, ErrorName::UnknownObjectError),
                ok => {
                    granted += 1;
                    self.got(conn, &ok)?;
                }
            }
        }
        prop_assert_eq!(granted, in_flight);
        prop_assert_eq!(self.p.parked(), 0);
        for conn in &self.conns {
            prop_assert!(
                conn.holdings.is_empty(),
                "a deleted object is held by nobody"
            );
        }
        let refused = self.p.op(|_| Ok(()));
        prop_assert_eq!(refused.unwrap_err().name, ErrorName::UnknownObjectError);
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("AGORA_FUZZ_CASES")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(400)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_core_keeps_its_invariants_under_any_interleaving(
        total in 1u64..4,
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        let mut run = Run::new(total);
        for s in steps {
            match s {
                Step::Take { c, expirable } => run.take(c, expirable)?,
                Step::Release { c } => run.release(c),
                Step::Poll { k } if !run.calls.is_empty() => {
                    let i = k.index(run.calls.len());
                    run.poll_step(i)?;
                }
                Step::Drop { k } if !run.calls.is_empty() => {
                    let i = k.index(run.calls.len());
                    drop(run.calls.remove(i));
                }
                Step::Close { c } => run.close(c),
                Step::Delete => break,
                _ => {}
            }
            run.check()?;
        }
        run.delete()?;
    }
}
