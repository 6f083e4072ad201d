//! `list` (PROTOCOL.md section 4.4): Python's indices and slices, and sorting by the
//! protocol's ordering.

use agora_proto::testing::{enc, RawClient};
use rmpv::Value;

use crate::support::*;

/// An optional slice bound: an int, or nil.
fn bound(b: Option<i64>) -> Value {
    b.map_or(NIL, Value::from)
}

#[test]
fn list_getitem_setitem_delitem_with_python_indices() {
    let server = TestServer::start();
    let mut c = server.client();
    let l = c.create("list", None, vec![arr!["a", "b", "c"]]);
    assert_eq!(c.ok("list.getitem", p![l, 0]), Value::from("a"));
    assert_eq!(c.ok("list.getitem", p![l, 2]), Value::from("c"));
    assert_eq!(c.ok("list.getitem", p![l, -1]), Value::from("c"));
    assert_eq!(c.ok("list.getitem", p![l, -3]), Value::from("a"));
    for i in [3, -4, 1000, i64::MIN, i64::MAX] {
        assert_eq!(c.fail("list.getitem", p![l, i]), "IndexError", "{i}");
        assert_eq!(c.fail("list.setitem", p![l, i, 0]), "IndexError", "{i}");
        assert_eq!(c.fail("list.delitem", p![l, i]), "IndexError", "{i}");
    }
    assert_eq!(c.ok("list.setitem", p![l, -2, "B"]), NIL);
    assert_eq!(c.ok("list.copy", p![l]), arr!["a", "B", "c"]);
    assert_eq!(c.ok("list.delitem", p![l, 0]), NIL);
    assert_eq!(c.ok("list.copy", p![l]), arr!["B", "c"]);
    assert_eq!(c.fail("list.getitem", p![l, "0"]), "TypeError");
    assert_eq!(c.fail("list.getitem", p![l, 0.0]), "TypeError");
    assert_eq!(c.fail("list.getitem", p![l]), "ArgumentCountError");
    assert_eq!(c.fail("list.setitem", p![l, 0]), "ArgumentCountError");
    assert_eq!(c.fail("list.delitem", p![l]), "ArgumentCountError");
}

#[test]
fn list_getslice_follows_python() {
    let server = TestServer::start();
    let mut c = server.client();
    let l = c.create("list", None, vec![ints(0..10)]);
    // Expected results computed with CPython: list(range(10))[start:stop:step].
    type Case = ((Option<i64>, Option<i64>, Option<i64>), &'static [i64]);
    let cases: &[Case] = &[
        ((None, None, None), &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        ((Some(2), Some(5), None), &[2, 3, 4]),
        ((Some(-3), None, None), &[7, 8, 9]),
        ((None, None, Some(-1)), &[9, 8, 7, 6, 5, 4, 3, 2, 1, 0]),
        ((Some(8), Some(2), Some(-2)), &[8, 6, 4]),
        ((Some(100), None, None), &[]),
        ((Some(-100), Some(2), None), &[0, 1]),
        (
            (None, Some(-100), Some(-1)),
            &[9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
        ),
        ((Some(5), Some(5), None), &[]),
        ((Some(1), None, Some(3)), &[1, 4, 7]),
        ((None, None, Some(-3)), &[9, 6, 3, 0]),
        ((Some(-1), Some(-11), Some(-4)), &[9, 5, 1]),
        ((Some(9), None, Some(-2)), &[9, 7, 5, 3, 1]),
        ((Some(7), Some(3), None), &[]),
        ((None, None, Some(100)), &[0]),
    ];
    for &((start, stop, step), expected) in cases {
        let got = c.ok(
            "list.getslice",
            p![l, bound(start), bound(stop), bound(step)],
        );
        assert_eq!(
            got,
            ints(expected.iter().copied()),
            "[{start:?}:{stop:?}:{step:?}]"
        );
    }
    assert_eq!(c.fail("list.getslice", p![l, NIL, NIL, 0]), "ValueError");
    assert_eq!(c.fail("list.getslice", p![l, "a", NIL, NIL]), "TypeError");
    assert_eq!(
        c.fail("list.getslice", p![l, NIL, NIL]),
        "ArgumentCountError"
    );
}

#[test]
fn list_slices_with_extreme_steps_follow_python() {
    let server = TestServer::start();
    let mut c = server.client();
    let l = c.create("list", None, vec![ints(1..4)]);
    // CPython: [1, 2, 3][::2**63 - 1] == [1] and [1, 2, 3][::-(2**63)] == [3].
    assert_eq!(
        c.call("list.getslice", p![l, NIL, NIL, i64::MAX]),
        Ok(arr![1])
    );
    assert_eq!(
        c.call("list.getslice", p![l, NIL, NIL, i64::MIN]),
        Ok(arr![3])
    );
    assert_eq!(
        c.call("list.setslice", p![l, NIL, NIL, i64::MIN, arr!["z"]]),
        Ok(NIL)
    );
    assert_eq!(c.call("list.delslice", p![l, NIL, NIL, i64::MIN]), Ok(NIL));
    assert_eq!(c.ok("list.copy", p![l]), arr![1, 2]);
    let a = c.create("array", None, p!["b", 3]);
    assert_eq!(
        c.call("array.getslice", p![a, NIL, NIL, i64::MIN]),
        Ok(arr![0])
    );
}

#[test]
fn list_setslice_and_delslice_follow_python() {
    let server = TestServer::start();
    let mut c = server.client();
    let fresh = |c: &mut RawClient| c.create("list", None, vec![ints(0..10)]);
    // A simple slice may change the length.
    let l = fresh(&mut c);
    assert_eq!(c.ok("list.setslice", p![l, 2, 5, NIL, arr!["x"]]), NIL);
    assert_eq!(c.ok("list.copy", p![l]), arr![0, 1, "x", 5, 6, 7, 8, 9]);
    // Past the end appends; an empty slice inserts.
    c.ok("list.setslice", p![l, 20, 30, NIL, arr!["e"]]);
    c.ok("list.setslice", p![l, 0, 0, 1, arr!["s", "t"]]);
    assert_eq!(
        c.ok("list.copy", p![l]),
        arr!["s", "t", 0, 1, "x", 5, 6, 7, 8, 9, "e"]
    );
    // An extended slice takes exactly as many elements as it selects.
    let l = fresh(&mut c);
    c.ok("list.setslice", p![l, 8, 2, -3, arr!["a", "b"]]);
    assert_eq!(
        c.ok("list.copy", p![l]),
        arr![0, 1, 2, 3, 4, "b", 6, 7, "a", 9]
    );
    assert_eq!(
        c.fail("list.setslice", p![l, 8, 2, -3, arr!["a"]]),
        "ValueError"
    );
    assert_eq!(
        c.fail("list.setslice", p![l, NIL, NIL, 2, arr![1, 2, 3, 4, 5, 6]]),
        "ValueError"
    );
    c.ok("list.setslice", p![l, NIL, NIL, -1, ints(0..10)]);
    assert_eq!(c.ok("list.copy", p![l]), ints((0..10).rev()));
    assert_eq!(
        c.fail("list.setslice", p![l, NIL, NIL, 0, arr![]]),
        "ValueError"
    );
    assert_eq!(
        c.fail("list.setslice", p![l, NIL, NIL, NIL, 5]),
        "TypeError"
    );
    assert_eq!(c.ok("list.copy", p![l]), ints((0..10).rev()));

    let l = fresh(&mut c);
    assert_eq!(c.ok("list.delslice", p![l, NIL, NIL, 2]), NIL);
    assert_eq!(c.ok("list.copy", p![l]), arr![1, 3, 5, 7, 9]);
    let l = fresh(&mut c);
    c.ok("list.delslice", p![l, 7, 2, -2]);
    assert_eq!(c.ok("list.copy", p![l]), arr![0, 1, 2, 4, 6, 8, 9]);
    c.ok("list.delslice", p![l, 1, 3, NIL]);
    assert_eq!(c.ok("list.copy", p![l]), arr![0, 4, 6, 8, 9]);
    assert_eq!(c.fail("list.delslice", p![l, NIL, NIL, 0]), "ValueError");
    assert_eq!(
        c.fail("list.delslice", p![l, NIL, NIL]),
        "ArgumentCountError"
    );
    assert_eq!(c.ok("list.len", p![l]), Value::from(5));
}

#[test]
fn list_append_extend_insert_pop() {
    let server = TestServer::start();
    let mut c = server.client();
    let l = c.create("list", None, vec![]);
    assert_eq!(c.ok("list.append", p![l, 1]), NIL);
    assert_eq!(c.ok("list.extend", p![l, arr![2, 3]]), NIL);
    assert_eq!(c.ok("list.extend", p![l, arr![]]), NIL);
    assert_eq!(c.fail("list.extend", p![l, 4]), "TypeError");
    assert_eq!(c.fail("list.extend", p![l, map! {1 => 2}]), "TypeError");
    // insert clamps its index like Python.
    assert_eq!(c.ok("list.insert", p![l, -100, "s"]), NIL);
    c.ok("list.insert", p![l, 100, "e"]);
    c.ok("list.insert", p![l, -1, "m"]);
    c.ok("list.insert", p![l, 1, "one"]);
    assert_eq!(
        c.ok("list.copy", p![l]),
        arr!["s", "one", 1, 2, 3, "m", "e"]
    );
    assert_eq!(c.ok("list.pop", p![l]), Value::from("e"));
    assert_eq!(c.ok("list.pop", p![l, 0]), Value::from("s"));
    assert_eq!(c.ok("list.pop", p![l, -2]), Value::from(3));
    assert_eq!(c.ok("list.pop", p![l, NIL]), Value::from("m"));
    assert_eq!(c.fail("list.pop", p![l, 3]), "IndexError");
    assert_eq!(c.fail("list.pop", p![l, -4]), "IndexError");
    assert_eq!(c.ok("list.copy", p![l]), arr!["one", 1, 2]);
    c.ok("list.clear", p![l]);
    assert_eq!(c.fail("list.pop", p![l]), "IndexError");
    assert_eq!(c.fail("list.pop", p![l, 0]), "IndexError");
    assert_eq!(c.fail("list.append", p![l]), "ArgumentCountError");
    assert_eq!(c.fail("list.insert", p![l, 0]), "ArgumentCountError");
    assert_eq!(c.fail("list.pop", p![l, 0, 0]), "ArgumentCountError");
    assert_eq!(c.fail("list.insert", p![l, "x", 0]), "TypeError");
}

#[test]
fn list_remove_index_count_use_value_equality() {
    let server = TestServer::start();
    let mut c = server.client();
    let l = c.create(
        "list",
        None,
        vec![arr![1, "a", 2.0, Value::Binary(b"a".to_vec()), 1, true, 2]],
    );
    assert_eq!(c.ok("list.count", p![l, 1]), Value::from(2));
    assert_eq!(c.ok("list.count", p![l, 1.0]), Value::from(2));
    assert_eq!(c.ok("list.count", p![l, 2]), Value::from(2));
    assert_eq!(c.ok("list.count", p![l, "a"]), Value::from(1));
    assert_eq!(c.ok("list.count", p![l, true]), Value::from(1), "true != 1");
    assert_eq!(c.ok("list.count", p![l, "zz"]), Value::from(0));
    assert_eq!(c.ok("list.index", p![l, 2]), Value::from(2));
    assert_eq!(c.ok("list.index", p![l, 1, 1]), Value::from(4));
    assert_eq!(c.ok("list.index", p![l, 1, -3]), Value::from(4));
    assert_eq!(c.fail("list.index", p![l, 1, 1, 4]), "ValueError");
    assert_eq!(c.ok("list.index", p![l, 1, 1, 5]), Value::from(4));
    assert_eq!(c.ok("list.index", p![l, 1, NIL, NIL]), Value::from(0));
    assert_eq!(c.fail("list.index", p![l, 1, 100]), "ValueError");
    assert_eq!(
        c.ok("list.index", p![l, Value::Binary(b"a".to_vec())]),
        Value::from(3)
    );
    assert_eq!(c.fail("list.index", p![l, "zz"]), "ValueError");
    // remove takes the first equal value: 2.0 for 2.
    assert_eq!(c.ok("list.remove", p![l, 2]), NIL);
    assert_eq!(
        c.ok("list.copy", p![l]),
        arr![1, "a", Value::Binary(b"a".to_vec()), 1, true, 2]
    );
    assert_eq!(c.fail("list.remove", p![l, 3]), "ValueError");
    assert_eq!(c.fail("list.remove", p![l]), "ArgumentCountError");
    assert_eq!(c.fail("list.count", p![l]), "ArgumentCountError");
    assert_eq!(c.fail("list.index", p![l]), "ArgumentCountError");
    assert_eq!(
        c.fail("list.index", p![l, 1, 0, 1, 1]),
        "ArgumentCountError"
    );
}

#[test]
fn list_len_reverse_clear_copy() {
    let server = TestServer::start();
    let mut c = server.client();
    let l = c.create("list", None, vec![ints(0..5)]);
    assert_eq!(c.ok("list.len", p![l]), Value::from(5));
    assert_eq!(c.ok("list.reverse", p![l]), NIL);
    assert_eq!(c.ok("list.copy", p![l]), ints((0..5).rev()));
    assert_eq!(c.ok("list.clear", p![l]), NIL);
    assert_eq!(c.ok("list.len", p![l]), Value::from(0));
    assert_eq!(c.ok("list.copy", p![l]), arr![]);
    for m in ["list.len", "list.reverse", "list.clear", "list.copy"] {
        assert_eq!(c.fail(m, p![l, 1]), "ArgumentCountError", "{m}");
    }
}

#[test]
fn list_sort_is_stable_and_follows_the_protocol_ordering() {
    let server = TestServer::start();
    let mut c = server.client();
    let l = c.create("list", None, vec![arr![3, -1.5, 2, 10, 0, 2.0]]);
    assert_eq!(c.ok("list.sort", p![l]), NIL);
    // Stable: 2 stays before 2.0. Compare the raw bytes to tell them apart.
    let raw = c.call_raw("list.copy", &[&enc(&l.into())]).unwrap();
    let mut expected = vec![0x96];
    expected.extend(enc(&Value::F64(-1.5)));
    expected.extend([0x00, 0x02]);
    expected.extend(enc(&Value::F64(2.0)));
    expected.extend([0x03, 0x0a]);
    assert_eq!(raw, expected);
    // Reverse keeps equal elements in their original order too, as Python does.
    assert_eq!(c.ok("list.sort", p![l, true]), NIL);
    let raw = c.call_raw("list.copy", &[&enc(&l.into())]).unwrap();
    let mut expected = vec![0x96, 0x0a, 0x03, 0x02];
    expected.extend(enc(&Value::F64(2.0)));
    expected.push(0x00);
    expected.extend(enc(&Value::F64(-1.5)));
    assert_eq!(raw, expected);
    assert_eq!(c.ok("list.sort", p![l, false]), NIL);
    assert_eq!(c.ok("list.getitem", p![l, 0]), Value::F64(-1.5));

    // str by code point, bin bytewise, bools, arrays lexicographically, NaN after numbers.
    let s = c.create("list", None, vec![arr!["b", "é", "B", "a"]]);
    c.ok("list.sort", p![s]);
    assert_eq!(c.ok("list.copy", p![s]), arr!["B", "a", "b", "é"]);
    let b = c.create(
        "list",
        None,
        vec![Value::Array(vec![
            Value::Binary(vec![2]),
            Value::Binary(vec![1, 5]),
            Value::Binary(vec![1]),
        ])],
    );
    c.ok("list.sort", p![b]);
    assert_eq!(
        c.ok("list.copy", p![b]),
        Value::Array(vec![
            Value::Binary(vec![1]),
            Value::Binary(vec![1, 5]),
            Value::Binary(vec![2]),
        ])
    );
    let t = c.create("list", None, vec![arr![true, false, true]]);
    c.ok("list.sort", p![t]);
    assert_eq!(c.ok("list.copy", p![t]), arr![false, true, true]);
    let a = c.create(
        "list",
        None,
        vec![Value::Array(vec![
            arr![1, 2],
            arr![1],
            arr![0, 9],
            arr![1, 1.5],
        ])],
    );
    c.ok("list.sort", p![a]);
    assert_eq!(
        c.ok("list.copy", p![a]),
        Value::Array(vec![arr![0, 9], arr![1], arr![1, 1.5], arr![1, 2]])
    );
    let n = c.create("list", None, vec![arr![f64::NAN, 1, f64::INFINITY, -5]]);
    c.ok("list.sort", p![n]);
    let sorted = c.ok("list.copy", p![n]);
    let sorted = sorted.as_array().unwrap();
    assert_eq!(
        sorted[..3],
        [Value::from(-5), Value::from(1), Value::F64(f64::INFINITY)]
    );
    assert!(sorted[3].as_f64().unwrap().is_nan());

    assert_eq!(c.fail("list.sort", p![l, "yes"]), "TypeError");
    assert_eq!(c.fail("list.sort", p![l, true, 1]), "ArgumentCountError");
}

#[test]
fn list_sort_of_incomparable_values_is_a_type_error_and_changes_nothing() {
    let server = TestServer::start();
    let mut c = server.client();
    for contents in [
        arr![3, "a", 1],
        arr![2, NIL, 1],
        arr![map! {}, map! {}],
        arr![1, true],
        arr![Value::Binary(vec![1]), "a"],
        arr![arr![1], arr!["a"]],
        Value::Array(vec![Value::Ext(5, vec![1]), Value::Ext(5, vec![2])]),
    ] {
        let l = c.create("list", None, vec![contents.clone()]);
        assert_eq!(c.fail("list.sort", p![l]), "TypeError", "{contents}");
        assert_eq!(c.ok("list.copy", p![l]), contents);
    }
}

#[test]
fn list_sort_of_many_mixed_values_is_a_type_error_and_changes_nothing() {
    // Enough elements for the sort to leave its smallest-input path, mixing strs into ints.
    let server = TestServer::start();
    let mut c = server.client();
    for n in [50u64, 1000] {
        let contents = Value::Array(
            (0..n)
                .map(|i| {
                    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
                    if h % 17 == 0 {
                        Value::from(format!("s{h}"))
                    } else {
                        Value::from(h % 1000)
                    }
                })
                .collect(),
        );
        let l = c.create("list", None, vec![contents.clone()]);
        assert_eq!(c.fail("list.sort", p![l]), "TypeError", "{n} elements");
        assert_eq!(c.ok("list.copy", p![l]), contents);
    }
}

#[test]
fn list_sort_compares_big_ints_and_floats_exactly() {
    let server = TestServer::start();
    let mut c = server.client();
    let big = 1u64 << 53;
    for n in [12u64, 30, 1000] {
        // 2.0**53, 2**53 + 1 and 2**53, repeated.
        let contents: Vec<Value> = (0..n)
            .map(|i| match (i * 7) % 3 {
                0 => Value::F64(big as f64),
                1 => Value::from(big + 1),
                _ => Value::from(big),
            })
            .collect();
        let l = c.create("list", None, vec![Value::Array(contents.clone())]);
        assert_eq!(c.call("list.sort", p![l]), Ok(NIL), "{n} elements");
        // As CPython sorts them: every 2**53 (int or float, in their original order) first.
        let mut expected: Vec<Value> = contents
            .iter()
            .filter(|v| **v != Value::from(big + 1))
            .cloned()
            .collect();
        expected.extend(
            contents
                .iter()
                .filter(|v| **v == Value::from(big + 1))
                .cloned(),
        );
        assert_eq!(
            c.ok("list.copy", p![l]),
            Value::Array(expected),
            "{n} elements"
        );
    }
}
