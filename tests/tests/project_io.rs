// Project export / import: sync_export_project and sync_import_project (round trips,
// replace in place, validation, roles, db triggers installed) and the `sync_worker
// export` / `import` commands run through the real binary.
use std::io::Write;
use std::process::{Command, Stdio};

use pg_sync_tests::python::worker_bin;
use pg_sync_tests::*;
use serde_json::{json, Value};

/// Project `crm` with something in every part, created with plain INSERTs.
const FIXTURE: &str = r#"
CREATE TABLE orders (id bigint PRIMARY KEY, state text NOT NULL DEFAULT 'draft', closed_at timestamptz);
INSERT INTO sync.project (name, active, core_code, common_code, eval_context, run_as)
VALUES ('crm', true, 'CORE = 1', 'COMMON = 2', '{example}', 'sync_user');
INSERT INTO sync.project_param (project_id, key, value, initial_value, description, url)
SELECT id, 'LIMIT', '20', '10', 'Most records per run', 'https://example.test/limit' FROM sync.project;
INSERT INTO sync.project_param (project_id, key, initial_value)
SELECT id, 'BASE', 'http://api.test' FROM sync.project;
INSERT INTO sync.project_text (project_id, key, lang, value)
SELECT id, k, l, v FROM sync.project,
    (VALUES ('HELLO', 'fr_FR', 'Bonjour'), ('HELLO', 'en_US', 'Hello'), ('BYE', 'en_US', 'Bye')) t(k, l, v);
INSERT INTO sync.project_secret (project_id, key, value)
SELECT id, k, v FROM sync.project, (VALUES ('TOKEN', 's3cret-token'), ('PASSWORD', 's3cret-pw')) s(k, v);
INSERT INTO sync.task (project_id, name, code, active, time_limit)
SELECT id, n, c, a, l::interval FROM sync.project,
    (VALUES ('push', E'def handle_db(records):\n    pass\n', true, '90 seconds'),
            ('nightly', 'def handle_cron(): pass', false, NULL),
            ('hook', 'def handle_webhook(httprequest): return {}', true, NULL)) t(n, c, a, l);
INSERT INTO sync.cron_trigger (task_id, name, active, "interval", next_run_at, calls_left, run_as)
SELECT id, 'every_night', false, '1 day', '2030-01-01 02:00+00', 3, 'sync_user' FROM sync.task WHERE name = 'nightly';
INSERT INTO sync.cron_trigger (task_id, name, "interval", next_run_at)
SELECT id, 'hourly', '1 hour', '2030-01-01 00:30+00' FROM sync.task WHERE name = 'nightly';
INSERT INTO sync.db_trigger (task_id, name, table_name, event, apply_on, before_update, watched_columns, chunk_size)
SELECT id, 'order_done', 'orders', 'update', 'NEW.state = ''done''', 'OLD.state <> ''done''', '{state}', 50
FROM sync.task WHERE name = 'push';
INSERT INTO sync.db_trigger (task_id, name, table_name, event, date_column, time_offset, apply_on)
SELECT id, 'closed_later', 'public.orders', 'timed', 'closed_at', '1 day 02:00', 'NEW.state = ''closed'''
FROM sync.task WHERE name = 'push';
INSERT INTO sync.webhook_trigger (task_id, name, content_type, signing_secret)
SELECT id, 'incoming', 'form', 'hmac-key' FROM sync.task WHERE name = 'hook';
INSERT INTO sync.button_trigger (task_id, name, description)
SELECT id, 'sync_now', 'Sync everything now' FROM sync.task WHERE name = 'push';
"#;

async fn export(c: &Client, name: &str) -> Value {
    match c
        .query_one("SELECT sync_export_project($1)", &[&name])
        .await
    {
        Ok(row) => row.get(0),
        Err(e) => panic!("export {name}: {:?}", sqlstate(&e)),
    }
}

async fn import(c: &Client, doc: &Value, replace: bool) -> i64 {
    match c
        .query_one("SELECT sync_import_project($1, $2)", &[doc, &replace])
        .await
    {
        Ok(row) => row.get(0),
        Err(e) => panic!("import: {}", describe(&e)),
    }
}

/// SQLSTATE, message and hint of a refused import.
async fn import_error(c: &Client, doc: &Value, replace: bool) -> (String, String, String) {
    match c
        .query_one("SELECT sync_import_project($1, $2)", &[doc, &replace])
        .await
    {
        Ok(row) => panic!(
            "import of {doc} should fail, made project {}",
            row.get::<_, i64>(0)
        ),
        Err(e) => {
            let db = e.as_db_error().expect("an SQL error");
            (
                db.code().code().to_string(),
                db.message().to_string(),
                db.hint().unwrap_or_default().to_string(),
            )
        }
    }
}

fn describe(e: &Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} {} (hint: {:?})",
            db.code().code(),
            db.message(),
            db.hint()
        ),
        None => e.to_string(),
    }
}

async fn strings(c: &Client, sql: &str) -> Vec<String> {
    c.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The PostgreSQL triggers installed on `orders`.
async fn installed(c: &Client) -> Vec<String> {
    strings(
        c,
        "SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'public.orders'::regclass
         AND tgname LIKE 'pg\\_sync\\_dbt\\_%' ORDER BY 1",
    )
    .await
}

#[tokio::test]
async fn export_is_complete_deterministic_and_holds_no_secret_value() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(FIXTURE).await.expect("fixture");
    let doc = export(&c, "crm").await;
    let token: String = scalar(&c, "SELECT token FROM sync.webhook_trigger").await;
    let expected = json!({
        "pg_sync_export": 1,
        "name": "crm",
        "active": true,
        "core_code": "CORE = 1",
        "common_code": "COMMON = 2",
        "eval_context": ["example"],
        "run_as": "sync_user",
        "lang": "en_US",
        "params": [
            {"key": "BASE", "value": "http://api.test", "initial_value": "http://api.test",
             "description": null, "url": null},
            {"key": "LIMIT", "value": "20", "initial_value": "10",
             "description": "Most records per run", "url": "https://example.test/limit"}
        ],
        "texts": [
            {"key": "BYE", "lang": "en_US", "value": "Bye"},
            {"key": "HELLO", "lang": "en_US", "value": "Hello"},
            {"key": "HELLO", "lang": "fr_FR", "value": "Bonjour"}
        ],
        "secrets": [{"key": "PASSWORD"}, {"key": "TOKEN"}],
        "tasks": [
            {"name": "hook", "code": "def handle_webhook(httprequest): return {}", "active": true, "time_limit": null},
            {"name": "nightly", "code": "def handle_cron(): pass", "active": false, "time_limit": null},
            {"name": "push", "code": "def handle_db(records):\n    pass\n", "active": true, "time_limit": "00:01:30"}
        ],
        "cron_triggers": [
            {"name": "every_night", "task": "nightly", "active": false, "interval": "1 day",
             "schedule": null, "timezone": "UTC",
             "next_run_at": "2030-01-01T02:00:00+00:00", "calls_left": 3, "run_as": "sync_user"},
            {"name": "hourly", "task": "nightly", "active": true, "interval": "01:00:00",
             "schedule": null, "timezone": "UTC",
             "next_run_at": "2030-01-01T00:30:00+00:00", "calls_left": -1, "run_as": null}
        ],
        "db_triggers": [
            {"name": "closed_later", "task": "push", "active": true, "table_name": "public.orders",
             "event": "timed", "apply_on": "NEW.state = 'closed'", "before_update": null,
             "watched_columns": null, "date_column": "closed_at", "time_offset": "1 day 02:00:00",
             "chunk_size": 1000},
            {"name": "order_done", "task": "push", "active": true, "table_name": "public.orders",
             "event": "update", "apply_on": "NEW.state = 'done'", "before_update": "OLD.state <> 'done'",
             "watched_columns": ["state"], "date_column": null, "time_offset": "00:00:00",
             "chunk_size": 50}
        ],
        "webhook_triggers": [
            {"name": "incoming", "task": "hook", "active": true, "content_type": "form", "token": token}
        ],
        "button_triggers": [
            {"name": "sync_now", "task": "push", "active": true, "description": "Sync everything now"}
        ]
    });
    assert_eq!(doc, expected);

    // No secret value, no signing secret, anywhere in the document.
    let text = doc.to_string();
    for secret in ["s3cret-token", "s3cret-pw", "hmac-key"] {
        assert!(!text.contains(secret), "{secret} exported: {text}");
    }

    // The same text again, whatever the session's time zone and interval style.
    let first: String = scalar(&c, "SELECT sync_export_project('crm')::text").await;
    c.batch_execute(
        "SET TimeZone = 'America/New_York'; SET IntervalStyle = 'iso_8601'; SET DateStyle = 'German'",
    )
    .await
    .unwrap();
    let again: String = scalar(&c, "SELECT sync_export_project('crm')::text").await;
    assert_eq!(first, again);
    assert_eq!(
        doc.to_string(),
        serde_json::from_str::<Value>(&again).unwrap().to_string()
    );

    let (code, msg) = match c.query_one("SELECT sync_export_project('nope')", &[]).await {
        Ok(_) => panic!("exported a missing project"),
        Err(e) => sqlstate(&e),
    };
    assert_eq!(
        (code.as_str(), msg.as_str()),
        ("P0002", "project \"nope\" does not exist")
    );
}

#[tokio::test]
async fn round_trip_through_drop_and_import_gives_the_same_document() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(FIXTURE).await.expect("fixture");
    let before = export(&c, "crm").await;
    c.batch_execute("DELETE FROM sync.project WHERE name = 'crm'")
        .await
        .unwrap();
    assert!(installed(&c).await.is_empty());

    let id = import(&c, &before, false).await;
    let after = export(&c, "crm").await;
    assert_eq!(after, before);
    let found: i64 = scalar(&c, "SELECT id FROM sync.project WHERE name = 'crm'").await;
    assert_eq!(found, id);
    // The registry, the installer and param_fill_value ran as for INSERTs.
    assert_eq!(
        strings(
            &c,
            "SELECT kind || ':' || name FROM sync.trigger_name ORDER BY 1"
        )
        .await,
        [
            "button:sync_now",
            "cron:every_night",
            "cron:hourly",
            "db:closed_later",
            "db:order_done",
            "webhook:incoming"
        ]
    );
    assert_eq!(installed(&c).await.len(), 10, "{:?}", installed(&c).await);
    // Secrets come back as keys without values; the signing secret is not in the document.
    let empty: i64 = scalar(
        &c,
        "SELECT count(*) FROM sync.project_secret WHERE value IS NULL",
    )
    .await;
    assert_eq!(empty, 2);
    let signing: Option<String> =
        scalar(&c, "SELECT signing_secret FROM sync.webhook_trigger").await;
    assert_eq!(signing, None);
}

#[tokio::test]
async fn importing_a_copy_next_to_the_original_needs_fresh_tokens() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(FIXTURE).await.expect("fixture");
    let mut doc = export(&c, "crm").await;
    c.batch_execute("UPDATE sync.project SET name = 'crm_old' WHERE name = 'crm'")
        .await
        .unwrap();
    // The webhook URL is taken by the renamed project: refused, nothing created.
    let (code, msg, hint) = import_error(&c, &doc, false).await;
    assert_eq!(code, "23505");
    assert!(
        msg.contains("\"incoming\"") && msg.contains("\"crm_old\""),
        "{msg}"
    );
    assert!(hint.contains("\"token\" to null"), "{hint}");
    let n: i64 = scalar(&c, "SELECT count(*) FROM sync.project").await;
    assert_eq!(n, 1);

    doc["webhook_triggers"][0]["token"] = Value::Null;
    import(&c, &doc, false).await;
    let copy = export(&c, "crm").await;
    let old = export(&c, "crm_old").await;
    let token = copy["webhook_triggers"][0]["token"].as_str().unwrap();
    assert_ne!(Some(token), old["webhook_triggers"][0]["token"].as_str());
    assert!(token.len() >= 32, "{token}");
    let mut same = copy.clone();
    same["webhook_triggers"][0]["token"] = old["webhook_triggers"][0]["token"].clone();
    same["name"] = json!("crm_old");
    assert_eq!(same, old);
}

#[tokio::test]
async fn import_without_replace_refuses_an_existing_project() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(FIXTURE).await.expect("fixture");
    let doc = export(&c, "crm").await;
    let version: i64 = scalar(&c, "SELECT version FROM sync.project").await;
    let (code, msg, hint) = import_error(&c, &doc, false).await;
    assert_eq!(code, "42710");
    assert_eq!(msg, "project \"crm\" already exists");
    assert!(hint.contains("replace => true"), "{hint}");
    // The default is no replace, too.
    let e = c
        .query_one("SELECT sync_import_project($1)", &[&doc])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).0, "42710");
    let after: i64 = scalar(&c, "SELECT version FROM sync.project").await;
    assert_eq!(after, version);
}

#[tokio::test]
async fn replace_updates_in_place_and_keeps_what_belongs_to_the_installation() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(FIXTURE).await.expect("fixture");
    let doc = export(&c, "crm").await;
    let ids = |table: &str| {
        format!("SELECT string_agg(name || '=' || id, ',' ORDER BY name) FROM sync.{table}")
    };
    let (pid, push_id): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT p.id, t.id FROM sync.project p JOIN sync.task t ON t.project_id = p.id AND t.name = 'push'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    let buttons_before: String = scalar(&c, &ids("button_trigger")).await;
    // What users and the runtime did since: a value set, a secret rotated, a job queued,
    // a cron run.
    c.batch_execute(
        "UPDATE sync.project_param SET value = 'mine' WHERE key = 'BASE';
         UPDATE sync.project_secret SET value = 'rotated' WHERE key = 'TOKEN';
         UPDATE sync.cron_trigger SET next_run_at = '2031-06-01 00:00+00', calls_left = 2 WHERE name = 'every_night';
         SELECT sync_run_button('crm', 'sync_now');",
    )
    .await
    .unwrap();
    let token: String = scalar(&c, "SELECT token FROM sync.webhook_trigger").await;

    // Re-importing the same definition changes nothing, not even the version.
    let version: i64 = scalar(&c, "SELECT version FROM sync.project").await;
    assert_eq!(import(&c, &doc, true).await, pid);
    let same: i64 = scalar(&c, "SELECT version FROM sync.project").await;
    assert_eq!(same, version);
    let value: String = scalar(
        &c,
        "SELECT value FROM sync.project_param WHERE key = 'BASE'",
    )
    .await;
    assert_eq!(value, "mine");

    // A new version of the project.
    let mut new = doc.clone();
    new["common_code"] = json!("COMMON = 3");
    new["params"] = json!([
        {"key": "BASE", "value": "http://other.test", "initial_value": "http://api2.test",
         "description": "API root", "url": null},
        {"key": "PAGE", "value": null, "initial_value": "50", "description": null, "url": null}
    ]);
    new["texts"] = json!([{"key": "HELLO", "lang": "en_US", "value": "Hi"}]);
    new["secrets"] = json!([{"key": "API_KEY"}, {"key": "TOKEN"}]);
    // nightly goes, report comes, push changes.
    let mut push = doc["tasks"][2].clone();
    push["code"] = json!("def handle_db(records):\n    return len(records)\n");
    new["tasks"] = json!([
        doc["tasks"][0],
        push,
        {"name": "report", "code": "def handle_button(): pass", "active": true, "time_limit": "00:05:00"}
    ]);
    // nightly is gone (with its crons); sync_now becomes a cron of report, a new button.
    new["cron_triggers"] = json!([
        {"name": "sync_now", "task": "report", "active": true, "interval": "00:10:00",
         "next_run_at": "2030-01-01T00:00:00+00:00", "calls_left": -1, "run_as": null}
    ]);
    new["db_triggers"][1]["apply_on"] = json!("NEW.state IN ('done', 'shipped')");
    new["webhook_triggers"][0]["content_type"] = json!("json");
    new["webhook_triggers"][0]["token"] = json!("an-other-token-from-elsewhere-0001");
    new["button_triggers"] = json!([
        {"name": "report_now", "task": "report", "active": true, "description": null}
    ]);
    // The admin-only part needs an admin: the superuser here.
    assert_eq!(import(&c, &new, true).await, pid);

    let got = export(&c, "crm").await;
    let mut expected = new.clone();
    // Kept: the user's param value, the webhook's token.
    expected["params"][0]["value"] = json!("mine");
    expected["params"][1]["value"] = json!("50");
    expected["webhook_triggers"][0]["token"] = json!(token);
    // A document without schedule and timezone (written before they existed) imports.
    expected["cron_triggers"][0]["schedule"] = Value::Null;
    expected["cron_triggers"][0]["timezone"] = json!("UTC");
    assert_eq!(got, expected);

    // Same project, same task row for push (with its job), same db trigger rows.
    let push_now: i64 = scalar(&c, "SELECT id FROM sync.task WHERE name = 'push'").await;
    assert_eq!(push_now, push_id);
    let jobs: i64 = scalar(
        &c,
        &format!(
            "SELECT count(*) FROM sync.job WHERE task_id = {push_id} AND trigger_name = 'sync_now'"
        ),
    )
    .await;
    assert_eq!(jobs, 1, "the job of a kept task stays");
    assert_ne!(
        scalar::<String>(&c, &ids("button_trigger")).await,
        buttons_before
    );
    // Secret values: kept for TOKEN, none for the new API_KEY, PASSWORD removed.
    assert_eq!(
        strings(
            &c,
            "SELECT key || '=' || coalesce(value, '<null>') FROM sync.project_secret ORDER BY key"
        )
        .await,
        ["API_KEY=<null>", "TOKEN=rotated"]
    );
    let signing: String = scalar(&c, "SELECT signing_secret FROM sync.webhook_trigger").await;
    assert_eq!(signing, "hmac-key");
    // The changed db trigger was reinstalled with its new WHEN clause.
    let when: String = scalar(
        &c,
        "SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN sync.db_trigger d
           ON t.tgname = 'pg_sync_dbt_' || d.id || '_upd' WHERE d.name = 'order_done'",
    )
    .await;
    assert!(when.contains("'shipped'"), "{when}");
    assert_eq!(
        strings(
            &c,
            "SELECT kind || ':' || name FROM sync.trigger_name ORDER BY 1"
        )
        .await,
        [
            "button:report_now",
            "cron:sync_now",
            "db:closed_later",
            "db:order_done",
            "webhook:incoming"
        ]
    );

    // A kept cron keeps its schedule; the document's is for new crons.
    let mut with_cron = expected.clone();
    with_cron["cron_triggers"][0]["next_run_at"] = json!("2040-01-01T00:00:00+00:00");
    with_cron["cron_triggers"][0]["calls_left"] = json!(7);
    with_cron["cron_triggers"][0]["interval"] = json!("00:20:00");
    import(&c, &with_cron, true).await;
    let cron = &export(&c, "crm").await["cron_triggers"][0];
    assert_eq!(cron["interval"], json!("00:20:00"));
    assert_eq!(cron["next_run_at"], json!("2030-01-01T00:00:00+00:00"));
    assert_eq!(cron["calls_left"], json!(-1));
}

#[tokio::test]
async fn invalid_documents_are_refused_naming_the_field() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(FIXTURE).await.expect("fixture");
    let mut good = export(&c, "crm").await;
    good["name"] = json!("copy");
    good["webhook_triggers"][0]["token"] = Value::Null;

    let edit = |f: &dyn Fn(&mut Value)| {
        let mut d = good.clone();
        f(&mut d);
        d
    };
    let cases: Vec<(Value, &str)> = vec![
        (json!([1, 2]), "it must be a JSON object, not [1, 2]"),
        (json!("text"), "it must be a JSON object"),
        (
            edit(&|d| {
                d.as_object_mut().unwrap().remove("pg_sync_export");
            }),
            "pg_sync_export (the format version) is missing",
        ),
        (
            edit(&|d| d["pg_sync_export"] = json!(2)),
            "pg_sync_export is 2, a format version this pg_sync does not know",
        ),
        (
            edit(&|d| {
                d.as_object_mut().unwrap().remove("name");
            }),
            "name is missing",
        ),
        (
            edit(&|d| d["name"] = json!(7)),
            "name must be a string, not 7",
        ),
        (edit(&|d| d["name"] = json!("  ")), "name must not be empty"),
        (
            edit(&|d| d["active"] = json!("yes")),
            "active must be true or false, not \"yes\"",
        ),
        (
            edit(&|d| d["active"] = Value::Null),
            "active must not be null",
        ),
        (
            edit(&|d| d["eval_context"] = json!(["ok", 1])),
            "eval_context must be an array of strings",
        ),
        (
            edit(&|d| d["owner"] = json!("me")),
            "owner is not a known field",
        ),
        (
            edit(&|d| d["tasks"] = json!({"a": 1})),
            "tasks must be an array",
        ),
        (
            edit(&|d| d["tasks"][1] = json!("nightly")),
            "tasks[1] must be a JSON object, not \"nightly\"",
        ),
        (
            edit(&|d| d["tasks"][0]["code"] = json!(42)),
            "tasks[0].code must be a string, not 42",
        ),
        (
            edit(&|d| {
                d["tasks"][2].as_object_mut().unwrap().remove("name");
            }),
            "tasks[2].name is missing",
        ),
        (
            edit(&|d| d["tasks"][0]["cod"] = json!("x")),
            "tasks[0].cod is not a known field",
        ),
        (
            edit(&|d| d["tasks"][0]["time_limit"] = json!("soon")),
            "tasks[0].time_limit must be an interval such as \"5 minutes\", not \"soon\"",
        ),
        (
            edit(&|d| d["params"][0]["value"] = json!(5)),
            "params[0].value must be a string, not 5",
        ),
        (
            edit(&|d| d["texts"][2]["lang"] = Value::Null),
            "texts[2].lang must not be null",
        ),
        (
            edit(&|d| d["secrets"][0] = json!({"key": "PASSWORD", "value": "x"})),
            "secrets[0].value is not a known field",
        ),
        (
            edit(&|d| d["cron_triggers"][0]["calls_left"] = json!(1.5)),
            "cron_triggers[0].calls_left must be an integer, not 1.5",
        ),
        (
            edit(&|d| d["cron_triggers"][1]["next_run_at"] = json!("tomorrow-ish")),
            "cron_triggers[1].next_run_at must be a timestamp with time zone",
        ),
        (
            edit(&|d| d["cron_triggers"][1]["task"] = json!("ghost")),
            "cron_triggers[1].task is \"ghost\", which is not the name of a task in tasks",
        ),
        (
            edit(&|d| d["db_triggers"][0]["event"] = json!("insert")),
            "db_triggers[0].event is \"insert\", not one of create, update",
        ),
        (
            edit(&|d| d["db_triggers"][1]["date_column"] = json!("closed_at")),
            "db_triggers[1].date_column is required for event \"timed\" and only allowed for it",
        ),
        (
            edit(&|d| d["db_triggers"][1]["watched_columns"] = json!("state")),
            "db_triggers[1].watched_columns must be an array of strings, not \"state\"",
        ),
        (
            edit(&|d| d["db_triggers"][1]["table_name"] = json!("public.nope")),
            "db_triggers[1].table_name is \"public.nope\", a table that does not exist",
        ),
        (
            edit(&|d| d["db_triggers"][1]["table_name"] = json!("a.b.c.d")),
            "db_triggers[1].table_name is \"a.b.c.d\", not a table name",
        ),
        (
            edit(&|d| d["webhook_triggers"][0]["content_type"] = json!("xml")),
            "webhook_triggers[0].content_type is \"xml\", not \"json\" or \"form\"",
        ),
        (
            edit(&|d| d["tasks"][2]["name"] = json!("hook")),
            "tasks[2].name repeats tasks[0].name (\"hook\")",
        ),
        (
            edit(&|d| d["button_triggers"][0]["name"] = json!("hourly")),
            "button_triggers[0].name repeats cron_triggers[1].name (\"hourly\")",
        ),
        (
            edit(&|d| d["texts"][2]["lang"] = json!("en_US")),
            "texts[2] repeats texts[1] ([\"HELLO\", \"en_US\"])",
        ),
    ];
    for (doc, expected) in &cases {
        let (code, msg, _) = import_error(&c, doc, false).await;
        let want = if expected.contains("a table that does not exist") {
            "42P01"
        } else {
            "22023"
        };
        assert_eq!(code, want, "{doc}: {msg}");
        assert!(msg.contains(expected), "expected {expected:?} in {msg:?}");
    }
    // The good one imports; none of the bad ones left anything behind.
    import(&c, &good, false).await;
    let names = strings(&c, "SELECT name FROM sync.project ORDER BY name").await;
    assert_eq!(names, ["copy", "crm"]);

    // All or nothing: a db trigger the installer refuses (late in the import) leaves
    // no project, task or trigger.
    let mut late = good.clone();
    late["name"] = json!("late");
    late["db_triggers"][1]["apply_on"] = json!("NEW.no_such_column = 1");
    let (code, msg, _) = import_error(&c, &late, false).await;
    assert_eq!(code, "42703", "{msg}");
    assert!(msg.contains("order_done"), "{msg}");
    let n: i64 = scalar(
        &c,
        "SELECT (SELECT count(*) FROM sync.project) * 1000 + (SELECT count(*) FROM sync.task)",
    )
    .await;
    assert_eq!(n, 2006);
}

#[tokio::test]
async fn imported_db_trigger_is_installed_and_enqueues_jobs() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute("CREATE TABLE items (id int PRIMARY KEY, state text)")
        .await
        .unwrap();
    let doc = json!({
        "pg_sync_export": 1,
        "name": "shop",
        "active": true,
        "tasks": [{"name": "push", "code": "def handle_db(records): pass"}],
        // A hand-written document: unqualified table, defaults left out.
        "db_triggers": [{"name": "new_items", "task": "push", "table_name": "items", "event": "create",
                         "apply_on": "NEW.state = 'new'"}]
    });
    let pid = import(&c, &doc, false).await;
    let triggers = strings(
        &c,
        "SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'items'::regclass AND NOT tgisinternal ORDER BY 1",
    )
    .await;
    assert_eq!(triggers.len(), 3, "{triggers:?}");
    c.batch_execute("INSERT INTO items VALUES (1, 'new'), (2, 'old'), (3, 'new')")
        .await
        .unwrap();
    let row = c
        .query_one(
            "SELECT project_id, trigger_name, args FROM sync.job WHERE trigger_kind = 'db'",
            &[],
        )
        .await
        .expect("one db job");
    assert_eq!(row.get::<_, i64>(0), pid);
    assert_eq!(row.get::<_, String>(1), "new_items");
    let args: Value = row.get(2);
    assert_eq!(args["keys"], json!([1, 3]));
    assert_eq!(args["table"], json!("public.items"));

    // Its export has every field, with the table qualified; replacing with the
    // trigger switched off removes the PostgreSQL triggers.
    let mut full = export(&c, "shop").await;
    assert_eq!(full["db_triggers"][0]["table_name"], json!("public.items"));
    assert_eq!(full["db_triggers"][0]["chunk_size"], json!(1000));
    full["db_triggers"][0]["active"] = json!(false);
    import(&c, &full, true).await;
    let left: i64 = scalar(
        &c,
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'items'::regclass AND NOT tgisinternal",
    )
    .await;
    assert_eq!(left, 0);
}

#[tokio::test]
async fn export_refuses_a_db_trigger_whose_table_was_dropped() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(FIXTURE).await.expect("fixture");
    c.batch_execute("DROP TABLE orders").await.unwrap();
    let e = c
        .query_one("SELECT sync_export_project('crm')", &[])
        .await
        .unwrap_err();
    let db_err = e.as_db_error().unwrap();
    assert_eq!(db_err.code().code(), "55000");
    assert!(
        db_err.message().contains("closed_later") && db_err.message().contains("public.orders"),
        "{}",
        db_err.message()
    );
    assert!(db_err
        .hint()
        .unwrap_or("")
        .contains("UPDATE sync.db_trigger"));
}

#[tokio::test]
async fn roles_export_and_import_with_their_own_rights() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(FIXTURE).await.expect("fixture");
    let admin_doc = export(&c, "crm").await;

    // sync_user exports (secret keys are readable, values and webhook tokens are not)
    // but imports nothing.
    c.batch_execute("SET ROLE sync_user").await.unwrap();
    let mut without_tokens = admin_doc.clone();
    without_tokens["webhook_triggers"][0]["token"] = Value::Null;
    assert_eq!(export(&c, "crm").await, without_tokens);
    c.batch_execute("RESET ROLE; SET ROLE sync_developer")
        .await
        .unwrap();
    assert_eq!(export(&c, "crm").await, admin_doc);
    c.batch_execute("RESET ROLE; SET ROLE sync_user")
        .await
        .unwrap();
    let mut copy = admin_doc.clone();
    copy["name"] = json!("copy");
    copy["webhook_triggers"][0]["token"] = Value::Null;
    assert_eq!(import_error(&c, &copy, false).await.0, "42501");
    c.batch_execute("RESET ROLE").await.unwrap();

    // Roles without pg_sync roles may not even export.
    c.batch_execute(
        "DO $$ BEGIN CREATE ROLE pio_outsider; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         SET ROLE pio_outsider",
    )
    .await
    .unwrap();
    let e = c
        .query_one("SELECT sync_export_project('crm')", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).0, "42501");
    c.batch_execute("RESET ROLE").await.unwrap();

    // sync_developer: a project without admin-only parts, db triggers included (with
    // the TRIGGER privilege on the table, as for an INSERT; SELECT too, the timed one
    // schedules the rows already there).
    let mut dev = copy.clone();
    dev["name"] = json!("dev");
    dev["core_code"] = json!("");
    dev["eval_context"] = json!([]);
    dev["run_as"] = Value::Null;
    dev["secrets"] = json!([]);
    dev["cron_triggers"][0]["run_as"] = Value::Null;
    c.batch_execute("SET ROLE sync_developer").await.unwrap();
    let (code, msg, _) = import_error(&c, &dev, false).await;
    assert_eq!(code, "42501", "{msg}");
    assert!(msg.contains("permission denied to watch table"), "{msg}");
    c.batch_execute(
        "RESET ROLE; GRANT SELECT, TRIGGER ON orders TO sync_developer; SET ROLE sync_developer",
    )
    .await
    .unwrap();
    import(&c, &dev, false).await;
    assert_eq!(
        export(&c, "dev").await["db_triggers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // ...but not core_code, eval_context, run_as, secrets or a cron's run_as.
    for (field, value, expected) in [
        (
            "core_code",
            json!("evil()"),
            "permission denied to set core_code of project \"dev2\"",
        ),
        (
            "eval_context",
            json!(["example"]),
            "permission denied to set eval_context of project \"dev2\"",
        ),
        (
            "run_as",
            json!("sync_admin"),
            "permission denied to set run_as of project \"dev2\"",
        ),
        (
            "secrets",
            json!([{"key": "K"}]),
            "permission denied to add secrets K to project \"dev2\"",
        ),
    ] {
        let mut d = dev.clone();
        d["name"] = json!("dev2");
        d["webhook_triggers"] = json!([]);
        d[field] = value;
        let (code, msg, hint) = import_error(&c, &d, false).await;
        assert_eq!((code.as_str(), msg.as_str()), ("42501", expected));
        assert!(hint.contains("admin-only"), "{hint}");
    }
    let mut d = dev.clone();
    d["name"] = json!("dev2");
    d["webhook_triggers"] = json!([]);
    d["cron_triggers"][0]["run_as"] = json!("sync_user");
    let (code, msg, _) = import_error(&c, &d, false).await;
    assert_eq!(code, "42501");
    assert!(msg.contains("run_as of cron triggers every_night"), "{msg}");

    // Replacing the admin's project: fine while its admin-only parts stay as they are.
    let mut same = admin_doc.clone();
    same["common_code"] = json!("COMMON = 99");
    same["tasks"][0]["code"] = json!("def handle_webhook(httprequest): return {'ok': 1}");
    import(&c, &same, true).await;
    for (field, value, expected) in [
        (
            "core_code",
            json!("evil()"),
            "permission denied to change core_code of project \"crm\"",
        ),
        (
            "run_as",
            Value::Null,
            "permission denied to change run_as of project \"crm\"",
        ),
        (
            "secrets",
            json!([{"key": "TOKEN"}]),
            "permission denied to remove secrets PASSWORD of project \"crm\"",
        ),
    ] {
        let mut d = same.clone();
        d[field] = value;
        let (code, msg, _) = import_error(&c, &d, true).await;
        assert_eq!((code.as_str(), msg.as_str()), ("42501", expected));
    }
    c.batch_execute("RESET ROLE").await.unwrap();
    let left: String = scalar(
        &c,
        "SELECT core_code || '|' || common_code || '|' || run_as FROM sync.project WHERE name = 'crm'",
    )
    .await;
    assert_eq!(left, "CORE = 1|COMMON = 99|sync_user");

    // sync_admin: everything.
    c.batch_execute("GRANT TRIGGER ON orders TO sync_admin; SET ROLE sync_admin")
        .await
        .unwrap();
    let mut all = admin_doc.clone();
    all["core_code"] = json!("CORE = 2");
    all["secrets"] = json!([{"key": "NEW_KEY"}]);
    all["cron_triggers"][1]["run_as"] = json!("sync_user");
    import(&c, &all, true).await;
    let got = export(&c, "crm").await;
    assert_eq!(got["core_code"], json!("CORE = 2"));
    assert_eq!(got["secrets"], json!([{"key": "NEW_KEY"}]));
    assert_eq!(got["cron_triggers"][1]["run_as"], json!("sync_user"));
    c.batch_execute("RESET ROLE").await.unwrap();
}

/// Run `sync_worker ARGS` on `url`, with `stdin`; (exit code, stdout, stderr).
fn worker(url: Option<&str>, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(worker_bin());
    if let Some(url) = url {
        cmd.arg("--database-url").arg(url);
    }
    let mut child = cmd
        .args(args)
        .env_remove("DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sync_worker");
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn cli_export_and_import_through_the_worker_binary() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(FIXTURE).await.expect("fixture");
    let url = Some(db.url.as_str());
    let sql_doc = export(&c, "crm").await;

    // export: the document, pretty, on stdout.
    let (code, out, err) = worker(url, &["export", "crm"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("{\n  \""), "not pretty: {out}");
    let doc: Value = serde_json::from_str(&out).expect("export prints JSON");
    assert_eq!(doc, sql_doc);
    let file = std::path::PathBuf::from(std::env::var("PG_SYNC_TEST_TMP").unwrap_or("/tmp".into()))
        .join(format!("{}-crm.json", db.name));
    std::fs::write(&file, &out).unwrap();
    let file_arg = file.to_str().unwrap();

    // import FILE: refused while the project exists, then creates it again.
    let (code, _, err) = worker(url, &["import", file_arg], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("project \"crm\" already exists")
            && err.contains("SQLSTATE 42710")
            && err.contains("HINT: Pass replace => true"),
        "{err}"
    );
    c.batch_execute("DELETE FROM sync.project").await.unwrap();
    let (code, out, err) = worker(url, &["import", file_arg], None);
    assert_eq!(code, 0, "{err}");
    let printed: Value = serde_json::from_str(out.trim()).expect("import prints JSON");
    let id: i64 = scalar(&c, "SELECT id FROM sync.project WHERE name = 'crm'").await;
    assert_eq!(printed, json!({"project_id": id, "name": "crm"}));
    assert_eq!(export(&c, "crm").await, sql_doc);

    // import - --replace: the document from stdin, updated in place.
    let mut changed = sql_doc.clone();
    changed["common_code"] = json!("COMMON = 7");
    let (code, out, err) = worker(
        url,
        &["import", "-", "--replace"],
        Some(&changed.to_string()),
    );
    assert_eq!(code, 0, "{err}");
    let printed: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(printed["project_id"], json!(id));
    assert_eq!(export(&c, "crm").await, changed);

    // Errors: missing file, not JSON, invalid document, unknown project, no URL.
    let (code, _, err) = worker(url, &["import", "/nonexistent/crm.json"], None);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read /nonexistent/crm.json"), "{err}");
    let (code, _, err) = worker(url, &["import", "-"], Some("{\"pg_sync_export\": 1,"));
    assert_eq!(code, 2);
    assert!(
        err.contains("standard input is not a JSON document"),
        "{err}"
    );
    let (code, _, err) = worker(
        url,
        &["import", "-"],
        Some("{\"pg_sync_export\": 1, \"name\": 3}"),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("name must be a string, not 3") && err.contains("SQLSTATE 22023"),
        "{err}"
    );
    let (code, out, err) = worker(url, &["export", "nope"], None);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("project \"nope\" does not exist"), "{err}");
    let (code, _, err) = worker(None, &["export", "crm"], None);
    assert_eq!(code, 2);
    assert!(err.contains("DATABASE_URL"), "{err}");
    let _ = std::fs::remove_file(&file);
}

/// `sync_worker check-code`: an exported document checks clean; broken layers are
/// reported at their line, in the order executors compile them; no database needed.
#[tokio::test]
async fn cli_check_code_reports_each_layer_at_its_line() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(FIXTURE).await.expect("fixture");
    let mut doc = export(&c, "crm").await;
    let (code, out, err) = worker(None, &["check-code", "-"], Some(&doc.to_string()));
    assert_eq!((code, out.as_str()), (0, ""), "{err}");

    doc["core_code"] = json!("import json\nCORE = (\n");
    doc["common_code"] = json!("VAT = 0.2\nimport os\n");
    doc["tasks"][0]["code"] = json!("def handle_db(records):\n    return records.__class__\n");
    let (code, out, err) = worker(None, &["check-code", "-"], Some(&doc.to_string()));
    assert_eq!(code, 1, "{err}");
    let task = doc["tasks"][0]["name"].as_str().unwrap().to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("<core_code>:2:"), "{out}");
    assert!(
        lines[1].starts_with("<common_code>:2: import is not allowed"),
        "{out}"
    );
    assert!(
        lines[2].starts_with(&format!("<task {task}>:2: names starting with '__'"))
            || lines[2].starts_with(&format!("<task {task}>:2: access to private attribute")),
        "{out}"
    );

    let (code, out, _) = worker(None, &["check-code", "--json", "-"], Some(&doc.to_string()));
    assert_eq!(code, 1);
    let problems: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(problems[0]["layer"], json!("<core_code>"));
    assert_eq!(problems[0]["line"], json!(2));

    let (code, _, err) = worker(None, &["check-code", "-"], Some("{\"tasks\": "));
    assert_eq!(code, 2);
    assert!(
        err.contains("standard input is not a JSON document"),
        "{err}"
    );
    let (code, _, err) = worker(None, &["check-code", "/nonexistent/crm.json"], None);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read /nonexistent/crm.json"), "{err}");
}

#[tokio::test]
async fn readme_examples_run() {
    // The SQL blocks of the "Projects: export and import" page (docs/export-import.md),
    // in order; a statement commented `-- ERROR <sqlstate>` must fail with that SQLSTATE.
    // Its JSON block is the export of the project the first block creates.
    let section = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/export-import.md"
    ))
    .expect("docs/export-import.md");
    assert!(
        section.starts_with("# Projects: export and import\n"),
        "docs/export-import.md is the export and import page"
    );
    let section = section.as_str();
    let block = |fence: &str, i: usize| -> String {
        let b = section.split(fence).nth(i + 1).expect("a block");
        b[..b.find("```").expect("closed block")].to_string()
    };
    let db = TestDb::new().await;
    let c = db.connect().await;
    let sql_blocks = section.matches("```sql\n").count();
    assert!(sql_blocks >= 3, "{sql_blocks}");
    for i in 0..sql_blocks {
        let mut current = String::new();
        for line in block("```sql\n", i).lines() {
            current.push_str(line);
            current.push('\n');
            // A statement ends with `;`, maybe followed by a comment.
            if !line
                .split("--")
                .next()
                .unwrap_or("")
                .trim_end()
                .ends_with(';')
            {
                continue;
            }
            let sql = std::mem::take(&mut current);
            match sql.split("-- ERROR ").nth(1) {
                Some(code) => {
                    expect_error(&c, &sql, &code.trim()[..5]).await;
                }
                None => {
                    if let Err(e) = c.batch_execute(&sql).await {
                        panic!(
                            "docs/export-import.md example failed: {sql}{}",
                            describe(&e)
                        );
                    }
                }
            }
            if sql.contains("= (SELECT doc FROM saved)") {
                let same: bool = scalar(&c, sql.trim().trim_end_matches(|ch| ch != ';')).await;
                assert!(same, "{sql}");
            }
        }
        assert!(current.trim().is_empty(), "unterminated: {current}");
        if i == 0 {
            let shown: Value = serde_json::from_str(&block("```json\n", 0)).expect("JSON block");
            assert_eq!(export(&c, "billing").await, shown);
        }
    }
    let left: String = scalar(
        &c,
        "SELECT common_code || ' ' || (SELECT value FROM sync.project_param) FROM sync.project",
    )
    .await;
    assert_eq!(left, "VAT = 0.21 https://api.internal.test");
}
