//! What each route needs ([`Access`]), from its path alone: the table the REST and
//! gRPC adapters consult before [`super::Auth::check`].

use super::Access;

/// What a REST route needs. Unknown routes need `inference`, so a server with
/// tokens does not tell an anonymous client which routes exist.
pub fn rest_access(path: &str) -> Access {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["healthz"] | ["v2", "health", "live" | "ready"] => Access::Open,
        ["v2", "models", _, "ready"] | ["v2", "models", _, "versions", _, "ready"] => Access::Open,
        ["metrics"] => Access::Metrics,
        // The web console's shells and static files hold no data (`crate::console`);
        // its fragments and chart data are read like the status and metrics routes.
        [""] | ["console"] | ["console", "models" | "jobs", _] | ["console", "jobs"] => {
            Access::Open
        }
        ["console", "assets", _] => Access::Open,
        // The API's description and its docs page describe routes, not data, and a
        // browser cannot send a token to load them; calls made from the docs page
        // (Swagger UI's "Authorize") carry the token like any other.
        ["openapi.json"] | ["swagger.yaml"] | ["docs", ..] => Access::Open,
        ["console", "fragments", "jobs", ..] => Access::Management,
        ["console", "api", "models", _, "metrics"] => Access::Metrics,
        ["upload_model"] | ["reload_model"] | ["deploy"] => Access::Management,
        ["stop_deployment", ..] | ["delete_model", ..] => Access::Management,
        ["v2", "repository", "models", _, "load" | "unload"] => Access::Management,
        // Who did what, and what clients sent (the metadata store): however the
        // path is spelled, as the route decodes it (`%68istory`, `m%2Fhistory`).
        ["v1", "models", rest @ ..] if names_store_view(rest) => Access::Management,
        // Jobs read and write the server's data directory and databases.
        ["v1", "jobs", ..] | ["predictall"] | ["train"] | ["training", "status", ..] => {
            Access::Management
        }
        _ => Access::Inference,
    }
}

/// Whether the part of a `/v1/models/` path after it names a model's history or
/// prediction log once percent-decoded, as `http::tfs` reads it: exactly a model's
/// name, then `history` or `predictions` (`/v1/models/{m}/history`), with no verb
/// after a colon. Only that shape is a store view. The same word elsewhere is not:
/// a model named `history` alone (`/v1/models/history`) is that model's status, and
/// a label or version named so (`/v1/models/{m}/labels/history`) is the status of
/// the version it names; both are inference routes. (A version's or a label's
/// `…/history` is no route at all: the router answers 404.)
fn names_store_view(rest: &[&str]) -> bool {
    let decoded = percent_encoding::percent_decode_str(&rest.join("/"))
        .decode_utf8_lossy()
        .into_owned();
    // The router takes what follows the last colon as a verb, unless a `/` follows
    // it; a store view has none (`m/history:predict` is no route).
    if decoded
        .rsplit_once(':')
        .is_some_and(|(_, verb)| !verb.contains('/'))
    {
        return false;
    }
    matches!(
        decoded.split('/').collect::<Vec<_>>().as_slice(),
        [model, "history" | "predictions"] if !model.is_empty()
    )
}

/// What a gRPC method (`/package.Service/Method`) needs.
pub fn grpc_access(path: &str) -> Access {
    match path {
        "/tensorflow.serving.ModelService/HandleReloadConfigRequest"
        | "/inference.GRPCInferenceService/RepositoryModelLoad"
        | "/inference.GRPCInferenceService/RepositoryModelUnload" => Access::Management,
        "/inference.GRPCInferenceService/ServerLive"
        | "/inference.GRPCInferenceService/ServerReady"
        | "/inference.GRPCInferenceService/ModelReady" => Access::Open,
        p if p.starts_with("/grpc.health.v1.Health/") => Access::Open,
        _ => Access::Inference,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_classified() {
        for (path, access) in [
            ("/healthz", Access::Open),
            ("/v2/health/live", Access::Open),
            ("/v2/models/iris/ready", Access::Open),
            ("/v2/models/iris/versions/2/ready", Access::Open),
            ("/metrics", Access::Metrics),
            ("/upload_model", Access::Management),
            ("/reload_model", Access::Management),
            ("/deploy", Access::Management),
            ("/stop_deployment/iris", Access::Management),
            ("/delete_model/iris", Access::Management),
            ("/v2/repository/models/iris/load", Access::Management),
            ("/v2/repository/models/iris/unload", Access::Management),
            ("/v2/repository/index", Access::Inference),
            ("/models/status", Access::Inference),
            ("/v1/models/iris:predict", Access::Inference),
            ("/v2/models/iris/infer", Access::Inference),
            ("/predict", Access::Inference),
            ("/no/such/route", Access::Inference),
            // The store's views, however spelled; a model named like one is a model.
            ("/v1/models/iris/history", Access::Management),
            ("/v1/models/iris/predictions", Access::Management),
            ("/v1/models/iris/%68istory", Access::Management),
            ("/v1/models/iris%2Fpredictions", Access::Management),
            ("/v1/models/history", Access::Inference),
            ("/v1/models/predictions/", Access::Inference),
            ("/v1/models/%68istory", Access::Inference),
            ("/v1/models/history/metadata", Access::Inference),
            ("/v1/models/predictions/history", Access::Management),
            ("/v1/models/history:predict", Access::Inference),
            // A label or version named like a view is the status of what it names.
            ("/v1/models/lab/labels/history", Access::Inference),
            ("/v1/models/lab/labels/predictions", Access::Inference),
            ("/v1/models/lab/labels/%68istory", Access::Inference),
            ("/v1/models/lab/versions/history", Access::Inference),
            ("/v1/models/lab/versions/predictions", Access::Inference),
            ("/v1/models/history/labels/predictions", Access::Inference),
            ("/v1/models/lab/labels/stable/history", Access::Inference),
            ("/v1/models/lab/versions/2/predictions", Access::Inference),
            ("/v1/models/lab/labels/history:predict", Access::Inference),
            ("/v1/models/lab/labels/history/metadata", Access::Inference),
            // Views of models named like a route's words are views still.
            ("/v1/models/labels/history", Access::Management),
            ("/v1/models/versions/predictions", Access::Management),
            ("/v1/models/history/history", Access::Management),
            ("/v1/models/a:b/history", Access::Management),
            ("/v1/models/a%3Ab/predictions", Access::Management),
            ("/v1/models/iris/history/", Access::Management),
        ] {
            assert_eq!(rest_access(path), access, "{path}");
        }
        for (path, access) in [
            (
                "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
                Access::Management,
            ),
            (
                "/tensorflow.serving.ModelService/GetModelStatus",
                Access::Inference,
            ),
            (
                "/tensorflow.serving.PredictionService/Predict",
                Access::Inference,
            ),
            (
                "/inference.GRPCInferenceService/ModelInfer",
                Access::Inference,
            ),
            (
                "/inference.GRPCInferenceService/RepositoryModelLoad",
                Access::Management,
            ),
            ("/inference.GRPCInferenceService/ServerLive", Access::Open),
            ("/grpc.health.v1.Health/Check", Access::Open),
        ] {
            assert_eq!(grpc_access(path), access, "{path}");
        }
    }
}
