//! The dashboard's files, compiled into the binary: `stratus serve` needs nothing outside it
//! and the page fetches nothing from the internet. The world outline is Natural Earth's
//! 1:110m land (public domain) from the `world-atlas` npm package (ISC), projected by
//! `tools/world-map.mjs`; see `ui/LICENSES.md`.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");
const WORLD: &str = include_str!("../ui/world.svgpath");

fn file(kind: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// `GET /`: the single page.
pub async fn index() -> impl IntoResponse {
    file("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/app.js`.
pub async fn app_js() -> impl IntoResponse {
    file("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /ui/app.css`.
pub async fn app_css() -> impl IntoResponse {
    file("text/css; charset=utf-8", APP_CSS)
}

/// `GET /ui/world.svgpath`: the land outline as one SVG path, 1000 × 500 equirectangular.
pub async fn world() -> impl IntoResponse {
    file("text/plain; charset=utf-8", WORLD)
}
