// A task's page: its code in an editor (CodeMirror when JavaScript runs, a textarea
// otherwise), "Check" compiling every layer before saving, and Save refusing code that
// does not compile.
use super::check;
use super::editor_assets;
use super::forms::{self, Fields, Shown};
use crate::code_check::CodeProblem;
use crate::console::layout::{self, csrf_field};
use crate::console::pg_error::FormErrors;
use crate::console::{ConsoleError, ConsoleState, Person};
use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use maud::{html, Markup};
use serde_json::{json, Value};

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/projects/{id}/tasks/new", get(new).post(save_new))
        .route("/projects/{id}/tasks/{tid}", get(show).post(save))
}

/// A task as the form shows it.
struct Task {
    name: String,
    code: String,
    active: bool,
    time_limit: String,
}

async fn new(person: Person, Path(id): Path<i64>) -> Result<Markup, ConsoleError> {
    let task = Task {
        name: String::new(),
        code: String::new(),
        active: true,
        time_limit: String::new(),
    };
    render(&person, id, None, &task, None, &FormErrors::default(), None).await
}

async fn show(
    person: Person,
    Path((id, tid)): Path<(i64, i64)>,
    Query(shown): Query<Shown>,
) -> Result<Markup, ConsoleError> {
    let row = person
        .db
        .query_opt(
            "SELECT name, code, active, coalesce(time_limit::text, '') FROM sync.task
             WHERE id = $1 AND project_id = $2",
            &[&tid, &id],
        )
        .await?
        .ok_or_else(|| {
            ConsoleError::not_found(format!("project {id} has no task with id {tid}"))
        })?;
    let task = Task {
        name: row.get(0),
        code: row.get(1),
        active: row.get(2),
        time_limit: row.get(3),
    };
    render(
        &person,
        id,
        Some(tid),
        &task,
        shown.done.as_deref(),
        &FormErrors::default(),
        None,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn render(
    person: &Person,
    id: i64,
    tid: Option<i64>,
    task: &Task,
    done: Option<&str>,
    errors: &FormErrors,
    checked: Option<(&[CodeProblem], bool)>,
) -> Result<Markup, ConsoleError> {
    let project = forms::project_name(person, id).await?;
    let edit = person.can_edit();
    let action = match tid {
        Some(t) => format!("/console/projects/{id}/tasks/{t}"),
        None => format!("/console/projects/{id}/tasks/new"),
    };
    let layer = format!("<task {}>", task.name);
    let lines = checked
        .map(|(p, _)| check::lines_of(p, &layer))
        .unwrap_or_default();
    let title = match tid {
        Some(_) => format!("Task {} of {project}", task.name),
        None => format!("New task of {project}"),
    };
    let body = html! {
        (editor_assets::styles())
        (forms::notice(done))
        p { a href={ "/console/projects/" (id) } { "← project " (project) } " · " a href={ "/console/projects/" (id) "/triggers" } { "triggers" } }
        (errors.general())
        @if let Some((problems, saved)) = checked { (check::outcome(problems, saved)) }
        form.grid.code-form #task-form method="post" action=(action) {
            (csrf_field(person))
            (forms::row("Name", "name", errors, html! { input #name type="text" name="name" value=(task.name) required disabled[!edit]; }))
            label for="active" { "Active" }
            div { input #active type="checkbox" name="active" checked[task.active] disabled[!edit]; }
            (forms::row("Time limit", "time_limit", errors, html! {
                input #time_limit type="text" name="time_limit" value=(task.time_limit) placeholder="worker default, e.g. 30 seconds" disabled[!edit];
            }))
            label for="code" { "Code" }
            div {
                textarea.code-editor #code name="code" rows="24" spellcheck="false" readonly[!edit] data-error-lines=(lines) { (task.code) }
                (errors.show("code"))
                div.hint { "Python with handle_db(records), handle_cron(), handle_webhook(httprequest) and/or handle_button(); see the task code reference." }
            }
            @if edit {
                div.full.actions {
                    button.secondary #check type="submit" name="op" value="check" { "Check" }
                    button #save type="submit" name="op" value="save" { "Save" }
                    @if tid.is_some() {
                        button.danger #delete type="submit" name="op" value="delete" formnovalidate { "Delete task" }
                    }
                    span.too-large role="alert" hidden {}
                }
            }
        }
        (editor_assets::scripts())
    };
    Ok(layout::page(person, "/console/projects", &title, body))
}

fn from_form(form: &Fields) -> Task {
    Task {
        name: form.text("name"),
        code: form.text("code"),
        active: form.checked("active"),
        time_limit: form.text("time_limit"),
    }
}

/// The document to check: every layer the person may read, with this task's code as
/// edited (and no other copy of it).
async fn document(
    person: &Person,
    id: i64,
    tid: Option<i64>,
    task: &Task,
) -> Result<Value, ConsoleError> {
    let db = &person.db;
    let common: String = db
        .query_one("SELECT common_code FROM sync.project WHERE id = $1", &[&id])
        .await?
        .get(0);
    // core_code only if PostgreSQL lets this role read it.
    let core: String = match db
        .query_one("SELECT core_code FROM sync.project WHERE id = $1", &[&id])
        .await
    {
        Ok(r) => r.get(0),
        Err(_) => String::new(),
    };
    let others = db
        .query(
            "SELECT name, code FROM sync.task WHERE project_id = $1 AND id IS DISTINCT FROM $2 AND name <> $3 ORDER BY name",
            &[&id, &tid, &task.name],
        )
        .await?;
    let mut tasks: Vec<Value> = others
        .iter()
        .map(|r| json!({"name": r.get::<_, String>(0), "code": r.get::<_, String>(1)}))
        .collect();
    tasks.push(json!({"name": task.name, "code": task.code}));
    Ok(json!({"core_code": core, "common_code": common, "tasks": tasks}))
}

async fn save_new(
    person: Person,
    Path(id): Path<i64>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    submit(person, id, None, Fields::submitted(form)).await
}

async fn save(
    person: Person,
    Path((id, tid)): Path<(i64, i64)>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    submit(person, id, Some(tid), Fields::submitted(form)).await
}

async fn submit(
    person: Person,
    id: i64,
    tid: Option<i64>,
    form: Fields,
) -> Result<Response, ConsoleError> {
    let task = from_form(&form);
    let op = form.get("op").unwrap_or("save");
    if let (Some(t), "delete") = (tid, op) {
        person
            .db
            .execute(
                "DELETE FROM sync.task WHERE id = $1 AND project_id = $2",
                &[&t, &id],
            )
            .await?;
        return Ok(forms::done(&format!("/console/projects/{id}"), "deleted").into_response());
    }
    if let Err(e) = forms::check_size("code", &task.code) {
        let shown = Task {
            code: String::new(),
            ..task
        };
        return Ok(render(&person, id, tid, &shown, None, &e, None)
            .await?
            .into_response());
    }
    let doc = document(&person, id, tid, &task).await?;
    let problems = check::run(&doc).await;
    let layer = format!("<task {}>", task.name);
    let own_broken = problems
        .iter()
        .any(|p| p.layer == layer || p.layer == "check");
    if op == "check" || own_broken {
        let none = FormErrors::default();
        return Ok(render(
            &person,
            id,
            tid,
            &task,
            None,
            &none,
            Some((&problems, op == "check")),
        )
        .await?
        .into_response());
    }
    let limit = task.time_limit.trim();
    let limit = (!limit.is_empty()).then(|| limit.to_string());
    let saved = match tid {
        Some(t) => person
            .db
            .query_one(
                "UPDATE sync.task SET name = $3, code = $4, active = $5, time_limit = CAST($6::text AS interval)
                 WHERE id = $1 AND project_id = $2 RETURNING id",
                &[&t, &id, &task.name, &task.code, &task.active, &limit],
            )
            .await,
        None => person
            .db
            .query_one(
                "INSERT INTO sync.task (project_id, name, code, active, time_limit)
                 VALUES ($1, $2, $3, $4, CAST($5::text AS interval)) RETURNING id",
                &[&id, &task.name, &task.code, &task.active, &limit],
            )
            .await,
    };
    match saved {
        Ok(row) => {
            let t: i64 = row.get(0);
            let what = if tid.is_some() { "saved" } else { "created" };
            Ok(forms::done(&format!("/console/projects/{id}/tasks/{t}"), what).into_response())
        }
        Err(e) => {
            let errors = FormErrors::from_pg(
                &e,
                &[
                    ("name", &["task_name", "name"]),
                    ("time_limit", &["interval", "time limit", "time_limit"]),
                ],
            );
            Ok(render(&person, id, tid, &task, None, &errors, None)
                .await?
                .into_response())
        }
    }
}
