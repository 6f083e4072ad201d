//! Every program of `examples/`, run as a test with its invariant asserted from the data it
//! returns. Each example keeps its logic in a `run` function that its `main` calls; the test
//! includes the example's file as a module and calls `run`, so a plain `cargo test` on a
//! fresh clone builds and checks them all (the example's `main` is unused here).

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

#[path = "../examples/manager_dict_list.rs"]
#[allow(dead_code)]
mod manager_dict_list;
#[path = "../examples/print_terminal.rs"]
#[allow(dead_code)]
mod print_terminal;
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
    for mode in [print_terminal::Mode::File, print_terminal::Mode::Threads] {
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
