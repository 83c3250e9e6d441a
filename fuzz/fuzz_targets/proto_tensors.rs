//! Any protobuf message a gRPC client sends decodes to tensors or examples, or to an
//! error: TF Serving's TensorProto (typed fields, tensor_content, padding), its
//! Example lists (Classify/Regress input), and KServe's ModelInferRequest inputs
//! (typed contents and raw_input_contents). Never a panic or an unbounded
//! allocation.
#![no_main]

use ferroserve::grpc::tf_tensor::{tensor_from_proto, DecodeLimits};
use ferroserve_proto::inference::ModelInferRequest;
use ferroserve_proto::tensorflow::serving::ClassificationRequest;
use ferroserve_proto::tensorflow::TensorProto;
use libfuzzer_sys::fuzz_target;
use prost::Message;

const LIMITS: DecodeLimits = DecodeLimits {
    max_bytes: 64 << 20,
    max_rows: 65_536,
};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            if let Ok(proto) = TensorProto::decode(rest) {
                let _ = tensor_from_proto("x", proto, LIMITS);
            }
        }
        1 => {
            if let Ok(request) = ClassificationRequest::decode(rest) {
                let _ = ferroserve::grpc::tfs::examples_from_input(request.input.as_ref());
            }
        }
        _ => {
            if let Ok(mut request) = ModelInferRequest::decode(rest) {
                let _ = ferroserve::grpc::kserve::decode_inputs(&mut request);
            }
        }
    }
});
