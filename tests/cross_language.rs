//! What Python writes, Rust reads back identically, and the other way round.
//!
//! The Python side (`tests/python/cross_language.py`) uses only the standard library and the
//! `msgpack` package, speaking the protocol as `PROTOCOL.md` describes it. If `msgpack` is not
//! importable, `tests/common/python.rs` installs it once into a directory of its own: no manual
//! step.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use agora::{Dict, List, Manager, ObjectRef};
use rmpv::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;

#[path = "common/python.rs"]
mod python;
use python::PythonDeps;

fn run_python(manager: &Manager, mode: &str, deps: &PythonDeps) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/cross_language.py");
    let out = manager
        .command("python3")
        .arg(script)
        .arg(mode)
        .env("PYTHONPATH", deps.python_path(&[]))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "the Python side ({mode}) failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stores `value` under `key` in dict `id`, typed as Rust knows it.
fn put<T: Serialize + DeserializeOwned>(manager: &Manager, id: u64, key: &str, value: T) {
    Dict::<String, T>::from_id(manager.client(), id)
        .set(key, &value)
        .unwrap();
}

#[test]
fn python_and_rust_read_each_others_values() {
    let deps = PythonDeps::ensure();
    let manager = Manager::spawn().expect("spawn the manager");

    run_python(&manager, "write", &deps);
    let from_python = manager.dict_named::<Value, Value>("from_python").unwrap();
    let get = |k: Value| from_python.getitem(&k).unwrap();
    assert_eq!(
        get("text".into()),
        Value::from("h\u{e9}llo \u{4e16}\u{754c}")
    );
    assert_eq!(get("small".into()), Value::from(5));
    assert_eq!(get("negative".into()), Value::from(-7));
    assert_eq!(get("big".into()), Value::from(u64::MAX));
    assert_eq!(get("float".into()), Value::F64(1.5));
    assert_eq!(get("true".into()), Value::Boolean(true));
    assert_eq!(get("none".into()), Value::Nil);
    assert_eq!(get("bytes".into()), Value::Binary(vec![0, 0xff, 0x10]));
    assert_eq!(
        get("list".into()),
        Value::Array(vec![
            1.into(),
            "two".into(),
            Value::F64(3.5),
            Value::Array(vec![Value::Nil])
        ])
    );
    assert_eq!(
        get("map".into()),
        Value::Map(vec![
            ("a".into(), 1.into()),
            ("b".into(), Value::Array(vec![true.into()]))
        ])
    );
    assert_eq!(get(42.into()), Value::from("an int key"));
    // Python wrote the key 2.0; the integer 2 is the same key.
    assert_eq!(get(2.into()), Value::from("a float key equal to 2"));
    // A reference to a shared list comes back as a reference, and as a live proxy.
    let reference = ObjectRef::from_value(&get("shared".into())).expect("an object reference");
    assert_eq!(reference.kind, "list");
    let shared = List::<i64>::from_id(manager.client(), reference.id);
    assert_eq!(shared.copy().unwrap(), vec![10, 20, 30]);

    let set = manager.set_named::<Value>("set_from_python").unwrap();
    // In insertion order, each element as first stored.
    assert_eq!(
        set.copy().unwrap(),
        vec![
            Value::F64(2.0),
            "b".into(),
            Value::Array(vec![1.into(), "a".into()]),
            "c".into(),
        ]
    );
    let set = manager.set_named::<i64>("set_from_rust").unwrap();
    set.update(&[1, 2, 3, 3]).unwrap();

    let from_rust = manager.dict_named::<String, Value>("from_rust").unwrap();
    let id = from_rust.id();
    put(
        &manager,
        id,
        "text",
        "\u{fc}n\u{ef}code \u{2713}".to_owned(),
    );
    put(&manager, id, "int", -123_456_789_012i64);
    put(&manager, id, "float", 0.25f64);
    put(&manager, id, "list", vec![1, 2, 3]);
    put(&manager, id, "tuple", (7, "seven".to_owned()));
    put(
        &manager,
        id,
        "bytes",
        serde_bytes::ByteBuf::from(vec![1u8, 2, 3]),
    );
    put(&manager, id, "none", Option::<i64>::None);
    put(
        &manager,
        id,
        "nested",
        HashMap::from([("inner".to_owned(), vec![1.5f64, 2.5])]),
    );
    Dict::<i64, String>::from_id(manager.client(), id)
        .set(&7, "an int key from rust")
        .unwrap();
    run_python(&manager, "read", &deps);
}

/// Runs `script` with `args` under python3, with the Python client (from the source tree) and
/// its dependencies importable; gives the lines it printed, failing the test if it failed.
fn client_lines(script: &str, args: &[&str]) -> Vec<String> {
    let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("client/python");
    let out = Command::new("python3")
        .args(["-c", script])
        .args(args)
        .env("PYTHONPATH", PythonDeps::ensure().python_path(&[&package]))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The Python client's list of methods the manager may park is the protocol's (it decides
/// which back-off a call's polling uses).
#[test]
fn python_knows_the_same_waiting_methods() {
    let script = "import agora.connection as c; print('\\n'.join(sorted(c.MAY_WAIT)))";
    let python = client_lines(script, &[]);
    let mut rust: Vec<String> = agora_proto::methods::MAY_WAIT
        .iter()
        .map(|m| m.to_string())
        .collect();
    rust.sort();
    assert_eq!(python, rust);
}

/// The Python client reads `AGORA_SPIN_US` by the rules of `agora_proto::spin`, value for
/// value: the same default (and none on one CPU), the same cap, the same values refused (which
/// the Python client then warns about and replaces by the default, as the Rust client does).
#[test]
fn python_parses_agora_spin_us_as_rust_does() {
    let values = [
        "",
        " \t",
        "0",
        "50",
        "007",
        " 30\n",
        "999",
        "1000",
        "10000000",
        "99999999999999999999999",
        "abc",
        "-1",
        "+5",
        "1.5",
        "1_000",
        "5 0",
        "\u{663}",
    ];
    let cpus = [1, 2, 8];
    // One line per value (unset first) and CPU count: the budget in microseconds, or "refused".
    let script = "import sys, agora.connection as c
for raw in [None] + sys.argv[1:]:
    for cpus in (1, 2, 8):
        try:
            print(c._parse_spin_us(raw, cpus))
        except ValueError:
            print('refused')";
    let python = client_lines(script, &values);
    let mut rust = Vec::new();
    let mut shown = Vec::new();
    for raw in std::iter::once(None).chain(values.map(Some)) {
        for cpus in cpus {
            let budget = agora_proto::spin::budget_from(raw.map(std::ffi::OsStr::new), cpus);
            rust.push(budget.map_or("refused".to_owned(), |b| b.as_micros().to_string()));
            shown.push(format!("{raw:?} on {cpus} CPUs"));
        }
    }
    assert_eq!(python.len(), rust.len(), "{python:?}");
    for ((python, rust), case) in python.iter().zip(&rust).zip(&shown) {
        assert_eq!(python, rust, "AGORA_SPIN_US={case}");
    }
}

/// Runs `script` under python3 with the Python client importable and connected to `manager`
/// (AGORA_ADDRESS, AGORA_AUTHKEY), failing the test if it fails.
fn run_client_script(manager: &Manager, script: &str) {
    let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("client/python");
    let out = manager
        .command("python3")
        .args(["-c", script])
        .env("PYTHONPATH", PythonDeps::ensure().python_path(&[&package]))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Python producer puts a str among the ints a Rust consumer reads as `Queue<i64>`: the
/// consumer's error holds the item (taken from the queue, so nowhere else), names the queue,
/// the expected and the found types, and the items after it are still there for a consumer
/// of the right type.
#[test]
fn a_python_item_of_the_wrong_type_is_in_the_rust_error() {
    let manager = Manager::spawn().expect("spawn the manager");
    let numbers = manager.queue_named::<i64>("numbers", 0).unwrap();
    run_client_script(
        &manager,
        "import agora\n\
         m = agora.connect()\n\
         q = m.named('numbers').Queue()\n\
         for item in (1, 'oops', 2, 3):\n    q.put(item)\n",
    );
    assert_eq!(numbers.get().unwrap(), 1);
    let err = numbers.get().unwrap_err();
    let decode = err.as_decode().expect("a decode error");
    assert_eq!(
        rmp_serde::from_slice::<String>(decode.raw()).unwrap(),
        "oops"
    );
    assert_eq!(decode.object(), Some(("queue", numbers.id())));
    assert_eq!(decode.object_name(), Some("numbers"));
    assert_eq!(decode.method(), Some("queue.get"));
    assert_eq!(decode.found(), "str");
    assert_eq!(decode.expected(), "i64");
    assert!(decode.applied());
    let text = err.to_string();
    for part in [
        "queue.get",
        "queue",
        "(\"numbers\")",
        "i64",
        "str",
        "\"oops\"",
        "taken from the queue",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
    // The item is the caller's now: decoded as what it is.
    assert_eq!(
        manager.client().decode::<String>(decode.raw()).unwrap(),
        "oops"
    );
    let again = manager.queue_named::<i64>("numbers", 0).unwrap();
    assert_eq!(again.get_many(10).unwrap(), vec![2, 3]);
    assert_eq!(numbers.qsize().unwrap(), 0);
}

/// Bulk reads name the bad entry, and the raw variants return every entry undecoded; a
/// read-modify-write whose result does not decode says that it was applied.
#[test]
fn bulk_reads_name_the_bad_entry() {
    let manager = Manager::spawn().expect("spawn the manager");
    let scores = manager.dict_named::<String, i64>("scores").unwrap();
    scores.set("alice", &1).unwrap();
    run_client_script(
        &manager,
        "import agora\n\
         m = agora.connect()\n\
         d = m.named('scores').dict()\n\
         d['bob'] = 2.5\n\
         d['carol'] = 3\n\
         v = m.named('counter').Value(None, 2.5)\n",
    );
    for err in [scores.items().unwrap_err(), scores.copy().unwrap_err()] {
        let d = err.as_decode().expect("a decode error");
        assert_eq!(
            (d.entry(), d.entry_key()),
            (Some(1), Some("\"bob\"")),
            "{err}"
        );
        assert_eq!((d.expected(), d.found()), ("i64", "float"), "{err}");
        assert!(!d.applied(), "{err}");
        assert!(err.to_string().contains("entry 1 (key \"bob\")"), "{err}");
    }
    let err = scores.values().unwrap_err();
    assert_eq!(err.as_decode().and_then(|d| d.entry()), Some(1), "{err}");
    // The name is known to the client that used it, in a pipeline too; a client that only
    // has the id cannot say it.
    let mut p = manager.client().pipeline();
    let items = p.add(scores.items_cmd());
    let err = p.execute().unwrap().get(items).unwrap_err();
    assert_eq!(
        err.as_decode().and_then(|d| d.object_name()),
        Some("scores")
    );
    let stranger = agora::Client::connect(manager.address(), manager.authkey()).unwrap();
    let by_id = agora::Dict::<String, i64>::from_id(&stranger, scores.id());
    let err = by_id.items().unwrap_err();
    assert_eq!(err.as_decode().and_then(|d| d.object_name()), None, "{err}");
    let err = scores.get("bob").unwrap_err();
    assert_eq!(
        err.as_decode().and_then(|d| d.key()),
        Some("\"bob\""),
        "{err}"
    );
    let raw = scores.items_raw().unwrap();
    assert_eq!(raw.len(), 3);
    assert_eq!(manager.client().decode::<f64>(&raw[1].1).unwrap(), 2.5);
    assert_eq!(
        manager.client().decode::<String>(&raw[2].0).unwrap(),
        "carol"
    );

    let counter = manager.value_named::<i64>("counter", &0).unwrap();
    let err = counter.fetch_add(1).unwrap_err();
    let d = err.as_decode().expect("a decode error");
    assert!(d.applied(), "{err}");
    assert!(err.to_string().contains("carried the call out"), "{err}");
    assert_eq!(manager.client().decode::<f64>(d.raw()).unwrap(), 2.5);
    let now = manager.value_named::<f64>("counter", &0.0).unwrap();
    assert_eq!(now.get().unwrap(), 3.5);
}
