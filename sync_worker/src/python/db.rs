// The database side of a running job: task SQL inside the executor's open transaction,
// under a savepoint taken at the first statement and the project's run_as role.
//
// Why each step:
// - The savepoint is lazy so a job that never touches the database costs no round trip.
// - `SET LOCAL ROLE run_as` runs with the savepoint. The session itself logs in as
//   sync_executor, which has no privileges of its own: project data (secrets) never
//   comes through it but from the supervisor.
// - After every task statement `current_user` is checked in the same round trip
//   (pipelined): SQL can switch roles (`SELECT set_config('role', ...)`); a job whose
//   SQL left its role is stopped. (Inside one statement a switch cannot be seen, which
//   is why the login itself must hold nothing.)
// - At the end `RESET ALL` drops settings the task changed (`SET LOCAL search_path`
//   would otherwise reach the next jobs of the batch, which may belong to other projects).
// - Transaction control, session-level statements and role switches are refused before
//   they reach the server (statement_rules.rs).
use std::collections::HashMap;
use std::future::Future;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::errors::DbError;
use super::pgwire::Param;
use super::statement_rules::check_job_statement;
use crate::queue::registry::WorkerAuth;

const SAVEPOINT: &str = "pg_sync_job";
/// Prepared statements kept per connection; cleared when full (task SQL is mostly static).
const STATEMENT_CACHE_SIZE: usize = 512;

/// What a task statement returned.
pub enum Answer {
    Rows(Vec<Row>, Statement),
    Count(u64),
}

/// Per-job state, reset by `start_job`.
#[derive(Default)]
struct JobState {
    /// Role task SQL runs as, or why task code may not use the database.
    run_as: Option<Result<String, String>>,
    savepoint: bool,
    /// Set when task SQL escaped its role: the job must fail whatever the code does next.
    broken: Option<String>,
    /// Open `db.savepoint()` blocks.
    depth: u32,
    /// A statement failed on the server at this savepoint depth: the transaction is
    /// aborted until a rollback to a savepoint at or below it.
    aborted: Option<(u32, String)>,
}

/// What `db.savepoint()` does on entering and leaving its block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SavepointOp {
    Begin,
    Release,
    Rollback,
}

/// Prepared statements of one connection. The Runtime keeps them between jobs and lends
/// them to each job's JobDb (the executor creates a JobDb per job).
#[derive(Default)]
pub(crate) struct StatementCache {
    statements: HashMap<String, Statement>,
    role_check: Option<Statement>,
}

/// The executor's connection as one job uses it.
pub struct JobDb<'a> {
    client: &'a Client,
    rt: &'a tokio::runtime::Runtime,
    /// For the batch functions (child jobs); never handed to Python.
    auth: &'a WorkerAuth,
    cache: StatementCache,
    job: JobState,
}

impl<'a> JobDb<'a> {
    pub fn new(client: &'a Client, rt: &'a tokio::runtime::Runtime, auth: &'a WorkerAuth) -> Self {
        JobDb {
            client,
            rt,
            auth,
            cache: StatementCache::default(),
            job: JobState::default(),
        }
    }

    /// Exchange the statement cache with the Runtime's.
    pub(crate) fn swap_cache(&mut self, cache: &mut StatementCache) {
        std::mem::swap(&mut self.cache, cache);
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub(crate) fn start_job(&mut self, run_as: Result<String, String>) {
        self.job = JobState {
            run_as: Some(run_as),
            ..JobState::default()
        };
    }

    /// Why the job must fail even if its code caught the error.
    pub(crate) fn broken(&self) -> Option<&str> {
        self.job.broken.as_deref()
    }

    /// The database error the job's code caught without rolling back to a savepoint: its
    /// transaction is aborted, so its writes cannot be kept.
    pub(crate) fn aborted(&self) -> Option<&str> {
        self.job.aborted.as_ref().map(|(_, m)| m.as_str())
    }

    /// `with db.savepoint():` blocks in task code (nested savepoints in the job's one).
    pub(crate) fn savepoint(&mut self, op: SavepointOp) -> Result<(), DbError> {
        if let Some(why) = &self.job.broken {
            return Err(DbError::refused(
                why.clone(),
                "The job is stopped; fix the task code.",
            ));
        }
        let client = self.client;
        match op {
            SavepointOp::Begin => {
                self.ensure_savepoint()?;
                let depth = self.job.depth + 1;
                self.block_on(client.batch_execute(&format!("SAVEPOINT pg_sync_sp_{depth}")))
                    .map_err(|e| self.note_error(e.into()))?;
                self.job.depth = depth;
            }
            SavepointOp::Release | SavepointOp::Rollback => {
                let depth = self.job.depth;
                if depth == 0 {
                    return Err(DbError::refused(
                        "no savepoint is open",
                        "Use `with db.savepoint():`.",
                    ));
                }
                self.job.depth = depth - 1;
                let sql = if op == SavepointOp::Release {
                    format!("RELEASE SAVEPOINT pg_sync_sp_{depth}")
                } else {
                    format!("ROLLBACK TO SAVEPOINT pg_sync_sp_{depth}; RELEASE SAVEPOINT pg_sync_sp_{depth}")
                };
                self.block_on(client.batch_execute(&sql))
                    .map_err(|e| self.note_error(e.into()))?;
                if op == SavepointOp::Rollback
                    && matches!(self.job.aborted, Some((at, _)) if at >= depth)
                {
                    self.job.aborted = None;
                }
            }
        }
        Ok(())
    }

    /// Remember a server-side error: it aborted the transaction.
    fn note_error(&mut self, e: DbError) -> DbError {
        if e.code.is_some() && self.job.aborted.is_none() {
            self.job.aborted = Some((self.job.depth, e.message.clone()));
        }
        e
    }

    fn ensure_savepoint(&mut self) -> Result<(), DbError> {
        if self.job.savepoint {
            return Ok(());
        }
        let role = match &self.job.run_as {
            Some(Ok(role)) => role.clone(),
            Some(Err(why)) => {
                return Err(DbError::refused(
                    why.clone(),
                    "Set sync.project.run_as to a role that is not a superuser and cannot read secret values, e.g. UPDATE sync.project SET run_as = 'my_sync_role' WHERE name = '...'.",
                ))
            }
            None => {
                return Err(DbError::refused(
                    "no job is running",
                    "Database access is only possible while a job runs.",
                ))
            }
        };
        let client = self.client;
        let sql = format!(
            "SAVEPOINT {SAVEPOINT}; SET LOCAL ROLE {}",
            quote_ident(&role)
        );
        // Marked first: if SET ROLE fails, finish_job must still roll back to the savepoint.
        self.job.savepoint = true;
        self.block_on(client.batch_execute(&sql))?;
        Ok(())
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, DbError> {
        if let Some(s) = self.cache.statements.get(sql) {
            return Ok(s.clone());
        }
        let client = self.client;
        let stmt = self.block_on(client.prepare(sql))?;
        if self.cache.statements.len() >= STATEMENT_CACHE_SIZE {
            self.cache.statements.clear();
        }
        self.cache.statements.insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }

    /// Run one task statement with bound parameters, as the project's run_as role.
    pub(crate) fn run(
        &mut self,
        sql: &str,
        params: &[Param],
        want_rows: bool,
    ) -> Result<Answer, DbError> {
        if let Some(why) = &self.job.broken {
            return Err(DbError::refused(
                why.clone(),
                "The job is stopped; fix the task code.",
            ));
        }
        check_job_statement(sql)?;
        self.ensure_savepoint()?;
        let stmt = self.statement(sql).map_err(|e| self.note_error(e))?;
        if stmt.params().len() != params.len() {
            return Err(DbError::refused(
                format!(
                    "the statement has {} placeholder(s) but {} argument(s) were given",
                    stmt.params().len(),
                    params.len()
                ),
                "Pass one argument per $1, $2, ... placeholder.",
            ));
        }
        if self.cache.role_check.is_none() {
            let client = self.client;
            let check = self.block_on(client.prepare("SELECT current_user::text"))?;
            self.cache.role_check = Some(check);
        }
        let check = self.cache.role_check.clone().expect("prepared above");
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let client = self.client;
        // Both go out before either answer is read: one round trip.
        let (answer, role) = self.block_on(async {
            if want_rows {
                let (rows, role) =
                    tokio::join!(client.query(&stmt, &refs), client.query_one(&check, &[]));
                (rows.map(|r| Answer::Rows(r, stmt.clone())), role)
            } else {
                let (n, role) =
                    tokio::join!(client.execute(&stmt, &refs), client.query_one(&check, &[]));
                (n.map(Answer::Count), role)
            }
        });
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                let e = DbError::from(e);
                if e.code.as_deref() == Some("26000") {
                    // Statements of a previous connection: start over.
                    self.cache = StatementCache::default();
                } else {
                    // A changed table can invalidate the cached plan; prepare afresh next time.
                    self.cache.statements.remove(sql);
                }
                return Err(self.note_error(e));
            }
        };
        let expected = match &self.job.run_as {
            Some(Ok(r)) => r.as_str(),
            _ => "",
        };
        let current: Option<String> = role.ok().and_then(|r| r.try_get(0).ok());
        if current.as_deref() != Some(expected) {
            let why = format!(
                "task SQL changed the database role to {} (it must stay {expected}); the job is stopped and its writes are rolled back",
                current.as_deref().unwrap_or("an unknown role")
            );
            self.job.broken = Some(why.clone());
            return Err(DbError::refused(
                why,
                "Task code runs as the project's run_as role and may not switch roles.",
            ));
        }
        Ok(answer)
    }

    /// Queue the jobs the job added with add_job (sync.batch_add_jobs, as the executor
    /// login with the worker's token), inside the job's savepoint (taken here if the job
    /// did not touch the database) so that they go if the job's writes cannot be kept.
    pub(crate) fn insert_children(
        &mut self,
        job_id: i64,
        children: &serde_json::Value,
    ) -> Result<(), DbError> {
        let client = self.client;
        if self.job.savepoint {
            self.block_on(client.batch_execute("RESET ALL; RESET ROLE"))?;
        } else {
            self.job.savepoint = true;
            self.block_on(client.batch_execute(&format!("SAVEPOINT {SAVEPOINT}")))?;
        }
        let auth = self.auth;
        self.block_on(client.execute(
            "SELECT sync.batch_add_jobs($1, $2, $3, $4)",
            &[&auth.worker, &auth.token, &job_id, children],
        ))?;
        Ok(())
    }

    /// End the job: keep (success) or roll back its writes, and restore the worker's role
    /// and settings. An error here means the executor's transaction is unusable.
    pub(crate) fn finish_job(&mut self, keep: bool) -> Result<(), DbError> {
        let took = std::mem::take(&mut self.job.savepoint);
        self.job.run_as = None;
        if !took {
            return Ok(());
        }
        let rollback =
            format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}; RELEASE SAVEPOINT {SAVEPOINT}; RESET ROLE");
        let client = self.client;
        if keep {
            let kept = self.block_on(client.batch_execute(&format!(
                "RESET ALL; RESET ROLE; RELEASE SAVEPOINT {SAVEPOINT}"
            )));
            if let Err(e) = kept {
                // Leave the executor's transaction usable for the rest of the batch.
                let _ = self.block_on(client.batch_execute(&rollback));
                return Err(e.into());
            }
            return Ok(());
        }
        self.block_on(client.batch_execute(&rollback))?;
        Ok(())
    }
}

/// Quote an SQL identifier (a role name from sync.project.run_as).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
