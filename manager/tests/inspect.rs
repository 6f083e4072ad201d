//! A look inside a running manager: `agora-manager inspect` (JSON and tables) on the real
//! binary, the shape of the `stats` answer, and the metrics served at `/metrics`.

mod real_binary;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

use agora_proto::testing::RawClient;
use real_binary::{ManagerProcess, BIN, KEY_HEX};
use rmpv::Value;

/// A TCP port nothing listens on now (bound, then let go).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// Runs `agora-manager inspect` against `m` with these extra arguments.
fn inspect(m: &ManagerProcess, extra: &[&str]) -> Output {
    let output = Command::new(BIN)
        .arg("inspect")
        .arg("--address")
        .arg(format!("unix:{}", m.socket().display()))
        .args(extra)
        .env("AGORA_AUTHKEY", KEY_HEX)
        .output()
        .expect("run agora-manager inspect");
    assert!(
        output.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `GET path` over HTTP/1.1; the status line and the body.
fn http_get(port: u16, method: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read the answer");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

fn field<'a>(v: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    v.get(key).unwrap_or_else(|| panic!("no {key:?} in {v:#}"))
}

fn find<'a>(all: &'a serde_json::Value, key: &str, value: &str) -> &'a serde_json::Value {
    all.as_array()
        .expect("an array")
        .iter()
        .find(|o| o.get(key).and_then(|v| v.as_str()) == Some(value))
        .unwrap_or_else(|| panic!("no entry with {key} {value:?} in {all:#}"))
}

/// The value of the sample `name` in metrics `text`.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

/// The must-show: a named lock held with two parked acquirers and a named queue with
/// one parked get; `inspect --json` shows the holder and both counts, the tables show the
/// same, and `/metrics` counts the three parked calls.
#[test]
fn inspect_shows_the_holder_of_a_lock_and_the_calls_parked_on_it_and_on_a_queue() {
    let port = free_port();
    let m = ManagerProcess::start(&["--metrics", &format!("127.0.0.1:{port}")]);

    let mut holder = m.client();
    let lock = holder.create("lock", Some("jobs"), vec![]);
    assert_eq!(
        holder.ok("lock.acquire", vec![Value::from(lock)]),
        Value::from(1)
    );
    let mut waiters: Vec<RawClient> = (0..2).map(|_| m.client()).collect();
    for w in &mut waiters {
        w.park("lock.acquire", vec![Value::from(lock)]);
    }
    let mut getter = m.client();
    let queue = getter.create("queue", Some("tasks"), vec![]);
    getter.park("queue.get", vec![Value::from(queue)]);

    let json = inspect(&m, &["--json"]);
    let stats: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("inspect --json prints JSON");
    let objects = field(&stats, "objects");
    let connections = field(&stats, "connections");

    let jobs = find(objects, "name", "jobs");
    assert_eq!(field(jobs, "kind"), "lock");
    assert_eq!(field(jobs, "id"), lock);
    assert_eq!(field(jobs, "parked"), 2, "{jobs:#}");
    let held_by = field(jobs, "held_by").as_array().expect("held_by");
    assert_eq!(held_by.len(), 1, "{jobs:#}");
    assert_eq!(field(&held_by[0], "count"), 1);
    assert_eq!(field(&held_by[0], "owned"), true);
    assert_eq!(field(&held_by[0], "thread"), 0);
    let waiting = field(jobs, "waiting").as_array().expect("waiting");
    assert!(waiting.iter().all(|w| field(w, "for") == "the lock"));

    // The holder is the connection that acquired: it holds the lock and waits for nothing.
    let holder_id = field(&held_by[0], "connection").as_str().expect("a uuid");
    let holder_conn = find(connections, "id", holder_id);
    let holds = field(holder_conn, "holds").as_array().expect("holds");
    assert_eq!(holds.len(), 1);
    assert_eq!(field(&holds[0], "object"), lock);
    assert_eq!(field(&holds[0], "name"), "jobs");
    assert_eq!(
        field(holder_conn, "waits").as_array().map(Vec::len),
        Some(0)
    );
    assert_eq!(
        field(holder_conn, "pid"),
        std::process::id(),
        "the peer of a Unix socket is this test process"
    );
    // Each acquirer is its own connection, waiting for the lock.
    for w in waiting {
        let id = field(w, "connection").as_str().expect("a uuid");
        assert_ne!(id, holder_id);
        let waits = field(find(connections, "id", id), "waits");
        assert_eq!(field(&waits[0], "object"), lock);
        assert_eq!(field(&waits[0], "for"), "the lock");
    }

    let tasks = find(objects, "name", "tasks");
    assert_eq!(field(tasks, "kind"), "queue");
    assert_eq!(field(tasks, "parked"), 1, "{tasks:#}");
    assert_eq!(field(tasks, "size"), 0);
    assert_eq!(field(&field(tasks, "waiting")[0], "for"), "an item");

    let totals = field(&stats, "totals");
    assert_eq!(field(totals, "parked"), 3);
    assert_eq!(field(totals, "objects"), 2);
    // The four clients and inspect's own connection (and perhaps the probe that saw the
    // manager listening, if the manager has not read its close yet).
    let open = connections.as_array().map_or(0, Vec::len);
    assert_eq!(field(totals, "connections"), open);
    assert!(open >= 5, "{connections:#}");
    assert_eq!(field(totals, "held"), 1);

    // The tables: the lock's row names its holder and its two waiters, the queue's its getter.
    let tables = String::from_utf8(inspect(&m, &[]).stdout).expect("UTF-8");
    let short = &holder_id[..8];
    let row = |name: &str| {
        tables
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{tables}"))
            .to_owned()
    };
    let jobs_row = row("jobs");
    assert!(
        jobs_row.contains(&format!("{short} thread 0")) && jobs_row.contains("the lock x2"),
        "{tables}"
    );
    assert!(row("tasks").contains("an item"), "{tables}");
    let total = tables
        .lines()
        .find(|l| l.starts_with("TOTAL  2 objects, "))
        .unwrap_or_else(|| panic!("no totals:\n{tables}"));
    assert!(
        total.contains("connections, 3 calls parked, 1 held"),
        "{tables}"
    );
    let holder_row = tables
        .lines()
        .find(|l| l.starts_with(short))
        .unwrap_or_else(|| panic!("no row for connection {short}:\n{tables}"));
    assert!(holder_row.contains("lock jobs"), "{tables}");

    // The metrics count the same parked calls and the calls made.
    let (status, metrics) = http_get(port, "GET", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{metrics}");
    assert_eq!(sample(&metrics, "agora_parked_calls"), 3.0);
    assert_eq!(
        sample(&metrics, "agora_calls_total{method=\"lock.acquire\"}"),
        3.0
    );
    assert_eq!(sample(&metrics, "agora_objects{kind=\"lock\"}"), 1.0);
    assert_eq!(sample(&metrics, "agora_objects{kind=\"queue\"}"), 1.0);
    // The four clients, once the manager has seen inspect's connections close.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut metrics = metrics;
    while sample(&metrics, "agora_connections") != 4.0 {
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        std::thread::sleep(Duration::from_millis(20));
        metrics = http_get(port, "GET", "/metrics").1;
    }
    // Those six, and the probe that saw the manager listening.
    assert_eq!(sample(&metrics, "agora_connections_accepted_total"), 7.0);
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");

    // Errors are counted by method.
    let err = holder.fail("dict.getitem", vec![Value::from(lock), Value::from("k")]);
    assert!(err.contains("TypeError"), "{err}");
    let (_, metrics) = http_get(port, "GET", "/metrics");
    assert_eq!(
        sample(&metrics, "agora_errors_total{method=\"dict.getitem\"}"),
        1.0
    );

    let (status, _) = http_get(port, "GET", "/other");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = http_get(port, "POST", "/metrics");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
}

/// `stats` on the wire: every field PROTOCOL.md 4.2.1 lists, with its type, for each kind of
/// entry; params are refused as for any method that takes none.
#[test]
fn the_stats_answer_has_the_documented_shape() {
    let m = ManagerProcess::start(&[]);
    let mut c = m.client();
    let dict = c.create("dict", None, vec![]);
    c.ok(
        "dict.setitem",
        vec![Value::from(dict), Value::from("k"), Value::from(1)],
    );
    let sem = c.create("semaphore", Some("slots"), vec![Value::from(2)]);
    c.ok(
        "semaphore.acquire",
        vec![Value::from(sem), Value::Nil, Value::Nil, Value::from(true)],
    );
    let stats = c.ok("stats", vec![]);
    assert_eq!(stats["store"].as_str(), Some("memory"));
    let keys = |v: &Value| -> Vec<String> {
        v.as_map()
            .expect("a map")
            .iter()
            .map(|(k, _)| k.as_str().expect("str keys").to_owned())
            .collect()
    };
    let get = |v: &Value, key: &str| -> Value {
        v.as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(key)))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {key} in {v}"))
    };
    assert_eq!(
        keys(&stats),
        [
            "run",
            "started",
            "store",
            "uptime",
            "totals",
            "objects",
            "connections"
        ]
    );
    assert!(get(&stats, "run").is_str() && get(&stats, "started").is_u64());
    assert!(get(&stats, "uptime").is_f64());
    assert_eq!(
        keys(&get(&stats, "totals")),
        [
            "objects",
            "connections",
            "parked",
            "held",
            "accepted",
            "calls",
            "errors"
        ]
    );

    let objects = get(&stats, "objects");
    let objects = objects.as_array().expect("objects");
    assert_eq!(objects.len(), 2);
    for o in objects {
        assert_eq!(
            keys(o),
            ["id", "name", "kind", "holders", "size", "held_by", "parked", "waiting"]
        );
    }
    // In the order of creation; a dict's size is its entries, a semaphore's its free permits.
    assert_eq!(get(&objects[0], "id"), Value::from(dict));
    assert_eq!(get(&objects[0], "name"), Value::Nil);
    assert_eq!(get(&objects[0], "size"), Value::from(1));
    assert_eq!(get(&objects[0], "holders"), Value::from(1));
    assert_eq!(get(&objects[1], "size"), Value::from(1));
    let held = get(&objects[1], "held_by");
    let held = held.as_array().expect("held_by");
    assert_eq!(keys(&held[0]), ["connection", "thread", "count", "owned"]);
    assert_eq!(
        get(&held[0], "thread"),
        Value::Nil,
        "permits are held per connection"
    );

    let connections = get(&stats, "connections");
    let connections = connections.as_array().expect("connections");
    assert_eq!(connections.len(), 1);
    let me = &connections[0];
    assert_eq!(
        keys(me),
        [
            "id",
            "peer",
            "pid",
            "seconds",
            "authenticated",
            "calls",
            "errors",
            "parked",
            "holds",
            "waits"
        ]
    );
    assert_eq!(get(me, "authenticated"), Value::from(true));
    // hello, auth, 2 creates, setitem, acquire, and stats itself.
    assert_eq!(get(me, "calls"), Value::from(7));
    assert_eq!(get(me, "errors"), Value::from(0));
    let id = get(me, "id");
    assert!(uuid_like(id.as_str().expect("a str")), "{id}");
    assert_eq!(get(&held[0], "connection"), id);
    let holds = get(me, "holds");
    assert_eq!(keys(&holds[0]), ["object", "kind", "name", "count"]);
    assert_eq!(get(&holds[0], "name"), Value::from("slots"));

    let err = c.fail("stats", vec![Value::Nil]);
    assert!(err.contains("ArgumentCountError"), "{err}");
    // An unauthenticated connection is refused, as for every method but hello and auth.
    let mut stranger = m.connect();
    let err = stranger.fail("stats", vec![]);
    assert!(err.contains("AuthenticationError"), "{err}");
}

fn uuid_like(s: &str) -> bool {
    let groups: Vec<usize> = s.split('-').map(str::len).collect();
    groups == [8, 4, 4, 4, 12] && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

/// `inspect` with no address, or a wrong key, fails with a message saying what to do.
#[test]
fn inspect_without_an_address_or_with_a_wrong_key_says_so() {
    let output = Command::new(BIN)
        .arg("inspect")
        .env_remove("AGORA_ADDRESS")
        .env("AGORA_AUTHKEY", KEY_HEX)
        .output()
        .expect("run agora-manager inspect");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--address"), "{stderr}");

    let m = ManagerProcess::start(&[]);
    let output = Command::new(BIN)
        .arg("inspect")
        .arg("--address")
        .arg(format!("unix:{}", m.socket().display()))
        .env("AGORA_AUTHKEY", "00ff")
        .output()
        .expect("run agora-manager inspect");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach the manager"), "{stderr}");
}

/// `inspect` given a list of addresses (as `AGORA_ADDRESS` holds for a client of several
/// managers) inspects the first manager that answers.
#[test]
fn inspect_given_a_list_inspects_the_first_manager_that_answers() {
    let m = ManagerProcess::start(&[]);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let gone = format!("unix:{}", dir.path().join("nobody.sock").display());
    let output = Command::new(BIN)
        .arg("inspect")
        .env(
            "AGORA_ADDRESS",
            format!("{gone},unix:{}", m.socket().display()),
        )
        .env("AGORA_AUTHKEY", KEY_HEX)
        .output()
        .expect("run agora-manager inspect");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("manager run"));
}
