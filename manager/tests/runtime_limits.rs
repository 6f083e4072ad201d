//! The limits an operator changes while the manager runs (`limits`, PROTOCOL.md section 4.2),
//! on the real binary: reserved to the admin key; `max_connections` moved down and up with
//! connections open; `max_in_flight` lowered for the next parked call; bad entries refused
//! with nothing changed; the message limits refused; `agora-manager limits` and the Rust
//! client's methods.

mod real_binary;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use agora_proto::testing::{dec, RawClient};
use real_binary::{key, ManagerProcess, BIN, KEY_HEX};
use rmpv::Value;

/// The admin key, as `--admin-authkey-file` holds it.
const ADMIN_HEX: &str = "6c696d6974732061646d696e206b65792c207468697274792074776f20627974";

/// A manager with an admin key, and the directory holding the key's file.
fn with_admin_key(args: &[&str]) -> (ManagerProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("admin.key");
    std::fs::write(&file, ADMIN_HEX).expect("write the key");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut all = vec!["--admin-authkey-file", file.to_str().expect("UTF-8 path")];
    all.extend_from_slice(args);
    (ManagerProcess::start(&all), dir)
}

/// A connection authenticated with the admin key.
fn admin(m: &ManagerProcess) -> RawClient {
    let mut c = m.connect();
    c.authenticate(&hex::decode(ADMIN_HEX).expect("hex"));
    c
}

/// A `limits` map of these entries.
fn map(entries: &[(&str, Value)]) -> Value {
    Value::Map(
        entries
            .iter()
            .map(|(k, v)| (Value::from(*k), v.clone()))
            .collect(),
    )
}

/// Entry `name` of a `limits` answer.
fn entry(limits: &Value, name: &str) -> Value {
    limits
        .as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(name)))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {name} in {limits}"))
}

#[test]
fn a_worker_key_is_refused_limits_and_the_admin_key_reads_and_sets_them() {
    let (m, _dir) = with_admin_key(&[
        "--max-connections",
        "40",
        "--max-in-flight",
        "30",
        "--auth-timeout",
        "2.5",
    ]);
    let mut worker = m.client();
    let err = worker.call("limits", vec![]).expect_err("a worker may not");
    assert_eq!(err.name, "PermissionError", "{}", err.message);
    assert!(err.message.contains("admin authkey"), "{}", err.message);
    let err = worker
        .call("limits", vec![map(&[("max_in_flight", Value::from(1))])])
        .expect_err("a worker may not");
    assert_eq!(err.name, "PermissionError", "{}", err.message);

    let mut admin = admin(&m);
    let now = admin.ok("limits", vec![]);
    assert_eq!(now.as_map().map(Vec::len), Some(4), "{now}");
    assert_eq!(entry(&now, "max_connections"), Value::from(40));
    assert_eq!(
        entry(&now, "max_in_flight"),
        Value::from(30),
        "the worker's try changed it"
    );
    assert_eq!(
        entry(&now, "max_output_bytes"),
        Value::from(32 * 1024 * 1024)
    );
    assert_eq!(entry(&now, "auth_timeout"), Value::from(2.5));

    let set = map(&[
        ("max_output_bytes", Value::from(4096)),
        ("auth_timeout", Value::from(7)),
    ]);
    let now = admin.ok("limits", vec![set]);
    assert_eq!(entry(&now, "max_output_bytes"), Value::from(4096));
    assert_eq!(entry(&now, "auth_timeout"), Value::from(7.0));
    assert_eq!(entry(&now, "max_connections"), Value::from(40), "kept");
    m.expect_log("limit changed");
    let log = m.log();
    let line = log
        .lines()
        .find(|l| l.contains("limit changed") && l.contains("max_output_bytes"))
        .unwrap_or_else(|| panic!("no line for max_output_bytes:\n{log}"));
    assert!(line.contains("33554432") && line.contains("4096"), "{line}");
    assert!(line.contains("conn"), "the connection's span: {line}");
}

#[test]
fn lowering_max_connections_refuses_new_ones_and_raising_it_admits_again() {
    let m = ManagerProcess::start(&["--max-connections", "10"]);
    // Without an admin key every authenticated connection is admin.
    let mut open: Vec<RawClient> = (0..3).map(|_| m.client()).collect();
    let lowered = open[0].ok("limits", vec![map(&[("max_connections", Value::from(2))])]);
    assert_eq!(entry(&lowered, "max_connections"), Value::from(2));

    // Three open, two allowed: nobody is closed, the next one is refused.
    let mut refused = m.connect();
    let v = dec(&refused.frame());
    assert_eq!(v[1], Value::from("error"), "{v}");
    assert_eq!(v[2][0], Value::from("LimitError"), "{v}");
    assert!(
        v[2][1].as_str().is_some_and(|s| s.contains("(2 at most)")),
        "{v}"
    );
    refused.expect_closed();
    for c in &mut open {
        assert_eq!(c.ok("ping", vec![]), Value::from("pong"));
    }

    let raised = open[1].ok("limits", vec![map(&[("max_connections", Value::from(5))])]);
    assert_eq!(entry(&raised, "max_connections"), Value::from(5));
    let mut admitted: Vec<RawClient> = (0..2).map(|_| m.client()).collect();
    for c in &mut admitted {
        assert_eq!(c.ok("ping", vec![]), Value::from("pong"));
    }
    // Five open: the sixth is refused again.
    let mut refused = m.connect();
    let v = dec(&refused.frame());
    assert_eq!(v[2][0], Value::from("LimitError"), "{v}");
}

#[test]
fn lowering_max_in_flight_refuses_the_next_parked_call_beyond_it() {
    let m = ManagerProcess::start(&["--max-in-flight", "100"]);
    let mut holder = m.client();
    let lock = Value::from(holder.create("lock", None, vec![]));
    holder.ok("lock.acquire", vec![lock.clone()]);

    let mut waiter = m.client();
    waiter.park("lock.acquire", vec![lock.clone()]);
    waiter.park("lock.acquire", vec![lock.clone()]);
    holder.ok("limits", vec![map(&[("max_in_flight", Value::from(2))])]);
    // Two parked, two allowed: the third is refused and the connection closed.
    let err = waiter
        .call("lock.acquire", vec![lock.clone()])
        .expect_err("past max_in_flight");
    assert_eq!(err.name, "LimitError", "{}", err.message);
    assert!(err.message.contains("more than 2 calls"), "{}", err.message);
    waiter.expect_closed();

    // Another connection may park as many as the new limit.
    let mut other = m.client();
    other.park("lock.acquire", vec![lock.clone()]);
    other.park("lock.acquire", vec![lock.clone()]);
    assert_eq!(other.ok("ping", vec![]), Value::from("pong"));
}

#[test]
fn a_bad_entry_changes_nothing_and_says_which() {
    let m = ManagerProcess::start(&[]);
    let mut c = m.client();
    let before = c.ok("limits", vec![]);
    let good = ("max_in_flight", Value::from(3));
    for (bad, name, said) in [
        (
            ("max_connections", Value::from(0)),
            "ValueError",
            "max_connections",
        ),
        (
            ("max_output_bytes", Value::from(-1)),
            "ValueError",
            "max_output_bytes",
        ),
        (
            ("max_in_flight", Value::from(1.5)),
            "TypeError",
            "max_in_flight",
        ),
        (
            ("auth_timeout", Value::from(-2)),
            "ValueError",
            "auth_timeout",
        ),
        (
            ("auth_timeout", Value::from("10")),
            "TypeError",
            "auth_timeout",
        ),
        (
            ("max_conections", Value::from(9)),
            "ValueError",
            "max_conections",
        ),
        (
            ("max_message_bytes", Value::from(1 << 20)),
            "ValueError",
            "cannot change",
        ),
        (("max_depth", Value::from(8)), "ValueError", "cannot change"),
        (
            ("max_container_len", Value::from(8)),
            "ValueError",
            "cannot change",
        ),
    ] {
        let err = c
            .call("limits", vec![map(&[good.clone(), bad.clone()])])
            .expect_err("a bad entry");
        assert_eq!(err.name, name, "{bad:?}: {}", err.message);
        assert!(err.message.contains(said), "{bad:?}: {}", err.message);
    }
    for params in [
        vec![Value::from(3)],
        vec![map(&[]), Value::Nil],
        vec![Value::Map(vec![(Value::from(1), Value::from(1))])],
    ] {
        let shown = Value::Array(params.clone());
        let err = c.call("limits", params).expect_err("bad params");
        assert!(
            ["TypeError", "ArgumentCountError"].contains(&err.name.as_str()),
            "{shown}: {err:?}"
        );
    }
    assert_eq!(c.ok("limits", vec![]), before, "nothing changed");
    assert!(!m.log().contains("limit changed"), "{}", m.log());
}

/// `agora-manager limits` run against `m`'s socket, with these extra arguments.
fn cli(m: &ManagerProcess, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("limits")
        .arg("--address")
        .arg(format!("unix:{}", m.socket().display()))
        .args(args)
        .env("AGORA_AUTHKEY", KEY_HEX)
        .env_remove("AGORA_ADMIN_AUTHKEY")
        .output()
        .expect("run agora-manager limits")
}

#[test]
fn the_limits_command_shows_and_sets_them() {
    let m = ManagerProcess::start(&["--max-connections", "20"]);
    let out = cli(&m, &[]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(text.lines().any(|l| l == "max_connections 20"), "{text}");
    assert!(text.lines().any(|l| l == "auth_timeout 10"), "{text}");

    let out = cli(
        &m,
        &[
            "--set",
            "max_in_flight=9",
            "--set",
            "auth_timeout=0.5",
            "--json",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["max_in_flight"], 9, "{json}");
    assert_eq!(json["auth_timeout"], 0.5, "{json}");
    assert_eq!(json["max_connections"], 20, "{json}");

    // Spaces around the value, as a shell-quoted `--set` may carry, are not part of it.
    let out = cli(&m, &["--set", "max_in_flight= 9 ", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["max_in_flight"], 9, "{json}");

    let out = cli(&m, &["--set", "max_depth=4", "--set", "max_in_flight=1"]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_depth cannot change"), "{stderr}");
    let out = cli(&m, &["--set", "max_in_flight"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NAME=VALUE"),
        "{out:?}"
    );
    let mut c = m.client();
    assert_eq!(
        entry(&c.ok("limits", vec![]), "max_in_flight"),
        Value::from(9)
    );
}

#[test]
fn the_limits_command_with_a_worker_key_asks_for_the_admin_key() {
    let (m, _dir) = with_admin_key(&[]);
    let out = cli(&m, &[]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("keeps limits for admin connections"),
        "{stderr}"
    );
}

#[test]
fn the_rust_client_reads_and_sets_them() {
    let (m, _dir) = with_admin_key(&[]);
    let address: agora_client::Address = format!("unix:{}", m.socket().display())
        .parse()
        .expect("an address");
    let worker = agora_client::Client::connect(&address, &key()).expect("connect");
    let err = worker.limits().expect_err("a worker may not");
    assert!(err.is(agora_proto::ErrorName::PermissionError), "{err}");

    let admin_key = hex::decode(ADMIN_HEX).expect("hex");
    let client = agora_client::Client::connect(&address, &admin_key).expect("connect");
    let before = client.limits().expect("limits");
    assert_eq!(before.auth_timeout, Duration::from_secs(10));
    let after = client
        .set_limits(&agora_client::LimitChanges {
            max_in_flight: Some(12),
            auth_timeout: Some(Duration::from_millis(1500)),
            ..Default::default()
        })
        .expect("set_limits");
    assert_eq!(after.max_in_flight, 12);
    assert_eq!(after.auth_timeout, Duration::from_millis(1500));
    assert_eq!(after.max_connections, before.max_connections);
    let err = client
        .set_limits(&agora_client::LimitChanges {
            max_output_bytes: Some(0),
            ..Default::default()
        })
        .expect_err("below the minimum");
    assert!(err.is(agora_proto::ErrorName::ValueError), "{err}");
    assert_eq!(client.limits().expect("limits"), after);
}
