// The console's error answer: a status and an HTML page saying what went wrong and what
// to do, made from PostgreSQL errors (SQLSTATE, message, hint) or the console's own.
use super::layout;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::html;

#[derive(Debug)]
pub struct ConsoleError {
    pub status: StatusCode,
    pub message: String,
    pub hint: Option<String>,
    pub sqlstate: Option<String>,
}

impl ConsoleError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ConsoleError {
        ConsoleError {
            status,
            message: message.into(),
            hint: None,
            sqlstate: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> ConsoleError {
        ConsoleError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn bad_request(message: impl Into<String>) -> ConsoleError {
        ConsoleError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> ConsoleError {
        self.hint = Some(hint.into());
        self
    }

    fn title(&self) -> &'static str {
        match self.status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::PAYLOAD_TOO_LARGE => "Too large",
            StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
            StatusCode::SERVICE_UNAVAILABLE => "Database unreachable",
            s if s.is_client_error() => "Cannot do that",
            _ => "Something went wrong",
        }
    }
}

/// A failed query: PostgreSQL's refusal (42501 for a role without the right) keeps its
/// words; a lost connection says to sign in again.
impl From<tokio_postgres::Error> for ConsoleError {
    fn from(e: tokio_postgres::Error) -> ConsoleError {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            let status = match code {
                "42501" => StatusCode::FORBIDDEN,
                c if c.starts_with("22") || c.starts_with("23") || c.starts_with("P0") => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                "02000" | "42704" => StatusCode::NOT_FOUND,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return ConsoleError {
                status,
                message: db.message().to_string(),
                hint: db.hint().map(str::to_string),
                sqlstate: Some(code.to_string()),
            };
        }
        if crate::pg::is_connection_error(&e) {
            return ConsoleError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the database connection was lost: {}",
                    crate::pg::describe(&e)
                ),
            )
            .with_hint("sign in again once the database is back");
        }
        ConsoleError::new(StatusCode::INTERNAL_SERVER_ERROR, crate::pg::describe(&e))
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let body = layout::bare(
            self.title(),
            html! {
                p.error role="alert" {
                    (self.message)
                    @if let Some(code) = &self.sqlstate { " " span.sqlstate { "(" (code) ")" } }
                }
                @if let Some(hint) = &self.hint { p.hint { (hint) } }
                p { a href="/console/" { "Back to the overview" } }
            },
        );
        (self.status, Html(body.into_string())).into_response()
    }
}
