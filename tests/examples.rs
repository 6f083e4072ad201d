//! Every program of `examples/`, run as a test with its invariant asserted from the data it
//! returns. Each example keeps its logic in a `run` function that its `main` calls; the test
//! includes the example's file as a module and calls `run`, so a plain `cargo test` on a
//! fresh clone builds and checks them all (the example's `main` is unused here).
//! The soak (`examples/soak.rs`) runs for a fixed time, so it has its own test, `soak.rs`.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

#[path = "../examples/deadlock.rs"]
#[allow(dead_code)]
mod deadlock;
#[path = "../examples/event_barrier.rs"]
#[allow(dead_code)]
mod event_barrier;
#[path = "../examples/first_ten.rs"]
#[allow(dead_code)]
mod first_ten;
#[path = "../examples/manager_dict_list.rs"]
#[allow(dead_code)]
mod manager_dict_list;
#[path = "../examples/print_terminal.rs"]
#[allow(dead_code)]
mod print_terminal;
#[path = "../examples/producer_consumer.rs"]
#[allow(dead_code)]
mod producer_consumer;
#[path = "../examples/semaphore_room.rs"]
#[allow(dead_code)]
mod semaphore_room;
#[path = "../examples/ticket_grab.rs"]
#[allow(dead_code)]
mod ticket_grab;

/// The examples fork: one at a time, so that no test forks while another holds a lock.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn manager_dict_list_parent_sees_the_workers_writes() {
    let _serial = serial();
    let outcome = manager_dict_list::run().unwrap();
    assert_eq!(outcome.dict.len(), 10);
    for (i, (k, v)) in outcome.dict.iter().enumerate() {
        assert_eq!(k, &format!("arg{i}"));
        assert_eq!(*v, (i * i) as i64);
    }
    assert_eq!(outcome.list, [11, 12, 13, 14, 15]);
    outcome.check().unwrap();
}

/// The ticket numbers sold: each of 1..=tickets exactly once.
fn assert_each_ticket_sold_once(sales: &ticket_grab::Sales) {
    let numbers: Vec<u64> = sales.sold.iter().map(|&(_, n)| n).collect();
    let distinct: BTreeSet<u64> = numbers.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        numbers.len(),
        "{:?}: a ticket was sold twice: {numbers:?}",
        sales.backend
    );
    assert_eq!(
        distinct,
        (1..=sales.tickets).collect(),
        "{:?}: not every ticket was sold",
        sales.backend
    );
    let buyers: BTreeSet<usize> = sales.sold.iter().map(|&(b, _)| b).collect();
    assert_eq!(buyers.len(), numbers.len(), "a buyer bought twice");
    assert_eq!(sales.left, 0);
    sales.check().unwrap();
}

fn rush() -> ticket_grab::Options {
    ticket_grab::Options {
        buyers: 12,
        tickets: 5,
        latency: Duration::from_millis(5),
    }
}

#[test]
fn ticket_grab_on_the_json_file_with_a_file_lock_sells_each_ticket_once() {
    let _serial = serial();
    let sales = ticket_grab::run(ticket_grab::Backend::File, &rush()).unwrap();
    assert_each_ticket_sold_once(&sales);
}

#[test]
fn ticket_grab_on_a_manager_value_under_the_manager_lock_sells_each_ticket_once() {
    let _serial = serial();
    let sales = ticket_grab::run(ticket_grab::Backend::ManagerLock, &rush()).unwrap();
    assert_each_ticket_sold_once(&sales);
}

#[test]
fn ticket_grab_with_one_atomic_call_and_no_lock_sells_each_ticket_once() {
    let _serial = serial();
    let sales = ticket_grab::run(ticket_grab::Backend::ManagerAtomic, &rush()).unwrap();
    assert_each_ticket_sold_once(&sales);
}

#[test]
fn ticket_grab_check_catches_a_ticket_sold_twice() {
    // The check must be able to fail: the unlocked file is the tutorials' broken version.
    // Whether it oversells depends on the scheduler, so only a detected double sale is
    // asserted to be reported.
    let _serial = serial();
    let sales = ticket_grab::run(
        ticket_grab::Backend::Unlocked,
        &ticket_grab::Options {
            buyers: 8,
            tickets: 2,
            latency: Duration::from_millis(20),
        },
    )
    .unwrap();
    let numbers: Vec<u64> = sales.sold.iter().map(|&(_, n)| n).collect();
    let distinct: BTreeSet<u64> = numbers.iter().copied().collect();
    if distinct.len() != numbers.len() {
        assert!(sales.check().is_err(), "a double sale passed the check");
    }
    let forged = ticket_grab::Sales {
        sold: vec![(0, 2), (1, 2)],
        ..sales
    };
    assert!(forged.check().is_err());
}

#[test]
fn print_terminal_lines_come_in_pairs_under_a_lock() {
    let _serial = serial();
    for mode in [
        print_terminal::Mode::Manager,
        print_terminal::Mode::File,
        print_terminal::Mode::Threads,
    ] {
        let t = print_terminal::run(mode, 3, Duration::from_millis(50)).unwrap();
        t.check(3).unwrap();
        assert!(!t.interleaved(), "{mode:?}: {:?}", t.lines);
        let workers: BTreeSet<&String> = t.lines.iter().map(|(w, _)| w).collect();
        assert_eq!(workers.len(), 3, "{mode:?}: {:?}", t.lines);
    }
}

#[test]
fn print_terminal_without_a_lock_prints_every_line() {
    let _serial = serial();
    let t = print_terminal::run(print_terminal::Mode::None, 3, Duration::from_millis(50)).unwrap();
    assert_eq!(t.lines.len(), 6);
    t.check(3).unwrap();
    // The pair check fails on an interleaved transcript, as it must.
    let mixed = print_terminal::Transcript {
        mode: print_terminal::Mode::File,
        lines: vec![
            ("a".into(), "running".into()),
            ("b".into(), "running".into()),
            ("a".into(), "done".into()),
            ("b".into(), "done".into()),
        ],
    };
    assert!(mixed.check(2).is_err());
}

#[test]
fn first_ten_exactly_ten_users_get_in_and_are_told_so() {
    let _serial = serial();
    let rush = first_ten::run(100, 10).unwrap();
    assert_eq!(rush.ranking.len(), 10, "{:?}", rush.ranking);
    let in_queue: BTreeSet<u32> = rush.ranking.iter().copied().collect();
    assert_eq!(in_queue.len(), 10, "a user got in twice");
    assert_eq!(rush.reports.len(), 100);
    assert_eq!(in_queue, rush.winners());
    assert_eq!(rush.reports.iter().filter(|&&(_, won)| !won).count(), 90);
    rush.check().unwrap();
}

#[test]
fn producer_consumer_every_dish_is_eaten_exactly_once() {
    let _serial = serial();
    for variant in producer_consumer::Variant::ALL {
        let meal = producer_consumer::run(variant).unwrap();
        let mut cooked = meal.cooked.clone();
        let mut eaten: Vec<String> = meal.eaten.iter().map(|(_, d)| d.clone()).collect();
        cooked.sort();
        eaten.sort();
        assert_eq!(eaten, cooked, "{variant:?}");
        let expected = match variant {
            producer_consumer::Variant::Sentinel => 4,
            _ => 12,
        };
        assert_eq!(cooked.len(), expected, "{variant:?}");
        meal.check().unwrap();
    }
    // The check fails on a dish eaten twice, and on one never eaten.
    let meal = |eaten: &[&str]| producer_consumer::Meal {
        variant: producer_consumer::Variant::Many,
        cooked: vec!["bun 0".into(), "bun 1".into()],
        eaten: eaten.iter().map(|d| (0, d.to_string())).collect(),
    };
    assert!(meal(&["bun 0", "bun 0"]).check().is_err());
    assert!(meal(&["bun 0"]).check().is_err());
    assert!(meal(&["bun 1", "bun 0"]).check().is_ok());
}

#[test]
fn semaphore_room_holds_five_and_never_more() {
    let _serial = serial();
    let visits = semaphore_room::run(30, 5).unwrap();
    assert_eq!(visits.occupancy.len(), 30);
    assert!(visits.max() <= 5, "{:?}", visits.occupancy);
    assert_eq!(
        visits.max(),
        5,
        "the room never filled: {:?}",
        visits.occupancy
    );
    visits.check(30).unwrap();
    // The check fails both ways.
    let forged = |occupancy: Vec<i64>| semaphore_room::Visits { room: 2, occupancy };
    assert!(forged(vec![1, 2, 3]).check(3).is_err());
    assert!(forged(vec![1, 1, 1]).check(3).is_err());
    assert!(forged(vec![1, 2, 2]).check(3).is_ok());
}

#[test]
fn event_releases_every_waiter_only_once_set() {
    let _serial = serial();
    let traffic = event_barrier::run_event(5, Duration::from_millis(150)).unwrap();
    assert_eq!(traffic.released.len(), 5);
    assert!(
        traffic.released.iter().all(|&(_, set, green)| set && green),
        "{:?}",
        traffic.released
    );
    traffic.check().unwrap();
}

#[test]
fn barrier_lets_nobody_leave_before_everybody_arrived() {
    let _serial = serial();
    let meeting = event_barrier::run_barrier(4).unwrap();
    let first_departure = meeting
        .log
        .iter()
        .position(|(what, _)| what == "left")
        .unwrap();
    let last_arrival = meeting
        .log
        .iter()
        .rposition(|(what, _)| what == "arrived")
        .unwrap();
    assert!(last_arrival < first_departure, "{:?}", meeting.log);
    let mut indices: Vec<usize> = meeting.indices.iter().map(|&(_, i)| i).collect();
    indices.sort_unstable();
    assert_eq!(indices, [0, 1, 2, 3]);
    meeting.check().unwrap();
}

#[test]
fn deadlock_is_detected_and_the_rlock_cures_it() {
    let _serial = serial();
    let outcome = deadlock::run().unwrap();
    assert_eq!(outcome.deadlock.len(), 2);
    assert!(
        outcome.deadlock.iter().any(|&(_, both)| !both),
        "no timeout with opposite lock orders: {:?}",
        outcome.deadlock
    );
    assert_eq!(outcome.cure.len(), 2);
    assert!(
        outcome.cure.iter().all(|&(_, both)| both),
        "{:?}",
        outcome.cure
    );
    outcome.check().unwrap();
}
