// Projects: the list (with each project's on/off switch), creating one, export (download
// of sync_export_project's document) and import (upload to sync_import_project).
use super::forms::{self, Fields, Shown};
use crate::console::layout::{self, csrf_field};
use crate::console::pg_error::FormErrors;
use crate::console::{ConsoleError, ConsoleState, Person};
use axum::extract::{Multipart, Path, Query};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/projects", get(list).post(create))
        .route("/projects/{id}/active", post(switch))
        .route("/projects/{id}/export", get(export))
        .route("/projects/import", post(import))
}

const LIST_SQL: &str = "
SELECT p.id, p.name, p.active, p.lang, p.version, p.updated_at,
       (SELECT count(*) FROM sync.task t WHERE t.project_id = p.id)
FROM sync.project p ORDER BY p.name";

async fn list(person: Person, Query(shown): Query<Shown>) -> Result<Markup, ConsoleError> {
    page(
        &person,
        shown.done.as_deref(),
        &Fields(vec![]),
        &FormErrors::default(),
        None,
    )
    .await
}

async fn page(
    person: &Person,
    done: Option<&str>,
    form: &Fields,
    errors: &FormErrors,
    import_error: Option<ConsoleError>,
) -> Result<Markup, ConsoleError> {
    let rows = person.db.query(LIST_SQL, &[]).await?;
    let edit = person.can_edit();
    let body = html! {
        (forms::notice(done))
        @if rows.is_empty() {
            p.muted { "No project yet." }
        } @else {
            table #projects {
                thead { tr { th { "name" } th { "active" } th { "language" } th.num { "tasks" } th.num { "version" } th { "changed" } } }
                tbody {
                    @for r in &rows {
                        @let id: i64 = r.get(0);
                        @let active: bool = r.get(2);
                        tr data-project=(r.get::<_, String>(1)) {
                            td { a href={ "/console/projects/" (id) } { (r.get::<_, String>(1)) } }
                            td {
                                @if edit {
                                    form.inline method="post" action={ "/console/projects/" (id) "/active" } {
                                        (csrf_field(person))
                                        input type="hidden" name="active" value=(if active { "off" } else { "on" });
                                        button.secondary.switch type="submit" title="switch on or off" {
                                            (if active { "on ✓" } else { "off" })
                                        }
                                    }
                                } @else {
                                    (if active { "on" } else { "off" })
                                }
                            }
                            td { (r.get::<_, String>(3)) }
                            td.num { (r.get::<_, i64>(6)) }
                            td.num { (r.get::<_, i64>(4)) }
                            td { (layout::time(&r.get(5))) }
                        }
                    }
                }
            }
        }
        @if edit {
            h2 { "New project" }
            div.card {
                (errors.general())
                form.grid #new-project method="post" action="/console/projects" {
                    (csrf_field(person))
                    (forms::row("Name", "name", errors, html! { input #name type="text" name="name" required value=(form.text("name")); }))
                    (forms::row("Language", "lang", errors, html! { input #lang type="text" name="lang" value=(form.get("lang").unwrap_or("en_US")); }))
                    label for="active" { "Active" }
                    div { input #active type="checkbox" name="active" checked[form.checked("active")]; }
                    div.full.actions { button type="submit" { "Create project" } }
                }
            }
            h2 { "Import a project" }
            div.card {
                @if let Some(e) = &import_error {
                    div.field-error #import-error role="alert" {
                        (e.message)
                        @if let Some(c) = &e.sqlstate { " " span.sqlstate { "(" (c) ")" } }
                        @if let Some(h) = &e.hint { div.hint { (h) } }
                    }
                }
                // Multipart: the token travels in the URL (csrf.rs reads it there).
                form #import method="post" enctype="multipart/form-data"
                    action={ "/console/projects/import?csrf=" (person.csrf) } {
                    p.hint { "A JSON document written by Export (or sync_export_project). It is checked whole before anything changes." }
                    input #import-file type="file" name="file" accept="application/json,.json" required;
                    label { input #import-replace type="checkbox" name="replace"; " replace the project of the same name" }
                    div.actions { button type="submit" { "Import" } }
                }
            }
        }
    };
    Ok(layout::page(person, "/console/projects", "Projects", body))
}

async fn create(
    person: Person,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let form = Fields::submitted(form);
    let name = form.text("name");
    let lang = form.opt("lang").unwrap_or_else(|| "en_US".into());
    let created = person
        .db
        .query_one(
            "INSERT INTO sync.project (name, lang, active) VALUES ($1, $2, $3) RETURNING id",
            &[&name, &lang, &form.checked("active")],
        )
        .await;
    match created {
        Ok(row) => {
            let id: i64 = row.get(0);
            Ok(forms::done(&format!("/console/projects/{id}"), "created").into_response())
        }
        Err(e) => {
            let errors = FormErrors::from_pg(
                &e,
                &[
                    ("name", &["project_name"]),
                    ("lang", &["is_lang", "language"]),
                ],
            );
            Ok(page(&person, None, &form, &errors, None)
                .await?
                .into_response())
        }
    }
}

async fn switch(
    person: Person,
    Path(id): Path<i64>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let on = Fields::submitted(form).checked("active");
    let n = person
        .db
        .execute(
            "UPDATE sync.project SET active = $2 WHERE id = $1",
            &[&id, &on],
        )
        .await?;
    if n == 0 {
        return Err(ConsoleError::not_found(format!("no project with id {id}")));
    }
    Ok(forms::done("/console/projects", "saved").into_response())
}

async fn export(person: Person, Path(id): Path<i64>) -> Result<Response, ConsoleError> {
    let name = forms::project_name(&person, id).await?;
    let row = person
        .db
        .query_one("SELECT sync_export_project($1)", &[&name])
        .await?;
    let doc: serde_json::Value = row.get(0);
    let text = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string());
    let file: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}.json\""),
            ),
        ],
        text,
    )
        .into_response())
}

async fn import(person: Person, mut parts: Multipart) -> Result<Response, ConsoleError> {
    let mut file = None;
    let mut replace = false;
    while let Some(field) = parts
        .next_field()
        .await
        .map_err(|e| ConsoleError::bad_request(format!("the upload could not be read: {e}")))?
    {
        match field.name() {
            Some("file") => {
                let bytes = field.bytes().await.map_err(|e| {
                    ConsoleError::bad_request(format!("the upload could not be read: {e}"))
                })?;
                file = Some(bytes);
            }
            Some("replace") => replace = true,
            _ => {}
        }
    }
    let shown = |e: ConsoleError| async {
        page(
            &person,
            None,
            &Fields(vec![]),
            &FormErrors::default(),
            Some(e),
        )
        .await
        .map(IntoResponse::into_response)
    };
    let Some(bytes) = file.filter(|b| !b.is_empty()) else {
        return shown(ConsoleError::bad_request("choose a JSON file to import")).await;
    };
    let doc: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(d) => d,
        Err(e) => {
            return shown(
                ConsoleError::bad_request(format!("the file is not JSON: {e}"))
                    .with_hint("choose a document written by Export"),
            )
            .await
        }
    };
    match person
        .db
        .query_one("SELECT sync_import_project($1, $2)", &[&doc, &replace])
        .await
    {
        Ok(row) => {
            let id: i64 = row.get(0);
            Ok(forms::done(&format!("/console/projects/{id}"), "imported").into_response())
        }
        Err(e) => shown(ConsoleError::from(e)).await,
    }
}
