//! Python's index and slice arithmetic, shared by `list` and `array`.

use agora_proto::CallError;

/// Resolves a possibly negative index against `len`, `None` when out of range.
pub fn index(i: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let i = if i < 0 { i + len } else { i };
    (0..len).contains(&i).then_some(i as usize)
}

/// A slice resolved against a length, as Python's `slice.indices` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// First index.
    pub start: i64,
    /// The (clamped) stop bound.
    pub stop: i64,
    /// Step, never 0.
    pub step: i64,
    /// Number of indices the slice selects.
    pub len: usize,
}

impl Slice {
    /// Resolves `[start:stop:step]` (each optional) against `len`.
    pub fn new(
        start: Option<i64>,
        stop: Option<i64>,
        step: Option<i64>,
        len: usize,
    ) -> Result<Slice, CallError> {
        let step = step.unwrap_or(1);
        if step == 0 {
            return Err(CallError::value("slice step cannot be zero"));
        }
        let n = len as i64;
        let (lower, upper) = if step > 0 { (0, n) } else { (-1, n - 1) };
        let clamp = |bound: Option<i64>, default: i64| match bound {
            None => default,
            Some(b) if b < 0 => (b + n).max(lower),
            Some(b) => b.min(upper),
        };
        let start = clamp(start, if step > 0 { lower } else { upper });
        let stop = clamp(stop, if step > 0 { upper } else { lower });
        // In i128: `-step` overflows i64 for i64::MIN.
        let (first, last, step_wide) = (i128::from(start), i128::from(stop), i128::from(step));
        let len = if step > 0 && last > first {
            ((last - first - 1) / step_wide + 1) as usize
        } else if step < 0 && last < first {
            ((first - last - 1) / (-step_wide) + 1) as usize
        } else {
            0
        };
        Ok(Slice {
            start,
            stop,
            step,
            len,
        })
    }

    /// The indices the slice selects, in slice order.
    pub fn indices(&self) -> impl Iterator<Item = usize> {
        let (start, step) = (i128::from(self.start), i128::from(self.step));
        (0..self.len as i128).map(move |k| (start + k * step) as usize)
    }

    /// True for a contiguous forward slice (`step == 1`), which may be resized on assignment.
    pub fn is_simple(&self) -> bool {
        self.step == 1
    }

    /// For a simple slice, the range it covers (empty ranges sit at `start`).
    pub fn range(&self) -> std::ops::Range<usize> {
        let start = self.start as usize;
        start..start + self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(start: Option<i64>, stop: Option<i64>, step: Option<i64>) -> Vec<usize> {
        Slice::new(start, stop, step, 10)
            .unwrap()
            .indices()
            .collect()
    }

    #[test]
    fn matches_python() {
        assert_eq!(pick(None, None, None), (0..10).collect::<Vec<_>>());
        assert_eq!(pick(Some(-3), None, None), vec![7, 8, 9]);
        assert_eq!(
            pick(None, None, Some(-1)),
            (0..10).rev().collect::<Vec<_>>()
        );
        assert_eq!(pick(Some(8), Some(2), Some(-2)), vec![8, 6, 4]);
        assert_eq!(pick(Some(100), None, None), Vec::<usize>::new());
        assert_eq!(pick(Some(-100), Some(2), None), vec![0, 1]);
        assert_eq!(
            pick(None, Some(-100), Some(-1)),
            (0..10).rev().collect::<Vec<_>>()
        );
        assert_eq!(pick(Some(5), Some(5), None), Vec::<usize>::new());
        assert_eq!(
            Slice::new(Some(5), Some(2), None, 10).unwrap().range(),
            5..5
        );
        assert!(Slice::new(None, None, Some(0), 10).is_err());
        assert_eq!(pick(None, None, Some(i64::MIN)), vec![9]);
        assert_eq!(pick(None, None, Some(i64::MAX)), vec![0]);
        assert_eq!(index(-1, 3), Some(2));
        assert_eq!(index(3, 3), None);
        assert_eq!(index(-4, 3), None);
    }
}
