//! gRPC adapters: TF Serving `PredictionService` / `ModelService`, KServe V2
//! `GRPCInferenceService` and `grpc.health.v1.Health`, thin like the REST ones.
//! The services and the server arrive in the following commits; these are the
//! tensor codecs they use.

pub mod tf_tensor;
pub mod v2_tensor;
