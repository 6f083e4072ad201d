//! Python slices (`[start:stop:step]`): the [`Slice`] type, and the commands shared by
//! [`List`](super::List) and [`Array`](super::Array), whose wire methods differ only by their
//! kind prefix.

use std::borrow::Borrow;
use std::fmt;
use std::ops::{Range, RangeFrom, RangeFull, RangeTo};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::list::By;
use crate::command::Target;
use crate::command::{decode, Args, Cmd};
use crate::error::{Error, Result};

/// A Python slice, `[start:stop:step]`: which elements of a list or an array a slicing method
/// ([`List::get_slice`](super::List::get_slice), [`Array::set_slice`](super::Array::set_slice),
/// ...) reads, replaces or deletes.
///
/// Bounds are `i64` and may be negative, counting from the end as in Python (`-1` is the
/// last element); a missing bound is Python's omitted one. Build a slice from a Rust range,
/// then set a step with [`step_by`](Slice::step_by):
///
/// | Python | `Slice` |
/// |---|---|
/// | `l[2:5]` | `2..5` |
/// | `l[-3:]` | `-3..` |
/// | `l[:4]` | `..4` |
/// | `l[:]` | `..` |
/// | `l[::-1]` | `Slice::from(..).step_by(-1)` |
/// | `l[1::2]` | `Slice::from(1..).step_by(2)` |
///
/// ```
/// use agora_client::proxies::Slice;
/// let reversed = Slice::from(..).step_by(-1);
/// assert_eq!((reversed.start(), reversed.stop(), reversed.step()), (None, None, Some(-1)));
/// assert_eq!(Slice::from(2..5), Slice::new(Some(2), Some(5), None));
/// assert_eq!(Slice::from(-3..).to_string(), "[-3::]");
/// ```
///
/// Unlike a Rust range, a slice never panics and is never "out of bounds": as in Python, the
/// manager clamps its bounds to the sequence, and `2..1` selects nothing. A step of 0 is
/// refused by the manager with `ValueError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Slice {
    start: Option<i64>,
    stop: Option<i64>,
    step: Option<i64>,
}

impl Slice {
    /// The slice `[start:stop:step]`, each part `None` where Python's would be omitted: for
    /// bounds that come as options (parsed, or generated).
    pub const fn new(start: Option<i64>, stop: Option<i64>, step: Option<i64>) -> Slice {
        Slice { start, stop, step }
    }

    /// The whole sequence, `[:]`: the same as `Slice::from(..)`.
    pub const fn all() -> Slice {
        Slice::new(None, None, None)
    }

    /// The same bounds, taking every `step`-th element (negative: backwards, from `start`
    /// down to just after `stop`), as Python's `[start:stop:step]`.
    #[must_use = "step_by returns a new slice"]
    pub const fn step_by(self, step: i64) -> Slice {
        Slice {
            step: Some(step),
            ..self
        }
    }

    /// The first index, `None` when omitted.
    pub const fn start(&self) -> Option<i64> {
        self.start
    }

    /// The index the slice stops before, `None` when omitted.
    pub const fn stop(&self) -> Option<i64> {
        self.stop
    }

    /// The step, `None` when omitted (which means 1).
    pub const fn step(&self) -> Option<i64> {
        self.step
    }

    /// Appends start, stop and step as params, each nil when omitted.
    pub(crate) fn encode(self, a: &mut Args) {
        a.opt_int(self.start).opt_int(self.stop).opt_int(self.step);
    }

    /// Start and stop, for a method that takes bounds but no step (`list.index`): a slice
    /// with a step other than 1 is a usage error.
    pub(crate) fn bounds(self, method: &str) -> Result<(Option<i64>, Option<i64>)> {
        match self.step {
            None | Some(1) => Ok((self.start, self.stop)),
            Some(step) => Err(Error::Usage(format!(
                "{method} searches a range of indexes and takes no step; got the slice {self} \
                 (step {step})"
            ))),
        }
    }
}

/// `l[a:b]`.
impl From<Range<i64>> for Slice {
    fn from(r: Range<i64>) -> Slice {
        Slice::new(Some(r.start), Some(r.end), None)
    }
}

/// `l[a:]`.
impl From<RangeFrom<i64>> for Slice {
    fn from(r: RangeFrom<i64>) -> Slice {
        Slice::new(Some(r.start), None, None)
    }
}

/// `l[:b]`.
impl From<RangeTo<i64>> for Slice {
    fn from(r: RangeTo<i64>) -> Slice {
        Slice::new(None, Some(r.end), None)
    }
}

/// `l[:]`.
impl From<RangeFull> for Slice {
    fn from(_: RangeFull) -> Slice {
        Slice::all()
    }
}

/// Python's notation, with every colon: `[1:-1:]`, `[::-1]`.
impl fmt::Display for Slice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
        write!(
            f,
            "[{}:{}:{}]",
            part(self.start),
            part(self.stop),
            part(self.step)
        )
    }
}

/// `<kind>.getslice [id, start, stop, step]`.
pub(crate) fn get<T: DeserializeOwned>(id: Target, method: &'static str, s: Slice) -> Cmd<Vec<T>> {
    Cmd::object(id, method, decode::seq, |a| {
        s.encode(a);
        Ok(())
    })
}

/// `<kind>.setslice [id, start, stop, step, items]`.
pub(crate) fn set<T, I>(id: Target, method: &'static str, s: Slice, items: I) -> Cmd<()>
where
    T: Serialize,
    I: IntoIterator,
    I::Item: Borrow<T>,
{
    Cmd::object(id, method, decode::unit, |a| {
        s.encode(a);
        a.seq(items.into_iter().map(By::<T, _>::new)).map(drop)
    })
}

/// `<kind>.delslice [id, start, stop, step]`.
pub(crate) fn del(id: Target, method: &'static str, s: Slice) -> Cmd<()> {
    Cmd::object(id, method, decode::unit, |a| {
        s.encode(a);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(s: impl Into<Slice>) -> Vec<u8> {
        let mut a = Args::default();
        s.into().encode(&mut a);
        a.bytes().to_vec()
    }

    #[test]
    fn ranges_become_python_slices() {
        // Positive fixints, negative fixints and nil, as on the wire.
        assert_eq!(params(1..4), [0x01, 0x04, 0xc0]);
        assert_eq!(params(-3..), [0xfd, 0xc0, 0xc0]);
        assert_eq!(params(..2), [0xc0, 0x02, 0xc0]);
        assert_eq!(params(..), [0xc0, 0xc0, 0xc0]);
        assert_eq!(params(Slice::from(..).step_by(-1)), [0xc0, 0xc0, 0xff]);
        assert_eq!(params(Slice::from(1..).step_by(2)), [0x01, 0xc0, 0x02]);
    }

    #[test]
    fn display_is_python_notation() {
        assert_eq!(Slice::new(Some(1), Some(-1), None).to_string(), "[1:-1:]");
        assert_eq!(Slice::all().step_by(-1).to_string(), "[::-1]");
        assert_eq!(Slice::default(), Slice::all());
    }

    #[test]
    fn bounds_refuse_a_step() {
        assert_eq!(
            Slice::from(2..).bounds("index_in").unwrap(),
            (Some(2), None)
        );
        assert_eq!(
            Slice::from(..3).step_by(1).bounds("index_in").unwrap(),
            (None, Some(3))
        );
        let err = Slice::all().step_by(2).bounds("index_in").unwrap_err();
        assert!(
            matches!(err, Error::Usage(ref m) if m.contains("[::2]")),
            "{err}"
        );
    }
}
