// Helpers for tests of Python task code: a project with a run_as role, tasks, jobs, and
// running one job through `sync_worker run-job` (the real runtime, no worker loop).
use std::path::PathBuf;
use std::process::Command;

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::OnceCell;
use tokio_postgres::Client;

use crate::{scalar, wait_for, TestDb, WorkerProcess};

/// The sync_worker binary built by scripts/test.sh.
pub fn worker_bin() -> PathBuf {
    match std::env::var("SYNC_WORKER_BIN") {
        Ok(p) => PathBuf::from(p),
        Err(_) => panic!("SYNC_WORKER_BIN is not set: run the tests with scripts/test.sh"),
    }
}

/// A project in a fresh database, with a run_as role that may use the test tables.
pub struct PyProject {
    pub db: TestDb,
    pub client: Client,
    pub id: i64,
    pub role: String,
    /// A real worker on the test database, started by the first `run`.
    worker: OnceCell<WorkerProcess>,
    worker_env: Vec<(String, String)>,
}

impl PyProject {
    /// New database, role `<db>_run` (member of sync_developer), active project `name`.
    pub async fn new(name: &str) -> PyProject {
        Self::in_db(name, TestDb::new().await).await
    }

    /// The same in a database of the caller's choosing (e.g. on a private cluster).
    pub async fn in_db(name: &str, db: TestDb) -> PyProject {
        let client = db.connect().await;
        let role = format!("{}_run", db.name);
        client
            .batch_execute(&format!(
                "CREATE ROLE {role} NOLOGIN; GRANT sync_developer TO {role};
                 GRANT USAGE, CREATE ON SCHEMA public TO {role};
                 ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO {role};
                 ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO {role};"
            ))
            .await
            .expect("create the run_as role");
        let id: i64 = client
            .query_one(
                "INSERT INTO sync.project (name, active, run_as) VALUES ($1, true, $2) RETURNING id",
                &[&name, &role],
            )
            .await
            .expect("create project")
            .get(0);
        PyProject {
            db,
            client,
            id,
            role,
            worker: OnceCell::new(),
            worker_env: Vec::new(),
        }
    }

    /// Environment variables for the worker (set before the first `run`).
    pub fn worker_env(&mut self, key: &str, value: &str) {
        self.worker_env.push((key.to_string(), value.to_string()));
    }

    /// The worker process serving this project's database (started on first use).
    pub async fn worker(&self) -> &WorkerProcess {
        self.worker
            .get_or_init(|| async {
                let env: Vec<(&str, &str)> = self
                    .worker_env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                WorkerProcess::start_env(
                    &self.db.url,
                    &["--executors", "1", "--poll-interval", "200ms"],
                    &env,
                )
            })
            .await
    }

    /// Run SQL as the database owner.
    pub async fn sql(&self, sql: &str) {
        crate::exec(&self.client, sql).await
    }

    pub async fn set(&self, column: &str, value: &str) {
        self.client
            .execute(
                &format!("UPDATE sync.project SET {column} = $2 WHERE id = $1"),
                &[&self.id, &value],
            )
            .await
            .unwrap_or_else(|e| panic!("set {column}: {e}"));
    }

    pub async fn task(&self, name: &str, code: &str) -> i64 {
        self.client
            .query_one(
                "INSERT INTO sync.task (project_id, name, code) VALUES ($1, $2, $3) RETURNING id",
                &[&self.id, &name, &code],
            )
            .await
            .expect("create task")
            .get(0)
    }

    /// Queue a job for `handler` of `task_id` with `args`.
    pub async fn job(&self, task_id: i64, handler: &str, args: Value) -> i64 {
        self.job_with(
            task_id,
            handler,
            args,
            "trigger_name, lang",
            "'manual', NULL",
        )
        .await
    }

    /// Queue a job setting extra columns (`columns` with matching SQL `values`).
    pub async fn job_with(
        &self,
        task_id: i64,
        handler: &str,
        args: Value,
        columns: &str,
        values: &str,
    ) -> i64 {
        self.client
            .query_one(
                &format!(
                    "INSERT INTO sync.job (project_id, task_id, handler, args, {columns})
                     VALUES ($1, $2, $3, $4, {values}) RETURNING id"
                ),
                &[&self.id, &task_id, &handler, &args],
            )
            .await
            .expect("queue job")
            .get(0)
    }

    /// Queue `n` jobs of handler `work` of `task_id` in one statement, args 1 to n.
    pub async fn queue_work(&self, task_id: i64, n: i64) {
        self.client
            .execute(
                "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler, args)
                 SELECT $1, $2, 'job', 'work', jsonb_build_object('args', jsonb_build_array(g))
                 FROM generate_series(1, $3::bigint) g",
                &[&self.id, &task_id, &n],
            )
            .await
            .expect("queue jobs");
    }

    /// Run the job now with `sync_worker run-job`; returns its printed report.
    pub fn run_now(&self, job_id: i64) -> Value {
        run_job(&self.db.url, job_id, &[])
    }

    /// Let the worker run the job; returns {state, outcome, result, error, warning} once
    /// it is done, failed, cancelled, or pending again for a retry.
    pub async fn run(&self, job_id: i64) -> Value {
        self.worker().await;
        self.finished(job_id).await
    }

    /// Wait until the job ran, and report on it.
    pub async fn finished(&self, job_id: i64) -> Value {
        wait_job(&self.client, job_id).await
    }
}

/// Wait (30 s at most) until a job is done, failed, cancelled, or pending again for a
/// retry, and report {job_id, state, outcome, result, error, warning}.
pub async fn wait_job(client: &Client, job_id: i64) -> Value {
    let sql =
        "SELECT state IN ('done', 'failed', 'cancelled') OR (state = 'pending' AND attempts > 0)
                   FROM sync.job WHERE id = $1";
    wait_for(
        &format!("job {job_id}"),
        Duration::from_secs(30),
        || async {
            client
                .query_one(sql, &[&job_id])
                .await
                .map(|r| r.get::<_, bool>(0))
                .unwrap_or(false)
        },
    )
    .await;
    let row = client
        .query_one(
            "SELECT state, result, error, warning FROM sync.job WHERE id = $1",
            &[&job_id],
        )
        .await
        .expect("read job");
    let state: String = row.get(0);
    let outcome = match state.as_str() {
        "pending" => "retry",
        s => s,
    };
    json!({
        "job_id": job_id,
        "state": state,
        "outcome": outcome,
        "result": row.get::<_, Option<Value>>(1),
        "error": row.get::<_, Option<String>>(2),
        "warning": row.get::<_, bool>(3),
    })
}

impl PyProject {
    /// One task with `code`, one job of `handler`, run by the worker; the report.
    pub async fn run_code(&self, code: &str, handler: &str, args: Value) -> Value {
        let name = format!(
            "t{}",
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let task = self.task(&name, code).await;
        let job = self.job(task, handler, args).await;
        self.run(job).await
    }

    /// Result of a job that must succeed.
    pub async fn result(&self, code: &str, handler: &str) -> Value {
        let report = self.run_code(code, handler, Value::Null).await;
        assert_eq!(report["state"], "done", "job failed: {report}");
        report["result"].clone()
    }

    /// Error text of a job that must fail.
    pub async fn error(&self, code: &str, handler: &str) -> String {
        let report = self.run_code(code, handler, Value::Null).await;
        assert_eq!(report["state"], "failed", "job did not fail: {report}");
        report["error"].as_str().unwrap_or_default().to_string()
    }

    /// Log lines of a job: (level, kind, recipient, message).
    pub async fn logs(&self, job_id: i64) -> Vec<(String, String, Option<String>, String)> {
        self.client
            .query(
                "SELECT level, kind, recipient, message FROM sync.log_view WHERE job_id = $1 ORDER BY created_at, id",
                &[&job_id],
            )
            .await
            .expect("read logs")
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    pub async fn scalar<T>(&self, sql: &str) -> T
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        scalar(&self.client, sql).await
    }
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// `sync_worker run-job --job-id N` against `url`; panics unless it prints a report.
pub fn run_job(url: &str, job_id: i64, extra: &[&str]) -> Value {
    let out = Command::new(worker_bin())
        .arg("--database-url")
        .arg(url)
        .arg("run-job")
        .arg("--job-id")
        .arg(job_id.to_string())
        .args(extra)
        .output()
        .expect("start sync_worker run-job");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "run-job failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("run-job printed no report ({e}):\n{stdout}\n{stderr}"))
}
