// The Rust primitives behind the Python context (module `pg_sync._native`): SQL in the
// running job's transaction, remote databases (remote/); the rest is Python on top.
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicI64, Ordering};

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::convert::{param_from_py, rows_to_py, Param};
use super::db::{Answer, JobDb, SavepointOp};
use super::errors::{db_error, DatabaseError};
use super::job_io::LogLine;

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
    /// Where the running job's log lines go as they happen, set only inside
    /// `with_log_sink`; without one they come back with the job's outcome.
    static LOG_SINK: RefCell<Option<LogSink>> = const { RefCell::new(None) };
}

/// Takes each line task code logs, as it logs it.
pub(crate) type LogSink = Box<dyn FnMut(LogLine)>;

/// Send the log lines of the code `f` runs to `sink` as they are logged.
pub(crate) fn with_log_sink<R>(sink: LogSink, f: impl FnOnce() -> R) -> R {
    struct Reset(Option<LogSink>);
    impl Drop for Reset {
        fn drop(&mut self) {
            LOG_SINK.with(|s| *s.borrow_mut() = self.0.take());
        }
    }
    let _reset = Reset(LOG_SINK.with(|s| s.borrow_mut().replace(sink)));
    f()
}

/// One line logged by task code: true when a sink took it, false when pg_sync.job must
/// keep it with the job.
#[pyfunction]
fn log_line(
    level: String,
    kind: String,
    recipient: Option<String>,
    message: String,
    at: f64,
) -> bool {
    LOG_SINK.with(|s| match s.borrow_mut().as_mut() {
        Some(sink) => {
            sink(LogLine::from_python(level, kind, recipient, message, at));
            true
        }
        None => false,
    })
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
    m.add_function(wrap_pyfunction!(log_line, &m)?)?;
    m.add("DatabaseError", py.get_type::<DatabaseError>())?;
    m.add_class::<super::remote::RemoteConnection>()?;
    Ok(m)
}
