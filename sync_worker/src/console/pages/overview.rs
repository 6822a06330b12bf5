// The overview page: the queue's depth, jobs finished per minute by state over the last
// hour, and the workers alive; read as the signed-in person.
use crate::console::layout::{self, time};
use crate::console::{ConsoleError, ConsoleState, Person};
use axum::Router;
use maud::{html, Markup};

pub fn routes() -> Router<ConsoleState> {
    // "/" itself is routed by console/mod.rs (a nested router's root).
    Router::new()
}

// The queue's counts read sync.job_queue (the pending jobs) and sync.job_started, never
// sync.job. A running job's row says pending (its batch holds it locked): the jobs
// sync.job_started lists are counted apart.
const QUEUE_SQL: &str = "
WITH r AS (SELECT count(*) AS n FROM sync.job_started s
           JOIN sync.job_queue q ON q.id = s.job_id)
SELECT greatest((SELECT count(*) FROM sync.job_queue) - r.n, 0),
       greatest((SELECT count(*) FROM sync.job_queue WHERE eta <= now()) - r.n, 0),
       r.n
FROM r";

// Counted as jobs finish (sync.job_finished_count): no index of sync.job serves finished_at.
const PER_MINUTE_SQL: &str = "
SELECT minute, state, sum(n)::bigint
FROM sync.job_finished_count
WHERE minute > now() - interval '1 hour'
GROUP BY 1, 2 ORDER BY 1";

// Alive: it holds its advisory lock, as sync.live_workers() (not granted to sync_user)
// reads it.
const WORKERS_SQL: &str = "
SELECT w.id, w.hostname, w.pid, w.version, w.started_at, w.last_seen
FROM sync.worker w
WHERE w.stopped_at IS NULL AND EXISTS (
    SELECT 1 FROM pg_catalog.pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted
      AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
      AND l.classid = sync.worker_lock_class()::oid
      AND l.objid::bigint = w.id AND l.objsubid = 2)
ORDER BY w.id";

pub async fn show(person: Person) -> Result<Markup, ConsoleError> {
    let db = &person.db;
    let (queue, minutes, workers) = tokio::try_join!(
        db.query_one(QUEUE_SQL, &[]),
        db.query(PER_MINUTE_SQL, &[]),
        db.query(WORKERS_SQL, &[]),
    )?;
    let (pending, due, running): (i64, i64, i64) = (queue.get(0), queue.get(1), queue.get(2));
    let body = html! {
        div.cards {
            div.stat { div.n #queue-pending { (pending) } div.l { "pending" } }
            div.stat { div.n #queue-due { (due) } div.l { "due now" } }
            div.stat { div.n #queue-running { (running) } div.l { "running" } }
            div.stat { div.n #workers-alive { (workers.len()) } div.l { "workers alive" } }
        }
        h2 { "Jobs finished per minute, last hour" }
        div.card { (per_minute_chart(&minutes)) }
        h2 { "Workers alive" }
        @if workers.is_empty() {
            p.muted { "No worker is running." }
        } @else {
            table #workers {
                thead { tr { th.num { "id" } th { "host" } th.num { "pid" } th { "version" } th { "started" } th { "last seen" } } }
                tbody {
                    @for w in &workers {
                        tr {
                            td.num { (w.get::<_, i32>(0)) }
                            td { (w.get::<_, String>(1)) }
                            td.num { (w.get::<_, i32>(2)) }
                            td { (w.get::<_, String>(3)) }
                            td { (time(&w.get(4))) }
                            td { (time(&w.get(5))) }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(&person, "/console/", "Overview", body))
}

/// 60 bars (one a minute, oldest first), each stacked by state; a table for the numbers.
fn per_minute_chart(rows: &[tokio_postgres::Row]) -> Markup {
    use chrono::{DateTime, Duration, DurationRound, Utc};
    let now = Utc::now()
        .duration_trunc(Duration::minutes(1))
        .unwrap_or_else(|_| Utc::now());
    let mut counts = vec![[0i64; 3]; 60];
    let mut totals = [0i64; 3];
    for r in rows {
        let minute: DateTime<Utc> = r.get(0);
        let state: String = r.get(1);
        let n: i64 = r.get(2);
        let back = (now - minute).num_minutes();
        let s = match state.as_str() {
            "done" => 0,
            "failed" => 1,
            _ => 2,
        };
        totals[s] += n;
        if (0..60).contains(&back) {
            counts[59 - back as usize][s] += n;
        }
    }
    let max = counts
        .iter()
        .map(|c| c.iter().sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let pct = |n: i64| format!("height:{:.1}%", n as f64 * 100.0 / max as f64);
    html! {
        div.bars role="img" aria-label="jobs finished per minute" {
            @for (i, c) in counts.iter().enumerate() {
                div.bar title={ (60 - i) " min ago: " (c[0]) " done, " (c[1]) " failed, " (c[2]) " cancelled" } {
                    div.seg-done style=(pct(c[0])) {}
                    div.seg-failed style=(pct(c[1])) {}
                    div.seg-cancelled style=(pct(c[2])) {}
                }
            }
        }
        p.legend {
            span { i.seg-done style="background:#4caf6e" {} "done " strong #finished-done { (totals[0]) } }
            span { i style="background:#e05a4f" {} "failed " strong #finished-failed { (totals[1]) } }
            span { i style="background:#a9b0bd" {} "cancelled " strong #finished-cancelled { (totals[2]) } }
            span.muted { "in the last hour; peak " (max) " a minute" }
        }
    }
}
