// The editing pages' static files: vendored CodeMirror 5 (static/codemirror/README.md),
// the glue that turns code textareas into editors, and the pages' stylesheet.
use crate::console::ConsoleState;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};

/// The vendored CodeMirror release; its files' URLs carry it, so they are cached for good.
pub const CM_VERSION: &str = "5.65.21";
/// Bump when editor.js or edit.css change (their URLs carry it).
const OWN_VERSION: &str = "1";

const CM_JS: &str = include_str!("../static/codemirror/codemirror.js");
const CM_CSS: &str = include_str!("../static/codemirror/codemirror.css");
const CM_PYTHON: &str = include_str!("../static/codemirror/python.js");
const EDITOR_JS: &str = include_str!("../static/editor.js");
const EDIT_CSS: &str = include_str!("../static/edit.css");

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

pub fn routes() -> Router<ConsoleState> {
    let cm = format!("/static/cm-{CM_VERSION}");
    let own = format!("/static/edit-{OWN_VERSION}");
    Router::new()
        .route(&format!("{cm}/codemirror.js"), get(|| serve(JS, CM_JS)))
        .route(&format!("{cm}/codemirror.css"), get(|| serve(CSS, CM_CSS)))
        .route(&format!("{cm}/python.js"), get(|| serve(JS, CM_PYTHON)))
        .route(&format!("{own}/editor.js"), get(|| serve(JS, EDITOR_JS)))
        .route(&format!("{own}/edit.css"), get(|| serve(CSS, EDIT_CSS)))
}

async fn serve(kind: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, kind),
            // Versioned URLs: a file never changes under its URL.
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
}

/// The stylesheets of the editing pages (put at the top of their body).
pub fn styles() -> Markup {
    html! {
        link rel="stylesheet" href={ "/console/static/cm-" (CM_VERSION) "/codemirror.css" };
        link rel="stylesheet" href={ "/console/static/edit-" (OWN_VERSION) "/edit.css" };
    }
}

/// The editor scripts (put at the end of a page with `textarea.code-editor`s).
pub fn scripts() -> Markup {
    html! {
        script src={ "/console/static/cm-" (CM_VERSION) "/codemirror.js" } {}
        script src={ "/console/static/cm-" (CM_VERSION) "/python.js" } {}
        script src={ "/console/static/edit-" (OWN_VERSION) "/editor.js" } {}
    }
}

/// Only the console's own glue (copy buttons), for pages without an editor.
pub fn glue() -> Markup {
    html! { script src={ "/console/static/edit-" (OWN_VERSION) "/editor.js" } {} }
}
