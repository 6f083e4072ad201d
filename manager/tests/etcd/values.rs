//! Value objects (dict, list, value, array, namespace) served by two managers on one etcd.

use crate::harness::{available, fresh_prefix, Etcd, Manager};

#[test]
fn two_managers_on_one_etcd_serve_the_same_objects_and_the_same_run() {
    if !available() {
        return;
    }
    let etcd = Etcd::start();
    let store = etcd.store(&fresh_prefix("same-objects"));
    let (a, b) = (Manager::start(&store, &[]), Manager::start(&store, &[]));
    assert_eq!(a.run, b.run, "managers of one store report one run");
    let (ca, cb) = (a.client(), b.client());

    let scores = ca.dict_named::<String, i64>("scores").unwrap();
    scores.set("alice", &3).unwrap();
    let seen = cb.dict_named::<String, i64>("scores").unwrap();
    assert_eq!(seen.get("alice").unwrap(), Some(3));
    seen.set("bob", &4).unwrap();
    assert_eq!(scores.len().unwrap(), 2);

    let items = ca.list_named::<i64>("items").unwrap();
    items.extend([1, 2]).unwrap();
    cb.list_named::<i64>("items").unwrap().append(&3).unwrap();
    assert_eq!(items.copy().unwrap(), vec![1, 2, 3]);
}

#[test]
fn concurrent_increments_through_two_managers_are_never_lost() {
    if !available() {
        return;
    }
    let etcd = Etcd::start();
    let store = etcd.store(&fresh_prefix("increments"));
    let (a, b) = (Manager::start(&store, &[]), Manager::start(&store, &[]));
    let counter = a.client().value_named::<i64>("counter", &0).unwrap();
    const EACH: i64 = 100;
    let workers: Vec<_> = [&a, &b, &a, &b]
        .iter()
        .map(|m| {
            let client = m.client();
            std::thread::spawn(move || {
                let n = client.value_named::<i64>("counter", &0).unwrap();
                for _ in 0..EACH {
                    n.fetch_add(1).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(counter.get().unwrap(), 4 * EACH);
}

#[test]
fn killing_the_etcd_leader_mid_run_loses_and_repeats_nothing() {
    if !available() {
        return;
    }
    let mut etcd = Etcd::cluster(3);
    let store = etcd.store(&fresh_prefix("leader-killed"));
    let (a, b) = (Manager::start(&store, &[]), Manager::start(&store, &[]));
    let counter = a.client().value_named::<i64>("counter", &0).unwrap();
    const EACH: usize = 150;
    let workers: Vec<_> = [&a, &b, &a, &b]
        .iter()
        .map(|m| {
            let client = m.client();
            std::thread::spawn(move || {
                let n = client.value_named::<i64>("counter", &0).unwrap();
                (0..EACH)
                    .map(|_| n.fetch_add(1).unwrap())
                    .collect::<Vec<i64>>()
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let leader = etcd.leader().expect("a leader");
    etcd.kill_member(leader);
    let mut seen: Vec<i64> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("no call failed"))
        .collect();
    seen.sort_unstable();
    let expected: Vec<i64> = (0..(4 * EACH) as i64).collect();
    assert_eq!(seen, expected, "every fetch_add applied exactly once");
    assert_eq!(counter.get().unwrap(), (4 * EACH) as i64);
}
