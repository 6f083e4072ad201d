//! The MessagePack-RPC envelope of one complete message.

use bytes::{Buf, Bytes};
use thiserror::Error;

use crate::params::{Params, Scanned};
use crate::scanner::value_len;

/// A method name: text, copied out of its message when short (every method of the protocol
/// is), else kept as a slice of it. A copy of a few bytes costs less than the atomic
/// reference count a slice takes and gives back.
#[derive(Clone)]
pub struct Method(MethodRepr);

/// Bytes a method name may have to be kept inline.
const INLINE_METHOD: usize = 30;

#[derive(Clone)]
enum MethodRepr {
    Inline(u8, [u8; INLINE_METHOD]),
    Shared(Bytes),
}

impl Method {
    /// The name `raw`, if it is UTF-8; `frame` is the message it is a slice of.
    fn new(raw: &[u8], frame: &Bytes) -> Option<Method> {
        // Method names are ASCII: checking that is a few word compares; anything else gets
        // the full UTF-8 check.
        if !raw.is_ascii() {
            std::str::from_utf8(raw).ok()?;
        }
        let repr = match u8::try_from(raw.len()) {
            Ok(len) if raw.len() <= INLINE_METHOD => {
                let mut bytes = [0; INLINE_METHOD];
                bytes[..raw.len()].copy_from_slice(raw);
                MethodRepr::Inline(len, bytes)
            }
            _ => MethodRepr::Shared(frame.slice_ref(raw)),
        };
        Some(Method(repr))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        let bytes = match &self.0 {
            MethodRepr::Inline(len, bytes) => &bytes[..usize::from(*len)],
            MethodRepr::Shared(bytes) => bytes,
        };
        // SAFETY: `Method::new`, its only constructor, checked that the bytes are UTF-8, and
        // neither representation ever changes its contents.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }
}

impl PartialEq for Method {
    fn eq(&self, other: &Method) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Method {}

impl std::ops::Deref for Method {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Method {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Method {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl From<Method> for String {
    fn from(m: Method) -> String {
        m.as_str().to_owned()
    }
}

/// One message, with its params or result kept as raw encoded bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Envelope {
    /// `[0, msgid, method, params]`: must be answered exactly once.
    Request {
        msgid: u32,
        method: Method,
        params: Params,
    },
    /// `[1, msgid, error, result]`: the error and result values, encoded.
    Response {
        msgid: u32,
        error: Bytes,
        result: Bytes,
    },
    /// `[2, method, params]`: never answered.
    Notification { method: Method, params: Params },
}

/// A message that is valid MessagePack but not a valid envelope. The stream is still in sync.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("bad MessagePack-RPC envelope: {reason}")]
pub struct EnvelopeError {
    /// The msgid, when the message was recognisably a request: answer it with the error.
    pub msgid: Option<u32>,
    /// What is wrong with the envelope.
    pub reason: String,
}

fn bad(msgid: Option<u32>, reason: impl Into<String>) -> EnvelopeError {
    EnvelopeError {
        msgid,
        reason: reason.into(),
    }
}

/// A cursor over the elements of the envelope array.
struct Cursor<'a> {
    frame: &'a Bytes,
    pos: usize,
}

impl Cursor<'_> {
    fn rest(&self) -> &[u8] {
        &self.frame[self.pos..]
    }

    /// The next element as a slice of the frame.
    fn next_value(&mut self) -> Option<Bytes> {
        let (start, len) = self.next_span()?;
        Some(self.frame.slice(start..start + len))
    }

    fn next_u32(&mut self) -> Option<u32> {
        let (n, len) = read_u32(self.rest())?;
        self.pos += len;
        Some(n)
    }

    /// A method name: a str, or a bin holding UTF-8.
    fn next_method(&mut self) -> Result<Method, String> {
        let rest = self.rest();
        // A str or bin ends where its payload does.
        let method = crate::params::bytes_of(rest).and_then(|text| {
            let end = text.as_ptr() as usize - rest.as_ptr() as usize + text.len();
            Some((Method::new(text, self.frame)?, end))
        });
        let Some((method, len)) = method else {
            return Err(match value_len(rest) {
                None => "truncated method".to_owned(),
                Some(_) => "method must be a str (or a bin holding UTF-8)".to_owned(),
            });
        };
        self.pos += len;
        Ok(method)
    }

    /// The params array: each element is walked once, and its end is the array's. Made into
    /// [`Params`] by [`Params::within`], which takes the message over.
    fn next_params(&mut self) -> Option<(usize, Scanned)> {
        let start = self.pos;
        let scanned = Params::scan(self.frame, start)?;
        self.pos += scanned.len;
        Some((start, scanned))
    }

    /// Where the next element is: `(start, length)`.
    fn next_span(&mut self) -> Option<(usize, usize)> {
        let len = value_len(self.rest())?;
        let start = self.pos;
        self.pos += len;
        Some((start, len))
    }
}

/// The unsigned 32-bit int at the start of `rest` (a message type, a msgid), and its length.
fn read_u32(rest: &[u8]) -> Option<(u32, usize)> {
    let (n, len) = crate::params::uint_prefix(rest)?;
    Some((u32::try_from(n).ok()?, len))
}

/// Every byte value, for results of one byte to be static slices of.
static ONE_BYTE: [u8; 256] = {
    let mut all = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        all[i] = i as u8;
        i += 1;
    }
    all
};

/// A successful response whose result is one byte (nil, a bool, a small int, an empty
/// container or string: the reply of most writes) at the start of `buf`, which may hold more
/// after it, read in place: its length, and its msgid and result, a static slice that
/// references no buffer. `None` when `buf` does not start with a whole one: any other message
/// is framed by the scanner and read by [`parse`].
pub fn one_byte_response(buf: &[u8]) -> Option<(usize, (u32, Bytes))> {
    let [0x94, rest @ ..] = buf else {
        return None;
    };
    let (kind, kind_len) = read_u32(rest)?;
    if kind != u32::from(crate::RESPONSE) {
        return None;
    }
    let (msgid, msgid_len) = read_u32(&rest[kind_len..])?;
    let at = 1 + kind_len + msgid_len;
    let &[0xc0, value] = buf.get(at..at + 2)? else {
        return None;
    };
    // A one-byte value is a fixint, nil, a bool or an empty fixmap, fixarray or fixstr.
    let whole = matches!(value, 0x00..=0x80 | 0x90 | 0xa0 | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff);
    let byte = usize::from(value);
    whole.then(|| (at + 2, (msgid, Bytes::from_static(&ONE_BYTE[byte..=byte]))))
}

/// Reads `[0, msgid, ...` at the start of `buf`, even when the rest of the message is missing or
/// bad, so that an error about the message can be answered to its request.
pub fn request_msgid_prefix(buf: &[u8]) -> Option<u32> {
    let (len, header) = crate::params::array_header(buf)?;
    let mut rest = buf.get(header..)?;
    let kind: u8 = rmp::decode::read_int(&mut rest).ok()?;
    if len != 4 || kind != crate::REQUEST {
        return None;
    }
    rmp::decode::read_int(&mut rest).ok()
}

/// Parses one complete message.
pub fn parse(frame: Bytes) -> Result<Envelope, EnvelopeError> {
    let Some((len, header)) = crate::params::array_header(&frame) else {
        return Err(bad(None, "a message must be an array"));
    };
    let mut c = Cursor {
        frame: &frame,
        pos: header,
    };
    // The type is an int in any encoding (0 as a fixint, or as uint8 `cc 00`, ...).
    let kind = c.next_u32().and_then(|k| u8::try_from(k).ok());
    match (kind, len) {
        (Some(crate::REQUEST), 4) => {
            let msgid = c
                .next_u32()
                .ok_or_else(|| bad(None, "a request's msgid must be an unsigned 32-bit integer"))?;
            let method = c.next_method().map_err(|e| bad(Some(msgid), e))?;
            let (start, scanned) = c
                .next_params()
                .ok_or_else(|| bad(Some(msgid), "params must be an array"))?;
            Ok(Envelope::Request {
                msgid,
                method,
                params: Params::within(frame, start, scanned),
            })
        }
        (Some(crate::RESPONSE), 4) => {
            let msgid = c
                .next_u32()
                .ok_or_else(|| bad(None, "a response's msgid must be an unsigned integer"))?;
            // The nil of a success is not worth a reference to the frame.
            let error = if c.rest().first() == Some(&0xc0) {
                c.pos += 1;
                Bytes::from_static(&[0xc0])
            } else {
                c.next_value().ok_or_else(|| bad(None, "truncated"))?
            };
            let (start, len) = c.next_span().ok_or_else(|| bad(None, "truncated"))?;
            // The message becomes its result: no reference counted for a slice of it.
            let mut result = frame;
            result.advance(start);
            result.truncate(len);
            Ok(Envelope::Response {
                msgid,
                error,
                result,
            })
        }
        (Some(crate::NOTIFICATION), 3) => {
            let method = c.next_method().map_err(|e| bad(None, e))?;
            let (start, scanned) = c
                .next_params()
                .ok_or_else(|| bad(None, "params must be an array"))?;
            Ok(Envelope::Notification {
                method,
                params: Params::within(frame, start, scanned),
            })
        }
        _ => Err(bad(
            request_msgid_prefix(&frame),
            format!(
                "expected [0, msgid, method, params], [1, msgid, error, result] or \
                 [2, method, params]; got an array of {len} elements"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: rmpv::Value) -> Bytes {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &v).unwrap();
        Bytes::from(out)
    }

    /// A one-byte result is read in place exactly when `parse` would read the same response,
    /// with the same msgid and result.
    #[test]
    fn one_byte_responses_read_in_place_agree_with_parse() {
        use rmpv::Value as V;
        let results = [
            V::Nil,
            V::from(true),
            V::from(false),
            V::from(0),
            V::from(127),
            V::from(-1),
            V::from(-32),
            V::Array(vec![]),
            V::Map(vec![]),
            V::from(""),
        ];
        for msgid in [0u32, 5, 127, 128, 255, 256, 65_535, 65_536, u32::MAX] {
            for result in &results {
                let frame = enc(V::Array(vec![
                    V::from(1),
                    V::from(msgid),
                    V::Nil,
                    result.clone(),
                ]));
                let Ok(Envelope::Response {
                    msgid: id,
                    result: parsed,
                    ..
                }) = parse(frame.clone())
                else {
                    panic!("{frame:?} is a response");
                };
                let whole = Some((frame.len(), (id, parsed)));
                assert_eq!(one_byte_response(&frame), whole, "{frame:?}");
                // Whatever follows it in the buffer is not read.
                let mut followed = frame.to_vec();
                followed.extend_from_slice(&frame[..3]);
                assert_eq!(one_byte_response(&followed), whole, "{frame:?}");
            }
        }
        // Longer results, errors, requests and cut messages are left to `parse`.
        for other in [
            V::Array(vec![V::from(1), V::from(3), V::Nil, V::from(128)]),
            V::Array(vec![V::from(1), V::from(3), V::Nil, V::from("k")]),
            V::Array(vec![V::from(1), V::from(3), V::from("E"), V::Nil]),
            V::Array(vec![V::from(0), V::from(3), V::from("m"), V::Array(vec![])]),
        ] {
            assert_eq!(one_byte_response(&enc(other.clone())), None, "{other}");
        }
        // Ints in encodings a client rarely writes (an int8 msgid, a uint8 type) read alike.
        for raw in [
            &[0x94, 0x01, 0xd0, 0x05, 0xc0, 0x01][..],
            &[0x94, 0xcc, 0x01, 0x05, 0xc0, 0xc3],
        ] {
            let Ok(Envelope::Response { msgid, result, .. }) = parse(Bytes::copy_from_slice(raw))
            else {
                panic!("{raw:?} is a response");
            };
            let read = Some((raw.len(), (msgid, result)));
            assert_eq!(one_byte_response(raw), read, "{raw:?}");
        }
        assert_eq!(one_byte_response(&[0x94, 0x01, 0x03, 0xc0]), None);
        assert_eq!(one_byte_response(&[0x94, 0x01, 0xcc]), None);
        assert_eq!(one_byte_response(&[0x94, 0x01, 0x03, 0xc0, 0xc1]), None);
    }

    #[test]
    fn request_with_bin_method_and_msgid_zero() {
        use rmpv::Value as V;
        let frame = enc(V::Array(vec![
            V::from(0),
            V::from(0),
            V::Binary(b"dict.get".to_vec()),
            V::Array(vec![V::from(3), V::from("k")]),
        ]));
        let Envelope::Request {
            msgid,
            method,
            params,
        } = parse(frame).unwrap()
        else {
            panic!("not a request")
        };
        assert_eq!((msgid, method.as_str(), params.len()), (0, "dict.get", 2));
    }

    /// Methods and params read alike in their short and long encodings, and a method that is
    /// not a str (or is cut short) is refused with the request's msgid.
    #[test]
    fn methods_and_params_in_every_encoding() {
        let long = "m".repeat(40);
        for method in ["dict.get", long.as_str()] {
            // A str32 method and an array16 of params, where a fixstr and fixarray would do.
            let mut raw = vec![0x94, 0x00, 0x05, 0xdb];
            raw.extend_from_slice(&(method.len() as u32).to_be_bytes());
            raw.extend_from_slice(method.as_bytes());
            raw.extend_from_slice(&[0xdc, 0x00, 0x02, 0x03, 0xa1, b'k']);
            let Ok(Envelope::Request {
                msgid,
                method: read,
                params,
            }) = parse(Bytes::from(raw))
            else {
                panic!("a request");
            };
            assert_eq!((msgid, read.as_str(), params.len()), (5, method, 2));
            assert_eq!(params.raw(1), [0xa1, b'k']);
        }
        let cases: [(&[u8], &str); 3] = [
            (&[0x94, 0x00, 0x05, 0x07, 0x90], "must be a str"),
            (&[0x94, 0x00, 0x05, 0xa8, b'd', b'i'], "truncated method"),
            (&[0x94, 0x00, 0x05, 0xa2, 0xff, 0xfe, 0x90], "must be a str"),
        ];
        for (raw, says) in cases {
            let e = parse(Bytes::copy_from_slice(raw)).unwrap_err();
            assert_eq!(e.msgid, Some(5), "{raw:?}");
            assert!(e.to_string().contains(says), "{raw:?}: {e}");
        }
    }

    #[test]
    fn bad_params_keep_the_msgid() {
        use rmpv::Value as V;
        let frame = enc(V::Array(vec![
            V::from(0),
            V::from(9),
            V::from("x"),
            V::from(1),
        ]));
        assert_eq!(parse(frame).unwrap_err().msgid, Some(9));
        let frame = enc(V::Array(vec![V::from(0), V::from(9), V::from("x")]));
        assert_eq!(parse(frame).unwrap_err().msgid, None);
        assert_eq!(parse(enc(V::from(5))).unwrap_err().msgid, None);
        let frame = enc(V::Array(vec![
            V::from(0),
            V::from(-1),
            V::from("x"),
            V::Array(vec![]),
        ]));
        assert_eq!(parse(frame).unwrap_err().msgid, None);
    }
}
