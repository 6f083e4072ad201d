//! `set` (PROTOCOL.md section 4.15): membership compared as dict keys are, and the set algebra
//! with arrays and shared sets as operands, done in the manager.

use agora_proto::testing::RawClient;
use agora_proto::ObjectRef;
use rmpv::Value;

use crate::support::*;

fn set_ref(id: u64) -> Value {
    Value::Ext(1, ObjectRef::new("set", id).ext_data())
}

/// The elements of an array answer, as ints, sorted.
fn sorted_ints(v: &Value) -> Vec<i64> {
    let mut items: Vec<i64> = v
        .as_array()
        .unwrap_or_else(|| panic!("an array, got {v}"))
        .iter()
        .map(|x| x.as_i64().unwrap_or_else(|| panic!("an int, got {x}")))
        .collect();
    items.sort_unstable();
    items
}

fn elements(c: &mut RawClient, s: u64) -> Vec<i64> {
    sorted_ints(&c.ok("set.copy", p![s]))
}

#[test]
fn set_add_discard_remove_contains_pop_len_clear() {
    let server = TestServer::start();
    let mut c = server.client();
    let s = c.create("set", None, vec![arr![1, 2, 2, 3]]);
    assert_eq!(c.ok("set.len", p![s]), Value::from(3));
    assert_eq!(c.ok("set.add", p![s, 4]), NIL);
    assert_eq!(c.ok("set.add", p![s, 4]), NIL);
    assert_eq!(c.ok("set.len", p![s]), Value::from(4));
    assert_eq!(c.ok("set.contains", p![s, 4]), Value::Boolean(true));
    assert_eq!(c.ok("set.contains", p![s, 5]), Value::Boolean(false));
    assert_eq!(c.ok("set.discard", p![s, 5]), NIL);
    assert_eq!(c.ok("set.discard", p![s, 4]), NIL);
    assert_eq!(c.fail("set.remove", p![s, 4]), "KeyError");
    assert_eq!(c.ok("set.remove", p![s, 3]), NIL);
    assert_eq!(elements(&mut c, s), [1, 2]);
    // pop answers the last inserted element.
    assert_eq!(c.ok("set.pop", p![s]), Value::from(2));
    assert_eq!(c.ok("set.clear", p![s]), NIL);
    assert_eq!(c.ok("set.len", p![s]), Value::from(0));
    assert_eq!(c.fail("set.pop", p![s]), "KeyError");
    // A map is unhashable, as a dict key; a bad create changes nothing.
    assert_eq!(c.fail("set.add", p![s, map! {"a" => 1}]), "TypeError");
    assert_eq!(c.fail("set.contains", p![s, map! {"a" => 1}]), "TypeError");
    let mut bad = server.client();
    assert_eq!(
        bad.call("create", vec!["set".into(), NIL, arr![1, map! {"a" => 1}]])
            .expect_err("a map element")
            .name,
        "TypeError"
    );
    assert_eq!(
        bad.call("create", vec!["set".into(), NIL, Value::from(3)])
            .expect_err("not an array")
            .name,
        "TypeError"
    );
}

#[test]
fn elements_compare_as_dict_keys_and_keep_their_first_encoding() {
    let server = TestServer::start();
    let mut c = server.client();
    let s = c.create("set", None, vec![]);
    c.ok("set.add", p![s, 1.0]);
    c.ok("set.add", p![s, 1]);
    c.call_raw("set.add", &[&enc_u64(s), &int64(1)])
        .expect("an int64 1");
    assert_eq!(c.ok("set.len", p![s]), Value::from(1));
    // The element keeps its first encoding, as a Python set keeps its first object.
    assert_eq!(c.ok("set.copy", p![s]), Value::Array(vec![Value::F64(1.0)]));
    // true is not 1; str is not bin; an array is an element like a tuple.
    c.ok("set.add", p![s, true]);
    c.ok("set.add", p![s, "a"]);
    c.ok("set.add", p![s, Value::Binary(b"a".to_vec())]);
    c.ok("set.add", p![s, arr![1, "x"]]);
    assert_eq!(c.ok("set.len", p![s]), Value::from(5));
    assert_eq!(
        c.ok("set.contains", p![s, arr![1.0, "x"]]),
        Value::Boolean(true)
    );
    c.ok("set.remove", p![s, 1]);
    assert_eq!(c.ok("set.contains", p![s, 1.0]), Value::Boolean(false));
}

fn enc_u64(n: u64) -> Vec<u8> {
    agora_proto::testing::enc(&Value::from(n))
}

#[test]
fn the_algebra_with_arrays_answers_new_arrays_and_leaves_the_set() {
    let server = TestServer::start();
    let mut c = server.client();
    let s = c.create("set", None, vec![ints(1..=4)]);
    let union = c.ok("set.union", p![s, ints(3..=6), arr![9]]);
    assert_eq!(sorted_ints(&union), [1, 2, 3, 4, 5, 6, 9]);
    assert_eq!(sorted_ints(&c.ok("set.union", p![s])), [1, 2, 3, 4]);
    let inter = c.ok("set.intersection", p![s, ints(2..=8), ints(0..=3)]);
    assert_eq!(sorted_ints(&inter), [2, 3]);
    let diff = c.ok("set.difference", p![s, arr![1], arr![4, 7]]);
    assert_eq!(sorted_ints(&diff), [2, 3]);
    let sym = c.ok("set.symmetric_difference", p![s, ints(3..=6)]);
    assert_eq!(sorted_ints(&sym), [1, 2, 5, 6]);
    assert_eq!(elements(&mut c, s), [1, 2, 3, 4], "the set is unchanged");

    assert_eq!(
        c.ok("set.issubset", p![s, ints(0..=9)]),
        Value::Boolean(true)
    );
    assert_eq!(
        c.ok("set.issubset", p![s, ints(2..=9)]),
        Value::Boolean(false)
    );
    assert_eq!(
        c.ok("set.issuperset", p![s, arr![1, 4]]),
        Value::Boolean(true)
    );
    assert_eq!(
        c.ok("set.issuperset", p![s, arr![1, 5]]),
        Value::Boolean(false)
    );
    assert_eq!(
        c.ok("set.isdisjoint", p![s, arr![5, 6]]),
        Value::Boolean(true)
    );
    assert_eq!(
        c.ok("set.isdisjoint", p![s, arr![4, 6]]),
        Value::Boolean(false)
    );
    let both = |x: bool, y: bool| Value::Array(vec![Value::Boolean(x), Value::Boolean(y)]);
    assert_eq!(c.ok("set.compare", p![s, ints(1..=4)]), both(true, true));
    assert_eq!(c.ok("set.compare", p![s, ints(1..=5)]), both(true, false));
    assert_eq!(c.ok("set.compare", p![s, ints(1..=3)]), both(false, true));
    assert_eq!(c.ok("set.compare", p![s, ints(3..=5)]), both(false, false));

    c.ok("set.update", p![s, arr![5], arr![6, 6]]);
    assert_eq!(elements(&mut c, s), [1, 2, 3, 4, 5, 6]);
    c.ok("set.intersection_update", p![s, ints(2..=9), ints(0..=5)]);
    assert_eq!(elements(&mut c, s), [2, 3, 4, 5]);
    c.ok("set.difference_update", p![s, arr![2], arr![5]]);
    assert_eq!(elements(&mut c, s), [3, 4]);
    c.ok("set.symmetric_difference_update", p![s, arr![4, 8]]);
    assert_eq!(elements(&mut c, s), [3, 8]);
}

#[test]
fn shared_sets_are_operands_and_a_set_may_be_its_own() {
    let server = TestServer::start();
    let mut c = server.client();
    let a = c.create("set", None, vec![ints(1..=4)]);
    let b = c.create("set", None, vec![ints(3..=6)]);
    let union = c.ok("set.union", vec![Value::from(a), set_ref(b)]);
    assert_eq!(sorted_ints(&union), [1, 2, 3, 4, 5, 6]);
    c.ok("set.difference_update", vec![Value::from(a), set_ref(b)]);
    assert_eq!(elements(&mut c, a), [1, 2]);
    assert_eq!(
        elements(&mut c, b),
        [3, 4, 5, 6],
        "the operand is unchanged"
    );
    // The set itself as operand: no deadlock, Python's answers.
    c.ok("set.update", vec![Value::from(a), set_ref(a)]);
    assert_eq!(elements(&mut c, a), [1, 2]);
    c.ok(
        "set.symmetric_difference_update",
        vec![Value::from(a), set_ref(a)],
    );
    assert_eq!(elements(&mut c, a), Vec::<i64>::new());
    assert_eq!(
        c.ok("set.issubset", vec![Value::from(b), set_ref(b)]),
        Value::Boolean(true)
    );
    // A reference to another kind is no operand; nor is a scalar or a map.
    let list = c.create("list", None, vec![ints(1..=2)]);
    let list_ref = Value::Ext(1, ObjectRef::new("list", list).ext_data());
    assert_eq!(
        c.fail("set.update", vec![Value::from(a), list_ref]),
        "TypeError"
    );
    assert_eq!(c.fail("set.union", p![a, 3]), "TypeError");
    assert_eq!(c.fail("set.issubset", p![a, map! {"a" => 1}]), "TypeError");
    // A bad operand, or a bad element in one, changes nothing.
    c.ok("set.add", p![a, 1]);
    assert_eq!(
        c.fail("set.update", p![a, arr![2], arr![map! {"k" => 1}]]),
        "TypeError"
    );
    assert_eq!(elements(&mut c, a), [1]);
    // A set that is gone is an unknown object.
    c.ok("delete", p![b]);
    assert_eq!(
        c.fail("set.union", vec![Value::from(a), set_ref(b)]),
        "UnknownObjectError"
    );
}

#[test]
fn elements_that_are_references_hold_their_objects() {
    let server = TestServer::start();
    let mut c = server.client();
    let s = c.create("set", None, vec![]);
    let inner = c.create("list", None, vec![]);
    let inner_ref = Value::Ext(1, ObjectRef::new("list", inner).ext_data());
    c.ok("set.add", vec![Value::from(s), inner_ref.clone()]);
    // Copied by union into another set, it holds there too.
    let other = c.create("set", None, vec![]);
    c.ok("set.update", vec![Value::from(other), set_ref(s)]);
    let holders = |c: &mut RawClient| -> Option<u64> {
        let all = c.ok("objects", vec![]);
        all.as_array()?
            .iter()
            .find(|o| o[0].as_u64() == Some(inner))
            .and_then(|o| o[3].as_u64())
    };
    // The connection, and one element in each set.
    assert_eq!(holders(&mut c), Some(3));
    c.ok("set.discard", vec![Value::from(s), inner_ref.clone()]);
    assert_eq!(holders(&mut c), Some(2));
    c.ok("set.clear", p![other]);
    assert_eq!(holders(&mut c), Some(1));
    assert_eq!(
        c.ok("set.contains", vec![Value::from(other), inner_ref]),
        Value::Boolean(false)
    );
}

#[test]
fn argument_counts_follow_the_table() {
    let server = TestServer::start();
    let mut c = server.client();
    let s = c.create("set", None, vec![]);
    for (method, n) in [
        ("set.add", 1),
        ("set.add", 3),
        ("set.pop", 2),
        ("set.len", 2),
        ("set.symmetric_difference", 1),
        ("set.symmetric_difference", 3),
        ("set.issubset", 1),
        ("set.compare", 3),
    ] {
        let mut params = p![s];
        params.extend((1..n).map(|_| arr![1]));
        assert_eq!(c.fail(method, params), "ArgumentCountError", "{method} {n}");
    }
    assert_eq!(c.fail("set.append", p![s, 1]), "UnknownMethodError");
}
