// The console's pages stay fast on a big database: with 100,000 jobs and 1,000,000 log
// lines, every page renders in under 100 ms of server time (its Server-Timing header).
use pg_sync_tests::console::{roles, ConsoleHttp};
use pg_sync_tests::{create_task, exec, scalar, TestDb, WorkerProcess};

const LIMIT_MS: f64 = 100.0;

/// 100,000 jobs over a week (mostly done, some failed, pending, cancelled), ten log lines
/// each, and 50,000 links.
const FILL: &str = "
INSERT INTO sync.job (project_id, task_id, trigger_kind, trigger_name, handler, args, state,
                      attempts, error, result, created_at, started_at, finished_at)
SELECT p.id, t.id, 'cron', 'every_minute', 'handle', jsonb_build_object('n', g),
       s.state, 1,
       CASE WHEN s.state = 'failed' THEN 'Traceback (most recent call last):\nValueError: ' || g END,
       CASE WHEN s.state = 'done' THEN jsonb_build_object('ok', g) END,
       now() - (100000 - g) * interval '6 seconds',
       CASE WHEN s.state <> 'pending' THEN now() - (100000 - g) * interval '6 seconds' END,
       CASE WHEN s.state IN ('done', 'failed', 'cancelled')
            THEN now() - (100000 - g) * interval '6 seconds' + interval '1 second' END
FROM generate_series(1, 100000) g
CROSS JOIN LATERAL (SELECT CASE WHEN g % 20 = 0 THEN 'failed' WHEN g % 50 = 1 THEN 'cancelled'
                                WHEN g > 99000 THEN 'pending' ELSE 'done' END AS state) s
JOIN sync.project p ON p.name = 'perf' JOIN sync.task t ON t.project_id = p.id;
INSERT INTO sync.log (created_at, project_id, task_id, trigger_name, job_id, job_started_at,
                      level, kind, recipient, message)
SELECT j.created_at + i * interval '10 ms', j.project_id, j.task_id, j.trigger_name, j.id,
       j.started_at,
       (ARRAY['debug', 'info', 'info', 'warning', 'error'])[1 + (j.id + i) % 5],
       CASE WHEN i = 3 THEN 'data_out' WHEN i = 4 THEN 'data_in' ELSE 'message' END,
       CASE WHEN i IN (3, 4) THEN 'https://api.example/items' END,
       CASE WHEN i IN (3, 4) THEN jsonb_build_object('id', j.id, 'line', i)::text
            ELSE 'line ' || i || ' of job ' || j.id END
FROM sync.job j CROSS JOIN generate_series(1, 10) i;
INSERT INTO sync.link (relation, system1, ref1, system2, ref2)
SELECT 'card', 'github', g::text, 'trello', 't' || g FROM generate_series(1, 50000) g;
ANALYZE sync.job; ANALYZE sync.log; ANALYZE sync.link;";

#[tokio::test]
async fn every_page_renders_in_under_100_ms_on_a_big_database() {
    let db = TestDb::new().await;
    roles(&db).await;
    let c = db.connect().await;
    create_task(&c, "perf", "t", "def handle(n):\n    return n\n").await;
    // No worker runs the queue meanwhile: the jobs stay as written.
    exec(&c, "UPDATE sync.project SET active = false").await;
    exec(&c, FILL).await;
    assert_eq!(
        scalar::<i64>(&c, "SELECT count(*) FROM sync.log").await,
        1_000_000
    );
    let job: i64 = scalar(&c, "SELECT max(id) FROM sync.job WHERE state = 'failed'").await;
    let mid: i64 = scalar(&c, "SELECT max(id) / 2 FROM sync.job").await;
    let log_mid: i64 = scalar(&c, "SELECT max(id) / 2 FROM sync.log").await;

    let worker = WorkerProcess::start(&db.url, &["--webhook-listen", "off"]);
    let mut http = ConsoleHttp::new(&worker.admin_url().await);
    assert_eq!(http.sign_in("con_user", "").await.status, 303);
    let pages = [
        "/console/".to_string(),
        "/console/jobs".into(),
        "/console/jobs?state=failed".into(),
        "/console/jobs?project=perf&task=t&trigger=every_minute&state=done".into(),
        format!("/console/jobs?before={mid}"),
        format!("/console/jobs?after={mid}"),
        "/console/jobs?since=now()&until=tomorrow".replace("now()", "yesterday"),
        format!("/console/jobs/{job}"),
        format!("/console/jobs/{job}/log"),
        "/console/logs".into(),
        "/console/logs?level=error&kind=message".into(),
        "/console/logs?kind=data_out".into(),
        format!("/console/logs?project=perf&before={log_mid}"),
        "/console/logs?group=level".into(),
        "/console/logs?group=trigger&project=perf".into(),
        "/console/logs?message=job%20999".into(),
        // Nothing matches: the worst case, a whole window searched.
        "/console/logs?message=no%20such%20line&level=error".into(),
        "/console/jobs?state=running".into(),
        "/console/links?relation=card".into(),
        "/console/links?relation=card&refs=%7B%22github%22%3A%20%5B%2212%22%2C%20%2213%22%5D%7D"
            .into(),
    ];
    let mut slow = vec![];
    for page in &pages {
        // The best of three: the first may pay for planning and a cold cache.
        let mut best = f64::MAX;
        for _ in 0..3 {
            let a = http.get(page).await;
            assert_eq!(a.status, 200, "{page}: {}", a.body);
            best = best.min(a.render_ms.expect("a Server-Timing header"));
        }
        println!("{page}: {best:.1} ms");
        if best >= LIMIT_MS {
            slow.push(format!("{page}: {best:.1} ms"));
        }
    }
    assert!(slow.is_empty(), "pages over {LIMIT_MS} ms: {slow:?}");
}
