// Worker benchmark driver (run it with bench/worker/run): throughput of 100,000 trivial
// Python jobs and pickup latency for 1 and 2 workers, against a bare SQL claim-and-
// complete loop on the same database in the same run (the database's own limit).
use pg_sync_tests::*;
use std::time::{Duration, Instant};

const JOBS: i64 = 100_000;
const LATENCY_JOBS: usize = 1_000;
const CODE: &str = "def work(n):\n    return n\n\ndef ping():\n    return time.time()\n";

const CLAIM: &str = "
WITH c AS (
    SELECT id FROM sync.job
    WHERE state = 'pending' AND eta <= (SELECT sync.clock())
    ORDER BY priority, eta, id LIMIT $1 FOR UPDATE SKIP LOCKED)
UPDATE sync.job j SET state = 'running', worker = 0, attempts = j.attempts + 1, started_at = now()
FROM c WHERE j.id = c.id RETURNING j.id";

async fn reset(c: &Client) {
    for sql in [
        "TRUNCATE sync.log, sync.job_cancel, sync.job",
        "VACUUM ANALYZE sync.job",
        "CHECKPOINT",
    ] {
        c.batch_execute(sql).await.unwrap();
    }
}

async fn insert_jobs(c: &Client, p: i64, t: i64) -> Instant {
    c.execute(
        "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler, args)
         SELECT $1, $2, 'job', 'work', jsonb_build_object('args', jsonb_build_array(g))
         FROM generate_series(1, $3::bigint) g",
        &[&p, &t, &JOBS],
    )
    .await
    .unwrap();
    Instant::now()
}

async fn wait_drained(c: &Client) {
    loop {
        let busy: bool = scalar(
            c,
            "SELECT EXISTS (SELECT 1 FROM sync.job WHERE state = 'pending')
                 OR EXISTS (SELECT 1 FROM sync.job WHERE state = 'running')",
        )
        .await;
        if !busy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Seconds from the insert's commit to the last completion (database timestamps).
async fn drain_secs(c: &Client, committed_at: chrono::DateTime<chrono::Utc>) -> f64 {
    let last: chrono::DateTime<chrono::Utc> =
        scalar(c, "SELECT max(finished_at) FROM sync.job").await;
    if std::env::var("BENCH_DEBUG").is_ok() {
        let first: chrono::DateTime<chrono::Utc> =
            scalar(c, "SELECT min(started_at) FROM sync.job").await;
        eprintln!(
            "commit -> first start {:?}, first start -> last end {:?}",
            first - committed_at,
            last - first
        );
    }
    (last - committed_at).num_microseconds().unwrap_or(0) as f64 / 1e6
}

async fn bare_loop(url: &str, c: &Client, p: i64, t: i64) -> f64 {
    reset(c).await;
    insert_jobs(c, p, t).await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let client = connect(url).await;
        tasks.push(tokio::spawn(async move {
            loop {
                let ids: Vec<i64> = client
                    .query(CLAIM, &[&100i64])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                if ids.is_empty() {
                    return;
                }
                client
                    .execute(
                        "UPDATE sync.job SET state = 'done', finished_at = clock_timestamp() WHERE id = ANY ($1)",
                        &[&ids],
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let done: i64 = scalar(c, "SELECT count(*) FROM sync.job WHERE state = 'done'").await;
    assert_eq!(done, JOBS);
    JOBS as f64 / secs
}

async fn start_workers(url: &str, c: &Client, p: i64, t: i64, n: usize) -> Vec<WorkerProcess> {
    reset(c).await;
    let workers: Vec<_> = (0..n).map(|_| WorkerProcess::start(url, &[])).collect();
    // Warm up: every executor has started and run a job.
    c.execute(
        "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler, args)
         SELECT $1, $2, 'job', 'work', '{\"args\": [0]}' FROM generate_series(1, 50)",
        &[&p, &t],
    )
    .await
    .unwrap();
    wait_drained(c).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    workers
}

async fn throughput(c: &Client, p: i64, t: i64) -> f64 {
    reset(c).await;
    insert_jobs(c, p, t).await;
    // The insert has committed (created_at is its start, seconds earlier for 100,000 rows).
    let committed_at: chrono::DateTime<chrono::Utc> = scalar(c, "SELECT clock_timestamp()").await;
    wait_drained(c).await;
    let done: i64 = scalar(c, "SELECT count(*) FROM sync.job WHERE state = 'done'").await;
    if done != JOBS {
        let error: Option<String> =
            scalar(c, "SELECT min(error) FROM sync.job WHERE state <> 'done'").await;
        panic!("only {done} of {JOBS} jobs done; an error: {error:?}");
    }
    JOBS as f64 / drain_secs(c, committed_at).await
}

/// Insert jobs one by one (each its own commit, 2 ms apart); latency = handler start
/// (time.time() in Python) minus the moment the insert's commit returned.
async fn latency(c: &Client, p: i64, t: i64) -> (f64, f64) {
    c.batch_execute("TRUNCATE sync.log, sync.job_cancel, sync.job")
        .await
        .unwrap();
    let mut sent = Vec::with_capacity(LATENCY_JOBS);
    for _ in 0..LATENCY_JOBS {
        let id: i64 = c
            .query_one(
                "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler) VALUES ($1, $2, 'job', 'ping') RETURNING id",
                &[&p, &t],
            )
            .await
            .unwrap()
            .get(0);
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        sent.push((id, at));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    wait_drained(c).await;
    let mut lat = Vec::with_capacity(LATENCY_JOBS);
    for (id, at) in sent {
        let started: f64 = c
            .query_one(
                "SELECT (result #>> '{}')::float8 FROM sync.job WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        lat.push((started - at) * 1000.0);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    (pct(0.50), pct(0.99))
}

#[tokio::main]
async fn main() {
    let url =
        std::env::var("BENCH_DATABASE_URL").expect("BENCH_DATABASE_URL (use bench/worker/run)");
    let c = connect(&url).await;
    c.batch_execute("DROP EXTENSION IF EXISTS pg_sync CASCADE; CREATE EXTENSION pg_sync")
        .await
        .unwrap();
    let (p, t) = create_task(&c, "bench", "main", CODE).await;
    let fsync: String = scalar(&c, "SHOW fsync").await;
    let sync_commit: String = scalar(&c, "SHOW synchronous_commit").await;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "worker benchmark: {JOBS} jobs, trivial Python handler; {cores} cores; fsync={fsync}, synchronous_commit={sync_commit}"
    );

    let bare = bare_loop(&url, &c, p, t).await;
    println!(
        "bare SQL claim+complete loop (2 clients, 100 per batch, no Python): {bare:>8.0} jobs/s"
    );

    let mut results = Vec::new();
    for n in [1usize, 2] {
        let workers = start_workers(&url, &c, p, t, n).await;
        let rate = throughput(&c, p, t).await;
        let (p50, p99) = latency(&c, p, t).await;
        drop(workers);
        println!(
            "{n} worker{} ({} executors each):  {rate:>8.0} jobs/s  = {:.2} x bare;  pickup latency p50 {p50:.2} ms, p99 {p99:.2} ms",
            if n > 1 { "s" } else { " " },
            cores,
            rate / bare
        );
        results.push((n, rate, p50, p99));
    }
    let best = results.iter().map(|r| r.1).fold(0.0, f64::max);
    let p50_1 = results[0].2;
    println!(
        "targets: >= 10000 jobs/s: {}; p50 < 5 ms: {}; >= 0.5 x bare: {}",
        if best >= 10_000.0 { "yes" } else { "NO" },
        if p50_1 < 5.0 { "yes" } else { "NO" },
        if best / bare >= 0.5 { "yes" } else { "NO" }
    );
}
