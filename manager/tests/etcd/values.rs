//! Value objects (dict, list, value, array, namespace) served by two managers on one etcd.

use crate::harness::{available, fresh_prefix, two, Etcd, Manager};

#[test]
fn two_managers_on_one_etcd_serve_the_same_objects_and_the_same_run() {
    let Some((_etcd, a, b)) = two("same-objects", &[]) else {
        return;
    };
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

/// Four threads, two through each manager, each taking `each` numbers from the value
/// "counter" with `fetch_add(1)`.
fn fetch_adders(a: &Manager, b: &Manager, each: usize) -> Vec<std::thread::JoinHandle<Vec<i64>>> {
    [a, b, a, b]
        .iter()
        .map(|m| {
            let client = m.client();
            std::thread::spawn(move || {
                let n = client.value_named::<i64>("counter", &0).unwrap();
                (0..each).map(|_| n.fetch_add(1).unwrap()).collect()
            })
        })
        .collect()
}

/// Every number the workers took, which must be each of `0..4 * each` exactly once.
fn assert_each_number_once(workers: Vec<std::thread::JoinHandle<Vec<i64>>>, each: usize) {
    let mut seen: Vec<i64> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("no call failed"))
        .collect();
    seen.sort_unstable();
    let expected: Vec<i64> = (0..(4 * each) as i64).collect();
    assert_eq!(seen, expected, "every fetch_add applied exactly once");
}

#[test]
fn concurrent_increments_through_two_managers_are_never_lost() {
    let Some((_etcd, a, b)) = two("increments", &[]) else {
        return;
    };
    let counter = a.client().value_named::<i64>("counter", &0).unwrap();
    const EACH: usize = 100;
    assert_each_number_once(fetch_adders(&a, &b, EACH), EACH);
    assert_eq!(counter.get().unwrap(), (4 * EACH) as i64);
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
    let workers = fetch_adders(&a, &b, EACH);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let leader = etcd.leader().expect("a leader");
    etcd.kill_member(leader);
    assert_each_number_once(workers, EACH);
    assert_eq!(counter.get().unwrap(), (4 * EACH) as i64);
}

#[test]
fn objects_through_one_manager_lists_what_the_other_made_without_reading_their_state() {
    let Some((_etcd, a, b)) = two("objects-listed", &[]) else {
        return;
    };
    let ca = a.client();
    let named = ca.dict_named::<String, i64>("scores").unwrap();
    named.set("alice", &3).unwrap();
    let unnamed = ca.queue::<i64>(0).unwrap();
    unnamed.put_many([1, 2, 3]).unwrap();
    let mut listed: Vec<(u64, Option<String>, String)> = b
        .client()
        .objects()
        .unwrap()
        .into_iter()
        .map(|o| (o.id, o.name, o.kind))
        .collect();
    listed.sort();
    let mut expected = vec![
        (named.id(), Some("scores".to_owned()), "dict".to_owned()),
        (unnamed.id(), None, "queue".to_owned()),
    ];
    expected.sort();
    assert_eq!(listed, expected);
}
