//! `inference.InferTensorContents`, written by hand so that its packed floating-point
//! fields decode and encode as blocks of memory.
//!
//! A generated decoder reads a packed `repeated float` one element at a time through
//! `Buf` (a bounds check, a little-endian read and a `push` per element): for a
//! 1x3x48x192 image that is about a third of a typed KServe request's server time.
//! This type has the same fields, numbers and wire encoding
//! (`proto/kserve/grpc_service.proto`); `fp32_contents` and `fp64_contents` are
//! converted a chunk of the buffer at a time ([`crate::fixed`]), and the other fields
//! use prost's own functions. Unpacked encodings (one key per element), which protobuf parsers must
//! accept for packed fields, are read too.

use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, skip_field, DecodeContext, WireType};
use prost::DecodeError;

use crate::fixed::{encode_fixed, encoded_len_fixed, merge_fixed};

/// The typed contents of one tensor, as in the generated code.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct InferTensorContents {
    pub bool_contents: Vec<bool>,
    pub int_contents: Vec<i32>,
    pub int64_contents: Vec<i64>,
    pub uint_contents: Vec<u32>,
    pub uint64_contents: Vec<u64>,
    pub fp32_contents: Vec<f32>,
    pub fp64_contents: Vec<f64>,
    pub bytes_contents: Vec<Vec<u8>>,
}

impl prost::Message for InferTensorContents {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encoding::bool::encode_packed(1, &self.bool_contents, buf);
        encoding::int32::encode_packed(2, &self.int_contents, buf);
        encoding::int64::encode_packed(3, &self.int64_contents, buf);
        encoding::uint32::encode_packed(4, &self.uint_contents, buf);
        encoding::uint64::encode_packed(5, &self.uint64_contents, buf);
        encode_fixed(6, &self.fp32_contents, buf);
        encode_fixed(7, &self.fp64_contents, buf);
        encoding::bytes::encode_repeated(8, &self.bytes_contents, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // Errors name the field, as prost's generated code does.
        let (field, merged) = match tag {
            1 => (
                "bool_contents",
                encoding::bool::merge_repeated(wire_type, &mut self.bool_contents, buf, ctx),
            ),
            2 => (
                "int_contents",
                encoding::int32::merge_repeated(wire_type, &mut self.int_contents, buf, ctx),
            ),
            3 => (
                "int64_contents",
                encoding::int64::merge_repeated(wire_type, &mut self.int64_contents, buf, ctx),
            ),
            4 => (
                "uint_contents",
                encoding::uint32::merge_repeated(wire_type, &mut self.uint_contents, buf, ctx),
            ),
            5 => (
                "uint64_contents",
                encoding::uint64::merge_repeated(wire_type, &mut self.uint64_contents, buf, ctx),
            ),
            6 => (
                "fp32_contents",
                merge_fixed(wire_type, &mut self.fp32_contents, buf, ctx),
            ),
            7 => (
                "fp64_contents",
                merge_fixed(wire_type, &mut self.fp64_contents, buf, ctx),
            ),
            8 => (
                "bytes_contents",
                encoding::bytes::merge_repeated(wire_type, &mut self.bytes_contents, buf, ctx),
            ),
            _ => return skip_field(wire_type, tag, buf, ctx),
        };
        merged.map_err(|mut e| {
            e.push("InferTensorContents", field);
            e
        })
    }

    fn encoded_len(&self) -> usize {
        encoding::bool::encoded_len_packed(1, &self.bool_contents)
            + encoding::int32::encoded_len_packed(2, &self.int_contents)
            + encoding::int64::encoded_len_packed(3, &self.int64_contents)
            + encoding::uint32::encoded_len_packed(4, &self.uint_contents)
            + encoding::uint64::encoded_len_packed(5, &self.uint64_contents)
            + encoded_len_fixed(6, &self.fp32_contents)
            + encoded_len_fixed(7, &self.fp64_contents)
            + encoding::bytes::encoded_len_repeated(8, &self.bytes_contents)
    }

    fn clear(&mut self) {
        *self = InferTensorContents::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The generated type, for comparison: the same message as prost derives it.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(bool, repeated, tag = "1")]
        bool_contents: Vec<bool>,
        #[prost(int32, repeated, tag = "2")]
        int_contents: Vec<i32>,
        #[prost(int64, repeated, tag = "3")]
        int64_contents: Vec<i64>,
        #[prost(uint32, repeated, tag = "4")]
        uint_contents: Vec<u32>,
        #[prost(uint64, repeated, tag = "5")]
        uint64_contents: Vec<u64>,
        #[prost(float, repeated, tag = "6")]
        fp32_contents: Vec<f32>,
        #[prost(double, repeated, tag = "7")]
        fp64_contents: Vec<f64>,
        #[prost(bytes = "vec", repeated, tag = "8")]
        bytes_contents: Vec<Vec<u8>>,
    }

    /// The same unpacked: one key per element, as a parser must accept.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Unpacked {
        #[prost(float, repeated, packed = "false", tag = "6")]
        fp32_contents: Vec<f32>,
        #[prost(double, repeated, packed = "false", tag = "7")]
        fp64_contents: Vec<f64>,
    }

    fn sample(n: usize) -> Generated {
        let f = |i: usize| (i as f64 * 0.37 - 11.0).powi(3);
        Generated {
            bool_contents: (0..n).map(|i| i % 3 == 0).collect(),
            int_contents: (0..n).map(|i| f(i) as i32).collect(),
            int64_contents: (0..n).map(|i| (f(i) * 1e6) as i64).collect(),
            uint_contents: (0..n).map(|i| i as u32 * 7919).collect(),
            uint64_contents: (0..n).map(|i| u64::MAX - i as u64).collect(),
            fp32_contents: (0..n)
                .map(|i| f(i) as f32)
                .chain([f32::NAN, -0.0, f32::INFINITY, f32::MIN_POSITIVE / 2.0])
                .collect(),
            fp64_contents: (0..n).map(f).chain([f64::NAN, -0.0]).collect(),
            bytes_contents: (0..n.min(5)).map(|i| vec![i as u8; i]).collect(),
        }
    }

    fn bits(g: &Generated) -> (Vec<u32>, Vec<u64>) {
        (
            g.fp32_contents.iter().map(|v| v.to_bits()).collect(),
            g.fp64_contents.iter().map(|v| v.to_bits()).collect(),
        )
    }

    fn generated(c: &InferTensorContents) -> Generated {
        Generated {
            bool_contents: c.bool_contents.clone(),
            int_contents: c.int_contents.clone(),
            int64_contents: c.int64_contents.clone(),
            uint_contents: c.uint_contents.clone(),
            uint64_contents: c.uint64_contents.clone(),
            fp32_contents: c.fp32_contents.clone(),
            fp64_contents: c.fp64_contents.clone(),
            bytes_contents: c.bytes_contents.clone(),
        }
    }

    #[test]
    fn wire_encoding_is_the_generated_ones() {
        for n in [0, 1, 2, 17, 1000] {
            let g = sample(n);
            let wire = g.encode_to_vec();
            let c = InferTensorContents::decode(&wire[..]).unwrap();
            let back = generated(&c);
            assert_eq!(bits(&back), bits(&g), "n = {n}");
            assert_eq!(back.int64_contents, g.int64_contents);
            assert_eq!(back.bytes_contents, g.bytes_contents);
            assert_eq!(c.encode_to_vec(), wire, "n = {n}");
            assert_eq!(c.encoded_len(), wire.len());
        }
    }

    /// A buffer of many small chunks, as tonic's receive buffer can be: elements
    /// split between chunks decode the same.
    #[test]
    fn elements_split_between_chunks_decode_the_same() {
        let g = sample(300);
        let wire = g.encode_to_vec();
        for piece in [1, 3, 5, 7, 64] {
            let mut buf = crate::fixed::damage::Pieces::of(&wire, piece);
            let c = InferTensorContents::decode(&mut buf).unwrap();
            assert_eq!(bits(&generated(&c)), bits(&g), "pieces of {piece}");
        }
    }

    #[test]
    fn unpacked_elements_are_read() {
        let u = Unpacked {
            fp32_contents: vec![1.5, -2.0, 3.25],
            fp64_contents: vec![1e300, -0.5],
        };
        let c = InferTensorContents::decode(&u.encode_to_vec()[..]).unwrap();
        assert_eq!(c.fp32_contents, u.fp32_contents);
        assert_eq!(c.fp64_contents, u.fp64_contents);
        // Packed and unpacked occurrences of one field append to each other.
        let mut wire = Unpacked {
            fp32_contents: vec![1.0],
            fp64_contents: vec![],
        }
        .encode_to_vec();
        wire.extend(
            Generated {
                fp32_contents: vec![2.0, 3.0],
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let c = InferTensorContents::decode(&wire[..]).unwrap();
        assert_eq!(c.fp32_contents, vec![1.0, 2.0, 3.0]);
    }

    /// Damaged encodings (bytes flipped, cut short, spliced) decode exactly as the
    /// generated type decodes them: the same values, or an error for both.
    #[test]
    fn damaged_encodings_decode_as_generated_code_does() {
        let wires: Vec<Vec<u8>> = [0, 1, 3, 40]
            .iter()
            .map(|&n| sample(n).encode_to_vec())
            .chain([Unpacked {
                fp32_contents: vec![1.0, 2.0],
                fp64_contents: vec![3.0],
            }
            .encode_to_vec()])
            .collect();
        let (mut agreed_ok, mut agreed_err) = (0, 0);
        for wire in crate::fixed::damage::damaged(&wires, 20_000) {
            let theirs = Generated::decode(&wire[..]);
            let ours = InferTensorContents::decode(&wire[..]);
            match (theirs, ours) {
                (Ok(g), Ok(c)) => {
                    let back = generated(&c);
                    assert_eq!(bits(&back), bits(&g), "{wire:?}");
                    assert_eq!(back.bool_contents, g.bool_contents, "{wire:?}");
                    assert_eq!(back.int_contents, g.int_contents, "{wire:?}");
                    assert_eq!(back.int64_contents, g.int64_contents, "{wire:?}");
                    assert_eq!(back.uint_contents, g.uint_contents, "{wire:?}");
                    assert_eq!(back.uint64_contents, g.uint64_contents, "{wire:?}");
                    assert_eq!(back.bytes_contents, g.bytes_contents, "{wire:?}");
                    agreed_ok += 1;
                }
                (Err(_), Err(_)) => agreed_err += 1,
                (theirs, ours) => panic!("{wire:?}: generated {theirs:?}, ours {ours:?}"),
            }
        }
        assert!(
            agreed_ok > 1000 && agreed_err > 1000,
            "{agreed_ok} / {agreed_err}"
        );
    }

    #[test]
    fn damaged_values_are_errors() {
        // fp32, packed, length 5: not a whole number of floats.
        assert!(InferTensorContents::decode(&[0x32, 5, 0, 0, 0, 0, 0][..]).is_err());
        // fp32, packed, length 8 with 4 bytes present.
        assert!(InferTensorContents::decode(&[0x32, 8, 0, 0, 0, 0][..]).is_err());
        // fp64, one unpacked element cut short.
        assert!(InferTensorContents::decode(&[0x39, 0, 0, 0][..]).is_err());
        // fp32 as a varint: a wrong wire type, named as prost names it.
        let e = InferTensorContents::decode(&[0x30, 1][..]).unwrap_err();
        assert!(
            e.to_string()
                .contains("InferTensorContents.fp32_contents: invalid wire type"),
            "{e}"
        );
        // An unknown field is skipped, as generated code does.
        let c = InferTensorContents::decode(&[0x48, 1, 0x35, 0, 0, 0x80, 0x3f][..]).unwrap();
        assert_eq!(c.fp32_contents, vec![1.0]);
    }
}
