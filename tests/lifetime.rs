//! Object lifetime with the Rust client against a real manager (`PROTOCOL.md`, 3.2): unnamed
//! objects are freed when the last proxy of them goes, and not before; clones, proxies decoded
//! from replies, references stored in other objects, tokens and forked workers hold them; the
//! holders `objects()` reports are the ones expected.

use std::any::Any;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use agora::{Client, Dict, ErrorName, List, Manager, ObjectInfo, Process};

/// One test at a time: `Process::spawn` exports the objects of every client of this process,
/// which would add handoffs to the holders another test counts.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The entry of `id` in `objects()`, if the object exists.
fn info(client: &Client, id: u64) -> Option<ObjectInfo> {
    client
        .objects()
        .expect("objects")
        .into_iter()
        .find(|o| o.id == id)
}

fn holders(client: &Client, id: u64) -> Option<u64> {
    info(client, id).map(|o| o.holders)
}

/// Waits up to 10 s for `id` to be gone (a connection's close reaches the manager a moment
/// after the process that held it exits).
fn gone_soon(client: &Client, id: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if info(client, id).is_none() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// (a) A thousand unnamed objects of every kind, made one by one and in a pipeline, are freed
/// once their proxies are dropped; named objects stay, proxies or not.
#[test]
fn unnamed_objects_are_freed_when_their_proxies_go_and_named_ones_stay() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn a manager");
    let c = manager.client();
    let named = c.dict_named::<String, i64>("kept-dict").unwrap();
    named.set("a", &1).unwrap();
    let named_list = c.list_named::<i64>("kept-list").unwrap();
    let named_lock = c.lock_named("kept-lock").unwrap();

    let mut proxies: Vec<Box<dyn Any>> = Vec::new();
    let mut ids = Vec::new();
    for i in 0..900 {
        macro_rules! keep {
            ($proxy:expr) => {{
                let p = $proxy.unwrap();
                ids.push(p.id());
                proxies.push(Box::new(p));
            }};
        }
        match i % 15 {
            0 => keep!(c.dict::<String, i64>()),
            1 => keep!(c.list::<i64>()),
            2 => keep!(c.value(&(i as i64))),
            3 => keep!(c.array('q', &[1i64, 2, 3])),
            4 => keep!(c.namespace()),
            5 => keep!(c.queue::<i64>(0)),
            6 => keep!(c.joinable_queue::<i64>(0)),
            7 => keep!(c.lock()),
            8 => keep!(c.rlock()),
            9 => keep!(c.semaphore(2)),
            10 => keep!(c.bounded_semaphore(2)),
            11 => keep!(c.event()),
            12 => keep!(c.condition()),
            13 => keep!(c.barrier(2, None)),
            _ => {
                // A list holding a value, cloned a few times.
                let l = c.list_from([i as i64]).unwrap();
                ids.push(l.id());
                for _ in 0..3 {
                    proxies.push(Box::new(l.clone()));
                }
                proxies.push(Box::new(l));
            }
        }
    }
    // A hundred more in one round trip, made proxies from the pipeline's replies.
    let mut p = c.pipeline();
    let handles: Vec<_> = (0..100)
        .map(|_| p.add(Client::create_cmd("dict", None, &[])))
        .collect();
    let replies = p.execute().unwrap();
    for h in handles {
        let d = Dict::<String, i64>::from_id(c, replies.get(h).unwrap());
        ids.push(d.id());
        proxies.push(Box::new(d));
    }
    drop(replies);
    assert_eq!(ids.len(), 1000);

    let before = c.objects().unwrap();
    assert_eq!(
        before.len(),
        1003,
        "every object is alive while its proxies are"
    );
    assert!(before.iter().all(|o| o.holders >= 1), "{:?}", &before[..3]);

    drop(proxies);
    // The decrefs went out as the proxies dropped (the connection was idle); `objects` is
    // the one more call that shows the result.
    let after = c.objects().unwrap();
    let mut names: Vec<_> = after.iter().filter_map(|o| o.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["kept-dict", "kept-list", "kept-lock"]);
    assert_eq!(
        after.len(),
        3,
        "{} unnamed objects left, for instance {:?}",
        after.len() - 3,
        after.iter().find(|o| o.name.is_none())
    );

    // Named objects stay without proxies, and keep their contents.
    drop((named, named_list, named_lock));
    let after = c.objects().unwrap();
    assert_eq!(after.len(), 3);
    assert!(after.iter().all(|o| o.holders == 0), "{after:?}");
    let again = c.dict_named::<String, i64>("kept-dict").unwrap();
    assert_eq!(again.get("a").unwrap(), Some(1));
    // An id of a freed object is unknown, whichever proxy asks.
    let err = List::<i64>::from_id(c, ids[1]).len().unwrap_err();
    assert!(err.is(ErrorName::UnknownObjectError), "{err}");
}

/// (b), (e) Clones and proxies decoded from replies keep a list alive until the last one
/// drops; a list stored in a dict lives while the dict holds it, and is freed once the entry
/// is removed and no proxy is left. Holders: one per connection that holds the object,
/// whatever its count, plus one per stored reference.
#[test]
fn clones_decoded_proxies_and_stored_references_hold_an_object() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn a manager");
    let c = manager.client();
    let d = c.dict::<String, List<i64>>().unwrap();
    let l = c.list_from([1i64, 2]).unwrap();
    let id = l.id();
    assert_eq!(holders(c, id), Some(1), "this connection");
    d.set("l", &l).unwrap();
    assert_eq!(holders(c, id), Some(2), "this connection and the dict");

    let decoded = d.get("l").unwrap().expect("stored");
    let again = d.get("l").unwrap().expect("stored");
    let clone = l.clone();
    assert_eq!(
        holders(c, id),
        Some(2),
        "still one connection, whatever it received"
    );
    drop((l, again));
    assert_eq!(decoded.copy().unwrap(), [1, 2]);

    // The entry goes: the connection's proxies alone hold the list.
    assert!(d.del("l").unwrap());
    assert_eq!(holders(c, id), Some(1));
    decoded.append(&3).unwrap();
    drop(decoded);
    assert_eq!(clone.copy().unwrap(), [1, 2, 3], "the clone still holds it");
    drop(clone);
    assert_eq!(holders(c, id), None, "freed with the last proxy");

    // A list only the dict holds: alive while stored, however many proxies come and go.
    let m = c.list_from([9i64]).unwrap();
    let m_id = m.id();
    d.set("m", &m).unwrap();
    drop(m);
    assert_eq!(holders(c, m_id), Some(1), "the dict alone");
    let through = d.get("m").unwrap().expect("stored");
    assert_eq!(through.copy().unwrap(), [9]);
    assert_eq!(holders(c, m_id), Some(2));
    drop(through);
    assert_eq!(holders(c, m_id), Some(1));
    let popped = d.pop("m").unwrap().expect("stored");
    assert_eq!(
        holders(c, m_id),
        Some(1),
        "the reply's reference took over the dict's"
    );
    assert_eq!(popped.copy().unwrap(), [9]);
    drop(popped);
    assert_eq!(holders(c, m_id), None, "entry removed, no proxy left");

    // A dict freed frees what only it held.
    let n = c.list::<i64>().unwrap();
    let n_id = n.id();
    d.set("n", &n).unwrap();
    drop(n);
    let d_id = d.id();
    drop(d);
    assert_eq!(holders(c, d_id), None);
    assert_eq!(holders(c, n_id), None);
}

/// (c), (e) A token keeps its object alive after the proxy it came from is dropped, until
/// another connection redeems it; redeeming a token of an object that is gone fails at once.
#[test]
fn a_token_outlives_its_proxy_until_redeemed() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn a manager");
    let c = manager.client();
    let l = c.list_from([7i64]).unwrap();
    let id = l.id();
    let token = l.token().unwrap();
    assert_eq!(holders(c, id), Some(2), "this connection and the handoff");
    drop(l);
    assert_eq!(holders(c, id), Some(1), "the handoff alone");

    let other = Client::connect(manager.address(), manager.authkey()).unwrap();
    let back = List::<i64>::from_token(&other, &token).unwrap();
    assert_eq!(
        holders(c, id),
        Some(1),
        "the other connection, which took it over"
    );
    assert_eq!(back.copy().unwrap(), [7]);
    // A proxy of another connection made from the bare id holds nothing more.
    let bare = List::<i64>::from_id(c, id);
    assert_eq!(holders(c, id), Some(1));
    drop(bare);
    drop(back);
    assert!(gone_soon(c, id), "freed with the redeemer's last proxy");

    let err = List::<i64>::from_token(&other, &token).unwrap_err();
    assert!(err.is(ErrorName::UnknownObjectError), "{err}");
    // A token of an object that is gone cannot be taken either.
    let gone = List::<i64>::from_id(c, id);
    assert!(gone.token().unwrap_err().is(ErrorName::UnknownObjectError));
}

/// A token nobody redeems keeps its object only for the manager's handoff lease, which the
/// builder sets (`--handoff-seconds` for a standalone manager).
#[test]
fn an_unredeemed_token_lasts_as_long_as_the_handoff_lease() {
    let _serial = serial();
    let manager = Manager::builder()
        .handoff_lease(Duration::from_millis(200))
        .spawn()
        .expect("spawn a manager");
    let c = manager.client();
    let l = c.list_from([1i64]).unwrap();
    let id = l.id();
    let token = l.token().unwrap();
    drop(l);
    assert_eq!(holders(c, id), Some(1), "the handoff alone");
    // Expired handoffs go at the manager's next tick (once a second).
    assert!(gone_soon(c, id), "the handoff outlived its lease");
    let other = Client::connect(manager.address(), manager.authkey()).unwrap();
    let err = List::<i64>::from_token(&other, &token).unwrap_err();
    assert!(err.is(ErrorName::UnknownObjectError), "{err}");
}

/// (d) A worker's closure holds the only proxy of a list; the parent drops it as soon as
/// `spawn` returns, and the worker uses it only afterwards: the handoff made before the fork
/// keeps the list alive until the worker adopts it.
#[test]
fn a_forked_worker_keeps_the_only_proxy_alive() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn a manager");
    let c = manager.client();
    let results = c.dict_named::<String, Vec<i64>>("results").unwrap();
    let l = c.list_from([1i64, 2, 3]).unwrap();
    let id = l.id();
    let (mut go, mut wait) = UnixStream::pair().unwrap();
    // The worker holds a copy of `go` too, so it would never see the end of the stream.
    wait.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut worker = Process::spawn_fallible(move || -> agora::Result<()> {
        // No call before the parent has dropped its proxy: the worst case.
        let mut byte = [0];
        wait.read_exact(&mut byte).expect("go");
        l.append(&4)?;
        results.set("copy", &l.copy()?)?;
        Ok(())
    })
    .unwrap();
    // The closure, and the parent's only proxy with it, is gone now.
    let held = holders(c, id);
    go.write_all(b"!").unwrap();
    let status = worker.join().unwrap();
    assert_eq!(
        held,
        Some(1),
        "the handoff alone holds the list while the worker waits"
    );
    assert!(status.success(), "the worker failed: {status:?}");
    let results = c.dict_named::<String, Vec<i64>>("results").unwrap();
    assert_eq!(results.get("copy").unwrap(), Some(vec![1, 2, 3, 4]));
    assert!(
        gone_soon(c, id),
        "freed once the worker, its last holder, exited"
    );
}

/// Threads of one client hand lists through a dict while others read them and drop their
/// proxies: a list popped by one thread is held only by the reply on its way to it, while
/// another thread's drop gives back the connection's count. No list may be freed while a
/// proxy of it lives or a reply holds it, and once everything is dropped nothing is left.
#[test]
fn threads_handing_objects_around_never_lose_one() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn a manager");
    let c = manager.client().clone();
    const KEYS: usize = 8;
    let d = c.dict::<usize, List<i64>>().unwrap();
    for k in 0..KEYS {
        d.set(&k, &c.list::<i64>().unwrap()).unwrap();
    }
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let d = d.clone();
            std::thread::spawn(move || -> agora::Result<u64> {
                let mut x = 0x9e37_79b9_7f4a_7c15 ^ (t + 1);
                let mut appended = 0;
                for _ in 0..300 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let k = (x % KEYS as u64) as usize;
                    if t % 2 == 0 {
                        // Take the list out (the reply alone holds it), use it, put it back.
                        if let Some(l) = d.pop(&k)? {
                            l.append(&1)?;
                            appended += 1;
                            d.set(&k, &l)?;
                        }
                    } else if let Some(l) = d.get(&k)? {
                        let copy = l.clone();
                        drop(l);
                        copy.len()?;
                    }
                }
                Ok(appended)
            })
        })
        .collect();
    let mut appended = 0;
    for t in threads {
        appended += t.join().expect("thread").expect("no object lost");
    }
    let lists: Vec<List<i64>> = d.values().unwrap();
    assert_eq!(lists.len(), KEYS, "every list is back in the dict");
    let total: usize = lists.iter().map(|l| l.len().unwrap()).sum();
    assert_eq!(total as u64, appended);
    drop((lists, d));
    assert_eq!(c.objects().unwrap(), [], "nothing left");
}
