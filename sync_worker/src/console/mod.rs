// The web console at /console/ on the admin listener: server-rendered pages where a
// person signs in as a PostgreSQL role and every query runs on a connection as that role.
//
// How it fits together (and how to add a page):
//
// - `router` builds the whole /console/ tree: sign-in and sign-out (signin.rs), the
//   static files (assets.rs), and every page module listed in `pages/mod.rs`. The admin
//   router merges it when the `console` setting is on; the bearer token of the admin API
//   does not apply here, and nothing here reaches another admin route.
// - Sessions (session.rs) live in memory, keyed by a random id carried in a signed,
//   HttpOnly, SameSite=Strict cookie; each holds the person's own `tokio_postgres`
//   connection, closed when the session ends (sign-out, idle or absolute expiry).
// - CSRF (csrf.rs): a middleware refuses every POST whose token is missing or wrong, so
//   no handler can forget it. A form carries the token in a hidden field `csrf`
//   (`layout::csrf_field(&person)`); a multipart form puts it in its action URL
//   (`?csrf=...`); scripts send the `X-CSRF-Token` header.
//
// Adding a page: create `pages/<name>.rs` with `pub fn routes() -> Router<ConsoleState>`
// (paths relative to /console, e.g. `/projects/{name}`), add it to `pages::routes()`,
// and, if it belongs in the nav bar, to `pages::NAV`. A handler takes `person: Person`
// (person.rs) to get the signed-in person: `person.db` (their `tokio_postgres::Client`:
// PostgreSQL decides what they may see and do), `person.role`, `person.kind`
// (sync_user / sync_developer / sync_admin, for hiding what they cannot use) and
// `person.csrf`. Render with `layout::page(&person, title, body)`; show failures with
// `ConsoleError` (error.rs) or, on a form, `pg_error::FormErrors` next to the field.
// Handlers return `Result<Markup-or-Response, ConsoleError>`; a POST that succeeds
// answers with a redirect (303) to the page showing the outcome.
mod assets;
mod csrf;
pub mod error;
pub mod layout;
pub mod pages;
pub mod person;
pub mod pg_error;
mod ratelimit;
mod session;
mod signin;

use crate::shared::Shared;
use axum::response::Redirect;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

pub use error::ConsoleError;
pub use person::Person;

/// Largest request body a console form may send; a larger one gets 413 with a page
/// saying so (e.g. a pasted file far bigger than any task's code).
pub const BODY_LIMIT: usize = 4 << 20;

/// What every console handler can reach.
#[derive(Clone)]
pub struct ConsoleState(Arc<Inner>);

pub struct Inner {
    pub shared: Shared,
    pub sessions: session::Sessions,
    pub limiter: ratelimit::Limiter,
}

impl std::ops::Deref for ConsoleState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The console's routes, all under /console/, for the admin router to merge.
pub fn router(shared: Shared) -> Router {
    let cfg = &shared.cfg;
    let sessions = session::Sessions::new(
        cfg.console_idle_timeout,
        cfg.console_session_lifetime,
        cfg.console_max_sessions,
    );
    sessions.spawn_sweeper();
    let state = ConsoleState(Arc::new(Inner {
        shared,
        sessions,
        limiter: ratelimit::Limiter::default(),
    }));
    let pages = Router::new()
        .route("/", get(|| async { Redirect::permanent("/console/") }))
        .merge(signin::routes())
        .merge(assets::routes())
        .merge(pages::routes())
        .fallback(|| async { ConsoleError::not_found("no such page") });
    // "/console/" is the overview; a nested router's "/" is "/console" without the slash.
    Router::new()
        .route("/console/", get(pages::overview::show))
        .nest("/console", pages)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            csrf::check,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(timing::render_time))
        .with_state(state)
}

mod timing {
    // The Server-Timing header on every console answer: how long the server took, so
    // tests and operators can see a slow page without a browser's help.
    use axum::extract::Request;
    use axum::middleware::Next;
    use axum::response::Response;

    pub async fn render_time(req: Request, next: Next) -> Response {
        let start = std::time::Instant::now();
        let mut resp = next.run(req).await;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        if let Ok(v) = format!("render;dur={ms:.1}").parse() {
            resp.headers_mut().insert("server-timing", v);
        }
        resp
    }
}
