// One project's page: its settings and code layers (core_code for sync_admin only), its
// params, texts and secrets (project_values.rs), its tasks and a link to its triggers.
use super::check;
use super::editor_assets;
use super::forms::{self, Fields, Shown};
use super::project_values;
use crate::console::layout::{self, csrf_field};
use crate::console::person::RoleKind;
use crate::console::pg_error::FormErrors;
use crate::console::{ConsoleError, ConsoleState, Person};
use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use maud::{html, Markup};
use serde_json::json;
use tokio_postgres::types::ToSql;

pub fn routes() -> Router<ConsoleState> {
    Router::new().route("/projects/{id}", get(show).post(save))
}

async fn show(
    person: Person,
    Path(id): Path<i64>,
    Query(shown): Query<Shown>,
) -> Result<Markup, ConsoleError> {
    render(
        &person,
        id,
        shown.done.as_deref(),
        None,
        &FormErrors::default(),
        &[],
    )
    .await
}

/// The page; `typed` are the settings a refused form sent (shown again), `errors` the
/// refusal, `problems` the code check's findings.
pub async fn render(
    person: &Person,
    id: i64,
    done: Option<&str>,
    typed: Option<&Fields>,
    errors: &FormErrors,
    problems: &[crate::code_check::CodeProblem],
) -> Result<Markup, ConsoleError> {
    let db = &person.db;
    let admin = person.kind == RoleKind::Admin;
    let row = db
        .query_opt(
            "SELECT name, active, lang, common_code, version, eval_context, run_as
             FROM sync.project WHERE id = $1",
            &[&id],
        )
        .await?
        .ok_or_else(|| ConsoleError::not_found(format!("no project with id {id}")))?;
    // A developer never sees core_code here, though PostgreSQL would let them read it.
    let core: Option<String> = if admin {
        Some(
            db.query_one("SELECT core_code FROM sync.project WHERE id = $1", &[&id])
                .await?
                .get(0),
        )
    } else {
        None
    };
    let name: String = row.get(0);
    let eval: Vec<String> = row.get(5);
    let run_as: Option<String> = row.get(6);
    let value = |field: &str, stored: String| typed.map_or(stored, |t| t.text(field));
    let active = typed.map_or(row.get::<_, bool>(1), |t| t.checked("active"));
    let edit = person.can_edit();
    let tasks = db
        .query(
            "SELECT id, name, active FROM sync.task WHERE project_id = $1 ORDER BY name",
            &[&id],
        )
        .await?;
    let values = project_values::render(person, id, errors).await?;
    let base = format!("/console/projects/{id}");
    let body = html! {
        (editor_assets::styles())
        (forms::notice(done))
        p.actions {
            a href={ (base) "/triggers" } { "Triggers" }
            a href={ (base) "/export" } #export download { "Export (JSON)" }
            span.muted { "version " (row.get::<_, i64>(4)) }
        }
        h2 { "Settings and code" }
        div.card {
            (errors.general())
            (check::outcome_if(problems))
            form.grid.code-form #project-settings method="post" action=(base) {
                (csrf_field(person))
                (forms::row("Name", "name", errors, html! { input #name type="text" name="name" value=(value("name", name.clone())) disabled[!edit]; }))
                (forms::row("Language", "lang", errors, html! { input #lang type="text" name="lang" value=(value("lang", row.get(2))) disabled[!edit]; }))
                label for="active" { "Active" }
                div {
                    input type="hidden" name="active_shown" value="1";
                    input #active type="checkbox" name="active" checked[active] disabled[!edit];
                }
                label for="eval_context" { "Eval-context providers" }
                div {
                    @if admin {
                        input #eval_context type="text" name="eval_context" value=(value("eval_context", eval.join(", ")));
                        div.hint { "Trusted Python modules shipped with the worker, in order (comma-separated)." }
                        (errors.show("eval_context"))
                    } @else {
                        span #eval_context { @if eval.is_empty() { "none" } @else { (eval.join(", ")) } }
                        div.hint { "Set by sync_admin." }
                    }
                }
                @if admin {
                    (forms::row("Run as (role)", "run_as", errors, html! { input #run_as type="text" name="run_as" value=(value("run_as", run_as.clone().unwrap_or_default())); }))
                }
                @if let Some(core) = &core {
                    label for="core_code" { "core_code" }
                    div {
                        div.hint { "Runs before common_code and sees secrets: sync_admin only." }
                        textarea.code-editor #core_code name="core_code"
                            data-error-lines=(check::lines_of(problems, "<core_code>")) { (value("core_code", core.clone())) }
                        (errors.show("core_code"))
                    }
                }
                label for="common_code" { "common_code" }
                div {
                    textarea.code-editor #common_code name="common_code" readonly[!edit]
                        data-error-lines=(check::lines_of(problems, "<common_code>")) { (value("common_code", row.get(3))) }
                    (errors.show("common_code"))
                }
                @if edit {
                    div.full.actions {
                        button #save-project type="submit" { "Save" }
                        span.too-large hidden {}
                    }
                }
            }
        }
        (values)
        h2 { "Tasks" }
        @if tasks.is_empty() { p.muted { "No task yet." } } @else {
            table #tasks {
                thead { tr { th { "name" } th { "active" } } }
                tbody {
                    @for t in &tasks {
                        tr { td { a href={ (base) "/tasks/" (t.get::<_, i64>(0)) } { (t.get::<_, String>(1)) } } td { (if t.get::<_, bool>(2) { "yes" } else { "no" }) } }
                    }
                }
            }
        }
        @if edit { p { a #new-task href={ (base) "/tasks/new" } { "New task" } } }
        (editor_assets::scripts())
    };
    Ok(layout::page(
        person,
        "/console/projects",
        &format!("Project {name}"),
        body,
    ))
}

/// Save the settings: only the columns the form carries are written (a developer's form
/// has no core_code, eval_context or run_as; if a forged one does, PostgreSQL refuses).
async fn save(
    person: Person,
    Path(id): Path<i64>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let form = Fields::submitted(form);
    for field in ["core_code", "common_code"] {
        if let Err(e) = forms::check_size(field, form.get(field).unwrap_or("")) {
            return Ok(render(&person, id, None, Some(&form), &e, &[])
                .await?
                .into_response());
        }
    }
    // Code that does not compile is not saved.
    if form.has("core_code") || form.has("common_code") {
        let doc = json!({
            "core_code": form.text("core_code"),
            "common_code": form.text("common_code"),
            "tasks": [],
        });
        let problems = check::run(&doc).await;
        if !problems.is_empty() {
            let errors = FormErrors::default();
            return Ok(render(&person, id, None, Some(&form), &errors, &problems)
                .await?
                .into_response());
        }
    }
    let mut sets = Vec::new();
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(id)];
    let mut add = |col: &str, v: Box<dyn ToSql + Sync + Send>| {
        params.push(v);
        sets.push(format!("{col} = ${}", params.len()));
    };
    for col in ["name", "lang", "common_code", "core_code"] {
        if let Some(v) = form.get(col) {
            add(col, Box::new(v.to_string()));
        }
    }
    if form.has("active_shown") {
        add("active", Box::new(form.checked("active")));
    }
    if let Some(v) = form.get("eval_context") {
        add("eval_context", Box::new(forms::list(v)));
    }
    if form.has("run_as") {
        add("run_as", Box::new(form.opt("run_as")));
    }
    if sets.is_empty() {
        return Ok(forms::done(&format!("/console/projects/{id}"), "saved").into_response());
    }
    // Column names come from the fixed list above; values are bound parameters.
    let sql = format!("UPDATE sync.project SET {} WHERE id = $1", sets.join(", "));
    let refs: Vec<&(dyn ToSql + Sync)> =
        params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
    match person.db.execute(&sql, &refs).await {
        Ok(0) => Err(ConsoleError::not_found(format!("no project with id {id}"))),
        Ok(_) => Ok(forms::done(&format!("/console/projects/{id}"), "saved").into_response()),
        Err(e) => {
            let errors = FormErrors::from_pg(
                &e,
                &[
                    ("name", &["project_name", "name"]),
                    ("lang", &["is_lang", "language"]),
                    ("run_as", &["run_as", "role"]),
                    ("eval_context", &["provider", "eval_context"]),
                ],
            );
            Ok(render(&person, id, None, Some(&form), &errors, &[])
                .await?
                .into_response())
        }
    }
}
