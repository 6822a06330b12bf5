// What a trigger's page does besides editing: a cron trigger's next run and "Run now", a
// db trigger's broken_reason, a webhook's URL and signing secret (write-only), a button's
// "Press"; and the outcome of the job a run or press made (result or traceback).
use super::forms;
use crate::console::layout::{self, csrf_field};
use crate::console::person::RoleKind;
use crate::console::{ConsoleError, ConsoleState, Person};
use axum::extract::{Form, Path};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use maud::{html, Markup};
use std::time::Duration;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/projects/{id}/triggers/cron/{tr}/run", post(run_now))
        .route("/projects/{id}/triggers/button/{tr}/press", post(press))
        .route(
            "/projects/{id}/triggers/webhook/{tr}/secret",
            post(signing_secret),
        )
}

/// How long a run or press waits for its job's outcome before showing it as it is.
const WAIT: Duration = Duration::from_secs(10);

pub async fn extra(
    person: &Person,
    id: i64,
    project: &str,
    k: &str,
    tr: i64,
    name: &str,
    shown: Option<&forms::Shown>,
) -> Result<Markup, ConsoleError> {
    let db = &person.db;
    let base = format!("/console/projects/{id}/triggers/{k}/{tr}");
    let edit = person.can_edit();
    let own = match k {
        "cron" => {
            let next: chrono::DateTime<chrono::Utc> = db
                .query_one(
                    "SELECT next_run_at FROM sync.cron_trigger WHERE id = $1",
                    &[&tr],
                )
                .await?
                .get(0);
            html! {
                p #next-run { "Next run: " (layout::time(&next)) }
                @if edit {
                    form.inline method="post" action={ (base) "/run" } {
                        (csrf_field(person))
                        button #run-now type="submit" { "Run now" }
                        span.hint { " makes it due now and waits up to " (WAIT.as_secs()) " s for the job's outcome" }
                    }
                }
            }
        }
        "db" => {
            let broken: Option<String> = db
                .query_one(
                    "SELECT broken_reason FROM sync.db_trigger WHERE id = $1",
                    &[&tr],
                )
                .await?
                .get(0);
            html! {
                @if let Some(why) = broken {
                    div.broken #broken-reason role="alert" {
                        strong { "This trigger is broken and enqueues nothing: " } (why)
                        div.hint { "Fix the table or the trigger's settings and save it again." }
                    }
                }
            }
        }
        "webhook" => {
            // The URL is the webhook's credential: PostgreSQL decides who may read it.
            let url = db
                .query_one("SELECT sync_webhook_url($1, $2)", &[&project, &name])
                .await;
            let secret_set = if person.kind == RoleKind::Admin {
                db.query_one(
                    "SELECT signing_secret IS NOT NULL FROM sync.webhook_trigger WHERE id = $1",
                    &[&tr],
                )
                .await
                .ok()
                .map(|r| r.get::<_, bool>(0))
            } else {
                None
            };
            html! {
                div.card {
                    strong { "URL " }
                    @match &url {
                        Ok(r) => {
                            input #webhook-url type="text" readonly value=(r.get::<_, String>(0)) size="80";
                            " " button.secondary type="button" data-copy="webhook-url" { "Copy" }
                        }
                        Err(e) => span.muted #webhook-url-missing { (e.as_db_error().map_or_else(|| crate::pg::describe(e), |d| d.message().to_string())) },
                    }
                    @if let Some(set) = secret_set {
                        form method="post" action={ (base) "/secret" } {
                            (csrf_field(person))
                            p {
                                "Signing secret (X-Hub-Signature-256): "
                                @if set { span.secret-set { "set (hidden)" } } @else { span.secret-unset { "not set" } }
                            }
                            input #signing-secret type="password" name="signing_secret" autocomplete="new-password" placeholder="new secret";
                            " " button.secondary type="submit" name="op" value="set" { "Set" }
                            " " button.danger type="submit" name="op" value="clear" { "Clear" }
                        }
                    }
                }
                (super::editor_assets::glue())
            }
        }
        "button" => html! {
            @if edit {
                form.inline method="post" action={ (base) "/press" } {
                    (csrf_field(person))
                    button #press type="submit" { "Press" }
                    span.hint { " runs handle_button() and shows its result or traceback" }
                }
            }
        },
        _ => html! {},
    };
    let job = match shown.and_then(|s| s.job) {
        Some(j) => outcome(person, j).await?,
        None => html! {},
    };
    let recent = db
        .query(
            "SELECT id, state, attempts, created_at FROM sync.job
             WHERE project_id = $1 AND trigger_kind = $2 AND trigger_id = $3
             ORDER BY created_at DESC LIMIT 5",
            &[&id, &k, &tr],
        )
        .await?;
    Ok(html! {
        (own)
        (job)
        @if !recent.is_empty() {
            h2 { "Latest jobs" }
            table #recent-jobs {
                thead { tr { th.num { "job" } th { "state" } th.num { "tries" } th { "created" } } }
                tbody {
                    @for r in &recent {
                        tr { td.num { a href={ "/console/jobs/" (r.get::<_, i64>(0)) } { (r.get::<_, i64>(0)) } }
                             td { (layout::state_badge(&r.get::<_, String>(1))) }
                             td.num { (r.get::<_, i32>(2)) }
                             td { (layout::time(&r.get(3))) } }
                    }
                }
            }
        }
    })
}

/// One job's outcome: its state, then its result or its error (the traceback).
async fn outcome(person: &Person, job: i64) -> Result<Markup, ConsoleError> {
    let row = person
        .db
        .query_opt(
            "SELECT state, attempts, result, error, eta FROM sync.job WHERE id = $1",
            &[&job],
        )
        .await?;
    let Some(r) = row else {
        return Ok(html! { p.muted { "Job " (job) " is gone." } });
    };
    let state: String = r.get(0);
    let result: Option<serde_json::Value> = r.get(2);
    let error: Option<String> = r.get(3);
    Ok(html! {
        div.card.outcome #outcome data-state=(state) {
            p { "Job " a href={ "/console/jobs/" (job) } { (job) } ": " (layout::state_badge(&state)) " after " (r.get::<_, i32>(1)) " tr" (if r.get::<_, i32>(1) == 1 { "y" } else { "ies" })
                @if state == "pending" && r.get::<_, i32>(1) > 0 { " · will be retried at " (layout::time(&r.get(4))) }
                @if state == "pending" && r.get::<_, i32>(1) == 0 { " · not picked up yet: is a worker running?" }
            }
            @if let Some(e) = &error { pre.code #traceback { (e) } }
            @if let Some(v) = &result { div #result { (layout::json_block(v)) } }
        }
    })
}

/// Wait (up to `WAIT`) until `job` is finished or failed once, then show its page.
async fn wait_for(person: &Person, job: i64) -> Result<(), ConsoleError> {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_millis(20);
    while start.elapsed() < WAIT {
        let r = person
            .db
            .query_one(
                "SELECT state, attempts FROM sync.job WHERE id = $1",
                &[&job],
            )
            .await?;
        let (state, attempts): (String, i32) = (r.get(0), r.get(1));
        if matches!(state.as_str(), "done" | "failed" | "cancelled")
            || (state == "pending" && attempts > 0)
        {
            break;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(Duration::from_millis(200));
    }
    Ok(())
}

async fn press(person: Person, Path((id, tr)): Path<(i64, i64)>) -> Result<Response, ConsoleError> {
    let project = forms::project_name(&person, id).await?;
    let name: String = person
        .db
        .query_opt(
            "SELECT name FROM sync.button_trigger WHERE id = $1 AND project_id = $2",
            &[&tr, &id],
        )
        .await?
        .ok_or_else(|| ConsoleError::not_found(format!("project {id} has no button trigger {tr}")))?
        .get(0);
    let job: i64 = person
        .db
        .query_one("SELECT sync_run_button($1, $2)", &[&project, &name])
        .await?
        .get(0);
    wait_for(&person, job).await?;
    Ok(axum::response::Redirect::to(&format!(
        "/console/projects/{id}/triggers/button/{tr}?job={job}"
    ))
    .into_response())
}

async fn run_now(
    person: Person,
    Path((id, tr)): Path<(i64, i64)>,
) -> Result<Response, ConsoleError> {
    // The newest job before: the run's job is the trigger's first one after it.
    let before: i64 = person
        .db
        .query_one("SELECT coalesce(max(id), 0) FROM sync.job", &[])
        .await?
        .get(0);
    let n = person
        .db
        .execute(
            "UPDATE sync.cron_trigger SET next_run_at = now() WHERE id = $1 AND project_id = $2",
            &[&tr, &id],
        )
        .await?;
    if n == 0 {
        return Err(ConsoleError::not_found(format!(
            "project {id} has no cron trigger {tr}"
        )));
    }
    let start = std::time::Instant::now();
    let mut job = None;
    while start.elapsed() < WAIT && job.is_none() {
        job = person
            .db
            .query_opt(
                "SELECT id FROM sync.job WHERE id > $1 AND trigger_kind = 'cron' AND trigger_id = $2 ORDER BY id LIMIT 1",
                &[&before, &tr],
            )
            .await?
            .map(|r| r.get::<_, i64>(0));
        if job.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let to = format!("/console/projects/{id}/triggers/cron/{tr}");
    match job {
        Some(j) => {
            wait_for(&person, j).await?;
            Ok(axum::response::Redirect::to(&format!("{to}?job={j}")).into_response())
        }
        None => Ok(forms::done(&to, "run").into_response()),
    }
}

async fn signing_secret(
    person: Person,
    Path((id, tr)): Path<(i64, i64)>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let form = forms::Fields::submitted(form);
    let value = if form.get("op") == Some("clear") {
        None
    } else {
        form.opt("signing_secret")
    };
    person
        .db
        .execute(
            "UPDATE sync.webhook_trigger SET signing_secret = $3 WHERE id = $1 AND project_id = $2",
            &[&tr, &id, &value],
        )
        .await?;
    Ok(forms::done(
        &format!("/console/projects/{id}/triggers/webhook/{tr}"),
        "secret",
    )
    .into_response())
}
