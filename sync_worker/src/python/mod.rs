// Embedded Python runtime of an executor process: prepares each project's code layers
// once per project version and runs job handlers inside the executor's transaction.
//
// Rust keeps the database side (db.rs: savepoint, role, statements; convert.rs: values);
// the task-code context is the Python package `pg_sync` (sync_worker/python/pg_sync/,
// compiled in by package.rs) on top of the primitives in native.rs. The executor only
// calls `Runtime::run`.
//
// Webhook calls take the same path (`run_webhook`): handler `handle_webhook` with an
// httprequest argument, and the return value mapped to an HTTP response besides.
//
// The submodules form layers, each using only those below it (the test at the end
// checks): pgwire, errors < statement_rules, convert, job_io < db, remote < native <
// package, runner_call < this file.
pub mod convert;
pub mod db;
mod errors;
mod job_io;
pub mod native;
mod package;
pub mod pgwire;
mod remote;
mod runner_call;
mod statement_rules;

use std::collections::HashMap;

use pyo3::prelude::*;
use serde_json::Value;

use crate::mask::Masker;
use convert::json_to_py;
use db::JobDb;
use errors::format_py_err;
pub use job_io::{JobSpec, LogLine, Outcome, WebhookRequest, WebhookResponse};
pub use package::RuntimeOptions;
use runner_call::call_runner;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start the embedded Python runtime: {0}")]
    Init(String),
    #[error("the code check failed: {0}")]
    Check(String),
}

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
    pub fn with_options(options: RuntimeOptions) -> Result<Runtime, RuntimeError> {
        Python::attach(|py| {
            let runner = package::load(py, &options)
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

    /// Compile every code layer of a project document (core_code, common_code, each
    /// task) as an executor would, running none of it; returns the problems as a JSON
    /// list of {layer, line, column, message} (empty when everything compiles).
    pub fn check_code(&self, doc: &Value) -> Result<Value, RuntimeError> {
        Python::attach(|py| {
            let failed = |e: PyErr| RuntimeError::Check(format_py_err(py, &e));
            let check = py.import("pg_sync.check").map_err(failed)?;
            let doc = json_to_py(py, doc).map_err(failed)?;
            let problems = check
                .getattr("check_document")
                .and_then(|f| f.call1((doc,)))
                .map_err(failed)?;
            convert::py_to_json(&problems).map_err(failed)
        })
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
            let answer = native::with_job_db(db, || {
                call_runner(py, self.runner.bind(py), &project, job, request)
            });
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The submodules of python/ each submodule uses: `super::` paths resolved from the
    /// module they are written in, and `crate::python::` paths (unit tests left out).
    fn edges() -> BTreeMap<String, BTreeSet<String>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/python");
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in files {
            let rel = file.strip_prefix(&dir).expect("inside python/");
            let mut module: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            let Some(me) = module.first().cloned() else {
                continue; // this file: the top
            };
            let text = std::fs::read_to_string(&file).expect("read");
            let text = text.split("#[cfg(test)]").next().unwrap_or("");
            let ident = |s: &str| -> String {
                s.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()
            };
            let mut used = Vec::new();
            for (at, _) in text.match_indices("crate::python::") {
                used.push(ident(&text[at + 15..]));
            }
            for (at, _) in text.match_indices("super::") {
                if text[..at].ends_with("super::") {
                    continue; // counted from the first `super::` of the chain
                }
                let mut rest = &text[at..];
                let mut up = 0;
                while let Some(r) = rest.strip_prefix("super::") {
                    rest = r;
                    up += 1;
                }
                let base = &module[..module.len().saturating_sub(up)];
                used.push(base.first().cloned().unwrap_or_else(|| ident(rest)));
            }
            for name in used {
                if !name.is_empty()
                    && name != me
                    && (dir.join(&name).is_dir() || dir.join(format!("{name}.rs")).exists())
                {
                    edges.entry(me.clone()).or_default().insert(name);
                }
            }
        }
        edges
    }

    /// The modules in or above a cycle (none when the graph has no cycle): modules that
    /// use none of those left are dropped until none can be.
    fn in_cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
        let mut left = edges.clone();
        loop {
            let leaves: Vec<String> = left
                .iter()
                .filter(|(_, used)| used.iter().all(|u| !left.contains_key(u)))
                .map(|(m, _)| m.clone())
                .collect();
            if leaves.is_empty() {
                return left.into_keys().collect();
            }
            for m in leaves {
                left.remove(&m);
            }
        }
    }

    #[test]
    fn the_submodules_form_no_cycle() {
        let edges = edges();
        let native = edges.get("native").cloned().unwrap_or_default();
        assert!(
            native.contains("db") && native.contains("remote"),
            "read python/: {edges:?}"
        );
        let left = in_cycles(&edges);
        assert!(
            left.is_empty(),
            "submodules of python/ in a cycle: {left:?} ({edges:?})"
        );
    }

    #[test]
    fn a_cycle_is_found() {
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        edges.entry("a".into()).or_default().insert("b".into());
        edges.entry("b".into()).or_default().insert("c".into());
        assert!(in_cycles(&edges).is_empty());
        edges.entry("c".into()).or_default().insert("b".into());
        assert_eq!(in_cycles(&edges).len(), 3);
    }
}
