// What the editing pages share: a submitted form's fields, the size limit of code, the
// notices shown after a redirect, and finding a project by id as the person.
use crate::console::pg_error::FormErrors;
use crate::console::{ConsoleError, Person};
use axum::response::Redirect;
use maud::{html, Markup};

/// The most code (one field) a form may save: far more than any task needs; the console's
/// body limit (4 MiB) refuses a far larger paste before it reaches a handler.
pub const MAX_CODE: usize = 1 << 20;

/// The fields of a submitted urlencoded form, in order (a name may repeat).
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// A submitted form's fields. Browsers send a textarea's line breaks as CRLF; code is
    /// stored with LF, as written.
    pub fn submitted(fields: Vec<(String, String)>) -> Fields {
        Fields(
            fields
                .into_iter()
                .map(|(k, v)| (k, v.replace("\r\n", "\n")))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The field's value, empty when absent.
    pub fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or("").to_string()
    }

    /// The trimmed value, None when absent or blank.
    pub fn opt(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A checkbox: present and not "off".
    pub fn checked(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v != "off" && v != "false")
    }
}

/// Refuse code over `MAX_CODE` at its field (nothing is saved).
pub fn check_size(field: &'static str, code: &str) -> Result<(), FormErrors> {
    if code.len() > MAX_CODE {
        return Err(FormErrors::at(
            field,
            format!(
                "the code is too large: {} KiB, the most is {} KiB; nothing was saved",
                code.len() >> 10,
                MAX_CODE >> 10
            ),
        ));
    }
    Ok(())
}

/// A one-line list (e.g. providers or columns), split on commas, spaces or new lines.
pub fn list(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// What a redirect's `?done=` code says. Fixed words: a link cannot make a page say
/// anything else.
pub fn notice(done: Option<&str>) -> Markup {
    let text = match done.unwrap_or("") {
        "created" => "Created.",
        "saved" => "Saved.",
        "deleted" => "Deleted.",
        "imported" => "Imported.",
        "secret" => "Secret value stored. It is never shown again.",
        "run" => "Made due now.",
        _ => return html! {},
    };
    crate::console::layout::notice(text)
}

/// A redirect after a successful POST, with its notice.
pub fn done(path: &str, what: &str) -> Redirect {
    let sep = if path.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{path}{sep}done={what}"))
}

/// A project's name, read as the person (not found when they cannot see it).
pub async fn project_name(person: &Person, id: i64) -> Result<String, ConsoleError> {
    let row = person
        .db
        .query_opt("SELECT name FROM sync.project WHERE id = $1", &[&id])
        .await?;
    row.map(|r| r.get(0))
        .ok_or_else(|| ConsoleError::not_found(format!("no project with id {id}")))
}

/// The `?done=` and `?job=` of a page.
#[derive(serde::Deserialize, Default)]
pub struct Shown {
    pub done: Option<String>,
    pub job: Option<i64>,
}

/// A field's label, input and errors in a `form.grid`.
pub fn row(label: &str, field: &'static str, errors: &FormErrors, input: Markup) -> Markup {
    html! {
        label for=(field) { (label) }
        div { (input) (errors.show(field)) }
    }
}

/// A list page's URL keeping its filters (the non-empty ones) and a page mark.
pub fn filtered_url(
    path: &str,
    filters: &[(&str, &String)],
    marks: &[(&str, Option<i64>)],
) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in filters {
        if !v.is_empty() {
            q.append_pair(k, v);
        }
    }
    for (k, v) in marks {
        if let Some(v) = v {
            q.append_pair(k, &v.to_string());
        }
    }
    format!("{path}?{}", q.finish())
}
