// The sync helpers of task code (sync_db2x, sync_x2db, sync_external and the aliases
// sync_odoo2x, sync_x2odoo), run by a real worker: every create x update x linked case,
// sync dates, errors for missing sync_info keys, rollback, and statement counts at scale.
use std::time::Duration;

use pg_sync_tests::python::PyProject;
use pg_sync_tests::{wait_for, Cluster, TestDb};
use serde_json::{json, Value};

const OLD: &str = "2001-01-01 00:00:00+00";

async fn project() -> PyProject {
    let p = PyProject::new("helpers").await;
    p.sql(
        "CREATE TABLE partner (id bigserial PRIMARY KEY, name text);
         INSERT INTO partner (name) VALUES ('ann'), ('bob'), ('cid');",
    )
    .await;
    p
}

/// (create, update) in every combination, and a relation name for each.
fn combos() -> Vec<(bool, bool, String)> {
    [(false, false), (false, true), (true, false), (true, true)]
        .into_iter()
        .map(|(c, u)| (c, u, format!("rel_{}{}", c as u8, u as u8)))
        .collect()
}

async fn run_case(p: &PyProject, task: i64, create: bool, update: bool, relation: &str) -> Value {
    let job = p
        .job(
            task,
            "case",
            json!({"kwargs": {"relation": relation, "create": create, "update": update}}),
        )
        .await;
    let report = p.run(job).await;
    assert_eq!(report["state"], "done", "{relation}: {report}");
    report["result"].clone()
}

/// Whether the link in `relation` whose side has ref `ref` still has the old sync date.
async fn old_sync_date(p: &PyProject, relation: &str, reference: &str) -> bool {
    p.client
        .query_one(
            "SELECT sync_date = $3::text::timestamptz FROM sync.link
             WHERE relation = $1 AND (ref1 = $2 OR ref2 = $2)",
            &[&relation, &reference, &OLD],
        )
        .await
        .unwrap_or_else(|e| panic!("link {reference} of {relation}: {e}"))
        .get(0)
}

async fn link_count(p: &PyProject, relation: &str) -> i64 {
    p.client
        .query_one(
            "SELECT count(*) FROM sync.link WHERE relation = $1",
            &[&relation],
        )
        .await
        .unwrap()
        .get(0)
}

/// What a case should report: the calls in source order, and the summary.
fn expected(create: bool, update: bool, linked: (Value, Value), missing: (Value, Value)) -> Value {
    let (linked_key, linked_call) = linked;
    let (missing_key, missing_call) = missing;
    let mut calls = vec![];
    let (mut created, mut updated, mut skipped) = (vec![], vec![], vec![]);
    if update {
        calls.push(linked_call);
        updated.push(linked_key);
    } else {
        skipped.push(linked_key);
    }
    if create {
        calls.push(missing_call);
        created.push(missing_key);
    } else {
        skipped.push(missing_key);
    }
    json!({"calls": calls, "result": {"created": created, "updated": updated, "skipped": skipped}})
}

#[tokio::test]
async fn sync_db2x_every_case() {
    let p = project().await;
    let code = r#"
def case(relation, create, update):
    calls = []
    def x_create(record):
        calls.append(['create', record.id, record.name])
        return 'new-%s' % record.id
    def x_update(external, record):
        calls.append(['update', external, record.id, record.name])
    info = {'relation': relation, 'x': {'create': x_create, 'update': x_update}}
    result = sync_db2x(env['partner'].browse([1, 2]), info, create=create, update=update)
    return {'calls': calls, 'result': result}
"#;
    let task = p.task("db2x", code).await;
    for (create, update, rel) in combos() {
        p.sql(&format!(
            "SELECT sync_set_link('{rel}', 'partner'::regclass, 1, 'ext-1', '{OLD}')"
        ))
        .await;
        let result = run_case(&p, task, create, update, &rel).await;
        assert_eq!(
            result,
            expected(
                create,
                update,
                (json!(1), json!(["update", "ext-1", 1, "ann"])),
                (json!(2), json!(["create", 2, "bob"])),
            ),
            "{rel}"
        );
        // The update refreshed the link's sync date, nothing else did.
        assert_eq!(old_sync_date(&p, &rel, "ext-1").await, !update, "{rel}");
        assert_eq!(link_count(&p, &rel).await, 1 + create as i64, "{rel}");
        let linked: Option<String> = p
            .client
            .query_one(
                "SELECT (sync_get_link($1::text, 'new-2'::text)).ref2",
                &[&rel],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(linked.as_deref(), create.then_some("2"), "{rel}");
        if create {
            assert!(!old_sync_date(&p, &rel, "new-2").await);
        }
    }
}

#[tokio::test]
async fn sync_x2db_every_case() {
    let p = project().await;
    let code = r#"
def case(relation, create, update):
    calls = []
    def get_ref(item):
        return item['ref']
    def db_create(item):
        calls.append(['create', item['ref']])
        return env['partner'].create({'name': item['name']})
    def db_update(record, item):
        calls.append(['update', record.id, record.name, item['ref']])
        record.write({'name': item['name']})
    info = {'relation': relation, 'x': {'get_ref': get_ref},
            'db': {'create': db_create, 'update': db_update}}
    items = [{'ref': 'ext-1', 'name': 'ann-' + relation}, {'ref': 'ext-9', 'name': 'new-' + relation}]
    return {'calls': calls, 'result': sync_x2db(items, info, create=create, update=update)}
"#;
    let task = p.task("x2db", code).await;
    for (create, update, rel) in combos() {
        p.sql(&format!(
            "UPDATE partner SET name = 'ann' WHERE id = 1;
             SELECT sync_set_link('{rel}', 'partner'::regclass, 1, 'ext-1', '{OLD}')"
        ))
        .await;
        let result = run_case(&p, task, create, update, &rel).await;
        assert_eq!(
            result,
            expected(
                create,
                update,
                (json!("ext-1"), json!(["update", 1, "ann", "ext-1"])),
                (json!("ext-9"), json!(["create", "ext-9"])),
            ),
            "{rel}"
        );
        assert_eq!(old_sync_date(&p, &rel, "ext-1").await, !update, "{rel}");
        assert_eq!(link_count(&p, &rel).await, 1 + create as i64, "{rel}");
        let name: String = p.scalar("SELECT name FROM partner WHERE id = 1").await;
        let want = if update {
            format!("ann-{rel}")
        } else {
            "ann".into()
        };
        assert_eq!(name, want, "{rel}");
        // The created row, linked to the external ref.
        let created: Option<String> = p
            .client
            .query_one(
                "SELECT p.name FROM sync_get_link($1::text, 'ext-9'::text) l
                 LEFT JOIN partner p ON p.id::text = l.ref2",
                &[&rel],
            )
            .await
            .unwrap()
            .get(0);
        let want = create.then(|| format!("new-{rel}"));
        assert_eq!(created, want, "{rel}");
        let rows: i64 = p
            .client
            .query_one(
                "SELECT count(*) FROM partner WHERE name = $1",
                &[&format!("new-{rel}")],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, create as i64, "{rel}");
    }
}

#[tokio::test]
async fn sync_external_every_case() {
    let p = project().await;
    let code = r#"
def case(relation, create, update):
    calls = []
    def get_ref(issue):
        return issue['num']
    def card_create(issue):
        calls.append(['create', issue['num']])
        return 'card-new-%s' % issue['num']
    def card_update(card, issue):
        calls.append(['update', card, issue['num']])
    src = {'system': 'github', 'get_ref': get_ref}
    dst = {'system': 'trello', 'create': card_create, 'update': card_update}
    result = sync_external([{'num': 12}, {'num': 13}], relation, src, dst, create=create, update=update)
    return {'calls': calls, 'result': result}
"#;
    let task = p.task("external", code).await;
    for (create, update, rel) in combos() {
        p.sql(&format!(
            "SELECT sync_set_link('{rel}', '{{\"github\": \"12\", \"trello\": \"card-12\"}}'::jsonb, '{OLD}')"
        ))
        .await;
        let result = run_case(&p, task, create, update, &rel).await;
        assert_eq!(
            result,
            expected(
                create,
                update,
                (json!("12"), json!(["update", "card-12", 12])),
                (json!("13"), json!(["create", 13])),
            ),
            "{rel}"
        );
        assert_eq!(old_sync_date(&p, &rel, "card-12").await, !update, "{rel}");
        assert_eq!(link_count(&p, &rel).await, 1 + create as i64, "{rel}");
        let card: Option<String> = p
            .client
            .query_one(
                "SELECT (sync_get_link($1::text, '{\"github\": \"13\", \"trello\": null}'::jsonb)).ref2",
                &[&rel],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(card.as_deref(), create.then_some("card-new-13"), "{rel}");
    }
}

#[tokio::test]
async fn aliases_magic_and_common_code() {
    let p = project().await;
    // Common code is restricted too: a helper defined there reaches the task.
    p.set(
        "common_code",
        r#"
def push_new(records, relation):
    def x_create(record):
        return 'c-%s' % record.id
    return sync_db2x(records, {'relation': relation, 'x': {'create': x_create}}, create=True)
"#,
    )
    .await;
    let code = r#"
def handle_cron():
    P = env['partner']
    seen = []
    def ident(item):
        return item
    def x_create(record):
        seen.append(['x.create', record.id])
        return 'a-%s' % record.id
    def x_update(external, record):
        seen.append(['x.update', external, record.id])
    def odoo_create(item):
        seen.append(['odoo.create', item])
        return P.create({'name': item})
    def odoo_update(record, item):
        seen.append(['odoo.update', record.id, item])
    # One sync_info for both directions, as in Sync Studio's documentation.
    EMPLOYEE_SYNC = {
        'relation': 'emp',
        'x': {'get_ref': ident, 'create': x_create, 'update': x_update},
        'odoo': {'create': odoo_create, 'update': odoo_update},
    }
    out = {}
    out['x2odoo'] = sync_x2odoo(['q1'], EMPLOYEE_SYNC, create=True)
    # A list of records is a src_list too.
    out['odoo2x'] = sync_odoo2x([P.browse(1), P.search('name = $1', 'q1')], EMPLOYEE_SYNC, create=True, update=True)
    out['magic_db2x'] = MAGIC.sync_db2x(P.browse(2), {'relation': 'm1', 'x': {'create': x_create}}, create=True)
    out['magic_x2db'] = MAGIC.sync_x2db(['q1', 'q2'], {'relation': 'emp', 'x': {'get_ref': ident}, 'db': {'update': odoo_update}}, update=True)
    out['magic_odoo2x'] = MAGIC.sync_odoo2x(P.browse(3), {'relation': 'm2', 'x': {'create': x_create}}, create=True)
    out['magic_x2odoo'] = MAGIC.sync_x2odoo(['q3'], {'relation': 'm3', 'x': {'get_ref': ident}, 'odoo': {'create': odoo_create}}, create=True)
    # Where Sync Studio's documentation puts them: create/update in src_info.
    def to_b(item):
        seen.append(['src.create', item])
        return 'B' + item
    out['magic_external'] = MAGIC.sync_external(['z'], 'ab', {'system': 'a', 'get_ref': ident, 'create': to_b}, {'system': 'b'}, create=True)
    out['common'] = push_new(P.browse([1, 2]), 'common')
    out['seen'] = seen
    return out
"#;
    let result = p.result(code, "handle_cron").await;
    // The partner created for q1 is id 4, for q3 id 5.
    assert_eq!(
        result,
        json!({
            "x2odoo": {"created": ["q1"], "updated": [], "skipped": []},
            "odoo2x": {"created": [1], "updated": [4], "skipped": []},
            "magic_db2x": {"created": [2], "updated": [], "skipped": []},
            "magic_x2db": {"created": [], "updated": ["q1"], "skipped": ["q2"]},
            "magic_odoo2x": {"created": [3], "updated": [], "skipped": []},
            "magic_x2odoo": {"created": ["q3"], "updated": [], "skipped": []},
            "magic_external": {"created": ["z"], "updated": [], "skipped": []},
            "common": {"created": [1, 2], "updated": [], "skipped": []},
            "seen": [
                ["odoo.create", "q1"],
                ["x.create", 1],
                ["x.update", "q1", 4],
                ["x.create", 2],
                ["odoo.update", 4, "q1"],
                ["x.create", 3],
                ["odoo.create", "q3"],
                ["src.create", "z"],
            ],
        })
    );
    let links: Vec<(String, String, String)> = p
        .client
        .query(
            "SELECT relation, ref1, ref2 FROM sync.link ORDER BY relation, ref1, ref2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let l = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        links,
        vec![
            l("ab", "z", "Bz"),
            l("common", "c-1", "1"),
            l("common", "c-2", "2"),
            l("emp", "a-1", "1"),
            l("emp", "q1", "4"),
            l("m1", "a-2", "2"),
            l("m2", "a-3", "3"),
            l("m3", "q3", "5"),
        ]
    );
    let systems: String = p
        .scalar("SELECT system1 || '/' || system2 FROM sync.link WHERE relation = 'ab'")
        .await;
    assert_eq!(systems, "a/b");
}

#[tokio::test]
async fn composite_keys() {
    let p = project().await;
    p.sql(
        "CREATE TABLE line (order_id int, code text, qty int, PRIMARY KEY (order_id, code));
         INSERT INTO line VALUES (7, 'a,b', 1), (8, 'x', 2);
         SELECT sync_set_link('lines', 'line'::regclass, ROW(7, 'a,b')::text, 'L-7');",
    )
    .await;
    let code = r#"
def handle_cron():
    seen = []
    def db_update(record, item):
        seen.append([record.id, record.qty, item])
        record.write({'qty': record.qty + 10})
    def db_create(item):
        return env['line'].create({'order_id': 9, 'code': item, 'qty': 0})
    pulled = sync_x2db(['L-7', 'L-9'], {'relation': 'lines', 'x': {'get_ref': lambda i: i},
                       'db': {'create': db_create, 'update': db_update}}, create=True, update=True)
    def x_create(record):
        return 'P-%s-%s' % record.id
    def x_update(ref, record):
        seen.append([ref, record.id])
    pushed = sync_db2x(env['line'].search(order='order_id'), {'relation': 'lines',
                       'x': {'create': x_create, 'update': x_update}}, create=True, update=True)
    return {'pulled': pulled, 'pushed': pushed, 'seen': seen}
"#;
    let result = p.result(code, "handle_cron").await;
    assert_eq!(
        result,
        json!({
            "pulled": {"created": ["L-9"], "updated": ["L-7"], "skipped": []},
            "pushed": {"created": [[8, "x"]], "updated": [[7, "a,b"], [9, "L-9"]], "skipped": []},
            "seen": [[[7, "a,b"], 1, "L-7"], ["L-7", [7, "a,b"]], ["L-9", [9, "L-9"]]],
        })
    );
    let qty: i32 = p.scalar("SELECT qty FROM line WHERE order_id = 7").await;
    assert_eq!(qty, 11);
    let linked: String = p
        .scalar("SELECT ref2 FROM sync.link WHERE relation = 'lines' AND ref1 = 'P-8-x'")
        .await;
    assert_eq!(linked, "(8,x)");
}

#[tokio::test]
async fn handle_db_records_are_a_src_list() {
    let p = project().await;
    p.sql("CREATE TABLE pushed (id bigint, ref text)").await;
    let task = p
        .task(
            "push",
            r#"
def handle_db(records):
    def x_create(record):
        ref = 'crm-%s' % record.name
        db.execute("INSERT INTO pushed VALUES ($1, $2)", record.id, ref)
        return ref
    return sync_db2x(records, {'relation': 'crm', 'x': {'create': x_create}}, create=True)
"#,
        )
        .await;
    p.client
        .execute(
            "INSERT INTO sync.db_trigger (task_id, name, table_name, event) VALUES ($1, 'new', 'partner', 'create')",
            &[&task],
        )
        .await
        .unwrap();
    p.worker().await;
    p.sql("INSERT INTO partner (name) VALUES ('dan'), ('eve')")
        .await;
    wait_for("the handle_db job", Duration::from_secs(30), || async {
        p.scalar::<i64>("SELECT count(*) FROM sync.job WHERE state IN ('done', 'failed')")
            .await
            > 0
    })
    .await;
    let result: Value = p.scalar("SELECT result FROM sync.job").await;
    assert_eq!(
        result,
        json!({"created": [4, 5], "updated": [], "skipped": []})
    );
    let links: Vec<(String, String)> = p
        .client
        .query(
            "SELECT l.ref1, l.ref2 FROM sync.link l JOIN pushed x ON x.ref = l.ref1 AND x.id::text = l.ref2
             WHERE l.relation = 'crm' ORDER BY l.ref2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        links,
        vec![
            ("crm-dan".into(), "4".into()),
            ("crm-eve".into(), "5".into())
        ]
    );
}

#[tokio::test]
async fn errors_name_what_is_missing() {
    let p = project().await;
    p.sql(
        "SELECT sync_set_link('m2m', 'partner'::regclass, 1, 'e1');
         SELECT sync_set_link('m2m', 'partner'::regclass, 1, 'e2', allow_many2many => true);
         SELECT sync_set_link('m2m', 'partner'::regclass, 2, 'e2', allow_many2many => true);
         SELECT sync_set_link('m2m', '{\"a\": \"1\", \"b\": \"x\"}'::jsonb);
         SELECT sync_set_link('m2m', '{\"a\": \"1\", \"b\": \"y\"}'::jsonb, allow_many2many => true);",
    )
    .await;
    let code = r#"
def handle_cron():
    recs = env['partner'].browse([1])
    one = env['partner'].browse([3])
    def ref(item):
        return item
    def none(item):
        return None
    def nothing(*args):
        return None
    def a_dict(item):
        return {'id': 1}
    def rec(item):
        return env['partner'].browse(3)
    ab = {'system': 'a', 'get_ref': ref}
    cases = {
        'db2x_no_relation': lambda: sync_db2x(recs, {}),
        'db2x_not_dict': lambda: sync_db2x(recs, 'rel'),
        'db2x_no_x': lambda: sync_db2x(recs, {'relation': 'r'}, create=True),
        'db2x_no_create': lambda: sync_db2x(recs, {'relation': 'r', 'x': {'update': nothing}}, create=True),
        'db2x_no_update': lambda: sync_db2x(recs, {'relation': 'r', 'x': {'create': ref}}, update=True),
        'db2x_not_callable': lambda: sync_db2x(recs, {'relation': 'r', 'x': {'create': 'ref'}}, create=True),
        'db2x_no_ref': lambda: sync_db2x(one, {'relation': 'r', 'x': {'create': none}}, create=True),
        'db2x_bad_ref': lambda: sync_db2x(one, {'relation': 'r', 'x': {'create': a_dict}}, create=True),
        'db2x_not_records': lambda: sync_db2x([{'id': 1}], {'relation': 'r'}),
        'db2x_several': lambda: sync_db2x(recs, {'relation': 'm2m'}),
        'odoo2x_no_create': lambda: sync_odoo2x(recs, {'relation': 'r', 'x': {}}, create=True),
        'x2db_no_x': lambda: sync_x2db(['q'], {'relation': 'r'}),
        'x2db_no_get_ref': lambda: sync_x2db(['q'], {'relation': 'r', 'x': {}}),
        'x2db_no_db': lambda: sync_x2db(['q'], {'relation': 'r', 'x': {'get_ref': ref}}, create=True),
        'x2db_no_update': lambda: sync_x2db(['q'], {'relation': 'r', 'x': {'get_ref': ref}, 'db': {'create': rec}}, update=True),
        'x2odoo_no_create': lambda: sync_x2odoo(['q'], {'relation': 'r', 'x': {'get_ref': ref}, 'odoo': {}}, create=True),
        'x2db_db_and_odoo': lambda: sync_x2db(['q'], {'relation': 'r', 'x': {'get_ref': ref}, 'db': {'create': rec}, 'odoo': {'create': rec}}, create=True),
        'x2db_no_ref': lambda: sync_x2db(['q'], {'relation': 'r', 'x': {'get_ref': none}}),
        'x2db_create_not_record': lambda: sync_x2db(['q'], {'relation': 'r', 'x': {'get_ref': ref}, 'db': {'create': a_dict}}, create=True),
        'x2db_several': lambda: sync_x2db(['e2'], {'relation': 'm2m', 'x': {'get_ref': ref}}),
        'external_bad_relation': lambda: sync_external(['q'], None, ab, {'system': 'b'}),
        'external_no_system': lambda: sync_external(['q'], 'r', ab, {'create': ref}, create=True),
        'external_same_system': lambda: sync_external(['q'], 'r', ab, {'system': 'a'}),
        'external_no_get_ref': lambda: sync_external(['q'], 'r', {'system': 'a'}, {'system': 'b'}),
        'external_no_create': lambda: sync_external(['q'], 'r', ab, {'system': 'b'}, create=True),
        'external_no_update': lambda: sync_external(['q'], 'r', ab, {'system': 'b', 'create': ref}, update=True),
        'external_create_twice': lambda: sync_external(['q'], 'r', {'system': 'a', 'get_ref': ref, 'create': ref}, {'system': 'b', 'create': none}, create=True),
        'external_no_ref': lambda: sync_external(['q'], 'r', ab, {'system': 'b', 'create': none}, create=True),
        'external_several': lambda: sync_external(['1'], 'm2m', ab, {'system': 'b'}),
    }
    out = {}
    for name, call in cases.items():
        try:
            out[name] = ['ok', call()]
        except UserError as e:
            out[name] = str(e)
    # Nothing to do needs no callbacks.
    out['nothing_needed'] = sync_db2x(one, {'relation': 'r'})
    out['links'] = len(search_links('r', {'a': None, 'b': None})) + len(one.search_links('r'))
    return out
"#;
    let result = p.result(code, "handle_cron").await;
    let want = [
        ("db2x_no_relation", "sync_db2x: sync_info has no 'relation'"),
        ("db2x_not_dict", "sync_db2x: sync_info must be a dict, got str"),
        ("db2x_no_x", "sync_db2x: sync_info has no 'x', needed for create=True"),
        ("db2x_no_create", "sync_db2x: sync_info['x'] has no 'create': give a function record -> external ref"),
        ("db2x_no_update", "sync_db2x: sync_info['x'] has no 'update': give a function (external_ref, record)"),
        ("db2x_not_callable", "sync_db2x: sync_info['x']['create'] must be a function"),
        ("db2x_no_ref", "sync_db2x: sync_info['x']['create'] returned no ref for env['public.partner'].browse(3)"),
        ("db2x_bad_ref", "sync_db2x: sync_info['x']['create'] must return a ref (a str or a number), got dict"),
        ("db2x_not_records", "sync_db2x: src_list must hold records (from env[...]), got dict"),
        ("db2x_several", "sync_db2x: public.partner record 1 has several links in relation 'm2m'"),
        ("odoo2x_no_create", "sync_odoo2x: sync_info['x'] has no 'create'"),
        ("x2db_no_x", "sync_x2db: sync_info has no 'x', needed for its 'get_ref' function"),
        ("x2db_no_get_ref", "sync_x2db: sync_info['x'] has no 'get_ref': give a function item -> external ref"),
        ("x2db_no_db", "sync_x2db: sync_info has no 'db', needed for create=True"),
        ("x2db_no_update", "sync_x2db: sync_info['db'] has no 'update': give a function (record, item)"),
        ("x2odoo_no_create", "sync_x2odoo: sync_info['odoo'] has no 'create': give a function item -> record"),
        ("x2db_db_and_odoo", "sync_x2db: sync_info has both 'db' and 'odoo'"),
        ("x2db_no_ref", "sync_x2db: sync_info['x']['get_ref'] returned no ref for 'q'"),
        ("x2db_create_not_record", "sync_x2db: sync_info['db']['create'] must return the created record (one record of env[...]), got dict for 'q'"),
        ("x2db_several", "sync_x2db: external ref 'e2' has several links in relation 'm2m'"),
        ("external_bad_relation", "sync_external: relation must be the relation name (a non-empty str), got None"),
        ("external_no_system", "sync_external: dst_info needs 'system'"),
        ("external_same_system", "sync_external: src_info and dst_info name the same system 'a'"),
        ("external_no_get_ref", "sync_external: src_info has no 'get_ref'"),
        ("external_no_create", "sync_external: dst_info has no 'create': give a function item -> destination ref"),
        ("external_no_update", "sync_external: dst_info has no 'update'"),
        ("external_create_twice", "sync_external: both dst_info and src_info have 'create'"),
        ("external_no_ref", "sync_external: dst_info['create'] returned no ref for 'q'"),
        ("external_several", "sync_external: a ref '1' has several links to b in relation 'm2m'"),
    ];
    for (case, start) in want {
        let got = result[case]
            .as_str()
            .unwrap_or_else(|| panic!("{case}: no error: {}", result[case]));
        assert!(got.starts_with(start), "{case}: {got}");
    }
    assert_eq!(
        result["nothing_needed"],
        json!({"created": [], "updated": [], "skipped": [3]})
    );
    // The failed calls linked nothing.
    assert_eq!(result["links"], 0);
    // Uncaught, the error fails the job with its message.
    let err = p
        .error(
            "def handle_cron():\n    sync_x2db([1], {'relation': 'r', 'x': {}})\n",
            "handle_cron",
        )
        .await;
    assert!(
        err.contains("UserError: sync_x2db: sync_info['x'] has no 'get_ref'"),
        "{err}"
    );
}

#[tokio::test]
async fn a_failing_callback_rolls_back_the_jobs_links() {
    let p = project().await;
    p.sql(&format!(
        "SELECT sync_set_link('rb', 'partner'::regclass, 1, 'ext-1', '{OLD}')"
    ))
    .await;
    let err = p
        .error(
            r#"
def handle_cron():
    def x_create(record):
        if record.id == 3:
            raise UserError('the CRM is down')
        return 'new-%s' % record.id
    def x_update(external, record):
        pass
    sync_db2x(env['partner'].browse([1, 2, 3]), {'relation': 'rb', 'x': {'create': x_create, 'update': x_update}}, create=True, update=True)
"#,
            "handle_cron",
        )
        .await;
    assert!(err.contains("UserError: the CRM is down"), "{err}");
    assert!(
        err.contains("x_create"),
        "the traceback names the callback: {err}"
    );
    // The link made for record 2 is gone; the update's new sync date too.
    assert_eq!(link_count(&p, "rb").await, 1);
    assert!(old_sync_date(&p, "rb", "ext-1").await);

    let err = p
        .error(
            r#"
def handle_cron():
    def db_create(item):
        if item == 'n3':
            raise ValueError('bad item n3')
        return env['partner'].create({'name': item})
    sync_x2db(['n1', 'n2', 'n3'], {'relation': 'rb2', 'x': {'get_ref': lambda i: i}, 'db': {'create': db_create}}, create=True)
"#,
            "handle_cron",
        )
        .await;
    assert!(err.contains("ValueError: bad item n3"), "{err}");
    assert_eq!(link_count(&p, "rb2").await, 0);
    let rows: i64 = p.scalar("SELECT count(*) FROM partner").await;
    assert_eq!(rows, 3, "the rows db.create wrote roll back too");

    let err = p
        .error(
            r#"
def handle_cron():
    def card(issue):
        if issue == 3:
            raise UserError('trello is down')
        return 'c%s' % issue
    sync_external([1, 2, 3], 'rb3', {'system': 'github', 'get_ref': lambda i: i}, {'system': 'trello', 'create': card}, create=True)
"#,
            "handle_cron",
        )
        .await;
    assert!(err.contains("trello is down"), "{err}");
    assert_eq!(link_count(&p, "rb3").await, 0);
}

/// Statements the run_as role ran whose text contains `needle`, from pg_stat_statements.
async fn statements(p: &PyProject, needle: &str) -> i64 {
    p.client
        .query_one(
            "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
             WHERE userid = $1::text::regrole AND strpos(query, $2) > 0",
            &[&p.role, &needle],
        )
        .await
        .unwrap()
        .get(0)
}

/// Run `handler` of `task` with the statement counters reset; its result.
async fn counted_run(p: &PyProject, task: i64, handler: &str) -> Value {
    p.sql("SELECT pg_stat_statements_reset()").await;
    let job = p.job(task, handler, Value::Null).await;
    let started = std::time::Instant::now();
    let report = p.run(job).await;
    assert_eq!(report["state"], "done", "{report}");
    eprintln!("{handler}: {:?}", started.elapsed());
    report["result"].clone()
}

// 1,000 source items, half of them linked: the links of the whole list are read with
// one statement, each created link costs one sync_set_link, and the sync dates of all
// updated links are refreshed with one sync_update_links. pg_stat_statements (in a
// private cluster that preloads it) counts the statements the project's role ran, so a
// helper that looked links up item by item would fail here.
#[tokio::test]
async fn links_are_searched_in_bulk() {
    let cluster = Cluster::start_with("-c shared_preload_libraries=pg_stat_statements");
    let db = TestDb::on(&cluster.url("postgres")).await;
    let p = PyProject::in_db("bulk", db).await;
    p.sql(&format!(
        "CREATE EXTENSION pg_stat_statements;
         CREATE TABLE partner (id bigserial PRIMARY KEY, name text);
         INSERT INTO partner (name) SELECT 'p' || g FROM generate_series(1, 1000) g;
         SELECT count(sync_set_link('d', 'partner'::regclass, g, 'e-' || g, '{OLD}')) FROM generate_series(1, 999, 2) g;
         SELECT count(sync_set_link('x', 'partner'::regclass, g, 'x-' || g, '{OLD}')) FROM generate_series(1, 999, 2) g;
         SELECT count(sync_set_link('g', jsonb_build_object('github', g, 'trello', 't-' || g), '{OLD}')) FROM generate_series(1, 999, 2) g;"
    ))
    .await;
    let code = r#"
def db2x():
    n = {'create': 0, 'update': 0}
    def x_create(record):
        n['create'] += 1
        return 'new-%s' % record.id
    def x_update(external, record):
        n['update'] += 1
    recs = env['partner'].search(order='id')
    res = sync_db2x(recs, {'relation': 'd', 'x': {'create': x_create, 'update': x_update}}, create=True, update=True)
    return [n['create'], n['update'], len(res['created']), len(res['updated']), len(res['skipped'])]

def x2db():
    n = {'update': 0}
    def db_create(item):
        return env['partner'].create({'name': item['ref']})
    def db_update(record, item):
        n['update'] += 1
    items = [{'ref': 'x-%d' % i} for i in range(1, 1001)]
    res = sync_x2db(items, {'relation': 'x', 'x': {'get_ref': lambda i: i['ref']}, 'db': {'create': db_create, 'update': db_update}}, create=True, update=True)
    return [n['update'], len(res['created']), len(res['updated']), len(res['skipped'])]

def external():
    res = sync_external(list(range(1, 1001)), 'g', {'system': 'github', 'get_ref': lambda i: i},
                        {'system': 'trello', 'create': lambda i: 'c-%d' % i, 'update': lambda card, i: None},
                        create=True, update=True)
    return [len(res['created']), len(res['updated']), len(res['skipped'])]
"#;
    let task = p.task("bulk", code).await;

    assert_eq!(
        counted_run(&p, task, "db2x").await,
        json!([500, 500, 500, 500, 0])
    );
    assert_eq!(statements(&p, "sync_search_links").await, 1);
    assert_eq!(statements(&p, "sync_set_link").await, 500);
    assert_eq!(statements(&p, "sync_update_links").await, 1);
    assert_eq!(
        p.scalar::<i64>(
            "SELECT count(*) FROM sync.link WHERE relation = 'd' AND sync_date > '2002-01-01'"
        )
        .await,
        1000
    );

    assert_eq!(
        counted_run(&p, task, "x2db").await,
        json!([500, 500, 500, 0])
    );
    assert_eq!(statements(&p, "FROM sync.link").await, 1);
    assert_eq!(statements(&p, "sync_set_link").await, 500);
    assert_eq!(statements(&p, "sync_update_links").await, 1);
    // The records handed to the updates were read with one query, not one each.
    assert_eq!(statements(&p, "FROM \"public\".\"partner\"").await, 1);
    assert_eq!(
        p.scalar::<i64>(
            "SELECT count(*) FROM sync.link WHERE relation = 'x' AND sync_date > '2002-01-01'"
        )
        .await,
        1000
    );

    assert_eq!(
        counted_run(&p, task, "external").await,
        json!([500, 500, 0])
    );
    assert_eq!(statements(&p, "sync_search_links").await, 1);
    assert_eq!(statements(&p, "sync_set_link").await, 500);
    assert_eq!(statements(&p, "sync_update_links").await, 1);
    assert_eq!(
        p.scalar::<i64>(
            "SELECT count(*) FROM sync.link WHERE relation = 'g' AND sync_date > '2002-01-01'"
        )
        .await,
        1000
    );
    drop(p);
    drop(cluster);
}

#[tokio::test]
async fn readme_example_runs() {
    // The python and json blocks of the "Sync helpers" page (docs/sync-helpers.md): the
    // code, run as a task on a partner table holding Ann, returns the documented result.
    let section = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/sync-helpers.md"
    ))
    .expect("docs/sync-helpers.md");
    assert!(
        section.starts_with("# Sync helpers\n"),
        "docs/sync-helpers.md is the Sync helpers page"
    );
    let block = |fence: &str| {
        let at = section
            .find(fence)
            .unwrap_or_else(|| panic!("no {fence} block"))
            + fence.len();
        section[at..at + section[at..].find("```").expect("closed block")].to_string()
    };
    let code = block("```python\n");
    let documented: Value = serde_json::from_str(&block("```json\n")).expect("the json block");

    let p = PyProject::new("readme").await;
    p.sql(
        "CREATE TABLE partner (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text);
         INSERT INTO partner (name) VALUES ('Ann');",
    )
    .await;
    let task = p.task("crm", &code).await;
    let job = p.job(task, "handle_button", Value::Null).await;
    let first = p.run(job).await;
    assert_eq!(first["result"], documented, "{first}");
    let job = p.job(task, "handle_button", Value::Null).await;
    let second = p.run(job).await;
    assert_eq!(
        second["result"],
        json!({
            "pulled": {"created": [], "updated": ["C-1", "C-7"], "skipped": []},
            "pushed": {"created": [], "updated": [1, 2, 3], "skipped": []},
            "cards": {"created": [], "updated": ["12"], "skipped": []},
            "sent": [["update", "C-101", "Ann"], ["update", "C-1", "Ann"], ["update", "C-7", "Zoe"]],
        }),
        "{second}"
    );
}
