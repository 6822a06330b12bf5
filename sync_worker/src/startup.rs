// Checks the worker runs before it starts (and all that `--check` runs): the prod rules,
// the listen ports, the database, the extension's version, base_url and the clock.
//
// Each refusal names the setting to change. Once these pass the worker never gives up
// on the database again: a connection lost later is retried forever.
use crate::config::{Config, Environment};
use crate::pg;
use crate::pg::Login;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("environment = prod, but: {}.\nFix these, or set allow_unsafe_prod = true (--allow-unsafe-prod) to start anyway", .0.join("; "))]
    Prod(Vec<String>),
    #[error("{setting}: cannot listen on {addr}: {source}")]
    Listen {
        setting: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("database_url: cannot connect to the database: {0}")]
    BadLogin(String),
    #[error("the database is unavailable ({0}); it may come back: --wait-for-database waits for it at start")]
    Unavailable(String),
    #[error("database_url: pg_sync is not installed in this database: run CREATE EXTENSION pg_sync there (or point database_url at the right database)")]
    NoExtension,
    #[error("database_url: the database has pg_sync {found}, but this sync_worker {worker} works with {worker_minor}.x only: run ALTER EXTENSION pg_sync UPDATE, or install the sync_worker matching the extension")]
    Version {
        found: String,
        worker: &'static str,
        worker_minor: String,
    },
    #[error("base_url is not set, but the database has active webhook triggers ({0}): give --base-url (SYNC_WORKER_BASE_URL, `base_url` in the config file) with the public URL of this worker's webhook server, or set it in the database: INSERT INTO sync.setting VALUES ('base_url', 'https://erp.example.com')")]
    NoBaseUrl(String),
    #[error("database_url: login {0} is neither a superuser nor a member of sync_worker: GRANT sync_worker TO {0}; (sync_worker reads secrets and runs the queue)")]
    NotWorker(String),
    #[error("{setting}: {why}")]
    ExecutorLogin { setting: &'static str, why: String },
    #[error("database_url: {what}: {}", pg::describe(.source))]
    Sql {
        what: &'static str,
        source: tokio_postgres::Error,
    },
}

/// sysexits(3) codes, so that a service manager can tell a configuration to fix (not
/// worth restarting: RestartPreventExitStatus=78) from an outage to wait out.
pub const EX_UNAVAILABLE: i32 = 69;
pub const EX_CONFIG: i32 = 78;

impl StartupError {
    pub fn exit_code(&self) -> i32 {
        match self {
            StartupError::Unavailable(_) => EX_UNAVAILABLE,
            StartupError::Sql { source, .. } if pg::is_connection_error(source) => EX_UNAVAILABLE,
            _ => EX_CONFIG,
        }
    }
}

/// The listening sockets, bound before anything else so that a taken port stops the
/// worker at once.
pub struct Listeners {
    pub webhook: Option<TcpListener>,
    pub admin: Option<TcpListener>,
}

/// What the database checks found.
#[derive(Debug, Clone)]
pub struct DbFacts {
    pub extension_version: String,
    pub webhook_triggers: i64,
    pub base_url: Option<String>,
    /// Database clock minus ours, in milliseconds.
    pub drift_ms: f64,
    /// How executors log in (checked: it may run task code and nothing more).
    pub executor: Login,
}

/// The prod rules: an admin token, JSON logs, TLS to a database on another host.
/// Returns what is wrong (empty = fine), whatever the environment.
pub fn prod_problems(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if cfg.admin_listen.is_some() && cfg.admin_token.is_none() {
        out.push("admin_token is not set (the admin API would take requests from anyone who can reach admin_listen)".into());
    }
    if cfg.log_format != crate::config::LogFormat::Json {
        out.push("log_format is not json".into());
    }
    if let Ok(target) = pg::parse_url(&cfg.database_url) {
        let remote = target.config.get_hosts().iter().any(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => !is_loopback(name),
            _ => false,
        });
        if remote && matches!(target.tls, pg::Tls::Disable | pg::Tls::Prefer) {
            out.push(
                "database_url connects to another host without sslmode=require (or verify-full)"
                    .into(),
            );
        }
    }
    out
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Refuse prod without its safeguards, unless overridden (then warn about each).
pub fn check_environment(cfg: &Config) -> Result<(), StartupError> {
    if cfg.environment != Environment::Prod {
        return Ok(());
    }
    let problems = prod_problems(cfg);
    if problems.is_empty() {
        return Ok(());
    }
    if cfg.allow_unsafe_prod {
        for p in &problems {
            tracing::warn!("environment = prod, starting anyway (allow_unsafe_prod): {p}");
        }
        return Ok(());
    }
    Err(StartupError::Prod(problems))
}

pub fn bind(cfg: &Config) -> Result<Listeners, StartupError> {
    let open = |setting: &'static str, addr: Option<SocketAddr>| {
        addr.map(|addr| {
            TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|source| StartupError::Listen {
                    setting,
                    addr,
                    source,
                })
        })
        .transpose()
    };
    Ok(Listeners {
        webhook: open("webhook_listen", cfg.webhook_listen)?,
        admin: open("admin_listen", cfg.admin_listen)?,
    })
}

/// Connect, trying again with backoff for up to `wait_for_database` (a bad password or
/// an unknown database is not waited for).
pub async fn connect(cfg: &Config) -> Result<Client, StartupError> {
    let until = Instant::now() + cfg.wait_for_database;
    let mut backoff = pg::Backoff::default();
    loop {
        match pg::connect(&cfg.database_url, "sync_worker startup").await {
            Ok(c) => return Ok(c),
            Err(e) => {
                // The last wait is cut short so that the final try comes at the deadline:
                // the worker waits the whole `wait_for_database`, not just the backoff
                // steps that fit in it.
                let left = until.saturating_duration_since(Instant::now());
                if e.is_permanent() {
                    return Err(StartupError::BadLogin(e.to_string()));
                }
                if left.is_zero() {
                    return Err(StartupError::Unavailable(e.to_string()));
                }
                let delay = backoff.next_delay().min(left);
                tracing::warn!(
                    "cannot connect to the database yet: {e}; trying again in {:.1} s",
                    delay.as_secs_f64()
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Read from the catalogs only: a login without rights on schema sync must get the
/// message that names its missing role, not "permission denied for schema sync".
const FACTS_SQL: &str = "
SELECT (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_sync'),
       EXISTS (SELECT 1 FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'sync' AND c.relname = 'webhook_trigger')";

const WEBHOOKS_SQL: &str = "
SELECT count(*), string_agg(DISTINCT p.name, ', ')
FROM sync.webhook_trigger w
JOIN sync.task t ON t.id = w.task_id
JOIN sync.project p ON p.id = w.project_id
WHERE w.active AND t.active AND p.active";

/// The extension and its version, base_url (written from the config when given, unless
/// `dry_run`), and the clock drift.
pub async fn check_database(
    client: &Client,
    cfg: &Config,
    dry_run: bool,
) -> Result<DbFacts, StartupError> {
    let sql = |what| move |source| StartupError::Sql { what, source };
    let row = client
        .query_one(FACTS_SQL, &[])
        .await
        .map_err(sql("reading the extension's version"))?;
    let version: Option<String> = row.get(0);
    let has_tables: bool = row.get(1);
    let Some(version) = version.filter(|_| has_tables) else {
        return Err(StartupError::NoExtension);
    };
    check_worker_login(client).await?;
    if !crate::version::compatible(&version) {
        let worker = crate::version::VERSION;
        return Err(StartupError::Version {
            found: version,
            worker,
            worker_minor: worker
                .rsplit_once('.')
                .map_or(worker, |(a, _)| a)
                .to_string(),
        });
    }
    if let (Some(url), false) = (&cfg.base_url, dry_run) {
        client
            .execute(
                "INSERT INTO sync.setting (key, value) VALUES ('base_url', $1)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value
                 WHERE sync.setting.value IS DISTINCT FROM EXCLUDED.value",
                &[url],
            )
            .await
            .map_err(sql("storing base_url in sync.setting"))?;
    }
    let stored: Option<String> = client
        .query_opt("SELECT value FROM sync.setting WHERE key = 'base_url'", &[])
        .await
        .map_err(sql("reading sync.setting"))?
        .map(|r| r.get(0));
    let base_url = cfg.base_url.clone().or(stored).filter(|u| !u.is_empty());
    let row = client
        .query_one(WEBHOOKS_SQL, &[])
        .await
        .map_err(sql("counting webhook triggers"))?;
    let webhook_triggers: i64 = row.get(0);
    if webhook_triggers > 0 && base_url.is_none() && cfg.webhook_listen.is_some() {
        let projects: Option<String> = row.get(1);
        return Err(StartupError::NoBaseUrl(format!(
            "{webhook_triggers} in project(s) {}",
            projects.unwrap_or_default()
        )));
    }
    let drift_ms = measure_drift(client)
        .await
        .map_err(sql("reading the database clock"))?;
    let executor = executor_login(
        client,
        &cfg.database_url,
        cfg.executor_database_url.as_deref(),
        dry_run,
    )
    .await?;
    Ok(DbFacts {
        extension_version: version,
        webhook_triggers,
        base_url,
        drift_ms,
        executor,
    })
}

/// The worker's own login must run the queue and read secrets: a superuser or a member
/// of sync_worker.
async fn check_worker_login(client: &Client) -> Result<(), StartupError> {
    let row = client
        .query_one(
            "SELECT current_user::text,
                    (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
                    OR (EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'sync_worker')
                        AND pg_catalog.pg_has_role(current_user, 'sync_worker', 'MEMBER'))",
            &[],
        )
        .await
        .map_err(|source| StartupError::Sql {
            what: "checking the worker's login",
            source,
        })?;
    if !row.get::<_, bool>(1) {
        return Err(StartupError::NotWorker(row.get(0)));
    }
    Ok(())
}

/// How executors log in, checked by logging in: executor_database_url, or the worker's
/// own URL with the sync_executor login (enabled, and its password set once, by
/// sync.executor_login(), also under --check). Also checks that the worker's own login
/// may run the queue.
pub async fn executor_login(
    client: &Client,
    database_url: &str,
    executor_database_url: Option<&str>,
    dry_run: bool,
) -> Result<Login, StartupError> {
    let sql = |what| move |source| StartupError::Sql { what, source };
    check_worker_login(client).await?;
    let (login, setting) = match executor_database_url {
        Some(url) => (
            Login {
                url: url.to_string(),
                user: None,
                password: None,
            },
            "executor_database_url",
        ),
        None => {
            let row = client
                .query_one(
                    "SELECT login::text, password FROM sync.executor_login()",
                    &[],
                )
                .await
                .map_err(sql("enabling the executor login (sync.executor_login())"))?;
            (
                Login {
                    url: database_url.to_string(),
                    user: Some(row.get(0)),
                    password: row.get(1),
                },
                "database_url",
            )
        }
    };
    if !dry_run {
        client
            .query_one("SELECT sync.executor_sync_roles()", &[])
            .await
            .map_err(sql("granting the run_as roles to sync_executor"))?;
    }
    let fail = |why: String| StartupError::ExecutorLogin { setting, why };
    let exec = pg::connect_login(&login, "sync_worker startup (executor login)")
        .await
        .map_err(|e| {
            fail(format!(
                "executors cannot log in as {}: {e}. With a password-protected server, allow the login in pg_hba.conf or give executor_database_url with its credentials",
                login.user.as_deref().unwrap_or("the URL's user")
            ))
        })?;
    let problem: Option<String> = exec
        .query_one("SELECT sync.executor_session_problem()", &[])
        .await
        .map_err(|e| {
            fail(format!(
                "cannot check the executor login: {}",
                pg::describe(&e)
            ))
        })?
        .get(0);
    if let Some(why) = problem {
        return Err(fail(format!(
            "{why}: task code would run with more rights than its project's run_as role. Log executors in as sync_executor, or as a login that is only a member of it"
        )));
    }
    Ok(login)
}

/// The database clock minus ours (ms), taking the round trip's midpoint as the moment
/// the database read its clock.
pub async fn measure_drift(client: &Client) -> Result<f64, tokio_postgres::Error> {
    let before = chrono::Utc::now();
    let t0 = Instant::now();
    let row = client
        .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
        .await?;
    let rtt = t0.elapsed();
    let db_secs: f64 = row.get(0);
    let ours = before.timestamp_micros() as f64 / 1e6 + rtt.as_secs_f64() / 2.0;
    Ok((db_secs - ours) * 1000.0)
}

/// Log a warning when the clocks differ by more than the allowed drift.
pub fn report_drift(drift_ms: f64, max: Duration) {
    if drift_ms.abs() > max.as_secs_f64() * 1000.0 {
        tracing::warn!(
            drift_ms = drift_ms.round(),
            "this host's clock and the database's differ by {:.0} ms (max_time_drift = {}ms): \
             schedules and eta follow the database clock, but sync.log times come from this host's; fix the host's time sync (NTP)",
            drift_ms.abs(),
            max.as_millis()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Flags};
    use clap::Parser;

    fn cfg(args: &[&str]) -> Config {
        let mut all = vec!["sync_worker"];
        all.extend_from_slice(args);
        Config::from_args(&Flags::try_parse_from(all).expect("args").worker).expect("config")
    }

    #[test]
    fn prod_rules() {
        let lax = cfg(&["--database-url", "postgres://u@db.example.com/x"]);
        let p = prod_problems(&lax);
        assert_eq!(p.len(), 3, "{p:?}");
        let strict = cfg(&[
            "--database-url",
            "postgres://u@db.example.com/x?sslmode=verify-full",
            "--admin-token",
            "0123456789abcdef0123",
            "--log-format",
            "json",
        ]);
        assert!(prod_problems(&strict).is_empty());
        let local = cfg(&[
            "--database-url",
            "postgres://u@127.0.0.1/x",
            "--admin-listen",
            "off",
            "--log-format",
            "json",
        ]);
        assert!(prod_problems(&local).is_empty());
    }
}
