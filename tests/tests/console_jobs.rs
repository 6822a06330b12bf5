// The console's jobs and logs pages in a real browser: a failed job's traceback, retry
// and cancel, a sync_user's forged POST refused by PostgreSQL, log filters (a rejected
// one shown at its field), transmissions as JSON, a running job's live tail, and links.
use pg_sync_tests::browser;
use pg_sync_tests::console::{hidden, roles, ConsoleHttp};
use pg_sync_tests::{create_task, exec, scalar, wait_for, TestDb, WorkerProcess};
use std::time::Duration;

const CODE: &str = "def boom(n):
    log('about to fail with %s' % n)
    raise ValueError('boom %s' % n)

def slow():
    log('step one')
    time.sleep(2)
    log('step two')
    return {'steps': 2}
";

async fn setup() -> (TestDb, WorkerProcess, String) {
    let db = TestDb::new().await;
    roles(&db).await;
    let c = db.connect().await;
    create_task(&c, "cj", "t", CODE).await;
    let worker = WorkerProcess::start(&db.url, &["--webhook-listen", "off"]);
    let base = worker.admin_url().await;
    (db, worker, base)
}

async fn state_of(c: &tokio_postgres::Client, id: i64) -> String {
    scalar(c, &format!("SELECT state FROM sync.job WHERE id = {id}")).await
}

async fn wait_state(c: &tokio_postgres::Client, id: i64, want: &str) {
    wait_for(
        &format!("job {id} {want}"),
        Duration::from_secs(30),
        || async move { state_of(c, id).await == want },
    )
    .await;
}

async fn failed_job(c: &tokio_postgres::Client) -> i64 {
    let id: i64 = scalar(
        c,
        "SELECT sync_add_job('cj', 't', 'boom', '{\"args\": [7]}', max_retries => 0)",
    )
    .await;
    wait_state(c, id, "failed").await;
    id
}

#[tokio::test]
async fn a_failed_jobs_traceback_and_retry() {
    let (db, _worker, base) = setup().await;
    let c = db.connect().await;
    let id = failed_job(&c).await;
    let b = browser::open().await;
    browser::sign_in(&b, &base, "con_dev", "").await;
    browser::wait_at(&b, "/console/").await;
    b.goto(&format!("{base}/console/jobs?state=failed&project=cj"))
        .await
        .unwrap();
    let row = browser::text(&b, &format!("tr[data-job='{id}']")).await;
    assert!(row.contains("boom") && row.contains("failed"), "{row}");
    browser::screenshot(&b, "jobs").await;
    browser::click(&b, &format!("tr[data-job='{id}'] a")).await;
    browser::wait_at(&b, &format!("/console/jobs/{id}")).await;
    let error = browser::text(&b, "#job-error").await;
    assert!(error.contains("Traceback"), "{error}");
    assert!(error.contains("ValueError: boom 7"), "{error}");
    let log = browser::text(&b, "#job-log").await;
    assert!(log.contains("about to fail with 7"), "{log}");
    browser::screenshot(&b, "job-failed").await;

    let finished: String = scalar(
        &c,
        &format!("SELECT finished_at::text FROM sync.job WHERE id = {id}"),
    )
    .await;
    browser::click(&b, "#retry").await;
    browser::wait_path(&b, &format!("/console/jobs/{id}?done=")).await;
    assert!(browser::text(&b, ".notice").await.contains("Queued again"));
    // It ran again (and failed again).
    wait_for("the retried job's second run", Duration::from_secs(30), || {
        let (c, finished) = (&c, &finished);
        async move {
            let now: Option<String> = scalar(
                c,
                &format!("SELECT finished_at::text FROM sync.job WHERE id = {id} AND state = 'failed'"),
            )
            .await;
            now.is_some_and(|n| n != *finished)
        }
    })
    .await;
    b.close().await.unwrap();
}

#[tokio::test]
async fn a_pending_job_is_cancelled() {
    let (db, _worker, base) = setup().await;
    let c = db.connect().await;
    let id: i64 = scalar(
        &c,
        "SELECT sync_add_job('cj', 't', 'slow', eta => now() + interval '1 hour')",
    )
    .await;
    let b = browser::open().await;
    browser::sign_in(&b, &base, "con_admin", "").await;
    browser::wait_at(&b, "/console/").await;
    b.goto(&format!("{base}/console/jobs/{id}")).await.unwrap();
    assert!(browser::text(&b, "#job-state").await.contains("pending"));
    browser::click(&b, "#cancel").await;
    browser::wait_path(&b, &format!("/console/jobs/{id}?done=")).await;
    assert!(browser::text(&b, "#job-state").await.contains("cancelled"));
    assert_eq!(state_of(&c, id).await, "cancelled");
    b.close().await.unwrap();
}

#[tokio::test]
async fn a_sync_users_forged_retry_is_refused_by_postgresql() {
    let (db, _worker, base) = setup().await;
    let c = db.connect().await;
    let id = failed_job(&c).await;
    let mut http = ConsoleHttp::new(&base);
    assert_eq!(http.sign_in("con_user", "").await.status, 303);
    let page = http.get(&format!("/console/jobs/{id}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("ValueError: boom 7"));
    assert!(
        !page.body.contains("id=\"retry\""),
        "no Retry button for sync_user"
    );
    let csrf = hidden(&page.body, "csrf").unwrap();
    for action in ["retry", "cancel"] {
        let a = http
            .post(&format!("/console/jobs/{id}/{action}"), &[("csrf", &csrf)])
            .await;
        assert_eq!(a.status, 403, "{}", a.body);
        assert!(
            a.body
                .contains(&format!("permission denied for function sync_{action}_job")),
            "{}",
            a.body
        );
    }
    assert_eq!(state_of(&c, id).await, "failed");
}

#[tokio::test]
async fn logs_filter_group_and_show_transmissions() {
    let (db, _worker, base) = setup().await;
    let c = db.connect().await;
    failed_job(&c).await;
    exec(
        &c,
        "INSERT INTO sync.log (project_id, level, kind, recipient, message)
         SELECT id, 'info', 'data_out', 'https://api.example/items', '{\"item\": {\"id\": 5, \"tags\": [\"a\", \"b\"]}}'
         FROM sync.project WHERE name = 'cj'",
    )
    .await;
    let mut http = ConsoleHttp::new(&base);
    assert_eq!(http.sign_in("con_user", "").await.status, 303);
    // A filter PostgreSQL rejects: its error at that field.
    let a = http.get("/console/logs?message=%28unclosed").await;
    assert_eq!(a.status, 200);
    assert!(a.body.contains("data-field=\"message\""), "{}", a.body);
    assert!(a.body.contains("invalid regular expression"), "{}", a.body);
    let a = http.get("/console/logs?since=not-a-time").await;
    assert!(a.body.contains("data-field=\"since\""), "{}", a.body);
    let a = http.get("/console/jobs?until=soon-ish").await;
    assert!(a.body.contains("data-field=\"until\""), "{}", a.body);
    // Grouped by level; transmissions as indented JSON.
    let a = http.get("/console/logs?group=level").await;
    assert!(a.body.contains("id=\"log-groups\""), "{}", a.body);
    let a = http.get("/console/logs?kind=data_out").await;
    assert!(a.body.contains("&quot;tags&quot;: [\n"), "{}", a.body);

    let b = browser::open().await;
    browser::sign_in(&b, &base, "con_user", "").await;
    browser::wait_at(&b, "/console/").await;
    b.goto(&format!("{base}/console/logs?message=%28unclosed"))
        .await
        .unwrap();
    let err = browser::text(&b, ".field-error[data-field=message]").await;
    assert!(err.contains("invalid regular expression"), "{err}");
    browser::screenshot(&b, "logs-bad-filter").await;
    b.goto(&format!("{base}/console/logs")).await.unwrap();
    browser::screenshot(&b, "logs").await;
    b.close().await.unwrap();
}

#[tokio::test]
async fn a_running_jobs_log_tails_live() {
    let (db, _worker, base) = setup().await;
    let c = db.connect().await;
    let id: i64 = scalar(&c, "SELECT sync_add_job('cj', 't', 'slow')").await;
    wait_for("step one", Duration::from_secs(30), || {
        let c = &c;
        async move {
            scalar::<i64>(
                c,
                &format!(
                    "SELECT count(*) FROM sync.log WHERE job_id = {id} AND message = 'step one'"
                ),
            )
            .await
                == 1
        }
    })
    .await;
    let b = browser::open().await;
    browser::sign_in(&b, &base, "con_dev", "").await;
    browser::wait_at(&b, "/console/").await;
    b.goto(&format!("{base}/console/jobs/{id}")).await.unwrap();
    assert!(browser::text(&b, "#job-log").await.contains("step one"));
    // Without reloading by hand, the page shows the next line and the job's end.
    let start = std::time::Instant::now();
    loop {
        let state = browser::text(&b, "#job-state").await;
        let log = browser::text(&b, "#job-log").await;
        if log.contains("step two") && state.contains("done") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{state}: {log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.close().await.unwrap();
}

#[tokio::test]
async fn links_are_found_by_refs() {
    let (db, _worker, base) = setup().await;
    let c = db.connect().await;
    exec(
        &c,
        "SELECT sync_set_link('card', '{\"github\": \"12\", \"trello\": \"abc\"}'::jsonb);
         SELECT sync_set_link('card', '{\"github\": \"13\", \"trello\": \"<b>x</b>\"}'::jsonb);",
    )
    .await;
    let mut http = ConsoleHttp::new(&base);
    assert_eq!(http.sign_in("con_user", "").await.status, 303);
    let a = http
        .get("/console/links?relation=card&refs=%7B%22github%22%3A%20%2212%22%2C%20%22trello%22%3A%20null%7D")
        .await;
    assert!(a.body.contains("<code>abc</code>"), "{}", a.body);
    assert!(!a.body.contains("<b>x</b>"), "{}", a.body);
    // The newest links of the relation; refs are escaped.
    let a = http.get("/console/links?relation=card").await;
    assert!(a.body.contains("&lt;b&gt;x&lt;/b&gt;"), "{}", a.body);
    // Refs PostgreSQL cannot read: its error at that field.
    let a = http.get("/console/links?relation=card&refs=%7Bnot").await;
    assert!(a.body.contains("data-field=\"refs\""), "{}", a.body);

    let b = browser::open().await;
    browser::sign_in(&b, &base, "con_user", "").await;
    browser::wait_at(&b, "/console/").await;
    b.goto(&format!("{base}/console/links?relation=card"))
        .await
        .unwrap();
    assert!(b
        .find(fantoccini::Locator::Css("#links tbody tr"))
        .await
        .is_ok());
    browser::screenshot(&b, "links").await;
    b.close().await.unwrap();
}
