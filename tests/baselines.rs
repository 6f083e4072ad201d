//! The baselines across real processes: the file lock and the ticket stores under a rush of
//! forked buyers that each buy until nothing is left, with no simulated delay, so the only
//! thing between them and a double sale is the lock (or the atomic call).

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use agora::baseline::{
    buy, AtomicTickets, FileLock, Held, JsonFileTickets, Locker, NoLock, TicketStore, ValueTickets,
};
use agora::{List, Manager, Process};

/// The tests in this file fork: one at a time, so that no test forks while another holds a lock.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

const BUYERS: usize = 6;
const TICKETS: u64 = 150;

/// Forks the buyers; each buys until sold out and records what it bought. Returns every
/// ticket number sold.
fn rush<L: Locker, S: TicketStore>(manager: &Manager, lock: &L, store: &S) -> Vec<u64> {
    let sold: List<u64> = manager.list().unwrap();
    let buyers: Vec<Process> = (0..BUYERS)
        .map(|_| {
            let sold = &sold;
            Process::spawn_fallible(move || -> Result<(), Box<dyn std::error::Error>> {
                let mut mine = Vec::new();
                while let Some(n) = buy(lock, store)? {
                    mine.push(n);
                }
                sold.extend(mine)?;
                Ok(())
            })
            .unwrap()
        })
        .collect();
    for mut b in buyers {
        assert!(b.join().unwrap().success(), "a buyer failed");
    }
    sold.copy().unwrap()
}

fn assert_each_sold_once(sold: Vec<u64>) {
    let distinct: BTreeSet<u64> = sold.iter().copied().collect();
    assert_eq!(distinct.len(), sold.len(), "a ticket was sold twice");
    assert_eq!(distinct, (1..=TICKETS).collect(), "a ticket was not sold");
}

#[test]
fn json_file_under_a_file_lock_across_processes() {
    let _serial = serial();
    let manager = Manager::spawn().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lock = FileLock::new(dir.path().join("db.json.lock"));
    let store = JsonFileTickets::create(dir.path().join("db.json"), TICKETS).unwrap();
    assert_each_sold_once(rush(&manager, &lock, &store));
    assert_eq!(store.remaining().unwrap(), 0);
}

#[test]
fn atomic_manager_tickets_need_no_lock() {
    let _serial = serial();
    let manager = Manager::spawn().unwrap();
    let store = AtomicTickets::new(manager.value(&(TICKETS as i64)).unwrap());
    assert_each_sold_once(rush(&manager, &NoLock, &store));
    assert_eq!(store.remaining().unwrap(), 0);
    // Late buyers drove the count below zero; it still reads as none left.
    assert!(store.value().get().unwrap() <= 0);
}

#[test]
fn manager_value_under_the_manager_lock_across_processes() {
    let _serial = serial();
    let manager = Manager::spawn().unwrap();
    let store = ValueTickets::new(manager.value(&(TICKETS as i64)).unwrap());
    assert_each_sold_once(rush(&manager, &manager.lock().unwrap(), &store));
    assert_eq!(store.remaining().unwrap(), 0);
}

/// A worker takes `lock` and is killed holding it. Checks that a timed wait times out on time
/// while it lives and gets the lock once it is dead; returns what the new guard says about
/// the dead holder.
fn killed_holder_releases<L: Locker>(lock: &L) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut holder = Process::spawn_fallible(|| -> Result<(), Box<dyn std::error::Error>> {
        let _held = lock.lock()?;
        std::fs::write(&ready, b"")?;
        std::thread::sleep(Duration::from_secs(60));
        Ok(())
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the holder never took the lock");
        std::thread::sleep(Duration::from_millis(5));
    }

    assert!(lock.try_lock().unwrap().is_none(), "{}", L::NAME);
    let start = Instant::now();
    assert!(lock
        .lock_timeout(Duration::from_millis(150))
        .unwrap()
        .is_none());
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(140),
        "{}: {waited:?}",
        L::NAME
    );
    assert!(waited < Duration::from_secs(1), "{}: {waited:?}", L::NAME);

    holder.kill().unwrap();
    holder.join().unwrap();
    let got = lock.lock_timeout(Duration::from_secs(5)).unwrap();
    let got = got.unwrap_or_else(|| panic!("{}: the dead holder's lock was kept", L::NAME));
    got.is_owner_dead()
}

#[test]
fn a_file_lock_held_by_a_killed_worker_is_released_silently() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let died = killed_holder_releases(&FileLock::new(dir.path().join("x.lock")));
    assert!(!died, "the kernel tells nobody");
}

#[test]
fn a_manager_lock_held_by_a_killed_worker_is_released_and_the_next_holder_told() {
    let _serial = serial();
    let manager = Manager::spawn().unwrap();
    assert!(killed_holder_releases(&manager.lock().unwrap()));
    assert!(killed_holder_releases(&manager.rlock().unwrap()));
}
