// How jobs are stored: sync.job_queue holds exactly the pending jobs whoever writes
// sync.job, identity keys hold across transactions, outcomes are HOT updates, and the
// jobs finished per minute are counted as they finish.
use pg_sync_tests::python::PyProject;
use pg_sync_tests::*;
use std::time::Duration;

/// The ids in sync.job_queue, and the pending ids of sync.job, both sorted.
async fn queue_and_pending(c: &Client) -> (Vec<i64>, Vec<i64>) {
    let ids = |sql: &'static str| async move {
        c.query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, i64>(0))
            .collect::<Vec<i64>>()
    };
    (
        ids("SELECT id FROM sync.job_queue ORDER BY id").await,
        ids("SELECT id FROM sync.job WHERE state = 'pending' ORDER BY id").await,
    )
}

#[tokio::test]
async fn the_queue_table_follows_every_write_of_sync_job() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (project, task) = create_task(&c, "qs", "main", "def work(n):\n    return n\n").await;
    let insert = format!(
        "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler, args, state)
         SELECT {project}, {task}, 'job', 'work', '{{}}', s
         FROM unnest(ARRAY['pending', 'pending', 'done', 'failed', 'pending']) s"
    );
    exec(&c, &insert).await;
    let (queue, pending) = queue_and_pending(&c).await;
    assert_eq!(queue.len(), 3, "inserted pending rows are queued");
    assert_eq!(queue, pending);

    // Priority and eta follow, so that claims see them.
    exec(
        &c,
        &format!(
            "UPDATE sync.job SET priority = 0, eta = now() + interval '1 hour' WHERE id = {}",
            pending[0]
        ),
    )
    .await;
    let row = c
        .query_one(
            "SELECT priority, eta > now() FROM sync.job_queue WHERE id = $1",
            &[&pending[0]],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i32>(0), row.get::<_, bool>(1)), (0, true));

    // Finished, queued again, deleted: one statement each, several rows at once.
    exec(
        &c,
        "UPDATE sync.job SET state = 'done', finished_at = now() WHERE state = 'pending'",
    )
    .await;
    let (queue, pending) = queue_and_pending(&c).await;
    assert!(queue.is_empty() && pending.is_empty(), "{queue:?}");
    exec(
        &c,
        "UPDATE sync.job SET state = 'pending', finished_at = NULL WHERE state = 'failed'",
    )
    .await;
    let (queue, pending) = queue_and_pending(&c).await;
    assert_eq!((queue.len(), &queue), (1, &pending));
    exec(&c, "DELETE FROM sync.job WHERE state = 'pending'").await;
    assert_eq!(queue_and_pending(&c).await.0, Vec::<i64>::new());
    exec(&c, &insert).await;
    exec(&c, "TRUNCATE sync.job CASCADE").await;
    assert_eq!(
        scalar::<i64>(&c, "SELECT count(*) FROM sync.job_queue").await,
        0,
        "TRUNCATE empties the queue"
    );

    // Only the triggers write it: a sync_user cannot.
    let user = db.connect_as("qstore_reader").await;
    exec(&c, "GRANT sync_user TO qstore_reader").await;
    let err = expect_error(
        &user,
        "INSERT INTO sync.job_queue (id, priority, eta, project_id) VALUES (1, 0, now(), 1)",
        "42501",
    )
    .await;
    assert!(err.contains("job_queue"), "{err}");
    expect_error(&user, "DELETE FROM sync.job_queue", "42501").await;
    expect_error(&user, "DELETE FROM sync.job_finished_count", "42501").await;
}

/// Run `add` (an add_job call) on a connection of its own; its job id when it returns.
async fn add_job_elsewhere(db: &TestDb, add: &str) -> tokio::task::JoinHandle<i64> {
    let c = db.connect().await;
    let add = add.to_string();
    tokio::spawn(async move {
        c.query_one(add.as_str(), &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    })
}

#[tokio::test]
async fn an_identity_key_queued_by_two_transactions_at_once_makes_one_job() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (project, task) = create_task(&c, "ident", "main", "def work(n):\n    return n\n").await;
    let add =
        format!("SELECT sync.add_job({project}, {task}, 'work', identity_key => 'partner-7')");
    // The first transaction queues the key and stays open; the second waits on the
    // unique index, then finds the first's job once it commits.
    let mut first = db.connect().await;
    let tx = first.transaction().await.unwrap();
    let first_id: i64 = tx.query_one(add.as_str(), &[]).await.unwrap().get(0);
    let waiting = add_job_elsewhere(&db, &add).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the second add_job must wait for the first"
    );
    tx.commit().await.unwrap();
    let second_id = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the second add_job returns once the first commits")
        .unwrap();
    assert_eq!(second_id, first_id);
    assert_eq!(
        scalar::<i64>(&c, "SELECT count(*) FROM sync.job").await,
        1,
        "one job for the key"
    );

    // Rolled back, the first leaves the key free: the second makes its own job.
    exec(&c, "DELETE FROM sync.job").await;
    let tx = first.transaction().await.unwrap();
    let gone: i64 = tx.query_one(add.as_str(), &[]).await.unwrap().get(0);
    let waiting = add_job_elsewhere(&db, &add).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.rollback().await.unwrap();
    let own = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the second add_job returns once the first rolls back")
        .unwrap();
    assert_ne!(own, gone);
    assert_eq!(
        scalar::<i64>(
            &c,
            "SELECT count(*) FROM sync.job_queue WHERE identity_key = 'partner-7'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn outcomes_are_hot_updates_and_finished_jobs_are_counted_per_minute() {
    let p = PyProject::new("hot").await;
    let c = &p.client;
    let t = p
        .task(
            "main",
            "def work(n):\n    if n % 100 == 0:\n        raise ValueError(n)\n    return n\n",
        )
        .await;
    let n = 2_000i64;
    p.queue_work(t, n).await;
    let _w = WorkerProcess::start(&p.db.url, &[]);
    wait_for("every job finished", Duration::from_secs(60), || async {
        scalar::<i64>(c, "SELECT count(*) FROM sync.job_queue").await == 0
    })
    .await;
    // Statistics reach the shared counters within a second or so of each commit.
    wait_for(
        "the outcome updates in the statistics",
        Duration::from_secs(20),
        || async {
            scalar::<i64>(
                c,
                "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'sync.job'::regclass",
            )
            .await
                >= n
        },
    )
    .await;
    let row = c
        .query_one(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
             WHERE relid = 'sync.job'::regclass",
            &[],
        )
        .await
        .unwrap();
    let (upd, hot): (i64, i64) = (row.get(0), row.get(1));
    assert!(
        hot * 10 >= upd * 9,
        "outcomes must be HOT updates (no index entry written): {hot} of {upd}"
    );

    let counts = c
        .query(
            "SELECT state, sum(n)::bigint FROM sync.job_finished_count GROUP BY state ORDER BY state",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect::<Vec<_>>();
    assert_eq!(
        counts,
        vec![
            ("done".to_string(), n - n / 100),
            ("failed".to_string(), n / 100)
        ]
    );
    // An edit of a finished job does not count it again.
    exec(
        c,
        "UPDATE sync.job SET description = 'seen' WHERE state = 'done'",
    )
    .await;
    assert_eq!(
        scalar::<i64>(c, "SELECT sum(n)::bigint FROM sync.job_finished_count").await,
        n
    );
}

/// The executors' two functions plan their statements once per session: left to choose,
/// PostgreSQL re-planned them for their array parameters at every call once sync.job
/// held a few thousand rows, and each claim took three times as long.
#[tokio::test]
async fn the_batch_functions_keep_generic_plans() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    for f in ["batch_lock", "batch_finish"] {
        let config: Vec<String> = c
            .query_one(
                "SELECT coalesce(p.proconfig, '{}') FROM pg_proc p
                 WHERE p.pronamespace = 'sync'::regnamespace AND p.proname = $1",
                &[&f],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            config
                .iter()
                .any(|s| s == "plan_cache_mode=force_generic_plan"),
            "sync.{f}: {config:?}"
        );
        assert!(
            config
                .iter()
                .any(|s| s == "search_path=pg_catalog, pg_temp"),
            "sync.{f} keeps its search_path pinned: {config:?}"
        );
    }
}
