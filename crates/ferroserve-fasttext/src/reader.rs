//! A bounds-checked little-endian cursor over the file's bytes. Every read says
//! what it was reading, so a truncated file is refused with the field it ended in.

use crate::Error;

pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    /// Bytes not read yet: the bound every declared size is checked against.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Error> {
        if n > self.remaining() {
            return Err(Error::Truncated {
                what: what.to_string(),
                offset: self.pos as u64,
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn i32(&mut self, what: &str) -> Result<i32, Error> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn i64(&mut self, what: &str) -> Result<i64, Error> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }

    pub(crate) fn f64(&mut self, what: &str) -> Result<f64, Error> {
        Ok(f64::from_bits(self.i64(what)? as u64))
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, Error> {
        Ok(self.take(1, what)?[0])
    }

    /// A C++ `bool` written as one byte: 0 or 1, anything else is refused.
    pub(crate) fn bool(&mut self, what: &str) -> Result<bool, Error> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(Error::Invalid(format!("{what}: {other} is not a boolean"))),
        }
    }

    /// `count` little-endian f32 values, after checking they fit in the file.
    pub(crate) fn f32s(&mut self, count: usize, what: &str) -> Result<Vec<f32>, Error> {
        let bytes = count
            .checked_mul(4)
            .filter(|&b| b <= self.remaining())
            .ok_or_else(|| Error::Truncated {
                what: format!("{what} ({count} floats)"),
                offset: self.pos as u64,
            })?;
        let raw = self.take(bytes, what)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Bytes up to a NUL (not included), which is consumed.
    pub(crate) fn c_string(&mut self, what: &str) -> Result<&'a [u8], Error> {
        let rest = &self.bytes[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == 0) else {
            return Err(Error::Truncated {
                what: format!("{what} (no NUL terminator)"),
                offset: self.pos as u64,
            });
        };
        self.pos += end + 1;
        Ok(&rest[..end])
    }
}
