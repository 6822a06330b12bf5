// python_path with a real virtual environment: a package installed in the venv's
// site-packages (and one reached through a `.pth` file, as editable installs are) is
// importable by providers and core_code with the setting, in the worker and in run-job,
// and fails with a clear ImportError without it.
use pg_sync_tests::python::{worker_bin, PyProject};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A provider that imports the venv's package.
const PROVIDER: &str = "import pgsync_venv_probe\n\n\
def eval_context(secrets, context):\n    return {'probe': pgsync_venv_probe.greet}\n";

/// core_code that imports the package reached through the `.pth` file, and reports where
/// the venv's directory is on sys.path.
const CORE: &str = r#"
import os, sys
import pgsync_pth_probe

def pth_value():
    return pgsync_pth_probe.VALUE

def path_order(site):
    stdlib = os.path.dirname(os.__file__)
    system = [i for i, p in enumerate(sys.path) if p.endswith(("site-packages", "dist-packages")) and p != site]
    return [sys.path.index(stdlib), sys.path.index(site), min(system) if system else None]
"#;

const TASK: &str = "def handle_cron():\n    return [probe('venv'), pth_value()]\n";

/// A virtual environment (with the system's packages, as the worker's own
/// python3-dateutil and python3-tz are) holding two packages of ours; returns its
/// site-packages.
fn venv(root: &Path) -> String {
    let dir = root.join("venv");
    let made = Command::new("python3")
        .args(["-m", "venv", "--system-site-packages", "--without-pip"])
        .arg(&dir)
        .output()
        .expect("run python3 -m venv");
    assert!(made.status.success(), "python3 -m venv: {made:?}");
    let out = Command::new(dir.join("bin/python"))
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .expect("ask the venv's python");
    let site = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(site.ends_with("site-packages"), "{out:?}");
    let package = Path::new(&site).join("pgsync_venv_probe");
    std::fs::create_dir_all(&package).expect("package dir");
    std::fs::write(
        package.join("__init__.py"),
        "def greet(name):\n    return 'hello ' + name\n",
    )
    .expect("write the package");
    // An editable install: the source lives elsewhere, a .pth file points at it.
    let src = root.join("src");
    std::fs::create_dir_all(&src).expect("src dir");
    std::fs::write(src.join("pgsync_pth_probe.py"), "VALUE = 42\n").expect("write module");
    std::fs::write(
        Path::new(&site).join("pgsync_probe.pth"),
        format!("{}\n", src.display()),
    )
    .expect("write the .pth file");
    site
}

/// A project using the provider and the core code, with the venv and the provider
/// directory made under a fresh temporary directory.
async fn project(name: &str) -> (PyProject, PathBuf, String, PathBuf) {
    let p = PyProject::new(name).await;
    let root = std::env::temp_dir().join(format!("pg_sync_python_path_{}", p.db.name));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    let site = venv(&root);
    let providers = root.join("providers");
    std::fs::create_dir_all(&providers).expect("provider dir");
    std::fs::write(providers.join("venvprov.py"), PROVIDER).expect("write provider");
    p.sql(&format!(
        "UPDATE sync.project SET eval_context = '{{venvprov}}' WHERE id = {}",
        p.id
    ))
    .await;
    p.set("core_code", CORE).await;
    (p, root, site, providers)
}

#[tokio::test]
async fn venv_packages_are_imported_by_providers_and_core_code_with_python_path() {
    let (mut p, root, site, providers) = project("venv").await;
    p.worker_env("SYNC_WORKER_PYTHON_PATH", &site);
    p.worker_env(
        "SYNC_WORKER_EVAL_CONTEXT_PATH",
        &providers.to_string_lossy(),
    );
    assert_eq!(
        p.result(TASK, "handle_cron").await,
        json!(["hello venv", 42])
    );

    // After the standard library, before the system's packages, as in the venv itself.
    let code = format!("def handle_cron():\n    return path_order({site:?})\n");
    let order = p.result(&code, "handle_cron").await;
    let at = |i: usize| order[i].as_i64();
    assert!(at(0) < at(1), "the standard library comes first: {order}");
    if let Some(system) = at(2) {
        assert!(
            at(1) < Some(system),
            "the venv wins over the system: {order}"
        );
    }

    // run-job takes the same settings (flags here).
    let task = p.task("again", TASK).await;
    let job = p.job(task, "handle_cron", Value::Null).await;
    let out = Command::new(worker_bin())
        .args(["--database-url", &p.db.url, "--python-path", &site])
        .arg("--eval-context-path")
        .arg(&providers)
        .args(["run-job", "--job-id", &job.to_string()])
        .env_remove("SYNC_WORKER_PYTHON_PATH")
        .output()
        .expect("run-job");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("a report");
    assert_eq!(report["result"], json!(["hello venv", 42]), "{report}");
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn without_python_path_the_import_fails_with_a_clear_import_error() {
    let (mut p, root, _site, providers) = project("novenv").await;
    // The variable's old name still works, with a deprecation warning at start.
    p.worker_env("SYNC_EVAL_CONTEXT_PATH", &providers.to_string_lossy());
    let err = p.error(TASK, "handle_cron").await;
    assert!(
        err.contains("ModuleNotFoundError: No module named 'pgsync_venv_probe'"),
        "{err}"
    );
    let log = p.worker().await.output();
    assert!(
        log.contains(
            "SYNC_EVAL_CONTEXT_PATH is deprecated and will be removed in the next release: \
             use SYNC_WORKER_EVAL_CONTEXT_PATH instead"
        ),
        "{log}"
    );

    // Without the provider, core_code's own import fails the same way.
    p.sql(&format!(
        "UPDATE sync.project SET eval_context = '{{}}' WHERE id = {}",
        p.id
    ))
    .await;
    let err = p.error(TASK, "handle_cron").await;
    assert!(
        err.contains("ModuleNotFoundError: No module named 'pgsync_pth_probe'"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}
