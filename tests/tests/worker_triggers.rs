// Cron triggers (database clock, calls_left, never enqueued twice), buttons (top
// priority, picked up within milliseconds), sync_retry_job / sync_cancel_job, and
// sync.add_job with identity keys.
use pg_sync_tests::*;
use std::time::Duration;

const CODE: &str = "def handle_cron():\n    return 'tick'\n\ndef handle_button():\n    return 'pressed'\n\ndef fail():\n    raise ValueError('boom')\n\ndef work(n):\n    return n\n";

async fn count(c: &Client, sql: &str) -> i64 {
    scalar(c, sql).await
}

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
async fn cron_runs_calls_left_times_and_two_workers_never_enqueue_a_run_twice() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (_, t) = create_task(&c, "crons", "main", CODE).await;
    c.execute(
        "INSERT INTO sync.cron_trigger (task_id, name, \"interval\", next_run_at, calls_left)
         VALUES ($1, 'hourly', '1 hour', sync.clock() - interval '1 second', 3)",
        &[&t],
    )
    .await
    .unwrap();
    let _a = WorkerProcess::start(&db.url, &["--executors", "1", "--poll-interval", "100ms"]);
    let _b = WorkerProcess::start(&db.url, &["--executors", "1", "--poll-interval", "100ms"]);
    for (run, offset) in [(1i64, "0"), (2, "1 hour"), (3, "2 hours")] {
        set_clock(&c, offset).await;
        wait_for(
            &format!("cron run {run}"),
            Duration::from_secs(20),
            || async {
                count(
                    &c,
                    "SELECT count(*) FROM sync.job WHERE trigger_kind = 'cron' AND state = 'done'",
                )
                .await
                    == run
            },
        )
        .await;
        // Both workers schedule every second: give them a few chances to double it.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(
            count(
                &c,
                "SELECT count(*) FROM sync.job WHERE trigger_kind = 'cron'"
            )
            .await,
            run
        );
    }
    // calls_left is spent: later hours enqueue nothing.
    set_clock(&c, "5 hours").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(count(&c, "SELECT count(*) FROM sync.job").await, 3);
    let row = c
        .query_one(
            "SELECT calls_left, next_run_at > sync.clock() FROM sync.cron_trigger",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 0);
    let jobs = c
        .query(
            "SELECT handler, trigger_name, result FROM sync.job ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    for j in jobs {
        assert_eq!(j.get::<_, String>(0), "handle_cron");
        assert_eq!(j.get::<_, String>(1), "hourly");
        assert_eq!(j.get::<_, serde_json::Value>(2), serde_json::json!("tick"));
    }
}

#[tokio::test]
async fn enqueue_due_crons_is_safe_from_many_connections_at_once() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (_, t) = create_task(&c, "cron_race", "main", CODE).await;
    c.execute(
        "INSERT INTO sync.cron_trigger (task_id, name, \"interval\", next_run_at)
         SELECT $1, 'c' || g, '10 minutes', now() - interval '35 minutes' FROM generate_series(1, 20) g",
        &[&t],
    )
    .await
    .unwrap();
    let base: chrono::DateTime<chrono::Utc> =
        scalar(&c, "SELECT min(next_run_at) FROM sync.cron_trigger").await;
    let mut handles = Vec::new();
    for _ in 0..8 {
        let client = db.connect().await;
        handles.push(tokio::spawn(async move {
            let mut n = 0;
            for _ in 0..5 {
                n += client
                    .query_one("SELECT sync.enqueue_due_crons()", &[])
                    .await
                    .unwrap()
                    .get::<_, i32>(0);
            }
            n
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    // Missed runs are coalesced: one job per trigger, and the next run is the first
    // whole interval after now.
    assert_eq!(total, 20);
    assert_eq!(count(&c, "SELECT count(*) FROM sync.job").await, 20);
    let ok: bool = c
        .query_one(
            "SELECT bool_and(next_run_at > now() AND next_run_at <= now() + interval '10 minutes'
                             AND extract(epoch FROM next_run_at - $1)::numeric % 600 = 0)
             FROM sync.cron_trigger",
            &[&base],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ok);
    // An inactive project schedules nothing.
    c.batch_execute(
        "UPDATE sync.project SET active = false;
         UPDATE sync.cron_trigger SET next_run_at = now() - interval '1 minute';",
    )
    .await
    .unwrap();
    let n: i32 = scalar(&c, "SELECT sync.enqueue_due_crons()").await;
    assert_eq!(n, 0);
}

#[tokio::test]
async fn run_button_enqueues_at_top_priority_and_starts_within_milliseconds() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (p, t) = create_task(&c, "buttons", "main", CODE).await;
    c.execute(
        "INSERT INTO sync.button_trigger (task_id, name) VALUES ($1, 'go')",
        &[&t],
    )
    .await
    .unwrap();
    let _w = WorkerProcess::start(&db.url, &["--executors", "1", "--poll-interval", "10s"]);
    wait_for(
        "the worker to register",
        Duration::from_secs(20),
        || async { count(&c, "SELECT count(*) FROM sync.worker").await == 1 },
    )
    .await;
    // Let its executor come up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let id: i64 = scalar(&c, "SELECT sync_run_button('buttons', 'go')").await;
        wait_for("the button job", Duration::from_secs(5), || async {
            c.query_one("SELECT state = 'done' FROM sync.job WHERE id = $1", &[&id])
                .await
                .unwrap()
                .get::<_, bool>(0)
        })
        .await;
        let row = c
            .query_one(
                "SELECT priority, handler, trigger_kind, user_name::text, result,
                        extract(epoch FROM started_at - created_at)::float8 * 1000
                 FROM sync.job WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), 0);
        assert_eq!(row.get::<_, String>(1), "handle_button");
        assert_eq!(row.get::<_, String>(2), "button");
        assert_eq!(row.get::<_, String>(3), "postgres");
        assert_eq!(
            row.get::<_, serde_json::Value>(4),
            serde_json::json!("pressed")
        );
        latencies.push(row.get::<_, f64>(5));
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    // Woken by NOTIFY, not the 10 s poll.
    assert!(
        latencies[2] < 100.0,
        "button pickup latencies (ms): {latencies:?}"
    );

    let msg = expect_error(&c, "SELECT sync_run_button('buttons', 'nope')", "P0002").await;
    assert!(msg.contains("no button trigger named \"nope\""), "{msg}");
    c.execute("UPDATE sync.button_trigger SET active = false", &[])
        .await
        .unwrap();
    expect_error(&c, "SELECT sync_run_button('buttons', 'go')", "55000").await;
    c.execute(
        "UPDATE sync.project SET active = false WHERE id = $1",
        &[&p],
    )
    .await
    .unwrap();
    let msg = expect_error(&c, "SELECT sync_run_button('buttons', 'go')", "55000").await;
    assert!(msg.contains("inactive"), "{msg}");
}

#[tokio::test]
async fn retry_and_cancel_jobs_by_hand() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (p, t) = create_task(&c, "manual", "main", CODE).await;
    let failed_cron: i64 = c
        .query_one(
            "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler, state, attempts, error)
             VALUES ($1, $2, 'cron', 'handle_cron', 'failed', 5, 'old error') RETURNING id",
            &[&p, &t],
        )
        .await
        .unwrap()
        .get(0);
    let failed_button: i64 = c
        .query_one(
            "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler, state)
             VALUES ($1, $2, 'button', 'handle_button', 'failed') RETURNING id",
            &[&p, &t],
        )
        .await
        .unwrap()
        .get(0);
    let pending: i64 = c
        .query_one(
            "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler, eta)
             VALUES ($1, $2, 'job', 'work', now() + interval '1 day') RETURNING id",
            &[&p, &t],
        )
        .await
        .unwrap()
        .get(0);

    // Cancel: pending only.
    c.execute("SELECT sync_cancel_job($1)", &[&pending])
        .await
        .unwrap();
    let row = c
        .query_one(
            "SELECT state, error FROM sync.job WHERE id = $1",
            &[&pending],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "cancelled");
    assert_eq!(row.get::<_, String>(1), "cancelled by postgres");
    let msg = expect_error(&c, &format!("SELECT sync_cancel_job({pending})"), "55000").await;
    assert!(msg.contains("is cancelled"), "{msg}");
    expect_error(
        &c,
        &format!("SELECT sync_cancel_job({failed_cron})"),
        "55000",
    )
    .await;
    expect_error(&c, "SELECT sync_cancel_job(-1)", "P0002").await;

    // Retry: failed cron/db/add_job jobs only; attempts start again.
    expect_error(&c, &format!("SELECT sync_retry_job({pending})"), "55000").await;
    let msg = expect_error(
        &c,
        &format!("SELECT sync_retry_job({failed_button})"),
        "55000",
    )
    .await;
    assert!(msg.contains("button"), "{msg}");
    expect_error(&c, "SELECT sync_retry_job(-1)", "P0002").await;
    c.execute("SELECT sync_retry_job($1)", &[&failed_cron])
        .await
        .unwrap();
    let row = c
        .query_one(
            "SELECT state, attempts, error FROM sync.job WHERE id = $1",
            &[&failed_cron],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "pending");
    assert_eq!(row.get::<_, i32>(1), 0);
    assert_eq!(row.get::<_, Option<String>>(2), None);
    // A worker runs the re-queued job.
    let _w = WorkerProcess::start(&db.url, &["--executors", "1"]);
    wait_for(
        "the retried job to run",
        Duration::from_secs(20),
        || async {
            c.query_one(
                "SELECT state = 'done' FROM sync.job WHERE id = $1",
                &[&failed_cron],
            )
            .await
            .unwrap()
            .get::<_, bool>(0)
        },
    )
    .await;

    // Developers press buttons and cancel jobs (recorded as themselves); readers may not.
    c.execute(
        "INSERT INTO sync.button_trigger (task_id, name) VALUES ($1, 'b')",
        &[&t],
    )
    .await
    .unwrap();
    let dev = db.connect_as("worker_test_dev").await;
    let reader = db.connect_as("worker_test_reader").await;
    c.batch_execute(
        "GRANT sync_developer TO worker_test_dev; GRANT sync_user TO worker_test_reader;",
    )
    .await
    .unwrap();
    let id: i64 = scalar(&dev, "SELECT sync_run_button('manual', 'b')").await;
    let who: String = c
        .query_one("SELECT user_name::text FROM sync.job WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "worker_test_dev");
    expect_error(&reader, "SELECT sync_run_button('manual', 'b')", "42501").await;
    expect_error(&reader, &format!("SELECT sync_cancel_job({id})"), "42501").await;
    expect_error(&reader, &format!("SELECT sync_retry_job({id})"), "42501").await;
}

#[tokio::test]
async fn add_job_identity_key_creates_no_second_job() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (p, t) = create_task(&c, "identity", "main", CODE).await;
    let add = "SELECT sync.add_job($1, $2, 'work', '{\"args\": [1]}', identity_key => 'k1')";
    let first: i64 = c.query_one(add, &[&p, &t]).await.unwrap().get(0);
    let second: i64 = c.query_one(add, &[&p, &t]).await.unwrap().get(0);
    assert_eq!(first, second, "same key while pending: the existing job");
    assert_eq!(count(&c, "SELECT count(*) FROM sync.job").await, 1);
    // Other keys and no key make new jobs.
    let other: i64 = c
        .query_one(
            "SELECT sync.add_job($1, $2, 'work', '{\"args\": [2]}', identity_key => 'k2', priority => 3, description => 'd')",
            &[&p, &t],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(other, first);
    let row = c
        .query_one(
            "SELECT priority, description, trigger_kind, max_retries FROM sync.job WHERE id = $1",
            &[&other],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
    assert_eq!(row.get::<_, String>(1), "d");
    assert_eq!(row.get::<_, String>(2), "job");
    assert_eq!(row.get::<_, i32>(3), 5);
    // Once the first is done, the key is free again.
    let _w = WorkerProcess::start(&db.url, &["--executors", "1"]);
    wait_for("jobs done", Duration::from_secs(20), || async {
        count(&c, "SELECT count(*) FROM sync.job WHERE state = 'done'").await == 2
    })
    .await;
    let third: i64 = c.query_one(add, &[&p, &t]).await.unwrap().get(0);
    assert_ne!(third, first);
}

#[tokio::test]
async fn inactive_task_jobs_are_cancelled_with_a_reason() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (p, t) = create_task(&c, "inactive", "main", CODE).await;
    c.execute("UPDATE sync.task SET active = false WHERE id = $1", &[&t])
        .await
        .unwrap();
    c.execute(
        "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler, args) VALUES ($1, $2, 'job', 'work', '{\"args\": [1]}')",
        &[&p, &t],
    )
    .await
    .unwrap();
    let _w = WorkerProcess::start(&db.url, &["--executors", "1"]);
    wait_for("the job cancelled", Duration::from_secs(20), || async {
        count(
            &c,
            "SELECT count(*) FROM sync.job WHERE state = 'cancelled'",
        )
        .await
            == 1
    })
    .await;
    let error: String = scalar(&c, "SELECT error FROM sync.job").await;
    assert_eq!(error, "task main is inactive; the job was not run");
}

#[tokio::test]
async fn workers_call_enqueue_timed_triggers_when_it_exists() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    // Without it (or before it is installed) only crons are scheduled.
    let n: i32 = scalar(&c, "SELECT sync.enqueue_scheduled()").await;
    assert_eq!(n, 0);
    // Stand-in for the db triggers' timed events: counts its calls.
    c.batch_execute(
        "CREATE TABLE timed_calls (at timestamptz NOT NULL DEFAULT clock_timestamp());
         CREATE OR REPLACE FUNCTION sync.enqueue_timed_triggers() RETURNS integer
         LANGUAGE sql AS $$ INSERT INTO timed_calls DEFAULT VALUES RETURNING 2 $$;",
    )
    .await
    .unwrap();
    let n: i32 = scalar(&c, "SELECT sync.enqueue_scheduled()").await;
    assert_eq!(n, 2);
    let _w = WorkerProcess::start(&db.url, &["--executors", "1"]);
    wait_for(
        "the worker to call it twice more",
        Duration::from_secs(10),
        || async { count(&c, "SELECT count(*) FROM timed_calls").await >= 3 },
    )
    .await;
}

#[tokio::test]
async fn soft_time_limit_raises_in_python_and_task_time_limit_overrides_it() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (p, t) = create_task(
        &c,
        "soft",
        "main",
        "def spin():\n    while True:\n        pass\n",
    )
    .await;
    c.execute(
        "UPDATE sync.task SET time_limit = '1 second' WHERE id = $1",
        &[&t],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler) VALUES ($1, $2, 'job', 'spin')",
        &[&p, &t],
    )
    .await
    .unwrap();
    // Worker limits are long: the task's 1 s applies (hard: 1 s + (60 - 50) s).
    let w = WorkerProcess::start(
        &db.url,
        &[
            "--executors",
            "1",
            "--soft-time-limit",
            "50s",
            "--hard-time-limit",
            "60s",
        ],
    );
    wait_for(
        "the job stopped at its soft limit",
        Duration::from_secs(20),
        || async { count(&c, "SELECT count(*) FROM sync.job WHERE state = 'failed'").await == 1 },
    )
    .await;
    let row = c
        .query_one(
            "SELECT error, extract(epoch FROM finished_at - started_at)::float8 FROM sync.job",
            &[],
        )
        .await
        .unwrap();
    let error: String = row.get(0);
    assert!(error.contains("soft time limit"), "{error}");
    let took: f64 = row.get(1);
    assert!((1.0..8.0).contains(&took), "stopped after {took} s");
    // The executor was not killed for it.
    assert!(!w.output().contains("hard time limit"), "{}", w.output());
}
