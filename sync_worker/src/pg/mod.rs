// PostgreSQL connections of the worker: connect (TLS as libpq's sslmode says, optionally
// receiving NOTIFY), retry with backoff, and tell a lost connection from a failed statement.
mod backoff;
pub mod libpq;

pub use backoff::Backoff;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, Client};

/// libpq's sslmode, which tokio-postgres only knows in part (no verify-ca/verify-full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    Disable,
    /// TLS when the server offers it, certificate not checked (libpq's default).
    Prefer,
    /// TLS always, certificate not checked.
    Require,
    /// TLS, certificate signed by a trusted CA.
    VerifyCa,
    /// TLS, trusted certificate issued for the host connected to.
    VerifyFull,
}

/// A database URL taken apart: what tokio-postgres understands, and the TLS policy.
#[derive(Debug, Clone)]
pub struct Target {
    pub config: tokio_postgres::Config,
    pub tls: Tls,
    pub root_cert: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("{0}")]
    Parse(#[from] tokio_postgres::Error),
    #[error("sslmode `{0}` is not one of disable, allow, prefer, require, verify-ca, verify-full")]
    SslMode(String),
}

/// The CA file given by the worker's `database_ca_file` setting (used when the URL has
/// no sslrootcert).
static DEFAULT_CA: OnceLock<Option<PathBuf>> = OnceLock::new();

pub fn set_default_ca_file(path: Option<PathBuf>) {
    let _ = DEFAULT_CA.set(path);
}

/// Parse a URL (`postgres://...?sslmode=verify-full&sslrootcert=/ca.pem`) or a key=value
/// string, taking out the TLS options tokio-postgres does not understand. Nothing comes
/// from the environment (see `resolve`).
pub fn parse_url(url: &str) -> Result<Target, UrlError> {
    let (config, sslmode, root_cert) = split_url(url)?;
    finish(config, sslmode, root_cert)
}

/// A URL of the worker's own, its gaps filled as libpq fills them (PG* variables, the
/// password file, the defaults): what every connection of the worker connects to.
pub fn resolve(url: &str) -> Result<Target, UrlError> {
    parse_url(&resolve_url(url, true)?)
}

/// `url` with what it leaves out written in, so that it means the same in a process
/// without the worker's environment (an executor). Without `with_password`, no password
/// is looked up.
pub fn resolve_url(url: &str, with_password: bool) -> Result<String, UrlError> {
    let (config, sslmode, root_cert) = split_url(url)?;
    // tokio-postgres reads a URL's host without a port as port 5432; libpq, as PGPORT.
    let portless = uri_hosts_without_port(url);
    let given = libpq::Given {
        config: &config,
        sslmode: sslmode.as_deref(),
        root_cert: root_cert.is_some(),
        port_given: portless.is_none() && !config.get_ports().is_empty(),
    };
    let mut missing = libpq::missing(&given, &libpq::Process, with_password);
    let mut out = url.to_string();
    if let (Some(range), Some(at)) = (portless, missing.iter().position(|(k, _)| *k == "port")) {
        let (_, port) = missing.remove(at);
        let ports: Vec<&str> = port.split(',').collect();
        let hosts: Vec<String> = out[range.clone()]
            .split(',')
            .enumerate()
            .map(|(i, h)| format!("{h}:{}", ports.get(i).unwrap_or(&ports[0])))
            .collect();
        out.replace_range(range, &hosts.join(","));
    }
    if is_uri(url) {
        for (i, (key, value)) in missing.iter().enumerate() {
            let sep = if i == 0 && !url.contains('?') {
                '?'
            } else {
                '&'
            };
            out.push(sep);
            out.push_str(key);
            out.push('=');
            out.push_str(&percent_encode(value));
        }
    } else {
        for (key, value) in &missing {
            let value = value.replace('\\', "\\\\").replace('\'', "\\'");
            out.push_str(&format!(" {key}='{value}'"));
        }
    }
    Ok(out)
}

/// The URL to use when `database_url` may be missing: given, or empty when the PG*
/// variables name a database (None: nothing says where the database is).
pub fn url_or_environment(url: Option<&str>) -> Option<&str> {
    match url {
        Some(url) => Some(url),
        None => libpq::names_a_target(&libpq::Process).then_some(""),
    }
}

/// Where a URL's host list is, when it names hosts and none with a port.
fn uri_hosts_without_port(url: &str) -> Option<std::ops::Range<usize>> {
    let start = url.find("://").filter(|_| is_uri(url))? + 3;
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let start = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    let hosts = &url[start..end];
    let has_port = |h: &str| match h.rfind(']') {
        Some(i) => h[i..].contains(':'),
        None => h.contains(':'),
    };
    let query_port = url
        .split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|p| p.starts_with("port=")));
    (!hosts.is_empty() && !hosts.split(',').any(has_port) && !query_port).then_some(start..end)
}

fn is_uri(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Percent-encoding for a URL's query value (tokio-postgres decodes `%XX`, not `+`).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

type Split = (tokio_postgres::Config, Option<String>, Option<PathBuf>);

fn split_url(url: &str) -> Result<Split, UrlError> {
    let mut sslmode = None;
    let mut root_cert = None;
    let rest = if let Some((base, query)) = url.split_once('?').filter(|_| is_uri(url)) {
        // Other parameters are kept as written: tokio-postgres decodes `%XX` only.
        let mut kept = Vec::new();
        for raw in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = form_urlencoded::parse(raw.as_bytes())
                .next()
                .unwrap_or_default();
            match k.as_ref() {
                "sslmode" => sslmode = Some(v.into_owned()),
                "sslrootcert" => root_cert = Some(PathBuf::from(v.as_ref())),
                _ => kept.push(raw),
            }
        }
        if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else if !is_uri(url) {
        let mut kept = Vec::new();
        for part in keyword_parts(url) {
            match part.split_once('=') {
                Some(("sslmode", v)) => sslmode = Some(v.trim_matches('\'').to_string()),
                Some(("sslrootcert", v)) => root_cert = Some(PathBuf::from(v.trim_matches('\''))),
                _ => kept.push(part),
            }
        }
        kept.join(" ")
    } else {
        url.to_string()
    };
    Ok((rest.parse()?, sslmode, root_cert))
}

/// The `key=value` parts of a keyword string; a quoted value may hold spaces.
fn keyword_parts(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (None, false, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '\'' {
            quoted = !quoted;
        } else if c.is_whitespace() && !quoted {
            if let Some(s) = start.take() {
                parts.push(&text[s..i]);
            }
            continue;
        }
        start.get_or_insert(i);
    }
    if let Some(s) = start {
        parts.push(&text[s..]);
    }
    parts
}

fn finish(
    mut config: tokio_postgres::Config,
    sslmode: Option<String>,
    root_cert: Option<PathBuf>,
) -> Result<Target, UrlError> {
    let tls = match sslmode.as_deref() {
        None | Some("prefer") | Some("allow") => Tls::Prefer,
        Some("disable") => Tls::Disable,
        Some("require") => Tls::Require,
        Some("verify-ca") => Tls::VerifyCa,
        Some("verify-full") => Tls::VerifyFull,
        Some(other) => return Err(UrlError::SslMode(other.to_string())),
    };
    config.ssl_mode(match tls {
        Tls::Disable => SslMode::Disable,
        Tls::Prefer => SslMode::Prefer,
        _ => SslMode::Require,
    });
    Ok(Target {
        config,
        tls,
        root_cert,
    })
}

/// A connector doing what `tls` asks: like libpq, prefer and require encrypt without
/// checking the certificate; verify-ca and verify-full check it.
pub fn connector(target: &Target) -> Result<MakeTlsConnector, openssl::error::ErrorStack> {
    let mut builder = SslConnector::builder(SslMethod::tls_client())?;
    match target.tls {
        Tls::VerifyCa | Tls::VerifyFull => {
            let ca = target
                .root_cert
                .clone()
                .or_else(|| DEFAULT_CA.get().cloned().flatten());
            if let Some(ca) = ca {
                builder.set_ca_file(ca)?;
            }
            builder.set_verify(SslVerifyMode::PEER);
        }
        _ => builder.set_verify(SslVerifyMode::NONE),
    }
    let mut make = MakeTlsConnector::new(builder.build());
    if target.tls != Tls::VerifyFull {
        make.set_callback(|config, _| {
            config.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(make)
}

/// Connect and drive the connection in the background. `application_name` shows the
/// connection's role in pg_stat_activity.
pub async fn connect(url: &str, application_name: &str) -> Result<Client, ConnectError> {
    let (client, _) = connect_inner(resolve(url)?, application_name, false).await?;
    Ok(client)
}

/// Connect with `login`: its URL, with the user and password it names instead of the
/// URL's (how executors log in as sync_executor on the worker's server).
pub async fn connect_login(login: &Login, application_name: &str) -> Result<Client, ConnectError> {
    // The login's own password replaces whatever the URL's user would get.
    let mut target = parse_url(&resolve_url(&login.url, login.user.is_none())?)?;
    if let Some(user) = &login.user {
        target.config.user(user);
        // A password given for the URL's user is not the executor login's.
        target
            .config
            .password(login.password.clone().unwrap_or_default());
    }
    let (client, _) = connect_inner(target, application_name, false).await?;
    Ok(client)
}

/// Why a person may not sign in as `role` through `url` with a password of their own, or
/// None. Over a Unix socket, `peer` authentication identifies the process that connects
/// (the worker, whose OS user is its default role name), not the person who typed the
/// role: a sign-in as that name would be the worker's, whatever password was given.
pub fn person_login_problem(url: &str, role: &str) -> Option<String> {
    let target = resolve(url).ok()?;
    let socket = target
        .config
        .get_hosts()
        .iter()
        .any(|h| matches!(h, tokio_postgres::config::Host::Unix(_)));
    let os_user = libpq::Env::os_user(&libpq::Process)?;
    (socket && os_user == role).then(|| {
        format!(
            "signing in as `{role}` over a Unix socket would be authenticated as the worker's \
             own operating-system user (peer), not by your password"
        )
    })
}

/// A notification received on a listening connection.
#[derive(Debug, Clone)]
pub struct Note {
    pub channel: String,
    pub payload: String,
}

/// Connect and forward every notification received on it (LISTEN is up to the caller).
/// The receiver ends when the connection closes.
pub async fn connect_listening(
    url: &str,
    application_name: &str,
) -> Result<(Client, mpsc::UnboundedReceiver<Note>), ConnectError> {
    let (client, rx) = connect_inner(resolve(url)?, application_name, true).await?;
    Ok((client, rx.unwrap_or_else(|| mpsc::unbounded_channel().1)))
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Url(#[from] UrlError),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] openssl::error::ErrorStack),
    #[error("{}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
}

impl ConnectError {
    /// True when the server itself refused (it is up again, or nearly: starting up, out
    /// of connections), as opposed to no answer at all.
    pub fn server_answered(&self) -> bool {
        matches!(self, ConnectError::Db(e) if e.as_db_error().is_some())
    }

    /// True when trying again cannot help: a bad URL, TLS set-up, wrong password,
    /// unknown database or role.
    pub fn is_permanent(&self) -> bool {
        match self {
            ConnectError::Url(_) | ConnectError::Tls(_) => true,
            ConnectError::Db(e) => {
                e.as_db_error().is_some_and(|db| {
                    matches!(db.code().code(), "28000" | "28P01" | "3D000" | "42501")
                }) || host_does_not_exist(e)
            }
        }
    }
}

/// The host name has no address (getaddrinfo's EAI_NONAME, glibc's wording): a typo in
/// the URL, unlike a DNS server that does not answer ("Temporary failure ...").
fn host_does_not_exist(e: &tokio_postgres::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        if err.to_string().contains("Name or service not known") {
            return true;
        }
        source = err.source();
    }
    false
}

async fn connect_inner(
    target: Target,
    application_name: &str,
    listen: bool,
) -> Result<(Client, Option<mpsc::UnboundedReceiver<Note>>), ConnectError> {
    let mut config = target.config.clone();
    // The role stays visible next to a name given by the URL or PGAPPNAME.
    match target.config.get_application_name() {
        Some(given) => config.application_name(format!("{given} ({application_name})")),
        None => config.application_name(application_name),
    };
    // Notice a dead server or network within a minute even while idle.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(20));
    config.connect_timeout(Duration::from_secs(10));
    let tls = connector(&target)?;
    let (client, mut connection) = config.connect(tls).await?;
    let (tx, rx) = if listen {
        let (tx, rx) = mpsc::unbounded_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if let Some(tx) = &tx {
                        let _ = tx.send(Note {
                            channel: n.channel().to_string(),
                            payload: n.payload().to_string(),
                        });
                    }
                }
                Some(Ok(AsyncMessage::Notice(n))) => {
                    tracing::debug!("PostgreSQL notice: {}", n.message());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!("database connection closed: {e}");
                    break;
                }
                None => break,
            }
        }
    });
    Ok((client, rx))
}

/// True when the error means the connection (or the server) is gone, so the statement's
/// fate is unknown and the work must be redone on a new connection; false when the
/// server answered with an ordinary SQL error.
pub fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // 08: connection exception; 57P: the server ends the session (shutdown, crash,
        // starting up, database dropped, idle timeout); 53300: too many connections.
        return code.starts_with("08") || code.starts_with("57P") || code == "53300";
    }
    // Without a server error: the client's own mistakes with a statement (a value that
    // does not convert, a wrong row, column or parameter count) say nothing about the
    // connection; everything else (I/O, timeouts, TLS, protocol trouble, connecting)
    // does. The kinds are private to tokio-postgres: told apart by their fixed texts.
    let what = e.to_string();
    const CLIENT: [&str; 5] = [
        "error serializing parameter",
        "error deserializing column",
        "invalid column",
        "query returned an unexpected number of",
        "expected ",
    ];
    !CLIENT.iter().any(|c| what.starts_with(c))
}

/// One line saying why a connection attempt failed, for the operator.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

/// A connection that reconnects on demand, with backoff, for the periodic duties.
pub struct Reconnect {
    url: String,
    name: String,
    client: Option<std::sync::Arc<Client>>,
    backoff: Backoff,
    retry_at: Option<tokio::time::Instant>,
}

impl Reconnect {
    pub fn new(url: &str, name: &str) -> Reconnect {
        Reconnect {
            url: url.into(),
            name: name.into(),
            client: None,
            backoff: Backoff::default(),
            retry_at: None,
        }
    }

    /// The connection, or None while the database is unreachable (retried later).
    pub async fn client(&mut self) -> Option<&Client> {
        self.shared().await?;
        self.client.as_deref()
    }

    /// The connection as a handle that outlives a lock held on `self` (several
    /// statements may then run on it at once; tokio-postgres pipelines them).
    pub async fn shared(&mut self) -> Option<std::sync::Arc<Client>> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            if self
                .retry_at
                .is_some_and(|at| tokio::time::Instant::now() < at)
            {
                return None;
            }
            match connect(&self.url, &self.name).await {
                Ok(c) => {
                    self.backoff.reset();
                    self.retry_at = None;
                    self.client = Some(std::sync::Arc::new(c));
                }
                Err(e) => {
                    let delay = self.backoff.after(&e);
                    tracing::warn!(
                        "{}: cannot connect: {e}; retrying in {:.1} s",
                        self.name,
                        delay.as_secs_f64()
                    );
                    self.retry_at = Some(tokio::time::Instant::now() + delay);
                    return None;
                }
            }
        }
        self.client.clone()
    }

    /// Report a failed statement: a lost connection is dropped and made again later.
    pub fn failed(&mut self, e: &tokio_postgres::Error) {
        if is_connection_error(e) {
            self.client = None;
        } else {
            tracing::warn!("{}: {}", self.name, describe(e));
        }
    }
}

/// How an executor logs in to the database: the first message it receives. It never
/// travels in the environment or on the command line, where other processes of the host
/// (and task code reading /proc) could see it.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct Login {
    /// A PostgreSQL URL; `user` and `password`, when set, replace the URL's.
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl Login {
    /// This login as it means in a process without the worker's environment (an
    /// executor's): the URL's gaps filled from the PG* variables and the password file.
    /// The worker's own password is not looked up for a login that replaces the user.
    pub fn resolved(&self) -> Result<Login, UrlError> {
        Ok(Login {
            url: resolve_url(&self.url, self.user.is_none())?,
            user: self.user.clone(),
            password: self.password.clone(),
        })
    }
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_host_without_a_port_is_found_for_pgport() {
        let url = "postgres://u:p@h1,h2/db?sslmode=require";
        assert_eq!(uri_hosts_without_port(url).map(|r| &url[r]), Some("h1,h2"));
        assert_eq!(uri_hosts_without_port("postgres://h:5433/db"), None);
        assert_eq!(uri_hosts_without_port("postgres://[::1]:5433/db"), None);
        assert!(uri_hosts_without_port("postgres://[::1]/db").is_some());
        assert_eq!(uri_hosts_without_port("postgres:///db"), None);
        assert_eq!(uri_hosts_without_port("postgres://h/db?port=1"), None);
        assert_eq!(uri_hosts_without_port("host=h dbname=d"), None);
    }

    #[test]
    fn keyword_values_may_be_quoted_with_spaces() {
        assert_eq!(
            keyword_parts("host=h  password='a  b\\' c' sslmode=require"),
            ["host=h", "password='a  b\\' c'", "sslmode=require"]
        );
        let t = parse_url("postgres://h/d?password=a%20b%3A+&sslmode=require").expect("parse");
        assert_eq!(t.config.get_password(), Some(&b"a b:+"[..]));
        assert_eq!(t.tls, Tls::Require);
        let t = parse_url("host=h password='a  b' sslmode='verify-full'").expect("parse");
        assert_eq!(t.tls, Tls::VerifyFull);
        assert_eq!(t.config.get_password(), Some(&b"a  b"[..]));
    }

    #[test]
    fn a_person_may_not_sign_in_as_the_workers_peer_identity() {
        let me = libpq::Env::os_user(&libpq::Process).expect("the test's OS user");
        let socket = "postgres://x@%2Ftmp/db";
        assert!(person_login_problem(socket, &me).is_some_and(|p| p.contains("peer")));
        assert_eq!(person_login_problem(socket, "someone_else"), None);
        assert_eq!(
            person_login_problem("postgres://x@127.0.0.1:5/db", &me),
            None
        );
    }
}
