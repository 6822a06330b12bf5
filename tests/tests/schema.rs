// The data model (the tables of schema sync): documentation of every table and column,
// indexes behind every foreign key, cascades, CHECK constraints, trigger names unique
// per project across kinds, and the maintenance triggers (project_id, initial_value,
// project version).
use pg_sync_tests::*;

async fn strings(c: &Client, sql: &str) -> Vec<String> {
    c.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A project with one task; returns (project id, task id).
async fn project(c: &Client, name: &str) -> (i64, i64) {
    let p: i64 = scalar(
        c,
        &format!("INSERT INTO sync.project (name) VALUES ('{name}') RETURNING id"),
    )
    .await;
    let t: i64 = scalar(
        c,
        &format!("INSERT INTO sync.task (project_id, name) VALUES ({p}, 'main') RETURNING id"),
    )
    .await;
    (p, t)
}

#[tokio::test]
async fn every_table_view_and_column_has_a_comment() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let missing = strings(
        &c,
        "SELECT c.oid::regclass::text FROM pg_class c
         WHERE c.relnamespace = 'sync'::regnamespace AND c.relkind IN ('r', 'p', 'v')
           AND obj_description(c.oid, 'pg_class') IS NULL
         UNION ALL
         SELECT c.oid::regclass || '.' || a.attname FROM pg_class c
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE c.relnamespace = 'sync'::regnamespace AND c.relkind IN ('r', 'p', 'v')
           AND col_description(c.oid, a.attnum) IS NULL
         ORDER BY 1",
    )
    .await;
    assert!(missing.is_empty(), "no COMMENT on: {missing:?}");
    let tables: i64 = scalar(
        &c,
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'sync'::regnamespace AND relkind = 'r'",
    )
    .await;
    assert!(tables >= 14);
}

#[tokio::test]
async fn every_table_has_a_primary_key_and_every_foreign_key_an_index() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let no_pk = strings(
        &c,
        "SELECT c.oid::regclass::text FROM pg_class c
         WHERE c.relnamespace = 'sync'::regnamespace AND c.relkind = 'r'
           AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)",
    )
    .await;
    assert!(no_pk.is_empty(), "tables without a primary key: {no_pk:?}");
    // An index whose leading columns are the foreign key's columns (in any order), so
    // that deleting a referenced row does not scan the referencing table.
    let unindexed = strings(
        &c,
        "SELECT f.conrelid::regclass || ' ' || f.conname FROM pg_constraint f
         WHERE f.contype = 'f' AND f.connamespace = 'sync'::regnamespace
           AND NOT EXISTS (
               SELECT 1 FROM pg_index i
               WHERE i.indrelid = f.conrelid
                 AND (string_to_array(i.indkey::text, ' ')::int2[])[1:cardinality(f.conkey)] @> f.conkey
                 AND (string_to_array(i.indkey::text, ' ')::int2[])[1:cardinality(f.conkey)] <@ f.conkey)
         ORDER BY 1",
    )
    .await;
    assert!(
        unindexed.is_empty(),
        "foreign keys without an index: {unindexed:?}"
    );
}

#[tokio::test]
async fn deleting_a_project_deletes_everything_of_it() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (p, t) = project(&c, "gone").await;
    let (_, other_task) = project(&c, "kept").await;
    c.batch_execute(&format!(
        "CREATE TABLE watched (id int PRIMARY KEY);
         INSERT INTO sync.project_param (project_id, key, value) VALUES ({p}, 'A', '1');
         INSERT INTO sync.project_text (project_id, key, value) VALUES ({p}, 'A', 'a');
         INSERT INTO sync.project_secret (project_id, key, value) VALUES ({p}, 'A', 's');
         INSERT INTO sync.cron_trigger (task_id, name, \"interval\") VALUES ({t}, 'c', '1 hour'), ({other_task}, 'c', '1 hour');
         INSERT INTO sync.db_trigger (task_id, name, table_name, event) VALUES ({t}, 'd', 'watched', 'create');
         INSERT INTO sync.webhook_trigger (task_id, name) VALUES ({t}, 'w');
         INSERT INTO sync.button_trigger (task_id, name) VALUES ({t}, 'b');
         INSERT INTO sync.job (project_id, task_id, handler) VALUES ({p}, {t}, 'handle_button');
         INSERT INTO sync.log (project_id, task_id, message) VALUES ({p}, {t}, 'hello');"
    ))
    .await
    .unwrap();
    c.batch_execute(&format!("DELETE FROM sync.project WHERE id = {p}"))
        .await
        .unwrap();
    let left: i64 = scalar(
        &c,
        "SELECT (SELECT count(*) FROM sync.project_param) + (SELECT count(*) FROM sync.project_text)
              + (SELECT count(*) FROM sync.project_secret) + (SELECT count(*) FROM sync.task)
              + (SELECT count(*) FROM sync.cron_trigger) + (SELECT count(*) FROM sync.db_trigger)
              + (SELECT count(*) FROM sync.webhook_trigger) + (SELECT count(*) FROM sync.button_trigger)
              + (SELECT count(*) FROM sync.trigger_name) + (SELECT count(*) FROM sync.job)
              + (SELECT count(*) FROM sync.log)",
    )
    .await;
    // What is left belongs to project 'kept': its task, cron trigger and trigger name.
    assert_eq!(left, 3);
    // Deleting a task deletes its triggers and jobs; its logs stay, detached.
    c.batch_execute(&format!(
        "INSERT INTO sync.log (task_id, message) VALUES ({other_task}, 'kept');
         DELETE FROM sync.task WHERE id = {other_task}"
    ))
    .await
    .unwrap();
    let left = strings(
        &c,
        "SELECT 'cron ' || count(*) FROM sync.cron_trigger
         UNION ALL SELECT 'names ' || count(*) FROM sync.trigger_name
         UNION ALL SELECT 'log ' || count(*) || ' ' || count(task_id) FROM sync.log",
    )
    .await;
    assert_eq!(left, vec!["cron 0", "names 0", "log 1 0"]);
}

#[tokio::test]
async fn trigger_names_are_unique_per_project_across_kinds() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (p1, t1) = project(&c, "one").await;
    let (_p2, t2) = project(&c, "two").await;
    c.batch_execute(&format!(
        "CREATE TABLE watched (id int PRIMARY KEY);
         INSERT INTO sync.cron_trigger (task_id, name, \"interval\") VALUES ({t1}, 'sync', '1 hour');"
    ))
    .await
    .unwrap();
    // The same name in the same project, whatever the kind: refused.
    for sql in [
        format!("INSERT INTO sync.cron_trigger (task_id, name, \"interval\") VALUES ({t1}, 'sync', '1 day')"),
        format!("INSERT INTO sync.button_trigger (task_id, name) VALUES ({t1}, 'sync')"),
        format!("INSERT INTO sync.webhook_trigger (task_id, name) VALUES ({t1}, 'sync')"),
        format!("INSERT INTO sync.db_trigger (task_id, name, table_name, event) VALUES ({t1}, 'sync', 'watched', 'create')"),
    ] {
        let msg = expect_error(&c, &sql, "23505").await;
        assert!(msg.contains("a trigger named \"sync\" already exists"), "{msg}");
    }
    // Another project may use it.
    c.batch_execute(&format!(
        "INSERT INTO sync.button_trigger (task_id, name) VALUES ({t2}, 'sync')"
    ))
    .await
    .unwrap();
    // Renaming frees the old name and takes the new one.
    c.batch_execute(&format!(
        "INSERT INTO sync.webhook_trigger (task_id, name) VALUES ({t1}, 'hook');
         UPDATE sync.cron_trigger SET name = 'hourly' WHERE name = 'sync';
         INSERT INTO sync.button_trigger (task_id, name) VALUES ({t1}, 'sync');"
    ))
    .await
    .unwrap();
    expect_error(
        &c,
        "UPDATE sync.webhook_trigger SET name = 'hourly'",
        "23505",
    )
    .await;
    // Deleting frees the name.
    c.batch_execute(&format!(
        "DELETE FROM sync.webhook_trigger WHERE name = 'hook';
         INSERT INTO sync.db_trigger (task_id, name, table_name, event) VALUES ({t1}, 'hook', 'watched', 'create');"
    ))
    .await
    .unwrap();
    // Moving a trigger to a task of another project moves its name there.
    let clash = expect_error(
        &c,
        &format!(
            "UPDATE sync.button_trigger SET task_id = {t2} WHERE task_id = {t1} AND name = 'sync'"
        ),
        "23505",
    )
    .await;
    assert!(clash.contains("\"sync\""), "{clash}");
    c.batch_execute(&format!(
        "UPDATE sync.cron_trigger SET task_id = {t2} WHERE name = 'hourly'"
    ))
    .await
    .unwrap();
    let names = strings(
        &c,
        "SELECT p.name || ':' || n.kind || ':' || n.name FROM sync.trigger_name n
         JOIN sync.project p ON p.id = n.project_id ORDER BY 1",
    )
    .await;
    assert_eq!(
        names,
        vec![
            "one:button:sync",
            "one:db:hook",
            "two:button:sync",
            "two:cron:hourly"
        ]
    );
    let moved: i64 = scalar(
        &c,
        "SELECT project_id FROM sync.cron_trigger WHERE name = 'hourly'",
    )
    .await;
    assert_ne!(moved, p1, "project_id follows the task");
}

#[tokio::test]
async fn check_constraints_refuse_bad_values() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (p, t) = project(&c, "checks").await;
    c.batch_execute("CREATE TABLE watched (id int PRIMARY KEY, d date)")
        .await
        .unwrap();
    let cases = [
        "INSERT INTO sync.project (name) VALUES ('  ')".to_string(),
        "INSERT INTO sync.setting (key, value) VALUES ('Base URL', 'x')".into(),
        format!("INSERT INTO sync.project_param (project_id, key) VALUES ({p}, 'bad key')"),
        format!("INSERT INTO sync.project_text (project_id, key, lang) VALUES ({p}, 'A', 'english')"),
        format!("INSERT INTO sync.project_secret (project_id, key) VALUES ({p}, '1x')"),
        format!("INSERT INTO sync.task (project_id, name) VALUES ({p}, '')"),
        format!("INSERT INTO sync.task (project_id, name, time_limit) VALUES ({p}, 'x', '-1 second')"),
        format!("INSERT INTO sync.cron_trigger (task_id, name, \"interval\") VALUES ({t}, 'c', '0 seconds')"),
        format!("INSERT INTO sync.cron_trigger (task_id, name, \"interval\", calls_left) VALUES ({t}, 'c', '1 hour', -2)"),
        format!("INSERT INTO sync.cron_trigger (task_id, name, \"interval\") VALUES ({t}, 'bad name', '1 hour')"),
        format!("INSERT INTO sync.db_trigger (task_id, name, table_name, event) VALUES ({t}, 'd', 'watched', 'upsert')"),
        format!("INSERT INTO sync.db_trigger (task_id, name, table_name, event) VALUES ({t}, 'd', 'watched', 'timed')"),
        format!("INSERT INTO sync.db_trigger (task_id, name, table_name, event, date_column) VALUES ({t}, 'd', 'watched', 'create', 'd')"),
        format!("INSERT INTO sync.db_trigger (task_id, name, table_name, event, before_update) VALUES ({t}, 'd', 'watched', 'create', 'OLD.id > 1')"),
        format!("INSERT INTO sync.db_trigger (task_id, name, table_name, event, chunk_size) VALUES ({t}, 'd', 'watched', 'create', 0)"),
        format!("INSERT INTO sync.webhook_trigger (task_id, name, content_type) VALUES ({t}, 'w', 'xml')"),
        format!("INSERT INTO sync.webhook_trigger (task_id, name, token) VALUES ({t}, 'w', 'short')"),
        "INSERT INTO sync.link (relation, system1, ref1, system2, ref2) VALUES ('r', 'b', '1', 'a', '2')".into(),
        "INSERT INTO sync.link (relation, system1, ref1, system2, ref2) VALUES ('r', 'a', '', 'b', '2')".into(),
        "INSERT INTO sync.link (relation, system1, ref1, system2, ref2) VALUES ('', 'a', '1', 'b', '2')".into(),
    ];
    for sql in &cases {
        expect_error(&c, sql, "23514").await;
    }
    // A trigger needs an existing task; its project comes from the task.
    expect_error(
        &c,
        "INSERT INTO sync.button_trigger (task_id, name) VALUES (424242, 'b')",
        "23503",
    )
    .await;
    let filled: i64 = scalar(
        &c,
        &format!("INSERT INTO sync.button_trigger (task_id, name) VALUES ({t}, 'b') RETURNING project_id"),
    )
    .await;
    assert_eq!(filled, p);
    // Unique: project names, param keys, webhook tokens.
    expect_error(
        &c,
        "INSERT INTO sync.project (name) VALUES ('checks')",
        "23505",
    )
    .await;
    c.batch_execute(&format!(
        "INSERT INTO sync.project_param (project_id, key) VALUES ({p}, 'K')"
    ))
    .await
    .unwrap();
    expect_error(
        &c,
        &format!("INSERT INTO sync.project_param (project_id, key) VALUES ({p}, 'K')"),
        "23505",
    )
    .await;
}

#[tokio::test]
async fn initial_value_fills_empty_values_and_changes_bump_the_project_version() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (p, t) = project(&c, "params").await;
    c.batch_execute(&format!(
        "INSERT INTO sync.project_param (project_id, key, initial_value) VALUES ({p}, 'A', 'default');
         INSERT INTO sync.project_param (project_id, key, value, initial_value) VALUES ({p}, 'B', 'mine', 'default');"
    ))
    .await
    .unwrap();
    let values = strings(
        &c,
        "SELECT key || '=' || value FROM sync.project_param ORDER BY key",
    )
    .await;
    assert_eq!(values, vec!["A=default", "B=mine"]);
    // Re-importing a project with a new initial value keeps what the user set.
    c.batch_execute("UPDATE sync.project_param SET initial_value = 'v2'")
        .await
        .unwrap();
    let values = strings(
        &c,
        "SELECT key || '=' || value FROM sync.project_param ORDER BY key",
    )
    .await;
    assert_eq!(values, vec!["A=default", "B=mine"]);
    c.batch_execute("UPDATE sync.project_param SET value = '' WHERE key = 'B'")
        .await
        .unwrap();
    let b: String = scalar(&c, "SELECT value FROM sync.project_param WHERE key = 'B'").await;
    assert_eq!(b, "v2");

    let sql = format!("SELECT version FROM sync.project WHERE id = {p}");
    let version = |c| scalar::<i64>(c, &sql);
    let v0 = version(&c).await;
    c.batch_execute(&format!("UPDATE sync.task SET code = 'x' WHERE id = {t}"))
        .await
        .unwrap();
    let v1 = version(&c).await;
    assert!(v1 > v0);
    c.batch_execute(&format!(
        "INSERT INTO sync.project_text (project_id, key, value) VALUES ({p}, 'T', 't')"
    ))
    .await
    .unwrap();
    let v2 = version(&c).await;
    assert!(v2 > v1);
    c.batch_execute(&format!(
        "UPDATE sync.project SET common_code = 'y = 1' WHERE id = {p}"
    ))
    .await
    .unwrap();
    assert_eq!(version(&c).await, v2 + 1);
}
