// The rules a setting's value must follow, one function per rule, used by the settings'
// declarations (settings.rs) and by the rules that relate two settings (`cross_checks`).
//
// A rule returns why a value is refused; the caller prefixes the setting's name.
use super::values::{DurationValue, Listen, PathList, SizeValue};
use super::{invalid, Config, ConfigError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The value as it is.
pub fn same<T>(value: T) -> Result<T, String> {
    Ok(value)
}

/// A rule for a setting that may be unset: unset stays unset.
pub fn optional<T, U>(
    rule: impl Fn(T) -> Result<U, String>,
) -> impl Fn(Option<T>) -> Result<Option<U>, String> {
    move |value| value.map(&rule).transpose()
}

pub fn duration(value: DurationValue) -> Result<Duration, String> {
    Ok(value.0)
}

pub fn nonzero_duration(value: DurationValue) -> Result<Duration, String> {
    if value.0.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(value.0)
}

/// A deprecated setting's number of milliseconds, as the duration that replaces it.
pub fn millis(value: u64) -> DurationValue {
    DurationValue(Duration::from_millis(value))
}

/// A count from `low` to `high`, refused as "at least" / "at most".
pub fn count<T: Into<u64>>(low: u64, high: u64) -> impl Fn(T) -> Result<usize, String> {
    move |value| match value.into() {
        n if n < low => Err(format!("must be at least {low}")),
        n if n > high => Err(format!("must be at most {high}")),
        n => usize::try_from(n).map_err(|_| format!("must be at most {high}")),
    }
}

/// A count from `low` to `high`, refused as "between".
pub fn between<T: Into<u64>>(low: u64, high: u64) -> impl Fn(T) -> Result<usize, String> {
    let within = count(low, high);
    move |value| within(value).map_err(|_| format!("must be between {low} and {high}"))
}

/// Executors: a count, or the number of CPU cores when unset.
pub fn executors(value: Option<u16>) -> Result<usize, String> {
    match value {
        Some(n) => count(1, 256)(n),
        None => Ok(std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)),
    }
}

pub fn nonzero_size(value: SizeValue) -> Result<usize, String> {
    if value.0 == 0 {
        return Err("must be larger than zero".into());
    }
    Ok(value.0)
}

pub fn memory_limit(value: SizeValue) -> Result<usize, String> {
    if value.0 < 256 << 20 {
        return Err(
            "must be at least 256MiB (an executor's Python interpreter alone needs about 100MiB)"
                .into(),
        );
    }
    Ok(value.0)
}

pub fn listen(value: Listen) -> Result<Option<SocketAddr>, String> {
    Ok(value.0)
}

pub fn path_list(value: PathList) -> Result<String, String> {
    Ok(value.0)
}

/// A path list whose every entry is a directory: a mistyped virtual environment would
/// otherwise show only as an ImportError in some job.
pub fn directories(value: PathList) -> Result<String, String> {
    for dir in std::env::split_paths(&value.0) {
        if !dir.as_os_str().is_empty() && !dir.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
    }
    Ok(value.0)
}

/// The URL, or "" when libpq's variables say where the database is; what the URL
/// leaves out is filled in at each connection (pg::resolve).
pub fn database_url(url: Option<String>) -> Result<String, String> {
    let Some(url) = crate::pg::url_or_environment(url.as_deref()) else {
        return Err("database_url is not set and no PGHOST, PGHOSTADDR, PGPORT, PGUSER or PGDATABASE says where the database is: give --database-url, DATABASE_URL or `database_url` in the config file, e.g. postgres://sync_worker@db.example.com/erp, or libpq's variables".into());
    };
    crate::pg::resolve(url).map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
    Ok(url.to_string())
}

pub fn executor_database_url(url: String) -> Result<String, String> {
    postgres_url(url.clone())?;
    Ok(url)
}

fn postgres_url(url: String) -> Result<tokio_postgres::Config, String> {
    crate::pg::parse_url(&url)
        .map(|p| p.config)
        .map_err(|e| format!("not a valid PostgreSQL URL: {e}"))
}

pub fn log_level(level: String) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(&level).map_err(|e| format!("`{level}`: {e}"))?;
    Ok(level)
}

pub fn admin_token(token: String) -> Result<String, String> {
    if token.trim().is_empty() {
        // An empty value must not quietly mean "no authentication".
        return Err("is empty: leave it unset to run the admin API without a token (then only admin_listen protects it), or set a long random value".into());
    }
    if token.len() < 16 {
        return Err(
            "is shorter than 16 characters: use a long random value (e.g. `openssl rand -hex 32`)"
                .into(),
        );
    }
    Ok(token)
}

/// An http(s) URL, without its trailing slash.
pub fn base_url(url: String) -> Result<String, String> {
    let trimmed = url.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['?', '#', ' ']) => {
            Ok(trimmed.to_string())
        }
        _ => Err(format!(
            "`{url}` is not an http(s) URL such as https://erp.example.com"
        )),
    }
}

pub fn readable_file(path: PathBuf) -> Result<PathBuf, String> {
    if !path.is_file() {
        return Err(format!("{} is not a readable file", path.display()));
    }
    Ok(path)
}

/// The rules that relate two settings, after each was checked on its own.
pub fn cross_checks(mut cfg: Config) -> Result<Config, ConfigError> {
    if cfg.hard_time_limit <= cfg.soft_time_limit {
        return Err(invalid(
            "hard_time_limit",
            format!(
                "({:?}) must be longer than soft_time_limit ({:?})",
                cfg.hard_time_limit, cfg.soft_time_limit
            ),
        ));
    }
    if let (Some(w), Some(a)) = (cfg.webhook_listen, cfg.admin_listen) {
        if w == a && w.port() != 0 {
            return Err(invalid(
                "admin_listen",
                format!("{a} is also webhook_listen: give the admin API its own port"),
            ));
        }
    }
    // Without webhook executors there is nothing to serve webhooks with.
    if cfg.webhook_executors == 0 {
        cfg.webhook_listen = None;
    }
    Ok(cfg)
}
