// Test harness: throwaway PostgreSQL clusters, one fresh database per test, and
// helpers to run SQL and expect errors. Used by every file in tests/tests/.
//
// Clusters run as the unprivileged `postgres` user when the tests run as root
// (initdb refuses root). The shared cluster comes from scripts/test.sh through
// PG_SYNC_TEST_URL; tests that restart PostgreSQL start their own `Cluster`.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

pub mod browser;
pub mod catalog;
pub mod clock;
pub mod console;
pub mod demos;
pub mod fakes;
pub mod python;

pub use tokio_postgres::{Client, Error, Row};

/// Where the private PostgreSQL prefix (with pg_sync installed) lives.
pub fn pg_bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_SYNC_BINDIR") {
        return PathBuf::from(dir);
    }
    panic!("PG_SYNC_BINDIR is not set: run the tests with scripts/test.sh, which builds and installs pg_sync first")
}

/// The system PostgreSQL's binaries (Debian: /usr/lib/postgresql/15/bin).
pub fn system_pg_bindir() -> PathBuf {
    let out = Command::new("/usr/bin/pg_config")
        .arg("--bindir")
        .output()
        .expect("run the system pg_config");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

pub fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// Run a PostgreSQL binary of `bindir` as the cluster owner.
fn pg_command(bindir: &Path, bin: &str) -> Command {
    let path = bindir.join(bin);
    if is_root() {
        let mut c = Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A throwaway PostgreSQL cluster on a free port, stopped and removed on drop.
pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    options: String,
    /// The PostgreSQL binaries it runs on.
    bindir: PathBuf,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Cluster {
    pub fn start() -> Cluster {
        Self::start_with("")
    }

    /// A cluster started with extra server options (e.g. `-c shared_preload_libraries=...`).
    pub fn start_with(options: &str) -> Cluster {
        Self::start_on(&pg_bindir(), options)
    }

    /// A cluster of the system's PostgreSQL (Debian's packages, not the private prefix
    /// the suite installs pg_sync into).
    pub fn start_system() -> Cluster {
        Self::start_on(&system_pg_bindir(), "")
    }

    fn start_on(bindir: &Path, options: &str) -> Cluster {
        let base = std::env::var("PG_SYNC_TEST_TMP").unwrap_or_else(|_| "/tmp".into());
        let dir = PathBuf::from(base).join(format!(
            "cluster-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("create cluster dir");
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:").arg(&dir);
                    c
                },
                "chown cluster dir",
            );
        }
        let mut initdb = pg_command(bindir, "initdb");
        initdb.arg("-D").arg(dir.join("data")).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]);
        run(initdb, "initdb");
        let cluster = Cluster {
            dir,
            port: free_port(),
            options: options.to_string(),
            bindir: bindir.to_path_buf(),
        };
        cluster.pg_ctl_start();
        cluster
    }

    fn pg_ctl_start(&self) {
        let mut c = pg_command(&self.bindir, "pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .arg("-w")
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
                 -c full_page_writes=off -c max_connections=300 -c shared_buffers=256MB {}",
                self.port,
                self.dir.display(),
                self.options
            ))
            .arg("start");
        run(c, "pg_ctl start");
    }

    /// Stop immediately (like a crash) and start again.
    pub fn restart(&self) {
        self.stop("immediate");
        self.pg_ctl_start();
    }

    pub fn stop(&self, mode: &str) {
        let mut c = pg_command(&self.bindir, "pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", mode, "-w", "stop"]);
        let _ = c.output();
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn log_path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// URL of the shared cluster's `postgres` database.
fn shared_admin_url() -> String {
    static OWN: OnceLock<Cluster> = OnceLock::new();
    if let Ok(url) = std::env::var("PG_SYNC_TEST_URL") {
        return url;
    }
    // Running without scripts/test.sh: start a cluster for this test binary and stop
    // it when the process exits.
    let c = OWN.get_or_init(|| {
        extern "C" fn stop_own() {
            if let Some(c) = OWN.get() {
                c.stop("immediate");
                let _ = std::fs::remove_dir_all(&c.dir);
            }
        }
        let c = Cluster::start();
        // SAFETY: registering a plain extern "C" function with atexit.
        unsafe { libc::atexit(stop_own) };
        c
    });
    c.url("postgres")
}

/// Connect and drive the connection on the current tokio runtime.
pub async fn connect(url: &str) -> Client {
    let mut last = None;
    for _ in 0..50 {
        match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                return client;
            }
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("cannot connect to {url}: {last:?}")
}

/// A fresh database with pg_sync created in it, dropped at the end of the test.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDb {
    /// New database on the shared cluster.
    pub async fn new() -> TestDb {
        Self::on(&shared_admin_url()).await
    }

    /// New database on the cluster whose `postgres` database is at `admin_url`.
    pub async fn on(admin_url: &str) -> TestDb {
        let name = format!(
            "t_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            chrono::Utc::now().timestamp_micros() % 1_000_000
        );
        let admin = connect(admin_url).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let url = replace_db(admin_url, &name);
        let db = TestDb {
            name,
            url,
            admin_url: admin_url.to_string(),
        };
        let c = db.connect().await;
        // The first CREATE EXTENSION of a cluster creates the cluster-wide roles; tests
        // doing it at once race on them (unique violation, or "tuple concurrently
        // updated" / XX000): try again, the roles exist then.
        let mut tries = 0;
        loop {
            match c.batch_execute("CREATE EXTENSION pg_sync").await {
                Ok(()) => break,
                Err(e)
                    if tries < 5
                        && matches!(sqlstate(&e).0.as_str(), "23505" | "XX000" | "40001") =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50 * tries)).await;
                }
                Err(e) => panic!("CREATE EXTENSION pg_sync: {e:?}"),
            }
        }
        db
    }

    pub async fn connect(&self) -> Client {
        connect(&self.url).await
    }

    /// Connect as `role` (created LOGIN if missing, trust auth).
    pub async fn connect_as(&self, role: &str) -> Client {
        let admin = self.connect().await;
        admin
            .batch_execute(&format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                   CREATE ROLE {role} LOGIN; END IF; END $$"
            ))
            .await
            .expect("create role");
        let url = self.url.replacen("postgres@", &format!("{role}@"), 1);
        connect(&url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop in a thread with its own runtime: Drop cannot be async.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    if let Ok((c, conn)) =
                        tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await
                    {
                        tokio::spawn(conn);
                        let _ = c
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

fn replace_db(url: &str, db: &str) -> String {
    match url.rfind('/') {
        Some(i) => format!("{}/{db}", &url[..i]),
        None => panic!("bad database url {url}"),
    }
}

/// The SQLSTATE and message of a failed statement.
pub fn sqlstate(err: &Error) -> (String, String) {
    match err.as_db_error() {
        Some(db) => (db.code().code().to_string(), db.message().to_string()),
        None => ("?????".into(), err.to_string()),
    }
}

/// Run `sql`, expect it to fail with `code`, and return the message.
pub async fn expect_error(client: &Client, sql: &str, code: &str) -> String {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("expected SQLSTATE {code} from: {sql}"),
        Err(e) => {
            let (got, msg) = sqlstate(&e);
            assert_eq!(got, code, "wrong SQLSTATE for {sql}: {msg}");
            msg
        }
    }
}

/// Run `sql` (any number of statements); panics with the statement and the error.
pub async fn exec(client: &Client, sql: &str) {
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

/// First column of the first row, for quick scalar queries.
pub async fn scalar<T>(client: &Client, sql: &str) -> T
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Poll `check` every 20 ms until it returns true; panic after `limit` naming `what`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An active project with one task; returns (project id, task id).
pub async fn create_task(client: &Client, project: &str, task: &str, code: &str) -> (i64, i64) {
    let p: i64 = client
        .query_one(
            "INSERT INTO sync.project (name, active) VALUES ($1, true) RETURNING id",
            &[&project],
        )
        .await
        .expect("create project")
        .get(0);
    let t: i64 = client
        .query_one(
            "INSERT INTO sync.task (project_id, name, code) VALUES ($1, $2, $3) RETURNING id",
            &[&p, &task, &code],
        )
        .await
        .expect("create task")
        .get(0);
    (p, t)
}

/// A running `sync_worker` (the binary from SYNC_WORKER_BIN), killed when dropped.
/// Its output goes to a file, shown by `output()` (and printed if a test panics).
pub struct WorkerProcess {
    pub child: std::process::Child,
    pub log: PathBuf,
}

static WORKER_COUNTER: AtomicU32 = AtomicU32::new(0);

impl WorkerProcess {
    /// Start a worker on `url` with extra command-line arguments.
    pub fn start(url: &str, args: &[&str]) -> WorkerProcess {
        Self::start_env(url, args, &[])
    }

    /// Start a worker with extra environment variables too. Its HTTP servers listen on
    /// free ports unless `args` say otherwise (see `webhook_url`, `admin_url`).
    pub fn start_env(url: &str, args: &[&str], env: &[(&str, &str)]) -> WorkerProcess {
        let mut all: Vec<&str> = vec!["--database-url", url];
        for flag in ["--webhook-listen", "--admin-listen"] {
            if !args.contains(&flag) {
                all.extend([flag, "127.0.0.1:0"]);
            }
        }
        all.extend_from_slice(args);
        Self::start_raw(&all, env)
    }

    /// Start `sync_worker` with exactly these arguments and extra environment.
    pub fn start_raw(args: &[&str], env: &[(&str, &str)]) -> WorkerProcess {
        let bin = std::env::var("SYNC_WORKER_BIN")
            .expect("SYNC_WORKER_BIN is not set: run the tests with scripts/test.sh");
        Self::start_program(&[bin.as_str()], args, env)
    }

    /// Start a worker with the command line `program` (a binary and its first
    /// arguments, e.g. `runuser -u pg_sync -- /usr/bin/sync_worker`), then `args`.
    pub fn start_program(program: &[&str], args: &[&str], env: &[(&str, &str)]) -> WorkerProcess {
        let base = std::env::var("PG_SYNC_TEST_TMP").unwrap_or_else(|_| "/tmp".into());
        let log = PathBuf::from(base).join(format!(
            "worker-{}-{}.log",
            std::process::id(),
            WORKER_COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let out = std::fs::File::create(&log).expect("worker log file");
        let err = out.try_clone().expect("worker log file");
        let child = Command::new(program[0])
            .args(&program[1..])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start sync_worker");
        WorkerProcess { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Send a signal (libc::SIGTERM, SIGKILL, ...).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill() on the pid of our own child process.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Wait up to `limit` for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Base URL of its webhook server (`http://127.0.0.1:PORT`), once it listens.
    pub async fn webhook_url(&self) -> String {
        self.listening("webhooks: listening on ").await
    }

    /// Base URL of its admin API (`http://127.0.0.1:PORT`), once it listens.
    pub async fn admin_url(&self) -> String {
        self.listening("admin API: listening on ").await
    }

    async fn listening(&self, prefix: &str) -> String {
        let start = std::time::Instant::now();
        loop {
            let out = self.output();
            if let Some(rest) = out.split(prefix).nth(1) {
                let url: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                let base = url
                    .strip_prefix("http://")
                    .and_then(|r| r.split('/').next())
                    .map(|host| format!("http://{host}"));
                if let Some(base) = base {
                    return base;
                }
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!("the worker never said `{prefix}...`:\n{out}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the worker logged so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- worker log {} ---\n{}",
                self.log.display(),
                self.output()
            );
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
