// The console's editing pages in a real browser and over plain HTTP: what each role sees
// and may change (PostgreSQL refusing forged posts), write-only secrets, and the task
// editor's check and size limit. The README tutorial is console_tutorial.rs.
use fantoccini::Locator;
use pg_sync_tests::browser::{self, click_and_wait, exists, set_code, source, wait_text};
use pg_sync_tests::console::{editing_console as console, ConsoleHttp};
use pg_sync_tests::{exec, scalar, TestDb};

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
