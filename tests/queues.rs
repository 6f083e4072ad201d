//! Queues between real processes: every item exactly once, FIFO lines of waiters, 10,000
//! parked getters, consumers killed while parked, the tutorials' JoinableQueue program, and
//! killed consumers' items redelivered.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use agora::{ErrorName, Manager, Process, Queue};
use common::{join_ok, kill, proc_status, serial, wait_count, wait_until, Rng};

#[test]
fn full_empty_and_closed_behave_as_documented() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let q = manager.queue::<i64>(2).unwrap();
    assert_eq!(q.maxsize().unwrap(), 2);
    assert!(q.is_empty().unwrap() && !q.is_full().unwrap());
    assert_eq!(q.try_put(&1).unwrap(), Some(()));
    assert_eq!(q.try_put(&2).unwrap(), Some(()));
    assert_eq!(
        q.try_put(&3).unwrap(),
        None,
        "a full queue refuses a non-blocking put"
    );
    assert!(q.is_full().unwrap());
    assert_eq!(q.qsize().unwrap(), 2);
    assert_eq!(q.put_timeout(&3, Duration::from_millis(20)).unwrap(), None);
    assert_eq!(q.try_get().unwrap(), Some(1));
    assert_eq!(q.get().unwrap(), 2);
    assert_eq!(q.try_get().unwrap(), None);
    assert_eq!(q.get_timeout(Duration::from_millis(20)).unwrap(), None);
    assert_eq!(
        q.try_put_many([5, 6, 7]).unwrap(),
        Some(2),
        "as many as fit"
    );
    assert_eq!(q.try_put_many([8]).unwrap(), None, "none fit");
    assert_eq!(q.get_many(10).unwrap(), [5, 6]);
    assert_eq!(q.try_get_many(10).unwrap(), None);
    assert_eq!(
        q.get_many_timeout(3, Duration::from_millis(20)).unwrap(),
        None
    );
    q.put(&4).unwrap();
    assert_eq!(
        q.get_many_timeout(3, Duration::from_millis(20)).unwrap(),
        Some(vec![4])
    );
    assert_eq!(
        q.put_many_timeout([1, 2, 3], Duration::from_millis(20))
            .unwrap(),
        Some(2),
        "the first two got in"
    );
    assert_eq!(q.get_many(10).unwrap(), [1, 2]);
    assert!(q.get_many(0).unwrap_err().is(ErrorName::ValueError));

    // Closing: puts fail, what is left drains, then every get says Closed.
    q.put_many([8, 9]).unwrap();
    q.close().unwrap();
    q.close().unwrap();
    assert!(q.is_closed().unwrap());
    assert!(q.put(&10).unwrap_err().is(ErrorName::Closed));
    assert!(q.try_put(&10).unwrap_err().is(ErrorName::Closed));
    assert!(q.put_many([10]).unwrap_err().is(ErrorName::Closed));
    let drained: Vec<i64> = q.iter().collect::<agora::Result<_>>().unwrap();
    assert_eq!(drained, [8, 9]);
    assert!(q.get().unwrap_err().is(ErrorName::Closed));
    assert!(q.try_get().unwrap_err().is(ErrorName::Closed));
    assert!(q
        .get_timeout(Duration::from_millis(20))
        .unwrap_err()
        .is(ErrorName::Closed));
    assert_eq!(q.batches(4).count(), 0);

    // Named queues are get-or-create; the kind is checked.
    let a = manager.queue_named::<String>("jobs", 0).unwrap();
    let b = manager.queue_named::<String>("jobs", 5).unwrap();
    assert_eq!(a, b);
    assert_eq!(
        b.maxsize().unwrap(),
        0,
        "an existing queue keeps its maxsize"
    );
    let err = manager
        .joinable_queue_named::<String>("jobs", 0)
        .unwrap_err();
    assert!(err.is(ErrorName::TypeError), "{err}");

    // An item of another type: the iterator yields the error once, then ends.
    a.put("not a number").unwrap();
    let numbers = Queue::<i64>::from_id(&manager, a.id());
    let mut it = numbers.iter();
    assert!(matches!(it.next(), Some(Err(agora::Error::Decode(_)))));
    assert!(it.next().is_none());
}

#[test]
fn close_wakes_parked_getters_and_putters() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let empty = manager.queue::<u64>(0).unwrap();
    let full = manager.queue::<u64>(1).unwrap();
    full.put(&0).unwrap();
    let parked = manager.value(&0u64).unwrap();
    let mut workers: Vec<Process> = Vec::new();
    for i in 0..4u64 {
        let (empty, full, tally) = (empty.clone(), full.clone(), parked.clone());
        workers.push(
            Process::spawn_fallible(move || -> agora::Result<()> {
                let mut p = empty.client().pipeline();
                let (get, put) = if i % 2 == 0 {
                    (Some(p.add(empty.get_cmd())), None)
                } else {
                    (None, Some(p.add(full.put_cmd(&i))))
                };
                p.add(tally.fetch_add_cmd(1));
                let replies = p.execute()?;
                let err = match (get, put) {
                    (Some(get), _) => replies.get(get).expect_err("a get of a closed queue"),
                    (_, Some(put)) => replies.get(put).expect_err("a put to a closed queue"),
                    _ => unreachable!(),
                };
                assert!(err.is(ErrorName::Closed), "{err}");
                Ok(())
            })
            .unwrap(),
        );
        wait_count(&parked, i + 1);
    }
    empty.close().unwrap();
    full.close().unwrap();
    for w in &mut workers {
        join_ok(w, "a parked caller woken by close");
    }
    // The full queue's item is still there to drain.
    assert_eq!(full.get().unwrap(), 0);
}

const PRODUCERS: u64 = 8;
const CONSUMERS: u64 = 8;
const PER_PRODUCER: u64 = 12_500;
const ITEMS: u64 = PRODUCERS * PER_PRODUCER;

/// 8 producer and 8 consumer processes move 100,000 items through one queue; every item is
/// received exactly once, and each consumer sees each producer's items in order (FIFO).
/// `singles_only` makes producers put one item per call; otherwise most go in batches of
/// random sizes. Consumers mix single gets and batches of random sizes.
fn many_to_many(maxsize: usize, singles_only: bool) {
    let manager = Manager::spawn().expect("spawn the manager");
    let q = manager.queue::<u64>(maxsize).unwrap();
    let consumers: Vec<Process> = (0..CONSUMERS)
        .map(|c| {
            let q = q.clone();
            let out = manager.list_named::<u64>(&format!("got-{c}")).unwrap();
            Process::spawn_fallible(move || -> agora::Result<()> {
                let mut rng = Rng(0x5eed ^ (c + 1));
                let mut got = Vec::new();
                loop {
                    let batch = if rng.below(4) == 0 {
                        q.get().map(|x| vec![x])
                    } else {
                        q.get_many(1 + rng.below(32) as usize)
                    };
                    match batch {
                        Ok(items) => got.extend(items),
                        Err(e) if e.is(ErrorName::Closed) => break,
                        Err(e) => return Err(e),
                    }
                }
                for chunk in got.chunks(4096) {
                    out.extend(chunk)?;
                }
                Ok(())
            })
            .expect("fork a consumer")
        })
        .collect();
    let producers: Vec<Process> = (0..PRODUCERS)
        .map(|p| {
            let q = q.clone();
            Process::spawn_fallible(move || -> agora::Result<()> {
                let mut rng = Rng(0xfeed ^ (p + 1));
                let items: Vec<u64> = (0..PER_PRODUCER).map(|i| p * PER_PRODUCER + i).collect();
                let singles = if singles_only { items.len() } else { 500 };
                let (one_by_one, mut rest) = items.split_at(singles);
                for x in one_by_one {
                    q.put(x)?;
                }
                while !rest.is_empty() {
                    let n = (1 + rng.below(64) as usize).min(rest.len());
                    assert_eq!(q.put_many(&rest[..n])?, n, "a blocking put_many puts all");
                    rest = &rest[n..];
                }
                Ok(())
            })
            .expect("fork a producer")
        })
        .collect();
    for mut p in producers {
        join_ok(&mut p, "a producer");
    }
    q.close().unwrap();
    for mut c in consumers {
        join_ok(&mut c, "a consumer");
    }

    let mut all = Vec::with_capacity(ITEMS as usize);
    for c in 0..CONSUMERS {
        let got = manager
            .list_named::<u64>(&format!("got-{c}"))
            .unwrap()
            .copy()
            .unwrap();
        let mut last: Vec<Option<u64>> = vec![None; PRODUCERS as usize];
        for &x in &got {
            let p = (x / PER_PRODUCER) as usize;
            assert!(
                last[p] < Some(x),
                "consumer {c} got {x} after {:?}",
                last[p]
            );
            last[p] = Some(x);
        }
        all.extend(got);
    }
    assert_eq!(all.len() as u64, ITEMS, "items were lost or duplicated");
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len() as u64, ITEMS, "an item was received twice");
    assert_eq!(all.last(), Some(&(ITEMS - 1)));
    assert_eq!(q.qsize().unwrap(), 0);
}

#[test]
fn eight_producers_eight_consumers_a_hundred_thousand_items() {
    let _serial = serial();
    many_to_many(0, false);
}

#[test]
fn eight_producers_eight_consumers_with_a_small_maxsize() {
    let _serial = serial();
    many_to_many(16, true);
}

/// Parked getters are served in the order they arrived, and so are parked putters.
#[test]
fn parked_getters_and_putters_are_served_in_arrival_order() {
    let _serial = serial();
    const N: u64 = 6;
    let manager = Manager::spawn().expect("spawn the manager");
    let q = manager.queue::<u64>(1).unwrap();
    let parked = manager.value(&0u64).unwrap();
    let results = manager.dict::<u64, u64>().unwrap();
    let mut getters = Vec::new();
    for i in 0..N {
        let (q, tally, results) = (q.clone(), parked.clone(), results.clone());
        getters.push(
            Process::spawn_fallible(move || -> agora::Result<()> {
                let mut p = q.client().pipeline();
                let got = p.add(q.get_cmd());
                p.add(tally.fetch_add_cmd(1));
                let replies = p.execute()?;
                results.set(&i, &replies.get(got)?)
            })
            .unwrap(),
        );
        wait_count(&parked, i + 1);
    }
    for i in 0..N {
        q.put(&(100 + i)).unwrap();
    }
    for g in &mut getters {
        join_ok(g, "a getter");
    }
    for i in 0..N {
        assert_eq!(results.get(&i).unwrap(), Some(100 + i), "getter {i}");
    }

    // Putters: the queue is full; they park in order; a getter then sees their items in order.
    q.put(&0).unwrap();
    let mut putters = Vec::new();
    for i in 1..=N {
        let (q, tally) = (q.clone(), parked.clone());
        putters.push(
            Process::spawn_fallible(move || -> agora::Result<()> {
                let mut p = q.client().pipeline();
                let put = p.add(q.put_cmd(&i));
                p.add(tally.fetch_add_cmd(1));
                p.execute()?.get(put)
            })
            .unwrap(),
        );
        wait_count(&parked, N + i);
    }
    // A newcomer does not overtake them, even when room appears.
    assert_eq!(q.try_put(&99).unwrap(), None);
    let order: Vec<u64> = (0..=N).map(|_| q.get().unwrap()).collect();
    assert_eq!(order, (0..=N).collect::<Vec<_>>());
    for p in &mut putters {
        join_ok(p, "a putter");
    }
}

/// 10,000 getters parked on one queue at once (4 processes pipelining 2,500 each), then all
/// served, each item once; each process gets its items in the order its gets arrived. The
/// manager spends no thread per waiter, and memory in proportion to their number.
#[test]
fn ten_thousand_parked_getters_are_all_served() {
    let _serial = serial();
    const PROCS: u64 = 4;
    const EACH: u64 = 2_500;
    let manager = Manager::spawn().expect("spawn the manager");
    let q = manager.queue::<u64>(0).unwrap();
    let parked = manager.value(&0u64).unwrap();
    let threads_before = proc_status(manager.pid(), "Threads").unwrap_or(0);
    let rss_before = proc_status(manager.pid(), "VmRSS").unwrap_or(0);
    let workers: Vec<Process> = (0..PROCS)
        .map(|w| {
            let (q, tally) = (q.clone(), parked.clone());
            let out = manager.list_named::<u64>(&format!("got-{w}")).unwrap();
            Process::spawn_fallible(move || -> agora::Result<()> {
                let mut p = q.client().pipeline();
                let gets: Vec<_> = (0..EACH).map(|_| p.add(q.get_cmd())).collect();
                p.add(tally.fetch_add_cmd(1));
                let replies = p.execute()?;
                let got = gets
                    .into_iter()
                    .map(|h| replies.get(h))
                    .collect::<agora::Result<Vec<u64>>>()?;
                assert!(
                    got.windows(2).all(|w| w[0] < w[1]),
                    "a connection's getters were served out of order"
                );
                out.extend(&got)
            })
            .expect("fork a getter process")
        })
        .collect();
    wait_count(&parked, PROCS);
    // Every get is parked now: nothing has been put yet.
    let threads = proc_status(manager.pid(), "Threads").unwrap_or(0);
    let rss = proc_status(manager.pid(), "VmRSS").unwrap_or(0);
    eprintln!(
        "10,000 parked getters: manager threads {threads_before} -> {threads}, \
         RSS {rss_before} kB -> {rss} kB"
    );
    assert!(
        threads <= threads_before + 4,
        "the manager grew from {threads_before} to {threads} threads for parked waiters"
    );
    // About a kilobyte per waiter is expected; 64 MiB would mean something is wrong.
    assert!(
        rss.saturating_sub(rss_before) < 64 * 1024,
        "10,000 waiters cost {} kB",
        rss - rss_before
    );
    assert_eq!(q.qsize().unwrap(), 0);
    q.put_many(0..PROCS * EACH).unwrap();
    for mut w in workers {
        join_ok(&mut w, "a getter process");
    }
    let mut all = Vec::new();
    for w in 0..PROCS {
        let got = manager
            .list_named::<u64>(&format!("got-{w}"))
            .unwrap()
            .copy()
            .unwrap();
        assert_eq!(got.len() as u64, EACH);
        all.extend(got);
    }
    all.sort_unstable();
    assert_eq!(all, (0..PROCS * EACH).collect::<Vec<_>>());
    assert_eq!(q.qsize().unwrap(), 0);
}

/// Consumers SIGKILLed while parked in `get` and `get_many` lose no item: a consumer parked
/// behind them gets the first item, and the rest stay in the queue.
#[test]
fn consumers_killed_while_parked_lose_no_item() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let q = manager.queue::<u64>(0).unwrap();
    let parked = manager.value(&0u64).unwrap();
    let results = manager.dict::<String, Vec<u64>>().unwrap();
    let mut victims = Vec::new();
    for i in 0..2u64 {
        let (q, tally) = (q.clone(), parked.clone());
        victims.push(
            Process::spawn(move || {
                let mut p = q.client().pipeline();
                if i == 0 {
                    p.add(q.get_cmd());
                } else {
                    p.add(q.get_many_cmd(5));
                }
                p.add(tally.fetch_add_cmd(1));
                let _ = p.execute();
                // Never reached: killed while parked.
                std::process::exit(3);
            })
            .unwrap(),
        );
        wait_count(&parked, i + 1);
    }
    let (q2, parked2, results2) = (q.clone(), parked.clone(), results.clone());
    let mut survivor = Process::spawn_fallible(move || -> agora::Result<()> {
        let mut p = q2.client().pipeline();
        let got = p.add(q2.get_many_cmd(5));
        p.add(parked2.fetch_add_cmd(1));
        let got = p.execute()?.get(got)?;
        results2.set("survivor", &got)
    })
    .unwrap();
    wait_count(&parked, 3);
    for v in &mut victims {
        kill(v);
    }
    q.put(&0).unwrap();
    join_ok(&mut survivor, "the consumer parked behind the killed ones");
    assert_eq!(results.get("survivor").unwrap(), Some(vec![0]));
    q.put_many(1..100u64).unwrap();
    assert_eq!(
        q.try_get_many(1000).unwrap(),
        Some((1..100).collect::<Vec<_>>())
    );
}

/// The tutorials' JoinableQueue program: consumers mark each job done, producers `join` until
/// every job is done, then the queue is closed and the consumers' loops end.
#[test]
fn joinable_queue_tutorial_program_ends() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let jobs = manager.joinable_queue::<u64>(8).unwrap();
    let results = manager.list::<(u64, u64)>().unwrap();
    let consumers: Vec<Process> = (0..3)
        .map(|_| {
            let (jobs, results) = (jobs.clone(), results.clone());
            Process::spawn_fallible(move || -> agora::Result<()> {
                for job in jobs.iter() {
                    let job = job?;
                    results.append(&(job, job * job))?;
                    jobs.task_done()?;
                }
                Ok(())
            })
            .unwrap()
        })
        .collect();
    let producers: Vec<Process> = (0..2u64)
        .map(|p| {
            let jobs = jobs.clone();
            Process::spawn_fallible(move || -> agora::Result<()> {
                for i in 0..150 {
                    jobs.put(&(p * 1000 + i))?;
                }
                jobs.put_many((150..200).map(|i| p * 1000 + i))?;
                jobs.join()
            })
            .unwrap()
        })
        .collect();
    for mut p in producers {
        join_ok(&mut p, "a producer");
    }
    // join returned in every producer: every job is done, so every result is there.
    let done: BTreeMap<u64, u64> = results.copy().unwrap().into_iter().collect();
    assert_eq!(done.len(), 400);
    assert!(done.iter().all(|(j, sq)| j * j == *sq));
    assert_eq!(jobs.join_timeout(Duration::ZERO).unwrap(), Some(()));
    jobs.close().unwrap();
    for mut c in consumers {
        join_ok(&mut c, "a consumer");
    }
    let err = jobs.task_done().unwrap_err();
    assert!(err.is(ErrorName::ValueError), "{err}");
}

/// Consumers of a joinable queue SIGKILLed at random points (while parked, between a get and
/// its `task_done`, while processing) and replaced: the items they took and had not marked done
/// come back, so `join` returns, every item is processed at least once, and an item is
/// processed more than once only when a killed consumer processed it.
#[test]
fn killed_consumers_items_are_redelivered_and_join_returns() {
    const ITEMS: u64 = 400;
    const CONSUMERS: usize = 3;
    const KILLS: usize = 10;
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let jobs = manager.joinable_queue::<u64>(0).unwrap();
    // (consumer number, item), appended as each item is processed.
    let processed = manager.list::<(u64, u64)>().unwrap();
    jobs.put_many(0..ITEMS).unwrap();
    let consumer = |n: u64| {
        let (jobs, processed) = (jobs.clone(), processed.clone());
        Process::spawn_fallible(move || -> agora::Result<()> {
            for job in jobs.iter() {
                let job = job?;
                processed.append(&(n, job))?;
                std::thread::sleep(Duration::from_millis(1));
                jobs.task_done()?;
            }
            Ok(())
        })
        .unwrap()
    };
    let seed = common::mono_ns() | 1;
    let mut rng = Rng(seed);
    let mut running: Vec<(u64, Process)> =
        (0..CONSUMERS as u64).map(|n| (n, consumer(n))).collect();
    let mut killed = std::collections::BTreeSet::new();
    for next in (CONSUMERS..CONSUMERS + KILLS).map(|n| n as u64) {
        std::thread::sleep(Duration::from_micros(rng.below(15_000)));
        let at = rng.below(running.len() as u64) as usize;
        let (n, mut victim) = running.swap_remove(at);
        kill(&mut victim);
        killed.insert(n);
        running.push((next, consumer(next)));
    }
    assert_eq!(
        jobs.join_timeout(Duration::from_secs(60)).unwrap(),
        Some(()),
        "join returns once the killed consumers' items are processed (seed {seed})"
    );
    jobs.close().unwrap();
    for (_, mut c) in running {
        join_ok(&mut c, "a consumer");
    }
    let mut by_item: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (n, item) in processed.copy().unwrap() {
        by_item.entry(item).or_default().push(n);
    }
    assert_eq!(
        by_item.keys().copied().collect::<Vec<_>>(),
        (0..ITEMS).collect::<Vec<_>>(),
        "every item processed at least once (seed {seed})"
    );
    let again = by_item.values().filter(|by| by.len() > 1).count();
    eprintln!("{again} of {ITEMS} items processed more than once after {KILLS} kills");
    for (item, by) in &by_item {
        let by_killed = by.iter().filter(|n| killed.contains(n)).count();
        assert!(
            by_killed + 1 >= by.len(),
            "item {item} processed by {by:?}, of which only {killed:?} were killed (seed {seed})"
        );
    }
    assert_eq!(jobs.qsize().unwrap(), 0);
}

/// A consumer SIGKILLed after `get_acked` and before `ack`: its item comes back at the head
/// of the queue; an acknowledged item and a plain `get` do not.
#[test]
fn unacknowledged_items_of_a_killed_consumer_come_back() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let q = manager.queue::<u64>(0).unwrap();
    let took = manager.value(&0u64).unwrap();
    q.put_many(1..=4u64).unwrap();
    let (q2, took2) = (q.clone(), took.clone());
    let mut victim = Process::spawn_fallible(move || -> agora::Result<()> {
        let first = q2.get_acked()?;
        q2.ack(first.receipt)?;
        let _unacked = q2.get_many_acked(1)?;
        let _plain = q2.get()?;
        took2.fetch_add(1)?;
        std::thread::sleep(Duration::from_secs(60));
        Ok(())
    })
    .unwrap();
    wait_count(&took, 1);
    kill(&mut victim);
    assert!(wait_until(Duration::from_secs(5), || q.qsize().unwrap() == 2));
    let again = q.get_acked().unwrap();
    assert_eq!(again.item, 2, "the unacknowledged item, at the head");
    q.nack(again.receipt).unwrap();
    assert_eq!(q.get().unwrap(), 2);
    assert_eq!(q.get().unwrap(), 4, "3 was a plain get: at-most-once");
    let err = q.ack(again.receipt).unwrap_err();
    assert!(err.is(ErrorName::ValueError), "{err}");
}

/// Manager bug (manager/src/objects/queue.rs, `Queue::put`): a `put_many` whose first items
/// are handed at once to parked getters, freeing room, parks the rest without pumping again,
/// so they wait although there is room and getters wait for them. Ignored until the manager
/// is fixed: run with `--ignored`.
#[test]
fn put_many_keeps_feeding_parked_getters() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn the manager");
    let q = manager.queue::<u64>(1).unwrap();
    let parked = manager.value(&0u64).unwrap();
    let mut getters = Vec::new();
    for i in 0..2u64 {
        let (q, tally) = (q.clone(), parked.clone());
        getters.push(
            Process::spawn_fallible(move || -> agora::Result<()> {
                let mut p = q.client().pipeline();
                let got = p.add(q.get_timeout_cmd(Duration::from_secs(5)));
                p.add(tally.fetch_add_cmd(1));
                assert_eq!(p.execute()?.get(got)?, Some(i), "getter {i}");
                Ok(())
            })
            .unwrap(),
        );
        wait_count(&parked, i + 1);
    }
    // Room for one item, two getters waiting: both items must reach them.
    let put = q
        .put_many_timeout([0u64, 1], Duration::from_secs(2))
        .unwrap();
    assert_eq!(
        put,
        Some(2),
        "the second item waited with room in the queue"
    );
    for g in &mut getters {
        join_ok(g, "a getter");
    }
    assert!(wait_until(Duration::from_secs(1), || q.is_empty().unwrap()));
}

/// A plain queue counts `task_done` and answers `join` as Python's manager `Queue()` does, and
/// keeps its gets at-most-once.
#[test]
fn a_plain_queue_has_task_done_and_join() {
    let _serial = serial();
    let manager = agora::Manager::spawn().expect("spawn the manager");
    let q = manager.queue::<u64>(0).unwrap();
    q.put_many(0..3u64).unwrap();
    assert_eq!(q.join_timeout(Duration::from_millis(10)).unwrap(), None);
    for _ in 0..3 {
        q.get().unwrap();
        q.task_done().unwrap();
    }
    q.join().unwrap();
    let err = q.task_done().unwrap_err();
    assert!(err.is(ErrorName::ValueError), "{err}");
}
