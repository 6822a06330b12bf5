// The Python exceptions the native module raises, shared by the job's connection
// (native.rs) and remote connections (remote.rs).
use pyo3::prelude::*;

use super::db::DbError;

pyo3::create_exception!(
    builtins,
    DatabaseError,
    pyo3::exceptions::PyException,
    "An error reported by PostgreSQL (or refused before reaching it); `.code` is the SQLSTATE."
);

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
