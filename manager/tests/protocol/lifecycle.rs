//! The lifecycle core seen from the wire (PROTOCOL.md section 4.2, deletion; section 4.1,
//! owner death): deleting an object answers every call parked on it, whoever parked it and
//! however it is deleted, and a grant whose connection is leaving passes on as it was.

use std::time::{Duration, Instant};

use agora_proto::testing::{dec, request, RawClient};
use rmpv::Value;

use crate::support::*;

/// How soon a parked call must be answered once its object is deleted.
const ANSWERED_WITHIN: Duration = Duration::from_millis(100);

/// Creates the object `method` belongs to through `user` (named `name`, if given) and makes
/// `method` park when `waiter` calls it: `user` fills, holds or empties what must be so.
/// Returns the object's id and the parking call's params.
fn parking_call(
    user: &mut RawClient,
    waiter: &mut RawClient,
    method: &str,
    name: Option<&str>,
) -> (u64, Vec<Value>) {
    let (kind, op) = method.split_once('.').expect("kind.method");
    let maxsize = matches!(op, "put" | "put_many").then(|| Value::from(1));
    let args = match kind {
        "semaphore" => vec![Value::from(0)],
        "barrier" => vec![Value::from(2)],
        _ => maxsize.into_iter().collect(),
    };
    let id = user.create(kind, name, args);
    let v = Value::from(id);
    let item = Value::from(7);
    let params = match op {
        "get" | "get_acked" => vec![v],
        "get_many" | "get_many_acked" => vec![v, Value::from(2)],
        "put" | "put_many" => {
            user.ok(&format!("{kind}.put"), vec![v.clone(), item.clone()]);
            let arg = if op == "put" {
                item
            } else {
                Value::Array(vec![item])
            };
            vec![v, arg]
        }
        "join" => {
            user.ok(&format!("{kind}.put"), vec![v.clone(), item]);
            vec![v]
        }
        "acquire" if kind == "semaphore" => vec![v],
        "acquire" | "lock" => {
            user.ok(method, vec![v.clone()]);
            vec![v]
        }
        "wait" if kind == "condition" => {
            waiter.ok("condition.acquire", vec![v.clone()]);
            vec![v]
        }
        "wait" => vec![v],
        _ => panic!("{method} is listed as waiting but this test cannot make it wait"),
    };
    (id, params)
}

/// A call every kind answers at once, to see whether the object is still there.
fn probe(kind: &str) -> &'static str {
    match kind {
        "queue" | "joinable_queue" => "qsize",
        "lock" | "rlock" | "condition" | "mutex" => "locked",
        "semaphore" | "bounded_semaphore" => "get_value",
        "event" => "is_set",
        "barrier" => "n_waiting",
        other => panic!("no probe for {other}"),
    }
}

#[test]
fn deleting_answers_every_parked_call_and_every_later_call_of_any_connection() {
    let server = TestServer::start();
    for by_name in [false, true] {
        for method in agora_proto::methods::MAY_WAIT {
            let (mut user, mut waiter, mut deleter) =
                (server.client(), server.client(), server.client());
            let name = format!("deleted by name: {method}");
            let name = by_name.then_some(name.as_str());
            let (id, params) = parking_call(&mut user, &mut waiter, method, name);
            let kind = method.split_once('.').map_or("", |(k, _)| k);
            let probe = format!("{kind}.{}", probe(kind));
            // Every connection has the object in its cache before it goes.
            for c in [&mut user, &mut deleter] {
                c.ok(&probe, vec![Value::from(id)]);
            }
            let parked = waiter.park(method, params);

            let target = name.map_or(Value::from(id), Value::from);
            deleter.ok("delete", vec![target]);
            let deleted = Instant::now();
            let answer = waiter.response();
            let took = deleted.elapsed();
            assert_eq!(answer.msgid, parked, "{method}");
            match answer.result {
                Err(e) => assert_eq!(e.name, "UnknownObjectError", "{method}: {e:?}"),
                Ok(v) => panic!(
                    "{method} (by name: {by_name}): answered {} after delete",
                    dec(&v)
                ),
            }
            assert!(
                took <= ANSWERED_WITHIN,
                "{method} (by name: {by_name}): answered {took:?} after the delete"
            );
            for c in [&mut user, &mut waiter, &mut deleter] {
                assert_eq!(
                    c.fail(&probe, vec![Value::from(id)]),
                    "UnknownObjectError",
                    "{probe} after delete (by name: {by_name})"
                );
            }
            if let Some(name) = name {
                assert_eq!(user.fail("lookup", vec![Value::from(name)]), "KeyError");
            }
        }
    }
}

#[test]
fn deleting_a_condition_answers_callers_parked_on_its_lock() {
    let server = TestServer::start();
    let (mut holder, mut waiter, mut deleter) = (server.client(), server.client(), server.client());
    let id = Value::from(holder.create("condition", None, vec![]));
    holder.ok("condition.acquire", vec![id.clone()]);
    let parked = waiter.park("condition.acquire", vec![id.clone()]);
    deleter.ok("delete", vec![id]);
    let answer = waiter.response();
    assert_eq!(answer.msgid, parked);
    assert_eq!(answer.result.unwrap_err().name, "UnknownObjectError");
}

#[test]
fn deleting_a_condition_leaves_its_shared_lock_working() {
    let server = TestServer::start();
    let (mut a, mut b) = (server.client(), server.client());
    let lock = Value::from(a.create("lock", None, vec![]));
    let cond = Value::from(a.create("condition", None, vec![lock.clone()]));
    a.ok("lock.acquire", vec![lock.clone()]);
    let through_lock = b.park("lock.acquire", vec![lock.clone()]);
    a.ok("delete", vec![cond.clone()]);
    // The call parked on the lock itself waits on, and gets the lock on release.
    a.ok("lock.release", vec![lock.clone()]);
    let answer = b.response();
    assert_eq!(answer.msgid, through_lock);
    assert_eq!(dec(&answer.result.unwrap()), Value::from(1));
    assert_eq!(a.fail("condition.locked", vec![cond]), "UnknownObjectError");
}

/// Closes `gone`'s connection while a grant is on its way to it, over the given transport.
fn grant_to_a_leaving_connection(kind: &str, connect: &dyn Fn() -> RawClient) -> Value {
    let (mut holder, mut gone, mut next) = (connect(), connect(), connect());
    let id = Value::from(holder.create(kind, None, vec![]));
    let (acquire, release) = (format!("{kind}.acquire"), format!("{kind}.release"));
    holder.ok(&acquire, vec![id.clone()]);
    gone.park(&acquire, vec![id.clone()]);
    let waiting = next.park(&acquire, vec![id.clone()]);
    // The release and the close race: whichever the manager sees first, `gone` never learnt
    // it held anything, so nobody died holding it.
    let mut bytes = request(holder.msgid(), &release, vec![id]);
    bytes.extend(request(holder.msgid(), "ping", vec![]));
    drop(gone);
    holder.send(&bytes);
    let answer = next.response();
    assert_eq!(answer.msgid, waiting);
    dec(&answer.result.unwrap_or_else(|e| panic!("{kind}: {e:?}")))
}

#[test]
fn a_grant_to_a_connection_that_is_closing_passes_on_as_a_plain_grant() {
    let server = TestServer::with_config(agora_manager::Config::new(AUTHKEY.to_vec()), true);
    let unix = || server.client();
    let tcp = || {
        let mut c = server.connect_tcp();
        c.authenticate(AUTHKEY);
        c
    };
    for round in 0..10 {
        for kind in [
            "lock",
            "rlock",
            "semaphore",
            "bounded_semaphore",
            "condition",
        ] {
            for (transport, connect) in [("unix", &unix as &dyn Fn() -> RawClient), ("tcp", &tcp)] {
                let code = grant_to_a_leaving_connection(kind, connect);
                assert_eq!(
                    code,
                    Value::from(1),
                    "{kind} over {transport}, round {round}: a spurious owner-died notice"
                );
            }
        }
    }
}

#[test]
fn a_holder_that_really_dies_is_still_reported() {
    let server = TestServer::start();
    for kind in [
        "lock",
        "rlock",
        "semaphore",
        "bounded_semaphore",
        "condition",
    ] {
        let (mut holder, mut next) = (server.client(), server.client());
        let id = Value::from(holder.create(kind, None, vec![]));
        let acquire = format!("{kind}.acquire");
        // Owned: the default of every kind but `semaphore`, whose bare acquire is a
        // consumption nothing gives back.
        let owned = match kind {
            "semaphore" | "bounded_semaphore" => vec![id.clone(), true.into(), NIL, true.into()],
            _ => vec![id.clone(), true.into(), NIL, NIL, true.into()],
        };
        holder.ok(&acquire, owned);
        let waiting = next.park(&acquire, vec![id]);
        drop(holder);
        let answer = next.response();
        assert_eq!(answer.msgid, waiting);
        assert_eq!(dec(&answer.result.unwrap()), Value::from(2), "{kind}");
    }
}
