// libpq's conventions for what a database URL leaves out: the PG* environment variables,
// the password file (PGPASSFILE or ~/.pgpass) and libpq's defaults, in libpq's order.
//
// Only the worker's own logins use them. Task code's remote databases do not: a DSN
// written in a project must not be handed the worker's PGPASSWORD.
use std::path::{Path, PathBuf};
use tokio_postgres::config::Host;

/// libpq's socket directory when neither the URL nor PGHOST names a host.
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";
const DEFAULT_PORT: u16 = 5432;

/// The variables that name the server or the login: any of them set stands in for a
/// missing database_url (with none, a worker given nothing would try the local socket).
const TARGET_VARS: [&str; 5] = ["PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE"];

/// Where the conventions are read: the process's environment and files, or a test's.
pub trait Env {
    /// A variable; an empty one counts as unset, as in libpq.
    fn var(&self, name: &str) -> Option<String>;
    /// The operating system user running the worker.
    fn os_user(&self) -> Option<String>;
    /// The password file's text, or None when it is missing or may not be used.
    fn passfile(&self, path: &Path) -> Option<String>;
}

/// The process's environment.
pub struct Process;

impl Env for Process {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    fn os_user(&self) -> Option<String> {
        passwd_entry().map(|(name, _)| name)
    }

    fn passfile(&self, path: &Path) -> Option<String> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_file() {
            return None;
        }
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "password file {} has group or world access and is not used: chmod 0600 it",
                path.display()
            );
            return None;
        }
        match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) => {
                tracing::warn!("cannot read password file {}: {e}", path.display());
                None
            }
        }
    }
}

/// The effective user's name and home directory, from the password database.
fn passwd_entry() -> Option<(String, PathBuf)> {
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to storage that lives across the call.
    let rc = unsafe {
        libc::getpwuid_r(
            libc::geteuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return None;
    }
    // SAFETY: on success both fields point at NUL-terminated strings inside `buf`.
    let text = |p: *const libc::c_char| unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy();
    Some((
        text(pwd.pw_name).into_owned(),
        PathBuf::from(&*text(pwd.pw_dir)),
    ))
}

/// True when the environment names a database for a worker given no URL.
pub fn names_a_target(env: &dyn Env) -> bool {
    TARGET_VARS.iter().any(|v| env.var(v).is_some())
}

/// What a URL said, before its gaps are filled.
pub struct Given<'a> {
    pub config: &'a tokio_postgres::Config,
    pub sslmode: Option<&'a str>,
    pub root_cert: bool,
    /// The URL names a port (tokio-postgres gives 5432 to a URL's host without one).
    pub port_given: bool,
}

/// The parameters (libpq keywords) the URL left out, from the environment, the password
/// file and the defaults: URL > environment > defaults. With `with_password` false no
/// password is looked up (the caller replaces the login anyway).
pub fn missing(given: &Given, env: &dyn Env, with_password: bool) -> Vec<(&'static str, String)> {
    let config = given.config;
    let mut out = Vec::new();
    let mut hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.to_string_lossy().into_owned(),
        })
        .collect();
    if hosts.is_empty() && config.get_hostaddrs().is_empty() {
        let host = env
            .var("PGHOST")
            .unwrap_or_else(|| DEFAULT_SOCKET_DIR.to_string());
        hosts = host.split(',').map(str::to_string).collect();
        out.push(("host", host));
    }
    let mut ports = config.get_ports().to_vec();
    if !given.port_given {
        if let Some(port) = env.var("PGPORT") {
            ports = port
                .split(',')
                .filter_map(|p| p.trim().parse().ok())
                .collect();
            // A bad PGPORT goes through, so that the connection says what is wrong.
            out.push(("port", port));
        }
    }
    let user = match config.get_user() {
        Some(user) => Some(user.to_string()),
        None => {
            let user = env.var("PGUSER").or_else(|| env.os_user());
            if let Some(user) = &user {
                out.push(("user", user.clone()));
            }
            user
        }
    };
    let dbname = match config.get_dbname() {
        Some(db) => Some(db.to_string()),
        None => {
            let db = env.var("PGDATABASE");
            if let Some(db) = &db {
                out.push(("dbname", db.clone()));
            }
            db.or_else(|| user.clone())
        }
    };
    if with_password && config.get_password().is_none() {
        let password = env.var("PGPASSWORD").or_else(|| {
            let user = user.as_deref()?;
            let path = env
                .var("PGPASSFILE")
                .map(PathBuf::from)
                .or_else(|| home(env).map(|h| h.join(".pgpass")))?;
            let text = env.passfile(&path)?;
            let db = dbname.as_deref().unwrap_or(user);
            hosts.iter().enumerate().find_map(|(i, host)| {
                let port = ports
                    .get(i)
                    .or(ports.first())
                    .copied()
                    .unwrap_or(DEFAULT_PORT);
                lookup(&text, &passfile_host(host), &port.to_string(), db, user)
            })
        });
        if let Some(password) = password {
            out.push(("password", password));
        }
    }
    if given.sslmode.is_none() {
        if let Some(mode) = env.var("PGSSLMODE") {
            out.push(("sslmode", mode));
        }
    }
    if !given.root_cert {
        if let Some(path) = env.var("PGSSLROOTCERT") {
            out.push(("sslrootcert", path));
        }
    }
    if config.get_application_name().is_none() {
        if let Some(name) = env.var("PGAPPNAME") {
            out.push(("application_name", name));
        }
    }
    out
}

fn home(env: &dyn Env) -> Option<PathBuf> {
    env.var("HOME")
        .map(PathBuf::from)
        .or_else(|| passwd_entry().map(|(_, home)| home))
}

/// The host as the password file names it: libpq matches its default socket directory
/// as `localhost`, any other socket directory by its path.
fn passfile_host(host: &str) -> String {
    if host.is_empty() || host == DEFAULT_SOCKET_DIR {
        "localhost".to_string()
    } else {
        host.to_string()
    }
}

/// The password of the first line of a password file matching
/// `hostname:port:database:username:password`. `*` alone matches anything in the first
/// four fields; `\:` and `\\` stand for `:` and `\`; lines starting with `#` are comments.
pub fn lookup(text: &str, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let fields = split_fields(line);
        if fields.len() < 5 {
            return None;
        }
        let wanted = [host, port, db, user];
        let matches = fields
            .iter()
            .zip(wanted)
            .all(|((value, wildcard), want)| *wildcard || value == want);
        matches.then(|| fields[4].0.clone())
    })
}

/// A line's fields, unescaped, each with whether it was the wildcard `*`.
fn split_fields(line: &str) -> Vec<(String, bool)> {
    let mut fields = Vec::new();
    let mut value = String::new();
    let mut raw = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                raw.push(c);
                if let Some(next) = chars.next() {
                    raw.push(next);
                    value.push(next);
                }
            }
            ':' => {
                fields.push((std::mem::take(&mut value), raw == "*"));
                raw.clear();
            }
            _ => {
                raw.push(c);
                value.push(c);
            }
        }
    }
    fields.push((value, raw == "*"));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fake {
        vars: HashMap<&'static str, &'static str>,
        passfile: Option<&'static str>,
    }

    impl Env for Fake {
        fn var(&self, name: &str) -> Option<String> {
            self.vars
                .get(name)
                .filter(|v| !v.is_empty())
                .map(|v| v.to_string())
        }
        fn os_user(&self) -> Option<String> {
            Some("osuser".into())
        }
        fn passfile(&self, path: &Path) -> Option<String> {
            assert_eq!(path, Path::new(self.vars.get("PGPASSFILE").unwrap_or(&"")));
            self.passfile.map(str::to_string)
        }
    }

    fn fake(vars: &[(&'static str, &'static str)], passfile: Option<&'static str>) -> Fake {
        let mut vars: HashMap<_, _> = vars.iter().copied().collect();
        vars.entry("PGPASSFILE").or_insert("/pgpass");
        Fake { vars, passfile }
    }

    fn fill(url: &str, env: &Fake) -> HashMap<&'static str, String> {
        let (config, sslmode, root_cert) = super::super::split_url(url).expect("url");
        let given = Given {
            config: &config,
            sslmode: sslmode.as_deref(),
            root_cert: root_cert.is_some(),
            port_given: super::super::uri_hosts_without_port(url).is_none()
                && !config.get_ports().is_empty(),
        };
        missing(&given, env, true).into_iter().collect()
    }

    #[test]
    fn passfile_lines_match_with_wildcards_escapes_and_comments() {
        let text = "# comment:*:*:*:no\n\
                    \n\
                    db.example.com:5432:erp:alice:first\n\
                    *:5432:erp:alice:second\n\
                    host\\:x:*:*:bob:pa\\:ss\\\\word\n\
                    \\*:*:*:carol:literal-star\n\
                    *:*:*:*:fallback:extra\n\
                    short:line\n";
        assert_eq!(
            lookup(text, "db.example.com", "5432", "erp", "alice").as_deref(),
            Some("first")
        );
        assert_eq!(
            lookup(text, "other", "5432", "erp", "alice").as_deref(),
            Some("second")
        );
        assert_eq!(
            lookup(text, "host:x", "1", "d", "bob").as_deref(),
            Some("pa:ss\\word")
        );
        // `\*` is a literal star, not the wildcard.
        assert_eq!(
            lookup(text, "*", "1", "d", "carol").as_deref(),
            Some("literal-star")
        );
        assert_eq!(
            lookup(text, "h", "1", "d", "carol").as_deref(),
            Some("fallback")
        );
        assert_eq!(lookup("a:b:c:d\n", "a", "b", "c", "d"), None);
        assert_eq!(
            lookup("h:1:d:u:crlf\r\n", "h", "1", "d", "u").as_deref(),
            Some("crlf")
        );
    }

    #[test]
    fn the_url_wins_over_the_environment_which_wins_over_the_defaults() {
        let env = fake(
            &[
                ("PGHOST", "envhost"),
                ("PGPORT", "6000"),
                ("PGUSER", "envuser"),
                ("PGDATABASE", "envdb"),
                ("PGPASSWORD", "envpw"),
                ("PGSSLMODE", "require"),
                ("PGAPPNAME", "erp sync"),
            ],
            None,
        );
        let all = fill(
            "postgres://u:pw@h:1/d?application_name=a&sslmode=disable",
            &env,
        );
        assert!(all.is_empty(), "{all:?}");
        let filled = fill("", &env);
        assert_eq!(filled["host"], "envhost");
        assert_eq!(filled["port"], "6000");
        assert_eq!(filled["user"], "envuser");
        assert_eq!(filled["dbname"], "envdb");
        assert_eq!(filled["password"], "envpw");
        assert_eq!(filled["sslmode"], "require");
        assert_eq!(filled["application_name"], "erp sync");
        let part = fill("postgres://u@h/d", &env);
        assert_eq!(part.get("host"), None);
        assert_eq!(part.get("user"), None);
        assert_eq!(part["port"], "6000");
        assert_eq!(part["password"], "envpw");

        let defaults = fill("", &fake(&[], None));
        assert_eq!(defaults["host"], DEFAULT_SOCKET_DIR);
        assert_eq!(defaults["user"], "osuser");
        assert_eq!(defaults.get("port"), None);
        assert_eq!(defaults.get("dbname"), None);
        assert_eq!(defaults.get("password"), None);
    }

    #[test]
    fn the_password_file_is_read_for_the_resolved_target_unless_pgpassword_is_set() {
        let text = Some(
            "localhost:5432:osuser:osuser:socket\n\
             h:5433:envdb:envuser:tcp\n\
             h:5432:envdb:envuser:wrong-port\n",
        );
        let socket = fill("", &fake(&[], text));
        assert_eq!(socket["password"], "socket");
        let env = fake(
            &[
                ("PGHOST", "h"),
                ("PGPORT", "5433"),
                ("PGUSER", "envuser"),
                ("PGDATABASE", "envdb"),
            ],
            text,
        );
        assert_eq!(fill("", &env)["password"], "tcp");
        assert_eq!(fill("postgres://h/envdb", &env)["password"], "tcp");
        let mut with_pw = env;
        with_pw.vars.insert("PGPASSWORD", "env wins");
        assert_eq!(fill("", &with_pw)["password"], "env wins");
        let none = fill("postgres://x@h:5433/envdb", &fake(&[], text));
        assert_eq!(none.get("password"), None);
    }

    #[test]
    fn a_missing_url_needs_a_variable_naming_the_target() {
        assert!(!names_a_target(&fake(&[("PGPASSWORD", "x")], None)));
        assert!(!names_a_target(&fake(&[("PGHOST", "")], None)));
        assert!(names_a_target(&fake(&[("PGDATABASE", "erp")], None)));
    }
}
