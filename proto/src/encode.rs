//! Writing MessagePack-RPC messages and the small values the manager computes itself.
//!
//! Results that are stored values are copied as raw bytes after a fixed header, so a reply to
//! `dict.get` costs one copy of the stored value and no encoding.
//!
//! The scalar and header writers append to any [`Sink`]; the message writers build whole
//! messages in a `Vec<u8>`.

use crate::error::CallError;

/// A buffer the scalar and header writers append to, which grows as needed and cannot fail:
/// a `Vec<u8>`, or a buffer of the caller's own (the Rust client keeps a call's params inline
/// up to a few dozen bytes, so that building a call allocates nothing).
pub trait Sink {
    /// Appends one byte.
    fn put(&mut self, byte: u8);
    /// Appends `bytes`.
    fn put_slice(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    #[inline]
    fn put(&mut self, byte: u8) {
        self.push(byte);
    }

    #[inline]
    fn put_slice(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A [`Sink`] as the writer `rmp::encode` takes. Writing to a sink cannot fail, so every
/// `rmp::encode` call below ignores an error that cannot happen, through `ok()`.
struct Rmp<'a, S: ?Sized>(&'a mut S);

impl<S: Sink + ?Sized> std::io::Write for Rmp<'_, S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.put_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Appends an unsigned integer in its shortest encoding.
pub fn uint(out: &mut (impl Sink + ?Sized), n: u64) {
    // Written here rather than through rmp: one append of at most nine bytes, the hot path of
    // every request (a msgid, an object id).
    let be = n.to_be_bytes();
    match n {
        0..=0x7f => out.put(n as u8),
        0x80..=0xff => out.put_slice(&[0xcc, n as u8]),
        0x100..=0xffff => out.put_slice(&[0xcd, be[6], be[7]]),
        0x1_0000..=0xffff_ffff => out.put_slice(&[0xce, be[4], be[5], be[6], be[7]]),
        _ => out.put_slice(&[0xcf, be[0], be[1], be[2], be[3], be[4], be[5], be[6], be[7]]),
    }
}

/// Appends a signed integer in its shortest encoding (a non-negative one as [`uint`] does).
pub fn int(out: &mut (impl Sink + ?Sized), n: i64) {
    match u64::try_from(n) {
        Ok(n) => uint(out, n),
        Err(_) => {
            rmp::encode::write_sint(&mut Rmp(out), n).ok();
        }
    }
}

/// Appends a str.
pub fn str(out: &mut (impl Sink + ?Sized), s: &str) {
    // A fixstr (method names, short keys) with a one-byte header; the rest through rmp.
    if s.len() < 32 {
        out.put(0xa0 | s.len() as u8);
        out.put_slice(s.as_bytes());
    } else {
        rmp::encode::write_str(&mut Rmp(out), s).ok();
    }
}

/// Appends a bin.
pub fn bin(out: &mut (impl Sink + ?Sized), b: &[u8]) {
    rmp::encode::write_bin(&mut Rmp(out), b).ok();
}

/// Appends a bool.
pub fn bool(out: &mut (impl Sink + ?Sized), b: bool) {
    out.put(if b { 0xc3 } else { 0xc2 });
}

/// Appends nil.
pub fn nil(out: &mut (impl Sink + ?Sized)) {
    out.put(0xc0);
}

/// Appends a float32.
pub fn f32(out: &mut (impl Sink + ?Sized), x: f32) {
    rmp::encode::write_f32(&mut Rmp(out), x).ok();
}

/// Appends a float64.
pub fn f64(out: &mut (impl Sink + ?Sized), x: f64) {
    rmp::encode::write_f64(&mut Rmp(out), x).ok();
}

/// Appends an array header for `n` elements (which the caller appends next).
pub fn array_header(out: &mut (impl Sink + ?Sized), n: usize) {
    if n < 16 {
        out.put(0x90 | n as u8);
    } else {
        rmp::encode::write_array_len(&mut Rmp(out), n as u32).ok();
    }
}

/// Appends a map header for `n` entries (key, value, key, value... follow).
pub fn map_header(out: &mut (impl Sink + ?Sized), n: usize) {
    rmp::encode::write_map_len(&mut Rmp(out), n as u32).ok();
}

/// Appends a dynamic value.
pub fn value(out: &mut Vec<u8>, v: &rmpv::Value) {
    rmpv::encode::write_value(out, v).ok();
}

/// The encoding of a dynamic value.
pub fn to_vec(v: &rmpv::Value) -> Vec<u8> {
    let mut out = Vec::new();
    value(&mut out, v);
    out
}

/// Appends `[0, msgid, method, params]` with params given as encoded values.
pub fn request(out: &mut Vec<u8>, msgid: u32, method: &str, params: &[&[u8]]) {
    out.push(0x94);
    out.push(crate::REQUEST);
    uint(out, u64::from(msgid));
    str(out, method);
    array_header(out, params.len());
    for p in params {
        out.extend_from_slice(p);
    }
}

/// Appends `[1, msgid, nil, result]`, `result` being an encoded value.
pub fn response_ok(out: &mut Vec<u8>, msgid: u32, result: &[u8]) {
    out.push(0x94);
    out.push(crate::RESPONSE);
    uint(out, u64::from(msgid));
    nil(out);
    out.extend_from_slice(result);
}

/// Appends the error pair `[name, message]`.
pub fn error_pair(out: &mut Vec<u8>, name: &str, message: &str) {
    out.push(0x92);
    str(out, name);
    str(out, message);
}

/// Appends `[1, msgid, [name, message], nil]`.
pub fn response_err(out: &mut Vec<u8>, msgid: u32, err: &CallError) {
    out.push(0x94);
    out.push(crate::RESPONSE);
    uint(out, u64::from(msgid));
    error_pair(out, err.name.as_str(), &err.message);
    nil(out);
}

/// Appends `[2, method, params]`.
pub fn notification(out: &mut Vec<u8>, method: &str, params: &[&[u8]]) {
    out.push(0x93);
    out.push(crate::NOTIFICATION);
    str(out, method);
    array_header(out, params.len());
    for p in params {
        out.extend_from_slice(p);
    }
}

/// The encoding of `nil`, the result of calls that return nothing.
pub const NIL: &[u8] = &[0xc0];
/// The encoding of `true`.
pub const TRUE: &[u8] = &[0xc3];
/// The encoding of `false`.
pub const FALSE: &[u8] = &[0xc2];

#[cfg(test)]
mod tests {
    use super::*;

    /// Ints are written in the shortest encoding, byte for byte as rmp writes them, at every
    /// boundary between two encodings.
    #[test]
    fn ints_are_encoded_as_rmp_encodes_them() {
        let mut edges: Vec<u64> = vec![0, 1, u64::MAX];
        for bits in [7u32, 8, 16, 32, 63] {
            let edge = 1u64 << bits;
            edges.extend([edge - 1, edge, edge + 1]);
        }
        for n in edges {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            uint(&mut ours, n);
            rmp::encode::write_uint(&mut theirs, n).unwrap();
            assert_eq!(ours, theirs, "uint {n}");
            for i in [n as i64, (n as i64).wrapping_neg(), i64::MIN, i64::MAX] {
                let (mut ours, mut theirs) = (Vec::new(), Vec::new());
                int(&mut ours, i);
                rmp::encode::write_sint(&mut theirs, i).unwrap();
                assert_eq!(ours, theirs, "int {i}");
            }
        }
    }

    #[test]
    fn response_round_trips_through_the_envelope_parser() {
        let mut out = Vec::new();
        response_err(&mut out, 7, &CallError::key("'x'"));
        let env = crate::envelope::parse(out.into()).unwrap();
        let crate::Envelope::Response {
            msgid,
            error,
            result,
        } = env
        else {
            panic!("not a response")
        };
        assert_eq!(msgid, 7);
        assert_eq!(&result[..], NIL);
        let err = crate::value::decode(&error).unwrap();
        assert_eq!(
            err,
            rmpv::Value::Array(vec!["KeyError".into(), "'x'".into()])
        );
    }
}
