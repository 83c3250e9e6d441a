//! Generates the messages and the tonic servers and clients from the repository's
//! `proto/` with a vendored `protoc`, so the build needs neither a system protoc nor
//! network beyond crates.io.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protos = [
        "kserve/grpc_service.proto",
        "tensorflow_serving/apis/prediction_service.proto",
        "tensorflow_serving/apis/model_service.proto",
    ]
    .map(|p| proto_root.join(p));

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Large tensors' raw bytes as `Bytes`: decoded as a view of tonic's receive buffer
    // instead of a copy of it (the server copies them once more, into the tensor).
    // `TensorProto.tensor_content` is one too, in the hand-written `TensorProto`.
    config.bytes([".inference.ModelInferRequest.raw_input_contents"]);
    tonic_prost_build::configure()
        // Hand-written, wire-identical, so that both members of its oneof can be seen.
        .extern_path(
            ".tensorflow.serving.ModelSpec",
            "crate::model_spec::ModelSpec",
        )
        // Hand-written, wire-identical, so that packed floats decode as blocks.
        .extern_path(
            ".inference.InferTensorContents",
            "crate::contents::InferTensorContents",
        )
        .extern_path(
            ".tensorflow.TensorProto",
            "crate::tensor_proto::TensorProto",
        )
        .build_server(true)
        .build_client(true)
        .compile_with_config(config, &protos, std::slice::from_ref(&proto_root))?;
    // ONNX's model format (messages only), for writing trained models.
    let mut onnx = prost_build::Config::new();
    onnx.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    onnx.compile_protos(
        &[proto_root.join("onnx/onnx-ml.proto")],
        std::slice::from_ref(&proto_root),
    )?;
    // Any change under proto/ regenerates (tonic-prost-build names only the files given).
    println!("cargo:rerun-if-changed={}", proto_root.display());
    Ok(())
}
