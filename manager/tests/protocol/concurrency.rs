//! Many clients at once: every operation on one object is atomic (PROTOCOL.md section 4).

use std::collections::HashSet;
use std::thread;

use agora_proto::testing::RawClient;
use rmpv::Value;

use crate::support::*;

#[test]
fn eight_clients_writing_at_once_lose_nothing() {
    const THREADS: usize = 8;
    const EACH: usize = 500;
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", Some("d"), vec![]);
    let l = c.create("list", Some("l"), vec![]);
    let counter = c.create("value", Some("n"), p!["q", 0]);
    thread::scope(|s| {
        for t in 0..THREADS {
            let socket = server.socket.as_path();
            s.spawn(move || {
                let mut c = RawClient::connect_unix(socket).expect("connect to the manager");
                c.authenticate(AUTHKEY);
                for i in 0..EACH {
                    let key = format!("{t}-{i}");
                    assert_eq!(c.ok("dict.setitem", p![d, key.as_str(), i as u64]), NIL);
                    assert_eq!(c.ok("list.append", p![l, key.as_str()]), NIL);
                    c.ok("value.fetch_add", p![counter, 1]);
                }
            });
        }
    });
    let total = THREADS * EACH;
    assert_eq!(c.ok("dict.len", p![d]), Value::from(total as u64));
    assert_eq!(c.ok("list.len", p![l]), Value::from(total as u64));
    assert_eq!(c.ok("value.get", p![counter]), Value::from(total as u64));
    let listed: HashSet<String> = c
        .ok("list.copy", p![l])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let keys: HashSet<String> = c
        .ok("dict.keys", p![d])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let expected: HashSet<String> = (0..THREADS)
        .flat_map(|t| (0..EACH).map(move |i| format!("{t}-{i}")))
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(keys, expected);
}
