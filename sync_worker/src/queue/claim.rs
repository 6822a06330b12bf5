// Claiming jobs: mark up to n due pending jobs running for this worker, committed at
// once, so that the rescuer finds them if the worker dies. A claim counts no try.
use tokio_postgres::Client;

/// The claim itself is the extension's (sync.claim_jobs).
const CLAIM_SQL: &str = "SELECT id, project_id FROM sync.claim_jobs($2, $1)";

/// Cleared (in its own transaction, committed before the claim's snapshot) so that the
/// next transaction queuing jobs rings and notifies again; see sync.notify_new_jobs.
const CLEAR_DOORBELL_SQL: &str = "UPDATE sync.doorbell SET rung = false WHERE rung";

/// What a claim got.
pub struct Claimed {
    /// (job, project), by job id.
    pub jobs: Vec<(i64, i64)>,
    /// The doorbell was rung: a transaction that saw it so may still be committing jobs
    /// this claim could not see yet.
    pub was_rung: bool,
}

/// Claim up to `n` jobs for worker `worker`, highest priority first, after clearing the
/// doorbell (one round trip for both).
pub async fn claim(
    client: &Client,
    n: usize,
    worker: i32,
) -> Result<Claimed, tokio_postgres::Error> {
    let limit = i32::try_from(n).unwrap_or(i32::MAX);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&limit, &worker];
    let (cleared, rows) = tokio::join!(
        client.execute(CLEAR_DOORBELL_SQL, &[]),
        client.query(CLAIM_SQL, &params),
    );
    let was_rung = cleared? > 0;
    let mut jobs: Vec<(i64, i64)> = rows?.iter().map(|r| (r.get(0), r.get(1))).collect();
    jobs.sort_unstable();
    Ok(Claimed { jobs, was_rung })
}
