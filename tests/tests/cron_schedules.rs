// Cron triggers on a cron expression in an IANA time zone, in SQL: run times across
// both 2026 DST changes in Europe/Berlin, refused expressions and zones, next_run_at,
// export/import. With a worker: cron_worker.rs.
use pg_sync_tests::clock::{set_clock_to, utc_text, utc_texts};
use pg_sync_tests::*;
use serde_json::{json, Value};

const CODE: &str = "def handle_cron():\n    return 'tick'\n";

#[tokio::test]
async fn next_runs_are_dst_correct_across_both_2026_changes_in_berlin() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let next = |schedule: &'static str, after: &'static str| {
        format!("SELECT sync.cron_next('{schedule}', 'Europe/Berlin', '{after}')::text")
    };
    // Daily at 02:30 local. 29 March: 02:00 jumps to 03:00, so 02:30 does not exist and
    // the run is at the first minute after the gap; the day after is 02:30 again.
    for (after, expected) in [
        ("2026-03-28 03:00+01", "2026-03-29 01:00:00+00"), // 03:00 CEST
        ("2026-03-29 01:00+00", "2026-03-30 00:30:00+00"), // 02:30 CEST
        ("2026-03-27 12:00+01", "2026-03-28 01:30:00+00"), // 02:30 CET
        // 25 October: 03:00 goes back to 02:00, so 02:30 happens twice; it runs once,
        // at the first (CEST), and next at 02:30 CET the day after.
        ("2026-10-24 12:00+02", "2026-10-25 00:30:00+00"),
        ("2026-10-25 00:30+00", "2026-10-26 01:30:00+00"),
        ("2026-10-25 01:00+00", "2026-10-26 01:30:00+00"),
    ] {
        assert_eq!(
            utc_text(&c, &next("30 2 * * *", after)).await,
            expected,
            "after {after}"
        );
    }
    // Hourly: the missing hour has no run in spring, the repeated hour two in autumn.
    let hours = |from: &str, upto: &str| {
        format!(
            "SELECT unnest(sync.cron_runs_between('0 * * * *', 'Europe/Berlin', '{from}', '{upto}', 100))::text"
        )
    };
    assert_eq!(
        utc_texts(&c, &hours("2026-03-29 00:00+01", "2026-03-29 04:00+02")).await,
        [
            "2026-03-28 23:00:00+00",
            "2026-03-29 00:00:00+00",
            "2026-03-29 01:00:00+00",
            "2026-03-29 02:00:00+00"
        ]
    );
    assert_eq!(
        utc_texts(&c, &hours("2026-10-25 01:00+02", "2026-10-25 04:00+01")).await,
        [
            "2026-10-24 23:00:00+00",
            "2026-10-25 00:00:00+00", // 02:00 CEST
            "2026-10-25 01:00:00+00", // 02:00 CET
            "2026-10-25 02:00:00+00",
            "2026-10-25 03:00:00+00"
        ]
    );
    // The latest `max` runs only, oldest first.
    assert_eq!(
        utc_texts(
            &c,
            "SELECT unnest(sync.cron_runs_between('0 * * * *', 'UTC', '2026-01-01 00:00+00', '2026-01-01 05:30+00', 2))::text"
        )
        .await,
        ["2026-01-01 04:00:00+00", "2026-01-01 05:00:00+00"]
    );
    // Anyone may call it, so a huge max is bounded (10000, the largest cap) and a long
    // walk stays cancellable.
    let n: i32 = scalar(
        &c,
        "SELECT cardinality(sync.cron_runs_between('* * * * * *', 'UTC', '2000-01-01', '2026-01-01', 2000000000))",
    )
    .await;
    assert_eq!(n, 10_000);
    // Six fields: seconds first.
    assert_eq!(
        utc_text(
            &c,
            "SELECT sync.cron_next('*/20 * * * * *', 'UTC', '2026-01-01 00:00:00.5+00')::text"
        )
        .await,
        "2026-01-01 00:00:20+00"
    );
    assert_eq!(
        utc_text(&c, &next("15 0 2 * * *", "2026-07-01 12:00+02")).await,
        "2026-07-02 00:00:15+00"
    );
    // croner's aliases.
    assert_eq!(
        utc_text(
            &c,
            "SELECT sync.cron_next('@daily', 'Europe/Berlin', '2026-07-01 12:00+02')::text"
        )
        .await,
        "2026-07-01 22:00:00+00"
    );
    // Strictly after: a run at `after` itself is not next.
    assert_eq!(
        utc_text(
            &c,
            "SELECT sync.cron_next('0 * * * *', 'UTC', '2026-01-01 05:00+00')::text"
        )
        .await,
        "2026-01-01 06:00:00+00"
    );
}

#[tokio::test]
async fn bad_expressions_and_zones_are_refused_with_22023() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (_, t) = create_task(&c, "crons", "main", CODE).await;
    let insert = |schedule: &str, zone: &str| {
        format!(
            "INSERT INTO sync.cron_trigger (task_id, name, schedule, timezone) VALUES ({t}, 'nightly', '{schedule}', '{zone}')"
        )
    };
    for (schedule, zone, expected) in [
        (
            "61 * * * *",
            "UTC",
            "cron trigger \"nightly\": schedule \"61 * * * *\" is not a cron expression: ",
        ),
        (
            "0 2 * * *",
            "Mars/Olympus",
            "cron trigger \"nightly\": timezone \"Mars/Olympus\" is not an IANA time zone name",
        ),
        (
            "0 2 * * * * 2030",
            "UTC",
            "cron trigger \"nightly\": schedule \"0 2 * * * * 2030\" is not a cron expression: it has 7 fields, not 5 or 6",
        ),
        (
            "0 0 30 2 *",
            "UTC",
            "cron trigger \"nightly\": schedule \"0 0 30 2 *\" matches no date",
        ),
        (
            "every day",
            "UTC",
            "cron trigger \"nightly\": schedule \"every day\" is not a cron expression",
        ),
    ] {
        let msg = expect_error(&c, &insert(schedule, zone), "22023").await;
        assert!(msg.starts_with(expected), "{msg}");
    }
    // The hint shows an example.
    let err = c
        .batch_execute(&insert("61 * * * *", "UTC"))
        .await
        .unwrap_err();
    let hint = err.as_db_error().and_then(|d| d.hint()).unwrap_or_default();
    assert!(hint.contains("'0 2 * * *'"), "{hint}");
    // Called directly too.
    let msg = expect_error(&c, "SELECT sync.cron_next('* * *', 'UTC', now())", "22023").await;
    assert!(msg.contains("it has 3 fields"), "{msg}");
    // Exactly one of interval and schedule.
    expect_error(
        &c,
        &format!("INSERT INTO sync.cron_trigger (task_id, name) VALUES ({t}, 'neither')"),
        "23514",
    )
    .await;
    expect_error(
        &c,
        &format!(
            "INSERT INTO sync.cron_trigger (task_id, name, \"interval\", schedule) VALUES ({t}, 'both', '1 hour', '0 * * * *')"
        ),
        "23514",
    )
    .await;
    // An update is checked like an insert.
    exec(&c, &insert("0 2 * * *", "Europe/Berlin")).await;
    expect_error(
        &c,
        "UPDATE sync.cron_trigger SET timezone = 'Europe/Berlinn'",
        "22023",
    )
    .await;
    // The missed-runs settings.
    for (key, value) in [
        ("cron_missed_runs", "sometimes"),
        ("cron_missed_runs_cap", "0"),
        ("cron_missed_runs_cap", "lots"),
        ("cron_missed_runs_cap", "100000"),
    ] {
        let msg = expect_error(
            &c,
            &format!("INSERT INTO sync.setting VALUES ('{key}', '{value}')"),
            "22023",
        )
        .await;
        assert!(
            msg.starts_with(&format!("setting {key}: \"{value}\"")),
            "{msg}"
        );
    }
    exec(
        &c,
        "INSERT INTO sync.setting VALUES ('cron_missed_runs', 'each'), ('cron_missed_runs_cap', '24')",
    )
    .await;
    let row = c
        .query_one("SELECT * FROM sync.cron_missed_runs()", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i32>(1)),
        ("each".into(), 24)
    );
}

#[tokio::test]
async fn next_run_at_starts_on_the_schedule() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (_, t) = create_task(&c, "crons", "main", CODE).await;
    set_clock_to(&c, "2026-06-01 10:20+00").await;
    // Written: moved to the first run at or after the value (default now()).
    exec(
        &c,
        &format!(
            "INSERT INTO sync.cron_trigger (task_id, name, schedule, timezone, next_run_at)
             VALUES ({t}, 'quarter', '*/15 * * * *', 'UTC', '2026-06-01 10:20+00'),
                    ({t}, 'exact', '*/15 * * * *', 'UTC', '2026-06-01 10:30+00'),
                    ({t}, 'berlin', '0 2 * * *', 'Europe/Berlin', '2026-06-01 10:20+00');
             INSERT INTO sync.cron_trigger (task_id, name, schedule) VALUES ({t}, 'fresh', '0 0 1 1 *')"
        ),
    )
    .await;
    assert_eq!(
        utc_texts(
            &c,
            "SELECT next_run_at::text FROM sync.cron_trigger WHERE name <> 'fresh' ORDER BY id"
        )
        .await,
        [
            "2026-06-01 10:30:00+00",
            "2026-06-01 10:30:00+00",
            "2026-06-02 00:00:00+00"
        ]
    );
    let fresh: bool = scalar(
        &c,
        "SELECT next_run_at > now() AND extract(doy FROM next_run_at AT TIME ZONE 'UTC') = 1 FROM sync.cron_trigger WHERE name = 'fresh'",
    )
    .await;
    assert!(fresh);
    // A new schedule or zone starts over from the clock; a next_run_at written later is
    // taken as it is (to run the trigger now, say).
    exec(
        &c,
        "UPDATE sync.cron_trigger SET schedule = '0 * * * *' WHERE name = 'quarter';
         UPDATE sync.cron_trigger SET timezone = 'America/New_York' WHERE name = 'berlin';
         UPDATE sync.cron_trigger SET next_run_at = '2026-06-01 11:31+00' WHERE name = 'exact';",
    )
    .await;
    assert_eq!(
        utc_texts(
            &c,
            "SELECT next_run_at::text FROM sync.cron_trigger WHERE name <> 'fresh' ORDER BY id"
        )
        .await,
        [
            "2026-06-01 11:00:00+00",
            "2026-06-01 11:31:00+00",
            "2026-06-02 06:00:00+00"
        ]
    );
    // An interval trigger may become a schedule trigger and back.
    exec(
        &c,
        "UPDATE sync.cron_trigger SET schedule = NULL, \"interval\" = '1 hour' WHERE name = 'quarter';
         UPDATE sync.cron_trigger SET schedule = '0 12 * * *', \"interval\" = NULL WHERE name = 'quarter';",
    )
    .await;
    assert_eq!(
        utc_text(
            &c,
            "SELECT next_run_at::text FROM sync.cron_trigger WHERE name = 'quarter'"
        )
        .await,
        "2026-06-01 12:00:00+00"
    );
}

#[tokio::test]
async fn schedules_round_trip_through_export_and_import() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (_, t) = create_task(&c, "crons", "main", CODE).await;
    exec(
        &c,
        &format!(
            "INSERT INTO sync.cron_trigger (task_id, name, schedule, timezone, next_run_at, calls_left)
             VALUES ({t}, 'nightly', '0 2 * * *', 'Europe/Berlin', '2030-01-01 00:00+00', 4);
             INSERT INTO sync.cron_trigger (task_id, name, \"interval\", next_run_at)
             VALUES ({t}, 'often', '5 minutes', '2030-01-01 00:00+00');"
        ),
    )
    .await;
    let before: Value = scalar(&c, "SELECT sync_export_project('crons')").await;
    assert_eq!(
        before["cron_triggers"],
        json!([
            {"name": "nightly", "task": "main", "active": true, "interval": null,
             "schedule": "0 2 * * *", "timezone": "Europe/Berlin",
             "next_run_at": "2030-01-01T01:00:00+00:00", "calls_left": 4, "run_as": null},
            {"name": "often", "task": "main", "active": true, "interval": "00:05:00",
             "schedule": null, "timezone": "UTC",
             "next_run_at": "2030-01-01T00:00:00+00:00", "calls_left": -1, "run_as": null}
        ])
    );
    exec(&c, "DELETE FROM sync.project").await;
    c.query_one("SELECT sync_import_project($1)", &[&before])
        .await
        .unwrap();
    let after: Value = scalar(&c, "SELECT sync_export_project('crons')").await;
    assert_eq!(after, before);

    // Replace keeps next_run_at unless the schedule changes.
    let mut doc = before.clone();
    doc["cron_triggers"][0]["next_run_at"] = json!("2040-01-01T00:00:00+00:00");
    c.query_one("SELECT sync_import_project($1, true)", &[&doc])
        .await
        .unwrap();
    let kept: Value = scalar(&c, "SELECT sync_export_project('crons')").await;
    assert_eq!(kept, before);
    doc["cron_triggers"][0]["schedule"] = json!("0 3 * * *");
    c.query_one("SELECT sync_import_project($1, true)", &[&doc])
        .await
        .unwrap();
    let moved: bool = scalar(
        &c,
        "SELECT next_run_at > now() AND next_run_at < now() + interval '1 day 1 hour'
         AND to_char(next_run_at AT TIME ZONE 'Europe/Berlin', 'HH24:MI') = '03:00'
         FROM sync.cron_trigger WHERE name = 'nightly'",
    )
    .await;
    assert!(moved);

    // Documents are checked before anything changes.
    let mut both = before.clone();
    both["cron_triggers"][0]["interval"] = json!("1 hour");
    assert_eq!(
        refused(&c, both).await,
        (
            "22023".into(),
            "invalid project document: cron_triggers[0] must have either an interval or a schedule, not both or neither".into()
        )
    );
    let mut bad = before.clone();
    bad["cron_triggers"][0]["timezone"] = json!("Europe/Atlantis");
    assert_eq!(
        refused(&c, bad).await,
        (
            "22023".into(),
            "invalid project document: cron_triggers[0] timezone \"Europe/Atlantis\" is not an IANA time zone name".into()
        )
    );
}

/// SQLSTATE and message of an import that must fail.
async fn refused(c: &Client, doc: Value) -> (String, String) {
    let e = c
        .query_one("SELECT sync_import_project($1, true)", &[&doc])
        .await
        .unwrap_err();
    sqlstate(&e)
}
