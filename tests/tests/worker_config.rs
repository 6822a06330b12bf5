// Worker configuration and startup, with the real binary: --check, the config file,
// CLI > env > file > default, bad settings, each startup refusal, the prod rules, JSON
// logs, throttle, the clock drift warning and the deprecated names of settings.
use pg_sync_tests::python::{worker_bin, PyProject};
use pg_sync_tests::{wait_for, TestDb, WorkerProcess};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const TOKEN: &str = "prod-admin-token-0123456789abcdef";

/// How a run of `sync_worker` that exits ended.
struct Exit {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl std::fmt::Debug for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {} after {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.took, self.stdout, self.stderr
        )
    }
}

/// Run `sync_worker ARGS` with `env` (and none of the caller's worker settings) until it
/// exits; panics if it runs longer than a minute.
async fn run(args: &[&str], env: &[(&str, &str)]) -> Exit {
    let mut cmd = tokio::process::Command::new(worker_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("SYNC_WORKER_") || k == "DATABASE_URL" {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("sync_worker {args:?} did not exit within a minute"))
        .expect("run sync_worker");
    Exit {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// `--check` on free ports with extra arguments.
async fn check(url: &str, args: &[&str], env: &[(&str, &str)]) -> Exit {
    let mut all = vec!["--check", "--database-url", url];
    for flag in ["--webhook-listen", "--admin-listen"] {
        if !args.contains(&flag) {
            all.extend([flag, "127.0.0.1:0"]);
        }
    }
    all.extend_from_slice(args);
    run(&all, env).await
}

/// Expect exit code 78 (EX_CONFIG: a configuration to fix) with a message on stderr
/// containing every one of `says`.
fn refused(e: &Exit, says: &[&str]) {
    exited(e, 78, says);
}

/// Expect exit code 69 (EX_UNAVAILABLE: an outage to wait out), and `says`.
fn unavailable(e: &Exit, says: &[&str]) {
    exited(e, 69, says);
}

fn exited(e: &Exit, code: i32, says: &[&str]) {
    assert_eq!(e.code, code, "{e:?}");
    for s in says {
        assert!(e.stderr.contains(s), "missing `{s}`: {e:?}");
    }
}

/// A file in the test's temporary directory.
fn write_file(name: &str, text: &str) -> PathBuf {
    let base = std::env::var("PG_SYNC_TEST_TMP").unwrap_or_else(|_| "/tmp".into());
    let path = PathBuf::from(base).join(format!("{}-{name}", std::process::id()));
    std::fs::write(&path, text).expect("write a config file");
    path
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Start a worker and wait until it is connected and registered; panics if it exits.
async fn starts(url: &str, args: &[&str], env: &[(&str, &str)]) -> WorkerProcess {
    let mut w = WorkerProcess::start_env(url, args, env);
    let t0 = Instant::now();
    loop {
        if w.output().contains("connected to the database as worker") {
            return w;
        }
        if let Ok(Some(status)) = w.child.try_wait() {
            panic!("the worker exited ({status}):\n{}", w.output());
        }
        if t0.elapsed() > Duration::from_secs(30) {
            panic!("the worker did not connect:\n{}", w.output());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn check_validates_everything_prints_a_summary_and_exits_0() {
    let db = TestDb::new().await;
    let file = write_file(
        "check.toml",
        &format!(
            "# every key is a setting\ndatabase_url = '{}'\nexecutors = 3\nenvironment = 'test'\n\
             max_time_drift = '1s 234ms'\nwebhook_listen = '127.0.0.1:0'\nadmin_listen = '127.0.0.1:0'\n",
            db.url
        ),
    );
    let file_s = file.to_str().unwrap();
    let e = run(
        &[
            "--check",
            "--config",
            file_s,
            "--base-url",
            "https://erp.example.com/",
        ],
        &[],
    )
    .await;
    assert_eq!(e.code, 0, "{e:?}");
    let lines: Vec<&str> = e.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "sync_worker {} (commit {}): configuration OK",
            env!("CARGO_PKG_VERSION"),
            git_head()
        )
    );
    for want in [
        format!("  config file        {file_s}"),
        "  environment        test".to_string(),
        format!(
            "  database           reachable, pg_sync {}",
            env!("CARGO_PKG_VERSION")
        ),
        "  executors          3 for jobs, 1 for webhooks".to_string(),
        "  admin_listen       127.0.0.1:".to_string(),
        "  webhook_listen     127.0.0.1:".to_string(),
        "  base_url           https://erp.example.com".to_string(),
        "  webhook triggers   0 active".to_string(),
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(&want)),
            "no `{want}`: {e:?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  clock drift") && l.ends_with("(max 1234 ms)")),
        "{e:?}"
    );
    // A dry run: no worker registered, base_url not stored.
    let c = db.connect().await;
    let workers: i64 = c
        .query_one("SELECT count(*) FROM sync.worker", &[])
        .await
        .unwrap()
        .get(0);
    let stored: i64 = c
        .query_one(
            "SELECT count(*) FROM sync.setting WHERE key = 'base_url'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!((workers, stored), (0, 0));

    // --version names the same commit.
    let v = run(&["--version"], &[]).await;
    assert_eq!(v.code, 0);
    assert_eq!(
        v.stdout.trim(),
        format!(
            "sync_worker {} (commit {})",
            env!("CARGO_PKG_VERSION"),
            git_head()
        )
    );
}

fn git_head() -> String {
    let out = std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .output()
        .expect("git rev-parse HEAD");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn cli_wins_over_env_over_file_over_default() {
    let db = TestDb::new().await;
    let executors = |e: &Exit| -> String {
        assert_eq!(e.code, 0, "{e:?}");
        e.stdout
            .lines()
            .find_map(|l| l.strip_prefix("  executors          "))
            .unwrap_or_else(|| panic!("{e:?}"))
            .to_string()
    };
    let cores = std::thread::available_parallelism().unwrap().get();
    // The file also gives a database_url that does not work: the flag's wins.
    let file = write_file(
        "prec.toml",
        "database_url = 'postgres://nobody@db.invalid/nowhere'\nexecutors = 3\nwebhook_executors = 2\n",
    );
    let cfg = file.to_str().unwrap();
    let env3 = [("SYNC_WORKER_EXECUTORS", "5")];
    assert_eq!(
        executors(&check(&db.url, &[], &[]).await),
        format!("{cores} for jobs, 1 for webhooks"),
        "defaults"
    );
    assert_eq!(
        executors(&check(&db.url, &["--config", cfg], &[]).await),
        "3 for jobs, 2 for webhooks",
        "the file"
    );
    assert_eq!(
        executors(&check(&db.url, &["--config", cfg], &env3).await),
        "5 for jobs, 2 for webhooks",
        "env over the file"
    );
    assert_eq!(
        executors(&check(&db.url, &["--config", cfg, "--executors", "4"], &env3).await),
        "4 for jobs, 2 for webhooks",
        "the flag over env"
    );
    // The config file named in the environment; DATABASE_URL over the file's URL.
    let e = run(
        &[
            "--check",
            "--webhook-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[("SYNC_WORKER_CONFIG", cfg), ("DATABASE_URL", &db.url)],
    )
    .await;
    assert_eq!(executors(&e), "3 for jobs, 2 for webhooks");
    // Without DATABASE_URL the file's (bad) URL is used: refused, naming it.
    let e = run(
        &[
            "--check",
            "--config",
            cfg,
            "--admin-listen",
            "off",
            "--webhook-listen",
            "off",
        ],
        &[],
    )
    .await;
    refused(&e, &["database_url: cannot connect to the database"]);
}

type BadCase<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, Vec<&'a str>);

#[tokio::test]
async fn bad_settings_exit_2_naming_the_setting() {
    let url = "postgres://postgres@127.0.0.1:1/x";
    let file = |name: &str, text: &str| write_file(name, text).to_str().unwrap().to_string();
    // (arguments, environment, what the message says)
    let cases: Vec<BadCase> = vec![
        (
            vec![
                "--config".into(),
                file("unknown.toml", "pol_interval = '1s'\n"),
            ],
            vec![],
            vec!["unknown.toml", "unknown field `pol_interval`"],
        ),
        (
            vec![
                "--config".into(),
                file("badval.toml", "poll_interval = 'soon'\n"),
            ],
            vec![],
            vec!["badval.toml", "poll_interval", "`soon` is not a duration"],
        ),
        (
            vec![
                "--config".into(),
                file("badtype.toml", "executors = 'many'\n"),
            ],
            vec![],
            vec!["badtype.toml", "executors"],
        ),
        (
            vec!["--config".into(), file("zero.toml", "executors = 0\n")],
            vec![],
            vec!["executors: must be at least 1"],
        ),
        (
            vec!["--config".into(), file("syntax.toml", "executors = \n")],
            vec![],
            vec!["syntax.toml"],
        ),
        (
            vec!["--config".into(), "/nonexistent/worker.toml".into()],
            vec![],
            vec!["config file /nonexistent/worker.toml: cannot read it"],
        ),
        (
            vec!["--poll-interval".into(), "soon".into()],
            vec![],
            vec!["--poll-interval", "soon"],
        ),
        (
            vec!["--log-format".into(), "xml".into()],
            vec![],
            vec!["--log-format", "xml"],
        ),
        (
            vec![],
            vec![("SYNC_WORKER_BATCH_SIZE", "abc")],
            vec!["--batch-size", "abc"],
        ),
        (
            vec!["--batch-size".into(), "0".into()],
            vec![],
            vec!["batch_size: must be between 1 and 10000"],
        ),
        (
            vec![
                "--soft-time-limit".into(),
                "20s".into(),
                "--hard-time-limit".into(),
                "10s".into(),
            ],
            vec![],
            vec!["hard_time_limit", "must be longer than soft_time_limit"],
        ),
        (
            vec!["--poll-interval".into(), "0s".into()],
            vec![],
            vec!["poll_interval: must be longer than zero"],
        ),
        (
            vec!["--admin-token".into(), "short".into()],
            vec![],
            vec!["admin_token: is shorter than 16 characters"],
        ),
        (
            vec!["--base-url".into(), "ftp://x".into()],
            vec![],
            vec!["base_url: `ftp://x` is not an http(s) URL"],
        ),
        (
            vec![
                "--webhook-listen".into(),
                "127.0.0.1:9999".into(),
                "--admin-listen".into(),
                "127.0.0.1:9999".into(),
            ],
            vec![],
            vec!["admin_listen: 127.0.0.1:9999 is also webhook_listen"],
        ),
        (
            vec!["--admin-listen".into(), "example.com:80".into()],
            vec![],
            vec!["--admin-listen", "not an address to listen on"],
        ),
        (
            vec!["--database-ca-file".into(), "/nonexistent/ca.pem".into()],
            vec![],
            vec!["database_ca_file: /nonexistent/ca.pem is not a readable file"],
        ),
        (
            vec!["--log-level".into(), "sync_worker=loud".into()],
            vec![],
            vec!["log_level: `sync_worker=loud`"],
        ),
        (
            vec!["--max-body-size".into(), "5 parsecs".into()],
            vec![],
            vec!["--max-body-size", "unknown unit"],
        ),
    ];
    for (args, env, says) in cases {
        let mut all: Vec<&str> = vec!["--database-url", url];
        all.extend(args.iter().map(String::as_str));
        let e = run(&all, &env).await;
        refused(&e, &says);
        assert!(e.took < Duration::from_secs(5), "{e:?}");
    }
    // The database URL itself.
    refused(
        &run(&["--webhook-listen", "off"], &[]).await,
        &["database_url is not set"],
    );
    refused(
        &run(
            &["--database-url", "postgres://u@h/db?sslmode=sometimes"],
            &[],
        )
        .await,
        &[
            "database_url: not a valid PostgreSQL URL",
            "sslmode `sometimes`",
        ],
    );
}

#[tokio::test]
async fn an_unreachable_database_is_refused_at_once_or_after_waiting() {
    let url = format!("postgres://postgres@127.0.0.1:{}/x", closed_port());
    let off = ["--webhook-listen", "off", "--admin-listen", "off"];
    let mut args = vec!["--database-url", url.as_str()];
    args.extend(off);
    let e = run(&args, &[]).await;
    unavailable(&e, &["the database is unavailable", "Connection refused"]);
    assert!(
        !e.stderr.contains("database_url"),
        "an outage is not a bad URL: {e:?}"
    );
    assert!(e.took < Duration::from_secs(5), "{e:?}");

    // --wait-for-database: tries again with backoff for that long, then gives up.
    args.extend(["--wait-for-database", "3s"]);
    let e = run(&args, &[]).await;
    unavailable(&e, &["the database is unavailable"]);
    assert!(
        e.stderr
            .matches("cannot connect to the database yet")
            .count()
            >= 2,
        "{e:?}"
    );
    assert!(
        e.took >= Duration::from_secs(3) && e.took < Duration::from_secs(15),
        "{e:?}"
    );

    // A database that does not exist is not waited for.
    let db = TestDb::new().await;
    let missing = db.url.replace(&db.name, "no_such_database");
    let e = run(
        &[
            "--database-url",
            &missing,
            "--wait-for-database",
            "1m",
            "--webhook-listen",
            "off",
            "--admin-listen",
            "off",
        ],
        &[],
    )
    .await;
    refused(&e, &["database_url: cannot connect", "does not exist"]);
    assert!(e.took < Duration::from_secs(10), "{e:?}");
}

#[tokio::test]
async fn a_database_without_pg_sync_or_with_another_version_is_refused() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    // A patch release of the extension is fine; another minor version is not.
    let version = env!("CARGO_PKG_VERSION");
    let minor = version.rsplit_once('.').map_or(version, |(a, _)| a);
    let patch = format!("{minor}.7");
    c.batch_execute(&format!(
        "UPDATE pg_extension SET extversion = '{patch}' WHERE extname = 'pg_sync'"
    ))
    .await
    .unwrap();
    let e = check(&db.url, &[], &[]).await;
    assert_eq!(e.code, 0, "{e:?}");
    assert!(
        e.stdout.contains(&format!("reachable, pg_sync {patch}")),
        "{e:?}"
    );
    c.batch_execute("UPDATE pg_extension SET extversion = '9.9.0' WHERE extname = 'pg_sync'")
        .await
        .unwrap();
    let e = run(
        &[
            "--database-url",
            &db.url,
            "--webhook-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[],
    )
    .await;
    refused(
        &e,
        &[
            &format!("database_url: the database has pg_sync 9.9.0, but this sync_worker {version} works with {minor}.x only"),
            "ALTER EXTENSION pg_sync UPDATE",
        ],
    );
    c.batch_execute("DROP EXTENSION pg_sync CASCADE")
        .await
        .unwrap();
    let e = run(
        &[
            "--database-url",
            &db.url,
            "--webhook-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[],
    )
    .await;
    refused(
        &e,
        &[
            "database_url: pg_sync is not installed in this database",
            "CREATE EXTENSION pg_sync",
        ],
    );
}

#[tokio::test]
async fn a_port_in_use_is_refused() {
    let db = TestDb::new().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for (flag, other, setting) in [
        ("--webhook-listen", "--admin-listen", "webhook_listen"),
        ("--admin-listen", "--webhook-listen", "admin_listen"),
    ] {
        let e = run(
            &["--database-url", &db.url, flag, &addr, other, "127.0.0.1:0"],
            &[],
        )
        .await;
        refused(
            &e,
            &[&format!("{setting}: cannot listen on {addr}"), "in use"],
        );
        // --check finds it too.
        let e = run(
            &[
                "--check",
                "--database-url",
                &db.url,
                flag,
                &addr,
                other,
                "127.0.0.1:0",
            ],
            &[],
        )
        .await;
        refused(&e, &[&format!("{setting}: cannot listen on {addr}")]);
    }
    // And from the config file.
    let file = write_file("port.toml", &format!("admin_listen = '{addr}'\n"));
    let e = run(
        &[
            "--database-url",
            &db.url,
            "--config",
            file.to_str().unwrap(),
            "--webhook-listen",
            "off",
        ],
        &[],
    )
    .await;
    refused(&e, &[&format!("admin_listen: cannot listen on {addr}")]);
}

#[tokio::test]
async fn base_url_is_required_while_an_active_webhook_trigger_exists() {
    let p = PyProject::new("hooked").await;
    let task = p
        .task("main", "def handle_webhook(httprequest):\n    return {}\n")
        .await;
    p.client
        .execute(
            "INSERT INTO sync.webhook_trigger (task_id, name) VALUES ($1, 'hook')",
            &[&task],
        )
        .await
        .unwrap();
    let free = [
        "--webhook-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ];
    let mut args = vec!["--database-url", p.db.url.as_str()];
    args.extend(free);
    let e = run(&args, &[]).await;
    refused(
        &e,
        &[
            "base_url is not set",
            "1 in project(s) hooked",
            "--base-url",
        ],
    );
    refused(&check(&p.db.url, &[], &[]).await, &["base_url is not set"]);

    // Fine when the trigger (or its task, or its project) is inactive.
    for (off, on) in [
        (
            "UPDATE sync.webhook_trigger SET active = false",
            "UPDATE sync.webhook_trigger SET active = true",
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
        p.sql(off).await;
        let e = check(&p.db.url, &[], &[]).await;
        assert_eq!(e.code, 0, "{off}: {e:?}");
        assert!(e.stdout.contains("webhook triggers   0 active"), "{e:?}");
        p.sql(on).await;
    }
    // Fine for a worker that serves no webhooks.
    let e = check(&p.db.url, &["--webhook-listen", "off"], &[]).await;
    assert_eq!(e.code, 0, "{e:?}");

    // Fine with --base-url (or SYNC_WORKER_BASE_URL), which is stored for everyone ...
    let w = starts(
        &p.db.url,
        &[],
        &[("SYNC_WORKER_BASE_URL", "https://erp.example.com")],
    )
    .await;
    drop(w);
    let stored: String = p
        .scalar("SELECT value FROM sync.setting WHERE key = 'base_url'")
        .await;
    assert_eq!(stored, "https://erp.example.com");
    // ... so that the next worker needs none.
    let e = check(&p.db.url, &[], &[]).await;
    assert_eq!(e.code, 0, "{e:?}");
    assert!(e.stdout.contains("webhook triggers   1 active"), "{e:?}");
    assert!(
        e.stdout
            .contains("base_url           https://erp.example.com"),
        "{e:?}"
    );
    let _w = starts(&p.db.url, &[], &[]).await;
}

#[tokio::test]
async fn prod_refuses_an_unsafe_setup_unless_overridden() {
    let lax = "postgres://sync@db.example.invalid/erp";
    let problems = [
        "admin_token is not set",
        "log_format is not json",
        "database_url connects to another host without sslmode=require",
    ];
    let e = run(&["--environment", "prod", "--database-url", lax], &[]).await;
    let mut says = vec!["environment = prod, but: ", "allow_unsafe_prod = true"];
    says.extend(problems);
    refused(&e, &says);
    assert!(
        e.took < Duration::from_secs(5),
        "refused before connecting: {e:?}"
    );
    // In a dev environment (the default) the same is fine: it goes on to connect.
    let e = run(
        &[
            "--database-url",
            lax,
            "--webhook-listen",
            "off",
            "--admin-listen",
            "off",
        ],
        &[],
    )
    .await;
    refused(&e, &["database_url: cannot connect to the database"]);
    assert!(!e.stderr.contains("environment = prod"), "{e:?}");

    // The override: a warning per problem, then the start goes on (here: to the
    // connection, which fails).
    let e = run(
        &[
            "--environment",
            "prod",
            "--allow-unsafe-prod",
            "--database-url",
            lax,
            "--webhook-listen",
            "off",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[],
    )
    .await;
    refused(&e, &["database_url: cannot connect to the database"]);
    for p in problems {
        let warned = e.stderr.lines().any(|l| {
            l.contains("WARN")
                && l.contains("environment = prod, starting anyway (allow_unsafe_prod)")
                && l.contains(p)
        });
        assert!(warned, "no warning for `{p}`: {e:?}");
    }
    // A compliant remote setup passes the rules (and fails only to connect).
    let strict = format!("{lax}?sslmode=verify-full");
    let e = run(
        &[
            "--environment",
            "prod",
            "--database-url",
            &strict,
            "--admin-token",
            TOKEN,
            "--log-format",
            "json",
            "--webhook-listen",
            "off",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[],
    )
    .await;
    refused(&e, &["database_url: cannot connect to the database"]);
    assert!(!e.stderr.contains("environment = prod"), "{e:?}");

    // On a local database, the override from the config file really starts a worker.
    let db = TestDb::new().await;
    let file = write_file(
        "unsafe.toml",
        "environment = 'prod'\nallow_unsafe_prod = true\n",
    );
    let w = starts(&db.url, &["--config", file.to_str().unwrap()], &[]).await;
    let out = w.output();
    let warnings: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("starting anyway (allow_unsafe_prod)"))
        .collect();
    assert_eq!(warnings.len(), 2, "{out}");
    assert!(
        warnings[0].contains(problems[0]) && warnings[1].contains(problems[1]),
        "{out}"
    );
    drop(w);

    // A compliant local prod worker starts without warnings, and its API wants the token.
    let w = starts(
        &db.url,
        &["--environment", "prod", "--log-format", "json"],
        &[("SYNC_WORKER_ADMIN_TOKEN", TOKEN)],
    )
    .await;
    assert!(!w.output().contains("allow_unsafe_prod"), "{}", w.output());
    let admin = w.admin_url().await;
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{admin}/service/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{admin}/service/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["worker"]["environment"], "prod");
}

#[tokio::test]
async fn json_logs_are_json_and_carry_the_job_fields() {
    let p = PyProject::new("jsonlogs").await;
    let task = p
        .task("main", "def boom():\n    raise ValueError('kaput')\n")
        .await;
    let w = starts(
        &p.db.url,
        &[
            "--log-format",
            "json",
            "--executors",
            "1",
            "--poll-interval",
            "200ms",
        ],
        &[],
    )
    .await;
    let id = p
        .job_with(task, "boom", json!({}), "trigger_name", "'nightly'")
        .await;
    assert_eq!(p.finished(id).await["state"], "failed");
    wait_for(
        "the failure's log line",
        Duration::from_secs(10),
        || async { w.output().contains("job failed") },
    )
    .await;
    let out = w.output();
    let lines: Vec<Value> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 4, "{out}");
    for l in &lines {
        assert!(l["timestamp"].is_string() && l["level"].is_string(), "{l}");
        assert!(l["message"].is_string(), "{l}");
    }
    let failed = lines
        .iter()
        .find(|l| l["message"].as_str().unwrap().starts_with("job failed"))
        .unwrap();
    assert_eq!(failed["level"], "WARN");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("ValueError: kaput"),
        "{failed}"
    );
    let span = &failed["span"];
    assert_eq!(span["job"], id, "{failed}");
    assert_eq!(span["project"], "jsonlogs");
    assert_eq!(span["task"], "main");
    assert_eq!(span["trigger"], "nightly");
    // The supervisor's lines are JSON too.
    assert!(lines.iter().any(|l| l["message"]
        .as_str()
        .unwrap()
        .starts_with("connected to the database as worker")));

    // So is a refusal to start: one JSON error line naming the setting.
    let url = format!("postgres://postgres@127.0.0.1:{}/x", closed_port());
    let e = run(
        &[
            "--log-format",
            "json",
            "--database-url",
            &url,
            "--webhook-listen",
            "off",
            "--admin-listen",
            "off",
        ],
        &[],
    )
    .await;
    assert_eq!(e.code, 69, "{e:?}");
    let lines: Vec<Value> = e
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|err| panic!("not JSON ({err}): {l}")))
        .collect();
    assert_eq!(lines.len(), 1, "{e:?}");
    assert_eq!(lines[0]["level"], "ERROR");
    assert!(lines[0]["message"]
        .as_str()
        .unwrap()
        .starts_with("the database is unavailable"));
}

#[tokio::test]
async fn throttle_is_a_minimum_time_per_job() {
    let p = PyProject::new("throttle").await;
    p.sql(&format!(
        "CREATE TABLE ticks (n int, at timestamptz); GRANT ALL ON ticks TO {}",
        p.role
    ))
    .await;
    let task = p
        .task(
            "main",
            "def tick(n):\n    db.execute('INSERT INTO ticks VALUES ($1, clock_timestamp())', n)\n",
        )
        .await;
    let throttle = Duration::from_millis(300);
    let n: i64 = 5;
    let _w = starts(
        &p.db.url,
        &[
            "--executors",
            "1",
            "--throttle",
            "300ms",
            "--poll-interval",
            "200ms",
        ],
        &[],
    )
    .await;
    let t0 = Instant::now();
    p.sql(&format!(
        "INSERT INTO sync.job (project_id, task_id, handler, args)
         SELECT {}, {task}, 'tick', jsonb_build_object('args', jsonb_build_array(g))
         FROM generate_series(1, {n}) g",
        p.id
    ))
    .await;
    wait_for("every job", Duration::from_secs(30), || async {
        p.scalar::<i64>("SELECT count(*) FROM sync.job WHERE state = 'done'")
            .await
            == n
    })
    .await;
    let took = t0.elapsed();
    // The pause follows each job's commit: n jobs start at least (n - 1) pauses apart.
    assert!(took >= throttle * (n as u32 - 1), "{n} jobs in {took:?}");
    // One after the other, at least the throttle apart (a little less where the
    // handler started late in its job's time).
    let gaps: Vec<f64> = p
        .client
        .query(
            "SELECT extract(epoch FROM at - lag(at) OVER (ORDER BY at))::float8 FROM ticks ORDER BY at OFFSET 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(gaps.len(), n as usize - 1);
    assert!(gaps.iter().all(|&g| g >= 0.25), "{gaps:?}");
}

#[tokio::test]
async fn clock_drift_over_max_time_drift_is_warned_about_and_reported() {
    let db = TestDb::new().await;
    // Any real drift is over 0 ms.
    let e = check(&db.url, &["--max-time-drift", "0s"], &[]).await;
    assert_eq!(e.code, 0, "{e:?}");
    assert!(e.stderr.contains("max_time_drift = 0ms"), "{e:?}");
    assert!(!e.stderr.contains("deprecated"), "{e:?}");
    let e = check(&db.url, &[], &[]).await;
    assert!(!e.stderr.contains("max_time_drift"), "{e:?}");

    // The old name still works for a release, with a warning at start.
    let w = starts(
        &db.url,
        &["--executors", "1"],
        &[("SYNC_WORKER_MAX_TIME_DRIFT_MS", "0")],
    )
    .await;
    let out = w.output();
    let deprecated = out
        .lines()
        .find(|l| l.contains("`max_time_drift_ms`"))
        .unwrap_or_else(|| panic!("no deprecation warning:\n{out}"));
    assert!(
        deprecated.contains("WARN")
            && deprecated.contains(
                "(--max-time-drift-ms, SYNC_WORKER_MAX_TIME_DRIFT_MS) is deprecated and will \
                 be removed in the next release: use `max_time_drift` (--max-time-drift, \
                 SYNC_WORKER_MAX_TIME_DRIFT) instead"
            ),
        "{deprecated}"
    );
    let warning = out
        .lines()
        .find(|l| l.contains("max_time_drift = 0ms"))
        .unwrap_or_else(|| panic!("no drift warning:\n{out}"));
    assert!(
        warning.contains("WARN") && warning.contains("clock and the database's differ by"),
        "{warning}"
    );
    let admin = w.admin_url().await;
    let status: Value = reqwest::get(format!("{admin}/service/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let clock = &status["clock"];
    assert_eq!(clock["max_time_drift_ms"], 0.0, "{status}");
    assert_eq!(clock["ok"], false, "{status}");
    assert!(clock["drift_ms"].is_number(), "{status}");
}

#[tokio::test]
async fn a_setting_given_by_its_new_and_its_old_name_is_refused_naming_both() {
    let db = TestDb::new().await;
    let e = check(
        &db.url,
        &["--throttle", "1s"],
        &[("SYNC_WORKER_THROTTLE_MS", "1000")],
    )
    .await;
    exited(
        &e,
        78,
        &["throttle: both `throttle` and its deprecated old name `throttle_ms` are set"],
    );
}

/// systemd (KillMode=control-group) and Ctrl-C in a terminal signal every process of the
/// worker, executors included: the running job must still get its grace period.
#[tokio::test]
async fn sigterm_to_the_whole_process_group_still_lets_the_job_finish() {
    use std::os::unix::process::CommandExt;
    let p = PyProject::new("group").await;
    let task = p
        .task(
            "main",
            "def slow():\n    time.sleep(1.5)\n    return 'finished'\n",
        )
        .await;
    let base = std::env::var("PG_SYNC_TEST_TMP").unwrap_or_else(|_| "/tmp".into());
    let log = PathBuf::from(base).join(format!("group-{}.log", std::process::id()));
    let out = std::fs::File::create(&log).unwrap();
    let mut child = std::process::Command::new(worker_bin())
        .args([
            "--database-url",
            &p.db.url,
            "--executors",
            "1",
            "--grace-period",
            "20s",
        ])
        .args([
            "--webhook-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let id = p.job(task, "slow", json!({})).await;
    wait_for("the job to run", Duration::from_secs(30), || async {
        p.scalar::<i64>(&format!(
            "SELECT count(*) FROM sync.log WHERE job_id = {id}"
        ))
        .await
            == 0
            && p.scalar::<String>(&format!(
                "SELECT sync.job_state(state, id) FROM sync.job WHERE id = {id}"
            ))
            .await
                == "running"
    })
    .await;
    // Well inside the handler's sleep.
    tokio::time::sleep(Duration::from_millis(700)).await;
    // SAFETY: kill() on the process group of our own child.
    unsafe { libc::kill(-pid, libc::SIGTERM) };
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the worker did not stop");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(status.success(), "{status}\n{output}");
    let report = p.finished(id).await;
    assert_eq!(report["state"], "done", "{report}\n{output}");
    assert_eq!(report["result"], "finished");
    let attempts: i32 = p
        .scalar(&format!("SELECT attempts FROM sync.job WHERE id = {id}"))
        .await;
    assert_eq!(attempts, 1, "{output}");
}

/// Every flag of `sync_worker --help` (but --config, --check, --help, --version), as a
/// setting name in snake_case, with its environment variable.
async fn settings() -> Vec<(String, String)> {
    let help = run(&["--help"], &[]).await;
    assert_eq!(help.code, 0, "{help:?}");
    let mut out = Vec::new();
    let mut flag: Option<String> = None;
    for line in help.stdout.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("--") {
            flag = Some(rest.split([' ', '<']).next().unwrap().to_string());
        }
        if let (Some(f), Some(env)) = (&flag, line.split("[env: ").nth(1)) {
            let env: String = env.chars().take_while(|c| *c != '=' && *c != ']').collect();
            out.push((f.replace('-', "_"), env));
            flag = None;
        }
    }
    out.retain(|(name, _)| name != "config");
    assert!(out.len() >= 24, "{out:?}\n{help:?}");
    out
}

#[tokio::test]
async fn the_docs_and_the_example_config_name_every_setting() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // The configuration reference (docs/configuration.md) has a row per setting.
    let readme = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let example = std::fs::read_to_string(root.join("contrib/worker.toml")).unwrap();
    let unit = std::fs::read_to_string(root.join("contrib/sync_worker.service")).unwrap();
    for (name, env) in settings().await {
        let flag = name.replace('_', "-");
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}` |")))
            .unwrap_or_else(|| panic!("docs/configuration.md: no configuration row for `{name}`"));
        assert!(
            row.contains(&format!("`--{flag}")),
            "docs/configuration.md row of {name}: {row}"
        );
        assert!(
            row.contains(&format!("`{env}`")),
            "docs/configuration.md row of {name}: {row}"
        );
        let listed = example.lines().any(|l| {
            l.trim_start_matches(['#', ' '])
                .starts_with(&format!("{name} = "))
        });
        assert!(listed, "contrib/worker.toml does not list `{name}`");
    }
    assert!(unit.contains("--config /etc/pg_sync/worker.toml"));
    assert!(unit.contains("EnvironmentFile=/etc/pg_sync/worker.env"));
}

/// The example configuration is valid as it stands, prod rules included, once the
/// environment file gives the secrets.
#[tokio::test]
async fn the_example_config_passes_check() {
    let db = TestDb::new().await;
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../contrib/worker.toml");
    let e = run(
        &[
            "--check",
            "--config",
            example.to_str().unwrap(),
            "--webhook-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[
            ("DATABASE_URL", &db.url),
            ("SYNC_WORKER_ADMIN_TOKEN", TOKEN),
        ],
    )
    .await;
    assert_eq!(e.code, 0, "{e:?}");
    assert!(e.stdout.contains("  environment        prod"), "{e:?}");
    // Without the token the prod rules refuse it.
    let e = run(
        &[
            "--check",
            "--config",
            example.to_str().unwrap(),
            "--webhook-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[("DATABASE_URL", &db.url)],
    )
    .await;
    refused(&e, &["admin_token is not set"]);
}
