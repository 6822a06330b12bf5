// The console's editing pages in a real browser and over plain HTTP: what each role sees
// and may change (PostgreSQL refusing forged posts), write-only secrets, the task
// editor's check and size limit, and the README tutorial done in the console.
use fantoccini::{Client, Locator};
use pg_sync_tests::browser;
use pg_sync_tests::console::ConsoleHttp;
use pg_sync_tests::{exec, scalar, TestDb, WorkerProcess};
use serde_json::json;
use std::time::Duration;

const ROLES_SQL: &str = "DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ced_user') THEN
             CREATE ROLE ced_user LOGIN; END IF;
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ced_dev') THEN
             CREATE ROLE ced_dev LOGIN; END IF;
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ced_admin') THEN
             CREATE ROLE ced_admin LOGIN; END IF;
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tutorial_runner') THEN
             CREATE ROLE tutorial_runner NOLOGIN; END IF;
         END $$;
         GRANT sync_user TO ced_user;
         GRANT sync_developer TO ced_dev, tutorial_runner;
         GRANT sync_admin TO ced_admin;
         GRANT tutorial_runner TO ced_admin;";

/// Roles are cluster-wide: create them once, whichever test comes first (tests at once
/// race on the shared catalog: try again).
async fn roles(db: &TestDb) {
    let c = db.connect().await;
    for tries in 1.. {
        match c.batch_execute(ROLES_SQL).await {
            Ok(()) => break,
            Err(e) if tries < 10 => {
                eprintln!("creating the roles, try {tries}: {e}");
                tokio::time::sleep(Duration::from_millis(100 * tries)).await;
            }
            Err(e) => panic!("creating the roles: {e}"),
        }
    }
}

async fn console(db: &TestDb) -> (WorkerProcess, String) {
    roles(db).await;
    let worker = WorkerProcess::start(&db.url, &["--webhook-listen", "off"]);
    let base = worker.admin_url().await;
    (worker, base)
}

async fn source(b: &Client) -> String {
    b.source().await.expect("page source")
}

async fn exists(b: &Client, css: &str) -> bool {
    !b.find_all(Locator::Css(css))
        .await
        .expect("find")
        .is_empty()
}

/// Put `code` into the editor `#id` (CodeMirror when it runs, else the textarea).
async fn set_code(b: &Client, id: &str, code: &str) {
    b.execute(
        "const a = document.getElementById(arguments[0]);
         if (a.cm) { a.cm.setValue(arguments[1]); } else { a.value = arguments[1]; }",
        vec![json!(id), json!(code)],
    )
    .await
    .expect("set the editor's code");
}

/// Wait (up to 10 s) for an element `css` whose text satisfies `ok`; its text. On
/// timeout, the page's errors are in the panic message.
async fn wait_text(b: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let start = std::time::Instant::now();
    loop {
        if let Ok(el) = b.find(Locator::Css(css)).await {
            if let Ok(t) = el.text().await {
                if ok(&t) {
                    return t;
                }
            }
        }
        if start.elapsed() > Duration::from_secs(30) {
            let mut errors = vec![];
            for e in b
                .find_all(Locator::Css(".field-error, .error"))
                .await
                .unwrap_or_default()
            {
                errors.push(e.text().await.unwrap_or_default());
            }
            panic!(
                "no `{css}` as expected at {}; errors: {errors:?}",
                browser::path(b).await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn click_and_wait(b: &Client, css: &str, path: &str) {
    browser::click(b, css).await;
    browser::wait_path(b, path).await;
}

#[tokio::test]
async fn each_role_sees_and_changes_only_what_postgresql_allows() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    exec(
        &c,
        "INSERT INTO sync.project (name, core_code, common_code) VALUES ('crm', 'CORE_MARK = 1', 'VAT = 0.2');
         INSERT INTO sync.project_secret (project_id, key, value)
         SELECT id, 'API_KEY', 'TOPSECRET-123' FROM sync.project WHERE name = 'crm';",
    )
    .await;
    let id: i64 = scalar(&c, "SELECT id FROM sync.project WHERE name = 'crm'").await;
    let (_worker, base) = console(&db).await;
    let page = format!("/console/projects/{id}");
    let b = browser::open().await;

    // A developer: the secret's key, never its value; no core_code field at all.
    browser::sign_in(&b, &base, "ced_dev", "").await;
    browser::wait_at(&b, "/console/").await;
    b.goto(&format!("{base}{page}")).await.unwrap();
    let html = source(&b).await;
    assert!(!html.contains("TOPSECRET"), "a secret value on the page");
    assert!(
        !html.contains("CORE_MARK") && !exists(&b, "#core_code").await,
        "core_code shown"
    );
    assert!(exists(&b, "#secrets tr[data-key=API_KEY]").await);
    assert!(exists(&b, "#save-project").await && exists(&b, "#common_code").await);
    // A forged core_code from a developer: PostgreSQL refuses (column privilege).
    let mut http = ConsoleHttp::new(&base);
    assert_eq!(http.sign_in("ced_dev", "").await.status, 303);
    let csrf = http.csrf().await;
    let a = http
        .post(
            &page,
            &[("csrf", &csrf), ("core_code", "X = 1"), ("name", "crm")],
        )
        .await;
    assert!(a.body.contains("42501"), "{}", a.body);
    browser::screenshot(&b, "console-project-developer").await;
    browser::click(&b, "nav form button").await;
    browser::wait_path(&b, "/console/signin").await;

    // A sync_user: no edit buttons; a forged post with its own valid token is refused by
    // PostgreSQL, its error shown.
    browser::sign_in(&b, &base, "ced_user", "").await;
    browser::wait_at(&b, "/console/").await;
    b.goto(&format!("{base}{page}")).await.unwrap();
    for css in [
        "#save-project",
        "#new-task",
        "#add-param",
        "#add-secret",
        "button.switch",
    ] {
        assert!(!exists(&b, css).await, "a sync_user sees {css}");
    }
    b.goto(&format!("{base}/console/projects")).await.unwrap();
    assert!(!exists(&b, "#new-project").await && !exists(&b, "#import").await);
    browser::click(&b, "nav form button").await;
    browser::wait_path(&b, "/console/signin").await;
    let mut http = ConsoleHttp::new(&base);
    assert_eq!(http.sign_in("ced_user", "").await.status, 303);
    let csrf = http.csrf().await;
    for (path, form) in [
        (
            page.clone(),
            vec![
                ("csrf", csrf.as_str()),
                ("name", "hijacked"),
                ("active_shown", "1"),
                ("active", "on"),
            ],
        ),
        (
            format!("{page}/active"),
            vec![("csrf", csrf.as_str()), ("active", "on")],
        ),
        (
            format!("{page}/params"),
            vec![("csrf", csrf.as_str()), ("key", "X"), ("value", "1")],
        ),
    ] {
        let a = http.post(&path, &form).await;
        assert!(
            a.body.contains("42501") && a.body.contains("permission denied"),
            "{path}: {}",
            a.body
        );
    }
    assert_eq!(
        scalar::<String>(
            &c,
            &format!("SELECT name FROM sync.project WHERE id = {id}")
        )
        .await,
        "crm"
    );

    // An admin sets a secret: stored, and never shown (not even to them).
    browser::sign_in(&b, &base, "ced_admin", "").await;
    browser::wait_at(&b, "/console/").await;
    b.goto(&format!("{base}{page}")).await.unwrap();
    assert!(exists(&b, "#core_code").await, "an admin edits core_code");
    browser::fill(&b, "#new-secret-key", "WEBHOOK_TOKEN").await;
    browser::fill(&b, "#new-secret-value", "s3cr3t-value-42").await;
    click_and_wait(&b, "#add-secret", &format!("{page}?done=secret")).await;
    let html = source(&b).await;
    assert!(
        !html.contains("s3cr3t-value-42") && !html.contains("TOPSECRET"),
        "a secret value shown to an admin"
    );
    assert!(exists(&b, "#secrets tr[data-key=WEBHOOK_TOKEN] .secret-set").await);
    let stored: String = scalar(
        &c,
        "SELECT value FROM sync.project_secret WHERE key = 'WEBHOOK_TOKEN'",
    )
    .await;
    assert_eq!(stored, "s3cr3t-value-42");
    browser::screenshot(&b, "console-project-admin").await;
    // Export downloads the document (keys, no values).
    let a = http.get(&format!("{page}/export")).await;
    assert_eq!(a.status, 200);
    assert!(
        a.body.contains("\"WEBHOOK_TOKEN\"") && !a.body.contains("s3cr3t"),
        "{}",
        a.body
    );
    // Import: the document under a new name, then again (PostgreSQL refuses an existing
    // project without "replace", and the page says so above the form).
    let doc = a.body.replace("\"crm\"", "\"crm2\"");
    let file = std::env::temp_dir().join(format!("console-import-{}.json", std::process::id()));
    std::fs::write(&file, doc).unwrap();
    for second in [false, true] {
        b.goto(&format!("{base}/console/projects")).await.unwrap();
        let input = b.find(Locator::Css("#import-file")).await.unwrap();
        input.send_keys(&file.display().to_string()).await.unwrap();
        browser::click(&b, "#import button[type=submit]").await;
        if second {
            let err = wait_text(&b, "#import-error", |_| true).await;
            assert!(err.contains("crm2"), "{err}");
        } else {
            let at = browser::wait_path(&b, "/console/projects/").await;
            assert!(at.ends_with("?done=imported"), "{at}");
        }
    }
    let _ = std::fs::remove_file(&file);
    let keys: i64 = scalar(
        &c,
        "SELECT count(*) FROM sync.project_secret s JOIN sync.project p ON p.id = s.project_id
         WHERE p.name = 'crm2'",
    )
    .await;
    assert_eq!(keys, 2, "the imported secret keys");
    b.close().await.unwrap();
}

#[tokio::test]
async fn the_task_editor_checks_code_at_its_line_and_refuses_huge_pastes() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    exec(&c, "INSERT INTO sync.project (name) VALUES ('edit')").await;
    let id: i64 = scalar(&c, "SELECT id FROM sync.project WHERE name = 'edit'").await;
    let (_worker, base) = console(&db).await;
    let b = browser::open().await;
    browser::sign_in(&b, &base, "ced_dev", "").await;
    browser::wait_at(&b, "/console/").await;
    b.goto(&format!("{base}/console/projects/{id}/tasks/new"))
        .await
        .unwrap();
    assert!(
        exists(&b, ".CodeMirror-linenumber").await,
        "CodeMirror with line numbers"
    );
    browser::fill(&b, "#name", "sync_orders").await;
    let broken = "def handle_button():\n    x = 1\n    return (x\n\ndef other():\n    pass\n";
    set_code(&b, "code", broken).await;
    browser::click(&b, "#check").await;
    let problem = wait_text(&b, "#problems li", |_| true).await;
    assert!(problem.starts_with("<task sync_orders>, line"), "{problem}");
    assert!(
        exists(&b, ".cm-error-line").await,
        "the line is marked in the editor"
    );
    browser::screenshot(&b, "console-task-check").await;
    // Save refuses it: nothing saved.
    browser::click(&b, "#save").await;
    wait_text(&b, "#problems", |t| t.contains("nothing was saved")).await;
    assert_eq!(scalar::<i64>(&c, "SELECT count(*) FROM sync.task").await, 0);
    // Fixed, it checks clean and saves.
    set_code(&b, "code", "def handle_button():\n    return 42\n").await;
    browser::click(&b, "#check").await;
    wait_text(&b, "#check-ok", |_| true).await;
    browser::click(&b, "#save").await;
    let at = browser::wait_done(&b, &format!("/console/projects/{id}/tasks/")).await;
    assert!(at.ends_with("?done=created"), "{at}");
    assert_eq!(
        scalar::<String>(&c, "SELECT code FROM sync.task").await,
        "def handle_button():\n    return 42\n"
    );

    // A 10 MB paste: the page refuses to send it...
    b.execute(
        "const a = document.getElementById('code'); a.cm.setValue('x'.repeat(10 << 20));",
        vec![],
    )
    .await
    .unwrap();
    browser::click(&b, "#save").await;
    wait_text(&b, ".too-large", |t| t.contains("too large")).await;
    browser::screenshot(&b, "console-task-too-large").await;
    b.close().await.unwrap();
    // ... and the server refuses it too: over the body limit, and over 1 MiB of code.
    let mut http = ConsoleHttp::new(&base);
    assert_eq!(http.sign_in("ced_dev", "").await.status, 303);
    let csrf = http.csrf().await;
    let path = format!("/console/projects/{id}/tasks/new");
    // The server answers 413 as soon as the body passes its limit, without reading the
    // rest: the client may see that page or, still writing, a closed connection.
    let huge = "x".repeat(10 << 20);
    let sent = http
        .http
        .post(format!("{base}{path}"))
        .header("cookie", http.cookie_header())
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "t"),
            ("code", &huge),
            ("op", "save"),
        ])
        .send()
        .await;
    match sent {
        Ok(resp) => {
            assert_eq!(resp.status().as_u16(), 413);
            let body = resp.text().await.unwrap_or_default();
            assert!(body.contains("limit"), "{body}");
        }
        Err(e) => assert!(e.is_request() || e.is_body(), "{e:?}"),
    }
    assert_eq!(
        http.get("/console/").await.status,
        200,
        "the worker still answers"
    );
    let big = "x".repeat(2 << 20);
    let a = http
        .post(
            &path,
            &[
                ("csrf", &csrf),
                ("name", "t"),
                ("code", &big),
                ("op", "save"),
            ],
        )
        .await;
    assert_eq!(a.status, 200);
    assert!(
        a.body.contains("the code is too large"),
        "refused at the field"
    );
    assert_eq!(scalar::<i64>(&c, "SELECT count(*) FROM sync.task").await, 1);
}

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
         GRANT SELECT ON ticket TO tutorial_runner;
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
    browser::fill(&b, "#run_as", "tutorial_runner").await;
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
