// Worker basics with real sync_worker processes: jobs run and complete with start/end
// log lines, failures keep message and traceback, bad task code fails its job only,
// RetryableJobError retries on the backoff schedule (moved with the test clock).
use pg_sync_tests::*;
use std::time::Duration;

const CODE: &str = r#"
def work(n):
    return n * 2

def fail(n):
    x = 1
    raise ValueError("bad value %s" % n)

def retry():
    raise RetryableJobError("not yet")
"#;

async fn insert_jobs(c: &Client, p: i64, t: i64, handler: &str, n: i64) {
    c.execute(
        "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler, args)
         SELECT $1, $2, 'job', $3, jsonb_build_object('args', jsonb_build_array(g))
         FROM generate_series(1, $4::bigint) g",
        &[&p, &t, &handler, &n],
    )
    .await
    .unwrap();
}

async fn count(c: &Client, sql: &str) -> i64 {
    scalar(c, sql).await
}

#[tokio::test]
async fn jobs_run_complete_and_log_start_and_end() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (p, t) = create_task(&c, "basics", "main", CODE).await;
    insert_jobs(&c, p, t, "work", 200).await;
    let _w = WorkerProcess::start(&db.url, &["--executors", "2"]);
    wait_for("200 jobs done", Duration::from_secs(30), || async {
        count(&c, "SELECT count(*) FROM sync.job WHERE state = 'done'").await == 200
    })
    .await;
    // Each ran once, returned its result, and has a start and an end line.
    let bad: i64 = count(
        &c,
        "SELECT count(*) FROM sync.job WHERE attempts <> 1 OR result <> to_jsonb((args->'args'->>0)::int * 2)
            OR finished_at IS NULL OR started_at IS NULL OR worker IS NULL OR error IS NOT NULL",
    )
    .await;
    assert_eq!(bad, 0);
    let lines: i64 = count(
        &c,
        "SELECT count(*) FROM sync.log_view l JOIN sync.job j ON j.id = l.job_id
         WHERE l.project = 'basics' AND l.task = 'main' AND l.job_started_at = j.started_at
           AND ((l.message LIKE 'job started%' AND l.level = 'info')
             OR (l.message = 'job done' AND l.level = 'info' AND l.job_state = 'done'))",
    )
    .await;
    assert_eq!(lines, 400);
    // Derived from the jobs' timestamps: none of them is stored.
    assert_eq!(count(&c, "SELECT count(*) FROM sync.log").await, 0);
}

#[tokio::test]
async fn a_running_jobs_row_says_pending_and_job_state_says_running() {
    // A claim is the row lock of the batch that runs the job: nothing is written until
    // the outcome. sync.job_started (published by the supervisor) says what runs, and
    // sync.job_state / sync.log_view show it running.
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (p, t) = create_task(
        &c,
        "running",
        "main",
        "def nap(n):\n    time.sleep(1.5)\n    return 'rested'\n",
    )
    .await;
    insert_jobs(&c, p, t, "nap", 1).await;
    let _w = WorkerProcess::start(&db.url, &["--executors", "1"]);
    let state = "SELECT sync.job_state(state, id) FROM sync.job";
    wait_for(
        "the job to show running",
        Duration::from_secs(30),
        || async { scalar::<String>(&c, state).await == "running" },
    )
    .await;
    let row = c
        .query_one(
            "SELECT state, worker IS NULL, started_at IS NULL,
                    (SELECT count(*) FROM sync.job_started),
                    (SELECT count(*) FROM sync.log_view
                     WHERE job_state = 'running' AND message LIKE 'job started: nap() of task main (try 1)')
             FROM sync.job",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "pending", "the row itself");
    assert!(
        row.get::<_, bool>(1) && row.get::<_, bool>(2),
        "nothing written yet"
    );
    assert_eq!(row.get::<_, i64>(3), 1);
    assert_eq!(
        row.get::<_, i64>(4),
        1,
        "log_view shows the running try's start"
    );
    wait_for("the job done", Duration::from_secs(30), || async {
        scalar::<String>(&c, state).await == "done"
    })
    .await;
    let row = c
        .query_one(
            "SELECT result, worker IS NOT NULL, started_at < finished_at, attempts FROM sync.job",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, serde_json::Value>(0),
        serde_json::json!("rested")
    );
    assert!(row.get::<_, bool>(1) && row.get::<_, bool>(2));
    assert_eq!(row.get::<_, i32>(3), 1);
}

#[tokio::test]
async fn failed_job_keeps_message_traceback_and_logs() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (p, t) = create_task(&c, "failing", "main", CODE).await;
    insert_jobs(&c, p, t, "fail", 1).await;
    insert_jobs(&c, p, t, "work", 3).await;
    let _w = WorkerProcess::start(&db.url, &["--executors", "1"]);
    wait_for("jobs finished", Duration::from_secs(30), || async {
        count(
            &c,
            "SELECT count(*) FROM sync.job WHERE state IN ('done', 'failed')",
        )
        .await
            == 4
    })
    .await;
    let row = c
        .query_one(
            "SELECT state, error, attempts FROM sync.job WHERE handler = 'fail'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "failed");
    let error: String = row.get(1);
    assert!(error.contains("ValueError: bad value 1"), "{error}");
    // The traceback points at the user's line (line 7 of the task code).
    assert!(error.contains("line 7"), "{error}");
    assert_eq!(row.get::<_, i32>(2), 1, "other errors are not retried");
    // The failure is in the log (written outside the rolled-back transaction).
    let logged: i64 = count(
        &c,
        "SELECT count(*) FROM sync.log_view WHERE level = 'error' AND job_state = 'failed'
           AND message LIKE 'job failed:%ValueError: bad value 1%'",
    )
    .await;
    assert_eq!(logged, 1);
    // A try that did not end done stores its start line, before its failure.
    let lines: Vec<String> = c
        .query(
            "SELECT l.message FROM sync.log l JOIN sync.job j ON j.id = l.job_id
             WHERE j.handler = 'fail' ORDER BY l.created_at, l.id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], "job started: fail() of task main (try 1)");
    assert!(lines[1].starts_with("job failed:"), "{lines:?}");
    // The batch-mates of the failed job completed.
    assert_eq!(
        count(&c, "SELECT count(*) FROM sync.job WHERE state = 'done'").await,
        3
    );
}

#[tokio::test]
async fn syntax_error_and_missing_handler_fail_the_job_not_the_worker() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (p, broken) = create_task(&c, "bad_code", "broken", "def work(n)\n    return n\n").await;
    let good: i64 = c
        .query_one(
            "INSERT INTO sync.task (project_id, name, code) VALUES ($1, 'good', $2) RETURNING id",
            &[&p, &CODE],
        )
        .await
        .unwrap()
        .get(0);
    insert_jobs(&c, p, broken, "work", 1).await;
    c.execute(
        "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler) VALUES ($1, $2, 'cron', 'handle_cron')",
        &[&p, &good],
    )
    .await
    .unwrap();
    let _w = WorkerProcess::start(&db.url, &["--executors", "1"]);
    wait_for("both failed", Duration::from_secs(30), || async {
        count(&c, "SELECT count(*) FROM sync.job WHERE state = 'failed'").await == 2
    })
    .await;
    let syntax: String = scalar(&c, "SELECT error FROM sync.job WHERE handler = 'work'").await;
    assert!(syntax.contains("SyntaxError"), "{syntax}");
    let missing: String = scalar(
        &c,
        "SELECT error FROM sync.job WHERE handler = 'handle_cron'",
    )
    .await;
    assert!(missing.contains("handle_cron"), "{missing}");
    // The worker is still serving.
    insert_jobs(&c, p, good, "work", 5).await;
    wait_for("good jobs done", Duration::from_secs(30), || async {
        count(&c, "SELECT count(*) FROM sync.job WHERE state = 'done'").await == 5
    })
    .await;
}

/// Move the test clock so that `sync.clock()` is `offset` ahead of now().
async fn set_clock(c: &Client, offset: &str) {
    c.execute(
        "INSERT INTO sync.setting (key, value) VALUES ('clock_offset', $1)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&offset],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn retryable_error_retries_after_5_15_60_180_minutes_then_fails() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (p, t) = create_task(&c, "retries", "main", CODE).await;
    c.execute(
        "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler) VALUES ($1, $2, 'job', 'retry')",
        &[&p, &t],
    )
    .await
    .unwrap();
    let _w = WorkerProcess::start(&db.url, &["--executors", "1", "--poll-interval", "100ms"]);
    let mut offset_min = 0i64;
    for (try_no, delay_min) in [(1, 5i64), (2, 15), (3, 60), (4, 180)] {
        wait_for(
            &format!("try {try_no} rescheduled"),
            Duration::from_secs(30),
            || async {
                let row = c
                    .query_one("SELECT state, attempts FROM sync.job", &[])
                    .await
                    .unwrap();
                row.get::<_, String>(0) == "pending" && row.get::<_, i32>(1) == try_no
            },
        )
        .await;
        // The next try is due `delay` after the failed one, by the database clock.
        let wait_secs: f64 = scalar(
            &c,
            "SELECT extract(epoch FROM eta - sync.clock())::float8 FROM sync.job",
        )
        .await;
        let delay = (delay_min * 60) as f64;
        assert!(
            wait_secs <= delay && wait_secs > delay - 30.0,
            "try {try_no}: next try in {wait_secs} s, expected about {delay} s"
        );
        // Not run before it is due.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let attempts: i32 = scalar(&c, "SELECT attempts FROM sync.job").await;
        assert_eq!(attempts, try_no);
        offset_min += delay_min;
        set_clock(&c, &format!("{offset_min} minutes")).await;
    }
    wait_for("given up", Duration::from_secs(30), || async {
        count(&c, "SELECT count(*) FROM sync.job WHERE state = 'failed'").await == 1
    })
    .await;
    let row = c
        .query_one("SELECT attempts, error FROM sync.job", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 5, "5 tries in all (max_retries = 5)");
    let error: String = row.get(1);
    assert!(
        error.contains("gave up after 5 tries") && error.contains("not yet"),
        "{error}"
    );
    let retry_lines: i64 = count(
        &c,
        "SELECT count(*) FROM sync.log WHERE level = 'warning' AND message LIKE 'job will be retried in %'",
    )
    .await;
    assert_eq!(retry_lines, 4);
}

#[tokio::test]
async fn max_retries_is_honoured_and_0_means_retry_forever() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (p, t) = create_task(&c, "retries2", "main", CODE).await;
    c.execute(
        "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler, max_retries)
         VALUES ($1, $2, 'job', 'retry', 2), ($1, $2, 'job', 'retry', 0)",
        &[&p, &t],
    )
    .await
    .unwrap();
    let _w = WorkerProcess::start(&db.url, &["--executors", "1", "--poll-interval", "100ms"]);
    wait_for("first tries", Duration::from_secs(30), || async {
        count(
            &c,
            "SELECT count(*) FROM sync.job WHERE attempts = 1 AND state <> 'running'",
        )
        .await
            == 2
    })
    .await;
    set_clock(&c, "6 minutes").await;
    wait_for("second try of max_retries 2", Duration::from_secs(30), || async {
        count(&c, "SELECT count(*) FROM sync.job WHERE max_retries = 2 AND state = 'failed' AND attempts = 2").await == 1
    })
    .await;
    // max_retries 0 (queue_job's meaning): no limit. Twelve tries, more than the cap
    // on crashed tries, and it is still pending with the 3 h delay.
    for try_no in 2..=12 {
        set_clock(&c, &format!("{} hours", try_no * 4)).await;
        wait_for("the next try of max_retries 0", Duration::from_secs(30), || async {
            count(
                &c,
                &format!("SELECT count(*) FROM sync.job WHERE max_retries = 0 AND state = 'pending' AND attempts = {try_no}"),
            )
            .await
                == 1
        })
        .await;
    }
    let line: String = scalar(
        &c,
        "SELECT message FROM sync.log l JOIN sync.job j ON j.id = l.job_id
         WHERE j.max_retries = 0 AND l.message LIKE 'job will be retried%' ORDER BY l.id DESC LIMIT 1",
    )
    .await;
    assert!(
        line.starts_with("job will be retried in 3 h (try 12 of unlimited)"),
        "{line}"
    );
}

const EFFECTS: &str = r#"
def ok(n):
    db.execute('INSERT INTO effects (n) VALUES ($1)', n)
    log('wrote %s' % n)
    return n

def bad(n):
    db.execute('INSERT INTO effects (n) VALUES ($1)', n)
    log('about to fail')
    raise ValueError('nope')

def warn(n):
    log('careful', LOG_WARNING)
    return n

def err(n):
    db.execute('INSERT INTO effects (n) VALUES ($1)', n)
    log('went wrong', LOG_ERROR)
    return n

def parent(n):
    add_job('ok', priority=0, description='child')(n + 1000)
    return n
"#;

#[tokio::test]
async fn batch_jobs_commit_with_their_completion_and_failures_roll_back_alone() {
    let p = pg_sync_tests::python::PyProject::new("atomic").await;
    p.sql("CREATE TABLE effects (n bigint NOT NULL)").await;
    let c = &p.client;
    let t = p.task("main", EFFECTS).await;
    // One statement: these land in the same batch (one executor).
    c.execute(
        "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler, args)
         SELECT $1, $2, 'job', h, jsonb_build_object('args', jsonb_build_array(n))
         FROM (VALUES ('ok', 1), ('bad', 2), ('ok', 3), ('warn', 4), ('err', 5), ('parent', 6))
              AS v(h, n)",
        &[&p.id, &t],
    )
    .await
    .unwrap();
    let _w = WorkerProcess::start(&p.db.url, &["--executors", "1"]);
    wait_for(
        "all jobs and the child finished",
        Duration::from_secs(30),
        || async {
            count(
                c,
                "SELECT count(*) FROM sync.job WHERE state IN ('done', 'failed')",
            )
            .await
                == 7
        },
    )
    .await;
    let states: Vec<(String, String, bool)> = c
        .query(
            "SELECT handler, state, warning FROM sync.job WHERE parent_id IS NULL ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expect = [
        ("ok", "done", false),
        ("bad", "failed", false),
        ("ok", "done", false),
        ("warn", "done", true),
        ("err", "failed", false),
        ("parent", "done", false),
    ];
    for (got, want) in states.iter().zip(expect) {
        assert_eq!((got.0.as_str(), got.1.as_str(), got.2), want);
    }
    // Writes of the done jobs (and the child) committed; the failed ones' rolled back.
    let effects: Vec<i64> = c
        .query("SELECT n FROM effects ORDER BY n", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(effects, vec![1, 3, 1006]);
    // The child of add_job points to its parent and ran at its priority.
    let child = c
        .query_one(
            "SELECT c.priority, c.description, c.trigger_kind, c.state FROM sync.job c
             JOIN sync.job p ON p.id = c.parent_id WHERE p.handler = 'parent'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(child.get::<_, i32>(0), 0);
    assert_eq!(child.get::<_, String>(1), "child");
    assert_eq!(child.get::<_, String>(2), "job");
    assert_eq!(child.get::<_, String>(3), "done");
    // Logs: the failed job's line survived its rollback; warnings and errors show.
    let lines: Vec<(String, String, String)> = c
        .query(
            "SELECT j.handler, l.level, l.message FROM sync.log_view l JOIN sync.job j ON j.id = l.job_id
             WHERE l.message NOT LIKE 'job started%' ORDER BY l.created_at, l.id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let has = |h: &str, level: &str, prefix: &str| {
        lines
            .iter()
            .any(|(hh, l, m)| hh == h && l == level && m.starts_with(prefix))
    };
    assert!(has("ok", "info", "wrote 1"), "{lines:?}");
    assert!(has("bad", "info", "about to fail"), "{lines:?}");
    assert!(has("bad", "error", "job failed:"), "{lines:?}");
    assert!(has("warn", "warning", "careful"), "{lines:?}");
    assert!(
        has("warn", "warning", "job done with warnings"),
        "{lines:?}"
    );
    assert!(has("err", "error", "went wrong"), "{lines:?}");
    assert!(has("err", "error", "job failed:"), "{lines:?}");
    // Filter by status through the view.
    let failed_lines = count(
        c,
        "SELECT count(*) FROM sync.log_view WHERE project = 'atomic' AND job_state = 'failed' AND level = 'error'",
    )
    .await;
    assert!(failed_lines >= 3, "{failed_lines}");
}

#[tokio::test]
async fn deleting_a_project_task_or_job_cleans_up_its_log_lines() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (p, t) = create_task(&c, "cleanup", "main", CODE).await;
    let (p2, t2) = create_task(&c, "cleanup2", "main", CODE).await;
    insert_jobs(&c, p, t, "work", 3).await;
    insert_jobs(&c, p2, t2, "work", 3).await;
    let _w = WorkerProcess::start(&db.url, &["--executors", "1"]);
    wait_for("jobs done", Duration::from_secs(30), || async {
        count(&c, "SELECT count(*) FROM sync.job WHERE state = 'done'").await == 6
    })
    .await;
    // Each done job: a start and an end line, derived from the job, not stored.
    assert_eq!(count(&c, "SELECT count(*) FROM sync.log_view").await, 12);
    assert_eq!(count(&c, "SELECT count(*) FROM sync.log").await, 0);
    let first = "(SELECT min(id) FROM sync.job)";
    c.batch_execute(&format!(
        "INSERT INTO sync.log (project_id, job_id, message) SELECT project_id, id, 'note' FROM sync.job WHERE id = {first}"
    ))
    .await
    .unwrap();
    // A job: its lines go, stored and derived.
    c.batch_execute(&format!("DELETE FROM sync.job WHERE id = {first}"))
        .await
        .unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM sync.log").await, 0);
    assert_eq!(count(&c, "SELECT count(*) FROM sync.log_view").await, 10);
    // A task: its lines stay, without the task (jobs go with the task).
    c.execute(
        "INSERT INTO sync.log (project_id, task_id, message) VALUES ($1, $2, 'kept')",
        &[&p2, &t2],
    )
    .await
    .unwrap();
    c.execute("DELETE FROM sync.task WHERE id = $1", &[&t2])
        .await
        .unwrap();
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM sync.log WHERE message = 'kept' AND task_id IS NULL"
        )
        .await,
        1
    );
    // A project: all its lines go.
    c.execute("DELETE FROM sync.project WHERE id = $1", &[&p])
        .await
        .unwrap();
    assert_eq!(
        count(
            &c,
            &format!("SELECT count(*) FROM sync.log WHERE project_id = {p}")
        )
        .await,
        0
    );
    assert_eq!(count(&c, "SELECT count(*) FROM sync.log").await, 1);
    assert_eq!(count(&c, "SELECT count(*) FROM sync.log_view").await, 1);
    // A developer may delete a project without rights on sync.log.
    let dev = db.connect_as("worker_test_dev2").await;
    c.batch_execute("GRANT sync_developer TO worker_test_dev2")
        .await
        .unwrap();
    dev.execute("DELETE FROM sync.project WHERE id = $1", &[&p2])
        .await
        .unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM sync.log").await, 0);
}
