//! The manager against the method table (`agora_proto::methods`): every method the table lists
//! is known to the manager and takes the param counts the table documents; every other
//! `<kind>.<method>` is answered `UnknownMethodError`, whatever its params and whether or not
//! its id names an object.

use std::collections::BTreeSet;

use agora_proto::methods::{self, MethodSpec};
use agora_proto::testing::{dec, request, RawClient};
use agora_proto::Kind;
use rmpv::Value;

use crate::support::*;

/// Writes a request without waiting for its answer; gives its msgid.
fn send(c: &mut RawClient, method: &str, params: Vec<Value>) -> u32 {
    let msgid = c.msgid();
    c.send(&request(msgid, method, params));
    msgid
}

/// A new object of `kind` with init args that make every method answer promptly where it
/// can (a barrier of one party, a semaphore with a permit); gives its id.
fn create(c: &mut RawClient, kind: Kind) -> u64 {
    let args = match kind {
        Kind::Value => vec![Value::Nil, Value::from(0)],
        Kind::Array => vec![Value::from("b"), Value::from(2)],
        Kind::Barrier => vec![Value::from(1)],
        _ => vec![],
    };
    c.create(kind.as_str(), None, args)
}

/// `[id]` followed by nils up to `n` params.
fn params_of(id: u64, n: usize) -> Vec<Value> {
    let mut params = vec![Value::from(id)];
    params.resize(n.max(1), Value::Nil);
    params
}

/// Every method name of every kind, and of no kind.
fn every_name() -> BTreeSet<&'static str> {
    methods::TABLE.iter().map(|m| m.name).collect()
}

// ---------------------------------------------------------------------------------------------
// Every method in the table is known, with its documented param counts
// ---------------------------------------------------------------------------------------------

/// Calls `spec` with every param count from 1 to one past its most (nils after the id; a few
/// past its fewest for a method without a most), each
/// on a fresh object, all in one write with a `ping` behind them. Counts outside the table's
/// must get `ArgumentCountError`; counts inside must get anything but `UnknownMethodError` and
/// `ArgumentCountError`. A call still unanswered when the ping is (the manager answers in
/// order the calls it does not park) must be one the table says parks.
fn check_counts(server: &TestServer, spec: &MethodSpec) {
    let kind = spec.kind.expect("an object method");
    // An open-ended method (`set.update [id, operands...]`) is tried with a few more.
    let most = spec.max_params().unwrap_or(spec.min_params() + 3);
    let mut c = server.client();
    let ids: Vec<u64> = (0..=most).map(|_| create(&mut c, kind)).collect();
    let calls: Vec<(u32, usize)> = (1..=most + 1)
        .zip(ids)
        .map(|(n, id)| (send(&mut c, spec.wire, params_of(id, n)), n))
        .collect();
    let ping = send(&mut c, "ping", vec![]);
    let mut unanswered: BTreeSet<u32> = calls.iter().map(|(msgid, _)| *msgid).collect();
    loop {
        let r = c.response();
        if r.msgid == ping {
            break;
        }
        assert!(
            unanswered.remove(&r.msgid),
            "an answer to no call: {}",
            r.msgid
        );
        let n = calls
            .iter()
            .find(|(msgid, _)| *msgid == r.msgid)
            .map(|(_, n)| *n);
        let n = n.expect("a call of this test");
        let error = r.result.err().map(|e| (e.name, e.message));
        let shown = format!("{} with {n} params: {error:?}", spec.wire);
        if spec.accepts(n) {
            let name = error.as_ref().map(|(name, _)| name.as_str());
            assert_ne!(name, Some("UnknownMethodError"), "{shown}");
            assert_ne!(name, Some("ArgumentCountError"), "{shown}: {}", spec.params);
        } else {
            let name = error.as_ref().map(|(name, _)| name.as_str());
            assert_eq!(name, Some("ArgumentCountError"), "{shown}: {}", spec.params);
        }
    }
    assert!(
        unanswered.is_empty() || spec.parks,
        "{} parked, but the table says it is answered at once",
        spec.wire
    );
}

#[test]
fn every_method_of_every_kind_is_known_and_takes_the_documented_param_counts() {
    let server = TestServer::start();
    for kind in Kind::ALL {
        for spec in methods::of(Some(*kind)) {
            check_counts(&server, spec);
        }
    }
}

#[test]
fn every_method_of_no_kind_is_known() {
    let server = TestServer::start();
    let mut c = server.client();
    for spec in methods::of(None) {
        if matches!(spec.name, "auth" | "shutdown") {
            continue; // a failed auth closes the connection, shutdown stops the manager
        }
        let params = vec![Value::Nil; spec.min_params()];
        if let Err(e) = c.call(spec.wire, params) {
            assert_ne!(e.name, "UnknownMethodError", "{}: {}", spec.wire, e.message);
        }
    }
    let mut fresh = server.connect();
    fresh.ok("hello", vec![]);
    let e = fresh
        .call("auth", vec![Value::Nil])
        .expect_err("a nil digest");
    assert_eq!(e.name, "AuthenticationError", "{}", e.message);
    assert_eq!(c.ok("shutdown", vec![]), Value::Boolean(true));
}

// ---------------------------------------------------------------------------------------------
// Every method not in the table is unknown, before the params or the object are looked at
// ---------------------------------------------------------------------------------------------

#[test]
fn methods_outside_the_table_are_unknown_whatever_the_params_or_object() {
    let server = TestServer::start();
    let mut c = server.client();
    let names = every_name();
    for kind in Kind::ALL {
        let own: BTreeSet<&str> = methods::of(Some(*kind)).iter().map(|m| m.name).collect();
        let first = methods::of(Some(*kind))[0].name;
        // Names of other kinds' methods and of no kind's, and names of no method at all.
        let shouted = first.to_uppercase();
        let mut foreign: Vec<&str> = names.difference(&own).copied().collect();
        foreign.extend(["nonsense", "owner", "", " get", shouted.as_str()]);
        let id = create(&mut c, *kind);
        let other = create(
            &mut c,
            if *kind == Kind::Dict {
                Kind::List
            } else {
                Kind::Dict
            },
        );
        let shapes = [
            vec![Value::from(id)],
            vec![],
            vec![Value::from(u64::MAX)],
            vec![Value::from(other)],
            vec![Value::from("not an id")],
            params_of(id, 6),
        ];
        let mut sent = Vec::new();
        for name in &foreign {
            let wire = format!("{kind}.{name}");
            for (shape, params) in shapes.iter().enumerate() {
                sent.push((send(&mut c, &wire, params.clone()), wire.clone(), shape));
            }
        }
        for (msgid, wire, shape) in sent {
            let r = c.response();
            assert_eq!(r.msgid, msgid, "answered out of order: {wire} parked");
            match r.result {
                Ok(v) => panic!("{wire} {:?} answered {}", shapes[shape], dec(&v)),
                Err(e) => assert_eq!(
                    e.name, "UnknownMethodError",
                    "{wire} {:?}: {}",
                    shapes[shape], e.message
                ),
            }
        }
    }
}

#[test]
fn cases_that_used_to_get_another_error_are_unknown_methods() {
    let server = TestServer::start();
    let mut c = server.client();
    let lock = create(&mut c, Kind::Lock);
    let barrier = create(&mut c, Kind::Barrier);
    let queue = create(&mut c, Kind::JoinableQueue);
    let cases: [(&str, Vec<Value>); 6] = [
        // A lock checked its param count before its method name.
        ("lock.owner", vec![Value::from(lock)]),
        // An unknown id was reported before the unknown method.
        ("lock.owner", vec![Value::from(999_999)]),
        // A barrier checked that non-wait methods take only the id before the name.
        ("barrier.nonsense", vec![Value::from(barrier), Value::Nil]),
        // A call with no params was refused for its missing id before the name was looked at.
        ("dict.nonsense", vec![]),
        // The acknowledged gets are a plain queue's only.
        (
            "joinable_queue.ack",
            vec![Value::from(queue), Value::from(1)],
        ),
        ("joinable_queue.get_acked", vec![Value::from(queue)]),
    ];
    for (method, params) in cases {
        let e = c.call(method, params).expect_err(method);
        assert_eq!(e.name, "UnknownMethodError", "{method}: {}", e.message);
    }
    assert!(methods::find(Some(Kind::JoinableQueue), "ack").is_none());
}
