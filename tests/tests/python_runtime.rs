// The embedded Python runtime end to end, through real worker processes (and the
// `run-job` debug command): handlers, results, failures with tracebacks, retries,
// rollback of a failed job's writes, soft time limits, layers prepared once per version.
use pg_sync_tests::python::PyProject;
use serde_json::{json, Value};

#[tokio::test]
async fn cron_handler_result_is_recorded() {
    let p = PyProject::new("runtime").await;
    let result = p
        .result(
            "def handle_cron():\n    return {'answer': 6 * 7}\n",
            "handle_cron",
        )
        .await;
    assert_eq!(result, json!({"answer": 42}));
}

#[tokio::test]
async fn run_job_command_runs_and_records_one_job() {
    let p = PyProject::new("runtime").await;
    let task = p
        .task(
            "t",
            "def handle_button():\n    log('pressed')\n    return [trigger_name, user]\n",
        )
        .await;
    let job = p
        .job_with(
            task,
            "handle_button",
            Value::Null,
            "trigger_name, user_name",
            "'go', 'alice'",
        )
        .await;
    let report = p.run_now(job);
    assert_eq!(report["state"], "done", "{report}");
    assert_eq!(report["result"], json!(["go", "alice"]));
    let state: String = p
        .scalar(&format!("SELECT state FROM sync.job WHERE id = {job}"))
        .await;
    assert_eq!(state, "done");
    let logs = p.logs(job).await;
    assert!(logs.iter().any(|l| l.3 == "pressed"), "{logs:?}");
}

#[tokio::test]
async fn add_job_functions_get_args_and_kwargs() {
    let p = PyProject::new("runtime").await;
    let task = p
        .task(
            "t",
            "def work(a, b, scale=1):\n    return (a + b) * scale\n",
        )
        .await;
    let job = p
        .job(
            task,
            "work",
            json!({"args": [1, 2], "kwargs": {"scale": 10}}),
        )
        .await;
    let report = p.run(job).await;
    assert_eq!(report["result"], json!(30), "{report}");
}

#[tokio::test]
async fn syntax_error_and_missing_handler_fail_clearly() {
    let p = PyProject::new("runtime").await;
    let err = p
        .error("def handle_cron():\n    x = (1,\n\nreturn\n", "handle_cron")
        .await;
    assert!(err.contains("SyntaxError"), "{err}");
    assert!(err.contains("<task t"), "{err}");
    assert!(err.contains("line 2"), "{err}");
    let err = p.error("def other():\n    pass\n", "handle_cron").await;
    assert!(err.contains("does not define handle_cron()"), "{err}");
    // The worker keeps serving.
    let ok = p
        .result("def handle_cron():\n    return 1\n", "handle_cron")
        .await;
    assert_eq!(ok, json!(1));
}

#[tokio::test]
async fn traceback_shows_user_lines() {
    let p = PyProject::new("runtime").await;
    p.set(
        "common_code",
        "def divide(x):\n    y = 0\n    return x / y\n",
    )
    .await;
    let code = "def helper(x):\n    return divide(x)\n\ndef handle_cron():\n    return helper(1)\n";
    let err = p.error(code, "handle_cron").await;
    assert!(err.contains("ZeroDivisionError"), "{err}");
    assert!(err.contains(", line 5, in handle_cron"), "{err}");
    assert!(err.contains(", line 2, in helper"), "{err}");
    assert!(
        err.contains("\"<common_code>\", line 3, in divide"),
        "{err}"
    );
    assert!(err.contains("return x / y"), "{err}");
    assert!(
        !err.contains("pg_sync/runner"),
        "internal frames leak: {err}"
    );
}

#[tokio::test]
async fn retryable_error_reschedules_even_when_wrapped() {
    let p = PyProject::new("runtime").await;
    p.set(
        "common_code",
        "def fetch():\n    raise RetryableJobError('server busy')\n",
    )
    .await;
    for code in [
        "def handle_cron():\n    raise RetryableJobError('later')\n",
        "def handle_cron():\n    try:\n        fetch()\n    except Exception as e:\n        raise ValueError('wrapped') from e\n",
        "def handle_cron():\n    try:\n        fetch()\n    except RetryableJobError:\n        raise UserError('while handling')\n",
    ] {
        let report = p.run_code(code, "handle_cron", Value::Null).await;
        assert_eq!(report["outcome"], "retry", "{code}: {report}");
    }
    // Dropped on purpose: a plain failure.
    let report = p
        .run_code(
            "def handle_cron():\n    try:\n        fetch()\n    except RetryableJobError:\n        raise UserError('no') from None\n",
            "handle_cron",
            Value::Null,
        )
        .await;
    assert_eq!(report["outcome"], "failed", "{report}");
}

#[tokio::test]
async fn failed_job_writes_roll_back_and_logs_survive() {
    let p = PyProject::new("runtime").await;
    p.sql("CREATE TABLE note (id serial PRIMARY KEY, body text)")
        .await;
    let task = p
        .task(
            "t",
            "def handle_cron():\n    db.execute('INSERT INTO note (body) VALUES ($1)', 'x')\n    log('about to fail')\n    raise UserError('boom')\n",
        )
        .await;
    let job = p.job(task, "handle_cron", Value::Null).await;
    let report = p.run(job).await;
    assert_eq!(report["state"], "failed", "{report}");
    assert!(report["error"].as_str().unwrap_or("").contains("boom"));
    let n: i64 = p.scalar("SELECT count(*) FROM note").await;
    assert_eq!(n, 0, "the failed job's insert must be rolled back");
    let logs = p.logs(job).await;
    assert!(logs.iter().any(|l| l.3 == "about to fail"), "{logs:?}");
    // A job that succeeds keeps its write, also right after the failed one.
    let task = p
        .task(
            "ok",
            "def handle_cron():\n    return db.execute('INSERT INTO note (body) VALUES ($1)', 'y')\n",
        )
        .await;
    let job = p.job(task, "handle_cron", Value::Null).await;
    assert_eq!(p.run(job).await["result"], json!(1));
    let n: i64 = p.scalar("SELECT count(*) FROM note").await;
    assert_eq!(n, 1);
}

#[tokio::test]
async fn soft_time_limit_raises_inside_python() {
    let p = PyProject::new("runtime").await;
    let task = p
        .task(
            "slow",
            "def handle_cron():\n    try:\n        while True:\n            pass\n    except Exception:\n        return 'swallowed'\n",
        )
        .await;
    p.sql(&format!(
        "UPDATE sync.task SET time_limit = '300 milliseconds' WHERE id = {task}"
    ))
    .await;
    let job = p.job(task, "handle_cron", Value::Null).await;
    let report = p.run(job).await;
    assert_eq!(report["state"], "failed", "{report}");
    let err = report["error"].as_str().unwrap_or_default();
    assert!(err.contains("TimeLimitExceeded"), "{err}");
    assert!(err.contains("\"<task slow>\", line "), "{err}");
    // A finally block still runs, and the next job is fine.
    let ok = p
        .result("def handle_cron():\n    return 'next'\n", "handle_cron")
        .await;
    assert_eq!(ok, json!("next"));
}

#[tokio::test]
async fn each_job_gets_its_own_soft_time_limit_in_one_executor() {
    // The executor leaves its interval timer running between jobs: a job with a shorter
    // limit than the one before must still be stopped on time, and a timer set for an
    // earlier, shorter job must not stop a later one that is within its own limit.
    let p = PyProject::new("runtime").await;
    let limited = |name: &'static str, limit: &'static str, code: &'static str| {
        let p = &p;
        async move {
            let t = p.task(name, code).await;
            p.sql(&format!(
                "UPDATE sync.task SET time_limit = '{limit}' WHERE id = {t}"
            ))
            .await;
            t
        }
    };
    let long = limited(
        "long",
        "60 seconds",
        "def handle_cron():\n    return 'long'\n",
    )
    .await;
    let spin = limited(
        "spin",
        "700 milliseconds",
        "def handle_cron():\n    while True:\n        pass\n",
    )
    .await;
    let quick = limited(
        "quick",
        "500 milliseconds",
        "def handle_cron():\n    return 'quick'\n",
    )
    .await;
    let sleepy = limited(
        "sleepy",
        "3 seconds",
        "def handle_cron():\n    time.sleep(1.2)\n    return 'slept'\n",
    )
    .await;
    let mut jobs = Vec::new();
    for t in [long, spin, quick, sleepy] {
        jobs.push(p.job(t, "handle_cron", Value::Null).await);
    }
    let _w = pg_sync_tests::WorkerProcess::start(&p.db.url, &["--executors", "1"]);
    let started = std::time::Instant::now();
    let reports = [
        p.finished(jobs[0]).await,
        p.finished(jobs[1]).await,
        p.finished(jobs[2]).await,
        p.finished(jobs[3]).await,
    ];
    assert_eq!(reports[0]["result"], json!("long"), "{}", reports[0]);
    assert_eq!(reports[1]["state"], "failed", "{}", reports[1]);
    let err = reports[1]["error"].as_str().unwrap_or_default();
    assert!(err.contains("TimeLimitExceeded"), "{err}");
    assert_eq!(reports[2]["result"], json!("quick"), "{}", reports[2]);
    assert_eq!(reports[3]["result"], json!("slept"), "{}", reports[3]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the spinning job was not stopped near its 0.7 s limit"
    );
}

#[tokio::test]
async fn layers_are_prepared_once_per_project_version() {
    let p = PyProject::new("runtime").await;
    // A process-wide counter bumped each time core_code runs.
    p.set(
        "core_code",
        "import sys\nsys.pg_sync_test_preparations = getattr(sys, 'pg_sync_test_preparations', 0) + 1\nPREPARATIONS = sys.pg_sync_test_preparations\n",
    )
    .await;
    let task = p
        .task(
            "count",
            "SEEN = []\ndef handle_cron():\n    SEEN.append(1)\n    return [PREPARATIONS, len(SEEN)]\n",
        )
        .await;
    for _ in 0..3 {
        let job = p.job(task, "handle_cron", Value::Null).await;
        // Prepared once; task globals are fresh for every job.
        assert_eq!(p.run(job).await["result"], json!([1, 1]));
    }
    // A change of the project (new version) prepares again.
    p.sql(&format!(
        "INSERT INTO sync.project_param (project_id, key, value) VALUES ({}, 'x', '1')",
        p.id
    ))
    .await;
    let job = p.job(task, "handle_cron", Value::Null).await;
    assert_eq!(p.run(job).await["result"], json!([2, 1]));
}
