// Claiming jobs: mark up to n due pending jobs running for this worker, committed at
// once, so that a claim outlives a crash (attempts count) and the rescuer can find it.
use tokio_postgres::Client;

/// The CTE picks the rows (LIMIT with SKIP LOCKED) before the UPDATE touches any: the
/// planner cannot turn it into an update of more rows than the limit. The clock is read
/// once per statement (an InitPlan), not once per row.
const CLAIM_SQL: &str = "
WITH c AS (
    SELECT id FROM sync.job
    WHERE state = 'pending' AND eta <= (SELECT sync.clock())
    ORDER BY priority, eta, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE sync.job j
SET state = 'running', worker = $2, attempts = j.attempts + 1, started_at = now(),
    finished_at = NULL
FROM c
WHERE j.id = c.id
RETURNING j.id, j.project_id";

/// Claim up to `n` jobs for worker `worker`, highest priority first: (job, project) by
/// job id.
pub async fn claim(
    client: &Client,
    n: usize,
    worker: i32,
) -> Result<Vec<(i64, i64)>, tokio_postgres::Error> {
    let rows = client.query(CLAIM_SQL, &[&(n as i64), &worker]).await?;
    let mut ids: Vec<(i64, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    ids.sort_unstable();
    Ok(ids)
}
