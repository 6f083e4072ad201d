//! Ownership (PROTOCOL.md section 4.1): owned and unowned acquires, the `owned` option at
//! creation, and closes finished before the calls that race them, so that CPython's own
//! handover patterns give one outcome on every run.

use rmpv::Value;

use crate::support::*;

/// Runs per race: each one closes a connection and at once makes a call that races the close.
const RUNS: usize = 200;

/// A connection that acquires (`params` after the id) and leaves, as a child process that
/// acquires and exits; returns the acquire's answer.
fn acquire_and_leave(server: &TestServer, method: &str, params: Vec<Value>) -> Value {
    let mut child = server.client();
    let got = child.ok(method, params);
    drop(child);
    got
}

#[test]
fn a_semaphore_used_as_a_signal_is_consumed() {
    let server = TestServer::start();
    let mut parent = server.client();
    for run in 0..RUNS {
        let sem = Value::from(parent.create("semaphore", None, p![0]));
        // The producer signals; the consumer takes the signal and exits.
        parent.ok("semaphore.release", vec![sem.clone()]);
        let got = acquire_and_leave(&server, "semaphore.acquire", vec![sem.clone()]);
        assert_eq!(got, Value::from(1));
        // Nothing gave the signal back: as Python, a second acquire times out.
        let again = parent.ok(
            "semaphore.acquire",
            vec![sem.clone(), true.into(), 0.02.into()],
        );
        assert_eq!(
            again,
            Value::from(0),
            "run {run}: a consumed signal came back"
        );
    }
}

#[test]
fn an_owned_semaphore_acquire_still_comes_back_with_the_notice() {
    let server = TestServer::start();
    let mut parent = server.client();
    for owned_by in ["param", "option"] {
        let sem = Value::from(match owned_by {
            "param" => parent.create("semaphore", None, p![1]),
            _ => parent.create("semaphore", None, p![1, true]),
        });
        let params = match owned_by {
            "param" => vec![sem.clone(), true.into(), NIL, true.into()],
            // The option wins over a param that says otherwise.
            _ => vec![sem.clone(), true.into(), NIL, false.into()],
        };
        acquire_and_leave(&server, "semaphore.acquire", params);
        let got = parent.ok(
            "semaphore.acquire",
            vec![sem.clone(), true.into(), 5.into()],
        );
        assert_eq!(got, Value::from(2), "owned by {owned_by}");
    }
}

/// CPython's `TestSyncManagerTypes.test_lock`: a child acquires a Lock and exits, the parent
/// releases it. An owned bare acquire is released by the exit, so the parent's release is a
/// `RuntimeError` on every run; with `owned` false at creation it succeeds on every run, and
/// a second release is the `RuntimeError`, as in Python.
#[test]
fn a_handed_over_lock_gives_one_outcome_on_every_run() {
    let server = TestServer::start();
    let mut parent = server.client();
    for kind in ["lock", "rlock"] {
        let acquire = format!("{kind}.acquire");
        let release = format!("{kind}.release");
        let owned = Value::from(parent.create(kind, None, vec![]));
        for run in 0..RUNS {
            acquire_and_leave(&server, &acquire, vec![owned.clone()]);
            let got = parent
                .call(&release, vec![owned.clone()])
                .map_err(|e| e.name);
            assert_eq!(got, Err("RuntimeError".into()), "{kind}, run {run}");
            // The exit released it: free for the next run (and the parent).
            assert_eq!(
                parent.ok(&format!("{kind}.locked"), vec![owned.clone()]),
                false.into()
            );
        }
    }
    let unowned = Value::from(parent.create("lock", None, p![false]));
    for run in 0..RUNS {
        acquire_and_leave(&server, "lock.acquire", vec![unowned.clone()]);
        assert_eq!(
            parent.ok("lock.release", vec![unowned.clone()]),
            NIL,
            "run {run}"
        );
        assert_eq!(
            parent.fail("lock.release", vec![unowned.clone()]),
            "RuntimeError"
        );
    }
}

/// The same for a `BoundedSemaphore`: `ValueError` on every run when its bare acquires are
/// owned (the default), success on every run with `owned` false; a plain `Semaphore` (bare
/// acquires unowned) ends with one permit, as in Python.
#[test]
fn handed_over_semaphores_give_one_outcome_on_every_run() {
    let server = TestServer::start();
    let mut parent = server.client();
    let bounded = Value::from(parent.create("bounded_semaphore", None, vec![]));
    let unowned = Value::from(parent.create("bounded_semaphore", None, p![1, false]));
    let plain = Value::from(parent.create("semaphore", None, vec![]));
    for run in 0..RUNS {
        acquire_and_leave(&server, "bounded_semaphore.acquire", vec![bounded.clone()]);
        let got = parent.call("bounded_semaphore.release", vec![bounded.clone()]);
        assert_eq!(
            got.map_err(|e| e.name),
            Err("ValueError".into()),
            "run {run}"
        );

        acquire_and_leave(&server, "bounded_semaphore.acquire", vec![unowned.clone()]);
        parent.ok("bounded_semaphore.release", vec![unowned.clone()]);
        let value = parent.ok("bounded_semaphore.get_value", vec![unowned.clone()]);
        assert_eq!(value, Value::from(1), "run {run}");

        acquire_and_leave(&server, "semaphore.acquire", vec![plain.clone()]);
        parent.ok("semaphore.release", vec![plain.clone()]);
        let value = parent.ok("semaphore.get_value", vec![plain.clone()]);
        assert_eq!(value, Value::from(1), "run {run}");
    }
}

/// Over TCP too: the client's FIN is what the manager sees (no shared kernel object), and
/// the parent's release still finds the child's close finished, on every run.
#[test]
fn over_tcp_a_handed_over_lock_gives_one_outcome_on_every_run() {
    let server = TestServer::with_config(agora_manager::Config::new(AUTHKEY.to_vec()), true);
    let mut parent = server.connect_tcp();
    parent.authenticate(AUTHKEY);
    let lock = Value::from(parent.create("lock", None, vec![]));
    for run in 0..RUNS {
        let mut child = server.connect_tcp();
        child.authenticate(AUTHKEY);
        // From the second run on, told that the previous child died holding it.
        let told = Value::from(if run == 0 { 1 } else { 2 });
        assert_eq!(child.ok("lock.acquire", vec![lock.clone()]), told);
        drop(child);
        let got = parent.call("lock.release", vec![lock.clone()]);
        assert_eq!(
            got.map_err(|e| e.name),
            Err("RuntimeError".into()),
            "run {run}"
        );
    }
}

/// An acquire that would wait behind a holder that has left gets the lock at once, with the
/// notice: the close is finished before the acquire is served.
#[test]
fn an_acquire_behind_a_holder_that_left_is_granted_at_once() {
    let server = TestServer::start();
    let mut parent = server.client();
    let lock = Value::from(parent.create("lock", None, vec![]));
    for run in 0..RUNS {
        acquire_and_leave(&server, "lock.acquire", vec![lock.clone()]);
        // Non-blocking: it would fail if the close were not finished first.
        let got = parent.ok("lock.acquire", vec![lock.clone(), false.into()]);
        assert_eq!(got, Value::from(2), "run {run}");
        parent.ok("lock.release", vec![lock.clone()]);
    }
}

#[test]
fn owned_takes_a_bool_or_nil() {
    let server = TestServer::start();
    let mut c = server.client();
    assert_eq!(c.fail("create", p!["lock", NIL, 1]), "TypeError");
    assert_eq!(
        c.fail("create", p!["semaphore", NIL, 1, "yes"]),
        "TypeError"
    );
    let lock = c.create("lock", None, p![NIL]);
    let got = c.call("lock.acquire", p![lock, true, NIL, NIL, 1]);
    assert_eq!(got.map_err(|e| e.name), Err("TypeError".into()));
    // Nil: the default (owned, for a lock).
    assert_eq!(
        c.ok("lock.acquire", p![lock, true, NIL, NIL, NIL]),
        Value::from(1)
    );
}
