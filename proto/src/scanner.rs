//! A resumable MessagePack value-length scanner.
//!
//! Finding where a message ends is the whole of framing in MessagePack-RPC, because the stream
//! has no length prefix. Re-parsing the buffer from its start on every read is quadratic in the
//! message size; this scanner keeps its place (an explicit stack of items remaining per open
//! array or map, and a count of payload bytes still to skip) so every byte is looked at once.
//!
//! Limits are enforced the moment a header announces a violation, not when the bytes arrive,
//! so a peer cannot make the server buffer an oversized message and then go silent.

use thiserror::Error;

/// Limits on one message. Every one is checked while scanning, before any decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, in bytes.
    pub max_message_bytes: usize,
    /// Deepest nesting of arrays and maps (the envelope itself is depth 1).
    pub max_depth: usize,
    /// Most elements in one array, or entries in one map.
    pub max_container_len: usize,
}

impl Default for Limits {
    /// 64 MiB messages, depth 128, 16 Mi elements per container.
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 << 20,
            max_depth: 128,
            max_container_len: 16 << 20,
        }
    }
}

impl Limits {
    /// The deepest nesting a manager may be configured to accept. Values are decoded
    /// recursively where a method must compare or sort them, and nesting much deeper than this
    /// can overflow a thread's stack (found by fuzzing: a debug build overflows a 2 MiB stack
    /// between depth 400 and 600). Frames checked against `UNLIMITED` are the manager's own.
    pub const DEEPEST: usize = 256;

    /// No practical limit: for values already checked, or produced by ourselves.
    pub const UNLIMITED: Limits = Limits {
        max_message_bytes: usize::MAX,
        max_depth: usize::MAX,
        max_container_len: usize::MAX,
    };
}

/// Why a byte stream cannot be framed. Every variant is fatal for the stream: after it there is
/// no way to find where the next message starts.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScanError {
    /// A byte that no MessagePack value starts with (only `0xc1` is such a byte).
    #[error("invalid MessagePack: byte 0x{byte:02x} at offset {offset} starts no value")]
    InvalidMarker { byte: u8, offset: usize },
    /// The message is larger than [`Limits::max_message_bytes`].
    #[error("message exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// Arrays and maps nest deeper than [`Limits::max_depth`].
    #[error("message nests arrays and maps deeper than the limit of {limit}")]
    TooDeep { limit: usize },
    /// An array or map announces more elements than [`Limits::max_container_len`].
    #[error("an array or map of {len} elements exceeds the limit of {limit}")]
    TooLong { len: u64, limit: usize },
}

/// What one header says about the value it starts.
pub(crate) enum Header {
    /// The value is complete once the header's bytes are.
    Scalar,
    /// `n` bytes of payload follow the header (str, bin, ext data).
    Payload(u64),
    /// An array of `n` elements or a map of `n / 2` entries follows.
    Container { items: u64, len: u64 },
}

/// Reads the header at the start of `buf`. `Ok(None)` means more bytes are needed.
///
/// Inlined into the scanner's loop, the hot path of every request, which it was before
/// [`crate::objref::for_each_ref`] came to share it.
#[inline(always)]
pub(crate) fn header(buf: &[u8], offset: usize) -> Result<Option<(usize, Header)>, ScanError> {
    let Some(&marker) = buf.first() else {
        return Ok(None);
    };
    // Big-endian unsigned integer of `n` bytes right after the marker (plus `skip` bytes).
    let be = |n: usize| -> Option<u64> {
        let bytes = buf.get(1..1 + n)?;
        Some(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    };
    let fixed = |size: usize| (buf.len() >= size).then_some((size, Header::Scalar));
    let payload = |n: usize, extra: usize| be(n).map(|len| (1 + n + extra, Header::Payload(len)));
    let container = |n: usize, per: u64| {
        be(n).map(|len| {
            let items = len * per;
            (1 + n, Header::Container { items, len })
        })
    };
    let parsed = match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Some((1, Header::Scalar)),
        0x80..=0x8f => {
            let len = u64::from(marker & 0x0f);
            Some((
                1,
                Header::Container {
                    items: 2 * len,
                    len,
                },
            ))
        }
        0x90..=0x9f => {
            let len = u64::from(marker & 0x0f);
            Some((1, Header::Container { items: len, len }))
        }
        0xa0..=0xbf => Some((1, Header::Payload(u64::from(marker & 0x1f)))),
        0xc1 => {
            return Err(ScanError::InvalidMarker {
                byte: marker,
                offset,
            })
        }
        0xc4 => payload(1, 0),
        0xc5 => payload(2, 0),
        0xc6 => payload(4, 0),
        0xc7 => payload(1, 1),
        0xc8 => payload(2, 1),
        0xc9 => payload(4, 1),
        0xca => fixed(5),
        0xcb => fixed(9),
        0xcc | 0xd0 => fixed(2),
        0xcd | 0xd1 => fixed(3),
        0xce | 0xd2 => fixed(5),
        0xcf | 0xd3 => fixed(9),
        0xd4..=0xd8 => (buf.len() >= 2).then_some((2, Header::Payload(1 << (marker - 0xd4)))),
        0xd9 => payload(1, 0),
        0xda => payload(2, 0),
        0xdb => payload(4, 0),
        0xdc => container(2, 1),
        0xdd => container(4, 1),
        0xde => container(2, 2),
        0xdf => container(4, 2),
    };
    Ok(parsed.filter(|(size, _)| buf.len() >= *size))
}

/// The size of the header that `marker` starts (the marker, any length bytes, an ext's type
/// byte; all of a number), known before the rest of it arrives.
fn header_len(marker: u8) -> usize {
    match marker {
        0xc4 | 0xd9 | 0xcc | 0xd0 | 0xd4..=0xd8 => 2,
        0xc5 | 0xda | 0xdc | 0xde | 0xcd | 0xd1 | 0xc7 => 3,
        0xc8 => 4,
        0xc6 | 0xdb | 0xdd | 0xdf | 0xca | 0xce | 0xd2 => 5,
        0xc9 => 6,
        0xcb | 0xcf | 0xd3 => 9,
        _ => 1,
    }
}

/// Finds the end of one MessagePack value in a growing buffer, resuming where it stopped.
///
/// Feed it the same buffer (the value's first byte at index 0) each time more bytes arrive;
/// [`Scanner::scan`] returns `Some(len)` once the value is complete and resets itself for the
/// next value.
#[derive(Debug, Clone)]
pub struct Scanner {
    limits: Limits,
    /// Bytes of the current value already scanned.
    pos: usize,
    /// Payload bytes (of a str, bin or ext) still to skip.
    skip: u64,
    /// Items still expected by each open array or map, innermost last.
    open: Vec<u64>,
    /// The limits changed since the last scan: what was scanned already is checked against
    /// them once, at the next scan (not at every scan: this is the hot path of every request).
    limits_changed: bool,
    /// An ext header was met in the current value.
    saw_ext: bool,
    /// An ext header was met in the last complete value.
    last_had_ext: bool,
}

impl Scanner {
    /// A scanner that enforces `limits`.
    pub fn new(limits: Limits) -> Self {
        Scanner {
            limits,
            pos: 0,
            skip: 0,
            open: Vec::new(),
            limits_changed: false,
            saw_ext: false,
            last_had_ext: false,
        }
    }

    /// True when the last complete value holds an ext value of some type, found while framing
    /// it at no extra cost: a value without one holds no object reference, and the manager
    /// need not look for one.
    pub fn last_had_ext(&self) -> bool {
        self.last_had_ext
    }

    /// The limits this scanner enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Changes the limits; they apply to the rest of the current value too.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        self.limits_changed = true;
    }

    /// Bytes of the current, incomplete value scanned so far.
    pub fn scanned(&self) -> usize {
        self.pos
    }

    /// Takes the current value, `len` bytes holding no ext value, as framed by the caller
    /// (who knows its shape) instead of scanning it: true when `len` is within the message
    /// limit and covers what was scanned of it so far, and the scanner is then ready for the
    /// next value; false leaves the value to [`Scanner::scan`], which says what is wrong.
    pub fn take_framed(&mut self, len: usize) -> bool {
        if len < self.pos || self.limits_changed || len > self.limits.max_message_bytes {
            return false;
        }
        self.reset();
        self.last_had_ext = false;
        true
    }

    /// Scans `buf` (which starts with the current value) from where the last call stopped.
    ///
    /// Returns `Ok(Some(len))` when the value's `len` bytes are all in `buf`, `Ok(None)` when
    /// more are needed, and an error when the stream cannot be framed. After `Some` or an error
    /// the scanner is ready for a new value.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ScanError> {
        // A new value that is all in `buf` (every request of a pipelined batch but the last
        // one read) is walked in one tight pass. Anything else (a value cut short, a limit
        // broken, nesting deeper than the walk follows) is left to the resumable scan below,
        // which starts over and gives the same answer it always gave.
        if self.pos == 0 {
            if let Some((len, had_ext)) = walk(buf, &self.limits) {
                self.limits_changed = false;
                self.saw_ext = had_ext;
                self.reset();
                return Ok(Some(len));
            }
        }
        let result = if std::mem::take(&mut self.limits_changed) {
            self.recheck().and_then(|()| self.scan_inner(buf))
        } else {
            self.scan_inner(buf)
        };
        if !matches!(result, Ok(None)) {
            self.reset();
        }
        result
    }

    /// Limits changed since the last call apply to what was scanned already: the payload
    /// being skipped must still fit, and the arrays and maps open must not nest too deep.
    fn recheck(&self) -> Result<(), ScanError> {
        self.check_size(self.skip)?;
        if self.open.len() > self.limits.max_depth {
            return Err(ScanError::TooDeep {
                limit: self.limits.max_depth,
            });
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.last_had_ext = std::mem::take(&mut self.saw_ext);
        self.pos = 0;
        self.skip = 0;
        self.open.clear();
    }

    fn scan_inner(&mut self, buf: &[u8]) -> Result<Option<usize>, ScanError> {
        loop {
            if self.skip > 0 {
                let available = (buf.len() - self.pos) as u64;
                let step = self.skip.min(available);
                self.pos += step as usize;
                self.skip -= step;
                if self.skip > 0 {
                    return Ok(None);
                }
                if self.finish_item() {
                    return Ok(Some(self.pos));
                }
                continue;
            }
            let Some((size, kind)) = header(&buf[self.pos..], self.pos)? else {
                // A header that cannot fit under the limit fails now: otherwise its first
                // bytes would stay buffered past the limit, waiting for the rest.
                if let Some(&marker) = buf.get(self.pos) {
                    self.check_size(header_len(marker) as u64)?;
                }
                return Ok(None);
            };
            self.pos += size;
            self.check_size(0)?;
            match kind {
                Header::Scalar => {}
                Header::Payload(len) => {
                    self.saw_ext |= matches!(buf[self.pos - size], 0xc7..=0xc9 | 0xd4..=0xd8);
                    self.check_size(len)?;
                    self.skip = len;
                    if len > 0 {
                        continue;
                    }
                }
                Header::Container { items, len } => {
                    if len > self.limits.max_container_len as u64 {
                        return Err(ScanError::TooLong {
                            len,
                            limit: self.limits.max_container_len,
                        });
                    }
                    if self.open.len() + 1 > self.limits.max_depth {
                        return Err(ScanError::TooDeep {
                            limit: self.limits.max_depth,
                        });
                    }
                    if items > 0 {
                        // Each item takes at least one byte: fail early on impossible sizes.
                        self.check_size(items)?;
                        self.open.push(items);
                        continue;
                    }
                }
            }
            if self.finish_item() {
                return Ok(Some(self.pos));
            }
        }
    }

    /// Fails when `pos + more` bytes would exceed the message limit.
    fn check_size(&self, more: u64) -> Result<(), ScanError> {
        let limit = self.limits.max_message_bytes;
        if (self.pos as u64).saturating_add(more) > limit as u64 {
            return Err(ScanError::TooLarge { limit });
        }
        Ok(())
    }

    /// Records that one value ended; returns true when that completes the outermost value.
    fn finish_item(&mut self) -> bool {
        while let Some(remaining) = self.open.last_mut() {
            *remaining -= 1;
            if *remaining > 0 {
                return false;
            }
            self.open.pop();
        }
        true
    }
}

/// How deep [`walk`] follows nesting; a deeper value goes to the resumable scan.
const WALK_DEPTH: usize = 16;

/// The length of the complete value at the start of `buf` within `limits`, and whether it holds
/// an ext value. `None` when the value is not all there, breaks a limit, holds a byte no value
/// starts with, or nests deeper than [`WALK_DEPTH`]: the resumable scan tells which.
///
/// The scanner's fast path: one pass with the open containers' counts on the stack, and no
/// state to keep between calls.
fn walk(buf: &[u8], limits: &Limits) -> Option<(usize, bool)> {
    let mut open = [0u64; WALK_DEPTH];
    let mut depth = 0usize;
    let mut pos = 0usize;
    let mut had_ext = false;
    loop {
        let marker = *buf.get(pos)?;
        // The markers of a request's envelope and of most params, without `header`.
        let kind = match marker {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => {
                pos += 1;
                Header::Scalar
            }
            0xa0..=0xbf => {
                pos += 1;
                Header::Payload(u64::from(marker & 0x1f))
            }
            0x90..=0x9f => {
                pos += 1;
                let len = u64::from(marker & 0x0f);
                Header::Container { items: len, len }
            }
            // Ints of 1 to 8 bytes (object ids are 64-bit).
            0xcc..=0xd3 => {
                pos += 1 + (1 << (marker & 0x03));
                if pos > buf.len() {
                    return None;
                }
                Header::Scalar
            }
            _ => {
                let (size, kind) = header(&buf[pos..], pos).ok()??;
                pos += size;
                kind
            }
        };
        match kind {
            Header::Scalar => {}
            Header::Payload(len) => {
                had_ext |= matches!(marker, 0xc7..=0xc9 | 0xd4..=0xd8);
                pos = pos.checked_add(usize::try_from(len).ok()?)?;
                if pos > buf.len() {
                    return None;
                }
            }
            Header::Container { items, len } => {
                if len > limits.max_container_len as u64
                    || depth >= limits.max_depth
                    || depth == WALK_DEPTH
                {
                    return None;
                }
                if items > 0 {
                    open[depth] = items;
                    depth += 1;
                    continue;
                }
            }
        }
        // One value ended: it may end the containers it closes, and the whole value.
        loop {
            let Some(top) = depth.checked_sub(1) else {
                return (pos <= limits.max_message_bytes).then_some((pos, had_ext));
            };
            open[top] -= 1;
            if open[top] > 0 {
                break;
            }
            depth = top;
        }
    }
}

/// The length of the complete value at the start of `buf`, or `None` when `buf` holds less than
/// one whole value (or bytes that are not MessagePack).
///
/// One pass, no allocation: a count of the values still to come is all it keeps (a container
/// adds its items to it), which is enough to find where the outermost one ends.
pub fn value_len(buf: &[u8]) -> Option<usize> {
    let mut pos = 0usize;
    let mut pending = 1u64;
    while pending > 0 {
        let marker = *buf.get(pos)?;
        pending -= 1;
        // Scalars and fixstrs (most params) without `header`.
        let kind = match marker {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => {
                pos += 1;
                continue;
            }
            0xa0..=0xbf => {
                pos += 1;
                Header::Payload(u64::from(marker & 0x1f))
            }
            0xcc..=0xd3 => {
                pos += 1 + (1 << (marker & 0x03));
                if pos > buf.len() {
                    return None;
                }
                continue;
            }
            _ => {
                let (size, kind) = header(&buf[pos..], pos).ok()??;
                pos += size;
                kind
            }
        };
        match kind {
            Header::Scalar => {}
            Header::Payload(len) => {
                pos = pos.checked_add(usize::try_from(len).ok()?)?;
                if pos > buf.len() {
                    return None;
                }
            }
            Header::Container { items, .. } => pending = pending.checked_add(items)?,
        }
    }
    Some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(v: &rmpv::Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).unwrap();
        out
    }

    #[test]
    fn the_scan_tells_whether_a_value_held_an_ext() {
        use rmpv::Value as V;
        let with = |ext: V| encode(&V::Array(vec![V::from("text \u{d4}"), V::Array(vec![ext])]));
        let mut s = Scanner::new(Limits::default());
        for (value, has_ext) in [
            (with(V::from(1)), false),
            (with(V::Ext(1, vec![1, 2, 3, 4, 5, 6, 7])), true),
            (with(V::Ext(-1, vec![0; 4])), true),
            (with(V::Ext(9, vec![0; 300])), true),
            (with(V::Binary(vec![0xc7; 9])), false),
        ] {
            // Byte by byte, as a slow network delivers it.
            let mut done = None;
            for end in 1..=value.len() {
                done = s.scan(&value[..end]).unwrap();
            }
            assert_eq!(done, Some(value.len()));
            assert_eq!(s.last_had_ext(), has_ext, "{value:02x?}");
        }
    }

    fn sample() -> rmpv::Value {
        use rmpv::Value as V;
        V::Array(vec![
            V::from(0),
            V::from(u32::MAX),
            V::from("dict.setitem"),
            V::Array(vec![
                V::from(7),
                V::Binary(vec![1; 300]),
                V::Map(vec![(V::from("k"), V::F64(1.5)), (V::Nil, V::F32(2.5))]),
                V::Ext(1, vec![0x92, 0xa4, b'l', b'i', b's', b't', 7]),
                V::Ext(5, vec![9; 3]),
                V::from(-70000i64),
                V::String("é".repeat(40).into()),
                V::Array((0..20).map(V::from).collect()),
            ]),
        ])
    }

    #[test]
    fn every_split_point_gives_the_same_length() {
        let bytes = encode(&sample());
        for cut in 0..=bytes.len() {
            let mut s = Scanner::new(Limits::default());
            let first = s.scan(&bytes[..cut]).unwrap();
            if cut < bytes.len() {
                assert_eq!(first, None, "cut at {cut}");
                assert_eq!(s.scan(&bytes).unwrap(), Some(bytes.len()), "cut at {cut}");
            } else {
                assert_eq!(first, Some(bytes.len()));
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        let bytes = encode(&sample());
        let mut s = Scanner::new(Limits::default());
        for end in 1..bytes.len() {
            assert_eq!(s.scan(&bytes[..end]).unwrap(), None);
        }
        assert_eq!(s.scan(&bytes).unwrap(), Some(bytes.len()));
    }

    #[test]
    fn reserved_marker_is_rejected() {
        let mut s = Scanner::new(Limits::default());
        assert!(matches!(
            s.scan(&[0x92, 0x01, 0xc1]),
            Err(ScanError::InvalidMarker {
                byte: 0xc1,
                offset: 2
            })
        ));
    }

    #[test]
    fn limits_fail_on_the_header() {
        let limits = Limits {
            max_message_bytes: 100,
            max_depth: 3,
            max_container_len: 10,
        };
        // A bin32 announcing 1 GiB: rejected with only 5 bytes seen.
        let mut s = Scanner::new(limits);
        assert!(matches!(
            s.scan(&[0xc6, 0x40, 0, 0, 0]),
            Err(ScanError::TooLarge { .. })
        ));
        let mut s = Scanner::new(limits);
        assert!(matches!(
            s.scan(&[0xdc, 0x00, 0x0b]),
            Err(ScanError::TooLong { len: 11, .. })
        ));
        let mut s = Scanner::new(limits);
        assert!(matches!(
            s.scan(&[0x91, 0x91, 0x91, 0x91, 0x01]),
            Err(ScanError::TooDeep { limit: 3 })
        ));
        let mut s = Scanner::new(limits);
        assert_eq!(s.scan(&[0x91, 0x91, 0x91, 0x01]).unwrap(), Some(4));
    }

    #[test]
    fn a_header_that_cannot_fit_fails_before_it_is_complete() {
        let limits = Limits {
            max_message_bytes: 4,
            ..Limits::default()
        };
        // A float64 needs 9 bytes: its marker at offset 1 of a 4-byte message is too much,
        // even before its other bytes arrive.
        let mut s = Scanner::new(limits);
        assert!(matches!(
            s.scan(&[0x91, 0xcb]),
            Err(ScanError::TooLarge { limit: 4 })
        ));
        let mut s = Scanner::new(limits);
        assert_eq!(s.scan(&[0x91, 0xcd, 0x01]).unwrap(), None);
        assert_eq!(s.scan(&[0x91, 0xcd, 0x01, 0x02]).unwrap(), Some(4));
        for marker in 0u8..=0xff {
            let (size, _) = match header(&[marker; 9], 0) {
                Ok(Some(h)) => h,
                _ => continue,
            };
            assert_eq!(header_len(marker), size, "marker {marker:02x}");
        }
    }

    #[test]
    fn limits_lowered_mid_message_apply_to_it() {
        let loose = Limits::default();
        let tight = Limits {
            max_message_bytes: 10,
            max_depth: 1,
            ..Limits::default()
        };
        // A bin of 50 bytes, 20 of them in: it can no longer fit.
        let mut bin = vec![0xc4, 50];
        bin.extend([0; 50]);
        let mut s = Scanner::new(loose);
        assert_eq!(s.scan(&bin[..22]).unwrap(), None);
        s.set_limits(tight);
        assert!(matches!(
            s.scan(&bin),
            Err(ScanError::TooLarge { limit: 10 })
        ));
        // Two arrays open: deeper than the new limit.
        let mut s = Scanner::new(loose);
        assert_eq!(s.scan(&[0x91, 0x91]).unwrap(), None);
        s.set_limits(tight);
        assert!(matches!(
            s.scan(&[0x91, 0x91, 0x01]),
            Err(ScanError::TooDeep { limit: 1 })
        ));
        // Raised limits let a message through that the old ones would have refused.
        let mut s = Scanner::new(tight);
        assert_eq!(s.scan(&[0x91]).unwrap(), None);
        s.set_limits(loose);
        assert_eq!(s.scan(&[0x91, 0x91, 0x01]).unwrap(), Some(3));
    }

    /// The fast paths (`value_len`, and the scanner's one-pass walk of a value that is all
    /// there) agree with the resumable scan fed byte by byte, for every prefix of a value and
    /// under limits that the value breaks or just meets.
    #[test]
    fn the_fast_paths_agree_with_the_resumable_scan() {
        use rmpv::Value as V;
        let mut deep = V::from(1);
        for _ in 0..20 {
            deep = V::Array(vec![deep]);
        }
        let values = [
            sample(),
            deep,
            V::Map(vec![(V::from("k"), V::Ext(3, vec![1, 2]))]),
            V::Array(vec![V::Array(vec![]), V::Map(vec![]), V::from("")]),
        ];
        let limits = [
            Limits::default(),
            Limits::UNLIMITED,
            Limits {
                max_message_bytes: 30,
                max_depth: 2,
                max_container_len: 3,
            },
        ];
        for value in &values {
            let bytes = encode(value);
            for end in 0..=bytes.len() {
                let cut = &bytes[..end];
                let whole = (end == bytes.len()).then_some(end);
                assert_eq!(value_len(cut), whole, "{value}, cut at {end}");
                for limits in limits {
                    let slow = {
                        let mut s = Scanner::new(limits);
                        let mut r = Ok(None);
                        for i in 1..=end {
                            r = s.scan(&cut[..i]);
                            if !matches!(r, Ok(None)) {
                                break;
                            }
                        }
                        r.map(|r| r.map(|len| (len, s.last_had_ext())))
                    };
                    let mut s = Scanner::new(limits);
                    let fast = s.scan(cut).map(|r| r.map(|len| (len, s.last_had_ext())));
                    assert_eq!(fast, slow, "{value}, cut at {end}, {limits:?}");
                }
            }
        }
    }

    #[test]
    fn empty_containers_and_payloads() {
        assert_eq!(value_len(&[0x90]), Some(1));
        assert_eq!(value_len(&[0x80]), Some(1));
        assert_eq!(value_len(&[0xa0]), Some(1));
        assert_eq!(value_len(&[0xc4, 0x00]), Some(2));
        assert_eq!(value_len(&[0x92, 0x90, 0x80, 0xff]), Some(3));
        assert_eq!(value_len(&[0xd4, 0x01, 0x02]), Some(3));
        assert_eq!(value_len(&[0xd4, 0x01]), None);
    }
}
