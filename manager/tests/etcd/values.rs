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
    let writers = dict_writers(&a, &b);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let leader = etcd.leader().expect("a leader");
    etcd.kill_member(leader);
    assert_each_number_once(workers, EACH);
    assert_eq!(counter.get().unwrap(), (4 * EACH) as i64);
    for w in writers {
        w.join().expect("no dict call failed");
    }
    assert_dict_written_once_in_order(&a.client().dict_named("written").unwrap());
}

/// Rounds of each dict writer: a `set` a round, and every tenth round an `update` of more
/// entries than one transaction takes (written as a new generation).
const DICT_ROUNDS: i64 = 50;
const DICT_UPDATE: i64 = 120;

/// Two threads, one through each manager, writing keys of their own into the dict "written".
fn dict_writers(a: &Manager, b: &Manager) -> Vec<std::thread::JoinHandle<()>> {
    [a, b]
        .iter()
        .enumerate()
        .map(|(w, m)| {
            let client = m.client();
            std::thread::spawn(move || {
                let d = client.dict_named::<String, i64>("written").unwrap();
                let started = std::time::Instant::now();
                for i in 0..DICT_ROUNDS {
                    d.set(&format!("{w}-{i:03}"), &i).unwrap();
                    if i % 10 == 9 {
                        let many = (0..DICT_UPDATE).map(|j| (format!("{w}-{i:03}-{j:03}"), j));
                        d.update(many).unwrap();
                    }
                }
                eprintln!(
                    "dict writer {w}: {DICT_ROUNDS} rounds in {:?}",
                    started.elapsed()
                );
            })
        })
        .collect()
}

/// Every entry the writers wrote is there once, with its value, each writer's in its order.
fn assert_dict_written_once_in_order(d: &agora_client::Dict<String, i64>) {
    let items = d.items().unwrap();
    let per_writer = DICT_ROUNDS + (DICT_ROUNDS / 10) * DICT_UPDATE;
    assert_eq!(
        items.len() as i64,
        2 * per_writer,
        "nothing lost or repeated"
    );
    for w in 0..2 {
        let mine: Vec<&(String, i64)> = items
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{w}-")))
            .collect();
        assert_eq!(mine.len() as i64, per_writer);
        let keys: Vec<&String> = mine.iter().map(|(k, _)| k).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "writer {w}'s entries in the order written");
        for (k, v) in mine {
            let last: i64 = k.rsplit('-').next().unwrap().parse().unwrap();
            assert_eq!(*v, last, "{k}");
        }
    }
}

#[test]
fn objects_through_one_manager_lists_what_the_other_made_from_the_catalog() {
    if !available() {
        return;
    }
    let etcd = Etcd::start();
    let prefix = fresh_prefix("objects-listed");
    let store = etcd.store(&prefix);
    let (a, b) = (Manager::start(&store, &[]), Manager::start(&store, &[]));
    let ca = a.client();
    let named = ca.dict_named::<i64, i64>("scores").unwrap();
    named.update((0..2000).map(|i| (i, i))).unwrap();
    let unnamed = ca.queue::<i64>(0).unwrap();
    unnamed.put_many(0..3000).unwrap();
    let listed = |client: &agora_client::Client| {
        let mut all: Vec<(u64, Option<String>, String)> = client
            .objects()
            .unwrap()
            .into_iter()
            .map(|o| (o.id, o.name, o.kind))
            .collect();
        all.sort();
        all
    };
    let mut expected = vec![
        (named.id(), Some("scores".to_owned()), "dict".to_owned()),
        (unnamed.id(), None, "queue".to_owned()),
    ];
    expected.sort();
    let cb = b.client();
    assert_eq!(listed(&cb), expected);
    // One catalog key an object, whatever keys the objects themselves have.
    assert_eq!(etcd.keys(&format!("/{prefix}/c/")).len(), 2);
    ca.delete(unnamed.id()).unwrap();
    assert_eq!(
        etcd.keys(&format!("/{prefix}/c/")).len(),
        1,
        "deleted with its object"
    );
    assert_eq!(
        listed(&cb),
        vec![(named.id(), Some("scores".to_owned()), "dict".to_owned())]
    );
}

/// The entry keys etcd holds for object `id` of the store on `prefix`.
fn entry_keys(etcd: &Etcd, prefix: &str, id: u64) -> Vec<String> {
    etcd.keys(&format!("/{prefix}/o/{id:x}/e/"))
}

#[test]
fn a_dicts_entries_are_keys_of_their_own_kept_in_insertion_order() {
    if !available() {
        return;
    }
    let etcd = Etcd::start();
    let prefix = fresh_prefix("dict-entries");
    let store = etcd.store(&prefix);
    let (a, b) = (Manager::start(&store, &[]), Manager::start(&store, &[]));
    let d = a.client().dict_named::<String, i64>("d").unwrap();
    for (k, v) in [("a", 1), ("b", 2), ("c", 3)] {
        d.set(k, &v).unwrap();
    }
    assert_eq!(
        entry_keys(&etcd, &prefix, d.id()).len(),
        3,
        "one key an entry"
    );
    // Python's order: an update keeps an entry's place, a re-insertion takes the last.
    d.pop("a").unwrap();
    d.set("a", &4).unwrap();
    d.set("b", &5).unwrap();
    let seen = b.client().dict_named::<String, i64>("d").unwrap();
    let expected = vec![
        ("b".to_owned(), 5),
        ("c".to_owned(), 3),
        ("a".to_owned(), 4),
    ];
    assert_eq!(seen.items().unwrap(), expected);
    seen.pop("c").unwrap();
    assert_eq!(
        entry_keys(&etcd, &prefix, d.id()).len(),
        2,
        "a popped entry's key goes"
    );
    let ns = a.client().namespace_named("ns").unwrap();
    ns.set("x", &1i64).unwrap();
    ns.set("y", &"two").unwrap();
    let other = b.client().namespace_named("ns").unwrap();
    assert_eq!(other.get::<i64>("x").unwrap(), Some(1));
    assert_eq!(entry_keys(&etcd, &prefix, ns.id()).len(), 2);
}

#[test]
fn large_changes_and_large_new_dicts_are_written_whole_and_seen_whole() {
    if !available() {
        return;
    }
    let etcd = Etcd::start();
    let prefix = fresh_prefix("dict-large");
    let store = etcd.store(&prefix);
    let (a, b) = (Manager::start(&store, &[]), Manager::start(&store, &[]));
    // An update of more entries than one transaction takes: a new generation.
    let d = a.client().dict_named::<i64, i64>("d").unwrap();
    d.set(&-1, &-1).unwrap();
    d.update((0..1000).map(|i| (i, i * i))).unwrap();
    d.set(&1000, &7).unwrap();
    let seen = b.client().dict_named::<i64, i64>("d").unwrap();
    let items = seen.items().unwrap();
    assert_eq!(items.len(), 1002);
    assert_eq!(items[0], (-1, -1));
    assert_eq!(items[500], (499, 499 * 499));
    assert_eq!(items[1001], (1000, 7));
    assert_eq!(
        entry_keys(&etcd, &prefix, d.id()).len(),
        1002,
        "the old generation is gone"
    );
    // Created with more entries than one transaction takes: the entries are written with its
    // first change.
    let mut raw = a.raw();
    let initial: Vec<(rmpv::Value, rmpv::Value)> = (0..300)
        .map(|i| (rmpv::Value::from(i), rmpv::Value::from(i + 1)))
        .collect();
    let id = raw.create("dict", Some("big"), vec![rmpv::Value::Map(initial)]);
    assert!(
        entry_keys(&etcd, &prefix, id).is_empty(),
        "kept in its init args"
    );
    let big = b.client().dict_named::<i64, i64>("big").unwrap();
    assert_eq!(big.get(&299).unwrap(), Some(300));
    big.set(&0, &-5).unwrap();
    assert_eq!(entry_keys(&etcd, &prefix, id).len(), 300);
    let again = a.client().dict_named::<i64, i64>("big").unwrap();
    let items = again.items().unwrap();
    assert_eq!(items.len(), 300);
    assert_eq!(items[0], (0, -5), "kept its place");
    assert_eq!(items[299], (299, 300));
}

#[test]
fn concurrent_writes_of_one_dict_through_two_managers_are_never_lost() {
    let Some((_etcd, a, b)) = two("dict-concurrent", &[]) else {
        return;
    };
    const EACH: i64 = 40;
    let workers: Vec<_> = [&a, &b, &a, &b]
        .iter()
        .enumerate()
        .map(|(w, m)| {
            let client = m.client();
            std::thread::spawn(move || {
                let d = client.dict_named::<String, i64>("shared").unwrap();
                for i in 0..EACH {
                    d.set(&format!("{w}-{i}"), &i).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let d = a.client().dict_named::<String, i64>("shared").unwrap();
    assert_eq!(d.len().unwrap() as i64, 4 * EACH);
    for w in 0..4 {
        assert_eq!(d.get(&format!("{w}-{}", EACH - 1)).unwrap(), Some(EACH - 1));
    }
}
