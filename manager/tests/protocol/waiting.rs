//! Which methods wait (PROTOCOL.md section 4.1, `agora_proto::methods::MAY_WAIT`): each one
//! is parked, and calls behind it on the same connection are answered first.

use agora_proto::testing::{request, RawClient};
use rmpv::Value;

use crate::support::*;

/// Sets up an object on which `method` must wait, using `holder` for whatever another client
/// has to hold; gives the id and the params of a call that waits at most `timeout` seconds.
pub fn waiting_call(
    c: &mut RawClient,
    holder: &mut RawClient,
    method: &str,
    timeout: f64,
) -> Vec<Value> {
    let (kind, op) = method.split_once('.').expect("kind.method");
    let t = Value::F64(timeout);
    let yes = Value::Boolean(true);
    let item = Value::from(7);
    match (kind, op) {
        ("queue" | "joinable_queue", "get") | ("queue", "get_acked") => {
            let id = Value::from(c.create(kind, None, vec![]));
            vec![id, yes, t]
        }
        ("queue" | "joinable_queue", "get_many") | ("queue", "get_many_acked") => {
            let id = Value::from(c.create(kind, None, vec![]));
            vec![id, Value::from(2), yes, t]
        }
        ("queue" | "joinable_queue", "put" | "put_many") => {
            let id = c.create(kind, None, vec![Value::from(1)]);
            c.ok(&format!("{kind}.put"), vec![Value::from(id), item.clone()]);
            let arg = if op == "put" {
                item
            } else {
                Value::Array(vec![item])
            };
            vec![Value::from(id), arg, yes, t]
        }
        ("queue" | "joinable_queue", "join") => {
            let id = Value::from(c.create(kind, None, vec![]));
            c.ok(&format!("{kind}.put"), vec![id.clone(), item]);
            vec![id, t]
        }
        ("lock" | "rlock" | "condition" | "semaphore" | "bounded_semaphore", "acquire")
        | ("mutex", "lock") => {
            let id = Value::from(c.create(kind, None, vec![]));
            holder.ok(method, vec![id.clone()]);
            vec![id, yes, t]
        }
        ("condition", "wait") => {
            let id = Value::from(c.create(kind, None, vec![]));
            c.ok("condition.acquire", vec![id.clone()]);
            vec![id, t]
        }
        ("event", "wait") => vec![Value::from(c.create(kind, None, vec![])), t],
        ("barrier", "wait") => vec![Value::from(c.create(kind, None, vec![Value::from(2)])), t],
        _ => panic!("{method} is listed as waiting but this test cannot make it wait"),
    }
}

#[test]
fn every_method_listed_as_waiting_parks_and_lets_later_calls_pass() {
    let server = TestServer::start();
    for method in agora_proto::methods::MAY_WAIT {
        let (mut c, mut holder) = (server.client(), server.client());
        let params = waiting_call(&mut c, &mut holder, method, 0.3);
        let (waiting, ping) = (c.msgid(), c.msgid());
        let mut bytes = request(waiting, method, params);
        bytes.extend(request(ping, "ping", vec![]));
        c.send(&bytes);
        // Parked: the ping behind it is answered first, and the waiting call at its timeout.
        let first = c.response();
        assert_eq!(first.msgid, ping, "{method} did not park");
        let second = c.response();
        assert_eq!(second.msgid, waiting, "{method}: no answer at its timeout");
    }
}
