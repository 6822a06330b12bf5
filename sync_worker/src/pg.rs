// PostgreSQL connections of the worker: connect (TLS as libpq's sslmode says, optionally
// receiving NOTIFY), retry with backoff, and tell a lost connection from a failed statement.
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
/// string, taking out the TLS options tokio-postgres does not understand.
pub fn parse_url(url: &str) -> Result<Target, UrlError> {
    let mut sslmode = None;
    let mut root_cert = None;
    let rest = if let Some((base, query)) = url
        .split_once('?')
        .filter(|_| url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        let mut kept = form_urlencoded::Serializer::new(String::new());
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "sslmode" => sslmode = Some(v.into_owned()),
                "sslrootcert" => root_cert = Some(PathBuf::from(v.as_ref())),
                _ => {
                    kept.append_pair(&k, &v);
                }
            }
        }
        let kept = kept.finish();
        if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{kept}")
        }
    } else if url.contains('=') && !url.contains("://") {
        let mut kept = Vec::new();
        for part in url.split_whitespace() {
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
    let mut config: tokio_postgres::Config = rest.parse()?;
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
    let (client, _) = connect_inner(parse_url(url)?, application_name, false).await?;
    Ok(client)
}

/// Connect with `login`: its URL, with the user and password it names instead of the
/// URL's (how executors log in as sync_executor on the worker's server).
pub async fn connect_login(login: &Login, application_name: &str) -> Result<Client, ConnectError> {
    let mut target = parse_url(&login.url)?;
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
    let (client, rx) = connect_inner(parse_url(url)?, application_name, true).await?;
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
    config.application_name(application_name);
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

/// Exponential backoff between reconnection attempts: 0.5 s doubling to 10 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(500),
        }
    }
}

impl Backoff {
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(10));
        d
    }

    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
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
                    let delay = self.backoff.next_delay();
                    tracing::debug!("{}: cannot connect: {e}", self.name);
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

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}
