// The call into pg_sync.runner for one job: the job (and a webhook's request) as the
// dicts run_job/run_webhook take, their answer tuple read back into Rust values.
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use serde_json::Value;

use super::convert::{json_to_py, py_to_json};
use super::job_io::{JobSpec, LogLine, Outcome, WebhookRequest, WebhookResponse};

/// What runner.run_job / run_webhook answered.
pub(crate) struct RunnerAnswer {
    pub outcome: Outcome,
    pub logs: Vec<LogLine>,
    /// Jobs queued with add_job, inserted only if the job succeeds.
    pub children: Option<Value>,
    pub response: Option<WebhookResponse>,
}

/// Run `job` (or the webhook `request`) with the prepared `project` through `runner`
/// (the module pg_sync.runner).
pub(crate) fn call_runner(
    py: Python<'_>,
    runner: &Bound<'_, PyModule>,
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
        let (level, kind, recipient, message, at): (String, String, Option<String>, String, f64) =
            line.extract()?;
        logs.push(LogLine::from_python(level, kind, recipient, message, at));
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
            let body = body.cast::<PyBytes>()?.as_bytes().to_vec();
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

/// The request as the dict pg_sync.webhook.HttpRequest is built from.
fn request_dict<'py>(py: Python<'py>, req: &WebhookRequest) -> PyResult<Bound<'py, PyDict>> {
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
