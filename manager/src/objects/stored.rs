//! [`Stored`]: an encoded value an object keeps, with a holder for every object it references.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use crate::registry::holders::Pins;

/// An encoded MessagePack value, owned by an object: the bytes a client sent (copied out of the
/// read buffer, so that a stored value never pins a whole network buffer), plus one pin per
/// object reference inside them (`PROTOCOL.md`, section 3.2). The pins are what make a nested
/// object live as long as the value that holds it: every path that drops the value (an
/// overwrite, a pop, a get, a clear, the container being freed) lets them go, with no code of
/// its own.
///
/// It reads as its bytes: equality and hashing are the bytes', as a map key it borrows as
/// `[u8]`.
#[derive(Clone, Default)]
pub struct Stored {
    bytes: Box<[u8]>,
    pins: Pins,
}

impl Stored {
    /// Stores `bytes`, pinning the objects they reference. Only a request whose params were
    /// admitted (`Registry::admit`) pins anything; values the manager computes hold no
    /// reference.
    pub fn new(bytes: Box<[u8]>) -> Stored {
        let pins = Pins::of(&bytes);
        Stored { bytes, pins }
    }

    /// How many object references the value holds (pinned ones).
    pub fn refs(&self) -> usize {
        self.pins.len()
    }
}

impl Deref for Stored {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Borrow<[u8]> for Stored {
    fn borrow(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsRef<[u8]> for Stored {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl PartialEq for Stored {
    fn eq(&self, other: &Stored) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Stored {}

/// Hashes as `[u8]` does, as `Borrow<[u8]>` requires.
impl Hash for Stored {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

impl fmt::Debug for Stored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.bytes.fmt(f)
    }
}

impl From<&[u8]> for Stored {
    fn from(raw: &[u8]) -> Stored {
        Stored::new(raw.into())
    }
}

impl From<Vec<u8>> for Stored {
    fn from(raw: Vec<u8>) -> Stored {
        Stored::new(raw.into_boxed_slice())
    }
}
