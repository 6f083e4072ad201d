//! Queues and joinable queues served by two managers on one etcd.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use agora_client::ErrorName;

use crate::harness::{available, fresh_prefix, two, Etcd, Manager};

#[test]
fn items_put_alternately_through_two_managers_come_out_in_order() {
    let Some((_etcd, a, b)) = two("queue-fifo", &[]) else {
        return;
    };
    let (ca, cb) = (a.client(), b.client());
    let qa = ca.queue_named::<i64>("jobs", 0).unwrap();
    let qb = cb.queue_named::<i64>("jobs", 0).unwrap();
    for i in 0..20 {
        if i % 2 == 0 { &qa } else { &qb }.put(&i).unwrap();
    }
    qa.put_many([20, 21, 22]).unwrap();
    qb.put(&23).unwrap();
    assert_eq!(qb.qsize().unwrap(), 24);
    let mut got = Vec::new();
    for i in 0..24 {
        got.push(if i % 3 == 0 { &qb } else { &qa }.get().unwrap());
    }
    assert_eq!(got, (0..24).collect::<Vec<_>>());
    assert!(qa.is_empty().unwrap());
    qa.put_many([1, 2, 3, 4, 5]).unwrap();
    assert_eq!(qb.get_many(3).unwrap(), vec![1, 2, 3]);
    assert_eq!(qa.get_many(10).unwrap(), vec![4, 5]);
}

#[test]
fn put_many_and_get_many_of_more_items_than_one_etcd_transaction_holds() {
    let Some((_etcd, a, b)) = two("queue-big-batches", &[]) else {
        return;
    };
    let qa = a.client().queue_named::<i64>("big", 0).unwrap();
    let qb = b.client().queue_named::<i64>("big", 0).unwrap();
    assert_eq!(qa.put_many(0..300).unwrap(), 300);
    let mut got = Vec::new();
    while let Some(batch) = qb.try_get_many(1000).unwrap() {
        assert!(!batch.is_empty());
        got.extend(batch);
    }
    assert_eq!(got, (0..300).collect::<Vec<_>>());
}

#[test]
fn a_get_waiting_through_one_manager_is_woken_by_a_put_through_the_other() {
    let Some((_etcd, a, b)) = two("queue-wake", &[]) else {
        return;
    };
    let qa = a.client().queue_named::<String>("q", 0).unwrap();
    let cb = b.client();
    let waiter = std::thread::spawn(move || {
        let qb = cb.queue_named::<String>("q", 0).unwrap();
        let got = qb.get().unwrap();
        (got, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(500));
    let put_at = Instant::now();
    qa.put(&"hello".to_owned()).unwrap();
    let (got, woke_at) = waiter.join().unwrap();
    assert_eq!(got, "hello");
    let latency = woke_at.saturating_duration_since(put_at);
    assert!(
        latency < Duration::from_millis(500),
        "woken after {latency:?}"
    );
}

#[test]
fn a_get_times_out_empty_and_a_closed_queue_refuses() {
    let Some((_etcd, a, b)) = two("queue-timeout", &[]) else {
        return;
    };
    let qa = a.client().queue_named::<i64>("q", 0).unwrap();
    let qb = b.client().queue_named::<i64>("q", 0).unwrap();
    let started = Instant::now();
    assert_eq!(qb.get_timeout(Duration::from_millis(300)).unwrap(), None);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(qb.try_get().unwrap(), None);
    qa.put(&7).unwrap();
    qa.close().unwrap();
    assert!(qb.is_closed().unwrap());
    let refused = qb.put(&8).unwrap_err();
    assert!(refused.is(ErrorName::Closed), "{refused}");
    assert_eq!(qb.get().unwrap(), 7);
    let drained = qb.get().unwrap_err();
    assert!(drained.is(ErrorName::Closed), "{drained}");
}

#[test]
fn a_full_queue_blocks_puts_through_the_other_manager_until_a_get() {
    let Some((_etcd, a, b)) = two("queue-maxsize", &[]) else {
        return;
    };
    let qa = a.client().queue_named::<i64>("bounded", 2).unwrap();
    let cb = b.client();
    qa.put_many([1, 2]).unwrap();
    assert!(qa.is_full().unwrap());
    let qb = cb.queue_named::<i64>("bounded", 2).unwrap();
    assert_eq!(qb.maxsize().unwrap(), 2);
    assert_eq!(qb.try_put(&3).unwrap(), None);
    assert_eq!(
        qb.put_timeout(&3, Duration::from_millis(200)).unwrap(),
        None
    );
    let putter = std::thread::spawn(move || {
        qb.put(&3).unwrap();
        Instant::now()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(!putter.is_finished(), "a put on a full queue went through");
    let got_at = Instant::now();
    assert_eq!(qa.get().unwrap(), 1);
    let put_at = putter.join().unwrap();
    assert!(put_at.saturating_duration_since(got_at) < Duration::from_millis(500));
    assert_eq!(qa.get_many(5).unwrap(), vec![2, 3]);
}

#[test]
fn many_producers_and_consumers_through_both_managers_lose_and_duplicate_nothing() {
    let Some((_etcd, a, b)) = two("queue-stress", &[]) else {
        return;
    };
    const PRODUCERS: i64 = 4;
    const EACH: i64 = 50;
    let managers = [&a, &b];
    let consumers: Vec<_> = (0..4)
        .map(|i| {
            let client = managers[i % 2].client();
            std::thread::spawn(move || {
                let q = client.queue_named::<i64>("work", 8).unwrap();
                let mut got = Vec::new();
                while let Some(item) = q.get_timeout(Duration::from_secs(3)).unwrap() {
                    got.push(item);
                }
                got
            })
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let client = managers[(p % 2) as usize].client();
            std::thread::spawn(move || {
                let q = client.queue_named::<i64>("work", 8).unwrap();
                for i in 0..EACH {
                    q.put(&(p * 1000 + i)).unwrap();
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let mut all = Vec::new();
    for c in consumers {
        all.extend(c.join().unwrap());
    }
    assert_eq!(
        all.len() as i64,
        PRODUCERS * EACH,
        "lost or duplicated items"
    );
    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "an item was got twice");
    let expected: HashSet<i64> = (0..PRODUCERS)
        .flat_map(|p| (0..EACH).map(move |i| p * 1000 + i))
        .collect();
    assert_eq!(distinct, expected);
}

#[test]
fn join_through_one_manager_waits_for_task_done_through_the_other() {
    let Some((_etcd, a, b)) = two("queue-join", &[]) else {
        return;
    };
    let qa = a.client().joinable_queue_named::<i64>("tasks", 0).unwrap();
    let cb = b.client();
    qa.put_many([1, 2]).unwrap();
    assert_eq!(qa.join_timeout(Duration::from_millis(200)).unwrap(), None);
    let worker = std::thread::spawn(move || {
        let qb = cb.joinable_queue_named::<i64>("tasks", 0).unwrap();
        for _ in 0..2 {
            qb.get().unwrap();
            std::thread::sleep(Duration::from_millis(200));
            qb.task_done().unwrap();
        }
        let extra = qb.task_done().unwrap_err();
        assert!(extra.is(ErrorName::ValueError), "{extra}");
    });
    let started = Instant::now();
    qa.join().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    worker.join().unwrap();
    assert_eq!(qa.join_timeout(Duration::ZERO).unwrap(), Some(()));
}

#[test]
fn acknowledged_items_are_settled_through_either_manager() {
    let Some((_etcd, a, b)) = two("queue-acked", &[]) else {
        return;
    };
    let qa = a.client().queue_named::<i64>("q", 0).unwrap();
    let qb = b.client().queue_named::<i64>("q", 0).unwrap();
    qa.put_many([1, 2, 3]).unwrap();
    let first = qb.get_acked().unwrap();
    assert_eq!(first.item, 1);
    qb.ack(first.receipt).unwrap();
    let again = qb.ack(first.receipt).unwrap_err();
    assert!(again.is(ErrorName::ValueError), "{again}");
    let many = qa.get_many_acked(5).unwrap();
    assert_eq!(many.iter().map(|a| a.item).collect::<Vec<_>>(), vec![2, 3]);
    qa.nack(many[0].receipt).unwrap();
    qa.ack(many[1].receipt).unwrap();
    assert_eq!(
        qb.get().unwrap(),
        2,
        "a nacked item goes back into the queue"
    );
    assert_eq!(qb.try_get().unwrap(), None);
}

#[test]
fn items_a_closed_connection_had_not_acknowledged_go_to_the_next_getter_first() {
    if !available() {
        return;
    }
    let etcd = Etcd::start();
    let store = etcd.store(&fresh_prefix("queue-redeliver"));
    let a = Manager::start(&store, &[]);
    let mut b = Manager::start(&store, &["--store-lease-seconds", "2"]);
    let qa = a.client().queue_named::<i64>("q", 0).unwrap();
    let got_acked_and_closed = |m: &Manager| {
        let cb = m.client();
        let qb = cb.queue_named::<i64>("q", 0).unwrap();
        qb.get_acked().unwrap().item
    };
    // A getter waiting on the empty queue is woken when the item comes back.
    qa.put(&1).unwrap();
    assert_eq!(got_acked_and_closed(&b), 1);
    assert_eq!(qa.get_timeout(Duration::from_secs(5)).unwrap(), Some(1));
    // A redelivered item goes before the items behind it.
    qa.put_many([2, 3]).unwrap();
    assert_eq!(got_acked_and_closed(&b), 2);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(qa.get_many(5).unwrap(), vec![2]);
    assert_eq!(qa.get().unwrap(), 3);
    // A manager that dies takes its connections' holdings with its lease.
    let cb = b.client();
    let qb = cb.queue_named::<i64>("q", 0).unwrap();
    qa.put(&4).unwrap();
    assert_eq!(qb.get_acked().unwrap().item, 4);
    b.kill();
    let started = Instant::now();
    assert_eq!(qa.get_timeout(Duration::from_secs(10)).unwrap(), Some(4));
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!(qa.try_get().unwrap(), None);
}

#[test]
fn joinable_items_a_closed_connection_had_not_marked_done_are_got_again() {
    let Some((_etcd, a, b)) = two("queue-joinable-redeliver", &[]) else {
        return;
    };
    let qa = a.client().joinable_queue_named::<i64>("tasks", 0).unwrap();
    qa.put_many([1, 2]).unwrap();
    {
        let cb = b.client();
        let qb = cb.joinable_queue_named::<i64>("tasks", 0).unwrap();
        assert_eq!(qb.get().unwrap(), 1);
        assert_eq!(qb.get().unwrap(), 2);
        qb.task_done().unwrap();
    } // Item 1 was marked done; item 2 was not when the connection closed.
    assert_eq!(qa.get_timeout(Duration::from_secs(5)).unwrap(), Some(2));
    assert_eq!(qa.join_timeout(Duration::from_millis(100)).unwrap(), None);
    qa.task_done().unwrap();
    assert_eq!(qa.join_timeout(Duration::from_secs(2)).unwrap(), Some(()));
    assert_eq!(qa.try_get().unwrap(), None);
}

#[test]
fn getters_waiting_through_both_managers_are_served_in_the_order_they_came() {
    let Some((_etcd, a, b)) = two("queue-waiting-line", &[]) else {
        return;
    };
    let managers = [&a, &b];
    let qa = a.client().queue_named::<i64>("line", 0).unwrap();
    let getters: Vec<_> = (0..4)
        .map(|i| {
            let client = managers[i % 2].client();
            let getter = std::thread::spawn(move || {
                let q = client.queue_named::<i64>("line", 0).unwrap();
                q.get_timeout(Duration::from_secs(10)).unwrap()
            });
            // Each getter is in line before the next comes.
            std::thread::sleep(Duration::from_millis(300));
            getter
        })
        .collect();
    for item in 0..4 {
        qa.put(&item).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let got: Vec<Option<i64>> = getters.into_iter().map(|g| g.join().unwrap()).collect();
    assert_eq!(got, vec![Some(0), Some(1), Some(2), Some(3)]);
}
