// Immediate buttons: CALL sync_press_button(...) commits the button's job, waits for its
// outcome and returns the handler's result or raises its error with the traceback; the
// admin API's POST /button/press answers with the same outcome.
use pg_sync_tests::python::PyProject;
use pg_sync_tests::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const CODE: &str = r#"
def handle_button():
    if trigger_name == "boom":
        raise ValueError("no partner to push")
    return {"pressed": trigger_name, "user": user}
"#;

async fn project() -> PyProject {
    let p = PyProject::new("buttons").await;
    let task = p.task("main", CODE).await;
    p.sql(&format!(
        "INSERT INTO sync.button_trigger (task_id, project_id, name) VALUES ({task}, {id}, 'go'), ({task}, {id}, 'boom')",
        id = p.id
    ))
    .await;
    p
}

/// `CALL sync_press_button(...)` through the simple protocol (as psql sends it); the
/// INOUT `result` as text, or the error.
async fn press(c: &Client, sql: &str) -> Result<Option<String>, Error> {
    let messages = c.simple_query(sql).await?;
    Ok(messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    }))
}

#[tokio::test]
async fn press_button_returns_the_result_or_raises_the_error_with_its_traceback() {
    let p = project().await;
    p.worker().await;
    let c = p.db.connect().await;
    let result = press(&c, "CALL sync_press_button('buttons', 'go', NULL)")
        .await
        .expect("press go");
    let result: Value = serde_json::from_str(&result.expect("a result row")).unwrap();
    assert_eq!(result, json!({"pressed": "go", "user": "postgres"}));
    // The job keeps its row like any other; pressing again runs it again.
    press(&c, "CALL sync_press_button('buttons', 'go', NULL)")
        .await
        .expect("press go again");
    let done: i64 = p
        .scalar("SELECT count(*) FROM sync.job WHERE trigger_name = 'go' AND state = 'done'")
        .await;
    assert_eq!(done, 2);

    let err = press(&c, "CALL sync_press_button('buttons', 'boom', NULL)")
        .await
        .expect_err("boom raises");
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "38000", "{db:?}");
    assert!(
        db.message()
            .contains("button \"boom\" of project \"buttons\" failed")
            && db.message().contains("ValueError: no partner to push"),
        "{db:?}"
    );
    let detail = db.detail().unwrap_or_default();
    assert!(
        detail.contains("Traceback") && detail.contains("handle_button"),
        "{detail}"
    );
    assert!(
        db.hint().unwrap_or_default().contains("sync.log_view"),
        "{db:?}"
    );

    // Unknown and inactive buttons are refused before anything is queued.
    let err = press(&c, "CALL sync_press_button('buttons', 'nope', NULL)")
        .await
        .expect_err("unknown button");
    assert_eq!(err.as_db_error().unwrap().code().code(), "P0002");
    // Inside a transaction block the job could not be committed for a worker to see.
    let err = press(
        &c,
        "BEGIN; CALL sync_press_button('buttons', 'go', NULL); COMMIT",
    )
    .await
    .expect_err("in a transaction block");
    assert_eq!(err.as_db_error().unwrap().code().code(), "2D000", "{err:?}");
    let _ = c.simple_query("ROLLBACK").await;
}

#[tokio::test]
async fn press_button_without_a_worker_times_out_and_leaves_the_job_queued() {
    let p = project().await;
    let c = p.db.connect().await;
    let t0 = Instant::now();
    let err = press(
        &c,
        "CALL sync_press_button('buttons', 'go', NULL, interval '300 milliseconds')",
    )
    .await
    .expect_err("no worker");
    assert!(t0.elapsed() >= Duration::from_millis(300));
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "57014", "{db:?}");
    assert!(db.message().contains("is still pending after"), "{db:?}");
    assert!(
        db.hint()
            .unwrap_or_default()
            .contains("sync_worker running"),
        "{db:?}"
    );
    let pending: i64 = p
        .scalar("SELECT count(*) FROM sync.job WHERE trigger_name = 'go' AND state = 'pending'")
        .await;
    assert_eq!(pending, 1);
}

#[tokio::test]
async fn a_developer_may_press_a_user_may_not() {
    let p = project().await;
    p.worker().await;
    p.sql(
        "DO $$ BEGIN CREATE ROLE button_dev LOGIN IN ROLE sync_developer; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         DO $$ BEGIN CREATE ROLE button_reader LOGIN IN ROLE sync_user; EXCEPTION WHEN duplicate_object THEN NULL; END $$;",
    )
    .await;
    let dev = p.db.connect_as("button_dev").await;
    let result = press(&dev, "CALL sync_press_button('buttons', 'go', NULL)")
        .await
        .expect("a developer presses");
    assert!(
        result.unwrap().contains("button_dev"),
        "the job records the caller"
    );
    let reader = p.db.connect_as("button_reader").await;
    let err = press(&reader, "CALL sync_press_button('buttons', 'go', NULL)")
        .await
        .expect_err("sync_user may not press");
    assert_eq!(err.as_db_error().unwrap().code().code(), "42501");
}

#[tokio::test]
async fn the_admin_api_presses_a_button() {
    let p = project().await;
    let w = p.worker().await;
    let base = w.admin_url().await;
    let http = reqwest::Client::new();
    let post = |body: Value| {
        let http = http.clone();
        let url = format!("{base}/button/press");
        async move {
            let r = http.post(url).json(&body).send().await.expect("POST");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = post(json!({"project": "buttons", "button": "go"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["pressed"], "go");
    let (status, body) = post(json!({"project": "buttons", "button": "boom"})).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("ValueError: no partner to push"),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("Traceback"),
        "{body}"
    );
    let (status, body) = post(json!({"project": "buttons", "button": "nope"})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post(json!({"project": "buttons"})).await;
    assert_eq!(status, 400, "{body}");
}

/// A trivial button answers in under 20 ms (p50). Measures latency: run alone on a quiet
/// machine (scripts/test.sh runs the ignored tests after the rest).
#[tokio::test]
#[ignore]
async fn a_trivial_button_answers_within_20_ms() {
    let p = project().await;
    p.worker().await;
    let c = p.db.connect().await;
    press(&c, "CALL sync_press_button('buttons', 'go', NULL)")
        .await
        .unwrap();
    let mut took = Vec::new();
    for _ in 0..50 {
        let t0 = Instant::now();
        press(&c, "CALL sync_press_button('buttons', 'go', NULL)")
            .await
            .unwrap();
        took.push(t0.elapsed());
    }
    took.sort();
    let p50 = took[took.len() / 2];
    println!(
        "sync_press_button: p50 {p50:?}, max {:?}",
        took.last().unwrap()
    );
    assert!(p50 < Duration::from_millis(20), "p50 {p50:?}");
}
