//! sled's integer and byte-string encodings, read with every length checked
//! (docs/sled-format.md §2).

/// Why bytes did not decode. Kept small: the caller adds where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Short {
    /// The bytes ended inside a value.
    Truncated,
    /// A tag byte outside the values sled writes.
    BadTag(u8),
}

impl std::fmt::Display for Short {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Short::Truncated => f.write_str("the bytes end inside a value"),
            Short::BadTag(t) => write!(f, "unknown tag byte {t}"),
        }
    }
}

/// A read position in a byte slice; every read checks the length first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        if self.buf.len() < n {
            return Err(Short::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Short> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32_le(&mut self) -> Result<u32, Short> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn i64_le(&mut self) -> Result<i64, Short> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(i64::from_le_bytes(a))
    }

    /// sled's variable-length unsigned integer: one byte up to 240, two up
    /// to 2287, three up to 67823, else a length byte (250..=255 for 3..=8
    /// little-endian bytes).
    pub(crate) fn varint(&mut self) -> Result<u64, Short> {
        let first = self.u8()?;
        Ok(match first {
            0..=240 => u64::from(first),
            241..=248 => 240 + 256 * (u64::from(first) - 241) + u64::from(self.u8()?),
            249 => {
                let b = self.take(2)?;
                2288 + 256 * u64::from(b[0]) + u64::from(b[1])
            }
            other => {
                let n = usize::from(other) - 247;
                let mut a = [0u8; 8];
                a[..n].copy_from_slice(self.take(n)?);
                u64::from_le_bytes(a)
            }
        })
    }

    /// A byte string: its varint length, then the bytes.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], Short> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| Short::Truncated)?;
        self.take(len)
    }

    /// sled's `Option<u64>`: 0 for none, else the value plus one.
    pub(crate) fn opt_varint(&mut self) -> Result<Option<u64>, Short> {
        Ok(self.varint()?.checked_sub(1))
    }

    /// sled's `Option<i64>` as eight bytes: 0 for none, negative values as
    /// themselves, others plus one.
    pub(crate) fn opt_i64(&mut self) -> Result<Option<i64>, Short> {
        let v = self.i64_le()?;
        Ok(match v {
            0 => None,
            v if v < 0 => Some(v),
            v => Some(v - 1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: u64) -> Vec<u8> {
        // The encoder is written here only to test the decoder's bands.
        if v <= 240 {
            vec![v as u8]
        } else if v <= 2287 {
            vec![((v - 240) / 256 + 241) as u8, ((v - 240) % 256) as u8]
        } else if v <= 67823 {
            vec![249, ((v - 2288) / 256) as u8, ((v - 2288) % 256) as u8]
        } else {
            let n = (8 - v.leading_zeros() as usize / 8).max(3);
            let mut out = vec![(247 + n) as u8];
            out.extend_from_slice(&v.to_le_bytes()[..n]);
            out
        }
    }

    #[test]
    fn varint_bands_decode() {
        for v in [
            0,
            1,
            240,
            241,
            2287,
            2288,
            67823,
            67824,
            0xFF_FFFF,
            1 << 40,
            u64::MAX,
        ] {
            let b = enc(v);
            let mut c = Cursor::new(&b);
            assert_eq!(c.varint(), Ok(v), "{v}");
            assert!(c.is_empty());
        }
    }

    #[test]
    fn truncated_values_are_errors() {
        for b in [&[241u8][..], &[249, 1], &[255, 1, 2, 3], &[]] {
            assert_eq!(Cursor::new(b).varint(), Err(Short::Truncated));
        }
        assert_eq!(Cursor::new(&[5, 1, 2]).bytes(), Err(Short::Truncated));
    }
}
