// Every setting of the worker, declared once: its type, default, environment variable,
// flag, documentation, example value, and the rule that checks it (see define.rs).
//
// The order here is the order of --help, of --print-config and of the docs' table.
use super::checks::{self, optional};
use super::define::settings;
use super::values::{DurationValue, Environment, Listen, LogFormat, PathList, SizeValue};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

settings! {
    section "database";

    /// PostgreSQL URL of the database where pg_sync is installed:
    /// `postgres://user@host:port/db?sslmode=...` or `host=... dbname=...`.
    database_url: String = unset "libpq's `PG*` variables (one of `PGHOST`, `PGHOSTADDR`, `PGPORT`, `PGUSER`, `PGDATABASE` must be set)" {
        env: "DATABASE_URL",
        value: "URL",
        clap: [global = true, hide_env_values = true],
        note: "What the URL leaves out comes from libpq's variables and password file, as \
               for psql (see [libpq conventions](operations.md#libpq-conventions)). TLS as \
               in libpq: `sslmode` (disable, prefer (default), require, verify-ca, \
               verify-full) and `sslrootcert` in the URL (see [TLS to the \
               database](operations.md#tls-to-the-database)). Secrets belong in the \
               environment (`DATABASE_URL` or `PGPASSWORD` in the systemd EnvironmentFile) \
               or `~/.pgpass`, not in the file.",
        example: "postgres://sync_worker@db.example.com/erp?sslmode=verify-full",
        into: database_url: String = checks::database_url,
    }

    /// CA certificate file (PEM) that checks the database server's TLS certificate for
    /// `sslmode=verify-ca`/`verify-full` when the URL names no `sslrootcert`.
    database_ca_file: PathBuf = unset "the system's certificates" {
        env: "SYNC_WORKER_DATABASE_CA_FILE",
        value: "FILE",
        clap: [global = true],
        note: "It must be a readable file.",
        example: "/etc/pg_sync/db-ca.pem",
        into: database_ca_file: Option<PathBuf> = optional(checks::readable_file),
    }

    /// PostgreSQL URL the executors (which run task code) log in with; its login must be
    /// `sync_executor` or a login that is only a member of it.
    executor_database_url: String = unset "`database_url` with the login `sync_executor`" {
        env: "SYNC_WORKER_EXECUTOR_DATABASE_URL",
        value: "URL",
        clap: [hide_env_values = true],
        note: "By default the worker enables `sync_executor` and manages its password (see \
               [Security model](security.md#security-model)); with password authentication \
               and logins of your own, give one here.",
        example: "postgres://pg_sync_exec@db.example.com/erp?sslmode=verify-full",
        into: executor_database_url: Option<String> =
            optional(checks::executor_database_url),
    }

    /// At start, how long to keep trying an unreachable database (backoff 0.5 s doubling
    /// to 10 s) before refusing; `0s` refuses at once.
    wait_for_database: DurationValue = "0s" {
        env: "SYNC_WORKER_WAIT_FOR_DATABASE",
        value: "D",
        note: "A wrong password or an unknown database is refused at once. Once running, \
               the worker always reconnects.",
        suggested: "2m",
        into: wait_for_database: Duration = checks::duration,
    }

    section "jobs";

    /// Executor processes running jobs in parallel (one Python interpreter each), 1–256.
    executors: u16 = unset "the number of CPU cores" {
        env: "SYNC_WORKER_EXECUTORS",
        value: "N",
        example: 4,
        into: executors: usize = checks::executors,
    }

    /// Most jobs an executor runs in one database transaction, 1–10000.
    batch_size: u32 = 500 {
        env: "SYNC_WORKER_BATCH_SIZE",
        value: "N",
        note: "One commit for up to this many jobs when the queue is deep; batches shrink \
               to about 50 ms of work for slow jobs, and are as small as what is due when \
               the queue is shallow.",
        into: batch_size: usize = checks::between(1, 10_000),
    }

    /// Queue poll when no notification comes (jobs whose `eta` arrives).
    poll_interval: DurationValue = "1s" {
        env: "SYNC_WORKER_POLL_INTERVAL",
        value: "D",
        note: "`POST /service/processjobs` wakes the worker at once.",
        into: poll_interval: Duration = checks::nonzero_duration,
    }

    /// Time a job may run before an exception is raised in its Python code.
    soft_time_limit: DurationValue = "300s" {
        env: "SYNC_WORKER_SOFT_TIME_LIMIT",
        value: "D",
        note: "A task's `time_limit` (`sync.task.time_limit`) overrides it.",
        into: soft_time_limit: Duration = checks::nonzero_duration,
    }

    /// Time after which a job that ignored the soft limit is stopped by killing its
    /// executor (the job fails); longer than `soft_time_limit`.
    hard_time_limit: DurationValue = "330s" {
        env: "SYNC_WORKER_HARD_TIME_LIMIT",
        value: "D",
        note: "With a task's `time_limit`, the hard limit is that plus (hard − soft).",
        into: hard_time_limit: Duration = checks::duration,
    }

    /// On SIGTERM/SIGINT, how long running jobs may take to finish; the rest go back to
    /// the queue.
    grace_period: DurationValue = "30s" {
        env: "SYNC_WORKER_GRACE_PERIOD",
        value: "D",
        note: "Keep systemd's `TimeoutStopSec` above it.",
        into: grace_period: Duration = checks::duration,
    }

    /// How often jobs of dead workers are looked for.
    rescue_interval: DurationValue = "2s" {
        env: "SYNC_WORKER_RESCUE_INTERVAL",
        value: "D",
        into: rescue_interval: Duration = checks::nonzero_duration,
    }

    /// Memory (address space) one executor process may use, at least 256MiB: a job that
    /// needs more fails with `MemoryError` instead of exhausting the host.
    executor_memory_limit: SizeValue = "2GiB" {
        env: "SYNC_WORKER_EXECUTOR_MEMORY_LIMIT",
        value: "S",
        into: executor_memory_limit: usize = checks::memory_limit,
    }

    /// Minimum time per job, per executor (`0s` = off), to go easy on remote APIs.
    throttle: DurationValue = "0s" {
        env: "SYNC_WORKER_THROTTLE",
        value: "D",
        note: "A job that took less is followed by a pause after its commit (jobs then run \
               one per transaction).",
        example: "250ms",
        replaces: throttle_ms: u64 {
            env: "SYNC_WORKER_THROTTLE_MS",
            was: "a number of milliseconds",
            into: checks::millis,
        },
        into: throttle: Duration = checks::duration,
    }

    /// Directories searched first for [evaluation-context providers](providers.md):
    /// `:`-separated, or a list in the file.
    eval_context_path: PathList = unset "none" {
        env: "SYNC_WORKER_EVAL_CONTEXT_PATH",
        value: "DIRS",
        note: "`SYNC_EVAL_CONTEXT_PATH`, the variable's old name, still works in this \
               release with a deprecation warning.",
        example: ["/etc/pg_sync/providers"],
        into: eval_context_path: Option<String> = optional(checks::path_list),
    }

    /// Directories added to Python's module search path, for the packages providers and
    /// core_code import, e.g. a virtual environment's site-packages: `:`-separated, or a
    /// list in the file.
    python_path: PathList = unset "none" {
        env: "SYNC_WORKER_PYTHON_PATH",
        value: "DIRS",
        note: "They come after the standard library and before the system's packages, and \
               their `.pth` files are read, as in a virtual environment (see [Python \
               packages](providers.md#python-packages)).",
        example: ["/opt/pg_sync/venv/lib/python3.11/site-packages"],
        into: python_path: Option<String> = optional(checks::directories),
    }

    section "webhooks";

    /// Address of the webhook server (it serves `<base_url>/sync/webhook/<token>`), or
    /// `off`.
    webhook_listen: Listen = "127.0.0.1:8780" {
        env: "SYNC_WORKER_WEBHOOK_LISTEN",
        value: "A",
        note: "`0.0.0.0:PORT` serves every interface, port `0` takes any free port. Put a \
               TLS reverse proxy in front of it.",
        into: webhook_listen: Option<SocketAddr> = checks::listen,
    }

    /// Public URL of the webhook server, e.g. `https://erp.example.com`: every webhook URL
    /// is `<base_url>/sync/webhook/<token>`.
    base_url: String = unset "none" {
        env: "SYNC_WORKER_BASE_URL",
        value: "URL",
        note: "Stored in `sync.setting` for every worker; required at start while active \
               webhook triggers exist and none is stored (unless `webhook_listen` is `off`).",
        example: "https://erp.example.com",
        into: base_url: Option<String> = optional(checks::base_url),
    }

    /// Executor processes running webhook handlers, 0–64; `0` turns the webhook server
    /// off.
    webhook_executors: u16 = 1 {
        env: "SYNC_WORKER_WEBHOOK_EXECUTORS",
        value: "N",
        into: webhook_executors: usize = checks::count(0, 64),
    }

    /// Soft time limit of a webhook handler; its hard limit adds the jobs' margin
    /// (hard − soft).
    webhook_time_limit: DurationValue = "30s" {
        env: "SYNC_WORKER_WEBHOOK_TIME_LIMIT",
        value: "D",
        into: webhook_time_limit: Duration = checks::nonzero_duration,
    }

    /// Largest webhook request body accepted; larger ones get 413.
    max_body_size: SizeValue = "10MiB" {
        env: "SYNC_WORKER_MAX_BODY_SIZE",
        value: "S",
        into: max_body_size: usize = checks::nonzero_size,
    }

    /// Webhook calls accepted and not answered yet, 1–100000; more get 503 with
    /// `Retry-After: 1` until some are answered.
    webhook_queue_size: u32 = 64 {
        env: "SYNC_WORKER_WEBHOOK_QUEUE_SIZE",
        value: "N",
        note: "This bounds the bodies held in memory to this many times `max_body_size`.",
        into: webhook_queue_size: usize = checks::count(1, 100_000),
    }

    section "admin HTTP API";

    /// Address of the [admin HTTP API](admin-api.md), or `off`; it must differ from
    /// `webhook_listen`.
    admin_listen: Listen = "127.0.0.1:8781" {
        env: "SYNC_WORKER_ADMIN_LISTEN",
        value: "A",
        into: admin_listen: Option<SocketAddr> = checks::listen,
    }

    /// Bearer token every admin route but `/health` requires (`Authorization: Bearer
    /// TOKEN`), at least 16 characters.
    admin_token: String = unset "none" {
        env: "SYNC_WORKER_ADMIN_TOKEN",
        value: "TOKEN",
        clap: [hide_env_values = true],
        note: "An empty value is refused: leave it unset for none (then only `admin_listen` \
               protects the API). `openssl rand -hex 32` makes one; better in the \
               environment than in the file.",
        example: "...",
        into: admin_token: Option<String> = optional(checks::admin_token),
    }

    section "web console";

    /// Serve the [web console](console.md) at `/console/` on the admin listener
    /// (`true` or `false`).
    console: bool = true {
        env: "SYNC_WORKER_CONSOLE",
        value: "BOOL",
        clap: [
            action = clap::ArgAction::Set,
            value_parser = clap::builder::BoolishValueParser::new(),
        ],
        note: "The console has its own sign-in (a PostgreSQL role and its password) and \
               does not need `admin_token`; it opens no other admin route.",
        into: console: bool = checks::same,
    }

    /// A console session unused this long is closed (its database connection too).
    console_idle_timeout: DurationValue = "30m" {
        env: "SYNC_WORKER_CONSOLE_IDLE_TIMEOUT",
        value: "D",
        into: console_idle_timeout: Duration = checks::nonzero_duration,
    }

    /// A console session is closed this long after sign-in, used or not.
    console_session_lifetime: DurationValue = "12h" {
        env: "SYNC_WORKER_CONSOLE_SESSION_LIFETIME",
        value: "D",
        into: console_session_lifetime: Duration = checks::nonzero_duration,
    }

    /// Console sessions open at once, 1–1000: each holds a database connection. A role
    /// signing in again past 5 sessions ends its least recently used one; past this
    /// limit, sign-ins are refused until a session ends.
    console_max_sessions: u16 = 20 {
        env: "SYNC_WORKER_CONSOLE_MAX_SESSIONS",
        value: "N",
        into: console_max_sessions: usize = checks::between(1, 1000),
    }

    section "environment";

    /// `prod`, `integration`, `test` or `dev`; `prod` adds [startup
    /// rules](operations.md#the-prod-environment).
    environment: Environment = "dev" {
        env: "SYNC_WORKER_ENVIRONMENT",
        value: "E",
        note: "In prod the worker refuses to start without `admin_token` (while the admin \
               API listens), with text logs, or with a remote database without \
               `sslmode=require`/`verify-ca`/`verify-full`.",
        suggested: "prod",
        into: environment: Environment = checks::same,
    }

    /// Start in `prod` although some prod rules fail, logging a warning for each.
    allow_unsafe_prod: bool = false {
        env: "SYNC_WORKER_ALLOW_UNSAFE_PROD",
        clap: [
            action = clap::ArgAction::SetTrue,
            value_parser = clap::builder::BoolishValueParser::new(),
        ],
        note: "The flag and its environment variable can turn it on, not off.",
        into: allow_unsafe_prod: bool = checks::same,
    }

    section "logs and clock";

    /// Log line format: `text` or `json` (one JSON object per line, with the job id,
    /// project, task and trigger of job lines).
    log_format: LogFormat = "text" {
        env: "SYNC_WORKER_LOG_FORMAT",
        value: "F",
        clap: [global = true],
        note: "`--log-json` (`SYNC_WORKER_LOG_JSON`) is the same as `json`.",
        suggested: "json",
        into: log_format: LogFormat = checks::same,
    }

    /// Log level or tracing filter, e.g. `info` or `info,sync_worker=debug`.
    log_level: String = unset "`RUST_LOG`, else `info`" {
        env: "SYNC_WORKER_LOG_LEVEL",
        value: "FILTER",
        clap: [global = true],
        example: "info,sync_worker=debug",
        into: log_level: Option<String> = optional(checks::log_level),
    }

    /// Warn when this host's clock and the database's differ by more than this (see
    /// [Clock drift](operations.md#clock-drift)).
    max_time_drift: DurationValue = "1s" {
        env: "SYNC_WORKER_MAX_TIME_DRIFT",
        value: "D",
        replaces: max_time_drift_ms: u64 {
            env: "SYNC_WORKER_MAX_TIME_DRIFT_MS",
            was: "a number of milliseconds",
            into: checks::millis,
        },
        into: max_time_drift: Duration = checks::duration,
    }
}
