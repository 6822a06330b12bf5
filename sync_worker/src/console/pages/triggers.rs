// A project's triggers of the four kinds: the list, creating one and editing one (cron:
// interval or schedule and zone; db: table, event, watched columns, filter, and why it is
// broken; webhook: content type; button: description). Actions are in trigger_run.rs.
use super::forms::{self, Fields, Shown};
use super::trigger_run;
use crate::console::layout::{self, csrf_field};
use crate::console::pg_error::FormErrors;
use crate::console::{ConsoleError, ConsoleState, Person};
use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use maud::{html, Markup};
use tokio_postgres::types::ToSql;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/projects/{id}/triggers", get(list))
        .route("/projects/{id}/triggers/{kind}/new", get(new).post(create))
        .route("/projects/{id}/triggers/{kind}/{tr}", get(show).post(save))
}

/// One editable column: form field (= column), label, SQL type, whether it may be NULL.
pub struct Col {
    pub name: &'static str,
    pub label: &'static str,
    pub ty: &'static str,
    pub nullable: bool,
    pub hint: &'static str,
}

const fn col(
    name: &'static str,
    label: &'static str,
    ty: &'static str,
    nullable: bool,
    hint: &'static str,
) -> Col {
    Col {
        name,
        label,
        ty,
        nullable,
        hint,
    }
}

const COMMON: [Col; 2] = [
    col(
        "name",
        "Name",
        "text",
        false,
        "trigger_name in code: letters, digits, _",
    ),
    col("task_id", "Task", "bigint", false, ""),
];
const CRON: &[Col] = &[
    col(
        "interval",
        "Interval",
        "interval",
        true,
        "e.g. 5 minutes; leave empty for a schedule",
    ),
    col(
        "schedule",
        "Schedule",
        "text",
        true,
        "cron expression, e.g. 0 2 * * *; leave empty for an interval",
    ),
    col(
        "timezone",
        "Time zone",
        "text",
        false,
        "IANA zone the schedule is read in, e.g. Europe/Berlin",
    ),
    col("calls_left", "Runs left", "integer", false, "-1 = forever"),
];
const DB: &[Col] = &[
    col(
        "table_name",
        "Table",
        "regclass",
        false,
        "the watched table (it needs a primary key)",
    ),
    col(
        "event",
        "Event",
        "text",
        false,
        "create, update, create_or_update, delete or timed",
    ),
    col(
        "watched_columns",
        "Watched columns",
        "text[]",
        true,
        "an update fires only if one of these changed (comma-separated; empty = any)",
    ),
    col(
        "apply_on",
        "Filter (apply_on)",
        "text",
        true,
        "SQL condition over NEW (OLD for delete), e.g. NEW.state = 'closed'",
    ),
    col(
        "before_update",
        "Before update",
        "text",
        true,
        "SQL condition over OLD an updated row must have met",
    ),
    col(
        "date_column",
        "Date column",
        "name",
        true,
        "timed: the column the delay counts from",
    ),
    col(
        "time_offset",
        "Delay",
        "interval",
        false,
        "timed: e.g. 1 day",
    ),
    col(
        "chunk_size",
        "Chunk size",
        "integer",
        false,
        "most records per job",
    ),
];
const WEBHOOK: &[Col] = &[col(
    "content_type",
    "Content type",
    "text",
    false,
    "json or form",
)];
const BUTTON: &[Col] = &[col(
    "description",
    "Description",
    "text",
    true,
    "what pressing it does",
)];

/// The table and the kind's own columns; None for an unknown kind.
pub fn kind(k: &str) -> Option<(&'static str, &'static [Col])> {
    Some(match k {
        "cron" => ("sync.cron_trigger", CRON),
        "db" => ("sync.db_trigger", DB),
        "webhook" => ("sync.webhook_trigger", WEBHOOK),
        "button" => ("sync.button_trigger", BUTTON),
        _ => return None,
    })
}

fn known(k: &str) -> Result<(&'static str, &'static [Col]), ConsoleError> {
    kind(k).ok_or_else(|| {
        ConsoleError::not_found(format!("no trigger kind {k}: cron, db, webhook or button"))
    })
}

/// Where PostgreSQL's refusal belongs, by the words it uses (first match wins).
const PLACES: &[(&str, &[&str])] = &[
    ("apply_on", &["apply_on"]),
    ("before_update", &["before_update"]),
    ("watched_columns", &["watched"]),
    ("date_column", &["date_column"]),
    ("schedule", &["schedule", "cron expression"]),
    ("timezone", &["time zone", "timezone"]),
    ("interval", &["interval"]),
    ("event", &["event"]),
    ("content_type", &["content_type"]),
    ("chunk_size", &["chunk_size"]),
    ("name", &["trigger_name", "name_check", "already"]),
    ("table_name", &["table", "relation"]),
];

async fn list(
    person: Person,
    Path(id): Path<i64>,
    Query(shown): Query<Shown>,
) -> Result<Markup, ConsoleError> {
    let project = forms::project_name(&person, id).await?;
    let db = &person.db;
    let base = format!("/console/projects/{id}/triggers");
    let p: [&(dyn ToSql + Sync); 1] = [&id];
    let (cron, dbt, hooks, buttons) = tokio::try_join!(
        db.query("SELECT c.id, c.name, t.name, c.active, coalesce(c.\"interval\"::text, c.schedule || ' (' || c.timezone || ')'), c.next_run_at
                  FROM sync.cron_trigger c JOIN sync.task t ON t.id = c.task_id WHERE c.project_id = $1 ORDER BY c.name", &p),
        db.query("SELECT d.id, d.name, t.name, d.active, d.table_name::text || ' ' || d.event, d.broken_reason
                  FROM sync.db_trigger d JOIN sync.task t ON t.id = d.task_id WHERE d.project_id = $1 ORDER BY d.name", &p),
        db.query("SELECT w.id, w.name, t.name, w.active, w.content_type
                  FROM sync.webhook_trigger w JOIN sync.task t ON t.id = w.task_id WHERE w.project_id = $1 ORDER BY w.name", &p),
        db.query("SELECT b.id, b.name, t.name, b.active, coalesce(b.description, '')
                  FROM sync.button_trigger b JOIN sync.task t ON t.id = b.task_id WHERE b.project_id = $1 ORDER BY b.name", &p),
    )?;
    let table = |k: &str, rows: &[tokio_postgres::Row], what: &str| {
        html! {
            h2 { (k) " triggers" }
            @if rows.is_empty() { p.muted { "None." } } @else {
                table id={ "triggers-" (k) } {
                    thead { tr { th { "name" } th { "task" } th { "active" } th { (what) } } }
                    tbody {
                        @for r in rows {
                            tr data-name=(r.get::<_, String>(1)) {
                                td { a href={ (base) "/" (k) "/" (r.get::<_, i64>(0)) } { (r.get::<_, String>(1)) } }
                                td { (r.get::<_, String>(2)) }
                                td { (if r.get::<_, bool>(3) { "yes" } else { "no" }) }
                                td {
                                    (r.get::<_, String>(4))
                                    @if k == "cron" { " · next " (layout::time(&r.get(5))) }
                                    @if k == "db" { @if let Some(why) = r.get::<_, Option<String>>(5) { div.broken { "Broken: " (why) } } }
                                }
                            }
                        }
                    }
                }
            }
            @if person.can_edit() { p { a.new-trigger href={ (base) "/" (k) "/new" } { "New " (k) " trigger" } } }
        }
    };
    let body = html! {
        (super::editor_assets::styles())
        (forms::notice(shown.done.as_deref()))
        p { a href={ "/console/projects/" (id) } { "← project " (project) } }
        (table("cron", &cron, "interval or schedule"))
        (table("db", &dbt, "table and event"))
        (table("webhook", &hooks, "content type"))
        (table("button", &buttons, "description"))
    };
    Ok(layout::page(
        &person,
        "/console/projects",
        &format!("Triggers of {project}"),
        body,
    ))
}

async fn new(person: Person, Path((id, k)): Path<(i64, String)>) -> Result<Markup, ConsoleError> {
    known(&k)?;
    render(&person, id, &k, None, None, &FormErrors::default(), None).await
}

async fn show(
    person: Person,
    Path((id, k, tr)): Path<(i64, String, i64)>,
    Query(shown): Query<Shown>,
) -> Result<Markup, ConsoleError> {
    known(&k)?;
    render(
        &person,
        id,
        &k,
        Some(tr),
        None,
        &FormErrors::default(),
        Some(&shown),
    )
    .await
}

/// The stored values of a trigger, as text by column.
async fn stored(person: &Person, k: &str, tr: i64, id: i64) -> Result<Fields, ConsoleError> {
    let (table, cols) = known(k)?;
    let mut names: Vec<String> = vec!["active::text".into()];
    for c in COMMON.iter().chain(cols) {
        names.push(format!("coalesce(\"{}\"::text, '')", c.name));
    }
    // Column names come from the fixed lists above.
    let sql = format!(
        "SELECT {} FROM {table} WHERE id = $1 AND project_id = $2",
        names.join(", ")
    );
    let row = person
        .db
        .query_opt(&sql, &[&tr, &id])
        .await?
        .ok_or_else(|| {
            ConsoleError::not_found(format!("project {id} has no {k} trigger with id {tr}"))
        })?;
    let mut f = vec![];
    if row.get::<_, String>(0) == "true" {
        f.push(("active".to_string(), "on".to_string()));
    }
    for (i, c) in COMMON.iter().chain(cols).enumerate() {
        let mut v: String = row.get(i + 1);
        if c.ty == "text[]" {
            v = v
                .trim_matches(|ch| ch == '{' || ch == '}')
                .replace(',', ", ");
        }
        f.push((c.name.to_string(), v));
    }
    Ok(Fields(f))
}

#[allow(clippy::too_many_arguments)]
async fn render(
    person: &Person,
    id: i64,
    k: &str,
    tr: Option<i64>,
    typed: Option<&Fields>,
    errors: &FormErrors,
    shown: Option<&Shown>,
) -> Result<Markup, ConsoleError> {
    let (_, cols) = known(k)?;
    let project = forms::project_name(person, id).await?;
    let values = match (typed, tr) {
        (Some(t), _) => Fields(t.0.clone()),
        (None, Some(tr)) => stored(person, k, tr, id).await?,
        (None, None) => Fields(vec![
            ("active".into(), "on".into()),
            ("timezone".into(), "UTC".into()),
            ("calls_left".into(), "-1".into()),
            ("time_offset".into(), "00:00:00".into()),
            ("chunk_size".into(), "1000".into()),
            ("content_type".into(), "json".into()),
            ("event".into(), "update".into()),
        ]),
    };
    let tasks = person
        .db
        .query(
            "SELECT id, name FROM sync.task WHERE project_id = $1 ORDER BY name",
            &[&id],
        )
        .await?;
    let edit = person.can_edit();
    let action = match tr {
        Some(tr) => format!("/console/projects/{id}/triggers/{k}/{tr}"),
        None => format!("/console/projects/{id}/triggers/{k}/new"),
    };
    let extra = match tr {
        Some(tr) => {
            trigger_run::extra(person, id, &project, k, tr, &values.text("name"), shown).await?
        }
        None => html! {},
    };
    let title = match tr {
        Some(_) => format!("{k} trigger {} of {project}", values.text("name")),
        None => format!("New {k} trigger of {project}"),
    };
    let body = html! {
        (super::editor_assets::styles())
        (forms::notice(shown.and_then(|s| s.done.as_deref())))
        p { a href={ "/console/projects/" (id) "/triggers" } { "← triggers of " (project) } }
        (extra)
        div.card {
            (errors.general())
            form.grid #trigger-form method="post" action=(action) {
                (csrf_field(person))
                label for="active" { "Active" }
                div { input #active type="checkbox" name="active" checked[values.checked("active")] disabled[!edit]; }
                @for c in COMMON.iter().chain(cols) {
                    (forms::row(c.label, c.name, errors, html! {
                        @if c.name == "task_id" {
                            select #task_id name="task_id" disabled[!edit] {
                                @for t in &tasks {
                                    @let tid = t.get::<_, i64>(0).to_string();
                                    option value=(tid) selected[values.get("task_id") == Some(tid.as_str())] { (t.get::<_, String>(1)) }
                                }
                            }
                        } @else {
                            input id=(c.name) type="text" name=(c.name) value=(values.text(c.name)) disabled[!edit]
                                class=[errors.has(c.name).then_some("invalid")];
                            @if !c.hint.is_empty() { div.hint { (c.hint) } }
                        }
                    }))
                }
                @if edit {
                    div.full.actions {
                        button #save type="submit" name="op" value="save" { (if tr.is_some() { "Save" } else { "Create" }) }
                        @if tr.is_some() { button.danger #delete type="submit" name="op" value="delete" { "Delete" } }
                    }
                }
            }
        }
    };
    Ok(layout::page(person, "/console/projects", &title, body))
}

async fn create(
    person: Person,
    Path((id, k)): Path<(i64, String)>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    write(person, id, k, None, Fields::submitted(form)).await
}

async fn save(
    person: Person,
    Path((id, k, tr)): Path<(i64, String, i64)>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    write(person, id, k, Some(tr), Fields::submitted(form)).await
}

/// Insert or update a trigger with the form's columns, each cast by PostgreSQL from text
/// (so a bad interval, table or filter is PostgreSQL's error, shown at its field).
async fn write(
    person: Person,
    id: i64,
    k: String,
    tr: Option<i64>,
    form: Fields,
) -> Result<Response, ConsoleError> {
    let (table, cols) = known(&k)?;
    if let (Some(tr), Some("delete")) = (tr, form.get("op")) {
        let sql = format!("DELETE FROM {table} WHERE id = $1 AND project_id = $2");
        person.db.execute(&sql, &[&tr, &id]).await?;
        return Ok(
            forms::done(&format!("/console/projects/{id}/triggers"), "deleted").into_response(),
        );
    }
    let mut names = vec!["active".to_string()];
    let mut exprs = vec!["CAST($1::text AS boolean)".to_string()];
    let mut params: Vec<Option<String>> = vec![Some(form.checked("active").to_string())];
    for c in COMMON.iter().chain(cols) {
        let v = form.opt(c.name);
        if v.is_none() && !c.nullable {
            // Empty: the column's default on insert, unchanged on update (NOT NULL ones
            // without a default get PostgreSQL's error on insert).
            if tr.is_some()
                || matches!(
                    c.name,
                    "timezone" | "calls_left" | "time_offset" | "chunk_size" | "content_type"
                )
            {
                continue;
            }
        }
        params.push(v);
        let n = params.len();
        names.push(format!("\"{}\"", c.name));
        exprs.push(if c.ty == "text[]" {
            format!("CASE WHEN ${n}::text IS NULL THEN NULL ELSE pg_catalog.string_to_array(pg_catalog.regexp_replace(${n}::text, '[\\s,]+', ',', 'g'), ',') END")
        } else {
            format!("CAST(${n}::text AS {})", c.ty)
        });
    }
    let n = params.len();
    // Identifiers come from the fixed column lists; values are bound parameters.
    let sql = match tr {
        Some(_) => format!(
            "UPDATE {table} SET {} WHERE id = ${} AND project_id = ${} RETURNING id",
            names
                .iter()
                .zip(&exprs)
                .map(|(c, e)| format!("{c} = {e}"))
                .collect::<Vec<_>>()
                .join(", "),
            n + 1,
            n + 2
        ),
        None => format!(
            "INSERT INTO {table} ({}) VALUES ({}) RETURNING id",
            names.join(", "),
            exprs.join(", ")
        ),
    };
    let mut refs: Vec<&(dyn ToSql + Sync)> =
        params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    let (tr_id, pid) = (tr.unwrap_or(0), id);
    if tr.is_some() {
        refs.push(&tr_id);
        refs.push(&pid);
    }
    match person.db.query_opt(&sql, &refs).await {
        Ok(Some(row)) => {
            let t: i64 = row.get(0);
            let what = if tr.is_some() { "saved" } else { "created" };
            Ok(
                forms::done(&format!("/console/projects/{id}/triggers/{k}/{t}"), what)
                    .into_response(),
            )
        }
        Ok(None) => Err(ConsoleError::not_found(format!(
            "project {id} has no {k} trigger with id {tr_id}"
        ))),
        Err(e) => {
            let errors = FormErrors::from_pg(&e, PLACES);
            Ok(render(&person, id, &k, tr, Some(&form), &errors, None)
                .await?
                .into_response())
        }
    }
}
