//! Tests of the client against a fake in-process manager ([`fake`]): connecting and
//! authenticating, multiplexing threads on one connection, disconnects, fork, pipelines and
//! nested shared objects.

#[cfg(feature = "tokio")]
mod aio;
mod failover;
mod fake;
mod lifetime;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use fake::{FakeManager, AUTHKEY};

use crate::{Client, Dict, Error, ErrorName, List, Namespace, SharedRef};

fn connect(m: &FakeManager) -> Client {
    Client::connect(&m.address, AUTHKEY).expect("connect to the fake manager")
}

fn whoami(c: &Client) -> u64 {
    c.call("test.whoami", &()).expect("whoami")
}

#[test]
fn connects_authenticates_and_pings() {
    let m = FakeManager::start();
    let c = connect(&m);
    c.ping().unwrap();
    assert_eq!(whoami(&c), 1);
    let echoed: Vec<String> = c.call("test.echo", &(["a", "b"],)).unwrap();
    assert_eq!(echoed, ["a", "b"]);
    assert_eq!(&c.call_raw("test.echo", &[&[0x2a]]).unwrap()[..], [0x2a]);
}

#[test]
fn wrong_authkey_is_an_authentication_error() {
    let m = FakeManager::start();
    let err = Client::connect(&m.address, b"not the key").unwrap_err();
    assert!(matches!(err, Error::Authentication { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("refused the authkey (given to Client::connect)"),
        "{text}"
    );
    // The advice once, and not the environment's name for a key that did not come from it.
    assert!(!text.contains("AGORA_AUTHKEY"), "{text}");
    assert_eq!(text.matches("authkey").count(), 2, "{text}");
    let err = Client::from_env_values(Ok(m.address.to_string()), Ok("00".into())).unwrap_err();
    assert!(err.to_string().contains("(AGORA_AUTHKEY)"), "{err}");
    let err = Client::connect(&m.address, b"").unwrap_err();
    assert!(matches!(err, Error::EmptyAuthkey { .. }), "{err}");
    assert!(err.to_string().contains("is empty"), "{err}");
    let err = Client::from_env_values(Ok(m.address.to_string()), Ok(" ".into())).unwrap_err();
    assert!(
        err.to_string() == "the authkey (AGORA_AUTHKEY) is empty: a manager's authkey never is",
        "{err}"
    );
}

#[test]
fn connect_error_names_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let address = crate::Address::Unix(dir.path().join("absent.sock"));
    let err = Client::connect(&address, AUTHKEY).unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.to_string().contains("absent.sock"), "{err}");
}

#[test]
fn env_values_are_checked() {
    let m = FakeManager::start();
    let ok = Client::from_env_values(Ok(m.address.to_string()), Ok(hex::encode(AUTHKEY)));
    ok.unwrap().ping().unwrap();
    let bad_hex = Client::from_env_values(Ok(m.address.to_string()), Ok("xyz".into()));
    assert!(matches!(
        bad_hex,
        Err(Error::Env {
            var: "AGORA_AUTHKEY",
            ..
        })
    ));
    let bad_address = Client::from_env_values(Ok("/tmp/x".into()), Ok(String::new()));
    assert!(matches!(
        bad_address,
        Err(Error::Env {
            var: "AGORA_ADDRESS",
            ..
        })
    ));
}

#[test]
fn remote_errors_keep_their_name() {
    let m = FakeManager::start();
    let c = connect(&m);
    let err = c.call::<_, ()>("no.such.method", &()).unwrap_err();
    assert!(err.is(ErrorName::UnknownMethodError), "{err}");
    // The connection is still fine.
    c.ping().unwrap();
}

/// A call the manager delays must not delay the other threads sharing the connection.
#[test]
fn a_slow_call_does_not_block_other_threads() {
    let m = FakeManager::start();
    let c = connect(&m);
    let slow = {
        let c = c.clone();
        thread::spawn(move || {
            let start = Instant::now();
            let v: String = c.call("test.sleep", &(400, "late")).unwrap();
            (v, start.elapsed())
        })
    };
    thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    for i in 0..50 {
        let v: i32 = c.call("test.echo", &(i,)).unwrap();
        assert_eq!(v, i);
    }
    let fast = start.elapsed();
    let (v, slow_elapsed) = slow.join().unwrap();
    assert_eq!(v, "late");
    assert!(
        fast < Duration::from_millis(300),
        "fast calls took {fast:?}"
    );
    assert!(slow_elapsed >= Duration::from_millis(400));
    assert_eq!(
        m.accepted.load(Ordering::SeqCst),
        1,
        "all on one connection"
    );
}

/// Many threads, replies delayed at random and so answered out of order: each thread must
/// get exactly its own replies.
#[test]
fn replies_reach_their_callers_when_out_of_order() {
    let m = FakeManager::start();
    let c = connect(&m);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let c = c.clone();
            thread::spawn(move || {
                for i in 0..200u64 {
                    let x = t * 1_000_000 + i;
                    let got: u64 = if i % 7 == 0 {
                        c.call("test.sleep", &((x * 31) % 5, x)).unwrap()
                    } else {
                        c.call("test.echo", &(x,)).unwrap()
                    };
                    assert_eq!(got, x);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(m.accepted.load(Ordering::SeqCst), 1);
}

/// When the manager drops the connection, every waiting thread gets `Disconnected` (none
/// hangs, none is sent again), and the next call reconnects.
#[test]
fn disconnect_wakes_every_waiter() {
    let m = FakeManager::start();
    let c = connect(&m);
    let ready = Arc::new(Barrier::new(5));
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let (c, ready) = (c.clone(), ready.clone());
            thread::spawn(move || {
                ready.wait();
                let start = Instant::now();
                let r = c.call::<_, u64>("test.sleep", &(30_000, 1));
                (r, start.elapsed())
            })
        })
        .collect();
    ready.wait();
    thread::sleep(Duration::from_millis(100));
    let closer = c.call::<_, ()>("test.close", &());
    assert!(closer.unwrap_err().is_disconnected());
    for w in waiters {
        let (r, elapsed) = w.join().unwrap();
        let err = r.unwrap_err();
        assert!(err.is_disconnected(), "{err}");
        assert!(err.to_string().contains("closed"), "{err}");
        assert!(elapsed < Duration::from_secs(5), "woke after {elapsed:?}");
    }
    // The next call opens a new connection to the same manager.
    assert_eq!(whoami(&c), 2);
    c.ping().unwrap();
}

/// A forked child must open its own connection and leave the parent's alone.
/// Runs `child` in a forked child process and gives its exit code (it must exit, not die).
fn in_forked_child(child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only uses the client (its own fresh connection, sockets and heap
    // allocations) and leaves with `_exit`, running no destructor of the parent's state.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = child();
        // SAFETY: ends the child at once, as intended.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(libc::WIFEXITED(status), "child died: status {status}");
    libc::WEXITSTATUS(status)
}

#[test]
fn forked_child_reconnects() {
    let m = FakeManager::start();
    let c = connect(&m);
    assert_eq!(whoami(&c), 1);
    let code = in_forked_child(|| match c.call::<_, u64>("test.whoami", &()) {
        Ok(2) if c.ping().is_ok() => 0,
        Ok(_) => 1,
        Err(_) => 2,
    });
    assert_eq!(code, 0, "child exit code (1: same connection, 2: error)");
    assert_eq!(m.accepted.load(Ordering::SeqCst), 2);
    // The parent still uses its own connection, undisturbed.
    assert_eq!(whoami(&c), 1);
    c.ping().unwrap();
}

/// Dropping the client ends its session on the manager at once, even while a forked child
/// that never used the client still holds a copy of the socket.
#[test]
fn dropping_the_client_ends_the_session_despite_a_forked_copy() {
    let m = FakeManager::start();
    let c = connect(&m);
    c.ping().unwrap();
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only blocks on the pipe and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let mut byte = 0u8;
        // SAFETY: reads one byte into a local; returns at EOF when the parent closes its end.
        unsafe {
            libc::close(fds[1]);
            libc::read(fds[0], (&mut byte as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    // SAFETY: closes the parent's copy of the read end, which it does not use.
    unsafe { libc::close(fds[0]) };
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(5);
    while m.ended.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let ended = m.ended.load(Ordering::SeqCst);
    let mut status = 0;
    // SAFETY: closing the write end releases the child; then wait for it.
    unsafe {
        libc::close(fds[1]);
        libc::waitpid(pid, &mut status, 0);
    }
    assert_eq!(ended, 1, "the manager did not see the session end");
}

#[test]
fn pipeline_runs_many_calls_and_keeps_errors_apart() {
    let m = FakeManager::start();
    let c = connect(&m);
    let list = c.list::<i64>().unwrap();
    let dict = c.dict::<String, i64>().unwrap();
    let mut p = c.pipeline();
    for i in 0..100 {
        p.add(list.append_cmd(&i));
    }
    let missing = p.add(dict.getitem_cmd("nope"));
    let absent = p.add(dict.get_cmd("nope"));
    let len = p.add(list.len_cmd());
    assert_eq!(p.len(), 103);
    let replies = p.execute().unwrap();
    assert_eq!(replies.len(), 103);
    assert!(replies.get(missing).unwrap_err().is(ErrorName::KeyError));
    assert_eq!(replies.get(absent).unwrap(), None);
    assert_eq!(replies.get(len).unwrap(), 100);
    assert!(replies.check().unwrap_err().is(ErrorName::KeyError));
    assert_eq!(list.copy().unwrap(), (0..100).collect::<Vec<_>>());
}

#[test]
fn pipeline_larger_than_a_chunk() {
    let m = FakeManager::start();
    let c = connect(&m);
    let list = c.list::<String>().unwrap();
    let item = "x".repeat(1000);
    let mut p = c.pipeline();
    let handles: Vec<_> = (0..300).map(|_| p.add(list.append_cmd(&item))).collect();
    let len = p.add(list.len_cmd());
    let replies = p.execute().unwrap();
    replies.check().unwrap();
    for h in handles {
        replies.get(h).unwrap();
    }
    assert_eq!(replies.get(len).unwrap(), 300);
}

#[test]
fn pipeline_encode_error_spoils_only_its_call() {
    struct Unencodable;
    impl serde::Serialize for Unencodable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refuses"))
        }
    }
    let m = FakeManager::start();
    let c = connect(&m);
    let mut p = c.pipeline();
    let bad = p.add(crate::Cmd::<()>::typed("test.echo", &(Unencodable,)));
    let good = p.add(crate::Cmd::<u8>::typed("test.echo", &(7,)));
    let replies = p.execute().unwrap();
    assert!(matches!(replies.get(bad), Err(Error::Encode(_))));
    assert_eq!(replies.get(good).unwrap(), 7);
    let other = c.pipeline().execute().unwrap();
    assert!(matches!(other.get(good), Err(Error::Usage(_))));
    assert!(other.is_empty());
}

#[test]
fn nested_list_in_a_dict_stays_live() {
    let m = FakeManager::start();
    let c = connect(&m);
    let inner = c.list::<i64>().unwrap();
    let d = c.dict::<String, List<i64>>().unwrap();
    d.set("numbers", &inner).unwrap();
    let through_dict = d.get("numbers").unwrap().expect("stored");
    assert_eq!(through_dict, inner);
    through_dict.append(&5).unwrap();
    through_dict.append(&6).unwrap();
    assert_eq!(inner.copy().unwrap(), [5, 6]);
    // The stored bytes are the protocol's ext type 1.
    let raw = c.call_raw(
        "dict.getitem",
        &[
            &[d.id() as u8],
            &[0xa7, b'n', b'u', b'm', b'b', b'e', b'r', b's'],
        ],
    );
    assert_eq!(&raw.unwrap()[..], &inner.object_ref().encode()[..]);
}

#[test]
fn proxies_decode_only_with_a_client() {
    let m = FakeManager::start();
    let c = connect(&m);
    let bytes = rmp_serde::to_vec(&c.list::<i64>().unwrap()).unwrap();
    let err = rmp_serde::from_slice::<List<i64>>(&bytes).unwrap_err();
    assert!(err.to_string().contains("Client::decode"), "{err}");
    let l: List<i64> = c.decode(&bytes).unwrap();
    assert_eq!(l.len().unwrap(), 0);
    // A reference to another kind is refused, naming both kinds.
    let err = c.decode::<Dict<String, i64>>(&bytes).unwrap_err();
    assert!(err.to_string().contains("is a list, not a dict"), "{err}");
    let any: SharedRef = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(any.0.kind, "list");
}

#[test]
fn tokens_round_trip_and_check_the_kind() {
    let m = FakeManager::start();
    let c = connect(&m);
    let l = c.list::<i64>().unwrap();
    let token = l.token().unwrap();
    assert_eq!(
        token,
        format!("agora:2:list:{}@{}#{}", l.id(), m.address, fake::FIRST_RUN)
    );
    let back = List::<i64>::from_token(&c, &token).unwrap();
    assert_eq!(back, l);
    back.append(&1).unwrap();
    assert_eq!(l.copy().unwrap(), [1]);
    let err = Namespace::from_token(&c, &token).unwrap_err();
    assert!(matches!(err, Error::Token { .. }), "{err}");
}

/// A token of another run is refused by `from_token` as an unknown object, naming both runs.
#[test]
fn a_token_of_another_run_is_refused() {
    let m = FakeManager::start();
    let c = connect(&m);
    assert_eq!(c.manager_run().id, fake::FIRST_RUN);
    assert_eq!(c.manager_run().started, fake::STARTED);
    let old = format!(
        "agora:2:list:0@{}#11111111-2222-4333-8444-555555555555",
        m.address
    );
    let err = List::<i64>::from_token(&c, &old).unwrap_err();
    assert!(err.is(ErrorName::UnknownObjectError), "{err}");
    let text = err.to_string();
    for part in [
        "run 11111111-2222-4333-8444-555555555555",
        fake::FIRST_RUN,
        "2023-11-14 22:13:20 UTC",
        "no longer exists",
    ] {
        assert!(text.contains(part), "{part:?} in {text}");
    }
}

/// A forked child that finds another run at the address (the manager was restarted) fails
/// its calls rather than reach the new run's objects under the old ids.
#[test]
fn a_forked_child_refuses_a_restarted_manager() {
    let m = FakeManager::start();
    let c = connect(&m);
    let l = c.list::<i64>().unwrap();
    *m.run.lock() = "22222222-2222-4222-8222-222222222222".to_owned();
    let code = in_forked_child(|| match l.len() {
        Err(e)
            if e.is(ErrorName::UnknownObjectError)
                && e.to_string().contains("this proxy belongs to run") =>
        {
            0
        }
        Err(_) => 2,
        Ok(_) => 1,
    });
    assert_eq!(
        code, 0,
        "child exit code (1: the call reached the new run, 2: another error)"
    );
    // The parent's connection is to the first run: it goes on.
    assert_eq!(l.len().unwrap(), 0);
}

#[test]
fn proxies_are_send_sync_and_cheap_to_clone() {
    fn shared<T: Send + Sync + Clone>() {}
    shared::<Client>();
    shared::<Dict<String, std::rc::Rc<i64>>>();
    shared::<List<std::cell::Cell<i64>>>();
    shared::<crate::Value<i64>>();
    shared::<crate::Array<f64>>();
    shared::<Namespace>();
}
