// Embedded Python runtime of an executor process: prepares each project's code layers
// once per project version and runs job handlers inside the executor's transaction.
//
// Rust keeps the database side (db.rs: savepoint, role, statements; convert.rs: values);
// the task-code context is an embedded Python package (py/*.py, module `pg_sync`) on top
// of the primitives in native.rs. The executor only calls `Runtime::run`.
//
// Webhook calls take the same path (`run_webhook`): handler `handle_webhook` with an
// httprequest argument, and the return value mapped to an HTTP response besides.
pub mod convert;
pub mod db;
mod errors;
pub mod native;
pub mod pgwire;
mod remote;

use std::collections::HashMap;
use std::ffi::CString;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use serde_json::Value;

use crate::mask::Masker;
use convert::{json_to_py, py_to_json};
use db::JobDb;

/// What the runtime needs to know about a claimed job.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub job_id: i64,
    pub project_id: i64,
    pub project_version: i64,
    pub task_id: Option<i64>,
    pub trigger_kind: Option<String>,
    pub trigger_name: Option<String>,
    pub handler: String,
    pub args: Value,
    pub user_name: String,
    pub lang: Option<String>,
    /// The try running now: 1 for the first (Python sees it as job attempts).
    pub try_no: i32,
    pub max_retries: i32,
    pub started_at: DateTime<Utc>,
    pub soft_time_limit: Duration,
    /// The project's run_as role and why it may not be used (checked when the job was
    /// locked, not when the project was cached: a role can gain rights at any time).
    pub run_as: Option<String>,
    pub run_as_problem: Option<String>,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The handler returned; `warning` when it logged a warning.
    Done {
        result: Option<Value>,
        warning: bool,
    },
    /// RetryableJobError (also when wrapped by other exceptions): schedule another try.
    Retry { message: String },
    /// Any other error, or an error logged: message and traceback.
    Failed { message: String },
    /// Stopped by sync_cancel_job while running (what the code raised, if anything).
    Cancelled { message: String },
}

/// A line for sync.log, written by the executor outside the job's transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// debug, info, warning or error.
    pub level: String,
    /// message, data_out or data_in.
    pub kind: String,
    pub recipient: Option<String>,
    pub message: String,
    pub at: DateTime<Utc>,
}

/// A webhook request as handle_webhook(httprequest) sees it (body already parsed).
#[derive(Debug, Clone, Default)]
pub struct WebhookRequest {
    pub method: String,
    pub path: String,
    /// The full URL (base_url + path + query) as the sender used it.
    pub url: String,
    pub query: String,
    pub args: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub remote_addr: String,
    pub body: Vec<u8>,
    pub json: Option<Value>,
    pub form: Vec<(String, String)>,
    /// (field name, file name, content type, content)
    pub files: Vec<(String, String, String, Vec<u8>)>,
    /// The trigger's content_type: json or form.
    pub content_type: String,
}

/// What a webhook handler answered.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start the embedded Python runtime: {0}")]
    Init(String),
}

/// Where evaluation-context providers are searched (besides the built-in ones), and the
/// executor's memory limit (for the message of a job that runs out of memory).
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    pub eval_context_path: Vec<PathBuf>,
    pub memory_limit: usize,
}

impl RuntimeOptions {
    /// From SYNC_EVAL_CONTEXT_PATH (directories separated by ':').
    pub fn from_env() -> RuntimeOptions {
        let eval_context_path = std::env::var_os("SYNC_EVAL_CONTEXT_PATH")
            .map(|v| {
                std::env::split_paths(&v)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        RuntimeOptions {
            eval_context_path,
            memory_limit: 0,
        }
    }
}

/// The embedded package, in load order (a module may import those before it).
const PACKAGE: &[(&str, &str)] = &[
    ("pg_sync.errors", include_str!("py/errors.py")),
    ("pg_sync.sandbox", include_str!("py/sandbox.py")),
    ("pg_sync.values", include_str!("py/values.py")),
    ("pg_sync.job", include_str!("py/job.py")),
    ("pg_sync.records", include_str!("py/records.py")),
    ("pg_sync.links", include_str!("py/links.py")),
    ("pg_sync.sync_helpers", include_str!("py/sync_helpers.py")),
    ("pg_sync.rest", include_str!("py/rest.py")),
    ("pg_sync.remote", include_str!("py/remote.py")),
    ("pg_sync.tools", include_str!("py/tools.py")),
    ("pg_sync.webhook", include_str!("py/webhook.py")),
    ("pg_sync.project", include_str!("py/project.py")),
    ("pg_sync.runner", include_str!("py/runner.py")),
];

/// Evaluation-context providers shipped inside the worker.
const BUILTIN_PROVIDERS: &[(&str, &str)] = &[
    ("example", include_str!("eval_context/example.py")),
    ("http_json", include_str!("eval_context/http_json.py")),
    ("postgres", include_str!("eval_context/postgres.py")),
    ("github", include_str!("eval_context/github.py")),
    ("trello", include_str!("eval_context/trello.py")),
    ("telegram", include_str!("eval_context/telegram.py")),
];

/// Where a project's data (code layers, params, secrets: sync.project_runtime) comes
/// from. Executors ask their supervisor over the pipe, since their own connection may not
/// read secrets; `run-job` reads it on its privileged connection.
pub trait ProjectSource {
    fn project(&mut self, project_id: i64) -> Result<Value, String>;
}

/// A prepared project (its code layers), or why it could not be prepared.
struct Prepared {
    version: i64,
    project: Py<PyAny>,
    masker: std::rc::Rc<Masker>,
}

pub struct Runtime {
    runner: Py<PyModule>,
    projects: HashMap<i64, Prepared>,
    statements: db::StatementCache,
    /// The masker of a project whose code failed to prepare (its error may quote a
    /// secret, e.g. in core_code's traceback).
    failed_masker: Option<(i64, std::rc::Rc<Masker>)>,
}

impl Runtime {
    pub fn new() -> Result<Runtime, RuntimeError> {
        Self::with_options(RuntimeOptions::from_env())
    }

    pub fn with_options(options: RuntimeOptions) -> Result<Runtime, RuntimeError> {
        Python::attach(|py| {
            let runner = load_package(py, &options)
                .map_err(|e| RuntimeError::Init(format_py_err(py, &e)))?;
            Ok(Runtime {
                runner: runner.unbind(),
                projects: HashMap::new(),
                statements: db::StatementCache::default(),
                failed_masker: None,
            })
        })
    }

    /// Runs one job inside the executor's open transaction on `db`. Guarantees: on failure
    /// the job's own database writes are rolled back (savepoint) and the session role is
    /// reset; on success they stay in the transaction (the executor commits a whole
    /// batch). Loads (from `source`) and caches project code per (project_id,
    /// project_version).
    pub fn run(
        &mut self,
        job: &JobSpec,
        db: &mut JobDb,
        logs: &mut Vec<LogLine>,
        source: &mut dyn ProjectSource,
    ) -> Outcome {
        db.swap_cache(&mut self.statements);
        let (outcome, _) = self.run_inner(job, db, logs, None, source);
        db.swap_cache(&mut self.statements);
        outcome
    }

    /// Like `run`, for handle_webhook(httprequest): also returns the response when the
    /// handler succeeded.
    pub fn run_webhook(
        &mut self,
        job: &JobSpec,
        request: &WebhookRequest,
        db: &mut JobDb,
        logs: &mut Vec<LogLine>,
        source: &mut dyn ProjectSource,
    ) -> (Outcome, Option<WebhookResponse>) {
        db.swap_cache(&mut self.statements);
        let answer = self.run_inner(job, db, logs, Some(request), source);
        db.swap_cache(&mut self.statements);
        answer
    }

    /// Load and prepare the job's project code now (it is cached), so that the time a
    /// job is measured from starts with its handler, not with loading its project.
    /// Errors are reported again by `run`.
    pub fn prepare(&mut self, job: &JobSpec, source: &mut dyn ProjectSource) {
        Python::attach(|py| {
            let _ = self.project(py, job, source);
        });
    }

    /// What must be masked in the job's log lines, error and result: the secret values
    /// of its project as last prepared (nothing when it could not be loaded).
    pub fn masker(&self, project_id: i64) -> std::rc::Rc<Masker> {
        if let Some(p) = self.projects.get(&project_id) {
            return p.masker.clone();
        }
        match &self.failed_masker {
            Some((id, m)) if *id == project_id => m.clone(),
            _ => std::rc::Rc::default(),
        }
    }

    /// Call after the executor replaced its database connection: prepared statements of
    /// the old one are dropped (they would fail once otherwise).
    pub fn connection_changed(&mut self) {
        self.statements = db::StatementCache::default();
    }

    fn run_inner(
        &mut self,
        job: &JobSpec,
        db: &mut JobDb,
        logs: &mut Vec<LogLine>,
        request: Option<&WebhookRequest>,
        source: &mut dyn ProjectSource,
    ) -> (Outcome, Option<WebhookResponse>) {
        Python::attach(|py| {
            let project = match self.project(py, job, source) {
                Ok(p) => p,
                Err(message) => return (Outcome::Failed { message }, None),
            };
            db.start_job(run_as(job));
            let answer = native::with_job_db(db, || self.call_runner(py, &project, job, request));
            let mut outcome = match &answer {
                Ok(a) => {
                    logs.extend(a.logs.iter().cloned());
                    a.outcome.clone()
                }
                Err(e) => Outcome::Failed {
                    message: format!("pg_sync runtime error: {}", format_py_err(py, e)),
                },
            };
            if native::take_cancel(job.job_id) {
                // Stopped by sync_cancel_job: its writes go, whatever its code did with
                // the exception.
                outcome = Outcome::Cancelled {
                    message: match outcome {
                        Outcome::Done { .. } => String::new(),
                        Outcome::Retry { message }
                        | Outcome::Failed { message }
                        | Outcome::Cancelled { message } => message,
                    },
                };
            } else if let Some(why) = db.broken() {
                outcome = Outcome::Failed {
                    message: why.to_string(),
                };
            } else if let (Some(error), Outcome::Done { .. }) = (db.aborted(), &outcome) {
                outcome = Outcome::Failed {
                    message: format!(
                        "the job went on after a database error, which aborted its transaction: {error}\nLet the error propagate, or catch it around `with db.savepoint():` to roll back just that part."
                    ),
                };
            }
            let children = answer.as_ref().ok().and_then(|a| a.children.clone());
            let outcome = finish(job, db, outcome, children);
            let response = match (&outcome, answer) {
                (Outcome::Done { .. }, Ok(a)) => a.response,
                _ => None,
            };
            (outcome, response)
        })
    }

    /// The prepared project for `job`, loading it when missing or older than the job.
    fn project(
        &mut self,
        py: Python<'_>,
        job: &JobSpec,
        source: &mut dyn ProjectSource,
    ) -> Result<Py<PyAny>, String> {
        if let Some(p) = self.projects.get(&job.project_id) {
            if p.version >= job.project_version {
                return Ok(p.project.clone_ref(py));
            }
        }
        let data = source
            .project(job.project_id)
            .map_err(|e| format!("cannot load project {}: {e}", job.project_id))?;
        let masker = std::rc::Rc::new(Masker::from_json(data.get("mask")));
        let version = data.get("version").and_then(Value::as_i64).unwrap_or(0);
        // An older version is dropped whether or not the new one prepares.
        self.projects.remove(&job.project_id);
        let project = (|| -> PyResult<Py<PyAny>> {
            let data = json_to_py(py, &data)?;
            Ok(self
                .runner
                .bind(py)
                .getattr("prepare")?
                .call1((data,))?
                .unbind())
        })()
        .map_err(|e| {
            self.failed_masker = Some((job.project_id, masker.clone()));
            format_py_err(py, &e)
        })?;
        self.projects.insert(
            job.project_id,
            Prepared {
                version,
                project: project.clone_ref(py),
                masker,
            },
        );
        Ok(project)
    }

    fn call_runner(
        &self,
        py: Python<'_>,
        project: &Py<PyAny>,
        job: &JobSpec,
        request: Option<&WebhookRequest>,
    ) -> PyResult<RunnerAnswer> {
        let info = PyDict::new(py);
        info.set_item("job_id", job.job_id)?;
        info.set_item("project_id", job.project_id)?;
        info.set_item("task_id", job.task_id)?;
        info.set_item("trigger_kind", job.trigger_kind.as_deref())?;
        info.set_item("trigger_name", job.trigger_name.as_deref())?;
        info.set_item("handler", &job.handler)?;
        info.set_item("args", json_to_py(py, &job.args)?)?;
        info.set_item("user", &job.user_name)?;
        info.set_item("lang", job.lang.as_deref())?;
        info.set_item("attempts", job.try_no)?;
        info.set_item("max_retries", job.max_retries)?;
        info.set_item("started_at", job.started_at.timestamp_micros() as f64 / 1e6)?;
        info.set_item("soft_time_limit", job.soft_time_limit.as_secs_f64())?;
        let runner = self.runner.bind(py);
        let ret = match request {
            None => runner.getattr("run_job")?.call1((project.bind(py), info))?,
            Some(req) => runner.getattr("run_webhook")?.call1((
                project.bind(py),
                info,
                request_dict(py, req)?,
                req.content_type.as_str(),
            ))?,
        };
        let ret = ret.cast::<PyTuple>()?;
        let status: String = ret.get_item(0)?.extract()?;
        let payload: Option<String> = ret.get_item(1)?.extract()?;
        let warning: bool = ret.get_item(2)?.extract()?;
        let mut logs = Vec::new();
        for line in ret.get_item(3)?.cast::<PyList>()?.iter() {
            let (level, kind, recipient, message, at): (
                String,
                String,
                Option<String>,
                String,
                f64,
            ) = line.extract()?;
            logs.push(LogLine {
                level,
                kind,
                recipient,
                message,
                at: DateTime::from_timestamp_micros((at * 1e6) as i64).unwrap_or_else(Utc::now),
            });
        }
        let children = ret.get_item(4)?;
        let children = if children.is_none() {
            None
        } else {
            Some(py_to_json(&children)?)
        };
        let outcome = match status.as_str() {
            "done" => Outcome::Done {
                result: payload.and_then(|p| serde_json::from_str(&p).ok()),
                warning,
            },
            "retry" => Outcome::Retry {
                message: payload.unwrap_or_default(),
            },
            _ => Outcome::Failed {
                message: payload.unwrap_or_default(),
            },
        };
        let response = if request.is_some() {
            let r = ret.get_item(5)?;
            if r.is_none() {
                None
            } else {
                let (status, headers, body): (u16, Vec<(String, String)>, Bound<'_, PyAny>) =
                    r.extract()?;
                let body = body.cast::<pyo3::types::PyBytes>()?.as_bytes().to_vec();
                Some(WebhookResponse {
                    status,
                    headers,
                    body,
                })
            }
        } else {
            None
        };
        Ok(RunnerAnswer {
            outcome,
            logs,
            children,
            response,
        })
    }
}

/// The role the job's SQL runs as, or why its code may not use the database.
fn run_as(job: &JobSpec) -> Result<String, String> {
    match (&job.run_as, &job.run_as_problem) {
        (Some(role), None) => Ok(role.clone()),
        (Some(role), Some(problem)) => Err(format!(
            "project run_as role \"{role}\" {problem}; task code may not use the database as it"
        )),
        (None, _) => {
            Err("the project has no run_as role, so its task code may not use the database".into())
        }
    }
}

struct RunnerAnswer {
    outcome: Outcome,
    logs: Vec<LogLine>,
    /// Jobs queued with add_job, inserted only if the job succeeds.
    children: Option<Value>,
    response: Option<WebhookResponse>,
}

/// The request as the dict pg_sync.webhook.HttpRequest is built from.
fn request_dict<'py>(py: Python<'py>, req: &WebhookRequest) -> PyResult<Bound<'py, PyDict>> {
    use pyo3::types::PyBytes;
    let d = PyDict::new(py);
    d.set_item("method", &req.method)?;
    d.set_item("path", &req.path)?;
    d.set_item("url", &req.url)?;
    d.set_item("query", &req.query)?;
    d.set_item("args", req.args.clone())?;
    d.set_item("headers", req.headers.clone())?;
    d.set_item("remote_addr", &req.remote_addr)?;
    d.set_item("data", PyBytes::new(py, &req.body))?;
    match &req.json {
        Some(v) => d.set_item("json", json_to_py(py, v)?)?,
        None => d.set_item("json", py.None())?,
    }
    d.set_item("form", req.form.clone())?;
    let files = PyList::empty(py);
    for (name, filename, ctype, data) in &req.files {
        files.append((name, filename, ctype, PyBytes::new(py, data)))?;
    }
    d.set_item("files", files)?;
    d.set_item("content_type", &req.content_type)?;
    Ok(d)
}

/// Insert child jobs, then keep or roll back the job's writes.
fn finish(job: &JobSpec, db: &mut JobDb, outcome: Outcome, children: Option<Value>) -> Outcome {
    let mut outcome = outcome;
    if let (Outcome::Done { .. }, Some(children)) = (&outcome, children) {
        let inserted = db.insert_children(job.job_id, &children);
        if let Err(e) = inserted {
            outcome = Outcome::Failed {
                message: format!("add_job: cannot queue the jobs: {e}"),
            };
        }
    }
    let keep = matches!(outcome, Outcome::Done { .. });
    if let Err(e) = db.finish_job(keep) {
        let what = if keep {
            "keeping (so they were rolled back)"
        } else {
            "rolling back"
        };
        return Outcome::Failed {
            message: format!("database error while {what} the job's writes: {e}"),
        };
    }
    outcome
}

/// Load the embedded package into sys.modules and initialise it.
fn load_package<'py>(py: Python<'py>, options: &RuntimeOptions) -> PyResult<Bound<'py, PyModule>> {
    let sys = py.import("sys")?;
    let modules = sys.getattr("modules")?;
    let package = PyModule::new(py, "pg_sync")?;
    package.setattr("__path__", PyList::empty(py))?;
    modules.set_item("pg_sync", &package)?;
    let native = native::module(py)?;
    modules.set_item("pg_sync._native", &native)?;
    package.setattr("_native", &native)?;
    let mut last = None;
    for (name, source) in PACKAGE {
        let short = name.trim_start_matches("pg_sync.");
        let file = CString::new(format!("<pg_sync/{short}.py>"))?;
        let code = CString::new(*source)?;
        let module_name = CString::new(*name)?;
        let module = PyModule::from_code(py, &code, &file, &module_name)?;
        package.setattr(short, &module)?;
        last = Some(module);
    }
    let runner = last.expect("the package has modules");
    let builtin = PyDict::new(py);
    for (name, source) in BUILTIN_PROVIDERS {
        builtin.set_item(name, source)?;
    }
    let path: Vec<String> = options
        .eval_context_path
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    runner
        .getattr("init")?
        .call1((builtin, path, options.memory_limit))?;
    Ok(runner)
}

/// A Python exception as text with its traceback.
fn format_py_err(py: Python<'_>, e: &PyErr) -> String {
    // The traceback travels beside the exception until Python code catches it.
    if let Some(tb) = e.traceback(py) {
        let _ = e.value(py).setattr("__traceback__", tb);
    }
    let formatted = py
        .import("pg_sync.runner")
        .and_then(|r| r.getattr("format_exception"))
        .and_then(|f| f.call1((e.value(py),)))
        .and_then(|t| t.extract::<String>());
    formatted.unwrap_or_else(|_| e.to_string())
}
