//! The limits per connection of the `agora-manager` binary (PROTOCOL.md, section 1.1):
//! `--max-connections`, `--auth-timeout` and `--max-output-bytes`, each with its error or
//! close, its line in the log, and its startup validation.
//!
//! The manager is the real binary in its own process, so that its log and its resident memory
//! are its own.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use agora_proto::testing::{dec, request, RawClient};
use rmpv::Value;

mod real_binary;
use real_binary::{key, ManagerProcess as Manager, BIN, KEY_HEX};

/// Generous: the tests check what happens, not how fast (except where they say so).
const TIMEOUT: Duration = Duration::from_secs(30);

/// Reads the notification `[2, "error", [name, message]]` and gives the message.
fn error_notification(c: &mut RawClient, name: &str) -> String {
    let v = dec(&c.frame());
    let items = v.as_array().unwrap_or_else(|| panic!("not an array: {v}"));
    assert_eq!(items.len(), 3, "{v}");
    assert_eq!(items[0], Value::from(2), "a notification: {v}");
    assert_eq!(items[1], Value::from("error"), "{v}");
    let params = items[2].as_array().expect("params");
    assert_eq!(params[0], Value::from(name), "{v}");
    params[1].as_str().expect("a message").to_owned()
}

#[test]
fn a_connection_past_max_connections_is_refused_and_a_slot_frees_when_one_ends() {
    let m = Manager::start(&["--max-connections", "3"]);
    let mut served: Vec<RawClient> = (0..3).map(|_| m.client()).collect();

    let mut refused = m.connect();
    let message = error_notification(&mut refused, "LimitError");
    assert!(message.contains("too many connections (3"), "{message}");
    refused.expect_closed();
    m.expect_log("refusing a connection: too many connections");

    // The others go on being served.
    for c in &mut served {
        assert_eq!(c.ok("ping", vec![]), Value::from("pong"));
    }

    // A slot frees when a connection ends (once the manager has seen it end).
    drop(served.pop());
    let deadline = Instant::now() + TIMEOUT;
    let mut c = loop {
        let mut c = m.connect();
        // Refused again (the manager has not seen the end yet): it may close before the
        // hello is written, or answer with its notification and close.
        let answer = c
            .try_send(&request(1, "hello", vec![]))
            .ok()
            .and_then(|()| c.next_frame())
            .map(|frame| dec(&frame));
        if answer
            .as_ref()
            .and_then(Value::as_array)
            .is_some_and(|a| a[0] == Value::from(1))
        {
            break c;
        }
        assert!(Instant::now() < deadline, "no slot freed: {answer:?}");
        thread::sleep(Duration::from_millis(20));
    };
    // A later hello issues a fresh challenge: authenticate as usual.
    c.authenticate(&key());
    assert_eq!(c.ok("ping", vec![]), Value::from("pong"));
}

#[test]
fn a_connection_that_does_not_authenticate_in_time_is_closed() {
    let m = Manager::start(&["--auth-timeout", "0.5"]);
    let mut authenticated = m.client();
    let started = Instant::now();
    // Silent from the start.
    let mut silent = m.connect();
    // Got as far as hello, never answered the challenge.
    let mut halfway = m.connect();
    halfway.hello();
    for c in [&mut silent, &mut halfway] {
        let message = error_notification(c, "AuthenticationError");
        assert!(message.contains("not authenticated within"), "{message}");
        c.expect_closed();
    }
    let took = started.elapsed();
    println!("unauthenticated connections closed after {took:?} (timeout 0.5 s)");
    assert!(
        took >= Duration::from_millis(450),
        "closed too early: {took:?}"
    );
    m.expect_log("closing connection: not authenticated in time");
    // An authenticated connection is not subject to it.
    assert_eq!(authenticated.ok("ping", vec![]), Value::from("pong"));
}

/// Starts the binary with `args`, which it must refuse; gives what it printed.
fn refused_at_startup(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = Command::new(BIN)
        .arg("--listen")
        .arg(format!(
            "unix:{}",
            dir.path().join("manager.sock").display()
        ))
        .args(args)
        .env("AGORA_AUTHKEY", KEY_HEX)
        .stdin(Stdio::null())
        .output()
        .expect("run agora-manager");
    assert!(!out.status.success(), "{args:?} was accepted");
    assert!(out.stdout.is_empty(), "no ready line for {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn meaningless_limits_are_refused_at_startup_naming_the_flag() {
    for (flag, value) in [
        ("--max-connections", "0"),
        ("--max-connections", "many"),
        ("--max-connections", "1000000000000"),
        ("--auth-timeout", "0"),
        ("--auth-timeout", "-1"),
        ("--auth-timeout", "soon"),
        ("--auth-timeout", "NaN"),
        ("--max-output-bytes", "0"),
        ("--max-output-bytes", "-5"),
        ("--max-in-flight", "0"),
    ] {
        // One word, so that "-1" is read as the flag's value.
        let stderr = refused_at_startup(&[&format!("{flag}={value}")]);
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}

/// The size of the value the greedy client asks for, again and again.
const VALUE_BYTES: usize = 100_000;
/// The manager's default `--max-output-bytes`.
const MAX_OUTPUT: u64 = 32 << 20;
/// What the manager may hold besides the unwritten replies: one reply, the requests read and
/// not yet answered, allocator slack.
const SLACK: u64 = 16 << 20;
/// How long the greedy client keeps sending.
const FLOOD: Duration = Duration::from_secs(10);

/// Writes the same batch of requests for `FLOOD`, never reading; gives how many requests the
/// manager's socket took.
fn flood(socket: &Path, id: u64, stop: &AtomicBool) -> u64 {
    let stream = UnixStream::connect(socket).expect("connect");
    let mut c =
        RawClient::from_unix_stream(stream.try_clone().expect("clone")).expect("a raw client");
    c.authenticate(&key());
    let one = request(1, "value.get", vec![Value::from(id)]);
    let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
    let mut writer = stream;
    writer
        .set_write_timeout(Some(Duration::from_millis(50)))
        .expect("a write timeout");
    let (mut pos, mut sent) = (0usize, 0u64);
    while !stop.load(Ordering::Relaxed) {
        match writer.write(&batch[pos..]) {
            Ok(n) => {
                sent += n as u64;
                pos = (pos + n) % batch.len();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("the manager stopped taking requests: {e}"),
        }
    }
    drop(c);
    sent / one.len() as u64
}

#[test]
fn a_client_that_never_reads_costs_the_manager_at_most_its_output_bound() {
    let m = Manager::start(&[]);
    let mut other = m.client();
    let big = other.create(
        "value",
        None,
        vec![Value::Nil, Value::Binary(vec![7; VALUE_BYTES])],
    );
    let small = other.create("value", None, vec![Value::Nil, Value::from(1)]);
    let before = m.rss();

    let stop = Arc::new(AtomicBool::new(false));
    let greedy = {
        let (socket, stop) = (m.socket(), stop.clone());
        thread::spawn(move || flood(&socket, big, &stop))
    };

    // Meanwhile another client calls, and the manager's memory is sampled.
    let started = Instant::now();
    let (mut peak, mut calls, mut slowest) = (before, 0u32, Duration::ZERO);
    while started.elapsed() < FLOOD {
        let t = Instant::now();
        assert_eq!(
            other.ok("value.get", vec![Value::from(small)]),
            Value::from(1)
        );
        slowest = slowest.max(t.elapsed());
        calls += 1;
        peak = peak.max(m.rss());
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let requests = greedy.join().expect("the greedy client");

    let growth = peak.saturating_sub(before);
    println!(
        "greedy client: {requests} requests for {VALUE_BYTES} bytes taken in {FLOOD:?} \
         ({} MiB of replies asked for); manager RSS {} KiB before, peak {} KiB \
         (+{} KiB, bound {} KiB); other client: {calls} calls, slowest {slowest:?}",
        (requests * VALUE_BYTES as u64) >> 20,
        before >> 10,
        peak >> 10,
        growth >> 10,
        (MAX_OUTPUT + SLACK) >> 10,
    );
    // The test means something only if the replies asked for are far beyond the bound.
    assert!(
        requests * VALUE_BYTES as u64 > 4 * MAX_OUTPUT,
        "the greedy client asked for too little to test the bound: {requests} requests"
    );
    assert!(
        growth <= MAX_OUTPUT + SLACK,
        "the manager grew by {growth} bytes for a client that never reads"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "the other client waited {slowest:?} for an answer"
    );
}
