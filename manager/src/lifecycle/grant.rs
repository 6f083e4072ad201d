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
        /// What was granted is owned (recorded for the connection). Not written: it tells a
        /// give-back whether the connection's close may already have returned it.
        owned: bool,
    },
    /// An acquire that was not granted: non-blocking, or its timeout passed (`0`).
    NotAcquired,
    /// A `mutex.lock` granted: `[poisoned, value]`, the value as it was when granted.
    Locked {
        /// A holder died holding the mutex, and nobody cleared the poison since.
        poisoned: bool,
        /// The guarded value.
        value: Stored,
    },
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
    /// Queue items the queue keeps a record of until they are finished (acknowledged or marked
    /// done), each with its receipt, so that one given back leaves that record exactly.
    Taken {
        /// The items, oldest first, each with its receipt (0: not recorded).
        items: Vec<(u64, Stored)>,
        /// How the call's answer is written.
        shape: Shape,
    },
}

/// How the items of a [`Grant::Taken`] are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The one item alone (`get`).
    Item,
    /// An array of items (`get_many`).
    Items,
    /// `[receipt, item]` for the one item (`get_acked`).
    Receipted,
    /// An array of `[receipt, item]` (`get_many_acked`).
    ReceiptedItems,
}

/// What an acquire answers: not acquired.
pub const NOT_ACQUIRED: u64 = 0;
/// What an acquire answers: acquired.
pub const ACQUIRED: u64 = 1;
/// What an acquire answers: acquired, and the previous holder died holding it.
pub const ACQUIRED_OWNER_DIED: u64 = 2;

impl Grant {
    /// A plain acquire grant of something owned; the core adds the owner-died notice when
    /// there is one.
    pub const ACQUIRED: Grant = Grant::Acquired {
        owner_died: false,
        owned: true,
    };

    /// Appends the grant's MessagePack encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Grant::Acquired {
                owner_died: false, ..
            } => encode::uint(out, ACQUIRED),
            Grant::Acquired {
                owner_died: true, ..
            } => encode::uint(out, ACQUIRED_OWNER_DIED),
            Grant::NotAcquired => encode::uint(out, NOT_ACQUIRED),
            Grant::Locked { poisoned, value } => {
                encode::array_header(out, 2);
                encode::bool(out, *poisoned);
                out.extend_from_slice(value);
            }
            Grant::Bool(b) => encode::bool(out, *b),
            Grant::Nil => encode::nil(out),
            Grant::Count(n) => encode::uint(out, *n),
            Grant::Item(item) => out.extend_from_slice(item),
            Grant::Items(items) => {
                encode::array_header(out, items.len());
                items.iter().for_each(|i| out.extend_from_slice(i));
            }
            Grant::Taken { items, shape } => {
                let pair = |out: &mut Vec<u8>, (receipt, item): &(u64, Stored)| {
                    encode::array_header(out, 2);
                    encode::uint(out, *receipt);
                    out.extend_from_slice(item);
                };
                match shape {
                    Shape::Item | Shape::Receipted if items.len() != 1 => {
                        // A single get takes exactly one item; an empty answer is an empty
                        // array, as the plain variants write it.
                        encode::array_header(out, 0);
                    }
                    Shape::Item => items.iter().for_each(|(_, i)| out.extend_from_slice(i)),
                    Shape::Receipted => items.iter().for_each(|e| pair(out, e)),
                    Shape::Items => {
                        encode::array_header(out, items.len());
                        items.iter().for_each(|(_, i)| out.extend_from_slice(i));
                    }
                    Shape::ReceiptedItems => {
                        encode::array_header(out, items.len());
                        items.iter().for_each(|e| pair(out, e));
                    }
                }
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
        let died = |owned| Grant::Acquired {
            owner_died: true,
            owned,
        };
        assert_eq!(bytes(died(true)), [2]);
        assert_eq!(bytes(died(false)), [2]);
        assert_eq!(bytes(Grant::NotAcquired), [0]);
        let locked = Grant::Locked {
            poisoned: true,
            value: vec![0xa1, b'v'].into(),
        };
        assert_eq!(bytes(locked), [0x92, 0xc3, 0xa1, b'v']);
        assert_eq!(bytes(Grant::Bool(true)), [0xc3]);
        assert_eq!(bytes(Grant::Nil), [0xc0]);
        assert_eq!(bytes(Grant::Count(300)), [0xcd, 0x01, 0x2c]);
        assert_eq!(bytes(Grant::Item(vec![0xa1, b'x'].into())), [0xa1, b'x']);
        assert_eq!(
            bytes(Grant::Items(vec![vec![1].into(), vec![2].into()])),
            [0x92, 1, 2]
        );
        let taken = |shape| Grant::Taken {
            items: vec![(7, vec![0xa1, b'x'].into())],
            shape,
        };
        assert_eq!(bytes(taken(Shape::Item)), [0xa1, b'x']);
        assert_eq!(bytes(taken(Shape::Items)), [0x91, 0xa1, b'x']);
        assert_eq!(bytes(taken(Shape::Receipted)), [0x92, 7, 0xa1, b'x']);
        assert_eq!(
            bytes(taken(Shape::ReceiptedItems)),
            [0x91, 0x92, 7, 0xa1, b'x']
        );
    }
}
