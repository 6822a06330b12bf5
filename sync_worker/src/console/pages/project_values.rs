// A project's params (with initial values), texts by language and secrets. Secrets are
// write-only: a value may be set or replaced (by whoever PostgreSQL lets), never shown.
use super::forms::{self, Fields};
use super::project_edit;
use crate::console::layout::csrf_field;
use crate::console::person::RoleKind;
use crate::console::pg_error::FormErrors;
use crate::console::{ConsoleError, ConsoleState, Person};
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Router};
use maud::{html, Markup};

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/projects/{id}/params", post(save_param))
        .route("/projects/{id}/texts", post(save_text))
        .route("/projects/{id}/secrets", post(save_secret))
}

/// The three sections of the project page; `errors` may hold one at "params", "texts"
/// or "secrets".
pub async fn render(person: &Person, id: i64, errors: &FormErrors) -> Result<Markup, ConsoleError> {
    let db = &person.db;
    let params = db
        .query(
            "SELECT id, key, value, initial_value, description FROM sync.project_param
             WHERE project_id = $1 ORDER BY key",
            &[&id],
        )
        .await?;
    let texts = db
        .query(
            "SELECT id, key, lang, value FROM sync.project_text
             WHERE project_id = $1 ORDER BY key, lang",
            &[&id],
        )
        .await?;
    // Keys only, and only as far as PostgreSQL lets this role read them; whether a value
    // is set only for admins (others may not read the column at all).
    let secrets_sql = if person.kind == RoleKind::Admin {
        "SELECT id, key, value IS NOT NULL FROM sync.project_secret WHERE project_id = $1 ORDER BY key"
    } else {
        "SELECT id, key, NULL::boolean FROM sync.project_secret WHERE project_id = $1 ORDER BY key"
    };
    let secrets = db.query(secrets_sql, &[&id]).await.ok();
    let edit = person.can_edit();
    let admin = person.kind == RoleKind::Admin;
    let action = |what: &str| format!("/console/projects/{id}/{what}");
    Ok(html! {
        h2 { "Params" }
        (errors.show("params"))
        table.edit #params {
            thead { tr { th { "key" } th { "value" } th { "initial value" } th { "description" } @if edit { th {} } } }
            tbody {
                @for p in &params {
                    @let pid: i64 = p.get(0);
                    @let form_id = format!("param-{pid}");
                    tr data-key=(p.get::<_, String>(1)) {
                        td { input type="text" name="key" form=(form_id) value=(p.get::<_, String>(1)) disabled[!edit]; }
                        td { input type="text" name="value" form=(form_id) value=(p.get::<_, Option<String>>(2).unwrap_or_default()) disabled[!edit]; }
                        td { input type="text" name="initial_value" form=(form_id) value=(p.get::<_, Option<String>>(3).unwrap_or_default()) disabled[!edit]; }
                        td { input type="text" name="description" form=(form_id) value=(p.get::<_, Option<String>>(4).unwrap_or_default()) disabled[!edit]; }
                        @if edit {
                            td {
                                form.inline id=(form_id) method="post" action=(action("params")) {
                                    (csrf_field(person))
                                    input type="hidden" name="id" value=(pid);
                                    button.secondary type="submit" name="op" value="save" { "Save" }
                                    " "
                                    button.danger type="submit" name="op" value="delete" { "Delete" }
                                }
                            }
                        }
                    }
                }
                @if edit {
                    tr.new {
                        td { input #new-param-key type="text" name="key" form="param-new" placeholder="NEW_KEY"; }
                        td { input #new-param-value type="text" name="value" form="param-new"; }
                        td { input type="text" name="initial_value" form="param-new"; }
                        td { input type="text" name="description" form="param-new"; }
                        td { form.inline #param-new method="post" action=(action("params")) {
                            (csrf_field(person))
                            button #add-param type="submit" name="op" value="save" { "Add" }
                        } }
                    }
                }
            }
        }
        h2 { "Texts" }
        (errors.show("texts"))
        table.edit #texts {
            thead { tr { th { "key" } th { "language" } th { "text" } @if edit { th {} } } }
            tbody {
                @for t in &texts {
                    @let tid: i64 = t.get(0);
                    @let form_id = format!("text-{tid}");
                    tr {
                        td { input type="text" name="key" form=(form_id) value=(t.get::<_, String>(1)) disabled[!edit]; }
                        td { input type="text" name="lang" form=(form_id) value=(t.get::<_, String>(2)) disabled[!edit]; }
                        td { input type="text" name="value" form=(form_id) value=(t.get::<_, String>(3)) disabled[!edit]; }
                        @if edit {
                            td { form.inline id=(form_id) method="post" action=(action("texts")) {
                                (csrf_field(person))
                                input type="hidden" name="id" value=(tid);
                                button.secondary type="submit" name="op" value="save" { "Save" }
                                " "
                                button.danger type="submit" name="op" value="delete" { "Delete" }
                            } }
                        }
                    }
                }
                @if edit {
                    tr.new {
                        td { input type="text" name="key" form="text-new" placeholder="KEY"; }
                        td { input type="text" name="lang" form="text-new" value="en_US"; }
                        td { input type="text" name="value" form="text-new"; }
                        td { form.inline #text-new method="post" action=(action("texts")) {
                            (csrf_field(person))
                            button type="submit" name="op" value="save" { "Add" }
                        } }
                    }
                }
            }
        }
        h2 { "Secrets" }
        p.hint { "Values are write-only: they are given to core_code and eval-context providers and never shown, not even to sync_admin." }
        (errors.show("secrets"))
        @match &secrets {
            None => p.muted #secrets-hidden { "Your role may not read the secrets' keys." },
            Some(rows) => table.edit #secrets {
                thead { tr { th { "key" } th { "value" } @if admin { th { "set or replace" } } } }
                tbody {
                    @for s in rows {
                        @let sid: i64 = s.get(0);
                        @let form_id = format!("secret-{sid}");
                        tr data-key=(s.get::<_, String>(1)) {
                            td { (s.get::<_, String>(1)) }
                            td { @match s.get::<_, Option<bool>>(2) {
                                Some(true) => span.secret-set { "set (hidden)" },
                                Some(false) => span.secret-unset { "not set" },
                                None => span.secret-unset { "hidden" },
                            } }
                            @if admin {
                                td { form.inline id=(form_id) method="post" action=(action("secrets")) {
                                    (csrf_field(person))
                                    input type="hidden" name="key" value=(s.get::<_, String>(1));
                                    // Never pre-filled: the field only carries a new value.
                                    input type="password" name="value" autocomplete="new-password" placeholder="new value";
                                    " "
                                    button.secondary type="submit" name="op" value="save" { "Set" }
                                    " "
                                    button.danger type="submit" name="op" value="delete" { "Delete" }
                                } }
                            }
                        }
                    }
                    @if admin {
                        tr.new {
                            td { input #new-secret-key type="text" name="key" form="secret-new" placeholder="API_KEY"; }
                            td {}
                            td { form.inline #secret-new method="post" action=(action("secrets")) {
                                (csrf_field(person))
                                input #new-secret-value type="password" name="value" autocomplete="new-password" placeholder="value";
                                " "
                                button #add-secret type="submit" name="op" value="save" { "Add" }
                            } }
                        }
                    }
                }
            },
        }
    })
}

/// Show the project page again with PostgreSQL's refusal at `section`.
async fn refused(
    person: &Person,
    id: i64,
    section: &'static str,
    e: tokio_postgres::Error,
) -> Result<Response, ConsoleError> {
    let mut errors = FormErrors::from_pg(&e, &[]);
    for f in &mut errors.0 {
        f.field = Some(section);
    }
    Ok(project_edit::render(person, id, None, None, &errors, &[])
        .await?
        .into_response())
}

fn row_id(form: &Fields) -> Option<i64> {
    form.get("id").and_then(|v| v.parse().ok())
}

async fn save_param(
    person: Person,
    Path(id): Path<i64>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let form = Fields::submitted(form);
    let opt = |k: &str| form.get(k).filter(|v| !v.is_empty()).map(str::to_string);
    let (key, value, initial, description) = (
        form.text("key"),
        opt("value"),
        opt("initial_value"),
        opt("description"),
    );
    let result = match (row_id(&form), form.get("op")) {
        (Some(pid), Some("delete")) => {
            person.db.execute("DELETE FROM sync.project_param WHERE id = $1 AND project_id = $2", &[&pid, &id]).await
        }
        (Some(pid), _) => {
            person.db.execute(
                "UPDATE sync.project_param SET key = $3, value = $4, initial_value = $5, description = $6
                 WHERE id = $1 AND project_id = $2",
                &[&pid, &id, &key, &value, &initial, &description],
            ).await
        }
        (None, _) => {
            person.db.execute(
                "INSERT INTO sync.project_param (project_id, key, value, initial_value, description)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&id, &key, &value, &initial, &description],
            ).await
        }
    };
    match result {
        Ok(_) => Ok(forms::done(&format!("/console/projects/{id}"), "saved").into_response()),
        Err(e) => refused(&person, id, "params", e).await,
    }
}

async fn save_text(
    person: Person,
    Path(id): Path<i64>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let form = Fields::submitted(form);
    let (key, lang, value) = (form.text("key"), form.text("lang"), form.text("value"));
    let result = match (row_id(&form), form.get("op")) {
        (Some(tid), Some("delete")) => {
            person.db.execute("DELETE FROM sync.project_text WHERE id = $1 AND project_id = $2", &[&tid, &id]).await
        }
        (Some(tid), _) => {
            person.db.execute(
                "UPDATE sync.project_text SET key = $3, lang = $4, value = $5 WHERE id = $1 AND project_id = $2",
                &[&tid, &id, &key, &lang, &value],
            ).await
        }
        (None, _) => {
            person.db.execute(
                "INSERT INTO sync.project_text (project_id, key, lang, value) VALUES ($1, $2, $3, $4)",
                &[&id, &key, &lang, &value],
            ).await
        }
    };
    match result {
        Ok(_) => Ok(forms::done(&format!("/console/projects/{id}"), "saved").into_response()),
        Err(e) => refused(&person, id, "texts", e).await,
    }
}

/// Set, replace or delete a secret by key. The value is only ever written.
async fn save_secret(
    person: Person,
    Path(id): Path<i64>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let form = Fields::submitted(form);
    let key = form.text("key");
    let result = if form.get("op") == Some("delete") {
        person
            .db
            .execute(
                "DELETE FROM sync.project_secret WHERE project_id = $1 AND key = $2",
                &[&id, &key],
            )
            .await
    } else {
        let value = form
            .get("value")
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        person
            .db
            .execute(
                "INSERT INTO sync.project_secret (project_id, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (project_id, key) DO UPDATE SET value = EXCLUDED.value",
                &[&id, &key, &value],
            )
            .await
    };
    match result {
        Ok(_) => Ok(forms::done(&format!("/console/projects/{id}"), "secret").into_response()),
        Err(e) => refused(&person, id, "secrets", e).await,
    }
}
