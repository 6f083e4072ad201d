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
