//! Bounds-checked cursor over the input bytes. Every read checks the remaining length
//! before touching (or allocating for) the data, so a length prefix can never make the
//! reader allocate more than the input holds.

use super::LoadError;

pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8], pos: usize) -> Self {
        Reader { data, pos }
    }

    pub(crate) fn data(&self) -> &'a [u8] {
        self.data
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    pub(crate) fn input_len(&self) -> usize {
        self.data.len()
    }

    /// Takes `len` bytes; `len` is a u64 so that 8-byte length prefixes are checked
    /// before any conversion to `usize` could truncate them.
    pub(crate) fn take(&mut self, len: u64) -> Result<&'a [u8], LoadError> {
        let available = self.remaining();
        let len_usize = usize::try_from(len)
            .ok()
            .filter(|&n| n <= available)
            .ok_or(LoadError::Truncated {
                offset: self.pos,
                needed: len,
                available,
            })?;
        let start = self.pos;
        let end = start + len_usize; // cannot overflow: len_usize <= data.len() - pos
        self.pos = end;
        self.data.get(start..end).ok_or(LoadError::Truncated {
            offset: start,
            needed: len,
            available,
        })
    }

    pub(crate) fn u8(&mut self) -> Result<u8, LoadError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], LoadError> {
        let bytes = self.take(N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u16_le(&mut self) -> Result<u16, LoadError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32_le(&mut self) -> Result<u32, LoadError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn i32_le(&mut self) -> Result<i32, LoadError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64_le(&mut self) -> Result<u64, LoadError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A protocol-0 text argument: everything up to (not including) the next `\n`.
    pub(crate) fn line(&mut self) -> Result<&'a [u8], LoadError> {
        let rest = self.data.get(self.pos..).unwrap_or(&[]);
        match rest.iter().position(|&b| b == b'\n') {
            Some(n) => {
                let line = &rest[..n];
                self.pos += n + 1;
                Ok(line)
            }
            None => Err(LoadError::Truncated {
                offset: self.pos,
                needed: 1,
                available: 0,
            }),
        }
    }
}
