// The embedded Python runtime end to end (through `sync_worker run-job`): handlers,
// results, failures with tracebacks, retries, rollback of a failed job's writes.
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
    let report = p.run(job);
    assert_eq!(report["result"], json!(30), "{report}");
}

#[tokio::test]
async fn syntax_error_fails_with_line() {
    let p = PyProject::new("runtime").await;
    let err = p
        .error("def handle_cron():\n    x = (1,\n\nreturn\n", "handle_cron")
        .await;
    assert!(err.contains("SyntaxError"), "{err}");
    assert!(err.contains("<task t"), "{err}");
}

#[tokio::test]
async fn missing_handler_is_explained() {
    let p = PyProject::new("runtime").await;
    let err = p.error("def other():\n    pass\n", "handle_cron").await;
    assert!(err.contains("does not define handle_cron()"), "{err}");
}

#[tokio::test]
async fn traceback_shows_user_lines() {
    let p = PyProject::new("runtime").await;
    let code = "def helper(x):\n    return 1 / x\n\ndef handle_cron():\n    return helper(0)\n";
    let err = p.error(code, "handle_cron").await;
    assert!(err.contains("ZeroDivisionError"), "{err}");
    assert!(err.contains(", line 5, in handle_cron"), "{err}");
    assert!(err.contains(", line 2, in helper"), "{err}");
    assert!(err.contains("return 1 / x"), "{err}");
    assert!(
        !err.contains("pg_sync/runner"),
        "internal frames leak: {err}"
    );
}

#[tokio::test]
async fn retryable_error_reschedules_even_when_wrapped() {
    let p = PyProject::new("runtime").await;
    for code in [
        "def handle_cron():\n    raise RetryableJobError('later')\n",
        "def inner():\n    raise RetryableJobError('later')\n\ndef handle_cron():\n    try:\n        inner()\n    except Exception as e:\n        raise ValueError('wrapped') from e\n",
        "def handle_cron():\n    try:\n        raise RetryableJobError('later')\n    except RetryableJobError:\n        raise UserError('while handling')\n",
    ] {
        let report = p.run_code(code, "handle_cron", Value::Null).await;
        assert_eq!(report["outcome"], "retry", "{code}: {report}");
        assert_eq!(report["state"], "pending", "{report}");
    }
    // Dropped on purpose: a plain failure.
    let report = p
        .run_code(
            "def handle_cron():\n    try:\n        raise RetryableJobError('x')\n    except RetryableJobError:\n        raise UserError('no') from None\n",
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
    let report = p.run(job);
    assert_eq!(report["state"], "failed", "{report}");
    assert!(report["error"].as_str().unwrap_or("").contains("boom"));
    let n: i64 = p.scalar("SELECT count(*) FROM note").await;
    assert_eq!(n, 0, "the failed job's insert must be rolled back");
    let logs = p.logs(job).await;
    assert!(logs.iter().any(|l| l.3 == "about to fail"), "{logs:?}");
    // And a job that succeeds keeps its write.
    let task = p
        .task("ok", "def handle_cron():\n    return db.execute('INSERT INTO note (body) VALUES ($1)', 'y')\n")
        .await;
    let job = p.job(task, "handle_cron", Value::Null).await;
    assert_eq!(p.run(job)["result"], json!(1));
    let n: i64 = p.scalar("SELECT count(*) FROM note").await;
    assert_eq!(n, 1);
}
