// The Debian packages scripts/package.sh builds: both install with dpkg -i, the
// extension is created in a cluster of the system's PostgreSQL, and the worker, started
// with the installed unit's command line as the unit's user, runs the db2db demo.
use pg_sync_tests::demos::{run_sql_file, Demo};
use pg_sync_tests::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const UNIT: &str = "/lib/systemd/system/sync_worker.service";

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?} failed: {text}");
    text
}

/// The value of `Key=` in the installed unit.
fn unit_setting(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{UNIT} has no {key}="))
        .trim()
        .to_string()
}

#[tokio::test]
async fn packages_install_with_dpkg_and_run_the_db2db_demo() {
    let dir = std::env::var("PG_SYNC_DEBS").expect(
        "PG_SYNC_DEBS is not set: run the tests with scripts/test.sh, which builds the packages with scripts/package.sh",
    );
    assert!(
        is_root(),
        "dpkg -i needs root: run scripts/test.sh as root, as CI does"
    );
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read PG_SYNC_DEBS")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    debs.sort();
    let names: Vec<String> = debs
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        names.len() == 2
            && names[0].starts_with(&format!("postgresql-15-pg-sync_{version}_"))
            && names[1].starts_with(&format!("sync-worker_{version}_")),
        "{names:?}"
    );
    let paths: Vec<&str> = debs.iter().map(|p| p.to_str().unwrap()).collect();
    run("dpkg", &[&["-i"], &paths[..]].concat());
    for package in ["postgresql-15-pg-sync", "sync-worker"] {
        let status = run("dpkg-query", &["-W", "-f=${Status} ${Version}", package]);
        assert_eq!(status, format!("install ok installed {version}"));
    }
    let installed = run("/usr/bin/sync_worker", &["--version"]);
    assert!(installed.contains(version), "{installed}");

    // The unit's command line, as its user (the package's postinst made it).
    let unit = std::fs::read_to_string(UNIT).expect("the package installs the unit");
    let user = unit_setting(&unit, "User");
    run("getent", &["passwd", &user]);
    let exec_start = unit_setting(&unit, "ExecStart");
    let argv: Vec<&str> = exec_start.split_whitespace().collect();
    assert_eq!(argv[0], "/usr/bin/sync_worker");
    // What EnvironmentFile= gives it: the installed worker.toml is the production
    // example, which wants an admin token.
    let token = format!("package-test-admin-token-{}", std::process::id());
    let env_file = format!("SYNC_WORKER_ADMIN_TOKEN={token}");
    assert!(unit.contains("EnvironmentFile=/etc/pg_sync/worker.env"));
    let program: Vec<String> = ["runuser", "-u", &user, "--", "env", &env_file]
        .into_iter()
        .chain(argv.iter().copied())
        .map(String::from)
        .collect();

    // The system's PostgreSQL, with the packaged extension.
    let cluster = Cluster::start_system();
    let admin = cluster.url("postgres");
    let remote_db = TestDb::on(&admin).await;
    let remote = remote_db.connect().await;
    let ext: String = scalar(&remote, "SELECT sync.version()").await;
    assert_eq!(ext, version);
    run_sql_file(&remote, "db2db_remote.sql").await;

    // The demo as the README runs it: import (an admin's command, run as root here),
    // then the worker as the unit would start it.
    let mut demo = Demo::load_into(
        TestDb::on(&admin).await,
        vec!["/usr/bin/sync_worker".into()],
        "db2db",
        &["db2db_setup.sql"],
    )
    .await;
    demo.secret("POSTGRES_DSN", &remote_db.url).await;
    demo.activate().await;
    demo.worker_program = program;
    demo.start_worker().await;
    let ada: i64 = demo
        .client
        .query_one(
            "INSERT INTO partner (name, email) VALUES ('Ada Lovelace', 'ada@example.com') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    wait_for(
        "Ada's copy in the remote database",
        Duration::from_secs(30),
        || async {
            let copies: i64 = scalar(
                &remote,
                "SELECT count(*) FROM partner WHERE name = 'Ada Lovelace'",
            )
            .await;
            copies == 1
        },
    )
    .await;
    let origin: String = scalar(
        &remote,
        "SELECT origin_ref FROM partner WHERE name = 'Ada Lovelace'",
    )
    .await;
    assert_eq!(origin, format!("pg_sync:{ada}"));
    demo.no_failed_jobs().await;
}
