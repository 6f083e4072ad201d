//! The single-value kinds and their relatives: `value` (PROTOCOL.md section 4.5), `array`
//! (4.6) and `namespace` (4.7).

use agora_proto::testing::enc;
use rmpv::Value;

use crate::support::*;

// value (PROTOCOL.md section 4.5)

#[test]
fn value_get_set_typecode_untyped() {
    let server = TestServer::start();
    let mut c = server.client();
    let v = c.create("value", None, p![NIL, 5]);
    assert_eq!(c.ok("value.get", p![v]), Value::from(5));
    assert_eq!(c.ok("value.typecode", p![v]), NIL);
    // Untyped: anything goes.
    for x in [
        Value::from("x"),
        NIL,
        map! {"a" => arr![1]},
        Value::F32(0.5),
    ] {
        assert_eq!(c.ok("value.set", p![v, x.clone()]), NIL);
        assert_eq!(c.ok("value.get", p![v]), x);
    }
    assert_eq!(c.fail("value.get", p![v, 1]), "ArgumentCountError");
    assert_eq!(c.fail("value.set", p![v]), "ArgumentCountError");
    assert_eq!(c.fail("value.typecode", p![v, 1]), "ArgumentCountError");
    assert_eq!(c.fail("create", p!["value", NIL]), "ArgumentCountError");
    assert_eq!(
        c.fail("create", p!["value", NIL, NIL, 1, 2]),
        "ArgumentCountError"
    );
}

#[test]
fn value_fetch_add_untyped() {
    let server = TestServer::start();
    let mut c = server.client();
    let v = c.create("value", None, p![NIL, 10]);
    assert_eq!(c.ok("value.fetch_add", p![v, 5]), Value::from(10));
    assert_eq!(c.ok("value.fetch_add", p![v, -20]), Value::from(15));
    assert_eq!(c.ok("value.get", p![v]), Value::from(-5));
    // A float on either side gives a float.
    assert_eq!(c.ok("value.fetch_add", p![v, 0.5]), Value::from(-5));
    assert_eq!(c.ok("value.get", p![v]), Value::F64(-4.5));
    let f = c.create("value", None, p![NIL, 1.5]);
    c.ok("value.fetch_add", p![f, 1]);
    assert_eq!(c.ok("value.get", p![f]), Value::F64(2.5));
    // 64-bit exact, past i64 into u64, and no further.
    let big = c.create("value", None, p![NIL, i64::MAX]);
    assert_eq!(c.ok("value.fetch_add", p![big, 1]), Value::from(i64::MAX));
    assert_eq!(c.ok("value.get", p![big]), Value::from(i64::MAX as u64 + 1));
    let top = c.create("value", None, p![NIL, u64::MAX]);
    assert_eq!(c.fail("value.fetch_add", p![top, 1]), "OverflowError");
    assert_eq!(c.ok("value.get", p![top]), Value::from(u64::MAX));
    let bottom = c.create("value", None, p![NIL, i64::MIN]);
    assert_eq!(c.fail("value.fetch_add", p![bottom, -1]), "OverflowError");
    assert_eq!(
        c.ok("value.fetch_add", p![top, i64::MIN]),
        Value::from(u64::MAX)
    );
    assert_eq!(
        c.ok("value.get", p![top]),
        Value::from(u64::MAX - (1u64 << 63))
    );
    // Not numbers.
    let s = c.create("value", None, p![NIL, "text"]);
    assert_eq!(c.fail("value.fetch_add", p![s, 1]), "TypeError");
    assert_eq!(c.fail("value.fetch_add", p![v, "1"]), "TypeError");
    assert_eq!(c.fail("value.fetch_add", p![v, true]), "TypeError");
    assert_eq!(c.fail("value.fetch_add", p![v, NIL]), "TypeError");
    assert_eq!(c.fail("value.fetch_add", p![v]), "ArgumentCountError");
}

#[test]
fn value_with_a_typecode_checks_what_it_holds() {
    let server = TestServer::start();
    let mut c = server.client();
    let b = c.create("value", None, p!["b", 100]);
    assert_eq!(c.ok("value.typecode", p![b]), Value::from("b"));
    assert_eq!(c.ok("value.fetch_add", p![b, 27]), Value::from(100));
    assert_eq!(c.ok("value.get", p![b]), Value::from(127));
    assert_eq!(c.fail("value.fetch_add", p![b, 1]), "OverflowError");
    assert_eq!(c.fail("value.fetch_add", p![b, 0.5]), "TypeError");
    assert_eq!(c.ok("value.get", p![b]), Value::from(127));
    assert_eq!(c.fail("value.set", p![b, 128]), "OverflowError");
    assert_eq!(c.fail("value.set", p![b, -129]), "OverflowError");
    assert_eq!(c.fail("value.set", p![b, "x"]), "TypeError");
    assert_eq!(c.fail("value.set", p![b, 1.0]), "TypeError");
    assert_eq!(c.fail("value.set", p![b, true]), "TypeError");
    c.ok("value.set", p![b, -128]);
    assert_eq!(c.ok("value.get", p![b]), Value::from(-128));

    let u = c.create("value", None, p!["B", 0]);
    assert_eq!(c.fail("value.set", p![u, -1]), "OverflowError");
    assert_eq!(c.fail("value.fetch_add", p![u, -1]), "OverflowError");
    assert_eq!(
        c.fail("create", p!["value", NIL, "i", 1i64 << 40]),
        "OverflowError"
    );
    assert_eq!(c.fail("create", p!["value", NIL, "Q", -1]), "OverflowError");

    // Float typecodes take ints and convert them.
    let d = c.create("value", None, p!["d", 1]);
    assert_eq!(c.ok("value.get", p![d]), Value::F64(1.0));
    c.ok("value.fetch_add", p![d, 0.25]);
    assert_eq!(c.ok("value.get", p![d]), Value::F64(1.25));
    let f = c.create("value", None, p!["f", 0.5]);
    assert_eq!(c.ok("value.get", p![f]), Value::F32(0.5));
    c.ok("value.fetch_add", p![f, 1]);
    assert_eq!(c.ok("value.get", p![f]), Value::F32(1.5));
    assert_eq!(c.ok("value.typecode", p![f]), Value::from("f"));

    // A typed value is kept in its typecode's form, not as sent (PROTOCOL.md section 3).
    let b_id = enc(&b.into());
    c.call_raw("value.set", &[&b_id, &int64(5)]).unwrap();
    assert_eq!(c.call_raw("value.get", &[&b_id]).unwrap(), [0x05]);
    let d_id = enc(&d.into());
    c.call_raw("value.set", &[&d_id, &float32(0.5)]).unwrap();
    assert_eq!(c.call_raw("value.get", &[&d_id]).unwrap(), float64(0.5));
    let f_id = enc(&f.into());
    c.call_raw("value.set", &[&f_id, &float64(0.5)]).unwrap();
    assert_eq!(c.call_raw("value.get", &[&f_id]).unwrap(), float32(0.5));

    // Bad typecodes.
    assert_eq!(c.fail("create", p!["value", NIL, "x", 1]), "ValueError");
    assert_eq!(c.fail("create", p!["value", NIL, "bb", 1]), "ValueError");
    assert_eq!(c.fail("create", p!["value", NIL, "", 1]), "ValueError");
    assert_eq!(c.fail("create", p!["value", NIL, 5, 1]), "TypeError");
    assert_eq!(c.fail("create", p!["value", NIL, "i", "x"]), "TypeError");
}

#[test]
fn value_compare_and_swap() {
    let server = TestServer::start();
    let mut c = server.client();
    let v = c.create("value", None, p![NIL, 5]);
    assert_eq!(c.ok("value.compare_and_swap", p![v, 5, 6]), arr![true, 5]);
    assert_eq!(c.ok("value.get", p![v]), Value::from(6));
    assert_eq!(c.ok("value.compare_and_swap", p![v, 5, 7]), arr![false, 6]);
    assert_eq!(c.ok("value.get", p![v]), Value::from(6));
    // By value, not by encoding.
    assert_eq!(
        c.ok("value.compare_and_swap", p![v, 6.0, "s"]),
        arr![true, 6]
    );
    assert_eq!(
        c.ok(
            "value.compare_and_swap",
            p![v, Value::Binary(b"s".to_vec()), 1]
        ),
        arr![false, "s"]
    );
    assert_eq!(
        c.ok(
            "value.compare_and_swap",
            p![v, "s", map! {"k" => arr![1, 2]}]
        ),
        arr![true, "s"]
    );
    assert_eq!(
        c.ok(
            "value.compare_and_swap",
            p![v, map! {"k" => arr![1.0, 2]}, NIL]
        ),
        arr![true, map! {"k" => arr![1, 2]}]
    );
    // With a typecode, the new value must fit; a failed swap changes nothing.
    let b = c.create("value", None, p!["b", 1]);
    assert_eq!(
        c.fail("value.compare_and_swap", p![b, 1, 1000]),
        "OverflowError"
    );
    assert_eq!(c.fail("value.compare_and_swap", p![b, 1, "x"]), "TypeError");
    assert_eq!(c.ok("value.get", p![b]), Value::from(1));
    assert_eq!(c.ok("value.compare_and_swap", p![b, 1, 2]), arr![true, 1]);
    assert_eq!(
        c.fail("value.compare_and_swap", p![b, 1]),
        "ArgumentCountError"
    );
}

// array (PROTOCOL.md section 4.6)

#[test]
fn array_of_a_size_or_an_initializer() {
    let server = TestServer::start();
    let mut c = server.client();
    let a = c.create("array", None, p!["i", 3]);
    assert_eq!(c.ok("array.tolist", p![a]), arr![0, 0, 0]);
    assert_eq!(c.ok("array.len", p![a]), Value::from(3));
    assert_eq!(c.ok("array.typecode", p![a]), Value::from("i"));
    let d = c.create("array", None, p!["d", arr![1, 2.5]]);
    assert_eq!(
        c.ok("array.tolist", p![d]),
        Value::Array(vec![Value::F64(1.0), Value::F64(2.5)])
    );
    let f = c.create("array", None, p!["f", 2]);
    assert_eq!(
        c.ok("array.tolist", p![f]),
        Value::Array(vec![Value::F32(0.0), Value::F32(0.0)])
    );
    let bytes = c.create("array", None, p!["c", Value::Binary(b"abc".to_vec())]);
    assert_eq!(
        c.ok("array.tolist", p![bytes]),
        Value::Array(b"abc".iter().map(|b| Value::Binary(vec![*b])).collect())
    );
    let chars = c.create("array", None, p!["u", arr!["é", "x"]]);
    assert_eq!(c.ok("array.tolist", p![chars]), arr!["é", "x"]);
    let empty = c.create("array", None, p!["B", 0]);
    assert_eq!(c.ok("array.tolist", p![empty]), arr![]);

    assert_eq!(c.fail("create", p!["array", NIL, "z", 3]), "ValueError");
    assert_eq!(c.fail("create", p!["array", NIL, "i", "x"]), "TypeError");
    assert_eq!(
        c.fail("create", p!["array", NIL, "i", arr![1, "x"]]),
        "TypeError"
    );
    assert_eq!(
        c.fail("create", p!["array", NIL, "b", arr![1, 200]]),
        "OverflowError"
    );
    assert_eq!(
        c.fail("create", p!["array", NIL, "i"]),
        "ArgumentCountError"
    );
    assert_eq!(c.fail("array.len", p![a, 1]), "ArgumentCountError");
    assert_eq!(c.fail("array.tolist", p![a, 1]), "ArgumentCountError");
    assert_eq!(c.fail("array.typecode", p![a, 1]), "ArgumentCountError");
}

#[test]
fn array_getitem_setitem() {
    let server = TestServer::start();
    let mut c = server.client();
    let a = c.create("array", None, p!["i", arr![1, 2, 3]]);
    assert_eq!(c.ok("array.getitem", p![a, 0]), Value::from(1));
    assert_eq!(c.ok("array.getitem", p![a, -1]), Value::from(3));
    assert_eq!(c.fail("array.getitem", p![a, 3]), "IndexError");
    assert_eq!(c.fail("array.getitem", p![a, -4]), "IndexError");
    assert_eq!(c.ok("array.setitem", p![a, 1, -7]), NIL);
    assert_eq!(c.ok("array.getitem", p![a, 1]), Value::from(-7));
    assert_eq!(c.fail("array.setitem", p![a, 3, 0]), "IndexError");
    assert_eq!(
        c.fail("array.setitem", p![a, 0, 1i64 << 31]),
        "OverflowError"
    );
    assert_eq!(c.fail("array.setitem", p![a, 0, "x"]), "TypeError");
    assert_eq!(c.fail("array.setitem", p![a, 0, 1.5]), "TypeError");
    assert_eq!(c.fail("array.setitem", p![a, 0]), "ArgumentCountError");
    assert_eq!(c.fail("array.getitem", p![a]), "ArgumentCountError");
    assert_eq!(c.ok("array.tolist", p![a]), arr![1, -7, 3]);

    let bytes = c.create("array", None, p!["c", 2]);
    assert_eq!(c.ok("array.getitem", p![bytes, 0]), Value::Binary(vec![0]));
    c.ok("array.setitem", p![bytes, 0, Value::Binary(b"z".to_vec())]);
    assert_eq!(
        c.fail("array.setitem", p![bytes, 0, Value::Binary(b"zz".to_vec())]),
        "TypeError"
    );
    assert_eq!(c.fail("array.setitem", p![bytes, 0, "z"]), "TypeError");
    let chars = c.create("array", None, p!["u", 1]);
    c.ok("array.setitem", p![chars, 0, "ß"]);
    assert_eq!(c.ok("array.getitem", p![chars, 0]), Value::from("ß"));
    assert_eq!(c.fail("array.setitem", p![chars, 0, "ab"]), "TypeError");
    // f stores float32, d float64, whatever was sent.
    let f = c.create("array", None, p!["f", 1]);
    c.ok("array.setitem", p![f, 0, 0.1]);
    assert_eq!(c.ok("array.getitem", p![f, 0]), Value::F32(0.1));
    let d = c.create("array", None, p!["d", 1]);
    c.call_raw("array.setitem", &[&enc(&d.into()), &[0], &float32(0.5)])
        .unwrap();
    assert_eq!(c.ok("array.getitem", p![d, 0]), Value::F64(0.5));
}

#[test]
fn array_integer_typecodes_have_their_ranges() {
    let server = TestServer::start();
    let mut c = server.client();
    let ranges: &[(&str, i128, i128)] = &[
        ("b", -128, 127),
        ("B", 0, 255),
        ("h", -32_768, 32_767),
        ("H", 0, 65_535),
        ("i", -(1 << 31), (1 << 31) - 1),
        ("I", 0, (1 << 32) - 1),
        ("l", i64::MIN.into(), i64::MAX.into()),
        ("L", 0, u64::MAX.into()),
        ("q", i64::MIN.into(), i64::MAX.into()),
        ("Q", 0, u64::MAX.into()),
    ];
    let int = |n: i128| -> Value {
        if n < 0 {
            Value::from(n as i64)
        } else {
            Value::from(n as u64)
        }
    };
    for &(code, min, max) in ranges {
        let a = c.create("array", None, p![code, 1]);
        assert_eq!(c.ok("array.typecode", p![a]), Value::from(code));
        for n in [min, max] {
            assert_eq!(c.ok("array.setitem", p![a, 0, int(n)]), NIL, "{code} {n}");
            assert_eq!(c.ok("array.getitem", p![a, 0]), int(n), "{code} {n}");
        }
        // Outside the range, when MessagePack can express it at all.
        for n in [min - 1, max + 1] {
            if n >= i64::MIN.into() && n <= u64::MAX.into() {
                assert_eq!(
                    c.fail("array.setitem", p![a, 0, int(n)]),
                    "OverflowError",
                    "{code} {n}"
                );
            }
        }
        let v = c.create("value", None, p![code, int(max)]);
        if max < u64::MAX.into() {
            assert_eq!(
                c.fail("value.fetch_add", p![v, 1]),
                "OverflowError",
                "{code}"
            );
        }
    }
}

#[test]
fn array_slices_keep_the_length() {
    let server = TestServer::start();
    let mut c = server.client();
    let a = c.create("array", None, p!["h", ints(0..6)]);
    assert_eq!(c.ok("array.getslice", p![a, 1, 4, NIL]), arr![1, 2, 3]);
    assert_eq!(c.ok("array.getslice", p![a, NIL, NIL, -2]), arr![5, 3, 1]);
    assert_eq!(c.ok("array.getslice", p![a, 10, NIL, NIL]), arr![]);
    assert_eq!(c.fail("array.getslice", p![a, NIL, NIL, 0]), "ValueError");
    assert_eq!(c.ok("array.setslice", p![a, 0, 2, NIL, arr![10, 11]]), NIL);
    assert_eq!(
        c.ok("array.setslice", p![a, NIL, NIL, -2, arr![50, 30, 10]]),
        NIL
    );
    assert_eq!(c.ok("array.tolist", p![a]), arr![10, 10, 2, 30, 4, 50]);
    // The length may not change, even through a simple slice.
    assert_eq!(
        c.fail("array.setslice", p![a, 0, 2, NIL, arr![1]]),
        "ValueError"
    );
    assert_eq!(
        c.fail("array.setslice", p![a, 0, 2, NIL, arr![1, 2, 3]]),
        "ValueError"
    );
    assert_eq!(
        c.fail("array.setslice", p![a, NIL, NIL, 0, arr![]]),
        "ValueError"
    );
    assert_eq!(
        c.fail("array.setslice", p![a, 0, 2, NIL, arr![1, "x"]]),
        "TypeError"
    );
    assert_eq!(
        c.fail("array.setslice", p![a, 0, 2, NIL, arr![1, 1 << 20]]),
        "OverflowError"
    );
    assert_eq!(c.fail("array.setslice", p![a, 0, 2, NIL, 5]), "TypeError");
    assert_eq!(
        c.fail("array.setslice", p![a, 0, 2, NIL]),
        "ArgumentCountError"
    );
    assert_eq!(c.fail("array.getslice", p![a, 0, 2]), "ArgumentCountError");
    assert_eq!(c.ok("array.tolist", p![a]), arr![10, 10, 2, 30, 4, 50]);
    assert_eq!(c.ok("array.len", p![a]), Value::from(6));
}

// namespace (PROTOCOL.md section 4.7)

#[test]
fn namespace_attributes() {
    let server = TestServer::start();
    let mut c = server.client();
    let n = c.create("namespace", None, vec![map! {"a" => 1}]);
    assert_eq!(c.ok("namespace.getattr", p![n, "a"]), Value::from(1));
    assert_eq!(c.fail("namespace.getattr", p![n, "b"]), "AttributeError");
    assert_eq!(c.ok("namespace.setattr", p![n, "b", arr![1, 2]]), NIL);
    assert_eq!(c.ok("namespace.getattr", p![n, "b"]), arr![1, 2]);
    c.ok("namespace.setattr", p![n, "c", NIL]);
    // Setting again keeps the first-set order.
    c.ok("namespace.setattr", p![n, "a", "again"]);
    assert_eq!(
        c.ok("namespace.items", p![n]),
        map! {"a" => "again", "b" => arr![1, 2], "c" => NIL}
    );
    assert_eq!(c.ok("namespace.delattr", p![n, "a"]), NIL);
    assert_eq!(c.fail("namespace.delattr", p![n, "a"]), "AttributeError");
    assert_eq!(c.fail("namespace.getattr", p![n, "a"]), "AttributeError");
    assert_eq!(
        c.ok("namespace.items", p![n]),
        map! {"b" => arr![1, 2], "c" => NIL}
    );
    // Names are strs.
    assert_eq!(c.fail("namespace.getattr", p![n, 5]), "TypeError");
    assert_eq!(c.fail("namespace.setattr", p![n, NIL, 5]), "TypeError");
    assert_eq!(c.fail("namespace.delattr", p![n, arr![]]), "TypeError");
    assert_eq!(
        c.fail(
            "create",
            p!["namespace", NIL, Value::Map(vec![(1.into(), 2.into())])]
        ),
        "TypeError"
    );
    assert_eq!(c.fail("create", p!["namespace", NIL, arr![]]), "TypeError");
    assert_eq!(c.fail("namespace.getattr", p![n]), "ArgumentCountError");
    assert_eq!(
        c.fail("namespace.setattr", p![n, "x"]),
        "ArgumentCountError"
    );
    assert_eq!(c.fail("namespace.delattr", p![n]), "ArgumentCountError");
    assert_eq!(c.fail("namespace.items", p![n, 1]), "ArgumentCountError");
    let empty = c.create("namespace", None, vec![]);
    assert_eq!(c.ok("namespace.items", p![empty]), map! {});
}
