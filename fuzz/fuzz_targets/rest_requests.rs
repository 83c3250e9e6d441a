//! Any request to the REST API gets an answer (an error status for bad input),
//! never a panic or an unbounded allocation. The first byte picks the route and the
//! body's framing, the rest is the body (or query): TF Serving predict, classify
//! and regress (JSON tensors, examples), KServe V2 infer as JSON and with the binary
//! extension (its header length from the next two bytes), the simple API as JSON,
//! form and query string, and a multipart upload.
#![no_main]

use std::sync::{Arc, OnceLock};

use ferroserve::api::ServerState;
use ferroserve::manager::Manager;
use ferroserve::settings::Settings;
use http::{header, Method, Request};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct World {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    _repo: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let repo = tempfile::tempdir().unwrap();
        let dir = repo.path().join("iris").join("1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../examples/models/iris_sklearn/1/model.joblib"
            ),
            dir.join("model.joblib"),
        )
        .unwrap();
        let settings = Settings {
            model_repository: repo.path().to_path_buf(),
            inference_threads: 1,
            allow_unauthenticated_management: true,
            max_upload_bytes: 1 << 20,
            ..Settings::default()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let manager = Arc::new(Manager::new(ferroserve::server::backend_options(&settings)));
        let state = Arc::new(ServerState::new(settings, manager));
        state.sources.initial_load();
        let router = {
            let _guard = runtime.enter();
            ferroserve::http::router(state)
        };
        World {
            runtime,
            router,
            _repo: repo,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let world = world();
    let json = "application/json";
    let request = match selector % 9 {
        0 => post("/v1/models/iris:predict", json, rest),
        1 => post("/v1/models/iris:classify", json, rest),
        2 => post("/v1/models/iris/versions/1:regress", json, rest),
        3 => post("/v2/models/iris/infer", json, rest),
        4 => {
            // The binary extension: a JSON header of the given length, then tensors.
            let (len, body) = match rest {
                [a, b, body @ ..] => (u16::from_le_bytes([*a, *b]) as usize, body),
                _ => (0, rest),
            };
            let mut r = post("/v2/models/iris/infer", "application/octet-stream", body);
            r.headers_mut().insert(
                "inference-header-content-length",
                len.to_string().parse().unwrap(),
            );
            r
        }
        5 => post("/predict", json, rest),
        6 => post("/predict/iris", "application/x-www-form-urlencoded", rest),
        7 => {
            let query: String = String::from_utf8_lossy(rest)
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .collect();
            match Request::builder()
                .method(Method::GET)
                .uri(format!("/predict/iris?{query}"))
                .body(axum::body::Body::empty())
            {
                Ok(r) => r,
                Err(_) => return,
            }
        }
        _ => post("/upload_model", "multipart/form-data; boundary=XyZ", rest),
    };
    world.runtime.block_on(async {
        let response = world.router.clone().oneshot(request).await.unwrap();
        assert!(
            response.status().as_u16() < 500 || response.status().as_u16() == 503,
            "{}",
            response.status()
        );
        let _ = axum::body::to_bytes(response.into_body(), 64 << 20).await;
    });
});

fn post(path: &str, content_type: &str, body: &[u8]) -> Request<axum::body::Body> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(axum::body::Body::from(body.to_vec()))
        .unwrap()
}
