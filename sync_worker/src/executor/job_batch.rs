// One batch in an executor: claim its jobs (a row lock in the batch transaction), run
// each in that transaction, complete them all and their log lines in one statement,
// commit (group commit).
//
// The jobs' own writes and their completion commit together. Their log lines are
// written as they happen by the log thread (log_stream.rs), outside the transaction, so
// they show while the job runs and survive its rollback; lines the thread has not
// written yet when the batch ends go in with the completion.
use crate::executor::log_rows::LogRows;
use crate::executor::protocol::{BatchReport, JobOutcome, Pick, WorkerAuth};
use crate::executor::Executor;
use crate::job_state::TryEnd;
use crate::python::JobSpec;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, Statement};

/// sync.batch_lock and sync.batch_finish, prepared once per connection: given as text,
/// a statement costs a round trip to prepare at every batch, and the claim is on the
/// path from a job's commit to its start.
#[derive(Default)]
pub struct BatchStatements {
    lock: Option<Statement>,
    finish: Option<Statement>,
}

async fn prepared(
    slot: &mut Option<Statement>,
    client: &Client,
    sql: &str,
) -> Result<Statement, tokio_postgres::Error> {
    if let Some(s) = slot {
        return Ok(s.clone());
    }
    let s = client.prepare(sql).await?;
    *slot = Some(s.clone());
    Ok(s)
}

/// After this long a batch stops starting jobs and gives the rest back, so that one
/// slow job does not hold up the jobs queued behind it.
const TIME_SLICE: Duration = Duration::from_millis(100);

/// The claim: the batch's jobs locked for its transaction (sync.batch_lock, which
/// checks the worker's token).
const LOCK_SQL: &str = "SELECT * FROM sync.batch_lock($1, $2, $3, $4, $5)";

/// Every job of the batch and every log line in one statement (sync.batch_finish). A
/// retried job's eta comes from the database clock so tests can move time.
const FINISH_SQL: &str = "SELECT sync.batch_finish($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
    $11, $12, $13, $14, $15, $16, $17)";

/// What the log says of a batch whose connection was lost: its jobs are not failed.
const RERUN: &str = "its jobs are pending again and will be re-run";

/// Hears of the (job, project) a batch claimed, before they run.
pub(crate) type Claimed<'a> = dyn FnMut(&[(i64, i64)]) + 'a;

/// One job as locked, with what the worker needs besides the JobSpec.
pub(crate) struct Locked {
    pub(crate) spec: JobSpec,
    pub(crate) project: String,
    pub(crate) task: Option<String>,
    pub(crate) project_active: bool,
    pub(crate) task_active: bool,
    pub(crate) hard_limit: Duration,
    /// sync_cancel_job asked to stop it before it started.
    pub(crate) cancelled_by: Option<String>,
}

/// How one job's try ended, in the columns of sync.job.
pub(crate) struct Completion {
    pub id: i64,
    pub state: TryEnd,
    pub error: Option<String>,
    pub result: Option<Value>,
    pub warning: bool,
}

impl Completion {
    /// A job cancelled before its code ran.
    pub(crate) fn not_run(id: i64, message: String) -> Self {
        Completion {
            id,
            state: TryEnd::Skipped,
            error: Some(message),
            result: None,
            warning: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum BatchError {
    #[error("database connection lost: {0}")]
    Lost(tokio_postgres::Error),
    #[error("{0}")]
    Sql(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for BatchError {
    fn from(e: tokio_postgres::Error) -> Self {
        if crate::pg::is_connection_error(&e) {
            BatchError::Lost(e)
        } else {
            BatchError::Sql(e)
        }
    }
}

impl Executor {
    /// Claim the jobs `pick` for worker `auth.worker` and run them; `claimed` hears of
    /// the (job, project) claimed before they run.
    pub fn run_batch(
        &mut self,
        batch: u64,
        auth: &WorkerAuth,
        pick: Pick,
        claimed: &mut Claimed<'_>,
    ) -> BatchReport {
        let mut report = BatchReport {
            batch,
            ..Default::default()
        };
        self.log_stream.warm();
        let t_lock = Instant::now();
        let locked = match self
            .rt
            .block_on(lock(&self.job, &mut self.statements, &pick, auth))
        {
            Ok(rows) => rows,
            Err(e) => {
                let _ = self.rt.block_on(self.job.batch_execute("ROLLBACK"));
                if crate::pg::is_connection_error(&e) {
                    tracing::warn!(
                        "batch {batch}: database connection lost before it started ({}); {RERUN}",
                        crate::pg::describe(&e)
                    );
                } else {
                    tracing::warn!("could not lock batch {batch}: {}", crate::pg::describe(&e));
                    // Not expected: do not let the batch bounce back at full speed.
                    std::thread::sleep(Duration::from_secs(1));
                }
                report.lost = pick.ids();
                return report;
            }
        };
        let ids: Vec<i64> = locked.iter().map(|r| r.get(0)).collect();
        let projects: Vec<(i64, i64)> = locked.iter().map(|r| (r.get(0), r.get(1))).collect();
        claimed(&projects);
        let mut jobs = Vec::with_capacity(locked.len());
        for row in &locked {
            jobs.push(self.locked(row));
        }

        let started = Instant::now();
        let mut done: Vec<Completion> = Vec::with_capacity(jobs.len());
        let mut logs = LogRows::default();
        let mut ran = Vec::with_capacity(jobs.len());
        let mut outcomes = Vec::with_capacity(jobs.len());
        let mut busy = Duration::ZERO;
        let mut first_start: Option<Instant> = None;
        for (i, job) in jobs.iter().enumerate() {
            let cut = i > 0 && started.elapsed() > TIME_SLICE;
            if cut || self.stop.load(Ordering::Relaxed) {
                report
                    .unstarted
                    .extend(jobs[i..].iter().map(|j| j.spec.job_id));
                break;
            }
            if job.project_active && job.task_active {
                // Loading the project is not part of the job's time (throttle_ms).
                self.runtime.prepare(&job.spec, self.projects.as_mut());
            }
            let t0 = Instant::now();
            first_start.get_or_insert(t0);
            let completion = {
                let _span = tracing::info_span!(
                    "job",
                    job = job.spec.job_id,
                    project = %job.project,
                    task = job.task.as_deref().unwrap_or("-"),
                    trigger = job.spec.trigger_name.as_deref().unwrap_or("-"),
                )
                .entered();
                let c = self.run_job(job, auth, &mut logs);
                let lost = c.state != TryEnd::Done && self.connection_lost();
                match c.state {
                    // Its failure is the lost connection's, and nothing of it stays:
                    // the batch runs again (logged once for the batch, below).
                    _ if lost => tracing::info!("job interrupted by the lost database connection"),
                    TryEnd::Failed => tracing::warn!(
                        "job failed: {}",
                        c.error
                            .as_deref()
                            .and_then(|e| e.lines().last())
                            .unwrap_or("")
                    ),
                    TryEnd::Retry => tracing::info!("job raised RetryableJobError"),
                    state => tracing::debug!("job {}", state.as_sql()),
                }
                c
            };
            let spent = t0.elapsed();
            busy += spent;
            outcomes.push(JobOutcome {
                project: job.project.clone(),
                state: completion.state,
                secs: spent.as_secs_f64(),
            });
            ran.push(job.spec.job_id);
            done.push(completion);
            if self.job.is_closed() {
                break;
            }
        }
        report.busy_secs = busy.as_secs_f64();
        report.ran = ran.len() as u32;

        if self.job.is_closed() {
            // Nothing of this transaction survives: every job is still claimed and
            // runs again (a job no longer ours is skipped then).
            tracing::warn!(
                "batch {batch}: database connection lost while running its jobs; {}",
                RERUN
            );
            report.unstarted.clear();
            report.lost = ids;
            return report;
        }
        // Lines not written yet go in with the outcome: none may show after it.
        for s in self.log_stream.take() {
            if let Some(job) = jobs.iter().find(|j| j.spec.job_id == s.job) {
                logs.push(&job.spec, s.line);
            }
        }
        let t_complete = Instant::now();
        let completed = self.rt.block_on(complete(
            &self.job,
            &mut self.statements,
            auth,
            &done,
            &logs,
        ));
        tracing::debug!(
            "batch {batch}: {} jobs; lock {:?}, run {:?}, complete+commit {:?}",
            ran.len(),
            started - t_lock,
            t_complete - started,
            t_complete.elapsed()
        );
        match completed {
            Ok(()) => {
                // throttle_ms: the pause comes after the commit, so that no row stays
                // locked while waiting (the supervisor sends one job per batch then).
                let least = self.throttle * ran.len() as u32;
                let from = first_start.unwrap_or(started);
                if from.elapsed() < least {
                    std::thread::sleep(least - from.elapsed());
                }
                report.completed = ran;
                report.outcomes = outcomes;
            }
            Err(BatchError::Lost(e)) => {
                tracing::warn!("batch {batch}: {e}; {RERUN}");
                report.lost = ran;
            }
            Err(BatchError::Sql(e)) => {
                let _ = self.rt.block_on(self.job.batch_execute("ROLLBACK"));
                let message = crate::pg::describe(&e);
                if ran.len() == 1 {
                    // Alone in its transaction: the job itself cannot commit.
                    let job = &jobs[0];
                    let message = self.runtime.masker(job.spec.project_id).string(message);
                    match self
                        .rt
                        .block_on(fail_alone(&self.job, &job.spec, auth, &message))
                    {
                        Ok(()) => report.completed = ran,
                        Err(e) => {
                            tracing::warn!("batch {batch}: cannot record a failure: {e}");
                            report.lost = ran;
                        }
                    }
                } else {
                    tracing::warn!(
                        "batch {batch}: commit failed ({message}); running its jobs one per transaction"
                    );
                    report.split = ran;
                }
            }
        }
        report
    }

    /// True when the batch's connection is gone. The client learns it when its
    /// connection task reads the end of the socket, just after the failing statement's
    /// error: that task is given its turns first.
    fn connection_lost(&self) -> bool {
        for _ in 0..3 {
            if self.job.is_closed() {
                return true;
            }
            self.rt.block_on(tokio::task::yield_now());
        }
        self.job.is_closed()
    }

    fn locked(&self, row: &tokio_postgres::Row) -> Locked {
        let task_limit: Option<f64> = row.get(13);
        let ceiling: Option<f64> = row.get(21);
        let soft = clamp_limit(task_limit, self.soft_time_limit, ceiling);
        Locked {
            cancelled_by: row.get(18),
            spec: JobSpec {
                job_id: row.get(0),
                project_id: row.get(1),
                project_version: row.get(2),
                task_id: row.get(3),
                trigger_kind: row.get(4),
                trigger_name: row.get(5),
                handler: row.get(6),
                args: row.get(7),
                user_name: row.get(8),
                lang: row.get(9),
                try_no: row.get(10),
                max_retries: row.get(11),
                started_at: row.get(12),
                soft_time_limit: soft,
                run_as: row.get(19),
                run_as_problem: row.get(20),
            },
            project_active: row.get(14),
            task_active: row.get(15),
            project: row.get(16),
            task: row.get(17),
            hard_limit: soft + self.hard_margin,
        }
    }
}

/// A job's soft time limit: its task's, else the worker's, never above the ceiling
/// (sync.max_time_limit(), so that a developer cannot give a job unbounded time).
pub(crate) fn clamp_limit(task: Option<f64>, default: Duration, ceiling: Option<f64>) -> Duration {
    let soft = match task {
        Some(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s),
        _ => default,
    };
    match ceiling {
        Some(c) if c.is_finite() && c > 0.0 => soft.min(Duration::from_secs_f64(c)),
        _ => soft,
    }
}

async fn lock(
    client: &Client,
    statements: &mut BatchStatements,
    pick: &Pick,
    auth: &WorkerAuth,
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let (ids, n, any_state): (Option<Vec<i64>>, i32, bool) = match pick {
        Pick::Due(n) => (None, i32::try_from(*n).unwrap_or(i32::MAX), false),
        Pick::Ids(ids) => (Some(ids.clone()), 0, false),
        Pick::AnyState(id) => (Some(vec![*id]), 0, true),
    };
    let stmt = prepared(&mut statements.lock, client, LOCK_SQL).await?;
    let begin = client.batch_execute("BEGIN");
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&auth.worker, &auth.token, &ids, &n, &any_state];
    let rows = client.query(&stmt, &params);
    let (b, r) = tokio::join!(begin, rows);
    b?;
    r
}

pub(crate) async fn complete(
    job: &Client,
    statements: &mut BatchStatements,
    auth: &WorkerAuth,
    done: &[Completion],
    logs: &LogRows,
) -> Result<(), BatchError> {
    let ids: Vec<i64> = done.iter().map(|c| c.id).collect();
    let states: Vec<&str> = done.iter().map(|c| c.state.as_sql()).collect();
    let errors: Vec<Option<String>> = done
        .iter()
        .map(|c| c.error.as_ref().map(|e| e.replace('\0', "")))
        .collect();
    let results: Vec<Option<&Value>> = done.iter().map(|c| c.result.as_ref()).collect();
    let warnings: Vec<bool> = done.iter().map(|c| c.warning).collect();
    if !ids.is_empty() || !logs.message.is_empty() {
        let stmt = prepared(&mut statements.finish, job, FINISH_SQL).await?;
        job.execute(
            &stmt,
            &[
                &auth.worker,
                &auth.token,
                &ids,
                &states,
                &errors,
                &results,
                &warnings,
                &logs.at,
                &logs.project,
                &logs.task,
                &logs.trigger,
                &logs.job,
                &logs.job_started,
                &logs.level,
                &logs.kind,
                &logs.recipient,
                &logs.message,
            ],
        )
        .await?;
    }
    job.batch_execute("COMMIT").await?;
    Ok(())
}

/// A job whose batch could not commit even alone: record the failure on its own.
async fn fail_alone(
    job: &Client,
    spec: &JobSpec,
    auth: &WorkerAuth,
    message: &str,
) -> Result<(), tokio_postgres::Error> {
    let message = format!("the job's transaction could not commit: {message}");
    job.execute(
        "SELECT sync.batch_fail_job($1, $2, $3, $4)",
        &[
            &auth.worker,
            &auth.token,
            &spec.job_id,
            &message.replace('\0', ""),
        ],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::clamp_limit;
    use std::time::Duration;

    #[test]
    fn time_limits_never_pass_the_ceiling() {
        let d = Duration::from_secs(300);
        assert_eq!(clamp_limit(None, d, Some(3600.0)), d);
        assert_eq!(
            clamp_limit(Some(10.0), d, Some(3600.0)),
            Duration::from_secs(10)
        );
        assert_eq!(
            clamp_limit(Some(1e9), d, Some(3600.0)),
            Duration::from_secs(3600)
        );
        assert_eq!(clamp_limit(None, d, Some(1.0)), Duration::from_secs(1));
        assert_eq!(clamp_limit(Some(f64::NAN), d, None), d);
    }
}
