//! Events and barriers served by two managers on one etcd.

use std::time::{Duration, Instant};

use agora_client::ErrorName;

use crate::harness::{available, fresh_prefix, two, Etcd, Manager};

#[test]
fn an_event_set_through_one_manager_wakes_a_waiter_through_the_other() {
    let Some((_etcd, a, b)) = two("event", &[]) else {
        return;
    };
    let ea = a.client().event_named("go").unwrap();
    let cb = b.client();
    let eb = cb.event_named("go").unwrap();
    assert!(!eb.is_set().unwrap());
    assert_eq!(eb.wait_timeout(Duration::from_millis(200)).unwrap(), None);
    let waiter = std::thread::spawn(move || {
        eb.wait().unwrap();
        Instant::now()
    });
    std::thread::sleep(Duration::from_millis(500));
    let set_at = Instant::now();
    ea.set().unwrap();
    let woke = waiter.join().unwrap();
    assert!(woke.saturating_duration_since(set_at) < Duration::from_millis(500));
    let eb = cb.event_named("go").unwrap();
    assert!(eb.is_set().unwrap());
    assert_eq!(eb.wait_timeout(Duration::ZERO).unwrap(), Some(()));
    ea.clear().unwrap();
    assert!(!eb.is_set().unwrap());
}

#[test]
fn a_barrier_of_four_across_two_managers_then_breaks_on_a_timeout() {
    let Some((_etcd, a, b)) = two("barrier", &[]) else {
        return;
    };
    let managers = [&a, &b];
    for _round in 0..2 {
        let parties: Vec<_> = (0..4)
            .map(|i| {
                let client = managers[i % 2].client();
                std::thread::spawn(move || {
                    let barrier = client.barrier_named("meet", 4, None).unwrap();
                    barrier.wait().unwrap()
                })
            })
            .collect();
        let mut indexes: Vec<usize> = parties.into_iter().map(|p| p.join().unwrap()).collect();
        indexes.sort_unstable();
        assert_eq!(indexes, vec![0, 1, 2, 3]);
    }
    let ba = a.client().barrier_named("meet", 4, None).unwrap();
    assert_eq!(ba.parties().unwrap(), 4);
    let cb = b.client();
    let waiter = std::thread::spawn(move || {
        let bb = cb.barrier_named("meet", 4, None).unwrap();
        bb.wait()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ba.n_waiting().unwrap(), 1);
    // This party's timeout breaks the barrier for the one waiting through the other manager.
    assert_eq!(ba.wait_timeout(Duration::from_millis(300)).unwrap(), None);
    let other = waiter.join().unwrap().unwrap_err();
    assert!(other.is(ErrorName::BrokenBarrierError), "{other}");
    assert!(ba.is_broken().unwrap());
    let again = ba.wait().unwrap_err();
    assert!(again.is(ErrorName::BrokenBarrierError), "{again}");
    ba.reset().unwrap();
    assert!(!ba.is_broken().unwrap());
    assert_eq!(ba.n_waiting().unwrap(), 0);
}

#[test]
fn a_party_lost_with_its_manager_breaks_the_barrier_for_the_others() {
    if !available() {
        return;
    }
    let etcd = Etcd::start();
    let store = etcd.store(&fresh_prefix("barrier-death"));
    let a = Manager::start(&store, &[]);
    let mut b = Manager::start(&store, &["--store-lease-seconds", "2"]);
    let cb = b.client();
    let lost = std::thread::spawn(move || {
        let bb = cb.barrier_named("meet", 3, None).unwrap();
        let _ = bb.wait();
    });
    let ca = a.client();
    let ba = ca.barrier_named("meet", 3, None).unwrap();
    until_waiting(&ba, 1, "the party through B");
    let ca2 = a.client();
    let waiter = std::thread::spawn(move || {
        let b2 = ca2.barrier_named("meet", 3, None).unwrap();
        b2.wait()
    });
    until_waiting(&ba, 2, "the second party");
    b.kill();
    let killed = Instant::now();
    let answer = waiter.join().unwrap().unwrap_err();
    assert!(answer.is(ErrorName::BrokenBarrierError), "{answer}");
    assert!(
        killed.elapsed() < Duration::from_secs(8),
        "broken only after {:?}",
        killed.elapsed()
    );
    assert!(ba.is_broken().unwrap());
    lost.join().unwrap();
}

#[test]
fn abort_and_reset_through_one_manager_break_a_party_waiting_through_the_other() {
    let Some((_etcd, a, b)) = two("barrier-abort", &[]) else {
        return;
    };
    let ba = a.client().barrier_named("meet", 2, None).unwrap();
    for stay_broken in [true, false] {
        let cb = b.client();
        let waiter = std::thread::spawn(move || {
            let bb = cb.barrier_named("meet", 2, None).unwrap();
            bb.wait()
        });
        until_waiting(&ba, 1, "the party through B");
        if stay_broken {
            ba.abort().unwrap();
        } else {
            ba.reset().unwrap();
        }
        let answer = waiter.join().unwrap().unwrap_err();
        assert!(answer.is(ErrorName::BrokenBarrierError), "{answer}");
        assert_eq!(ba.is_broken().unwrap(), stay_broken);
        if stay_broken {
            ba.reset().unwrap();
        }
    }
    // Whole again: two parties through the two managers meet.
    let cb = b.client();
    let other = std::thread::spawn(move || cb.barrier_named("meet", 2, None).unwrap().wait());
    let mine = ba.wait().unwrap();
    let theirs = other.join().unwrap().unwrap();
    assert_eq!(mine + theirs, 1);
}

/// Waits (up to 5 s) until `n` parties wait at `barrier`; `who` names the last for the failure.
fn until_waiting(barrier: &agora_client::Barrier, n: usize, who: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while barrier.n_waiting().unwrap() < n {
        assert!(Instant::now() < deadline, "{who} never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
}
