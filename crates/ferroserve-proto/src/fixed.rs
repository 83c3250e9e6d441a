//! Packed fixed-width fields (`repeated float`, `repeated double`) decoded and
//! encoded a chunk of the buffer at a time, for the hand-written messages that carry
//! tensors ([`crate::contents`], [`crate::tensor_proto`]). A generated decoder reads
//! them one element at a time through `Buf` (a bounds check, a little-endian read and
//! a `push` per element); these convert whole chunks, and give malformed input
//! prost's own errors.

use prost::bytes::{Buf, BufMut};
use prost::encoding::{
    self, decode_varint, encode_key, encode_varint, encoded_len_varint, key_len, DecodeContext,
    WireType,
};
use prost::DecodeError;

/// A fixed-width element read and written as little-endian bytes.
pub(crate) trait Fixed: Copy + Default {
    const WIDTH: usize;
    const WIRE_TYPE: WireType;
    fn from_le(bytes: &[u8]) -> Self;
    /// Writes the element into `out`, exactly `WIDTH` bytes.
    fn write_le(self, out: &mut [u8]);
    /// prost's own decoder of one element (its checks and its errors).
    fn merge_one(
        wire_type: WireType,
        value: &mut Self,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError>;
}

impl Fixed for f32 {
    const WIDTH: usize = 4;
    const WIRE_TYPE: WireType = WireType::ThirtyTwoBit;
    #[inline]
    fn from_le(bytes: &[u8]) -> f32 {
        f32::from_le_bytes(bytes.try_into().expect("4 bytes"))
    }
    #[inline]
    fn write_le(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
    fn merge_one(
        wire_type: WireType,
        value: &mut f32,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        encoding::float::merge(wire_type, value, buf, ctx)
    }
}

impl Fixed for f64 {
    const WIDTH: usize = 8;
    const WIRE_TYPE: WireType = WireType::SixtyFourBit;
    #[inline]
    fn from_le(bytes: &[u8]) -> f64 {
        f64::from_le_bytes(bytes.try_into().expect("8 bytes"))
    }
    #[inline]
    fn write_le(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
    fn merge_one(
        wire_type: WireType,
        value: &mut f64,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        encoding::double::merge(wire_type, value, buf, ctx)
    }
}

/// Merges one occurrence of a `repeated` fixed-width field: packed (a length, then
/// the elements), or one unpacked element. Malformed input gets prost's own errors.
pub(crate) fn merge_fixed<T: Fixed>(
    wire_type: WireType,
    values: &mut Vec<T>,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    if wire_type != WireType::LengthDelimited {
        // Unpacked (or a wrong wire type, which prost reports).
        let mut value = T::default();
        T::merge_one(wire_type, &mut value, buf, ctx)?;
        values.push(value);
        return Ok(());
    }
    // What prost's `merge_loop` checks, then whole chunks of the buffer at a time.
    let len = decode_varint(buf)?;
    let mut len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > buf.remaining() {
        return Err(underflow::<T>(ctx));
    }
    values.reserve(len / T::WIDTH);
    while len >= T::WIDTH {
        let chunk = buf.chunk();
        let whole = chunk.len().min(len) / T::WIDTH * T::WIDTH;
        if whole > 0 {
            values.extend(chunk[..whole].chunks_exact(T::WIDTH).map(T::from_le));
            buf.advance(whole);
            len -= whole;
        } else {
            // An element split between two chunks of the buffer.
            let mut one = [0u8; 8];
            buf.copy_to_slice(&mut one[..T::WIDTH]);
            values.push(T::from_le(&one[..T::WIDTH]));
            len -= T::WIDTH;
        }
    }
    if len > 0 {
        // Not a whole number of elements.
        return Err(underflow::<T>(ctx));
    }
    Ok(())
}

/// prost's "buffer underflow" error (its constructors are internal): what its
/// decoder of one element answers on an empty buffer.
fn underflow<T: Fixed>(ctx: DecodeContext) -> DecodeError {
    match T::merge_one(T::WIRE_TYPE, &mut T::default(), &mut &[][..], ctx) {
        Err(e) => e,
        Ok(()) => unreachable!("an element decoded from no bytes"),
    }
}

pub(crate) fn encode_fixed<T: Fixed>(tag: u32, values: &[T], buf: &mut impl BufMut) {
    if values.is_empty() {
        return;
    }
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint((values.len() * T::WIDTH) as u64, buf);
    // Through a block on the stack: one `put_slice` per 4 KiB, not a call per element.
    let mut block = [0u8; 4096];
    for group in values.chunks(4096 / T::WIDTH) {
        let bytes = &mut block[..group.len() * T::WIDTH];
        for (out, &v) in bytes.chunks_exact_mut(T::WIDTH).zip(group) {
            v.write_le(out);
        }
        buf.put_slice(bytes);
    }
}

pub(crate) fn encoded_len_fixed<T: Fixed>(tag: u32, values: &[T]) -> usize {
    if values.is_empty() {
        return 0;
    }
    let len = values.len() * T::WIDTH;
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// For the hand-written messages' tests: damaged copies of valid encodings.
#[cfg(test)]
pub(crate) mod damage {
    /// `count` copies of `wires` (chosen in turn at random), each with one to four
    /// bytes flipped, replaced, inserted, or cut off there; the same every run.
    pub(crate) fn damaged(wires: &[Vec<u8>], count: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..count).map(move |_| {
            let mut wire = wires[next() as usize % wires.len()].clone();
            for _ in 0..1 + next() % 4 {
                if wire.is_empty() {
                    wire.push(next() as u8);
                    continue;
                }
                let at = next() as usize % wire.len();
                match next() % 4 {
                    0 => wire[at] ^= 1 << (next() % 8),
                    1 => wire.truncate(at),
                    2 => wire[at] = next() as u8,
                    _ => wire.insert(at, next() as u8),
                }
            }
            wire
        })
    }

    /// A buffer in pieces (each element may straddle two), as tonic hands a
    /// message over when it arrived in several frames.
    pub(crate) struct Pieces(std::collections::VecDeque<prost::bytes::Bytes>);

    impl Pieces {
        /// `wire` cut into pieces of `size` bytes.
        pub(crate) fn of(wire: &[u8], size: usize) -> Pieces {
            Pieces(
                wire.chunks(size)
                    .map(prost::bytes::Bytes::copy_from_slice)
                    .collect(),
            )
        }
    }

    impl prost::bytes::Buf for Pieces {
        fn remaining(&self) -> usize {
            self.0.iter().map(|b| b.len()).sum()
        }
        fn chunk(&self) -> &[u8] {
            self.0.front().map_or(&[], |b| &b[..])
        }
        fn advance(&mut self, mut n: usize) {
            while n > 0 {
                let front = self.0.front_mut().expect("advance past the end");
                let step = n.min(front.len());
                front.advance(step);
                n -= step;
                if front.is_empty() {
                    self.0.pop_front();
                }
            }
        }
    }
}
