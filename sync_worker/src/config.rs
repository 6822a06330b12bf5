// Command line of sync_worker: the worker's settings (flags or environment variables)
// and the hidden `executor` subcommand the supervisor uses to start its executors.
use clap::{Args, Parser, Subcommand};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "sync_worker",
    version,
    about = "pg_sync worker: claims jobs from the database and runs their Python task code"
)]
pub struct Cli {
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the worker (the default).
    Run,
    /// Internal: one executor process, started by the worker itself.
    #[command(hide = true)]
    Executor(ExecutorArgs),
    /// Debugging: run one job now, in its own transaction, and print the outcome.
    #[command(hide = true)]
    RunJob(crate::run_job::RunJobArgs),
    /// Print a project's definition as a JSON document (`export NAME > FILE`).
    Export(crate::project_io::ExportArgs),
    /// Create a project from a document written by `export` (`--replace`: update it).
    Import(crate::project_io::ImportArgs),
}

#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// PostgreSQL connection URL of the database where pg_sync is installed.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Executor processes (one Python interpreter each) running jobs in parallel.
    /// Default: the number of CPU cores.
    #[arg(long, env = "SYNC_WORKER_EXECUTORS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub executors: Option<u16>,

    /// Most jobs an executor runs in one database transaction (one commit per batch).
    #[arg(long, env = "SYNC_WORKER_BATCH_SIZE", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,

    /// How often the queue is polled when no notification arrives (jobs whose eta
    /// came, missed notifications). Durations: 500ms, 2s, 1m, 1h (plain number = seconds).
    #[arg(long, env = "SYNC_WORKER_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// Time a job may run before an exception is raised inside its Python code (soft
    /// limit). A task's own `time_limit` column overrides it.
    #[arg(long, env = "SYNC_WORKER_SOFT_TIME_LIMIT", default_value = "300s", value_parser = parse_duration)]
    pub soft_time_limit: Duration,

    /// Time after which a job that ignored the soft limit is stopped by killing its
    /// executor process; the job fails. With a task time_limit, the hard limit is that
    /// limit plus (hard - soft) of these flags.
    #[arg(long, env = "SYNC_WORKER_HARD_TIME_LIMIT", default_value = "330s", value_parser = parse_duration)]
    pub hard_time_limit: Duration,

    /// On SIGTERM/SIGINT: how long running jobs may take to finish before they are
    /// stopped and given back to the queue.
    #[arg(long, env = "SYNC_WORKER_GRACE_PERIOD", default_value = "30s", value_parser = parse_duration)]
    pub grace_period: Duration,

    /// How often this worker looks for jobs of dead workers to run again.
    #[arg(long, env = "SYNC_WORKER_RESCUE_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub rescue_interval: Duration,

    /// Log as JSON lines instead of text (log level: RUST_LOG, default info).
    #[arg(long, env = "SYNC_WORKER_LOG_JSON", global = true)]
    pub log_json: bool,
}

/// What the supervisor tells an executor it starts (the database URL travels in the
/// environment, not on the command line where `ps` would show it).
#[derive(Args, Debug, Clone)]
pub struct ExecutorArgs {
    /// File descriptor of the shared status page.
    #[arg(long)]
    pub status_fd: i32,
    /// Pid of the supervisor; the executor exits if it is not its parent.
    #[arg(long)]
    pub parent_pid: u32,
    /// Index of this executor in the pool (for log lines).
    #[arg(long)]
    pub index: usize,
    #[arg(long, value_parser = parse_duration)]
    pub soft_time_limit: Duration,
    #[arg(long, value_parser = parse_duration)]
    pub hard_time_limit: Duration,
}

/// Settings of a running worker, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub executors: usize,
    pub batch_size: usize,
    pub poll_interval: Duration,
    pub soft_time_limit: Duration,
    pub hard_time_limit: Duration,
    pub grace_period: Duration,
    pub rescue_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--database-url (or DATABASE_URL) is not set: give the URL of the database where pg_sync is installed, e.g. postgres://user@host/db")]
    NoDatabaseUrl,
    #[error("--database-url is not a valid PostgreSQL URL: {0}")]
    BadDatabaseUrl(String),
    #[error("--hard-time-limit ({hard:?}) must be longer than --soft-time-limit ({soft:?})")]
    HardNotAboveSoft { soft: Duration, hard: Duration },
    #[error("--{0} must be longer than zero")]
    Zero(&'static str),
}

impl Config {
    pub fn from_args(args: &WorkerArgs) -> Result<Config, ConfigError> {
        let database_url = args
            .database_url
            .clone()
            .ok_or(ConfigError::NoDatabaseUrl)?;
        database_url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| ConfigError::BadDatabaseUrl(e.to_string()))?;
        for (name, value) in [
            ("poll-interval", args.poll_interval),
            ("soft-time-limit", args.soft_time_limit),
            ("grace-period", args.grace_period),
            ("rescue-interval", args.rescue_interval),
        ] {
            if value.is_zero() && name != "grace-period" {
                return Err(ConfigError::Zero(name));
            }
        }
        if args.hard_time_limit <= args.soft_time_limit {
            return Err(ConfigError::HardNotAboveSoft {
                soft: args.soft_time_limit,
                hard: args.hard_time_limit,
            });
        }
        let executors = match args.executors {
            Some(n) => n as usize,
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        };
        Ok(Config {
            database_url,
            executors,
            batch_size: args.batch_size as usize,
            poll_interval: args.poll_interval,
            soft_time_limit: args.soft_time_limit,
            hard_time_limit: args.hard_time_limit,
            grace_period: args.grace_period,
            rescue_interval: args.rescue_interval,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
