//! Object lifetime against the fake manager, whose log shows what the client sent: which
//! decrefs, with which counts, when; exports and adoptions.

use std::thread;
use std::time::{Duration, Instant};

use super::fake::FakeManager;
use super::{connect, in_forked_child};
use crate::{Dict, ErrorName, List};

/// Waits up to a second for `what` to be in the log; the log at that point.
fn wait_for(m: &FakeManager, what: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let log = m.logged();
        if log.iter().any(|l| l == what) || Instant::now() > deadline {
            return log;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn decrefs(m: &FakeManager) -> Vec<String> {
    m.logged()
        .into_iter()
        .filter(|l| l.contains("decref"))
        .collect()
}

/// The last drop on an idle connection writes the decref at once, without waiting for a
/// call; clones share one count, and nothing is sent before the last one goes.
#[test]
fn the_last_drop_on_an_idle_connection_is_written_at_once() {
    let m = FakeManager::start();
    let c = connect(&m);
    let l = c.list::<i64>().unwrap();
    let copies: Vec<_> = (0..3).map(|_| l.clone()).collect();
    drop(l);
    drop(copies);
    let expected = format!("1: decref [[{}, 1]]", 0);
    let log = wait_for(&m, &expected);
    assert_eq!(log, [expected], "one decref, with the create's count");
    // Nothing more is ever sent for it.
    c.ping().unwrap();
    assert_eq!(decrefs(&m).len(), 1);
}

/// While a call is in flight, drops wait and ride along with the next request, all in one
/// notification.
#[test]
fn drops_during_a_call_ride_along_with_the_next_request() {
    let m = FakeManager::start();
    let c = connect(&m);
    let lists: Vec<List<i64>> = (0..3).map(|_| c.list().unwrap()).collect();
    let slow = {
        let c = c.clone();
        thread::spawn(move || c.call::<_, u64>("test.sleep", &(600, 1)).unwrap())
    };
    thread::sleep(Duration::from_millis(100));
    drop(lists);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(
        decrefs(&m),
        Vec::<String>::new(),
        "not idle: nothing written"
    );
    c.ping().unwrap();
    assert_eq!(decrefs(&m), ["1: decref [[0, 1], [1, 1], [2, 1]]"]);
    slow.join().unwrap();
    assert_eq!(decrefs(&m).len(), 1);
}

/// When the last call in flight completes and nothing else is called, the decrefs that waited
/// for it go out then: an idle process does not keep objects alive.
#[test]
fn the_last_call_to_complete_writes_what_waited() {
    let m = FakeManager::start();
    let c = connect(&m);
    let l = c.list::<i64>().unwrap();
    let slow = {
        let c = c.clone();
        thread::spawn(move || c.call::<_, u64>("test.sleep", &(300, 1)).unwrap())
    };
    thread::sleep(Duration::from_millis(100));
    drop(l);
    assert_eq!(decrefs(&m), Vec::<String>::new());
    slow.join().unwrap();
    let log = wait_for(&m, "1: decref [[0, 1]]");
    assert!(log.contains(&"1: decref [[0, 1]]".to_owned()), "{log:?}");
}

/// Every reference in a reply counts, decoded or not; a proxy of an id never received holds
/// nothing.
#[test]
fn references_in_replies_are_counted_and_given_back() {
    let m = FakeManager::start();
    let c = connect(&m);
    let inner = c.list::<i64>().unwrap(); // id 0: 1 (create)
    let d = c.dict::<String, List<i64>>().unwrap(); // id 1: 1
    d.set("k", &inner).unwrap();
    let a = d.get("k").unwrap().unwrap(); // 2
    let b = d.get("k").unwrap().unwrap(); // 3
                                          // Read raw: counted, not a proxy; held until a proxy of the object drops.
    let raw = c.call_raw("dict.getitem", &[&[1], &[0xa1, b'k']]).unwrap(); // 4
    assert_eq!(&raw[..], &inner.object_ref().encode()[..]);
    drop((inner, a));
    assert_eq!(decrefs(&m), Vec::<String>::new(), "b still lives");
    drop(b);
    wait_for(&m, "1: decref [[0, 4]]");
    drop(d);
    wait_for(&m, "1: decref [[1, 1]]");
    // Never received on this connection: nothing to give back.
    let stranger = List::<i64>::from_id(&c, 0);
    drop(stranger);
    c.ping().unwrap();
    assert_eq!(
        decrefs(&m),
        ["1: decref [[0, 4]]", "1: decref [[1, 1]]"],
        "one decref per object, none of count 0"
    );
}

/// A pipeline's replies hold their references until they are dropped: proxies made from them
/// and dropped before give nothing back yet.
#[test]
fn pipeline_replies_hold_until_dropped() {
    let m = FakeManager::start();
    let c = connect(&m);
    let mut p = c.pipeline();
    let handles: Vec<_> = (0..2)
        .map(|_| p.add(crate::Client::create_cmd("list", None, &[])))
        .collect();
    let replies = p.execute().unwrap();
    let lists: Vec<List<i64>> = handles
        .iter()
        .map(|&h| List::from_id(&c, replies.get(h).unwrap()))
        .collect();
    drop(lists);
    c.ping().unwrap();
    assert_eq!(
        decrefs(&m),
        Vec::<String>::new(),
        "the replies still hold them"
    );
    drop(replies);
    wait_for(&m, "1: decref [[0, 1], [1, 1]]");
    assert_eq!(decrefs(&m), ["1: decref [[0, 1], [1, 1]]"]);
}

/// `token` exports, `from_token` adopts (and counts the adoption), and fails at once for an
/// object that is gone.
#[test]
fn tokens_export_and_adopt() {
    let m = FakeManager::start();
    let c = connect(&m);
    let l = c.list::<i64>().unwrap();
    let token = l.token().unwrap();
    assert_eq!(m.logged(), ["1: export 0"]);
    let other = connect(&m);
    let back = List::<i64>::from_token(&other, &token).unwrap();
    assert_eq!(m.logged(), ["1: export 0", "2: adopt 0"]);
    drop(back);
    wait_for(&m, "2: decref [[0, 1]]");
    let gone = token.replacen(":0@", ":9@", 1);
    let err = List::<i64>::from_token(&other, &gone).unwrap_err();
    assert!(err.is(ErrorName::UnknownObjectError), "{err}");
}

/// Exporting before a fork exports what this process holds proxies of; a forked child adopts the
/// objects of the proxies it inherited when it opens its connection, before its first call,
/// and counts them as its own.
#[test]
fn a_forked_child_adopts_what_it_inherited() {
    let m = FakeManager::start();
    let c = connect(&m);
    let a = c.list::<i64>().unwrap();
    let b = c.dict::<String, i64>().unwrap();
    drop(c.list::<i64>().unwrap()); // id 2: given back, not handed over
    wait_for(&m, "1: decref [[2, 1]]");
    // `export_for_fork` for this client only: the other tests' clients run in this process.
    c.export_live().unwrap();
    let mut exports: Vec<String> = m
        .logged()
        .into_iter()
        .filter(|l| l.contains("export"))
        .collect();
    exports.sort();
    assert_eq!(exports, ["1: export 0", "1: export 1"]);
    let code = in_forked_child(|| {
        let copy = b.clone();
        drop(b.clone());
        match a.len() {
            Ok(0) if copy.len().is_ok() => 0,
            Ok(_) => 1,
            Err(_) => 2,
        }
    });
    assert_eq!(code, 0, "child exit code (1: wrong length, 2: error)");
    let mut adopted: Vec<String> = m.logged_by(2);
    adopted.sort();
    assert_eq!(adopted, ["2: adopt 0", "2: adopt 1"]);
    // The parent's proxies are untouched.
    assert_eq!(a.len().unwrap(), 0);
    let _: &Dict<String, i64> = &b;
}

/// A proxy inherited by a child and dropped there before the child's first call: the child
/// still adopts its object (taking the parent's handoff over) and gives it back at once.
#[test]
fn a_forked_child_gives_back_what_it_dropped_before_connecting() {
    let m = FakeManager::start();
    let c = connect(&m);
    let keep = c.list::<i64>().unwrap();
    let mut dropped = Some(c.list::<i64>().unwrap());
    let code = in_forked_child(|| {
        drop(dropped.take());
        match keep.len() {
            Ok(0) => 0,
            _ => 1,
        }
    });
    assert_eq!(code, 0);
    let log: Vec<String> = m.logged_by(2);
    assert!(log.contains(&"2: adopt 1".to_owned()), "{log:?}");
    assert!(log.contains(&"2: decref [[1, 1]]".to_owned()), "{log:?}");
    assert!(!log.iter().any(|l| l.contains("decref [[0")), "{log:?}");
    drop(dropped);
}

/// After the client followed a restarted manager (another run), the proxies of the old run
/// send nothing when dropped: their ids may name the new run's objects. Nothing is taken
/// over on the new connection either.
#[test]
fn stale_proxies_give_nothing_back_to_a_new_run() {
    let m = FakeManager::start();
    let c = connect(&m);
    let old = c.list::<i64>().unwrap();
    *m.run.lock() = "22222222-2222-4222-8222-222222222222".to_owned();
    assert!(c.call::<_, ()>("test.close", &()).is_err());
    c.ping().unwrap();
    assert_eq!(c.manager_run().id, "22222222-2222-4222-8222-222222222222");
    let err = old.len().unwrap_err();
    assert!(err.to_string().contains(super::fake::FIRST_RUN), "{err}");
    drop(old);
    c.ping().unwrap();
    let log: Vec<String> = m.logged_by(2);
    assert!(log.is_empty(), "{log:?}");
}

/// After a reconnection to the same run, the new connection `incref`s (not `adopt`s: a
/// handoff this process made is for someone else) the objects of the live proxies, and the
/// proxies' drops give back what the new connection holds.
#[test]
fn a_reconnection_to_the_same_run_increfs_the_live_proxies() {
    let m = FakeManager::start();
    let c = connect(&m);
    let kept = c.list::<i64>().unwrap();
    let gone = c.list::<i64>().unwrap();
    drop(gone);
    assert!(c.call::<_, ()>("test.close", &()).is_err());
    assert_eq!(kept.len().unwrap(), 0);
    drop(kept);
    c.ping().unwrap();
    let log: Vec<String> = m.logged_by(2);
    assert_eq!(log, ["2: incref 0", "2: decref [[0, 1]]"]);
}
