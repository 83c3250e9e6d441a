//! Scoring jobs for deployed models: the main server's job runner reads a deployed
//! model's [`ScoringPlan`] from its worker and sends the job's batches to the
//! worker's V2 infer, over the supervisor's kept-alive client and with the
//! supervisor's token (a job's submitter was authorised by the main server).
//!
//! Tensors travel in the V2 binary tensor data extension both ways (`raw_tensor`):
//! the worker's model sees the values the job read, and the job writes the values
//! the model gave, bit for bit, as a job scoring in this process would.
//!
//! Also `GET /v1/scoring-plans/{model}`: any server's plan of a model it serves in
//! its own process (a worker's, for its model).

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, Request, StatusCode};
use axum::Json;
use serde_json::{json, Value};

use super::Supervisor;
use crate::api::ApiError;
use crate::http::{AppState, HttpError};
use crate::jobs::ScoringPlan;
use crate::manager::VersionRequest;
use crate::tensor::Tensor;

/// The V2 header that gives the length of the JSON part of a binary body.
const HEADER_LENGTH: &str = "inference-header-content-length";

/// Longest a worker may take to answer one batch (its own request deadline, when
/// it has one, is shorter).
const BATCH_TIMEOUT: Duration = Duration::from_secs(600);

/// Most bytes of a worker's answer to one batch.
const MAX_ANSWER_BYTES: usize = 1 << 30;

impl Supervisor {
    /// The plan of `model`'s version `version` as its worker serves it; `None` when
    /// the model is not deployed in a worker.
    pub async fn scoring_plan(
        &self,
        model: &str,
        version: &VersionRequest,
    ) -> Option<Result<ScoringPlan, ApiError>> {
        let addr = match self.target(model)? {
            Ok(target) => target.addr,
            Err(why) => return Some(Err(ApiError::Unavailable(why.message))),
        };
        let query = match version {
            VersionRequest::Latest => String::new(),
            VersionRequest::Specific(v) => format!("?version={v}"),
            VersionRequest::Label(l) => format!(
                "?label={}",
                form_urlencoded::byte_serialize(l.as_bytes()).collect::<String>()
            ),
        };
        let request = Request::get(format!("http://{addr}/v1/scoring-plans/{model}{query}"))
            .header(header::AUTHORIZATION, self.authorization().clone())
            .body(Body::empty());
        Some(self.call(addr, request).await.and_then(|(_, body)| {
            let value: Value = serde_json::from_slice(&body).map_err(|e| {
                ApiError::Internal(format!("model {model:?}'s worker sent a bad plan: {e}"))
            })?;
            ScoringPlan::from_json(value).map_err(|e| {
                ApiError::Internal(format!("model {model:?}'s worker sent a bad plan: {e}"))
            })
        }))
    }

    /// One batch through `model`'s version `version` in its worker: the `outputs`
    /// asked for (all when empty); `None` when the model is not deployed in a
    /// worker. The worker's refusals keep their kind (a full queue is
    /// `ResourceExhausted`, a worker that is restarting `Unavailable`).
    pub async fn infer(
        &self,
        model: &str,
        version: u64,
        inputs: &[(String, Tensor)],
        outputs: &[String],
    ) -> Option<Result<Vec<(String, Tensor)>, ApiError>> {
        let addr = match self.target(model)? {
            Ok(target) => target.addr,
            Err(why) => return Some(Err(ApiError::Unavailable(why.message))),
        };
        let mut blobs = Vec::new();
        let described: Vec<Value> = inputs
            .iter()
            .map(|(name, tensor)| {
                let start = blobs.len();
                crate::raw_tensor::encode(tensor.data(), &mut blobs);
                json!({
                    "name": name,
                    "datatype": tensor.dtype().v2_name(),
                    "shape": tensor.shape(),
                    "parameters": {"binary_data_size": blobs.len() - start},
                })
            })
            .collect();
        let head = json!({
            "inputs": described,
            "outputs": outputs.iter().map(|o| json!({"name": o})).collect::<Vec<_>>(),
            "parameters": {"binary_data_output": true},
        })
        .to_string();
        let head_length = head.len();
        let mut body = head.into_bytes();
        body.extend_from_slice(&blobs);
        let request = Request::post(format!(
            "http://{addr}/v2/models/{model}/versions/{version}/infer"
        ))
        .header(header::AUTHORIZATION, self.authorization().clone())
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(HEADER_LENGTH, head_length)
        .body(Body::from(body));
        Some(
            self.call(addr, request)
                .await
                .and_then(|(head_length, body)| decode_answer(model, head_length, &body)),
        )
    }

    /// Sends one request to a worker: the answer's JSON-part length (V2 binary
    /// answers) and body when it is a 200, else the worker's error as an
    /// [`ApiError`] of the same kind.
    async fn call(
        &self,
        addr: SocketAddr,
        request: Result<Request<Body>, axum::http::Error>,
    ) -> Result<(Option<usize>, bytes::Bytes), ApiError> {
        let request =
            request.map_err(|e| ApiError::Internal(format!("cannot call the worker: {e}")))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                ApiError::Unavailable(format!(
                    "the model's worker at {addr} did not answer ({e}); it is being \
                     restarted, retry shortly"
                ))
            })?;
            let status = response.status();
            let head_length = response
                .headers()
                .get(HEADER_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
            let body = axum::body::to_bytes(Body::new(response.into_body()), MAX_ANSWER_BYTES)
                .await
                .map_err(|e| {
                    ApiError::Unavailable(format!(
                        "the model's worker at {addr} broke off its answer: {e}"
                    ))
                })?;
            if status == StatusCode::OK {
                return Ok((head_length, body));
            }
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            Err(crate::http::error_of_status(status, message))
        };
        tokio::time::timeout(BATCH_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(ApiError::DeadlineExceeded(format!(
                    "the model's worker at {addr} did not answer within {BATCH_TIMEOUT:?}"
                )))
            })
    }
}

/// The output tensors of a V2 infer answer (binary outputs, or JSON `data`).
fn decode_answer(
    model: &str,
    head_length: Option<usize>,
    body: &[u8],
) -> Result<Vec<(String, Tensor)>, ApiError> {
    /// A V2 answer's outputs have the fields of a request's inputs.
    #[derive(serde::Deserialize)]
    struct Answer {
        outputs: Vec<crate::http::V2TensorBody>,
    }
    let bad = |why: String| ApiError::Internal(format!("model {model:?}'s worker: {why}"));
    let head_length = head_length.unwrap_or(body.len()).min(body.len());
    let (head, mut binary) = body.split_at(head_length);
    let answer: Answer =
        serde_json::from_slice(head).map_err(|e| bad(format!("a bad infer answer: {e}")))?;
    crate::http::decode_v2_tensors(answer.outputs, &mut binary, "output")
        .map_err(|e| bad(e.to_string()))
}

/// Which version `GET /v1/scoring-plans/{model}` is about.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PlanQuery {
    /// A version number (default: the latest)
    version: Option<u64>,
    /// A version label (`stable`, `canary`)
    label: Option<String>,
}

#[utoipa::path(get, path = "/v1/scoring-plans/{model}", tag = "workers",
    params(("model" = String, Path, description = "A model this server serves in its own process"),
        PlanQuery),
    responses(
        (status = 200, description = "How a scoring job lays out named features for the \
            model's version: each input with the features that fill it, the answer's \
            prediction and probabilities outputs, every output, the features' defaults, \
            the class labels. A worker answers it for the main server's scoring jobs", body = Object),
        (status = 400, description = "The model cannot take named rows (no feature names), \
            or both version and label were given", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such model or version here", body = crate::http::openapi::ErrorBody),
        (status = 503, description = "The model is not available now", body = crate::http::openapi::ErrorBody),
    ))]
pub(crate) async fn scoring_plan(
    State(state): State<AppState>,
    Path(model): Path<String>,
    Query(query): Query<PlanQuery>,
) -> Result<Json<Value>, HttpError> {
    let version = match (query.version, query.label) {
        (None, None) => VersionRequest::Latest,
        (Some(v), None) => VersionRequest::Specific(v),
        (None, Some(l)) => VersionRequest::Label(l),
        (Some(_), Some(_)) => {
            return Err(HttpError(ApiError::InvalidArgument(
                "give a version or a label, not both".into(),
            )))
        }
    };
    let handle = state
        .manager
        .resolve(&model, &version)
        .map_err(ApiError::from)?;
    Ok(Json(ScoringPlan::of(&handle)?.to_json()))
}
