// SIGHUP with the real binary: the worker reads its config file again, applies log_level
// and the time limits (executors restart for them), names what needs a restart, refuses a
// bad file without stopping, and still stops on SIGTERM as before.
use pg_sync_tests::python::PyProject;
use pg_sync_tests::{wait_for, WorkerProcess};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A config file in the test's temporary directory, written again by `set`.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(name: &str, text: &str) -> ConfigFile {
        let base = std::env::var("PG_SYNC_TEST_TMP").unwrap_or_else(|_| "/tmp".into());
        let file = ConfigFile(PathBuf::from(base).join(format!("{}-{name}", std::process::id())));
        file.set(text);
        file
    }

    fn set(&self, text: &str) {
        std::fs::write(&self.0, text).expect("write the config file");
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 path")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Start a worker on `--config FILE` and wait until it is registered.
async fn start(p: &PyProject, file: &ConfigFile) -> WorkerProcess {
    let mut w = WorkerProcess::start(&p.db.url, &["--config", file.path()]);
    wait_until(&mut w, "connected to the database as worker").await;
    w
}

/// Wait (30 s at most) until the worker's log contains `text`; panics if it exits.
async fn wait_until(w: &mut WorkerProcess, text: &str) {
    let t0 = Instant::now();
    loop {
        if w.output().contains(text) {
            return;
        }
        if let Ok(Some(status)) = w.child.try_wait() {
            panic!("the worker exited ({status}) before saying `{text}`");
        }
        if t0.elapsed() > Duration::from_secs(30) {
            panic!("the worker never said `{text}`");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_running(w: &mut WorkerProcess) {
    if let Ok(Some(status)) = w.child.try_wait() {
        panic!("the worker exited after SIGHUP ({status})");
    }
}

#[tokio::test]
async fn sighup_reloads_log_level_and_time_limits_and_names_what_needs_a_restart() {
    let p = PyProject::new("sighup").await;
    let task = p
        .task(
            "main",
            "def spin():\n    while True:\n        pass\n\ndef ok():\n    return 1\n",
        )
        .await;
    let file = ConfigFile::new(
        "reload.toml",
        "log_level = 'info'\nexecutors = 1\npoll_interval = '200ms'\n\
         soft_time_limit = '60s'\nhard_time_limit = '90s'\n",
    );
    let mut w = start(&p, &file).await;
    // Nothing is logged at debug level yet, not even by an executor running a job.
    let job = p.job(task, "ok", json!({})).await;
    assert_eq!(p.finished(job).await["state"], "done");
    assert!(!w.output().contains("DEBUG"), "{}", w.output());

    file.set(
        "log_level = 'info,sync_worker=debug'\nexecutors = 2\npoll_interval = '200ms'\n\
         soft_time_limit = '1s'\nhard_time_limit = '30s'\n",
    );
    let before = w.output().len();
    w.signal(libc::SIGHUP);
    wait_until(&mut w, "settings read again from").await;
    assert_running(&mut w);
    let log = w.output()[before..].to_string();
    for line in [
        "reloaded: log_level info -> info,sync_worker=debug",
        "reloaded: soft_time_limit 60s -> 1s",
        "reloaded: hard_time_limit 90s -> 30s",
        "changed but applied only when the worker restarts: executors",
        "executor(s) for the new settings, each once it is idle",
    ] {
        assert!(log.contains(line), "missing `{line}`:\n{log}");
    }
    // The supervisor's own filter changed: its debug line after the reload shows.
    assert!(log.contains("DEBUG"), "{log}");
    assert!(!log.contains("poll_interval"), "{log}");

    // The new executor has the new soft limit: a job that spins stops after 1 s.
    let t0 = Instant::now();
    let spin = p.job(task, "spin", json!({})).await;
    let r = p.finished(spin).await;
    assert_eq!(r["state"], "failed", "{r}");
    let error = r["error"].as_str().unwrap_or_default();
    assert!(error.contains("soft time limit"), "{error}");
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    assert!(!w.output().contains("hard time limit"), "{}", w.output());
    // ... and the new log level: it logs its jobs at debug level.
    let job = p.job(task, "ok", json!({})).await;
    assert_eq!(p.finished(job).await["state"], "done");
    wait_for(
        "an executor's debug line",
        Duration::from_secs(10),
        || async {
            w.output()[before..]
                .lines()
                .any(|l| l.contains("DEBUG") && l.contains("sync_worker::executor"))
        },
    )
    .await;
    assert_running(&mut w);
}

#[tokio::test]
async fn a_bad_file_on_sighup_is_reported_and_the_worker_goes_on() {
    let p = PyProject::new("sighup_bad").await;
    let task = p.task("main", "def ok():\n    return 1\n").await;
    let file = ConfigFile::new(
        "bad.toml",
        "executors = 1\npoll_interval = '200ms'\ngrace_period = '10s'\n",
    );
    let mut w = start(&p, &file).await;

    // A value that is no duration: the error names the setting.
    file.set("executors = 1\npoll_interval = '200ms'\nsoft_time_limit = 'soon'\n");
    w.signal(libc::SIGHUP);
    wait_until(&mut w, "settings not reloaded").await;
    let log = w.output();
    assert!(log.contains("soft_time_limit"), "{log}");
    assert!(log.contains("`soon` is not a duration"), "{log}");
    // Two settings that disagree: refused whole, nothing applied.
    file.set(
        "executors = 1\npoll_interval = '200ms'\nsoft_time_limit = '20s'\n\
         hard_time_limit = '10s'\ngrace_period = '5s'\n",
    );
    let before = w.output().len();
    w.signal(libc::SIGHUP);
    wait_for("the second refusal", Duration::from_secs(10), || async {
        w.output()[before..].contains("settings not reloaded")
    })
    .await;
    let log = w.output()[before..].to_string();
    assert!(
        log.contains("hard_time_limit") && log.contains("must be longer than soft_time_limit"),
        "{log}"
    );
    assert!(!log.contains("reloaded:"), "{log}");
    assert_running(&mut w);

    // The worker goes on with the settings it had: it runs jobs.
    let job = p.job(task, "ok", json!({})).await;
    assert_eq!(p.finished(job).await["state"], "done");

    // A fixed file is taken by the next SIGHUP.
    file.set("executors = 1\npoll_interval = '200ms'\ngrace_period = '5s'\n");
    let before = w.output().len();
    w.signal(libc::SIGHUP);
    wait_for("the reload", Duration::from_secs(10), || async {
        w.output()[before..].contains("reloaded: grace_period 10s -> 5s")
    })
    .await;
    assert_running(&mut w);

    // SIGTERM still stops the worker, gracefully.
    w.signal(libc::SIGTERM);
    let status = w
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the worker stops on SIGTERM");
    assert!(status.success(), "{status}");
}
