//! [`Cmd`]: one call, encoded and typed, ready to run now or to queue in a pipeline.
//!
//! Every proxy method `foo(..)` has a twin `foo_cmd(..)` that returns the [`Cmd`] instead of
//! running it; `foo(..)` is exactly `client.run(foo_cmd(..))`. Building a command encodes its
//! arguments at once, so the caller's borrows end there; an encoding error is kept inside the
//! command and reported when it runs (or by its pipeline reply), so that building never needs `?`.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use agora_proto::encode::{self, Sink};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{DecodeError, Error, ErrorName, Result};

/// What a call came back with: the encoded result, or the error the manager returned
/// ([`Error::Remote`]).
pub(crate) type Reply = Result<Bytes>;

/// Turns a reply into the command's Rust result.
pub(crate) type Decoder<T> = fn(Reply) -> Result<T>;

/// Bytes of params a call keeps inline: an object id and a key or a small value fit, so that
/// building most calls allocates nothing. An allocation and its free cost more than encoding
/// the call: over a sixth of a pipelined `dict.get`'s work on the client, counted by callgrind.
const INLINE_PARAMS: usize = 32;

/// Encoded params: inline up to [`INLINE_PARAMS`] bytes, on the heap past that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParamBytes {
    /// The first `len` bytes of `bytes`.
    Inline {
        len: u8,
        bytes: [u8; INLINE_PARAMS],
    },
    Heap(Vec<u8>),
}

impl Default for ParamBytes {
    fn default() -> ParamBytes {
        ParamBytes::Inline {
            len: 0,
            bytes: [0; INLINE_PARAMS],
        }
    }
}

impl ParamBytes {
    /// Keeps the first `len` bytes.
    fn truncate(&mut self, len: usize) {
        match self {
            ParamBytes::Inline { len: have, .. } => {
                if len < usize::from(*have) {
                    *have = len as u8; // below the inline length, which fits a u8
                }
            }
            ParamBytes::Heap(bytes) => bytes.truncate(len),
        }
    }
}

impl Sink for ParamBytes {
    #[inline]
    fn put(&mut self, byte: u8) {
        match self {
            ParamBytes::Inline { len, bytes } if usize::from(*len) < INLINE_PARAMS => {
                bytes[usize::from(*len)] = byte;
                *len += 1;
            }
            _ => self.put_slice(&[byte]),
        }
    }

    #[inline]
    fn put_slice(&mut self, more: &[u8]) {
        match self {
            ParamBytes::Inline { len, bytes } => {
                let at = usize::from(*len);
                match bytes.get_mut(at..at + more.len()) {
                    Some(room) => {
                        room.copy_from_slice(more);
                        // At most INLINE_PARAMS, which fits a u8.
                        *len = (at + more.len()) as u8;
                    }
                    None => {
                        let mut spilled = Vec::with_capacity((at + more.len()) * 2);
                        spilled.extend_from_slice(&bytes[..at]);
                        spilled.extend_from_slice(more);
                        *self = ParamBytes::Heap(spilled);
                    }
                }
            }
            ParamBytes::Heap(bytes) => bytes.extend_from_slice(more),
        }
    }
}

impl std::ops::Deref for ParamBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            ParamBytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            ParamBytes::Heap(bytes) => bytes,
        }
    }
}

impl From<Vec<u8>> for ParamBytes {
    /// Takes the vector as it is, however short.
    fn from(bytes: Vec<u8>) -> ParamBytes {
        ParamBytes::Heap(bytes)
    }
}

/// The params of one call, encoded one after the other without the array header (which needs
/// their count, known only at the end).
#[derive(Debug, Clone, Default)]
pub(crate) struct Args {
    bytes: ParamBytes,
    count: u32,
}

impl Args {
    /// Params starting with an object id, as every object method's do.
    pub(crate) fn object(id: u64) -> Args {
        let mut args = Args::default();
        args.uint(id);
        args
    }

    /// The encoded params, without the array header.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoded params, taken out.
    pub(crate) fn into_bytes(self) -> ParamBytes {
        self.bytes
    }

    /// How many params there are.
    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    fn push(&mut self, write: impl FnOnce(&mut ParamBytes)) -> &mut Args {
        write(&mut self.bytes);
        self.count += 1;
        self
    }

    pub(crate) fn uint(&mut self, n: u64) -> &mut Args {
        self.push(|out| encode::uint(out, n))
    }

    pub(crate) fn int(&mut self, n: i64) -> &mut Args {
        self.push(|out| encode::int(out, n))
    }

    /// An int, or nil for `None` (slice bounds).
    pub(crate) fn opt_int(&mut self, n: Option<i64>) -> &mut Args {
        self.push(|out| match n {
            Some(n) => encode::int(out, n),
            None => encode::nil(out),
        })
    }

    pub(crate) fn str(&mut self, s: &str) -> &mut Args {
        self.push(|out| encode::str(out, s))
    }

    pub(crate) fn opt_str(&mut self, s: Option<&str>) -> &mut Args {
        self.push(|out| match s {
            Some(s) => encode::str(out, s),
            None => encode::nil(out),
        })
    }

    pub(crate) fn bin(&mut self, b: &[u8]) -> &mut Args {
        self.push(|out| encode::bin(out, b))
    }

    pub(crate) fn bool(&mut self, b: bool) -> &mut Args {
        self.push(|out| encode::bool(out, b))
    }

    /// A value that is already one complete MessagePack value.
    pub(crate) fn raw(&mut self, encoded: &[u8]) -> &mut Args {
        self.push(|out| out.put_slice(encoded))
    }

    /// A value encoded with `rmp_serde`'s defaults (structs as arrays). Encoding stops with
    /// [`Error::Limit`] once the params outgrow the largest message a manager takes.
    pub(crate) fn value<V: Serialize + ?Sized>(&mut self, v: &V) -> Result<&mut Args> {
        let start = self.bytes.len();
        if let Err(e) = encode_capped(&mut self.bytes, v) {
            // Never leave half a value behind: the count and the bytes must agree.
            self.bytes.truncate(start);
            return Err(e);
        }
        self.count += 1;
        Ok(self)
    }

    /// An array of the items, each encoded like [`Args::value`].
    pub(crate) fn seq<I>(&mut self, items: I) -> Result<&mut Args>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        let mut body = ParamBytes::default();
        let mut n = 0usize;
        for item in items {
            encode_capped(&mut body, &item)?;
            n += 1;
        }
        Ok(self.push(|out| {
            encode::array_header(out, n);
            out.put_slice(&body);
        }))
    }
}

/// The largest message any manager this process is connected to takes (`0`: none known yet),
/// learned from `hello`: encoding a request stops there. A connection checks each request
/// against its own manager's limits before sending it.
static ENCODE_CAP: AtomicUsize = AtomicUsize::new(0);

/// A manager takes messages of up to `max` bytes.
pub(crate) fn learn_max_message_bytes(max: usize) {
    ENCODE_CAP.fetch_max(max, Ordering::Relaxed);
}

/// Encodes `v` at the end of `out`, stopping with [`Error::Limit`] once `out` is longer than
/// the largest message a manager takes: encoding a huge value takes long, and sending it
/// would fail anyway.
fn encode_capped<V: Serialize + ?Sized>(out: &mut ParamBytes, v: &V) -> Result<()> {
    let cap = match ENCODE_CAP.load(Ordering::Relaxed) {
        0 => usize::MAX,
        cap => cap,
    };
    let mut w = Capped {
        out,
        cap,
        over: None,
    };
    match rmp_serde::encode::write(&mut w, v) {
        Ok(()) => Ok(()),
        Err(_) if w.over.is_some() => Err(Error::Limit {
            limit: "max_message_bytes",
            max: cap as u64,
            size: w.over.unwrap_or(0) as u64,
            encoding_stopped: true,
        }),
        Err(e) => Err(Error::encode(e)),
    }
}

/// A writer that refuses to grow its buffer past `cap`, remembering the size it would have.
struct Capped<'a> {
    out: &'a mut ParamBytes,
    cap: usize,
    over: Option<usize>,
}

impl io::Write for Capped<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let len = self.out.len().saturating_add(buf.len());
        if len > self.cap {
            self.over = Some(len);
            return Err(io::Error::other(
                "the request is over the manager's size limit",
            ));
        }
        self.out.put_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One call to the manager, with its arguments encoded and the type of its result fixed.
///
/// Get one from a proxy's `*_cmd` method (or [`Cmd::raw`] / [`Cmd::typed`] for any method),
/// then either run it at once with [`Client::run`](crate::Client::run) or queue it in a
/// [`Pipeline`](crate::Pipeline) with [`Pipeline::add`](crate::Pipeline::add).
#[must_use = "a command does nothing until it is run or added to a pipeline"]
pub struct Cmd<T> {
    pub(crate) method: Cow<'static, str>,
    pub(crate) args: Result<Args>,
    pub(crate) decode: Decoder<T>,
    /// The manager run whose object the command is for ([`Target::run`]); 0 for a command
    /// that names no proxy's object.
    pub(crate) run: u64,
}

/// The object a proxy names: its id, and the run of the manager it belongs to.
///
/// An id means nothing without its run: a restarted manager hands out the same ids again,
/// for other objects. A command made by a proxy carries its run, and a client connected to
/// another run refuses it unsent ([`Error::OtherRun`](crate::Error::OtherRun)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Target {
    pub(crate) id: u64,
    /// [`ManagerRun::key`](crate::run::ManagerRun::key) of the run.
    pub(crate) run: u64,
}

impl<T> fmt::Debug for Cmd<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cmd")
            .field("method", &self.method)
            .field("params", &self.args.as_ref().map(Args::count))
            .finish()
    }
}

impl<T> Cmd<T> {
    /// A command on the object `target`: its params are the id followed by what `build` adds.
    pub(crate) fn object(
        target: Target,
        method: &'static str,
        decode: Decoder<T>,
        build: impl FnOnce(&mut Args) -> Result<()>,
    ) -> Cmd<T> {
        let mut args = Args::object(target.id);
        let args = build(&mut args).map(|()| args);
        Cmd {
            method: Cow::Borrowed(method),
            args,
            decode,
            run: target.run,
        }
    }

    /// A command with the given params.
    pub(crate) fn with_args(
        method: impl Into<Cow<'static, str>>,
        args: Args,
        decode: Decoder<T>,
    ) -> Cmd<T> {
        Cmd {
            method: method.into(),
            args: Ok(args),
            decode,
            run: 0,
        }
    }

    /// The wire method this command calls (`"dict.getitem"`, ...).
    pub fn method(&self) -> &str {
        &self.method
    }
}

impl Cmd<Bytes> {
    /// A command for any method, with params given as encoded MessagePack values (one slice per
    /// param). Its result is the encoded result. For methods this crate has no proxy for.
    ///
    /// Fails (when run) with [`Error::Usage`] if a slice is not exactly one MessagePack value:
    /// sending it would desynchronise the stream.
    pub fn raw(method: impl Into<Cow<'static, str>>, params: &[&[u8]]) -> Cmd<Bytes> {
        let mut args = Args::default();
        let mut check = Ok(());
        for (i, p) in params.iter().enumerate() {
            if agora_proto::scanner::value_len(p) != Some(p.len()) {
                check = Err(Error::Usage(format!(
                    "param {i} of a raw call is not exactly one MessagePack value"
                )));
            }
            args.raw(p);
        }
        Cmd {
            method: method.into(),
            args: check.map(|()| args),
            decode: decode::bytes,
            run: 0,
        }
    }
}

impl<R: DeserializeOwned> Cmd<R> {
    /// A command for any method, with `params` serialized as the params array (so it must
    /// serialize as a sequence: a tuple, a slice, a `Vec`), and the result decoded as `R`.
    ///
    /// ```
    /// # use agora_client::Cmd;
    /// let cmd: Cmd<String> = Cmd::typed("ping", &());
    /// assert_eq!(cmd.method(), "ping");
    /// let len: Cmd<usize> = Cmd::typed("list.len", &(7u64,));
    /// # let _ = len;
    /// ```
    pub fn typed<P: Serialize + ?Sized>(
        method: impl Into<Cow<'static, str>>,
        params: &P,
    ) -> Cmd<R> {
        Cmd {
            method: method.into(),
            args: params_array(params),
            decode: decode::value::<R>,
            run: 0,
        }
    }
}

/// Encodes `params`, which must serialize as an array, into [`Args`].
fn params_array<P: Serialize + ?Sized>(params: &P) -> Result<Args> {
    let encoded = rmp_serde::to_vec(params).map_err(Error::encode)?;
    // `()` serializes as nil in rmp_serde: treat it as "no params".
    if encoded == [0xc0] {
        return Ok(Args::default());
    }
    let items = agora_proto::params::array_items(&encoded).ok_or_else(|| {
        Error::Usage(
            "the params of a call must serialize as an array (a tuple, a slice or a Vec)".into(),
        )
    })?;
    let mut args = Args::default();
    for item in items {
        args.raw(item);
    }
    Ok(args)
}

/// The decoders commands use: how a reply becomes a Rust result, including which manager errors
/// mean "absent" for methods that return an `Option` or a `bool`.
pub(crate) mod decode {
    use super::*;

    pub(crate) fn bytes(r: Reply) -> Result<Bytes> {
        r
    }

    pub(crate) fn value<T: DeserializeOwned>(r: Reply) -> Result<T> {
        let raw = r?;
        rmp_serde::from_slice(&raw).map_err(|e| Error::decode::<T>(&raw, e))
    }

    /// An array of `T`. On failure, the entry at fault is found and named; a reply that
    /// decodes costs nothing more than [`value`].
    pub(crate) fn seq<T: DeserializeOwned>(r: Reply) -> Result<Vec<T>> {
        let raw = r?;
        rmp_serde::from_slice(&raw).map_err(|e| locate_in_array::<T>(&raw, e))
    }

    /// An array of `[key, value]` pairs (`dict.items`); a bad entry is named with its key.
    pub(crate) fn pairs<K: DeserializeOwned, V: DeserializeOwned>(r: Reply) -> Result<Vec<(K, V)>> {
        let raw = r?;
        rmp_serde::from_slice(&raw).map_err(|e| locate_in_pairs::<K, V>(&raw, e))
    }

    /// An array, each item undecoded (a slice of the reply).
    pub(crate) fn raw_seq(r: Reply) -> Result<Vec<Bytes>> {
        let raw = r?;
        let items =
            agora_proto::params::array_items(&raw).ok_or_else(|| not_a("an array", &raw))?;
        Ok(items.into_iter().map(|item| raw.slice_ref(item)).collect())
    }

    /// An array of `[key, value]` pairs, each undecoded.
    pub(crate) fn raw_pairs(r: Reply) -> Result<Vec<(Bytes, Bytes)>> {
        let raw = r?;
        let items = agora_proto::params::array_items(&raw)
            .ok_or_else(|| not_a("an array of pairs", &raw))?;
        items
            .into_iter()
            .map(
                |item| match agora_proto::params::array_items(item).as_deref() {
                    Some(&[k, v]) => Ok((raw.slice_ref(k), raw.slice_ref(v))),
                    _ => Err(not_a("a [key, value] pair", item)),
                },
            )
            .collect()
    }

    /// A map's entries in order, each undecoded.
    pub(crate) fn raw_entries(r: Reply) -> Result<Vec<(Bytes, Bytes)>> {
        let raw = r?;
        let entries = agora_proto::params::map_entries(&raw).ok_or_else(|| not_a("a map", &raw))?;
        Ok(entries
            .into_iter()
            .map(|(k, v)| (raw.slice_ref(k), raw.slice_ref(v)))
            .collect())
    }

    fn not_a(what: &str, raw: &[u8]) -> Error {
        Error::Protocol(format!(
            "expected {what} in the reply, got a {}",
            agora_proto::params::type_name(raw)
        ))
    }

    /// The first entry of the array `raw` that does not decode as `T`, as an error; `e` when
    /// none is found (the array itself is at fault).
    pub(crate) fn locate_in_array<T: DeserializeOwned>(
        raw: &Bytes,
        e: rmp_serde::decode::Error,
    ) -> Error {
        let items = agora_proto::params::array_items(raw).unwrap_or_default();
        for (i, item) in items.iter().enumerate() {
            if let Err(e) = rmp_serde::from_slice::<T>(item) {
                return DecodeError::new::<T>(raw.clone(), raw.slice_ref(item), e)
                    .at_entry(i, None)
                    .into();
            }
        }
        Error::decode::<Vec<T>>(raw, e)
    }

    /// As [`locate_in_array`], for an array of `[key, value]` pairs.
    pub(crate) fn locate_in_pairs<K: DeserializeOwned, V: DeserializeOwned>(
        raw: &Bytes,
        e: rmp_serde::decode::Error,
    ) -> Error {
        let items = agora_proto::params::array_items(raw).unwrap_or_default();
        for (i, item) in items.iter().enumerate() {
            let pair = agora_proto::params::array_items(item).unwrap_or_default();
            let [k, v] = pair[..] else {
                continue;
            };
            if let Err(found) = entry_error::<K, V>(raw, i, k, v) {
                return found;
            }
        }
        Error::decode::<Vec<(K, V)>>(raw, e)
    }

    /// As [`locate_in_array`], for a map (`dict.copy`): entries in the map's order.
    pub(crate) fn locate_in_map<K: DeserializeOwned, V: DeserializeOwned>(
        raw: &Bytes,
        e: rmp_serde::decode::Error,
    ) -> Error {
        let entries = agora_proto::params::map_entries(raw).unwrap_or_default();
        for (i, (k, v)) in entries.into_iter().enumerate() {
            if let Err(found) = entry_error::<K, V>(raw, i, k, v) {
                return found;
            }
        }
        Error::decode::<Vec<(K, V)>>(raw, e)
    }

    /// The error of entry `i` of `raw` when its key or its value does not decode.
    fn entry_error<K: DeserializeOwned, V: DeserializeOwned>(
        raw: &Bytes,
        i: usize,
        k: &[u8],
        v: &[u8],
    ) -> Result<(), Error> {
        if let Err(e) = rmp_serde::from_slice::<K>(k) {
            return Err(DecodeError::new::<K>(raw.clone(), raw.slice_ref(k), e)
                .at_entry(i, None)
                .into());
        }
        if let Err(e) = rmp_serde::from_slice::<V>(v) {
            return Err(DecodeError::new::<V>(raw.clone(), raw.slice_ref(v), e)
                .at_entry(i, Some(k))
                .into());
        }
        Ok(())
    }

    pub(crate) fn unit(r: Reply) -> Result<()> {
        r.map(drop)
    }

    fn none_on<T: DeserializeOwned>(name: ErrorName, r: Reply) -> Result<Option<T>> {
        match r {
            Err(e) if e.is(name) => Ok(None),
            r => value(r).map(Some),
        }
    }

    fn found_unless(name: ErrorName, r: Reply) -> Result<bool> {
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.is(name) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `KeyError` means absent.
    pub(crate) fn unless_key_error<T: DeserializeOwned>(r: Reply) -> Result<Option<T>> {
        none_on(ErrorName::KeyError, r)
    }

    /// `IndexError` means absent.
    pub(crate) fn unless_index_error<T: DeserializeOwned>(r: Reply) -> Result<Option<T>> {
        none_on(ErrorName::IndexError, r)
    }

    /// `ValueError` means absent (`list.index` of a missing value).
    pub(crate) fn unless_value_error<T: DeserializeOwned>(r: Reply) -> Result<Option<T>> {
        none_on(ErrorName::ValueError, r)
    }

    /// `AttributeError` means absent.
    pub(crate) fn unless_attribute_error<T: DeserializeOwned>(r: Reply) -> Result<Option<T>> {
        none_on(ErrorName::AttributeError, r)
    }

    /// Success is `true`; `KeyError` is `false`.
    pub(crate) fn found_key(r: Reply) -> Result<bool> {
        found_unless(ErrorName::KeyError, r)
    }

    /// Success is `true`; `IndexError` is `false`.
    pub(crate) fn found_index(r: Reply) -> Result<bool> {
        found_unless(ErrorName::IndexError, r)
    }

    /// Success is `true`; `ValueError` is `false`.
    pub(crate) fn found_value(r: Reply) -> Result<bool> {
        found_unless(ErrorName::ValueError, r)
    }

    /// Success is `true`; `AttributeError` is `false`.
    pub(crate) fn found_attribute(r: Reply) -> Result<bool> {
        found_unless(ErrorName::AttributeError, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_encode_each_param_once() {
        let mut a = Args::object(7);
        a.value("k").unwrap().opt_int(None).int(-1).bool(true);
        assert_eq!(a.count(), 5);
        assert_eq!(a.bytes(), [0x07, 0xa1, b'k', 0xc0, 0xff, 0xc3]);
    }

    /// Params grow from inline to the heap at any point, byte for byte as a vector grows, and
    /// a value that fails is cut off either side of the boundary.
    #[test]
    fn params_spill_from_inline_to_the_heap_unchanged() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                // Half a value written, then the error.
                let mut seq = s.serialize_seq(Some(2))?;
                seq.serialize_element("half")?;
                Err(serde::ser::Error::custom("no"))
            }
        }
        for key_len in 0..2 * INLINE_PARAMS {
            let key = "k".repeat(key_len);
            let mut a = Args::object(u64::MAX);
            let mut want = Vec::new();
            encode::uint(&mut want, u64::MAX);
            for _ in 0..3 {
                assert!(a.value(&Fails).is_err());
                assert_eq!(a.bytes(), want, "key of {key_len}");
                a.value(&key).unwrap().uint(300).bool(false);
                encode::str(&mut want, &key);
                encode::uint(&mut want, 300);
                encode::bool(&mut want, false);
                assert_eq!(a.bytes(), want, "key of {key_len}");
            }
            assert_eq!(a.count(), 10);
            let inline = matches!(a.into_bytes(), ParamBytes::Inline { .. });
            assert_eq!(inline, want.len() <= INLINE_PARAMS, "key of {key_len}");
        }
    }

    #[test]
    fn a_failed_value_leaves_no_bytes() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let mut a = Args::object(1);
        assert!(a.value(&Fails).is_err());
        assert_eq!((a.count(), a.bytes()), (1, &[1u8][..]));
        let cmd: Cmd<()> =
            Cmd::object(Target { id: 1, run: 1 }, "list.append", decode::unit, |a| {
                a.value(&Fails).map(drop)
            });
        assert!(matches!(cmd.args, Err(Error::Encode(_))));
    }

    #[test]
    fn raw_params_must_be_whole_values() {
        let ok = Cmd::raw("list.append", &[&[0x01], &[0xa1, b'x']]);
        assert_eq!(ok.args.unwrap().bytes(), [0x01, 0xa1, b'x']);
        let bad = Cmd::raw("list.append", &[&[0x01, 0x02]]);
        assert!(matches!(bad.args, Err(Error::Usage(_))));
        let truncated = Cmd::raw("list.append", &[&[0xa2, b'x']]);
        assert!(matches!(truncated.args, Err(Error::Usage(_))));
    }

    #[test]
    fn typed_params_are_split_from_a_tuple() {
        let cmd: Cmd<()> = Cmd::typed("dict.setitem", &(3u64, "k", [1, 2]));
        let args = cmd.args.unwrap();
        assert_eq!(args.count(), 3);
        assert_eq!(args.bytes(), [0x03, 0xa1, b'k', 0x92, 0x01, 0x02]);
        let none: Cmd<String> = Cmd::typed("ping", &());
        assert_eq!(none.args.unwrap().count(), 0);
        let scalar: Cmd<String> = Cmd::typed("ping", &5);
        assert!(matches!(scalar.args, Err(Error::Usage(_))));
    }

    #[test]
    fn absent_decoders_map_only_their_error() {
        let key = || Err(Error::remote("KeyError", "'x'"));
        let index = || Err(Error::remote("IndexError", "out of range"));
        assert_eq!(decode::unless_key_error::<i64>(key()).unwrap(), None);
        assert!(decode::unless_key_error::<i64>(index()).is_err());
        assert_eq!(
            decode::unless_key_error::<i64>(Ok(Bytes::from_static(&[5]))).unwrap(),
            Some(5)
        );
        assert!(!decode::found_key(key()).unwrap());
        assert!(!decode::found_index(index()).unwrap());
        assert!(decode::found_index(key()).is_err());
        assert!(decode::found_key(Ok(Bytes::from_static(&[0xc0]))).unwrap());
    }

    fn encoded<V: Serialize>(v: &V) -> Bytes {
        Bytes::from(rmp_serde::to_vec(v).unwrap())
    }

    #[test]
    fn a_bad_entry_is_named_and_the_reply_kept() {
        let raw = encoded(&(1, "two", 3));
        let err = decode::seq::<i64>(Ok(raw.clone())).unwrap_err();
        let d = err.as_decode().unwrap();
        assert_eq!(d.entry(), Some(1));
        assert_eq!((d.expected(), d.found()), ("i64", "str"));
        assert_eq!(d.raw(), &raw);
        assert_eq!(&d.value()[..], &encoded(&"two")[..]);
        assert!(err.to_string().contains("entry 1"), "{err}");
        assert!(err.to_string().contains("\"two\""), "{err}");

        let pairs = encoded(&(("a", 1), ("b", 2.5)));
        let err = decode::pairs::<String, i64>(Ok(pairs)).unwrap_err();
        let d = err.as_decode().unwrap();
        assert_eq!((d.entry(), d.entry_key()), (Some(1), Some("\"b\"")));
        assert_eq!(d.found(), "float");
        // A bad key is named by its position only.
        let pairs = encoded(&((1, 1), ("b", 2)));
        let err = decode::pairs::<String, i64>(Ok(pairs)).unwrap_err();
        let d = err.as_decode().unwrap();
        assert_eq!(
            (d.entry(), d.entry_key(), d.found()),
            (Some(0), None, "int")
        );

        let raw = decode::raw_pairs(Ok(encoded(&(("a", 1), ("b", 2.5))))).unwrap();
        assert_eq!(raw.len(), 2);
        assert_eq!(&raw[1].1[..], &encoded(&2.5)[..]);
        assert!(matches!(
            decode::raw_seq(Ok(encoded(&5))),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn a_decode_error_names_the_call() {
        let raw = encoded(&"oops");
        let mut args = Args::object(7);
        args.str("key");
        let err = decode::value::<i64>(Ok(raw.clone()))
            .unwrap_err()
            .in_call("dict.getitem", args.bytes());
        let d = err.as_decode().unwrap();
        assert_eq!(
            (d.object(), d.key(), d.applied()),
            (Some(("dict", 7)), Some("\"key\""), false)
        );
        assert_eq!(
            err.to_string(),
            "cannot decode the reply of dict.getitem on dict 7 at \"key\": expected i64, found \
             str \"oops\" (wrong msgpack marker FixStr(4))"
        );
        let err = decode::value::<i64>(Ok(raw.clone()))
            .unwrap_err()
            .in_call("queue.get", Args::object(3).bytes());
        let d = err.as_decode().unwrap();
        assert_eq!(
            (d.object(), d.key(), d.applied()),
            (Some(("queue", 3)), None, true)
        );
        assert!(
            err.to_string()
                .ends_with("taken from the queue and is in this error (DecodeError::raw)"),
            "{err}"
        );
        let err = decode::value::<i64>(Ok(raw))
            .unwrap_err()
            .in_call("value.fetch_add", Args::object(4).int(1).bytes());
        assert!(err.as_decode().unwrap().applied());
        // Long values are cut short in the message, never in the error.
        let long = encoded(&"x".repeat(500));
        let err = decode::value::<i64>(Ok(long.clone())).unwrap_err();
        assert!(err.to_string().len() < 150, "{err}");
        assert_eq!(err.as_decode().unwrap().raw(), &long);
    }
}
