// The console's static files, compiled into the binary (no build step, no files to
// install); served with a content hash in the path so browsers may cache them for good.
use super::ConsoleState;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const STYLE: &str = include_str!("static/console.css");
/// Bump the version in the path when console.css changes (it is cached for a day).
pub const STYLE_PATH: &str = "/console/static/console-1.css";

pub fn routes() -> Router<ConsoleState> {
    Router::new().route("/static/console-1.css", get(style))
}

async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        STYLE,
    )
}
