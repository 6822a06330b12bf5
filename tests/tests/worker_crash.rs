// Worker robustness with real processes: kill -9 mid-job, a job that kills its executor,
// a runaway job at the hard time limit, PostgreSQL restarted mid-run, the database
// unreachable at start, and SIGTERM with its grace period.
use pg_sync_tests::python::PyProject;
use pg_sync_tests::*;
use std::time::Duration;

/// A project whose run_as role may write the `effects` table (one row per committed run).
async fn project_with_effects(name: &str) -> PyProject {
    let p = PyProject::new(name).await;
    p.sql("CREATE TABLE effects (n bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())")
        .await;
    p
}

async fn count(c: &Client, sql: &str) -> i64 {
    scalar(c, sql).await
}

async fn insert_jobs(c: &Client, p: i64, t: i64, handler: &str, n: i64, priority: i32) {
    c.execute(
        "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler, args, priority)
         SELECT $1, $2, 'job', $3, jsonb_build_object('args', jsonb_build_array(g)), $5
         FROM generate_series(1, $4::bigint) g",
        &[&p, &t, &handler, &n, &priority],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn kill9_of_a_worker_mid_job_runs_the_job_again() {
    let p = project_with_effects("kill9").await;
    let c = &p.client;
    let code = "def slow(n):\n    time.sleep(2)\n    db.execute('INSERT INTO effects (n) VALUES ($1)', n)\n    return n\n";
    let t = p.task("main", code).await;
    insert_jobs(c, p.id, t, "slow", 1, 10).await;
    let mut a = WorkerProcess::start(&p.db.url, &["--executors", "1"]);
    wait_for("the job to start", Duration::from_secs(30), || async {
        count(
            c,
            "SELECT count(*) FROM sync.job WHERE sync.job_state(state, id) = 'running'",
        )
        .await
            == 1
    })
    .await;
    // Well inside the handler's sleep.
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.signal(libc::SIGKILL);
    a.wait_exit(Duration::from_secs(5))
        .await
        .expect("worker A gone");
    let _b = WorkerProcess::start(
        &p.db.url,
        &["--executors", "1", "--rescue-interval", "200ms"],
    );
    wait_for(
        "the job to run again and finish",
        Duration::from_secs(30),
        || async { count(c, "SELECT count(*) FROM sync.job WHERE state = 'done'").await == 1 },
    )
    .await;
    // Tried twice, its effect committed once: the first run died with its worker (its
    // executor too, or it would have committed with attempts = 1).
    assert_eq!(count(c, "SELECT attempts::bigint FROM sync.job").await, 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(c, "SELECT count(*) FROM effects").await, 1);
    let interrupted = count(
        c,
        "SELECT count(*) FROM sync.log WHERE level = 'warning' AND message LIKE 'job interrupted: worker % stopped while running it%'",
    )
    .await;
    assert_eq!(interrupted, 1);
}

#[tokio::test]
async fn a_job_killing_its_executor_does_not_block_the_others() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    // Task code cannot reach os._exit; a trusted evaluation-context provider can.
    let base = std::env::var("PG_SYNC_TEST_TMP").unwrap_or_else(|_| "/tmp".into());
    let dir = std::path::PathBuf::from(base).join(format!("providers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("crasher.py"),
        "import os\n\ndef eval_context(secrets, context):\n    return {'crash': lambda: os._exit(3)}\n",
    )
    .unwrap();
    let (p, t) = create_task(
        &c,
        "poison",
        "main",
        "def poison():\n    crash()\n\ndef work(n):\n    return n\n",
    )
    .await;
    c.execute(
        "UPDATE sync.project SET eval_context = '{crasher}' WHERE id = $1",
        &[&p],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler, priority, max_retries)
         VALUES ($1, $2, 'job', 'poison', 0, 3)",
        &[&p, &t],
    )
    .await
    .unwrap();
    insert_jobs(&c, p, t, "work", 30, 10).await;
    let dir_text = dir.display().to_string();
    let _w = WorkerProcess::start_env(
        &db.url,
        &["--executors", "2"],
        &[("SYNC_WORKER_EVAL_CONTEXT_PATH", dir_text.as_str())],
    );
    wait_for(
        "the poison job to fail and the rest to finish",
        Duration::from_secs(60),
        || async {
            count(
                &c,
                "SELECT count(*) FROM sync.job WHERE state IN ('done', 'failed')",
            )
            .await
                == 31
        },
    )
    .await;
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM sync.job WHERE state = 'done' AND handler = 'work'"
        )
        .await,
        30
    );
    let row = c
        .query_one(
            "SELECT state, attempts, error FROM sync.job WHERE handler = 'poison'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "failed");
    // max_retries tries; one more when the other executor claimed the job in the instant
    // between the crash (its locks go with its connection) and the supervisor recording it.
    let tries = row.get::<_, i32>(1);
    assert!(
        (3..=4).contains(&tries),
        "tried {tries} times, max_retries 3"
    );
    let error: String = row.get(2);
    assert!(
        error.contains("executor process running it died"),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_runaway_job_is_stopped_at_the_hard_limit_and_the_worker_keeps_serving() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    // Swallows every exception (a bare except catches the soft limit's too).
    let code = "def runaway():\n    while True:\n        try:\n            while True:\n                pass\n        except:\n            pass\n\ndef work(n):\n    return n\n";
    let (p, t) = create_task(&c, "runaway", "main", code).await;
    // One statement, one batch: the runaway first (priority 0), then its batch-mates.
    c.execute(
        "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler, args, priority)
         SELECT $1, $2, 'job', CASE WHEN g = 0 THEN 'runaway' ELSE 'work' END,
                CASE WHEN g = 0 THEN '{}'::jsonb ELSE jsonb_build_object('args', jsonb_build_array(g)) END,
                CASE WHEN g = 0 THEN 0 ELSE 10 END
         FROM generate_series(0, 5) g",
        &[&p, &t],
    )
    .await
    .unwrap();
    let w = WorkerProcess::start(
        &db.url,
        &[
            "--executors",
            "1",
            "--soft-time-limit",
            "1s",
            "--hard-time-limit",
            "2s",
        ],
    );
    wait_for(
        "the runaway job to be stopped",
        Duration::from_secs(30),
        || async {
            count(
                &c,
                "SELECT count(*) FROM sync.job WHERE handler = 'runaway' AND state = 'failed'",
            )
            .await
                == 1
        },
    )
    .await;
    let error: String = scalar(&c, "SELECT error FROM sync.job WHERE handler = 'runaway'").await;
    assert!(error.contains("hard time limit exceeded"), "{error}");
    let took: f64 = scalar(
        &c,
        "SELECT extract(epoch FROM finished_at - started_at)::float8 FROM sync.job WHERE handler = 'runaway'",
    )
    .await;
    // started_at is when the supervisor saw the try running (published every 100 ms).
    assert!((1.8..10.0).contains(&took), "stopped after {took} s");
    // Its batch-mates ran anyway, and new jobs still run.
    insert_jobs(&c, p, t, "work", 3, 10).await;
    wait_for("the other jobs", Duration::from_secs(30), || async {
        count(
            &c,
            "SELECT count(*) FROM sync.job WHERE handler = 'work' AND state = 'done'",
        )
        .await
            == 8
    })
    .await;
    assert!(w.output().contains("hard time limit"), "{}", w.output());
    let logged = count(
        &c,
        "SELECT count(*) FROM sync.log WHERE level = 'error' AND message LIKE 'job failed: hard time limit exceeded%'",
    )
    .await;
    assert_eq!(logged, 1);
}

#[tokio::test]
async fn postgres_restarted_mid_run_every_job_completes() {
    let cluster = Cluster::start();
    let db = TestDb::on(&cluster.url("postgres")).await;
    let c = db.connect().await;
    let code = "def work(n):\n    time.sleep(0.002)\n    return n\n";
    let (p, t) = create_task(&c, "restart", "main", code).await;
    insert_jobs(&c, p, t, "work", 3000, 10).await;
    drop(c);
    let w = WorkerProcess::start(&db.url, &["--executors", "2", "--rescue-interval", "500ms"]);
    {
        let c = db.connect().await;
        wait_for("some jobs done", Duration::from_secs(60), || async {
            count(&c, "SELECT count(*) FROM sync.job WHERE state = 'done'").await >= 300
        })
        .await;
    }
    cluster.restart();
    let c = db.connect().await;
    wait_for(
        "every job done after the restart",
        Duration::from_secs(120),
        || async { count(&c, "SELECT count(*) FROM sync.job WHERE state = 'done'").await == 3000 },
    )
    .await;
    assert!(
        w.output().contains("lost the database connection"),
        "{}",
        w.output()
    );
}

#[tokio::test]
async fn database_unreachable_at_start_then_jobs_run() {
    let cluster = Cluster::start();
    let url = cluster.url("postgres");
    {
        let c = connect(&url).await;
        c.batch_execute("CREATE EXTENSION pg_sync").await.unwrap();
        let (p, t) = create_task(&c, "late", "main", "def work(n):\n    return n\n").await;
        insert_jobs(&c, p, t, "work", 10, 10).await;
    }
    cluster.stop("fast");
    let w = WorkerProcess::start(&url, &["--executors", "1", "--wait-for-database", "5m"]);
    wait_for("a clear message", Duration::from_secs(20), || async {
        w.output().contains("cannot connect to the database yet")
    })
    .await;
    assert!(w.output().contains("trying again in"), "{}", w.output());
    cluster.restart();
    let c = connect(&url).await;
    wait_for(
        "jobs done once the database is up",
        Duration::from_secs(60),
        || async { count(&c, "SELECT count(*) FROM sync.job WHERE state = 'done'").await == 10 },
    )
    .await;
}

#[tokio::test]
async fn sigterm_lets_the_running_job_finish_then_exits_0() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let code = "def slow(n):\n    time.sleep(1.5)\n    return n\n";
    let (p, t) = create_task(&c, "sigterm", "main", code).await;
    insert_jobs(&c, p, t, "slow", 1, 10).await;
    let mut w = WorkerProcess::start(&db.url, &["--executors", "1", "--grace-period", "20s"]);
    wait_for("the job to start", Duration::from_secs(30), || async {
        count(
            &c,
            "SELECT count(*) FROM sync.job WHERE sync.job_state(state, id) = 'running'",
        )
        .await
            == 1
    })
    .await;
    // Claimed is not started yet: let the executor get into the handler's sleep (a
    // claimed job that has not started when the signal comes is given back).
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.signal(libc::SIGTERM);
    let status = w
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("worker exits");
    assert!(status.success(), "{status}\n{}", w.output());
    assert_eq!(
        count(&c, "SELECT count(*) FROM sync.job WHERE state = 'done'").await,
        1,
        "the running job finished"
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM sync.worker WHERE stopped_at IS NOT NULL"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn sigterm_after_the_grace_period_gives_jobs_back() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let code = "def slow(n):\n    time.sleep(60)\n    return n\n";
    let (p, t) = create_task(&c, "grace", "main", code).await;
    insert_jobs(&c, p, t, "slow", 3, 10).await;
    let mut w = WorkerProcess::start(&db.url, &["--executors", "1", "--grace-period", "1s"]);
    wait_for("a job to start", Duration::from_secs(30), || async {
        count(
            &c,
            "SELECT count(*) FROM sync.job WHERE sync.job_state(state, id) = 'running'",
        )
        .await
            >= 1
    })
    .await;
    let t0 = std::time::Instant::now();
    w.signal(libc::SIGTERM);
    let status = w
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("worker exits");
    assert!(status.success(), "{status}\n{}", w.output());
    assert!(t0.elapsed() < Duration::from_secs(10));
    // Nothing lost, nothing counted as a try: all pending again for another worker.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM sync.job WHERE state = 'pending' AND attempts = 0"
        )
        .await,
        3,
        "{}",
        w.output()
    );
}
