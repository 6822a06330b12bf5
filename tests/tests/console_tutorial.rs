// The README tutorial (docs/tutorial.md) done entirely in the console, in a real browser:
// project, task code, triggers, a failed job's traceback, its retry and its log.
use fantoccini::Locator;
use pg_sync_tests::browser::{self, click_and_wait, set_code, source, wait_text};
use pg_sync_tests::console::editing_console as console;
use pg_sync_tests::{exec, scalar, TestDb};
use std::time::Duration;

const TUTORIAL_CODE: &str = r#"
def handle_db(records):
    for ticket in records:
        log("%s: ticket %s is closed (%s)" % (params.GREETING, ticket.id, ticket.title))
    return {"closed": records.ids}

def handle_button():
    row = db.query_one("SELECT count(*) AS n FROM ticket WHERE state = 'open'")
    log("%s: %d open tickets" % (params.GREETING, row.n))
    return row.n
"#;

#[tokio::test]
async fn the_tutorial_done_in_the_console() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    // What the console cannot do (tables and roles are the application's): step 1's SQL.
    exec(
        &c,
        "CREATE TABLE ticket (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                              title text NOT NULL, state text NOT NULL DEFAULT 'open');
         GRANT SELECT ON ticket TO ced_tutorial_runner;
         -- A db trigger's filter runs as the table's writers: defining one takes TRIGGER.
         GRANT TRIGGER ON ticket TO ced_admin;",
    )
    .await;
    let (_worker, base) = console(&db).await;
    let b = browser::open().await;
    browser::sign_in(&b, &base, "ced_admin", "").await;
    browser::wait_at(&b, "/console/").await;

    // 1. The project, its run_as role and the param.
    b.goto(&format!("{base}/console/projects")).await.unwrap();
    browser::fill(&b, "#name", "tutorial").await;
    browser::click(&b, "#active").await;
    browser::click(&b, "#new-project button[type=submit]").await;
    let at = browser::wait_path(&b, "/console/projects/").await;
    let project = at
        .trim_start_matches("/console/projects/")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    browser::fill(&b, "#run_as", "ced_tutorial_runner").await;
    click_and_wait(
        &b,
        "#save-project",
        &format!("/console/projects/{project}?done=saved"),
    )
    .await;
    browser::fill(&b, "#new-param-key", "GREETING").await;
    browser::fill(&b, "#new-param-value", "Hello").await;
    click_and_wait(
        &b,
        "#add-param",
        &format!("/console/projects/{project}?done=saved"),
    )
    .await;

    // 2. The task.
    browser::click(&b, "#new-task").await;
    browser::wait_path(&b, &format!("/console/projects/{project}/tasks/new")).await;
    browser::fill(&b, "#name", "tickets").await;
    set_code(&b, "code", TUTORIAL_CODE).await;
    browser::click(&b, "#save").await;
    browser::wait_done(&b, &format!("/console/projects/{project}/tasks/")).await;
    browser::screenshot(&b, "console-task-editor").await;

    // 3. The triggers: first a filter PostgreSQL rejects, shown at its field.
    let triggers = format!("/console/projects/{project}/triggers");
    b.goto(&format!("{base}{triggers}/db/new")).await.unwrap();
    browser::fill(&b, "#name", "TICKET_CLOSED").await;
    browser::fill(&b, "#table_name", "ticket").await;
    browser::fill(&b, "#event", "update").await;
    browser::fill(&b, "#watched_columns", "state").await;
    browser::fill(&b, "#apply_on", "NEW.stat = 'closed'").await;
    browser::click(&b, "#save").await;
    let err = wait_text(&b, ".field-error[data-field=apply_on]", |_| true).await;
    assert!(err.contains("stat"), "{err}");
    browser::screenshot(&b, "console-db-trigger-filter-error").await;
    browser::fill(&b, "#apply_on", "NEW.state = 'closed'").await;
    browser::click(&b, "#save").await;
    browser::wait_done(&b, &format!("{triggers}/db/")).await;
    b.goto(&format!("{base}{triggers}/button/new"))
        .await
        .unwrap();
    browser::fill(&b, "#name", "COUNT_OPEN").await;
    browser::click(&b, "#save").await;
    browser::wait_done(&b, &format!("{triggers}/button/")).await;

    // 4. Make it work: the application closes tickets; the button is pressed here.
    exec(
        &c,
        "INSERT INTO ticket (title) VALUES ('Printer on fire'), ('Coffee machine empty'), ('Wi-Fi down');
         UPDATE ticket SET state = 'closed' WHERE id IN (1, 3);",
    )
    .await;
    browser::click(&b, "#press").await;
    browser::wait_path(&b, &format!("{triggers}/button/")).await;
    wait_text(&b, "#outcome", |t| t.contains("done")).await;
    assert_eq!(browser::text(&b, "#result").await.trim(), "1");
    browser::screenshot(&b, "console-button-pressed").await;

    // 5. The db trigger's job, from its page.
    b.goto(&format!("{base}{triggers}")).await.unwrap();
    browser::click(&b, "#triggers-db a").await;
    browser::wait_path(&b, &format!("{triggers}/db/")).await;
    let jobs = browser::text(&b, "#recent-jobs tbody").await;
    assert!(jobs.contains("done"), "{jobs}");

    // 6. When it fails: rename the param in the console, close the last ticket, and the
    // job's traceback names the line.
    b.goto(&format!("{base}/console/projects/{project}"))
        .await
        .unwrap();
    browser::fill(
        &b,
        "#params tr[data-key=GREETING] input[name=key]",
        "GREETINGS",
    )
    .await;
    click_and_wait(
        &b,
        "#params tr[data-key=GREETING] button[value=save]",
        &format!("/console/projects/{project}?done=saved"),
    )
    .await;
    exec(&c, "UPDATE ticket SET state = 'closed' WHERE id = 2").await;
    let job: i64 = {
        let mut id = 0;
        for _ in 0..100 {
            id = scalar(&c, "SELECT coalesce(max(id), 0) FROM sync.job WHERE trigger_name = 'TICKET_CLOSED' AND attempts > 0 AND error IS NOT NULL").await;
            if id > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        id
    };
    assert!(job > 0, "the failing job ran");
    let dbt: i64 = scalar(&c, "SELECT id FROM sync.db_trigger").await;
    b.goto(&format!("{base}{triggers}/db/{dbt}?job={job}"))
        .await
        .unwrap();
    let tb = browser::text(&b, "#traceback").await;
    assert!(
        tb.contains("line 4, in handle_db") && tb.contains("GREETING"),
        "{tb}"
    );

    // Beyond the tutorial: a cron trigger's Run now shows its job's outcome at once, and a
    // webhook's page its URL (once base_url is known) with a write-only signing secret.
    b.goto(&format!("{base}/console/projects/{project}/tasks/new"))
        .await
        .unwrap();
    browser::fill(&b, "#name", "ticker").await;
    set_code(&b, "code", "def handle_cron():\n    return 'tick'\n\ndef handle_webhook(httprequest):\n    return {}\n").await;
    browser::click(&b, "#save").await;
    browser::wait_done(&b, &format!("/console/projects/{project}/tasks/")).await;
    b.goto(&format!("{base}{triggers}/cron/new")).await.unwrap();
    browser::fill(&b, "#name", "HOURLY").await;
    browser::click(&b, "#task_id option:nth-child(1)").await;
    browser::fill(&b, "#interval", "1 hour").await;
    browser::click(&b, "#save").await;
    browser::wait_done(&b, &format!("{triggers}/cron/")).await;
    browser::click(&b, "#run-now").await;
    wait_text(&b, "#outcome", |t| t.contains("done")).await;
    assert_eq!(browser::text(&b, "#result").await.trim(), "\"tick\"");
    exec(
        &c,
        "INSERT INTO sync.setting VALUES ('base_url', 'https://sync.example.com')",
    )
    .await;
    b.goto(&format!("{base}{triggers}/webhook/new"))
        .await
        .unwrap();
    browser::fill(&b, "#name", "HOOK").await;
    browser::click(&b, "#task_id option:nth-child(1)").await;
    browser::click(&b, "#save").await;
    browser::wait_done(&b, &format!("{triggers}/webhook/")).await;
    let url: String = b
        .find(Locator::Css("#webhook-url"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(
        url.starts_with("https://sync.example.com/sync/webhook/"),
        "{url}"
    );
    browser::fill(&b, "#signing-secret", "hook-secret-77").await;
    browser::click(&b, "button[value=set]").await;
    wait_text(&b, ".secret-set", |_| true).await;
    assert!(!source(&b).await.contains("hook-secret-77"));

    // Fix the param in the console, retry the job from its page (the Jobs page) and read
    // its log there.
    b.goto(&format!("{base}/console/projects/{project}"))
        .await
        .unwrap();
    browser::fill(
        &b,
        "#params tr[data-key=GREETINGS] input[name=key]",
        "GREETING",
    )
    .await;
    click_and_wait(
        &b,
        "#params tr[data-key=GREETINGS] button[value=save]",
        &format!("/console/projects/{project}?done=saved"),
    )
    .await;
    b.goto(&format!("{base}/console/jobs/{job}")).await.unwrap();
    browser::click(&b, "#retry").await;
    let start = std::time::Instant::now();
    loop {
        b.goto(&format!("{base}/console/jobs/{job}")).await.unwrap();
        let state = wait_text(&b, "#job-state", |_| true).await;
        if state.contains("done") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the retried job is {state}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = browser::text(&b, "#job-log").await;
    assert!(
        log.contains("Hello: ticket 2 is closed (Coffee machine empty)"),
        "{log}"
    );
    browser::screenshot(&b, "console-tutorial-retried-job").await;
    b.close().await.unwrap();
}
