// A connection to another PostgreSQL database for trusted Python code (the class
// `pg_sync._native.RemoteConnection`, wrapped by pg_sync/remote.py): the statements, `$n`
// placeholders and value conversions of `db`, with autocommit or explicit transactions.
//
// Why it is built this way:
// - Its own current-thread tokio runtime: the connection task runs only while a statement
//   is awaited, so nothing runs between jobs and the executor gets no extra thread.
// - The DSN holds a password: it is parsed once and never shown (dsn.rs). Messages name
//   the database as user@host:port/dbname, and every message is scrubbed of the password.
// - Waits are cut into 100 ms slices with a check of Python signals in between (wait.rs),
//   so the job's soft time limit (SIGALRM) also stops a slow remote statement: the
//   statement is cancelled on the server and the connection dropped (the next use
//   reconnects).
// - A connection that died while idle (server restart, idle timeout) is noticed before
//   the next statement and replaced; one lost during a statement or a transaction is an
//   error (`DatabaseUnavailable`, which retries the job): the statement may have run.
mod dsn;
mod wait;

use std::collections::HashMap;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyTuple, PyType};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Statement};

use super::convert::{param_from_py, rows_to_py, Param};
use super::errors::{db_error, DatabaseError, DbError};
use super::statement_rules::check_remote_statement;
use wait::{wait, Interrupted};

/// Prepared statements kept per connection; cleared when full.
const STATEMENT_CACHE_SIZE: usize = 256;

/// What a statement returned.
enum Ran {
    Rows(Statement, Vec<tokio_postgres::Row>),
    Count(u64),
}

/// One connection to a remote database, opened on first use.
#[pyclass(module = "pg_sync._native", name = "RemoteConnection")]
pub struct RemoteConnection {
    config: Config,
    /// The DSN's TLS policy (libpq's sslmode, sslrootcert), as for the worker's own.
    target: crate::pg::Target,
    label: String,
    secrets: dsn::Secrets,
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    statements: HashMap<String, Statement>,
    /// Open transaction levels: 1 = BEGIN, more = savepoints inside it.
    depth: u32,
    /// A statement failed at this depth: the transaction is aborted until a rollback.
    aborted: Option<(u32, String)>,
}

impl RemoteConnection {
    fn scrub(&self, message: &str) -> String {
        self.secrets.scrub(message)
    }

    fn unavailable(&self, py: Python<'_>, what: &str, detail: &str) -> PyErr {
        let message = self.scrub(&format!("remote database {}: {what}: {detail}", self.label));
        let err = match py
            .import("pg_sync.errors")
            .and_then(|m| m.getattr("DatabaseUnavailable"))
            .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from))
        {
            Ok(cls) => PyErr::from_type(cls, message),
            Err(e) => return e,
        };
        let value = err.value(py);
        let _ = value.setattr(
            "code",
            if what.starts_with("cannot connect") {
                "08001"
            } else {
                "08006"
            },
        );
        let _ = value.setattr("hint", py.None());
        err
    }

    fn sql_error(&self, py: Python<'_>, e: DbError) -> PyErr {
        let e = DbError {
            code: e.code,
            message: self.scrub(&e.message),
            hint: e.hint.map(|h| self.scrub(&h)),
        };
        db_error(py, e)
    }

    /// Forget the connection (after it failed, or to leave a transaction for good).
    fn drop_connection(&mut self) {
        if self.client.take().is_some() {
            // The connection task ends (and closes its socket) once it sees the client
            // gone; it runs only inside block_on.
            self.rt.block_on(async {
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
            });
        }
        self.statements.clear();
        self.depth = 0;
        self.aborted = None;
    }

    /// The statement was interrupted by the soft time limit: cancel it on the server and
    /// drop the connection, whose state is unknown now.
    fn abandon(&mut self, py: Python<'_>, why: Interrupted) -> PyErr {
        if let (Some(client), Ok(tls)) = (&self.client, crate::pg::connector(&self.target)) {
            let token = client.cancel_token();
            let rt = &self.rt;
            py.detach(|| {
                rt.block_on(async {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(2), token.cancel_query(tls)).await;
                })
            });
        }
        self.drop_connection();
        why.0
    }

    /// A failed statement: connection errors drop the connection, server errors inside a
    /// transaction mark it aborted.
    fn failed(&mut self, py: Python<'_>, e: tokio_postgres::Error) -> PyErr {
        if crate::pg::is_connection_error(&e) {
            let detail = DbError::from(e).message;
            let in_tx = self.depth > 0;
            self.drop_connection();
            let what = if in_tx {
                "the connection was lost during a transaction (it was rolled back)"
            } else {
                "the connection was lost"
            };
            return self.unavailable(py, what, &detail);
        }
        let e = DbError::from(e);
        if e.code.as_deref() == Some("26000") || e.code.as_deref() == Some("0A000") {
            // A statement of an old connection or a changed table: prepare afresh.
            self.statements.clear();
        }
        if e.code.is_some() && self.depth > 0 && self.aborted.is_none() {
            self.aborted = Some((self.depth, e.message.clone()));
        }
        self.sql_error(py, e)
    }

    /// Make sure a live connection is open: connect (again) when there is none or it
    /// died while idle.
    fn connect(&mut self, py: Python<'_>) -> PyResult<()> {
        if let Some(client) = &self.client {
            if self.depth == 0 {
                // Let the connection task read what arrived while idle (an EOF, a FATAL
                // "terminating connection") so a dead connection is seen before use.
                self.rt.block_on(async {
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                });
            }
            if !client.is_closed() {
                return Ok(());
            }
            let in_tx = self.depth > 0;
            self.drop_connection();
            if in_tx {
                return Err(self.unavailable(
                    py,
                    "the connection was lost during a transaction (it was rolled back)",
                    "connection closed",
                ));
            }
        }
        let config = self.config.clone();
        let tls = crate::pg::connector(&self.target).map_err(|e| {
            self.unavailable(py, "cannot connect", &format!("cannot set up TLS: {e}"))
        })?;
        let connected = wait(py, &self.rt, async move {
            let (client, connection) = config.connect(tls).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok::<Client, tokio_postgres::Error>(client)
        });
        match connected {
            Ok(Ok(client)) => {
                self.client = Some(client);
                Ok(())
            }
            Ok(Err(e)) if crate::pg::is_connection_error(&e) => {
                let detail = DbError::from(e).message;
                Err(self.unavailable(py, "cannot connect", &detail))
            }
            Ok(Err(e)) => {
                // Refused for good (bad password, no such database, TLS required...).
                let e = DbError::from(e);
                let message = format!(
                    "cannot connect to remote database {}: {}",
                    self.label, e.message
                );
                Err(self.sql_error(py, DbError { message, ..e }))
            }
            Err(interrupted) => Err(interrupted.0),
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("connect() succeeded")
    }

    fn statement(&mut self, py: Python<'_>, sql: &str) -> PyResult<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let prepared = wait(py, &self.rt, self.client().prepare(sql));
        let stmt = match prepared {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(self.failed(py, e)),
            Err(i) => return Err(self.abandon(py, i)),
        };
        if self.statements.len() >= STATEMENT_CACHE_SIZE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }

    fn check_usable(&self, py: Python<'_>) -> PyResult<()> {
        if let Some((_, why)) = &self.aborted {
            return Err(self.sql_error(
                py,
                DbError {
                    code: Some("25P02".into()),
                    message: format!(
                        "the remote transaction is aborted by an earlier error ({why}); statements are refused until its block ends"
                    ),
                    hint: Some("Let the error propagate out of `with postgres.transaction():`, or wrap the failing part in a nested transaction() block.".into()),
                },
            ));
        }
        Ok(())
    }

    /// Run a statement; rows or the count of affected rows.
    fn run(
        &mut self,
        py: Python<'_>,
        sql: &str,
        args: &Bound<'_, PyTuple>,
        want_rows: bool,
    ) -> PyResult<Ran> {
        let params: Vec<Param> = args
            .iter()
            .map(|a| param_from_py(&a))
            .collect::<PyResult<_>>()?;
        check_remote_statement(sql).map_err(|e| self.sql_error(py, e))?;
        self.check_usable(py)?;
        self.connect(py)?;
        let stmt = self.statement(py, sql)?;
        if stmt.params().len() != params.len() {
            return Err(self.sql_error(
                py,
                DbError::refused(
                    format!(
                        "the statement has {} placeholder(s) but {} argument(s) were given",
                        stmt.params().len(),
                        params.len()
                    ),
                    "Pass one argument per $1, $2, ... placeholder.",
                ),
            ));
        }
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let client = self.client();
        let answer = if want_rows {
            wait(py, &self.rt, client.query(&stmt, &refs))
                .map(|r| r.map(|rows| Ran::Rows(stmt.clone(), rows)))
        } else {
            wait(py, &self.rt, client.execute(&stmt, &refs)).map(|r| r.map(Ran::Count))
        };
        match answer {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => {
                if e.as_db_error().is_some() {
                    // A changed table can invalidate the cached plan; prepare afresh next time.
                    self.statements.remove(sql);
                }
                Err(self.failed(py, e))
            }
            Err(i) => Err(self.abandon(py, i)),
        }
    }

    /// After COMMIT/RELEASE/ROLLBACK of level `depth` (also when it failed: a failed
    /// COMMIT ends the transaction too; a lost connection has reset everything).
    fn left_level(&mut self, depth: u32) {
        if self.client.is_some() && self.depth == depth {
            self.depth = depth - 1;
            if matches!(self.aborted, Some((at, _)) if at >= depth) {
                self.aborted = None;
            }
        }
    }

    fn simple(&mut self, py: Python<'_>, sql: &str) -> PyResult<()> {
        self.connect(py)?;
        match wait(py, &self.rt, self.client().batch_execute(sql)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.failed(py, e)),
            Err(i) => Err(self.abandon(py, i)),
        }
    }
}

#[pymethods]
impl RemoteConnection {
    /// Parse `dsn` (URL or key=value form); nothing is connected yet.
    #[new]
    #[pyo3(signature = (dsn, application_name=None))]
    fn new(dsn: &str, application_name: Option<&str>) -> PyResult<Self> {
        let dsn::Dsn {
            config,
            target,
            label,
            secrets,
        } = dsn::parse(dsn, application_name).map_err(DatabaseError::new_err)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                DatabaseError::new_err(format!(
                    "cannot start a runtime for the remote database: {e}"
                ))
            })?;
        Ok(RemoteConnection {
            label,
            config,
            target,
            secrets,
            rt,
            client: None,
            statements: HashMap::new(),
            depth: 0,
            aborted: None,
        })
    }

    /// `user@host:port/dbname`.
    #[getter]
    fn label(&self) -> &str {
        &self.label
    }

    /// Open transaction levels (0: autocommit).
    #[getter]
    fn depth(&self) -> u32 {
        self.depth
    }

    /// Whether a connection is open now.
    #[getter]
    fn connected(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.is_closed())
    }

    /// `execute(sql, args_tuple) -> int`: rows affected.
    fn execute(&mut self, py: Python<'_>, sql: &str, args: &Bound<'_, PyTuple>) -> PyResult<u64> {
        match self.run(py, sql, args, false)? {
            Ran::Rows(_, rows) => Ok(rows.len() as u64),
            Ran::Count(n) => Ok(n),
        }
    }

    /// `query(sql, args_tuple) -> (column_names, [row_tuple, ...])`.
    fn query<'py>(
        &mut self,
        py: Python<'py>,
        sql: &str,
        args: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        match self.run(py, sql, args, true)? {
            Ran::Rows(stmt, rows) => rows_to_py(py, stmt.columns(), rows),
            Ran::Count(_) => Err(DatabaseError::new_err("the statement returned no rows")),
        }
    }

    /// Open a transaction (or a savepoint inside the open one).
    fn begin(&mut self, py: Python<'_>) -> PyResult<()> {
        self.check_usable(py)?;
        let depth = self.depth + 1;
        let sql = if depth == 1 {
            "BEGIN".to_string()
        } else {
            format!("SAVEPOINT pg_sync_remote_{depth}")
        };
        self.simple(py, &sql)?;
        self.depth = depth;
        Ok(())
    }

    /// Commit the innermost level; an aborted transaction is rolled back and reported.
    fn commit(&mut self, py: Python<'_>) -> PyResult<()> {
        let depth = self.depth;
        if depth == 0 {
            return Err(DatabaseError::new_err("no remote transaction is open"));
        }
        if let Some((at, why)) = self.aborted.clone() {
            if at >= depth {
                self.rollback(py)?;
                return Err(self.sql_error(
                    py,
                    DbError {
                        code: Some("25P02".into()),
                        message: format!("the remote transaction was rolled back: a statement in it failed ({why})"),
                        hint: Some("Let the error propagate, or catch it outside the transaction() block.".into()),
                    },
                ));
            }
        }
        let sql = if depth == 1 {
            "COMMIT".to_string()
        } else {
            format!("RELEASE SAVEPOINT pg_sync_remote_{depth}")
        };
        let done = self.simple(py, &sql);
        self.left_level(depth);
        done
    }

    /// Roll back the innermost level (the whole transaction at level 1).
    fn rollback(&mut self, py: Python<'_>) -> PyResult<()> {
        let depth = self.depth;
        if depth == 0 {
            // The connection was dropped meanwhile: the server rolled back already.
            return Ok(());
        }
        let sql = if depth == 1 {
            "ROLLBACK".to_string()
        } else {
            format!("ROLLBACK TO SAVEPOINT pg_sync_remote_{depth}; RELEASE SAVEPOINT pg_sync_remote_{depth}")
        };
        let done = self.simple(py, &sql);
        self.left_level(depth);
        done
    }

    /// Leave any open transaction (rolled back): used when a job ended inside one.
    fn reset(&mut self, py: Python<'_>) {
        if self.depth > 0 {
            self.aborted = None;
            let rolled_back = self.simple(py, "ROLLBACK");
            if rolled_back.is_err() {
                self.drop_connection();
            }
            self.depth = 0;
        }
    }

    /// Close the connection (the next statement opens a new one).
    fn close(&mut self) {
        self.drop_connection();
    }

    fn __repr__(&self) -> String {
        format!("<remote database {}>", self.label)
    }
}
