//! The OpenAPI 3.1 description of the REST API and the routes that serve it:
//! `GET /openapi.json`, `GET /swagger.yaml` (the old service shipped a swagger.yaml)
//! and the docs page `/docs` (Swagger UI, its files compiled into the binary).
//!
//! The description is built from the `#[utoipa::path]` attributes on the handlers
//! (`tfs`, `v2`, `manage`, `simple`, `jobs`, `mod.rs` and this module) plus three
//! things added here, in [`description`], because they follow from tables rather
//! than from one handler:
//! * the spellings one handler serves under several paths ([`ALIASES`]), and TF
//!   Serving's `/versions/{version}` and `/labels/{label}` forms of each model path;
//! * the answers of the access layer (`http::auth`), from `auth::rest_access`, so they
//!   cannot drift from it: 401/403 on every route that is not open, 415 on
//!   management routes, and the optional bearer token;
//! * 413 on every operation that takes a body (the request size limit).
//!
//! Access: these routes pass the same access layer as every route, and
//! `auth::rest_access` classes them like the other read-only routes (model status
//! and metadata): `Inference`, open when no tokens are configured, else a token
//! with the `inference` scope. The description names no model and holds no secret,
//! but one rule for every read-only route is simpler to reason about than an
//! exception; the cost is that with tokens a browser reaches `/docs` only through a
//! proxy that adds the header (making the docs routes `Open` is one line in
//! `auth::rest_access`).
//!
//! Invariant: every route `router()` serves, method by method, is described (the
//! test at the end of this file reads the routers' source, `src/http`,
//! `src/console` and `src/workers`, and checks); the only routes left out are the pages for people:
//! `/docs...` (Swagger UI's own router, merged below), `/console...` and `/`.

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, ObjectBuilder, OpenApi as OpenApiDoc, Ref, RefOr, Required, ResponseBuilder,
    Type,
};
use utoipa::{OpenApi, ToSchema};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::AppState;
use crate::auth::{rest_access, Access};
use crate::settings::Settings;

/// Every error answer of the REST API.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person to read.
    pub error: String,
}

/// `GET /healthz`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Health {
    pub live: bool,
    pub ready: bool,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ferroserve",
        description = "A machine-learning model server: TF Serving REST, KServe V2 \
                       (Open Inference Protocol) REST with the repository extension, \
                       a management API, the simple JSON prediction API, batch jobs \
                       and the metadata store's views. Every error answer is \
                       `{\"error\": \"...\"}`."
    ),
    paths(
        super::tfs::doc::model_status,
        super::tfs::doc::model_metadata,
        super::tfs::doc::predict,
        super::tfs::doc::classify,
        super::tfs::doc::regress,
        super::tfs::doc::history,
        super::tfs::doc::predictions,
        super::v2::server_metadata,
        super::v2::live,
        super::v2::ready,
        super::v2::model_metadata,
        super::v2::model_version_metadata,
        super::v2::model_ready,
        super::v2::model_version_ready,
        super::v2::model_config,
        super::v2::model_version_config,
        super::v2::all_statistics,
        super::v2::model_statistics,
        super::v2::model_version_statistics,
        super::v2::infer,
        super::v2::infer_version,
        super::upload::upload_model,
        super::manage::reload_model,
        super::manage::reload_model_post,
        super::manage::models_status,
        super::manage::deploy,
        super::manage::stop_deployment,
        super::manage::delete_model,
        super::manage::v2_repository::repository_index,
        super::manage::v2_repository::repository_load,
        super::manage::v2_repository::repository_unload,
        super::manage::description,
        super::simple::predict_post,
        super::simple::predict_get,
        super::simple::predict_model_post,
        super::jobs::submit,
        super::jobs::list,
        super::jobs::job,
        super::jobs::cancel,
        super::jobs::events,
        super::jobs::predictall,
        super::jobs::train,
        super::jobs::old_status,
        super::jobs::old_predict,
        super::metrics,
        super::healthz,
        crate::workers::services,
        crate::workers::service,
        crate::workers::scoring::scoring_plan,
        openapi_json,
        swagger_yaml,
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "tfserving", description = "TensorFlow Serving REST API"),
        (name = "v2", description = "KServe V2 / Open Inference Protocol REST API"),
        (name = "management", description = "Upload, reload, deploy, stop, delete; the V2 repository extension"),
        (name = "simple", description = "The simple JSON prediction API of the replaced services"),
        (name = "jobs", description = "Training and batch-scoring jobs, and the old service's job routes"),
        (name = "store", description = "The metadata store's views of a model"),
        (name = "server", description = "Health, metrics and this description"),
        (name = "workers", description = "The registry of isolated deployments' worker processes"),
    )
)]
struct ApiDoc;

/// Paths served by the same handler as a described path: (alias, described path,
/// the methods the alias has). The old service's trailing-slash spellings, and the
/// deploy answer's `service_url` with `/infer`.
const ALIASES: &[(&str, &str, &[&str])] = &[
    ("/predictall/", "/predictall", &["post"]),
    ("/train/", "/train", &["post"]),
    (
        "/predict/{model_id}/infer",
        "/predict/{model_id}",
        &["post"],
    ),
];

/// TF Serving's model paths that also take a version or a label in place of the
/// latest version: `/v1/models/{model}/versions/{version}...` and `/labels/{label}...`.
const TFS_VERSIONED: &[&str] = &[
    "/v1/models/{model}",
    "/v1/models/{model}/metadata",
    "/v1/models/{model}:predict",
    "/v1/models/{model}:classify",
    "/v1/models/{model}:regress",
];

/// The whole description for a server with these settings.
pub fn description(settings: &Settings) -> OpenApiDoc {
    let mut doc = ApiDoc::openapi();
    doc.info.version = crate::api::SERVER_VERSION.to_string();
    let paths = &mut doc.paths.paths;
    for (alias, described, methods) in ALIASES {
        if let Some(item) = paths.get(*described) {
            let item = only_methods(item, methods, alias);
            paths.insert(alias.to_string(), item);
        }
    }
    for path in TFS_VERSIONED {
        let Some(item) = paths.get(*path).cloned() else {
            continue;
        };
        let (model, tail) = path.split_at("/v1/models/{model}".len());
        for (segment, name, what) in [
            (
                "versions",
                "version",
                "A version number (a positive integer)",
            ),
            (
                "labels",
                "label",
                "A version label (model config `version_labels`)",
            ),
        ] {
            let new_path = format!("{model}/{segment}/{{{name}}}{tail}");
            let parameter = ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(what))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String).build()))
                .build();
            let item = with_path_parameter(&item, parameter, &format!("_by_{name}"));
            paths.insert(new_path, item);
        }
    }
    if let Some(alias) = settings.metrics_path.as_deref() {
        if alias != "/metrics" {
            if let Some(item) = paths.get("/metrics") {
                let item = only_methods(item, &["get"], "_alias");
                paths.insert(alias.to_string(), item);
            }
        }
    }
    add_access_answers(&mut doc);
    unique_operation_ids(&mut doc);
    doc
}

/// One handler for several methods (`GET|POST /reload_model`) gets one operation id
/// from its attribute; the description needs one per operation, so the second and
/// later uses get `_<method>`.
fn unique_operation_ids(doc: &mut OpenApiDoc) {
    let mut seen = std::collections::HashSet::new();
    for item in doc.paths.paths.values_mut() {
        for (method, operation) in operations_mut(item) {
            if let Some(id) = operation.as_mut().and_then(|o| o.operation_id.as_mut()) {
                if !seen.insert(id.clone()) {
                    id.push('_');
                    id.push_str(method);
                    seen.insert(id.clone());
                }
            }
        }
    }
}

/// A copy of `item` with only `methods`, its operation ids made unique by `suffix`.
fn only_methods(item: &PathItem, methods: &[&str], suffix: &str) -> PathItem {
    let mut item = item.clone();
    for (method, slot) in operations_mut(&mut item) {
        if !methods.contains(&method) {
            *slot = None;
        }
    }
    rename_operations(&mut item, suffix);
    item
}

fn with_path_parameter(item: &PathItem, parameter: Parameter, suffix: &str) -> PathItem {
    let mut item = item.clone();
    for (_, operation) in operations_mut(&mut item) {
        if let Some(operation) = operation {
            let parameters = operation.parameters.get_or_insert_with(Vec::new);
            let at = parameters
                .iter()
                .position(|p| matches!(p, RefOr::T(p) if p.name == "model"))
                .map_or(0, |i| i + 1);
            parameters.insert(at, RefOr::T(parameter.clone()));
        }
    }
    rename_operations(&mut item, suffix);
    item
}

fn rename_operations(item: &mut PathItem, suffix: &str) {
    let suffix: String = suffix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    for (_, operation) in operations_mut(item) {
        if let Some(operation) = operation {
            if let Some(id) = &mut operation.operation_id {
                id.push_str(&suffix);
            }
        }
    }
}

/// The operations of a path item by lower-case method name.
fn operations_mut(item: &mut PathItem) -> [(&'static str, &mut Option<Operation>); 5] {
    [
        ("get", &mut item.get),
        ("post", &mut item.post),
        ("put", &mut item.put),
        ("delete", &mut item.delete),
        ("patch", &mut item.patch),
    ]
}

fn error_answer(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// Adds what the access layer and the body limit answer, from the same
/// classification `http::auth` uses, and the optional bearer token.
fn add_access_answers(doc: &mut OpenApiDoc) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A token from the tokens file (--auth-tokens). Needed only when \
                     tokens are configured: scope `inference` for predictions and \
                     model status, `management` for management, jobs and the store, \
                     `metrics` for /metrics when metrics_require_token.",
                ))
                .build(),
        ),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        let access = rest_access(path);
        for (method, operation) in operations_mut(item) {
            let Some(operation) = operation else { continue };
            let answers = &mut operation.responses.responses;
            let mut add = |code: &str, description: &str| {
                answers
                    .entry(code.to_string())
                    .or_insert_with(|| error_answer(description).into());
            };
            if operation.request_body.is_some() {
                add(
                    "413",
                    "The body is larger than the server's limit (max_request_bytes, \
                     or max_upload_bytes for uploads)",
                );
            }
            // What `http::body_headers` and `http::head_checks` answer, before any
            // route: for a body, on every route that takes one.
            let management = access == Access::Management;
            let takes_body =
                operation.request_body.is_some() || matches!(method, "post" | "put" | "patch");
            if takes_body || management {
                add(
                    "415",
                    match (management, super::takes_multipart(path)) {
                        (true, true) => {
                            "A management request whose body is neither application/json \
                             nor multipart/form-data, or a body with a Content-Encoding \
                             (bodies are not decompressed)"
                        }
                        (true, false) => {
                            "A management request whose body is not application/json, or \
                             a body with a Content-Encoding (bodies are not decompressed)"
                        }
                        (false, _) => {
                            "A body with a Content-Encoding (bodies are not decompressed)"
                        }
                    },
                );
            }
            if takes_body {
                add(
                    "501",
                    "A Transfer-Encoding with a coding other than chunked",
                );
            }
            add("400", "A malformed request: more than one Host header");
            match access {
                Access::Open => {
                    operation.security = Some(vec![SecurityRequirement::default()]);
                    continue;
                }
                Access::Inference | Access::Metrics | Access::Management => {}
            }
            add(
                "401",
                "Tokens are configured and the request has no valid bearer token",
            );
            if management {
                add(
                    "403",
                    "The token lacks the management scope; without tokens, the \
                     client is not on the server's host; or a browser's cross-site \
                     request",
                );
            } else {
                add("403", "The token lacks the scope this route needs");
            }
            // No token is needed until tokens are configured.
            operation.security = Some(vec![
                SecurityRequirement::default(),
                SecurityRequirement::new("bearer", Vec::<String>::new()),
            ]);
        }
    }
}

/// The description's routes and the docs page.
pub fn routes(settings: &Settings) -> Router<AppState> {
    let doc = description(settings);
    // Rendered once: the description does not change while the server runs.
    let json = bytes::Bytes::from(doc.to_pretty_json().unwrap_or_default());
    let yaml = bytes::Bytes::from(doc.to_yaml().unwrap_or_default());
    let swagger = SwaggerUi::new("/docs").config(
        // Relative to the page (`/docs/`), so that it also works behind a proxy that
        // serves this server under a path prefix.
        Config::new(["../openapi.json"])
            // Swagger UI's default badge sends the description's address to
            // validator.swagger.io: the page works offline and tells no one.
            .validator_url("none")
            .persist_authorization(false)
            .try_it_out_enabled(true),
    );
    // A page for people whose "try it out" sends requests: never framed by another
    // site, as the console's pages are not (the description itself is no page).
    let docs = Router::<AppState>::from(swagger).layer(axum::middleware::map_response(
        |mut response: Response| async move {
            crate::console::forbid_framing(response.headers_mut());
            response
        },
    ));
    Router::new()
        .route("/openapi.json", get(move || openapi_json(json.clone())))
        .route("/swagger.yaml", get(move || swagger_yaml(yaml.clone())))
        .merge(docs)
}

/// This description as JSON.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "server",
    responses((status = 200, description = "The OpenAPI 3.1 description", content_type = "application/json", body = Object))
)]
async fn openapi_json(body: bytes::Bytes) -> Response {
    with_type(body, "application/json")
}

/// This description as YAML (the old service's `swagger.yaml`).
#[utoipa::path(
    get,
    path = "/swagger.yaml",
    tag = "server",
    responses((status = 200, description = "The OpenAPI 3.1 description", content_type = "application/yaml", body = Object))
)]
async fn swagger_yaml(body: bytes::Bytes) -> Response {
    with_type(body, "application/yaml")
}

fn with_type(body: bytes::Bytes, content_type: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        Body::from(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use syn::visit::Visit;

    use super::*;

    /// Pages for people, not API routes: the docs page (`/docs`, `/docs/...`, served by
    /// Swagger UI's router) and the web console (`/console...`, and `/`, which
    /// redirects there). These alone may be left out of the description.
    fn is_page(path: &str) -> bool {
        path == "/"
            || ["/docs", "/console"]
                .iter()
                .any(|p| path == *p || path.starts_with(&format!("{p}/")))
    }

    const METHODS: [&str; 7] = ["get", "post", "put", "delete", "patch", "head", "options"];
    /// The method list of an `any(handler)` route: described by whatever methods
    /// its paths take, at least one.
    const ANY_METHOD: &str = "any";
    /// Functions that take a method router and give it back with layers added.
    const ROUTER_WRAPPERS: [&str; 1] = ["taking_files"];

    /// One `.route(path, method_router)` found in the source.
    #[derive(Debug)]
    struct SourceRoute {
        at: String,
        /// `None` for a path that is not a string literal.
        path: Option<String>,
        methods: Vec<String>,
        /// The method router's text, to recognise the metrics alias.
        handler: String,
    }

    #[derive(Default)]
    struct RouteFinder {
        file: String,
        routes: Vec<SourceRoute>,
        problems: Vec<String>,
    }

    fn string_literal(expr: &syn::Expr) -> Option<String> {
        match expr {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        }
    }

    /// The HTTP methods of a method router expression such as
    /// `get(a).post(b).layer(l)`; an error for a form this test does not know, so
    /// that a new way of adding routes is taught here rather than missed.
    fn methods_of(expr: &syn::Expr, out: &mut Vec<String>) -> Result<(), String> {
        match expr {
            syn::Expr::Paren(p) => methods_of(&p.expr, out),
            syn::Expr::Call(call) => match &*call.func {
                syn::Expr::Path(p)
                    if p.path
                        .segments
                        .last()
                        .is_some_and(|s| METHODS.contains(&s.ident.to_string().as_str())) =>
                {
                    out.push(p.path.segments.last().unwrap().ident.to_string());
                    Ok(())
                }
                // A handler that takes every method and answers those its path does
                // not take itself (TF Serving's catch-all: 405 with that path's
                // `Allow`): described by the methods its paths take.
                syn::Expr::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "any") => {
                    out.push(ANY_METHOD.to_string());
                    Ok(())
                }
                // A function that adds layers to the method router it is given
                // (`http::jobs::taking_files`): the methods of that router.
                syn::Expr::Path(p)
                    if call.args.len() == 1
                        && p.path.segments.last().is_some_and(|s| {
                            ROUTER_WRAPPERS.contains(&s.ident.to_string().as_str())
                        }) =>
                {
                    methods_of(&call.args[0], out)
                }
                other => Err(format!("unknown method router `{}`", quote_tokens(other))),
            },
            syn::Expr::MethodCall(call) => {
                let name = call.method.to_string();
                if METHODS.contains(&name.as_str()) {
                    out.push(name);
                } else if !["layer", "route_layer", "with_state"].contains(&name.as_str()) {
                    return Err(format!("unknown method router call `.{name}(...)`"));
                }
                methods_of(&call.receiver, out)
            }
            other => Err(format!("unknown method router `{}`", quote_tokens(other))),
        }
    }

    /// A syn node's tokens as text, without spaces (`get(metrics)`).
    fn quote_tokens(tokens: &impl quote::ToTokens) -> String {
        tokens
            .to_token_stream()
            .to_string()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect()
    }

    impl<'ast> Visit<'ast> for RouteFinder {
        fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
            let name = call.method.to_string();
            let at = self.file.clone();
            match name.as_str() {
                "route" if call.args.len() == 2 => {
                    let path = string_literal(&call.args[0]);
                    let mut methods = Vec::new();
                    match methods_of(&call.args[1], &mut methods) {
                        Ok(()) => self.routes.push(SourceRoute {
                            at,
                            path,
                            methods,
                            handler: quote_tokens(&call.args[1]),
                        }),
                        Err(e) => self.problems.push(format!("{at}: {e}")),
                    }
                }
                "nest" | "nest_service" | "route_service" => {
                    let path = call.args.first().and_then(string_literal);
                    if !path.as_deref().is_some_and(is_page) {
                        self.problems.push(format!(
                            "{at}: `.{name}(...)` adds routes this test cannot list; \
                             describe them and teach this test, or keep them under /console"
                        ));
                    }
                }
                _ => {}
            }
            syn::visit::visit_expr_method_call(self, call);
        }
    }

    /// Every `.route(...)` in the REST routers' source (`src/http`, `src/console`,
    /// `src/workers`).
    fn source_routes() -> (Vec<SourceRoute>, Vec<String>) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut finder = RouteFinder::default();
        let mut dirs = vec![
            root.join("src/http"),
            root.join("src/console"),
            root.join("src/workers"),
        ];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let file = syn::parse_file(&text)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    finder.file = path.strip_prefix(root).unwrap().display().to_string();
                    finder.visit_file(&file);
                }
            }
        }
        (finder.routes, finder.problems)
    }

    /// `{model}` and `{*rest}` alike as `{}`; a catch-all's path ends there.
    fn normalise(path: &str) -> String {
        let mut out = String::new();
        let mut in_param = false;
        for c in path.chars() {
            match c {
                '{' => {
                    in_param = true;
                    out.push_str("{}");
                }
                '}' => in_param = false,
                _ if in_param => {}
                c => out.push(c),
            }
        }
        out
    }

    fn described(doc: &OpenApiDoc) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (path, item) in &doc.paths.paths {
            let mut item = item.clone();
            for (method, operation) in operations_mut(&mut item) {
                if operation.is_some() {
                    out.entry(normalise(path))
                        .or_default()
                        .insert(method.to_string());
                }
            }
        }
        out
    }

    #[test]
    fn every_route_in_the_router_is_described() {
        let (routes, problems) = source_routes();
        assert!(problems.is_empty(), "{problems:#?}");
        // The source really was read: the routers hold dozens of routes.
        assert!(routes.len() > 30, "only {} routes found", routes.len());
        let doc = description(&Settings::default());
        let described = described(&doc);
        let mut missing = Vec::new();
        for route in &routes {
            let Some(path) = &route.path else {
                // The configured second metrics path (`metrics_path`), described
                // when set: see `the_metrics_alias_is_described`.
                assert_eq!(
                    route.handler, "get(metrics)",
                    "{}: a route whose path is not a literal",
                    route.at
                );
                continue;
            };
            if is_page(path) {
                continue;
            }
            for method in &route.methods {
                let found = if let Some((prefix, _)) = path.split_once("{*") {
                    // A catch-all route (TF Serving's `/v1/models/{*rest}`) parses its
                    // paths itself: each one it accepts is described under the prefix.
                    described.iter().any(|(p, m)| {
                        p.starts_with(&normalise(prefix))
                            && (m.contains(method) || (method == ANY_METHOD && !m.is_empty()))
                    })
                } else {
                    described.get(&normalise(path)).is_some_and(|m| {
                        m.contains(method) || (method == ANY_METHOD && !m.is_empty())
                    })
                };
                if !found {
                    missing.push(format!("{} {path} ({})", method.to_uppercase(), route.at));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "routes with no description: {missing:#?}"
        );
    }

    #[test]
    fn the_tf_serving_paths_are_described_in_each_form() {
        let described = described(&description(&Settings::default()));
        for path in [
            "/v1/models/{}",
            "/v1/models/{}/versions/{}/metadata",
            "/v1/models/{}/labels/{}:predict",
            "/v1/models/{}/versions/{}:classify",
            "/v1/models/{}:regress",
            "/v1/models/{}/history",
            "/v1/models/{}/predictions",
            "/predictall/",
            "/train/",
            "/predict/{}/infer",
        ] {
            assert!(described.contains_key(path), "{path} is not described");
        }
        assert_eq!(
            described["/predict/{}/infer"],
            BTreeSet::from(["post".to_string()])
        );
    }

    #[test]
    fn the_metrics_alias_is_described() {
        let settings = Settings {
            metrics_path: Some("/monitoring/prometheus/metrics".into()),
            ..Settings::default()
        };
        let described = described(&description(&settings));
        assert!(described["/monitoring/prometheus/metrics"].contains("get"));
    }

    #[test]
    fn the_description_is_valid_openapi_3_1() {
        let doc = description(&Settings::default());
        let json: serde_json::Value = serde_json::from_str(&doc.to_json().unwrap()).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        let yaml = doc.to_yaml().unwrap();
        assert!(yaml.starts_with("openapi: 3.1.0"), "{}", &yaml[..40]);
        let mut ids = BTreeSet::new();
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if !METHODS.contains(&method.as_str()) {
                    continue;
                }
                let id = op["operationId"].as_str().unwrap_or_default().to_string();
                assert!(
                    ids.insert(id.clone()),
                    "{method} {path}: operationId {id:?} twice"
                );
                let answers = op["responses"].as_object().unwrap();
                assert!(
                    answers.keys().any(|k| k.starts_with('2')),
                    "{method} {path} has no success answer"
                );
                // Every route but the open health checks can be refused by the access layer.
                let open = matches!(rest_access(path), Access::Open);
                assert_eq!(answers.contains_key("401"), !open, "{method} {path}");
            }
        }
        // Every error answer has the one error body.
        let error = &json["paths"]["/v2/models/{model}/infer"]["post"]["responses"]["404"];
        assert_eq!(
            error["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
    }
}
