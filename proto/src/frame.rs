//! [`FrameDecoder`]: turns a byte stream into whole MessagePack-RPC messages.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

use crate::scanner::{Limits, ScanError, Scanner};

/// A stream that can no longer be framed, with the msgid of the offending message when its
/// first bytes were a readable request header (so the error can be answered to that request).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{source}")]
pub struct FrameError {
    /// What went wrong.
    pub source: ScanError,
    /// The msgid of the request the bad bytes belong to, when it could be read.
    pub msgid: Option<u32>,
}

impl FrameError {
    /// True when a limit was exceeded, false for bytes that are not MessagePack.
    pub fn is_limit(&self) -> bool {
        !matches!(self.source, ScanError::InvalidMarker { .. })
    }
}

/// A message as [`FrameDecoder::next_frame_in_place`] gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<R> {
    /// What the reader made of it in place.
    InPlace(R),
    /// The message, split off the buffer.
    Whole(Bytes),
}

/// Buffers incoming bytes and cuts them into messages.
///
/// Read into [`FrameDecoder::read_buf`], then call [`FrameDecoder::next_frame`] until it returns
/// `Ok(None)`. Each byte is scanned once however the stream is split.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    scanner: Scanner,
}

impl FrameDecoder {
    /// A decoder enforcing `limits` on every message.
    pub fn new(limits: Limits) -> Self {
        FrameDecoder {
            buf: BytesMut::with_capacity(8 * 1024),
            scanner: Scanner::new(limits),
        }
    }

    /// The buffer to read more bytes into. Reserves room for at least `min` more.
    pub fn read_buf(&mut self, min: usize) -> &mut BytesMut {
        self.buf.reserve(min);
        &mut self.buf
    }

    /// Appends bytes that arrived.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Changes the limits, for example once a connection has authenticated.
    pub fn set_limits(&mut self, limits: Limits) {
        self.scanner.set_limits(limits);
    }

    /// Bytes received but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True when the last frame returned holds an ext value (see [`Scanner::last_had_ext`]).
    pub fn last_frame_had_ext(&self) -> bool {
        self.scanner.last_had_ext()
    }

    /// The next complete message, `Ok(None)` when more bytes are needed. `read` is offered
    /// the bytes buffered first: when they start with a message it knows the shape of, it
    /// returns that message's length and what it read of it, and the message is consumed in
    /// place, neither scanned nor split off. Any other message is scanned and split off whole,
    /// as [`FrameDecoder::next_frame`] does.
    ///
    /// For a reader that knows most messages at a glance (a reply whose result is one byte):
    /// scanning a message walks it value by value, and splitting it off counts a reference to
    /// the read buffer, an atomic operation to take and another to give back. `read` must only
    /// claim a whole message that holds no ext value; the message limit still applies.
    pub fn next_frame_in_place<R>(
        &mut self,
        read: impl FnOnce(&[u8]) -> Option<(usize, R)>,
    ) -> Result<Option<Frame<R>>, FrameError> {
        if let Some((len, read)) = read(&self.buf) {
            if len <= self.buf.len() && self.scanner.take_framed(len) {
                self.buf.advance(len);
                return Ok(Some(Frame::InPlace(read)));
            }
        }
        Ok(self.next_frame()?.map(Frame::Whole))
    }

    /// The next complete message, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        match self.scanner.scan(&self.buf) {
            Ok(Some(len)) => Ok(Some(self.buf.split_to(len).freeze())),
            Ok(None) => Ok(None),
            Err(source) => Err(FrameError {
                source,
                msgid: crate::envelope::request_msgid_prefix(&self.buf),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(msgid: u32, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let params: Vec<Vec<u8>> = (0..n).map(|i| vec![(i % 100) as u8]).collect();
        let refs: Vec<&[u8]> = params.iter().map(|p| p.as_slice()).collect();
        crate::encode::request(&mut out, msgid, "list.append", &refs);
        out
    }

    /// Messages the reader takes are consumed in place, the others split off whole, in order,
    /// and a message cut short waits for its rest either way.
    #[test]
    fn messages_read_in_place_or_whole() {
        let frames: Vec<Vec<u8>> = (0..20).map(|i| request(i, i as usize % 3)).collect();
        let mut stream: Vec<u8> = frames.concat();
        stream.extend_from_slice(&frames[0][..3]);
        let mut d = FrameDecoder::new(Limits::default());
        d.extend(&stream);
        // The reader takes the messages with no params (their length is known at a glance:
        // the request header is followed by an empty array).
        let header = request(0, 0).len();
        let no_params = |m: &[u8]| {
            let len = m.iter().position(|&b| b == 0x90)? + 1;
            (len == header).then_some((len, len))
        };
        for f in &frames {
            let want = match no_params(f) {
                Some((_, len)) => Frame::InPlace(len),
                None => Frame::Whole(Bytes::from(f.clone())),
            };
            assert_eq!(d.next_frame_in_place(no_params).unwrap(), Some(want));
        }
        assert_eq!(d.next_frame_in_place(no_params).unwrap(), None);
        assert_eq!(d.buffered(), 3);
        d.extend(&frames[0][3..]);
        assert_eq!(
            d.next_frame_in_place(no_params).unwrap(),
            Some(Frame::InPlace(frames[0].len()))
        );
        assert_eq!(d.buffered(), 0);
    }

    /// A message read in place is still held to the message limit, and leaves no trace of
    /// the message scanned before it (whether that one held an ext value).
    #[test]
    fn messages_read_in_place_keep_the_limits() {
        let reply = [0x94, 0x01, 0x05, 0xc0, 0xc3];
        let one_byte = crate::envelope::one_byte_response;
        let mut d = FrameDecoder::new(Limits {
            max_message_bytes: 4,
            ..Limits::default()
        });
        d.extend(&reply);
        assert!(d.next_frame_in_place(one_byte).unwrap_err().is_limit());

        let mut d = FrameDecoder::new(Limits::default());
        let with_ext = [0x94, 0x01, 0x06, 0xc0, 0xd4, 0x01, 0x07];
        d.extend(&with_ext);
        d.extend(&reply);
        let first = d.next_frame_in_place(one_byte).unwrap();
        assert_eq!(first, Some(Frame::Whole(Bytes::copy_from_slice(&with_ext))));
        assert!(d.last_frame_had_ext());
        let second = d.next_frame_in_place(one_byte).unwrap();
        assert_eq!(
            second,
            Some(Frame::InPlace((5, Bytes::from_static(&[0xc3]))))
        );
        assert!(!d.last_frame_had_ext());
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn many_messages_in_one_read() {
        let mut stream = Vec::new();
        let frames: Vec<Vec<u8>> = (0..50).map(|i| request(i, i as usize % 7)).collect();
        for f in &frames {
            stream.extend_from_slice(f);
        }
        let mut d = FrameDecoder::new(Limits::default());
        d.extend(&stream);
        for f in &frames {
            assert_eq!(d.next_frame().unwrap().as_deref(), Some(f.as_slice()));
        }
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let mut stream = request(1, 3);
        stream.extend(request(2, 40));
        for cut in 0..stream.len() {
            let mut d = FrameDecoder::new(Limits::default());
            let mut got = Vec::new();
            for chunk in [&stream[..cut], &stream[cut..]] {
                d.extend(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(got.concat(), stream);
        }
    }

    #[test]
    fn oversize_message_reports_its_msgid() {
        let limits = Limits {
            max_message_bytes: 64,
            ..Limits::default()
        };
        let mut d = FrameDecoder::new(limits);
        d.extend(&request(42, 100)[..20]);
        let err = d.next_frame().unwrap_err();
        assert_eq!(err.msgid, Some(42));
        assert!(err.is_limit());
    }

    #[test]
    fn garbage_has_no_msgid() {
        let mut d = FrameDecoder::new(Limits::default());
        d.extend(&[0xc1, 0x00]);
        let err = d.next_frame().unwrap_err();
        assert_eq!(err.msgid, None);
        assert!(!err.is_limit());
    }
}
