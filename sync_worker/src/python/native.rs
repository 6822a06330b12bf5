// The Rust primitives behind the Python context (module `pg_sync._native`): SQL in the
// running job's transaction, remote databases (remote.rs); the rest is Python on top.
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};
use tokio_postgres::{Column, Row};

use super::convert::{param_from_py, pg_to_py, Param, PgValue};
use super::db::{Answer, DbError, JobDb, SavepointOp};

pyo3::create_exception!(
    builtins,
    DatabaseError,
    pyo3::exceptions::PyException,
    "An error reported by PostgreSQL (or refused before reaching it); `.code` is the SQLSTATE."
);

/// The job sync_cancel_job asked to stop (0: none). Set from the executor's pipe thread;
/// read by the Python signal handler (SIGUSR1, see runner.py), which raises JobCancelled
/// only in that job, and by the runtime, which rolls back a job cancelled while running
/// even if its code caught the exception.
static CANCELLED_JOB: AtomicI64 = AtomicI64::new(0);

/// Ask the running job `job` to stop: its handler gets JobCancelled at its next Python
/// instruction (a job that is not running is not touched).
pub fn request_cancel(job: i64) {
    CANCELLED_JOB.store(job, Ordering::SeqCst);
    // SAFETY: kill() on our own pid with a signal whose handler Python installed.
    unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
}

/// Whether `job` was asked to stop; takes the request (once decided, a late request
/// cannot change what was recorded).
pub(crate) fn take_cancel(job: i64) -> bool {
    CANCELLED_JOB
        .compare_exchange(job, 0, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
}

#[pyfunction]
fn cancelled_job() -> i64 {
    CANCELLED_JOB.load(Ordering::SeqCst)
}

thread_local! {
    /// The job database of the job running on this thread, set only inside `with_job_db`.
    static ACTIVE: Cell<Option<*mut JobDb<'static>>> = const { Cell::new(None) };
}

/// Make `db` reachable from the native functions while `f` runs.
pub(crate) fn with_job_db<R>(db: &mut JobDb<'_>, f: impl FnOnce() -> R) -> R {
    struct Reset(Option<*mut JobDb<'static>>);
    impl Drop for Reset {
        fn drop(&mut self) {
            ACTIVE.with(|a| a.set(self.0));
        }
    }
    // The lifetime is erased only for storage; `Reset` clears the pointer before `db`'s
    // borrow ends, also when `f` panics.
    let ptr = (db as *mut JobDb<'_>).cast::<JobDb<'static>>();
    let _reset = Reset(ACTIVE.with(|a| a.replace(Some(ptr))));
    f()
}

fn active_db<R>(f: impl FnOnce(&mut JobDb<'static>) -> R) -> PyResult<R> {
    let ptr = ACTIVE.with(|a| a.get()).ok_or_else(|| {
        DatabaseError::new_err("no job is running: the database is only reachable from a job")
    })?;
    // Unset meanwhile so a nested call cannot alias the mutable borrow.
    ACTIVE.with(|a| a.set(None));
    struct Restore(*mut JobDb<'static>);
    impl Drop for Restore {
        fn drop(&mut self) {
            ACTIVE.with(|a| a.set(Some(self.0)));
        }
    }
    let _restore = Restore(ptr);
    // SAFETY: `ptr` was stored by `with_job_db` from a live `&mut JobDb` that outlives the
    // closure it runs; it is taken out of ACTIVE above, so this is the only reference.
    let db = unsafe { &mut *ptr };
    Ok(f(db))
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

fn params(args: &Bound<'_, PyTuple>) -> PyResult<Vec<Param>> {
    args.iter().map(|a| param_from_py(&a)).collect()
}

/// `execute(sql, args_tuple) -> int`: rows affected.
#[pyfunction]
fn execute(py: Python<'_>, sql: &str, args: &Bound<'_, PyTuple>) -> PyResult<u64> {
    let params = params(args)?;
    match active_db(|db| db.run(sql, &params, false))? {
        Ok(Answer::Count(n)) => Ok(n),
        Ok(Answer::Rows(rows, _)) => Ok(rows.len() as u64),
        Err(e) => Err(db_error(py, e)),
    }
}

/// `query(sql, args_tuple) -> (column_names, [row_tuple, ...])`.
#[pyfunction]
fn query<'py>(
    py: Python<'py>,
    sql: &str,
    args: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyTuple>> {
    let params = params(args)?;
    let (rows, stmt) = match active_db(|db| db.run(sql, &params, true))? {
        Ok(Answer::Rows(rows, stmt)) => (rows, stmt),
        Ok(Answer::Count(_)) => {
            return Err(DatabaseError::new_err("the statement returned no rows"))
        }
        Err(e) => return Err(db_error(py, e)),
    };
    rows_to_py(py, stmt.columns(), rows)
}

/// Result rows as `(column_names, [row_tuple, ...])`.
pub(crate) fn rows_to_py<'py>(
    py: Python<'py>,
    columns: &[Column],
    rows: Vec<Row>,
) -> PyResult<Bound<'py, PyTuple>> {
    let names = PyTuple::new(py, columns.iter().map(|c| PyString::new(py, c.name())))?;
    let out = PyList::empty(py);
    for row in rows {
        let mut values = Vec::with_capacity(columns.len());
        for (i, col) in columns.iter().enumerate() {
            let v: PgValue = row.try_get(i).map_err(|e| {
                let mut msg = format!("column \"{}\": {e}", col.name());
                if let Some(src) = std::error::Error::source(&e) {
                    msg = format!("column \"{}\": {src}", col.name());
                }
                DatabaseError::new_err(msg)
            })?;
            values.push(pg_to_py(py, v)?);
        }
        out.append(PyTuple::new(py, values)?)?;
    }
    PyTuple::new(py, [names.into_any(), out.into_any()])
}

/// `savepoint(op)`: 0 opens a savepoint, 1 releases it, 2 rolls back to it.
#[pyfunction]
fn savepoint(py: Python<'_>, op: u8) -> PyResult<()> {
    let op = match op {
        0 => SavepointOp::Begin,
        1 => SavepointOp::Release,
        _ => SavepointOp::Rollback,
    };
    active_db(|db| db.savepoint(op))?.map_err(|e| db_error(py, e))
}

/// The native module, registered as `pg_sync._native`.
pub(crate) fn module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let m = PyModule::new(py, "pg_sync._native")?;
    m.add_function(wrap_pyfunction!(execute, &m)?)?;
    m.add_function(wrap_pyfunction!(query, &m)?)?;
    m.add_function(wrap_pyfunction!(savepoint, &m)?)?;
    m.add_function(wrap_pyfunction!(cancelled_job, &m)?)?;
    m.add("DatabaseError", py.get_type::<DatabaseError>())?;
    m.add_class::<super::remote::RemoteConnection>()?;
    Ok(m)
}
