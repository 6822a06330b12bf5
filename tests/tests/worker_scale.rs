// Many workers on one queue: 4 workers drain 20,000 jobs and every job runs exactly
// once (each run appends its number to a file outside the database, so a job run
// twice, even rolled back, would show up twice).
use pg_sync_tests::*;
use std::time::Duration;

#[tokio::test]
async fn four_workers_drain_20000_jobs_each_exactly_once() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let base = std::env::var("PG_SYNC_TEST_TMP").unwrap_or_else(|_| "/tmp".into());
    let mark = std::path::PathBuf::from(base).join(format!("scale-{}", std::process::id()));
    let _ = std::fs::remove_file(&mark);
    let code = format!(
        "MARK = {:?}\ndef work(n):\n    with open(MARK, 'a') as f:\n        f.write('%d\\n' % n)\n    return n\n",
        mark.display().to_string()
    );
    let (p, t) = create_task(&c, "scale", "main", &code).await;
    let n = 20_000i64;
    c.execute(
        "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler, args)
         SELECT $1, $2, 'job', 'work', jsonb_build_object('args', jsonb_build_array(g))
         FROM generate_series(1, $3::bigint) g",
        &[&p, &t, &n],
    )
    .await
    .unwrap();
    let workers: Vec<_> = (0..4)
        .map(|_| WorkerProcess::start(&db.url, &["--executors", "2"]))
        .collect();
    wait_for("20,000 jobs done", Duration::from_secs(180), || async {
        scalar::<i64>(&c, "SELECT count(*) FROM sync.job WHERE state = 'done'").await == n
    })
    .await;
    let text = std::fs::read_to_string(&mark).unwrap();
    let mut seen = vec![0u32; n as usize + 1];
    for line in text.lines() {
        let k: usize = line.parse().unwrap();
        seen[k] += 1;
    }
    let twice: Vec<usize> = (1..=n as usize).filter(|&k| seen[k] > 1).collect();
    let never: Vec<usize> = (1..=n as usize).filter(|&k| seen[k] == 0).collect();
    assert!(
        twice.is_empty(),
        "ran more than once: {:?}",
        &twice[..twice.len().min(20)]
    );
    assert!(
        never.is_empty(),
        "never ran: {:?}",
        &never[..never.len().min(20)]
    );
    let row = c
        .query_one(
            "SELECT count(*) FILTER (WHERE attempts <> 1), count(DISTINCT worker) FROM sync.job",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0);
    assert_eq!(row.get::<_, i64>(1), 4, "every worker took part");
    drop(workers);
    let _ = std::fs::remove_file(&mark);
}
