// libpq's conventions for the worker's own logins (PG* variables, the password file)
// and what the log says when a batch's database connection is lost.
use pg_sync_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

/// `sync_worker --check` with only `env` (no DATABASE_URL, no PG* of the caller).
async fn check(env: &[(&str, &str)]) -> (i32, String) {
    let bin = std::env::var("SYNC_WORKER_BIN").expect("SYNC_WORKER_BIN");
    let mut cmd = tokio::process::Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("SYNC_WORKER_") || k == "DATABASE_URL" || k.starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    cmd.args([
        "--check",
        "--webhook-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ])
    .envs(env.iter().copied())
    .env("RUST_LOG", "info")
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("--check within a minute")
        .expect("run sync_worker");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn temp_file(name: &str, text: &str, mode: u32) -> PathBuf {
    let base = std::env::var("PG_SYNC_TEST_TMP").unwrap_or_else(|_| "/tmp".into());
    let path = PathBuf::from(base).join(format!("{}-{name}", std::process::id()));
    std::fs::write(&path, text).expect("write file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

/// A private cluster where the login `libpq_pw` must give its password (scram), so a
/// password that does not reach the server fails the test.
#[tokio::test]
async fn the_worker_takes_what_the_url_leaves_out_from_pg_variables_and_the_password_file() {
    let hba = temp_file(
        "pg_hba.conf",
        "local all all trust\nhost all libpq_pw 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\n",
        0o644,
    );
    let cluster = Cluster::start_with(&format!("-c hba_file={}", hba.display()));
    let db = TestDb::on(&cluster.url("postgres")).await;
    let c = db.connect().await;
    c.batch_execute(
        "SET password_encryption = 'scram-sha-256';
         CREATE ROLE libpq_pw LOGIN PASSWORD 'right pw:1';
         GRANT sync_worker TO libpq_pw;",
    )
    .await
    .unwrap();
    let port = cluster.port.to_string();
    let target = [
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", port.as_str()),
        ("PGUSER", "libpq_pw"),
        ("PGDATABASE", db.name.as_str()),
    ];
    let with = |extra: &[(&'static str, &str)]| {
        let mut env: Vec<(&str, String)> =
            target.iter().map(|(k, v)| (*k, v.to_string())).collect();
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        env
    };
    async fn run(env: Vec<(&str, String)>) -> (i32, String) {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        check(&env).await
    }

    // Nothing at all: refused, saying what to set.
    let (code, out) = check(&[]).await;
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("PGHOST"), "{out}");

    // PGPASSWORD: right, then wrong.
    let (code, out) = run(with(&[("PGPASSWORD", "right pw:1")])).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("configuration OK"), "{out}");
    let (code, out) = run(with(&[("PGPASSWORD", "wrong")])).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("28P01"), "{out}");

    // The URL wins over the variables: its database exists, PGDATABASE's does not.
    let url = format!("postgres://127.0.0.1:{port}/{}", db.name);
    let (code, out) = run(with(&[
        ("DATABASE_URL", url.as_str()),
        ("PGDATABASE", "no_such_db"),
        ("PGPASSWORD", "right pw:1"),
    ]))
    .await;
    assert_eq!(code, 0, "{out}");

    // The password file: the first matching line, escapes undone; a line for another
    // database is not used.
    let lines = format!(
        "# comment\n127.0.0.1:{port}:other_db:libpq_pw:wrong\n\
         127.0.0.1:{port}:*:libpq_pw:right pw\\:1\n*:*:*:*:wrong\n"
    );
    let passfile = temp_file("pgpass", &lines, 0o600);
    let file = passfile.display().to_string();
    let (code, out) = run(with(&[("PGPASSFILE", file.as_str())])).await;
    assert_eq!(code, 0, "{out}");
    // PGPASSWORD wins over the file.
    let (code, out) = run(with(&[
        ("PGPASSFILE", file.as_str()),
        ("PGPASSWORD", "wrong"),
    ]))
    .await;
    assert!(code != 0 && out.contains("28P01"), "{out}");
    // A file others may read is not used, as in libpq.
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out) = run(with(&[("PGPASSFILE", file.as_str())])).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("has group or world access"), "{out}");
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A running worker: its executors, which do not inherit the variables, get the
    // resolved login and run jobs.
    let (p, t) = create_task(&c, "libpq", "main", "def work(n):\n    return n\n").await;
    c.execute(
        "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler, args)
         SELECT $1, $2, 'job', 'work', jsonb_build_object('args', jsonb_build_array(g))
         FROM generate_series(1, 20) g",
        &[&p, &t],
    )
    .await
    .unwrap();
    let env: Vec<(&str, &str)> = target
        .iter()
        .copied()
        .chain([("PGPASSFILE", file.as_str())])
        .collect();
    let w = WorkerProcess::start_raw(
        &[
            "--executors",
            "1",
            "--webhook-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &env,
    );
    wait_for("the jobs done", Duration::from_secs(60), || async {
        scalar::<i64>(&c, "SELECT count(*) FROM sync.job WHERE state = 'done'").await == 20
    })
    .await;
    let worker_logins: i64 = scalar(
        &c,
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'libpq_pw' AND application_name = 'sync_worker'",
    )
    .await;
    assert_eq!(worker_logins, 1, "{}", w.output());

    // With connections scarce, an executor that cannot connect says so, with the
    // SQLSTATE, as a warning.
    c.batch_execute(
        "ALTER ROLE sync_executor CONNECTION LIMIT 0;
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name LIKE 'sync_worker executor%';",
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler, args)
         VALUES ($1, $2, 'job', 'work', '{\"args\": [0]}')",
        &[&p, &t],
    )
    .await
    .unwrap();
    wait_for(
        "a warning with SQLSTATE 53300",
        Duration::from_secs(30),
        || async {
            w.output()
                .lines()
                .any(|l| l.contains("WARN") && l.contains("cannot connect") && l.contains("53300"))
        },
    )
    .await;
    c.batch_execute("ALTER ROLE sync_executor CONNECTION LIMIT -1")
        .await
        .unwrap();
    wait_for(
        "the job done once connections are free",
        Duration::from_secs(60),
        || async {
            scalar::<i64>(&c, "SELECT count(*) FROM sync.job WHERE state = 'done'").await == 21
        },
    )
    .await;
    drop(w);
    let _ = std::fs::remove_file(&passfile);
    let _ = std::fs::remove_file(&hba);
}

/// A batch whose connection is terminated while its job runs is re-run, and the log
/// says so: no "job failed" for a job that ends done.
#[tokio::test]
async fn a_batch_that_loses_its_connection_is_logged_as_rerun_not_failed() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (p, t) = create_task(
        &c,
        "rerun",
        "main",
        "def slow(n):\n    time.sleep(1.5)\n    return n\n",
    )
    .await;
    let w = WorkerProcess::start(&db.url, &["--executors", "1"]);
    c.execute(
        "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler, args)
         VALUES ($1, $2, 'job', 'slow', '{\"args\": [1]}')",
        &[&p, &t],
    )
    .await
    .unwrap();
    let busy = format!(
        "SELECT pid FROM pg_stat_activity WHERE datname = '{}'
          AND application_name LIKE 'sync_worker executor%' AND state = 'idle in transaction'",
        db.name
    );
    wait_for("the job running", Duration::from_secs(30), || async {
        c.query(&busy, &[])
            .await
            .map(|r| !r.is_empty())
            .unwrap_or(false)
    })
    .await;
    c.batch_execute(&format!("SELECT pg_terminate_backend(pid) FROM ({busy}) b"))
        .await
        .unwrap();
    wait_for(
        "the job done after its re-run",
        Duration::from_secs(60),
        || async {
            scalar::<i64>(&c, "SELECT count(*) FROM sync.job WHERE state = 'done'").await == 1
        },
    )
    .await;
    let out = w.output();
    assert!(out.contains("will be re-run"), "{out}");
    assert!(!out.contains("job failed"), "{out}");
}
