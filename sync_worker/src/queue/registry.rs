// The worker's identity in the database: a sync.worker row and the advisory lock held on
// the queue connection for as long as the worker is alive (how others know it is).
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

/// What the batch functions (sync.batch_*) need to know it is this worker's executor:
/// the worker id and its token, which only Rust code holds.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerAuth {
    pub worker: i32,
    pub token: String,
}

impl std::fmt::Debug for WorkerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WorkerAuth({})", self.worker)
    }
}

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
    #[error("cannot make a worker token: {0}")]
    Random(openssl::error::ErrorStack),
}

/// Register a new worker id on `client` (with where its HTTP servers listen and the
/// hash of a fresh token for its executors), take its lock and LISTEN for new jobs and
/// cancel requests. Returns the id with its token, and the worker's login.
pub async fn register(
    client: &Client,
    webhook: Option<std::net::SocketAddr>,
    admin: Option<std::net::SocketAddr>,
) -> Result<(WorkerAuth, String), RegisterError> {
    let has_job: bool = client
        .query_one("SELECT to_regclass('sync.job') IS NOT NULL", &[])
        .await?
        .get(0);
    if !has_job {
        return Err(RegisterError::NoExtension);
    }
    let token = new_token()?;
    let row = client
        .query_one(
            "INSERT INTO sync.worker (hostname, pid, version, webhook_listen, admin_listen, token_hash)
             VALUES ($1, $2, $3, $4, $5, pg_catalog.sha256(pg_catalog.convert_to($6, 'UTF8')))
             RETURNING id, current_user::text",
            &[
                &crate::shared::hostname(),
                &(std::process::id() as i32),
                &env!("CARGO_PKG_VERSION"),
                &webhook.map(|a| a.to_string()),
                &admin.map(|a| a.to_string()),
                &token,
            ],
        )
        .await?;
    let id: i32 = row.get(0);
    let caller: String = row.get(1);
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
        .batch_execute("SET synchronous_commit = off; LISTEN sync_job; LISTEN sync_cancel")
        .await?;
    Ok((WorkerAuth { worker: id, token }, caller))
}

/// 32 random bytes from the OS's generator, as hex: the token the batch functions check.
fn new_token() -> Result<String, RegisterError> {
    let mut bytes = [0u8; 32];
    openssl::rand::rand_bytes(&mut bytes).map_err(RegisterError::Random)?;
    Ok(hex::encode(bytes))
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
