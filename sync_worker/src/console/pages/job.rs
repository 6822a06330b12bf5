// One job: its arguments, result, error and traceback, tries, children and log lines,
// with Retry and Cancel forms (PostgreSQL's sync_retry_job and sync_cancel_job decide).
use crate::console::layout::{self, csrf_field, json_block, state_badge, time, time_opt};
use crate::console::{ConsoleError, Person};
use axum::extract::{Path, Query};
use axum::response::Redirect;
use maud::{html, Markup};
use serde::Deserialize;

const JOB_SQL: &str = "
SELECT j.id, p.name, t.name, j.trigger_kind, j.trigger_name, j.handler,
       sync.job_state(j.state, j.id), j.args,
       j.result, j.error, j.attempts, j.max_retries, j.priority, j.eta, j.created_at,
       j.started_at, j.finished_at, j.parent_id, j.user_name::text, j.description,
       j.identity_key, j.worker, j.warning
FROM sync.job j
JOIN sync.project p ON p.id = j.project_id
LEFT JOIN sync.task t ON t.id = j.task_id
WHERE j.id = $1";

const CHILDREN_SQL: &str = "
SELECT id, handler, state, created_at FROM sync.job WHERE parent_id = $1 ORDER BY id LIMIT 101";

#[derive(Deserialize, Default)]
pub struct Done {
    done: Option<String>,
}

pub async fn show(
    person: Person,
    Path(id): Path<i64>,
    Query(done): Query<Done>,
) -> Result<Markup, ConsoleError> {
    let db = &person.db;
    let p: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
    let (job, children, logs) = tokio::try_join!(
        db.query_opt(JOB_SQL, &p),
        db.query(CHILDREN_SQL, &p),
        db.query(super::logs::JOB_LOG_SQL, &p),
    )?;
    let Some(j) = job else {
        return Err(ConsoleError::not_found(format!("job {id} does not exist"))
            .with_hint("it may have been removed by the retention (sync.keep_jobs)"));
    };
    let state: String = j.get(6);
    let error: Option<String> = j.get(9);
    let parent: Option<i64> = j.get(17);
    let body = html! {
        @if let Some(d) = &done.done { (layout::notice(d)) }
        div.card {
            table.props #job {
                tr { th { "state" } td #job-state { (state_badge(&state))
                    @if j.get::<_, bool>(22) { " " span.badge.level-warning { "warnings" } } } }
                tr { th { "project" } td { (j.get::<_, String>(1)) } }
                tr { th { "task" } td { (j.get::<_, Option<String>>(2).unwrap_or_default()) } }
                tr { th { "handler" } td { code { (j.get::<_, String>(5)) } } }
                tr { th { "trigger" } td { (j.get::<_, Option<String>>(3).unwrap_or_default()) " "
                    (j.get::<_, Option<String>>(4).unwrap_or_default()) } }
                tr { th { "tries" } td #job-attempts { (j.get::<_, i32>(10)) " (retries allowed: " (j.get::<_, i32>(11)) ")" } }
                tr { th { "priority, eta" } td { (j.get::<_, i32>(12)) ", " (time(&j.get(13))) } }
                tr { th { "created" } td { (time(&j.get(14))) " by " (j.get::<_, String>(18)) } }
                tr { th { "started, finished" } td { (time_opt(&j.get(15))) " – " (time_opt(&j.get(16))) } }
                @if let Some(w) = j.get::<_, Option<i32>>(21) { tr { th { "worker" } td { (w) } } }
                @if let Some(p) = parent { tr { th { "parent" } td { a href={ "/console/jobs/" (p) } { "job " (p) } } } }
                @if let Some(d) = j.get::<_, Option<String>>(19) { tr { th { "description" } td { (d) } } }
                @if let Some(k) = j.get::<_, Option<String>>(20) { tr { th { "identity key" } td { code { (k) } } } }
            }
            (actions(&person, id, &state))
        }
        h2 { "Arguments" }
        (json_block(&j.get(7)))
        @if let Some(r) = j.get::<_, Option<serde_json::Value>>(8) { h2 { "Result" } (json_block(&r)) }
        @if let Some(e) = &error { h2 { "Error" } pre.code.error #job-error { (e) } }
        @if !children.is_empty() {
            h2 { "Jobs it created" }
            table #children { tbody { @for c in children.iter().take(100) {
                @let cid: i64 = c.get(0);
                tr { td.num { a href={ "/console/jobs/" (cid) } { (cid) } }
                     td { code { (c.get::<_, String>(1)) } }
                     td { (state_badge(&c.get::<_, String>(2))) }
                     td { (time(&c.get(3))) } }
            } } }
            @if children.len() > 100 { p.muted { "The first 100 are shown." } }
        }
        h2 { "Log" }
        div #job-log { div data-state=(state) { (super::logs::job_lines(&logs)) } }
        @if state == "running" || state == "pending" {
            (super::logs::tail_script(id))
        }
    };
    Ok(layout::page(
        &person,
        "/console/jobs",
        &format!("Job {id}"),
        body,
    ))
}

/// Retry for a failed job, Cancel for one that has not ended; to developers and up
/// (PostgreSQL refuses the others anyway).
fn actions(person: &Person, id: i64, state: &str) -> Markup {
    if !person.can_edit() {
        return html! {};
    }
    html! {
        p.actions {
            @if state == "failed" {
                form.inline method="post" action={ "/console/jobs/" (id) "/retry" } {
                    (csrf_field(person))
                    button #retry type="submit" { "Retry" }
                }
            }
            @if state == "pending" || state == "running" {
                " "
                form.inline method="post" action={ "/console/jobs/" (id) "/cancel" } {
                    (csrf_field(person))
                    button.danger #cancel type="submit" { "Cancel" }
                }
            }
        }
    }
}

pub async fn retry(person: Person, Path(id): Path<i64>) -> Result<Redirect, ConsoleError> {
    person
        .db
        .execute("SELECT sync_retry_job($1)", &[&id])
        .await?;
    Ok(done(
        id,
        "Queued again: the job will run from its first try.",
    ))
}

pub async fn cancel(person: Person, Path(id): Path<i64>) -> Result<Redirect, ConsoleError> {
    person
        .db
        .execute("SELECT sync_cancel_job($1)", &[&id])
        .await?;
    Ok(done(
        id,
        "Cancel requested: a running job stops within a second.",
    ))
}

fn done(id: i64, what: &str) -> Redirect {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("done", what);
    Redirect::to(&format!("/console/jobs/{id}?{}", q.finish()))
}
