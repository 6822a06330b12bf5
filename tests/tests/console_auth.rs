// The web console's sign-in and sessions, in a real browser and over plain HTTP: each
// sync_* role signs in, wrong passwords, the rate limit, expiry, CSRF, and switching off.
use pg_sync_tests::browser;
use pg_sync_tests::console::{roles, ConsoleHttp};
use pg_sync_tests::{scalar, wait_for, TestDb, WorkerProcess};
use std::time::Duration;

async fn console(db: &TestDb, args: &[&str]) -> (WorkerProcess, String) {
    let mut all = vec!["--webhook-listen", "off"];
    all.extend_from_slice(args);
    let worker = WorkerProcess::start(&db.url, &all);
    let base = worker.admin_url().await;
    (worker, base)
}

#[tokio::test]
async fn each_role_signs_in_and_sees_its_kind() {
    let db = TestDb::new().await;
    roles(&db).await;
    let (_worker, base) = console(&db, &[]).await;
    let b = browser::open().await;
    // A page before signing in leads to the sign-in form, then back to the page.
    b.goto(&format!("{base}/console/")).await.unwrap();
    browser::wait_path(&b, "/console/signin").await;
    browser::screenshot(&b, "signin").await;
    for (role, kind) in [
        ("con_user", "sync_user"),
        ("con_dev", "sync_developer"),
        ("con_admin", "sync_admin"),
    ] {
        browser::sign_in(&b, &base, role, "").await;
        browser::wait_at(&b, "/console/").await;
        assert_eq!(browser::text(&b, "nav .role").await, role);
        assert_eq!(browser::text(&b, "nav .kind").await, kind);
        assert_eq!(browser::text(&b, "#workers-alive").await, "1");
        if role == "con_admin" {
            browser::screenshot(&b, "overview").await;
        }
        // Its queries run on a connection as that role.
        let c = db.connect().await;
        let n: i64 = scalar(
            &c,
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}'
                   AND application_name LIKE '%console%' AND datname = current_database()"
            ),
        )
        .await;
        assert_eq!(n, 1, "{role}'s own connection");
        browser::click(&b, "nav form button").await;
        browser::wait_path(&b, "/console/signin").await;
        // Signing out closes that connection.
        wait_for("the connection closed", Duration::from_secs(5), || {
            let c = &c;
            async move {
                let n: i64 = scalar(
                    c,
                    &format!(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}'
                           AND datname = current_database()"
                    ),
                )
                .await;
                n == 0
            }
        })
        .await;
    }
    // A role that is no sync_* member is told so.
    browser::sign_in(&b, &base, "con_none", "").await;
    let err = browser::text(&b, ".field-error").await;
    assert!(err.contains("not a member of sync_user"), "{err}");
    b.close().await.unwrap();
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_failures_are_rate_limited() {
    let db = TestDb::new().await;
    roles(&db).await;
    let (_worker, base) = console(&db, &[]).await;
    let b = browser::open().await;
    browser::sign_in(&b, &base, "con_pw", "wrong").await;
    browser::wait_path(&b, "/console/signin").await;
    let err = browser::text(&b, ".field-error").await;
    assert_eq!(err, "sign-in failed: wrong role or password");
    browser::screenshot(&b, "signin-wrong-password").await;
    browser::sign_in(&b, &base, "con_pw", "right-password-1").await;
    assert_eq!(browser::text(&b, "nav .kind").await, "sync_user");
    b.close().await.unwrap();

    // Four more failures make five for the role: the next try is refused without asking
    // the database, even with the right password.
    let mut http = ConsoleHttp::new(&base);
    for _ in 0..4 {
        let a = http.sign_in("con_pw", "wrong-again").await;
        assert_eq!(a.status, 401, "{}", a.body);
    }
    let a = http.sign_in("con_pw", "right-password-1").await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(a.body.contains("too many failed sign-ins"), "{}", a.body);
    // Other roles from the same address still sign in (5 failures < 20 per address).
    let a = http.sign_in("con_user", "").await;
    assert_eq!(a.status, 303, "{}", a.body);
}

#[tokio::test]
async fn an_idle_session_expires_and_closes_its_connection() {
    let db = TestDb::new().await;
    roles(&db).await;
    let (_worker, base) = console(&db, &["--console-idle-timeout", "2s"]).await;
    let b = browser::open().await;
    browser::sign_in(&b, &base, "con_dev", "").await;
    browser::wait_at(&b, "/console/").await;
    let c = db.connect().await;
    let count = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'con_dev'
                   AND datname = current_database()";
    assert_eq!(scalar::<i64>(&c, count).await, 1);
    wait_for(
        "the session's connection closed",
        Duration::from_secs(8),
        || {
            let c = &c;
            async move { scalar::<i64>(c, count).await == 0 }
        },
    )
    .await;
    b.refresh().await.unwrap();
    browser::wait_path(&b, "/console/signin?expired=1").await;
    let notice = browser::text(&b, ".notice").await;
    assert!(notice.contains("Your session has ended"), "{notice}");
    browser::screenshot(&b, "session-expired").await;
    b.close().await.unwrap();
}

#[tokio::test]
async fn posts_need_the_sessions_csrf_token() {
    let db = TestDb::new().await;
    roles(&db).await;
    let token = "an-admin-token-0123456789abcdef";
    let (_worker, base) = console(&db, &["--admin-token", token]).await;
    let mut http = ConsoleHttp::new(&base);
    // The sign-in form's own token: a post without the form's cookie is refused.
    let page = http.get("/console/signin").await;
    let form_token = pg_sync_tests::console::hidden(&page.body, "csrf").unwrap();
    http.drop_cookie("pg_sync_console_pre");
    let a = http
        .post(
            "/console/signin",
            &[("role", "con_dev"), ("password", ""), ("csrf", &form_token)],
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.body);

    assert_eq!(http.sign_in("con_dev", "").await.status, 303);
    let csrf = http.csrf().await;
    for form in [vec![], vec![("csrf", "0123")]] {
        let a = http.post("/console/signout", &form).await;
        assert_eq!(a.status, 403, "{form:?}: {}", a.body);
        assert!(a.body.contains("security token (CSRF)"), "{}", a.body);
    }
    // A 10 MB form (a pasted file) is refused cleanly, before any handler runs.
    let big = "x".repeat(10 << 20);
    let a = http
        .post("/console/signout", &[("csrf", &csrf), ("code", &big)])
        .await;
    assert_eq!(a.status, 413, "{}", a.body);
    assert!(a.body.contains("the console's limit"), "{}", a.body);
    // Still signed in; the right token signs out.
    assert_eq!(http.get("/console/").await.status, 200);
    let a = http.post("/console/signout", &[("csrf", &csrf)]).await;
    assert_eq!(a.status, 303);
    assert_eq!(http.get("/console/").await.status, 303);

    // The console's session opens no other admin route: those still want the token.
    assert_eq!(http.sign_in("con_admin", "").await.status, 303);
    assert_eq!(http.get("/service/status").await.status, 401);
    assert_eq!(http.get("/job/list").await.status, 401);
}

#[tokio::test]
async fn the_console_can_be_switched_off() {
    let db = TestDb::new().await;
    let (_worker, base) = console(&db, &["--console", "false"]).await;
    let mut http = ConsoleHttp::new(&base);
    for path in ["/console/", "/console/signin", "/console"] {
        assert_eq!(http.get(path).await.status, 404, "{path}");
    }
    assert_eq!(http.get("/health/live").await.status, 200);
}
