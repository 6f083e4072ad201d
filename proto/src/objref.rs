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
}
