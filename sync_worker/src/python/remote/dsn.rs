// The connection string of a remote database, parsed once and never shown: messages
// name the database as user@host:port/dbname and are scrubbed of its password.
use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::Config;

/// When the DSN sets no connect_timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed DSN: what to connect to, how to name it, what to hide.
pub(super) struct Dsn {
    pub config: Config,
    /// The DSN's TLS policy (libpq's sslmode, sslrootcert), as for the worker's own.
    pub target: crate::pg::Target,
    /// `user@host:port/dbname`.
    pub label: String,
    pub secrets: Secrets,
}

/// Values scrubbed from every message (the server may echo parts of the connection
/// string): the DSN itself and its password, also percent-encoded.
pub(super) struct Secrets(Vec<String>);

impl Secrets {
    pub fn scrub(&self, message: &str) -> String {
        let mut out = message.to_string();
        for s in &self.0 {
            if !s.is_empty() {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

/// Parse `dsn` (URL or key=value form). The error message quotes no value of it.
pub(super) fn parse(dsn: &str, application_name: Option<&str>) -> Result<Dsn, String> {
    let target = crate::pg::parse_url(dsn).map_err(|e| {
        let e = match e {
            crate::pg::UrlError::Parse(e) => e,
            other => return format!("the connection string is not valid ({other})"),
        };
        // Parse errors name options, not values; the one that quotes a character is
        // cut before it (the character could belong to the password).
        let mut why = String::new();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            if !why.is_empty() {
                why.push_str(": ");
            }
            why.push_str(&s.to_string());
            source = s.source();
        }
        if why.is_empty() {
            why = e.to_string();
        }
        if let Some(i) = why.find(" but got") {
            why.truncate(i);
        }
        format!(
            "the connection string is not valid ({why}); use postgresql://user:password@host:port/dbname or host=... port=... dbname=... user=... password=..."
        )
    })?;
    let mut config = target.config.clone();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name(application_name.unwrap_or("pg_sync"));
    }
    let mut secrets = vec![dsn.to_string()];
    if let Some(p) = config.get_password() {
        let p = String::from_utf8_lossy(p).into_owned();
        // Also as it may appear percent-encoded in a URL.
        let encoded: String = p
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        secrets.push(encoded);
        secrets.push(p);
    }
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    Ok(Dsn {
        label: describe(&config),
        config,
        target,
        secrets: Secrets(secrets),
    })
}

/// `user@host:port/dbname`: how messages name a remote database (never its password).
fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("?");
    let dbname = config.get_dbname().unwrap_or(user);
    format!("{user}@{host}:{port}/{dbname}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_scrubbed_and_never_named() {
        let dsn = parse("postgresql://alice:p%40ss%20w@db.example:6543/shop", None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dsn.label, "alice@db.example:6543/shop");
        assert_eq!(
            dsn.secrets.scrub("password p@ss w, in a URL p%40ss%20w"),
            "password ***, in a URL ***"
        );
        let keywords = parse("host=h user=bob password=s3cret", Some("job 7"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keywords.label, "bob@h:5432/bob");
        assert_eq!(keywords.config.get_application_name(), Some("job 7"));
        assert_eq!(keywords.secrets.scrub("FATAL: s3cret"), "FATAL: ***");
    }

    #[test]
    fn a_bad_dsn_is_refused_without_quoting_it() {
        let err = parse("host=h password=s3cret port=x9", None)
            .err()
            .expect("refused");
        assert!(
            err.starts_with("the connection string is not valid"),
            "{err}"
        );
        assert!(!err.contains("s3cret") && !err.contains("x9"), "{err}");
    }
}
