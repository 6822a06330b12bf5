// Upgrades: install the previous release (its install script is kept in
// pg_sync/sql/released/), fill it with every kind of object, run ALTER EXTENSION
// pg_sync UPDATE, and check that nothing was lost, that installed triggers fire and
// pending jobs run, and that the catalog equals a fresh install's, line by line.
use pg_sync_tests::catalog::{difference, picture};
use pg_sync_tests::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const PREVIOUS: &str = "0.1.0";

/// A new database with pg_sync at `version` (no CREATE EXTENSION of the default).
async fn database_at(version: &str) -> (TestDb, Client) {
    let db = TestDb::new().await;
    let c = db.connect().await;
    exec(&c, "DROP EXTENSION pg_sync CASCADE").await;
    exec(&c, &format!("CREATE EXTENSION pg_sync VERSION '{version}'")).await;
    (db, c)
}

async fn extversion(c: &Client) -> String {
    scalar(
        c,
        "SELECT extversion FROM pg_extension WHERE extname = 'pg_sync'",
    )
    .await
}

/// Every kind of object 0.1.0 holds, made through its own tables and functions:
/// a project with params, texts and secrets; a task; one trigger of each kind (the db
/// trigger installs a PostgreSQL trigger on `partner`); a link; pending, running (for a
/// worker that is gone), done and failed jobs; log lines.
const FILL_0_1_0: &str = r#"
CREATE TABLE partner (id bigint PRIMARY KEY, name text);
CREATE TABLE seen (n bigint);
INSERT INTO partner VALUES (1, 'Ada');
DO $$ BEGIN
    CREATE ROLE upgrade_runner NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;
GRANT SELECT ON partner TO upgrade_runner;
GRANT INSERT ON seen TO upgrade_runner;
INSERT INTO sync.project (id, name, active, core_code, common_code, run_as)
VALUES (1, 'shop', true, 'CORE = 1', E'def helper():\n    return 2\n', 'upgrade_runner');
INSERT INTO sync.project_param (project_id, key, value, initial_value, description)
VALUES (1, 'API_URL', 'https://api.example.com', 'https://example.com', 'where the API lives');
INSERT INTO sync.project_text (project_id, key, lang, value) VALUES (1, 'HELLO', 'fr_FR', 'Bonjour');
INSERT INTO sync.project_secret (project_id, key, value) VALUES (1, 'TOKEN', 's3cret-value');
INSERT INTO sync.task (id, project_id, name, code, time_limit) VALUES (1, 1, 'main', $code$
def work(n):
    db.execute("INSERT INTO seen VALUES ($1)", n)
    return n

def handle_db(records):
    for r in records:
        db.execute("INSERT INTO seen VALUES ($1)", 1000 + r.id)
$code$, '5 minutes');
INSERT INTO sync.cron_trigger (task_id, project_id, name, "interval", next_run_at)
VALUES (1, 1, 'nightly', '1 day', now() + interval '1 year');
INSERT INTO sync.db_trigger (task_id, project_id, name, table_name, event)
VALUES (1, 1, 'on_partner', 'partner', 'create');
INSERT INTO sync.webhook_trigger (task_id, project_id, name, token)
VALUES (1, 1, 'hook', 'tok_0123456789abcdef');
INSERT INTO sync.button_trigger (task_id, project_id, name, description)
VALUES (1, 1, 'press', 'Press me');
SELECT sync_set_link('partner', 'partner'::regclass, 1, 'ext-1');
INSERT INTO sync.worker (id, hostname, pid, version) VALUES (77, 'old-host', 4242, '0.1.0');
INSERT INTO sync.job (id, project_id, task_id, trigger_kind, handler, args, state)
VALUES (11, 1, 1, 'job', 'work', '{"args": [11]}', 'pending');
INSERT INTO sync.job (id, project_id, task_id, trigger_kind, handler, args, state, worker, started_at)
VALUES (12, 1, 1, 'job', 'work', '{"args": [12]}', 'running', 77, now() - interval '1 minute');
INSERT INTO sync.job (id, project_id, task_id, trigger_kind, handler, args, state, attempts,
                      result, started_at, finished_at)
VALUES (13, 1, 1, 'job', 'work', '{"args": [13]}', 'done', 1, '13',
        now() - interval '2 minutes', now() - interval '119 seconds');
INSERT INTO sync.job (id, project_id, task_id, trigger_kind, handler, args, state, attempts,
                      error, started_at, finished_at)
VALUES (14, 1, 1, 'cron', 'work', '{"args": [14]}', 'failed', 1, 'ValueError: no',
        now() - interval '3 minutes', now() - interval '179 seconds');
SELECT setval(pg_get_serial_sequence('sync.job', 'id'), 100);
INSERT INTO sync.log (created_at, project_id, task_id, trigger_name, job_id, job_started_at, level, message)
SELECT j.started_at + l.after, 1, 1, NULL, j.id, j.started_at, l.level, l.message
FROM sync.job j,
     (VALUES (13, '0 s'::interval, 'info', 'job started: work() of task main (try 1)'),
             (13, '0.5 s', 'info', 'fetched 3 partners'),
             (13, '1 s', 'info', 'job done'),
             (14, '0 s', 'info', 'job started: work() of task main (try 1)'),
             (14, '1 s', 'error', 'job failed: ValueError: no')) AS l(job, after, level, message)
WHERE j.id = l.job;
"#;

/// The tables 0.1.0 has, and the order their rows are compared in.
const TABLES: &[(&str, &str)] = &[
    ("sync.setting", "key"),
    ("sync.project", "id"),
    ("sync.project_param", "id"),
    ("sync.project_text", "id"),
    ("sync.project_secret", "id"),
    ("sync.task", "id"),
    ("sync.trigger_name", "project_id, name"),
    ("sync.cron_trigger", "id"),
    ("sync.db_trigger", "id"),
    ("sync.webhook_trigger", "id"),
    ("sync.button_trigger", "id"),
    ("sync.link", "id"),
    ("sync.worker", "id"),
    ("sync.job", "id"),
    ("sync.log", "id"),
];

/// Each table's rows as JSON objects.
async fn rows(c: &Client) -> BTreeMap<&'static str, Vec<Value>> {
    let mut out = BTreeMap::new();
    for (table, order) in TABLES {
        let v: Value = scalar(
            c,
            &format!(
                "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY {order}), '[]') FROM {table} t"
            ),
        )
        .await;
        out.insert(*table, v.as_array().cloned().unwrap_or_default());
    }
    out
}

/// The 0.1.0 boilerplate lines of a done job, which 0.2.0 derives in sync.log_view
/// instead of storing (the upgrade deletes them; the CHANGELOG says so).
fn derived_in_0_2(row: &Value) -> bool {
    row["job_id"] == 13
        && matches!(row["message"].as_str(), Some(m) if m == "job done" || m.starts_with("job started: "))
}

#[tokio::test]
async fn an_upgrade_keeps_every_row_installed_triggers_fire_and_pending_jobs_run() {
    let (db, c) = database_at(PREVIOUS).await;
    c.batch_execute(FILL_0_1_0).await.expect("fill 0.1.0");
    let installed: i64 = scalar(
        &c,
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'partner'::regclass AND NOT tgisinternal",
    )
    .await;
    assert!(installed >= 1, "0.1.0 installed no trigger on partner");
    let before = rows(&c).await;

    exec(&c, "ALTER EXTENSION pg_sync UPDATE").await;
    assert_ne!(extversion(&c).await, PREVIOUS);

    // Nothing lost: every 0.1.0 row is still there with every column's value (new
    // columns may be added).
    let after = rows(&c).await;
    for (table, old_rows) in &before {
        let kept: Vec<&Value> = old_rows
            .iter()
            .filter(|r| !(*table == "sync.log" && derived_in_0_2(r)))
            .collect();
        let new_rows = &after[table];
        assert_eq!(
            kept.len(),
            new_rows.len(),
            "{table}: row count changed\nbefore: {kept:#?}\nafter: {new_rows:#?}"
        );
        for (old, new) in kept.iter().zip(new_rows) {
            for (col, value) in old.as_object().expect("row object") {
                // A job 0.1.0 left running (its worker gone) is pending again: 0.2 queues
                // pending jobs only, and its claims are no committed state.
                if *table == "sync.job" && col == "state" && value == "running" {
                    assert_eq!(new[col], "pending", "a running 0.1.0 job: {old}");
                    continue;
                }
                assert_eq!(&new[col], value, "{table}.{col} changed in row {old}");
            }
        }
    }
    assert!(!before["sync.project_secret"].is_empty() && !before["sync.job"].is_empty());
    // The deleted boilerplate lines are shown again, derived from the job.
    let derived: Vec<String> = c
        .query(
            "SELECT message FROM sync.log_view WHERE job_id = 13 ORDER BY created_at, id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(derived.len(), 3, "{derived:?}");
    assert!(derived[0].starts_with("job started: work()"), "{derived:?}");
    assert_eq!(derived[1], "fetched 3 partners");
    assert!(derived[2].starts_with("job done"), "{derived:?}");

    // The PostgreSQL trigger 0.1.0 installed still fires, into 0.2.0's queue.
    exec(&c, "INSERT INTO partner VALUES (2, 'Grace')").await;
    let db_jobs: i64 = scalar(
        &c,
        "SELECT count(*) FROM sync.job WHERE trigger_kind = 'db' AND trigger_name = 'on_partner'",
    )
    .await;
    assert_eq!(db_jobs, 1, "the installed trigger did not queue a job");

    // A worker of the new version runs the pending job, the db job, and the job the
    // gone 0.1 worker had claimed.
    let _w = WorkerProcess::start(&db.url, &["--base-url", "http://127.0.0.1:9"]);
    wait_for("the old jobs to run", Duration::from_secs(60), || async {
        let left: i64 = scalar(
            &c,
            "SELECT count(*) FROM sync.job WHERE state IN ('pending', 'running')",
        )
        .await;
        left == 0
    })
    .await;
    let states: Vec<(i64, String)> = c
        .query(
            "SELECT id, state FROM sync.job WHERE id < 100 ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        states,
        vec![
            (11, "done".into()),
            (12, "done".into()),
            (13, "done".into()),
            (14, "failed".into())
        ]
    );
    let seen: Vec<i64> = c
        .query("SELECT n FROM seen ORDER BY n", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, vec![11, 12, 1002]);
}

#[tokio::test]
async fn an_upgrade_with_a_worker_running_stops_and_changes_nothing() {
    let (db, c) = database_at(PREVIOUS).await;
    c.batch_execute(FILL_0_1_0).await.expect("fill 0.1.0");
    let before = picture(&c).await;
    // A live 0.1 worker holds its advisory lock on its control connection.
    let old_worker = db.connect().await;
    exec(
        &old_worker,
        "SELECT pg_advisory_lock(sync.worker_lock_class(), 77)",
    )
    .await;

    let message = expect_error(&c, "ALTER EXTENSION pg_sync UPDATE", "55006").await;
    assert!(
        message.contains("while workers are running") && message.contains("77 on old-host"),
        "{message}"
    );
    assert_eq!(extversion(&c).await, PREVIOUS);
    let (added, removed) = difference(&picture(&c).await, &before);
    assert!(
        added.is_empty() && removed.is_empty(),
        "{added:?} {removed:?}"
    );

    // Once it stopped, the upgrade goes through.
    drop(old_worker);
    wait_for(
        "the old worker's lock to go",
        Duration::from_secs(10),
        || async {
            let live: i64 = scalar(&c, "SELECT count(*) FROM sync.live_workers()").await;
            live == 0
        },
    )
    .await;
    exec(&c, "ALTER EXTENSION pg_sync UPDATE").await;
    assert_ne!(extversion(&c).await, PREVIOUS);
}

#[tokio::test]
async fn a_worker_refuses_an_extension_of_another_minor_version() {
    let (db, _c) = database_at(PREVIOUS).await;
    let mut w = WorkerProcess::start(&db.url, &[]);
    let status = w
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the worker should refuse to start");
    assert!(!status.success());
    let out = w.output();
    assert!(
        out.contains(&format!("the database has pg_sync {PREVIOUS}"))
            && out.contains("ALTER EXTENSION pg_sync UPDATE"),
        "{out}"
    );
}

#[tokio::test]
async fn an_upgraded_database_has_the_catalog_of_a_fresh_install() {
    let fresh = TestDb::new().await;
    let f = fresh.connect().await;
    let current = extversion(&f).await;
    assert_ne!(
        current, PREVIOUS,
        "bump the version in Cargo.toml before changing the schema"
    );
    let (_db, c) = database_at(PREVIOUS).await;
    exec(&c, "ALTER EXTENSION pg_sync UPDATE").await;
    assert_eq!(extversion(&c).await, current);
    let reported: String = scalar(&c, "SELECT sync.version()").await;
    assert_eq!(reported, current);
    assert_eq!(
        reported,
        env!("CARGO_PKG_VERSION"),
        "sync_worker --version and sync.version() differ"
    );
    let (only_upgraded, only_fresh) = difference(&picture(&c).await, &picture(&f).await);
    assert!(
        only_upgraded.is_empty() && only_fresh.is_empty(),
        "the upgrade script and the install script disagree\n--- only after the upgrade:\n{}\n--- only in a fresh install:\n{}",
        only_upgraded.join("\n"),
        only_fresh.join("\n")
    );
}
