// The jobs list: filters (project, task, trigger, state, created between) and keyset
// pages by job id, newest first; each query walks an index, never the whole table.
use crate::console::layout::{self, state_badge, time, time_opt};
use crate::console::pg_error::FormErrors;
use crate::console::{ConsoleError, ConsoleState, Person};
use axum::extract::Query;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/jobs", get(list))
        .route("/jobs/{id}", get(super::job::show))
        .route("/jobs/{id}/retry", axum::routing::post(super::job::retry))
        .route("/jobs/{id}/cancel", axum::routing::post(super::job::cancel))
}

const PAGE: i64 = 50;

pub const STATES: [&str; 5] = ["pending", "running", "done", "failed", "cancelled"];

/// The filters, as the form sends them (empty = any).
#[derive(Deserialize, Default, Clone)]
pub struct Filters {
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub task: String,
    #[serde(default)]
    pub trigger: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub until: String,
    /// Keyset: jobs older than this id (the next page) ...
    pub before: Option<i64>,
    /// ... or newer than this one (the previous page).
    pub after: Option<i64>,
}

fn opt(s: &str) -> Option<&str> {
    Some(s.trim()).filter(|s| !s.is_empty())
}

// Times are cast by PostgreSQL, which says what it cannot read (shown at the field). The
// project is looked up first: joined by name, the planner cannot tell how many jobs it
// has and may sort them all instead of walking the id index.
const WHERE: &str = concat!(
    "
FROM sync.job j
JOIN sync.project p ON p.id = j.project_id
LEFT JOIN sync.task t ON t.id = j.task_id
WHERE ($1::text IS NULL OR j.project_id = (SELECT id FROM sync.project WHERE name = $1))
  AND ($2::text IS NULL OR t.name = $2)
  AND ($3::text IS NULL OR j.trigger_name = $3)
  AND ",
    crate::job_state::job_state_filter!("$4"),
    "
  AND ($5::text IS NULL OR j.created_at >= $5::text::timestamptz)
  AND ($6::text IS NULL OR j.created_at < $6::text::timestamptz)
  AND ($7::bigint IS NULL OR j.id < $7)
  AND ($8::bigint IS NULL OR j.id > $8)"
);

const COLUMNS: &str = "SELECT j.id, p.name, t.name, j.trigger_kind, j.trigger_name, j.handler,
       sync.job_state(j.state, j.id), j.attempts, j.created_at, j.finished_at,
       left(j.error, 160)";

async fn list(person: Person, Query(f): Query<Filters>) -> Result<Markup, ConsoleError> {
    let newer = f.after.is_some() && f.before.is_none();
    let sql = format!(
        "{COLUMNS} {WHERE} ORDER BY j.id {} LIMIT {}",
        if newer { "ASC" } else { "DESC" },
        PAGE + 1
    );
    let (project, task, trigger, state, since, until) = (
        opt(&f.project),
        opt(&f.task),
        opt(&f.trigger),
        opt(&f.state),
        opt(&f.since),
        opt(&f.until),
    );
    let rows = person
        .db
        .query(
            &sql,
            &[
                &project, &task, &trigger, &state, &since, &until, &f.before, &f.after,
            ],
        )
        .await;
    let (mut rows, errors) = match rows {
        Ok(rows) => (rows, FormErrors::default()),
        Err(e) if e.as_db_error().is_some() => {
            let fields: [(&'static str, &[&str]); 2] = [
                ("since", &[f.since.trim()][..]),
                ("until", &[f.until.trim()][..]),
            ];
            (vec![], FormErrors::from_pg(&e, &fields))
        }
        Err(e) => return Err(e.into()),
    };
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    if newer {
        rows.reverse();
    }
    let projects = person
        .db
        .query("SELECT name FROM sync.project ORDER BY name", &[])
        .await?;
    let projects: Vec<String> = projects.iter().map(|r| r.get(0)).collect();
    let first = rows.first().map(|r| r.get::<_, i64>(0));
    let last = rows.last().map(|r| r.get::<_, i64>(0));
    // Older pages exist when this one is full, or when we came here going newer.
    let has_older = if newer {
        f.before.is_some() || last.is_some()
    } else {
        more
    };
    let has_newer = if newer { more } else { f.before.is_some() };
    let body = html! {
        (filter_form(&f, &projects, &errors))
        @if rows.is_empty() && errors.is_empty() {
            p.muted #no-jobs { "No job matches." }
        } @else if !rows.is_empty() {
            table #jobs {
                thead { tr {
                    th.num { "id" } th { "project" } th { "task" } th { "trigger" } th { "handler" }
                    th { "state" } th.num { "tries" } th { "created" } th { "finished" } th { "error" }
                } }
                tbody { @for r in &rows {
                    @let id: i64 = r.get(0);
                    tr data-job=(id) {
                        td.num { a href={ "/console/jobs/" (id) } { (id) } }
                        td { (r.get::<_, String>(1)) }
                        td { (r.get::<_, Option<String>>(2).unwrap_or_default()) }
                        td { (r.get::<_, Option<String>>(3).unwrap_or_default()) " "
                             span.muted { (r.get::<_, Option<String>>(4).unwrap_or_default()) } }
                        td { code { (r.get::<_, String>(5)) } }
                        td { (state_badge(&r.get::<_, String>(6))) }
                        td.num { (r.get::<_, i32>(7)) }
                        td { (time(&r.get(8))) }
                        td { (time_opt(&r.get(9))) }
                        td.muted { (r.get::<_, Option<String>>(10).unwrap_or_default().lines().last().unwrap_or("")) }
                    }
                } }
            }
        }
        div.pager {
            @if has_newer { @if let Some(first) = first {
                a #newer href=(page_link(&f, None, Some(first))) { "← Newer" }
            } }
            @if f.before.is_some() || f.after.is_some() { a href=(page_link(&f, None, None)) { "Newest" } }
            @if has_older { @if let Some(last) = last {
                a #older href=(page_link(&f, Some(last), None)) { "Older →" }
            } }
        }
    };
    Ok(layout::page(&person, "/console/jobs", "Jobs", body))
}

/// The list's URL with these filters and a page.
fn page_link(f: &Filters, before: Option<i64>, after: Option<i64>) -> String {
    super::forms::filtered_url(
        "/console/jobs",
        &[
            ("project", &f.project),
            ("task", &f.task),
            ("trigger", &f.trigger),
            ("state", &f.state),
            ("since", &f.since),
            ("until", &f.until),
        ],
        &[("before", before), ("after", after)],
    )
}

fn filter_form(f: &Filters, projects: &[String], errors: &FormErrors) -> Markup {
    html! {
        (errors.general())
        form.filters #job-filters method="get" action="/console/jobs" {
            label { "project"
                select name="project" {
                    option value="" { "any" }
                    @for p in projects { option value=(p) selected[*p == f.project] { (p) } }
                }
            }
            label { "task" input type="text" name="task" value=(f.task) size="12"; }
            label { "trigger" input type="text" name="trigger" value=(f.trigger) size="12"; }
            label { "state"
                select name="state" {
                    option value="" { "any" }
                    @for s in STATES { option value=(s) selected[s == f.state] { (s) } }
                }
            }
            label { "created since"
                input type="text" name="since" value=(f.since) size="18" placeholder="2026-01-31 12:00"
                    class=[errors.has("since").then_some("invalid")];
                (errors.show("since"))
            }
            label { "until"
                input type="text" name="until" value=(f.until) size="18" placeholder="now"
                    class=[errors.has("until").then_some("invalid")];
                (errors.show("until"))
            }
            button type="submit" { "Filter" }
        }
    }
}
