// A running job's log lines are written as they happen: other sessions see them within
// 200 ms while the job runs, and they survive its rollback, a hard-limit kill and a
// worker killed mid-job; secret values are masked on that path too.
use pg_sync_tests::python::PyProject;
use pg_sync_tests::*;
use std::time::{Duration, Instant};

async fn count(c: &Client, sql: &str) -> i64 {
    scalar(c, sql).await
}

const STEPS: &str = "def steps():\n    log('step one')\n    time.sleep(3)\n    log('step two')\n    return 2\n\ndef quick():\n    return 1\n";

/// Wait for job `job`'s line 'step one'; returns how long after log() this session
/// first saw it (database clock at the sighting minus the line's time), the job's state
/// then, and whether 'step two' was there too.
async fn first_sighting(c: &Client, job: i64) -> (f64, String, bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = c
            .query_opt(
                "SELECT extract(epoch FROM clock_timestamp() - l.created_at)::float8 * 1000,
                        sync.job_state(j.state, j.id),
                        EXISTS (SELECT FROM sync.log WHERE job_id = $1 AND message = 'step two')
                 FROM sync.log l JOIN sync.job j ON j.id = l.job_id
                 WHERE l.job_id = $1 AND l.message = 'step one'",
                &[&job],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            return (row.get(0), row.get(1), row.get(2));
        }
        assert!(Instant::now() < deadline, "'step one' never showed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_line_shows_while_its_job_runs() {
    let p = PyProject::new("live_log").await;
    let c = &p.client;
    let t = p.task("main", STEPS).await;
    let job = p.job(t, "steps", serde_json::json!({})).await;
    let _w = p.worker().await;
    let (_, state, second) = first_sighting(c, job).await;
    // Running, or pending still: its row says pending until the batch commits, and
    // sync.job_started shows it running within 100 ms.
    assert!(
        state == "running" || state == "pending",
        "the line must show while the job runs ({state})"
    );
    assert!(!second, "the second line is not logged yet");
    let done = p.finished(job).await;
    assert_eq!(done["state"], "done", "{done}");
    // Each line once, in the order logged.
    let lines: Vec<String> = c
        .query(
            "SELECT message FROM sync.log WHERE job_id = $1 AND message LIKE 'step %' ORDER BY created_at, id",
            &[&job],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(lines, ["step one", "step two"]);
}

/// The 200 ms bound, measured on a quiet machine (scripts/test.sh runs it alone after
/// the suite): five jobs, each line's lag from log() to this session's first sighting.
#[tokio::test]
#[ignore]
async fn a_line_shows_within_200_ms() {
    let p = PyProject::new("live_log_lag").await;
    let c = &p.client;
    let t = p.task("main", STEPS).await;
    // A worker up and serving, as in production: its executors have logged in.
    let warm = p.job(t, "quick", serde_json::json!({})).await;
    p.run(warm).await;
    let mut lags = Vec::new();
    for _ in 0..5 {
        let job = p.job(t, "steps", serde_json::json!({})).await;
        let (lag, state, _) = first_sighting(c, job).await;
        assert!(state == "running" || state == "pending", "{state}");
        lags.push(lag);
        p.sql(&format!("SELECT sync_cancel_job({job})")).await;
        p.finished(job).await;
    }
    println!("log line lag (ms): {lags:.1?}");
    let worst = lags.iter().cloned().fold(0.0, f64::max);
    assert!(
        worst < 200.0,
        "a line showed {worst:.0} ms after log(): {lags:.0?}"
    );
}

#[tokio::test]
async fn lines_survive_the_jobs_rollback_and_the_hard_limit_kill_and_are_masked() {
    let p = PyProject::new("kept_log").await;
    let c = &p.client;
    p.sql("CREATE TABLE effects (n int)").await;
    c.execute(
        "INSERT INTO sync.project_secret (project_id, key, value) VALUES ($1, 'TOKEN', 'tok-5ecret-value')",
        &[&p.id],
    )
    .await
    .unwrap();
    // Task code never sees secrets; core_code (admins') hands the value over.
    p.set("core_code", "def token():\n    return secrets.TOKEN\n")
        .await;
    let code = "\
def fails():
    log('before the failure, token ' + token())
    db.execute('INSERT INTO effects VALUES (1)')
    raise Exception('boom')

def hangs():
    log('about to hang')
    while True:
        try:
            while True:
                pass
        except:
            pass
";
    let t = p.task("main", code).await;
    let failed = p.job(t, "fails", serde_json::json!({})).await;
    let _w = WorkerProcess::start(
        &p.db.url,
        &[
            "--executors",
            "1",
            "--soft-time-limit",
            "1s",
            "--hard-time-limit",
            "2s",
        ],
    );
    assert_eq!(p.finished(failed).await["state"], "failed");
    // Queued once the first has ended: the hard-limit kill takes its whole batch along.
    let hung = p.job(t, "hangs", serde_json::json!({})).await;
    assert_eq!(p.finished(hung).await["state"], "failed");
    // The failed job's write is gone, its line is not; the secret never reached sync.log.
    assert_eq!(count(c, "SELECT count(*) FROM effects").await, 0);
    let line: String = c
        .query_one(
            "SELECT message FROM sync.log WHERE job_id = $1 AND message LIKE 'before the failure%'",
            &[&failed],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(line, "before the failure, token ***");
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM sync.log WHERE message LIKE '%tok-5ecret-value%'"
        )
        .await,
        0
    );
    // The executor running `hangs` was killed at the hard limit: its line was written
    // before that.
    let kept: i64 = c
        .query_one(
            "SELECT count(*) FROM sync.log WHERE job_id = $1 AND message = 'about to hang'",
            &[&hung],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1);
}

#[tokio::test]
async fn lines_survive_a_worker_killed_mid_job() {
    let p = PyProject::new("crash_log").await;
    let c = &p.client;
    let code = "def slow():\n    log('started a slow one')\n    time.sleep(2)\n    return 1\n";
    let t = p.task("main", code).await;
    p.job(t, "slow", serde_json::json!({})).await;
    let mut a = WorkerProcess::start(&p.db.url, &["--executors", "1"]);
    wait_for("the first line", Duration::from_secs(30), || async {
        count(
            c,
            "SELECT count(*) FROM sync.log WHERE message = 'started a slow one'",
        )
        .await
            == 1
    })
    .await;
    a.signal(libc::SIGKILL);
    a.wait_exit(Duration::from_secs(5))
        .await
        .expect("worker gone");
    let _b = WorkerProcess::start(
        &p.db.url,
        &["--executors", "1", "--rescue-interval", "200ms"],
    );
    wait_for("the job to run again", Duration::from_secs(30), || async {
        count(c, "SELECT count(*) FROM sync.job WHERE state = 'done'").await == 1
    })
    .await;
    // The killed try's line stayed; the second try wrote its own.
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM sync.log WHERE message = 'started a slow one'"
        )
        .await,
        2
    );
}
