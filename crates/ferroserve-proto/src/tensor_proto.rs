//! `tensorflow.TensorProto`, written by hand so that its packed floating-point
//! fields (`float_val`, `double_val`, `scomplex_val`, `dcomplex_val`) decode and
//! encode a chunk of the buffer at a time ([`crate::fixed`]): clients that build a
//! TensorProto value by value (Java's `addAllFloatVal`, Go, hand-built protos) send
//! images that way. Same fields, numbers and wire encoding as the generated type
//! (`proto/tensorflow/core/framework/tensor.proto`); the other fields use prost's own
//! functions, and `tensor_content` is a `Bytes` view of the receive buffer as before.

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, skip_field, DecodeContext, WireType};
use prost::DecodeError;

use crate::fixed::{encode_fixed, encoded_len_fixed, merge_fixed};
use crate::tensorflow::{DataType, ResourceHandleProto, TensorShapeProto, VariantTensorDataProto};

/// A tensor, as in the generated code (field for field).
#[derive(Clone, PartialEq, Default, Debug)]
pub struct TensorProto {
    /// A `tensorflow.DataType` value ([`TensorProto::dtype`]).
    pub dtype: i32,
    pub tensor_shape: Option<TensorShapeProto>,
    pub version_number: i32,
    pub tensor_content: Bytes,
    pub half_val: Vec<i32>,
    pub float_val: Vec<f32>,
    pub double_val: Vec<f64>,
    pub int_val: Vec<i32>,
    pub string_val: Vec<Vec<u8>>,
    pub scomplex_val: Vec<f32>,
    pub int64_val: Vec<i64>,
    pub bool_val: Vec<bool>,
    pub dcomplex_val: Vec<f64>,
    pub resource_handle_val: Vec<ResourceHandleProto>,
    pub variant_val: Vec<VariantTensorDataProto>,
    pub uint32_val: Vec<u32>,
    pub uint64_val: Vec<u64>,
}

impl TensorProto {
    /// The dtype, or the default (`DT_INVALID`) for a value this build does not know,
    /// as the generated accessor answers.
    pub fn dtype(&self) -> DataType {
        DataType::try_from(self.dtype).unwrap_or_default()
    }

    pub fn set_dtype(&mut self, value: DataType) {
        self.dtype = value as i32;
    }
}

impl prost::Message for TensorProto {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        // In tag order, as prost's derive writes them.
        if self.dtype != 0 {
            encoding::int32::encode(1, &self.dtype, buf);
        }
        if let Some(shape) = &self.tensor_shape {
            encoding::message::encode(2, shape, buf);
        }
        if self.version_number != 0 {
            encoding::int32::encode(3, &self.version_number, buf);
        }
        if !self.tensor_content.is_empty() {
            encoding::bytes::encode(4, &self.tensor_content, buf);
        }
        encode_fixed(5, &self.float_val, buf);
        encode_fixed(6, &self.double_val, buf);
        encoding::int32::encode_packed(7, &self.int_val, buf);
        encoding::bytes::encode_repeated(8, &self.string_val, buf);
        encode_fixed(9, &self.scomplex_val, buf);
        encoding::int64::encode_packed(10, &self.int64_val, buf);
        encoding::bool::encode_packed(11, &self.bool_val, buf);
        encode_fixed(12, &self.dcomplex_val, buf);
        encoding::int32::encode_packed(13, &self.half_val, buf);
        encoding::message::encode_repeated(14, &self.resource_handle_val, buf);
        encoding::message::encode_repeated(15, &self.variant_val, buf);
        encoding::uint32::encode_packed(16, &self.uint32_val, buf);
        encoding::uint64::encode_packed(17, &self.uint64_val, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let (field, merged) = match tag {
            1 => (
                "dtype",
                encoding::int32::merge(wire_type, &mut self.dtype, buf, ctx),
            ),
            2 => (
                "tensor_shape",
                encoding::message::merge(
                    wire_type,
                    self.tensor_shape.get_or_insert_with(Default::default),
                    buf,
                    ctx,
                ),
            ),
            3 => (
                "version_number",
                encoding::int32::merge(wire_type, &mut self.version_number, buf, ctx),
            ),
            4 => (
                "tensor_content",
                encoding::bytes::merge(wire_type, &mut self.tensor_content, buf, ctx),
            ),
            5 => (
                "float_val",
                merge_fixed(wire_type, &mut self.float_val, buf, ctx),
            ),
            6 => (
                "double_val",
                merge_fixed(wire_type, &mut self.double_val, buf, ctx),
            ),
            7 => (
                "int_val",
                encoding::int32::merge_repeated(wire_type, &mut self.int_val, buf, ctx),
            ),
            8 => (
                "string_val",
                encoding::bytes::merge_repeated(wire_type, &mut self.string_val, buf, ctx),
            ),
            9 => (
                "scomplex_val",
                merge_fixed(wire_type, &mut self.scomplex_val, buf, ctx),
            ),
            10 => (
                "int64_val",
                encoding::int64::merge_repeated(wire_type, &mut self.int64_val, buf, ctx),
            ),
            11 => (
                "bool_val",
                encoding::bool::merge_repeated(wire_type, &mut self.bool_val, buf, ctx),
            ),
            12 => (
                "dcomplex_val",
                merge_fixed(wire_type, &mut self.dcomplex_val, buf, ctx),
            ),
            13 => (
                "half_val",
                encoding::int32::merge_repeated(wire_type, &mut self.half_val, buf, ctx),
            ),
            14 => (
                "resource_handle_val",
                encoding::message::merge_repeated(
                    wire_type,
                    &mut self.resource_handle_val,
                    buf,
                    ctx,
                ),
            ),
            15 => (
                "variant_val",
                encoding::message::merge_repeated(wire_type, &mut self.variant_val, buf, ctx),
            ),
            16 => (
                "uint32_val",
                encoding::uint32::merge_repeated(wire_type, &mut self.uint32_val, buf, ctx),
            ),
            17 => (
                "uint64_val",
                encoding::uint64::merge_repeated(wire_type, &mut self.uint64_val, buf, ctx),
            ),
            _ => return skip_field(wire_type, tag, buf, ctx),
        };
        merged.map_err(|mut e| {
            e.push("TensorProto", field);
            e
        })
    }

    fn encoded_len(&self) -> usize {
        (if self.dtype != 0 {
            encoding::int32::encoded_len(1, &self.dtype)
        } else {
            0
        }) + self
            .tensor_shape
            .as_ref()
            .map_or(0, |shape| encoding::message::encoded_len(2, shape))
            + (if self.version_number != 0 {
                encoding::int32::encoded_len(3, &self.version_number)
            } else {
                0
            })
            + (if self.tensor_content.is_empty() {
                0
            } else {
                encoding::bytes::encoded_len(4, &self.tensor_content)
            })
            + encoded_len_fixed(5, &self.float_val)
            + encoded_len_fixed(6, &self.double_val)
            + encoding::int32::encoded_len_packed(7, &self.int_val)
            + encoding::bytes::encoded_len_repeated(8, &self.string_val)
            + encoded_len_fixed(9, &self.scomplex_val)
            + encoding::int64::encoded_len_packed(10, &self.int64_val)
            + encoding::bool::encoded_len_packed(11, &self.bool_val)
            + encoded_len_fixed(12, &self.dcomplex_val)
            + encoding::int32::encoded_len_packed(13, &self.half_val)
            + encoding::message::encoded_len_repeated(14, &self.resource_handle_val)
            + encoding::message::encoded_len_repeated(15, &self.variant_val)
            + encoding::uint32::encoded_len_packed(16, &self.uint32_val)
            + encoding::uint64::encoded_len_packed(17, &self.uint64_val)
    }

    fn clear(&mut self) {
        *self = TensorProto::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensorflow::tensor_shape_proto::Dim;
    use prost::Message;

    /// The generated type, for comparison: the same message as prost derives it.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(enumeration = "DataType", tag = "1")]
        dtype: i32,
        #[prost(message, optional, tag = "2")]
        tensor_shape: Option<TensorShapeProto>,
        #[prost(int32, tag = "3")]
        version_number: i32,
        #[prost(bytes = "bytes", tag = "4")]
        tensor_content: Bytes,
        #[prost(int32, repeated, tag = "13")]
        half_val: Vec<i32>,
        #[prost(float, repeated, tag = "5")]
        float_val: Vec<f32>,
        #[prost(double, repeated, tag = "6")]
        double_val: Vec<f64>,
        #[prost(int32, repeated, tag = "7")]
        int_val: Vec<i32>,
        #[prost(bytes = "vec", repeated, tag = "8")]
        string_val: Vec<Vec<u8>>,
        #[prost(float, repeated, tag = "9")]
        scomplex_val: Vec<f32>,
        #[prost(int64, repeated, tag = "10")]
        int64_val: Vec<i64>,
        #[prost(bool, repeated, tag = "11")]
        bool_val: Vec<bool>,
        #[prost(double, repeated, tag = "12")]
        dcomplex_val: Vec<f64>,
        #[prost(message, repeated, tag = "14")]
        resource_handle_val: Vec<ResourceHandleProto>,
        #[prost(message, repeated, tag = "15")]
        variant_val: Vec<VariantTensorDataProto>,
        #[prost(uint32, repeated, tag = "16")]
        uint32_val: Vec<u32>,
        #[prost(uint64, repeated, tag = "17")]
        uint64_val: Vec<u64>,
    }

    fn sample(n: usize) -> Generated {
        let f = |i: usize| (i as f64 * 0.37 - 11.0).powi(3);
        Generated {
            dtype: DataType::DtFloat as i32,
            tensor_shape: Some(TensorShapeProto {
                dim: vec![Dim {
                    size: n as i64,
                    name: "n".into(),
                }],
                unknown_rank: false,
            }),
            version_number: 3,
            tensor_content: Bytes::from(vec![7u8; n]),
            half_val: (0..n).map(|i| i as i32 * 3).collect(),
            float_val: (0..n)
                .map(|i| f(i) as f32)
                .chain([f32::NAN, -0.0])
                .collect(),
            double_val: (0..n).map(f).collect(),
            int_val: (0..n).map(|i| -(i as i32)).collect(),
            string_val: (0..n.min(4)).map(|i| vec![b'a'; i]).collect(),
            scomplex_val: (0..2 * n).map(|i| i as f32 / 3.0).collect(),
            int64_val: (0..n).map(|i| i as i64 * -1_000_000_007).collect(),
            bool_val: (0..n).map(|i| i % 2 == 0).collect(),
            dcomplex_val: (0..2 * n).map(|i| f(i) / 7.0).collect(),
            resource_handle_val: (0..n.min(2))
                .map(|i| ResourceHandleProto {
                    device: format!("cpu:{i}"),
                    ..Default::default()
                })
                .collect(),
            variant_val: (0..n.min(1))
                .map(|_| VariantTensorDataProto {
                    type_name: "t".into(),
                    metadata: vec![1, 2],
                    tensors: vec![crate::tensorflow::TensorProto {
                        float_val: vec![1.5],
                        ..Default::default()
                    }],
                })
                .collect(),
            uint32_val: (0..n).map(|i| i as u32 * 7919).collect(),
            uint64_val: (0..n).map(|i| u64::MAX - i as u64).collect(),
        }
    }

    /// The fields of ours that differ from the generated type's (floats compared
    /// as bits).
    fn differ(ours: &TensorProto, theirs: &Generated) -> Vec<&'static str> {
        let f32s = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let f64s = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let wire =
            |v: &[VariantTensorDataProto]| v.iter().map(|m| m.encode_to_vec()).collect::<Vec<_>>();
        [
            ("dtype", ours.dtype == theirs.dtype),
            ("tensor_shape", ours.tensor_shape == theirs.tensor_shape),
            (
                "version_number",
                ours.version_number == theirs.version_number,
            ),
            (
                "tensor_content",
                ours.tensor_content == theirs.tensor_content,
            ),
            ("half_val", ours.half_val == theirs.half_val),
            (
                "float_val",
                f32s(&ours.float_val) == f32s(&theirs.float_val),
            ),
            (
                "double_val",
                f64s(&ours.double_val) == f64s(&theirs.double_val),
            ),
            ("int_val", ours.int_val == theirs.int_val),
            ("string_val", ours.string_val == theirs.string_val),
            (
                "scomplex_val",
                f32s(&ours.scomplex_val) == f32s(&theirs.scomplex_val),
            ),
            ("int64_val", ours.int64_val == theirs.int64_val),
            ("bool_val", ours.bool_val == theirs.bool_val),
            (
                "dcomplex_val",
                f64s(&ours.dcomplex_val) == f64s(&theirs.dcomplex_val),
            ),
            (
                "resource_handle_val",
                ours.resource_handle_val == theirs.resource_handle_val,
            ),
            // By their encoding: a NaN inside is not equal to itself.
            (
                "variant_val",
                wire(&ours.variant_val) == wire(&theirs.variant_val),
            ),
            ("uint32_val", ours.uint32_val == theirs.uint32_val),
            ("uint64_val", ours.uint64_val == theirs.uint64_val),
        ]
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(name, _)| name)
        .collect()
    }

    #[test]
    fn wire_encoding_is_the_generated_ones() {
        for n in [0, 1, 2, 17, 500] {
            let g = sample(n);
            let wire = g.encode_to_vec();
            let t = TensorProto::decode(&wire[..]).unwrap();
            assert_eq!(differ(&t, &g), Vec::<&str>::new(), "n = {n}");
            assert_eq!(t.encode_to_vec(), wire, "n = {n}");
            assert_eq!(t.encoded_len(), wire.len());
        }
        let empty = TensorProto::default();
        assert!(empty.encode_to_vec().is_empty());
        assert_eq!(empty.dtype(), DataType::DtInvalid);
        let mut t = TensorProto::default();
        t.set_dtype(DataType::DtDouble);
        assert_eq!(t.dtype(), DataType::DtDouble);
        t.dtype = 12345;
        assert_eq!(t.dtype(), DataType::DtInvalid);
    }

    /// Damaged encodings decode exactly as the generated type decodes them: the
    /// same values, or an error for both.
    #[test]
    fn damaged_encodings_decode_as_generated_code_does() {
        let wires: Vec<Vec<u8>> = [0, 1, 3, 20]
            .iter()
            .map(|&n| sample(n).encode_to_vec())
            .collect();
        let (mut agreed_ok, mut agreed_err) = (0, 0);
        for wire in crate::fixed::damage::damaged(&wires, 20_000) {
            match (Generated::decode(&wire[..]), TensorProto::decode(&wire[..])) {
                (Ok(g), Ok(t)) => {
                    assert_eq!(differ(&t, &g), Vec::<&str>::new(), "{wire:?}");
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

    /// TensorProto's fixed-width fields unpacked: one key per element, as a parser
    /// must accept (and as some old writers send them).
    #[derive(Clone, PartialEq, prost::Message)]
    struct Unpacked {
        #[prost(float, repeated, packed = "false", tag = "5")]
        float_val: Vec<f32>,
        #[prost(double, repeated, packed = "false", tag = "6")]
        double_val: Vec<f64>,
        #[prost(float, repeated, packed = "false", tag = "9")]
        scomplex_val: Vec<f32>,
        #[prost(double, repeated, packed = "false", tag = "12")]
        dcomplex_val: Vec<f64>,
    }

    #[test]
    fn unpacked_elements_are_read_and_append_to_packed_ones() {
        let u = Unpacked {
            float_val: vec![1.5, -2.0, f32::MIN_POSITIVE],
            double_val: vec![1e300, -0.5],
            scomplex_val: vec![0.25, 4.0],
            dcomplex_val: vec![-1e-300, 2.0],
        };
        let t = TensorProto::decode(&u.encode_to_vec()[..]).unwrap();
        assert_eq!(t.float_val, u.float_val);
        assert_eq!(t.double_val, u.double_val);
        assert_eq!(t.scomplex_val, u.scomplex_val);
        assert_eq!(t.dcomplex_val, u.dcomplex_val);
        // Packed, then unpacked, then packed again: one list, in wire order.
        let mut wire = sample(2).encode_to_vec();
        wire.extend(u.encode_to_vec());
        wire.extend(sample(1).encode_to_vec());
        let (g, t) = (
            Generated::decode(&wire[..]).unwrap(),
            TensorProto::decode(&wire[..]).unwrap(),
        );
        assert_eq!(differ(&t, &g), Vec::<&str>::new());
        assert_eq!(g.float_val.len(), 4 + 3 + 3);
    }

    #[test]
    fn negative_varints_encode_as_generated_code_does() {
        let g = Generated {
            dtype: -1,
            version_number: i32::MIN,
            int_val: vec![-1, i32::MIN],
            half_val: vec![-7],
            ..Default::default()
        };
        let wire = g.encode_to_vec();
        let t = TensorProto::decode(&wire[..]).unwrap();
        assert_eq!(differ(&t, &g), Vec::<&str>::new());
        assert_eq!((t.dtype, t.dtype()), (-1, DataType::DtInvalid));
        assert_eq!(t.encode_to_vec(), wire);
        assert_eq!(t.encoded_len(), wire.len());
    }

    #[test]
    fn elements_split_between_chunks_decode_the_same() {
        let g = sample(300);
        let wire = g.encode_to_vec();
        for piece in [1, 3, 5, 7, 64] {
            let mut buf = crate::fixed::damage::Pieces::of(&wire, piece);
            let t = TensorProto::decode(&mut buf).unwrap();
            assert_eq!(differ(&t, &g), Vec::<&str>::new(), "pieces of {piece}");
        }
    }
}
