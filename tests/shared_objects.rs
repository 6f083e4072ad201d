//! Shared dicts and lists under real concurrency: many processes at once, random interleavings,
//! and a property test against a local model.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use agora::{Error, Manager, Process, Slice};
use proptest::prelude::*;

/// The tests in this file fork: one at a time, so that no test forks while another holds a lock.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A small deterministic generator, so that each worker has its own interleaving.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORKERS: u64 = 8;
const OPS: u64 = 400;

#[test]
fn many_processes_mutate_one_dict_and_one_list() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let dict = manager.dict_named::<String, u64>("d").unwrap();
    let list = manager.list_named::<(u64, u64)>("l").unwrap();
    let hits = manager.value_named("hits", &0u64).unwrap();

    let workers: Vec<Process> = (0..WORKERS)
        .map(|w| {
            let (dict, list, hits) = (dict.clone(), list.clone(), hits.clone());
            Process::spawn_fallible(move || -> agora::Result<()> {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w + 1));
                for k in 0..OPS {
                    // A random mix of writes, reads and pauses: a different interleaving for
                    // every worker and every run of the scheduler.
                    dict.set(&format!("{w}-{k}"), &k)?;
                    list.append(&(w, k))?;
                    hits.fetch_add(1)?;
                    match rng.below(4) {
                        0 => {
                            let _ =
                                dict.get(&format!("{}-{}", rng.below(WORKERS), rng.below(OPS)))?;
                        }
                        1 => {
                            let _ = list.len()?;
                        }
                        2 => std::thread::sleep(Duration::from_micros(rng.below(200))),
                        _ => std::thread::yield_now(),
                    }
                }
                Ok(())
            })
            .expect("fork a worker")
        })
        .collect();
    for mut w in workers {
        assert!(w.join().unwrap().success(), "a worker failed");
    }

    assert_eq!(dict.len().unwrap() as u64, WORKERS * OPS);
    for w in 0..WORKERS {
        for k in [0, OPS / 2, OPS - 1] {
            assert_eq!(dict.get(&format!("{w}-{k}")).unwrap(), Some(k));
        }
    }
    let appended = list.copy().unwrap();
    assert_eq!(appended.len() as u64, WORKERS * OPS, "an append was lost");
    let unique: BTreeSet<(u64, u64)> = appended.iter().copied().collect();
    assert_eq!(unique.len(), appended.len(), "an append was duplicated");
    // Each worker's appends keep their order.
    for w in 0..WORKERS {
        let mine: Vec<u64> = appended
            .iter()
            .filter(|(x, _)| *x == w)
            .map(|(_, k)| *k)
            .collect();
        assert_eq!(mine, (0..OPS).collect::<Vec<_>>());
    }
    assert_eq!(
        hits.get().unwrap(),
        WORKERS * OPS,
        "fetch_add lost an increment"
    );
}

/// One operation of the property test, on a dict of i64 → i64 and a list of i64.
#[derive(Debug, Clone)]
enum Op {
    Set(i64, i64),
    Del(i64),
    Pop(i64),
    SetDefault(i64, i64),
    PopItem,
    Append(i64),
    Insert(i64, i64),
    PopAt(i64),
    DelAt(i64),
    Assign(i64, i64),
    Remove(i64),
    Slice(Option<i64>, Option<i64>, Option<i64>),
    DelSlice(Option<i64>, Option<i64>),
    Reverse,
    Sort,
}

fn op() -> impl Strategy<Value = Op> {
    let k = -4i64..12;
    let i = -12i64..12;
    let bound = proptest::option::of(-12i64..12);
    let step = proptest::option::of(prop_oneof![-3i64..=-1, 1i64..=3]);
    prop_oneof![
        (k.clone(), any::<i64>()).prop_map(|(k, v)| Op::Set(k, v)),
        k.clone().prop_map(Op::Del),
        k.clone().prop_map(Op::Pop),
        (k.clone(), any::<i64>()).prop_map(|(k, v)| Op::SetDefault(k, v)),
        Just(Op::PopItem),
        (0i64..20).prop_map(Op::Append),
        (i.clone(), 0i64..20).prop_map(|(i, v)| Op::Insert(i, v)),
        i.clone().prop_map(Op::PopAt),
        i.clone().prop_map(Op::DelAt),
        (i.clone(), 0i64..20).prop_map(|(i, v)| Op::Assign(i, v)),
        (0i64..20).prop_map(Op::Remove),
        (bound.clone(), bound.clone(), step).prop_map(|(a, b, s)| Op::Slice(a, b, s)),
        (bound.clone(), bound).prop_map(|(a, b)| Op::DelSlice(a, b)),
        Just(Op::Reverse),
        Just(Op::Sort),
    ]
}

/// Python's `l[start:stop:step]` indices, written out the plain way.
fn slice_indices(
    len: usize,
    start: Option<i64>,
    stop: Option<i64>,
    step: Option<i64>,
) -> Vec<usize> {
    let n = len as i64;
    let step = step.unwrap_or(1);
    let norm = |b: i64| if b < 0 { b + n } else { b };
    let mut out = Vec::new();
    if step > 0 {
        let mut i = start.map(norm).unwrap_or(0).clamp(0, n);
        let stop = stop.map(norm).unwrap_or(n).clamp(0, n);
        while i < stop {
            out.push(i as usize);
            i += step;
        }
    } else {
        let mut i = start.map(norm).unwrap_or(n - 1).clamp(-1, n - 1);
        let stop = stop.map(norm).unwrap_or(-1).clamp(-1, n - 1);
        while i > stop {
            out.push(i as usize);
            i += step;
        }
    }
    out
}

fn resolve(index: i64, len: usize) -> Option<usize> {
    let i = if index < 0 { index + len as i64 } else { index };
    (0..len as i64).contains(&i).then_some(i as usize)
}

/// The local model: an insertion-ordered dict and a plain list.
#[derive(Default)]
struct Model {
    dict: Vec<(i64, i64)>,
    list: Vec<i64>,
}

impl Model {
    fn find(&self, k: i64) -> Option<usize> {
        self.dict.iter().position(|(key, _)| *key == k)
    }
}

fn check_op(
    op: &Op,
    model: &mut Model,
    dict: &agora::Dict<i64, i64>,
    list: &agora::List<i64>,
) -> Result<(), TestCaseError> {
    match *op {
        Op::Set(k, v) => {
            dict.set(&k, &v).unwrap();
            match model.find(k) {
                Some(i) => model.dict[i].1 = v,
                None => model.dict.push((k, v)),
            }
        }
        Op::Del(k) => {
            let removed = dict.del(&k).unwrap();
            let expected = model.find(k).map(|i| model.dict.remove(i)).is_some();
            prop_assert_eq!(removed, expected);
        }
        Op::Pop(k) => {
            let got = dict.pop(&k).unwrap();
            prop_assert_eq!(got, model.find(k).map(|i| model.dict.remove(i).1));
        }
        Op::SetDefault(k, v) => {
            let got = dict.setdefault(&k, &v).unwrap();
            let expected = match model.find(k) {
                Some(i) => model.dict[i].1,
                None => {
                    model.dict.push((k, v));
                    v
                }
            };
            prop_assert_eq!(got, expected);
        }
        Op::PopItem => prop_assert_eq!(dict.popitem().unwrap(), model.dict.pop()),
        Op::Append(v) => {
            list.append(&v).unwrap();
            model.list.push(v);
        }
        Op::Insert(i, v) => {
            list.insert(i, &v).unwrap();
            let n = model.list.len() as i64;
            let at = if i < 0 { (i + n).max(0) } else { i.min(n) };
            model.list.insert(at as usize, v);
        }
        Op::PopAt(i) => {
            let got = list.pop_at(i).unwrap();
            let expected = resolve(i, model.list.len()).map(|i| model.list.remove(i));
            prop_assert_eq!(got, expected);
        }
        Op::DelAt(i) => {
            let removed = list.del(i).unwrap();
            let expected = resolve(i, model.list.len()).map(|i| model.list.remove(i));
            prop_assert_eq!(removed, expected.is_some());
        }
        Op::Assign(i, v) => match resolve(i, model.list.len()) {
            Some(at) => {
                list.set(i, &v).unwrap();
                model.list[at] = v;
            }
            None => prop_assert!(list.set(i, &v).is_err()),
        },
        Op::Remove(v) => {
            let got = list.remove(&v).unwrap();
            let expected = model
                .list
                .iter()
                .position(|x| *x == v)
                .map(|i| model.list.remove(i));
            prop_assert_eq!(got, expected.is_some());
        }
        Op::Slice(a, b, s) => {
            let expected: Vec<i64> = slice_indices(model.list.len(), a, b, s)
                .into_iter()
                .map(|i| model.list[i])
                .collect();
            prop_assert_eq!(list.get_slice(Slice::new(a, b, s)).unwrap(), expected);
        }
        Op::DelSlice(a, b) => {
            list.del_slice(Slice::new(a, b, None)).unwrap();
            let doomed: BTreeSet<usize> = slice_indices(model.list.len(), a, b, None)
                .into_iter()
                .collect();
            let mut i = 0;
            model.list.retain(|_| {
                i += 1;
                !doomed.contains(&(i - 1))
            });
        }
        Op::Reverse => {
            list.reverse().unwrap();
            model.list.reverse();
        }
        Op::Sort => {
            list.sort().unwrap();
            model.list.sort();
        }
    }
    Ok(())
}

#[test]
fn remote_dict_and_list_agree_with_a_local_model() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let config = ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..60))| {
        let dict = manager.dict::<i64, i64>().unwrap();
        let list = manager.list::<i64>().unwrap();
        let mut model = Model::default();
        for op in &ops {
            check_op(op, &mut model, &dict, &list)?;
        }
        prop_assert_eq!(dict.items().unwrap(), model.dict.clone());
        prop_assert_eq!(list.copy().unwrap(), model.list.clone());
        manager.delete(dict.id()).unwrap();
        manager.delete(list.id()).unwrap();
    });
}

#[test]
fn registry_calls_pipeline_like_any_other() {
    let _serial = serial();
    let manager = Manager::spawn().unwrap();
    let client = manager.client();
    // A hundred dicts, named and not, created in one round trip.
    let mut p = client.pipeline();
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let name = format!("d{i}");
            let name = (i % 2 == 0).then_some(name.as_str());
            p.add(agora::Client::create_cmd("dict", name, &[]))
        })
        .collect();
    let replies = p.execute().unwrap();
    let ids: Vec<u64> = handles
        .into_iter()
        .map(|h| replies.get(h).unwrap())
        .collect();
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        100,
        "distinct ids"
    );
    for (i, id) in ids.iter().enumerate() {
        let d = agora::Dict::<String, usize>::from_id(client, *id);
        d.set("i", &i).unwrap();
    }
    // Lookups, deletions and the listing, pipelined too.
    let mut p = client.pipeline();
    let found = p.add(agora::Client::lookup_cmd("d42"));
    let gone = p.add(agora::Client::delete_named_cmd("d0"));
    let gone_too = p.add(agora::Client::delete_cmd(ids[1]));
    let listed = p.add(agora::Client::objects_cmd());
    let replies = p.execute().unwrap();
    assert_eq!(replies.get(found).unwrap(), ("dict".to_owned(), ids[42]));
    replies.get(gone).unwrap();
    replies.get(gone_too).unwrap();
    let listed = replies.get(listed).unwrap();
    assert_eq!(listed.len(), 98);
    assert_eq!(
        agora::Dict::<String, usize>::from_id(client, ids[42])
            .get("i")
            .unwrap(),
        Some(42)
    );
}

#[test]
fn slices_are_rust_ranges_with_an_optional_step() {
    let _serial = serial();
    let manager = Manager::spawn().unwrap();
    let list = manager.list::<i64>().unwrap();
    list.extend(0..6).unwrap();
    assert_eq!(list.get_slice(1..3).unwrap(), [1, 2]);
    assert_eq!(list.get_slice(-2..).unwrap(), [4, 5]);
    assert_eq!(list.get_slice(..2).unwrap(), [0, 1]);
    assert_eq!(list.get_slice(..).unwrap(), [0, 1, 2, 3, 4, 5]);
    assert_eq!(
        list.get_slice(Slice::from(..).step_by(-2)).unwrap(),
        [5, 3, 1]
    );
    // As in Python, bounds are clamped and an empty range selects nothing.
    assert_eq!(list.get_slice(4..100).unwrap(), [4, 5]);
    assert!(list
        .get_slice(Slice::new(Some(3), Some(1), None))
        .unwrap()
        .is_empty());
    list.set_slice(1..3, [10, 20, 30]).unwrap();
    assert_eq!(list.copy().unwrap(), [0, 10, 20, 30, 3, 4, 5]);
    list.del_slice(Slice::from(..).step_by(2)).unwrap();
    assert_eq!(list.copy().unwrap(), [10, 30, 4]);
    assert_eq!(list.index_in(&4, 1..).unwrap(), Some(2));
    assert_eq!(list.index_in(&10, 1..).unwrap(), None);
    // A search takes no step: refused before anything is sent.
    let err = list.index_in(&4, Slice::all().step_by(2)).unwrap_err();
    assert!(matches!(err, Error::Usage(_)), "{err}");
    // A step of 0 is the manager's ValueError, as in Python.
    let err = list.get_slice(Slice::all().step_by(0)).unwrap_err();
    assert!(err.is(agora::ErrorName::ValueError), "{err}");

    let array = manager.array::<i64>('q', &[1, 2, 3, 4]).unwrap();
    array
        .set_slice(Slice::from(1..).step_by(2), [20, 40])
        .unwrap();
    assert_eq!(array.to_vec().unwrap(), [1, 20, 3, 40]);
    assert_eq!(array.get_slice(-3..-1).unwrap(), [20, 3]);
}

/// One operation of the set property test, on two shared sets `a` and `b` of small ints and
/// their local models; `local` is a local collection operand.
#[derive(Debug, Clone)]
enum SetOp {
    Add(bool, i64),
    Remove(bool, i64),
    Discard(bool, i64),
    Pop(bool),
    Update(bool, Vec<i64>),
    UpdateShared(bool),
    IntersectionUpdate(bool, Vec<i64>),
    IntersectionUpdateShared(bool),
    DifferenceUpdate(bool, Vec<i64>),
    DifferenceUpdateShared(bool),
    SymmetricUpdate(bool, Vec<i64>),
    SymmetricUpdateShared(bool),
    Clear(bool),
}

fn set_op() -> impl Strategy<Value = SetOp> {
    let x = 0i64..16;
    let side = any::<bool>();
    let local = proptest::collection::vec(0i64..16, 0..6);
    prop_oneof![
        (side, x.clone()).prop_map(|(s, x)| SetOp::Add(s, x)),
        (side, x.clone()).prop_map(|(s, x)| SetOp::Remove(s, x)),
        (side, x).prop_map(|(s, x)| SetOp::Discard(s, x)),
        side.prop_map(SetOp::Pop),
        (side, local.clone()).prop_map(|(s, l)| SetOp::Update(s, l)),
        side.prop_map(SetOp::UpdateShared),
        (side, local.clone()).prop_map(|(s, l)| SetOp::IntersectionUpdate(s, l)),
        side.prop_map(SetOp::IntersectionUpdateShared),
        (side, local.clone()).prop_map(|(s, l)| SetOp::DifferenceUpdate(s, l)),
        side.prop_map(SetOp::DifferenceUpdateShared),
        (side, local).prop_map(|(s, l)| SetOp::SymmetricUpdate(s, l)),
        side.prop_map(SetOp::SymmetricUpdateShared),
        side.prop_map(SetOp::Clear),
    ]
}

fn sorted(items: Vec<i64>) -> BTreeSet<i64> {
    items.into_iter().collect()
}

#[test]
fn remote_sets_agree_with_a_local_model() {
    use agora::Set;

    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let config = ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(set_op(), 1..40))| {
        let sets: [Set<i64>; 2] = [manager.set().unwrap(), manager.set().unwrap()];
        let mut models: [BTreeSet<i64>; 2] = [BTreeSet::new(), BTreeSet::new()];
        for op in &ops {
            let pick = |s: &bool| usize::from(*s);
            match op {
                SetOp::Add(s, x) => {
                    sets[pick(s)].add(x).unwrap();
                    models[pick(s)].insert(*x);
                }
                SetOp::Remove(s, x) => {
                    let was = models[pick(s)].remove(x);
                    prop_assert_eq!(sets[pick(s)].remove(x).unwrap(), was);
                }
                SetOp::Discard(s, x) => {
                    sets[pick(s)].discard(x).unwrap();
                    models[pick(s)].remove(x);
                }
                SetOp::Pop(s) => {
                    let popped = sets[pick(s)].pop().unwrap();
                    match popped {
                        Some(x) => prop_assert!(models[pick(s)].remove(&x), "popped {x}"),
                        None => prop_assert!(models[pick(s)].is_empty()),
                    }
                }
                SetOp::Update(s, l) => {
                    sets[pick(s)].update(l).unwrap();
                    models[pick(s)].extend(l.iter().copied());
                }
                SetOp::UpdateShared(s) => {
                    let (me, other) = (pick(s), 1 - pick(s));
                    sets[me].update(&sets[other]).unwrap();
                    let o = models[other].clone();
                    models[me].extend(o);
                }
                SetOp::IntersectionUpdate(s, l) => {
                    sets[pick(s)].intersection_update(l).unwrap();
                    let keep: BTreeSet<i64> = l.iter().copied().collect();
                    models[pick(s)].retain(|x| keep.contains(x));
                }
                SetOp::IntersectionUpdateShared(s) => {
                    let (me, other) = (pick(s), 1 - pick(s));
                    sets[me].intersection_update(&sets[other]).unwrap();
                    let o = models[other].clone();
                    models[me].retain(|x| o.contains(x));
                }
                SetOp::DifferenceUpdate(s, l) => {
                    sets[pick(s)].difference_update(l).unwrap();
                    for x in l {
                        models[pick(s)].remove(x);
                    }
                }
                SetOp::DifferenceUpdateShared(s) => {
                    let (me, other) = (pick(s), 1 - pick(s));
                    sets[me].difference_update(&sets[other]).unwrap();
                    let o = models[other].clone();
                    models[me].retain(|x| !o.contains(x));
                }
                SetOp::SymmetricUpdate(s, l) => {
                    sets[pick(s)].symmetric_difference_update(l).unwrap();
                    let l: BTreeSet<i64> = l.iter().copied().collect();
                    let m = &models[pick(s)];
                    models[pick(s)] = m.symmetric_difference(&l).copied().collect();
                }
                SetOp::SymmetricUpdateShared(s) => {
                    let (me, other) = (pick(s), 1 - pick(s));
                    sets[me].symmetric_difference_update(&sets[other]).unwrap();
                    let next = models[me].symmetric_difference(&models[other]).copied().collect();
                    models[me] = next;
                }
                SetOp::Clear(s) => {
                    sets[pick(s)].clear().unwrap();
                    models[pick(s)].clear();
                }
            }
            // The algebra that answers, against the model, both ways.
            let (a, b) = (&sets[0], &sets[1]);
            let (ma, mb) = (&models[0], &models[1]);
            prop_assert_eq!(sorted(a.copy().unwrap()), ma.clone());
            prop_assert_eq!(a.len().unwrap(), ma.len());
            prop_assert_eq!(sorted(a.union(b).unwrap()), ma.union(mb).copied().collect());
            prop_assert_eq!(
                sorted(a.intersection(b).unwrap()),
                ma.intersection(mb).copied().collect()
            );
            prop_assert_eq!(
                sorted(b.difference(a).unwrap()),
                mb.difference(ma).copied().collect()
            );
            prop_assert_eq!(
                sorted(a.symmetric_difference(b).unwrap()),
                ma.symmetric_difference(mb).copied().collect()
            );
            prop_assert_eq!(a.is_subset(b).unwrap(), ma.is_subset(mb));
            prop_assert_eq!(a.is_superset(b).unwrap(), ma.is_superset(mb));
            prop_assert_eq!(a.is_disjoint(b).unwrap(), ma.is_disjoint(mb));
            prop_assert_eq!(a.compare(b).unwrap(), (ma.is_subset(mb), ma.is_superset(mb)));
            prop_assert_eq!(a.equals(b).unwrap(), ma == mb);
        }
        for set in &sets {
            manager.delete(set.id()).unwrap();
        }
    });
}

#[test]
fn sets_by_name_in_dicts_and_from_many_processes() {
    use std::collections::HashSet;

    use agora::Set;

    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let seen = manager.set_named::<String>("seen").unwrap();
    assert_eq!(manager.set_named::<String>("seen").unwrap().id(), seen.id());
    assert!(
        manager.list_named::<i64>("seen").is_err(),
        "a set has the name"
    );

    // Many processes add at once; nothing lost, nothing twice.
    let workers: Vec<Process> = (0..4u64)
        .map(|w| {
            let seen = seen.clone();
            Process::spawn_fallible(move || -> agora::Result<()> {
                for k in 0..100u64 {
                    seen.add(&format!("{}", k % 50 + w * 25))?;
                }
                Ok(())
            })
            .expect("fork a worker")
        })
        .collect();
    for mut w in workers {
        assert!(w.join().unwrap().success(), "a worker failed");
    }
    let all: HashSet<String> = seen.copy().unwrap().into_iter().collect();
    let expected: HashSet<String> = (0..125u64).map(|k| k.to_string()).collect();
    assert_eq!(all, expected);
    assert_eq!(seen.len().unwrap(), 125);

    // A set inside a dict is a live reference; the element types of the algebra's operands
    // may be any local collection.
    let groups = manager.dict::<String, Set<i64>>().unwrap();
    let evens = manager.set_from::<i64, _>([0, 2, 4]).unwrap();
    groups.set("evens", &evens).unwrap();
    let got = groups.get("evens").unwrap().expect("stored");
    got.add(&6).unwrap();
    assert!(evens.contains(&6).unwrap());
    assert!(evens.is_subset(&[0, 2, 4, 6, 8]).unwrap());
    assert!(evens.is_superset(&vec![2, 4]).unwrap());
    assert!(evens.is_disjoint(&HashSet::from([1, 3])).unwrap());
    assert!(evens.equals(&BTreeSet::from([0, 2, 4, 6])).unwrap());
    // A set as its own operand.
    evens.symmetric_difference_update(&evens).unwrap();
    assert!(evens.is_empty().unwrap());
    assert_eq!(evens.pop().unwrap(), None);
    assert!(!evens.remove(&1).unwrap());
    // A map element is refused as an unhashable key is.
    let maps = manager
        .set::<std::collections::BTreeMap<String, i64>>()
        .unwrap();
    let err = maps.add(&std::collections::BTreeMap::from([("a".to_string(), 1)]));
    assert!(
        matches!(err, Err(ref e) if e.is(agora::ErrorName::TypeError)),
        "{err:?}"
    );
}
