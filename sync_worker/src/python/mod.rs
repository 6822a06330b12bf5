// Embedded Python runtime of an executor process: compiles task code and runs job
// handlers. The executor calls `Runtime::run`; everything Python stays behind it.
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use serde_json::Value;
use std::ffi::CString;

/// What a job needs from Python's point of view.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub job_id: i64,
    pub project_id: i64,
    pub task_id: Option<i64>,
    pub task_name: String,
    pub code: String,
    pub handler: String,
    pub trigger_name: Option<String>,
    pub args: Value,
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

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start the embedded Python interpreter: {0}")]
    Init(String),
}

pub struct Runtime {
    prelude: Py<PyModule>,
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
            })
        })
    }

    /// Run one job's handler and classify the result.
    pub fn run(&mut self, job: &JobSpec) -> Outcome {
        Python::attach(|py| {
            let prelude = self.prelude.bind(py);
            let outcome = (|| -> PyResult<Py<PyAny>> {
                let context = PyDict::new(py);
                context.set_item("trigger_name", job.trigger_name.as_deref())?;
                let (args, kwargs) = handler_args(py, job)?;
                let filename = format!("<task {}>", job.task_name);
                let code = CString::new(job.code.as_str()).map_err(|_| {
                    pyo3::exceptions::PyValueError::new_err("task code contains a NUL byte")
                })?;
                let code = code.to_str().unwrap_or_default();
                Ok(prelude
                    .getattr("run")?
                    .call1((code, filename, job.handler.as_str(), args, kwargs, context))?
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
                        .and_then(|f| f.call1((err.value(py),)))
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
        })
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
