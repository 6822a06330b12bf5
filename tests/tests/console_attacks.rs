// The console attacked over plain HTTP: markup stored in the database shown as text,
// sign-in redirects that would leave the console, forged or replayed session cookies,
// the admin routes behind their token, and rights taken away in the middle of a session.
use pg_sync_tests::console::{roles, ConsoleHttp};
use pg_sync_tests::{exec, scalar, wait_for, TestDb, WorkerProcess};
use std::time::Duration;

/// Names and lines an attacker controls: a developer names projects and tasks, and task
/// code writes log lines and raises errors with any text.
const PROJECT: &str = "<img src=x onerror=alert('project')>";
const TASK: &str = "<script>alert('task')</script>";
const CODE: &str = r#"def boom():
    log("<script>alert('log')</script>")
    raise ValueError("<b onmouseover=alert('error')>boom</b>")
"#;

const TOKEN: &str = "an-admin-token-for-the-console-tests";

async fn setup(env: &[(&str, &str)]) -> (TestDb, WorkerProcess, String) {
    let db = TestDb::new().await;
    roles(&db).await;
    let worker = WorkerProcess::start_env(&db.url, &["--webhook-listen", "off"], env);
    let base = worker.admin_url().await;
    (db, worker, base)
}

/// No tag a page did not write itself: each hostile string appears escaped, never raw.
fn assert_escaped(body: &str, hostile: &[&str]) {
    for h in hostile {
        assert!(!body.contains(h), "raw markup {h:?} in the page:\n{body}");
    }
    assert!(
        !body.contains("<script>alert") && !body.contains("<img src=x"),
        "{body}"
    );
}

#[tokio::test]
async fn markup_from_the_database_is_shown_as_text() {
    let (db, _worker, base) = setup(&[]).await;
    let c = db.connect().await;
    let (p, t): (i64, i64) = {
        let p: i64 = scalar(
            &c,
            &format!(
                "INSERT INTO sync.project (name, active) VALUES ($${PROJECT}$$, true) RETURNING id"
            ),
        )
        .await;
        let t: i64 = c
            .query_one(
                "INSERT INTO sync.task (project_id, name, code) VALUES ($1, $2, $3) RETURNING id",
                &[&p, &TASK, &CODE],
            )
            .await
            .unwrap()
            .get(0);
        (p, t)
    };
    let id: i64 = c
        .query_one(
            "INSERT INTO sync.job (project_id, task_id, trigger_kind, handler, max_retries)
             VALUES ($1, $2, 'job', 'boom', 1) RETURNING id",
            &[&p, &t],
        )
        .await
        .unwrap()
        .get(0);
    wait_for("the job to fail", Duration::from_secs(30), || {
        let c = &c;
        async move {
            let s: String = scalar(c, &format!("SELECT state FROM sync.job WHERE id = {id}")).await;
            s == "failed"
        }
    })
    .await;

    let mut con = ConsoleHttp::new(&base);
    assert_eq!(con.sign_in("con_dev", "").await.status, 303);
    let hostile = [
        PROJECT,
        TASK,
        "<script>alert('log')</script>",
        "<b onmouseover=alert('error')>",
    ];
    for path in [
        "/console/".to_string(),
        "/console/jobs".to_string(),
        format!("/console/jobs/{id}"),
        "/console/logs".to_string(),
        "/console/logs?group=project".to_string(),
        "/console/logs?group=task".to_string(),
    ] {
        let page = con.get(&path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert_escaped(&page.body, &hostile);
    }
    // Shown, as text.
    let job = con.get(&format!("/console/jobs/{id}")).await.body;
    assert!(
        job.contains("&lt;b onmouseover=alert('error')&gt;boom&lt;/b&gt;"),
        "{job}"
    );
    let logs = con.get("/console/logs").await.body;
    assert!(
        logs.contains("&lt;script&gt;alert('log')&lt;/script&gt;"),
        "{logs}"
    );
}

#[tokio::test]
async fn sign_in_never_sends_the_browser_off_the_console() {
    let (_db, _worker, base) = setup(&[]).await;
    for next in [
        "//evil.example/",
        "https://evil.example/console/",
        "/console//evil.example/",
        "/console/\\\\evil.example",
        "javascript:alert(1)",
    ] {
        let mut con = ConsoleHttp::new(&base);
        let form = con.get("/console/signin").await;
        let token = pg_sync_tests::console::hidden(&form.body, "csrf").unwrap();
        let answer = con
            .post(
                "/console/signin",
                &[
                    ("role", "con_user"),
                    ("password", ""),
                    ("csrf", &token),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(answer.status, 303, "{next}: {}", answer.body);
        assert_eq!(answer.location.as_deref(), Some("/console/"), "{next}");
    }
}

#[tokio::test]
async fn session_cookies_are_signed_httponly_strict_and_die_with_sign_out() {
    let (_db, _worker, base) = setup(&[]).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The sign-in, by hand, to see the Set-Cookie headers themselves.
    let form = http
        .get(format!("{base}/console/signin"))
        .send()
        .await
        .unwrap();
    let pre = form
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let token = pg_sync_tests::console::hidden(&form.text().await.unwrap(), "csrf").unwrap();
    let signed_in = http
        .post(format!("{base}/console/signin"))
        .header("cookie", &pre)
        .form(&[
            ("role", "con_dev"),
            ("password", ""),
            ("csrf", token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let session = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("pg_sync_console="))
        .expect("a session cookie")
        .to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(session.contains(flag), "{flag} missing: {session}");
    }
    let cookie = session.split(';').next().unwrap().to_string();
    let get = |cookie: String| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let r = http
                .get(format!("{base}/console/jobs"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
            )
        }
    };
    assert_eq!(get(cookie.clone()).await.0, 200);

    // A forged signature, an unsigned id and a made-up session are all strangers.
    let (value, sig) = cookie.rsplit_once('.').unwrap();
    let flipped = if sig.ends_with('0') { "1" } else { "0" };
    let forged = format!("{value}.{}{flipped}", &sig[..sig.len() - 1]);
    let unsigned = value.to_string();
    let made_up = format!("pg_sync_console={}.{sig}", "ab".repeat(32));
    for stranger in [forged, unsigned, made_up] {
        let (status, location) = get(stranger.clone()).await;
        assert_eq!(status, 303, "{stranger}");
        assert!(location.starts_with("/console/signin"), "{location}");
    }

    // Signed out, the same cookie opens nothing (the session ended on the server).
    let mut con = ConsoleHttp::new(&base);
    assert_eq!(con.sign_in("con_dev", "").await.status, 303);
    let csrf = con.csrf().await;
    assert_eq!(con.get("/console/jobs").await.status, 200);
    let replay = con.clone_cookies();
    assert_eq!(
        con.post("/console/signout", &[("csrf", &csrf)])
            .await
            .status,
        303
    );
    let (status, location) = get(replay).await;
    assert_eq!(status, 303);
    assert!(location.starts_with("/console/signin"), "{location}");
}

#[tokio::test]
async fn a_console_session_opens_no_admin_route() {
    let (_db, _worker, base) = setup(&[("SYNC_WORKER_ADMIN_TOKEN", TOKEN)]).await;
    let mut con = ConsoleHttp::new(&base);
    assert_eq!(con.sign_in("con_admin", "").await.status, 303);
    assert_eq!(con.get("/console/").await.status, 200);
    for path in ["/service/status", "/job/list", "/metrics"] {
        let answer = con.get(path).await;
        assert_eq!(
            answer.status, 401,
            "{path} with a console session: {}",
            answer.body
        );
    }
    let csrf = con.csrf().await;
    let answer = con
        .post("/job/create", &[("csrf", &csrf), ("project", "x")])
        .await;
    assert_eq!(answer.status, 401, "{}", answer.body);
}

#[tokio::test]
async fn rights_taken_away_mid_session_are_gone_at_the_next_request() {
    let (db, _worker, base) = setup(&[]).await;
    let c = db.connect().await;
    // A role of this test only: the shared roles must keep their rights for the others.
    exec(
        &c,
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'con_demoted') THEN
             CREATE ROLE con_demoted LOGIN; END IF;
         END $$;
         GRANT sync_developer TO con_demoted",
    )
    .await;
    pg_sync_tests::create_task(
        &c,
        "demote",
        "t",
        "def fail():\n    raise ValueError('x')\n",
    )
    .await;
    let id: i64 = scalar(
        &c,
        "SELECT sync_add_job('demote', 't', 'fail', max_retries => 1)",
    )
    .await;
    wait_for("the job to fail", Duration::from_secs(30), || {
        let c = &c;
        async move {
            let s: String = scalar(c, &format!("SELECT state FROM sync.job WHERE id = {id}")).await;
            s == "failed"
        }
    })
    .await;

    let mut con = ConsoleHttp::new(&base);
    assert_eq!(con.sign_in("con_demoted", "").await.status, 303);
    let csrf = con.csrf().await;
    assert_eq!(con.get(&format!("/console/jobs/{id}")).await.status, 200);
    exec(&c, "REVOKE sync_developer FROM con_demoted").await;
    // The session's connection is the role's: PostgreSQL checks the rights it has now.
    let answer = con
        .post(&format!("/console/jobs/{id}/retry"), &[("csrf", &csrf)])
        .await;
    let state: String = scalar(&c, &format!("SELECT state FROM sync.job WHERE id = {id}")).await;
    assert_eq!(
        state, "failed",
        "the retry ran with rights the role no longer has"
    );
    assert!(
        answer.body.contains("42501") || answer.body.contains("permission denied"),
        "{} {}",
        answer.status,
        answer.body
    );
    exec(&c, "DROP OWNED BY con_demoted").await;
}

#[tokio::test]
async fn sessions_and_their_connections_are_bounded() {
    let (db, _worker, base) = setup(&[("SYNC_WORKER_CONSOLE_MAX_SESSIONS", "6")]).await;
    let c = db.connect().await;
    // A role signing in again and again keeps at most 5 sessions: its oldest ends.
    let mut first = ConsoleHttp::new(&base);
    assert_eq!(first.sign_in("con_user", "").await.status, 303);
    assert_eq!(first.get("/console/jobs").await.status, 200);
    let mut kept = Vec::new();
    for _ in 0..5 {
        let mut con = ConsoleHttp::new(&base);
        assert_eq!(con.sign_in("con_user", "").await.status, 303);
        kept.push(con);
    }
    assert_eq!(
        first.get("/console/jobs").await.status,
        303,
        "the oldest session lives on"
    );
    for con in &mut kept {
        assert_eq!(con.get("/console/jobs").await.status, 200);
    }
    // The whole console holds at most console_max_sessions: then sign-ins wait.
    let mut dev = ConsoleHttp::new(&base);
    assert_eq!(dev.sign_in("con_dev", "").await.status, 303);
    let mut admin = ConsoleHttp::new(&base);
    let refused = admin.sign_in("con_admin", "").await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        refused.body.contains("most sessions open (6)"),
        "{}",
        refused.body
    );
    // One connection per session, no more: the ended session's is closed.
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = '{}' AND application_name = 'sync_worker console'",
        db.name
    );
    wait_for("6 console connections", Duration::from_secs(10), || {
        let (c, sql) = (&c, &sql);
        async move { scalar::<i64>(c, sql).await == 6 }
    })
    .await;
    // Signing out makes room.
    let csrf = dev.csrf().await;
    assert_eq!(
        dev.post("/console/signout", &[("csrf", &csrf)])
            .await
            .status,
        303
    );
    assert_eq!(admin.sign_in("con_admin", "").await.status, 303);
}

#[tokio::test]
async fn a_session_in_constant_use_still_ends_at_its_lifetime() {
    let (_db, _worker, base) = setup(&[
        ("SYNC_WORKER_CONSOLE_SESSION_LIFETIME", "3s"),
        ("SYNC_WORKER_CONSOLE_IDLE_TIMEOUT", "1h"),
    ])
    .await;
    let mut con = ConsoleHttp::new(&base);
    assert_eq!(con.sign_in("con_user", "").await.status, 303);
    let started = std::time::Instant::now();
    // Used every 200 ms, so never idle: only the absolute lifetime can end it.
    let ended = loop {
        let answer = con.get("/console/jobs").await;
        if answer.status != 200 {
            break answer;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the session outlived its 3 s lifetime"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "ended early"
    );
    assert_eq!(ended.status, 303);
    assert!(
        ended
            .location
            .as_deref()
            .unwrap_or_default()
            .starts_with("/console/signin"),
        "{:?}",
        ended.location
    );
}
