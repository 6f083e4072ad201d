//! Grants: what a parked (or immediate) blocking call is answered, kept typed until the
//! connection writes it, so that one that cannot be delivered is given back as what it is,
//! never re-parsed from bytes.

use agora_proto::{encode, CallError};

use crate::objects::Stored;

/// What a call that waited is answered with.
pub type Reply = Result<Grant, CallError>;

/// A typed result of a blocking call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// An acquire succeeded (`1`); with `owner_died`, the previous holder's connection closed
    /// holding what was acquired (`2`). The core sets `owner_died` when it grants.
    Acquired {
        /// The owner-died notice.
        owner_died: bool,
    },
    /// An acquire that was not granted: non-blocking, or its timeout passed (`0`).
    NotAcquired,
    /// A flag: an event wait, a condition wait (notified or not), a join.
    Bool(bool),
    /// Nothing to say (`nil`): a put that completed.
    Nil,
    /// A count or an index: items put by `put_many`, a barrier party's index.
    Count(u64),
    /// One queue item, as stored.
    Item(Stored),
    /// Several queue items, as an array.
    Items(Vec<Stored>),
}

/// What an acquire answers: not acquired.
pub const NOT_ACQUIRED: u64 = 0;
/// What an acquire answers: acquired.
pub const ACQUIRED: u64 = 1;
/// What an acquire answers: acquired, and the previous holder died holding it.
pub const ACQUIRED_OWNER_DIED: u64 = 2;

impl Grant {
    /// A plain acquire grant; the core adds the owner-died notice when there is one.
    pub const ACQUIRED: Grant = Grant::Acquired { owner_died: false };

    /// Appends the grant's MessagePack encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Grant::Acquired { owner_died: false } => encode::uint(out, ACQUIRED),
            Grant::Acquired { owner_died: true } => encode::uint(out, ACQUIRED_OWNER_DIED),
            Grant::NotAcquired => encode::uint(out, NOT_ACQUIRED),
            Grant::Bool(b) => encode::bool(out, *b),
            Grant::Nil => encode::nil(out),
            Grant::Count(n) => encode::uint(out, *n),
            Grant::Item(item) => out.extend_from_slice(item),
            Grant::Items(items) => {
                encode::array_header(out, items.len());
                items.iter().for_each(|i| out.extend_from_slice(i));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(g: Grant) -> Vec<u8> {
        let mut out = Vec::new();
        g.encode(&mut out);
        out
    }

    #[test]
    fn grants_encode_as_the_protocol_says() {
        assert_eq!(bytes(Grant::ACQUIRED), [1]);
        assert_eq!(bytes(Grant::Acquired { owner_died: true }), [2]);
        assert_eq!(bytes(Grant::NotAcquired), [0]);
        assert_eq!(bytes(Grant::Bool(true)), [0xc3]);
        assert_eq!(bytes(Grant::Nil), [0xc0]);
        assert_eq!(bytes(Grant::Count(300)), [0xcd, 0x01, 0x2c]);
        assert_eq!(bytes(Grant::Item(vec![0xa1, b'x'].into())), [0xa1, b'x']);
        assert_eq!(
            bytes(Grant::Items(vec![vec![1].into(), vec![2].into()])),
            [0x92, 1, 2]
        );
    }
}
