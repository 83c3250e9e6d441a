//! The few TensorFlow protobuf messages the backend reads or writes, declared by hand
//! with prost's derive (field numbers from `tensorflow/core/protobuf/meta_graph.proto`,
//! `config.proto` and `framework/tensor_shape.proto`). prost skips every field not
//! declared, so these decode the full messages TensorFlow gives.
//!
//! They are not taken from `ferroserve-proto`, whose generated gRPC services bring
//! tonic and tokio; this crate stays free of them for the Python package.

use std::collections::HashMap;

/// `tensorflow.MetaGraphDef`: only its SignatureDefs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetaGraphDef {
    #[prost(map = "string, message", tag = "5")]
    pub signature_def: HashMap<String, SignatureDef>,
}

/// `tensorflow.SignatureDef`, without its `defaults`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SignatureDef {
    #[prost(map = "string, message", tag = "1")]
    pub inputs: HashMap<String, TensorInfo>,
    #[prost(map = "string, message", tag = "2")]
    pub outputs: HashMap<String, TensorInfo>,
    #[prost(string, tag = "3")]
    pub method_name: String,
}

/// `tensorflow.TensorInfo`. Of its `encoding` only a dense tensor's `name` is
/// declared: a sparse or composite tensor decodes with no encoding, which the
/// backend refuses as such.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorInfo {
    #[prost(oneof = "tensor_info::Encoding", tags = "1")]
    pub encoding: Option<tensor_info::Encoding>,
    #[prost(int32, tag = "2")]
    pub dtype: i32,
    #[prost(message, optional, tag = "3")]
    pub tensor_shape: Option<TensorShapeProto>,
}

pub mod tensor_info {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Encoding {
        /// The graph tensor, `op:index`.
        #[prost(string, tag = "1")]
        Name(String),
    }
}

/// `tensorflow.TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<Dim>,
    #[prost(bool, tag = "3")]
    pub unknown_rank: bool,
}

/// `tensorflow.TensorShapeProto.Dim`: -1 for a dimension of any size.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dim {
    #[prost(int64, tag = "1")]
    pub size: i64,
}

/// `tensorflow.ConfigProto`: the fields the backend sets.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConfigProto {
    #[prost(int32, tag = "2")]
    pub intra_op_parallelism_threads: i32,
    #[prost(int32, tag = "5")]
    pub inter_op_parallelism_threads: i32,
    /// True: the session runs its graph on an inter-op pool of its own, of
    /// `inter_op_parallelism_threads` threads; false: on the process-wide one, which
    /// the first session created sized and every such session shares.
    #[prost(bool, tag = "9")]
    pub use_per_session_threads: bool,
}

/// `tensorflow.DataType`'s name for a code (`DT_HALF`), for messages about dtypes
/// the backend does not take; the number itself for one not listed.
pub fn dtype_name(code: i32) -> String {
    const NAMES: [(i32, &str); 26] = [
        (0, "DT_INVALID"),
        (1, "DT_FLOAT"),
        (2, "DT_DOUBLE"),
        (3, "DT_INT32"),
        (4, "DT_UINT8"),
        (5, "DT_INT16"),
        (6, "DT_INT8"),
        (7, "DT_STRING"),
        (8, "DT_COMPLEX64"),
        (9, "DT_INT64"),
        (10, "DT_BOOL"),
        (11, "DT_QINT8"),
        (12, "DT_QUINT8"),
        (13, "DT_QINT32"),
        (14, "DT_BFLOAT16"),
        (15, "DT_QINT16"),
        (16, "DT_QUINT16"),
        (17, "DT_UINT16"),
        (18, "DT_COMPLEX128"),
        (19, "DT_HALF"),
        (20, "DT_RESOURCE"),
        (21, "DT_VARIANT"),
        (22, "DT_UINT32"),
        (23, "DT_UINT64"),
        (24, "DT_FLOAT8_E5M2"),
        (25, "DT_FLOAT8_E4M3FN"),
    ];
    NAMES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, name)| name.to_string())
        .unwrap_or_else(|| code.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn a_sparse_tensor_info_decodes_with_no_encoding_and_a_dense_one_with_its_name() {
        // coo_sparse (field 4) is not declared: skipped, so no encoding.
        let sparse = [0x22, 0x00, 0x10, 0x01];
        let info = TensorInfo::decode(&sparse[..]).unwrap();
        assert_eq!((info.encoding, info.dtype), (None, 1));
        let dense = TensorInfo {
            encoding: Some(tensor_info::Encoding::Name("x:0".into())),
            dtype: 19,
            tensor_shape: Some(TensorShapeProto {
                dim: vec![Dim { size: -1 }, Dim { size: 3 }],
                unknown_rank: false,
            }),
        };
        let back = TensorInfo::decode(dense.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, dense);
        assert_eq!(dtype_name(back.dtype), "DT_HALF");
        assert_eq!(dtype_name(99), "99");
    }
}
