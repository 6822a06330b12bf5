// Many workers on one queue: 4 workers drain 20,000 jobs and every job runs exactly
// once: each run inserts its number in the job's transaction, and every job was
// started once (attempts = 1), by one of the four workers.
use pg_sync_tests::python::PyProject;
use pg_sync_tests::*;
use std::time::Duration;

#[tokio::test]
async fn four_workers_drain_20000_jobs_each_exactly_once() {
    let p = PyProject::new("scale").await;
    p.sql("CREATE TABLE effects (n bigint NOT NULL)").await;
    let c = &p.client;
    let t = p
        .task(
            "main",
            "def work(n):\n    db.execute('INSERT INTO effects (n) VALUES ($1)', n)\n    return n\n",
        )
        .await;
    let n = 20_000i64;
    p.queue_work(t, n).await;
    let workers: Vec<_> = (0..4)
        .map(|_| WorkerProcess::start(&p.db.url, &["--executors", "2"]))
        .collect();
    wait_for("20,000 jobs done", Duration::from_secs(240), || async {
        scalar::<i64>(c, "SELECT count(*) FROM sync.job WHERE state = 'done'").await == n
    })
    .await;
    let row = c
        .query_one(
            "SELECT count(*), count(DISTINCT n), min(n), max(n) FROM effects",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), n, "one effect per job");
    assert_eq!(row.get::<_, i64>(1), n, "no job's effect twice");
    assert_eq!((row.get::<_, i64>(2), row.get::<_, i64>(3)), (1, n));
    let row = c
        .query_one(
            "SELECT count(*) FILTER (WHERE attempts <> 1), count(DISTINCT worker) FROM sync.job",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0, "every job started once");
    assert_eq!(row.get::<_, i64>(1), 4, "every worker took part");
    drop(workers);
}
