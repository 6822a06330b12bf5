// DB triggers end to end: row events and timed triggers become handle_db(records) jobs
// that a real sync_worker runs, with records built from the job args format.
use pg_sync_tests::*;
use std::time::Duration;

const CODE: &str = r#"
def handle_db(records):
    for r in records:
        db.execute("INSERT INTO seen (trigger, id, state) VALUES ($1, $2, $3)",
                   trigger_name, r.id, r.state)
"#;

async fn seen(c: &Client) -> Vec<(String, i64, String)> {
    c.query(
        "SELECT trigger, id, state FROM seen ORDER BY trigger, id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[tokio::test]
async fn worker_runs_handle_db_for_updates_deletes_and_timed_rows() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (_p, t) = create_task(&c, "shop", "orders", CODE).await;
    c.batch_execute(
        "CREATE TABLE seen (trigger text, id bigint, state text);
         CREATE TABLE orders (id bigint PRIMARY KEY, state text, closed_at timestamptz);
         INSERT INTO orders SELECT g, 'draft', NULL FROM generate_series(1, 5) g;
         DO $$ BEGIN
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dbt_runner') THEN
                 CREATE ROLE dbt_runner NOLOGIN;
             END IF;
         END $$;
         GRANT SELECT ON orders TO dbt_runner;
         GRANT INSERT ON seen TO dbt_runner;
         UPDATE sync.project SET run_as = 'dbt_runner';",
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO sync.db_trigger (task_id, name, table_name, event, apply_on, watched_columns)
         VALUES ($1, 'done', 'orders', 'update', 'NEW.state = ''done''', '{state}'),
                ($1, 'gone', 'orders', 'delete', NULL, NULL)",
        &[&t],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO sync.db_trigger (task_id, name, table_name, event, date_column, time_offset)
         VALUES ($1, 'later', 'orders', 'timed', 'closed_at', '1 hour')",
        &[&t],
    )
    .await
    .unwrap();
    let _w = WorkerProcess::start(&db.url, &["--executors", "1"]);

    c.batch_execute(
        "UPDATE orders SET state = 'done' WHERE id IN (1, 2);
         UPDATE orders SET state = 'deleted' WHERE id = 5;
         DELETE FROM orders WHERE id = 5;
         UPDATE orders SET closed_at = now() - interval '2 hours' WHERE id = 3;
         UPDATE orders SET closed_at = now() WHERE id = 4;",
    )
    .await
    .unwrap();
    let expect = vec![
        ("done".to_string(), 1, "done".to_string()),
        ("done".into(), 2, "done".into()),
        ("gone".into(), 5, "deleted".into()),
        ("later".into(), 3, "draft".into()),
    ];
    wait_for(
        "handle_db of update, delete and timed jobs",
        Duration::from_secs(30),
        || async { seen(&c).await == expect },
    )
    .await;
    let failed: i64 = scalar(&c, "SELECT count(*) FROM sync.job WHERE state <> 'done'").await;
    assert_eq!(failed, 0);
    // Row 4 is due an hour after its date: move the clock, the worker picks it up.
    c.batch_execute("INSERT INTO sync.setting VALUES ('clock_offset', '61 minutes')")
        .await
        .unwrap();
    wait_for(
        "the timed job of row 4",
        Duration::from_secs(30),
        || async { seen(&c).await.iter().any(|s| s.0 == "later" && s.1 == 4) },
    )
    .await;
}
