// `sync_worker run-job --job-id N` (for debugging): runs one job now, as a batch of one on
// the same path as the worker's executors, and prints its outcome as JSON.
//
// Like the worker it uses two logins: its own (registers a short-lived worker, claims the
// job, reads the project) and the executor login for the job's own SQL, so a job run by
// hand has no more rights than one run by the worker.
use std::time::Duration;

use serde_json::json;

use crate::executor::log_stream::LogStream;
use crate::executor::protocol::Pick;
use crate::executor::status_page::StatusPage;
use crate::executor::{Cancels, Executor};
use crate::python::{ProjectSource, Runtime, RuntimeError, RuntimeOptions};
use crate::queue::registry::WorkerAuth;

#[derive(clap::Args, Debug)]
pub struct RunJobArgs {
    /// The job to run (any state; a running job is run again).
    #[arg(long)]
    pub job_id: i64,
    /// Soft time limit in seconds of a task without its own time_limit (default 60).
    #[arg(long)]
    pub soft_time_limit: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunJobError {
    #[error(
        "--database-url (or DATABASE_URL) is required, or libpq's PGHOST, PGDATABASE... variables"
    )]
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
    #[error("{0}")]
    Register(#[from] crate::queue::registry::RegisterError),
    #[error("{0}")]
    Startup(#[from] crate::startup::StartupError),
    #[error("job {0} does not exist")]
    NoJob(i64),
    #[error("job {0} did not run: {1}")]
    NotRun(i64, &'static str),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot map a status page: {0}")]
    Status(std::io::Error),
}

fn db(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> RunJobError {
    move |source| RunJobError::Db { what, source }
}

/// Whether the job exists (its batch claims it whatever its state, see Pick::AnyState).
const EXISTS_SQL: &str = "SELECT EXISTS (SELECT 1 FROM sync.job WHERE id = $1)";

const REPORT_SQL: &str = "
SELECT state, result, warning, error, (SELECT count(*) FROM sync.log_view l WHERE l.job_id = j.id)
FROM sync.job j WHERE id = $1";

/// Entry point of the subcommand; returns the process exit code.
pub fn main(worker: &crate::config::WorkerArgs, args: &RunJobArgs) -> i32 {
    match run(worker, args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sync_worker run-job: {e}");
            1
        }
    }
}

/// Project data read on the privileged connection (the worker reads it for its
/// executors the same way).
struct Direct {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl ProjectSource for Direct {
    fn project(&mut self, project_id: i64) -> Result<serde_json::Value, String> {
        let client = &self.client;
        self.rt
            .block_on(async {
                client
                    .query_one("SELECT sync.executor_sync_roles()", &[])
                    .await?;
                client
                    .query_one("SELECT sync.project_runtime($1)", &[&project_id])
                    .await
            })
            .map_err(|e| crate::pg::describe(&e))?
            .get::<_, Option<serde_json::Value>>(0)
            .ok_or_else(|| "the project does not exist".to_string())
    }
}

fn run(worker: &crate::config::WorkerArgs, args: &RunJobArgs) -> Result<(), RunJobError> {
    let url = crate::pg::url_or_environment(worker.settings.database_url.as_deref())
        .ok_or(RunJobError::NoUrl)?;
    let executor_database_url = worker.settings.executor_database_url.as_deref();
    let (eval_context_path, python_path) = crate::config::python_dirs(worker)?;
    let python = RuntimeOptions::new(eval_context_path.as_deref(), python_path.as_deref(), 0);
    // Two runtimes: each drives its own connection while the other blocks.
    let own_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let job_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = own_rt
        .block_on(crate::pg::connect(url, "sync_worker run-job"))
        .map_err(|e| RunJobError::Connect(e.to_string()))?;
    let (auth, _caller): (WorkerAuth, String) =
        own_rt.block_on(crate::queue::registry::register(&client, None, None))?;
    let login = own_rt.block_on(crate::startup::executor_login(
        &client,
        url,
        executor_database_url,
        false,
    ))?;
    let exists: bool = own_rt
        .block_on(client.query_one(EXISTS_SQL, &[&args.job_id]))
        .map_err(db("finding the job"))?
        .get(0);
    if !exists {
        return Err(RunJobError::NoJob(args.job_id));
    }
    let job_client = job_rt
        .block_on(crate::pg::connect_login(
            &login,
            "sync_worker run-job (job)",
        ))
        .map_err(|e| RunJobError::Connect(e.to_string()))?;
    let (status, _fd) = StatusPage::create().map_err(RunJobError::Status)?;
    let soft = Duration::from_secs_f64(args.soft_time_limit.unwrap_or(60.0));
    let mut ex = Executor {
        rt: job_rt,
        runtime: Runtime::with_options(python)?,
        status,
        job: job_client,
        statements: Default::default(),
        projects: Box::new(Direct { rt: own_rt, client }),
        cancels: std::sync::Arc::new(Cancels::default()),
        soft_time_limit: soft,
        hard_margin: Duration::from_secs(30),
        stop: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        throttle: Duration::ZERO,
        log_stream: LogStream::start(login.clone(), "sync_worker run-job (log)".into())?,
    };
    let report = ex.run_batch(1, &auth, Pick::AnyState(args.job_id), &mut |_| {});
    if !report.completed.contains(&args.job_id) {
        let why = if !report.lost.is_empty() {
            "the database connection was lost"
        } else {
            "it could not be locked (another worker has it?)"
        };
        return Err(RunJobError::NotRun(args.job_id, why));
    }
    let Executor { projects, .. } = ex;
    drop(projects);
    let client = crate::pg::connect(url, "sync_worker run-job");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = rt
        .block_on(client)
        .map_err(|e| RunJobError::Connect(e.to_string()))?;
    let row = rt
        .block_on(client.query_one(REPORT_SQL, &[&args.job_id]))
        .map_err(db("reading the outcome"))?;
    let _ = rt.block_on(crate::queue::registry::stopped(&client, auth.worker));
    let state: String = row.get(0);
    let report = json!({
        "job_id": args.job_id,
        "state": state,
        "outcome": match state.as_str() { "pending" => "retry", s => s },
        "result": row.get::<_, Option<serde_json::Value>>(1),
        "warning": row.get::<_, bool>(2),
        "error": row.get::<_, Option<String>>(3),
        "logs": row.get::<_, i64>(4),
    });
    println!("{report}");
    Ok(())
}
