// PostgreSQL connections of the worker: connect (optionally receiving NOTIFY), retry
// with backoff, and tell a lost connection apart from a statement that failed.
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// Connect and drive the connection in the background. `application_name` shows the
/// connection's role in pg_stat_activity.
pub async fn connect(url: &str, application_name: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, _) = connect_inner(url, application_name, false).await?;
    Ok(client)
}

/// Connect and forward every notification received on it (LISTEN is up to the caller).
/// The receiver ends when the connection closes.
pub async fn connect_listening(
    url: &str,
    application_name: &str,
) -> Result<(Client, mpsc::UnboundedReceiver<()>), tokio_postgres::Error> {
    let (client, rx) = connect_inner(url, application_name, true).await?;
    Ok((client, rx.unwrap_or_else(|| mpsc::unbounded_channel().1)))
}

async fn connect_inner(
    url: &str,
    application_name: &str,
    listen: bool,
) -> Result<(Client, Option<mpsc::UnboundedReceiver<()>>), tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.application_name(application_name);
    // Notice a dead server or network within a minute even while idle.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(20));
    config.connect_timeout(Duration::from_secs(10));
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, rx) = if listen {
        let (tx, rx) = mpsc::unbounded_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    if let Some(tx) = &tx {
                        let _ = tx.send(());
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
    match e.as_db_error() {
        // No answer from the server: I/O error, timeout, protocol trouble.
        None => true,
        Some(db) => {
            let code = db.code().code();
            // 08: connection exception; 57P01-57P03: shutdown, crash, starting up.
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
    }
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
    client: Option<Client>,
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
                    self.client = Some(c);
                }
                Err(e) => {
                    let delay = self.backoff.next_delay();
                    tracing::debug!("{}: cannot connect: {}", self.name, describe(&e));
                    self.retry_at = Some(tokio::time::Instant::now() + delay);
                    return None;
                }
            }
        }
        self.client.as_ref()
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
