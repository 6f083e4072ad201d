//! Python `array` typecodes: the element types of `array` objects and of typed `value` objects.

use std::fmt;

use agora_proto::{encode, params, CallError};

use super::Stored;

/// What a typecode stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    /// A signed integer in `min..=max`.
    Signed { min: i64, max: i64 },
    /// An unsigned integer up to `max`.
    Unsigned { max: u64 },
    /// A float32.
    F32,
    /// A float64.
    F64,
    /// A bin of length 1 (Python's `c`).
    Byte,
    /// A str of one character (Python's `u`).
    Char,
}

/// A typecode: its letter and the element type it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Typecode {
    code: char,
    elem: Elem,
}

impl fmt::Display for Typecode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}'", self.code)
    }
}

fn signed(bits: u32) -> Elem {
    Elem::Signed {
        min: i64::MIN >> (64 - bits),
        max: i64::MAX >> (64 - bits),
    }
}

fn unsigned(bits: u32) -> Elem {
    Elem::Unsigned {
        max: u64::MAX >> (64 - bits),
    }
}

impl Typecode {
    /// The typecode named by a one-letter str param.
    pub fn parse(raw: &[u8]) -> Result<Typecode, CallError> {
        let text = params::text(raw).ok_or_else(|| {
            CallError::type_error(format!(
                "a typecode must be a one-letter str, got {}",
                params::type_name(raw)
            ))
        })?;
        let mut chars = text.chars();
        let (Some(code), None) = (chars.next(), chars.next()) else {
            return Err(CallError::value(format!(
                "bad typecode {text:?}: must be one of b, B, h, H, i, I, l, L, q, Q, f, d, c, u"
            )));
        };
        let elem = match code {
            'b' => signed(8),
            'B' => unsigned(8),
            'h' => signed(16),
            'H' => unsigned(16),
            'i' => signed(32),
            'I' => unsigned(32),
            'l' | 'q' => signed(64),
            'L' | 'Q' => unsigned(64),
            'f' => Elem::F32,
            'd' => Elem::F64,
            'c' => Elem::Byte,
            'u' => Elem::Char,
            _ => {
                return Err(CallError::value(format!(
                    "bad typecode {text:?}: must be one of b, B, h, H, i, I, l, L, q, Q, f, d, c, u"
                )))
            }
        };
        Ok(Typecode { code, elem })
    }

    /// Appends the typecode as [`Typecode::parse`] reads it: its letter, a str.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut letter = [0u8; 4];
        encode::str(out, self.code.encode_utf8(&mut letter));
    }

    /// The typecode's letter.
    pub fn code(&self) -> char {
        self.code
    }

    /// True for the integer typecodes.
    pub fn is_int(&self) -> bool {
        matches!(self.elem, Elem::Signed { .. } | Elem::Unsigned { .. })
    }

    /// True for the float typecodes.
    pub fn is_float(&self) -> bool {
        matches!(self.elem, Elem::F32 | Elem::F64)
    }

    /// The zero element (what `Array('i', 5)` is filled with).
    pub fn zero(&self) -> Stored {
        let mut out = Vec::new();
        match self.elem {
            Elem::Signed { .. } | Elem::Unsigned { .. } => encode::uint(&mut out, 0),
            Elem::F32 => encode::f32(&mut out, 0.0),
            Elem::F64 => encode::f64(&mut out, 0.0),
            Elem::Byte => encode::bin(&mut out, &[0]),
            Elem::Char => encode::str(&mut out, "\0"),
        }
        out.into()
    }

    fn mismatch(&self, wanted: &str, raw: &[u8]) -> CallError {
        CallError::type_error(format!(
            "typecode {self} holds {wanted}, got {}",
            params::type_name(raw)
        ))
    }

    /// Checks that an encoded value fits this typecode and returns its stored form (ints in
    /// their shortest encoding, numbers converted to the typecode's float width).
    pub fn normalize(&self, raw: &[u8]) -> Result<Stored, CallError> {
        let mut out = Vec::with_capacity(9);
        match self.elem {
            Elem::Signed { min, max } => {
                let n = self.int(raw)?;
                if n < i128::from(min) || n > i128::from(max) {
                    return Err(self.overflow(n, min.into(), max.into()));
                }
                encode::int(&mut out, n as i64);
            }
            Elem::Unsigned { max } => {
                let n = self.int(raw)?;
                if n < 0 || n > i128::from(max) {
                    return Err(self.overflow(n, 0, max.into()));
                }
                encode::uint(&mut out, n as u64);
            }
            Elem::F32 => {
                let x = number(raw).ok_or_else(|| self.mismatch("floats", raw))?;
                encode::f32(&mut out, x as f32);
            }
            Elem::F64 => {
                let x = number(raw).ok_or_else(|| self.mismatch("floats", raw))?;
                encode::f64(&mut out, x);
            }
            Elem::Byte => match params::bytes_of(raw) {
                Some(b)
                    if b.len() == 1 && raw.first().is_some_and(|m| (0xc4..=0xc6).contains(m)) =>
                {
                    encode::bin(&mut out, b)
                }
                _ => return Err(self.mismatch("bins of length 1", raw)),
            },
            Elem::Char => match params::text(raw) {
                Some(s) if s.chars().count() == 1 => encode::str(&mut out, s),
                _ => return Err(self.mismatch("strs of one character", raw)),
            },
        }
        Ok(out.into())
    }

    fn int(&self, raw: &[u8]) -> Result<i128, CallError> {
        params::int_i64(raw)
            .map(i128::from)
            .or_else(|| params::int_u64(raw).map(i128::from))
            .ok_or_else(|| self.mismatch("ints", raw))
    }

    fn overflow(&self, n: i128, min: i128, max: i128) -> CallError {
        CallError::overflow(format!(
            "{n} does not fit typecode {self} (from {min} to {max})"
        ))
    }
}

/// The number an encoded int or float holds, as f64.
pub fn number(raw: &[u8]) -> Option<f64> {
    if let Some(i) = params::int_i64(raw) {
        return Some(i as f64);
    }
    if let Some(u) = params::int_u64(raw) {
        return Some(u as f64);
    }
    let mut rest = raw;
    match raw.first()? {
        0xca => rmp::decode::read_f32(&mut rest).ok().map(f64::from),
        0xcb => rmp::decode::read_f64(&mut rest).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tc(code: &str) -> Typecode {
        let mut raw = Vec::new();
        encode::str(&mut raw, code);
        Typecode::parse(&raw).unwrap()
    }

    #[test]
    fn ranges_and_conversions() {
        let b = tc("b");
        assert!(b.normalize(&[0x7f]).is_ok());
        assert_eq!(
            b.normalize(&[0xcc, 0x80]).unwrap_err().name,
            agora_proto::ErrorName::OverflowError
        );
        assert_eq!(b.normalize(&[0xd0, 0x80]).unwrap()[..], [0xd0, 0x80]);
        let big = tc("Q");
        let mut max = Vec::new();
        encode::uint(&mut max, u64::MAX);
        assert!(big.normalize(&max).is_ok());
        assert!(big.normalize(&[0xff]).is_err());
        let d = tc("d");
        let stored = d.normalize(&[3]).unwrap();
        assert_eq!(number(&stored), Some(3.0));
        assert_eq!(stored[0], 0xcb);
        assert!(d.normalize(&[0xa1, b'x']).is_err());
        assert!(tc("c").normalize(&[0xc4, 1, b'x']).is_ok());
        assert!(tc("c").normalize(&[0xc4, 2, b'x', b'y']).is_err());
        assert!(tc("u").normalize(&[0xa2, 0xc3, 0xa9]).is_ok());
        assert!(tc("i").normalize(&[0xc3]).is_err(), "bool is not an int");
    }
}
