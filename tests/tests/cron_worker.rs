// Cron schedules run by a real worker: a Europe/Berlin schedule across both 2026 DST
// changes, and the missed-runs setting (once, skip, each with a cap).
use pg_sync_tests::clock::{set_clock_to, utc_text, utc_texts};
use pg_sync_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

const CODE: &str = "def handle_cron():\n    return 'tick'\n";

async fn cron_jobs(c: &Client, trigger: &str) -> Vec<String> {
    utc_texts(
        c,
        &format!(
            "SELECT coalesce(args ->> 'scheduled_at', '-') FROM sync.job
             WHERE trigger_kind = 'cron' AND trigger_name = '{trigger}' ORDER BY id"
        ),
    )
    .await
}

async fn wait_jobs(c: &Client, what: &str, expected: i64) {
    wait_for(what, Duration::from_secs(20), || async {
        scalar::<i64>(
            c,
            "SELECT count(*) FROM sync.job WHERE trigger_kind = 'cron' AND state = 'done'",
        )
        .await
            == expected
    })
    .await;
    // The worker schedules every second: give it chances to enqueue more.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let all: i64 = scalar(c, "SELECT count(*) FROM sync.job").await;
    assert_eq!(all, expected, "{what}: jobs enqueued");
}

#[tokio::test]
async fn a_worker_runs_a_berlin_schedule_across_both_2026_changes() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (_, t) = create_task(&c, "crons", "main", CODE).await;
    set_clock_to(&c, "2026-03-28 12:00+01").await;
    exec(
        &c,
        &format!(
            "INSERT INTO sync.cron_trigger (task_id, name, schedule, timezone, next_run_at)
             VALUES ({t}, 'nightly', '30 2 * * *', 'Europe/Berlin', sync.clock())"
        ),
    )
    .await;
    let next_run = "SELECT next_run_at::text FROM sync.cron_trigger";
    assert_eq!(utc_text(&c, next_run).await, "2026-03-29 01:00:00+00");
    let _w = WorkerProcess::start(&db.url, &["--executors", "1", "--poll-interval", "100ms"]);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(scalar::<i64>(&c, "SELECT count(*) FROM sync.job").await, 0);
    // 03:00 CEST, the first minute after the gap.
    set_clock_to(&c, "2026-03-29 03:00:01+02").await;
    wait_jobs(&c, "the run after the spring gap", 1).await;
    assert_eq!(utc_text(&c, next_run).await, "2026-03-30 00:30:00+00");
    set_clock_to(&c, "2026-03-30 02:30:01+02").await;
    wait_jobs(&c, "02:30 CEST", 2).await;
    // Autumn: many days missed are one run (once, the default); the first 02:30 runs
    // and the repeated one does not.
    set_clock_to(&c, "2026-10-25 02:30:01+02").await;
    wait_jobs(&c, "the first 02:30 of 25 October", 3).await;
    assert_eq!(utc_text(&c, next_run).await, "2026-10-26 01:30:00+00");
    set_clock_to(&c, "2026-10-25 02:30:01+01").await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(scalar::<i64>(&c, "SELECT count(*) FROM sync.job").await, 3);
    let result: Value = scalar(&c, "SELECT result FROM sync.job ORDER BY id DESC LIMIT 1").await;
    assert_eq!(result, json!("tick"));
}

#[tokio::test]
async fn missed_runs_follow_the_cron_missed_runs_setting() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (_, t) = create_task(&c, "crons", "main", CODE).await;
    // The worker's sessions are not in UTC; scheduled_at is written in UTC all the same.
    exec(
        &c,
        &format!(
            "ALTER DATABASE \"{}\" SET TimeZone = 'Europe/Berlin'",
            db.name
        ),
    )
    .await;
    set_clock_to(&c, "2026-06-01 00:00:00+00").await;
    // Hourly, by schedule and by interval, from 00:00 (due now: nothing missed yet).
    exec(
        &c,
        &format!(
            "INSERT INTO sync.cron_trigger (task_id, name, schedule, next_run_at, calls_left)
             VALUES ({t}, 'by_schedule', '0 * * * *', '2026-06-01 00:00+00', -1);
             INSERT INTO sync.cron_trigger (task_id, name, \"interval\", next_run_at, calls_left)
             VALUES ({t}, 'by_interval', '1 hour', '2026-06-01 00:00+00', 8);
             INSERT INTO sync.setting VALUES ('cron_missed_runs', 'each'), ('cron_missed_runs_cap', '3');"
        ),
    )
    .await;
    // each: 00:00 to 04:00 came due while no worker ran; the latest 3 run.
    set_clock_to(&c, "2026-06-01 04:00:10+00").await;
    let _w = WorkerProcess::start(&db.url, &["--executors", "1", "--poll-interval", "100ms"]);
    wait_jobs(&c, "each, capped at 3", 6).await;
    let each = [
        "2026-06-01T02:00:00+00:00",
        "2026-06-01T03:00:00+00:00",
        "2026-06-01T04:00:00+00:00",
    ];
    assert_eq!(cron_jobs(&c, "by_schedule").await, each);
    assert_eq!(cron_jobs(&c, "by_interval").await, each);
    let left: i32 = scalar(
        &c,
        "SELECT calls_left FROM sync.cron_trigger WHERE name = 'by_interval'",
    )
    .await;
    assert_eq!(left, 5);

    // skip: of 05:00 to 08:00 only 08:00, due 30 seconds ago (within the minute), runs...
    exec(
        &c,
        "BEGIN; UPDATE sync.setting SET value = 'skip' WHERE key = 'cron_missed_runs';",
    )
    .await;
    set_clock_to(&c, "2026-06-01 08:00:30+00").await;
    exec(&c, "COMMIT").await;
    wait_jobs(&c, "skip, the run due now", 8).await;
    assert_eq!(
        cron_jobs(&c, "by_schedule").await[3..],
        ["2026-06-01T08:00:00+00:00"]
    );
    assert_eq!(
        cron_jobs(&c, "by_interval").await[3..],
        ["2026-06-01T08:00:00+00:00"]
    );
    // ...and 09:00 to 11:00, the latest 30 minutes late, run not at all.
    set_clock_to(&c, "2026-06-01 11:30:00+00").await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(scalar::<i64>(&c, "SELECT count(*) FROM sync.job").await, 8);
    let next: Vec<String> = utc_texts(
        &c,
        "SELECT next_run_at::text FROM sync.cron_trigger ORDER BY name",
    )
    .await;
    assert_eq!(next, ["2026-06-01 12:00:00+00", "2026-06-01 12:00:00+00"]);

    // once (the default): 12:00 to 14:00 are one job each, without scheduled_at.
    exec(
        &c,
        "BEGIN; DELETE FROM sync.setting WHERE key = 'cron_missed_runs';",
    )
    .await;
    set_clock_to(&c, "2026-06-01 14:00:10+00").await;
    exec(&c, "COMMIT").await;
    wait_jobs(&c, "once", 10).await;
    assert_eq!(cron_jobs(&c, "by_schedule").await[4..], ["-"]);
    assert_eq!(cron_jobs(&c, "by_interval").await[4..], ["-"]);
    let left: i32 = scalar(
        &c,
        "SELECT calls_left FROM sync.cron_trigger WHERE name = 'by_interval'",
    )
    .await;
    assert_eq!(left, 3);
}
