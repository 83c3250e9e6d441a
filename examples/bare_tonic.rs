//! Bench-only: the gRPC ceiling on this machine (issue 9). A tonic server with the
//! KServe V2 `GRPCInferenceService` whose `ModelInfer` decodes the request as any
//! server must and answers a fixed reply the size of ferroserve's one-row iris answer.
//! No model, no routing beyond tonic's own, served by tonic's own transport
//! (`Server::builder`) with its defaults, as a plain tonic service is. Every other
//! method answers UNIMPLEMENTED: this program exists only to be measured by
//! `bench/hotpath.sh` beside ferroserve's ModelInfer.
//!
//! `cargo run --release --example bare_tonic -- 127.0.0.1:18301`

use std::net::SocketAddr;

use ferroserve_proto::inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use ferroserve_proto::inference::*;
use tonic::{Request, Response, Status};

struct Bare {
    reply: ModelInferResponse,
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("bare baseline: ModelInfer only"))
}

#[tonic::async_trait]
impl GrpcInferenceService for Bare {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }
    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: true }))
    }
    async fn model_ready(
        &self,
        _: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        unimplemented()
    }
    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        unimplemented()
    }
    async fn model_metadata(
        &self,
        _: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        unimplemented()
    }
    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let request = request.into_inner();
        let mut reply = self.reply.clone();
        reply.model_name = request.model_name;
        Ok(Response::new(reply))
    }
    type ModelStreamInferStream = tonic::codegen::BoxStream<ModelStreamInferResponse>;
    async fn model_stream_infer(
        &self,
        _: Request<tonic::Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        unimplemented()
    }
    async fn model_config(
        &self,
        _: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        unimplemented()
    }
    async fn model_statistics(
        &self,
        _: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        unimplemented()
    }
    async fn repository_index(
        &self,
        _: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        unimplemented()
    }
    async fn repository_model_load(
        &self,
        _: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        unimplemented()
    }
    async fn repository_model_unload(
        &self,
        _: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        unimplemented()
    }
}

/// ferroserve's answer to one iris row on `iris_lr`: a label and three probabilities.
fn iris_reply() -> ModelInferResponse {
    use model_infer_response::InferOutputTensor;
    ModelInferResponse {
        model_name: "iris_lr".into(),
        model_version: "1".into(),
        outputs: vec![
            InferOutputTensor {
                name: "label".into(),
                datatype: "INT64".into(),
                shape: vec![1],
                contents: Some(InferTensorContents {
                    int64_contents: vec![0],
                    ..Default::default()
                }),
                ..Default::default()
            },
            InferOutputTensor {
                name: "probabilities".into(),
                datatype: "FP32".into(),
                shape: vec![1, 3],
                contents: Some(InferTensorContents {
                    fp32_contents: vec![0.979_223_2, 0.020_776_812, 2.698_543_4e-8],
                    ..Default::default()
                }),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18301".into())
        .parse()
        .expect("usage: bare_tonic HOST:PORT");
    eprintln!("bare tonic baseline listening on {addr}");
    tonic::transport::Server::builder()
        .add_service(GrpcInferenceServiceServer::new(Bare {
            reply: iris_reply(),
        }))
        .serve(addr)
        .await?;
    Ok(())
}
