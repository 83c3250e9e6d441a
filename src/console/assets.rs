//! The console's static files, embedded in the binary: htmx and uPlot as published
//! on npm (vendored, pinned: see `assets/README.md`), the console's own script and
//! style sheet. They hold no data, so they are served without a token.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// `(file name, content type, bytes)`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "htmx-4.0.1.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/htmx-4.0.1.min.js"),
    ),
    (
        "uPlot-1.6.32.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/uPlot-1.6.32.iife.min.js"),
    ),
    (
        "uPlot-1.6.32.min.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/uPlot-1.6.32.min.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/console.css"),
    ),
    (
        "LICENSE.htmx",
        "text/plain; charset=utf-8",
        include_bytes!("assets/LICENSE.htmx"),
    ),
    (
        "LICENSE.uPlot",
        "text/plain; charset=utf-8",
        include_bytes!("assets/LICENSE.uPlot"),
    ),
];

/// `GET /console/assets/{file}`. The names carry the vendored versions, and the
/// console's own files change only with the binary, so browsers may keep them for
/// an hour.
pub async fn serve(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, ..)| *name == file) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=3600"),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            *bytes,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no console asset named {file:?}"),
        )
            .into_response(),
    }
}
