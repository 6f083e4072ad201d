//! Value semantics (PROTOCOL.md section 3): dict keys compare by value whatever their
//! encoding, stored values and keys come back byte for byte as sent, and object references
//! are values like any other.

use agora_proto::testing::{dec, enc};
use rmpv::Value;

use crate::support::*;

#[test]
fn an_int_is_the_same_key_whatever_its_encoding() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    let id = enc(&d.into());
    c.call_raw("dict.setitem", &[&id, &[0x05], &[0xa1, b'x']])
        .unwrap();
    for five in [
        int64(5),
        vec![0xcc, 5],
        vec![0xcd, 0, 5],
        vec![0xce, 0, 0, 0, 5],
        vec![0xcf, 0, 0, 0, 0, 0, 0, 0, 5],
        vec![0xd0, 5],
        vec![0xd1, 0, 5],
        vec![0xd2, 0, 0, 0, 5],
        float64(5.0),
        float32(5.0),
    ] {
        assert_eq!(
            c.call_raw("dict.get", &[&id, &five]).unwrap(),
            [0xa1, b'x'],
            "{five:02x?}"
        );
    }
    c.call_raw("dict.setitem", &[&id, &int64(5), &[0xa1, b'y']])
        .unwrap();
    c.call_raw("dict.setitem", &[&id, &int64(-1), &[0xa1, b'm']])
        .unwrap();
    assert_eq!(c.ok("dict.len", p![d]), Value::from(2));
    assert_eq!(c.ok("dict.get", p![d, 5]), Value::from("y"));
    assert_eq!(c.ok("dict.get", p![d, -1]), Value::from("m"));
    // Integer ids are read whatever their encoding, too.
    assert_eq!(c.call_raw("dict.len", &[&int64(d as i64)]).unwrap(), [0x02]);
}

#[test]
fn a_float_equal_to_an_int_is_the_same_key() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    c.ok("dict.setitem", p![d, 1.0, "float"]);
    assert_eq!(c.ok("dict.getitem", p![d, 1]), Value::from("float"));
    c.ok("dict.setitem", p![d, 1, "int"]);
    assert_eq!(c.ok("dict.len", p![d]), Value::from(1));
    assert_eq!(c.ok("dict.getitem", p![d, 1.0]), Value::from("int"));
    // float32 and float64 of the same value, and -0.0 and 0.
    c.ok("dict.setitem", p![d, Value::F32(0.5), "half"]);
    assert_eq!(c.ok("dict.getitem", p![d, 0.5]), Value::from("half"));
    c.ok("dict.setitem", p![d, 0, "zero"]);
    assert_eq!(c.ok("dict.getitem", p![d, -0.0]), Value::from("zero"));
    assert_eq!(c.ok("dict.len", p![d]), Value::from(3));
    // 1.5 is no int.
    assert_eq!(c.fail("dict.getitem", p![d, 1.5]), "KeyError");
}

#[test]
fn str_and_bin_are_different_keys_and_bool_is_not_an_int() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    c.ok("dict.setitem", p![d, "a", "str"]);
    assert_eq!(
        c.fail("dict.getitem", p![d, Value::Binary(b"a".to_vec())]),
        "KeyError"
    );
    c.ok("dict.setitem", p![d, Value::Binary(b"a".to_vec()), "bin"]);
    c.ok("dict.setitem", p![d, 1, "int"]);
    c.ok("dict.setitem", p![d, true, "bool"]);
    assert_eq!(c.ok("dict.len", p![d]), Value::from(4));
    assert_eq!(c.ok("dict.getitem", p![d, "a"]), Value::from("str"));
    assert_eq!(
        c.ok("dict.getitem", p![d, Value::Binary(b"a".to_vec())]),
        Value::from("bin")
    );
    assert_eq!(c.ok("dict.getitem", p![d, 1]), Value::from("int"));
    assert_eq!(c.ok("dict.getitem", p![d, true]), Value::from("bool"));
    // A str8 and a fixstr of the same text are the same key.
    let id = enc(&d.into());
    assert_eq!(
        c.call_raw("dict.get", &[&id, &str8("a")]).unwrap(),
        enc(&"str".into())
    );
}

#[test]
fn ext_keys_compare_by_type_and_data() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    c.ok("dict.setitem", p![d, Value::Ext(3, vec![1, 2]), "one"]);
    c.ok("dict.setitem", p![d, Value::Ext(2, vec![1, 2]), "two"]);
    assert_eq!(c.ok("dict.len", p![d]), Value::from(2));
    // The same ext in its ext8 form instead of fixext2.
    let id = enc(&d.into());
    let ext8 = [0xc7, 0x02, 0x03, 1, 2];
    assert_eq!(
        c.call_raw("dict.get", &[&id, &ext8]).unwrap(),
        enc(&"one".into())
    );
}

#[test]
fn a_str_that_is_not_utf8_is_still_a_str_key() {
    // Clients that predate bin send binary data as str: such strs are keys like any other.
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    let id = enc(&d.into());
    c.call_raw("dict.setitem", &[&id, &[0xc4, 0x01, 0xff], &[0x01]])
        .unwrap();
    c.call_raw("dict.setitem", &[&id, &[0xd9, 0x01, 0xff], &[0x02]])
        .unwrap();
    // bin b"\xff" and str "\xff" are different keys.
    assert_eq!(c.ok("dict.len", p![d]), Value::from(2));
    assert_eq!(
        c.call_raw("dict.get", &[&id, &[0xc4, 0x01, 0xff]]).unwrap(),
        [0x01]
    );
    // The fixstr and the str8 of the same bytes are the same key.
    assert_eq!(
        c.call_raw("dict.get", &[&id, &[0xa1, 0xff]]).unwrap(),
        [0x02]
    );
    c.call_raw("dict.setitem", &[&id, &[0xa1, 0xff], &[0x03]])
        .unwrap();
    assert_eq!(c.ok("dict.len", p![d]), Value::from(2));
    assert_eq!(
        c.call_raw("dict.get", &[&id, &[0xd9, 0x01, 0xff]]).unwrap(),
        [0x03]
    );
}

#[test]
fn a_dict_keeps_the_first_encoding_of_a_key_like_python() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    c.ok("dict.setitem", p![d, 1.0, "a"]);
    c.ok("dict.setitem", p![d, 1, "b"]);
    assert_eq!(c.ok("dict.keys", p![d]), arr![1.0]);
    assert_eq!(
        c.ok("dict.copy", p![d]),
        Value::Map(vec![(1.0.into(), "b".into())])
    );
}

/// Raw encodings the manager must hand back exactly as it received them.
fn unusual_encodings(reference: Vec<u8>) -> Vec<Vec<u8>> {
    let map_out_of_order = vec![0x82, 0xa1, b'z', 0x01, 0xa1, b'a', 0x02];
    vec![
        float32(1.5),
        float32(f32::NAN),
        float64(3.0),
        str8("hi"),
        vec![0xda, 0x00, 0x02, b'h', b'i'], // str16
        vec![0xc5, 0x00, 0x01, 0xff],       // bin16
        int64(5),
        vec![0xcf, 0, 0, 0, 0, 0, 0, 0, 7],       // uint64 7
        vec![0xdc, 0x00, 0x01, 0x01],             // array16 of one element
        vec![0xde, 0x00, 0x01, 0xa1, b'k', 0xc0], // map16 of one entry
        map_out_of_order,
        reference,
        vec![0xd6, 0xff, 0, 0, 0, 1], // timestamp ext -1
        vec![0xc7, 0x00, 0x05],       // empty ext8
        vec![0xa0],                   // empty str
        vec![0xd9, 0x01, 0xff],       // a str that is not UTF-8
    ]
}

#[test]
fn stored_values_come_back_byte_identical() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    let l = c.create("list", None, vec![]);
    let n = c.create("namespace", None, vec![]);
    let (d_id, l_id, n_id) = (enc(&d.into()), enc(&l.into()), enc(&n.into()));
    let values = unusual_encodings(list_ref(&mut c));
    for (i, raw) in values.iter().enumerate() {
        let key = enc(&(i as u64).into());
        let name = enc(&format!("attr{i}").into());
        c.call_raw("dict.setitem", &[&d_id, &key, raw]).unwrap();
        c.call_raw("list.append", &[&l_id, raw]).unwrap();
        c.call_raw("namespace.setattr", &[&n_id, &name, raw])
            .unwrap();
    }
    for (i, raw) in values.iter().enumerate() {
        let key = enc(&(i as u64).into());
        let name = enc(&format!("attr{i}").into());
        let index = enc(&(i as u64).into());
        assert_eq!(
            &c.call_raw("dict.get", &[&d_id, &key]).unwrap(),
            raw,
            "dict {i}"
        );
        assert_eq!(&c.call_raw("dict.getitem", &[&d_id, &key]).unwrap(), raw);
        assert_eq!(
            &c.call_raw("list.getitem", &[&l_id, &index]).unwrap(),
            raw,
            "list {i}"
        );
        assert_eq!(
            &c.call_raw("namespace.getattr", &[&n_id, &name]).unwrap(),
            raw,
            "namespace {i}"
        );
        let created = c
            .call_raw("create", &[&enc(&"value".into()), &[0xc0], &[0xc0], raw])
            .unwrap();
        assert_eq!(
            &c.call_raw("value.get", &[&created]).unwrap(),
            raw,
            "value {i}"
        );
        c.call_raw("value.set", &[&created, &[0x00]]).unwrap();
        c.call_raw("value.set", &[&created, raw]).unwrap();
        assert_eq!(&c.call_raw("value.get", &[&created]).unwrap(), raw);
    }
    // The whole containers too: header, then the values as sent.
    let mut expected = Vec::new();
    rmp::encode::write_array_len(&mut expected, values.len() as u32).unwrap();
    values.iter().for_each(|v| expected.extend(v));
    assert_eq!(c.call_raw("list.copy", &[&l_id]).unwrap(), expected);
    assert_eq!(c.call_raw("dict.values", &[&d_id]).unwrap(), expected);
    assert_eq!(
        c.call_raw("list.getslice", &[&l_id, &[0xc0], &[0xc0], &[0xc0]])
            .unwrap(),
        expected
    );
    // An initializer's elements are kept as sent as well.
    let mut init = Vec::new();
    rmp::encode::write_array_len(&mut init, values.len() as u32).unwrap();
    values.iter().for_each(|v| init.extend(v));
    let l2 = c
        .call_raw("create", &[&enc(&"list".into()), &[0xc0], &init])
        .unwrap();
    assert_eq!(c.call_raw("list.copy", &[&l2]).unwrap(), expected);
}

#[test]
fn keys_come_back_as_they_were_sent() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    let id = enc(&d.into());
    let reference = list_ref(&mut c);
    let keys = [
        str8("k"),
        int64(70_000),
        float32(2.5),
        float64(-1.0),
        reference.clone(),
    ];
    for (i, k) in keys.iter().enumerate() {
        c.call_raw("dict.setitem", &[&id, k, &[i as u8]]).unwrap();
    }
    let mut expected = vec![0x90 | keys.len() as u8];
    keys.iter().for_each(|k| expected.extend(k));
    assert_eq!(c.call_raw("dict.keys", &[&id]).unwrap(), expected);
    let items = c.call_raw("dict.items", &[&id]).unwrap();
    let mut expected = vec![0x90 | keys.len() as u8];
    for (i, k) in keys.iter().enumerate() {
        expected.push(0x92);
        expected.extend(k);
        expected.push(i as u8);
    }
    assert_eq!(items, expected);
    // popitem hands back the key as sent.
    let mut last = vec![0x92];
    last.extend(&reference);
    last.push(4);
    assert_eq!(c.call_raw("dict.popitem", &[&id]).unwrap(), last);
}

#[test]
fn object_references_are_stored_and_returned_unchanged() {
    let server = TestServer::start();
    let mut c = server.client();
    let d = c.create("dict", None, vec![]);
    let l = c.create("list", None, vec![]);
    // A reference to the real list l, built as PROTOCOL.md describes.
    let data = enc(&arr!["list", l]);
    let reference = Value::Ext(1, data.clone());
    c.ok("dict.setitem", p![d, "child", reference.clone()]);
    assert_eq!(c.ok("dict.getitem", p![d, "child"]), reference);
    let Value::Ext(1, got) = c.ok("dict.getitem", p![d, "child"]) else {
        panic!("not an ext of type 1")
    };
    assert_eq!(dec(&got), arr!["list", l]);
    // References are values like others: keys, list elements, compared by bytes.
    c.ok("dict.setitem", p![d, reference.clone(), "by ref"]);
    assert_eq!(
        c.ok("dict.getitem", p![d, reference.clone()]),
        Value::from("by ref")
    );
    c.ok("list.append", p![l, reference.clone()]);
    assert_eq!(c.ok("list.index", p![l, reference.clone()]), Value::from(0));
    // A reference to an object that does not exist is refused, whatever the method.
    let nowhere = Value::Ext(1, enc(&arr!["list", l ^ 1]));
    assert_eq!(c.fail("list.count", p![l, nowhere]), "UnknownObjectError");
    let wrong_kind = Value::Ext(1, enc(&arr!["dict", l]));
    assert_eq!(c.fail("list.append", p![l, wrong_kind]), "TypeError");
    let malformed = Value::Ext(1, vec![1, 2]);
    assert_eq!(c.fail("dict.setitem", p![d, "x", malformed]), "ValueError");
    assert_eq!(
        c.ok("list.len", p![l]),
        Value::from(1),
        "nothing was changed"
    );
    // Deleting the target leaves the stored reference as it is, gone stale.
    c.ok("delete", p![l]);
    assert_eq!(c.ok("dict.getitem", p![d, "child"]), reference);
}
