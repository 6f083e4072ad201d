//! Locks, reentrant locks and semaphores between real processes and threads: mutual exclusion
//! checked two independent ways, FIFO hand-off, guards on panic and exit, holders killed with
//! SIGKILL (the manager releases, the next holder is told), and a forked idle child that must
//! not delay that release.

mod common;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agora::{Acquired, ErrorName, Manager, Process, Value};
use common::{
    adopt_orphans, join_ok, kill, kill_pid, mono_ns, running, serial, wait_count, wait_until, Rng,
};

type BoxError = Box<dyn std::error::Error>;

#[test]
fn lock_basics() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let lock = manager.lock().unwrap();
    assert!(!lock.is_locked().unwrap());
    let g = lock.try_acquire().unwrap().expect("a free lock");
    assert!(!g.is_owner_dead());
    assert!(lock.is_locked().unwrap());
    assert!(lock.try_acquire().unwrap().is_none(), "not reentrant");
    drop(g);
    assert!(!lock.is_locked().unwrap());
    assert!(lock.release().unwrap_err().is(ErrorName::RuntimeError));
    lock.acquire().unwrap().unlock().unwrap();
    assert!(!lock.is_locked().unwrap());

    // Python-style: acquired by one thread, released by another.
    assert_eq!(lock.acquire_raw(false, None).unwrap(), Acquired::Yes);
    assert_eq!(lock.acquire_raw(false, None).unwrap(), Acquired::No);
    let other = lock.clone();
    std::thread::spawn(move || other.release())
        .join()
        .unwrap()
        .unwrap();
    assert!(!lock.is_locked().unwrap());
    // A plain lock's guard may be dropped by another thread.
    let g = lock.acquire().unwrap();
    std::thread::scope(|s| {
        s.spawn(move || drop(g));
    });
    assert!(!lock.is_locked().unwrap());

    // Named locks are get-or-create; the kind is checked.
    assert_eq!(
        manager.lock_named("l").unwrap(),
        manager.lock_named("l").unwrap()
    );
    assert!(manager
        .rlock_named("l")
        .unwrap_err()
        .is(ErrorName::TypeError));
}

/// A guard's drop sends its release without waiting for the reply; every later call of the
/// process comes after it in the manager, and many drops in a row (more than the client lets
/// go unread) neither hang nor lose a release.
#[test]
fn dropped_guards_release_before_any_later_call() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let lock = manager.lock().unwrap();
    for _ in 0..200 {
        drop(lock.acquire().unwrap());
        assert!(!lock.is_locked().unwrap());
    }
    // Another thread of the process, on the same connection, finds it free at once.
    drop(lock.acquire().unwrap());
    let other = lock.clone();
    let got = std::thread::spawn(move || other.try_acquire().map(|g| g.is_some()))
        .join()
        .unwrap()
        .unwrap();
    assert!(got);

    const PERMITS: usize = 3_000;
    let sem = manager.semaphore(PERMITS).unwrap();
    let guards: Vec<_> = (0..PERMITS).map(|_| sem.acquire().unwrap()).collect();
    assert_eq!(sem.get_value().unwrap(), 0);
    drop(guards);
    assert_eq!(sem.get_value().unwrap(), PERMITS);
}

/// An rlock belongs to one thread even when threads share one connection: the owner id tells
/// them apart.
#[test]
fn rlock_is_reentrant_for_its_thread_only() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let r = manager.rlock().unwrap();
    let g1 = r.acquire().unwrap();
    let g2 = r.acquire().unwrap();
    let g3 = r.try_acquire().unwrap().expect("reentrant");
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(r.try_acquire().unwrap().is_none());
            let err = r.release().unwrap_err();
            assert!(err.is(ErrorName::RuntimeError), "{err}");
            assert!(r
                .acquire_timeout(Duration::from_millis(30))
                .unwrap()
                .is_none());
        });
    });
    // Guards release one level each, in any order.
    drop(g2);
    drop(g1);
    assert!(r.is_locked().unwrap());
    g3.unlock().unwrap();
    assert!(!r.is_locked().unwrap());
    assert!(r.release().unwrap_err().is(ErrorName::RuntimeError));
    // Now the other thread can take it.
    std::thread::scope(|s| {
        s.spawn(|| assert!(r.try_acquire().unwrap().is_some()));
    });
}

/// A guard dropped while unwinding from a panic releases; a process that exits without
/// running destructors counts as dying holding the lock, and the next holder is told.
#[test]
fn guards_on_panic_and_on_exit() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let lock = manager.lock().unwrap();
    let sem = manager.semaphore(1).unwrap();
    let unwound = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let _g = lock.acquire().unwrap();
        let _p = sem.acquire().unwrap();
        panic!("a panic inside the critical section (expected by the test)");
    }));
    assert!(unwound.is_err());
    assert!(
        !lock.is_locked().unwrap(),
        "the guard released while unwinding"
    );
    assert_eq!(sem.get_value().unwrap(), 1);

    // A worker whose closure panics: its guard is dropped on the way out.
    let l = lock.clone();
    let mut panicking = Process::spawn(move || {
        let _g = l.acquire().unwrap();
        panic!("a worker panics holding the lock (expected by the test)");
    })
    .unwrap();
    assert!(!panicking.join().unwrap().success());
    let g = lock.acquire().unwrap();
    assert!(
        !g.is_owner_dead(),
        "released by the guard, not by the manager"
    );
    drop(g);

    // A worker that exits without running destructors: the manager releases.
    let (l, s) = (lock.clone(), sem.clone());
    let mut exiting = Process::spawn(move || {
        let g = l.acquire().unwrap();
        let p = s.acquire().unwrap();
        std::mem::forget((g, p));
        std::process::exit(0);
    })
    .unwrap();
    join_ok(&mut exiting, "the exiting worker");
    let g = lock
        .acquire_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("released by the manager");
    assert!(g.is_owner_dead());
    let p = sem
        .acquire_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert!(p.is_owner_dead());
    drop((g, p));

    // A guard that reaches a forked child (moved into the worker's closure) releases nothing
    // there: unlocking it is refused. (The parent drops its copy of the closure, and with it
    // the guard, right after the fork: that release is the parent's.)
    let g = lock.acquire().unwrap();
    let mut child = Process::spawn(move || {
        let refused = matches!(g.unlock(), Err(agora::Error::Usage(_)));
        std::process::exit(if refused { 0 } else { 1 });
    })
    .unwrap();
    join_ok(&mut child, "the child unlocking a copied guard");
    let g = lock
        .acquire_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert!(!g.is_owner_dead(), "released by the parent's guard");
}

/// What a critical section records: when it ran, on the system-wide monotonic clock.
type Interval = (u64, u64);

/// The critical section: a plain read-modify-write of a shared counter (wrong without the
/// lock), checked independently by an atomic count of holders inside, which must be 0 on entry.
fn critical(counter: &Value<i64>, inside: &Value<i64>, rng: &mut Rng) -> agora::Result<Interval> {
    let start = mono_ns();
    let before = inside.fetch_add(1)?;
    assert_eq!(before, 0, "two holders inside the critical section at once");
    increment(counter, rng)?;
    let after = inside.fetch_add(-1)?;
    assert_eq!(after, 1, "another holder entered meanwhile");
    Ok((start, mono_ns()))
}

/// The unprotected read-modify-write at the heart of a critical section, sometimes slowed
/// down to widen the window another holder would race in.
fn increment(counter: &Value<i64>, rng: &mut Rng) -> agora::Result<()> {
    let n = counter.get()?;
    if rng.below(8) == 0 {
        std::thread::sleep(Duration::from_micros(rng.below(300)));
    }
    counter.set(&(n + 1))
}

/// Checks the recorded sections never overlap.
fn assert_disjoint(mut intervals: Vec<Interval>) {
    intervals.sort_unstable();
    for w in intervals.windows(2) {
        assert!(
            w[1].0 >= w[0].1,
            "critical sections overlap: {:?} and {:?}",
            w[0],
            w[1]
        );
    }
}

/// The critical section as two chains: the entry check with the acquire, the exit check with
/// the release; what is recorded lies inside the time the lock was held.
fn critical_chained(
    lock: &agora::Lock,
    counter: &Value<i64>,
    inside: &Value<i64>,
    rng: &mut Rng,
) -> agora::Result<Interval> {
    let (guard, before) = lock.acquire_then(inside.fetch_add_cmd(1))?;
    let start = mono_ns();
    assert_eq!(before, 0, "two holders inside the critical section at once");
    increment(counter, rng)?;
    let end = mono_ns();
    let after = guard.unlock_after(inside.fetch_add_cmd(-1))?;
    assert_eq!(after, 1, "another holder entered meanwhile");
    Ok((start, end))
}

#[derive(Clone, Copy, Debug)]
enum Guarded {
    Lock,
    /// A lock entered with `acquire_then` and left with `unlock_after`.
    Chained,
    RLock,
    Semaphore,
}

const WORKERS: u64 = 6;
const ROUNDS: u64 = 80;

/// Many processes increment a plain counter under one lock: the total is exact, the atomic
/// count of holders never exceeds 1, and the recorded sections never overlap.
fn mutual_exclusion_across_processes(kind: Guarded) {
    let manager = Manager::spawn().expect("spawn the manager");
    let lock = manager.lock().unwrap();
    let rlock = manager.rlock().unwrap();
    let sem = manager.bounded_semaphore(1).unwrap();
    let counter = manager.value(&0i64).unwrap();
    let inside = manager.value(&0i64).unwrap();
    let log = manager.list::<Interval>().unwrap();
    let workers: Vec<Process> = (0..WORKERS)
        .map(|w| {
            let (lock, rlock, sem) = (lock.clone(), rlock.clone(), sem.clone());
            let (counter, inside, log) = (counter.clone(), inside.clone(), log.clone());
            Process::spawn_fallible(move || -> agora::Result<()> {
                let mut rng = Rng(0xab ^ (w + 1));
                let mut mine = Vec::new();
                for _ in 0..ROUNDS {
                    let section = match kind {
                        Guarded::Lock => {
                            let _g = lock.acquire()?;
                            critical(&counter, &inside, &mut rng)?
                        }
                        Guarded::Chained => critical_chained(&lock, &counter, &inside, &mut rng)?,
                        Guarded::RLock => {
                            let _outer = rlock.acquire()?;
                            let _inner = rlock.acquire()?;
                            critical(&counter, &inside, &mut rng)?
                        }
                        Guarded::Semaphore => {
                            let _permit = sem.acquire()?;
                            critical(&counter, &inside, &mut rng)?
                        }
                    };
                    mine.push(section);
                }
                log.extend(&mine)
            })
            .expect("fork a worker")
        })
        .collect();
    for mut w in workers {
        join_ok(&mut w, &format!("a {kind:?} worker"));
    }
    assert_eq!(
        counter.get().unwrap(),
        (WORKERS * ROUNDS) as i64,
        "lost update"
    );
    let intervals = log.copy().unwrap();
    assert_eq!(intervals.len() as u64, WORKERS * ROUNDS);
    assert_disjoint(intervals);
}

#[test]
fn lock_excludes_across_processes() {
    let _serial = serial();
    mutual_exclusion_across_processes(Guarded::Lock);
}

#[test]
fn chained_critical_sections_exclude_across_processes() {
    let _serial = serial();
    mutual_exclusion_across_processes(Guarded::Chained);
}

/// `acquire_then` and `unlock_after`: one round trip each, the call runs under the lock, a
/// timeout runs nothing, and a failing call still releases.
#[test]
fn chains_enter_and_leave_a_critical_section() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let lock = manager.lock().unwrap();
    let value = manager.value(&10i64).unwrap();
    let (guard, got) = lock.acquire_then(value.get_cmd()).unwrap();
    assert_eq!(got, 10);
    assert!(!guard.is_owner_dead());
    assert!(lock.is_locked().unwrap());
    // Taken: a timed chain runs nothing.
    let other = manager.client().clone();
    let (lock2, value2) = (
        agora::Lock::from_id(&other, lock.id()),
        Value::<i64>::from_id(&other, value.id()),
    );
    let timed = std::thread::spawn(move || {
        lock2
            .acquire_timeout_then(Duration::from_millis(50), value2.set_cmd(&666))
            .map(|r| r.is_none())
    });
    assert!(timed.join().unwrap().unwrap());
    guard.unlock_after(value.set_cmd(&11)).unwrap();
    assert!(!lock.is_locked().unwrap());
    assert_eq!(value.get().unwrap(), 11);

    // A call that fails: the lock is released all the same, the error returned.
    let dict = manager.dict::<String, i64>().unwrap();
    let (guard, _) = lock.acquire_then(value.get_cmd()).unwrap();
    let err = guard.unlock_after(dict.getitem_cmd("missing")).unwrap_err();
    assert!(err.is(ErrorName::KeyError), "{err:?}");
    assert!(!lock.is_locked().unwrap());
    let err = lock.acquire_then(dict.getitem_cmd("missing")).unwrap_err();
    assert!(err.is(ErrorName::KeyError), "{err:?}");
    assert!(
        !lock.is_locked().unwrap(),
        "released when the first call failed"
    );
}

#[test]
fn rlock_excludes_across_processes() {
    let _serial = serial();
    mutual_exclusion_across_processes(Guarded::RLock);
}

#[test]
fn semaphore_of_one_excludes_across_processes() {
    let _serial = serial();
    mutual_exclusion_across_processes(Guarded::Semaphore);
}

/// Threads of one process share one connection; the lock still excludes them (for the rlock
/// this rests on the per-thread owner id), checked by a local atomic as well.
#[test]
fn locks_exclude_threads_sharing_one_connection() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let lock = manager.lock().unwrap();
    let rlock = manager.rlock().unwrap();
    for kind in [Guarded::Lock, Guarded::RLock] {
        let counter = manager.value(&0i64).unwrap();
        let inside = manager.value(&0i64).unwrap();
        let local = AtomicUsize::new(0);
        let intervals: Vec<Interval> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4u64)
                .map(|t| {
                    let (lock, rlock, counter, inside, local) =
                        (&lock, &rlock, &counter, &inside, &local);
                    s.spawn(move || {
                        let mut rng = Rng(0xcd ^ (t + 1));
                        let mut mine = Vec::new();
                        for _ in 0..60 {
                            let _l;
                            let _r;
                            match kind {
                                Guarded::Lock => _l = Some(lock.acquire().unwrap()),
                                _ => _r = Some(rlock.acquire().unwrap()),
                            }
                            assert_eq!(local.fetch_add(1, Ordering::SeqCst), 0, "{kind:?}");
                            mine.push(critical(counter, inside, &mut rng).unwrap());
                            local.fetch_sub(1, Ordering::SeqCst);
                        }
                        mine
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        assert_eq!(counter.get().unwrap(), 240, "{kind:?}: lost update");
        assert_disjoint(intervals);
    }
}

/// Acquirers parked on a lock and on a semaphore are served in the order they arrived; the
/// lock or permit goes straight to the first in line, so nobody else can take it meanwhile.
#[test]
fn waiting_acquirers_are_served_in_arrival_order() {
    let _serial = serial();
    const N: u64 = 5;
    let manager = Manager::spawn().expect("spawn the manager");
    let lock = manager.lock().unwrap();
    let sem = manager.semaphore(0).unwrap();
    for use_lock in [true, false] {
        let order = manager.list::<u64>().unwrap();
        let parked = manager.value(&0u64).unwrap();
        let go = manager.event().unwrap();
        let held = if use_lock {
            Some(lock.acquire().unwrap())
        } else {
            None
        };
        let mut waiters = Vec::new();
        for i in 0..N {
            let (lock, sem, order, tally, go) = (
                lock.clone(),
                sem.clone(),
                order.clone(),
                parked.clone(),
                go.clone(),
            );
            waiters.push(
                Process::spawn_fallible(move || -> agora::Result<()> {
                    let mut p = lock.client().pipeline();
                    let got = if use_lock {
                        p.add(lock.acquire_raw_cmd(true, None))
                    } else {
                        p.add(sem.acquire_raw_cmd(true, None))
                    };
                    p.add(tally.fetch_add_cmd(1));
                    assert!(p.execute()?.get(got)?.is_acquired());
                    order.append(&i)?;
                    go.wait()?;
                    if use_lock {
                        lock.release()
                    } else {
                        sem.release(1)
                    }
                })
                .unwrap(),
            );
            wait_count(&parked, i + 1);
        }
        match held {
            Some(held) => drop(held),
            None => sem.release(1).unwrap(),
        }
        assert!(wait_until(Duration::from_secs(20), || order.len().unwrap() == 1));
        // The first in line holds it; the others still wait; a newcomer cannot take it.
        if use_lock {
            assert!(lock.try_acquire().unwrap().is_none());
        } else {
            assert_eq!(sem.get_value().unwrap(), 0);
            assert!(sem.try_acquire().unwrap().is_none());
        }
        go.set().unwrap();
        for w in &mut waiters {
            join_ok(w, "a waiter");
        }
        assert_eq!(order.copy().unwrap(), (0..N).collect::<Vec<_>>());
    }
}

/// SIGKILL a process holding a lock, an rlock three levels deep and two semaphore permits: a
/// process already waiting for the lock gets it and is told; the rlock and the permits come
/// back and their next acquirers are told; the notice is given once.
#[test]
fn a_killed_holder_releases_everything_and_the_next_is_told() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let lock = manager.lock().unwrap();
    let rlock = manager.rlock().unwrap();
    let sem = manager.semaphore(3).unwrap();
    let holding = manager.event().unwrap();
    let (l, r, s, h) = (lock.clone(), rlock.clone(), sem.clone(), holding.clone());
    let mut holder = Process::spawn_fallible(move || -> agora::Result<()> {
        let _g = l.acquire()?;
        let _r = (r.acquire()?, r.acquire()?, r.acquire()?);
        let _p = (s.acquire()?, s.acquire()?);
        h.set()?;
        std::thread::sleep(Duration::from_secs(60));
        Ok(())
    })
    .unwrap();
    assert!(holding
        .wait_timeout(Duration::from_secs(20))
        .unwrap()
        .is_some());
    assert_eq!(sem.get_value().unwrap(), 1);

    let parked = manager.value(&0u64).unwrap();
    let told = manager.dict::<String, bool>().unwrap();
    let (l, tally, t) = (lock.clone(), parked.clone(), told.clone());
    let mut waiter = Process::spawn_fallible(move || -> agora::Result<()> {
        let mut p = l.client().pipeline();
        let got = p.add(l.acquire_raw_cmd(true, None));
        p.add(tally.fetch_add_cmd(1));
        let got = p.execute()?.get(got)?;
        t.set("lock", &got.is_owner_dead())?;
        l.release()
    })
    .unwrap();
    wait_count(&parked, 1);
    kill(&mut holder);
    join_ok(&mut waiter, "the process waiting for the lock");
    assert_eq!(told.get("lock").unwrap(), Some(true), "the waiter was told");
    let g = lock.acquire().unwrap();
    assert!(!g.is_owner_dead(), "the notice is given once");
    drop(g);

    let g = rlock
        .try_acquire()
        .unwrap()
        .expect("released at every level");
    assert!(g.is_owner_dead());
    drop(g);
    assert!(!rlock.acquire().unwrap().is_owner_dead());

    assert_eq!(sem.get_value().unwrap(), 3, "the permits came back");
    let p1 = sem.acquire().unwrap();
    let p2 = sem.acquire().unwrap();
    assert!(p1.is_owner_dead() && !p2.is_owner_dead());
}

/// SIGKILL a process parked in `acquire`: it leaves the line, and the lock goes to the next
/// waiter when released.
#[test]
fn a_waiter_killed_while_parked_leaves_the_line() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let lock = manager.lock().unwrap();
    let sem = manager.semaphore(0).unwrap();
    let parked = manager.value(&0u64).unwrap();
    let got = manager.dict::<String, bool>().unwrap();
    let held = lock.acquire().unwrap();
    let (l, s, tally) = (lock.clone(), sem.clone(), parked.clone());
    let mut victim = Process::spawn(move || {
        let mut p = l.client().pipeline();
        p.add(l.acquire_raw_cmd(true, None));
        p.add(s.acquire_raw_cmd(true, None));
        p.add(tally.fetch_add_cmd(1));
        let _ = p.execute();
        std::process::exit(3);
    })
    .unwrap();
    wait_count(&parked, 1);
    let (l, s, tally, g) = (lock.clone(), sem.clone(), parked.clone(), got.clone());
    let mut next = Process::spawn_fallible(move || -> agora::Result<()> {
        let mut p = l.client().pipeline();
        let lock_got = p.add(l.acquire_raw_cmd(true, None));
        let sem_got = p.add(s.acquire_raw_cmd(true, None));
        p.add(tally.fetch_add_cmd(1));
        let replies = p.execute()?;
        g.set("lock", &replies.get(lock_got)?.is_acquired())?;
        g.set("permit", &replies.get(sem_got)?.is_acquired())?;
        Ok(())
    })
    .unwrap();
    wait_count(&parked, 2);
    kill(&mut victim);
    drop(held);
    sem.release(1).unwrap();
    join_ok(&mut next, "the waiter behind the killed one");
    assert_eq!(got.get("lock").unwrap(), Some(true));
    assert_eq!(got.get("permit").unwrap(), Some(true));
}

/// A holder forks an idle child (which never touches the client) and is then SIGKILLed. The
/// child's inherited copy of the holder's socket must not keep the session alive: another
/// process acquires the lock, and is told, while the idle child still runs.
#[test]
fn an_idle_forked_child_does_not_delay_owner_death() {
    let _serial = serial();
    adopt_orphans();
    let manager = Manager::spawn().expect("spawn the manager");
    let lock = manager.lock().unwrap();
    let ready = manager.event().unwrap();
    let idle_pid = manager.value(&0u64).unwrap();
    let (l, r, p) = (lock.clone(), ready.clone(), idle_pid.clone());
    let mut holder = Process::spawn_fallible(move || -> Result<(), BoxError> {
        let _g = l.acquire()?;
        let idle = Process::spawn(|| std::thread::sleep(Duration::from_secs(30)))?;
        p.set(&u64::from(idle.pid()))?;
        std::mem::forget(idle);
        r.set()?;
        std::thread::sleep(Duration::from_secs(60));
        Ok(())
    })
    .unwrap();
    assert!(ready
        .wait_timeout(Duration::from_secs(20))
        .unwrap()
        .is_some());
    let idle = idle_pid.get().unwrap() as u32;
    kill(&mut holder);
    assert!(running(idle), "the idle child runs");
    let g = lock.acquire_timeout(Duration::from_secs(5)).unwrap();
    let alive = running(idle);
    kill_pid(idle);
    let g = g.expect("the dead holder's lock was not released while its idle child lived");
    assert!(g.is_owner_dead());
    assert!(
        alive,
        "the idle child was still running when the lock came back"
    );
}

/// Runs of each handover pattern in a row.
const HANDOVER_RUNS: usize = 200;

/// Runs `f` in a forked child that exits with 0 once it returns, and waits for it.
fn in_child(what: &str, f: impl FnOnce() -> agora::Result<()>) {
    let mut child = Process::spawn_fallible(f).expect("fork a child");
    join_ok(&mut child, what);
}

/// A semaphore used as a signal, as with Python: a consumer that takes the signal and exits
/// does not give it back (a bare acquire is unowned), 200 runs in a row.
#[test]
fn a_consumed_signal_is_not_given_back() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let sem = manager.semaphore(0).unwrap();
    for run in 0..HANDOVER_RUNS {
        sem.release(1).unwrap();
        let s = sem.clone();
        in_child("the consumer", move || s.acquire_raw(true, None).map(drop));
        let wait = Duration::from_millis(if run == 0 { 500 } else { 20 });
        assert!(
            sem.acquire_timeout(wait).unwrap().is_none(),
            "run {run}: the consumed signal came back"
        );
    }
}

/// CPython's `TestSyncManagerTypes.test_lock`: a child acquires and exits, the parent
/// releases. An owned acquire (the default for a lock) is released by the exit, which the
/// manager finishes before the parent's release: `RuntimeError` on every run. A lock created
/// with `owned` false behaves as Python's on every run: the release succeeds.
#[test]
fn a_handed_over_lock_gives_one_outcome_on_every_run() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let owned = manager.lock().unwrap();
    let unowned = manager.lock_with(None, Some(false)).unwrap();
    for run in 0..HANDOVER_RUNS {
        let (a, b) = (owned.clone(), unowned.clone());
        in_child("the child acquiring", move || {
            a.acquire_raw(true, None)?;
            b.acquire_raw(true, None)?;
            Ok(())
        });
        let err = owned.release().unwrap_err();
        assert!(err.is(ErrorName::RuntimeError), "run {run}: {err}");
        unowned.release().unwrap();
        assert!(unowned.release().unwrap_err().is(ErrorName::RuntimeError));
    }
}

/// The same for a bounded semaphore (`ValueError` on every run, or success with `owned`
/// false), and a plain semaphore ends with one permit on every run, as in Python.
#[test]
fn handed_over_semaphores_give_one_outcome_on_every_run() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let bounded = manager.bounded_semaphore(1).unwrap();
    let unowned = manager
        .bounded_semaphore_with(None, 1, Some(false))
        .unwrap();
    let plain = manager.semaphore(1).unwrap();
    for run in 0..HANDOVER_RUNS {
        let (a, b, c) = (bounded.clone(), unowned.clone(), plain.clone());
        in_child("the child acquiring", move || {
            a.acquire_raw(true, None)?;
            b.acquire_raw(true, None)?;
            c.acquire_raw(true, None)?;
            Ok(())
        });
        let err = bounded.release(1).unwrap_err();
        assert!(err.is(ErrorName::ValueError), "run {run}: {err}");
        unowned.release(1).unwrap();
        plain.release(1).unwrap();
        assert_eq!(plain.get_value().unwrap(), 1, "run {run}");
    }
}

/// A shared `Mutex<T>`: the guard reads and writes the value and writes it back on drop; a
/// holder SIGKILLed mid-update poisons it for every later locker, in any process, until
/// `clear_poison`, and a poisoned lock still hands out the guard (with the value the dead
/// holder committed).
#[test]
fn a_mutex_holder_killed_mid_update_poisons_it_until_cleared() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let accounts = manager.mutex(&(100i64, 0i64)).unwrap();
    {
        let mut g = accounts.lock().unwrap().expect("not poisoned");
        assert_eq!(*g, (100, 0));
        g.0 -= 10;
        g.1 += 10;
    } // written back on drop
    assert!(!accounts.is_locked().unwrap());
    let g = accounts.try_lock().unwrap().unwrap().unwrap();
    assert_eq!(*g, (90, 10));
    assert!(
        accounts.try_lock().unwrap().is_none(),
        "not reentrant, and held"
    );
    g.unlock().unwrap();

    // A holder debits, commits, and is killed before it credits.
    let holding = manager.event().unwrap();
    let (m, h) = (accounts.clone(), holding.clone());
    let mut holder = Process::spawn_fallible(move || -> agora::Result<()> {
        let mut g = m
            .lock()?
            .map_err(|_| agora::Error::Usage("poisoned".into()))?;
        g.0 -= 50;
        g.commit()?;
        h.set()?;
        std::thread::sleep(Duration::from_secs(60));
        g.1 += 50;
        Ok(())
    })
    .unwrap();
    assert!(holding
        .wait_timeout(Duration::from_secs(20))
        .unwrap()
        .is_some());
    kill(&mut holder);

    // Every later locker is told, in this process and in another, and gets the guard.
    for round in 0..3 {
        let poisoned = accounts
            .lock_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("released by the manager")
            .expect_err("poisoned");
        let g = poisoned.into_inner();
        assert!(g.is_poisoned());
        assert_eq!(*g, (40, 10), "round {round}: the half update");
        drop(g);
        assert!(accounts.is_poisoned().unwrap());
    }
    let m = accounts.clone();
    in_child("another locker", move || {
        let poisoned = m.lock()?.is_err();
        assert!(poisoned, "another process is told too");
        Ok(())
    });
    // Repaired and cleared: plain locks again.
    {
        let mut g = accounts.lock().unwrap().unwrap_err().into_inner();
        g.1 += 50;
    }
    accounts.clear_poison().unwrap();
    let g = accounts.lock().unwrap().expect("cleared");
    assert_eq!(*g, (40, 60));
}

/// Owned guards (`acquire_owned` on an `Arc`) hold what a borrowed guard holds and move into
/// another thread, which releases.
#[test]
fn owned_guards_move_between_threads() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let lock = std::sync::Arc::new(manager.lock().unwrap());
    let guard = lock.acquire_owned().unwrap();
    assert!(!guard.is_owner_dead());
    assert!(lock.try_acquire().unwrap().is_none());
    std::thread::spawn(move || drop(guard)).join().unwrap();
    assert!(wait_until(Duration::from_secs(5), || !lock
        .is_locked()
        .unwrap()));
    let guard = lock.acquire_owned().unwrap();
    std::thread::spawn(move || guard.unlock())
        .join()
        .unwrap()
        .unwrap();
    assert!(!lock.is_locked().unwrap());

    let sem = std::sync::Arc::new(manager.bounded_semaphore(2).unwrap());
    let (a, b) = (sem.acquire_owned().unwrap(), sem.acquire_owned().unwrap());
    assert!(sem.try_acquire().unwrap().is_none());
    std::thread::spawn(move || (a.release(), drop(b)))
        .join()
        .unwrap()
        .0
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || sem
        .get_value()
        .unwrap()
        == 2));
}
