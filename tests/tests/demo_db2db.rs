// The db2db demo (sql/demo/db2db.json) as shipped, against a second database: a new
// partner is copied and linked, remote changes come back with the cron, the button copies
// every partner without a copy through add_job children, and nothing is copied twice.
use chrono::{DateTime, Utc};
use pg_sync_tests::demos::{run_sql_file, Demo};
use pg_sync_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

/// (remote id, sync_date) of the partner's link, if it has one.
async fn link_of(demo: &Demo, partner: i64) -> Option<(i64, DateTime<Utc>)> {
    demo.client
        .query_opt(
            "SELECT (CASE WHEN system1 = '__external__' THEN ref1 ELSE ref2 END)::bigint, sync_date
             FROM sync_search_links('db2db_partner', 'partner'::regclass, ARRAY[$1::bigint])",
            &[&partner],
        )
        .await
        .expect("search links")
        .map(|r| (r.get(0), r.get(1)))
}

/// (name, email, updated_at) of a remote partner.
async fn remote_row(remote: &Client, id: i64) -> (String, Option<String>, DateTime<Utc>) {
    let r = remote
        .query_one(
            "SELECT name, email, updated_at FROM partner WHERE id = $1",
            &[&id],
        )
        .await
        .expect("remote partner");
    (r.get(0), r.get(1), r.get(2))
}

async fn remote_count(remote: &Client) -> i64 {
    remote
        .query_one("SELECT count(*) FROM partner", &[])
        .await
        .expect("count remote partners")
        .get(0)
}

async fn local_name(demo: &Demo, id: i64) -> (String, Option<String>) {
    let r = demo
        .client
        .query_one("SELECT name, email FROM partner WHERE id = $1", &[&id])
        .await
        .expect("local partner");
    (r.get(0), r.get(1))
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_i64().expect("an id"))
        .collect()
}

#[tokio::test]
async fn db2db_demo_copies_pulls_back_and_pushes_all_once() {
    let remote_db = TestDb::new().await;
    let remote = remote_db.connect().await;
    run_sql_file(&remote, "db2db_remote.sql").await;
    // The remote setup is idempotent, like the local one.
    run_sql_file(&remote, "db2db_remote.sql").await;

    let mut demo = Demo::load("db2db", &["db2db_setup.sql", "db2db_setup.sql"]).await;
    // Partners from before the project was switched on: only the button copies them.
    demo.sql(
        "INSERT INTO partner (name, email)
         SELECT 'Old ' || g, 'old' || g || '@example.com' FROM generate_series(1, 120) g",
    )
    .await;
    demo.secret("POSTGRES_DSN", &remote_db.url).await;
    demo.activate().await;
    demo.start_worker().await;

    // The cron's first run, due at once, finds nothing linked.
    let first = demo.run_cron("CHECK_REMOTE_PARTNERS").await;
    assert_eq!(first, json!({"pulled": []}));

    // 1. A new partner is copied by the db trigger and linked to its copy; the link's
    // sync_date is the copy's updated_at.
    let ada: i64 = demo
        .client
        .query_one(
            "INSERT INTO partner (name, email) VALUES ('Ada Lovelace', 'ada@example.com') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    wait_for("Ada's copy", Duration::from_secs(20), || async {
        link_of(&demo, ada).await.is_some()
    })
    .await;
    let (ada_copy, synced) = link_of(&demo, ada).await.unwrap();
    let (name, email, updated_at) = remote_row(&remote, ada_copy).await;
    assert_eq!(
        (name.as_str(), email.as_deref()),
        ("Ada Lovelace", Some("ada@example.com"))
    );
    assert_eq!(synced, updated_at);
    let origin: String = remote
        .query_one("SELECT origin_ref FROM partner WHERE id = $1", &[&ada_copy])
        .await
        .unwrap()
        .get(0);
    assert_eq!(origin, format!("pg_sync:{ada}"));
    let job = demo
        .client
        .query_one(
            "SELECT trigger_kind, trigger_name, state, result FROM sync.job WHERE handler = 'handle_db'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(job.get::<_, String>(1), "LOCAL_PARTNER_CREATED");
    assert_eq!(job.get::<_, String>(2), "done");
    assert_eq!(
        job.get::<_, Value>(3),
        json!({"created": [ada], "updated": [], "skipped": []})
    );

    // A second new partner, left unchanged remotely below.
    let bob: i64 = demo
        .client
        .query_one(
            "INSERT INTO partner (name) VALUES ('Bob') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    wait_for("Bob's copy", Duration::from_secs(20), || async {
        link_of(&demo, bob).await.is_some()
    })
    .await;
    let (bob_copy, bob_synced) = link_of(&demo, bob).await.unwrap();

    // 2. Nothing changed remotely: the cron pulls nothing.
    assert_eq!(
        demo.run_cron("CHECK_REMOTE_PARTNERS").await,
        json!({"pulled": []})
    );

    // A remote change whose updated_at is older than the link's sync_date is not pulled
    // (the writer set updated_at itself)...
    remote
        .execute(
            "UPDATE partner SET email = 'stale@example.com', updated_at = updated_at - interval '1 hour' WHERE id = $1",
            &[&ada_copy],
        )
        .await
        .unwrap();
    assert_eq!(
        demo.run_cron("CHECK_REMOTE_PARTNERS").await,
        json!({"pulled": []})
    );
    assert_eq!(
        local_name(&demo, ada).await,
        (
            "Ada Lovelace".to_string(),
            Some("ada@example.com".to_string())
        )
    );

    // ... a change with a newer updated_at is, and its link's sync_date moves to it.
    remote
        .execute(
            "UPDATE partner SET name = 'Ada King', email = 'ada@king.example' WHERE id = $1",
            &[&ada_copy],
        )
        .await
        .unwrap();
    let (_, _, changed_at) = remote_row(&remote, ada_copy).await;
    assert!(changed_at > synced);
    let pulled = demo.run_cron("CHECK_REMOTE_PARTNERS").await;
    assert_eq!(pulled, json!({"pulled": [ada_copy.to_string()]}));
    assert_eq!(
        local_name(&demo, ada).await,
        ("Ada King".to_string(), Some("ada@king.example".to_string()))
    );
    assert_eq!(link_of(&demo, ada).await, Some((ada_copy, changed_at)));
    assert_eq!(link_of(&demo, bob).await, Some((bob_copy, bob_synced)));
    // Writing the pulled values locally copies nothing back (the db trigger is on
    // create), and the next run finds nothing new.
    assert_eq!(
        demo.run_cron("CHECK_REMOTE_PARTNERS").await,
        json!({"pulled": []})
    );
    assert_eq!(
        demo.count("SELECT count(*) FROM sync.job WHERE handler = 'handle_db'")
            .await,
        2
    );

    // 3. The button copies the 120 older partners, in child jobs of 50.
    let old: Vec<i64> = demo
        .client
        .query(
            "SELECT id FROM partner WHERE name LIKE 'Old %' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (button_job, result) = demo.press("PUSH_ALL_PARTNERS").await;
    assert_eq!(ids(&result["queued"]), old);
    demo.idle().await;
    let children = demo
        .client
        .query(
            "SELECT handler, state, args, result FROM sync.job WHERE parent_id = $1 ORDER BY id",
            &[&button_job],
        )
        .await
        .unwrap();
    assert_eq!(children.len(), 3, "120 partners, 50 per job");
    let mut created = Vec::new();
    for (child, size) in children.iter().zip([50, 50, 20]) {
        assert_eq!(child.get::<_, String>(0), "push_chunk");
        assert_eq!(child.get::<_, String>(1), "done");
        let args: Value = child.get(2);
        assert_eq!(args["args"][0].as_array().unwrap().len(), size);
        let result: Value = child.get(3);
        assert_eq!(result["updated"], json!([]));
        created.extend(ids(&result["created"]));
    }
    assert_eq!(created, old);
    assert_eq!(remote_count(&remote).await, 122);
    for id in [old[0], old[77], old[119]] {
        let (copy, _) = link_of(&demo, id).await.expect("linked");
        let (name, email, _) = remote_row(&remote, copy).await;
        let (lname, lemail) = local_name(&demo, id).await;
        assert_eq!((name, email), (lname, lemail));
    }

    // 4. A second press copies nothing: everything is linked.
    let (again, result) = demo.press("PUSH_ALL_PARTNERS").await;
    assert_eq!(result, json!({"queued": []}));
    assert_eq!(
        demo.count(&format!(
            "SELECT count(*) FROM sync.job WHERE parent_id = {again}"
        ))
        .await,
        0
    );
    // A child job that gets partners linked since it was queued skips them.
    let late = demo
        .client
        .query_one(
            "SELECT sync.add_job(t.project_id, t.id, 'push_chunk', $1::jsonb)
             FROM sync.task t WHERE t.name = 'push' AND t.project_id = $2",
            &[&json!({"args": [[ada, old[3]]]}), &demo.id],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(
        demo.done(late).await,
        json!({"created": [], "updated": [], "skipped": [ada, old[3]]})
    );
    // A partner that lost its link is linked again to the copy it had: a push tried
    // again after a failure does not copy twice either.
    let (copy, _) = link_of(&demo, old[5]).await.unwrap();
    demo.client
        .execute(
            "SELECT sync_unlink(ARRAY(SELECT id FROM sync_search_links('db2db_partner', 'partner'::regclass, ARRAY[$1::bigint])))",
            &[&old[5]],
        )
        .await
        .unwrap();
    let (_, result) = demo.press("PUSH_ALL_PARTNERS").await;
    assert_eq!(ids(&result["queued"]), vec![old[5]]);
    demo.idle().await;
    assert_eq!(link_of(&demo, old[5]).await.map(|l| l.0), Some(copy));
    assert_eq!(remote_count(&remote).await, 122);
    let dupes: i64 = remote
        .query_one(
            "SELECT count(*) FROM (SELECT origin_ref FROM partner GROUP BY 1 HAVING count(*) > 1) d",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dupes, 0);
    assert_eq!(
        demo.count("SELECT count(*) FROM sync_search_links('db2db_partner', 'partner'::regclass)")
            .await,
        122
    );
    demo.no_failed_jobs().await;
}

#[tokio::test]
async fn shipped_documents_are_built_from_their_sources_and_export_back_unchanged() {
    // sql/demo/*.json are built from sql/demo/src by build.py: they must be up to date.
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(pg_sync_tests::demos::demo_file("build.py"))
        .arg("--check")
        .output()
        .expect("run build.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each document is in the export format: importing it and exporting the project gives
    // the same document (webhook tokens aside: the shipped ones are null, for fresh URLs).
    for (name, setup) in [
        ("db2db", "db2db_setup.sql"),
        ("github_trello", "github_trello_setup.sql"),
        ("telegram", "telegram_setup.sql"),
    ] {
        let demo = Demo::load(name, &[setup]).await;
        let path = pg_sync_tests::demos::demo_file(&format!("{name}.json"));
        let shipped: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .expect("a JSON document");
        let mut exported: Value = demo
            .client
            .query_one("SELECT sync_export_project($1)", &[&name])
            .await
            .unwrap()
            .get(0);
        for hook in exported["webhook_triggers"].as_array_mut().unwrap() {
            assert!(hook["token"].as_str().is_some_and(|t| t.len() >= 16));
            hook["token"] = Value::Null;
        }
        assert_eq!(
            exported, shipped,
            "{name}: export differs from the document"
        );
        // Shipped switched off, secrets to be set after the import.
        assert_eq!(shipped["active"], false);
        let unset = demo
            .count(&format!(
                "SELECT count(*) FROM sync.project_secret WHERE project_id = {} AND value IS NULL",
                demo.id
            ))
            .await;
        assert_eq!(unset as usize, shipped["secrets"].as_array().unwrap().len());
    }
}

/// The "Five-minute tutorial" (docs/tutorial.md, the whole page): its SQL statements,
/// each with the rows its comment lines (`--  a | b`) say it returns (none when it has
/// no such lines).
fn tutorial_steps() -> Vec<(String, Vec<Vec<String>>)> {
    let section =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/tutorial.md"))
            .expect("docs/tutorial.md");
    assert!(
        section.starts_with("# Five-minute tutorial\n"),
        "docs/tutorial.md is the tutorial"
    );
    let mut steps: Vec<(String, Vec<Vec<String>>)> = Vec::new();
    for block in section.split("```sql\n").skip(1) {
        let block = &block[..block.find("```").expect("closed block")];
        let mut current = String::new();
        for line in block.lines() {
            if current.is_empty() && line.starts_with("--  ") {
                let cells: Vec<String> =
                    line[2..].split('|').map(|c| c.trim().to_string()).collect();
                let rows = &mut steps.last_mut().expect("a statement before its rows").1;
                match rows.last_mut() {
                    // A continuation line of a multi-line value (a traceback).
                    Some(prev) if cells[0].is_empty() => {
                        for (p, c) in prev.iter_mut().zip(&cells) {
                            if !c.is_empty() {
                                p.push('\n');
                                p.push_str(c);
                            }
                        }
                    }
                    _ => rows.push(cells),
                }
                continue;
            }
            current.push_str(line);
            current.push('\n');
            if line
                .split("--")
                .next()
                .unwrap_or("")
                .trim_end()
                .ends_with(';')
            {
                steps.push((std::mem::take(&mut current), Vec::new()));
            }
        }
        assert!(current.trim().is_empty(), "unterminated: {current}");
    }
    steps
}

#[tokio::test]
async fn readme_tutorial_runs_as_written_next_to_the_demo() {
    // The state ./scripts/demo.sh leaves: db2db loaded and on, its first cron run done,
    // one partner copied.
    let remote_db = TestDb::new().await;
    let remote = remote_db.connect().await;
    run_sql_file(&remote, "db2db_remote.sql").await;
    let mut demo = Demo::load("db2db", &["db2db_setup.sql"]).await;
    demo.secret("POSTGRES_DSN", &remote_db.url).await;
    demo.activate().await;
    demo.start_worker().await;
    wait_for("the first cron run", Duration::from_secs(20), || async {
        demo.count("SELECT count(*) FROM sync.job WHERE trigger_kind = 'cron' AND state = 'done'")
            .await
            == 1
    })
    .await;
    demo.sql("UPDATE sync.cron_trigger SET next_run_at = now() + interval '1 day'")
        .await;
    demo.sql("INSERT INTO partner (name, email) VALUES ('Ada Lovelace', 'ada@example.com')")
        .await;
    demo.idle().await;
    assert_eq!(demo.count("SELECT max(id) FROM sync.job").await, 2);

    let steps = tutorial_steps();
    assert!(steps.len() >= 15, "{} statements", steps.len());
    let mut checked = 0;
    for (sql, expected) in steps {
        // The worker runs jobs at once; the tutorial reads them after it did.
        demo.idle().await;
        let messages = demo
            .client
            .simple_query(&sql)
            .await
            .unwrap_or_else(|e| panic!("tutorial step failed: {sql}{e:?}"));
        if expected.is_empty() {
            continue;
        }
        let rows: Vec<Vec<String>> = messages
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| {
                            r.get(i)
                                .unwrap_or("")
                                .lines()
                                .map(str::trim)
                                .collect::<Vec<_>>()
                                .join("\n")
                        })
                        .collect(),
                ),
                _ => None,
            })
            .collect();
        assert_eq!(rows, expected, "the rows of {sql}");
        checked += 1;
    }
    assert_eq!(checked, 4, "statements whose rows the tutorial shows");
    demo.no_failed_jobs().await;
}
