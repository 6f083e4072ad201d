//! Many threads sharing one client (one connection): whatever mix of calls they make, every
//! reply reaches the thread that made the call, and none is lost.
//!
//! The threads make quick calls checked by value, pipelines of random length, queue gets the
//! manager parks (up to a few milliseconds), and lock acquires whose releases are sent without
//! waiting, all with a deadline on every call (far off: it must not fire, but every waiting
//! thread sleeps with a timeout). Whichever thread reads the socket at a given moment (a quick
//! call, a pipeline, a parked get) files the others' replies.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use agora::{Client, ConnectOptions, Manager};

/// A random number below `n`, different on every call and every run.
fn random_below(n: u64) -> u64 {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let draw = DRAWS.fetch_add(1, Ordering::Relaxed);
    std::collections::hash_map::RandomState::new().hash_one(draw) % n
}

const THREADS: u64 = 40;
const STEPS: u64 = 120;

/// What one thread put into the queue and got from it.
#[derive(Default)]
struct QueueLog {
    put: Vec<u64>,
    got: Vec<u64>,
}

/// One thread's random calls; every reply is checked against what this thread sent.
fn calls(client: &Client, thread: u64, log: &Mutex<QueueLog>) {
    let dict = client.dict_named::<String, u64>("values").expect("dict");
    let queue = client.queue_named::<u64>("items", 0).expect("queue");
    let lock = client.lock_named("lock").expect("lock");
    for step in 0..STEPS {
        let value = thread * 1_000_000 + step;
        match random_below(5) {
            0 => {
                let key = format!("{thread}/{step}");
                dict.set(&key, &value).expect("set");
                assert_eq!(dict.get(&key).expect("get"), Some(value), "{key}");
            }
            1 => {
                let n = 1 + random_below(60);
                let mut p = client.pipeline();
                let handles: Vec<_> = (0..n)
                    .map(|i| {
                        let key = format!("{thread}/{step}/{i}");
                        p.add(dict.set_cmd(&key, &(value + i)));
                        p.add(dict.get_cmd(&key))
                    })
                    .collect();
                let replies = p.execute().expect("pipeline");
                for (i, handle) in (0..).zip(handles) {
                    assert_eq!(replies.get(handle).expect("reply"), Some(value + i));
                }
            }
            2 => {
                queue.put(&value).expect("put");
                log.lock().unwrap().put.push(value);
            }
            3 => {
                let wait = Duration::from_millis(random_below(4));
                if let Some(item) = queue.get_timeout(wait).expect("get") {
                    log.lock().unwrap().got.push(item);
                }
            }
            _ => {
                let guard = lock.acquire().expect("acquire");
                let key = format!("locked/{thread}");
                dict.set(&key, &value).expect("set under the lock");
                assert_eq!(dict.get(&key).expect("get"), Some(value));
                // Released by a request nobody waits for: its reply is read by a later call.
                drop(guard);
            }
        }
    }
}

#[test]
fn every_reply_reaches_its_caller_among_many_threads() {
    let manager = Manager::spawn().expect("spawn");
    let options = ConnectOptions::default().call_timeout(Some(Duration::from_secs(120)));
    let client =
        Client::connect_with(manager.address(), manager.authkey(), &options).expect("connect");
    let log = Mutex::new(QueueLog::default());
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let (client, log) = (&client, &log);
            s.spawn(move || calls(client, thread, log));
        }
    });
    // Every item put was got exactly once, or is still in the queue.
    let queue = client.queue_named::<u64>("items", 0).expect("queue");
    let mut log = log.into_inner().unwrap();
    while let Some(item) = queue.get_timeout(Duration::ZERO).expect("drain") {
        log.got.push(item);
    }
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for item in &log.got {
        *seen.entry(*item).or_default() += 1;
    }
    for item in &log.put {
        assert_eq!(seen.remove(item), Some(1), "item {item} got once");
    }
    assert!(seen.is_empty(), "items got that nobody put: {seen:?}");
    // The lock is free: every detached release arrived.
    let lock = client.lock_named("lock").expect("lock");
    let guard = lock
        .acquire_timeout(Duration::from_secs(10))
        .expect("acquire");
    assert!(guard.is_some(), "the lock was left held");
}
