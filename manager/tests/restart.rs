//! A stale reference never reaches another object: a token of one run of a manager is refused
//! by a manager restarted at the same address with the same authkey (whose ids start over),
//! and by a client of another manager; the new run's objects stay as they were.
//!
//! Runs the real `agora-manager` binary and the Rust client.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use agora_client::{Address, Client, Dict, ErrorName, List};

const BIN: &str = env!("CARGO_BIN_EXE_agora-manager");
const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn key() -> Vec<u8> {
    hex::decode(KEY_HEX).unwrap()
}

/// A running `agora-manager`, killed and reaped when dropped.
struct Manager {
    child: Child,
    /// The words of its ready line after `agora-manager ready`.
    ready: Vec<String>,
}

impl Manager {
    /// Starts a manager listening on `listen` with the test key, and waits for its ready line.
    fn start(listen: &[&str]) -> Manager {
        let mut cmd = Command::new(BIN);
        for address in listen {
            cmd.arg("--listen").arg(address);
        }
        let mut child = cmd
            .env("AGORA_AUTHKEY", KEY_HEX)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run agora-manager");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready = line
            .trim()
            .strip_prefix("agora-manager ready ")
            .unwrap_or_else(|| panic!("not a ready line: {line:?}"))
            .split(' ')
            .map(str::to_owned)
            .collect();
        Manager { child, ready }
    }

    /// The run id on the ready line.
    fn run(&self) -> &str {
        self.ready
            .iter()
            .find_map(|w| w.strip_prefix("run="))
            .expect("the ready line names the run")
    }

    /// The `i`th address on the ready line.
    fn address(&self, i: usize) -> Address {
        self.ready[i].parse().unwrap()
    }

    fn client(&self, i: usize) -> Client {
        Client::connect(&self.address(i), &key()).unwrap()
    }

    /// Stops the manager with SIGTERM and waits until it has exited (its socket removed).
    fn stop(mut self) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A socket path in a new temporary directory, as a `unix:` address; the directory goes when
/// the first element drops.
fn socket_address() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix:{}", dir.path().join("m.sock").display());
    (dir, address)
}

#[test]
fn a_token_of_a_restarted_manager_is_an_unknown_object() {
    let (_dir, address) = socket_address();

    let first = Manager::start(&[&address]);
    let first_run = first.run().to_owned();
    let c = first.client(0);
    assert_eq!(c.manager_run().id, first_run);
    let old = c.list::<i64>().unwrap();
    old.extend([1, 2, 3]).unwrap();
    let token = old.token().unwrap();
    assert!(token.ends_with(&format!("#{first_run}")), "{token}");
    drop((old, c));
    first.stop();

    // The same address and key: the new run may well hand out the old ids again.
    let second = Manager::start(&[&address]);
    let second_run = second.run().to_owned();
    assert_ne!(first_run, second_run);
    let c = second.client(0);
    let list = c.list::<i64>().unwrap();
    list.extend([10, 20]).unwrap();
    let dict = c.dict::<String, i64>().unwrap();
    dict.set("a", &1).unwrap();

    let err = List::<i64>::from_token(&c, &token).unwrap_err();
    assert!(err.is(ErrorName::UnknownObjectError), "{err}");
    assert_eq!(err.remote_name(), Some("UnknownObjectError"));
    let text = err.to_string();
    for part in [
        format!("this proxy belongs to run {first_run}"),
        format!("the manager at {address} is run {second_run}, started at "),
        "the object no longer exists".to_owned(),
    ] {
        assert!(text.contains(&part), "{part:?} in {text}");
    }
    // Whatever kind the token names.
    let as_dict = token.replacen(":list:", ":dict:", 1);
    let err = Dict::<String, i64>::from_token(&c, &as_dict).unwrap_err();
    assert!(err.is(ErrorName::UnknownObjectError), "{err}");

    // The new run's objects are untouched.
    assert_eq!(list.copy().unwrap(), [10, 20]);
    assert_eq!(dict.items().unwrap(), [("a".to_owned(), 1)]);
    // And a token of the new run works.
    let again = List::<i64>::from_token(&c, &list.token().unwrap()).unwrap();
    assert_eq!(again.copy().unwrap(), [10, 20]);
    second.stop();
}

#[test]
fn from_token_compares_runs_not_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let a_address = format!("unix:{}", dir.path().join("a.sock").display());
    let b_address = format!("unix:{}", dir.path().join("b.sock").display());
    // One manager on two addresses, and another manager.
    let a = Manager::start(&[&a_address, "tcp:127.0.0.1:0"]);
    let b = Manager::start(&[&b_address]);
    let (a_unix, a_tcp, b_client) = (a.client(0), a.client(1), b.client(0));

    let list = a_unix.list::<i64>().unwrap();
    list.append(&7).unwrap();
    let token = list.token().unwrap();

    // The same run through its other address: the same object.
    let same = List::<i64>::from_token(&a_tcp, &token).unwrap();
    assert_eq!(same.copy().unwrap(), [7]);

    // Another manager, which may well have an object with that id.
    b_client.list::<i64>().unwrap();
    let err = List::<i64>::from_token(&b_client, &token).unwrap_err();
    assert!(err.is(ErrorName::UnknownObjectError), "{err}");
    let text = err.to_string();
    for part in [a.run(), b.run(), a_address.as_str(), b_address.as_str()] {
        assert!(text.contains(part), "{part:?} in {text}");
    }
}

/// A raw client that kept the first run's ids and calls them on the second run: every call is
/// `UnknownObjectError`, and the second run's objects are as their owner left them.
#[test]
fn a_raw_client_with_ids_of_an_earlier_run_reaches_nothing() {
    use agora_proto::testing::RawClient;
    use rmpv::Value;

    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix:{}", dir.path().join("m.sock").display());
    let raw = |m: &Manager| {
        let mut c = RawClient::connect(&m.address(0).to_string()).unwrap();
        c.authenticate(&key());
        c
    };
    let kinds = ["list", "dict", "lock"];

    let first = Manager::start(&[&address]);
    let mut c = raw(&first);
    let old: Vec<u64> = kinds.iter().map(|k| c.create(k, None, vec![])).collect();
    drop(c);
    first.stop();

    let second = Manager::start(&[&address]);
    let mut owner = raw(&second);
    let new: Vec<u64> = kinds
        .iter()
        .map(|k| owner.create(k, None, vec![]))
        .collect();
    owner.ok("list.append", vec![new[0].into(), 1.into()]);
    owner.ok("dict.setitem", vec![new[1].into(), "k".into(), 1.into()]);

    let mut stale = raw(&second);
    let calls: [(&str, Vec<Value>); 3] = [
        ("list.append", vec![old[0].into(), 666.into()]),
        ("dict.setitem", vec![old[1].into(), "k".into(), 666.into()]),
        ("lock.acquire", vec![old[2].into(), false.into()]),
    ];
    for (method, params) in calls {
        assert_eq!(stale.fail(method, params), "UnknownObjectError", "{method}");
    }
    assert_eq!(
        owner.ok("list.copy", vec![new[0].into()]),
        Value::Array(vec![1.into()])
    );
    assert_eq!(
        owner.ok("dict.get", vec![new[1].into(), "k".into()]),
        Value::from(1)
    );
    assert_eq!(
        owner.ok("lock.locked", vec![new[2].into()]),
        Value::Boolean(false)
    );
    second.stop();
}

/// A client whose manager restarted at the same address reconnects on its next call and
/// follows the new run; the proxies of the old run are stale and reach nothing: not by a
/// call, not in a pipeline, not stored in a value, not by a token, and not by being dropped
/// (no decref of the old ids reaches the new run's objects that have them now).
#[test]
fn a_client_follows_a_restarted_manager_and_stale_proxies_reach_nothing() {
    use agora_client::{Error, Queue};

    let (_dir, address) = socket_address();
    let first = Manager::start(&[&address]);
    let first_run = first.run().to_owned();
    let c = first.client(0);
    let old_list = c.list::<i64>().unwrap();
    old_list.extend([1, 2, 3]).unwrap();
    let old_named = c.dict_named::<String, i64>("scores").unwrap();
    old_named.set("alice", &3).unwrap();
    let queue = c.queue::<i64>(0).unwrap();
    let parked = {
        let queue = queue.clone();
        std::thread::spawn(move || queue.get())
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    first.stop();

    // The parked call and the calls after it: one predicate says the manager is gone.
    let err = parked.join().unwrap().unwrap_err();
    assert!(err.is_manager_gone(), "{err:?}");
    let err = c.ping().unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.is_manager_gone(), "{err:?}");

    let second = Manager::start(&[&address]);
    let second_run = second.run().to_owned();
    // The next call reconnects.
    c.ping().unwrap();
    assert_eq!(c.manager_run().id, second_run);
    // The new run may hand out the old ids again, for other objects.
    let new_list = c.list::<i64>().unwrap();
    new_list.extend([10, 20]).unwrap();

    // Every way a stale proxy could reach the new run fails, naming both runs.
    let stale = |e: Error| {
        assert!(e.is(ErrorName::UnknownObjectError), "{e:?}");
        let text = e.to_string();
        for part in [first_run.as_str(), second_run.as_str()] {
            assert!(text.contains(part), "{part:?} in {text}");
        }
    };
    stale(old_list.copy().unwrap_err());
    stale(old_list.append(&666).unwrap_err());
    stale(old_named.get("alice").unwrap_err());
    stale(old_list.token().unwrap_err());
    let mut p = c.pipeline();
    let bad = p.add(old_list.append_cmd(&666));
    let good = p.add(new_list.len_cmd());
    let replies = p.execute().unwrap();
    stale(replies.get(bad).unwrap_err());
    assert_eq!(replies.get(good).unwrap(), 2);
    let holder = c.dict::<String, List<i64>>().unwrap();
    let err = holder.set("x", &old_list).unwrap_err();
    assert!(err.to_string().contains(&first_run), "{err}");
    let _: &Queue<i64> = &queue;

    // Dropping the stale proxies sends nothing: the new list keeps its only holder.
    drop((old_list, queue));
    c.ping().unwrap();
    let holders = |id: u64| {
        c.objects()
            .unwrap()
            .into_iter()
            .find(|o| o.id == id)
            .map(|o| o.holders)
    };
    assert_eq!(holders(new_list.id()), Some(1));
    assert_eq!(new_list.copy().unwrap(), [10, 20]);
    // A named object is found again by name, empty in the new run.
    let scores = c.dict_named::<String, i64>("scores").unwrap();
    assert_eq!(scores.get("alice").unwrap(), None);
    stale(old_named.len().unwrap_err());
    second.stop();
}

/// A connection closed by a deadline (the manager is alive: the same run) is replaced on the
/// next call, and the new connection holds the objects of the live proxies again; an object
/// that only the closed connection held was freed with it (its proxy says so), or, if the new
/// connection's incref reached the manager before it saw the close, is held once, by the new
/// connection.
#[test]
fn a_client_reconnects_to_the_same_run_and_holds_its_objects_again() {
    use std::time::Duration;

    let m = Manager::start(&["tcp:127.0.0.1:0"]);
    let c = m.client(0);
    let named = c.dict_named::<String, List<i64>>("registry").unwrap();
    let nested = c.list::<i64>().unwrap();
    nested.append(&1).unwrap();
    named.set("l", &nested).unwrap();
    let only_ours = c.list::<i64>().unwrap();
    let queue = c.queue::<i64>(0).unwrap();

    let err = c
        .run_within(queue.get_cmd(), Duration::from_millis(100))
        .unwrap_err();
    assert!(
        matches!(err, agora_client::Error::Timeout { .. }),
        "{err:?}"
    );
    // The next call reconnects to the same run.
    let run = c.manager_run().id;
    c.ping().unwrap();
    assert_eq!(c.manager_run().id, run);

    // Held by the named dict too: it lived on, and this connection holds it again.
    assert_eq!(nested.copy().unwrap(), [1]);
    let holders = |id: u64| {
        c.objects()
            .unwrap()
            .into_iter()
            .find(|o| o.id == id)
            .map(|o| o.holders)
    };
    // The dict's reference and ours, once the manager has seen the old connection close.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while holders(nested.id()) != Some(2) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        holders(nested.id()),
        Some(2),
        "the dict's reference and ours"
    );
    // Held by the closed connection alone: freed when the manager saw it close, unless the
    // new connection's incref came first (the close is seen asynchronously); then it is held
    // by the new connection alone, and nothing leaked.
    for (id, alive) in [
        (only_ours.id(), only_ours.len().map(drop)),
        (queue.id(), queue.qsize().map(drop)),
    ] {
        match alive {
            Ok(()) => assert_eq!(holders(id), Some(1), "re-held, once"),
            Err(e) => {
                assert!(e.is(ErrorName::UnknownObjectError), "{e:?}");
                assert_eq!(holders(id), None);
            }
        }
    }
    // The counts agree with the manager's: dropping our proxy leaves the dict's reference.
    drop(nested);
    c.ping().unwrap();
    let nested = named.get("l").unwrap().unwrap();
    assert_eq!(
        holders(nested.id()),
        Some(2),
        "the dict's and the one just read"
    );
    drop(nested);
    c.ping().unwrap();
    let id = named.get("l").unwrap().unwrap().id();
    c.ping().unwrap();
    assert_eq!(holders(id), Some(1), "only the dict's");
}

/// Threads sharing one client while its connection is broken again and again (deadlines
/// that close it): every call either succeeds or fails with a connection error, none is sent
/// twice (each thread's list holds every append that succeeded, once, in order), and once
/// every proxy is dropped the manager counts no holder left for this client: the reference
/// table and the manager agreed across every reconnection.
#[test]
fn threads_sharing_a_client_through_reconnections_lose_and_duplicate_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    const THREADS: usize = 6;
    const BREAKS: usize = 8;
    let m = Manager::start(&["tcp:127.0.0.1:0"]);
    let c = m.client(0);
    let done = Arc::new(AtomicBool::new(false));
    let breaker = {
        let (c, done) = (c.clone(), done.clone());
        std::thread::spawn(move || {
            let mut breaks = 0;
            while breaks < BREAKS {
                std::thread::sleep(Duration::from_millis(10));
                let Ok(q) = c.queue_named::<i64>("never-fed", 0) else {
                    continue;
                };
                if c.run_within(q.get_cmd(), Duration::from_millis(1)).is_err() {
                    breaks += 1;
                }
            }
            done.store(true, Ordering::Relaxed);
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (c, done) = (c.clone(), done.clone());
            std::thread::spawn(move || {
                let mut ok = Vec::new();
                let mut failed = 0;
                let mut i = 0;
                while !done.load(Ordering::Relaxed) {
                    i += 1;
                    let appended = c
                        .list_named::<i64>(&format!("list-{t}"))
                        .and_then(|l| l.append(&i));
                    match appended {
                        Ok(()) => ok.push(i),
                        Err(e) if e.is_disconnected() || e.is_manager_gone() => failed += 1,
                        Err(e) => panic!("thread {t}, call {i}: {e:?}"),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    breaker.join().unwrap();
    let results: Vec<(Vec<i64>, usize)> = workers.into_iter().map(|w| w.join().unwrap()).collect();

    let mut failed_total = 0;
    for (t, (ok, failed)) in results.iter().enumerate() {
        failed_total += failed;
        let list = c.list_named::<i64>(&format!("list-{t}")).unwrap();
        let got = list.copy().unwrap();
        // Every append that succeeded is there once, in order; a failed one at most once.
        let mut dedup = got.clone();
        dedup.dedup();
        assert_eq!(dedup, got, "thread {t}: a call was sent twice");
        let mut at = 0;
        for i in ok {
            at += got[at..]
                .iter()
                .position(|x| x == i)
                .unwrap_or_else(|| panic!("thread {t}: append {i} lost"))
                + 1;
        }
    }
    assert!(failed_total > 0, "no call met a broken connection");
    c.ping().unwrap();
    // Every proxy is gone: no object is held by this client any more, once the manager has
    // seen the last broken connection close (it notices asynchronously).
    let held = || -> Vec<_> {
        c.objects()
            .unwrap()
            .into_iter()
            .filter(|o| o.holders != 0)
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !held().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(held().is_empty(), "{:?}", held());
}

/// The async client follows the same rules: its calls in flight fail when the manager goes,
/// its next call opens a new connection, and a proxy of the old run fails with `OtherRun`
/// unsent, while one of the new run works.
#[test]
fn the_async_client_reconnects_and_refuses_stale_proxies() {
    use agora_client::aio::AsyncClient;

    let (_dir, address) = socket_address();
    let first = Manager::start(&[&address]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let c = rt
        .block_on(AsyncClient::from_client(first.client(0)))
        .unwrap();
    let old = rt.block_on(c.object(|c| c.queue::<i64>(0))).unwrap();
    let parked = rt.spawn({
        let old = old.clone();
        async move { old.get().await }
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    first.stop();
    let err = rt.block_on(parked).unwrap().unwrap_err();
    assert!(err.is_manager_gone(), "{err:?}");

    let _second = Manager::start(&[&address]);
    let err = rt.block_on(old.qsize()).unwrap_err();
    assert!(err.is(ErrorName::UnknownObjectError), "{err:?}");
    assert!(
        matches!(err, agora_client::Error::OtherRun { .. }),
        "{err:?}"
    );
    let fresh = rt.block_on(c.object(|c| c.queue::<i64>(0))).unwrap();
    rt.block_on(fresh.put(&5)).unwrap();
    assert_eq!(rt.block_on(fresh.get()).unwrap(), 5);
}
