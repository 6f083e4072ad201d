//! Where a locked ticket's time goes: the four-call grab (acquire, get, set, release) run
//! once more a round with every worker stamping its critical section, so that the table can
//! say how much of a contended ticket is the lock changing hands and how much the calls made
//! under it, beside the same at one worker.
//!
//! The stamps are `CLOCK_MONOTONIC` readings, one clock for every process of the machine. The
//! stamped race is a race of its own: the timed grab's figures pay nothing for the stamps.

use agora::{Lock, Value};

use crate::harness::{monotonic_ns, Samples};
use crate::report::{Group, Report};

type BoxError = Box<dyn std::error::Error>;

/// One ticket as its seller stamped it (nanoseconds of `CLOCK_MONOTONIC`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamped {
    /// The ticket's number (the count it was bought at).
    pub ticket: u64,
    /// The process that bought it.
    pub seller: u64,
    /// The acquire returned: the lock was this seller's.
    pub acquired: u64,
    /// The get returned.
    pub read: u64,
    /// The set returned.
    pub written: u64,
    /// The guard was dropped: the release was sent (it is not waited for).
    pub released: u64,
}

/// How many `u64` words a [`Stamped`] travels in from a worker process.
const WORDS: usize = 6;

impl Stamped {
    fn words(&self) -> [u64; WORDS] {
        [
            self.ticket,
            self.seller,
            self.acquired,
            self.read,
            self.written,
            self.released,
        ]
    }

    fn from_words(w: &[u64]) -> Option<Stamped> {
        match *w {
            [ticket, seller, acquired, read, written, released] => Some(Stamped {
                ticket,
                seller,
                acquired,
                read,
                written,
                released,
            }),
            _ => None,
        }
    }
}

/// What a worker runs: buys until sold out, stamping each ticket, and returns the stamps
/// flattened (for the harness, which carries `u64`s back from the workers; [`stamps`] reads
/// them).
pub fn stamped_grab(lock: &Lock, value: &Value<i64>) -> Result<Vec<u64>, BoxError> {
    let seller = u64::from(std::process::id());
    let mut words = Vec::new();
    loop {
        let guard = lock.acquire()?;
        let acquired = monotonic_ns();
        let left = value.get()?;
        let read = monotonic_ns();
        if left <= 0 {
            return Ok(words);
        }
        value.set(&(left - 1))?;
        let written = monotonic_ns();
        drop(guard);
        let ticket = Stamped {
            ticket: left.unsigned_abs(),
            seller,
            acquired,
            read,
            written,
            released: monotonic_ns(),
        };
        words.extend(ticket.words());
    }
}

/// The stamps in the words the harness gives back: every worker's, one after another, each
/// ticket a whole run of [`WORDS`].
pub fn stamps(words: &[u64]) -> Vec<Stamped> {
    words
        .chunks_exact(WORDS)
        .filter_map(Stamped::from_words)
        .collect()
}

/// Where one run's tickets spent their time: medians in microseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Phases {
    /// From one ticket's set returning to the next ticket's acquire returning, whoever
    /// bought it: the release, the manager's grant and, when the lock changed hands, the
    /// next holder's wake-up.
    pub hand_off: f64,
    /// The get under the lock.
    pub get: f64,
    /// The set under the lock.
    pub set: f64,
    /// Dropping the guard (the release is sent, not waited for).
    pub release: f64,
    /// The share of consecutive tickets that different processes bought, in percent.
    pub changed_hands: f64,
}

/// The medians of a run's stamps; `None` with fewer than two tickets (no hand-off).
pub fn phases(mut sold: Vec<Stamped>) -> Option<Phases> {
    sold.sort_by_key(|s| s.acquired);
    let pairs = sold.len().checked_sub(1).filter(|&p| p > 0)?;
    let micros = |ns: u64| ns as f64 / 1e3;
    let median =
        |f: &dyn Fn(&Stamped) -> u64| Samples(sold.iter().map(|s| micros(f(s))).collect()).median();
    let hand_off = sold
        .windows(2)
        .map(|p| micros(p[1].acquired.saturating_sub(p[0].written)))
        .collect();
    let changed = sold
        .windows(2)
        .filter(|p| p[0].seller != p[1].seller)
        .count();
    Some(Phases {
        hand_off: Samples(hand_off).median(),
        get: median(&|s| s.read.saturating_sub(s.acquired)),
        set: median(&|s| s.written.saturating_sub(s.read)),
        release: median(&|s| s.released.saturating_sub(s.written)),
        changed_hands: 100.0 * changed as f64 / pairs as f64,
    })
}

const TIMES: Group = Group {
    title: "tickets: where a four-call ticket's time goes (stamped in the workers; ratio vs W=1)",
    unit: "us",
};

const SHARES: Group = Group {
    title: "tickets: consecutive four-call tickets bought by different workers",
    unit: "% of tickets",
};

/// A timed phase as the table names it, and where [`Phases`] keeps it.
type Timed = (&'static str, fn(&Phases) -> f64);

/// The timed phases, in the table's order.
const TIMED: [Timed; 4] = [
    ("hand-off (set done to next acquire)", |p| p.hand_off),
    ("get under the lock", |p| p.get),
    ("set under the lock", |p| p.set),
    ("release (not waited for)", |p| p.release),
];

/// Each round's phases at each worker count.
#[derive(Default)]
pub struct PhaseSamples {
    /// `(workers, that run's phases)`, in the order measured.
    runs: Vec<(usize, Phases)>,
}

impl PhaseSamples {
    /// Notes one stamped run with `w` workers.
    pub fn push(&mut self, w: usize, phases: Phases) {
        self.runs.push((w, phases));
    }

    /// Adds the phases to the table: each phase's median over the rounds at every worker
    /// count, against its median at one worker when one was measured.
    pub fn report(&self, workers: &[usize], report: &mut Report) {
        let of = |w: usize, f: fn(&Phases) -> f64| {
            Samples(
                self.runs
                    .iter()
                    .filter(|(rw, _)| *rw == w)
                    .map(|(_, p)| f(p))
                    .collect(),
            )
        };
        for (name, f) in TIMED {
            let one = workers.contains(&1).then(|| of(1, f).median());
            for &w in workers {
                let ratio = one.filter(|_| w != 1);
                report.row(&TIMES, "unix", w, name, &of(w, f), ratio);
            }
        }
        for &w in workers {
            let name = "tickets that changed hands";
            report.row(&SHARES, "unix", w, name, &of(w, |p| p.changed_hands), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ticket bought by `seller`, acquired at `at` µs, each call taking the given µs.
    fn ticket(ticket: u64, seller: u64, at: u64, get: u64, set: u64, release: u64) -> Stamped {
        let ns = |us: u64| us * 1000;
        Stamped {
            ticket,
            seller,
            acquired: ns(at),
            read: ns(at + get),
            written: ns(at + get + set),
            released: ns(at + get + set + release),
        }
    }

    #[test]
    fn phases_measure_hand_offs_between_consecutive_tickets_in_any_order() {
        // Seller 1 buys at 0 and 100, seller 2 at 40: hand-offs 40 - 10 = 30 and
        // 100 - 50 = 50 µs, and both of them changed hands.
        let sold = vec![
            ticket(3, 1, 100, 5, 5, 1),
            ticket(5, 1, 0, 4, 6, 1),
            ticket(4, 2, 40, 6, 4, 2),
        ];
        let p = phases(sold).expect("three tickets");
        assert_eq!(p.hand_off, 40.0);
        assert_eq!((p.get, p.set, p.release), (5.0, 5.0, 1.0));
        assert_eq!(p.changed_hands, 100.0);
    }

    #[test]
    fn one_seller_keeps_the_lock_and_nothing_changes_hands() {
        let sold = (0..4).map(|i| ticket(4 - i, 7, i * 20, 3, 3, 1)).collect();
        let p = phases(sold).expect("four tickets");
        assert_eq!(p.changed_hands, 0.0);
        assert_eq!(p.hand_off, 14.0, "20 µs apart, 6 of them under the lock");
    }

    #[test]
    fn fewer_than_two_tickets_have_no_phases() {
        assert_eq!(phases(Vec::new()), None);
        assert_eq!(phases(vec![ticket(1, 1, 0, 1, 1, 1)]), None);
    }

    #[test]
    fn stamps_travel_as_words_and_back() {
        let sold = [ticket(2, 9, 10, 1, 2, 3), ticket(1, 8, 30, 4, 5, 6)];
        let words: Vec<u64> = sold.iter().flat_map(Stamped::words).collect();
        assert_eq!(stamps(&words), sold);
    }
}
