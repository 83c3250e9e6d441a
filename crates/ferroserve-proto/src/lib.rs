//! Generated protobuf messages and gRPC services ferroserve serves, one Rust module per
//! protobuf package so that the generated cross-package paths (`super::TensorProto`) resolve.
//! The `.proto` sources are in the repository's `proto/` (see its README).

mod contents;
mod fixed;
mod model_spec;
mod tensor_proto;

/// KServe V2 / Open Inference Protocol (`inference.GRPCInferenceService`).
pub mod inference {
    tonic::include_proto!("inference");

    pub use crate::contents::InferTensorContents;
}

/// TensorFlow core messages (`TensorProto`, `Example`, `SignatureDef`, ...).
pub mod tensorflow {
    tonic::include_proto!("tensorflow");

    pub use crate::tensor_proto::TensorProto;

    /// `tensorflow.error.Code`, used by TF Serving's `StatusProto`.
    pub mod error {
        tonic::include_proto!("tensorflow.error");
    }

    /// TF Serving (`PredictionService`, `ModelService`).
    pub mod serving {
        tonic::include_proto!("tensorflow.serving");

        pub use crate::model_spec::{BothVersionAndLabel, ModelSpec, VersionChoice};

        /// The type URL TF Serving packs `SignatureDefMap` under in
        /// `GetModelMetadataResponse.metadata["signature_def"]`.
        pub const SIGNATURE_DEF_MAP_TYPE_URL: &str =
            "type.googleapis.com/tensorflow.serving.SignatureDefMap";
    }
}

/// ONNX's model format (`onnx-ml.proto`, messages only): the jobs module writes
/// trained models with it.
pub mod onnx {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub use prost;
pub use prost_types;
