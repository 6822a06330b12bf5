// Errors shared by the bridge's layers: DbError (a database error as task code sees it,
// from the job's connection or a remote one), the Python DatabaseError it becomes, and a
// Python exception as text. Depends on no other module of python/.
use pyo3::prelude::*;

pyo3::create_exception!(
    builtins,
    DatabaseError,
    pyo3::exceptions::PyException,
    "An error reported by PostgreSQL (or refused before reaching it); `.code` is the SQLSTATE."
);

/// A database error as task code sees it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DbError {
    /// SQLSTATE when PostgreSQL raised it.
    pub code: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl DbError {
    pub fn refused(message: impl Into<String>, hint: impl Into<String>) -> DbError {
        DbError {
            code: None,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> DbError {
        if let Some(db) = e.as_db_error() {
            let mut message = db.message().to_string();
            if let Some(detail) = db.detail() {
                message.push_str("\nDETAIL: ");
                message.push_str(detail);
            }
            return DbError {
                code: Some(db.code().code().to_string()),
                message,
                hint: db.hint().map(str::to_string),
            };
        }
        // Client-side errors (a parameter that cannot be encoded...): the source says why.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        DbError {
            code: None,
            message,
            hint: None,
        }
    }
}

/// A DatabaseError with `.code` (SQLSTATE or None) and `.hint`.
pub(crate) fn db_error(py: Python<'_>, e: DbError) -> PyErr {
    let err = DatabaseError::new_err(match &e.hint {
        Some(h) => format!("{}\nHINT: {h}", e.message),
        None => e.message.clone(),
    });
    let value = err.value(py);
    let _ = value.setattr("code", e.code.clone());
    let _ = value.setattr("hint", e.hint.clone());
    err
}

/// A Python exception as text with its traceback (formatted by pg_sync.runner once the
/// package is loaded, else Python's plain form).
pub(crate) fn format_py_err(py: Python<'_>, e: &PyErr) -> String {
    // The traceback travels beside the exception until Python code catches it.
    if let Some(tb) = e.traceback(py) {
        let _ = e.value(py).setattr("__traceback__", tb);
    }
    let formatted = py
        .import("pg_sync.runner")
        .and_then(|r| r.getattr("format_exception"))
        .and_then(|f| f.call1((e.value(py),)))
        .and_then(|t| t.extract::<String>());
    formatted.unwrap_or_else(|_| e.to_string())
}
