//! Writing MessagePack-RPC messages and the small values the manager computes itself.
//!
//! Results that are stored values are copied as raw bytes after a fixed header, so a reply to
//! `dict.get` costs one copy of the stored value and no encoding.

use crate::error::CallError;

// Writing into a Vec cannot fail: every `rmp::encode` call below ignores an error that cannot
// happen, through `ok()`.

/// Appends an unsigned integer in its shortest encoding.
pub fn uint(out: &mut Vec<u8>, n: u64) {
    // A positive fixint (object ids, small counts) in one push; the rest through rmp.
    match u8::try_from(n) {
        Ok(b) if b < 0x80 => out.push(b),
        _ => {
            rmp::encode::write_uint(out, n).ok();
        }
    }
}

/// Appends a signed integer in its shortest encoding.
pub fn int(out: &mut Vec<u8>, n: i64) {
    rmp::encode::write_sint(out, n).ok();
}

/// Appends a str.
pub fn str(out: &mut Vec<u8>, s: &str) {
    // A fixstr (method names, short keys) with a one-byte header; the rest through rmp.
    if s.len() < 32 {
        out.push(0xa0 | s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    } else {
        rmp::encode::write_str(out, s).ok();
    }
}

/// Appends a bin.
pub fn bin(out: &mut Vec<u8>, b: &[u8]) {
    rmp::encode::write_bin(out, b).ok();
}

/// Appends a bool.
pub fn bool(out: &mut Vec<u8>, b: bool) {
    out.push(if b { 0xc3 } else { 0xc2 });
}

/// Appends nil.
pub fn nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

/// Appends a float32.
pub fn f32(out: &mut Vec<u8>, x: f32) {
    rmp::encode::write_f32(out, x).ok();
}

/// Appends a float64.
pub fn f64(out: &mut Vec<u8>, x: f64) {
    rmp::encode::write_f64(out, x).ok();
}

/// Appends an array header for `n` elements (which the caller appends next).
pub fn array_header(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x90 | n as u8);
    } else {
        rmp::encode::write_array_len(out, n as u32).ok();
    }
}

/// Appends a map header for `n` entries (key, value, key, value... follow).
pub fn map_header(out: &mut Vec<u8>, n: usize) {
    rmp::encode::write_map_len(out, n as u32).ok();
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
