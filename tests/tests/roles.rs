// The roles CREATE EXTENSION pg_sync creates, with SET ROLE: sync_user reads everything but secret
// values and writes nothing; sync_developer edits projects (not core_code, run_as,
// eval_context), tasks, triggers, params, texts and links but never secrets;
// sync_admin does everything.
use pg_sync_tests::*;

/// A project with one of everything, created as the superuser; returns the task id.
async fn fixture(c: &Client) -> i64 {
    c.batch_execute(
        "CREATE TABLE partner (id int PRIMARY KEY, name text);
         INSERT INTO partner SELECT g, 'p' || g FROM generate_series(1, 10) g;
         INSERT INTO sync.setting (key, value) VALUES ('base_url', 'http://example.test');
         INSERT INTO sync.project (name, core_code, common_code, run_as, eval_context)
             VALUES ('crm', 'core = 1', 'common = 1', 'postgres', '{}');
         INSERT INTO sync.project_secret (project_id, key, value)
             SELECT id, 'TOKEN', 's3cret' FROM sync.project;
         INSERT INTO sync.project_param (project_id, key, value)
             SELECT id, 'URL', 'http://x' FROM sync.project;
         INSERT INTO sync.project_text (project_id, key, value)
             SELECT id, 'HELLO', 'Hello' FROM sync.project;
         INSERT INTO sync.task (project_id, name, code) SELECT id, 'main', 'pass' FROM sync.project;
         INSERT INTO sync.cron_trigger (task_id, name, \"interval\") SELECT id, 'every_hour', '1 hour' FROM sync.task;
         INSERT INTO sync.webhook_trigger (task_id, name, signing_secret) SELECT id, 'hook', 'hmac-key' FROM sync.task;
         INSERT INTO sync.button_trigger (task_id, name) SELECT id, 'press' FROM sync.task;
         SELECT sync_set_link('partner', 'partner'::regclass, 1, 'A');",
    )
    .await
    .expect("fixture");
    scalar(c, "SELECT id FROM sync.task").await
}

/// Every table and view of schema sync, with one of its columns.
async fn sync_relations(c: &Client) -> Vec<(String, String, bool)> {
    c.query(
        "SELECT c.oid::regclass::text,
                (SELECT quote_ident(attname) FROM pg_attribute
                  WHERE attrelid = c.oid AND attnum = 1),
                c.relkind = 'v'
         FROM pg_class c WHERE c.relnamespace = 'sync'::regnamespace AND c.relkind IN ('r', 'p', 'v')
         ORDER BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

async fn ok(c: &Client, sql: &str) {
    if let Err(e) = c.batch_execute(sql).await {
        panic!("{sql}: {:?}", sqlstate(&e));
    }
}

#[tokio::test]
async fn roles_exist_and_inherit() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let chain: bool = scalar(
        &c,
        "SELECT pg_has_role('sync_admin', 'sync_developer', 'MEMBER')
            AND pg_has_role('sync_developer', 'sync_user', 'MEMBER')
            AND NOT pg_has_role('sync_user', 'sync_developer', 'MEMBER')
            AND NOT (SELECT rolcanlogin OR rolsuper FROM pg_roles WHERE rolname = 'sync_admin')",
    )
    .await;
    assert!(chain);
}

#[tokio::test]
async fn sync_user_reads_but_no_secret_values_and_writes_nothing() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let task = fixture(&c).await;
    let relations = sync_relations(&c).await;
    assert!(relations.len() >= 14, "{relations:?}");
    c.batch_execute("SET ROLE sync_user").await.unwrap();

    // Reads every table and view (but the executor login's password and the workers'
    // token hashes)...
    for (rel, _, _) in &relations {
        if rel == "sync.executor_credential" || rel == "sync.worker" {
            continue;
        }
        ok(&c, &format!("SELECT count(*) FROM {rel}")).await;
    }
    ok(&c, "SELECT id, project_id, key FROM sync.project_secret").await;
    ok(
        &c,
        "SELECT id, task_id, project_id, name, active, content_type FROM sync.webhook_trigger",
    )
    .await;
    ok(
        &c,
        "SELECT id, hostname, pid, version, started_at, last_seen, stopped_at FROM sync.worker",
    )
    .await;
    let code: String = scalar(&c, "SELECT core_code FROM sync.project").await;
    assert_eq!(code, "core = 1");
    // ...but no secret value.
    for sql in [
        "SELECT value FROM sync.project_secret",
        "SELECT * FROM sync.project_secret",
        "SELECT signing_secret FROM sync.webhook_trigger",
        "SELECT * FROM sync.webhook_trigger",
        "SELECT count(*) FROM sync.project_secret WHERE value LIKE 's%'",
        // A webhook's token is the credential of its URL.
        "SELECT token FROM sync.webhook_trigger",
        "SELECT sync_webhook_url('crm', 'hook')",
        "SELECT token_hash FROM sync.worker",
        "SELECT * FROM sync.executor_credential",
    ] {
        expect_error(&c, sql, "42501").await;
    }

    // Writes nothing: no INSERT, UPDATE, DELETE or TRUNCATE anywhere.
    for (rel, col, view) in &relations {
        if *view {
            continue;
        }
        for sql in [
            format!("INSERT INTO {rel} DEFAULT VALUES"),
            format!("UPDATE {rel} SET {col} = {col}"),
            format!("DELETE FROM {rel}"),
            format!("TRUNCATE {rel} CASCADE"),
        ] {
            expect_error(&c, &sql, "42501").await;
        }
    }
    // Link functions: reading yes, writing no.
    let n: i64 = scalar(
        &c,
        "SELECT count(*) FROM sync_search_links('partner', 'partner'::regclass)",
    )
    .await;
    assert_eq!(n, 1);
    let found: bool = scalar(&c, "SELECT sync_get_link('partner', 'A') IS NOT NULL").await;
    assert!(found);
    ok(
        &c,
        "SELECT * FROM sync_search_links('partner', '{\"__external__\": \"A\", \"public.partner\": null}'::jsonb)",
    )
    .await;
    for sql in [
        "SELECT sync_set_link('partner', 'partner'::regclass, 2, 'B')",
        "SELECT sync_set_link('partner', 'partner'::regclass, '2', 'B')",
        "SELECT sync_set_link('card', '{\"a\": \"1\", \"b\": \"2\"}'::jsonb)",
        "SELECT sync_update_links(ARRAY[1])",
        "SELECT sync_unlink(ARRAY[1])",
    ] {
        expect_error(&c, sql, "42501").await;
    }
    c.batch_execute("RESET ROLE").await.unwrap();
    let still: i64 = scalar(
        &c,
        &format!("SELECT (SELECT count(*) FROM sync.link) + (SELECT count(*) FROM sync.task WHERE id = {task})"),
    )
    .await;
    assert_eq!(still, 2, "sync_user changed something");
}

#[tokio::test]
async fn roles_without_sync_roles_see_nothing() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    fixture(&c).await;
    // Roles are cluster-wide: an earlier run on this cluster may have made it.
    c.batch_execute(
        "DO $$ BEGIN CREATE ROLE outsider; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
                     GRANT SELECT ON partner TO outsider; SET ROLE outsider",
    )
    .await
    .unwrap();
    for sql in [
        "SELECT count(*) FROM sync.project",
        "SELECT count(*) FROM sync_search_links('partner', 'partner'::regclass)",
        "SELECT sync_get_link('partner', 'A')",
        "SELECT sync_set_link('partner', 'partner'::regclass, 2, 'B')",
    ] {
        expect_error(&c, sql, "42501").await;
    }
}

#[tokio::test]
async fn sync_developer_edits_projects_tasks_triggers_params_texts_and_links() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let task = fixture(&c).await;
    c.batch_execute(
        "CREATE TABLE watched (id int PRIMARY KEY, state text);
         GRANT SELECT ON partner TO sync_developer;
         -- Watching a table with a db trigger needs the TRIGGER privilege on it.
         GRANT TRIGGER ON watched TO sync_developer;
         SET ROLE sync_developer",
    )
    .await
    .unwrap();

    // Projects: name, active, common_code; not core_code, run_as or eval_context.
    ok(
        &c,
        "INSERT INTO sync.project (name, active, common_code) VALUES ('dev', true, 'x = 1')",
    )
    .await;
    let version: i64 = scalar(&c, "SELECT version FROM sync.project WHERE name = 'crm'").await;
    ok(
        &c,
        "UPDATE sync.project SET common_code = 'y = 2', active = true WHERE name = 'crm'",
    )
    .await;
    let after: i64 = scalar(&c, "SELECT version FROM sync.project WHERE name = 'crm'").await;
    assert_eq!(after, version + 1, "the version bump works for developers");
    for sql in [
        "UPDATE sync.project SET core_code = 'evil()'",
        "UPDATE sync.project SET run_as = 'postgres'",
        "UPDATE sync.project SET eval_context = '{odoo}'",
        "INSERT INTO sync.project (name, core_code) VALUES ('x', 'evil()')",
        "INSERT INTO sync.project (name, run_as) VALUES ('y', 'postgres')",
        "UPDATE sync.project SET version = 1",
    ] {
        expect_error(&c, sql, "42501").await;
    }

    // Params, texts, tasks.
    ok(&c, "INSERT INTO sync.project_param (project_id, key, initial_value) SELECT id, 'LIMIT', '10' FROM sync.project WHERE name = 'crm'").await;
    ok(
        &c,
        "UPDATE sync.project_param SET value = '20' WHERE key = 'LIMIT'",
    )
    .await;
    ok(&c, "DELETE FROM sync.project_param WHERE key = 'URL'").await;
    ok(&c, "INSERT INTO sync.project_text (project_id, key, lang, value) SELECT id, 'HELLO', 'fr_FR', 'Bonjour' FROM sync.project WHERE name = 'crm'").await;
    ok(
        &c,
        "UPDATE sync.project_text SET value = 'Hi' WHERE key = 'HELLO' AND lang = 'en_US'",
    )
    .await;
    ok(&c, "DELETE FROM sync.project_text WHERE lang = 'fr_FR'").await;
    ok(&c, "INSERT INTO sync.task (project_id, name, code) SELECT id, 'second', 'pass' FROM sync.project WHERE name = 'crm'").await;
    ok(
        &c,
        &format!("UPDATE sync.task SET code = 'def handle_cron(): pass' WHERE id = {task}"),
    )
    .await;
    ok(&c, "DELETE FROM sync.task WHERE name = 'second'").await;

    // Triggers of every kind; the name registry follows (maintained for them).
    ok(&c, &format!("INSERT INTO sync.cron_trigger (task_id, name, \"interval\") VALUES ({task}, 'nightly', '1 day')")).await;
    ok(&c, "UPDATE sync.cron_trigger SET \"interval\" = '2 days', active = false, calls_left = 3 WHERE name = 'nightly'").await;
    // A schedule in a zone: the check runs the cron functions as the developer.
    ok(&c, "UPDATE sync.cron_trigger SET \"interval\" = NULL, schedule = '0 2 * * *', timezone = 'Europe/Berlin' WHERE name = 'nightly'").await;
    ok(
        &c,
        &format!("INSERT INTO sync.button_trigger (task_id, name) VALUES ({task}, 'sync_now')"),
    )
    .await;
    ok(
        &c,
        "UPDATE sync.button_trigger SET name = 'sync_all' WHERE name = 'sync_now'",
    )
    .await;
    ok(&c, &format!("INSERT INTO sync.webhook_trigger (task_id, name, content_type) VALUES ({task}, 'incoming', 'form')")).await;
    ok(
        &c,
        "UPDATE sync.webhook_trigger SET active = false WHERE name = 'incoming'",
    )
    .await;
    ok(&c, &format!("INSERT INTO sync.db_trigger (task_id, name, table_name, event) VALUES ({task}, 'on_watched', 'watched', 'create')")).await;
    ok(
        &c,
        "UPDATE sync.db_trigger SET active = false WHERE name = 'on_watched'",
    )
    .await;
    let names: Vec<String> = c
        .query(
            "SELECT kind || ':' || name FROM sync.trigger_name ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        names,
        vec![
            "button:press",
            "button:sync_all",
            "cron:every_hour",
            "cron:nightly",
            "db:on_watched",
            "webhook:hook",
            "webhook:incoming"
        ]
    );
    ok(&c, "DELETE FROM sync.cron_trigger WHERE name = 'nightly'; DELETE FROM sync.button_trigger WHERE name = 'sync_all'; DELETE FROM sync.webhook_trigger WHERE name = 'incoming'; DELETE FROM sync.db_trigger WHERE name = 'on_watched'").await;
    let n: i64 = scalar(&c, "SELECT count(*) FROM sync.trigger_name").await;
    assert_eq!(n, 3);
    for sql in [
        "UPDATE sync.cron_trigger SET run_as = 'postgres'",
        &format!("INSERT INTO sync.cron_trigger (task_id, name, \"interval\", run_as) VALUES ({task}, 'c2', '1 day', 'postgres')"),
        "UPDATE sync.webhook_trigger SET signing_secret = 'mine'",
        &format!("INSERT INTO sync.webhook_trigger (task_id, name, signing_secret) VALUES ({task}, 'w2', 'k')"),
        "INSERT INTO sync.trigger_name (project_id, name, kind, trigger_id) VALUES (1, 'x', 'cron', 99)",
        "DELETE FROM sync.trigger_name",
    ] {
        expect_error(&c, sql, "42501").await;
    }

    // Secrets: neither read nor written.
    for sql in [
        "SELECT value FROM sync.project_secret",
        "SELECT signing_secret FROM sync.webhook_trigger",
        "INSERT INTO sync.project_secret (project_id, key, value) SELECT id, 'K', 'v' FROM sync.project WHERE name = 'crm'",
        "UPDATE sync.project_secret SET value = 'stolen'",
        "DELETE FROM sync.project_secret",
    ] {
        expect_error(&c, sql, "42501").await;
    }
    // Nor settings, workers, logs.
    for sql in [
        "INSERT INTO sync.setting (key, value) VALUES ('x', 'y')",
        "UPDATE sync.setting SET value = 'http://evil'",
        "DELETE FROM sync.worker",
        "DELETE FROM sync.log",
        "TRUNCATE sync.task CASCADE",
    ] {
        expect_error(&c, sql, "42501").await;
    }

    // Links through the functions and directly.
    let id: i64 = scalar(
        &c,
        "SELECT id FROM sync_set_link('partner', 'partner'::regclass, 2, 'B')",
    )
    .await;
    scalar::<i64>(&c, &format!("SELECT sync_update_links(ARRAY[{id}])")).await;
    ok(
        &c,
        "SELECT sync_set_link('card', '{\"github\": \"1\", \"trello\": \"x\"}'::jsonb)",
    )
    .await;
    assert_eq!(
        scalar::<i64>(&c, &format!("SELECT sync_unlink(ARRAY[{id}])")).await,
        1
    );
    ok(&c, "INSERT INTO sync.link (relation, system1, ref1, system2, ref2) VALUES ('m', 'a', '1', 'b', '2')").await;
    ok(
        &c,
        "UPDATE sync.link SET sync_date = now() WHERE relation = 'm'",
    )
    .await;
    ok(&c, "DELETE FROM sync.link WHERE relation = 'm'").await;
    // Linking rows of a table the developer may not read is refused.
    expect_error(
        &c,
        "SELECT sync_set_link('w', 'watched'::regclass, 1, 'W')",
        "42501",
    )
    .await;

    // Deleting a project (its secrets go with it: the cascade is the owner's doing).
    ok(&c, "DELETE FROM sync.project WHERE name = 'dev'").await;
    c.batch_execute("RESET ROLE").await.unwrap();
    let left: String = scalar(
        &c,
        "SELECT core_code || '|' || coalesce(run_as::text, '') || '|' || common_code FROM sync.project WHERE name = 'crm'",
    )
    .await;
    assert_eq!(left, "core = 1|postgres|y = 2");
    let secret: String = scalar(&c, "SELECT value FROM sync.project_secret").await;
    assert_eq!(secret, "s3cret");
}

#[tokio::test]
async fn sync_admin_does_everything() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let task = fixture(&c).await;
    let relations = sync_relations(&c).await;
    c.batch_execute("GRANT SELECT ON partner TO sync_admin; SET ROLE sync_admin")
        .await
        .unwrap();
    for (rel, _, _) in &relations {
        // Only the extension's owner reads the executor login's password.
        if rel == "sync.executor_credential" {
            expect_error(&c, &format!("SELECT * FROM {rel}"), "42501").await;
            continue;
        }
        ok(&c, &format!("SELECT * FROM {rel}")).await;
    }
    let secret: String = scalar(&c, "SELECT value FROM sync.project_secret").await;
    assert_eq!(secret, "s3cret");
    let signing: String = scalar(&c, "SELECT signing_secret FROM sync.webhook_trigger").await;
    assert_eq!(signing, "hmac-key");
    for sql in [
        "UPDATE sync.project SET core_code = 'core = 2', run_as = 'sync_user', eval_context = '{odoo}'",
        "INSERT INTO sync.project (name, core_code, run_as) VALUES ('admin', 'c', 'sync_user')",
        "INSERT INTO sync.project_secret (project_id, key, value) SELECT id, 'PASSWORD', 'pw' FROM sync.project WHERE name = 'crm'",
        "UPDATE sync.project_secret SET value = 'rotated' WHERE key = 'TOKEN'",
        "DELETE FROM sync.project_secret WHERE key = 'PASSWORD'",
        "UPDATE sync.webhook_trigger SET signing_secret = 'new-key'",
        "UPDATE sync.cron_trigger SET run_as = 'sync_user'",
        "INSERT INTO sync.setting (key, value) VALUES ('db_trigger_chunk_size', '500')",
        "UPDATE sync.setting SET value = 'http://other.test' WHERE key = 'base_url'",
        "SELECT sync_set_link('partner', 'partner'::regclass, 3, 'C')",
        "SELECT sync_unlink(ARRAY(SELECT id FROM sync.link))",
        "DELETE FROM sync.log",
    ] {
        ok(&c, sql).await;
    }
    ok(
        &c,
        &format!("UPDATE sync.task SET code = 'x' WHERE id = {task}"),
    )
    .await;
    ok(&c, "TRUNCATE sync.link").await;
    ok(&c, "DELETE FROM sync.project").await;
    c.batch_execute("RESET ROLE").await.unwrap();
    let n: i64 = scalar(
        &c,
        "SELECT (SELECT count(*) FROM sync.project) + (SELECT count(*) FROM sync.project_secret) + (SELECT count(*) FROM sync.task)",
    )
    .await;
    assert_eq!(n, 0);
}

#[tokio::test]
async fn create_extension_in_two_databases_at_once() {
    // Roles belong to the cluster. On a fresh cluster, database a creates them in an
    // open transaction; database b's CREATE EXTENSION waits for it and, once a
    // commits, must find them instead of failing on a duplicate role.
    let cluster = Cluster::start();
    let admin = connect(&cluster.url("postgres")).await;
    for name in ["a", "b"] {
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
    }
    let a = connect(&cluster.url("a")).await;
    let b = connect(&cluster.url("b")).await;
    a.batch_execute("BEGIN; CREATE EXTENSION pg_sync")
        .await
        .unwrap();
    let pid: i32 = scalar(&b, "SELECT pg_backend_pid()").await;
    let second = tokio::spawn(async move {
        let r = b.batch_execute("CREATE EXTENSION pg_sync").await;
        (b, r)
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: bool = admin
            .query_one(
                "SELECT coalesce(bool_or(wait_event_type = 'Lock'), false) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if waiting {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "database b never waited for a"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    a.batch_execute("COMMIT").await.unwrap();
    let (b, r) = second.await.unwrap();
    if let Err(e) = r {
        panic!("CREATE EXTENSION in b: {:?}", sqlstate(&e));
    }
    let n: i64 = scalar(
        &b,
        "SELECT count(*) FROM pg_roles WHERE rolname IN ('sync_user', 'sync_developer', 'sync_admin')",
    )
    .await;
    assert_eq!(n, 3);
    let member: bool = scalar(
        &b,
        "SELECT pg_has_role('sync_admin', 'sync_user', 'MEMBER')",
    )
    .await;
    assert!(member);
}

#[tokio::test]
async fn installs_in_many_databases_at_once_never_collide_on_roles() {
    // Roles are cluster-wide: installs and reinstalls racing in six databases once
    // failed with "tuple concurrently updated" on ALTER ROLE sync_executor.
    let cluster = Cluster::start();
    let admin = connect(&cluster.url("postgres")).await;
    let names: Vec<String> = (0..6).map(|i| format!("race{i}")).collect();
    for name in &names {
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
    }
    let mut clients = Vec::new();
    for name in &names {
        clients.push(connect(&cluster.url(name)).await);
    }
    for round in 0..4 {
        let sql = if round == 0 {
            "CREATE EXTENSION pg_sync"
        } else {
            "DROP EXTENSION pg_sync; CREATE EXTENSION pg_sync"
        };
        let runs = clients.iter().map(|c| c.batch_execute(sql));
        for (i, r) in futures_util::future::join_all(runs)
            .await
            .into_iter()
            .enumerate()
        {
            if let Err(e) = r {
                panic!("round {round}, database race{i}: {e:?}");
            }
        }
    }
}
