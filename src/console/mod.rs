//! The web console (`/console`): server-rendered pages (askama templates compiled
//! into the binary) with a little JavaScript (htmx 4.0.1, uPlot 1.6.32 and
//! `assets/console.js`, all embedded; no CDN, works offline).
//!
//! A thin adapter like `crate::http`: every page reads through the same `api`
//! operations the REST routes call (`api::manage::models_status`,
//! `api::model_metadata`, `api::jobs`), and every change (upload, reload, stop,
//! deploy, delete, predictions) is made by the browser calling the existing REST
//! endpoints, so the console has no write path of its own.
//!
//! Two kinds of route, so that tokens work in a browser, which cannot add an
//! `Authorization` header to a page navigation:
//! * shells (`/console`, `/console/models/{m}`, `/console/jobs`, `/console/jobs/{id}`)
//!   and `/console/assets/*` hold no data and are open (`auth::rest_access`);
//! * fragments (`/console/fragments/*`, HTML pieces htmx swaps in) and
//!   `/console/api/*` (JSON for the charts) hold the data and pass the access layer
//!   like any other route. The page's script sends the token it keeps in
//!   `sessionStorage` with each of them, and asks for one on a 401.
//!
//! Invariant: a shell renders nothing read from the server's state except, when an
//! anonymous caller could see it anyway, whether the model or job exists (for the 404).
//! A shell renders only a name that could be a model's or a job's (a model name is
//! `[A-Za-z0-9._-]`, a job id `[A-Za-z0-9_-]`), anything else is a 404 page whoever
//! asks; and every URL a template builds from data encodes it as one path segment
//! (`urlencode_strict`: `/` too). Together they keep a crafted link
//! (`/console/models/..%2F..%2Fv1%2F...`) from pointing the page's own requests,
//! which carry the token, at another route: the browser would resolve the `../`.
//!
//! Invariant: `console.js` puts a response into the page as HTML only when it is
//! `text/html` from a `/console/fragments/` route; anything else (a JSON answer with
//! text a client wrote, such as the prediction log) is shown as text or not at all.

mod assets;
mod jobs;
pub mod metrics;
mod rows;
mod try_it;

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};

use crate::api::{self, ApiError};
use crate::auth::Access;
use crate::http::{status_code, AppState};
use rows::{time_text, ModelRow};

/// How often the pages refresh their live parts; the charts sample every second.
const REFRESH: &str = "every 2s";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route("/console", get(models_page))
        .route("/console/models/{model}", get(model_page))
        .route("/console/jobs", get(jobs_page))
        .route("/console/jobs/{id}", get(job_page))
        .route("/console/assets/{file}", get(assets::serve))
        .route("/console/fragments/models", get(models_fragment))
        .route("/console/fragments/models/{model}", get(model_fragment))
        .route(
            "/console/fragments/models/{model}/try",
            get(try_it::try_fragment),
        )
        .route("/console/fragments/jobs", get(jobs::jobs_fragment))
        .route("/console/fragments/jobs/{id}", get(jobs::job_fragment))
        .route("/console/api/models/{model}/metrics", get(model_metrics))
}

// ---- rendering ----

/// An HTML answer; a template that fails to render is a 500 page (it never should:
/// the templates are checked at compile time and their values are plain data).
fn html(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(body) => {
            let mut response = (
                status,
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/html; charset=utf-8"),
                    ),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                ],
                body,
            )
                .into_response();
            forbid_framing(response.headers_mut());
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "console template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "the console page failed to render; see the server log",
            )
                .into_response()
        }
    }
}

/// Says that no other site may frame the page: its buttons would be clicked through
/// an invisible frame (clickjacking). Every page for people sends it: the console's
/// and the docs page (`crate::http::openapi`), whose "try it out" sends requests.
pub(crate) fn forbid_framing(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'self'"),
    );
    headers.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
}

/// An error of an `api` operation as a fragment: the status REST would answer,
/// with the message in the page.
fn error_fragment(error: &ApiError) -> Response {
    html(
        status_code(error),
        &ErrorFragment {
            message: error.to_string(),
        },
    )
}

#[derive(Template)]
#[template(path = "error_fragment.html")]
struct ErrorFragment {
    message: String,
}

// ---- shells ----

/// What every page says on a deployed model's worker (`ferroserve worker`, which
/// `Settings::management_server` marks): whose worker it is, and that management
/// goes through the main server, whose URL is the link. The worker refuses every
/// management route, so its pages offer none. This is the server's mode, from
/// the worker's command line, not its state.
struct WorkerNote {
    /// The model this worker serves.
    model: String,
    /// The main server's URL, when known (`--main-server`) and a web address.
    main_server: Option<String>,
}

impl WorkerNote {
    /// `None` on a server that is no deployed model's worker.
    fn of(state: &AppState) -> Option<WorkerNote> {
        let main = state.settings.management_server.as_deref()?;
        let model = state
            .settings
            .single_model
            .as_ref()
            .map_or_else(String::new, |m| m.name.clone());
        let main_server = Some(main.trim_end_matches('/'))
            .filter(|url| url.starts_with("http://") || url.starts_with("https://"))
            .map(str::to_string);
        Some(WorkerNote { model, main_server })
    }
}

#[derive(Template)]
#[template(path = "models.html")]
struct ModelsPage {
    title: String,
    refresh: &'static str,
    worker: Option<WorkerNote>,
}

async fn models_page(State(state): State<AppState>) -> Response {
    html(
        StatusCode::OK,
        &ModelsPage {
            title: "Models".into(),
            refresh: REFRESH,
            worker: WorkerNote::of(&state),
        },
    )
}

#[derive(Template)]
#[template(path = "model.html")]
struct ModelPage {
    title: String,
    model: String,
    refresh: &'static str,
    /// Whether `/deploy` starts a worker process (`--worker-ports`), which the deploy
    /// panel explains: the server's mode, not its data.
    workers: bool,
    /// Set on a deployed model's worker, which offers no management.
    worker: Option<WorkerNote>,
}

#[derive(Template)]
#[template(path = "not_found.html")]
struct NotFoundPage {
    title: String,
    message: String,
    worker: Option<WorkerNote>,
}

/// Whether a caller with no token, from `peer`, may read what `access` guards: then
/// the shell may show what the data would (that a model does not exist).
fn anonymous_may(state: &AppState, access: Access, peer: Option<SocketAddr>) -> bool {
    state.auth.check(access, None, peer).is_ok()
}

async fn model_page(
    State(state): State<AppState>,
    Path(model): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    // No model has such a name, so saying so tells no one anything.
    if !crate::model_config_list::is_valid_model_name(&model) {
        return not_found_page(
            &state,
            format!("no model {model:?}: not a valid model name"),
        );
    }
    let peer = peer.map(|Extension(ConnectInfo(p))| p);
    if anonymous_may(&state, Access::Inference, peer) {
        if let Err(e) = api::manage::model_summary(&state, &model) {
            return html(
                status_code(&e),
                &NotFoundPage {
                    title: "Not found".into(),
                    message: e.to_string(),
                    worker: WorkerNote::of(&state),
                },
            );
        }
    }
    html(
        StatusCode::OK,
        &ModelPage {
            title: model.clone(),
            model,
            refresh: REFRESH,
            workers: state.settings.worker_ports.is_some(),
            worker: WorkerNote::of(&state),
        },
    )
}

/// The 404 page for a name that cannot be a model's or a job's.
fn not_found_page(state: &AppState, message: String) -> Response {
    html(
        StatusCode::NOT_FOUND,
        &NotFoundPage {
            title: "Not found".into(),
            message,
            worker: WorkerNote::of(state),
        },
    )
}

/// Whether `id` could be a job's: the server makes them of hex digits
/// (`jobs::new_job_id`); letters, digits, `-` and `_` up to 64 are let through to
/// the 404 of the job's fragment, anything else (`/`, `.`, `%`) is refused here.
fn is_valid_job_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    title: String,
    refresh: &'static str,
    /// Set on a deployed model's worker, which runs no jobs (they are management).
    worker: Option<WorkerNote>,
}

async fn jobs_page(State(state): State<AppState>) -> Response {
    html(
        StatusCode::OK,
        &JobsPage {
            title: "Jobs".into(),
            refresh: REFRESH,
            worker: WorkerNote::of(&state),
        },
    )
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    title: String,
    job_id: String,
    refresh: &'static str,
    worker: Option<WorkerNote>,
}

async fn job_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    if !is_valid_job_id(&id) {
        return not_found_page(&state, format!("no job {id:?}: not a valid job id"));
    }
    let peer = peer.map(|Extension(ConnectInfo(p))| p);
    if anonymous_may(&state, Access::Management, peer) {
        if let Err(e) = api::jobs::get(&state, &id).await {
            return html(
                status_code(&e),
                &NotFoundPage {
                    title: "Not found".into(),
                    message: e.to_string(),
                    worker: WorkerNote::of(&state),
                },
            );
        }
    }
    html(
        StatusCode::OK,
        &JobPage {
            title: format!("Job {id}"),
            job_id: id,
            refresh: REFRESH,
            worker: WorkerNote::of(&state),
        },
    )
}

// ---- fragments: models ----

#[derive(Template)]
#[template(path = "models_fragment.html")]
struct ModelsFragment {
    models: Vec<ModelRow>,
    /// Whether the models page offers an upload (not on a deployed model's worker).
    uploads: bool,
}

async fn models_fragment(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(p))| p);
    let sees_callers = crate::http::sees_callers(&state, &headers, &uri, peer);
    let workers = state
        .workers
        .get()
        .map(|w| w.statuses())
        .unwrap_or_default();
    let models = api::manage::models_status(&state)
        .into_iter()
        .map(|mut m| {
            if !sees_callers {
                m.hide_callers();
            }
            let worker = workers.get(&m.model);
            let applied = crate::workers::applied_deployment(&state.settings, &m.model);
            ModelRow::from_summary(m, worker, applied)
        })
        .collect();
    let uploads = state.settings.management_server.is_none();
    html(StatusCode::OK, &ModelsFragment { models, uploads })
}

#[derive(Template)]
#[template(path = "model_fragment.html")]
struct ModelFragment {
    m: ModelRow,
}

async fn model_fragment(
    State(state): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(p))| p);
    let worker = state.workers.get().and_then(|w| w.status(&model));
    match api::manage::model_summary(&state, &model) {
        Ok(mut summary) => {
            if !crate::http::sees_callers(&state, &headers, &uri, peer) {
                summary.hide_callers();
            }
            html(
                StatusCode::OK,
                &ModelFragment {
                    m: ModelRow::from_summary(
                        summary,
                        worker.as_ref(),
                        crate::workers::applied_deployment(&state.settings, &model),
                    ),
                },
            )
        }
        Err(e) => error_fragment(&e),
    }
}

// ---- JSON for the charts ----

/// `GET /console/api/models/{m}/metrics`: the model's cumulative figures from the
/// server's own recorders (see [`metrics`]).
async fn model_metrics(State(state): State<AppState>, Path(model): Path<String>) -> Response {
    if let Err(e) = api::manage::model_summary(&state, &model) {
        return crate::http::HttpError(e).into_response();
    }
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let exposition = crate::metrics::render(&state.manager);
    let figures = metrics::model_metrics(&exposition, &model, at_ms);
    let mut response = Json(figures).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::rows::path_segment;
    use super::*;

    /// A crafted link's name (`/console/models/..%2F..%2F..%2Fv1%2F...`, decoded by
    /// the router) stays one path segment in the URLs the page builds: were its `/`
    /// left as they are, the browser would resolve the `../` and the page's own
    /// requests, which carry the token, would go to another route.
    #[test]
    fn urls_in_pages_encode_data_as_one_path_segment() {
        let name = "../../../v1/models/ft/predictions";
        let encoded = "..%2F..%2F..%2Fv1%2Fmodels%2Fft%2Fpredictions";
        let page = ModelPage {
            title: name.into(),
            model: name.into(),
            refresh: REFRESH,
            workers: false,
            worker: None,
        }
        .render()
        .unwrap();
        for url in [
            format!("hx-get=\"/console/fragments/models/{encoded}\""),
            format!("hx-get=\"/console/fragments/models/{encoded}/try\""),
        ] {
            assert!(page.contains(&url), "{url} not in {page}");
        }
        assert!(!page.contains("models/../"), "{page}");

        let page = JobPage {
            title: "Job".into(),
            job_id: "../../v1/jobs".into(),
            refresh: REFRESH,
            worker: None,
        }
        .render()
        .unwrap();
        assert!(
            page.contains("hx-get=\"/console/fragments/jobs/..%2F..%2Fv1%2Fjobs\""),
            "{page}"
        );

        let row = ModelRow {
            name: "a/../b c".into(),
            served: true,
            stopped: false,
            busy: false,
            source: "repository",
            versions: Vec::new(),
            labels: Vec::new(),
            problems: Vec::new(),
            events: Vec::new(),
            deployment: Vec::new(),
            worker: None,
        };
        let list = ModelsFragment {
            models: vec![row],
            uploads: true,
        }
        .render()
        .unwrap();
        assert!(
            list.contains("href=\"/console/models/a%2F..%2Fb%20c\""),
            "{list}"
        );
        assert_eq!(path_segment("a/b?c#d%"), "a%2Fb%3Fc%23d%25");
    }

    /// On a deployed model's worker, the pages say whose worker it is, link the main
    /// server when its URL is known, and offer no management (they offered forms
    /// the worker could only refuse, and said workers were off).
    #[test]
    fn a_workers_pages_offer_no_management() {
        let note = |main_server: Option<&str>| {
            Some(WorkerNote {
                model: "iris".into(),
                main_server: main_server.map(str::to_string),
            })
        };
        let page = |worker| {
            ModelPage {
                title: "iris".into(),
                model: "iris".into(),
                refresh: REFRESH,
                workers: false,
                worker,
            }
            .render()
            .unwrap()
        };
        let linked = page(note(Some("http://main.example:8501")));
        for says in [
            "id=\"worker-note\"",
            "worker process of model <span class=\"mono\">iris</span>",
            "href=\"http://main.example:8501/console/models/iris\"",
        ] {
            assert!(linked.contains(says), "{says} not in {linked}");
        }
        let unlinked = page(note(None));
        for page in [&linked, &unlinked] {
            for offer in ["deploy-form", "data-action=", "Workers are off"] {
                assert!(!page.contains(offer), "{offer} in {page}");
            }
        }
        assert!(!unlinked.contains("main.example"), "{unlinked}");
        let main = page(None);
        assert!(
            main.contains("deploy-form") && !main.contains("worker-note"),
            "{main}"
        );

        let models = |worker| {
            ModelsPage {
                title: "Models".into(),
                refresh: REFRESH,
                worker,
            }
            .render()
            .unwrap()
        };
        assert!(!models(note(None)).contains("upload-form"));
        assert!(models(None).contains("upload-form"));
        let jobs = JobPage {
            title: "Job".into(),
            job_id: "j1".into(),
            refresh: REFRESH,
            worker: note(None),
        }
        .render()
        .unwrap();
        assert!(!jobs.contains("cancel-job"), "{jobs}");
    }

    /// askama's `urlencode` keeps `/`; the templates use `urlencode_strict` only.
    #[test]
    fn no_template_uses_the_filter_that_keeps_slashes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/console/templates");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let file = path.display();
            let lenient = text
                .match_indices("urlencode")
                .filter(|(at, _)| !text[*at..].starts_with("urlencode_strict"))
                .count();
            assert_eq!(lenient, 0, "{file} uses |urlencode");
        }
    }

    #[test]
    fn job_ids_and_model_names_a_shell_renders() {
        for ok in ["0123456789abcdef0123456789abcdef", "nope", "no_such_job"] {
            assert!(is_valid_job_id(ok), "{ok}");
        }
        for bad in ["", "..", "a/b", "a%2Fb", "a.b", "<b>", &"a".repeat(65)] {
            assert!(!is_valid_job_id(bad), "{bad}");
        }
    }
}
