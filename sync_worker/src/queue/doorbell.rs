// The doorbell, cleared before claims. The claims themselves are the executors' (each
// batch locks its jobs in its own transaction, sync.batch_lock).
use tokio_postgres::Client;

/// Cleared (in its own transaction, committed before the claims' snapshots) so that the
/// next transaction queuing jobs rings and notifies again; see sync.notify_new_jobs.
const CLEAR_DOORBELL_SQL: &str = "UPDATE sync.doorbell SET rung = false WHERE rung";

/// Clear the doorbell; true when it had been rung (a transaction that saw it so may
/// still be committing jobs the next claims cannot see yet).
pub async fn clear_doorbell(client: &Client) -> Result<bool, tokio_postgres::Error> {
    Ok(client.execute(CLEAR_DOORBELL_SQL, &[]).await? > 0)
}
