// PostgreSQL's refusal of a form's values, shown next to the field it is about: the
// SQLSTATE, PostgreSQL's message and its hint, placed by the words the error mentions.
use maud::{html, Markup};

/// One error, at a field of the form (or at the top when no field fits).
#[derive(Debug, Clone)]
pub struct FieldError {
    pub field: Option<&'static str>,
    pub sqlstate: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

/// The errors of one submitted form.
#[derive(Debug, Default, Clone)]
pub struct FormErrors(pub Vec<FieldError>);

impl FormErrors {
    /// Place `e` at the first of `fields` it names: each field is `(name, words)`, and
    /// the error is that field's when its message, hint, column or constraint contains
    /// the name or one of the words (e.g. `("since", &["timestamp", "time zone"])`).
    pub fn from_pg(e: &tokio_postgres::Error, fields: &[(&'static str, &[&str])]) -> FormErrors {
        let Some(db) = e.as_db_error() else {
            return FormErrors(vec![FieldError {
                field: None,
                sqlstate: None,
                message: crate::pg::describe(e),
                hint: None,
            }]);
        };
        let haystack = [
            Some(db.message()),
            db.hint(),
            db.detail(),
            db.column(),
            db.constraint(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
        let field = fields
            .iter()
            .find(|(name, words)| {
                haystack.contains(&name.to_lowercase())
                    || words
                        .iter()
                        .any(|w| !w.is_empty() && haystack.contains(&w.to_lowercase()))
            })
            .map(|(name, _)| *name);
        FormErrors(vec![FieldError {
            field,
            sqlstate: Some(db.code().code().to_string()),
            message: db.message().to_string(),
            hint: db.hint().map(str::to_string),
        }])
    }

    /// An error of the console's own at `field`.
    pub fn at(field: &'static str, message: impl Into<String>) -> FormErrors {
        FormErrors(vec![FieldError {
            field: Some(field),
            sqlstate: None,
            message: message.into(),
            hint: None,
        }])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `field` has an error (to mark its input).
    pub fn has(&self, field: &str) -> bool {
        self.0.iter().any(|e| e.field == Some(field))
    }

    /// The errors to show under `field`.
    pub fn show(&self, field: &str) -> Markup {
        self.render(|e| e.field == Some(field))
    }

    /// The errors that fit no field, for the top of the form.
    pub fn general(&self) -> Markup {
        self.render(|e| e.field.is_none())
    }

    fn render(&self, pick: impl Fn(&FieldError) -> bool) -> Markup {
        html! {
            @for e in self.0.iter().filter(|e| pick(e)) {
                div.field-error role="alert" data-field=[e.field] {
                    (e.message)
                    @if let Some(code) = &e.sqlstate { " " span.sqlstate { "(" (code) ")" } }
                    @if let Some(hint) = &e.hint { div.hint { (hint) } }
                }
            }
        }
    }
}
