//! A stale reference never reaches another object: a token of one run of a manager is refused
//! by a manager restarted at the same address with the same authkey (whose ids start over),
//! and by a client of another manager; the new run's objects stay as they were.
//!
//! Runs the real `agora-manager` binary and the Rust client.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use agora_client::{Address, Client, Dict, ErrorName, List};

const BIN: &str = env!("CARGO_BIN_EXE_agora-manager");
const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn key() -> Vec<u8> {
    hex::decode(KEY_HEX).unwrap()
}

/// A running `agora-manager`, killed and reaped when dropped.
struct Manager {
    child: Child,
    /// The words of its ready line after `agora-manager ready`.
    ready: Vec<String>,
}

impl Manager {
    /// Starts a manager listening on `listen` with the test key, and waits for its ready line.
    fn start(listen: &[&str]) -> Manager {
        let mut cmd = Command::new(BIN);
        for address in listen {
            cmd.arg("--listen").arg(address);
        }
        let mut child = cmd
            .env("AGORA_AUTHKEY", KEY_HEX)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run agora-manager");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready = line
            .trim()
            .strip_prefix("agora-manager ready ")
            .unwrap_or_else(|| panic!("not a ready line: {line:?}"))
            .split(' ')
            .map(str::to_owned)
            .collect();
        Manager { child, ready }
    }

    /// The run id on the ready line.
    fn run(&self) -> &str {
        self.ready
            .iter()
            .find_map(|w| w.strip_prefix("run="))
            .expect("the ready line names the run")
    }

    /// The `i`th address on the ready line.
    fn address(&self, i: usize) -> Address {
        self.ready[i].parse().unwrap()
    }

    fn client(&self, i: usize) -> Client {
        Client::connect(&self.address(i), &key()).unwrap()
    }

    /// Stops the manager with SIGTERM and waits until it has exited (its socket removed).
    fn stop(mut self) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_token_of_a_restarted_manager_is_an_unknown_object() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix:{}", dir.path().join("m.sock").display());

    let first = Manager::start(&[&address]);
    let first_run = first.run().to_owned();
    let c = first.client(0);
    assert_eq!(c.manager_run().id, first_run);
    let old = c.list::<i64>().unwrap();
    old.extend([1, 2, 3]).unwrap();
    let token = old.token().unwrap();
    assert!(token.ends_with(&format!("#{first_run}")), "{token}");
    drop((old, c));
    first.stop();

    // The same address and key: the new run may well hand out the old ids again.
    let second = Manager::start(&[&address]);
    let second_run = second.run().to_owned();
    assert_ne!(first_run, second_run);
    let c = second.client(0);
    let list = c.list::<i64>().unwrap();
    list.extend([10, 20]).unwrap();
    let dict = c.dict::<String, i64>().unwrap();
    dict.set("a", &1).unwrap();

    let err = List::<i64>::from_token(&c, &token).unwrap_err();
    assert!(err.is(ErrorName::UnknownObjectError), "{err}");
    assert_eq!(err.remote_name(), Some("UnknownObjectError"));
    let text = err.to_string();
    for part in [
        format!("this proxy belongs to run {first_run}"),
        format!("the manager at {address} is run {second_run}, started at "),
        "the object no longer exists".to_owned(),
    ] {
        assert!(text.contains(&part), "{part:?} in {text}");
    }
    // Whatever kind the token names.
    let as_dict = token.replacen(":list:", ":dict:", 1);
    let err = Dict::<String, i64>::from_token(&c, &as_dict).unwrap_err();
    assert!(err.is(ErrorName::UnknownObjectError), "{err}");

    // The new run's objects are untouched.
    assert_eq!(list.copy().unwrap(), [10, 20]);
    assert_eq!(dict.items().unwrap(), [("a".to_owned(), 1)]);
    // And a token of the new run works.
    let again = List::<i64>::from_token(&c, &list.token().unwrap()).unwrap();
    assert_eq!(again.copy().unwrap(), [10, 20]);
    second.stop();
}

#[test]
fn from_token_compares_runs_not_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let a_address = format!("unix:{}", dir.path().join("a.sock").display());
    let b_address = format!("unix:{}", dir.path().join("b.sock").display());
    // One manager on two addresses, and another manager.
    let a = Manager::start(&[&a_address, "tcp:127.0.0.1:0"]);
    let b = Manager::start(&[&b_address]);
    let (a_unix, a_tcp, b_client) = (a.client(0), a.client(1), b.client(0));

    let list = a_unix.list::<i64>().unwrap();
    list.append(&7).unwrap();
    let token = list.token().unwrap();

    // The same run through its other address: the same object.
    let same = List::<i64>::from_token(&a_tcp, &token).unwrap();
    assert_eq!(same.copy().unwrap(), [7]);

    // Another manager, which may well have an object with that id.
    b_client.list::<i64>().unwrap();
    let err = List::<i64>::from_token(&b_client, &token).unwrap_err();
    assert!(err.is(ErrorName::UnknownObjectError), "{err}");
    let text = err.to_string();
    for part in [a.run(), b.run(), a_address.as_str(), b_address.as_str()] {
        assert!(text.contains(part), "{part:?} in {text}");
    }
}

/// A raw client that kept the first run's ids and calls them on the second run: every call is
/// `UnknownObjectError`, and the second run's objects are as their owner left them.
#[test]
fn a_raw_client_with_ids_of_an_earlier_run_reaches_nothing() {
    use agora_proto::testing::RawClient;
    use rmpv::Value;

    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix:{}", dir.path().join("m.sock").display());
    let raw = |m: &Manager| {
        let mut c = RawClient::connect(&m.address(0).to_string()).unwrap();
        c.authenticate(&key());
        c
    };
    let kinds = ["list", "dict", "lock"];

    let first = Manager::start(&[&address]);
    let mut c = raw(&first);
    let old: Vec<u64> = kinds.iter().map(|k| c.create(k, None, vec![])).collect();
    drop(c);
    first.stop();

    let second = Manager::start(&[&address]);
    let mut owner = raw(&second);
    let new: Vec<u64> = kinds
        .iter()
        .map(|k| owner.create(k, None, vec![]))
        .collect();
    owner.ok("list.append", vec![new[0].into(), 1.into()]);
    owner.ok("dict.setitem", vec![new[1].into(), "k".into(), 1.into()]);

    let mut stale = raw(&second);
    let calls: [(&str, Vec<Value>); 3] = [
        ("list.append", vec![old[0].into(), 666.into()]),
        ("dict.setitem", vec![old[1].into(), "k".into(), 666.into()]),
        ("lock.acquire", vec![old[2].into(), false.into()]),
    ];
    for (method, params) in calls {
        assert_eq!(stale.fail(method, params), "UnknownObjectError", "{method}");
    }
    assert_eq!(
        owner.ok("list.copy", vec![new[0].into()]),
        Value::Array(vec![1.into()])
    );
    assert_eq!(
        owner.ok("dict.get", vec![new[1].into(), "k".into()]),
        Value::from(1)
    );
    assert_eq!(
        owner.ok("lock.locked", vec![new[2].into()]),
        Value::Boolean(false)
    );
    second.stop();
}
