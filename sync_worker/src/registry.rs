// The worker's identity in the database: a sync.worker row and the advisory lock held on
// the queue connection for as long as the worker is alive (how others know it is).
use tokio_postgres::Client;

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("pg_sync is not installed in this database (no table sync.job): run CREATE EXTENSION pg_sync first")]
    NoExtension,
    #[error("worker {0}: its advisory lock is already taken")]
    LockTaken(i32),
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Connect(#[from] crate::pg::ConnectError),
}

/// Register a new worker id on `client` (with where its HTTP servers listen), take its
/// lock and LISTEN for new jobs.
pub async fn register(
    client: &Client,
    webhook: Option<std::net::SocketAddr>,
    admin: Option<std::net::SocketAddr>,
) -> Result<i32, RegisterError> {
    let has_job: bool = client
        .query_one("SELECT to_regclass('sync.job') IS NOT NULL", &[])
        .await?
        .get(0);
    if !has_job {
        return Err(RegisterError::NoExtension);
    }
    let id: i32 = client
        .query_one(
            "INSERT INTO sync.worker (hostname, pid, version, webhook_listen, admin_listen)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[
                &hostname(),
                &(std::process::id() as i32),
                &env!("CARGO_PKG_VERSION"),
                &webhook.map(|a| a.to_string()),
                &admin.map(|a| a.to_string()),
            ],
        )
        .await?
        .get(0);
    let locked: bool = client
        .query_one(
            "SELECT pg_try_advisory_lock(sync.worker_lock_class(), $1)",
            &[&id],
        )
        .await?
        .get(0);
    if !locked {
        return Err(RegisterError::LockTaken(id));
    }
    // Claims, releases and interruptions need not wait for the disk: a batch's own
    // (synchronous) commit comes later in the WAL and flushes them too, and a claim
    // lost in a crash only means the job is pending again, untried.
    client
        .batch_execute("SET synchronous_commit = off; LISTEN sync_job")
        .await?;
    Ok(id)
}

/// Record a clean stop (the lock goes with the connection).
pub async fn stopped(client: &Client, id: i32) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE sync.worker SET stopped_at = now(), last_seen = now() WHERE id = $1",
            &[&id],
        )
        .await
        .map(|_| ())
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
