//! The kinds of shared objects, by their names on the wire.
//!
//! A kind is part of the protocol's own vocabulary: `create` takes one, `lookup` and `objects`
//! return them, every object method is called `<kind>.<method>`, and an object reference
//! carries one. It lives here, beside the envelope, so that the manager, every client and the
//! [method table](crate::methods) spell kinds the same way.

use std::fmt;

/// The kinds of objects `create` can make (section 4.2 of `PROTOCOL.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An insertion-ordered map.
    Dict,
    /// A sequence.
    List,
    /// One value with atomic read-modify-write operations.
    Value,
    /// A fixed-length array of one typecode.
    Array,
    /// A bag of named attributes.
    Namespace,
    /// A FIFO queue.
    Queue,
    /// A FIFO queue with `task_done` and `join`.
    JoinableQueue,
    /// A mutual-exclusion lock.
    Lock,
    /// A reentrant lock.
    RLock,
    /// A counting semaphore.
    Semaphore,
    /// A semaphore that refuses to be released above its initial value.
    BoundedSemaphore,
    /// A flag that callers wait for.
    Event,
    /// A condition variable over a lock.
    Condition,
    /// A meeting point for a fixed number of parties.
    Barrier,
    /// A value and its lock as one object, poisoned by a holder's death.
    Mutex,
    /// A set of values, compared as dict keys are.
    Set,
}

impl Kind {
    /// Every kind, in the order `PROTOCOL.md` documents them, so that listings (an error naming
    /// the known kinds, the method table) read in the same order as the document.
    pub const ALL: &'static [Kind] = &[
        Kind::Dict,
        Kind::List,
        Kind::Value,
        Kind::Array,
        Kind::Namespace,
        Kind::Queue,
        Kind::JoinableQueue,
        Kind::Lock,
        Kind::RLock,
        Kind::Semaphore,
        Kind::BoundedSemaphore,
        Kind::Event,
        Kind::Condition,
        Kind::Barrier,
        Kind::Mutex,
        Kind::Set,
    ];

    /// The kind's name on the wire: what `create` takes and what prefixes its methods. A
    /// `const fn`, so that tables built at compile time can use it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Dict => "dict",
            Kind::List => "list",
            Kind::Value => "value",
            Kind::Array => "array",
            Kind::Namespace => "namespace",
            Kind::Queue => "queue",
            Kind::JoinableQueue => "joinable_queue",
            Kind::Lock => "lock",
            Kind::RLock => "rlock",
            Kind::Semaphore => "semaphore",
            Kind::BoundedSemaphore => "bounded_semaphore",
            Kind::Event => "event",
            Kind::Condition => "condition",
            Kind::Barrier => "barrier",
            Kind::Mutex => "mutex",
            Kind::Set => "set",
        }
    }

    /// The kind with that wire name; `None` for a name that is no kind (the caller says what
    /// was expected, since only it knows where the name came from).
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for Kind {
    /// Writes the wire name, so messages name a kind as a client spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_listed_once_and_parses_back_from_its_name() {
        for (i, kind) in Kind::ALL.iter().enumerate() {
            assert_eq!(Kind::parse(kind.as_str()), Some(*kind));
            assert_eq!(kind.to_string(), kind.as_str());
            assert!(!Kind::ALL[..i].contains(kind), "{kind} listed twice");
        }
    }

    #[test]
    fn names_that_are_not_kinds_are_refused() {
        for name in ["", "Dict", "dict ", "Set", "joinable-queue", "RLock"] {
            assert_eq!(Kind::parse(name), None, "{name:?}");
        }
    }
}
