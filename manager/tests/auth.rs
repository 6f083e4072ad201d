//! Authentication as an operator sees it, on the real binary: guessing slowed down per peer,
//! strangers that send anything but `hello` and `auth` closed with one log line, weak or
//! exposed keys and plain TCP on a public address reported at start, and the admin role.

mod real_binary;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use agora_proto::testing::{hmac_sha256, RawClient};
use real_binary::{ManagerProcess, BIN};
use rmpv::Value;

/// An admin key, as `--admin-authkey-file` would hold it.
const ADMIN_HEX: &str = "61646d696e206b65793a20746865206f70657261746f722773206f776e206f6e";

/// How long the guessing loop runs.
const WINDOW: Duration = Duration::from_secs(3);

/// One `auth` attempt with a wrong key on a fresh connection: whether the manager checked it
/// (`wrong digest`) rather than refusing it unchecked.
fn guess(address: &str) -> bool {
    let mut c = RawClient::connect(address).expect("connect");
    let digest = hmac_sha256(b"a guess", &c.hello());
    let err = c
        .call("auth", vec![Value::Binary(digest)])
        .expect_err("a wrong key fails");
    assert_eq!(err.name, "AuthenticationError");
    c.expect_closed();
    err.message.contains("wrong digest")
}

/// Guesses from one peer (TCP from 127.0.0.1, on four connections at a time) are checked at
/// most at the throttle's rate, while another peer (a Unix socket client) authenticates as
/// often as it likes meanwhile.
#[test]
fn guessing_from_one_peer_is_capped_while_another_authenticates_freely() {
    // 5 at once, then 4 a second: the defaults.
    let (m, checked) = guess_for_a_while(&[], 5, 4.0);
    let log = m.log();
    let failures = log.matches("authentication failed").count();
    assert_eq!(
        failures as u32, checked,
        "one warning per failed attempt:\n{log}"
    );
    assert!(log.contains("WARN"), "{log}");
    // Quoted, as every string value of the text format is (a Unix peer is `"uid 1000"`).
    assert!(
        log.contains(r#"from="127.0.0.1""#),
        "the peer is named:\n{log}"
    );
    assert!(
        !log.contains("WITHOUT TLS"),
        "loopback TCP is not warned about:\n{log}"
    );
}

/// `--auth-burst` and `--auth-interval` set the rate guesses are checked at.
#[test]
fn the_guessing_rate_follows_its_flags() {
    guess_for_a_while(&["--auth-burst", "2", "--auth-interval", "1"], 2, 1.0);
}

/// Runs a manager with `flags`, guesses from four TCP connections of one peer while a Unix
/// client authenticates for [`WINDOW`], and checks that the guesses checked stayed within
/// `burst` at once then `per_second`, and that the other peer was not held back. Returns the
/// manager and the number of guesses checked.
fn guess_for_a_while(flags: &[&str], burst: u32, per_second: f64) -> (ManagerProcess, u32) {
    let mut args = vec!["--listen", "tcp:127.0.0.1:0"];
    args.extend_from_slice(flags);
    let mut m = ManagerProcess::start(&args);
    let tcp = m.address("tcp");
    let started = Instant::now();
    let guessers: Vec<_> = (0..4)
        .map(|_| {
            let tcp = tcp.clone();
            thread::spawn(move || {
                let mut checked = 0u32;
                while started.elapsed() < WINDOW {
                    checked += u32::from(guess(&tcp));
                }
                checked
            })
        })
        .collect();
    let mut honest = 0u32;
    while started.elapsed() < WINDOW {
        m.client();
        honest += 1;
    }
    let checked: u32 = guessers.into_iter().map(|g| g.join().unwrap()).sum();
    // The last guesses may have waited for their place past the window; one for rounding.
    let elapsed = started.elapsed().as_secs_f64();
    let cap = burst + (elapsed * per_second).ceil() as u32 + 1;
    println!("{checked} guesses checked in {elapsed:.1} s (cap {cap}); {honest} honest auths");
    assert!(checked >= burst, "the burst goes through: {checked}");
    assert!(checked <= cap, "{checked} guesses checked, more than {cap}");
    assert!(
        honest > cap,
        "the other peer was slowed down: {honest} auths"
    );
    (m, checked)
}

/// An HTTP request sent to the manager reads as a run of MessagePack ints: the first one
/// closes the connection, with one log line, where each used to be logged and dropped.
#[test]
fn garbage_before_authentication_closes_the_connection_with_one_log_line() {
    let m = ManagerProcess::start_with_env(&[], &[("RUST_LOG", "debug")]);
    let mut stream = std::os::unix::net::UnixStream::connect(m.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: manager\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .expect("closed, not timed out");
    let notice = rmpv::decode::read_value(&mut answer.as_slice()).expect("a notification");
    assert!(
        notice.to_string().contains("AuthenticationError"),
        "{notice}"
    );
    m.expect_log("before authenticating");
    // Time for any further lines to be written.
    thread::sleep(Duration::from_millis(200));
    let log = m.log();
    assert_eq!(log.matches("before authenticating").count(), 1, "{log}");
    assert_eq!(log.matches("bad envelope").count(), 0, "{log}");

    // A call other than hello and auth is answered, then the connection closes.
    let mut c = m.connect();
    assert_eq!(c.fail("objects", vec![]), "AuthenticationError");
    c.expect_closed();
}

/// Starts the binary with these arguments and environment, expecting it to refuse to start;
/// gives what it wrote on stderr.
fn refused_start(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("--listen")
        .arg(format!("unix:{}", dir.path().join("m.sock").display()))
        .args(args)
        .env_remove("AGORA_AUTHKEY")
        .env_remove("AGORA_ADMIN_AUTHKEY")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agora-manager");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the manager started with {args:?} {env:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "{stderr}");
    stderr
}

#[test]
fn a_short_authkey_is_warned_about_and_an_empty_one_refused() {
    let short = ManagerProcess::start_with_env(&[], &[("AGORA_AUTHKEY", "0011223344")]);
    short.expect_log("the authkey is 5 bytes long, fewer than 16");
    assert!(short.log().contains("WARN"), "{}", short.log());

    let err = refused_start(&[], &[("AGORA_AUTHKEY", "")]);
    assert!(err.contains("empty authkey"), "{err}");
}

#[test]
fn require_strong_authkey_refuses_a_short_key() {
    let err = refused_start(
        &["--require-strong-authkey"],
        &[("AGORA_AUTHKEY", "0011223344")],
    );
    assert!(err.contains("fewer than 16"), "{err}");
    assert!(err.contains("--require-strong-authkey"), "{err}");
    // A short admin key too.
    let err = refused_start(
        &["--require-strong-authkey"],
        &[
            ("AGORA_AUTHKEY", real_binary::KEY_HEX),
            ("AGORA_ADMIN_AUTHKEY", "00112233"),
        ],
    );
    assert!(err.contains("admin authkey is 4 bytes long"), "{err}");
}

#[test]
fn an_admin_key_that_is_the_authkey_is_refused() {
    let err = refused_start(
        &[],
        &[
            ("AGORA_AUTHKEY", real_binary::KEY_HEX),
            ("AGORA_ADMIN_AUTHKEY", real_binary::KEY_HEX),
        ],
    );
    assert!(err.contains("the admin authkey is the authkey"), "{err}");
}

/// Writes `hex` to a key file of this mode in a fresh directory.
fn key_file(hex: &str, mode: u32) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, hex).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    let path = path.display().to_string();
    (dir, path)
}

#[test]
fn a_worker_key_cannot_shut_down_and_the_admin_key_can() {
    let (_dir, admin_file) = key_file(ADMIN_HEX, 0o600);
    let mut m = ManagerProcess::start(&["--admin-authkey-file", &admin_file]);
    let mut worker = m.client();
    let id = worker.create("dict", None, vec![]);
    assert_eq!(worker.ok("dict.len", vec![Value::from(id)]), Value::from(0));
    for method in ["shutdown", "stats"] {
        let err = worker.call(method, vec![]).expect_err(method);
        assert_eq!(err.name, "PermissionError", "{method}: {}", err.message);
        assert!(err.message.contains("admin authkey"), "{}", err.message);
    }
    // The connection goes on.
    assert_eq!(worker.ok("ping", vec![]), Value::from("pong"));

    let mut admin = m.connect();
    admin.authenticate(&hex::decode(ADMIN_HEX).unwrap());
    let stats = admin.ok("stats", vec![]);
    assert!(stats.as_map().is_some(), "{stats}");
    assert_eq!(admin.ok("shutdown", vec![]), Value::Boolean(true));
    assert!(m.wait_exit().success(), "{}", m.log());
    assert!(!m.log().contains("readable by its group"), "{}", m.log());
}

/// Asserts that `c`'s `delete` of `target` is refused because one other connection holds it.
fn refused_delete(c: &mut RawClient, target: Value) {
    let err = c.call("delete", vec![target]).expect_err("held elsewhere");
    assert_eq!(err.name, "PermissionError", "{}", err.message);
    assert!(err.message.contains("held by 1 other"), "{}", err.message);
    assert!(err.message.contains("admin authkey"), "{}", err.message);
}

/// Beside an admin key, a worker deletes only objects nobody else holds, by id or by name, so
/// that it cannot pull an object out from under the others; the admin's delete is forced.
#[test]
fn a_worker_deletes_only_what_nobody_else_holds_and_the_admin_deletes_anything() {
    let (_dir, admin_file) = key_file(ADMIN_HEX, 0o600);
    let m = ManagerProcess::start(&["--admin-authkey-file", &admin_file]);
    let (mut a, mut b) = (m.client(), m.client());
    let mut admin = m.connect();
    admin.authenticate(&hex::decode(ADMIN_HEX).unwrap());

    // Held by both workers: refused, and the object goes on for its other holder.
    let id = a.create("dict", None, vec![]);
    b.ok("incref", vec![id.into()]);
    refused_delete(&mut a, id.into());
    let item = vec![id.into(), "k".into(), 1.into()];
    assert_eq!(b.ok("dict.setitem", item), Value::Nil);
    assert_eq!(admin.ok("delete", vec![id.into()]), Value::Boolean(true));
    let err = b.call("dict.len", vec![id.into()]).expect_err("deleted");
    assert_eq!(err.name, "UnknownObjectError", "{}", err.message);

    // The same by name.
    let named = a.create("list", Some("shared"), vec![]);
    b.ok("incref", vec![named.into()]);
    refused_delete(&mut a, "shared".into());
    assert_eq!(b.ok("list.len", vec![named.into()]), Value::from(0));
    assert_eq!(
        admin.ok("delete", vec!["shared".into()]),
        Value::Boolean(true)
    );
    let err = b.call("list.len", vec![named.into()]).expect_err("deleted");
    assert_eq!(err.name, "UnknownObjectError", "{}", err.message);

    // Held by the deleting connection alone (twice: still one holder), by id and by name.
    let mine = a.create("dict", None, vec![]);
    a.ok("incref", vec![mine.into()]);
    assert_eq!(a.ok("delete", vec![mine.into()]), Value::Boolean(true));
    b.create("list", Some("own"), vec![]);
    assert_eq!(b.ok("delete", vec!["own".into()]), Value::Boolean(true));

    // A named object nobody holds: any worker may delete it.
    let loose = a.create("dict", Some("loose"), vec![]);
    a.ok("decref", vec![Value::Array(vec![loose.into(), 1.into()])]);
    assert_eq!(b.ok("delete", vec!["loose".into()]), Value::Boolean(true));
    let err = a.call("lookup", vec!["loose".into()]).expect_err("deleted");
    assert_eq!(err.name, "KeyError", "{}", err.message);
}

/// Without an admin key every authenticated connection is admin, as before there was one.
#[test]
fn without_an_admin_key_the_authkey_may_shut_down() {
    let mut m = ManagerProcess::start(&[]);
    let mut c = m.client();
    // A delete is forced too: another connection's hold does not stop it.
    let id = c.create("dict", None, vec![]);
    let mut other = m.client();
    other.ok("incref", vec![id.into()]);
    assert_eq!(c.ok("delete", vec![id.into()]), Value::Boolean(true));
    assert!(c.ok("stats", vec![]).as_map().is_some());
    assert_eq!(c.ok("shutdown", vec![]), Value::Boolean(true));
    assert!(m.wait_exit().success(), "{}", m.log());
}

#[test]
fn a_key_file_its_group_may_read_is_warned_about() {
    let (_dir, file) = key_file(real_binary::KEY_HEX, 0o640);
    let m = ManagerProcess::start_with_env(&["--authkey-file", &file], &[]);
    m.expect_log("readable by its group or by others");
    let (_dir, admin_file) = key_file(ADMIN_HEX, 0o604);
    let m = ManagerProcess::start(&["--admin-authkey-file", &admin_file]);
    m.expect_log("readable by its group or by others");
    // The key still works.
    drop(m.client());
}

#[test]
fn plain_tcp_on_a_public_address_is_warned_about() {
    let m = ManagerProcess::start(&["--listen", "tcp:0.0.0.0:0"]);
    m.expect_log("WITHOUT TLS");
    assert!(m.log().contains("tcp:0.0.0.0:"), "{}", m.log());
}

/// `inspect` with the worker key of a manager that has an admin key says which key it needs.
#[test]
fn inspect_with_the_worker_key_asks_for_the_admin_key() {
    let (_dir, admin_file) = key_file(ADMIN_HEX, 0o600);
    let m = ManagerProcess::start(&["--admin-authkey-file", &admin_file]);
    let address = format!("unix:{}", m.socket().display());
    let inspect = |env: (&str, &str)| {
        Command::new(BIN)
            .args(["inspect", "--address", &address])
            .env_remove("AGORA_AUTHKEY")
            .env_remove("AGORA_ADMIN_AUTHKEY")
            .env(env.0, env.1)
            .output()
            .expect("run inspect")
    };
    let out = inspect(("AGORA_AUTHKEY", real_binary::KEY_HEX));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("admin authkey"), "{stderr}");
    let out = inspect(("AGORA_ADMIN_AUTHKEY", ADMIN_HEX));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
