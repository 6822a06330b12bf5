// The Python side the worker embeds (sync_worker/python/): the package `pg_sync` and the
// built-in evaluation-context providers, compiled in and loaded into sys.modules.
use std::ffi::CString;
use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::native;

/// Where evaluation-context providers are searched (besides the built-in ones), the
/// directories added to sys.path (python_path), and the executor's memory limit (for the
/// message of a job that runs out of memory).
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    pub eval_context_path: Vec<PathBuf>,
    pub python_path: Vec<PathBuf>,
    pub memory_limit: usize,
}

impl RuntimeOptions {
    /// From the settings eval_context_path and python_path (directories separated by ':').
    pub fn new(
        eval_context_path: Option<&str>,
        python_path: Option<&str>,
        memory_limit: usize,
    ) -> RuntimeOptions {
        RuntimeOptions {
            eval_context_path: split_dirs(eval_context_path),
            python_path: split_dirs(python_path),
            memory_limit,
        }
    }
}

fn split_dirs(list: Option<&str>) -> Vec<PathBuf> {
    list.map(|v| {
        std::env::split_paths(v)
            .filter(|p| !p.as_os_str().is_empty())
            .collect()
    })
    .unwrap_or_default()
}

/// Puts python_path's directories on sys.path as a virtual environment's site-packages
/// is: after the standard library (which they must not shadow), before the system's
/// packages (which they override), with their `.pth` files read (editable installs).
const ADD_PYTHON_PATH: &str = r#"
import site, sys

def add(dirs):
    before = list(sys.path)
    for d in dirs:
        site.addsitedir(d)
    added = [p for p in sys.path if p not in before]
    kept = [p for p in sys.path if p in before]
    at = next(
        (i for i, p in enumerate(kept) if p.endswith(("site-packages", "dist-packages"))),
        len(kept),
    )
    sys.path[:] = kept[:at] + added + kept[at:]
"#;

fn add_python_path(py: Python<'_>, dirs: &[PathBuf]) -> PyResult<()> {
    if dirs.is_empty() {
        return Ok(());
    }
    let code = CString::new(ADD_PYTHON_PATH)?;
    let module = PyModule::from_code(py, &code, c"<pg_sync python_path>", c"_pg_sync_python_path")?;
    let dirs: Vec<String> = dirs
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    module.getattr("add")?.call1((dirs,))?;
    Ok(())
}

/// The embedded package, in load order (a module may import those before it).
const PACKAGE: &[(&str, &str)] = &[
    (
        "pg_sync.errors",
        include_str!("../../python/pg_sync/errors.py"),
    ),
    (
        "pg_sync.sandbox",
        include_str!("../../python/pg_sync/sandbox.py"),
    ),
    (
        "pg_sync.check",
        include_str!("../../python/pg_sync/check.py"),
    ),
    (
        "pg_sync.values",
        include_str!("../../python/pg_sync/values.py"),
    ),
    ("pg_sync.job", include_str!("../../python/pg_sync/job.py")),
    ("pg_sync.db", include_str!("../../python/pg_sync/db.py")),
    (
        "pg_sync.records",
        include_str!("../../python/pg_sync/records.py"),
    ),
    (
        "pg_sync.links",
        include_str!("../../python/pg_sync/links.py"),
    ),
    (
        "pg_sync.sync_helpers",
        include_str!("../../python/pg_sync/sync_helpers.py"),
    ),
    (
        "pg_sync.http_results",
        include_str!("../../python/pg_sync/http_results.py"),
    ),
    (
        "pg_sync.settings",
        include_str!("../../python/pg_sync/settings.py"),
    ),
    ("pg_sync.rest", include_str!("../../python/pg_sync/rest.py")),
    (
        "pg_sync.remote",
        include_str!("../../python/pg_sync/remote.py"),
    ),
    (
        "pg_sync.tools",
        include_str!("../../python/pg_sync/tools.py"),
    ),
    (
        "pg_sync.webhook",
        include_str!("../../python/pg_sync/webhook.py"),
    ),
    (
        "pg_sync.project",
        include_str!("../../python/pg_sync/project.py"),
    ),
    (
        "pg_sync.runner",
        include_str!("../../python/pg_sync/runner.py"),
    ),
];

/// Evaluation-context providers shipped inside the worker.
const BUILTIN_PROVIDERS: &[(&str, &str)] = &[
    (
        "example",
        include_str!("../../python/eval_context/example.py"),
    ),
    (
        "http_json",
        include_str!("../../python/eval_context/http_json.py"),
    ),
    (
        "postgres",
        include_str!("../../python/eval_context/postgres.py"),
    ),
    (
        "github",
        include_str!("../../python/eval_context/github.py"),
    ),
    (
        "trello",
        include_str!("../../python/eval_context/trello.py"),
    ),
    (
        "telegram",
        include_str!("../../python/eval_context/telegram.py"),
    ),
];

/// Load the embedded package into sys.modules and initialise it; returns pg_sync.runner.
pub(crate) fn load<'py>(
    py: Python<'py>,
    options: &RuntimeOptions,
) -> PyResult<Bound<'py, PyModule>> {
    add_python_path(py, &options.python_path)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The `.py` files of a folder of sync_worker/python/, by module name.
    fn files(folder: &str) -> BTreeSet<String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("python")
            .join(folder);
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("an entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "py"))
            .map(|p| {
                p.file_stem()
                    .expect("a name")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    #[test]
    fn every_python_file_is_embedded() {
        let embedded: BTreeSet<String> = PACKAGE
            .iter()
            .map(|(name, _)| name.trim_start_matches("pg_sync.").to_string())
            .collect();
        assert_eq!(
            embedded,
            files("pg_sync"),
            "PACKAGE and sync_worker/python/pg_sync/"
        );
        let providers: BTreeSet<String> = BUILTIN_PROVIDERS
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(
            providers,
            files("eval_context"),
            "BUILTIN_PROVIDERS and sync_worker/python/eval_context/"
        );
    }

    #[test]
    fn modules_load_after_the_package_modules_they_import() {
        for (i, (name, source)) in PACKAGE.iter().enumerate() {
            let earlier: Vec<&str> = PACKAGE[..i].iter().map(|(n, _)| *n).collect();
            for line in source.lines() {
                // Top-level imports only: one inside a function runs later.
                let Some(rest) = line.strip_prefix("from pg_sync") else {
                    continue;
                };
                let imported = match rest.strip_prefix(" import ") {
                    Some(names) => {
                        format!("pg_sync.{}", names.split_whitespace().next().unwrap_or(""))
                    }
                    None => format!("pg_sync{}", rest.split_whitespace().next().unwrap_or("")),
                };
                if imported == "pg_sync._native" {
                    continue;
                }
                assert!(
                    earlier.contains(&imported.as_str()),
                    "{name} imports {imported} before it is loaded"
                );
            }
        }
    }
}
