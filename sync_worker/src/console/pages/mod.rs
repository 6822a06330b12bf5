// The console's pages: each module exposes `routes()` (paths relative to /console) and
// is listed here once; `NAV` is the nav bar. See the header of console/mod.rs.
pub mod job;
pub mod jobs;
pub mod links;
pub mod logs;
pub mod overview;

// The editing pages (projects, tasks, triggers) and what they share.
mod check;
mod editor_assets;
mod forms;
mod project_edit;
mod project_values;
mod projects;
mod tasks;
mod trigger_run;
mod triggers;

use super::ConsoleState;
use axum::Router;

/// The nav bar: (path, label), in order.
pub const NAV: &[(&str, &str)] = &[
    ("/console/", "Overview"),
    ("/console/projects", "Projects"),
    ("/console/jobs", "Jobs"),
    ("/console/logs", "Logs"),
    ("/console/links", "Links"),
];

/// Every page's routes.
pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .merge(overview::routes())
        .merge(jobs::routes())
        .merge(logs::routes())
        .merge(links::routes())
        .merge(projects::routes())
        .merge(project_edit::routes())
        .merge(project_values::routes())
        .merge(tasks::routes())
        .merge(triggers::routes())
        .merge(trigger_run::routes())
        .merge(editor_assets::routes())
}
