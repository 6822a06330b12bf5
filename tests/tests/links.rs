// The link functions (sync.link: a relation tying a local row to an external record, or
// records of two external systems) against a real database: every overload of
// sync_set_link, sync_search_links and sync_get_link, sync_update_links, sync_unlink,
// the many2many rule, races between two connections, bad input, and what happens to
// links when their rows are deleted, truncated or their table dropped.
use std::time::{Duration, Instant};

use pg_sync_tests::*;

/// A linked link row as the tests look at it.
#[derive(Debug, Clone, PartialEq)]
struct Link {
    id: i64,
    relation: String,
    system1: String,
    ref1: String,
    system2: String,
    ref2: String,
    many2many: bool,
    sync_date: chrono::DateTime<chrono::Utc>,
}

impl From<&Row> for Link {
    fn from(r: &Row) -> Link {
        Link {
            id: r.get("id"),
            relation: r.get("relation"),
            system1: r.get("system1"),
            ref1: r.get("ref1"),
            system2: r.get("system2"),
            ref2: r.get("ref2"),
            many2many: r.get("many2many"),
            sync_date: r.get("sync_date"),
        }
    }
}

/// Rows of a `SELECT * FROM <set-returning call>` as links.
async fn links(c: &Client, call: &str) -> Vec<Link> {
    c.query(&format!("SELECT * FROM {call}"), &[])
        .await
        .unwrap_or_else(|e| panic!("{call}: {:?}", sqlstate(&e)))
        .iter()
        .map(Link::from)
        .collect()
}

/// The single link a call returns (sync_set_link, sync_get_link), None for NULL.
async fn one(c: &Client, call: &str) -> Option<Link> {
    let rows = c
        .query(&format!("SELECT * FROM {call} WHERE id IS NOT NULL"), &[])
        .await
        .unwrap_or_else(|e| panic!("{call}: {:?}", sqlstate(&e)));
    assert!(rows.len() <= 1, "{call} returned {} rows", rows.len());
    rows.first().map(Link::from)
}

async fn set(c: &Client, call: &str) -> Link {
    one(c, call)
        .await
        .unwrap_or_else(|| panic!("{call} returned NULL"))
}

async fn link_count(c: &Client) -> i64 {
    scalar(c, "SELECT count(*) FROM sync.link").await
}

fn refs_of(links: &[Link]) -> Vec<(String, String)> {
    links
        .iter()
        .map(|l| (l.ref1.clone(), l.ref2.clone()))
        .collect()
}

/// Tables used by most tests: bigint, uuid, text and composite primary keys.
async fn app_tables(c: &Client) {
    c.batch_execute(
        "CREATE TABLE partner (id bigint PRIMARY KEY, name text);
         INSERT INTO partner SELECT g, 'p' || g FROM generate_series(1, 20) g;
         CREATE TABLE doc (id uuid PRIMARY KEY);
         INSERT INTO doc VALUES ('6f1c2a5e-0c7e-4a8f-9d1b-2c3d4e5f6a7b'), ('00000000-0000-0000-0000-000000000002');
         CREATE TABLE tag (code text PRIMARY KEY);
         INSERT INTO tag VALUES ('red'), ('Blue Sky'), ('a,b');
         CREATE TABLE line (order_id int, code text, qty int, PRIMARY KEY (order_id, code));
         INSERT INTO line VALUES (1, 'abc', 1), (2, 'x y', 2), (3, 'q\"t', 3);",
    )
    .await
    .expect("app tables");
}

// ---------------------------------------------------------------------------------
// sync_set_link
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn set_link_local_rows_by_bigint_text_uuid_and_composite_key() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    app_tables(&c).await;

    let l = set(
        &c,
        "sync_set_link('partner', 'partner'::regclass, 7, 'ext-7')",
    )
    .await;
    assert_eq!(l.relation, "partner");
    // '__external__' sorts before 'public.partner' (bytewise), so it is side 1.
    assert_eq!(
        (l.system1.as_str(), l.ref1.as_str()),
        ("__external__", "ext-7")
    );
    assert_eq!(
        (l.system2.as_str(), l.ref2.as_str()),
        ("public.partner", "7")
    );
    assert!(!l.many2many);
    let stored: i64 = scalar(&c, "SELECT count(*) FROM sync.link WHERE relation = 'partner' AND ref2 = '7' AND ref1 = 'ext-7'").await;
    assert_eq!(stored, 1);

    // The text overload with a bigint key: the key is stored in its canonical form.
    let l = set(
        &c,
        "sync_set_link('partner', 'partner'::regclass, '0008', 'ext-8')",
    )
    .await;
    assert_eq!(l.ref2, "8");

    // uuid key given in upper case: stored as uuid::text.
    let l = set(
        &c,
        "sync_set_link('doc', 'doc'::regclass, '6F1C2A5E-0C7E-4A8F-9D1B-2C3D4E5F6A7B', 'D1')",
    )
    .await;
    assert_eq!(l.system2, "public.doc");
    assert_eq!(l.ref2, "6f1c2a5e-0c7e-4a8f-9d1b-2c3d4e5f6a7b");

    let l = set(
        &c,
        "sync_set_link('tag', 'tag'::regclass, 'Blue Sky', 'T1')",
    )
    .await;
    assert_eq!(l.ref2, "Blue Sky");

    // Composite keys in record text form, quoting included.
    let l = set(
        &c,
        "sync_set_link('line', 'line'::regclass, '(1,abc)', 'L1')",
    )
    .await;
    assert_eq!(
        (l.system2.as_str(), l.ref2.as_str()),
        ("public.line", "(1,abc)")
    );
    let l = set(
        &c,
        "sync_set_link('line', 'line'::regclass, '(2,\"x y\")', 'L2')",
    )
    .await;
    assert_eq!(l.ref2, "(2,\"x y\")");
    let key: String = scalar(&c, "SELECT ROW(3, 'q\"t')::text").await;
    let l = set(
        &c,
        &format!(
            "sync_set_link('line', 'line'::regclass, '{}', 'L3')",
            key.replace('\'', "''")
        ),
    )
    .await;
    assert_eq!(l.ref2, key);

    // Named arguments and an explicit sync_date.
    let l = set(&c, "sync_set_link(relation => 'partner', tbl => 'partner'::regclass, id => 9, external => 'ext-9', sync_date => '2020-01-02 03:04:05+00')").await;
    assert_eq!(l.sync_date.to_rfc3339(), "2020-01-02T03:04:05+00:00");
    assert_eq!(link_count(&c).await, 8);
}

#[tokio::test]
async fn set_link_default_sync_date_is_transaction_start() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    app_tables(&c).await;
    let row = c
        .query_one(
            "SELECT l.sync_date = now() FROM sync_set_link('partner', 'partner'::regclass, 1, 'a') l",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    let row = c
        .query_one(
            "SELECT l.sync_date = now() FROM sync_set_link('gh', '{\"github\": \"1\", \"trello\": \"x\"}'::jsonb, NULL) l",
            &[],
        )
        .await
        .unwrap();
    assert!(
        row.get::<_, bool>(0),
        "an explicit NULL sync_date means now()"
    );
}

#[tokio::test]
async fn set_link_two_external_systems() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    // Systems are stored sorted by name whatever the key order; numbers become text.
    let l = set(
        &c,
        "sync_set_link('card', '{\"trello\": \"abc\", \"github\": 12}'::jsonb)",
    )
    .await;
    assert_eq!(
        (
            l.system1.as_str(),
            l.ref1.as_str(),
            l.system2.as_str(),
            l.ref2.as_str()
        ),
        ("github", "12", "trello", "abc")
    );
    let l = set(
        &c,
        "sync_set_link('card', '{\"github\": 13.5, \"trello\": \"def\"}'::jsonb, '2021-01-01+00', false)",
    )
    .await;
    assert_eq!((l.ref1.as_str(), l.ref2.as_str()), ("13.5", "def"));
    assert_eq!(l.sync_date.to_rfc3339(), "2021-01-01T00:00:00+00:00");
    // Same refs in another relation: a different link.
    let other = set(
        &c,
        "sync_set_link('card2', '{\"github\": \"12\", \"trello\": \"abc\"}'::jsonb)",
    )
    .await;
    assert_ne!(other.relation, l.relation);
    assert_eq!(link_count(&c).await, 3);
}

#[tokio::test]
async fn identical_link_refreshes_sync_date_and_returns_the_same_link() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    app_tables(&c).await;
    let first = set(
        &c,
        "sync_set_link('partner', 'partner'::regclass, 1, 'A', '2020-01-01+00')",
    )
    .await;
    let again = set(
        &c,
        "sync_set_link('partner', 'partner'::regclass, 1, 'A', '2022-06-01+00')",
    )
    .await;
    assert_eq!(again.id, first.id);
    assert_eq!(again.sync_date.to_rfc3339(), "2022-06-01T00:00:00+00:00");
    let stored: chrono::DateTime<chrono::Utc> = scalar(&c, "SELECT sync_date FROM sync.link").await;
    assert_eq!(stored, again.sync_date);
    // Also through the other overload and with allow_many2many.
    let text = set(
        &c,
        "sync_set_link('partner', 'partner'::regclass, '1', 'A', '2023-01-01+00', true)",
    )
    .await;
    assert_eq!(text.id, first.id);
    assert!(!text.many2many, "refreshing keeps the link as it was");

    let r1 = set(
        &c,
        "sync_set_link('card', '{\"github\": \"1\", \"trello\": \"x\"}'::jsonb, '2020-01-01+00')",
    )
    .await;
    let r2 = set(
        &c,
        "sync_set_link('card', '{\"trello\": \"x\", \"github\": 1}'::jsonb, '2024-01-01+00')",
    )
    .await;
    assert_eq!(r1.id, r2.id);
    assert_eq!(r2.sync_date.to_rfc3339(), "2024-01-01T00:00:00+00:00");
    assert_eq!(link_count(&c).await, 2);
}

#[tokio::test]
async fn many2many_rule() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    app_tables(&c).await;
    let a = set(&c, "sync_set_link('partner', 'partner'::regclass, 1, 'A')").await;

    // A second link for the record, then for the external ref: refused, nothing written.
    let msg = expect_error(
        &c,
        "SELECT sync_set_link('partner', 'partner'::regclass, 1, 'B')",
        "23505",
    )
    .await;
    assert!(
        msg.contains("public.partner:1 is already linked to __external__:A")
            && msg.contains("\"partner\""),
        "{msg}"
    );
    let msg = expect_error(
        &c,
        "SELECT sync_set_link('partner', 'partner'::regclass, 2, 'A')",
        "23505",
    )
    .await;
    assert!(
        msg.contains("__external__:A is already linked to public.partner:1"),
        "{msg}"
    );
    assert_eq!(link_count(&c).await, 1);

    // Other relations are independent.
    set(&c, "sync_set_link('billing', 'partner'::regclass, 1, 'B')").await;

    // With allow_many2many: allowed, and flagged.
    let b = set(
        &c,
        "sync_set_link('partner', 'partner'::regclass, 1, 'B', allow_many2many => true)",
    )
    .await;
    assert!(b.many2many);
    assert_ne!(b.id, a.id);
    let c2 = set(
        &c,
        "sync_set_link('partner', 'partner'::regclass, 2, 'A', now(), true)",
    )
    .await;
    assert!(c2.many2many);
    // Re-setting the many2many link refreshes it.
    let again = set(
        &c,
        "sync_set_link('partner', 'partner'::regclass, 1, 'B', allow_many2many => true)",
    )
    .await;
    assert_eq!(again.id, b.id);
    // A record with links (even many2many ones) gets no link without the flag...
    expect_error(
        &c,
        "SELECT sync_set_link('partner', 'partner'::regclass, 2, 'C')",
        "23505",
    )
    .await;
    expect_error(
        &c,
        "SELECT sync_set_link('partner', 'partner'::regclass, 3, 'B')",
        "23505",
    )
    .await;
    // ...but its identical link is still refreshed without the flag.
    assert_eq!(
        set(&c, "sync_set_link('partner', 'partner'::regclass, 1, 'A')")
            .await
            .id,
        a.id
    );
    assert_eq!(
        scalar::<i64>(
            &c,
            "SELECT count(*) FROM sync.link WHERE relation = 'partner'"
        )
        .await,
        3
    );

    // The same rule for two external systems, on either side.
    set(
        &c,
        "sync_set_link('card', '{\"github\": \"1\", \"trello\": \"x\"}'::jsonb)",
    )
    .await;
    let msg = expect_error(
        &c,
        "SELECT sync_set_link('card', '{\"github\": \"1\", \"trello\": \"y\"}'::jsonb)",
        "23505",
    )
    .await;
    assert!(
        msg.contains("github:1 is already linked to trello:x"),
        "{msg}"
    );
    expect_error(
        &c,
        "SELECT sync_set_link('card', '{\"github\": \"2\", \"trello\": \"x\"}'::jsonb)",
        "23505",
    )
    .await;
    // A record linked to a third system in the same relation counts too.
    expect_error(
        &c,
        "SELECT sync_set_link('card', '{\"github\": \"1\", \"jira\": \"J-1\"}'::jsonb)",
        "23505",
    )
    .await;
    expect_error(
        &c,
        "SELECT sync_set_link('card', '{\"asana\": \"9\", \"github\": \"1\"}'::jsonb)",
        "23505",
    )
    .await;
    let m = set(
        &c,
        "sync_set_link('card', '{\"github\": \"1\", \"trello\": \"y\"}'::jsonb, now(), true)",
    )
    .await;
    assert!(m.many2many);
    assert_eq!(
        scalar::<i64>(&c, "SELECT count(*) FROM sync.link WHERE relation = 'card'").await,
        2
    );
}

#[tokio::test]
async fn a_transaction_may_link_many_records() {
    // No per-record lock is held until commit: 30,000 links in one statement (more than
    // the shared lock table holds) must work, and not slow down as the table grows.
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(
        "CREATE TABLE item (id bigint PRIMARY KEY);
         INSERT INTO item SELECT generate_series(1, 30000);",
    )
    .await
    .unwrap();
    let n: i64 = scalar(
        &c,
        "SELECT count(sync_set_link('bulk', 'item'::regclass, g, 'e' || g)) FROM generate_series(1, 30000) g",
    )
    .await;
    assert_eq!(n, 30000);
    let n: i64 = scalar(
        &c,
        "SELECT count(sync_set_link('bulk2', jsonb_build_object('a', g, 'b', g))) FROM generate_series(1, 30000) g",
    )
    .await;
    assert_eq!(n, 30000);
    assert_eq!(link_count(&c).await, 60000);
}

// ---------------------------------------------------------------------------------
// sync_search_links
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn search_links_of_local_rows() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    app_tables(&c).await;
    for (id, ext) in [(3, "c"), (1, "a"), (2, "b")] {
        set(
            &c,
            &format!("sync_set_link('partner', 'partner'::regclass, {id}, '{ext}')"),
        )
        .await;
    }
    set(&c, "sync_set_link('other', 'partner'::regclass, 1, 'z')").await;
    set(&c, "sync_set_link('partner', 'tag'::regclass, 'red', 'r')").await;
    set(
        &c,
        "sync_set_link('partner', 'doc'::regclass, '00000000-0000-0000-0000-000000000002', 'd')",
    )
    .await;
    set(
        &c,
        "sync_set_link('partner', 'line'::regclass, '(1,abc)', 'l1')",
    )
    .await;
    set(
        &c,
        "sync_set_link('partner', 'line'::regclass, '(2,\"x y\")', 'l2')",
    )
    .await;

    // Every link of the table in the relation, by link id.
    let all = links(&c, "sync_search_links('partner', 'partner'::regclass)").await;
    assert_eq!(
        refs_of(&all),
        vec![
            ("c".into(), "3".into()),
            ("a".into(), "1".into()),
            ("b".into(), "2".into())
        ]
    );
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    // NULL ids: same, with or without a cast, positional or named.
    for call in [
        "sync_search_links('partner', 'partner'::regclass, NULL)",
        "sync_search_links('partner', 'partner'::regclass, NULL::text[])",
        "sync_search_links('partner', 'partner'::regclass, NULL::bigint[])",
        "sync_search_links('partner', 'partner'::regclass, ids => NULL)",
    ] {
        assert_eq!(links(&c, call).await, all, "{call}");
    }
    // text[] and bigint[] ids (and an untyped array literal).
    for call in [
        "sync_search_links('partner', 'partner'::regclass, ARRAY['1', '3', '99'])",
        "sync_search_links('partner', 'partner'::regclass, ARRAY[1, 3, 99]::bigint[])",
        "sync_search_links('partner', 'partner'::regclass, ARRAY[3, 1])",
        "sync_search_links('partner', 'partner'::regclass, '{1,3}')",
    ] {
        let found = links(&c, call).await;
        assert_eq!(
            refs_of(&found),
            vec![("c".into(), "3".into()), ("a".into(), "1".into())],
            "{call}"
        );
    }
    assert!(links(
        &c,
        "sync_search_links('partner', 'partner'::regclass, ARRAY[]::bigint[])"
    )
    .await
    .is_empty());
    assert!(links(
        &c,
        "sync_search_links('partner', 'partner'::regclass, ARRAY[42])"
    )
    .await
    .is_empty());
    // Other key types: text, uuid[], composite keys as text.
    let found = links(
        &c,
        "sync_search_links('partner', 'tag'::regclass, ARRAY['red'])",
    )
    .await;
    assert_eq!(refs_of(&found), vec![("r".into(), "red".into())]);
    let found = links(
        &c,
        "sync_search_links('partner', 'doc'::regclass, ARRAY['00000000-0000-0000-0000-000000000002'::uuid])",
    )
    .await;
    assert_eq!(found.len(), 1);
    let found = links(
        &c,
        "sync_search_links('partner', 'line'::regclass, ARRAY['(2,\"x y\")', '(9,z)'])",
    )
    .await;
    assert_eq!(refs_of(&found), vec![("l2".into(), "(2,\"x y\")".into())]);
    let found = links(
        &c,
        "sync_search_links('partner', 'line'::regclass, ARRAY[ROW(1, 'abc')::text])",
    )
    .await;
    assert_eq!(refs_of(&found), vec![("l1".into(), "(1,abc)".into())]);
    // Another relation.
    let found = links(&c, "sync_search_links('other', 'partner'::regclass)").await;
    assert_eq!(refs_of(&found), vec![("z".into(), "1".into())]);
    assert!(links(&c, "sync_search_links('nope', 'partner'::regclass)")
        .await
        .is_empty());
}

#[tokio::test]
async fn search_links_by_refs() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    for (g, t, m2m) in [
        ("1", "a", false),
        ("2", "b", false),
        ("3", "c", false),
        ("1", "z", true),
    ] {
        set(
            &c,
            &format!("sync_set_link('card', '{{\"github\": \"{g}\", \"trello\": \"{t}\"}}'::jsonb, now(), {m2m})"),
        )
        .await;
    }
    set(
        &c,
        "sync_set_link('card', '{\"github\": \"1\", \"jira\": \"J\"}'::jsonb, now(), true)",
    )
    .await;
    set(
        &c,
        "sync_set_link('other', '{\"github\": \"1\", \"trello\": \"a\"}'::jsonb)",
    )
    .await;

    let q = |refs: &str| format!("sync_search_links('card', '{refs}'::jsonb)");
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    // Scalar filter on one system, null (no filter) on the other; key order is free.
    assert_eq!(
        refs_of(&links(&c, &q(r#"{"github": "1", "trello": null}"#)).await),
        pairs(&[("1", "a"), ("1", "z")])
    );
    assert_eq!(
        refs_of(&links(&c, &q(r#"{"trello": null, "github": 1}"#)).await),
        pairs(&[("1", "a"), ("1", "z")])
    );
    // Array filter.
    assert_eq!(
        refs_of(&links(&c, &q(r#"{"github": null, "trello": ["c", "a", "q"]}"#)).await),
        pairs(&[("1", "a"), ("3", "c")])
    );
    // Both systems given: a link matches only if both refs are in their lists.
    assert_eq!(
        refs_of(&links(&c, &q(r#"{"github": ["1", "2"], "trello": ["b", "z"]}"#)).await),
        pairs(&[("2", "b"), ("1", "z")])
    );
    assert!(links(&c, &q(r#"{"github": "1", "trello": "b"}"#))
        .await
        .is_empty());
    assert_eq!(
        refs_of(&links(&c, &q(r#"{"github": 3, "trello": "c"}"#)).await),
        pairs(&[("3", "c")])
    );
    // Both null: every link between the two systems in the relation.
    assert_eq!(
        links(&c, &q(r#"{"github": null, "trello": null}"#))
            .await
            .len(),
        4
    );
    assert_eq!(
        refs_of(&links(&c, &q(r#"{"jira": null, "github": null}"#)).await),
        pairs(&[("1", "J")])
    );
    assert!(links(&c, &q(r#"{"github": [], "trello": null}"#))
        .await
        .is_empty());

    // Local links are found by refs too: system names are '<schema>.<table>' and
    // '__external__'.
    c.batch_execute(
        "CREATE TABLE partner (id int PRIMARY KEY); INSERT INTO partner VALUES (1), (2);",
    )
    .await
    .unwrap();
    set(&c, "sync_set_link('p', 'partner'::regclass, 1, 'X')").await;
    set(&c, "sync_set_link('p', 'partner'::regclass, 2, 'Y')").await;
    let found = links(
        &c,
        r#"sync_search_links('p', '{"__external__": ["Y"], "public.partner": null}'::jsonb)"#,
    )
    .await;
    assert_eq!(refs_of(&found), pairs(&[("Y", "2")]));
}

// ---------------------------------------------------------------------------------
// sync_get_link, sync_update_links, sync_unlink
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn get_link_returns_one_link_or_null_and_refuses_several() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    app_tables(&c).await;
    let a = set(&c, "sync_set_link('partner', 'partner'::regclass, 1, 'A')").await;
    assert_eq!(
        one(&c, "sync_get_link('partner', 'A')").await,
        Some(a.clone())
    );
    assert_eq!(
        one(&c, "sync_get_link(relation => 'partner', external => 'A')").await,
        Some(a.clone())
    );
    assert_eq!(one(&c, "sync_get_link('partner', 'nope')").await, None);
    assert_eq!(one(&c, "sync_get_link('other', 'A')").await, None);
    let isnull: bool = scalar(&c, "SELECT sync_get_link('partner', 'nope') IS NULL").await;
    assert!(isnull);
    // Several links of an external ref (many2many, or rows of two tables).
    set(
        &c,
        "sync_set_link('partner', 'partner'::regclass, 2, 'A', now(), true)",
    )
    .await;
    let msg = expect_error(&c, "SELECT sync_get_link('partner', 'A')", "21000").await;
    assert!(msg.contains("several links"), "{msg}");
    set(&c, "sync_set_link('mixed', 'partner'::regclass, 5, 'M')").await;
    set(
        &c,
        "sync_set_link('mixed', 'tag'::regclass, 'red', 'M', allow_many2many => true)",
    )
    .await;
    expect_error(&c, "SELECT sync_get_link('mixed', 'M')", "21000").await;

    // refs form.
    let g = set(
        &c,
        "sync_set_link('card', '{\"github\": \"1\", \"trello\": \"x\"}'::jsonb)",
    )
    .await;
    for refs in [
        r#"{"github": "1", "trello": "x"}"#,
        r#"{"github": 1, "trello": null}"#,
        r#"{"github": null, "trello": ["x", "nope"]}"#,
    ] {
        assert_eq!(
            one(&c, &format!("sync_get_link('card', '{refs}'::jsonb)")).await,
            Some(g.clone()),
            "{refs}"
        );
    }
    assert_eq!(
        one(
            &c,
            r#"sync_get_link('card', '{"github": "2", "trello": null}'::jsonb)"#
        )
        .await,
        None
    );
    set(
        &c,
        "sync_set_link('card', '{\"github\": \"2\", \"trello\": \"y\"}'::jsonb)",
    )
    .await;
    expect_error(
        &c,
        r#"SELECT sync_get_link('card', '{"github": null, "trello": null}'::jsonb)"#,
        "21000",
    )
    .await;
}

#[tokio::test]
async fn update_links_and_unlink() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    app_tables(&c).await;
    let a = set(
        &c,
        "sync_set_link('partner', 'partner'::regclass, 1, 'A', '2020-01-01+00')",
    )
    .await;
    let b = set(
        &c,
        "sync_set_link('partner', 'partner'::regclass, 2, 'B', '2020-01-01+00')",
    )
    .await;
    let n: i64 = scalar(
        &c,
        &format!(
            "SELECT sync_update_links(ARRAY[{}, 9999], '2030-05-05+00')",
            a.id
        ),
    )
    .await;
    assert_eq!(n, 1);
    let dates: Vec<String> = c
        .query("SELECT sync_date::text FROM sync.link ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        dates,
        vec!["2030-05-05 00:00:00+00", "2020-01-01 00:00:00+00"]
    );
    // Default sync_date: now().
    c.batch_execute("BEGIN").await.unwrap();
    let n: i64 = scalar(
        &c,
        &format!("SELECT sync_update_links(ARRAY[{}, {}])", a.id, b.id),
    )
    .await;
    assert_eq!(n, 2);
    let ok: bool = scalar(&c, "SELECT bool_and(sync_date = now()) FROM sync.link").await;
    assert!(ok);
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        scalar::<i64>(&c, "SELECT sync_update_links(ARRAY[]::bigint[])").await,
        0
    );
    expect_error(&c, "SELECT sync_update_links(NULL)", "22004").await;

    assert_eq!(
        scalar::<i64>(
            &c,
            &format!("SELECT sync_unlink(ARRAY[{}, NULL, 12345])", a.id)
        )
        .await,
        1
    );
    assert_eq!(link_count(&c).await, 1);
    assert_eq!(one(&c, "sync_get_link('partner', 'A')").await, None);
    // The record is free again.
    set(&c, "sync_set_link('partner', 'partner'::regclass, 1, 'A2')").await;
    expect_error(&c, "SELECT sync_unlink(NULL)", "22004").await;
    assert_eq!(
        scalar::<i64>(&c, &format!("SELECT sync_unlink(ARRAY[{}])", b.id)).await,
        1
    );
    assert_eq!(link_count(&c).await, 1);
}

// ---------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_writes_nothing() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    app_tables(&c).await;
    c.batch_execute(
        "CREATE TABLE gone (id int PRIMARY KEY);
         CREATE TABLE nopk (id int); INSERT INTO nopk VALUES (1);
         CREATE VIEW partner_view AS SELECT * FROM partner;
         CREATE SEQUENCE seq;",
    )
    .await
    .unwrap();
    let gone: u32 = scalar(&c, "SELECT 'gone'::regclass::oid").await;
    c.batch_execute("DROP TABLE gone").await.unwrap();

    let cases: Vec<(String, &str, &str)> = vec![
        // Tables.
        (
            format!("SELECT sync_set_link('r', {gone}::oid::regclass, 1, 'x')"),
            "42P01",
            "does not exist",
        ),
        (
            "SELECT sync_set_link('r', 4000000000::oid::regclass, 1, 'x')".into(),
            "42P01",
            "does not exist",
        ),
        (
            "SELECT sync_set_link('r', 'partner_view'::regclass, 1, 'x')".into(),
            "42809",
            "is not a table",
        ),
        (
            "SELECT sync_set_link('r', 'seq'::regclass, 1, 'x')".into(),
            "42809",
            "is not a table",
        ),
        (
            "SELECT sync_set_link('r', 'nopk'::regclass, 1, 'x')".into(),
            "42P16",
            "has no primary key",
        ),
        (
            "SELECT sync_set_link('r', NULL::regclass, 1, 'x')".into(),
            "22004",
            "table must not be NULL",
        ),
        (
            "SELECT sync_set_link('r', 'sync.project'::regclass, 1, 'x')".into(),
            "42809",
            "cannot be linked",
        ),
        (
            "SELECT sync_set_link('r', 'pg_catalog.pg_class'::regclass, 1, 'x')".into(),
            "42809",
            "cannot be linked",
        ),
        (
            format!("SELECT * FROM sync_search_links('r', {gone}::oid::regclass)"),
            "42P01",
            "does not exist",
        ),
        (
            "SELECT * FROM sync_search_links('r', 'nopk'::regclass, ARRAY[1])".into(),
            "42P16",
            "has no primary key",
        ),
        // Relation, ids and refs of the local form.
        (
            "SELECT sync_set_link(NULL, 'partner'::regclass, 1, 'x')".into(),
            "22004",
            "relation must be a non-empty text",
        ),
        (
            "SELECT sync_set_link('', 'partner'::regclass, 1, 'x')".into(),
            "22004",
            "relation must be a non-empty text",
        ),
        (
            "SELECT sync_set_link('r', 'partner'::regclass, NULL::bigint, 'x')".into(),
            "22004",
            "id must be a non-empty value",
        ),
        (
            "SELECT sync_set_link('r', 'partner'::regclass, NULL::text, 'x')".into(),
            "22004",
            "id must be a non-empty value",
        ),
        (
            "SELECT sync_set_link('r', 'partner'::regclass, 1, NULL)".into(),
            "22004",
            "external must be a non-empty value",
        ),
        (
            "SELECT sync_set_link('r', 'partner'::regclass, 1, '')".into(),
            "22004",
            "external must be a non-empty value",
        ),
        (
            "SELECT sync_set_link('r', 'partner'::regclass, 999, 'x')".into(),
            "23503",
            "has no row with key 999",
        ),
        (
            "SELECT sync_set_link('r', 'partner'::regclass, 'abc', 'x')".into(),
            "22P02",
            "bigint",
        ),
        (
            "SELECT sync_set_link('r', 'doc'::regclass, 'not-a-uuid', 'x')".into(),
            "22P02",
            "uuid",
        ),
        (
            "SELECT sync_set_link('r', 'line'::regclass, '(1)', 'x')".into(),
            "22P02",
            "primary key has 2 columns",
        ),
        (
            "SELECT sync_set_link('r', 'line'::regclass, 5, 'x')".into(),
            "22P02",
            "primary key has 2 columns",
        ),
        (
            "SELECT sync_set_link('r', 'line'::regclass, '(1,zzz)', 'x')".into(),
            "23503",
            "has no row",
        ),
        // refs of the two-systems form.
        (
            "SELECT sync_set_link('r', NULL::jsonb)".into(),
            "22004",
            "refs must not be NULL",
        ),
        (
            "SELECT sync_set_link(NULL, '{\"a\": 1, \"b\": 2}'::jsonb)".into(),
            "22004",
            "relation",
        ),
        (
            "SELECT sync_set_link('r', '[1, 2]'::jsonb)".into(),
            "22023",
            "must be a JSON object",
        ),
        (
            "SELECT sync_set_link('r', '\"a\"'::jsonb)".into(),
            "22023",
            "must be a JSON object",
        ),
        (
            "SELECT sync_set_link('r', '{\"a\": \"1\"}'::jsonb)".into(),
            "22023",
            "exactly two systems, got 1",
        ),
        (
            "SELECT sync_set_link('r', '{\"a\": \"1\", \"b\": \"2\", \"c\": \"3\"}'::jsonb)".into(),
            "22023",
            "exactly two systems, got 3",
        ),
        (
            "SELECT sync_set_link('r', '{}'::jsonb)".into(),
            "22023",
            "exactly two systems, got 0",
        ),
        (
            "SELECT sync_set_link('r', '{\"a\": \"1\", \"\": \"2\"}'::jsonb)".into(),
            "22023",
            "must not be empty",
        ),
        (
            "SELECT sync_set_link('r', '{\"a\": [\"1\"], \"b\": \"2\"}'::jsonb)".into(),
            "22023",
            "non-empty string or a number",
        ),
        (
            "SELECT sync_set_link('r', '{\"a\": {\"x\": 1}, \"b\": \"2\"}'::jsonb)".into(),
            "22023",
            "non-empty string or a number",
        ),
        (
            "SELECT sync_set_link('r', '{\"a\": true, \"b\": \"2\"}'::jsonb)".into(),
            "22023",
            "non-empty string or a number",
        ),
        (
            "SELECT sync_set_link('r', '{\"a\": null, \"b\": \"2\"}'::jsonb)".into(),
            "22023",
            "non-empty string or a number",
        ),
        (
            "SELECT sync_set_link('r', '{\"a\": \"\", \"b\": \"2\"}'::jsonb)".into(),
            "22023",
            "non-empty string or a number",
        ),
        (
            "SELECT * FROM sync_search_links('r', NULL::jsonb)".into(),
            "22004",
            "refs must not be NULL",
        ),
        (
            "SELECT * FROM sync_search_links('r', '{\"a\": 1}'::jsonb)".into(),
            "22023",
            "exactly two systems",
        ),
        (
            "SELECT * FROM sync_search_links('r', '{\"a\": 1, \"b\": 2, \"c\": 3}'::jsonb)".into(),
            "22023",
            "exactly two systems",
        ),
        (
            "SELECT * FROM sync_search_links('r', '[]'::jsonb)".into(),
            "22023",
            "must be a JSON object",
        ),
        (
            "SELECT * FROM sync_search_links('r', '{\"a\": [[1]], \"b\": null}'::jsonb)".into(),
            "22023",
            "non-empty string or a number",
        ),
        (
            "SELECT * FROM sync_search_links('r', '{\"a\": {\"x\": 1}, \"b\": null}'::jsonb)"
                .into(),
            "22023",
            "non-empty string or a number",
        ),
        (
            "SELECT * FROM sync_search_links(NULL, '{\"a\": 1, \"b\": 2}'::jsonb)".into(),
            "22004",
            "relation",
        ),
        (
            "SELECT sync_get_link('r', '{\"a\": 1}'::jsonb)".into(),
            "22023",
            "exactly two systems",
        ),
        (
            "SELECT sync_get_link('r', NULL::text)".into(),
            "22004",
            "external must be a non-empty value",
        ),
        (
            "SELECT sync_get_link(NULL, 'x')".into(),
            "22004",
            "relation",
        ),
    ];
    for (sql, code, text) in &cases {
        let msg = expect_error(&c, sql, code).await;
        assert!(msg.contains(text), "{sql}: message {msg:?} lacks {text:?}");
    }
    assert_eq!(link_count(&c).await, 0, "failed calls wrote links");
    let triggers: i64 = scalar(
        &c,
        "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pg_sync_link%'",
    )
    .await;
    assert_eq!(triggers, 0, "failed calls installed cleanup triggers");
}

// ---------------------------------------------------------------------------------
// Races between two connections
// ---------------------------------------------------------------------------------

async fn backend_pid(c: &Client) -> i32 {
    scalar(c, "SELECT pg_backend_pid()").await
}

/// Wait until backend `pid` waits for a lock (10 s at most).
async fn wait_until_blocked(observer: &Client, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: bool = observer
            .query_one(
                "SELECT coalesce(bool_or(wait_event_type = 'Lock'), false) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if waiting {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backend {pid} never blocked on a lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Session 1 links `first` in an open transaction; session 2 (isolation `iso`, its
/// snapshot taken before) tries `second`, must block until session 1 commits, then
/// gets `want` (a SQLSTATE, or "ok").
async fn race(db: &TestDb, first: &str, second: &str, iso: &str, want: &str) -> i64 {
    let s1 = db.connect().await;
    let s2 = db.connect().await;
    let observer = db.connect().await;
    s1.batch_execute("BEGIN").await.unwrap();
    s2.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL {iso}; SELECT count(*) FROM sync.link"
    ))
    .await
    .unwrap();
    s1.batch_execute(&format!("SELECT {first}")).await.unwrap();
    let pid2 = backend_pid(&s2).await;
    let second_sql = format!("SELECT {second}");
    let task = tokio::spawn(async move {
        let r = s2.batch_execute(&second_sql).await;
        (s2, r)
    });
    wait_until_blocked(&observer, pid2).await;
    assert!(!task.is_finished(), "session 2 did not wait for session 1");
    s1.batch_execute("COMMIT").await.unwrap();
    let (s2, result) = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("session 2 still blocked after session 1 committed")
        .unwrap();
    match (&result, want) {
        (Ok(()), "ok") => s2.batch_execute("COMMIT").await.unwrap(),
        (Ok(()), _) => panic!("{second}: expected {want}, it succeeded"),
        (Err(e), _) => {
            let (code, msg) = sqlstate(e);
            assert_eq!(code, want, "{second}: {msg}");
            s2.batch_execute("ROLLBACK").await.unwrap();
        }
    }
    link_count(&observer).await
}

#[tokio::test]
async fn racing_links_of_one_local_record() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    app_tables(&c).await;
    // Same record, two external refs.
    let n = race(
        &db,
        "sync_set_link('r', 'partner'::regclass, 1, 'A')",
        "sync_set_link('r', 'partner'::regclass, 1, 'B')",
        "READ COMMITTED",
        "23505",
    )
    .await;
    assert_eq!(n, 1);
    let n = race(
        &db,
        "sync_set_link('rr', 'partner'::regclass, 1, 'A')",
        "sync_set_link('rr', 'partner'::regclass, 1, 'B')",
        "REPEATABLE READ",
        "40001",
    )
    .await;
    assert_eq!(n, 2);
    let n = race(
        &db,
        "sync_set_link('sr', 'partner'::regclass, 1, 'A')",
        "sync_set_link('sr', 'partner'::regclass, 1, 'B')",
        "SERIALIZABLE",
        "40001",
    )
    .await;
    assert_eq!(n, 3);
    // The identical link: the second call waits, then refreshes the first's link.
    let n = race(
        &db,
        "sync_set_link('same', 'partner'::regclass, 2, 'S')",
        "sync_set_link('same', 'partner'::regclass, 2, 'S')",
        "READ COMMITTED",
        "ok",
    )
    .await;
    assert_eq!(n, 4);
    // With allow_many2many both links are made.
    let n = race(
        &db,
        "sync_set_link('m', 'partner'::regclass, 3, 'A', now(), true)",
        "sync_set_link('m', 'partner'::regclass, 3, 'A', now(), true)",
        "READ COMMITTED",
        "ok",
    )
    .await;
    assert_eq!(n, 5);
    let winners: Vec<String> = c
        .query(
            "SELECT relation || ':' || ref1 FROM sync.link ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(winners, vec!["r:A", "rr:A", "sr:A", "same:S", "m:A"]);
}

#[tokio::test]
async fn racing_links_of_one_external_ref() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    app_tables(&c).await;
    let n = race(
        &db,
        "sync_set_link('r', 'partner'::regclass, 1, 'X')",
        "sync_set_link('r', 'partner'::regclass, 2, 'X')",
        "READ COMMITTED",
        "23505",
    )
    .await;
    assert_eq!(n, 1);
    let n = race(
        &db,
        "sync_set_link('rr', 'partner'::regclass, 1, 'X')",
        "sync_set_link('rr', 'partner'::regclass, 2, 'X')",
        "REPEATABLE READ",
        "40001",
    )
    .await;
    assert_eq!(n, 2);
    // Two external systems.
    let n = race(
        &db,
        "sync_set_link('card', '{\"github\": \"1\", \"trello\": \"x\"}'::jsonb)",
        "sync_set_link('card', '{\"github\": \"2\", \"trello\": \"x\"}'::jsonb)",
        "READ COMMITTED",
        "23505",
    )
    .await;
    assert_eq!(n, 3);
    let n = race(
        &db,
        "sync_set_link('card2', '{\"github\": \"1\", \"trello\": \"x\"}'::jsonb)",
        "sync_set_link('card2', '{\"github\": \"1\", \"trello\": \"y\"}'::jsonb)",
        "REPEATABLE READ",
        "40001",
    )
    .await;
    assert_eq!(n, 4);
    let stored: i64 = scalar(
        &c,
        "SELECT count(*) FROM sync.link WHERE ref2 = '1' OR ref1 = 'X' OR ref1 = '1'",
    )
    .await;
    assert_eq!(stored, 4);
}

#[tokio::test]
async fn repeatable_read_sees_links_committed_after_its_snapshot() {
    // No wait at all: session 1 commits before session 2 links, but after session 2's
    // snapshot. Session 2 cannot see the link, so it must not decide as if it were not
    // there.
    let db = TestDb::new().await;
    let c = db.connect().await;
    app_tables(&c).await;
    let s2 = db.connect().await;
    s2.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM sync.link")
        .await
        .unwrap();
    set(&c, "sync_set_link('r', 'partner'::regclass, 1, 'A')").await;
    expect_error(
        &s2,
        "SELECT sync_set_link('r', 'partner'::regclass, 1, 'B')",
        "40001",
    )
    .await;
    s2.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(link_count(&c).await, 1);
}

#[tokio::test]
async fn unrelated_links_do_not_wait_for_each_other() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    app_tables(&c).await;
    set(&c, "sync_set_link('r', 'partner'::regclass, 20, 'warm-up')").await;
    let s1 = db.connect().await;
    let s2 = db.connect().await;
    s1.batch_execute("BEGIN; SELECT sync_set_link('r', 'partner'::regclass, 1, 'A')")
        .await
        .unwrap();
    // Different record and ref: completes while session 1 is still open.
    tokio::time::timeout(
        Duration::from_secs(10),
        s2.batch_execute("SELECT sync_set_link('r', 'partner'::regclass, 2, 'B')"),
    )
    .await
    .expect("an unrelated link waited for another transaction")
    .unwrap();
    s1.batch_execute("COMMIT").await.unwrap();
    assert_eq!(link_count(&c).await, 3);
}

// ---------------------------------------------------------------------------------
// Links of deleted rows and dropped tables
// ---------------------------------------------------------------------------------

async fn refs_of_relation(c: &Client, relation: &str) -> Vec<String> {
    c.query(
        "SELECT ref1 || '=' || ref2 FROM sync.link WHERE relation = $1 ORDER BY id",
        &[&relation],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test]
async fn links_of_deleted_rows_disappear() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    app_tables(&c).await;
    for id in 1..=5 {
        set(
            &c,
            &format!("sync_set_link('p', 'partner'::regclass, {id}, 'e{id}')"),
        )
        .await;
    }
    set(&c, "sync_set_link('q', 'partner'::regclass, 1, 'other-1')").await;
    set(&c, "sync_set_link('p', 'tag'::regclass, 'red', 'tag-red')").await;
    set(
        &c,
        "sync_set_link('card', '{\"github\": \"1\", \"trello\": \"1\"}'::jsonb)",
    )
    .await;

    // DELETE: links of the deleted rows go, in every relation; others stay.
    c.batch_execute("DELETE FROM partner WHERE id IN (1, 2)")
        .await
        .unwrap();
    assert_eq!(
        refs_of_relation(&c, "p").await,
        vec!["e3=3", "e4=4", "e5=5", "tag-red=red"]
    );
    assert!(refs_of_relation(&c, "q").await.is_empty());
    assert_eq!(refs_of_relation(&c, "card").await, vec!["1=1"]);

    // A rolled-back delete keeps them; so does a rolled-back savepoint.
    c.batch_execute("BEGIN; DELETE FROM partner WHERE id = 3; ROLLBACK")
        .await
        .unwrap();
    assert_eq!(refs_of_relation(&c, "p").await.len(), 4);
    c.batch_execute(
        "BEGIN;
         SAVEPOINT s; DELETE FROM partner WHERE id = 3; ROLLBACK TO SAVEPOINT s;
         SAVEPOINT t; DELETE FROM partner WHERE id = 4; RELEASE SAVEPOINT t;
         COMMIT",
    )
    .await
    .unwrap();
    assert_eq!(
        refs_of_relation(&c, "p").await,
        vec!["e3=3", "e5=5", "tag-red=red"]
    );
    // Within the transaction that deletes, the links are already gone.
    c.batch_execute("BEGIN; DELETE FROM partner WHERE id = 5")
        .await
        .unwrap();
    assert_eq!(refs_of_relation(&c, "p").await, vec!["e3=3", "tag-red=red"]);
    c.batch_execute("ROLLBACK").await.unwrap();

    // Link and delete in one transaction.
    c.batch_execute(
        "BEGIN;
         SELECT sync_set_link('p', 'partner'::regclass, 6, 'e6');
         DELETE FROM partner WHERE id = 6;
         COMMIT",
    )
    .await
    .unwrap();
    assert_eq!(
        refs_of_relation(&c, "p").await,
        vec!["e3=3", "e5=5", "tag-red=red"]
    );

    // TRUNCATE: every link of the table goes (and comes back on rollback).
    c.batch_execute("BEGIN; TRUNCATE partner; ROLLBACK")
        .await
        .unwrap();
    assert_eq!(refs_of_relation(&c, "p").await.len(), 3);
    c.batch_execute("TRUNCATE partner").await.unwrap();
    assert_eq!(refs_of_relation(&c, "p").await, vec!["tag-red=red"]);

    // Composite and uuid keys.
    set(&c, "sync_set_link('l', 'line'::regclass, '(1,abc)', 'L1')").await;
    set(
        &c,
        "sync_set_link('l', 'line'::regclass, '(2,\"x y\")', 'L2')",
    )
    .await;
    set(
        &c,
        "sync_set_link('l', 'doc'::regclass, '6f1c2a5e-0c7e-4a8f-9d1b-2c3d4e5f6a7b', 'D1')",
    )
    .await;
    c.batch_execute(
        "DELETE FROM line WHERE code = 'x y'; DELETE FROM doc WHERE id = '6f1c2a5e-0c7e-4a8f-9d1b-2c3d4e5f6a7b'",
    )
    .await
    .unwrap();
    assert_eq!(refs_of_relation(&c, "l").await, vec!["L1=(1,abc)"]);
}

#[tokio::test]
async fn links_of_dropped_tables_disappear() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    app_tables(&c).await;
    c.batch_execute(
        "CREATE SCHEMA app;
         CREATE TABLE app.a (id int PRIMARY KEY); INSERT INTO app.a VALUES (1), (2);
         CREATE TABLE app.b (id int PRIMARY KEY); INSERT INTO app.b VALUES (1);",
    )
    .await
    .unwrap();
    set(&c, "sync_set_link('p', 'partner'::regclass, 1, 'P1')").await;
    set(&c, "sync_set_link('p', 'tag'::regclass, 'red', 'T1')").await;
    set(&c, "sync_set_link('x', 'tag'::regclass, 'red', 'T2')").await;
    set(&c, "sync_set_link('a', 'app.a'::regclass, 1, 'A1')").await;
    set(&c, "sync_set_link('a', 'app.a'::regclass, 2, 'A2')").await;
    set(&c, "sync_set_link('a', 'app.b'::regclass, 1, 'B1')").await;

    // Rolled back: kept.
    c.batch_execute("BEGIN; DROP TABLE tag; ROLLBACK")
        .await
        .unwrap();
    assert_eq!(link_count(&c).await, 6);
    c.batch_execute("DROP TABLE tag").await.unwrap();
    assert_eq!(refs_of_relation(&c, "p").await, vec!["P1=1"]);
    assert!(refs_of_relation(&c, "x").await.is_empty());
    // A table of the same name created later starts without links.
    c.batch_execute("CREATE TABLE tag (code text PRIMARY KEY); INSERT INTO tag VALUES ('red')")
        .await
        .unwrap();
    assert!(links(&c, "sync_search_links('p', 'tag'::regclass)")
        .await
        .is_empty());
    set(&c, "sync_set_link('p', 'tag'::regclass, 'red', 'T3')").await;
    c.batch_execute("DELETE FROM tag").await.unwrap();
    assert_eq!(refs_of_relation(&c, "p").await, vec!["P1=1"]);

    // DROP SCHEMA ... CASCADE drops both tables.
    c.batch_execute("DROP SCHEMA app CASCADE").await.unwrap();
    assert!(refs_of_relation(&c, "a").await.is_empty());
    assert_eq!(link_count(&c).await, 1);
    // Dropping other objects leaves links alone.
    c.batch_execute("CREATE TABLE unrelated (id int); DROP TABLE unrelated; CREATE INDEX ON partner (name); DROP INDEX partner_name_idx")
        .await
        .unwrap();
    assert_eq!(link_count(&c).await, 1);
}

#[tokio::test]
async fn deleting_a_row_waits_for_a_link_being_made_and_the_other_way_round() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    app_tables(&c).await;
    let observer = db.connect().await;

    // Link first, delete second: the delete waits, then removes the new link.
    let s1 = db.connect().await;
    let s2 = db.connect().await;
    s1.batch_execute("BEGIN; SELECT sync_set_link('r', 'partner'::regclass, 1, 'A')")
        .await
        .unwrap();
    let pid2 = backend_pid(&s2).await;
    let del = tokio::spawn(async move {
        let r = s2.batch_execute("DELETE FROM partner WHERE id = 1").await;
        (s2, r)
    });
    wait_until_blocked(&observer, pid2).await;
    s1.batch_execute("COMMIT").await.unwrap();
    let (_s2, r) = del.await.unwrap();
    r.unwrap();
    assert_eq!(link_count(&c).await, 0);

    // Delete first, link second: the link waits, then finds no row.
    let s1 = db.connect().await;
    let s2 = db.connect().await;
    s1.batch_execute("BEGIN; DELETE FROM partner WHERE id = 2")
        .await
        .unwrap();
    let pid2 = backend_pid(&s2).await;
    let link = tokio::spawn(async move {
        let r = s2
            .batch_execute("SELECT sync_set_link('r', 'partner'::regclass, 2, 'B')")
            .await;
        (s2, r)
    });
    wait_until_blocked(&observer, pid2).await;
    s1.batch_execute("COMMIT").await.unwrap();
    let (_s2, r) = link.await.unwrap();
    assert_eq!(sqlstate(&r.unwrap_err()).0, "23503");
    assert_eq!(link_count(&c).await, 0);

    // A REPEATABLE READ transaction deletes a row whose link was committed after its
    // snapshot: the link still goes.
    let s1 = db.connect().await;
    s1.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM sync.link")
        .await
        .unwrap();
    set(&c, "sync_set_link('r', 'partner'::regclass, 3, 'C')").await;
    s1.batch_execute("DELETE FROM partner WHERE id = 3; COMMIT")
        .await
        .unwrap();
    assert_eq!(link_count(&c).await, 0);
}

#[tokio::test]
async fn cleanup_triggers_do_not_get_in_the_way() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    c.batch_execute(
        "CREATE TABLE orders (id int PRIMARY KEY, note text);
         INSERT INTO orders SELECT g, 'n' || g FROM generate_series(1, 10) g;
         CREATE TABLE order_line (order_id int REFERENCES orders ON DELETE CASCADE, n int,
                                  PRIMARY KEY (order_id, n));
         INSERT INTO order_line SELECT g, 1 FROM generate_series(1, 10) g;
         -- The application's own triggers, row and statement level, with a transition table.
         CREATE TABLE audit (what text);
         CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO audit VALUES ('row ' || OLD.id); RETURN OLD; END $$;
         CREATE FUNCTION audit_stmt() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO audit SELECT 'stmt ' || count(*) FROM gone; RETURN NULL; END $$;
         CREATE TRIGGER audit_row BEFORE DELETE ON orders FOR EACH ROW EXECUTE FUNCTION audit_row();
         CREATE TRIGGER audit_stmt AFTER DELETE ON orders REFERENCING OLD TABLE AS gone
           FOR EACH STATEMENT EXECUTE FUNCTION audit_stmt();
         -- An application role that may delete rows but knows nothing of pg_sync.
         CREATE ROLE app_writer;
         GRANT SELECT, DELETE, TRUNCATE ON orders, order_line TO app_writer;
         GRANT INSERT ON audit TO app_writer;",
    )
    .await
    .unwrap();
    for id in 1..=10 {
        set(
            &c,
            &format!("sync_set_link('o', 'orders'::regclass, {id}, 'o{id}')"),
        )
        .await;
        set(
            &c,
            &format!("sync_set_link('ol', 'order_line'::regclass, '({id},1)', 'l{id}')"),
        )
        .await;
    }
    // Deleting as the application role: the rows, the audit, the cascade and the links.
    let app = db.connect().await;
    app.batch_execute("SET ROLE app_writer").await.unwrap();
    let rows = app
        .query("DELETE FROM orders WHERE id <= 3 RETURNING id", &[])
        .await
        .expect("the application role deletes rows of a linked table");
    let mut ids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    ids.sort();
    assert_eq!(ids, vec![1, 2, 3]);
    let audit: Vec<String> = c
        .query("SELECT what FROM audit ORDER BY what", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(audit, vec!["row 1", "row 2", "row 3", "stmt 3"]);
    assert_eq!(refs_of_relation(&c, "o").await.len(), 7);
    // The ON DELETE CASCADE removed order lines, and their links with them.
    assert_eq!(refs_of_relation(&c, "ol").await.len(), 7);
    app.batch_execute("TRUNCATE order_line").await.unwrap();
    assert!(refs_of_relation(&c, "ol").await.is_empty());
    app.batch_execute("RESET ROLE").await.unwrap();

    // A table that lost its primary key: deletes still work (links of it stay).
    c.batch_execute("ALTER TABLE order_line DROP CONSTRAINT order_line_pkey; INSERT INTO order_line VALUES (4, 1)")
        .await
        .unwrap();
    c.batch_execute("DELETE FROM order_line").await.unwrap();
    // Renaming the table keeps deletes working.
    c.batch_execute("ALTER TABLE orders RENAME TO orders2; DELETE FROM orders2 WHERE id = 4")
        .await
        .unwrap();
    // UPDATE and INSERT are untouched by link triggers.
    c.batch_execute("UPDATE orders2 SET note = 'x'; INSERT INTO orders2 VALUES (100, 'new')")
        .await
        .unwrap();
    // Only our two triggers were added to each linked table.
    let ours: Vec<String> = c
        .query(
            "SELECT tgrelid::regclass || ':' || tgname FROM pg_trigger
             WHERE tgname LIKE 'pg_sync%' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        ours,
        vec![
            "order_line:pg_sync_link_cleanup",
            "order_line:pg_sync_link_truncate",
            "orders2:pg_sync_link_cleanup",
            "orders2:pg_sync_link_truncate"
        ]
    );
}

#[tokio::test]
async fn searches_run_in_read_only_transactions_and_parallel_workers() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    app_tables(&c).await;
    set(&c, "sync_set_link('p', 'partner'::regclass, 1, 'A')").await;
    set(
        &c,
        "sync_set_link('card', '{\"github\": \"1\", \"trello\": \"x\"}'::jsonb)",
    )
    .await;
    let reads = [
        "SELECT count(*) FROM sync_search_links('p', 'partner'::regclass)",
        "SELECT count(*) FROM sync_search_links('p', 'partner'::regclass, ARRAY[1])",
        "SELECT count(*) FROM sync_search_links('card', '{\"github\": \"1\", \"trello\": null}'::jsonb)",
        "SELECT count(*) FROM (SELECT sync_get_link('p', 'A')) x",
        "SELECT count(*) FROM (SELECT sync_get_link('card', '{\"github\": 1, \"trello\": \"x\"}'::jsonb)) x",
    ];
    c.batch_execute("BEGIN READ ONLY").await.unwrap();
    for sql in reads {
        assert_eq!(scalar::<i64>(&c, sql).await, 1, "{sql}");
    }
    c.batch_execute("COMMIT").await.unwrap();
    // Parallel-safe functions may run in a parallel worker, which cannot assign a
    // transaction id: reading links must not need one.
    c.batch_execute("SET force_parallel_mode = on; SET parallel_setup_cost = 0")
        .await
        .unwrap();
    let plan: Vec<String> = c
        .query(&format!("EXPLAIN (COSTS OFF) {}", reads[0]), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(plan.iter().any(|l| l.contains("Gather")), "{plan:?}");
    for sql in reads {
        assert_eq!(scalar::<i64>(&c, sql).await, 1, "{sql}");
    }
}

#[tokio::test]
async fn readme_links_examples_run() {
    // The SQL blocks of the "Links" page (docs/links.md, all its sections), in order; a
    // statement commented `-- ERROR <sqlstate>` must fail with that SQLSTATE.
    let section = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/links.md"))
        .expect("docs/links.md");
    assert!(
        section.starts_with("# Links\n"),
        "docs/links.md is the Links page"
    );
    let mut statements = Vec::new();
    for block in section.split("```sql\n").skip(1) {
        let block = &block[..block.find("```").expect("closed block")];
        let mut current = String::new();
        for line in block.lines() {
            current.push_str(line);
            current.push('\n');
            if line.trim_end().ends_with(';') || line.contains(";  --") || line.contains("; --") {
                statements.push(std::mem::take(&mut current));
            }
        }
        assert!(
            current.trim().is_empty(),
            "unterminated statement: {current}"
        );
    }
    assert!(statements.len() > 20, "{statements:?}");
    let db = TestDb::new().await;
    let c = db.connect().await;
    for sql in &statements {
        match sql.split("-- ERROR ").nth(1) {
            Some(code) => {
                expect_error(&c, sql, &code.trim()[..5]).await;
            }
            None => {
                if let Err(e) = c.batch_execute(sql).await {
                    panic!("docs/links.md example failed: {sql}{:?}", sqlstate(&e));
                }
            }
        }
    }
    // The examples leave: Ada linked twice (many2many), Bob's link deleted with him.
    let left: i64 = scalar(
        &c,
        "SELECT count(*) FROM sync_search_links('partner', 'partner'::regclass)",
    )
    .await;
    assert_eq!(left, 2);
}
