// Log lines: the logs page (filters, keyset pages, counts grouped by project, task,
// trigger or level), transmissions shown as indented JSON, and a running job's live tail.
use crate::console::layout::{self, time};
use crate::console::pg_error::FormErrors;
use crate::console::{ConsoleError, ConsoleState, Person};
use axum::extract::{Path, Query};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup, PreEscaped};
use serde::Deserialize;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/logs", get(page))
        .route("/jobs/{id}/log", get(job_fragment))
}

/// Log lines (created_at, level, kind, recipient, message) as a table.
pub fn lines(rows: &[tokio_postgres::Row]) -> Markup {
    html! {
        @if rows.is_empty() { p.muted { "No log lines." } }
        @else {
            table.log { tbody { @for r in rows {
                @let level: String = r.get(1);
                @let kind: String = r.get(2);
                tr class={ "level-" (level) } {
                    td.nowrap { (time(&r.get(0))) }
                    td { (level) }
                    td { @if kind != "message" { span.badge { (kind) } " " (r.get::<_, Option<String>>(3).unwrap_or_default()) } }
                    td.msg { (message(&kind, &r.get::<_, String>(4))) }
                }
            } } }
        }
    }
}

/// A message; a transmission's body as indented JSON when it is JSON, folded if long.
fn message(kind: &str, text: &str) -> Markup {
    if kind == "message" {
        return html! { span.pre { (text) } };
    }
    let pretty = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_string());
    let n = pretty.lines().count();
    html! {
        details.transmission open[n <= 8] {
            summary { (kind) ", " (text.len()) " bytes" }
            pre.code { (pretty) }
        }
    }
}

/// Reload a pending or running job's log every second until the job ends.
pub fn tail_script(id: i64) -> Markup {
    let js = format!(
        "(function(){{var box=document.getElementById('job-log');\
         function tick(){{fetch('/console/jobs/{id}/log',{{credentials:'same-origin'}})\
         .then(function(r){{return r.ok?r.text():null}}).then(function(t){{\
         if(t===null)return;box.innerHTML=t;var d=box.querySelector('[data-state]');\
         var st=d?d.getAttribute('data-state'):'';\
         if(st==='pending'||st==='running')setTimeout(tick,1000);\
         else location.reload();}});}}setTimeout(tick,1000);}})();"
    );
    html! { script { (PreEscaped(js)) } }
}

const JOB_STATE_SQL: &str = "SELECT state FROM sync.job WHERE id = $1";
/// A job's lines, the derived start and end lines included: the newest JOB_LOG_LIMIT
/// (one more is read to tell that there are more).
pub const JOB_LOG_SQL: &str = "
SELECT * FROM (
    SELECT created_at, level, kind, recipient, message, id FROM sync.log_view
    WHERE job_id = $1 ORDER BY created_at DESC, id DESC NULLS LAST LIMIT 501
) l ORDER BY created_at, id NULLS FIRST";
const JOB_LOG_LIMIT: usize = 500;

/// A job's lines from JOB_LOG_SQL, saying when older ones are left out.
pub fn job_lines(rows: &[tokio_postgres::Row]) -> Markup {
    let cut = rows.len().saturating_sub(JOB_LOG_LIMIT);
    html! {
        @if cut > 0 { p.muted { "The last " (JOB_LOG_LIMIT) " lines." } }
        (lines(&rows[cut..]))
    }
}

/// A job's log lines alone, for the live tail.
async fn job_fragment(person: Person, Path(id): Path<i64>) -> Result<Markup, ConsoleError> {
    let p: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
    let (state, rows) = tokio::try_join!(
        person.db.query_opt(JOB_STATE_SQL, &p),
        person.db.query(JOB_LOG_SQL, &p),
    )?;
    let state: String = state.map(|r| r.get(0)).unwrap_or_default();
    Ok(html! { div data-state=(state) { (job_lines(&rows)) } })
}

#[derive(Deserialize, Default)]
struct Filters {
    #[serde(default)]
    project: String,
    #[serde(default)]
    task: String,
    #[serde(default)]
    trigger: String,
    #[serde(default)]
    level: String,
    #[serde(default)]
    kind: String,
    /// A regular expression (PostgreSQL's, case-insensitive) the message must match.
    #[serde(default)]
    message: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    /// Count the window's matching lines by project, task, trigger or level instead of
    /// listing them.
    #[serde(default)]
    group: String,
    before: Option<i64>,
}

const PAGE: i64 = 100;
/// Each page looks at this many log lines at most (the newest, or those before
/// `before`), filters them, and lists or counts what matches: a page's time is bounded
/// whatever the table's size and however rare the match. Older lines are one click away.
const WINDOW: i64 = 20_000;

const FROM: &str = "
FROM (SELECT * FROM sync.log WHERE ($9::bigint IS NULL OR id < $9)
      ORDER BY id DESC LIMIT $10) l
LEFT JOIN sync.project p ON p.id = l.project_id
LEFT JOIN sync.task t ON t.id = l.task_id
WHERE ($1::text IS NULL OR l.project_id = (SELECT id FROM sync.project WHERE name = $1))
  AND ($2::text IS NULL OR t.name = $2)
  AND ($3::text IS NULL OR l.trigger_name = $3)
  AND ($4::text IS NULL OR l.level = $4)
  AND ($5::text IS NULL OR l.kind = $5)
  AND ($6::text IS NULL OR l.message ~* $6)
  AND ($7::text IS NULL OR l.created_at >= $7::text::timestamptz)
  AND ($8::text IS NULL OR l.created_at < $8::text::timestamptz)";

/// The oldest line of the window, where the next window starts.
const WINDOW_END_SQL: &str = "
SELECT min(id) FROM (SELECT id FROM sync.log WHERE ($1::bigint IS NULL OR id < $1)
                     ORDER BY id DESC LIMIT $2) w";

fn opt(s: &str) -> Option<&str> {
    Some(s.trim()).filter(|s| !s.is_empty())
}

async fn page(person: Person, Query(f): Query<Filters>) -> Result<Markup, ConsoleError> {
    let group_col = match f.group.as_str() {
        "project" => Some("p.name"),
        "task" => Some("t.name"),
        "trigger" => Some("l.trigger_name"),
        "level" => Some("l.level"),
        _ => None,
    };
    let sql = match group_col {
        Some(col) => format!("SELECT {col} AS k, count(*) {FROM} GROUP BY 1 ORDER BY 2 DESC, 1"),
        None => format!(
            "SELECT l.created_at, l.level, l.kind, l.recipient, l.message, l.id, p.name, t.name,
                    l.trigger_name, l.job_id {FROM} ORDER BY l.id DESC LIMIT {}",
            PAGE + 1
        ),
    };
    let params = (
        opt(&f.project),
        opt(&f.task),
        opt(&f.trigger),
        opt(&f.level),
        opt(&f.kind),
        opt(&f.message),
        opt(&f.since),
        opt(&f.until),
        f.before,
    );
    let result = person
        .db
        .query(
            &sql,
            &[
                &params.0, &params.1, &params.2, &params.3, &params.4, &params.5, &params.6,
                &params.7, &params.8, &WINDOW,
            ],
        )
        .await;
    let (mut rows, errors) = match result {
        Ok(rows) => (rows, FormErrors::default()),
        Err(e) if e.as_db_error().is_some() => {
            let fields: [(&'static str, &[&str]); 3] = [
                ("message", &["regular expression"][..]),
                ("since", &[f.since.trim()][..]),
                ("until", &[f.until.trim()][..]),
            ];
            (vec![], FormErrors::from_pg(&e, &fields))
        }
        Err(e) => return Err(e.into()),
    };
    let projects = person
        .db
        .query("SELECT name FROM sync.project ORDER BY name", &[])
        .await?;
    let projects: Vec<String> = projects.iter().map(|r| r.get(0)).collect();
    let full = group_col.is_none() && rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    // A page that is not full searched its whole window: the next one starts below it.
    let next_before = if full {
        rows.last().map(|r| r.get::<_, i64>(5))
    } else if errors.is_empty() {
        person
            .db
            .query_one(WINDOW_END_SQL, &[&f.before, &WINDOW])
            .await?
            .get::<_, Option<i64>>(0)
            .filter(|end| *end > 1)
    } else {
        None
    };
    let body = html! {
        (form(&f, &projects, &errors))
        @if group_col.is_some() {
            @if errors.is_empty() {
                p.muted { "Counted over " (WINDOW) " lines"
                    @if let Some(b) = f.before { " before line " (b) } @else { ", the newest" } "." }
                table #log-groups { thead { tr { th { (f.group) } th.num { "lines" } } }
                    tbody { @for r in &rows { tr {
                        td { (r.get::<_, Option<String>>(0).unwrap_or_else(|| "–".into())) }
                        td.num { (r.get::<_, i64>(1)) }
                    } } } }
            }
        } @else if !rows.is_empty() {
            table.log #logs { tbody { @for r in &rows {
                @let level: String = r.get(1);
                @let kind: String = r.get(2);
                tr class={ "level-" (level) } {
                    td.nowrap { (time(&r.get(0))) }
                    td { (r.get::<_, Option<String>>(6).unwrap_or_default()) " "
                         span.muted { (r.get::<_, Option<String>>(7).unwrap_or_default()) } }
                    td { (r.get::<_, Option<String>>(8).unwrap_or_default()) }
                    td { @if let Some(j) = r.get::<_, Option<i64>>(9) { a href={ "/console/jobs/" (j) } { (j) } } }
                    td { (level) }
                    td { @if kind != "message" { span.badge { (kind) } " " (r.get::<_, Option<String>>(3).unwrap_or_default()) } }
                    td.msg { (message(&kind, &r.get::<_, String>(4))) }
                }
            } } }
        } @else if errors.is_empty() {
            p.muted #no-logs { "No log line matches among " (WINDOW) " lines"
                @if let Some(b) = f.before { " before line " (b) } @else { ", the newest" } "." }
        }
        @if group_col.is_none() && errors.is_empty() {
            div.pager {
                @if f.before.is_some() { a href=(link(&f, None)) { "Newest" } }
                @if let Some(b) = next_before {
                    a #older href=(link(&f, Some(b))) { @if full { "Older →" } @else { "Search older lines →" } }
                }
            }
        }
    };
    Ok(layout::page(&person, "/console/logs", "Logs", body))
}

fn link(f: &Filters, before: Option<i64>) -> String {
    super::forms::filtered_url(
        "/console/logs",
        &[
            ("project", &f.project),
            ("task", &f.task),
            ("trigger", &f.trigger),
            ("level", &f.level),
            ("kind", &f.kind),
            ("message", &f.message),
            ("since", &f.since),
            ("until", &f.until),
        ],
        &[("before", before)],
    )
}

fn form(f: &Filters, projects: &[String], errors: &FormErrors) -> Markup {
    let select = |name: &str, value: &str, options: &[&str]| {
        html! { select name=(name) {
            option value="" { @if name == "group" { "none: list lines" } @else { "any" } }
            @for o in options { option value=(o) selected[*o == value] { (o) } }
        } }
    };
    let projects: Vec<&str> = projects.iter().map(String::as_str).collect();
    html! {
        (errors.general())
        form.filters #log-filters method="get" action="/console/logs" {
            label { "project" (select("project", &f.project, &projects)) }
            label { "task" input type="text" name="task" value=(f.task) size="10"; }
            label { "trigger" input type="text" name="trigger" value=(f.trigger) size="10"; }
            label { "level" (select("level", &f.level, &["debug", "info", "warning", "error"])) }
            label { "kind" (select("kind", &f.kind, &["message", "data_out", "data_in"])) }
            label { "message matches"
                input type="text" name="message" value=(f.message) size="14" placeholder="regular expression"
                    class=[errors.has("message").then_some("invalid")];
                (errors.show("message"))
            }
            label { "since"
                input type="text" name="since" value=(f.since) size="16"
                    class=[errors.has("since").then_some("invalid")];
                (errors.show("since"))
            }
            label { "until"
                input type="text" name="until" value=(f.until) size="16"
                    class=[errors.has("until").then_some("invalid")];
                (errors.show("until"))
            }
            label { "group by" (select("group", &f.group, &["project", "task", "trigger", "level"])) }
            button type="submit" { "Show" }
        }
    }
}
