//! References to shared objects inside values: MessagePack ext type 1.
//!
//! The ext data is itself MessagePack, the array `[kind, id]`, so any client can decode it with
//! an ordinary MessagePack library. A dict holding a reference to a list holds a *live* shared
//! list, as in Python's Manager; clients turn references back into proxies.

use crate::value::decode;

/// The ext type code of an object reference.
pub const EXT_TYPE: i8 = 1;

/// A reference to a shared object: its kind (`"dict"`, `"list"`, ...) and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    /// The object's kind, as given to `create`.
    pub kind: String,
    /// The object's id.
    pub id: u64,
}

impl ObjectRef {
    /// A reference to object `id` of `kind`.
    pub fn new(kind: impl Into<String>, id: u64) -> Self {
        ObjectRef {
            kind: kind.into(),
            id,
        }
    }

    /// The ext data: the encoded array `[kind, id]`.
    pub fn ext_data(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.kind.len() + 10);
        out.push(0x92);
        crate::encode::str(&mut out, &self.kind);
        crate::encode::uint(&mut out, self.id);
        out
    }

    /// The whole encoded ext value.
    pub fn encode(&self) -> Vec<u8> {
        let data = self.ext_data();
        let mut out = Vec::with_capacity(data.len() + 6);
        rmp::encode::write_ext_meta(&mut out, data.len() as u32, EXT_TYPE).ok();
        out.extend_from_slice(&data);
        out
    }

    /// Reads the ext data of a type-1 ext value.
    pub fn from_ext_data(data: &[u8]) -> Option<ObjectRef> {
        let rmpv::Value::Array(items) = decode(data).ok()? else {
            return None;
        };
        match items.as_slice() {
            [kind, id] => Some(ObjectRef {
                kind: kind.as_str()?.to_owned(),
                id: id.as_u64()?,
            }),
            _ => None,
        }
    }

    /// Reads a reference from a dynamic value, `None` if it is not one.
    pub fn from_value(v: &rmpv::Value) -> Option<ObjectRef> {
        match v {
            rmpv::Value::Ext(EXT_TYPE, data) => ObjectRef::from_ext_data(data),
            _ => None,
        }
    }
}

/// One ext type 1 value met by [`for_each_ref`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found<'a> {
    /// A reference to object `id` of `kind`.
    Ref {
        /// The kind the reference names.
        kind: &'a str,
        /// The object id.
        id: u64,
    },
    /// Ext type 1 whose data is not `[kind, id]`.
    Malformed,
}

/// False when `raw` certainly holds no reference, found without walking it: a reference's data
/// is 7 to 28 bytes long (`0x92`, a kind of 4 to 17 bytes with its header, an id of 1 to 9
/// bytes), so every encoder writes it as ext 8 (`0xc7`), fixext 8 (`0xd7`) or fixext 16
/// (`0xd8`). The values of a typical call (numbers, ASCII text) hold none of those bytes; a
/// true answer only means [`for_each_ref`] is worth running.
pub fn may_hold_refs(raw: &[u8]) -> bool {
    // Every reply a client reads passes here, however large: a vectorised search of the three
    // bytes, not a loop over each byte.
    memchr::memchr3(0xc7, 0xd7, 0xd8, raw).is_some()
}

/// False when `raw` certainly holds no ext value of any type or size (so no malformed
/// reference either): the check a manager makes before it admits a value.
pub fn may_hold_ext(raw: &[u8]) -> bool {
    raw.iter().any(|&b| is_ext(b))
}

/// Calls `f` for every ext type 1 value in `raw`, one or more complete MessagePack values (a
/// params array, a stored value, a result), in the order they appear. Walks the bytes without
/// decoding anything else and without recursion (a count of values still due replaces the
/// stack), so any nesting the framing allowed costs no stack. Stops early at bytes that are not
/// MessagePack; what the framing accepted always is.
pub fn for_each_ref<'a>(raw: &'a [u8], mut f: impl FnMut(Found<'a>)) {
    let mut pos = 0;
    // Values still to walk in the open containers; one at a time at the top level.
    let mut due: u64 = 0;
    while pos < raw.len() {
        let Ok(Some((size, header))) = crate::scanner::header(&raw[pos..], pos) else {
            return;
        };
        due = due.saturating_sub(1);
        match header {
            crate::scanner::Header::Scalar => pos += size,
            crate::scanner::Header::Container { items, .. } => {
                due = due.saturating_add(items);
                pos += size;
            }
            crate::scanner::Header::Payload(len) => {
                let Some(end) = usize::try_from(len)
                    .ok()
                    .and_then(|l| (pos + size).checked_add(l))
                else {
                    return;
                };
                let Some(data) = raw.get(pos + size..end) else {
                    return;
                };
                // An ext header ends with its type byte; other payloads (str, bin) have none.
                if is_ext(raw[pos]) && raw[pos + size - 1] as i8 == EXT_TYPE {
                    f(parse_ref(data)
                        .map_or(Found::Malformed, |(kind, id)| Found::Ref { kind, id }));
                }
                pos = end;
            }
        }
    }
}

fn is_ext(marker: u8) -> bool {
    matches!(marker, 0xc7..=0xc9 | 0xd4..=0xd8)
}

/// Reads `[kind, id]` from ext data without allocating: `0x92`, a str, a non-negative int,
/// and nothing after.
fn parse_ref(data: &[u8]) -> Option<(&str, u64)> {
    let (&head, rest) = data.split_first()?;
    if head != 0x92 {
        return None;
    }
    let (&marker, rest) = rest.split_first()?;
    let (len, rest) = match marker {
        0xa0..=0xbf => (usize::from(marker & 0x1f), rest),
        0xd9 => {
            let (&len, rest) = rest.split_first()?;
            (usize::from(len), rest)
        }
        _ => return None,
    };
    let kind = std::str::from_utf8(rest.get(..len)?).ok()?;
    let int = rest.get(len..)?;
    // The data must be exactly one int, and `int_u64` reads one without checking what follows.
    if int_len(*int.first()?) != Some(int.len()) {
        return None;
    }
    Some((kind, crate::params::int_u64(int)?))
}

/// The encoded length of the int that `marker` starts.
fn int_len(marker: u8) -> Option<usize> {
    match marker {
        0x00..=0x7f => Some(1),
        0xcc | 0xd0 => Some(2),
        0xcd | 0xd1 => Some(3),
        0xce | 0xd2 => Some(5),
        0xcf | 0xd3 => Some(9),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_bytes() {
        let r = ObjectRef::new("list", 7);
        assert_eq!(
            r.encode(),
            [0xc7, 0x07, 0x01, 0x92, 0xa4, b'l', b'i', b's', b't', 0x07]
        );
        let v = decode(&r.encode()).unwrap();
        assert_eq!(ObjectRef::from_value(&v), Some(r));
    }

    fn found(raw: &[u8]) -> Vec<Found<'_>> {
        let mut all = Vec::new();
        for_each_ref(raw, |f| all.push(f));
        all
    }

    #[test]
    fn references_are_found_at_any_depth_and_nothing_else_is() {
        use rmpv::Value as V;
        let r = |kind: &str, id: u64| V::Ext(EXT_TYPE, ObjectRef::new(kind, id).ext_data());
        let value = V::Array(vec![
            V::from("text \u{c7}\u{d7}"),
            V::Map(vec![(r("dict", 1 << 40), V::Array(vec![r("list", 7)]))]),
            V::Ext(5, vec![0x92, 0xa4, b'l', b'i', b's', b't', 7]),
            V::Ext(EXT_TYPE, vec![1, 2, 3]),
            V::Binary(ObjectRef::new("lock", 3).encode()),
            r("bounded_semaphore", u64::MAX >> 11),
        ]);
        let mut raw = Vec::new();
        rmpv::encode::write_value(&mut raw, &value).unwrap();
        assert!(may_hold_refs(&raw));
        assert_eq!(
            found(&raw),
            vec![
                Found::Ref {
                    kind: "dict",
                    id: 1 << 40
                },
                Found::Ref {
                    kind: "list",
                    id: 7
                },
                Found::Malformed,
                Found::Ref {
                    kind: "bounded_semaphore",
                    id: u64::MAX >> 11
                },
            ]
        );
    }

    #[test]
    fn every_reference_is_caught_by_the_quick_check() {
        for kind in crate::Kind::ALL {
            for id in [
                0,
                1,
                127,
                128,
                255,
                256,
                65_535,
                65_536,
                1 << 32,
                (1 << 53) - 1,
            ] {
                let raw = ObjectRef::new(kind.as_str(), id).encode();
                assert!(may_hold_refs(&raw), "{kind} {id}");
                let expected = Found::Ref {
                    kind: kind.as_str(),
                    id,
                };
                assert_eq!(found(&raw), vec![expected]);
            }
        }
        assert!(!may_hold_refs(&[0x93, 0x01, 0xa1, b'a', 0xc0]));
    }

    #[test]
    fn data_with_trailing_bytes_or_a_negative_id_is_malformed() {
        for data in [
            vec![0x92, 0xa4, b'l', b'i', b's', b't', 7, 0],
            vec![0x92, 0xa4, b'l', b'i', b's', b't', 0xff],
            vec![0x93, 0xa4, b'l', b'i', b's', b't', 7, 7],
            vec![0x92, 0xa4, b'l', b'i', b's'],
        ] {
            let mut raw = Vec::new();
            rmp::encode::write_ext_meta(&mut raw, data.len() as u32, EXT_TYPE).unwrap();
            raw.extend_from_slice(&data);
            assert_eq!(found(&raw), vec![Found::Malformed], "{data:?}");
        }
    }
}
