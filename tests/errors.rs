//! Errors a caller can act on: requests over the manager's limits fail alone, before they are
//! sent, and the connection stays usable.

use std::time::{Duration, Instant};

use agora::{Error, ErrorName, Limits, Manager};
use serde_bytes::ByteBuf;

fn expect_limit(e: Error, limit: &str) -> (u64, u64) {
    assert!(e.is(ErrorName::LimitError), "{e}");
    assert_eq!(e.remote_name(), Some("LimitError"));
    assert!(!e.is_disconnected(), "{e}");
    match e {
        Error::Limit {
            limit: which,
            max,
            size,
            ..
        } => {
            assert_eq!(which, limit);
            (max, size)
        }
        e => panic!("not a limit error: {e:?}"),
    }
}

/// Encoding stops at the largest limit of the managers the process is connected to, so this
/// runs before the test connects to a manager of the default limits.
#[test]
fn requests_over_the_limits_fail_unsent() {
    encoding_stops_at_the_limit_and_pipelines_fail_only_that_call();
    an_oversized_value_fails_unsent_and_the_connection_stays_usable();
}

fn an_oversized_value_fails_unsent_and_the_connection_stays_usable() {
    let manager = Manager::spawn().expect("spawn the manager");
    let d = manager.dict::<String, ByteBuf>().unwrap();
    let huge = ByteBuf::from(vec![0u8; 65 << 20]);
    let err = d.set("v", &huge).unwrap_err();
    let text = err.to_string();
    let (max, size) = expect_limit(err, "max_message_bytes");
    assert_eq!(max, 64 << 20);
    assert!(size > max, "{size}");
    for part in [
        "LimitError",
        "67108864",
        "max_message_bytes",
        "nothing was sent",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
    // The same connection (the manager handle's own) still works.
    d.set("v", &ByteBuf::from(vec![1u8; 10])).unwrap();
    assert_eq!(d.get("v").unwrap().unwrap().len(), 10);
    manager.client().ping().unwrap();
}

fn encoding_stops_at_the_limit_and_pipelines_fail_only_that_call() {
    let manager = Manager::builder()
        .limits(Limits {
            max_message_bytes: 1 << 20,
            max_depth: 16,
            max_container_len: 1000,
        })
        .spawn()
        .expect("spawn the manager");
    let list = manager.list::<Vec<u8>>().unwrap();
    // 100M elements: encoding stops after about a megabyte instead of encoding them all.
    let many = vec![7u8; 100_000_000];
    let started = Instant::now();
    let err = list.append(&many).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    match &err {
        Error::Limit {
            encoding_stopped, ..
        } => assert!(encoding_stopped, "{err}"),
        e => panic!("{e:?}"),
    }
    assert!(err.to_string().contains("when encoding stopped"), "{err}");
    drop(many);

    // Too many elements in one array, too deep a value.
    let (max, size) = expect_limit(
        list.append(&vec![1u8; 1001]).unwrap_err(),
        "max_container_len",
    );
    assert_eq!((max, size), (1000, 1001));
    let mut deep = rmpv::Value::from(1);
    for _ in 0..20 {
        deep = rmpv::Value::Array(vec![deep]);
    }
    let values = manager.list::<rmpv::Value>().unwrap();
    let (max, _) = expect_limit(values.append(&deep).unwrap_err(), "max_depth");
    assert_eq!(max, 16);

    // In a pipeline, the oversized call fails alone.
    let mut p = manager.client().pipeline();
    let first = p.add(list.append_cmd(&vec![1u8]));
    let big = p.add(list.append_cmd(&vec![2u8; 1001]));
    let last = p.add(list.append_cmd(&vec![3u8]));
    let len = p.add(list.len_cmd());
    let replies = p.execute().unwrap();
    replies.get(first).unwrap();
    expect_limit(replies.get(big).unwrap_err(), "max_container_len");
    replies.get(last).unwrap();
    assert_eq!(replies.get(len).unwrap(), 2);
    assert_eq!(list.copy().unwrap(), vec![vec![1u8], vec![3u8]]);
}
