//! `dict` (PROTOCOL.md section 4.3).

use rmpv::Value;

use crate::support::*;

#[test]
fn dict_get_getitem_setitem_contains_len() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    assert_eq!(c.ok("dict.get", p![d, "a"]), NIL);
    assert_eq!(c.ok("dict.get", p![d, "a", 7]), Value::from(7));
    assert_eq!(c.fail("dict.getitem", p![d, "a"]), "KeyError");
    assert_eq!(c.ok("dict.contains", p![d, "a"]), Value::Boolean(false));
    assert_eq!(c.ok("dict.len", p![d]), Value::from(0));
    assert_eq!(c.ok("dict.setitem", p![d, "a", 1]), NIL);
    assert_eq!(c.ok("dict.get", p![d, "a"]), Value::from(1));
    assert_eq!(c.ok("dict.get", p![d, "a", 7]), Value::from(1));
    assert_eq!(c.ok("dict.getitem", p![d, "a"]), Value::from(1));
    assert_eq!(c.ok("dict.contains", p![d, "a"]), Value::Boolean(true));
    // Overwriting keeps one entry; nil is a value like any other.
    c.ok("dict.setitem", p![d, "a", NIL]);
    assert_eq!(c.ok("dict.len", p![d]), Value::from(1));
    assert_eq!(c.ok("dict.getitem", p![d, "a"]), NIL);
    assert_eq!(c.ok("dict.contains", p![d, "a"]), Value::Boolean(true));
    // nil, bools, arrays are keys too.
    c.ok("dict.setitem", p![d, NIL, "nil"]);
    c.ok("dict.setitem", p![d, true, "true"]);
    c.ok("dict.setitem", p![d, arr![1, "x"], "tuple"]);
    assert_eq!(c.ok("dict.getitem", p![d, NIL]), Value::from("nil"));
    assert_eq!(c.ok("dict.getitem", p![d, true]), Value::from("true"));
    assert_eq!(
        c.ok("dict.getitem", p![d, arr![1.0, "x"]]),
        Value::from("tuple")
    );
    assert_eq!(c.ok("dict.len", p![d]), Value::from(4));

    for (method, n) in [
        ("dict.get", 1),
        ("dict.get", 4),
        ("dict.getitem", 1),
        ("dict.getitem", 3),
        ("dict.setitem", 2),
        ("dict.setitem", 4),
        ("dict.contains", 1),
        ("dict.len", 2),
    ] {
        let mut params = p![d];
        params.extend((1..n).map(|_| Value::from("x")));
        assert_eq!(c.fail(method, params), "ArgumentCountError", "{method} {n}");
    }
}

#[test]
fn dict_keys_values_items_copy_keep_insertion_order() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![map! {"z" => 1, "a" => 2}]);
    c.ok("dict.setitem", p![d, "m", 3]);
    c.ok("dict.setitem", p![d, "z", 10]); // updating keeps the position
    assert_eq!(c.ok("dict.keys", p![d]), arr!["z", "a", "m"]);
    assert_eq!(c.ok("dict.values", p![d]), arr![10, 2, 3]);
    assert_eq!(
        c.ok("dict.items", p![d]),
        Value::Array(vec![arr!["z", 10], arr!["a", 2], arr!["m", 3]])
    );
    assert_eq!(
        c.ok("dict.copy", p![d]),
        map! {"z" => 10, "a" => 2, "m" => 3}
    );
    // Deleting and re-inserting moves a key to the end.
    c.ok("dict.delitem", p![d, "z"]);
    c.ok("dict.setitem", p![d, "z", 0]);
    assert_eq!(c.ok("dict.keys", p![d]), arr!["a", "m", "z"]);
    for m in ["dict.keys", "dict.values", "dict.items", "dict.copy"] {
        assert_eq!(c.fail(m, p![d, 1]), "ArgumentCountError");
    }
    let empty = c.create("dict", None, vec![]);
    assert_eq!(c.ok("dict.keys", p![empty]), arr![]);
    assert_eq!(c.ok("dict.copy", p![empty]), map! {});
}

#[test]
fn dict_update_takes_a_map_or_pairs() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![map! {"a" => 1}]);
    assert_eq!(c.ok("dict.update", p![d, map! {"b" => 2, "a" => 3}]), NIL);
    assert_eq!(
        c.ok(
            "dict.update",
            p![d, Value::Array(vec![arr!["c", 4], arr![5, 6]])]
        ),
        NIL
    );
    assert_eq!(
        c.ok("dict.copy", p![d]),
        map! {"a" => 3, "b" => 2, "c" => 4, 5 => 6}
    );
    // Bad arguments change nothing.
    assert_eq!(c.fail("dict.update", p![d, 5]), "TypeError");
    assert_eq!(c.fail("dict.update", p![d, "ab"]), "TypeError");
    assert_eq!(
        c.fail("dict.update", p![d, Value::Array(vec![arr!["x", 1, 2]])]),
        "TypeError"
    );
    assert_eq!(
        c.fail(
            "dict.update",
            p![d, Value::Array(vec![arr!["ok", 1], arr![map! {}, 1]])]
        ),
        "TypeError"
    );
    assert_eq!(
        c.fail(
            "dict.update",
            p![
                d,
                Value::Map(vec![("y".into(), 1.into()), (map! {}, 1.into())])
            ]
        ),
        "TypeError"
    );
    assert_eq!(c.ok("dict.len", p![d]), Value::from(4));
    assert_eq!(c.fail("dict.update", p![d]), "ArgumentCountError");
}

#[test]
fn dict_delitem_pop_popitem() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create(
        "dict",
        None,
        vec![map! {"a" => 1, "b" => 2, "c" => 3, "d" => 4}],
    );
    assert_eq!(c.ok("dict.delitem", p![d, "b"]), NIL);
    assert_eq!(c.fail("dict.delitem", p![d, "b"]), "KeyError");
    assert_eq!(c.ok("dict.pop", p![d, "c"]), Value::from(3));
    assert_eq!(c.fail("dict.pop", p![d, "c"]), "KeyError");
    assert_eq!(c.ok("dict.pop", p![d, "c", "dflt"]), Value::from("dflt"));
    assert_eq!(c.ok("dict.pop", p![d, "c", NIL]), NIL);
    // popitem takes the last inserted.
    c.ok("dict.setitem", p![d, "e", 5]);
    assert_eq!(c.ok("dict.popitem", p![d]), arr!["e", 5]);
    assert_eq!(c.ok("dict.popitem", p![d]), arr!["d", 4]);
    assert_eq!(c.ok("dict.popitem", p![d]), arr!["a", 1]);
    assert_eq!(c.fail("dict.popitem", p![d]), "KeyError");
    assert_eq!(c.ok("dict.len", p![d]), Value::from(0));
    assert_eq!(c.fail("dict.pop", p![d]), "ArgumentCountError");
    assert_eq!(c.fail("dict.pop", p![d, 1, 2, 3]), "ArgumentCountError");
    assert_eq!(c.fail("dict.popitem", p![d, 1]), "ArgumentCountError");
    assert_eq!(c.fail("dict.delitem", p![d]), "ArgumentCountError");
}

#[test]
fn dict_setdefault_clear() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    assert_eq!(c.ok("dict.setdefault", p![d, "a"]), NIL);
    assert_eq!(c.ok("dict.contains", p![d, "a"]), Value::Boolean(true));
    assert_eq!(c.ok("dict.setdefault", p![d, "a", 5]), NIL);
    assert_eq!(c.ok("dict.setdefault", p![d, "b", 5]), Value::from(5));
    assert_eq!(c.ok("dict.setdefault", p![d, "b", 6]), Value::from(5));
    assert_eq!(c.ok("dict.copy", p![d]), map! {"a" => NIL, "b" => 5});
    assert_eq!(c.fail("dict.setdefault", p![d]), "ArgumentCountError");
    assert_eq!(c.ok("dict.clear", p![d]), NIL);
    assert_eq!(c.ok("dict.len", p![d]), Value::from(0));
    assert_eq!(c.ok("dict.get", p![d, "b"]), NIL);
    assert_eq!(c.fail("dict.clear", p![d, 1]), "ArgumentCountError");
}

#[test]
fn dict_map_keys_are_unhashable() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    let m = map! {"a" => 1};
    for (method, params) in [
        ("dict.setitem", p![d, m.clone(), 1]),
        ("dict.get", p![d, m.clone()]),
        ("dict.getitem", p![d, m.clone()]),
        ("dict.contains", p![d, m.clone()]),
        ("dict.delitem", p![d, m.clone()]),
        ("dict.pop", p![d, m.clone(), 1]),
        ("dict.setdefault", p![d, m.clone(), 1]),
        // Inside an array too, as a tuple holding a dict is unhashable in Python.
        ("dict.setitem", p![d, arr![1, m.clone()], 1]),
    ] {
        assert_eq!(c.fail(method, params), "TypeError", "{method}");
    }
    assert_eq!(
        c.fail(
            "create",
            p!["dict", NIL, Value::Map(vec![(m.clone(), 1.into())])]
        ),
        "TypeError"
    );
    assert_eq!(c.ok("dict.len", p![d]), Value::from(0));
}
