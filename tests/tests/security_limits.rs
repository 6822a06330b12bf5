// Limits that hold against the code they limit: the time_limit ceiling at run time, a
// killed job that takes no batch-mate with it, cancelling a running job, the executor
// memory limit, and webhook calls that cannot exhaust the worker.
use pg_sync_tests::python::PyProject;
use pg_sync_tests::{scalar, wait_for, WorkerProcess};
use serde_json::json;
use std::time::{Duration, Instant};

const SPIN: &str = r#"
def spin():
    while True:
        try:
            while True:
                pass
        except:
            pass

def quick(n):
    db.execute("INSERT INTO done_jobs (n) VALUES ($1)", n)
    return n
"#;

async fn project() -> PyProject {
    let p = PyProject::new("limits").await;
    p.sql(&format!(
        "CREATE TABLE done_jobs (n int);
         GRANT ALL ON done_jobs TO {};",
        p.role
    ))
    .await;
    p
}

/// A job ignoring its time limit is killed at the ceiling (max_time_limit clamps the
/// task's own, longer time_limit); the jobs of its batch that ran before it are rolled
/// back with it and run again, once, and those after it run too.
#[tokio::test]
async fn a_runaway_job_is_stopped_at_the_ceiling_and_its_batch_mates_run_once() {
    let p = project().await;
    let task = p.task("t", SPIN).await;
    p.sql(&format!(
        "UPDATE sync.task SET time_limit = '10 minutes' WHERE id = {task};
         INSERT INTO sync.setting VALUES ('max_time_limit', '1 second');"
    ))
    .await;
    // One batch: quick 1, the spinner, quick 2 (claim order is priority, eta, id).
    let first = p.job(task, "quick", json!({"args": [1]})).await;
    let spinner = p.job(task, "spin", json!({})).await;
    let last = p.job(task, "quick", json!({"args": [2]})).await;
    let started = Instant::now();
    let _worker = WorkerProcess::start(
        &p.db.url,
        &[
            "--executors",
            "1",
            "--soft-time-limit",
            "30s",
            "--hard-time-limit",
            "31s",
        ],
    );
    let report = p.finished(spinner).await;
    assert_eq!(report["state"], "failed", "{report}");
    assert!(
        report["error"]
            .as_str()
            .unwrap_or_default()
            .contains("hard time limit"),
        "{report}"
    );
    // Clamped to 1 s, plus the 1 s margin: well before the task's 10 minutes.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    for job in [first, last] {
        assert_eq!(p.finished(job).await["state"], "done");
    }
    let rows: Vec<i32> = p
        .client
        .query("SELECT n FROM done_jobs ORDER BY n", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, vec![1, 2], "batch-mates ran more or less than once");
    let attempts: Vec<i32> = p
        .client
        .query(
            "SELECT attempts FROM sync.job WHERE id = ANY ($1) ORDER BY id",
            &[&vec![first, last]],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(attempts, vec![1, 1]);
}

#[tokio::test]
async fn cancelling_a_running_job_returns_at_once_and_stops_it_within_a_second() {
    let p = project().await;
    let task = p
        .task(
            "t",
            &format!(
                "{SPIN}\ndef polite():\n    db.execute(\"INSERT INTO done_jobs (n) VALUES (7)\")\n    while True:\n        time.sleep(0.01)\n"
            ),
        )
        .await;
    let _worker = WorkerProcess::start(
        &p.db.url,
        &[
            "--executors",
            "1",
            "--soft-time-limit",
            "60s",
            "--hard-time-limit",
            "90s",
        ],
    );
    // One that lets JobCancelled through, one that swallows every exception.
    for handler in ["polite", "spin"] {
        let job = p.job(task, handler, json!({})).await;
        wait_for("the job to run", Duration::from_secs(20), || async {
            scalar::<bool>(
                &p.client,
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                     WHERE application_name LIKE 'sync_worker executor%' AND state = 'idle in transaction')
                     AND (SELECT sync.job_state(state, id) = 'running' FROM sync.job WHERE id = {job})"
                ),
            )
            .await
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let asked = Instant::now();
        p.client
            .batch_execute(&format!("SELECT sync_cancel_job({job})"))
            .await
            .expect("cancel");
        assert!(
            asked.elapsed() < Duration::from_millis(500),
            "sync_cancel_job waited"
        );
        wait_for(
            "the job to be cancelled",
            Duration::from_secs(5),
            || async {
                scalar::<String>(
                    &p.client,
                    &format!("SELECT state FROM sync.job WHERE id = {job}"),
                )
                .await
                    == "cancelled"
            },
        )
        .await;
        let took = asked.elapsed();
        assert!(
            took < Duration::from_millis(1500),
            "{handler}: stopped after {took:?}"
        );
        let error: String = p
            .scalar(&format!("SELECT error FROM sync.job WHERE id = {job}"))
            .await;
        assert!(error.contains("cancelled by"), "{error}");
    }
    // The polite job's write was rolled back.
    let n: i64 = p.scalar("SELECT count(*) FROM done_jobs").await;
    assert_eq!(n, 0);
    // The worker goes on.
    let job = p.job(task, "quick", json!({"args": [3]})).await;
    assert_eq!(p.finished(job).await["state"], "done");
}

#[tokio::test]
async fn a_huge_allocation_fails_the_job_not_the_host() {
    let p = project().await;
    let task = p
        .task(
            "t",
            "def hog():\n    s = 'x' * 10**10\n    return len(s)\n\ndef fine():\n    return 1\n",
        )
        .await;
    let job = p.job(task, "hog", json!({})).await;
    let report = p.run(job).await;
    assert_eq!(report["state"], "failed", "{report}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("MemoryError") && error.contains("executor_memory_limit"),
        "{error}"
    );
    let job = p.job(task, "fine", json!({})).await;
    assert_eq!(p.run(job).await["state"], "done");
}

/// An unknown token is refused before the body is read: a sender that promises a large
/// body and never sends it gets its 404 at once.
#[tokio::test]
async fn webhook_bodies_are_read_only_for_known_tokens_and_the_queue_is_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let p = PyProject::new("hooks_limits").await;
    let task = p
        .task(
            "t",
            "def handle_webhook(httprequest):\n    time.sleep(float(httprequest.args.get('sleep', '0')))\n    return {'ok': True}\n",
        )
        .await;
    p.sql(&format!(
        "INSERT INTO sync.webhook_trigger (task_id, name) VALUES ({task}, 'hook')"
    ))
    .await;
    let worker = WorkerProcess::start(
        &p.db.url,
        &[
            "--executors",
            "1",
            "--base-url",
            "https://example.test",
            "--webhook-queue-size",
            "1",
        ],
    );
    let base = worker.webhook_url().await;
    let addr = base.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    s.write_all(
        format!(
            "POST /sync/webhook/{} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{{",
            "u".repeat(40)
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an answer without the body")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // Queue of one: while a slow call holds it, the next gets 503 with Retry-After.
    let token: String = p.scalar("SELECT token FROM sync.webhook_trigger").await;
    let url = format!("{base}/sync/webhook/{token}");
    let http = reqwest::Client::new();
    let slow = tokio::spawn({
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.post(format!("{url}?sleep=2"))
                .json(&json!({}))
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy = http.post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(busy.status(), 503);
    assert_eq!(
        busy.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    let again = http.post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(again.status(), 200);
}
