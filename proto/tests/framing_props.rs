//! Properties of `FrameDecoder` on random MessagePack.
//!
//! Values are random `rmpv::Value` trees (nil, bools, ints of every size, float32 and float64
//! including NaN and infinities, str, bin, ext, arrays and maps), bounded in depth and size.
//! They are encoded by a small encoder of our own that, guided by random choices, picks any
//! legal header for each value (5 as a fixint or as an int64, a short str as str32, a
//! three-element array as array32, ...), so the scanner meets every MessagePack form and not
//! only the shortest ones `rmpv` writes.
//!
//! The `fuzz_*` targets at the end feed the decoder arbitrary bytes and valid streams broken on
//! purpose (bit flips, cuts, insertions, wrong and huge declared lengths, deep nesting), and
//! every frame it yields to `envelope::parse` and the `Params` accessors.

use agora_proto::scanner::ScanError;
use agora_proto::{FrameDecoder, FrameError, Limits};
use proptest::collection::vec;
use proptest::prelude::*;
use rmpv::Value;

// ---------------------------------------------------------------------------------------------
// Generating values
// ---------------------------------------------------------------------------------------------

/// A str, with lengths around the fixstr / str8 / str16 boundaries (31/32, 255/256 bytes).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => vec(any::<char>(), 0..12).prop_map(String::from_iter),
        1 => vec(proptest::char::range('a', 'z'), 28..36).prop_map(String::from_iter),
        1 => vec(proptest::char::range('a', 'z'), 250..262).prop_map(String::from_iter),
    ]
}

/// Bytes, with lengths around the bin8 / bin16 boundary and the fixext sizes.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..20),
        1 => vec(any::<u8>(), 250..262),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Boolean),
        // Small ints around the fixint and 8/16-bit boundaries, and any 64-bit int.
        (-300i64..300).prop_map(Value::from),
        prop_oneof![
            Just(i64::MIN),
            Just(i64::MAX),
            Just(-32_769i64),
            Just(65_536i64)
        ]
        .prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        proptest::num::f32::ANY.prop_map(Value::F32),
        proptest::num::f64::ANY.prop_map(Value::F64),
        text().prop_map(Value::from),
        bytes().prop_map(Value::Binary),
        (any::<i8>(), bytes()).prop_map(|(t, d)| Value::Ext(t, d)),
        // An object reference, ext type 1 holding ["list", id].
        any::<u32>().prop_map(|id| {
            let mut data = Vec::new();
            rmpv::encode::write_value(&mut data, &Value::Array(vec!["list".into(), id.into()]))
                .unwrap();
            Value::Ext(1, data)
        }),
    ]
}

/// Trees up to 5 levels deep, some with 16+ elements (array16 / map16 headers).
fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            4 => vec(inner.clone(), 0..6).prop_map(Value::Array),
            3 => vec((inner.clone(), inner.clone()), 0..5).prop_map(Value::Map),
            1 => vec(inner.clone(), 16..19).prop_map(Value::Array),
            1 => vec((inner.clone(), inner), 16..18).prop_map(Value::Map),
        ]
    })
}

/// A message: any value, or a request envelope `[0, msgid, method, params]` around values.
fn message() -> impl Strategy<Value = Value> {
    prop_oneof![
        value(),
        (any::<u32>(), "[a-z.]{0,20}", vec(value(), 0..4)).prop_map(|(msgid, method, params)| {
            Value::Array(vec![
                0.into(),
                msgid.into(),
                method.into(),
                Value::Array(params),
            ])
        }),
    ]
}

// ---------------------------------------------------------------------------------------------
// Encoding with any legal header
// ---------------------------------------------------------------------------------------------

/// Picks among the legal encodings of each value, driven by a cycle of random choices.
struct Encoder<'a> {
    choices: &'a [u8],
    next: usize,
}

impl Encoder<'_> {
    fn choose(&mut self, options: usize) -> usize {
        let c = self.choices.get(self.next).copied().unwrap_or(0);
        self.next = (self.next + 1) % self.choices.len().max(1);
        usize::from(c) % options
    }

    /// A header for a length: among the forms (marker, width in bytes) whose width holds it.
    fn len_header(
        &mut self,
        out: &mut Vec<u8>,
        len: usize,
        fix: Option<(u8, usize)>,
        forms: &[(u8, usize)],
    ) {
        let mut options: Vec<(u8, usize)> = Vec::new();
        if let Some((base, max)) = fix {
            if len <= max {
                options.push((base | len as u8, 0));
            }
        }
        options.extend(
            forms
                .iter()
                .copied()
                .filter(|&(_, w)| len < 1usize << (8 * w)),
        );
        let (marker, width) = options[self.choose(options.len())];
        out.push(marker);
        out.extend_from_slice(&(len as u64).to_be_bytes()[8 - width..]);
    }

    fn encode(&mut self, v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::Nil => out.push(0xc0),
            Value::Boolean(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
            Value::Integer(i) => {
                let n: i128 = i
                    .as_i64()
                    .map(i128::from)
                    .or_else(|| i.as_u64().map(i128::from))
                    .unwrap();
                let mut options: Vec<Vec<u8>> = Vec::new();
                if (0..128).contains(&n) || (-32..0).contains(&n) {
                    options.push(vec![n as i8 as u8]);
                }
                for (marker, width, signed) in [
                    (0xcc, 1, false),
                    (0xcd, 2, false),
                    (0xce, 4, false),
                    (0xcf, 8, false),
                    (0xd0, 1, true),
                    (0xd1, 2, true),
                    (0xd2, 4, true),
                    (0xd3, 8, true),
                ] {
                    let bits = 8 * width;
                    let fits = if signed {
                        n >= -(1i128 << (bits - 1)) && n < 1i128 << (bits - 1)
                    } else {
                        n >= 0 && n < 1i128 << bits
                    };
                    if fits {
                        let mut e = vec![marker];
                        e.extend_from_slice(&(n as u128).to_be_bytes()[16 - width..]);
                        options.push(e);
                    }
                }
                let pick = self.choose(options.len());
                out.extend_from_slice(&options[pick]);
            }
            Value::F32(x) => {
                out.push(0xca);
                out.extend_from_slice(&x.to_be_bytes());
            }
            Value::F64(x) => {
                out.push(0xcb);
                out.extend_from_slice(&x.to_be_bytes());
            }
            Value::String(s) => {
                let b = s.as_bytes();
                self.len_header(
                    out,
                    b.len(),
                    Some((0xa0, 31)),
                    &[(0xd9, 1), (0xda, 2), (0xdb, 4)],
                );
                out.extend_from_slice(b);
            }
            Value::Binary(b) => {
                self.len_header(out, b.len(), None, &[(0xc4, 1), (0xc5, 2), (0xc6, 4)]);
                out.extend_from_slice(b);
            }
            Value::Array(items) => {
                self.len_header(out, items.len(), Some((0x90, 15)), &[(0xdc, 2), (0xdd, 4)]);
                for x in items {
                    self.encode(x, out);
                }
            }
            Value::Map(entries) => {
                self.len_header(
                    out,
                    entries.len(),
                    Some((0x80, 15)),
                    &[(0xde, 2), (0xdf, 4)],
                );
                for (k, x) in entries {
                    self.encode(k, out);
                    self.encode(x, out);
                }
            }
            Value::Ext(t, data) => {
                let fixext = match data.len() {
                    1 => Some(0xd4),
                    2 => Some(0xd5),
                    4 => Some(0xd6),
                    8 => Some(0xd7),
                    16 => Some(0xd8),
                    _ => None,
                };
                if let (Some(m), 0) = (fixext, self.choose(2)) {
                    out.push(m);
                } else {
                    self.len_header(out, data.len(), None, &[(0xc7, 1), (0xc8, 2), (0xc9, 4)]);
                }
                out.push(*t as u8);
                out.extend_from_slice(data);
            }
        }
    }

    /// Encodes `v`, recording where every value (`v` itself, elements, keys) starts.
    fn encode_recording(&mut self, v: &Value, out: &mut Vec<u8>, starts: &mut Vec<usize>) {
        starts.push(out.len());
        match v {
            Value::Array(items) => {
                self.len_header(out, items.len(), Some((0x90, 15)), &[(0xdc, 2), (0xdd, 4)]);
                for x in items {
                    self.encode_recording(x, out, starts);
                }
            }
            Value::Map(entries) => {
                self.len_header(
                    out,
                    entries.len(),
                    Some((0x80, 15)),
                    &[(0xde, 2), (0xdf, 4)],
                );
                for (k, x) in entries {
                    self.encode_recording(k, out, starts);
                    self.encode_recording(x, out, starts);
                }
            }
            scalar => self.encode(scalar, out),
        }
    }
}

fn encode(v: &Value, choices: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder { choices, next: 0 }.encode(v, &mut out);
    out
}

/// The encoding of `v` and the offsets where each of its values starts.
fn encode_with_starts(v: &Value, choices: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let (mut out, mut starts) = (Vec::new(), Vec::new());
    Encoder { choices, next: 0 }.encode_recording(v, &mut out, &mut starts);
    (out, starts)
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Equality that tells float bit patterns apart (so NaN equals the same NaN).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((k1, v1), (k2, v2))| same(k1, k2) && same(v1, v2))
        }
        _ => a == b,
    }
}

fn decode(frame: &[u8]) -> Value {
    let mut rest = frame;
    let v = rmpv::decode::read_value(&mut rest).expect("a frame decodes");
    assert!(rest.is_empty(), "a frame is exactly one value");
    v
}

/// Nesting depth as the scanner counts it: each array or map, empty or not, is one level.
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, x)| depth(k).max(depth(x)))
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}

/// The most elements of any array (or entries of any map) in `v`.
fn widest(v: &Value) -> usize {
    match v {
        Value::Array(items) => items.iter().map(widest).fold(items.len(), usize::max),
        Value::Map(entries) => entries
            .iter()
            .map(|(k, x)| widest(k).max(widest(x)))
            .fold(entries.len(), usize::max),
        _ => 0,
    }
}

/// Feeds `stream` to a decoder in chunks of the given sizes (cycled), collecting frames.
fn decode_in_chunks(
    stream: &[u8],
    sizes: &[usize],
    limits: Limits,
) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut d = FrameDecoder::new(limits);
    let mut frames = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let n = sizes[i % sizes.len()].min(stream.len() - pos);
        i += 1;
        // Both ways of handing bytes to the decoder.
        if i % 2 == 0 {
            d.extend(&stream[pos..pos + n]);
        } else {
            d.read_buf(n).extend_from_slice(&stream[pos..pos + n]);
        }
        pos += n;
        while let Some(frame) = d.next_frame()? {
            frames.push(frame.to_vec());
        }
    }
    assert_eq!(d.buffered(), 0, "nothing left over after whole messages");
    assert_eq!(d.next_frame()?, None);
    Ok(frames)
}

/// Prefix lengths worth checking: all of them for short messages, otherwise the first and
/// last 64 and an even spread in between.
fn prefix_lengths(len: usize) -> Vec<usize> {
    if len <= 400 {
        return (0..len).collect();
    }
    let mut v: Vec<usize> = (0..64).chain(len - 64..len).collect();
    v.extend((64..len - 64).step_by((len / 256).max(1)));
    v
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Several messages in one stream, cut into random chunks: the decoder yields exactly the
    /// messages, byte for byte, and rmpv decodes each back to its value.
    #[test]
    fn a_chunked_stream_yields_exactly_its_messages(
        messages in vec(message(), 1..6),
        choices in vec(any::<u8>(), 1..64),
        sizes in vec(1usize..80, 1..16),
    ) {
        let encoded: Vec<Vec<u8>> = messages.iter().map(|m| encode(m, &choices)).collect();
        let stream = encoded.concat();
        let frames = decode_in_chunks(&stream, &sizes, Limits::default()).unwrap();
        prop_assert_eq!(&frames, &encoded);
        for (frame, original) in frames.iter().zip(&messages) {
            let decoded = decode(frame);
            prop_assert!(same(&decoded, original), "{} decoded as {}", original, decoded);
        }
        // One byte at a time, and all at once, give the same frames.
        prop_assert_eq!(&decode_in_chunks(&stream, &[1], Limits::default()).unwrap(), &encoded);
        prop_assert_eq!(
            &decode_in_chunks(&stream, &[stream.len()], Limits::default()).unwrap(),
            &encoded
        );
    }

    /// Any proper prefix of a valid message is incomplete, never an error.
    #[test]
    fn every_prefix_of_a_message_is_incomplete(
        message in message(),
        choices in vec(any::<u8>(), 1..64),
    ) {
        let bytes = encode(&message, &choices);
        for len in prefix_lengths(bytes.len()) {
            let mut d = FrameDecoder::new(Limits::default());
            d.extend(&bytes[..len]);
            prop_assert_eq!(d.next_frame(), Ok(None), "prefix of {} of {} bytes", len, bytes.len());
            prop_assert_eq!(d.buffered(), len);
        }
        // And one decoder fed byte by byte says "incomplete" until the very last byte.
        let mut d = FrameDecoder::new(Limits::default());
        for (i, b) in bytes.iter().enumerate() {
            d.extend(&[*b]);
            let got = d.next_frame().unwrap();
            if i + 1 < bytes.len() {
                prop_assert_eq!(got, None);
            } else {
                prop_assert_eq!(got.as_deref(), Some(&bytes[..]));
            }
        }
    }

    /// A message truncated where a value should start, followed by the never-used marker
    /// `0xc1`, is an error (not a limit) at that offset, however the bytes arrive. (Inside a
    /// str, bin, ext payload or a number, `0xc1` is just data, so only value starts qualify.)
    #[test]
    fn a_bad_marker_where_a_value_starts_is_an_error(
        message in message(),
        choices in vec(any::<u8>(), 1..64),
        pick in any::<prop::sample::Index>(),
    ) {
        let (bytes, starts) = encode_with_starts(&message, &choices);
        prop_assert_eq!(&bytes, &encode(&message, &choices));
        let mut cuts = vec![starts[0], *starts.last().unwrap(), starts[pick.index(starts.len())]];
        if starts.len() <= 64 {
            cuts = starts.clone();
        }
        for cut in cuts {
            let mut bad = bytes[..cut].to_vec();
            bad.push(0xc1);
            let mut d = FrameDecoder::new(Limits::default());
            d.extend(&bad);
            let err = d.next_frame().unwrap_err();
            prop_assert!(!err.is_limit());
            prop_assert_eq!(&err.source, &ScanError::InvalidMarker { byte: 0xc1, offset: cut });
            // The same when the prefix arrived first.
            let mut d = FrameDecoder::new(Limits::default());
            d.extend(&bytes[..cut]);
            prop_assert_eq!(d.next_frame(), Ok(None));
            d.extend(&[0xc1]);
            prop_assert!(d.next_frame().is_err());
        }
    }

    /// Each limit accepts a message exactly at it and refuses one just over it.
    #[test]
    fn limits_are_exact(
        message in message(),
        choices in vec(any::<u8>(), 1..64),
    ) {
        let bytes = encode(&message, &choices);
        let check = |limits: Limits| {
            let mut d = FrameDecoder::new(limits);
            d.extend(&bytes);
            d.next_frame()
        };
        let size = Limits { max_message_bytes: bytes.len(), ..Limits::default() };
        let whole = check(size).unwrap();
        prop_assert_eq!(whole.as_deref(), Some(&bytes[..]));
        let size = Limits { max_message_bytes: bytes.len() - 1, ..Limits::default() };
        let err = check(size).unwrap_err();
        prop_assert!(matches!(err.source, ScanError::TooLarge { .. }), "{:?}", err);

        let d = depth(&message);
        let deep = Limits { max_depth: d, ..Limits::default() };
        prop_assert!(check(deep).unwrap().is_some());
        if d > 0 {
            let deep = Limits { max_depth: d - 1, ..Limits::default() };
            let err = check(deep).unwrap_err();
            prop_assert!(matches!(err.source, ScanError::TooDeep { .. }), "{:?}", err);
        }

        let w = widest(&message);
        let wide = Limits { max_container_len: w, ..Limits::default() };
        prop_assert!(check(wide).unwrap().is_some());
        if w > 0 {
            let wide = Limits { max_container_len: w - 1, ..Limits::default() };
            let err = check(wide).unwrap_err();
            prop_assert!(matches!(err.source, ScanError::TooLong { .. }), "{:?}", err);
        }
    }

    /// An error in a request is reported with the request's msgid, whatever the encoding of
    /// the msgid and of the headers, so the manager can answer it.
    #[test]
    fn an_error_in_a_request_carries_its_msgid(
        msgid in any::<u32>(),
        method in "[a-z.]{0,40}",
        params in vec(value(), 0..4),
        choices in vec(any::<u8>(), 1..64),
    ) {
        let mut e = Encoder { choices: &choices, next: 0 };
        // The envelope header in any form, then the type as the fixint 0 (see the ignored
        // `a_request_type_in_a_wide_int_form_is_still_a_request` in manager/tests/protocol.rs).
        let mut head = Vec::new();
        e.len_header(&mut head, 4, Some((0x90, 15)), &[(0xdc, 2), (0xdd, 4)]);
        head.push(0x00);
        e.encode(&Value::from(msgid), &mut head);
        let mut bytes = head.clone();
        e.encode(&Value::from(method.as_str()), &mut bytes);
        e.encode(&Value::Array(params), &mut bytes);

        // Over the size limit.
        let mut d = FrameDecoder::new(Limits { max_message_bytes: bytes.len() - 1, ..Limits::default() });
        d.extend(&bytes);
        let err = d.next_frame().unwrap_err();
        prop_assert!(err.is_limit());
        prop_assert_eq!(err.msgid, Some(msgid));
        // Garbage where the method should start.
        let mut bad = head.clone();
        bad.push(0xc1);
        let mut d = FrameDecoder::new(Limits::default());
        d.extend(&bad);
        let err = d.next_frame().unwrap_err();
        prop_assert!(!err.is_limit());
        prop_assert_eq!(err.msgid, Some(msgid));
        // With no readable header there is no msgid.
        let mut d = FrameDecoder::new(Limits::default());
        d.extend(&[0xc1]);
        prop_assert_eq!(d.next_frame().unwrap_err().msgid, None);
    }
}

// ---------------------------------------------------------------------------------------------
// The 32-bit length forms, too big for the random trees
// ---------------------------------------------------------------------------------------------

#[test]
fn thirty_two_bit_lengths_frame_and_decode() {
    let big_text = "x".repeat(70_000);
    let big_bytes = vec![0xc1u8; 70_000]; // the bad marker as data is fine
    let many: Vec<Value> = (0..70_000u32).map(|i| Value::from(i % 128)).collect();
    let entries: Vec<(Value, Value)> = (0..70_000u32)
        .map(|i| (Value::from(i), Value::Nil))
        .collect();
    let values = [
        Value::from(big_text.as_str()),
        Value::Binary(big_bytes.clone()),
        Value::Ext(-7, big_bytes),
        Value::Array(many),
        Value::Map(entries),
    ];
    let mut stream = Vec::new();
    let mut encoded = Vec::new();
    for v in &values {
        let mut e = Vec::new();
        rmpv::encode::write_value(&mut e, v).unwrap();
        assert!(
            [0xdb, 0xc6, 0xc9, 0xdd, 0xdf].contains(&e[0]),
            "a 32-bit length form: {:02x}",
            e[0]
        );
        stream.extend_from_slice(&e);
        encoded.push(e);
    }
    for sizes in [&[1usize][..], &[7, 4096, 13], &[65_536], &[stream.len()]] {
        let frames = decode_in_chunks(&stream, sizes, Limits::default()).unwrap();
        assert_eq!(frames, encoded, "chunks {sizes:?}");
    }
    for (frame, v) in encoded.iter().zip(&values) {
        assert!(same(&decode(frame), v));
        for len in prefix_lengths(frame.len()) {
            let mut d = FrameDecoder::new(Limits::default());
            d.extend(&frame[..len]);
            assert_eq!(d.next_frame(), Ok(None));
        }
    }
}

#[test]
fn short_values_in_32_bit_forms_frame_and_decode() {
    // A str, a bin, an array, a map and an ext of a few bytes, each with a 32-bit length.
    let stream: Vec<u8> = [
        &[0xdb, 0, 0, 0, 2, b'h', b'i'][..],
        &[0xc6, 0, 0, 0, 1, 0xff],
        &[0xdd, 0, 0, 0, 2, 0x01, 0xc0],
        &[0xdf, 0, 0, 0, 1, 0xa1, b'k', 0xc3],
        &[0xc9, 0, 0, 0, 1, 0x05, 0xaa],
        &[0xd3, 0, 0, 0, 0, 0, 0, 0, 5],
    ]
    .concat();
    let frames = decode_in_chunks(&stream, &[1], Limits::default()).unwrap();
    let values: Vec<Value> = frames.iter().map(|f| decode(f)).collect();
    assert_eq!(
        values,
        [
            Value::from("hi"),
            Value::Binary(vec![0xff]),
            Value::Array(vec![1.into(), Value::Nil]),
            Value::Map(vec![("k".into(), true.into())]),
            Value::Ext(5, vec![0xaa]),
            Value::from(5),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Fuzzing: arbitrary bytes, and valid streams broken on purpose
// ---------------------------------------------------------------------------------------------
//
// proptest is the fuzz engine (the toolchain is stable, so no libFuzzer). Each target runs a
// bounded number of cases under `cargo test`; `AGORA_FUZZ_CASES=N` runs N instead, and
// `--nocapture` shows how many frames and bytes went through.

use std::sync::atomic::{AtomicU64, Ordering};

use agora_proto::envelope::{self, request_msgid_prefix};
use agora_proto::{params, Envelope};
use bytes::Bytes;
use proptest::test_runner::TestRunner;

/// Cases per fuzz target: `AGORA_FUZZ_CASES` when set, else `default`.
fn fuzz_cases(default: u32) -> u32 {
    std::env::var("AGORA_FUZZ_CASES")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

/// Runs a fuzz target for `fuzz_cases(default)` cases and prints what went through.
fn fuzz<S: Strategy>(
    name: &str,
    default: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let cases = fuzz_cases(default);
    let before = (
        FRAMES.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{name}: {e}");
    }
    eprintln!(
        "{name}: {cases} cases, {} frames, {} bytes",
        FRAMES.load(Ordering::Relaxed) - before.0,
        BYTES.load(Ordering::Relaxed) - before.1
    );
}

/// Frames and bytes the fuzz targets fed to the decoder (all targets together).
static FRAMES: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// One way to break a valid stream.
#[derive(Debug, Clone)]
enum Mutation {
    /// Flip one bit.
    Flip(prop::sample::Index, u8),
    /// Cut the stream short.
    Truncate(prop::sample::Index),
    /// Insert bytes.
    Insert(prop::sample::Index, Vec<u8>),
    /// Remove up to n bytes.
    Delete(prop::sample::Index, usize),
    /// Overwrite one byte (a marker, a length byte, data).
    Overwrite(prop::sample::Index, u8),
    /// Insert a header that declares a huge (or merely wrong) length.
    Declare(prop::sample::Index, u8, u32),
    /// Insert `n` one-element array headers: deep nesting.
    Nest(prop::sample::Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    use prop::sample::Index;
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Overwrite(i, b)),
        2 => (
            any::<Index>(),
            prop::sample::select(vec![0xc4u8, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf]),
            prop_oneof![Just(u32::MAX), Just(u32::MAX / 2 + 1), Just(1 << 24), any::<u32>(), 0u32..40],
        )
            .prop_map(|(i, m, n)| Mutation::Declare(i, m, n)),
        1 => (any::<Index>(), prop_oneof![1usize..40, 100usize..3000]).prop_map(|(i, n)| Mutation::Nest(i, n)),
    ]
}

fn apply(stream: &mut Vec<u8>, m: &Mutation) {
    let at = |i: &prop::sample::Index, len: usize| i.index(len + 1);
    match m {
        Mutation::Flip(i, bit) if !stream.is_empty() => {
            let at = i.index(stream.len());
            stream[at] ^= 1 << bit;
        }
        Mutation::Truncate(i) => stream.truncate(at(i, stream.len())),
        Mutation::Insert(i, bytes) => {
            let at = at(i, stream.len());
            stream.splice(at..at, bytes.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let at = at(i, stream.len());
            let end = (at + n).min(stream.len());
            stream.drain(at..end);
        }
        Mutation::Overwrite(i, b) if !stream.is_empty() => {
            let at = i.index(stream.len());
            stream[at] = *b;
        }
        Mutation::Declare(i, marker, n) => {
            let width = match marker {
                0xc4 | 0xc7 | 0xd9 => 1,
                0xc5 | 0xc8 | 0xda | 0xdc | 0xde => 2,
                _ => 4,
            };
            let mut header = vec![*marker];
            header.extend_from_slice(&n.to_be_bytes()[4 - width..]);
            let at = at(i, stream.len());
            stream.splice(at..at, header);
        }
        Mutation::Nest(i, n) => {
            let at = at(i, stream.len());
            stream.splice(at..at, std::iter::repeat_n(0x91, *n));
        }
        _ => {}
    }
}

/// Limits small enough that random streams run into them, or the defaults.
fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        1 => Just(Limits::default()),
        3 => (1usize..2048, 1usize..24, 0usize..40).prop_map(|(bytes, depth, len)| Limits {
            max_message_bytes: bytes,
            max_depth: depth,
            max_container_len: len,
        }),
    ]
}

/// What must hold of any frame the decoder yields, whatever the input: within the limits, one
/// whole value by the reference decoder, and an envelope that parses (or fails) soundly.
fn check_frame(frame: &Bytes, limits: &Limits) -> Result<(), TestCaseError> {
    FRAMES.fetch_add(1, Ordering::Relaxed);
    prop_assert!(frame.len() <= limits.max_message_bytes);
    let mut rest = &frame[..];
    let v = rmpv::decode::read_value(&mut rest);
    prop_assert!(v.is_ok(), "the reference decoder refuses a frame: {:?}", v);
    prop_assert!(rest.is_empty(), "a frame is exactly one value");
    let v = v.unwrap();
    prop_assert!(depth(&v) <= limits.max_depth);
    prop_assert!(widest(&v) <= limits.max_container_len);
    check_envelope(frame)
}

/// `envelope::parse` and the `Params` accessors on any bytes: no panic, and every error
/// carries the msgid whenever the bytes start with a readable request header.
fn check_envelope(frame: &Bytes) -> Result<(), TestCaseError> {
    let prefix = request_msgid_prefix(frame);
    match envelope::parse(frame.clone()) {
        Err(e) => prop_assert_eq!(e.msgid, prefix, "{}", e),
        Ok(Envelope::Request { msgid, params, .. }) => {
            prop_assert_eq!(Some(msgid), prefix);
            exercise(&params);
        }
        Ok(Envelope::Notification { params, .. }) => exercise(&params),
        Ok(Envelope::Response { error, result, .. }) => {
            for raw in [&error, &result] {
                prop_assert_eq!(agora_proto::scanner::value_len(raw), Some(raw.len()));
            }
        }
    }
    Ok(())
}

/// Every accessor on every param (and one past the end where that is allowed).
fn exercise(p: &agora_proto::Params) {
    exercise_nested(p, 8)
}

fn exercise_nested(p: &agora_proto::Params, levels: usize) {
    let _ = p.expect("m", 0, 3);
    let _ = p.opt(p.len());
    let _ = p.opt_i64(p.len());
    let _ = p.bool_or(p.len(), true);
    for i in 0..p.len() {
        let raw = p.raw(i);
        assert_eq!(p.bytes(i), raw);
        let _ = (
            p.u64(i),
            p.i64(i),
            p.opt_i64(i),
            p.str(i),
            p.bool_or(i, false),
        );
        let _ = (
            params::type_name(raw),
            params::text(raw),
            params::bytes_of(raw),
        );
        let _ = (
            params::int_i64(raw),
            params::int_u64(raw),
            params::is_nil(raw),
        );
        let _ = (params::array_items(raw), params::map_entries(raw));
        if let Ok(inner) = p.array(i) {
            if levels > 0 {
                exercise_nested(&inner, levels - 1);
            }
        }
        let _ = p.value(i);
    }
    assert_eq!(p.iter().count(), p.len());
}

/// Feeds `stream` in chunks (cycled sizes) and checks every frame, every pause and the error.
fn fuzz_stream(stream: &[u8], sizes: &[usize], limits: Limits) -> Result<(), TestCaseError> {
    fuzz_stream_changing_limits(stream, sizes, &[limits])
}

/// As [`fuzz_stream`], with the limits changed before each chunk (cycling through `all`), as a
/// connection's are once it authenticates. A frame is checked against the limits in force
/// when it is cut (its depth and widths only when the limits never change).
fn fuzz_stream_changing_limits(
    stream: &[u8],
    sizes: &[usize],
    all: &[Limits],
) -> Result<(), TestCaseError> {
    BYTES.fetch_add(stream.len() as u64, Ordering::Relaxed);
    let mut d = FrameDecoder::new(all[0]);
    let (mut fed, mut consumed, mut i) = (0, 0, 0);
    while fed < stream.len() {
        let n = sizes[i % sizes.len()].min(stream.len() - fed);
        let limits = all[i % all.len()];
        d.set_limits(limits);
        i += 1;
        d.extend(&stream[fed..fed + n]);
        fed += n;
        loop {
            match d.next_frame() {
                Ok(Some(frame)) => {
                    prop_assert_eq!(&frame[..], &stream[consumed..consumed + frame.len()]);
                    consumed += frame.len();
                    if all.len() == 1 {
                        check_frame(&frame, &limits)?;
                    } else {
                        let loose = Limits {
                            max_message_bytes: limits.max_message_bytes,
                            ..Limits::UNLIMITED
                        };
                        check_frame(&frame, &loose)?;
                    }
                }
                Ok(None) => {
                    prop_assert_eq!(d.buffered(), fed - consumed);
                    // An incomplete message never holds more than the limit allows.
                    prop_assert!(
                        d.buffered() <= limits.max_message_bytes,
                        "{} bytes buffered under a limit of {}",
                        d.buffered(),
                        limits.max_message_bytes
                    );
                    break;
                }
                Err(e) => {
                    prop_assert_eq!(e.msgid, request_msgid_prefix(&stream[consumed..fed]));
                    if let ScanError::TooLarge { limit } = e.source {
                        prop_assert_eq!(limit, limits.max_message_bytes);
                    }
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// A stream of requests (and other messages) in random encodings.
fn valid_stream() -> impl Strategy<Value = Vec<u8>> {
    (vec(message(), 1..5), vec(any::<u8>(), 1..32))
        .prop_map(|(messages, choices)| messages.iter().flat_map(|m| encode(m, &choices)).collect())
}

#[test]
fn fuzz_arbitrary_bytes() {
    let bytes = prop_oneof![
        vec(any::<u8>(), 0..256),
        // Mostly markers that open containers and payloads.
        vec(
            prop::sample::select(vec![
                0x91u8, 0x92, 0x9f, 0x81, 0xa3, 0xc4, 0xdc, 0xdd, 0xdf, 0xc7, 0xd4, 0x00, 0xc0,
                0xff
            ]),
            0..256
        ),
    ];
    fuzz(
        "fuzz_arbitrary_bytes",
        2000,
        (bytes, vec(1usize..64, 1..8), limits()),
        |(stream, sizes, limits)| {
            fuzz_stream(&stream, &sizes, limits)?;
            check_envelope(&Bytes::from(stream.clone()))?;
            // The scanner agrees with the reference decoder on where the first value ends.
            let scanned = agora_proto::Scanner::new(Limits {
                max_depth: 200,
                ..Limits::UNLIMITED
            })
            .scan(&stream);
            let mut rest = &stream[..];
            let reference = rmpv::decode::read_value(&mut rest).map(|_| stream.len() - rest.len());
            match scanned {
                Ok(Some(n)) => prop_assert_eq!(reference.ok(), Some(n)),
                Ok(None) => prop_assert!(reference.is_err(), "incomplete, but {:?}", reference),
                // rmpv reads the reserved marker as nil; the protocol refuses it.
                Err(ScanError::InvalidMarker { byte, offset }) => {
                    prop_assert_eq!((byte, stream[offset]), (0xc1, 0xc1))
                }
                Err(_) => {} // deeper than 200: the reference decoder's own depth differs
            }
            Ok(())
        },
    );
}

#[test]
fn fuzz_mutated_requests() {
    fuzz(
        "fuzz_mutated_requests",
        400,
        (
            valid_stream(),
            vec(mutation(), 1..5),
            vec(1usize..200, 1..8),
            limits(),
        ),
        |(mut stream, mutations, sizes, limits)| {
            for m in &mutations {
                apply(&mut stream, m);
            }
            fuzz_stream(&stream, &sizes, limits)?;
            fuzz_stream(&stream, &[1], limits)
        },
    );
}

#[test]
fn fuzz_limits_changed_mid_stream() {
    fuzz(
        "fuzz_limits_changed_mid_stream",
        300,
        (
            valid_stream(),
            vec(mutation(), 0..3),
            vec(1usize..64, 1..8),
            vec(limits(), 2..5),
        ),
        |(mut stream, mutations, sizes, all)| {
            for m in &mutations {
                apply(&mut stream, m);
            }
            fuzz_stream_changing_limits(&stream, &sizes, &all)
        },
    );
}

#[test]
fn fuzz_valid_streams_agree_with_the_reference() {
    fuzz(
        "fuzz_valid_streams_agree_with_the_reference",
        100,
        (
            vec(message(), 1..5),
            vec(any::<u8>(), 1..32),
            vec(1usize..200, 1..8),
        ),
        |(messages, choices, sizes)| {
            let encoded: Vec<Vec<u8>> = messages.iter().map(|m| encode(m, &choices)).collect();
            let stream = encoded.concat();
            fuzz_stream(&stream, &sizes, Limits::default())?;
            let frames = decode_in_chunks(&stream, &sizes, Limits::default()).unwrap();
            prop_assert_eq!(&frames, &encoded);
            for (frame, m) in frames.iter().zip(&messages) {
                prop_assert!(same(&decode(frame), m));
            }
            Ok(())
        },
    );
}
