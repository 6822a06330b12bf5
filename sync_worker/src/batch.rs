// One batch in an executor: lock the claimed jobs, run each in the batch transaction,
// complete them all and write their log lines in one statement, commit (group commit).
//
// The jobs' own writes, their completion and their log lines commit together. A job
// that fails is rolled back to its savepoint by the runtime; its log lines are written
// after that, outside the savepoint, so they survive its rollback. (They are lost only
// when the whole batch does not commit, and then every job of it runs again.)
use crate::protocol::{BatchReport, JobOutcome};
use crate::python::db::JobDb;
use crate::python::{JobSpec, LogLine, Outcome, Runtime};
use crate::status::StatusPage;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// After this long a batch stops starting jobs and gives the rest back, so that one
/// slow job does not hold up the jobs queued behind it.
const TIME_SLICE: Duration = Duration::from_millis(100);

/// The claimed rows this executor still owns, locked for the transaction (the rescuer
/// skips locked rows). FOR NO KEY UPDATE, not FOR UPDATE: foreign-key checks of other
/// transactions (log lines, child jobs) need not wait for the batch.
const LOCK_SQL: &str = "
SELECT j.id, j.project_id, p.version, j.task_id, j.trigger_kind, j.trigger_name, j.handler,
       j.args, j.user_name::text, j.lang, j.attempts, j.max_retries, j.started_at,
       extract(epoch FROM t.time_limit)::float8, p.active, coalesce(t.active, true),
       p.name, t.name
FROM sync.job j
JOIN sync.project p ON p.id = j.project_id
LEFT JOIN sync.task t ON t.id = j.task_id
WHERE j.id = ANY ($1) AND j.state = 'running' AND j.worker = $2
ORDER BY j.priority, j.eta, j.id
FOR NO KEY UPDATE OF j";

/// Every job of the batch and every log line in one statement. A retried job's eta
/// comes from the database clock so tests can move time instead of sleeping.
const COMPLETE_SQL: &str = "
WITH done AS (
    UPDATE sync.job j
    SET state = u.state, error = u.error, result = u.result, warning = u.warning,
        eta = CASE WHEN u.state = 'pending'
                   THEN (SELECT sync.clock()) + sync.retry_delay(j.attempts) ELSE j.eta END,
        finished_at = CASE WHEN u.state = 'pending' THEN NULL ELSE clock_timestamp() END
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::jsonb[], $5::boolean[])
         AS u(id, state, error, result, warning)
    WHERE j.id = u.id
    RETURNING 1
)
INSERT INTO sync.log (created_at, project_id, task_id, trigger_name, job_id, job_started_at,
                      level, kind, recipient, message)
SELECT * FROM unnest($6::timestamptz[], $7::bigint[], $8::bigint[], $9::text[], $10::bigint[],
                     $11::timestamptz[], $12::text[], $13::text[], $14::text[], $15::text[])";

const LOG_SQL: &str = "
INSERT INTO sync.log (created_at, project_id, task_id, trigger_name, job_id, job_started_at,
                      level, kind, recipient, message)
SELECT * FROM unnest($1::timestamptz[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[],
                     $6::timestamptz[], $7::text[], $8::text[], $9::text[], $10::text[])";

/// What the executor process keeps between batches.
pub struct Executor {
    pub rt: tokio::runtime::Runtime,
    pub runtime: Runtime,
    pub status: StatusPage,
    /// The connection of the batch transactions (and of the jobs' SQL).
    pub job: Client,
    pub soft_time_limit: Duration,
    /// hard limit minus soft limit: added to a task's own time_limit.
    pub hard_margin: Duration,
    pub stop: std::sync::Arc<AtomicBool>,
    /// Minimum time per job (throttle_ms).
    pub throttle: Duration,
}

/// One job as locked, with what the worker needs besides the JobSpec.
struct Locked {
    spec: JobSpec,
    project: String,
    task: Option<String>,
    project_active: bool,
    task_active: bool,
    hard_limit: Duration,
}

/// How one job ended, in the columns of sync.job.
pub(crate) struct Completion {
    pub id: i64,
    pub state: &'static str,
    pub error: Option<String>,
    pub result: Option<Value>,
    pub warning: bool,
}

/// Rows for sync.log, column by column.
#[derive(Default)]
pub(crate) struct LogRows {
    at: Vec<DateTime<Utc>>,
    project: Vec<i64>,
    task: Vec<Option<i64>>,
    trigger: Vec<Option<String>>,
    job: Vec<i64>,
    job_started: Vec<DateTime<Utc>>,
    level: Vec<String>,
    kind: Vec<String>,
    recipient: Vec<Option<String>>,
    message: Vec<String>,
}

impl LogRows {
    pub fn push(&mut self, spec: &JobSpec, line: LogLine) {
        // The table's checks must not fail a whole batch: unknown values fall back.
        let level = match line.level.as_str() {
            "debug" | "info" | "warning" | "error" => line.level,
            _ => "info".into(),
        };
        let kind = match line.kind.as_str() {
            "message" | "data_out" | "data_in" => line.kind,
            _ => "message".into(),
        };
        let line = LogLine {
            level,
            kind,
            recipient: line.recipient.map(|r| r.replace('\0', "")),
            message: line.message.replace('\0', ""),
            ..line
        };
        self.at.push(line.at);
        self.project.push(spec.project_id);
        self.task.push(spec.task_id);
        self.trigger.push(spec.trigger_name.clone());
        self.job.push(spec.job_id);
        self.job_started.push(spec.started_at);
        self.level.push(line.level);
        self.kind.push(line.kind);
        self.recipient.push(line.recipient);
        self.message.push(line.message);
    }

    pub fn line(&mut self, spec: &JobSpec, level: &str, message: String) {
        self.push(
            spec,
            LogLine {
                level: level.into(),
                kind: "message".into(),
                recipient: None,
                message,
                at: Utc::now(),
            },
        );
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
    /// Run the claimed jobs `ids` owned by worker `worker`.
    pub fn run_batch(&mut self, batch: u64, worker: i32, ids: Vec<i64>) -> BatchReport {
        let mut report = BatchReport {
            batch,
            ..Default::default()
        };
        let t_lock = Instant::now();
        let locked = match self.rt.block_on(lock(&self.job, &ids, worker)) {
            Ok(rows) => rows,
            Err(e) => {
                let _ = self.rt.block_on(self.job.batch_execute("ROLLBACK"));
                tracing::warn!("could not lock batch {batch}: {}", crate::pg::describe(&e));
                if !crate::pg::is_connection_error(&e) {
                    // Not expected: do not let the batch bounce back at full speed.
                    std::thread::sleep(Duration::from_secs(1));
                }
                report.lost = ids;
                return report;
            }
        };
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
        for (i, job) in jobs.iter().enumerate() {
            let cut = i > 0 && started.elapsed() > TIME_SLICE;
            if cut || self.stop.load(Ordering::Relaxed) {
                report
                    .unstarted
                    .extend(jobs[i..].iter().map(|j| j.spec.job_id));
                break;
            }
            let t0 = Instant::now();
            let completion = {
                let _span = tracing::info_span!(
                    "job",
                    job = job.spec.job_id,
                    project = %job.project,
                    task = job.task.as_deref().unwrap_or("-"),
                    trigger = job.spec.trigger_name.as_deref().unwrap_or("-"),
                )
                .entered();
                let c = self.run_job(job, &mut logs);
                match c.state {
                    "failed" => tracing::warn!(
                        "job failed: {}",
                        c.error
                            .as_deref()
                            .and_then(|e| e.lines().last())
                            .unwrap_or("")
                    ),
                    "pending" => tracing::info!("job will be retried"),
                    state => tracing::debug!("job {state}"),
                }
                c
            };
            let spent = t0.elapsed();
            busy += spent;
            outcomes.push(JobOutcome {
                project: job.project.clone(),
                state: completion.state.to_string(),
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
            report.unstarted.clear();
            report.lost = ids;
            return report;
        }
        let t_complete = Instant::now();
        let completed = self.rt.block_on(complete(&self.job, &done, &logs));
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
                if started.elapsed() < least {
                    std::thread::sleep(least - started.elapsed());
                }
                report.completed = ran;
                report.outcomes = outcomes;
            }
            Err(BatchError::Lost(e)) => {
                tracing::warn!("batch {batch}: {e}; its jobs will run again");
                report.lost = ran;
            }
            Err(BatchError::Sql(e)) => {
                let _ = self.rt.block_on(self.job.batch_execute("ROLLBACK"));
                let message = crate::pg::describe(&e);
                if ran.len() == 1 {
                    // Alone in its transaction: the job itself cannot commit.
                    let job = &jobs[0];
                    match self
                        .rt
                        .block_on(fail_alone(&self.job, &job.spec, worker, &message))
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

    fn locked(&self, row: &tokio_postgres::Row) -> Locked {
        let task_limit: Option<f64> = row.get(13);
        let soft = match task_limit {
            Some(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s),
            _ => self.soft_time_limit,
        };
        Locked {
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
                attempts: row.get(10),
                max_retries: row.get(11),
                started_at: row.get(12),
                soft_time_limit: soft,
            },
            project_active: row.get(14),
            task_active: row.get(15),
            project: row.get(16),
            task: row.get(17),
            hard_limit: soft + self.hard_margin,
        }
    }

    fn run_job(&mut self, job: &Locked, logs: &mut LogRows) -> Completion {
        let spec = &job.spec;
        logs.line(
            spec,
            "info",
            format!(
                "job started: {}() of task {} (try {})",
                spec.handler,
                job.task.as_deref().unwrap_or("-"),
                spec.attempts
            ),
        );
        if !job.project_active || !job.task_active {
            let what = if !job.project_active {
                format!("project {} is inactive", job.project)
            } else {
                format!("task {} is inactive", job.task.as_deref().unwrap_or("?"))
            };
            let message = format!("{what}; the job was not run");
            logs.line(spec, "warning", format!("job cancelled: {message}"));
            return Completion {
                id: spec.job_id,
                state: "cancelled",
                error: Some(message),
                result: None,
                warning: false,
            };
        }

        let mut lines = Vec::new();
        self.status.start(spec.job_id, job.hard_limit);
        let outcome = {
            let mut db = JobDb::new(&self.job, &self.rt);
            self.runtime.run(spec, &mut db, &mut lines)
        };
        self.status.idle();

        let logged_warning = lines.iter().any(|l| l.level == "warning");
        let logged_error = lines
            .iter()
            .find(|l| l.level == "error")
            .map(|l| l.message.clone());
        for line in lines {
            logs.push(spec, line);
        }
        let outcome = match (outcome, logged_error) {
            (Outcome::Done { .. }, Some(message)) => Outcome::Failed {
                message: format!("the job logged an error: {message}"),
            },
            (o, _) => o,
        };
        match outcome {
            Outcome::Done { result, warning } => {
                let warning = warning || logged_warning;
                logs.line(
                    spec,
                    if warning { "warning" } else { "info" },
                    if warning {
                        "job done with warnings".into()
                    } else {
                        "job done".into()
                    },
                );
                Completion {
                    id: spec.job_id,
                    state: "done",
                    error: None,
                    result,
                    warning,
                }
            }
            Outcome::Retry { message } => {
                let tries = spec.max_retries.max(1);
                if spec.attempts < tries {
                    logs.line(
                        spec,
                        "warning",
                        format!(
                            "job will be retried in {} (try {} of {}): {}",
                            retry_delay_text(spec.attempts),
                            spec.attempts,
                            tries,
                            message.trim_end()
                        ),
                    );
                    Completion {
                        id: spec.job_id,
                        state: "pending",
                        error: Some(message),
                        result: None,
                        warning: logged_warning,
                    }
                } else {
                    let message = format!(
                        "gave up after {} tries: {}",
                        spec.attempts,
                        message.trim_end()
                    );
                    logs.line(spec, "error", format!("job failed: {message}"));
                    Completion {
                        id: spec.job_id,
                        state: "failed",
                        error: Some(message),
                        result: None,
                        warning: logged_warning,
                    }
                }
            }
            Outcome::Failed { message } => {
                logs.line(spec, "error", format!("job failed: {}", message.trim_end()));
                Completion {
                    id: spec.job_id,
                    state: "failed",
                    error: Some(message),
                    result: None,
                    warning: logged_warning,
                }
            }
        }
    }
}

/// Same steps as sync.retry_delay(), for the log line.
fn retry_delay_text(attempts: i32) -> &'static str {
    match attempts {
        i32::MIN..=1 => "5 min",
        2 => "15 min",
        3 => "60 min",
        _ => "3 h",
    }
}

async fn lock(
    client: &Client,
    ids: &[i64],
    worker: i32,
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let begin = client.batch_execute("BEGIN");
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&ids, &worker];
    let rows = client.query(LOCK_SQL, &params);
    let (b, r) = tokio::join!(begin, rows);
    b?;
    r
}

pub(crate) async fn complete(
    job: &Client,
    done: &[Completion],
    logs: &LogRows,
) -> Result<(), BatchError> {
    let ids: Vec<i64> = done.iter().map(|c| c.id).collect();
    let states: Vec<&str> = done.iter().map(|c| c.state).collect();
    let errors: Vec<Option<String>> = done
        .iter()
        .map(|c| c.error.as_ref().map(|e| e.replace('\0', "")))
        .collect();
    let results: Vec<Option<&Value>> = done.iter().map(|c| c.result.as_ref()).collect();
    let warnings: Vec<bool> = done.iter().map(|c| c.warning).collect();
    if !ids.is_empty() || !logs.message.is_empty() {
        job.execute(
            COMPLETE_SQL,
            &[
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

async fn write_logs(client: &Client, rows: &LogRows) -> Result<(), tokio_postgres::Error> {
    if rows.message.is_empty() {
        return Ok(());
    }
    client
        .execute(
            LOG_SQL,
            &[
                &rows.at,
                &rows.project,
                &rows.task,
                &rows.trigger,
                &rows.job,
                &rows.job_started,
                &rows.level,
                &rows.kind,
                &rows.recipient,
                &rows.message,
            ],
        )
        .await
        .map(|_| ())
}

/// A job whose batch could not commit even alone: record the failure on its own.
async fn fail_alone(
    job: &Client,
    spec: &JobSpec,
    worker: i32,
    message: &str,
) -> Result<(), tokio_postgres::Error> {
    let message = format!("the job's transaction could not commit: {message}");
    let updated = job
        .execute(
            "UPDATE sync.job SET state = 'failed', error = $3, finished_at = clock_timestamp()
             WHERE id = $1 AND state = 'running' AND worker = $2",
            &[&spec.job_id, &worker, &message.replace('\0', "")],
        )
        .await?;
    if updated == 1 {
        let mut rows = LogRows::default();
        rows.line(spec, "error", format!("job failed: {message}"));
        write_logs(job, &rows).await?;
    }
    Ok(())
}
