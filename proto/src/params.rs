//! Typed access to a call's params, kept as raw MessagePack slices of the received message.
//!
//! The manager stores values as the bytes the client sent, so most params are never decoded:
//! only the ones an operation must inspect (an object id, an index, a key to hash).

use bytes::Bytes;

use crate::error::CallError;
use crate::scanner::value_len;

/// The elements of a params array, each a zero-copy slice of the message.
///
/// It keeps the whole message it was parsed from, not a slice of it: making a slice counts a
/// reference to the read buffer (an atomic add, and a subtract when it goes), which at a
/// million requests a second was a tenth of the manager's time.
#[derive(Clone)]
pub struct Params {
    frame: Bytes,
    /// Where the params array is in `frame`: `(start, end)` byte offsets.
    array: (u32, u32),
    /// Where each param is in `frame`.
    spans: Spans,
    /// Whether the message holds an ext value, when its framing said (`None`: not known).
    framed_ext: Option<bool>,
}

/// The MessagePack type of the value at the start of `raw`, named for error messages.
pub fn type_name(raw: &[u8]) -> &'static str {
    match raw.first() {
        Some(0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xd3) => "int",
        Some(0xc0) => "nil",
        Some(0xc2 | 0xc3) => "bool",
        Some(0xca | 0xcb) => "float",
        Some(0xa0..=0xbf | 0xd9..=0xdb) => "str",
        Some(0xc4..=0xc6) => "bin",
        Some(0x90..=0x9f | 0xdc | 0xdd) => "array",
        Some(0x80..=0x8f | 0xde | 0xdf) => "map",
        Some(0xc7..=0xc9 | 0xd4..=0xd8) => "ext",
        _ => "invalid value",
    }
}

/// The text of a str, or of a bin holding UTF-8 (older clients send text as bin and bin as
/// str: accept both where text is expected).
pub fn text(raw: &[u8]) -> Option<&str> {
    bytes_of(raw).and_then(|b| std::str::from_utf8(b).ok())
}

/// The payload of a str or a bin.
pub fn bytes_of(raw: &[u8]) -> Option<&[u8]> {
    let mut rest = raw;
    let len = match raw.first()? {
        // A fixstr (method names, most keys) without the general reader.
        &marker @ 0xa0..=0xbf => return raw.get(1..1 + usize::from(marker & 0x1f)),
        0xd9..=0xdb => rmp::decode::read_str_len(&mut rest).ok()?,
        0xc4..=0xc6 => rmp::decode::read_bin_len(&mut rest).ok()?,
        _ => return None,
    } as usize;
    rest.get(..len)
}

/// The length of the array whose header starts `raw`, and the header's length: `None` when
/// `raw` does not start with an array header.
pub(crate) fn array_header(raw: &[u8]) -> Option<(usize, usize)> {
    match raw.first()? {
        // A fixarray (every envelope, most params) without the general reader.
        &marker @ 0x90..=0x9f => Some((usize::from(marker & 0x0f), 1)),
        _ => {
            let mut rest = raw;
            let len = rmp::decode::read_array_len(&mut rest).ok()?;
            Some((len as usize, raw.len() - rest.len()))
        }
    }
}

/// An integer of any encoding, as i64 (None for other types or out of range).
pub fn int_i64(raw: &[u8]) -> Option<i64> {
    // Fixints (object ids, small counts and indexes) without the general reader.
    match raw.first() {
        Some(&b) if b < 0x80 => return Some(i64::from(b)),
        Some(&b) if b >= 0xe0 => return Some(i64::from(b as i8)),
        _ => {}
    }
    let mut rest = raw;
    rmp::decode::read_int(&mut rest).ok()
}

/// An integer of any encoding, as u64 (None for other types or negative values).
pub fn int_u64(raw: &[u8]) -> Option<u64> {
    uint_prefix(raw).map(|(n, _)| n)
}

/// The non-negative integer at the start of `raw`, of any encoding, and its length in bytes
/// (`raw` may hold more after it): `None` for another type or a negative value.
pub(crate) fn uint_prefix(raw: &[u8]) -> Option<(u64, usize)> {
    // A fixint, or the unsigned encodings (object ids are 64-bit; a msgid, the message type),
    // without the general reader.
    let be = |n: usize| {
        let bytes = raw.get(1..1 + n)?;
        Some((
            bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
            1 + n,
        ))
    };
    match raw.first() {
        Some(&b) if b < 0x80 => Some((u64::from(b), 1)),
        Some(0xcc) => be(1),
        Some(0xcd) => be(2),
        Some(0xce) => be(4),
        Some(0xcf) => be(8),
        _ => {
            let mut rest = raw;
            let n = rmp::decode::read_int(&mut rest).ok()?;
            Some((n, raw.len() - rest.len()))
        }
    }
}

/// The `ArgumentCountError` of a method called with `got` params instead of `min..=max`.
pub fn argument_count(method: &str, min: usize, max: usize, got: usize) -> CallError {
    let wanted = if min == max {
        format!("{min}")
    } else {
        format!("{min} to {max}")
    };
    CallError::new(
        crate::ErrorName::ArgumentCountError,
        format!("{method} takes {wanted} params, got {got}"),
    )
}

/// The elements of an encoded array, as slices of it. `None` if `raw` is not an array.
pub fn array_items(raw: &[u8]) -> Option<Vec<&[u8]>> {
    let mut rest = raw;
    let n = rmp::decode::read_array_len(&mut rest).ok()? as usize;
    split_values(rest, n)
}

/// The entries of an encoded map, as `(key, value)` slices of it. `None` if `raw` is not a map.
pub fn map_entries(raw: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let mut rest = raw;
    let n = rmp::decode::read_map_len(&mut rest).ok()? as usize;
    let flat = split_values(rest, n.checked_mul(2)?)?;
    Some(flat.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect())
}

/// Splits the first `n` values off `rest`.
fn split_values(mut rest: &[u8], n: usize) -> Option<Vec<&[u8]>> {
    // Each value takes at least a byte: don't trust `n` for the allocation.
    let mut out = Vec::with_capacity(n.min(rest.len()));
    for _ in 0..n {
        let len = value_len(rest)?;
        out.push(&rest[..len]);
        rest = &rest[len..];
    }
    Some(out)
}

/// True for the encoding of nil.
pub fn is_nil(raw: &[u8]) -> bool {
    raw == [0xc0]
}

/// How many params are kept without an allocation: every method's but a few.
const INLINE_SPANS: usize = 6;

/// Where each param is in the array: `(start, end)` byte offsets. A request's few params are
/// kept inline, so that parsing one allocates nothing.
#[derive(Clone)]
enum Spans {
    Inline(u8, [(u32, u32); INLINE_SPANS]),
    Heap(Vec<(u32, u32)>),
}

impl Spans {
    fn with_capacity(n: usize) -> Spans {
        if n <= INLINE_SPANS {
            Spans::Inline(0, [(0, 0); INLINE_SPANS])
        } else {
            Spans::Heap(Vec::with_capacity(n))
        }
    }

    fn push(&mut self, span: (u32, u32)) {
        match self {
            Spans::Inline(len, items) if usize::from(*len) < INLINE_SPANS => {
                items[usize::from(*len)] = span;
                *len += 1;
            }
            Spans::Inline(len, items) => {
                let mut heap = items[..usize::from(*len)].to_vec();
                heap.push(span);
                *self = Spans::Heap(heap);
            }
            Spans::Heap(v) => v.push(span),
        }
    }

    fn as_slice(&self) -> &[(u32, u32)] {
        match self {
            Spans::Inline(len, items) => &items[..usize::from(*len)],
            Spans::Heap(v) => v,
        }
    }
}

impl PartialEq for Spans {
    fn eq(&self, other: &Spans) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl std::fmt::Debug for Spans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl PartialEq for Params {
    /// The same params, encoded the same way, wherever they were read from.
    fn eq(&self, other: &Params) -> bool {
        self.encoded() == other.encoded() && self.framed_ext == other.framed_ext
    }
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Params")
            .field("encoded", &self.encoded())
            .field("framed_ext", &self.framed_ext)
            .finish()
    }
}

/// Where a params array is in a message, as [`Params::scan`] finds it.
pub(crate) struct Scanned {
    spans: Spans,
    /// The array's length in bytes.
    pub(crate) len: usize,
}

impl Params {
    /// Splits an encoded array into its elements. `None` if it is not a complete array.
    pub fn from_array(array: Bytes) -> Option<Params> {
        let scanned = Params::scan(&array, 0)?;
        Some(Params::within(array, 0, scanned))
    }

    /// The array starting at `frame[start..]`: each element is walked once (finding where the
    /// array ends is finding where each element does). `None` also for a message of 4 GiB or
    /// more (possible only with `--max-message-bytes` raised that far), whose offsets do not
    /// fit the 32 bits they are kept in.
    pub(crate) fn scan(frame: &[u8], start: usize) -> Option<Scanned> {
        u32::try_from(frame.len()).ok()?;
        let array = frame.get(start..)?;
        let (n, mut pos) = array_header(array)?;
        // Each element takes at least a byte: don't trust `n` for the allocation.
        let mut spans = Spans::with_capacity(n.min(array.len() - pos));
        for _ in 0..n {
            let len = value_len(&array[pos..])?;
            spans.push(((start + pos) as u32, (start + pos + len) as u32));
            pos += len;
        }
        Some(Scanned { spans, len: pos })
    }

    /// The params `scanned` at `frame[start..]`, keeping `frame` whole.
    pub(crate) fn within(frame: Bytes, start: usize, scanned: Scanned) -> Params {
        Params {
            frame,
            array: (start as u32, (start + scanned.len) as u32),
            spans: scanned.spans,
            framed_ext: None,
        }
    }

    /// Records whether the message these params came from holds an ext value, which its
    /// framing found out for free ([`crate::FrameDecoder::last_frame_had_ext`]).
    pub fn set_framed_ext(&mut self, had_ext: bool) {
        self.framed_ext = Some(had_ext);
    }

    /// False when the params certainly hold no ext value (hence no object reference): what the
    /// framing said, else a look at the bytes.
    pub fn may_hold_ext(&self) -> bool {
        self.framed_ext
            .unwrap_or_else(|| crate::objref::may_hold_ext(self.encoded()))
    }

    /// The whole params array, encoded.
    pub fn encoded(&self) -> &[u8] {
        &self.frame[self.array.0 as usize..self.array.1 as usize]
    }

    /// Number of params.
    pub fn len(&self) -> usize {
        self.spans.as_slice().len()
    }

    /// True when there are no params.
    pub fn is_empty(&self) -> bool {
        self.spans.as_slice().is_empty()
    }

    /// Fails unless the number of params is within `min..=max`.
    pub fn expect(&self, method: &str, min: usize, max: usize) -> Result<(), CallError> {
        if (min..=max).contains(&self.len()) {
            return Ok(());
        }
        Err(argument_count(method, min, max, self.len()))
    }

    /// The raw bytes of param `i`. Panics if `i >= len()`: check with [`Params::expect`] first.
    pub fn raw(&self, i: usize) -> &[u8] {
        let (start, end) = self.spans.as_slice()[i];
        &self.frame[start as usize..end as usize]
    }

    /// Param `i` as a zero-copy [`Bytes`], for storing. Panics like [`Params::raw`].
    pub fn bytes(&self, i: usize) -> Bytes {
        let (start, end) = self.spans.as_slice()[i];
        self.frame.slice(start as usize..end as usize)
    }

    /// Param `i` if present and not nil.
    pub fn opt(&self, i: usize) -> Option<&[u8]> {
        (i < self.len())
            .then(|| self.raw(i))
            .filter(|raw| !is_nil(raw))
    }

    fn wrong(&self, i: usize, wanted: &str) -> CallError {
        // An int of the wrong sign or size is shown as itself: "got int" would not say why.
        let got = match int_i64(self.raw(i)) {
            Some(n) => n.to_string(),
            None => format!("a {}", type_name(self.raw(i))),
        };
        CallError::type_error(format!("param {i} must be {wanted}, got {got}"))
    }

    /// Param `i` as an unsigned integer.
    pub fn u64(&self, i: usize) -> Result<u64, CallError> {
        int_u64(self.raw(i)).ok_or_else(|| self.wrong(i, "a non-negative int"))
    }

    /// Param `i` as a signed integer.
    pub fn i64(&self, i: usize) -> Result<i64, CallError> {
        int_i64(self.raw(i)).ok_or_else(|| self.wrong(i, "an int"))
    }

    /// Param `i` as a signed integer, `None` when absent or nil.
    pub fn opt_i64(&self, i: usize) -> Result<Option<i64>, CallError> {
        match self.opt(i) {
            None => Ok(None),
            Some(raw) => int_i64(raw)
                .map(Some)
                .ok_or_else(|| self.wrong(i, "an int or nil")),
        }
    }

    /// Param `i` as text (a str, or a bin holding UTF-8).
    pub fn str(&self, i: usize) -> Result<&str, CallError> {
        text(self.raw(i)).ok_or_else(|| self.wrong(i, "a str"))
    }

    /// Param `i` as a bool; `default` when absent or nil.
    pub fn bool_or(&self, i: usize, default: bool) -> Result<bool, CallError> {
        match self.opt(i) {
            None => Ok(default),
            Some([0xc2]) => Ok(false),
            Some([0xc3]) => Ok(true),
            Some(_) => Err(self.wrong(i, "a bool")),
        }
    }

    /// Param `i` as a bool, `None` when absent or nil.
    pub fn opt_bool(&self, i: usize) -> Result<Option<bool>, CallError> {
        match self.opt(i) {
            None => Ok(None),
            Some([0xc2]) => Ok(Some(false)),
            Some([0xc3]) => Ok(Some(true)),
            Some(_) => Err(self.wrong(i, "a bool or nil")),
        }
    }

    /// Param `i` split into elements, if it is an array.
    pub fn array(&self, i: usize) -> Result<Params, CallError> {
        Params::from_array(self.bytes(i)).ok_or_else(|| self.wrong(i, "an array"))
    }

    /// Param `i` decoded into a dynamic value.
    pub fn value(&self, i: usize) -> Result<rmpv::Value, CallError> {
        crate::value::decode(self.raw(i))
    }

    /// Iterates over the raw params.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Bytes> + '_ {
        (0..self.len()).map(|i| self.bytes(i))
    }
}
