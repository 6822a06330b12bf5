// `sync_worker run-job --job-id N` (hidden, for debugging): runs one job through the
// Python runtime in its own transaction, records the outcome and prints it as JSON.
use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use crate::python::db::JobDb;
use crate::python::{JobSpec, LogLine, Outcome, Runtime, RuntimeError};

#[derive(clap::Args, Debug)]
pub struct RunJobArgs {
    /// The job to run (any state; a running job is run again).
    #[arg(long)]
    pub job_id: i64,
    /// Soft time limit in seconds (default: the task's time_limit, else 60).
    #[arg(long)]
    pub soft_time_limit: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunJobError {
    #[error("--database-url (or DATABASE_URL) is required")]
    NoUrl,
    #[error("cannot start the async runtime: {0}")]
    Tokio(#[from] std::io::Error),
    #[error("{what}: {source}")]
    Db {
        what: &'static str,
        source: tokio_postgres::Error,
    },
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    #[error("job {0} does not exist")]
    NoJob(i64),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

fn db(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> RunJobError {
    move |source| RunJobError::Db { what, source }
}

const LOAD_JOB: &str = "
SELECT j.project_id, p.version, j.task_id, j.trigger_kind, j.trigger_name, j.handler, j.args,
       j.user_name::text, j.lang, j.attempts + 1, j.max_retries,
       extract(epoch FROM t.time_limit)::float8, now()
FROM sync.job j JOIN sync.project p ON p.id = j.project_id
LEFT JOIN sync.task t ON t.id = j.task_id
WHERE j.id = $1 FOR UPDATE OF j";

/// Retry delays after RetryableJobError, by attempt (the last one repeats).
const RETRY_DELAYS: [&str; 4] = ["5 minutes", "15 minutes", "60 minutes", "3 hours"];

/// Entry point of the subcommand; returns the process exit code.
pub fn main(database_url: Option<&str>, args: &RunJobArgs) -> i32 {
    match run(database_url, args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sync_worker run-job: {e}");
            1
        }
    }
}

fn run(database_url: Option<&str>, args: &RunJobArgs) -> Result<(), RunJobError> {
    let url = database_url.ok_or(RunJobError::NoUrl)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = rt
        .block_on(crate::pg::connect(url, "sync_worker run-job"))
        .map_err(|e| RunJobError::Connect(e.to_string()))?;
    let mut runtime = Runtime::new()?;

    rt.block_on(client.batch_execute("BEGIN"))
        .map_err(db("BEGIN"))?;
    let row = rt
        .block_on(client.query_opt(LOAD_JOB, &[&args.job_id]))
        .map_err(db("reading the job"))?
        .ok_or(RunJobError::NoJob(args.job_id))?;
    let limit: Option<f64> = row.get(11);
    let job = JobSpec {
        job_id: args.job_id,
        project_id: row.get(0),
        project_version: row.get(1),
        task_id: row.get(2),
        trigger_kind: row.get(3),
        trigger_name: row.get(4),
        handler: row.get(5),
        args: row.get(6),
        user_name: row.get(7),
        lang: row.get(8),
        attempts: row.get(9),
        max_retries: row.get(10),
        started_at: row.get(12),
        soft_time_limit: Duration::from_secs_f64(args.soft_time_limit.or(limit).unwrap_or(60.0)),
    };
    rt.block_on(client.execute(
        "UPDATE sync.job SET state = 'running', attempts = $2, started_at = $3 WHERE id = $1",
        &[&job.job_id, &job.attempts, &job.started_at],
    ))
    .map_err(db("marking the job running"))?;

    let mut logs: Vec<LogLine> = Vec::new();
    let outcome = {
        let mut job_db = JobDb::new(&client, &rt);
        runtime.run(&job, &mut job_db, &mut logs)
    };

    let (state, result, warning, error) = match &outcome {
        Outcome::Done { result, warning } => ("done", result.clone(), *warning, None),
        Outcome::Failed { message } => ("failed", None, false, Some(message.clone())),
        Outcome::Retry { message } if job.attempts <= job.max_retries => {
            ("pending", None, false, Some(message.clone()))
        }
        Outcome::Retry { message } => ("failed", None, false, Some(message.clone())),
    };
    let delay = RETRY_DELAYS[(job.attempts.max(1) as usize - 1).min(RETRY_DELAYS.len() - 1)];
    rt.block_on(client.execute(
        "UPDATE sync.job SET state = $2, result = $3, warning = $4, error = $5,
                finished_at = CASE WHEN $2 = 'pending' THEN NULL ELSE clock_timestamp() END,
                eta = CASE WHEN $2 = 'pending' THEN sync.clock() + $6::text::interval ELSE eta END
         WHERE id = $1",
        &[&job.job_id, &state, &result, &warning, &error, &delay],
    ))
    .map_err(db("recording the outcome"))?;
    rt.block_on(client.batch_execute("COMMIT"))
        .map_err(db("COMMIT"))?;

    // Logs outside the job's transaction, as the worker writes them.
    if !logs.is_empty() {
        let levels: Vec<&str> = logs.iter().map(|l| l.level.as_str()).collect();
        let kinds: Vec<&str> = logs.iter().map(|l| l.kind.as_str()).collect();
        let recipients: Vec<Option<&str>> = logs.iter().map(|l| l.recipient.as_deref()).collect();
        let messages: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
        let ats: Vec<chrono::DateTime<Utc>> = logs.iter().map(|l| l.at).collect();
        rt.block_on(client.execute(
            "INSERT INTO sync.log (project_id, task_id, trigger_name, job_id, job_started_at,
                                   level, kind, recipient, message, created_at)
             SELECT $1, $2, $3, $4, $5, l.level, l.kind, l.recipient, l.message, l.at
             FROM unnest($6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[])
                  AS l(level, kind, recipient, message, at)",
            &[
                &job.project_id,
                &job.task_id,
                &job.trigger_name,
                &job.job_id,
                &job.started_at,
                &levels,
                &kinds,
                &recipients,
                &messages,
                &ats,
            ],
        ))
        .map_err(db("writing the job's logs"))?;
    }

    let report = json!({
        "job_id": job.job_id,
        "state": state,
        "outcome": match outcome { Outcome::Done { .. } => "done", Outcome::Retry { .. } => "retry", Outcome::Failed { .. } => "failed" },
        "result": result,
        "warning": warning,
        "error": error,
        "logs": logs.len(),
    });
    println!("{report}");
    Ok(())
}
