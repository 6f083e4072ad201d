//! Argument values a method cannot take: the error names the value as sent, and nothing
//! changes.

use rmpv::Value;

use crate::support::*;

#[test]
fn a_semaphore_release_that_would_overflow_is_refused_and_the_value_kept() {
    let server = TestServer::start();
    let mut c = server.client();
    let sem = c.create("semaphore", None, vec![Value::from(1)]);
    let err = c.fail(
        "semaphore.release",
        vec![Value::from(sem), Value::from(u64::MAX)],
    );
    assert!(err.starts_with("OverflowError"), "{err}");
    // The session survived and the value is what it was.
    assert_eq!(
        c.ok("semaphore.get_value", vec![Value::from(sem)]),
        Value::from(1)
    );
}

#[test]
fn negative_sizes_and_counts_are_reported_as_themselves() {
    let server = TestServer::start();
    let mut c = server.client();
    let err = c
        .call(
            "create",
            vec!["array".into(), Value::Nil, "i".into(), Value::from(-1)],
        )
        .unwrap_err();
    assert_eq!(err.name, "ValueError");
    assert!(err.message.contains("-1"), "{}", err.message);
    let sem = c.create("semaphore", None, vec![]);
    let err = c
        .call("semaphore.release", vec![Value::from(sem), Value::from(-1)])
        .unwrap_err();
    assert!(err.message.ends_with("got -1"), "{}", err.message);
}
