// Attacks by task code on a worker started with a superuser URL (as scripts/demo.sh
// starts it): reading secrets through the executor's login, reaching the superuser, the
// host or admin code, escaping run_as. Each test asserts refusal and that nothing leaked.
use pg_sync_tests::python::PyProject;
use pg_sync_tests::{scalar, wait_for};
use serde_json::{json, Value};
use std::time::Duration;

const SECRET_A: &str = "TOPSECRET-aaaa-1111";
const SECRET_B: &str = "TOPSECRET-bbbb-2222";

/// Two projects with secrets; the attacker's task code runs in the first.
async fn victim_and_attacker() -> PyProject {
    let p = PyProject::new("attacker").await;
    p.sql(&format!(
        "INSERT INTO sync.project_secret (project_id, key, value) VALUES ({id}, 'TOKEN', '{SECRET_A}');
         INSERT INTO sync.project (name, active, core_code) VALUES ('victim', true, 'x = 1');
         INSERT INTO sync.project_secret (project_id, key, value)
             SELECT id, 'TOKEN', '{SECRET_B}' FROM sync.project WHERE name = 'victim';",
        id = p.id
    ))
    .await;
    p
}

/// Everything the job left behind, as one text: result, error and log lines.
async fn traces(p: &PyProject, job: i64) -> String {
    let row = p
        .client
        .query_one(
            "SELECT coalesce(result::text, '') || coalesce(error, '') FROM sync.job WHERE id = $1",
            &[&job],
        )
        .await
        .expect("job");
    let mut all: String = row.get(0);
    for (_, _, recipient, message) in p.logs(job).await {
        all.push_str(&recipient.unwrap_or_default());
        all.push_str(&message);
    }
    all
}

/// Each attempt runs in its own savepoint; the report maps its name to what it got.
const ATTACKS: &str = r#"
ATTEMPTS = {
    # The issue's reproduction: the role check runs after the statement, and
    # set_config('role', ...) inside it switches to the session's login and back.
    "flip_table_to_xml": ("SELECT concat(table_to_xml(CASE WHEN set_config('role','none',true) IS NOT NULL THEN 'sync.project_secret'::regclass END, true, false, ''), set_config('role', $1, true)) AS s", True),
    # The same data carried out in an error message.
    "flip_error_message": ("SELECT (SELECT string_agg(value, ',') FROM sync.project_secret WHERE set_config('role','none',true) IS NOT NULL)::int", False),
    # Superuser rights: password hashes and the server's files.
    "flip_pg_authid": ("SELECT concat(query_to_xml('SELECT rolname, rolpassword FROM pg_authid', true, false, '') , set_config('role', $1, true)) AS s FROM (SELECT set_config('role','none',true)) x", True),
    "flip_read_file": ("SELECT concat(pg_read_file('/etc/passwd'), set_config('role', $1, true)) FROM (SELECT set_config('role','none',true)) x", True),
    # Admin code: write a project's core_code, which would run on the worker's host.
    "flip_import_core_code": ("SELECT concat(sync_import_project('{\"pg_sync_export\": 1, \"name\": \"victim\", \"core_code\": \"import subprocess\"}'::jsonb, true), set_config('role', $1, true)) FROM (SELECT set_config('role','none',true)) x", True),
    # The batch functions without the worker's token.
    "flip_batch_finish": ("SELECT concat(sync.batch_finish(1, 'guess', ARRAY[1], ARRAY['done'], ARRAY[NULL], ARRAY[NULL]::jsonb[], ARRAY[false], '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}'), set_config('role', $1, true)) FROM (SELECT set_config('role','none',true)) x", True),
    # A log line forged into another job, as the executor login without the token.
    "flip_job_log": ("SELECT concat(sync.job_log(1, 'guess', ARRAY[1::bigint], ARRAY[now()], ARRAY[now()], ARRAY['info'], ARRAY['message'], ARRAY[NULL::text], ARRAY['forged']), set_config('role', $1, true)) FROM (SELECT set_config('role','none',true)) x", True),
    # Other roles: the superuser, a pg_sync admin role.
    "set_role_postgres": ("SELECT concat(set_config('role', 'postgres', true), (SELECT string_agg(value, ',') FROM sync.project_secret), set_config('role', $1, true))", True),
    "set_role_sync_admin": ("SELECT concat(set_config('role', 'sync_admin', true), (SELECT string_agg(value, ',') FROM sync.project_secret), set_config('role', $1, true))", True),
    # Directly, as run_as.
    "direct_secrets": ("SELECT string_agg(value, ',') FROM sync.project_secret", False),
    "direct_core_code": ("UPDATE sync.project SET core_code = 'import os' WHERE name = 'victim'", False),
    "direct_project_runtime": ("SELECT sync.project_runtime(id)::text FROM sync.project", False),
}

def handle_button():
    report = {}
    for name, (sql, with_role) in ATTEMPTS.items():
        try:
            with db.savepoint():
                row = db.query_one(sql, user) if with_role else db.query_one(sql)
                report[name] = "GOT: %s" % (row[0] if row else None)
        except Exception as e:
            report[name] = "refused: %s" % e
    return report
"#;

#[tokio::test]
async fn task_code_cannot_reach_secrets_the_superuser_or_admin_code() {
    let p = victim_and_attacker().await;
    let task = p.task("attack", ATTACKS).await;
    // `user` in task code is the job's user; make it the run_as role for the flips.
    let job = p
        .job_with(
            task,
            "handle_button",
            Value::Null,
            "trigger_name, user_name",
            &format!("'b', '{}'", p.role),
        )
        .await;
    let report = p.run(job).await;
    let all = traces(&p, job).await;
    assert!(
        !all.contains("TOPSECRET") && !all.contains("SCRAM-SHA-256") && !all.contains("root:"),
        "something leaked: {all}"
    );
    // The job itself may end failed (a role switch stops it) or done; either way each
    // attempt must have been refused, never answered.
    if report["state"] == "done" {
        let got = &report["result"];
        for (name, outcome) in got.as_object().expect("a report") {
            let text = outcome.as_str().unwrap_or_default();
            assert!(text.starts_with("refused"), "{name}: {text}");
        }
        assert_eq!(got.as_object().unwrap().len(), 12, "{got}");
    } else {
        let error = report["error"].as_str().unwrap_or_default();
        assert!(error.contains("role"), "{report}");
    }
    let core: String = p
        .scalar("SELECT core_code FROM sync.project WHERE name = 'victim'")
        .await;
    assert_eq!(core, "x = 1", "admin code was changed");
}

/// The executor's own login holds nothing: a session of it sees no secret, writes no
/// table, cannot become a role that is not a valid run_as, and the batch functions
/// refuse it without the worker's token.
#[tokio::test]
async fn the_executor_login_can_do_nothing_but_become_run_as() {
    let p = victim_and_attacker().await;
    // A worker run enables the login and grants the run_as role.
    let task = p.task("t", "def work():\n    return 1\n").await;
    let job = p.job(task, "work", json!({})).await;
    assert_eq!(p.run(job).await["state"], "done");
    let exec = p.db.connect_as("sync_executor").await;
    for (sql, code) in [
        ("SELECT value FROM sync.project_secret", "42501"),
        ("SELECT count(*) FROM sync.job", "42501"),
        ("UPDATE sync.project SET core_code = 'evil'", "42501"),
        ("SELECT sync.project_runtime(1)", "42501"),
        ("SELECT sync.executor_login()", "42501"),
        (
            "SELECT * FROM sync.batch_lock(1, 'not-the-token', ARRAY[1::bigint], 0)",
            "42501",
        ),
        ("SELECT sync.batch_fail_job(1, 'x', 1, 'm')", "42501"),
        ("SELECT sync.batch_add_jobs(1, 'x', 1, '[]')", "42501"),
        (
            "SELECT sync.job_log(1, 'x', ARRAY[1::bigint], ARRAY[now()], ARRAY[now()], ARRAY['info'], ARRAY['message'], ARRAY[NULL::text], ARRAY['forged'])",
            "42501",
        ),
        ("SET ROLE postgres", "42501"),
        ("SET ROLE sync_admin", "42501"),
    ] {
        let e = exec.batch_execute(sql).await.expect_err(sql);
        assert_eq!(pg_sync_tests::sqlstate(&e).0, code, "{sql}: {e:?}");
    }
    exec.batch_execute(&format!("SET ROLE {}; RESET ROLE", p.role))
        .await
        .expect("it may become the run_as role");
}

#[tokio::test]
async fn run_as_roles_with_dangerous_rights_are_refused_and_revoked() {
    let p = PyProject::new("danger").await;
    let task = p
        .task(
            "t",
            "def work():\n    return db.query_one('SELECT 1 AS x').x\n",
        )
        .await;
    let job = p.job(task, "work", json!({})).await;
    assert_eq!(p.run(job).await["state"], "done");
    let member = |role: String| {
        let c = &p.client;
        async move {
            scalar::<bool>(
                c,
                &format!("SELECT pg_has_role('sync_executor', '{role}', 'MEMBER')"),
            )
            .await
        }
    };
    assert!(member(p.role.clone()).await);
    // The role later gets the right to read the server's files: it stops being a valid
    // run_as, jobs may not use the database as it, and sync_executor loses it.
    p.sql(&format!("GRANT pg_read_server_files TO {}", p.role))
        .await;
    let job = p.job(task, "work", json!({})).await;
    let report = p.run(job).await;
    assert_eq!(report["state"], "failed", "{report}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(error.contains("pg_read_server_files"), "{error}");
    wait_for(
        "the membership to be revoked",
        Duration::from_secs(10),
        || async { !member(p.role.clone()).await },
    )
    .await;
    // A superuser run_as is refused the same way.
    p.sql(&format!(
        "REVOKE pg_read_server_files FROM {r}; ALTER ROLE {r} SUPERUSER",
        r = p.role
    ))
    .await;
    let job = p.job(task, "work", json!({})).await;
    let report = p.run(job).await;
    assert!(
        report["error"]
            .as_str()
            .unwrap_or_default()
            .contains("is a superuser"),
        "{report}"
    );
    assert!(!member(p.role.clone()).await);
}

#[tokio::test]
async fn every_secret_value_is_masked_in_logs_errors_and_results() {
    let p = PyProject::new("masking").await;
    p.sql(&format!(
        "INSERT INTO sync.project_secret (project_id, key, value) VALUES
             ({id}, 'API_KEY', 'k3y/with space&more'), ({id}, 'OTHER', 'zzOTHERzz');",
        id = p.id
    ))
    .await;
    // Admin code that mishandles secrets: logs them, returns them, raises with them.
    p.set(
        "core_code",
        "def leak():\n    return secrets.API_KEY\n\ndef leak_other():\n    return secrets.OTHER\n",
    )
    .await;
    let task = p
        .task(
            "t",
            r#"
def work(how):
    k = leak()
    log("key is %s" % k)
    log_transmission("https://api.example.com/?key=" + url_quote(k), "body " + k)
    if how == "raise":
        raise ValueError("bad key " + k + " and " + leak_other())
    return {"key": k, k: [k, json.dumps({"k": k})]}

def url_quote(s):
    return s.replace("/", "%2F").replace(" ", "+").replace("&", "%26")
"#,
        )
        .await;
    for how in ["return", "raise"] {
        let job = p.job(task, "work", json!({"args": [how]})).await;
        let report = p.run(job).await;
        let all = traces(&p, job).await;
        assert!(
            !all.contains("k3y") && !all.contains("zzOTHERzz"),
            "{how}: a secret leaked: {all}"
        );
        assert!(all.contains("***"), "{how}: nothing masked? {all}");
        if how == "return" {
            assert_eq!(report["state"], "done", "{report}");
            assert_eq!(report["result"]["key"], "***");
        } else {
            assert_eq!(report["state"], "failed", "{report}");
        }
    }
}

#[tokio::test]
async fn executors_inherit_no_worker_credentials() {
    let mut p = PyProject::new("environ").await;
    p.worker_env("PGPASSWORD", "pg-password-value");
    p.worker_env("SYNC_WORKER_ADMIN_TOKEN", "admin-token-value-0123456789");
    p.worker_env("DATABASE_URL", "postgres://leak@127.0.0.1/leak");
    let task = p.task("t", "def work():\n    return 1\n").await;
    let job = p.job(task, "work", json!({})).await;
    assert_eq!(p.run(job).await["state"], "done");
    let worker = p.worker().await;
    let children = std::fs::read_to_string(format!(
        "/proc/{pid}/task/{pid}/children",
        pid = worker.pid()
    ))
    .expect("children of the worker");
    let pids: Vec<&str> = children.split_whitespace().collect();
    assert!(!pids.is_empty(), "no executor processes");
    for pid in pids {
        let env = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        let env = String::from_utf8_lossy(&env);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
        let cmdline = String::from_utf8_lossy(&cmdline);
        for needle in [
            "pg-password-value",
            "admin-token-value",
            "DATABASE_URL",
            "postgres://",
        ] {
            assert!(
                !env.contains(needle),
                "executor {pid} has {needle} in its environment"
            );
            assert!(
                !cmdline.contains(needle),
                "executor {pid} has {needle} on its command line"
            );
        }
    }
}
