//! The async client (`agora::aio`): the typed surface on one multiplexed connection, calls that
//! park only their task, cancellation that leaves nothing behind on the manager, guards, and
//! reconnection.
//!
//! Each test starts its manager by executing this test binary again (the `manager_role` test
//! below), since other tests of the binary run tokio runtimes, whose signal handling a forked
//! manager cannot live with; then it runs its tasks on a multi-thread runtime.

mod common;

#[path = "../examples/async_producer_consumer.rs"]
#[allow(dead_code)]
mod async_producer_consumer;
#[path = "../examples/tokio_server.rs"]
#[allow(dead_code)]
mod tokio_server;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agora::aio::AsyncClient;
use agora::{ErrorName, Manager};
use common::{serial, Rng};

/// Where a manager started by [`spawn`] runs; returns at once in a plain test run.
#[test]
fn manager_role() {
    agora::run_manager_if_requested();
}

/// A manager, executed as this binary's `manager_role` test.
fn spawn() -> Manager {
    Manager::builder()
        .exec(
            None::<std::path::PathBuf>,
            ["--exact", "manager_role", "--nocapture"],
        )
        .spawn()
        .expect("spawn the manager")
}

/// Runs `test` with an async client of a fresh manager.
fn with_client<F, Fut>(test: F)
where
    F: FnOnce(AsyncClient) -> Fut,
    Fut: Future<Output = ()>,
{
    with_manager(|_| (), |client, ()| test(client));
}

/// Runs `before` with a fresh manager (before any runtime starts: it may fork workers), then
/// `test` with an async client of it and what `before` made.
fn with_manager<B, F, Fut, T>(before: B, test: F)
where
    B: FnOnce(&Manager) -> T,
    F: FnOnce(AsyncClient, T) -> Fut,
    Fut: Future<Output = ()>,
{
    let manager = spawn();
    let made = before(&manager);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let client = AsyncClient::from_client(manager.client().clone())
            .await
            .expect("an async client");
        test(client, made).await;
    });
}

#[test]
fn every_kind_works_through_the_shared_commands() {
    let _serial = serial();
    with_client(|client| async move {
        let d = client
            .object(|c| c.dict_named::<String, i64>("scores"))
            .await
            .unwrap();
        d.set("alice", &3).await.unwrap();
        assert_eq!(d.get("alice").await.unwrap(), Some(3));
        assert_eq!(d.get("bob").await.unwrap(), None);
        assert!(d.getitem("bob").await.unwrap_err().is(ErrorName::KeyError));
        assert_eq!(d.len().await.unwrap(), 1);

        let l = client.object(|c| c.list::<i64>()).await.unwrap();
        l.extend([3, 1, 2]).await.unwrap();
        l.sort().await.unwrap();
        assert_eq!(l.copy().await.unwrap(), vec![1, 2, 3]);

        let v = client.object(|c| c.value(&10i64)).await.unwrap();
        assert_eq!(v.fetch_add(5).await.unwrap(), 10);
        assert_eq!(v.get().await.unwrap(), 15);

        let s = client.object(|c| c.set::<i64>()).await.unwrap();
        s.add(&1).await.unwrap();
        assert!(s.contains(&1).await.unwrap());

        let e = client.object(|c| c.event()).await.unwrap();
        assert_eq!(
            e.wait_timeout(Duration::from_millis(20)).await.unwrap(),
            None
        );
        e.set().await.unwrap();
        e.wait().await.unwrap();

        // A proxy stored in a dict comes back as a proxy, usable from either client.
        let nested = client
            .object(|c| c.dict::<String, agora::List<i64>>())
            .await
            .unwrap();
        nested.set("l", l.proxy()).await.unwrap();
        let back = nested.get("l").await.unwrap().expect("the stored list");
        assert_eq!(client.wrap(back).len().await.unwrap(), 3);

        // Pipelines: one write, typed handles.
        let mut p = client.pipeline();
        for i in 0..100 {
            p.add(l.proxy().append_cmd(&i));
        }
        let len = p.add(l.proxy().len_cmd());
        let replies = p.execute().await.unwrap();
        replies.check().unwrap();
        assert_eq!(replies.get(len).unwrap(), 103);
    });
}

#[test]
fn a_lock_guard_releases_on_drop_and_on_unlock() {
    let _serial = serial();
    with_client(|client| async move {
        let lock = client.object(|c| c.lock()).await.unwrap();
        let g = lock.lock().await.unwrap();
        assert!(!g.is_owner_dead());
        assert!(lock.try_lock().await.unwrap().is_none());
        drop(g);
        // The detached release is written before the next call on the connection.
        assert!(!lock.is_locked().await.unwrap());
        lock.lock().await.unwrap().unlock().await.unwrap();
        assert!(!lock.is_locked().await.unwrap());

        // An owned guard moves into another task.
        let lock = Arc::new(lock);
        let g = lock.clone().lock_owned().await.unwrap();
        tokio::spawn(async move { g.unlock().await })
            .await
            .unwrap()
            .unwrap();
        assert!(!lock.is_locked().await.unwrap());

        let sem = client.object(|c| c.semaphore(2)).await.unwrap();
        let (a, b) = (sem.acquire().await.unwrap(), sem.acquire().await.unwrap());
        assert!(sem.try_acquire().await.unwrap().is_none());
        drop(a);
        b.unlock().await.unwrap();
        assert_eq!(sem.get_value().await.unwrap(), 2);
    });
}

/// The manager answers a cancelled parked call; the give-back path runs when the grant had
/// already come. Both ways, nothing is held afterwards.
#[test]
fn a_cancelled_acquire_holds_nothing_whether_or_not_it_was_granted() {
    let _serial = serial();
    with_client(|client| async move {
        let lock = client.object(|c| c.lock()).await.unwrap();
        // Cancelled while parked: the holder's release goes to nobody.
        let blocking_lock = lock.proxy().clone();
        let guard = tokio::task::spawn_blocking(move || blocking_lock.acquire_raw(true, None))
            .await
            .unwrap()
            .unwrap();
        assert!(guard.is_acquired());
        let waited = tokio::time::timeout(Duration::from_millis(50), lock.lock()).await;
        assert!(waited.is_err(), "the lock is held: the acquire waits");
        // A call on the same connection is answered after the manager has read the cancel,
        // which the dropped future sent first: the release below, made on another
        // connection, then finds no waiter. (Without it the release may come first and
        // grant the lock to the cancelled call, which gives it back a moment later; the
        // racing case below covers that.)
        assert!(lock.is_locked().await.unwrap());
        let releaser = lock.proxy().clone();
        tokio::task::spawn_blocking(move || releaser.release())
            .await
            .unwrap()
            .unwrap();
        assert!(
            !lock.is_locked().await.unwrap(),
            "the cancelled waiter got nothing"
        );

        // Racing the grant: many acquires dropped at random moments around releases.
        let mut rng = Rng(7);
        for _ in 0..200 {
            let g = lock.lock().await.unwrap();
            let waiter = lock.lock();
            let wait = Duration::from_micros(rng.below(300));
            let hold = Duration::from_micros(rng.below(300));
            let release = async move {
                tokio::time::sleep(hold).await;
                drop(g);
            };
            let (got, ()) = tokio::join!(tokio::time::timeout(wait, waiter), release);
            drop(got);
        }
        assert!(unlocked_soon(&lock).await);
    });
}

/// True once `lock` is free, within a few seconds: a grant that reached a dropped acquire is
/// released when its reply is read.
async fn unlocked_soon(lock: &agora::aio::Lock) -> bool {
    for _ in 0..500 {
        if !lock.is_locked().await.unwrap() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[test]
fn a_cancelled_get_takes_no_item() {
    let _serial = serial();
    with_client(|client| async move {
        let q = client.object(|c| c.queue::<u64>(0)).await.unwrap();
        let jq = client.object(|c| c.joinable_queue::<u64>(0)).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(30), q.get())
            .await
            .is_err());
        assert!(tokio::time::timeout(Duration::from_millis(30), jq.get())
            .await
            .is_err());
        q.put(&1).await.unwrap();
        jq.put(&1).await.unwrap();
        assert_eq!(q.get().await.unwrap(), 1);
        assert_eq!(jq.get().await.unwrap(), 1);
        jq.task_done().await.unwrap();
        assert_eq!(q.qsize().await.unwrap(), 0);

        // Gets dropped at random around puts: every item is got once or still queued.
        let mut rng = Rng(11);
        let mut got = Vec::new();
        for i in 0..300u64 {
            let getter = q.get();
            let put = q.put(&i);
            let wait = Duration::from_micros(rng.below(500));
            let (r, p) = tokio::join!(tokio::time::timeout(wait, getter), put);
            p.unwrap();
            if let Ok(item) = r {
                got.push(item.unwrap());
            }
        }
        while let Some(item) = q.get_timeout(Duration::from_millis(50)).await.unwrap() {
            got.push(item);
        }
        got.sort_unstable();
        assert_eq!(got, (0..300).collect::<Vec<_>>());
    });
}

/// Items that are proxies take one more step after their reply (the blocking client takes
/// over their objects): a get dropped there gives its item back all the same.
#[test]
fn a_cancelled_get_of_a_proxy_item_takes_no_item() {
    let _serial = serial();
    with_client(|client| async move {
        let q = client
            .object(|c| c.queue::<agora::List<i64>>(0))
            .await
            .unwrap();
        let mut rng = Rng(5);
        let mut put = Vec::new();
        let mut got = Vec::new();
        for i in 0..60 {
            let list = client.object(|c| c.list::<i64>()).await.unwrap();
            list.append(&i).await.unwrap();
            put.push(list.proxy().id());
            q.put(list.proxy()).await.unwrap();
            let wait = Duration::from_micros(rng.below(2_000));
            if let Ok(item) = tokio::time::timeout(wait, q.get()).await {
                got.push(item.unwrap().id());
            }
        }
        while let Some(item) = q.get_timeout(Duration::from_millis(50)).await.unwrap() {
            got.push(item.id());
        }
        got.sort_unstable();
        put.sort_unstable();
        assert_eq!(got, put, "every item got once or still queued");
    });
}

/// A thousand tasks on one connection take and give back a lock, a semaphore's permits and a
/// queue's items, each call in a timeout that cancels at random. Afterwards no lock or permit
/// is held, every item put was got once or is still in the queue, and every task ended.
#[test]
fn cancellation_soak() {
    let _serial = serial();
    with_client(|client| async move {
        let lock = Arc::new(client.object(|c| c.lock()).await.unwrap());
        let sem = Arc::new(client.object(|c| c.semaphore(3)).await.unwrap());
        let q = Arc::new(client.object(|c| c.queue::<u64>(0)).await.unwrap());
        let inside = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..1000u64 {
            let (lock, sem, q, inside) = (lock.clone(), sem.clone(), q.clone(), inside.clone());
            tasks.spawn(async move {
                let mut rng = Rng(t + 1);
                let mut put = Vec::new();
                let mut got = Vec::new();
                for round in 0..4u64 {
                    let limit = Duration::from_micros(rng.below(3000));
                    match rng.below(3) {
                        0 => {
                            if let Ok(g) = tokio::time::timeout(limit, lock.lock()).await {
                                let g = g.unwrap();
                                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                                tokio::task::yield_now().await;
                                inside.fetch_sub(1, Ordering::SeqCst);
                                drop(g);
                            }
                        }
                        1 => {
                            if let Ok(g) = tokio::time::timeout(limit, sem.acquire()).await {
                                let g = g.unwrap();
                                tokio::task::yield_now().await;
                                if rng.below(2) == 0 {
                                    g.unlock().await.unwrap();
                                }
                            }
                        }
                        _ => {
                            let item = t * 10 + round;
                            q.put(&item).await.unwrap();
                            put.push(item);
                            if let Ok(r) = tokio::time::timeout(limit, q.get()).await {
                                got.push(r.unwrap());
                            }
                        }
                    }
                }
                (put, got)
            });
        }
        let (mut put, mut got) = (Vec::new(), Vec::new());
        let mut ended = 0;
        while let Some(done) = tasks.join_next().await {
            let (p, g) = done.expect("a task panicked");
            put.extend(p);
            got.extend(g);
            ended += 1;
        }
        assert_eq!(ended, 1000);
        assert!(unlocked_soon(&lock).await, "a lock is left held");
        // Give-backs go out as their grants' replies are read: a ping's reply comes after.
        client
            .run(agora::Cmd::<String>::typed("ping", &()))
            .await
            .unwrap();
        assert_eq!(sem.get_value().await.unwrap(), 3, "a permit is left held");
        while let Some(item) = q.try_get().await.unwrap() {
            got.push(item);
        }
        put.sort_unstable();
        got.sort_unstable();
        assert_eq!(
            got, put,
            "every item put is got exactly once or still queued"
        );
    });
}

/// While a hundred tasks are parked on a lock and a queue, another task of the same runtime
/// makes calls on the same connection.
#[test]
fn parked_calls_never_block_the_runtime() {
    let _serial = serial();
    with_client(|client| async move {
        let lock = Arc::new(client.object(|c| c.lock()).await.unwrap());
        let q = Arc::new(client.object(|c| c.queue::<u64>(0)).await.unwrap());
        let holder = lock.lock().await.unwrap();
        let mut parked = tokio::task::JoinSet::new();
        for i in 0..100 {
            let (lock, q) = (lock.clone(), q.clone());
            parked.spawn(async move {
                if i % 2 == 0 {
                    lock.lock().await.map(drop)
                } else {
                    q.get().await.map(drop)
                }
            });
        }
        let counter = client.object(|c| c.value(&0u64)).await.unwrap();
        for _ in 0..200 {
            counter.fetch_add(1).await.unwrap();
        }
        assert_eq!(counter.get().await.unwrap(), 200);
        assert_eq!(parked.len(), 100, "the parked tasks are still waiting");
        for i in 0..50 {
            q.put(&i).await.unwrap();
        }
        drop(holder);
        while let Some(done) = parked.join_next().await {
            done.unwrap().unwrap();
        }
        assert!(!lock.is_locked().await.unwrap());
    });
}

#[test]
fn a_condition_waits_and_notifies_between_tasks_and_a_cancelled_wait_gives_up_the_lock() {
    let _serial = serial();
    with_client(|client| async move {
        let cond = Arc::new(client.object(|c| c.condition()).await.unwrap());
        let ready = client.object(|c| c.value(&false)).await.unwrap();
        let waiter = {
            let (cond, ready) = (cond.clone(), ready.clone());
            tokio::spawn(async move {
                let mut g = cond.lock().await?;
                while !ready.get().await? {
                    g.wait().await?;
                }
                g.unlock().await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        {
            let g = cond.lock().await.unwrap();
            ready.set(&true).await.unwrap();
            g.notify_all().await.unwrap();
        }
        waiter.await.unwrap().unwrap();

        // A wait dropped before it is notified gives the lock up, for good.
        let mut g = cond.lock().await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(30), g.wait())
            .await
            .is_err());
        assert!(matches!(g.unlock().await, Err(agora::Error::Usage(_))));
        let again = tokio::time::timeout(Duration::from_secs(5), cond.lock()).await;
        again
            .expect("the lock is free again")
            .unwrap()
            .unlock()
            .await
            .unwrap();
        let mut g = cond.lock().await.unwrap();
        assert_eq!(
            g.wait_timeout(Duration::from_millis(10)).await.unwrap(),
            None
        );
        g.unlock().await.unwrap();
    });
}

/// A holder that dies holding the lock and a permit: the manager releases them, and the async
/// guards that get them next say so, as the blocking ones do.
#[test]
fn async_guards_are_told_when_the_holder_died() {
    let _serial = serial();
    with_manager(
        |manager| {
            let (lock, sem) = (
                manager.lock_named("held").unwrap(),
                manager.bounded_semaphore_named("permits", 1).unwrap(),
            );
            let mut dying = agora::Process::spawn(move || {
                let held = (lock.acquire().unwrap(), sem.acquire().unwrap());
                std::mem::forget(held);
                std::process::exit(0);
            })
            .unwrap();
            assert!(dying.join().unwrap().success());
        },
        |client, ()| async move {
            let lock = client.object(|c| c.lock_named("held")).await.unwrap();
            let g = tokio::time::timeout(Duration::from_secs(10), lock.lock())
                .await
                .expect("released by the manager")
                .unwrap();
            assert!(g.is_owner_dead());
            g.unlock().await.unwrap();
            let sem = client
                .object(|c| c.bounded_semaphore_named("permits", 1))
                .await
                .unwrap();
            let p = sem.acquire().await.unwrap();
            assert!(p.is_owner_dead());
            drop(p);
            assert!(!lock.lock().await.unwrap().is_owner_dead(), "told once");
        },
    );
}

#[test]
fn async_producer_consumer_every_dish_is_eaten_exactly_once() {
    let _serial = serial();
    with_manager(
        |manager| vec![async_producer_consumer::cook_in_a_process(manager, "noodles").unwrap()],
        |client, cooks| async move {
            let meal = async_producer_consumer::run(&client, cooks).await.unwrap();
            meal.check().unwrap();
            assert_eq!(meal.cooked.len(), 12, "three cooks, four dishes each");
        },
    );
}

#[test]
fn tokio_server_handlers_and_workers_share_counter_lock_and_queue() {
    let _serial = serial();
    with_manager(
        |manager| tokio_server::start_workers(manager, 2).unwrap(),
        |client, workers| async move {
            let round = tokio_server::round(&client, 6, 5).await.unwrap();
            tokio::task::spawn_blocking(move || tokio_server::join_workers(workers))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(round.hits, 30);
            assert_eq!(round.done, 30, "every job done once");
            let notes = round
                .log
                .iter()
                .filter(|l| l.starts_with("client "))
                .count();
            let jobs = round
                .log
                .iter()
                .filter(|l| l.starts_with("worker "))
                .count();
            assert_eq!(
                (notes, jobs, round.log.len()),
                (30, 30, 60),
                "{:?}",
                round.log
            );
        },
    );
}
