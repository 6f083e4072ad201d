//! Locks, rlocks and semaphores served by two managers on one etcd: one line of acquirers
//! across both, owner death through either, fencing tokens.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use agora_client::Acquired;
use rmpv::Value;

use crate::harness::two;

#[test]
fn a_lock_held_through_one_manager_blocks_an_acquirer_through_the_other_until_released() {
    let Some((_etcd, a, b)) = two("lock-handoff", &[]) else {
        return;
    };
    let (ca, cb) = (a.client(), b.client());
    let lock = ca.lock_named("l").unwrap();
    let guard = lock.acquire().unwrap();
    assert!(!guard.is_owner_dead());
    let other = cb.lock_named("l").unwrap();
    assert!(other.try_acquire().unwrap().is_none(), "held through a");
    assert!(other.is_locked().unwrap());
    let waiter = thread::spawn(move || {
        let lock = cb.lock_named("l").unwrap();
        let started = Instant::now();
        let got = lock.acquire_raw(true, None).unwrap();
        lock.release().unwrap();
        (got, started.elapsed())
    });
    thread::sleep(Duration::from_millis(500));
    assert!(!waiter.is_finished(), "the acquirer through b waits");
    guard.unlock().unwrap();
    let (got, waited) = waiter.join().unwrap();
    assert_eq!(got, Acquired::Yes, "a release is no owner death");
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    assert!(!lock.is_locked().unwrap());
}

#[test]
fn acquirers_alternating_managers_get_the_lock_in_arrival_order() {
    let Some((_etcd, a, b)) = two("lock-fifo", &[]) else {
        return;
    };
    let holder = a.client().lock_named("l").unwrap();
    holder.acquire_raw(true, None).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..6 {
        let client = if i % 2 == 0 { a.client() } else { b.client() };
        let order = order.clone();
        waiters.push(thread::spawn(move || {
            let lock = client.lock_named("l").unwrap();
            let guard = lock.acquire().unwrap();
            order.lock().unwrap().push(i);
            thread::sleep(Duration::from_millis(20));
            guard.unlock().unwrap();
        }));
        // Each in line before the next arrives.
        thread::sleep(Duration::from_millis(300));
    }
    holder.release().unwrap();
    for w in waiters {
        w.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn a_holder_whose_connection_closes_leaves_the_owner_died_notice_to_the_next_acquirer() {
    let Some((_etcd, a, b)) = two("lock-owner-died", &[]) else {
        return;
    };
    {
        let client = a.client();
        let lock = client.lock_named("l").unwrap();
        assert_eq!(lock.acquire_raw(true, None).unwrap(), Acquired::Yes);
        // The client goes away holding the lock.
    }
    let lock = b.client().lock_named("l").unwrap();
    let got = lock
        .acquire_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("the lock comes free when its holder's connection closes");
    assert!(got.is_owner_dead());
    got.unlock().unwrap();
    // Told once: the next acquirer after a release is not.
    let again = a.client().lock_named("l").unwrap();
    assert!(!again.acquire().unwrap().is_owner_dead());
}

#[test]
fn sigkill_of_the_holders_manager_frees_the_lock_with_the_notice_within_the_lease() {
    const TTL: Duration = Duration::from_secs(2);
    let Some((_etcd, mut a, b)) = two("lock-sigkill", &["--store-lease-seconds", "2"]) else {
        return;
    };
    let held = a.client().lock_named("l").unwrap();
    assert_eq!(held.acquire_raw(true, None).unwrap(), Acquired::Yes);
    let cb = b.client();
    let waiter = thread::spawn(move || {
        let lock = cb.lock_named("l").unwrap();
        let got = lock
            .acquire_raw(true, Some(Duration::from_secs(30)))
            .unwrap();
        (got, Instant::now())
    });
    thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    a.kill();
    let (got, at) = waiter.join().unwrap();
    let took = at - killed;
    eprintln!("granted {took:?} after the SIGKILL (lease {TTL:?})");
    assert!(got.is_owner_dead(), "{got:?}");
    assert!(took < TTL + Duration::from_secs(2), "{took:?}");
}

#[test]
fn an_acquire_that_times_out_leaves_no_place_in_line() {
    let Some((_etcd, a, b)) = two("lock-timeout", &[]) else {
        return;
    };
    let holder = a.client().lock_named("l").unwrap();
    let guard = holder.acquire().unwrap();
    let lock = b.client().lock_named("l").unwrap();
    let started = Instant::now();
    assert!(lock
        .acquire_timeout(Duration::from_millis(300))
        .unwrap()
        .is_none());
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(lock.try_acquire().unwrap().is_none(), "non-blocking: held");
    guard.unlock().unwrap();
    // Were a waiter key left behind, it would be first in line and this would fail.
    let got = lock.try_acquire().unwrap().expect("nobody is in line");
    assert!(!got.is_owner_dead());
}

#[test]
fn a_connection_closed_while_waiting_leaves_no_place_in_line() {
    let Some((_etcd, a, b)) = two("lock-cancel", &[]) else {
        return;
    };
    let holder = a.client().lock_named("l").unwrap();
    let guard = holder.acquire().unwrap();
    let mut raw = b.raw();
    let id = raw.create("lock", Some("l"), vec![]);
    raw.park("lock.acquire", vec![Value::from(id)]);
    thread::sleep(Duration::from_millis(300));
    drop(raw);
    thread::sleep(Duration::from_millis(500));
    guard.unlock().unwrap();
    let lock = b.client().lock_named("l").unwrap();
    assert!(
        lock.try_acquire().unwrap().is_some(),
        "the departed waiter is no longer first in line"
    );
}

#[test]
fn threads_through_both_managers_never_hold_the_lock_together() {
    let Some((_etcd, a, b)) = two("lock-exclusion", &[]) else {
        return;
    };
    const EACH: i64 = 15;
    let setup = a.client();
    let total = setup.value_named::<i64>("total", &0).unwrap();
    setup.value_named::<i64>("inside", &0).unwrap();
    let started = Instant::now();
    let workers: Vec<_> = [&a, &b, &a, &b]
        .iter()
        .map(|m| {
            let client = m.client();
            thread::spawn(move || {
                let lock = client.lock_named("l").unwrap();
                let total = client.value_named::<i64>("total", &0).unwrap();
                let inside = client.value_named::<i64>("inside", &0).unwrap();
                for _ in 0..EACH {
                    let guard = lock.acquire().unwrap();
                    assert_eq!(inside.get().unwrap(), 0, "two holders at once");
                    inside.set(&1).unwrap();
                    let n = total.get().unwrap();
                    total.set(&(n + 1)).unwrap();
                    inside.set(&0).unwrap();
                    guard.unlock().unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let took = started.elapsed();
    eprintln!(
        "{} critical sections through two managers in {took:?} ({:?} each)",
        4 * EACH,
        took / (4 * EACH) as u32
    );
    assert_eq!(total.get().unwrap(), 4 * EACH);
}

#[test]
fn an_rlock_is_reentered_by_its_holder_and_released_by_it_only() {
    let Some((_etcd, a, b)) = two("rlock", &[]) else {
        return;
    };
    let mine = a.client().rlock_named("r").unwrap();
    let other = b.client().rlock_named("r").unwrap();
    assert_eq!(mine.acquire_raw(true, None).unwrap(), Acquired::Yes);
    assert_eq!(mine.acquire_raw(true, None).unwrap(), Acquired::Yes);
    assert!(other.try_acquire().unwrap().is_none());
    let err = other.release().unwrap_err();
    assert!(err.to_string().contains("un-acquired"), "{err}");
    mine.release().unwrap();
    assert!(
        other.try_acquire().unwrap().is_none(),
        "one level still held"
    );
    mine.release().unwrap();
    assert!(mine.release().is_err(), "nothing left to release");
    assert!(other.try_acquire().unwrap().is_some());
}

#[test]
fn semaphores_count_permits_across_managers() {
    let Some((_etcd, a, b)) = two("semaphores", &[]) else {
        return;
    };
    let (ca, cb) = (a.client(), b.client());
    let sa = ca.semaphore_named("s", 2).unwrap();
    let sb = cb.semaphore_named("s", 2).unwrap();
    let one = sa.acquire().unwrap();
    let two = sb.acquire().unwrap();
    assert_eq!(sa.get_value().unwrap(), 0);
    assert!(sb.try_acquire().unwrap().is_none());
    one.release().unwrap();
    let three = sb
        .acquire_timeout(Duration::from_secs(5))
        .unwrap()
        .expect("the permit given back through a");
    drop((two, three));
    // Unowned: a signal, released by anyone, past the initial value.
    assert_eq!(sa.acquire_raw(true, None).unwrap(), Acquired::Yes);
    sb.release(3).unwrap();
    assert_eq!(sa.get_value().unwrap(), 4);

    let ba = ca.bounded_semaphore_named("bs", 1).unwrap();
    let bb = cb.bounded_semaphore_named("bs", 1).unwrap();
    let err = bb.release(1).unwrap_err();
    assert!(err.to_string().contains("released too many times"), "{err}");
    {
        let client = a.client();
        let dying = client.bounded_semaphore_named("bs", 1).unwrap();
        assert_eq!(dying.acquire_raw(true, None).unwrap(), Acquired::Yes);
    }
    let got = bb
        .acquire_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("given back by the close");
    assert!(got.is_owner_dead());
    assert_eq!(ba.get_value().unwrap(), 0);
    got.release().unwrap();
    assert_eq!(ba.get_value().unwrap(), 1);
}

#[test]
fn fencing_tokens_increase_across_grants_through_both_managers() {
    let Some((_etcd, a, b)) = two("tokens", &[]) else {
        return;
    };
    let (la, lb) = (
        a.client().lock_named("l").unwrap(),
        b.client().lock_named("l").unwrap(),
    );
    let err = la.fencing_token().unwrap_err();
    assert!(err.to_string().contains("not held by the caller"), "{err}");
    let mut last = 0;
    for lock in [&la, &lb, &la, &lb] {
        let guard = lock.acquire().unwrap();
        let token = lock.fencing_token().unwrap();
        assert!(token > last, "{token} after {last}");
        assert_eq!(
            lock.fencing_token().unwrap(),
            token,
            "one holding, one token"
        );
        last = token;
        guard.unlock().unwrap();
    }
    let guard = la.acquire().unwrap();
    assert!(lb.fencing_token().is_err(), "a non-holder has no token");
    drop(guard);
}

#[test]
fn a_condition_waiter_through_one_manager_is_notified_through_the_other() {
    let Some((_etcd, a, b)) = two("condition", &[]) else {
        return;
    };
    let cb = b.client();
    let waiter = thread::spawn(move || {
        let cond = cb.condition_named("c").unwrap();
        let mut guard = cond.acquire().unwrap();
        let notified = guard.wait_timeout(Duration::from_secs(20)).unwrap();
        // Back from the wait, the lock is held again.
        let held = cond.is_locked().unwrap();
        guard.unlock().unwrap();
        (notified, held)
    });
    thread::sleep(Duration::from_millis(800));
    let cond = a.client().condition_named("c").unwrap();
    let guard = cond.acquire().unwrap();
    guard.notify(1).unwrap();
    // The notified waiter needs the lock: it has it only once this releases.
    thread::sleep(Duration::from_millis(200));
    assert!(!waiter.is_finished());
    guard.unlock().unwrap();
    let (notified, held) = waiter.join().unwrap();
    assert_eq!(notified, Some(()));
    assert!(held);
    assert!(!cond.is_locked().unwrap());
}

#[test]
fn a_condition_wait_times_out_with_the_lock_held_again() {
    let Some((_etcd, a, b)) = two("condition-timeout", &[]) else {
        return;
    };
    let (ca, cb) = (a.client(), b.client());
    let lock = ca.lock_named("l").unwrap();
    let cond = ca.condition_with(&lock).unwrap();
    let mut guard = cond.acquire().unwrap();
    let started = Instant::now();
    assert_eq!(
        guard.wait_timeout(Duration::from_millis(300)).unwrap(),
        None
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    let other = cb.lock_named("l").unwrap();
    assert!(
        other.try_acquire().unwrap().is_none(),
        "held again after the wait"
    );
    // Notify needs the lock: through b, not holding it, it fails.
    let err = cb.condition_with(&other).unwrap().notify(1).unwrap_err();
    assert!(err.to_string().contains("un-acquired"), "{err}");
    guard.unlock().unwrap();
    assert!(other.try_acquire().unwrap().is_some());
}

#[test]
fn an_uncontended_lock_costs_a_few_round_trips_to_etcd() {
    let Some((_etcd, a, _b)) = two("lock-cost", &[]) else {
        return;
    };
    let lock = a.client().lock_named("l").unwrap();
    const N: u32 = 50;
    let started = Instant::now();
    for _ in 0..N {
        lock.acquire().unwrap().unlock().unwrap();
    }
    let each = started.elapsed() / N;
    eprintln!("uncontended acquire + release through etcd: {each:?}");
    // Four etcd round trips on loopback: far below what a wait for a watch or a lease takes.
    assert!(each < Duration::from_millis(500), "{each:?}");
}

#[test]
fn notify_all_wakes_the_waiters_of_both_managers_and_notify_the_oldest() {
    let Some((_etcd, a, b)) = two("condition-all", &[]) else {
        return;
    };
    let woken = Arc::new(Mutex::new(Vec::new()));
    let waiters: Vec<_> = (0..3)
        .map(|i| {
            let client = if i % 2 == 0 { a.client() } else { b.client() };
            let woken = woken.clone();
            let waiter = thread::spawn(move || {
                let cond = client.condition_named("c").unwrap();
                let mut guard = cond.acquire().unwrap();
                let notified = guard.wait_timeout(Duration::from_secs(20)).unwrap();
                woken.lock().unwrap().push(i);
                guard.unlock().unwrap();
                notified
            });
            // Each waits before the next arrives.
            thread::sleep(Duration::from_millis(400));
            waiter
        })
        .collect();
    let cond = b.client().condition_named("c").unwrap();
    let guard = cond.acquire().unwrap();
    guard.notify(1).unwrap();
    guard.unlock().unwrap();
    thread::sleep(Duration::from_millis(500));
    assert_eq!(*woken.lock().unwrap(), vec![0], "notify wakes the oldest");
    let guard = cond.acquire().unwrap();
    guard.notify_all().unwrap();
    guard.unlock().unwrap();
    for w in waiters {
        assert_eq!(w.join().unwrap(), Some(()));
    }
    let mut all = woken.lock().unwrap().clone();
    all.sort_unstable();
    assert_eq!(all, vec![0, 1, 2]);
}

#[test]
fn a_release_sent_by_a_client_that_then_left_never_releases_the_next_holders_lock() {
    let Some((_etcd, a, _b)) = two("lock-late-release", &[]) else {
        return;
    };
    // Clients reading the lock all along, so that a release can queue behind their calls and
    // be served only after its connection's close handed the lock on.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..6)
        .map(|_| {
            let (client, stop) = (a.client(), stop.clone());
            thread::spawn(move || {
                let lock = client.lock_named("l").unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    lock.is_locked().unwrap();
                }
            })
        })
        .collect();
    for round in 0..15 {
        let mut leaving = a.raw();
        let id = leaving.create("lock", Some("l"), vec![]);
        leaving.ok("lock.acquire", vec![Value::from(id)]);
        let client = a.client();
        let next = thread::spawn(move || {
            let lock = client.lock_named("l").unwrap();
            let guard = lock.acquire().unwrap();
            let died = guard.is_owner_dead();
            thread::sleep(Duration::from_millis(50));
            (died, guard.unlock())
        });
        thread::sleep(Duration::from_millis(150));
        // The release is sent, and the client leaves without reading its answer.
        leaving.park("lock.release", vec![Value::from(id)]);
        drop(leaving);
        let (died, unlocked) = next.join().unwrap();
        assert!(
            unlocked.is_ok(),
            "round {round}: the next holder's lock was released under it \
             (owner-died notice {died}): {unlocked:?}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
}
