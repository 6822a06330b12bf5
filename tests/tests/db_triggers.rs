// DB triggers: sync.db_trigger rows install native capture triggers; row events become
// one job per (db trigger, statement), atomically with the write that caused them.
use pg_sync_tests::*;
use serde_json::{json, Value};

/// An active project 1 with an active task 1.
async fn setup(db: &TestDb) -> Client {
    let c = db.connect().await;
    c.batch_execute(
        "INSERT INTO sync.project (id, name, active) VALUES (1, 'p', true);
         INSERT INTO sync.task (id, project_id, name) VALUES (1, 1, 't');
         CREATE TABLE orders (id bigint PRIMARY KEY, state text NOT NULL DEFAULT 'draft',
                              amount int NOT NULL DEFAULT 0, note text);
         INSERT INTO orders (id) SELECT g FROM generate_series(1, 20) g;",
    )
    .await
    .expect("setup");
    c
}

/// Args of the jobs of a db trigger, oldest first.
async fn jobs(c: &Client, trigger: &str) -> Vec<Value> {
    c.query(
        "SELECT args FROM sync.job WHERE trigger_name = $1 ORDER BY id",
        &[&trigger],
    )
    .await
    .expect("read jobs")
    .iter()
    .map(|r| r.get::<_, Value>(0))
    .collect()
}

fn keys(job: &Value) -> Vec<Value> {
    job["keys"].as_array().cloned().unwrap_or_default()
}

async fn installed(c: &Client, table: &str) -> Vec<String> {
    c.query(
        "SELECT tgname::text FROM pg_trigger WHERE tgrelid = $1::text::regclass AND tgname LIKE 'pg\\_sync\\_%' ORDER BY 1",
        &[&table],
    )
    .await
    .expect("read pg_trigger")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test]
async fn update_trigger_filters_natively_and_enqueues_one_job_per_statement() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "INSERT INTO sync.db_trigger (task_id, name, table_name, event, apply_on, watched_columns)
         VALUES (1, 'done_orders', 'orders', 'update', 'NEW.state = ''done''', '{state}')",
    )
    .await
    .unwrap();
    assert_eq!(
        installed(&c, "orders").await,
        ["pg_sync_dbt_1_as", "pg_sync_dbt_1_bs", "pg_sync_dbt_1_upd"]
    );
    // The filter is the trigger's WHEN clause, not code run per row.
    let when: String = scalar(
        &c,
        "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 'pg_sync_dbt_1_upd'",
    )
    .await;
    assert!(
        when.contains("AFTER UPDATE OF state")
            && when.contains("old.state IS DISTINCT FROM new.state")
            && when.contains("new.state = 'done'"),
        "{when}"
    );

    c.batch_execute("UPDATE orders SET state = 'done' WHERE id <= 3")
        .await
        .unwrap();
    // An unwatched column, a no-op change and rows failing apply_on: nothing.
    c.batch_execute("UPDATE orders SET amount = 7 WHERE id <= 10")
        .await
        .unwrap();
    c.batch_execute("UPDATE orders SET state = 'done' WHERE id <= 3")
        .await
        .unwrap();
    c.batch_execute("UPDATE orders SET state = 'sent' WHERE id BETWEEN 11 AND 12")
        .await
        .unwrap();
    c.batch_execute("UPDATE orders SET state = 'done', note = 'x' WHERE id <= 5")
        .await
        .unwrap();
    let got = jobs(&c, "done_orders").await;
    assert_eq!(
        got,
        vec![
            json!({"event": "update", "table": "public.orders", "keys": [1, 2, 3]}),
            json!({"event": "update", "table": "public.orders", "keys": [4, 5]}),
        ]
    );
    let row = c
        .query_one(
            "SELECT project_id, task_id, trigger_kind, trigger_id, handler, user_name::text, state
             FROM sync.job ORDER BY id LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    assert_eq!(row.get::<_, Option<i64>>(1), Some(1));
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("db"));
    assert_eq!(row.get::<_, Option<i64>>(3), Some(1));
    assert_eq!(row.get::<_, String>(4), "handle_db");
    assert_eq!(row.get::<_, String>(5), "postgres");
    assert_eq!(row.get::<_, String>(6), "pending");
}

#[tokio::test]
async fn watched_columns_null_means_any_real_change() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "INSERT INTO sync.db_trigger (task_id, name, table_name, event)
         VALUES (1, 'any', 'orders', 'update')",
    )
    .await
    .unwrap();
    c.batch_execute("UPDATE orders SET state = state WHERE id <= 5")
        .await
        .unwrap();
    c.batch_execute("UPDATE orders SET note = 'n' WHERE id IN (2, 4)")
        .await
        .unwrap();
    let got = jobs(&c, "any").await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(keys(&got[0]), vec![json!(2), json!(4)]);
}

#[tokio::test]
async fn create_create_or_update_and_delete_events() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "INSERT INTO sync.db_trigger (task_id, name, table_name, event, apply_on)
         VALUES (1, 'created', 'orders', 'create', 'NEW.amount > 0');
         INSERT INTO sync.db_trigger (task_id, name, table_name, event, watched_columns)
         VALUES (1, 'upserted', 'orders', 'create_or_update', '{amount}');
         INSERT INTO sync.db_trigger (task_id, name, table_name, event, apply_on)
         VALUES (1, 'deleted', 'orders', 'delete', 'OLD.state <> ''keep''');",
    )
    .await
    .unwrap();
    c.batch_execute("INSERT INTO orders (id, amount) VALUES (100, 5), (101, 0), (102, 9)")
        .await
        .unwrap();
    assert_eq!(
        jobs(&c, "created").await,
        vec![json!({"event": "create", "table": "public.orders", "keys": [100, 102]})]
    );
    // One upsert statement that inserts and updates: a create job and an update job.
    c.batch_execute(
        "INSERT INTO orders (id, amount) VALUES (1, 3), (103, 4)
         ON CONFLICT (id) DO UPDATE SET amount = excluded.amount",
    )
    .await
    .unwrap();
    let up = jobs(&c, "upserted").await;
    assert_eq!(up.len(), 3, "{up:?}"); // the first INSERT, then the upsert's two
    assert_eq!(
        up[0],
        json!({"event": "create", "table": "public.orders", "keys": [100, 101, 102]})
    );
    assert_eq!(
        up[1..],
        [
            json!({"event": "create", "table": "public.orders", "keys": [103]}),
            json!({"event": "update", "table": "public.orders", "keys": [1]}),
        ]
    );

    c.batch_execute(
        "UPDATE orders SET state = 'keep' WHERE id = 2;
         DELETE FROM orders WHERE id IN (1, 2, 3)",
    )
    .await
    .unwrap();
    let del = jobs(&c, "deleted").await;
    assert_eq!(del.len(), 1);
    assert_eq!(del[0]["event"], "delete");
    assert_eq!(keys(&del[0]), vec![json!(1), json!(3)]);
    assert_eq!(
        del[0]["old"],
        json!([
            {"id": 1, "state": "draft", "amount": 3, "note": null},
            {"id": 3, "state": "draft", "amount": 0, "note": null}
        ])
    );
}

#[tokio::test]
async fn before_update_filters_on_the_old_row() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "UPDATE orders SET state = 'sent' WHERE id <= 2;
         INSERT INTO sync.db_trigger (task_id, name, table_name, event, apply_on, before_update)
         VALUES (1, 'closed', 'orders', 'update', 'NEW.state = ''done''', 'OLD.state = ''sent''');",
    )
    .await
    .unwrap();
    c.batch_execute("UPDATE orders SET state = 'done' WHERE id <= 4")
        .await
        .unwrap();
    let got = jobs(&c, "closed").await;
    assert_eq!(got.len(), 1);
    assert_eq!(keys(&got[0]), vec![json!(1), json!(2)]);
}

#[tokio::test]
async fn keys_are_chunked_at_chunk_size() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "INSERT INTO sync.db_trigger (task_id, name, table_name, event, chunk_size)
         VALUES (1, 'small', 'orders', 'update', 3);
         INSERT INTO sync.db_trigger (task_id, name, table_name, event)
         VALUES (1, 'default', 'orders', 'create');",
    )
    .await
    .unwrap();
    c.batch_execute("UPDATE orders SET amount = 1 WHERE id <= 10")
        .await
        .unwrap();
    let got: Vec<Vec<Value>> = jobs(&c, "small").await.iter().map(keys).collect();
    // Row order within an UPDATE follows the scan: check sizes, then the keys as a set.
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 3, 1]);
    let mut flat: Vec<i64> = got.iter().flatten().map(|v| v.as_i64().unwrap()).collect();
    flat.sort();
    assert_eq!(flat, (1..=10).collect::<Vec<_>>());

    c.batch_execute("INSERT INTO orders (id) SELECT g FROM generate_series(1001, 3500) g")
        .await
        .unwrap();
    let got = jobs(&c, "default").await;
    assert_eq!(
        got.iter().map(|j| keys(j).len()).collect::<Vec<_>>(),
        [1000, 1000, 500]
    );
    assert_eq!(keys(&got[0])[0], json!(1001));
    assert_eq!(keys(&got[2])[499], json!(3500));
}

#[tokio::test]
async fn single_and_composite_keys_of_common_types() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "CREATE TABLE k_int (id int PRIMARY KEY, v int);
         CREATE TABLE k_small (id smallint PRIMARY KEY, v int);
         CREATE TABLE k_text (id text PRIMARY KEY, v int);
         CREATE TABLE k_uuid (id uuid PRIMARY KEY, v int);
         CREATE TABLE k_comp (a bigint, b text, c uuid, v int, PRIMARY KEY (b, a, c));
         INSERT INTO sync.db_trigger (task_id, name, table_name, event)
         VALUES (1, 'k_int', 'k_int', 'create'), (1, 'k_small', 'k_small', 'create'),
                (1, 'k_text', 'k_text', 'create'), (1, 'k_uuid', 'k_uuid', 'create'),
                (1, 'k_comp', 'k_comp', 'create');
         INSERT INTO k_int VALUES (2147483647, 1);
         INSERT INTO k_small VALUES (-5, 1);
         INSERT INTO k_text VALUES ('a \"quoted\" \\ key', 1);
         INSERT INTO k_uuid VALUES ('5b6f7c1e-1d2a-4b3c-8d9e-0f1a2b3c4d5e', 1);
         INSERT INTO k_comp VALUES (9007199254740993, 'x,y', '00000000-0000-0000-0000-000000000001', 1);",
    )
    .await
    .unwrap();
    assert_eq!(keys(&jobs(&c, "k_int").await[0]), vec![json!(2147483647)]);
    assert_eq!(keys(&jobs(&c, "k_small").await[0]), vec![json!(-5)]);
    assert_eq!(
        keys(&jobs(&c, "k_text").await[0]),
        vec![json!("a \"quoted\" \\ key")]
    );
    assert_eq!(
        keys(&jobs(&c, "k_uuid").await[0]),
        vec![json!("5b6f7c1e-1d2a-4b3c-8d9e-0f1a2b3c4d5e")]
    );
    // Key column order (b, a, c), not table column order; bigints stay exact.
    let comp = jobs(&c, "k_comp").await;
    assert_eq!(
        comp[0]["keys"].to_string(),
        r#"[["x,y",9007199254740993,"00000000-0000-0000-0000-000000000001"]]"#
    );
}

#[tokio::test]
async fn invalid_definitions_are_rejected_and_nothing_is_installed() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "CREATE TABLE nopk (a int);
         CREATE VIEW orders_v AS SELECT * FROM orders;
         CREATE TABLE parted (id int PRIMARY KEY) PARTITION BY RANGE (id);",
    )
    .await
    .unwrap();
    let ins = |name: &str, cols: &str, vals: &str| {
        format!(
            "INSERT INTO sync.db_trigger (task_id, name, table_name, event{cols}) VALUES (1, '{name}', {vals})"
        )
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (ins("a", "", "'nopk', 'create'"), "42P16", "has no primary key"),
        (ins("b", "", "'orders_v', 'create'"), "42809", "is not a table"),
        (ins("c", "", "'parted', 'create'"), "0A000", "partitioned"),
        (ins("d", "", "'sync.job', 'create'"), "42809", "cannot be watched"),
        (
            ins("e", ", apply_on", "'orders', 'create', 'NEW.nope = 1'"),
            "42703",
            "apply_on is invalid: column new.nope does not exist",
        ),
        (
            ins("f", ", apply_on", "'orders', 'create', 'NEW.amount'"),
            "42804",
            "apply_on is invalid: argument of WHEN must be type boolean",
        ),
        (
            ins("g", ", apply_on", "'orders', 'create', 'OLD.state = ''x'''"),
            "42P17",
            "apply_on is invalid",
        ),
        (
            ins("h", ", apply_on", "'orders', 'delete', 'NEW.state = ''x'''"),
            "42P17",
            "apply_on is invalid",
        ),
        (
            ins("i", ", before_update", "'orders', 'update', 'OLD.nope'"),
            "42703",
            "before_update is invalid",
        ),
        (
            ins("j", ", apply_on", "'orders', 'create', 'NEW.state ='"),
            "42601",
            "apply_on is not a single SQL expression",
        ),
        (
            ins("k", ", watched_columns", "'orders', 'update', '{state,Nope}'"),
            "42703",
            "watched column \"Nope\" does not exist",
        ),
        (
            ins("l", ", watched_columns", "'orders', 'update', '{}'"),
            "22023",
            "watched_columns is empty",
        ),
        (
            ins("m", ", watched_columns", "'orders', 'delete', '{state}'"),
            "22023",
            "watched_columns only applies",
        ),
        (
            ins("n", ", date_column", "'orders', 'timed', 'nope'"),
            "42703",
            "date_column \"nope\" does not exist",
        ),
        (
            ins("o", ", date_column", "'orders', 'timed', 'state'"),
            "42804",
            "is of type text",
        ),
        (
            ins("p", ", apply_on", "'orders', 'create', 'NEW.state = (SELECT ''a'')'"),
            "0A000",
            "apply_on is invalid: cannot use subquery",
        ),
        (
            "INSERT INTO sync.db_trigger (task_id, name, table_name, event) VALUES (1, 'q', '123456', 'create')".into(),
            "42P01",
            "does not exist",
        ),
    ];
    for (sql, code, needle) in &cases {
        let msg = expect_error(&c, sql, code).await;
        assert!(msg.contains(needle), "{sql}: {msg}");
        assert!(msg.starts_with("db trigger \""), "{sql}: {msg}");
    }
    let n: i64 = scalar(&c, "SELECT count(*) FROM sync.db_trigger").await;
    assert_eq!(n, 0);
    let n: i64 = scalar(
        &c,
        "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pg\\_sync\\_%'",
    )
    .await;
    assert_eq!(n, 0);

    // Also for an inactive trigger, and on update of a valid one (which stays as it was).
    expect_error(
        &c,
        &ins(
            "r",
            ", active, apply_on",
            "'orders', 'create', false, 'NEW.nope'",
        ),
        "42703",
    )
    .await;
    c.batch_execute(&ins(
        "s",
        ", apply_on",
        "'orders', 'create', 'NEW.amount > 1'",
    ))
    .await
    .unwrap();
    expect_error(
        &c,
        "UPDATE sync.db_trigger SET apply_on = 'NEW.zz' WHERE name = 's'",
        "42703",
    )
    .await;
    c.batch_execute("INSERT INTO orders (id, amount) VALUES (500, 5)")
        .await
        .unwrap();
    assert_eq!(jobs(&c, "s").await.len(), 1);
}

#[tokio::test]
async fn expressions_cannot_smuggle_sql_into_the_installer() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    for expr in [
        "true) EXECUTE FUNCTION sync.dbt_capture('1'); CREATE TABLE pwned (a int); CREATE TRIGGER z AFTER INSERT ON orders FOR EACH ROW WHEN ((true",
        "true); CREATE TABLE pwned (a int); SELECT (true",
        "true) AS x, (true",
        "true) x --",
        "true) FROM pg_class WHERE (true",
        "true\n) EXECUTE FUNCTION sync.dbt_capture('1');\nCREATE TABLE pwned (a int);\n--",
    ] {
        let sql = format!(
            "INSERT INTO sync.db_trigger (task_id, name, table_name, event, apply_on)
             VALUES (1, 'evil', 'orders', 'create', $${expr}$$)"
        );
        let msg = expect_error(&c, &sql, "42601").await;
        assert!(msg.contains("not a single SQL expression"), "{expr}: {msg}");
    }
    let pwned: Option<String> = scalar(&c, "SELECT to_regclass('pwned')::text").await;
    assert_eq!(pwned, None);
    // Parentheses and comments inside a real expression are fine.
    c.batch_execute(
        "INSERT INTO sync.db_trigger (task_id, name, table_name, event, apply_on)
         VALUES (1, 'ok', 'orders', 'create', $$(NEW.amount) > 1 -- big ones
                                                 AND (NEW.state) = 'draft'$$)",
    )
    .await
    .unwrap();
    c.batch_execute("INSERT INTO orders (id, amount) VALUES (600, 0), (601, 5)")
        .await
        .unwrap();
    assert_eq!(keys(&jobs(&c, "ok").await[0]), vec![json!(601)]);
}

#[tokio::test]
async fn inactive_triggers_tasks_and_projects_enqueue_nothing() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "INSERT INTO sync.db_trigger (task_id, name, table_name, event)
         VALUES (1, 'w', 'orders', 'update')",
    )
    .await
    .unwrap();
    let mut expected = 0;
    for (off, on) in [
        (
            "UPDATE sync.db_trigger SET active = false",
            "UPDATE sync.db_trigger SET active = true",
        ),
        (
            "UPDATE sync.task SET active = false",
            "UPDATE sync.task SET active = true",
        ),
        (
            "UPDATE sync.project SET active = false",
            "UPDATE sync.project SET active = true",
        ),
    ] {
        c.batch_execute(off).await.unwrap();
        assert_eq!(installed(&c, "orders").await, Vec::<String>::new(), "{off}");
        c.batch_execute("UPDATE orders SET amount = amount + 1 WHERE id = 1")
            .await
            .unwrap();
        assert_eq!(jobs(&c, "w").await.len(), expected, "{off}");
        c.batch_execute(on).await.unwrap();
        assert_eq!(installed(&c, "orders").await.len(), 3, "{on}");
        c.batch_execute("UPDATE orders SET amount = amount + 1 WHERE id = 1")
            .await
            .unwrap();
        expected += 1;
        assert_eq!(jobs(&c, "w").await.len(), expected, "{on}");
    }
    // A new project starts inactive: its db triggers are validated but not installed.
    c.batch_execute(
        "INSERT INTO sync.project (id, name) VALUES (2, 'q');
         INSERT INTO sync.task (id, project_id, name) VALUES (2, 2, 't');
         INSERT INTO sync.db_trigger (task_id, name, table_name, event)
         VALUES (2, 'q', 'orders', 'create');
         INSERT INTO orders (id) VALUES (700);",
    )
    .await
    .unwrap();
    assert_eq!(jobs(&c, "q").await.len(), 0);
    c.batch_execute(
        "UPDATE sync.project SET active = true WHERE id = 2; INSERT INTO orders (id) VALUES (701);",
    )
    .await
    .unwrap();
    assert_eq!(keys(&jobs(&c, "q").await[0]), vec![json!(701)]);
    // Deleting the db trigger (here through its task) removes its real triggers.
    c.batch_execute("DELETE FROM sync.task WHERE id = 2")
        .await
        .unwrap();
    assert!(!installed(&c, "orders")
        .await
        .iter()
        .any(|t| t.starts_with("pg_sync_dbt_2_")));
}

#[tokio::test]
async fn changing_a_db_trigger_reinstalls_it() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "CREATE TABLE other (id text PRIMARY KEY, v int);
         INSERT INTO sync.db_trigger (task_id, name, table_name, event, apply_on)
         VALUES (1, 'm', 'orders', 'create', 'NEW.amount = 1');",
    )
    .await
    .unwrap();
    c.batch_execute(
        "UPDATE sync.db_trigger SET apply_on = 'NEW.amount = 2', name = 'm2', chunk_size = 1;
         INSERT INTO orders (id, amount) VALUES (800, 1), (801, 2), (802, 2);",
    )
    .await
    .unwrap();
    assert_eq!(jobs(&c, "m").await.len(), 0);
    let m2: Vec<Vec<Value>> = jobs(&c, "m2").await.iter().map(keys).collect();
    assert_eq!(m2, vec![vec![json!(801)], vec![json!(802)]]);
    c.batch_execute(
        "UPDATE sync.db_trigger SET table_name = 'other', apply_on = NULL;
         INSERT INTO orders (id, amount) VALUES (803, 2);
         INSERT INTO other VALUES ('o', 1);",
    )
    .await
    .unwrap();
    assert_eq!(installed(&c, "orders").await, Vec::<String>::new());
    let m2 = jobs(&c, "m2").await;
    assert_eq!(m2.len(), 3);
    assert_eq!(
        m2[2],
        json!({"event": "create", "table": "public.other", "keys": ["o"]})
    );
    // Renaming the table keeps the trigger working; jobs carry the current name.
    c.batch_execute("ALTER TABLE other RENAME TO renamed; INSERT INTO renamed VALUES ('p', 1);")
        .await
        .unwrap();
    assert_eq!(jobs(&c, "m2").await[3]["table"], "public.renamed");
    c.batch_execute("DELETE FROM sync.db_trigger")
        .await
        .unwrap();
    assert_eq!(installed(&c, "renamed").await, Vec::<String>::new());
}

#[tokio::test]
async fn rolled_back_savepoint_failed_statement_and_aborted_transaction_enqueue_nothing() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "INSERT INTO sync.db_trigger (task_id, name, table_name, event)
         VALUES (1, 'w', 'orders', 'update');
         -- Fails the statement after our row triggers captured its rows, before our
         -- statement trigger runs (statement triggers fire in name order).
         CREATE FUNCTION fail_big() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF EXISTS (SELECT 1 FROM orders WHERE amount >= 1000) THEN
                 RAISE EXCEPTION 'too big';
             END IF;
             RETURN NULL;
         END $$;
         CREATE TRIGGER a_fail_big AFTER UPDATE ON orders FOR EACH STATEMENT EXECUTE FUNCTION fail_big();",
    )
    .await
    .unwrap();

    // Rolled-back savepoint: the statement completed (its job was inserted), then undone.
    c.batch_execute(
        "BEGIN;
         SAVEPOINT s;
         UPDATE orders SET amount = 1 WHERE id <= 5;
         ROLLBACK TO SAVEPOINT s;
         UPDATE orders SET amount = 2 WHERE id = 6;
         COMMIT;",
    )
    .await
    .unwrap();
    assert_eq!(
        jobs(&c, "w").await.iter().map(keys).collect::<Vec<_>>(),
        vec![vec![json!(6)]]
    );

    // Failed statement inside a PL/pgSQL exception block (a subtransaction): its
    // captured keys must not leak into the next statement's job.
    c.batch_execute(
        "DO $$
         BEGIN
             BEGIN
                 UPDATE orders SET amount = 1000 WHERE id <= 5;
             EXCEPTION WHEN others THEN NULL;
             END;
             UPDATE orders SET amount = 3 WHERE id = 7;
         END $$;",
    )
    .await
    .unwrap();
    assert_eq!(
        jobs(&c, "w").await.iter().map(keys).collect::<Vec<_>>(),
        vec![vec![json!(6)], vec![json!(7)]]
    );

    // Failed statement at top level aborts the transaction; the next one is clean.
    expect_error(&c, "UPDATE orders SET amount = 1000 WHERE id <= 5", "P0001").await;
    c.batch_execute("UPDATE orders SET amount = 4 WHERE id = 8")
        .await
        .unwrap();
    // Failed statement in an explicit transaction, then ROLLBACK.
    c.batch_execute("BEGIN").await.unwrap();
    expect_error(&c, "UPDATE orders SET amount = 1000 WHERE id <= 5", "P0001").await;
    c.batch_execute("ROLLBACK").await.unwrap();
    // Aborted transaction after complete statements.
    c.batch_execute(
        "BEGIN; UPDATE orders SET amount = 5 WHERE id <= 3; UPDATE orders SET amount = 5 WHERE id = 4; ROLLBACK;",
    )
    .await
    .unwrap();
    c.batch_execute("UPDATE orders SET amount = 6 WHERE id = 9")
        .await
        .unwrap();
    assert_eq!(
        jobs(&c, "w").await.iter().map(keys).collect::<Vec<_>>(),
        vec![
            vec![json!(6)],
            vec![json!(7)],
            vec![json!(8)],
            vec![json!(9)]
        ]
    );

    // Committed: always enqueued, atomically with the write.
    c.batch_execute(
        "BEGIN; SAVEPOINT a; UPDATE orders SET amount = 7 WHERE id IN (10, 11); RELEASE a; COMMIT;",
    )
    .await
    .unwrap();
    assert_eq!(
        keys(jobs(&c, "w").await.last().unwrap()),
        vec![json!(10), json!(11)]
    );
}

#[tokio::test]
async fn nested_statements_get_their_own_jobs() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    // A user trigger that, while our trigger captures the outer statement's rows,
    // runs another UPDATE on the same table.
    c.batch_execute(
        "INSERT INTO sync.db_trigger (task_id, name, table_name, event, watched_columns)
         VALUES (1, 'w', 'orders', 'update', '{amount}');
         CREATE FUNCTION cascade() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.id = 1 THEN
                 UPDATE orders SET amount = amount + 1 WHERE id IN (15, 16);
             END IF;
             RETURN NULL;
         END $$;
         CREATE TRIGGER zz_cascade AFTER UPDATE OF state ON orders
             FOR EACH ROW EXECUTE FUNCTION cascade();",
    )
    .await
    .unwrap();
    c.batch_execute("UPDATE orders SET state = 'x', amount = 50 WHERE id <= 3")
        .await
        .unwrap();
    let got: Vec<Vec<i64>> = jobs(&c, "w")
        .await
        .iter()
        .map(|j| {
            let mut k: Vec<i64> = keys(j).iter().map(|v| v.as_i64().unwrap()).collect();
            k.sort();
            k
        })
        .collect();
    assert_eq!(got, vec![vec![15, 16], vec![1, 2, 3]]);
}

/// A connection whose notifications arrive on a channel.
async fn listener(url: &str) -> (Client, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (client, mut conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect listener");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(msg) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            match msg {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    let _ = tx.send(n.channel().to_string());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    client
        .batch_execute("LISTEN sync_job; LISTEN test_marker")
        .await
        .expect("LISTEN");
    (client, rx)
}

/// sync_job notifications received before the next test_marker one.
async fn notifications_until_marker(
    writer: &Client,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
) -> usize {
    writer.batch_execute("NOTIFY test_marker").await.unwrap();
    let mut n = 0;
    loop {
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("marker notification within 10 s")
            .expect("listener alive");
        if got == "test_marker" {
            return n;
        }
        n += 1;
    }
}

#[tokio::test]
async fn a_thousand_row_statement_sends_one_notification() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "INSERT INTO orders (id) SELECT g FROM generate_series(1000, 1999) g;
         INSERT INTO sync.db_trigger (task_id, name, table_name, event, chunk_size)
         VALUES (1, 'w', 'orders', 'update', 100);",
    )
    .await
    .unwrap();
    let (_l, mut rx) = listener(&db.url).await;
    assert_eq!(notifications_until_marker(&c, &mut rx).await, 0);
    c.batch_execute("UPDATE orders SET amount = 1 WHERE id BETWEEN 1000 AND 1999")
        .await
        .unwrap();
    assert_eq!(jobs(&c, "w").await.len(), 10);
    assert_eq!(notifications_until_marker(&c, &mut rx).await, 1);
    // The doorbell is rung now: until a worker clears it (before it claims), further
    // enqueues send no NOTIFY, a worker being on its way.
    let rung: bool = scalar(&c, "SELECT rung FROM sync.doorbell").await;
    assert!(rung);
    c.batch_execute("UPDATE orders SET amount = 2 WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(notifications_until_marker(&c, &mut rx).await, 0);
    // Cleared: the next committed enqueue notifies, once, however many statements its
    // transaction has, and at its commit (a long transaction is not announced early).
    c.batch_execute("UPDATE sync.doorbell SET rung = false")
        .await
        .unwrap();
    c.batch_execute("BEGIN; UPDATE orders SET amount = 3 WHERE id = 1; UPDATE orders SET amount = 3 WHERE id = 2")
        .await
        .unwrap();
    let rung: bool = scalar(&c, "SELECT rung FROM sync.doorbell").await;
    assert!(!rung, "not rung before the commit");
    assert_eq!(
        notifications_until_marker(&db.connect().await, &mut rx).await,
        0
    );
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(notifications_until_marker(&c, &mut rx).await, 1);
    // A rolled-back transaction rings nothing.
    c.batch_execute("UPDATE sync.doorbell SET rung = false")
        .await
        .unwrap();
    c.batch_execute("BEGIN; UPDATE orders SET amount = 4 WHERE id = 1; ROLLBACK")
        .await
        .unwrap();
    assert_eq!(notifications_until_marker(&c, &mut rx).await, 0);
    // Statements that enqueue nothing (no real change) notify nothing.
    c.batch_execute("UPDATE orders SET amount = 3 WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(notifications_until_marker(&c, &mut rx).await, 0);
    let rung: bool = scalar(&c, "SELECT rung FROM sync.doorbell").await;
    assert!(!rung);
}

#[tokio::test]
async fn writers_need_no_queue_rights_and_definers_need_the_trigger_privilege() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let _ = db.connect_as("dbt_app").await;
    let _ = db.connect_as("dbt_dev").await;
    c.batch_execute(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON orders TO dbt_app;
         GRANT sync_developer TO dbt_dev;
         CREATE TABLE secret_stuff (id int PRIMARY KEY);",
    )
    .await
    .unwrap();
    let dev = db.connect_as("dbt_dev").await;
    let msg = expect_error(
        &dev,
        "INSERT INTO sync.db_trigger (task_id, name, table_name, event, apply_on)
         VALUES (1, 'x', 'secret_stuff', 'create', 'NEW.id > 0')",
        "42501",
    )
    .await;
    assert!(msg.contains("permission denied to watch table"), "{msg}");
    c.batch_execute("GRANT TRIGGER, SELECT ON orders TO dbt_dev")
        .await
        .unwrap();
    dev.batch_execute(
        "INSERT INTO sync.db_trigger (task_id, name, table_name, event)
         VALUES (1, 'w', 'orders', 'update')",
    )
    .await
    .unwrap();
    // Switching it off and on, or its project, needs no privilege on the table.
    dev.batch_execute(
        "UPDATE sync.db_trigger SET active = false; UPDATE sync.db_trigger SET active = true;",
    )
    .await
    .unwrap();
    let app = db.connect_as("dbt_app").await;
    let n: i64 = scalar(&app, "SELECT count(*) FROM orders").await;
    assert_eq!(n, 20);
    expect_error(&app, "SELECT count(*) FROM sync.job", "42501").await;
    app.batch_execute("UPDATE orders SET amount = 3 WHERE id = 4")
        .await
        .unwrap();
    let user: String = scalar(&c, "SELECT user_name::text FROM sync.job").await;
    assert_eq!(user, "dbt_app");
    // Nobody but the installer can aim a trigger at the enqueueing function to forge
    // jobs for a project.
    c.batch_execute("GRANT CREATE ON SCHEMA public TO dbt_app")
        .await
        .unwrap();
    app.batch_execute("CREATE TABLE mine (id int PRIMARY KEY)")
        .await
        .unwrap();
    for f in [
        "sync.dbt_statement_end('1', 'e', '1', '1', 'w', '10')",
        "sync.dbt_capture('1', 'e')",
    ] {
        let sql = format!(
            "CREATE TRIGGER forge AFTER INSERT ON mine FOR EACH STATEMENT EXECUTE FUNCTION {f}"
        );
        expect_error(&app, &sql, "42501").await;
    }
}

#[tokio::test]
async fn timed_triggers_enqueue_each_row_once_when_due() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "CREATE TABLE tickets (id int PRIMARY KEY, closed_on date, closed_at timestamptz, state text);
         INSERT INTO tickets VALUES
             (1, NULL, now() - interval '3 days', 'done'),   -- long past: not handled
             (2, NULL, now() + interval '1 hour', 'done'),   -- due in 1 day 1 hour
             (3, NULL, now() + interval '1 hour', 'open');   -- apply_on false
         INSERT INTO sync.db_trigger (task_id, name, table_name, event, date_column, time_offset, apply_on)
         VALUES (1, 'later', 'tickets', 'timed', 'closed_at', '1 day', 'NEW.state = ''done''');",
    )
    .await
    .unwrap();
    let enqueue = "SELECT sync.enqueue_timed_triggers()";
    let n: i32 = scalar(&c, enqueue).await;
    assert_eq!(n, 0);
    // A row closed now is due tomorrow; one backdated is due at once.
    c.batch_execute(
        "INSERT INTO tickets VALUES (4, NULL, now(), 'done'), (5, NULL, now() - interval '2 days', 'done')",
    )
    .await
    .unwrap();
    assert_eq!(scalar::<i32>(&c, enqueue).await, 1);
    assert_eq!(
        jobs(&c, "later").await,
        vec![json!({"event": "timed", "table": "public.tickets", "keys": [5]})]
    );
    assert_eq!(scalar::<i32>(&c, enqueue).await, 0);

    // Time passes (the worker was down): everything due is enqueued once, together.
    c.batch_execute("INSERT INTO sync.setting VALUES ('clock_offset', '2 days')")
        .await
        .unwrap();
    assert_eq!(scalar::<i32>(&c, enqueue).await, 1);
    assert_eq!(scalar::<i32>(&c, enqueue).await, 0);
    let got = jobs(&c, "later").await;
    assert_eq!(got.len(), 2);
    let mut k: Vec<i64> = keys(&got[1]).iter().map(|v| v.as_i64().unwrap()).collect();
    k.sort();
    assert_eq!(k, [2, 4]);

    // A date that changes later schedules the row again; other changes do not.
    c.batch_execute(
        "UPDATE tickets SET state = 'done' WHERE id = 3;
         UPDATE tickets SET closed_at = sync.clock() WHERE id = 2;
         UPDATE tickets SET closed_at = sync.clock() + interval '1 hour', state = 'open' WHERE id = 4;",
    )
    .await
    .unwrap();
    let due: Vec<i32> = c
        .query(
            "SELECT (key #>> '{}')::int FROM sync.db_trigger_due ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        due,
        [2],
        "row 3 kept its date, row 4 no longer matches apply_on"
    );
    assert_eq!(scalar::<i32>(&c, enqueue).await, 0);
    c.batch_execute("UPDATE sync.setting SET value = '3 days 1 minute' WHERE key = 'clock_offset'")
        .await
        .unwrap();
    assert_eq!(scalar::<i32>(&c, enqueue).await, 1);
    assert_eq!(keys(&jobs(&c, "later").await[2]), vec![json!(2)]);

    // Deleted or truncated rows leave the schedule.
    c.batch_execute(
        "INSERT INTO tickets VALUES (6, NULL, sync.clock(), 'done'), (7, NULL, sync.clock(), 'done');
         DELETE FROM tickets WHERE id = 6;",
    )
    .await
    .unwrap();
    assert_eq!(
        scalar::<i64>(&c, "SELECT count(*) FROM sync.db_trigger_due").await,
        1
    );
    c.batch_execute("TRUNCATE tickets").await.unwrap();
    assert_eq!(
        scalar::<i64>(&c, "SELECT count(*) FROM sync.db_trigger_due").await,
        0
    );

    // Deactivating clears the schedule: an inactive trigger enqueues nothing.
    c.batch_execute(
        "INSERT INTO tickets VALUES (8, NULL, sync.clock() - interval '2 days', 'done');
         UPDATE sync.project SET active = false;",
    )
    .await
    .unwrap();
    assert_eq!(scalar::<i32>(&c, enqueue).await, 0);
    assert_eq!(jobs(&c, "later").await.len(), 3);
}

#[tokio::test]
async fn timed_trigger_on_a_date_column_with_chunks_and_users() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    let _ = db.connect_as("dbt_clerk").await;
    c.batch_execute(
        "CREATE TABLE visits (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), day date);
         GRANT SELECT, INSERT, UPDATE ON visits TO dbt_clerk;
         INSERT INTO sync.db_trigger (task_id, name, table_name, event, date_column, time_offset, chunk_size)
         VALUES (1, 'followup', 'visits', 'timed', 'day', '7 days', 2);",
    )
    .await
    .unwrap();
    c.batch_execute("INSERT INTO visits (day) SELECT current_date - 10 FROM generate_series(1, 3)")
        .await
        .unwrap();
    let clerk = db.connect_as("dbt_clerk").await;
    clerk
        .batch_execute("INSERT INTO visits (day) VALUES (current_date - 8)")
        .await
        .unwrap();
    assert_eq!(
        scalar::<i32>(&c, "SELECT sync.enqueue_timed_triggers()").await,
        3
    );
    let rows = c
        .query(
            "SELECT user_name::text, jsonb_array_length(args->'keys') FROM sync.job ORDER BY user_name, id",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        [
            ("dbt_clerk".to_string(), 1),
            ("postgres".into(), 2),
            ("postgres".into(), 1)
        ]
    );
    let all: i64 = scalar(
        &c,
        "SELECT count(DISTINCT k) FROM sync.job, jsonb_array_elements_text(args->'keys') k
         WHERE k IN (SELECT id::text FROM visits)",
    )
    .await;
    assert_eq!(all, 4);
}

#[tokio::test]
async fn concurrent_timed_callers_never_enqueue_a_row_twice() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "CREATE TABLE events (id int PRIMARY KEY, at timestamptz);
         INSERT INTO sync.db_trigger (task_id, name, table_name, event, date_column, chunk_size)
         VALUES (1, 'due', 'events', 'timed', 'at', 50);
         INSERT INTO events SELECT g, now() - interval '1 minute' FROM generate_series(1, 3000) g;",
    )
    .await
    .unwrap();
    let mut handles = Vec::new();
    for _ in 0..6 {
        let w = db.connect().await;
        handles.push(tokio::spawn(async move {
            let mut total = 0;
            for _ in 0..3 {
                // Hold the transaction open a little so callers overlap.
                let tx = "BEGIN; CREATE TEMP TABLE IF NOT EXISTS n (v int);
                          INSERT INTO n SELECT sync.enqueue_timed_triggers();
                          SELECT pg_sleep(0.05); COMMIT;";
                w.batch_execute(tx).await.expect("enqueue");
                total += scalar::<i64>(&w, "SELECT coalesce(sum(v), 0) FROM n").await;
                w.batch_execute("TRUNCATE n").await.unwrap();
            }
            total
        }));
    }
    let mut jobs_made = 0;
    for h in handles {
        jobs_made += h.await.unwrap();
    }
    let (n_keys, distinct): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT count(*), count(DISTINCT k) FROM sync.job, jsonb_array_elements(args->'keys') k",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((n_keys, distinct), (3000, 3000));
    let n_jobs: i64 = scalar(&c, "SELECT count(*) FROM sync.job").await;
    assert_eq!(n_jobs, jobs_made);
    assert!(n_jobs >= 60, "{n_jobs}");
}

#[tokio::test]
async fn drop_extension_leaves_no_trigger_behind() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "INSERT INTO sync.db_trigger (task_id, name, table_name, event)
         VALUES (1, 'w', 'orders', 'update');
         CREATE TABLE tickets (id int PRIMARY KEY, at timestamptz);
         INSERT INTO sync.db_trigger (task_id, name, table_name, event, date_column)
         VALUES (1, 't', 'tickets', 'timed', 'at');
         SELECT sync_set_link('rel', 'orders'::regclass, 1::bigint, 'ext-1');
         CREATE TABLE mine (id int PRIMARY KEY);
         CREATE FUNCTION mine_trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
         CREATE TRIGGER pg_sync_lookalike AFTER INSERT ON mine FOR EACH ROW EXECUTE FUNCTION mine_trg();",
    )
    .await
    .unwrap();
    let ours = "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal
                AND tgrelid IN ('orders'::regclass, 'tickets'::regclass)";
    let before: i64 = scalar(&c, ours).await;
    assert!(before >= 10, "{before}");
    assert!(installed(&c, "orders")
        .await
        .iter()
        .any(|t| t.starts_with("pg_sync_link_")));

    // Dropping another extension touches nothing.
    c.batch_execute("CREATE EXTENSION hstore; DROP EXTENSION hstore;")
        .await
        .unwrap();
    assert_eq!(scalar::<i64>(&c, ours).await, before);
    c.batch_execute("UPDATE orders SET amount = 1 WHERE id = 2")
        .await
        .unwrap();
    assert_eq!(jobs(&c, "w").await.len(), 1);

    // A DROP EXTENSION pg_sync that fails keeps everything working.
    c.batch_execute("CREATE VIEW my_jobs AS SELECT id FROM sync.job")
        .await
        .unwrap();
    expect_error(&c, "DROP EXTENSION pg_sync", "2BP01").await;
    assert_eq!(scalar::<i64>(&c, ours).await, before);
    c.batch_execute("UPDATE orders SET amount = 2 WHERE id = 2")
        .await
        .unwrap();
    assert_eq!(jobs(&c, "w").await.len(), 2);

    // A successful one (no CASCADE needed) leaves no trigger on user tables.
    c.batch_execute("DROP VIEW my_jobs; DROP EXTENSION pg_sync;")
        .await
        .unwrap();
    assert_eq!(scalar::<i64>(&c, ours).await, 0);
    let left: i64 = scalar(
        &c,
        "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pg\\_sync\\_%' AND tgname <> 'pg_sync_lookalike'",
    )
    .await;
    assert_eq!(left, 0);
    assert_eq!(installed(&c, "mine").await, ["pg_sync_lookalike"]);
    let evt: i64 = scalar(
        &c,
        "SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pg\\_sync%'",
    )
    .await;
    assert_eq!(evt, 0);
    c.batch_execute(
        "UPDATE orders SET amount = 3; DELETE FROM orders WHERE id = 1; INSERT INTO tickets VALUES (1, now());",
    )
    .await
    .unwrap();
    // And it can come back.
    c.batch_execute("CREATE EXTENSION pg_sync").await.unwrap();
}

#[tokio::test]
async fn dropping_a_watched_table_or_column_marks_the_trigger_broken() {
    let db = TestDb::new().await;
    let c = setup(&db).await;
    c.batch_execute(
        "CREATE TABLE gone (id int PRIMARY KEY, v int);
         INSERT INTO sync.db_trigger (task_id, name, table_name, event)
         VALUES (1, 'gone', 'gone', 'create'), (1, 'w', 'orders', 'update');
         INSERT INTO sync.db_trigger (task_id, name, table_name, event, watched_columns)
         VALUES (1, 'notes', 'orders', 'update', '{note}');",
    )
    .await
    .unwrap();
    c.batch_execute("DROP TABLE gone").await.unwrap();
    let (active, reason): (bool, Option<String>) = {
        let r = c
            .query_one(
                "SELECT active, broken_reason FROM sync.db_trigger WHERE name = 'gone'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(!active);
    assert_eq!(reason.as_deref(), Some("its table public.gone was dropped"));
    // The extension keeps working: other triggers, new triggers, jobs.
    c.batch_execute(
        "UPDATE orders SET amount = 1 WHERE id = 1;
         CREATE TABLE fresh (id int PRIMARY KEY);
         INSERT INTO sync.db_trigger (task_id, name, table_name, event) VALUES (1, 'fresh', 'fresh', 'create');
         INSERT INTO fresh VALUES (1);",
    )
    .await
    .unwrap();
    assert_eq!(jobs(&c, "w").await.len(), 1);
    assert_eq!(jobs(&c, "fresh").await.len(), 1);
    // Switching the broken trigger on again without fixing it says why it cannot be.
    let msg = expect_error(
        &c,
        "UPDATE sync.db_trigger SET active = true WHERE name = 'gone'",
        "42P01",
    )
    .await;
    assert!(msg.contains("db trigger \"gone\""), "{msg}");
    // Pointing it at a table repairs it.
    c.batch_execute(
        "UPDATE sync.db_trigger SET table_name = 'fresh', active = true WHERE name = 'gone';
         INSERT INTO fresh VALUES (2);",
    )
    .await
    .unwrap();
    assert_eq!(jobs(&c, "gone").await.len(), 1);
    let reason: Option<String> = scalar(
        &c,
        "SELECT broken_reason FROM sync.db_trigger WHERE name = 'gone'",
    )
    .await;
    assert_eq!(reason, None);

    // A watched column dropped with CASCADE takes the trigger down, all of it.
    expect_error(&c, "ALTER TABLE orders DROP COLUMN note", "2BP01").await;
    c.batch_execute("ALTER TABLE orders DROP COLUMN note CASCADE")
        .await
        .unwrap();
    let reason: Option<String> = scalar(
        &c,
        "SELECT broken_reason FROM sync.db_trigger WHERE name = 'notes'",
    )
    .await;
    assert!(reason.unwrap_or_default().contains("was dropped"));
    assert!(!installed(&c, "orders")
        .await
        .iter()
        .any(|t| t.starts_with("pg_sync_dbt_3_")));
    assert_eq!(installed(&c, "orders").await.len(), 3); // 'w' is untouched
}
