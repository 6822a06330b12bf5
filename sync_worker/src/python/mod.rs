// Embedded Python runtime of an executor process: compiles task code and runs job
// handlers. The executor calls `Runtime::run`; everything Python stays behind it.
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use serde_json::Value;
use std::ffi::CString;

pub mod db;

/// What a job needs from Python's point of view.
#[derive(Debug, Clone)]
#[allow(dead_code)] // interim runtime: the python helper's version reads every field
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
    pub attempts: i32,
    pub max_retries: i32,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub soft_time_limit: std::time::Duration,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done {
        result: Option<Value>,
        warning: bool,
    },
    Retry {
        message: String,
    },
    Failed {
        message: String,
    },
}

/// A line the job logged.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub level: String,
    pub kind: String,
    pub recipient: Option<String>,
    pub message: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start the embedded Python interpreter: {0}")]
    Init(String),
}

pub struct Runtime {
    prelude: Py<PyModule>,
    code: std::collections::HashMap<i64, (String, String)>,
}

impl Runtime {
    pub fn new() -> Result<Runtime, RuntimeError> {
        Python::attach(|py| {
            let module = PyModule::from_code(
                py,
                &CString::new(include_str!("prelude.py"))
                    .map_err(|e| RuntimeError::Init(e.to_string()))?,
                c"<pg_sync prelude>",
                c"_pg_sync",
            )
            .map_err(|e| RuntimeError::Init(e.to_string()))?;
            Ok(Runtime {
                prelude: module.unbind(),
                code: Default::default(),
            })
        })
    }

    /// Run one job inside the executor's open transaction (savepoint per job).
    pub fn run(&mut self, job: &JobSpec, db: &mut db::JobDb, logs: &mut Vec<LogLine>) -> Outcome {
        let _ = logs;
        let Some(task_id) = job.task_id else {
            return Outcome::Failed {
                message: "the job has no task".into(),
            };
        };
        #[allow(clippy::map_entry)] // interim runtime
        if !self.code.contains_key(&task_id) {
            match db.rt.block_on(db.client.query_one(
                "SELECT name, code FROM sync.task WHERE id = $1",
                &[&task_id],
            )) {
                Ok(row) => {
                    self.code.insert(task_id, (row.get(0), row.get(1)));
                }
                Err(e) => {
                    return Outcome::Failed {
                        message: e.to_string(),
                    }
                }
            }
        }
        let (task_name, code) = self.code[&task_id].clone();
        if let Err(e) = db.batch("SAVEPOINT job") {
            return Outcome::Failed {
                message: e.to_string(),
            };
        }
        let outcome = Python::attach(|py| {
            let prelude = self.prelude.bind(py);
            let outcome = (|| -> PyResult<Py<PyAny>> {
                let context = PyDict::new(py);
                context.set_item("trigger_name", job.trigger_name.as_deref())?;
                let (args, kwargs) = handler_args(py, job)?;
                let filename = format!("<task {}>", task_name);
                Ok(prelude
                    .getattr("run")?
                    .call1((
                        code.as_str(),
                        filename,
                        job.handler.as_str(),
                        args,
                        kwargs,
                        context,
                    ))?
                    .unbind())
            })();
            match outcome {
                Ok(value) => Outcome::Done {
                    result: to_json(py, value.bind(py)),
                    warning: false,
                },
                Err(err) => {
                    let text = prelude
                        .getattr("format_exception")
                        .and_then(|f| f.call1((err.value(py), err.traceback(py))))
                        .and_then(|t| t.extract::<String>())
                        .unwrap_or_else(|_| err.to_string());
                    let retry = prelude
                        .getattr("RetryableJobError")
                        .map(|cls| err.value(py).is_instance(&cls).unwrap_or(false))
                        .unwrap_or(false);
                    if retry {
                        Outcome::Retry { message: text }
                    } else {
                        Outcome::Failed { message: text }
                    }
                }
            }
        });
        let end = if matches!(outcome, Outcome::Done { .. }) {
            "RELEASE SAVEPOINT job"
        } else {
            "ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job"
        };
        if let Err(e) = db.batch(end) {
            return Outcome::Failed {
                message: e.to_string(),
            };
        }
        outcome
    }
}

fn handler_args<'py>(
    py: Python<'py>,
    job: &JobSpec,
) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, PyDict>)> {
    let json = py.import("json")?;
    let loads = |v: &Value| -> PyResult<Bound<'py, PyAny>> {
        json.getattr("loads")?.call1((v.to_string(),))
    };
    let kwargs = PyDict::new(py);
    let args = match job.handler.as_str() {
        "handle_db" => {
            let keys = job
                .args
                .get("keys")
                .cloned()
                .unwrap_or(Value::Array(vec![]));
            PyTuple::new(py, [loads(&keys)?])?
        }
        "handle_cron" | "handle_button" => PyTuple::empty(py),
        _ => {
            let list = loads(job.args.get("args").unwrap_or(&Value::Array(vec![])))?;
            if let Some(Value::Object(kw)) = job.args.get("kwargs") {
                for (k, v) in kw {
                    kwargs.set_item(k, loads(v)?)?;
                }
            }
            PyTuple::new(py, list.cast::<PyList>()?.iter())?
        }
    };
    Ok((args, kwargs))
}

fn to_json(py: Python<'_>, value: &Bound<'_, PyAny>) -> Option<Value> {
    if value.is_none() {
        return None;
    }
    let text: String = py
        .import("json")
        .ok()?
        .getattr("dumps")
        .ok()?
        .call1((value,))
        .ok()?
        .extract()
        .ok()?;
    serde_json::from_str(&text).ok()
}
