// Job languages through a real worker: a job's lang comes from whoever caused it (the
// writer's or presser's sync.lang, else their role's, else the project's lang), and
// texts.KEY follows it (missing keys: the project's language, then en_US).
use pg_sync_tests::python::PyProject;
use pg_sync_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

const CODE: &str = r#"
def greet():
    return {'text': texts.GREETING, 'fallback': texts.FAREWELL, 'lang': get_lang()}

def handle_db(records):
    add_job('child')()
    return greet()

def child():
    return greet()

def handle_button():
    return greet()

def handle_cron():
    return greet()

def handle_webhook(httprequest):
    return greet()
"#;

const WORKER_ARGS: [&str; 6] = [
    "--executors",
    "1",
    "--poll-interval",
    "100ms",
    "--base-url",
    "https://sync.example.test",
];

/// The job's (lang, result) once it is done.
async fn outcome(c: &Client, id: i64) -> (Option<String>, Value) {
    wait_for(&format!("job {id}"), Duration::from_secs(30), || async {
        let state: String = scalar(c, &format!("SELECT state FROM sync.job WHERE id = {id}")).await;
        assert_ne!(state, "failed", "job {id} failed");
        state == "done"
    })
    .await;
    let row = c
        .query_one("SELECT lang, result FROM sync.job WHERE id = $1", &[&id])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

fn greeting(lang: &str, text: &str, fallback: &str) -> Value {
    json!({"text": text, "fallback": fallback, "lang": lang})
}

/// Insert an order on `c` and return the id of the db job it queued.
async fn order(c: &Client, admin: &Client, sql_before: &str) -> i64 {
    let before: i64 = scalar(admin, "SELECT coalesce(max(id), 0) FROM sync.job").await;
    c.batch_execute(&format!(
        "{sql_before} INSERT INTO public.orders (note) VALUES ('x');"
    ))
    .await
    .expect("insert an order");
    scalar(
        admin,
        &format!("SELECT min(id) FROM sync.job WHERE trigger_kind = 'db' AND id > {before}"),
    )
    .await
}

#[tokio::test]
async fn jobs_speak_the_language_of_whoever_caused_them() {
    let project = PyProject::new("langs").await;
    let (db, c, p) = (&project.db, &project.client, project.id);
    let t = project.task("main", CODE).await;
    let role = format!("{}_fr", db.name);
    exec(
        c,
        &format!(
            "INSERT INTO sync.project_text (project_id, key, lang, value) VALUES
               ({p}, 'GREETING', 'en_US', 'Hello'), ({p}, 'GREETING', 'de_DE', 'Hallo'),
               ({p}, 'GREETING', 'fr_FR', 'Bonjour'),
               ({p}, 'FAREWELL', 'en_US', 'Bye'), ({p}, 'FAREWELL', 'de_DE', 'Tschüss');
             CREATE TABLE public.orders (id serial PRIMARY KEY, note text);
             INSERT INTO sync.db_trigger (task_id, name, table_name, event)
               VALUES ({t}, 'new_order', 'public.orders', 'create');
             INSERT INTO sync.button_trigger (task_id, name) VALUES ({t}, 'greet');
             INSERT INTO sync.webhook_trigger (task_id, name) VALUES ({t}, 'hook');
             CREATE ROLE {role} LOGIN;
             ALTER ROLE {role} SET sync.lang = 'fr_FR';
             GRANT INSERT ON public.orders TO {role};
             GRANT sync_developer TO {role};
             GRANT USAGE ON SEQUENCE public.orders_id_seq TO {role};"
        ),
    )
    .await;
    let worker = WorkerProcess::start(&db.url, &WORKER_ARGS);
    let hello = greeting("en_US", "Hello", "Bye");
    let hallo = greeting("de_DE", "Hallo", "Tschüss");
    let bonjour_en = greeting("fr_FR", "Bonjour", "Bye");

    // db triggers: the writer's session setting, else the writer's role setting (at
    // login, or after SET ROLE), else the project's language.
    let writer = db.connect().await;
    let id = order(&writer, c, "SET sync.lang = 'de_DE';").await;
    assert_eq!(outcome(c, id).await, (Some("de_DE".into()), hallo.clone()));
    // The child job queued by add_job inherits its parent's language.
    let child: i64 = scalar(
        c,
        &format!("SELECT id FROM sync.job WHERE parent_id = {id}"),
    )
    .await;
    assert_eq!(
        outcome(c, child).await,
        (Some("de_DE".into()), hallo.clone())
    );

    let fr = db.connect_as(&role).await;
    let id = order(&fr, c, "").await;
    assert_eq!(
        outcome(c, id).await,
        (Some("fr_FR".into()), bonjour_en.clone())
    );
    // The session's own setting wins over the role's.
    let id = order(&fr, c, "SET sync.lang = 'de_DE';").await;
    assert_eq!(outcome(c, id).await, (Some("de_DE".into()), hallo.clone()));
    // SET ROLE: the role that writes is the cause; its setting counts.
    let plain = db.connect().await;
    let id = order(&plain, c, &format!("SET ROLE {role};")).await;
    assert_eq!(
        outcome(c, id).await,
        (Some("fr_FR".into()), bonjour_en.clone())
    );
    exec(&plain, "RESET ROLE").await;

    let id = order(&plain, c, "").await;
    assert_eq!(outcome(c, id).await, (Some("en_US".into()), hello.clone()));
    // The project's language is read, not assumed; a missing key falls back to it.
    exec(
        c,
        &format!("UPDATE sync.project SET lang = 'de_DE' WHERE id = {p}"),
    )
    .await;
    let id = order(&plain, c, "").await;
    assert_eq!(outcome(c, id).await, (Some("de_DE".into()), hallo.clone()));
    let id = order(&plain, c, "SET sync.lang = 'fr_FR';").await;
    assert_eq!(
        outcome(c, id).await,
        (
            Some("fr_FR".into()),
            greeting("fr_FR", "Bonjour", "Tschüss")
        )
    );
    // A setting that is no language code does not fail the writer's INSERT: a
    // WARNING, and the next source (here the project's language).
    let id = order(&plain, c, "SET sync.lang = 'german';").await;
    assert_eq!(outcome(c, id).await, (Some("de_DE".into()), hallo.clone()));

    // Buttons: the presser's setting.
    exec(&plain, "SET sync.lang = 'en_US'").await;
    let messages = plain
        .simple_query("CALL sync_press_button('langs', 'greet', NULL)")
        .await
        .expect("press");
    let result = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(
        serde_json::from_str::<Value>(&result.unwrap()).unwrap(),
        hello
    );
    // Back to the role's setting (a key missing in French: the project's German).
    exec(&fr, "RESET sync.lang").await;
    let id: i64 = scalar(&fr, "SELECT sync_run_button('langs', 'greet')").await;
    assert_eq!(
        outcome(c, id).await,
        (
            Some("fr_FR".into()),
            greeting("fr_FR", "Bonjour", "Tschüss")
        )
    );

    // Cron and webhook jobs have no user session: the project's language. The worker's
    // own sessions say otherwise (a database setting, applied when they log in), and
    // must not count.
    drop(worker);
    exec(
        c,
        &format!("ALTER DATABASE {} SET sync.lang = 'fr_FR'", db.name),
    )
    .await;
    let worker = WorkerProcess::start(&db.url, &WORKER_ARGS);
    exec(
        c,
        &format!(
            "INSERT INTO sync.cron_trigger (task_id, name, \"interval\", next_run_at, calls_left)
             VALUES ({t}, 'once', '1 day', sync.clock() - interval '1 second', 1)"
        ),
    )
    .await;
    wait_for("the cron job", Duration::from_secs(20), || async {
        scalar::<i64>(
            c,
            "SELECT count(*) FROM sync.job WHERE trigger_kind = 'cron'",
        )
        .await
            == 1
    })
    .await;
    let id: i64 = scalar(c, "SELECT id FROM sync.job WHERE trigger_kind = 'cron'").await;
    assert_eq!(outcome(c, id).await, (Some("de_DE".into()), hallo.clone()));
    let token: String = scalar(
        c,
        "SELECT token FROM sync.webhook_trigger WHERE name = 'hook'",
    )
    .await;
    let base = worker.webhook_url().await;
    let resp = reqwest::Client::new()
        .post(format!("{base}/sync/webhook/{token}"))
        .json(&json!({}))
        .send()
        .await
        .expect("webhook call");
    assert_eq!(resp.status().as_u16(), 200);
    let answer: Value = resp.json().await.expect("JSON answer");
    assert_eq!(answer, hallo, "{answer}");
    // The job row records the call's status; the answer above was the handler's.
    let id: i64 = scalar(c, "SELECT id FROM sync.job WHERE trigger_kind = 'webhook'").await;
    assert_eq!(outcome(c, id).await.0.as_deref(), Some("de_DE"));
    exec(c, &format!("ALTER DATABASE {} RESET sync.lang", db.name)).await;

    // Jobs queued by the worker's admin API or sync.add_job without a language: the
    // project's. A job row without lang (queued before pg_sync 0.2) runs in it too.
    let id: i64 = scalar(c, &format!("SELECT sync.add_job({p}, {t}, 'child')")).await;
    assert_eq!(outcome(c, id).await, (Some("de_DE".into()), hallo.clone()));
    let id: i64 = scalar(
        c,
        &format!(
            "INSERT INTO sync.job (project_id, task_id, handler) VALUES ({p}, {t}, 'child') RETURNING id"
        ),
    )
    .await;
    assert_eq!(outcome(c, id).await, (None, hallo.clone()));
    drop(worker);
    drop(fr);
    exec(c, &format!("DROP OWNED BY {role}; DROP ROLE {role}")).await;
}

/// docs/jobs.md's example, the timed db triggers (the language of the session that set
/// the date) and an invalid setting, without a worker.
#[tokio::test]
async fn the_language_rule_in_sql() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let (p, t) = create_task(&c, "demo", "main", CODE).await;
    exec(
        &c,
        &format!(
            "INSERT INTO sync.button_trigger (task_id, name) VALUES ({t}, 'sync_now');
             CREATE TABLE public.visits (id int PRIMARY KEY, at timestamptz);
             INSERT INTO sync.db_trigger (task_id, name, table_name, event, date_column, time_offset)
               VALUES ({t}, 'later', 'public.visits', 'timed', 'at', '1 hour');"
        ),
    )
    .await;
    let last = "SELECT lang FROM sync.job ORDER BY id DESC LIMIT 1";
    exec(
        &c,
        "UPDATE sync.project SET lang = 'de_DE' WHERE name = 'demo'; SET sync.lang = 'fr_FR'",
    )
    .await;
    let _: i64 = scalar(&c, "SELECT sync_run_button('demo', 'sync_now')").await;
    assert_eq!(scalar::<String>(&c, last).await, "fr_FR");
    exec(&c, "RESET sync.lang").await;
    let _: i64 = scalar(&c, "SELECT sync_run_button('demo', 'sync_now')").await;
    assert_eq!(scalar::<String>(&c, last).await, "de_DE");

    // Timed: the schedule keeps the language of whoever set the date, until it is due.
    exec(
        &c,
        "SET sync.lang = 'fr_FR'; INSERT INTO public.visits VALUES (1, now()); RESET sync.lang",
    )
    .await;
    assert_eq!(
        scalar::<String>(&c, "SELECT lang FROM sync.db_trigger_due").await,
        "fr_FR"
    );
    exec(
        &c,
        "INSERT INTO sync.setting (key, value) VALUES ('clock_offset', '2 hours');
         SELECT sync.enqueue_timed_triggers();",
    )
    .await;
    assert_eq!(
        scalar::<String>(
            &c,
            "SELECT lang FROM sync.job WHERE args ->> 'event' = 'timed'"
        )
        .await,
        "fr_FR"
    );

    // Not a language code: skipped, never an error.
    exec(&c, "SET sync.lang = 'de-DE'").await;
    let lang: String = scalar(&c, &format!("SELECT sync.job_lang({p}, current_user)")).await;
    assert_eq!(lang, "de_DE");
    exec(
        &c,
        "UPDATE sync.project SET lang = 'fr_FR' WHERE name = 'demo'",
    )
    .await;
    let lang: String = scalar(&c, &format!("SELECT sync.job_lang({p}, current_user)")).await;
    assert_eq!(lang, "fr_FR", "the project's language");
    let msg = expect_error(
        &c,
        "UPDATE sync.project SET lang = 'french' WHERE name = 'demo'",
        "23514",
    )
    .await;
    assert!(msg.contains("project_lang_check"), "{msg}");
}
