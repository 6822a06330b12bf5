// Worker benchmark driver (run it with bench/worker/run): pg_sync's throughput and pickup
// latency as ratios of the database's own claim+complete loop, measured in the same run.
use pg_sync_tests::*;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::types::ToSql;

/// Jobs of a throughput run, and rows of the reference table.
const JOBS: i64 = 100_000;
/// The many-projects run: SPREAD_JOBS jobs round-robin over PROJECTS projects.
const SPREAD_JOBS: i64 = 10_000;
const PROJECTS: usize = 100;
/// Finished jobs already in sync.job for the history run.
const HISTORY: i64 = 1_000_000;
const LATENCY_JOBS: usize = 1_000;
/// Both bare loops: concurrent clients, jobs per claim.
const CLIENTS: usize = 2;
const BATCH: i64 = 100;
/// A drain taking longer means a worker is stuck: fail rather than hang.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);

/// The targets ("An honest benchmark").
const TARGET_VS_REFERENCE: f64 = 0.5;
const TARGET_P50_MS: f64 = 1.5;
const TARGET_P99_MS: f64 = 5.0;
const TARGET_HISTORY: f64 = 0.9;

const CODE: &str = "def work(n):\n    return n\n\ndef ping():\n    return time.time()\n";

/// The reference: the least a queue needs (an id, a state, a payload, a partial index on
/// what is pending), claimed and completed in one statement, so one commit per batch.
/// Absolute jobs/s follow the disk's flush time more than pg_sync; what pg_sync makes of
/// the database is its speed over this loop's on the same cluster at the same moment.
const REF_TABLE: &str = "
DROP TABLE IF EXISTS bench_ref;
CREATE TABLE bench_ref (
    id      bigserial PRIMARY KEY,
    state   text NOT NULL DEFAULT 'pending',
    payload jsonb);
CREATE INDEX bench_ref_pending ON bench_ref (id) WHERE state = 'pending'";

const REF_BATCH: &str = "
WITH c AS (
    SELECT id FROM bench_ref WHERE state = 'pending'
    ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
UPDATE bench_ref r SET state = 'done' FROM c WHERE r.id = c.id";

/// The bare loop on sync.job claims the way a worker's batch does (due queue rows in
/// its order, locked FOR UPDATE SKIP LOCKED) and completes them in the same transaction
/// (sync.job's trigger removes the queue rows): one statement, one commit, as the
/// reference.
const CLAIM_COMPLETE: &str = "
WITH c AS (
    SELECT id FROM sync.job_queue WHERE eta <= now()
    ORDER BY priority, eta, id LIMIT $1 FOR UPDATE SKIP LOCKED)
UPDATE sync.job j SET state = 'done', attempts = j.attempts + 1, worker = 0,
    started_at = now(), finished_at = clock_timestamp()
FROM c WHERE j.id = c.id";

/// Round-robin over the given (project, task) pairs, so that consecutive jobs (and so
/// every claim) mix projects.
const ENQUEUE: &str = "
INSERT INTO sync.job (project_id, task_id, trigger_kind, handler, args)
SELECT ($1::bigint[])[1 + g % cardinality($1::bigint[])],
       ($2::bigint[])[1 + g % cardinality($2::bigint[])],
       'job', 'work', jsonb_build_object('args', jsonb_build_array(g))
FROM generate_series(1, $3::bigint) g";

/// Finished jobs as a worker leaves them, oldest first, half a second apart: 1M of them
/// span 5.8 days, inside keep_done_jobs' 7 days, so retention leaves them alone during
/// the run (the run measures a big history, not its removal).
const HISTORY_ROWS: &str = "
INSERT INTO sync.job (project_id, task_id, trigger_kind, handler, args, state, attempts,
                      result, created_at, started_at, finished_at)
SELECT $1, $2, 'job', 'work', jsonb_build_object('args', jsonb_build_array(g)), 'done', 1,
       to_jsonb(g), f - interval '2 ms', f - interval '1 ms', f
FROM generate_series(1, $3::bigint) g,
     LATERAL (SELECT now() - ($3 - g + 1) * interval '500 ms' AS f) t";

/// A project's task: (project id, task id).
type Task = (i64, i64);

/// Run a statement; panics naming it. Returns the rows it touched.
async fn run(c: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> u64 {
    c.execute(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn say(what: &str) {
    eprintln!("... {what}");
}

/// Empty sync.job and start from a clean table and a fresh checkpoint, so that no run
/// pays for the dead rows or the dirty pages of the one before.
async fn reset(c: &Client) {
    for sql in [
        "TRUNCATE sync.log, sync.job_cancel, sync.job_interrupted, sync.job",
        "VACUUM ANALYZE sync.job",
        "VACUUM ANALYZE sync.job_queue",
        "CHECKPOINT",
    ] {
        exec(c, sql).await;
    }
}

async fn enqueue(c: &Client, tasks: &[Task], n: i64) {
    let projects: Vec<i64> = tasks.iter().map(|t| t.0).collect();
    let ids: Vec<i64> = tasks.iter().map(|t| t.1).collect();
    run(c, ENQUEUE, &[&projects, &ids, &n]).await;
}

async fn wait_drained(c: &Client) {
    let start = Instant::now();
    loop {
        let busy: bool = scalar(c, "SELECT EXISTS (SELECT 1 FROM sync.job_queue)").await;
        if !busy {
            return;
        }
        if start.elapsed() > DRAIN_LIMIT {
            panic!("jobs still pending or running after {DRAIN_LIMIT:?}");
        }
        // Polling any faster would load the database being measured.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CLIENTS connections each running `batch` until it finds no job; jobs/s over all.
async fn bare_clients<F, Fut>(url: &str, jobs: i64, batch: F) -> f64
where
    F: Fn(Arc<Client>) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = u64> + Send,
{
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(Arc::new(connect(url).await));
    }
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            tokio::spawn(async move {
                let mut done = 0;
                loop {
                    match batch(client.clone()).await {
                        0 => return done,
                        n => done += n,
                    }
                }
            })
        })
        .collect();
    let mut done = 0;
    for t in tasks {
        done += t.await.expect("a bare-loop client panicked");
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(
        done, jobs as u64,
        "the bare loop completed {done} of {jobs} jobs"
    );
    jobs as f64 / secs
}

/// The database's own figure: the bare loop on bench_ref, JOBS rows.
async fn reference(url: &str, c: &Client) -> f64 {
    exec(c, "TRUNCATE bench_ref RESTART IDENTITY").await;
    run(
        c,
        "INSERT INTO bench_ref (payload)
         SELECT jsonb_build_object('args', jsonb_build_array(g)) FROM generate_series(1, $1::bigint) g",
        &[&JOBS],
    )
    .await;
    exec(c, "VACUUM ANALYZE bench_ref").await;
    exec(c, "CHECKPOINT").await;
    bare_clients(
        url,
        JOBS,
        |c| async move { run(&c, REF_BATCH, &[&BATCH]).await },
    )
    .await
}

/// The same kind of loop on sync.job: what pg_sync's table and indexes cost, no Python.
async fn bare_loop(url: &str, c: &Client, task: Task) -> f64 {
    reset(c).await;
    enqueue(c, &[task], JOBS).await;
    bare_clients(url, JOBS, |c| async move {
        run(&c, CLAIM_COMPLETE, &[&BATCH]).await
    })
    .await
}

/// `n` workers, each with an executor per core, that have all started and run a job.
async fn start_workers(url: &str, c: &Client, task: Task, n: usize) -> Vec<WorkerProcess> {
    let workers: Vec<_> = (0..n).map(|_| WorkerProcess::start(url, &[])).collect();
    enqueue(c, &[task], 50).await;
    wait_drained(c).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    workers
}

/// Queue `n` jobs over `tasks` in one transaction and time them from its commit to the
/// last completion (database timestamps). Jobs already in sync.job are left alone.
async fn throughput(c: &Client, tasks: &[Task], n: i64) -> f64 {
    let before: i64 = scalar(c, "SELECT coalesce(max(id), 0) FROM sync.job").await;
    enqueue(c, tasks, n).await;
    let committed_at: chrono::DateTime<chrono::Utc> = scalar(c, "SELECT clock_timestamp()").await;
    wait_drained(c).await;
    let row = c
        .query_one(
            "SELECT count(*) FILTER (WHERE state = 'done'), min(started_at), max(finished_at),
                    min(error)
             FROM sync.job WHERE id > $1",
            &[&before],
        )
        .await
        .expect("count the finished jobs");
    let done: i64 = row.get(0);
    if done != n {
        let error: Option<String> = row.get(3);
        panic!("only {done} of {n} jobs done; an error: {error:?}");
    }
    let first: chrono::DateTime<chrono::Utc> = row.get(1);
    let last: chrono::DateTime<chrono::Utc> = row.get(2);
    if std::env::var("BENCH_DEBUG").is_ok() {
        // Autovacuum and autoanalyze run on thresholds relative to the table's size, so
        // how often they ran during a drain differs between an empty and a big sync.job.
        let stats = c
            .query_one(
                "SELECT autovacuum_count, autoanalyze_count FROM pg_stat_user_tables
                 WHERE relid = 'sync.job'::regclass",
                &[],
            )
            .await
            .expect("read sync.job's statistics");
        let (vacuums, analyzes): (i64, i64) = (stats.get(0), stats.get(1));
        let ms = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(0) as f64 / 1e3;
        eprintln!(
            "commit -> first start {:.1} ms, first start -> last end {:.0} ms; sync.job so far: {vacuums} autovacuums, {analyzes} autoanalyzes",
            ms(first - committed_at),
            ms(last - first)
        );
    }
    let secs = (last - committed_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
    n as f64 / secs
}

/// Empty sync.job, then HISTORY finished jobs of `task`, vacuumed and analyzed as
/// autovacuum would leave them.
async fn load_history(c: &Client, task: Task) {
    reset(c).await;
    run(c, HISTORY_ROWS, &[&task.0, &task.1, &HISTORY]).await;
    exec(c, "VACUUM ANALYZE sync.job").await;
    exec(c, "CHECKPOINT").await;
}

/// Insert jobs one by one (each its own commit, 2 ms apart); latency = handler start
/// (time.time() in Python) minus the moment the insert's commit returned. Returns the
/// p50 and p99 in ms.
async fn latency(c: &Client, task: Task) -> (f64, f64) {
    exec(
        c,
        "TRUNCATE sync.log, sync.job_cancel, sync.job_interrupted, sync.job",
    )
    .await;
    let mut sent = Vec::with_capacity(LATENCY_JOBS);
    for _ in 0..LATENCY_JOBS {
        let id: i64 = c
            .query_one(
                "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler)
                 VALUES ($1, $2, 'job', 'ping') RETURNING id",
                &[&task.0, &task.1],
            )
            .await
            .expect("insert a ping job")
            .get(0);
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs_f64();
        sent.push((id, at));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    wait_drained(c).await;
    let mut lat = Vec::with_capacity(LATENCY_JOBS);
    for (id, at) in sent {
        let started: Option<f64> = c
            .query_one(
                "SELECT (result #>> '{}')::float8 FROM sync.job WHERE id = $1",
                &[&id],
            )
            .await
            .expect("read a ping job")
            .get(0);
        let started = started.unwrap_or_else(|| panic!("ping job {id} has no result"));
        lat.push((started - at) * 1000.0);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    (pct(0.50), pct(0.99))
}

fn workers_label(n: usize) -> String {
    format!("{n} worker{}", if n > 1 { "s" } else { "" })
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "MISS"
    }
}

/// One measured pg_sync figure, with the references measured just before and after it.
struct Figure {
    what: String,
    rate: f64,
    /// Mean of the two references around it: the database's speed at that moment.
    reference: f64,
    note: String,
}

impl Figure {
    fn ratio(&self) -> f64 {
        self.rate / self.reference
    }
}

/// The run's figures, each between two reference measurements (on a connection of its
/// own). The machine's speed
/// drifts during a run (other processes, the disk's cache), by a third or more on a
/// shared 2-core box: a reference minutes away would skew the ratio by as much.
struct Bench {
    url: String,
    c: Client,
    refs: Vec<f64>,
    figures: Vec<Figure>,
}

impl Bench {
    async fn measure_reference(&mut self) {
        say("reference loop on bench_ref");
        let rate = reference(&self.url, &self.c).await;
        self.refs.push(rate);
    }

    /// Record a figure measured since the last reference, then measure the next one.
    async fn record(&mut self, what: String, rate: f64, note: String) -> f64 {
        let before = *self.refs.last().expect("a reference before every figure");
        self.measure_reference().await;
        let after = *self.refs.last().expect("just measured");
        let figure = Figure {
            what,
            rate,
            reference: (before + after) / 2.0,
            note,
        };
        let ratio = figure.ratio();
        self.figures.push(figure);
        ratio
    }
}

/// The 100,000-job run of 1 or 2 workers on an empty sync.job, and its pickup latency.
struct WorkerRun {
    workers: usize,
    ratio: f64,
    p50: f64,
    p99: f64,
}

#[tokio::main]
async fn main() {
    let url =
        std::env::var("BENCH_DATABASE_URL").expect("BENCH_DATABASE_URL (use bench/worker/run)");
    let began = Instant::now();
    let c = connect(&url).await;
    exec(
        &c,
        "DROP EXTENSION IF EXISTS pg_sync CASCADE; CREATE EXTENSION pg_sync",
    )
    .await;
    exec(&c, REF_TABLE).await;
    let main_task = create_task(&c, "bench", "main", CODE).await;
    let mut spread = Vec::with_capacity(PROJECTS);
    for i in 1..=PROJECTS {
        spread.push(create_task(&c, &format!("bench_{i:03}"), "main", CODE).await);
    }
    let fsync: String = scalar(&c, "SHOW fsync").await;
    let sync_commit: String = scalar(&c, "SHOW synchronous_commit").await;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut b = Bench {
        url: url.clone(),
        c,
        refs: Vec::new(),
        figures: Vec::new(),
    };
    let c = connect(&url).await;
    // A fresh cluster creates (zero-fills and flushes) a WAL segment every 16 MB written;
    // once checkpoints recycle segments it no longer does. A drain of 100,000 jobs
    // writes hundreds of MB, the reference far less, so the first runs would pay a cost
    // that the reference and the later runs do not. The history load writes about a
    // gigabyte: doing it once first puts every run on recycled segments.
    say("warming up the cluster (WAL segments)");
    let warm = Instant::now();
    load_history(&c, main_task).await;
    reset(&c).await;
    if std::env::var("BENCH_DEBUG").is_ok() {
        eprintln!("warm-up took {:.0} s", warm.elapsed().as_secs_f64());
    }
    b.measure_reference().await;

    say("bare loop on sync.job");
    let bare = bare_loop(&url, &c, main_task).await;
    b.record(
        "bare SQL loop on sync.job (1 commit a batch)".into(),
        bare,
        String::new(),
    )
    .await;

    let mut runs: Vec<WorkerRun> = Vec::new();
    for n in [1usize, 2] {
        say(&format!(
            "{}: {JOBS} jobs, then pickup latency",
            workers_label(n)
        ));
        reset(&c).await;
        let workers = start_workers(&url, &c, main_task, n).await;
        reset(&c).await;
        let rate = throughput(&c, &[main_task], JOBS).await;
        let (p50, p99) = latency(&c, main_task).await;
        drop(workers);
        let what = format!("{} ({cores} executors each)", workers_label(n));
        let note = format!("pickup p50 {p50:.2} ms, p99 {p99:.2} ms");
        let ratio = b.record(what, rate, note).await;
        runs.push(WorkerRun {
            workers: n,
            ratio,
            p50,
            p99,
        });
    }
    let best = runs
        .iter()
        .max_by(|a, b| a.ratio.total_cmp(&b.ratio))
        .expect("two runs");
    let (best_n, best_ratio) = (best.workers, best.ratio);

    // Every executor meets each project for the first time in the first drain (loading
    // its code), and has met most of them in the second.
    for loaded in [false, true] {
        say(&format!(
            "2 workers: {SPREAD_JOBS} jobs over {PROJECTS} projects"
        ));
        reset(&c).await;
        let workers = start_workers(&url, &c, main_task, 2).await;
        reset(&c).await;
        if loaded {
            throughput(&c, &spread, SPREAD_JOBS).await;
            reset(&c).await;
        }
        let rate = throughput(&c, &spread, SPREAD_JOBS).await;
        drop(workers);
        let what = format!(
            "{SPREAD_JOBS} jobs over {PROJECTS} projects, 2 workers, code {}",
            if loaded { "loaded" } else { "not loaded" }
        );
        b.record(what, rate, String::new()).await;
    }

    // The control drain on an empty sync.job runs just before the history is loaded, by
    // the same worker processes: the two drains are a minute apart, not several, so the
    // machine's drift hardly enters their ratio.
    say(&format!(
        "{}: {JOBS} jobs on an empty sync.job, then with {HISTORY} finished jobs in history",
        workers_label(best_n)
    ));
    reset(&c).await;
    let workers = start_workers(&url, &c, main_task, best_n).await;
    reset(&c).await;
    let empty = throughput(&c, &[main_task], JOBS).await;
    load_history(&c, main_task).await;
    let history = throughput(&c, &[main_task], JOBS).await;
    drop(workers);
    let vs_empty = history / empty;
    let what = format!(
        "{}, {HISTORY} finished jobs in history",
        workers_label(best_n)
    );
    let note = format!("{vs_empty:.2} x empty history ({empty:.0} jobs/s just before)");
    b.record(what, history, note).await;

    println!();
    println!(
        "worker benchmark: trivial Python handler; {cores} cores; fsync={fsync}, synchronous_commit={sync_commit}"
    );
    println!(
        "reference: bare claim+complete loop on bench_ref ({CLIENTS} clients, {BATCH} jobs per \
         transaction, {JOBS} rows), measured before and after every figure (jobs/s):"
    );
    let refs: Vec<String> = b.refs.iter().map(|r| format!("{r:.0}")).collect();
    println!("  {}", refs.join(", "));
    println!();
    println!(
        "{:<58} {:>7} {:>7} {:>6}",
        "pg_sync", "jobs/s", "ref", "x ref"
    );
    for f in &b.figures {
        println!(
            "{:<58} {:>7.0} {:>7.0} {:>6.2}  {}",
            f.what,
            f.rate,
            f.reference,
            f.ratio(),
            f.note
        );
    }

    let worst_p50 = runs.iter().map(|r| r.p50).fold(0.0, f64::max);
    let worst_p99 = runs.iter().map(|r| r.p99).fold(0.0, f64::max);
    let each = |pick: fn(&WorkerRun) -> f64| {
        runs.iter()
            .map(|r| format!("{:.2} ms ({})", pick(r), workers_label(r.workers)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!();
    println!(
        "summary (targets of \"An honest benchmark\"; latency must hold for 1 and 2 workers):"
    );
    println!(
        "  {}  pg_sync, best of 1/2 workers >= {TARGET_VS_REFERENCE} x reference: {best_ratio:.2} x ({})",
        verdict(best_ratio >= TARGET_VS_REFERENCE),
        workers_label(best_n)
    );
    println!(
        "  {}  pickup latency p50 < {TARGET_P50_MS} ms: {}",
        verdict(worst_p50 < TARGET_P50_MS),
        each(|r| r.p50)
    );
    println!(
        "  {}  pickup latency p99 < {TARGET_P99_MS} ms: {}",
        verdict(worst_p99 < TARGET_P99_MS),
        each(|r| r.p99)
    );
    println!(
        "  {}  {HISTORY} finished jobs in history >= {TARGET_HISTORY} x empty history: {vs_empty:.2} x",
        verdict(vs_empty >= TARGET_HISTORY)
    );
    println!();
    println!("bench took {:.0} s", began.elapsed().as_secs_f64());
}
