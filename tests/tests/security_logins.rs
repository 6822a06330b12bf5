// The worker's logins: a production setup with two logins of its own runs jobs; an
// executor login that may do more than run task code, a worker login that may not run
// the queue, and an empty admin token are refused at start (and by --check).
use pg_sync_tests::python::worker_bin;
use pg_sync_tests::*;
use serde_json::json;
use std::process::Command;

fn check(url: &str, extra: &[&str]) -> (i32, String) {
    let out = Command::new(worker_bin())
        .args([
            "--database-url",
            url,
            "--webhook-listen",
            "off",
            "--admin-listen",
            "off",
        ])
        .args(extra)
        .arg("--check")
        .output()
        .expect("sync_worker --check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn login_url(db: &TestDb, login: &str) -> String {
    db.url.replacen("postgres@", &format!("{login}@"), 1)
}

#[tokio::test]
async fn two_logins_of_the_operators_own_run_jobs() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    exec(
        &c,
        "DO $$ BEGIN
             CREATE ROLE ops_worker LOGIN IN ROLE sync_worker;
         EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         DO $$ BEGIN
             CREATE ROLE ops_exec LOGIN IN ROLE sync_executor;
         EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         CREATE ROLE ops_run NOLOGIN;
         CREATE TABLE t (n int); GRANT ALL ON t TO ops_run;",
    )
    .await;
    exec(
        &c,
        "INSERT INTO sync.project (name, active, run_as) VALUES ('ops', true, 'ops_run');
         INSERT INTO sync.task (project_id, name, code)
             SELECT id, 'main', E'def work():\\n    db.execute(\"INSERT INTO t VALUES (1)\")\\n    return db.query_one(\"SELECT current_user::text AS u\").u\\n'
             FROM sync.project;",
    )
    .await;
    let worker_url = login_url(&db, "ops_worker");
    let exec_url = login_url(&db, "ops_exec");
    let (code, out) = check(&worker_url, &["--executor-database-url", &exec_url]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("executor login"), "{out}");
    let job: i64 = scalar(
        &c,
        "SELECT sync.add_job(project_id, id, 'work') FROM sync.task",
    )
    .await;
    let _w = WorkerProcess::start(
        &worker_url,
        &["--executors", "1", "--executor-database-url", &exec_url],
    );
    let report = pg_sync_tests::python::wait_job(&c, job).await;
    assert_eq!(report["state"], "done", "{report}");
    assert_eq!(report["result"], json!("ops_run"));
}

#[tokio::test]
async fn logins_with_too_many_rights_are_refused() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    // The executors may not log in as a superuser...
    let (code, out) = check(&db.url, &["--executor-database-url", &db.url]);
    assert_eq!(code, 78, "{out}");
    assert!(
        out.contains("executor_database_url") && out.contains("is a superuser"),
        "{out}"
    );
    // ...nor as a login with more memberships than sync_executor.
    exec(
        &c,
        "DO $$ BEGIN
             CREATE ROLE wide_exec LOGIN IN ROLE sync_executor, sync_user;
         EXCEPTION WHEN duplicate_object THEN NULL; END $$;",
    )
    .await;
    let (code, out) = check(
        &db.url,
        &["--executor-database-url", &login_url(&db, "wide_exec")],
    );
    assert_eq!(code, 78, "{out}");
    assert!(
        out.contains("member of roles besides sync_executor"),
        "{out}"
    );
    // The worker's own login must be able to run the queue.
    exec(
        &c,
        "DO $$ BEGIN CREATE ROLE plain_login LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;",
    )
    .await;
    let (code, out) = check(&login_url(&db, "plain_login"), &[]);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("GRANT sync_worker TO plain_login"), "{out}");
    // An empty admin token would mean no authentication: refused, naming the setting.
    let (code, out) = check(&db.url, &["--admin-token", ""]);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("admin_token: is empty"), "{out}");
}
