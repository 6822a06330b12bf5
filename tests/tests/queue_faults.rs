// The queue under a crash loop and over many rounds: workers killed together again and
// again cost a try only to the jobs they were running and lose or double nothing, and
// retention keeps the queue's tables from growing round after round.
use pg_sync_tests::python::PyProject;
use pg_sync_tests::*;
use std::time::Duration;

#[tokio::test]
async fn a_crash_looping_pair_of_workers_runs_every_job_exactly_once() {
    // As a Restart=on-failure loop would: two workers SIGKILLed together every 1.5 s,
    // five times, then a pair that lives. Tries used to be counted at claim time, and
    // each fresh worker claimed the same ~1,500 jobs again, until they failed unrun.
    let p = PyProject::new("crashloop").await;
    p.sql("CREATE TABLE effects (n bigint NOT NULL)").await;
    let c = &p.client;
    let t = p
        .task(
            "main",
            "def work(n):\n    time.sleep(0.002)\n    db.execute('INSERT INTO effects (n) VALUES ($1)', n)\n    return n\n",
        )
        .await;
    let n = 20_000i64;
    p.queue_work(t, n).await;
    let args = ["--executors", "2", "--rescue-interval", "200ms"];
    for round in 0..5 {
        let pair: Vec<_> = (0..2)
            .map(|_| WorkerProcess::start(&p.db.url, &args))
            .collect();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for w in &pair {
            w.signal(libc::SIGKILL);
        }
        for mut w in pair {
            w.wait_exit(Duration::from_secs(5))
                .await
                .unwrap_or_else(|| panic!("round {round}: a worker outlived SIGKILL"));
        }
    }
    let done_before: i64 = scalar(c, "SELECT count(*) FROM sync.job WHERE state = 'done'").await;
    assert!(
        done_before < n,
        "the loop must hit jobs mid-queue ({done_before} done)"
    );
    let _pair: Vec<_> = (0..2)
        .map(|_| WorkerProcess::start(&p.db.url, &args))
        .collect();
    wait_for("every job done", Duration::from_secs(180), || async {
        scalar::<i64>(c, "SELECT count(*) FROM sync.job WHERE state <> 'done'").await == 0
    })
    .await;
    let row = c
        .query_one("SELECT count(*), count(DISTINCT n) FROM effects", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), n, "one effect per job");
    assert_eq!(row.get::<_, i64>(1), n, "no job's effect twice");
    // A kill costs a try only to the jobs being run (2 workers x 2 executors).
    let retried: i64 = scalar(c, "SELECT count(*) FROM sync.job WHERE attempts > 1").await;
    assert!(
        retried <= 5 * 4,
        "{retried} jobs were charged a try they did not run"
    );
}

#[tokio::test]
async fn ten_rounds_of_100000_jobs_leave_the_tables_no_bigger_than_one() {
    // Retention 0: every finished job and its log lines are removed (in batches, by
    // the worker's rescuer); vacuum (autovacuum in real life) makes the space reusable.
    // Without retention the tables would hold 10x the rows of round 1.
    let p = PyProject::new("retention").await;
    let c = &p.client;
    let t = p.task("main", "def work(n):\n    return n\n").await;
    c.batch_execute(
        "INSERT INTO sync.setting (key, value) VALUES ('keep_done_jobs', '0 seconds'),
                                                      ('keep_failed_jobs', '0 seconds')",
    )
    .await
    .unwrap();
    let _w = WorkerProcess::start(
        &p.db.url,
        &["--executors", "2", "--rescue-interval", "200ms"],
    );
    // Vacuum may or may not cut a round's emptied pages off the end of a table (it skips
    // that when a worker's statement holds a lock): without it, every size is the
    // space a round really uses, reused round after round.
    for t in ["sync.job", "sync.job_queue", "sync.log"] {
        exec(c, &format!("ALTER TABLE {t} SET (vacuum_truncate = false)")).await;
    }
    let size_sql = "SELECT sum(pg_total_relation_size(c))::bigint FROM unnest(ARRAY[
        'sync.job', 'sync.job_queue', 'sync.job_finished_count', 'sync.job_interrupted',
        'sync.log', 'sync.job_started', 'sync.job_cancel']::regclass[]) c";
    let mut first = 0i64;
    for round in 1..=10 {
        p.queue_work(t, 100_000).await;
        wait_for(
            "the round's jobs run and removed",
            Duration::from_secs(120),
            || async { scalar::<i64>(c, "SELECT count(*) FROM sync.job").await == 0 },
        )
        .await;
        assert_eq!(scalar::<i64>(c, "SELECT count(*) FROM sync.log").await, 0);
        // Twice: btree pages emptied by one vacuum are recycled by the next (as
        // autovacuum's repeated passes do).
        for _ in 0..2 {
            c.batch_execute("VACUUM sync.job, sync.job_queue, sync.log")
                .await
                .unwrap();
        }
        let size: i64 = scalar(c, size_sql).await;
        eprintln!("round {round}: {size} bytes");
        // Rounds 1 to 3 set the working size: btree pages emptied in a round become
        // reusable only after the vacuums that follow it, and the size settles in the
        // third round. How much room a round needs depends on when autovacuum ran during
        // it (on a busy machine 3x more than on a quiet one), so the bound is twice the
        // working size: without retention the tables would hold `round` times round 1's
        // rows, 10x at the end.
        if round <= 3 {
            first = first.max(size);
        } else {
            assert!(
                size <= 2 * first,
                "round {round}: {size} bytes, working size after rounds 1-3: {first}"
            );
        }
    }
}

#[tokio::test]
async fn the_retry_rule_and_retention_settings_as_docs_jobs_md_shows_them() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let row = c
        .query_one(
            "SELECT sync.may_try_again(4, 5, false), sync.may_try_again(5, 5, false),
                    sync.may_try_again(50, 0, false), sync.may_try_again(10, 0, true),
                    sync.may_try_again(1, 1, false), sync.delay_text(sync.retry_delay(4))",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert!(!row.get::<_, bool>(1));
    assert!(row.get::<_, bool>(2), "max_retries 0 has no limit");
    assert!(
        !row.get::<_, bool>(3),
        "a job that keeps crashing is given up"
    );
    assert!(!row.get::<_, bool>(4), "max_retries 1: no retry");
    assert_eq!(row.get::<_, String>(5), "3 h");
    c.batch_execute(
        "INSERT INTO sync.setting (key, value) VALUES ('keep_done_jobs', '2 days')
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
    )
    .await
    .unwrap();
    let row = c
        .query_one(
            "SELECT sync.keep_jobs('done')::text, sync.keep_jobs('failed')::text",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "2 days");
    assert_eq!(row.get::<_, String>(1), "30 days");
    let e = c
        .batch_execute("INSERT INTO sync.setting (key, value) VALUES ('keep_failed_jobs', 'soon')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).0, "22023", "{e:?}");
}
