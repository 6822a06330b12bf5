// The console's trigger forms over plain HTTP: a cron trigger on a schedule in a time
// zone (and a schedule PostgreSQL refuses, shown at its field), and a broken db trigger
// shown as broken, with the reason.
use pg_sync_tests::console::{roles, ConsoleHttp};
use pg_sync_tests::{create_task, exec, scalar, TestDb, WorkerProcess};

async fn setup() -> (TestDb, WorkerProcess, ConsoleHttp, i64, i64) {
    let db = TestDb::new().await;
    roles(&db).await;
    let c = db.connect().await;
    let (project, task) = create_task(&c, "trig", "t", "def handle_cron():\n    return 1\n").await;
    let worker = WorkerProcess::start(&db.url, &["--webhook-listen", "off"]);
    let mut con = ConsoleHttp::new(&worker.admin_url().await);
    assert_eq!(con.sign_in("con_dev", "").await.status, 303);
    (db, worker, con, project, task)
}

#[tokio::test]
async fn a_cron_trigger_on_a_schedule_in_a_time_zone() {
    let (db, _worker, mut con, project, task) = setup().await;
    let c = db.connect().await;
    let csrf = con.csrf().await;
    let task = task.to_string();
    let form = |schedule: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("name", "WEEKDAYS".to_string()),
            ("task_id", task.clone()),
            ("interval", String::new()),
            ("schedule", schedule.to_string()),
            ("timezone", "Europe/Berlin".to_string()),
            ("calls_left", "-1".to_string()),
            ("active", "on".to_string()),
        ]
    };
    let new = format!("/console/projects/{project}/triggers/cron/new");
    // A schedule that never parses: PostgreSQL's 22023, at the schedule field.
    let bad = form("61 * * * *");
    let bad: Vec<(&str, &str)> = bad.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = con.post(&new, &bad).await;
    // The form again, with the error (not the redirect of a saved trigger).
    assert_eq!(refused.status, 200, "{}", refused.body);
    assert!(
        refused.body.contains("data-field=\"schedule\""),
        "not at the field: {}",
        refused.body
    );
    assert!(refused.body.contains("22023"), "{}", refused.body);
    let none: i64 = scalar(&c, "SELECT count(*) FROM sync.cron_trigger").await;
    assert_eq!(none, 0);

    let good = form("0 9 * * 1-5");
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let saved = con.post(&new, &good).await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let (schedule, zone, local): (String, String, String) = {
        let r = c
            .query_one(
                "SELECT schedule, timezone,
                        to_char(next_run_at AT TIME ZONE 'Europe/Berlin', 'HH24:MI ID')
                 FROM sync.cron_trigger WHERE name = 'WEEKDAYS'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(
        (schedule.as_str(), zone.as_str()),
        ("0 9 * * 1-5", "Europe/Berlin")
    );
    // The next run is at 09:00 Berlin time on a weekday.
    assert!(local.starts_with("09:00 "), "{local}");
    let day: i32 = local[6..].parse().unwrap();
    assert!((1..=5).contains(&day), "{local}");
    let list = con
        .get(&format!("/console/projects/{project}/triggers"))
        .await;
    assert!(
        list.body.contains("0 9 * * 1-5 (Europe/Berlin)"),
        "{}",
        list.body
    );
}

#[tokio::test]
async fn a_broken_db_trigger_says_so_and_why() {
    let (db, _worker, mut con, project, task) = setup().await;
    let c = db.connect().await;
    exec(
        &c,
        &format!(
            "CREATE TABLE invoice (id bigserial PRIMARY KEY, paid boolean);
             INSERT INTO sync.db_trigger (project_id, task_id, name, table_name, event)
             VALUES ({project}, {task}, 'PAID', 'invoice', 'update');
             ALTER TABLE invoice RENAME TO invoice_old;
             DROP TABLE invoice_old;"
        ),
    )
    .await;
    let why: Option<String> = scalar(
        &c,
        "SELECT broken_reason FROM sync.db_trigger WHERE name = 'PAID'",
    )
    .await;
    let why = why.expect("dropping the table breaks the trigger");
    let list = con
        .get(&format!("/console/projects/{project}/triggers"))
        .await;
    assert_eq!(list.status, 200);
    let escaped = why
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    assert!(
        list.body.contains(&format!("Broken: {escaped}")),
        "no reason ({why}) in: {}",
        list.body
    );
}
