//! `chain` (PROTOCOL.md section 4.16): calls run back to back in one request; when the first
//! waits, the others run the moment it is granted, in the manager.

use agora_proto::testing::dec;
use rmpv::Value;

use crate::support::*;

/// `[method, [params...]]`.
fn call(method: &str, params: Vec<Value>) -> Value {
    Value::Array(vec![method.into(), Value::Array(params)])
}

/// An entry that succeeded, with its result.
fn ok(result: impl Into<Value>) -> Value {
    Value::Array(vec![Value::Nil, result.into()])
}

/// The error name of an entry that failed.
fn error_name(entry: &Value) -> &str {
    entry[0][0]
        .as_str()
        .unwrap_or_else(|| panic!("not a failed entry: {entry}"))
}

#[test]
fn a_chain_runs_its_calls_in_order_in_one_reply() {
    let server = TestServer::start();
    let mut c = server.client();
    let lock = Value::from(c.create("lock", None, vec![]));
    let value = Value::from(c.create("value", None, p![Value::Nil, 41]));
    let got = c.ok(
        "chain",
        vec![
            call("lock.acquire", vec![lock.clone()]),
            call("value.get", vec![value.clone()]),
            call("value.set", vec![value.clone(), 42.into()]),
            call("lock.release", vec![lock.clone()]),
        ],
    );
    assert_eq!(got, arr![ok(1), ok(41), ok(Value::Nil), ok(Value::Nil)]);
    assert_eq!(c.ok("value.get", p![value]), Value::from(42));
    assert_eq!(c.ok("lock.locked", p![lock]), Value::from(false));
}

#[test]
fn a_parked_first_call_runs_the_rest_when_granted() {
    let server = TestServer::start();
    let (mut holder, mut next) = (server.client(), server.client());
    let lock = Value::from(holder.create("lock", None, vec![]));
    let value = Value::from(holder.create("value", None, p![Value::Nil, 1]));
    holder.ok("lock.acquire", p![lock.clone()]);
    let waiting = next.park(
        "chain",
        vec![
            call("lock.acquire", vec![lock.clone()]),
            call("value.get", vec![value.clone()]),
        ],
    );
    // Set while the chain waits: its get runs after the grant, so it reads this.
    holder.ok("value.set", p![value.clone(), 2]);
    holder.ok("lock.release", p![lock.clone()]);
    let answer = next.response();
    assert_eq!(answer.msgid, waiting);
    assert_eq!(dec(&answer.result.unwrap()), arr![ok(1), ok(2)]);
    // The chain's connection holds the lock now.
    assert_eq!(
        holder.ok("lock.locked", p![lock.clone()]),
        Value::from(true)
    );
    assert_eq!(
        holder.ok("lock.acquire", p![lock, false]),
        Value::from(0),
        "held by the chain's connection"
    );
}

#[test]
fn the_rest_is_skipped_when_the_first_call_got_nothing_or_failed() {
    let server = TestServer::start();
    let (mut holder, mut c) = (server.client(), server.client());
    let lock = Value::from(holder.create("lock", None, vec![]));
    let value = Value::from(holder.create("value", None, p![Value::Nil, 7]));
    holder.ok("lock.acquire", p![lock.clone()]);
    let rest = call("value.set", vec![value.clone(), 666.into()]);
    // Not acquired, at once and after a timeout: nothing else runs.
    let at_once = c.ok(
        "chain",
        vec![
            call("lock.acquire", vec![lock.clone(), false.into()]),
            rest.clone(),
        ],
    );
    assert_eq!(at_once, arr![ok(0), Value::Nil]);
    let timed = c.ok(
        "chain",
        vec![
            call("lock.acquire", vec![lock.clone(), true.into(), 0.05.into()]),
            rest.clone(),
        ],
    );
    assert_eq!(timed, arr![ok(0), Value::Nil]);
    // A first call that fails stops the chain too.
    let failed = c.ok(
        "chain",
        vec![call("queue.get_nowait", vec![value.clone()]), rest],
    );
    assert_eq!(error_name(&failed[0]), "TypeError", "{failed}");
    assert_eq!(failed[1], Value::Nil);
    assert_eq!(c.ok("value.get", p![value]), Value::from(7));
}

#[test]
fn a_later_call_that_fails_fails_alone() {
    let server = TestServer::start();
    let mut c = server.client();
    let value = Value::from(c.create("value", None, p![Value::Nil, 1]));
    let got = c.ok(
        "chain",
        vec![
            call("value.get", vec![value.clone()]),
            call("dict.getitem", vec![value.clone(), "k".into()]),
            call("value.set", vec![value.clone(), 2.into()]),
        ],
    );
    assert_eq!(got[0], ok(1));
    assert_eq!(error_name(&got[1]), "TypeError", "{got}");
    assert_eq!(got[2], ok(Value::Nil));
    assert_eq!(c.ok("value.get", p![value]), Value::from(2));
}

#[test]
fn a_malformed_chain_runs_nothing() {
    let server = TestServer::start();
    let mut c = server.client();
    let lock = Value::from(c.create("lock", None, vec![]));
    for bad in [
        vec![],
        vec![
            call("value.get", vec![1.into()]),
            call("lock.acquire", vec![lock.clone()]),
        ],
        vec![call("create", vec!["dict".into(), Value::Nil])],
        vec![Value::from("lock.acquire")],
        vec![Value::Array(vec!["lock.acquire".into()])],
    ] {
        let err = c.fail("chain", bad.clone());
        assert!(
            err.starts_with("ValueError")
                || err.starts_with("TypeError")
                || err.starts_with("ArgumentCountError"),
            "{bad:?}: {err}"
        );
    }
    // Nothing ran: the lock is free.
    assert_eq!(c.ok("lock.locked", p![lock]), Value::from(false));
}

#[test]
fn a_chain_waiting_on_a_dead_holder_is_told_and_still_runs_the_rest() {
    let server = TestServer::start();
    let (mut holder, mut next) = (server.client(), server.client());
    let lock = Value::from(holder.create("lock", None, vec![]));
    let value = Value::from(holder.create("value", None, p![Value::Nil, 5]));
    next.ok("incref", p![value.clone()]);
    holder.ok("lock.acquire", p![lock.clone()]);
    let waiting = next.park(
        "chain",
        vec![
            call("lock.acquire", vec![lock]),
            call("value.get", vec![value]),
        ],
    );
    drop(holder);
    let answer = next.response();
    assert_eq!(answer.msgid, waiting);
    assert_eq!(dec(&answer.result.unwrap()), arr![ok(2), ok(5)]);
}
