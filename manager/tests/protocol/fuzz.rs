//! The manager fuzzed end to end: random pipelines of requests for every method of
//! `agora_proto::methods::TABLE` with params of random MessagePack types, mixed with messages
//! that are valid MessagePack but bad envelopes, notifications and responses. Every request is
//! answered exactly once by msgid (parked calls once their objects are deleted), the
//! connection stays open, and after garbage closes it a second connection is still served.
//!
//! `AGORA_FUZZ_CASES` sets the number of cases (see the README's test section).

use std::collections::HashMap;

use agora_proto::envelope::{self, Envelope};
use agora_proto::methods::TABLE;
use agora_proto::testing::{dec, enc, parse_response, RawClient};
use agora_proto::Kind;
use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use rmpv::Value;

use crate::support::TestServer;

/// Msgids of the generated messages start here, above those `RawClient` picks for itself.
const FIRST_MSGID: u32 = 1 << 20;

fn int() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => (-3i64..24).prop_map(Value::from),
        1 => prop::sample::select(vec![
            i64::MIN, i64::MAX, -(1 << 31), 1 << 31, 1 << 32, 1 << 40, 1 << 53, 65_536
        ])
        .prop_map(Value::from),
        1 => Just(Value::from(u64::MAX)),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    let words = prop::sample::select(vec![
        "dict", "list", "value", "array", "queue", "lock", "barrier", "i", "d", "c", "b", "B", "f",
        "q", "x", "", "é",
    ]);
    prop_oneof![
        6 => int(),
        1 => Just(Value::Nil),
        1 => any::<bool>().prop_map(Value::Boolean),
        1 => prop::sample::select(vec![0.0, 0.01, 0.5, -1.0, -0.5, 1e300, f64::NAN, f64::INFINITY])
            .prop_map(Value::F64),
        1 => Just(Value::F32(0.25)),
        3 => words.prop_map(Value::from),
        1 => "[a-z]{0,6}".prop_map(Value::from),
        1 => vec(any::<u8>(), 0..8).prop_map(Value::Binary),
        // A reference to a (possibly existing) object, and some other ext.
        1 => (prop::sample::select(Kind::ALL.to_vec()), 0u32..20).prop_map(|(kind, id)| {
            Value::Ext(1, enc(&Value::Array(vec![kind.as_str().into(), id.into()])))
        }),
        1 => (any::<i8>(), vec(any::<u8>(), 0..4)).prop_map(|(t, d)| Value::Ext(t, d)),
    ]
}

fn param() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((inner.clone(), inner), 0..3).prop_map(Value::Map),
        ]
    })
}

/// One message of the pipeline, before its msgid is given.
#[derive(Debug, Clone)]
enum Msg {
    /// A request for a method of the table (never `auth`, whose failure closes the
    /// connection, nor `shutdown`), with `params`.
    Call {
        method: &'static str,
        params: Vec<Value>,
        own_id: bool,
    },
    /// A call of a method that may park, on the object of its kind, in its shortest form.
    Wait { method: &'static str, arg: Value },
    /// A request for a method the manager does not have.
    Unknown { method: String, params: Vec<Value> },
    /// A valid MessagePack value that is not a message, or an envelope of the wrong shape.
    Odd(Value),
    /// `[0, msgid, method, params]` where one element is not what it must be.
    BadElement { which: usize, with: Value },
    /// A notification, which is never answered.
    Notification {
        method: &'static str,
        params: Vec<Value>,
    },
    /// A response, which a client may send and the manager ignores.
    Response,
}

fn method() -> impl Strategy<Value = &'static str> {
    let names: Vec<&'static str> = TABLE
        .iter()
        .map(|m| m.wire)
        .filter(|w| !matches!(*w, "auth" | "shutdown"))
        .collect();
    prop::sample::select(names)
}

/// Params for `method`: mostly a count it accepts.
fn params_for(method: &'static str) -> BoxedStrategy<Vec<Value>> {
    let spec = TABLE.iter().find(|m| m.wire == method).expect("listed");
    let min = spec.min_params();
    let max = spec.max_params().unwrap_or(min + 3);
    prop_oneof![
        4 => (min..=max).boxed(),
        1 => (0usize..7).boxed(),
    ]
    .prop_flat_map(|n| vec(param(), n))
    .boxed()
}

fn parking_method() -> impl Strategy<Value = &'static str> {
    let names: Vec<&'static str> = TABLE.iter().filter(|m| m.parks).map(|m| m.wire).collect();
    prop::sample::select(names)
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        3 => (
            parking_method(),
            prop_oneof![(0i64..4).prop_map(Value::from), vec(int(), 0..3).prop_map(Value::Array)],
        )
            .prop_map(|(method, arg)| Msg::Wait { method, arg }),
        12 => method().prop_flat_map(|m| {
            (params_for(m), prop::bool::weighted(0.8))
                .prop_map(move |(params, own_id)| Msg::Call { method: m, params, own_id })
        }),
        1 => ("[a-z_.]{0,14}", vec(param(), 0..3))
            .prop_map(|(method, params)| Msg::Unknown { method, params }),
        1 => prop_oneof![
            param(),
            vec(param(), 0..6).prop_map(Value::Array),
            (0u8..6, vec(param(), 0..5)).prop_map(|(t, mut rest)| {
                rest.insert(0, Value::from(t));
                Value::Array(rest)
            }),
        ]
        .prop_map(Msg::Odd),
        1 => (0usize..4, param()).prop_map(|(which, with)| Msg::BadElement { which, with }),
        1 => (method(), vec(param(), 0..3))
            .prop_map(|(method, params)| Msg::Notification { method, params }),
        1 => Just(Msg::Response),
    ]
}

/// The bytes of `m` with `msgid` where it carries one; a call with `own_id` names the object
/// of its kind in `ids`.
fn encode(m: &Msg, msgid: u32, ids: &HashMap<Kind, u64>) -> Vec<u8> {
    let request = |method: Value, params: Value| {
        enc(&Value::Array(vec![0.into(), msgid.into(), method, params]))
    };
    match m {
        Msg::Call {
            method,
            params,
            own_id,
        } => {
            let mut params = params.clone();
            let kind = TABLE
                .iter()
                .find(|s| s.wire == *method)
                .and_then(|s| s.kind);
            if let (true, Some(kind), Some(first)) = (own_id, kind, params.first_mut()) {
                *first = Value::from(ids[&kind]);
            }
            request((*method).into(), Value::Array(params))
        }
        Msg::Wait { method, arg } => {
            let spec = TABLE.iter().find(|s| s.wire == *method).expect("listed");
            let kind = spec.kind.expect("a method that parks has a kind");
            let mut params = vec![Value::from(ids[&kind])];
            if spec.min_params() > 1 {
                params.push(arg.clone());
            }
            request((*method).into(), Value::Array(params))
        }
        Msg::Unknown { method, params } => {
            request(method.as_str().into(), Value::Array(params.clone()))
        }
        Msg::Odd(v) => enc(v),
        Msg::BadElement { which, with } => {
            let mut items = vec![0.into(), msgid.into(), "ping".into(), Value::Array(vec![])];
            items[*which] = with.clone();
            enc(&Value::Array(items))
        }
        Msg::Notification { method, params } => enc(&Value::Array(vec![
            2.into(),
            (*method).into(),
            Value::Array(params.clone()),
        ])),
        Msg::Response => enc(&Value::Array(vec![
            1.into(),
            msgid.into(),
            Value::Nil,
            Value::Nil,
        ])),
    }
}

/// The msgid the manager must answer for `bytes`, by the protocol's own envelope rules, and
/// whether the message is a request for `auth` or `shutdown` (which a random value can spell).
fn must_answer(bytes: &[u8]) -> (Option<u32>, bool) {
    match envelope::parse(Bytes::copy_from_slice(bytes)) {
        Ok(Envelope::Request { msgid, method, .. }) => {
            (Some(msgid), matches!(method.as_str(), "auth" | "shutdown"))
        }
        Ok(_) => (None, false),
        Err(e) => (e.msgid, false),
    }
}

/// Reads responses into `answered` until `until` returns true; any other frame fails.
fn read_until(
    c: &mut RawClient,
    answered: &mut HashMap<u32, usize>,
    until: impl Fn(&HashMap<u32, usize>) -> bool,
) {
    while !until(answered) {
        let frame = c.frame();
        let r = parse_response(&frame);
        let n = answered.entry(r.msgid).or_default();
        *n += 1;
        assert_eq!(*n, 1, "msgid {} answered twice", r.msgid);
    }
}

/// The args `create` takes for a fresh object of each kind.
fn create_args(kind: Kind) -> Vec<Value> {
    match kind {
        Kind::Value => vec![Value::Nil, 0.into()],
        Kind::Array => vec!["i".into(), 3.into()],
        Kind::Barrier => vec![2.into()],
        _ => vec![],
    }
}

fn run(messages: &[Msg], sizes: &[usize], garbage: Option<Vec<u8>>) {
    let server = TestServer::start();
    let mut c = server.client();
    let ids: HashMap<Kind, u64> = Kind::ALL
        .iter()
        .map(|k| (*k, c.create(k.as_str(), None, create_args(*k))))
        .collect();
    let mut expected = Vec::new();
    let mut stream = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let bytes = encode(m, FIRST_MSGID + i as u32, &ids);
        match must_answer(&bytes) {
            // A random value that happens to be such a request, or to reuse a msgid: left out.
            (_, true) => continue,
            (Some(id), _) if expected.contains(&id) => continue,
            (Some(id), _) => expected.push(id),
            (None, _) => {}
        }
        stream.extend_from_slice(&bytes);
    }
    // Everything in one go, then a ping: whatever did not park is answered before it.
    let ping = FIRST_MSGID - 1;
    stream.extend(agora_proto::testing::request(ping, "ping", vec![]));
    // In pieces of random sizes, so that messages arrive split anywhere.
    let mut rest = &stream[..];
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at((*size).min(rest.len()));
        c.send(piece);
        rest = tail;
    }
    let mut answered = HashMap::new();
    read_until(&mut c, &mut answered, |a| a.contains_key(&ping));

    // Deleting every object answers the calls that parked.
    let mut other = server.client();
    let objects = other.ok("objects", vec![]);
    for entry in objects.as_array().expect("an array") {
        let id = entry.as_array().expect("[id, name, kind]")[0].clone();
        let _ = other.call("delete", vec![id]);
    }
    read_until(&mut c, &mut answered, |a| {
        expected.iter().all(|id| a.contains_key(id))
    });
    // Nothing more comes than one answer each: the next ping is the next frame.
    let last = FIRST_MSGID - 2;
    c.send(&agora_proto::testing::request(last, "ping", vec![]));
    read_until(&mut c, &mut answered, |a| a.contains_key(&last));
    let mut want: Vec<u32> = expected.clone();
    want.extend([ping, last]);
    want.sort_unstable();
    let mut got: Vec<u32> = answered.keys().copied().collect();
    got.sort_unstable();
    assert_eq!(got, want, "exactly the requests are answered");

    if let Some(garbage) = garbage {
        // Fatal bytes: at most an answer or an error notice, then the close.
        c.send(&garbage);
        while let Some(frame) = c.next_frame() {
            let v = dec(&frame);
            assert!(matches!(v[0].as_u64(), Some(1 | 2)), "{v}");
        }
    }
    // The manager still serves the other connection, and a new one.
    assert_eq!(other.ok("ping", vec![]), Value::from("pong"));
    assert_eq!(server.client().ok("ping", vec![]), Value::from("pong"));
}

fn cases() -> u32 {
    std::env::var("AGORA_FUZZ_CASES")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_pipelines_are_answered_exactly_once_by_msgid(
        messages in vec(msg(), 1..60),
        sizes in vec(prop_oneof![1usize..16, 16usize..4096], 1..6),
        garbage in proptest::option::of(prop_oneof![
            Just(vec![0xc1]),
            Just(vec![0x94, 0x00, 0x07, 0xc1]),
            Just(vec![0xdd, 0xff, 0xff, 0xff, 0xff]),
            Just(vec![0xc6, 0x7f, 0xff, 0xff, 0xff]),
        ]),
    ) {
        run(&messages, &sizes, garbage);
    }
}
