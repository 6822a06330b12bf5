// The worker's settings: command-line flags, environment variables and a TOML file,
// merged with CLI > env > file > default, checked, and named in every error.
//
// Clap reads a flag or its environment variable (so CLI > env comes from clap); the file
// fills what both left unset. Every setting has one name: `snake_case` in the file,
// `--kebab-case` on the command line, `SYNC_WORKER_UPPER_CASE` in the environment.
use clap::{Args, ValueEnum};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the worker runs; `prod` tightens the startup checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Prod,
    Integration,
    Test,
    Dev,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Prod => "prod",
            Environment::Integration => "integration",
            Environment::Test => "test",
            Environment::Dev => "dev",
        }
    }
}

/// An address to listen on, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

#[derive(Args, Debug, Clone, Default)]
pub struct WorkerArgs {
    /// TOML file with settings (keys are the flag names in snake_case). Flags and
    /// environment variables override it.
    #[arg(long, env = "SYNC_WORKER_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// PostgreSQL connection URL of the database where pg_sync is installed.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Check the configuration, the database and the ports, print a summary and exit
    /// (0 = the worker would start).
    #[arg(long)]
    pub check: bool,

    /// Executor processes (one Python interpreter each) running jobs in parallel.
    /// Default: the number of CPU cores.
    #[arg(long, env = "SYNC_WORKER_EXECUTORS")]
    pub executors: Option<u16>,

    /// Most jobs an executor runs in one database transaction (default 500).
    #[arg(long, env = "SYNC_WORKER_BATCH_SIZE")]
    pub batch_size: Option<u32>,

    /// Queue poll when no notification arrives (default 1s). Durations: 500ms, 2s,
    /// 1m, 1h (a plain number = seconds).
    #[arg(long, env = "SYNC_WORKER_POLL_INTERVAL", value_parser = parse_duration)]
    pub poll_interval: Option<Duration>,

    /// Time a job may run before an exception is raised in its Python code (default
    /// 300s). A task's `time_limit` overrides it.
    #[arg(long, env = "SYNC_WORKER_SOFT_TIME_LIMIT", value_parser = parse_duration)]
    pub soft_time_limit: Option<Duration>,

    /// Time after which a job that ignored the soft limit is stopped by killing its
    /// executor (default 330s).
    #[arg(long, env = "SYNC_WORKER_HARD_TIME_LIMIT", value_parser = parse_duration)]
    pub hard_time_limit: Option<Duration>,

    /// On SIGTERM/SIGINT: how long running jobs may take to finish (default 30s).
    #[arg(long, env = "SYNC_WORKER_GRACE_PERIOD", value_parser = parse_duration)]
    pub grace_period: Option<Duration>,

    /// How often jobs of dead workers are looked for (default 2s).
    #[arg(long, env = "SYNC_WORKER_RESCUE_INTERVAL", value_parser = parse_duration)]
    pub rescue_interval: Option<Duration>,

    /// At start, how long to keep trying an unreachable database before giving up
    /// (default 0s: refuse at once). Once running, the worker always reconnects.
    #[arg(long, env = "SYNC_WORKER_WAIT_FOR_DATABASE", value_parser = parse_duration)]
    pub wait_for_database: Option<Duration>,

    /// Log line format: text or json (default text).
    #[arg(long, env = "SYNC_WORKER_LOG_FORMAT", global = true)]
    pub log_format: Option<LogFormat>,

    /// Same as --log-format json (kept for older scripts).
    #[arg(long, env = "SYNC_WORKER_LOG_JSON", global = true, hide = true, value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub log_json: bool,

    /// Log level or tracing filter, e.g. `info`, `debug`, `sync_worker=debug`
    /// (default: RUST_LOG, else info).
    #[arg(long, env = "SYNC_WORKER_LOG_LEVEL", global = true)]
    pub log_level: Option<String>,

    /// prod, integration, test or dev (default dev). In prod the worker refuses to
    /// start without an admin token, JSON logs and TLS to a remote database.
    #[arg(long, env = "SYNC_WORKER_ENVIRONMENT")]
    pub environment: Option<Environment>,

    /// Start in prod even though some prod checks fail (each is logged as a warning).
    #[arg(long, env = "SYNC_WORKER_ALLOW_UNSAFE_PROD", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub allow_unsafe_prod: bool,

    /// Address of the webhook server (`<base_url>/sync/webhook/<token>` is served
    /// here), or `off` (default 127.0.0.1:8780; use 0.0.0.0:PORT to serve all
    /// interfaces, port 0 for any free port).
    #[arg(long, env = "SYNC_WORKER_WEBHOOK_LISTEN", value_parser = parse_listen)]
    pub webhook_listen: Option<Listen>,

    /// Address of the admin HTTP API, or `off` (default 127.0.0.1:8781).
    #[arg(long, env = "SYNC_WORKER_ADMIN_LISTEN", value_parser = parse_listen)]
    pub admin_listen: Option<Listen>,

    /// Bearer token the admin API requires (`Authorization: Bearer TOKEN`); none by
    /// default (then only the listen address protects it).
    #[arg(long, env = "SYNC_WORKER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Public URL under which the webhook server is reachable, e.g.
    /// https://erp.example.com; stored as the `base_url` setting of the database (the
    /// prefix of every webhook URL).
    #[arg(long, env = "SYNC_WORKER_BASE_URL")]
    pub base_url: Option<String>,

    /// Largest webhook request body accepted (default 10MiB); larger ones get 413.
    #[arg(long, env = "SYNC_WORKER_MAX_BODY_SIZE", value_parser = parse_size)]
    pub max_body_size: Option<usize>,

    /// Executor processes that run webhook handlers (default 1; 0 = serve no webhooks).
    #[arg(long, env = "SYNC_WORKER_WEBHOOK_EXECUTORS")]
    pub webhook_executors: Option<u16>,

    /// Soft time limit of a webhook handler (default 30s); the hard limit adds the
    /// same margin as for jobs.
    #[arg(long, env = "SYNC_WORKER_WEBHOOK_TIME_LIMIT", value_parser = parse_duration)]
    pub webhook_time_limit: Option<Duration>,

    /// Minimum time per job in milliseconds, to go easy on remote APIs (default 0 = off).
    #[arg(long, env = "SYNC_WORKER_THROTTLE_MS")]
    pub throttle_ms: Option<u64>,

    /// Warn when the worker's clock and the database's differ by more than this many
    /// milliseconds (default 1000).
    #[arg(long, env = "SYNC_WORKER_MAX_TIME_DRIFT_MS")]
    pub max_time_drift_ms: Option<u64>,

    /// CA certificate file (PEM) to verify the database server's TLS certificate
    /// (default: the system's certificates).
    #[arg(long, env = "SYNC_WORKER_DATABASE_CA_FILE", global = true)]
    pub database_ca_file: Option<PathBuf>,

    /// Directories (`:`-separated) searched first for evaluation-context providers.
    #[arg(long, env = "SYNC_EVAL_CONTEXT_PATH")]
    pub eval_context_path: Option<String>,

    /// PostgreSQL URL the executors (which run task code) log in with. Its login must
    /// be sync_executor or a member of it and nothing else. Default: database_url with
    /// the login sync_executor, whose password pg_sync manages.
    #[arg(
        long,
        env = "SYNC_WORKER_EXECUTOR_DATABASE_URL",
        hide_env_values = true
    )]
    pub executor_database_url: Option<String>,

    /// Memory one executor process may use (default 2GiB); a job that needs more fails
    /// with MemoryError instead of exhausting the host.
    #[arg(long, env = "SYNC_WORKER_EXECUTOR_MEMORY_LIMIT", value_parser = parse_size)]
    pub executor_memory_limit: Option<usize>,

    /// Webhook calls accepted and not answered yet (default 64); more get 503 with
    /// Retry-After until some are answered.
    #[arg(long, env = "SYNC_WORKER_WEBHOOK_QUEUE_SIZE")]
    pub webhook_queue_size: Option<u32>,
}

/// The file's keys: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    database_url: Option<String>,
    executors: Option<u16>,
    batch_size: Option<u32>,
    poll_interval: Option<DurationSetting>,
    soft_time_limit: Option<DurationSetting>,
    hard_time_limit: Option<DurationSetting>,
    grace_period: Option<DurationSetting>,
    rescue_interval: Option<DurationSetting>,
    wait_for_database: Option<DurationSetting>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    environment: Option<Environment>,
    allow_unsafe_prod: Option<bool>,
    webhook_listen: Option<ListenSetting>,
    admin_listen: Option<ListenSetting>,
    admin_token: Option<String>,
    base_url: Option<String>,
    max_body_size: Option<SizeSetting>,
    webhook_executors: Option<u16>,
    webhook_time_limit: Option<DurationSetting>,
    throttle_ms: Option<u64>,
    max_time_drift_ms: Option<u64>,
    database_ca_file: Option<PathBuf>,
    eval_context_path: Option<EvalPath>,
    executor_database_url: Option<String>,
    executor_memory_limit: Option<SizeSetting>,
    webhook_queue_size: Option<u32>,
}

/// A duration in the file: "2s", "500ms" or a number of seconds.
#[derive(Debug, Clone, Copy)]
struct DurationSetting(Duration);

impl<'de> Deserialize<'de> for DurationSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(u64),
            Float(f64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(t) => t,
            Raw::Int(n) => n.to_string(),
            Raw::Float(f) => f.to_string(),
        };
        parse_duration(&text)
            .map(DurationSetting)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy)]
struct SizeSetting(usize);

impl<'de> Deserialize<'de> for SizeSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(u64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(t) => t,
            Raw::Int(n) => n.to_string(),
        };
        parse_size(&text)
            .map(SizeSetting)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy)]
struct ListenSetting(Listen);

impl<'de> Deserialize<'de> for ListenSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_listen(&text)
            .map(ListenSetting)
            .map_err(serde::de::Error::custom)
    }
}

/// Provider directories: a list, or one `:`-separated string.
#[derive(Debug, Clone)]
struct EvalPath(String);

impl<'de> Deserialize<'de> for EvalPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        Ok(EvalPath(match Raw::deserialize(d)? {
            Raw::One(s) => s,
            Raw::Many(v) => v.join(":"),
        }))
    }
}

/// Settings of a running worker, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// The TOML file the settings came from, if any.
    pub file: Option<PathBuf>,
    pub database_url: String,
    pub executors: usize,
    pub batch_size: usize,
    pub poll_interval: Duration,
    pub soft_time_limit: Duration,
    pub hard_time_limit: Duration,
    pub grace_period: Duration,
    pub rescue_interval: Duration,
    pub wait_for_database: Duration,
    pub log_format: LogFormat,
    pub log_level: Option<String>,
    pub environment: Environment,
    pub allow_unsafe_prod: bool,
    pub webhook_listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub admin_token: Option<String>,
    pub base_url: Option<String>,
    pub max_body_size: usize,
    pub webhook_executors: usize,
    pub webhook_time_limit: Duration,
    pub throttle: Duration,
    pub max_time_drift: Duration,
    pub database_ca_file: Option<PathBuf>,
    pub eval_context_path: Option<String>,
    pub executor_database_url: Option<String>,
    pub executor_memory_limit: usize,
    pub webhook_queue_size: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("database_url is not set: give --database-url, DATABASE_URL or `database_url` in the config file, e.g. postgres://user@host/db")]
    NoDatabaseUrl,
    #[error("config file {path}: {why}")]
    File { path: String, why: String },
    #[error("{setting}: {why}")]
    Invalid { setting: &'static str, why: String },
}

fn invalid(setting: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        why: why.into(),
    }
}

impl Config {
    /// The settings from the command line, the environment and the config file.
    pub fn from_args(args: &WorkerArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Self::merge(args, file, args.config.clone())
    }

    fn merge(
        args: &WorkerArgs,
        f: FileConfig,
        path: Option<PathBuf>,
    ) -> Result<Config, ConfigError> {
        let dur = |cli: Option<Duration>, file: Option<DurationSetting>, default: Duration| {
            cli.or(file.map(|d| d.0)).unwrap_or(default)
        };
        let database_url = args
            .database_url
            .clone()
            .or(f.database_url)
            .ok_or(ConfigError::NoDatabaseUrl)?;
        let parsed = crate::pg::parse_url(&database_url)
            .map_err(|e| invalid("database_url", format!("not a valid PostgreSQL URL: {e}")))?
            .config;
        if parsed.get_hosts().is_empty() {
            return Err(invalid(
                "database_url",
                "names no host: write postgres://user@HOST/db (or host=/run/postgresql for a socket)",
            ));
        }
        let executors = match args.executors.or(f.executors) {
            Some(0) => return Err(invalid("executors", "must be at least 1")),
            Some(n) if n > 256 => return Err(invalid("executors", "must be at most 256")),
            Some(n) => n as usize,
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        };
        let batch_size = match args.batch_size.or(f.batch_size).unwrap_or(500) {
            n @ 1..=10_000 => n as usize,
            _ => return Err(invalid("batch_size", "must be between 1 and 10000")),
        };
        let poll_interval = dur(args.poll_interval, f.poll_interval, Duration::from_secs(1));
        let soft_time_limit = dur(
            args.soft_time_limit,
            f.soft_time_limit,
            Duration::from_secs(300),
        );
        let hard_time_limit = dur(
            args.hard_time_limit,
            f.hard_time_limit,
            Duration::from_secs(330),
        );
        let grace_period = dur(args.grace_period, f.grace_period, Duration::from_secs(30));
        let rescue_interval = dur(
            args.rescue_interval,
            f.rescue_interval,
            Duration::from_secs(2),
        );
        let wait_for_database = dur(args.wait_for_database, f.wait_for_database, Duration::ZERO);
        let webhook_time_limit = dur(
            args.webhook_time_limit,
            f.webhook_time_limit,
            Duration::from_secs(30),
        );
        for (name, value) in [
            ("poll_interval", poll_interval),
            ("soft_time_limit", soft_time_limit),
            ("rescue_interval", rescue_interval),
            ("webhook_time_limit", webhook_time_limit),
        ] {
            if value.is_zero() {
                return Err(invalid(name, "must be longer than zero"));
            }
        }
        if hard_time_limit <= soft_time_limit {
            return Err(invalid(
                "hard_time_limit",
                format!("({hard_time_limit:?}) must be longer than soft_time_limit ({soft_time_limit:?})"),
            ));
        }
        let log_format = if args.log_json {
            LogFormat::Json
        } else {
            args.log_format.or(f.log_format).unwrap_or(LogFormat::Text)
        };
        let log_level = args.log_level.clone().or(f.log_level);
        if let Some(level) = &log_level {
            tracing_subscriber::EnvFilter::try_new(level)
                .map_err(|e| invalid("log_level", format!("`{level}`: {e}")))?;
        }
        let webhook_listen = args
            .webhook_listen
            .or(f.webhook_listen.map(|l| l.0))
            .unwrap_or(Listen(Some(([127, 0, 0, 1], 8780).into())))
            .0;
        let admin_listen = args
            .admin_listen
            .or(f.admin_listen.map(|l| l.0))
            .unwrap_or(Listen(Some(([127, 0, 0, 1], 8781).into())))
            .0;
        if let (Some(w), Some(a)) = (webhook_listen, admin_listen) {
            if w == a && w.port() != 0 {
                return Err(invalid(
                    "admin_listen",
                    format!("{a} is also webhook_listen: give the admin API its own port"),
                ));
            }
        }
        let admin_token = args.admin_token.clone().or(f.admin_token);
        if admin_token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            // An empty value must not quietly mean "no authentication".
            return Err(invalid(
                "admin_token",
                "is empty: leave it unset to run the admin API without a token (then only admin_listen protects it), or set a long random value",
            ));
        }
        if let Some(t) = &admin_token {
            if t.len() < 16 {
                return Err(invalid(
                    "admin_token",
                    "is shorter than 16 characters: use a long random value (e.g. `openssl rand -hex 32`)",
                ));
            }
        }
        let base_url = match args.base_url.clone().or(f.base_url) {
            Some(u) => Some(check_base_url(&u)?),
            None => None,
        };
        let max_body_size = args
            .max_body_size
            .or(f.max_body_size.map(|s| s.0))
            .unwrap_or(10 << 20);
        if max_body_size == 0 {
            return Err(invalid("max_body_size", "must be larger than zero"));
        }
        let webhook_executors = match args.webhook_executors.or(f.webhook_executors) {
            Some(n) if n > 64 => return Err(invalid("webhook_executors", "must be at most 64")),
            Some(n) => n as usize,
            None => 1,
        };
        let executor_database_url = args
            .executor_database_url
            .clone()
            .or(f.executor_database_url);
        if let Some(url) = &executor_database_url {
            crate::pg::parse_url(url).map_err(|e| {
                invalid(
                    "executor_database_url",
                    format!("not a valid PostgreSQL URL: {e}"),
                )
            })?;
        }
        let executor_memory_limit = args
            .executor_memory_limit
            .or(f.executor_memory_limit.map(|s| s.0))
            .unwrap_or(2 << 30);
        if executor_memory_limit < 256 << 20 {
            return Err(invalid(
                "executor_memory_limit",
                "must be at least 256MiB (an executor's Python interpreter alone needs about 100MiB)",
            ));
        }
        let webhook_queue_size = match args.webhook_queue_size.or(f.webhook_queue_size) {
            Some(0) => return Err(invalid("webhook_queue_size", "must be at least 1")),
            Some(n) if n > 100_000 => {
                return Err(invalid("webhook_queue_size", "must be at most 100000"))
            }
            Some(n) => n as usize,
            None => 64,
        };
        let database_ca_file = args.database_ca_file.clone().or(f.database_ca_file);
        if let Some(ca) = &database_ca_file {
            if !ca.is_file() {
                return Err(invalid(
                    "database_ca_file",
                    format!("{} is not a readable file", ca.display()),
                ));
            }
        }
        Ok(Config {
            file: path,
            database_url,
            executors,
            batch_size,
            poll_interval,
            soft_time_limit,
            hard_time_limit,
            grace_period,
            rescue_interval,
            wait_for_database,
            log_format,
            log_level,
            environment: args
                .environment
                .or(f.environment)
                .unwrap_or(Environment::Dev),
            allow_unsafe_prod: args.allow_unsafe_prod || f.allow_unsafe_prod.unwrap_or(false),
            webhook_listen: webhook_listen.filter(|_| webhook_executors > 0),
            admin_listen,
            admin_token,
            base_url,
            max_body_size,
            webhook_executors,
            webhook_time_limit,
            throttle: Duration::from_millis(args.throttle_ms.or(f.throttle_ms).unwrap_or(0)),
            max_time_drift: Duration::from_millis(
                args.max_time_drift_ms
                    .or(f.max_time_drift_ms)
                    .unwrap_or(1000),
            ),
            database_ca_file,
            eval_context_path: args
                .eval_context_path
                .clone()
                .or(f.eval_context_path.map(|p| p.0)),
            executor_database_url,
            executor_memory_limit,
            webhook_queue_size,
        })
    }

    /// The hard limit of a webhook handler: its soft limit plus the jobs' margin.
    pub fn webhook_hard_limit(&self) -> Duration {
        self.webhook_time_limit + (self.hard_time_limit - self.soft_time_limit)
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: shown.clone(),
        why: format!("cannot read it: {e}"),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: shown,
        why: e.to_string().trim_end().to_string(),
    })
}

fn check_base_url(url: &str) -> Result<String, ConfigError> {
    let trimmed = url.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['?', '#', ' ']) => {
            Ok(trimmed.to_string())
        }
        _ => Err(invalid(
            "base_url",
            format!("`{url}` is not an http(s) URL such as https://erp.example.com"),
        )),
    }
}

/// `1.5s`, `500ms`, `2m`, `1h`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (examples: 500ms, 2s, 5m, 1h)"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use ms, s, m or h)"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `10MiB`, `512KiB`, `1MB`, `2048` (bytes).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size (examples: 10MiB, 512KiB, 1000000)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use B, KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    value
        .checked_mul(factor)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// `127.0.0.1:8780`, `[::1]:8780`, `0.0.0.0:0` (any free port) or `off`.
pub fn parse_listen(text: &str) -> Result<Listen, String> {
    let t = text.trim();
    if matches!(t, "off" | "none" | "false" | "") {
        return Ok(Listen(None));
    }
    let t = t
        .strip_prefix("localhost:")
        .map_or_else(|| t.to_string(), |port| format!("127.0.0.1:{port}"));
    t.parse::<SocketAddr>().map(|a| Listen(Some(a))).map_err(|_| {
        format!("`{text}` is not an address to listen on (examples: 127.0.0.1:8780, 0.0.0.0:8780, [::1]:8780, off)")
    })
}

/// Tests: the worker's flags alone, parsed as the command line does.
#[cfg(test)]
#[derive(clap::Parser)]
pub(crate) struct Flags {
    #[command(flatten)]
    pub worker: WorkerArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(list: &[&str]) -> WorkerArgs {
        let mut all = vec!["sync_worker"];
        all.extend_from_slice(list);
        Flags::try_parse_from(all).expect("parse").worker
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5 days").is_err());
    }

    #[test]
    fn sizes_and_addresses() {
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("512kib"), Ok(512 << 10));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("42"), Ok(42));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert_eq!(parse_listen("off"), Ok(Listen(None)));
        assert_eq!(
            parse_listen("localhost:80"),
            Ok(Listen(Some(([127, 0, 0, 1], 80).into())))
        );
        assert!(parse_listen("[::1]:9").is_ok());
        assert!(parse_listen("example.com:80").is_err());
        assert!(parse_listen("127.0.0.1").is_err());
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: FileConfig = toml::from_str(
            "database_url = 'postgres://a@file/db'\nbatch_size = 7\npoll_interval = '3s'\n\
             throttle_ms = 20\nwebhook_listen = 'off'\neval_context_path = ['/a', '/b']",
        )
        .expect("toml");
        let cli = args(&["--batch-size", "9", "--database-url", "postgres://a@cli/db"]);
        let cfg = Config::merge(&cli, file, None).expect("config");
        assert_eq!(cfg.database_url, "postgres://a@cli/db");
        assert_eq!(cfg.batch_size, 9);
        assert_eq!(cfg.poll_interval, Duration::from_secs(3));
        assert_eq!(cfg.throttle, Duration::from_millis(20));
        assert_eq!(cfg.webhook_listen, None);
        assert_eq!(cfg.eval_context_path.as_deref(), Some("/a:/b"));
        assert_eq!(cfg.grace_period, Duration::from_secs(30));
        assert_eq!(cfg.admin_listen, Some(([127, 0, 0, 1], 8781).into()));
        assert_eq!(cfg.environment, Environment::Dev);
    }

    #[test]
    fn errors_name_the_setting() {
        let bad = toml::from_str::<FileConfig>("poll_interval = 'soon'").unwrap_err();
        assert!(bad.to_string().contains("poll_interval"), "{bad}");
        let unknown = toml::from_str::<FileConfig>("pol_interval = '1s'").unwrap_err();
        assert!(unknown.to_string().contains("pol_interval"), "{unknown}");
        let url = args(&["--database-url", "postgres://a@h/db"]);
        let e = Config::merge(
            &url,
            toml::from_str("hard_time_limit = '10s'\nsoft_time_limit = '20s'").expect("toml"),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("hard_time_limit"), "{e}");
        let e = Config::merge(
            &url,
            toml::from_str("base_url = 'ftp://x'").expect("toml"),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("base_url"), "{e}");
        let e = Config::merge(&args(&[]), FileConfig::default(), None).unwrap_err();
        assert!(matches!(e, ConfigError::NoDatabaseUrl));
    }
}
